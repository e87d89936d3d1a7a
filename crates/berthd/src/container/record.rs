//! The durable record of one container (a JSON value in the `containers` table).

use std::collections::BTreeMap;
use std::path::PathBuf;

use berth_api::v1::{ContainerMetadata, ContainerState};
use serde::{Deserialize, Serialize};

/// What berthd last knew of the container's process. The monitor is the
/// source of truth while the container lives; an exit, once seen, is cached
/// here so status survives the monitor (and the pod) going away.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum State {
    Created,
    Running,
    Exited,
}

impl State {
    pub fn to_cri(self) -> ContainerState {
        match self {
            State::Created => ContainerState::ContainerCreated,
            State::Running => ContainerState::ContainerRunning,
            State::Exited => ContainerState::ContainerExited,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub id: String,
    pub pod_id: String,
    pub name: String,
    pub attempt: u32,
    /// The image as the CRI config named it.
    pub image: String,
    /// `sha256:` of the image config.
    pub image_id: String,
    /// A repo digest when the image has one, else the image id (as containerd).
    pub image_ref: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// As reported to the CRI: pod `log_directory` + container `log_path`, or "".
    pub log_path: String,
    /// Signal number StopContainer sends first.
    pub stop_signal: i32,
    pub state: State,
    pub created_at: i64,
    pub started_at: i64,
    pub finished_at: i64,
    pub exit_code: i32,
    pub oom_killed: bool,
    /// Why the state is what it is, when not obvious (a lost container).
    #[serde(default)]
    pub message: String,
    /// `<state>/containers/<id>`: bundle (config.json) and `rootfs` mount point.
    pub bundle: PathBuf,
    /// `<root>/containers/<id>`: overlay upper and work dirs.
    pub layer_dir: PathBuf,
}

impl ContainerRecord {
    pub fn metadata(&self) -> ContainerMetadata {
        ContainerMetadata {
            name: self.name.clone(),
            attempt: self.attempt,
        }
    }

    pub fn rootfs(&self) -> PathBuf {
        self.bundle.join("rootfs")
    }

    /// Name reservation key: one container per (pod, name, attempt), as containerd.
    pub fn reservation_key(&self) -> String {
        reservation_key(&self.pod_id, &self.name, self.attempt)
    }

    /// CRI reason for an exited container.
    pub fn reason(&self) -> &'static str {
        match self.state {
            State::Exited if self.oom_killed => "OOMKilled",
            State::Exited if self.exit_code == 0 => "Completed",
            State::Exited => "Error",
            _ => "",
        }
    }
}

pub fn reservation_key(pod_id: &str, name: &str, attempt: u32) -> String {
    format!("{pod_id}/{name}_{attempt}")
}

/// Makes the daemon's non-durable store commits durable soon, off the request
/// path. Start and stop only cache in the record what the monitor knows (and
/// tells again after a restart): those commits skip the fsync
/// (`redb::Durability::None`) and mark the flusher, which commits an empty
/// durable transaction a moment later; that persists them and everything
/// committed before. (Any other durable commit, e.g. the next CreateContainer,
/// does the same.)
pub struct Flusher {
    dirty: std::sync::Mutex<bool>,
    wake: std::sync::Condvar,
}

/// How long the flusher gathers commits before one fsync covers them.
const FLUSH_DELAY: std::time::Duration = std::time::Duration::from_millis(100);

impl Flusher {
    pub fn start(db: &std::sync::Arc<redb::Database>) -> std::sync::Arc<Flusher> {
        let f = std::sync::Arc::new(Flusher {
            dirty: std::sync::Mutex::new(false),
            wake: std::sync::Condvar::new(),
        });
        let (me, db) = (f.clone(), std::sync::Arc::downgrade(db));
        let spawned = std::thread::Builder::new()
            .name("store-flush".into())
            .spawn(move || {
                loop {
                    {
                        let mut dirty = me.dirty.lock().unwrap_or_else(|e| e.into_inner());
                        while !*dirty {
                            dirty = me.wake.wait(dirty).unwrap_or_else(|e| e.into_inner());
                        }
                    }
                    std::thread::sleep(FLUSH_DELAY);
                    *me.dirty.lock().unwrap_or_else(|e| e.into_inner()) = false;
                    // The store was closed (daemon shutdown): nothing to do.
                    let Some(db) = db.upgrade() else { return };
                    let res = db.begin_write().map(|txn| txn.commit());
                    if let Err(e) | Ok(Err(e)) = res
                        .map_err(|e| e.to_string())
                        .map(|r| r.map_err(|e| e.to_string()))
                    {
                        crate::store::exit_if_poisoned(&e);
                        tracing::warn!(error = %e, "cannot flush the container store");
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start the store flusher: state caches become durable with the next durable commit");
        }
        f
    }

    /// A non-durable commit happened.
    pub fn mark(&self) {
        *self.dirty.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.wake.notify_one();
    }
}
