//! `RestorePod` (CRI 1.37): a new pod sandbox from the request's config and
//! its containers from a CheckpointPod's directory ([`super::sandbox_checkpoint`]),
//! each CREATED from its archive (CheckpointContainer's restore path: the
//! rootfs diff applied, CRIU restores the process tree at StartContainer,
//! which the kubelet calls after its pre-start hooks). The checkpoint is
//! only read. On any error the pod and every container this call made are
//! removed before the answer.

use std::collections::{BTreeSet, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};

use berth_api::v1::{
    ContainerConfig, CreateContainerRequest, RemovePodSandboxRequest, RestorePodRequest,
    RestorePodResponse, RestoredContainer, RunPodSandboxRequest, StopPodSandboxRequest,
};
use tonic::Status;

use super::sandbox_checkpoint::{MANIFEST, MANIFEST_VERSION, Manifest, archive_name};
use crate::daemon::Daemon;

/// Largest `pod.json` read.
const MAX_MANIFEST: u64 = 1 << 20;

#[tracing::instrument(skip_all, fields(checkpoint = %req.checkpoint_path))]
pub async fn restore_pod(
    daemon: &Daemon,
    req: RestorePodRequest,
) -> Result<RestorePodResponse, Status> {
    if let Some(key) = req.options.keys().next() {
        return Err(Status::invalid_argument(format!(
            "RestorePod option {key:?} is not supported: Berth takes no options"
        )));
    }
    let config = req
        .config
        .ok_or_else(|| Status::invalid_argument("config is required"))?;
    let dir = checkpoint_dir(&req.checkpoint_path)?;
    let manifest = read_manifest(&dir)?;
    let plan = match_configs(&dir, &manifest, req.container_configs)?;
    for (cfg, entry) in &plan {
        check_image(daemon, cfg, entry)?;
    }

    let pod_id = super::sandbox_run::run_pod_sandbox(
        daemon,
        RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: req.runtime_handler,
        },
    )
    .await?
    .pod_sandbox_id;
    let mut restored = Vec::with_capacity(plan.len());
    for (mut cfg, entry) in plan {
        let name = entry.name.clone();
        // CreateContainer's restore path: the image names the archive.
        let image = cfg.image.get_or_insert_default();
        image.image = entry.archive.display().to_string();
        let created = super::container_create::create_container(
            daemon,
            CreateContainerRequest {
                pod_sandbox_id: pod_id.clone(),
                config: Some(cfg),
                sandbox_config: Some(config.clone()),
            },
        )
        .await;
        match created {
            Ok(c) => restored.push(RestoredContainer {
                name,
                container_id: c.container_id,
            }),
            Err(e) => {
                tracing::warn!(pod = %pod_id, container = %name, error = %e, "RestorePod: a container failed; removing the pod");
                undo(daemon, &pod_id).await;
                return Err(Status::new(
                    e.code(),
                    format!("restoring container {name:?}: {}", e.message()),
                ));
            }
        }
    }
    tracing::info!(pod = %pod_id, containers = restored.len(), from = %manifest.pod_sandbox_id, "pod restored from its checkpoint (containers CREATED)");
    Ok(RestorePodResponse {
        pod_sandbox_id: pod_id,
        restored_containers: restored,
    })
}

/// Stops and removes the pod (with its containers); its own errors are
/// logged, the caller answers with the error that caused it.
async fn undo(daemon: &Daemon, pod_id: &str) {
    let id = pod_id.to_string();
    if let Err(e) = super::sandbox_stop::stop_pod_sandbox(
        daemon,
        StopPodSandboxRequest {
            pod_sandbox_id: id.clone(),
        },
    )
    .await
    {
        tracing::error!(pod = %pod_id, error = %e, "RestorePod: cannot stop the partly restored pod");
    }
    if let Err(e) = super::sandbox_remove::remove_pod_sandbox(
        daemon,
        RemovePodSandboxRequest { pod_sandbox_id: id },
    )
    .await
    {
        tracing::error!(pod = %pod_id, error = %e, "RestorePod: cannot remove the partly restored pod");
    }
}

/// One container to restore: the manifest's entry, with its archive's path.
#[derive(Debug, Clone, PartialEq)]
struct Entry {
    name: String,
    image_id: String,
    archive: PathBuf,
}

/// `path` as a checkpoint dir: absolute, plain, a directory.
fn checkpoint_dir(path: &str) -> Result<PathBuf, Status> {
    super::plain_absolute_path("checkpoint_path", path, "a CheckpointPod directory")?;
    let bad = |why: String| Status::invalid_argument(format!("checkpoint_path {path:?} {why}"));
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => Ok(PathBuf::from(path)),
        Ok(_) => Err(bad("is not a directory".into())),
        Err(e) => Err(bad(format!("cannot be read: {e}"))),
    }
}

