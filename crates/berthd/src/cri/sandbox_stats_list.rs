//! `ListPodSandboxStats`: stats of the READY pods the filter selects (as
//! containerd, a stopped pod is left out). The id is resolved (exact or
//! unique prefix; unknown selects nothing); labels must all match.

use std::collections::HashSet;

use berth_api::v1::{ListPodSandboxStatsRequest, ListPodSandboxStatsResponse};
use tonic::Status;

use crate::daemon::Daemon;
use crate::sandbox::SandboxState;
use crate::stats::{self, targets};

#[tracing::instrument(skip_all)]
pub async fn list_pod_sandbox_stats(
    daemon: &Daemon,
    req: ListPodSandboxStatsRequest,
) -> Result<ListPodSandboxStatsResponse, Status> {
    let f = req.filter.unwrap_or_default();
    let sandboxes = daemon.sandboxes();
    let id = if f.id.is_empty() {
        None
    } else {
        match sandboxes.resolve(&f.id) {
            Some(p) => Some(p.id),
            None => return Ok(ListPodSandboxStatsResponse { stats: vec![] }),
        }
    };
    let pods = sandboxes.list();
    let records = daemon.containers().records();
    let live: HashSet<&str> = records.iter().map(|r| r.id.as_str()).collect();
    let pod_ids: HashSet<&str> = pods.iter().map(|p| p.id.as_str()).collect();
    stats::collector().prune(|c| live.contains(c), |p| pod_ids.contains(p));

    let mut targets: Vec<_> = pods
        .iter()
        .filter(|p| p.state == SandboxState::Ready)
        .filter(|p| id.as_ref().is_none_or(|id| &p.id == id))
        .filter(|p| {
            f.label_selector
                .iter()
                .all(|(k, v)| p.labels.get(k) == Some(v))
        })
        .map(|p| {
            targets::pod(
                p.clone(),
                records.iter().filter(|r| r.pod_id == p.id).cloned(),
            )
        })
        .collect();
    targets.sort_by_key(|t| t.rec.created_at);
    let stats = stats::off_thread(move |c| targets.iter().map(|t| c.pod(t)).collect()).await?;
    Ok(ListPodSandboxStatsResponse { stats })
}
