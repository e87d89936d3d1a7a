//! `GetContainerEvents`: the kubelet's Evented PLEG subscribes once and is
//! told every container's created/started/stopped/deleted, each with its
//! pod's status and the statuses of the pod's containers (what the kubelet
//! caches), from berthd's records at the time of sending.
//!
//! A subscriber more than [`events::CAPACITY`] events behind gets its
//! stream ended with RESOURCE_EXHAUSTED and relists (see
//! `container/events.rs`).
//!
//! The kubelet (v1.37) reads only `pod_sandbox_status.metadata.uid` of an
//! event (a stopped container asks for a relist of that pod) and drops an
//! event without it, logging an error; its pod statuses come from its
//! relists (see `sandbox_status.rs`). An event read after its pod's record
//! went (a container removed with its pod) carries the pod's status as
//! this subscriber last sent it.

use std::collections::HashMap;
use std::sync::Arc;

use berth_api::v1::{ContainerEventResponse, ContainerEventType, PodSandboxStatus};
use tokio::sync::broadcast::error::RecvError;
use tonic::Status;

use super::BoxStream;
use crate::container::events::{self, ContainerEvent};
use crate::daemon::Daemon;

pub fn get_container_events(daemon: Arc<Daemon>) -> BoxStream<ContainerEventResponse> {
    let rx = daemon.containers().subscribe_events();
    tracing::info!("container events subscriber connected");
    Box::pin(futures::stream::unfold(
        (rx, daemon, LastPodStatuses::default(), false),
        |(mut rx, daemon, mut last, ended)| async move {
            if ended {
                return None;
            }
            match rx.recv().await {
                Ok(ev) => {
                    let resp = response(&daemon, &mut last, ev).await;
                    Some((Ok(resp), (rx, daemon, last, false)))
                }
                Err(RecvError::Lagged(missed)) => {
                    tracing::warn!(
                        missed,
                        "container events subscriber fell behind; ending its stream"
                    );
                    let status = Status::resource_exhausted(format!(
                        "{missed} container events were missed: this subscriber fell more than {} events behind; relist and subscribe again",
                        events::CAPACITY
                    ));
                    Some((Err(status), (rx, daemon, last, true)))
                }
                // Only when berthd drops its containers: shutting down.
                Err(RecvError::Closed) => None,
            }
        },
    ))
}

async fn response(
    daemon: &Daemon,
    last: &mut LastPodStatuses,
    mut ev: ContainerEvent,
) -> ContainerEventResponse {
    let current = match ev.pod_status.take() {
        Some(s) => Some(*s),
        None => daemon
            .sandboxes()
            .resolve(&ev.pod_id)
            .map(|p| super::sandbox_status::to_status(&p)),
    };
    let pod_sandbox_status = last.pod_status(&ev, current);
    if pod_sandbox_status.is_none() {
        tracing::debug!(pod = %ev.pod_id, container = %ev.container_id, "container event sent without its pod's status: the pod is gone");
    }
    let containers_statuses = match daemon.containers().list_pod(&ev.pod_id).await {
        Ok(recs) => super::container_status::pod_statuses(recs),
        Err(e) => {
            tracing::warn!(pod = %ev.pod_id, error = %e, "container event sent without the pod's container statuses");
            vec![]
        }
    };
    ContainerEventResponse {
        container_id: ev.container_id,
        container_event_type: ev.kind as i32,
        created_at: ev.at,
        pod_sandbox_status,
        containers_statuses,
    }
}

/// The pod statuses one subscriber was sent, by pod id, each kept until
/// the pod's own deleted event.
#[derive(Default)]
struct LastPodStatuses(HashMap<String, PodSandboxStatus>);

impl LastPodStatuses {
    /// The pod status to send with `ev`: `current` (the pod's status now,
    /// None: its record is gone), else the one last sent for the pod.
    fn pod_status(
        &mut self,
        ev: &ContainerEvent,
        current: Option<PodSandboxStatus>,
    ) -> Option<PodSandboxStatus> {
        let pod_gone =
            ev.container_id == ev.pod_id && ev.kind == ContainerEventType::ContainerDeletedEvent;
        if pod_gone {
            let kept = self.0.remove(&ev.pod_id);
            return current.or(kept);
        }
        match current {
            Some(s) => {
                self.0.insert(ev.pod_id.clone(), s.clone());
                Some(s)
            }
            None => self.0.get(&ev.pod_id).cloned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_api::v1::PodSandboxMetadata;

    fn ev(container: &str, pod: &str, kind: ContainerEventType) -> ContainerEvent {
        ContainerEvent {
            container_id: container.into(),
            pod_id: pod.into(),
            kind,
            at: 1,
            pod_status: None,
        }
    }

    fn status(pod: &str, uid: &str) -> PodSandboxStatus {
        PodSandboxStatus {
            id: pod.into(),
            metadata: Some(PodSandboxMetadata {
                uid: uid.into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn events_after_the_pod_went_carry_its_last_status_until_its_deletion() {
        use ContainerEventType as E;
        let mut last = LastPodStatuses::default();
        let p = status("p", "uid-p");
        assert_eq!(
            last.pod_status(&ev("p", "p", E::ContainerStartedEvent), Some(p.clone())),
            Some(p.clone())
        );
        // The pod's record is gone when its containers' removals are sent.
        assert_eq!(
            last.pod_status(&ev("c", "p", E::ContainerStoppedEvent), None),
            Some(p.clone())
        );
        assert_eq!(
            last.pod_status(&ev("c", "p", E::ContainerDeletedEvent), None),
            Some(p.clone())
        );
        // The pod's own deletion carries its status and forgets it.
        let mut gone = ev("p", "p", E::ContainerDeletedEvent);
        gone.pod_status = None;
        assert_eq!(last.pod_status(&gone, Some(p.clone())), Some(p.clone()));
        assert!(last.0.is_empty());
        assert_eq!(
            last.pod_status(&ev("c", "p", E::ContainerDeletedEvent), None),
            None
        );
    }

    #[test]
    fn the_current_status_wins_and_pods_are_kept_apart() {
        use ContainerEventType as E;
        let mut last = LastPodStatuses::default();
        let old = status("p", "uid-p");
        let mut new = old.clone();
        new.state = 1;
        last.pod_status(&ev("c", "p", E::ContainerCreatedEvent), Some(old));
        assert_eq!(
            last.pod_status(&ev("c", "p", E::ContainerStartedEvent), Some(new.clone())),
            Some(new.clone())
        );
        assert_eq!(
            last.pod_status(&ev("c", "p", E::ContainerStoppedEvent), None),
            Some(new)
        );
        assert_eq!(
            last.pod_status(&ev("d", "q", E::ContainerStoppedEvent), None),
            None
        );
        // A pod deleted before this subscriber saw it: nothing kept.
        assert_eq!(
            last.pod_status(&ev("q", "q", E::ContainerDeletedEvent), None),
            None
        );
        assert_eq!(last.0.len(), 1);
    }
}
