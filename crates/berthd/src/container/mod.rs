//! Containers: durable records, overlay rootfs, bundles, and the lifecycle
//! driven through the pod's monitor (which runs libcontainer; berthd never
//! does, being multi-threaded).
//!
//! Layout: bundle (`config.json`) and rootfs mount point under
//! `<state>/containers/<id>/`; overlay upper/work dirs under
//! `<root>/containers/<id>/`, so a container's disk cost is its upper dir.
//!
//! This file holds [`Containers`], its record cache and store; each
//! operation is an `impl Containers` block in a file of its own.

pub mod exec;
pub mod image_volume;
pub mod monitor;
pub mod record;
pub mod rootfs;

mod checkpoint;
mod checkpoint_archive;
mod checkpoint_pod;
mod create;
pub mod events;
mod idmap;
mod list;
mod old_monitor;
mod pod;
mod recover;
mod remove;
mod restore;
mod start;
mod status;
mod stop;
pub mod watch;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use berth_image::ImageStore;
use redb::{Database, ReadableTable, TableDefinition};

pub use checkpoint::CriuOptions;
pub use checkpoint_pod::PodMember;
pub use record::{ContainerRecord, State};

pub use crate::error::RuntimeError as ContainerError;

/// The op-lock key of a pod's monitor spawns (container ids are hex: no
/// clash).
fn monitor_spawn_key(pod_id: &str) -> String {
    format!("monitor/{pod_id}")
}
use crate::error::db_err;
use crate::store::StoreError;

/// id → JSON [`ContainerRecord`].
const CONTAINERS: TableDefinition<&str, &str> = TableDefinition::new("containers");

fn internal(e: impl Into<anyhow::Error>) -> ContainerError {
    ContainerError::Internal(e.into())
}

/// The user namespace of a `hostUsers: false` pod: its pin (what the
/// containers join, and what idmapped mounts map through) and its maps.
#[derive(Clone, Debug)]
pub struct PodUserns {
    pub pin: PathBuf,
    pub maps: berth_spec::userns::UsernsMaps,
}

impl PodUserns {
    /// The pod's, if it has one: its config asks for one (checked at
    /// RunPodSandbox) and RunPodSandbox pinned it.
    pub fn of(
        pod: &crate::sandbox::SandboxRecord,
        config: &berth_api::v1::PodSandboxConfig,
    ) -> Result<Option<PodUserns>, ContainerError> {
        let opts = config
            .linux
            .as_ref()
            .and_then(|l| l.security_context.as_ref())
            .and_then(|s| s.namespace_options.as_ref());
        let Some(maps) =
            berth_spec::userns::from_options(opts).map_err(ContainerError::InvalidArgument)?
        else {
            return Ok(None);
        };
        let pin = pod.pins.user.clone().ok_or_else(|| {
            internal(anyhow::anyhow!(
                "pod {} asks for a user namespace but none is pinned",
                pod.id
            ))
        })?;
        Ok(Some(PodUserns { pin, maps }))
    }
}

#[derive(Default)]
struct Inner {
    records: BTreeMap<String, ContainerRecord>,
    /// Reservation key → id, held from the start of CreateContainer.
    names: HashMap<String, String>,
    /// Per-container operation locks: a stop waiting out its timeout must
    /// not block other containers.
    ops: HashMap<String, Arc<tokio::sync::Mutex<()>>>,
}

pub struct Containers {
    db: Arc<Database>,
    images: ImageStore,
    /// `<state>/pods`: each pod's state dir (its /etc files).
    pods_dir: PathBuf,
    /// `<state>/monitors`: each pod's monitor state dir (see [`monitor::state_dir`]).
    monitors_dir: PathBuf,
    /// `<state>/containers`: bundles and rootfs mount points.
    bundles_dir: PathBuf,
    /// `<root>/containers`: overlay upper dirs.
    layers_dir: PathBuf,
    host: berth_spec::HostEnv,
    /// Never held across an await.
    inner: Mutex<Inner>,
    /// Persists the non-durable state-cache commits ([`Containers::put_cache`]).
    flusher: Arc<record::Flusher>,
    /// `<state>/containers-trash`, `<root>/containers-trash`: bundles and
    /// upper dirs of removed containers, deleted in the background (and at
    /// startup, whatever a crash left there).
    bundles_trash: PathBuf,
    layers_trash: PathBuf,
    /// `<root>/checkpoint-work`: CheckpointContainer's scratch dirs.
    checkpoint_work_dir: PathBuf,
    /// The subscriptions to the pod monitors' events.
    watches: Arc<watch::Watches>,
    /// Their updates, until the daemon takes them to apply.
    updates: Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<watch::Update>>>,
    /// Lifecycle events for GetContainerEvents ([`events`]).
    events: tokio::sync::broadcast::Sender<events::ContainerEvent>,
    /// The same events for NRI plugins, in order (set when NRI is on).
    nri_notices: std::sync::OnceLock<tokio::sync::mpsc::UnboundedSender<crate::nri::Notice>>,
    /// NRI plugins, asked before a container is created (set when NRI is on).
    nri: std::sync::OnceLock<berth_nri::Nri>,
    /// The state dir, canonical, once it is a mount point: monitors then
    /// build containers without the other pods' mounts ([`crate::state_mount`]).
    mounts_root: std::sync::OnceLock<PathBuf>,
}

