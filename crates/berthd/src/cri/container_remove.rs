//! `RemoveContainer`: stops if needed; rootfs, upper dir, lease and record
//! go. An unknown id is success (as containerd).

use berth_api::v1::{RemoveContainerRequest, RemoveContainerResponse};
use tonic::Status;

use crate::daemon::Daemon;

#[tracing::instrument(skip_all, fields(container = %req.container_id))]
pub async fn remove_container(
    daemon: &Daemon,
    req: RemoveContainerRequest,
) -> Result<RemoveContainerResponse, Status> {
    if req.container_id.is_empty() {
        return Err(Status::invalid_argument("container_id is required"));
    }
    daemon.containers().remove(&req.container_id).await?;
    Ok(RemoveContainerResponse {})
}
