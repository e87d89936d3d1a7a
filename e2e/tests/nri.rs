//! NRI: a plugin of our own (berth_e2e::nri_plugin) connected to a real
//! berthd's NRI socket sees every pod and container event in order, adjusts
//! containers before they are created (an env var, a cpuset, seen from
//! inside), can refuse one (which leaves nothing behind), and a plugin
//! connecting late is synchronized with what already runs.

use berth_api::v1::ContainerState;
use berth_e2e::cleanup::Guard;
use berth_e2e::daemon::BerthdConfig;
use berth_e2e::nri_plugin::{Behaviour, TestPlugin};
use berth_e2e::pods::*;

async fn nri_setup() -> (PodEnv, std::path::PathBuf) {
    nri_setup_with(|_, _| {}, "").await
}

/// A berthd with NRI on, its plugin and config dirs (`nri-plugins`,
/// `nri-conf` in its dir) filled by `prepare` first; the NRI socket.
async fn nri_setup_with(
    prepare: impl FnOnce(&std::path::Path, &std::path::Path),
    more_nri_toml: &str,
) -> (PodEnv, std::path::PathBuf) {
    let mut config = BerthdConfig::new().unwrap();
    let base = config.dir.path().to_path_buf();
    let socket = base.join("nri.sock");
    let (plugins, confs) = (base.join("nri-plugins"), base.join("nri-conf"));
    std::fs::create_dir_all(&plugins).unwrap();
    std::fs::create_dir_all(&confs).unwrap();
    prepare(&plugins, &confs);
    config.config_toml = Some(format!(
        "[nri]\nenable = true\nsocket_path = \"{}\"\nplugin_path = \"{}\"\nplugin_config_path = \"{}\"\n{more_nri_toml}\n",
        socket.display(),
        base.join("nri-plugins").display(),
        base.join("nri-conf").display(),
    ));
    let reg = test_registry(&mut config);
    let g = Guard(base);
    let (d, c) = start_and_pull(config, &[BUSYBOX]).await;
    (
        PodEnv {
            _reg: reg,
            d,
            c,
            _g: g,
        },
        socket,
    )
}

/// A running busybox `sleep` in `pod`.
async fn sleeping(env: &mut PodEnv, pod: &str, pc: &berth_api::v1::PodSandboxConfig) -> String {
    let cfg = sleeper("s", BUSYBOX, Default::default(), None);
    running(&mut env.c, pod, pc, cfg).await
}

/// Runs `script` in a new container of `pod` to its end; its output.
async fn output_of(
    env: &mut PodEnv,
    pod: &str,
    pc: &berth_api::v1::PodSandboxConfig,
    name: &str,
    script: &str,
) -> (String, String) {
    let id = create(&mut env.c, pod, pc, ctr_config(name, BUSYBOX, script))
        .await
        .unwrap();
    start(&mut env.c, &id).await;
    let s = wait_state(&mut env.c, &id, ContainerState::ContainerExited).await;
    assert_eq!(s.exit_code, 0, "{s:?}");
    let log = std::fs::read_to_string(&s.log_path).unwrap_or_default();
    let text: Vec<&str> = log
        .lines()
        .filter_map(|l| l.splitn(4, ' ').nth(3))
        .collect();
    (id, text.join("\n"))
}

