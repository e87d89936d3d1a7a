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

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use berth_api::v1::*;
use berth_e2e::cleanup::{Guard, mounts_under};
use berth_e2e::client::CriClient;
use berth_e2e::daemon::{Berthd, BerthdConfig};
use berth_e2e::net::{Leaks, TestNet};
use berth_e2e::registry::Registry;
use clap::Parser;
use tokio::sync::watch;

#[derive(Parser)]
#[command(
    name = "soak",
    about = "Parallel pod churn with periodic kill -9 of berthd; counts errors, losses and leaks"
)]
struct Cli {
    /// How long the churn runs.
    #[arg(long, default_value_t = 5.0)]
    minutes: f64,
    /// Parallel workers, each cycling one pod at a time.
    #[arg(long, default_value_t = 8)]
    workers: usize,
    /// Seconds between two kill -9 of berthd (each followed by a restart); 0: never.
    #[arg(long, default_value_t = 30)]
    kill_every: u64,
    /// How long each pod keeps its container running before it is stopped.
    #[arg(long, default_value_t = 1000)]
    dwell_ms: u64,
    /// A registry (HOST:PORT, plain HTTP) already serving berth-test/busybox
    /// (e.g. hack/registry.sh); default: start one with the test images.
    #[arg(long)]
    registry: Option<String>,
    /// Copy berthd's log here at the end (its temp dir goes).
    #[arg(long)]
    keep_log: Option<PathBuf>,
}

const IMAGE: &str = "berth-test/busybox:latest";
/// Leaves at once on SIGTERM and leaves no process behind.
const SCRIPT: &str = "trap 'kill $p; exit 0' TERM; sleep 100000 & p=$!; wait $p";
const GRACE_S: i64 = 30;
/// One RPC that takes longer is a hang (counted as an error).
const RPC_LIMIT: Duration = Duration::from_secs(120);
/// Attempts of one step that fails outside outages before the pod is given up.
const MAX_FAILURES: usize = 3;
/// How long what goes after an RPC's answer (monitors, the trash) may take.
const SETTLE: Duration = Duration::from_secs(30);
/// The test network's bridge, for [`fatal`] (which skips `TestNet`'s Drop).
static BRIDGE: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// The daemon as workers see it.
#[derive(Clone)]
struct Life {
    /// Bumped at every restart.
    generation: u64,
    /// False from just before a kill until the restarted daemon is checked.
    up: bool,
    client: CriClient,
}

/// A pod a worker holds, as far as the daemon should know it.
#[derive(Clone, Debug)]
struct Held {
    name: String,
    ip: String,
    ctr: Option<String>,
    /// The container's state as the worker last saw it change.
    ctr_state: ContainerState,
    /// An RPC that changes this pod is under way: its state is unknown.
    busy: bool,
}

#[derive(Default)]
struct Counters {
    pods_started: AtomicU64,
    ctrs_started: AtomicU64,
    execs: AtomicU64,
    pods_removed: AtomicU64,
    /// RPCs that failed because their daemon was killed.
    outage_failures: AtomicU64,
    /// Pods or containers an interrupted RPC made, found after the restart.
    adopted: AtomicU64,
    errors: AtomicU64,
    lost: AtomicU64,
    abandoned: AtomicU64,
    restarts: AtomicU64,
    verified: AtomicU64,
}

struct Shared {
    life: watch::Sender<Life>,
    held: Mutex<HashMap<String, Held>>,
    n: Counters,
    /// The first error messages (errors and losses).
    messages: Mutex<Vec<String>>,
    /// Every pod id, pod IP and container id the run made (for the leak check).
    pod_ids: Mutex<BTreeSet<String>>,
    pod_ips: Mutex<BTreeSet<String>>,
    ctr_ids: Mutex<BTreeSet<String>>,
    /// Each worker's current step, to name the stuck ones.
    steps: Mutex<Vec<String>>,
    daemon_pid: AtomicU32,
    stop: AtomicBool,
    run_tag: String,
    log_dir: PathBuf,
    prefix: String,
    dwell: Duration,
}

/// The outcome of one RPC.
enum Try<T> {
    Done(T),
    /// Failed because the daemon it went to was killed.
    Outage,
    /// Failed for another reason (already counted and reported).
    Failed,
}

impl Shared {
    fn error(&self, msg: String) {
        self.n.errors.fetch_add(1, Ordering::Relaxed);
        self.note(format!("error: {msg}"));
    }

    fn lost(&self, msg: String) {
        self.n.lost.fetch_add(1, Ordering::Relaxed);
        self.note(format!("LOST: {msg}"));
    }

