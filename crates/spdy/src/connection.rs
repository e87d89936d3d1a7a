//! A SPDY/3.1 connection over any byte stream: a reader task and a writer
//! task, streams the peer opens handed out by `accept`, streams we open.

use std::future::poll_fn;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::oneshot;

use crate::error::Error;
use crate::flow::PeerFlowControl;
use crate::frame::{
    ControlFrame, DEFAULT_WINDOW, GoAwayStatus, MAX_STREAM_ID, MAX_WINDOW,
    SETTINGS_INITIAL_WINDOW_SIZE, Setting, SynStream,
};
use crate::header_block::Headers;
use crate::state::{Shared, Slot};
use crate::stream::{IncomingStream, Lifetime, Stream};
use crate::{reader, writer};

/// Limits and timeouts. Every field has a default; memory per connection
/// is bounded by `session_window` (received, unread) plus `send_buffer`
/// per stream plus one batch being written.
#[derive(Debug, Clone)]
pub struct Config {
    /// Receive window per stream, announced in SETTINGS; also the most we
    /// buffer for one stream before we stop reading the socket.
    pub stream_window: u32,
    /// Receive window of the whole session; the most we buffer in total.
    pub session_window: u32,
    /// Bytes a stream's writer may queue before `poll_write` waits.
    pub send_buffer: usize,
    /// Payload of the DATA frames we send.
    pub max_data_frame: usize,
    /// Control frames longer than this are a protocol error.
    pub max_control_frame: usize,
    /// A header block inflating past this is a protocol error.
    pub max_header_block: usize,
    /// Streams open at once; further SYN_STREAMs are refused.
    pub max_streams: usize,
    /// Streams waiting for `accept`; further ones are refused.
    pub accept_backlog: usize,
    /// Close (GOAWAY) after this long without a frame either way.
    pub idle_timeout: Option<Duration>,
    /// How long a graceful close may take to flush before the socket is
    /// dropped anyway.
    pub close_grace: Duration,
    pub peer_flow_control: PeerFlowControl,
    /// Deflate our header blocks. Off by default: zlib-rs's deflate state
    /// is about 370 KiB per connection, while our header blocks (mostly
    /// SYN_REPLYs) are a few bytes; they go as stored blocks of the same
    /// zlib stream instead, which every inflater reads.
    pub compress_headers: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            stream_window: 256 * 1024,
            session_window: 1024 * 1024,
            send_buffer: 64 * 1024,
            max_data_frame: 64 * 1024,
            max_control_frame: 64 * 1024,
            max_header_block: 64 * 1024,
            max_streams: 256,
            accept_backlog: 32,
            idle_timeout: None,
            close_grace: Duration::from_secs(5),
            peer_flow_control: PeerFlowControl::Auto,
            compress_headers: false,
        }
    }
}

impl Config {
    /// Keeps every limit inside what the protocol and the code allow.
    fn sanitized(mut self) -> Self {
        self.stream_window = self.stream_window.clamp(1024, MAX_WINDOW);
        self.session_window = self.session_window.clamp(DEFAULT_WINDOW, MAX_WINDOW);
        self.send_buffer = self.send_buffer.max(1);
        self.max_data_frame = self.max_data_frame.clamp(1, crate::frame::MAX_PAYLOAD_LEN);
        self.max_control_frame = self.max_control_frame.max(64);
        self.max_header_block = self.max_header_block.max(64);
        self
    }
}

/// One SPDY connection. Must be created inside a Tokio runtime (it spawns
/// its reader and writer tasks). The connection lives while this handle or
/// any stream of it does; when all are dropped it closes gracefully.
pub struct Connection {
    shared: Arc<Shared>,
    lifetime: Arc<Lifetime>,
}

impl Connection {
    /// The server side (streams from the peer are odd, ours even).
    pub fn server<IO>(io: IO, config: Config) -> Self
    where
        IO: AsyncRead + AsyncWrite + Send + 'static,
    {
        Self::start(io, config, true)
    }

    /// The client side (our streams are odd).
    pub fn client<IO>(io: IO, config: Config) -> Self
    where
        IO: AsyncRead + AsyncWrite + Send + 'static,
    {
        Self::start(io, config, false)
    }

    fn start<IO>(io: IO, config: Config, is_server: bool) -> Self
    where
        IO: AsyncRead + AsyncWrite + Send + 'static,
    {
        let config = config.sanitized();
        let shared = Arc::new(Shared::new(config.clone(), is_server));
        {
            // First thing on the wire: our windows. spdystream ignores both
            // frames; a flow-controlled peer learns it may send more than
            // the 64 KiB defaults, and (Auto) that we speak flow control.
            let mut state = shared.lock();
            let settings = ControlFrame::Settings {
                clear: false,
                entries: vec![Setting {
                    flags: 0,
                    id: SETTINGS_INITIAL_WINDOW_SIZE,
                    value: config.stream_window,
                }],
            };
            shared.queue_control(&mut state, settings);
            if config.session_window > DEFAULT_WINDOW {
                let grow = ControlFrame::WindowUpdate {
                    stream_id: 0,
                    delta: config.session_window - DEFAULT_WINDOW,
                };
                shared.queue_control(&mut state, grow);
            }
        }
        shared.touch();
        let (read_half, write_half) = tokio::io::split(io);
        tokio::spawn(reader::run(shared.clone(), read_half));
        tokio::spawn(writer::run(shared.clone(), write_half));
        if let Some(timeout) = config.idle_timeout {
            tokio::spawn(watch_idle(shared.clone(), timeout));
        }
        let lifetime = Arc::new(Lifetime::new(shared.clone()));
        Self { shared, lifetime }
    }

