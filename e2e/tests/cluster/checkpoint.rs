//! The kubelet's forensic container checkpointing (`POST /checkpoint/{namespace}/{pod}/
//! {container}`, through the apiserver's node proxy) on Berth: the kubelet asks Berth's
//! CheckpointContainer for an archive under its checkpoints dir, and the container goes on.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use serde_json::Value;

use crate::common::*;
use crate::node::*;

/// The last number the counter logged.
async fn last_count(ns: &TestNs) -> u64 {
    ns.logs("counter", Some("app"))
        .await
        .lines()
        .rev()
        .find_map(|l| l.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn kubelet_checkpoints_a_running_container() {
    let ns = TestNs::new("checkpoint").await;
    let c = busybox(
        "app",
        "i=0; while true; do i=$((i+1)); echo $i; sleep 0.2; done",
    );
    ns.create::<Pod>(pod("counter", "Always", vec![c], serde_json::json!({})))
        .await;
    let running = ns
        .wait_pod("counter", "Ready", Duration::from_secs(60), pod_ready)
        .await;
    let node = running.spec.and_then(|s| s.node_name).unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = last_count(&ns).await;

    let url = format!(
        "/api/v1/nodes/{node}/proxy/checkpoint/{}/counter/app",
        ns.name
    );
    let req = http::Request::post(&url).body(Vec::new()).unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(120), ns.client.request_text(req))
        .await
        .expect("the kubelet's checkpoint call did not answer within 120 s")
        .unwrap_or_else(|e| panic!("POST {url}: {e}"));
    let answer: Value = serde_json::from_str(&answer)
        .unwrap_or_else(|e| panic!("the kubelet answered {answer:?}: {e}"));
    let archive = answer["items"][0]
        .as_str()
        .unwrap_or_else(|| panic!("no archive in the kubelet's answer: {answer}"))
        .to_string();

    // The archive the kubelet names is on the pod's node, in the layout CRI-O writes.
    let names = node_run(&node, "tar", &["tf", &archive]).unwrap();
    for want in [
        "checkpoint/inventory.img",
        "checkpoint/pstree.img",
        "config.dump",
        "spec.dump",
        "rootfs-diff.tar",
    ] {
        assert!(
            names.lines().any(|l| l == want),
            "{want} missing from {archive}:\n{names}"
        );
    }

    // The container was left running: still Ready, not restarted, still counting.
    let p = ns.api::<Pod>().get("counter").await.unwrap();
    assert!(pod_ready(&p), "{:?}", p.status);
    assert_eq!(restart_count(&p, "app"), 0);
    let after = wait_for("the counter to go on", Duration::from_secs(20), || async {
        let n = last_count(&ns).await;
        (n > before + 5).then_some(n)
    })
    .await;
    println!("checkpoint {archive}: counter {before} before, {after} after");
    node_run(&node, "rm", &[&archive]).unwrap();
}