    fn note(&self, msg: String) {
        eprintln!("[{}] {msg}", stamp());
        let mut m = self.messages.lock().unwrap();
        if m.len() < 100 {
            m.push(msg);
        }
    }

    fn step(&self, w: usize, s: String) {
        self.steps.lock().unwrap()[w] = s;
    }

    /// The daemon once it is up (and checked after a restart).
    async fn up(&self) -> Life {
        let mut rx = self.life.subscribe();
        let life = rx
            .wait_for(|l| l.up)
            .await
            .expect("the life sender lives as long as this");
        life.clone()
    }

    /// Whether daemon generation `generation` is down or gone.
    fn gone(&self, generation: u64) -> bool {
        let l = self.life.borrow();
        l.generation != generation || !l.up
    }

    /// One RPC of worker `w` against the current daemon.
    async fn rpc<T, F, Fut>(&self, w: usize, what: &str, f: F) -> Try<T>
    where
        F: FnOnce(CriClient) -> Fut,
        Fut: Future<Output = Result<T, tonic::Status>>,
    {
        self.step(w, what.to_string());
        let life = self.up().await;
        let res = tokio::time::timeout(RPC_LIMIT, f(life.client)).await;
        match res {
            Ok(Ok(v)) => Try::Done(v),
            Ok(Err(_)) if self.gone(life.generation) => {
                self.n.outage_failures.fetch_add(1, Ordering::Relaxed);
                Try::Outage
            }
            Ok(Err(s)) => {
                self.error(format!(
                    "worker {w}: {what}: {:?}: {}",
                    s.code(),
                    s.message()
                ));
                Try::Failed
            }
            Err(_) => {
                self.error(format!(
                    "worker {w}: {what}: no answer within {RPC_LIMIT:?} (hang)"
                ));
                Try::Failed
            }
        }
    }

