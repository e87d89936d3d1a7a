//! Phase 3: `--pods` pods with one container each, first from one client, then from
//! `--concurrency` clients at once; wall time, memory while they run, teardown, and nothing
//! may be left after it.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use berth_e2e::client::CriClient;
use serde_json::{Value, json};

use crate::cli::Cli;
use crate::cri;
use crate::memory::{measure, mem_json, pod_process_count, print_mem};
use crate::requests::Bench;
use crate::stats::{Samples, timed};

/// Runs both batches; puts `pods` (and `daemon_end`) into `out`.
pub async fn run(
    cli: &Cli,
    bench: &Bench,
    c: &mut CriClient,
    out: &mut serde_json::Map<String, Value>,
) -> anyhow::Result<()> {
    let mut batches = serde_json::Map::new();
    for (name, clients) in [("sequential", 1), ("concurrent", cli.concurrency.max(1))] {
        batches.insert(name.into(), batch(cli, bench, c, name, clients).await?);
    }
    out.insert("pods".into(), Value::Object(batches));
    let (after, _) = measure(cli);
    if let Some(d) = after {
        out.insert("daemon_end".into(), d.json());
    }
    Ok(())
}

/// One batch: `--pods` pods started from `clients` clients, measured, torn down.
async fn batch(
    cli: &Cli,
    bench: &Bench,
    c: &mut CriClient,
    batch: &'static str,
    clients: usize,
) -> anyhow::Result<Value> {
    println!(
        "\n{} pods, one container each, {batch} ({clients} client(s)):",
        cli.pods
    );
    let t = Instant::now();
    let started = start_pods(cli, bench, c, batch, clients).await;
    let wall = t.elapsed().as_secs_f64();
    let started = started?;
    println!(
        "  started in {wall:.3} s ({:.1} ms a pod, {:.1} pods/s)",
        wall * 1e3 / cli.pods as f64,
        cli.pods as f64 / wall
    );
    // Let the just-started processes settle (shims finish start-up work, pages fault in).
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (daemon, groups) = measure(cli);
    print_mem(batch, cli.pods, daemon, &groups);
    let mem = mem_json(cli.pods, daemon, &groups);
    let lists = list_latency(c, cli.pods).await?;

    let t = Instant::now();
    for (pod, ctr) in &started {
        cri::teardown(c, pod, Some(ctr)).await?;
    }
    let down = t.elapsed().as_secs_f64();
    let (pods_left, ctrs_left) = cri::listed(c).await?;
    // Shims and monitors exit asynchronously after RemovePodSandbox: give them 5 s.
    let mut procs_left = 0;
    for _ in 0..50 {
        procs_left = pod_process_count(cli);
        if procs_left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "  torn down in {down:.3} s; left: {pods_left} pods, {ctrs_left} containers listed, {procs_left} per-pod processes"
    );
    for i in 0..cli.pods {
        let _ = std::fs::remove_dir_all(bench.log_dir.join(pod_name(bench, batch, i)));
    }
    if pods_left + ctrs_left + procs_left > 0 {
        bail!(
            "after teardown: {pods_left} pods, {ctrs_left} containers, {procs_left} per-pod processes left"
        );
    }
    Ok(
        json!({"clients": clients, "pods": cli.pods, "wall_s": wall, "teardown_s": down, "memory": mem, "lists": lists}),
    )
}

/// What the kubelet's PLEG relist (every second) and `crictl ps`/`pods` cost with `pods`
/// pods running: ListContainers and ListPodSandbox, each timed LIST_CALLS times after one
/// warm-up; both must list every pod's container.
async fn list_latency(c: &mut CriClient, pods: usize) -> anyhow::Result<Value> {
    const LIST_CALLS: usize = 50;
    let mut samples = Samples::default();
    for i in 0..=LIST_CALLS {
        let (np, pods_ms) = timed(cri::listed_pods(c)).await?;
        let (nc, ctrs_ms) = timed(cri::listed_containers(c)).await?;
        if np < pods || nc < pods {
            bail!("listed {np} pods and {nc} containers with {pods} running");
        }
        if i > 0 {
            samples.add([("ListPodSandbox", pods_ms), ("ListContainers", ctrs_ms)]);
        }
    }
    println!("  lists with {pods} pods running ({LIST_CALLS} calls each): median, p90 (ms)");
    Ok(samples.table(&["ListContainers", "ListPodSandbox"]))
}

fn pod_name(bench: &Bench, batch: &str, i: usize) -> String {
    format!("{}-{batch}-{i}", bench.run_tag)
}

/// Starts `--pods` pods from `clients` clients taking the next index in turn; returns
/// (pod, container) of each, or the first failure.
async fn start_pods(
    cli: &Cli,
    bench: &Bench,
    c: &CriClient,
    batch: &'static str,
    clients: usize,
) -> anyhow::Result<Vec<(String, String)>> {
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..clients {
        // A connection each: the kubelet's pod workers share one, but tonic multiplexes
        // anyway; separate ones keep the client side from serialising anything.
        let mut cc = if clients == 1 {
            c.clone()
        } else {
            CriClient::connect(cli.socket.as_deref().context("--socket")?).await?
        };
        let next = next.clone();
        let pods = cli.pods;
        let bench = bench.clone();
        tasks.push(tokio::spawn(async move {
            let mut started = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= pods {
                    return (started, Ok(()));
                }
                let name = pod_name(&bench, batch, i);
                match cri::start_pod(&bench, &mut cc, &name).await {
                    Ok(ids) => started.push(ids),
                    Err(e) => return (started, Err(e.context(format!("pod {name}")))),
                }
            }
        }));
    }
    let mut started = Vec::new();
    let mut failure = None;
    for task in tasks {
        let (ids, res) = task.await?;
        started.extend(ids);
        if let Err(e) = res {
            failure.get_or_insert(e);
        }
    }
    match failure {
        Some(e) => Err(e),
        None => Ok(started),
    }
}
