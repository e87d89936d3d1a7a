//! A small NRI plugin for the tests, in Rust: it connects to berthd's NRI
//! socket as any plugin does (the trunk multiplexer, `RegisterPlugin`),
//! records every event it is sent, and adjusts each container it is asked
//! about (an env var, a cpuset) or refuses it.

use std::path::Path;
use std::sync::{Arc, Mutex};

use berth_nri::api::{self, Event};
use berth_nri::api_ttrpc::{self, Plugin, RuntimeClient};
use ttrpc::r#async::transport::{Listener, Socket};
use ttrpc::r#async::{Client, Server, TtrpcContext};

/// What the plugin does to each container it is asked to create.
#[derive(Clone, Default)]
pub struct Behaviour {
    /// Set in the container's environment.
    pub env: Option<(String, String)>,
    /// The container's cpuset.
    pub cpus: Option<String>,
    /// Refuse CreateContainer with this message.
    pub refuse_create: Option<String>,
    /// Never answer CreateContainer (a hung plugin).
    pub hang_create: bool,
    /// Answer CreateContainer with ttrpc's own deadline status, as a
    /// plugin's ttrpc server does when its handler outlives the request
    /// timeout berthd sent.
    pub deadline_create: bool,
}

/// One event as the plugin saw it: `(event, pod id, container id)`.
pub type Seen = (String, String, String);

#[derive(Default)]
struct State {
    behaviour: Mutex<Behaviour>,
    seen: Mutex<Vec<Seen>>,
    synced: Mutex<Option<(Vec<String>, Vec<String>)>>,
    sync_parts: Mutex<(Vec<String>, Vec<String>)>,
    /// The configuration berthd sent (a pre-installed plugin's `.conf`).
    config: Mutex<String>,
}

struct Service(Arc<State>);

fn note(state: &State, event: &str, pod: &str, ctr: &str) {
    state
        .seen
        .lock()
        .unwrap()
        .push((event.into(), pod.into(), ctr.into()));
}

#[async_trait::async_trait]
impl Plugin for Service {
    async fn configure(
        &self,
        _: &TtrpcContext,
        req: api::ConfigureRequest,
    ) -> ttrpc::Result<api::ConfigureResponse> {
        *self.0.config.lock().unwrap() = req.config;
        let mut rsp = api::ConfigureResponse::new();
        let events = [
            Event::RUN_POD_SANDBOX,
            Event::STOP_POD_SANDBOX,
            Event::REMOVE_POD_SANDBOX,
            Event::UPDATE_POD_SANDBOX,
            Event::POST_UPDATE_POD_SANDBOX,
            Event::CREATE_CONTAINER,
            Event::POST_CREATE_CONTAINER,
            Event::START_CONTAINER,
            Event::POST_START_CONTAINER,
            Event::STOP_CONTAINER,
            Event::REMOVE_CONTAINER,
        ];
        rsp.events = events.iter().fold(0, |m, e| m | 1 << (*e as i32 - 1));
        Ok(rsp)
    }

    async fn synchronize(
        &self,
        _: &TtrpcContext,
        req: api::SynchronizeRequest,
    ) -> ttrpc::Result<api::SynchronizeResponse> {
        // A large node comes in parts (`more`): collected, then synced.
        let mut parts = self.0.sync_parts.lock().unwrap();
        parts.0.extend(req.pods.iter().map(|p| p.id.clone()));
        parts.1.extend(req.containers.iter().map(|c| c.id.clone()));
        if !req.more {
            *self.0.synced.lock().unwrap() = Some(std::mem::take(&mut *parts));
        }
        let mut rsp = api::SynchronizeResponse::new();
        rsp.more = req.more;
        Ok(rsp)
    }

    async fn run_pod_sandbox(
        &self,
        _: &TtrpcContext,
        req: api::RunPodSandboxRequest,
    ) -> ttrpc::Result<api::RunPodSandboxResponse> {
        note(&self.0, "RunPodSandbox", &req.pod.id, "");
        Ok(Default::default())
    }

    async fn stop_pod_sandbox(
        &self,
        _: &TtrpcContext,
        req: api::StopPodSandboxRequest,
    ) -> ttrpc::Result<api::StopPodSandboxResponse> {
        note(&self.0, "StopPodSandbox", &req.pod.id, "");
        Ok(Default::default())
    }

