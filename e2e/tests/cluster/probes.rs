//! Probes and the container lifecycle as the kubelet drives them through Berth: liveness (exec,
//! HTTP) restarts, readiness gating EndpointSlices, startupProbe, init containers, hooks, grace
//! periods, Jobs, OOM kills, restart policies.

use std::time::{Duration, Instant};

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::ListParams;
use serde_json::json;

use crate::common::*;
use crate::node::*;

/// Waits for restartCount 1 and then 2, and checks that each restart ran a new container
/// (new ID) after the last one was killed (lastState terminated).
async fn assert_restarts(ns: &TestNs, pod: &str, container: &str) {
    let mut ids = Vec::new();
    for want in 1..=2 {
        // Back-off after the first restart is 10 s, then 20 s.
        let p = ns
            .wait_pod(
                pod,
                &format!("restarted {want} time(s)"),
                Duration::from_secs(90),
                |p| {
                    restart_count(p, container) >= want
                        && has_container_status(p, container)
                            .is_some_and(|c| c.container_id.is_some())
                },
            )
            .await;
        let status = container_status(&p, container);
        let last = status
            .last_state
            .as_ref()
            .and_then(|s| s.terminated.as_ref());
        assert!(
            last.is_some(),
            "restart {want}: no lastState.terminated: {status:?}"
        );
        let id = status.container_id.clone().unwrap();
        // Berth keeps the attempt the kubelet gave the container (its restart number).
        let node = p.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap();
        let attempt = crictl_attempt(&node, &id);
        assert_eq!(
            attempt,
            i64::from(status.restart_count),
            "restart {want}: the container's CRI attempt"
        );
        ids.push(id);
    }
    assert_ne!(ids[0], ids[1], "a restart reused the container ID");
}

/// metadata.attempt of a container, as `crictl inspect` on its node shows it.
fn crictl_attempt(node: &str, container_id: &str) -> i64 {
    let id = container_id
        .split_once("://")
        .map_or(container_id, |(_, id)| id);
    let out = node_run(node, "crictl", &["inspect", id]).unwrap();
    let inspect: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("crictl inspect {id}: {e}: {out}"));
    inspect["status"]["metadata"]["attempt"]
        .as_i64()
        .unwrap_or(0)
}

#[tokio::test]
async fn liveness_exec_failing_restarts() {
    let ns = TestNs::new("live-exec").await;
    let mut c = busybox("app", "sleep 3600");
    c["livenessProbe"] = json!({ "exec": { "command": ["cat", "/tmp/healthy"] }, "periodSeconds": 1, "failureThreshold": 2 });
    ns.create::<Pod>(pod("live", "Always", vec![c], json!({})))
        .await;
    assert_restarts(&ns, "live", "app").await;
    let events = ns.events();
    assert!(
        events.contains("Liveness probe failed"),
        "no probe failure event:\n{events}"
    );
}

#[tokio::test]
async fn liveness_http_failing_restarts() {
    let ns = TestNs::new("live-http").await;
    let c = json!({
        "name": "web", "image": NGINX, "imagePullPolicy": "IfNotPresent",
        "livenessProbe": { "httpGet": { "path": "/missing", "port": 80 }, "periodSeconds": 1, "failureThreshold": 2 },
    });
    ns.create::<Pod>(pod("live", "Always", vec![c], json!({})))
        .await;
    assert_restarts(&ns, "live", "web").await;
    let events = ns.events();
    assert!(
        events.contains("statuscode: 404"),
        "no HTTP 404 probe failure event:\n{events}"
    );
}

