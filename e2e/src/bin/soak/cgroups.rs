//! The cgroup dirs berthd makes, for the leak check.
// cgroup: to move to berth-cgroup

use std::collections::BTreeSet;
use std::path::PathBuf;

/// The mount points of every cgroup hierarchy (v1 controllers and v2), from mountinfo.
fn cgroup_mounts() -> Vec<PathBuf> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter(|l| {
            matches!(
                l.split(" - ").nth(1).and_then(|t| t.split(' ').next()),
                Some("cgroup" | "cgroup2")
            )
        })
        .filter_map(|l| l.split(' ').nth(4))
        .map(PathBuf::from)
        .collect()
}

/// Names of the dirs under `berth/` (the default cgroup parent) of every hierarchy.
pub fn berth_cgroups() -> BTreeSet<(PathBuf, String)> {
    let mut found = BTreeSet::new();
    for m in cgroup_mounts() {
        let dirs = std::fs::read_dir(m.join("berth"))
            .into_iter()
            .flatten()
            .flatten();
        for e in dirs.map(|e| e.path()) {
            if e.is_dir()
                && let Some(n) = e.file_name().and_then(|n| n.to_str())
            {
                found.insert((m.clone(), n.to_string()));
            }
        }
    }
    found
}

/// The dirs under `berth/` that are not in `before` and whose name `ours` claims (other
/// daemons on this host use `berth/` too).
pub fn new_berth_cgroups(
    before: &BTreeSet<(PathBuf, String)>,
    ours: impl Fn(&str) -> bool,
) -> Vec<PathBuf> {
    berth_cgroups()
        .difference(before)
        .filter(|(_, n)| ours(n))
        .map(|(m, n)| m.join("berth").join(n))
        .collect()
}
