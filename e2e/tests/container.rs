//! Containers against a real berthd and real images from the registry
//! fixture: create/start/stop/remove through the pod's monitor, exit codes
//! and reasons, CRI logs, stop timeouts, overlay rootfs cleanup, errors, and
//! StopPodSandbox/RemovePodSandbox taking the pod's containers along. Needs root.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use berth_api::v1::*;
use berth_e2e::client::CriClient;
use berth_e2e::pods::*;
use tonic::Code;

use berth_e2e::cleanup::mounts_under;

async fn stop(c: &mut CriClient, id: &str, timeout: i64) {
    c.runtime
        .stop_container(StopContainerRequest {
            container_id: id.into(),
            timeout,
        })
        .await
        .unwrap();
}

async fn remove(c: &mut CriClient, id: &str) {
    c.runtime
        .remove_container(RemoveContainerRequest {
            container_id: id.into(),
        })
        .await
        .unwrap();
}

async fn list(c: &mut CriClient, filter: ContainerFilter) -> Vec<String> {
    let mut ids: Vec<String> = c
        .runtime
        .list_containers(ListContainersRequest {
            filter: Some(filter),
        })
        .await
        .unwrap()
        .into_inner()
        .containers
        .into_iter()
        .map(|c| c.id)
        .collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn exit_code_reason_and_cri_logs() {
    let mut env = setup(&[BUSYBOX]).await;
    let (pod, pc) = run_pod(&mut env, "logs").await;
    let t = Instant::now();
    let id = create(
        &mut env.c,
        &pod,
        &pc,
        ctr_config("fail", BUSYBOX, "echo hello; echo oops >&2; exit 3"),
    )
    .await
    .unwrap();
    let created = t.elapsed();
    assert_eq!(id.len(), 64);
    let s = status(&mut env.c, &id).await.unwrap();
    assert_eq!(s.state, ContainerState::ContainerCreated as i32);
    start(&mut env.c, &id).await;
    println!(
        "first container of the pod (monitor spawn included): create {:?}, create+start {:?}",
        created,
        t.elapsed()
    );

    let s = wait_state(&mut env.c, &id, ContainerState::ContainerExited).await;
    assert_eq!(s.exit_code, 3);
    assert_eq!(s.reason, "Error");
    assert!(s.started_at > 0 && s.finished_at >= s.started_at && s.created_at > 0);
    assert_eq!(s.metadata.unwrap().name, "fail");
    assert_eq!(s.image.unwrap().image, BUSYBOX);
    assert!(s.image_ref.contains("sha256:"), "{}", s.image_ref);
    assert_eq!(s.labels["ctr"], "fail");
    assert_eq!(s.annotations["note"], "hi");
    let log = Path::new(&pc.log_directory).join("fail/0.log");
    assert_eq!(s.log_path, log.display().to_string());
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<Vec<&str>> = text.lines().map(|l| l.splitn(4, ' ').collect()).collect();
    assert_eq!(lines.len(), 2, "{text}");
    let mut got: Vec<(&str, &str, &str)> = lines.iter().map(|l| (l[1], l[2], l[3])).collect();
    got.sort();
    assert_eq!(
        got,
        vec![("stderr", "F", "oops"), ("stdout", "F", "hello")],
        "{text}"
    );
    for l in &lines {
        assert!(l[0].contains('T') && l[0].ends_with('Z'), "{l:?}");
    }

    // A second container in the same pod (monitor already up): exit 0.
    let t = Instant::now();
    let ok = create(&mut env.c, &pod, &pc, ctr_config("ok", BUSYBOX, "true"))
        .await
        .unwrap();
    start(&mut env.c, &ok).await;
    println!("create+start with the monitor up: {:?}", t.elapsed());
    let s = wait_state(&mut env.c, &ok, ContainerState::ContainerExited).await;
    assert_eq!((s.exit_code, s.reason.as_str()), (0, "Completed"));

    // List filters.
    let mut both = vec![id.clone(), ok.clone()];
    both.sort();
    assert_eq!(list(&mut env.c, ContainerFilter::default()).await, both);
    let by_label = ContainerFilter {
        label_selector: HashMap::from([("ctr".into(), "ok".into())]),
        ..Default::default()
    };
    assert_eq!(list(&mut env.c, by_label).await, vec![ok.clone()]);
    let by_id = ContainerFilter {
        id: id[..12].into(),
        ..Default::default()
    };
    assert_eq!(list(&mut env.c, by_id).await, vec![id.clone()]);
    let running = ContainerFilter {
        state: Some(ContainerStateValue {
            state: ContainerState::ContainerRunning as i32,
        }),
        ..Default::default()
    };
    assert!(list(&mut env.c, running).await.is_empty());
    let other_pod = ContainerFilter {
        pod_sandbox_id: "ffff".into(),
        ..Default::default()
    };
    assert!(list(&mut env.c, other_pod).await.is_empty());

    remove(&mut env.c, &id).await;
    remove(&mut env.c, &ok).await;
    assert_eq!(
        status(&mut env.c, &id).await.unwrap_err().code(),
        Code::NotFound
    );
    // Unknown id: success for remove and stop (the kubelet retries both; critest's idempotence specs).
    remove(&mut env.c, &id).await;
    stop(&mut env.c, &id, 0).await;
    env.c
        .runtime
        .remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: pod,
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn stop_kill_timeout_and_remove_cleans_rootfs() {
    let mut env = setup(&[BUSYBOX]).await;
    let (pod, pc) = run_pod(&mut env, "stop").await;

    // timeout 0: SIGKILL at once.
    let id = create(
        &mut env.c,
        &pod,
        &pc,
        ctr_config("sleeper", BUSYBOX, "sleep 1000"),
    )
    .await
    .unwrap();
    start(&mut env.c, &id).await;
    wait_state(&mut env.c, &id, ContainerState::ContainerRunning).await;
    let rootfs = env
        .d
        .config
        .state
        .join("containers")
        .join(&id)
        .join("rootfs");
    let upper = env.d.config.root.join("containers").join(&id);
    assert!(
        mounts_under(&rootfs).contains(&rootfs),
        "rootfs not mounted"
    );
    assert!(upper.join("upper").is_dir());
    let t = Instant::now();
    stop(&mut env.c, &id, 0).await;
    let stopped = t.elapsed();
    let s = status(&mut env.c, &id).await.unwrap();
    assert_eq!(s.state, ContainerState::ContainerExited as i32);
    assert_eq!((s.exit_code, s.reason.as_str()), (137, "Error"));
    // Idempotent on an exited container.
    stop(&mut env.c, &id, 0).await;
    let t = Instant::now();
    remove(&mut env.c, &id).await;
    println!(
        "StopContainer(0) {:?} + RemoveContainer {:?}",
        stopped,
        t.elapsed()
    );
    assert!(
        !mounts_under(&rootfs).contains(&rootfs),
        "rootfs still mounted"
    );
    assert!(!upper.exists(), "upper dir left: {}", upper.display());
    assert!(!rootfs.exists());

    // TERM trapped: a graceful exit 0 within the timeout.
    let id = create(
        &mut env.c,
        &pod,
        &pc,
        ctr_config(
            "graceful",
            BUSYBOX,
            "trap 'echo bye; exit 0' TERM; while true; do sleep 0.05; done",
        ),
    )
    .await
    .unwrap();
    start(&mut env.c, &id).await;
    wait_state(&mut env.c, &id, ContainerState::ContainerRunning).await;
    // Give sh time to install its trap.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let t = Instant::now();
    stop(&mut env.c, &id, 10).await;
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    let s = status(&mut env.c, &id).await.unwrap();
    assert_eq!((s.exit_code, s.reason.as_str()), (0, "Completed"));

    // TERM ignored (sh as PID 1 without a trap): SIGKILL after the timeout.
    let id2 = create(
        &mut env.c,
        &pod,
        &pc,
        ctr_config("stubborn", BUSYBOX, "sleep 1000"),
    )
    .await
    .unwrap();
    start(&mut env.c, &id2).await;
    wait_state(&mut env.c, &id2, ContainerState::ContainerRunning).await;
    let t = Instant::now();
    stop(&mut env.c, &id2, 1).await;
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "{took:?}"
    );
    let s = status(&mut env.c, &id2).await.unwrap();
    assert_eq!(s.exit_code, 137);

    env.c
        .runtime
        .remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: pod,
        })
        .await
        .unwrap();
    assert!(
        list(&mut env.c, ContainerFilter::default())
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn errors_and_pod_stop_remove_take_containers() {
    let mut env = setup(&[BUSYBOX]).await;
    let (pod, pc) = run_pod(&mut env, "errs").await;

    let err = create(
        &mut env.c,
        "0123456789abcdef",
        &pc,
        ctr_config("x", BUSYBOX, "true"),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    let err = create(
        &mut env.c,
        &pod,
        &pc,
        ctr_config("x", "berth-test/not-pulled:latest", "true"),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert!(err.message().contains("not-pulled"), "{err:?}");
    let err = status(&mut env.c, "feedface").await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);

    let a = create(
        &mut env.c,
        &pod,
        &pc,
        ctr_config("a", BUSYBOX, "sleep 1000"),
    )
    .await
    .unwrap();
    let err = create(&mut env.c, &pod, &pc, ctr_config("a", BUSYBOX, "true"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists, "{err:?}");
    // Nothing of the refused creates is left behind.
    assert_eq!(
        list(&mut env.c, ContainerFilter::default()).await,
        vec![a.clone()]
    );
    let b = create(
        &mut env.c,
        &pod,
        &pc,
        ctr_config("b", BUSYBOX, "sleep 1000"),
    )
    .await
    .unwrap();
    start(&mut env.c, &a).await;
    start(&mut env.c, &b).await;
    wait_state(&mut env.c, &a, ContainerState::ContainerRunning).await;

    env.c
        .runtime
        .stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: pod.clone(),
        })
        .await
        .unwrap();
    for id in [&a, &b] {
        let s = status(&mut env.c, id).await.unwrap();
        assert_eq!(s.state, ContainerState::ContainerExited as i32, "{s:?}");
    }
    // A stopped pod takes no new containers.
    let err = create(&mut env.c, &pod, &pc, ctr_config("c", BUSYBOX, "true"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");

    env.c
        .runtime
        .remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: pod,
        })
        .await
        .unwrap();
    assert!(
        list(&mut env.c, ContainerFilter::default())
            .await
            .is_empty()
    );
    assert!(mounts_under(&env.d.config.state.join("containers")).is_empty());
    let left: Vec<_> = std::fs::read_dir(env.d.config.root.join("containers"))
        .unwrap()
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test]
async fn a_missing_working_dir_is_created_inside_the_rootfs() {
    let mut env = setup(&[BUSYBOX]).await;
    let (pod, pc) = run_pod(&mut env, "workdir").await;
    let mut cfg = ctr_config("c", BUSYBOX, "pwd; exec sleep 1000");
    cfg.working_dir = "/srv/app/data".into();
    let id = running(&mut env.c, &pod, &pc, cfg).await;
    let r = exec(
        &mut env.c,
        &id,
        &sh("pwd; ls -ld /srv/app/data | cut -c1-10"),
        10,
    )
    .await
    .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&r.stdout),
        "/srv/app/data\ndrwxr-xr-x\n"
    );
}
