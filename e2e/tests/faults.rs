//! Crash safety: berthd SIGKILLed (through `BERTH_FAILPOINTS`) in the middle
//! of an RPC, then restarted. The restarted daemon must complete or clean up
//! what the interrupted RPC left: no pod dir, pin, /dev/shm, pod init, IP,
//! veth, iptables rule or cached CNI result that nothing would ever remove.
//! Real berthd, real CNI plugins, busybox from the registry fixture. Needs root.

use berth_api::v1::*;
use berth_e2e::cleanup::{mounts_under, pids_in_namespaces, pinned_pid_namespaces};
use berth_e2e::net::{self, NetEnv};
use berth_e2e::pods::*;

/// Restarts the daemon with `point` armed (None: disarmed), and reconnects.
async fn restart_with(env: &mut NetEnv, point: Option<&str>) {
    env.d.config.env = point
        .map(|p| vec![("BERTH_FAILPOINTS".to_string(), p.to_string())])
        .unwrap_or_default();
    env.d.restart().await.unwrap();
    env.c = env.d.client().await.unwrap();
}

/// The daemon died at its failpoint: the call failed, the process is gone.
async fn crashed<T: std::fmt::Debug>(env: &mut NetEnv, r: Result<T, tonic::Status>, point: &str) {
    assert!(r.is_err(), "{point}: the RPC succeeded: {r:?}");
    env.d.wait_exit().await.unwrap();
    assert!(
        env.d.log_text().contains(point),
        "{point}: berthd died elsewhere:\n{}",
        env.d.log_text()
    );
}

fn shared_pid(mut pc: PodSandboxConfig) -> PodSandboxConfig {
    pod_namespaces(&mut pc).pid = NamespaceMode::Pod as i32;
    pc
}

async fn pods(env: &mut NetEnv) -> Vec<PodSandbox> {
    env.c
        .runtime
        .list_pod_sandbox(ListPodSandboxRequest::default())
        .await
        .unwrap()
        .into_inner()
        .items
}

/// Nothing of any pod is left on the host or in the daemon's dirs.
fn assert_clean(env: &NetEnv, what: &str) {
    let leaks = env.leaks(&[], &[]);
    assert!(leaks.is_empty(), "{what}: {leaks:#?}");
    let state = &env.d.config.state;
    let mounts = mounts_under(&state.join("pods"));
    assert!(mounts.is_empty(), "{what}: mounts {mounts:?}");
    let dirs: Vec<_> = std::fs::read_dir(state.join("pods"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(dirs.is_empty(), "{what}: pod dirs {dirs:?}");
}

#[tokio::test]
async fn crash_during_run_pod_sandbox_leaves_nothing() {
    let mut env = net::setup(&[], |_, _| {}).await;
    for point in ["sandbox-run-pinned", "sandbox-run-attached"] {
        restart_with(&mut env, Some(point)).await;
        let pc = shared_pid(env.pod_config(point));
        let r = env
            .c
            .runtime
            .run_pod_sandbox(RunPodSandboxRequest {
                config: Some(pc),
                runtime_handler: String::new(),
            })
            .await;
        crashed(&mut env, r, point).await;
        // Before the restart the crash left its pins (and maybe an IP).
        let pid_ns = pinned_pid_namespaces(&env.d.config.state);
        assert_eq!(pid_ns.len(), 1, "{point}: the pod init's namespace");
        restart_with(&mut env, None).await;
        assert_eq!(pods(&mut env).await, vec![], "{point}");
        assert_eq!(
            pids_in_namespaces(&pid_ns),
            Vec::<i32>::new(),
            "{point}: pod init left"
        );
        assert_clean(&env, point);
    }
    // The daemon still works: the same pod name runs and gets an IP.
    let pc = env.pod_config("after");
    let id = run_pod_with(&mut env.c, &pc).await;
    stop_pod(&mut env.c, &id).await;
    remove_pod(&mut env.c, &id).await;
    assert_clean(&env, "after");
}

#[tokio::test]
async fn crash_during_stop_or_remove_is_finished_by_a_retry() {
    let mut env = net::setup(&[BUSYBOX], |_, _| {}).await;
    for point in [
        "sandbox-stop-containers-stopped",
        "sandbox-remove-detached",
        "sandbox-remove-dir-removed",
    ] {
        restart_with(&mut env, Some(point)).await;
        let pc = shared_pid(env.pod_config(point));
        let pod = run_pod_with(&mut env.c, &pc).await;
        let mut cc = ctr_config("c", BUSYBOX, "exec sleep 1000");
        let sc = cc
            .linux
            .as_mut()
            .unwrap()
            .security_context
            .as_mut()
            .unwrap();
        sc.namespace_options.as_mut().unwrap().pid = NamespaceMode::Pod as i32;
        let ctr = create(&mut env.c, &pod, &pc, cc).await.unwrap();
        start(&mut env.c, &ctr).await;
        wait_state(&mut env.c, &ctr, ContainerState::ContainerRunning).await;

        let r = if point.starts_with("sandbox-stop") {
            env.c
                .runtime
                .stop_pod_sandbox(StopPodSandboxRequest {
                    pod_sandbox_id: pod.clone(),
                })
                .await
                .map(|_| ())
        } else {
            env.c
                .runtime
                .remove_pod_sandbox(RemovePodSandboxRequest {
                    pod_sandbox_id: pod.clone(),
                })
                .await
                .map(|_| ())
        };
        crashed(&mut env, r, point).await;
        restart_with(&mut env, None).await;
        // The kubelet retries: stop, then remove, both succeed and finish the job.
        stop_pod(&mut env.c, &pod).await;
        remove_pod(&mut env.c, &pod).await;
        assert_eq!(pods(&mut env).await, vec![], "{point}");
        assert_clean(&env, point);
    }
}

/// The `n` of every `tick n` line of a CRI log file, in order.
fn ticks(log: &std::path::Path) -> Vec<u64> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            // <time> <stream> <P|F> <text>
            let text = l.splitn(4, ' ').nth(3)?;
            text.strip_prefix("tick ")?.trim().parse().ok()
        })
        .collect()
}

