//! `GetContainerEvents`: the kubelet's Evented PLEG subscribes once and is
//! told every container's created/started/stopped/deleted, each with its
//! pod's status and the statuses of the pod's containers (what the kubelet
//! caches), from berthd's records at the time of sending.
//!
//! A subscriber more than [`events::CAPACITY`] events behind gets its
//! stream ended with RESOURCE_EXHAUSTED and relists (see
//! `container/events.rs`).

use std::sync::Arc;

use berth_api::v1::ContainerEventResponse;
use tokio::sync::broadcast::error::RecvError;
use tonic::Status;

use super::BoxStream;
use crate::container::events::{self, ContainerEvent};
use crate::daemon::Daemon;

pub fn get_container_events(daemon: Arc<Daemon>) -> BoxStream<ContainerEventResponse> {
    let rx = daemon.containers().subscribe_events();
    tracing::info!("container events subscriber connected");
    Box::pin(futures::stream::unfold(
        (rx, daemon, false),
        |(mut rx, daemon, ended)| async move {
            if ended {
                return None;
            }
            match rx.recv().await {
                Ok(ev) => {
                    let resp = response(&daemon, ev).await;
                    Some((Ok(resp), (rx, daemon, false)))
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
                    Some((Err(status), (rx, daemon, true)))
                }
                // Only when berthd drops its containers: shutting down.
                Err(RecvError::Closed) => None,
            }
        },
    ))
}

async fn response(daemon: &Daemon, ev: ContainerEvent) -> ContainerEventResponse {
    let pod_sandbox_status = match ev.pod_status {
        Some(s) => Some(*s),
        None => daemon
            .sandboxes()
            .resolve(&ev.pod_id)
            .map(|p| super::sandbox_status::to_status(&p)),
    };
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
