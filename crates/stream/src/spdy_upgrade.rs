//! The HTTP side of a SPDY/3.1 upgrade, as k8s.io/apimachinery's
//! httpstream does it: protocol negotiation over `X-Stream-Protocol-Version`
//! (the first protocol the client lists that we serve; 403 with our list in
//! `X-Accepted-Stream-Protocol-Versions` when none), the upgrade headers
//! check, the 101 answer; and the SPDY settings of our sessions.

use http_body_util::Full;
use hyper::header::{CONNECTION, HeaderMap, HeaderValue, UPGRADE};
use hyper::{Response, StatusCode};

use crate::config::StreamingConfig;
use crate::http::{Body, Refusal, header_has_token};

pub(crate) const PROTOCOL_VERSION_HEADER: &str = "x-stream-protocol-version";
pub(crate) const ACCEPTED_VERSIONS_HEADER: &str = "x-accepted-stream-protocol-versions";

/// The negotiated protocol; "" when the client asked for none (what
/// Kubernetes 1.0 clients do).
pub(crate) fn negotiate(
    headers: &HeaderMap,
    supported: &'static [&'static str],
) -> Result<&'static str, Refusal> {
    let requested: Vec<&str> = headers
        .get_all(PROTOCOL_VERSION_HEADER)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    if requested.is_empty() {
        return Ok("");
    }
    if let Some(chosen) = requested
        .iter()
        .find_map(|p| supported.iter().find(|s| *s == p).copied())
    {
        return Ok(chosen);
    }
    Err(Refusal {
        status: StatusCode::FORBIDDEN,
        message: format!(
            "unable to upgrade: unable to negotiate protocol: client supports {requested:?}, server accepts {supported:?}"
        ),
        accepted_versions: supported,
    })
}

/// The 101 answer, or 400 when the request is not a SPDY/3.1 upgrade.
pub(crate) fn upgrade_response(
    headers: &HeaderMap,
    protocol: &str,
) -> Result<Response<Body>, Refusal> {
    let upgrade_ok = headers
        .get(UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"SPDY/3.1"));
    if !upgrade_ok || !header_has_token(headers, CONNECTION, "upgrade") {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "unable to upgrade: missing upgrade headers in request (want Connection: Upgrade, Upgrade: SPDY/3.1 or websocket)".into(),
        ));
    }
    let mut response = Response::new(Full::default());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let out = response.headers_mut();
    out.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    out.insert(UPGRADE, HeaderValue::from_static("SPDY/3.1"));
    if !protocol.is_empty() {
        out.insert(
            PROTOCOL_VERSION_HEADER,
            HeaderValue::from_str(protocol).expect("protocol names are valid header values"),
        );
    }
    Ok(response)
}

/// SPDY settings of a session: the idle timeout is the server's.
pub(crate) fn connection_config(config: &StreamingConfig) -> berth_spdy::Config {
    berth_spdy::Config {
        idle_timeout: Some(config.stream_idle_timeout),
        ..berth_spdy::Config::default()
    }
}

/// Streams a port-forward session may have open: two per forwarded
/// connection, many connections at once (a browser through
/// `kubectl port-forward`), all opened in a burst.
const PORT_FORWARD_MAX_STREAMS: usize = 2048;

pub(crate) fn port_forward_config(config: &StreamingConfig) -> berth_spdy::Config {
    berth_spdy::Config {
        max_streams: PORT_FORWARD_MAX_STREAMS,
        accept_backlog: PORT_FORWARD_MAX_STREAMS,
        ..connection_config(config)
    }
}
