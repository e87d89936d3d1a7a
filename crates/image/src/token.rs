//! Authorization of pulls: the registry's challenge and the Docker/OCI token
//! flow, done by Berth with bounded reads.
//!
//! oci-client 0.18 reads a token server's answer whole (`Client::auth`, and
//! again on every re-authorization): a registry, or the token server it
//! names, that sends an endless body grew berthd by 2 GiB in 34 s (test
//! `hostile_registry::endless_token_and_error_bodies_are_cut_off`). Here the
//! answer is read up to [`MAX_TOKEN_ANSWER`] bytes within [`TOKEN_TIMEOUT`],
//! and a refusal's reason up to [`MAX_REASON`].

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth as Creds;
use reqwest::StatusCode;
use reqwest::header::HeaderValue;

use crate::registry::{RegErr, RegErrKind};
use crate::session::{quote, read_capped};

/// Largest token answer read (real ones are a few KiB of JWT).
pub const MAX_TOKEN_ANSWER: usize = 64 << 10;
/// Most of a refusal's body quoted in the error.
const MAX_REASON: usize = 4 << 10;
/// The whole token request, body included.
const TOKEN_TIMEOUT: Duration = Duration::from_secs(60);
/// A token without `expires_in` lives this long (the token spec's default).
const DEFAULT_TOKEN_LIFE: Duration = Duration::from_secs(60);
/// Tokens are dropped this long before they expire (clock skew, long requests).
const EXPIRY_SLACK: Duration = Duration::from_secs(10);
/// Cached authorizations; past this the cache is cleared (a kubelet sends few
/// distinct credentials and repositories at once).
const MAX_CACHED: usize = 1024;

/// How requests to one repository are authorized.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Authz {
    None,
    Bearer(String),
    Basic(String, String),
}

impl Authz {
    pub fn apply(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match self {
            Authz::None => req,
            Authz::Bearer(t) => req.bearer_auth(t),
            Authz::Basic(u, p) => req.basic_auth(u, Some(p)),
        }
    }
}

/// What a 401's `WWW-Authenticate` asks for.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Challenge {
    Bearer {
        realm: String,
        service: Option<String>,
    },
    Basic,
    /// No header, or one Berth cannot answer.
    Other,
}

impl Challenge {
    /// The first Bearer or Basic challenge of the header (RFC 7235 syntax).
    pub fn parse(h: Option<&HeaderValue>) -> Challenge {
        let Some(text) = h.and_then(|h| h.to_str().ok()) else {
            return Challenge::Other;
        };
        let Ok(challenges) = http_auth::parse_challenges(text) else {
            return Challenge::Other;
        };
        for c in challenges {
            if c.scheme.eq_ignore_ascii_case("bearer") {
                let param = |name: &str| {
                    c.params
                        .iter()
                        .find(|(k, _)| k.eq_ignore_ascii_case(name))
                        .map(|(_, v)| v.to_unescaped())
                };
                if let Some(realm) = param("realm") {
                    return Challenge::Bearer {
                        realm,
                        service: param("service"),
                    };
                }
            } else if c.scheme.eq_ignore_ascii_case("basic") {
                return Challenge::Basic;
            }
        }
        Challenge::Other
    }
}

/// The answer of a token server (`token`, or OAuth2's `access_token`).
#[derive(serde::Deserialize)]
struct TokenAnswer {
    #[serde(default)]
    token: String,
    #[serde(default)]
    access_token: String,
    expires_in: Option<u64>,
}

/// Answers `challenge` for pulls of `repo`: a token from the realm (asked
/// with basic credentials when there are some), or the basic credentials.
/// `None` when there is nothing to answer with (the 401 stands). Returns
/// the authorization and how long it may be used.
pub(crate) async fn answer(
    http: &reqwest::Client,
    challenge: &Challenge,
    repo: &str,
    creds: &Creds,
) -> Result<Option<(Authz, Duration)>, RegErr> {
    match (challenge, creds) {
        (Challenge::Bearer { realm, service }, _) => {
            let (token, life) = fetch_token(http, realm, service.as_deref(), repo, creds).await?;
            Ok(Some((Authz::Bearer(token), life)))
        }
        (_, Creds::Basic(u, p)) => Ok(Some((Authz::Basic(u.clone(), p.clone()), Duration::MAX))),
        _ => Ok(None),
    }
}

