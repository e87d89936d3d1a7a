//! The state one connection's reader task, writer task and user handles
//! share: one mutex (held briefly, never across an await) plus the wake-ups
//! between them.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::task::Waker;
use std::time::{Duration, Instant};

use tokio::sync::{Notify, oneshot, watch};

use crate::connection::Config;
use crate::error::Error;
use crate::flow::{PeerFlowControl, RecvWindow, SendWindow};
use crate::frame::{ControlFrame, DEFAULT_WINDOW, GoAwayStatus, MAX_STREAM_ID, RstStatus};
use crate::header_block::{HeaderDecompressor, Headers};

/// Reader-made control frames (RSTs, PING answers) that may wait for the
/// writer; past this the reader stops reading, so a peer flooding PINGs
/// or bad DATA meets backpressure instead of growing a queue.
pub(crate) const CONTROL_QUEUE_LIMIT: usize = 256;

pub(crate) struct Shared {
    pub state: Mutex<State>,
    /// The peer's header blocks' zlib stream: the reader inflates with it,
    /// [`Connection::release_header_decompressor`](crate::Connection::release_header_decompressor)
    /// frees it. A lock of its own: never held with `state`'s.
    pub inflate: Mutex<HeaderDecompressor>,
    pub config: Config,
    /// The writer task waits here for frames to send.
    pub writer_wake: Notify,
    /// The reader task waits here for buffer room or control queue room.
    pub reader_wake: Notify,
    /// Becomes true once the connection is over; the tasks stop on it.
    pub closed_tx: watch::Sender<bool>,
    started: Instant,
    /// Milliseconds after `started` of the last frame read or written.
    last_activity_ms: AtomicU64,
}

/// A stream the peer opened that `accept` has not handed out yet.
pub(crate) struct Pending {
    pub id: u32,
    pub flags: u8,
    pub headers: Headers,
}

pub(crate) struct State {
    pub is_server: bool,
    pub streams: HashMap<u32, Slot>,
    /// Frames for the writer, in order, before any DATA of its batch.
    pub control: VecDeque<ControlFrame>,
    /// Streams with DATA or a FIN to send, served round-robin.
    pub send_ready: VecDeque<u32>,
    pub accept_queue: VecDeque<Pending>,
    pub accept_waker: Option<Waker>,
    pub next_local_id: u32,
    pub last_remote_id: u32,
    pub next_ping_id: u32,
    pub pings: HashMap<u32, oneshot::Sender<()>>,
    pub session_send: SendWindow,
    pub session_recv: RecvWindow,
    /// Received DATA bytes that streams hold, unread.
    pub buffered_total: usize,
    pub enforce_send: bool,
    pub initial_send_window: u32,
    pub goaway_sent: bool,
    pub goaway_received: Option<GoAwayStatus>,
    /// A graceful close is under way: the writer sends what is queued (the
    /// GOAWAY last), then shuts the socket; past the deadline it just stops.
    pub closing: Option<(Error, Instant)>,
    /// The connection is over, and why (`Error::Closed` when cleanly).
    pub closed: Option<Error>,
}

/// One stream's two directions.
pub(crate) struct Slot {
    /// Opened by us (so it waits for a SYN_REPLY).
    pub local: bool,
    pub reply: Reply,
    pub recv_chunks: VecDeque<Vec<u8>>,
    /// Bytes of the front chunk already read.
    pub recv_offset: usize,
    pub recv_buffered: usize,
    pub recv_window: RecvWindow,
    pub remote_fin: bool,
    pub read_waker: Option<Waker>,
    pub send_buf: Vec<u8>,
    pub send_window: SendWindow,
    pub fin_queued: bool,
    pub fin_sent: bool,
    pub in_send_ready: bool,
    pub write_waker: Option<Waker>,
    /// Set by a RST_STREAM either way: both directions are over.
    pub reset: Option<Error>,
    pub reader_alive: bool,
    pub writer_alive: bool,
}

pub(crate) enum Reply {
    /// Not ours, or ours and answered already (headers taken).
    NotExpected,
    Waiting(Option<Waker>),
    Received(Headers),
}

