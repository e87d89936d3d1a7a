//! `CheckpointPod` (CRI 1.37): the selected running containers of a pod
//! captured at one moment (all paused by the cgroup freezer before CRIU
//! captures any, all resumed before the answer, whatever it is) into the
//! caller's empty directory:
//!
//! - `pod.json`: the manifest ([`Manifest`]): the pod's metadata and, for
//!   each container, its name, id, image and archive;
//! - `containers/<n>.tar`: each container's archive, in CheckpointContainer's
//!   layout (CRI-O's), which RestorePod creates the containers from.
//!
//! Nothing is written outside the directory; on an error what was written
//! in it is removed, the directory itself stays (it is the caller's).

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use berth_api::v1::{CheckpointPodRequest, CheckpointPodResponse};
use serde::{Deserialize, Serialize};
use tonic::Status;

use crate::container::{CriuOptions, PodMember};
use crate::daemon::Daemon;
use crate::sandbox::SandboxState;

/// The manifest's name in a pod checkpoint.
pub const MANIFEST: &str = "pod.json";
/// The dir of the containers' archives in a pod checkpoint.
pub const CONTAINERS_DIR: &str = "containers";
/// The manifest's format.
pub const MANIFEST_VERSION: u32 = 1;
/// Time kept back from the client's deadline to undo a failed checkpoint
/// before berthd's RPC layer gives up on it.
const CLEANUP_MARGIN_DIVISOR: u32 = 8;

/// `pod.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Manifest {
    pub version: u32,
    pub pod_sandbox_id: String,
    pub pod_name: String,
    pub pod_namespace: String,
    pub pod_uid: String,
    pub containers: Vec<ManifestContainer>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ManifestContainer {
    /// The container's metadata name: RestorePod matches configs by it.
    pub name: String,
    pub id: String,
    /// The image as the container's config named it, and its id (the
    /// restore's config must name the same image).
    pub image: String,
    pub image_id: String,
    /// Its archive, relative to the checkpoint dir: `containers/<n>.tar`.
    pub archive: String,
}

/// The archive of the `n`th container, relative to the checkpoint dir.
pub fn archive_name(n: usize) -> String {
    format!("{CONTAINERS_DIR}/{n}.tar")
}

#[tracing::instrument(skip_all, fields(pod = %req.pod_sandbox_id, output = %req.output_path))]
pub async fn checkpoint_pod(
    daemon: &Daemon,
    req: CheckpointPodRequest,
    budget: Option<Duration>,
) -> Result<CheckpointPodResponse, Status> {
    if req.pod_sandbox_id.is_empty() {
        return Err(Status::invalid_argument("pod_sandbox_id is required"));
    }
    if let Some(key) = req.options.keys().next() {
        return Err(Status::invalid_argument(format!(
            "CheckpointPod option {key:?} is not supported: Berth takes no options"
        )));
    }
    check_container_ids(&req.container_ids)?;
    let out = empty_output_dir(&req.output_path)?;
    let pod = super::pod_or_not_found(daemon, &req.pod_sandbox_id)?;
    if pod.state != SandboxState::Ready {
        return Err(Status::failed_precondition(format!(
            "pod sandbox {} is not ready: only a running pod can be checkpointed",
            pod.id
        )));
    }
    let config = &daemon.config().checkpoint;
    let timeout = match budget {
        Some(b) => b - b / CLEANUP_MARGIN_DIVISOR,
        None => Duration::from_secs(config.default_timeout_secs),
    };
    let opts = CriuOptions {
        criu: config.criu_path.clone(),
        timeout,
    };

    // What this call writes goes again on any way out but success (also
    // when the RPC layer drops the call at the client's deadline).
    let mut written = Written {
        dir: out.clone(),
        keep: false,
    };
    let containers_dir = out.join(CONTAINERS_DIR);
    std::fs::create_dir(&containers_dir).map_err(|e| {
        Status::internal(format!("cannot create {}: {e}", containers_dir.display()))
    })?;
    let members: Vec<PodMember> = req
        .container_ids
        .iter()
        .enumerate()
        .map(|(n, id)| PodMember {
            id: id.clone(),
            archive: out.join(archive_name(n)),
        })
        .collect();
    let recs = daemon
        .containers()
        .checkpoint_pod(&pod.id, &pod.cgroup_parent, &members, &opts)
        .await?;
    let manifest = Manifest {
        version: MANIFEST_VERSION,
        pod_sandbox_id: pod.id.clone(),
        pod_name: pod.name.clone(),
        pod_namespace: pod.namespace.clone(),
        pod_uid: pod.uid.clone(),
        containers: recs
            .iter()
            .enumerate()
            .map(|(n, r)| ManifestContainer {
                name: r.name.clone(),
                id: r.id.clone(),
                image: r.image.clone(),
                image_id: r.image_id.clone(),
                archive: archive_name(n),
            })
            .collect(),
    };
    let json = serde_json::to_vec_pretty(&manifest)
        .map_err(|e| Status::internal(format!("cannot encode {MANIFEST}: {e}")))?;
    std::fs::write(out.join(MANIFEST), json)
        .map_err(|e| Status::internal(format!("cannot write {MANIFEST}: {e}")))?;
    written.keep = true;
    Ok(CheckpointPodResponse {})
}