#[tokio::test]
async fn kill9_loses_no_container_exit_or_log_line() {
    let mut env = net::setup(&[BUSYBOX], |_, _| {}).await;
    let pc = env.pod_config("survivor");
    let pod = run_pod_with(&mut env.c, &pc).await;
    let ip = pod_ip(&mut env.c, &pod).await;
    assert!(ip.starts_with(&env.net.prefix), "{ip}");
    let log_dir = std::path::PathBuf::from(&pc.log_directory);

    let ticker = create(
        &mut env.c,
        &pod,
        &pc,
        ctr_config(
            "ticker",
            BUSYBOX,
            "i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.02; done",
        ),
    )
    .await
    .unwrap();
    let quitter = create(
        &mut env.c,
        &pod,
        &pc,
        ctr_config("quitter", BUSYBOX, "sleep 1; exit 3"),
    )
    .await
    .unwrap();
    start(&mut env.c, &ticker).await;
    start(&mut env.c, &quitter).await;
    wait_state(&mut env.c, &ticker, ContainerState::ContainerRunning).await;

    // Down for 2 s: the quitter exits meanwhile, the ticker keeps logging.
    env.d.kill9().await.unwrap();
    let down = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64;
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    env.d.restart().await.unwrap();
    env.c = env.d.client().await.unwrap();

    let s = wait_state(&mut env.c, &ticker, ContainerState::ContainerRunning).await;
    assert_eq!(s.exit_code, 0);
    let q = status(&mut env.c, &quitter).await.unwrap();
    assert_eq!(
        (q.state, q.exit_code, q.reason.as_str()),
        (ContainerState::ContainerExited as i32, 3, "Error"),
        "{q:?}"
    );
    assert!(
        q.finished_at > down,
        "exit time is the real one, not the restart's: {q:?}"
    );
    let r = exec(&mut env.c, &ticker, &["echo", "alive"], 10)
        .await
        .unwrap();
    assert_eq!(r.stdout, b"alive\n");
    assert_eq!(pod_ip(&mut env.c, &pod).await, ip, "the pod IP changed");

    // Stop, then the log: every tick once, in order, none missing.
    stop_container(&mut env.c, &ticker).await;
    let t = ticks(&log_dir.join("ticker/0.log"));
    assert!(t.len() > 40, "only {} ticks", t.len());
    let expected: Vec<u64> = (0..t.len() as u64).collect();
    assert_eq!(t, expected, "gap or duplicate in the log");

    stop_pod(&mut env.c, &pod).await;
    remove_pod(&mut env.c, &pod).await;
    assert_clean(&env, "after kill -9");
}

/// The host pid of the pod's monitor.
fn monitor_of(pod: &str) -> i32 {
    berth_e2e::procs::monitor_of(pod).expect("the pod's monitor")
}

