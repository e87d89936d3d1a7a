//! Port-forward sessions: the upgrade, and the relay both transports share
//! (a connection the runtime opened in the pod, copied both ways; a
//! failure goes to that request's error stream and the session goes on).

mod spdy;
pub(crate) mod tunnel;
mod websocket;

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::CopyError;
use crate::http::{Body, spawn_upgraded, text_response};
use crate::request::PortForwardRequest;
use crate::runtime::{Disconnected, RuntimeError};
use crate::server::Shared;
use crate::spdy_upgrade;
use crate::websocket as ws;

/// How long one direction may go on after the other ended.
const RELAY_LINGER: Duration = Duration::from_secs(1);

pub(crate) async fn serve(
    shared: Arc<Shared>,
    mut req: Request<Incoming>,
    forward: PortForwardRequest,
) -> Response<Body> {
    if let Err(err) = shared.runtime.check_sandbox(&forward.pod_sandbox_id).await {
        return text_response(err.http_status(), err.to_string());
    }
    let headers = req.headers();
    let session_shared = shared.clone();
    if ws::is_websocket_request(headers) && tunnel::is_requested(headers) {
        // SPDY inside WebSocket messages: ports come per stream, as over SPDY.
        let response = match ws::upgrade_response(headers, tunnel::PROTOCOL) {
            Ok(response) => response,
            Err(refusal) => return refusal.into_response(),
        };
        let sandbox = forward.pod_sandbox_id;
        spawn_upgraded(&shared, &mut req, move |upgraded| {
            tunnel::run(session_shared, upgraded, sandbox)
        });
        response
    } else if ws::is_websocket_request(headers) {
        let ports = match websocket_ports(&forward, req.uri().query()).and_then(check_port_count) {
            Ok(ports) => ports,
            Err(message) => return text_response(StatusCode::BAD_REQUEST, message),
        };
        let protocol = match ws::negotiate(headers, websocket::PROTOCOLS) {
            Ok(protocol) => protocol,
            Err(refusal) => return refusal.into_response(),
        };
        let response = match ws::upgrade_response(headers, protocol) {
            Ok(response) => response,
            Err(refusal) => return refusal.into_response(),
        };
        let sandbox = forward.pod_sandbox_id;
        spawn_upgraded(&shared, &mut req, move |upgraded| {
            websocket::run(session_shared, upgraded, protocol, sandbox, ports)
        });
        response
    } else {
        let protocol = match spdy_upgrade::negotiate(headers, spdy::PROTOCOLS) {
            Ok(protocol) => protocol,
            Err(refusal) => return refusal.into_response(),
        };
        let response = match spdy_upgrade::upgrade_response(headers, protocol) {
            Ok(response) => response,
            Err(refusal) => return refusal.into_response(),
        };
        let sandbox = forward.pod_sandbox_id;
        spawn_upgraded(&shared, &mut req, move |upgraded| {
            spdy::run(session_shared, upgraded, sandbox)
        });
        response
    }
}

/// A WebSocket client's ports: the CRI request's, else the `port` query
/// parameters (`?port=80&port=8080` or `?port=80,8080`), as the kubelet.
fn websocket_ports(forward: &PortForwardRequest, query: Option<&str>) -> Result<Vec<u16>, String> {
    if !forward.ports.is_empty() {
        return Ok(forward.ports.clone());
    }
    let mut ports = Vec::new();
    for pair in query.unwrap_or_default().split('&') {
        let Some(value) = pair.strip_prefix("port=") else {
            continue;
        };
        for item in value.split("%2C").flat_map(|v| v.split(',')) {
            match item.parse::<u16>() {
                Ok(port) if port > 0 => ports.push(port),
                _ => return Err(format!("unable to parse {item:?} as a port")),
            }
        }
    }
    if ports.is_empty() {
        return Err("query parameter \"port\" is required".into());
    }
    Ok(ports)
}

/// Two channels per port, numbered by one byte.
const MAX_WEBSOCKET_PORTS: usize = 127;

fn check_port_count(ports: Vec<u16>) -> Result<Vec<u16>, String> {
    if ports.len() > MAX_WEBSOCKET_PORTS {
        return Err(format!(
            "at most {MAX_WEBSOCKET_PORTS} ports per WebSocket port-forward"
        ));
    }
    Ok(ports)
}

/// Forwards one client stream to `port` in the pod until either side is
/// done or the client is gone; a failure is written to `error`.
pub(crate) async fn forward<D, E>(
    shared: &Shared,
    sandbox: &str,
    port: u16,
    data: D,
    error: &mut E,
    mut disconnected: Disconnected,
) where
    D: AsyncRead + AsyncWrite + Unpin,
    E: AsyncWrite + Unpin,
{
    let relay = async {
        let target = shared.runtime.port_forward(sandbox, port).await?;
        relay(data, target)
            .await
            .map_err(|err| RuntimeError::Other(err.to_string()))
    };
    let result = tokio::select! {
        result = relay => result,
        _ = disconnected.wait() => return,
    };
    if let Err(err) = result {
        let message = format!("error forwarding port {port} to pod {sandbox}: {err}");
        tracing::debug!("{message}");
        let _ = error.write_all(message.as_bytes()).await;
    }
}

/// Copies both ways, each direction ending with a half-close. Once one
/// direction is done the other gets `RELAY_LINGER` to finish (as
/// containerd's port-forward does): a client that keeps its side open
/// after the pod closed must not pin the pair forever.
///
/// Only a failure on the pod's side of the pod-to-client direction is an
/// error (what containerd reports too). The client's side ending early is
/// its own doing and no error: client-go resets the data stream (RST_STREAM
/// CANCEL) as soon as it read our FIN, and an error written then makes it
/// drop the whole session, every later connection with it.
async fn relay<D, T>(data: D, target: T) -> std::io::Result<()>
where
    D: AsyncRead + AsyncWrite + Unpin,
    T: AsyncRead + AsyncWrite + Unpin,
{
    let (mut data_in, mut data_out) = tokio::io::split(data);
    let (mut target_in, mut target_out) = tokio::io::split(target);
    let upstream = async {
        if let Err(err) = crate::copy(&mut data_in, &mut target_out).await {
            tracing::debug!("port-forward: client to pod: {err:?}");
        }
        let _ = target_out.shutdown().await;
        Ok::<(), std::io::Error>(())
    };
    let downstream = async {
        let copied = copy_to_client(&mut target_in, &mut data_out).await;
        let _ = data_out.shutdown().await;
        copied
    };
    tokio::pin!(upstream, downstream);
    let (first, rest) = tokio::select! {
        done = &mut upstream => (done, tokio::time::timeout(RELAY_LINGER, &mut downstream).await),
        done = &mut downstream => (done, tokio::time::timeout(RELAY_LINGER, &mut upstream).await),
    };
    first?;
    // A direction cut short by the linger is not an error.
    rest.unwrap_or(Ok(()))
}

/// Copies the pod's bytes to the client until the pod's EOF. A read error
/// (the pod's side) is returned; a write error means the client is done
/// with the stream (reset it, or went away), and ends the copy quietly.
async fn copy_to_client<R, W>(from: &mut R, to: &mut W) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    match crate::copy(from, to).await {
        Ok(_) => Ok(()),
        Err(CopyError::Read(err)) => Err(err),
        Err(CopyError::Write(err)) => {
            tracing::debug!("port-forward: pod to client: {err}");
            Ok(())
        }
    }
}
