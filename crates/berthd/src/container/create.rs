//! CreateContainer: image lease, overlay rootfs, pod files, OCI bundle, then
//! the container created by the pod's monitor and its record written last;
//! a failure undoes every step done so far.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use berth_api::v1::ContainerConfig;
use berth_monitor_protocol::Request;
use tracing::Instrument;

use super::{
    ContainerError, ContainerRecord, Containers, State, image_volume, internal, monitor, record,
    rootfs,
};
use crate::blocking;
use crate::ids::{new_id, now_ns};
use crate::laps::Laps;
use crate::sandbox::{SandboxRecord, SandboxState};

/// cgroupfs parent of containers whose pod names none (the kubelet always does).
const DEFAULT_CGROUP_PARENT: &str = "/berth";

/// What CreateContainer did so far, undone in reverse on failure.
#[derive(Default)]
struct Undo {
    leased: bool,
    mounted: Option<PathBuf>,
    /// The bundle whose image volumes may be mounted.
    image_volumes: Option<PathBuf>,
    /// The bundle whose idmapped volumes may be staged.
    idmapped: Option<PathBuf>,
    dirs: Vec<PathBuf>,
    in_monitor: bool,
}

/// What a new container is made from.
struct Source<'a> {
    image: &'a berth_image::Image,
    /// The image's name as the container shows it.
    name: &'a str,
    /// A restore: the checkpoint its process comes from.
    restore: Option<&'a Restore>,
}

/// A container created from a checkpoint archive (see [`super::restore`]).
pub struct Restore {
    /// The archive unpacked into the container's layer dir.
    pub staged: super::restore::Staged,
    /// The CRIU settings the monitor's restore uses.
    pub criu: super::CriuOptions,
}

/// Where a new container's files go.
struct Dirs {
    /// `<state>/containers/<id>`: `config.json` and the rootfs mount point.
    bundle: PathBuf,
    /// `<root>/containers/<id>`: the overlay upper and work dirs.
    layer_dir: PathBuf,
    rootfs: PathBuf,
}

/// What the spec of a new container is built from.
struct SpecInput<'a> {
    id: &'a str,
    pod: &'a SandboxRecord,
    /// The pod's user namespace (`hostUsers: false`).
    userns: Option<&'a super::PodUserns>,
    pod_config: &'a berth_api::v1::PodSandboxConfig,
    config: &'a ContainerConfig,
    image: &'a berth_spec::ImageConfig,
    image_name: &'a str,
    /// PID mode TARGET: the target container's PID namespace.
    target_pid_ns: Option<PathBuf>,
}

/// A new container's CRI mounts: as its OCI spec binds them (image volumes
/// as binds of where they were mounted) and as its record keeps them.
struct Mounts {
    spec: Vec<berth_api::v1::Mount>,
    records: Vec<record::MountRecord>,
}

/// Where the container's output goes.
struct LogPaths {
    /// As the CRI named it (empty: the kubelet expects no log).
    cri: String,
    /// Where the monitor writes it.
    monitor: PathBuf,
}

