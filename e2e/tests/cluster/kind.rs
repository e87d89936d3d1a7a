//! Across the nodes of a kind cluster whose nodes run Berth (hack/kind.sh test): every node's
//! runtime is Berth, a Deployment spreads over both workers, pods reach each other and a Service
//! reaches its pods across nodes, and draining a worker moves its pods to the other one.
//!
//! #[ignore]d: they need two workers, which the single-node cluster of hack/cluster.sh does not
//! have; `hack/kind.sh test` runs them (`--ignored kind_`), the drain test (`kind_serial_`) alone
//! after the others because it empties a whole node.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Pod, Service};
use kube::Api;
use kube::api::ListParams;
use serde_json::{Value, json};

use crate::common::*;
use crate::node::*;

const CONTROL_PLANE: &str = "node-role.kubernetes.io/control-plane";

/// The cluster's nodes: (control plane, workers), by name.
async fn nodes() -> (String, Vec<String>) {
    let nodes: Api<Node> = Api::all(client().await);
    let list = nodes.list(&ListParams::default()).await.unwrap();
    let (cp, workers): (Vec<_>, Vec<_>) = list.items.iter().partition(|n| {
        n.metadata
            .labels
            .as_ref()
            .is_some_and(|l| l.contains_key(CONTROL_PLANE))
    });
    let name = |n: &&Node| n.metadata.name.clone().unwrap();
    assert_eq!(cp.len(), 1, "one control-plane node");
    let mut workers: Vec<String> = workers.iter().map(name).collect();
    workers.sort();
    assert_eq!(workers.len(), 2, "two workers: {workers:?}");
    (name(&cp[0]), workers)
}

/// A Deployment of busybox httpds on port 8080 that answer with their pod's and node's names,
/// spread one by one over the nodes the scheduler may use.
fn web(name: &str, replicas: i32, spread: &str) -> Value {
    let script = "mkdir -p /www && echo \"POD $POD_NAME $NODE_NAME\" > /www/index.html && \
                  exec httpd -f -p 8080 -h /www";
    json!({
        "metadata": { "name": name },
        "spec": {
            "replicas": replicas,
            "selector": { "matchLabels": { "app": name } },
            "template": {
                "metadata": { "labels": { "app": name } },
                "spec": {
                    "terminationGracePeriodSeconds": 2,
                    "topologySpreadConstraints": [{
                        "maxSkew": 1,
                        "topologyKey": "kubernetes.io/hostname",
                        "whenUnsatisfiable": spread,
                        // A tainted (control-plane, cordoned) node holds no replica and is
                        // not counted.
                        "nodeTaintsPolicy": "Honor",
                        "labelSelector": { "matchLabels": { "app": name } },
                    }],
                    "containers": [{
                        "name": "web",
                        "image": BUSYBOX,
                        "imagePullPolicy": "IfNotPresent",
                        "command": ["sh", "-c", script],
                        "env": [
                            { "name": "POD_NAME", "valueFrom": { "fieldRef": { "fieldPath": "metadata.name" } } },
                            { "name": "NODE_NAME", "valueFrom": { "fieldRef": { "fieldPath": "spec.nodeName" } } },
                        ],
                        "ports": [{ "containerPort": 8080 }],
                        "readinessProbe": {
                            "httpGet": { "path": "/", "port": 8080 },
                            "periodSeconds": 1,
                        },
                    }],
                },
            },
        },
    })
}

/// The app's pods once `replicas` of them are Ready: pod name -> (node, pod IP).
async fn ready_pods(ns: &TestNs, app: &str, replicas: usize) -> BTreeMap<String, (String, String)> {
    let pods: Api<Pod> = ns.api();
    wait_for(
        &format!("{replicas} Ready pods of {app}"),
        Duration::from_secs(180),
        || async {
            let list = pods
                .list(&ListParams::default().labels(&format!("app={app}")))
                .await
                .ok()?;
            let ready: BTreeMap<String, (String, String)> = list
                .items
                .iter()
                .filter(|p| pod_ready(p) && p.metadata.deletion_timestamp.is_none())
                .map(|p| {
                    let node = p.spec.as_ref().and_then(|s| s.node_name.clone());
                    let ip = p.status.as_ref().and_then(|s| s.pod_ip.clone());
                    (
                        p.metadata.name.clone().unwrap(),
                        (node.unwrap(), ip.unwrap()),
                    )
                })
                .collect();
            (ready.len() == replicas && list.items.len() == replicas).then_some(ready)
        },
    )
    .await
}

/// The cluster's nodes, a namespace, and a Deployment of 4 `web` replicas spread with
/// `spread` (whenUnsatisfiable), once all are Ready: (control plane, workers, namespace, pods).
async fn deploy_web(
    prefix: &str,
    spread: &str,
) -> (
    String,
    Vec<String>,
    TestNs,
    BTreeMap<String, (String, String)>,
) {
    let (cp, workers) = nodes().await;
    let ns = TestNs::new(prefix).await;
    let _: Deployment = ns.create(web("web", 4, spread)).await;
    let pods = ready_pods(&ns, "web", 4).await;
    (cp, workers, ns, pods)
}

