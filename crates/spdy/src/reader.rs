//! The reader task: reads frames, applies them to the shared state, and
//! reads DATA no faster than streams can hold it (our backpressure on peers
//! that ignore windows, as spdystream does).

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, BufReader};
use tokio::time::Instant;

use crate::error::{Error, FrameError};
use crate::flow::PeerFlowControl;
use crate::frame::{
    ControlFrame, FLAG_FIN, FLAG_UNIDIRECTIONAL, FRAME_HEAD_LEN, FrameHead, GoAwayStatus,
    MAX_WINDOW, RstStatus, SETTINGS_INITIAL_WINDOW_SIZE, decode_control,
};
use crate::state::{CONTROL_QUEUE_LIMIT, Pending, Reply, Shared, Slot, State, wake};

/// DATA is moved into stream buffers in pieces of at most this much.
const DATA_CHUNK: usize = 64 * 1024;

/// How long a stream may keep the socket unread before the peer is pinged.
const STALLED_PING: Duration = Duration::from_secs(5);

pub(crate) async fn run<R: AsyncRead + Unpin>(shared: Arc<Shared>, io: R) {
    let mut closed_rx = shared.closed_tx.subscribe();
    let mut reader = Reader {
        shared: shared.clone(),
        io: BufReader::with_capacity(8 * 1024, io),
    };
    let outcome = tokio::select! {
        outcome = reader.read_frames() => outcome,
        _ = closed_rx.wait_for(|closed| *closed) => return,
    };
    let mut state = shared.lock();
    match outcome {
        Ok(()) => shared.hard_close(&mut state, Error::Closed),
        Err(err @ Error::Io { .. }) => shared.hard_close(&mut state, err),
        // The input can't be trusted further: say why, then close.
        Err(err) => shared.begin_close(&mut state, err, GoAwayStatus::PROTOCOL_ERROR),
    }
}

struct Reader<R> {
    shared: Arc<Shared>,
    io: BufReader<R>,
}

/// Where the next piece of a DATA frame goes.
enum Sink {
    Stream(usize),
    Discard(usize),
    Wait,
}

impl<R: AsyncRead + Unpin> Reader<R> {
    /// Reads until the peer hangs up (`Ok`) or something breaks.
    async fn read_frames(&mut self) -> Result<(), Error> {
        loop {
            wait_for_control_room(&self.shared).await;
            let mut head = [0u8; FRAME_HEAD_LEN];
            // EOF before a frame's first byte is a clean end.
            if self.io.read(&mut head[..1]).await? == 0 {
                return Ok(());
            }
            self.io.read_exact(&mut head[1..]).await?;
            self.shared.touch();
            match FrameHead::parse(head) {
                FrameHead::Control {
                    version,
                    kind,
                    flags,
                    len,
                } => {
                    let limit = self.shared.config.max_control_frame;
                    if len > limit {
                        return Err(Error::FrameTooLarge { len, limit });
                    }
                    let mut payload = vec![0; len];
                    self.io.read_exact(&mut payload).await?;
                    let decoded = {
                        let mut inflate = self
                            .shared
                            .inflate
                            .lock()
                            .unwrap_or_else(|poisoned| poisoned.into_inner());
                        decode_control(version, kind, flags, &payload, &mut inflate)
                    };
                    match decoded {
                        Ok(Some(frame)) => self.apply_control(frame)?,
                        Ok(None) => {}
                        Err(FrameError::Stream { id, status, .. }) => self.stream_error(id, status),
                        Err(FrameError::Session(err)) => return Err(err),
                    }
                }
                FrameHead::Data {
                    stream_id,
                    flags,
                    len,
                } => self.read_data(stream_id, flags, len).await?,
            }
        }
    }

    fn stream_error(&self, id: u32, status: RstStatus) {
        let mut state = self.shared.lock();
        // A bad SYN_STREAM still uses up its id.
        if id % 2 == peer_parity(&state) && id > state.last_remote_id {
            state.last_remote_id = id;
        }
        let frame = ControlFrame::RstStream {
            stream_id: id,
            status,
        };
        self.shared.queue_control(&mut state, frame);
        self.shared
            .mark_reset(&mut state, id, Error::StreamReset { id, status });
    }

