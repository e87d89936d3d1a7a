//! `PodSandboxStatus`: the record as CRI status, with the statuses of the
//! pod's containers; `verbose` adds the record as JSON under "info".
//!
//! `timestamp` stays 0. A kubelet (v1.37) with EventedPLEG on that gets a
//! non-zero timestamp takes the pod's containers from
//! `containers_statuses` but leaves its "active" statuses (the containers
//! of the current sandbox) empty, so it never sees an init container as
//! done and runs init-1 again and again (the cluster test
//! init_containers_run_in_order: 36 restarts in 90 s). With 0 it asks
//! ListContainers and ContainerStatus, as without the gate; its Evented
//! PLEG only uses `GetContainerEvents` as a hint to relist a pod.

use berth_api::v1::{
    LinuxPodSandboxStatus, Namespace, PodIp, PodSandboxNetworkStatus, PodSandboxStatus,
    PodSandboxStatusRequest, PodSandboxStatusResponse,
};
use tonic::Status;

use crate::daemon::Daemon;
use crate::sandbox::SandboxRecord;

#[tracing::instrument(skip_all, fields(pod = %req.pod_sandbox_id))]
pub async fn pod_sandbox_status(
    daemon: &Daemon,
    req: PodSandboxStatusRequest,
) -> Result<PodSandboxStatusResponse, Status> {
    if req.pod_sandbox_id.is_empty() {
        return Err(Status::invalid_argument("pod_sandbox_id is required"));
    }
    let rec = super::pod_or_not_found(daemon, &req.pod_sandbox_id)?;
    let containers_statuses =
        super::container_status::pod_statuses(daemon.containers().list_pod(&rec.id).await?);
    let mut info = std::collections::HashMap::new();
    if req.verbose {
        let json = serde_json::to_string(&rec)
            .map_err(|e| Status::internal(format!("cannot encode sandbox record: {e}")))?;
        info.insert("info".to_string(), json);
    }
    Ok(PodSandboxStatusResponse {
        status: Some(to_status(&rec)),
        info,
        containers_statuses,
        // See the module's comment.
        timestamp: 0,
    })
}

pub(crate) fn to_status(rec: &SandboxRecord) -> PodSandboxStatus {
    PodSandboxStatus {
        id: rec.id.clone(),
        metadata: Some(rec.metadata()),
        state: rec.state.to_cri() as i32,
        created_at: rec.created_at,
        // eth0's IPs from the CNI ADD, IPv4 first (none for a loopback-only
        // pod; a host-network pod's IP is the node's, which the kubelet knows).
        network: Some(PodSandboxNetworkStatus {
            ip: rec.ips.first().cloned().unwrap_or_default(),
            additional_ips: rec
                .ips
                .iter()
                .skip(1)
                .map(|ip| PodIp { ip: ip.clone() })
                .collect(),
        }),
        linux: Some(LinuxPodSandboxStatus {
            namespaces: Some(Namespace {
                options: Some(rec.namespace_modes.to_cri()),
            }),
        }),
        labels: super::string_map(&rec.labels),
        annotations: super::string_map(&rec.annotations),
        runtime_handler: rec.runtime_handler.clone(),
    }
}
