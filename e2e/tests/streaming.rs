//! Exec, Attach and PortForward through berthd's streaming server, with
//! Berth's own client (`berth_stream::client`) over SPDY and WebSocket,
//! against a real berthd, its monitors and busybox from the registry
//! fixture. Needs root.

use std::time::{Duration, Instant};

use berth_api::v1::*;
use berth_e2e::client::CriClient;
use berth_e2e::daemon::BerthdConfig;
use berth_e2e::pods::*;
use berth_stream::TerminalSize;
use berth_stream::client::{
    ClientConfig, ClientError, RemoteCommand, RemoteCommandOptions, SpdyPortForward, Transport,
    port_forward_websocket, remote_command,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tonic::Code;

const TRANSPORTS: [Transport; 2] = [Transport::Spdy, Transport::WebSocket];

/// The page the pod's web server serves.
const PAGE: &str = "hello from a berth pod";

/// busybox httpd on `port` serving [`PAGE`] as /index.html.
fn web_server(name: &str, listen: &str) -> ContainerConfig {
    ctr_config(
        name,
        BUSYBOX,
        &format!(
            "mkdir -p /www && echo '{PAGE}' > /www/index.html && exec httpd -f -p {listen} -h /www"
        ),
    )
}

async fn port_forward_url(c: &mut CriClient, pod: &str, ports: &[i32]) -> String {
    c.runtime
        .port_forward(PortForwardRequest {
            pod_sandbox_id: pod.into(),
            port: ports.to_vec(),
        })
        .await
        .unwrap()
        .into_inner()
        .url
}

fn exec_request(id: &str, cmd: &[&str], tty: bool, stdin: bool) -> ExecRequest {
    ExecRequest {
        container_id: id.into(),
        cmd: cmd.iter().map(|s| s.to_string()).collect(),
        tty,
        stdin,
        stdout: true,
        stderr: !tty,
    }
}

async fn exec_url(c: &mut CriClient, id: &str, cmd: &[&str], tty: bool, stdin: bool) -> String {
    c.runtime
        .exec(exec_request(id, cmd, tty, stdin))
        .await
        .unwrap()
        .into_inner()
        .url
}

fn options(transport: Transport, tty: bool, stdin: bool) -> RemoteCommandOptions {
    RemoteCommandOptions {
        stdin,
        tty,
        stderr: !tty,
        ..RemoteCommandOptions::new(transport)
    }
}

async fn read_all(r: &mut (impl AsyncRead + Unpin)) -> String {
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), r.read_to_end(&mut out))
        .await
        .expect("stream did not end within 20 s")
        .unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

/// Reads until the output holds `want`; what was read.
async fn read_until(r: &mut (impl AsyncRead + Unpin), want: &str) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(20);
    while !String::from_utf8_lossy(&out).contains(want) {
        let left = deadline.saturating_duration_since(Instant::now());
        let n = tokio::time::timeout(left, r.read(&mut buf))
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "no {want:?} within 20 s; got {:?}",
                    String::from_utf8_lossy(&out)
                )
            })
            .unwrap();
        assert!(
            n > 0,
            "EOF before {want:?}; got {:?}",
            String::from_utf8_lossy(&out)
        );
        out.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One HTTP/1.0 GET over a forwarded connection; the whole answer.
async fn http_get(mut conn: impl AsyncRead + AsyncWrite + Unpin) -> String {
    conn.write_all(b"GET /index.html HTTP/1.0\r\nHost: pod\r\n\r\n")
        .await
        .unwrap();
    conn.flush().await.unwrap();
    read_all(&mut conn).await
}

