//! berthd's side of the per-pod monitor: spawned lazily on the pod's first
//! CreateContainer, then reached through its socket in
//! `<state>/monitors/<pod>/` over pooled async connections. The first
//! connection to a monitor berthd did not spawn (found running after a
//! berthd restart) asks its protocol version (see `berth_monitor_protocol`
//! for the compatibility rules).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{LazyLock, Mutex};

use anyhow::{Context, anyhow};
use berth_monitor_protocol::{
    ContainerState, EVENTS_VERSION, ErrorCode, ErrorReply, EventKind, PROTOCOL_VERSION, Request,
    Response, SOCKET_NAME, version_from_hello,
};
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
    Refused(ErrorReply),
    /// The monitor answered with something that does not answer the request.
    #[error("unexpected monitor answer to {op}: {answer}")]
    Unexpected { op: &'static str, answer: String },
    #[error("monitor of pod {pod}: {source}")]
    Io {
        pod: String,
        #[source]
        source: std::io::Error,
    },
    /// The monitor did not answer in time (stuck, or the host overloaded):
    /// one stuck monitor must not stall every RPC that asks it.
    #[error("monitor of pod {pod} did not answer {op} within {after:?}")]
    Timeout {
        pod: String,
        op: &'static str,
        after: std::time::Duration,
    },
}

impl CallError {
    /// The code of the monitor's error answer, if it answered one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            CallError::Refused(e) => Some(e.code),
            _ => None,
        }
    }

    /// The monitor does not know the container.
    pub fn is_not_found(&self) -> bool {
        self.code() == Some(ErrorCode::NotFound)
    }

    /// The monitor did not understand the request: one older than this
    /// berthd (still running since before an upgrade).
    pub fn is_bad_request(&self) -> bool {
        self.code() == Some(ErrorCode::BadRequest)
    }

    /// The monitor closed the connection without reading the request
    /// (reset, broken pipe): safe to send again.
    fn is_unread_by_monitor(&self) -> bool {
        use std::io::ErrorKind::{BrokenPipe, ConnectionReset};
        matches!(self, CallError::Io { source, .. } if matches!(source.kind(), ConnectionReset | BrokenPipe))
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

pub type Conn = BufReader<UnixStream>;

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

/// Protocol versions of the monitors by state dir: those berthd spawned
/// (this build's), and those it asked with `hello`.
static VERSIONS: LazyLock<Mutex<HashMap<PathBuf, u32>>> = LazyLock::new(Default::default);

/// The protocol version of the monitor at `dir`, once known.
pub fn version(dir: &Path) -> Option<u32> {
    VERSIONS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(dir)
        .copied()
}

fn set_version(dir: &Path, version: u32) {
    VERSIONS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(dir.to_path_buf(), version);
}

/// Drops the idle connections to a monitor and what is known of it (it
/// shut down; the next one may be another build).
pub fn forget(dir: &Path) {
    IDLE.lock().unwrap_or_else(|e| e.into_inner()).remove(dir);
    VERSIONS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(dir);
}

/// A new connection to the monitor at `dir`; the first to a monitor of
/// unknown version asks it (`hello`) first.
async fn connect(dir: &Path, pod: &str) -> Result<Conn, CallError> {
    let stream = UnixStream::connect(dir.join(SOCKET_NAME))
        .await
        .map_err(|source| CallError::Unreachable {
            pod: pod.to_string(),
            source,
        })?;
    let mut conn = BufReader::new(stream);
    if version(dir).is_none() {
        let resp = round_trip(&mut conn, pod, &Request::Hello).await?;
        let v = version_from_hello(resp).map_err(|other| CallError::Unexpected {
            op: "hello",
            answer: format!("{other:?}"),
        })?;
        check_version(pod, v);
        set_version(dir, v);
    }
    Ok(conn)
}

/// What berthd does with a monitor's version: every version is served
/// (the protocol only grows); an older monitor gets the fallbacks of the
/// ops it lacks (on `bad_request` answers), a newer one only the ops this
/// berthd knows. Logged, so an old monitor left by an upgrade is visible.
fn check_version(pod: &str, version: u32) {
    if version < PROTOCOL_VERSION {
        tracing::info!(
            pod = %pod,
            monitor_protocol = version,
            berthd_protocol = PROTOCOL_VERSION,
            "monitor of an older build: newer operations fall back"
        );
    } else if version > PROTOCOL_VERSION {
        tracing::info!(
            pod = %pod,
            monitor_protocol = version,
            berthd_protocol = PROTOCOL_VERSION,
            "monitor of a newer build: served with this berthd's operations"
        );
    }
}

/// Sends one request line on `conn` and reads its answer.
async fn round_trip(conn: &mut Conn, pod: &str, req: &Request) -> Result<Response, CallError> {
    let io = |source| CallError::Io {
        pod: pod.to_string(),
        source,
    };
    let line = encode(req, pod)?;
    conn.get_mut().write_all(&line).await.map_err(io)?;
    read_response(conn, pod).await
}

fn encode(req: &Request, pod: &str) -> Result<Vec<u8>, CallError> {
    let mut line = serde_json::to_vec(req).map_err(|e| CallError::Io {
        pod: pod.to_string(),
        source: std::io::Error::other(e),
    })?;
    line.push(b'\n');
    Ok(line)
}

async fn read_response(conn: &mut Conn, pod: &str) -> Result<Response, CallError> {
    let io = |source| CallError::Io {
        pod: pod.to_string(),
        source,
    };
    let mut resp = String::new();
    if conn.read_line(&mut resp).await.map_err(io)? == 0 {
        return Err(io(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "monitor closed the connection",
        )));
    }
    serde_json::from_str(&resp).map_err(|e| io(std::io::Error::other(e)))
}