    /// The next stream the peer opened; `None` once the connection closes
    /// (or is closing). Reply to it or reset it; dropping it refuses it.
    pub async fn accept(&self) -> Option<IncomingStream> {
        poll_fn(|cx| {
            let mut state = self.shared.lock();
            if let Some(pending) = state.accept_queue.pop_front() {
                return Poll::Ready(Some(IncomingStream::new(
                    self.shared.clone(),
                    self.lifetime.clone(),
                    pending,
                )));
            }
            if state.closed.is_some() || state.closing.is_some() {
                return Poll::Ready(None);
            }
            state.accept_waker = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    /// Opens a stream (SYN_STREAM). It is writable at once, as spdystream
    /// does; [`Stream::reply_headers`] waits for the peer's SYN_REPLY.
    pub fn open_stream(&self, headers: Headers) -> Result<Stream, Error> {
        let mut state = self.shared.lock();
        if let Some(err) = Shared::connection_error(&state) {
            return Err(err);
        }
        if let Some(status) = state.goaway_received {
            return Err(Error::GoneAway { status });
        }
        let id = state.next_local_id;
        if id > MAX_STREAM_ID {
            return Err(Error::StreamIdsExhausted);
        }
        state.next_local_id += 2;
        let slot = Slot::new(
            true,
            self.shared.config.stream_window,
            state.initial_send_window,
        );
        state.streams.insert(id, slot);
        let syn = ControlFrame::SynStream(SynStream {
            stream_id: id,
            associated_to: 0,
            priority: 0,
            slot: 0,
            flags: 0,
            headers: headers.clone(),
        });
        self.shared.queue_control(&mut state, syn);
        drop(state);
        Ok(Stream::new(
            self.shared.clone(),
            self.lifetime.clone(),
            id,
            headers,
        ))
    }

    /// Frees the state that reads the peer's header blocks (zlib's, about
    /// 40 KiB), for a session that takes no more streams: an exec or attach
    /// once its streams are open. The peer's zlib stream spans the whole
    /// connection, so a header block it sends later (a new stream) can't be
    /// read: the connection ends with a protocol error.
    pub fn release_header_decompressor(&self) {
        self.shared
            .inflate
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .release();
    }

    /// Sends a PING and waits for its echo.
    pub async fn ping(&self) -> Result<Duration, Error> {
        let (tx, rx) = oneshot::channel();
        {
            let mut state = self.shared.lock();
            if let Some(err) = Shared::connection_error(&state) {
                return Err(err);
            }
            let id = state.take_ping_id();
            state.pings.insert(id, tx);
            self.shared
                .queue_control(&mut state, ControlFrame::Ping { id });
        }
        let sent = Instant::now();
        match rx.await {
            Ok(()) => Ok(sent.elapsed()),
            Err(_) => Err(self.close_reason()),
        }
    }

    /// Sends GOAWAY: the peer opens no new streams; ours carry on.
    pub fn go_away(&self) {
        let mut state = self.shared.lock();
        if state.goaway_sent || state.closed.is_some() {
            return;
        }
        state.goaway_sent = true;
        let frame = ControlFrame::GoAway {
            last_good_stream_id: state.last_remote_id,
            status: GoAwayStatus::OK,
        };
        self.shared.queue_control(&mut state, frame);
    }

    /// Closes gracefully: what is queued is sent, then GOAWAY, then the
    /// socket is shut. Streams not finished by then see an error.
    pub fn close(&self) {
        let mut state = self.shared.lock();
        self.shared
            .begin_close(&mut state, Error::Closed, GoAwayStatus::OK);
    }

    /// Waits until the connection is over; says why (`Error::Closed` when
    /// it ended cleanly: the peer hung up, or we closed it).
    pub async fn closed(&self) -> Error {
        let mut closed_rx = self.shared.closed_tx.subscribe();
        // The sender lives in `self.shared`, so this only ends on `true`.
        let _ = closed_rx.wait_for(|closed| *closed).await;
        self.close_reason()
    }

    pub fn is_closed(&self) -> bool {
        self.shared.lock().closed.is_some()
    }

    fn close_reason(&self) -> Error {
        Shared::connection_error(&self.shared.lock()).unwrap_or(Error::Closed)
    }
}

/// Closes the connection after `timeout` without a frame either way.
async fn watch_idle(shared: Arc<Shared>, timeout: Duration) {
    let mut closed_rx = shared.closed_tx.subscribe();
    loop {
        let idle = shared.idle_for();
        if idle >= timeout {
            let mut state = shared.lock();
            shared.begin_close(&mut state, Error::IdleTimeout, GoAwayStatus::OK);
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(timeout - idle) => {}
            _ = closed_rx.wait_for(|closed| *closed) => return,
        }
    }
}
