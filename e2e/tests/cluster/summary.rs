//! The kubelet's summary API (through the apiserver's node proxy), whose pod numbers come from
//! Berth's CRI stats: CPU, memory, filesystem and network of a Berth pod.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};

use crate::common::*;

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
async fn busy_pod(ns: &TestNs) {
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
        json!({ "volumes": [{ "name": "data", "emptyDir": {} }] }),
    ))
    .await;
    ns.wait_pod("stats", "Ready", Duration::from_secs(60), pod_ready)
        .await;
}

/// The pod's entry in the node's summary once it has every field of `want`; panics with the
/// entry after 60 s.
async fn summary_entry(ns: &TestNs, want: &[(&str, bool)]) -> Value {
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

/// The kubelet (without the alpha gate PodAndContainerStatsFromCRI) takes a pod's network
/// numbers from cadvisor only, from the cgroup named by the sandbox ID (the pause container's,
/// under containerd): Berth makes no such cgroup, so its pods have no `network` entry, although
/// Berth's ListPodSandboxStats reports it.
#[tokio::test]
#[ignore = "Berth bug: no pod network in the summary API (no cgroup named by the sandbox ID for cadvisor), see report"]
async fn summary_api_reports_pod_network() {
    let ns = TestNs::new("summary-net").await;
    busy_pod(&ns).await;
    let stats = summary_entry(
        &ns,
        &[("/network/rxBytes", false), ("/network/txBytes", true)],
    )
    .await;
    let interfaces = stats["network"]["interfaces"]
        .as_array()
        .map_or(0, Vec::len);
    assert!(
        interfaces >= 1,
        "no network interface: {}",
        stats["network"]
    );
}