    async fn remove_pod_sandbox(
        &self,
        _: &TtrpcContext,
        req: api::RemovePodSandboxRequest,
    ) -> ttrpc::Result<api::RemovePodSandboxResponse> {
        note(&self.0, "RemovePodSandbox", &req.pod.id, "");
        Ok(Default::default())
    }

    async fn update_pod_sandbox(
        &self,
        _: &TtrpcContext,
        req: api::UpdatePodSandboxRequest,
    ) -> ttrpc::Result<api::UpdatePodSandboxResponse> {
        note(&self.0, "UpdatePodSandbox", &req.pod.id, "");
        Ok(Default::default())
    }

    async fn post_update_pod_sandbox(
        &self,
        _: &TtrpcContext,
        req: api::PostUpdatePodSandboxRequest,
    ) -> ttrpc::Result<api::PostUpdatePodSandboxResponse> {
        note(&self.0, "PostUpdatePodSandbox", &req.pod.id, "");
        Ok(Default::default())
    }

    async fn create_container(
        &self,
        _: &TtrpcContext,
        req: api::CreateContainerRequest,
    ) -> ttrpc::Result<api::CreateContainerResponse> {
        note(&self.0, "CreateContainer", &req.pod.id, &req.container.id);
        let mut b = self.0.behaviour.lock().unwrap().clone();
        // A configuration `NAME=VALUE` sets that env var (pre-installed plugins).
        if b.env.is_none()
            && let Some((k, v)) = self.0.config.lock().unwrap().trim().split_once('=')
        {
            b.env = Some((k.to_string(), v.to_string()));
        }
        if b.hang_create {
            std::future::pending::<()>().await;
        }
        if b.deadline_create {
            return Err(ttrpc::Error::RpcStatus(ttrpc::get_status(
                ttrpc::Code::DEADLINE_EXCEEDED,
                "timeout",
            )));
        }
        if let Some(msg) = b.refuse_create {
            return Err(ttrpc::Error::RpcStatus(ttrpc::get_status(
                ttrpc::Code::FAILED_PRECONDITION,
                msg,
            )));
        }
        let mut adj = api::ContainerAdjustment::new();
        if let Some((k, v)) = b.env {
            let mut kv = api::KeyValue::new();
            kv.key = k;
            kv.value = v;
            adj.env.push(kv);
        }
        if let Some(cpus) = b.cpus {
            adj.linux
                .mut_or_insert_default()
                .resources
                .mut_or_insert_default()
                .cpu
                .mut_or_insert_default()
                .cpus = cpus;
        }
        let mut rsp = api::CreateContainerResponse::new();
        rsp.adjust = protobuf::MessageField::some(adj);
        Ok(rsp)
    }

    async fn post_create_container(
        &self,
        _: &TtrpcContext,
        req: api::PostCreateContainerRequest,
    ) -> ttrpc::Result<api::PostCreateContainerResponse> {
        note(
            &self.0,
            "PostCreateContainer",
            &req.pod.id,
            &req.container.id,
        );
        Ok(Default::default())
    }

    async fn start_container(
        &self,
        _: &TtrpcContext,
        req: api::StartContainerRequest,
    ) -> ttrpc::Result<api::StartContainerResponse> {
        note(&self.0, "StartContainer", &req.pod.id, &req.container.id);
        Ok(Default::default())
    }

    async fn post_start_container(
        &self,
        _: &TtrpcContext,
        req: api::PostStartContainerRequest,
    ) -> ttrpc::Result<api::PostStartContainerResponse> {
        note(
            &self.0,
            "PostStartContainer",
            &req.pod.id,
            &req.container.id,
        );
        Ok(Default::default())
    }

    async fn stop_container(
        &self,
        _: &TtrpcContext,
        req: api::StopContainerRequest,
    ) -> ttrpc::Result<api::StopContainerResponse> {
        note(&self.0, "StopContainer", &req.pod.id, &req.container.id);
        Ok(Default::default())
    }

    async fn remove_container(
        &self,
        _: &TtrpcContext,
        req: api::RemoveContainerRequest,
    ) -> ttrpc::Result<api::RemoveContainerResponse> {
        note(&self.0, "RemoveContainer", &req.pod.id, &req.container.id);
        Ok(Default::default())
    }
}

