//! berthd's subscription to each pod monitor's container events: one task
//! per monitor holds a `subscribe` connection and forwards the snapshot and
//! every event to [`Containers::apply_updates`], which keeps the records
//! current. ListContainers and ContainerStatus then answer from the records,
//! with no monitor round trip per pod (the kubelet's PLEG lists every
//! second).
//!
//! Per pod the watch is in one [`Mode`]:
//! - `Connecting`: not subscribed yet (or again): reads ask the monitor, as
//!   for an old monitor.
//! - `Live`: subscribed; the records are current.
//! - `Polled`: a monitor older than events (protocol < 3): reads ask it.
//! - `Unresponsive`: the monitor did not answer for longer than its longest
//!   legitimate blocking operation: its live containers read as UNKNOWN
//!   (never stored) until it answers again.
//!
//! A monitor whose socket refuses connections is gone: its live containers
//! are lost (exited, code 255, stored), and the watch ends.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_monitor_protocol::{ContainerState, EventKind, Request};
use tokio::sync::{mpsc, oneshot};

use super::monitor::{self, CallError};
use super::{ContainerRecord, Containers, State};

/// How a pod's monitor is followed (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Connecting,
    Live,
    Polled,
    Unresponsive,
}

/// What a watch task tells the records.
#[derive(Debug)]
pub enum Update {
    /// The monitor's containers on (re)subscription. `applied` is dropped
    /// once the records hold them: only then is the pod `Live` (reads
    /// answered from records that missed what happened while berthd was
    /// down would go back in time).
    Snapshot {
        pod: String,
        containers: Vec<ContainerState>,
        applied: oneshot::Sender<()>,
    },
    Event {
        pod: String,
        kind: EventKind,
        container: ContainerState,
    },
    /// The monitor is gone: `why` is the connection error.
    Gone { pod: String, why: String },
}

/// How long the watch waits, and how often it checks a subscribed monitor.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    /// A monitor silent this long is unresponsive: longer than its longest
    /// blocking request (a libcontainer create or delete on a loaded host,
    /// whose deadline is 60 s), so a slow create is not taken for a hang.
    pub unresponsive_after: Duration,
    /// How often a subscribed monitor is asked `hello`.
    pub heartbeat: Duration,
    /// Pause before subscribing again after a failure.
    pub retry: Duration,
}

impl Timing {
    pub fn new(unresponsive_after: Duration) -> Timing {
        Timing {
            unresponsive_after,
            heartbeat: (unresponsive_after / 4).clamp(Duration::from_millis(100), HEARTBEAT_MAX),
            retry: Duration::from_secs(1).min(unresponsive_after),
        }
    }
}

/// At most this long between two checks of a subscribed monitor.
const HEARTBEAT_MAX: Duration = Duration::from_secs(15);

struct Entry {
    mode: Mode,
    /// Tells this task's entry from a later one for the same pod.
    generation: u64,
    task: tokio::task::AbortHandle,
}

/// The watch of every pod monitor.
pub struct Watches {
    pods: Mutex<HashMap<String, Entry>>,
    generation: AtomicU64,
    updates: mpsc::UnboundedSender<Update>,
    timing: Timing,
}

/// The watched pods' modes, held (see [`Watches::modes`]).
pub struct Modes<'a>(std::sync::MutexGuard<'a, HashMap<String, Entry>>);

impl Modes<'_> {
    /// The pod's mode; `None`: not watched.
    pub fn get(&self, pod: &str) -> Option<Mode> {
        self.0.get(pod).map(|e| e.mode)
    }

    pub fn all(&self) -> impl Iterator<Item = Mode> + '_ {
        self.0.values().map(|e| e.mode)
    }
}

impl Watches {
    pub fn new(timing: Timing) -> (Arc<Watches>, mpsc::UnboundedReceiver<Update>) {
        let (updates, rx) = mpsc::unbounded_channel();
        let w = Watches {
            pods: Mutex::default(),
            generation: AtomicU64::new(0),
            updates,
            timing,
        };
        (Arc::new(w), rx)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.pods.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The pod's mode; `None`: not watched (no monitor known).
    pub fn mode(&self, pod: &str) -> Option<Mode> {
        self.lock().get(pod).map(|e| e.mode)
    }

    /// Every watched pod's mode, read in place: the lists (every second
    /// from the kubelet) look up each record's pod, and a copy of the map
    /// was a string allocation per pod. Lock order: these modes before the
    /// records ([`Containers`]' lock), never the other way.
    pub fn modes(&self) -> Modes<'_> {
        Modes(self.lock())
    }

