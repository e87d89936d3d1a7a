//! The registry documents Berth reads, parsed leniently but checked strictly:
//! anything a hostile registry sends either parses into these or is an error
//! (never a panic), and sizes/digests are validated before use.

use serde::Deserialize;

use crate::digest::Digest;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";
pub const DOCKER_SCHEMA1_SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

/// What the manifest request accepts: schema 2 and OCI, manifests and indexes.
pub const ACCEPT: &[&str] = &[OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST];

/// Largest config blob we read into memory (as manifests:
/// `manifest_fetch::MAX_MANIFEST_SIZE`; real configs are kilobytes).
pub const MAX_CONFIG_SIZE: u64 = 4 << 20;

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    #[serde(default)]
    pub media_type: String,
    pub digest: String,
    pub size: i64,
    #[serde(default)]
    pub urls: Option<Vec<String>>,
    #[serde(default)]
    pub platform: Option<IndexPlatform>,
}

impl Descriptor {
    /// `(os, architecture, variant)` of an index entry for [`Platform::select`];
    /// an entry without a platform matches no node.
    ///
    /// [`Platform::select`]: crate::Platform::select
    pub fn platform_triple(&self) -> (&str, &str, Option<&str>) {
        match &self.platform {
            Some(pl) => (
                pl.os.as_str(),
                pl.architecture.as_str(),
                pl.variant.as_deref(),
            ),
            None => ("", "", None),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct IndexPlatform {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub variant: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Raw {
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Option<Vec<Descriptor>>,
    #[serde(default)]
    manifests: Option<Vec<Descriptor>>,
}

#[derive(Debug, Clone)]
pub enum Manifest {
    Image {
        config: Descriptor,
        layers: Vec<Descriptor>,
    },
    Index {
        manifests: Vec<Descriptor>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ManifestError {
    /// Well-formed, but not something Berth pulls.
    Unsupported(String),
    Invalid(String),
}

impl std::fmt::Display for ManifestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ManifestError::Unsupported(s) | ManifestError::Invalid(s) => f.write_str(s),
        }
    }
}

/// Parses a manifest or index body. The response's Content-Type is ignored
/// because registries get it wrong; the body's own fields decide.
pub fn parse_manifest(body: &[u8]) -> Result<Manifest, ManifestError> {
    // Kind first, so an unsupported document is named as such even if
    // the rest of it does not fit our structs.
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Versioned {
        #[serde(default)]
        schema_version: Option<i64>,
        #[serde(default)]
        media_type: Option<String>,
    }
    let invalid =
        |e: serde_json::Error| ManifestError::Invalid(format!("manifest is not valid JSON: {e}"));
    let v: Versioned = serde_json::from_slice(body).map_err(invalid)?;
    let mt = v.media_type.clone().unwrap_or_default();
    if v.schema_version == Some(1) || mt == DOCKER_SCHEMA1 || mt == DOCKER_SCHEMA1_SIGNED {
        return Err(ManifestError::Unsupported("Docker schema 1 manifests are not supported (deprecated; re-push the image with a current tool)".into()));
    }
    if !(mt.is_empty()
        || [OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST].contains(&mt.as_str()))
    {
        return Err(ManifestError::Unsupported(format!(
            "unsupported manifest media type {mt:?}"
        )));
    }
    if v.schema_version != Some(2) {
        return Err(ManifestError::Invalid(format!(
            "unsupported manifest schemaVersion {:?}",
            v.schema_version
        )));
    }
    let raw: Raw = serde_json::from_slice(body).map_err(invalid)?;
    let mt = mt.as_str();
    parse_v2(raw, mt).map_err(|e| match e {
        e if e.starts_with("config media type") => ManifestError::Unsupported(e),
        e => ManifestError::Invalid(e),
    })
}

fn parse_v2(raw: Raw, mt: &str) -> Result<Manifest, String> {
    let is_index =
        mt == OCI_INDEX || mt == DOCKER_LIST || (mt.is_empty() && raw.manifests.is_some());
    if is_index {
        let manifests = raw.manifests.ok_or("image index has no manifests")?;
        for m in &manifests {
            check_descriptor(m)?;
        }
        return Ok(Manifest::Index { manifests });
    }
    let config = raw.config.ok_or("manifest has no config")?;
    check_descriptor(&config)?;
    let layers = raw.layers.ok_or("manifest has no layers")?;
    for l in &layers {
        check_descriptor(l)?;
    }
    if config.media_type != OCI_CONFIG && config.media_type != DOCKER_CONFIG {
        return Err(format!(
            "config media type {:?} is not an image config (is this an artifact rather than a container image?)",
            config.media_type
        ));
    }
    Ok(Manifest::Image { config, layers })
}

fn check_descriptor(d: &Descriptor) -> Result<(), String> {
    d.digest
        .parse::<Digest>()
        .map_err(|e| format!("descriptor digest: {e}"))?;
    if d.size < 0 {
        return Err(format!(
            "descriptor {} has negative size {}",
            d.digest, d.size
        ));
    }
    Ok(())
}

/// The parts of an image config Berth needs; the full JSON is kept as is.
#[derive(Debug, Clone, Deserialize)]
pub struct ConfigSummary {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub config: Option<ConfigInner>,
    pub rootfs: RootFs,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct ConfigInner {
    #[serde(rename = "User", default)]
    pub user: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RootFs {
    #[serde(rename = "type")]
    pub kind: String,
    pub diff_ids: Vec<String>,
}

pub fn parse_config(body: &[u8]) -> Result<(ConfigSummary, Vec<Digest>), String> {
    let c: ConfigSummary =
        serde_json::from_slice(body).map_err(|e| format!("image config is not valid: {e}"))?;
    if c.rootfs.kind != "layers" {
        return Err(format!("rootfs type {:?} is not \"layers\"", c.rootfs.kind));
    }
    let ids = c
        .rootfs
        .diff_ids
        .iter()
        .map(|d| d.parse::<Digest>().map_err(|e| format!("diff_id: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((c, ids))
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn parses_oci_and_docker_manifests() {
        let m = format!(
            r#"{{"schemaVersion":2,"mediaType":"{DOCKER_MANIFEST}","config":{{"mediaType":"{DOCKER_CONFIG}","digest":"{D}","size":10}},"layers":[{{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","digest":"{D}","size":5}}]}}"#
        );
        match parse_manifest(m.as_bytes()).unwrap() {
            Manifest::Image { layers, .. } => assert_eq!(layers.len(), 1),
            _ => panic!(),
        }
        let i = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{D}","size":1,"platform":{{"architecture":"amd64","os":"linux"}}}}]}}"#
        );
        assert!(matches!(
            parse_manifest(i.as_bytes()).unwrap(),
            Manifest::Index { .. }
        ));
    }

    #[test]
    fn rejects_garbage_without_panicking() {
        for b in [
            &b""[..],
            b"null",
            b"[]",
            b"{\"schemaVersion\":1}",
            b"{\"schemaVersion\":2}",
            b"{\"schemaVersion\":\"2\"}",
            b"{\"schemaVersion\":2,\"config\":{\"digest\":\"sha256:x\",\"size\":1},\"layers\":[]}",
            b"\xff\xfe",
        ] {
            assert!(
                parse_manifest(b).is_err(),
                "{:?}",
                String::from_utf8_lossy(b)
            );
        }
        let neg = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"{OCI_CONFIG}","digest":"{D}","size":-1}},"layers":[]}}"#
        );
        assert!(
            parse_manifest(neg.as_bytes())
                .unwrap_err()
                .to_string()
                .contains("negative")
        );
        let artifact = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.cncf.helm.config.v1+json","digest":"{D}","size":1}},"layers":[]}}"#
        );
        assert!(matches!(
            parse_manifest(artifact.as_bytes()),
            Err(ManifestError::Unsupported(_))
        ));
        assert!(matches!(
            parse_manifest(b"{\"schemaVersion\":1}"),
            Err(ManifestError::Unsupported(_))
        ));
    }

    #[test]
    fn config_diff_ids() {
        let c = format!(
            r#"{{"architecture":"amd64","os":"linux","config":{{"User":"1000:1000"}},"rootfs":{{"type":"layers","diff_ids":["{D}"]}}}}"#
        );
        let (s, ids) = parse_config(c.as_bytes()).unwrap();
        assert_eq!(ids.len(), 1);
        assert_eq!(s.config.unwrap().user.as_deref(), Some("1000:1000"));
        assert!(parse_config(b"{\"rootfs\":{\"type\":\"x\",\"diff_ids\":[]}}").is_err());
        assert!(parse_config(b"{}").is_err());
    }
}
