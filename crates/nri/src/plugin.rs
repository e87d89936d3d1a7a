//! One connected NRI plugin: its handshake (register, configure), its event
//! subscriptions, and calls into it bounded by the request timeout.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{Mutex, oneshot};
use ttrpc::r#async::transport::{Listener, Socket};
use ttrpc::r#async::{Client, Server, TtrpcContext};

use crate::api::{self, Event};
use crate::api_ttrpc::{self, PluginClient};
use crate::{NriError, RuntimeState, Settings, mux};

/// How a call into a plugin went.
pub(crate) enum Outcome<T> {
    /// The plugin answered (`None`: it is not subscribed to the event).
    Done(Option<T>),
    /// The plugin refused: the operation fails with this message.
    Refused(String),
    /// The plugin timed out or its connection broke: it is closed and the
    /// operation goes on without it (as containerd's NRI does).
    Dropped,
}

pub(crate) struct Plugin {
    /// `<idx>-<name>`: plugins are called in ascending order of it.
    pub(crate) name: String,
    events: i32,
    client: PluginClient,
    closed: Arc<AtomicBool>,
    request_timeout: Duration,
    server: Mutex<Server>,
}

/// A registration: the plugin's `(name, index)`, or why it was refused.
type Registration = Result<(String, String), String>;

/// The runtime service a plugin calls: registration, then unsolicited
/// container updates.
struct RuntimeService {
    registered: std::sync::Mutex<Option<oneshot::Sender<Registration>>>,
    state: Arc<dyn RuntimeState>,
}

#[async_trait]
impl api_ttrpc::Runtime for RuntimeService {
    async fn register_plugin(
        &self,
        _ctx: &TtrpcContext,
        req: api::RegisterPluginRequest,
    ) -> ttrpc::Result<api::Empty> {
        let checked = check_name(&req.plugin_name)
            .and_then(|()| check_index(&req.plugin_idx))
            .map(|()| (req.plugin_name.clone(), req.plugin_idx.clone()));
        let reply = match &checked {
            Ok(_) => Ok(api::Empty::new()),
            Err(e) => Err(ttrpc::Error::RpcStatus(ttrpc::get_status(
                ttrpc::Code::INVALID_ARGUMENT,
                e,
            ))),
        };
        if let Some(tx) = self.registered.lock().expect("not poisoned").take() {
            let _ = tx.send(checked);
        }
        reply
    }

    async fn update_containers(
        &self,
        _ctx: &TtrpcContext,
        req: api::UpdateContainersRequest,
    ) -> ttrpc::Result<api::UpdateContainersResponse> {
        for e in &req.evict {
            tracing::warn!(
                container = %e.container_id,
                reason = %e.reason,
                "an NRI plugin asked to evict a container; Berth does not evict on a plugin's word"
            );
        }
        let failed = self.state.update_containers(req.update).await;
        let mut rsp = api::UpdateContainersResponse::new();
        rsp.failed = failed;
        Ok(rsp)
    }
}

/// NRI's rule for plugin names: non-empty, of `[a-zA-Z0-9_.+-]`.
pub(crate) fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("invalid plugin name: name is empty".into());
    }
    match name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '+')))
    {
        Some(c) => Err(format!("invalid plugin name {name:?}: contains {c:?}")),
        None => Ok(()),
    }
}

/// NRI's rule for plugin indices: exactly two digits.
pub(crate) fn check_index(idx: &str) -> Result<(), String> {
    if idx.len() == 2 && idx.bytes().all(|b| b.is_ascii_digit()) {
        Ok(())
    } else {
        Err(format!("invalid plugin index {idx:?}, must be 2 digits"))
    }
}

/// Every event a plugin may subscribe to (NRI's `ValidEvents`).
const VALID_EVENTS: i32 = (1 << (Event::LAST as i32 - 1)) - 1;
/// The events of a plugin that names none: all but adjustment validation
/// (Berth runs no validators: a plugin asking for it is refused).
const ALL_EVENTS: i32 = VALID_EVENTS & !(1 << (Event::VALIDATE_CONTAINER_ADJUSTMENT as i32 - 1));

