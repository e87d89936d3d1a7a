//! Container state from the pod monitors' events (monitor protocol 4,
//! `subscribe`): ListContainers and ContainerStatus answer from berthd's
//! records, which the events keep current, with no monitor round trip per
//! call; a monitor that stops answering gets its containers reported
//! UNKNOWN without stalling any list. Against a real berthd and real
//! monitors; needs root.

use std::time::{Duration, Instant};

use berth_api::v1::*;
use berth_e2e::daemon::BerthdConfig;
use berth_e2e::pods::*;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// A daemon whose monitors log every request they serve (so the test can
/// tell which were asked), with `toml` as its config.
async fn setup_with(toml: &str) -> PodEnv {
    let mut config = BerthdConfig::new().unwrap();
    config.config_toml = Some(toml.to_string());
    config.env.push(("BERTH_MONITOR_TIMING".into(), "1".into()));
    setup_with_config(config, &[BUSYBOX]).await
}

/// The requests of kind `op` the pod's monitor served so far (its timing
/// log: `berth-monitor <pod>: timing <op> <id> <n> us`).
fn served(env: &PodEnv, pod: &str, op: &str) -> usize {
    let log = env
        .d
        .config
        .state
        .join("monitors")
        .join(&pod[..32])
        .join("monitor.log");
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let needle = format!(": timing {op} ");
    text.lines().filter(|l| l.contains(&needle)).count()
}

