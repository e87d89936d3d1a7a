//! Attach: clients receive the running container's stdio (a dup of its
//! terminal's master or stdin pipe, and pipes the monitor feeds with its
//! output as it logs it). The connection stays open for the attach's
//! lifetime: closing it detaches.

use std::os::fd::OwnedFd;

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag, fcntl};

use super::Monitor;
use super::connections::Mode;
use super::dispatch::{Handover, Reply};
use super::error::{Op, OpError};
use super::stdio::handover_pipe;
use berth_monitor_protocol::{Response, Status};

/// One attached client of a container.
pub(crate) struct Attacher {
    /// Its connection.
    pub conn: u64,
    /// Write ends of its stdout and stderr pipes (non-blocking); `None`
    /// once the container's stream ended (or the client closed its end).
    out: [Option<OwnedFd>; 2],
    /// It got the container's stdin (`stdin_once` applies when it ends).
    used_stdin: bool,
    /// Bytes it lost because its pipe was full.
    pub lost: u64,
}

impl Attacher {
    /// Copies a chunk of output stream `idx` to the client, without ever
    /// blocking: what does not fit in its pipe is lost (counted).
    pub fn feed(&mut self, idx: usize, data: &[u8]) {
        let Some(fd) = &self.out[idx] else { return };
        let mut sent = 0;
        while sent < data.len() {
            match nix::unistd::write(fd, &data[sent..]) {
                Ok(n) => sent += n,
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => break,
                // EPIPE (SIGPIPE is handled, see `daemon`): the client
                // closed its end; it gets nothing more.
                Err(_) => {
                    self.out[idx] = None;
                    break;
                }
            }
        }
        self.lost += (data.len() - sent) as u64;
    }

    /// Output stream `idx` ended: the client reads EOF.
    pub fn end(&mut self, idx: usize) {
        self.out[idx] = None;
    }
}

impl Monitor {
    /// Attaches connection `conn` to running container `id`; `want_stdin`:
    /// the client wants to write to its stdin.
    pub(super) fn attach(
        &mut self,
        conn: u64,
        id: &str,
        want_stdin: bool,
    ) -> Result<Reply, OpError> {
        self.reap();
        let c = self.get_mut(id)?;
        if c.status != Status::Running || !c.alive() {
            return Err(Op::Attach.invalid_state(id, format!("it is {:?}, not running", c.status)));
        }
        let failed = |e: std::io::Error| Op::Attach.failed(id, e);
        // The order the protocol gives: master, stdin, stdout, stderr.
        let mut fds = Vec::with_capacity(4);
        let terminal = c.terminal.is_some();
        if let Some(master) = &c.terminal {
            fds.push(master.try_clone().map_err(failed)?);
        }
        let stdin = want_stdin && c.stdin;
        if let (true, Some(w)) = (stdin, &c.stdin_pipe) {
            fds.push(w.try_clone().map_err(failed)?);
        }
        let mut out = [None, None];
        let streams = if terminal { 1 } else { 2 };
        for (idx, slot) in out.iter_mut().enumerate().take(streams) {
            let (r, w) = handover_pipe().map_err(failed)?;
            fcntl(&w, FcntlArg::F_SETFL(OFlag::O_NONBLOCK)).map_err(|e| failed(e.into()))?;
            fds.push(r);
            // A stream that already ended: the client reads EOF at once.
            if c.pipes[idx].is_some() {
                *slot = Some(w);
            }
        }
        c.attachers.push(Attacher {
            conn,
            out,
            used_stdin: stdin,
            lost: 0,
        });
        Ok(Reply::Handover(Handover {
            resp: Response::Attached { terminal, stdin },
            fds,
            mode: Mode::Attached(id.to_string()),
        }))
    }

