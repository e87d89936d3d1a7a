//! A streaming exec (`kubectl exec`, `crictl exec -i/-it`): the pod's
//! monitor starts the process (`exec_stream`, set up as ExecSync's) and
//! hands over its stdio; berthd relays it to the client, applies resizes,
//! and reports the exit code once the output is copied. A client that goes
//! away drops the monitor connection, and the monitor SIGKILLs the process.

use std::os::fd::OwnedFd;
use std::time::Duration;

use berth_monitor_protocol::{Request, Response, TerminalSize as MonitorSize};
use berth_stream::{ExecRequest, Io, OutputWriter, RuntimeError, StdinReader, TerminalSize};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::sync::mpsc;
use tracing::Instrument;

use super::fd_io::{self, PtyMaster};
use crate::daemon::Daemon;

/// After the process exited, how long its output may still take to reach
/// EOF: a background child that inherited stdout (or the terminal) keeps
/// it open, and must not hold the session (and the exit code) forever.
const OUTPUT_DRAIN_AFTER_EXIT: Duration = Duration::from_secs(2);

pub(super) async fn exec(
    daemon: &Daemon,
    req: ExecRequest,
    mut io: Io,
) -> Result<i32, RuntimeError> {
    let rec = super::running(daemon, &req.container_id).await?;
    let span =
        tracing::info_span!("stream_exec", pod = %rec.pod_id, container = %rec.id, tty = req.tty);
    async move {
        // A client sends its terminal's size first: when it is already
        // here, the process starts at that size.
        let size = io
            .resize
            .as_mut()
            .and_then(|r| r.try_recv().ok())
            .map(|s| MonitorSize {
                width: s.width,
                height: s.height,
            });
        let request = Request::ExecStream {
            id: rec.id.clone(),
            args: req.cmd.clone(),
            env: Vec::new(),
            cwd: None,
            tty: req.tty,
            stdin: io.stdin.is_some(),
            size,
        };
        let (conn, resp, fds) = super::monitor_session(daemon, &rec, request).await?;
        let pid = match resp {
            Response::ExecStarted { pid } => pid,
            other => {
                return Err(RuntimeError::Other(format!(
                    "unexpected monitor answer to exec_stream: {other:?}"
                )));
            }
        };
        tracing::debug!(pid, cmd = ?req.cmd, "exec started");
        let stdio = Stdio::from_fds(fds, req.tty, io.stdin.is_some())?;
        let code = relay(conn, stdio, io).await;
        match &code {
            Ok(code) => tracing::debug!(pid, exit_code = code, "exec exited"),
            Err(e) => tracing::debug!(pid, error = %e, "exec ended"),
        }
        code
    }
    .instrument(span)
    .await
}

/// The exec's stdio as the monitor passed it.
enum Stdio {
    Terminal(PtyMaster),
    Pipes {
        stdin: Option<OwnedFd>,
        stdout: OwnedFd,
        stderr: OwnedFd,
    },
}

impl Stdio {
    fn from_fds(fds: Vec<OwnedFd>, tty: bool, stdin: bool) -> Result<Stdio, RuntimeError> {
        let wanted = if tty { 1 } else { 2 + stdin as usize };
        let mut fds = super::expect_fds(fds, wanted, "exec_started")?;
        let mut next = || fds.next().expect("counted above");
        if tty {
            let master = PtyMaster::new(next()).map_err(io_error("terminal"))?;
            return Ok(Stdio::Terminal(master));
        }
        Ok(Stdio::Pipes {
            stdin: stdin.then(&mut next),
            stdout: next(),
            stderr: next(),
        })
    }
}

fn io_error(what: &'static str) -> impl Fn(std::io::Error) -> RuntimeError {
    move |e| RuntimeError::Other(format!("exec {what}: {e}"))
}

