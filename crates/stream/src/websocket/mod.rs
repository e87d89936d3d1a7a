//! The Kubernetes WebSocket channel protocols (`channel.k8s.io` and
//! friends, as k8s.io/apimachinery's wsstream serves them): every message
//! starts with its channel number, a byte (binary protocols) or an ASCII
//! digit followed by base64 (`base64.` protocols, text messages). v5 adds a
//! close signal: `[255, channel]` half-closes a channel's client side.
//!
//! [`start`] turns an upgraded connection into per-channel byte halves: a
//! reader task demultiplexes incoming messages into bounded per-channel
//! queues (a channel nobody reads stalls the socket, as TCP backpressure
//! should), a writer task sends what the channel writers queue, in order.

mod channel;
mod handshake;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

pub(crate) use channel::{ChannelDuplex, ChannelReader, ChannelWriter};
pub(crate) use handshake::{is_websocket_request, negotiate, upgrade_response};

use crate::runtime::DisconnectTrigger;

/// The v5 close signal's first byte.
pub(crate) const CLOSE_SIGNAL: u8 = 255;

/// Messages queued per channel before the socket reader waits.
const INBOUND_QUEUE: usize = 4;
/// Messages queued for the socket before channel writers wait.
const OUTBOUND_QUEUE: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Codec {
    Binary,
    Base64,
}

/// What a negotiated subprotocol means for the framing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Framing {
    pub codec: Codec,
    pub close_signal: bool,
}

impl Framing {
    pub fn encode(&self, channel: u8, data: &[u8]) -> Message {
        match self.codec {
            Codec::Binary => {
                let mut frame = Vec::with_capacity(data.len() + 1);
                frame.push(channel);
                frame.extend_from_slice(data);
                Message::Binary(frame.into())
            }
            Codec::Base64 => {
                let mut text = String::with_capacity(1 + data.len().div_ceil(3) * 4);
                text.push(char::from(b'0' + channel));
                STANDARD.encode_string(data, &mut text);
                Message::text(text)
            }
        }
    }
}

/// What a client message carries.
enum Inbound {
    Data(u8, Bytes),
    Close(u8),
    Ignore,
    Bad(&'static str),
}

fn decode(framing: Framing, message: Message) -> Inbound {
    let payload: Bytes = match message {
        Message::Binary(bytes) => bytes,
        Message::Text(text) => Bytes::from(text),
        _ => return Inbound::Ignore,
    };
    let Some(&first) = payload.first() else {
        return Inbound::Ignore;
    };
    if framing.close_signal && first == CLOSE_SIGNAL {
        return match payload.len() {
            2 => Inbound::Close(payload[1]),
            _ => Inbound::Bad("a close signal carries exactly one channel byte"),
        };
    }
    match framing.codec {
        Codec::Binary => Inbound::Data(first, payload.slice(1..)),
        Codec::Base64 => {
            let Some(channel) = first.checked_sub(b'0') else {
                return Inbound::Bad("base64 message without a channel digit");
            };
            match STANDARD.decode(&payload[1..]) {
                Ok(data) => Inbound::Data(channel, data.into()),
                Err(_) => Inbound::Bad("invalid base64 payload"),
            }
        }
    }
}

/// A running WebSocket session's channels.
pub(crate) struct Channels {
    /// Incoming bytes per channel; `None` for a channel that is not read
    /// (what the client sends on it is dropped).
    pub readers: Vec<Option<ChannelReader>>,
    outbound: Option<mpsc::Sender<Message>>,
    framing: Framing,
    writer_task: tokio::task::JoinHandle<()>,
    reader_task: tokio::task::JoinHandle<()>,
}

impl Channels {
    pub fn writer(&self, channel: u8) -> ChannelWriter {
        let outbound = self
            .outbound
            .clone()
            .expect("writers are made before close");
        ChannelWriter::new(outbound, self.framing, channel, false)
    }

    /// A client's writer: with v5, `shutdown` sends the close signal.
    pub fn client_writer(&self, channel: u8) -> ChannelWriter {
        let outbound = self
            .outbound
            .clone()
            .expect("writers are made before close");
        ChannelWriter::new(outbound, self.framing, channel, self.framing.close_signal)
    }

