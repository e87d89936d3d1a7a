//! Streaming exec (`kubectl exec`): the process starts as an ExecSync one
//! does, but its stdio goes to berthd (a terminal's master, or pipes) with
//! the `ExecStarted` answer; the monitor keeps none of it. The connection
//! then waits for the exit (`ExecExited`, then closed); if it closes first,
//! the client went away and the process is SIGKILLed.

use std::collections::HashMap;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::Monitor;
use super::connections::{Mode, reply};
use super::dispatch::{Handover, Reply};
use super::error::{Op, OpError};
use super::stdio::handover_pipe;
use super::terminal::remove_tenant_links;
use crate::exec::{ExecSpec, ExecStdio};
use berth_monitor_protocol::{Response, TerminalSize};

/// A streaming exec's process.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct StreamExec {
    pub ctr: String,
    /// The connection it was handed over on.
    pub conn: u64,
    /// Shell-style exit code once reaped.
    pub exit_code: Option<i32>,
}

/// Streaming execs by pid, until their exit is told (or their client left).
#[derive(Default)]
pub(super) struct StreamExecs(HashMap<i32, StreamExec>);

impl StreamExecs {
    /// Records the exit of `pid` if it is a streaming exec's.
    pub fn on_exit(&mut self, pid: i32, exit_code: i32) -> bool {
        match self.0.get_mut(&pid) {
            Some(e) => {
                e.exit_code = Some(exit_code);
                true
            }
            None => false,
        }
    }

    /// Pids of the running streaming execs in container `ctr`.
    pub fn running_in(&self, ctr: &str) -> Vec<i32> {
        self.0
            .iter()
            .filter(|(_, e)| e.ctr == ctr && e.exit_code.is_none())
            .map(|(pid, _)| *pid)
            .collect()
    }

    /// Takes out the execs that were reaped.
    pub fn take_exited(&mut self) -> Vec<(i32, StreamExec)> {
        self.0.extract_if(|_, e| e.exit_code.is_some()).collect()
    }
}

/// How a streaming exec's stdio is asked for.
pub(super) struct StreamStdio {
    pub tty: bool,
    pub stdin: bool,
    pub size: Option<TerminalSize>,
}

impl Monitor {
    /// Starts a streaming exec for connection `conn`; the answer hands its
    /// stdio over.
    pub(super) fn start_exec_stream(
        &mut self,
        conn: u64,
        id: &str,
        spec: &ExecSpec<'_>,
        io: StreamStdio,
    ) -> Result<Reply, OpError> {
        let base = self.exec_base(id)?;
        let failed = |e: std::io::Error| Op::Exec.failed(id, e);
        let (pid, fds) = if io.tty {
            let console = self.console_for_build().map_err(failed)?;
            let stdio = ExecStdio::Terminal {
                console_socket: &console,
                size: io.size,
            };
            let spawned = self.spawn_exec(id, &base, spec, stdio);
            let master = match &spawned {
                Ok(_) => self.received_master(),
                Err(_) => Err(std::io::Error::other("not started")),
            };
            remove_tenant_links(&self.containers_dir.join(id));
            let pid = spawned?;
            let master = master.map_err(|e| {
                // Reaped (and ignored) as any unknown child.
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                Op::Exec.failed(id, format!("terminal: {e}"))
            })?;
            (pid, vec![master])
        } else {
            let mut fds = Vec::with_capacity(3);
            let stdin = match io.stdin {
                true => {
                    let (r, w) = handover_pipe().map_err(failed)?;
                    fds.push(w);
                    Some(r)
                }
                false => None,
            };
            let (out_r, out_w) = handover_pipe().map_err(failed)?;
            let (err_r, err_w) = handover_pipe().map_err(failed)?;
            fds.push(out_r);
            fds.push(err_r);
            let stdio = ExecStdio::Fds {
                stdin,
                stdout: out_w,
                stderr: err_w,
            };
            // The process's ends were moved into (and closed with) the
            // builder: berthd's ends are the only ones left.
            (self.spawn_exec(id, &base, spec, stdio)?, fds)
        };
        self.exec_streams.0.insert(
            pid,
            StreamExec {
                ctr: id.to_string(),
                conn,
                exit_code: None,
            },
        );
        // A SIGCHLD of a fast exec may have been lost while unblocked.
        self.reap();
        Ok(Reply::Handover(Handover {
            resp: Response::ExecStarted { pid },
            fds,
            mode: Mode::ExecStream(pid),
        }))
    }

    /// The connection of streaming exec `pid` closed: a process still
    /// running is SIGKILLed (not reaped yet, so the pid is still ours).
    pub(super) fn exec_stream_closed(&mut self, pid: i32) {
        if let Some(e) = self.exec_streams.0.remove(&pid)
            && e.exit_code.is_none()
        {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }

    /// SIGKILLs the streaming execs of container `id` (it stopped or is
    /// deleted); their exits are told as usual once reaped.
    pub(super) fn kill_exec_streams(&mut self, id: &str) {
        for pid in self.exec_streams.running_in(id) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }

    /// Tells every reaped streaming exec's exit on its connection, then
    /// closes it.
    pub(super) fn finish_exec_streams(&mut self) {
        for (pid, e) in self.exec_streams.take_exited() {
            let Some(conn) = self.conns.take(e.conn) else {
                continue;
            };
            if conn.mode != Mode::ExecStream(pid) {
                self.conns.put(e.conn, conn);
                continue;
            }
            let exit_code = e.exit_code.unwrap_or(-1);
            if !reply(&conn.stream, &Response::ExecExited { exit_code }) {
                eprintln!(
                    "berth-monitor {}: exec {pid} in {}: client gone",
                    self.pod_id, e.ctr
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exec(ctr: &str, conn: u64) -> StreamExec {
        StreamExec {
            ctr: ctr.into(),
            conn,
            exit_code: None,
        }
    }

    #[test]
    fn exits_recorded_and_taken_once() {
        let mut s = StreamExecs::default();
        s.0.insert(10, exec("a", 1));
        s.0.insert(11, exec("a", 2));
        s.0.insert(12, exec("b", 3));
        assert!(!s.on_exit(99, 0), "not a streaming exec");
        assert!(s.on_exit(11, 137));
        let mut running = s.running_in("a");
        running.sort();
        assert_eq!(running, [10]);
        assert_eq!(s.running_in("b"), [12]);
        let done = s.take_exited();
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].0, 11);
        assert_eq!(done[0].1.exit_code, Some(137));
        assert!(s.take_exited().is_empty());
        assert_eq!(s.0.len(), 2);
    }
}
