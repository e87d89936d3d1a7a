//! Port-forward through the real server to loopback listeners.

mod common;

use std::time::Duration;

use berth_stream::client::{
    ClientConfig, ClientError, SpdyForwardStream, SpdyPortForward, port_forward_websocket,
};
use berth_stream::{PortForwardRequest, StreamingConfig};
use common::start;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A one-response HTTP server, as a pod's web server would be.
async fn http_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let (mut socket, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.ends_with(b"\r\n\r\n") {
                    let n = socket.read(&mut buf).await.unwrap();
                    if n == 0 {
                        return;
                    }
                    request.extend_from_slice(&buf[..n]);
                }
                let body = "hello from the pod\n";
                let response = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                socket.write_all(response.as_bytes()).await.unwrap();
            });
        }
    });
    port
}

/// Echoes everything back until EOF, then closes.
async fn echo_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let (socket, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let (mut r, mut w) = socket.into_split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    port
}

async fn refused_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap().port()
}

fn request(ports: Vec<u16>) -> PortForwardRequest {
    PortForwardRequest {
        pod_sandbox_id: "pod1".into(),
        ports,
    }
}

async fn fetch(data: &mut (impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin)) -> String {
    data.write_all(b"GET / HTTP/1.1\r\nHost: pod\r\n\r\n")
        .await
        .unwrap();
    let mut response = Vec::new();
    data.read_to_end(&mut response).await.unwrap();
    String::from_utf8(response).unwrap()
}

#[tokio::test]
async fn spdy_http_fetch_refused_port_and_the_session_goes_on() {
    let (server, _) = start(StreamingConfig::default()).await;
    let web = http_server().await;
    let url = server.get_port_forward(request(vec![])).unwrap();
    let session = SpdyPortForward::connect(&url, &ClientConfig::default())
        .await
        .unwrap();

    let SpdyForwardStream {
        mut data,
        mut error,
    } = session.open(web).unwrap();
    let response = tokio::time::timeout(Duration::from_secs(3), fetch(&mut data))
        .await
        .expect("fetch");
    assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
    assert!(response.ends_with("hello from the pod\n"));
    assert_eq!(
        SpdyForwardStream::error_message(&mut error).await.unwrap(),
        ""
    );

    let closed = refused_port().await;
    let SpdyForwardStream { data, mut error } = session.open(closed).unwrap();
    let message = SpdyForwardStream::error_message(&mut error).await.unwrap();
    assert!(
        message.starts_with(&format!(
            "error forwarding port {closed} to pod pod1: failed to connect"
        )),
        "{message}"
    );
    drop(data);

    // Same session, next connection: still fine.
    let SpdyForwardStream { mut data, .. } = session.open(web).unwrap();
    assert!(fetch(&mut data).await.ends_with("hello from the pod\n"));
}

/// One connection as client-go makes it: the request, the pod's answer to
/// its EOF, then the data stream reset and the error stream read to its end.
async fn fetch_like_client_go(session: &SpdyPortForward, port: u16) -> (String, String) {
    let mut stream = session.open(port).unwrap();
    let response = tokio::time::timeout(Duration::from_secs(5), fetch(&mut stream.data))
        .await
        .expect("fetch");
    let message = tokio::time::timeout(Duration::from_secs(5), stream.finish())
        .await
        .expect("the error stream ends")
        .unwrap();
    (response, message)
}

/// client-go resets each data stream (CANCEL) once it read the pod's EOF,
/// and drops the whole session if the error stream then carries anything:
/// the reset is no error, and one session carries connection after
/// connection, one after the other and at once; a refused port is reported
/// and the session goes on. Over SPDY and SPDY tunneled through WebSocket.
#[tokio::test]
async fn client_go_resets_and_the_session_carries_every_connection() {
    let (server, _) = start(StreamingConfig::default()).await;
    let web = http_server().await;
    let closed = refused_port().await;
    for tunneled in [false, true] {
        let url = server.get_port_forward(request(vec![])).unwrap();
        let session = if tunneled {
            SpdyPortForward::connect_over_websocket(&url, &ClientConfig::default()).await
        } else {
            SpdyPortForward::connect(&url, &ClientConfig::default()).await
        }
        .unwrap();
        for round in 0..3 {
            let (response, message) = fetch_like_client_go(&session, web).await;
            assert!(
                response.ends_with("hello from the pod\n"),
                "tunneled {tunneled}, round {round}: {response}"
            );
            assert_eq!(message, "", "tunneled {tunneled}, round {round}");
        }
        let all = futures::future::join_all((0..16).map(|_| fetch_like_client_go(&session, web)));
        for (response, message) in all.await {
            assert!(response.ends_with("hello from the pod\n"), "{response}");
            assert_eq!(message, "", "tunneled {tunneled}, concurrent");
        }
        let (response, message) = fetch_like_client_go(&session, closed).await;
        assert_eq!(response, "");
        assert!(message.contains("failed to connect"), "{message}");
        let (response, message) = fetch_like_client_go(&session, web).await;
        assert!(response.ends_with("hello from the pod\n"), "{response}");
        assert_eq!(message, "");
        session.close();
    }
}

