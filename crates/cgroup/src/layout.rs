//! The host's cgroup layout, from `/proc/self/mountinfo`.

use std::path::{Path, PathBuf};

use crate::CGROUP_ROOT;

/// The controllers of cgroup v1 (`/proc/cgroups`). A v1 mount's super
/// options name its controllers among other options (`rw`, `name=...`,
/// `favordynmods`, ...); a hierarchy without any (`name=systemd`, berthd's
/// own `name=berth`) holds no container cgroup.
const V1_CONTROLLERS: &[&str] = &[
    "cpuset",
    "cpu",
    "cpuacct",
    "blkio",
    "memory",
    "devices",
    "freezer",
    "net_cls",
    "perf_event",
    "net_prio",
    "hugetlb",
    "pids",
    "rdma",
    "misc",
    "debug",
];

/// One cgroup v1 hierarchy: where it is mounted, which controllers it has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hierarchy {
    pub mount_point: PathBuf,
    /// `["cpu", "cpuacct"]` for a combined mount.
    pub controllers: Vec<String>,
}

/// How the host's cgroups are laid out. libcontainer (libcgroups) drives a
/// hybrid host as v1: its v2 tree has no controllers and holds no container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// Legacy: one hierarchy per controller (or per group of controllers).
    V1 { hierarchies: Vec<Hierarchy> },
    /// v1 hierarchies plus a controller-less cgroup2 mount (`unified`,
    /// usually `/sys/fs/cgroup/unified`).
    Hybrid {
        hierarchies: Vec<Hierarchy>,
        unified: PathBuf,
    },
    /// The unified hierarchy mounted at `root`.
    V2 { root: PathBuf },
}

impl Layout {
    /// This host's layout; `None` when no cgroup filesystem is mounted.
    pub fn detect() -> Option<Layout> {
        match std::fs::read_to_string("/proc/self/mountinfo") {
            Ok(mi) => Layout::from_mountinfo(&mi),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read /proc/self/mountinfo: no cgroup layout");
                None
            }
        }
    }

    /// The layout `mountinfo` (a `/proc/<pid>/mountinfo` text) describes.
    pub fn from_mountinfo(mountinfo: &str) -> Option<Layout> {
        Layout::from_mountinfo_under(mountinfo, Path::new(CGROUP_ROOT))
    }

    /// As [`Layout::from_mountinfo`], with the cgroup root at `root` (tests
    /// build fake trees in temporary directories). As libcgroups decides:
    /// cgroup2 mounted *at* the root is v2; otherwise the v1 hierarchies.
    pub fn from_mountinfo_under(mountinfo: &str, root: &Path) -> Option<Layout> {
        // Only the cgroup lines are parsed: a node's table holds ~7 lines a
        // pod, and each monitor reads it as it starts.
        let cgroup_lines: String = mountinfo
            .lines()
            .filter(|l| l.contains(" - cgroup"))
            .flat_map(|l| [l, "\n"])
            .collect();
        let mounts: Vec<_> = berth_mountinfo::parse(&cgroup_lines)
            .into_iter()
            .filter(|m| m.fstype == "cgroup" || m.fstype == "cgroup2")
            .collect();
        // The last mount on a path is the visible one.
        let root_is_v2 = mounts
            .iter()
            .rev()
            .find(|m| m.mount_point == root)
            .is_some_and(|m| m.fstype == "cgroup2");
        if root_is_v2 {
            return Some(Layout::V2 {
                root: root.to_path_buf(),
            });
        }
        let hierarchies: Vec<Hierarchy> = mounts
            .iter()
            .filter(|m| m.fstype == "cgroup")
            .filter_map(|m| {
                let controllers: Vec<String> = m
                    .super_options
                    .split(',')
                    .filter(|o| V1_CONTROLLERS.contains(o))
                    .map(str::to_string)
                    .collect();
                (!controllers.is_empty()).then(|| Hierarchy {
                    mount_point: m.mount_point.clone(),
                    controllers,
                })
            })
            .collect();
        if hierarchies.is_empty() {
            return None;
        }
        match mounts.iter().find(|m| m.fstype == "cgroup2") {
            Some(u) => Some(Layout::Hybrid {
                hierarchies,
                unified: u.mount_point.clone(),
            }),
            None => Some(Layout::V1 { hierarchies }),
        }
    }

    /// True on a pure cgroup v2 host (not v1, not hybrid).
    pub fn is_v2(&self) -> bool {
        matches!(self, Layout::V2 { .. })
    }

    /// The v1 hierarchies (none on v2).
    pub fn hierarchies(&self) -> &[Hierarchy] {
        match self {
            Layout::V1 { hierarchies } | Layout::Hybrid { hierarchies, .. } => hierarchies,
            Layout::V2 { .. } => &[],
        }
    }

    /// Where the v1 `controller` is mounted (the first hierarchy that has it).
    pub fn mount_of(&self, controller: &str) -> Option<&Path> {
        self.hierarchies()
            .iter()
            .find(|h| h.controllers.iter().any(|c| c == controller))
            .map(|h| h.mount_point.as_path())
    }

    /// Where container cgroups are created: the v2 root, else every v1
    /// hierarchy that has a controller (the monitor's `cgroup_roots`).
    pub fn roots(&self) -> Vec<PathBuf> {
        match self {
            Layout::V2 { root } => vec![root.clone()],
            _ => self
                .hierarchies()
                .iter()
                .map(|h| h.mount_point.clone())
                .collect(),
        }
    }

    /// The host has `controller` (v2: in the root's `cgroup.controllers`;
    /// v1: some hierarchy has it).
    pub fn has_controller(&self, controller: &str) -> bool {
        match self {
            Layout::V2 { root } => std::fs::read_to_string(root.join("cgroup.controllers"))
                .is_ok_and(|c| c.split_whitespace().any(|c| c == controller)),
            _ => self.mount_of(controller).is_some(),
        }
    }

    /// The memory controller accounts swap: `memory.swap.max` in this
    /// process's v2 cgroup (the root has none), `memory.memsw.*` on v1.
    pub fn swap_accounting(&self) -> bool {
        match self {
            Layout::V2 { root } => own_v2_cgroup().is_some_and(|cg| {
                root.join(cg.trim_start_matches('/'))
                    .join("memory.swap.max")
                    .exists()
            }),
            _ => self
                .mount_of("memory")
                .is_some_and(|m| m.join("memory.memsw.limit_in_bytes").exists()),
        }
    }
}

