//! The loop: poll everything, reap, read pipes, expire deadlines, accept
//! and serve connections, send deferred answers.

use std::fs;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::Instant;

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::{MsgFlags, recv};

use super::Monitor;
use super::connections::{Conn, MAX_REQUEST, Mode, reply};
use super::dispatch::Reply;
use super::error::OpError;
use super::stdio::{read_exec_pipe, read_pipe};
use berth_monitor_protocol::fds::send_line_with_fds;
use berth_monitor_protocol::{Response, SOCKET_NAME};

/// What a ready descriptor of one poll round is.
#[derive(Clone, Debug)]
enum Token {
    Listener,
    Signal,
    Conn(u64),
    /// stdout (0) or stderr (1) of the container with this id.
    Pipe(String, usize),
    /// stdout (0) or stderr (1) of the exec with this pid.
    ExecPipe(i32, usize),
}

impl Monitor {
    /// Serves until a `Shutdown` request and no container is alive.
    pub fn run(mut self) {
        loop {
            if self.shutdown && !self.ctrs.values().any(|c| c.alive()) {
                break;
            }
            let ready = match self.poll_once() {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("berth-monitor {}: poll: {e}", self.pod_id);
                    continue;
                }
            };
            // Reap first, so that whatever is answered below already sees
            // every exit (and its record is on disk).
            let mut reap = false;
            for (token, flags) in &ready {
                match token {
                    Token::Signal => {
                        while let Ok(Some(_)) = self.sigfd.read_signal() {}
                        reap = true;
                    }
                    Token::Pipe(id, idx) => {
                        if let Some(c) = self.ctrs.get_mut(id) {
                            read_pipe(c, *idx, &mut self.buf, false, *flags);
                        }
                    }
                    Token::ExecPipe(pid, idx) => {
                        if let Some(e) = self.execs.get_mut(*pid) {
                            read_exec_pipe(e, *idx, &mut self.buf, false);
                        }
                    }
                    _ => {}
                }
            }
            if reap {
                self.reap();
            }
            self.expire_execs();
            self.expire_stops();
            for (token, _) in ready {
                match token {
                    Token::Listener => self.conns.accept(&self.listener),
                    Token::Conn(n) => self.serve_conn(n),
                    _ => {}
                }
            }
            self.finish_execs();
            self.finish_stops();
            self.finish_exec_streams();
            self.finish_attaches();
        }
        let _ = fs::remove_file(self.state_dir.join(SOCKET_NAME));
    }

    fn poll_once(&mut self) -> io::Result<Vec<(Token, PollFlags)>> {
        let mut tokens = Vec::with_capacity(2 + self.conns.len() + 2 * self.ctrs.len());
        let mut fds = Vec::with_capacity(tokens.capacity());
        tokens.push(Token::Listener);
        fds.push(PollFd::new(self.listener.as_fd(), PollFlags::POLLIN));
        tokens.push(Token::Signal);
        fds.push(PollFd::new(self.sigfd.as_fd(), PollFlags::POLLIN));
        for (n, c) in self.conns.polled() {
            tokens.push(Token::Conn(n));
            fds.push(PollFd::new(c.stream.as_fd(), PollFlags::POLLIN));
        }
        for (id, c) in &self.ctrs {
            for (i, p) in c.pipes.iter().enumerate() {
                if let Some(p) = p {
                    tokens.push(Token::Pipe(id.clone(), i));
                    fds.push(PollFd::new(p.as_fd(), PollFlags::POLLIN));
                }
            }
        }
        for (pid, i, p) in self.execs.pipes() {
            tokens.push(Token::ExecPipe(pid, i));
            fds.push(PollFd::new(p.as_fd(), PollFlags::POLLIN));
        }
        // Wake up for the nearest exec or stop deadline, or for idle work:
        // empty the trash once nothing happened for a moment.
        let now = Instant::now();
        let wake_at = [
            self.execs.next_deadline(),
            self.stops.next_deadline(),
            self.trash.idle_deadline(now),
        ]
        .into_iter()
        .flatten()
        .min();
        match poll(&mut fds, poll_timeout(wake_at, now)) {
            Ok(0) => {
                self.trash.empty_one();
                return Ok(Vec::new());
            }
            Ok(_) => {}
            Err(Errno::EINTR) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        }
        Ok(tokens
            .into_iter()
            .zip(fds.iter())
            .filter_map(|(t, f)| f.revents().filter(|r| !r.is_empty()).map(|r| (t, r)))
            .collect())
    }

    /// Reads what connection `n` sent and answers every complete request
    /// line, until one is deferred (an exec or stop) or hands the
    /// connection over to a streaming session.
    pub(super) fn serve_conn(&mut self, n: u64) {
        let Some(mut conn) = self.conns.take(n) else {
            return;
        };
        if conn.mode.is_stream() {
            return self.serve_stream_conn(n, conn);
        }
        let mut open = true;
        match recv(
            conn.stream.as_raw_fd(),
            &mut self.buf,
            MsgFlags::MSG_DONTWAIT,
        ) {
            Ok(0) => open = false,
            Ok(k) => conn.buf.extend_from_slice(&self.buf[..k]),
            Err(Errno::EAGAIN | Errno::EINTR) => {}
            Err(_) => open = false,
        }
        while let Some(i) = conn.buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = conn.buf.drain(..=i).collect();
            let resp = match self.dispatch(n, &line[..i]) {
                Reply::Now(resp) => resp,
                // Answered by `finish_execs` / `finish_stops`.
                Reply::Deferred => {
                    conn.mode = Mode::Waiting;
                    break;
                }
                Reply::Handover(h) => {
                    // Nothing more is read as requests on this connection.
                    conn.buf.clear();
                    if send_handover(&conn.stream, &h.resp, &h.fds) {
                        conn.mode = h.mode;
                    } else {
                        open = false;
                        self.stream_closed(n, &h.mode, false);
                    }
                    // `h.fds` close here: the client holds them now.
                    break;
                }
            };
            if !reply(&conn.stream, &resp) {
                open = false;
                break;
            }
        }
        if conn.buf.len() > MAX_REQUEST {
            let _ = reply(
                &conn.stream,
                &Response::from(&OpError::RequestTooLong(MAX_REQUEST)),
            );
            open = false;
        }
        if open {
            self.conns.put(n, conn);
        } else if conn.mode.is_stream() {
            self.stream_closed(n, &conn.mode, true);
        }
    }

    /// A streaming session's connection is readable: it closed (the
    /// session ends), or the client sent bytes nobody reads (dropped).
    fn serve_stream_conn(&mut self, n: u64, conn: Conn) {
        match recv(
            conn.stream.as_raw_fd(),
            &mut self.buf,
            MsgFlags::MSG_DONTWAIT,
        ) {
            Ok(k) if k > 0 => self.conns.put(n, conn),
            Err(Errno::EAGAIN | Errno::EINTR) => self.conns.put(n, conn),
            _ => self.stream_closed(n, &conn.mode, true),
        }
    }

    /// Connection `n` of a streaming session closed (`handed`: after the
    /// client received its fds): an exec still running is killed, an attach
    /// detaches.
    fn stream_closed(&mut self, n: u64, mode: &Mode, handed: bool) {
        match mode {
            Mode::ExecStream(pid) => self.exec_stream_closed(*pid),
            Mode::Attached(id) => self.detach(n, id, handed),
            Mode::Requests | Mode::Waiting | Mode::Subscribed => {}
        }
    }

    /// Sends a deferred answer on connection `n`, then serves what queued
    /// behind it. False: the client went away (dropped silently).
    pub(super) fn answer_deferred(&mut self, n: u64, resp: &Response) -> bool {
        let Some(mut conn) = self.conns.take(n) else {
            return false;
        };
        conn.mode = Mode::Requests;
        if reply(&conn.stream, resp) {
            let pending = conn.buf.contains(&b'\n');
            self.conns.put(n, conn);
            // Requests that queued behind the deferred one.
            if pending {
                self.serve_conn(n);
            }
        }
        true
    }
}