    /// Starts watching the pod's monitor at `dir` unless it is watched.
    pub fn start(self: &Arc<Self>, pod: &str, dir: PathBuf) {
        let mut pods = self.lock();
        if pods.contains_key(pod) {
            return;
        }
        let generation = self.generation.fetch_add(1, Ordering::Relaxed);
        let (me, p) = (self.clone(), pod.to_string());
        let task = tokio::spawn(async move { me.run(p, generation, dir).await });
        pods.insert(
            pod.to_string(),
            Entry {
                mode: Mode::Connecting,
                generation,
                task: task.abort_handle(),
            },
        );
    }

    /// Stops watching the pod (its monitor is being shut down on purpose:
    /// its end must not read as a loss).
    pub fn stop(&self, pod: &str) {
        if let Some(e) = self.lock().remove(pod) {
            e.task.abort();
        }
    }

    fn set(&self, pod: &str, generation: u64, mode: Mode) {
        if let Some(e) = self.lock().get_mut(pod)
            && e.generation == generation
            && e.mode != mode
        {
            tracing::info!(pod = %pod, from = ?e.mode, to = ?mode, "pod monitor watch");
            if mode == Mode::Unresponsive {
                crate::prometheus::global().monitor_unresponsive();
            }
            e.mode = mode;
        }
    }

    fn end(&self, pod: &str, generation: u64) {
        let mut pods = self.lock();
        if pods.get(pod).is_some_and(|e| e.generation == generation) {
            pods.remove(pod);
        }
    }

    fn send(&self, u: Update) {
        // The receiver lives as long as the daemon.
        let _ = self.updates.send(u);
    }

    /// The watch task of one pod: subscribe, forward, check, resubscribe.
    async fn run(self: Arc<Self>, pod: String, generation: u64, dir: PathBuf) {
        let t = self.timing;
        let mut silent_since = tokio::time::Instant::now();
        loop {
            let sub = tokio::time::timeout(t.unresponsive_after, monitor::subscribe(&dir, &pod));
            let mut conn = match sub.await {
                Ok(Ok(Some((containers, conn)))) => {
                    let (applied, is_applied) = oneshot::channel();
                    self.send(Update::Snapshot {
                        pod: pod.clone(),
                        containers,
                        applied,
                    });
                    // Ok or dropped (the update failed, and said so): either
                    // way the applier is done with it.
                    let _ = is_applied.await;
                    self.set(&pod, generation, Mode::Live);
                    conn
                }
                Ok(Ok(None)) => {
                    self.set(&pod, generation, Mode::Polled);
                    return;
                }
                Ok(Err(CallError::Unreachable { source, .. })) => {
                    self.send(Update::Gone {
                        pod: pod.clone(),
                        why: source.to_string(),
                    });
                    self.end(&pod, generation);
                    return;
                }
                Ok(Err(e)) => {
                    tracing::warn!(pod = %pod, error = %e, "cannot subscribe to the pod monitor's events");
                    if silent_since.elapsed() >= t.unresponsive_after {
                        self.set(&pod, generation, Mode::Unresponsive);
                    }
                    tokio::time::sleep(t.retry).await;
                    continue;
                }
                Err(_) => {
                    tracing::warn!(pod = %pod, after = ?t.unresponsive_after, "pod monitor does not answer");
                    self.set(&pod, generation, Mode::Unresponsive);
                    continue;
                }
            };
            silent_since = tokio::time::Instant::now();
            let mut buf = Vec::new();
            let mut beat = tokio::time::interval(t.heartbeat);
            beat.reset();
            loop {
                tokio::select! {
                    // Cancel-safe: a partial line stays in `buf`.
                    got = monitor::read_event(&mut conn, &pod, &mut buf) => match got {
                        Ok((kind, container)) => {
                            silent_since = tokio::time::Instant::now();
                            self.send(Update::Event { pod: pod.clone(), kind, container });
                        }
                        Err(e) => {
                            tracing::debug!(pod = %pod, error = %e, "event subscription ended");
                            break;
                        }
                    },
                    _ = beat.tick() => {
                        let hello = monitor::call_within(&dir, &pod, Request::Hello, t.unresponsive_after);
                        match hello.await {
                            Ok(_) => {
                                silent_since = tokio::time::Instant::now();
                                self.set(&pod, generation, Mode::Live);
                            }
                            Err(CallError::Timeout { .. }) => {
                                self.set(&pod, generation, Mode::Unresponsive);
                            }
                            // Gone or failing: the subscription's end says so.
                            Err(e) => tracing::debug!(pod = %pod, error = %e, "pod monitor heartbeat"),
                        }
                    }
                }
            }
        }
    }
}

impl Containers {
    /// Follows the pod's monitor (spawned, or found running after a restart).
    pub(super) fn watch(&self, pod_id: &str) {
        self.watches.start(pod_id, self.monitor_dir(pod_id));
    }

