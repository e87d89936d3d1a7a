//! The monitor's event loop: one thread, one `poll(2)` over the listening
//! socket, the client connections, every container's stdout/stderr pipe and
//! a signalfd for SIGCHLD.
//!
//! Single-threaded on purpose: libcontainer's `build()` clones with raw
//! `clone3` and runs Rust code in the child, which hangs if another thread
//! held a lock at the time (ARCHITECTURE.md).

use std::collections::HashMap;
use std::fs::{self, File};
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use libcontainer::container::builder::ContainerBuilder;
use libcontainer::container::{Container, ContainerStatus};
use libcontainer::error::LibcontainerError;
use libcontainer::syscall::syscall::SyscallType;
use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, SigmaskHow, Signal, sigprocmask};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::socket::{MsgFlags, recv, send};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use crate::cri_log::{CriLogWriter, Stream};
use crate::daemon::MONITOR_LOG;
use crate::exec::{self, Exec, ExecSpec};
use crate::exit_record;
use crate::protocol::{
    CONTAINERS_DIR, ContainerState, EXITS_DIR, ExitRecord, Request, Response, SOCKET_NAME, Status,
};

/// Longest request line accepted; a client sending more is cut off so it
/// cannot grow the monitor's memory.
const MAX_REQUEST: usize = 64 * 1024;
/// Size of the one read buffer shared by all pipes and connections.
const READ_BUF: usize = 16 * 1024;
const OOM_SCORE_ADJ: &str = "/proc/self/oom_score_adj";
/// Set (to anything but 0) in the monitor's environment, it logs how long
/// each request took to its `monitor.log` (profiling; off by default).
pub const TIMING_ENV: &str = "BERTH_MONITOR_TIMING";

#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    #[error("monitor setup: {what}: {source}")]
    Setup {
        what: String,
        #[source]
        source: io::Error,
    },
}

fn setup<E: Into<io::Error>>(what: impl Into<String>) -> impl FnOnce(E) -> MonitorError {
    move |e| MonitorError::Setup {
        what: what.into(),
        source: e.into(),
    }
}

/// One container of the pod.
struct Ctr {
    container: Container,
    pid: i32,
    status: Status,
    created_at: i64,
    started_at: i64,
    exit: Option<ExitRecord>,
    log: CriLogWriter,
    /// Read ends of stdout and stderr; `None` once at EOF.
    pipes: [Option<OwnedFd>; 2],
    cgroup_path: PathBuf,
    /// The process spec and seccomp filter execs reuse, read from the
    /// bundle on the first exec.
    exec_base: Option<Rc<exec::ExecBase>>,
    /// The spec has OCI hooks (Berth's never do): delete through
    /// libcontainer, which runs the poststop ones.
    has_hooks: bool,
}

impl Ctr {
    fn state(&self, id: &str) -> ContainerState {
        ContainerState {
            id: id.to_string(),
            status: self.status,
            pid: self.pid,
            created_at: self.created_at,
            started_at: self.started_at,
            exit: self.exit.clone(),
            log_path: self.log.path().to_path_buf(),
        }
    }

    fn alive(&self) -> bool {
        self.exit.is_none()
    }
}

struct Conn {
    stream: UnixStream,
    buf: Vec<u8>,
    /// An exec answer is due on this connection: answers stay in request
    /// order, so it is neither polled nor served until then.
    waiting: bool,
}

/// A `Stop` whose answer is due once the container exited.
struct StopWait {
    conn: u64,
    id: String,
    /// Still in the graceful phase: SIGKILL at `deadline`.
    graceful: bool,
    deadline: Instant,
    kill_wait: Duration,
}

#[derive(Clone)]
enum Token {
    Listener,
    Signal,
    Conn(u64),
    Pipe(String, usize),
    /// stdout (0) or stderr (1) of the exec with this pid.
    ExecPipe(i32, usize),
}

pub struct Monitor {
    pod_id: String,
    state_dir: PathBuf,
    containers_dir: PathBuf,
    exits_dir: PathBuf,
    listener: UnixListener,
    sigfd: SignalFd,
    conns: HashMap<u64, Conn>,
    next_conn: u64,
    ctrs: HashMap<String, Ctr>,
    /// Running (or exited, not yet answered) execs by pid.
    execs: HashMap<i32, Exec>,
    exec_seq: u64,
    /// Stops waiting for their container to exit.
    stops: Vec<StopWait>,
    /// `<state-dir>/trash`: state of deleted containers, removed when idle.
    trash_dir: PathBuf,
    trash: Vec<PathBuf>,
    /// Mount points of the cgroup hierarchies libcontainer puts containers
    /// in (read once: they do not move while the monitor lives).
    cgroup_roots: Vec<PathBuf>,
    shutdown: bool,
    buf: Vec<u8>,
    timing: bool,
}

