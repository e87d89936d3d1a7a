//! The cgroup dirs berthd makes, for the leak check.

use std::collections::BTreeSet;
use std::path::PathBuf;

use berth_cgroup::{Cgroup, Layout};

/// The dirs of `berth/` (the default cgroup parent) in every hierarchy where
/// containers get cgroups (berth-cgroup's layout of this host), plus a
/// hybrid host's controller-less cgroup2 mount, which must hold none either.
fn berth_parents() -> Vec<PathBuf> {
    let Some(layout) = Layout::detect() else {
        return vec![];
    };
    let mut dirs: Vec<PathBuf> = Cgroup::of(&layout, "berth")
        .map(|c| c.dirs().into_iter().map(PathBuf::from).collect())
        .unwrap_or_default();
    if let Layout::Hybrid { unified, .. } = &layout {
        dirs.push(unified.join("berth"));
    }
    dirs
}

/// The dirs under `berth/` of every hierarchy, as (parent dir, name).
pub fn berth_cgroups() -> BTreeSet<(PathBuf, String)> {
    let mut found = BTreeSet::new();
    for parent in berth_parents() {
        let dirs = std::fs::read_dir(&parent).into_iter().flatten().flatten();
        for e in dirs.map(|e| e.path()) {
            if e.is_dir()
                && let Some(n) = e.file_name().and_then(|n| n.to_str())
            {
                found.insert((parent.clone(), n.to_string()));
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
        .map(|(parent, n)| parent.join(n))
        .collect()
}
