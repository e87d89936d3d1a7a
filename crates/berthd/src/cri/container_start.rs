//! `StartContainer`: the monitor starts the created container's process.

use berth_api::v1::{StartContainerRequest, StartContainerResponse};
use tonic::Status;

use crate::daemon::Daemon;

#[tracing::instrument(skip_all, fields(container = %req.container_id))]
pub async fn start_container(
    daemon: &Daemon,
    req: StartContainerRequest,
) -> Result<StartContainerResponse, Status> {
    if req.container_id.is_empty() {
        return Err(Status::invalid_argument("container_id is required"));
    }
    daemon.containers().start(&req.container_id).await?;
    Ok(StartContainerResponse {})
}
