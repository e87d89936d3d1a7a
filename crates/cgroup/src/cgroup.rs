//! One cgroup (a container's `linux.cgroupsPath`, or a pod's cgroup
//! parent): its directory in each hierarchy, and the readings of them.
//!
//! Paths are resolved as libcontainer (libcgroups 0.7) does: each v1
//! controller's mount point joined with the path minus its leading `/`, or
//! the v2 root joined with it.

use std::path::{Component, Path, PathBuf};

use crate::layout::Layout;
use crate::open::OpenCgroup;
use crate::parse;
use crate::stats::{Detail, Sample, read_opt};

/// A cgroup's directories. Building one touches no file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cgroup {
    /// The path below each hierarchy's root (`kubepods/pod1/abc`).
    pub(crate) rel: PathBuf,
    pub(crate) dirs: Dirs,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Dirs {
    /// One directory per v1 hierarchy (v1 and hybrid hosts).
    V1(Vec<ControllerDir>),
    /// The one v2 directory, and the root it lies under.
    V2 { root: PathBuf, dir: PathBuf },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ControllerDir {
    pub dir: PathBuf,
    pub controllers: Vec<String>,
}

impl Cgroup {
    /// The cgroup at `cgroups_path` under `layout`. `None` for a path that
    /// tries to leave the hierarchy (`..`). The slice form
    /// (`kubepods.slice:berth:abc`) is a relative path to libcgroups'
    /// cgroupfs managers, and so it is here.
    pub fn of(layout: &Layout, cgroups_path: &str) -> Option<Cgroup> {
        let rel = Path::new(cgroups_path.trim_start_matches('/'));
        if rel
            .components()
            .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
        {
            return None;
        }
        let dirs = match layout {
            Layout::V2 { root } => Dirs::V2 {
                root: root.clone(),
                dir: root.join(rel),
            },
            _ => Dirs::V1(
                layout
                    .hierarchies()
                    .iter()
                    .map(|h| ControllerDir {
                        dir: h.mount_point.join(rel),
                        controllers: h.controllers.clone(),
                    })
                    .collect(),
            ),
        };
        Some(Cgroup {
            rel: rel.to_path_buf(),
            dirs,
        })
    }

    /// The directory holding `controller`'s files (v2: the one directory).
    pub fn dir(&self, controller: &str) -> Option<&Path> {
        match &self.dirs {
            Dirs::V1(dirs) => dirs
                .iter()
                .find(|d| d.controllers.iter().any(|c| c == controller))
                .map(|d| d.dir.as_path()),
            Dirs::V2 { dir, .. } => Some(dir),
        }
    }

    /// Its directory in every hierarchy.
    pub fn dirs(&self) -> Vec<&Path> {
        match &self.dirs {
            Dirs::V1(dirs) => dirs.iter().map(|d| d.dir.as_path()).collect(),
            Dirs::V2 { dir, .. } => vec![dir],
        }
    }

    /// The controllers stats read on v1, in the order a process is looked
    /// for (the pids hierarchy lists every task).
    pub(crate) const STATS_V1: [&str; 3] = ["pids", "memory", "cpuacct"];

    /// True when the cgroup exists (v1: in a hierarchy that stats read).
    pub fn exists(&self) -> bool {
        match &self.dirs {
            Dirs::V1(_) => Self::STATS_V1
                .iter()
                .filter_map(|c| self.dir(c))
                .any(|d| d.is_dir()),
            Dirs::V2 { dir, .. } => dir.is_dir(),
        }
    }

    /// The directory listing the cgroup's processes (v1: the first of the
    /// hierarchies stats read; the pids one lists every task).
    fn procs_dir(&self) -> Option<&Path> {
        Self::STATS_V1.iter().find_map(|c| self.dir(c))
    }

    /// A process of the cgroup, if any (the first of `cgroup.procs`).
    pub fn first_pid(&self) -> Option<i32> {
        read_opt(&self.procs_dir()?.join("cgroup.procs")).and_then(|t| parse::first_pid(&t))
    }

    /// The cgroup's processes (`cgroup.procs`); `None` when unreadable.
    pub fn procs(&self) -> Option<Vec<i32>> {
        read_opt(&self.procs_dir()?.join("cgroup.procs")).map(|t| parse::pids(&t))
    }

    /// What the CRI stats need: cpu usage, memory, swap, pids, PSI. Missing
    /// files leave their fields `None` (an exited container's cgroup may be
    /// gone).
    pub fn stats(&self) -> Sample {
        self.read(None)
    }

    /// What the metrics need: [`Cgroup::stats`] without the limits (the
    /// metrics take them from the container's record: `memory.limit` and
    /// swap `available` stay `None`), plus the cpu user/system split, the
    /// OOM kill count, CFS throttling, memory detail, `pids.max`, I/O per
    /// device and hugetlb usage, as `detail` asks.
    pub fn metrics_sample(&self, detail: &Detail) -> Sample {
        self.read(Some(detail))
    }

    fn read(&self, detail: Option<&Detail>) -> Sample {
        self.open().read_sample(detail)
    }

    /// The cgroup with its directories open, for readings again and again
    /// (see [`OpenCgroup`]).
    pub fn open(&self) -> OpenCgroup {
        OpenCgroup::new(self)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::layout::tests::{HYBRID, LEGACY, UNIFIED};

    #[test]
    fn hybrid_paths_per_controller() {
        let l = Layout::from_mountinfo(HYBRID).unwrap();
        let c = Cgroup::of(&l, "/kubepods/pod1/abc").unwrap();
        assert_eq!(
            c.dir("cpuacct"),
            Some(Path::new("/sys/fs/cgroup/cpuacct/kubepods/pod1/abc"))
        );
        assert_eq!(
            c.dir("memory"),
            Some(Path::new("/sys/fs/cgroup/memory/kubepods/pod1/abc"))
        );
        assert_eq!(c.dir("hugetlb"), None);
        // Not in the unified tree, nor in named hierarchies.
        assert_eq!(c.dirs().len(), 4);
    }

    #[test]
    fn combined_mount_serves_both_controllers() {
        let l = Layout::from_mountinfo(LEGACY).unwrap();
        let c = Cgroup::of(&l, "berth/c1").unwrap();
        assert_eq!(
            c.dir("cpu"),
            Some(Path::new("/sys/fs/cgroup/cpu,cpuacct/berth/c1"))
        );
        assert_eq!(c.dir("cpu"), c.dir("cpuacct"));
    }

    #[test]
    fn v2_paths_join_under_root() {
        let l = Layout::from_mountinfo(UNIFIED).unwrap();
        let c = Cgroup::of(&l, "/berth/abc").unwrap();
        assert_eq!(c.dirs(), [Path::new("/sys/fs/cgroup/berth/abc")]);
        assert_eq!(c.dir("memory"), Some(Path::new("/sys/fs/cgroup/berth/abc")));
        let slice = Cgroup::of(&l, "kubepods.slice:berth:abc").unwrap();
        assert_eq!(
            slice.dirs(),
            [Path::new("/sys/fs/cgroup/kubepods.slice:berth:abc")]
        );
    }

    #[test]
    fn escaping_paths_are_refused() {
        let l = Layout::from_mountinfo(UNIFIED).unwrap();
        assert!(Cgroup::of(&l, "/kubepods/../../etc").is_none());
        let l = Layout::from_mountinfo(HYBRID).unwrap();
        assert!(Cgroup::of(&l, "../x").is_none());
    }

    /// A fake v1 tree: `<root>/<controller>` hierarchies.
    pub(crate) fn fake_v1(root: &Path, controllers: &[&str]) -> Layout {
        let mi: String = controllers
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let mp = root.join(c);
                std::fs::create_dir_all(&mp).unwrap();
                format!(
                    "{} 1 0:{i} / {} rw - cgroup cgroup rw,{c}\n",
                    30 + i,
                    mp.display()
                )
            })
            .collect();
        Layout::from_mountinfo_under(&mi, root).unwrap()
    }

    #[test]
    fn exists_and_first_pid_on_v1() {
        let d = tempfile::tempdir().unwrap();
        let l = fake_v1(d.path(), &["cpu", "memory", "pids"]);
        let c = Cgroup::of(&l, "/berth/c1").unwrap();
        assert!(!c.exists());
        // A dir only in a hierarchy stats do not read does not count.
        std::fs::create_dir_all(d.path().join("cpu/berth/c1")).unwrap();
        assert!(!c.exists());
        std::fs::create_dir_all(d.path().join("memory/berth/c1")).unwrap();
        assert!(c.exists());
        std::fs::write(d.path().join("memory/berth/c1/cgroup.procs"), "77\n").unwrap();
        assert_eq!(c.first_pid(), None, "the pids hierarchy comes first");
        std::fs::create_dir_all(d.path().join("pids/berth/c1")).unwrap();
        std::fs::write(d.path().join("pids/berth/c1/cgroup.procs"), "42\n43\n").unwrap();
        assert_eq!(c.first_pid(), Some(42));
    }

    #[test]
    fn stats_of_a_fake_v2_cgroup() {
        let d = tempfile::tempdir().unwrap();
        let mi = format!("1 0 0:1 / {} rw - cgroup2 cgroup2 rw\n", d.path().display());
        let l = Layout::from_mountinfo_under(&mi, d.path()).unwrap();
        let c = Cgroup::of(&l, "/pod/c").unwrap();
        assert_eq!(c.stats(), Sample::default());
        let dir = d.path().join("pod/c");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("cpu.stat"), "usage_usec 7\n").unwrap();
        std::fs::write(dir.join("memory.events"), "oom 1\noom_kill 1\n").unwrap();
        assert!(c.exists());
        assert_eq!(c.stats().cpu.unwrap().usage_ns, 7000);
        assert_eq!(
            (
                c.stats().oom_kills,
                c.metrics_sample(&Detail::default()).oom_kills
            ),
            (None, Some(1))
        );
    }
}