impl Containers {
    pub fn open(
        db: Arc<Database>,
        root: &Path,
        state: &Path,
        images: ImageStore,
        watch_timing: watch::Timing,
    ) -> Result<Containers, StoreError> {
        let txn = db.begin_write()?;
        let mut inner = Inner::default();
        {
            let table = txn.open_table(CONTAINERS)?;
            for entry in table.iter()? {
                let (k, v) = entry?;
                match serde_json::from_str::<ContainerRecord>(v.value()) {
                    Ok(rec) => {
                        inner.names.insert(rec.reservation_key(), rec.id.clone());
                        inner.records.insert(rec.id.clone(), rec);
                    }
                    Err(e) => {
                        tracing::error!(container = k.value(), error = %e, "unreadable container record, ignored")
                    }
                }
            }
        }
        txn.commit()?;
        tracing::info!(count = inner.records.len(), "containers loaded");
        let flusher = record::Flusher::start(&db);
        let (bundles_trash, layers_trash) = (
            state.join("containers-trash"),
            root.join("containers-trash"),
        );
        recover::empty_leftover_trash(&images, &bundles_trash, &layers_trash);
        let checkpoint_work_dir = root.join("checkpoint-work");
        checkpoint::remove_leftovers(&checkpoint_work_dir);
        let (watches, updates) = watch::Watches::new(watch_timing);
        Ok(Containers {
            db,
            images,
            pods_dir: state.join("pods"),
            monitors_dir: state.join("monitors"),
            bundles_dir: state.join("containers"),
            layers_dir: root.join("containers"),
            host: berth_spec::HostEnv::detect(),
            inner: Mutex::new(inner),
            flusher,
            bundles_trash,
            layers_trash,
            checkpoint_work_dir,
            watches,
            updates: Mutex::new(Some(updates)),
            nri_notices: std::sync::OnceLock::new(),
            nri: std::sync::OnceLock::new(),
            events: events::channel(),
            mounts_root: std::sync::OnceLock::new(),
        })
    }

