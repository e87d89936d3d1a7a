//! The monitor's errors: setting it up, and an operation's failure, which
//! goes back to the client as a typed [`ErrorCode`] and a message naming the
//! container.

use std::fmt;
use std::io;

use berth_monitor_protocol::{ErrorCode, Response};

#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    #[error("monitor setup: {what}: {source}")]
    Setup {
        what: String,
        #[source]
        source: io::Error,
    },
}

pub(super) fn setup<E: Into<io::Error>>(what: impl Into<String>) -> impl FnOnce(E) -> MonitorError {
    move |e| MonitorError::Setup {
        what: what.into(),
        source: e.into(),
    }
}

/// The operation a failure concerns; prefixes its message (the wording the
/// protocol keeps, see `berth_monitor_protocol`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Create,
    Start,
    Kill,
    Delete,
    Exec,
    Attach,
    Update,
    ReopenLog,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Op::Create => "create container",
            Op::Start => "start container",
            Op::Kill => "kill container",
            Op::Delete => "delete container",
            Op::Exec => "exec in container",
            Op::Attach => "attach to container",
            Op::Update => "update container",
            Op::ReopenLog => "reopen log of container",
        })
    }
}

impl Op {
    /// The operation itself failed (libcontainer, the kernel, a file).
    pub fn failed(self, id: &str, why: impl fmt::Display) -> OpError {
        OpError::Failed {
            op: self,
            id: id.to_string(),
            why: why.to_string(),
        }
    }

    /// The container's state does not allow the operation.
    pub fn invalid_state(self, id: &str, why: impl fmt::Display) -> OpError {
        OpError::InvalidState {
            op: self,
            id: id.to_string(),
            why: why.to_string(),
        }
    }

    /// An argument of the request is not acceptable.
    pub fn invalid_argument(self, id: &str, why: impl fmt::Display) -> OpError {
        OpError::InvalidArgument {
            op: self,
            id: id.to_string(),
            why: why.to_string(),
        }
    }
}

/// Why a request failed. Messages keep their protocol-version-0 wording.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OpError {
    #[error("container {0} not found")]
    NotFound(String),
    /// The request line is not a request this monitor knows.
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("request longer than {0} bytes")]
    RequestTooLong(usize),
    #[error("{op} {id}: already exists")]
    AlreadyExists { op: Op, id: String },
    #[error("{op} {id}: {why}")]
    InvalidArgument { op: Op, id: String, why: String },
    #[error("{op} {id}: {why}")]
    InvalidState { op: Op, id: String, why: String },
    #[error("{op} {id}: {why}")]
    Failed { op: Op, id: String, why: String },
}

impl OpError {
    pub fn code(&self) -> ErrorCode {
        match self {
            OpError::NotFound(_) => ErrorCode::NotFound,
            OpError::BadRequest(_) | OpError::RequestTooLong(_) => ErrorCode::BadRequest,
            OpError::AlreadyExists { .. } => ErrorCode::AlreadyExists,
            OpError::InvalidArgument { .. } => ErrorCode::InvalidArgument,
            OpError::InvalidState { .. } => ErrorCode::FailedPrecondition,
            OpError::Failed { .. } => ErrorCode::Internal,
        }
    }
}

impl From<&OpError> for Response {
    fn from(e: &OpError) -> Response {
        Response::error(e.code(), e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_messages() {
        let cases = [
            (
                OpError::NotFound("c1".into()),
                ErrorCode::NotFound,
                "container c1 not found",
            ),
            (
                OpError::BadRequest("expected value".into()),
                ErrorCode::BadRequest,
                "bad request: expected value",
            ),
            (
                OpError::RequestTooLong(10),
                ErrorCode::BadRequest,
                "request longer than 10 bytes",
            ),
            (
                OpError::AlreadyExists {
                    op: Op::Create,
                    id: "c1".into(),
                },
                ErrorCode::AlreadyExists,
                "create container c1: already exists",
            ),
            (
                Op::Kill.invalid_argument("c1", "signal 99: EINVAL"),
                ErrorCode::InvalidArgument,
                "kill container c1: signal 99: EINVAL",
            ),
            (
                Op::Start.invalid_state("c1", "it is Running, not created"),
                ErrorCode::FailedPrecondition,
                "start container c1: it is Running, not created",
            ),
            (
                Op::ReopenLog.failed("c1", "EIO"),
                ErrorCode::Internal,
                "reopen log of container c1: EIO",
            ),
            (
                Op::Exec.failed("c1", "x"),
                ErrorCode::Internal,
                "exec in container c1: x",
            ),
        ];
        for (e, code, msg) in cases {
            assert_eq!(e.code(), code, "{e}");
            assert_eq!(e.to_string(), msg);
            assert_eq!(Response::from(&e), Response::error(code, msg));
        }
    }

    /// berthd's fallbacks and an older berthd's text rules must read the
    /// same code from what the monitor sends.
    #[test]
    fn legacy_text_rules_agree_with_codes() {
        for e in [
            OpError::NotFound("c".into()),
            OpError::BadRequest("unknown variant `x`".into()),
        ] {
            assert_eq!(ErrorCode::from_legacy_message(&e.to_string()), e.code());
        }
    }
}
