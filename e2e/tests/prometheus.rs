//! berthd's own Prometheus endpoint (`[metrics] address`): RPCs counted by
//! gRPC code and timed, pods, containers and pod monitors by state, as a
//! scraper reads them. Needs root.

use std::time::{Duration, Instant};

use berth_api::v1::*;
use berth_e2e::daemon::BerthdConfig;
use berth_e2e::net::free_port;
use berth_e2e::pods::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One HTTP/1.1 GET; (status line, body).
async fn get(port: u16, path: &str) -> (String, String) {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).await.unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    (head.lines().next().unwrap().to_string(), body.to_string())
}

#[tokio::test]
async fn metrics_endpoint_counts_rpcs_and_reports_pods_and_containers() {
    let port = free_port();
    let mut config = BerthdConfig::new().unwrap();
    config.config_toml = Some(format!("[metrics]\naddress = \"127.0.0.1:{port}\"\n"));
    let _reg = test_registry(&mut config);
    let (d, mut c) = start_and_pull(config, &[BUSYBOX]).await;
    let pc = pod_config_for(&d, "metrics");
    let pod = run_pod_with(&mut c, &pc).await;
    let id = create(
        &mut c,
        &pod,
        &pc,
        ctr_config("m", BUSYBOX, "exec sleep 300"),
    )
    .await
    .unwrap();
    start(&mut c, &id).await;
    let err = c
        .runtime
        .container_status(ContainerStatusRequest {
            container_id: "f".repeat(64),
            verbose: false,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);

    let wanted = [
        r#"berth_cri_requests_total{rpc="/runtime.v1.RuntimeService/RunPodSandbox",code="OK"} 1"#,
        r#"berth_cri_requests_total{rpc="/runtime.v1.RuntimeService/ContainerStatus",code="NotFound"} 1"#,
        r#"berth_cri_requests_total{rpc="/runtime.v1.ImageService/PullImage",code="OK"} 1"#,
        r#"berth_cri_request_duration_seconds_count{rpc="/runtime.v1.RuntimeService/CreateContainer"} 1"#,
        r#"berth_pods{state="SANDBOX_READY"} 1"#,
        r#"berth_pods{state="SANDBOX_NOTREADY"} 0"#,
        r#"berth_containers{state="CONTAINER_RUNNING"} 1"#,
        r#"berth_pod_monitors{watch="live"} 1"#,
        r#"berth_image_pulls_total{result="OK"} 1"#,
        r#"berth_image_pull_duration_seconds_count{result="OK"} 1"#,
        r#"berth_containers_lost_total 0"#,
        r#"berth_pod_monitors_unresponsive_total 0"#,
    ];
    // The monitor's watch turns live moments after the first container.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = get(port, "/metrics").await;
        assert!(status.contains("200"), "{status}");
        let missing: Vec<&&str> = wanted.iter().filter(|w| !body.contains(**w)).collect();
        if missing.is_empty() {
            assert!(body.ends_with("# EOF\n"), "not OpenMetrics: {body}");
            break;
        }
        assert!(Instant::now() < deadline, "missing {missing:?} in:\n{body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (status, _) = get(port, "/other").await;
    assert!(status.contains("404"), "{status}");
    // The busybox layer came from the registry once.
    let (_, body) = get(port, "/metrics").await;
    let layer_bytes = value_of(&body, "berth_image_pull_layer_bytes_total");
    assert!(layer_bytes > 1000.0, "{body}");
    // A pull that fails counts by its code; no layer bytes move.
    let err = c
        .image
        .pull_image(PullImageRequest {
            image: Some(ImageSpec {
                image: "berth-test/no-such:image".to_string(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    let (_, body) = get(port, "/metrics").await;
    let code = format!("{:?}", err.code());
    assert!(
        body.contains(&format!(r#"berth_image_pulls_total{{result="{code}"}} 1"#)),
        "{body}"
    );
    assert_eq!(
        value_of(&body, "berth_image_pull_layer_bytes_total"),
        layer_bytes
    );

    stop_pod(&mut c, &pod).await;
    remove_pod(&mut c, &pod).await;
    let (_, body) = get(port, "/metrics").await;
    assert!(
        body.contains(r#"berth_pods{state="SANDBOX_READY"} 0"#),
        "{body}"
    );
    assert!(
        body.contains(r#"berth_cri_requests_total{rpc="/runtime.v1.RuntimeService/RemovePodSandbox",code="OK"} 1"#),
        "{body}"
    );

    // A monitor killed under its running container: the container is lost,
    // counted once whichever path finds it (this loop's scrapes ask the
    // monitor once the watch has ended).
    let pc = pod_config_for(&d, "metrics-lost");
    let pod = run_pod_with(&mut c, &pc).await;
    let id = running(
        &mut c,
        &pod,
        &pc,
        ctr_config("m", BUSYBOX, "exec sleep 300"),
    )
    .await;
    let monitor = berth_e2e::procs::monitor_of(&pod).expect("the pod's monitor");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(monitor),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, body) = get(port, "/metrics").await;
        if body.contains("berth_containers_lost_total 1\n") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "container loss not counted:\n{body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let s = wait_state(&mut c, &id, ContainerState::ContainerExited).await;
    assert_eq!(s.exit_code, 255, "{s:?}");
    stop_pod(&mut c, &pod).await;
    remove_pod(&mut c, &pod).await;
}

/// The value of an unlabelled sample.
fn value_of(body: &str, name: &str) -> f64 {
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in:\n{body}"))
}
