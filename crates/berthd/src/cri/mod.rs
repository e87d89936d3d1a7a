//! The CRI gRPC services. Like containerd's CRI server, one file per RPC (or
//! small group of RPCs); this module only wires the tonic traits to them.

mod container_attach;
mod container_checkpoint;
mod container_create;
mod container_events;
mod container_exec;
mod container_exec_sync;
mod container_list;
mod container_remove;
mod container_reopen_log;
mod container_start;
mod container_stats;
mod container_stats_list;
mod container_status;
mod container_stop;
mod container_update_resources;
pub(crate) mod image_convert;
mod image_fs_info;
mod image_list;
mod image_pull;
mod image_remove;
mod image_service;
mod image_status;
mod list_route;
mod list_stream;
mod metrics;
mod runtime_config;
mod runtime_service;
mod sandbox_checkpoint;
mod sandbox_list;
mod sandbox_port_forward;
mod sandbox_remove;
mod sandbox_restore;
mod sandbox_run;
mod sandbox_stats;
mod sandbox_stats_list;
mod sandbox_status;
mod sandbox_stop;
mod sandbox_update_resources;
mod status;
mod update_runtime_config;
mod version;

use std::pin::Pin;
use std::sync::Arc;

use tonic::Status;

use crate::daemon::Daemon;

pub use image_service::ImageSvc;
pub use list_route::RuntimeRoutes;
pub use runtime_service::RuntimeSvc;

/// A record's labels or annotations as the CRI messages carry them (copied
/// entry by entry: no copy of the record's own map first).
fn string_map(
    m: &std::collections::BTreeMap<String, String>,
) -> std::collections::HashMap<String, String> {
    m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// The stream type of the server-streaming RPCs.
pub type BoxStream<T> = Pin<Box<dyn futures::Stream<Item = Result<T, Status>> + Send + 'static>>;

/// The pod sandbox `id` names (exact, or a unique prefix), or NotFound.
pub(crate) fn pod_or_not_found(
    daemon: &Daemon,
    id: &str,
) -> Result<crate::sandbox::SandboxRecord, Status> {
    daemon
        .sandboxes()
        .resolve(id)
        .ok_or_else(|| Status::not_found(format!("pod sandbox {id} not found")))
}

/// `path`, the request's `field`: given, absolute, plain (no `.` or `..`
/// segment, which `Path::components` would hide). `what` says what it must
/// name.
pub(crate) fn plain_absolute_path<'a>(
    field: &str,
    path: &'a str,
    what: &str,
) -> Result<&'a std::path::Path, Status> {
    if path.is_empty() {
        return Err(Status::invalid_argument(format!(
            "{field} is required: {what}"
        )));
    }
    let p = std::path::Path::new(path);
    if !p.is_absolute() {
        return Err(Status::invalid_argument(format!(
            "{field} {path:?} is not an absolute path"
        )));
    }
    if path.split('/').any(|s| s == "." || s == "..") {
        return Err(Status::invalid_argument(format!(
            "{field} {path:?} must be a plain path (no '.' or '..')"
        )));
    }
    Ok(p)
}

/// Both CRI services over one shared daemon state; Exec, Attach and
/// PortForward hand out URLs of `streaming`.
pub fn services(
    daemon: Arc<Daemon>,
    streaming: Arc<berth_stream::StreamingServer>,
) -> (RuntimeSvc, ImageSvc) {
    (
        RuntimeSvc::new(daemon.clone(), streaming),
        ImageSvc::new(daemon),
    )
}

/// Why the streaming server would not issue a URL, as a gRPC status.
pub(crate) fn streaming_request_error(e: berth_stream::RequestError) -> Status {
    match e {
        berth_stream::RequestError::InvalidArgument(m) => Status::invalid_argument(m),
        e @ berth_stream::RequestError::TooManyPending { .. } => {
            Status::resource_exhausted(e.to_string())
        }
    }
}