/// The `0::/path` line of /proc/self/cgroup.
fn own_v2_cgroup() -> Option<String> {
    let s = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("0::").map(str::to_string))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub const HYBRID: &str = "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n\
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n\
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct\n\
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n\
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids\n\
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd\n\
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n\
42 23 0:39 / /var/lib/berth/cgroup-favordynmods rw - cgroup berth rw,name=berth,favordynmods\n";

    pub const UNIFIED: &str =
        "25 22 0:23 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n";

    pub const LEGACY: &str = "31 23 0:28 / /sys/fs/cgroup rw - tmpfs tmpfs rw,mode=755\n\
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n\
35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n";

    #[test]
    fn hybrid_is_v1_hierarchies_plus_unified() {
        let l = Layout::from_mountinfo(HYBRID).unwrap();
        let Layout::Hybrid {
            hierarchies,
            unified,
        } = &l
        else {
            panic!("not hybrid: {l:?}")
        };
        assert_eq!(unified, Path::new("/sys/fs/cgroup/unified"));
        // Named hierarchies (systemd's, berthd's favordynmods) hold no container.
        assert_eq!(hierarchies.len(), 4);
        assert_eq!(
            l.mount_of("cpuacct"),
            Some(Path::new("/sys/fs/cgroup/cpuacct"))
        );
        assert!(!l.is_v2());
        assert!(l.has_controller("pids") && !l.has_controller("hugetlb"));
        assert_eq!(
            l.roots(),
            ["cpu", "cpuacct", "memory", "pids"].map(|c| PathBuf::from("/sys/fs/cgroup").join(c))
        );
    }

    #[test]
    fn legacy_with_a_combined_cpu_cpuacct_mount() {
        let l = Layout::from_mountinfo(LEGACY).unwrap();
        assert!(matches!(l, Layout::V1 { .. }));
        assert_eq!(l.mount_of("cpu"), l.mount_of("cpuacct"));
        assert_eq!(
            l.hierarchies()[0].controllers,
            ["cpu".to_string(), "cpuacct".to_string()]
        );
        assert!(l.mount_of("pids").is_none());
    }

    #[test]
    fn unified_at_the_root_is_v2() {
        let l = Layout::from_mountinfo(UNIFIED).unwrap();
        assert_eq!(
            l,
            Layout::V2 {
                root: "/sys/fs/cgroup".into()
            }
        );
        assert!(l.is_v2() && l.hierarchies().is_empty());
        assert_eq!(l.roots(), [PathBuf::from("/sys/fs/cgroup")]);
    }

    #[test]
    fn the_visible_mount_on_the_root_decides() {
        // A tmpfs root over which cgroup2 was mounted later: v2.
        let mi = format!(
            "31 23 0:28 / /sys/fs/cgroup rw - tmpfs tmpfs rw\n{}",
            UNIFIED
        );
        assert!(Layout::from_mountinfo(&mi).unwrap().is_v2());
    }

    #[test]
    fn no_cgroup_mounts_no_layout() {
        assert!(Layout::from_mountinfo("1 0 0:1 / / rw - ext4 /dev/sda rw\n").is_none());
        // Only named hierarchies: nothing holds containers.
        assert!(
            Layout::from_mountinfo(
                "40 31 0:37 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,name=systemd\n"
            )
            .is_none()
        );
    }

    #[test]
    fn v2_controllers_from_the_root() {
        let d = tempfile::tempdir().unwrap();
        let mi = format!(
            "25 22 0:23 / {} rw - cgroup2 cgroup2 rw\n",
            d.path().display()
        );
        let l = Layout::from_mountinfo_under(&mi, d.path()).unwrap();
        assert!(!l.has_controller("hugetlb"));
        std::fs::write(d.path().join("cgroup.controllers"), "cpu memory hugetlb\n").unwrap();
        assert!(l.has_controller("hugetlb"));
        assert!(!l.has_controller("rdma"));
    }

    #[test]
    fn detect_does_not_panic() {
        let _ = Layout::detect();
    }
}
