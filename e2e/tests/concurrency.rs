//! Concurrency: 50 pods (CNI network, one busybox container each) created,
//! started, stopped and removed in parallel through the CRI socket, three
//! rounds, with no RPC failing, no deadlock and nothing left on the host
//! after each round; and requests on one pod never waiting for slow work on
//! another (a StopContainer waiting out its grace period, a long ExecSync).
//! Real berthd, real CNI plugins, busybox from the registry fixture. Needs root.
//!
//! Timeouts here only detect hangs: nothing asserts how fast anything is.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_api::v1::*;
use berth_cgroup::{Cgroup, Layout};
use berth_e2e::cleanup::{mounts_below, mounts_under};
use berth_e2e::client::CriClient;
use berth_e2e::net::{self, NetEnv};
use berth_e2e::pods::*;
use tokio::sync::Barrier;

const PODS: usize = 50;
const ROUNDS: usize = 3;
/// A round that has not finished by then is stuck (a hang detector, not a goal).
const ROUND_LIMIT: Duration = Duration::from_secs(240);
/// How long what goes away after an RPC's answer (monitor processes, the
/// trash emptied off the request path) may take to go: a hang detector too.
const SETTLE: Duration = Duration::from_secs(30);
/// Leaves at once on SIGTERM (the graceful stop path), and leaves no process behind.
const GRACEFUL: &str = "trap 'kill $p; exit 0' TERM; sleep 1000 & p=$!; wait $p";
/// The kubelet's default grace period.
const GRACE_S: i64 = 30;

/// Each pod task's current step, to name the stuck ones when a round hangs.
/// Counts the tasks that failed before the pods were all up.
#[derive(Clone)]
struct Progress(Arc<Mutex<Vec<&'static str>>>, Arc<AtomicUsize>);

impl Progress {
    fn new(n: usize) -> Progress {
        Progress(
            Arc::new(Mutex::new(vec!["not started"; n])),
            Arc::new(AtomicUsize::new(0)),
        )
    }
    fn set(&self, i: usize, step: &'static str) {
        self.0.lock().unwrap()[i] = step;
    }
    fn failed(&self) {
        self.1.fetch_add(1, Ordering::Relaxed);
    }
    fn failures(&self) -> usize {
        self.1.load(Ordering::Relaxed)
    }
    /// `pod-<i>: <step>` of every task not done.
    fn stuck(&self) -> Vec<String> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .enumerate()
            .filter(|(_, s)| **s != "done")
            .map(|(i, s)| format!("pod-{i}: {s}"))
            .collect()
    }
}

/// One RPC of task `i`, named in its progress; an error as "step: code: message".
async fn call<T>(
    p: &Progress,
    i: usize,
    step: &'static str,
    f: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, String> {
    p.set(i, step);
    f.await
        .map(|r| r.into_inner())
        .map_err(|s| format!("{step}: {:?}: {}", s.code(), s.message()))
}

/// PID mode POD (a pod init holds the pod's PID namespace) for the pod and its container.
fn shared_pid(pc: &mut PodSandboxConfig, cc: &mut ContainerConfig) {
    let pod_ns = pc
        .linux
        .as_mut()
        .and_then(|l| l.security_context.as_mut())
        .and_then(|s| s.namespace_options.as_mut())
        .unwrap();
    pod_ns.pid = NamespaceMode::Pod as i32;
    let ctr_ns = cc
        .linux
        .as_mut()
        .and_then(|l| l.security_context.as_mut())
        .and_then(|s| s.namespace_options.as_mut())
        .unwrap();
    ctr_ns.pid = NamespaceMode::Pod as i32;
}

/// The `linux.cgroupsPath` of a created container's bundle.
fn cgroups_path(state: &Path, ctr: &str) -> Option<String> {
    let bundle = std::fs::read(state.join("containers").join(ctr).join("config.json")).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bundle).ok()?;
    v["linux"]["cgroupsPath"].as_str().map(str::to_string)
}

