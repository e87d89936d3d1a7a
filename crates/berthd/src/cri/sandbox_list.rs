//! `ListPodSandbox`: filters by id (exact or unique prefix, as containerd), state and labels.

use berth_api::v1::{ListPodSandboxRequest, ListPodSandboxResponse, PodSandbox};
use tonic::Status;

use crate::daemon::Daemon;

pub fn list_pod_sandbox(
    daemon: &Daemon,
    req: ListPodSandboxRequest,
) -> Result<ListPodSandboxResponse, Status> {
    let sandboxes = daemon.sandboxes();
    let filter = req.filter.unwrap_or_default();
    let id = if filter.id.is_empty() {
        None
    } else {
        // An unknown or ambiguous id matches nothing (not an error).
        match sandboxes.resolve(&filter.id) {
            Some(r) => Some(r.id),
            None => return Ok(ListPodSandboxResponse { items: vec![] }),
        }
    };
    let items = sandboxes
        .list()
        .into_iter()
        .filter(|r| id.as_ref().is_none_or(|id| &r.id == id))
        .filter(|r| {
            filter
                .state
                .as_ref()
                .is_none_or(|s| s.state == r.state.to_cri() as i32)
        })
        .filter(|r| {
            filter
                .label_selector
                .iter()
                .all(|(k, v)| r.labels.get(k) == Some(v))
        })
        .map(|r| PodSandbox {
            metadata: Some(r.metadata()),
            state: r.state.to_cri() as i32,
            created_at: r.created_at,
            labels: r.labels.into_iter().collect(),
            annotations: r.annotations.into_iter().collect(),
            runtime_handler: r.runtime_handler,
            id: r.id,
        })
        .collect();
    Ok(ListPodSandboxResponse { items })
}
