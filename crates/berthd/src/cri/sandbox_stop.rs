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
    nri_stop(daemon, &pod_id).await;
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

/// Tells NRI plugins a READY pod stops, once its containers' stops reached
/// them; a NOTREADY pod was told already (a repeated stop tells nothing).
/// The pod stops whatever a plugin says.
pub async fn nri_stop(daemon: &Daemon, pod_id: &str) {
    let Some(host) = daemon.nri() else { return };
    let Some(rec) = daemon.sandboxes().resolve(pod_id) else {
        return;
    };
    if rec.state != crate::sandbox::SandboxState::Ready {
        return;
    }
    host.flush().await;
    if let Err(e) = host
        .nri
        .stop_pod_sandbox(&crate::nri::convert::pod_of(&rec))
        .await
    {
        tracing::warn!(error = %e, "the pod stops regardless");
    }
}
