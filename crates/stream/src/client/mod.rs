//! A client for the streaming protocols (what client-go's remotecommand and
//! portforward packages do), for Berth's e2e tests and benchmarks:
//! [`exec`]-style remote commands over SPDY or WebSocket, and port-forward
//! over either.

mod dial;
mod portforward;
mod remotecommand;

use std::path::PathBuf;

pub use portforward::{
    SpdyForwardStream, SpdyPortForward, WebSocketForward, port_forward_websocket,
};
pub use remotecommand::{RemoteCommand, ResizeSender, remote_command};

/// Which upgrade a client asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Spdy,
    WebSocket,
}

/// How to reach the server.
#[derive(Debug, Clone, Default)]
pub struct ClientConfig {
    /// For https URLs: the PEM CA certificate(s) to trust.
    pub tls_ca_file: Option<PathBuf>,
}

/// What a remote-command client asks for.
#[derive(Debug, Clone)]
pub struct RemoteCommandOptions {
    pub transport: Transport,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
    /// Subprotocols offered, preferred first; `None` offers all we know
    /// (v5 first, as client-go does).
    pub protocols: Option<Vec<String>>,
}

impl RemoteCommandOptions {
    pub fn new(transport: Transport) -> Self {
        Self {
            transport,
            stdin: false,
            stdout: true,
            stderr: true,
            tty: false,
            protocols: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid URL {0}")]
    Url(String),
    #[error("connecting: {0}")]
    Io(#[from] std::io::Error),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("HTTP: {0}")]
    Hyper(#[from] hyper::Error),
    #[error("server answered {status}: {body}")]
    Http { status: u16, body: String },
    #[error("websocket: {0}")]
    WebSocket(#[from] tokio_tungstenite::tungstenite::Error),
    #[error("SPDY: {0}")]
    Spdy(#[from] berth_spdy::Error),
    #[error("protocol: {0}")]
    Protocol(String),
    /// The session failed on the server (the error stream's message).
    #[error("{0}")]
    Remote(String),
}