impl Monitor {
    /// Prepares the state dir, blocks SIGCHLD (delivered through a signalfd
    /// instead) and binds `monitor.sock`. Once this returns, clients can
    /// connect: their connections queue until `run` accepts them.
    pub fn new(pod_id: &str, state_dir: &Path) -> Result<Self, MonitorError> {
        let containers_dir = state_dir.join(CONTAINERS_DIR);
        let exits_dir = state_dir.join(EXITS_DIR);
        let trash_dir = state_dir.join(TRASH_DIR);
        for d in [state_dir, &containers_dir, &exits_dir, &trash_dir] {
            fs::create_dir_all(d).map_err(setup(format!("create {}", d.display())))?;
        }
        let mut mask = SigSet::empty();
        mask.add(Signal::SIGCHLD);
        sigprocmask(SigmaskHow::SIG_BLOCK, Some(&mask), None).map_err(setup("block SIGCHLD"))?;
        let sigfd = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
            .map_err(setup("signalfd"))?;
        let sock = state_dir.join(SOCKET_NAME);
        match fs::remove_file(&sock) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(setup(format!("remove stale {}", sock.display()))(e));
            }
            _ => {}
        }
        let listener =
            UnixListener::bind(&sock).map_err(setup(format!("bind {}", sock.display())))?;
        // Only berthd (root) talks to the monitor.
        fs::set_permissions(&sock, fs::Permissions::from_mode(0o600))
            .map_err(setup("chmod socket"))?;
        listener
            .set_nonblocking(true)
            .map_err(setup("nonblocking socket"))?;
        Ok(Self {
            pod_id: pod_id.to_string(),
            state_dir: state_dir.to_path_buf(),
            containers_dir,
            exits_dir,
            listener,
            sigfd,
            conns: HashMap::new(),
            next_conn: 0,
            ctrs: HashMap::new(),
            execs: HashMap::new(),
            exec_seq: 0,
            stops: Vec::new(),
            trash: fs::read_dir(&trash_dir)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path())
                .collect(),
            trash_dir,
            cgroup_roots: cgroup_roots(),
            shutdown: false,
            buf: vec![0; READ_BUF],
            timing: std::env::var_os(TIMING_ENV).is_some_and(|v| v != "0"),
        })
    }

    /// Serves until a `Shutdown` request and no container is alive.
    pub fn run(mut self) {
        loop {
            if self.shutdown && !self.ctrs.values().any(Ctr::alive) {
                break;
            }
            let ready = match self.poll_once() {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("berth-monitor {}: poll: {e}", self.pod_id);
                    continue;
                }
            };
            // Reap first, so that whatever is answered below already sees
            // every exit (and its record is on disk).
            let mut reap = false;
            for (token, flags) in &ready {
                match token {
                    Token::Signal => {
                        while let Ok(Some(_)) = self.sigfd.read_signal() {}
                        reap = true;
                    }
                    Token::Pipe(id, idx) => {
                        if let Some(c) = self.ctrs.get_mut(id) {
                            read_pipe(c, *idx, &mut self.buf, false, *flags);
                        }
                    }
                    Token::ExecPipe(pid, idx) => {
                        if let Some(e) = self.execs.get_mut(pid) {
                            read_exec_pipe(e, *idx, &mut self.buf, false);
                        }
                    }
                    _ => {}
                }
            }
            if reap {
                self.reap();
            }
            self.expire_execs();
            self.expire_stops();
            for (token, _) in ready {
                match token {
                    Token::Listener => self.accept(),
                    Token::Conn(n) => self.serve_conn(n),
                    _ => {}
                }
            }
            self.finish_execs();
            self.finish_stops();
        }
        let _ = fs::remove_file(self.state_dir.join(SOCKET_NAME));
    }

    fn poll_once(&mut self) -> io::Result<Vec<(Token, PollFlags)>> {
        let mut tokens = Vec::with_capacity(2 + self.conns.len() + 2 * self.ctrs.len());
        let mut fds = Vec::with_capacity(tokens.capacity());
        tokens.push(Token::Listener);
        fds.push(PollFd::new(self.listener.as_fd(), PollFlags::POLLIN));
        tokens.push(Token::Signal);
        fds.push(PollFd::new(self.sigfd.as_fd(), PollFlags::POLLIN));
        for (n, c) in self.conns.iter().filter(|(_, c)| !c.waiting) {
            tokens.push(Token::Conn(*n));
            fds.push(PollFd::new(c.stream.as_fd(), PollFlags::POLLIN));
        }
        for (id, c) in &self.ctrs {
            for (i, p) in c.pipes.iter().enumerate() {
                if let Some(p) = p {
                    tokens.push(Token::Pipe(id.clone(), i));
                    fds.push(PollFd::new(p.as_fd(), PollFlags::POLLIN));
                }
            }
        }
        for (pid, e) in &self.execs {
            for (i, p) in e.pipes.iter().enumerate() {
                if let Some(p) = p {
                    tokens.push(Token::ExecPipe(*pid, i));
                    fds.push(PollFd::new(p.as_fd(), PollFlags::POLLIN));
                }
            }
        }
        // Wake up for the nearest exec or stop deadline.
        let timeout = self
            .execs
            .values()
            .filter(|e| !e.timed_out)
            .filter_map(|e| e.deadline)
            .chain(self.stops.iter().map(|w| w.deadline))
            // Idle work: empty the trash once nothing happened for a moment.
            .chain((!self.trash.is_empty()).then(|| Instant::now() + TRASH_IDLE))
            .min()
            .map_or(PollTimeout::NONE, |d| {
                let ms = d
                    .saturating_duration_since(Instant::now())
                    .as_millis()
                    .clamp(1, i32::MAX as u128);
                PollTimeout::try_from(ms as i32).unwrap_or(PollTimeout::MAX)
            });
        match poll(&mut fds, timeout) {
            Ok(0) => {
                if let Some(p) = self.trash.pop() {
                    remove_any(&p);
                }
                return Ok(Vec::new());
            }
            Ok(_) => {}
            Err(Errno::EINTR) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        }
        Ok(tokens
            .into_iter()
            .zip(fds.iter())
            .filter_map(|(t, f)| f.revents().filter(|r| !r.is_empty()).map(|r| (t, r)))
            .collect())
    }

    fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    // Reads use MSG_DONTWAIT; writes block (bounded by the
                    // timeout) so a response is never half sent.
                    let _ = stream.set_write_timeout(Some(std::time::Duration::from_secs(5)));
                    let n = self.next_conn;
                    self.next_conn += 1;
                    self.conns.insert(
                        n,
                        Conn {
                            stream,
                            buf: Vec::new(),
                            waiting: false,
                        },
                    );
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    }

    fn serve_conn(&mut self, n: u64) {
        let Some(mut conn) = self.conns.remove(&n) else {
            return;
        };
        let mut open = true;
        match recv(
            conn.stream.as_raw_fd(),
            &mut self.buf,
            MsgFlags::MSG_DONTWAIT,
        ) {
            Ok(0) => open = false,
            Ok(k) => conn.buf.extend_from_slice(&self.buf[..k]),
            Err(Errno::EAGAIN | Errno::EINTR) => {}
            Err(_) => open = false,
        }
        while let Some(i) = conn.buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = conn.buf.drain(..=i).collect();
            let t0 = self.timing.then(Instant::now);
            let req = serde_json::from_slice::<Request>(&line[..i]);
            let op = match (&req, t0) {
                (Ok(r), Some(_)) => op_name(r),
                _ => String::new(),
            };
            let resp = match req {
                Ok(Request::Exec {
                    id,
                    args,
                    env,
                    cwd,
                    timeout_ms,
                    max_output,
                }) => {
                    let spec = ExecSpec {
                        args: &args,
                        env: &env,
                        cwd: cwd.as_deref(),
                    };
                    match self.start_exec(n, &id, &spec, timeout_ms, max_output) {
                        // Answered by `finish_execs` once it exited.
                        Ok(()) => {
                            conn.waiting = true;
                            break;
                        }
                        Err(message) => Response::Error { message },
                    }
                }
                Ok(Request::Stop {
                    id,
                    signal,
                    timeout_ms,
                    kill_wait_ms,
                }) => match self.start_stop(n, &id, signal, timeout_ms, kill_wait_ms) {
                    Ok(Some(resp)) => resp,
                    // Answered by `finish_stops` once it exited.
                    Ok(None) => {
                        conn.waiting = true;
                        break;
                    }
                    Err(message) => Response::Error { message },
                },
                Ok(req) => self.handle(req),
                Err(e) => Response::Error {
                    message: format!("bad request: {e}"),
                },
            };
            if let Some(t0) = t0 {
                eprintln!(
                    "berth-monitor {}: timing {op} {} us",
                    self.pod_id,
                    t0.elapsed().as_micros()
                );
            }
            if !reply(&conn.stream, &resp) {
                open = false;
                break;
            }
        }
        if conn.buf.len() > MAX_REQUEST {
            let _ = reply(
                &conn.stream,
                &Response::Error {
                    message: format!("request longer than {MAX_REQUEST} bytes"),
                },
            );
            open = false;
        }
        if open {
            self.conns.insert(n, conn);
        }
    }

    /// Answers one request. Every error names the container it concerns.
    pub fn handle(&mut self, req: Request) -> Response {
        let res = match req {
            Request::Create {
                id,
                bundle,
                log_path,
            } => self
                .create(&id, &bundle, &log_path)
                .map(|pid| Response::Created { pid }),
            Request::Start { id } => self.start(&id).map(|()| Response::Ok),
            Request::StartAndReport { id } => self
                .start(&id)
                .and_then(|()| self.get(&id).map(|c| Response::State(c.state(&id)))),
            Request::Kill { id, signal, all } => self.kill(&id, signal, all).map(|()| Response::Ok),
            Request::State { id } => {
                self.reap();
                self.get(&id).map(|c| Response::State(c.state(&id)))
            }
            Request::List => {
                self.reap();
                let mut containers: Vec<_> = self.ctrs.iter().map(|(id, c)| c.state(id)).collect();
                containers.sort_by(|a, b| a.id.cmp(&b.id));
                Ok(Response::List { containers })
            }
            Request::Delete { id, force } => self.delete(&id, force).map(|()| Response::Ok),
            Request::ReopenLog { id } => self.ctrs.get_mut(&id).map_or_else(
                || Err(not_found(&id)),
                |c| {
                    c.log
                        .reopen()
                        .map(|()| Response::Ok)
                        .map_err(|e| format!("reopen log of container {id}: {e}"))
                },
            ),
            Request::Exec { id, .. } => Err(format!(
                "exec in container {id}: only served on a connection"
            )),
            Request::Stop { id, .. } => {
                Err(format!("stop container {id}: only served on a connection"))
            }
            Request::Update { id, resources } => self.update(&id, resources).map(|()| Response::Ok),
            Request::Shutdown => {
                self.shutdown = true;
                Ok(Response::Ok)
            }
        };
        res.unwrap_or_else(|message| Response::Error { message })
    }

    /// The end of `monitor.log` now: what a libcontainer call logs after
    /// this explains its failure ([`explained`]).
    fn log_mark(&self) -> crate::log::Mark {
        crate::log::Mark::at_end(&self.state_dir.join(MONITOR_LOG))
    }

    fn get(&self, id: &str) -> Result<&Ctr, String> {
        self.ctrs.get(id).ok_or_else(|| not_found(id))
    }

    fn create(&mut self, id: &str, bundle: &Path, log_path: &Path) -> Result<i32, String> {
        if self.shutdown {
            return Err(format!("create container {id}: monitor is shutting down"));
        }
        if self.ctrs.contains_key(id) {
            return Err(format!("create container {id}: already exists"));
        }
        let fail = |what: &str, e: &dyn std::error::Error| {
            format!("create container {id}: {what}: {}", chain(e))
        };
        let t0 = Instant::now();
        let log = CriLogWriter::open(log_path).map_err(|e| fail("open log", &e))?;
        let (out_r, out_w) = stdio_pipe().map_err(|e| fail("pipe", &e))?;
        let (err_r, err_w) = stdio_pipe().map_err(|e| fail("pipe", &e))?;
        let devnull = File::open("/dev/null").map_err(|e| fail("open /dev/null", &e))?;
        let state_dir = self.containers_dir.join(id);
        let existed = state_dir.exists();

        let builder = ContainerBuilder::new(id.to_string(), SyscallType::default())
            .validate_id()
            .and_then(|b| b.with_root_path(&self.containers_dir))
            .map_err(|e| fail("libcontainer", &e))?
            .with_stdin(devnull)
            .with_stdout(out_w)
            .with_stderr(err_w)
            .as_init(bundle)
            .with_systemd(false)
            .with_detach(true);
        // The container's processes inherit the signal mask through clone and
        // exec: SIGCHLD must not stay blocked in them. A SIGCHLD that arrives
        // meanwhile is lost, hence the reap below.
        // libcontainer writes the spec's oomScoreAdj to the *caller's*
        // /proc/self/oom_score_adj (children inherit it); put the monitor's
        // own value back so it does not become the pod's first OOM victim.
        let own_oom = fs::read_to_string(OOM_SCORE_ADJ).ok();
        let mark = self.log_mark();
        let t1 = Instant::now();
        let built = with_sigchld_unblocked(|| builder.build());
        let t2 = Instant::now();
        if let Some(v) = &own_oom {
            let _ = fs::write(OOM_SCORE_ADJ, v.trim());
        }
        if self.timing {
            eprintln!(
                "berth-monitor {}: timing create {id}: prepare {} us, libcontainer build {} us",
                self.pod_id,
                (t1 - t0).as_micros(),
                (t2 - t1).as_micros()
            );
        }
        self.reap();
        let container = match built {
            Ok(c) => c,
            Err(e) => {
                // libcontainer cleans up after a failed clone, not after a
                // failure before it (bad spec): do not leave a state dir that
                // would make a retry fail with "exists".
                if !existed {
                    let _ = fs::remove_dir_all(&state_dir);
                }
                return Err(explained(fail("libcontainer", &e), &mark));
            }
        };
        let pid = container.pid().map_or(0, |p| p.as_raw());
        let (cgroup_path, has_hooks) = container
            .spec()
            .map(|c| (c.cgroup_path, c.hooks.is_some()))
            .unwrap_or_default();
        // A record of an earlier container of the same id is stale now.
        let _ = exit_record::remove(&self.exits_dir, id);
        self.ctrs.insert(
            id.to_string(),
            Ctr {
                container,
                pid,
                status: Status::Created,
                created_at: now_ns(),
                started_at: 0,
                exit: None,
                log,
                pipes: [Some(out_r), Some(err_r)],
                cgroup_path,
                exec_base: None,
                has_hooks,
            },
        );
        Ok(pid)
    }

    fn start(&mut self, id: &str) -> Result<(), String> {
        self.reap();
        let c = self.ctrs.get_mut(id).ok_or_else(|| not_found(id))?;
        if c.status != Status::Created {
            return Err(format!(
                "start container {id}: it is {:?}, not created",
                c.status
            ));
        }
        c.container
            .start()
            .map_err(|e| format!("start container {id}: {}", chain(&e)))?;
        c.status = Status::Running;
        c.started_at = now_ns();
        Ok(())
    }

    fn kill(&mut self, id: &str, signal: i32, all: bool) -> Result<(), String> {
        self.reap();
        let c = self.ctrs.get_mut(id).ok_or_else(|| not_found(id))?;
        if !c.alive() {
            return Ok(());
        }
        // Straight to the init when that is all libcontainer would do (one
        // process), or when it takes every other process along: SIGKILL of
        // the init of the container's own PID namespace kills the namespace.
        // libcontainer's path (freeze the cgroup, list, signal, thaw) parses
        // /proc/self/mountinfo once per controller first. The init is our
        // child and not reaped yet, so its pid cannot have been reused.
        if !all || (signal == libc::SIGKILL && owns_pid_ns(c.pid)) {
            let sig = Signal::try_from(signal)
                .map_err(|e| format!("kill container {id}: signal {signal}: {e}"))?;
            return match nix::sys::signal::kill(Pid::from_raw(c.pid), sig) {
                Ok(()) | Err(Errno::ESRCH) => Ok(()),
                Err(e) => Err(format!("kill container {id}: {e}")),
            };
        }
        let sig = libcontainer::signal::Signal::try_from(signal)
            .map_err(|e| format!("kill container {id}: signal {signal}: {e}"))?;
        match c.container.kill(sig, all) {
            Ok(()) => Ok(()),
            // Exited but not reaped yet: the same as exited.
            Err(LibcontainerError::IncorrectStatus(ContainerStatus::Stopped)) => Ok(()),
            Err(e) => Err(format!("kill container {id}: {}", chain(&e))),
        }
    }

    fn delete(&mut self, id: &str, force: bool) -> Result<(), String> {
        self.reap();
        let c = self.ctrs.get_mut(id).ok_or_else(|| not_found(id))?;
        if c.alive() {
            if c.status == Status::Running && !force {
                return Err(format!(
                    "delete container {id}: it is running (stop it first or force)"
                ));
            }
            // A created or force-deleted container dies now; wait for it so
            // its cgroup is empty when libcontainer removes it.
            let sig = libcontainer::signal::Signal::try_from(libc::SIGKILL)
                .map_err(|e| format!("delete container {id}: {e}"))?;
            // IncorrectStatus: already dead, only not reaped yet.
            if let Err(e) = c.container.kill(sig, true)
                && !matches!(e, LibcontainerError::IncorrectStatus(_))
            {
                return Err(format!("delete container {id}: kill: {e}"));
            }
            let pid = Pid::from_raw(c.pid);
            loop {
                match waitpid(pid, None) {
                    Err(Errno::EINTR) => continue,
                    Ok(WaitStatus::Exited(..) | WaitStatus::Signaled(..)) | Err(_) => break,
                    Ok(_) => continue,
                }
            }
        }
        if c.has_hooks {
            c.container
                .delete(true)
                .map_err(|e| format!("delete container {id}: {}", chain(&e)))?;
            exit_record::remove(&self.exits_dir, id)
                .map_err(|e| format!("delete container {id}: exit record: {e}"))?;
        } else {
            // What libcontainer's delete does for a dead container without
            // hooks, minus its mountinfo parsing per controller, and with
            // the file deletions (synchronous discards on some disks) moved
            // off the request: the state dir and exit record are renamed
            // into the trash, which the loop empties when idle.
            for dir in self
                .cgroup_roots
                .iter()
                .map(|r| r.join(rel(&c.cgroup_path)))
            {
                remove_cgroup(&dir).map_err(|e| {
                    format!(
                        "delete container {id}: remove cgroup {}: {e}",
                        dir.display()
                    )
                })?;
            }
            for (from, name) in [
                (self.containers_dir.join(id), id.to_string()),
                (
                    exit_record::path(&self.exits_dir, id),
                    format!("{id}.exit.json"),
                ),
            ] {
                let to = self.trash_dir.join(name);
                match fs::rename(&from, &to) {
                    Ok(()) => self.trash.push(to),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(_) => remove_any(&from),
                }
            }
        }
        if let Some(mut c) = self.ctrs.remove(id) {
            for i in 0..2 {
                read_pipe(&mut c, i, &mut self.buf, true, PollFlags::POLLIN);
            }
        }
        Ok(())
    }

    /// Starts an exec for connection `conn`; its answer is deferred.
    fn start_exec(
        &mut self,
        conn: u64,
        id: &str,
        spec: &ExecSpec<'_>,
        timeout_ms: u64,
        max_output: usize,
    ) -> Result<(), String> {
        self.reap();
        let c = self.ctrs.get_mut(id).ok_or_else(|| not_found(id))?;
        if c.status != Status::Running || !c.alive() {
            return Err(format!(
                "exec in container {id}: it is {:?}, not running",
                c.status
            ));
        }
        let base = match &c.exec_base {
            Some(b) => b.clone(),
            None => {
                let b = Rc::new(exec::ExecBase::load(id, c.container.bundle())?);
                c.exec_base = Some(b.clone());
                b
            }
        };
        let (out_r, out_w) = stdio_pipe().map_err(|e| format!("exec in container {id}: {e}"))?;
        let (err_r, err_w) = stdio_pipe().map_err(|e| format!("exec in container {id}: {e}"))?;
        self.exec_seq += 1;
        let started = Instant::now();
        // As for create: SIGCHLD unblocked in the child, the monitor's own
        // oom_score_adj restored after libcontainer wrote the spec's.
        let own_oom = fs::read_to_string(OOM_SCORE_ADJ).ok();
        let mark = self.log_mark();
        let spawned = with_sigchld_unblocked(|| {
            exec::spawn(&self.containers_dir, id, &base, spec, [out_w, err_w])
        });
        if let Some(v) = &own_oom {
            let _ = fs::write(OOM_SCORE_ADJ, v.trim());
        }
        let pid = spawned.map_err(|e| explained(e, &mark))?;
        self.execs.insert(
            pid,
            Exec {
                ctr: id.to_string(),
                conn,
                pid,
                pipes: [Some(out_r), Some(err_r)],
                out: [Vec::new(), Vec::new()],
                max_output,
                truncated: false,
                deadline: (timeout_ms > 0).then(|| started + Duration::from_millis(timeout_ms)),
                timed_out: false,
                exit_code: None,
            },
        );
        // A SIGCHLD of a fast exec may have been lost while unblocked.
        self.reap();
        Ok(())
    }

    /// Starts a `Stop`; `Ok(None)`: the answer is deferred until it exited.
    fn start_stop(
        &mut self,
        conn: u64,
        id: &str,
        signal: i32,
        timeout_ms: u64,
        kill_wait_ms: u64,
    ) -> Result<Option<Response>, String> {
        self.reap();
        let c = self.get(id)?;
        if !c.alive() {
            return Ok(Some(Response::State(c.state(id))));
        }
        // A never-started container has nothing to shut down gracefully.
        let graceful = timeout_ms > 0 && c.status == Status::Running;
        let kill_wait = Duration::from_millis(kill_wait_ms);
        let deadline = if graceful {
            self.kill(id, signal, false)?;
            Instant::now() + Duration::from_millis(timeout_ms)
        } else {
            self.kill(id, libc::SIGKILL, true)?;
            Instant::now() + kill_wait
        };
        self.stops.push(StopWait {
            conn,
            id: id.to_string(),
            graceful,
            deadline,
            kill_wait,
        });
        Ok(None)
    }

    /// SIGKILLs every stopping container past its graceful deadline.
    fn expire_stops(&mut self) {
        let now = Instant::now();
        let mut due = Vec::new();
        for w in self
            .stops
            .iter_mut()
            .filter(|w| w.graceful && w.deadline <= now)
        {
            w.graceful = false;
            w.deadline = now + w.kill_wait;
            due.push(w.id.clone());
        }
        for id in due {
            if let Err(e) = self.kill(&id, libc::SIGKILL, true) {
                eprintln!("berth-monitor {}: {e}", self.pod_id);
            }
        }
    }

    /// Answers every stop whose container exited (or whose SIGKILL wait
    /// ran out: the state then says it is still alive).
    fn finish_stops(&mut self) {
        let now = Instant::now();
        let mut i = 0;
        while i < self.stops.len() {
            let w = &self.stops[i];
            let resp = match self.ctrs.get(&w.id) {
                None => Some(Response::Error {
                    message: not_found(&w.id),
                }),
                Some(c) if !c.alive() || (!w.graceful && w.deadline <= now) => {
                    Some(Response::State(c.state(&w.id)))
                }
                Some(_) => None,
            };
            match resp {
                Some(resp) => {
                    let w = self.stops.swap_remove(i);
                    self.answer_deferred(w.conn, &resp);
                }
                None => i += 1,
            }
        }
    }

    /// Sends a deferred answer on connection `n`, then serves what queued
    /// behind it. A client that went away is dropped silently.
    fn answer_deferred(&mut self, n: u64, resp: &Response) -> bool {
        let Some(mut conn) = self.conns.remove(&n) else {
            return false;
        };
        conn.waiting = false;
        if reply(&conn.stream, resp) {
            let pending = conn.buf.contains(&b'\n');
            self.conns.insert(n, conn);
            // Requests that queued behind the deferred one.
            if pending {
                self.serve_conn(n);
            }
        }
        true
    }

    /// SIGKILLs every exec past its deadline (answered once reaped).
    fn expire_execs(&mut self) {
        let now = Instant::now();
        for e in self.execs.values_mut() {
            if e.exit_code.is_none() && !e.timed_out && e.deadline.is_some_and(|d| d <= now) {
                e.timed_out = true;
                let _ = nix::sys::signal::kill(Pid::from_raw(e.pid), Signal::SIGKILL);
            }
        }
    }

    /// Answers every exec that was reaped. Output still in the pipes is read
    /// now; a background child keeping a pipe open does not delay the answer.
    fn finish_execs(&mut self) {
        let done: Vec<i32> = self
            .execs
            .iter()
            .filter(|(_, e)| e.exit_code.is_some())
            .map(|(p, _)| *p)
            .collect();
        for pid in done {
            let Some(mut e) = self.execs.remove(&pid) else {
                continue;
            };
            for i in 0..2 {
                read_exec_pipe(&mut e, i, &mut self.buf, true);
            }
            let [stdout, stderr] = std::mem::take(&mut e.out);
            let resp = Response::Exec {
                exit_code: e.exit_code.unwrap_or(-1),
                stdout,
                stderr,
                truncated: e.truncated,
                timed_out: e.timed_out,
            };
            if !self.answer_deferred(e.conn, &resp) {
                eprintln!(
                    "berth-monitor {}: exec {pid} in {}: client gone",
                    self.pod_id, e.ctr
                );
            }
        }
    }

    /// UpdateContainerResources on the live cgroup.
    fn update(&mut self, id: &str, resources: serde_json::Value) -> Result<(), String> {
        self.reap();
        let c = self.get(id)?;
        if !c.alive() {
            return Err(format!("update container {id}: it has exited"));
        }
        let res: libcontainer::oci_spec::runtime::LinuxResources =
            serde_json::from_value(resources)
                .map_err(|e| format!("update container {id}: bad resources: {e}"))?;
        exec::update_cgroup(&c.cgroup_path, &res).map_err(|e| format!("update container {id}: {e}"))
    }

    /// Collects every exited child without blocking. The monitor is the only
    /// waiter in its process, so `waitpid(-1)` steals nobody's status; it
    /// also reaps orphans reparented to it as subreaper.
    fn reap(&mut self) {
        loop {
            let (pid, code, signal) = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => (pid, code, 0),
                Ok(WaitStatus::Signaled(pid, sig, _)) => (pid, 128 + sig as i32, sig as i32),
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return,
                Err(Errno::EINTR) | Ok(_) => continue,
                Err(e) => {
                    eprintln!("berth-monitor {}: waitpid: {e}", self.pod_id);
                    return;
                }
            };
            self.on_exit(pid.as_raw(), code, signal);
        }
    }

    fn on_exit(&mut self, pid: i32, exit_code: i32, signal: i32) {
        if let Some(e) = self.execs.get_mut(&pid) {
            e.exit_code = Some(exit_code);
            return;
        }
        let Some((id, c)) = self
            .ctrs
            .iter_mut()
            .find(|(_, c)| c.pid == pid && c.alive())
        else {
            return; // an orphan we adopted as subreaper
        };
        // In its own PID namespace every process of the container is gone
        // once init is reaped: what they wrote is in the pipes now.
        for i in 0..2 {
            read_pipe(c, i, &mut self.buf, true, PollFlags::POLLIN);
        }
        let rec = ExitRecord {
            exit_code,
            signal,
            finished_at: now_ns(),
            oom_killed: oom_killed(&c.cgroup_path),
        };
        if let Err(e) = exit_record::write(&self.exits_dir, id, &rec) {
            eprintln!("berth-monitor {}: exit record of {id}: {e}", self.pod_id);
        }
        c.status = Status::Exited;
        c.exit = Some(rec);
    }
}