/// The dirs of cgroup `path` that exist: in every hierarchy where Berth
/// creates cgroups (berth-cgroup's layout of this host), plus a hybrid
/// host's controller-less cgroup2 mount, which must never hold one either.
fn cgroup_dirs(path: &str) -> Vec<PathBuf> {
    let rel = path.trim_start_matches('/');
    let (false, Some(layout)) = (rel.is_empty(), Layout::detect()) else {
        return vec![];
    };
    let Some(cgroup) = Cgroup::of(&layout, rel) else {
        return vec![];
    };
    let mut dirs: Vec<PathBuf> = cgroup.dirs().into_iter().map(Path::to_path_buf).collect();
    if let Layout::Hybrid { unified, .. } = &layout {
        dirs.push(unified.join(rel));
    }
    dirs.retain(|d| d.is_dir());
    dirs
}

/// Pids in cgroup `path` (from the first hierarchy that has it).
fn cgroup_pids(path: &str) -> Vec<i32> {
    cgroup_dirs(path)
        .iter()
        .find_map(|d| std::fs::read_to_string(d.join("cgroup.procs")).ok())
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

fn cmdline(pid: i32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

/// Live (not zombie) processes of this daemon's pods: `berth-monitor`s whose
/// command line names `state`, and `berth-pod-init`s chrooted below it.
fn pod_processes(state: &Path) -> Vec<String> {
    let found = berth_e2e::procs::pod_processes(state);
    let monitors = found
        .monitors
        .into_iter()
        .map(|(pid, _, cmd)| format!("{pid} {cmd}"));
    let inits = found
        .inits
        .into_iter()
        .map(|i| format!("berth-pod-init {i}"));
    monitors.chain(inits).collect()
}

fn entries(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .collect()
}

/// Mounts under the daemon's dirs (its favordynmods hierarchy is mounted
/// nowhere; the state dir is a mount point of its own, not a pod's).
fn pod_mounts(env: &NetEnv) -> Vec<PathBuf> {
    let mut m = mounts_below(&env.d.config.state);
    m.extend(mounts_under(&env.d.config.root));
    m
}

/// What one pod task made.
#[derive(Default, Clone)]
struct Made {
    pod: String,
    ip: String,
    ctr: String,
    cgroup: Option<String>,
}

/// Asserts that nothing of `made` (or of any pod) is left: at once for
/// what the RPCs' answers promise, within [`SETTLE`] for what goes after
/// them (monitors exiting, the trash emptied in the background).
async fn assert_nothing_left(env: &mut NetEnv, what: &str, made: &[Made]) {
    let pods = list_pods(&mut env.c).await;
    assert!(pods.is_empty(), "{what}: pods still listed: {pods:#?}");
    let ctrs = env
        .c
        .runtime
        .list_containers(ListContainersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .containers;
    assert!(
        ctrs.is_empty(),
        "{what}: containers still listed: {ctrs:#?}"
    );

    let ids: Vec<String> = made.iter().map(|m| m.pod.clone()).collect();
    let ips: Vec<String> = made.iter().map(|m| m.ip.clone()).collect();
    let leaks = env.leaks(&ids, &ips);
    assert!(leaks.is_empty(), "{what}: {leaks:#?}");
    let mounts = pod_mounts(env);
    assert!(mounts.is_empty(), "{what}: mounts {mounts:#?}");
    let state = env.d.config.state.clone();
    let root = env.d.config.root.clone();
    for dir in [
        state.join("pods"),
        state.join("monitors"),
        state.join("containers"),
        root.join("containers"),
    ] {
        let left = entries(&dir);
        assert!(
            left.is_empty(),
            "{what}: left in {}: {left:#?}",
            dir.display()
        );
    }
    let cgroups: Vec<PathBuf> = made
        .iter()
        .filter_map(|m| m.cgroup.as_deref())
        .flat_map(cgroup_dirs)
        .collect();
    assert!(cgroups.is_empty(), "{what}: container cgroups {cgroups:#?}");

    let deadline = Instant::now() + SETTLE;
    loop {
        let procs = pod_processes(&state);
        let trash: Vec<PathBuf> = [
            state.join("containers-trash"),
            root.join("containers-trash"),
        ]
        .iter()
        .flat_map(|d| entries(d))
        .collect();
        if procs.is_empty() && trash.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: still there {SETTLE:?} after the last RPC: processes {procs:#?}, trash {trash:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One pod's life: run (with an IP), create and start a container, wait
/// at `up` until every pod of the round is up, then at `go`, then stop and
/// remove both. Every step is attempted, even after a failure, so that
/// the leak check sees what the daemon does with the rest. Returns what it
/// made and every RPC error.
#[allow(clippy::too_many_arguments)]
async fn pod_life(
    mut c: CriClient,
    i: usize,
    pc: PodSandboxConfig,
    cc: ContainerConfig,
    state: PathBuf,
    p: Progress,
    up: Arc<Barrier>,
    go: Arc<Barrier>,
) -> (Made, Vec<String>) {
    let mut made = Made::default();
    let mut errors = vec![];
    let rt = &mut c.runtime;
    let run = call(
        &p,
        i,
        "RunPodSandbox",
        rt.run_pod_sandbox(RunPodSandboxRequest {
            config: Some(pc.clone()),
            runtime_handler: String::new(),
        }),
    )
    .await;
    match run {
        Ok(r) => made.pod = r.pod_sandbox_id,
        Err(e) => errors.push(e),
    }
    if !made.pod.is_empty() {
        let st = call(
            &p,
            i,
            "PodSandboxStatus",
            rt.pod_sandbox_status(PodSandboxStatusRequest {
                pod_sandbox_id: made.pod.clone(),
                verbose: false,
            }),
        )
        .await;
        match st {
            Ok(r) => made.ip = r.status.and_then(|s| s.network).unwrap_or_default().ip,
            Err(e) => errors.push(e),
        }
        let created = call(
            &p,
            i,
            "CreateContainer",
            rt.create_container(CreateContainerRequest {
                pod_sandbox_id: made.pod.clone(),
                config: Some(cc),
                sandbox_config: Some(pc),
            }),
        )
        .await;
        match created {
            Ok(r) => made.ctr = r.container_id,
            Err(e) => errors.push(e),
        }
    }
    if !made.ctr.is_empty() {
        made.cgroup = cgroups_path(&state, &made.ctr);
        // The leak check looks for this cgroup: it must be findable.
        if made
            .cgroup
            .as_deref()
            .is_none_or(|c| cgroup_dirs(c).is_empty())
        {
            errors.push(format!("no cgroup dir found for {:?}", made.cgroup));
        }
        let started = call(
            &p,
            i,
            "StartContainer",
            rt.start_container(StartContainerRequest {
                container_id: made.ctr.clone(),
            }),
        )
        .await;
        if let Err(e) = started {
            errors.push(e);
        } else {
            let st = call(
                &p,
                i,
                "ContainerStatus",
                rt.container_status(ContainerStatusRequest {
                    container_id: made.ctr.clone(),
                    verbose: false,
                }),
            )
            .await;
            match st.map(|r| r.status.unwrap_or_default()) {
                Ok(s) if s.state == ContainerState::ContainerRunning as i32 => {}
                Ok(s) => errors.push(format!("ContainerStatus after start: {s:?}")),
                Err(e) => errors.push(e),
            }
        }
    }
    if !errors.is_empty() {
        p.failed();
    }
    p.set(i, "waiting for the other pods to be up");
    up.wait().await;
    p.set(i, "waiting for the go");
    go.wait().await;
    if !made.ctr.is_empty() {
        let r = call(
            &p,
            i,
            "StopContainer",
            rt.stop_container(StopContainerRequest {
                container_id: made.ctr.clone(),
                timeout: GRACE_S,
            }),
        )
        .await;
        errors.extend(r.err());
        let r = call(
            &p,
            i,
            "RemoveContainer",
            rt.remove_container(RemoveContainerRequest {
                container_id: made.ctr.clone(),
            }),
        )
        .await;
        errors.extend(r.err());
    }
    if !made.pod.is_empty() {
        let r = call(
            &p,
            i,
            "StopPodSandbox",
            rt.stop_pod_sandbox(StopPodSandboxRequest {
                pod_sandbox_id: made.pod.clone(),
            }),
        )
        .await;
        errors.extend(r.err());
        let r = call(
            &p,
            i,
            "RemovePodSandbox",
            rt.remove_pod_sandbox(RemovePodSandboxRequest {
                pod_sandbox_id: made.pod.clone(),
            }),
        )
        .await;
        errors.extend(r.err());
    }
    p.set(i, "done");
    let errors = errors
        .into_iter()
        .map(|e| format!("pod-{i}: {e}"))
        .collect();
    (made, errors)
}

/// While all pods of a round are up: each is listed READY with its own IP
/// in the test subnet, each container RUNNING, one monitor per pod.
async fn check_all_up(env: &mut NetEnv, round: usize) {
    let pods = list_pods(&mut env.c).await;
    let ready = pods
        .iter()
        .filter(|p| p.state == PodSandboxState::SandboxReady as i32)
        .count();
    assert_eq!(
        (pods.len(), ready),
        (PODS, PODS),
        "round {round}: {pods:#?}"
    );
    let ctrs = env
        .c
        .runtime
        .list_containers(ListContainersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .containers;
    let running = ctrs
        .iter()
        .filter(|c| c.state == ContainerState::ContainerRunning as i32)
        .count();
    assert_eq!(
        (ctrs.len(), running),
        (PODS, PODS),
        "round {round}: {ctrs:#?}"
    );
    let mut ips = vec![];
    for pod in &pods {
        let s = env
            .c
            .runtime
            .pod_sandbox_status(PodSandboxStatusRequest {
                pod_sandbox_id: pod.id.clone(),
                verbose: false,
            })
            .await
            .unwrap()
            .into_inner();
        let ip = s.status.and_then(|s| s.network).unwrap_or_default().ip;
        assert!(ip.starts_with(&env.net.prefix), "round {round}: {ip:?}");
        ips.push(ip);
    }
    ips.sort();
    ips.dedup();
    assert_eq!(
        ips.len(),
        PODS,
        "round {round}: pod IPs not distinct: {ips:?}"
    );
    let procs = pod_processes(&env.d.config.state);
    let monitors = procs.iter().filter(|p| p.contains("berth-monitor")).count();
    assert_eq!(monitors, PODS, "round {round}: monitors");
    let inits = procs
        .iter()
        .filter(|p| p.contains("berth-pod-init"))
        .count();
    assert_eq!(inits, PODS / 2, "round {round}: pod inits (PID mode POD)");
}

#[tokio::test]
async fn fifty_pods_in_parallel_three_rounds_no_failure_no_deadlock_no_leak() {
    let mut env = net::setup(&[BUSYBOX], |_, _| {}).await;
    let state = env.d.config.state.clone();
    for round in 0..ROUNDS {
        let started = Instant::now();
        let p = Progress::new(PODS);
        // Every pod task, and this one, meet when all pods are up and again to tear down.
        let up = Arc::new(Barrier::new(PODS + 1));
        let go = Arc::new(Barrier::new(PODS + 1));
        let mut tasks = Vec::with_capacity(PODS);
        for i in 0..PODS {
            let mut pc = env.pod_config(&format!("r{round}-p{i}"));
            pc.labels.insert("round".into(), round.to_string());
            let mut cc = ctr_config("c", BUSYBOX, GRACEFUL);
            // Every other pod shares one PID namespace (a pod init holds it).
            if i % 2 == 1 {
                shared_pid(&mut pc, &mut cc);
            }
            tasks.push(tokio::spawn(pod_life(
                env.c.clone(),
                i,
                pc,
                cc,
                state.clone(),
                p.clone(),
                up.clone(),
                go.clone(),
            )));
        }
        let aborts: Vec<_> = tasks.iter().map(|t| t.abort_handle()).collect();
        let results = tokio::time::timeout(ROUND_LIMIT, async {
            up.wait().await;
            // Every pod of the round is up at once (unless one failed:
            // the errors are reported after the round).
            if p.failures() == 0 {
                check_all_up(&mut env, round).await;
            }
            go.wait().await;
            let mut out = vec![];
            for t in tasks {
                out.push(t.await.expect("pod task panicked"));
            }
            out
        })
        .await;
        let results = match results {
            Ok(r) => r,
            Err(_) => {
                for a in aborts {
                    a.abort();
                }
                panic!(
                    "round {round} did not finish within {ROUND_LIMIT:?} (deadlock?); stuck: {:#?}",
                    p.stuck()
                );
            }
        };
        let errors: Vec<&String> = results.iter().flat_map(|(_, e)| e).collect();
        assert!(errors.is_empty(), "round {round}: RPCs failed: {errors:#?}");
        let made: Vec<Made> = results.into_iter().map(|(m, _)| m).collect();
        println!(
            "round {round}: {PODS} pods up and down in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        assert_nothing_left(&mut env, &format!("after round {round}"), &made).await;
    }
}

/// The second pod's whole life, with a read of the first pod's stopping
/// container and the lists in the middle (the kubelet's PLEG relists
/// while a pod terminates).
async fn other_pod_life(
    mut c: CriClient,
    pc: PodSandboxConfig,
    stopping: String,
    p: Progress,
) -> Result<(), String> {
    let rt = &mut c.runtime;
    let pod = call(
        &p,
        0,
        "RunPodSandbox",
        rt.run_pod_sandbox(RunPodSandboxRequest {
            config: Some(pc.clone()),
            runtime_handler: String::new(),
        }),
    )
    .await?
    .pod_sandbox_id;
    call(
        &p,
        0,
        "PodSandboxStatus",
        rt.pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: pod.clone(),
            verbose: false,
        }),
    )
    .await?;
    let ctr = call(
        &p,
        0,
        "CreateContainer",
        rt.create_container(CreateContainerRequest {
            pod_sandbox_id: pod.clone(),
            config: Some(ctr_config("quick", BUSYBOX, GRACEFUL)),
            sandbox_config: Some(pc),
        }),
    )
    .await?
    .container_id;
    call(
        &p,
        0,
        "StartContainer",
        rt.start_container(StartContainerRequest {
            container_id: ctr.clone(),
        }),
    )
    .await?;
    p.set(0, "ExecSync");
    let r = exec(&mut c, &ctr, &["echo", "quick"], 10)
        .await
        .map_err(|s| format!("ExecSync: {s:?}"))?;
    if (r.exit_code, r.stdout.as_slice()) != (0, b"quick\n") {
        return Err(format!("ExecSync: {r:?}"));
    }
    let rt = &mut c.runtime;
    let s = call(
        &p,
        0,
        "ContainerStatus",
        rt.container_status(ContainerStatusRequest {
            container_id: ctr.clone(),
            verbose: false,
        }),
    )
    .await?;
    let state = s.status.unwrap_or_default().state;
    if state != ContainerState::ContainerRunning as i32 {
        return Err(format!("ContainerStatus: state {state}"));
    }
    call(
        &p,
        0,
        "ContainerStatus of the first pod's stopping container",
        rt.container_status(ContainerStatusRequest {
            container_id: stopping,
            verbose: false,
        }),
    )
    .await?;
    call(
        &p,
        0,
        "ListContainers",
        rt.list_containers(ListContainersRequest::default()),
    )
    .await?;
    call(
        &p,
        0,
        "ListPodSandbox",
        rt.list_pod_sandbox(ListPodSandboxRequest::default()),
    )
    .await?;
    call(
        &p,
        0,
        "StopContainer",
        rt.stop_container(StopContainerRequest {
            container_id: ctr.clone(),
            timeout: GRACE_S,
        }),
    )
    .await?;
    call(
        &p,
        0,
        "RemoveContainer",
        rt.remove_container(RemoveContainerRequest {
            container_id: ctr.clone(),
        }),
    )
    .await?;
    call(
        &p,
        0,
        "StopPodSandbox",
        rt.stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: pod.clone(),
        }),
    )
    .await?;
    call(
        &p,
        0,
        "RemovePodSandbox",
        rt.remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: pod.clone(),
        }),
    )
    .await?;
    p.set(0, "done");
    Ok(())
}

/// Polls `cond` until it holds; panics with `what` after [`SETTLE`].
async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + SETTLE;
    while !cond() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn requests_on_one_pod_never_wait_for_work_on_another() {
    // Long enough that the other pod's work, even on a loaded CI machine,
    // ends well before it; the test ends the wait itself (SIGKILL from the
    // host) once the other pod is done, so it never waits it out.
    const STOP_TIMEOUT_S: i64 = 120;
    let mut env = net::setup(&[BUSYBOX], |_, _| {}).await;
    let state = env.d.config.state.clone();

    // Pod A: a container that survives SIGTERM, noting it in its log.
    let pa = env.pod_config("slow-stop");
    let a = run_pod_with(&mut env.c, &pa).await;
    let stubborn = create(
        &mut env.c,
        &a,
        &pa,
        ctr_config(
            "stubborn",
            BUSYBOX,
            "trap 'echo got TERM' TERM; while true; do sleep 1 & wait $!; done",
        ),
    )
    .await
    .unwrap();
    start(&mut env.c, &stubborn).await;
    let a_cgroup = cgroups_path(&state, &stubborn).expect("the container's cgroup");
    // Pod C: a running container for a long ExecSync.
    let pc = env.pod_config("long-exec");
    let cpod = run_pod_with(&mut env.c, &pc).await;
    let busy = create(
        &mut env.c,
        &cpod,
        &pc,
        ctr_config("busy", BUSYBOX, "exec sleep 1000"),
    )
    .await
    .unwrap();
    start(&mut env.c, &busy).await;
    let c_cgroup = cgroups_path(&state, &busy).expect("the container's cgroup");

    // A's StopContainer: SIGTERM, then a wait of up to STOP_TIMEOUT_S.
    let mut c1 = env.c.clone();
    let id = stubborn.clone();
    let mut stop = tokio::spawn(async move {
        c1.runtime
            .stop_container(StopContainerRequest {
                container_id: id,
                timeout: STOP_TIMEOUT_S,
            })
            .await
            .map(|_| ())
    });
    let a_log = PathBuf::from(&pa.log_directory).join("stubborn/0.log");
    wait_for("the stubborn container got SIGTERM", || {
        std::fs::read_to_string(&a_log).is_ok_and(|l| l.contains("got TERM"))
    })
    .await;
    // C's ExecSync of a long sleep (no timeout).
    let mut c2 = env.c.clone();
    let id = busy.clone();
    let mut long_exec = tokio::spawn(async move { exec(&mut c2, &id, &["sleep", "987"], 0).await });
    let exec_pid = || {
        cgroup_pids(&c_cgroup)
            .into_iter()
            .find(|p| cmdline(*p).trim() == "sleep 987")
    };
    wait_for("the long exec runs", || exec_pid().is_some()).await;

    // Pod B's whole life while A's stop and C's exec are pending: it must
    // end first (ordering, not timing; the timeout only detects a hang).
    let p = Progress::new(1);
    let b = other_pod_life(
        env.c.clone(),
        env.pod_config("other"),
        stubborn.clone(),
        p.clone(),
    );
    let first = tokio::time::timeout(ROUND_LIMIT, async {
        tokio::select! {
            biased;
            r = b => r.map_err(|e| format!("pod B: {e}")),
            r = &mut stop => Err(format!(
                "pod A's StopContainer returned ({r:?}) while pod B was at {:?}: B waited for A",
                p.stuck()
            )),
            r = &mut long_exec => Err(format!(
                "pod C's ExecSync returned ({r:?}) while pod B was at {:?}",
                p.stuck()
            )),
        }
    })
    .await
    .unwrap_or_else(|_| Err(format!("hung at {:?}", p.stuck())));
    first.unwrap();
    assert!(!stop.is_finished(), "A's stop ended early");
    assert!(!long_exec.is_finished(), "C's exec ended early");

    // End the waits: the host kills A's container and C's exec.
    for pid in cgroup_pids(&a_cgroup) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    let pid = exec_pid().expect("the long exec still runs");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let (stopped, execd) = tokio::time::timeout(SETTLE, async {
        (stop.await.unwrap(), long_exec.await.unwrap())
    })
    .await
    .expect("A's stop or C's exec did not end after the kills");
    stopped.unwrap();
    let r = execd.unwrap();
    assert_ne!(r.exit_code, 0, "{r:?}");
    let s = status(&mut env.c, &stubborn).await.unwrap();
    assert_eq!(s.state, ContainerState::ContainerExited as i32, "{s:?}");

    let mut made = vec![];
    for (pod, ctr, cg) in [(a, stubborn, a_cgroup), (cpod, busy, c_cgroup)] {
        stop_pod(&mut env.c, &pod).await;
        remove_pod(&mut env.c, &pod).await;
        made.push(Made {
            pod,
            ip: String::new(),
            ctr,
            cgroup: Some(cg),
        });
    }
    assert_nothing_left(&mut env, "after the isolation test", &made).await;
}
