//! What the user holds: a stream the peer opened and not yet answered, and
//! an open stream's reading and writing halves (AsyncRead / AsyncWrite over
//! DATA frames; shutdown sends FIN).

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::error::Error;
use crate::frame::{ControlFrame, FLAG_FIN, FLAG_UNIDIRECTIONAL, GoAwayStatus, RstStatus};
use crate::header_block::Headers;
use crate::state::{Pending, Reply, Shared, State};

/// Keeps the connection open while a handle to it exists; the last one
/// dropped closes it gracefully.
pub(crate) struct Lifetime {
    shared: Arc<Shared>,
}

impl Lifetime {
    pub fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }
}

impl Drop for Lifetime {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        self.shared
            .begin_close(&mut state, Error::Closed, GoAwayStatus::OK);
    }
}

/// A stream the peer opened (its SYN_STREAM), waiting for our answer.
/// Dropping it unanswered refuses it (RST_STREAM REFUSED_STREAM).
pub struct IncomingStream {
    shared: Arc<Shared>,
    lifetime: Arc<Lifetime>,
    id: u32,
    flags: u8,
    headers: Headers,
    answered: bool,
}

impl IncomingStream {
    pub(crate) fn new(shared: Arc<Shared>, lifetime: Arc<Lifetime>, pending: Pending) -> Self {
        Self {
            shared,
            lifetime,
            id: pending.id,
            flags: pending.flags,
            headers: pending.headers,
            answered: false,
        }
    }

    pub fn id(&self) -> u32 {
        self.id
    }

    pub fn headers(&self) -> &Headers {
        &self.headers
    }

    /// The peer will not send on it (its SYN_STREAM had FLAG_FIN).
    pub fn is_remote_finished(&self) -> bool {
        self.flags & FLAG_FIN != 0
    }

    /// We may not send on it (FLAG_UNIDIRECTIONAL).
    pub fn is_unidirectional(&self) -> bool {
        self.flags & FLAG_UNIDIRECTIONAL != 0
    }

    /// Accepts the stream with SYN_REPLY; from now on it carries DATA.
    pub fn reply(mut self, headers: Headers) -> Result<Stream, Error> {
        self.answered = true;
        let mut state = self.shared.lock();
        if let Some(err) = Shared::connection_error(&state) {
            return Err(err);
        }
        let Some(slot) = state.streams.get(&self.id) else {
            return Err(Error::Closed);
        };
        if let Some(err) = &slot.reset {
            return Err(err.clone());
        }
        let reply = ControlFrame::SynReply {
            stream_id: self.id,
            fin: false,
            headers,
        };
        self.shared.queue_control(&mut state, reply);
        drop(state);
        Ok(Stream::new(
            self.shared.clone(),
            self.lifetime.clone(),
            self.id,
            std::mem::take(&mut self.headers),
        ))
    }

    /// Refuses the stream with RST_STREAM `status`.
    pub fn reset(mut self, status: RstStatus) {
        self.answered = true;
        self.release(status);
    }

    fn release(&self, status: RstStatus) {
        let mut state = self.shared.lock();
        self.shared.reset_stream(&mut state, self.id, status);
        if let Some(slot) = state.streams.get_mut(&self.id) {
            slot.reader_alive = false;
            slot.writer_alive = false;
        }
        self.shared.maybe_remove(&mut state, self.id);
    }
}

impl Drop for IncomingStream {
    fn drop(&mut self) {
        if !self.answered {
            self.release(RstStatus::REFUSED_STREAM);
        }
    }
}

/// An open stream: read what the peer sends, write to it. `shutdown`
/// half-closes (DATA with FLAG_FIN); reads end at the peer's FIN.
pub struct Stream {
    reader: StreamReader,
    writer: StreamWriter,
    headers: Headers,
}

impl Stream {
    pub(crate) fn new(
        shared: Arc<Shared>,
        lifetime: Arc<Lifetime>,
        id: u32,
        headers: Headers,
    ) -> Self {
        Self {
            reader: StreamReader {
                shared: shared.clone(),
                _lifetime: lifetime.clone(),
                id,
            },
            writer: StreamWriter {
                shared,
                _lifetime: lifetime,
                id,
            },
            headers,
        }
    }

    pub fn id(&self) -> u32 {
        self.reader.id
    }

    /// The headers of the SYN_STREAM that opened it (ours or the peer's).
    pub fn headers(&self) -> &Headers {
        &self.headers
    }

    /// For a stream we opened: waits for the peer's SYN_REPLY headers (a
    /// second call returns empty headers). For a peer's stream: empty.
    pub async fn reply_headers(&self) -> Result<Headers, Error> {
        let shared = &self.reader.shared;
        let id = self.reader.id;
        poll_fn(|cx| {
            let mut state = shared.lock();
            let closed = Shared::connection_error(&state);
            let Some(slot) = state.streams.get_mut(&id) else {
                return Poll::Ready(Err(Error::Closed));
            };
            if let Reply::Received(_) = slot.reply {
                let Reply::Received(headers) =
                    std::mem::replace(&mut slot.reply, Reply::NotExpected)
                else {
                    unreachable!()
                };
                return Poll::Ready(Ok(headers));
            }
            if let Some(err) = &slot.reset {
                return Poll::Ready(Err(err.clone()));
            }
            if let Some(err) = closed {
                return Poll::Ready(Err(err));
            }
            match &mut slot.reply {
                Reply::Waiting(waker) => {
                    *waker = Some(cx.waker().clone());
                    Poll::Pending
                }
                _ => Poll::Ready(Ok(Headers::new())),
            }
        })
        .await
    }

    /// Ends the stream both ways with RST_STREAM `status`.
    pub fn reset(&self, status: RstStatus) {
        self.writer.reset(status);
    }

