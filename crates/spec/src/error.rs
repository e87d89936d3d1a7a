use std::io;
use std::path::PathBuf;

/// Why a CRI container config cannot be turned into an OCI spec.
///
/// Every variant names the offending CRI field (as a dotted path, e.g.
/// `linux.security_context.run_as_username`), so berthd can return it as
/// `InvalidArgument` with a message the user can act on.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// The field's value is wrong.
    #[error("invalid {field}: {reason}")]
    Invalid { field: String, reason: String },

    /// The field asks for something Berth does not do.
    #[error("unsupported {field}: {reason}")]
    Unsupported { field: String, reason: String },

    /// A host or rootfs file the field refers to could not be used.
    #[error("{field}: {}: {source}", path.display())]
    Io {
        field: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl SpecError {
    pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        SpecError::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn unsupported(field: impl Into<String>, reason: impl Into<String>) -> Self {
        SpecError::Unsupported {
            field: field.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn io(
        field: impl Into<String>,
        path: impl Into<PathBuf>,
        source: io::Error,
    ) -> Self {
        SpecError::Io {
            field: field.into(),
            path: path.into(),
            source,
        }
    }

    /// The CRI field the error is about.
    pub fn field(&self) -> &str {
        match self {
            SpecError::Invalid { field, .. }
            | SpecError::Unsupported { field, .. }
            | SpecError::Io { field, .. } => field,
        }
    }
}

pub type Result<T, E = SpecError> = std::result::Result<T, E>;