/// Moves bytes until the process exited and its output is copied; the
/// exit code. Returns early (dropping the monitor connection, which kills
/// the process) when the client is gone.
async fn relay(conn: UnixStream, stdio: Stdio, io: Io) -> Result<i32, RuntimeError> {
    let Io {
        stdin,
        stdout,
        stderr,
        resize,
        mut disconnected,
        ..
    } = io;
    let (outputs, stdin_copy, resizes): (
        futures::future::BoxFuture<'static, ()>,
        futures::future::BoxFuture<'static, ()>,
        futures::future::BoxFuture<'static, ()>,
    ) = match stdio {
        Stdio::Terminal(master) => (
            Box::pin(fd_io::copy_output(master.clone(), stdout)),
            Box::pin(terminal_input(stdin, master.clone())),
            Box::pin(apply_resizes(resize, master)),
        ),
        Stdio::Pipes {
            stdin: stdin_fd,
            stdout: out_fd,
            stderr: err_fd,
        } => {
            let out = fd_io::pipe_reader(out_fd).map_err(io_error("stdout"))?;
            let err = fd_io::pipe_reader(err_fd).map_err(io_error("stderr"))?;
            let stdin_writer = stdin_fd
                .map(fd_io::pipe_writer)
                .transpose()
                .map_err(io_error("stdin"))?;
            (
                Box::pin(copy_both(out, stdout, err, stderr)),
                Box::pin(pipe_input(stdin, stdin_writer)),
                Box::pin(futures::future::pending()),
            )
        }
    };
    let mut exited = Box::pin(wait_exit(conn));
    let (mut outputs, mut stdin_copy, mut resizes) = (outputs, stdin_copy, resizes);
    let mut exit_code = None;
    let mut outputs_done = false;
    let drain = tokio::time::sleep(Duration::MAX);
    tokio::pin!(drain);
    loop {
        tokio::select! {
            code = &mut exited, if exit_code.is_none() => {
                exit_code = Some(code?);
                if outputs_done {
                    break;
                }
                drain.as_mut().reset(tokio::time::Instant::now() + OUTPUT_DRAIN_AFTER_EXIT);
            }
            () = &mut outputs, if !outputs_done => {
                outputs_done = true;
                if exit_code.is_some() {
                    break;
                }
            }
            () = &mut drain, if exit_code.is_some() => {
                tracing::debug!("output still open after the exit (a background process holds it): ending the session");
                break;
            }
            () = &mut stdin_copy => {}
            () = &mut resizes => {}
            () = disconnected.wait() => {
                return Err(RuntimeError::Other("client disconnected: exec killed".into()));
            }
        }
    }
    Ok(exit_code.expect("the loop ends after the exit"))
}

async fn copy_both(
    out: impl AsyncRead + Unpin,
    stdout: Option<OutputWriter>,
    err: impl AsyncRead + Unpin,
    stderr: Option<OutputWriter>,
) {
    tokio::join!(
        fd_io::copy_output(out, stdout),
        fd_io::copy_output(err, stderr)
    );
}

/// Client stdin to the process's stdin pipe; the client's EOF closes the
/// pipe (the process reads EOF). Pending afterwards.
async fn pipe_input(stdin: Option<StdinReader>, writer: Option<tokio::net::unix::pipe::Sender>) {
    if let (Some(stdin), Some(mut writer)) = (stdin, writer) {
        if let Err(e) = fd_io::copy_stdin(stdin, &mut writer).await {
            tracing::debug!(error = %e, "exec stdin");
        }
        drop(writer);
    }
    futures::future::pending().await
}

/// Client stdin to the terminal. The master cannot be closed at the
/// client's EOF (the output comes through it): the terminal's EOF
/// character is written instead, which a process reading its terminal in
/// canonical mode reads as EOF. Pending afterwards.
async fn terminal_input(stdin: Option<StdinReader>, mut master: PtyMaster) {
    if let Some(stdin) = stdin {
        match fd_io::copy_stdin(stdin, &mut master).await {
            Ok(_) => {
                let eof = [master.eof_char()];
                let _ = master.write_all(&eof).await;
            }
            Err(e) => tracing::debug!(error = %e, "exec terminal input"),
        }
    }
    futures::future::pending().await
}

async fn apply_resizes(resize: Option<mpsc::Receiver<TerminalSize>>, master: PtyMaster) {
    if let Some(mut resize) = resize {
        while let Some(size) = resize.recv().await {
            if let Err(e) = master.resize(size) {
                tracing::debug!(error = %e, ?size, "exec terminal resize");
            }
        }
    }
    futures::future::pending().await
}

/// The exit code from the monitor's `exec_exited` line.
async fn wait_exit(conn: UnixStream) -> Result<i32, RuntimeError> {
    // One short line comes: no 8 KiB default buffer held by every session.
    let mut conn = BufReader::with_capacity(256, conn);
    let mut line = String::new();
    let n = conn
        .read_line(&mut line)
        .await
        .map_err(|e| RuntimeError::Other(format!("waiting for the exec's exit: {e}")))?;
    if n == 0 {
        return Err(RuntimeError::Other(
            "the pod's monitor closed the exec's connection before its exit".into(),
        ));
    }
    match serde_json::from_str::<Response>(&line) {
        Ok(Response::ExecExited { exit_code }) => Ok(exit_code),
        Ok(Response::Error(e)) => Err(RuntimeError::Other(e.message)),
        Ok(other) => Err(RuntimeError::Other(format!(
            "unexpected monitor answer for the exec's exit: {other:?}"
        ))),
        Err(e) => Err(RuntimeError::Other(format!(
            "bad monitor answer for the exec's exit: {e}"
        ))),
    }
}
