//! Errors: what a connection or a stream can fail with, and what decoding a
//! frame can find wrong (split by scope, as SPDY answers them: a session
//! error ends the connection with GOAWAY, a stream error resets one stream).

use std::io;

use crate::frame::{GoAwayStatus, RstStatus};

/// Why a connection, or an operation on it, failed. Cloneable: one failure
/// is reported to every stream of the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("I/O error: {message}")]
    Io {
        kind: io::ErrorKind,
        message: String,
    },
    #[error("SPDY protocol error: {0}")]
    Protocol(String),
    #[error("frame of {len} bytes is over the limit of {limit}")]
    FrameTooLarge { len: usize, limit: usize },
    #[error("header block inflates past the limit of {limit} bytes")]
    HeaderBlockTooLarge { limit: usize },
    #[error("header block compression: {0}")]
    Compression(String),
    #[error("stream {id} was reset: {status}")]
    StreamReset { id: u32, status: RstStatus },
    #[error("peer sent GOAWAY ({status}); no new streams")]
    GoneAway { status: GoAwayStatus },
    #[error("connection idle for longer than the idle timeout")]
    IdleTimeout,
    #[error("stream ids are used up on this connection")]
    StreamIdsExhausted,
    #[error("connection closed")]
    Closed,
}

impl From<io::Error> for Error {
    fn from(err: io::Error) -> Self {
        Error::Io {
            kind: err.kind(),
            message: err.to_string(),
        }
    }
}

impl From<Error> for io::Error {
    fn from(err: Error) -> Self {
        let kind = match &err {
            Error::Io { kind, .. } => *kind,
            Error::StreamReset { .. } => io::ErrorKind::ConnectionReset,
            Error::Closed | Error::IdleTimeout | Error::GoneAway { .. } => {
                io::ErrorKind::ConnectionAborted
            }
            _ => io::ErrorKind::InvalidData,
        };
        io::Error::new(kind, err)
    }
}

/// What is wrong with a received frame, and so how to answer it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The connection can't go on (GOAWAY PROTOCOL_ERROR, then close):
    /// framing or the shared zlib stream is broken.
    #[error(transparent)]
    Session(#[from] Error),
    /// Only this stream is bad (RST_STREAM with `status`).
    #[error("stream {id}: {reason}")]
    Stream {
        id: u32,
        status: RstStatus,
        reason: String,
    },
}

impl FrameError {
    pub(crate) fn protocol(reason: impl Into<String>) -> Self {
        FrameError::Session(Error::Protocol(reason.into()))
    }

    pub(crate) fn stream(id: u32, status: RstStatus, reason: impl Into<String>) -> Self {
        FrameError::Stream {
            id,
            status,
            reason: reason.into(),
        }
    }
}
