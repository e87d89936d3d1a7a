//! cgroup v1 readers: `cpuacct`, `memory` and `pids` hierarchies, and for
//! the metrics `cpu`, `blkio` and `hugetlb`.
//!
//! `memory.stat` is read through its `total_*` keys, which include
//! descendants: a pod cgroup's figures cover its containers.

use crate::parse::{self, FlatKeyed};
use crate::stats::{
    CfsSample, CgroupDir, CpuSample, Detail, HugetlbSample, MemoryDetail, MemorySample, Sample,
    SwapSample,
};

/// `cpuacct.stat` counts in USER_HZ, which the kernel fixes at 100 for
/// userspace on every architecture Berth runs on.
const USER_HZ_NS: u64 = 1_000_000_000 / 100;

/// A cgroup's open directory in each v1 hierarchy a reading uses (`None`
/// where the controller is not mounted).
#[derive(Debug, Clone, Copy, Default)]
pub struct Dirs<'a> {
    pub cpu: Option<&'a CgroupDir>,
    pub cpuacct: Option<&'a CgroupDir>,
    pub memory: Option<&'a CgroupDir>,
    pub pids: Option<&'a CgroupDir>,
    pub blkio: Option<&'a CgroupDir>,
    pub hugetlb: Option<&'a CgroupDir>,
}

/// A stats reading (`detail` `None`) or a metrics one. The metrics take
/// the memory limits from the container's record, so their reading skips
/// the limit files (no `limit`, no swap `available`).
pub fn read(d: &Dirs, detail: Option<&Detail>) -> Sample {
    let mut s = Sample::default();
    if let Some(dir) = d.cpuacct
        && let Some(usage) = dir.read("cpuacct.usage")
    {
        let stat = detail.and_then(|_| dir.read("cpuacct.stat"));
        s.cpu = cpu(&usage, stat.as_deref());
    }
    if let Some(dir) = d.memory
        && let (Some(usage), Some(stat)) =
            (dir.read("memory.usage_in_bytes"), dir.read("memory.stat"))
    {
        let stat = parse::flat_keyed(&stat);
        let limit = match detail {
            None => dir.read("memory.limit_in_bytes"),
            Some(_) => None,
        };
        s.memory = memory_sample(&usage, limit.as_deref(), &stat);
        // Each cgroup file costs an open and a read (~5 us here): the memsw
        // limit only matters when there is a memory limit.
        let memsw_limit = match s.memory.and_then(|m| m.limit) {
            Some(_) if has_swap_accounting(&stat) => dir.read("memory.memsw.limit_in_bytes"),
            _ => None,
        };
        s.swap = swap(&stat, limit.as_deref(), memsw_limit.as_deref());
        if detail.is_some() {
            s.oom_kills = dir
                .read("memory.oom_control")
                .and_then(|t| parse::flat_keyed(&t).get("oom_kill").copied());
            let num = |f: &str| dir.read(f).and_then(|t| parse::single(&t));
            s.memory_detail = Some(MemoryDetail {
                failcnt: num("memory.failcnt"),
                max_usage: num("memory.max_usage_in_bytes"),
                kernel: num("memory.kmem.usage_in_bytes"),
                ..memory_detail(&stat)
            });
        }
    }
    if let Some(dir) = d.pids {
        s.pids = dir.read("pids.current").and_then(|t| parse::single(&t));
        if detail.is_some() {
            s.pids_max = dir.read("pids.max").and_then(|t| parse::max_or_value(&t));
        }
    }
    let Some(detail) = detail else {
        return s;
    };
    if detail.cfs
        && let Some(dir) = d.cpu
    {
        s.cfs = dir.read("cpu.stat").and_then(|t| cfs(&t));
    }
    if let Some(dir) = d.blkio {
        // The throttle files count every I/O of the cgroup, whichever
        // scheduler the device uses (the CFQ/BFQ ones only theirs).
        s.io = parse::blkio_v1(
            dir.read("blkio.throttle.io_service_bytes").as_deref(),
            dir.read("blkio.throttle.io_serviced").as_deref(),
        );
    }
    if !detail.hugepage_sizes.is_empty()
        && let Some(dir) = d.hugetlb
    {
        s.hugetlb = detail
            .hugepage_sizes
            .iter()
            .filter_map(|size| {
                let file = |what: &str| {
                    dir.read(&format!("hugetlb.{size}.{what}"))
                        .and_then(|t| parse::single(&t))
                };
                Some(HugetlbSample {
                    page_size: size.clone(),
                    usage: file("usage_in_bytes")?,
                    max_usage: file("max_usage_in_bytes"),
                })
            })
            .collect();
    }
    s
}

