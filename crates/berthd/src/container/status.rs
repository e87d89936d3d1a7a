//! ContainerStatus, and bringing a record up to date with what the pod's
//! monitor says (shared by every operation that reads a container's state).

use berth_monitor_protocol::{ContainerState, Status as MonStatus};

use super::{ContainerError, ContainerRecord, Containers, State, internal, monitor};
use crate::ids::now_ns;

impl Containers {
    /// ContainerStatus's view: the record, kept current by the pod
    /// monitor's events; asked of the monitor only when it is not
    /// subscribed (yet) or too old for events.
    pub async fn status(&self, id: &str) -> Result<ContainerRecord, ContainerError> {
        let rec = self.must(id)?;
        let mode = self.watches.mode(&rec.pod_id);
        match super::watch::as_read(rec, mode) {
            super::watch::Read::Now(r) => Ok(r),
            super::watch::Read::Ask(rec) => self.refresh(rec).await,
        }
    }

    /// Brings the record up to date with the monitor (unless the exit is
    /// already known) and persists any change.
    pub async fn refresh(&self, rec: ContainerRecord) -> Result<ContainerRecord, ContainerError> {
        if rec.state == State::Exited {
            return Ok(rec);
        }
        let got = monitor::state(&self.monitor_dir(&rec.pod_id), &rec.pod_id, &rec.id).await;
        self.apply(rec, got.map(Some))
    }

    /// Merges what the monitor said (`Ok(None)`: it does not list the
    /// container) into the record. Answers and events travel on different
    /// connections, so the record only moves forward: the stored one wins
    /// when it is further along than `rec` (an exit an event brought in
    /// meanwhile), and an exit once known is never replaced.
    pub(super) fn apply(
        &self,
        rec: ContainerRecord,
        got: Result<Option<ContainerState>, monitor::CallError>,
    ) -> Result<ContainerRecord, ContainerError> {
        let mut rec = match self.lock().records.get(&rec.id) {
            Some(cur) if cur.state.rank() > rec.state.rank() => cur.clone(),
            _ => rec,
        };
        if rec.state == State::Exited {
            return Ok(rec);
        }
        let before = (rec.state, rec.started_at);
        let mut lost = false;
        match got {
            Ok(Some(s)) => {
                if s.started_at != 0 {
                    rec.started_at = s.started_at;
                }
                let said = match s.status {
                    MonStatus::Created => State::Created,
                    MonStatus::Running => State::Running,
                    MonStatus::Exited => State::Exited,
                };
                if said.rank() > rec.state.rank() {
                    rec.state = said;
                }
                if let Some(exit) = s.exit {
                    rec.state = State::Exited;
                    rec.exit_code = exit.exit_code;
                    rec.finished_at = exit.finished_at;
                    rec.oom_killed = exit.oom_killed;
                }
            }
            Err(e)
                if !(matches!(e, monitor::CallError::Unreachable { .. }) || e.is_not_found()) =>
            {
                return Err(internal(e));
            }
            // The monitor is gone or forgot the container (host reboot,
            // monitor crash): its exit can never be known.
            gone => {
                lost = true;
                let why = match gone {
                    Err(e) => e.to_string(),
                    _ => "the monitor no longer has the container".to_string(),
                };
                tracing::warn!(pod = %rec.pod_id, container = %rec.id, reason = %why, "container lost");
                rec.state = State::Exited;
                rec.exit_code = 255;
                rec.finished_at = now_ns();
                rec.message = format!("container lost: {why}");
            }
        }
        if lost {
            // berthd's own conclusion, not the monitor's: durable now.
            // Counted here, where every path that finds a container lost
            // (a read asking the monitor, the watch's end) stores it, and
            // only by the one that moved it to exited.
            let (rec, from) = self.update_record_from(rec, redb::Durability::Immediate)?;
            if from.is_some_and(|s| s != State::Exited) {
                crate::prometheus::global().container_lost();
            }
            return Ok(rec);
        }
        if (rec.state, rec.started_at) != before {
            let rec = self.update_record(rec, redb::Durability::None)?;
            self.flusher.mark();
            return Ok(rec);
        }
        Ok(rec)
    }
}
