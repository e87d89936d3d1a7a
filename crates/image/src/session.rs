//! Requests to one repository at one registry endpoint, authorized as the
//! registry asks, with every body read under a cap.
//!
//! Berth sends these requests itself with reqwest rather than through
//! oci-client 0.18, which reads token answers, manifests and error bodies
//! whole: a registry (or anything answering for it) that sends an endless
//! body would grow berthd until the node runs out of memory. oci-client is
//! kept for its reference and error types.
//!
//! Authorization as containerd's resolver does it: a request goes out with
//! what the cache holds for (credentials, registry, repository) or none; a
//! 401 is answered once (a token from the realm its challenge names, or the
//! basic credentials) and the request sent again.

use std::sync::Arc;

use oci_client::errors::{OciDistributionError, OciEnvelope};
use oci_client::secrets::RegistryAuth as Creds;
use reqwest::StatusCode;
use reqwest::header::{ACCEPT, WWW_AUTHENTICATE};
use tracing::debug;

use crate::registries_conf::Endpoint;
use crate::registry::{RegErr, RegErrKind};
use crate::token::{self, Authz, Challenge, TokenCache};

/// Most of an error answer's body kept (to read the OCI error envelope).
pub const MAX_ERROR_BODY: usize = 64 << 10;

/// An authorized way to one repository at one endpoint; cheap to clone.
#[derive(Clone)]
pub(crate) struct Session {
    http: reqwest::Client,
    tokens: Arc<TokenCache>,
    /// `https://host` (or `http://` for an insecure endpoint).
    base: String,
    repo: String,
    creds: Creds,
    /// The token cache's key: credentials, base, repository.
    key: String,
}

impl Session {
    /// `creds_key` identifies the credentials (never the secrets themselves).
    pub fn new(
        http: reqwest::Client,
        tokens: Arc<TokenCache>,
        ep: &Endpoint,
        creds: Creds,
        creds_key: &str,
    ) -> Session {
        let r = ep.reference.to_oci();
        let scheme = if ep.insecure { "http" } else { "https" };
        let base = format!("{scheme}://{}", r.resolve_registry());
        let repo = r.repository().to_string();
        let key = format!("{creds_key}|{base}|{repo}");
        Session {
            http,
            tokens,
            base,
            repo,
            creds,
            key,
        }
    }

    /// GET `path` (below `/v2/<repo>/`); an answer other than 200 is an
    /// error, its body read up to [`MAX_ERROR_BODY`].
    pub async fn get(&self, path: &str, accept: Option<&str>) -> Result<reqwest::Response, RegErr> {
        let url = format!("{}/v2/{}/{path}", self.base, self.repo);
        let mut authz = self.initial_authz();
        let mut answered = false;
        let mut res = loop {
            let mut req = self.http.get(&url);
            if let Some(a) = accept {
                req = req.header(ACCEPT, a);
            }
            let res = authz
                .apply(req)
                .send()
                .await
                .map_err(OciDistributionError::from)?;
            if res.status() != StatusCode::UNAUTHORIZED || answered {
                break res;
            }
            answered = true;
            self.tokens.forget(&self.key, &authz);
            if matches!(self.creds, Creds::Bearer(_)) {
                // The caller's own token was refused: nothing else to try.
                break res;
            }
            let challenge = Challenge::parse(res.headers().get(WWW_AUTHENTICATE));
            debug!(url, ?challenge, "registry asks for authorization");
            match token::answer(&self.http, &challenge, &self.repo, &self.creds).await? {
                Some((a, life)) => {
                    self.tokens.put(&self.key, a.clone(), life);
                    authz = a;
                }
                None => break res,
            }
        };
        let status = res.status();
        if status != StatusCode::OK {
            let body = read_capped(&mut res, MAX_ERROR_BODY, false).await?;
            return Err(status_error(status, &body, &url).into());
        }
        Ok(res)
    }

    fn initial_authz(&self) -> Authz {
        if let Creds::Bearer(t) = &self.creds {
            return Authz::Bearer(t.clone());
        }
        self.tokens.get(&self.key).unwrap_or(Authz::None)
    }
}

/// Reads the body up to `cap` bytes; past it, an `Unsupported` error
/// (`strict`) or the first `cap` bytes.
pub(crate) async fn read_capped(
    res: &mut reqwest::Response,
    cap: usize,
    strict: bool,
) -> Result<Vec<u8>, RegErr> {
    let mut body = Vec::new();
    while let Some(chunk) = res.chunk().await.map_err(OciDistributionError::from)? {
        if body.len() + chunk.len() > cap {
            if strict {
                return Err(RegErr::new(
                    RegErrKind::Unsupported,
                    format!("the answer is larger than {cap} bytes"),
                ));
            }
            body.extend_from_slice(&chunk[..cap - body.len()]);
            break;
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// An answer other than 200 as oci-client reports it (so it maps to the
/// same error kinds).
fn status_error(status: StatusCode, body: &[u8], url: &str) -> OciDistributionError {
    match status {
        StatusCode::UNAUTHORIZED => OciDistributionError::UnauthorizedError {
            url: url.to_string(),
        },
        s if s.is_success() => OciDistributionError::SpecViolationError(format!(
            "Expected HTTP Status 200 OK, got {s} instead"
        )),
        s => match serde_json::from_slice::<OciEnvelope>(body) {
            Ok(envelope) if s.is_client_error() => OciDistributionError::RegistryError {
                envelope,
                url: url.to_string(),
            },
            _ => OciDistributionError::ServerError {
                code: s.as_u16(),
                url: url.to_string(),
                message: quote(body),
            },
        },
    }
}

/// Most of a body quoted in an error message.
const MAX_QUOTED: usize = 512;

/// What an operator reads of an error body: trimmed, at most [`MAX_QUOTED`]
/// characters.
pub(crate) fn quote(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    match text.char_indices().nth(MAX_QUOTED) {
        Some((cut, _)) => format!("{}… ({} bytes)", &text[..cut], body.len()),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_as_oci_client_maps_them() {
        let url = "http://r/v2/x/manifests/latest";
        let kind = |s: u16, body: &[u8]| {
            RegErr::from(status_error(StatusCode::from_u16(s).unwrap(), body, url)).kind
        };
        assert_eq!(kind(401, b""), RegErrKind::Unauthenticated);
        assert_eq!(kind(404, b"<html>"), RegErrKind::NotFound);
        assert_eq!(
            kind(403, br#"{"errors":[{"code":"DENIED","message":"no"}]}"#),
            RegErrKind::Denied
        );
        assert_eq!(kind(503, b""), RegErrKind::Unavailable);
        assert_eq!(kind(204, b""), RegErrKind::Protocol);
    }

    #[test]
    fn quoted_bodies_are_trimmed_and_short() {
        assert_eq!(quote(b"  oops \n"), "oops");
        let long = vec![b'x'; 5000];
        let q = quote(&long);
        assert!(q.starts_with(&"x".repeat(MAX_QUOTED)), "{q}");
        assert!(q.ends_with("… (5000 bytes)"), "{q}");
        assert_eq!(
            quote("é".repeat(600).as_bytes()).chars().count(),
            MAX_QUOTED + 14
        );
    }
}