    /// At startup: follows the monitor of every pod with a container not
    /// known to have exited; the first snapshot reconciles what happened
    /// while berthd was down.
    pub fn watch_live_pods(&self) {
        let pods: std::collections::BTreeSet<String> = self
            .lock()
            .records
            .values()
            .filter(|r| r.state != State::Exited)
            .map(|r| r.pod_id.clone())
            .collect();
        for pod in pods {
            self.watch(&pod);
        }
    }

    /// The receiving end of the watches: run once, by the daemon, for its
    /// lifetime.
    pub fn take_updates(&self) -> Option<mpsc::UnboundedReceiver<Update>> {
        self.updates
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }

    /// Applies what the watches report to the records, in order.
    pub async fn apply_updates(&self, mut rx: mpsc::UnboundedReceiver<Update>) {
        while let Some(u) = rx.recv().await {
            if let Err(e) = self.apply_update(u).await {
                tracing::warn!(error = %e, "cannot apply a pod monitor's event to the records");
            }
        }
    }

    async fn apply_update(&self, u: Update) -> Result<(), super::ContainerError> {
        match u {
            Update::Snapshot {
                pod,
                containers,
                applied: _applied,
            } => {
                for rec in self.live_of_pod(&pod) {
                    match containers.iter().find(|s| s.id == rec.id) {
                        Some(s) => {
                            self.apply(rec, Ok(Some(s.clone())))?;
                        }
                        // Not in the snapshot: created since, or forgotten
                        // by the monitor; its own state answer tells.
                        None => {
                            self.refresh(rec).await?;
                        }
                    }
                }
            }
            Update::Event {
                pod,
                kind,
                container,
            } => {
                // A delete is berthd's own RemoveContainer (or an orphan's
                // discard), which handles the record itself.
                let rec = self.lock().records.get(&container.id).cloned();
                if kind != EventKind::Deleted
                    && let Some(rec) = rec
                    && rec.pod_id == pod
                    && rec.state != State::Exited
                {
                    self.apply(rec, Ok(Some(container)))?;
                }
            }
            Update::Gone { pod, why } => {
                for rec in self.live_of_pod(&pod) {
                    let e = CallError::Unreachable {
                        pod: pod.clone(),
                        source: std::io::Error::other(why.clone()),
                    };
                    self.apply(rec, Err(e))?;
                }
            }
        }
        Ok(())
    }

    pub(super) fn live_of_pod(&self, pod: &str) -> Vec<ContainerRecord> {
        self.lock()
            .records
            .values()
            .filter(|r| r.pod_id == pod && r.state != State::Exited)
            .cloned()
            .collect()
    }
}

/// A record as reads report it, given its pod's watch.
pub(super) enum Read {
    /// What to report.
    Now(ContainerRecord),
    /// The record, given back: the monitor must be asked (not subscribed
    /// yet, or too old for events).
    Ask(ContainerRecord),
}

/// The record as reads report it given its pod's watch, without copying it.
pub(super) fn as_read(rec: ContainerRecord, mode: Option<Mode>) -> Read {
    if as_stored(&rec, mode) {
        return Read::Now(rec);
    }
    match mode {
        Some(Mode::Unresponsive) => Read::Now(unknown(rec)),
        _ => Read::Ask(rec),
    }
}

/// True when reads report the stored record unchanged: an exit, or a pod
/// whose monitor's events keep it current.
pub(super) fn as_stored(rec: &ContainerRecord, mode: Option<Mode>) -> bool {
    rec.state == State::Exited || mode == Some(Mode::Live)
}

/// A live container of an unresponsive monitor: UNKNOWN, as the CRI has it
/// for a container whose state cannot be told (never stored).
fn unknown(mut rec: ContainerRecord) -> ContainerRecord {
    rec.message = format!(
        "the monitor of pod {} does not answer; last known state {:?}",
        rec.pod_id, rec.state
    );
    rec.state = State::Unknown;
    rec
}

#[cfg(test)]
mod tests {
    use berth_monitor_protocol::{EVENTS_VERSION, Response, SOCKET_NAME, Status};
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    use tokio::net::UnixListener;

    use super::*;

    fn state(id: &str, status: Status) -> ContainerState {
        ContainerState {
            id: id.into(),
            status,
            pid: 7,
            created_at: 1,
            started_at: 2,
            exit: None,
            log_path: PathBuf::from("/l"),
        }
    }

    fn timing() -> Timing {
        Timing::new(Duration::from_millis(400))
    }

    fn line(r: &Response) -> Vec<u8> {
        let mut l = serde_json::to_vec(r).unwrap();
        l.push(b'\n');
        l
    }

