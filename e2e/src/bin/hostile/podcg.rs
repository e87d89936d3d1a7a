//! The fork bomb's pod cgroup: a cgroup parent with `pids.max`, as the kubelet's
//! podPidsLimit makes one. Only the pids controller's dir is made here (and the
//! limit written); libcontainer makes the rest of the path in the other
//! hierarchies when it creates the container's cgroup under it.

use std::path::PathBuf;

use berth_cgroup::{Cgroup, Layout};

pub struct PodCgroup {
    /// `berth-hostile-<pid>`: the run's own top dir in every hierarchy.
    top: String,
    /// `/berth-hostile-<pid>/bomb`: the pod's CRI `cgroup_parent`.
    pub parent: String,
    /// The pod cgroup's dir in the pids controller's hierarchy (or the v2 dir).
    pub pids_dir: Option<PathBuf>,
    /// The limit could be written.
    pub limited: bool,
    roots: Vec<PathBuf>,
}

impl PodCgroup {
    pub fn create(limit: u64) -> PodCgroup {
        let top = format!("berth-hostile-{}", std::process::id());
        let parent = format!("/{top}/bomb");
        let layout = Layout::detect();
        let roots = layout.as_ref().map(|l| l.roots()).unwrap_or_default();
        let mut cg = PodCgroup {
            top,
            parent,
            pids_dir: None,
            limited: false,
            roots,
        };
        let Some(layout) = layout else {
            return cg;
        };
        if layout.is_v2() {
            // The controllers reach the pod cgroup through the top dir's subtree_control.
            let root = &cg.roots[0];
            let _ = std::fs::create_dir_all(root.join(&cg.top));
            let _ = std::fs::write(
                root.join(&cg.top).join("cgroup.subtree_control"),
                "+pids +memory +cpu",
            );
        }
        let dir = Cgroup::of(&layout, &cg.parent).and_then(|c| c.dir("pids").map(PathBuf::from));
        if let Some(d) = dir
            && std::fs::create_dir_all(&d).is_ok()
        {
            cg.limited = std::fs::write(d.join("pids.max"), limit.to_string()).is_ok();
            cg.pids_dir = Some(d);
        }
        cg
    }

    /// A file of the pids dir, as a number (`pids.current`, `pids.peak`).
    pub fn read(&self, file: &str) -> Option<u64> {
        let text = std::fs::read_to_string(self.pids_dir.as_ref()?.join(file)).ok()?;
        text.trim().parse().ok()
    }

    /// How often a fork failed at the limit: `pids.events`' `max` of the pod cgroup and
    /// the cgroups below it (the kernel counts a refused fork in the forking task's
    /// cgroup, the container's, not in the one whose limit it hit).
    pub fn fork_failures(&self) -> Option<u64> {
        let dir = self.pids_dir.as_ref()?;
        let events = |d: &std::path::Path| -> Option<u64> {
            std::fs::read_to_string(d.join("pids.events"))
                .ok()?
                .lines()
                .find_map(|l| l.strip_prefix("max "))
                .and_then(|n| n.trim().parse().ok())
        };
        let below = std::fs::read_dir(dir).into_iter().flatten().flatten();
        let children = below.map(|e| e.path()).filter(|p| p.is_dir());
        Some(events(dir)? + children.filter_map(|p| events(&p)).sum::<u64>())
    }

    /// The limit as the pids dir has it.
    pub fn max(&self) -> String {
        std::fs::read_to_string(
            self.pids_dir
                .as_ref()
                .map_or("".into(), |d| d.join("pids.max")),
        )
        .map_or("n/a".into(), |s| s.trim().to_string())
    }

    /// Every dir of the run's cgroup in every hierarchy: the pod's first.
    fn dirs(&self) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = self
            .roots
            .iter()
            .map(|r| r.join(&self.parent[1..]))
            .collect();
        dirs.extend(self.roots.iter().map(|r| r.join(&self.top)));
        dirs
    }

    /// Removes the dirs (empty once berth removed the container cgroups under
    /// them); the ones still there.
    pub fn remove(&self) -> Vec<PathBuf> {
        let mut left = vec![];
        for d in self.dirs() {
            if d.exists() && std::fs::remove_dir(&d).is_err() && d.exists() {
                left.push(d);
            }
        }
        left
    }
}

impl Drop for PodCgroup {
    fn drop(&mut self) {
        let _ = self.remove();
    }
}