impl State {
    /// The id of our next PING (ours keep their parity, wrapping at 31 bits).
    pub fn take_ping_id(&mut self) -> u32 {
        let id = self.next_ping_id;
        self.next_ping_id = if id > MAX_STREAM_ID - 2 {
            id % 2 + 2
        } else {
            id + 2
        };
        id
    }
}

impl Slot {
    pub fn new(local: bool, recv_window: u32, send_window: u32) -> Self {
        Self {
            local,
            reply: if local {
                Reply::Waiting(None)
            } else {
                Reply::NotExpected
            },
            recv_chunks: VecDeque::new(),
            recv_offset: 0,
            recv_buffered: 0,
            recv_window: RecvWindow::new(recv_window),
            remote_fin: false,
            read_waker: None,
            send_buf: Vec::new(),
            send_window: SendWindow::new(send_window),
            fin_queued: false,
            fin_sent: false,
            in_send_ready: false,
            write_waker: None,
            reset: None,
            reader_alive: true,
            writer_alive: true,
        }
    }

    pub fn has_output(&self) -> bool {
        self.reset.is_none() && (!self.send_buf.is_empty() || (self.fin_queued && !self.fin_sent))
    }

    pub fn wake_all(&mut self) {
        wake(&mut self.read_waker);
        wake(&mut self.write_waker);
        if let Reply::Waiting(waker) = &mut self.reply {
            wake(waker);
        }
    }
}

pub(crate) fn wake(waker: &mut Option<Waker>) {
    if let Some(waker) = waker.take() {
        waker.wake();
    }
}

