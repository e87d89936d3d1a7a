//! What the metrics count over a container's processes, with one pass over
//! /proc per process: open fds and sockets (as cAdvisor, every `fd/*` link,
//! sockets being those to `socket:[...]`), and the soft open-files limit of
//! the first process (cAdvisor's "root process": with a PID namespace of
//! its own, the container's init is the first in `cgroup.procs`).

use std::mem::MaybeUninit;

use super::parse;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProcStats {
    /// Processes (not threads) in the cgroup.
    pub processes: u64,
    pub fds: u64,
    pub sockets: u64,
    /// `RLIMIT_NOFILE` soft limit of the first process.
    pub nofile_soft: Option<u64>,
}

/// Counts over `pids` (a cgroup's `cgroup.procs`). A process that exits
/// meanwhile is skipped.
pub fn scan(pids: &[i32]) -> ProcStats {
    let mut out = ProcStats {
        processes: pids.len() as u64,
        ..Default::default()
    };
    for pid in pids {
        if let Some((fds, sockets)) = fds_of(*pid) {
            out.fds += fds;
            out.sockets += sockets;
        }
    }
    out.nofile_soft = pids.first().and_then(|&pid| nofile_soft(pid));
    out
}

/// Open fds of `pid` and how many are sockets. The `fd` directory is
/// listed into a stack buffer (rustix's `RawDir`: opendir allocated 32 KiB
/// and each name was a `CString`, a third of the scan) and each link is
/// read relative to it, only as far as its `socket:` prefix (a `readlink`
/// of the full /proc path walks it again for every fd, and that walk was a
/// third of a metrics collection).
fn fds_of(pid: i32) -> Option<(u64, u64)> {
    use rustix::fs::{Mode, OFlags, RawDir, openat, readlinkat_raw};
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let dir = openat(
        rustix::fs::CWD,
        format!("/proc/{pid}/fd"),
        flags,
        Mode::empty(),
    )
    .ok()?;
    let mut buf = [MaybeUninit::<u8>::uninit(); 4096];
    let mut entries = RawDir::new(&dir, &mut buf);
    let (mut fds, mut sockets) = (0, 0);
    // An error (the process exited meanwhile) ends the count.
    while let Some(Ok(entry)) = entries.next() {
        let name = entry.file_name();
        if name == c"." || name == c".." {
            continue;
        }
        fds += 1;
        let mut link = [0u8; 16];
        let is_socket = readlinkat_raw(&dir, name, &mut link[..])
            .is_ok_and(|n| link[..n.min(link.len())].starts_with(b"socket:"));
        if is_socket {
            sockets += 1;
        }
    }
    Some((fds, sockets))
}

/// `RLIMIT_NOFILE`'s soft limit of `pid` (None when unlimited or gone).
/// prlimit(2) is one syscall; reading another user's process needs
/// CAP_SYS_RESOURCE, which a node may drop (EPERM), and then
/// `/proc/<pid>/limits` (an open, a formatted read, a parse: ~3x the cost)
/// answers instead.
fn nofile_soft(pid: i32) -> Option<u64> {
    let mut lim = libc::rlimit64 {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: a null new limit only reads; `lim` is a valid out pointer.
    let rc = unsafe { libc::prlimit64(pid, libc::RLIMIT_NOFILE, std::ptr::null(), &mut lim) };
    if rc == 0 {
        return (lim.rlim_cur != libc::RLIM64_INFINITY).then_some(lim.rlim_cur);
    }
    if std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH) {
        return None;
    }
    std::fs::read_to_string(format!("/proc/{pid}/limits"))
        .ok()
        .and_then(|t| parse::nofile_soft(&t))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_own_fds_and_sockets() {
        let me = std::process::id() as i32;
        let _sock = std::os::unix::net::UnixDatagram::unbound().unwrap();
        let _file = std::fs::File::open("/proc/self/status").unwrap();
        let after = scan(&[me]);
        assert_eq!(after.processes, 1);
        // Other tests' threads may open fds meanwhile: at least ours.
        assert!(after.fds >= 2, "{after:?}");
        assert!(after.sockets >= 1, "{after:?}");
        assert!(after.nofile_soft.is_some_and(|n| n > 0), "{after:?}");
    }

    #[test]
    fn nofile_soft_by_syscall_matches_proc_limits() {
        let me = std::process::id() as i32;
        let text = std::fs::read_to_string("/proc/self/limits").unwrap();
        assert_eq!(nofile_soft(me), parse::nofile_soft(&text));
        assert_eq!(nofile_soft(i32::MAX), None);
    }

    #[test]
    fn gone_processes_count_as_processes_only() {
        let s = scan(&[i32::MAX]);
        assert_eq!(
            s,
            ProcStats {
                processes: 1,
                ..Default::default()
            }
        );
        assert_eq!(scan(&[]), ProcStats::default());
    }
}
