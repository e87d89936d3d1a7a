//! The per-pod monitor: one thread, one `poll(2)` loop over the listening
//! socket, the client connections, every container's stdout/stderr pipe and
//! a signalfd for SIGCHLD.
//!
//! Single-threaded on purpose: libcontainer's `build()` clones with raw
//! `clone3` and runs Rust code in the child, which hangs if another thread
//! held a lock at the time (docs/architecture.md). Nothing here spawns a thread.
//!
//! One file per concern, conmon-rs style:
//! - `event_loop`: poll, accept, serve connections; `connections`: their
//!   buffers and replies; `dispatch`: a request line to its handler.
//! - container operations: `create`, `start`, `kill`, `delete`, `update`
//!   (on the table of `container::Ctr`s); `restore`: the start of a
//!   container created from a checkpoint (CRIU restores its tree);
//!   `libcontainer_call`: what surrounds every libcontainer build.
//! - deferred answers: `stop_waiters`, `exec_waiters`.
//! - streaming, where the connection is handed over with the stdio fds and
//!   stays open for the session: `exec_stream`, `attach`; `terminal`: the
//!   console socket (pseudo-terminals of containers and execs).
//! - `events`: container changes pushed to subscribed connections.
//! - `reaper` (SIGCHLD, exit records, OOM kills), `stdio` (pipes into logs),
//!   `trash` (deleted state, emptied when idle).
//! - cgroups (update, removal, OOM kills): the `berth-cgroup` crate.
//! - `error`: the typed errors, mapped to the protocol's error codes.

mod attach;
mod connections;
mod container;
mod create;
mod delete;
mod dispatch;
mod error;
mod event_loop;
mod events;
mod exec_stream;
mod exec_waiters;
mod kill;
mod libcontainer_call;
mod mount_view;
mod reaper;
mod restore;
mod start;
mod stdio;
mod stop_waiters;
mod terminal;
mod trash;
mod update;

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

use berth_cgroup::{Cgroup, Layout};
use nix::sys::signal::{SigSet, SigmaskHow, Signal, sigprocmask};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use berth_monitor_protocol::SOCKET_NAME;

pub use error::{MonitorError, Op, OpError};
pub(crate) use libcontainer_call::chain;
pub use terminal::set_terminal_size;

use connections::Connections;
use container::Ctr;
use exec_stream::StreamExecs;
use exec_waiters::ExecWaiters;
use stop_waiters::StopWaiters;
use terminal::ConsoleSocket;
use trash::Trash;

/// Directory (inside the state dir) holding durable exit records.
pub const EXITS_DIR: &str = "exits";
/// Directory (inside the state dir) handed to libcontainer as its root.
pub const CONTAINERS_DIR: &str = "containers";
/// Size of the one read buffer shared by all pipes and connections.
const READ_BUF: usize = 16 * 1024;
/// Set (to anything but 0) in the monitor's environment, it logs how long
/// each request took to its `monitor.log` (profiling; off by default).
pub const TIMING_ENV: &str = "BERTH_MONITOR_TIMING";

pub struct Monitor {
    pod_id: String,
    state_dir: PathBuf,
    containers_dir: PathBuf,
    exits_dir: PathBuf,
    listener: UnixListener,
    sigfd: SignalFd,
    conns: Connections,
    /// The pod's containers by id.
    ctrs: HashMap<String, Ctr>,
    /// Execs whose answer is due once they exited.
    execs: ExecWaiters,
    /// Streaming execs, until their exit is told.
    exec_streams: StreamExecs,
    /// Where libcontainer sends new terminals' masters; opened on the
    /// first terminal.
    console: Option<ConsoleSocket>,
    /// Stops whose answer is due once their container exited.
    stops: StopWaiters,
    trash: Trash,
    /// The host's cgroup hierarchies, where libcontainer puts containers
    /// (read once: they do not move while the monitor lives; `None` on a
    /// host without cgroupfs, where there is nothing to update or remove).
    cgroups: Option<Layout>,
    /// A `Shutdown` came: exit once no container is alive, create no more.
    shutdown: bool,
    /// The one read buffer (pipes, connections).
    buf: Vec<u8>,
    timing: bool,
    /// Where libcontainer builds run (`mount_view`); `None`: the host's
    /// mount namespace as it is.
    mount_view: Option<mount_view::MountView>,
}

