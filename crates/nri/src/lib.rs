//! The runtime side of the Node Resource Interface (containerd/nri): plugins
//! connect to the NRI socket (or are started from the plugin dir), register,
//! are synchronized with every pod and container, see their lifecycle events
//! in index order, and adjust containers before they are created.
//!
//! berthd owns one [`Nri`] when `[nri] enable` is set; it calls the event
//! methods from its CRI handlers and answers [`RuntimeState`] for plugins.

pub mod adjust;
mod launch;
pub mod mux;
mod plugin;

pub mod api {
    #![allow(
        clippy::all,
        dead_code,
        unused_attributes,
        unknown_lints,
        missing_docs,
        non_camel_case_types,
        non_snake_case,
        non_upper_case_globals,
        unused_imports,
        unused_mut
    )]
    include!(concat!(env!("OUT_DIR"), "/api.rs"));
}
pub mod api_ttrpc {
    #![allow(
        clippy::all,
        dead_code,
        unused_attributes,
        unknown_lints,
        missing_docs,
        non_camel_case_types,
        non_snake_case,
        non_upper_case_globals,
        unused_imports,
        unused_mut
    )]
    include!(concat!(env!("OUT_DIR"), "/api_ttrpc.rs"));
}

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use api::Event;
use plugin::{Outcome, Plugin};
use tokio::sync::{Mutex, OwnedRwLockReadGuard, RwLock};

/// The NRI API version of `proto/nri/api.proto`, told to plugins.
pub const NRI_VERSION: &str = "v0.12.2";

