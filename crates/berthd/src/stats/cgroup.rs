//! Where a cgroup's files are, on cgroup v1 (and the v1/v2 hybrid, which
//! libcontainer drives as v1) and on cgroup v2, and what one reading of a
//! cgroup holds.
//!
//! Paths are resolved exactly as libcontainer (libcgroups 0.7) does: the
//! controller's mount point joined with `linux.cgroupsPath` minus its
//! leading `/` (v1, one mount per controller), or `/sys/fs/cgroup` joined
//! with it (v2).

use std::path::{Component, Path, PathBuf};

use super::parse::{self, Psi};
use super::{v1, v2};

const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// The host's cgroup layout, detected once from `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// One hierarchy per controller (legacy, or hybrid with an unused v2 tree).
    V1 {
        cpuacct: Option<PathBuf>,
        memory: Option<PathBuf>,
        pids: Option<PathBuf>,
    },
    /// The unified hierarchy at `root`.
    V2 { root: PathBuf },
}

impl Layout {
    /// The layout of this host; `None` when no cgroup filesystem is mounted.
    pub fn detect() -> Option<Layout> {
        match std::fs::read_to_string("/proc/self/mountinfo") {
            Ok(mi) => Layout::from_mountinfo(&mi),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read /proc/self/mountinfo: no cgroup stats");
                None
            }
        }
    }

    /// As libcgroups decides: cgroup2 mounted *at* `/sys/fs/cgroup` is v2;
    /// otherwise the v1 controller mounts are used (a hybrid host's
    /// `/sys/fs/cgroup/unified` carries no controllers).
    pub fn from_mountinfo(mountinfo: &str) -> Option<Layout> {
        let mounts = parse::cgroup_mounts(mountinfo);
        // The last mount on a path is the visible one.
        let root_is_v2 = mounts
            .iter()
            .rev()
            .find(|(mp, _, _)| mp == CGROUP_ROOT)
            .is_some_and(|(_, fstype, _)| fstype == "cgroup2");
        if root_is_v2 {
            return Some(Layout::V2 {
                root: PathBuf::from(CGROUP_ROOT),
            });
        }
        let find = |ctrl: &str| {
            mounts
                .iter()
                .filter(|(_, fstype, _)| fstype == "cgroup")
                .find(|(_, _, opts)| opts.split(',').any(|o| o == ctrl))
                .map(|(mp, _, _)| PathBuf::from(mp))
        };
        let layout = Layout::V1 {
            cpuacct: find("cpuacct"),
            memory: find("memory"),
            pids: find("pids"),
        };
        match &layout {
            Layout::V1 {
                cpuacct: None,
                memory: None,
                pids: None,
            } => None,
            _ => Some(layout),
        }
    }

    /// The directories of the cgroup at `cgroups_path` (a container's
    /// `linux.cgroupsPath`, or a pod's cgroup parent). `None` for a path
    /// that tries to leave the hierarchy.
    pub fn dirs(&self, cgroups_path: &str) -> Option<CgroupDirs> {
        let rel = Path::new(cgroups_path.trim_start_matches('/'));
        if rel
            .components()
            .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
        {
            return None;
        }
        Some(match self {
            Layout::V1 {
                cpuacct,
                memory,
                pids,
            } => CgroupDirs::V1 {
                cpuacct: cpuacct.as_ref().map(|m| m.join(rel)),
                memory: memory.as_ref().map(|m| m.join(rel)),
                pids: pids.as_ref().map(|m| m.join(rel)),
            },
            Layout::V2 { root } => CgroupDirs::V2(root.join(rel)),
        })
    }
}

/// One cgroup's directories.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CgroupDirs {
    V1 {
        cpuacct: Option<PathBuf>,
        memory: Option<PathBuf>,
        pids: Option<PathBuf>,
    },
    V2(PathBuf),
}

impl CgroupDirs {
    /// True when the cgroup exists (its cpu accounting dir, or any dir).
    pub fn exists(&self) -> bool {
        match self {
            CgroupDirs::V1 {
                cpuacct,
                memory,
                pids,
            } => [cpuacct, memory, pids]
                .into_iter()
                .flatten()
                .any(|d| d.is_dir()),
            CgroupDirs::V2(d) => d.is_dir(),
        }
    }

