//! Errors of the server's own API (starting it, issuing URLs).

use std::io;
use std::path::PathBuf;

/// Why `get_exec` / `get_attach` / `get_port_forward` refused a request.
/// berthd maps `InvalidArgument` to gRPC INVALID_ARGUMENT and
/// `TooManyPending` to RESOURCE_EXHAUSTED.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("too many streaming requests waiting for their client (limit {limit})")]
    TooManyPending { limit: usize },
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("streaming server: cannot listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: io::Error,
    },
    #[error("streaming server: cannot read TLS {what} {path}: {source}")]
    TlsFile {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("streaming server: TLS {what} {path}: {reason}")]
    TlsPem {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("streaming server: TLS configuration: {0}")]
    Tls(String),
}