    /// Queues one whole message on `channel` (an empty one is the
    /// kubelet's "connection established" hint).
    pub async fn send(&self, channel: u8, data: &[u8]) {
        if let Some(outbound) = &self.outbound {
            let _ = outbound.send(self.framing.encode(channel, data)).await;
        }
    }

    /// Sends what is queued, then a Close frame; waits (bounded) for it.
    /// The reader task goes once the writer is done: we are not waiting
    /// for anything more from the client.
    pub async fn close(mut self, grace: Duration) {
        self.readers.clear();
        self.outbound = None;
        let _ = tokio::time::timeout(grace, &mut self.writer_task).await;
    }
}

impl Drop for Channels {
    fn drop(&mut self) {
        self.writer_task.abort();
        self.reader_task.abort();
    }
}

/// Settings of one session.
pub(crate) struct Setup {
    pub framing: Framing,
    /// Channel count, and which of them the client may write to.
    pub readable: Vec<bool>,
    pub max_message: usize,
    pub idle_timeout: Duration,
}

/// The server side of an upgraded connection.
pub(crate) async fn accept(
    upgraded: hyper::upgrade::Upgraded,
    max_message: usize,
) -> WebSocketStream<hyper_util::rt::TokioIo<hyper::upgrade::Upgraded>> {
    WebSocketStream::from_raw_socket(
        hyper_util::rt::TokioIo::new(upgraded),
        tokio_tungstenite::tungstenite::protocol::Role::Server,
        Some(socket_config(max_message)),
    )
    .await
}

pub(crate) fn socket_config(max_message: usize) -> WebSocketConfig {
    // Small buffers: an idle session should cost little memory.
    WebSocketConfig::default()
        .read_buffer_size(16 * 1024)
        .write_buffer_size(16 * 1024)
        .max_message_size(Some(max_message))
        .max_frame_size(Some(max_message))
}

/// Starts the reader and writer tasks over an open WebSocket. `trigger`
/// fires when the peer is gone (or idle past the timeout).
pub(crate) fn start<S>(
    socket: WebSocketStream<S>,
    setup: Setup,
    trigger: DisconnectTrigger,
) -> Channels
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (sink, stream) = socket.split();
    let activity = Arc::new(Activity::new());
    let (outbound, outbound_rx) = mpsc::channel(OUTBOUND_QUEUE);
    let writer_task = tokio::spawn(write_loop(sink, outbound_rx, activity.clone()));

    let mut readers = Vec::with_capacity(setup.readable.len());
    let mut senders = Vec::with_capacity(setup.readable.len());
    for &readable in &setup.readable {
        if readable {
            let (tx, rx) = mpsc::channel(INBOUND_QUEUE);
            readers.push(Some(ChannelReader::new(rx)));
            senders.push(Some(tx));
        } else {
            readers.push(None);
            senders.push(None);
        }
    }
    let reader_task = tokio::spawn(read_loop(
        stream,
        senders,
        setup.framing,
        setup.idle_timeout,
        activity,
        trigger,
        outbound.downgrade(),
    ));
    Channels {
        readers,
        outbound: Some(outbound),
        framing: setup.framing,
        writer_task,
        reader_task,
    }
}

/// When the socket last carried a message, either way.
struct Activity {
    start: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let now = self.start.elapsed().as_millis() as u64;
        self.last_ms.store(now, Ordering::Relaxed);
    }

    fn idle(&self) -> Duration {
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        self.start.elapsed().saturating_sub(last)
    }
}

type Sink<S> = futures::stream::SplitSink<WebSocketStream<S>, Message>;
type Stream<S> = futures::stream::SplitStream<WebSocketStream<S>>;

