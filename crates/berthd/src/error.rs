//! The error of the pod and container subsystems, with the gRPC code each
//! case carries to the kubelet.

use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    FailedPrecondition(String),
    /// The operation ran out of the time the caller gave it.
    #[error("{0}")]
    DeadlineExceeded(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A CNI plugin or config failure (the message names the plugin).
    #[error("pod network: {0}")]
    Network(#[from] berth_net::CniError),
    #[error("{0:#}")]
    Internal(anyhow::Error),
}

impl From<RuntimeError> for tonic::Status {
    fn from(e: RuntimeError) -> tonic::Status {
        let msg = e.to_string();
        match e {
            RuntimeError::InvalidArgument(_) => tonic::Status::invalid_argument(msg),
            RuntimeError::AlreadyExists(_) => tonic::Status::already_exists(msg),
            RuntimeError::NotFound(_) => tonic::Status::not_found(msg),
            RuntimeError::FailedPrecondition(_) => tonic::Status::failed_precondition(msg),
            RuntimeError::DeadlineExceeded(_) => tonic::Status::deadline_exceeded(msg),
            RuntimeError::Network(e) => match e {
                berth_net::CniError::Timeout { .. } => tonic::Status::deadline_exceeded(msg),
                berth_net::CniError::PluginNotFound { .. } => {
                    tonic::Status::failed_precondition(msg)
                }
                e if e.is_config_error() => tonic::Status::failed_precondition(msg),
                // A plugin that failed may well succeed when the kubelet retries.
                _ => tonic::Status::unavailable(msg),
            },
            RuntimeError::Store(_) | RuntimeError::Internal(_) => tonic::Status::internal(msg),
        }
    }
}

/// A redb error, as a store failure.
pub fn db_err(e: impl std::fmt::Display) -> RuntimeError {
    let message = e.to_string();
    crate::store::exit_if_poisoned(&message);
    RuntimeError::Store(StoreError::Db(message))
}
