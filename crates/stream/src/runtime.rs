//! The runtime side: what berthd implements so the streaming server can run
//! an exec, attach to a container or open a port in a pod. The server owns
//! the protocols; the runtime gets plain byte halves and moves bytes between
//! them and the process's fds (one read and one write per chunk: stdin is
//! read straight out of the SPDY stream's receive buffer or the WebSocket
//! message, stdout is written straight into the outgoing frame).

use std::future::Future;
use std::pin::Pin;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, watch};

use crate::request::{AttachRequest, ExecRequest};

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What the client sends to the process's stdin; EOF when the client closes
/// its stdin (SPDY FIN, or the v5 WebSocket close signal) or disconnects.
pub type StdinReader = Box<dyn AsyncRead + Send + Unpin>;

/// Where the process's stdout or stderr goes. Dropping it (or `shutdown`)
/// tells the client that stream is over.
pub type OutputWriter = Box<dyn AsyncWrite + Send + Unpin>;

/// A connected byte stream into the pod (a TCP socket made in its netns).
pub trait AsyncReadWrite: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> AsyncReadWrite for T {}

/// A terminal size as the Kubernetes clients send it on the resize stream
/// (`{"Width":80,"Height":24}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TerminalSize {
    #[serde(rename = "Width")]
    pub width: u16,
    #[serde(rename = "Height")]
    pub height: u16,
}

/// The client's end of an exec or attach session.
pub struct Io {
    pub stdin: Option<StdinReader>,
    pub stdout: Option<OutputWriter>,
    /// Always `None` when `tty` is set (a terminal has one output).
    pub stderr: Option<OutputWriter>,
    pub tty: bool,
    /// Terminal resizes, in order; only with `tty`. Ends with the session.
    pub resize: Option<mpsc::Receiver<TerminalSize>>,
    /// Fires when the client is gone (connection closed or broken, idle
    /// timeout) or the server shuts down.
    pub disconnected: Disconnected,
}

/// Resolves once the client of a session is gone.
///
/// What a runtime must do then: an exec kills its process (SIGKILL to the
/// exec'd process, as containerd does when the exec's context ends) and
/// returns; an attach just detaches (the container keeps running). The
/// server waits `StreamingConfig::disconnect_grace` for the runtime's
/// future to return, then drops it: anything the future owns must clean up
/// on drop (e.g. `kill_on_drop` children, fds closed by their owners).
#[derive(Debug, Clone)]
pub struct Disconnected(watch::Receiver<bool>);

impl Disconnected {
    pub(crate) fn new() -> (DisconnectTrigger, Self) {
        let (tx, rx) = watch::channel(false);
        (DisconnectTrigger(tx), Self(rx))
    }

    /// Waits until the client is gone.
    pub async fn wait(&mut self) {
        // The trigger's drop also counts: a session that ended is gone.
        let _ = self.0.wait_for(|gone| *gone).await;
    }

    pub fn is_disconnected(&self) -> bool {
        *self.0.borrow() || self.0.has_changed().is_err()
    }
}

/// The server's side of [`Disconnected`]; dropping it fires too.
#[derive(Debug)]
pub(crate) struct DisconnectTrigger(watch::Sender<bool>);

impl DisconnectTrigger {
    pub fn fire(&self) {
        self.0.send_replace(true);
    }
}

/// Why the runtime could not serve a session. The message goes to the
/// client: on the error stream once upgraded, in the HTTP body before.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuntimeError {
    #[error("container {0} not found")]
    ContainerNotFound(String),
    #[error("container {0} is not running")]
    ContainerNotRunning(String),
    #[error("pod sandbox {0} not found")]
    SandboxNotFound(String),
    #[error("pod sandbox {0} is not ready")]
    SandboxNotReady(String),
    /// A port-forward target that refused or failed the connection.
    #[error("failed to connect to localhost:{port} inside namespace of pod {sandbox}: {reason}")]
    PortUnreachable {
        sandbox: String,
        port: u16,
        reason: String,
    },
    #[error("{0}")]
    Other(String),
}

impl RuntimeError {
    /// The HTTP status a failed pre-upgrade check answers with.
    pub(crate) fn http_status(&self) -> hyper::StatusCode {
        match self {
            RuntimeError::ContainerNotFound(_) | RuntimeError::SandboxNotFound(_) => {
                hyper::StatusCode::NOT_FOUND
            }
            RuntimeError::ContainerNotRunning(_) | RuntimeError::SandboxNotReady(_) => {
                hyper::StatusCode::CONFLICT
            }
            _ => hyper::StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// What berthd implements. Futures may borrow `self`: the server holds the
/// runtime in an `Arc` for as long as they run.
pub trait StreamRuntime: Send + Sync + 'static {
    /// Runs `req.cmd` in the container with `io`; returns its exit code.
    /// Must not return before the process's stdout/stderr reached EOF and
    /// were copied (the exit status goes out after them).
    fn exec(&self, req: ExecRequest, io: Io) -> BoxFuture<'_, Result<i32, RuntimeError>>;

    /// Connects `io` to the running container's stdio (or terminal) until
    /// the container exits or the client detaches (`io.disconnected`, or
    /// stdin EOF when the container's `stdin_once` says so).
    fn attach(&self, req: AttachRequest, io: Io) -> BoxFuture<'_, Result<(), RuntimeError>>;

    /// Opens a TCP connection to `port` inside the pod's network
    /// namespace; the server relays it to the client.
    fn port_forward(
        &self,
        pod_sandbox_id: &str,
        port: u16,
    ) -> BoxFuture<'_, Result<Box<dyn AsyncReadWrite>, RuntimeError>>;

    /// Checked before upgrading an exec/attach connection, so that a
    /// container that is gone or stopped gets a plain HTTP error.
    fn check_container(&self, _container_id: &str) -> BoxFuture<'_, Result<(), RuntimeError>> {
        Box::pin(async { Ok(()) })
    }

    /// Checked before upgrading a port-forward connection.
    fn check_sandbox(&self, _pod_sandbox_id: &str) -> BoxFuture<'_, Result<(), RuntimeError>> {
        Box::pin(async { Ok(()) })
    }
}
