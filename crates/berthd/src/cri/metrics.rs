//! `ListMetricDescriptors` and `ListPodSandboxMetrics`: cAdvisor-named
//! metrics (cpu, memory, oom, processes per container; network per pod) for
//! the kubelet's `/metrics/cadvisor` when it takes them from the runtime.
//! See [`crate::stats::metrics`] for names and labels.

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
    let mut targets: Vec<_> = daemon
        .sandboxes()
        .list()
        .into_iter()
        .filter(|p| p.state == SandboxState::Ready)
        .map(|p| {
            let mine: Vec<_> = records
                .iter()
                .filter(|r| r.pod_id == p.id)
                .cloned()
                .collect();
            targets::pod(p, mine)
        })
        .collect();
    targets.sort_by_key(|t| t.rec.created_at);
    let pod_metrics =
        stats::off_thread(move |c| targets.iter().map(|t| c.pod_metrics(t)).collect()).await?;
    Ok(ListPodSandboxMetricsResponse { pod_metrics })
}
