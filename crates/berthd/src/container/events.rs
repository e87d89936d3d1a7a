//! Container lifecycle events for the CRI's `GetContainerEvents` (the
//! kubelet's Evented PLEG): every change of a record's state, whatever
//! caused it (a CRI call, a monitor's event, a container lost), is sent on
//! one broadcast channel as it is stored.
//!
//! The channel holds [`CAPACITY`] events. A subscriber that falls further
//! behind loses its stream (the CRI handler ends it with an error), which
//! the kubelet answers by relisting and subscribing again: a slow
//! subscriber never slows berthd down nor grows its memory. After a
//! berthd restart subscribers reconnect and the kubelet relists, as it
//! does after any stream error.

use berth_api::v1::ContainerEventType;
use tokio::sync::broadcast;

use super::{ContainerRecord, Containers, State};

/// Events buffered for the slowest subscriber.
pub const CAPACITY: usize = 1024;

#[derive(Clone, Debug, PartialEq)]
pub struct ContainerEvent {
    pub container_id: String,
    pub pod_id: String,
    pub kind: ContainerEventType,
    /// Nanoseconds since the epoch.
    pub at: i64,
    /// The pod's status as of the event, for a pod's own events (its
    /// record may be gone when the event is sent); None: read at sending.
    pub pod_status: Option<Box<berth_api::v1::PodSandboxStatus>>,
}

pub fn channel() -> broadcast::Sender<ContainerEvent> {
    broadcast::channel(CAPACITY).0
}

/// The event a record going from `before` (None: new) to `after` makes.
pub(super) fn kind_of(before: Option<State>, after: State) -> Option<ContainerEventType> {
    if before == Some(after) {
        return None;
    }
    match after {
        State::Created if before.is_none() => Some(ContainerEventType::ContainerCreatedEvent),
        State::Running => Some(ContainerEventType::ContainerStartedEvent),
        State::Exited => Some(ContainerEventType::ContainerStoppedEvent),
        State::Created | State::Unknown => None,
    }
}

impl Containers {
    /// From now on NRI plugins adjust new containers (`nri`) and are sent
    /// every container event (through `to`).
    pub fn use_nri(
        &self,
        nri: berth_nri::Nri,
        to: tokio::sync::mpsc::UnboundedSender<crate::nri::Notice>,
    ) {
        let _ = self.nri.set(nri);
        let _ = self.nri_notices.set(to);
    }

    /// A new subscriber: events from now on.
    pub fn subscribe_events(&self) -> broadcast::Receiver<ContainerEvent> {
        self.events.subscribe()
    }

    pub(super) fn emit(&self, rec: &ContainerRecord, kind: ContainerEventType) {
        if let Some(nri) = self.nri_notices.get() {
            // Unbounded, but one entry per state change, drained as fast
            // as plugins answer (each within its request timeout).
            let _ = nri.send(crate::nri::Notice::Container(kind, Box::new(rec.clone())));
        }
        // No subscriber is not an error.
        let _ = self.events.send(ContainerEvent {
            container_id: rec.id.clone(),
            pod_id: rec.pod_id.clone(),
            kind,
            at: now_ns(),
            pod_status: None,
        });
    }

    /// A pod sandbox's own event, as containerd and CRI-O send them: the
    /// sandbox id as the container id (RunPodSandbox: created, started;
    /// StopPodSandbox: stopped; RemovePodSandbox: deleted). The kubelet's
    /// Evented PLEG learns of new and stopped sandboxes from these.
    pub fn emit_pod_event(
        &self,
        status: berth_api::v1::PodSandboxStatus,
        kind: ContainerEventType,
    ) {
        let _ = self.events.send(ContainerEvent {
            container_id: status.id.clone(),
            pod_id: status.id.clone(),
            kind,
            at: now_ns(),
            pod_status: Some(Box::new(status)),
        });
    }
}

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_changes_map_to_cri_events() {
        use ContainerEventType as E;
        assert_eq!(
            kind_of(None, State::Created),
            Some(E::ContainerCreatedEvent)
        );
        assert_eq!(
            kind_of(Some(State::Created), State::Running),
            Some(E::ContainerStartedEvent)
        );
        assert_eq!(
            kind_of(Some(State::Running), State::Exited),
            Some(E::ContainerStoppedEvent)
        );
        // Created then exited without running (a failed start): stopped.
        assert_eq!(
            kind_of(Some(State::Created), State::Exited),
            Some(E::ContainerStoppedEvent)
        );
        assert_eq!(kind_of(Some(State::Running), State::Running), None);
        assert_eq!(kind_of(Some(State::Exited), State::Exited), None);
    }
}
