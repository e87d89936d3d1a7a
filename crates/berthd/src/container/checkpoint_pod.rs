//! CheckpointPod's capture: every selected container of one pod frozen
//! (cgroup freezer) before CRIU captures any, each then dumped and archived
//! as CheckpointContainer does while all stay frozen (CRIU seizes a frozen
//! cgroup with `--freeze-cgroup` and leaves it frozen), then all thawed,
//! whatever happened: success, a failure, the deadline. One consistent cut
//! of the pod, and never a pod left frozen: not even by a berthd killed
//! during it (criu dies with it, see crate::lifeline), as a marker file
//! written before the first freeze has a restarted berthd thaw the pod
//! (checkpoint::remove_leftovers).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use berth_cgroup::{Cgroup, Layout};

use super::checkpoint::CriuOptions;
use super::{ContainerError, ContainerRecord, Containers, internal};

/// One container of a pod checkpoint: its record, and where its archive
/// is to go.
pub struct PodMember {
    pub id: String,
    pub archive: PathBuf,
}

/// Thaws what it holds when dropped: the pod runs again on every path out.
/// Its marker ([`write_thaw_marker`]) goes with it.
struct Thaw {
    cgroups: Vec<(String, Cgroup)>,
    marker: PathBuf,
}

impl Drop for Thaw {
    fn drop(&mut self) {
        for (id, cgroup) in &self.cgroups {
            if let Err(e) = cgroup.thaw() {
                tracing::error!(container = %id, error = %e, "cannot thaw the container after its pod's checkpoint");
            }
        }
        if let Err(e) = std::fs::remove_file(&self.marker) {
            tracing::warn!(marker = %self.marker.display(), error = %e, "cannot remove a pod checkpoint's thaw marker");
        }
    }
}

/// The suffix of a thaw marker's name in the checkpoint work dir.
pub(super) const THAW_MARKER: &str = ".thaw";

/// Writes `<base>/<pod>.<nonce>.thaw`, the freezer dirs of `cgroups` one a
/// line, before any is frozen: what a berthd restarted after a crash in the
/// middle of the checkpoint thaws.
fn write_thaw_marker(base: &Path, pod_id: &str, cgroups: &[Cgroup]) -> anyhow::Result<PathBuf> {
    use anyhow::Context;
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(base)
        .with_context(|| format!("cannot create {}", base.display()))?;
    let marker = base.join(format!("{pod_id}.{}{THAW_MARKER}", crate::ids::now_ns()));
    let mut text = String::new();
    for dir in cgroups.iter().filter_map(Cgroup::freezer_dir) {
        text.push_str(&dir.to_string_lossy());
        text.push('\n');
    }
    std::fs::write(&marker, text).with_context(|| format!("cannot write {}", marker.display()))?;
    Ok(marker)
}

impl Containers {
    /// Checkpoints `members` (running containers of `pod_id`, each once)
    /// into their archives within `opts.timeout` in all. The records as
    /// they were captured, in `members`' order.
    pub async fn checkpoint_pod(
        &self,
        pod_id: &str,
        pod_cgroup_parent: &str,
        members: &[PodMember],
        opts: &CriuOptions,
    ) -> Result<Vec<ContainerRecord>, ContainerError> {
        let started = Instant::now();
        let deadline = started + opts.timeout;
        let mut ids = Vec::with_capacity(members.len());
        for m in members {
            let rec = self.must(&m.id)?;
            if rec.pod_id != pod_id {
                return Err(ContainerError::InvalidArgument(format!(
                    "container {} belongs to pod {}, not to {pod_id}",
                    rec.id, rec.pod_id
                )));
            }
            ids.push(rec.id);
        }
        // Every member's op lock, in one order (no deadlock with another
        // pod checkpoint): no stop or remove while the pod is cut.
        ids.sort();
        let mut guards = Vec::with_capacity(ids.len());
        for id in &ids {
            guards.push(self.op_lock(id).lock_owned().await);
        }
        let mut running = Vec::with_capacity(members.len());
        for m in members {
            running.push(self.running_for_checkpoint(&m.id).await?);
        }

        let layout = Layout::detect().ok_or_else(|| {
            ContainerError::FailedPrecondition(
                "no cgroup filesystem is mounted: a pod checkpoint freezes its containers"
                    .to_string(),
            )
        })?;
        let mut cgroups = Vec::with_capacity(running.len());
        for (rec, _) in &running {
            cgroups.push(container_cgroup(&layout, pod_cgroup_parent, &rec.id)?);
        }
        // Frozen one after the other; each is thawed by `thaw` once it is
        // in it, also if a later one fails.
        let marker = {
            let (base, pod, all) = (
                self.checkpoint_work_dir.clone(),
                pod_id.to_string(),
                cgroups.clone(),
            );
            crate::blocking::run(move || write_thaw_marker(&base, &pod, &all)).await?
        };
        let mut thaw = Thaw {
            cgroups: Vec::with_capacity(cgroups.len()),
            marker,
        };
        for ((rec, _), cgroup) in running.iter().zip(&cgroups) {
            let left = remaining(deadline, &rec.id)?;
            thaw.cgroups.push((rec.id.clone(), cgroup.clone()));
            let c = cgroup.clone();
            crate::blocking::run(move || Ok(c.freeze(left)?))
                .await
                .map_err(|e| {
                    ContainerError::FailedPrecondition(format!(
                        "cannot pause container {} for the pod checkpoint: {e}",
                        rec.id
                    ))
                })?;
        }
        tracing::info!(pod = %pod_id, containers = running.len(), freeze_ms = started.elapsed().as_millis() as u64, "pod frozen for its checkpoint");

        for (((rec, pid), cgroup), m) in running.iter().zip(&cgroups).zip(members) {
            let opts = CriuOptions {
                criu: opts.criu.clone(),
                timeout: remaining(deadline, &rec.id)?,
            };
            let freezer = cgroup.freezer_dir().map(Path::to_path_buf);
            self.checkpoint_locked(rec, *pid, &m.archive, &opts, freezer.as_deref(), started)
                .await?;
        }
        drop(thaw);
        tracing::info!(pod = %pod_id, containers = running.len(), total_ms = started.elapsed().as_millis() as u64, "pod checkpointed");
        drop(guards);
        Ok(running.into_iter().map(|(rec, _)| rec).collect())
    }
}

/// The time left before `deadline`, or DeadlineExceeded naming what was
/// next.
fn remaining(deadline: Instant, next: &str) -> Result<Duration, ContainerError> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(ContainerError::DeadlineExceeded(format!(
            "the pod checkpoint ran out of time before container {next}"
        )));
    }
    Ok(left)
}

/// The container's cgroup, where CreateContainer put it
/// ([`Containers::cgroups_path_of`]).
fn container_cgroup(
    layout: &Layout,
    pod_cgroup_parent: &str,
    id: &str,
) -> Result<Cgroup, ContainerError> {
    let cgroup = Containers::cgroups_path_of(pod_cgroup_parent, id)
        .and_then(|path| Cgroup::of(layout, &path))
        .ok_or_else(|| {
            internal(anyhow::anyhow!(
                "container {id}'s cgroup (pod cgroup parent {pod_cgroup_parent:?}) is not below the cgroup root"
            ))
        })?;
    if cgroup.freezer_dir().is_none() {
        return Err(ContainerError::FailedPrecondition(
            "this host has no cgroup freezer (v1 `freezer` hierarchy or cgroup v2): a pod \
             checkpoint cannot pause its containers"
                .to_string(),
        ));
    }
    Ok(cgroup)
}
