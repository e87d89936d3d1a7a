//! Starting an exec inside a pod's user namespace (`hostUsers: false`).
//!
//! libcontainer 0.7's tenant builder joins a container's ipc, uts, net, pid,
//! mnt, cgroup and time namespaces, never its user namespace
//! (`tenant_builder.rs` `NAMESPACE_TYPES`): run from the monitor, an exec
//! would be the host's root inside the pod's mounts. So a forked helper
//! joins the pod's user namespace first and runs the tenant builder from
//! there; everything the builder joins after is owned by that namespace,
//! and the helper holds every capability in it. The monitor keeps its own
//! credentials (a user namespace, once joined, cannot be left).
//!
//! The helper is a fork of the single-threaded monitor (setns into a user
//! namespace refuses a threaded caller). It reports the exec'd process's
//! pid, or why it failed, on a pipe and exits; the process, a child of the
//! helper (libcontainer clones it with CLONE_PARENT), is then reparented to
//! the monitor, its subreaper, which reaps it like any exec.
//!
//! What the helper does on the host is as the host's root without
//! capabilities there, which is enough for what the builder touches: its
//! notify socket in the root-owned container dir, the container's cgroup
//! (cgroup.procs of root-owned cgroups; v1 lets euid 0 move any task).
//! The one step that needs CAP_SYS_RESOURCE on the host, an
//! oom_score_adj below the current one, is done before joining.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use nix::errno::Errno;
use nix::sched::{CloneFlags, setns};
use nix::sys::wait::waitpid;
use nix::unistd::{ForkResult, fork, pipe2};

/// Runs `start` (which starts the exec and returns its host pid) in a
/// forked helper that first joined the user namespace at `userns` and set
/// its own oom_score_adj to `oom_score_adj`. Returns the pid, or the
/// message of what failed.
pub(crate) fn start_in_user_namespace(
    userns: &Path,
    oom_score_adj: Option<i32>,
    start: impl FnOnce() -> Result<i32, String>,
) -> Result<i32, String> {
    let ns = File::open(userns).map_err(|e| format!("open user namespace {userns:?}: {e}"))?;
    let (rx, tx) = pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| format!("pipe for the exec helper: {e}"))?;
    // SAFETY: the monitor is single-threaded (crate docs), so the child is a
    // full copy of it and may run ordinary code; it never returns into the
    // monitor (it always ends in _exit).
    match unsafe { fork() } {
        Err(e) => Err(format!("fork the exec helper: {e}")),
        Ok(ForkResult::Child) => {
            drop(rx);
            let report = helper(&ns, oom_score_adj, start);
            let _ = File::from(tx).write_all(report.as_bytes());
            // SAFETY: ends the helper without running the monitor's exit
            // handlers or flushing buffers it shares with the monitor.
            unsafe { libc::_exit(0) }
        }
        Ok(ForkResult::Parent { child }) => {
            drop(tx);
            drop(ns);
            let report = read_report(rx);
            // The helper exits right after writing: reap it here, so the
            // reaper never sees a pid it does not know.
            while let Err(Errno::EINTR) = waitpid(child, None) {}
            parse_report(&report?)
        }
    }
}

/// The helper's work; its result as one line for the pipe.
fn helper(
    ns: &File,
    oom_score_adj: Option<i32>,
    start: impl FnOnce() -> Result<i32, String>,
) -> String {
    if let Some(adj) = oom_score_adj {
        // Lowered while the helper still has the host's CAP_SYS_RESOURCE (the
        // kernel then allows libcontainer's write of the same value after).
        // A failure is left for libcontainer's write to report.
        let _ = std::fs::write("/proc/self/oom_score_adj", adj.to_string());
    }
    if let Err(e) = setns(ns.as_fd(), CloneFlags::CLONE_NEWUSER) {
        return format!("E join the pod's user namespace: {e}");
    }
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(start)) {
        Ok(Ok(pid)) => format!("P{pid}"),
        Ok(Err(why)) => format!("E{why}"),
        Err(_) => "E the exec helper panicked".to_string(),
    }
}

fn read_report(rx: OwnedFd) -> Result<String, String> {
    let mut s = String::new();
    File::from(rx)
        .read_to_string(&mut s)
        .map_err(|e| format!("read the exec helper's report: {e}"))?;
    Ok(s)
}

/// `P<pid>` or `E<why>`; nothing at all means the helper died first.
fn parse_report(report: &str) -> Result<i32, String> {
    if let Some(pid) = report.strip_prefix('P') {
        return pid
            .parse()
            .map_err(|_| format!("exec helper sent a bad pid {pid:?}"));
    }
    if let Some(why) = report.strip_prefix('E') {
        return Err(why.trim_start().to_string());
    }
    Err("the exec helper died before it reported".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_parse() {
        assert_eq!(parse_report("P4242"), Ok(4242));
        assert_eq!(
            parse_report("E join the pod's user namespace: EPERM"),
            Err("join the pod's user namespace: EPERM".to_string())
        );
        assert!(parse_report("Pxyz").unwrap_err().contains("bad pid"));
        assert!(parse_report("").unwrap_err().contains("died"));
    }
}
