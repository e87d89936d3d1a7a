//! ExecSync, ReopenContainerLog and UpdateContainerResources against a real
//! berthd and busybox from the registry fixture. Needs root.
//!
//! The helpers are those of `container.rs` (each test file is its own crate).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use berth_api::v1::*;
use berth_e2e::client::CriClient;
use berth_e2e::daemon::{Berthd, BerthdConfig};
use berth_e2e::registry::Registry;
use tonic::Code;

const BUSYBOX: &str = "berth-test/busybox:latest";

use berth_e2e::cleanup::Guard;

struct Env {
    _reg: Registry,
    d: Berthd,
    c: CriClient,
    _g: Guard,
}

/// Registry with the test images, a daemon that pulls from it, busybox pulled.
async fn setup() -> Env {
    let reg = Registry::start().unwrap();
    reg.push_test_images().unwrap();
    let hp = reg.host_port();
    let mut config = BerthdConfig::new().unwrap();
    config.registries_conf = Some(format!(
        "[[registry]]\nprefix = \"docker.io/berth-test\"\nlocation = \"{hp}/berth-test\"\ninsecure = true\n"
    ));
    let g = Guard(config.dir.path().to_path_buf());
    let d = Berthd::start_with(config).await.unwrap();
    let mut c = d.client().await.unwrap();
    c.image
        .pull_image(PullImageRequest {
            image: Some(ImageSpec {
                image: BUSYBOX.into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    Env {
        _reg: reg,
        d,
        c,
        _g: g,
    }
}

fn ns_options() -> NamespaceOption {
    NamespaceOption {
        network: NamespaceMode::Pod as i32,
        ipc: NamespaceMode::Pod as i32,
        pid: NamespaceMode::Container as i32,
        ..Default::default()
    }
}

fn pod_config(env: &Env, name: &str) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.into(),
            uid: format!("uid-{name}"),
            namespace: "default".into(),
            attempt: 0,
        }),
        hostname: format!("host-{name}"),
        log_directory: env
            .d
            .config
            .dir
            .path()
            .join("logs")
            .join(name)
            .display()
            .to_string(),
        linux: Some(LinuxPodSandboxConfig {
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(ns_options()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

async fn run_pod(env: &mut Env, name: &str) -> (String, PodSandboxConfig) {
    let config = pod_config(env, name);
    let id = env
        .c
        .runtime
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .pod_sandbox_id;
    (id, config)
}

fn ctr_config(name: &str, image: &str, script: &str) -> ContainerConfig {
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(ImageSpec {
            image: image.into(),
            ..Default::default()
        }),
        command: vec!["sh".into(), "-c".into(), script.into()],
        log_path: format!("{name}/0.log"),
        labels: HashMap::from([("ctr".into(), name.into())]),
        annotations: HashMap::from([("note".into(), "hi".into())]),
        linux: Some(LinuxContainerConfig {
            security_context: Some(LinuxContainerSecurityContext {
                namespace_options: Some(ns_options()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

async fn create(
    c: &mut CriClient,
    pod: &str,
    pod_config: &PodSandboxConfig,
    config: ContainerConfig,
) -> Result<String, tonic::Status> {
    c.runtime
        .create_container(CreateContainerRequest {
            pod_sandbox_id: pod.into(),
            config: Some(config),
            sandbox_config: Some(pod_config.clone()),
        })
        .await
        .map(|r| r.into_inner().container_id)
}

async fn start(c: &mut CriClient, id: &str) {
    c.runtime
        .start_container(StartContainerRequest {
            container_id: id.into(),
        })
        .await
        .unwrap();
}

async fn status(c: &mut CriClient, id: &str) -> Result<ContainerStatus, tonic::Status> {
    c.runtime
        .container_status(ContainerStatusRequest {
            container_id: id.into(),
            verbose: false,
        })
        .await
        .map(|r| r.into_inner().status.unwrap())
}

async fn wait_state(c: &mut CriClient, id: &str, want: ContainerState) -> ContainerStatus {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = status(c, id).await.unwrap();
        if s.state == want as i32 || Instant::now() > deadline {
            assert_eq!(s.state, want as i32, "{s:?}");
            return s;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn exec(
    c: &mut CriClient,
    id: &str,
    cmd: &[&str],
    timeout: i64,
) -> Result<ExecSyncResponse, tonic::Status> {
    // The kubelet accepts 16 MiB answers; tonic's default is 4 MiB.
    let mut rt = c.runtime.clone().max_decoding_message_size(17 << 20);
    rt.exec_sync(ExecSyncRequest {
        container_id: id.into(),
        cmd: cmd.iter().map(|s| s.to_string()).collect(),
        timeout,
    })
    .await
    .map(|r| r.into_inner())
}

fn sh(script: &str) -> [&str; 3] {
    ["sh", "-c", script]
}

async fn running(
    env: &mut Env,
    pod: &str,
    pc: &PodSandboxConfig,
    name: &str,
    script: &str,
) -> String {
    let id = create(&mut env.c, pod, pc, ctr_config(name, BUSYBOX, script))
        .await
        .unwrap();
    start(&mut env.c, &id).await;
    wait_state(&mut env.c, &id, ContainerState::ContainerRunning).await;
    id
}

#[tokio::test]
async fn exec_sync_output_namespaces_timeout_and_errors() {
    let mut env = setup().await;
    let (pod, pc) = run_pod(&mut env, "exec").await;
    let id = running(&mut env, &pod, &pc, "main", "exec sleep 1000").await;

    // Output of both streams and the exit code.
    let r = exec(&mut env.c, &id, &sh("echo out; echo err >&2; exit 7"), 10)
        .await
        .unwrap();
    assert_eq!(
        (r.stdout.as_slice(), r.stderr.as_slice(), r.exit_code),
        (&b"out\n"[..], &b"err\n"[..], 7)
    );

    // The container's UTS and PID namespaces: its hostname, its init as pid 1.
    let r = exec(&mut env.c, &id, &["hostname"], 10).await.unwrap();
    assert_eq!(String::from_utf8_lossy(&r.stdout).trim(), "host-exec");
    let r = exec(&mut env.c, &id, &["cat", "/proc/1/cmdline"], 10)
        .await
        .unwrap();
    assert_eq!(
        r.stdout,
        b"sleep\x001000\x00",
        "{:?}",
        String::from_utf8_lossy(&r.stdout)
    );
    // The container's user and capability set (busybox runs as root here,
    // with the default, not the full, bounding set).
    let r = exec(
        &mut env.c,
        &id,
        &sh("id -u; grep CapBnd /proc/self/status"),
        10,
    )
    .await
    .unwrap();
    let out = String::from_utf8_lossy(&r.stdout);
    assert!(out.starts_with("0\n"), "{out}");
    assert!(
        !out.contains("000001ffffffffff"),
        "full capability set: {out}"
    );

    // Timeout: DeadlineExceeded within ~2 s, and the process is gone.
    let t = Instant::now();
    let e = exec(&mut env.c, &id, &["sleep", "100"], 1)
        .await
        .unwrap_err();
    let took = t.elapsed();
    assert_eq!(e.code(), Code::DeadlineExceeded, "{e:?}");
    assert!(e.message().contains("sleep"), "{}", e.message());
    assert!(took < Duration::from_millis(2500), "took {took:?}");
    let r = exec(
        &mut env.c,
        &id,
        &sh("cat /proc/[0-9]*/cmdline | tr '\\0' ' '"),
        10,
    )
    .await
    .unwrap();
    let procs = String::from_utf8_lossy(&r.stdout);
    assert!(!procs.contains("sleep 100 "), "leftover exec: {procs}");

    // Output over the cap is truncated, not an error.
    let r = exec(
        &mut env.c,
        &id,
        &sh("head -c 20000000 /dev/zero; echo done"),
        30,
    )
    .await
    .unwrap();
    assert_eq!(r.exit_code, 0);
    assert_eq!(r.stdout.len() + r.stderr.len(), (16 << 20) - 4096);

    // Bad requests.
    let e = exec(&mut env.c, &id, &[], 1).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    let e = exec(&mut env.c, "nope", &["true"], 1).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    let e = exec(&mut env.c, &id, &["/no/such/binary"], 5).await;
    assert!(
        e.as_ref().is_err() || e.as_ref().unwrap().exit_code != 0,
        "{e:?}"
    );
    let done = create(&mut env.c, &pod, &pc, ctr_config("done", BUSYBOX, "exit 0"))
        .await
        .unwrap();
    start(&mut env.c, &done).await;
    wait_state(&mut env.c, &done, ContainerState::ContainerExited).await;
    let e = exec(&mut env.c, &done, &["true"], 1).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");

    // Latency of the kubelet's exec probes.
    let mut times = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        let r = exec(&mut env.c, &id, &["true"], 5).await.unwrap();
        times.push(t.elapsed());
        assert_eq!(r.exit_code, 0);
    }
    times.sort();
    println!(
        "ExecSync `true`: median {:?}, p90 {:?}",
        times[10], times[18]
    );
}

#[tokio::test]
async fn reopen_log_and_update_resources() {
    let mut env = setup().await;
    let (pod, pc) = run_pod(&mut env, "reopen").await;
    let script = "i=0; while true; do i=$((i+1)); echo line$i; sleep 0.2; done";
    let id = running(&mut env, &pod, &pc, "ticker", script).await;
    let log = Path::new(&pc.log_directory).join("ticker/0.log");
    let wait_lines = |p: PathBuf| async move {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let text = std::fs::read_to_string(&p).unwrap_or_default();
            if text.contains("stdout F line") || Instant::now() > deadline {
                return text;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    assert!(wait_lines(log.clone()).await.contains("stdout F line"));
    let rotated = log.with_extension("log.1");
    std::fs::rename(&log, &rotated).unwrap();
    env.c
        .runtime
        .reopen_container_log(ReopenContainerLogRequest {
            container_id: id.clone(),
        })
        .await
        .unwrap();
    let text = wait_lines(log.clone()).await;
    assert!(text.contains("stdout F line"), "new log: {text:?}");
    let old = std::fs::read_to_string(&rotated).unwrap();
    let last_old: u32 = old
        .lines()
        .last()
        .unwrap()
        .rsplit("line")
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let first_new: u32 = text
        .lines()
        .next()
        .unwrap()
        .rsplit("line")
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(first_new > last_old, "{old}\n---\n{text}");

    // Memory limit on the live cgroup, read back from inside.
    let limit = 96i64 << 20;
    env.c
        .runtime
        .update_container_resources(UpdateContainerResourcesRequest {
            container_id: id.clone(),
            linux: Some(LinuxContainerResources {
                memory_limit_in_bytes: limit,
                cpu_shares: 512,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    let r = exec(
        &mut env.c,
        &id,
        &sh("cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max"),
        10,
    )
    .await
    .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&r.stdout).trim(),
        limit.to_string(),
        "stderr: {}",
        String::from_utf8_lossy(&r.stderr)
    );
    let e = env
        .c
        .runtime
        .update_container_resources(UpdateContainerResourcesRequest {
            container_id: id.clone(),
            linux: Some(LinuxContainerResources {
                memory_limit_in_bytes: -5,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");

    // Neither works on an exited container.
    env.c
        .runtime
        .stop_container(StopContainerRequest {
            container_id: id.clone(),
            timeout: 0,
        })
        .await
        .unwrap();
    let e = env
        .c
        .runtime
        .reopen_container_log(ReopenContainerLogRequest {
            container_id: id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
}
