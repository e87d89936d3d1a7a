//! `StopPodSandbox`: idempotent; an unknown sandbox is success (as containerd and CRI-O).

use berth_api::v1::{StopPodSandboxRequest, StopPodSandboxResponse};
use tonic::Status;

use crate::daemon::Daemon;

#[tracing::instrument(skip_all, fields(pod = %req.pod_sandbox_id))]
pub async fn stop_pod_sandbox(
    daemon: &Daemon,
    req: StopPodSandboxRequest,
) -> Result<StopPodSandboxResponse, Status> {
    if req.pod_sandbox_id.is_empty() {
        return Err(Status::invalid_argument("pod_sandbox_id is required"));
    }
    daemon.sandboxes().stop(&req.pod_sandbox_id).await?;
    Ok(StopPodSandboxResponse {})
}
