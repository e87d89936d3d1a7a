//! Exec and attach sessions: the upgrade (SPDY or WebSocket, whichever the
//! client asks for) and what both transports share: handing the client's
//! streams to the runtime, and what happens when the client goes away.

pub(crate) mod protocol;
mod spdy;
pub(crate) mod websocket;

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Request, Response};
use tokio::io::AsyncRead;
use tokio::sync::mpsc;

use crate::http::{Body, spawn_upgraded, text_response};
use crate::request::{AttachRequest, ExecRequest, StreamFlags};
use crate::runtime::{Disconnected, Io, OutputWriter, StdinReader};
use crate::server::Shared;
use crate::spdy_upgrade;
use crate::websocket as ws;
use protocol::{Outcome, Version, decode_resizes};

pub use protocol::{Status, StatusCause, StatusDetails};

pub(crate) enum Command {
    Exec(ExecRequest),
    Attach(AttachRequest),
}

impl Command {
    fn flags(&self) -> StreamFlags {
        match self {
            Command::Exec(req) => req.flags(),
            Command::Attach(req) => req.flags(),
        }
    }

    fn container_id(&self) -> &str {
        match self {
            Command::Exec(req) => &req.container_id,
            Command::Attach(req) => &req.container_id,
        }
    }
}

pub(crate) async fn serve(
    shared: Arc<Shared>,
    mut req: Request<Incoming>,
    command: Command,
) -> Response<Body> {
    if let Err(err) = shared.runtime.check_container(command.container_id()).await {
        return text_response(err.http_status(), err.to_string());
    }
    let headers = req.headers();
    let session_shared = shared.clone();
    if ws::is_websocket_request(headers) {
        let protocol = match ws::negotiate(headers, websocket::PROTOCOLS) {
            Ok(protocol) => protocol,
            Err(refusal) => return refusal.into_response(),
        };
        let response = match ws::upgrade_response(headers, protocol) {
            Ok(response) => response,
            Err(refusal) => return refusal.into_response(),
        };
        spawn_upgraded(&shared, &mut req, move |upgraded| {
            websocket::run(session_shared, upgraded, protocol, command)
        });
        response
    } else {
        let protocol = match spdy_upgrade::negotiate(headers, protocol::SPDY_PROTOCOLS) {
            Ok(protocol) => protocol,
            Err(refusal) => return refusal.into_response(),
        };
        let response = match spdy_upgrade::upgrade_response(headers, protocol) {
            Ok(response) => response,
            Err(refusal) => return refusal.into_response(),
        };
        let version = Version::from_spdy(protocol).expect("negotiated a known protocol");
        spawn_upgraded(&shared, &mut req, move |upgraded| {
            spdy::run(session_shared, upgraded, version, command)
        });
        response
    }
}

/// The client's streams, as the transport got them.
pub(crate) struct Streams {
    pub stdin: Option<StdinReader>,
    pub stdout: Option<OutputWriter>,
    pub stderr: Option<OutputWriter>,
    /// Only with a TTY.
    pub resize: Option<Box<dyn AsyncRead + Send + Unpin>>,
}

/// Resizes queued for the runtime before the decoder waits.
const RESIZE_QUEUE: usize = 8;

/// Runs the command; `None` when the client went away and the runtime did
/// not finish within the grace period (its future was dropped).
pub(crate) async fn run_command(
    shared: &Shared,
    command: Command,
    streams: Streams,
    disconnected: Disconnected,
) -> Option<Outcome> {
    let tty = command.flags().tty;
    let (resize, resize_task) = match streams.resize.filter(|_| tty) {
        Some(stream) => {
            let (tx, rx) = mpsc::channel(RESIZE_QUEUE);
            (Some(rx), Some(tokio::spawn(decode_resizes(stream, tx))))
        }
        None => (None, None),
    };
    let io = Io {
        stdin: streams.stdin,
        stdout: streams.stdout,
        stderr: streams.stderr,
        tty,
        resize,
        disconnected: disconnected.clone(),
    };
    let runtime = &shared.runtime;
    let run = async move {
        match command {
            Command::Exec(req) => Outcome::of_exec(runtime.exec(req, io).await),
            Command::Attach(req) => Outcome::of_attach(runtime.attach(req, io).await),
        }
    };
    tokio::pin!(run);
    let mut gone = disconnected;
    let outcome = tokio::select! {
        outcome = &mut run => Some(outcome),
        _ = gone.wait() => {
            // The runtime saw `disconnected` too: let it kill and reap.
            tokio::time::timeout(shared.config.disconnect_grace, &mut run).await.ok()
        }
    };
    if let Some(task) = resize_task {
        task.abort();
    }
    outcome
}
