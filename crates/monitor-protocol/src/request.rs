//! What berthd asks of a monitor.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// A request from berthd. Tagged by `"op"`, e.g.
/// `{"op":"start","id":"c1"}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Asks the monitor's [`PROTOCOL_VERSION`](crate::PROTOCOL_VERSION),
    /// answered with [`Response::Hello`](crate::Response::Hello) (version 1 on; see the crate docs).
    Hello,
    /// Creates a container from `bundle` (config.json + mounted rootfs); its
    /// stdout and stderr go to `log_path` in the CRI format.
    Create {
        id: String,
        bundle: PathBuf,
        log_path: PathBuf,
    },
    /// Starts the process of a created container.
    Start { id: String },
    /// Like `Start`, but answers with the container's [`Response::State`](crate::Response::State)
    /// (its `started_at`), which saves the client a `State` round trip.
    StartAndReport { id: String },
    /// StopContainer in one round trip: `signal` to the init, and once
    /// `timeout_ms` passed (at once when 0 or the container never started)
    /// SIGKILL to every process of its cgroup. The answer
    /// ([`Response::State`](crate::Response::State)) comes once the init exited (and its exit is
    /// recorded), or `kill_wait_ms` after the SIGKILL with the container
    /// still alive. The monitor finishes the stop even if the client goes
    /// away. Stopping an exited container answers at once.
    Stop {
        id: String,
        signal: i32,
        timeout_ms: u64,
        kill_wait_ms: u64,
    },
    /// Sends `signal` to the container's init (or, with `all`, to every
    /// process of its cgroup). Killing an exited container is a success.
    Kill {
        id: String,
        signal: i32,
        #[serde(default)]
        all: bool,
    },
    /// Reports the container's state.
    State { id: String },
    /// States of every container of the monitor.
    List,
    /// Removes the container: libcontainer state, cgroup, exit record. A live
    /// container is refused unless `force` (then it is SIGKILLed and reaped).
    Delete {
        id: String,
        #[serde(default)]
        force: bool,
    },
    /// Reopens the log file after the kubelet rotated it.
    ReopenLog { id: String },
    /// Runs `args` inside the running container (its namespaces, cgroup,
    /// user, capabilities, no_new_privs and seccomp). The answer
    /// ([`Response::Exec`](crate::Response::Exec)) comes once the process exited; the monitor serves
    /// other connections meanwhile, this one waits. `timeout_ms` 0: none.
    Exec {
        id: String,
        args: Vec<String>,
        /// `KEY=value` entries added to (overriding) the container's env.
        #[serde(default)]
        env: Vec<String>,
        #[serde(default)]
        cwd: Option<PathBuf>,
        #[serde(default)]
        timeout_ms: u64,
        /// Cap on stdout + stderr kept; more is read and dropped.
        #[serde(default = "default_max_output")]
        max_output: usize,
    },
    /// Applies `resources` (an OCI `LinuxResources` object) to the live
    /// cgroup of a container.
    Update {
        id: String,
        resources: serde_json::Value,
    },
    /// The monitor exits once no container is alive (created or running).
    Shutdown,
}

/// Default exec output cap: 16 MiB, stdout and stderr together.
pub const DEFAULT_MAX_OUTPUT: usize = 16 << 20;

fn default_max_output() -> usize {
    DEFAULT_MAX_OUTPUT
}
