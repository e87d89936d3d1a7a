//! `ListContainers`: filters by id (prefix), pod id (prefix), state and labels.

use berth_api::v1::{Container, ImageSpec, ListContainersRequest, ListContainersResponse};
use tonic::Status;

use crate::container::ContainerRecord;
use crate::daemon::Daemon;

#[tracing::instrument(skip_all)]
pub async fn list_containers(
    daemon: &Daemon,
    req: ListContainersRequest,
) -> Result<ListContainersResponse, Status> {
    let f = req.filter.unwrap_or_default();
    let wanted = |r: &ContainerRecord| {
        (f.id.is_empty() || r.id.starts_with(&f.id))
            && (f.pod_sandbox_id.is_empty() || r.pod_id.starts_with(&f.pod_sandbox_id))
            && f.state
                .as_ref()
                .is_none_or(|s| r.state.to_cri() as i32 == s.state)
            && f.label_selector
                .iter()
                .all(|(k, v)| r.labels.get(k) == Some(v))
    };
    // Only the answer's fields are copied (the kubelet lists every
    // container every second).
    let containers = daemon
        .containers()
        .list_map(|r| {
            wanted(r).then(|| Container {
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
                labels: super::string_map(&r.labels),
                annotations: super::string_map(&r.annotations),
                image_id: r.image_id.clone(),
            })
        })
        .await?;
    Ok(ListContainersResponse { containers })
}
