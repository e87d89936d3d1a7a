//! `ImageStatus`: one image, or none (not an error: the kubelet asks before pulling).

use std::collections::HashMap;

use berth_api::v1::{ImageStatusRequest, ImageStatusResponse};
use tonic::Status;

use super::image_convert::{required_image, status_of, to_cri};
use crate::daemon::Daemon;

pub fn image_status(
    daemon: &Daemon,
    req: ImageStatusRequest,
) -> Result<ImageStatusResponse, Status> {
    let reference = required_image(req.image, "ImageStatus")?;
    let Some(image) = daemon.images().get(&reference).map_err(status_of)? else {
        return Ok(ImageStatusResponse::default());
    };
    let mut info = HashMap::new();
    if req.verbose {
        // crictl inspecti prints each value as JSON.
        let config: serde_json::Value =
            serde_json::from_slice(&image.config_json).map_err(|e| {
                Status::internal(format!("config of image {} is not JSON: {e}", image.id))
            })?;
        let detail = serde_json::json!({
            "id": image.id,
            "manifestDigest": image.manifest_digest,
            "layers": image.layers,
            "imageSpec": config,
        });
        info.insert("info".to_string(), detail.to_string());
    }
    Ok(ImageStatusResponse {
        image: Some(to_cri(&image)),
        info,
    })
}
