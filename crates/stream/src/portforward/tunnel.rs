//! Port-forward as SPDY tunneled through WebSocket: subprotocol
//! `SPDY/3.1+portforward.k8s.io`, each binary message a run of bytes of
//! one SPDY session. client-go's `NewSPDYOverWebsocketDialer` speaks it
//! (kubectl and `crictl port-forward --transport websocket`); the
//! kubelet's own streaming server only knows the channel protocol, which
//! needs the ports in the URL (crictl sends none).
//!
//! The WebSocket is bridged to an in-memory pipe and the SPDY session
//! runs on the other end, exactly as over an upgraded connection.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use hyper::HeaderMap;
use hyper::upgrade::Upgraded;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

use crate::server::Shared;
use crate::websocket as ws;

pub(crate) const PROTOCOL: &str = "SPDY/3.1+portforward.k8s.io";

/// Buffered between the WebSocket and the SPDY session, each way.
const PIPE_BUFFER: usize = 64 * 1024;
/// How long the peer may take to answer our close once the session ended.
const CLOSE_LINGER: Duration = Duration::from_secs(5);

/// Whether the client offers the tunnel subprotocol.
pub(crate) fn is_requested(headers: &HeaderMap) -> bool {
    matches!(ws::negotiate(headers, &[PROTOCOL]), Ok(p) if !p.is_empty())
}

pub(crate) async fn run(shared: Arc<Shared>, upgraded: Upgraded, sandbox: String) {
    let socket = ws::accept(upgraded, shared.config.max_websocket_message).await;
    let (session_end, bridge_end) = tokio::io::duplex(PIPE_BUFFER);
    tokio::join!(
        super::spdy::run_on(shared, session_end, sandbox),
        bridge(socket, bridge_end)
    );
}

/// Moves binary message payloads into the pipe and the pipe's bytes out
/// as binary messages, until either side ends. Both ends use it: the
/// client in `client::portforward` too.
pub(crate) async fn bridge<S>(socket: WebSocketStream<S>, pipe: DuplexStream)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut sink, mut stream) = socket.split();
    let (mut pipe_in, mut pipe_out) = tokio::io::split(pipe);
    let inbound = async {
        while let Some(message) = stream.next().await {
            match message {
                Ok(Message::Binary(bytes)) => {
                    if pipe_out.write_all(&bytes).await.is_err() {
                        break;
                    }
                }
                Ok(Message::Close(_)) | Err(_) => break,
                // Pings are answered by tungstenite; text has no meaning here.
                Ok(_) => {}
            }
        }
        // The SPDY session sees EOF.
        let _ = pipe_out.shutdown().await;
    };
    let outbound = async {
        let mut buf = vec![0u8; PIPE_BUFFER / 2];
        loop {
            match pipe_in.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let message = Message::Binary(Bytes::copy_from_slice(&buf[..n]));
                    if sink.send(message).await.is_err() {
                        break;
                    }
                }
            }
        }
        let _ = sink.send(ws::normal_close()).await;
        let _ = sink.close().await;
    };
    tokio::pin!(inbound, outbound);
    tokio::select! {
        () = &mut inbound => { let _ = tokio::time::timeout(CLOSE_LINGER, &mut outbound).await; }
        () = &mut outbound => { let _ = tokio::time::timeout(CLOSE_LINGER, &mut inbound).await; }
    }
}