    /// Reads the cgroup's counters. Missing files leave their fields
    /// `None` (an exited container's cgroup may be gone); `extra` adds what
    /// only the metrics need (cpu user/system, oom kills).
    pub fn read(&self, extra: bool) -> CgroupSample {
        match self {
            CgroupDirs::V1 {
                cpuacct,
                memory,
                pids,
            } => v1::read(
                cpuacct.as_deref(),
                memory.as_deref(),
                pids.as_deref(),
                extra,
            ),
            CgroupDirs::V2(d) => v2::read(d, extra),
        }
    }

    /// A process of the cgroup, if any (the first of `cgroup.procs`).
    pub fn first_pid(&self) -> Option<i32> {
        let dir = match self {
            CgroupDirs::V1 {
                cpuacct,
                memory,
                pids,
            } => [pids, memory, cpuacct].into_iter().flatten().next()?,
            CgroupDirs::V2(d) => d,
        };
        read_opt(&dir.join("cgroup.procs")).and_then(|t| parse::first_pid(&t))
    }
}

/// One reading of a cgroup.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CgroupSample {
    pub cpu: Option<CpuSample>,
    pub memory: Option<MemorySample>,
    pub swap: Option<SwapSample>,
    /// Tasks in the cgroup (`pids.current`).
    pub pids: Option<u64>,
    /// OOM kills in the cgroup (only read with `extra`).
    pub oom_kills: Option<u64>,
    /// Pressure stall information (cgroup v2 only).
    pub cpu_psi: Option<Psi>,
    pub memory_psi: Option<Psi>,
    pub io_psi: Option<Psi>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuSample {
    /// Cumulative CPU time, all cores, in nanoseconds.
    pub usage_ns: u64,
    /// User and system shares (only read with `extra`).
    pub user_ns: Option<u64>,
    pub system_ns: Option<u64>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemorySample {
    pub usage: u64,
    /// `None`: unlimited.
    pub limit: Option<u64>,
    pub inactive_file: u64,
    /// Anonymous and swap cache memory (v1 `total_rss`, v2 `anon`).
    pub rss: u64,
    /// Page cache (v1 `total_cache`, v2 `file`).
    pub cache: u64,
    pub page_faults: Option<u64>,
    pub major_page_faults: Option<u64>,
}

impl MemorySample {
    /// usage - inactive file pages, as the kubelet and cAdvisor define it.
    pub fn working_set(&self) -> u64 {
        self.usage.saturating_sub(self.inactive_file)
    }

    /// limit - working set, when limited.
    pub fn available(&self) -> Option<u64> {
        self.limit.map(|l| l.saturating_sub(self.working_set()))
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SwapSample {
    pub usage: u64,
    /// swap limit - usage, when limited.
    pub available: Option<u64>,
}

impl CgroupSample {
    /// The pod's figures when it has no cgroup of its own: the sum of its
    /// containers'. Limits do not add up, so none is reported.
    pub fn sum<'a>(samples: impl IntoIterator<Item = &'a CgroupSample>) -> CgroupSample {
        let mut out = CgroupSample::default();
        for s in samples {
            if let Some(c) = &s.cpu {
                let o = out.cpu.get_or_insert_with(CpuSample::default);
                o.usage_ns += c.usage_ns;
                o.user_ns = add_opt(o.user_ns, c.user_ns);
                o.system_ns = add_opt(o.system_ns, c.system_ns);
            }
            if let Some(m) = &s.memory {
                let o = out.memory.get_or_insert_with(MemorySample::default);
                o.usage += m.usage;
                o.inactive_file += m.inactive_file;
                o.rss += m.rss;
                o.cache += m.cache;
                o.page_faults = add_opt(o.page_faults, m.page_faults);
                o.major_page_faults = add_opt(o.major_page_faults, m.major_page_faults);
            }
            if let Some(w) = &s.swap {
                out.swap.get_or_insert_with(SwapSample::default).usage += w.usage;
            }
            out.pids = add_opt(out.pids, s.pids);
            out.oom_kills = add_opt(out.oom_kills, s.oom_kills);
        }
        out
    }
}

fn add_opt(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (None, None) => None,
        (a, b) => Some(a.unwrap_or(0) + b.unwrap_or(0)),
    }
}

/// A cgroup file's content; `None` when missing or unreadable (an exited
/// container's cgroup is removed with it: not an error worth more than debug).
pub fn read_opt(path: &Path) -> Option<String> {
    match std::fs::read_to_string(path) {
        Ok(t) => Some(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            tracing::debug!(path = %path.display(), error = %e, "cannot read cgroup file");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n\
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n\
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct\n\
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n\
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids\n\
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd\n\
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";

    const UNIFIED: &str = "25 22 0:23 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n";

    const COMBINED: &str = "32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n\
35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n";

    #[test]
    fn hybrid_is_v1_with_separate_cpuacct() {
        let l = Layout::from_mountinfo(HYBRID).unwrap();
        assert_eq!(
            l,
            Layout::V1 {
                cpuacct: Some("/sys/fs/cgroup/cpuacct".into()),
                memory: Some("/sys/fs/cgroup/memory".into()),
                pids: Some("/sys/fs/cgroup/pids".into()),
            }
        );
        let d = l.dirs("/kubepods/pod1/abc").unwrap();
        assert_eq!(
            d,
            CgroupDirs::V1 {
                cpuacct: Some("/sys/fs/cgroup/cpuacct/kubepods/pod1/abc".into()),
                memory: Some("/sys/fs/cgroup/memory/kubepods/pod1/abc".into()),
                pids: Some("/sys/fs/cgroup/pids/kubepods/pod1/abc".into()),
            }
        );
    }

    #[test]
    fn combined_cpu_cpuacct_mount() {
        let l = Layout::from_mountinfo(COMBINED).unwrap();
        let Layout::V1 { cpuacct, pids, .. } = l else {
            panic!("not v1")
        };
        assert_eq!(
            cpuacct.unwrap(),
            PathBuf::from("/sys/fs/cgroup/cpu,cpuacct")
        );
        assert!(pids.is_none());
    }

    #[test]
    fn unified_is_v2_and_paths_join_under_root() {
        let l = Layout::from_mountinfo(UNIFIED).unwrap();
        assert_eq!(
            l.dirs("/berth/abc").unwrap(),
            CgroupDirs::V2("/sys/fs/cgroup/berth/abc".into())
        );
        // The slice form is a relative path to libcgroups' cgroupfs managers.
        assert_eq!(
            l.dirs("kubepods.slice:berth:abc").unwrap(),
            CgroupDirs::V2("/sys/fs/cgroup/kubepods.slice:berth:abc".into())
        );
    }

    #[test]
    fn escaping_paths_are_refused() {
        let l = Layout::from_mountinfo(UNIFIED).unwrap();
        assert!(l.dirs("/kubepods/../../etc").is_none());
    }

    #[test]
    fn no_cgroup_mounts_no_layout() {
        assert!(Layout::from_mountinfo("1 0 0:1 / / rw - ext4 /dev/sda rw\n").is_none());
    }

    #[test]
    fn sums_add_what_is_there() {
        let a = CgroupSample {
            cpu: Some(CpuSample {
                usage_ns: 10,
                ..Default::default()
            }),
            memory: Some(MemorySample {
                usage: 100,
                limit: Some(1000),
                inactive_file: 10,
                rss: 50,
                cache: 40,
                page_faults: Some(3),
                major_page_faults: None,
            }),
            pids: Some(2),
            ..Default::default()
        };
        let b = CgroupSample {
            cpu: Some(CpuSample {
                usage_ns: 5,
                ..Default::default()
            }),
            memory: Some(MemorySample {
                usage: 200,
                inactive_file: 20,
                rss: 100,
                page_faults: Some(4),
                ..Default::default()
            }),
            pids: None,
            ..Default::default()
        };
        let s = CgroupSample::sum([&a, &b, &CgroupSample::default()]);
        assert_eq!(s.cpu.unwrap().usage_ns, 15);
        let m = s.memory.unwrap();
        assert_eq!((m.usage, m.working_set(), m.rss), (300, 270, 150));
        assert_eq!(m.limit, None);
        assert_eq!(m.available(), None);
        assert_eq!(m.page_faults, Some(7));
        assert_eq!(m.major_page_faults, None);
        assert_eq!(s.pids, Some(2));
        assert!(s.swap.is_none());
    }

    #[test]
    fn working_set_never_underflows() {
        let m = MemorySample {
            usage: 10,
            inactive_file: 20,
            limit: Some(5),
            ..Default::default()
        };
        assert_eq!(m.working_set(), 0);
        assert_eq!(m.available(), Some(5));
    }
}