/// The cpu controller's `cpu.stat` (`throttled_time` in ns).
pub fn cfs(stat: &str) -> Option<CfsSample> {
    CfsSample::from_cpu_stat(stat, "throttled_time", 1)
}

/// What `memory.stat` holds of [`MemoryDetail`].
pub fn memory_detail(stat: &FlatKeyed) -> MemoryDetail {
    MemoryDetail {
        mapped_file: stat.total_or_local("mapped_file"),
        local_page_faults: stat.get("pgfault").copied(),
        local_major_page_faults: stat.get("pgmajfault").copied(),
        ..Default::default()
    }
}

/// `cpuacct.usage` (ns) and, when given, `cpuacct.stat` (USER_HZ ticks).
pub fn cpu(usage: &str, stat: Option<&str>) -> Option<CpuSample> {
    let usage_ns = parse::single(usage)?;
    let stat = stat.map(parse::flat_keyed).unwrap_or_default();
    Some(CpuSample {
        usage_ns,
        user_ns: stat.get("user").map(|t| t * USER_HZ_NS),
        system_ns: stat.get("system").map(|t| t * USER_HZ_NS),
    })
}

/// `memory.usage_in_bytes`, `memory.limit_in_bytes`, `memory.stat`.
pub fn memory_sample(usage: &str, limit: Option<&str>, stat: &FlatKeyed) -> Option<MemorySample> {
    Some(MemorySample {
        usage: parse::single(usage)?,
        limit: limit.and_then(parse::limit),
        inactive_file: stat.total_or_local("inactive_file").unwrap_or(0),
        rss: stat.total_or_local("rss").unwrap_or(0),
        cache: stat.total_or_local("cache").unwrap_or(0),
        page_faults: stat.total_or_local("pgfault"),
        major_page_faults: stat.total_or_local("pgmajfault"),
    })
}

/// The kernel accounts swap (swapaccount, `memory.memsw.*`) exactly when
/// `memory.stat` reports `swap`.
fn has_swap_accounting(stat: &FlatKeyed) -> bool {
    stat.total_or_local("swap").is_some()
}

