//! kubectl exec / attach / port-forward / cp need the CRI's streaming calls (Exec, Attach,
//! PortForward), which Berth does not implement yet (issue 12: it answers Unimplemented).
//! EXPECTED TO FAIL until issue 12: each test asserts today's failure, with the reason, so
//! it is never silently skipped; when streaming lands they fail, and must be turned into the
//! real checks (the command works), renamed without `_expected_fail_until_issue_12`.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use serde_json::json;

use crate::common::*;

/// A running busybox pod for the streaming commands.
async fn target(ns: &TestNs) {
    let mut c = busybox(
        "app",
        "echo hello > /tmp/file; while true; do sleep 1; done",
    );
    c["stdin"] = json!(true);
    ns.create::<Pod>(pod("target", "Always", vec![c], json!({})))
        .await;
    ns.wait_pod("target", "Ready", Duration::from_secs(60), pod_ready)
        .await;
}

/// Asserts the command failed because the runtime does not implement the call: the kubelet
/// passes the CRI's `Unimplemented` status up to kubectl.
async fn assert_unimplemented(what: &str, args: &[&str]) {
    match kubectl_timeout(args, Duration::from_secs(30)).await {
        Ok(out) => {
            let stderr = text(&out.stderr);
            assert!(
                !out.status.success(),
                "{what} WORKS now (issue 12 landed?): make this test check the real behaviour\nstdout: {}",
                text(&out.stdout)
            );
            let why = stderr.to_lowercase();
            assert!(
                why.contains("unimplemented") || why.contains("not implemented"),
                "{what} failed, but not with the runtime's Unimplemented:\n{stderr}"
            );
            eprintln!(
                "{what}: fails as expected until issue 12: {}",
                stderr.trim()
            );
        }
        Err(timeout) => panic!("{what} neither worked nor failed: {timeout}"),
    }
}

#[tokio::test]
async fn exec_expected_fail_until_issue_12() {
    let ns = TestNs::new("exec").await;
    target(&ns).await;
    assert_unimplemented(
        "kubectl exec",
        &["-n", &ns.name, "exec", "target", "--", "cat", "/tmp/file"],
    )
    .await;
}

#[tokio::test]
async fn attach_expected_fail_until_issue_12() {
    let ns = TestNs::new("attach").await;
    target(&ns).await;
    assert_unimplemented(
        "kubectl attach",
        &["-n", &ns.name, "attach", "target", "-c", "app"],
    )
    .await;
}

#[tokio::test]
async fn port_forward_expected_fail_until_issue_12() {
    let ns = TestNs::new("port-forward").await;
    let web = json!({ "name": "web", "image": NGINX, "imagePullPolicy": "IfNotPresent", "ports": [{ "containerPort": 80 }] });
    ns.create::<Pod>(pod("web", "Always", vec![web], json!({})))
        .await;
    ns.wait_pod("web", "Ready", Duration::from_secs(60), pod_ready)
        .await;
    // kubectl port-forward only opens the stream on the first connection: run it, connect,
    // and read what it reports.
    let mut child = tokio::process::Command::new("kubectl")
        .args([
            "-n",
            &ns.name,
            "port-forward",
            "pod/web",
            ":80",
            "--address",
            "127.0.0.1",
        ])
        .kill_on_drop(true)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("kubectl port-forward");
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
    let mut stdout = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    // "Forwarding from 127.0.0.1:PORT -> 80"
    let line = tokio::time::timeout(Duration::from_secs(20), stdout.next_line())
        .await
        .ok()
        .and_then(|l| l.ok().flatten());
    let mut stderr = String::new();
    let port = line
        .as_deref()
        .and_then(|l| l.strip_prefix("Forwarding from 127.0.0.1:"))
        .and_then(|l| l.split_whitespace().next())
        .map(str::to_owned);
    let mut answer = Vec::new();
    if let Some(port) = port
        && let Ok(mut conn) = tokio::net::TcpStream::connect(format!("127.0.0.1:{port}")).await
    {
        conn.write_all(b"GET / HTTP/1.0\r\n\r\n").await.ok();
        let _ = tokio::time::timeout(Duration::from_secs(10), conn.read_to_end(&mut answer)).await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
    child.kill().await.ok();
    let _ = tokio::time::timeout(
        Duration::from_secs(5),
        child.stderr.take().unwrap().read_to_string(&mut stderr),
    )
    .await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        !answer.contains("Welcome to nginx!"),
        "kubectl port-forward WORKS now (issue 12 landed?): make this test check the real behaviour"
    );
    let why = stderr.to_lowercase();
    assert!(
        why.contains("unimplemented") || why.contains("not implemented"),
        "kubectl port-forward failed, but not with the runtime's Unimplemented (first line {line:?}):\n{stderr}"
    );
    eprintln!(
        "kubectl port-forward: fails as expected until issue 12: {}",
        stderr.trim()
    );
}

#[tokio::test]
async fn cp_expected_fail_until_issue_12() {
    let ns = TestNs::new("cp").await;
    target(&ns).await;
    let local = format!("/tmp/berth-e2e-{}-file", ns.name);
    let from = format!("{}/target:/tmp/file", ns.name);
    // kubectl cp is tar over exec.
    assert_unimplemented("kubectl cp", &["cp", &from, &local]).await;
    let _ = std::fs::remove_file(&local);
}