/// One request and its answer. An idle connection is reused when there is
/// one; one whose monitor went away (a restarted monitor, berthd kept the old
/// connection) fails on the write, before the monitor could have seen the
/// request, and the call goes again over a fresh connection.
pub async fn call(dir: &Path, pod: &str, req: Request) -> Result<Response, CallError> {
    match deadline(&req) {
        Some(after) => call_within(dir, pod, req, after).await,
        None => call_unbounded(dir, pod, req).await,
    }
}

/// How long berthd waits for a monitor's answer to `req`: what the request
/// itself may take (a stop's grace period, an exec's timeout) plus a margin
/// for a loaded host; `None` for an exec without a timeout (the CRI's 0).
pub fn deadline(req: &Request) -> Option<std::time::Duration> {
    use std::time::Duration;
    const MARGIN: Duration = Duration::from_secs(30);
    Some(match req {
        Request::Stop {
            timeout_ms,
            kill_wait_ms,
            ..
        } => Duration::from_millis(timeout_ms.saturating_add(*kill_wait_ms)) + MARGIN,
        // Sessions last as long as the client wants.
        Request::Exec { timeout_ms: 0, .. }
        | Request::ExecStream { .. }
        | Request::Attach { .. } => return None,
        Request::Exec { timeout_ms, .. } => Duration::from_millis(*timeout_ms) + MARGIN,
        // libcontainer's create, start and delete take milliseconds, but
        // seconds on a host under heavy load.
        Request::Create { .. }
        | Request::Start { .. }
        | Request::StartAndReport { .. }
        | Request::Delete { .. }
        | Request::Update { .. } => Duration::from_secs(60),
        // Answered from the monitor's memory: a monitor that takes longer
        // is stuck, and List is on the kubelet's PLEG path (every second).
        Request::List
        | Request::State { .. }
        | Request::Hello
        | Request::CloseStdin { .. }
        | Request::Subscribe => Duration::from_secs(5),
        _ => Duration::from_secs(10),
    })
}

/// [`call`] with its deadline: the connection is dropped on timeout (a late
/// answer must not be read as the answer to another request).
pub async fn call_within(
    dir: &Path,
    pod: &str,
    req: Request,
    after: std::time::Duration,
) -> Result<Response, CallError> {
    let op = op_name(&req);
    tokio::time::timeout(after, call_unbounded(dir, pod, req))
        .await
        .unwrap_or_else(|_| {
            tracing::warn!(pod = %pod, op, ?after, "monitor did not answer in time");
            Err(CallError::Timeout {
                pod: pod.to_string(),
                op,
                after,
            })
        })
}

