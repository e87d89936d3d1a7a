//! Fuzz check of what a registry sends before any layer: manifest and index
//! bodies, the platform choice in an index, image configs, digests and the
//! references built from them.
//!
//! Shared by the `manifest` fuzz target and the stable corpus replay test
//! (crates/image/tests/fuzz_corpus.rs). Checks: no panic; whatever parses
//! satisfies what the pull relies on without checking again (digests valid,
//! sizes not negative, a config media type that is an image config, a chosen
//! index entry that really runs on the platform); configs give one valid
//! diffID per `rootfs.diff_ids` entry; a valid digest or reference prints
//! back to a string that parses to the same value.

use berth_image::Platform;
use berth_image::digest::Digest;
use berth_image::manifest::{self, Descriptor, Manifest};
use berth_image::reference::ImageRef;
use berth_image::unpack::Compression;

fn platforms() -> [Platform; 5] {
    [
        Platform::new("linux", "amd64", None),
        Platform::new("linux", "arm64", Some("v8")),
        Platform::new("linux", "arm", Some("v7")),
        Platform::new("linux", "arm", Some("v5")),
        Platform::new("linux", "s390x", None),
    ]
}

fn check_descriptor(d: &Descriptor) {
    let parsed: Digest = d
        .digest
        .parse()
        .expect("accepted descriptor with a bad digest");
    assert_eq!(parsed.as_str(), d.digest);
    assert!(d.size >= 0, "accepted a negative size");
    // What the pull does with a layer media type must not panic either.
    let _ = Compression::from_media_type(&d.media_type);
}

pub fn run(data: &[u8]) {
    match manifest::parse_manifest(data) {
        Ok(Manifest::Index { manifests }) => {
            for m in &manifests {
                check_descriptor(m);
            }
            for p in platforms() {
                if let Some(i) = p.select(manifests.iter().map(Descriptor::platform_triple)) {
                    let (os, arch, variant) = manifests[i].platform_triple();
                    let best = p
                        .score(os, arch, variant)
                        .expect("chose an entry that cannot run");
                    // Nothing scores higher, and ties went to the earlier entry.
                    for (j, m) in manifests.iter().enumerate() {
                        let (os, arch, variant) = m.platform_triple();
                        if let Some(s) = p.score(os, arch, variant) {
                            assert!(s < best || (s == best && j >= i), "not the best entry");
                        }
                    }
                }
            }
        }
        Ok(Manifest::Image { config, layers }) => {
            check_descriptor(&config);
            assert!(
                config.media_type == manifest::OCI_CONFIG
                    || config.media_type == manifest::DOCKER_CONFIG,
                "accepted config media type {:?}",
                config.media_type
            );
            for l in &layers {
                check_descriptor(l);
            }
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }

    if let Ok((summary, ids)) = manifest::parse_config(data) {
        assert_eq!(summary.rootfs.kind, "layers");
        assert_eq!(ids.len(), summary.rootfs.diff_ids.len());
        for (id, raw) in ids.iter().zip(&summary.rootfs.diff_ids) {
            assert_eq!(id.as_str(), raw);
        }
    }
    // berthd parses the stored config again with oci-spec at CreateContainer.
    let _ = serde_json::from_slice::<oci_spec::image::ImageConfiguration>(data);

    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(d) = s.parse::<Digest>() {
        assert_eq!(d.to_string(), s);
        assert_eq!(d.hex().len(), 64);
    }
    if let Ok(r) = ImageRef::parse(s) {
        let printed = r.to_string();
        let again = ImageRef::parse(&printed).expect("a printed reference must parse");
        assert_eq!(again.to_string(), printed, "reference does not round-trip");
        let d = Digest::sha256_of(data);
        let pinned = r.with_digest(&d);
        ImageRef::parse(&pinned).expect("a reference with a digest must parse");
    }
}
