//! Create: libcontainer builds the container (its init waits for start),
//! stdout/stderr go through pipes the loop reads into the CRI log; or, with
//! `process.terminal`, through a pseudo-terminal whose master the monitor
//! holds and reads as stdout. With `stdin` the monitor keeps the write end
//! of a pipe on the container's stdin, for attaches.

use std::fs::{self, File};
use std::os::fd::OwnedFd;
use std::path::Path;
use std::time::Instant;

use libcontainer::container::Container;
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::syscall::syscall::SyscallType;
use nix::sys::wait::waitpid;
use nix::unistd::Pid;

use super::container::Ctr;
use super::error::{Op, OpError};
use super::libcontainer_call::{OwnOomScore, chain, explained, with_sigchld_unblocked};
use super::stdio::{stdin_pipe, stdio_pipe};
use super::terminal;
use super::{Monitor, now_ns};
use crate::cri_log::CriLogWriter;
use crate::exit_record;
use berth_monitor_protocol::{RestoreFrom, Status};

impl Monitor {
    /// Creates container `id` from `bundle`; returns its init's pid.
    pub(super) fn create(
        &mut self,
        id: &str,
        bundle: &Path,
        log_path: &Path,
        stdio: CreateStdin,
        restore: Option<RestoreFrom>,
    ) -> Result<i32, OpError> {
        if self.shutdown {
            return Err(Op::Create.invalid_state(id, "monitor is shutting down"));
        }
        if restore.is_some() && terminal::wants_terminal(bundle) {
            return Err(Op::Create.invalid_argument(
                id,
                "a container with a terminal cannot be restored from a checkpoint",
            ));
        }
        if self.ctrs.contains_key(id) {
            return Err(OpError::AlreadyExists {
                op: Op::Create,
                id: id.to_string(),
            });
        }
        let fail = |what: &str, e: &dyn std::error::Error| format!("{what}: {}", chain(e));
        let t0 = Instant::now();
        let log = CriLogWriter::open(log_path)
            .map_err(|e| Op::Create.failed(id, fail("open log", &e)))?;
        let state_dir = self.containers_dir.join(id);
        let existed = state_dir.exists();

        let builder = ContainerBuilder::new(id.to_string(), SyscallType::default())
            .validate_id()
            .and_then(|b| b.with_root_path(&self.containers_dir))
            .map_err(|e| Op::Create.failed(id, fail("libcontainer", &e)))?;
        // With a terminal, libcontainer makes it the init's stdio.
        let terminal = terminal::wants_terminal(bundle);
        let mut pipes = [None, None];
        let mut stdin_w = None;
        let builder = if terminal {
            let console = self
                .console_for_build()
                .map_err(|e| Op::Create.failed(id, fail("console socket", &e)))?;
            builder.with_console_socket(Some(console))
        } else {
            let pipe_failed = |e: std::io::Error| Op::Create.failed(id, fail("pipe", &e));
            let (out_r, out_w) = stdio_pipe().map_err(pipe_failed)?;
            let (err_r, err_w) = stdio_pipe().map_err(pipe_failed)?;
            pipes = [Some(out_r), Some(err_r)];
            let stdin_r: OwnedFd = if stdio.stdin {
                let (r, w) = stdin_pipe().map_err(pipe_failed)?;
                stdin_w = Some(w);
                r
            } else {
                File::open("/dev/null")
                    .map_err(|e| Op::Create.failed(id, fail("open /dev/null", &e)))?
                    .into()
            };
            builder
                .with_stdin(stdin_r)
                .with_stdout(out_w)
                .with_stderr(err_w)
        };
        let builder = builder
            .as_init(bundle)
            .with_systemd(false)
            .with_detach(true);
        let own_oom = OwnOomScore::save();
        let mark = self.log_mark();
        let t1 = Instant::now();
        let built = with_sigchld_unblocked(|| self.in_mount_view(bundle, || builder.build()));
        let t2 = Instant::now();
        own_oom.restore();
        if self.timing {
            eprintln!(
                "berth-monitor {}: timing create {id}: prepare {} us, libcontainer build {} us",
                self.pod_id,
                (t1 - t0).as_micros(),
                (t2 - t1).as_micros()
            );
        }
        // A SIGCHLD that arrived while unblocked was lost.
        self.reap();
        let mut container = match built {
            Ok(c) => c,
            Err(e) => {
                // libcontainer cleans up after a failed clone, not after a
                // failure before it (bad spec): do not leave a state dir that
                // would make a retry fail with "exists".
                if !existed {
                    let _ = fs::remove_dir_all(&state_dir);
                }
                return Err(Op::Create.failed(id, explained(fail("libcontainer", &e), &mark)));
            }
        };
        let pid = container.pid().map_or(0, |p| p.as_raw());
        let mut master = None;
        if terminal {
            let got = self.received_master().and_then(|m| Ok((m.try_clone()?, m)));
            match got {
                Ok((read, m)) => {
                    pipes[0] = Some(read);
                    master = Some(m);
                }
                Err(e) => {
                    discard_created(&mut container, pid);
                    return Err(Op::Create.failed(id, fail("terminal", &e)));
                }
            }
        }
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
                pipes,
                terminal: master,
                stdin: stdio.stdin,
                stdin_pipe: stdin_w,
                stdin_once: stdio.stdin_once,
                attachers: Vec::new(),
                cgroup_path,
                exec_base: None,
                has_hooks,
                restore,
            },
        );
        Ok(pid)
    }
}

/// What a container's stdin is (`Request::Create`).
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct CreateStdin {
    /// Attaches may write to it: a pipe the monitor holds the write end of
    /// (with a terminal: the terminal itself). Otherwise /dev/null.
    pub stdin: bool,
    /// Closed once the first attach that used it ended.
    pub stdin_once: bool,
}

/// Undoes a create that succeeded in libcontainer but cannot be used (its
/// terminal never arrived): kill and reap the waiting init, remove its state.
fn discard_created(container: &mut Container, pid: i32) {
    if let Ok(sig) = libcontainer::signal::Signal::try_from(libc::SIGKILL) {
        let _ = container.kill(sig, true);
    }
    if pid > 0 {
        let _ = waitpid(Pid::from_raw(pid), None);
    }
    let _ = container.delete(true);
}
