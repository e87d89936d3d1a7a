//! `UpdateContainerResources`: `linux` resources applied to the live cgroup
//! (by the pod's monitor, which knows the container's cgroup path).

use berth_api::v1::{UpdateContainerResourcesRequest, UpdateContainerResourcesResponse};
use tonic::Status;

use crate::daemon::Daemon;

#[tracing::instrument(skip_all, fields(container = %req.container_id))]
pub async fn update_container_resources(
    daemon: &Daemon,
    req: UpdateContainerResourcesRequest,
) -> Result<UpdateContainerResourcesResponse, Status> {
    if req.container_id.is_empty() {
        return Err(Status::invalid_argument("container_id is required"));
    }
    // Windows resources mean nothing here; no linux part: nothing to do.
    if let Some(linux) = &req.linux {
        daemon
            .containers()
            .update_resources(&req.container_id, linux)
            .await?;
    }
    Ok(UpdateContainerResourcesResponse {})
}
