//! cgroup v1 readers: `cpuacct`, `memory` and `pids` hierarchies.
//!
//! `memory.stat` is read through its `total_*` keys, which include
//! descendants: a pod cgroup's figures cover its containers.

use std::collections::HashMap;
use std::path::Path;

use crate::parse;
use crate::stats::{CpuSample, MemorySample, Sample, SwapSample, read_opt};

/// `cpuacct.stat` counts in USER_HZ, which the kernel fixes at 100 for
/// userspace on every architecture Berth runs on.
const USER_HZ_NS: u64 = 1_000_000_000 / 100;

pub fn read(
    cpuacct: Option<&Path>,
    memory: Option<&Path>,
    pids: Option<&Path>,
    extra: bool,
) -> Sample {
    let mut s = Sample::default();
    if let Some(d) = cpuacct
        && let Some(usage) = read_opt(&d.join("cpuacct.usage"))
    {
        let stat = if extra {
            read_opt(&d.join("cpuacct.stat"))
        } else {
            None
        };
        s.cpu = cpu(&usage, stat.as_deref());
    }
    if let Some(d) = memory
        && let (Some(usage), Some(stat)) = (
            read_opt(&d.join("memory.usage_in_bytes")),
            read_opt(&d.join("memory.stat")),
        )
    {
        let stat = parse::flat_keyed(&stat);
        let limit = read_opt(&d.join("memory.limit_in_bytes"));
        s.memory = memory_sample(&usage, limit.as_deref(), &stat);
        // Each cgroup file costs an open and a read (~12 us here): the
        // memsw limit only matters when there is a memory limit.
        let memsw_limit = match s.memory.and_then(|m| m.limit) {
            Some(_) if has_swap_accounting(&stat) => {
                read_opt(&d.join("memory.memsw.limit_in_bytes"))
            }
            _ => None,
        };
        s.swap = swap(&stat, limit.as_deref(), memsw_limit.as_deref());
        if extra {
            s.oom_kills = read_opt(&d.join("memory.oom_control"))
                .and_then(|t| parse::flat_keyed(&t).get("oom_kill").copied());
        }
    }
    if let Some(d) = pids {
        s.pids = read_opt(&d.join("pids.current")).and_then(|t| parse::single(&t));
    }
    s
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

/// The hierarchical value of a `memory.stat` key, else the local one.
fn total(stat: &HashMap<&str, u64>, key: &str) -> Option<u64> {
    stat.get(format!("total_{key}").as_str())
        .or_else(|| stat.get(key))
        .copied()
}

/// `memory.usage_in_bytes`, `memory.limit_in_bytes`, `memory.stat`.
pub fn memory_sample(
    usage: &str,
    limit: Option<&str>,
    stat: &HashMap<&str, u64>,
) -> Option<MemorySample> {
    Some(MemorySample {
        usage: parse::single(usage)?,
        limit: limit.and_then(parse::limit),
        inactive_file: total(stat, "inactive_file").unwrap_or(0),
        rss: total(stat, "rss").unwrap_or(0),
        cache: total(stat, "cache").unwrap_or(0),
        page_faults: total(stat, "pgfault"),
        major_page_faults: total(stat, "pgmajfault"),
    })
}

/// The kernel accounts swap (swapaccount, `memory.memsw.*`) exactly when
/// `memory.stat` reports `swap`.
fn has_swap_accounting(stat: &HashMap<&str, u64>) -> bool {
    total(stat, "swap").is_some()
}

/// Swap, when the kernel accounts it: usage from `memory.stat`; available
/// from the swap share of the limits (memsw limit - memory limit) when both
/// are set.
pub fn swap(
    stat: &HashMap<&str, u64>,
    mem_limit: Option<&str>,
    memsw_limit: Option<&str>,
) -> Option<SwapSample> {
    let usage = total(stat, "swap")?;
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
    fn reads_v1_controller_directories() {
        let root = tempfile::tempdir().unwrap();
        let dir = |c: &str| {
            let d = root.path().join(c).join("berth/c1");
            std::fs::create_dir_all(&d).unwrap();
            d
        };
        let (cpu_d, mem_d, pids_d) = (dir("cpuacct"), dir("memory"), dir("pids"));
        std::fs::write(cpu_d.join("cpuacct.usage"), "5000000000\n").unwrap();
        std::fs::write(cpu_d.join("cpuacct.stat"), "user 300\nsystem 100\n").unwrap();
        std::fs::write(mem_d.join("memory.usage_in_bytes"), "200000\n").unwrap();
        std::fs::write(mem_d.join("memory.limit_in_bytes"), "1048576\n").unwrap();
        std::fs::write(mem_d.join("memory.stat"), STAT).unwrap();
        std::fs::write(
            mem_d.join("memory.oom_control"),
            "under_oom 0\noom_kill 3\n",
        )
        .unwrap();
        std::fs::write(pids_d.join("pids.current"), "4\n").unwrap();
        let s = read(Some(&cpu_d), Some(&mem_d), Some(&pids_d), true);
        let c = s.cpu.unwrap();
        assert_eq!(
            (c.usage_ns, c.user_ns),
            (5_000_000_000, Some(3_000_000_000))
        );
        let m = s.memory.unwrap();
        assert_eq!(
            (m.working_set(), m.available()),
            (190000, Some(1048576 - 190000))
        );
        // STAT reports swap; the memsw limit file is missing: no available.
        assert_eq!(s.swap.unwrap().usage, 512);
        assert_eq!(s.swap.unwrap().available, None);
        assert_eq!((s.pids, s.oom_kills), (Some(4), Some(3)));
        assert!(s.cpu_psi.is_none());
        // Without `extra`: no user/system split, no oom counter.
        let s = read(Some(&cpu_d), Some(&mem_d), None, false);
        assert_eq!(
            (s.cpu.unwrap().user_ns, s.oom_kills, s.pids),
            (None, None, None)
        );
        // Gone: nothing, no error.
        let gone = root.path().join("gone");
        assert_eq!(
            read(Some(&gone), Some(&gone), Some(&gone), true),
            Sample::default()
        );
    }
}
