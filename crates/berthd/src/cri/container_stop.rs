//! `StopContainer`: stop signal, SIGKILL after `timeout` seconds (0: at once).
//! Stopping an exited or unknown container is a success: the kubelet retries
//! stops, and the CRI idempotence rules (critest) expect no error.

use std::time::Duration;

use berth_api::v1::{StopContainerRequest, StopContainerResponse};
use tonic::Status;

use crate::daemon::Daemon;

#[tracing::instrument(skip_all, fields(container = %req.container_id, timeout = req.timeout))]
pub async fn stop_container(
    daemon: &Daemon,
    req: StopContainerRequest,
) -> Result<StopContainerResponse, Status> {
    if req.container_id.is_empty() {
        return Err(Status::invalid_argument("container_id is required"));
    }
    let timeout = Duration::from_secs(req.timeout.max(0) as u64);
    match daemon.containers().stop(&req.container_id, timeout).await {
        Ok(()) => {}
        Err(crate::container::ContainerError::NotFound(msg)) => {
            tracing::debug!(%msg, "stop of an unknown container: nothing to do");
        }
        Err(e) => return Err(e.into()),
    }
    Ok(StopContainerResponse {})
}
