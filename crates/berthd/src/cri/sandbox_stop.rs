//! `StopPodSandbox`: the pod's containers are killed, then its init and
//! network go and it is NOTREADY. Idempotent; an unknown sandbox is success
//! (the CRI: "must not return an error if all relevant resources have
//! already been reclaimed", as containerd and CRI-O do).

use berth_api::v1::{StopPodSandboxRequest, StopPodSandboxResponse};
use tonic::Status;

use crate::daemon::Daemon;

#[tracing::instrument(skip_all, fields(pod = %req.pod_sandbox_id))]
pub async fn stop_pod_sandbox(
    daemon: &Daemon,
    req: StopPodSandboxRequest,
) -> Result<StopPodSandboxResponse, Status> {
    if req.pod_sandbox_id.is_empty() {
        return Err(Status::invalid_argument("pod_sandbox_id is required"));
    }
    let Some(change) = daemon.sandboxes().begin_change(&req.pod_sandbox_id).await else {
        tracing::debug!("StopPodSandbox of an unknown sandbox: nothing to do");
        return Ok(StopPodSandboxResponse {});
    };
    // Containers die with the pod; done even for a NOTREADY pod, so a
    // retried StopPodSandbox finishes a stop that failed midway.
    let pod_id = change.pod_id().to_string();
    daemon.containers().stop_pod(&pod_id).await?;
    crate::failpoint::hit("sandbox-stop-containers-stopped");
    change.stop().await?;
    if let Some(rec) = daemon.sandboxes().resolve(&pod_id) {
        daemon.containers().emit_pod_event(
            super::sandbox_status::to_status(&rec),
            berth_api::v1::ContainerEventType::ContainerStoppedEvent,
        );
    }
    // NOTREADY now: no container can be created in it, so its monitor goes.
    daemon.containers().release_monitor(&pod_id).await;
    Ok(StopPodSandboxResponse {})
}