#[tokio::test]
async fn a_monitor_that_died_while_berthd_was_down_is_noticed() {
    let mut env = net::setup(&[BUSYBOX], |_, _| {}).await;
    let pc = env.pod_config("orphaned");
    let pod = run_pod_with(&mut env.c, &pc).await;
    let id = create(
        &mut env.c,
        &pod,
        &pc,
        ctr_config("c", BUSYBOX, "exec sleep 1000"),
    )
    .await
    .unwrap();
    start(&mut env.c, &id).await;
    wait_state(&mut env.c, &id, ContainerState::ContainerRunning).await;

    env.d.kill9().await.unwrap();
    let monitor = monitor_of(&pod);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(monitor),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    env.d.restart().await.unwrap();
    env.c = env.d.client().await.unwrap();

    // Not running forever: exited, with a message saying why.
    let s = wait_state(&mut env.c, &id, ContainerState::ContainerExited).await;
    assert!(s.message.contains("lost") || s.exit_code != 0, "{s:?}");
    // And the kubelet can clean it all up.
    stop_pod(&mut env.c, &pod).await;
    remove_pod(&mut env.c, &pod).await;
    assert_clean(&env, "after a lost monitor");
}

/// A monitor killed while berthd runs: its subscription ends, its socket
/// refuses connections, and its live container is marked lost with no
/// ListContainers or ContainerStatus having to ask it.
#[tokio::test]
async fn a_monitor_that_dies_under_a_running_berthd_is_noticed() {
    let mut env = net::setup(&[BUSYBOX], |_, _| {}).await;
    let pc = env.pod_config("monitor-dies");
    let pod = run_pod_with(&mut env.c, &pc).await;
    let id = running(
        &mut env.c,
        &pod,
        &pc,
        ctr_config("c", BUSYBOX, "exec sleep 1000"),
    )
    .await;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(monitor_of(&pod)),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let s = wait_state(&mut env.c, &id, ContainerState::ContainerExited).await;
    assert_eq!(s.exit_code, 255, "{s:?}");
    assert!(s.message.contains("lost"), "{s:?}");
    stop_pod(&mut env.c, &pod).await;
    remove_pod(&mut env.c, &pod).await;
    assert_clean(&env, "after a monitor died under berthd");
}

