//! Pod sandboxes: durable records, pinned namespaces, lifecycle.
//!
//! No pause container: a pod is its record plus its pinned net/IPC/UTS
//! namespaces, its /dev/shm tmpfs and, when its containers share one PID
//! namespace, Berth's own pod init (see [`pin`]). Containers run under the
//! per-pod monitor.

pub mod pin;
pub mod record;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use berth_api::v1::PodSandboxConfig;
use prost::Message;
use redb::{Database, ReadableTable, TableDefinition};
use tracing::Instrument;

pub use record::{NamespaceModes, PodInit, SandboxRecord, SandboxState};

use crate::ids::{new_id, now_ns};
use crate::network::PodNetwork;
use crate::store::StoreError;

/// id → JSON [`SandboxRecord`].
const SANDBOXES: TableDefinition<&str, &str> = TableDefinition::new("sandboxes");

pub use crate::error::RuntimeError as SandboxError;
use crate::error::db_err;

#[derive(Default)]
struct Inner {
    records: BTreeMap<String, SandboxRecord>,
    /// Reservation key → id, held from the start of RunPodSandbox.
    names: HashMap<String, String>,
}

pub struct Sandboxes {
    db: Arc<Database>,
    pods_dir: PathBuf,
    /// Never held across an await.
    inner: Mutex<Inner>,
    /// Serialises state changes (stop, remove) so they see one another
    /// whole, the pod's containers included (see [`PodChange`]).
    ops: tokio::sync::Mutex<()>,
    /// CNI: each pod's eth0.
    network: Arc<PodNetwork>,
    /// NRI plugins, told of a pod before it shows (set when NRI is on).
    nri: std::sync::OnceLock<berth_nri::Nri>,
}

