//! Port-forward over WebSocket (`v4.channel.k8s.io`, its base64 variant, or
//! no subprotocol): two channels per requested port, data (2i) and error
//! (2i+1); the first message on each is the port, 2 bytes little endian.
//! One connection per port; the session ends when all are done.

use std::sync::Arc;
use std::time::Duration;

use hyper::upgrade::Upgraded;
use tokio::task::JoinSet;

use crate::runtime::Disconnected;
use crate::server::Shared;
use crate::websocket::{self as ws, ChannelDuplex, Codec, Framing, Setup};

pub(crate) const PROTOCOLS: &[&str] = &["v4.channel.k8s.io", "v4.base64.channel.k8s.io"];

const CLOSE_GRACE: Duration = Duration::from_secs(5);

pub(crate) async fn run(
    shared: Arc<Shared>,
    upgraded: Upgraded,
    protocol: &'static str,
    sandbox: String,
    ports: Vec<u16>,
) {
    let codec = if protocol == "v4.base64.channel.k8s.io" {
        Codec::Base64
    } else {
        Codec::Binary
    };
    let framing = Framing {
        codec,
        close_signal: false,
    };
    let (trigger, disconnected) = Disconnected::new();
    let setup = Setup {
        framing,
        readable: ports.iter().flat_map(|_| [true, false]).collect(),
        max_message: shared.config.max_websocket_message,
        idle_timeout: shared.config.stream_idle_timeout,
    };
    let socket = ws::accept(upgraded, setup.max_message).await;
    let mut channels = ws::start(socket, setup, trigger);
    let sandbox: Arc<str> = sandbox.into();
    let mut forwards = JoinSet::new();
    for (i, &port) in ports.iter().enumerate() {
        let data_channel = (2 * i) as u8;
        let error_channel = data_channel + 1;
        channels.send(data_channel, &port.to_le_bytes()).await;
        channels.send(error_channel, &port.to_le_bytes()).await;
        let Some(reader) = channels.readers[data_channel as usize].take() else {
            continue;
        };
        let data = ChannelDuplex {
            reader,
            writer: channels.writer(data_channel),
        };
        let mut error = channels.writer(error_channel);
        let (shared, sandbox, disconnected) =
            (shared.clone(), sandbox.clone(), disconnected.clone());
        forwards.spawn(async move {
            super::forward(&shared, &sandbox, port, data, &mut error, disconnected).await;
        });
    }
    while forwards.join_next().await.is_some() {}
    channels.close(CLOSE_GRACE).await;
}