impl Shared {
    pub fn new(config: Config, is_server: bool) -> Self {
        let state = State {
            is_server,
            streams: HashMap::new(),
            control: VecDeque::new(),
            send_ready: VecDeque::new(),
            accept_queue: VecDeque::new(),
            accept_waker: None,
            // Clients open odd streams and ping with odd ids, servers even.
            next_local_id: if is_server { 2 } else { 1 },
            last_remote_id: 0,
            next_ping_id: if is_server { 2 } else { 1 },
            pings: HashMap::new(),
            session_send: SendWindow::new(DEFAULT_WINDOW),
            session_recv: RecvWindow::new(config.session_window),
            buffered_total: 0,
            enforce_send: config.peer_flow_control == PeerFlowControl::Always,
            initial_send_window: DEFAULT_WINDOW,
            goaway_sent: false,
            goaway_received: None,
            closing: None,
            closed: None,
        };
        Self {
            state: Mutex::new(state),
            inflate: Mutex::new(HeaderDecompressor::new(config.max_header_block)),
            config,
            writer_wake: Notify::new(),
            reader_wake: Notify::new(),
            closed_tx: watch::channel(false).0,
            started: Instant::now(),
            last_activity_ms: AtomicU64::new(0),
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves nothing half-done that
        // matters more than carrying on to close the connection.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn touch(&self) {
        let now = self.started.elapsed().as_millis() as u64;
        self.last_activity_ms.store(now, Ordering::Relaxed);
    }

    pub fn idle_for(&self) -> Duration {
        let last = Duration::from_millis(self.last_activity_ms.load(Ordering::Relaxed));
        self.started.elapsed().saturating_sub(last)
    }

    pub fn queue_control(&self, state: &mut State, frame: ControlFrame) {
        state.control.push_back(frame);
        self.writer_wake.notify_one();
    }

    pub fn queue_output(&self, state: &mut State, id: u32) {
        if let Some(slot) = state.streams.get_mut(&id)
            && !slot.in_send_ready
            && slot.has_output()
        {
            slot.in_send_ready = true;
            state.send_ready.push_back(id);
            self.writer_wake.notify_one();
        }
    }

    /// Starts a graceful close: GOAWAY, then the writer flushes and shuts
    /// the socket, or stops at `close_grace` if the peer does not read.
    pub fn begin_close(&self, state: &mut State, reason: Error, status: GoAwayStatus) {
        if state.closing.is_some() || state.closed.is_some() {
            return;
        }
        let frame = ControlFrame::GoAway {
            last_good_stream_id: state.last_remote_id,
            status,
        };
        state.goaway_sent = true;
        self.queue_control(state, frame);
        state.closing = Some((reason, Instant::now() + self.config.close_grace));
        wake(&mut state.accept_waker);
        self.reader_wake.notify_one();
    }

    /// Ends the connection now: every waiter wakes and sees `reason`.
    pub fn hard_close(&self, state: &mut State, reason: Error) {
        if state.closed.is_none() {
            state.closed = Some(reason);
        }
        for slot in state.streams.values_mut() {
            slot.wake_all();
        }
        wake(&mut state.accept_waker);
        // Dropping the senders fails every ping in flight.
        state.pings.clear();
        self.closed_tx.send_replace(true);
        self.writer_wake.notify_one();
        self.reader_wake.notify_one();
    }

    /// Resets a stream from our side: RST_STREAM, both directions over.
    pub fn reset_stream(&self, state: &mut State, id: u32, status: RstStatus) {
        let Some(slot) = state.streams.get_mut(&id) else {
            return;
        };
        if slot.reset.is_none() && !(slot.fin_sent && slot.remote_fin) {
            self.queue_control(
                state,
                ControlFrame::RstStream {
                    stream_id: id,
                    status,
                },
            );
        }
        self.mark_reset(state, id, Error::StreamReset { id, status });
    }

    /// The stream is over both ways (either side's RST_STREAM): buffered
    /// input is dropped and its window credit returned to the session.
    pub fn mark_reset(&self, state: &mut State, id: u32, reason: Error) {
        let Some(slot) = state.streams.get_mut(&id) else {
            return;
        };
        if slot.reset.is_none() {
            slot.reset = Some(reason);
        }
        let dropped = std::mem::take(&mut slot.recv_buffered);
        slot.recv_chunks.clear();
        slot.recv_offset = 0;
        slot.send_buf = Vec::new();
        slot.wake_all();
        state.buffered_total -= dropped;
        self.credit_session(state, dropped);
        self.reader_wake.notify_one();
        self.maybe_remove(state, id);
    }

    /// The peer reset the stream: both directions are over, but what it
    /// sent before the reset stays readable, as with Go's spdystream.
    /// Every Kubernetes streaming server (kubelet's, containerd's, CRI-O's)
    /// resets its streams when it closes a session right after writing the
    /// last of them (an exec's exit status), and client-go resets a
    /// port-forward stream after sending its last bytes: dropping what was
    /// buffered would lose both.
    pub fn mark_reset_by_peer(&self, state: &mut State, id: u32, reason: Error) {
        let Some(slot) = state.streams.get_mut(&id) else {
            return;
        };
        if slot.recv_buffered == 0 || !slot.reader_alive {
            return self.mark_reset(state, id, reason);
        }
        if slot.reset.is_none() {
            slot.reset = Some(reason);
        }
        slot.send_buf = Vec::new();
        slot.wake_all();
    }

    /// Received bytes are gone from the stream's buffer (read or dropped):
    /// announce them in WINDOW_UPDATEs once worth it.
    pub fn credit_stream(&self, state: &mut State, id: u32, n: usize) {
        if let Some(slot) = state.streams.get_mut(&id)
            && let Some(delta) = slot.recv_window.consumed(n)
            && !slot.remote_fin
            && slot.reset.is_none()
        {
            self.queue_control(
                state,
                ControlFrame::WindowUpdate {
                    stream_id: id,
                    delta,
                },
            );
        }
    }

    pub fn credit_session(&self, state: &mut State, n: usize) {
        if let Some(delta) = state.session_recv.consumed(n) {
            self.queue_control(
                state,
                ControlFrame::WindowUpdate {
                    stream_id: 0,
                    delta,
                },
            );
        }
    }

    /// Forgets a stream once both handles are gone and both directions are
    /// over. Until then a stream without a reader drops what arrives.
    pub fn maybe_remove(&self, state: &mut State, id: u32) {
        if let Some(slot) = state.streams.get(&id)
            && !slot.reader_alive
            && !slot.writer_alive
            && (slot.reset.is_some() || (slot.fin_sent && slot.remote_fin))
        {
            state.streams.remove(&id);
        }
    }

    /// The error a stream operation reports once the connection is over or
    /// going away.
    pub fn connection_error(state: &State) -> Option<Error> {
        if let Some(err) = &state.closed {
            return Some(err.clone());
        }
        state.closing.as_ref().map(|(err, _)| err.clone())
    }
}