impl Containers {
    /// CreateContainer. `pod` is the sandbox record, already resolved.
    pub async fn create(
        &self,
        pod: SandboxRecord,
        config: ContainerConfig,
        criu: &super::CriuOptions,
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
        let id = new_id().map_err(internal)?;
        let (image, image_name, restore) = match super::restore::archive_of(&image_name) {
            Some(archive) => {
                let restore = self
                    .stage_restore(&id, archive, &pod, &config, criu)
                    .await?;
                match self.restore_image(&restore.staged) {
                    Ok((image, name)) => (image, name, Some(restore)),
                    Err(e) => {
                        let _ = rootfs::remove_dir(&self.layers_dir.join(&id));
                        return Err(e);
                    }
                }
            }
            None => {
                let image = self
                    .images
                    .get(&image_name)
                    .map_err(internal)?
                    .ok_or_else(|| {
                        ContainerError::NotFound(format!(
                            "image {image_name:?} is not pulled: pull it before creating the container"
                        ))
                    })?;
                (image, image_name, None)
            }
        };
        let key = record::reservation_key(&pod.id, &md.name, md.attempt);
        {
            let mut inner = self.lock();
            if let Some(other) = inner.names.get(&key) {
                if restore.is_some() {
                    let _ = rootfs::remove_dir(&self.layers_dir.join(&id));
                }
                return Err(ContainerError::AlreadyExists(format!(
                    "container name {:?} (attempt {}) is already used by {other} in pod {}",
                    md.name, md.attempt, pod.id
                )));
            }
            inner.names.insert(key.clone(), id.clone());
        }
        let span = tracing::info_span!("create_container", pod = %pod.id, container = %id);
        let mut undo = Undo::default();
        if restore.is_some() {
            undo.dirs = vec![self.layers_dir.join(&id)];
        }
        let source = Source {
            image: &image,
            name: &image_name,
            restore: restore.as_ref(),
        };
        let result = self
            .create_steps(&id, &pod, &config, &source, &mut undo)
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
        source: &Source<'_>,
        undo: &mut Undo,
    ) -> Result<ContainerRecord, ContainerError> {
        let (image, image_name) = (source.image, source.name);
        let created = Instant::now();
        let mut laps = Laps::new();
        let pod_config = pod.config().map_err(internal)?;
        let image_config = image.config().map_err(internal)?;
        let target_pid_ns = self.target_pid_ns(pod, config).await?;
        let userns = super::PodUserns::of(pod, &pod_config)?;
        let input = SpecInput {
            id,
            pod,
            userns: userns.as_ref(),
            pod_config: &pod_config,
            config,
            image: &berth_spec::ImageConfig::from(&image_config),
            image_name,
            target_pid_ns,
        };
        let stop_signal = super::stop::stop_signal(config, &image_config)?;
        let volumes = image_volume::requested(&self.images, &config.mounts)?;

        // The pod's monitor (spawned on its first container) starts while
        // the rootfs and bundle are prepared.
        let monitor_ready = self.spawn_monitor(&pod.id);
        let (dirs, volume_layers) = self
            .mount_rootfs(id, source, &volumes, input.userns, undo, &mut laps)
            .await?;
        let mut mounts = self
            .mount_image_volumes(
                config,
                &dirs.bundle,
                &volumes,
                volume_layers,
                input.userns,
                undo,
            )
            .await?;
        if !volumes.is_empty() {
            laps.mark("image_volumes");
        }
        // Only a mount that asks for an idmapping costs a blocking task.
        let idmapped = mounts.spec.iter().any(super::idmap::asks_idmap);
        if idmapped {
            undo.idmapped = Some(dirs.bundle.clone());
            let (mut spec, b, u) = (mounts.spec, dirs.bundle.clone(), input.userns.cloned());
            mounts.spec = blocking::run(move || {
                Ok(super::idmap::stage_volumes(&mut spec, &b, u.as_ref()).map(|()| spec))
            })
            .await??;
            laps.mark("idmapped_volumes");
        }
        let pod_files = self.write_pod_files(pod, &pod_config).await?;
        laps.mark("pod_files");
        // The spec binds each image volume from where it was mounted.
        let bound;
        let input = if volumes.is_empty() && !idmapped {
            input
        } else {
            bound = ContainerConfig {
                mounts: mounts.spec,
                ..config.clone()
            };
            SpecInput {
                config: &bound,
                ..input
            }
        };
        let mut spec = self.build_spec(&input, &dirs.rootfs, &pod_files).await?;
        if let Some(nri) = self.nri.get() {
            self.adjust_by_plugins(nri, pod, id, config, &mut spec)
                .await?;
            laps.mark("nri");
        }
        let json = serde_json::to_vec_pretty(&spec).map_err(internal)?;
        laps.mark("spec");
        rootfs::write_atomic(&dirs.bundle.join("config.json"), &json).map_err(internal)?;
        laps.mark("bundle");
        let logs = log_paths(pod, config, &dirs.bundle)?;
        laps.mark("log_dir");
        monitor_ready
            .await
            .map_err(|e| internal(anyhow::anyhow!("monitor spawn task failed: {e}")))?
            .map_err(internal)?;
        laps.mark("monitor_ready");
        self.watch(&pod.id);
        let req = Request::Create {
            id: id.to_string(),
            bundle: dirs.bundle.clone(),
            log_path: logs.monitor,
            stdin: config.stdin,
            stdin_once: config.stdin && config.stdin_once,
            restore: source.restore.map(|r| berth_monitor_protocol::RestoreFrom {
                criu: r.criu.criu.clone(),
                dir: r.staged.dir.clone(),
                timeout_ms: r.criu.timeout.as_millis() as u64,
            }),
        };
        self.create_in_monitor(&pod.id, req, config, undo).await?;
        laps.mark("monitor_create");

        let rec = new_record(
            &input,
            image,
            stop_signal,
            &spec,
            dirs,
            logs.cri,
            mounts.records,
        );
        self.put(&rec)?;
        laps.mark("record");
        tracing::info!(name = %rec.name, elapsed_ms = created.elapsed().as_millis() as u64, steps = %laps, "container created");
        Ok(rec)
    }

