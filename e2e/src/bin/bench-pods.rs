//! `bench-pods`: pod and container lifecycle benchmark through CRI (hack/bench-pods.sh).
//!
//! ```text
//! bench-pods --socket SOCK --image IMAGE [--iterations N] [--pods 50] [--concurrency 8]
//!            [--daemon-pid PID] [--pod-proc NAME]... [--match STR] [--json FILE]
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

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use berth_api::v1::*;
use berth_e2e::client::CriClient;
use clap::Parser;
use serde_json::{Value, json};
use tonic::Code;

#[derive(Parser)]
#[command(
    name = "bench-pods",
    about = "Pod/container lifecycle and 50-pod memory benchmark over CRI v1"
)]
struct Cli {
    /// The runtime's CRI unix socket.
    #[arg(long, env = "CRI_SOCKET")]
    socket: Option<PathBuf>,
    /// Image for every container (pulled first); must have `sleep` and `true`.
    #[arg(long)]
    image: Option<String>,
    /// Timed pod lifecycles (after one untimed warm-up).
    #[arg(long, default_value_t = 30)]
    iterations: usize,
    /// Pods (one container each) in the many-pods phase; 0 skips it.
    #[arg(long, default_value_t = 50)]
    pods: usize,
    /// Concurrent clients in the second many-pods batch.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// The daemon's pid, for its PSS/RSS.
    #[arg(long)]
    daemon_pid: Option<i32>,
    /// argv[0] basename of a per-pod process (berth-monitor; containerd-shim-runc-v2, pause).
    #[arg(long = "pod-proc")]
    pod_procs: Vec<String>,
    /// Per-pod processes must have this in their command line (or be a child of one that
    /// has): keeps other daemons' monitors and shims on this host out of the sums.
    #[arg(long = "match", default_value = "")]
    match_str: String,
    /// Directory for the pods' CRI logs (default: a temp dir, removed at the end).
    #[arg(long)]
    log_dir: Option<PathBuf>,
    /// Also write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Start a registry with the test images, print HOST:PORT, serve until stdin closes.
    #[arg(long, conflicts_with_all = ["socket", "floor"])]
    serve_registry: bool,
    /// Time N fork+exec+wait of /bin/true and exit.
    #[arg(long, value_name = "N")]
    floor: Option<usize>,
    /// With --floor: also time executions (`VERSION`) of the CNI plugins loopback, bridge,
    /// host-local and portmap in DIR, the floor of a CNI ADD or DEL.
    #[arg(long, value_name = "DIR", requires = "floor")]
    cni_bin_dir: Option<PathBuf>,
    /// Make the benchmark's CNI network in DIR, hold it until stdin closes, then remove it.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["socket", "floor", "serve_registry"])]
    serve_net: Option<PathBuf>,
    /// berthd's `--state`: with --bundle-out, copy one container's bundle instead of benchmarking.
    #[arg(long, value_name = "STATE", requires = "bundle_out")]
    save_bundle: Option<PathBuf>,
    /// Where --save-bundle writes `config.json` and `lowerdir`.
    #[arg(long, value_name = "DIR", requires = "save_bundle")]
    bundle_out: Option<PathBuf>,
}

/// Label on every pod this benchmark makes, so a failed run can find and remove them.
const LABEL: &str = "berth-bench-pods";

