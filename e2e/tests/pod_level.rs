//! Pods whose containers share one PID namespace (PID mode POD): Berth's
//! pod init is PID 1 there, reaps orphans, can't be used to reach the host,
//! dies with StopPodSandbox and survives a berthd restart; and every pod's
//! /dev/shm tmpfs, shared by its containers; systemd slice names as cgroup
//! parents; an ephemeral container in the PID namespace of its target
//! (PID mode TARGET, `kubectl debug --target`). Needs root.

use std::time::{Duration, Instant};

use berth_api::v1::*;
use berth_e2e::cleanup::{mounts_under, pids_in_namespaces, pinned_pid_namespaces};
use berth_e2e::pods::*;

fn shared_pid(mut pc: PodSandboxConfig) -> PodSandboxConfig {
    pod_namespaces(&mut pc).pid = NamespaceMode::Pod as i32;
    pc
}

fn ctr(name: &str, script: &str) -> ContainerConfig {
    let mut c = ctr_config(name, BUSYBOX, script);
    container_security(&mut c)
        .namespace_options
        .get_or_insert_with(Default::default)
        .pid = NamespaceMode::Pod as i32;
    c
}

async fn run_shared_pid_pod(env: &mut PodEnv, name: &str) -> (String, PodSandboxConfig) {
    let pc = shared_pid(pod_config(env, name));
    (run_pod_with(&mut env.c, &pc).await, pc)
}

async fn out(env: &mut PodEnv, id: &str, script: &str) -> String {
    let r = exec(&mut env.c, id, &sh(script), 10).await.unwrap();
    assert_eq!(
        r.exit_code,
        0,
        "{script}: {}",
        String::from_utf8_lossy(&r.stderr)
    );
    String::from_utf8_lossy(&r.stdout).into_owned()
}

/// The pod's PID namespace (inode of its pin), found under the daemon's dirs.
/// The pid (on the host) of the pod's init.
fn pod_init_pid(env: &PodEnv, pod: &str) -> i32 {
    pids_in_namespaces(&[pod_pid_ns(env, pod)])
        .into_iter()
        .find(|p| {
            std::fs::read_to_string(format!("/proc/{p}/comm"))
                .is_ok_and(|c| c.trim() == "berth-pod-init")
        })
        .expect("the pod init")
}

fn pod_pid_ns(env: &PodEnv, pod: &str) -> u64 {
    let dir = env.d.config.state.join("pods").join(pod);
    let ns = pinned_pid_namespaces(&dir);
    assert_eq!(ns.len(), 1, "pid pin of {pod}: {ns:?}");
    ns[0]
}

