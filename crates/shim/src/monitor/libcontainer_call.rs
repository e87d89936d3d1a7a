//! What surrounds every libcontainer `build()` (create, exec) in the
//! monitor, and making its errors readable.

use std::fs;

use nix::sys::signal::{SigSet, SigmaskHow, Signal, sigprocmask};

use super::Monitor;
use crate::daemon::MONITOR_LOG;
use crate::log::Mark;

const OOM_SCORE_ADJ: &str = "/proc/self/oom_score_adj";

/// Runs `f` with SIGCHLD unblocked: the container's processes inherit the
/// signal mask through clone and exec, and SIGCHLD must not stay blocked in
/// them. A SIGCHLD that arrives meanwhile is lost: the caller reaps after.
pub(super) fn with_sigchld_unblocked<T>(f: impl FnOnce() -> T) -> T {
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGCHLD);
    let _ = sigprocmask(SigmaskHow::SIG_UNBLOCK, Some(&mask), None);
    let out = f();
    let _ = sigprocmask(SigmaskHow::SIG_BLOCK, Some(&mask), None);
    out
}

/// The monitor's own oom_score_adj: libcontainer writes the spec's
/// `oomScoreAdj` to the *caller's* /proc/self/oom_score_adj (children
/// inherit it); put back after, so the monitor does not become the pod's
/// first OOM victim.
pub(super) struct OwnOomScore(Option<String>);

impl OwnOomScore {
    pub fn save() -> OwnOomScore {
        OwnOomScore(fs::read_to_string(OOM_SCORE_ADJ).ok())
    }

    pub fn restore(self) {
        if let Some(v) = &self.0 {
            let _ = fs::write(OOM_SCORE_ADJ, v.trim());
        }
    }
}

impl Monitor {
    /// The end of `monitor.log` now: what a libcontainer call logs after
    /// this explains its failure ([`explained`]).
    pub(super) fn log_mark(&self) -> Mark {
        Mark::at_end(&self.state_dir.join(MONITOR_LOG))
    }
}

/// `message` with libcontainer's own explanation of the failure appended:
/// the first ERROR event it logged since `mark` (in this process or in the
/// intermediate or init process it forked), which names the step that
/// failed where its returned error often says only "failed syscall".
pub(super) fn explained(mut message: String, mark: &Mark) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("{msg}")]
    struct E {
        msg: &'static str,
        #[source]
        source: Option<Box<E>>,
    }

    #[test]
    fn chain_joins_sources_without_repeats() {
        let e = E {
            msg: "io error",
            source: Some(Box::new(E {
                msg: "failed syscall",
                source: Some(Box::new(E {
                    msg: "syscall",
                    source: None,
                })),
            })),
        };
        // "syscall" ends "failed syscall": not repeated.
        assert_eq!(chain(&e), "io error: failed syscall");
    }
}