impl Sandboxes {
    /// Loads every record; a READY pod whose pins are gone (the state dir is
    /// on tmpfs and the host rebooted) is marked NOTREADY.
    pub fn open(
        db: Arc<Database>,
        state_dir: &Path,
        network: Arc<PodNetwork>,
    ) -> Result<Sandboxes, StoreError> {
        let pods_dir = state_dir.join("pods");
        let txn = db.begin_write()?;
        let mut inner = Inner::default();
        {
            let mut table = txn.open_table(SANDBOXES)?;
            let mut stale = Vec::new();
            for entry in table.iter()? {
                let (k, v) = entry?;
                let mut rec: SandboxRecord = match serde_json::from_str(v.value()) {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::error!(pod = k.value(), error = %e, "unreadable sandbox record, ignored");
                        continue;
                    }
                };
                if rec.state == SandboxState::Ready && !healthy(&rec) {
                    tracing::warn!(pod = %rec.id, "pinned namespaces are gone (reboot?): sandbox is NOTREADY");
                    rec.state = SandboxState::NotReady;
                    stale.push(rec.clone());
                }
                inner.names.insert(rec.reservation_key(), rec.id.clone());
                inner.records.insert(rec.id.clone(), rec);
            }
            for rec in stale {
                let json =
                    serde_json::to_string(&rec).map_err(|e| StoreError::Db(e.to_string()))?;
                table.insert(rec.id.as_str(), json.as_str())?;
            }
        }
        txn.commit()?;
        tracing::info!(count = inner.records.len(), "pod sandboxes loaded");
        remove_orphan_pod_dirs(&pods_dir, &inner.records);
        Ok(Sandboxes {
            db,
            pods_dir,
            inner: Mutex::new(inner),
            ops: tokio::sync::Mutex::new(()),
            network,
            nri: std::sync::OnceLock::new(),
        })
    }

    /// From now on NRI plugins see each new pod before anyone else does.
    pub fn use_nri(&self, nri: berth_nri::Nri) {
        let _ = self.nri.set(nri);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Exact id, or a unique prefix of one (as containerd resolves ids).
    pub fn resolve(&self, id: &str) -> Option<SandboxRecord> {
        if id.is_empty() {
            return None;
        }
        let inner = self.lock();
        if let Some(r) = inner.records.get(id) {
            return Some(live(r));
        }
        let mut hits = inner
            .records
            .range(id.to_string()..)
            .take_while(|(k, _)| k.starts_with(id));
        match (hits.next(), hits.next()) {
            (Some((_, r)), None) => Some(live(r)),
            _ => None,
        }
    }

    pub fn list(&self) -> Vec<SandboxRecord> {
        self.lock().records.values().map(live).collect()
    }

    /// What `f` makes of each record and its live state, without copying
    /// the records (ListPodSandbox, every second from the kubelet, wants a
    /// few fields of each, not its config or pins).
    pub fn list_map<T>(
        &self,
        mut f: impl FnMut(&SandboxRecord, SandboxState) -> Option<T>,
    ) -> Vec<T> {
        self.lock()
            .records
            .values()
            .filter_map(|r| f(r, live_state(r)))
            .collect()
    }

    fn put(&self, rec: &SandboxRecord) -> Result<(), SandboxError> {
        let json = serde_json::to_string(rec).map_err(db_err)?;
        let txn = self.db.begin_write().map_err(db_err)?;
        txn.open_table(SANDBOXES)
            .map_err(db_err)?
            .insert(rec.id.as_str(), json.as_str())
            .map_err(db_err)?;
        txn.commit().map_err(db_err)?;
        self.lock().records.insert(rec.id.clone(), rec.clone());
        Ok(())
    }

    /// RunPodSandbox: validate, reserve the name, pin namespaces, record.
    /// `handlers`: the runtime handlers configured beside the default one.
    pub async fn run(
        &self,
        config: PodSandboxConfig,
        runtime_handler: String,
        handlers: &[String],
        pod_cidr: &str,
    ) -> Result<SandboxRecord, SandboxError> {
        let plan = validate(&config, &runtime_handler, handlers)?;
        let id = new_id().map_err(|e| SandboxError::Internal(e.into()))?;
        let md = config.metadata.clone().unwrap_or_default();
        let key = record::reservation_key(&md.name, &md.namespace, &md.uid, md.attempt);
        {
            let mut inner = self.lock();
            if let Some(other) = inner.names.get(&key) {
                return Err(SandboxError::AlreadyExists(format!(
                    "pod sandbox name {key:?} is reserved for {other}"
                )));
            }
            inner.names.insert(key.clone(), id.clone());
        }
        let span = tracing::info_span!("run_pod_sandbox", pod = %id);
        let dir = self.pods_dir.join(&id);
        let result = self
            .create(&id, &dir, config, runtime_handler, plan, pod_cidr)
            .instrument(span.clone())
            .await;
        let _e = span.enter();
        if result.is_err() {
            // Roll back: nothing of a failed run may remain (the pin
            // helper killed a pod init it made before failing).
            if let Err(e) = remove_pod_dir(&dir, None).await {
                tracing::error!(error = %format!("{e:#}"), "rollback of failed RunPodSandbox");
            }
            self.lock().names.remove(&key);
        }
        result
    }

    async fn create(
        &self,
        id: &str,
        dir: &Path,
        config: PodSandboxConfig,
        runtime_handler: String,
        mut plan: pin::PinRequest,
        pod_cidr: &str,
    ) -> Result<SandboxRecord, SandboxError> {
        let created = std::time::Instant::now();
        let mut laps = crate::laps::Laps::new();
        // A pod IPC namespace gets its own /dev/shm; a host-IPC pod uses the host's.
        if plan.ipc {
            plan.shm = Some(dir.join("shm"));
        }
        if plan.userns.is_some() {
            searchable_by_others(&self.pods_dir)?;
        }
        std::fs::create_dir_all(dir).map_err(|e| {
            SandboxError::Internal(anyhow::anyhow!("cannot create {}: {e}", dir.display()))
        })?;
        let pinned = pin::pin(&dir.join("ns"), &plan)
            .await
            .map_err(SandboxError::Internal)?;
        laps.mark("pin");
        crate::failpoint::hit("sandbox-run-pinned");
        // The pod's eth0, when it has its own network namespace.
        let ips = match &pinned.pins.net {
            Some(netns) => {
                let attached = self.network.attach(id, netns, &config, pod_cidr).await;
                match attached {
                    Ok(ips) => ips,
                    Err(e) => {
                        // The ADD undid itself; the pod init must go too.
                        if let Some(init) = &pinned.init {
                            let _ = pin::kill_init(init).await;
                        }
                        return Err(e);
                    }
                }
            }
            None => None,
        };
        laps.mark("network");
        crate::failpoint::hit("sandbox-run-attached");
        let md = config.metadata.clone().unwrap_or_default();
        let linux = config.linux.clone().unwrap_or_default();
        let sc = linux.security_context.clone().unwrap_or_default();
        let rec = SandboxRecord {
            id: id.to_string(),
            name: md.name,
            namespace: md.namespace,
            uid: md.uid,
            attempt: md.attempt,
            created_at: now_ns(),
            state: SandboxState::Ready,
            hostname: config.hostname.clone(),
            log_directory: config.log_directory.clone(),
            runtime_handler,
            labels: config.labels.clone().into_iter().collect(),
            annotations: config.annotations.clone().into_iter().collect(),
            namespace_modes: NamespaceModes::from_cri(sc.namespace_options.as_ref()),
            pins: pinned.pins,
            sysctls: plan.sysctls,
            cgroup_parent: linux.cgroup_parent.clone(),
            privileged: sc.privileged,
            init: pinned.init,
            shm: pinned.shm,
            network_attached: ips.is_some(),
            ips: ips
                .unwrap_or_default()
                .iter()
                .map(|ip| ip.to_string())
                .collect(),
            dir: dir.to_path_buf(),
            config_pb: hex::encode(config.encode_to_vec()),
        };
        // NRI plugins see the pod set up (namespaces, IPs) before anyone
        // else does: a refusal undoes it all.
        laps.mark("prepare");
        let refused = match self.nri.get() {
            Some(nri) => nri
                .run_pod_sandbox(&crate::nri::convert::pod_of(&rec))
                .await
                .map_err(|e| SandboxError::FailedPrecondition(e.to_string())),
            None => Ok(()),
        };
        if let Err(e) = refused.and_then(|()| self.put(&rec)) {
            if let Some(init) = &rec.init {
                let _ = pin::kill_init(init).await;
            }
            if rec.network_attached
                && let Err(d) = self.detach_network(&rec).await
            {
                tracing::error!(error = %d, "rollback of the pod network (startup GC will retry)");
            }
            return Err(e);
        }
        laps.mark("record");
        tracing::info!(name = %rec.name, namespace = %rec.namespace, elapsed_ms = created.elapsed().as_millis() as u64, steps = %laps, "pod sandbox ready");
        Ok(rec)
    }

    /// UpdatePodSandboxResources: the pod's stored `PodSandboxConfig` takes
    /// the new pod-level overhead and resources (a field left out keeps its
    /// value). The kubelet has already resized the pod cgroup it owns; what
    /// is stored is what containers created later, and status, see.
    pub async fn update_resources(
        &self,
        id: &str,
        overhead: Option<berth_api::v1::LinuxContainerResources>,
        resources: Option<berth_api::v1::LinuxContainerResources>,
    ) -> Result<SandboxRecord, SandboxError> {
        use prost::Message;
        // Serialised with stop and remove: never a record they removed.
        let _ops = self.ops.lock().await;
        let mut rec = self
            .resolve(id)
            .ok_or_else(|| SandboxError::NotFound(format!("pod sandbox {id} not found")))?;
        let mut config = rec.config().map_err(SandboxError::Internal)?;
        let linux = config.linux.get_or_insert_with(Default::default);
        if overhead.is_some() {
            linux.overhead = overhead;
        }
        if resources.is_some() {
            linux.resources = resources;
        }
        rec.config_pb = hex::encode(config.encode_to_vec());
        self.put(&rec)?;
        tracing::info!(pod = %rec.id, "pod sandbox resources updated");
        Ok(rec)
    }

    /// Starts a StopPodSandbox or RemovePodSandbox of `id` (an exact id
    /// or unique prefix): waits for any other in flight, then resolves it.
    /// None: no such pod, nothing to do (the CRI asks both to succeed then).
    pub async fn begin_change(&self, id: &str) -> Option<PodChange<'_>> {
        let ops = self.ops.lock().await;
        let rec = self.resolve(id)?;
        Some(PodChange {
            sandboxes: self,
            rec,
            _ops: ops,
        })
    }
}

