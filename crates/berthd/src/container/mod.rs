//! Containers: durable records, overlay rootfs, bundles, and the lifecycle
//! driven through the pod's monitor (which runs libcontainer; berthd never
//! does, being multi-threaded).
//!
//! Layout: bundle (`config.json`) and rootfs mount point under
//! `<state>/containers/<id>/`; overlay upper/work dirs under
//! `<root>/containers/<id>/`, so a container's disk cost is its upper dir.

/// cgroupfs parent of containers whose pod names none (the kubelet always does).
const DEFAULT_CGROUP_PARENT: &str = "/berth";
pub mod exec;
pub mod monitor;
pub mod record;
pub mod rootfs;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use berth_api::v1::ContainerConfig;
use berth_image::ImageStore;
use berth_shim::protocol::{ContainerState, Request, Response, Status as MonStatus};
use futures::future::BoxFuture;
use redb::{Database, ReadableTable, TableDefinition};
use tracing::Instrument;

pub use record::{ContainerRecord, State};

use crate::sandbox::{PodContainers, SandboxRecord, SandboxState};
use crate::store::StoreError;

/// id → JSON [`ContainerRecord`].
const CONTAINERS: TableDefinition<&str, &str> = TableDefinition::new("containers");

/// How long StopContainer waits for the SIGKILL it sends after the timeout.
const KILL_WAIT: Duration = Duration::from_secs(10);

pub use crate::error::RuntimeError as ContainerError;
use crate::error::db_err;

fn internal(e: impl Into<anyhow::Error>) -> ContainerError {
    ContainerError::Internal(e.into())
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
    /// Serialises monitor spawning: one monitor per pod.
    spawn: Arc<tokio::sync::Mutex<()>>,
    /// Persists the non-durable state-cache commits ([`Containers::put_cache`]).
    flusher: Arc<record::Flusher>,
    /// `<state>/containers-trash`, `<root>/containers-trash`: bundles and
    /// upper dirs of removed containers, deleted in the background (and at
    /// startup, whatever a crash left there).
    bundles_trash: PathBuf,
    layers_trash: PathBuf,
}

/// What CreateContainer did so far, undone in reverse on failure.
#[derive(Default)]
struct Undo {
    leased: bool,
    mounted: Option<PathBuf>,
    dirs: Vec<PathBuf>,
    in_monitor: bool,
}