    pub fn into_split(self) -> (StreamReader, StreamWriter) {
        (self.reader, self.writer)
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.reader).poll_read(cx, buf)
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.writer).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.writer).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.writer).poll_shutdown(cx)
    }
}

/// The receiving half. Dropping it drops what arrives later (the window
/// credit still goes back, so the peer is not stalled).
pub struct StreamReader {
    shared: Arc<Shared>,
    _lifetime: Arc<Lifetime>,
    id: u32,
}

impl StreamReader {
    pub fn id(&self) -> u32 {
        self.id
    }
}

impl AsyncRead for StreamReader {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let shared = &self.shared;
        let mut state = shared.lock();
        let state = &mut *state;
        let closed = Shared::connection_error(state);
        let Some(slot) = state.streams.get_mut(&self.id) else {
            return Poll::Ready(Ok(()));
        };
        // What arrived before a reset (the peer's: ours drops it) is read
        // first; a FIN before the reset ended the stream normally.
        if let Some(front) = slot.recv_chunks.front() {
            let available = &front[slot.recv_offset..];
            let n = available.len().min(buf.remaining());
            buf.put_slice(&available[..n]);
            slot.recv_offset += n;
            if slot.recv_offset == front.len() {
                slot.recv_chunks.pop_front();
                slot.recv_offset = 0;
            }
            slot.recv_buffered -= n;
            state.buffered_total -= n;
            shared.credit_stream(state, self.id, n);
            shared.credit_session(state, n);
            shared.reader_wake.notify_one();
            return Poll::Ready(Ok(()));
        }
        if slot.remote_fin {
            return Poll::Ready(Ok(()));
        }
        if let Some(err) = &slot.reset {
            return Poll::Ready(Err(err.clone().into()));
        }
        if let Some(err) = closed {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                format!("stream {} unfinished: {err}", self.id),
            )));
        }
        slot.read_waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl Drop for StreamReader {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        let state = &mut *state;
        let Some(slot) = state.streams.get_mut(&self.id) else {
            return;
        };
        slot.reader_alive = false;
        slot.recv_chunks.clear();
        slot.recv_offset = 0;
        let dropped = std::mem::take(&mut slot.recv_buffered);
        state.buffered_total -= dropped;
        self.shared.credit_stream(state, self.id, dropped);
        self.shared.credit_session(state, dropped);
        self.shared.reader_wake.notify_one();
        self.shared.maybe_remove(state, self.id);
    }
}

/// The sending half. Dropping it without `shutdown` still sends FIN.
pub struct StreamWriter {
    shared: Arc<Shared>,
    _lifetime: Arc<Lifetime>,
    id: u32,
}

impl StreamWriter {
    pub fn id(&self) -> u32 {
        self.id
    }

    /// Ends the stream both ways with RST_STREAM `status`.
    pub fn reset(&self, status: RstStatus) {
        let mut state = self.shared.lock();
        self.shared.reset_stream(&mut state, self.id, status);
    }

    /// Why writing can't go on, if it can't.
    fn write_error(&self, state: &State) -> Option<io::Error> {
        if let Some(slot) = state.streams.get(&self.id)
            && let Some(err) = &slot.reset
        {
            return Some(err.clone().into());
        }
        if let Some(err) = Shared::connection_error(state) {
            return Some(io::Error::new(io::ErrorKind::BrokenPipe, err));
        }
        None
    }
}

impl AsyncWrite for StreamWriter {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut state = self.shared.lock();
        if let Some(err) = self.write_error(&state) {
            return Poll::Ready(Err(err));
        }
        let limit = self.shared.config.send_buffer;
        let Some(slot) = state.streams.get_mut(&self.id) else {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        };
        if slot.fin_queued || slot.fin_sent {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "write after shutdown",
            )));
        }
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let room = limit.saturating_sub(slot.send_buf.len());
        if room == 0 {
            slot.write_waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let n = room.min(buf.len());
        slot.send_buf.extend_from_slice(&buf[..n]);
        self.shared.queue_output(&mut state, self.id);
        Poll::Ready(Ok(n))
    }

    /// Ready once the connection's writer has taken everything queued.
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut state = self.shared.lock();
        if let Some(err) = self.write_error(&state) {
            return Poll::Ready(Err(err));
        }
        let Some(slot) = state.streams.get_mut(&self.id) else {
            return Poll::Ready(Ok(()));
        };
        if slot.send_buf.is_empty() {
            return Poll::Ready(Ok(()));
        }
        slot.write_waker = Some(cx.waker().clone());
        Poll::Pending
    }

    /// Sends FIN after what is queued; ready once it is handed on.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut state = self.shared.lock();
        let Some(slot) = state.streams.get_mut(&self.id) else {
            return Poll::Ready(Ok(()));
        };
        if slot.fin_sent {
            return Poll::Ready(Ok(()));
        }
        if let Some(err) = self.write_error(&state) {
            return Poll::Ready(Err(err));
        }
        let Some(slot) = state.streams.get_mut(&self.id) else {
            return Poll::Ready(Ok(()));
        };
        slot.fin_queued = true;
        slot.write_waker = Some(cx.waker().clone());
        self.shared.queue_output(&mut state, self.id);
        Poll::Pending
    }
}

impl Drop for StreamWriter {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        let Some(slot) = state.streams.get_mut(&self.id) else {
            return;
        };
        slot.writer_alive = false;
        slot.write_waker = None;
        if !slot.fin_queued && !slot.fin_sent && slot.reset.is_none() {
            slot.fin_queued = true;
            self.shared.queue_output(&mut state, self.id);
        }
        self.shared.maybe_remove(&mut state, self.id);
    }
}
