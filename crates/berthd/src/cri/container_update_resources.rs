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
        let nri = nri_context(daemon, &req.container_id);
        let mut plugin_updates = Vec::new();
        if let (Some(host), Some((pod, ctr))) = (daemon.nri(), &nri) {
            plugin_updates = host
                .nri
                .update_container(pod, ctr, &crate::nri::convert::from_cri(linux))
                .await
                .map_err(crate::nri::refused)?;
        }
        daemon
            .containers()
            .update_resources(&req.container_id, linux)
            .await?;
        if let (Some(host), Some((pod, ctr))) = (daemon.nri(), &nri) {
            crate::nri::apply_updates(daemon.containers(), plugin_updates).await;
            host.nri.post_update_container(pod, ctr).await;
        }
    }
    Ok(UpdateContainerResourcesResponse {})
}

/// The pod and container as NRI plugins see them, when NRI is on.
fn nri_context(
    daemon: &Daemon,
    id: &str,
) -> Option<(berth_nri::api::PodSandbox, berth_nri::api::Container)> {
    daemon.nri()?;
    let rec = daemon.containers().resolve(id)?;
    let pod = daemon.sandboxes().resolve(&rec.pod_id)?;
    Some((
        crate::nri::convert::pod_of(&pod),
        crate::nri::convert::container_of(&rec),
    ))
}