/// `message` with libcontainer's own explanation of the failure appended:
/// the first ERROR event it logged since `mark` (in this process or in the
/// intermediate or init process it forked), which names the step that
/// failed where its returned error often says only "failed syscall".
fn explained(mut message: String, mark: &crate::log::Mark) -> String {
    if let Some(why) = crate::log::explanation(mark) {
        message.push_str(" (libcontainer log: ");
        message.push_str(&why);
        message.push(')');
    }
    message
}

/// An error with its sources: libcontainer's top-level messages alone are
/// often just "io error".
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        let msg = inner.to_string();
        if !s.ends_with(&msg) {
            s.push_str(": ");
            s.push_str(&msg);
        }
        src = inner.source();
    }
    s
}

fn not_found(id: &str) -> String {
    format!("container {id} not found")
}

/// Writes one response line. `MSG_NOSIGNAL`: a client that went away must not
/// kill the monitor with SIGPIPE (which stays at its default, see `daemon`).
fn reply(stream: &UnixStream, resp: &Response) -> bool {
    let mut out = match serde_json::to_vec(resp) {
        Ok(v) => v,
        Err(_) => return false,
    };
    out.push(b'\n');
    let mut sent = 0;
    while sent < out.len() {
        match send(stream.as_raw_fd(), &out[sent..], MsgFlags::MSG_NOSIGNAL) {
            Ok(n) => sent += n,
            Err(Errno::EINTR) => {}
            Err(_) => return false,
        }
    }
    true
}