#[tokio::test]
async fn readiness_gates_endpoints() {
    let ns = TestNs::new("ready").await;
    for (name, probe) in [("yes", "true"), ("no", "false")] {
        let mut c = busybox("app", "sleep 3600");
        c["readinessProbe"] = json!({ "exec": { "command": [probe] }, "periodSeconds": 1 });
        let mut manifest = pod(name, "Always", vec![c], json!({}));
        manifest["metadata"]["labels"] = json!({ "app": "gated" });
        ns.create::<Pod>(manifest).await;
    }
    ns.create::<Service>(json!({
        "metadata": { "name": "gated" },
        "spec": { "selector": { "app": "gated" }, "ports": [{ "port": 80 }] },
    }))
    .await;
    let yes_ip = ns.pod_ip("yes").await;
    let no = ns
        .wait_pod("no", "running", Duration::from_secs(60), |p| {
            has_container_status(p, "app").is_some_and(|c| c.started == Some(true))
                && p.status.as_ref().unwrap().pod_ip.is_some()
        })
        .await;
    let no_ip = no.status.unwrap().pod_ip.unwrap();

    // Both pods are in the slice once the controller saw them; only the probed-ready one is ready.
    let slices: kube::Api<EndpointSlice> = ns.api();
    let endpoints = wait_for(
        "both pods in the EndpointSlice",
        Duration::from_secs(30),
        || async {
            let list = slices
                .list(&ListParams::default().labels("kubernetes.io/service-name=gated"))
                .await
                .ok()?;
            let endpoints: Vec<(String, Option<bool>)> = list
                .items
                .iter()
                .flat_map(|s| s.endpoints.iter().flatten())
                .map(|e| {
                    (
                        e.addresses[0].clone(),
                        e.conditions.as_ref().and_then(|c| c.ready),
                    )
                })
                .collect();
            (endpoints.len() == 2).then_some(endpoints)
        },
    )
    .await;
    assert!(
        endpoints.contains(&(yes_ip.clone(), Some(true))),
        "{yes_ip} not ready in {endpoints:?}"
    );
    assert!(
        endpoints.contains(&(no_ip.clone(), Some(false))),
        "{no_ip} not unready in {endpoints:?}"
    );

    // And it stays that way: the failing probe never lets it in.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let no = ns.api::<Pod>().get("no").await.unwrap();
    assert!(
        !pod_ready(&no),
        "a pod whose readiness probe fails is Ready"
    );
    assert_eq!(
        restart_count(&no, "app"),
        0,
        "a readiness failure restarted the container"
    );
}

#[tokio::test]
async fn startup_probe_holds_liveness_then_fails_to_restart() {
    let ns = TestNs::new("startup").await;
    // Starts after ~4 s; liveness (same check, threshold 1) would kill it if it ran before the
    // startup probe succeeded.
    let mut slow = busybox("app", "sleep 4; touch /tmp/started; sleep 3600");
    slow["startupProbe"] = json!({ "exec": { "command": ["test", "-f", "/tmp/started"] }, "periodSeconds": 1, "failureThreshold": 30 });
    slow["livenessProbe"] = json!({ "exec": { "command": ["test", "-f", "/tmp/started"] }, "periodSeconds": 1, "failureThreshold": 1 });
    ns.create::<Pod>(pod("slow", "Always", vec![slow], json!({})))
        .await;
    // Never starts: the startup probe's failures restart it.
    let mut never = busybox("app", "sleep 3600");
    never["startupProbe"] =
        json!({ "exec": { "command": ["false"] }, "periodSeconds": 1, "failureThreshold": 2 });
    ns.create::<Pod>(pod("never", "Always", vec![never], json!({})))
        .await;

    let slow = ns
        .wait_pod("slow", "Ready", Duration::from_secs(60), pod_ready)
        .await;
    let status = container_status(&slow, "app");
    assert_eq!(status.started, Some(true));
    assert_eq!(
        status.restart_count, 0,
        "killed before its startup probe succeeded: {status:?}"
    );
    let running_since = status
        .state
        .as_ref()
        .unwrap()
        .running
        .as_ref()
        .unwrap()
        .started_at
        .clone()
        .unwrap()
        .0;
    let ready_at = slow
        .status
        .as_ref()
        .unwrap()
        .conditions
        .as_ref()
        .unwrap()
        .iter()
        .find(|c| c.type_ == "Ready")
        .and_then(|c| c.last_transition_time.clone())
        .unwrap()
        .0;
    let held = ready_at.as_second() - running_since.as_second();
    assert!(
        held >= 3,
        "Ready {held} s after the start: the startup probe did not hold it"
    );

    let never = ns
        .wait_pod(
            "never",
            "restarted by its startup probe",
            Duration::from_secs(60),
            |p| restart_count(p, "app") >= 1,
        )
        .await;
    let status = container_status(&never, "app");
    assert_ne!(
        status.started,
        Some(true),
        "a container whose startup probe fails is started"
    );
    let events = ns.events();
    assert!(
        events.contains("Startup probe failed"),
        "no startup probe failure event:\n{events}"
    );
}

