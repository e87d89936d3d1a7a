//! Registry access: credentials, the client every pull shares (sessions,
//! `session.rs`, do the requests) and the mapping of registry errors onto
//! ours (oci-client's error type, which Berth's requests report too).

use std::sync::Arc;
use std::time::Duration;

use oci_client::errors::{OciDistributionError, OciErrorCode};
use sha2::{Digest as _, Sha256};

use crate::registries_conf::Endpoint;
use crate::session::Session;
use crate::token::TokenCache;

/// Credentials from the CRI `AuthConfig`. Tried in this order:
/// `registry_token` (a bearer token), `identity_token`, `username`/`password`,
/// `auth` (base64 of `user:password`); all empty is anonymous.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct RegistryAuth {
    pub username: String,
    pub password: String,
    pub auth: String,
    /// If set, the credentials are only sent to this registry host (not to mirrors elsewhere).
    pub server_address: String,
    pub identity_token: String,
    pub registry_token: String,
}

impl std::fmt::Debug for RegistryAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryAuth")
            .field("username", &self.username)
            .field("server_address", &self.server_address)
            .finish_non_exhaustive()
    }
}

impl RegistryAuth {
    pub fn basic(username: &str, password: &str) -> Self {
        RegistryAuth {
            username: username.into(),
            password: password.into(),
            ..Default::default()
        }
    }

    /// The oci-client form for a request to `host`.
    pub(crate) fn for_host(&self, host: &str) -> Result<oci_client::secrets::RegistryAuth, String> {
        use oci_client::secrets::RegistryAuth as A;
        if !self.server_address.is_empty() && server_host(&self.server_address) != host {
            return Ok(A::Anonymous);
        }
        if !self.registry_token.is_empty() {
            return Ok(A::Bearer(self.registry_token.clone()));
        }
        if !self.identity_token.is_empty() {
            // oci-client has no OAuth2 refresh-token grant; registries that
            // issue identity tokens (ACR, Harbor) accept them as the
            // password of a basic-auth token request.
            let user = if self.username.is_empty() {
                "00000000-0000-0000-0000-000000000000"
            } else {
                &self.username
            };
            return Ok(A::Basic(user.into(), self.identity_token.clone()));
        }
        if !self.username.is_empty() {
            return Ok(A::Basic(self.username.clone(), self.password.clone()));
        }
        if !self.auth.is_empty() {
            let raw = base64_decode(self.auth.trim()).ok_or("auth is not valid base64")?;
            let s = String::from_utf8(raw).map_err(|_| "auth is not UTF-8")?;
            let (u, p) = s
                .split_once(':')
                .ok_or("auth is not base64 of user:password")?;
            return Ok(A::Basic(u.into(), p.into()));
        }
        Ok(A::Anonymous)
    }

    fn cache_key(&self) -> String {
        let mut h = Sha256::new();
        for f in [
            &self.username,
            &self.password,
            &self.auth,
            &self.server_address,
            &self.identity_token,
            &self.registry_token,
        ] {
            h.update((f.len() as u64).to_le_bytes());
            h.update(f.as_bytes());
        }
        hex::encode(h.finalize())
    }
}

/// `https://host:port/v1/` → `host:port`.
fn server_host(s: &str) -> &str {
    let s = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))
        .unwrap_or(s);
    let s = s.split('/').next().unwrap_or(s);
    if s == "index.docker.io" || s == "registry-1.docker.io" {
        "docker.io"
    } else {
        s
    }
}

fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            b'=' => break,
            _ => return None,
        };
        acc = (acc << 6) | v as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// How a registry request failed, before it gets the image's name attached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RegErrKind {
    NotFound,
    Unauthenticated,
    Denied,
    Unavailable,
    Digest,
    /// Valid but not something Berth pulls (schema 1, artifacts).
    Unsupported,
    Protocol,
}

#[derive(Debug, Clone)]
pub(crate) struct RegErr {
    pub kind: RegErrKind,
    pub detail: String,
}

impl RegErr {
    pub fn from_manifest(e: crate::manifest::ManifestError) -> Self {
        match e {
            crate::manifest::ManifestError::Unsupported(d) => {
                RegErr::new(RegErrKind::Unsupported, d)
            }
            crate::manifest::ManifestError::Invalid(d) => RegErr::new(RegErrKind::Protocol, d),
        }
    }

    pub fn new(kind: RegErrKind, detail: impl Into<String>) -> Self {
        RegErr {
            kind,
            detail: detail.into(),
        }
    }
}

