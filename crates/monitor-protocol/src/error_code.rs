//! What kind of failure an error answer reports.

use serde::{Deserialize, Serialize};

/// The kind of an error answer, for the client to act on without reading
/// the message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The monitor has no container of that id.
    NotFound,
    /// A container of that id exists already.
    AlreadyExists,
    /// The monitor did not understand the request (unknown op, malformed
    /// or overlong line): it is older than the client.
    BadRequest,
    /// Understood, but an argument is not acceptable (a bad signal number,
    /// resources, an empty command).
    InvalidArgument,
    /// The container is not in a state that allows the operation (starting
    /// a running one, deleting a running one without force, a create while
    /// the monitor shuts down).
    FailedPrecondition,
    /// The operation itself failed (libcontainer, the kernel, a file).
    Internal,
    /// A code this build does not know (sent by a newer monitor).
    #[serde(other)]
    Unknown,
}

impl ErrorCode {
    /// The code of a free-text error from a version-0 monitor: the text
    /// rules berthd used before codes existed, kept in this one place.
    pub fn from_legacy_message(message: &str) -> ErrorCode {
        if message.ends_with("not found") {
            ErrorCode::NotFound
        } else if message.starts_with("bad request") {
            ErrorCode::BadRequest
        } else {
            ErrorCode::Internal
        }
    }
}