fn op_name(req: &Request) -> &'static str {
    match req {
        Request::Hello => "hello",
        Request::Create { .. } => "create",
        Request::Start { .. } | Request::StartAndReport { .. } => "start",
        Request::Stop { .. } => "stop",
        Request::Kill { .. } => "kill",
        Request::State { .. } => "state",
        Request::List => "list",
        Request::Delete { .. } => "delete",
        Request::ReopenLog { .. } => "reopen_log",
        Request::Exec { .. } => "exec",
        Request::ExecStream { .. } => "exec_stream",
        Request::Attach { .. } => "attach",
        Request::CloseStdin { .. } => "close_stdin",
        Request::Update { .. } => "update",
        Request::Shutdown => "shutdown",
        Request::Subscribe => "subscribe",
    }
}

async fn call_unbounded(dir: &Path, pod: &str, req: Request) -> Result<Response, CallError> {
    let line = encode(&req, pod)?;
    // A monitor that is exiting (its pod stopped, its last container gone)
    // may still accept connections that it never reads: closing them resets
    // them, with our request unread (a request read and then dropped would
    // read as EOF, never as a reset). So a reset or a broken pipe means the
    // monitor never saw the request, and it goes again on a fresh
    // connection, until the monitor answers or its socket is gone
    // (Unreachable, what callers treat as "no monitor").
    const ATTEMPTS: u32 = 20;
    let mut attempt = 0;
    loop {
        let fresh = attempt > 0;
        let sent = match send(dir, pod, &line, fresh).await {
            Ok(mut conn) => read_response(&mut conn, pod).await.map(|r| (conn, r)),
            Err(e) => Err(e),
        };
        match sent {
            Err(e) if e.is_unread_by_monitor() && attempt + 1 < ATTEMPTS => {
                tracing::debug!(pod = %pod, attempt, "monitor dropped the connection with the request unread; trying a fresh one");
                if fresh {
                    // The monitor is on its way out: give it time to close its socket.
                    tokio::time::sleep(std::time::Duration::from_millis(10 * u64::from(attempt)))
                        .await;
                }
                attempt += 1;
            }
            Err(e) => return Err(e),
            Ok((conn, resp)) => {
                put_idle(dir, conn);
                return match resp {
                    Response::Error(e) => Err(CallError::Refused(e)),
                    r => Ok(r),
                };
            }
        }
    }
}

/// Writes `line` on an idle connection (unless `fresh`) or a new one. An
/// idle connection whose monitor went away fails on the write, before the
/// monitor could have seen the request, and the next one is tried.
async fn send(dir: &Path, pod: &str, line: &[u8], fresh: bool) -> Result<Conn, CallError> {
    loop {
        let idle = if fresh { None } else { take_idle(dir) };
        let Some(mut conn) = idle else {
            let mut conn = connect(dir, pod).await?;
            conn.get_mut()
                .write_all(line)
                .await
                .map_err(|source| CallError::Io {
                    pod: pod.to_string(),
                    source,
                })?;
            return Ok(conn);
        };
        if conn.get_mut().write_all(line).await.is_ok() {
            return Ok(conn);
        }
    }
}

/// The first protocol version with streaming: `exec_stream`, `attach`,
/// answers carrying fds, containers with a terminal or stdin.
pub const STREAMING_VERSION: u32 = 2;

/// The protocol version of the monitor at `dir`, asking it (`hello`) when
/// this berthd does not know it yet.
pub async fn ensure_version(dir: &Path, pod: &str) -> Result<u32, CallError> {
    if let Some(v) = version(dir) {
        return Ok(v);
    }
    // A new connection to a monitor of unknown version asks `hello` first.
    let conn = connect(dir, pod).await?;
    put_idle(dir, conn);
    version(dir).ok_or_else(|| CallError::Unexpected {
        op: "hello",
        answer: "no version".to_string(),
    })
}

/// Refuses streaming with the pod's monitor when it is of a build from
/// before streaming (it outlived a berthd upgrade with its pod).
pub async fn require_streaming(dir: &Path, pod: &str) -> Result<(), crate::error::RuntimeError> {
    let v = ensure_version(dir, pod)
        .await
        .map_err(|e| crate::error::RuntimeError::Internal(e.into()))?;
    if v < STREAMING_VERSION {
        return Err(crate::error::RuntimeError::FailedPrecondition(format!(
            "monitor of pod {pod} predates streaming (protocol {v}, streaming needs {STREAMING_VERSION}): restart the pod"
        )));
    }
    Ok(())
}

