//! Port-forward: a TCP connection to localhost:PORT inside the pod's
//! network namespace (127.0.0.1, then ::1, as containerd dials). The
//! socket is made on a short-lived thread of its own that enters the pod's
//! namespace (setns acts on the calling thread only; a tokio worker must
//! never change namespace), then handed to tokio. Host-network pods
//! connect from berthd's own namespace.

use std::fs::File;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream as StdTcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use berth_stream::RuntimeError;
use nix::sched::{CloneFlags, setns};
use tokio::net::TcpStream;

use crate::daemon::Daemon;
use crate::sandbox::{SandboxRecord, SandboxState, pin};

/// A SYN to loopback is answered at once; this only bounds a firewall
/// that drops it.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The sandbox, if it exists and is ready.
pub(super) fn ready_sandbox(daemon: &Daemon, id: &str) -> Result<SandboxRecord, RuntimeError> {
    let rec = daemon
        .sandboxes()
        .resolve(id)
        .ok_or_else(|| RuntimeError::SandboxNotFound(id.to_string()))?;
    if rec.state != SandboxState::Ready {
        return Err(RuntimeError::SandboxNotReady(rec.id));
    }
    Ok(rec)
}

pub(super) async fn connect(
    daemon: &Daemon,
    sandbox: &str,
    port: u16,
) -> Result<TcpStream, RuntimeError> {
    let rec = ready_sandbox(daemon, sandbox)?;
    let unreachable = |reason: String| RuntimeError::PortUnreachable {
        sandbox: rec.id.clone(),
        port,
        reason,
    };
    let stream = match &rec.pins.net {
        // Host network: the host's loopback is the pod's.
        None => tokio::task::spawn_blocking(move || dial_loopback(port))
            .await
            .map_err(|e| unreachable(format!("connect task failed: {e}")))?,
        Some(netns) => {
            if !pin::is_pinned(netns) {
                return Err(RuntimeError::SandboxNotReady(rec.id.clone()));
            }
            dial_in_netns(netns.clone(), port)
                .await
                .map_err(|e| unreachable(format!("connect thread failed: {e}")))?
        }
    }
    .map_err(unreachable)?;
    stream
        .set_nonblocking(true)
        .and_then(|()| TcpStream::from_std(stream))
        .map_err(|e| unreachable(e.to_string()))
}

/// Runs [`dial_loopback`] on a new thread inside the namespace at `netns`.
async fn dial_in_netns(
    netns: PathBuf,
    port: u16,
) -> Result<Result<StdTcpStream, String>, tokio::sync::oneshot::error::RecvError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name("berth-portfwd".into())
        .spawn(move || {
            let _ = tx.send(enter_netns(&netns).and_then(|()| dial_loopback(port)));
            // The thread ends here, its namespace with it.
        });
    if let Err(e) = spawned {
        return Ok(Err(format!("cannot start a thread: {e}")));
    }
    rx.await
}

fn enter_netns(netns: &Path) -> Result<(), String> {
    let file = File::open(netns).map_err(|e| {
        format!(
            "cannot open the pod's network namespace {}: {e}",
            netns.display()
        )
    })?;
    setns(&file, CloneFlags::CLONE_NEWNET).map_err(|e| {
        format!(
            "cannot enter the pod's network namespace {}: {e}",
            netns.display()
        )
    })
}

/// IPv4 loopback first, then IPv6 (a server bound to `::1` only).
fn dial_loopback(port: u16) -> Result<StdTcpStream, String> {
    let v4 = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let v6 = SocketAddr::from((Ipv6Addr::LOCALHOST, port));
    match StdTcpStream::connect_timeout(&v4, CONNECT_TIMEOUT) {
        Ok(s) => Ok(s),
        Err(e4) => StdTcpStream::connect_timeout(&v6, CONNECT_TIMEOUT)
            .map_err(|e6| format!("{v4}: {e4}; {v6}: {e6}")),
    }
}
