//! `Attach`: checks the container is running and returns the streaming
//! server's single-use URL for attaching to it; the session runs in
//! `crate::streaming::attach` when the client connects.

use berth_api::v1::{AttachRequest, AttachResponse};
use berth_stream::StreamingServer;
use tonic::Status;

use super::streaming_request_error;
use crate::daemon::Daemon;

#[tracing::instrument(skip_all, fields(container = %req.container_id, tty = req.tty))]
pub async fn attach(
    daemon: &Daemon,
    streaming: &StreamingServer,
    req: AttachRequest,
) -> Result<AttachResponse, Status> {
    if req.container_id.is_empty() {
        return Err(Status::invalid_argument("container_id is required"));
    }
    let rec = daemon
        .containers()
        .streaming_target(&req.container_id, "attach to it")
        .await?;
    let url = streaming
        .get_attach(berth_stream::AttachRequest {
            container_id: rec.id,
            tty: req.tty,
            stdin: req.stdin,
            stdout: req.stdout,
            stderr: req.stderr,
        })
        .map_err(streaming_request_error)?;
    Ok(AttachResponse { url })
}