/// Reads what pipe `idx` of `c` holds into its log; `drain` reads until the
/// pipe is empty (at exit), otherwise one read per wakeup keeps the loop fair.
fn read_pipe(c: &mut Ctr, idx: usize, buf: &mut [u8], drain: bool, flags: PollFlags) {
    let stream = if idx == 0 {
        Stream::Stdout
    } else {
        Stream::Stderr
    };
    loop {
        let Some(fd) = &c.pipes[idx] else { return };
        match nix::unistd::read(fd, buf) {
            Ok(0) => {
                c.pipes[idx] = None;
                let _ = c.log.finish(stream);
                return;
            }
            Ok(n) => {
                // Write errors (disk full) are counted by the writer; keep
                // draining so the container never blocks on a full pipe.
                let _ = c.log.write(stream, &buf[..n]);
                if !drain {
                    return;
                }
            }
            Err(Errno::EINTR) => {}
            Err(Errno::EAGAIN) => {
                if flags.contains(PollFlags::POLLHUP) && !flags.contains(PollFlags::POLLIN) {
                    c.pipes[idx] = None;
                    let _ = c.log.finish(stream);
                }
                return;
            }
            Err(_) => {
                c.pipes[idx] = None;
                let _ = c.log.finish(stream);
                return;
            }
        }
    }
}

