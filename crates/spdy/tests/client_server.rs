//! Our client against our server over an in-memory pipe: many streams at
//! once moving megabytes each way, half-close, resets, ping, close.

use std::time::Duration;

use berth_spdy::{Config, Connection, Error, Headers, RstStatus};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::timeout;

fn pair(config: Config) -> (Connection, Connection) {
    // A small pipe, so the peers really wait on each other.
    let (a, b) = tokio::io::duplex(32 * 1024);
    (
        Connection::client(a, config.clone()),
        Connection::server(b, config),
    )
}

/// Replies to every stream and echoes what it reads, reversed in case
/// (so the test sees the server really handled it), until the client's FIN.
async fn echo_server(server: Connection) {
    while let Some(incoming) = server.accept().await {
        let name = incoming.headers().get("name").unwrap_or("").to_owned();
        let reply: Headers = [("echo", name)].into_iter().collect();
        let stream = incoming.reply(reply).unwrap();
        tokio::spawn(async move {
            let (mut reader, mut writer) = stream.into_split();
            let mut buf = vec![0; 16 * 1024];
            loop {
                let n = reader.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                buf[..n].iter_mut().for_each(|b| *b = !*b);
                writer.write_all(&buf[..n]).await.unwrap();
            }
            writer.shutdown().await.unwrap();
        });
    }
}

fn pattern(seed: u32, len: usize) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) ^ seed) as u8)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_streams_move_megabytes_with_half_close() {
    let (client, server) = pair(Config::default());
    tokio::spawn(echo_server(server));
    let mut tasks = Vec::new();
    for n in 0..6u32 {
        let headers: Headers = [("name", format!("s{n}"))].into_iter().collect();
        let stream = client.open_stream(headers).unwrap();
        tasks.push(tokio::spawn(async move {
            let reply = stream.reply_headers().await.unwrap();
            assert_eq!(reply.get("echo"), Some(format!("s{n}").as_str()));
            let sent = pattern(n, 3 * 1024 * 1024 + n as usize * 1000);
            let (mut reader, mut writer) = stream.into_split();
            let to_send = sent.clone();
            let send = tokio::spawn(async move {
                for piece in to_send.chunks(100_000) {
                    writer.write_all(piece).await.unwrap();
                }
                // Half-close: we are done writing, the echo keeps coming.
                writer.shutdown().await.unwrap();
            });
            let mut echoed = Vec::new();
            reader.read_to_end(&mut echoed).await.unwrap();
            send.await.unwrap();
            let expected: Vec<u8> = sent.iter().map(|b| !b).collect();
            assert_eq!(echoed.len(), expected.len());
            assert!(echoed == expected, "stream {n} corrupted");
        }));
    }
    for task in tasks {
        timeout(Duration::from_secs(60), task)
            .await
            .expect("streams finish")
            .unwrap();
    }
    client.ping().await.unwrap();
}

#[tokio::test]
async fn half_close_from_the_server_first() {
    let (client, server) = pair(Config::default());
    let serve = tokio::spawn(async move {
        let mut stream = server
            .accept()
            .await
            .unwrap()
            .reply(Headers::new())
            .unwrap();
        stream.write_all(b"status").await.unwrap();
        stream.shutdown().await.unwrap();
        // Still readable after our FIN.
        let mut got = Vec::new();
        stream.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"input");
        server
    });
    let mut stream = client.open_stream(Headers::new()).unwrap();
    let mut status = [0; 6];
    stream.read_exact(&mut status).await.unwrap();
    assert_eq!(&status, b"status");
    assert_eq!(stream.read(&mut [0; 8]).await.unwrap(), 0, "EOF after FIN");
    stream.write_all(b"input").await.unwrap();
    stream.shutdown().await.unwrap();
    let _server = serve.await.unwrap();
    assert!(
        stream.write_all(b"more").await.is_err(),
        "no writes after shutdown"
    );
}

#[tokio::test]
async fn reset_reaches_the_other_side() {
    let (client, server) = pair(Config::default());
    let stream = client.open_stream(Headers::new()).unwrap();
    let mut accepted = server
        .accept()
        .await
        .unwrap()
        .reply(Headers::new())
        .unwrap();
    stream.reply_headers().await.unwrap();
    stream.reset(RstStatus::CANCEL);
    let err = accepted.read(&mut [0; 8]).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset);
    assert!(err.to_string().contains("CANCEL"), "{err}");
    assert!(accepted.write_all(b"x").await.is_err());
}

