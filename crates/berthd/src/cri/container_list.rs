//! `ListContainers`: filters by id (prefix), pod id (prefix), state and labels.

use berth_api::v1::{Container, ImageSpec, ListContainersRequest, ListContainersResponse};
use tonic::Status;

use crate::daemon::Daemon;

#[tracing::instrument(skip_all)]
pub async fn list_containers(
    daemon: &Daemon,
    req: ListContainersRequest,
) -> Result<ListContainersResponse, Status> {
    let f = req.filter.unwrap_or_default();
    let containers = daemon
        .containers()
        .list()
        .await?
        .into_iter()
        .filter(|r| f.id.is_empty() || r.id.starts_with(&f.id))
        .filter(|r| f.pod_sandbox_id.is_empty() || r.pod_id.starts_with(&f.pod_sandbox_id))
        .filter(|r| {
            f.state
                .as_ref()
                .is_none_or(|s| r.state.to_cri() as i32 == s.state)
        })
        .filter(|r| {
            f.label_selector
                .iter()
                .all(|(k, v)| r.labels.get(k) == Some(v))
        })
        .map(|r| Container {
            id: r.id.clone(),
            pod_sandbox_id: r.pod_id.clone(),
            metadata: Some(r.metadata()),
            image: Some(ImageSpec {
                image: r.shown_image().to_owned(),
                user_specified_image: r.user_specified_image.clone(),
                ..Default::default()
            }),
            image_ref: r.image_ref.clone(),
            state: r.state.to_cri() as i32,
            created_at: r.created_at,
            labels: r.labels.clone().into_iter().collect(),
            annotations: r.annotations.clone().into_iter().collect(),
            image_id: r.image_id.clone(),
        })
        .collect();
    Ok(ListContainersResponse { containers })
}
