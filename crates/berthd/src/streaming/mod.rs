//! berthd's side of the streaming server (`berth_stream`): the
//! [`StreamRuntime`] that runs a streaming exec or an attach through the
//! pod's monitor and opens port-forward connections in the pod's network
//! namespace. The CRI Exec/Attach/PortForward RPCs only issue URLs
//! (`cri::container_exec` and friends); the sessions run here.
//!
//! Exec and attach: the monitor hands the process's stdio fds over its
//! socket (`berth_monitor_protocol::fds`) and berthd moves the bytes
//! itself, so they never hop through the monitor's single thread.

mod attach;
mod exec;
mod fd_io;
mod port_forward;

use std::sync::Arc;
use std::time::Duration;

use berth_monitor_protocol::{ErrorCode, Request, Response};
use berth_stream::{
    AsyncReadWrite, AttachRequest, BoxFuture, ExecRequest, Io, RuntimeError, StreamRuntime,
    StreamingServer,
};
use tokio::net::UnixStream;

use crate::config::StreamingConfig;
use crate::container::{ContainerRecord, monitor};
use crate::daemon::Daemon;
use crate::error::RuntimeError as BerthError;

/// How long the monitor may take to answer a streaming request (start the
/// exec, set up the attach).
const MONITOR_ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// Starts the streaming server berthd's Exec/Attach/PortForward URLs point at.
pub async fn start(
    config: &StreamingConfig,
    daemon: Arc<Daemon>,
) -> Result<StreamingServer, berth_stream::StartError> {
    let runtime = Arc::new(BerthStreams { daemon });
    StreamingServer::start(config.to_server_config(), runtime).await
}

/// The [`StreamRuntime`] of berthd.
struct BerthStreams {
    daemon: Arc<Daemon>,
}

impl StreamRuntime for BerthStreams {
    fn exec(&self, req: ExecRequest, io: Io) -> BoxFuture<'_, Result<i32, RuntimeError>> {
        Box::pin(exec::exec(&self.daemon, req, io))
    }

    fn attach(&self, req: AttachRequest, io: Io) -> BoxFuture<'_, Result<(), RuntimeError>> {
        Box::pin(attach::attach(&self.daemon, req, io))
    }

    fn port_forward(
        &self,
        pod_sandbox_id: &str,
        port: u16,
    ) -> BoxFuture<'_, Result<Box<dyn AsyncReadWrite>, RuntimeError>> {
        let sandbox = pod_sandbox_id.to_string();
        Box::pin(async move {
            let stream = port_forward::connect(&self.daemon, &sandbox, port).await?;
            Ok(Box::new(stream) as Box<dyn AsyncReadWrite>)
        })
    }

    fn check_container(&self, container_id: &str) -> BoxFuture<'_, Result<(), RuntimeError>> {
        let id = container_id.to_string();
        Box::pin(async move {
            let rec = running(&self.daemon, &id).await?;
            require_streaming_monitor(&self.daemon, &rec).await
        })
    }

    fn check_sandbox(&self, pod_sandbox_id: &str) -> BoxFuture<'_, Result<(), RuntimeError>> {
        let id = pod_sandbox_id.to_string();
        Box::pin(async move { port_forward::ready_sandbox(&self.daemon, &id).map(drop) })
    }
}

/// The record of a running container, as the streaming server's errors.
async fn running(daemon: &Daemon, id: &str) -> Result<ContainerRecord, RuntimeError> {
    daemon
        .containers()
        .running_cached(id, "stream to it")
        .await
        .map_err(|e| match e {
            BerthError::NotFound(_) => RuntimeError::ContainerNotFound(id.to_string()),
            BerthError::FailedPrecondition(_) => RuntimeError::ContainerNotRunning(id.to_string()),
            e => RuntimeError::Other(e.to_string()),
        })
}

/// Refuses a monitor that predates streaming, naming the pod to restart.
async fn require_streaming_monitor(
    daemon: &Daemon,
    rec: &ContainerRecord,
) -> Result<(), RuntimeError> {
    let dir = daemon.containers().monitor_dir(&rec.pod_id);
    monitor::require_streaming(&dir, &rec.pod_id)
        .await
        .map_err(|e| RuntimeError::Other(e.to_string()))
}

/// Sends a streaming request on a connection of its own; the monitor's
/// answer line and the fds that came with it. An error answer is mapped.
async fn monitor_session(
    daemon: &Daemon,
    rec: &ContainerRecord,
    req: Request,
) -> Result<(UnixStream, Response, Vec<std::os::fd::OwnedFd>), RuntimeError> {
    require_streaming_monitor(daemon, rec).await?;
    let dir = daemon.containers().monitor_dir(&rec.pod_id);
    let (conn, resp, fds) = monitor::open_session(&dir, &rec.pod_id, &req, MONITOR_ANSWER_TIMEOUT)
        .await
        .map_err(|e| match e {
            monitor::CallError::Unreachable { .. } => {
                RuntimeError::ContainerNotRunning(rec.id.clone())
            }
            e => RuntimeError::Other(e.to_string()),
        })?;
    match resp {
        Response::Error(e) => Err(match e.code {
            ErrorCode::NotFound => RuntimeError::ContainerNotFound(rec.id.clone()),
            ErrorCode::FailedPrecondition => RuntimeError::ContainerNotRunning(rec.id.clone()),
            _ => RuntimeError::Other(e.message),
        }),
        resp => Ok((conn, resp, fds)),
    }
}

/// The fds a monitor answer carried, checked against how many its answer
/// says come with it.
pub(crate) fn expect_fds(
    fds: Vec<std::os::fd::OwnedFd>,
    wanted: usize,
    answer: &str,
) -> Result<std::vec::IntoIter<std::os::fd::OwnedFd>, RuntimeError> {
    if fds.len() != wanted {
        return Err(RuntimeError::Other(format!(
            "monitor passed {} fds with {answer}, expected {wanted}",
            fds.len()
        )));
    }
    Ok(fds.into_iter())
}
