//! `RemoveImage`: by id (every tag), tag or digest; unknown images are success.

use berth_api::v1::{RemoveImageRequest, RemoveImageResponse};
use tonic::Status;

use super::image_convert::{required_image, status_of};
use crate::daemon::Daemon;

pub fn remove_image(
    daemon: &Daemon,
    req: RemoveImageRequest,
) -> Result<RemoveImageResponse, Status> {
    let reference = required_image(req.image, "RemoveImage")?;
    daemon.images().remove(&reference).map_err(status_of)?;
    Ok(RemoveImageResponse {})
}
