//! Attach to a running container (`kubectl attach`, `crictl attach`): the
//! pod's monitor, which holds the container's terminal or stdin pipe,
//! hands over a way in (a dup of the master or of stdin's write end) and
//! fresh pipes carrying the container's output from now on. The session
//! ends when the container exits (output EOF), the client goes away, or
//! the client's stdin ends on a `stdin_once` terminal container. Closing
//! the monitor connection detaches; the container keeps running.

use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use berth_monitor_protocol::{Request, Response};
use berth_stream::{AttachRequest, Io, RuntimeError, StdinReader, TerminalSize};
use tokio::net::UnixStream;
use tracing::Instrument;

use super::fd_io;
use crate::container::monitor;
use crate::daemon::Daemon;

pub(super) async fn attach(
    daemon: &Daemon,
    req: AttachRequest,
    io: Io,
) -> Result<(), RuntimeError> {
    let rec = super::running(daemon, &req.container_id).await?;
    let span = tracing::info_span!("stream_attach", pod = %rec.pod_id, container = %rec.id);
    async move {
        let request = Request::Attach {
            id: rec.id.clone(),
            stdin: io.stdin.is_some(),
        };
        let (conn, resp, fds) = super::monitor_session(daemon, &rec, request).await?;
        let (terminal, stdin) = match resp {
            Response::Attached { terminal, stdin } => (terminal, stdin),
            other => {
                return Err(RuntimeError::Other(format!(
                    "unexpected monitor answer to attach: {other:?}"
                )));
            }
        };
        let fds = AttachFds::from_fds(fds, terminal, stdin)?;
        tracing::debug!(terminal, stdin, "attached");
        let dir = daemon.containers().monitor_dir(&rec.pod_id);
        let close_stdin = close_stdin(&dir, &rec.pod_id, &rec.id);
        relay(conn, fds, io, rec.stdin_once, close_stdin).await?;
        tracing::debug!("detached");
        Ok(())
    }
    .instrument(span)
    .await
}

/// The fds of an attach, in the order the monitor sends them.
struct AttachFds {
    /// The container's terminal (a dup of the monitor's master).
    master: Option<Arc<OwnedFd>>,
    /// A dup of the write end of the container's stdin pipe.
    stdin: Option<OwnedFd>,
    stdout: OwnedFd,
    stderr: Option<OwnedFd>,
}

impl AttachFds {
    fn from_fds(fds: Vec<OwnedFd>, terminal: bool, stdin: bool) -> Result<Self, RuntimeError> {
        let wanted = if terminal { 2 } else { 2 + stdin as usize };
        let mut fds = super::expect_fds(fds, wanted, "attached")?;
        let mut next = || fds.next().expect("counted above");
        Ok(if terminal {
            AttachFds {
                master: Some(Arc::new(next())),
                stdin: None,
                stdout: next(),
                stderr: None,
            }
        } else {
            AttachFds {
                master: None,
                stdin: stdin.then(&mut next),
                stdout: next(),
                stderr: Some(next()),
            }
        })
    }
}

fn io_error(what: &'static str) -> impl Fn(std::io::Error) -> RuntimeError {
    move |e| RuntimeError::Other(format!("attach {what}: {e}"))
}

/// After the client's stdin ended on a `stdin_once` terminal container (or
/// with a monitor older than `close_stdin`): how long the output goes on
/// being copied before detaching (which is what closes the container's
/// stdin then), so that the answer to the last input reaches the client.
const STDIN_ONCE_LINGER: Duration = Duration::from_millis(500);
/// After detaching, how long what the monitor already fed may take to be
/// copied (the pipes reach EOF once the monitor dropped them).
const DRAIN_AFTER_DETACH: Duration = Duration::from_secs(2);

/// Asks the monitor to close the container's stdin (`close_stdin`); false
/// when it did not (a monitor older than the op answers `bad_request`).
async fn close_stdin(dir: &Path, pod: &str, id: &str) -> bool {
    let request = Request::CloseStdin { id: id.to_string() };
    match monitor::call(dir, pod, request).await {
        Ok(Response::Ok) => true,
        Ok(other) => {
            tracing::debug!(answer = ?other, "close_stdin: unexpected answer");
            false
        }
        Err(e) => {
            if !e.is_bad_request() {
                tracing::debug!(error = %e, "close_stdin");
            }
            false
        }
    }
}