/// A StopPodSandbox or RemovePodSandbox in progress, holding the lock that
/// serialises them from [`Sandboxes::begin_change`] to its end. The caller
/// stops or removes the pod's containers first (the sandbox does not own
/// them), then calls [`PodChange::stop`] or [`PodChange::remove`].
pub struct PodChange<'a> {
    sandboxes: &'a Sandboxes,
    rec: SandboxRecord,
    _ops: tokio::sync::MutexGuard<'a, ()>,
}

impl PodChange<'_> {
    /// The pod's full id.
    pub fn pod_id(&self) -> &str {
        &self.rec.id
    }

    /// StopPodSandbox, once the pod's containers are stopped: NOTREADY.
    /// Idempotent: done even for a NOTREADY pod, so a retried
    /// StopPodSandbox finishes a stop that failed midway.
    pub async fn stop(self) -> Result<(), SandboxError> {
        let this = self.sandboxes;
        let rec = self.rec;
        // The pod init, and with it anything left in the pod's PID namespace.
        if let Some(init) = &rec.init {
            pin::kill_init(init).await.map_err(SandboxError::Internal)?;
        }
        let Some(mut rec) = this.lock().records.get(&rec.id).cloned() else {
            return Ok(());
        };
        // Then its network: the IP goes back to the pool now, not at removal.
        if rec.network_attached {
            this.detach_network(&rec).await?;
            rec.network_attached = false;
            rec.state = SandboxState::NotReady;
            this.put(&rec)?;
        }
        if rec.state == SandboxState::NotReady {
            return Ok(());
        }
        rec.state = SandboxState::NotReady;
        this.put(&rec)?;
        tracing::info!(pod = %rec.id, "pod sandbox stopped");
        Ok(())
    }

    /// RemovePodSandbox, once the pod's containers and monitor are gone:
    /// network, pins, dir and record.
    pub async fn remove(self) -> Result<(), SandboxError> {
        let this = self.sandboxes;
        let rec = self.rec;
        // A DEL that failed at stop (or a pod never stopped) is retried
        // here: no IP may outlive its pod.
        if rec.network_attached {
            this.detach_network(&rec).await?;
        }
        crate::failpoint::hit("sandbox-remove-detached");
        remove_pod_dir(&rec.dir, rec.init.as_ref())
            .await
            .map_err(SandboxError::Internal)?;
        crate::failpoint::hit("sandbox-remove-dir-removed");
        let txn = this.db.begin_write().map_err(db_err)?;
        txn.open_table(SANDBOXES)
            .map_err(db_err)?
            .remove(rec.id.as_str())
            .map_err(db_err)?;
        txn.commit().map_err(db_err)?;
        let mut inner = this.lock();
        inner.records.remove(&rec.id);
        inner.names.remove(&rec.reservation_key());
        tracing::info!(pod = %rec.id, "pod sandbox removed");
        Ok(())
    }
}

