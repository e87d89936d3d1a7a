//! HTTP/1.1 front: routes `/exec|attach|portforward/<token>`, consumes the
//! token (404 for unknown, expired or used ones, and for a token of another
//! kind), and hands upgraded connections to their session tasks.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use hyper::upgrade::Upgraded;
use hyper::{Method, Request, Response, StatusCode};

use crate::request_cache::CachedRequest;
use crate::server::{SessionGuard, Shared};
use crate::{portforward, remotecommand};

pub(crate) type Body = Full<Bytes>;

pub(crate) fn text_response(status: StatusCode, message: String) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(message)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// An upgrade request turned down before the upgrade: its HTTP answer.
pub(crate) struct Refusal {
    pub status: StatusCode,
    pub message: String,
    /// Sent as `X-Accepted-Stream-Protocol-Versions` (SPDY negotiation).
    pub accepted_versions: &'static [&'static str],
}

impl Refusal {
    pub fn new(status: StatusCode, message: String) -> Self {
        Self {
            status,
            message,
            accepted_versions: &[],
        }
    }

    pub fn into_response(self) -> Response<Body> {
        let mut response = text_response(self.status, self.message);
        for protocol in self.accepted_versions {
            response.headers_mut().append(
                crate::spdy_upgrade::ACCEPTED_VERSIONS_HEADER,
                HeaderValue::from_static(protocol),
            );
        }
        response
    }
}

/// Whether a comma-separated header (`Connection: keep-alive, Upgrade`)
/// holds `token`, ignoring ASCII case.
pub(crate) fn header_has_token(headers: &HeaderMap, name: HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|item| item.trim().eq_ignore_ascii_case(token))
}

pub(crate) async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    Ok(route(shared, req).await)
}

async fn route(shared: Arc<Shared>, req: Request<Incoming>) -> Response<Body> {
    if req.method() != Method::GET && req.method() != Method::POST {
        return text_response(StatusCode::METHOD_NOT_ALLOWED, "method not allowed".into());
    }
    let Some((kind, token)) = req
        .uri()
        .path()
        .strip_prefix('/')
        .and_then(|path| path.split_once('/'))
    else {
        return not_found();
    };
    if !matches!(kind, "exec" | "attach" | "portforward") {
        return not_found();
    }
    let Some(cached) = shared.cache.consume(token) else {
        return not_found();
    };
    match (kind, cached) {
        ("exec", CachedRequest::Exec(exec)) => {
            remotecommand::serve(shared, req, remotecommand::Command::Exec(exec)).await
        }
        ("attach", CachedRequest::Attach(attach)) => {
            remotecommand::serve(shared, req, remotecommand::Command::Attach(attach)).await
        }
        ("portforward", CachedRequest::PortForward(forward)) => {
            portforward::serve(shared, req, forward).await
        }
        _ => not_found(),
    }
}

fn not_found() -> Response<Body> {
    text_response(StatusCode::NOT_FOUND, "404 page not found\n".into())
}

/// Runs `session` on the connection once the 101 response is out. The
/// session counts as live until it returns; server shutdown drops it.
pub(crate) fn spawn_upgraded<F, Fut>(shared: &Arc<Shared>, req: &mut Request<Incoming>, session: F)
where
    F: FnOnce(Upgraded) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let on_upgrade = hyper::upgrade::on(req);
    let guard = SessionGuard::new(shared.clone());
    let shared = shared.clone();
    tokio::spawn(async move {
        let _guard = guard;
        let upgraded = match on_upgrade.await {
            Ok(upgraded) => upgraded,
            Err(err) => {
                tracing::debug!("streaming upgrade failed: {err}");
                return;
            }
        };
        tokio::select! {
            _ = session(upgraded) => {}
            _ = shared.shutting_down() => {}
        }
    });
}
