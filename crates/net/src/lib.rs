//! Berth's CNI caller: runs CNI plugins as the CNI specification
//! (<https://github.com/containernetworking/cni/blob/main/SPEC.md>, 0.1.0 to
//! 1.1.0) defines.
//!
//! - [`Cni`] is what the daemon holds: it loads the network config from a
//!   conf dir (first file in lexical order), notices changes on demand
//!   ([`Cni::refresh`]), answers [`Cni::ready`], and runs
//!   [`Cni::add`] / [`Cni::del`] / [`Cni::check`] / [`Cni::status`] /
//!   [`Cni::gc`] with per-plugin timeouts, caching each attachment durably
//!   so DEL gets what ADD used and returned, also after a restart.
//! - The pieces are public for reuse and tests: [`config`] (loading,
//!   request derivation), [`exec`] (running plugins), [`result`] (parsing
//!   results of every version), [`cache`] (the attachment records).

pub mod attachment;
pub mod cache;
pub mod config;
pub mod error;
pub mod exec;
pub mod forward;
pub mod result;
pub mod version;

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};

pub use attachment::{
    Attachment, AttachmentKey, Bandwidth, CapabilityArgs, DEFAULT_IFNAME, DnsCapability, IpRange,
    PodRef, PortMapping, Protocol, k8s_cni_args,
};
pub use cache::{CacheEntry, ResultCache};
pub use config::{ConfDirFingerprint, NetworkConfigList, PluginConf, load_conf_dir};
pub use error::CniError;
pub use exec::{Command, Invoker, PluginEnv, VersionInfo, find_plugin};
pub use result::{CniResult, Dns, Interface, IpCidr, IpConfig, Route};
pub use version::CniVersion;

/// Default network config dir.
pub const DEFAULT_CONF_DIR: &str = "/etc/cni/net.d";
/// Default plugin dirs, searched in order (upstream's, then Debian's).
pub const DEFAULT_BIN_DIRS: [&str; 2] = ["/opt/cni/bin", "/usr/lib/cni"];
/// Default limit for one plugin execution.
pub const DEFAULT_PLUGIN_TIMEOUT: Duration = Duration::from_secs(20);
/// CRI `NetworkReady` reason when the network is not ready.
pub const REASON_NOT_READY: &str = "NetworkPluginNotReady";

/// Settings of a [`Cni`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CniOptions {
    /// Where the network config is read from.
    pub conf_dir: PathBuf,
    /// Where plugins are looked for, in order; also `CNI_PATH`.
    pub bin_dirs: Vec<PathBuf>,
    /// Where attachment records are kept (berthd: `<state>/cni`).
    pub cache_dir: PathBuf,
    /// Limit for each plugin execution; the plugin's process group is
    /// killed when it is exceeded.
    pub plugin_timeout: Duration,
}

impl CniOptions {
    /// The defaults, with the given cache dir.
    pub fn new(cache_dir: impl Into<PathBuf>) -> Self {
        Self {
            conf_dir: DEFAULT_CONF_DIR.into(),
            bin_dirs: DEFAULT_BIN_DIRS.iter().map(PathBuf::from).collect(),
            cache_dir: cache_dir.into(),
            plugin_timeout: DEFAULT_PLUGIN_TIMEOUT,
        }
    }

    /// Splits a `:`-separated dir list (`--cni-bin-dir`), skipping empties.
    pub fn parse_dir_list(s: &str) -> Vec<PathBuf> {
        s.split(':')
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
            .collect()
    }
}

/// The answer for CRI `Status`' `NetworkReady` condition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetworkReadiness {
    pub ready: bool,
    /// Empty when ready, else [`REASON_NOT_READY`].
    pub reason: String,
    /// Why it is not ready (naming the dir, file or plugin); when ready,
    /// which network and file are in use.
    pub message: String,
}

/// What a successful ADD returns.
#[derive(Clone, Debug, PartialEq)]
pub struct AddResult {
    pub key: AttachmentKey,
    /// The spec version the plugins were run at.
    pub cni_version: CniVersion,
    /// The final result, parsed.
    pub result: CniResult,
    /// The final result as the last plugin printed it.
    pub raw: Value,
}

impl AddResult {
    /// The pod's IPs on its sandbox interface, IPv4 first.
    pub fn pod_ips(&self) -> Vec<IpAddr> {
        self.result.pod_ips(&self.key.ifname)
    }
}

