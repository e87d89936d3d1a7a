//! Containers' and execs' stdio: the pipes, and reading the output ones
//! into logs and attached clients.

use std::io;
use std::os::fd::{AsFd, OwnedFd};

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::poll::PollFlags;

use super::container::Ctr;
use super::exec_waiters::Exec;
use super::terminal::readable_now;
use crate::cri_log::Stream;

/// The size asked for pipes handed to berthd (attach output, streaming
/// exec stdio): a burst of output fits while berthd is busy. Best effort:
/// the kernel caps it at /proc/sys/fs/pipe-max-size.
const HANDOVER_PIPE_SIZE: i32 = 1 << 20;

/// A pipe for a container's stdout or stderr: both ends close-on-exec in
/// the monitor (libcontainer dup2s the write end onto 1/2 in the init), the
/// read end non-blocking for the poll loop, the write end blocking as
/// programs expect.
pub(super) fn stdio_pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
    fcntl(&r, FcntlArg::F_SETFL(OFlag::O_NONBLOCK))?;
    Ok((r, w))
}

/// The container's stdin pipe: both ends close-on-exec in the monitor
/// (libcontainer dup2s the read end onto 0 in the init), both blocking as
/// programs (and berthd, which gets dups of the write end) expect.
pub(super) fn stdin_pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(Into::into)
}

/// A pipe one end of which goes to berthd: close-on-exec, blocking (its
/// user decides), as large as allowed.
pub(super) fn handover_pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
    let _ = fcntl(&w, FcntlArg::F_SETPIPE_SZ(HANDOVER_PIPE_SIZE));
    Ok((r, w))
}

/// Reads what pipe `idx` of `c` holds into its log and attached clients;
/// `drain` reads until the pipe is empty (at exit), otherwise one read per
/// wakeup keeps the loop fair. A terminal's master is a blocking fd: it is
/// read only when poll said so, or (draining) checked first.
pub(super) fn read_pipe(c: &mut Ctr, idx: usize, buf: &mut [u8], drain: bool, flags: PollFlags) {
    let stream = if idx == 0 {
        Stream::Stdout
    } else {
        Stream::Stderr
    };
    loop {
        let Some(fd) = &c.pipes[idx] else { return };
        if drain && !readable_now(fd.as_fd()) {
            return;
        }
        match nix::unistd::read(fd, buf) {
            Ok(0) => return end_of_output(c, idx, stream),
            Ok(n) => {
                // Write errors (disk full) are counted by the writer; keep
                // draining so the container never blocks on a full pipe.
                let _ = c.log.write(stream, &buf[..n]);
                for a in &mut c.attachers {
                    a.feed(idx, &buf[..n]);
                }
                if !drain {
                    return;
                }
            }
            Err(Errno::EINTR) => {}
            Err(Errno::EAGAIN) => {
                if flags.contains(PollFlags::POLLHUP) && !flags.contains(PollFlags::POLLIN) {
                    end_of_output(c, idx, stream);
                }
                return;
            }
            // EIO: a terminal whose every slave is closed.
            Err(_) => return end_of_output(c, idx, stream),
        }
    }
}

/// Output stream `idx` of `c` ended: its log line is finished, attached
/// clients see EOF.
fn end_of_output(c: &mut Ctr, idx: usize, stream: Stream) {
    c.pipes[idx] = None;
    let _ = c.log.finish(stream);
    for a in &mut c.attachers {
        a.end(idx);
    }
}

/// Reads what pipe `idx` of an exec holds into its buffers (capped);
/// `drain` reads until the pipe is empty.
pub(super) fn read_exec_pipe(e: &mut Exec, idx: usize, buf: &mut [u8], drain: bool) {
    loop {
        let Some(fd) = &e.pipes[idx] else { return };
        match nix::unistd::read(fd, buf) {
            Ok(0) => {
                e.pipes[idx] = None;
                return;
            }
            Ok(n) => {
                e.push(idx, &buf[..n]);
                if !drain {
                    return;
                }
            }
            Err(Errno::EINTR) => {}
            Err(Errno::EAGAIN) => return,
            Err(_) => {
                e.pipes[idx] = None;
                return;
            }
        }
    }
}
