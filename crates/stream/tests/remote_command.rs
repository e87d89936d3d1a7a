//! Exec and attach through the real server, over SPDY and WebSocket, with
//! host processes behind a fake runtime.

mod common;

use std::time::Duration;

use berth_stream::client::{
    ClientConfig, ClientError, RemoteCommandOptions, Transport, remote_command,
};
use berth_stream::{AttachRequest, StreamingConfig, TerminalSize};
use common::{exec, read_all, start};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TRANSPORTS: [Transport; 2] = [Transport::Spdy, Transport::WebSocket];

fn options(transport: Transport, stdin: bool, tty: bool) -> RemoteCommandOptions {
    RemoteCommandOptions {
        stdin,
        tty,
        stderr: !tty,
        ..RemoteCommandOptions::new(transport)
    }
}

#[tokio::test]
async fn exec_reports_output_and_exit_codes() {
    let (server, _) = start(StreamingConfig::default()).await;
    for transport in TRANSPORTS {
        for (script, code) in [
            ("echo out; echo err >&2; exit 3", 3),
            ("echo out; echo err >&2", 0),
        ] {
            let url = server
                .get_exec(exec(&["sh", "-c", script], false, false))
                .unwrap();
            let mut cmd = remote_command(
                &url,
                &ClientConfig::default(),
                &options(transport, false, false),
            )
            .await
            .unwrap();
            let mut stdout = cmd.stdout.take().unwrap();
            let mut stderr = cmd.stderr.take().unwrap();
            let (out, err) = tokio::join!(read_all(&mut stdout), read_all(&mut stderr));
            assert_eq!(
                (out.as_str(), err.as_str()),
                ("out\n", "err\n"),
                "{transport:?}"
            );
            assert_eq!(cmd.status().await.unwrap(), code, "{transport:?} {script}");
        }
    }
}

#[tokio::test]
async fn stdin_eof_reaches_the_process() {
    let (server, _) = start(StreamingConfig::default()).await;
    for transport in TRANSPORTS {
        let url = server
            .get_exec(exec(&["sh", "-c", "cat; echo done"], true, false))
            .unwrap();
        let mut cmd = remote_command(
            &url,
            &ClientConfig::default(),
            &options(transport, true, false),
        )
        .await
        .unwrap();
        let mut stdin = cmd.stdin.take().unwrap();
        stdin.write_all(b"hello ").await.unwrap();
        stdin.write_all(&vec![b'x'; 200_000]).await.unwrap();
        stdin.shutdown().await.unwrap();
        let out = read_all(cmd.stdout.as_mut().unwrap()).await;
        assert_eq!(out.len(), 6 + 200_000 + 5, "{transport:?}");
        assert!(out.starts_with("hello xxx") && out.ends_with("xdone\n"));
        assert_eq!(cmd.status().await.unwrap(), 0);
    }
}

#[tokio::test]
async fn exec_without_stdin_sees_no_input() {
    let (server, _) = start(StreamingConfig::default()).await;
    for transport in TRANSPORTS {
        let url = server
            .get_exec(exec(&["sh", "-c", "cat; echo end"], false, false))
            .unwrap();
        let mut cmd = remote_command(
            &url,
            &ClientConfig::default(),
            &options(transport, false, false),
        )
        .await
        .unwrap();
        assert!(cmd.stdin.is_none());
        assert_eq!(read_all(cmd.stdout.as_mut().unwrap()).await, "end\n");
        assert_eq!(cmd.status().await.unwrap(), 0);
    }
}

#[tokio::test]
async fn tty_and_resize_messages_reach_the_runtime() {
    let (server, _) = start(StreamingConfig::default()).await;
    for transport in TRANSPORTS {
        let url = server
            .get_exec(exec(&["resize-echo", "2"], true, true))
            .unwrap();
        let mut cmd = remote_command(
            &url,
            &ClientConfig::default(),
            &options(transport, true, true),
        )
        .await
        .unwrap();
        assert!(cmd.stderr.is_none());
        let mut resize = cmd.resize.take().expect("a resize stream with a tty");
        resize
            .send(TerminalSize {
                width: 80,
                height: 24,
            })
            .await
            .unwrap();
        resize
            .send(TerminalSize {
                width: 132,
                height: 50,
            })
            .await
            .unwrap();
        let out = read_all(cmd.stdout.as_mut().unwrap()).await;
        assert_eq!(out, "tty=true\n80x24\n132x50\n", "{transport:?}");
        assert_eq!(cmd.status().await.unwrap(), 0);
    }
}