/// An attachment GC must keep (`cni.dev/valid-attachments`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct GcAttachment {
    pub container_id: String,
    pub ifname: String,
}

/// What [`Cni::gc`] did.
#[derive(Debug, Default)]
pub struct GcReport {
    /// Stale cached attachments that were DELeted.
    pub deleted: Vec<AttachmentKey>,
    /// Failures (a stale attachment's DEL, or a plugin's GC); the rest went on.
    pub errors: Vec<CniError>,
}

/// A loaded network and the spec version chosen for it (lazily: choosing
/// may ask the plugins `VERSION`).
#[derive(Debug)]
struct Network {
    list: NetworkConfigList,
    version: tokio::sync::OnceCell<CniVersion>,
}

#[derive(Debug)]
enum ConfigState {
    NoConfig { dir: PathBuf },
    Invalid { path: PathBuf, reason: String },
    Loaded(Arc<Network>),
}

impl ConfigState {
    fn from_load(res: Result<NetworkConfigList, CniError>) -> Self {
        match res {
            Ok(list) => Self::Loaded(Arc::new(Network {
                list,
                version: tokio::sync::OnceCell::new(),
            })),
            Err(CniError::NoConfig { dir }) => Self::NoConfig { dir },
            Err(CniError::InvalidConfig { path, reason }) => Self::Invalid { path, reason },
            Err(CniError::ConfDir { dir, source }) => Self::Invalid {
                path: dir,
                reason: format!("cannot read the dir: {source}"),
            },
            Err(other) => Self::Invalid {
                path: PathBuf::new(),
                reason: other.to_string(),
            },
        }
    }

    fn network(&self) -> Result<Arc<Network>, CniError> {
        match self {
            Self::Loaded(n) => Ok(n.clone()),
            Self::NoConfig { dir } => Err(CniError::NoConfig { dir: dir.clone() }),
            Self::Invalid { path, reason } => Err(CniError::InvalidConfig {
                path: path.clone(),
                reason: reason.clone(),
            }),
        }
    }
}

