//! What the workers, the killer and the summary share: the daemon as workers see it, the
//! pods they hold, the counters, and one RPC through outages.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use berth_api::v1::ContainerState;
use berth_e2e::client::CriClient;
use tokio::sync::watch;

/// One RPC that takes longer is a hang (counted as an error).
const RPC_LIMIT: Duration = Duration::from_secs(120);
/// Attempts of one step that fails outside outages before the pod is given up.
pub const MAX_FAILURES: usize = 3;

/// The daemon as workers see it.
#[derive(Clone)]
pub struct Life {
    /// Bumped at every restart.
    pub generation: u64,
    /// False from just before a kill until the restarted daemon is checked.
    pub up: bool,
    pub client: CriClient,
}

/// A pod a worker holds, as far as the daemon should know it.
#[derive(Clone, Debug)]
pub struct Held {
    pub name: String,
    pub ip: String,
    pub ctr: Option<String>,
    /// The container's state as the worker last saw it change.
    pub ctr_state: ContainerState,
    /// An RPC that changes this pod is under way: its state is unknown.
    pub busy: bool,
}

#[derive(Default)]
pub struct Counters {
    pub pods_started: AtomicU64,
    pub ctrs_started: AtomicU64,
    pub execs: AtomicU64,
    pub pods_removed: AtomicU64,
    /// RPCs that failed because their daemon was killed.
    pub outage_failures: AtomicU64,
    /// Pods or containers an interrupted RPC made, found after the restart.
    pub adopted: AtomicU64,
    pub errors: AtomicU64,
    pub lost: AtomicU64,
    pub abandoned: AtomicU64,
    pub restarts: AtomicU64,
    pub verified: AtomicU64,
}

pub struct Shared {
    pub life: watch::Sender<Life>,
    pub held: Mutex<HashMap<String, Held>>,
    pub n: Counters,
    /// The first error messages (errors and losses).
    pub messages: Mutex<Vec<String>>,
    /// Every pod id, pod IP and container id the run made (for the leak check).
    pub pod_ids: Mutex<BTreeSet<String>>,
    pub pod_ips: Mutex<BTreeSet<String>>,
    pub ctr_ids: Mutex<BTreeSet<String>>,
    /// Each worker's current step, to name the stuck ones.
    pub steps: Mutex<Vec<String>>,
    pub daemon_pid: AtomicU32,
    pub stop: AtomicBool,
    pub run_tag: String,
    pub log_dir: PathBuf,
    pub prefix: String,
    pub dwell: Duration,
}

/// The outcome of one RPC.
pub enum Try<T> {
    Done(T),
    /// Failed because the daemon it went to was killed.
    Outage,
    /// Failed for another reason (already counted and reported).
    Failed,
}

impl Counters {
    /// Zeroes what the warm-up counted (errors and losses stay).
    pub fn forget_warm_up(&self) {
        for n in [
            &self.pods_started,
            &self.ctrs_started,
            &self.execs,
            &self.pods_removed,
            &self.adopted,
        ] {
            n.store(0, Ordering::Relaxed);
        }
    }
}

impl Shared {
    pub fn new(
        client: CriClient,
        workers: usize,
        daemon_pid: u32,
        run_tag: String,
        log_dir: PathBuf,
        prefix: String,
        dwell: Duration,
    ) -> Shared {
        let (life, _) = watch::channel(Life {
            generation: 0,
            up: true,
            client,
        });
        Shared {
            life,
            held: Mutex::new(HashMap::new()),
            n: Counters::default(),
            messages: Mutex::new(vec![]),
            pod_ids: Mutex::new(BTreeSet::new()),
            pod_ips: Mutex::new(BTreeSet::new()),
            ctr_ids: Mutex::new(BTreeSet::new()),
            steps: Mutex::new(vec![String::new(); workers]),
            daemon_pid: AtomicU32::new(daemon_pid),
            stop: AtomicBool::new(false),
            run_tag,
            log_dir,
            prefix,
            dwell,
        }
    }

    pub fn error(&self, msg: String) {
        self.n.errors.fetch_add(1, Ordering::Relaxed);
        self.note(format!("error: {msg}"));
    }

    pub fn lost(&self, msg: String) {
        self.n.lost.fetch_add(1, Ordering::Relaxed);
        self.note(format!("LOST: {msg}"));
    }

    pub fn note(&self, msg: String) {
        eprintln!("[{}] {msg}", stamp());
        let mut m = self.messages.lock().unwrap();
        if m.len() < 100 {
            m.push(msg);
        }
    }

    pub fn step(&self, w: usize, s: String) {
        self.steps.lock().unwrap()[w] = s;
    }

    /// The daemon once it is up (and checked after a restart).
    pub async fn up(&self) -> Life {
        let mut rx = self.life.subscribe();
        let life = rx
            .wait_for(|l| l.up)
            .await
            .expect("the life sender lives as long as this");
        life.clone()
    }

    /// Whether daemon generation `generation` is down or gone.
    pub fn gone(&self, generation: u64) -> bool {
        let l = self.life.borrow();
        l.generation != generation || !l.up
    }

    /// One RPC of worker `w` against the current daemon.
    pub async fn rpc<T, F, Fut>(&self, w: usize, what: &str, f: F) -> Try<T>
    where
        F: FnOnce(CriClient) -> Fut,
        Fut: Future<Output = Result<T, tonic::Status>>,
    {
        self.step(w, what.to_string());
        let life = self.up().await;
        let res = tokio::time::timeout(RPC_LIMIT, f(life.client)).await;
        match res {
            Ok(Ok(v)) => Try::Done(v),
            Ok(Err(_)) if self.gone(life.generation) => {
                self.n.outage_failures.fetch_add(1, Ordering::Relaxed);
                Try::Outage
            }
            Ok(Err(s)) => {
                self.error(format!(
                    "worker {w}: {what}: {:?}: {}",
                    s.code(),
                    s.message()
                ));
                Try::Failed
            }
            Err(_) => {
                self.error(format!(
                    "worker {w}: {what}: no answer within {RPC_LIMIT:?} (hang)"
                ));
                Try::Failed
            }
        }
    }

    /// Retries an RPC with no lasting effect (a read, or one that is
    /// idempotent) through outages, up to [`MAX_FAILURES`] other failures.
    pub async fn retried<T, F, Fut>(&self, w: usize, what: &str, f: F) -> Option<T>
    where
        F: Fn(CriClient) -> Fut,
        Fut: Future<Output = Result<T, tonic::Status>>,
    {
        let mut failures = 0;
        loop {
            match self.rpc(w, what, &f).await {
                Try::Done(v) => return Some(v),
                Try::Outage => continue,
                Try::Failed => {
                    failures += 1;
                    if failures >= MAX_FAILURES {
                        return None;
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }

    pub fn set_busy(&self, pod: &str, busy: bool) {
        if let Some(h) = self.held.lock().unwrap().get_mut(pod) {
            h.busy = busy;
        }
    }

    pub fn update(&self, pod: &str, f: impl FnOnce(&mut Held)) {
        if let Some(h) = self.held.lock().unwrap().get_mut(pod) {
            f(h);
            h.busy = false;
        }
    }
}

/// Seconds since the epoch, with millis: the prefix of progress lines on stderr.
pub fn stamp() -> String {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!("{}.{:03}", d.as_secs(), d.subsec_millis())
}