/// A pod on the control-plane node (tolerating its taint), so that every web pod it reaches is
/// on another node; runs `script` to completion and returns its output.
async fn run_on_control_plane(ns: &TestNs, cp: &str, name: &str, script: &str) -> String {
    let extra = json!({
        "nodeName": cp,
        "tolerations": [{ "key": CONTROL_PLANE, "operator": "Exists", "effect": "NoSchedule" }],
    });
    let (_, logs) = ns
        .run_to_success(
            pod(name, "Never", vec![busybox("client", script)], extra),
            Duration::from_secs(120),
        )
        .await;
    logs
}

/// Fetches each URL once (retrying for a while: kube-proxy syncs a moment after endpoints
/// change), then the Service `rounds` times, printing every answer.
fn fetch_script(pod_urls: &[String], service_url: &str, rounds: usize) -> String {
    format!(
        "for url in {urls}; do ok=; \
         for i in $(seq 30); do if out=$(timeout 5 wget -qO- $url); then ok=1; break; fi; sleep 1; done; \
         [ -n \"$ok\" ] || {{ echo FAILED $url; exit 1; }}; echo \"DIRECT $url $out\"; done; \
         for i in $(seq {rounds}); do echo \"SERVICE $(timeout 5 wget -qO- {service_url})\"; done",
        urls = pod_urls.join(" "),
    )
}

/// A ClusterIP Service on port 80 for the app's pods; its ClusterIP and each pod's own URL.
async fn expose(
    ns: &TestNs,
    app: &str,
    pods: &BTreeMap<String, (String, String)>,
) -> (String, Vec<String>) {
    let svc: Service = ns
        .create(json!({
            "metadata": { "name": app },
            "spec": { "selector": { "app": app }, "ports": [{ "port": 80, "targetPort": 8080 }] },
        }))
        .await;
    let cluster_ip = svc.spec.and_then(|s| s.cluster_ip).expect("a ClusterIP");
    let urls = pods
        .values()
        .map(|(_, ip)| format!("http://{ip}:8080"))
        .collect();
    (cluster_ip, urls)
}

/// `systemctl ARGS...` on a kind node; its output.
fn node_systemctl(node: &str, args: &[&str]) -> String {
    node_run(node, "systemctl", args)
        .unwrap_or_else(|e| panic!("{e}"))
        .trim()
        .to_owned()
}

/// The nodes named in the Service's answers ("SERVICE POD <pod> <node>").
fn service_nodes(logs: &str) -> BTreeSet<String> {
    logs.lines()
        .filter_map(|l| l.strip_prefix("SERVICE POD "))
        .filter_map(|l| l.split_whitespace().nth(1).map(str::to_owned))
        .collect()
}

#[tokio::test]
#[ignore = "needs the kind cluster of hack/kind.sh (hack/kind.sh test)"]
async fn kind_every_node_runs_berth_and_is_ready() {
    let nodes: Api<Node> = Api::all(client().await);
    let list = nodes.list(&ListParams::default()).await.unwrap();
    assert_eq!(list.items.len(), 3, "a control plane and two workers");
    for node in &list.items {
        let name = node.metadata.name.as_deref().unwrap();
        let status = node.status.as_ref().unwrap();
        let runtime = &status.node_info.as_ref().unwrap().container_runtime_version;
        assert!(
            runtime.starts_with("berth://"),
            "node {name} runs {runtime}, not Berth"
        );
        let ready = status
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        assert!(ready, "node {name} is not Ready: {:?}", status.conditions);
        println!("kind: {name}: {runtime}, Ready");
    }
}

#[tokio::test]
#[ignore = "needs the kind cluster of hack/kind.sh (hack/kind.sh test)"]
async fn kind_a_deployment_spreads_over_both_workers_and_its_service_reaches_each() {
    let (cp, workers, ns, pods) = deploy_web("kind-spread", "DoNotSchedule").await;
    let used: BTreeSet<String> = pods.values().map(|(node, _)| node.clone()).collect();
    assert_eq!(
        used,
        workers.iter().cloned().collect(),
        "the replicas are not on both workers: {pods:?}"
    );

    let (cluster_ip, urls) = expose(&ns, "web", &pods).await;
    let dns = format!("http://web.{}.svc.cluster.local", ns.name);
    // Pod to pod and to the Service by IP from the control-plane node, then by DNS name.
    let logs = run_on_control_plane(
        &ns,
        &cp,
        "client",
        &format!(
            "{}; echo; {}",
            fetch_script(&urls, &format!("http://{cluster_ip}"), 40),
            fetch_script(std::slice::from_ref(&dns), &dns, 1)
        ),
    )
    .await;
    for (pod, (node, ip)) in &pods {
        let want = format!("DIRECT http://{ip}:8080 POD {pod} {node}");
        assert!(
            logs.contains(&want),
            "no answer from {pod} on {node}:\n{logs}"
        );
    }
    let through_service = service_nodes(&logs);
    assert_eq!(
        through_service,
        workers.iter().cloned().collect(),
        "the Service did not reach pods on both workers in 40 requests:\n{logs}"
    );
    assert!(
        logs.contains(&format!("DIRECT {dns} POD ")),
        "no answer through the Service's DNS name:\n{logs}"
    );
    println!("kind: 4 replicas on {used:?}; the Service reached pods on {through_service:?}");
}