/// The daemon's CNI handle. Cheap to share (`Arc<Cni>`); every method takes
/// `&self`.
///
/// Concurrency (SPEC section 3): operations on one (container, ifname) are
/// serialized; GC runs alone (no ADD or DEL meanwhile).
#[derive(Debug)]
pub struct Cni {
    opts: CniOptions,
    invoker: Invoker,
    cache: ResultCache,
    /// The fingerprint of the last load (`None`: the dir was unreadable)
    /// and what was loaded.
    state: Mutex<(Option<ConfDirFingerprint>, ConfigState)>,
    gc_lock: tokio::sync::RwLock<()>,
    key_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl Cni {
    /// Loads the conf dir once (a missing or invalid config is not an error
    /// here: [`Cni::ready`] reports it) and removes temp files a crash left
    /// in the cache dir.
    pub fn new(opts: CniOptions) -> Self {
        let (fp, res) = load_conf_dir(&opts.conf_dir);
        let state = ConfigState::from_load(res);
        log_state(&state);
        let cache = ResultCache::new(&opts.cache_dir);
        if let Err(e) = cache.remove_stale_temp_files() {
            tracing::warn!(error = %e, "cannot clean CNI cache temp files");
        }
        Self {
            invoker: Invoker::new(opts.bin_dirs.clone(), opts.plugin_timeout),
            cache,
            opts,
            state: Mutex::new((fp, state)),
            gc_lock: tokio::sync::RwLock::new(()),
            key_locks: Mutex::new(HashMap::new()),
        }
    }

    pub fn options(&self) -> &CniOptions {
        &self.opts
    }

    pub fn invoker(&self) -> &Invoker {
        &self.invoker
    }

    pub fn cache(&self) -> &ResultCache {
        &self.cache
    }

    /// Re-reads the conf dir if it changed: compares the (name, size,
    /// mtime, inode) of its candidate files with those of the last load (a
    /// `readdir` plus one `stat` per file, no inotify). Returns whether it
    /// reloaded. [`Cni::ready`], [`Cni::network`], [`Cni::add`] and
    /// [`Cni::status`] call it themselves.
    pub fn refresh(&self) -> bool {
        let dir = &self.opts.conf_dir;
        let fp = match ConfDirFingerprint::scan(dir) {
            Ok(fp) => fp,
            Err(e) => {
                let mut st = self.state.lock().expect("poisoned");
                let changed = st.0.is_some();
                if changed {
                    tracing::warn!(error = %e, "cannot read the CNI config dir");
                }
                *st = (None, ConfigState::from_load(Err(e)));
                return changed;
            }
        };
        {
            let st = self.state.lock().expect("poisoned");
            if st.0.as_ref() == Some(&fp) {
                return false;
            }
        }
        let (fp, res) = load_conf_dir(dir);
        let state = ConfigState::from_load(res);
        log_state(&state);
        *self.state.lock().expect("poisoned") = (fp, state);
        true
    }

    fn current(&self) -> Result<Arc<Network>, CniError> {
        self.refresh();
        self.state.lock().expect("poisoned").1.network()
    }

    /// The network config in use (after [`Cni::refresh`]).
    pub fn network(&self) -> Result<NetworkConfigList, CniError> {
        self.current().map(|n| n.list.clone())
    }

    /// Whether pods can be networked: a valid config exists and each of its
    /// plugins is found in the bin dirs. Synchronous and cheap (stats only).
    pub fn ready(&self) -> NetworkReadiness {
        let not_ready = |message: String| NetworkReadiness {
            ready: false,
            reason: REASON_NOT_READY.to_owned(),
            message,
        };
        let net = match self.current() {
            Ok(n) => n,
            Err(e) => return not_ready(e.to_string()),
        };
        for p in &net.list.plugins {
            if let Err(e) = self.invoker.find(&p.plugin_type) {
                return not_ready(format!("network {}: {e}", net.list.name));
            }
        }
        NetworkReadiness {
            ready: true,
            reason: String::new(),
            message: format!(
                "network {} from {}",
                net.list.name,
                net.list
                    .source
                    .as_deref()
                    .unwrap_or(Path::new("?"))
                    .display()
            ),
        }
    }

    async fn version_of(&self, net: &Network) -> Result<CniVersion, CniError> {
        net.version
            .get_or_try_init(|| select_version(&self.invoker, &net.list))
            .await
            .copied()
    }

    /// The spec version the current network runs at: the highest of
    /// `cniVersion`/`cniVersions` that every plugin supports (plugins are
    /// asked `VERSION` only when the config offers a choice).
    pub async fn network_version(&self) -> Result<CniVersion, CniError> {
        let net = self.current()?;
        self.version_of(&net).await
    }

    async fn lock_key(&self, container_id: &str, ifname: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let m = {
            let mut map = self.key_locks.lock().expect("poisoned");
            if map.len() > 256 {
                map.retain(|_, m| Arc::strong_count(m) > 1);
            }
            map.entry(format!("{container_id}/{ifname}"))
                .or_default()
                .clone()
        };
        m.lock_owned().await
    }

    async fn with_cache<T: Send + 'static>(
        &self,
        f: impl FnOnce(&ResultCache) -> Result<T, CniError> + Send + 'static,
    ) -> Result<T, CniError> {
        let c = self.cache.clone();
        tokio::task::spawn_blocking(move || f(&c))
            .await
            .expect("CNI cache task panicked")
    }