#[tokio::test]
async fn spdy_tunneled_through_websocket() {
    // client-go's SPDY-over-WebSocket dialer (crictl --transport websocket):
    // no ports in the URL, streams name them as over plain SPDY.
    let (server, _) = start(StreamingConfig::default()).await;
    let web = http_server().await;
    let url = server.get_port_forward(request(vec![])).unwrap();
    let session = SpdyPortForward::connect_over_websocket(&url, &ClientConfig::default())
        .await
        .unwrap();
    for _ in 0..3 {
        let SpdyForwardStream { mut data, .. } = session.open(web).unwrap();
        let response = tokio::time::timeout(Duration::from_secs(3), fetch(&mut data))
            .await
            .expect("fetch");
        assert!(response.ends_with("hello from the pod\n"), "{response}");
    }
    let closed = refused_port().await;
    let SpdyForwardStream { mut error, .. } = session.open(closed).unwrap();
    let message = SpdyForwardStream::error_message(&mut error).await.unwrap();
    assert!(message.contains("failed to connect"), "{message}");
    session.close();
    tokio::time::timeout(Duration::from_secs(10), async {
        while server.active_sessions() > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("tunnel session ends with its client");
}

#[tokio::test]
async fn spdy_many_concurrent_connections() {
    let (server, _) = start(StreamingConfig::default()).await;
    let echo = echo_server().await;
    let url = server.get_port_forward(request(vec![])).unwrap();
    let session = std::sync::Arc::new(
        SpdyPortForward::connect(&url, &ClientConfig::default())
            .await
            .unwrap(),
    );
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..64u32 {
        let session = session.clone();
        tasks.spawn(async move {
            let stream = session.open(echo).unwrap();
            let (mut reader, mut writer) = stream.data.into_split();
            let payload: Vec<u8> = (0..100_000u32).map(|j| (i + j) as u8).collect();
            let expected = payload.clone();
            let write = async move {
                writer.write_all(&payload).await.unwrap();
                writer.shutdown().await.unwrap();
            };
            let read = async move {
                let mut back = Vec::new();
                reader.read_to_end(&mut back).await.unwrap();
                back
            };
            let ((), back) = tokio::join!(write, read);
            assert!(back == expected, "connection {i} got {} bytes", back.len());
        });
    }
    let all = async {
        while let Some(done) = tasks.join_next().await {
            done.unwrap()
        }
    };
    tokio::time::timeout(Duration::from_secs(60), all)
        .await
        .unwrap();
}

#[tokio::test]
async fn websocket_http_fetch_and_refused_port() {
    let (server, _) = start(StreamingConfig::default()).await;
    let web = http_server().await;
    let closed = refused_port().await;
    let url = server.get_port_forward(request(vec![web, closed])).unwrap();
    let mut forward = port_forward_websocket(&url, &ClientConfig::default(), &[web, closed])
        .await
        .unwrap();
    let (mut refused_data, mut refused_error) = forward.ports.pop().unwrap();
    let (mut data, _error) = forward.ports.pop().unwrap();
    // The refused port's error channel says why.
    let mut message = vec![0u8; 256];
    let n = tokio::time::timeout(Duration::from_secs(5), refused_error.read(&mut message))
        .await
        .unwrap()
        .unwrap();
    let message = String::from_utf8_lossy(&message[..n]).into_owned();
    assert!(
        message.contains(&format!("error forwarding port {closed}")),
        "{message}"
    );
    drop(refused_data.shutdown().await);
    // The other port works (the pod closes after answering; WebSocket has
    // no half-close, so read up to the body).
    data.write_all(b"GET / HTTP/1.1\r\nHost: pod\r\n\r\n")
        .await
        .unwrap();
    let mut response = Vec::new();
    let mut buf = [0u8; 1024];
    while !response.ends_with(b"hello from the pod\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), data.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_ne!(n, 0, "{}", String::from_utf8_lossy(&response));
        response.extend_from_slice(&buf[..n]);
    }
    assert!(response.starts_with(b"HTTP/1.1 200 OK"));
}

#[tokio::test]
async fn missing_sandbox_is_an_http_error() {
    let (server, _) = start(StreamingConfig::default()).await;
    let url = server
        .get_port_forward(PortForwardRequest {
            pod_sandbox_id: "missing".into(),
            ports: vec![80],
        })
        .unwrap();
    match SpdyPortForward::connect(&url, &ClientConfig::default()).await {
        Err(ClientError::Http { status: 404, body }) => {
            assert_eq!(body, "pod sandbox missing not found")
        }
        other => panic!("{:?}", other.err()),
    }
}
