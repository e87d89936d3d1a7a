//! RemoveContainer: stopped, deleted from the monitor, rootfs and dirs to
//! the trash, record deleted; the trash is emptied after the answer.

use std::time::Duration;

use berth_monitor_protocol::Request;

use super::{ContainerError, Containers, State, image_volume, internal, monitor, recover, rootfs};
use crate::blocking;
use crate::laps::Laps;

impl Containers {
    /// RemoveContainer: stops, deletes from the monitor, unmounts, removes
    /// dirs and lease and record. An unknown id is success (as containerd).
    pub async fn remove(&self, id: &str) -> Result<(), ContainerError> {
        let Some(rec) = self.resolve(id) else {
            tracing::debug!("RemoveContainer of an unknown container: nothing to do");
            return Ok(());
        };
        let lock = self.op_lock(&rec.id);
        let _op = lock.lock().await;
        self.remove_locked(&rec.id).await
    }

    async fn remove_locked(&self, id: &str) -> Result<(), ContainerError> {
        let Some(rec) = self.resolve(id) else {
            return Ok(());
        };
        let mut laps = Laps::new();
        // Answers at once when it already exited.
        if rec.state != State::Exited {
            self.stop_locked(&rec.id, Duration::ZERO).await?;
            laps.mark("stop");
        }
        let pod_dir = self.monitor_dir(&rec.pod_id);
        let req = Request::Delete {
            id: rec.id.clone(),
            force: true,
        };
        match monitor::call(&pod_dir, &rec.pod_id, req).await {
            Ok(_) => {}
            // Gone (it exits once its pod is stopped and no container
            // lives): the cgroups it would have removed go here.
            Err(e @ monitor::CallError::Unreachable { .. }) => {
                tracing::debug!(error = %e, "no monitor: removing the cgroups here");
                let spec = std::fs::read(rec.bundle.join("config.json"))
                    .ok()
                    .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok());
                if let Some(spec) = spec {
                    recover::remove_cgroups(&rec.id, &spec).await;
                }
            }
            Err(e) if e.is_not_found() => {
                tracing::debug!(error = %e, "monitor has nothing to delete")
            }
            Err(e) => return Err(internal(e)),
        }
        laps.mark("monitor_delete");
        // The rootfs leaves the mount table and both dirs go to the trash
        // before the record goes: a crash leaves either the record (and
        // RemoveContainer runs again) or trash that startup empties. The slow
        // part, the overlay's final sync, deleting the upper dir and dropping
        // the image lease (after the overlay released the layers), runs after
        // the answer.
        let (rootfs_dir, bundle, layer_dir) =
            (rec.rootfs(), rec.bundle.clone(), rec.layer_dir.clone());
        let (bt, lt, cid) = (
            self.bundles_trash.clone(),
            self.layers_trash.clone(),
            rec.id.clone(),
        );
        let held = blocking::run(move || {
            let held = rootfs::detach(&rootfs_dir)?;
            // Image volumes live under the bundle: out of the mount table
            // before it moves to the trash and is deleted.
            image_volume::unmount_all(&bundle)?;
            super::idmap::unmount_all(&bundle)?;
            rootfs::to_trash(&bundle, &bt, &cid)?;
            rootfs::unmount_staged_layers(&layer_dir)?;
            rootfs::to_trash(&layer_dir, &lt, &cid)?;
            Ok(held)
        })
        .await?;
        laps.mark("detach_and_trash");
        crate::failpoint::hit("container-remove-trashed");
        self.delete_record(&rec)?;
        laps.mark("record");
        let (images, bt, lt, cid) = (
            self.images.clone(),
            self.bundles_trash.clone(),
            self.layers_trash.clone(),
            rec.id.clone(),
        );
        tokio::task::spawn_blocking(move || recover::empty_trash(&images, &bt, &lt, &cid, held));
        tracing::info!(pod = %rec.pod_id, container = %rec.id, steps = %laps, "container removed");
        Ok(())
    }
}
