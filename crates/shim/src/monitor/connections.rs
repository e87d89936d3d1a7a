//! Client connections: their read buffers, and writing answers.

use std::collections::HashMap;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::socket::{MsgFlags, send};

use berth_monitor_protocol::Response;

/// Longest request line accepted; a client sending more is cut off so it
/// cannot grow the monitor's memory.
pub(super) const MAX_REQUEST: usize = 64 * 1024;

pub(super) struct Conn {
    pub stream: UnixStream,
    /// Bytes received and not yet served (a partial line, or lines queued
    /// behind a deferred answer).
    pub buf: Vec<u8>,
    /// An exec or stop answer is due on this connection: answers stay in
    /// request order, so it is neither polled nor served until then.
    pub waiting: bool,
}

/// Open connections by number. A connection being served is taken out and
/// put back, so serving it can borrow the rest of the monitor.
#[derive(Default)]
pub(super) struct Connections {
    open: HashMap<u64, Conn>,
    next: u64,
}

impl Connections {
    /// Accepts every pending connection.
    pub fn accept(&mut self, listener: &UnixListener) {
        loop {
            match listener.accept() {
                Ok((stream, _)) => {
                    // Reads use MSG_DONTWAIT; writes block (bounded by the
                    // timeout) so a response is never half sent.
                    let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
                    let n = self.next;
                    self.next += 1;
                    self.open.insert(
                        n,
                        Conn {
                            stream,
                            buf: Vec::new(),
                            waiting: false,
                        },
                    );
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    }

    pub fn take(&mut self, n: u64) -> Option<Conn> {
        self.open.remove(&n)
    }

    pub fn put(&mut self, n: u64, conn: Conn) {
        self.open.insert(n, conn);
    }

    /// Connections to poll for requests (none waits for a deferred answer).
    pub fn polled(&self) -> impl Iterator<Item = (u64, &Conn)> {
        self.open
            .iter()
            .filter(|(_, c)| !c.waiting)
            .map(|(n, c)| (*n, c))
    }

    pub fn len(&self) -> usize {
        self.open.len()
    }
}

/// Writes one response line. `MSG_NOSIGNAL`: a client that went away must not
/// kill the monitor with SIGPIPE (which stays at its default, see `daemon`).
pub(super) fn reply(stream: &UnixStream, resp: &Response) -> bool {
    let mut out = match serde_json::to_vec(resp) {
        Ok(v) => v,
        Err(_) => return false,
    };
    out.push(b'\n');
    let mut sent = 0;
    while sent < out.len() {
        match send(stream.as_raw_fd(), &out[sent..], MsgFlags::MSG_NOSIGNAL) {
            Ok(n) => sent += n,
            Err(Errno::EINTR) => {}
            Err(_) => return false,
        }
    }
    true
}
