//! The streaming server's settings; every field has a default (those of
//! containerd's CRI plugin and the kubelet's streaming server).

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct StreamingConfig {
    /// Address to listen on; loopback by default, as containerd's.
    pub address: IpAddr,
    /// 0 picks an ephemeral port.
    pub port: u16,
    /// A session with no traffic either way for this long is closed.
    pub stream_idle_timeout: Duration,
    /// How long a SPDY client may take to open the streams it asked for.
    pub stream_creation_timeout: Duration,
    /// Serve HTTPS with this certificate chain and key (PEM files).
    pub tls: Option<TlsFiles>,
    /// How long an issued URL stays valid unused.
    pub request_ttl: Duration,
    /// How many issued URLs may wait for their client at once.
    pub max_pending_requests: usize,
    /// Largest WebSocket message (and frame) accepted from a client.
    pub max_websocket_message: usize,
    /// After a client disconnects, how long the runtime's future may take
    /// to clean up (kill the exec) before it is dropped.
    pub disconnect_grace: Duration,
}

/// PEM files for HTTPS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

impl Default for StreamingConfig {
    fn default() -> Self {
        Self {
            address: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 0,
            stream_idle_timeout: Duration::from_secs(4 * 3600),
            stream_creation_timeout: Duration::from_secs(30),
            tls: None,
            request_ttl: Duration::from_secs(60),
            max_pending_requests: 1000,
            max_websocket_message: 1024 * 1024,
            disconnect_grace: Duration::from_secs(5),
        }
    }
}