#[tokio::test]
async fn a_reboot_leaves_pods_notready_containers_exited_images_kept() {
    let mut env = net::setup(&[BUSYBOX], |_, _| {}).await;
    let pc = env.pod_config("rebooted");
    let pod = run_pod_with(&mut env.c, &pc).await;
    let id = create(
        &mut env.c,
        &pod,
        &pc,
        ctr_config("c", BUSYBOX, "exec sleep 1000"),
    )
    .await
    .unwrap();
    start(&mut env.c, &id).await;
    wait_state(&mut env.c, &id, ContainerState::ContainerRunning).await;

    // "Reboot": every process and mount of the daemon's dirs gone, the state
    // dir (a tmpfs on a real node) emptied, the root dir kept. The bridge
    // and IP store of a real node go with the reboot too.
    env.d.kill9().await.unwrap();
    berth_e2e::cleanup::reap_leftovers(env.d.config.dir.path());
    std::fs::remove_dir_all(&env.d.config.state).unwrap();
    let _ = std::fs::remove_dir_all(env.net.ipam_dir());
    env.d.restart().await.unwrap();
    env.c = env.d.client().await.unwrap();

    let pods = pods(&mut env).await;
    assert_eq!(pods.len(), 1);
    assert_eq!(pods[0].state, PodSandboxState::SandboxNotready as i32);
    let s = status(&mut env.c, &id).await.unwrap();
    assert_eq!(s.state, ContainerState::ContainerExited as i32, "{s:?}");
    let images = env
        .c
        .image
        .list_images(ListImagesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .images;
    assert!(!images.is_empty(), "images lost in the reboot");

    // The kubelet removes the dead pod and makes a new one.
    stop_pod(&mut env.c, &pod).await;
    remove_pod(&mut env.c, &pod).await;
    let root_containers: Vec<_> = std::fs::read_dir(env.d.config.root.join("containers"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(
        root_containers.is_empty(),
        "upper dirs left: {root_containers:?}"
    );
    let pc2 = env.pod_config("rebooted-again");
    let pod2 = run_pod_with(&mut env.c, &pc2).await;
    assert!(pod_ip(&mut env.c, &pod2).await.starts_with(&env.net.prefix));
    stop_pod(&mut env.c, &pod2).await;
    remove_pod(&mut env.c, &pod2).await;
    assert_clean(&env, "after the reboot");
}

/// A 24 MiB tmpfs mounted on `dir`, unmounted on drop.
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    fn mount(dir: &std::path::Path) -> SmallDisk {
        std::fs::create_dir_all(dir).unwrap();
        nix::mount::mount(
            Some("tmpfs"),
            dir,
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            Some("size=24m"),
        )
        .unwrap();
        SmallDisk(dir.to_path_buf())
    }

    /// Fills the disk with `filler` until a write fails.
    fn fill(&self) -> std::path::PathBuf {
        use std::io::Write;
        let p = self.0.join("filler");
        let mut f = std::fs::File::create(&p).unwrap();
        let block = vec![0u8; 1 << 16];
        while f.write_all(&block).is_ok() {}
        p
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

#[tokio::test]
async fn a_full_disk_is_a_clear_error_and_loses_nothing() {
    let mut disk = None;
    let mut env = net::setup(&[BUSYBOX], |config, _| {
        disk = Some(SmallDisk::mount(&config.root));
        config.config_toml = Some("min_free_disk_mib = 4\n".into());
    })
    .await;
    let disk = disk.unwrap();
    let pc = env.pod_config("full");
    let pod = run_pod_with(&mut env.c, &pc).await;
    let before = running(
        &mut env.c,
        &pod,
        &pc,
        ctr_config("before", BUSYBOX, "exec sleep 1000"),
    )
    .await;

    let filler = disk.fill();
    let pull = |image: &str| PullImageRequest {
        image: Some(ImageSpec {
            image: image.to_string(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let e = env
        .c
        .image
        .pull_image(pull("berth-test/layered:latest"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::ResourceExhausted, "{e:?}");
    assert!(e.message().contains("MiB free"), "{}", e.message());
    // A container needs room for its writable layer: a clear error too, and
    // nothing half made.
    let e = create(&mut env.c, &pod, &pc, ctr_config("after", BUSYBOX, "true"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::ResourceExhausted, "{e:?}");
    assert!(e.message().contains("MiB free"), "{}", e.message());

    // Nothing lost: the image, the running container, the pod.
    let images = env
        .c
        .image
        .list_images(ListImagesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .images;
    assert_eq!(images.len(), 1, "{images:?}");
    let r = exec(&mut env.c, &before, &["echo", "ok"], 10)
        .await
        .unwrap();
    assert_eq!(r.stdout, b"ok\n");

    // Room again. A write of berthd's own that met the full disk (a
    // background flush of the metadata store) makes it exit for a fresh
    // store, as its supervisor would restart it; either way the same
    // requests now succeed and nothing was lost.
    std::fs::remove_file(filler).unwrap();
    let r = env
        .c
        .image
        .pull_image(pull("berth-test/layered:latest"))
        .await;
    if r.is_err() {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let status = env.d.exited();
        assert_eq!(
            status.and_then(|s| s.code()),
            Some(75),
            "{r:?}\n{}",
            env.d.log_text()
        );
        assert!(env.d.log_text().contains("must be reopened"));
        env.d.restart().await.unwrap();
        env.c = env.d.client().await.unwrap();
        let r = exec(&mut env.c, &before, &["echo", "ok"], 10)
            .await
            .unwrap();
        assert_eq!(r.stdout, b"ok\n", "the container survived the restart");
        env.c
            .image
            .pull_image(pull("berth-test/layered:latest"))
            .await
            .unwrap();
    }
    running(
        &mut env.c,
        &pod,
        &pc,
        ctr_config("after", BUSYBOX, "exec sleep 1000"),
    )
    .await;
    stop_pod(&mut env.c, &pod).await;
    remove_pod(&mut env.c, &pod).await;
    assert_clean(&env, "after a full disk");
    drop(env);
    drop(disk);
}

/// Nothing of any container is left: no bundle, upper dir, trash, lease
/// holder (checked through the leftovers' dirs) or cgroup of `ids`.
fn assert_no_container_left(env: &NetEnv, ids: &[String], what: &str) {
    let (state, root) = (&env.d.config.state, &env.d.config.root);
    for dir in [
        state.join("containers"),
        root.join("containers"),
        state.join("containers-trash"),
        root.join("containers-trash"),
    ] {
        // RemoveContainer empties the trash after it answers: give that
        // background step a moment.
        let listing = || -> Vec<_> {
            std::fs::read_dir(&dir)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path())
                .collect()
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !listing().is_empty() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let left = listing();
        assert!(left.is_empty(), "{what}: {left:?} in {}", dir.display());
    }
    let mounts = mounts_under(&state.join("containers"));
    assert!(mounts.is_empty(), "{what}: mounts {mounts:?}");
    for root in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        for id in ids {
            for d in [root.path().join("berth").join(id), root.path().join(id)] {
                assert!(!d.exists(), "{what}: cgroup {} left", d.display());
            }
        }
    }
}

/// The ids of the pod's containers the daemon lists.
async fn containers_of(env: &mut NetEnv, pod: &str) -> Vec<String> {
    env.c
        .runtime
        .list_containers(ListContainersRequest {
            filter: Some(ContainerFilter {
                pod_sandbox_id: pod.into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .containers
        .into_iter()
        .map(|c| c.id)
        .collect()
}

#[tokio::test]
async fn crash_during_create_start_or_remove_container_leaves_nothing() {
    let mut env = net::setup(&[BUSYBOX], |_, _| {}).await;
    for (point, shared_pid_ns) in [
        ("container-create-mounted", false),
        ("container-create-in-monitor", false),
        ("container-create-in-monitor", true),
        ("container-start-started", false),
        ("container-remove-trashed", false),
    ] {
        let what = format!("{point} (shared pid: {shared_pid_ns})");
        let name = point.replace("container-", "c-");
        let mut pc = env.pod_config(&format!("{name}-{shared_pid_ns}"));
        let mut cc = ctr_config("c", BUSYBOX, "exec sleep 1000");
        if shared_pid_ns {
            pc = shared_pid(pc);
            let sc = cc
                .linux
                .as_mut()
                .unwrap()
                .security_context
                .as_mut()
                .unwrap();
            sc.namespace_options.as_mut().unwrap().pid = NamespaceMode::Pod as i32;
        }
        let pod = run_pod_with(&mut env.c, &pc).await;
        // A container the crash must not disturb.
        let bystander = running(
            &mut env.c,
            &pod,
            &pc,
            ctr_config("bystander", BUSYBOX, "exec sleep 1000"),
        )
        .await;
        restart_with(&mut env, Some(point)).await;

        let r = if point.starts_with("container-create") {
            create(&mut env.c, &pod, &pc, cc.clone()).await.map(|_| ())
        } else {
            let id = create(&mut env.c, &pod, &pc, cc.clone()).await.unwrap();
            if point == "container-start-started" {
                env.c
                    .runtime
                    .start_container(StartContainerRequest { container_id: id })
                    .await
                    .map(|_| ())
            } else {
                start(&mut env.c, &id).await;
                env.c
                    .runtime
                    .remove_container(RemoveContainerRequest { container_id: id })
                    .await
                    .map(|_| ())
            }
        };
        crashed(&mut env, r, point).await;
        restart_with(&mut env, None).await;

        // The daemon finished or undid the interrupted call.
        let ids = containers_of(&mut env, &pod).await;
        match point {
            "container-start-started" => {
                assert_eq!(ids.len(), 2, "{what}: {ids:?}");
                let other = ids.iter().find(|i| **i != bystander).unwrap();
                wait_state(&mut env.c, other, ContainerState::ContainerRunning).await;
            }
            // The record outlived the crash: the kubelet's retry finishes it.
            "container-remove-trashed" => {
                assert_eq!(ids.len(), 2, "{what}: {ids:?}");
                let other = ids.iter().find(|i| **i != bystander).unwrap();
                env.c
                    .runtime
                    .remove_container(RemoveContainerRequest {
                        container_id: other.clone(),
                    })
                    .await
                    .unwrap();
                assert_eq!(containers_of(&mut env, &pod).await, vec![bystander.clone()]);
            }
            _ => assert_eq!(ids, vec![bystander.clone()], "{what}"),
        }
        let r = exec(&mut env.c, &bystander, &["echo", "ok"], 10)
            .await
            .unwrap();
        assert_eq!(r.stdout, b"ok\n", "{what}: the bystander");
        // The kubelet tries again: the same name is free.
        if point.starts_with("container-create") {
            let mut again = cc.clone();
            again.metadata.as_mut().unwrap().attempt = 1;
            running(&mut env.c, &pod, &pc, again).await;
        }
        stop_pod(&mut env.c, &pod).await;
        remove_pod(&mut env.c, &pod).await;
        assert_eq!(pods(&mut env).await, vec![], "{what}");
        assert_clean(&env, &what);
        assert_no_container_left(&env, &ids, &what);
    }
    // No monitor or pod init of this daemon is left.
    let dir = env.d.config.dir.path().to_string_lossy().to_string();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let monitors: Vec<i32> = std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| {
                let pid: i32 = e.file_name().to_str()?.parse().ok()?;
                let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
                let cmd = String::from_utf8_lossy(&cmd);
                (cmd.contains("berth-monitor") && cmd.contains(&dir)).then_some(pid)
            })
            .collect();
        if monitors.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "monitors left: {monitors:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
