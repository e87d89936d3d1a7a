//! `RemovePodSandbox`: pins, state dir and record go; an unknown id is success
//! (the CRI: "must not return an error if the sandbox has already been removed").

use berth_api::v1::{RemovePodSandboxRequest, RemovePodSandboxResponse};
use tonic::Status;

use crate::daemon::Daemon;

#[tracing::instrument(skip_all, fields(pod = %req.pod_sandbox_id))]
pub async fn remove_pod_sandbox(
    daemon: &Daemon,
    req: RemovePodSandboxRequest,
) -> Result<RemovePodSandboxResponse, Status> {
    if req.pod_sandbox_id.is_empty() {
        return Err(Status::invalid_argument("pod_sandbox_id is required"));
    }
    daemon.sandboxes().remove(&req.pod_sandbox_id).await?;
    Ok(RemovePodSandboxResponse {})
}