impl Sandboxes {
    /// CNI DEL of the pod's attachment (what its ADD used comes from the cache).
    async fn detach_network(&self, rec: &SandboxRecord) -> Result<(), SandboxError> {
        let config = rec.config().map_err(SandboxError::Internal)?;
        let netns = rec.pins.net.as_deref().filter(|p| pin::is_pinned(p));
        self.network.detach(&rec.id, netns, &config).await?;
        Ok(())
    }

    /// Ids of the pods holding a CNI attachment (for the startup GC).
    pub fn network_attached(&self) -> Vec<String> {
        self.lock()
            .records
            .values()
            .filter(|r| r.network_attached)
            .map(|r| r.id.clone())
            .collect()
    }
}

/// Pod dirs no record names: a RunPodSandbox that crashed before its
/// record was written (or a failed rollback). Their pins, /dev/shm and pod
/// init would otherwise stay forever; their CNI attachment, if any, goes
/// with the startup network GC.
fn remove_orphan_pod_dirs(pods_dir: &Path, records: &BTreeMap<String, SandboxRecord>) {
    let Ok(entries) = std::fs::read_dir(pods_dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if records.contains_key(&name) || !e.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let dir = e.path();
        tracing::warn!(pod = %name, "pod dir without a record (crash during RunPodSandbox?): removing it");
        pin::kill_pinned_pid_namespace(&dir.join("ns").join("pid"));
        if let Err(e) = unpin_and_remove(&dir) {
            tracing::error!(pod = %name, error = %format!("{e:#}"), "cannot remove orphan pod dir");
        }
    }
}

