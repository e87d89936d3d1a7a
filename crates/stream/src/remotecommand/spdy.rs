//! Remote command over SPDY: wait for the streams the request asked for
//! (told apart by their `streamType` header) within the creation timeout,
//! run the command, report its outcome on the error stream.

use std::sync::Arc;
use std::time::Duration;

use berth_spdy::{Connection, Headers, IncomingStream, RstStatus, Stream, StreamWriter};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;

use super::protocol::Version;
use super::{Command, Streams, run_command};
use crate::request::StreamFlags;
use crate::runtime::Disconnected;
use crate::server::Shared;
use crate::spdy_upgrade::connection_config;

/// How long we wait for the client to take our GOAWAY and hang up.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

#[derive(Default)]
struct Received {
    error: Option<Stream>,
    stdin: Option<Stream>,
    stdout: Option<Stream>,
    stderr: Option<Stream>,
    resize: Option<Stream>,
}

impl Received {
    fn complete(&self, flags: StreamFlags, version: Version) -> bool {
        self.error.is_some()
            && (!flags.stdin || self.stdin.is_some())
            && (!flags.stdout || self.stdout.is_some())
            && (!flags.stderr || self.stderr.is_some())
            && (!(flags.tty && version.supports_resize()) || self.resize.is_some())
    }

    /// Where a stream of this type goes, if the session wants one.
    fn slot(
        &mut self,
        stream_type: &str,
        flags: StreamFlags,
        version: Version,
    ) -> Option<&mut Option<Stream>> {
        let (slot, wanted) = match stream_type {
            "error" => (&mut self.error, true),
            "stdin" => (&mut self.stdin, flags.stdin),
            "stdout" => (&mut self.stdout, flags.stdout),
            "stderr" => (&mut self.stderr, flags.stderr),
            "resize" => (&mut self.resize, flags.tty && version.supports_resize()),
            _ => return None,
        };
        (wanted && slot.is_none()).then_some(slot)
    }
}

pub(crate) async fn run(
    shared: Arc<Shared>,
    upgraded: Upgraded,
    version: Version,
    command: Command,
) {
    let conn = Arc::new(Connection::server(
        TokioIo::new(upgraded),
        connection_config(&shared.config),
    ));
    let flags = command.flags();
    let deadline = Instant::now() + shared.config.stream_creation_timeout;
    let Some(mut received) = wait_for_streams(&conn, flags, version, deadline).await else {
        conn.close();
        return;
    };

    // The session has its streams; clients open no more. What reads their
    // header blocks is the largest part of an idle session's memory: it
    // goes (a stream opened now ends the connection with a protocol error).
    conn.release_header_decompressor();

    // From here on the connection's end is the client's end.
    let (trigger, disconnected) = Disconnected::new();
    let watcher = {
        let conn = conn.clone();
        tokio::spawn(async move {
            // Streams opened now are not part of the session: refuse them.
            while let Some(extra) = conn.accept().await {
                drop(extra);
            }
            trigger.fire();
        })
    };

    // Halves the session does not use stay open until it ends: a FIN on
    // the client's stdin stream from us could end its writes early.
    let mut keep = Vec::new();
    let mut error = received
        .error
        .take()
        .map(Stream::into_split)
        .map(|(reader, writer)| {
            keep.push(Half::Reader(reader));
            writer
        });
    if version == Version::V1 {
        // v1 kubelets reset the error stream once all streams arrived
        // (kept for compatibility in the kubelet): no status is sent.
        if let Some(writer) = error.take() {
            writer.reset(RstStatus::CANCEL);
        }
    }
    let stdin = received.stdin.take().map(|stream| {
        let (reader, writer) = stream.into_split();
        keep.push(Half::Writer(writer));
        Box::new(reader) as _
    });
    let mut output = |stream: Option<Stream>| {
        stream.map(|stream| {
            let (reader, writer) = stream.into_split();
            keep.push(Half::Reader(reader));
            Box::new(writer) as _
        })
    };
    let stdout = output(received.stdout.take());
    let stderr = output(received.stderr.take());
    let resize = received.resize.take().map(|stream| {
        let (reader, writer) = stream.into_split();
        keep.push(Half::Writer(writer));
        Box::new(reader) as _
    });
    let streams = Streams {
        stdin,
        stdout,
        stderr,
        resize,
    };

    let outcome = run_command(&shared, command, streams, disconnected).await;
    if let (Some(outcome), Some(mut writer)) = (outcome, error)
        && !conn.is_closed()
    {
        let report = async {
            if let Some(bytes) = outcome.encode(version) {
                writer.write_all(&bytes).await?;
            }
            writer.shutdown().await
        };
        if let Ok(Err(err)) = tokio::time::timeout(CLOSE_WAIT, report).await {
            tracing::debug!("writing the exec status: {err}");
        }
    }
    drop(keep);
    conn.close();
    let _ = tokio::time::timeout(CLOSE_WAIT, conn.closed()).await;
    watcher.abort();
}

enum Half {
    Reader(#[allow(dead_code)] berth_spdy::StreamReader),
    Writer(#[allow(dead_code)] StreamWriter),
}

/// Accepts the client's streams until the session has all it asked for.
/// `None`: the client hung up or took too long.
async fn wait_for_streams(
    conn: &Connection,
    flags: StreamFlags,
    version: Version,
    deadline: Instant,
) -> Option<Received> {
    let mut received = Received::default();
    while !received.complete(flags, version) {
        let incoming = tokio::select! {
            incoming = conn.accept() => incoming?,
            _ = tokio::time::sleep_until(deadline) => {
                tracing::debug!("timed out waiting for client to create streams");
                if let Some(mut error) = received.error.take() {
                    let report = error.write_all(b"timed out waiting for client to create streams");
                    let _ = tokio::time::timeout(CLOSE_WAIT, report).await;
                    let _ = tokio::time::timeout(CLOSE_WAIT, error.shutdown()).await;
                }
                return None;
            }
        };
        accept_one(incoming, &mut received, flags, version);
    }
    Some(received)
}

fn accept_one(
    incoming: IncomingStream,
    received: &mut Received,
    flags: StreamFlags,
    version: Version,
) {
    let stream_type = incoming
        .headers()
        .get("streamtype")
        .unwrap_or_default()
        .to_ascii_lowercase();
    match received.slot(&stream_type, flags, version) {
        Some(slot) => match incoming.reply(Headers::new()) {
            Ok(stream) => *slot = Some(stream),
            Err(err) => tracing::debug!("replying to a {stream_type} stream: {err}"),
        },
        None => {
            // Unknown, unasked-for or duplicate: accepted (as spdystream
            // servers do) and ignored; what it carries is dropped.
            tracing::debug!("ignoring unexpected stream type {stream_type:?}");
            let _ = incoming.reply(Headers::new());
        }
    }
}
