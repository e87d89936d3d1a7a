//! `UpdatePodSandboxResources`: called by the kubelet after it resized the
//! pod-level cgroup (in-place pod resize); the pod's stored config takes the
//! new overhead and resources. Unknown pod: NotFound (the kubelet treats
//! this call as best effort and goes on).

use berth_api::v1::{UpdatePodSandboxResourcesRequest, UpdatePodSandboxResourcesResponse};
use tonic::Status;

use crate::daemon::Daemon;

#[tracing::instrument(skip_all, fields(pod = %req.pod_sandbox_id))]
pub async fn update_pod_sandbox_resources(
    daemon: &Daemon,
    req: UpdatePodSandboxResourcesRequest,
) -> Result<UpdatePodSandboxResourcesResponse, Status> {
    if req.pod_sandbox_id.is_empty() {
        return Err(Status::invalid_argument("pod_sandbox_id is required"));
    }
    daemon
        .sandboxes()
        .update_resources(&req.pod_sandbox_id, req.overhead, req.resources)
        .await?;
    Ok(UpdatePodSandboxResourcesResponse {})
}
