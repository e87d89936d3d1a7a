//! `PortForward`: checks the pod is ready and returns the streaming
//! server's single-use URL for forwarding to its ports; connections are
//! made in `crate::streaming::port_forward` when the client opens them.

use berth_api::v1::{PortForwardRequest, PortForwardResponse};
use berth_stream::StreamingServer;
use tonic::Status;

use super::streaming_request_error;
use crate::daemon::Daemon;
use crate::sandbox::SandboxState;

#[tracing::instrument(skip_all, fields(pod = %req.pod_sandbox_id, ports = ?req.port))]
pub async fn port_forward(
    daemon: &Daemon,
    streaming: &StreamingServer,
    req: PortForwardRequest,
) -> Result<PortForwardResponse, Status> {
    if req.pod_sandbox_id.is_empty() {
        return Err(Status::invalid_argument("pod_sandbox_id is required"));
    }
    let ports = req
        .port
        .iter()
        .map(|&p| {
            u16::try_from(p)
                .ok()
                .filter(|&p| p != 0)
                .ok_or_else(|| Status::invalid_argument(format!("port {p} is not in 1-65535")))
        })
        .collect::<Result<Vec<u16>, Status>>()?;
    let rec = super::pod_or_not_found(daemon, &req.pod_sandbox_id)?;
    if rec.state != SandboxState::Ready {
        return Err(Status::failed_precondition(format!(
            "pod sandbox {} is not ready: cannot forward ports to it",
            rec.id
        )));
    }
    let url = streaming
        .get_port_forward(berth_stream::PortForwardRequest {
            pod_sandbox_id: rec.id,
            ports,
        })
        .map_err(streaming_request_error)?;
    Ok(PortForwardResponse { url })
}
