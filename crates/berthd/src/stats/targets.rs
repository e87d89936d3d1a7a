//! What to measure, from the daemon's records: each container's cgroup path
//! (recomputed as CreateContainer computes it) and whether a pod has a
//! cgroup of its own.

use std::path::Path;

use super::{ContainerTarget, PodTarget};
use crate::container::{ContainerRecord, Containers};
use crate::sandbox::SandboxRecord;

/// `pod_cgroup_parent`: the container's pod's `cgroup_parent` ("" when the
/// pod names none or is gone).
pub fn container(rec: ContainerRecord, pod_cgroup_parent: &str) -> ContainerTarget {
    let cgroups_path = Containers::cgroups_path_of(pod_cgroup_parent, &rec.id);
    ContainerTarget { rec, cgroups_path }
}

/// `containers`: the pod's containers (others are ignored).
pub fn pod(pod: SandboxRecord, containers: impl IntoIterator<Item = ContainerRecord>) -> PodTarget {
    let containers = containers
        .into_iter()
        .filter(|c| c.pod_id == pod.id)
        .map(|c| container(c, &pod.cgroup_parent))
        .collect();
    PodTarget {
        cgroup: pod_cgroup(&pod.cgroup_parent),
        rec: pod,
        containers,
    }
}

/// The pod's own cgroup: the directory its containers' cgroups sit in
/// (`cgroup_parent` itself for the kubelet's cgroupfs driver, the slice's
/// expanded path for a systemd slice name). None for a pod without a parent:
/// its containers share Berth's default parent with other pods.
pub fn pod_cgroup(cgroup_parent: &str) -> Option<String> {
    if cgroup_parent.is_empty() {
        return None;
    }
    let probe = Containers::cgroups_path_of(cgroup_parent, "probe")?;
    let dir = Path::new(&probe).parent()?.to_str()?;
    // A relative single-component path (no directory) or the root: none.
    (!dir.is_empty() && dir != "/").then(|| dir.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_cgroup_is_where_its_containers_are() {
        assert_eq!(
            pod_cgroup("/kubepods/burstable/pod123").as_deref(),
            Some("/kubepods/burstable/pod123")
        );
        assert_eq!(
            pod_cgroup("/kubepods/besteffort/pod1/").as_deref(),
            Some("/kubepods/besteffort/pod1")
        );
        assert_eq!(pod_cgroup(""), None);
        assert_eq!(pod_cgroup("/"), None);
        // A slice: wherever CreateContainer nests the containers, if anywhere.
        let slice = "kubepods-burstable-pod123.slice";
        if let Some(p) = pod_cgroup(slice) {
            let c = Containers::cgroups_path_of(slice, "c1").unwrap();
            assert!(c.starts_with(&format!("{p}/")), "{c} not under {p}");
        }
    }

    #[test]
    fn container_cgroup_as_create_computes_it() {
        let rec: ContainerRecord = serde_json::from_value(serde_json::json!({
            "id": "abc", "pod_id": "p1", "name": "app", "attempt": 0,
            "image": "i", "image_id": "sha256:x", "image_ref": "sha256:x",
            "labels": {}, "annotations": {}, "log_path": "", "stop_signal": 15,
            "state": "RUNNING", "created_at": 1, "started_at": 1, "finished_at": 0,
            "exit_code": 0, "oom_killed": false, "bundle": "/b", "layer_dir": "/l"
        }))
        .unwrap();
        let t = container(rec.clone(), "/kubepods/pod1");
        assert_eq!(t.cgroups_path.as_deref(), Some("/kubepods/pod1/abc"));
        // No parent: Berth's default one.
        let t = container(rec, "");
        assert_eq!(t.cgroups_path.as_deref(), Some("/berth/abc"));
    }
}