    /// NRI plugins' adjustments of the container about to be created; a
    /// refusal or a clash between two plugins fails the creation. Updates
    /// they ask for other containers are applied on the way.
    async fn adjust_by_plugins(
        &self,
        nri: &berth_nri::Nri,
        pod: &SandboxRecord,
        id: &str,
        config: &ContainerConfig,
        spec: &mut berth_spec::oci_spec::runtime::Spec,
    ) -> Result<(), ContainerError> {
        let ctr = crate::nri::convert::container_from_spec(id, &pod.id, config, spec);
        let created = nri
            .create_container(&crate::nri::convert::pod_of(pod), &ctr)
            .await
            .map_err(|e| ContainerError::FailedPrecondition(e.to_string()))?;
        berth_spec::nri::apply(spec, &created.adjustment).map_err(|e| {
            ContainerError::FailedPrecondition(format!("an NRI plugin's adjustment: {e}"))
        })?;
        // Other containers' updates: a failure is logged, the creation goes on.
        crate::nri::apply_updates(self, created.updates).await;
        Ok(())
    }

    /// Spawns the pod's monitor unless it runs, in the background. Spawns
    /// for one pod take turns (one monitor per pod); different pods' run
    /// at once: under a kubelet starting 30 pods, one queue for all made
    /// the last pod's CreateContainer wait ~0.3 s here.
    fn spawn_monitor(&self, pod_id: &str) -> tokio::task::JoinHandle<anyhow::Result<()>> {
        let (lock, dir, pod_id) = (
            self.monitor_spawn_lock(pod_id),
            self.monitor_dir(pod_id),
            pod_id.to_string(),
        );
        // The pod's dir as seen from the canonical mount point (`pods_dir`
        // is `<state>/pods`, `<state>` as configured).
        let mounts = self.mounts_root.get().and_then(|root| {
            let pods = self.pods_dir.file_name()?;
            Some((root.clone(), root.join(pods).join(&pod_id)))
        });
        tokio::spawn(async move {
            let _spawn = lock.lock_owned().await;
            monitor::ensure(&dir, &pod_id, mounts).await
        })
    }

    /// Leases the layers of the image and of the image volumes' images and
    /// mounts the image's as the container's overlay rootfs. Returns the
    /// volumes' layer dirs, in the order of `volumes`.
    async fn mount_rootfs(
        &self,
        id: &str,
        source: &Source<'_>,
        volumes: &[image_volume::Requested],
        userns: Option<&super::PodUserns>,
        undo: &mut Undo,
        laps: &mut Laps,
    ) -> Result<(Dirs, Vec<Vec<PathBuf>>), ContainerError> {
        let (image, restore) = (source.image, source.restore);
        let (images, cid) = (self.images.clone(), id.to_string());
        let ids: Vec<String> = std::iter::once(&image.id)
            .chain(volumes.iter().map(|v| &v.image.id))
            .cloned()
            .collect();
        let mut leased = blocking::run(move || {
            let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
            Ok(images.lease_all(&cid, &ids)?)
        })
        .await?;
        undo.leased = true;
        let layers = leased.remove(0);
        laps.mark("lease");
        let bundle = self.bundles_dir.join(id);
        let layer_dir = self.layers_dir.join(id);
        undo.dirs = vec![bundle.clone(), layer_dir.clone()];
        let rootfs = bundle.join("rootfs");
        let (l, b, r) = (layers, layer_dir.clone(), rootfs.clone());
        let u = userns.cloned();
        let staged = restore.map(|r| r.staged.dir.clone());
        blocking::run(move || {
            // A restore's changes go into the upper dir before it is used.
            if let Some(staged) = &staged {
                super::restore::apply_diff(staged, &b.join("upper"))?;
            }
            rootfs::mount_overlay(&l, &b, &r, u.as_ref())?;
            if let Some(staged) = &staged {
                super::restore::remove_deleted(staged, &r)?;
            }
            Ok(())
        })
        .await?;
        laps.mark("mount");
        crate::failpoint::hit("container-create-mounted");
        undo.mounted = Some(rootfs.clone());
        Ok((
            Dirs {
                bundle,
                layer_dir,
                rootfs,
            },
            leased,
        ))
    }