/// Reads what pipe `idx` of an exec holds into its buffers (capped);
/// `drain` reads until the pipe is empty.
fn read_exec_pipe(e: &mut Exec, idx: usize, buf: &mut [u8], drain: bool) {
    loop {
        let Some(fd) = &e.pipes[idx] else { return };
        match nix::unistd::read(fd, buf) {
            Ok(0) => {
                e.pipes[idx] = None;
                return;
            }
            Ok(n) => {
                e.push(idx, &buf[..n]);
                if !drain {
                    return;
                }
            }
            Err(Errno::EINTR) => {}
            Err(Errno::EAGAIN) => return,
            Err(_) => {
                e.pipes[idx] = None;
                return;
            }
        }
    }
}

/// A pipe for the container's stdout or stderr: both ends close-on-exec in
/// the monitor (libcontainer dup2s the write end onto 1/2 in the init), the
/// read end non-blocking for the poll loop, the write end blocking as
/// programs expect.
fn stdio_pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
    fcntl(&r, FcntlArg::F_SETFL(OFlag::O_NONBLOCK))?;
    Ok((r, w))
}

fn with_sigchld_unblocked<T>(f: impl FnOnce() -> T) -> T {
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGCHLD);
    let _ = sigprocmask(SigmaskHow::SIG_UNBLOCK, Some(&mask), None);
    let out = f();
    let _ = sigprocmask(SigmaskHow::SIG_BLOCK, Some(&mask), None);
    out
}

