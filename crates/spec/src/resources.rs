//! Cgroup resources and the OOM score, from `LinuxContainerResources`.
//!
//! Follows containerd's `WithResources` and `WithOOMScoreAdj` (with
//! `restrictOOMScoreAdj`, which Berth always applies: this host has no
//! CAP_SYS_RESOURCE, so a lower value than the daemon's fails with EPERM).

use berth_api::v1;
use oci_spec::runtime::{LinuxCpu, LinuxHugepageLimit, LinuxMemory, LinuxPids, LinuxResources};

use crate::HostEnv;
use crate::error::{Result, SpecError};

const F: &str = "linux.resources";

/// Fills `res` (which already holds the device rules) from the CRI.
pub fn apply(
    cri: Option<&v1::LinuxContainerResources>,
    host: &HostEnv,
    res: &mut LinuxResources,
) -> Result<()> {
    if let Some(limit) = host.pids_limit
        && limit > 0
    {
        let mut pids = LinuxPids::default();
        pids.set_limit(limit);
        res.set_pids(Some(pids));
    }
    let Some(r) = cri else { return Ok(()) };

    let mut cpu = LinuxCpu::default();
    let mut has_cpu = false;
    if r.cpu_period != 0 {
        let period = u64::try_from(r.cpu_period)
            .map_err(|_| SpecError::invalid(format!("{F}.cpu_period"), "negative"))?;
        cpu.set_period(Some(period));
        has_cpu = true;
    }
    if r.cpu_quota != 0 {
        // -1 means "no limit" to the kernel; other negatives are errors there.
        if r.cpu_quota < -1 {
            return Err(SpecError::invalid(
                format!("{F}.cpu_quota"),
                format!("{} is negative", r.cpu_quota),
            ));
        }
        cpu.set_quota(Some(r.cpu_quota));
        has_cpu = true;
    }
    if r.cpu_shares != 0 {
        let shares = u64::try_from(r.cpu_shares)
            .map_err(|_| SpecError::invalid(format!("{F}.cpu_shares"), "negative"))?;
        cpu.set_shares(Some(shares));
        has_cpu = true;
    }
    if !r.cpuset_cpus.is_empty() {
        check_cpuset(&r.cpuset_cpus, &format!("{F}.cpuset_cpus"))?;
        cpu.set_cpus(Some(r.cpuset_cpus.clone()));
        has_cpu = true;
    }
    if !r.cpuset_mems.is_empty() {
        check_cpuset(&r.cpuset_mems, &format!("{F}.cpuset_mems"))?;
        cpu.set_mems(Some(r.cpuset_mems.clone()));
        has_cpu = true;
    }
    if has_cpu {
        res.set_cpu(Some(cpu));
    }

    let mut mem = LinuxMemory::default();
    let mut has_mem = false;
    if r.memory_limit_in_bytes != 0 {
        if r.memory_limit_in_bytes < 0 {
            return Err(SpecError::invalid(
                format!("{F}.memory_limit_in_bytes"),
                "negative",
            ));
        }
        mem.set_limit(Some(r.memory_limit_in_bytes));
        // Swap equal to the limit by default, so the container cannot swap
        // (containerd does this when the swap controller is there).
        if r.memory_swap_limit_in_bytes == 0 && host.swap_controller {
            mem.set_swap(Some(r.memory_limit_in_bytes));
        }
        has_mem = true;
    }
    if r.memory_swap_limit_in_bytes != 0 && host.swap_controller {
        mem.set_swap(Some(r.memory_swap_limit_in_bytes));
        has_mem = true;
    }
    if has_mem {
        res.set_memory(Some(mem));
    }

    if !r.hugepage_limits.is_empty() {
        if host.hugetlb_controller {
            let mut limits = Vec::new();
            for (i, h) in r.hugepage_limits.iter().enumerate() {
                let field = format!("{F}.hugepage_limits[{i}].page_size");
                check_page_size(&h.page_size, &field)?;
                if !host.hugepage_sizes.contains(&h.page_size) {
                    // "hugepages where the host has them": a size the host
                    // lacks has no cgroup file to write.
                    tracing::warn!(page_size = %h.page_size, "huge page size not on this host, limit skipped");
                    continue;
                }
                let limit = i64::try_from(h.limit).map_err(|_| {
                    SpecError::invalid(format!("{F}.hugepage_limits[{i}].limit"), "too large")
                })?;
                let mut l = LinuxHugepageLimit::default();
                l.set_page_size(h.page_size.clone()).set_limit(limit);
                limits.push(l);
            }
            if !limits.is_empty() {
                res.set_hugepage_limits(Some(limits));
            }
        } else {
            // containerd's tolerate_missing_hugetlb_controller behaviour.
            // The kubelet sends a zero limit per host page size with every
            // container: only a real limit that cannot be enforced is news.
            if r.hugepage_limits.iter().any(|h| h.limit > 0) {
                tracing::warn!("hugetlb cgroup controller is absent, huge page limits skipped");
            } else {
                tracing::debug!(
                    "hugetlb cgroup controller is absent, zero huge page limits skipped"
                );
            }
        }
    }

    if !r.unified.is_empty() {
        for k in r.unified.keys() {
            berth_cgroup::check_unified_key(k)
                .map_err(|e| SpecError::invalid(format!("{F}.unified"), e.to_string()))?;
        }
        if host.cgroup_v2 {
            res.set_unified(Some(r.unified.clone().into_iter().collect()));
        } else {
            // The kubelet only sends these on cgroup v2 hosts; on v1 the
            // runtime would reject the whole spec.
            tracing::warn!("cgroup v2 unified resources ignored on a cgroup v1 host");
        }
    }
    Ok(())
}

