//! GET of a manifest or index, at most [`MAX_MANIFEST_SIZE`] bytes.
//!
//! A `Content-Length` over the limit is refused before the body is read,
//! and the body is read in chunks and cut off at the limit (a missing or
//! lying length changes nothing).

use crate::registry::{RegErr, RegErrKind};
use crate::session::{Session, read_capped};

/// Largest manifest or index read (what containerd allows, and the limit
/// of the reference registry's manifest uploads).
pub const MAX_MANIFEST_SIZE: usize = 4 << 20;

/// The manifest `image` names (by digest when it has one), as bytes.
pub(crate) async fn get_manifest(
    s: &Session,
    image: &oci_client::Reference,
    accept: &[&str],
) -> Result<Vec<u8>, RegErr> {
    let which = image
        .digest()
        .or(image.tag())
        .unwrap_or(crate::reference::DEFAULT_TAG);
    let mut res = s
        .get(&format!("manifests/{which}"), Some(&accept.join(", ")))
        .await?;
    if let Some(n) = res.content_length()
        && n > MAX_MANIFEST_SIZE as u64
    {
        return Err(too_large(&format!("{n} bytes")));
    }
    read_capped(&mut res, MAX_MANIFEST_SIZE, true)
        .await
        .map_err(|e| match e.kind {
            RegErrKind::Unsupported => too_large("more than that"),
            _ => e,
        })
}

fn too_large(size: &str) -> RegErr {
    RegErr::new(
        RegErrKind::Unsupported,
        format!("the manifest is larger than the {MAX_MANIFEST_SIZE} byte limit ({size})"),
    )
}