/// True when the pod's state dir, every recorded pin and its init are still there.
fn healthy(rec: &SandboxRecord) -> bool {
    rec.dir.is_dir()
        && rec.pins.iter().all(|p| pin::is_pinned(p))
        && rec.init.as_ref().is_none_or(pin::init_alive)
}

/// The record as the CRI should see it: a READY pod whose init died (killed
/// from outside, OOM) has lost its PID namespace and every process in it.
fn live(rec: &SandboxRecord) -> SandboxRecord {
    let mut out = rec.clone();
    out.state = live_state(rec);
    out
}

/// The record's state, NOT_READY once the pod init of a pod that has one
/// is gone.
fn live_state(rec: &SandboxRecord) -> SandboxState {
    if rec.state == SandboxState::Ready && rec.init.as_ref().is_some_and(|i| !pin::init_alive(i)) {
        return SandboxState::NotReady;
    }
    rec.state
}

async fn remove_pod_dir(dir: &Path, init: Option<&PodInit>) -> anyhow::Result<()> {
    if let Some(init) = init {
        pin::kill_init(init).await?;
    }
    unpin_and_remove(dir)
}

/// The pod dir's pins, /dev/shm and files tmpfs unmounted, then the dir
/// deleted.
fn unpin_and_remove(dir: &Path) -> anyhow::Result<()> {
    pin::unpin(&dir.join("ns"), Some(&dir.join("shm")))?;
    pin::detach(&dir.join(crate::container::rootfs::POD_ETC_DIR))?;
    // The pod's /dev/shm was a container-writable tmpfs, now unmounted;
    // what is left may still be any depth.
    berth_rmtree::remove_tree(dir)
        .map_err(|e| anyhow::anyhow!("cannot remove {}: {e}", dir.display()))
}

/// The containers of a `hostUsers: false` pod reach their bundle and the
/// pod's files as an unprivileged host user: every dir above `dir` must let
/// others search it (as containerd's and CRI-O's state dirs do), or
/// libcontainer fails deep inside with a bare EACCES.
fn searchable_by_others(dir: &Path) -> Result<(), SandboxError> {
    use std::os::unix::fs::PermissionsExt;
    for d in dir.ancestors() {
        let Ok(meta) = std::fs::metadata(d) else {
            continue;
        };
        if meta.permissions().mode() & 0o001 == 0 {
            return Err(SandboxError::FailedPrecondition(format!(
                "{} is not searchable by others, which the containers of a pod with its own user namespace (hostUsers: false) need to reach their files: chmod o+x {}",
                d.display(),
                d.display()
            )));
        }
    }
    Ok(())
}

