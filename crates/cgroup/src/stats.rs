//! What one reading of a cgroup holds, for the CRI stats and metrics.

use std::path::Path;

use crate::parse::Psi;

/// One reading of a cgroup.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sample {
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

impl Sample {
    /// The pod's figures when it has no cgroup of its own: the sum of its
    /// containers'. Limits do not add up, so none is reported.
    pub fn sum<'a>(samples: impl IntoIterator<Item = &'a Sample>) -> Sample {
        let mut out = Sample::default();
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

    #[test]
    fn sums_add_what_is_there() {
        let a = Sample {
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
        let b = Sample {
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
        let s = Sample::sum([&a, &b, &Sample::default()]);
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