    /// The state dir is the mount point `root` ([`crate::state_mount`]):
    /// monitors spawned from now on build in a view of the pod's mounts only.
    pub fn set_mounts_root(&self, root: PathBuf) {
        let _ = self.mounts_root.set(root);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn op_lock(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.lock().ops.entry(id.to_string()).or_default().clone()
    }

    /// The lock a pod's monitor spawns take turns on (one monitor per pod;
    /// different pods' spawn at once), kept with the op locks until
    /// RemovePodSandbox.
    fn monitor_spawn_lock(&self, pod_id: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.op_lock(&monitor_spawn_key(pod_id))
    }

    fn pod_dir(&self, pod_id: &str) -> PathBuf {
        self.pods_dir.join(pod_id)
    }

    pub(crate) fn monitor_dir(&self, pod_id: &str) -> PathBuf {
        monitor::state_dir(&self.monitors_dir, pod_id)
    }

    /// Exact id, or a unique prefix of one.
    pub fn resolve(&self, id: &str) -> Option<ContainerRecord> {
        if id.is_empty() {
            return None;
        }
        let inner = self.lock();
        if let Some(r) = inner.records.get(id) {
            return Some(r.clone());
        }
        let mut hits = inner
            .records
            .range(id.to_string()..)
            .take_while(|(k, _)| k.starts_with(id));
        match (hits.next(), hits.next()) {
            (Some((_, r)), None) => Some(r.clone()),
            _ => None,
        }
    }

    /// Like [`Self::resolve`], an unknown id being NotFound.
    fn must(&self, id: &str) -> Result<ContainerRecord, ContainerError> {
        self.resolve(id)
            .ok_or_else(|| ContainerError::NotFound(format!("container {id} not found")))
    }

    fn put(&self, rec: &ContainerRecord) -> Result<(), ContainerError> {
        self.write_record(rec, redb::Durability::Immediate)
    }

    /// Stores a state the monitor told (started, exited, lost) in a record
    /// that may have moved on meanwhile, under the records lock so that
    /// it neither brings back a record RemoveContainer just deleted nor
    /// undoes a state further along (see [`State::rank`]); returns the
    /// record as stored. With `Durability::None` (what only caches the
    /// monitor's truth, which a restarted berthd is told again) there is no
    /// fsync on the request path: the caller marks the flusher.
    fn update_record(
        &self,
        rec: ContainerRecord,
        durability: redb::Durability,
    ) -> Result<ContainerRecord, ContainerError> {
        Ok(self.update_record_from(rec, durability)?.0)
    }

    /// [`Self::update_record`], also telling the state the stored record
    /// had when this one replaced it (`None`: not stored, the stored one
    /// was further along or is gone).
    fn update_record_from(
        &self,
        rec: ContainerRecord,
        durability: redb::Durability,
    ) -> Result<(ContainerRecord, Option<State>), ContainerError> {
        let mut inner = self.lock();
        let before = match inner.records.get(&rec.id) {
            None => return Ok((rec, None)),
            Some(cur) if cur.state.rank() > rec.state.rank() => return Ok((cur.clone(), None)),
            Some(cur) => cur.state,
        };
        self.store_record(&rec, durability)?;
        inner.records.insert(rec.id.clone(), rec.clone());
        // Sent under the records lock: subscribers see one record's
        // events in the order they were stored.
        if let Some(kind) = events::kind_of(Some(before), rec.state) {
            self.emit(&rec, kind);
        }
        Ok((rec, Some(before)))
    }

    fn write_record(
        &self,
        rec: &ContainerRecord,
        durability: redb::Durability,
    ) -> Result<(), ContainerError> {
        self.store_record(rec, durability)?;
        let mut inner = self.lock();
        let before = inner.records.insert(rec.id.clone(), rec.clone());
        if let Some(kind) = events::kind_of(before.map(|b| b.state), rec.state) {
            self.emit(rec, kind);
        }
        Ok(())
    }

    fn store_record(
        &self,
        rec: &ContainerRecord,
        durability: redb::Durability,
    ) -> Result<(), ContainerError> {
        if rec.state == State::Unknown {
            return Err(internal(anyhow::anyhow!(
                "container {}: the UNKNOWN state is never stored",
                rec.id
            )));
        }
        let json = serde_json::to_string(rec).map_err(db_err)?;
        let mut txn = self.db.begin_write().map_err(db_err)?;
        txn.set_durability(durability).map_err(db_err)?;
        txn.open_table(CONTAINERS)
            .map_err(db_err)?
            .insert(rec.id.as_str(), json.as_str())
            .map_err(db_err)?;
        txn.commit().map_err(db_err)?;
        Ok(())
    }

    /// Makes every commit so far durable (one empty durable commit).
    fn sync(&self) -> Result<(), ContainerError> {
        let txn = self.db.begin_write().map_err(db_err)?;
        txn.commit().map_err(db_err)
    }

    /// Out of the records first (an event applied meanwhile finds nothing
    /// to update), then out of the store.
    fn delete_record(&self, rec: &ContainerRecord) -> Result<(), ContainerError> {
        let cached = {
            let mut inner = self.lock();
            inner.ops.remove(&rec.id);
            inner.records.remove(&rec.id)
        };
        let removed = (|| {
            let txn = self.db.begin_write().map_err(db_err)?;
            txn.open_table(CONTAINERS)
                .map_err(db_err)?
                .remove(rec.id.as_str())
                .map_err(db_err)?;
            txn.commit().map_err(db_err)
        })();
        let mut inner = self.lock();
        match removed {
            Ok(()) => {
                inner.names.remove(&rec.reservation_key());
                self.emit(
                    rec,
                    berth_api::v1::ContainerEventType::ContainerDeletedEvent,
                );
                Ok(())
            }
            Err(e) => {
                // Still stored: still listed, and RemoveContainer can retry.
                if let Some(c) = cached {
                    inner.records.insert(c.id.clone(), c);
                }
                Err(e)
            }
        }
    }
}
