//! berthd's side of the per-pod monitor: spawned lazily on the pod's first
//! CreateContainer, then reached through its socket in
//! `<state>/pods/<pod>/monitor/`. Every call is blocking (the shim's client),
//! so each runs on tokio's blocking pool.

use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow};
use berth_shim::client::{self, Client};
use berth_shim::protocol::{ContainerState, Request, Response};

/// The monitor state dir of a pod: `<state>/monitors/<first 32 hex of the
/// pod id>`, not under the pod's own dir, because the monitor's socket path
/// must fit `sun_path` (108 bytes) and `<state>/pods/<64 hex>/monitor/monitor.sock`
/// does not once `<state>` is longer than ~14 bytes. 128 random bits keep pods apart.
pub fn state_dir(monitors_dir: &Path, pod_id: &str) -> PathBuf {
    monitors_dir.join(&pod_id[..pod_id.len().min(32)])
}

/// `berth-monitor`, next to the running berthd (cargo builds both into
/// the same target dir; packages install both into one bin dir).
pub fn binary() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot find berthd's own executable")?;
    Ok(exe.with_file_name("berth-monitor"))
}

/// The answer of a monitor, or why there was none.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// No monitor listens (never spawned, or gone).
    #[error("monitor of pod {pod} is not running: {source}")]
    Unreachable {
        pod: String,
        #[source]
        source: std::io::Error,
    },
    /// The monitor answered with an error.
    #[error("{0}")]
    Refused(String),
    #[error("monitor of pod {pod}: {source}")]
    Io {
        pod: String,
        #[source]
        source: std::io::Error,
    },
}

impl CallError {
    /// The monitor does not know the container.
    pub fn is_not_found(&self) -> bool {
        matches!(self, CallError::Refused(m) if m.ends_with("not found"))
    }
}

/// One request over a fresh connection (cheap on a unix socket; it keeps
/// berthd free of connection state that a monitor restart would invalidate).
pub async fn call(dir: &Path, pod: &str, req: Request) -> Result<Response, CallError> {
    let dir = dir.to_path_buf();
    let pod = pod.to_string();
    tokio::task::spawn_blocking(move || {
        let mut c = Client::connect(&dir).map_err(|source| CallError::Unreachable {
            pod: pod.clone(),
            source,
        })?;
        match c.call(&req) {
            Ok(Response::Error { message }) => Err(CallError::Refused(message)),
            Ok(r) => Ok(r),
            Err(source) => Err(CallError::Io { pod, source }),
        }
    })
    .await
    .map_err(|e| CallError::Refused(format!("monitor call task failed: {e}")))?
}

/// Starts the pod's monitor unless one already answers. The caller
/// serialises this per daemon, so two creates never spawn two monitors.
pub async fn ensure(dir: &Path, pod: &str) -> anyhow::Result<()> {
    let dir = dir.to_path_buf();
    let pod = pod.to_string();
    tokio::task::spawn_blocking(move || {
        if Client::connect(&dir).is_ok() {
            return Ok(());
        }
        let bin = binary()?;
        let pid = client::spawn(&bin, &pod, &dir)
            .with_context(|| format!("cannot start {}", bin.display()))?;
        tracing::info!(pod = %pod, monitor_pid = pid, "pod monitor started");
        Ok(())
    })
    .await
    .map_err(|e| anyhow!("monitor spawn task failed: {e}"))?
}

pub async fn state(pod_dir: &Path, pod: &str, id: &str) -> Result<ContainerState, CallError> {
    match call(pod_dir, pod, Request::State { id: id.to_string() }).await? {
        Response::State(s) => Ok(s),
        other => Err(CallError::Refused(format!(
            "unexpected monitor answer to state: {other:?}"
        ))),
    }
}

pub async fn list(pod_dir: &Path, pod: &str) -> Result<Vec<ContainerState>, CallError> {
    match call(pod_dir, pod, Request::List).await? {
        Response::List { containers } => Ok(containers),
        other => Err(CallError::Refused(format!(
            "unexpected monitor answer to list: {other:?}"
        ))),
    }
}
