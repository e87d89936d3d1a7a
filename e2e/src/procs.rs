//! Processes as /proc shows them: the process table and a process's memory.
//! Used by the benchmark (per-pod processes, their PSS/RSS) and the soak
//! (leftover monitors, berthd's RSS).

use std::path::Path;

/// One live process (or zombie) of the process table.
pub struct Process {
    pub pid: i32,
    pub ppid: i32,
    /// The kernel's short name (`comm`, at most 15 bytes).
    pub comm: String,
    /// The state letter of `stat` (R, S, D, Z, ...).
    pub state: char,
    /// The command line, arguments joined by spaces (empty for zombies and kernel threads).
    pub cmdline: String,
    /// The basename of argv[0].
    pub argv0_name: String,
}

/// Every process whose `stat` could be read (a process may exit while the table is read).
pub fn processes() -> Vec<Process> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if let Some(p) = read_process(pid, &e.path()) {
            out.push(p);
        }
    }
    out
}

/// A daemon's live (not zombie) pod processes.
#[derive(Default)]
pub struct PodProcesses {
    /// `berth-monitor`s whose command line names the state dir: pid, parent, command line.
    pub monitors: Vec<(i32, i32, String)>,
    /// `berth-pod-init`s whose root (the pod's `ns/init-root`) is below it: "pid (root R)".
    pub inits: Vec<String>,
}

/// The live pod processes of the daemon whose state dir is `state`.
pub fn pod_processes(state: &Path) -> PodProcesses {
    let needle = state.to_string_lossy().into_owned();
    let mut found = PodProcesses::default();
    for p in processes() {
        if p.state == 'Z' {
            continue;
        }
        if p.cmdline.contains("berth-monitor") && p.cmdline.contains(&needle) {
            found.monitors.push((p.pid, p.ppid, p.cmdline));
        } else if p.comm == "berth-pod-init" {
            // Its root may read "(deleted)" once the pod dir is gone.
            let root = std::fs::read_link(format!("/proc/{}/root", p.pid)).unwrap_or_default();
            if root.starts_with(&needle) {
                found
                    .inits
                    .push(format!("{} (root {})", p.pid, root.display()));
            }
        }
    }
    found
}

fn read_process(pid: i32, dir: &Path) -> Option<Process> {
    let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
    // comm is parenthesised and may hold spaces and parentheses: split at the last ") ".
    let (comm, rest) = stat.split_once(" (")?.1.rsplit_once(") ")?;
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    let raw = std::fs::read(dir.join("cmdline")).unwrap_or_default();
    let argv0 = raw.split(|&b| b == 0).next().unwrap_or_default();
    let argv0_name =
        String::from_utf8_lossy(argv0.rsplit(|&b| b == b'/').next().unwrap_or(argv0)).into_owned();
    Some(Process {
        pid,
        ppid,
        comm: comm.to_string(),
        state,
        cmdline: String::from_utf8_lossy(&raw).replace('\0', " "),
        argv0_name,
    })
}

/// The host pid of pod `pod`'s monitor: its command line names its state
/// dir, which holds the first 32 hex digits of the pod id.
pub fn monitor_of(pod: &str) -> Option<i32> {
    let key = &pod[..pod.len().min(32)];
    processes()
        .into_iter()
        .find(|p| p.cmdline.contains("berth-monitor") && p.cmdline.contains(key))
        .map(|p| p.pid)
}

/// PSS and RSS (kB) of a process, from /proc/PID/smaps_rollup.
pub fn pss_rss_kb(pid: i32) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|r| r.split_whitespace().next())
            .and_then(|n| n.parse::<u64>().ok())
    };
    Some((field("Pss:")?, field("Rss:")?))
}

/// CPU time (user + system, seconds) a process has used, from /proc/PID/stat.
pub fn cpu_seconds(pid: i32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the `(comm)`, which may hold spaces: state is the first, utime the 12th.
    let mut rest = stat
        .get(stat.rfind(')')? + 1..)?
        .split_whitespace()
        .skip(11);
    let utime: u64 = rest.next()?.parse().ok()?;
    let stime: u64 = rest.next()?.parse().ok()?;
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .filter(|&t| t > 0)
        .unwrap_or(100);
    Some((utime + stime) as f64 / hz as f64)
}

/// VmRSS of a process in kB, from /proc/PID/status (cheaper than smaps_rollup).
pub fn rss_kb(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// kB as "12.3 MiB".
pub fn mib(kb: u64) -> String {
    format!("{:.1} MiB", kb as f64 / 1024.0)
}