#[tokio::test]
async fn a_plugin_sees_every_event_in_order_and_adjusts_containers() {
    let (mut env, socket) = nri_setup().await;
    let plugin = TestPlugin::connect(
        &socket,
        "berth-e2e",
        "10",
        Behaviour {
            env: Some(("NRI_INJECTED".into(), "by-plugin".into())),
            cpus: Some("0".into()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let (pod, pc) = run_pod(&mut env, "nri").await;
    assert_eq!(plugin.events_of(&pod), ["RunPodSandbox"]);

    // The adjustments, seen from inside: the env var and the cpuset.
    let (ctr, out) = output_of(
        &mut env,
        &pod,
        &pc,
        "adjusted",
        "echo $NRI_INJECTED; grep Cpus_allowed_list /proc/self/status",
    )
    .await;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "by-plugin", "{out}");
    assert_eq!(
        lines[1].split_whitespace().collect::<Vec<_>>(),
        ["Cpus_allowed_list:", "0"],
        "{out}"
    );

    // Exited by itself: StopContainer all the same; then removed.
    remove_container(&mut env.c, &ctr).await;
    let events = plugin.wait_events(&ctr, 6).await;
    assert_eq!(
        events,
        [
            "CreateContainer",
            "PostCreateContainer",
            "StartContainer",
            "PostStartContainer",
            "StopContainer",
            "RemoveContainer"
        ]
    );
    // An in-place pod resize.
    env.c
        .runtime
        .update_pod_sandbox_resources(berth_api::v1::UpdatePodSandboxResourcesRequest {
            pod_sandbox_id: pod.clone(),
            resources: Some(berth_api::v1::LinuxContainerResources {
                cpu_shares: 512,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    stop_pod(&mut env.c, &pod).await;
    // A second stop tells nothing.
    stop_pod(&mut env.c, &pod).await;
    remove_pod(&mut env.c, &pod).await;
    assert_eq!(
        plugin.events_of(&pod),
        [
            "RunPodSandbox",
            "UpdatePodSandbox",
            "PostUpdatePodSandbox",
            "StopPodSandbox",
            "RemovePodSandbox"
        ]
    );
}

#[tokio::test]
async fn a_refusal_fails_the_create_and_leaves_nothing() {
    let (mut env, socket) = nri_setup().await;
    let plugin = TestPlugin::connect(
        &socket,
        "refuser",
        "10",
        Behaviour {
            refuse_create: Some("no containers here".into()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let (pod, pc) = run_pod(&mut env, "nri-refused").await;
    let err = create(
        &mut env.c,
        &pod,
        &pc,
        ctr_config("refused", BUSYBOX, "true"),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("no containers here"), "{err:?}");
    assert!(list_containers(&mut env.c).await.is_empty());
    let bundles = env.d.config.state.join("containers");
    assert_eq!(
        std::fs::read_dir(&bundles).map(|d| d.count()).unwrap_or(0),
        0
    );

    // The name was not kept: the same container is created once allowed.
    plugin.set(Behaviour::default());
    create(
        &mut env.c,
        &pod,
        &pc,
        ctr_config("refused", BUSYBOX, "true"),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn two_plugins_adjusting_one_field_fail_the_create() {
    let (mut env, socket) = nri_setup().await;
    let both = |v: &str| Behaviour {
        env: Some(("CLASH".into(), v.into())),
        ..Default::default()
    };
    let _a = TestPlugin::connect(&socket, "first", "10", both("1"))
        .await
        .unwrap();
    let _b = TestPlugin::connect(&socket, "second", "20", both("2"))
        .await
        .unwrap();
    let (pod, pc) = run_pod(&mut env, "nri-clash").await;
    let err = create(&mut env.c, &pod, &pc, ctr_config("clash", BUSYBOX, "true"))
        .await
        .unwrap_err();
    assert!(
        err.message()
            .contains("10-first and 20-second both adjust the env \"CLASH\""),
        "{err:?}"
    );
    assert!(list_containers(&mut env.c).await.is_empty());
}

#[tokio::test]
async fn a_late_plugin_is_synchronized_with_what_runs() {
    let (mut env, socket) = nri_setup().await;
    let (pod, pc) = run_pod(&mut env, "nri-sync").await;
    let ctr = sleeping(&mut env, &pod, &pc).await;
    let plugin = TestPlugin::connect(&socket, "late", "50", Behaviour::default())
        .await
        .unwrap();
    let (pods, ctrs) = plugin.synced();
    assert!(pods.contains(&pod), "{pods:?}");
    assert!(ctrs.contains(&ctr), "{ctrs:?}");
    // From then on it sees the container's events.
    stop_container(&mut env.c, &ctr).await;
    assert_eq!(plugin.wait_events(&ctr, 1).await, ["StopContainer"]);
}

#[tokio::test]
async fn a_preinstalled_plugin_is_started_and_configured() {
    let (mut env, _) = nri_setup_with(
        |plugins, confs| {
            let bin = env!("CARGO_BIN_EXE_nri-plugin");
            std::fs::copy(bin, plugins.join("05-preinstalled")).unwrap();
            std::fs::write(confs.join("preinstalled.conf"), "PRE=installed").unwrap();
            // Not NN-name: never started.
            std::fs::copy(bin, plugins.join("stray")).unwrap();
        },
        "",
    )
    .await;
    let (pod, pc) = run_pod(&mut env, "nri-pre").await;
    let (_, out) = output_of(&mut env, &pod, &pc, "pre", "echo $PRE").await;
    assert_eq!(out.trim(), "installed");
    let named = |name: &str| {
        berth_e2e::procs::processes()
            .iter()
            .filter(|p| p.argv0_name == name && p.state != 'Z')
            .count()
    };
    assert_eq!(named("stray"), 0, "a file not named NN-name was started");
    assert_eq!(named("05-preinstalled"), 1);
    // The plugin goes with berthd: its connection closing ends it.
    env.d.stop().await.unwrap();
    let t = std::time::Instant::now();
    while named("05-preinstalled") > 0 {
        assert!(t.elapsed().as_secs() < 10, "the plugin outlived berthd");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_plugins_unsolicited_update_reaches_the_live_cgroup() {
    let (mut env, socket) = nri_setup().await;
    let (pod, pc) = run_pod(&mut env, "nri-update").await;
    let ctr = sleeping(&mut env, &pod, &pc).await;
    let plugin = TestPlugin::connect(&socket, "updater", "30", Behaviour::default())
        .await
        .unwrap();
    assert_eq!(plugin.update_cpus(&ctr, "0").await.unwrap(), 0);
    let out = exec(
        &mut env.c,
        &ctr,
        &sh("grep Cpus_allowed_list /proc/1/status"),
        10,
    )
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        text.split_whitespace().collect::<Vec<_>>(),
        ["Cpus_allowed_list:", "0"],
        "{text}"
    );
    // An unknown container is reported failed, not an error of the call.
    assert_eq!(
        plugin.update_cpus("no-such-container", "0").await.unwrap(),
        1
    );
}

/// What a plugin that does not answer CreateContainer in time did to two
/// creates after it connected: how long the first waited, how long the
/// second (a new pod and container) took, and whether the plugin saw the
/// second pod at all.
struct AfterAHang {
    first: std::time::Duration,
    second: std::time::Duration,
    saw_second: Vec<String>,
}

async fn creates_after(behaviour: Behaviour, name: &str) -> AfterAHang {
    let (mut env, socket) = nri_setup_with(|_, _| {}, "plugin_request_timeout_ms = 500").await;
    let plugin = TestPlugin::connect(&socket, name, "10", behaviour)
        .await
        .unwrap();
    let (pod, pc) = run_pod(&mut env, &format!("nri-{name}")).await;
    let t = std::time::Instant::now();
    create(&mut env.c, &pod, &pc, ctr_config("first", BUSYBOX, "true"))
        .await
        .unwrap();
    let first = t.elapsed();
    let t = std::time::Instant::now();
    let (pod2, pc2) = run_pod(&mut env, &format!("nri-{name}-2")).await;
    create(
        &mut env.c,
        &pod2,
        &pc2,
        ctr_config("second", BUSYBOX, "true"),
    )
    .await
    .unwrap();
    AfterAHang {
        first,
        second: t.elapsed(),
        saw_second: plugin.events_of(&pod2),
    }
}

#[tokio::test]
async fn a_hung_plugin_is_dropped_and_stalls_nothing_after() {
    let hang = Behaviour {
        hang_create: true,
        ..Default::default()
    };
    let r = creates_after(hang, "hung").await;
    // The create waits out the request timeout, then goes on without it.
    assert!(
        r.first.as_millis() >= 450 && r.first.as_secs() < 5,
        "{:?}",
        r.first
    );
    // Dropped: the next pod and container do not wait for it.
    assert!(r.second.as_millis() < 450, "{:?}", r.second);
    assert!(r.saw_second.is_empty(), "{:?}", r.saw_second);
}

/// A plugin whose ttrpc server answers its own deadline first (a race with
/// berthd's timer) is as hung as one that never answers: dropped, not a
/// refusal that fails the create.
#[tokio::test]
async fn a_plugin_answering_its_deadline_is_dropped_not_obeyed() {
    let late = Behaviour {
        deadline_create: true,
        ..Default::default()
    };
    let r = creates_after(late, "late").await;
    assert!(r.saw_second.is_empty(), "{:?}", r.saw_second);
}

#[tokio::test]
async fn removing_a_ready_pod_tells_its_stop_first() {
    let (mut env, socket) = nri_setup().await;
    let plugin = TestPlugin::connect(&socket, "order", "10", Behaviour::default())
        .await
        .unwrap();
    let (pod, pc) = run_pod(&mut env, "nri-rm-ready").await;
    let ctr = sleeping(&mut env, &pod, &pc).await;
    remove_pod(&mut env.c, &pod).await;
    let at = |event: &str, id: &str| {
        plugin
            .seen()
            .iter()
            .position(|(e, p, c)| e == event && (c == id || c.is_empty() && p == id))
            .unwrap_or_else(|| panic!("no {event} for {id}: {:?}", plugin.seen()))
    };
    // Containers stop, the pod's stop is told, then the removals.
    assert!(at("StopContainer", &ctr) < at("StopPodSandbox", &pod));
    assert!(at("StopPodSandbox", &pod) < at("RemoveContainer", &ctr));
    assert!(at("RemoveContainer", &ctr) < at("RemovePodSandbox", &pod));
}
