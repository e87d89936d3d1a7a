//! `ListContainerStats`: stats of every container the filter selects,
//! exited ones included (with what is still readable). Filters as
//! containerd: an id or pod id is resolved (exact or unique prefix) and then
//! matched exactly, so an unknown one selects nothing; labels must all match.
//! Reads records as last known, without a monitor call: the kubelet polls
//! this every ~10 s.

use std::collections::{HashMap, HashSet};

use berth_api::v1::{ListContainerStatsRequest, ListContainerStatsResponse};
use tonic::Status;

use crate::daemon::Daemon;
use crate::stats::{self, targets};

#[tracing::instrument(skip_all)]
pub async fn list_container_stats(
    daemon: &Daemon,
    req: ListContainerStatsRequest,
) -> Result<ListContainerStatsResponse, Status> {
    let f = req.filter.unwrap_or_default();
    let containers = daemon.containers();
    let sandboxes = daemon.sandboxes();
    let id = (!f.id.is_empty()).then(|| containers.resolve(&f.id).map_or(f.id.clone(), |r| r.id));
    let pod_id = (!f.pod_sandbox_id.is_empty()).then(|| {
        sandboxes
            .resolve(&f.pod_sandbox_id)
            .map_or(f.pod_sandbox_id.clone(), |p| p.id)
    });
    let mut records = containers.records();
    let parents: HashMap<String, String> = sandboxes
        .list()
        .into_iter()
        .map(|p| (p.id, p.cgroup_parent))
        .collect();
    let live: HashSet<String> = records.iter().map(|r| r.id.clone()).collect();
    stats::collector().prune(|c| live.contains(c), |p| parents.contains_key(p));

    records.retain(|r| {
        id.as_ref().is_none_or(|id| &r.id == id)
            && pod_id.as_ref().is_none_or(|p| &r.pod_id == p)
            && f.label_selector
                .iter()
                .all(|(k, v)| r.labels.get(k) == Some(v))
    });
    records.sort_by_key(|r| r.created_at);
    let targets: Vec<_> = records
        .into_iter()
        .map(|r| {
            let parent = parents.get(&r.pod_id).cloned().unwrap_or_default();
            targets::container(r, &parent)
        })
        .collect();
    let started = std::time::Instant::now();
    let stats: Vec<_> =
        stats::off_thread(move |c| targets.iter().map(|t| c.container(t)).collect()).await?;
    tracing::debug!(
        containers = stats.len(),
        elapsed_us = started.elapsed().as_micros() as u64,
        "container stats collected"
    );
    Ok(ListContainerStatsResponse { stats })
}