    fn apply_control(&self, frame: ControlFrame) -> Result<(), Error> {
        let shared = &*self.shared;
        let mut guard = shared.lock();
        let state = &mut *guard;
        match frame {
            ControlFrame::SynStream(syn) => {
                let id = syn.stream_id;
                if id % 2 != peer_parity(state) || id <= state.last_remote_id {
                    return Err(Error::Protocol(format!(
                        "SYN_STREAM for stream {id}: not a new id of the peer's parity"
                    )));
                }
                state.last_remote_id = id;
                let config = &shared.config;
                if state.goaway_sent
                    || state.closing.is_some()
                    || state.streams.len() >= config.max_streams
                    || state.accept_queue.len() >= config.accept_backlog
                {
                    let refuse = ControlFrame::RstStream {
                        stream_id: id,
                        status: RstStatus::REFUSED_STREAM,
                    };
                    shared.queue_control(state, refuse);
                    return Ok(());
                }
                let mut slot = Slot::new(false, config.stream_window, state.initial_send_window);
                slot.remote_fin = syn.flags & FLAG_FIN != 0;
                // We may not send on it: our direction is over already.
                slot.fin_sent = syn.flags & FLAG_UNIDIRECTIONAL != 0;
                state.streams.insert(id, slot);
                state.accept_queue.push_back(Pending {
                    id,
                    flags: syn.flags,
                    headers: syn.headers,
                });
                wake(&mut state.accept_waker);
            }
            ControlFrame::SynReply {
                stream_id,
                fin,
                headers,
            } => {
                let status = match state.streams.get_mut(&stream_id) {
                    Some(slot) if slot.local => match &mut slot.reply {
                        Reply::Waiting(waker) => {
                            wake(waker);
                            slot.reply = Reply::Received(headers);
                            if fin {
                                slot.remote_fin = true;
                                wake(&mut slot.read_waker);
                            }
                            None
                        }
                        _ => Some(RstStatus::STREAM_IN_USE),
                    },
                    Some(_) => Some(RstStatus::PROTOCOL_ERROR),
                    None => Some(RstStatus::INVALID_STREAM),
                };
                if let Some(status) = status {
                    drop(guard);
                    self.stream_error(stream_id, status);
                } else if fin {
                    shared.maybe_remove(state, stream_id);
                }
            }
            ControlFrame::RstStream { stream_id, status } => {
                shared.mark_reset_by_peer(
                    state,
                    stream_id,
                    Error::StreamReset {
                        id: stream_id,
                        status,
                    },
                );
            }
            ControlFrame::Settings { entries, .. } => {
                for entry in entries {
                    if entry.id != SETTINGS_INITIAL_WINDOW_SIZE {
                        continue;
                    }
                    if entry.value > MAX_WINDOW {
                        return Err(Error::Protocol(format!(
                            "initial window of {} bytes",
                            entry.value
                        )));
                    }
                    let difference = i64::from(entry.value) - i64::from(state.initial_send_window);
                    state.initial_send_window = entry.value;
                    for slot in state.streams.values_mut() {
                        slot.send_window.adjust(difference);
                    }
                    self.peer_speaks_flow_control(state);
                }
            }
            ControlFrame::Ping { id } => {
                if id % 2 == peer_parity(state) {
                    shared.queue_control(state, ControlFrame::Ping { id });
                } else if let Some(waiter) = state.pings.remove(&id) {
                    let _ = waiter.send(());
                }
            }
            ControlFrame::GoAway {
                last_good_stream_id,
                status,
            } => {
                state.goaway_received = Some(status);
                // Ours past its last good id were never seen: they failed.
                let unseen: Vec<u32> = state
                    .streams
                    .iter()
                    .filter(|(id, slot)| slot.local && **id > last_good_stream_id)
                    .map(|(id, _)| *id)
                    .collect();
                for id in unseen {
                    shared.mark_reset(state, id, Error::GoneAway { status });
                }
            }
            ControlFrame::Headers { stream_id, fin, .. } => {
                if fin && let Some(slot) = state.streams.get_mut(&stream_id) {
                    slot.remote_fin = true;
                    wake(&mut slot.read_waker);
                    shared.maybe_remove(state, stream_id);
                }
            }
            ControlFrame::WindowUpdate { stream_id, delta } => {
                self.peer_speaks_flow_control(state);
                if stream_id == 0 {
                    if state.session_send.grow(delta).is_err() {
                        return Err(Error::Protocol("session window past 2^31-1".into()));
                    }
                    let waiting: Vec<u32> = state.streams.keys().copied().collect();
                    for id in waiting {
                        shared.queue_output(state, id);
                    }
                } else if let Some(slot) = state.streams.get_mut(&stream_id) {
                    if slot.send_window.grow(delta).is_err() {
                        drop(guard);
                        self.stream_error(stream_id, RstStatus::FLOW_CONTROL_ERROR);
                        return Ok(());
                    }
                    shared.queue_output(state, stream_id);
                }
            }
        }
        Ok(())
    }

    fn peer_speaks_flow_control(&self, state: &mut State) {
        if self.shared.config.peer_flow_control == PeerFlowControl::Auto && !state.enforce_send {
            state.enforce_send = true;
        }
    }