impl Containers {
    pub fn open(
        db: Arc<Database>,
        root: &Path,
        state: &Path,
        images: ImageStore,
        favordynmods: bool,
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
        if favordynmods {
            favor_dynmods(state);
        }
        let (bundles_trash, layers_trash) = (
            state.join("containers-trash"),
            root.join("containers-trash"),
        );
        // What a crash left in the trash: containers whose record is gone, or
        // going (RemoveContainer moves dirs first, then deletes the record).
        // Their rootfs is unmounted, so their image lease can go too.
        let leftovers: std::collections::BTreeSet<String> = [&bundles_trash, &layers_trash]
            .iter()
            .flat_map(|t| rootfs::trash_entries(t))
            .collect();
        if !leftovers.is_empty() {
            let (images, bt, lt) = (images.clone(), bundles_trash.clone(), layers_trash.clone());
            std::thread::spawn(move || {
                for id in leftovers {
                    empty_trash(&images, &bt, &lt, &id, None);
                }
            });
        }
        Ok(Containers {
            db,
            images,
            pods_dir: state.join("pods"),
            monitors_dir: state.join("monitors"),
            bundles_dir: state.join("containers"),
            layers_dir: root.join("containers"),
            host: berth_spec::HostEnv::detect(),
            inner: Mutex::new(inner),
            spawn: Arc::new(tokio::sync::Mutex::new(())),
            flusher,
            bundles_trash,
            layers_trash,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn op_lock(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.lock().ops.entry(id.to_string()).or_default().clone()
    }

    fn pod_dir(&self, pod_id: &str) -> PathBuf {
        self.pods_dir.join(pod_id)
    }

    fn monitor_dir(&self, pod_id: &str) -> PathBuf {
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

    fn put(&self, rec: &ContainerRecord) -> Result<(), ContainerError> {
        self.write_record(rec, redb::Durability::Immediate)
    }

    /// Like [`Self::put`] for what only caches the monitor's truth (started,
    /// exited: a restarted berthd asks the monitor again): no fsync on the
    /// request path; the flusher makes it durable a moment later.
    fn put_cache(&self, rec: &ContainerRecord) -> Result<(), ContainerError> {
        self.write_record(rec, redb::Durability::None)?;
        self.flusher.mark();
        Ok(())
    }

    fn write_record(
        &self,
        rec: &ContainerRecord,
        durability: redb::Durability,
    ) -> Result<(), ContainerError> {
        let json = serde_json::to_string(rec).map_err(db_err)?;
        let mut txn = self.db.begin_write().map_err(db_err)?;
        txn.set_durability(durability).map_err(db_err)?;
        txn.open_table(CONTAINERS)
            .map_err(db_err)?
            .insert(rec.id.as_str(), json.as_str())
            .map_err(db_err)?;
        txn.commit().map_err(db_err)?;
        self.lock().records.insert(rec.id.clone(), rec.clone());
        Ok(())
    }

    fn delete_record(&self, rec: &ContainerRecord) -> Result<(), ContainerError> {
        let txn = self.db.begin_write().map_err(db_err)?;
        txn.open_table(CONTAINERS)
            .map_err(db_err)?
            .remove(rec.id.as_str())
            .map_err(db_err)?;
        txn.commit().map_err(db_err)?;
        let mut inner = self.lock();
        inner.records.remove(&rec.id);
        inner.names.remove(&rec.reservation_key());
        inner.ops.remove(&rec.id);
        Ok(())
    }

    /// CreateContainer. `pod` is the sandbox record, already resolved.
    pub async fn create(
        &self,
        pod: SandboxRecord,
        config: ContainerConfig,
    ) -> Result<ContainerRecord, ContainerError> {
        let invalid = |m: &str| Err(ContainerError::InvalidArgument(m.to_string()));
        let Some(md) = config.metadata.clone() else {
            return invalid("config.metadata is required");
        };
        if md.name.is_empty() {
            return invalid("config.metadata.name is required");
        }
        let image_name = config
            .image
            .as_ref()
            .map(|i| i.image.clone())
            .unwrap_or_default();
        if image_name.is_empty() {
            return invalid("config.image.image is required");
        }
        if pod.state != SandboxState::Ready {
            return Err(ContainerError::FailedPrecondition(format!(
                "pod sandbox {} is not ready: cannot create containers in it",
                pod.id
            )));
        }
        let image = self
            .images
            .get(&image_name)
            .map_err(internal)?
            .ok_or_else(|| {
                ContainerError::NotFound(format!(
                    "image {image_name:?} is not pulled: pull it before creating the container"
                ))
            })?;
        let id = new_id().map_err(internal)?;
        let key = record::reservation_key(&pod.id, &md.name, md.attempt);
        {
            let mut inner = self.lock();
            if let Some(other) = inner.names.get(&key) {
                return Err(ContainerError::AlreadyExists(format!(
                    "container name {:?} (attempt {}) is already used by {other} in pod {}",
                    md.name, md.attempt, pod.id
                )));
            }
            inner.names.insert(key.clone(), id.clone());
        }
        let span = tracing::info_span!("create_container", pod = %pod.id, container = %id);
        let mut undo = Undo::default();
        let result = self
            .create_steps(&id, &pod, &config, &image, &image_name, &mut undo)
            .instrument(span.clone())
            .await;
        if let Err(e) = &result {
            tracing::warn!(parent: &span, error = %e, "CreateContainer failed: rolling back");
            self.rollback(&id, &pod.id, undo)
                .instrument(span.clone())
                .await;
            self.lock().names.remove(&key);
        }
        result
    }

    async fn create_steps(
        &self,
        id: &str,
        pod: &SandboxRecord,
        config: &ContainerConfig,
        image: &berth_image::Image,
        image_name: &str,
        undo: &mut Undo,
    ) -> Result<ContainerRecord, ContainerError> {
        let created = Instant::now();
        let mut laps = Laps::new();
        let pod_config = pod.config().map_err(internal)?;
        let image_config = image.config().map_err(internal)?;
        let image_cfg = berth_spec::ImageConfig::from(&image_config);
        let stop_signal = stop_signal(config, &image_config)?;

        // The pod's monitor (spawned on its first container) starts while
        // the rootfs and bundle are prepared.
        let ensure = {
            let (lock, dir, pod_id) = (
                self.spawn.clone(),
                self.monitor_dir(&pod.id),
                pod.id.clone(),
            );
            tokio::spawn(async move {
                let _spawn = lock.lock_owned().await;
                monitor::ensure(&dir, &pod_id).await
            })
        };
        let (images, cid, image_id) = (self.images.clone(), id.to_string(), image.id.clone());
        let layers = blocking(move || Ok(images.lease(&cid, &image_id)?)).await?;
        undo.leased = true;
        laps.mark("lease");
        let bundle = self.bundles_dir.join(id);
        let layer_dir = self.layers_dir.join(id);
        undo.dirs = vec![bundle.clone(), layer_dir.clone()];
        let rootfs = bundle.join("rootfs");
        let (l, b, r) = (layers.clone(), layer_dir.clone(), rootfs.clone());
        blocking(move || rootfs::mount_overlay(&l, &b, &r)).await?;
        laps.mark("mount");
        crate::failpoint::hit("container-create-mounted");
        undo.mounted = Some(rootfs.clone());

        let pod_dir = self.pod_dir(&pod.id);
        let (pd, pc, hn) = (
            pod_dir.clone(),
            pod_config.clone(),
            self.host.node_hostname.clone(),
        );
        let files = blocking(move || rootfs::write_pod_files(&pd, &pc, &hn)).await?;
        laps.mark("pod_files");
        let pod_files = berth_spec::PodFiles {
            etc_hosts: Some(files.hosts),
            etc_hostname: Some(files.hostname),
            resolv_conf: Some(files.resolv_conf),
            // The pod's shared tmpfs (None for host IPC: the spec binds the host's).
            dev_shm: pod.shm.clone(),
        };
        let pin = |p: &Option<PathBuf>| match p {
            Some(p) => berth_spec::PodNamespace::Pinned(p.clone()),
            None => berth_spec::PodNamespace::Host,
        };
        let namespaces = berth_spec::PodNamespaces {
            network: pin(&pod.pins.net),
            ipc: pin(&pod.pins.ipc),
            uts: pin(&pod.pins.uts),
            // Pinned by the pod's init (None unless the pod's PID mode is POD).
            pid: pod.pins.pid.clone(),
        };
        let cgroups_path = Self::cgroups_path_of(&pod.cgroup_parent, id);
        let spec = berth_spec::build_spec(&berth_spec::SpecInput {
            container_id: id,
            sandbox_id: &pod.id,
            config,
            sandbox: &pod_config,
            image: &image_cfg,
            image_name,
            rootfs: &rootfs,
            namespaces: &namespaces,
            target_pid_ns: None,
            files: &pod_files,
            cgroups_path: cgroups_path.as_deref(),
            host: &self.host,
        })
        .map_err(|e| ContainerError::InvalidArgument(e.to_string()))?;
        // As runc: a working dir the image lacks is created (libcontainer
        // would fail the create with ENOENT).
        if let Some(cwd) = spec.process().as_ref().map(|p| p.cwd().clone()) {
            let (r, c) = (rootfs.clone(), cwd.to_string_lossy().into_owned());
            blocking(move || {
                berth_spec::in_root::mkdir_all(&r, &c)
                    .with_context(|| format!("cannot create the working dir {c} in the rootfs"))
            })
            .await
            .map_err(|e| ContainerError::InvalidArgument(e.to_string()))?;
        }
        let json = serde_json::to_vec_pretty(&spec).map_err(internal)?;
        laps.mark("spec");
        rootfs::write_atomic(&bundle.join("config.json"), &json).map_err(internal)?;
        laps.mark("bundle");

        // The CRI log path is relative to the pod's log directory; with
        // either missing the kubelet expects no log, but the monitor always
        // needs somewhere to put the output.
        let cri_log = if pod.log_directory.is_empty() || config.log_path.is_empty() {
            String::new()
        } else {
            Path::new(&pod.log_directory)
                .join(&config.log_path)
                .display()
                .to_string()
        };
        let log_path = if cri_log.is_empty() {
            bundle.join("output.log")
        } else {
            PathBuf::from(&cri_log)
        };
        if let Some(parent) = log_path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create log dir {}", parent.display()))
                .map_err(internal)?;
        }

        laps.mark("log_dir");
        ensure
            .await
            .map_err(|e| internal(anyhow::anyhow!("monitor spawn task failed: {e}")))?
            .map_err(internal)?;
        laps.mark("monitor_ready");
        monitor::call(
            &self.monitor_dir(&pod.id),
            &pod.id,
            Request::Create {
                id: id.to_string(),
                bundle: bundle.clone(),
                log_path,
            },
        )
        .await
        .map_err(internal)?;
        undo.in_monitor = true;
        laps.mark("monitor_create");
        crate::failpoint::hit("container-create-in-monitor");

        let md = config.metadata.clone().unwrap_or_default();
        let rec = ContainerRecord {
            id: id.to_string(),
            pod_id: pod.id.clone(),
            name: md.name,
            attempt: md.attempt,
            image: image_name.to_string(),
            image_id: image.id.clone(),
            image_ref: image
                .repo_digests
                .first()
                .cloned()
                .unwrap_or_else(|| image.id.clone()),
            labels: config.labels.clone().into_iter().collect(),
            annotations: config.annotations.clone().into_iter().collect(),
            log_path: cri_log,
            stop_signal,
            state: State::Created,
            created_at: now_ns(),
            started_at: 0,
            finished_at: 0,
            exit_code: 0,
            oom_killed: false,
            message: String::new(),
            bundle,
            layer_dir,
            // What ContainerStatus reports: the CRI mounts as given, the
            // resources and user as the spec set them.
            mounts: config
                .mounts
                .iter()
                .map(record::MountRecord::from)
                .collect(),
            resources: Some(record::ResourcesRecord::from_spec(&spec)),
            user: record::UserRecord::from_spec(&spec),
        };
        self.put(&rec)?;
        laps.mark("record");
        tracing::info!(name = %rec.name, elapsed_ms = created.elapsed().as_millis() as u64, steps = %laps, "container created");
        Ok(rec)
    }

    async fn rollback(&self, id: &str, pod_id: &str, undo: Undo) {
        let report = |what: &str, e: &dyn std::fmt::Display| tracing::error!(error = %e, "rollback of CreateContainer: {what}");
        if undo.in_monitor {
            let req = Request::Delete {
                id: id.to_string(),
                force: true,
            };
            if let Err(e) = monitor::call(&self.monitor_dir(pod_id), pod_id, req).await {
                report("monitor delete", &e);
            }
        }
        if let Some(m) = undo.mounted
            && let Err(e) = rootfs::unmount(&m)
        {
            report("unmount", &format!("{e:#}"));
        }
        for d in undo.dirs {
            if let Err(e) = rootfs::remove_dir(&d) {
                report("remove dir", &format!("{e:#}"));
            }
        }
        if undo.leased
            && let Err(e) = self.images.unlease(id)
        {
            report("unlease", &e);
        }
    }

    /// Brings the record up to date with the monitor (unless the exit is
    /// already known) and persists any change.
    pub async fn refresh(&self, rec: ContainerRecord) -> Result<ContainerRecord, ContainerError> {
        if rec.state == State::Exited {
            return Ok(rec);
        }
        let got = monitor::state(&self.monitor_dir(&rec.pod_id), &rec.pod_id, &rec.id).await;
        self.apply(rec, got.map(Some))
    }

    /// Merges what the monitor said (`Ok(None)`: it does not list the
    /// container) into the record.
    fn apply(
        &self,
        mut rec: ContainerRecord,
        got: Result<Option<ContainerState>, monitor::CallError>,
    ) -> Result<ContainerRecord, ContainerError> {
        let before = (rec.state, rec.started_at);
        let mut lost = false;
        match got {
            Ok(Some(s)) => {
                if s.started_at != 0 {
                    rec.started_at = s.started_at;
                }
                rec.state = match s.status {
                    MonStatus::Created => State::Created,
                    MonStatus::Running => State::Running,
                    MonStatus::Exited => State::Exited,
                };
                if let Some(exit) = s.exit {
                    rec.state = State::Exited;
                    rec.exit_code = exit.exit_code;
                    rec.finished_at = exit.finished_at;
                    rec.oom_killed = exit.oom_killed;
                }
            }
            Err(e)
                if !(matches!(e, monitor::CallError::Unreachable { .. }) || e.is_not_found()) =>
            {
                return Err(internal(e));
            }
            // The monitor is gone or forgot the container (host reboot,
            // monitor crash): its exit can never be known.
            gone => {
                lost = true;
                let why = match gone {
                    Err(e) => e.to_string(),
                    _ => "the monitor no longer has the container".to_string(),
                };
                tracing::warn!(pod = %rec.pod_id, container = %rec.id, reason = %why, "container lost");
                rec.state = State::Exited;
                rec.exit_code = 255;
                rec.finished_at = now_ns();
                rec.message = format!("container lost: {why}");
            }
        }
        if lost {
            // berthd's own conclusion, not the monitor's: durable now.
            self.put(&rec)?;
        } else if (rec.state, rec.started_at) != before {
            self.put_cache(&rec)?;
        }
        Ok(rec)
    }

    /// StartContainer.
    pub async fn start(&self, id: &str) -> Result<(), ContainerError> {
        let rec = self.must(id)?;
        let lock = self.op_lock(&rec.id);
        let _op = lock.lock().await;
        let rec = self.must(&rec.id)?;
        let not_created = |rec: &ContainerRecord| {
            ContainerError::FailedPrecondition(format!(
                "container {} is {:?}, not CREATED: it cannot be started",
                rec.id, rec.state
            ))
        };
        // A cached state never goes back to CREATED: only CREATED needs the
        // monitor, which refuses to start anything else.
        if rec.state != State::Created {
            let rec = self.refresh(rec).await?;
            return Err(not_created(&rec));
        }
        let mon = self.monitor_dir(&rec.pod_id);
        let req = Request::StartAndReport { id: rec.id.clone() };
        let rec = match monitor::call(&mon, &rec.pod_id, req).await {
            Ok(Response::State(s)) => {
                crate::failpoint::hit("container-start-started");
                self.apply(rec, Ok(Some(s)))?
            }
            // A monitor older than StartAndReport.
            Err(e) if e.is_bad_request() => {
                monitor::call(&mon, &rec.pod_id, Request::Start { id: rec.id.clone() })
                    .await
                    .map_err(internal)?;
                self.refresh(rec).await?
            }
            Ok(_) => self.refresh(rec).await?,
            Err(e) => {
                // It may have left CREATED meanwhile (killed, lost).
                let rec = self.refresh(rec).await?;
                if rec.state != State::Created {
                    return Err(not_created(&rec));
                }
                return Err(internal(e));
            }
        };
        tracing::info!(state = ?rec.state, "container started");
        Ok(())
    }

    fn must(&self, id: &str) -> Result<ContainerRecord, ContainerError> {
        self.resolve(id)
            .ok_or_else(|| ContainerError::NotFound(format!("container {id} not found")))
    }

    /// StopContainer: the stop signal, then SIGKILL after `timeout`.
    /// Stopping an exited container is a success.
    pub async fn stop(&self, id: &str, timeout: Duration) -> Result<(), ContainerError> {
        let rec = self.must(id)?;
        let lock = self.op_lock(&rec.id);
        let _op = lock.lock().await;
        self.stop_locked(&rec.id, timeout).await
    }

    async fn stop_locked(&self, id: &str, timeout: Duration) -> Result<(), ContainerError> {
        let rec = self.must(id)?;
        if rec.state == State::Exited {
            return Ok(());
        }
        // One round trip: the monitor signals, escalates to SIGKILL after
        // the timeout and answers once the exit is recorded.
        tracing::info!(signal = rec.stop_signal, ?timeout, "stopping container");
        let req = Request::Stop {
            id: id.to_string(),
            signal: rec.stop_signal,
            timeout_ms: timeout.as_millis() as u64,
            kill_wait_ms: KILL_WAIT.as_millis() as u64,
        };
        let rec = match monitor::call(&self.monitor_dir(&rec.pod_id), &rec.pod_id, req).await {
            Ok(Response::State(s)) => self.apply(rec, Ok(Some(s)))?,
            Err(e) if e.is_bad_request() => return self.stop_polling(id, timeout).await,
            Err(e) if e.is_not_found() => self.apply(rec, Ok(None))?,
            Err(e @ monitor::CallError::Unreachable { .. }) => self.apply(rec, Err(e))?,
            Err(e) => return Err(internal(e)),
            Ok(other) => {
                return Err(internal(anyhow::anyhow!(
                    "unexpected monitor answer to stop: {other:?}"
                )));
            }
        };
        if rec.state != State::Exited {
            return Err(internal(anyhow::anyhow!(
                "container {id} did not exit within {KILL_WAIT:?} of SIGKILL"
            )));
        }
        Ok(())
    }

    /// StopContainer with a monitor older than its `Stop` request: signal,
    /// poll, SIGKILL, poll.
    async fn stop_polling(&self, id: &str, timeout: Duration) -> Result<(), ContainerError> {
        let mut rec = self.refresh(self.must(id)?).await?;
        if rec.state == State::Exited {
            return Ok(());
        }
        let pod_dir = self.monitor_dir(&rec.pod_id);
        let pod_id = rec.pod_id.clone();
        let kill = |signal: i32, all: bool| {
            let req = Request::Kill {
                id: id.to_string(),
                signal,
                all,
            };
            let (pod_dir, pod) = (pod_dir.clone(), pod_id.clone());
            async move { monitor::call(&pod_dir, &pod, req).await.map_err(internal) }
        };
        // A never-started container has nothing to shut down gracefully.
        if !timeout.is_zero() && rec.state == State::Running {
            tracing::info!(signal = rec.stop_signal, ?timeout, "stopping container");
            kill(rec.stop_signal, false).await?;
            rec = self.wait_exit(rec, Instant::now() + timeout).await?;
            if rec.state == State::Exited {
                return Ok(());
            }
        }
        tracing::info!("killing container");
        kill(libc::SIGKILL, true).await?;
        let rec = self.wait_exit(rec, Instant::now() + KILL_WAIT).await?;
        if rec.state != State::Exited {
            return Err(internal(anyhow::anyhow!(
                "container {id} did not exit within {KILL_WAIT:?} of SIGKILL"
            )));
        }
        Ok(())
    }

    /// Polls the monitor until the container exited or `deadline`.
    async fn wait_exit(
        &self,
        mut rec: ContainerRecord,
        deadline: Instant,
    ) -> Result<ContainerRecord, ContainerError> {
        let mut pause = Duration::from_millis(2);
        loop {
            rec = self.refresh(rec).await?;
            let now = Instant::now();
            if rec.state == State::Exited || now >= deadline {
                return Ok(rec);
            }
            tokio::time::sleep(pause.min(deadline - now)).await;
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }

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
            Err(e) if matches!(e, monitor::CallError::Unreachable { .. }) || e.is_not_found() => {
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
        let held = blocking(move || {
            let held = rootfs::detach(&rootfs_dir)?;
            rootfs::to_trash(&bundle, &bt, &cid)?;
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
        tokio::task::spawn_blocking(move || empty_trash(&images, &bt, &lt, &cid, held));
        tracing::info!(pod = %rec.pod_id, container = %rec.id, steps = %laps, "container removed");
        Ok(())
    }

    /// ContainerStatus's view: refreshed record.
    pub async fn status(&self, id: &str) -> Result<ContainerRecord, ContainerError> {
        let rec = self.must(id)?;
        self.refresh(rec).await
    }

    /// Every record, refreshed with one monitor `list` per pod that has a
    /// live container.
    pub async fn list(&self) -> Result<Vec<ContainerRecord>, ContainerError> {
        let recs: Vec<ContainerRecord> = self.lock().records.values().cloned().collect();
        let mut pods: BTreeMap<String, Vec<ContainerRecord>> = BTreeMap::new();
        let mut out = Vec::with_capacity(recs.len());
        for r in recs {
            if r.state == State::Exited {
                out.push(r);
            } else {
                pods.entry(r.pod_id.clone()).or_default().push(r);
            }
        }
        for (pod, recs) in pods {
            let listed = monitor::list(&self.monitor_dir(&pod), &pod).await;
            for r in recs {
                let got = match &listed {
                    Ok(states) => Ok(states.iter().find(|s| s.id == r.id).cloned()),
                    Err(monitor::CallError::Unreachable { pod, source }) => {
                        Err(monitor::CallError::Unreachable {
                            pod: pod.clone(),
                            source: std::io::Error::new(source.kind(), source.to_string()),
                        })
                    }
                    Err(e) => return Err(internal(anyhow::anyhow!("{e}"))),
                };
                out.push(self.apply(r, got)?);
            }
        }
        out.sort_by_key(|r| r.created_at);
        Ok(out)
    }

    fn of_pod(&self, pod_id: &str) -> Vec<String> {
        self.lock()
            .records
            .values()
            .filter(|r| r.pod_id == pod_id)
            .map(|r| r.id.clone())
            .collect()
    }

    // --- Accessors for the stats RPCs (crate::stats) ---

    /// Every record as last known, without asking the monitors: the stats
    /// RPCs (polled by the kubelet) read cgroups directly and need no refresh.
    pub fn records(&self) -> Vec<ContainerRecord> {
        self.lock().records.values().cloned().collect()
    }

    /// The container's cgroup (`linux.cgroupsPath`) under its pod's
    /// `cgroup_parent`, computed as CreateContainer computes it.
    /// Without a parent libcontainer names the cgroup ":youki:<id>", which
    /// its delete leaves behind on cgroup v1: such containers go under /berth.
    pub fn cgroups_path_of(pod_cgroup_parent: &str, id: &str) -> Option<String> {
        let parent = match pod_cgroup_parent {
            "" => DEFAULT_CGROUP_PARENT,
            p => p,
        };
        berth_spec::cgroups_path(parent, id, "berth")
    }
}

/// StopPodSandbox / RemovePodSandbox reach the pod's containers through this.
impl PodContainers for Containers {
    fn stop_all<'a>(&'a self, pod_id: &'a str) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            // The kubelet already stopped them gracefully; as containerd, kill what is left.
            for id in self.of_pod(pod_id) {
                let span =
                    tracing::info_span!("stop_pod_container", pod = %pod_id, container = %id);
                self.stop(&id, Duration::ZERO)
                    .instrument(span)
                    .await
                    .or_else(|e| match e {
                        ContainerError::NotFound(_) => Ok(()),
                        e => Err(anyhow::anyhow!("{e}")),
                    })?;
            }
            Ok(())
        })
    }

    fn remove_all<'a>(&'a self, pod_id: &'a str) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            for id in self.of_pod(pod_id) {
                let span =
                    tracing::info_span!("remove_pod_container", pod = %pod_id, container = %id);
                self.remove(&id)
                    .instrument(span)
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
            }
            self.delete_unrecorded(pod_id).await;
            // No container left: the monitor exits (if one runs).
            let dir = self.monitor_dir(pod_id);
            if let Err(e) = monitor::call(&dir, pod_id, Request::Shutdown).await
                && !matches!(e, monitor::CallError::Unreachable { .. })
            {
                tracing::warn!(pod = %pod_id, error = %e, "cannot shut the pod monitor down");
            }
            monitor::forget(&dir);
            // Its socket, log and (now empty) exit records go with the pod.
            rootfs::remove_dir(&dir)?;
            Ok(())
        })
    }
}

