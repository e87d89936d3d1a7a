//! ExecSync, ReopenContainerLog and UpdateContainerResources: thin calls to
//! the pod's monitor, which runs the exec (libcontainer tenant) and writes
//! the live cgroup.

use std::time::Duration;

use berth_api::v1::LinuxContainerResources;
use berth_monitor_protocol::{Request, Response};

use super::{ContainerError, Containers, State, internal, monitor};

/// Cap on ExecSync stdout + stderr: just under the kubelet's 16 MiB gRPC
/// message limit, so a capped answer still reaches it.
pub const MAX_OUTPUT: usize = (16 << 20) - 4096;

/// How an ExecSync ended.
#[derive(Debug)]
pub enum ExecOutcome {
    Exited {
        exit_code: i32,
        stdout: Vec<u8>,
        stderr: Vec<u8>,
    },
    /// Killed at the deadline.
    TimedOut,
}

impl Containers {
    /// The record of a RUNNING container, refreshed; else NotFound or
    /// FailedPrecondition naming `what`.
    pub(crate) async fn running(
        &self,
        id: &str,
        what: &str,
    ) -> Result<super::ContainerRecord, ContainerError> {
        let rec = self.refresh(self.must(id)?).await?;
        if rec.state != State::Running {
            return Err(ContainerError::FailedPrecondition(format!(
                "container {} is {:?}, not RUNNING: cannot {what}",
                rec.id, rec.state
            )));
        }
        Ok(rec)
    }

    /// As [`running`](Self::running), but the cached record is enough when
    /// it says RUNNING (the monitor's subscription keeps it current, and
    /// the monitor checks again when it starts anything in the container):
    /// no monitor round trip on the hot paths (ExecSync, Exec, Attach).
    pub(crate) async fn running_cached(
        &self,
        id: &str,
        what: &str,
    ) -> Result<super::ContainerRecord, ContainerError> {
        match self.must(id)? {
            rec if rec.state == State::Running => Ok(rec),
            _ => self.running(id, what).await,
        }
    }

    /// A running container whose pod's monitor can stream (Exec, Attach):
    /// NotFound, or FailedPrecondition naming `what` and what to do.
    pub async fn streaming_target(
        &self,
        id: &str,
        what: &str,
    ) -> Result<super::ContainerRecord, ContainerError> {
        let rec = self.running_cached(id, what).await?;
        monitor::require_streaming(&self.monitor_dir(&rec.pod_id), &rec.pod_id).await?;
        Ok(rec)
    }

    /// ExecSync: runs `cmd` in the container, output capped at [`MAX_OUTPUT`].
    pub async fn exec_sync(
        &self,
        id: &str,
        cmd: Vec<String>,
        timeout: Duration,
    ) -> Result<ExecOutcome, ContainerError> {
        if cmd.is_empty() {
            return Err(ContainerError::InvalidArgument(
                "cmd is required".to_string(),
            ));
        }
        // A refusal by the monitor is mapped below as if checked here.
        let rec = self.running_cached(id, "exec in it").await?;
        let req = Request::Exec {
            id: rec.id.clone(),
            args: cmd,
            env: Vec::new(),
            cwd: None,
            timeout_ms: timeout.as_millis() as u64,
            max_output: MAX_OUTPUT,
        };
        match monitor::call(&self.monitor_dir(&rec.pod_id), &rec.pod_id, req).await {
            Ok(Response::Exec {
                timed_out: true, ..
            }) => Ok(ExecOutcome::TimedOut),
            Ok(Response::Exec {
                exit_code,
                stdout,
                stderr,
                truncated,
                ..
            }) => {
                if truncated {
                    tracing::warn!(limit = MAX_OUTPUT, "exec output truncated");
                }
                Ok(ExecOutcome::Exited {
                    exit_code,
                    stdout,
                    stderr,
                })
            }
            Ok(other) => Err(internal(anyhow::anyhow!(
                "unexpected monitor answer to exec: {other:?}"
            ))),
            Err(e) => {
                // It may have exited between the check and the exec.
                let rec = self.refresh(rec).await?;
                if rec.state != State::Running {
                    return Err(ContainerError::FailedPrecondition(format!(
                        "container {} is {:?}, not RUNNING: cannot exec in it",
                        rec.id, rec.state
                    )));
                }
                Err(internal(e))
            }
        }
    }

    /// ReopenContainerLog: the monitor reopens the log file (the kubelet
    /// renamed it). Only for a running container, as containerd.
    pub async fn reopen_log(&self, id: &str) -> Result<(), ContainerError> {
        let rec = self.running(id, "reopen its log").await?;
        let req = Request::ReopenLog { id: rec.id.clone() };
        monitor::call(&self.monitor_dir(&rec.pod_id), &rec.pod_id, req)
            .await
            .map_err(internal)?;
        Ok(())
    }

    /// UpdateContainerResources: the CRI resources, checked and converted as
    /// at create, written to the live cgroup by the monitor.
    pub async fn update_resources(
        &self,
        id: &str,
        cri: &LinuxContainerResources,
    ) -> Result<(), ContainerError> {
        let rec = self.must(id)?;
        let lock = self.op_lock(&rec.id);
        let _op = lock.lock().await;
        let rec = self.refresh(self.must(&rec.id)?).await?;
        if rec.state == State::Exited {
            return Err(ContainerError::FailedPrecondition(format!(
                "container {} has exited: cannot update its resources",
                rec.id
            )));
        }
        let mut res = berth_spec::oci_spec::runtime::LinuxResources::default();
        berth_spec::resources::apply(Some(cri), &self.host, &mut res)
            .map_err(|e| ContainerError::InvalidArgument(e.to_string()))?;
        // The pids limit comes from the daemon's config, not the CRI: leave it.
        res.set_pids(None);
        let resources = serde_json::to_value(&res).map_err(internal)?;
        let req = Request::Update {
            id: rec.id.clone(),
            resources,
        };
        monitor::call(&self.monitor_dir(&rec.pod_id), &rec.pod_id, req)
            .await
            .map_err(internal)?;
        // ContainerStatus reports the resources as updated.
        let mut rec = self.must(&rec.id)?;
        rec.resources.get_or_insert_default().update(&res);
        self.put(&rec)?;
        tracing::info!(container = %rec.id, "container resources updated");
        Ok(())
    }
}
