//! `ImportImages`: an archive streamed by the client (OCI layout tar or
//! `docker save` tarball) becomes images in the store, through the image
//! crate's import (the pull's verification and unpacking).

use berth_api::admin::v1::{ImportImagesRequest, ImportImagesResponse, ImportedImage};
use berth_image::ImportOptions;
use futures::StreamExt;
use tonic::{Status, Streaming};
use tracing::Instrument;

use crate::cri::image_convert::status_of;
use crate::daemon::Daemon;

pub async fn import_images(
    daemon: &Daemon,
    mut stream: Streaming<ImportImagesRequest>,
) -> Result<ImportImagesResponse, Status> {
    daemon.check_disk_space("ImportImages")?;
    let first = stream
        .message()
        .await?
        .ok_or_else(|| Status::invalid_argument("ImportImages: the request stream is empty"))?;
    let name = first.options.map(|o| o.name).filter(|n| !n.is_empty());
    let opts = ImportOptions { name };
    // The archive's bytes as one reader: the first message's chunk, then the rest.
    // A client that breaks off mid-stream fails the read, so the import fails.
    let rest = stream.map(|m| {
        m.map(|m| bytes::Bytes::from(m.chunk)).map_err(|s| {
            std::io::Error::other(format!("the client's stream failed: {}", s.message()))
        })
    });
    let chunks = futures::stream::iter([Ok(bytes::Bytes::from(first.chunk))]).chain(rest);
    let reader = tokio_util::io::StreamReader::new(chunks);
    let started = std::time::Instant::now();
    let images = daemon
        .images()
        .import(reader, &opts)
        .instrument(tracing::info_span!("import", name = ?opts.name))
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "image import failed");
            status_of(e)
        })?;
    for i in &images {
        tracing::info!(id = %i.id, tags = ?i.repo_tags, elapsed = ?started.elapsed(), "image imported");
    }
    Ok(ImportImagesResponse {
        images: images
            .into_iter()
            .map(|i| ImportedImage {
                id: i.id,
                repo_tags: i.repo_tags,
                repo_digests: i.repo_digests,
                size: i.size,
            })
            .collect(),
    })
}