/// Checks the request (`berth_spec::sandbox::validate`, pure so that it can
/// be fuzzed) and turns it into what the pinning child must do.
fn validate(
    config: &PodSandboxConfig,
    handler: &str,
    handlers: &[String],
) -> Result<pin::PinRequest, SandboxError> {
    let plan = berth_spec::sandbox::validate(config, handler, handlers)
        .map_err(SandboxError::InvalidArgument)?;
    Ok(pin::PinRequest {
        net: plan.net,
        ipc: plan.ipc,
        pid: plan.pid,
        shm: None,
        uts: plan.uts,
        hostname: plan.hostname,
        sysctls: plan.sysctls,
        userns: plan.userns,
        init_exe_fd: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_api::v1::{LinuxPodSandboxConfig, PodSandboxMetadata};

    fn config() -> PodSandboxConfig {
        PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: "p".into(),
                namespace: "ns".into(),
                uid: "u".into(),
                attempt: 0,
            }),
            ..Default::default()
        }
    }

    /// A newline in a DNS entry or the hostname would add lines of the
    /// tenant's choosing to resolv.conf or hosts.
    #[test]
    fn only_configured_runtime_handlers_are_taken() {
        let c = config();
        let handlers = ["test-handler".to_owned()];
        assert!(validate(&c, "test-handler", &handlers).is_ok());
        let err = validate(&c, "kata", &handlers).unwrap_err().to_string();
        assert!(
            err.contains("\"kata\" is not configured") && err.contains("runtime_handlers"),
            "{err}"
        );
        assert!(validate(&c, "test-handler", &[]).is_err());
    }

    #[test]
    fn dns_entries_and_hostname_cannot_add_lines() {
        let mut c = config();
        c.dns_config = Some(berth_api::v1::DnsConfig {
            servers: vec!["10.0.0.10".into()],
            searches: vec!["svc.cluster.local".into()],
            options: vec!["ndots:5".into()],
        });
        assert!(validate(&c, "", &[]).is_ok());
        for (i, bad) in ["1.1.1.1\nnameserver 6.6.6.6", "a b", "ndots:1\toptions"]
            .iter()
            .enumerate()
        {
            let mut d = c.clone();
            let dns = d.dns_config.as_mut().unwrap();
            match i % 3 {
                0 => dns.servers.push(bad.to_string()),
                1 => dns.searches.push(bad.to_string()),
                _ => dns.options.push(bad.to_string()),
            }
            let err = validate(&d, "", &[]).expect_err("refused").to_string();
            assert!(err.contains("dns_config."), "{err}");
        }
        let mut h = c.clone();
        h.hostname = "web\n10.0.0.1 kubernetes".into();
        assert!(validate(&h, "", &[]).is_err());
    }

    #[test]
    fn metadata_fields_are_required_by_name() {
        for field in ["name", "namespace", "uid"] {
            let mut c = config();
            let md = c.metadata.as_mut().unwrap();
            match field {
                "name" => md.name.clear(),
                "namespace" => md.namespace.clear(),
                _ => md.uid.clear(),
            }
            let err = validate(&c, "", &[]).err().unwrap().to_string();
            assert!(err.contains(&format!("metadata.{field}")), "{err}");
        }
    }

    #[test]
    fn only_namespaced_sysctls_are_accepted() {
        let mut c = config();
        let mut linux = LinuxPodSandboxConfig::default();
        linux.sysctls.insert("vm.swappiness".into(), "1".into());
        c.linux = Some(linux.clone());
        assert!(matches!(
            validate(&c, "", &[]),
            Err(SandboxError::InvalidArgument(_))
        ));
        linux.sysctls.clear();
        linux
            .sysctls
            .insert("net.ipv4.ip_unprivileged_port_start".into(), "80".into());
        linux
            .sysctls
            .insert("kernel.shmmax".into(), "1000000".into());
        c.linux = Some(linux);
        let plan = validate(&c, "", &[]).unwrap();
        assert!(plan.net && plan.ipc && plan.uts);
        assert_eq!(plan.sysctls.len(), 2);
    }

    #[test]
    fn cgroup_parents_are_paths_or_slices() {
        for (parent, ok) in [
            ("/kubepods/burstable/pod1", true),
            ("kubepods-burstable-pod1.slice", true),
            (
                "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-p.slice",
                true,
            ),
            ("/kubepods/../../etc", false),
            ("kubepods--x.slice", false),
        ] {
            let mut c = config();
            c.linux = Some(LinuxPodSandboxConfig {
                cgroup_parent: parent.into(),
                ..Default::default()
            });
            assert_eq!(validate(&c, "", &[]).is_ok(), ok, "{parent}");
        }
    }
}