#[tokio::test]
async fn init_containers_run_in_order() {
    let ns = TestNs::new("init").await;
    let work = json!([{ "name": "work", "mountPath": "/work" }]);
    let inits: Vec<_> = (1..=3)
        .map(|i| {
            let mut c = busybox(
                &format!("init-{i}"),
                &format!("echo init-{i} >> /work/order; sleep 1"),
            );
            c["volumeMounts"] = work.clone();
            c
        })
        .collect();
    let mut main = busybox("main", "cat /work/order; echo main");
    main["volumeMounts"] = work;
    let (pod, logs) = ns
        .run_to_success(
            pod(
                "init",
                "Never",
                vec![main],
                json!({ "initContainers": inits, "volumes": [{ "name": "work", "emptyDir": {} }] }),
            ),
            Duration::from_secs(90),
        )
        .await;
    assert_eq!(logs, "init-1\ninit-2\ninit-3\nmain\n");
    let inits = pod.status.unwrap().init_container_statuses.unwrap();
    let mut last_finished = None;
    for (i, status) in inits.iter().enumerate() {
        assert_eq!(status.name, format!("init-{}", i + 1));
        let done = status
            .state
            .as_ref()
            .and_then(|s| s.terminated.as_ref())
            .expect("init terminated");
        assert_eq!(
            (done.exit_code, done.reason.as_deref()),
            (0, Some("Completed")),
            "{status:?}"
        );
        let started = done.started_at.clone().unwrap().0;
        if let Some(previous) = last_finished {
            assert!(
                started >= previous,
                "init-{} started before init-{} finished",
                i + 1,
                i
            );
        }
        last_finished = Some(done.finished_at.clone().unwrap().0);
    }
}

#[tokio::test]
async fn post_start_and_pre_stop_hooks() {
    let ns = TestNs::new("hooks").await;
    let dir = NodeDir::new(&ns.name);
    let host_dir = dir.path.clone();
    // The main process waits for what postStart writes; preStop writes to the node.
    let mut c = busybox(
        "app",
        "while [ ! -f /hook/post-start ]; do sleep 0.1; done; echo saw-post-start; sleep 3600",
    );
    c["volumeMounts"] = json!([{ "name": "hook", "mountPath": "/hook" }]);
    c["lifecycle"] = json!({
        "postStart": { "exec": { "command": ["sh", "-c", "echo $$ > /hook/post-start"] } },
        "preStop": { "exec": { "command": ["sh", "-c", "echo pre-stop > /hook/pre-stop"] } },
    });
    let manifest = pod(
        "hooks",
        "Always",
        vec![c],
        json!({
            "nodeName": dir.node,
            "volumes": [{ "name": "hook", "hostPath": { "path": host_dir, "type": "Directory" } }],
        }),
    );
    ns.create::<Pod>(manifest).await;
    ns.wait_pod("hooks", "Ready", Duration::from_secs(60), pod_ready)
        .await;
    wait_for(
        "the container saw postStart's file",
        Duration::from_secs(20),
        || async {
            ns.logs("hooks", None)
                .await
                .contains("saw-post-start")
                .then_some(())
        },
    )
    .await;
    assert!(
        !node_exists(&dir.node, &format!("{host_dir}/pre-stop")),
        "preStop ran early"
    );
    delete_pod_and_wait(&ns, "hooks", Duration::from_secs(60)).await;
    let pre_stop =
        node_read(&dir.node, &format!("{host_dir}/pre-stop")).expect("preStop wrote nothing");
    assert_eq!(pre_stop, "pre-stop\n");
}