impl From<OciDistributionError> for RegErr {
    fn from(e: OciDistributionError) -> Self {
        use OciDistributionError as E;
        use RegErrKind as K;
        // reqwest's own message stops at "error sending request": the
        // cause (refused, TLS, DNS) is in its sources.
        let detail = with_sources(&e);
        let kind = match &e {
            E::UnauthorizedError { .. } | E::AuthenticationFailure(_) => K::Unauthenticated,
            E::RegistryError { envelope, .. } => {
                let codes: Vec<&OciErrorCode> = envelope.errors.iter().map(|e| &e.code).collect();
                if codes.iter().any(|c| {
                    matches!(
                        c,
                        OciErrorCode::ManifestUnknown
                            | OciErrorCode::NameUnknown
                            | OciErrorCode::BlobUnknown
                            | OciErrorCode::NotFound
                    )
                }) {
                    K::NotFound
                } else if codes
                    .iter()
                    .any(|c| matches!(c, OciErrorCode::Unauthorized))
                {
                    K::Unauthenticated
                } else if codes.iter().any(|c| matches!(c, OciErrorCode::Denied)) {
                    K::Denied
                } else if codes
                    .iter()
                    .any(|c| matches!(c, OciErrorCode::Toomanyrequests))
                {
                    K::Unavailable
                } else {
                    K::Protocol
                }
            }
            E::ServerError { code, .. } => match code {
                401 => K::Unauthenticated,
                403 => K::Denied,
                404 => K::NotFound,
                408 | 429 | 500..=599 => K::Unavailable,
                _ => K::Protocol,
            },
            E::RequestError(_) | E::IoError(_) => K::Unavailable,
            E::DigestError(_) => K::Digest,
            E::ImageManifestNotFoundError(_) => K::NotFound,
            _ => K::Protocol,
        };
        RegErr { kind, detail }
    }
}

/// An error and its chain of causes, ": "-separated, without repeats.
pub(crate) fn with_sources(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out = format!("{out}: {text}");
        }
        source = s.source();
    }
    out
}

/// Whether a failed HTTPS request looks like a TLS handshake answered in
/// plain HTTP (rustls: "InvalidContentType"/"corrupt message"; OpenSSL:
/// "wrong version number").
pub(crate) fn looks_like_plain_http(detail: &str) -> bool {
    [
        "InvalidContentType",
        "corrupt message",
        "wrong version number",
    ]
    .iter()
    .any(|sign| detail.contains(sign))
}

/// What every pull shares: one HTTP client (its connection pool) and the
/// authorizations still valid.
pub(crate) struct Clients {
    http: reqwest::Client,
    tokens: Arc<TokenCache>,
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
const READ_TIMEOUT: Duration = Duration::from_secs(120);
const USER_AGENT: &str = concat!("berth/", env!("CARGO_PKG_VERSION"));

impl Clients {
    pub fn new() -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(READ_TIMEOUT)
            .user_agent(USER_AGENT)
            .build()
            .unwrap_or_default();
        Clients {
            http,
            tokens: Arc::default(),
        }
    }

    /// A session for `ep`'s repository with `auth` (as sent to `ep`'s host).
    pub fn session(&self, auth: &RegistryAuth, ep: &Endpoint) -> Result<Session, String> {
        let creds = auth.for_host(ep.host())?;
        Ok(Session::new(
            self.http.clone(),
            self.tokens.clone(),
            ep,
            creds,
            &auth.cache_key(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_client::secrets::RegistryAuth as A;

    #[test]
    fn auth_forms() {
        let a = RegistryAuth::basic("u", "p");
        assert_eq!(a.for_host("h").unwrap(), A::Basic("u".into(), "p".into()));
        let a = RegistryAuth {
            auth: "dXNlcjpwYTpzcw==".into(), // user:pa:ss
            ..Default::default()
        };
        assert_eq!(
            a.for_host("h").unwrap(),
            A::Basic("user".into(), "pa:ss".into())
        );
        let a = RegistryAuth {
            registry_token: "t".into(),
            username: "u".into(),
            ..Default::default()
        };
        assert_eq!(a.for_host("h").unwrap(), A::Bearer("t".into()));
        assert_eq!(RegistryAuth::default().for_host("h").unwrap(), A::Anonymous);
        let a = RegistryAuth {
            auth: "!!!".into(),
            ..Default::default()
        };
        assert!(a.for_host("h").is_err());
    }

    #[test]
    fn server_address_limits_where_credentials_go() {
        let a = RegistryAuth {
            server_address: "https://127.0.0.1:5000/v2/".into(),
            ..RegistryAuth::basic("u", "p")
        };
        assert!(matches!(
            a.for_host("127.0.0.1:5000").unwrap(),
            A::Basic(..)
        ));
        assert_eq!(a.for_host("mirror:5000").unwrap(), A::Anonymous);
        let hub = RegistryAuth {
            server_address: "https://index.docker.io/v1/".into(),
            ..RegistryAuth::basic("u", "p")
        };
        assert!(matches!(hub.for_host("docker.io").unwrap(), A::Basic(..)));
    }

    #[test]
    fn base64() {
        assert_eq!(base64_decode("aGVsbG8=").unwrap(), b"hello");
        assert_eq!(base64_decode("aGVsbG8").unwrap(), b"hello");
        assert_eq!(base64_decode("").unwrap(), b"");
        assert!(base64_decode("a b").is_none());
    }

    #[test]
    fn debug_hides_secrets() {
        let a = RegistryAuth::basic("u", "secret");
        assert!(!format!("{a:?}").contains("secret"));
    }
}
