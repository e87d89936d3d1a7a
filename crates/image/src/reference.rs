//! Image references as the kubelet sends them, normalised the way Docker and
//! containerd do (`busybox` → `docker.io/library/busybox:latest`), so that a
//! tag pulled as `busybox` is found again as `docker.io/library/busybox`.

use std::fmt;

use crate::digest::Digest;
use crate::error::ImageError;

pub const DEFAULT_DOMAIN: &str = "docker.io";
const LEGACY_DEFAULT_DOMAIN: &str = "index.docker.io";
const OFFICIAL_REPO_PREFIX: &str = "library/";
pub(crate) const DEFAULT_TAG: &str = "latest";
const MAX_NAME_LEN: usize = 255;

/// A fully qualified reference: `domain/path[:tag][@digest]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageRef {
    /// Registry host with optional port, e.g. `docker.io`, `127.0.0.1:5000`.
    pub domain: String,
    /// Repository path inside the registry, e.g. `library/busybox`.
    pub path: String,
    pub tag: Option<String>,
    pub digest: Option<Digest>,
}

impl ImageRef {
    /// Parses and normalises a reference. A reference with neither tag nor
    /// digest gets `:latest`; with a digest and no tag it stays digest-only.
    pub fn parse(s: &str) -> Result<ImageRef, ImageError> {
        Self::parse_inner(s, true)
    }

    /// Parses `domain/path[:tag][@digest]` where the first component is the
    /// registry whatever it looks like (used for rewritten mirror locations,
    /// which may be a bare hostname such as `mirror`). No `:latest` default.
    pub(crate) fn parse_with_domain(s: &str) -> Result<ImageRef, ImageError> {
        Self::parse_inner(s, false)
    }

    fn parse_inner(s: &str, normalise: bool) -> Result<ImageRef, ImageError> {
        let bad = |reason: &str| ImageError::InvalidReference {
            reference: s.to_string(),
            reason: reason.to_string(),
        };
        if s.is_empty() {
            return Err(bad("empty reference"));
        }
        if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad("contains whitespace or control characters"));
        }
        let (name_tag, digest) = match s.split_once('@') {
            Some((n, d)) => {
                let d: Digest = d
                    .parse()
                    .map_err(|e| bad(&format!("bad digest: {e} (only sha256 is supported)")))?;
                (n, Some(d))
            }
            None => (s, None),
        };
        // The tag is after the last ':' that follows the last '/'; a ':'
        // before that is a port.
        let last_slash = name_tag.rfind('/').map(|i| i + 1).unwrap_or(0);
        let (name, tag) = match name_tag[last_slash..].rfind(':') {
            Some(i) => {
                let i = last_slash + i;
                (&name_tag[..i], Some(name_tag[i + 1..].to_string()))
            }
            None => (name_tag, None),
        };
        if let Some(t) = &tag {
            validate_tag(t).map_err(|r| bad(&r))?;
        }
        if name.is_empty() {
            return Err(bad("empty repository name"));
        }
        let (domain, path) = match name.split_once('/') {
            Some((first, rest))
                if !normalise
                    || first.contains(['.', ':'])
                    || first == "localhost"
                    || first.chars().any(|c| c.is_ascii_uppercase()) =>
            {
                (first.to_string(), rest.to_string())
            }
            _ if !normalise => return Err(bad("no registry host")),
            _ => (DEFAULT_DOMAIN.to_string(), name.to_string()),
        };
        let domain = if normalise && domain == LEGACY_DEFAULT_DOMAIN {
            DEFAULT_DOMAIN.to_string()
        } else {
            domain
        };
        validate_domain(&domain).map_err(|r| bad(&r))?;
        let path = if normalise && domain == DEFAULT_DOMAIN && !path.contains('/') {
            format!("{OFFICIAL_REPO_PREFIX}{path}")
        } else {
            path
        };
        validate_path(&path).map_err(|r| bad(&r))?;
        if domain.len() + 1 + path.len() > MAX_NAME_LEN {
            return Err(bad("repository name longer than 255 characters"));
        }
        // A bare 64-hex string is an image id, never a repository.
        if normalise
            && !name.contains('/')
            && name.len() == 64
            && name.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return Err(bad("a 64-character hex string is an image id, not a name"));
        }
        let tag = match (tag, &digest) {
            (None, None) if normalise => Some(DEFAULT_TAG.to_string()),
            (t, _) => t,
        };
        Ok(ImageRef {
            domain,
            path,
            tag,
            digest,
        })
    }

    /// `domain/path`, e.g. `docker.io/library/busybox`.
    pub fn repository(&self) -> String {
        format!("{}/{}", self.domain, self.path)
    }

    /// `domain/path:tag`, if tagged.
    pub fn tagged(&self) -> Option<String> {
        self.tag
            .as_ref()
            .map(|t| format!("{}:{}", self.repository(), t))
    }

    /// `domain/path@digest` for a given digest.
    pub fn with_digest(&self, d: &Digest) -> String {
        format!("{}@{}", self.repository(), d)
    }

    /// The oci-client form of this reference.
    pub(crate) fn to_oci(&self) -> oci_client::Reference {
        match (&self.tag, &self.digest) {
            (Some(t), Some(d)) => oci_client::Reference::with_tag_and_digest(
                self.domain.clone(),
                self.path.clone(),
                t.clone(),
                d.to_string(),
            ),
            (_, Some(d)) => oci_client::Reference::with_digest(
                self.domain.clone(),
                self.path.clone(),
                d.to_string(),
            ),
            (t, None) => oci_client::Reference::with_tag(
                self.domain.clone(),
                self.path.clone(),
                t.clone().unwrap_or_else(|| DEFAULT_TAG.to_string()),
            ),
        }
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.domain, self.path)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