async fn write_loop<S: AsyncRead + AsyncWrite + Unpin>(
    mut sink: Sink<S>,
    mut queue: mpsc::Receiver<Message>,
    activity: Arc<Activity>,
) {
    while let Some(message) = queue.recv().await {
        activity.touch();
        if sink.feed(message).await.is_err() {
            return;
        }
        // Batch what is already queued into one flush.
        while let Ok(message) = queue.try_recv() {
            if sink.feed(message).await.is_err() {
                return;
            }
        }
        if sink.flush().await.is_err() {
            return;
        }
    }
    // Every writer is gone: the session is over. A normal-closure code,
    // not an empty Close: client-go reports `close 1005 (no status)` as a
    // failed stream.
    let _ = sink.send(normal_close()).await;
    let _ = sink.close().await;
}

/// A Close frame with status 1000 (normal closure).
/// How long a channel's reader may keep the socket unread before the
/// client is pinged (see [`deliver`]).
const STALLED_PING: Duration = Duration::from_secs(5);

enum Delivery {
    Done,
    ReaderGone,
    ClientGone,
}

/// Hands a message's data to its channel's reader, which may take its time
/// (a process reading its stdin slowly, or never). Meanwhile nothing else
/// is read from the socket, so a client that went away is only seen by
/// writing to it (its close waits behind the data we don't read): while
/// the reader keeps us waiting, the client is pinged, and a write that
/// failed (the writer task ended) means it is gone.
async fn deliver(
    sender: &mpsc::Sender<Bytes>,
    data: Bytes,
    outbound: &mpsc::WeakSender<Message>,
) -> Delivery {
    let send = sender.send(data);
    tokio::pin!(send);
    loop {
        match tokio::time::timeout(STALLED_PING, &mut send).await {
            Ok(Ok(())) => return Delivery::Done,
            Ok(Err(_)) => return Delivery::ReaderGone,
            Err(_) => {
                let Some(outbound) = outbound.upgrade() else {
                    return Delivery::ClientGone;
                };
                if outbound.is_closed() {
                    return Delivery::ClientGone;
                }
                let _ = outbound.try_send(Message::Ping(Bytes::new()));
            }
        }
    }
}

pub(crate) fn normal_close() -> Message {
    use tokio_tungstenite::tungstenite::protocol::CloseFrame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
    Message::Close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    }))
}

async fn read_loop<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: Stream<S>,
    mut senders: Vec<Option<mpsc::Sender<Bytes>>>,
    framing: Framing,
    idle_timeout: Duration,
    activity: Arc<Activity>,
    trigger: DisconnectTrigger,
    outbound: mpsc::WeakSender<Message>,
) {
    loop {
        let wait = idle_timeout.saturating_sub(activity.idle());
        let message = tokio::select! {
            message = stream.next() => message,
            _ = tokio::time::sleep(wait) => {
                if activity.idle() >= idle_timeout {
                    tracing::debug!("websocket session idle past {idle_timeout:?}; closing");
                    break;
                }
                continue;
            }
        };
        let message = match message {
            Some(Ok(message)) => message,
            Some(Err(err)) => {
                tracing::debug!("websocket session: {err}");
                break;
            }
            None => break,
        };
        activity.touch();
        if let Message::Close(_) = message {
            break;
        }
        match decode(framing, message) {
            Inbound::Data(channel, data) => {
                let Some(Some(sender)) = senders.get(channel as usize) else {
                    continue; // Not a channel the client may write to.
                };
                if data.is_empty() {
                    continue;
                }
                match deliver(sender, data, &outbound).await {
                    Delivery::Done => {}
                    // Its reader is gone: drop what comes later.
                    Delivery::ReaderGone => senders[channel as usize] = None,
                    Delivery::ClientGone => {
                        tracing::debug!("websocket session: the client is gone");
                        break;
                    }
                }
            }
            Inbound::Close(channel) => {
                if let Some(slot) = senders.get_mut(channel as usize) {
                    *slot = None;
                } else {
                    tracing::debug!("websocket close signal for unknown channel {channel}");
                    break;
                }
            }
            Inbound::Ignore => {}
            Inbound::Bad(why) => {
                tracing::debug!("websocket session: {why}");
                break;
            }
        }
    }
    // Readers see EOF, the session sees the client gone.
    drop(senders);
    trigger.fire();
}
