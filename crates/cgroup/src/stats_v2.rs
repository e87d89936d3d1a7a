//! cgroup v2 readers: one directory per cgroup, every controller's files in it.
//!
//! v2 figures are hierarchical by construction: a pod cgroup's cover its
//! containers.

use crate::parse::{self, FlatKeyed};
use crate::stats::{
    CfsSample, CgroupDir, CpuSample, Detail, HugetlbSample, MemoryDetail, MemorySample, Sample,
    SwapSample,
};

/// A stats reading (`detail` `None`) or a metrics one, which skips the
/// limit files as on v1 (see `stats_v1::read`).
pub fn read(dir: &CgroupDir, detail: Option<&Detail>) -> Sample {
    let file = |name: &str| dir.read(name);
    let cpu_stat = file("cpu.stat");
    let mut s = Sample {
        cpu: cpu_stat.as_deref().and_then(cpu),
        pids: file("pids.current").and_then(|t| parse::single(&t)),
        cpu_psi: file("cpu.pressure").map(|t| parse::psi(&t)),
        memory_psi: file("memory.pressure").map(|t| parse::psi(&t)),
        io_psi: file("io.pressure").map(|t| parse::psi(&t)),
        ..Default::default()
    };
    let limits = detail.is_none();
    let stat_text = file("memory.stat");
    let stat = stat_text.as_deref().map(parse::flat_keyed);
    if let (Some(current), Some(stat)) = (file("memory.current"), &stat) {
        let max = if limits { file("memory.max") } else { None };
        s.memory = memory_sample(&current, max.as_deref(), stat);
    }
    if let Some(current) = file("memory.swap.current") {
        let max = if limits {
            file("memory.swap.max")
        } else {
            None
        };
        s.swap = swap(&current, max.as_deref());
    }
    let Some(detail) = detail else {
        return s;
    };
    let events = file("memory.events");
    let events = events.as_deref().map(parse::flat_keyed).unwrap_or_default();
    s.oom_kills = events.get("oom_kill").copied();
    if let Some(stat) = &stat {
        s.memory_detail = Some(MemoryDetail {
            failcnt: events.get("max").copied(),
            max_usage: file("memory.peak").and_then(|t| parse::single(&t)),
            ..memory_detail(stat)
        });
    }
    s.cfs = cpu_stat.as_deref().and_then(cfs);
    s.pids_max = file("pids.max").and_then(|t| parse::max_or_value(&t));
    s.io = file("io.stat")
        .map(|t| parse::io_stat_v2(&t))
        .unwrap_or_default();
    s.hugetlb = detail
        .hugepage_sizes
        .iter()
        .filter_map(|size| {
            Some(HugetlbSample {
                page_size: size.clone(),
                usage: file(&format!("hugetlb.{size}.current")).and_then(|t| parse::single(&t))?,
                max_usage: None,
            })
        })
        .collect();
    s
}

/// `cpu.stat`'s CFS counters (`throttled_usec`, turned into ns); absent
/// without the cpu controller.
pub fn cfs(stat: &str) -> Option<CfsSample> {
    CfsSample::from_cpu_stat(stat, "throttled_usec", 1000)
}

/// What `memory.stat` holds of [`MemoryDetail`] (its counts are
/// hierarchical: the "local" page faults are the same figures).
pub fn memory_detail(stat: &FlatKeyed) -> MemoryDetail {
    MemoryDetail {
        kernel: stat.get("kernel").copied(),
        mapped_file: stat.get("file_mapped").copied(),
        local_page_faults: stat.get("pgfault").copied(),
        local_major_page_faults: stat.get("pgmajfault").copied(),
        ..Default::default()
    }
}

/// `cpu.stat`: microseconds, turned into nanoseconds.
pub fn cpu(stat: &str) -> Option<CpuSample> {
    let stat = parse::flat_keyed(stat);
    Some(CpuSample {
        usage_ns: stat.get("usage_usec")? * 1000,
        user_ns: stat.get("user_usec").map(|u| u * 1000),
        system_ns: stat.get("system_usec").map(|u| u * 1000),
    })
}

/// `memory.current`, `memory.max`, `memory.stat` (rss is `anon`, as cAdvisor).
pub fn memory_sample(current: &str, max: Option<&str>, stat: &FlatKeyed) -> Option<MemorySample> {
    Some(MemorySample {
        usage: parse::single(current)?,
        limit: max.and_then(parse::limit),
        inactive_file: stat.get("inactive_file").copied().unwrap_or(0),
        rss: stat.get("anon").copied().unwrap_or(0),
        cache: stat.get("file").copied().unwrap_or(0),
        page_faults: stat.get("pgfault").copied(),
        major_page_faults: stat.get("pgmajfault").copied(),
    })
}