/// Whether the kernel OOM-killed a process of the container's cgroup: the
/// `oom_kill` counter of cgroup v1 `memory.oom_control` or v2
/// `memory.events`, read before the cgroup is removed.
fn oom_killed(cgroup: &Path) -> bool {
    let rel = cgroup.strip_prefix("/").unwrap_or(cgroup);
    let candidates = [
        Path::new("/sys/fs/cgroup/memory")
            .join(rel)
            .join("memory.oom_control"),
        Path::new("/sys/fs/cgroup").join(rel).join("memory.events"),
    ];
    candidates.iter().any(|p| {
        fs::read_to_string(p).is_ok_and(|s| {
            s.lines().any(|l| {
                l.strip_prefix("oom_kill ")
                    .and_then(|n| n.trim().parse::<u64>().ok())
                    .is_some_and(|n| n > 0)
            })
        })
    })
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

/// Directory (inside the state dir) of deleted containers' leftovers.
const TRASH_DIR: &str = "trash";
/// Idle time after which the loop removes one trash entry.
const TRASH_IDLE: Duration = Duration::from_millis(20);

fn remove_any(p: &Path) {
    let r = if p.is_dir() {
        fs::remove_dir_all(p)
    } else {
        fs::remove_file(p)
    };
    if let Err(e) = r
        && e.kind() != io::ErrorKind::NotFound
    {
        eprintln!("berth-monitor: remove {}: {e}", p.display());
    }
}

fn rel(p: &Path) -> &Path {
    p.strip_prefix("/").unwrap_or(p)
}

/// Where libcontainer creates container cgroups: the cgroup2 mount on a
/// unified host, else every cgroup v1 hierarchy that has a controller (a
/// hybrid host is driven as v1), from /proc/self/mountinfo.
fn cgroup_roots() -> Vec<PathBuf> {
    let base = Path::new("/sys/fs/cgroup");
    if base.join("cgroup.controllers").exists() {
        return vec![base.to_path_buf()];
    }
    // The v1 controllers the kernel has: the first column of /proc/cgroups.
    let cgroups = fs::read_to_string("/proc/cgroups").unwrap_or_default();
    let controllers: Vec<&str> = cgroups
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    berth_mountinfo::read_self()
        .unwrap_or_default()
        .into_iter()
        .filter(|m| {
            m.fstype == "cgroup" && m.super_options.split(',').any(|o| controllers.contains(&o))
        })
        .map(|m| m.mount_point)
        .collect()
}

/// Kills what is left in a container's cgroup (`linux.cgroupsPath`) and
/// removes it from every hierarchy: for berthd, when the container's
/// monitor is gone and a create cut short by a crash left it behind.
pub fn remove_container_cgroups(cgroups_path: &str) -> io::Result<()> {
    let rel = rel(Path::new(cgroups_path));
    if rel.as_os_str().is_empty() || rel.components().any(|c| c.as_os_str() == "..") {
        return Ok(());
    }
    for root in cgroup_roots() {
        remove_cgroup(&root.join(rel))?;
    }
    Ok(())
}

/// Removes a container's (empty, once its processes are reaped) cgroup
/// dir; anything still in it is SIGKILLed first. A process exiting right
/// now can keep it busy for a moment: retried for up to ~0.3 s, like
/// libcgroups.
fn remove_cgroup(dir: &Path) -> io::Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    if let Ok(procs) = fs::read_to_string(dir.join("cgroup.procs")) {
        for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
            let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
    let mut delays = [1u64, 2, 5, 10, 20, 50, 100, 100].into_iter();
    loop {
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => match delays.next() {
                Some(ms) => std::thread::sleep(Duration::from_millis(ms)),
                None => return Err(e),
            },
        }
    }
}

