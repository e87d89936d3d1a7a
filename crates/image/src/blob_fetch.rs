//! GET of a blob (config or layer) by digest, its size held to the
//! descriptor's: a longer announced length is refused before the body is
//! read, and readers stop at the descriptor's size.
//!
//! The digest is checked by the caller over what it read (the config's
//! hash, the unpacker's for layers).

use crate::manifest::Descriptor;
use crate::registry::{RegErr, RegErrKind};
use crate::session::{Session, read_capped};

/// The blob's answer, ready to be read in chunks.
pub(crate) async fn open_blob(
    s: &Session,
    digest: &str,
    size: u64,
) -> Result<reqwest::Response, RegErr> {
    let res = s.get(&format!("blobs/{digest}"), None).await?;
    if let Some(len) = res.content_length()
        && len != size
    {
        return Err(RegErr::new(
            RegErrKind::Digest,
            format!("registry sends {len} bytes for blob {digest}, the manifest says {size}"),
        ));
    }
    Ok(res)
}

/// A small blob (the config) read whole; exactly its descriptor's size.
pub(crate) async fn fetch_small_blob(s: &Session, desc: &Descriptor) -> Result<Vec<u8>, RegErr> {
    let size = u64::try_from(desc.size).map_err(|_| {
        RegErr::new(
            RegErrKind::Protocol,
            format!("blob {} has a negative size", desc.digest),
        )
    })?;
    let mut res = open_blob(s, &desc.digest, size).await?;
    // The shared capped read; past the descriptor's size is a wrong blob.
    let buf = read_capped(&mut res, size as usize, true)
        .await
        .map_err(|e| match e.kind {
            RegErrKind::Unsupported => RegErr::new(
                RegErrKind::Digest,
                format!(
                    "blob {} is larger than its descriptor's {size} bytes",
                    desc.digest
                ),
            ),
            _ => e,
        })?;
    if buf.len() as u64 != size {
        return Err(RegErr::new(
            RegErrKind::Digest,
            format!(
                "blob {} has {} bytes, its descriptor says {size}",
                desc.digest,
                buf.len()
            ),
        ));
    }
    Ok(buf)
}
