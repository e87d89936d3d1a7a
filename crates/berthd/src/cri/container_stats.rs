//! `ContainerStats`: one container's cpu, memory, swap and writable layer,
//! read from its cgroup and upper dir (see [`crate::stats`]).

use berth_api::v1::{ContainerStatsRequest, ContainerStatsResponse};
use tonic::Status;

use crate::daemon::Daemon;
use crate::stats::{self, targets};

#[tracing::instrument(skip_all, fields(container = %req.container_id))]
pub async fn container_stats(
    daemon: &Daemon,
    req: ContainerStatsRequest,
) -> Result<ContainerStatsResponse, Status> {
    if req.container_id.is_empty() {
        return Err(Status::invalid_argument("container_id is required"));
    }
    let rec = daemon
        .containers()
        .resolve(&req.container_id)
        .ok_or_else(|| Status::not_found(format!("container {} not found", req.container_id)))?;
    let parent = daemon
        .sandboxes()
        .resolve(&rec.pod_id)
        .map(|p| p.cgroup_parent)
        .unwrap_or_default();
    let target = targets::container(rec, &parent);
    let stats = stats::off_thread(move |c| c.container(&target)).await?;
    Ok(ContainerStatsResponse { stats: Some(stats) })
}
