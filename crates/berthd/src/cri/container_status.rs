//! `ContainerStatus`: the record, refreshed from the monitor; `verbose` adds
//! it as JSON under "info".

use berth_api::v1::{
    ContainerResources, ContainerStatus, ContainerStatusRequest, ContainerStatusResponse,
    ImageSpec, Signal,
};
use tonic::Status;

use crate::container::ContainerRecord;
use crate::daemon::Daemon;

#[tracing::instrument(skip_all, fields(container = %req.container_id))]
pub async fn container_status(
    daemon: &Daemon,
    req: ContainerStatusRequest,
) -> Result<ContainerStatusResponse, Status> {
    if req.container_id.is_empty() {
        return Err(Status::invalid_argument("container_id is required"));
    }
    let rec = daemon.containers().status(&req.container_id).await?;
    let mut info = std::collections::HashMap::new();
    if req.verbose {
        let json = serde_json::to_string(&rec)
            .map_err(|e| Status::internal(format!("cannot encode container record: {e}")))?;
        info.insert("info".to_string(), json);
    }
    Ok(ContainerStatusResponse {
        status: Some(to_status(&rec)),
        info,
    })
}

/// A pod's containers as CRI statuses, newest first. The kubelet's Evented
/// PLEG takes PodSandboxStatus' list as is (it sorts only event lists) and
/// its `FindContainerStatusByName` takes the first match as the latest
/// attempt: oldest first, it saw the dead attempt 0 beside a running
/// attempt 1 and asked again and again for attempt 1.
pub(crate) fn pod_statuses(mut recs: Vec<ContainerRecord>) -> Vec<ContainerStatus> {
    recs.sort_by(|a, b| (b.created_at, b.attempt, &b.id).cmp(&(a.created_at, a.attempt, &a.id)));
    recs.iter().map(to_status).collect()
}

pub(crate) fn to_status(rec: &ContainerRecord) -> ContainerStatus {
    ContainerStatus {
        id: rec.id.clone(),
        metadata: Some(rec.metadata()),
        state: rec.state.to_cri() as i32,
        created_at: rec.created_at,
        started_at: rec.started_at,
        finished_at: rec.finished_at,
        exit_code: rec.exit_code,
        image: Some(ImageSpec {
            image: rec.shown_image().to_owned(),
            user_specified_image: rec.user_specified_image.clone(),
            ..Default::default()
        }),
        image_ref: rec.image_ref.clone(),
        reason: rec.reason().to_string(),
        message: rec.message.clone(),
        labels: super::string_map(&rec.labels),
        annotations: super::string_map(&rec.annotations),
        log_path: rec.log_path.clone(),
        image_id: rec.image_id.clone(),
        mounts: rec.mounts.iter().map(|m| m.to_cri()).collect(),
        resources: rec.resources.as_ref().map(|r| ContainerResources {
            linux: Some(r.to_cri()),
            windows: None,
        }),
        user: rec.user.as_ref().map(|u| u.to_cri()),
        stop_signal: cri_signal(rec.stop_signal) as i32,
    }
}

/// The CRI enum value of a signal number (RUNTIME_DEFAULT when it has no name there).
fn cri_signal(n: i32) -> Signal {
    nix::sys::signal::Signal::try_from(n)
        .ok()
        .and_then(|s| berth_api::signal::from_name(s.as_str()))
        .unwrap_or(Signal::RuntimeDefault)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_signal_names() {
        assert_eq!(cri_signal(libc::SIGTERM), Signal::Sigterm);
        assert_eq!(cri_signal(libc::SIGQUIT), Signal::Sigquit);
        assert_eq!(cri_signal(libc::SIGRTMIN() + 3), Signal::RuntimeDefault);
        assert_eq!(cri_signal(0), Signal::RuntimeDefault);
    }
}