fn bit(e: Event) -> i32 {
    1 << (e as i32 - 1)
}

impl Plugin {
    /// Runs the handshake on a fresh connection: the plugin registers (within
    /// the registration timeout) and is configured. `preset` names a plugin
    /// Berth started itself (its name and index are known; it registers all
    /// the same).
    pub(crate) async fn connect<S>(
        stream: S,
        settings: &Settings,
        state: Arc<dyn RuntimeState>,
        config: String,
    ) -> Result<Plugin, NriError>
    where
        S: AsyncRead + AsyncWrite + Send + Sync + 'static,
    {
        let conns = mux::split(stream);
        let (tx, rx) = oneshot::channel();
        let service = Arc::new(RuntimeService {
            registered: std::sync::Mutex::new(Some(tx)),
            state,
        });
        let listener = Listener::new(futures::stream::once(futures::future::ready(Ok::<
            _,
            std::io::Error,
        >(
            conns.runtime_service,
        ))));
        let mut server = Server::new()
            .add_listener(listener)
            .register_service(api_ttrpc::create_runtime(service));
        server
            .start()
            .await
            .map_err(|e| NriError::Handshake(format!("runtime service: {e}")))?;
        let client = PluginClient::new(Client::new(Socket::new(conns.plugin_service)));

        let (name, events) = match handshake(rx, &client, settings, config).await {
            Ok(done) => done,
            Err(e) => {
                // Nothing of a failed handshake stays: closing the runtime
                // service ends the pump, which closes the connection.
                server.disconnect().await;
                return Err(e);
            }
        };
        // A plugin that goes away is skipped from then on.
        let closed = Arc::new(AtomicBool::new(false));
        let (flag, gone, who) = (closed.clone(), conns.gone, name.clone());
        tokio::spawn(async move {
            let _ = gone.await;
            flag.store(true, Ordering::Release);
            tracing::info!(plugin = %who, "NRI plugin disconnected");
        });
        Ok(Plugin {
            name,
            events,
            client,
            closed,
            request_timeout: settings.request_timeout,
            server: Mutex::new(server),
        })
    }

