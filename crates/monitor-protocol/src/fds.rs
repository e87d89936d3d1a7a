//! Answers that carry file descriptors (SCM_RIGHTS).
//!
//! [`Response::ExecStarted`](crate::Response::ExecStarted) and
//! [`Response::Attached`](crate::Response::Attached) hand berthd the
//! process's stdio, so bytes flow between berthd and the process without a
//! hop through the monitor's single thread. Such a line is sent with one
//! `sendmsg` holding the whole line and the fds; it is always the first
//! line on its connection after the request, so the client reads it with
//! [`recv_line_with_fds`] before any buffered reader touches the socket.

use std::io;
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};

/// At most this many fds travel with one line (an attach needs 4).
pub const MAX_FDS: usize = 4;

/// The longest line [`recv_line_with_fds`] reads.
const MAX_LINE: usize = 64 << 10;

/// Sends `line` (ending in `\n`) and `fds` in one message. A short send of
/// a line this small on a unix stream socket does not happen in practice;
/// if it does, the rest follows without fds.
pub fn send_line_with_fds(
    sock: BorrowedFd<'_>,
    line: &[u8],
    fds: &[BorrowedFd<'_>],
) -> io::Result<()> {
    let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
    let cmsg = [ControlMessage::ScmRights(&raw)];
    let cmsgs: &[ControlMessage] = if raw.is_empty() { &[] } else { &cmsg };
    let mut sent = loop {
        match sendmsg::<()>(
            sock.as_raw_fd(),
            &[IoSlice::new(line)],
            cmsgs,
            MsgFlags::MSG_NOSIGNAL,
            None,
        ) {
            Err(nix::errno::Errno::EINTR) => continue,
            r => break r.map_err(io::Error::from)?,
        }
    };
    while sent < line.len() {
        match nix::sys::socket::send(sock.as_raw_fd(), &line[sent..], MsgFlags::MSG_NOSIGNAL) {
            Ok(n) => sent += n,
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Reads one line (without its `\n`) and the fds sent with it. Blocks
/// (call it on a blocking thread, or on a socket known to be readable).
/// Reads byte runs until a newline; the fds come with the first run. Fails
/// on EOF before the newline or a line over 64 KiB; fds received on a
/// failure are closed.
pub fn recv_line_with_fds(sock: impl AsFd) -> io::Result<(Vec<u8>, Vec<OwnedFd>)> {
    let mut reader = LineWithFds::default();
    loop {
        if let Some(done) = reader.step(sock.as_fd())? {
            return Ok(done);
        }
    }
}

/// [`recv_line_with_fds`] in steps, for a non-blocking socket: each
/// [`step`](Self::step) reads what is there and keeps what it read, so a
/// caller waits for readiness between steps (an async reader holds no
/// thread while the monitor starts the process).
#[derive(Default)]
pub struct LineWithFds {
    line: Vec<u8>,
    fds: Vec<OwnedFd>,
}

impl LineWithFds {
    /// One read: `Ok(Some)` with the whole line, `Ok(None)` if more is to
    /// come; `WouldBlock` when nothing was there (what was read so far is
    /// kept for the next step).
    pub fn step(&mut self, sock: BorrowedFd<'_>) -> io::Result<Option<(Vec<u8>, Vec<OwnedFd>)>> {
        let mut buf = [0u8; 4096];
        // Peek first so nothing past the newline is consumed: the rest of
        // the connection belongs to whoever reads after us. Without a
        // control buffer: a peek with one installs a copy of every fd
        // passed (which would leak); the read below takes them.
        let n = {
            let mut iov = [IoSliceMut::new(&mut buf)];
            let msg = loop {
                match recvmsg::<()>(sock.as_raw_fd(), &mut iov, None, MsgFlags::MSG_PEEK) {
                    Err(nix::errno::Errno::EINTR) => continue,
                    r => break r.map_err(io::Error::from)?,
                }
            };
            msg.bytes
        };
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "monitor closed the connection",
            ));
        }
        let take = buf[..n]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(n, |i| i + 1);
        let mut iov = [IoSliceMut::new(&mut buf[..take])];
        let mut cmsg_buf = nix::cmsg_space!([RawFd; MAX_FDS]);
        let msg = loop {
            match recvmsg::<()>(
                sock.as_raw_fd(),
                &mut iov,
                Some(&mut cmsg_buf),
                MsgFlags::MSG_CMSG_CLOEXEC,
            ) {
                Err(nix::errno::Errno::EINTR) => continue,
                r => break r.map_err(io::Error::from)?,
            }
        };
        let got = msg.bytes;
        for c in msg.cmsgs().map_err(io::Error::from)? {
            if let ControlMessageOwned::ScmRights(raw) = c {
                // SAFETY: the kernel just installed these fds in this
                // process for us; nothing else owns them.
                self.fds.extend(
                    raw.into_iter()
                        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                );
            }
        }
        if msg.flags.contains(MsgFlags::MSG_CTRUNC) {
            return Err(io::Error::other("monitor sent more fds than expected"));
        }
        self.line.extend_from_slice(&buf[..got]);
        if self.line.last() == Some(&b'\n') {
            self.line.pop();
            return Ok(Some((
                std::mem::take(&mut self.line),
                std::mem::take(&mut self.fds),
            )));
        }
        if self.line.len() > MAX_LINE {
            return Err(io::Error::other("monitor answer too long"));
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;

    #[test]
    fn line_and_fds_arrive_together_and_the_rest_stays() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let (r, w) = nix::unistd::pipe().unwrap();
        send_line_with_fds(a.as_fd(), b"{\"result\":\"ok\"}\n", &[r.as_fd(), w.as_fd()]).unwrap();
        drop(r);
        (&a).write_all(b"next line\n").unwrap();
        let (line, fds) = recv_line_with_fds(&b).unwrap();
        assert_eq!(line, b"{\"result\":\"ok\"}");
        assert_eq!(fds.len(), 2);
        // The passed pipe works: write through the received write end,
        // read through the received read end.
        nix::unistd::write(&fds[1], b"x").unwrap();
        let mut one = [0u8; 1];
        nix::unistd::read(&fds[0], &mut one).unwrap();
        assert_eq!(&one, b"x");
        let mut rest = [0u8; 10];
        b.read_exact(&mut rest).unwrap();
        assert_eq!(&rest, b"next line\n");
    }

    #[test]
    fn eof_before_newline_is_an_error() {
        let (a, b) = UnixStream::pair().unwrap();
        (&a).write_all(b"partial").unwrap();
        drop(a);
        assert!(recv_line_with_fds(&b).is_err());
    }

    /// Exactly the fds sent arrive: none is installed twice (a peek with a
    /// control buffer would install copies nobody closes).
    #[test]
    fn no_extra_fds_are_installed() {
        let (a, b) = UnixStream::pair().unwrap();
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_NONBLOCK).unwrap();
        send_line_with_fds(a.as_fd(), b"{}\n", &[w.as_fd()]).unwrap();
        drop(w);
        let (_, mut fds) = recv_line_with_fds(&b).unwrap();
        assert_eq!(fds.len(), 1);
        // With the received write end closed, no other is left: the reader
        // sees EOF (a leaked copy would leave it waiting: EAGAIN).
        fds.clear();
        let mut one = [0u8; 1];
        assert_eq!(nix::unistd::read(&r, &mut one), Ok(0));
    }
}
