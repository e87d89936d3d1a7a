//! The protocol between berthd and its per-pod monitors (`berth-monitor`).
//!
//! One JSON object per line each way over `<monitor state dir>/monitor.sock`;
//! requests ([`Request`], tagged by `"op"`) are answered in order, one
//! response line ([`Response`], tagged by `"result"`) per request line.
//! Serde only: berthd links this crate, not the monitor (libcontainer must
//! never run in berthd's multithreaded process).
//!
//! # Versions and compatibility
//!
//! berthd and the monitors it spawned are upgraded independently: a monitor
//! lives as long as its pod, across berthd restarts, so a new berthd talks
//! to monitors of older builds (and, after a rollback, an old berthd to newer
//! ones). The rules:
//!
//! - The protocol only grows: a new op, a new optional field (with a serde
//!   default), a new error code. Nothing is removed or changes meaning. Each
//!   such change bumps [`PROTOCOL_VERSION`].
//! - Version 0 is every monitor built before versions existed: it does not
//!   know [`Request::Hello`] and sends errors as free text
//!   (`{"result":"error","message":"..."}`). Version 1 added `hello` and
//!   typed [`ErrorCode`]s. Version 2 added streaming ([`Request::ExecStream`],
//!   [`Request::Attach`]), answers carrying fds ([`fds`]) and containers with
//!   a terminal or stdin; berthd asks for them only of version-2 monitors.
//!   Version 3 added [`Request::CloseStdin`] (a `stdin_once` attach whose
//!   client's stdin ended keeps its output until the container exits);
//!   berthd tries it and, on `bad_request`, detaches as before.
//!   Version 4 added [`Request::Subscribe`]: container events pushed on a
//!   connection berthd holds per monitor; berthd polls (`list`, `state`)
//!   only monitors older than that.
//! - berthd asks `hello` once of a monitor it did not spawn itself (found
//!   running after a berthd restart) and learns its version
//!   ([`version_from_hello`]: a version-0 monitor answers `bad_request`).
//!   Every version is served: an older monitor gets the ops it has, a newer
//!   one the ops this berthd knows.
//! - A berthd still tries a newer op on a monitor of unknown support and
//!   falls back when the answer is [`ErrorCode::BadRequest`] (the monitor did
//!   not understand the request): `start_and_report` falls back to `start` +
//!   `state`, `stop` to `kill` + polling. Version 0 spans builds with and
//!   without those ops, so the answer, not the version, decides.
//! - A free-text error of a version-0 monitor is given a code by the same
//!   text rules older berthds used ([`ErrorCode::from_legacy_message`], the
//!   one place they live); an unknown code of a newer monitor reads as
//!   [`ErrorCode::Unknown`].
//! - Messages keep their version-0 wording (`container X not found`,
//!   `bad request: ...`), so an older berthd that matches text still
//!   understands a newer monitor; it ignores the `code` field.

mod client;
mod error_code;
pub mod fds;
mod request;
mod response;
pub mod sealed;
mod state;
mod version;

pub use client::{Client, spawn};
pub use error_code::ErrorCode;
pub use request::{DEFAULT_MAX_OUTPUT, Request, RestoreFrom, TerminalSize};
pub use response::{ErrorReply, EventKind, Response};
pub use state::{ContainerState, ExitRecord, Status};
pub use version::{EVENTS_VERSION, PROTOCOL_VERSION, RESTORE_VERSION, version_from_hello};

/// Name of the monitor's socket inside its state dir.
pub const SOCKET_NAME: &str = "monitor.sock";