    /// Mounts each image volume under the bundle and finds what the
    /// container binds (its sub path). Returns the mounts for the spec and
    /// for the record.
    async fn mount_image_volumes(
        &self,
        config: &ContainerConfig,
        bundle: &Path,
        volumes: &[image_volume::Requested],
        layers: Vec<Vec<PathBuf>>,
        userns: Option<&super::PodUserns>,
        undo: &mut Undo,
    ) -> Result<Mounts, ContainerError> {
        let mut spec = config.mounts.clone();
        let mut records: Vec<record::MountRecord> = config
            .mounts
            .iter()
            .map(record::MountRecord::from)
            .collect();
        if volumes.is_empty() {
            return Ok(Mounts { spec, records });
        }
        undo.image_volumes = Some(bundle.to_path_buf());
        for (v, layers) in volumes.iter().zip(layers) {
            let m = &config.mounts[v.index];
            let target = image_volume::dir(bundle, v.index);
            let (t, sub, name) = (target.clone(), m.image_sub_path.clone(), v.image.id.clone());
            let u = userns.cloned();
            let source = blocking::run(move || {
                image_volume::mount(&layers, &t, u.as_ref())?;
                Ok(image_volume::bind_source(&t, &sub, &name))
            })
            .await??;
            spec[v.index] = image_volume::as_bind(m, &source);
            records[v.index] = image_volume::record(m, &v.image);
            tracing::debug!(image = %v.image.id, source = %source.display(), container_path = %m.container_path, "image volume mounted");
        }
        Ok(Mounts { spec, records })
    }

    /// The pod's /etc files (written once per pod) and its /dev/shm.
    async fn write_pod_files(
        &self,
        pod: &SandboxRecord,
        pod_config: &berth_api::v1::PodSandboxConfig,
    ) -> Result<berth_spec::PodFiles, ContainerError> {
        let (pd, pc, hn) = (
            self.pod_dir(&pod.id),
            pod_config.clone(),
            self.host.node_hostname.clone(),
        );
        let files = blocking::run(move || rootfs::write_pod_files(&pd, &pc, &hn)).await?;
        Ok(berth_spec::PodFiles {
            etc_hosts: Some(files.hosts),
            etc_hostname: Some(files.hostname),
            resolv_conf: Some(files.resolv_conf),
            // The pod's shared tmpfs (None for host IPC: the spec binds the host's).
            dev_shm: pod.shm.clone(),
        })
    }

    /// PID mode TARGET (`kubectl debug --target`, an ephemeral container
    /// in the PID namespace of another container of its pod): that
    /// container's init's `/proc/<pid>/ns/pid`, as its monitor reports the
    /// init now. The target must be in the same pod and running; its exit
    /// between this and the create fails the create (the monitor cannot
    /// join a namespace whose last process is gone). Other modes: `None`.
    async fn target_pid_ns(
        &self,
        pod: &SandboxRecord,
        config: &ContainerConfig,
    ) -> Result<Option<PathBuf>, ContainerError> {
        let Some(opts) = config
            .linux
            .as_ref()
            .and_then(|l| l.security_context.as_ref())
            .and_then(|s| s.namespace_options.as_ref())
        else {
            return Ok(None);
        };
        if opts.pid != berth_api::v1::NamespaceMode::Target as i32 {
            return Ok(None);
        }
        if opts.target_id.is_empty() {
            return Err(ContainerError::InvalidArgument(
                "namespace_options.target_id is required when pid is TARGET".to_string(),
            ));
        }
        let target = match self.resolve(&opts.target_id) {
            Some(t) if t.pod_id == pod.id => t,
            _ => {
                return Err(ContainerError::NotFound(format!(
                    "target container {} of PID mode TARGET is not a container of pod {}",
                    opts.target_id, pod.id
                )));
            }
        };
        let state = monitor::state(&self.monitor_dir(&pod.id), &pod.id, &target.id)
            .await
            .map_err(|e| {
                ContainerError::FailedPrecondition(format!(
                    "cannot read the state of target container {}: {e}",
                    target.id
                ))
            })?;
        if state.status != berth_monitor_protocol::Status::Running || state.pid <= 0 {
            return Err(ContainerError::FailedPrecondition(format!(
                "target container {} of PID mode TARGET is not running: its PID namespace cannot be joined",
                target.id
            )));
        }
        Ok(Some(PathBuf::from(format!("/proc/{}/ns/pid", state.pid))))
    }

