//! The fork bomb: how many processes its pod cgroup held against `pids.max`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_e2e::client::CriClient;
use berth_e2e::procs::processes;

use crate::cri::{Tenant, status};
use crate::podcg::PodCgroup;
use crate::report::Outcome;

/// Processes whose cgroup path lies under `parent` (when no pids dir can be read).
fn count_under(parent: &str) -> u64 {
    let needle = format!(":{parent}/");
    processes()
        .iter()
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{}/cgroup", p.pid))
                .is_ok_and(|c| c.contains(&needle))
        })
        .count() as u64
}

/// Samples the pod's process count every 500 ms until `end`.
pub async fn watch(
    mut c: CriClient,
    t: Tenant,
    cg: Arc<PodCgroup>,
    started: Instant,
    end: Instant,
) -> Outcome {
    let limit: u64 = cg.max().parse().unwrap_or(u64::MAX);
    let mut max = 0;
    let mut first_at_max = None;
    while Instant::now() < end {
        let n = cg
            .read("pids.current")
            .unwrap_or_else(|| count_under(&cg.parent));
        if n > max {
            max = n;
        }
        if first_at_max.is_none() && cg.limited && n >= limit {
            first_at_max = Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let mut o = Outcome::new("fork bomb");
    if cg.limited {
        o.line(format!(
            "pod cgroup {} (pids.max {}): processes reached {max} (pids.current sampled every 500 ms), pids.peak {}, forks refused (pids.events max) {}",
            cg.parent,
            cg.max(),
            cg.read("pids.peak").map_or("n/a".into(), |n| n.to_string()),
            cg.fork_failures().map_or("n/a".into(), |n| n.to_string()),
        ));
        o.line(match first_at_max {
            Some(d) => format!(
                "at the limit by {:.1} s after its StartContainer returned",
                d.as_secs_f64()
            ),
            None => "never reached the limit".into(),
        });
    } else {
        o.line(format!(
            "NO pids limit could be set: the bomb was bounded at 2000 processes; reached {max}"
        ));
    }
    match status(&mut c, &t.ctr).await {
        Ok(s) => o.line(format!(
            "container state {:?} (exit code {}) at the end",
            berth_api::v1::ContainerState::try_from(s.state).unwrap_or_default(),
            s.exit_code
        )),
        Err(e) => o.note(format!("ContainerStatus: {e:#}")),
    }
    o
}
