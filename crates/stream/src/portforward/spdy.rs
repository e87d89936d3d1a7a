//! Port-forward over SPDY (`portforward.k8s.io`): the client opens a pair
//! of streams per forwarded connection, `streamType` error and data, both
//! with `port` and `requestID` headers; each complete pair is relayed on
//! its own, a pair not completed within the creation timeout is dropped.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use berth_spdy::{Connection, Headers, IncomingStream, RstStatus, Stream};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::runtime::Disconnected;
use crate::server::Shared;
use crate::spdy_upgrade::port_forward_config;

pub(crate) const PROTOCOLS: &[&str] = &["portforward.k8s.io"];

/// How long finishing touches (error message, FIN) may take.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

struct Pair {
    port: u16,
    data: Option<Stream>,
    error: Option<Stream>,
    deadline: Instant,
}

pub(crate) async fn run(shared: Arc<Shared>, upgraded: Upgraded, sandbox: String) {
    let conn = Connection::server(TokioIo::new(upgraded), port_forward_config(&shared.config));
    let sandbox: Arc<str> = sandbox.into();
    let (trigger, disconnected) = Disconnected::new();
    let mut pairs: HashMap<String, Pair> = HashMap::new();
    let mut forwards = JoinSet::new();
    loop {
        let next_deadline = pairs.values().map(|pair| pair.deadline).min();
        tokio::select! {
            incoming = conn.accept() => {
                let Some(incoming) = incoming else { break };
                let Some((request_id, complete)) = add_stream(&mut pairs, incoming, &shared) else {
                    continue;
                };
                if complete {
                    let pair = pairs.remove(&request_id).expect("pair just completed");
                    forwards.spawn(forward_pair(shared.clone(), sandbox.clone(), pair, disconnected.clone()));
                }
            }
            _ = sleep_until(next_deadline) => {
                let now = Instant::now();
                let expired: Vec<String> = pairs
                    .iter()
                    .filter(|(_, pair)| pair.deadline <= now)
                    .map(|(id, _)| id.clone())
                    .collect();
                for request_id in expired {
                    let pair = pairs.remove(&request_id).expect("listed above");
                    forwards.spawn(report_timeout(request_id, pair));
                }
            }
            Some(_) = forwards.join_next(), if !forwards.is_empty() => {}
        }
    }
    // The client is gone: relays stop, then the tasks are reaped.
    trigger.fire();
    drop(pairs);
    let drain = async { while forwards.join_next().await.is_some() {} };
    if tokio::time::timeout(CLOSE_WAIT, drain).await.is_err() {
        forwards.shutdown().await;
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Files a new stream under its request; returns the request id and
/// whether its pair is now complete.
fn add_stream(
    pairs: &mut HashMap<String, Pair>,
    incoming: IncomingStream,
    shared: &Shared,
) -> Option<(String, bool)> {
    let headers = incoming.headers();
    let port = match headers.get("port").map(str::parse::<u16>) {
        Some(Ok(port)) if port > 0 => port,
        _ => {
            tracing::debug!("port-forward stream without a valid port header");
            incoming.reset(RstStatus::PROTOCOL_ERROR);
            return None;
        }
    };
    let stream_type = headers
        .get("streamtype")
        .unwrap_or_default()
        .to_ascii_lowercase();
    if stream_type != "data" && stream_type != "error" {
        tracing::debug!("port-forward stream of type {stream_type:?}");
        incoming.reset(RstStatus::PROTOCOL_ERROR);
        return None;
    }
    let request_id = match headers.get("requestid") {
        Some(id) if !id.is_empty() => id.to_string(),
        // Pre-1.3 clients send no request id; their pairs are consecutive
        // streams (error first), as the kubelet assumes too.
        _ if stream_type == "error" => incoming.id().to_string(),
        _ => incoming.id().saturating_sub(2).to_string(),
    };
    let stream = incoming.reply(Headers::new()).ok()?;
    let pair = pairs.entry(request_id.clone()).or_insert_with(|| Pair {
        port,
        data: None,
        error: None,
        deadline: Instant::now() + shared.config.stream_creation_timeout,
    });
    let slot = if stream_type == "data" {
        pair.port = port;
        &mut pair.data
    } else {
        &mut pair.error
    };
    if slot.is_some() {
        tracing::debug!("request {request_id}: {stream_type} stream already assigned");
        return None; // The duplicate is dropped (FIN).
    }
    *slot = Some(stream);
    let complete = pair.data.is_some() && pair.error.is_some();
    Some((request_id, complete))
}

async fn forward_pair(
    shared: Arc<Shared>,
    sandbox: Arc<str>,
    pair: Pair,
    disconnected: Disconnected,
) {
    let (Some(data), Some(error)) = (pair.data, pair.error) else {
        return;
    };
    // The client never writes on the error stream; it reads it to its end.
    let (_error_reader, mut error) = error.into_split();
    super::forward(&shared, &sandbox, pair.port, data, &mut error, disconnected).await;
    let _ = tokio::time::timeout(CLOSE_WAIT, error.shutdown()).await;
}

async fn report_timeout(request_id: String, pair: Pair) {
    tracing::debug!("port-forward request {request_id}: timed out waiting for streams");
    if let Some(mut error) = pair.error {
        let message = format!("timed out waiting for streams of request {request_id}");
        let report = async {
            error.write_all(message.as_bytes()).await?;
            error.shutdown().await
        };
        let _ = tokio::time::timeout(CLOSE_WAIT, report).await;
    }
}
