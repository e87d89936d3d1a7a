//! One container of the pod, as the monitor holds it.

use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::rc::Rc;

use libcontainer::container::Container;

use crate::cri_log::CriLogWriter;
use crate::exec::ExecBase;
use berth_monitor_protocol::{ContainerState, ExitRecord, Status};

pub(super) struct Ctr {
    pub container: Container,
    pub pid: i32,
    pub status: Status,
    pub created_at: i64,
    pub started_at: i64,
    pub exit: Option<ExitRecord>,
    pub log: CriLogWriter,
    /// Read ends of stdout and stderr; `None` once at EOF.
    pub pipes: [Option<OwnedFd>; 2],
    pub cgroup_path: PathBuf,
    /// The process spec and seccomp filter execs reuse, read from the
    /// bundle on the first exec.
    pub exec_base: Option<Rc<ExecBase>>,
    /// The spec has OCI hooks (Berth's never do): delete through
    /// libcontainer, which runs the poststop ones.
    pub has_hooks: bool,
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
}