#[tokio::test]
async fn older_protocol_versions() {
    let (server, _) = start(StreamingConfig::default()).await;
    let cases: &[(Transport, &str, bool)] = &[
        (Transport::Spdy, "v4.channel.k8s.io", true),
        (Transport::Spdy, "v3.channel.k8s.io", false),
        (Transport::Spdy, "v2.channel.k8s.io", false),
        (Transport::WebSocket, "v4.channel.k8s.io", true),
        (Transport::WebSocket, "v4.base64.channel.k8s.io", true),
        (Transport::WebSocket, "base64.channel.k8s.io", false),
        (Transport::WebSocket, "channel.k8s.io", false),
    ];
    for &(transport, protocol, json) in cases {
        let url = server
            .get_exec(exec(&["sh", "-c", "echo hi; exit 7"], false, false))
            .unwrap();
        let mut opts = options(transport, false, false);
        opts.protocols = Some(vec![protocol.to_string()]);
        let mut cmd = remote_command(&url, &ClientConfig::default(), &opts)
            .await
            .unwrap();
        assert_eq!(cmd.protocol, protocol);
        assert_eq!(
            read_all(cmd.stdout.as_mut().unwrap()).await,
            "hi\n",
            "{protocol}"
        );
        match cmd.status().await {
            Ok(code) if json => assert_eq!(code, 7),
            Err(ClientError::Remote(message)) if !json => {
                assert!(message.contains("non-zero exit code"), "{message}")
            }
            other => panic!("{protocol}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn unknown_spdy_protocol_is_refused() {
    let (server, _) = start(StreamingConfig::default()).await;
    let url = server.get_exec(exec(&["true"], false, false)).unwrap();
    let mut opts = options(Transport::Spdy, false, false);
    opts.protocols = Some(vec!["v9.channel.k8s.io".into()]);
    match remote_command(&url, &ClientConfig::default(), &opts).await {
        Err(ClientError::Http { status: 403, body }) => {
            assert!(body.contains("negotiate"), "{body}")
        }
        other => panic!("{:?}", other.err()),
    }
}

#[tokio::test]
async fn container_not_running_is_a_clear_error() {
    let (server, _) = start(StreamingConfig::default()).await;
    for transport in TRANSPORTS {
        // Caught before the upgrade: an HTTP error.
        let mut req = exec(&["true"], false, false);
        req.container_id = "stopped".into();
        let url = server.get_exec(req).unwrap();
        match remote_command(
            &url,
            &ClientConfig::default(),
            &options(transport, false, false),
        )
        .await
        {
            Err(ClientError::Http { status: 409, body }) => {
                assert_eq!(body, "container stopped is not running")
            }
            other => panic!("{transport:?}: {:?}", other.err()),
        }
        // Found out by the exec itself: on the error stream.
        let mut req = exec(&["true"], false, false);
        req.container_id = "vanishing".into();
        let url = server.get_exec(req).unwrap();
        let cmd = remote_command(
            &url,
            &ClientConfig::default(),
            &options(transport, false, false),
        )
        .await
        .unwrap();
        match cmd.status().await {
            Err(ClientError::Remote(message)) => assert!(
                message.contains(
                    "error executing command in container: container vanishing is not running"
                ),
                "{message}"
            ),
            other => panic!("{transport:?}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn attach_with_several_clients() {
    let (server, _) = start(StreamingConfig::default()).await;
    let attach = || AttachRequest {
        container_id: "c1".into(),
        stdin: true,
        stdout: true,
        ..Default::default()
    };
    let mut clients = Vec::new();
    for transport in [Transport::Spdy, Transport::WebSocket, Transport::Spdy] {
        let url = server.get_attach(attach()).unwrap();
        let mut opts = options(transport, true, false);
        opts.stderr = false;
        clients.push(
            remote_command(&url, &ClientConfig::default(), &opts)
                .await
                .unwrap(),
        );
    }
    // Let every attach subscribe before anyone writes.
    tokio::time::sleep(Duration::from_millis(200)).await;
    clients[0]
        .stdin
        .as_mut()
        .unwrap()
        .write_all(b"ping\n")
        .await
        .unwrap();
    for client in &mut clients {
        let mut line = [0u8; 5];
        let read = client.stdout.as_mut().unwrap().read_exact(&mut line);
        tokio::time::timeout(Duration::from_secs(5), read)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&line, b"ping\n");
    }
    // One client detaches; the others stay attached.
    let mut first = clients.remove(0);
    first
        .stdin
        .as_mut()
        .unwrap()
        .write_all(b"detach\n")
        .await
        .unwrap();
    assert_eq!(first.status().await.unwrap(), 0);
    clients[1]
        .stdin
        .as_mut()
        .unwrap()
        .write_all(b"pong\n")
        .await
        .unwrap();
    for client in &mut clients {
        let mut line = [0u8; 5];
        client
            .stdout
            .as_mut()
            .unwrap()
            .read_exact(&mut line)
            .await
            .unwrap();
        assert_eq!(&line, b"pong\n");
    }
}

#[tokio::test]
async fn spdy_client_that_never_opens_its_streams_times_out() {
    let config = StreamingConfig {
        stream_creation_timeout: Duration::from_millis(300),
        ..StreamingConfig::default()
    };
    let (server, runtime) = start(config).await;
    // The request says stdin; this client opens error, stdout, stderr only.
    let url = server.get_exec(exec(&["true"], true, false)).unwrap();
    let opts = options(Transport::Spdy, false, false);
    let started = std::time::Instant::now();
    let cmd = remote_command(&url, &ClientConfig::default(), &opts)
        .await
        .unwrap();
    match cmd.status().await {
        // The timeout message is plain text, not the Status v4 expects.
        Err(ClientError::Protocol(message)) => assert!(message.contains("bad status"), "{message}"),
        other => panic!("{other:?}"),
    }
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
    common::eventually("session ends", || server.active_sessions() == 0).await;
    assert!(
        runtime.counters.pids.lock().unwrap().is_empty(),
        "nothing ran"
    );
}
