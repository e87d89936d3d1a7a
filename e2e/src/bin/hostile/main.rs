//! `hostile`: well-behaved pods beside hostile tenants (hack/hostile.sh).
//!
//! ```text
//! hostile [--minutes 10] [--good 20]
//! ```
//!
//! Starts a registry with the test images and a berthd (the e2e fixture:
//! `$BERTHD_BIN`, else the debug build) on fresh temporary dirs, no CNI
//! network, pulls busybox, starts `--good` well-behaved pods (`sleep`), then
//! beside them five hostile pods:
//!
//! - a fork bomb in a pod whose CRI `cgroup_parent` is a cgroup this run makes
//!   with `pids.max` 256 (a kubelet's podPidsLimit);
//! - a log flood (`yes` of 200-byte lines), its CRI log rotated as the kubelet
//!   does (rename + ReopenContainerLog);
//! - a disk filler (`dd` of 2 GiB, at most a quarter of the free space, into
//!   its writable layer);
//! - a SIGTERM ignorer, stopped with a 2 s grace and recreated every ~30 s;
//! - an exec storm target: 200 ExecSync at once every ~30 s.
//!
//! For `--minutes` each well-behaved pod gets one ExecSync `true` (timeout
//! 10 s) per second; berthd's RSS is sampled every 500 ms and a daemon that
//! exits is counted and restarted. Then every pod is removed and what is left
//! is looked for (mounts, state and root dirs, container cgroups, monitor and
//! pod-init processes, the test cgroup). Prints the summary; exits 1 if a
//! probe failed, berthd restarted or anything leaked.

mod bomb;
mod cli;
mod cri;
mod filler;
mod flood;
mod ignorer;
mod leaks;
mod podcg;
mod probes;
mod report;
mod specs;
mod storm;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use berth_e2e::cleanup::Guard;
use berth_e2e::daemon::{Berthd, BerthdConfig, berthd_bin};
use berth_e2e::procs::{mib, rss_kb};
use berth_e2e::registry::Registry;
use clap::Parser;

use crate::cli::Cli;
use crate::podcg::PodCgroup;
use crate::probes::Probes;
use crate::report::{Outcome, Rss, Summary};
use crate::specs::IMAGE;

/// The fork bomb's pod limit (a kubelet's podPidsLimit).
const PIDS_MAX: u64 = 256;
/// How long the well-behaved pods are probed before the hostile ones start.
const BASELINE: Duration = Duration::from_secs(15);

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if cli.good == 0 || cli.minutes <= 0.0 {
        bail!("--good and --minutes must be positive");
    }
    berth_e2e::block_on_verdict(run(cli))
}

/// Seconds since the epoch, with millis: the prefix of progress lines on stderr.
pub fn stamp() -> String {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!("{}.{:03}", d.as_secs(), d.subsec_millis())
}

/// berthd's RSS (kB) once it has been idle for 2 s (0 if it cannot be read).
async fn idle_kb(d: &Berthd) -> u64 {
    tokio::time::sleep(Duration::from_secs(2)).await;
    rss_kb(d.pid().unwrap_or_default()).unwrap_or_default()
}

fn log_tail(d: &Berthd, n: usize) -> String {
    let log = d.log_text();
    let tail: Vec<&str> = log.lines().rev().take(n).collect();
    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
}

