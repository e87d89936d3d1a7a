//! What the soak prints: a progress line every 30 s, and the summary at the end.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use berth_e2e::procs::mib;
use tokio::task::JoinHandle;

use crate::cli::Cli;
use crate::leftovers::Leftovers;
use crate::rss::Rss;
use crate::shared::Shared;

/// Prints the counters every 30 s (until aborted).
pub fn spawn_progress(sh: Arc<Shared>, started: Instant) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(30)).await;
            println!(
                "[{:>4.0} s] pods {} containers {} execs {} restarts {} errors {} lost {}",
                started.elapsed().as_secs_f64(),
                sh.n.pods_started.load(Ordering::Relaxed),
                sh.n.ctrs_started.load(Ordering::Relaxed),
                sh.n.execs.load(Ordering::Relaxed),
                sh.n.restarts.load(Ordering::Relaxed),
                sh.n.errors.load(Ordering::Relaxed),
                sh.n.lost.load(Ordering::Relaxed),
            );
        }
    })
}

/// Prints the summary; true when errors, losses, abandoned pods and leaks are all zero.
pub fn summary(cli: &Cli, sh: &Shared, churn: Duration, left: &Leftovers, rss: &Rss) -> bool {
    let n = &sh.n;
    let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let net_l = &left.net;
    println!();
    println!("=== soak summary ===");
    println!(
        "churn: {:.1} min, {} workers, kill -9 every {} s, dwell {} ms",
        churn.as_secs_f64() / 60.0,
        cli.workers,
        cli.kill_every,
        cli.dwell_ms
    );
    println!("pods started:                    {}", get(&n.pods_started));
    println!("containers started:              {}", get(&n.ctrs_started));
    println!("execs:                           {}", get(&n.execs));
    println!("pods removed:                    {}", get(&n.pods_removed));
    println!("restarts survived:               {}", get(&n.restarts));
    println!(
        "pods checked after restarts:     {} (listed READY, same IP, container state kept, exec works)",
        get(&n.verified)
    );
    println!(
        "RPCs failed during outages:      {} (expected); interrupted creates/starts found done: {}",
        get(&n.outage_failures),
        get(&n.adopted)
    );
    println!("RPC errors outside outages:      {}", get(&n.errors));
    println!("pods/containers lost:            {}", get(&n.lost));
    println!("pods given up:                   {}", get(&n.abandoned));
    println!("leaks:");
    for (what, count) in left.counts() {
        println!("  {what:<30} {count}");
    }
    println!("  {:<30} {}", "total", left.total());
    println!(
        "berthd RSS: start {} (first daemon, idle after warm-up), end {} (last daemon, idle), max seen {}",
        mib(rss.start),
        mib(rss.end),
        mib(rss.max)
    );
    let errors = get(&n.errors) + get(&n.lost);
    if left.total() > 0 {
        println!("\nleftovers:");
        for (what, v) in [
            ("listed pods", &left.pods_listed),
            ("listed containers", &left.ctrs_listed),
            ("monitors", &left.monitors),
            ("pod inits", &left.inits),
            ("unstarted container inits", &left.unstarted),
        ] {
            for x in v {
                println!("  {what}: {x}");
            }
        }
        for (what, v) in [
            ("mount", &left.mounts),
            ("pod dir", &left.pod_dirs),
            ("monitor dir", &left.monitor_dirs),
            ("bundle", &left.bundles),
            ("upper dir", &left.uppers),
            ("cgroup", &left.cgroups),
            ("nsfs", &net_l.nsfs_mounts),
        ] {
            for x in v {
                println!("  {what}: {}", x.display());
            }
        }
        for x in net_l
            .veths
            .iter()
            .chain(&net_l.ip_files)
            .chain(&net_l.iptables)
            .chain(&net_l.cni_results)
        {
            println!("  net: {x}");
        }
    }
    let msgs = sh.messages.lock().unwrap().clone();
    if !msgs.is_empty() {
        println!("\nfirst errors:");
        for m in &msgs {
            println!("  {m}");
        }
    }
    let ok = errors == 0 && left.total() == 0 && get(&n.abandoned) == 0;
    println!("\nresult: {}", if ok { "PASS" } else { "FAIL" });
    ok
}