    /// The OCI spec of the container, and the working dir it names made in
    /// the rootfs.
    async fn build_spec(
        &self,
        input: &SpecInput<'_>,
        rootfs: &Path,
        files: &berth_spec::PodFiles,
    ) -> Result<berth_spec::oci_spec::runtime::Spec, ContainerError> {
        let (id, pod) = (input.id, input.pod);
        let cgroups_path = Self::cgroups_path_of(&pod.cgroup_parent, id);
        let spec = berth_spec::build_spec(&berth_spec::SpecInput {
            container_id: id,
            sandbox_id: &pod.id,
            config: input.config,
            sandbox: input.pod_config,
            image: input.image,
            image_name: input.image_name,
            rootfs,
            namespaces: &pod_namespaces(pod, input.userns),
            target_pid_ns: input.target_pid_ns.as_deref(),
            files,
            cgroups_path: cgroups_path.as_deref(),
            host: &self.host,
        })
        .map_err(|e| ContainerError::InvalidArgument(e.to_string()))?;
        // As runc: a working dir the image lacks is created (libcontainer
        // would fail the create with ENOENT).
        if let Some(cwd) = spec.process().as_ref().map(|p| p.cwd().clone()) {
            let (r, c) = (rootfs.to_path_buf(), cwd.to_string_lossy().into_owned());
            blocking::run(move || {
                berth_spec::in_root::mkdir_all(&r, &c)
                    .with_context(|| format!("cannot create the working dir {c} in the rootfs"))
            })
            .await
            .map_err(|e| ContainerError::InvalidArgument(e.to_string()))?;
        }
        Ok(spec)
    }