/// The CRI's stop signal, else the image's `StopSignal`, else SIGTERM.
fn stop_signal(
    config: &ContainerConfig,
    image: &berth_spec::oci_spec::image::ImageConfiguration,
) -> Result<i32, ContainerError> {
    use std::str::FromStr;
    let cri = berth_api::v1::Signal::try_from(config.stop_signal)
        .unwrap_or(berth_api::v1::Signal::RuntimeDefault);
    let name = if cri != berth_api::v1::Signal::RuntimeDefault {
        cri.as_str_name().to_string()
    } else {
        image
            .config()
            .as_ref()
            .and_then(|c| c.stop_signal().clone())
            .unwrap_or_default()
    };
    if name.is_empty() {
        return Ok(libc::SIGTERM);
    }
    if let Ok(n) = name.parse::<i32>() {
        return Ok(n);
    }
    let upper = name.to_ascii_uppercase();
    let full = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    nix::sys::signal::Signal::from_str(&full)
        .map(|s| s as i32)
        .map_err(|_| ContainerError::InvalidArgument(format!("unknown stop signal {name:?}")))
}

/// Step durations of one operation, for its log line.
struct Laps {
    last: Instant,
    steps: String,
}

impl Laps {
    fn new() -> Laps {
        Laps {
            last: Instant::now(),
            steps: String::new(),
        }
    }

