//! Startup recovery: whatever a crash left of CreateContainer (an
//! unrecorded container) or RemoveContainer (its trash) is removed.

use std::collections::{BTreeSet, HashSet};
use std::path::Path;

use berth_image::ImageStore;
use berth_monitor_protocol::Request;

use super::{Containers, monitor, rootfs};
use crate::blocking;

/// What a crash left in the trash: containers whose record is gone, or
/// going (RemoveContainer moves dirs first, then deletes the record).
/// Their rootfs is unmounted, so their image lease can go too. Emptied on
/// a thread of its own: startup does not wait for it.
pub(super) fn empty_leftover_trash(images: &ImageStore, bundles_trash: &Path, layers_trash: &Path) {
    let leftovers: BTreeSet<String> = [bundles_trash, layers_trash]
        .iter()
        .flat_map(|t| rootfs::trash_entries(t))
        .collect();
    if !leftovers.is_empty() {
        let (images, bt, lt) = (
            images.clone(),
            bundles_trash.to_path_buf(),
            layers_trash.to_path_buf(),
        );
        std::thread::spawn(move || {
            for id in leftovers {
                empty_trash(&images, &bt, &lt, &id, None);
            }
        });
    }
}

/// Startup reconciliation of what a crashed CreateContainer left: its
/// record is written last, so a crash before it leaves an image lease, the
/// rootfs mount, bundle and upper dirs and, once the monitor was asked, a
/// created container with its cgroups, all unknown to the records.
impl Containers {
    pub async fn reconcile_orphans(&self) {
        let known: HashSet<String> = self.lock().records.keys().cloned().collect();
        let trashed: HashSet<String> = [&self.bundles_trash, &self.layers_trash]
            .iter()
            .flat_map(|t| rootfs::trash_entries(t))
            .collect();
        let mut orphans: BTreeSet<String> = [&self.bundles_dir, &self.layers_dir]
            .iter()
            .flat_map(|d| rootfs::trash_entries(d))
            .collect();
        match self.images.leases() {
            Ok(leases) => orphans.extend(leases),
            Err(e) => tracing::warn!(error = %e, "cannot list image leases"),
        }
        orphans.retain(|id| !known.contains(id) && !trashed.contains(id));
        for id in orphans {
            crate::failpoint::hit("container-reconcile-orphan");
            tracing::warn!(container = %id, "leftover of an interrupted CreateContainer: removing it");
            self.discard(&id).await;
        }
    }

    /// Removes every trace of a container that has no record: the monitor's
    /// container, its cgroups, the rootfs mount, bundle and upper dirs, the
    /// image lease.
    async fn discard(&self, id: &str) {
        let bundle = self.bundles_dir.join(id);
        // The bundle names the pod (and so its monitor) and the cgroups.
        let spec = std::fs::read(bundle.join("config.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok());
        if let Some(spec) = &spec {
            let pod = spec["annotations"][berth_spec::annotations::SANDBOX_ID]
                .as_str()
                .unwrap_or_default()
                .to_string();
            if !pod.is_empty() {
                let req = Request::Delete {
                    id: id.to_string(),
                    force: true,
                };
                if let Err(e) = monitor::call(&self.monitor_dir(&pod), &pod, req).await
                    && !(matches!(e, monitor::CallError::Unreachable { .. }) || e.is_not_found())
                {
                    tracing::warn!(container = %id, error = %e, "monitor delete of a leftover");
                }
            }
            // A monitor that is gone deleted nothing: the cgroups go here.
            remove_cgroups(id, spec).await;
        }
        let (bt, lt, images) = (
            self.bundles_trash.clone(),
            self.layers_trash.clone(),
            self.images.clone(),
        );
        let layer_dir = self.layers_dir.join(id);
        let cid = id.to_string();
        let done = blocking::run(move || {
            let held = rootfs::detach(&bundle.join("rootfs"))?;
            super::image_volume::unmount_all(&bundle)?;
            super::idmap::unmount_all(&bundle)?;
            rootfs::to_trash(&bundle, &bt, &cid)?;
            rootfs::unmount_staged_layers(&layer_dir)?;
            rootfs::to_trash(&layer_dir, &lt, &cid)?;
            empty_trash(&images, &bt, &lt, &cid, held);
            Ok(())
        })
        .await;
        if let Err(e) = done {
            tracing::error!(container = %id, error = %e, "cannot remove a leftover container");
        }
    }

    /// Containers the pod's monitor holds that no record names (a create
    /// cut short by a crash): force-deleted before the monitor is told to
    /// shut down, so none keeps it, its cgroups or the pod's namespaces alive.
    pub(super) async fn delete_unrecorded(&self, pod_id: &str) {
        let dir = self.monitor_dir(pod_id);
        let Ok(listed) = monitor::list(&dir, pod_id).await else {
            return;
        };
        for c in listed {
            let (recorded, in_flight) = {
                let inner = self.lock();
                (
                    inner.records.contains_key(&c.id),
                    // A CreateContainer still running holds its name.
                    inner.names.values().any(|v| *v == c.id),
                )
            };
            if recorded || in_flight {
                continue;
            }
            tracing::warn!(pod = pod_id, container = %c.id, "monitor holds an unrecorded container: deleting it");
            self.discard(&c.id).await;
        }
    }
}

/// Removes the cgroups named by a container's spec (`config.json`), for
/// when its monitor is gone and so cannot (it removes them on delete).
pub(super) async fn remove_cgroups(id: &str, spec: &serde_json::Value) {
    if let Some(cg) = spec["linux"]["cgroupsPath"].as_str() {
        let cg = cg.to_string();
        if let Err(e) = blocking::run(move || Ok(berth_cgroup::remove(&cg)?)).await {
            tracing::warn!(container = %id, error = %e, "cannot remove the cgroups of a container whose monitor is gone");
        }
    }
}

/// The background half of RemoveContainer (and startup's for what a crash
/// left): releases the detached overlay (its final sync runs here), drops
/// the image lease, deletes the trashed dirs. Errors are logged: the lease
/// and dirs are retried at the next startup only if the dirs remain.
pub(super) fn empty_trash(
    images: &ImageStore,
    bundles_trash: &Path,
    layers_trash: &Path,
    id: &str,
    held: Option<std::os::fd::OwnedFd>,
) {
    drop(held);
    if let Err(e) = images.unlease(id) {
        tracing::warn!(container = %id, error = %e, "cannot drop the image lease of a removed container");
    }
    for t in [bundles_trash, layers_trash] {
        if let Err(e) = rootfs::empty_trash_entry(t, id) {
            tracing::warn!(container = %id, error = %format!("{e:#}"), "cannot delete the dirs of a removed container");
        }
    }
}