fn validate_tag(t: &str) -> Result<(), String> {
    let ok = !t.is_empty()
        && t.len() <= 128
        && t.chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        && t.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(format!("invalid tag {t:?}"))
    }
}

fn validate_domain(d: &str) -> Result<(), String> {
    let (host, port) = if let Some(rest) = d.strip_prefix('[') {
        // [ipv6]:port
        let (h, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("invalid registry host {d:?}"))?;
        if h.is_empty() || !h.chars().all(|c| c.is_ascii_hexdigit() || c == ':') {
            return Err(format!("invalid registry host {d:?}"));
        }
        match after {
            "" => return Ok(()),
            p => (
                "ipv6",
                Some(
                    p.strip_prefix(':')
                        .ok_or_else(|| format!("invalid registry host {d:?}"))?,
                ),
            ),
        }
    } else {
        match d.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (d, None),
        }
    };
    if let Some(p) = port
        && (p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(format!("invalid port in registry host {d:?}"));
    }
    let ok = !host.is_empty()
        && host.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    if ok {
        Ok(())
    } else {
        Err(format!("invalid registry host {d:?}"))
    }
}

/// Path components: `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`, joined by `/`.
fn validate_path(p: &str) -> Result<(), String> {
    for comp in p.split('/') {
        if !valid_component(comp) {
            return Err(format!(
                "invalid repository path component {comp:?} (lowercase letters, digits and . _ __ - separators only)"
            ));
        }
    }
    Ok(())
}

