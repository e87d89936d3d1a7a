//! The containers of one pod, for StopPodSandbox and RemovePodSandbox
//! (crate::cri runs these before the sandbox's own stop and removal).

use std::time::Duration;

use berth_monitor_protocol::Request;
use tracing::Instrument;

use super::{ContainerError, Containers, internal, monitor, rootfs};

impl Containers {
    /// Kills every live container of the pod: the kubelet already stopped
    /// them gracefully; as containerd, kill what is left.
    pub async fn stop_pod(&self, pod_id: &str) -> Result<(), ContainerError> {
        for id in self.of_pod(pod_id) {
            let span = tracing::info_span!("stop_pod_container", pod = %pod_id, container = %id);
            match self.stop(&id, Duration::ZERO).instrument(span).await {
                // Removed meanwhile.
                Ok(()) | Err(ContainerError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Removes every container of the pod (stopping it first) and lets the
    /// pod's monitor exit; its state dir goes too.
    pub async fn remove_pod(&self, pod_id: &str) -> Result<(), ContainerError> {
        for id in self.of_pod(pod_id) {
            let span = tracing::info_span!("remove_pod_container", pod = %pod_id, container = %id);
            self.remove(&id).instrument(span).await?;
        }
        self.delete_unrecorded(pod_id).await;
        // No container left: the monitor exits (if one runs), on purpose.
        self.watches.stop(pod_id);
        let dir = self.monitor_dir(pod_id);
        if let Err(e) = monitor::call(&dir, pod_id, Request::Shutdown).await
            && !matches!(e, monitor::CallError::Unreachable { .. })
        {
            tracing::warn!(pod = %pod_id, error = %e, "cannot shut the pod monitor down");
        }
        monitor::forget(&dir);
        self.lock().ops.remove(&super::monitor_spawn_key(pod_id));
        // Its socket, log and (now empty) exit records go with the pod.
        rootfs::remove_dir(&dir).map_err(internal)?;
        Ok(())
    }

    /// After StopPodSandbox: once none of the pod's containers lives,
    /// nothing needs its monitor any more (the pod takes no new container;
    /// status and lists answer from the records; RemoveContainer removes
    /// the cgroups itself when the monitor is gone; the logs are files), so
    /// it exits now rather than at RemovePodSandbox, which the kubelet calls
    /// much later. The exits the events brought are made durable first: a
    /// restarted berthd could not ask the monitor again. Failures are only
    /// logged: the monitor then lives until RemovePodSandbox, as before.
    pub async fn release_monitor(&self, pod_id: &str) {
        if !self.live_of_pod(pod_id).is_empty() {
            return;
        }
        if let Err(e) = self.sync() {
            tracing::warn!(pod = %pod_id, error = %e, "cannot make the pod's container records durable: its monitor stays");
            return;
        }
        self.watches.stop(pod_id);
        let dir = self.monitor_dir(pod_id);
        match monitor::call(&dir, pod_id, Request::Shutdown).await {
            Ok(_) => tracing::info!(pod = %pod_id, "pod stopped: its monitor exits"),
            Err(monitor::CallError::Unreachable { .. }) => {}
            Err(e) => {
                tracing::warn!(pod = %pod_id, error = %e, "cannot shut the pod monitor down")
            }
        }
        monitor::forget(&dir);
    }

    /// Ids of the pod's recorded containers.
    fn of_pod(&self, pod_id: &str) -> Vec<String> {
        self.lock()
            .records
            .values()
            .filter(|r| r.pod_id == pod_id)
            .map(|r| r.id.clone())
            .collect()
    }
}
