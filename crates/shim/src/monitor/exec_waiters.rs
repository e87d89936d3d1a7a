//! Execs waiting to exit: their output collected (capped), SIGKILL at the
//! deadline, the answer once reaped.

use std::cell::Cell;
use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::rc::Rc;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::unistd::Pid;

use super::Monitor;
use super::error::{Op, OpError};
use super::libcontainer_call::{OwnOomScore, explained, with_sigchld_unblocked};
use super::stdio::{read_exec_pipe, stdio_pipe};
use crate::exec::{self, ExecSpec, ExecStdio};
use berth_monitor_protocol::{Response, Status};

/// Most ExecSync output a monitor holds at once, over all its execs. The
/// monitor runs in berthd's cgroup, not the pod's: without this, a pod
/// running many execs that each print up to their own cap (16 MiB, as the
/// CRI and containerd have it) would grow memory charged outside its
/// limits. Past it, output is dropped and the exec answered `truncated`
/// (only this pod's execs: one monitor per pod).
pub(super) const EXEC_OUTPUT_BUDGET: usize = 32 << 20;

/// Bytes of exec output held, shared by a monitor's execs.
#[derive(Clone)]
pub(super) struct OutputBudget {
    held: Rc<Cell<usize>>,
    limit: usize,
}

impl OutputBudget {
    pub fn new(limit: usize) -> Self {
        Self {
            held: Rc::default(),
            limit,
        }
    }

    fn room(&self) -> usize {
        self.limit.saturating_sub(self.held.get())
    }

    #[cfg(test)]
    pub fn held(&self) -> usize {
        self.held.get()
    }
}

/// One running exec and what it printed so far.
pub(super) struct Exec {
    pub ctr: String,
    /// The connection waiting for the answer.
    pub conn: u64,
    /// Read ends of stdout and stderr; `None` once at EOF.
    pub pipes: [Option<OwnedFd>; 2],
    pub out: [Vec<u8>; 2],
    pub max_output: usize,
    /// The monitor's budget; `held` of it is this exec's.
    pub budget: OutputBudget,
    pub held: usize,
    pub truncated: bool,
    pub deadline: Option<Instant>,
    pub timed_out: bool,
    /// Shell-style exit code once reaped.
    pub exit_code: Option<i32>,
}

impl Exec {
    /// Keeps what fits under the exec's cap (both streams together) and
    /// the monitor's budget, drops the rest.
    pub fn push(&mut self, idx: usize, data: &[u8]) {
        let used = self.out[0].len() + self.out[1].len();
        let room = self.max_output.saturating_sub(used).min(self.budget.room());
        if data.len() > room {
            self.truncated = true;
        }
        let kept = data.len().min(room);
        self.out[idx].extend_from_slice(&data[..kept]);
        self.held += kept;
        self.budget.held.set(self.budget.held.get() + kept);
    }

    /// The answer to the exec request, once reaped.
    fn into_response(mut self) -> Response {
        let [stdout, stderr] = std::mem::take(&mut self.out);
        Response::Exec {
            exit_code: self.exit_code.unwrap_or(-1),
            stdout,
            stderr,
            truncated: self.truncated,
            timed_out: self.timed_out,
        }
    }
}

impl Drop for Exec {
    fn drop(&mut self) {
        self.budget.held.set(self.budget.held.get() - self.held);
    }
}

/// Running (or exited, not yet answered) execs by pid.
pub(super) struct ExecWaiters(HashMap<i32, Exec>, OutputBudget);

impl Default for ExecWaiters {
    fn default() -> Self {
        Self(HashMap::new(), OutputBudget::new(EXEC_OUTPUT_BUDGET))
    }
}

impl ExecWaiters {
    pub fn get_mut(&mut self, pid: i32) -> Option<&mut Exec> {
        self.0.get_mut(&pid)
    }

    /// The open output pipes: (pid, stdout 0 / stderr 1, fd).
    pub fn pipes(&self) -> impl Iterator<Item = (i32, usize, &OwnedFd)> {
        self.0.iter().flat_map(|(pid, e)| {
            e.pipes
                .iter()
                .enumerate()
                .filter_map(move |(i, p)| p.as_ref().map(|p| (*pid, i, p)))
        })
    }