/// A gRPC failure as an error that keeps its code and message.
fn rpc(what: &str, status: tonic::Status) -> anyhow::Error {
    anyhow!("{what}: {:?}: {}", status.code(), status.message())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// (median, p90) of durations in ms; p90 by nearest rank.
fn stats(samples: &[f64]) -> (f64, f64) {
    let mut v = samples.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    let p90 = v[((n * 9).div_ceil(10)).max(1) - 1];
    (median, p90)
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if cli.serve_registry {
        return serve_registry();
    }
    if let Some(n) = cli.floor {
        return floor(n, cli.cni_bin_dir.as_deref(), cli.json.as_deref());
    }
    if let Some(dir) = &cli.serve_net {
        return serve_net(dir);
    }
    // Single-threaded client: on a 2-core host a multi-threaded client would compete with
    // the daemon under test for the CPUs.
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(run(cli))
}

fn serve_registry() -> anyhow::Result<()> {
    use std::io::{Read, Write};
    let registry = berth_e2e::registry::Registry::start()?;
    registry.push_test_images()?;
    println!("{}", registry.host_port());
    std::io::stdout().flush()?;
    // Serve until the caller closes our stdin (or dies): the registry goes with `registry`.
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
    drop(registry);
    Ok(())
}

/// What pods left on the benchmark's network: ports on the bridge, addresses host-local
/// holds, iptables rules (any table) naming the subnet.
fn net_leftovers(net: &berth_e2e::net::TestNet) -> Value {
    let rules: Vec<String> = berth_e2e::net::iptables_save()
        .lines()
        .filter(|l| !l.starts_with('#') && l.contains(net.prefix.as_str()))
        .map(str::to_string)
        .collect();
    json!({"veths": net.veths(), "ips": net.allocated_ips(), "iptables": rules})
}

/// The CNI network of the benchmark's CNI runs (module docs): made, announced, held until
/// stdin closes, checked and removed.
fn serve_net(dir: &Path) -> anyhow::Result<()> {
    use std::io::{Read, Write};
    use std::process::{Command, Stdio};
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let pid = std::process::id();
    // A free 10.87.x.0/24, locked for as long as `net` lives; its Drop deletes the bridge and
    // every CNI iptables rule naming the subnet, however this ends (stdin EOF or a panic).
    let mut net = berth_e2e::net::TestNet::new(dir);
    net.name = format!("berth-bench-{pid}");
    net.bridge = format!("bbench{pid}");
    let link_exists = |name: &str| Path::new("/sys/class/net").join(name).exists();
    if link_exists(&net.bridge) {
        // A leftover of a dead benchmark that had the same pid.
        Command::new("ip")
            .args(["link", "del", net.bridge.as_str()])
            .stderr(Stdio::null())
            .status()?;
    }
    let bridge = net.bridge_plugin();
    if bridge["ipMasq"] != json!(false) {
        bail!("the benchmark network must never masquerade: {bridge}");
    }
    let portmap = berth_e2e::net::TestNet::portmap_plugin();
    std::fs::write(
        dir.join("bridge-portmap.conflist"),
        net.conflist_of(&[bridge.clone(), portmap.clone()]),
    )?;
    std::fs::write(
        dir.join("loopback-bridge-portmap.conflist"),
        net.conflist_of(&[json!({"type": "loopback"}), bridge, portmap]),
    )?;
    println!(
        "{}",
        json!({"name": net.name, "bridge": net.bridge, "subnet": net.subnet,
               "prefix": net.prefix, "ipam_dir": net.ipam_dir()})
    );
    std::io::stdout().flush()?;
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);

    let before = net_leftovers(&net);
    println!("{}", json!({"left_by_pods": before}));
    let (bridge, subnet, prefix) = (net.bridge.clone(), net.subnet.clone(), net.prefix.clone());
    drop(net);
    let routed = Command::new("ip")
        .args(["-4", "route", "show", "root", subnet.as_str()])
        .output()
        .map(|o| !o.stdout.is_empty())
        .unwrap_or(true);
    let rules: Vec<String> = berth_e2e::net::iptables_save()
        .lines()
        .filter(|l| !l.starts_with('#') && l.contains(prefix.as_str()))
        .map(str::to_string)
        .collect();
    println!(
        "{}",
        json!({"after_removal": {"bridge": link_exists(&bridge), "route": routed, "iptables": rules}})
    );
    std::io::stdout().flush()?;
    Ok(())
}

/// The plugins a CNI ADD of the benchmark's network executes (host-local from bridge).
const CNI_PLUGINS: [&str; 4] = ["loopback", "bridge", "host-local", "portmap"];

/// One execution of a CNI plugin: `VERSION`, which every plugin answers without touching the
/// host, so its time is what any command of the plugin pays before it does anything.
fn cni_version(plugin: &Path) -> anyhow::Result<()> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new(plugin)
        .env_clear()
        .env("CNI_COMMAND", "VERSION")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .with_context(|| format!("running {}", plugin.display()))?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(br#"{"cniVersion":"1.0.0"}"#)?;
    let status = child.wait()?;
    if !status.success() {
        bail!("{} VERSION: {status}", plugin.display());
    }
    Ok(())
}

