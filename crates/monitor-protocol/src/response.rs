//! What a monitor answers.

use serde::{Deserialize, Serialize};

use crate::{ContainerState, ErrorCode};

/// What happened to a container, in a [`Response::Event`]. The CRI's
/// container events (GetContainerEvents) have the same four kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Created,
    Started,
    /// The init was reaped and its exit record is on disk.
    Exited,
    Deleted,
    /// A kind this build does not know (sent by a newer monitor).
    #[serde(other)]
    Unknown,
}

/// A response to one request. Tagged by `"result"`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Response {
    Ok,
    /// The answer to [`Request::Hello`](crate::Request::Hello).
    Hello {
        version: u32,
    },
    Created {
        pid: i32,
    },
    State(ContainerState),
    List {
        containers: Vec<ContainerState>,
    },
    /// How an exec ended. `timed_out`: killed at the deadline.
    Exec {
        exit_code: i32,
        #[serde(with = "hex_bytes")]
        stdout: Vec<u8>,
        #[serde(with = "hex_bytes")]
        stderr: Vec<u8>,
        #[serde(default)]
        truncated: bool,
        #[serde(default)]
        timed_out: bool,
    },
    /// A streaming exec runs; its stdio fds came with this line.
    ExecStarted {
        pid: i32,
    },
    /// A streaming exec's process exited: `exit_code` as for
    /// [`Response::Exec`] (128 + signal when killed).
    ExecExited {
        exit_code: i32,
    },
    /// An attach is set up; its fds came with this line (see
    /// [`Request::Attach`](crate::Request::Attach) for their order).
    Attached {
        terminal: bool,
        stdin: bool,
    },
    /// A change of one container, pushed on a subscribed connection (see
    /// [`Request::Subscribe`](crate::Request::Subscribe)): `container` is
    /// its state after the change (for `deleted`, its last state).
    Event {
        kind: EventKind,
        container: ContainerState,
    },
    /// `{"result":"error","code":"not_found","message":"..."}`; a version-0
    /// monitor's `{"result":"error","message":"..."}` reads with the code
    /// its text implies.
    Error(ErrorReply),
}

impl Response {
    /// An error answer.
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Response {
        Response::Error(ErrorReply {
            code,
            message: message.into(),
        })
    }
}

/// Why the monitor refused or failed a request. The message names the
/// container it concerns.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(from = "WireErrorReply")]
#[error("{message}")]
pub struct ErrorReply {
    pub code: ErrorCode,
    pub message: String,
}

/// An error answer as it may arrive: `code` is missing from version-0
/// monitors.
#[derive(Deserialize)]
struct WireErrorReply {
    code: Option<ErrorCode>,
    message: String,
}

impl From<WireErrorReply> for ErrorReply {
    fn from(w: WireErrorReply) -> ErrorReply {
        ErrorReply {
            code: w
                .code
                .unwrap_or_else(|| ErrorCode::from_legacy_message(&w.message)),
            message: w.message,
        }
    }
}

/// Exec output is bytes, not UTF-8: hex keeps the JSON line protocol exact
/// (half the size of serde's default array of numbers).
mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    /// Written piecewise (`collect_str`): a writer-backed serializer never
    /// holds the whole hex string (twice the output) at once.
    pub fn serialize<S: Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&Hex(b))
    }

    struct Hex<'a>(&'a [u8]);

    impl std::fmt::Display for Hex<'_> {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            let mut buf = [0u8; 8192];
            for chunk in self.0.chunks(buf.len() / 2) {
                for (i, &x) in chunk.iter().enumerate() {
                    buf[2 * i] = HEX[(x >> 4) as usize];
                    buf[2 * i + 1] = HEX[(x & 15) as usize];
                }
                let hex = &buf[..2 * chunk.len()];
                // ASCII hex digits: always UTF-8.
                f.write_str(std::str::from_utf8(hex).map_err(|_| std::fmt::Error)?)?;
            }
            Ok(())
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        let s = s.as_bytes();
        if s.len() % 2 != 0 {
            return Err(D::Error::custom("odd hex length"));
        }
        let nib = |c: u8| match c {
            b'0'..=b'9' => Ok(c - b'0'),
            b'a'..=b'f' => Ok(c - b'a' + 10),
            _ => Err(D::Error::custom("bad hex digit")),
        };
        s.chunks(2)
            .map(|p| Ok((nib(p[0])? << 4) | nib(p[1])?))
            .collect()
    }
}
