//! ContainerStatus, and bringing a record up to date with what the pod's
//! monitor says (shared by every operation that reads a container's state).

use berth_monitor_protocol::{ContainerState, Status as MonStatus};

use super::{ContainerError, ContainerRecord, Containers, State, internal, monitor};
use crate::ids::now_ns;

impl Containers {
    /// ContainerStatus's view: refreshed record.
    pub async fn status(&self, id: &str) -> Result<ContainerRecord, ContainerError> {
        let rec = self.must(id)?;
        self.refresh(rec).await
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
    /// container) into the record.
    pub(super) fn apply(
        &self,
        mut rec: ContainerRecord,
        got: Result<Option<ContainerState>, monitor::CallError>,
    ) -> Result<ContainerRecord, ContainerError> {
        let before = (rec.state, rec.started_at);
        let mut lost = false;
        match got {
            Ok(Some(s)) => {
                if s.started_at != 0 {
                    rec.started_at = s.started_at;
                }
                rec.state = match s.status {
                    MonStatus::Created => State::Created,
                    MonStatus::Running => State::Running,
                    MonStatus::Exited => State::Exited,
                };
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
            self.put(&rec)?;
        } else if (rec.state, rec.started_at) != before {
            self.put_cache(&rec)?;
        }
        Ok(rec)
    }
}
