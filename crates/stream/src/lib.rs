//! berthd's streaming server: the URLs CRI's Exec, Attach and PortForward
//! return, and the HTTP/1.1 server behind them, as the kubelet's
//! `pkg/kubelet/cri/streaming` serves them (containerd and CRI-O embed that
//! package; this is Berth's own).
//!
//! - [`StreamingServer::start`] listens (loopback, ephemeral port by
//!   default; HTTPS with a cert/key) and gives the absolute base URL.
//! - `get_exec` / `get_attach` / `get_port_forward` store the request under
//!   a single-use, unguessable token that expires unused after a minute,
//!   with a bound on how many wait ([`RequestError::TooManyPending`]).
//! - `/exec|attach/<token>`: the remote-command protocol over SPDY/3.1
//!   (`v5`/`v4`/`v3`/`v2.channel.k8s.io`, `channel.k8s.io`; framing by the
//!   `berth-spdy` crate) or WebSocket (`v5.channel.k8s.io`,
//!   `v4.channel.k8s.io`, `channel.k8s.io`, `base64.channel.k8s.io`, ...).
//! - `/portforward/<token>`: `portforward.k8s.io` over SPDY, or the channel
//!   protocol over WebSocket.
//! - The runtime side is the [`StreamRuntime`] trait berthd implements: it
//!   gets byte halves ([`Io`]) and moves bytes to and from the process's
//!   fds, or opens a connection in the pod for a port-forward.
//!
//! [`client`] speaks the same protocols, for Berth's tests and benchmarks.

pub mod client;
mod config;
mod copy_buf;
mod error;
mod http;
mod portforward;
mod remotecommand;
mod request;
mod request_cache;
mod runtime;
mod server;
mod spdy_upgrade;
mod tls;
mod token;
mod websocket;

pub use config::{StreamingConfig, TlsFiles};
pub use copy_buf::{CopyBuf, CopyError, copy};
pub use error::{RequestError, StartError};
pub use remotecommand::{Status, StatusCause, StatusDetails};
pub use request::{AttachRequest, ExecRequest, PortForwardRequest};
pub use runtime::{
    AsyncReadWrite, BoxFuture, Disconnected, Io, OutputWriter, RuntimeError, StdinReader,
    StreamRuntime, TerminalSize,
};
pub use server::StreamingServer;
