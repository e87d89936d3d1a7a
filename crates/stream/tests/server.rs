//! The server's own rules: tokens, 404s, limits, TLS, and what a client
//! that disappears leaves behind.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use berth_stream::client::{
    ClientConfig, ClientError, RemoteCommandOptions, Transport, remote_command,
};
use berth_stream::{RequestError, StartError, StreamingConfig, TlsFiles};
use common::{eventually, exec, pid_alive, read_all, start};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut socket = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    socket.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    socket.read_to_string(&mut response).await.unwrap();
    response
}

#[tokio::test]
async fn urls_tokens_and_404s() {
    let (server, _) = start(StreamingConfig::default()).await;
    let base = server.base_url().to_string();
    assert!(base.starts_with("http://127.0.0.1:"), "{base}");
    let url = server.get_exec(exec(&["true"], false, false)).unwrap();
    let token = url.strip_prefix(&format!("{base}/exec/")).unwrap();
    assert_eq!(token.len(), 43);
    let addr = server.local_addr();
    for path in [
        "/",
        "/exec/",
        "/exec/nope",
        "/attach/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "/other/x",
    ] {
        assert!(
            http_get(addr, path).await.starts_with("HTTP/1.1 404"),
            "{path}"
        );
    }
    // A token works at its own path only, and once: the attach path
    // consumes it (404), then the exec path finds nothing.
    assert!(
        http_get(addr, &format!("/attach/{token}"))
            .await
            .starts_with("HTTP/1.1 404")
    );
    assert!(
        http_get(addr, &format!("/exec/{token}"))
            .await
            .starts_with("HTTP/1.1 404")
    );

    // Used once by a real client, then 404.
    let opts = RemoteCommandOptions::new(Transport::Spdy);
    let url = server.get_exec(exec(&["true"], false, false)).unwrap();
    let cmd = remote_command(&url, &ClientConfig::default(), &opts)
        .await
        .unwrap();
    assert_eq!(cmd.status().await.unwrap(), 0);
    match remote_command(&url, &ClientConfig::default(), &opts).await {
        Err(ClientError::Http { status: 404, .. }) => {}
        other => panic!("{:?}", other.err()),
    }
}

#[tokio::test]
async fn tokens_expire_and_pending_requests_are_bounded() {
    let config = StreamingConfig {
        request_ttl: Duration::from_millis(200),
        max_pending_requests: 5,
        ..StreamingConfig::default()
    };
    let (server, _) = start(config).await;
    let urls: Vec<String> = (0..5)
        .map(|_| server.get_exec(exec(&["true"], false, false)).unwrap())
        .collect();
    assert_eq!(
        server.get_exec(exec(&["true"], false, false)),
        Err(RequestError::TooManyPending { limit: 5 })
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let opts = RemoteCommandOptions::new(Transport::WebSocket);
    match remote_command(&urls[0], &ClientConfig::default(), &opts).await {
        Err(ClientError::Http { status: 404, .. }) => {}
        other => panic!("{:?}", other.err()),
    }
    // Expired entries made room.
    server.get_exec(exec(&["true"], false, false)).unwrap();
}

#[tokio::test]
async fn invalid_requests_are_refused() {
    let (server, _) = start(StreamingConfig::default()).await;
    let mut tty_and_stderr = exec(&["sh"], false, true);
    tty_and_stderr.stderr = true;
    let mut no_streams = exec(&["sh"], false, false);
    no_streams.stdout = false;
    no_streams.stderr = false;
    let mut no_container = exec(&["sh"], false, false);
    no_container.container_id.clear();
    for req in [tty_and_stderr, no_streams, no_container] {
        assert!(matches!(
            server.get_exec(req),
            Err(RequestError::InvalidArgument(_))
        ));
    }
}

/// A client that vanishes mid-exec: the process is killed, the session
/// and every task of it end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_killed_mid_stream_leaves_nothing() {
    let config = StreamingConfig {
        disconnect_grace: Duration::from_secs(2),
        ..StreamingConfig::default()
    };
    let (server, runtime) = start(config).await;
    let metrics = tokio::runtime::Handle::current().metrics();
    let baseline = metrics.num_alive_tasks();
    for transport in [Transport::Spdy, Transport::WebSocket] {
        let url = server
            .get_exec(exec(
                &["sh", "-c", "echo started; exec sleep 60"],
                true,
                false,
            ))
            .unwrap();
        let opts = RemoteCommandOptions {
            stdin: true,
            ..RemoteCommandOptions::new(transport)
        };
        // The client lives in its own task, aborted like a killed process.
        let (started_tx, started_rx) = tokio::sync::oneshot::channel();
        let client = tokio::spawn(async move {
            let mut cmd = remote_command(&url, &ClientConfig::default(), &opts)
                .await
                .unwrap();
            let mut line = [0u8; 8];
            cmd.stdout
                .as_mut()
                .unwrap()
                .read_exact(&mut line)
                .await
                .unwrap();
            started_tx.send(()).unwrap();
            std::future::pending::<()>().await;
            drop(cmd);
        });
        started_rx.await.unwrap();
        let pid = *runtime.counters.pids.lock().unwrap().last().unwrap();
        assert!(pid_alive(pid));
        assert_eq!(server.active_sessions(), 1);
        client.abort();
        let _ = client.await;
        eventually("exec process killed", || !pid_alive(pid)).await;
        eventually("session gone", || server.active_sessions() == 0).await;
        eventually("runtime future gone", || {
            runtime.counters.live_execs.load(Ordering::SeqCst) == 0
        })
        .await;
        eventually("no task left", || metrics.num_alive_tasks() <= baseline).await;
    }
}