    /// The nearest deadline of an exec not yet killed for it.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.0
            .values()
            .filter(|e| !e.timed_out)
            .filter_map(|e| e.deadline)
            .min()
    }

    /// Marks every running exec past its deadline as timed out; returns
    /// their pids, to SIGKILL.
    pub fn expire(&mut self, now: Instant) -> Vec<i32> {
        self.0
            .iter_mut()
            .filter(|(_, e)| {
                e.exit_code.is_none() && !e.timed_out && e.deadline.is_some_and(|d| d <= now)
            })
            .map(|(pid, e)| {
                e.timed_out = true;
                *pid
            })
            .collect()
    }

    /// Records the exit of `pid` if it is an exec's.
    pub fn on_exit(&mut self, pid: i32, exit_code: i32) -> bool {
        match self.0.get_mut(&pid) {
            Some(e) => {
                e.exit_code = Some(exit_code);
                true
            }
            None => false,
        }
    }

    /// Takes out the execs that were reaped.
    pub fn take_exited(&mut self) -> Vec<(i32, Exec)> {
        self.0.extract_if(|_, e| e.exit_code.is_some()).collect()
    }
}

impl Monitor {
    /// Starts an exec for connection `conn`; its answer is deferred.
    pub(super) fn start_exec(
        &mut self,
        conn: u64,
        id: &str,
        spec: &ExecSpec<'_>,
        timeout_ms: u64,
        max_output: usize,
    ) -> Result<(), OpError> {
        let base = self.exec_base(id)?;
        let (out_r, out_w) = stdio_pipe().map_err(|e| Op::Exec.failed(id, e))?;
        let (err_r, err_w) = stdio_pipe().map_err(|e| Op::Exec.failed(id, e))?;
        let started = Instant::now();
        let stdio = ExecStdio::Fds {
            stdin: None,
            stdout: out_w,
            stderr: err_w,
        };
        let pid = self.spawn_exec(id, &base, spec, stdio)?;
        self.execs.0.insert(
            pid,
            Exec {
                ctr: id.to_string(),
                conn,
                pipes: [Some(out_r), Some(err_r)],
                out: [Vec::new(), Vec::new()],
                // berthd asks for the CRI's cap; never more than that.
                max_output: max_output.min(berth_monitor_protocol::DEFAULT_MAX_OUTPUT),
                budget: self.execs.1.clone(),
                held: 0,
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

    /// What execs in running container `id` start from (read from its
    /// bundle on the first exec).
    pub(super) fn exec_base(&mut self, id: &str) -> Result<Rc<exec::ExecBase>, OpError> {
        self.reap();
        let c = self.get_mut(id)?;
        if c.status != Status::Running || !c.alive() {
            return Err(Op::Exec.invalid_state(id, format!("it is {:?}, not running", c.status)));
        }
        Ok(match &c.exec_base {
            Some(b) => b.clone(),
            None => {
                let b = Rc::new(exec::ExecBase::load(id, c.container.bundle())?);
                c.exec_base = Some(b.clone());
                b
            }
        })
    }

    /// Starts an exec's process (see `exec::spawn`); returns its pid. As
    /// for create: SIGCHLD unblocked in the child, the monitor's own
    /// oom_score_adj restored after libcontainer wrote the spec's. The
    /// caller reaps after registering the pid (a SIGCHLD may have been
    /// lost meanwhile).
    pub(super) fn spawn_exec(
        &mut self,
        id: &str,
        base: &exec::ExecBase,
        spec: &ExecSpec<'_>,
        stdio: ExecStdio<'_>,
    ) -> Result<i32, OpError> {
        let bundle = self.get(id)?.container.bundle().to_path_buf();
        let own_oom = OwnOomScore::save();
        let mark = self.log_mark();
        let spawned = with_sigchld_unblocked(|| {
            self.in_mount_view(&bundle, || {
                exec::spawn(&self.containers_dir, id, base, spec, stdio)
            })
        });
        own_oom.restore();
        spawned.map_err(|e| match e {
            OpError::Failed { op, id, why } => OpError::Failed {
                op,
                id,
                why: explained(why, &mark),
            },
            e => e,
        })
    }

    /// SIGKILLs every exec past its deadline (answered once reaped).
    pub(super) fn expire_execs(&mut self) {
        for pid in self.execs.expire(Instant::now()) {
            let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }

    /// Answers every exec that was reaped. Output still in the pipes is read
    /// now; a background child keeping a pipe open does not delay the answer.
    pub(super) fn finish_execs(&mut self) {
        for (pid, mut e) in self.execs.take_exited() {
            for i in 0..2 {
                read_exec_pipe(&mut e, i, &mut self.buf, true);
            }
            let (conn, ctr) = (e.conn, e.ctr.clone());
            if !self.answer_deferred(conn, &e.into_response()) {
                eprintln!(
                    "berth-monitor {}: exec {pid} in {ctr}: client gone",
                    self.pod_id
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exec(deadline: Option<Instant>) -> Exec {
        exec_in(deadline, &OutputBudget::new(EXEC_OUTPUT_BUDGET))
    }

    fn exec_in(deadline: Option<Instant>, budget: &OutputBudget) -> Exec {
        Exec {
            ctr: "c".into(),
            conn: 0,
            pipes: [None, None],
            out: [Vec::new(), Vec::new()],
            max_output: 5,
            budget: budget.clone(),
            held: 0,
            truncated: false,
            deadline,
            timed_out: false,
            exit_code: None,
        }
    }

    #[test]
    fn output_capped_across_streams() {
        let mut e = exec(None);
        e.push(0, b"abc");
        assert!(!e.truncated);
        e.push(1, b"defg");
        assert_eq!(e.out, [b"abc".to_vec(), b"de".to_vec()]);
        assert!(e.truncated);
        e.exit_code = Some(3);
        assert_eq!(
            e.into_response(),
            Response::Exec {
                exit_code: 3,
                stdout: b"abc".to_vec(),
                stderr: b"de".to_vec(),
                truncated: true,
                timed_out: false,
            }
        );
    }

    #[test]
    fn output_held_across_execs_is_bounded_by_the_budget() {
        let budget = OutputBudget::new(8);
        let mut a = exec_in(None, &budget);
        let mut b = exec_in(None, &budget);
        let mut c = exec_in(None, &budget);
        a.push(0, b"aaaaa");
        b.push(0, b"bbbbb");
        c.push(1, b"c");
        assert_eq!((a.out[0].len(), b.out[0].len(), c.out[1].len()), (5, 3, 0));
        assert!(!a.truncated && b.truncated && c.truncated);
        assert_eq!(budget.held(), 8);
        // An answered exec gives its share back.
        let _ = a.into_response();
        assert_eq!(budget.held(), 3);
        c.push(1, b"cc");
        assert_eq!(c.out[1], b"cc");
        drop((b, c));
        assert_eq!(budget.held(), 0);
    }

    #[test]
    fn deadlines_expire_once_and_exits_are_collected() {
        let t0 = Instant::now();
        let mut w = ExecWaiters::default();
        w.0.insert(10, exec(Some(t0 + Duration::from_secs(1))));
        w.0.insert(11, exec(Some(t0 + Duration::from_secs(5))));
        w.0.insert(12, exec(None));
        assert_eq!(w.next_deadline(), Some(t0 + Duration::from_secs(1)));
        assert!(w.expire(t0).is_empty());
        assert_eq!(w.expire(t0 + Duration::from_secs(2)), [10]);
        // Killed once; its deadline no longer wakes the loop.
        assert!(w.expire(t0 + Duration::from_secs(2)).is_empty());
        assert_eq!(w.next_deadline(), Some(t0 + Duration::from_secs(5)));
        // An exec that exited before its deadline is not "timed out".
        assert!(w.on_exit(11, 0));
        assert!(w.expire(t0 + Duration::from_secs(6)).is_empty());
        assert!(!w.on_exit(99, 0), "not an exec: a container or an orphan");
        assert!(w.on_exit(10, 137));
        let mut done: Vec<(i32, bool)> = w
            .take_exited()
            .into_iter()
            .map(|(pid, e)| (pid, e.timed_out))
            .collect();
        done.sort();
        assert_eq!(done, [(10, true), (11, false)]);
        assert_eq!(w.0.len(), 1);
        assert!(w.take_exited().is_empty());
    }
}
