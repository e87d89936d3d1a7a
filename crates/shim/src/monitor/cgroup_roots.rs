//! Where libcontainer puts container cgroups on this host.

use std::fs;
use std::path::{Path, PathBuf};

/// The cgroup2 mount on a unified host, else every cgroup v1 hierarchy that
/// has a controller (a hybrid host is driven as v1), from
/// /proc/self/mountinfo.
pub(super) fn cgroup_roots() -> Vec<PathBuf> {
    let base = Path::new("/sys/fs/cgroup");
    if base.join("cgroup.controllers").exists() {
        return vec![base.to_path_buf()];
    }
    // The v1 controllers the kernel has: the first column of /proc/cgroups.
    let cgroups = fs::read_to_string("/proc/cgroups").unwrap_or_default();
    let controllers: Vec<&str> = cgroups
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    berth_mountinfo::read_self()
        .unwrap_or_default()
        .into_iter()
        .filter(|m| {
            m.fstype == "cgroup" && m.super_options.split(',').any(|o| controllers.contains(&o))
        })
        .map(|m| m.mount_point)
        .collect()
}
