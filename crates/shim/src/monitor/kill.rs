//! Kill: a signal to the container's init, or to all its processes.

use std::fs;

use libcontainer::container::ContainerStatus;
use libcontainer::error::LibcontainerError;
use nix::errno::Errno;

use super::Monitor;
use super::error::{Op, OpError};
use super::libcontainer_call::chain;

impl Monitor {
    /// Sends `signal` to the init (`all`: to every process of the
    /// container). Killing an exited container is a success.
    pub(super) fn kill(&mut self, id: &str, signal: i32, all: bool) -> Result<(), OpError> {
        self.reap();
        let c = self.get_mut(id)?;
        if !c.alive() {
            return Ok(());
        }
        // Straight to the init when that is all libcontainer would do (one
        // process), or when it takes every other process along: SIGKILL of
        // the init of the container's own PID namespace kills the namespace.
        // libcontainer's path (freeze the cgroup, list, signal, thaw) parses
        // /proc/self/mountinfo once per controller first. The init is our
        // child and not reaped yet, so its pid cannot have been reused.
        if !all || (signal == libc::SIGKILL && owns_pid_ns(c.pid)) {
            // Raw numbers: nix's Signal has no real-time signals (SIGRTMIN+3
            // is a common stop signal).
            if !(1..=libc::SIGRTMAX()).contains(&signal) {
                return Err(Op::Kill.invalid_argument(id, format!("signal {signal}: out of range")));
            }
            // SAFETY: kill(2) with a pid we own (unreaped child) and a
            // checked signal number; no pointers.
            let r = unsafe { libc::kill(c.pid, signal) };
            return match Errno::result(r) {
                Ok(_) | Err(Errno::ESRCH) => Ok(()),
                Err(e) => Err(Op::Kill.failed(id, e)),
            };
        }
        let sig = libcontainer::signal::Signal::try_from(signal)
            .map_err(|e| Op::Kill.invalid_argument(id, format!("signal {signal}: {e}")))?;
        match c.container.kill(sig, all) {
            Ok(()) => Ok(()),
            // Exited but not reaped yet: the same as exited.
            Err(LibcontainerError::IncorrectStatus(ContainerStatus::Stopped)) => Ok(()),
            Err(e) => Err(Op::Kill.failed(id, chain(&e))),
        }
    }
}

/// Whether `pid` is the init (pid 1) of a PID namespace below ours: its
/// `NSpid` in /proc/PID/status lists more than one pid, the last being 1.
fn owns_pid_ns(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/status")).is_ok_and(|s| status_owns_pid_ns(&s))
}

fn status_owns_pid_ns(status: &str) -> bool {
    status
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))
        .is_some_and(|v| {
            let pids: Vec<&str> = v.split_whitespace().collect();
            pids.len() > 1 && pids.last() == Some(&"1")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pid_namespace_init() {
        assert!(status_owns_pid_ns(
            "Name:\tsh\nNSpid:\t4242\t1\nNSsid:\t1\n"
        ));
        // A process of the host's namespace, or not the init of its own.
        assert!(!status_owns_pid_ns("NSpid:\t4242\n"));
        assert!(!status_owns_pid_ns("NSpid:\t4242\t7\n"));
        assert!(!status_owns_pid_ns("Name:\tsh\n"));
        // Our own process: the test runs in no namespace below the host's,
        // or is not its init.
        assert!(!owns_pid_ns(std::process::id() as i32));
    }
}
