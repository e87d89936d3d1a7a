//! berthd's side of the per-pod monitor: spawned lazily on the pod's first
//! CreateContainer, then reached through its socket in
//! `<state>/monitors/<pod>/` over pooled async connections.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{LazyLock, Mutex};

use anyhow::{Context, anyhow};
use berth_shim::client;
use berth_shim::protocol::{ContainerState, Request, Response, SOCKET_NAME};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

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

    /// The monitor did not understand the request: one older than this
    /// berthd (still running since before an upgrade).
    pub fn is_bad_request(&self) -> bool {
        matches!(self, CallError::Refused(m) if m.starts_with("bad request"))
    }
}

/// Idle connections per monitor state dir, reused by the next call: a
/// connection per call cost a connect, an accept in the monitor's loop and a
/// hop to tokio's blocking pool each time. A call takes a connection out for
/// its whole round trip, so concurrent calls (an exec waiting for its
/// process, a stop waiting for the exit) each have their own.
static IDLE: LazyLock<Mutex<HashMap<PathBuf, Vec<Conn>>>> = LazyLock::new(Default::default);
/// Idle connections kept per monitor.
const MAX_IDLE: usize = 4;

type Conn = BufReader<UnixStream>;

fn take_idle(dir: &Path) -> Option<Conn> {
    IDLE.lock()
        .unwrap_or_else(|e| e.into_inner())
        .get_mut(dir)?
        .pop()
}

fn put_idle(dir: &Path, conn: Conn) {
    let mut idle = IDLE.lock().unwrap_or_else(|e| e.into_inner());
    let v = idle.entry(dir.to_path_buf()).or_default();
    if v.len() < MAX_IDLE {
        v.push(conn);
    }
}

/// Drops the idle connections to a monitor (it shut down).
pub fn forget(dir: &Path) {
    IDLE.lock().unwrap_or_else(|e| e.into_inner()).remove(dir);
}

async fn connect(dir: &Path) -> std::io::Result<Conn> {
    Ok(BufReader::new(
        UnixStream::connect(dir.join(SOCKET_NAME)).await?,
    ))
}

/// One request and its answer. An idle connection is reused when there is
/// one; one whose monitor went away (a restarted monitor, berthd kept the old
/// connection) fails on the write, before the monitor could have seen the
/// request, and the call goes again over a fresh connection.
pub async fn call(dir: &Path, pod: &str, req: Request) -> Result<Response, CallError> {
    let mut line = serde_json::to_vec(&req).map_err(|e| CallError::Io {
        pod: pod.to_string(),
        source: std::io::Error::other(e),
    })?;
    line.push(b'\n');
    let io = |source| CallError::Io {
        pod: pod.to_string(),
        source,
    };
    let mut conn = loop {
        let Some(mut conn) = take_idle(dir) else {
            let mut conn = connect(dir)
                .await
                .map_err(|source| CallError::Unreachable {
                    pod: pod.to_string(),
                    source,
                })?;
            conn.get_mut().write_all(&line).await.map_err(io)?;
            break conn;
        };
        if conn.get_mut().write_all(&line).await.is_ok() {
            break conn;
        }
    };
    let mut resp = String::new();
    if conn.read_line(&mut resp).await.map_err(io)? == 0 {
        return Err(io(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "monitor closed the connection",
        )));
    }
    let resp: Response = serde_json::from_str(&resp).map_err(|e| io(std::io::Error::other(e)))?;
    put_idle(dir, conn);
    match resp {
        Response::Error { message } => Err(CallError::Refused(message)),
        r => Ok(r),
    }
}

/// Starts the pod's monitor unless one already answers. The caller
/// serialises this per daemon, so two creates never spawn two monitors.
pub async fn ensure(dir: &Path, pod: &str) -> anyhow::Result<()> {
    if let Some(conn) = take_idle(dir) {
        put_idle(dir, conn);
        return Ok(());
    }
    if let Ok(conn) = connect(dir).await {
        // The probe is the next call's connection.
        put_idle(dir, conn);
        return Ok(());
    }
    let dir = dir.to_path_buf();
    let pod = pod.to_string();
    tokio::task::spawn_blocking(move || {
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
