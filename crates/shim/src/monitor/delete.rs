//! Delete: the container's state, cgroup and exit record go; a live one is
//! killed and reaped first (only with `force` when it is running).

use libcontainer::error::LibcontainerError;
use nix::errno::Errno;
use nix::poll::PollFlags;
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::Pid;

use super::error::{Op, OpError};
use super::libcontainer_call::chain;
use super::stdio::read_pipe;
use super::{Monitor, cgroup_of};
use crate::exit_record;
use berth_monitor_protocol::Status;

impl Monitor {
    pub(super) fn delete(&mut self, id: &str, force: bool) -> Result<(), OpError> {
        self.reap();
        let c = self
            .ctrs
            .get_mut(id)
            .ok_or_else(|| OpError::NotFound(id.to_string()))?;
        if c.alive() {
            if c.status == Status::Running && !force {
                return Err(Op::Delete.invalid_state(id, "it is running (stop it first or force)"));
            }
            // A created or force-deleted container dies now; wait for it so
            // its cgroup is empty when libcontainer removes it.
            let sig = libcontainer::signal::Signal::try_from(libc::SIGKILL)
                .map_err(|e| Op::Delete.failed(id, e))?;
            // IncorrectStatus: already dead, only not reaped yet.
            if let Err(e) = c.container.kill(sig, true)
                && !matches!(e, LibcontainerError::IncorrectStatus(_))
            {
                return Err(Op::Delete.failed(id, format!("kill: {e}")));
            }
            let pid = c.pid;
            self.wait_for_init(pid);
        }
        let c = self
            .ctrs
            .get_mut(id)
            .ok_or_else(|| OpError::NotFound(id.to_string()))?;
        if c.has_hooks {
            c.container
                .delete(true)
                .map_err(|e| Op::Delete.failed(id, chain(&e)))?;
            exit_record::remove(&self.exits_dir, id)
                .map_err(|e| Op::Delete.failed(id, format!("exit record: {e}")))?;
        } else {
            // What libcontainer's delete does for a dead container without
            // hooks, minus its mountinfo parsing per controller, and with
            // the file deletions (synchronous discards on some disks) moved
            // off the request: the state dir and exit record are renamed
            // into the trash, which the loop empties when idle.
            if let Some(cgroup) = cgroup_of(&self.cgroups, &c.cgroup_path) {
                cgroup.remove().map_err(|e| Op::Delete.failed(id, e))?;
            }
            self.trash.put(&self.containers_dir.join(id), id);
            self.trash.put(
                &exit_record::path(&self.exits_dir, id),
                &format!("{id}.exit.json"),
            );
        }
        self.kill_exec_streams(id);
        // Attached clients read the rest of the output, then EOF.
        if let Some(mut c) = self.ctrs.remove(id) {
            for i in 0..2 {
                read_pipe(&mut c, i, &mut self.buf, true, PollFlags::POLLIN);
            }
        }
        Ok(())
    }

    /// Waits until the killed init `pid` is reaped. Every other child is
    /// reaped meanwhile as the loop would: an init of a PID namespace does
    /// not finish exiting before the namespace's other processes are
    /// reaped, and an exec's process is the monitor's child, not the init's.
    fn wait_for_init(&mut self, pid: i32) {
        loop {
            let (child, code, signal) = match waitpid(Pid::from_raw(-1), None) {
                Ok(WaitStatus::Exited(p, code)) => (p.as_raw(), code, 0),
                Ok(WaitStatus::Signaled(p, sig, _)) => (p.as_raw(), 128 + sig as i32, sig as i32),
                Err(Errno::EINTR) | Ok(_) => continue,
                Err(_) => return,
            };
            if child == pid {
                return;
            }
            self.on_exit(child, code, signal);
        }
    }
}
