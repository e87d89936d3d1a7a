//! Port-forward clients: SPDY (a stream pair per connection, any number of
//! connections on one session) and WebSocket (one connection per port).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use berth_spdy::{Connection, Headers, Stream, StreamReader};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt};

use super::{ClientConfig, ClientError, dial};
use crate::portforward::tunnel;
use crate::runtime::{AsyncReadWrite, Disconnected};
use crate::websocket::{self as ws, ChannelDuplex, Codec, Framing, Setup};

/// A port-forward session over SPDY.
pub struct SpdyPortForward {
    conn: Connection,
    next_request: AtomicU64,
}

/// One forwarded connection: bytes both ways on `data`; `error` carries
/// the server's message if forwarding failed, and ends with the pair.
pub struct SpdyForwardStream {
    pub data: Stream,
    pub error: StreamReader,
}

impl SpdyForwardStream {
    /// Reads the error stream to its end ("" when all went well).
    pub async fn error_message(error: &mut StreamReader) -> std::io::Result<String> {
        let mut message = Vec::new();
        error.read_to_end(&mut message).await?;
        Ok(String::from_utf8_lossy(&message).into_owned())
    }

    /// Ends the connection as client-go's port-forwarder does once it read
    /// the pod's side to its end: resets the data stream (RST_STREAM
    /// CANCEL, dropping what it has not sent), then reads the error stream
    /// to its end; the server's message, "" when all went well.
    pub async fn finish(self) -> std::io::Result<String> {
        let Self { data, mut error } = self;
        data.reset(berth_spdy::RstStatus::CANCEL);
        Self::error_message(&mut error).await
    }
}

impl SpdyPortForward {
    pub async fn connect(url: &str, config: &ClientConfig) -> Result<Self, ClientError> {
        let protocols = ["portforward.k8s.io".to_string()];
        let (upgraded, _) = dial::spdy_upgrade(url, config, &protocols).await?;
        Ok(Self {
            conn: Connection::client(TokioIo::new(upgraded), berth_spdy::Config::default()),
            next_request: AtomicU64::new(0),
        })
    }

    /// The same session tunneled through WebSocket
    /// (`SPDY/3.1+portforward.k8s.io`), as client-go's
    /// `NewSPDYOverWebsocketDialer` (`crictl port-forward --transport websocket`).
    pub async fn connect_over_websocket(
        url: &str,
        config: &ClientConfig,
    ) -> Result<Self, ClientError> {
        let protocols = [tunnel::PROTOCOL.to_string()];
        let (socket, protocol) = dial::websocket(url, config, &protocols, 16 * 1024 * 1024).await?;
        if protocol != tunnel::PROTOCOL {
            return Err(ClientError::Protocol(format!("server chose {protocol:?}")));
        }
        let (session_end, bridge_end) = tokio::io::duplex(64 * 1024);
        tokio::spawn(tunnel::bridge(socket, bridge_end));
        Ok(Self {
            conn: Connection::client(session_end, berth_spdy::Config::default()),
            next_request: AtomicU64::new(0),
        })
    }

    /// Opens the stream pair for a new connection to `port` in the pod.
    pub fn open(&self, port: u16) -> Result<SpdyForwardStream, ClientError> {
        let request_id = self.next_request.fetch_add(1, Ordering::Relaxed);
        let mut headers = Headers::new();
        headers.insert("port", port.to_string());
        headers.insert("requestID", request_id.to_string());
        headers.insert("streamType", "error");
        let (error, error_writer) = self.conn.open_stream(headers.clone())?.into_split();
        // client-go never writes on the error stream: FIN at once.
        drop(error_writer);
        headers.insert("streamType", "data");
        let data = self.conn.open_stream(headers)?;
        Ok(SpdyForwardStream { data, error })
    }

    /// Ends the session.
    pub fn close(&self) {
        self.conn.close();
    }
}

/// A port-forward session over WebSocket: one connection per port.
pub struct WebSocketForward {
    /// Per requested port, in order: (data, error message reader).
    pub ports: Vec<(Box<dyn AsyncReadWrite>, Box<dyn AsyncRead + Send + Unpin>)>,
    _channels: ws::Channels,
}

/// Connects and checks the port header each channel starts with.
pub async fn port_forward_websocket(
    url: &str,
    config: &ClientConfig,
    ports: &[u16],
) -> Result<WebSocketForward, ClientError> {
    let protocols = ["v4.channel.k8s.io".to_string()];
    let max_message = 16 * 1024 * 1024;
    let (socket, protocol) = dial::websocket(url, config, &protocols, max_message).await?;
    if protocol != "v4.channel.k8s.io" {
        return Err(ClientError::Protocol(format!("server chose {protocol:?}")));
    }
    let (trigger, _disconnected): (_, Disconnected) = Disconnected::new();
    let setup = Setup {
        framing: Framing {
            codec: Codec::Binary,
            close_signal: false,
        },
        readable: vec![true; ports.len() * 2],
        max_message,
        idle_timeout: Duration::from_secs(24 * 3600),
    };
    let mut channels = ws::start(socket, setup, trigger);
    let mut forwards = Vec::with_capacity(ports.len());
    for (i, &port) in ports.iter().enumerate() {
        let mut data = channels.readers[2 * i].take().expect("readable");
        let mut error = channels.readers[2 * i + 1].take().expect("readable");
        for reader in [&mut data, &mut error] {
            let mut prefix = [0u8; 2];
            reader.read_exact(&mut prefix).await?;
            if u16::from_le_bytes(prefix) != port {
                return Err(ClientError::Protocol(format!(
                    "channel of port {port} starts with port {}",
                    u16::from_le_bytes(prefix)
                )));
            }
        }
        let duplex = ChannelDuplex {
            reader: data,
            writer: channels.writer((2 * i) as u8),
        };
        forwards.push((
            Box::new(duplex) as Box<dyn AsyncReadWrite>,
            Box::new(error) as _,
        ));
    }
    Ok(WebSocketForward {
        ports: forwards,
        _channels: channels,
    })
}