    fn mark(&mut self, step: &str) {
        use std::fmt::Write;
        let now = Instant::now();
        let sep = if self.steps.is_empty() { "" } else { " " };
        let _ = write!(
            self.steps,
            "{sep}{step}={:.2}ms",
            (now - self.last).as_secs_f64() * 1e3
        );
        self.last = now;
    }
}

impl std::fmt::Display for Laps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.steps)
    }
}

/// Moving a process into a cgroup (the `cgroup.procs` write of every
/// container create and exec) takes the kernel's global
/// `cgroup_threadgroup_rwsem` for writing, whose first writer after a quiet
/// moment waits a full RCU grace period (`rcu_sync_enter` ->
/// `synchronize_rcu`): 10-20 ms here, more than all else a create does. The
/// kernel's `favordynmods` mode keeps that lock ready for writers (at the
/// price of a memory barrier in fork and exit), and any cgroup hierarchy
/// mounted with it turns it on for the whole lock. So on hosts that already
/// have cgroup v1 hierarchies (legacy, hybrid), berthd mounts an empty named
/// v1 hierarchy (`name=berth`, no controllers, nothing ever moved into it)
/// with `favordynmods` under `<state>/cgroup-favordynmods` and leaves it
/// mounted: the monitors live on after berthd. It is skipped on pure cgroup
/// v2 hosts, where a v1 line in every /proc/PID/cgroup could confuse
/// programs that detect the layout from it; there, boot with
/// `cgroup_favordynmods=1` or mount cgroup2 with `favordynmods`.
/// The config key `cgroup_favordynmods = false` disables it.
fn favor_dynmods(state: &Path) {
    let mounts = berth_mountinfo::read_self().unwrap_or_default();
    if mounts
        .iter()
        .any(|m| m.fstype == "cgroup" && m.super_options.split(',').any(|o| o == "favordynmods"))
    {
        return; // already on (ours from an earlier start, or the host's)
    }
    if !mounts.iter().any(|m| m.fstype == "cgroup") {
        tracing::info!(
            "pure cgroup v2 host: boot with cgroup_favordynmods=1 (or mount cgroup2 with favordynmods) for fast container starts"
        );
        return;
    }
    let target = state.join("cgroup-favordynmods");
    let mounted = std::fs::create_dir_all(&target)
        .map_err(|e| e.to_string())
        .and_then(|()| {
            nix::mount::mount(
                Some("berth"),
                &target,
                Some("cgroup"),
                nix::mount::MsFlags::MS_NOSUID
                    | nix::mount::MsFlags::MS_NODEV
                    | nix::mount::MsFlags::MS_NOEXEC,
                Some("none,name=berth,favordynmods"),
            )
            .map_err(|e| e.to_string())
        });
    match mounted {
        Ok(()) => tracing::info!(
            path = %target.display(),
            "cgroup favordynmods on (named v1 hierarchy): fast cgroup moves for container creates and execs"
        ),
        Err(e) => {
            tracing::info!(error = %e, "cannot turn cgroup favordynmods on: container creates pay an RCU grace period")
        }
    }
}