/// Copies until the container exits or the client goes; dropping `conn`
/// detaches. On a `stdin_once` container the client's stdin ending closes
/// the container's stdin: without a terminal through `close_stdin` (the
/// process reads EOF, and what it writes until it exits still reaches the
/// client, as containerd does), with one (or an old monitor) by detaching
/// a moment later.
async fn relay(
    conn: UnixStream,
    fds: AttachFds,
    io: Io,
    stdin_once: bool,
    close_stdin: impl Future<Output = bool>,
) -> Result<(), RuntimeError> {
    let Io {
        stdin,
        stdout,
        stderr,
        resize,
        mut disconnected,
        ..
    } = io;
    let out = fd_io::pipe_reader(fds.stdout).map_err(io_error("stdout"))?;
    let err = fds
        .stderr
        .map(fd_io::pipe_reader)
        .transpose()
        .map_err(io_error("stderr"))?;
    let outputs = async {
        match err {
            Some(err) => {
                tokio::join!(
                    fd_io::copy_output(out, stdout),
                    fd_io::copy_output(err, stderr)
                );
            }
            None => fd_io::copy_output(out, stdout).await,
        }
    };
    let terminal = fds.master.is_some();
    let input = async {
        match (stdin, &fds.master, fds.stdin) {
            (Some(client), Some(master), _) => terminal_input(client, master.clone()).await,
            (Some(client), None, Some(pipe)) => pipe_input(client, pipe).await,
            // No way in: the client's stdin is read and dropped.
            (Some(mut client), None, None) => {
                let _ = tokio::io::copy(&mut client, &mut tokio::io::sink()).await;
            }
            (None, ..) => futures::future::pending().await,
        }
    };
    let resizes = async {
        if let (Some(mut resize), Some(master)) = (resize, &fds.master) {
            while let Some(size) = resize.recv().await {
                resize_terminal(master, size);
            }
        }
        futures::future::pending::<()>().await
    };
    let input = async {
        input.await;
        // The client's stdin ended: only a stdin_once container's attach
        // does something about it.
        if !stdin_once {
            futures::future::pending::<()>().await;
        }
    };
    tokio::pin!(outputs, resizes);
    tokio::select! {
        // The container exited (its output ended) or the client is gone.
        () = &mut outputs => return Ok(()),
        () = disconnected.wait() => return Ok(()),
        () = &mut resizes => return Ok(()),
        () = input => {}
    }
    if !terminal && close_stdin.await {
        tracing::debug!("the client's stdin ended: the container's stdin is closed");
        tokio::select! {
            () = &mut outputs => {}
            () = disconnected.wait() => {}
        }
        return Ok(());
    }
    // The output of the last input still comes, then detaching closes the
    // container's stdin, and what the monitor fed until then is copied.
    tokio::select! {
        () = &mut outputs => return Ok(()),
        () = disconnected.wait() => return Ok(()),
        () = &mut resizes => return Ok(()),
        () = tokio::time::sleep(STDIN_ONCE_LINGER) => {}
    }
    drop(conn);
    let _ = tokio::time::timeout(DRAIN_AFTER_DETACH, outputs).await;
    Ok(())
}

fn resize_terminal(master: &Arc<OwnedFd>, size: TerminalSize) {
    if let Err(e) = fd_io::resize(master.as_ref(), size) {
        tracing::debug!(error = %e, ?size, "attach terminal resize");
    }
}

/// Client stdin into the container's stdin pipe; at the client's EOF our
/// dup is closed (the monitor's keeps the pipe open for later attaches).
async fn pipe_input(client: StdinReader, pipe: OwnedFd) {
    match fd_io::pipe_writer(pipe) {
        Ok(mut writer) => {
            if let Err(e) = fd_io::copy_stdin(client, &mut writer).await {
                tracing::debug!(error = %e, "attach stdin");
            }
        }
        Err(e) => tracing::debug!(error = %e, "attach stdin"),
    }
}

/// Client stdin into the container's terminal. The master is the
/// monitor's open file (a dup shares its flags and the monitor reads it in
/// its own loop), so berthd neither reads it nor changes its flags: each
/// chunk is written on the blocking pool; typing is a few bytes at a time.
async fn terminal_input(mut client: StdinReader, master: Arc<OwnedFd>) {
    let mut buf = berth_stream::CopyBuf::new();
    loop {
        let chunk = match buf.read_from(&mut client).await {
            Ok([]) | Err(_) => return,
            Ok(data) => data.to_vec(),
        };
        let master = master.clone();
        let written = tokio::task::spawn_blocking(move || write_all_fd(&master, &chunk)).await;
        match written {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "attach terminal input");
                return;
            }
            Err(_) => return,
        }
    }
}

fn write_all_fd(fd: &OwnedFd, mut data: &[u8]) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    while !data.is_empty() {
        match nix::unistd::write(fd, data) {
            Ok(n) => data = &data[n..],
            Err(nix::errno::Errno::EINTR) => {}
            // The file may be the monitor's non-blocking one: wait until
            // the terminal takes input again.
            Err(nix::errno::Errno::EAGAIN) => {
                let mut pfd = libc::pollfd {
                    fd: fd.as_raw_fd(),
                    events: libc::POLLOUT,
                    revents: 0,
                };
                // SAFETY: one valid pollfd for the duration of the call.
                if unsafe { libc::poll(&mut pfd, 1, -1) } < 0 {
                    let e = std::io::Error::last_os_error();
                    if e.kind() != std::io::ErrorKind::Interrupted {
                        return Err(e);
                    }
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