/// Removes the manifest and the archives dir from `dir` when dropped
/// unless `keep`.
struct Written {
    dir: PathBuf,
    keep: bool,
}

impl Drop for Written {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        let _ = std::fs::remove_file(self.dir.join(MANIFEST));
        let archives = self.dir.join(CONTAINERS_DIR);
        if let Err(e) = std::fs::remove_dir_all(&archives)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(dir = %archives.display(), error = %e, "cannot remove a failed pod checkpoint's archives");
        }
    }
}

fn check_container_ids(ids: &[String]) -> Result<(), Status> {
    if ids.is_empty() {
        return Err(Status::invalid_argument(
            "container_ids is empty: name the running containers to checkpoint",
        ));
    }
    let mut seen = HashSet::new();
    for id in ids {
        if id.is_empty() {
            return Err(Status::invalid_argument("container_ids holds an empty id"));
        }
        if !seen.insert(id.as_str()) {
            return Err(Status::invalid_argument(format!(
                "container_ids names {id} twice"
            )));
        }
    }
    Ok(())
}

/// `path` as the checkpoint's dir: absolute, plain (no `.`, `..`), an
/// existing directory (not a symlink to one), empty.
fn empty_output_dir(path: &str) -> Result<PathBuf, Status> {
    super::plain_absolute_path("output_path", path, "an existing, empty directory")?;
    let bad = |why: String| Status::invalid_argument(format!("output_path {path:?} {why}"));
    let meta = std::fs::symlink_metadata(path).map_err(|e| bad(format!("cannot be read: {e}")))?;
    if !meta.is_dir() {
        return Err(bad("is not a directory".into()));
    }
    let mut entries = std::fs::read_dir(path).map_err(|e| bad(format!("cannot be listed: {e}")))?;
    if entries.next().is_some() {
        return Err(bad("is not empty".into()));
    }
    Ok(PathBuf::from(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_ids_are_checked() {
        assert!(check_container_ids(&[]).is_err());
        assert!(check_container_ids(&["".into()]).is_err());
        assert!(check_container_ids(&["a".into(), "a".into()]).is_err());
        check_container_ids(&["a".into(), "b".into()]).unwrap();
    }

    #[test]
    fn the_output_dir_must_be_an_empty_plain_dir() {
        let t = tempfile::tempdir().unwrap();
        let ok = t.path().join("ok");
        std::fs::create_dir(&ok).unwrap();
        assert_eq!(empty_output_dir(ok.to_str().unwrap()).unwrap(), ok);
        let full = t.path().join("full");
        std::fs::create_dir(&full).unwrap();
        std::fs::write(full.join("x"), "").unwrap();
        let link = t.path().join("link");
        std::os::unix::fs::symlink(&ok, &link).unwrap();
        let file = t.path().join("file");
        std::fs::write(&file, "").unwrap();
        for bad in [
            String::new(),
            "relative".to_string(),
            full.display().to_string(),
            link.display().to_string(),
            file.display().to_string(),
            format!("{}/../ok", ok.display()),
            t.path().join("missing").display().to_string(),
        ] {
            let e = empty_output_dir(&bad).unwrap_err();
            assert_eq!(e.code(), tonic::Code::InvalidArgument, "{bad:?}: {e:?}");
        }
    }

    #[test]
    fn the_manifest_round_trips_and_refuses_unknown_fields() {
        let m = Manifest {
            version: MANIFEST_VERSION,
            pod_sandbox_id: "p".into(),
            pod_name: "n".into(),
            pod_namespace: "ns".into(),
            pod_uid: "u".into(),
            containers: vec![ManifestContainer {
                name: "c".into(),
                id: "i".into(),
                image: "busybox".into(),
                image_id: "sha256:x".into(),
                archive: archive_name(0),
            }],
        };
        let json = serde_json::to_string(&m).unwrap();
        assert!(json.contains("\"archive\":\"containers/0.tar\""), "{json}");
        assert_eq!(serde_json::from_str::<Manifest>(&json).unwrap(), m);
        let extra = json.replacen("{", "{\"x\":1,", 1);
        assert!(serde_json::from_str::<Manifest>(&extra).is_err());
    }
}
