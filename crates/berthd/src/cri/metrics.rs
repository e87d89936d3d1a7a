//! `ListMetricDescriptors` and `ListPodSandboxMetrics`: cAdvisor-named
//! metrics (cpu, memory, fs, I/O, processes, spec per container; network
//! per pod) for the kubelet's `/metrics/cadvisor` when it takes them from
//! the runtime. See [`crate::stats::metrics`] for names and labels.

use std::collections::{HashMap, HashSet};

use berth_api::v1::{
    ListMetricDescriptorsRequest, ListMetricDescriptorsResponse, ListPodSandboxMetricsRequest,
    ListPodSandboxMetricsResponse,
};
use tonic::Status;

use crate::daemon::Daemon;
use crate::sandbox::SandboxState;
use crate::stats::{self, targets};

pub fn list_metric_descriptors(
    _req: ListMetricDescriptorsRequest,
) -> ListMetricDescriptorsResponse {
    ListMetricDescriptorsResponse {
        descriptors: stats::metrics::descriptors(),
    }
}

/// Every READY pod (as containerd), with its containers.
#[tracing::instrument(skip_all)]
pub async fn list_pod_sandbox_metrics(
    daemon: &Daemon,
    _req: ListPodSandboxMetricsRequest,
) -> Result<ListPodSandboxMetricsResponse, Status> {
    let records = daemon.containers().records();
    let pods = daemon.sandboxes().list();
    {
        // The kubelet may scrape metrics without listing stats: forget the
        // layer sizes and CPU samples of what is gone here too.
        let live: HashSet<&str> = records.iter().map(|r| r.id.as_str()).collect();
        let pod_ids: HashSet<&str> = pods.iter().map(|p| p.id.as_str()).collect();
        stats::collector().prune(|c| live.contains(c), |p| pod_ids.contains(p));
    }
    // The records moved to their pods, not cloned again per pod.
    let mut by_pod: HashMap<String, Vec<_>> = HashMap::new();
    for r in records {
        by_pod.entry(r.pod_id.clone()).or_default().push(r);
    }
    let mut targets: Vec<_> = pods
        .into_iter()
        .filter(|p| p.state == SandboxState::Ready)
        .map(|p| {
            let mine = by_pod.remove(&p.id).unwrap_or_default();
            targets::pod(p, mine)
        })
        .collect();
    targets.sort_by_key(|t| t.rec.created_at);
    let containers: usize = targets.iter().map(|t| t.containers.len()).sum();
    let started = std::time::Instant::now();
    let pod_metrics = stats::off_threads(
        targets,
        |t| t.containers.len().max(1),
        stats::Collector::pod_metrics,
    )
    .await?;
    tracing::debug!(
        pods = pod_metrics.len(),
        containers,
        elapsed_us = started.elapsed().as_micros() as u64,
        "pod sandbox metrics collected"
    );
    Ok(ListPodSandboxMetricsResponse { pod_metrics })
}
