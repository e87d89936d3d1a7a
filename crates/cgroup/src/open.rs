//! A cgroup with its directories open ([`Cgroup::open`]): its readings
//! open each file relative to a kept directory descriptor. Opening a
//! cgroup file by its path walks every component of it through kernfs
//! (`/sys/fs/cgroup/memory/kubepods/besteffort/pod.../<id>`): a third of
//! the CPU of a ListPodSandboxMetrics here. Kept by a caller that reads the
//! same cgroups again and again (berthd's stats), the walk is made once.
//!
//! Only `O_PATH` descriptors are held, one per hierarchy the stats read
//! (v1: at most the cpu/cpuacct, memory, pids, blkio and hugetlb ones; v2:
//! one), never a file of the cgroup. A cgroup removed since it was opened
//! reads as gone (every file `None`), as a path would.

use crate::cgroup::{Cgroup, Dirs};
use crate::stats::{CgroupDir, Detail, Sample};
use crate::{parse, stats_v1, stats_v2};

/// The v1 controllers a reading takes files from.
const STATS_V1: [&str; 6] = ["cpu", "cpuacct", "memory", "pids", "blkio", "hugetlb"];

#[derive(Debug)]
pub struct OpenCgroup {
    dirs: OpenDirs,
}

#[derive(Debug)]
enum OpenDirs {
    /// The open directory of each hierarchy holding a controller the
    /// stats read, with that hierarchy's controllers.
    V1(Vec<(Vec<String>, CgroupDir)>),
    V2(CgroupDir),
}

impl OpenCgroup {
    pub(crate) fn new(c: &Cgroup) -> OpenCgroup {
        let dirs = match &c.dirs {
            Dirs::V1(dirs) => OpenDirs::V1(
                dirs.iter()
                    .filter(|d| d.controllers.iter().any(|c| STATS_V1.contains(&c.as_str())))
                    .map(|d| (d.controllers.clone(), CgroupDir::open(&d.dir)))
                    .collect(),
            ),
            Dirs::V2 { dir, .. } => OpenDirs::V2(CgroupDir::open(dir)),
        };
        OpenCgroup { dirs }
    }

    fn dir(&self, controller: &str) -> Option<&CgroupDir> {
        match &self.dirs {
            OpenDirs::V1(dirs) => dirs
                .iter()
                .find(|(controllers, _)| controllers.iter().any(|c| c == controller))
                .map(|(_, d)| d),
            OpenDirs::V2(d) => Some(d),
        }
    }

    fn all(&self) -> Vec<&CgroupDir> {
        match &self.dirs {
            OpenDirs::V1(dirs) => dirs.iter().map(|(_, d)| d).collect(),
            OpenDirs::V2(d) => vec![d],
        }
    }

    /// Every directory was there when opened: worth keeping (a cgroup not
    /// yet made, or half made, is opened again next time).
    pub fn complete(&self) -> bool {
        let all = self.all();
        !all.is_empty() && all.iter().all(|d| d.is_open())
    }

    /// The descriptors it holds.
    pub fn fds(&self) -> usize {
        self.all().iter().filter(|d| d.is_open()).count()
    }

    /// As [`Cgroup::stats`].
    pub fn stats(&self) -> Sample {
        self.read_sample(None)
    }

    /// As [`Cgroup::metrics_sample`].
    pub fn metrics_sample(&self, detail: &Detail) -> Sample {
        self.read_sample(Some(detail))
    }

    /// As [`Cgroup::procs`].
    pub fn procs(&self) -> Option<Vec<i32>> {
        self.procs_text().map(|t| parse::pids(&t))
    }

    /// As [`Cgroup::first_pid`].
    pub fn first_pid(&self) -> Option<i32> {
        self.procs_text().and_then(|t| parse::first_pid(&t))
    }

    fn procs_text(&self) -> Option<String> {
        let dir = match &self.dirs {
            OpenDirs::V1(_) => Cgroup::STATS_V1.iter().find_map(|c| self.dir(c))?,
            OpenDirs::V2(d) => d,
        };
        dir.read_list("cgroup.procs")
    }

    pub(crate) fn read_sample(&self, detail: Option<&Detail>) -> Sample {
        match &self.dirs {
            OpenDirs::V1(_) => stats_v1::read(
                &stats_v1::Dirs {
                    cpu: self.dir("cpu"),
                    cpuacct: self.dir("cpuacct"),
                    memory: self.dir("memory"),
                    pids: self.dir("pids"),
                    blkio: self.dir("blkio"),
                    hugetlb: self.dir("hugetlb"),
                },
                detail,
            ),
            OpenDirs::V2(d) => stats_v2::read(d, detail),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::cgroup::tests::fake_v1;
    use crate::{Cgroup, Detail};

    #[test]
    fn an_open_cgroup_reads_as_its_paths_do_and_sees_it_go() {
        let d = tempfile::tempdir().unwrap();
        let l = fake_v1(d.path(), &["cpuacct", "memory", "pids", "freezer"]);
        let c = Cgroup::of(&l, "/berth/c1").unwrap();
        let early = c.open();
        assert!(!early.complete(), "nothing made yet");
        assert_eq!(early.fds(), 0);
        for ctl in ["cpuacct", "memory", "pids", "freezer"] {
            std::fs::create_dir_all(d.path().join(ctl).join("berth/c1")).unwrap();
        }
        let file = |ctl: &str, name: &str, text: &str| {
            std::fs::write(d.path().join(ctl).join("berth/c1").join(name), text).unwrap()
        };
        file("cpuacct", "cpuacct.usage", "1500\n");
        file("cpuacct", "cpuacct.stat", "user 1\nsystem 2\n");
        file("memory", "memory.usage_in_bytes", "4096\n");
        file(
            "memory",
            "memory.stat",
            "total_rss 100\ntotal_cache 50\ntotal_inactive_file 10\n",
        );
        file("pids", "pids.current", "2\n");
        file("pids", "cgroup.procs", "42\n43\n");
        let open = c.open();
        assert!(open.complete());
        // Not the freezer's: the stats read nothing there.
        assert_eq!(open.fds(), 3);
        assert_eq!(open.stats(), c.stats());
        let detail = Detail {
            cfs: false,
            hugepage_sizes: &[],
        };
        assert_eq!(open.metrics_sample(&detail), c.metrics_sample(&detail));
        assert_eq!(open.procs(), Some(vec![42, 43]));
        assert_eq!(open.first_pid(), Some(42));
        // Removed since: every reading is empty, as through its paths.
        std::fs::remove_dir_all(d.path().join("pids/berth/c1")).unwrap();
        std::fs::remove_dir_all(d.path().join("memory/berth/c1")).unwrap();
        std::fs::remove_dir_all(d.path().join("cpuacct/berth/c1")).unwrap();
        assert_eq!(open.stats(), Default::default());
        assert_eq!(open.procs(), None);
    }
}