    /// Moves a DATA frame's payload into its stream, piece by piece as the
    /// stream has room; a frame for no open stream is read and dropped.
    async fn read_data(&mut self, id: u32, flags: u8, len: usize) -> Result<(), Error> {
        if id == 0 {
            return Err(Error::Protocol("DATA for stream 0".into()));
        }
        {
            let mut state = self.shared.lock();
            let refuse = match state.streams.get(&id) {
                None => Some(RstStatus::INVALID_STREAM),
                Some(slot) if slot.remote_fin && slot.reset.is_none() => {
                    Some(RstStatus::STREAM_ALREADY_CLOSED)
                }
                Some(_) => None,
            };
            if let Some(status) = refuse {
                let frame = ControlFrame::RstStream {
                    stream_id: id,
                    status,
                };
                self.shared.queue_control(&mut state, frame);
                self.shared
                    .mark_reset(&mut state, id, Error::StreamReset { id, status });
            }
        }
        let mut remaining = len;
        let mut next_ping = None;
        while remaining > 0 {
            match self.sink_for(id, remaining) {
                Sink::Wait => {
                    // A peer gone meanwhile is only seen by writing to it
                    // (its FIN waits behind the DATA we don't read): ping it
                    // every so often while the stream keeps us waiting; a
                    // failed write closes the connection.
                    let at = *next_ping.get_or_insert_with(|| Instant::now() + STALLED_PING);
                    tokio::select! {
                        _ = self.shared.reader_wake.notified() => {}
                        _ = tokio::time::sleep_until(at) => {
                            self.ping_peer();
                            next_ping = Some(Instant::now() + STALLED_PING);
                        }
                    }
                }
                Sink::Stream(n) => {
                    next_ping = None;
                    let mut chunk = vec![0; n];
                    self.io.read_exact(&mut chunk).await?;
                    remaining -= n;
                    self.deliver(id, chunk);
                }
                Sink::Discard(n) => {
                    let mut scratch = [0u8; 8 * 1024];
                    let n = n.min(scratch.len());
                    self.io.read_exact(&mut scratch[..n]).await?;
                    remaining -= n;
                    let mut state = self.shared.lock();
                    self.shared.credit_session(&mut state, n);
                }
            }
        }
        if flags & FLAG_FIN != 0 {
            let mut state = self.shared.lock();
            if let Some(slot) = state.streams.get_mut(&id) {
                slot.remote_fin = true;
                wake(&mut slot.read_waker);
                self.shared.maybe_remove(&mut state, id);
            }
        }
        Ok(())
    }

    /// Queues a PING nobody waits for (its echo, if it comes, is ignored).
    fn ping_peer(&self) {
        let mut state = self.shared.lock();
        let id = state.take_ping_id();
        self.shared
            .queue_control(&mut state, ControlFrame::Ping { id });
    }

    fn sink_for(&self, id: u32, remaining: usize) -> Sink {
        let state = self.shared.lock();
        let Some(slot) = state.streams.get(&id) else {
            return Sink::Discard(remaining);
        };
        if slot.reset.is_some() || !slot.reader_alive {
            return Sink::Discard(remaining);
        }
        let config = &self.shared.config;
        let stream_room = (config.stream_window as usize).saturating_sub(slot.recv_buffered);
        let session_room = (config.session_window as usize).saturating_sub(state.buffered_total);
        match stream_room.min(session_room).min(remaining).min(DATA_CHUNK) {
            0 => Sink::Wait,
            n => Sink::Stream(n),
        }
    }

    fn deliver(&self, id: u32, chunk: Vec<u8>) {
        let n = chunk.len();
        let mut guard = self.shared.lock();
        let state = &mut *guard;
        match state.streams.get_mut(&id) {
            Some(slot) if slot.reset.is_none() && slot.reader_alive => {
                slot.recv_chunks.push_back(chunk);
                slot.recv_buffered += n;
                state.buffered_total += n;
                wake(&mut slot.read_waker);
            }
            // Reset or abandoned while we read: drop it, return the credit.
            _ => self.shared.credit_session(state, n),
        }
    }
}

/// Waits while the writer has a full queue of our answers. A free function:
/// `&Reader` held across an await would need the I/O type to be `Sync`.
async fn wait_for_control_room(shared: &Shared) {
    loop {
        if shared.lock().control.len() < CONTROL_QUEUE_LIMIT {
            return;
        }
        shared.reader_wake.notified().await;
    }
}

/// Stream and ping ids the peer starts: odd from a client, even from a server.
fn peer_parity(state: &State) -> u32 {
    if state.is_server { 1 } else { 0 }
}
