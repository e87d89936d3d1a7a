//! The kubelet with the alpha gate `PodAndContainerStatsFromCRI`: its summary API and its
//! `/metrics/cadvisor` then come from Berth alone (ListPodSandboxStats, ListPodSandboxMetrics,
//! ListMetricDescriptors), not from cAdvisor. `#[ignore]`d: hack/cluster-test.sh runs them
//! (`--ignored cri_stats_`) after restarting the kubelet with the gate on, and restarts it
//! without the gate afterwards. Each test first checks that the gate is on.

use std::time::Duration;

use serde_json::{Value, json};

use crate::common::*;
use crate::summary::{busy_pod, summary_entry};

const GATE: &str = "PodAndContainerStatsFromCRI";

/// The kubelet's own `/metrics`, through the API server's node proxy.
fn kubelet_metrics(path: &str) -> String {
    let url = format!("/api/v1/nodes/{}/proxy/{path}", node_name());
    let out = kubectl(&["get", "--raw", &url]);
    assert!(out.status.success(), "GET {url}: {}", text(&out.stderr));
    text(&out.stdout)
}

/// Panics unless the node's kubelet runs with the gate on (its
/// `kubernetes_feature_enabled` gauge), naming how to run these tests.
fn assert_gate_on() {
    let metrics = kubelet_metrics("metrics");
    let line = metrics
        .lines()
        .find(|l| {
            l.starts_with("kubernetes_feature_enabled{") && l.contains(&format!("name=\"{GATE}\""))
        })
        .unwrap_or_else(|| {
            panic!("the kubelet's /metrics has no kubernetes_feature_enabled for {GATE}")
        });
    assert!(
        line.ends_with(" 1"),
        "the kubelet runs without {GATE} ({line}): run these tests through hack/cluster-test.sh, \
         which restarts the kubelet with the gate"
    );
}

/// The value of the first sample of `metric` whose labels hold every one of `labels`
/// (`key="value"` each).
fn sample(exposition: &str, metric: &str, labels: &[String]) -> Option<f64> {
    exposition
        .lines()
        .filter(|l| l.starts_with(&format!("{metric}{{")))
        .find(|l| labels.iter().all(|want| l.contains(want.as_str())))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// `/metrics/cadvisor` names a Berth pod's container and its pod by the labels Berth sends:
/// `id` (the container's id, or the sandbox's for the pod's network), `name` (kubelet-style
/// `k8s_<container>_<pod>_<namespace>_<uid>_<attempt>`, or `POD`) and `image`.
#[tokio::test]
#[ignore = "needs the kubelet's PodAndContainerStatsFromCRI gate: hack/cluster-test.sh"]
async fn cri_stats_metrics_cadvisor_shows_berths_pods() {
    assert_gate_on();
    let ns = TestNs::new("cri-metrics").await;
    busy_pod(&ns).await;
    let pod = ns
        .wait_pod("stats", "Running", Duration::from_secs(120), |p| {
            phase(p) == "Running"
        })
        .await;
    let uid = pod.metadata.uid.clone().expect("pod uid");
    let cid = container_status(&pod, "app")
        .container_id
        .clone()
        .expect("container id");
    let cid = cid.split_once("://").map_or(cid.as_str(), |(_, id)| id);
    let name = format!("name=\"k8s_app_stats_{}_{uid}_0\"", ns.name);
    let container = [format!("id=\"{cid}\""), name.clone()];

    let mut last = String::new();
    let found = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            last = kubelet_metrics("metrics/cadvisor");
            let cpu = sample(&last, "container_cpu_usage_seconds_total", &container);
            let mem = sample(&last, "container_memory_working_set_bytes", &container);
            let pod_net = sample(
                &last,
                "container_network_transmit_bytes_total",
                &["name=\"POD\"".into(), "interface=\"eth0\"".into()],
            );
            if let (Some(_), Some(mem), Some(tx)) = (cpu, mem, pod_net)
                && mem > 0.0
                && tx > 0.0
            {
                return;
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    })
    .await;
    let ours: Vec<&str> = last.lines().filter(|l| l.contains(cid)).take(40).collect();
    assert!(
        found.is_ok(),
        "/metrics/cadvisor did not show the pod's container ({cid}, {name}) with memory and its \
         pod's eth0 with traffic within 60 s; its lines of the container:\n{}",
        ours.join("\n")
    );
    // The descriptors Berth gave the kubelet: cAdvisor's help text and types.
    assert!(
        last.contains("# TYPE container_cpu_usage_seconds_total counter"),
        "no counter type for container_cpu_usage_seconds_total"
    );
    assert!(
        last.contains("# TYPE container_memory_working_set_bytes gauge"),
        "no gauge type for container_memory_working_set_bytes"
    );
    eprintln!(
        "/metrics/cadvisor, the container's series:\n{}",
        ours.join("\n")
    );
}

/// With the gate, the summary API's pod network is Berth's ListPodSandboxStats (without it the
/// kubelet asks cAdvisor, which has none for Berth's pods: see summary.rs).
#[tokio::test]
#[ignore = "needs the kubelet's PodAndContainerStatsFromCRI gate: hack/cluster-test.sh"]
async fn cri_stats_summary_api_has_the_pods_network() {
    assert_gate_on();
    let ns = TestNs::new("cri-summary").await;
    busy_pod(&ns).await;
    let stats = summary_entry(
        &ns,
        &[
            ("/network/txBytes", true),
            ("/network/rxBytes", true),
            ("/cpu/usageCoreNanoSeconds", true),
            ("/memory/workingSetBytes", true),
            ("/containers/0/rootfs/usedBytes", true),
        ],
    )
    .await;
    assert_eq!(
        stats["network"]["name"],
        json!("eth0"),
        "{}",
        stats["network"]
    );
    assert_eq!(stats["containers"][0]["name"], Value::from("app"));
}
