//! `kill -9` of berthd under the running kubelet with 30 pods running: hack/cluster.sh's
//! supervisor restarts it (as systemd does on a kind node of hack/kind.sh), and the restarted berthd must find every pod and
//! container as they were: no pod restarted, no container recreated, logs going on.
//! Serial: it takes the runtime away from every other test's pods too.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use serde_json::json;

use crate::common::*;
use crate::node::*;

const REPLICAS: usize = 30;

/// pod name → (container ID, restart count), of the Ready pods.
async fn snapshot(pods: &kube::Api<Pod>) -> BTreeMap<String, (String, i32)> {
    let list = pods
        .list(&ListParams::default().labels("app=ticker"))
        .await
        .unwrap();
    list.items
        .iter()
        .filter(|p| pod_ready(p))
        .map(|p| {
            let status = container_status(p, "app");
            (
                p.metadata.name.clone().unwrap(),
                (status.container_id.clone().unwrap(), status.restart_count),
            )
        })
        .collect()
}

fn last_tick(logs: &str) -> u64 {
    logs.lines()
        .rev()
        .find_map(|l| l.strip_prefix("tick-")?.parse().ok())
        .unwrap_or_else(|| panic!("no tick in the log:\n{logs}"))
}

/// berthd's pid on the node: hack/cluster.sh's pid file, else berth.service's main pid (a kind
/// node's systemd).
fn berthd_pid(node: &str) -> Option<u32> {
    node_read(node, &format!("{}/berthd.pid", run_dir()))
        .or_else(|| {
            node_run(
                node,
                "systemctl",
                &["show", "-p", "MainPID", "--value", "berth"],
            )
            .ok()
        })?
        .trim()
        .parse()
        .ok()
        .filter(|pid| *pid != 0)
}

#[tokio::test]
async fn serial_berthd_kill9_keeps_pods_and_containers() {
    let ns = TestNs::new("kill9").await;
    ns.create::<Deployment>(json!({
        "metadata": { "name": "ticker" },
        "spec": {
            "replicas": REPLICAS,
            "selector": { "matchLabels": { "app": "ticker" } },
            "template": {
                "metadata": { "labels": { "app": "ticker" } },
                "spec": {
                    "terminationGracePeriodSeconds": 1,
                    // All on the node whose berthd is killed.
                    "nodeName": node_name(),
                    "containers": [{
                        "name": "app", "image": BUSYBOX, "imagePullPolicy": "IfNotPresent",
                        "command": ["sh", "-c", "i=0; while true; do echo tick-$i; i=$((i+1)); sleep 0.5; done"],
                        // Exec probes go through Berth: they must keep passing across the restart.
                        "readinessProbe": { "exec": { "command": ["true"] }, "periodSeconds": 2 },
                    }],
                },
            },
        },
    }))
    .await;
    let pods: kube::Api<Pod> = ns.api();
    let before = wait_for("30 ticker pods Ready", Duration::from_secs(150), || async {
        let ready = snapshot(&pods).await;
        (ready.len() == REPLICAS).then_some(ready)
    })
    .await;
    let watched = before.keys().next().unwrap().clone();
    let ticks_before = last_tick(&ns.logs(&watched, None).await);

    let node = node_name();
    let old_pid =
        berthd_pid(&node).expect("no berthd pid on the node: is the cluster up (hack/cluster.sh)?");
    let killed_at = Instant::now();
    node_run(&node, "kill", &["-9", &old_pid.to_string()]).expect("kill -9 berthd");
    let new_pid = wait_for(
        "berthd restarted by its supervisor",
        Duration::from_secs(30),
        || async {
            berthd_pid(&node)
                .filter(|pid| *pid != old_pid && node_exists(&node, &format!("/proc/{pid}")))
        },
    )
    .await;
    println!(
        "berthd {old_pid} killed; {new_pid} runs after {:?}",
        killed_at.elapsed()
    );

    // Let the kubelet relist (PLEG) and probe through the new berthd for a while.
    let crictl = wait_for(
        "the new berthd answers the CRI",
        Duration::from_secs(30),
        || async {
            node_run(&node, "crictl", &["pods", "-q", "--namespace", &ns.name])
                .ok()
                .map(|out| out.lines().count())
        },
    )
    .await;
    assert_eq!(
        crictl, REPLICAS,
        "the restarted berthd does not list every sandbox"
    );
    tokio::time::sleep(Duration::from_secs(15)).await;

    let after = snapshot(&pods).await;
    let all = pods
        .list(&ListParams::default().labels("app=ticker"))
        .await
        .unwrap();
    assert_eq!(all.items.len(), REPLICAS, "pods were added or removed");
    assert_eq!(
        after.len(),
        REPLICAS,
        "pods are not Ready after the restart:\n{}",
        ns.events()
    );
    for (name, (id, restarts)) in &before {
        let (id_after, restarts_after) = after
            .get(name)
            .unwrap_or_else(|| panic!("pod {name} is gone"));
        assert_eq!(id_after, id, "pod {name}: its container was recreated");
        assert_eq!(
            restarts_after, restarts,
            "pod {name}: its container restarted"
        );
    }
    // The container's log went on through the restart (its monitor never stopped), and the
    // kubelet still reads it through Berth's log path.
    let logs = ns.logs(&watched, None).await;
    let ticks_after = last_tick(&logs);
    assert!(
        ticks_after > ticks_before + 10,
        "the log stopped: tick-{ticks_before} before, tick-{ticks_after} now"
    );
    let ticks: Vec<u64> = logs
        .lines()
        .filter_map(|l| l.strip_prefix("tick-")?.parse().ok())
        .collect();
    assert!(
        ticks.windows(2).all(|w| w[1] == w[0] + 1),
        "log lines lost across the restart"
    );
}
