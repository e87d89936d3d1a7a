//! Create: libcontainer builds the container (its init waits for start),
//! stdout/stderr go through pipes the loop reads into the CRI log.

use std::fs::{self, File};
use std::path::Path;
use std::time::Instant;

use libcontainer::container::builder::ContainerBuilder;
use libcontainer::syscall::syscall::SyscallType;

use super::container::Ctr;
use super::error::{Op, OpError};
use super::libcontainer_call::{OwnOomScore, chain, explained, with_sigchld_unblocked};
use super::stdio::stdio_pipe;
use super::{Monitor, now_ns};
use crate::cri_log::CriLogWriter;
use crate::exit_record;
use berth_monitor_protocol::Status;

impl Monitor {
    /// Creates container `id` from `bundle`; returns its init's pid.
    pub(super) fn create(
        &mut self,
        id: &str,
        bundle: &Path,
        log_path: &Path,
    ) -> Result<i32, OpError> {
        if self.shutdown {
            return Err(Op::Create.invalid_state(id, "monitor is shutting down"));
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
        let (out_r, out_w) = stdio_pipe().map_err(|e| Op::Create.failed(id, fail("pipe", &e)))?;
        let (err_r, err_w) = stdio_pipe().map_err(|e| Op::Create.failed(id, fail("pipe", &e)))?;
        let devnull = File::open("/dev/null")
            .map_err(|e| Op::Create.failed(id, fail("open /dev/null", &e)))?;
        let state_dir = self.containers_dir.join(id);
        let existed = state_dir.exists();

        let builder = ContainerBuilder::new(id.to_string(), SyscallType::default())
            .validate_id()
            .and_then(|b| b.with_root_path(&self.containers_dir))
            .map_err(|e| Op::Create.failed(id, fail("libcontainer", &e)))?
            .with_stdin(devnull)
            .with_stdout(out_w)
            .with_stderr(err_w)
            .as_init(bundle)
            .with_systemd(false)
            .with_detach(true);
        let own_oom = OwnOomScore::save();
        let mark = self.log_mark();
        let t1 = Instant::now();
        let built = with_sigchld_unblocked(|| builder.build());
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
        let container = match built {
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
}
