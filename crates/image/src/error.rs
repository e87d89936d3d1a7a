//! Errors of the image service.
//!
//! Every error names what it is about (the image reference, the layer, the
//! registry host) so that a kubelet event alone tells an operator what failed.
//! `ImageError` is `Clone` because one layer download is shared by every pull
//! waiting for it, and each of them gets the same failure.

use std::sync::Arc;

/// Coarse class of an error, for berthd to map onto gRPC status codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageErrorKind {
    NotFound,
    InvalidArgument,
    Unauthenticated,
    PermissionDenied,
    Unavailable,
    /// Content did not verify (digest, diffID, corrupt archive, hostile entry).
    DataLoss,
    /// Valid but unsupported content (schema 1, foreign layers, unknown media types).
    Unimplemented,
    /// The node ran out of disk space (or quota).
    ResourceExhausted,
    Internal,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum ImageError {
    #[error("image {reference} not found{}", detail_suffix(.detail))]
    NotFound { reference: String, detail: String },

    #[error("invalid image reference {reference:?}: {reason}")]
    InvalidReference { reference: String, reason: String },

    #[error("pulling {image}: registry {registry} refused the credentials (unauthenticated){}", detail_suffix(.detail))]
    Unauthenticated {
        image: String,
        registry: String,
        detail: String,
    },

    #[error("pulling {image}: registry {registry} denied access{}", detail_suffix(.detail))]
    PermissionDenied {
        image: String,
        registry: String,
        detail: String,
    },

    #[error("pulling {image}: registry {host} unavailable{}: {detail}", mirrors_suffix(.mirrors_tried))]
    Unavailable {
        image: String,
        host: String,
        /// Each mirror tried before `host`, with why it failed.
        mirrors_tried: Vec<String>,
        detail: String,
    },

    #[error("pulling {image}: registry {registry} is blocked by the registries configuration")]
    Blocked { image: String, registry: String },

    #[error("pulling {image}: layer {layer} is corrupt or hostile: {source}")]
    Corrupt {
        image: String,
        layer: String,
        #[source]
        source: Arc<crate::unpack::UnpackError>,
    },

    /// The layer is fine; this node could not store it (disk full, I/O error).
    #[error("pulling {image}: cannot store layer {layer} on this node: {source}")]
    NodeStorage {
        image: String,
        layer: String,
        #[source]
        source: Arc<crate::unpack::UnpackError>,
    },

    #[error("pulling {image}: {what} failed verification: {detail}")]
    Verification {
        image: String,
        what: String,
        detail: String,
    },

    #[error("pulling {image}: unsupported content: {detail}")]
    Unsupported { image: String, detail: String },

    #[error("pulling {image}: registry {registry} answered badly: {detail}")]
    Registry {
        image: String,
        registry: String,
        detail: String,
    },

    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: Arc<std::io::Error>,
    },

    #[error("image metadata store: {0}")]
    Store(String),

    #[error("registries configuration {path}: {reason}")]
    Config { path: String, reason: String },

    /// An image archive (import) that is malformed or not an image archive.
    #[error("image archive: {0}")]
    Archive(String),

    /// An image archive whose content does not match its digests.
    #[error("image archive: {0}")]
    ArchiveCorrupt(String),
}

fn detail_suffix(d: &str) -> String {
    if d.is_empty() {
        String::new()
    } else {
        format!(": {d}")
    }
}

fn mirrors_suffix(m: &[String]) -> String {
    if m.is_empty() {
        String::new()
    } else {
        format!(" (mirrors tried first: {})", m.join("; "))
    }
}

/// ENOSPC or EDQUOT: the node's disk (or quota) is full.
fn no_space(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
}

impl ImageError {
    pub fn kind(&self) -> ImageErrorKind {
        use ImageErrorKind as K;
        match self {
            ImageError::NotFound { .. } => K::NotFound,
            ImageError::InvalidReference { .. } => K::InvalidArgument,
            ImageError::Unauthenticated { .. } => K::Unauthenticated,
            ImageError::PermissionDenied { .. } | ImageError::Blocked { .. } => K::PermissionDenied,
            ImageError::Unavailable { .. } => K::Unavailable,
            ImageError::Corrupt { .. } | ImageError::Verification { .. } => K::DataLoss,
            ImageError::Unsupported { .. } => K::Unimplemented,
            ImageError::Registry { .. } => K::Unavailable,
            ImageError::NodeStorage { source, .. } => match &**source {
                crate::unpack::UnpackError::Io { source, .. } if no_space(source) => {
                    K::ResourceExhausted
                }
                crate::unpack::UnpackError::DiskFull { .. } => K::ResourceExhausted,
                _ => K::Internal,
            },
            ImageError::Io { source, .. } if no_space(source) => K::ResourceExhausted,
            ImageError::Io { .. } | ImageError::Store(_) => K::Internal,
            ImageError::Config { .. } | ImageError::Archive(_) => K::InvalidArgument,
            ImageError::ArchiveCorrupt(_) => K::DataLoss,
        }
    }

    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        ImageError::Io {
            context: context.into(),
            source: Arc::new(source),
        }
    }
}

macro_rules! store_err {
    ($($t:ty),*) => {$(
        impl From<$t> for ImageError {
            fn from(e: $t) -> Self {
                ImageError::Store(e.to_string())
            }
        }
    )*};
}
store_err!(
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError,
    serde_json::Error
);

/// `Result::context`-like helper for io errors.
pub(crate) trait IoContext<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T, ImageError>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T, ImageError> {
        self.map_err(|e| ImageError::io(context(), e))
    }
}

impl<T> IoContext<T> for nix::Result<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T, ImageError> {
        self.map_err(|e| ImageError::io(context(), std::io::Error::from(e)))
    }
}
