//! `--scale 10,50,110,250`: how the costs grow with the pods on the node.
//!
//! Pods (one `sleep` container each) are started one after another up to each size in turn
//! and kept running. At each size, with that many pods running:
//! - idle: the daemon's and the per-pod processes' CPU over `IDLE` seconds of doing nothing;
//! - memory: PSS/RSS of the daemon and the per-pod processes (per pod: their sum, and with
//!   the daemon's share counted too);
//! - lists: ListPodSandbox, ListContainers and ListContainerStats, `--scale-list-calls` each
//!   (after a warm-up), what the kubelet's relist and stats polling cost;
//! - probes: `--scale-probes` further pods, each started (RunPodSandbox, then Create+Start
//!   of its container) and torn down (Stop+Remove of the container and the pod) before the
//!   next: the cost of one more pod on a node holding this many.
//!
//! Then every pod is torn down and nothing may be left. The daemon's CPU to start the pods
//! of each step (fill) is reported per pod started.

use std::time::{Duration, Instant};

use anyhow::bail;
use berth_e2e::client::CriClient;
use berth_e2e::procs::cpu_seconds;
use serde_json::{Value, json};

use crate::cli::Cli;
use crate::cri;
use crate::memory::{measure, mem_json, pod_processes};
use crate::requests::Bench;
use crate::stats::{Samples, timed};

/// Seconds of idle CPU measured at each size.
const IDLE: u64 = 10;

/// Runs the sizes in ascending order; puts `scale` into `out`.
pub async fn run(
    cli: &Cli,
    bench: &Bench,
    c: &mut CriClient,
    sizes: &[usize],
    out: &mut serde_json::Map<String, Value>,
) -> anyhow::Result<()> {
    let mut running: Vec<(String, String)> = Vec::new();
    let mut first_ip = None;
    let result = grow(cli, bench, c, sizes, &mut running, &mut first_ip).await;
    if let Some(ip) = first_ip {
        out.insert("pod_ip".into(), json!(ip));
    }
    let t = Instant::now();
    for (pod, ctr) in &running {
        cri::teardown(c, pod, Some(ctr)).await?;
    }
    let down = t.elapsed().as_secs_f64();
    for i in 0..running.len() {
        let _ = std::fs::remove_dir_all(bench.log_dir.join(fill_name(bench, i)));
    }
    let steps = result?;
    let (pods_left, ctrs_left) = cri::listed(c).await?;
    println!(
        "\nscale: {} pods torn down in {down:.3} s; left: {pods_left} pods, {ctrs_left} containers",
        running.len()
    );
    if pods_left + ctrs_left > 0 {
        bail!("after teardown: {pods_left} pods, {ctrs_left} containers left");
    }
    out.insert(
        "scale".into(),
        json!({"sizes": steps, "probes": cli.scale_probes, "list_calls": cli.scale_list_calls,
               "idle_s": IDLE, "teardown_all_s": down, "pods_torn_down": running.len()}),
    );
    Ok(())
}

/// Fills up to each size and measures there; `running` holds every pod started, also when
/// a step fails (the caller tears them down).
async fn grow(
    cli: &Cli,
    bench: &Bench,
    c: &mut CriClient,
    sizes: &[usize],
    running: &mut Vec<(String, String)>,
    first_ip: &mut Option<String>,
) -> anyhow::Result<Vec<Value>> {
    let daemon_cpu = || cli.daemon_pid.and_then(cpu_seconds);
    let mut steps = Vec::new();
    for &size in sizes {
        let added = size.saturating_sub(running.len());
        let cpu0 = daemon_cpu();
        let t = Instant::now();
        while running.len() < size {
            let name = fill_name(bench, running.len());
            running.push(cri::start_pod(bench, c, &name).await?);
            if running.len() == 1 {
                // Which network the pods are on, for the caller to check.
                let ip = cri::pod_ip(c, &running[0].0).await?;
                println!(
                    "pod IP (first pod): {}",
                    if ip.is_empty() { "none" } else { &ip }
                );
                *first_ip = Some(ip);
            }
        }
        let fill_s = t.elapsed().as_secs_f64();
        let fill_cpu = cpu0.zip(daemon_cpu()).map(|(a, b)| b - a);
        println!(
            "\n=== {size} pods running ({added} started in {fill_s:.2} s{}) ===",
            fill_cpu.map_or(String::new(), |s| format!(
                ", daemon CPU {:.1} ms a pod",
                s * 1e3 / added.max(1) as f64
            ))
        );

        let idle = idle_cpu(cli).await;
        let (daemon, groups) = measure(cli);
        let mem = mem_json(size, daemon, &groups);
        let lists = lists(c, size, cli.scale_list_calls).await?;
        let probes = probes(bench, c, size, cli.scale_probes).await?;
        steps.push(json!({
            "size": size,
            "fill_s": fill_s,
            "fill_daemon_cpu_ms_per_pod": fill_cpu.map(|s| s * 1e3 / added.max(1) as f64),
            "daemon_cpu_s": daemon_cpu(),
            "idle": idle,
            "memory": mem,
            "lists": lists,
            "probes": probes,
        }));
    }
    Ok(steps)
}