    /// Connection `conn`, attached to `id`, closed (`used`: the client had
    /// received the attach; otherwise it never used stdin). The container
    /// keeps running; its stdin closes now if it is `stdin_once` and this
    /// attach used it.
    pub(super) fn detach(&mut self, conn: u64, id: &str, used: bool) {
        let Some(c) = self.ctrs.get_mut(id) else {
            return;
        };
        let Some(i) = c.attachers.iter().position(|a| a.conn == conn) else {
            return;
        };
        let a = c.attachers.swap_remove(i);
        if a.lost > 0 {
            eprintln!(
                "berth-monitor {}: attach to {id}: the client lost {} bytes of output (too slow)",
                self.pod_id, a.lost
            );
        }
        if used && a.used_stdin && c.stdin_once {
            c.close_stdin();
        }
    }

    /// Closes the connections of attaches whose container's output ended
    /// (it exited) or that is gone: their pipes were closed first, so the
    /// client read all output before the connection ends.
    pub(super) fn finish_attaches(&mut self) {
        let done: Vec<(u64, String)> = self
            .conns
            .attached()
            .filter(|(_, id)| self.ctrs.get(*id).is_none_or(|c| c.output_ended()))
            .map(|(n, id)| (n, id.to_string()))
            .collect();
        for (n, id) in done {
            drop(self.conns.take(n));
            self.detach(n, &id, false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    fn is_nonblocking(fd: impl AsFd) -> bool {
        fcntl(fd.as_fd(), FcntlArg::F_GETFL)
            .is_ok_and(|f| OFlag::from_bits_truncate(f).contains(OFlag::O_NONBLOCK))
    }

    fn attacher() -> (Attacher, OwnedFd, OwnedFd) {
        let (r0, w0) = handover_pipe().unwrap();
        let (r1, w1) = handover_pipe().unwrap();
        for w in [&w0, &w1] {
            fcntl(w, FcntlArg::F_SETFL(OFlag::O_NONBLOCK)).unwrap();
        }
        let a = Attacher {
            conn: 7,
            out: [Some(w0), Some(w1)],
            used_stdin: false,
            lost: 0,
        };
        (a, r0, r1)
    }

    fn read_all(fd: &OwnedFd) -> Vec<u8> {
        fcntl(fd, FcntlArg::F_SETFL(OFlag::O_NONBLOCK)).unwrap();
        let mut out = Vec::new();
        let mut buf = [0u8; 65536];
        while let Ok(n) = nix::unistd::read(fd, &mut buf) {
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        out
    }

    #[test]
    fn feeds_streams_apart_and_ends_them() {
        let (mut a, r0, r1) = attacher();
        assert!(is_nonblocking(a.out[0].as_ref().unwrap()));
        a.feed(0, b"out");
        a.feed(1, b"err");
        a.end(0);
        a.end(0);
        assert_eq!(read_all(&r0), b"out");
        assert_eq!(read_all(&r1), b"err");
        // Stream 0 is at EOF for the client; feeding it does nothing.
        a.feed(0, b"more");
        assert_eq!(a.lost, 0);
    }

    #[test]
    fn a_slow_client_loses_output_and_never_blocks() {
        let (mut a, r0, _r1) = attacher();
        let cap = fcntl(a.out[0].as_ref().unwrap(), FcntlArg::F_GETPIPE_SZ).unwrap() as usize;
        let chunk = vec![b'x'; 64 << 10];
        let mut fed = 0;
        while fed <= cap {
            a.feed(0, &chunk);
            fed += chunk.len();
        }
        assert!(a.lost > 0);
        assert_eq!(a.lost as usize + read_all(&r0).len(), fed);
    }

    #[test]
    fn a_client_that_closed_its_end_is_dropped() {
        // SIGPIPE is ignored in this test process (Rust's default), as the
        // monitor handles it: the write fails with EPIPE.
        let (mut a, r0, _r1) = attacher();
        drop(r0);
        a.feed(0, b"x");
        assert!(a.out[0].is_none());
        assert!(a.out[1].is_some());
    }
}