/// `op id` of a request, for the timing log.
fn op_name(req: &Request) -> String {
    let (op, id) = match req {
        Request::Create { id, .. } => ("create", id.as_str()),
        Request::Start { id } => ("start", id.as_str()),
        Request::StartAndReport { id } => ("start", id.as_str()),
        Request::Stop { id, .. } => ("stop", id.as_str()),
        Request::Kill { id, .. } => ("kill", id.as_str()),
        Request::State { id } => ("state", id.as_str()),
        Request::List => ("list", ""),
        Request::Delete { id, .. } => ("delete", id.as_str()),
        Request::ReopenLog { id } => ("reopen_log", id.as_str()),
        Request::Exec { id, .. } => ("exec", id.as_str()),
        Request::Update { id, .. } => ("update", id.as_str()),
        Request::Shutdown => ("shutdown", ""),
    };
    format!("{op} {id}")
}

/// Whether `pid` is the init (pid 1) of a PID namespace below ours: its
/// `NSpid` in /proc/PID/status lists more than one pid, the last being 1.
fn owns_pid_ns(pid: i32) -> bool {
    let Ok(status) = fs::read_to_string(format!("/proc/{pid}/status")) else {
        return false;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))
        .is_some_and(|v| {
            let pids: Vec<&str> = v.split_whitespace().collect();
            pids.len() > 1 && pids.last() == Some(&"1")
        })
}