/// A container of PID mode TARGET (the kubelet's ephemeral container of
/// `kubectl debug --target`) in a pod of per-container PID namespaces:
/// it sees and can signal its target's processes, and nobody else's; a
/// target that is not running or not in the pod is refused, and the
/// refusal leaves no container behind.
#[tokio::test]
async fn a_target_pid_container_joins_its_targets_namespace() {
    let mut env = setup(&[BUSYBOX]).await;
    let (pod, pc) = run_pod(&mut env, "debug").await;
    let app = running(
        &mut env.c,
        &pod,
        &pc,
        ctr_config("app", BUSYBOX, "sleep 1001 & exec sleep 1002"),
    )
    .await;
    let other = running(
        &mut env.c,
        &pod,
        &pc,
        ctr_config("other", BUSYBOX, "exec sleep 1003"),
    )
    .await;
    let target = |name: &str, target_id: &str| {
        let mut c = ctr_config(name, BUSYBOX, "exec sleep 1000");
        let sc = c.linux.as_mut().unwrap().security_context.as_mut().unwrap();
        let ns = sc.namespace_options.as_mut().unwrap();
        ns.pid = NamespaceMode::Target as i32;
        ns.target_id = target_id.to_string();
        c
    };
    let debug = running(&mut env.c, &pod, &pc, target("debug", &app)).await;

    let ps = out(&mut env, &debug, "ps -o pid,args").await;
    assert!(
        ps.contains("sleep 1001") && ps.contains("sleep 1002"),
        "{ps}"
    );
    assert!(
        !ps.contains("sleep 1003"),
        "another container's process: {ps}"
    );
    let ns_of = |s: &str| s.trim().to_string();
    let app_ns = ns_of(&out(&mut env, &app, "readlink /proc/self/ns/pid").await);
    let debug_ns = ns_of(&out(&mut env, &debug, "readlink /proc/self/ns/pid").await);
    assert_eq!(app_ns, debug_ns);
    // It signals the target's processes: the background sleep ends.
    out(
        &mut env,
        &debug,
        "kill $(ps -o pid,args | awk '$2 == \"sleep\" && $3 == 1001 {print $1}')",
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while out(&mut env, &app, "ps -o args")
        .await
        .contains("sleep 1001")
    {
        assert!(
            Instant::now() < deadline,
            "sleep 1001 survived the debug container's kill"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Refused: a target that has exited, one of another pod, none at all.
    // Started, not waited for RUNNING: it may exit before anyone looks.
    let done = create(
        &mut env.c,
        &pod,
        &pc,
        ctr_config("done", BUSYBOX, "sleep 0.2"),
    )
    .await
    .unwrap();
    start(&mut env.c, &done).await;
    wait_state(&mut env.c, &done, ContainerState::ContainerExited).await;
    let (pod2, pc2) = run_pod(&mut env, "debug-2").await;
    let before = list_ids(&mut env).await;
    let cases = [
        (
            &pod,
            &pc,
            target("d1", &done),
            tonic::Code::FailedPrecondition,
        ),
        (&pod2, &pc2, target("d2", &other), tonic::Code::NotFound),
        (&pod, &pc, target("d3", ""), tonic::Code::InvalidArgument),
    ];
    for (p, c, cfg, code) in cases {
        let err = create(&mut env.c, p, c, cfg).await.unwrap_err();
        assert_eq!(err.code(), code, "{err:?}");
    }
    assert_eq!(list_ids(&mut env).await, before);
    for p in [&pod, &pod2] {
        stop_pod(&mut env.c, p).await;
        remove_pod(&mut env.c, p).await;
    }
}

async fn list_ids(env: &mut PodEnv) -> Vec<String> {
    let mut ids: Vec<String> = env
        .c
        .runtime
        .list_containers(ListContainersRequest::default())
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
async fn pod_init_shares_reaps_and_dies_with_the_pod() {
    let mut env = setup(&[BUSYBOX]).await;
    let (pod, pc) = run_shared_pid_pod(&mut env, "pidpod").await;
    let a = running(&mut env.c, &pod, &pc, ctr("a", "exec sleep 1001")).await;
    let b = running(&mut env.c, &pod, &pc, ctr("b", "exec sleep 1002")).await;

    // PID 1 is Berth's init, and each container sees the other's processes.
    assert_eq!(
        out(&mut env, &a, "cat /proc/1/cmdline").await,
        "berth-pod-init\0"
    );
    let ps = out(&mut env, &a, "cat /proc/[0-9]*/cmdline | tr '\\0' ' '").await;
    assert!(
        ps.contains("sleep 1001") && ps.contains("sleep 1002"),
        "{ps}"
    );

    // The init offers no way out: not dumpable, so /proc/1/root and
    // /proc/1/exe are closed to the (unprivileged) containers.
    let r = exec(
        &mut env.c,
        &a,
        &sh("ls /proc/1/root/ || readlink /proc/1/exe"),
        10,
    )
    .await
    .unwrap();
    assert_ne!(r.exit_code, 0, "{}", String::from_utf8_lossy(&r.stdout));

    // It runs as nobody, without capabilities.
    let st = out(
        &mut env,
        &a,
        "grep -E '^(Uid|Gid|Groups|CapEff|CapBnd|CapPrm):' /proc/1/status",
    )
    .await;
    assert!(st.contains("Uid:\t65534\t65534\t65534\t65534"), "{st}");
    assert!(st.contains("CapEff:\t0000000000000000"), "{st}");
    assert!(st.contains("CapPrm:\t0000000000000000"), "{st}");

    // Orphans are reaped: a grandchild whose parent exits first must not
    // stay a zombie.
    out(&mut env, &b, "sh -c 'sleep 0.2 &'; sleep 1").await;
    let zombies = out(
        &mut env,
        &b,
        "for s in /proc/[0-9]*/stat; do read -r l < $s && case $l in *') Z '*) echo $l;; esac; done; true",
    )
    .await;
    assert_eq!(zombies, "", "zombies in the pod");

    // /dev/shm: one 64 MiB tmpfs per pod, shared by its containers.
    out(&mut env, &a, "echo hi > /dev/shm/x").await;
    assert_eq!(out(&mut env, &b, "cat /dev/shm/x").await, "hi\n");
    let df = out(&mut env, &b, "df -k /dev/shm | tail -1").await;
    assert!(df.split_whitespace().nth(1) == Some("65536"), "{df}");

    // StopPodSandbox: the containers exit and nothing is left in the namespace.
    let ns = pod_pid_ns(&env, &pod);
    assert!(!pids_in_namespaces(&[ns]).is_empty());
    stop_pod(&mut env.c, &pod).await;
    for id in [&a, &b] {
        wait_state(&mut env.c, id, ContainerState::ContainerExited).await;
    }
    // (The dead init may stay a zombie a moment, until the host's init reaps it.)
    let deadline = Instant::now() + Duration::from_secs(5);
    while !pids_in_namespaces(&[ns]).is_empty() {
        assert!(
            Instant::now() < deadline,
            "{:?} left in the pod's PID namespace",
            pids_in_namespaces(&[ns])
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        pod_status(&mut env.c, &pod).await.state,
        PodSandboxState::SandboxNotready as i32
    );

    // RemovePodSandbox: no pin or tmpfs mount left.
    remove_pod(&mut env.c, &pod).await;
    let left = mounts_under(&env.d.config.state.join("pods"));
    assert!(left.is_empty(), "{left:?}");
}

/// A container given CAP_SYS_PTRACE may open `/proc/1/exe` of its pod's
/// init: what it reaches is berthd's sealed in-memory copy of
/// berth-monitor, which nothing can change, never a file of the host (the
/// CVE-2019-5736 class; before, it was berthd's own binary).
#[tokio::test]
async fn the_pod_init_runs_from_a_sealed_copy() {
    let mut env = setup(&[BUSYBOX]).await;
    let (pod, pc) = run_shared_pid_pod(&mut env, "pidsealed").await;
    let mut cfg = ctr("p", "exec sleep 1005");
    container_security(&mut cfg).capabilities = Some(Capability {
        add_capabilities: vec!["SYS_PTRACE".into()],
        ..Default::default()
    });
    let p = running(&mut env.c, &pod, &pc, cfg).await;
    let exe = out(&mut env, &p, "readlink /proc/1/exe").await;
    assert_eq!(exe.trim(), "/memfd:berth-monitor (deleted)");
    // Opened for writing through /proc, it refuses.
    let r = exec(&mut env.c, &p, &sh("echo x >> /proc/1/exe"), 10)
        .await
        .unwrap();
    assert_ne!(r.exit_code, 0, "the pod init's executable took a write");

    // The same from the host: the init runs from a memfd whose every seal is set.
    let init = pod_init_pid(&env, &pod);
    let f = std::fs::File::open(format!("/proc/{init}/exe")).unwrap();
    use nix::fcntl::{FcntlArg, SealFlag, fcntl};
    let seals = SealFlag::from_bits_truncate(fcntl(&f, FcntlArg::F_GET_SEALS).unwrap());
    let all = SealFlag::F_SEAL_SEAL
        | SealFlag::F_SEAL_SHRINK
        | SealFlag::F_SEAL_GROW
        | SealFlag::F_SEAL_WRITE;
    assert!(seals.contains(all), "seals {seals:?}");
    remove_pod(&mut env.c, &pod).await;
}

#[tokio::test]
async fn pod_init_survives_a_restart_and_its_death_stops_the_pod() {
    let mut env = setup(&[BUSYBOX]).await;
    let (pod, pc) = run_shared_pid_pod(&mut env, "pidrestart").await;
    let a = running(&mut env.c, &pod, &pc, ctr("a", "exec sleep 1003")).await;

    env.d.kill9().await.unwrap();
    env.d.restart().await.unwrap();
    env.c = env.d.client().await.unwrap();
    assert_eq!(
        pod_status(&mut env.c, &pod).await.state,
        PodSandboxState::SandboxReady as i32
    );
    assert_eq!(
        out(&mut env, &a, "cat /proc/1/cmdline").await,
        "berth-pod-init\0"
    );
    // A container created after the restart joins the same namespace.
    let b = running(&mut env.c, &pod, &pc, ctr("b", "exec sleep 1004")).await;
    let ps = out(&mut env, &b, "cat /proc/[0-9]*/cmdline | tr '\\0' ' '").await;
    assert!(ps.contains("sleep 1003"), "{ps}");

    // The init killed from outside: the kernel kills the pod's processes,
    // the containers report exited and the pod NOTREADY (the kubelet then
    // recreates it).
    let init = pod_init_pid(&env, &pod);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(init),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while pod_status(&mut env.c, &pod).await.state != PodSandboxState::SandboxNotready as i32 {
        assert!(
            Instant::now() < deadline,
            "pod still READY after its init died"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for id in [&a, &b] {
        let s = wait_state(&mut env.c, id, ContainerState::ContainerExited).await;
        assert_eq!(s.exit_code, 137, "{s:?}");
    }
    let e = create(&mut env.c, &pod, &pc, ctr("c", "true"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
}

#[tokio::test]
async fn slice_cgroup_parents_expand_like_systemd() {
    let mut env = setup(&[BUSYBOX]).await;
    let tag = format!("e2e{}", std::process::id());
    let slice = format!("berthtest-{tag}.slice");
    let mut pc = pod_config(&env, "slice");
    pc.linux.as_mut().unwrap().cgroup_parent = slice.clone();
    let pod = run_pod_with(&mut env.c, &pc).await;
    let id = running(
        &mut env.c,
        &pod,
        &pc,
        ctr_config("c", BUSYBOX, "exec sleep 1005"),
    )
    .await;
    let want = format!("/berthtest.slice/berthtest-{tag}.slice/berth-{id}.scope");
    // The container's cgroup dir: under a v1 controller, or the v2 root.
    let dirs: Vec<_> = std::fs::read_dir("/sys/fs/cgroup")
        .unwrap()
        .flatten()
        .map(|r| r.path().join(&want[1..]))
        .chain([std::path::Path::new("/sys/fs/cgroup").join(&want[1..])])
        .filter(|d| d.is_dir())
        .collect();
    assert!(!dirs.is_empty(), "no cgroup dir {want}");
    remove_pod(&mut env.c, &pod).await;
    // The slices are the kubelet's to remove; the test made them, it removes them.
    for root in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        let top = root.path().join("berthtest.slice");
        let _ = std::fs::remove_dir(top.join(format!("berthtest-{tag}.slice")));
        let _ = std::fs::remove_dir(&top);
    }
}
