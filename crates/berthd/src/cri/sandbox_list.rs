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
    let items = sandboxes.list_map(|r, state| {
        let wanted = id.as_ref().is_none_or(|id| &r.id == id)
            && filter
                .state
                .as_ref()
                .is_none_or(|s| s.state == state.to_cri() as i32)
            && filter
                .label_selector
                .iter()
                .all(|(k, v)| r.labels.get(k) == Some(v));
        wanted.then(|| PodSandbox {
            id: r.id.clone(),
            metadata: Some(r.metadata()),
            state: state.to_cri() as i32,
            created_at: r.created_at,
            labels: super::string_map(&r.labels),
            annotations: super::string_map(&r.annotations),
            runtime_handler: r.runtime_handler.clone(),
        })
    });
    Ok(ListPodSandboxResponse { items })
}
