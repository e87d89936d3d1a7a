//! `soak`: parallel pod churn plus periodic `kill -9` of berthd (hack/soak.sh).
//!
//! ```text
//! soak [--minutes 5] [--workers 8] [--kill-every 30] [--dwell-ms 1000]
//!      [--registry HOST:PORT] [--keep-log FILE]
//! ```
//!
//! Starts a berthd (the e2e fixture: `$BERTHD_BIN`, else the debug build) on
//! fresh temporary dirs with a CNI network of its own (`berth_e2e::net::TestNet`:
//! a unique bridge, a free 10.87.x.0/24, no masquerading, host-local's store in
//! the temp dir) and a registry with the test images (started here unless
//! `--registry` names one), pulls busybox, then for `--minutes`:
//!
//! - `--workers` workers each loop: RunPodSandbox (CNI), CreateContainer,
//!   StartContainer, ExecSync, a `--dwell-ms` pause, StopContainer (30 s
//!   grace; the container leaves at SIGTERM), RemoveContainer,
//!   StopPodSandbox, RemovePodSandbox. Every other pod shares one PID
//!   namespace (a pod init).
//! - every `--kill-every` seconds (0: never) berthd is SIGKILLed and
//!   restarted at once. Before the kill the pods whose state no RPC is
//!   changing are noted; after the restart, before any worker goes on, each
//!   must be listed READY with the same IP, its container in the same state,
//!   and ExecSync must work in running ones.
//!
//! Workers retry through the outage. An RPC that fails while the daemon it
//! was sent to is down (or gone) is expected; what it may have done is then
//! looked up, as the kubelet would (a pod or container it created is found
//! by its labels and adopted, a start is checked with ContainerStatus), and
//! the worker goes on and cleans up. Any other failure is an error.
//!
//! At the end it prints pods and containers started, RPC errors outside
//! outages, restarts survived, what was lost, what leaked (mounts, veths,
//! IP files, iptables rules, cached CNI results, netns pins, pod dirs,
//! bundles, upper dirs, cgroup dirs, monitor and pod-init processes) and
//! berthd's RSS (the first daemon idle after warm-up, the last one idle at
//! the end, the most seen); and exits 1 unless errors, losses and leaks are
//! all zero.

mod cgroups;
mod cli;
mod cri;
mod fatal;
mod killer;
mod leftovers;
mod report;
mod requests;
mod rss;
mod shared;
mod worker;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use berth_e2e::cleanup::Guard;
use berth_e2e::daemon::{Berthd, BerthdConfig};
use berth_e2e::net::TestNet;
use berth_e2e::procs::mib;
use berth_e2e::registry::Registry;
use clap::Parser;

use crate::cgroups::berth_cgroups;
use crate::cli::Cli;
use crate::fatal::{BRIDGE, fatal};
use crate::requests::IMAGE;
use crate::rss::Rss;
use crate::shared::Shared;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if cli.workers == 0 || cli.minutes <= 0.0 {
        bail!("--workers and --minutes must be positive");
    }
    berth_e2e::block_on_verdict(run(cli))
}

/// Sets up berthd, its network and a registry, warms up, churns, then counts what is left;
/// true when the soak passed.
async fn run(cli: Cli) -> anyhow::Result<bool> {
    let mut config = BerthdConfig::new()?;
    let net = TestNet::new(config.dir.path());
    let _ = BRIDGE.set(net.bridge.clone());
    config.cni_conflist = Some(net.conflist());
    let registry = match &cli.registry {
        Some(_) => None,
        None => {
            let r = Registry::start().context("starting the registry")?;
            r.push_test_images().context("pushing the test images")?;
            Some(r)
        }
    };
    let hp = cli
        .registry
        .clone()
        .or_else(|| registry.as_ref().map(|r| r.host_port()))
        .expect("a registry");
    config.registries_conf = Some(format!(
        "[[registry]]\nprefix = \"docker.io/berth-test\"\nlocation = \"{hp}/berth-test\"\ninsecure = true\n"
    ));
    let dir = config.dir.path().to_path_buf();
    // Kills monitors and containers and detaches mounts of this run on exit,
    // after the leak check (declared before the daemon: dropped after it).
    let _guard = Guard(dir.clone());
    let cgroups_before = berth_cgroups();
    let d = Berthd::start_with(config)
        .await
        .context("starting berthd")?;
    println!(
        "berthd {} (pid {}); dirs {}; network {} on {} ({}); registry {hp}",
        berth_e2e::daemon::berthd_bin()?.display(),
        d.pid().unwrap_or_default(),
        dir.display(),
        net.subnet,
        net.bridge,
        net.name
    );
    let mut c = d.client().await?;
    c.pull(IMAGE).await?;

    let sh = Arc::new(Shared::new(
        c,
        cli.workers,
        d.pid().unwrap_or_default(),
        format!("soak{}", std::process::id()),
        dir.join("logs"),
        net.prefix.clone(),
        Duration::from_millis(cli.dwell_ms),
    ));

    // Warm-up: one pod per worker, all at once, not counted; then the idle RSS.
    if !worker::warm_up(&sh, cli.workers).await? {
        let msgs = sh.messages.lock().unwrap().join("\n");
        fatal(&d, &format!("warm-up failed:\n{msgs}"));
    }
    let rss_start = rss::idle_kb(&d).await;
    println!(
        "warm-up done: {} pods; berthd RSS {} (idle)",
        cli.workers,
        mib(rss_start)
    );

    // The churn.
    let started = Instant::now();
    let end = started + Duration::from_secs_f64(cli.minutes * 60.0);
    let rss_max = Arc::new(AtomicU64::new(rss_start));
    let sampler = rss::spawn_sampler(sh.clone(), rss_max.clone());
    let workers: Vec<_> = (0..cli.workers)
        .map(|w| tokio::spawn(worker::worker(sh.clone(), w)))
        .collect();
    let killer = tokio::spawn(killer::killer(
        sh.clone(),
        d,
        Duration::from_secs(cli.kill_every),
        end,
    ));
    let progress = report::spawn_progress(sh.clone(), started);
    tokio::time::sleep_until(end.into()).await;
    sh.stop.store(true, Ordering::Relaxed);
    let d = killer.await?;
    // Workers finish the pod they have; a stuck one is a hang.
    let drain = tokio::time::timeout(Duration::from_secs(300), async {
        for w in workers {
            let _ = w.await;
        }
    })
    .await;
    progress.abort();
    sampler.abort();
    if drain.is_err() {
        let steps = sh.steps.lock().unwrap().clone();
        fatal(
            &d,
            &format!("workers did not finish within 300 s after the end; steps: {steps:#?}"),
        );
    }
    let churn = started.elapsed();

    // Idle RSS of the last daemon, then what is left.
    let rss_end = rss::idle_kb(&d).await;
    rss_max.fetch_max(rss_end, Ordering::Relaxed);
    let left = leftovers::settled(&sh, &d, &net, &cgroups_before).await;
    if let Some(to) = &cli.keep_log {
        std::fs::copy(&d.config.log, to)
            .with_context(|| format!("copying berthd's log to {}", to.display()))?;
    }

    let rss = Rss {
        start: rss_start,
        end: rss_end,
        max: rss_max.load(Ordering::Relaxed),
    };
    let ok = report::summary(&cli, &sh, churn, &left, &rss);
    drop(d);
    drop(net);
    drop(registry);
    Ok(ok)
}
