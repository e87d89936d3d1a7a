//! The disk filler: how much of its writable layer it wrote, and how fast.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use berth_e2e::client::CriClient;

use crate::cri::{Tenant, exec};
use crate::report::Outcome;

/// The size to write (MiB): 2 GiB, at most a quarter of what is free on `dir`'s filesystem.
pub fn size_mib(dir: &std::path::Path) -> anyhow::Result<u64> {
    let s = nix::sys::statvfs::statvfs(dir)?;
    let free = s.blocks_available() as u64 * s.fragment_size() as u64;
    Ok(((free / 4) >> 20).min(2048))
}

/// `/fill`'s size in the container (None when ExecSync failed).
async fn filled(c: &mut CriClient, id: &str) -> Option<u64> {
    let (r, _) = exec(c, id, &["stat", "-c", "%s", "/fill"], 10).await;
    String::from_utf8_lossy(&r.ok()?.stdout).trim().parse().ok()
}

pub async fn watch(mut c: CriClient, t: Tenant, mib: u64, end: Instant) -> Outcome {
    let mut o = Outcome::new("disk filler");
    let log = PathBuf::from(&t.pc.log_directory).join(format!("{}/0.log", t.name));
    let started = Instant::now();
    let mut done_at = None;
    let mut last = 0;
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_secs(2)).await;
        if done_at.is_some() {
            continue;
        }
        if let Some(n) = filled(&mut c, &t.ctr).await {
            last = n;
        }
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("dd-exit=") {
            done_at = Some(started.elapsed());
        }
    }
    if let Some(n) = filled(&mut c, &t.ctr).await {
        last = n;
    }
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let dd: Vec<&str> = text
        .lines()
        .filter_map(|l| l.splitn(4, ' ').nth(3))
        .take(6)
        .collect();
    o.line(format!(
        "{last} bytes ({:.0} MiB) in /fill of {mib} MiB asked; {}",
        last as f64 / (1 << 20) as f64,
        match done_at {
            Some(d) => format!("dd done within {:.0} s", d.as_secs_f64()),
            None => "dd NOT done by the end".into(),
        }
    ));
    if !dd.is_empty() {
        o.line(format!("dd said: {}", dd.join(" / ")));
    }
    if last < mib << 20 {
        o.note(format!("/fill has {last} bytes, not {}", mib << 20));
    }
    o
}