/// Fails unless the monitor at `dir` restores checkpoints (an older one
/// would start the process fresh).
pub async fn require_restore(dir: &Path, pod: &str) -> Result<(), crate::error::RuntimeError> {
    let v = ensure_version(dir, pod)
        .await
        .map_err(|e| crate::error::RuntimeError::Internal(e.into()))?;
    if v < berth_monitor_protocol::RESTORE_VERSION {
        return Err(crate::error::RuntimeError::FailedPrecondition(format!(
            "monitor of pod {pod} predates checkpoint restore (protocol {v}, restore needs {}): restart the pod",
            berth_monitor_protocol::RESTORE_VERSION
        )));
    }
    Ok(())
}

/// A connection of its own to the monitor at `dir` for one streaming
/// request (`exec_stream`, `attach`): the request line, then the answer
/// line and the fds sent with it, read before any buffered reader touches
/// the socket. The connection then belongs to the session (closing it
/// kills the exec, or detaches). Async all the way: a session waiting for
/// its process to start holds no thread (a blocking-pool thread each, with
/// its stack and malloc arena, was most of what an idle session cost while
/// a hundred opened at once), bounded by `timeout`.
pub async fn open_session(
    dir: &Path,
    pod: &str,
    req: &Request,
    timeout: std::time::Duration,
) -> Result<(UnixStream, Response, Vec<std::os::fd::OwnedFd>), CallError> {
    use std::os::fd::AsFd;
    let line = encode(req, pod)?;
    let path = dir.join(SOCKET_NAME);
    let io = |source| CallError::Io {
        pod: pod.to_string(),
        source,
    };
    let open = async {
        let mut sock =
            UnixStream::connect(&path)
                .await
                .map_err(|source| CallError::Unreachable {
                    pod: pod.to_string(),
                    source,
                })?;
        sock.write_all(&line).await.map_err(io)?;
        let mut reader = berth_monitor_protocol::fds::LineWithFds::default();
        let (answer, fds) = loop {
            sock.readable().await.map_err(io)?;
            match sock.try_io(tokio::io::Interest::READABLE, || reader.step(sock.as_fd())) {
                Ok(Some(done)) => break done,
                Ok(None) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(io(e)),
            }
        };
        let resp: Response =
            serde_json::from_slice(&answer).map_err(|e| io(std::io::Error::other(e)))?;
        Ok((sock, resp, fds))
    };
    tokio::time::timeout(timeout, open)
        .await
        .map_err(|_| CallError::Timeout {
            pod: pod.to_string(),
            op: op_name(req),
            after: timeout,
        })?
}

