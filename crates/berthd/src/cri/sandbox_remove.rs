//! `RemovePodSandbox`: the pod's containers and monitor go (stopped first),
//! then its network, pins, state dir and record; an unknown id is success
//! (the CRI: "must not return an error if the sandbox has already been removed").

use berth_api::v1::{RemovePodSandboxRequest, RemovePodSandboxResponse};
use tonic::Status;

use crate::daemon::Daemon;

#[tracing::instrument(skip_all, fields(pod = %req.pod_sandbox_id))]
pub async fn remove_pod_sandbox(
    daemon: &Daemon,
    req: RemovePodSandboxRequest,
) -> Result<RemovePodSandboxResponse, Status> {
    if req.pod_sandbox_id.is_empty() {
        return Err(Status::invalid_argument("pod_sandbox_id is required"));
    }
    let Some(change) = daemon.sandboxes().begin_change(&req.pod_sandbox_id).await else {
        tracing::debug!("RemovePodSandbox of an unknown sandbox: nothing to do");
        return Ok(RemovePodSandboxResponse {});
    };
    // A READY pod removed without a stop first stops, for NRI plugins too
    // (as containerd: its containers stop, the pod's stop is told, then
    // the removals are).
    if daemon.nri().is_some() {
        daemon.containers().stop_pod(change.pod_id()).await?;
        super::sandbox_stop::nri_stop(daemon, change.pod_id()).await;
    }
    // The pod's containers and its monitor go before its dirs.
    daemon.containers().remove_pod(change.pod_id()).await?;
    // The pod's last status goes with its deleted event: the record is gone
    // by the time subscribers are sent it.
    let last = daemon
        .sandboxes()
        .resolve(change.pod_id())
        .map(|r| super::sandbox_status::to_status(&r));
    if let (Some(host), Some(rec)) = (daemon.nri(), daemon.sandboxes().resolve(change.pod_id())) {
        host.flush().await;
        if let Err(e) = host
            .nri
            .remove_pod_sandbox(&crate::nri::convert::pod_of(&rec))
            .await
        {
            tracing::warn!(error = %e, "the pod is removed regardless");
        }
    }
    change.remove().await?;
    if let Some(status) = last {
        daemon.containers().emit_pod_event(
            status,
            berth_api::v1::ContainerEventType::ContainerDeletedEvent,
        );
    }
    Ok(RemovePodSandboxResponse {})
}