/// The floor of any runtime's container start: a bare fork+exec+wait from this process; with
/// `cni_dir`, also the floor of a CNI command: one execution of each plugin.
fn floor(n: usize, cni_dir: Option<&Path>, json_path: Option<&Path>) -> anyhow::Result<()> {
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n.max(1) {
        let t = Instant::now();
        let status = std::process::Command::new("/bin/true").status()?;
        samples.push(ms(t.elapsed()));
        if !status.success() {
            bail!("/bin/true failed: {status}");
        }
    }
    let (median, p90) = stats(&samples);
    println!(
        "floor: fork+exec+wait /bin/true x{}: median {median:.3} ms, p90 {p90:.3} ms",
        samples.len()
    );
    let mut v = json!({"floor": {"n": samples.len(), "median_ms": median, "p90_ms": p90}});
    if let Some(dir) = cni_dir {
        // Fewer: each is a Go binary's start (several ms).
        let n = n.clamp(1, 50);
        let mut plugins = serde_json::Map::new();
        for name in CNI_PLUGINS {
            let path = dir.join(name);
            cni_version(&path)?; // page cache, not counted
            let mut samples = Vec::with_capacity(n);
            for _ in 0..n {
                let t = Instant::now();
                cni_version(&path)?;
                samples.push(ms(t.elapsed()));
            }
            let (median, p90) = stats(&samples);
            println!(
                "floor: CNI plugin {name} (VERSION) x{n}: median {median:.3} ms, p90 {p90:.3} ms"
            );
            plugins.insert(
                name.into(),
                json!({"n": n, "median_ms": median, "p90_ms": p90}),
            );
        }
        v["cni_exec"] = Value::Object(plugins);
    }
    if let Some(p) = json_path {
        std::fs::write(p, serde_json::to_string_pretty(&v)?)?;
    }
    Ok(())
}

/// What one run needs to build requests.
struct Bench {
    image: String,
    log_dir: PathBuf,
    /// Distinguishes this run's pod names from an earlier run's on the same daemon.
    run_tag: String,
}

