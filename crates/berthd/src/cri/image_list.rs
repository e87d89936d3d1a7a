//! `ListImages`: every image, or those matching the filter's reference.

use berth_api::v1::{ListImagesRequest, ListImagesResponse};
use tonic::Status;

use super::image_convert::{status_of, to_cri};
use crate::daemon::Daemon;

pub fn list_images(daemon: &Daemon, req: ListImagesRequest) -> Result<ListImagesResponse, Status> {
    let wanted = req
        .filter
        .and_then(|f| f.image)
        .map(|s| s.image)
        .filter(|s| !s.is_empty());
    let images = match wanted {
        Some(reference) => daemon
            .images()
            .get(&reference)
            .map_err(status_of)?
            .into_iter()
            .collect(),
        None => daemon.images().list().map_err(status_of)?,
    };
    Ok(ListImagesResponse {
        images: images.iter().map(to_cri).collect(),
    })
}
