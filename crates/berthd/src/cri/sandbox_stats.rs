//! `PodSandboxStats`: the pod's cpu, memory and process count (from its own
//! cgroup, or summed over its containers when it has none), the network of
//! its namespace, and its containers' stats. A NOTREADY pod still answers,
//! with what is readable.

use berth_api::v1::{PodSandboxStatsRequest, PodSandboxStatsResponse};
use tonic::Status;

use crate::daemon::Daemon;
use crate::stats::{self, targets};

#[tracing::instrument(skip_all, fields(pod = %req.pod_sandbox_id))]
pub async fn pod_sandbox_stats(
    daemon: &Daemon,
    req: PodSandboxStatsRequest,
) -> Result<PodSandboxStatsResponse, Status> {
    if req.pod_sandbox_id.is_empty() {
        return Err(Status::invalid_argument("pod_sandbox_id is required"));
    }
    let pod = super::pod_or_not_found(daemon, &req.pod_sandbox_id)?;
    let target = targets::pod(pod, daemon.containers().records());
    let stats = stats::off_thread(move |c| c.pod(&target)).await?;
    Ok(PodSandboxStatsResponse { stats: Some(stats) })
}
