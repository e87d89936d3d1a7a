//! GET of a manifest or index, at most [`MAX_MANIFEST_SIZE`] bytes.
//!
//! oci-client 0.18's `pull_manifest_raw` reads the whole body into memory
//! whatever its size: a registry (or anything answering for it) that sends an
//! endless or gigabyte "manifest" would grow berthd until the node runs out
//! of memory. So Berth sends this one request itself, with oci-client's
//! credentials (`Client::auth` gives the bearer token, the same flow and
//! token cache as its other requests): a `Content-Length` over the limit is
//! refused before the body is read, and the body is read in chunks and cut
//! off at the limit (a missing or lying length changes nothing). Errors are
//! oci-client's ([`OciDistributionError`]), so they map to the same gRPC
//! codes as every other registry answer.

use oci_client::Reference;
use oci_client::errors::{OciDistributionError, OciEnvelope};
use oci_client::secrets::RegistryAuth;
use reqwest::StatusCode;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_LENGTH};

use crate::registry::{RegErr, RegErrKind};

/// Largest manifest or index read (what containerd allows, and the limit
/// of the reference registry's manifest uploads).
pub const MAX_MANIFEST_SIZE: usize = 4 << 20;

/// Most of an error answer's body kept (to read the OCI error envelope).
const MAX_ERROR_BODY: usize = 64 << 10;

/// Manifest requests to one registry endpoint, authorized once.
pub(crate) struct ManifestGet<'a> {
    http: &'a reqwest::Client,
    scheme: &'static str,
    auth: Authz,
}

enum Authz {
    None,
    Bearer(String),
    Basic(String, String),
}

impl<'a> ManifestGet<'a> {
    /// Authorizes pulls of `image`'s repository (a bearer token when the
    /// registry wants one, basic credentials when it asks for those).
    pub async fn new(
        http: &'a reqwest::Client,
        client: &oci_client::Client,
        image: &Reference,
        auth: &RegistryAuth,
        insecure: bool,
    ) -> Result<Self, RegErr> {
        let token = client
            .auth(image, auth, oci_client::RegistryOperation::Pull)
            .await?;
        let auth = match (token, auth) {
            (Some(t), _) => Authz::Bearer(t),
            (None, RegistryAuth::Basic(u, p)) => Authz::Basic(u.clone(), p.clone()),
            (None, _) => Authz::None,
        };
        Ok(Self {
            http,
            scheme: if insecure { "http" } else { "https" },
            auth,
        })
    }

    /// The manifest `image` names (by digest when it has one), as bytes.
    pub async fn get(&self, image: &Reference, accept: &[&str]) -> Result<Vec<u8>, RegErr> {
        let url = format!(
            "{}://{}/v2/{}/manifests/{}",
            self.scheme,
            image.resolve_registry(),
            image.repository(),
            image
                .digest()
                .or(image.tag())
                .unwrap_or(crate::reference::DEFAULT_TAG),
        );
        let req = self.http.get(&url).header(ACCEPT, accept.join(", "));
        let req = match &self.auth {
            Authz::None => req,
            Authz::Bearer(t) => req.header(AUTHORIZATION, format!("Bearer {t}")),
            Authz::Basic(u, p) => req.basic_auth(u, Some(p)),
        };
        let mut res = req.send().await.map_err(OciDistributionError::from)?;
        let status = res.status();
        if status != StatusCode::OK {
            let body = read_capped(&mut res, MAX_ERROR_BODY, false).await?;
            return Err(status_error(status, &body, &url).into());
        }
        if let Some(n) = res
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
            && n > MAX_MANIFEST_SIZE as u64
        {
            return Err(too_large(&format!("{n} bytes")));
        }
        read_capped(&mut res, MAX_MANIFEST_SIZE, true).await
    }
}

/// Reads the body up to `cap` bytes; past it, an error (`strict`) or the
/// first `cap` bytes.
async fn read_capped(
    res: &mut reqwest::Response,
    cap: usize,
    strict: bool,
) -> Result<Vec<u8>, RegErr> {
    let mut body = Vec::new();
    while let Some(chunk) = res.chunk().await.map_err(OciDistributionError::from)? {
        if body.len() + chunk.len() > cap {
            if strict {
                return Err(too_large("more than that"));
            }
            body.extend_from_slice(&chunk[..cap - body.len()]);
            break;
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn too_large(size: &str) -> RegErr {
    RegErr::new(
        RegErrKind::Unsupported,
        format!("the manifest is larger than the {MAX_MANIFEST_SIZE} byte limit ({size})"),
    )
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
                message: String::from_utf8_lossy(body).to_string(),
            },
        },
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
}