/// Swap, when the kernel accounts it: usage from `memory.stat`; available
/// from the swap share of the limits (memsw limit - memory limit) when both
/// are set.
pub fn swap(
    stat: &FlatKeyed,
    mem_limit: Option<&str>,
    memsw_limit: Option<&str>,
) -> Option<SwapSample> {
    let usage = stat.total_or_local("swap")?;
    let available = match (
        mem_limit.and_then(parse::limit),
        memsw_limit.and_then(parse::limit),
    ) {
        (Some(m), Some(sw)) => Some(sw.saturating_sub(m).saturating_sub(usage)),
        _ => None,
    };
    Some(SwapSample { usage, available })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::{Path, PathBuf};

    const STAT: &str = "cache 4096\nrss 8192\ninactive_file 1000\npgfault 5\npgmajfault 1\n\
total_cache 40960\ntotal_rss 81920\ntotal_swap 512\ntotal_pgfault 50\ntotal_pgmajfault 10\n\
total_inactive_file 10000\n";

    #[test]
    fn cpu_usage_and_user_system() {
        let c = cpu("123456789\n", Some("user 150\nsystem 50\n")).unwrap();
        assert_eq!(c.usage_ns, 123456789);
        assert_eq!(c.user_ns, Some(1_500_000_000));
        assert_eq!(c.system_ns, Some(500_000_000));
        let c = cpu("1\n", None).unwrap();
        assert_eq!((c.user_ns, c.system_ns), (None, None));
        assert!(cpu("", None).is_none());
    }

    #[test]
    fn memory_uses_hierarchical_totals() {
        let stat = parse::flat_keyed(STAT);
        let m = memory_sample("200000\n", Some("9223372036854771712\n"), &stat).unwrap();
        assert_eq!(m.usage, 200000);
        assert_eq!(m.limit, None);
        assert_eq!(m.working_set(), 190000);
        assert_eq!((m.rss, m.cache), (81920, 40960));
        assert_eq!((m.page_faults, m.major_page_faults), (Some(50), Some(10)));
        let limited = memory_sample("200000\n", Some("1048576\n"), &stat).unwrap();
        assert_eq!(limited.available(), Some(1048576 - 190000));
    }

    #[test]
    fn memory_falls_back_to_local_keys() {
        let stat = parse::flat_keyed("rss 8192\ninactive_file 1000\n");
        let m = memory_sample("5000", None, &stat).unwrap();
        assert_eq!((m.rss, m.working_set(), m.page_faults), (8192, 4000, None));
    }

    #[test]
    fn swap_needs_memsw_accounting() {
        let stat = parse::flat_keyed(STAT);
        let no_key = parse::flat_keyed("rss 1\n");
        assert!(swap(&no_key, None, None).is_none());
        let s = swap(&stat, None, None).unwrap();
        assert_eq!((s.usage, s.available), (512, None));
        let s = swap(&stat, Some("1000"), Some("3000")).unwrap();
        assert_eq!((s.usage, s.available), (512, Some(2000 - 512)));
        // Unlimited memsw: no swap limit either.
        let s = swap(&stat, Some("1000"), Some("9223372036854771712")).unwrap();
        assert_eq!(s.available, None);
    }

    #[test]
    fn cfs_counters_of_cpu_stat() {
        let c =
            cfs("nr_periods 50\nnr_throttled 7\nthrottled_time 123456789\nnr_bursts 0\n").unwrap();
        assert_eq!(
            (c.periods, c.throttled_periods, c.throttled_ns),
            (50, 7, 123456789)
        );
        assert!(cfs("nr_periods 1\n").is_none());
    }

    #[test]
    fn memory_detail_from_stat() {
        let stat = parse::flat_keyed(
            "mapped_file 10\npgfault 5\npgmajfault 1\ntotal_mapped_file 100\ntotal_pgfault 50\n",
        );
        let d = memory_detail(&stat);
        assert_eq!(d.mapped_file, Some(100), "hierarchical");
        assert_eq!(
            (d.local_page_faults, d.local_major_page_faults),
            (Some(5), Some(1)),
            "the cgroup's own"
        );
        assert_eq!((d.failcnt, d.max_usage, d.kernel), (None, None, None));
    }

    /// A fake v1 tree of `controllers` for cgroup `berth/c1`.
    fn fake_dirs(root: &Path, controllers: &[&str]) -> Vec<PathBuf> {
        controllers
            .iter()
            .map(|c| {
                let d = root.join(c).join("berth/c1");
                std::fs::create_dir_all(&d).unwrap();
                d
            })
            .collect()
    }

    #[test]
    fn reads_v1_controller_directories() {
        let root = tempfile::tempdir().unwrap();
        let d = fake_dirs(
            root.path(),
            &["cpu", "cpuacct", "memory", "pids", "blkio", "hugetlb"],
        );
        let w = |i: usize, f: &str, t: &str| std::fs::write(d[i].join(f), t).unwrap();
        let (cpu_d, acct_d, mem_d, pids_d, blkio_d, huge_d) = (0, 1, 2, 3, 4, 5);
        w(
            cpu_d,
            "cpu.stat",
            "nr_periods 10\nnr_throttled 4\nthrottled_time 2000000000\n",
        );
        w(acct_d, "cpuacct.usage", "5000000000\n");
        w(acct_d, "cpuacct.stat", "user 300\nsystem 100\n");
        w(mem_d, "memory.usage_in_bytes", "200000\n");
        w(mem_d, "memory.limit_in_bytes", "1048576\n");
        w(mem_d, "memory.stat", STAT);
        w(mem_d, "memory.oom_control", "under_oom 0\noom_kill 3\n");
        w(mem_d, "memory.failcnt", "9\n");
        w(mem_d, "memory.max_usage_in_bytes", "300000\n");
        w(mem_d, "memory.kmem.usage_in_bytes", "65536\n");
        w(pids_d, "pids.current", "4\n");
        w(pids_d, "pids.max", "max\n");
        w(
            blkio_d,
            "blkio.throttle.io_service_bytes",
            "254:0 Read 4096\n254:0 Write 0\nTotal 4096\n",
        );
        w(
            blkio_d,
            "blkio.throttle.io_serviced",
            "254:0 Read 2\n254:0 Write 0\nTotal 2\n",
        );
        w(huge_d, "hugetlb.2MB.usage_in_bytes", "2097152\n");
        w(huge_d, "hugetlb.2MB.max_usage_in_bytes", "4194304\n");
        let d: Vec<CgroupDir> = d.iter().map(|p| CgroupDir::open(p)).collect();
        let dirs = Dirs {
            cpu: Some(&d[cpu_d]),
            cpuacct: Some(&d[acct_d]),
            memory: Some(&d[mem_d]),
            pids: Some(&d[pids_d]),
            blkio: Some(&d[blkio_d]),
            hugetlb: Some(&d[huge_d]),
        };
        let sizes = ["2MB".to_string(), "1GB".to_string()];
        let detail = Detail {
            cfs: true,
            hugepage_sizes: &sizes,
        };

        // Stats: limits, no metrics detail.
        let s = read(&dirs, None);
        let c = s.cpu.unwrap();
        assert_eq!((c.usage_ns, c.user_ns), (5_000_000_000, None));
        let m = s.memory.unwrap();
        assert_eq!(
            (m.working_set(), m.available()),
            (190000, Some(1048576 - 190000))
        );
        // STAT reports swap; the memsw limit file is missing: no available.
        assert_eq!(s.swap.unwrap().usage, 512);
        assert_eq!(s.swap.unwrap().available, None);
        assert_eq!((s.pids, s.oom_kills, s.pids_max), (Some(4), None, None));
        assert!(s.cfs.is_none() && s.memory_detail.is_none());
        assert!(s.io.is_empty() && s.hugetlb.is_empty());
        assert!(s.cpu_psi.is_none());

        // Metrics: the detail, no limits.
        let s = read(&dirs, Some(&detail));
        assert_eq!(s.cpu.unwrap().user_ns, Some(3_000_000_000));
        assert_eq!(s.memory.unwrap().limit, None);
        assert_eq!(s.memory.unwrap().usage, 200000);
        assert_eq!((s.pids, s.oom_kills), (Some(4), Some(3)));
        assert_eq!(s.pids_max, Some(None), "max: no limit");
        assert_eq!(
            s.cfs,
            Some(CfsSample {
                periods: 10,
                throttled_periods: 4,
                throttled_ns: 2_000_000_000
            })
        );
        let md = s.memory_detail.unwrap();
        assert_eq!(
            (md.failcnt, md.max_usage, md.kernel),
            (Some(9), Some(300000), Some(65536))
        );
        assert_eq!(s.io.len(), 1);
        assert_eq!(
            (
                s.io[0].major,
                s.io[0].bytes_of("Read"),
                s.io[0].ios_of("Read")
            ),
            (254, Some(4096), Some(2))
        );
        // 1GB has no files: left out.
        assert_eq!(
            s.hugetlb,
            vec![HugetlbSample {
                page_size: "2MB".into(),
                usage: 2097152,
                max_usage: Some(4194304)
            }]
        );
        // Without a quota the cpu.stat of the cpu controller is not read.
        let no_cfs = Detail {
            cfs: false,
            ..detail
        };
        assert!(read(&dirs, Some(&no_cfs)).cfs.is_none());

        // Gone: nothing, no error.
        let gone = root.path().join("gone");
        let gone = CgroupDir::open(&gone);
        let g = Some(&gone);
        let gone_dirs = Dirs {
            cpu: g,
            cpuacct: g,
            memory: g,
            pids: g,
            blkio: g,
            hugetlb: g,
        };
        assert_eq!(read(&gone_dirs, Some(&detail)), Sample::default());
        assert_eq!(read(&gone_dirs, None), Sample::default());
        // No controller mounted: nothing either.
        assert_eq!(read(&Dirs::default(), Some(&detail)), Sample::default());
    }
}
