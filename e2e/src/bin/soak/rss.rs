//! berthd's RSS over the soak: idle before and after the churn, and sampled during it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use berth_e2e::daemon::Berthd;
use berth_e2e::procs::rss_kb;
use tokio::task::JoinHandle;

use crate::shared::Shared;

/// berthd's RSS in kB: the first daemon idle after the warm-up, the last one idle at the
/// end, the most seen.
pub struct Rss {
    pub start: u64,
    pub end: u64,
    pub max: u64,
}

/// The daemon's RSS once it has been idle for 2 s (0 if it cannot be read).
pub async fn idle_kb(d: &Berthd) -> u64 {
    tokio::time::sleep(Duration::from_secs(2)).await;
    rss_kb(d.pid().unwrap_or_default()).unwrap_or_default()
}

/// Raises `max` to the current daemon's RSS every 500 ms (until aborted); none is read
/// while the daemon is down.
pub fn spawn_sampler(sh: Arc<Shared>, max: Arc<AtomicU64>) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let pid = sh.daemon_pid.load(Ordering::Relaxed);
            if pid != 0
                && let Some(kb) = rss_kb(pid)
            {
                max.fetch_max(kb, Ordering::Relaxed);
            }
        }
    })
}
