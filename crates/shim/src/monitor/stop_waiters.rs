//! Stops waiting for their container to exit: graceful signal, SIGKILL at
//! the deadline, the answer once the init is reaped (or the SIGKILL wait ran
//! out). The monitor finishes a stop even if its client went away.

use std::time::{Duration, Instant};

use super::Monitor;
use super::error::OpError;
use berth_monitor_protocol::{Response, Status};

/// A `Stop` whose answer is due once the container exited.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct StopWait {
    /// The connection waiting for the answer.
    pub conn: u64,
    pub id: String,
    /// Still in the graceful phase: SIGKILL at `deadline`.
    pub graceful: bool,
    /// The end of the graceful phase, or (after the SIGKILL) of the wait
    /// for the exit.
    pub deadline: Instant,
    pub kill_wait: Duration,
}

#[derive(Default)]
pub(super) struct StopWaiters(Vec<StopWait>);

impl StopWaiters {
    pub fn push(&mut self, w: StopWait) {
        self.0.push(w);
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.0.iter().map(|w| w.deadline).min()
    }

    /// Ends the graceful phase of every wait past its deadline (the SIGKILL
    /// wait starts now); returns the containers to SIGKILL.
    pub fn expire(&mut self, now: Instant) -> Vec<String> {
        let mut due = Vec::new();
        for w in self
            .0
            .iter_mut()
            .filter(|w| w.graceful && w.deadline <= now)
        {
            w.graceful = false;
            w.deadline = now + w.kill_wait;
            due.push(w.id.clone());
        }
        due
    }

    /// Takes out the waits to answer now: their container exited (or is
    /// gone: `alive` says `None`), or its SIGKILL wait ran out.
    pub fn take_due(
        &mut self,
        now: Instant,
        alive: impl Fn(&str) -> Option<bool>,
    ) -> Vec<StopWait> {
        let mut due = Vec::new();
        let mut i = 0;
        while i < self.0.len() {
            let w = &self.0[i];
            let answer = match alive(&w.id) {
                None | Some(false) => true,
                Some(true) => !w.graceful && w.deadline <= now,
            };
            if answer {
                due.push(self.0.swap_remove(i));
            } else {
                i += 1;
            }
        }
        due
    }
}

impl Monitor {
    /// Starts a `Stop`; `Ok(None)`: the answer is deferred until it exited.
    pub(super) fn start_stop(
        &mut self,
        conn: u64,
        id: &str,
        signal: i32,
        timeout_ms: u64,
        kill_wait_ms: u64,
    ) -> Result<Option<Response>, OpError> {
        self.reap();
        let c = self.get(id)?;
        if !c.alive() {
            return Ok(Some(Response::State(c.state(id))));
        }
        // A never-started container has nothing to shut down gracefully.
        // A stop signal the kernel refuses (a bogus one from an image) must
        // not leave the container running: SIGKILL at once instead.
        let graceful = timeout_ms > 0
            && c.status == Status::Running
            && match self.kill(id, signal, false) {
                Ok(()) => true,
                Err(e) => {
                    eprintln!("berth-monitor {}: {e}; SIGKILL instead", self.pod_id);
                    false
                }
            };
        let kill_wait = Duration::from_millis(kill_wait_ms);
        let deadline = if graceful {
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
    pub(super) fn expire_stops(&mut self) {
        for id in self.stops.expire(Instant::now()) {
            if let Err(e) = self.kill(&id, libc::SIGKILL, true) {
                eprintln!("berth-monitor {}: {e}", self.pod_id);
            }
        }
    }

    /// Answers every stop whose container exited (or whose SIGKILL wait
    /// ran out: the state then says it is still alive).
    pub(super) fn finish_stops(&mut self) {
        let ctrs = &self.ctrs;
        let due = self
            .stops
            .take_due(Instant::now(), |id| ctrs.get(id).map(|c| c.alive()));
        for w in due {
            let resp = match self.get(&w.id) {
                Ok(c) => Response::State(c.state(&w.id)),
                Err(e) => Response::from(&e),
            };
            self.answer_deferred(w.conn, &resp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wait(id: &str, graceful: bool, deadline: Instant) -> StopWait {
        StopWait {
            conn: 0,
            id: id.into(),
            graceful,
            deadline,
            kill_wait: Duration::from_millis(500),
        }
    }

    #[test]
    fn graceful_phase_ends_at_its_deadline() {
        let t0 = Instant::now();
        let mut s = StopWaiters::default();
        s.push(wait("a", true, t0 + Duration::from_secs(1)));
        s.push(wait("b", true, t0 + Duration::from_secs(2)));
        s.push(wait("c", false, t0 + Duration::from_millis(100)));
        assert_eq!(s.next_deadline(), Some(t0 + Duration::from_millis(100)));
        assert!(s.expire(t0).is_empty());
        let now = t0 + Duration::from_millis(1500);
        // Only graceful waits past their deadline get the SIGKILL, once.
        assert_eq!(s.expire(now), ["a"]);
        assert!(s.expire(now).is_empty());
        let a = s.0.iter().find(|w| w.id == "a").unwrap();
        assert!(!a.graceful);
        assert_eq!(a.deadline, now + Duration::from_millis(500));
    }

    #[test]
    fn answers_due_on_exit_or_after_the_kill_wait() {
        let t0 = Instant::now();
        let later = t0 + Duration::from_secs(10);
        let mut s = StopWaiters::default();
        s.push(wait("exited", true, later));
        s.push(wait("gone", true, later));
        s.push(wait("graceful", true, t0));
        s.push(wait("killed-waiting", false, later));
        s.push(wait("killed-out", false, t0));
        let alive = |id: &str| match id {
            "exited" => Some(false),
            "gone" => None,
            _ => Some(true),
        };
        let mut due: Vec<String> = s.take_due(t0, alive).into_iter().map(|w| w.id).collect();
        due.sort();
        // A graceful wait past its deadline is not answered: it gets its
        // SIGKILL (expire) first.
        assert_eq!(due, ["exited", "gone", "killed-out"]);
        let mut left: Vec<&str> = s.0.iter().map(|w| w.id.as_str()).collect();
        left.sort();
        assert_eq!(left, ["graceful", "killed-waiting"]);
    }
}
