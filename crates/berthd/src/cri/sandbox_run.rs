//! `RunPodSandbox`: a pod with pinned namespaces, no pause container.

use berth_api::v1::{ContainerEventType, RunPodSandboxRequest, RunPodSandboxResponse};
use tonic::Status;

use crate::daemon::Daemon;

pub async fn run_pod_sandbox(
    daemon: &Daemon,
    req: RunPodSandboxRequest,
) -> Result<RunPodSandboxResponse, Status> {
    let config = req
        .config
        .ok_or_else(|| Status::invalid_argument("config is required"))?;
    daemon.check_disk_space("RunPodSandbox")?;
    // A plugin connecting meanwhile is synchronized before or after this
    // pod, never without it.
    let _sync = daemon.nri_sync_block().await;
    let rec = daemon
        .sandboxes()
        .run(
            config,
            req.runtime_handler,
            &daemon.config().runtime_handlers,
            &daemon.pod_cidr(),
        )
        .await
        .inspect_err(|e| tracing::warn!(error = %e, "RunPodSandbox failed"))?;
    let status = super::sandbox_status::to_status(&rec);
    for kind in [
        ContainerEventType::ContainerCreatedEvent,
        ContainerEventType::ContainerStartedEvent,
    ] {
        daemon.containers().emit_pod_event(status.clone(), kind);
    }
    Ok(RunPodSandboxResponse {
        pod_sandbox_id: rec.id,
    })
}