fn valid_component(c: &str) -> bool {
    let b = c.as_bytes();
    if b.is_empty() {
        return false;
    }
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        // A separator run: ".", "_", "__" or one or more "-".
        let start = i;
        match b[i] {
            b'.' => i += 1,
            b'_' => {
                i += 1;
                if i < b.len() && b[i] == b'_' {
                    i += 1;
                }
            }
            b'-' => {
                while i < b.len() && b[i] == b'-' {
                    i += 1;
                }
            }
            _ => return false,
        }
        if i == start || i >= b.len() || !alnum(b[i]) {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn n(s: &str) -> String {
        ImageRef::parse(s).unwrap().to_string()
    }

    #[test]
    fn short_names_are_docker_hub_library() {
        assert_eq!(n("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(n("busybox:1.36"), "docker.io/library/busybox:1.36");
        assert_eq!(n("library/busybox"), "docker.io/library/busybox:latest");
        assert_eq!(n("docker.io/busybox"), "docker.io/library/busybox:latest");
        assert_eq!(
            n("index.docker.io/library/busybox"),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(n("someuser/app:v1"), "docker.io/someuser/app:v1");
        assert_eq!(n("a/b/c"), "docker.io/a/b/c:latest");
    }

    #[test]
    fn registries_ports_and_localhost() {
        assert_eq!(
            n("127.0.0.1:5000/berth-test/busybox:latest"),
            "127.0.0.1:5000/berth-test/busybox:latest"
        );
        assert_eq!(n("localhost/app"), "localhost/app:latest");
        assert_eq!(n("localhost:5000/app"), "localhost:5000/app:latest");
        assert_eq!(n("quay.io/a/b:c"), "quay.io/a/b:c");
        assert_eq!(n("[::1]:5000/app:1"), "[::1]:5000/app:1");
        let r = ImageRef::parse("registry.k8s.io/pause:3.10").unwrap();
        assert_eq!(r.domain, "registry.k8s.io");
        assert_eq!(r.path, "pause");
        assert_eq!(r.tag.as_deref(), Some("3.10"));
        // Uppercase in the first component makes it a host (docker's rule).
        assert_eq!(ImageRef::parse("Host/app").unwrap().domain, "Host");
    }

    #[test]
    fn digests() {
        let r = ImageRef::parse(&format!("busybox@{D}")).unwrap();
        assert_eq!(r.tag, None);
        assert_eq!(r.digest.as_ref().unwrap().to_string(), D);
        assert_eq!(r.to_string(), format!("docker.io/library/busybox@{D}"));
        let r = ImageRef::parse(&format!("127.0.0.1:5000/x/y:1.0@{D}")).unwrap();
        assert_eq!(r.tag.as_deref(), Some("1.0"));
        assert_eq!(r.domain, "127.0.0.1:5000");
        assert_eq!(
            r.with_digest(r.digest.as_ref().unwrap()),
            format!("127.0.0.1:5000/x/y@{D}")
        );
        assert_eq!(r.tagged().unwrap(), "127.0.0.1:5000/x/y:1.0");
    }

    #[test]
    fn rejects_bad_references() {
        for s in [
            "",
            "Busybox",
            "busybox:",
            "busybox:-x",
            "busybox@sha256:abc",
            "busybox@md5:0123",
            "a//b",
            "a/-b",
            "a/b-",
            "a/b..c",
            "a/b___c",
            "host:99999999/x",
            "bad host/x",
            "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "-h.com/x",
            "x/y@",
        ] {
            assert!(ImageRef::parse(s).is_err(), "{s:?} should be rejected");
        }
        let long = "a".repeat(300);
        assert!(ImageRef::parse(&long).is_err());
        assert!(ImageRef::parse(&format!("a:{}", "t".repeat(129))).is_err());
    }

    #[test]
    fn components_with_separators() {
        for ok in ["a.b", "a_b", "a__b", "a-b", "a---b", "a0.b1_c2__d3-e4"] {
            assert!(valid_component(ok), "{ok}");
        }
        for bad in ["_a", "a_", "a.", ".a", "a._b", "a___b", "A"] {
            assert!(!valid_component(bad), "{bad}");
        }
    }

    #[test]
    fn to_oci_keeps_repository() {
        let r = ImageRef::parse("127.0.0.1:5000/berth-test/busybox").unwrap();
        let o = r.to_oci();
        assert_eq!(o.registry(), "127.0.0.1:5000");
        assert_eq!(o.repository(), "berth-test/busybox");
        assert_eq!(o.tag(), Some("latest"));
    }
}
