//! `usage_nano_cores`: CPU time used per second of wall time, computed from
//! the previous sample of the same container (or pod), kept in memory.
//!
//! The kubelet asks for the same container through several RPCs within
//! milliseconds (ListContainerStats, ListPodSandboxStats which embeds the
//! containers, ContainerStats). A rate over a few milliseconds is noise, so a
//! new sample replaces the stored one only when it is at least
//! [`MIN_WINDOW_NS`] newer; a call sooner than that is measured against the
//! sample before (still at least that window away).

use std::collections::HashMap;
use std::sync::Mutex;

/// Shortest window a rate is computed over.
pub const MIN_WINDOW_NS: i64 = 1_000_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Point {
    ts_ns: i64,
    usage_ns: u64,
}

#[derive(Debug, Clone, Copy)]
struct Window {
    prev: Option<Point>,
    last: Point,
}

#[derive(Default)]
pub struct CpuRates {
    /// Key → last samples. Never held across I/O.
    inner: Mutex<HashMap<String, Window>>,
}

impl CpuRates {
    /// Records `usage_ns` read at `ts_ns` and returns the rate in
    /// nanocores, or `None` when there is no earlier sample far enough
    /// back (first reading, counter reset) — as containerd, which leaves
    /// the field unset rather than guessing.
    pub fn observe(&self, key: &str, ts_ns: i64, usage_ns: u64) -> Option<u64> {
        let now = Point { ts_ns, usage_ns };
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let Some(w) = inner.get_mut(key) else {
            inner.insert(
                key.to_string(),
                Window {
                    prev: None,
                    last: now,
                },
            );
            return None;
        };
        if usage_ns < w.last.usage_ns || ts_ns < w.last.ts_ns {
            // A new cgroup under the same name, or a clock step: start over.
            *w = Window {
                prev: None,
                last: now,
            };
            return None;
        }
        if ts_ns - w.last.ts_ns >= MIN_WINDOW_NS {
            let r = rate(w.last, now);
            *w = Window {
                prev: Some(w.last),
                last: now,
            };
            return r;
        }
        w.prev.and_then(|p| rate(p, now))
    }

    /// Forgets every key `keep` rejects (removed containers and pods).
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|k, _| keep(k));
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.inner.lock().unwrap().len()
    }
}

fn rate(from: Point, to: Point) -> Option<u64> {
    let dt = to.ts_ns.checked_sub(from.ts_ns)?;
    let du = to.usage_ns.checked_sub(from.usage_ns)?;
    if dt <= 0 {
        return None;
    }
    Some((du as u128 * 1_000_000_000 / dt as u128) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000_000;

    #[test]
    fn first_sample_has_no_rate_then_rates_follow() {
        let r = CpuRates::default();
        assert_eq!(r.observe("c", 10 * S, 0), None);
        // Half a core over 2 s.
        assert_eq!(r.observe("c", 12 * S, 1_000_000_000), Some(500_000_000));
        // Two cores over 1 s.
        assert_eq!(r.observe("c", 13 * S, 3_000_000_000), Some(2_000_000_000));
    }

    #[test]
    fn close_calls_use_the_sample_before() {
        let r = CpuRates::default();
        r.observe("c", 10 * S, 0);
        assert_eq!(r.observe("c", 20 * S, 10 * S as u64), Some(1_000_000_000));
        // 5 ms later: measured from t=10 s, not over 5 ms.
        let again = r.observe("c", 20 * S + 5_000_000, 10 * S as u64 + 5_000_000);
        assert_eq!(again, Some(1_000_000_000));
        // A close call right after the very first sample: nothing to compare with.
        let r2 = CpuRates::default();
        r2.observe("d", S, 100);
        assert_eq!(r2.observe("d", S + 1000, 200), None);
    }

    #[test]
    fn counter_going_back_restarts() {
        let r = CpuRates::default();
        r.observe("c", 10 * S, 5_000);
        assert_eq!(r.observe("c", 12 * S, 1_000), None);
        assert_eq!(r.observe("c", 14 * S, 2_000_001_000), Some(1_000_000_000));
    }

    #[test]
    fn keys_are_independent_and_prunable() {
        let r = CpuRates::default();
        r.observe("c/a", S, 0);
        r.observe("c/b", S, 0);
        assert_eq!(r.observe("c/a", 3 * S, 2 * S as u64), Some(1_000_000_000));
        r.retain(|k| k == "c/a");
        assert_eq!(r.len(), 1);
        assert_eq!(r.observe("c/b", 5 * S, 9), None);
    }
}