#[tokio::test]
async fn termination_grace_period_is_honoured() {
    let ns = TestNs::new("grace").await;
    // PID 1 without a SIGTERM handler ignores SIGTERM: only the SIGKILL after the grace period
    // stops it.
    let mut stubborn = pod(
        "stubborn",
        "Always",
        vec![busybox("app", "sleep 3600")],
        json!({}),
    );
    stubborn["spec"]["terminationGracePeriodSeconds"] = json!(6);
    // Exits on SIGTERM at once, although its grace period is long.
    let mut polite = pod(
        "polite",
        "Always",
        vec![busybox(
            "app",
            "trap 'exit 0' TERM; while true; do sleep 0.2; done",
        )],
        json!({}),
    );
    polite["spec"]["terminationGracePeriodSeconds"] = json!(60);
    ns.create::<Pod>(stubborn).await;
    ns.create::<Pod>(polite).await;
    ns.wait_pod("stubborn", "Ready", Duration::from_secs(60), pod_ready)
        .await;
    ns.wait_pod("polite", "Ready", Duration::from_secs(60), pod_ready)
        .await;

    let (stubborn_took, polite_took) = tokio::join!(
        delete_pod_and_wait(&ns, "stubborn", Duration::from_secs(60)),
        delete_pod_and_wait(&ns, "polite", Duration::from_secs(60)),
    );
    println!(
        "grace: stubborn (6 s) gone in {stubborn_took:?}, polite (60 s) gone in {polite_took:?}"
    );
    assert!(
        stubborn_took >= Duration::from_secs(6),
        "killed before its grace period: {stubborn_took:?}"
    );
    assert!(
        stubborn_took < Duration::from_secs(20),
        "not killed after its grace period: {stubborn_took:?}"
    );
    assert!(
        polite_took < Duration::from_secs(15),
        "SIGTERM did not reach it: {polite_took:?}"
    );
}