/// The OOM score adjustment: `None` when the CRI has no resources (the
/// container inherits the monitor's), else the CRI's value clamped up to the
/// daemon's own.
pub fn oom_score_adj(
    cri: Option<&v1::LinuxContainerResources>,
    host: &HostEnv,
) -> Result<Option<i32>> {
    let Some(r) = cri else { return Ok(None) };
    if !(-1000..=1000).contains(&r.oom_score_adj) {
        return Err(SpecError::invalid(
            format!("{F}.oom_score_adj"),
            format!("{} is outside -1000..=1000", r.oom_score_adj),
        ));
    }
    Ok(Some((r.oom_score_adj as i32).max(host.min_oom_score_adj)))
}

/// A cpuset list: "0-3,5,7-8".
pub(crate) fn check_cpuset(s: &str, field: &str) -> Result<()> {
    let ok = s.split(',').all(|part| {
        let mut ends = part.trim().splitn(2, '-');
        let lo = ends.next().and_then(|v| v.parse::<u32>().ok());
        match (lo, ends.next()) {
            (Some(_), None) => true,
            (Some(lo), Some(hi)) => hi.parse::<u32>().is_ok_and(|hi| hi >= lo),
            _ => false,
        }
    });
    if ok {
        Ok(())
    } else {
        Err(SpecError::invalid(
            field,
            format!("{s:?} is not a cpu/node list"),
        ))
    }
}

