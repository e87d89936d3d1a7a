//! berthd's NRI host (`[nri] enable`): starts [`berth_nri::Nri`], answers
//! its plugins from berthd's records, and sends them the container events
//! that follow a state change (post-create, post-start, stop, remove) in
//! the order the records changed. The events that may refuse or adjust an
//! operation (RunPodSandbox, CreateContainer, StartContainer, ...) are
//! called from their CRI handlers, before the operation shows.

pub mod convert;

use std::sync::{Arc, Weak};
use std::time::Duration;

use berth_api::v1::ContainerEventType;
use berth_nri::{Nri, api};
use tokio::sync::{mpsc, oneshot};

use crate::container::ContainerRecord;
use crate::daemon::Daemon;

/// What the container store tells NRI, in order.
pub enum Notice {
    Container(ContainerEventType, Box<ContainerRecord>),
    /// Answered once every notice before it was delivered.
    Flush(oneshot::Sender<()>),
}

/// The NRI host of a daemon with NRI on.
pub struct NriHost {
    pub nri: Nri,
    notices: mpsc::UnboundedSender<Notice>,
}

impl NriHost {
    /// Waits until every container event so far reached the plugins (a
    /// pod's stop or removal is told after its containers').
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.notices.send(Notice::Flush(tx)).is_ok() {
            let _ = rx.await;
        }
    }
}

/// Starts NRI if the config turns it on.
pub async fn start(daemon: &Arc<Daemon>) -> anyhow::Result<()> {
    let cfg = &daemon.config().nri;
    if !cfg.enable {
        return Ok(());
    }
    let settings = berth_nri::Settings {
        socket_path: cfg.socket_path.clone(),
        plugin_path: cfg.plugin_path.clone(),
        plugin_config_path: cfg.plugin_config_path.clone(),
        registration_timeout: Duration::from_millis(cfg.plugin_registration_timeout_ms),
        request_timeout: Duration::from_millis(cfg.plugin_request_timeout_ms),
        runtime_name: "berth".into(),
        runtime_version: env!("CARGO_PKG_VERSION").into(),
    };
    let state = Arc::new(State {
        daemon: Arc::downgrade(daemon),
    });
    let nri = Nri::start(settings, state.clone()).await?;
    let (tx, rx) = mpsc::unbounded_channel();
    daemon.containers().use_nri(nri.clone(), tx.clone());
    daemon.sandboxes().use_nri(nri.clone());
    tokio::spawn(deliver(rx, nri.clone(), state));
    daemon.set_nri(NriHost { nri, notices: tx });
    Ok(())
}

/// Container events to the plugins, one at a time.
async fn deliver(mut rx: mpsc::UnboundedReceiver<Notice>, nri: Nri, state: Arc<State>) {
    while let Some(notice) = rx.recv().await {
        let (kind, rec) = match notice {
            Notice::Flush(done) => {
                let _ = done.send(());
                continue;
            }
            Notice::Container(kind, rec) => (kind, rec),
        };
        let Some(daemon) = state.daemon.upgrade() else {
            return;
        };
        let pod = match daemon.sandboxes().resolve(&rec.pod_id) {
            Some(p) => convert::pod_of(&p),
            None => {
                let mut p = api::PodSandbox::new();
                p.id = rec.pod_id.clone();
                p
            }
        };
        let ctr = convert::container_of(&rec);
        drop(daemon);
        match kind {
            ContainerEventType::ContainerCreatedEvent => {
                nri.post_create_container(&pod, &ctr).await
            }
            ContainerEventType::ContainerStartedEvent => nri.post_start_container(&pod, &ctr).await,
            ContainerEventType::ContainerStoppedEvent => {
                let updates = nri.stop_container(&pod, &ctr).await;
                if !updates.is_empty() {
                    let _ = berth_nri::RuntimeState::update_containers(&*state, updates).await;
                }
            }
            ContainerEventType::ContainerDeletedEvent => nri.remove_container(&pod, &ctr).await,
        }
    }
}

/// berthd's answers to plugins.
struct State {
    daemon: Weak<Daemon>,
}

#[async_trait::async_trait]
impl berth_nri::RuntimeState for State {
    async fn snapshot(&self) -> (Vec<api::PodSandbox>, Vec<api::Container>) {
        let Some(d) = self.daemon.upgrade() else {
            return (Vec::new(), Vec::new());
        };
        let pods = d.sandboxes().list().iter().map(convert::pod_of).collect();
        let containers = d
            .containers()
            .records()
            .iter()
            .map(convert::container_of)
            .collect();
        (pods, containers)
    }

    async fn update_containers(
        &self,
        updates: Vec<api::ContainerUpdate>,
    ) -> Vec<api::ContainerUpdate> {
        let Some(d) = self.daemon.upgrade() else {
            return updates;
        };
        apply_updates(d.containers(), updates).await
    }
}

/// Container updates plugins asked for (with an event's answer, at
/// synchronization, or unsolicited), through UpdateContainerResources'
/// path to the live cgroups. A failure is logged and returned (unless the
/// plugin said to ignore it); it never fails the operation that carried it,
/// which is done by then.
pub async fn apply_updates(
    containers: &crate::container::Containers,
    updates: Vec<api::ContainerUpdate>,
) -> Vec<api::ContainerUpdate> {
    let mut failed = Vec::new();
    for u in updates {
        let Some(res) = u.linux.as_ref().and_then(|l| l.resources.as_ref()) else {
            continue;
        };
        let cri = convert::to_cri(res);
        if let Err(e) = containers.update_resources(&u.container_id, &cri).await {
            tracing::warn!(container = %u.container_id, error = %e, "NRI plugin's container update failed");
            if !u.ignore_failure {
                failed.push(u);
            }
        }
    }
    failed
}

/// A plugin's refusal as a CRI error the operator can act on.
pub fn refused(e: berth_nri::NriError) -> tonic::Status {
    tonic::Status::failed_precondition(e.to_string())
}