/// A client that vanishes while its stdin is stalled (the process never
/// reads it, so the server stops reading the socket and never sees the
/// client's close behind the unread data): the server pings it, the write
/// fails, and the process is killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_killed_while_its_stdin_is_stalled_leaves_nothing() {
    let config = StreamingConfig {
        disconnect_grace: Duration::from_secs(2),
        ..StreamingConfig::default()
    };
    let (server, runtime) = start(config).await;
    for (round, transport) in [Transport::Spdy, Transport::WebSocket]
        .into_iter()
        .enumerate()
    {
        let url = server
            .get_exec(exec(&["sleep", "60"], true, false))
            .unwrap();
        let opts = RemoteCommandOptions {
            stdin: true,
            ..RemoteCommandOptions::new(transport)
        };
        let client = tokio::spawn(async move {
            let mut cmd = remote_command(&url, &ClientConfig::default(), &opts)
                .await
                .unwrap();
            let mut stdin = cmd.stdin.take().unwrap();
            let chunk = vec![b'x'; 64 * 1024];
            // Blocks once every buffer on the way is full.
            while stdin.write_all(&chunk).await.is_ok() {}
            std::future::pending::<()>().await;
        });
        // The exec counts as live before its process is spawned: wait for
        // this round's pid, not only for the count.
        eventually("the exec runs", || {
            runtime.counters.live_execs.load(Ordering::SeqCst) == 1
                && runtime.counters.pids.lock().unwrap().len() == round + 1
        })
        .await;
        let pid = runtime.counters.pids.lock().unwrap()[round];
        // Long enough for every buffer to fill.
        tokio::time::sleep(Duration::from_secs(2)).await;
        client.abort();
        let _ = client.await;
        // Pings every 5 s, the client's own close grace, ours: seconds, so
        // a generous bound, not a timing goal.
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while pid_alive(pid) || server.active_sessions() > 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "{transport:?}: the exec or its session outlived its client by 60 s (exec alive: {})",
                pid_alive(pid)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test]