/// `<size><unit-prefix>B`, e.g. "2MB", "1GB", "64KB".
fn check_page_size(s: &str, field: &str) -> Result<()> {
    let ok = s
        .strip_suffix('B')
        .map(|v| v.trim_end_matches(['K', 'M', 'G', 'T', 'P']))
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
    if ok {
        Ok(())
    } else {
        Err(SpecError::invalid(
            field,
            format!("{s:?} is not like 2MB or 1GB"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host() -> HostEnv {
        HostEnv {
            swap_controller: true,
            hugetlb_controller: true,
            hugepage_sizes: vec!["2MB".into()],
            cgroup_v2: true,
            min_oom_score_adj: -500,
            ..Default::default()
        }
    }

    fn run(r: &v1::LinuxContainerResources, h: &HostEnv) -> Result<LinuxResources> {
        let mut res = LinuxResources::default();
        apply(Some(r), h, &mut res)?;
        Ok(res)
    }

    #[test]
    fn cpu_and_memory() {
        let r = v1::LinuxContainerResources {
            cpu_period: 100_000,
            cpu_quota: 50_000,
            cpu_shares: 512,
            cpuset_cpus: "0-1,3".into(),
            cpuset_mems: "0".into(),
            memory_limit_in_bytes: 64 << 20,
            ..Default::default()
        };
        let res = run(&r, &host()).unwrap();
        let cpu = res.cpu().as_ref().unwrap();
        assert_eq!(cpu.period(), Some(100_000));
        assert_eq!(cpu.quota(), Some(50_000));
        assert_eq!(cpu.shares(), Some(512));
        assert_eq!(cpu.cpus().as_deref(), Some("0-1,3"));
        assert_eq!(cpu.mems().as_deref(), Some("0"));
        let mem = res.memory().as_ref().unwrap();
        assert_eq!(mem.limit(), Some(64 << 20));
        assert_eq!(mem.swap(), Some(64 << 20), "swap = limit: no swapping");
        assert!(res.pids().is_none());
    }

    #[test]
    fn swap_explicit_and_without_controller() {
        let mut r = v1::LinuxContainerResources {
            memory_limit_in_bytes: 100,
            memory_swap_limit_in_bytes: 300,
            ..Default::default()
        };
        assert_eq!(
            run(&r, &host()).unwrap().memory().as_ref().unwrap().swap(),
            Some(300)
        );
        let no_swap = HostEnv {
            swap_controller: false,
            ..host()
        };
        assert_eq!(
            run(&r, &no_swap).unwrap().memory().as_ref().unwrap().swap(),
            None
        );
        r.memory_limit_in_bytes = -1;
        assert_eq!(
            run(&r, &host()).unwrap_err().field(),
            "linux.resources.memory_limit_in_bytes"
        );
    }

    #[test]
    fn zero_means_unset() {
        let res = run(&v1::LinuxContainerResources::default(), &host()).unwrap();
        assert!(res.cpu().is_none() && res.memory().is_none());
        assert!(res.hugepage_limits().is_none() && res.unified().is_none());
    }

    #[test]
    fn hugepages_where_the_host_has_them() {
        let r = v1::LinuxContainerResources {
            hugepage_limits: vec![
                v1::HugepageLimit {
                    page_size: "2MB".into(),
                    limit: 4 << 20,
                },
                v1::HugepageLimit {
                    page_size: "1GB".into(),
                    limit: 0,
                },
            ],
            ..Default::default()
        };
        let res = run(&r, &host()).unwrap();
        let h = res.hugepage_limits().as_ref().unwrap();
        assert_eq!(h.len(), 1);
        assert_eq!((h[0].page_size().as_str(), h[0].limit()), ("2MB", 4 << 20));
        let no_hugetlb = HostEnv {
            hugetlb_controller: false,
            ..host()
        };
        assert!(run(&r, &no_hugetlb).unwrap().hugepage_limits().is_none());
        let bad = v1::LinuxContainerResources {
            hugepage_limits: vec![v1::HugepageLimit {
                page_size: "2 megs".into(),
                limit: 1,
            }],
            ..Default::default()
        };
        assert_eq!(
            run(&bad, &host()).unwrap_err().field(),
            "linux.resources.hugepage_limits[0].page_size"
        );
    }

    #[test]
    fn unified_only_on_v2_and_pids_from_host() {
        let r = v1::LinuxContainerResources {
            unified: [("memory.high".to_string(), "1000000".to_string())].into(),
            ..Default::default()
        };
        let h = HostEnv {
            pids_limit: Some(1024),
            ..host()
        };
        let res = run(&r, &h).unwrap();
        assert_eq!(res.unified().as_ref().unwrap()["memory.high"], "1000000");
        assert_eq!(res.pids().as_ref().unwrap().limit(), 1024);
        let v1host = HostEnv {
            cgroup_v2: false,
            ..host()
        };
        assert!(run(&r, &v1host).unwrap().unified().is_none());
    }

    /// Unified keys are file names joined to the cgroup dir: a path or a
    /// cgroup control file from a pod spec is refused, on any host.
    #[test]
    fn hostile_unified_keys_are_refused() {
        for key in [
            "../../proc/sys/kernel/core_pattern",
            "cgroup.procs",
            "cgroup.kill",
        ] {
            let r = v1::LinuxContainerResources {
                unified: [(key.to_string(), "1".to_string())].into(),
                ..Default::default()
            };
            for cgroup_v2 in [true, false] {
                let h = HostEnv {
                    cgroup_v2,
                    ..host()
                };
                let e = run(&r, &h).unwrap_err();
                assert_eq!(e.field(), "linux.resources.unified", "{key}");
                assert!(e.to_string().contains(key), "{e}");
            }
        }
    }

    #[test]
    fn bad_values_name_the_field() {
        let cases: Vec<(v1::LinuxContainerResources, &str)> = vec![
            (
                v1::LinuxContainerResources {
                    cpu_shares: -2,
                    ..Default::default()
                },
                "linux.resources.cpu_shares",
            ),
            (
                v1::LinuxContainerResources {
                    cpu_period: -2,
                    ..Default::default()
                },
                "linux.resources.cpu_period",
            ),
            (
                v1::LinuxContainerResources {
                    cpu_quota: -5,
                    ..Default::default()
                },
                "linux.resources.cpu_quota",
            ),
            (
                v1::LinuxContainerResources {
                    cpuset_cpus: "0-x".into(),
                    ..Default::default()
                },
                "linux.resources.cpuset_cpus",
            ),
            (
                v1::LinuxContainerResources {
                    cpuset_mems: "3-1".into(),
                    ..Default::default()
                },
                "linux.resources.cpuset_mems",
            ),
        ];
        for (r, field) in cases {
            assert_eq!(run(&r, &host()).unwrap_err().field(), field);
        }
        let r = v1::LinuxContainerResources {
            cpu_quota: -1,
            ..Default::default()
        };
        assert_eq!(
            run(&r, &host()).unwrap().cpu().as_ref().unwrap().quota(),
            Some(-1)
        );
    }

    #[test]
    fn oom_score_adj_clamped_to_daemon() {
        let h = host(); // daemon at -500
        let with = |v: i64| {
            oom_score_adj(
                Some(&v1::LinuxContainerResources {
                    oom_score_adj: v,
                    ..Default::default()
                }),
                &h,
            )
        };
        assert_eq!(
            with(-998).unwrap(),
            Some(-500),
            "kubelet's guaranteed pods score"
        );
        assert_eq!(with(-500).unwrap(), Some(-500));
        assert_eq!(with(0).unwrap(), Some(0));
        assert_eq!(with(1000).unwrap(), Some(1000));
        assert_eq!(
            with(1001).unwrap_err().field(),
            "linux.resources.oom_score_adj"
        );
        assert_eq!(oom_score_adj(None, &h).unwrap(), None);
    }
}
