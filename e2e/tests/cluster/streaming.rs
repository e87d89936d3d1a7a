//! kubectl exec / attach / port-forward / cp, through the kubelet to Berth's streaming
//! server (CRI Exec, Attach, PortForward; SPDY from the kubelet).

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};

use crate::common::*;

/// A running busybox pod for the streaming commands.
async fn target(ns: &TestNs) {
    let mut c = busybox(
        "app",
        "echo hello > /tmp/file; while true; do echo tick; sleep 1; done",
    );
    c["stdin"] = json!(true);
    ns.create::<Pod>(pod("target", "Always", vec![c], json!({})))
        .await;
    ns.wait_pod("target", "Ready", Duration::from_secs(60), pod_ready)
        .await;
}

/// Runs kubectl with `stdin` piped in; (exit code, stdout, stderr).
async fn kubectl_with_stdin(args: &[&str], stdin: &[u8]) -> (i32, String, String) {
    let mut child = tokio::process::Command::new("kubectl")
        .args(args)
        .kill_on_drop(true)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("kubectl");
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin).await.unwrap();
    drop(input);
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("kubectl did not finish within 60 s")
        .expect("kubectl");
    (
        out.status.code().unwrap_or(-1),
        text(&out.stdout),
        text(&out.stderr),
    )
}

#[tokio::test]
async fn exec_output_exit_code_and_stdin() {
    let ns = TestNs::new("exec").await;
    target(&ns).await;
    let out = kubectl_timeout(
        &["-n", &ns.name, "exec", "target", "--", "cat", "/tmp/file"],
        Duration::from_secs(60),
    )
    .await
    .expect("kubectl exec");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "hello\n");

    let out = kubectl(&[
        "-n",
        &ns.name,
        "exec",
        "target",
        "--",
        "sh",
        "-c",
        "echo err >&2; exit 3",
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("err"), "{}", text(&out.stderr));

    // stdin reaches the process and its end (EOF) ends `cat`.
    let (code, stdout, stderr) = kubectl_with_stdin(
        &["-n", &ns.name, "exec", "-i", "target", "--", "cat"],
        b"line one\nline two\n",
    )
    .await;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout, "line one\nline two\n");
}

#[tokio::test]
async fn attach_streams_the_container_output() {
    let ns = TestNs::new("attach").await;
    target(&ns).await;
    let mut child = tokio::process::Command::new("kubectl")
        .args(["-n", &ns.name, "attach", "target", "-c", "app"])
        .kill_on_drop(true)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("kubectl attach");
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let got = tokio::time::timeout(Duration::from_secs(30), async {
        while let Ok(Some(l)) = lines.next_line().await {
            if l.contains("tick") {
                return true;
            }
        }
        false
    })
    .await
    .unwrap_or(false);
    child.kill().await.ok();
    let mut stderr = String::new();
    let _ = tokio::time::timeout(
        Duration::from_secs(5),
        child.stderr.take().unwrap().read_to_string(&mut stderr),
    )
    .await;
    assert!(
        got,
        "kubectl attach showed no output of the container: {stderr}"
    );
    // Detaching left the container running.
    let p: Pod = ns.api::<Pod>().get("target").await.unwrap();
    assert_eq!(restart_count(&p, "app"), 0);
    assert!(pod_ready(&p));
}

#[tokio::test]
async fn port_forward_reaches_nginx() {
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
        answer.contains("Welcome to nginx!"),
        "kubectl port-forward did not reach nginx (first line {line:?}):\nanswer: {answer}\nstderr: {stderr}"
    );
}

#[tokio::test]
async fn cp_copies_a_file_out_of_the_pod() {
    let ns = TestNs::new("cp").await;
    target(&ns).await;
    let local = format!("/tmp/berth-e2e-{}-file", ns.name);
    let from = format!("{}/target:/tmp/file", ns.name);
    // kubectl cp is tar over exec.
    let out = kubectl(&["cp", &from, &local]);
    let copied = std::fs::read_to_string(&local);
    let _ = std::fs::remove_file(&local);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(copied.unwrap(), "hello\n");
}
