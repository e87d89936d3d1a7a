//! The CRI unix socket: exclusive ownership, stale-socket recovery, serving
//! both services, and a clean shutdown that removes the socket.

use std::fs::File;
use std::io::ErrorKind;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use berth_api::admin::v1::admin_server::AdminServer;
use berth_api::v1::image_service_server::ImageServiceServer;
use nix::fcntl::{Flock, FlockArg};
use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;

use crate::cri;
use crate::daemon::Daemon;

/// The exclusive claim on a socket path, taken before any state is touched.
pub struct Claim {
    path: PathBuf,
    lock: Flock<File>,
}

/// The listening socket plus the lock that makes it ours.
pub struct Socket {
    path: PathBuf,
    listener: UnixListener,
    _lock: Flock<File>,
}

/// Claims the socket path for this process. A live daemon on the same path is
/// refused; a socket left by a dead one is removed.
pub fn claim(path: &Path) -> anyhow::Result<Claim> {
    let parent = path
        .parent()
        .with_context(|| format!("socket path {} has no parent directory", path.display()))?;
    std::fs::create_dir_all(parent)
        .with_context(|| format!("cannot create socket directory {}", parent.display()))?;

    // The lock file serialises daemons racing for the same path; connecting
    // to the socket alone cannot tell "starting up" from "dead".
    let lock_path = lock_path(path);
    let lock_file = File::create(&lock_path)
        .with_context(|| format!("cannot create lock file {}", lock_path.display()))?;
    let lock = Flock::lock(lock_file, FlockArg::LockExclusiveNonblock).map_err(|(_, errno)| {
        anyhow::anyhow!(
            "another berthd is already serving on {} (lock {} is held: {errno}); stop it first or pass another --listen",
            path.display(),
            lock_path.display()
        )
    })?;

    match std::fs::symlink_metadata(path) {
        Ok(meta) if !meta.file_type().is_socket() => bail!(
            "{} exists and is not a socket; refusing to replace it",
            path.display()
        ),
        Ok(_) => match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => bail!(
                "another process is already serving on {}; stop it first or pass another --listen",
                path.display()
            ),
            Err(_) => {
                tracing::warn!(socket = %path.display(), "replacing stale socket left by a dead daemon");
                std::fs::remove_file(path)
                    .with_context(|| format!("cannot remove stale socket {}", path.display()))?;
            }
        },
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot inspect {}", path.display())),
    }

    Ok(Claim {
        path: path.to_path_buf(),
        lock,
    })
}

impl Claim {
    /// Creates the socket, mode 0660 (root and the kubelet's group).
    pub fn listen(self) -> anyhow::Result<Socket> {
        let path = self.path;
        let listener = UnixListener::bind(&path)
            .with_context(|| format!("cannot listen on {}", path.display()))?;
        if let Err(e) = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o660)) {
            let _ = std::fs::remove_file(&path);
            return Err(e).with_context(|| format!("cannot set mode 0660 on {}", path.display()));
        }
        Ok(Socket {
            path,
            listener,
            _lock: self.lock,
        })
    }
}

fn lock_path(socket: &Path) -> PathBuf {
    let mut name = socket.file_name().unwrap_or_default().to_os_string();
    name.push(".lock");
    socket.with_file_name(name)
}

/// Largest CRI request decoded (a CreateContainer with many mounts, envs
/// and annotations stays far below it).
const MAX_REQUEST: usize = 16 << 20;

/// How long in-flight RPCs get to finish after SIGTERM before berthd exits anyway.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// Serves both CRI services until `shutdown` resolves, then removes the socket.
/// Connections get [`SHUTDOWN_GRACE`] to drain: a client that never closes its
/// connection must not keep the daemon alive.
pub async fn serve(
    socket: Socket,
    daemon: Arc<Daemon>,
    streaming: Arc<berth_stream::StreamingServer>,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let (runtime, image) = cri::services(daemon.clone(), streaming.clone());
    let Socket {
        path,
        listener,
        _lock,
    } = socket;
    tracing::info!(socket = %path.display(), "serving CRI runtime.v1");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let mut server = tokio::spawn(
        tonic::transport::Server::builder()
            .trace_fn(|req| tracing::info_span!("cri", rpc = req.uri().path()))
            .layer(crate::rpc_layer::RpcLayer)
            .add_service(cri::RuntimeRoutes::new(
                runtime,
                daemon.clone(),
                MAX_REQUEST,
            ))
            .add_service(ImageServiceServer::new(image).max_decoding_message_size(MAX_REQUEST))
            // Berth's own admin API (berthctl) on the same socket.
            .add_service(AdminServer::new(crate::admin::AdminSvc::new(daemon)))
            .serve_with_incoming_shutdown(UnixListenerStream::new(listener), async {
                let _ = stop_rx.await;
            }),
    );
    let result = tokio::select! {
        r = &mut server => r,
        () = shutdown => {
            let _ = stop_tx.send(());
            match tokio::time::timeout(SHUTDOWN_GRACE, &mut server).await {
                Ok(r) => r,
                Err(_) => {
                    tracing::warn!(grace = ?SHUTDOWN_GRACE, "connections still open after the grace period; closing them");
                    server.abort();
                    Ok(Ok(()))
                }
            }
        }
    };
    // Ends the exec/attach/port-forward sessions still open.
    streaming.shutdown();
    let result: anyhow::Result<()> = match result {
        Ok(served) => served.context("CRI server failed"),
        Err(join) => Err(anyhow::anyhow!("CRI server task failed: {join}")),
    };
    // Remove the socket while still holding the lock, so no new daemon's socket is removed.
    if let Err(e) = std::fs::remove_file(&path) {
        tracing::warn!(socket = %path.display(), error = %e, "cannot remove socket");
    }
    result
}