#[derive(Debug, thiserror::Error)]
pub enum NriError {
    /// A plugin refused the operation (or two plugins' adjustments clash):
    /// the operation fails and leaves nothing behind.
    #[error("{0}")]
    Refused(String),
    /// A plugin's handshake failed; the plugin is not used.
    #[error("NRI plugin handshake: {0}")]
    Handshake(String),
    #[error("NRI socket {path}: {source}")]
    Socket {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What berthd configures (`[nri]`).
#[derive(Clone, Debug)]
pub struct Settings {
    pub socket_path: PathBuf,
    /// Pre-installed plugins (`NN-name` executables), started at start-up.
    pub plugin_path: PathBuf,
    /// Their configuration files (`NN-name.conf` or `name.conf`).
    pub plugin_config_path: PathBuf,
    pub registration_timeout: Duration,
    pub request_timeout: Duration,
    pub runtime_name: String,
    pub runtime_version: String,
}

/// The runtime's answers to plugins.
#[async_trait::async_trait]
pub trait RuntimeState: Send + Sync + 'static {
    /// Every pod and container the runtime knows, for a new plugin.
    async fn snapshot(&self) -> (Vec<api::PodSandbox>, Vec<api::Container>);
    /// Applies updates to running containers' resources; returns those
    /// that failed (an update with `ignore_failure` never counts).
    async fn update_containers(
        &self,
        updates: Vec<api::ContainerUpdate>,
    ) -> Vec<api::ContainerUpdate>;
}

/// What plugins made of a container about to be created.
#[derive(Default)]
pub struct Created {
    pub adjustment: api::ContainerAdjustment,
    /// Updates to other containers asked for on the way.
    pub updates: Vec<api::ContainerUpdate>,
}

/// A held [`Nri::block_sync`]: no plugin synchronizes until it is dropped.
pub struct SyncBlock(#[allow(dead_code)] OwnedRwLockReadGuard<()>);

/// The NRI host of one berthd.
#[derive(Clone)]
pub struct Nri {
    inner: Arc<Inner>,
}

struct Inner {
    settings: Settings,
    state: Arc<dyn RuntimeState>,
    /// Registered, synchronized plugins in index order. Held across an
    /// event's calls, so each plugin sees the events in the order they happen.
    plugins: Mutex<Vec<Arc<Plugin>>>,
    /// Writers: a plugin being synchronized. Readers: a pod or container
    /// operation between its start and its event, so none is lost between
    /// the snapshot a new plugin gets and its first event.
    sync: Arc<RwLock<()>>,
}

impl Nri {
    /// Binds the NRI socket, starts the pre-installed plugins and accepts
    /// plugin connections from then on.
    pub async fn start(settings: Settings, state: Arc<dyn RuntimeState>) -> Result<Nri, NriError> {
        let path = settings.socket_path.clone();
        let sock_err = |source| NriError::Socket {
            path: path.clone(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(sock_err)?;
        }
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(sock_err(e)),
        }
        let listener = tokio::net::UnixListener::bind(&path).map_err(sock_err)?;
        // Plugins run as root: only root may connect.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .map_err(sock_err)?;
        let nri = Nri {
            inner: Arc::new(Inner {
                settings,
                state,
                plugins: Mutex::new(Vec::new()),
                sync: Arc::new(RwLock::new(())),
            }),
        };
        for (stream, config) in launch::start_preinstalled(&nri.inner.settings) {
            nri.adopt(stream, config).await;
        }
        let accepting = nri.clone();
        tokio::spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((stream, _)) => {
                        let nri = accepting.clone();
                        tokio::spawn(async move { nri.adopt(stream, String::new()).await });
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "NRI socket accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        });
        tracing::info!(socket = %nri.inner.settings.socket_path.display(), "NRI enabled");
        Ok(nri)
    }

    /// Handshake, synchronization and registration of one plugin connection.
    async fn adopt<S>(&self, stream: S, config: String)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Sync + 'static,
    {
        let inner = &self.inner;
        let plugin =
            match Plugin::connect(stream, &inner.settings, inner.state.clone(), config).await {
                Ok(p) => Arc::new(p),
                Err(e) => {
                    tracing::warn!(error = %e, "NRI plugin not connected");
                    return;
                }
            };
        let _no_operations = inner.sync.write().await;
        let (pods, containers) = inner.state.snapshot().await;
        match plugin.synchronize(pods, containers).await {
            Ok(updates) => {
                let mut plugins = inner.plugins.lock().await;
                plugins.retain(|p| !p.is_closed());
                plugins.push(plugin.clone());
                plugins.sort_by(|a, b| a.name.cmp(&b.name));
                drop(plugins);
                tracing::info!(plugin = %plugin.name, "NRI plugin connected and synchronized");
                if !updates.is_empty() {
                    let failed = inner.state.update_containers(updates).await;
                    if !failed.is_empty() {
                        tracing::warn!(plugin = %plugin.name, failed = failed.len(), "NRI plugin's updates at synchronization failed");
                    }
                }
            }
            Err(e) => {
                tracing::warn!(plugin = %plugin.name, error = %e, "NRI plugin not synchronized; closing it");
                plugin.close().await;
            }
        }
    }

    /// Holds off plugin synchronization while a pod or container operation
    /// runs up to its event (see [`Inner::sync`]).
    pub async fn block_sync(&self) -> SyncBlock {
        SyncBlock(self.inner.sync.clone().read_owned().await)
    }

    /// Connected, synchronized plugins.
    pub async fn plugin_count(&self) -> usize {
        self.inner
            .plugins
            .lock()
            .await
            .iter()
            .filter(|p| !p.is_closed())
            .count()
    }

    pub async fn run_pod_sandbox(&self, pod: &api::PodSandbox) -> Result<(), NriError> {
        let mut req = api::RunPodSandboxRequest::new();
        req.pod = protobuf::MessageField::some(pod.clone());
        self.each(Event::RUN_POD_SANDBOX, pod, None, |c, ctx| {
            let req = req.clone();
            async move { c.run_pod_sandbox(ctx, &req).await.map(drop) }
        })
        .await
    }

    pub async fn stop_pod_sandbox(&self, pod: &api::PodSandbox) -> Result<(), NriError> {
        let mut req = api::StopPodSandboxRequest::new();
        req.pod = protobuf::MessageField::some(pod.clone());
        self.each(Event::STOP_POD_SANDBOX, pod, None, |c, ctx| {
            let req = req.clone();
            async move { c.stop_pod_sandbox(ctx, &req).await.map(drop) }
        })
        .await
    }

    pub async fn remove_pod_sandbox(&self, pod: &api::PodSandbox) -> Result<(), NriError> {
        let mut req = api::RemovePodSandboxRequest::new();
        req.pod = protobuf::MessageField::some(pod.clone());
        self.each(Event::REMOVE_POD_SANDBOX, pod, None, |c, ctx| {
            let req = req.clone();
            async move { c.remove_pod_sandbox(ctx, &req).await.map(drop) }
        })
        .await
    }

    /// Tells plugins a pod's resources change (in-place pod resize); a
    /// refusal fails the update.
    pub async fn update_pod_sandbox(
        &self,
        pod: &api::PodSandbox,
        overhead: Option<&api::LinuxResources>,
        resources: Option<&api::LinuxResources>,
    ) -> Result<(), NriError> {
        let mut req = api::UpdatePodSandboxRequest::new();
        req.pod = protobuf::MessageField::some(pod.clone());
        req.overhead_linux_resources = overhead.cloned().into();
        req.linux_resources = resources.cloned().into();
        self.each(Event::UPDATE_POD_SANDBOX, pod, None, |c, ctx| {
            let req = req.clone();
            async move { c.update_pod_sandbox(ctx, &req).await.map(drop) }
        })
        .await
    }

    pub async fn post_update_pod_sandbox(&self, pod: &api::PodSandbox) {
        let mut req = api::PostUpdatePodSandboxRequest::new();
        req.pod = protobuf::MessageField::some(pod.clone());
        self.notify(Event::POST_UPDATE_POD_SANDBOX, pod, None, |c, ctx| {
            let req = req.clone();
            async move { c.post_update_pod_sandbox(ctx, &req).await.map(drop) }
        })
        .await
    }

    /// Asks every plugin for its adjustments of a container about to be
    /// created, merged; a refusal or a conflict fails the creation.
    pub async fn create_container(
        &self,
        pod: &api::PodSandbox,
        ctr: &api::Container,
    ) -> Result<Created, NriError> {
        let mut req = api::CreateContainerRequest::new();
        req.pod = protobuf::MessageField::some(pod.clone());
        req.container = protobuf::MessageField::some(ctr.clone());
        let plugins = self.inner.plugins.lock().await;
        let mut merged = adjust::Merged::default();
        let mut updates = Vec::new();
        for p in plugins.iter() {
            let req = req.clone();
            let outcome = p
                .call(Event::CREATE_CONTAINER, |c, ctx| async move {
                    c.create_container(ctx, &req).await
                })
                .await;
            match outcome {
                Outcome::Done(Some(rsp)) => {
                    if let Some(adj) = rsp.adjust.as_ref() {
                        merged.apply(&p.name, adj).map_err(NriError::Refused)?;
                    }
                    updates.extend(rsp.update);
                }
                Outcome::Done(None) | Outcome::Dropped => {}
                Outcome::Refused(msg) => return Err(NriError::Refused(msg)),
            }
        }
        Ok(Created {
            adjustment: merged.adjustment,
            updates,
        })
    }

    pub async fn post_create_container(&self, pod: &api::PodSandbox, ctr: &api::Container) {
        let mut req = api::PostCreateContainerRequest::new();
        req.pod = protobuf::MessageField::some(pod.clone());
        req.container = protobuf::MessageField::some(ctr.clone());
        self.notify(Event::POST_CREATE_CONTAINER, pod, Some(ctr), |c, ctx| {
            let req = req.clone();
            async move { c.post_create_container(ctx, &req).await.map(drop) }
        })
        .await
    }

    pub async fn start_container(
        &self,
        pod: &api::PodSandbox,
        ctr: &api::Container,
    ) -> Result<(), NriError> {
        let mut req = api::StartContainerRequest::new();
        req.pod = protobuf::MessageField::some(pod.clone());
        req.container = protobuf::MessageField::some(ctr.clone());
        self.each(Event::START_CONTAINER, pod, Some(ctr), |c, ctx| {
            let req = req.clone();
            async move { c.start_container(ctx, &req).await.map(drop) }
        })
        .await
    }

    pub async fn post_start_container(&self, pod: &api::PodSandbox, ctr: &api::Container) {
        let mut req = api::PostStartContainerRequest::new();
        req.pod = protobuf::MessageField::some(pod.clone());
        req.container = protobuf::MessageField::some(ctr.clone());
        self.notify(Event::POST_START_CONTAINER, pod, Some(ctr), |c, ctx| {
            let req = req.clone();
            async move { c.post_start_container(ctx, &req).await.map(drop) }
        })
        .await
    }

    /// Asks plugins about a resource update of a container; returns the
    /// updates they want (to this container and others).
    pub async fn update_container(
        &self,
        pod: &api::PodSandbox,
        ctr: &api::Container,
        resources: &api::LinuxResources,
    ) -> Result<Vec<api::ContainerUpdate>, NriError> {
        let mut req = api::UpdateContainerRequest::new();
        req.pod = protobuf::MessageField::some(pod.clone());
        req.container = protobuf::MessageField::some(ctr.clone());
        req.linux_resources = protobuf::MessageField::some(resources.clone());
        let plugins = self.inner.plugins.lock().await;
        let mut updates = Vec::new();
        for p in plugins.iter() {
            let req = req.clone();
            match p
                .call(Event::UPDATE_CONTAINER, |c, ctx| async move {
                    c.update_container(ctx, &req).await
                })
                .await
            {
                Outcome::Done(Some(rsp)) => updates.extend(rsp.update),
                Outcome::Done(None) | Outcome::Dropped => {}
                Outcome::Refused(msg) => return Err(NriError::Refused(msg)),
            }
        }
        Ok(updates)
    }

    pub async fn post_update_container(&self, pod: &api::PodSandbox, ctr: &api::Container) {
        let mut req = api::PostUpdateContainerRequest::new();
        req.pod = protobuf::MessageField::some(pod.clone());
        req.container = protobuf::MessageField::some(ctr.clone());
        self.notify(Event::POST_UPDATE_CONTAINER, pod, Some(ctr), |c, ctx| {
            let req = req.clone();
            async move { c.post_update_container(ctx, &req).await.map(drop) }
        })
        .await
    }

    /// Tells plugins a container stopped (asked to, or by itself); returns
    /// the updates they want to other containers. Never fails: the
    /// container is stopped whatever a plugin says.
    pub async fn stop_container(
        &self,
        pod: &api::PodSandbox,
        ctr: &api::Container,
    ) -> Vec<api::ContainerUpdate> {
        let mut req = api::StopContainerRequest::new();
        req.pod = protobuf::MessageField::some(pod.clone());
        req.container = protobuf::MessageField::some(ctr.clone());
        let plugins = self.inner.plugins.lock().await;
        let mut updates = Vec::new();
        for p in plugins.iter() {
            let req = req.clone();
            match p
                .call(Event::STOP_CONTAINER, |c, ctx| async move {
                    c.stop_container(ctx, &req).await
                })
                .await
            {
                Outcome::Done(Some(rsp)) => updates.extend(rsp.update),
                Outcome::Refused(msg) => {
                    tracing::warn!(container = %ctr.id, "{msg}; the container is stopped regardless")
                }
                Outcome::Done(None) | Outcome::Dropped => {}
            }
        }
        updates
    }

    pub async fn remove_container(&self, pod: &api::PodSandbox, ctr: &api::Container) {
        let mut req = api::RemoveContainerRequest::new();
        req.pod = protobuf::MessageField::some(pod.clone());
        req.container = protobuf::MessageField::some(ctr.clone());
        self.notify(Event::REMOVE_CONTAINER, pod, Some(ctr), |c, ctx| {
            let req = req.clone();
            async move { c.remove_container(ctx, &req).await.map(drop) }
        })
        .await
    }

    /// An event every subscribed plugin sees in turn; the first refusal
    /// fails it (the plugins after it are not called).
    async fn each<F, Fut>(
        &self,
        event: Event,
        pod: &api::PodSandbox,
        ctr: Option<&api::Container>,
        call: F,
    ) -> Result<(), NriError>
    where
        F: Fn(api_ttrpc::PluginClient, ttrpc::context::Context) -> Fut,
        Fut: Future<Output = ttrpc::Result<()>>,
    {
        let plugins = self.inner.plugins.lock().await;
        for p in plugins.iter() {
            if let Outcome::Refused(msg) = p.call(event, &call).await {
                tracing::warn!(pod = %pod.id, container = ctr.map(|c| c.id.as_str()), "{msg}");
                return Err(NriError::Refused(msg));
            }
        }
        Ok(())
    }

    /// An event after the fact: a refusal is logged, nothing fails.
    async fn notify<F, Fut>(
        &self,
        event: Event,
        pod: &api::PodSandbox,
        ctr: Option<&api::Container>,
        call: F,
    ) where
        F: Fn(api_ttrpc::PluginClient, ttrpc::context::Context) -> Fut,
        Fut: Future<Output = ttrpc::Result<()>>,
    {
        if let Err(e) = self.each(event, pod, ctr, call).await {
            tracing::debug!(pod = %pod.id, container = ctr.map(|c| c.id.as_str()), error = %e, "NRI plugin refused a notification");
        }
    }
}
