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
    let nri = daemon
        .nri()
        .zip(daemon.sandboxes().resolve(&req.pod_sandbox_id));
    if let Some((host, rec)) = &nri {
        // Plugins may refuse the resize; they are told before it is stored.
        let convert = |r: &Option<berth_api::v1::LinuxContainerResources>| {
            r.as_ref().map(crate::nri::convert::from_cri)
        };
        host.nri
            .update_pod_sandbox(
                &crate::nri::convert::pod_of(rec),
                convert(&req.overhead).as_ref(),
                convert(&req.resources).as_ref(),
            )
            .await
            .map_err(crate::nri::refused)?;
    }
    let rec = daemon
        .sandboxes()
        .update_resources(&req.pod_sandbox_id, req.overhead, req.resources)
        .await?;
    if let Some((host, _)) = &nri {
        host.nri
            .post_update_pod_sandbox(&crate::nri::convert::pod_of(&rec))
            .await;
    }
    Ok(UpdatePodSandboxResourcesResponse {})
}
