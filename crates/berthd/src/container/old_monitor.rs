//! Fallbacks for monitors older than the current protocol (still running
//! since before a berthd upgrade): each answers `bad request` to a newer
//! request. Delete this file once no such monitor can be left running.

use std::time::{Duration, Instant};

use berth_monitor_protocol::Request;

use super::stop::KILL_WAIT;
use super::{ContainerError, ContainerRecord, Containers, State, internal, monitor};

impl Containers {
    /// StartContainer with a monitor older than `StartAndReport`: start,
    /// then ask for the state.
    pub(super) async fn start_without_report(
        &self,
        rec: ContainerRecord,
    ) -> Result<ContainerRecord, ContainerError> {
        let mon = self.monitor_dir(&rec.pod_id);
        monitor::call(&mon, &rec.pod_id, Request::Start { id: rec.id.clone() })
            .await
            .map_err(internal)?;
        self.refresh(rec).await
    }

    /// StopContainer with a monitor older than its `Stop` request: signal,
    /// poll, SIGKILL, poll.
    pub(super) async fn stop_polling(
        &self,
        id: &str,
        timeout: Duration,
    ) -> Result<(), ContainerError> {
        let mut rec = self.refresh(self.must(id)?).await?;
        if rec.state == State::Exited {
            return Ok(());
        }
        let pod_dir = self.monitor_dir(&rec.pod_id);
        let pod_id = rec.pod_id.clone();
        let kill = |signal: i32, all: bool| {
            let req = Request::Kill {
                id: id.to_string(),
                signal,
                all,
            };
            let (pod_dir, pod) = (pod_dir.clone(), pod_id.clone());
            async move { monitor::call(&pod_dir, &pod, req).await.map_err(internal) }
        };
        // A never-started container has nothing to shut down gracefully.
        if !timeout.is_zero() && rec.state == State::Running {
            tracing::info!(signal = rec.stop_signal, ?timeout, "stopping container");
            kill(rec.stop_signal, false).await?;
            rec = self.wait_exit(rec, Instant::now() + timeout).await?;
            if rec.state == State::Exited {
                return Ok(());
            }
        }
        tracing::info!("killing container");
        kill(libc::SIGKILL, true).await?;
        let rec = self.wait_exit(rec, Instant::now() + KILL_WAIT).await?;
        if rec.state != State::Exited {
            return Err(internal(anyhow::anyhow!(
                "container {id} did not exit within {KILL_WAIT:?} of SIGKILL"
            )));
        }
        Ok(())
    }

    /// Polls the monitor until the container exited or `deadline`.
    async fn wait_exit(
        &self,
        mut rec: ContainerRecord,
        deadline: Instant,
    ) -> Result<ContainerRecord, ContainerError> {
        let mut pause = Duration::from_millis(2);
        loop {
            rec = self.refresh(rec).await?;
            let now = Instant::now();
            if rec.state == State::Exited || now >= deadline {
                return Ok(rec);
            }
            tokio::time::sleep(pause.min(deadline - now)).await;
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }
}
