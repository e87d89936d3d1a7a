//! The log flood: its CRI log rotated as the kubelet does (rename, then
//! ReopenContainerLog) whenever it passes [`ROTATE_AT`], so that the run's disk
//! use stays bounded; counts the bytes the monitor wrote.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use berth_api::v1::*;
use berth_e2e::client::CriClient;

use crate::cri::Tenant;
use crate::report::Outcome;

/// The kubelet's containerLogMaxSize is 10 MiB; a bigger file means fewer reopens.
const ROTATE_AT: u64 = 64 << 20;
/// A log this big means rotation is not working: the flood is stopped.
const RUNAWAY: u64 = 2 << 30;

fn size(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

pub async fn watch(mut c: CriClient, t: Tenant, end: Instant) -> Outcome {
    let mut o = Outcome::new("log flood");
    let log = PathBuf::from(&t.pc.log_directory).join(format!("{}/0.log", t.name));
    let old = log.with_extension("log.1");
    let started = Instant::now();
    let (mut rotated, mut rotations, mut reopen_ms) = (0u64, 0u32, Vec::<f64>::new());
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let n = size(&log);
        if n > RUNAWAY {
            o.note(format!("log at {n} bytes despite rotation: flood stopped"));
            let _ = c
                .runtime
                .stop_container(StopContainerRequest {
                    container_id: t.ctr.clone(),
                    timeout: 0,
                })
                .await;
            break;
        }
        if n < ROTATE_AT {
            continue;
        }
        // What the monitor wrote into the previous file after its rename is counted now.
        rotated += size(&old);
        let _ = std::fs::remove_file(&old);
        if let Err(e) = std::fs::rename(&log, &old) {
            o.note(format!("renaming {}: {e}", log.display()));
            continue;
        }
        let t0 = Instant::now();
        let r = c
            .runtime
            .reopen_container_log(ReopenContainerLogRequest {
                container_id: t.ctr.clone(),
            })
            .await;
        reopen_ms.push(t0.elapsed().as_secs_f64() * 1e3);
        rotations += 1;
        if let Err(s) = r {
            o.note(format!(
                "ReopenContainerLog: {:?}: {}",
                s.code(),
                s.message()
            ));
        }
    }
    let total = rotated + size(&old) + size(&log);
    let secs = started.elapsed().as_secs_f64();
    o.line(format!(
        "{} bytes ({:.0} MiB, {:.1} MiB/s) written to its CRI log; {rotations} rotations (rename + ReopenContainerLog at {} MiB)",
        total,
        total as f64 / (1 << 20) as f64,
        total as f64 / (1 << 20) as f64 / secs,
        ROTATE_AT >> 20
    ));
    if !reopen_ms.is_empty() {
        let (p50, _, max) = crate::probes::percentiles(&reopen_ms);
        o.line(format!(
            "ReopenContainerLog latency p50 {p50:.1} ms, max {max:.1} ms"
        ));
    }
    o
}
