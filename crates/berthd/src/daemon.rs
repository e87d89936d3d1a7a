//! The daemon-wide state every RPC handler shares.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use berth_image::ImageStore;

use crate::config::Config;
use crate::container::Containers;
use crate::network::PodNetwork;
use crate::sandbox::Sandboxes;
use crate::store::{Store, StoreError};

const POD_CIDR_KEY: &str = "pod_cidr";

pub struct Daemon {
    config: Config,
    store: Store,
    images: ImageStore,
    /// Pod sandboxes: records and pinned namespaces.
    sandboxes: Sandboxes,
    /// Containers, driven through each pod's monitor.
    containers: Containers,
    /// CNI pod networking.
    network: Arc<PodNetwork>,
    /// Cached copy of the persisted pod CIDR (the kubelet re-sends it on every start).
    pod_cidr: RwLock<String>,
    /// NRI plugins' host, when `[nri] enable` is set (set once at start-up).
    nri: std::sync::OnceLock<crate::nri::NriHost>,
}

impl Daemon {
    pub fn new(config: Config, store: Store, images: ImageStore) -> Result<Daemon, StoreError> {
        let pod_cidr = store.get_setting(POD_CIDR_KEY)?.unwrap_or_default();
        let network = Arc::new(PodNetwork::new(&config.network, &config.state));
        let sandboxes = Sandboxes::open(store.db(), &config.state, network.clone())?;
        if config.cgroup_favordynmods {
            // Logs what it found or did; a failure only costs speed.
            let _ = berth_cgroup::enable_favordynmods(&config.state);
        }
        let watch_timing = crate::container::watch::Timing::new(std::time::Duration::from_secs(
            config.monitor_unresponsive_secs,
        ));
        let containers = Containers::open(
            store.db(),
            &config.root,
            &config.state,
            images.clone(),
            watch_timing,
        )?;
        Ok(Daemon {
            config,
            store,
            images,
            sandboxes,
            containers,
            network,
            pod_cidr: RwLock::new(pod_cidr),
            nri: std::sync::OnceLock::new(),
        })
    }

    /// The NRI host, if NRI is on.
    pub fn nri(&self) -> Option<&crate::nri::NriHost> {
        self.nri.get()
    }

    pub fn set_nri(&self, host: crate::nri::NriHost) {
        let _ = self.nri.set(host);
    }

    /// Holds plugin synchronization off while a pod or container is made
    /// (see `berth_nri::Nri::block_sync`); None without NRI.
    pub async fn nri_sync_block(&self) -> Option<berth_nri::SyncBlock> {
        match self.nri() {
            Some(h) => Some(h.nri.block_sync().await),
            None => None,
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn images(&self) -> &ImageStore {
        &self.images
    }

    /// Pod sandboxes: records and pinned namespaces.
    pub fn sandboxes(&self) -> &Sandboxes {
        &self.sandboxes
    }

    /// Containers, driven through each pod's monitor.
    pub fn containers(&self) -> &Containers {
        &self.containers
    }

    /// Where containers' writable layers live (their overlay upper dirs).
    pub fn containers_dir(&self) -> PathBuf {
        self.config.root.join("containers")
    }

    /// Space used by containers' writable layers, for ImageFsInfo.
    pub fn containers_fs_usage(&self) -> std::io::Result<berth_image::FsUsage> {
        berth_image::fs_usage_of(&self.containers_dir())
    }

    pub fn pod_cidr(&self) -> String {
        self.pod_cidr
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn set_pod_cidr(&self, cidr: &str) -> Result<(), StoreError> {
        self.store.set_setting(POD_CIDR_KEY, cidr)?;
        *self.pod_cidr.write().unwrap_or_else(|e| e.into_inner()) = cidr.to_string();
        Ok(())
    }

    /// Refuses work that writes to the root dir's filesystem when less than
    /// `min_free_disk_mib` is left: the metadata store must never be the
    /// write that hits ENOSPC (redb then refuses every later write).
    pub fn check_disk_space(&self, what: &str) -> Result<(), tonic::Status> {
        let Ok(st) = nix::sys::statvfs::statvfs(&self.config.root) else {
            return Ok(());
        };
        let free = st.blocks_available() * st.fragment_size();
        let reserve = self.config.min_free_disk_mib << 20;
        if free >= reserve {
            return Ok(());
        }
        tracing::warn!(
            free_bytes = free,
            reserve_bytes = reserve,
            "{what} refused: disk full"
        );
        Err(tonic::Status::resource_exhausted(format!(
            "{what}: only {:.1} MiB free on the filesystem of {} (berthd keeps {} MiB free, setting min_free_disk_mib); remove unused images or containers",
            free as f64 / 1048576.0,
            self.config.root.display(),
            self.config.min_free_disk_mib
        )))
    }

    /// RuntimeReady: the state and root dirs are usable. `Err((reason, message))` otherwise.
    pub fn runtime_readiness(&self) -> Result<(), (String, String)> {
        for dir in [&self.config.root, &self.config.state] {
            if let Err(e) = nix::unistd::access(dir, nix::unistd::AccessFlags::W_OK) {
                return Err((
                    "StateDirUnusable".to_string(),
                    format!("{} is not writable: {e}", dir.display()),
                ));
            }
        }
        Ok(())
    }

    /// NetworkReady: a usable CNI network config (re-read when its dir changes).
    pub fn network_readiness(&self) -> Result<(), (String, String)> {
        self.network.readiness()
    }

    /// At startup: DEL the CNI attachments no pod holds (an ADD a crash cut
    /// short, a removal whose DEL kept failing).
    pub async fn collect_network_garbage(&self) {
        self.network
            .collect_garbage(&self.sandboxes.network_attached())
            .await;
    }
}
