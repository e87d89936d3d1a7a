//! A fake StreamRuntime over host processes and loopback ports, and helpers.
#![allow(dead_code)]

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use berth_stream::{
    AsyncReadWrite, AttachRequest, BoxFuture, ExecRequest, Io, RuntimeError, StreamRuntime,
    StreamingConfig, StreamingServer,
};
use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Mutex, broadcast};

#[derive(Default)]
pub struct Counters {
    /// Exec futures alive (a drop guard counts them).
    pub live_execs: AtomicUsize,
    /// Pids of processes the fake started.
    pub pids: std::sync::Mutex<Vec<u32>>,
}

pub struct FakeRuntime {
    pub counters: Arc<Counters>,
    /// What the attached "container" prints: every client's stdin, echoed.
    hub: broadcast::Sender<Bytes>,
    attach_lock: Mutex<()>,
}

impl FakeRuntime {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            counters: Arc::default(),
            hub: broadcast::channel(64).0,
            attach_lock: Mutex::new(()),
        })
    }
}

struct LiveGuard(Arc<Counters>);
impl LiveGuard {
    fn new(counters: &Arc<Counters>) -> Self {
        counters.live_execs.fetch_add(1, Ordering::SeqCst);
        Self(counters.clone())
    }
}
impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.0.live_execs.fetch_sub(1, Ordering::SeqCst);
    }
}

fn check(container_id: &str) -> Result<(), RuntimeError> {
    match container_id {
        "missing" => Err(RuntimeError::ContainerNotFound(container_id.into())),
        "stopped" => Err(RuntimeError::ContainerNotRunning(container_id.into())),
        _ => Ok(()),
    }
}

impl StreamRuntime for FakeRuntime {
    fn exec(&self, req: ExecRequest, io: Io) -> BoxFuture<'_, Result<i32, RuntimeError>> {
        Box::pin(async move {
            let _live = LiveGuard::new(&self.counters);
            if req.container_id == "vanishing" {
                return Err(RuntimeError::ContainerNotRunning(req.container_id));
            }
            if req.cmd[0] == "resize-echo" {
                return resize_echo(req, io).await;
            }
            run_process(&self.counters, req, io).await
        })
    }

    fn attach(&self, _req: AttachRequest, io: Io) -> BoxFuture<'_, Result<(), RuntimeError>> {
        Box::pin(async move {
            let Io {
                stdin,
                stdout,
                mut disconnected,
                ..
            } = io;
            let mut output = self.hub.subscribe();
            let hub = self.hub.clone();
            let mut stdout = stdout.expect("attach tests ask for stdout");
            let pump_in = async move {
                let Some(mut stdin) = stdin else {
                    return std::future::pending().await;
                };
                let mut buf = vec![0u8; 4096];
                loop {
                    let n = stdin.read(&mut buf).await.unwrap_or(0);
                    if n == 0 || &buf[..n] == b"detach\n" {
                        return;
                    }
                    let _ = hub.send(Bytes::copy_from_slice(&buf[..n]));
                }
            };
            let pump_out = async move {
                while let Ok(chunk) = output.recv().await {
                    if stdout.write_all(&chunk).await.is_err() {
                        return;
                    }
                }
            };
            tokio::select! {
                _ = pump_in => {}
                _ = pump_out => {}
                _ = disconnected.wait() => {}
            }
            Ok(())
        })
    }

    fn port_forward(
        &self,
        pod_sandbox_id: &str,
        port: u16,
    ) -> BoxFuture<'_, Result<Box<dyn AsyncReadWrite>, RuntimeError>> {
        let sandbox = pod_sandbox_id.to_string();
        Box::pin(async move {
            match tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
                Ok(socket) => Ok(Box::new(socket) as Box<dyn AsyncReadWrite>),
                Err(err) => Err(RuntimeError::PortUnreachable {
                    sandbox,
                    port,
                    reason: err.to_string(),
                }),
            }
        })
    }

    fn check_container(&self, container_id: &str) -> BoxFuture<'_, Result<(), RuntimeError>> {
        let result = check(container_id);
        Box::pin(async move { result })
    }

    fn check_sandbox(&self, pod_sandbox_id: &str) -> BoxFuture<'_, Result<(), RuntimeError>> {
        let result = match pod_sandbox_id {
            "missing" => Err(RuntimeError::SandboxNotFound(pod_sandbox_id.into())),
            _ => Ok(()),
        };
        Box::pin(async move { result })
    }
}

