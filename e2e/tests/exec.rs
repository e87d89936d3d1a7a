//! ExecSync, ReopenContainerLog and UpdateContainerResources against a real
//! berthd and busybox from the registry fixture. Needs root.
//!
//! The shared helpers are in `berth_e2e::pods`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use berth_api::v1::*;
use berth_e2e::pods::*;
use tonic::Code;

async fn running(
    env: &mut PodEnv,
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
    let mut env = setup(&[BUSYBOX]).await;
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
    let mut env = setup(&[BUSYBOX]).await;
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
    stop_container(&mut env.c, &id).await;
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