    /// ADD: runs the plugins of the current network in order, each getting
    /// the previous one's result as `prevResult`, and caches the final
    /// result. A record is written before the first plugin runs, so an ADD
    /// cut short by a crash is still found by [`Cni::cached_attachments`].
    ///
    /// On failure it DELs what was done (the spec asks for a DEL after a
    /// failed ADD) and returns the ADD error; if that DEL fails too, the
    /// record stays for a later [`Cni::del`] / [`Cni::del_cached`] and the
    /// error is [`CniError::AddRollback`].
    pub async fn add(&self, att: &Attachment) -> Result<AddResult, CniError> {
        att.validate()?;
        let net = self.current()?;
        // A missing plugin fails the ADD before anything ran.
        for p in &net.list.plugins {
            self.invoker.find(&p.plugin_type)?;
        }
        let _gc = self.gc_lock.read().await;
        let _key = self.lock_key(&att.container_id, &att.ifname).await;
        let start = Instant::now();
        let key = AttachmentKey {
            network: net.list.name.clone(),
            container_id: att.container_id.clone(),
            ifname: att.ifname.clone(),
        };
        let k = key.clone();
        if let Some(existing) = self.with_cache(move |c| c.load(&k)).await? {
            if existing.is_complete() {
                return Err(CniError::AlreadyAttached(key));
            }
            // A record of an ADD that never completed: undo it first.
            tracing::info!(%key, "DEL of an unfinished earlier ADD before ADD");
            self.del_entry(&existing, Some(&att.netns)).await?;
        }
        let version = self.version_of(&net).await?;
        let caps = att.capabilities.to_map();
        let env = PluginEnv {
            container_id: Some(att.container_id.clone()),
            netns: Some(att.netns.clone()),
            ifname: Some(att.ifname.clone()),
            args: Some(att.cni_args_string()),
        };
        let mut entry = CacheEntry {
            kind: CacheEntry::kind(),
            network: key.network.clone(),
            container_id: key.container_id.clone(),
            ifname: key.ifname.clone(),
            netns: att.netns.clone(),
            cni_args: att.args.clone(),
            capability_args: caps.clone(),
            cni_version: version.to_string(),
            config: net.list.to_value(),
            config_path: net.list.source.clone(),
            result: None,
            created_unix: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        };
        let e = entry.clone();
        self.with_cache(move |c| c.save(&e)).await?;

        let added = match run_add_chain(&self.invoker, &net.list, version, &env, &caps).await {
            Ok((raw, result)) => {
                entry.result = Some(raw.clone());
                let e = entry.clone();
                self.with_cache(move |c| c.save(&e))
                    .await
                    .map(|()| (raw, result))
            }
            Err(err) => Err(err),
        };
        match added {
            Ok((raw, result)) => {
                let out = AddResult {
                    key,
                    cni_version: version,
                    result,
                    raw,
                };
                tracing::info!(
                    key = %out.key,
                    ips = ?out.pod_ips(),
                    elapsed_ms = start.elapsed().as_secs_f64() * 1e3,
                    "CNI ADD done"
                );
                Ok(out)
            }
            Err(add_err) => {
                tracing::warn!(%key, error = %add_err, "CNI ADD failed; running DEL to undo it");
                // No prevResult: the chain never finished.
                match run_del_chain(&self.invoker, &net.list, version, &env, &caps, None).await {
                    Ok(()) => {
                        let k = key.clone();
                        if let Err(e) = self.with_cache(move |c| c.remove(&k)).await {
                            tracing::warn!(%key, error = %e, "cannot remove CNI cache record");
                        }
                        Err(add_err)
                    }
                    Err(del_err) => Err(CniError::AddRollback {
                        add: Box::new(add_err),
                        del: Box::new(del_err),
                    }),
                }
            }
        }
    }

    /// DEL: for each cached record of (container, ifname) — normally one —
    /// runs that record's plugins in reverse order with the config, CNI_ARGS,
    /// capability args and (from 0.4.0) the ADD result it recorded, then
    /// drops the record. With no record (never added, or the cache was
    /// lost), runs DEL with the current config and `att`, which the plugins
    /// treat as a no-op if there is nothing. `att.netns` may be empty (the
    /// recorded one is used). The record is removed only after DEL
    /// succeeded: a failed DEL can be retried (see [`Cni::cached_attachments`]).
    pub async fn del(&self, att: &Attachment) -> Result<(), CniError> {
        config::validate_name(&att.container_id)
            .map_err(|e| CniError::InvalidArgument(format!("container ID: {e}")))?;
        attachment::validate_ifname(&att.ifname)?;
        let _gc = self.gc_lock.read().await;
        let _key = self.lock_key(&att.container_id, &att.ifname).await;
        let (cid, ifname) = (att.container_id.clone(), att.ifname.clone());
        let entries = self.with_cache(move |c| c.find(&cid, &ifname)).await?;
        if entries.is_empty() {
            let net = match self.current() {
                Ok(n) => n,
                Err(e) if e.is_config_error() => {
                    tracing::debug!(container = %att.container_id, error = %e, "no CNI record and no network config: nothing to DEL");
                    return Ok(());
                }
                Err(e) => return Err(e),
            };
            let version = self.version_of(&net).await?;
            let env = PluginEnv {
                container_id: Some(att.container_id.clone()),
                netns: non_empty_path(&att.netns),
                ifname: Some(att.ifname.clone()),
                args: Some(att.cni_args_string()),
            };
            let caps = att.capabilities.to_map();
            return run_del_chain(&self.invoker, &net.list, version, &env, &caps, None).await;
        }
        for e in entries {
            self.del_entry(&e, Some(&att.netns)).await?;
        }
        Ok(())
    }

