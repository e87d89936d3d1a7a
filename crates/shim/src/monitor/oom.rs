//! OOM kills: read from the container's cgroup when its init is reaped.

use std::fs;
use std::path::Path;

/// Whether the kernel OOM-killed a process of the container's cgroup: the
/// `oom_kill` counter of cgroup v1 `memory.oom_control` or v2
/// `memory.events`, read before the cgroup is removed.
pub(super) fn oom_killed(cgroup: &Path) -> bool {
    let rel = cgroup.strip_prefix("/").unwrap_or(cgroup);
    let candidates = [
        Path::new("/sys/fs/cgroup/memory")
            .join(rel)
            .join("memory.oom_control"),
        Path::new("/sys/fs/cgroup").join(rel).join("memory.events"),
    ];
    candidates
        .iter()
        .any(|p| fs::read_to_string(p).is_ok_and(|s| counts_oom_kill(&s)))
}

/// A `memory.events` / `memory.oom_control` text with `oom_kill N`, N > 0.
fn counts_oom_kill(text: &str) -> bool {
    text.lines().any(|l| {
        l.strip_prefix("oom_kill ")
            .and_then(|n| n.trim().parse::<u64>().ok())
            .is_some_and(|n| n > 0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oom_kill_counter() {
        // cgroup v2 memory.events
        assert!(counts_oom_kill("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n"));
        assert!(!counts_oom_kill(
            "low 0\nhigh 0\nmax 3\noom 1\noom_kill 0\n"
        ));
        // cgroup v1 memory.oom_control
        assert!(counts_oom_kill(
            "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n"
        ));
        assert!(!counts_oom_kill("oom_kill_disable 1\nunder_oom 0\n"));
        assert!(!oom_killed(Path::new("/berth-no-such-cgroup")));
    }
}
