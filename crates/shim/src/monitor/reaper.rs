//! The reaper: collects exited children on SIGCHLD; a container's init
//! exit gets its durable record before anyone is told.

use nix::errno::Errno;
use nix::poll::PollFlags;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use super::stdio::read_pipe;
use super::{Monitor, cgroup_of, now_ns};
use crate::exit_record;
use berth_monitor_protocol::{EventKind, ExitRecord, Status};

impl Monitor {
    /// Collects every exited child without blocking. The monitor is the only
    /// waiter in its process, so `waitpid(-1)` steals nobody's status; it
    /// also reaps orphans reparented to it as subreaper.
    pub(super) fn reap(&mut self) {
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

    pub(super) fn on_exit(&mut self, pid: i32, exit_code: i32, signal: i32) {
        if self.execs.on_exit(pid, exit_code) || self.exec_streams.on_exit(pid, exit_code) {
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
            oom_killed: cgroup_of(&self.cgroups, &c.cgroup_path).is_some_and(|g| g.oom_killed()),
        };
        if let Err(e) = exit_record::write(&self.exits_dir, id, &rec) {
            eprintln!("berth-monitor {}: exit record of {id}: {e}", self.pod_id);
        }
        c.status = Status::Exited;
        c.exit = Some(rec);
        // Nobody reads its stdin any more.
        c.close_stdin();
        // Without a PID namespace of its own, its execs may outlive it.
        let id = id.clone();
        self.kill_exec_streams(&id);
        // Told once the record is on disk: what berthd learns survives it.
        self.notify(EventKind::Exited, &id);
    }
}