async fn oversized_websocket_message_ends_the_session() {
    let config = StreamingConfig {
        max_websocket_message: 1024,
        ..StreamingConfig::default()
    };
    let (server, runtime) = start(config).await;
    let url = server.get_exec(exec(&["cat"], true, false)).unwrap();
    let opts = RemoteCommandOptions {
        stdin: true,
        ..RemoteCommandOptions::new(Transport::WebSocket)
    };
    let mut cmd = remote_command(&url, &ClientConfig::default(), &opts)
        .await
        .unwrap();
    let mut stdin = cmd.stdin.take().unwrap();
    stdin.write_all(b"small\n").await.unwrap();
    let mut line = [0u8; 6];
    cmd.stdout
        .as_mut()
        .unwrap()
        .read_exact(&mut line)
        .await
        .unwrap();
    // One 4 KiB message: over the limit.
    stdin.write_all(&[b'x'; 4096]).await.unwrap();
    let rest = read_all(cmd.stdout.as_mut().unwrap()).await;
    assert_eq!(
        rest, "",
        "nothing of the oversized message reached the process"
    );
    assert!(cmd.status().await.is_err());
    eventually("session gone", || server.active_sessions() == 0).await;
    eventually("exec gone", || {
        runtime.counters.live_execs.load(Ordering::SeqCst) == 0
    })
    .await;
}

#[tokio::test]
async fn oversized_spdy_frame_ends_the_session() {
    let (server, _) = start(StreamingConfig::default()).await;
    let url = server.get_exec(exec(&["true"], false, false)).unwrap();
    let path = url.strip_prefix(server.base_url()).unwrap();
    let mut socket = TcpStream::connect(server.local_addr()).await.unwrap();
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: v4.channel.k8s.io\r\n\r\n"
    );
    socket.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(socket.read_u8().await.unwrap());
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    // A SYN_STREAM control frame claiming 16 MiB - 1 of payload.
    socket
        .write_all(&[0x80, 0x03, 0x00, 0x01, 0x00, 0xff, 0xff, 0xff])
        .await
        .unwrap();
    socket.write_all(&[0u8; 4096]).await.unwrap();
    let mut sink = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), socket.read_to_end(&mut sink));
    // The server closes (after its SETTINGS and a GOAWAY, or a reset).
    let _ = read.await.expect("the server hangs up");
    eventually("session gone", || server.active_sessions() == 0).await;
}

#[tokio::test]
async fn tls() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let made = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=berth-test",
        ])
        .args([
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-addext",
            "basicConstraints=critical,CA:FALSE",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output();
    if !made.is_ok_and(|out| out.status.success()) {
        eprintln!("openssl unavailable: TLS test skipped");
        return;
    }
    let files = TlsFiles {
        cert_file: cert.clone(),
        key_file: key,
    };
    let config = StreamingConfig {
        tls: Some(files),
        ..StreamingConfig::default()
    };
    let (server, _) = start(config).await;
    assert!(server.base_url().starts_with("https://127.0.0.1:"));
    let client = ClientConfig {
        tls_ca_file: Some(cert),
    };
    for transport in [Transport::Spdy, Transport::WebSocket] {
        let url = server
            .get_exec(exec(&["sh", "-c", "echo secure; exit 2"], false, false))
            .unwrap();
        let mut cmd = remote_command(&url, &client, &RemoteCommandOptions::new(transport))
            .await
            .unwrap();
        assert_eq!(read_all(cmd.stdout.as_mut().unwrap()).await, "secure\n");
        assert_eq!(cmd.status().await.unwrap(), 2);
    }
    // Without trusting the CA the handshake fails.
    let url = server.get_exec(exec(&["true"], false, false)).unwrap();
    let untrusted = remote_command(
        &url,
        &ClientConfig::default(),
        &RemoteCommandOptions::new(Transport::Spdy),
    )
    .await;
    assert!(untrusted.is_err());
}

#[tokio::test]
async fn missing_tls_files_fail_startup() {
    let config = StreamingConfig {
        tls: Some(TlsFiles {
            cert_file: "/nonexistent/cert.pem".into(),
            key_file: "/nonexistent/key.pem".into(),
        }),
        ..StreamingConfig::default()
    };
    let runtime = common::FakeRuntime::new();
    match berth_stream::StreamingServer::start(config, runtime).await {
        Err(err @ StartError::TlsFile { .. }) => {
            assert!(err.to_string().contains("/nonexistent/cert.pem"))
        }
        Err(other) => panic!("{other}"),
        Ok(_) => panic!("started without its certificate"),
    }
}