    /// Retries an RPC with no lasting effect (a read, or one that is
    /// idempotent) through outages, up to [`MAX_FAILURES`] other failures.
    async fn retried<T, F, Fut>(&self, w: usize, what: &str, f: F) -> Option<T>
    where
        F: Fn(CriClient) -> Fut,
        Fut: Future<Output = Result<T, tonic::Status>>,
    {
        let mut failures = 0;
        loop {
            match self.rpc(w, what, &f).await {
                Try::Done(v) => return Some(v),
                Try::Outage => continue,
                Try::Failed => {
                    failures += 1;
                    if failures >= MAX_FAILURES {
                        return None;
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }

    fn set_busy(&self, pod: &str, busy: bool) {
        if let Some(h) = self.held.lock().unwrap().get_mut(pod) {
            h.busy = busy;
        }
    }

    fn update(&self, pod: &str, f: impl FnOnce(&mut Held)) {
        if let Some(h) = self.held.lock().unwrap().get_mut(pod) {
            f(h);
            h.busy = false;
        }
    }
}

/// Seconds since the epoch, with millis: the prefix of progress lines on stderr.
fn stamp() -> String {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!("{}.{:03}", d.as_secs(), d.subsec_millis())
}

fn ns_options(shared_pid: bool) -> NamespaceOption {
    NamespaceOption {
        network: NamespaceMode::Pod as i32,
        ipc: NamespaceMode::Pod as i32,
        pid: if shared_pid {
            NamespaceMode::Pod as i32
        } else {
            NamespaceMode::Container as i32
        },
        ..Default::default()
    }
}

fn pod_config(sh: &Shared, name: &str, shared_pid: bool) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.into(),
            uid: format!("{}-{name}", sh.run_tag),
            namespace: "soak".into(),
            attempt: 0,
        }),
        hostname: name.into(),
        log_directory: sh.log_dir.join(name).display().to_string(),
        labels: HashMap::from([
            ("berth-soak".into(), sh.run_tag.clone()),
            ("soak-pod".into(), name.into()),
        ]),
        linux: Some(LinuxPodSandboxConfig {
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(ns_options(shared_pid)),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn ctr_config(name: &str, shared_pid: bool) -> ContainerConfig {
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: "main".into(),
            attempt: 0,
        }),
        image: Some(ImageSpec {
            image: IMAGE.into(),
            ..Default::default()
        }),
        command: vec!["sh".into(), "-c".into(), SCRIPT.into()],
        log_path: "main/0.log".into(),
        labels: HashMap::from([("soak-ctr".into(), name.into())]),
        linux: Some(LinuxContainerConfig {
            security_context: Some(LinuxContainerSecurityContext {
                namespace_options: Some(ns_options(shared_pid)),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The pod named `name`, if the daemon lists it.
async fn find_pod(sh: &Shared, w: usize, name: &str) -> Option<Option<PodSandbox>> {
    let name = name.to_string();
    sh.retried(w, "ListPodSandbox (find)", |mut c| {
        let name = name.clone();
        async move {
            c.runtime
                .list_pod_sandbox(ListPodSandboxRequest {
                    filter: Some(PodSandboxFilter {
                        label_selector: HashMap::from([("soak-pod".into(), name)]),
                        ..Default::default()
                    }),
                })
                .await
                .map(|r| r.into_inner().items.into_iter().next())
        }
    })
    .await
}

/// The container labelled `name` in `pod`, if the daemon lists it.
async fn find_ctr(sh: &Shared, w: usize, pod: &str, name: &str) -> Option<Option<Container>> {
    let (pod, name) = (pod.to_string(), name.to_string());
    sh.retried(w, "ListContainers (find)", |mut c| {
        let (pod, name) = (pod.clone(), name.clone());
        async move {
            c.runtime
                .list_containers(ListContainersRequest {
                    filter: Some(ContainerFilter {
                        pod_sandbox_id: pod,
                        label_selector: HashMap::from([("soak-ctr".into(), name)]),
                        ..Default::default()
                    }),
                })
                .await
                .map(|r| r.into_inner().containers.into_iter().next())
        }
    })
    .await
}

async fn ctr_state(sh: &Shared, w: usize, ctr: &str) -> Option<ContainerStatus> {
    let ctr = ctr.to_string();
    sh.retried(w, "ContainerStatus", |mut c| {
        let ctr = ctr.clone();
        async move {
            c.runtime
                .container_status(ContainerStatusRequest {
                    container_id: ctr,
                    verbose: false,
                })
                .await
                .map(|r| r.into_inner().status.unwrap_or_default())
        }
    })
    .await
}

/// RunPodSandbox until the pod exists; None: given up.
async fn run_pod(sh: &Shared, w: usize, name: &str, pc: &PodSandboxConfig) -> Option<String> {
    let mut failures = 0;
    loop {
        let pc2 = pc.clone();
        let r = sh
            .rpc(w, "RunPodSandbox", |mut c| async move {
                c.runtime
                    .run_pod_sandbox(RunPodSandboxRequest {
                        config: Some(pc2),
                        runtime_handler: String::new(),
                    })
                    .await
                    .map(|r| r.into_inner().pod_sandbox_id)
            })
            .await;
        match r {
            Try::Done(id) => return Some(id),
            Try::Outage => {}
            Try::Failed => {
                failures += 1;
                if failures >= MAX_FAILURES {
                    return None;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
        // Did it happen before the daemon died (or before it failed)?
        match find_pod(sh, w, name).await? {
            Some(p) if p.state == PodSandboxState::SandboxReady as i32 => {
                sh.n.adopted.fetch_add(1, Ordering::Relaxed);
                return Some(p.id);
            }
            // Half made and not ready: the kubelet removes it and runs a new one.
            Some(p) => {
                remove_pod(sh, w, &p.id).await;
            }
            None => {}
        }
    }
}

/// StopPodSandbox + RemovePodSandbox (both idempotent), through outages.
async fn remove_pod(sh: &Shared, w: usize, pod: &str) -> bool {
    let p = pod.to_string();
    let stopped = sh
        .retried(w, "StopPodSandbox", |mut c| {
            let p = p.clone();
            async move {
                c.runtime
                    .stop_pod_sandbox(StopPodSandboxRequest { pod_sandbox_id: p })
                    .await
                    .map(|_| ())
            }
        })
        .await
        .is_some();
    let removed = sh
        .retried(w, "RemovePodSandbox", |mut c| {
            let p = p.clone();
            async move {
                c.runtime
                    .remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: p })
                    .await
                    .map(|_| ())
            }
        })
        .await
        .is_some();
    stopped && removed
}

/// One pod's life; false when it had to be given up.
async fn cycle(sh: &Shared, w: usize, iter: u64) -> bool {
    let name = format!("w{w}-{iter}");
    let shared_pid = iter % 2 == 1;
    let pc = pod_config(sh, &name, shared_pid);
    if let Err(e) = std::fs::create_dir_all(&pc.log_directory) {
        sh.error(format!("worker {w}: creating {}: {e}", pc.log_directory));
    }
    let Some(pod) = run_pod(sh, w, &name, &pc).await else {
        sh.n.abandoned.fetch_add(1, Ordering::Relaxed);
        return false;
    };
    sh.pod_ids.lock().unwrap().insert(pod.clone());
    sh.n.pods_started.fetch_add(1, Ordering::Relaxed);
    let ok = life_of(sh, w, &name, &pod, &pc, shared_pid).await;
    // Teardown, whatever happened above.
    sh.set_busy(&pod, true);
    let removed = remove_pod(sh, w, &pod).await;
    sh.held.lock().unwrap().remove(&pod);
    if removed {
        sh.n.pods_removed.fetch_add(1, Ordering::Relaxed);
    }
    if !(ok && removed) {
        sh.n.abandoned.fetch_add(1, Ordering::Relaxed);
    }
    ok && removed
}

/// From a running pod to a stopped and removed container.
async fn life_of(
    sh: &Shared,
    w: usize,
    name: &str,
    pod: &str,
    pc: &PodSandboxConfig,
    shared_pid: bool,
) -> bool {
    let p = pod.to_string();
    let Some(status) = sh
        .retried(w, "PodSandboxStatus", |mut c| {
            let p = p.clone();
            async move {
                c.runtime
                    .pod_sandbox_status(PodSandboxStatusRequest {
                        pod_sandbox_id: p,
                        verbose: false,
                    })
                    .await
                    .map(|r| r.into_inner().status.unwrap_or_default())
            }
        })
        .await
    else {
        return false;
    };
    let ip = status.network.unwrap_or_default().ip;
    if !ip.starts_with(&sh.prefix) {
        sh.error(format!(
            "worker {w}: pod {name}: IP {ip:?} not in the test network"
        ));
    }
    sh.pod_ips.lock().unwrap().insert(ip.clone());
    sh.held.lock().unwrap().insert(
        pod.to_string(),
        Held {
            name: name.to_string(),
            ip,
            ctr: None,
            ctr_state: ContainerState::ContainerCreated,
            busy: false,
        },
    );

    // CreateContainer; after an outage or a failure, look for it.
    sh.set_busy(pod, true);
    let mut failures = 0;
    let ctr = loop {
        let (p, pc2, cc) = (pod.to_string(), pc.clone(), ctr_config(name, shared_pid));
        let r = sh
            .rpc(w, "CreateContainer", |mut c| async move {
                c.runtime
                    .create_container(CreateContainerRequest {
                        pod_sandbox_id: p,
                        config: Some(cc),
                        sandbox_config: Some(pc2),
                    })
                    .await
                    .map(|r| r.into_inner().container_id)
            })
            .await;
        match r {
            Try::Done(id) => break id,
            Try::Outage => {}
            Try::Failed => {
                failures += 1;
                if failures >= MAX_FAILURES {
                    return false;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
        match find_ctr(sh, w, pod, name).await {
            None => return false,
            Some(Some(c)) => {
                sh.n.adopted.fetch_add(1, Ordering::Relaxed);
                break c.id;
            }
            Some(None) => {}
        }
    };
    sh.ctr_ids.lock().unwrap().insert(ctr.clone());
    sh.update(pod, |h| h.ctr = Some(ctr.clone()));

    // StartContainer; after an outage, ContainerStatus says whether it ran.
    sh.set_busy(pod, true);
    let mut failures = 0;
    loop {
        let id = ctr.clone();
        let r = sh
            .rpc(w, "StartContainer", |mut c| async move {
                c.runtime
                    .start_container(StartContainerRequest { container_id: id })
                    .await
                    .map(|_| ())
            })
            .await;
        match r {
            Try::Done(()) => break,
            Try::Outage => {}
            Try::Failed => {
                failures += 1;
                if failures >= MAX_FAILURES {
                    return false;
                }
            }
        }
        let Some(s) = ctr_state(sh, w, &ctr).await else {
            return false;
        };
        if s.state == ContainerState::ContainerRunning as i32 {
            sh.n.adopted.fetch_add(1, Ordering::Relaxed);
            break;
        }
        if s.state != ContainerState::ContainerCreated as i32 {
            sh.lost(format!(
                "worker {w}: {name}: container {ctr} after an interrupted start: {s:?}"
            ));
            return false;
        }
    }
    sh.update(pod, |h| h.ctr_state = ContainerState::ContainerRunning);
    sh.n.ctrs_started.fetch_add(1, Ordering::Relaxed);

    // ExecSync: a read, retried.
    let id = ctr.clone();
    let want = format!("soak {name}\n");
    let r = sh
        .retried(w, "ExecSync", |c| {
            let (id, want) = (id.clone(), want.clone());
            async move {
                let mut c = c;
                berth_e2e::pods::exec(&mut c, &id, &["echo", want.trim_end()], 10).await
            }
        })
        .await;
    match r {
        Some(r) if r.exit_code == 0 && r.stdout == want.as_bytes() => {
            sh.n.execs.fetch_add(1, Ordering::Relaxed);
        }
        Some(r) => sh.error(format!("worker {w}: {name}: ExecSync answered {r:?}")),
        None => return false,
    }
    tokio::time::sleep(sh.dwell).await;

    // StopContainer and RemoveContainer: idempotent, retried.
    sh.set_busy(pod, true);
    let id = ctr.clone();
    let stopped = sh
        .retried(w, "StopContainer", |mut c| {
            let id = id.clone();
            async move {
                c.runtime
                    .stop_container(StopContainerRequest {
                        container_id: id,
                        timeout: GRACE_S,
                    })
                    .await
                    .map(|_| ())
            }
        })
        .await;
    if stopped.is_none() {
        return false;
    }
    sh.update(pod, |h| h.ctr_state = ContainerState::ContainerExited);
    let s = ctr_state(sh, w, &ctr).await;
    match s {
        Some(s) if s.state == ContainerState::ContainerExited as i32 => {}
        Some(s) => sh.error(format!("worker {w}: {name}: after StopContainer: {s:?}")),
        None => return false,
    }
    sh.set_busy(pod, true);
    let removed = sh
        .retried(w, "RemoveContainer", |mut c| {
            let id = ctr.clone();
            async move {
                c.runtime
                    .remove_container(RemoveContainerRequest { container_id: id })
                    .await
                    .map(|_| ())
            }
        })
        .await;
    if removed.is_none() {
        return false;
    }
    sh.update(pod, |h| h.ctr = None);
    true
}

async fn worker(sh: Arc<Shared>, w: usize) {
    let mut iter = 0;
    while !sh.stop.load(Ordering::Relaxed) {
        cycle(&sh, w, iter).await;
        iter += 1;
    }
    sh.step(w, "done".into());
}

/// Checks, after a restart, every pod noted before the kill.
async fn verify(sh: &Shared, c: &mut CriClient, noted: &BTreeMap<String, Held>) {
    for (pod, h) in noted {
        let s = c
            .runtime
            .pod_sandbox_status(PodSandboxStatusRequest {
                pod_sandbox_id: pod.clone(),
                verbose: false,
            })
            .await
            .map(|r| r.into_inner().status.unwrap_or_default());
        match s {
            Ok(s) => {
                let ip = s.network.unwrap_or_default().ip;
                if s.state != PodSandboxState::SandboxReady as i32 || ip != h.ip {
                    sh.lost(format!(
                        "pod {} ({pod}) after restart: state {}, IP {ip:?} (was READY, {:?})",
                        h.name, s.state, h.ip
                    ));
                }
            }
            Err(e) => sh.lost(format!(
                "pod {} ({pod}) after restart: {:?}: {}",
                h.name,
                e.code(),
                e.message()
            )),
        }
        let Some(ctr) = &h.ctr else { continue };
        let want = h.ctr_state;
        match berth_e2e::pods::status(c, ctr).await {
            Ok(s) if s.state == want as i32 => {}
            Ok(s) => sh.lost(format!(
                "container of {} ({ctr}) after restart: {s:?}, want {want:?}",
                h.name
            )),
            Err(e) => sh.lost(format!(
                "container of {} ({ctr}) after restart: {:?}: {}",
                h.name,
                e.code(),
                e.message()
            )),
        }
        if want == ContainerState::ContainerRunning {
            match berth_e2e::pods::exec(c, ctr, &["true"], 10).await {
                Ok(r) if r.exit_code == 0 => {}
                other => sh.lost(format!(
                    "ExecSync in {} ({ctr}) after restart: {other:?}",
                    h.name
                )),
            }
        }
        sh.n.verified.fetch_add(1, Ordering::Relaxed);
    }
}

/// Kills berthd every `every` until told to stop; returns the daemon.
async fn killer(sh: Arc<Shared>, mut d: Berthd, every: Duration, end: Instant) -> Berthd {
    if every.is_zero() {
        return d;
    }
    loop {
        let next = Instant::now() + every;
        if next >= end {
            return d;
        }
        tokio::time::sleep_until(next.into()).await;
        if sh.stop.load(Ordering::Relaxed) {
            return d;
        }
        let pid = d.pid().expect("berthd runs") as i32;
        // Under the lock: no worker starts changing a noted pod before the kill.
        let noted: BTreeMap<String, Held> = {
            let held = sh.held.lock().unwrap();
            sh.life.send_modify(|l| l.up = false);
            sh.daemon_pid.store(0, Ordering::Relaxed);
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
            held.iter()
                .filter(|(_, h)| !h.busy)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        };
        // Reaps it (a second SIGKILL to a dead process is harmless).
        if let Err(e) = d.kill9().await {
            fatal(&d, &format!("kill -9 of berthd: {e:#}"));
        }
        eprintln!(
            "[{}] killed berthd (pid {pid}); {} pods noted",
            stamp(),
            noted.len()
        );
        if let Err(e) = d.restart().await {
            fatal(&d, &format!("restart of berthd: {e:#}"));
        }
        let mut c = match d.client().await {
            Ok(c) => c,
            Err(e) => fatal(&d, &format!("connecting to the restarted berthd: {e:#}")),
        };
        verify(&sh, &mut c, &noted).await;
        sh.n.restarts.fetch_add(1, Ordering::Relaxed);
        sh.daemon_pid
            .store(d.pid().unwrap_or_default(), Ordering::Relaxed);
        eprintln!(
            "[{}] berthd restarted (pid {}); noted pods checked",
            stamp(),
            d.pid().unwrap_or_default()
        );
        sh.life.send_modify(|l| {
            l.generation += 1;
            l.up = true;
            l.client = c;
        });
    }
}

fn fatal(d: &Berthd, msg: &str) -> ! {
    let log = d.log_text();
    let tail: Vec<&str> = log.lines().rev().take(30).collect();
    eprintln!(
        "soak: {msg}\nberthd log ends with:\n{}",
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    );
    // The fixtures' Drop impls do not run on exit: clean up by hand.
    berth_e2e::cleanup::reap_leftovers(d.config.dir.path());
    if let Some(bridge) = BRIDGE.get() {
        let _ = std::process::Command::new("ip")
            .args(["link", "del", bridge])
            .status();
    }
    let _ = std::fs::remove_dir_all(d.config.dir.path());
    std::process::exit(2)
}

/// VmRSS of `pid` in kB.
fn rss_kb(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn mib(kb: u64) -> String {
    format!("{:.1} MiB", kb as f64 / 1024.0)
}

fn entries(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .collect()
}

fn cgroup_mounts() -> Vec<PathBuf> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter(|l| {
            matches!(
                l.split(" - ").nth(1).and_then(|t| t.split(' ').next()),
                Some("cgroup" | "cgroup2")
            )
        })
        .filter_map(|l| l.split(' ').nth(4))
        .map(PathBuf::from)
        .collect()
}

/// Names of the dirs under `berth/` (the default cgroup parent) of every hierarchy.
fn berth_cgroups() -> BTreeSet<(PathBuf, String)> {
    let mut found = BTreeSet::new();
    for m in cgroup_mounts() {
        for e in entries(&m.join("berth")) {
            if e.is_dir()
                && let Some(n) = e.file_name().and_then(|n| n.to_str())
            {
                found.insert((m.clone(), n.to_string()));
            }
        }
    }
    found
}

/// Live `berth-monitor`s naming `state`, and `berth-pod-init`s chrooted
/// below it. A "monitor" whose parent is one is a container's init that
/// libcontainer cloned and that never started (it runs the monitor's image
/// until the start): listed third.
fn pod_processes(state: &Path) -> (Vec<String>, Vec<String>, Vec<String>) {
    let needle = state.to_string_lossy().into_owned();
    let (mut monitors, mut inits) = (vec![], vec![]);
    for e in entries(Path::new("/proc")) {
        let Some(pid) = e
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(e.join("stat")) else {
            continue;
        };
        let Some((comm, rest)) = stat.split_once(" (").and_then(|(_, r)| r.rsplit_once(") "))
        else {
            continue;
        };
        if rest.starts_with('Z') {
            continue;
        }
        let cmd = std::fs::read(e.join("cmdline"))
            .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
            .unwrap_or_default();
        let ppid: i32 = rest
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        if cmd.contains("berth-monitor") && cmd.contains(&needle) {
            monitors.push((pid, ppid, cmd));
        } else if comm == "berth-pod-init" {
            let root = std::fs::read_link(e.join("root")).unwrap_or_default();
            if root.starts_with(&needle) {
                inits.push(format!("{pid} (root {})", root.display()));
            }
        }
    }
    let pids: BTreeSet<i32> = monitors.iter().map(|m| m.0).collect();
    let (unstarted, monitors): (Vec<_>, Vec<_>) =
        monitors.into_iter().partition(|m| pids.contains(&m.1));
    let fmt = |v: Vec<(i32, i32, String)>| {
        v.into_iter()
            .map(|(pid, ppid, cmd)| format!("{pid} (parent {ppid}) {cmd}"))
            .collect()
    };
    (fmt(monitors), inits, fmt(unstarted))
}

/// Everything the run may have left, by kind.
#[derive(Default)]
struct Leftovers {
    pods_listed: Vec<String>,
    ctrs_listed: Vec<String>,
    net: Leaks,
    mounts: Vec<PathBuf>,
    pod_dirs: Vec<PathBuf>,
    monitor_dirs: Vec<PathBuf>,
    bundles: Vec<PathBuf>,
    uppers: Vec<PathBuf>,
    cgroups: Vec<PathBuf>,
    monitors: Vec<String>,
    inits: Vec<String>,
    unstarted: Vec<String>,
}

impl Leftovers {
    fn total(&self) -> usize {
        let n = &self.net;
        self.pods_listed.len()
            + self.ctrs_listed.len()
            + n.veths.len()
            + n.ip_files.len()
            + n.nsfs_mounts.len()
            + n.iptables.len()
            + n.cni_results.len()
            + self.mounts.len()
            + self.pod_dirs.len()
            + self.monitor_dirs.len()
            + self.bundles.len()
            + self.uppers.len()
            + self.cgroups.len()
            + self.monitors.len()
            + self.inits.len()
            + self.unstarted.len()
    }
}

async fn leftovers(
    sh: &Shared,
    d: &Berthd,
    net: &TestNet,
    cgroups_before: &BTreeSet<(PathBuf, String)>,
) -> Leftovers {
    let mut l = Leftovers::default();
    if let Ok(mut c) = d.client().await {
        if let Ok(r) = c
            .runtime
            .list_pod_sandbox(ListPodSandboxRequest::default())
            .await
        {
            l.pods_listed = r
                .into_inner()
                .items
                .into_iter()
                .map(|p| format!("{} {:?}", p.id, p.metadata.map(|m| m.name)))
                .collect();
        }
        if let Ok(r) = c
            .runtime
            .list_containers(ListContainersRequest::default())
            .await
        {
            l.ctrs_listed = r
                .into_inner()
                .containers
                .into_iter()
                .map(|c| format!("{} pod {}", c.id, c.pod_sandbox_id))
                .collect();
        }
    }
    let ids: Vec<String> = sh.pod_ids.lock().unwrap().iter().cloned().collect();
    let ips: Vec<String> = sh.pod_ips.lock().unwrap().iter().cloned().collect();
    let (state, root) = (&d.config.state, &d.config.root);
    l.net = net.leaks(state, &ids, &ips);
    let favordynmods = state.join("cgroup-favordynmods");
    l.mounts = mounts_under(state);
    l.mounts.extend(mounts_under(root));
    l.mounts.retain(|m| !m.starts_with(&favordynmods));
    l.pod_dirs = entries(&state.join("pods"));
    l.monitor_dirs = entries(&state.join("monitors"));
    l.bundles = entries(&state.join("containers"));
    l.bundles.extend(entries(&state.join("containers-trash")));
    l.uppers = entries(&root.join("containers"));
    l.uppers.extend(entries(&root.join("containers-trash")));
    // Cgroups under berth/ that were not there before and are ours: a
    // container this run knew, one whose dirs are left (a create cut short
    // by a kill), or one its daemon logged. Other daemons on this host use
    // berth/ too.
    let mut ctrs = sh.ctr_ids.lock().unwrap().clone();
    ctrs.extend(
        l.bundles
            .iter()
            .chain(&l.uppers)
            .filter_map(|p| p.file_name()?.to_str().map(str::to_string)),
    );
    let log = d.log_text();
    l.cgroups = berth_cgroups()
        .difference(cgroups_before)
        .filter(|(_, n)| ctrs.contains(n) || log.contains(n.as_str()))
        .map(|(m, n)| m.join("berth").join(n))
        .collect();
    (l.monitors, l.inits, l.unstarted) = pod_processes(state);
    l
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if cli.workers == 0 || cli.minutes <= 0.0 {
        bail!("--workers and --minutes must be positive");
    }
    // One client thread, as bench-pods: on a 2-core host the daemon under
    // test gets the CPUs.
    let ok = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(run(cli))?;
    if !ok {
        std::process::exit(1);
    }
    Ok(())
}

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
    c.image
        .pull_image(PullImageRequest {
            image: Some(ImageSpec {
                image: IMAGE.into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .map_err(|s| anyhow!("PullImage {IMAGE}: {s:?}"))?;

    let run_tag = format!("soak{}", std::process::id());
    let (life, _) = watch::channel(Life {
        generation: 0,
        up: true,
        client: c.clone(),
    });
    let sh = Arc::new(Shared {
        life,
        held: Mutex::new(HashMap::new()),
        n: Counters::default(),
        messages: Mutex::new(vec![]),
        pod_ids: Mutex::new(BTreeSet::new()),
        pod_ips: Mutex::new(BTreeSet::new()),
        ctr_ids: Mutex::new(BTreeSet::new()),
        steps: Mutex::new(vec![String::new(); cli.workers]),
        daemon_pid: AtomicU32::new(d.pid().unwrap_or_default()),
        stop: AtomicBool::new(false),
        run_tag,
        log_dir: dir.join("logs"),
        prefix: net.prefix.clone(),
        dwell: Duration::from_millis(cli.dwell_ms),
    });

    // Warm-up: one pod per worker, all at once, not counted; then the idle RSS.
    let warm: Vec<_> = (0..cli.workers)
        .map(|w| {
            let sh = sh.clone();
            tokio::spawn(async move { cycle(&sh, w, 1_000_000).await })
        })
        .collect();
    for t in warm {
        if !t.await? {
            let msgs = sh.messages.lock().unwrap().join("\n");
            fatal(&d, &format!("warm-up failed:\n{msgs}"));
        }
    }
    for n in [
        &sh.n.pods_started,
        &sh.n.ctrs_started,
        &sh.n.execs,
        &sh.n.pods_removed,
        &sh.n.adopted,
    ] {
        n.store(0, Ordering::Relaxed);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let pid0 = d.pid().unwrap_or_default();
    let rss_start = rss_kb(pid0).unwrap_or_default();
    println!(
        "warm-up done: {} pods; berthd RSS {} (idle)",
        cli.workers,
        mib(rss_start)
    );

    // The churn.
    let started = Instant::now();
    let end = started + Duration::from_secs_f64(cli.minutes * 60.0);
    let rss_max = Arc::new(AtomicU64::new(rss_start));
    let sampler = {
        let (sh, rss_max) = (sh.clone(), rss_max.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let pid = sh.daemon_pid.load(Ordering::Relaxed);
                if pid != 0
                    && let Some(kb) = rss_kb(pid)
                {
                    rss_max.fetch_max(kb, Ordering::Relaxed);
                }
            }
        })
    };
    let workers: Vec<_> = (0..cli.workers)
        .map(|w| tokio::spawn(worker(sh.clone(), w)))
        .collect();
    let killer = tokio::spawn(killer(
        sh.clone(),
        d,
        Duration::from_secs(cli.kill_every),
        end,
    ));
    let progress = {
        let sh = sh.clone();
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
    };
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
    tokio::time::sleep(Duration::from_secs(2)).await;
    let pid_end = d.pid().unwrap_or_default();
    let rss_end = rss_kb(pid_end).unwrap_or_default();
    rss_max.fetch_max(rss_end, Ordering::Relaxed);
    let deadline = Instant::now() + SETTLE;
    let left = loop {
        let l = leftovers(&sh, &d, &net, &cgroups_before).await;
        if l.total() == 0 || Instant::now() > deadline {
            break l;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    if let Some(to) = &cli.keep_log {
        std::fs::copy(&d.config.log, to)
            .with_context(|| format!("copying berthd's log to {}", to.display()))?;
    }

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
    let rows: [(&str, usize); 17] = [
        ("pods still listed", left.pods_listed.len()),
        ("containers still listed", left.ctrs_listed.len()),
        ("mounts", left.mounts.len()),
        ("veths", net_l.veths.len()),
        ("IP files", net_l.ip_files.len()),
        ("netns pins (nsfs mounts)", net_l.nsfs_mounts.len()),
        ("iptables rules", net_l.iptables.len()),
        ("cached CNI results", net_l.cni_results.len()),
        ("pod dirs", left.pod_dirs.len()),
        ("monitor dirs", left.monitor_dirs.len()),
        ("bundles", left.bundles.len()),
        ("upper dirs", left.uppers.len()),
        ("cgroup dirs", left.cgroups.len()),
        ("monitor processes", left.monitors.len()),
        ("pod-init processes", left.inits.len()),
        ("unstarted container inits", left.unstarted.len()),
        ("total", left.total()),
    ];
    for (what, count) in rows {
        println!("  {what:<30} {count}");
    }
    println!(
        "berthd RSS: start {} (first daemon, idle after warm-up), end {} (last daemon, idle), max seen {}",
        mib(rss_start),
        mib(rss_end),
        mib(rss_max.load(Ordering::Relaxed))
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
    drop(d);
    drop(net);
    drop(registry);
    Ok(ok)
}
