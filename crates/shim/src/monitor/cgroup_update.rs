//! Live cgroup updates (UpdateContainerResources), written straight to
//! cgroupfs.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use libcontainer::oci_spec::runtime::LinuxResources;

#[derive(Debug, thiserror::Error)]
pub(super) enum CgroupUpdateError {
    #[error("write {value:?} to {}: {source}", path.display())]
    Write {
        value: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("unified key {0:?} is not a file name")]
    UnifiedKey(String),
}

/// Applies `res` to the live cgroup `cgroup` (as libcontainer computed it
/// at create). Written straight to cgroupfs: the shim has no direct
/// libcgroups dependency and these are a handful of files. A hybrid host is
/// driven as v1, like libcontainer does.
pub(super) fn update_cgroup(cgroup: &Path, res: &LinuxResources) -> Result<(), CgroupUpdateError> {
    let rel = cgroup.strip_prefix("/").unwrap_or(cgroup);
    let base = Path::new("/sys/fs/cgroup");
    let v2 = base.join("cgroup.controllers").exists();
    let w = |dir: PathBuf, file: &str, val: String| -> Result<(), CgroupUpdateError> {
        let path = dir.join(file);
        fs::write(&path, &val).map_err(|source| CgroupUpdateError::Write {
            value: val,
            path,
            source,
        })
    };
    let v1 = |ctrl: &str| base.join(ctrl).join(rel);
    let dir2 = base.join(rel);

    if let Some(cpu) = res.cpu() {
        if v2 {
            if let Some(shares) = cpu.shares() {
                // runc's shares→weight conversion.
                let weight = if shares == 0 {
                    100
                } else {
                    1 + ((shares.clamp(2, 262144) - 2) * 9999) / 262142
                };
                w(dir2.clone(), "cpu.weight", weight.to_string())?;
            }
            if cpu.quota().is_some() || cpu.period().is_some() {
                let quota = match cpu.quota() {
                    Some(q) if q > 0 => q.to_string(),
                    _ => "max".to_string(),
                };
                let period = cpu.period().unwrap_or(100_000);
                w(dir2.clone(), "cpu.max", format!("{quota} {period}"))?;
            }
        } else {
            if let Some(shares) = cpu.shares() {
                w(v1("cpu"), "cpu.shares", shares.to_string())?;
            }
            if let Some(period) = cpu.period() {
                w(v1("cpu"), "cpu.cfs_period_us", period.to_string())?;
            }
            if let Some(quota) = cpu.quota() {
                w(v1("cpu"), "cpu.cfs_quota_us", quota.to_string())?;
            }
        }
        let cs = if v2 { dir2.clone() } else { v1("cpuset") };
        if let Some(cpus) = cpu.cpus() {
            w(cs.clone(), "cpuset.cpus", cpus.clone())?;
        }
        if let Some(mems) = cpu.mems() {
            w(cs, "cpuset.mems", mems.clone())?;
        }
    }

    if let Some(mem) = res.memory() {
        if v2 {
            if let Some(limit) = mem.limit() {
                let v = if limit > 0 {
                    limit.to_string()
                } else {
                    "max".into()
                };
                w(dir2.clone(), "memory.max", v)?;
                // v1 swap is memory+swap; v2's swap.max is swap alone.
                if let Some(swap) = mem.swap() {
                    let s = if swap > 0 && limit > 0 {
                        (swap - limit).max(0).to_string()
                    } else {
                        "max".into()
                    };
                    w(dir2.clone(), "memory.swap.max", s)?;
                }
            }
        } else {
            let dir = v1("memory");
            let limit = mem.limit().map(|l| l.to_string());
            let swap = mem.swap().map(|s| s.to_string());
            // memsw must stay >= limit: raising needs memsw first, lowering
            // needs the limit first. Try limit first, then the other order.
            let set = |first: &str, a: &Option<String>, second: &str, b: &Option<String>| {
                if let Some(a) = a {
                    w(dir.clone(), first, a.clone())?;
                }
                if let Some(b) = b {
                    w(dir.clone(), second, b.clone())?;
                }
                Ok::<(), CgroupUpdateError>(())
            };
            const L: &str = "memory.limit_in_bytes";
            const S: &str = "memory.memsw.limit_in_bytes";
            set(L, &limit, S, &swap).or_else(|_| set(S, &swap, L, &limit))?;
        }
    }

    if let Some(pages) = res.hugepage_limits() {
        for h in pages {
            let (dir, file) = if v2 {
                (dir2.clone(), format!("hugetlb.{}.max", h.page_size()))
            } else {
                (
                    v1("hugetlb"),
                    format!("hugetlb.{}.limit_in_bytes", h.page_size()),
                )
            };
            w(dir, &file, h.limit().to_string())?;
        }
    }

    if v2 && let Some(unified) = res.unified() {
        for (k, v) in unified {
            if k.contains('/') {
                return Err(CgroupUpdateError::UnifiedKey(k.clone()));
            }
            w(dir2.clone(), k, v.clone())?;
        }
    }
    Ok(())
}