/// Sends an answer line with the fds it hands over. False: the client went
/// away.
fn send_handover(stream: &UnixStream, resp: &Response, fds: &[OwnedFd]) -> bool {
    let Ok(mut line) = serde_json::to_vec(resp) else {
        return false;
    };
    line.push(b'\n');
    let fds: Vec<BorrowedFd<'_>> = fds.iter().map(|f| f.as_fd()).collect();
    send_line_with_fds(stream.as_fd(), &line, &fds).is_ok()
}

/// The poll timeout that wakes the loop at `wake_at` (none: sleep until an
/// event), at least 1 ms so a due deadline does not spin.
fn poll_timeout(wake_at: Option<Instant>, now: Instant) -> PollTimeout {
    wake_at.map_or(PollTimeout::NONE, |d| {
        let ms = d
            .saturating_duration_since(now)
            .as_millis()
            .clamp(1, i32::MAX as u128);
        PollTimeout::try_from(ms as i32).unwrap_or(PollTimeout::MAX)
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn poll_timeout_rounds() {
        let now = Instant::now();
        assert_eq!(poll_timeout(None, now), PollTimeout::NONE);
        // A deadline already past still sleeps 1 ms, not 0 (no busy loop).
        assert_eq!(
            poll_timeout(Some(now - Duration::from_secs(1)), now),
            PollTimeout::from(1u8)
        );
        assert_eq!(
            poll_timeout(Some(now + Duration::from_millis(250)), now),
            PollTimeout::from(250u16)
        );
        // Far away: capped, not wrapped.
        assert_eq!(
            poll_timeout(Some(now + Duration::from_secs(10_000_000)), now),
            PollTimeout::try_from(i32::MAX).unwrap()
        );
    }
}