impl Monitor {
    /// Prepares the state dir, blocks SIGCHLD (delivered through a signalfd
    /// instead) and binds `monitor.sock`. Once this returns, clients can
    /// connect: their connections queue until `run` accepts them.
    pub fn new(pod_id: &str, state_dir: &Path) -> Result<Self, MonitorError> {
        let containers_dir = state_dir.join(CONTAINERS_DIR);
        let exits_dir = state_dir.join(EXITS_DIR);
        let trash_dir = state_dir.join(trash::TRASH_DIR);
        for d in [state_dir, &containers_dir, &exits_dir, &trash_dir] {
            fs::create_dir_all(d).map_err(error::setup(format!("create {}", d.display())))?;
        }
        let mut mask = SigSet::empty();
        mask.add(Signal::SIGCHLD);
        sigprocmask(SigmaskHow::SIG_BLOCK, Some(&mask), None)
            .map_err(error::setup("block SIGCHLD"))?;
        let sigfd = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
            .map_err(error::setup("signalfd"))?;
        let sock = state_dir.join(SOCKET_NAME);
        match fs::remove_file(&sock) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(error::setup(format!("remove stale {}", sock.display()))(e));
            }
            _ => {}
        }
        let listener =
            UnixListener::bind(&sock).map_err(error::setup(format!("bind {}", sock.display())))?;
        // Only berthd (root) talks to the monitor.
        fs::set_permissions(&sock, fs::Permissions::from_mode(0o600))
            .map_err(error::setup("chmod socket"))?;
        listener
            .set_nonblocking(true)
            .map_err(error::setup("nonblocking socket"))?;
        Ok(Self {
            pod_id: pod_id.to_string(),
            state_dir: state_dir.to_path_buf(),
            containers_dir,
            exits_dir,
            listener,
            sigfd,
            conns: Connections::default(),
            ctrs: HashMap::new(),
            execs: ExecWaiters::default(),
            exec_streams: StreamExecs::default(),
            console: None,
            stops: StopWaiters::default(),
            trash: Trash::open(trash_dir),
            cgroups: Layout::detect(),
            shutdown: false,
            buf: vec![0; READ_BUF],
            timing: std::env::var_os(TIMING_ENV).is_some_and(|v| v != "0"),
            mount_view: None,
        })
    }

    /// Runs libcontainer's builds in a mount namespace where `root` (a
    /// mount point holding every pod's mounts) holds only those of the pod
    /// dir `pod_dir` and of the container built (`mount_view`).
    pub fn set_mount_view(&mut self, root: &Path, pod_dir: &Path) -> Result<(), MonitorError> {
        let view = mount_view::MountView::new(root.to_path_buf(), pod_dir.to_path_buf())
            .map_err(error::setup("mount view".to_string()))?;
        self.mount_view = Some(view);
        Ok(())
    }

    /// `f` (a libcontainer build of the container at `bundle`) in the
    /// mount view, if there is one.
    fn in_mount_view<T>(&self, bundle: &Path, f: impl FnOnce() -> T) -> T {
        match &self.mount_view {
            Some(v) => v.run(&self.pod_id, bundle, f),
            None => f(),
        }
    }

    fn get(&self, id: &str) -> Result<&Ctr, OpError> {
        self.ctrs
            .get(id)
            .ok_or_else(|| OpError::NotFound(id.to_string()))
    }

    fn get_mut(&mut self, id: &str) -> Result<&mut Ctr, OpError> {
        self.ctrs
            .get_mut(id)
            .ok_or_else(|| OpError::NotFound(id.to_string()))
    }
}

/// A container's cgroup (its `linux.cgroupsPath`, as libcontainer resolved
/// it) on this host's hierarchies. A free function over the one field, so
/// callers can hold a container of `ctrs` mutably meanwhile.
fn cgroup_of(layout: &Option<Layout>, path: &Path) -> Option<Cgroup> {
    Cgroup::of(layout.as_ref()?, path.to_str()?)
}

/// Nanoseconds since the Unix epoch, as CRI reports times.
fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}