async fn fetch_token(
    http: &reqwest::Client,
    realm: &str,
    service: Option<&str>,
    repo: &str,
    creds: &Creds,
) -> Result<(String, Duration), RegErr> {
    let url = reqwest::Url::parse(realm)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https"))
        .ok_or_else(|| {
            RegErr::new(
                RegErrKind::Protocol,
                format!("the registry's token realm {realm:?} is not an http(s) URL"),
            )
        })?;
    let scope = format!("repository:{repo}:pull");
    let mut query = vec![("scope", scope.as_str())];
    if let Some(s) = service {
        query.push(("service", s));
    }
    let mut req = http.get(url).query(&query).timeout(TOKEN_TIMEOUT);
    if let Creds::Basic(u, p) = creds {
        req = req.basic_auth(u, Some(p));
    }
    let mut res = req.send().await.map_err(token_transport(realm))?;
    let status = res.status();
    if status != StatusCode::OK {
        let body = read_capped(&mut res, MAX_REASON, false)
            .await
            .unwrap_or_default();
        let reason = match quote(&body) {
            r if r.is_empty() => String::new(),
            r => format!(": {r}"),
        };
        let kind = match status.as_u16() {
            408 | 429 | 500..=599 => RegErrKind::Unavailable,
            _ => RegErrKind::Unauthenticated,
        };
        return Err(RegErr::new(
            kind,
            format!("the token server {realm} refused ({status}){reason}"),
        ));
    }
    let body = read_capped(&mut res, MAX_TOKEN_ANSWER, true)
        .await
        .map_err(|e| match e.kind {
            RegErrKind::Unsupported => RegErr::new(
                RegErrKind::Protocol,
                format!("the token answer of {realm} is larger than {MAX_TOKEN_ANSWER} bytes"),
            ),
            _ => RegErr::new(
                e.kind,
                format!("reading the token from {realm}: {}", e.detail),
            ),
        })?;
    let answer: TokenAnswer = serde_json::from_slice(&body).map_err(|e| {
        RegErr::new(
            RegErrKind::Protocol,
            format!("the token answer of {realm} is not valid JSON: {e}"),
        )
    })?;
    let token = if answer.token.is_empty() {
        answer.access_token
    } else {
        answer.token
    };
    if token.is_empty() {
        return Err(RegErr::new(
            RegErrKind::Protocol,
            format!("the token answer of {realm} holds no token"),
        ));
    }
    let life = answer
        .expires_in
        .map_or(DEFAULT_TOKEN_LIFE, Duration::from_secs)
        .saturating_sub(EXPIRY_SLACK);
    Ok((token, life))
}

fn token_transport(realm: &str) -> impl FnOnce(reqwest::Error) -> RegErr + '_ {
    move |e| {
        let e = RegErr::from(OciDistributionError::from(e));
        RegErr::new(e.kind, format!("asking {realm} for a token: {}", e.detail))
    }
}

/// Authorizations by (credentials, registry, repository), until they expire:
/// one token serves every pull of a repository while it lives.
#[derive(Default)]
pub(crate) struct TokenCache {
    map: Mutex<HashMap<String, (Authz, Option<Instant>)>>,
}

impl TokenCache {
    pub fn get(&self, key: &str) -> Option<Authz> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        match map.get(key) {
            Some((a, until)) if until.is_none_or(|t| Instant::now() < t) => Some(a.clone()),
            Some(_) => {
                map.remove(key);
                None
            }
            None => None,
        }
    }

    pub fn put(&self, key: &str, authz: Authz, life: Duration) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_CACHED {
            map.clear();
        }
        map.insert(key.to_string(), (authz, Instant::now().checked_add(life)));
    }

    /// Forgets `authz` for `key` (refused by the registry), unless another
    /// request already replaced it.
    pub fn forget(&self, key: &str, authz: &Authz) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if map.get(key).is_some_and(|(a, _)| a == authz) {
            map.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Challenge {
        Challenge::parse(Some(&HeaderValue::from_str(s).unwrap()))
    }

    #[test]
    fn challenges() {
        assert_eq!(
            parse(r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io""#),
            Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into())
            }
        );
        assert_eq!(
            parse(r#"bearer Realm="https://r/t\"x""#),
            Challenge::Bearer {
                realm: "https://r/t\"x".into(),
                service: None
            }
        );
        assert_eq!(parse(r#"Basic realm="Registry Realm""#), Challenge::Basic);
        assert_eq!(
            parse(r#"Negotiate, Basic realm="x""#),
            Challenge::Basic,
            "the first challenge Berth can answer"
        );
        assert_eq!(parse("Bearer service=\"x\""), Challenge::Other, "no realm");
        assert_eq!(parse("\"garbage"), Challenge::Other);
        assert_eq!(Challenge::parse(None), Challenge::Other);
    }

    #[test]
    fn the_cache_expires_and_forgets_only_what_was_refused() {
        let c = TokenCache::default();
        c.put("k", Authz::Bearer("a".into()), Duration::from_secs(60));
        assert_eq!(c.get("k"), Some(Authz::Bearer("a".into())));
        c.forget("k", &Authz::Bearer("old".into()));
        assert_eq!(c.get("k"), Some(Authz::Bearer("a".into())));
        c.forget("k", &Authz::Bearer("a".into()));
        assert_eq!(c.get("k"), None);
        c.put("k", Authz::Bearer("b".into()), Duration::ZERO);
        assert_eq!(c.get("k"), None, "expired");
        c.put("k", Authz::Basic("u".into(), "p".into()), Duration::MAX);
        assert!(c.get("k").is_some(), "basic credentials never expire");
    }
}