/// Uncordons the node when dropped (also when the test panics), so a failed drain test does
/// not leave the cluster with one worker.
struct Uncordon(String);

impl Drop for Uncordon {
    fn drop(&mut self) {
        let out = kubectl(&["uncordon", &self.0]);
        if !out.status.success() {
            eprintln!("uncordon {}: {}", self.0, text(&out.stderr));
        }
    }
}

#[tokio::test]
#[ignore = "needs the kind cluster of hack/kind.sh (hack/kind.sh test)"]
async fn kind_serial_draining_a_worker_moves_its_pods_to_the_other() {
    let (cp, workers, ns, before) = deploy_web("kind-drain", "ScheduleAnyway").await;
    let drained = &workers[1];
    let kept = &workers[0];
    assert!(
        before.values().any(|(node, _)| node == drained),
        "no replica on {drained} to move: {before:?}"
    );

    let _uncordon = Uncordon(drained.clone());
    let out = kubectl_timeout(
        &[
            "drain",
            drained,
            "--ignore-daemonsets",
            "--delete-emptydir-data",
            "--timeout=120s",
        ],
        Duration::from_secs(150),
    )
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "kubectl drain {drained}: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );

    let after = ready_pods(&ns, "web", 4).await;
    assert!(
        after.values().all(|(node, _)| node == kept),
        "after draining {drained}, replicas are not all on {kept}: {after:?}"
    );
    // What ran on the drained node is gone from it, in the kubelet's view as in Berth's.
    let pods: Api<Pod> = Api::all(client().await);
    let left = pods
        .list(&ListParams::default().fields(&format!("spec.nodeName={drained}")))
        .await
        .unwrap();
    let not_daemons: Vec<String> = left
        .items
        .iter()
        .filter(|p| {
            !p.metadata
                .owner_references
                .iter()
                .flatten()
                .any(|o| o.kind == "DaemonSet")
        })
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    assert!(
        not_daemons.is_empty(),
        "pods still on the drained {drained}: {not_daemons:?}"
    );

    let (cluster_ip, urls) = expose(&ns, "web", &after).await;
    let logs = run_on_control_plane(
        &ns,
        &cp,
        "client",
        &fetch_script(&urls, &format!("http://{cluster_ip}"), 10),
    )
    .await;
    assert_eq!(
        service_nodes(&logs),
        BTreeSet::from([kept.clone()]),
        "the Service's answers after the drain:\n{logs}"
    );
    println!(
        "kind: drained {drained}: {} replicas moved to {kept}",
        before.values().filter(|(n, _)| n == drained).count()
    );
}

/// `systemctl restart berth` on a worker (the node's systemd runs berth.service as installed by
/// hack/install.sh: KillMode=process): the pods on it keep running, the same containers, none
/// restarted.
#[tokio::test]
#[ignore = "needs the kind cluster of hack/kind.sh (hack/kind.sh test)"]
async fn kind_serial_systemctl_restart_berth_keeps_the_pods_running() {
    let (_, workers) = nodes().await;
    let node = &workers[0];
    let ns = TestNs::new("kind-restart").await;
    let extra = json!({ "nodeName": node });
    let _: Pod = ns
        .create(pod(
            "counter",
            "Always",
            vec![busybox("c", "while true; do date +%s; sleep 1; done")],
            extra,
        ))
        .await;
    let before = ns
        .wait_pod("counter", "Ready", Duration::from_secs(60), pod_ready)
        .await;
    let id_before = container_status(&before, "c").container_id.clone();

    let main_pid = || node_systemctl(node, &["show", "-p", "MainPID", "--value", "berth"]);
    let pid_before = main_pid();
    node_systemctl(node, &["restart", "berth"]);
    let pid_after = main_pid();
    assert_ne!(pid_before, pid_after, "berthd was not restarted");
    assert_eq!(
        node_systemctl(node, &["is-active", "berth"]),
        "active",
        "berth.service after the restart"
    );

    // The kubelet still sees the same container, running, never restarted, and it still logs.
    let logs_before = ns.logs("counter", Some("c")).await.lines().count();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = ns
        .wait_pod("counter", "Ready", Duration::from_secs(30), pod_ready)
        .await;
    assert_eq!(
        container_status(&after, "c").container_id,
        id_before,
        "the container was replaced"
    );
    assert_eq!(restart_count(&after, "c"), 0, "the container was restarted");
    let logs_after = ns.logs("counter", Some("c")).await.lines().count();
    assert!(
        logs_after > logs_before,
        "the counter stopped logging: {logs_before} -> {logs_after} lines"
    );
    println!(
        "kind: systemctl restart berth on {node}: berthd {pid_before} -> {pid_after}; the counter kept running ({logs_before} -> {logs_after} lines)"
    );
}
