//! `CreateContainer`: overlay rootfs, OCI bundle, created by the pod's monitor.

use berth_api::v1::{CreateContainerRequest, CreateContainerResponse};
use tonic::Status;

use crate::daemon::Daemon;

#[tracing::instrument(skip_all, fields(pod = %req.pod_sandbox_id))]
pub async fn create_container(
    daemon: &Daemon,
    req: CreateContainerRequest,
) -> Result<CreateContainerResponse, Status> {
    if req.pod_sandbox_id.is_empty() {
        return Err(Status::invalid_argument("pod_sandbox_id is required"));
    }
    let config = req
        .config
        .ok_or_else(|| Status::invalid_argument("config is required"))?;
    daemon.check_disk_space("CreateContainer")?;
    let pod = super::pod_or_not_found(daemon, &req.pod_sandbox_id)?;
    // A plugin connecting meanwhile is synchronized before or after this
    // container, never without it.
    let _sync = daemon.nri_sync_block().await;
    // Used when `image.image` names a checkpoint archive (a restore).
    let checkpoint = &daemon.config().checkpoint;
    let criu = crate::container::CriuOptions {
        criu: checkpoint.criu_path.clone(),
        timeout: std::time::Duration::from_secs(checkpoint.default_timeout_secs),
    };
    let rec = daemon.containers().create(pod, config, &criu).await?;
    Ok(CreateContainerResponse {
        container_id: rec.id,
    })
}
