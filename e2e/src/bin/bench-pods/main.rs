//! `bench-pods`: pod and container lifecycle benchmark through CRI (hack/bench-pods.sh).
//!
//! ```text
//! bench-pods --socket SOCK --image IMAGE [--iterations N] [--pods 50] [--concurrency 8]
//!            [--daemon-pid PID] [--pod-proc NAME]... [--match STR] [--json FILE]
//! bench-pods --socket SOCK --image IMAGE --scale 10,50,110,250 [--scale-probes 30]
//!            [--daemon-pid PID] [--pod-proc NAME]... [--match STR] [--json FILE]
//!                                  only the scaling steps: pods kept running at each size,
//!                                  idle CPU, memory, List latency and probe pods (scale.rs)
//! bench-pods --socket SOCK --image IMAGE --nri-socket NRI [--iterations N]
//!                                  only the cost of one NRI plugin on the pod path (nri.rs)
//! bench-pods --socket SOCK --stream-container ID [--stream-pod ID] [--stream-port 5001]
//!            [--stream-bytes N] [--stream-transport spdy|websocket] [--iterations N]
//!                                  only streaming, in one client process (stream.rs)
//! bench-pods --socket SOCK --stream-container ID --stream-sessions N
//!                                  hold N idle exec -i sessions on one gRPC connection
//!                                  until stdin closes (stream.rs)
//! bench-pods --serve-registry      registry with the test images; prints HOST:PORT, runs until stdin EOF
//! bench-pods --serve-net DIR       a CNI network of the benchmark's own (see below) until stdin EOF
//! bench-pods --floor N [--cni-bin-dir DIR]
//!                                  N sequential fork+exec+wait of /bin/true; with DIR, also
//!                                  executions (VERSION) of the CNI plugins loopback, bridge,
//!                                  host-local and portmap: the floor of a CNI ADD or DEL
//! bench-pods --socket SOCK --image IMAGE --save-bundle STATE --bundle-out DIR
//!                                  a berthd container's config.json and rootfs lower dirs, for
//!                                  crates/shim/examples/monitor-profile.rs (the libcontainer floor)
//! ```
//!
//! Run mode pulls IMAGE, then times N pod lifecycles (RunPodSandbox, CreateContainer
//! `sleep 3600`, StartContainer, ExecSync `true`, StopContainer(0)+RemoveContainer,
//! StopPodSandbox+RemovePodSandbox; one untimed warm-up first) and prints median and p90
//! of each step, then times N containers one after another in one running pod (the "warm
//! pod": its monitor or shim is already up). Then it starts `--pods` pods with one container each, first one after the
//! other, then from `--concurrency` clients at once, and while they run sums PSS and RSS
//! (`/proc/PID/smaps_rollup`) of the daemon (`--daemon-pid`) and of the per-pod processes:
//! those whose argv[0] basename is a `--pod-proc` and whose command line contains `--match`
//! (e.g. the daemon's state dir), plus `--pod-proc` children of those (containerd's pause,
//! a child of its shim). After each batch everything is torn down and the pod and container
//! lists must be empty. It speaks plain CRI v1, so it runs unchanged against containerd.
//! The warm-up pod's IP (PodSandboxStatus) and `NetworkReady` (Status) go into the results,
//! so the caller can check that the pods were (or were not) on the network it meant.
//!
//! `--serve-net DIR` makes the network for the CNI runs: a bridge `bbench<pid>` (gateway, no
//! masquerading, hairpin) with host-local on a free 10.87.x.0/24 (chosen and locked like the
//! e2e tests' networks, `berth_e2e::net::TestNet`; its store in `DIR/cni-ipam`) and portmap
//! (SNAT). It writes `DIR/bridge-portmap.conflist` and `DIR/loopback-bridge-portmap.conflist`,
//! prints `{"name", "bridge", "subnet", "prefix", "ipam_dir"}` as one JSON line, and when its
//! stdin closes prints what pods left on the network (veths on the bridge, addresses held,
//! iptables rules naming the subnet), deletes the bridge and those rules, and prints one JSON
//! line of what is left after that (all empty/false: nothing).

mod bundle;
mod cli;
mod cri;
mod floor;
mod lifecycle;
mod many_pods;
mod memory;
mod net;
mod nri;
mod requests;
mod scale;
mod serve;
mod stats;
mod stream;
mod warm;

use std::time::Instant;

use anyhow::Context;
use berth_e2e::client::CriClient;
use clap::Parser;
use serde_json::{Value, json};

