//! Blocking work (file I/O, mounts) of the pod and container operations,
//! run on tokio's blocking pool; any failure is an Internal [`RuntimeError`].

use crate::error::RuntimeError;

/// Runs `f` on tokio's blocking pool.
pub async fn run<T: Send + 'static>(
    f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> Result<T, RuntimeError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| RuntimeError::Internal(anyhow::anyhow!("blocking task failed: {e}")))?
        .map_err(RuntimeError::Internal)
}