    /// The pod's monitor creates the container from its bundle (`req`, a
    /// `Request::Create`).
    async fn create_in_monitor(
        &self,
        pod_id: &str,
        req: Request,
        config: &ContainerConfig,
        undo: &mut Undo,
    ) -> Result<(), ContainerError> {
        let dir = self.monitor_dir(pod_id);
        if matches!(
            &req,
            Request::Create {
                restore: Some(_),
                ..
            }
        ) {
            // An older monitor would start the process fresh.
            monitor::require_restore(&dir, pod_id).await?;
        }
        if config.tty || config.stdin {
            // An older monitor would ignore `stdin` and cannot hold a
            // terminal: refuse rather than create a container nobody can
            // attach to.
            monitor::require_streaming(&dir, pod_id).await?;
        }
        monitor::call(&dir, pod_id, req).await.map_err(internal)?;
        undo.in_monitor = true;
        crate::failpoint::hit("container-create-in-monitor");
        Ok(())
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
        if let Some(b) = undo.image_volumes
            && let Err(e) = image_volume::unmount_all(&b)
        {
            report("unmount image volumes", &format!("{e:#}"));
        }
        if let Some(b) = undo.idmapped
            && let Err(e) = super::idmap::unmount_all(&b)
        {
            report("unmount idmapped volumes", &format!("{e:#}"));
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

    /// Unpacks the checkpoint archive `archive` into the new container's
    /// layer dir (removed again on failure); the CRIU settings checked.
    async fn stage_restore(
        &self,
        id: &str,
        archive: &Path,
        pod: &SandboxRecord,
        config: &ContainerConfig,
        criu: &super::CriuOptions,
    ) -> Result<Restore, ContainerError> {
        if config.tty {
            return Err(ContainerError::InvalidArgument(
                "a container with a terminal (tty) cannot be restored from a checkpoint".into(),
            ));
        }
        let pod_config = pod.config().map_err(internal)?;
        if super::PodUserns::of(pod, &pod_config)?.is_some() {
            return Err(ContainerError::FailedPrecondition(format!(
                "pod {} has its own user namespace (hostUsers: false): restoring a checkpoint into it is not supported",
                pod.id
            )));
        }
        let criu = super::CriuOptions {
            criu: super::restore::criu_path(&criu.criu)?,
            timeout: criu.timeout,
        };
        let dir = self.layers_dir.join(id).join(super::restore::RESTORE_DIR);
        let (a, d) = (archive.to_path_buf(), dir.clone());
        let layer_dir = self.layers_dir.join(id);
        let staged = blocking::run(move || Ok(super::restore::stage(&a, &d))).await?;
        match staged {
            Ok(staged) => {
                tracing::info!(container = %id, pod = %pod.id, archive = %archive.display(),
                    image = %staged.image_ref, "checkpoint archive unpacked for a restore");
                Ok(Restore { staged, criu })
            }
            Err(e) => {
                let _ = rootfs::remove_dir(&layer_dir);
                Err(e)
            }
        }
    }

    /// The image a restore's rootfs is built from, as `config.dump` names
    /// it: by id, else by name; it must be in the store.
    fn restore_image(
        &self,
        staged: &super::restore::Staged,
    ) -> Result<(berth_image::Image, String), ContainerError> {
        for r in [&staged.image_ref, &staged.image_name] {
            if r.is_empty() {
                continue;
            }
            if let Some(image) = self.images.get(r).map_err(internal)? {
                let name = if staged.image_name.is_empty() {
                    r.clone()
                } else {
                    staged.image_name.clone()
                };
                return Ok((image, name));
            }
        }
        Err(ContainerError::FailedPrecondition(format!(
            "the checkpoint's image {:?} ({}) is not in the image store: pull it before restoring the checkpoint",
            staged.image_name, staged.image_ref
        )))
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

/// The pod's namespaces the container joins.
fn pod_namespaces(
    pod: &SandboxRecord,
    userns: Option<&super::PodUserns>,
) -> berth_spec::PodNamespaces {
    let pin = |p: &Option<PathBuf>| match p {
        Some(p) => berth_spec::PodNamespace::Pinned(p.clone()),
        None => berth_spec::PodNamespace::Host,
    };
    berth_spec::PodNamespaces {
        network: pin(&pod.pins.net),
        ipc: pin(&pod.pins.ipc),
        uts: pin(&pod.pins.uts),
        // Pinned by the pod's init (None unless the pod's PID mode is POD).
        pid: pod.pins.pid.clone(),
        user: userns.map(|u| (u.pin.clone(), u.maps)),
    }
}

/// The CRI log path is relative to the pod's log directory; with either
/// missing the kubelet expects no log, but the monitor always needs
/// somewhere to put the output. Its dir is created.
fn log_paths(
    pod: &SandboxRecord,
    config: &ContainerConfig,
    bundle: &Path,
) -> Result<LogPaths, ContainerError> {
    let cri = if pod.log_directory.is_empty() || config.log_path.is_empty() {
        String::new()
    } else {
        check_log_path(&config.log_path)?;
        Path::new(&pod.log_directory)
            .join(&config.log_path)
            .display()
            .to_string()
    };
    let monitor = if cri.is_empty() {
        bundle.join("output.log")
    } else {
        PathBuf::from(&cri)
    };
    if let Some(parent) = monitor.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create log dir {}", parent.display()))
            .map_err(internal)?;
        // A symlinked dir on the way (the log dir is reachable from pods
        // with a hostPath mount) must not lead the log out of the pod's log
        // directory; the monitor refuses a symlink as the file itself.
        if !cri.is_empty() {
            let real = |p: &Path| {
                std::fs::canonicalize(p)
                    .with_context(|| format!("cannot resolve log dir {}", p.display()))
                    .map_err(internal)
            };
            if !real(parent)?.starts_with(real(Path::new(&pod.log_directory))?) {
                return Err(ContainerError::InvalidArgument(format!(
                    "log_path {:?} leads out of the pod's log_directory {:?} through a symbolic link",
                    config.log_path, pod.log_directory
                )));
            }
        }
    }
    Ok(LogPaths { cri, monitor })
}

/// A CRI `log_path` is relative to the pod's log directory and stays in it:
/// not absolute, no `..`.
fn check_log_path(log_path: &str) -> Result<(), ContainerError> {
    use std::path::Component;
    let p = Path::new(log_path);
    let escapes = p.is_absolute()
        || p.components()
            .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir));
    if escapes || log_path.contains('\0') {
        return Err(ContainerError::InvalidArgument(format!(
            "log_path {log_path:?} must be a path relative to the pod's log_directory, without \"..\""
        )));
    }
    Ok(())
}

/// The config's `user_specified_image` (the kubelet sends the image's ID as `image` and the
/// pod's name for it here).
fn user_specified_image(config: &ContainerConfig) -> String {
    config
        .image
        .as_ref()
        .map(|i| i.user_specified_image.clone())
        .unwrap_or_default()
}

/// [`ContainerRecord::image_tag`]: the image's first tag when the config named the image by
/// its ID (with or without `sha256:`) and gave no `user_specified_image`; else empty.
fn image_tag(config: &ContainerConfig, image_name: &str, image: &berth_image::Image) -> String {
    let by_id = image_name == image.id || image.id.strip_prefix("sha256:") == Some(image_name);
    match image.repo_tags.first() {
        Some(tag) if by_id && user_specified_image(config).is_empty() => tag.clone(),
        _ => String::new(),
    }
}

/// The record of a container its monitor created.
fn new_record(
    input: &SpecInput<'_>,
    image: &berth_image::Image,
    stop_signal: i32,
    spec: &berth_spec::oci_spec::runtime::Spec,
    dirs: Dirs,
    log_path: String,
    mounts: Vec<record::MountRecord>,
) -> ContainerRecord {
    let config = input.config;
    let md = config.metadata.clone().unwrap_or_default();
    ContainerRecord {
        id: input.id.to_string(),
        pod_id: input.pod.id.clone(),
        name: md.name,
        attempt: md.attempt,
        image: input.image_name.to_string(),
        user_specified_image: user_specified_image(config),
        image_tag: image_tag(config, input.image_name, image),
        image_id: image.id.clone(),
        image_ref: image
            .repo_digests
            .first()
            .cloned()
            .unwrap_or_else(|| image.id.clone()),
        labels: config.labels.clone().into_iter().collect(),
        annotations: config.annotations.clone().into_iter().collect(),
        log_path,
        stop_signal,
        state: State::Created,
        created_at: now_ns(),
        started_at: 0,
        finished_at: 0,
        exit_code: 0,
        oom_killed: false,
        message: String::new(),
        bundle: dirs.bundle,
        layer_dir: dirs.layer_dir,
        // What ContainerStatus reports: the CRI mounts as given, the
        // resources and user as the spec set them.
        mounts,
        resources: Some(record::ResourcesRecord::from_spec(spec)),
        user: record::UserRecord::from_spec(spec),
        tty: config.tty,
        stdin: config.stdin,
        stdin_once: config.stdin && config.stdin_once,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_paths_stay_in_the_log_directory() {
        for ok in ["c/0.log", "nginx_0.log", "./c/1.log"] {
            check_log_path(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in ["/etc/shadow", "../x.log", "c/../../x.log", "c/..", "a\0b"] {
            let e = check_log_path(bad).unwrap_err();
            assert!(
                matches!(e, ContainerError::InvalidArgument(_)),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn the_image_shown_is_the_pods_own_name() {
        let image = berth_image::Image {
            id: format!("sha256:{}", "ab".repeat(32)),
            repo_tags: vec!["registry.k8s.io/e2e-test-images/busybox:1.36.1-1".into()],
            repo_digests: vec![],
            size: 0,
            user: None,
            pinned: false,
            manifest_digest: String::new(),
            layers: vec![],
            config_json: vec![],
        };
        let config = |image: &str, user_specified: &str| ContainerConfig {
            image: Some(berth_api::v1::ImageSpec {
                image: image.into(),
                user_specified_image: user_specified.into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        // The kubelet: the ID, and the pod's name (another tag of the same image).
        let wanted = "registry.k8s.io/e2e-test-images/busybox:1.37.0-2";
        let c = config(&image.id, wanted);
        assert_eq!(user_specified_image(&c), wanted);
        assert_eq!(image_tag(&c, &image.id, &image), "");
        // A client naming the image by its ID alone (with or without "sha256:") sees a tag.
        for id in [image.id.as_str(), image.id.trim_start_matches("sha256:")] {
            let c = config(id, "");
            assert_eq!(user_specified_image(&c), "");
            assert_eq!(image_tag(&c, id, &image), image.repo_tags[0]);
        }
        // By name: that name stays what is shown (nothing kept beside it).
        let named = "busybox:latest";
        let c = config(named, "");
        assert_eq!(
            (user_specified_image(&c), image_tag(&c, named, &image)),
            (String::new(), String::new())
        );
    }
}
