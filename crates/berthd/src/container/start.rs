//! StartContainer: the pod's monitor starts the created container and
//! answers with its state.

use berth_monitor_protocol::{Request, Response};

use super::{ContainerError, ContainerRecord, Containers, State, internal, monitor};

impl Containers {
    /// StartContainer.
    pub async fn start(&self, id: &str) -> Result<(), ContainerError> {
        let rec = self.must(id)?;
        let lock = self.op_lock(&rec.id);
        let _op = lock.lock().await;
        let rec = self.must(&rec.id)?;
        let not_created = |rec: &ContainerRecord| {
            ContainerError::FailedPrecondition(format!(
                "container {} is {:?}, not CREATED: it cannot be started",
                rec.id, rec.state
            ))
        };
        // A cached state never goes back to CREATED: only CREATED needs the
        // monitor, which refuses to start anything else.
        if rec.state != State::Created {
            let rec = self.refresh(rec).await?;
            return Err(not_created(&rec));
        }
        let mon = self.monitor_dir(&rec.pod_id);
        let req = Request::StartAndReport { id: rec.id.clone() };
        let rec = match monitor::call(&mon, &rec.pod_id, req).await {
            Ok(Response::State(s)) => {
                crate::failpoint::hit("container-start-started");
                self.apply(rec, Ok(Some(s)))?
            }
            Err(e) if e.is_bad_request() => self.start_without_report(rec).await?,
            Ok(_) => self.refresh(rec).await?,
            Err(e) => {
                // It may have left CREATED meanwhile (killed, lost).
                let rec = self.refresh(rec).await?;
                // The start itself failed and left it EXITED (a restore
                // CRIU failed): the monitor's message says why.
                if rec.state == State::Exited
                    && e.code() == Some(berth_monitor_protocol::ErrorCode::Internal)
                {
                    tracing::warn!(pod = %rec.pod_id, container = %rec.id, error = %e, "start failed");
                    return Err(internal(e));
                }
                if rec.state != State::Created {
                    return Err(not_created(&rec));
                }
                return Err(internal(e));
            }
        };
        tracing::info!(state = ?rec.state, "container started");
        Ok(())
    }
}