    /// DEL of one cached attachment (from [`Cni::cached_attachments`]), e.g.
    /// to retry a DEL that failed before or to clean up after a crash.
    /// Absent is fine.
    pub async fn del_cached(&self, key: &AttachmentKey) -> Result<(), CniError> {
        let _gc = self.gc_lock.read().await;
        let _key = self.lock_key(&key.container_id, &key.ifname).await;
        let k = key.clone();
        match self.with_cache(move |c| c.load(&k)).await? {
            Some(e) => self.del_entry(&e, None).await,
            None => Ok(()),
        }
    }

    async fn del_entry(&self, entry: &CacheEntry, netns: Option<&Path>) -> Result<(), CniError> {
        let key = entry.key();
        let path = self.cache.path_for(&key);
        let (list, version) = cached_config(entry, &path)?;
        let prev = if version.has_prev_result_on_del() {
            entry.result.as_ref()
        } else {
            None
        };
        let env = PluginEnv {
            container_id: Some(entry.container_id.clone()),
            netns: netns
                .and_then(non_empty_path)
                .or_else(|| non_empty_path(&entry.netns)),
            ifname: Some(entry.ifname.clone()),
            args: Some(attachment::join_args(&entry.cni_args)),
        };
        let start = Instant::now();
        run_del_chain(
            &self.invoker,
            &list,
            version,
            &env,
            &entry.capability_args,
            prev,
        )
        .await?;
        let k = key.clone();
        self.with_cache(move |c| c.remove(&k)).await?;
        tracing::info!(%key, elapsed_ms = start.elapsed().as_secs_f64() * 1e3, "CNI DEL done");
        Ok(())
    }

    /// CHECK (0.4.0 and later; a no-op when the config sets `disableCheck`):
    /// runs the recorded config's plugins in order with the recorded ADD
    /// result as `prevResult`. Errors if the attachment has no complete
    /// record.
    pub async fn check(&self, att: &Attachment) -> Result<(), CniError> {
        config::validate_name(&att.container_id)
            .map_err(|e| CniError::InvalidArgument(format!("container ID: {e}")))?;
        attachment::validate_ifname(&att.ifname)?;
        let _gc = self.gc_lock.read().await;
        let _key = self.lock_key(&att.container_id, &att.ifname).await;
        let current = self.current().ok().map(|n| n.list.name.clone());
        let (cid, ifname) = (att.container_id.clone(), att.ifname.clone());
        let entries = self.with_cache(move |c| c.find(&cid, &ifname)).await?;
        let entry = entries
            .iter()
            .filter(|e| e.is_complete())
            .find(|e| Some(&e.network) == current.as_ref())
            .or_else(|| entries.iter().find(|e| e.is_complete()))
            .ok_or_else(|| {
                CniError::NotCached(AttachmentKey {
                    network: current.clone().unwrap_or_else(|| "?".into()),
                    container_id: att.container_id.clone(),
                    ifname: att.ifname.clone(),
                })
            })?;
        let path = self.cache.path_for(&entry.key());
        let (list, version) = cached_config(entry, &path)?;
        if !version.has_check() {
            return Err(CniError::CheckUnsupported {
                network: list.name,
                version,
            });
        }
        if list.disable_check {
            return Ok(());
        }
        let env = PluginEnv {
            container_id: Some(entry.container_id.clone()),
            netns: non_empty_path(&att.netns).or_else(|| non_empty_path(&entry.netns)),
            ifname: Some(entry.ifname.clone()),
            args: Some(attachment::join_args(&entry.cni_args)),
        };
        for (i, p) in list.plugins.iter().enumerate() {
            let req =
                list.plugin_request(i, version, &entry.capability_args, entry.result.as_ref());
            self.invoker
                .run(
                    &p.plugin_type,
                    Command::Check,
                    &env,
                    &to_bytes(&req),
                    &list.name,
                )
                .await?;
        }
        Ok(())
    }

    /// STATUS (1.1.0): asks each plugin of the current network that declares
    /// 1.1.0 whether it can serve ADDs; stops at the first error. Below
    /// 1.1.0, or for plugins that do not declare it, there is nothing to ask
    /// and the answer is Ok.
    pub async fn status(&self) -> Result<(), CniError> {
        let net = self.current()?;
        let version = self.version_of(&net).await?;
        if !version.has_status_and_gc() {
            return Ok(());
        }
        let env = PluginEnv::default();
        for (i, p) in net.list.plugins.iter().enumerate() {
            if !self
                .invoker
                .version_info(&p.plugin_type)
                .await?
                .supports(CniVersion::V1_1_0)
            {
                tracing::debug!(plugin = %p.plugin_type, "plugin does not declare CNI 1.1.0: no STATUS");
                continue;
            }
            let req = net.list.plugin_request_plain(i, version, &[]);
            self.invoker
                .run(
                    &p.plugin_type,
                    Command::Status,
                    &env,
                    &to_bytes(&req),
                    &net.list.name,
                )
                .await?;
        }
        Ok(())
    }

