//! The well-behaved pods' probes: one ExecSync `true` (timeout 10 s) per pod per second,
//! as a kubelet's exec liveness probe with periodSeconds 1.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use berth_e2e::client::CriClient;
use tokio::task::JoinHandle;

use crate::cri::{Tenant, exec};

#[derive(Default)]
pub struct Probes {
    /// When each probe began and its latency (ms), answered or not.
    pub latencies_ms: Mutex<Vec<(Instant, f64)>>,
    pub failures: Mutex<Vec<String>>,
}

impl Probes {
    pub fn count(&self) -> usize {
        self.latencies_ms.lock().unwrap().len()
    }

    pub fn failed(&self) -> usize {
        self.failures.lock().unwrap().len()
    }

    /// p50, p99 and max latency (ms).
    pub fn percentiles(&self) -> (f64, f64, f64) {
        self.percentiles_between(None)
    }

    /// p50, p99 and max latency (ms) of the probes begun in `[from, to]` (all: None),
    /// and how many there were.
    pub fn percentiles_between(&self, window: Option<(Instant, Instant)>) -> (f64, f64, f64) {
        let v: Vec<f64> = self
            .latencies_ms
            .lock()
            .unwrap()
            .iter()
            .filter(|(at, _)| window.is_none_or(|(from, to)| (from..=to).contains(at)))
            .map(|(_, ms)| *ms)
            .collect();
        percentiles(&v)
    }
}

/// p50, p99 and max of `v` (zeros when empty).
pub fn percentiles(v: &[f64]) -> (f64, f64, f64) {
    if v.is_empty() {
        return (0.0, 0.0, 0.0);
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let at = |q: f64| s[((s.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.99), s[s.len() - 1])
}

/// Probes `t` every second until `end`.
pub fn spawn(
    mut c: CriClient,
    t: Tenant,
    probes: std::sync::Arc<Probes>,
    end: Instant,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if Instant::now() >= end {
                return;
            }
            let at = Instant::now();
            let (r, took) = exec(&mut c, &t.ctr, &["true"], 10).await;
            probes
                .latencies_ms
                .lock()
                .unwrap()
                .push((at, took.as_secs_f64() * 1000.0));
            let bad = match r {
                Ok(r) if r.exit_code == 0 => None,
                Ok(r) => Some(format!(
                    "exit code {} (stderr {:?})",
                    r.exit_code,
                    String::from_utf8_lossy(&r.stderr)
                )),
                Err(e) => Some(format!("{e:#}")),
            };
            if let Some(msg) = bad {
                let msg = format!("{} after {:.0} ms: {msg}", t.name, took.as_secs_f64() * 1e3);
                eprintln!("[{}] probe failed: {msg}", crate::stamp());
                probes.failures.lock().unwrap().push(msg);
            }
        }
    })
}
