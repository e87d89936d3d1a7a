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