    /// GC, run alone (it waits for ADDs and DELs in flight and holds new
    /// ones back): DELs every cached attachment not in `valid`, whatever its
    /// network; then, for a 1.1.0 network without `disableGC`, sends GC with
    /// `cni.dev/valid-attachments` to each plugin that declares 1.1.0.
    /// Failures are collected, not fatal.
    pub async fn gc(&self, valid: &[GcAttachment]) -> Result<GcReport, CniError> {
        let _gc = self.gc_lock.write().await;
        let keep: HashSet<(&str, &str)> = valid
            .iter()
            .map(|a| (a.container_id.as_str(), a.ifname.as_str()))
            .collect();
        let mut report = GcReport::default();
        for e in self.with_cache(|c| c.list()).await? {
            if keep.contains(&(e.container_id.as_str(), e.ifname.as_str())) {
                continue;
            }
            match self.del_entry(&e, None).await {
                Ok(()) => report.deleted.push(e.key()),
                Err(err) => report.errors.push(err),
            }
        }
        let net = match self.current() {
            Ok(n) => n,
            Err(_) => return Ok(report),
        };
        let version = match self.version_of(&net).await {
            Ok(v) => v,
            Err(e) => {
                report.errors.push(e);
                return Ok(report);
            }
        };
        if !version.has_status_and_gc() || net.list.disable_gc {
            return Ok(report);
        }
        let attachments: Value = valid
            .iter()
            .map(|a| json!({"containerID": a.container_id, "ifname": a.ifname}))
            .collect();
        // libcni also sends the pre-release name of the key.
        let extra = [
            ("cni.dev/valid-attachments", attachments.clone()),
            ("cni.dev/attachments", attachments),
        ];
        let env = PluginEnv::default();
        for (i, p) in net.list.plugins.iter().enumerate() {
            match self.invoker.version_info(&p.plugin_type).await {
                Ok(vi) if vi.supports(CniVersion::V1_1_0) => {}
                Ok(_) => continue,
                Err(e) => {
                    report.errors.push(e);
                    continue;
                }
            }
            let req = net.list.plugin_request_plain(i, version, &extra);
            if let Err(e) = self
                .invoker
                .run(
                    &p.plugin_type,
                    Command::Gc,
                    &env,
                    &to_bytes(&req),
                    &net.list.name,
                )
                .await
            {
                report.errors.push(e);
            }
        }
        Ok(report)
    }

    /// Every cached attachment (complete or not): what the daemon compares
    /// with its pods at startup, and retries DEL for.
    pub async fn cached_attachments(&self) -> Result<Vec<CacheEntry>, CniError> {
        self.with_cache(|c| c.list()).await
    }

    /// The recorded ADD result of a container's interface (any network), e.g.
    /// for `PodSandboxStatus` after a restart.
    pub async fn cached_result(
        &self,
        container_id: &str,
        ifname: &str,
    ) -> Result<Option<AddResult>, CniError> {
        let (cid, ifn) = (container_id.to_owned(), ifname.to_owned());
        let entries = self.with_cache(move |c| c.find(&cid, &ifn)).await?;
        for e in entries {
            let Some(raw) = e.result.clone() else {
                continue;
            };
            let path = self.cache.path_for(&e.key());
            let version =
                CniVersion::parse(&e.cni_version).map_err(|reason| CniError::CacheCorrupt {
                    path: path.clone(),
                    reason,
                })?;
            let result = CniResult::from_value(&raw, version)
                .map_err(|reason| CniError::CacheCorrupt { path, reason })?;
            return Ok(Some(AddResult {
                key: e.key(),
                cni_version: version,
                result,
                raw,
            }));
        }
        Ok(None)
    }
}