    pub(crate) fn subscribed(&self, e: Event) -> bool {
        self.events & bit(e) != 0
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Closes the connection; later calls are skipped.
    pub(crate) async fn close(&self) {
        if !self.closed.swap(true, Ordering::AcqRel) {
            // disconnect, not shutdown: ttrpc's shutdown unwraps a send to its
            // accept task, which has ended once our one-connection listener
            // yielded its connection (it would panic).
            let mut server = self.server.lock().await;
            server.disconnect().await;
        }
    }

    /// Sends the state of the node: one message, or, past what one ttrpc
    /// message may carry, several (`more` set on all but the last; the
    /// plugin must answer them with `more` and no updates, as NRI says).
    pub(crate) async fn synchronize(
        &self,
        pods: Vec<api::PodSandbox>,
        containers: Vec<api::Container>,
    ) -> Result<Vec<api::ContainerUpdate>, NriError> {
        let chunks = sync_chunks(pods, containers, SYNC_MESSAGE_BYTES);
        let last = chunks.len() - 1;
        for (i, mut req) in chunks.into_iter().enumerate() {
            req.more = i < last;
            let rsp = match tokio::time::timeout(
                self.request_timeout,
                self.client.synchronize(ctx(self.request_timeout), &req),
            )
            .await
            {
                Ok(Ok(rsp)) => rsp,
                Ok(Err(e)) => {
                    return Err(NriError::Handshake(format!(
                        "plugin {} failed Synchronize: {e}",
                        self.name
                    )));
                }
                Err(_) => {
                    return Err(NriError::Handshake(format!(
                        "plugin {} did not answer Synchronize within {:?}",
                        self.name, self.request_timeout
                    )));
                }
            };
            if i == last {
                return Ok(rsp.update);
            }
            if !rsp.more || !rsp.update.is_empty() {
                return Err(NriError::Handshake(format!(
                    "plugin {} does not take Synchronize in parts (the node's state is over one message)",
                    self.name
                )));
            }
        }
        unreachable!("sync_chunks returns at least one message")
    }

    /// A plugin that did not answer within the request timeout is closed,
    /// so the operations after this one do not wait for it.
    async fn drop_hung<T>(&self, event: Event) -> Outcome<T> {
        tracing::warn!(
            plugin = %self.name, ?event, timeout = ?self.request_timeout,
            "NRI plugin did not answer in time; closing it"
        );
        self.close().await;
        Outcome::Dropped
    }

    /// Calls the plugin for `event` if it subscribed to it; `call` makes the
    /// request on the client with the context to pass.
    pub(crate) async fn call<T, F, Fut>(&self, event: Event, call: F) -> Outcome<T>
    where
        F: FnOnce(PluginClient, ttrpc::context::Context) -> Fut,
        Fut: Future<Output = ttrpc::Result<T>>,
    {
        if !self.subscribed(event) || self.is_closed() {
            return Outcome::Done(None);
        }
        let fut = call(self.client.clone(), ctx(self.request_timeout));
        match tokio::time::timeout(self.request_timeout, fut).await {
            Ok(Ok(rsp)) => Outcome::Done(Some(rsp)),
            // The plugin's own ttrpc server may answer its deadline before
            // ours fires: that is the same hang, not a refusal.
            Ok(Err(ttrpc::Error::RpcStatus(s)))
                if s.code.enum_value_or_default() == ttrpc::Code::DEADLINE_EXCEEDED =>
            {
                self.drop_hung(event).await
            }
            Ok(Err(ttrpc::Error::RpcStatus(s))) => Outcome::Refused(format!(
                "NRI plugin {} refused {event:?}: {}",
                self.name, s.message
            )),
            Ok(Err(e)) => {
                tracing::warn!(plugin = %self.name, ?event, error = %e, "NRI plugin connection broke; closing it");
                self.close().await;
                Outcome::Dropped
            }
            Err(_) => self.drop_hung(event).await,
        }
    }
}

/// What one Synchronize message may hold, well under ttrpc's 4 MiB.
const SYNC_MESSAGE_BYTES: u64 = 3 << 20;

/// The pods, then the containers, cut into messages of at most `limit`
/// encoded bytes each (an object larger than that goes alone); at least one.
fn sync_chunks(
    pods: Vec<api::PodSandbox>,
    containers: Vec<api::Container>,
    limit: u64,
) -> Vec<api::SynchronizeRequest> {
    use protobuf::Message;
    let mut chunks = vec![api::SynchronizeRequest::new()];
    let mut size = 0u64;
    // Field tag and length prefix of each repeated entry: at most 6 bytes.
    for pod in pods {
        let n = pod.compute_size() + 6;
        if size + n > limit && size > 0 {
            chunks.push(api::SynchronizeRequest::new());
            size = 0;
        }
        size += n;
        chunks.last_mut().expect("one at least").pods.push(pod);
    }
    for ctr in containers {
        let n = ctr.compute_size() + 6;
        if size + n > limit && size > 0 {
            chunks.push(api::SynchronizeRequest::new());
            size = 0;
        }
        size += n;
        chunks
            .last_mut()
            .expect("one at least")
            .containers
            .push(ctr);
    }
    chunks
}

/// Registration (within the registration timeout), then Configure: the
/// plugin's `NN-name` and the events it subscribes to.
async fn handshake(
    rx: oneshot::Receiver<Registration>,
    client: &PluginClient,
    settings: &Settings,
    config: String,
) -> Result<(String, i32), NriError> {
    let (base, idx) = match tokio::time::timeout(settings.registration_timeout, rx).await {
        Ok(Ok(Ok(named))) => named,
        Ok(Ok(Err(e))) => return Err(NriError::Handshake(e)),
        Ok(Err(_)) => {
            return Err(NriError::Handshake(
                "connection closed before registering".into(),
            ));
        }
        Err(_) => {
            return Err(NriError::Handshake(format!(
                "no registration within {:?}",
                settings.registration_timeout
            )));
        }
    };
    let name = format!("{idx}-{base}");

    let mut req = api::ConfigureRequest::new();
    req.config = config;
    req.runtime_name = settings.runtime_name.clone();
    req.runtime_version = settings.runtime_version.clone();
    req.registration_timeout = settings.registration_timeout.as_millis() as i64;
    req.request_timeout = settings.request_timeout.as_millis() as i64;
    req.NRI_version = crate::NRI_VERSION.into();
    let rsp = tokio::time::timeout(
        settings.request_timeout,
        client.configure(ctx(settings.request_timeout), &req),
    )
    .await
    .map_err(|_| NriError::Handshake(format!("plugin {name} did not answer Configure in time")))?
    .map_err(|e| NriError::Handshake(format!("plugin {name} failed Configure: {e}")))?;
    let events = match rsp.events {
        0 => ALL_EVENTS,
        ev if ev & !VALID_EVENTS != 0 => {
            return Err(NriError::Handshake(format!(
                "plugin {name} subscribed to unknown events 0x{ev:x}"
            )));
        }
        ev if ev & bit(Event::VALIDATE_CONTAINER_ADJUSTMENT) != 0 => {
            return Err(NriError::Handshake(format!(
                "plugin {name} asked to validate adjustments, which Berth does not offer"
            )));
        }
        ev => ev,
    };
    Ok((name, events))
}

fn ctx(timeout: Duration) -> ttrpc::context::Context {
    ttrpc::context::with_timeout(timeout.as_nanos() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_indices_follow_nri() {
        assert!(check_name("cri-test.nri_1+x").is_ok());
        assert!(check_name("").is_err());
        assert!(check_name("a/b").is_err());
        assert!(check_index("00").is_ok());
        assert!(check_index("9").is_err());
        assert!(check_index("1a").is_err());
        assert!(check_index("100").is_err());
    }

    #[test]
    fn a_large_node_is_synchronized_in_parts_and_a_small_one_whole() {
        let pods: Vec<_> = (0..10)
            .map(|i| {
                let mut p = api::PodSandbox::new();
                p.id = format!("{i:064}");
                p
            })
            .collect();
        let ctrs: Vec<_> = (0..30)
            .map(|i| {
                let mut c = api::Container::new();
                c.id = format!("{i:064}");
                c.env = vec!["X".repeat(1000)];
                c
            })
            .collect();
        let whole = sync_chunks(pods.clone(), ctrs.clone(), 3 << 20);
        assert_eq!(whole.len(), 1);
        assert_eq!((whole[0].pods.len(), whole[0].containers.len()), (10, 30));
        let parts = sync_chunks(pods, ctrs, 8 << 10);
        assert!(parts.len() > 3, "{}", parts.len());
        let (p, c) = parts.iter().fold((0, 0), |(p, c), r| {
            (p + r.pods.len(), c + r.containers.len())
        });
        assert_eq!((p, c), (10, 30));
        use protobuf::Message;
        assert!(parts.iter().all(|r| r.compute_size() <= 8 << 10));
        // Nothing to send is still one (empty) message.
        assert_eq!(sync_chunks(vec![], vec![], 1).len(), 1);
    }

    #[test]
    fn the_default_subscription_is_every_event_but_validation() {
        assert_eq!(ALL_EVENTS & bit(Event::RUN_POD_SANDBOX), 1);
        assert_ne!(ALL_EVENTS & bit(Event::POST_UPDATE_POD_SANDBOX), 0);
        assert_eq!(ALL_EVENTS & bit(Event::VALIDATE_CONTAINER_ADJUSTMENT), 0);
    }
}