use crate::cli::Cli;
use crate::memory::measure;
use crate::requests::Bench;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if cli.serve_registry {
        return serve::serve_registry();
    }
    if let Some(n) = cli.floor {
        return floor::floor(n, cli.cni_bin_dir.as_deref(), cli.json.as_deref());
    }
    if let Some(dir) = &cli.serve_net {
        return net::serve_net(dir);
    }
    // Single-threaded client: on a 2-core host a multi-threaded client would compete with
    // the daemon under test for the CPUs.
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(run(cli))
}

/// Run mode (and --save-bundle): connect, note the daemon's idle memory and NetworkReady,
/// pull, then benchmark; whatever fails, the pods it made are removed.
async fn run(cli: Cli) -> anyhow::Result<()> {
    let socket = cli.socket.clone().context("--socket is required")?;
    if let Some(container) = &cli.stream_container {
        let mut c = CriClient::connect(&socket)
            .await
            .with_context(|| format!("connecting to {}", socket.display()))?;
        let transport = match cli.stream_transport.as_str() {
            "spdy" => berth_stream::client::Transport::Spdy,
            "websocket" => berth_stream::client::Transport::WebSocket,
            other => anyhow::bail!("--stream-transport {other}: spdy or websocket"),
        };
        let b = stream::StreamBench {
            container,
            pod: cli.stream_pod.as_deref(),
            port: cli.stream_port,
            bytes: cli.stream_bytes,
            iterations: cli.iterations,
            transport,
        };
        if let Some(n) = cli.stream_sessions {
            return stream::hold_sessions(&mut c, &b, n).await;
        }
        return stream::run(&mut c, &b).await;
    }
    let image = cli.image.clone().context("--image is required")?;
    let mut c = CriClient::connect(&socket)
        .await
        .with_context(|| format!("connecting to {}", socket.display()))?;
    let mut out = serde_json::Map::new();

    let (idle, _) = measure(&cli);
    if let Some(d) = idle {
        println!(
            "daemon at start: PSS {:.1} MiB, RSS {:.1} MiB",
            d.pss_kb as f64 / 1024.0,
            d.rss_kb as f64 / 1024.0
        );
        out.insert("daemon_start".into(), d.json());
    }

    // NetworkReady: whether the runtime has a usable CNI config (pods get an IP).
    if let Some(cond) = cri::network_ready(&mut c).await? {
        println!(
            "NetworkReady: {}{}",
            cond.status,
            if cond.status {
                String::new()
            } else {
                format!(" ({}: {})", cond.reason, cond.message)
            }
        );
        out.insert("network_ready".into(), json!(cond.status));
    }

    let t = Instant::now();
    cri::pull(&mut c, &image).await?;
    println!("pulled {image} in {:.3} s", t.elapsed().as_secs_f64());

    let (own_log_dir, log_dir) = match &cli.log_dir {
        Some(d) => (false, d.clone()),
        None => (
            true,
            std::env::temp_dir().join(format!("bench-pods-logs-{}", std::process::id())),
        ),
    };
    let bench = Bench {
        image,
        log_dir: log_dir.clone(),
        run_tag: format!(
            "bp{}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_secs()
        ),
    };
    let result = match (&cli.save_bundle, &cli.bundle_out) {
        (Some(state), Some(dir)) => bundle::save_bundle(&bench, &mut c, state, dir).await,
        _ => benchmark(&cli, &bench, &mut c, &mut out).await,
    };
    if result.is_err() {
        // Leave nothing behind on failure either.
        match cri::remove_labelled(&mut c).await {
            Ok(n) => eprintln!("removed {n} pod(s) left by the failed run"),
            Err(e) => eprintln!("cleanup after failure: {e:#}"),
        }
    }
    if own_log_dir {
        let _ = std::fs::remove_dir_all(&log_dir);
    }
    result?;
    if let Some(p) = &cli.json {
        std::fs::write(p, serde_json::to_string_pretty(&Value::Object(out))?)?;
    }
    Ok(())
}

/// The three phases, in order; each adds its results to `out`.
async fn benchmark(
    cli: &Cli,
    bench: &Bench,
    c: &mut CriClient,
    out: &mut serde_json::Map<String, Value>,
) -> anyhow::Result<()> {
    if let Some(socket) = &cli.nri_socket {
        return nri::run(bench, c, socket, cli.iterations, out).await;
    }
    if !cli.scale.is_empty() {
        if cli.scale.contains(&0) || !cli.scale.is_sorted_by(|a, b| a < b) {
            anyhow::bail!(
                "--scale {:?}: sizes must be ascending and above 0",
                cli.scale
            );
        }
        return scale::run(cli, bench, c, &cli.scale, out).await;
    }
    lifecycle::run(bench, c, cli.iterations, out).await?;
    warm::run(bench, c, cli.iterations, out).await?;
    if cli.pods == 0 {
        return Ok(());
    }
    many_pods::run(cli, bench, c, out).await
}
