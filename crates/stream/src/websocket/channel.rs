//! One WebSocket channel as byte halves: a reader over the chunks the
//! socket reader task hands it, a writer that turns each write into one
//! message on the socket writer's queue.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::PollSender;

use super::Framing;

/// The payload of one message we send at most (a larger write is split).
const MAX_OUT_MESSAGE: usize = 64 * 1024;

pub(crate) struct ChannelReader {
    chunks: mpsc::Receiver<Bytes>,
    current: Bytes,
}

impl ChannelReader {
    pub fn new(chunks: mpsc::Receiver<Bytes>) -> Self {
        Self {
            chunks,
            current: Bytes::new(),
        }
    }
}

impl AsyncRead for ChannelReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.current.is_empty() {
            match ready!(self.chunks.poll_recv(cx)) {
                Some(chunk) => self.current = chunk,
                None => return Poll::Ready(Ok(())), // EOF
            }
        }
        let n = self.current.len().min(buf.remaining());
        buf.put_slice(&self.current[..n]);
        self.current.advance(n);
        Poll::Ready(Ok(()))
    }
}

pub(crate) struct ChannelWriter {
    queue: PollSender<Message>,
    framing: Framing,
    channel: u8,
    /// Send v5's `[255, channel]` on shutdown (clients only).
    close_signal: bool,
}

impl ChannelWriter {
    pub fn new(
        queue: mpsc::Sender<Message>,
        framing: Framing,
        channel: u8,
        close_signal: bool,
    ) -> Self {
        Self {
            queue: PollSender::new(queue),
            framing,
            channel,
            close_signal,
        }
    }
}

fn gone() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "websocket connection closed")
}

impl AsyncWrite for ChannelWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if ready!(self.queue.poll_reserve(cx)).is_err() {
            return Poll::Ready(Err(gone()));
        }
        let n = buf.len().min(MAX_OUT_MESSAGE);
        let message = self.framing.encode(self.channel, &buf[..n]);
        match self.queue.send_item(message) {
            Ok(()) => Poll::Ready(Ok(n)),
            Err(_) => Poll::Ready(Err(gone())),
        }
    }

    /// Queued messages go out in order; nothing to wait for here.
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    /// Only v5 has a half-close (the close signal); later writes fail.
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.close_signal && !self.queue.is_closed() {
            if ready!(self.queue.poll_reserve(cx)).is_err() {
                return Poll::Ready(Err(gone()));
            }
            let signal = Message::Binary(vec![super::CLOSE_SIGNAL, self.channel].into());
            if self.queue.send_item(signal).is_err() {
                return Poll::Ready(Err(gone()));
            }
        }
        self.queue.close();
        Poll::Ready(Ok(()))
    }
}

/// A read-write channel (port-forward data) as one byte stream.
pub(crate) struct ChannelDuplex {
    pub reader: ChannelReader,
    pub writer: ChannelWriter,
}

impl AsyncRead for ChannelDuplex {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.reader).poll_read(cx, buf)
    }
}

impl AsyncWrite for ChannelDuplex {
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