/// Prints "tty=<flag>" then one "WxH" line per resize, `cmd[1]` of them.
async fn resize_echo(req: ExecRequest, io: Io) -> Result<i32, RuntimeError> {
    let count: usize = req.cmd[1].parse().unwrap();
    let mut stdout = io.stdout.unwrap();
    let mut resize = io.resize.ok_or(RuntimeError::Other("no resize".into()))?;
    stdout
        .write_all(format!("tty={}\n", io.tty).as_bytes())
        .await
        .unwrap();
    for _ in 0..count {
        let size = resize
            .recv()
            .await
            .ok_or(RuntimeError::Other("resize ended".into()))?;
        let line = format!("{}x{}\n", size.width, size.height);
        stdout.write_all(line.as_bytes()).await.unwrap();
    }
    stdout.shutdown().await.unwrap();
    Ok(0)
}

/// What berthd will do with the process's fds: copy each way, kill on
/// disconnect.
async fn run_process(counters: &Counters, req: ExecRequest, io: Io) -> Result<i32, RuntimeError> {
    let mut command = tokio::process::Command::new(&req.cmd[0]);
    command
        .args(&req.cmd[1..])
        .stdin(if io.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = command
        .spawn()
        .map_err(|err| RuntimeError::Other(err.to_string()))?;
    counters.pids.lock().unwrap().push(child.id().unwrap());
    let stdin_task = match (io.stdin, child.stdin.take()) {
        (Some(mut from), Some(mut to)) => Some(tokio::spawn(async move {
            let _ = tokio::io::copy(&mut from, &mut to).await;
            // Dropping `to` closes the pipe: the process sees EOF.
        })),
        _ => None,
    };
    let copy_out = |from: Option<tokio::process::ChildStdout>,
                    to: Option<berth_stream::OutputWriter>| async move {
        if let (Some(mut from), Some(mut to)) = (from, to) {
            let _ = tokio::io::copy(&mut from, &mut to).await;
            let _ = to.shutdown().await;
        }
    };
    let copy_err = |from: Option<tokio::process::ChildStderr>,
                    to: Option<berth_stream::OutputWriter>| async move {
        if let (Some(mut from), Some(mut to)) = (from, to) {
            let _ = tokio::io::copy(&mut from, &mut to).await;
            let _ = to.shutdown().await;
        }
    };
    let stdout = copy_out(child.stdout.take(), io.stdout);
    let stderr = copy_err(child.stderr.take(), io.stderr);
    let mut disconnected = io.disconnected;
    let run = async {
        let (status, _, _) = tokio::join!(child.wait(), stdout, stderr);
        status
    };
    let result = tokio::select! {
        status = run => status.map_err(|err| RuntimeError::Other(err.to_string())),
        _ = disconnected.wait() => Err(RuntimeError::Other("client disconnected".into())),
    };
    if let Some(task) = stdin_task {
        task.abort();
    }
    // On disconnect `child` is dropped here: kill_on_drop kills it.
    let status = result?;
    Ok(status.code().unwrap_or(128))
}

pub async fn start(config: StreamingConfig) -> (StreamingServer, Arc<FakeRuntime>) {
    let runtime = FakeRuntime::new();
    let server = StreamingServer::start(config, runtime.clone())
        .await
        .unwrap();
    (server, runtime)
}

pub fn exec(cmd: &[&str], stdin: bool, tty: bool) -> ExecRequest {
    ExecRequest {
        container_id: "c1".into(),
        cmd: cmd.iter().map(|s| s.to_string()).collect(),
        tty,
        stdin,
        stdout: true,
        stderr: !tty,
    }
}

pub async fn read_all(reader: &mut (impl tokio::io::AsyncRead + Unpin)) -> String {
    let mut out = Vec::new();
    reader.read_to_end(&mut out).await.unwrap();
    String::from_utf8(out).unwrap()
}

/// Polls `cond` for up to 10 s.
pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..200 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for: {what}");
}

pub fn pid_alive(pid: u32) -> bool {
    // A zombie counts as dead: it was killed and only waits for its reap.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat.contains(") Z "),
        Err(_) => false,
    }
}