/// Sets everything up, runs, removes every pod and looks for leftovers; true when the
/// run passed. Every fixture cleans up on drop, on failure too.
async fn run(cli: Cli) -> anyhow::Result<bool> {
    // Declared first: dropped last, once the daemon and its containers are gone.
    let cg = Arc::new(PodCgroup::create(PIDS_MAX));
    let mut config = BerthdConfig::new()?;
    let registry = Registry::start().context("starting the registry")?;
    registry
        .push_test_images()
        .context("pushing the test images")?;
    let hp = registry.host_port();
    config.registries_conf = Some(format!(
        "[[registry]]\nprefix = \"docker.io/berth-test\"\nlocation = \"{hp}/berth-test\"\ninsecure = true\n"
    ));
    let dir = config.dir.path().to_path_buf();
    // Kills monitors and containers and detaches mounts of this run on exit
    // (declared before the daemon: dropped after it).
    let _guard = Guard(dir.clone());
    let cgroups_before = leaks::berth_cgroups();
    let mut d = Berthd::start_with(config)
        .await
        .context("starting berthd")?;
    println!(
        "berthd {} (pid {}); dirs {}; registry {hp}",
        berthd_bin()?.display(),
        d.pid().unwrap_or_default(),
        dir.display()
    );
    let mut c = d.client().await?;
    c.pull(IMAGE).await?;

    let mut good = vec![];
    for i in 0..cli.good {
        good.push(cri::tenant(&mut c, &d, &format!("good{i}"), "", specs::SLEEPER).await?);
    }
    let before = idle_kb(&d).await;
    println!(
        "{} well-behaved pods running; berthd RSS {} (idle)",
        cli.good,
        mib(before)
    );
    // The probes' latency with no hostile pod, to compare with.
    let baseline = Arc::new(Probes::default());
    let base_end = Instant::now() + BASELINE;
    for t in good
        .iter()
        .map(|t| probes::spawn(c.clone(), t.clone(), baseline.clone(), base_end))
        .collect::<Vec<_>>()
    {
        t.await?;
    }
    let (p50, p99, max) = baseline.percentiles();
    println!(
        "baseline ({} s, no hostile pod): {} probes, {} failed; p50 {p50:.1} ms, p99 {p99:.1} ms, max {max:.1} ms",
        BASELINE.as_secs(),
        baseline.count(),
        baseline.failed()
    );

    // The hostile pods.
    let bomb_script = if cg.limited {
        specs::BOMB
    } else {
        eprintln!(
            "hostile: no pids limit could be set on {} (pids dir {:?}): the bomb is bounded at 2000 processes",
            cg.parent, cg.pids_dir
        );
        specs::BOMB_BOUNDED
    };
    let fill_mib = filler::size_mib(&dir)?;
    let filler_script = specs::filler(fill_mib);
    let mut hostile = vec![];
    let mut bomb_started = Instant::now();
    for (name, parent, script) in [
        ("bomb", cg.parent.as_str(), bomb_script),
        ("flood", "", specs::FLOOD),
        ("filler", "", filler_script.as_str()),
        ("ignorer", "", specs::IGNORER),
        ("storm", "", specs::SLEEPER),
    ] {
        hostile.push(cri::tenant(&mut c, &d, name, parent, script).await?);
        if name == "bomb" {
            bomb_started = Instant::now();
        }
    }
    println!(
        "hostile pods running: bomb (cgroup parent {}, pids.max {}), flood, filler ({fill_mib} MiB), ignorer, storm",
        cg.parent,
        if cg.limited {
            PIDS_MAX.to_string()
        } else {
            "NOT SET".into()
        }
    );

    let started = Instant::now();
    let end = started + Duration::from_secs_f64(cli.minutes * 60.0);
    let probes = Arc::new(Probes::default());
    let probe_tasks: Vec<_> = good
        .iter()
        .map(|t| probes::spawn(c.clone(), t.clone(), probes.clone(), end))
        .collect();
    let h = |i: usize| hostile[i].clone();
    let tasks: Vec<tokio::task::JoinHandle<Outcome>> = vec![
        tokio::spawn(bomb::watch(c.clone(), h(0), cg.clone(), bomb_started, end)),
        tokio::spawn(flood::watch(c.clone(), h(1), end)),
        tokio::spawn(filler::watch(c.clone(), h(2), fill_mib, end)),
        tokio::spawn(ignorer::cycle(c.clone(), h(3), end)),
        tokio::spawn(storm::run(c.clone(), h(4), probes.clone(), end)),
    ];

    // berthd's RSS every 500 ms; a daemon that exited is counted and restarted.
    let (mut rss_max, mut restarts) = (before, 0u32);
    let mut progress = started;
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(500)).await;
        if let Some(status) = d.exited() {
            restarts += 1;
            eprintln!(
                "[{}] berthd exited ({status}); its log ends with:\n{}",
                stamp(),
                log_tail(&d, 30)
            );
            if let Err(e) = d.restart().await {
                eprintln!("[{}] berthd restart failed: {e:#}", stamp());
                break;
            }
        }
        if let Some(kb) = rss_kb(d.pid().unwrap_or_default()) {
            rss_max = rss_max.max(kb);
        }
        if progress.elapsed() >= Duration::from_secs(30) {
            progress = Instant::now();
            let (p50, p99, max) = probes.percentiles();
            println!(
                "[{:>4.0} s] probes {} failed {} (p50 {p50:.0} ms, p99 {p99:.0} ms, max {max:.0} ms); berthd RSS {} (max {}); restarts {restarts}",
                started.elapsed().as_secs_f64(),
                probes.count(),
                probes.failed(),
                rss_kb(d.pid().unwrap_or_default()).map_or("gone".into(), mib),
                mib(rss_max)
            );
        }
    }
    for t in probe_tasks {
        let _ = tokio::time::timeout(Duration::from_secs(120), t).await;
    }
    let mut outcomes = vec![];
    for t in tasks {
        match tokio::time::timeout(Duration::from_secs(180), t).await {
            Ok(Ok(o)) => outcomes.push(o),
            Ok(Err(e)) => bail!("a hostile task failed: {e}"),
            Err(_) => bail!("a hostile task did not finish within 180 s of the end"),
        }
    }
    let minutes = started.elapsed().as_secs_f64() / 60.0;

    // The hostile pods go first (timed), then the idle RSS, then the well-behaved ones.
    let mut removals = vec![];
    for t in &hostile {
        let r = cri::remove_pod(&mut c, &t.pod).await;
        removals.push((t.name.clone(), r.map_err(|e| format!("{e:#}"))));
    }
    let after = idle_kb(&d).await;
    for t in &good {
        if let Err(e) = cri::remove_pod(&mut c, &t.pod).await {
            eprintln!("[{}] removing {}: {e:#}", stamp(), t.name);
        }
    }
    let mut left = leaks::settled(&d, &cgroups_before, &cg.parent).await;
    left.push((
        "test cgroup dirs",
        cg.remove()
            .into_iter()
            .map(|p| p.display().to_string())
            .collect(),
    ));

    let ok = report::print(&Summary {
        minutes,
        good: cli.good,
        probes: &probes,
        baseline: &baseline,
        rss: Rss {
            before,
            max: rss_max,
            after,
        },
        restarts,
        outcomes: &outcomes,
        removals: &removals,
        leaks: &left,
    });
    drop(d);
    drop(registry);
    Ok(ok)
}
