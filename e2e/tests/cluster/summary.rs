//! The kubelet's summary API (through the apiserver's node proxy), whose pod numbers come from
//! Berth's CRI stats: CPU, memory, filesystem and network of a Berth pod.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};

use crate::common::*;
use crate::node::*;

/// Every path in `want` that is missing (or not a number) in `stats`, or zero where `nonzero`.
fn missing(stats: &Value, want: &[(&str, bool)]) -> Vec<String> {
    want.iter()
        .filter(
            |(path, nonzero)| match stats.pointer(path).and_then(Value::as_u64) {
                None => true,
                Some(v) => *nonzero && v == 0,
            },
        )
        .map(|(path, nonzero)| format!("{path}{}", if *nonzero { " (> 0)" } else { "" }))
        .collect()
}

/// A busy pod: CPU, memory, a write to its rootfs and to a volume, a log, some traffic.
pub async fn busy_pod(ns: &TestNs) {
    let mut c = busybox(
        "app",
        "dd if=/dev/zero of=/file bs=1k count=512 2>/dev/null; dd if=/dev/zero of=/data/file bs=1k count=256 2>/dev/null; \
         while true; do echo log-line; timeout 2 wget -qO- http://10.96.0.1:443 >/dev/null 2>&1; i=0; \
         while [ $i -lt 2000 ]; do i=$((i+1)); done; sleep 1; done",
    );
    c["volumeMounts"] = json!([{ "name": "data", "mountPath": "/data" }]);
    ns.create::<Pod>(pod(
        "stats",
        "Always",
        vec![c],
        // On the node whose summary and CRI the tests read.
        json!({ "nodeName": node_name(), "volumes": [{ "name": "data", "emptyDir": {} }] }),
    ))
    .await;
    ns.wait_pod("stats", "Ready", Duration::from_secs(60), pod_ready)
        .await;
}

/// The pod's entry in the node's summary once it has every field of `want`; panics with the
/// entry after 60 s.
pub async fn summary_entry(ns: &TestNs, want: &[(&str, bool)]) -> Value {
    let url = format!("/api/v1/nodes/{}/proxy/stats/summary", node_name());
    let mut last = (Value::Null, Vec::new());
    // The kubelet computes usageNanoCores from two samples: give it a few housekeeping rounds.
    let found = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let out = kubectl(&["get", "--raw", &url]);
            if let Ok(summary) = serde_json::from_slice::<Value>(&out.stdout) {
                let pods = summary["pods"].as_array().cloned().unwrap_or_default();
                if let Some(stats) = pods
                    .into_iter()
                    .find(|p| p["podRef"]["namespace"] == ns.name.as_str())
                {
                    let gaps = missing(&stats, want);
                    if gaps.is_empty() {
                        return stats;
                    }
                    last = (stats, gaps);
                }
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    })
    .await;
    found.unwrap_or_else(|_| {
        panic!(
            "the summary API did not report {:?} for the pod within 60 s; its entry:\n{}",
            last.1,
            serde_json::to_string_pretty(&last.0).unwrap()
        )
    })
}

#[tokio::test]
async fn summary_api_reports_cpu_memory_filesystem() {
    let ns = TestNs::new("summary").await;
    busy_pod(&ns).await;
    let want = [
        ("/cpu/usageCoreNanoSeconds", true),
        ("/cpu/usageNanoCores", false),
        ("/memory/workingSetBytes", true),
        ("/memory/usageBytes", true),
        ("/containers/0/cpu/usageCoreNanoSeconds", true),
        ("/containers/0/memory/workingSetBytes", true),
        ("/containers/0/rootfs/usedBytes", true),
        ("/containers/0/rootfs/capacityBytes", true),
        ("/containers/0/logs/usedBytes", true),
        ("/ephemeral-storage/usedBytes", true),
        ("/volume/0/usedBytes", false),
    ];
    let stats = summary_entry(&ns, &want).await;
    assert_eq!(stats["containers"][0]["name"], "app");
    assert_eq!(stats["volume"][0]["name"], "data", "{}", stats["volume"]);
    // The rootfs holds the 512 KiB the container wrote.
    let rootfs = stats["containers"][0]["rootfs"]["usedBytes"]
        .as_u64()
        .unwrap();
    assert!(
        rootfs >= 512 * 1024,
        "rootfs usedBytes {rootfs} < the 512 KiB written"
    );
}

/// A pod's network numbers. The kubelet's summary API has none for Berth's pods, and that is
/// the kubelet's doing, not Berth's: without the alpha gate PodAndContainerStatsFromCRI it
/// takes a pod's network from cadvisor only (cri_stats_provider.go addPodNetworkStats), and
/// cadvisor's raw cgroup handler reports network for the root cgroup alone (its containerd and
/// CRI-O handlers are the only ones that read a pod's netns). So this test checks what Berth
/// answers: the CRI's ListPodSandboxStats (what that gate makes the kubelet use), through
/// crictl, reports the pod's eth0 with traffic; and it records what the summary API shows.
#[tokio::test]
async fn pod_network_stats_through_cri() {
    let ns = TestNs::new("summary-net").await;
    busy_pod(&ns).await;
    let uid = ns
        .api::<Pod>()
        .get("stats")
        .await
        .expect("get pod stats")
        .metadata
        .uid
        .expect("pod uid");
    let sandbox = crictl_json(&[
        "pods",
        "--label",
        &format!("io.kubernetes.pod.uid={uid}"),
        "-q",
    ]);
    let sandbox = sandbox.trim().to_string();
    assert!(!sandbox.is_empty(), "no sandbox in Berth for pod uid {uid}");
    let mut last = Value::Null;
    let found = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let out = crictl_json(&["statsp", "--id", &sandbox, "-o", "json"]);
            last = serde_json::from_str(&out).unwrap_or(Value::Null);
            let net = &last["stats"][0]["linux"]["network"];
            let iface = &net["defaultInterface"];
            let tx = iface["txBytes"]["value"]
                .as_str()
                .and_then(|v| v.parse::<u64>().ok())
                .or_else(|| iface["txBytes"]["value"].as_u64())
                .unwrap_or(0);
            if iface["name"] == "eth0" && tx > 0 {
                return;
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    })
    .await;
    assert!(
        found.is_ok(),
        "Berth's ListPodSandboxStats did not report eth0 with txBytes > 0 within 60 s:\n{}",
        serde_json::to_string_pretty(&last).unwrap()
    );
    let summary = summary_entry(&ns, &[("/cpu/usageCoreNanoSeconds", true)]).await;
    eprintln!(
        "summary API network entry for the pod (none expected without PodAndContainerStatsFromCRI): {}",
        summary["network"]
    );
}

/// crictl's output on the pods' node (the cluster's runtime: through CRI_CONFIG_FILE on the
/// single node, /etc/crictl.yaml on a kind node), panicking with its stderr.
fn crictl_json(args: &[&str]) -> String {
    node_run(&node_name(), "crictl", args).unwrap_or_else(|e| panic!("{e}"))
}
