//! What a monitor reports about its containers.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Created,
    Running,
    Exited,
}

/// What the monitor knows of one container. Times are nanoseconds since the
/// Unix epoch (what CRI wants), 0 when not reached yet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerState {
    pub id: String,
    pub status: Status,
    pub pid: i32,
    pub created_at: i64,
    pub started_at: i64,
    /// Set once the init was reaped (and the record is on disk).
    pub exit: Option<ExitRecord>,
    pub log_path: PathBuf,
}

/// How a container's init ended; also the content of the monitor's durable
/// exit record `exits/<id>.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitRecord {
    /// Shell-style code: the exit status, or 128 + signal.
    pub exit_code: i32,
    /// The signal that killed it, 0 if it exited.
    pub signal: i32,
    pub finished_at: i64,
    pub oom_killed: bool,
}