/// Startup reconciliation of what a crashed CreateContainer left: its
/// record is written last, so a crash before it leaves an image lease, the
/// rootfs mount, bundle and upper dirs and, once the monitor was asked, a
/// created container with its cgroups, all unknown to the records.
impl Containers {
    pub async fn reconcile_orphans(&self) {
        let known: std::collections::HashSet<String> =
            self.lock().records.keys().cloned().collect();
        let trashed: std::collections::HashSet<String> = [&self.bundles_trash, &self.layers_trash]
            .iter()
            .flat_map(|t| rootfs::trash_entries(t))
            .collect();
        let mut orphans: std::collections::BTreeSet<String> = [&self.bundles_dir, &self.layers_dir]
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
            if let Some(cg) = spec["linux"]["cgroupsPath"].as_str() {
                let cg = cg.to_string();
                if let Err(e) =
                    blocking(move || Ok(berth_shim::monitor::remove_container_cgroups(&cg)?)).await
                {
                    tracing::warn!(container = %id, error = %e, "cannot remove the cgroups of a leftover container");
                }
            }
        }
        let (bt, lt, images) = (
            self.bundles_trash.clone(),
            self.layers_trash.clone(),
            self.images.clone(),
        );
        let layer_dir = self.layers_dir.join(id);
        let cid = id.to_string();
        let done = blocking(move || {
            let held = rootfs::detach(&bundle.join("rootfs"))?;
            rootfs::to_trash(&bundle, &bt, &cid)?;
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
    async fn delete_unrecorded(&self, pod_id: &str) {
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

/// The background half of RemoveContainer (and startup's for what a crash
/// left): releases the detached overlay (its final sync runs here), drops
/// the image lease, deletes the trashed dirs. Errors are logged: the lease
/// and dirs are retried at the next startup only if the dirs remain.
fn empty_trash(
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

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> Result<T, ContainerError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| internal(anyhow::anyhow!("blocking task failed: {e}")))?
        .map_err(internal)
}

/// 64 hex digits from the kernel's CSPRNG (container and pod ids).
pub fn new_id() -> std::io::Result<String> {
    use std::io::Read;
    let mut buf = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut buf)?;
    Ok(hex::encode(buf))
}

pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image_with_stop_signal(sig: &str) -> berth_spec::oci_spec::image::ImageConfiguration {
        serde_json::from_str(&format!(
            r#"{{"architecture":"amd64","os":"linux","config":{{"StopSignal":"{sig}"}},"rootfs":{{"type":"layers","diff_ids":[]}}}}"#
        ))
        .unwrap()
    }

    #[test]
    fn stop_signal_cri_then_image_then_sigterm() {
        let mut c = ContainerConfig::default();
        let none = image_with_stop_signal("");
        assert_eq!(stop_signal(&c, &none).unwrap(), libc::SIGTERM);
        assert_eq!(
            stop_signal(&c, &image_with_stop_signal("SIGQUIT")).unwrap(),
            libc::SIGQUIT
        );
        assert_eq!(
            stop_signal(&c, &image_with_stop_signal("usr1")).unwrap(),
            libc::SIGUSR1
        );
        assert_eq!(
            stop_signal(&c, &image_with_stop_signal("9")).unwrap(),
            libc::SIGKILL
        );
        assert!(stop_signal(&c, &image_with_stop_signal("SIGNOPE")).is_err());
        c.stop_signal = berth_api::v1::Signal::Sigint as i32;
        assert_eq!(
            stop_signal(&c, &image_with_stop_signal("SIGQUIT")).unwrap(),
            libc::SIGINT
        );
    }
}