#[tokio::test]
async fn job_runs_to_completion() {
    let ns = TestNs::new("job").await;
    ns.create::<Job>(json!({
        "metadata": { "name": "count" },
        "spec": {
            "completions": 3, "parallelism": 2, "backoffLimit": 0,
            "template": { "spec": {
                "restartPolicy": "Never",
                "containers": [busybox("work", "echo done-$JOB_COMPLETION_INDEX")],
            }},
            "completionMode": "Indexed",
        },
    }))
    .await;
    let jobs: kube::Api<Job> = ns.api();
    let job = wait_for("the Job Complete", Duration::from_secs(90), || async {
        let job = jobs.get("count").await.ok()?;
        let complete = job
            .status
            .as_ref()?
            .conditions
            .as_ref()?
            .iter()
            .any(|c| c.type_ == "Complete" && c.status == "True");
        complete.then_some(job)
    })
    .await;
    assert_eq!(job.status.as_ref().unwrap().succeeded, Some(3));
    let out = kubectl(&[
        "-n",
        &ns.name,
        "logs",
        "-l",
        "job-name=count",
        "--prefix=false",
    ]);
    let mut lines: Vec<String> = text(&out.stdout).lines().map(str::to_owned).collect();
    lines.sort();
    assert_eq!(
        lines,
        ["done-0", "done-1", "done-2"],
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test]
async fn oom_killed_is_the_last_state_reason() {
    let ns = TestNs::new("oom").await;
    let mut c = busybox(
        "hog",
        "echo start; x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo survived",
    );
    c["resources"] = json!({ "limits": { "memory": "32Mi" }, "requests": { "memory": "32Mi" } });
    ns.create::<Pod>(pod("oom", "Always", vec![c], json!({})))
        .await;
    let pod = ns
        .wait_pod(
            "oom",
            "restarted after an OOM kill",
            Duration::from_secs(90),
            |p| {
                restart_count(p, "hog") >= 1
                    && has_container_status(p, "hog")
                        .and_then(|c| c.last_state.as_ref()?.terminated.as_ref())
                        .is_some()
            },
        )
        .await;
    let status = container_status(&pod, "hog");
    let last = status
        .last_state
        .as_ref()
        .unwrap()
        .terminated
        .as_ref()
        .unwrap();
    assert_eq!(last.reason.as_deref(), Some("OOMKilled"), "{status:?}");
    assert_eq!(last.exit_code, 137, "{status:?}");
}

#[tokio::test]
async fn restart_policy_never_and_on_failure() {
    let ns = TestNs::new("restart-policy").await;
    let retry = "n=$(cat /state/n 2>/dev/null || echo 0); n=$((n+1)); echo $n > /state/n; echo try-$n; [ $n -ge 2 ]";
    let mut on_failure = busybox("app", retry);
    on_failure["volumeMounts"] = json!([{ "name": "state", "mountPath": "/state" }]);
    let state = json!({ "volumes": [{ "name": "state", "emptyDir": {} }] });
    ns.create::<Pod>(pod(
        "never-fails",
        "Never",
        vec![busybox("app", "exit 3")],
        json!({}),
    ))
    .await;
    ns.create::<Pod>(pod(
        "never-ok",
        "Never",
        vec![busybox("app", "exit 0")],
        json!({}),
    ))
    .await;
    ns.create::<Pod>(pod("on-failure", "OnFailure", vec![on_failure], state))
        .await;
    ns.create::<Pod>(pod(
        "on-failure-ok",
        "OnFailure",
        vec![busybox("app", "exit 0")],
        json!({}),
    ))
    .await;

    let finished = |p: &Pod| matches!(phase(p), "Succeeded" | "Failed");
    let started = Instant::now();
    let pod = ns
        .wait_pod("never-fails", "finished", Duration::from_secs(60), finished)
        .await;
    assert_eq!(phase(&pod), "Failed");
    let status = container_status(&pod, "app");
    assert_eq!(status.restart_count, 0);
    assert_eq!(
        status
            .state
            .as_ref()
            .unwrap()
            .terminated
            .as_ref()
            .unwrap()
            .exit_code,
        3
    );

    let pod = ns
        .wait_pod("never-ok", "finished", Duration::from_secs(60), finished)
        .await;
    assert_eq!((phase(&pod), restart_count(&pod, "app")), ("Succeeded", 0));
    let pod = ns
        .wait_pod(
            "on-failure-ok",
            "finished",
            Duration::from_secs(60),
            finished,
        )
        .await;
    assert_eq!((phase(&pod), restart_count(&pod, "app")), ("Succeeded", 0));

    // The first try fails, the restart (after the 10 s back-off) succeeds.
    let pod = ns
        .wait_pod("on-failure", "finished", Duration::from_secs(60), finished)
        .await;
    assert_eq!((phase(&pod), restart_count(&pod, "app")), ("Succeeded", 1));
    let status = container_status(&pod, "app");
    assert_eq!(
        status
            .last_state
            .as_ref()
            .unwrap()
            .terminated
            .as_ref()
            .unwrap()
            .exit_code,
        1
    );
    assert_eq!(ns.logs("on-failure", None).await, "try-2\n");
    println!(
        "restart policies: all four finished in {:?}",
        started.elapsed()
    );
}