/// A connected, registered plugin; disconnects when dropped.
pub struct TestPlugin {
    state: Arc<State>,
    gone: Option<tokio::sync::oneshot::Receiver<()>>,
    _server: Server,
    client: RuntimeClient,
}

impl TestPlugin {
    /// Connects to the NRI socket at `socket` and registers as `idx-name`.
    pub async fn connect(
        socket: &Path,
        name: &str,
        idx: &str,
        b: Behaviour,
    ) -> anyhow::Result<TestPlugin> {
        let stream = tokio::net::UnixStream::connect(socket).await?;
        Self::register(stream, name, idx, b).await
    }

    /// Registers as `idx-name` over a connection berthd already holds the
    /// other end of (a pre-installed plugin's fd 3).
    pub async fn register(
        stream: tokio::net::UnixStream,
        name: &str,
        idx: &str,
        b: Behaviour,
    ) -> anyhow::Result<TestPlugin> {
        // The same trunk framing on the plugin's side: here the plugin
        // service is served and the runtime service is called.
        let conns = berth_nri::mux::split(stream);
        let state = Arc::new(State {
            behaviour: Mutex::new(b),
            ..Default::default()
        });
        let service: Arc<dyn Plugin + Send + Sync> = Arc::new(Service(state.clone()));
        let listener = Listener::new(futures::stream::once(futures::future::ready(Ok::<
            _,
            std::io::Error,
        >(
            conns.plugin_service,
        ))));
        let mut server = Server::new()
            .add_listener(listener)
            .register_service(api_ttrpc::create_plugin(service));
        server.start().await?;
        let client = RuntimeClient::new(Client::new(Socket::new(conns.runtime_service)));
        let mut req = api::RegisterPluginRequest::new();
        req.plugin_name = name.into();
        req.plugin_idx = idx.into();
        client
            .register_plugin(ttrpc::context::with_timeout(5_000_000_000), &req)
            .await?;
        let plugin = TestPlugin {
            state,
            gone: Some(conns.gone),
            _server: server,
            client,
        };
        // Registered once synchronized: berthd sends Synchronize after Configure.
        let t = std::time::Instant::now();
        while plugin.state.synced.lock().unwrap().is_none() {
            anyhow::ensure!(
                t.elapsed().as_secs() < 10,
                "no Synchronize from berthd in 10 s"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        Ok(plugin)
    }

    /// Asks berthd, unsolicited, to pin running container `id` to `cpus`;
    /// the updates berthd reports as failed.
    pub async fn update_cpus(&self, id: &str, cpus: &str) -> anyhow::Result<usize> {
        let mut u = api::ContainerUpdate::new();
        u.container_id = id.into();
        u.linux
            .mut_or_insert_default()
            .resources
            .mut_or_insert_default()
            .cpu
            .mut_or_insert_default()
            .cpus = cpus.into();
        let mut req = api::UpdateContainersRequest::new();
        req.update.push(u);
        let rsp = self
            .client
            .update_containers(ttrpc::context::with_timeout(10_000_000_000), &req)
            .await?;
        Ok(rsp.failed.len())
    }

    /// Waits until berthd closes the connection.
    pub async fn closed(mut self) {
        if let Some(gone) = self.gone.take() {
            let _ = gone.await;
        }
    }

    pub fn set(&self, b: Behaviour) {
        *self.state.behaviour.lock().unwrap() = b;
    }

    /// Every event so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    /// The event names seen for `id` (a pod or container id), in order.
    pub fn events_of(&self, id: &str) -> Vec<String> {
        self.seen()
            .into_iter()
            .filter(|(_, p, c)| p == id && c.is_empty() || c == id)
            .map(|(e, _, _)| e)
            .collect()
    }

    /// The pod and container ids of the Synchronize it was sent.
    pub fn synced(&self) -> (Vec<String>, Vec<String>) {
        self.state
            .synced
            .lock()
            .unwrap()
            .clone()
            .unwrap_or_default()
    }

    /// Waits until `id` has seen `n` events.
    pub async fn wait_events(&self, id: &str, n: usize) -> Vec<String> {
        let t = std::time::Instant::now();
        loop {
            let got = self.events_of(id);
            if got.len() >= n || t.elapsed().as_secs() >= 10 {
                return got;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
}