/// Starts the pod's monitor unless one already answers. The caller
/// serialises this per daemon, so two creates never spawn two monitors.
/// `mounts`: the state dir's mount point and the pod's dir below it, for
/// the monitor's view of the pod's mounts only (`berth_monitor_protocol::spawn`).
pub async fn ensure(
    dir: &Path,
    pod: &str,
    mounts: Option<(PathBuf, PathBuf)>,
) -> anyhow::Result<()> {
    if let Some(conn) = take_idle(dir) {
        put_idle(dir, conn);
        return Ok(());
    }
    match connect(dir, pod).await {
        // The probe is the next call's connection.
        Ok(conn) => {
            put_idle(dir, conn);
            return Ok(());
        }
        Err(CallError::Unreachable { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    let dir = dir.to_path_buf();
    let pod = pod.to_string();
    tokio::task::spawn_blocking(move || {
        let bin = binary()?;
        let mounts = mounts.as_ref().map(|(r, p)| (r.as_path(), p.as_path()));
        let pid = berth_monitor_protocol::spawn(&bin, &pod, &dir, mounts)
            .with_context(|| format!("cannot start {}", bin.display()))?;
        // The binary next to this berthd: this build's protocol.
        set_version(&dir, PROTOCOL_VERSION);
        tracing::info!(pod = %pod, monitor_pid = pid, "pod monitor started");
        Ok(())
    })
    .await
    .map_err(|e| anyhow!("monitor spawn task failed: {e}"))?
}

pub async fn state(pod_dir: &Path, pod: &str, id: &str) -> Result<ContainerState, CallError> {
    match call(pod_dir, pod, Request::State { id: id.to_string() }).await? {
        Response::State(s) => Ok(s),
        other => Err(CallError::Unexpected {
            op: "state",
            answer: format!("{other:?}"),
        }),
    }
}

/// A connection subscribed to the monitor's container events and the
/// snapshot it started with; `None`: the monitor is older than events.
pub async fn subscribe(
    dir: &Path,
    pod: &str,
) -> Result<Option<(Vec<ContainerState>, Conn)>, CallError> {
    let mut conn = connect(dir, pod).await?;
    if version(dir).is_some_and(|v| v < EVENTS_VERSION) {
        return Ok(None);
    }
    match round_trip(&mut conn, pod, &Request::Subscribe).await? {
        Response::List { containers } => Ok(Some((containers, conn))),
        Response::Error(e) if e.code == ErrorCode::BadRequest => Ok(None),
        Response::Error(e) => Err(CallError::Refused(e)),
        other => Err(CallError::Unexpected {
            op: "subscribe",
            answer: format!("{other:?}"),
        }),
    }
}

/// The next event on a subscribed connection. Cancel-safe: a line read in
/// part stays in `buf` for the next call.
pub async fn read_event(
    conn: &mut Conn,
    pod: &str,
    buf: &mut Vec<u8>,
) -> Result<(EventKind, ContainerState), CallError> {
    let io = |source| CallError::Io {
        pod: pod.to_string(),
        source,
    };
    conn.read_until(b'\n', buf).await.map_err(io)?;
    if buf.last() != Some(&b'\n') {
        return Err(io(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "monitor closed the event subscription",
        )));
    }
    let resp = serde_json::from_slice(buf).map_err(|e| io(std::io::Error::other(e)));
    buf.clear();
    match resp? {
        Response::Event { kind, container } => Ok((kind, container)),
        other => Err(CallError::Unexpected {
            op: "subscribe",
            answer: format!("{other:?}"),
        }),
    }
}

pub async fn list(pod_dir: &Path, pod: &str) -> Result<Vec<ContainerState>, CallError> {
    match call(pod_dir, pod, Request::List).await? {
        Response::List { containers } => Ok(containers),
        other => Err(CallError::Unexpected {
            op: "list",
            answer: format!("{other:?}"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use tokio::net::UnixListener;

    use super::*;

    /// A fake monitor at `dir` answering each request line with `answer`.
    fn fake_monitor(dir: &Path, answer: fn(&str) -> String) {
        let listener = UnixListener::bind(dir.join(SOCKET_NAME)).unwrap();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut conn = BufReader::new(stream);
                    let mut line = String::new();
                    while conn.read_line(&mut line).await.unwrap_or(0) > 0 {
                        let mut out = answer(line.trim_end());
                        out.push('\n');
                        conn.get_mut().write_all(out.as_bytes()).await.unwrap();
                        line.clear();
                    }
                });
            }
        });
    }

    /// A monitor of before protocol versions: free-text errors, no `hello`,
    /// no `start_and_report`.
    fn version_0(line: &str) -> String {
        let req: serde_json::Value = serde_json::from_str(line).unwrap();
        match req["op"].as_str().unwrap() {
            "hello" | "start_and_report" => format!(
                r#"{{"result":"error","message":"bad request: unknown variant `{}`"}}"#,
                req["op"].as_str().unwrap()
            ),
            "state" => format!(
                r#"{{"result":"error","message":"container {} not found"}}"#,
                req["id"].as_str().unwrap()
            ),
            _ => r#"{"result":"ok"}"#.to_string(),
        }
    }

    fn version_1(line: &str) -> String {
        let req: Request = serde_json::from_str(line).unwrap();
        let resp = match req {
            Request::Hello => Response::Hello { version: 1 },
            Request::State { id } => {
                Response::error(ErrorCode::NotFound, format!("container {id} not found"))
            }
            Request::Start { id } => Response::error(
                ErrorCode::FailedPrecondition,
                // Wording that would have fooled the old text rules.
                format!("start container {id}: bad request for a container not found"),
            ),
            _ => Response::Ok,
        };
        serde_json::to_string(&resp).unwrap()
    }

    #[tokio::test]
    async fn older_monitor_is_recognised_and_its_errors_classified() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        fake_monitor(dir, version_0);
        let e = call(dir, "p", Request::StartAndReport { id: "c".into() })
            .await
            .unwrap_err();
        assert!(e.is_bad_request(), "{e}");
        assert!(!e.is_not_found());
        assert_eq!(version(dir), Some(0));
        let e = state(dir, "p", "c").await.unwrap_err();
        assert!(e.is_not_found(), "{e}");
        assert_eq!(e.to_string(), "container c not found");
        assert_eq!(
            call(dir, "p", Request::Start { id: "c".into() })
                .await
                .unwrap(),
            Response::Ok
        );
        forget(dir);
        assert_eq!(version(dir), None);
    }

    #[tokio::test]
    async fn current_monitor_errors_go_by_code() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        fake_monitor(dir, version_1);
        ensure(dir, "p", None).await.unwrap();
        assert_eq!(version(dir), Some(1));
        let e = state(dir, "p", "c").await.unwrap_err();
        assert!(e.is_not_found(), "{e}");
        let e = call(dir, "p", Request::Start { id: "c".into() })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Some(ErrorCode::FailedPrecondition));
        assert!(!e.is_not_found() && !e.is_bad_request(), "{e}");
        // An answer that does not fit.
        let e = list(dir, "p").await.unwrap_err();
        assert!(matches!(e, CallError::Unexpected { op: "list", .. }), "{e}");
    }

    /// A monitor that accepts but never answers (stuck in waitpid, on a
    /// FIFO) costs the caller its deadline, not forever.
    #[tokio::test]
    async fn a_stuck_monitor_times_out() {
        let tmp = tempfile::tempdir().unwrap();
        let listener = UnixListener::bind(tmp.path().join(SOCKET_NAME)).unwrap();
        let held = tokio::spawn(async move {
            let mut conns = Vec::new();
            while let Ok((c, _)) = listener.accept().await {
                conns.push(c);
            }
        });
        let t0 = std::time::Instant::now();
        let after = std::time::Duration::from_millis(300);
        let e = call_within(tmp.path(), "p", Request::List, after)
            .await
            .unwrap_err();
        assert!(matches!(e, CallError::Timeout { op: "list", .. }), "{e}");
        assert!(t0.elapsed() < std::time::Duration::from_secs(5));
        held.abort();
        assert_eq!(
            deadline(&Request::List),
            Some(std::time::Duration::from_secs(5))
        );
        let exec = Request::Exec {
            id: "c".into(),
            args: vec!["true".into()],
            env: vec![],
            cwd: None,
            timeout_ms: 0,
            max_output: 1,
        };
        assert_eq!(deadline(&exec), None);
    }

    /// A monitor that closes connections with the request unread (it is
    /// exiting, its socket still accepts): the request goes again on fresh
    /// connections until the monitor is gone (Unreachable, what callers
    /// treat as "no monitor") or one that still runs answers. This is what
    /// RemovePodSandbox meets just after StopPodSandbox let the monitor go.
    #[tokio::test]
    async fn connections_reset_with_the_request_unread_are_retried() {
        for (resets, still_there) in [(1, false), (1, true), (4, false), (4, true)] {
            let tmp = tempfile::tempdir().unwrap();
            let dir = tmp.path().to_path_buf();
            set_version(&dir, 1);
            let socket = dir.join(SOCKET_NAME);
            let listener = UnixListener::bind(&socket).unwrap();
            let server = tokio::spawn(async move {
                for _ in 0..resets {
                    let (conn, _) = listener.accept().await.unwrap();
                    conn.readable().await.unwrap();
                    drop(conn);
                }
                if !still_there {
                    drop(listener);
                    std::fs::remove_file(&socket).unwrap();
                    return;
                }
                let (answered, _) = listener.accept().await.unwrap();
                let mut conn = BufReader::new(answered);
                let mut line = String::new();
                conn.read_line(&mut line).await.unwrap();
                let ok = serde_json::to_string(&Response::Ok).unwrap() + "\n";
                conn.get_mut().write_all(ok.as_bytes()).await.unwrap();
            });
            let got = call(&dir, "p", Request::Shutdown).await;
            match still_there {
                false => assert!(
                    matches!(got, Err(CallError::Unreachable { .. })),
                    "{resets} resets: {got:?}"
                ),
                true => assert!(matches!(got, Ok(Response::Ok)), "{resets} resets: {got:?}"),
            }
            server.await.unwrap();
            forget(&dir);
        }
    }

    #[tokio::test]
    async fn no_monitor_is_unreachable() {
        let tmp = tempfile::tempdir().unwrap();
        let e = call(tmp.path(), "p", Request::List).await.unwrap_err();
        assert!(matches!(e, CallError::Unreachable { .. }), "{e}");
        assert_eq!(e.code(), None);
        assert_eq!(version(tmp.path()), None);
    }
}