/// Waits (at most 10 s) until the pod's monitor served an `op`.
async fn wait_served(env: &PodEnv, pod: &str, op: &str) {
    let t0 = Instant::now();
    while served(env, pod, op) == 0 {
        assert!(t0.elapsed() < Duration::from_secs(10), "no {op} served");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An exit reaches ListContainers and ContainerStatus through the event
/// stream: neither asks the monitor (its log shows no `list` or `state`
/// served while they are called over and over).
#[tokio::test]
async fn exits_are_pushed_and_lists_do_not_ask_the_monitor() {
    let mut env = setup_with("").await;
    let (pod, pc) = run_pod(&mut env, "pushed").await;
    let sleeper = running(
        &mut env.c,
        &pod,
        &pc,
        ctr_config("sleeper", BUSYBOX, "exec sleep 1000"),
    )
    .await;
    let quitter = create(
        &mut env.c,
        &pod,
        &pc,
        ctr_config("quitter", BUSYBOX, "sleep 1; exit 3"),
    )
    .await
    .unwrap();
    start(&mut env.c, &quitter).await;
    // berthd is subscribed from the pod's first container on.
    wait_served(&env, &pod, "subscribe").await;
    let asked = served(&env, &pod, "list") + served(&env, &pod, "state");

    let t0 = Instant::now();
    let mut calls = 0;
    let q = loop {
        calls += 1;
        let listed = list_containers(&mut env.c).await;
        let q = listed.iter().find(|c| c.id == quitter).unwrap().clone();
        let s = listed.iter().find(|c| c.id == sleeper).unwrap();
        assert_eq!(s.state, ContainerState::ContainerRunning as i32);
        if q.state == ContainerState::ContainerExited as i32 {
            break q;
        }
        assert!(t0.elapsed() < Duration::from_secs(15), "exit never listed");
        assert_eq!(q.state, ContainerState::ContainerRunning as i32, "{q:?}");
        status(&mut env.c, &quitter).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(calls > 5, "only {calls} lists before the exit: {q:?}");
    let s = status(&mut env.c, &quitter).await.unwrap();
    assert_eq!(
        (s.state, s.exit_code, s.reason.as_str()),
        (ContainerState::ContainerExited as i32, 3, "Error"),
        "{s:?}"
    );
    assert!(s.finished_at > s.started_at, "{s:?}");
    assert_eq!(
        served(&env, &pod, "list") + served(&env, &pod, "state"),
        asked,
        "ListContainers or ContainerStatus asked the monitor"
    );

    stop_pod(&mut env.c, &pod).await;
    remove_pod(&mut env.c, &pod).await;
}

/// SIGCONTs the monitor when the test ends, whatever happened.
struct Stopped(i32);

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = kill(Pid::from_raw(self.0), Signal::SIGCONT);
    }
}

/// A monitor that answers nothing (SIGSTOPped): lists still answer at once
/// from the records; once it has been silent for
/// `monitor_unresponsive_secs`, its running container reads UNKNOWN, and
/// RUNNING again once it answers.
#[tokio::test]
async fn an_unresponsive_monitor_is_marked_without_stalling_lists() {
    let mut env = setup_with("monitor_unresponsive_secs = 2\n").await;
    let (pod, pc) = run_pod(&mut env, "stuck").await;
    let id = running(
        &mut env.c,
        &pod,
        &pc,
        ctr_config("c", BUSYBOX, "exec sleep 1000"),
    )
    .await;
    wait_served(&env, &pod, "subscribe").await;
    let monitor = berth_e2e::procs::monitor_of(&pod).expect("the pod's monitor");
    kill(Pid::from_raw(monitor), Signal::SIGSTOP).unwrap();
    let stopped = Stopped(monitor);

    // Far less than any monitor deadline (5 s): nobody waits for it.
    let quick = Duration::from_secs(2);
    let t0 = Instant::now();
    let state = loop {
        let t = Instant::now();
        let listed = list_containers(&mut env.c).await;
        let pods = list_pods(&mut env.c).await;
        let s = status(&mut env.c, &id).await.unwrap();
        assert!(t.elapsed() < quick, "lists waited {:?}", t.elapsed());
        assert_eq!(pods.len(), 1);
        let c = listed.iter().find(|c| c.id == id).unwrap();
        use ContainerState::{ContainerRunning as Running, ContainerUnknown as Unknown};
        // Both read the same mark, unless it was set between the two reads.
        match (c.state, s.state) {
            (l, s) if l == s => {}
            (l, s) if l == Running as i32 && s == Unknown as i32 => {}
            other => panic!("list and status disagree: {other:?}"),
        }
        if s.state == Unknown as i32 {
            break s;
        }
        assert_eq!(s.state, Running as i32, "{s:?}");
        assert!(t0.elapsed() < Duration::from_secs(30), "never UNKNOWN");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(state.message.contains("does not answer"), "{state:?}");

    drop(stopped);
    wait_state(&mut env.c, &id, ContainerState::ContainerRunning).await;
    stop_pod(&mut env.c, &pod).await;
    remove_pod(&mut env.c, &pod).await;
}

/// The cgroup dirs of a container's `linux.cgroupsPath` (from its bundle)
/// on this host's hierarchies that exist now.
fn cgroup_dirs(env: &PodEnv, id: &str) -> Vec<std::path::PathBuf> {
    let spec: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            env.d
                .config
                .state
                .join("containers")
                .join(id)
                .join("config.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let path = spec["linux"]["cgroupsPath"].as_str().unwrap().to_string();
    let path = path.trim_start_matches('/').to_string();
    ["", "memory", "pids", "cpu", "unified"]
        .iter()
        .map(|h| std::path::Path::new("/sys/fs/cgroup").join(h).join(&path))
        .filter(|d| d.is_dir())
        .collect()
}

/// StopPodSandbox lets the pod's monitor exit (the kubelet removes pods
/// much later); what later calls need stays: the exit in ContainerStatus
/// and the lists, RemoveContainer removing the cgroups, RemovePodSandbox.
#[tokio::test]
async fn a_stopped_pods_monitor_exits_and_later_calls_still_work() {
    let mut env = setup_with("").await;
    let (pod, pc) = run_pod(&mut env, "released").await;
    let id = create(
        &mut env.c,
        &pod,
        &pc,
        ctr_config("quitter", BUSYBOX, "exit 7"),
    )
    .await
    .unwrap();
    start(&mut env.c, &id).await;
    wait_state(&mut env.c, &id, ContainerState::ContainerExited).await;
    let monitor = berth_e2e::procs::monitor_of(&pod).expect("the pod's monitor");
    let cgroups = cgroup_dirs(&env, &id);
    assert!(!cgroups.is_empty(), "no cgroup found for {id}");

    stop_pod(&mut env.c, &pod).await;
    let t0 = Instant::now();
    while std::path::Path::new(&format!("/proc/{monitor}")).exists() {
        assert!(t0.elapsed() < Duration::from_secs(10), "the monitor stays");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let s = status(&mut env.c, &id).await.unwrap();
    assert_eq!(
        (s.state, s.exit_code, s.reason.as_str()),
        (ContainerState::ContainerExited as i32, 7, "Error"),
        "{s:?}"
    );
    let listed = list_containers(&mut env.c).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].state, ContainerState::ContainerExited as i32);
    // A retried stop is still a success.
    stop_pod(&mut env.c, &pod).await;

    env.c
        .runtime
        .remove_container(RemoveContainerRequest {
            container_id: id.clone(),
        })
        .await
        .unwrap();
    let left: Vec<_> = cgroups.iter().filter(|d| d.exists()).collect();
    assert!(left.is_empty(), "cgroups left: {left:?}");
    remove_pod(&mut env.c, &pod).await;
    assert!(list_containers(&mut env.c).await.is_empty());
}
