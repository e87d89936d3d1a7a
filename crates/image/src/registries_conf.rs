//! containers-registries.conf(5), version 2 (TOML): per-prefix location
//! rewrites, mirrors, `insecure` (plain HTTP) and `blocked`.
//!
//! Matching follows the man page and containers/image: the longest matching
//! prefix wins; a prefix matches whole components only (`example.com/foo`
//! matches `example.com/foo/bar` and `example.com/foo:tag`, not
//! `example.com/foobar`); `*.example.com` matches any subdomain host.

use std::path::Path;

use serde::Deserialize;

use crate::error::ImageError;
use crate::reference::ImageRef;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct RawFile {
    #[serde(default)]
    unqualified_search_registries: Vec<String>,
    #[serde(default)]
    registry: Vec<RawRegistry>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct RawRegistry {
    #[serde(default)]
    prefix: String,
    #[serde(default)]
    location: String,
    #[serde(default)]
    insecure: bool,
    #[serde(default)]
    blocked: bool,
    #[serde(default)]
    mirror_by_digest_only: bool,
    #[serde(default)]
    mirror: Vec<RawMirror>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct RawMirror {
    location: String,
    #[serde(default)]
    insecure: bool,
    #[serde(default)]
    pull_from_mirror: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullFromMirror {
    All,
    DigestOnly,
    TagOnly,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mirror {
    pub location: String,
    pub insecure: bool,
    pub pull_from: PullFromMirror,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registry {
    pub prefix: String,
    /// Empty only for wildcard (`*.host`) prefixes, where the reference's
    /// own host is used.
    pub location: String,
    pub insecure: bool,
    pub blocked: bool,
    pub mirror_by_digest_only: bool,
    pub mirrors: Vec<Mirror>,
}

/// The parsed registries configuration. `Default` is "no file": every
/// reference goes to its own host over HTTPS.
#[derive(Debug, Clone, Default)]
pub struct RegistriesConfig {
    pub registries: Vec<Registry>,
    /// Parsed and kept, but not used: Berth only pulls fully qualified
    /// (normalised) references, short names go to docker.io like the kubelet expects.
    pub unqualified_search_registries: Vec<String>,
}

/// One place to try a pull from, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The reference rewritten for this endpoint.
    pub reference: ImageRef,
    /// Plain HTTP allowed.
    pub insecure: bool,
    pub is_mirror: bool,
}

impl Endpoint {
    pub fn host(&self) -> &str {
        &self.reference.domain
    }
}

/// Where to pull a reference from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PullSources {
    Blocked { registry: String },
    Endpoints(Vec<Endpoint>),
}

impl RegistriesConfig {
    /// Loads `path`; a missing file is the empty configuration (zero-config start).
    pub fn load(path: &Path) -> Result<RegistriesConfig, ImageError> {
        match std::fs::read_to_string(path) {
            Ok(s) => Self::parse(&s).map_err(|reason| ImageError::Config {
                path: path.display().to_string(),
                reason,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(ImageError::Config {
                path: path.display().to_string(),
                reason: e.to_string(),
            }),
        }
    }

    pub fn parse(s: &str) -> Result<RegistriesConfig, String> {
        let raw: RawFile = toml::from_str(s).map_err(|e| e.to_string())?;
        let mut registries = Vec::new();
        for r in raw.registry {
            let prefix = if r.prefix.is_empty() {
                r.location.clone()
            } else {
                r.prefix.clone()
            };
            if prefix.is_empty() {
                return Err("a [[registry]] has neither prefix nor location".into());
            }
            let wildcard = prefix.starts_with("*.");
            if wildcard && !r.location.is_empty() {
                return Err(format!(
                    "registry prefix {prefix:?} is a wildcard, so it cannot have a location"
                ));
            }
            if prefix.contains('*') && !wildcard {
                return Err(format!(
                    "registry prefix {prefix:?}: a wildcard is only allowed as a leading \"*.\""
                ));
            }
            let prefix = prefix.trim_end_matches('/').to_string();
            let location = if wildcard {
                String::new()
            } else if r.location.is_empty() {
                prefix.clone()
            } else {
                r.location.trim_end_matches('/').to_string()
            };
            let mut mirrors = Vec::new();
            for m in r.mirror {
                if m.location.is_empty() {
                    return Err(format!("a mirror of {prefix:?} has an empty location"));
                }
                let pull_from = match m.pull_from_mirror.as_deref() {
                    None | Some("") | Some("all") => PullFromMirror::All,
                    Some("digest-only") => PullFromMirror::DigestOnly,
                    Some("tag-only") => PullFromMirror::TagOnly,
                    Some(o) => {
                        return Err(format!(
                            "mirror {:?}: pull-from-mirror {o:?} is not all, digest-only or tag-only",
                            m.location
                        ));
                    }
                };
                mirrors.push(Mirror {
                    location: m.location.trim_end_matches('/').to_string(),
                    insecure: m.insecure,
                    pull_from,
                });
            }
            if registries.iter().any(|x: &Registry| x.prefix == prefix) {
                return Err(format!("registry prefix {prefix:?} is defined twice"));
            }
            registries.push(Registry {
                prefix,
                location,
                insecure: r.insecure,
                blocked: r.blocked,
                mirror_by_digest_only: r.mirror_by_digest_only,
                mirrors,
            });
        }
        Ok(RegistriesConfig {
            registries,
            unqualified_search_registries: raw.unqualified_search_registries,
        })
    }

    /// The `[[registry]]` entry for a reference: the longest matching prefix.
    pub fn find(&self, r: &ImageRef) -> Option<(&Registry, usize)> {
        let s = r.to_string();
        let mut best: Option<(&Registry, usize)> = None;
        for reg in &self.registries {
            if let Some(len) = match_prefix(&s, &reg.prefix)
                && best.is_none_or(|(_, l)| len > l)
            {
                best = Some((reg, len));
            }
        }
        best
    }

    /// Where to pull `r` from: mirrors in order, then the location.
    pub fn pull_sources(&self, r: &ImageRef) -> Result<PullSources, ImageError> {
        let Some((reg, len)) = self.find(r) else {
            return Ok(PullSources::Endpoints(vec![Endpoint {
                reference: r.clone(),
                insecure: false,
                is_mirror: false,
            }]));
        };
        if reg.blocked {
            return Ok(PullSources::Blocked {
                registry: reg.prefix.clone(),
            });
        }
        let s = r.to_string();
        let rest = &s[len..];
        let rewrite = |location: &str| -> Result<ImageRef, ImageError> {
            if location.is_empty() {
                return Ok(r.clone());
            }
            ImageRef::parse_with_domain(&format!("{location}{rest}")).map_err(|e| {
                ImageError::InvalidReference {
                    reference: r.to_string(),
                    reason: format!(
                        "rewriting it with registries.conf location {location:?} gives an invalid reference: {e}"
                    ),
                }
            })
        };
        let by_digest = r.digest.is_some();
        let mut out = Vec::new();
        for m in &reg.mirrors {
            let use_it = (!reg.mirror_by_digest_only || by_digest)
                && match m.pull_from {
                    PullFromMirror::All => true,
                    PullFromMirror::DigestOnly => by_digest,
                    PullFromMirror::TagOnly => !by_digest,
                };
            if use_it {
                out.push(Endpoint {
                    reference: rewrite(&m.location)?,
                    insecure: m.insecure,
                    is_mirror: true,
                });
            }
        }
        out.push(Endpoint {
            reference: rewrite(&reg.location)?,
            insecure: reg.insecure,
            is_mirror: false,
        });
        Ok(PullSources::Endpoints(out))
    }
}

/// Length of `reference` matched by `prefix`, or None (containers/image's
/// refMatchingPrefix).
fn match_prefix(reference: &str, prefix: &str) -> Option<usize> {
    if let Some(suffix) = prefix.strip_prefix('*') {
        // "*.example.com": `.example.com` must end the host part.
        let idx = reference.find(suffix)?;
        if reference[..idx].contains('/') || idx == 0 {
            return None;
        }
        let end = idx + suffix.len();
        return match reference.as_bytes().get(end) {
            None | Some(b':') | Some(b'/') | Some(b'@') => Some(end),
            _ => None,
        };
    }
    if !reference.starts_with(prefix) {
        return None;
    }
    match reference.as_bytes().get(prefix.len()) {
        None | Some(b':') | Some(b'/') | Some(b'@') => Some(prefix.len()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> ImageRef {
        ImageRef::parse(s).unwrap()
    }

    fn endpoints(c: &RegistriesConfig, s: &str) -> Vec<(String, bool, bool)> {
        match c.pull_sources(&r(s)).unwrap() {
            PullSources::Endpoints(v) => v
                .into_iter()
                .map(|e| (e.reference.to_string(), e.insecure, e.is_mirror))
                .collect(),
            PullSources::Blocked { registry } => {
                vec![(format!("BLOCKED {registry}"), false, false)]
            }
        }
    }

    const CONF: &str = r#"
unqualified-search-registries = ["docker.io", "quay.io"]
short-name-mode = "enforcing"

[aliases]
"foo" = "quay.io/foo"

[[registry]]
prefix = "docker.io"
location = "docker.io"

[[registry.mirror]]
location = "127.0.0.1:5001/hub"
insecure = true

[[registry.mirror]]
location = "mirror.example.com"

[[registry]]
prefix = "docker.io/library/busybox"
location = "internal.example.com/bb"
insecure = true

[[registry]]
location = "127.0.0.1:5000"
insecure = true

[[registry]]
prefix = "*.blocked.test"
blocked = true

[[registry]]
prefix = "evil.test/ns"
blocked = true

[[registry]]
prefix = "digests.test"
mirror-by-digest-only = true
[[registry.mirror]]
location = "m.test"

[[registry]]
prefix = "tags.test"
[[registry.mirror]]
location = "m1.test"
pull-from-mirror = "tag-only"
[[registry.mirror]]
location = "m2.test"
pull-from-mirror = "digest-only"
"#;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn parses_the_v2_format() {
        let c = RegistriesConfig::parse(CONF).unwrap();
        assert_eq!(c.unqualified_search_registries, ["docker.io", "quay.io"]);
        assert_eq!(c.registries.len(), 7);
        let local = &c.registries[2];
        assert_eq!(local.prefix, "127.0.0.1:5000");
        assert_eq!(local.location, "127.0.0.1:5000");
        assert!(local.insecure);
        assert_eq!(c.registries[0].mirrors.len(), 2);
        assert!(c.registries[0].mirrors[0].insecure);
        assert!(!c.registries[0].mirrors[1].insecure);
        assert!(RegistriesConfig::parse("").unwrap().registries.is_empty());
    }

    #[test]
    fn mirrors_in_order_then_location() {
        let c = RegistriesConfig::parse(CONF).unwrap();
        assert_eq!(
            endpoints(&c, "alpine"),
            vec![
                (
                    "127.0.0.1:5001/hub/library/alpine:latest".into(),
                    true,
                    true
                ),
                (
                    "mirror.example.com/library/alpine:latest".into(),
                    false,
                    true
                ),
                ("docker.io/library/alpine:latest".into(), false, false),
            ]
        );
    }

    #[test]
    fn longest_prefix_wins_and_rewrites_location() {
        let c = RegistriesConfig::parse(CONF).unwrap();
        assert_eq!(
            endpoints(&c, "busybox:1"),
            vec![("internal.example.com/bb:1".into(), true, false)]
        );
        // Whole components only: busyboxx is not under .../busybox.
        assert_eq!(endpoints(&c, "busyboxx").len(), 3);
        assert_eq!(
            endpoints(&c, "127.0.0.1:5000/berth-test/busybox"),
            vec![(
                "127.0.0.1:5000/berth-test/busybox:latest".into(),
                true,
                false
            )]
        );
        // A different port is a different registry: not insecure.
        assert_eq!(
            endpoints(&c, "127.0.0.1:5002/x"),
            vec![("127.0.0.1:5002/x:latest".into(), false, false)]
        );
        assert_eq!(
            endpoints(&c, "localhost:5000/x"),
            vec![("localhost:5000/x:latest".into(), false, false)]
        );
    }

    #[test]
    fn blocked_and_wildcards() {
        let c = RegistriesConfig::parse(CONF).unwrap();
        assert_eq!(
            endpoints(&c, "a.blocked.test/x")[0].0,
            "BLOCKED *.blocked.test"
        );
        assert_eq!(
            endpoints(&c, "a.b.blocked.test:443/x")[0].0,
            "BLOCKED *.blocked.test"
        );
        // The bare domain is not a subdomain.
        assert_eq!(
            endpoints(&c, "blocked.test/x")[0].0,
            "blocked.test/x:latest"
        );
        assert_eq!(endpoints(&c, "evil.test/ns/x")[0].0, "BLOCKED evil.test/ns");
        assert_eq!(
            endpoints(&c, "evil.test/other")[0].0,
            "evil.test/other:latest"
        );
        assert_eq!(match_prefix("a.x.com/y", "*.x.com"), Some(7));
        assert_eq!(match_prefix("ax.com/y", "*.x.com"), None);
        assert_eq!(match_prefix("a/b.x.com/y", "*.x.com"), None);
        assert_eq!(match_prefix("a.x.comm/y", "*.x.com"), None);
    }

    #[test]
    fn digest_only_and_tag_only_mirrors() {
        let c = RegistriesConfig::parse(CONF).unwrap();
        assert_eq!(endpoints(&c, "digests.test/x:1").len(), 1);
        assert_eq!(
            endpoints(&c, &format!("digests.test/x@{D}"))[0].0,
            format!("m.test/x@{D}")
        );
        let t: Vec<_> = endpoints(&c, "tags.test/x:1")
            .into_iter()
            .map(|e| e.0)
            .collect();
        assert_eq!(t, ["m1.test/x:1", "tags.test/x:1"]);
        let d: Vec<_> = endpoints(&c, &format!("tags.test/x@{D}"))
            .into_iter()
            .map(|e| e.0)
            .collect();
        assert_eq!(d, [format!("m2.test/x@{D}"), format!("tags.test/x@{D}")]);
    }

    #[test]
    fn no_config_means_direct_https() {
        let c = RegistriesConfig::default();
        assert_eq!(
            endpoints(&c, "127.0.0.1:5000/a"),
            vec![("127.0.0.1:5000/a:latest".into(), false, false)]
        );
    }

    #[test]
    fn rejects_invalid_files() {
        for bad in [
            "[[registry]]\ninsecure = true\n",
            "[[registry]]\nprefix = \"*.x.com\"\nlocation = \"y.com\"\n",
            "[[registry]]\nprefix = \"a*.x.com\"\n",
            "[[registry]]\nlocation = \"a.com\"\n[[registry]]\nlocation = \"a.com\"\n",
            "[[registry]]\nlocation = \"a.com\"\n[[registry.mirror]]\nlocation = \"b\"\npull-from-mirror = \"x\"\n",
            "registry = 3",
            "[[registry]\n",
        ] {
            assert!(RegistriesConfig::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn load_missing_file_is_empty() {
        let c = RegistriesConfig::load(Path::new("/nonexistent/berth/registries.conf")).unwrap();
        assert!(c.registries.is_empty());
    }
}
