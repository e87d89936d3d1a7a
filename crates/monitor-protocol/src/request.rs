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
    ///
    /// With `process.terminal` in config.json the container gets a
    /// pseudo-terminal (its master held by the monitor, its output logged as
    /// stdout). With `stdin` the monitor keeps the write end of a pipe on
    /// the container's stdin for [`Request::Attach`]; with `stdin_once` it
    /// closes it once the first attach that used stdin ends. Without `stdin`
    /// the container's stdin is /dev/null.
    Create {
        id: String,
        bundle: PathBuf,
        log_path: PathBuf,
        #[serde(default)]
        stdin: bool,
        #[serde(default)]
        stdin_once: bool,
        /// The container is a restore: its [`Request::Start`] has CRIU
        /// restore the checkpoint's process tree into it instead of
        /// starting its process (version 5 on; an older monitor would
        /// ignore the field and start the process fresh: berthd checks the
        /// version first).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        restore: Option<RestoreFrom>,
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
    /// Starts `args` in the running container for a streaming session
    /// (`kubectl exec`), set up exactly as [`Request::Exec`] (namespaces,
    /// cgroup, user, capabilities, seccomp). Answered with
    /// [`Response::ExecStarted`], the process's stdio passed with that line
    /// (see [`crate::fds`]): with `tty`, one fd, the terminal's master (read
    /// output, write input, resize with TIOCSWINSZ); otherwise stdin's
    /// write end (only with `stdin`; else the process reads /dev/null),
    /// stdout's read end, stderr's read end. From then on the connection
    /// belongs to the exec: [`Response::ExecExited`] follows once the
    /// process exited; if berthd closes the connection first, the monitor
    /// SIGKILLs the process (the client went away).
    ExecStream {
        id: String,
        args: Vec<String>,
        #[serde(default)]
        env: Vec<String>,
        #[serde(default)]
        cwd: Option<PathBuf>,
        #[serde(default)]
        tty: bool,
        #[serde(default)]
        stdin: bool,
        /// The terminal's first size (with `tty`), so the process starts at
        /// the client's size.
        #[serde(default)]
        size: Option<TerminalSize>,
    },
    /// Attaches to the running container's stdio (`kubectl attach`).
    /// Answered with [`Response::Attached`], fds passed with that line in
    /// this order: the terminal's master (a dup, only for a container with
    /// a terminal: write input, resize; berthd never reads it), the
    /// container stdin pipe's write end (a dup; only with `stdin`, for a
    /// container without a terminal created with `stdin`), then a pipe's
    /// read end carrying the container's stdout (its terminal output with a
    /// terminal) from now on, and one for stderr (not with a terminal).
    /// The monitor feeds the output pipes as it logs; an attacher that does
    /// not keep up loses output rather than slowing the container. The
    /// output pipes reach EOF when the container exits. Closing the
    /// connection detaches (the container keeps running; with
    /// `stdin_once`, the container's stdin is closed after the first attach
    /// with stdin).
    Attach {
        id: String,
        #[serde(default)]
        stdin: bool,
    },
    /// Closes the container's stdin pipe: the process reads EOF (once no
    /// attach holds a dup of its write end any more), and later attaches
    /// get no stdin. berthd sends it when the client's stdin of an attach
    /// to a `stdin_once` container ends, and keeps that attach's output
    /// open until the container exits: what the process writes after its
    /// stdin closed still reaches the client. Answered with
    /// [`Response::Ok`](crate::Response::Ok), also for a stdin closed
    /// already or a container without one. Since version 3.
    CloseStdin { id: String },
    /// Applies `resources` (an OCI `LinuxResources` object) to the live
    /// cgroup of a container.
    Update {
        id: String,
        resources: serde_json::Value,
    },
    /// The monitor exits once no container is alive (created or running).
    Shutdown,
    /// Turns the connection into an event stream (version 4 on): answered
    /// with [`Response::List`](crate::Response::List), the state of every
    /// container now, then one [`Response::Event`](crate::Response::Event)
    /// line per change from then on (created, started, exited once its
    /// record is on disk, deleted), so berthd keeps its records current
    /// without asking. Lines the client sends afterwards are ignored. A
    /// subscriber that does not keep reading is dropped (closed), not
    /// waited for: it subscribes again and gets a fresh snapshot.
    Subscribe,
}

/// Where a restored container's process comes from (`Request::Create`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreFrom {
    /// The criu binary (absolute path).
    pub criu: PathBuf,
    /// The unpacked checkpoint archive (CRI-O's layout): CRIU's images and
    /// `descriptors.json` in `checkpoint/`; CRIU's restore log and work
    /// files are written here too.
    pub dir: PathBuf,
    /// How long the restore may take before CRIU is killed (0: 60 s).
    #[serde(default)]
    pub timeout_ms: u64,
}

/// A terminal's size in characters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TerminalSize {
    pub width: u16,
    pub height: u16,
}

/// Default exec output cap: 16 MiB, stdout and stderr together.
pub const DEFAULT_MAX_OUTPUT: usize = 16 << 20;

fn default_max_output() -> usize {
    DEFAULT_MAX_OUTPUT
}
