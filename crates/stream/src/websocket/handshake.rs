//! The server side of the WebSocket opening handshake (RFC 6455 §4.2) and
//! the subprotocol choice as wsstream makes it: the first protocol the
//! client lists that we serve; none listed means the "" protocol.

use http_body_util::Full;
use hyper::header::{
    CONNECTION, HeaderMap, HeaderValue, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY,
    SEC_WEBSOCKET_PROTOCOL, SEC_WEBSOCKET_VERSION, UPGRADE,
};
use hyper::{Response, StatusCode};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use crate::http::{Body, Refusal, header_has_token};

pub(crate) fn is_websocket_request(headers: &HeaderMap) -> bool {
    header_has_token(headers, UPGRADE, "websocket")
        && header_has_token(headers, CONNECTION, "upgrade")
}

/// The client's subprotocols, in its order.
fn requested_protocols(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect()
}

/// Picks the subprotocol; `Err` is the response refusing the upgrade.
pub(crate) fn negotiate(
    headers: &HeaderMap,
    supported: &'static [&'static str],
) -> Result<&'static str, Refusal> {
    let requested = requested_protocols(headers);
    if requested.is_empty() {
        return Ok("");
    }
    requested
        .iter()
        .find_map(|p| supported.iter().find(|s| **s == p.as_str()).copied())
        .ok_or_else(|| {
            Refusal::new(
                StatusCode::BAD_REQUEST,
                format!(
                    "requested protocol(s) are not supported: {requested:?}; supports {supported:?}"
                ),
            )
        })
}

/// The 101 answer, or why the request is not a valid WebSocket opening.
pub(crate) fn upgrade_response(
    headers: &HeaderMap,
    protocol: &str,
) -> Result<Response<Body>, Refusal> {
    let version_ok = headers
        .get(SEC_WEBSOCKET_VERSION)
        .is_some_and(|v| v.as_bytes() == b"13");
    let Some(key) = headers.get(SEC_WEBSOCKET_KEY).filter(|_| version_ok) else {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "websocket upgrade needs Sec-WebSocket-Version: 13 and a Sec-WebSocket-Key".into(),
        ));
    };
    let accept = derive_accept_key(key.as_bytes());
    let mut response = Response::new(Full::default());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let out = response.headers_mut();
    out.insert(UPGRADE, HeaderValue::from_static("websocket"));
    out.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    out.insert(
        SEC_WEBSOCKET_ACCEPT,
        HeaderValue::from_str(&accept).expect("base64 is a valid header value"),
    );
    if !protocol.is_empty() {
        out.insert(
            SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_str(protocol).expect("protocol names are valid header values"),
        );
    }
    Ok(response)
}
