//! `CheckpointContainer`: kubelet forensic container checkpointing (`POST
//! /checkpoint/{namespace}/{pod}/{container}`). The running container is
//! dumped by CRIU and keeps running; the archive lands at `location`, in
//! CRI-O's layout (see `container::checkpoint`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use berth_api::v1::{CheckpointContainerRequest, CheckpointContainerResponse};
use tonic::Status;

use crate::container::CriuOptions;
use crate::daemon::Daemon;

/// A request's timeout is capped at this (a day), as the config's default.
const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

#[tracing::instrument(skip_all, fields(container = %req.container_id, location = %req.location, timeout = req.timeout))]
pub async fn checkpoint_container(
    daemon: &Daemon,
    req: CheckpointContainerRequest,
) -> Result<CheckpointContainerResponse, Status> {
    if req.container_id.is_empty() {
        return Err(Status::invalid_argument("container_id is required"));
    }
    let location = archive_location(&req.location)?;
    let config = &daemon.config().checkpoint;
    let timeout = if req.timeout > 0 {
        Duration::from_secs(req.timeout as u64).min(MAX_TIMEOUT)
    } else {
        Duration::from_secs(config.default_timeout_secs)
    };
    let opts = CriuOptions {
        criu: config.criu_path.clone(),
        timeout,
    };
    daemon
        .containers()
        .checkpoint(&req.container_id, &location, &opts)
        .await?;
    Ok(CheckpointContainerResponse {})
}

/// `location` as a path the archive may be written to: absolute, naming a
/// file, no `.` or `..` in it, its parent an existing dir.
fn archive_location(location: &str) -> Result<PathBuf, Status> {
    let path = super::plain_absolute_path(
        "location",
        location,
        "the path of the checkpoint archive to write",
    )?;
    if location.ends_with('/') || path.file_name().is_none() {
        return Err(Status::invalid_argument(format!(
            "location {location:?} must name a file (no trailing '/')"
        )));
    }
    let parent = path.parent().unwrap_or(Path::new("/"));
    match std::fs::metadata(parent) {
        Ok(m) if m.is_dir() => Ok(path.to_path_buf()),
        Ok(_) => Err(Status::invalid_argument(format!(
            "the parent of location {location:?} is not a directory"
        ))),
        Err(e) => Err(Status::invalid_argument(format!(
            "the parent dir of location {location:?} does not exist or cannot be read: {e}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_are_checked() {
        let t = tempfile::tempdir().unwrap();
        let ok = t.path().join("c.tar");
        assert_eq!(archive_location(ok.to_str().unwrap()).unwrap(), ok);
        for bad in [
            String::new(),
            "relative.tar".to_string(),
            format!("{}/", ok.display()),
            format!("{}/../c.tar", t.path().display()),
            format!("{}/./c.tar", t.path().display()),
            format!("{}/missing/c.tar", t.path().display()),
            "/".to_string(),
        ] {
            let e = archive_location(&bad).unwrap_err();
            assert_eq!(e.code(), tonic::Code::InvalidArgument, "{bad:?}: {e:?}");
        }
        let file = t.path().join("file");
        std::fs::write(&file, "").unwrap();
        let e = archive_location(&format!("{}/c.tar", file.display())).unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
    }
}
