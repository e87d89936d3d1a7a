//! The fds a monitor hands over, as tokio I/O: pipes (tokio's own pipe
//! types), a terminal's master ([`PtyMaster`]), and the copy loops between
//! them and the client's halves.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use berth_stream::{CopyError, OutputWriter, StdinReader, TerminalSize};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::unix::pipe;

/// A pipe's read end from the monitor (made non-blocking: berthd owns it).
pub fn pipe_reader(fd: OwnedFd) -> io::Result<pipe::Receiver> {
    pipe::Receiver::from_owned_fd(fd)
}

/// A pipe's write end from the monitor (made non-blocking).
pub fn pipe_writer(fd: OwnedFd) -> io::Result<pipe::Sender> {
    pipe::Sender::from_owned_fd(fd)
}

/// A pseudo-terminal's master, non-blocking, for an exec's terminal
/// (berthd holds the only master fd of it). Reading past the process's
/// exit reads as EOF (Linux answers EIO once the slave side is closed).
/// Clones share the fd: one reads, one writes, one resizes.
#[derive(Clone)]
pub struct PtyMaster(Arc<AsyncFd<OwnedFd>>);

impl PtyMaster {
    pub fn new(fd: OwnedFd) -> io::Result<Self> {
        set_nonblocking(&fd)?;
        // SAFETY: an OwnedFd is a valid open fd that keeps referring to the
        // same file until it is dropped with the AsyncFd.
        let fd = unsafe { AsyncFd::register(fd) }.map_err(io::Error::from)?;
        Ok(Self(Arc::new(fd)))
    }

    pub fn resize(&self, size: TerminalSize) -> io::Result<()> {
        resize(self.0.get_ref(), size)
    }

    /// The terminal's end-of-file character (VEOF, normally ^D): how a
    /// client's stdin EOF reaches a process reading its terminal (the
    /// master cannot be closed: the output still comes through it).
    pub fn eof_char(&self) -> u8 {
        eof_char(self.0.get_ref())
    }
}

impl AsyncRead for PtyMaster {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            let mut guard = ready!(self.0.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            match guard
                .try_io(|fd| nix::unistd::read(fd.get_ref(), unfilled).map_err(io::Error::from))
            {
                Ok(Ok(n)) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                // The slave side is closed: the process (and whatever
                // shared its terminal) is gone.
                Ok(Err(e)) if e.raw_os_error() == Some(libc::EIO) => return Poll::Ready(Ok(())),
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }
}

impl AsyncWrite for PtyMaster {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            let mut guard = ready!(self.0.poll_write_ready(cx))?;
            match guard.try_io(|fd| nix::unistd::write(fd.get_ref(), data).map_err(io::Error::from))
            {
                Ok(result) => return Poll::Ready(result),
                Err(_would_block) => continue,
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

fn set_nonblocking(fd: &OwnedFd) -> io::Result<()> {
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    let flags = OFlag::from_bits_retain(fcntl(fd, FcntlArg::F_GETFL)?);
    fcntl(fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    Ok(())
}

/// TIOCSWINSZ on a terminal's master: the process gets SIGWINCH.
pub fn resize(fd: &impl AsFd, size: TerminalSize) -> io::Result<()> {
    let ws = libc::winsize {
        ws_row: size.height,
        ws_col: size.width,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one `winsize` from the pointer, which lives
    // across the call; the fd is open (borrowed).
    let rc = unsafe { libc::ioctl(fd.as_fd().as_raw_fd(), libc::TIOCSWINSZ, &ws) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The terminal's VEOF character (master and slave share one termios).
pub fn eof_char(fd: &impl AsFd) -> u8 {
    nix::sys::termios::tcgetattr(fd)
        .map(|t| t.control_chars[nix::sys::termios::SpecialCharacterIndices::VEOF as usize])
        .unwrap_or(4)
}

/// Copies the process's output to the client's stream until EOF, then
/// ends that stream. With no client stream (or once it broke) the output
/// is still read and dropped, so the process never blocks on a full pipe.
pub async fn copy_output(mut from: impl AsyncRead + Unpin, to: Option<OutputWriter>) {
    let mut sink = tokio::io::sink();
    let read_failed = match to {
        Some(mut w) => match berth_stream::copy(&mut from, &mut w).await {
            Ok(_) => {
                let _ = w.shutdown().await;
                None
            }
            Err(CopyError::Read(e)) => {
                let _ = w.shutdown().await;
                Some(e)
            }
            // The client's stream broke: drain the rest.
            Err(CopyError::Write(_)) => berth_stream::copy(&mut from, &mut sink)
                .await
                .err()
                .map(io::Error::from),
        },
        None => berth_stream::copy(&mut from, &mut sink)
            .await
            .err()
            .map(io::Error::from),
    };
    if let Some(e) = read_failed {
        tracing::debug!(error = %e, "reading process output");
    }
}

/// Copies the client's stdin to the process until the client's EOF (or a
/// write fails: the process closed its stdin). Returns what ended it.
pub async fn copy_stdin(
    mut from: StdinReader,
    to: &mut (impl AsyncWrite + Unpin),
) -> io::Result<u64> {
    Ok(berth_stream::copy(&mut from, to).await?)
}
