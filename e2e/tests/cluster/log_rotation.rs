//! Container log rotation by the kubelet (containerLogMaxSize 1Mi, containerLogMaxFiles 3 in
//! hack/cluster/kubelet-config.yaml): it renames the log and asks Berth to reopen it
//! (ReopenContainerLog); the container keeps logging into the new file.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};

use crate::common::*;
use crate::node::*;

/// The files of a container's log directory on its node: the current one and the rotated ones.
fn log_files(node: &str, dir: &Path) -> BTreeSet<String> {
    node_list(node, &dir.to_string_lossy())
        .into_iter()
        .collect()
}

/// The line number of the last `line-N` of `kubectl logs --tail=1`.
fn last_line(ns: &TestNs) -> u64 {
    let out = kubectl(&["-n", &ns.name, "logs", "chatty", "--tail=1"]);
    let log = text(&out.stdout);
    log.trim()
        .strip_prefix("line-")
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("kubectl logs --tail=1: {log:?} {}", text(&out.stderr)))
}

#[tokio::test]
async fn log_rotation_keeps_logging() {
    let ns = TestNs::new("logrotate").await;
    // ~1 MB/s of 210-byte lines; the CPU limit keeps the shell loop from taking a core.
    let mut c = busybox(
        "app",
        "pad=$(head -c 200 /dev/zero | tr '\\0' x); i=0; \
         while true; do echo \"line-$i $pad\"; i=$((i+1)); [ $((i % 500)) -ne 0 ] || sleep 0.1; done",
    );
    c["resources"] = json!({ "limits": { "cpu": "300m", "memory": "32Mi" } });
    ns.create::<Pod>(pod("chatty", "Always", vec![c], json!({})))
        .await;
    let pod = ns
        .wait_pod("chatty", "Ready", Duration::from_secs(60), pod_ready)
        .await;
    let node = pod.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap();
    let id = container_status(&pod, "app").container_id.clone().unwrap();
    let id = id
        .split_once("://")
        .map_or(id.clone(), |(_, id)| id.to_owned());
    let out = node_run(&node, "crictl", &["inspect", &id]).unwrap();
    let inspect: Value = serde_json::from_str(&out).expect("crictl inspect JSON");
    let log_path = inspect["status"]["logPath"]
        .as_str()
        .expect("a logPath")
        .to_owned();
    let dir = Path::new(&log_path).parent().unwrap().to_owned();

    // The kubelet checks sizes every 10 s: two rotations within a minute, never more than
    // containerLogMaxFiles files, and the log going on after each.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut rotated_seen = BTreeSet::new();
    let mut most_files = 0;
    while rotated_seen.len() < 2 {
        let files = log_files(&node, &dir);
        most_files = most_files.max(files.len());
        rotated_seen.extend(
            files
                .into_iter()
                .filter(|f| f.starts_with("0.log."))
                .map(|f| f.trim_end_matches(".gz").to_owned()),
        );
        assert!(
            Instant::now() < deadline,
            "fewer than two rotations in 60 s; {} holds {:?}\nkubelet: {}",
            dir.display(),
            log_files(&node, &dir),
            kubelet_log_lines(&node, "rotate")
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        most_files <= 3,
        "more than containerLogMaxFiles (3) files: {most_files}"
    );
    // The current file is the reopened one: it grows, and `kubectl logs` follows it.
    let before = last_line(&ns);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = last_line(&ns);
    assert!(
        after > before,
        "the log stopped after rotation: line-{before}, then line-{after}"
    );
    let pod = ns.api::<Pod>().get("chatty").await.unwrap();
    assert_eq!(restart_count(&pod, "app"), 0, "the container restarted");
}

/// The kubelet's log lines that mention `word` (for failure messages): hack/cluster.sh's
/// kubelet.log, or the node's journal (a kind node's kubelet runs under its systemd).
fn kubelet_log_lines(node: &str, word: &str) -> String {
    let dir =
        std::env::var("BERTH_CLUSTER_DIR").unwrap_or_else(|_| "/var/lib/berth-cluster".into());
    std::fs::read_to_string(format!("{dir}/logs/kubelet.log"))
        .ok()
        .or_else(|| {
            node_run(
                node,
                "journalctl",
                &["-u", "kubelet", "--no-pager", "-n", "5000"],
            )
            .ok()
        })
        .unwrap_or_default()
        .lines()
        .filter(|l| l.to_lowercase().contains(word))
        .rev()
        .take(10)
        .collect::<Vec<_>>()
        .join("\n")
}