    /// A monitor that answers `hello` and `subscribe` (then pushes one
    /// exit), and never answers `list` or `state`.
    async fn events_only(listener: UnixListener) {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let mut conn = BufReader::new(stream);
                let mut req = String::new();
                while conn.read_line(&mut req).await.unwrap_or(0) > 0 {
                    match serde_json::from_str::<Request>(req.trim_end()).unwrap() {
                        Request::Hello => {
                            let hello = line(&Response::Hello {
                                version: EVENTS_VERSION,
                            });
                            conn.get_mut().write_all(&hello).await.unwrap();
                        }
                        Request::Subscribe => {
                            let snap = Response::List {
                                containers: vec![state("c1", Status::Running)],
                            };
                            conn.get_mut().write_all(&line(&snap)).await.unwrap();
                            let mut exited = state("c1", Status::Exited);
                            exited.exit = Some(berth_monitor_protocol::ExitRecord {
                                exit_code: 3,
                                signal: 0,
                                finished_at: 9,
                                oom_killed: false,
                            });
                            let ev = Response::Event {
                                kind: EventKind::Exited,
                                container: exited,
                            };
                            conn.get_mut().write_all(&line(&ev)).await.unwrap();
                        }
                        // Never answered.
                        _ => {}
                    }
                    req.clear();
                }
            });
        }
    }

    #[tokio::test]
    async fn snapshot_then_events_with_no_list_answered() {
        let tmp = tempfile::tempdir().unwrap();
        let listener = UnixListener::bind(tmp.path().join(SOCKET_NAME)).unwrap();
        let server = tokio::spawn(events_only(listener));
        let (w, mut rx) = Watches::new(timing());
        w.start("p", tmp.path().to_path_buf());
        let Some(Update::Snapshot {
            pod, containers, ..
        }) = rx.recv().await
        else {
            panic!("no snapshot");
        };
        assert_eq!((pod.as_str(), containers.len()), ("p", 1));
        let Some(Update::Event {
            kind, container, ..
        }) = rx.recv().await
        else {
            panic!("no event");
        };
        assert_eq!(kind, EventKind::Exited);
        assert_eq!(container.exit.unwrap().exit_code, 3);
        assert_eq!(w.mode("p"), Some(Mode::Live));
        // Heartbeats keep it live.
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_eq!(w.mode("p"), Some(Mode::Live));
        w.stop("p");
        assert_eq!(w.mode("p"), None);
        server.abort();
    }

    /// A monitor that accepts and never answers: unresponsive once its
    /// deadline passed, not waited for by anyone else.
    #[tokio::test]
    async fn a_silent_monitor_is_unresponsive() {
        let tmp = tempfile::tempdir().unwrap();
        let listener = UnixListener::bind(tmp.path().join(SOCKET_NAME)).unwrap();
        let held = tokio::spawn(async move {
            let mut conns = Vec::new();
            while let Ok((c, _)) = listener.accept().await {
                conns.push(c);
            }
        });
        let (w, _rx) = Watches::new(timing());
        w.start("p", tmp.path().to_path_buf());
        assert_eq!(w.mode("p"), Some(Mode::Connecting));
        let t0 = std::time::Instant::now();
        while w.mode("p") != Some(Mode::Unresponsive) {
            assert!(t0.elapsed() < Duration::from_secs(10), "never unresponsive");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        w.stop("p");
        held.abort();
    }

    /// No socket: the monitor is gone; the watch says so and ends.
    #[tokio::test]
    async fn no_monitor_is_gone() {
        let tmp = tempfile::tempdir().unwrap();
        let (w, mut rx) = Watches::new(timing());
        w.start("p", tmp.path().to_path_buf());
        let Some(Update::Gone { pod, .. }) = rx.recv().await else {
            panic!("not gone");
        };
        assert_eq!(pod, "p");
        // The task removes its entry right after.
        let t0 = std::time::Instant::now();
        while w.mode("p").is_some() {
            assert!(t0.elapsed() < Duration::from_secs(5));
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// A monitor of before events (version 2) is polled, as before.
    #[tokio::test]
    async fn an_older_monitor_is_polled() {
        let tmp = tempfile::tempdir().unwrap();
        let listener = UnixListener::bind(tmp.path().join(SOCKET_NAME)).unwrap();
        let server = tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut conn = BufReader::new(stream);
                    let mut req = String::new();
                    while conn.read_line(&mut req).await.unwrap_or(0) > 0 {
                        let hello = line(&Response::Hello { version: 2 });
                        conn.get_mut().write_all(&hello).await.unwrap();
                        req.clear();
                    }
                });
            }
        });
        let (w, _rx) = Watches::new(timing());
        w.start("p", tmp.path().to_path_buf());
        let t0 = std::time::Instant::now();
        while w.mode("p") != Some(Mode::Polled) {
            assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", w.mode("p"));
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        server.abort();
    }
}