/// The dir's `pod.json`: a regular file of at most [`MAX_MANIFEST`] bytes,
/// of this version, whose archives are `containers/<n>.tar` in order.
fn read_manifest(dir: &Path) -> Result<Manifest, Status> {
    let bad = |why: String| {
        Status::invalid_argument(format!(
            "{} is not a Berth pod checkpoint: {why}",
            dir.display()
        ))
    };
    let path = dir.join(MANIFEST);
    let meta = std::fs::symlink_metadata(&path).map_err(|e| bad(format!("{MANIFEST}: {e}")))?;
    if !meta.is_file() {
        return Err(bad(format!("{MANIFEST} is not a regular file")));
    }
    let mut text = Vec::new();
    std::fs::File::open(&path)
        .and_then(|f| f.take(MAX_MANIFEST + 1).read_to_end(&mut text))
        .map_err(|e| bad(format!("{MANIFEST}: {e}")))?;
    if text.len() as u64 > MAX_MANIFEST {
        return Err(bad(format!("{MANIFEST} is over {MAX_MANIFEST} bytes")));
    }
    let m: Manifest = serde_json::from_slice(&text).map_err(|e| bad(format!("{MANIFEST}: {e}")))?;
    if m.version != MANIFEST_VERSION {
        return Err(bad(format!(
            "{MANIFEST} version {} (this berthd reads {MANIFEST_VERSION})",
            m.version
        )));
    }
    if m.containers.is_empty() {
        return Err(bad(format!("{MANIFEST} lists no container")));
    }
    for (n, c) in m.containers.iter().enumerate() {
        // Never a path from the file: the archive's name is fixed by its place.
        if c.archive != archive_name(n) {
            return Err(bad(format!(
                "container {:?}'s archive is {:?}, not {:?}",
                c.name,
                c.archive,
                archive_name(n)
            )));
        }
    }
    Ok(m)
}

/// Each request config with its checkpointed container, matched by
/// metadata name; the names must be unique and exactly the checkpoint's.
fn match_configs(
    dir: &Path,
    manifest: &Manifest,
    configs: Vec<ContainerConfig>,
) -> Result<Vec<(ContainerConfig, Entry)>, Status> {
    if configs.is_empty() {
        return Err(Status::invalid_argument(
            "container_configs is empty: give one config per checkpointed container",
        ));
    }
    let mut entries: HashMap<&str, Entry> = HashMap::new();
    for (n, c) in manifest.containers.iter().enumerate() {
        let entry = Entry {
            name: c.name.clone(),
            image_id: c.image_id.clone(),
            archive: dir.join(archive_name(n)),
        };
        if entries.insert(c.name.as_str(), entry).is_some() {
            return Err(Status::invalid_argument(format!(
                "the checkpoint names container {:?} twice",
                c.name
            )));
        }
    }
    let mut plan = Vec::with_capacity(configs.len());
    let mut names = BTreeSet::new();
    for cfg in configs {
        let name = cfg
            .metadata
            .as_ref()
            .map(|m| m.name.clone())
            .unwrap_or_default();
        if name.is_empty() {
            return Err(Status::invalid_argument(
                "a container config has no metadata name",
            ));
        }
        if !names.insert(name.clone()) {
            return Err(Status::invalid_argument(format!(
                "container_configs names {name:?} twice"
            )));
        }
        let Some(entry) = entries.get(name.as_str()) else {
            return Err(Status::invalid_argument(format!(
                "container {name:?} is not in the checkpoint (it holds {:?})",
                manifest
                    .containers
                    .iter()
                    .map(|c| &c.name)
                    .collect::<Vec<_>>()
            )));
        };
        let meta = std::fs::symlink_metadata(&entry.archive);
        if !meta.is_ok_and(|m| m.is_file()) {
            return Err(Status::invalid_argument(format!(
                "container {name:?}'s archive {} is missing or not a regular file",
                entry.archive.display()
            )));
        }
        plan.push((cfg, entry.clone()));
    }
    let missing: Vec<&str> = entries
        .keys()
        .filter(|n| !names.contains(**n))
        .copied()
        .collect();
    if !missing.is_empty() {
        return Err(Status::invalid_argument(format!(
            "no container config for the checkpointed container(s) {missing:?}"
        )));
    }
    Ok(plan)
}

