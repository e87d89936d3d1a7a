//! `Exec`: checks the container can run a streaming exec and returns the
//! streaming server's single-use URL for it; the session itself runs in
//! `crate::streaming::exec` when the client connects.

use berth_api::v1::{ExecRequest, ExecResponse};
use berth_stream::StreamingServer;
use tonic::Status;

use super::streaming_request_error;
use crate::daemon::Daemon;

#[tracing::instrument(skip_all, fields(container = %req.container_id, tty = req.tty))]
pub async fn exec(
    daemon: &Daemon,
    streaming: &StreamingServer,
    req: ExecRequest,
) -> Result<ExecResponse, Status> {
    if req.container_id.is_empty() {
        return Err(Status::invalid_argument("container_id is required"));
    }
    if req.cmd.is_empty() {
        return Err(Status::invalid_argument("cmd is required"));
    }
    let rec = daemon
        .containers()
        .streaming_target(&req.container_id, "exec in it")
        .await?;
    let url = streaming
        .get_exec(berth_stream::ExecRequest {
            container_id: rec.id,
            cmd: req.cmd,
            tty: req.tty,
            stdin: req.stdin,
            stdout: req.stdout,
            stderr: req.stderr,
        })
        .map_err(streaming_request_error)?;
    Ok(ExecResponse { url })
}