impl Bench {
    fn pod_config(&self, name: &str) -> anyhow::Result<PodSandboxConfig> {
        // The kubelet creates the pod log dir, not the runtime (containerd does not).
        let log_dir = self.log_dir.join(name);
        std::fs::create_dir_all(&log_dir)
            .with_context(|| format!("creating {}", log_dir.display()))?;
        Ok(PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: name.into(),
                uid: format!("{}-{name}", self.run_tag),
                namespace: "bench".into(),
                attempt: 0,
            }),
            hostname: name.into(),
            log_directory: log_dir.display().to_string(),
            labels: [(LABEL.to_string(), self.run_tag.clone())].into(),
            linux: Some(LinuxPodSandboxConfig {
                security_context: Some(LinuxSandboxSecurityContext {
                    namespace_options: Some(NamespaceOption {
                        network: NamespaceMode::Pod as i32,
                        ipc: NamespaceMode::Pod as i32,
                        // POD pid mode is not in berthd yet: both runtimes get CONTAINER.
                        pid: NamespaceMode::Container as i32,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    fn ctr_config(&self) -> ContainerConfig {
        ContainerConfig {
            metadata: Some(ContainerMetadata {
                name: "sleep".into(),
                attempt: 0,
            }),
            image: Some(ImageSpec {
                image: self.image.clone(),
                ..Default::default()
            }),
            command: vec!["sleep".into(), "3600".into()],
            log_path: "sleep/0.log".into(),
            linux: Some(LinuxContainerConfig {
                security_context: Some(LinuxContainerSecurityContext {
                    namespace_options: Some(NamespaceOption {
                        network: NamespaceMode::Pod as i32,
                        ipc: NamespaceMode::Pod as i32,
                        pid: NamespaceMode::Container as i32,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// RunPodSandbox + CreateContainer + StartContainer; returns (pod, container).
    async fn start_pod(&self, c: &mut CriClient, name: &str) -> anyhow::Result<(String, String)> {
        let config = self.pod_config(name)?;
        let pod = c
            .runtime
            .run_pod_sandbox(RunPodSandboxRequest {
                config: Some(config.clone()),
                runtime_handler: String::new(),
            })
            .await
            .map_err(|s| rpc("RunPodSandbox", s))?
            .into_inner()
            .pod_sandbox_id;
        let ctr = c
            .runtime
            .create_container(CreateContainerRequest {
                pod_sandbox_id: pod.clone(),
                config: Some(self.ctr_config()),
                sandbox_config: Some(config),
            })
            .await
            .map_err(|s| rpc("CreateContainer", s))?
            .into_inner()
            .container_id;
        c.runtime
            .start_container(StartContainerRequest {
                container_id: ctr.clone(),
            })
            .await
            .map_err(|s| rpc("StartContainer", s))?;
        Ok((pod, ctr))
    }
}

/// StopContainer(0) + RemoveContainer + StopPodSandbox + RemovePodSandbox, as the kubelet does.
async fn teardown(c: &mut CriClient, pod: &str, ctr: Option<&str>) -> anyhow::Result<()> {
    if let Some(ctr) = ctr {
        c.runtime
            .stop_container(StopContainerRequest {
                container_id: ctr.into(),
                timeout: 0,
            })
            .await
            .map_err(|s| rpc("StopContainer", s))?;
        c.runtime
            .remove_container(RemoveContainerRequest {
                container_id: ctr.into(),
            })
            .await
            .map_err(|s| rpc("RemoveContainer", s))?;
    }
    c.runtime
        .stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: pod.into(),
        })
        .await
        .map_err(|s| rpc("StopPodSandbox", s))?;
    c.runtime
        .remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: pod.into(),
        })
        .await
        .map_err(|s| rpc("RemovePodSandbox", s))?;
    Ok(())
}

/// Removes every pod this benchmark labelled (after a failure; StopPodSandbox and
/// RemovePodSandbox take the containers along in both runtimes).
async fn remove_labelled(c: &mut CriClient) -> anyhow::Result<usize> {
    let pods = c
        .runtime
        .list_pod_sandbox(ListPodSandboxRequest::default())
        .await
        .map_err(|s| rpc("ListPodSandbox", s))?
        .into_inner()
        .items;
    let mut n = 0;
    for p in pods.iter().filter(|p| p.labels.contains_key(LABEL)) {
        teardown(c, &p.id, None).await?;
        n += 1;
    }
    Ok(n)
}

/// Pods and containers the runtime still lists.
async fn listed(c: &mut CriClient) -> anyhow::Result<(usize, usize)> {
    let pods = c
        .runtime
        .list_pod_sandbox(ListPodSandboxRequest::default())
        .await
        .map_err(|s| rpc("ListPodSandbox", s))?
        .into_inner()
        .items
        .len();
    let ctrs = c
        .runtime
        .list_containers(ListContainersRequest::default())
        .await
        .map_err(|s| rpc("ListContainers", s))?
        .into_inner()
        .containers
        .len();
    Ok((pods, ctrs))
}

/// PSS and RSS (kB) of a process, from /proc/PID/smaps_rollup.
fn pss_rss(pid: i32) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|r| r.split_whitespace().next())
            .and_then(|n| n.parse::<u64>().ok())
    };
    Some((field("Pss:")?, field("Rss:")?))
}

#[derive(Default, Clone, Copy)]
struct Mem {
    procs: usize,
    pss_kb: u64,
    rss_kb: u64,
}

impl Mem {
    fn add(&mut self, (pss, rss): (u64, u64)) {
        self.procs += 1;
        self.pss_kb += pss;
        self.rss_kb += rss;
    }
    fn json(&self) -> Value {
        json!({"procs": self.procs, "pss_kb": self.pss_kb, "rss_kb": self.rss_kb})
    }
}

/// Per-pod processes, by name: see the module docs for how they are chosen.
fn pod_processes(names: &[String], match_str: &str) -> BTreeMap<String, Vec<i32>> {
    // (pid, ppid, argv0 basename, command line)
    let mut procs = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let argv0 = cmd.split(|&b| b == 0).next().unwrap_or_default();
        let base = String::from_utf8_lossy(argv0.rsplit(|&b| b == b'/').next().unwrap_or(argv0))
            .into_owned();
        if !names.contains(&base) {
            continue;
        }
        // ppid is the 4th field of stat, after the parenthesised comm.
        let ppid = std::fs::read_to_string(e.path().join("stat"))
            .ok()
            .and_then(|s| {
                s.rsplit_once(')')
                    .and_then(|(_, r)| r.split_whitespace().nth(1)?.parse::<i32>().ok())
            })
            .unwrap_or(0);
        let cmdline = String::from_utf8_lossy(&cmd).replace('\0', " ");
        procs.push((pid, ppid, base, cmdline));
    }
    let roots: Vec<i32> = procs
        .iter()
        .filter(|p| p.3.contains(match_str))
        .map(|p| p.0)
        .collect();
    let mut out: BTreeMap<String, Vec<i32>> = BTreeMap::new();
    for (pid, ppid, base, _) in procs {
        if roots.contains(&pid) || roots.contains(&ppid) {
            out.entry(base).or_default().push(pid);
        }
    }
    out
}

/// Memory of the daemon and of every per-pod process, grouped by process name.
fn measure(cli: &Cli) -> (Option<Mem>, BTreeMap<String, Mem>) {
    let daemon = cli.daemon_pid.and_then(pss_rss).map(|m| {
        let mut d = Mem::default();
        d.add(m);
        d
    });
    let groups = pod_processes(&cli.pod_procs, &cli.match_str)
        .into_iter()
        .map(|(name, pids)| {
            let mut m = Mem::default();
            for pid in pids {
                if let Some(x) = pss_rss(pid) {
                    m.add(x);
                }
            }
            (name, m)
        })
        .collect();
    (daemon, groups)
}

fn mem_json(pods: usize, daemon: Option<Mem>, groups: &BTreeMap<String, Mem>) -> Value {
    let mut all = Mem::default();
    for m in groups.values() {
        all.procs += m.procs;
        all.pss_kb += m.pss_kb;
        all.rss_kb += m.rss_kb;
    }
    let per = |kb: u64| kb as f64 / pods.max(1) as f64;
    json!({
        "daemon": daemon.map(|d| d.json()),
        "per_pod_procs": groups.iter().map(|(k, v)| (k.clone(), v.json())).collect::<serde_json::Map<_, _>>(),
        "per_pod_total": all.json(),
        "per_pod_pss_kb": per(all.pss_kb),
        "per_pod_rss_kb": per(all.rss_kb),
    })
}

fn print_mem(what: &str, pods: usize, daemon: Option<Mem>, groups: &BTreeMap<String, Mem>) {
    let mb = |kb: u64| kb as f64 / 1024.0;
    println!("  memory while {pods} pods run ({what}):");
    if let Some(d) = daemon {
        println!(
            "    daemon                 PSS {:7.1} MiB  RSS {:7.1} MiB",
            mb(d.pss_kb),
            mb(d.rss_kb)
        );
    }
    let mut all = Mem::default();
    for (name, m) in groups {
        println!(
            "    {:<22} PSS {:7.1} MiB  RSS {:7.1} MiB  ({} processes; per pod PSS {:.2} MiB RSS {:.2} MiB)",
            name,
            mb(m.pss_kb),
            mb(m.rss_kb),
            m.procs,
            mb(m.pss_kb) / pods.max(1) as f64,
            mb(m.rss_kb) / pods.max(1) as f64
        );
        all.pss_kb += m.pss_kb;
        all.rss_kb += m.rss_kb;
    }
    println!(
        "    per pod (all per-pod processes): PSS {:.2} MiB, RSS {:.2} MiB",
        mb(all.pss_kb) / pods.max(1) as f64,
        mb(all.rss_kb) / pods.max(1) as f64
    );
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let socket = cli.socket.clone().context("--socket is required")?;
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
    let status = c
        .runtime
        .status(StatusRequest { verbose: false })
        .await
        .map_err(|s| rpc("Status", s))?
        .into_inner();
    if let Some(cond) = status
        .status
        .iter()
        .flat_map(|s| &s.conditions)
        .find(|cond| cond.r#type == "NetworkReady")
    {
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
    c.image
        .pull_image(PullImageRequest {
            image: Some(ImageSpec {
                image: image.clone(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .map_err(|s| rpc(&format!("PullImage {image}"), s))?;
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
        (Some(state), Some(dir)) => save_bundle(&bench, &mut c, state, dir).await,
        _ => benchmark(&cli, &bench, &mut c, &mut out).await,
    };
    if result.is_err() {
        // Leave nothing behind on failure either.
        match remove_labelled(&mut c).await {
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

/// Creates one pod and container on berthd (state dir `state`), copies the container's
/// bundle `config.json` and its rootfs overlay's `lowerdir` (the image's layer dirs) into
/// `dir`, and removes both: the inputs of crates/shim/examples/monitor-profile.rs.
async fn save_bundle(
    bench: &Bench,
    c: &mut CriClient,
    state: &Path,
    dir: &Path,
) -> anyhow::Result<()> {
    let name = format!("{}-bundle", bench.run_tag);
    let config = bench.pod_config(&name)?;
    let pod = c
        .runtime
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: String::new(),
        })
        .await
        .map_err(|s| rpc("RunPodSandbox", s))?
        .into_inner()
        .pod_sandbox_id;
    let copied = async {
        let ctr = c
            .runtime
            .create_container(CreateContainerRequest {
                pod_sandbox_id: pod.clone(),
                config: Some(bench.ctr_config()),
                sandbox_config: Some(config),
            })
            .await
            .map_err(|s| rpc("CreateContainer", s))?
            .into_inner()
            .container_id;
        let bundle = state.join("containers").join(&ctr);
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        std::fs::copy(bundle.join("config.json"), dir.join("config.json"))
            .with_context(|| format!("copying {}/config.json", bundle.display()))?;
        let rootfs = bundle.join("rootfs");
        let rootfs = rootfs.to_string_lossy();
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")?;
        let lower = mountinfo
            .lines()
            .find_map(|l| {
                let (fields, fs) = l.split_once(" - ")?;
                if fields.split(' ').nth(4)? != rootfs {
                    return None;
                }
                fs.split(' ')
                    .nth(2)?
                    .split(',')
                    .find_map(|o| o.strip_prefix("lowerdir="))
                    .map(str::to_string)
            })
            .with_context(|| format!("no overlay with a lowerdir mounted at {rootfs}"))?;
        std::fs::write(dir.join("lowerdir"), &lower)?;
        println!(
            "saved the bundle of container {ctr} to {} (lowerdir {lower})",
            dir.display()
        );
        anyhow::Ok(())
    }
    .await;
    teardown(c, &pod, None).await?;
    let _ = std::fs::remove_dir_all(bench.log_dir.join(&name));
    copied
}

async fn benchmark(
    cli: &Cli,
    bench: &Bench,
    c: &mut CriClient,
    out: &mut serde_json::Map<String, Value>,
) -> anyhow::Result<()> {
    // --- lifecycle ---------------------------------------------------------------------
    const STEPS: &[&str] = &[
        "RunPodSandbox",
        "CreateContainer",
        "StartContainer",
        "Create+StartContainer",
        "ExecSync",
        "StopContainer",
        "RemoveContainer",
        "Stop+RemoveContainer",
        "StopPodSandbox",
        "RemovePodSandbox",
        "Stop+RemovePodSandbox",
        "lifecycle",
    ];
    let mut samples: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut exec_supported = true;
    for i in 0..=cli.iterations {
        let name = format!("{}-life-{i}", bench.run_tag);
        let mut s: Vec<(&str, f64)> = Vec::new();
        let config = bench.pod_config(&name)?;
        let t_all = Instant::now();

        let t = Instant::now();
        let pod = c
            .runtime
            .run_pod_sandbox(RunPodSandboxRequest {
                config: Some(config.clone()),
                runtime_handler: String::new(),
            })
            .await
            .map_err(|s| rpc("RunPodSandbox", s))?
            .into_inner()
            .pod_sandbox_id;
        s.push(("RunPodSandbox", ms(t.elapsed())));
        if i == 0 {
            // Untimed, in the warm-up only: which network the pods are on.
            let ip = c
                .runtime
                .pod_sandbox_status(PodSandboxStatusRequest {
                    pod_sandbox_id: pod.clone(),
                    verbose: false,
                })
                .await
                .map_err(|s| rpc("PodSandboxStatus", s))?
                .into_inner()
                .status
                .and_then(|s| s.network)
                .map(|n| n.ip)
                .unwrap_or_default();
            println!(
                "pod IP (warm-up pod): {}",
                if ip.is_empty() { "none" } else { &ip }
            );
            out.insert("pod_ip".into(), json!(ip));
        }

        let t = Instant::now();
        let ctr = c
            .runtime
            .create_container(CreateContainerRequest {
                pod_sandbox_id: pod.clone(),
                config: Some(bench.ctr_config()),
                sandbox_config: Some(config),
            })
            .await
            .map_err(|s| rpc("CreateContainer", s))?
            .into_inner()
            .container_id;
        let create = ms(t.elapsed());
        s.push(("CreateContainer", create));

        let t = Instant::now();
        c.runtime
            .start_container(StartContainerRequest {
                container_id: ctr.clone(),
            })
            .await
            .map_err(|s| rpc("StartContainer", s))?;
        let start = ms(t.elapsed());
        s.push(("StartContainer", start));
        s.push(("Create+StartContainer", create + start));

        if exec_supported {
            let t = Instant::now();
            match c
                .runtime
                .exec_sync(ExecSyncRequest {
                    container_id: ctr.clone(),
                    cmd: vec!["true".into()],
                    timeout: 10,
                })
                .await
            {
                Ok(r) => {
                    s.push(("ExecSync", ms(t.elapsed())));
                    let code = r.into_inner().exit_code;
                    if code != 0 {
                        bail!("ExecSync true: exit code {code}");
                    }
                }
                Err(st) if st.code() == Code::Unimplemented => {
                    println!("ExecSync: Unimplemented, skipped");
                    exec_supported = false;
                }
                Err(st) => return Err(rpc("ExecSync", st)),
            }
        }

        let t = Instant::now();
        c.runtime
            .stop_container(StopContainerRequest {
                container_id: ctr.clone(),
                timeout: 0,
            })
            .await
            .map_err(|s| rpc("StopContainer", s))?;
        let stop = ms(t.elapsed());
        let t = Instant::now();
        c.runtime
            .remove_container(RemoveContainerRequest {
                container_id: ctr.clone(),
            })
            .await
            .map_err(|s| rpc("RemoveContainer", s))?;
        let rm = ms(t.elapsed());
        s.extend([
            ("StopContainer", stop),
            ("RemoveContainer", rm),
            ("Stop+RemoveContainer", stop + rm),
        ]);

        let t = Instant::now();
        c.runtime
            .stop_pod_sandbox(StopPodSandboxRequest {
                pod_sandbox_id: pod.clone(),
            })
            .await
            .map_err(|s| rpc("StopPodSandbox", s))?;
        let stopp = ms(t.elapsed());
        let t = Instant::now();
        c.runtime
            .remove_pod_sandbox(RemovePodSandboxRequest {
                pod_sandbox_id: pod.clone(),
            })
            .await
            .map_err(|s| rpc("RemovePodSandbox", s))?;
        let rmp = ms(t.elapsed());
        s.extend([
            ("StopPodSandbox", stopp),
            ("RemovePodSandbox", rmp),
            ("Stop+RemovePodSandbox", stopp + rmp),
            ("lifecycle", ms(t_all.elapsed())),
        ]);
        let _ = std::fs::remove_dir_all(bench.log_dir.join(&name));
        // Iteration 0 warms caches (image config, monitor binary, cgroup dirs): not counted.
        if i > 0 {
            for (k, v) in s {
                samples.entry(k).or_default().push(v);
            }
        }
    }
    println!(
        "\nlifecycle x{} (ms)          median      p90",
        cli.iterations
    );
    let mut steps = serde_json::Map::new();
    for step in STEPS {
        let Some(v) = samples.get(step).filter(|v| !v.is_empty()) else {
            println!("  {step:<24} {:>8}", "-");
            continue;
        };
        let (median, p90) = stats(v);
        println!("  {step:<24} {median:8.2} {p90:8.2}");
        steps.insert(
            step.to_string(),
            json!({"median_ms": median, "p90_ms": p90, "n": v.len()}),
        );
    }
    out.insert("steps".into(), Value::Object(steps));

    // --- warm pod ------------------------------------------------------------------------
    // Containers one after another in ONE running pod: the pod's monitor (berthd) or shim
    // and pause (containerd) already exist, so this separates container work from the
    // per-pod process start that the first CreateContainer/RunPodSandbox pays.
    let name = format!("{}-warm", bench.run_tag);
    let config = bench.pod_config(&name)?;
    let pod = c
        .runtime
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: String::new(),
        })
        .await
        .map_err(|s| rpc("RunPodSandbox", s))?
        .into_inner()
        .pod_sandbox_id;
    let mut warm: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for i in 0..=cli.iterations {
        let mut cfg = bench.ctr_config();
        if let Some(m) = cfg.metadata.as_mut() {
            m.attempt = i as u32; // a fresh name each time
        }
        cfg.log_path = format!("sleep/{i}.log");
        let t = Instant::now();
        let ctr = c
            .runtime
            .create_container(CreateContainerRequest {
                pod_sandbox_id: pod.clone(),
                config: Some(cfg),
                sandbox_config: Some(config.clone()),
            })
            .await
            .map_err(|s| rpc("CreateContainer (warm pod)", s))?
            .into_inner()
            .container_id;
        let create = ms(t.elapsed());
        let t = Instant::now();
        c.runtime
            .start_container(StartContainerRequest {
                container_id: ctr.clone(),
            })
            .await
            .map_err(|s| rpc("StartContainer (warm pod)", s))?;
        let start = ms(t.elapsed());
        let t = Instant::now();
        c.runtime
            .stop_container(StopContainerRequest {
                container_id: ctr.clone(),
                timeout: 0,
            })
            .await
            .map_err(|s| rpc("StopContainer (warm pod)", s))?;
        let stop = ms(t.elapsed());
        let t = Instant::now();
        c.runtime
            .remove_container(RemoveContainerRequest {
                container_id: ctr.clone(),
            })
            .await
            .map_err(|s| rpc("RemoveContainer (warm pod)", s))?;
        let rm = ms(t.elapsed());
        if i > 0 {
            for (k, v) in [
                ("warm CreateContainer", create),
                ("warm StartContainer", start),
                ("warm StopContainer", stop),
                ("warm RemoveContainer", rm),
            ] {
                warm.entry(k).or_default().push(v);
            }
        }
    }
    teardown(c, &pod, None).await?;
    let _ = std::fs::remove_dir_all(bench.log_dir.join(&name));
    println!(
        "\nwarm pod (pod and its monitor/shim already up) x{} (ms)",
        cli.iterations
    );
    let mut steps = serde_json::Map::new();
    for (step, v) in &warm {
        let (median, p90) = stats(v);
        println!("  {step:<24} {median:8.2} {p90:8.2}");
        steps.insert(
            step.to_string(),
            json!({"median_ms": median, "p90_ms": p90, "n": v.len()}),
        );
    }
    out.insert("warm".into(), Value::Object(steps));

    // --- many pods -----------------------------------------------------------------------
    if cli.pods == 0 {
        return Ok(());
    }
    let mut batches = serde_json::Map::new();
    for (batch, clients) in [("sequential", 1), ("concurrent", cli.concurrency.max(1))] {
        println!(
            "\n{} pods, one container each, {batch} ({clients} client(s)):",
            cli.pods
        );
        let next = Arc::new(AtomicUsize::new(0));
        let t = Instant::now();
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
            let bench = Bench {
                image: bench.image.clone(),
                log_dir: bench.log_dir.clone(),
                run_tag: bench.run_tag.clone(),
            };
            tasks.push(tokio::spawn(async move {
                let mut started = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= pods {
                        return (started, Ok(()));
                    }
                    let name = format!("{}-{batch}-{i}", bench.run_tag);
                    match bench.start_pod(&mut cc, &name).await {
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
        let wall = t.elapsed().as_secs_f64();
        if let Some(e) = failure {
            return Err(e);
        }
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

        let t = Instant::now();
        for (pod, ctr) in &started {
            teardown(c, pod, Some(ctr)).await?;
        }
        let down = t.elapsed().as_secs_f64();
        let (pods_left, ctrs_left) = listed(c).await?;
        // Shims and monitors exit asynchronously after RemovePodSandbox: give them 5 s.
        let mut procs_left = 0;
        for _ in 0..50 {
            procs_left = pod_processes(&cli.pod_procs, &cli.match_str)
                .values()
                .map(Vec::len)
                .sum::<usize>();
            if procs_left == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        println!(
            "  torn down in {down:.3} s; left: {pods_left} pods, {ctrs_left} containers listed, {procs_left} per-pod processes"
        );
        for i in 0..cli.pods {
            let _ = std::fs::remove_dir_all(
                bench.log_dir.join(format!("{}-{batch}-{i}", bench.run_tag)),
            );
        }
        if pods_left + ctrs_left + procs_left > 0 {
            bail!(
                "after teardown: {pods_left} pods, {ctrs_left} containers, {procs_left} per-pod processes left"
            );
        }
        batches.insert(
            batch.into(),
            json!({"clients": clients, "pods": cli.pods, "wall_s": wall, "teardown_s": down, "memory": mem}),
        );
    }
    out.insert("pods".into(), Value::Object(batches));
    let (after, _) = measure(cli);
    if let Some(d) = after {
        out.insert("daemon_end".into(), d.json());
    }
    Ok(())
}
