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
    if let Some(host) = daemon.nri() {
        // Plugins may refuse the start; they are told before it happens.
        let rec = daemon
            .containers()
            .resolve(&req.container_id)
            .ok_or_else(|| {
                Status::not_found(format!("container {} not found", req.container_id))
            })?;
        if let Some(pod) = daemon.sandboxes().resolve(&rec.pod_id) {
            host.nri
                .start_container(
                    &crate::nri::convert::pod_of(&pod),
                    &crate::nri::convert::container_of(&rec),
                )
                .await
                .map_err(crate::nri::refused)?;
        }
    }
    daemon.containers().start(&req.container_id).await?;
    Ok(StartContainerResponse {})
}
