//! Start: the created container's init execs its process.

use super::error::{Op, OpError};
use super::libcontainer_call::chain;
use super::{Monitor, now_ns};
use berth_monitor_protocol::Status;

impl Monitor {
    pub(super) fn start(&mut self, id: &str) -> Result<(), OpError> {
        self.reap();
        let c = self.get_mut(id)?;
        if c.status != Status::Created {
            return Err(Op::Start.invalid_state(id, format!("it is {:?}, not created", c.status)));
        }
        if c.restore.is_some() {
            return self.restore(id);
        }
        c.container
            .start()
            .map_err(|e| Op::Start.failed(id, chain(&e)))?;
        c.status = Status::Running;
        c.started_at = now_ns();
        Ok(())
    }
}
