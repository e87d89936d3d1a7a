//! One container of the pod, as the monitor holds it.

use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::rc::Rc;

use libcontainer::container::Container;

use super::attach::Attacher;
use crate::cri_log::CriLogWriter;
use crate::exec::ExecBase;
use berth_monitor_protocol::{ContainerState, ExitRecord, RestoreFrom, Status};

pub(super) struct Ctr {
    pub container: Container,
    pub pid: i32,
    pub status: Status,
    pub created_at: i64,
    pub started_at: i64,
    pub exit: Option<ExitRecord>,
    pub log: CriLogWriter,
    /// Read ends of stdout and stderr (with a terminal: a dup of its master,
    /// and no stderr); `None` once at EOF.
    pub pipes: [Option<OwnedFd>; 2],
    /// The terminal's master (`process.terminal`), for attaches.
    pub terminal: Option<OwnedFd>,
    /// Attaches may write to the container's stdin: created with `stdin`,
    /// and not yet closed by `stdin_once`.
    pub stdin: bool,
    /// Without a terminal: the write end of the container's stdin pipe
    /// (while `stdin`).
    pub stdin_pipe: Option<OwnedFd>,
    /// Close stdin once the first attach that used it ended.
    pub stdin_once: bool,
    /// Attached clients, fed with the output read from now on.
    pub attachers: Vec<Attacher>,
    pub cgroup_path: PathBuf,
    /// The process spec and seccomp filter execs reuse, read from the
    /// bundle on the first exec.
    pub exec_base: Option<Rc<ExecBase>>,
    /// The spec has OCI hooks (Berth's never do): delete through
    /// libcontainer, which runs the poststop ones.
    pub has_hooks: bool,
    /// Created to be restored from a checkpoint: its start has CRIU
    /// restore the checkpoint's tree in place of the waiting init.
    pub restore: Option<RestoreFrom>,
}

impl Ctr {
    pub fn state(&self, id: &str) -> ContainerState {
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

    /// Created or running: its init was not reaped yet.
    pub fn alive(&self) -> bool {
        self.exit.is_none()
    }

    /// Every output stream reached EOF.
    pub fn output_ended(&self) -> bool {
        self.pipes.iter().all(Option::is_none)
    }

    /// No more input: the stdin pipe closes (the container reads EOF once
    /// the attached clients' copies are closed too); later attaches get no
    /// stdin.
    pub fn close_stdin(&mut self) {
        self.stdin = false;
        self.stdin_pipe = None;
    }
}