fn fill_name(bench: &Bench, i: usize) -> String {
    format!("{}-scale-{i}", bench.run_tag)
}

/// CPU (ms per second) of the daemon and of all per-pod processes while nothing is asked.
async fn idle_cpu(cli: &Cli) -> Value {
    let pods_cpu = || -> f64 {
        pod_processes(&cli.pod_procs, &cli.match_str)
            .values()
            .flatten()
            .filter_map(|&pid| cpu_seconds(pid))
            .sum()
    };
    let d0 = cli.daemon_pid.and_then(cpu_seconds);
    let p0 = pods_cpu();
    tokio::time::sleep(Duration::from_secs(IDLE)).await;
    let d1 = cli.daemon_pid.and_then(cpu_seconds);
    let p1 = pods_cpu();
    let rate = |s: f64| s * 1e3 / IDLE as f64;
    let daemon = d0.zip(d1).map(|(a, b)| rate(b - a));
    let pods = rate((p1 - p0).max(0.0));
    println!(
        "  idle {IDLE} s: daemon CPU {} ms/s, per-pod processes {pods:.2} ms/s",
        daemon.map_or("-".into(), |d| format!("{d:.2}"))
    );
    json!({"daemon_cpu_ms_per_s": daemon, "pod_procs_cpu_ms_per_s": pods})
}

/// The three List RPCs, `calls` times each after one warm-up; each must see every pod.
async fn lists(c: &mut CriClient, pods: usize, calls: usize) -> anyhow::Result<Value> {
    let mut samples = Samples::default();
    for i in 0..=calls.max(1) {
        let (np, a) = timed(cri::listed_pods(c)).await?;
        let (nc, b) = timed(cri::listed_containers(c)).await?;
        let (ns, s) = timed(cri::listed_stats(c)).await?;
        if np < pods || nc < pods || ns < pods {
            bail!("with {pods} pods running: listed {np} pods, {nc} containers, {ns} stats");
        }
        if i > 0 {
            samples.add([
                ("ListPodSandbox", a),
                ("ListContainers", b),
                ("ListContainerStats", s),
            ]);
        }
    }
    Ok(samples.p99_table(&["ListPodSandbox", "ListContainers", "ListContainerStats"]))
}

/// `n` pods started and torn down one at a time on top of the `size` running ones.
async fn probes(bench: &Bench, c: &mut CriClient, size: usize, n: usize) -> anyhow::Result<Value> {
    let mut samples = Samples::default();
    for i in 0..n {
        let name = format!("{}-probe{size}-{i}", bench.run_tag);
        let config = bench.pod_config(&name)?;
        let (pod, t_runp) = timed(cri::run_pod(c, &config)).await?;
        let started = async {
            let (ctr, t_create) =
                timed(cri::create_ctr(c, &pod, bench.ctr_config(), &config, "")).await?;
            let ((), t_start) = timed(cri::start_ctr(c, &ctr, "")).await?;
            anyhow::Ok((ctr, t_create + t_start))
        }
        .await;
        let ctr = started.as_ref().ok().map(|(ctr, _)| ctr.as_str());
        let ((), t_down) = timed(cri::teardown(c, &pod, ctr)).await?;
        let _ = std::fs::remove_dir_all(bench.log_dir.join(&name));
        let (_, t_cs) = started?;
        samples.add([
            ("RunPodSandbox", t_runp),
            ("Create+StartContainer", t_cs),
            ("Teardown", t_down),
        ]);
    }
    Ok(samples.p99_table(&["RunPodSandbox", "Create+StartContainer", "Teardown"]))
}