/// Retries `f` until it holds (a server in a container starting up).
async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(15);
    while !f().await {
        assert!(Instant::now() < deadline, "{what}: not within 15 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Fetches the page over one SPDY port-forward connection, ending it as
/// client-go does (the data stream reset once the pod's side ended, then
/// the error stream read to its end); the error stream's message when
/// forwarding failed.
async fn fetch_spdy(pf: &SpdyPortForward, port: u16) -> Result<String, String> {
    let mut stream = pf.open(port).unwrap();
    let page = http_get(&mut stream.data).await;
    let message = tokio::time::timeout(Duration::from_secs(20), stream.finish())
        .await
        .expect("the error stream ends")
        .unwrap();
    if message.is_empty() {
        Ok(page)
    } else {
        Err(message)
    }
}

/// One session carries connection after connection, and many at once; a
/// refused port is an error on its error stream and the session goes on.
async fn one_session_many_connections(pf: &SpdyPortForward) {
    for _ in 0..3 {
        assert!(fetch_spdy(pf, 8080).await.unwrap().contains(PAGE));
    }
    let pages = futures::future::join_all((0..16).map(|_| fetch_spdy(pf, 8080))).await;
    for page in pages {
        assert!(page.unwrap().contains(PAGE));
    }
    let refused = fetch_spdy(pf, 9).await.unwrap_err();
    assert!(
        refused.contains("localhost:9") && refused.contains("refused"),
        "{refused}"
    );
    for _ in 0..2 {
        assert!(fetch_spdy(pf, 8080).await.unwrap().contains(PAGE));
    }
}

/// The fds berthd has open.
fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[tokio::test]
async fn port_forward_over_spdy_and_websocket() {
    let mut env = setup(&[BUSYBOX]).await;
    let (pod, pc) = run_pod(&mut env, "pf").await;
    running(&mut env.c, &pod, &pc, web_server("web", "8080")).await;
    // A second server only on IPv6 loopback.
    running(&mut env.c, &pod, &pc, web_server("web6", "[::1]:8086")).await;

    let url = port_forward_url(&mut env.c, &pod, &[]).await;
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    assert!(url.contains("/portforward/"), "{url}");
    let pf = SpdyPortForward::connect(&url, &ClientConfig::default())
        .await
        .unwrap();
    // httpd may still be starting.
    eventually("httpd answers", || async {
        fetch_spdy(&pf, 8080).await.is_ok()
    })
    .await;
    let page = fetch_spdy(&pf, 8080).await.unwrap();
    assert!(page.starts_with("HTTP/1.") && page.contains(PAGE), "{page}");
    one_session_many_connections(&pf).await;
    // IPv6 loopback, after 127.0.0.1 refused.
    eventually("httpd on ::1 answers", || async {
        fetch_spdy(&pf, 8086).await.is_ok()
    })
    .await;
    assert!(fetch_spdy(&pf, 8086).await.unwrap().contains(PAGE));
    assert!(fetch_spdy(&pf, 8080).await.unwrap().contains(PAGE));
    pf.close();

    // WebSocket: the ports come with the CRI request.
    let url = port_forward_url(&mut env.c, &pod, &[8080, 9]).await;
    let mut ws = port_forward_websocket(&url, &ClientConfig::default(), &[8080, 9])
        .await
        .unwrap();
    let (data, _) = ws.ports.remove(0);
    let page = http_get(data).await;
    assert!(page.contains(PAGE), "{page}");
    let (mut data, mut error) = ws.ports.remove(0);
    let _ = data.write_all(b"x").await;
    let message = read_until(&mut error, "refused").await;
    assert!(message.contains("localhost:9"), "{message}");

    // SPDY tunneled through WebSocket (crictl/kubectl --transport websocket).
    let url = port_forward_url(&mut env.c, &pod, &[]).await;
    let pf = SpdyPortForward::connect_over_websocket(&url, &ClientConfig::default())
        .await
        .unwrap();
    one_session_many_connections(&pf).await;
    assert!(fetch_spdy(&pf, 8086).await.unwrap().contains(PAGE));
    pf.close();
}

#[tokio::test]
async fn port_forward_host_network_pod() {
    let mut env = setup(&[BUSYBOX]).await;
    let mut pc = pod_config(&env, "pfhost");
    pod_namespaces(&mut pc).network = NamespaceMode::Node as i32;
    let pod = run_pod_with(&mut env.c, &pc).await;
    // A free port on the host's loopback.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut web = web_server("web", &format!("127.0.0.1:{port}"));
    web.linux
        .as_mut()
        .unwrap()
        .security_context
        .as_mut()
        .unwrap()
        .namespace_options
        .as_mut()
        .unwrap()
        .network = NamespaceMode::Node as i32;
    running(&mut env.c, &pod, &pc, web).await;
    let url = port_forward_url(&mut env.c, &pod, &[]).await;
    let pf = SpdyPortForward::connect(&url, &ClientConfig::default())
        .await
        .unwrap();
    eventually("httpd on the host answers", || async {
        fetch_spdy(&pf, port).await.is_ok()
    })
    .await;
    assert!(fetch_spdy(&pf, port).await.unwrap().contains(PAGE));
}

#[tokio::test]
async fn urls_are_single_use_and_bad_requests_are_refused() {
    let mut env = setup(&[BUSYBOX]).await;
    let (pod, pc) = run_pod(&mut env, "urls").await;

    // A URL works once; the second use is a 404.
    let url = port_forward_url(&mut env.c, &pod, &[]).await;
    let pf = SpdyPortForward::connect(&url, &ClientConfig::default())
        .await
        .unwrap();
    pf.close();
    match SpdyPortForward::connect(&url, &ClientConfig::default()).await {
        Err(ClientError::Http { status: 404, .. }) => {}
        Err(e) => panic!("reused URL: {e}"),
        Ok(_) => panic!("reused URL accepted"),
    }
    // A made-up token is a 404 too.
    let forged = format!("{}x", &url[..url.len() - 1]);
    assert!(matches!(
        SpdyPortForward::connect(&forged, &ClientConfig::default()).await,
        Err(ClientError::Http { status: 404, .. })
    ));

    // PortForward: bad ports, unknown and stopped pods.
    for port in [0, -1, 65536] {
        let e = env
            .c
            .runtime
            .port_forward(PortForwardRequest {
                pod_sandbox_id: pod.clone(),
                port: vec![port],
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    }
    let e = env
        .c
        .runtime
        .port_forward(PortForwardRequest {
            pod_sandbox_id: "nope".into(),
            port: vec![80],
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");

    // Exec and Attach: unknown containers, empty commands, tty with
    // stderr, containers that are not running.
    let e = env
        .c
        .runtime
        .exec(exec_request("nope", &["true"], false, false))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    let e = env
        .c
        .runtime
        .attach(AttachRequest {
            container_id: "nope".into(),
            stdout: true,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    let created = create(
        &mut env.c,
        &pod,
        &pc,
        ctr_config("idle", BUSYBOX, "sleep 1000"),
    )
    .await
    .unwrap();
    let e = env
        .c
        .runtime
        .exec(exec_request(&created, &[], false, false))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    let e = env
        .c
        .runtime
        .exec(exec_request(&created, &["true"], false, false))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("not RUNNING"), "{}", e.message());
    let e = env
        .c
        .runtime
        .attach(AttachRequest {
            container_id: created.clone(),
            stdout: true,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");

    stop_pod(&mut env.c, &pod).await;
    let e = env
        .c
        .runtime
        .port_forward(PortForwardRequest {
            pod_sandbox_id: pod.clone(),
            port: vec![80],
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
}

#[tokio::test]
async fn unused_urls_expire_after_a_minute() {
    let mut env = setup(&[]).await;
    let (pod, _) = run_pod(&mut env, "expiry").await;
    let url = port_forward_url(&mut env.c, &pod, &[]).await;
    tokio::time::sleep(Duration::from_secs(61)).await;
    assert!(matches!(
        SpdyPortForward::connect(&url, &ClientConfig::default()).await,
        Err(ClientError::Http { status: 404, .. })
    ));
}

/// A self-signed certificate for 127.0.0.1 and its key; None without openssl.
fn self_signed(dir: &std::path::Path) -> Option<(std::path::PathBuf, std::path::PathBuf)> {
    let (cert, key) = (dir.join("stream.crt"), dir.join("stream.key"));
    let made = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"])
        .args([
            "-subj",
            "/CN=berth-e2e",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ])
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output();
    made.is_ok_and(|o| o.status.success())
        .then_some((cert, key))
}

#[tokio::test]
async fn streaming_section_sets_port_and_tls() {
    let mut config = BerthdConfig::new().unwrap();
    let Some((cert, key)) = self_signed(config.dir.path()) else {
        eprintln!("openssl unavailable: TLS test skipped");
        return;
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    config.config_toml = Some(format!(
        "[streaming]\naddress = \"127.0.0.1\"\nport = {port}\nidle_timeout_secs = 60\n\
         tls_cert_file = \"{}\"\ntls_key_file = \"{}\"\n",
        cert.display(),
        key.display()
    ));
    let reg = test_registry(&mut config);
    let _g = berth_e2e::cleanup::Guard(config.dir.path().to_path_buf());
    let (d, mut c) = start_and_pull(config, &[BUSYBOX]).await;
    let pc = pod_config_for(&d, "tls");
    let pod = run_pod_with(&mut c, &pc).await;
    running(&mut c, &pod, &pc, web_server("web", "8080")).await;
    let url = port_forward_url(&mut c, &pod, &[]).await;
    assert!(
        url.starts_with(&format!("https://127.0.0.1:{port}/portforward/")),
        "{url}"
    );
    let client = ClientConfig {
        tls_ca_file: Some(cert),
    };
    let pf = SpdyPortForward::connect(&url, &client).await.unwrap();
    eventually("httpd answers over TLS", || async {
        fetch_spdy(&pf, 8080).await.is_ok()
    })
    .await;
    // Without trusting the certificate the client refuses.
    let url = port_forward_url(&mut c, &pod, &[]).await;
    assert!(
        SpdyPortForward::connect(&url, &ClientConfig::default())
            .await
            .is_err()
    );
    drop(reg);
}

#[tokio::test]
async fn exec_with_and_without_tty() {
    let mut env = setup(&[BUSYBOX]).await;
    let (pod, pc) = run_pod(&mut env, "sexec").await;
    let id = running(
        &mut env.c,
        &pod,
        &pc,
        ctr_config("main", BUSYBOX, "exec sleep 1000"),
    )
    .await;
    let none = ClientConfig::default();
    for transport in TRANSPORTS {
        // stdin through `cat`, its EOF reaching the process.
        let url = exec_url(&mut env.c, &id, &["cat"], false, true).await;
        assert!(
            url.starts_with("http://127.0.0.1:") && url.contains("/exec/"),
            "{url}"
        );
        let mut cmd = remote_command(&url, &none, &options(transport, false, true))
            .await
            .unwrap();
        let mut stdin = cmd.stdin.take().unwrap();
        stdin.write_all(b"ping\npong\n").await.unwrap();
        stdin.shutdown().await.unwrap();
        assert_eq!(read_all(cmd.stdout.as_mut().unwrap()).await, "ping\npong\n");
        assert_eq!(cmd.status().await.unwrap(), 0, "{transport:?}");

        // Exit codes; stderr apart from stdout.
        let url = exec_url(
            &mut env.c,
            &id,
            &["sh", "-c", "echo out; echo err >&2; exit 3"],
            false,
            false,
        )
        .await;
        let mut cmd = remote_command(&url, &none, &options(transport, false, false))
            .await
            .unwrap();
        let mut out = cmd.stdout.take().unwrap();
        let mut err = cmd.stderr.take().unwrap();
        let (out, err) = tokio::join!(read_all(&mut out), read_all(&mut err));
        assert_eq!((out.as_str(), err.as_str()), ("out\n", "err\n"));
        assert_eq!(cmd.status().await.unwrap(), 3, "{transport:?}");

        // A command that does not exist: a failure, not a hang.
        let url = exec_url(&mut env.c, &id, &["/no/such/binary"], false, false).await;
        let cmd = remote_command(&url, &none, &options(transport, false, false))
            .await
            .unwrap();
        let status = cmd.status().await;
        assert!(
            !matches!(status, Ok(0)),
            "{transport:?}: missing binary: {status:?}"
        );

        // A terminal: resize, then `stty size` sees it; the exit code of
        // the shell.
        let url = exec_url(&mut env.c, &id, &["sh"], true, true).await;
        let mut cmd = remote_command(&url, &none, &options(transport, true, true))
            .await
            .unwrap();
        let mut resize = cmd.resize.take().unwrap();
        resize
            .send(TerminalSize {
                width: 123,
                height: 45,
            })
            .await
            .unwrap();
        let mut stdin = cmd.stdin.take().unwrap();
        let mut stdout = cmd.stdout.take().unwrap();
        stdin.write_all(b"stty size\n").await.unwrap();
        read_until(&mut stdout, "45 123").await;
        resize
            .send(TerminalSize {
                width: 90,
                height: 20,
            })
            .await
            .unwrap();
        stdin.write_all(b"stty size; exit 5\n").await.unwrap();
        let rest = read_all(&mut stdout).await;
        assert!(rest.contains("20 90"), "{rest:?}");
        assert_eq!(cmd.status().await.unwrap(), 5, "{transport:?}");

        // A terminal's stdin EOF ends `cat` on it.
        let url = exec_url(&mut env.c, &id, &["cat"], true, true).await;
        let mut cmd = remote_command(&url, &none, &options(transport, true, true))
            .await
            .unwrap();
        let mut stdin = cmd.stdin.take().unwrap();
        stdin.write_all(b"typed\n").await.unwrap();
        read_until(cmd.stdout.as_mut().unwrap(), "typed").await;
        stdin.shutdown().await.unwrap();
        read_all(cmd.stdout.as_mut().unwrap()).await;
        assert_eq!(cmd.status().await.unwrap(), 0, "{transport:?}");
    }
}

/// The pid of the pod's monitor (its command line holds the pod id's
/// first 32 hex digits).
fn monitor_of(pod: &str) -> u32 {
    berth_e2e::procs::processes()
        .into_iter()
        .find(|p| p.cmdline.contains("berth-monitor") && p.cmdline.contains(&pod[..32]))
        .map(|p| p.pid as u32)
        .expect("the pod's monitor")
}

/// Processes whose command line holds `needle`.
fn procs_with(needle: &str) -> usize {
    berth_e2e::procs::processes()
        .iter()
        .filter(|p| p.cmdline.contains(needle))
        .count()
}

#[tokio::test]
async fn client_gone_mid_stream_leaves_nothing() {
    let mut env = setup(&[BUSYBOX]).await;
    let (pod, pc) = run_pod(&mut env, "gone").await;
    let id = running(
        &mut env.c,
        &pod,
        &pc,
        ctr_config("main", BUSYBOX, "exec sleep 1000"),
    )
    .await;
    let berthd = env.d.pid().unwrap();
    let monitor = monitor_of(&pod);
    let none = ClientConfig::default();
    // An exec with and without a terminal first, so that lazily made
    // things (connections, pools, the monitor's console socket) exist
    // before the baseline.
    for tty in [false, true] {
        let url = exec_url(&mut env.c, &id, &["true"], tty, false).await;
        let cmd = remote_command(&url, &none, &options(Transport::Spdy, tty, false))
            .await
            .unwrap();
        assert_eq!(cmd.status().await.unwrap(), 0);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let baseline = fd_count(berthd);
    let monitor_baseline = fd_count(monitor);
    for (i, transport) in TRANSPORTS.into_iter().enumerate() {
        for tty in [false, true] {
            let marker = format!("{}", 4200 + i * 10 + tty as usize);
            let url = exec_url(&mut env.c, &id, &["sleep", &marker], tty, true).await;
            let mut cmd: RemoteCommand =
                remote_command(&url, &none, &options(transport, tty, true))
                    .await
                    .unwrap();
            cmd.stdin.as_mut().unwrap().write_all(b"x").await.unwrap();
            eventually("the exec runs", || async {
                procs_with(&format!("sleep {marker}")) == 1
            })
            .await;
            // The client vanishes.
            drop(cmd);
            eventually("the exec is killed", || async {
                procs_with(&format!("sleep {marker}")) == 0
            })
            .await;
        }
    }
    eventually("berthd's fds back to the baseline", || async {
        fd_count(berthd) <= baseline
    })
    .await;
    // The monitor let go of the execs' stdio and terminals too.
    eventually("the monitor's fds back to the baseline", || async {
        fd_count(monitor) <= monitor_baseline
    })
    .await;

    // A port-forward client gone in the middle of a transfer: berthd
    // closes the pod connection and the session.
    running(
        &mut env.c,
        &pod,
        &pc,
        ctr_config("zeros", BUSYBOX, "exec nc -ll -p 7000 -e cat /dev/zero"),
    )
    .await;
    let url = port_forward_url(&mut env.c, &pod, &[]).await;
    let pf = SpdyPortForward::connect(&url, &none).await.unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    let deadline = Instant::now() + Duration::from_secs(15);
    // nc may not listen yet: a refused connection reads EOF at once.
    let (mut stream, mut got) = loop {
        let mut stream = pf.open(7000).unwrap();
        let n = tokio::time::timeout(Duration::from_secs(20), stream.data.read(&mut buf))
            .await
            .expect("the pod's bytes or EOF")
            .unwrap();
        if n > 0 {
            break (stream, n);
        }
        assert!(Instant::now() < deadline, "nc in the pod never answered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    while got < 1 << 20 {
        let n = tokio::time::timeout(Duration::from_secs(20), stream.data.read(&mut buf))
            .await
            .expect("the pod's bytes flow")
            .unwrap();
        assert!(n > 0, "EOF after {got} bytes");
        got += n;
    }
    drop(stream);
    drop(pf);
    eventually(
        "berthd's fds back after the port-forward client left",
        || async { fd_count(berthd) <= baseline },
    )
    .await;
    // And the container still serves execs.
    let url = exec_url(&mut env.c, &id, &["sh", "-c", "exit 4"], false, false).await;
    let cmd = remote_command(&url, &none, &options(Transport::WebSocket, false, false))
        .await
        .unwrap();
    assert_eq!(cmd.status().await.unwrap(), 4);
}

fn attachable(name: &str, command: &str, tty: bool, stdin_once: bool) -> ContainerConfig {
    ContainerConfig {
        stdin: true,
        stdin_once,
        tty,
        ..ctr_config(name, BUSYBOX, command)
    }
}

async fn attach_url(c: &mut CriClient, id: &str, tty: bool) -> String {
    c.runtime
        .attach(AttachRequest {
            container_id: id.into(),
            stdin: true,
            tty,
            stdout: true,
            stderr: !tty,
        })
        .await
        .unwrap()
        .into_inner()
        .url
}

#[tokio::test]
async fn attach_to_stdin_and_tty_containers() {
    let mut env = setup(&[BUSYBOX]).await;
    let (pod, pc) = run_pod(&mut env, "attach").await;
    let none = ClientConfig::default();
    for transport in TRANSPORTS {
        // `cat` on a stdin_once pipe: what the client types comes back;
        // the client's EOF ends the attach and closes the container's
        // stdin, so cat exits 0.
        let name = format!("cat-{transport:?}").to_lowercase();
        let id = running(
            &mut env.c,
            &pod,
            &pc,
            attachable(&name, "exec cat", false, true),
        )
        .await;
        let url = attach_url(&mut env.c, &id, false).await;
        assert!(url.contains("/attach/"), "{url}");
        let mut session = remote_command(&url, &none, &options(transport, false, true))
            .await
            .unwrap();
        let mut stdin = session.stdin.take().unwrap();
        stdin.write_all(b"hello attach\n").await.unwrap();
        read_until(session.stdout.as_mut().unwrap(), "hello attach\n").await;
        stdin.shutdown().await.unwrap();
        assert_eq!(session.status().await.unwrap(), 0, "{transport:?}");
        let s = wait_state(&mut env.c, &id, ContainerState::ContainerExited).await;
        assert_eq!(s.exit_code, 0);

        // stdin_once: the client closing its stdin closes the container's
        // (EOF reaches the process), and what the process writes after
        // that still reaches the client, until it exits.
        let name = format!("after-{transport:?}").to_lowercase();
        let script =
            r#"read x; echo "got $x"; cat >/dev/null; echo "stdin closed"; sleep 1; echo after"#;
        let id = running(
            &mut env.c,
            &pod,
            &pc,
            attachable(&name, script, false, true),
        )
        .await;
        let url = attach_url(&mut env.c, &id, false).await;
        let mut session = remote_command(&url, &none, &options(transport, false, true))
            .await
            .unwrap();
        let mut stdin = session.stdin.take().unwrap();
        stdin.write_all(b"line\n").await.unwrap();
        let mut stdout = session.stdout.take().unwrap();
        let first = read_until(&mut stdout, "got line\n").await;
        stdin.shutdown().await.unwrap();
        let rest = read_all(&mut stdout).await;
        assert_eq!(
            format!("{first}{rest}"),
            "got line\nstdin closed\nafter\n",
            "{transport:?}"
        );
        assert_eq!(session.status().await.unwrap(), 0, "{transport:?}");
        let s = wait_state(&mut env.c, &id, ContainerState::ContainerExited).await;
        assert_eq!(s.exit_code, 0);

        // A shell on a terminal: resize, two attaches one after the other,
        // detaching leaves it running; its output is in its CRI log.
        let name = format!("tty-{transport:?}").to_lowercase();
        let id = running(
            &mut env.c,
            &pod,
            &pc,
            attachable(&name, "exec sh", true, false),
        )
        .await;
        for round in 0..2 {
            let url = attach_url(&mut env.c, &id, true).await;
            let mut session = remote_command(&url, &none, &options(transport, true, true))
                .await
                .unwrap();
            let mut resize = session.resize.take().unwrap();
            resize
                .send(TerminalSize {
                    width: 111 + round,
                    height: 33,
                })
                .await
                .unwrap();
            let mut stdin = session.stdin.take().unwrap();
            // Resizes race the command: ask until the new size shows.
            let want = format!("33 {}", 111 + round);
            let mut seen = String::new();
            for _ in 0..50 {
                stdin.write_all(b"stty size\n").await.unwrap();
                let chunk = read_until(session.stdout.as_mut().unwrap(), "\n").await;
                seen.push_str(&chunk);
                if seen.contains(&want) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            assert!(
                seen.contains(&want),
                "{transport:?} round {round}: {seen:?}"
            );
            drop(stdin);
            drop(session);
            tokio::time::sleep(Duration::from_millis(200)).await;
            wait_state(&mut env.c, &id, ContainerState::ContainerRunning).await;
        }
        let log = std::path::Path::new(&pc.log_directory).join(format!("{name}/0.log"));
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(text.contains("33 111"), "{}: {text:?}", log.display());
    }
}
