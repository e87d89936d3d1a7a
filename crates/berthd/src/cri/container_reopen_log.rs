//! `ReopenContainerLog`: the kubelet rotated the log file; the monitor
//! reopens it. The container must be running (as containerd).

use berth_api::v1::{ReopenContainerLogRequest, ReopenContainerLogResponse};
use tonic::Status;

use crate::daemon::Daemon;

#[tracing::instrument(skip_all, fields(container = %req.container_id))]
pub async fn reopen_container_log(
    daemon: &Daemon,
    req: ReopenContainerLogRequest,
) -> Result<ReopenContainerLogResponse, Status> {
    if req.container_id.is_empty() {
        return Err(Status::invalid_argument("container_id is required"));
    }
    daemon.containers().reopen_log(&req.container_id).await?;
    Ok(ReopenContainerLogResponse {})
}
