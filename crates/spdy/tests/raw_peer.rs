//! A server `Connection` against a hand-driven peer that writes and reads
//! raw frames: flow control, backpressure and bad input, checked on the
//! wire.

use std::time::Duration;

use berth_spdy::frame::{
    ControlFrame, FLAG_FIN, FRAME_HEAD_LEN, FrameHead, SETTINGS_INITIAL_WINDOW_SIZE, Setting,
    SynStream, decode_control, encode_control, encode_data_head,
};
use berth_spdy::header_block::{HeaderCompressor, HeaderDecompressor};
use berth_spdy::{Config, Connection, Error, GoAwayStatus, Headers, PeerFlowControl, RstStatus};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::time::timeout;

#[derive(Debug, PartialEq)]
enum Frame {
    Control(ControlFrame),
    Data {
        id: u32,
        flags: u8,
        payload: Vec<u8>,
    },
}

struct RawPeer {
    io: DuplexStream,
    deflate: HeaderCompressor,
    inflate: HeaderDecompressor,
}

impl RawPeer {
    fn new(io: DuplexStream) -> Self {
        Self {
            io,
            deflate: HeaderCompressor::new(),
            inflate: HeaderDecompressor::new(1 << 20),
        }
    }

    async fn send(&mut self, frame: ControlFrame) {
        let mut bytes = Vec::new();
        encode_control(&frame, &mut self.deflate, &mut bytes).unwrap();
        self.io.write_all(&bytes).await.unwrap();
    }

    async fn send_data(&mut self, id: u32, flags: u8, payload: &[u8]) {
        let mut bytes = Vec::new();
        encode_data_head(id, flags, payload.len(), &mut bytes);
        bytes.extend_from_slice(payload);
        self.io.write_all(&bytes).await.unwrap();
    }

    async fn open(&mut self, id: u32, flags: u8) {
        let headers: Headers = [("streamtype", "stdin")].into_iter().collect();
        self.send(ControlFrame::SynStream(SynStream {
            stream_id: id,
            associated_to: 0,
            priority: 0,
            slot: 0,
            flags,
            headers,
        }))
        .await;
    }

    /// The next frame, or `None` at EOF.
    async fn recv(&mut self) -> Option<Frame> {
        let mut head = [0u8; FRAME_HEAD_LEN];
        if self.io.read_exact(&mut head).await.is_err() {
            return None;
        }
        let head = FrameHead::parse(head);
        let mut payload = vec![0; head.len()];
        self.io.read_exact(&mut payload).await.unwrap();
        Some(match head {
            FrameHead::Control {
                version,
                kind,
                flags,
                ..
            } => Frame::Control(
                decode_control(version, kind, flags, &payload, &mut self.inflate)
                    .unwrap()
                    .expect("a known frame type"),
            ),
            FrameHead::Data {
                stream_id, flags, ..
            } => Frame::Data {
                id: stream_id,
                flags,
                payload,
            },
        })
    }

    /// Skips what every connection sends first (SETTINGS, session window).
    async fn skip_preamble(&mut self) {
        for _ in 0..2 {
            let frame = self.recv().await.unwrap();
            assert!(
                matches!(
                    frame,
                    Frame::Control(
                        ControlFrame::Settings { .. }
                            | ControlFrame::WindowUpdate { stream_id: 0, .. }
                    )
                ),
                "{frame:?}"
            );
        }
    }

    async fn recv_within(&mut self, wait: Duration) -> Option<Frame> {
        timeout(wait, self.recv()).await.ok().flatten()
    }
}

fn server_with_peer(config: Config) -> (Connection, RawPeer) {
    let (ours, theirs) = tokio::io::duplex(64 * 1024);
    (Connection::server(ours, config), RawPeer::new(theirs))
}

#[tokio::test]
async fn preamble_announces_our_windows() {
    let config = Config {
        stream_window: 300_000,
        session_window: 2_000_000,
        ..Config::default()
    };
    let (_server, mut peer) = server_with_peer(config);
    assert_eq!(
        peer.recv().await,
        Some(Frame::Control(ControlFrame::Settings {
            clear: false,
            entries: vec![Setting {
                flags: 0,
                id: SETTINGS_INITIAL_WINDOW_SIZE,
                value: 300_000
            }],
        }))
    );
    assert_eq!(
        peer.recv().await,
        Some(Frame::Control(ControlFrame::WindowUpdate {
            stream_id: 0,
            delta: 2_000_000 - 65_536
        }))
    );
}

