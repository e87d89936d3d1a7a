//! Remote command over WebSocket: channels 0 stdin, 1 stdout, 2 stderr,
//! 3 error, 4 resize; v5 adds the close signal (stdin EOF); the `v4.`
//! protocols and v5 report the outcome as a JSON Status, the older ones as
//! text (failures only).

use std::sync::Arc;
use std::time::Duration;

use hyper::upgrade::Upgraded;

use super::protocol::Version;
use super::{Command, Streams, run_command};
use crate::runtime::Disconnected;
use crate::server::Shared;
use crate::websocket::{self as ws, Codec, Framing, Setup};

/// Ours, in preference order (wsstream picks by the client's order).
pub(crate) const PROTOCOLS: &[&str] = &[
    "v5.channel.k8s.io",
    "v4.channel.k8s.io",
    "v4.base64.channel.k8s.io",
    "channel.k8s.io",
    "base64.channel.k8s.io",
];

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const ERROR: u8 = 3;
const RESIZE: u8 = 4;

/// How long the last messages and the Close frame may take to go out.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

pub(crate) fn framing(protocol: &str) -> (Framing, Version) {
    let binary = |close_signal| Framing {
        codec: Codec::Binary,
        close_signal,
    };
    let base64 = Framing {
        codec: Codec::Base64,
        close_signal: false,
    };
    match protocol {
        "v5.channel.k8s.io" => (binary(true), Version::V5),
        "v4.channel.k8s.io" => (binary(false), Version::V4),
        "v4.base64.channel.k8s.io" => (base64, Version::V4),
        "base64.channel.k8s.io" => (base64, Version::V1),
        _ => (binary(false), Version::V1),
    }
}

pub(crate) async fn run(
    shared: Arc<Shared>,
    upgraded: Upgraded,
    protocol: &'static str,
    command: Command,
) {
    let flags = command.flags();
    let (framing, version) = framing(protocol);
    let (trigger, disconnected) = Disconnected::new();
    let setup = Setup {
        framing,
        readable: vec![flags.stdin, false, false, false, true],
        max_message: shared.config.max_websocket_message,
        idle_timeout: shared.config.stream_idle_timeout,
    };
    let socket = ws::accept(upgraded, setup.max_message).await;
    let mut channels = ws::start(socket, setup, trigger);

    // The kubelet's "connection established" hint: an empty message on
    // the lowest channel we write.
    let hint = if flags.stdout {
        STDOUT
    } else if flags.stderr {
        STDERR
    } else {
        ERROR
    };
    channels.send(hint, &[]).await;

    let stdin = channels.readers[STDIN as usize]
        .take()
        .map(|reader| Box::new(reader) as _);
    let resize = channels.readers[RESIZE as usize]
        .take()
        .map(|reader| Box::new(reader) as _);
    let streams = Streams {
        stdin,
        stdout: flags.stdout.then(|| Box::new(channels.writer(STDOUT)) as _),
        stderr: flags.stderr.then(|| Box::new(channels.writer(STDERR)) as _),
        resize,
    };
    let outcome = run_command(&shared, command, streams, disconnected).await;
    if let Some(bytes) = outcome.and_then(|outcome| outcome.encode(version)) {
        channels.send(ERROR, &bytes).await;
    }
    channels.close(CLOSE_GRACE).await;
}
