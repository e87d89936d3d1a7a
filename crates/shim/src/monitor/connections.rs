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
    pub mode: Mode,
}

/// What a connection is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Mode {
    /// Request lines, answered in order.
    Requests,
    /// An exec or stop answer is due on this connection: answers stay in
    /// request order, so it is neither polled nor served until then.
    Waiting,
    /// Handed over to the streaming exec of this pid: polled only to see
    /// it close; `ExecExited` is its last line.
    ExecStream(i32),
    /// Handed over to an attach to this container: polled only to see it
    /// close (detach).
    Attached(String),
    /// Subscribed to container events (`events`): polled only to see it
    /// close.
    Subscribed,
}

impl Mode {
    /// The connection belongs to a streaming session, not to requests.
    pub fn is_stream(&self) -> bool {
        matches!(
            self,
            Mode::ExecStream(_) | Mode::Attached(_) | Mode::Subscribed
        )
    }
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
                            mode: Mode::Requests,
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

    /// Connections to poll: for requests, or for the end of a streaming
    /// session (none waits for a deferred answer).
    pub fn polled(&self) -> impl Iterator<Item = (u64, &Conn)> {
        self.open
            .iter()
            .filter(|(_, c)| c.mode != Mode::Waiting)
            .map(|(n, c)| (*n, c))
    }

    /// Attach connections and the container each is attached to.
    pub fn attached(&self) -> impl Iterator<Item = (u64, &str)> {
        self.open.iter().filter_map(|(n, c)| match &c.mode {
            Mode::Attached(id) => Some((*n, id.as_str())),
            _ => None,
        })
    }

    /// Numbers of the connections subscribed to events.
    pub fn subscribed(&self) -> Vec<u64> {
        self.open
            .iter()
            .filter(|(_, c)| c.mode == Mode::Subscribed)
            .map(|(n, _)| *n)
            .collect()
    }

    /// The connection's socket, while it is open.
    pub fn stream(&self, n: u64) -> Option<&UnixStream> {
        self.open.get(&n).map(|c| &c.stream)
    }

    pub fn len(&self) -> usize {
        self.open.len()
    }
}

/// Writes one response line. `MSG_NOSIGNAL`: a client that went away must not
/// raise SIGPIPE (the monitor handles it, see `daemon`, but a stray signal
/// is still a wasted wakeup).
///
/// Serialized straight into a small buffer on the socket: an exec answer
/// (up to 16 MiB of output, twice that as hex) is never built whole in
/// memory beside the output it carries.
pub(super) fn reply(stream: &UnixStream, resp: &Response) -> bool {
    let mut out = io::BufWriter::with_capacity(64 << 10, NoSigPipe(stream));
    serde_json::to_writer(&mut out, resp).is_ok()
        && io::Write::write_all(&mut out, b"\n").is_ok()
        && io::Write::flush(&mut out).is_ok()
}

/// Writes with `send(MSG_NOSIGNAL)`.
struct NoSigPipe<'a>(&'a UnixStream);

impl io::Write for NoSigPipe<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        loop {
            match send(self.0.as_raw_fd(), buf, MsgFlags::MSG_NOSIGNAL) {
                Ok(n) => return Ok(n),
                Err(Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