#[tokio::test]
async fn refused_stream_fails_reply_headers() {
    let (client, server) = pair(Config::default());
    let stream = client.open_stream(Headers::new()).unwrap();
    server
        .accept()
        .await
        .unwrap()
        .reset(RstStatus::REFUSED_STREAM);
    assert_eq!(
        stream.reply_headers().await,
        Err(Error::StreamReset {
            id: 1,
            status: RstStatus::REFUSED_STREAM
        })
    );
}

#[tokio::test]
async fn close_ends_every_stream() {
    let (client, server) = pair(Config::default());
    let mut finished = client.open_stream(Headers::new()).unwrap();
    let mut unfinished = client.open_stream(Headers::new()).unwrap();
    let mut first = server
        .accept()
        .await
        .unwrap()
        .reply(Headers::new())
        .unwrap();
    let _second = server
        .accept()
        .await
        .unwrap()
        .reply(Headers::new())
        .unwrap();
    first.write_all(b"done").await.unwrap();
    first.shutdown().await.unwrap();
    let mut got = [0; 4];
    finished.read_exact(&mut got).await.unwrap();

    server.close();
    assert_eq!(
        timeout(Duration::from_secs(2), client.closed())
            .await
            .unwrap(),
        Error::Closed
    );
    assert!(server.accept().await.is_none());
    assert_eq!(finished.read(&mut [0; 4]).await.unwrap(), 0);
    let err = unfinished.read(&mut [0; 4]).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionAborted);
    assert!(client.open_stream(Headers::new()).is_err());
    assert!(client.ping().await.is_err());
}

#[tokio::test]
async fn dropping_every_handle_closes_the_connection() {
    let (client, server) = pair(Config::default());
    let stream = client.open_stream(Headers::new()).unwrap();
    drop(client);
    // The stream keeps the connection alive.
    let incoming = server.accept().await.unwrap();
    drop(stream);
    drop(incoming);
    assert_eq!(
        timeout(Duration::from_secs(2), server.closed())
            .await
            .unwrap(),
        Error::Closed
    );
}

#[tokio::test]
async fn go_away_stops_new_streams_only() {
    let (client, server) = pair(Config::default());
    let mut before = client.open_stream(Headers::new()).unwrap();
    let mut accepted = server
        .accept()
        .await
        .unwrap()
        .reply(Headers::new())
        .unwrap();
    before.reply_headers().await.unwrap();
    server.go_away();
    // Once the GOAWAY is in, the client opens nothing new.
    timeout(Duration::from_secs(2), async {
        loop {
            match client.open_stream(Headers::new()) {
                Err(Error::GoneAway { .. }) => break,
                Ok(stream) => {
                    let _ = stream.reply_headers().await;
                }
                Err(other) => panic!("{other:?}"),
            }
            tokio::task::yield_now().await;
        }
    })
    .await
    .unwrap();
    accepted.write_all(b"still here").await.unwrap();
    accepted.shutdown().await.unwrap();
    let mut got = String::new();
    before.read_to_string(&mut got).await.unwrap();
    assert_eq!(got, "still here");
}

/// A server that released its header decompressor keeps moving data on the
/// streams it has; a stream the client opens after that ends the
/// connection with a protocol error, instead of being misread.
#[tokio::test]
async fn released_header_decompressor() {
    let (client, server) = pair(Config::default());
    let headers: Headers = [("name", "first".to_string())].into_iter().collect();
    let mut stream = client.open_stream(headers).unwrap();
    let incoming = timeout(Duration::from_secs(5), server.accept())
        .await
        .unwrap()
        .unwrap();
    let mut served = incoming.reply(Headers::new()).unwrap();
    server.release_header_decompressor();
    stream.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    served.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"ping");
    served.write_all(b"pong").await.unwrap();
    stream.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"pong");

    let late: Headers = [("name", "late".to_string())].into_iter().collect();
    let _late = client.open_stream(late).unwrap();
    let reason = timeout(Duration::from_secs(5), server.closed())
        .await
        .expect("the server closes");
    assert!(
        reason.to_string().contains("stopped taking new streams"),
        "{reason}"
    );
    assert!(server.accept().await.is_none());
}
