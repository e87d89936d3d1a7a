//! `kubectl logs`: the current container, `--previous` after a restart, `-f` following new lines.

use std::time::Duration;

use serde_json::json;
use tokio::io::AsyncBufReadExt;

use crate::common::*;

/// Prints "attempt-N" (N counted in an emptyDir, which outlives the container), exits 1 on the
/// first attempt, then ticks every half second.
const ATTEMPTS: &str = "n=$(cat /state/n 2>/dev/null || echo 0); n=$((n+1)); echo $n > /state/n; \
    echo attempt-$n; [ $n -gt 1 ] || { sleep 1; exit 1; }; \
    i=0; while true; do echo tick-$i; i=$((i+1)); sleep 0.5; done";

fn attempts_pod(name: &str) -> serde_json::Value {
    let mut container = busybox("app", ATTEMPTS);
    container["volumeMounts"] = json!([{ "name": "state", "mountPath": "/state" }]);
    pod(
        name,
        "Always",
        vec![container],
        json!({ "volumes": [{ "name": "state", "emptyDir": {} }] }),
    )
}

#[tokio::test]
async fn logs_current_and_previous_after_restart() {
    let ns = TestNs::new("logs-prev").await;
    ns.create::<k8s_openapi::api::core::v1::Pod>(attempts_pod("restarter"))
        .await;
    // The first attempt fails; the kubelet restarts it after its 10 s back-off.
    ns.wait_pod(
        "restarter",
        "restarted once and running",
        Duration::from_secs(60),
        |p| restart_count(p, "app") == 1 && has_container_status(p, "app").is_some_and(|c| c.ready),
    )
    .await;

    let out = kubectl(&["-n", &ns.name, "logs", "restarter"]);
    let current = text(&out.stdout);
    assert!(out.status.success(), "kubectl logs: {}", text(&out.stderr));
    assert!(
        current.starts_with("attempt-2\n"),
        "the current container's log:\n{current}"
    );
    assert!(
        !current.contains("attempt-1"),
        "the current log holds the first attempt:\n{current}"
    );

    let out = kubectl(&["-n", &ns.name, "logs", "restarter", "--previous"]);
    let previous = text(&out.stdout);
    assert!(
        out.status.success(),
        "kubectl logs --previous: {}",
        text(&out.stderr)
    );
    assert_eq!(previous, "attempt-1\n", "the previous container's log");
}

#[tokio::test]
async fn logs_follow_streams_new_lines() {
    let ns = TestNs::new("logs-follow").await;
    let script = "i=0; while true; do echo tick-$i; i=$((i+1)); sleep 0.5; done";
    ns.create::<k8s_openapi::api::core::v1::Pod>(pod(
        "ticker",
        "Always",
        vec![busybox("app", script)],
        json!({}),
    ))
    .await;
    ns.wait_pod("ticker", "Ready", Duration::from_secs(60), pod_ready)
        .await;

    // What the log holds before following: plain `kubectl logs`.
    let out = kubectl(&["-n", &ns.name, "logs", "ticker"]);
    assert!(out.status.success(), "kubectl logs: {}", text(&out.stderr));
    let before = text(&out.stdout)
        .lines()
        .rev()
        .find_map(tick)
        .expect("the ticker logged nothing");

    let mut child = tokio::process::Command::new("kubectl")
        .args(["-n", &ns.name, "logs", "-f", "ticker"])
        .kill_on_drop(true)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .expect("kubectl logs -f");
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut ticks = Vec::new();
    // Lines written after `-f` started must arrive while it runs: four new ticks take ~2 s.
    let result = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.expect("read kubectl logs -f") {
            let n = tick(&line).unwrap_or_else(|| panic!("unexpected line {line:?}"));
            ticks.push(n);
            if n >= before + 4 {
                return;
            }
        }
    })
    .await;
    child.kill().await.ok();
    assert!(
        result.is_ok(),
        "kubectl logs -f: no new line past tick-{before} within 30 s; it printed {:?}",
        ticks.last()
    );
    assert_eq!(ticks[0], 0, "-f starts at the first line");
    assert!(
        ticks.windows(2).all(|w| w[1] == w[0] + 1),
        "lines lost or out of order: {ticks:?}"
    );
}

fn tick(line: &str) -> Option<u64> {
    line.strip_prefix("tick-")?.parse().ok()
}
