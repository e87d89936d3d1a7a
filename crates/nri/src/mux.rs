//! NRI's connection multiplexer: one unix socket (the trunk) carries two ttrpc
//! connections, the plugin's service (the runtime calls the plugin) and the
//! runtime's service (the plugin registers and asks for updates). Each frame
//! is a big-endian `u32` connection id, a big-endian `u32` length and that
//! many bytes of one connection's stream (containerd/nri `pkg/net/multiplex`).
//!
//! Written here because no crate speaks it; the ttrpc crate takes any
//! `AsyncRead + AsyncWrite` as a connection, so each logical connection is
//! an in-memory duplex pipe whose far end this pump feeds.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio::sync::mpsc;

/// The connection on which the runtime is the client of the plugin's service.
pub const PLUGIN_SERVICE_CONN: u32 = 1;
/// The connection on which the plugin is the client of the runtime's service.
pub const RUNTIME_SERVICE_CONN: u32 = 2;

/// The largest frame payload: a ttrpc header (10 bytes) and its largest
/// message (4 MiB). A peer announcing more is broken or hostile.
pub const MAX_PAYLOAD: usize = 10 + (4 << 20);

/// Bytes buffered in each direction of a logical connection.
const PIPE_BUFFER: usize = 256 * 1024;

/// The two logical connections of one trunk.
pub struct Conns {
    /// The runtime's end of the plugin service connection (a ttrpc client).
    pub plugin_service: DuplexStream,
    /// The runtime's end of the runtime service connection (a ttrpc server).
    pub runtime_service: DuplexStream,
    /// Resolves when the trunk closed (the peer went away or broke the framing).
    pub gone: tokio::sync::oneshot::Receiver<()>,
}

/// Splits `trunk` into its two logical connections. The pump runs until the
/// trunk or both connections close; dropping the returned ends closes the
/// trunk's writing side.
pub fn split<T>(trunk: T) -> Conns
where
    T: AsyncRead + AsyncWrite + Send + 'static,
{
    let (plugin_service, plugin_far) = tokio::io::duplex(PIPE_BUFFER);
    let (runtime_service, runtime_far) = tokio::io::duplex(PIPE_BUFFER);
    let (trunk_read, trunk_write) = tokio::io::split(trunk);
    let (plugin_rd, plugin_wr) = tokio::io::split(plugin_far);
    let (runtime_rd, runtime_wr) = tokio::io::split(runtime_far);

    // Outgoing: each connection's bytes become frames, written by one task so
    // frames never interleave.
    let (frames_tx, frames_rx) = mpsc::channel::<(u32, Vec<u8>)>(16);
    tokio::spawn(forward_out(
        PLUGIN_SERVICE_CONN,
        plugin_rd,
        frames_tx.clone(),
    ));
    tokio::spawn(forward_out(RUNTIME_SERVICE_CONN, runtime_rd, frames_tx));
    tokio::spawn(write_frames(trunk_write, frames_rx));
    // Incoming: frames go to their connection's pipe.
    let (gone_tx, gone) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        read_frames(trunk_read, plugin_wr, runtime_wr).await;
        let _ = gone_tx.send(());
    });
    Conns {
        plugin_service,
        runtime_service,
        gone,
    }
}

/// The ttrpc message header: payload length (`u32` BE), stream id, type, flags.
const TTRPC_HEADER: usize = 10;
/// The read buffer of Go's ttrpc (`bufio.NewReader`): its mux hands each
/// frame to one `Read`, which fails (ENOMEM) when the frame does not fit.
const GO_READ_BUFFER: usize = 4096;

/// Frames one connection's ttrpc messages as Go's ttrpc writer does: a
/// message that fits Go's read buffer is one frame; a larger one is its
/// header, then its payload whole (Go reads a payload that size directly
/// into a buffer of its length). Any other cut makes the Go side fail.
async fn forward_out<R: AsyncRead + Unpin>(id: u32, mut from: R, to: mpsc::Sender<(u32, Vec<u8>)>) {
    loop {
        let mut header = [0u8; TTRPC_HEADER];
        if from.read_exact(&mut header).await.is_err() {
            return;
        }
        let len = u32::from_be_bytes(header[..4].try_into().expect("4 bytes")) as usize;
        if len > MAX_PAYLOAD - TTRPC_HEADER {
            tracing::warn!(len, "refusing to send an oversized NRI message");
            return;
        }
        let mut message = Vec::with_capacity(TTRPC_HEADER + len);
        message.extend_from_slice(&header);
        message.resize(TTRPC_HEADER + len, 0);
        if from.read_exact(&mut message[TTRPC_HEADER..]).await.is_err() {
            return;
        }
        let frames = if message.len() <= GO_READ_BUFFER {
            vec![message]
        } else {
            let payload = message.split_off(TTRPC_HEADER);
            vec![message, payload]
        };
        for f in frames {
            if to.send((id, f)).await.is_err() {
                return;
            }
        }
    }
}

