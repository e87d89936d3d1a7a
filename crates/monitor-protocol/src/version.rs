//! The protocol version a monitor speaks (see the crate docs for the rules).

use crate::{ErrorCode, Response};

/// The version this build speaks. 0: monitors from before versions (no
/// `hello`, free-text errors); 1: `hello`, typed error codes; 2: streaming
/// (`exec_stream`, `attach`, fds with answers, terminal/stdin containers);
/// 3: `close_stdin`.
/// 4: `subscribe` (container events pushed to berthd).
/// 5: `create` with `restore` (a container restored from a checkpoint).
pub const PROTOCOL_VERSION: u32 = 5;

/// The first version that restores containers (`Request::Create`'s `restore`).
pub const RESTORE_VERSION: u32 = 5;

/// The first version with [`Request::Subscribe`](crate::Request::Subscribe).
pub const EVENTS_VERSION: u32 = 4;

/// The monitor's version from its answer to [`Request::Hello`](crate::Request::Hello):
/// a version-0 monitor does not know the op and answers `bad_request`. Any
/// other answer is given back.
pub fn version_from_hello(resp: Response) -> Result<u32, Response> {
    match resp {
        Response::Hello { version } => Ok(version),
        Response::Error(e) if e.code == ErrorCode::BadRequest => Ok(0),
        other => Err(other),
    }
}