#[tokio::test]
async fn accept_reply_data_and_fin() {
    let (server, mut peer) = server_with_peer(Config::default());
    peer.skip_preamble().await;
    peer.open(1, 0).await;
    // Data before our reply is kept (spdystream clients write at once).
    peer.send_data(1, FLAG_FIN, b"hello").await;
    let incoming = server.accept().await.unwrap();
    assert_eq!(incoming.id(), 1);
    assert_eq!(incoming.headers().get("streamType"), Some("stdin"));
    let mut stream = incoming.reply([("x", "y")].into_iter().collect()).unwrap();
    let mut got = String::new();
    stream.read_to_string(&mut got).await.unwrap();
    assert_eq!(got, "hello");
    stream.write_all(b"bye").await.unwrap();
    stream.shutdown().await.unwrap();
    assert_eq!(
        peer.recv().await,
        Some(Frame::Control(ControlFrame::SynReply {
            stream_id: 1,
            fin: false,
            headers: [("x", "y")].into_iter().collect()
        }))
    );
    let mut sent = Vec::new();
    loop {
        match peer.recv().await.unwrap() {
            Frame::Data {
                id: 1,
                flags,
                payload,
            } => {
                sent.extend_from_slice(&payload);
                if flags & FLAG_FIN != 0 {
                    break;
                }
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(sent, b"bye");
}

#[tokio::test]
async fn writer_waits_for_window_updates() {
    let (server, mut peer) = server_with_peer(Config::default());
    peer.skip_preamble().await;
    // A flow-controlled peer: 1000-byte stream windows.
    peer.send(ControlFrame::Settings {
        clear: false,
        entries: vec![Setting {
            flags: 0,
            id: SETTINGS_INITIAL_WINDOW_SIZE,
            value: 1000,
        }],
    })
    .await;
    peer.open(1, FLAG_FIN).await;
    let stream = server
        .accept()
        .await
        .unwrap()
        .reply(Headers::new())
        .unwrap();
    let (_reader, mut writer) = stream.into_split();
    let payload: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
    let expected = payload.clone();
    let write = tokio::spawn(async move {
        writer.write_all(&payload).await.unwrap();
        writer.shutdown().await.unwrap();
    });
    assert!(matches!(
        peer.recv().await,
        Some(Frame::Control(ControlFrame::SynReply { stream_id: 1, .. }))
    ));
    let mut received = Vec::new();
    let take = |frame: Option<Frame>, received: &mut Vec<u8>| match frame {
        Some(Frame::Data { id: 1, payload, .. }) => received.extend_from_slice(&payload),
        other => panic!("{other:?}"),
    };
    while received.len() < 1000 {
        take(peer.recv().await, &mut received);
    }
    assert_eq!(received.len(), 1000, "no more than the window");
    assert_eq!(peer.recv_within(Duration::from_millis(200)).await, None);
    assert!(!write.is_finished(), "200 KB can't fit the send buffer");

    peer.send(ControlFrame::WindowUpdate {
        stream_id: 1,
        delta: 4000,
    })
    .await;
    while received.len() < 5000 {
        take(peer.recv().await, &mut received);
    }
    assert_eq!(peer.recv_within(Duration::from_millis(100)).await, None);

    // The session window (64 KiB by default) binds too.
    peer.send(ControlFrame::WindowUpdate {
        stream_id: 1,
        delta: 1_000_000,
    })
    .await;
    while received.len() < 65_536 {
        take(peer.recv().await, &mut received);
    }
    assert_eq!(peer.recv_within(Duration::from_millis(100)).await, None);
    peer.send(ControlFrame::WindowUpdate {
        stream_id: 0,
        delta: 1_000_000,
    })
    .await;
    loop {
        match peer.recv().await {
            Some(Frame::Data {
                id: 1,
                flags,
                payload,
            }) => {
                received.extend_from_slice(&payload);
                if flags & FLAG_FIN != 0 {
                    break;
                }
            }
            other => panic!("{other:?}"),
        }
    }
    write.await.unwrap();
    assert_eq!(received, expected);
}

#[tokio::test]
async fn peer_without_flow_control_is_not_held_to_windows() {
    // spdystream never sends WINDOW_UPDATE or SETTINGS: Auto must not stall.
    let (server, mut peer) = server_with_peer(Config::default());
    peer.skip_preamble().await;
    peer.open(1, FLAG_FIN).await;
    let mut stream = server
        .accept()
        .await
        .unwrap()
        .reply(Headers::new())
        .unwrap();
    let write = tokio::spawn(async move {
        stream.write_all(&vec![7u8; 500_000]).await.unwrap();
        stream.shutdown().await.unwrap();
    });
    let mut total = 0;
    loop {
        match peer.recv().await.unwrap() {
            Frame::Control(ControlFrame::SynReply { .. }) => {}
            Frame::Data { payload, flags, .. } => {
                total += payload.len();
                if flags & FLAG_FIN != 0 {
                    break;
                }
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(total, 500_000);
    write.await.unwrap();
}

#[tokio::test]
async fn a_stream_nobody_reads_stops_the_socket_reads() {
    let config = Config {
        stream_window: 64 * 1024,
        peer_flow_control: PeerFlowControl::Never,
        ..Config::default()
    };
    let (server, mut peer) = server_with_peer(config);
    peer.open(1, 0).await;
    let incoming = server.accept().await.unwrap();
    let mut stream = incoming.reply(Headers::new()).unwrap();
    // Like spdystream: one 4 MiB DATA frame, windows ignored.
    let big = vec![1u8; 4 << 20];
    let (mut peer_read, mut peer_write) = tokio::io::split(peer.io);
    let drain = tokio::spawn(async move {
        let mut sink = Vec::new();
        let _ = peer_read.read_to_end(&mut sink).await;
    });
    let send = tokio::spawn(async move {
        let mut head = Vec::new();
        encode_data_head(1, FLAG_FIN, big.len(), &mut head);
        peer_write.write_all(&head).await.unwrap();
        peer_write.write_all(&big).await.unwrap();
        peer_write
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !send.is_finished(),
        "the server must not swallow 4 MiB nobody reads"
    );
    let mut got = Vec::new();
    stream.read_to_end(&mut got).await.unwrap();
    assert_eq!(got.len(), 4 << 20);
    let _peer_write = send.await.unwrap();
    drop(stream);
    drop(server);
    drain.await.unwrap();
}

#[tokio::test]
async fn data_on_an_unknown_stream_is_reset() {
    let (_server, mut peer) = server_with_peer(Config::default());
    peer.skip_preamble().await;
    peer.send_data(5, 0, b"stray").await;
    assert_eq!(
        peer.recv().await,
        Some(Frame::Control(ControlFrame::RstStream {
            stream_id: 5,
            status: RstStatus::INVALID_STREAM
        }))
    );
}

#[tokio::test]
async fn data_after_fin_is_reset() {
    let (server, mut peer) = server_with_peer(Config::default());
    peer.skip_preamble().await;
    peer.open(1, FLAG_FIN).await;
    let _stream = server.accept().await.unwrap().reply(Headers::new());
    peer.send_data(1, 0, b"late").await;
    let mut saw_reset = false;
    while let Some(frame) = peer.recv_within(Duration::from_secs(2)).await {
        if frame
            == Frame::Control(ControlFrame::RstStream {
                stream_id: 1,
                status: RstStatus::STREAM_ALREADY_CLOSED,
            })
        {
            saw_reset = true;
            break;
        }
    }
    assert!(saw_reset);
}

#[tokio::test]
async fn pings_are_echoed_and_unknown_frames_ignored() {
    let (_server, mut peer) = server_with_peer(Config::default());
    peer.skip_preamble().await;
    // A control frame of type 0x42: skipped.
    peer.io
        .write_all(&[0x80, 3, 0, 0x42, 0, 0, 0, 2, 9, 9])
        .await
        .unwrap();
    peer.send(ControlFrame::Ping { id: 1 }).await;
    assert_eq!(
        peer.recv().await,
        Some(Frame::Control(ControlFrame::Ping { id: 1 }))
    );
}

#[tokio::test]
async fn server_pings_the_peer() {
    let (server, mut peer) = server_with_peer(Config::default());
    peer.skip_preamble().await;
    let ping = tokio::spawn(async move {
        let rtt = server.ping().await;
        (server, rtt)
    });
    let Some(Frame::Control(ControlFrame::Ping { id })) = peer.recv().await else {
        panic!("no ping");
    };
    assert_eq!(id % 2, 0, "server pings are even");
    peer.send(ControlFrame::Ping { id }).await;
    let (_server, rtt) = ping.await.unwrap();
    assert!(rtt.is_ok());
}

async fn expect_goaway(peer: &mut RawPeer, server: &Connection) {
    let mut saw_goaway = false;
    while let Some(frame) = peer.recv_within(Duration::from_secs(2)).await {
        if let Frame::Control(ControlFrame::GoAway { status, .. }) = frame {
            assert_eq!(status, GoAwayStatus::PROTOCOL_ERROR);
            saw_goaway = true;
        }
    }
    assert!(saw_goaway, "no GOAWAY");
    let reason = timeout(Duration::from_secs(2), server.closed())
        .await
        .unwrap();
    assert!(!matches!(reason, Error::Closed), "{reason:?}");
}

#[tokio::test]
async fn oversized_control_frame_ends_the_connection() {
    let (server, mut peer) = server_with_peer(Config::default());
    peer.skip_preamble().await;
    // Claims 16 MiB - 1; must be refused, not allocated.
    peer.io
        .write_all(&[0x80, 3, 0, 1, 0, 0xff, 0xff, 0xff])
        .await
        .unwrap();
    expect_goaway(&mut peer, &server).await;
    assert!(matches!(
        server.closed().await,
        Error::FrameTooLarge { len: 0xff_ffff, .. }
    ));
}

#[tokio::test]
async fn zlib_bomb_ends_the_connection() {
    let (server, mut peer) = server_with_peer(Config::default());
    peer.skip_preamble().await;
    let headers: Headers = [("x", "a".repeat(4 << 20))].into_iter().collect();
    peer.send(ControlFrame::SynStream(SynStream {
        stream_id: 1,
        associated_to: 0,
        priority: 0,
        slot: 0,
        flags: 0,
        headers,
    }))
    .await;
    expect_goaway(&mut peer, &server).await;
    assert!(matches!(
        server.closed().await,
        Error::HeaderBlockTooLarge { .. }
    ));
}

#[tokio::test]
async fn bad_stream_ids_end_the_connection() {
    for (first, second) in [(2, 0), (3, 1), (1, 1)] {
        let (server, mut peer) = server_with_peer(Config::default());
        peer.skip_preamble().await;
        peer.open(first, 0).await;
        if second != 0 {
            peer.open(second, 0).await;
        }
        expect_goaway(&mut peer, &server).await;
    }
}

#[tokio::test]
async fn truncated_frame_closes_with_an_error() {
    let (server, mut peer) = server_with_peer(Config::default());
    peer.skip_preamble().await;
    peer.io.write_all(&[0x80, 3, 0, 6, 0, 0]).await.unwrap();
    drop(peer);
    let reason = timeout(Duration::from_secs(2), server.closed())
        .await
        .unwrap();
    assert!(matches!(reason, Error::Io { .. }), "{reason:?}");
    assert!(server.accept().await.is_none());
}

#[tokio::test]
async fn refused_when_dropped_unanswered() {
    let (server, mut peer) = server_with_peer(Config::default());
    peer.skip_preamble().await;
    peer.open(1, 0).await;
    drop(server.accept().await.unwrap());
    assert_eq!(
        peer.recv().await,
        Some(Frame::Control(ControlFrame::RstStream {
            stream_id: 1,
            status: RstStatus::REFUSED_STREAM
        }))
    );
}

#[tokio::test]
async fn backlog_past_its_limit_is_refused() {
    let config = Config {
        accept_backlog: 2,
        ..Config::default()
    };
    let (_server, mut peer) = server_with_peer(config);
    peer.skip_preamble().await;
    for id in [1, 3, 5] {
        peer.open(id, 0).await;
    }
    assert_eq!(
        peer.recv().await,
        Some(Frame::Control(ControlFrame::RstStream {
            stream_id: 5,
            status: RstStatus::REFUSED_STREAM
        }))
    );
}

#[tokio::test]
async fn idle_connections_are_closed() {
    let config = Config {
        idle_timeout: Some(Duration::from_millis(200)),
        ..Config::default()
    };
    let (server, mut peer) = server_with_peer(config);
    peer.skip_preamble().await;
    let reason = timeout(Duration::from_secs(3), server.closed())
        .await
        .unwrap();
    assert_eq!(reason, Error::IdleTimeout);
    assert!(matches!(
        peer.recv().await,
        Some(Frame::Control(ControlFrame::GoAway {
            status: GoAwayStatus::OK,
            ..
        }))
    ));
    assert_eq!(peer.recv().await, None);
}

#[tokio::test]
async fn data_before_the_peers_reset_stays_readable() {
    // Go servers (kubelet's, containerd's) write an exec's status, then
    // reset every stream as they close the session; spdystream clients
    // still read what came first, and so must we.
    let (server, mut peer) = server_with_peer(Config::default());
    peer.skip_preamble().await;
    peer.open(1, 0).await;
    let incoming = server.accept().await.unwrap();
    let (mut reader, _writer) = incoming.reply(Headers::new()).unwrap().into_split();
    peer.send_data(1, 0, b"status").await;
    peer.send(ControlFrame::RstStream {
        stream_id: 1,
        status: RstStatus::CANCEL,
    })
    .await;
    // Both frames are in before the first read.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut buf = [0u8; 16];
    let n = timeout(Duration::from_secs(5), reader.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf[..n], b"status");
    // Then the reset, not a clean EOF: the stream did not end normally.
    let err = timeout(Duration::from_secs(5), reader.read(&mut buf))
        .await
        .unwrap()
        .unwrap_err();
    assert!(err.to_string().contains("reset"), "{err}");
}