/// `memory.swap.current` and `memory.swap.max`.
pub fn swap(current: &str, max: Option<&str>) -> Option<SwapSample> {
    let usage = parse::single(current)?;
    Some(SwapSample {
        usage,
        available: max.and_then(parse::limit).map(|m| m.saturating_sub(usage)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_stat_in_microseconds() {
        let c = cpu("usage_usec 2500\nuser_usec 2000\nsystem_usec 500\nnr_periods 0\n").unwrap();
        assert_eq!(
            (c.usage_ns, c.user_ns, c.system_ns),
            (2_500_000, Some(2_000_000), Some(500_000))
        );
        assert!(cpu("nr_periods 0\n").is_none());
    }

    #[test]
    fn memory_from_current_max_and_stat() {
        let stat = parse::flat_keyed(
            "anon 1048576\nfile 409600\ninactive_file 102400\npgfault 77\npgmajfault 3\n",
        );
        let m = memory_sample("2097152\n", Some("max\n"), &stat).unwrap();
        assert_eq!(m.usage, 2097152);
        assert_eq!(m.limit, None);
        assert_eq!(m.working_set(), 2097152 - 102400);
        assert_eq!((m.rss, m.cache), (1048576, 409600));
        assert_eq!((m.page_faults, m.major_page_faults), (Some(77), Some(3)));
        let limited = memory_sample("2097152\n", Some("4194304\n"), &stat).unwrap();
        assert_eq!(limited.available(), Some(4194304 - (2097152 - 102400)));
    }

    #[test]
    fn swap_current_and_max() {
        assert_eq!(
            swap("4096\n", Some("max\n")).unwrap(),
            SwapSample {
                usage: 4096,
                available: None
            }
        );
        assert_eq!(
            swap("4096\n", Some("10000\n")).unwrap().available,
            Some(5904)
        );
    }

    #[test]
    fn cfs_counters_in_microseconds() {
        let c = cfs("usage_usec 5\nnr_periods 50\nnr_throttled 7\nthrottled_usec 1500\n").unwrap();
        assert_eq!(
            (c.periods, c.throttled_periods, c.throttled_ns),
            (50, 7, 1_500_000)
        );
        // Without the cpu controller cpu.stat has only the usage keys.
        assert!(cfs("usage_usec 5\nuser_usec 3\nsystem_usec 2\n").is_none());
    }

    #[test]
    fn reads_a_v2_directory() {
        let d = tempfile::tempdir().unwrap();
        let w = |n: &str, t: &str| std::fs::write(d.path().join(n), t).unwrap();
        w(
            "cpu.stat",
            "usage_usec 10\nuser_usec 6\nsystem_usec 4\nnr_periods 8\nnr_throttled 2\nthrottled_usec 300\n",
        );
        w("memory.current", "1000\n");
        w("memory.max", "4096\n");
        w("memory.peak", "2000\n");
        w(
            "memory.stat",
            "anon 600\nfile 300\ninactive_file 100\nkernel 64\nfile_mapped 32\npgfault 11\npgmajfault 2\n",
        );
        w("memory.events", "low 0\nhigh 0\nmax 5\noom 1\noom_kill 1\n");
        w("pids.current", "3\n");
        w("pids.max", "100\n");
        w(
            "io.stat",
            "254:0 rbytes=4096 wbytes=8192 rios=1 wios=2 dbytes=0 dios=0\n",
        );
        w("hugetlb.2MB.current", "0\n");
        w(
            "cpu.pressure",
            "some avg10=0.00 avg60=0.00 avg300=0.00 total=9\n",
        );
        let sizes = ["2MB".to_string()];
        let detail = Detail {
            cfs: false,
            hugepage_sizes: &sizes,
        };

        // Stats: the limit, none of the metrics' detail.
        let s = read(&CgroupDir::open(d.path()), None);
        assert_eq!(s.cpu.unwrap().usage_ns, 10_000);
        assert_eq!(s.memory.unwrap().working_set(), 900);
        assert_eq!(s.memory.unwrap().available(), Some(4096 - 900));
        assert_eq!(s.pids, Some(3));
        assert_eq!(s.cpu_psi.unwrap().some.unwrap().total_us, 9);
        assert!(s.swap.is_none() && s.io_psi.is_none());
        assert_eq!((s.oom_kills, s.pids_max, s.cfs), (None, None, None));
        assert!(s.memory_detail.is_none() && s.io.is_empty());

        // Metrics: cpu.stat gives the CFS counters whatever `cfs` says.
        let s = read(&CgroupDir::open(d.path()), Some(&detail));
        assert_eq!(s.memory.unwrap().limit, None, "limits are not read");
        assert_eq!(s.oom_kills, Some(1));
        assert_eq!(s.cfs.unwrap().throttled_ns, 300_000);
        assert_eq!(s.cfs.unwrap().periods, 8);
        assert_eq!(
            s.memory_detail,
            Some(MemoryDetail {
                failcnt: Some(5),
                max_usage: Some(2000),
                kernel: Some(64),
                mapped_file: Some(32),
                local_page_faults: Some(11),
                local_major_page_faults: Some(2),
            })
        );
        assert_eq!(s.pids_max, Some(Some(100)));
        assert_eq!(s.io[0].bytes_of("Write"), Some(8192));
        assert_eq!(s.hugetlb.len(), 1);
        assert_eq!(s.hugetlb[0].max_usage, None, "v2 keeps no peak");
        assert_eq!(s.cpu_psi.unwrap().some.unwrap().total_us, 9);

        // A removed cgroup reads as nothing, without error.
        let gone = CgroupDir::open(&d.path().join("gone"));
        assert_eq!(read(&gone, Some(&detail)), Sample::default());
        assert_eq!(read(&gone, None), Sample::default());
    }
}
