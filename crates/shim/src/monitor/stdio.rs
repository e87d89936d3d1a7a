//! Containers' and execs' stdout/stderr: the pipes and reading them.

use std::io;
use std::os::fd::OwnedFd;

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::poll::PollFlags;

use super::container::Ctr;
use super::exec_waiters::Exec;
use crate::cri_log::Stream;

/// A pipe for a container's stdout or stderr: both ends close-on-exec in
/// the monitor (libcontainer dup2s the write end onto 1/2 in the init), the
/// read end non-blocking for the poll loop, the write end blocking as
/// programs expect.
pub(super) fn stdio_pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
    fcntl(&r, FcntlArg::F_SETFL(OFlag::O_NONBLOCK))?;
    Ok((r, w))
}

/// Reads what pipe `idx` of `c` holds into its log; `drain` reads until the
/// pipe is empty (at exit), otherwise one read per wakeup keeps the loop fair.
pub(super) fn read_pipe(c: &mut Ctr, idx: usize, buf: &mut [u8], drain: bool, flags: PollFlags) {
    let stream = if idx == 0 {
        Stream::Stdout
    } else {
        Stream::Stderr
    };
    loop {
        let Some(fd) = &c.pipes[idx] else { return };
        match nix::unistd::read(fd, buf) {
            Ok(0) => {
                c.pipes[idx] = None;
                let _ = c.log.finish(stream);
                return;
            }
            Ok(n) => {
                // Write errors (disk full) are counted by the writer; keep
                // draining so the container never blocks on a full pipe.
                let _ = c.log.write(stream, &buf[..n]);
                if !drain {
                    return;
                }
            }
            Err(Errno::EINTR) => {}
            Err(Errno::EAGAIN) => {
                if flags.contains(PollFlags::POLLHUP) && !flags.contains(PollFlags::POLLIN) {
                    c.pipes[idx] = None;
                    let _ = c.log.finish(stream);
                }
                return;
            }
            Err(_) => {
                c.pipes[idx] = None;
                let _ = c.log.finish(stream);
                return;
            }
        }
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
