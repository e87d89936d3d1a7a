//! cgroup v2 readers: one directory per cgroup, every controller's files in it.
//!
//! v2 figures are hierarchical by construction: a pod cgroup's cover its
//! containers.

use std::collections::HashMap;
use std::path::Path;

use crate::parse;
use crate::stats::{CpuSample, MemorySample, Sample, SwapSample, read_opt};

pub fn read(dir: &Path, extra: bool) -> Sample {
    let file = |name: &str| read_opt(&dir.join(name));
    let mut s = Sample {
        cpu: file("cpu.stat").and_then(|t| cpu(&t)),
        pids: file("pids.current").and_then(|t| parse::single(&t)),
        cpu_psi: file("cpu.pressure").map(|t| parse::psi(&t)),
        memory_psi: file("memory.pressure").map(|t| parse::psi(&t)),
        io_psi: file("io.pressure").map(|t| parse::psi(&t)),
        ..Default::default()
    };
    if let (Some(current), Some(stat)) = (file("memory.current"), file("memory.stat")) {
        let stat = parse::flat_keyed(&stat);
        s.memory = memory_sample(&current, file("memory.max").as_deref(), &stat);
    }
    if let Some(current) = file("memory.swap.current") {
        s.swap = swap(&current, file("memory.swap.max").as_deref());
    }
    if extra {
        s.oom_kills =
            file("memory.events").and_then(|t| parse::flat_keyed(&t).get("oom_kill").copied());
    }
    s
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
pub fn memory_sample(
    current: &str,
    max: Option<&str>,
    stat: &HashMap<&str, u64>,
) -> Option<MemorySample> {
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
    fn reads_a_v2_directory() {
        let d = tempfile::tempdir().unwrap();
        let w = |n: &str, t: &str| std::fs::write(d.path().join(n), t).unwrap();
        w("cpu.stat", "usage_usec 10\nuser_usec 6\nsystem_usec 4\n");
        w("memory.current", "1000\n");
        w("memory.max", "max\n");
        w("memory.stat", "anon 600\nfile 300\ninactive_file 100\n");
        w("memory.events", "low 0\nhigh 0\nmax 0\noom 1\noom_kill 1\n");
        w("pids.current", "3\n");
        w(
            "cpu.pressure",
            "some avg10=0.00 avg60=0.00 avg300=0.00 total=9\n",
        );
        let s = read(d.path(), true);
        assert_eq!(s.cpu.unwrap().usage_ns, 10_000);
        assert_eq!(s.memory.unwrap().working_set(), 900);
        assert_eq!(s.pids, Some(3));
        assert_eq!(s.oom_kills, Some(1));
        assert_eq!(s.cpu_psi.unwrap().some.unwrap().total_us, 9);
        assert!(s.swap.is_none() && s.io_psi.is_none());
        // Without `extra` the oom counter is not read.
        assert_eq!(read(d.path(), false).oom_kills, None);
        // A removed cgroup reads as nothing, without error.
        assert_eq!(read(&d.path().join("gone"), true), Sample::default());
    }
}
