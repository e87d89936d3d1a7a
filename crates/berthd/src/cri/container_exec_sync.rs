//! `ExecSync`: runs a command in a running container and returns its output
//! and exit code. At the deadline the process is killed and the answer is
//! `DeadlineExceeded`, which the kubelet reads as a probe timeout (as
//! containerd's `context.DeadlineExceeded`).

use std::time::Duration;

use berth_api::v1::{ExecSyncRequest, ExecSyncResponse};
use tonic::Status;

use crate::container::exec::ExecOutcome;
use crate::daemon::Daemon;

#[tracing::instrument(skip_all, fields(container = %req.container_id, timeout = req.timeout))]
pub async fn exec_sync(daemon: &Daemon, req: ExecSyncRequest) -> Result<ExecSyncResponse, Status> {
    if req.container_id.is_empty() {
        return Err(Status::invalid_argument("container_id is required"));
    }
    let timeout = Duration::from_secs(req.timeout.max(0) as u64);
    let cmd = req.cmd.clone();
    match daemon
        .containers()
        .exec_sync(&req.container_id, req.cmd, timeout)
        .await?
    {
        ExecOutcome::Exited {
            exit_code,
            stdout,
            stderr,
        } => Ok(ExecSyncResponse {
            stdout,
            stderr,
            exit_code,
        }),
        ExecOutcome::TimedOut => Err(Status::deadline_exceeded(format!(
            "command {cmd:?} in container {} timed out after {timeout:?}",
            req.container_id
        ))),
    }
}
