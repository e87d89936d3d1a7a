//! The monitor's wire protocol: one JSON object per line each way, over
//! `<state-dir>/monitor.sock`. Requests are answered in order, one response
//! line per request line.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Name of the monitor's socket inside its state dir.
pub const SOCKET_NAME: &str = "monitor.sock";
/// Directory (inside the state dir) holding durable exit records.
pub const EXITS_DIR: &str = "exits";
/// Directory (inside the state dir) handed to libcontainer as its root.
pub const CONTAINERS_DIR: &str = "containers";

/// A request from berthd. Tagged by `"op"`, e.g.
/// `{"op":"start","id":"c1"}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Creates a container from `bundle` (config.json + mounted rootfs); its
    /// stdout and stderr go to `log_path` in the CRI format.
    Create {
        id: String,
        bundle: PathBuf,
        log_path: PathBuf,
    },
    /// Starts the process of a created container.
    Start { id: String },
    /// Like `Start`, but answers with the container's [`Response::State`]
    /// (its `started_at`), which saves the client a `State` round trip.
    StartAndReport { id: String },
    /// StopContainer in one round trip: `signal` to the init, and once
    /// `timeout_ms` passed (at once when 0 or the container never started)
    /// SIGKILL to every process of its cgroup. The answer
    /// ([`Response::State`]) comes once the init exited (and its exit is
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
    /// ([`Response::Exec`]) comes once the process exited; the monitor serves
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

/// A response to one request. Tagged by `"result"`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Response {
    Ok,
    Created {
        pid: i32,
    },
    State(ContainerState),
    List {
        containers: Vec<ContainerState>,
    },
    /// How an exec ended. `timed_out`: killed at the deadline.
    Exec {
        exit_code: i32,
        #[serde(with = "hex_bytes")]
        stdout: Vec<u8>,
        #[serde(with = "hex_bytes")]
        stderr: Vec<u8>,
        #[serde(default)]
        truncated: bool,
        #[serde(default)]
        timed_out: bool,
    },
    Error {
        message: String,
    },
}

/// Default exec output cap: 16 MiB, stdout and stderr together.
pub const DEFAULT_MAX_OUTPUT: usize = 16 << 20;

fn default_max_output() -> usize {
    DEFAULT_MAX_OUTPUT
}

/// Exec output is bytes, not UTF-8: hex keeps the JSON line protocol exact
/// (half the size of serde's default array of numbers).
mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = String::with_capacity(b.len() * 2);
        for &x in b {
            out.push(HEX[(x >> 4) as usize] as char);
            out.push(HEX[(x & 15) as usize] as char);
        }
        s.serialize_str(&out)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        let s = s.as_bytes();
        if s.len() % 2 != 0 {
            return Err(D::Error::custom("odd hex length"));
        }
        let nib = |c: u8| match c {
            b'0'..=b'9' => Ok(c - b'0'),
            b'a'..=b'f' => Ok(c - b'a' + 10),
            _ => Err(D::Error::custom("bad hex digit")),
        };
        s.chunks(2)
            .map(|p| Ok((nib(p[0])? << 4) | nib(p[1])?))
            .collect()
    }
}

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

/// How a container's init ended; also the content of `exits/<id>.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitRecord {
    /// Shell-style code: the exit status, or 128 + signal.
    pub exit_code: i32,
    /// The signal that killed it, 0 if it exited.
    pub signal: i32,
    pub finished_at: i64,
    pub oom_killed: bool,
}
