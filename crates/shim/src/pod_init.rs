//! PID 1 of a pod whose containers share a PID namespace: `berth-monitor`
//! run as [`ARGV0`] (`berth_monitor_protocol::sealed::POD_INIT_ARGV0`).
//!
//! berthd's pinning helper forks it into the pod's new PID namespace and
//! execs it from berthd's sealed copy of `berth-monitor`
//! (`berth_monitor_protocol::sealed`), never from a file on the host: a
//! container given `CAP_SYS_PTRACE` can open `/proc/1/exe`, and what it
//! reaches there is a copy no one can change (the CVE-2019-5736 class).
//! The copy is the one monitors already run from: no extra memory.

pub use berth_monitor_protocol::sealed::POD_INIT_ARGV0 as ARGV0;

/// Reaps whatever is reparented to it until it is SIGKILLed. Every signal
/// is blocked (SIGKILL can't be), so only the kill at StopPodSandbox ends
/// it; the kernel then kills the whole namespace. Non-dumpable, chrooted
/// into the empty dir it was started in and running as nobody without
/// capabilities, so a container sharing its PID namespace can't reach the
/// host's filesystem through `/proc/1/root` or `/proc/1/cwd`.
pub fn main() -> ! {
    use nix::errno::Errno;
    use nix::sys::signal::{SigSet, Signal};
    use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
    // SAFETY: prctl with constant arguments.
    unsafe {
        libc::prctl(libc::PR_SET_DUMPABLE, 0);
        libc::prctl(libc::PR_SET_NAME, ARGV0.as_ptr());
    }
    let _ = nix::unistd::chroot(".");
    let _ = nix::unistd::chdir("/");
    // Reaping needs no privilege: run as nobody, no groups, no capabilities
    // (a uid change from root clears them), so nothing in the pod can use
    // its init for anything.
    let nobody = nix::unistd::Uid::from_raw(65534);
    let nogroup = nix::unistd::Gid::from_raw(65534);
    let _ = nix::unistd::setgroups(&[]);
    let _ = nix::unistd::setresgid(nogroup, nogroup, nogroup);
    let _ = nix::unistd::setresuid(nobody, nobody, nobody);
    // SAFETY: prctl with constant arguments (a uid change may reset dumpable).
    unsafe {
        libc::prctl(libc::PR_SET_DUMPABLE, 0);
    }
    let _ = SigSet::all().thread_block();
    let mut chld = SigSet::empty();
    chld.add(Signal::SIGCHLD);
    loop {
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => break,
                Ok(_) | Err(Errno::EINTR) => continue,
                Err(_) => break,
            }
        }
        let _ = chld.wait();
    }
}