async fn write_frames<W: AsyncWrite + Unpin>(
    mut trunk: W,
    mut frames: mpsc::Receiver<(u32, Vec<u8>)>,
) {
    while let Some((id, data)) = frames.recv().await {
        let mut frame = Vec::with_capacity(8 + data.len());
        frame.extend_from_slice(&id.to_be_bytes());
        frame.extend_from_slice(&(data.len() as u32).to_be_bytes());
        frame.extend_from_slice(&data);
        if trunk.write_all(&frame).await.is_err() {
            return;
        }
    }
    let _ = trunk.shutdown().await;
}

async fn read_frames<R, W>(mut trunk: R, mut plugin: W, mut runtime: W)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut header = [0u8; 8];
    loop {
        if trunk.read_exact(&mut header).await.is_err() {
            break;
        }
        let id = u32::from_be_bytes(header[..4].try_into().expect("4 bytes"));
        let len = u32::from_be_bytes(header[4..].try_into().expect("4 bytes")) as usize;
        if len > MAX_PAYLOAD {
            tracing::warn!(
                len,
                "NRI plugin sent an oversized frame; closing its connection"
            );
            break;
        }
        let mut payload = vec![0u8; len];
        if trunk.read_exact(&mut payload).await.is_err() {
            break;
        }
        let to = match id {
            PLUGIN_SERVICE_CONN => &mut plugin,
            RUNTIME_SERVICE_CONN => &mut runtime,
            // containerd's mux drops frames of connections nobody opened.
            _ => continue,
        };
        if to.write_all(&payload).await.is_err() {
            break;
        }
    }
    // Trunk gone: both ttrpc ends read EOF.
    let _ = plugin.shutdown().await;
    let _ = runtime.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(id: u32, data: &[u8]) -> Vec<u8> {
        let mut f = id.to_be_bytes().to_vec();
        f.extend_from_slice(&(data.len() as u32).to_be_bytes());
        f.extend_from_slice(data);
        f
    }

    #[tokio::test]
    async fn frames_reach_their_connection_and_replies_are_framed() {
        let (trunk, mut peer) = tokio::io::duplex(1 << 16);
        let mut conns = split(trunk);
        peer.write_all(&frame(RUNTIME_SERVICE_CONN, b"register"))
            .await
            .unwrap();
        peer.write_all(&frame(7, b"nobody")).await.unwrap();
        peer.write_all(&frame(PLUGIN_SERVICE_CONN, b"reply"))
            .await
            .unwrap();
        let mut got = [0u8; 8];
        conns.runtime_service.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"register");
        let mut got = [0u8; 5];
        conns.plugin_service.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"reply");

        // A small ttrpc message goes as one frame...
        let small = ttrpc_message(b"configure");
        conns.plugin_service.write_all(&small).await.unwrap();
        let mut out = vec![0u8; 8 + small.len()];
        peer.read_exact(&mut out).await.unwrap();
        assert_eq!(out, frame(PLUGIN_SERVICE_CONN, &small));
        // ... a large one as its header, then its payload whole.
        let big = ttrpc_message(&vec![7u8; 10_000]);
        conns.runtime_service.write_all(&big).await.unwrap();
        let mut out = vec![0u8; 8 + TTRPC_HEADER + 8 + 10_000];
        peer.read_exact(&mut out).await.unwrap();
        let mut want = frame(RUNTIME_SERVICE_CONN, &big[..TTRPC_HEADER]);
        want.extend(frame(RUNTIME_SERVICE_CONN, &big[TTRPC_HEADER..]));
        assert_eq!(out, want);
    }

    fn ttrpc_message(payload: &[u8]) -> Vec<u8> {
        let mut m = (payload.len() as u32).to_be_bytes().to_vec();
        m.extend_from_slice(&[0, 0, 0, 1, 1, 0]);
        m.extend_from_slice(payload);
        m
    }

    #[tokio::test]
    async fn an_oversized_frame_closes_both_connections() {
        let (trunk, mut peer) = tokio::io::duplex(1 << 16);
        let mut conns = split(trunk);
        let mut header = PLUGIN_SERVICE_CONN.to_be_bytes().to_vec();
        header.extend_from_slice(&((MAX_PAYLOAD + 1) as u32).to_be_bytes());
        peer.write_all(&header).await.unwrap();
        let mut buf = Vec::new();
        assert_eq!(conns.plugin_service.read_to_end(&mut buf).await.unwrap(), 0);
        assert_eq!(
            conns.runtime_service.read_to_end(&mut buf).await.unwrap(),
            0
        );
    }

    #[tokio::test]
    async fn the_trunk_closing_ends_both_connections() {
        let (trunk, peer) = tokio::io::duplex(1 << 16);
        let mut conns = split(trunk);
        drop(peer);
        let mut buf = Vec::new();
        assert_eq!(conns.plugin_service.read_to_end(&mut buf).await.unwrap(), 0);
        assert_eq!(
            conns.runtime_service.read_to_end(&mut buf).await.unwrap(),
            0
        );
    }
}
