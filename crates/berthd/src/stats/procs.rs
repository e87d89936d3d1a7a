//! What the metrics count over a container's processes, with one pass over
//! /proc per process: open fds and sockets (as cAdvisor, every `fd/*` link,
//! sockets being those to `socket:[...]`), and the soft open-files limit of
//! the first process (cAdvisor's "root process": with a PID namespace of
//! its own, the container's init is the first in `cgroup.procs`).

use std::os::unix::ffi::OsStrExt;

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
        let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for e in dir.flatten() {
            out.fds += 1;
            if std::fs::read_link(e.path())
                .is_ok_and(|l| l.as_os_str().as_bytes().starts_with(b"socket:"))
            {
                out.sockets += 1;
            }
        }
    }
    out.nofile_soft = pids
        .first()
        .and_then(|pid| std::fs::read_to_string(format!("/proc/{pid}/limits")).ok())
        .and_then(|t| parse::nofile_soft(&t));
    out
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