/// The config's image must be the checkpointed one (the rootfs diff and
/// the process state belong to it).
fn check_image(daemon: &Daemon, cfg: &ContainerConfig, entry: &Entry) -> Result<(), Status> {
    let requested = cfg.image.as_ref().map(|i| i.image.as_str()).unwrap_or("");
    if requested.is_empty() {
        return Err(Status::invalid_argument(format!(
            "container {:?}: the config names no image",
            entry.name
        )));
    }
    let found = daemon
        .images()
        .get(requested)
        .map_err(|e| Status::internal(format!("looking up image {requested}: {e}")))?;
    match found {
        Some(img) if img.id == entry.image_id => Ok(()),
        Some(img) => Err(Status::invalid_argument(format!(
            "container {:?}: image {requested} is {}, but the container was checkpointed from {}",
            entry.name, img.id, entry.image_id
        ))),
        None => Err(Status::failed_precondition(format!(
            "container {:?}: image {requested} is not on the node (pull it first; the checkpoint \
             was taken from {})",
            entry.name, entry.image_id
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::super::sandbox_checkpoint::ManifestContainer;
    use super::*;
    use berth_api::v1::{ContainerMetadata, ImageSpec};

    fn manifest(names: &[&str]) -> Manifest {
        Manifest {
            version: MANIFEST_VERSION,
            pod_sandbox_id: "p".into(),
            pod_name: "n".into(),
            pod_namespace: "ns".into(),
            pod_uid: "u".into(),
            containers: names
                .iter()
                .enumerate()
                .map(|(n, name)| ManifestContainer {
                    name: name.to_string(),
                    id: format!("id{n}"),
                    image: "busybox".into(),
                    image_id: "sha256:x".into(),
                    archive: archive_name(n),
                })
                .collect(),
        }
    }

    fn cfg(name: &str) -> ContainerConfig {
        ContainerConfig {
            metadata: Some(ContainerMetadata {
                name: name.into(),
                attempt: 0,
            }),
            image: Some(ImageSpec {
                image: "busybox".into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn write_checkpoint(dir: &Path, m: &Manifest) {
        std::fs::write(dir.join(MANIFEST), serde_json::to_vec(m).unwrap()).unwrap();
        std::fs::create_dir_all(dir.join("containers")).unwrap();
        for n in 0..m.containers.len() {
            std::fs::write(dir.join(archive_name(n)), "").unwrap();
        }
    }

    #[test]
    fn configs_are_matched_by_name_exactly() {
        let t = tempfile::tempdir().unwrap();
        let m = manifest(&["a", "b"]);
        write_checkpoint(t.path(), &m);
        let plan = match_configs(t.path(), &m, vec![cfg("b"), cfg("a")]).unwrap();
        assert_eq!(plan[0].1.name, "b");
        assert_eq!(plan[0].1.archive, t.path().join("containers/1.tar"));
        for configs in [
            vec![],
            vec![cfg("a")],
            vec![cfg("a"), cfg("b"), cfg("c")],
            vec![cfg("a"), cfg("a")],
            vec![cfg(""), cfg("b")],
        ] {
            let e = match_configs(t.path(), &m, configs.clone()).unwrap_err();
            assert_eq!(e.code(), tonic::Code::InvalidArgument, "{configs:?}: {e:?}");
        }
        std::fs::remove_file(t.path().join(archive_name(1))).unwrap();
        let e = match_configs(t.path(), &m, vec![cfg("a"), cfg("b")]).unwrap_err();
        assert!(e.message().contains("missing"), "{e:?}");
    }

    #[test]
    fn manifests_are_checked() {
        let t = tempfile::tempdir().unwrap();
        assert!(read_manifest(t.path()).is_err(), "no pod.json");
        let m = manifest(&["a"]);
        write_checkpoint(t.path(), &m);
        assert_eq!(read_manifest(t.path()).unwrap(), m);
        let mut other = m.clone();
        other.version = 2;
        write_checkpoint(t.path(), &other);
        assert!(read_manifest(t.path()).is_err());
        let mut escape = m.clone();
        escape.containers[0].archive = "../../etc/passwd".into();
        write_checkpoint(t.path(), &escape);
        let e = read_manifest(t.path()).unwrap_err();
        assert!(e.message().contains("archive"), "{e:?}");
        write_checkpoint(t.path(), &manifest(&[]));
        assert!(read_manifest(t.path()).is_err());
    }

    #[test]
    fn checkpoint_paths_are_checked() {
        let t = tempfile::tempdir().unwrap();
        checkpoint_dir(t.path().to_str().unwrap()).unwrap();
        for bad in ["", "rel", "/no/such/dir", "/tmp/../tmp"] {
            assert!(checkpoint_dir(bad).is_err(), "{bad:?}");
        }
    }
}