fn log_state(state: &ConfigState) {
    match state {
        ConfigState::Loaded(n) => tracing::info!(
            network = %n.list.name,
            file = %n.list.source.as_deref().unwrap_or(Path::new("?")).display(),
            plugins = ?n.list.plugins.iter().map(|p| p.plugin_type.as_str()).collect::<Vec<_>>(),
            "CNI network config loaded"
        ),
        ConfigState::NoConfig { dir } => {
            tracing::info!(dir = %dir.display(), "no CNI network config")
        }
        ConfigState::Invalid { path, reason } => {
            tracing::warn!(file = %path.display(), reason, "invalid CNI network config")
        }
    }
}

fn non_empty_path(p: &Path) -> Option<PathBuf> {
    (!p.as_os_str().is_empty()).then(|| p.to_owned())
}

fn to_bytes(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).expect("JSON value serializes")
}

/// Chooses the spec version to run `list` at: with a single candidate, that
/// one; with a choice (`cniVersions`), the highest every plugin declares in
/// its `VERSION` answer (the highest offered if none is common: the
/// plugins' own errors then say what is wrong). A failing `VERSION` is an
/// error (not remembered: the next call asks again).
pub async fn select_version(
    invoker: &Invoker,
    list: &NetworkConfigList,
) -> Result<CniVersion, CniError> {
    let candidates = list.version_candidates();
    let best = candidates.first().copied().unwrap_or(list.cni_version);
    if candidates.len() <= 1 {
        return Ok(best);
    }
    let mut infos = Vec::with_capacity(list.plugins.len());
    for p in &list.plugins {
        infos.push(invoker.version_info(&p.plugin_type).await?);
    }
    let chosen = candidates
        .into_iter()
        .find(|v| infos.iter().all(|vi| vi.supports(*v)))
        .unwrap_or(best);
    tracing::debug!(network = %list.name, version = %chosen, "CNI version chosen");
    Ok(chosen)
}

/// Runs ADD through the chain; returns the last result (raw and parsed).
pub async fn run_add_chain(
    invoker: &Invoker,
    list: &NetworkConfigList,
    version: CniVersion,
    env: &PluginEnv,
    capability_args: &Map<String, Value>,
) -> Result<(Value, CniResult), CniError> {
    let mut prev: Option<(Value, CniResult)> = None;
    for (i, p) in list.plugins.iter().enumerate() {
        let req = list.plugin_request(i, version, capability_args, prev.as_ref().map(|p| &p.0));
        let out = invoker
            .run(
                &p.plugin_type,
                Command::Add,
                env,
                &to_bytes(&req),
                &list.name,
            )
            .await?;
        let invalid = |reason: String| CniError::InvalidResult {
            plugin: p.plugin_type.clone(),
            command: Command::Add,
            network: list.name.clone(),
            reason,
        };
        let raw: Value = serde_json::from_slice(&out.stdout).map_err(|e| {
            invalid(format!(
                "not JSON ({e}): {:?}",
                String::from_utf8_lossy(&out.stdout)
            ))
        })?;
        let parsed = CniResult::from_value(&raw, version).map_err(invalid)?;
        prev = Some((raw, parsed));
    }
    prev.ok_or_else(|| CniError::InvalidConfig {
        path: list.source.clone().unwrap_or_default(),
        reason: "no plugins".into(),
    })
}

/// Runs DEL through the chain in reverse order, each plugin getting
/// `prev_result`; stops at the first error.
pub async fn run_del_chain(
    invoker: &Invoker,
    list: &NetworkConfigList,
    version: CniVersion,
    env: &PluginEnv,
    capability_args: &Map<String, Value>,
    prev_result: Option<&Value>,
) -> Result<(), CniError> {
    for (i, p) in list.plugins.iter().enumerate().rev() {
        let req = list.plugin_request(i, version, capability_args, prev_result);
        invoker
            .run(
                &p.plugin_type,
                Command::Del,
                env,
                &to_bytes(&req),
                &list.name,
            )
            .await?;
    }
    Ok(())
}

/// The network config and version an attachment record (at `path`) was made with.
fn cached_config(
    entry: &CacheEntry,
    path: &Path,
) -> Result<(NetworkConfigList, CniVersion), CniError> {
    let corrupt = |reason: String| CniError::CacheCorrupt {
        path: path.to_path_buf(),
        reason,
    };
    let list = NetworkConfigList::from_value(entry.config.clone(), false)
        .map_err(|reason| corrupt(format!("config: {reason}")))?;
    let version = CniVersion::parse(&entry.cni_version).map_err(corrupt)?;
    Ok((list, version))
}
