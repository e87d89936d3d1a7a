//! Resource requests and limits end up in the cgroups the kubelet asked for: the pod cgroups the
//! kubelet makes itself (kubepods/<qos>/pod<uid>) and the container cgroups Berth makes inside
//! them, read on the node the pods are pinned to ([`node_name`]). The kubelet uses the cgroupfs
//! driver (hack/cluster/kubelet-config.yaml; hack/kind/cluster.yaml, whose kubelet's cgroupRoot
//! puts kubepods below /kubelet).

use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use serde_json::json;

use crate::common::*;
use crate::node::*;

/// The kubelet's cgroup layout on this host: v1 (or a v1/v2 hybrid, which the kubelet treats
/// as v1) when the v1 memory controller holds `kubepods`, else the unified v2 hierarchy.
enum Layout {
    V1,
    V2,
}

/// Where the kubelet's `kubepods` is below a hierarchy's root: at the root, or below the
/// kubelet's cgroupRoot (kind's /kubelet).
const KUBEPODS: [&str; 2] = ["kubepods", "kubelet/kubepods"];

/// The node's layout, and its kubepods dir relative to the hierarchies.
fn layout() -> (Layout, &'static str) {
    let node = node_name();
    if let Some(k) = KUBEPODS
        .into_iter()
        .find(|k| node_exists(&node, &format!("/sys/fs/cgroup/memory/{k}")))
    {
        return (Layout::V1, k);
    }
    let k = KUBEPODS
        .into_iter()
        .find(|k| node_exists(&node, &format!("/sys/fs/cgroup/{k}")))
        .unwrap_or_else(|| panic!("no kubepods cgroup on node {node}"));
    (Layout::V2, k)
}

/// `kubepods/<rest>` of the kubelet's layout, relative to a hierarchy's root.
fn under_kubepods(rest: &str) -> String {
    let (_, k) = layout();
    if rest.is_empty() {
        k.to_owned()
    } else {
        format!("{k}/{rest}")
    }
}

fn read(path: PathBuf) -> String {
    let node = node_name();
    node_read(&node, &path.to_string_lossy())
        .unwrap_or_else(|| panic!("read {} on {node}", path.display()))
        .trim()
        .to_owned()
}

/// The values a cgroup holds for memory limit, CPU quota/period and CPU weight, in v1 terms
/// (v2's cpu.weight is mapped back from shares as the kubelet maps shares to it).
#[derive(Debug, PartialEq)]
struct Limits {
    memory: String,
    quota: String,
    period: String,
    shares_or_weight: String,
}

fn limits_of(rel: &str) -> Limits {
    match layout().0 {
        Layout::V1 => {
            let v1 = |ctl: &str, file: &str| {
                read(Path::new("/sys/fs/cgroup").join(ctl).join(rel).join(file))
            };
            Limits {
                memory: v1("memory", "memory.limit_in_bytes"),
                quota: v1("cpu", "cpu.cfs_quota_us"),
                period: v1("cpu", "cpu.cfs_period_us"),
                shares_or_weight: v1("cpu", "cpu.shares"),
            }
        }
        Layout::V2 => {
            let v2 = |file: &str| read(Path::new("/sys/fs/cgroup").join(rel).join(file));
            let cpu_max = v2("cpu.max");
            let (quota, period) = cpu_max.split_once(' ').unwrap();
            Limits {
                memory: v2("memory.max"),
                quota: if quota == "max" {
                    "-1".into()
                } else {
                    quota.into()
                },
                period: period.into(),
                shares_or_weight: v2("cpu.weight"),
            }
        }
    }
}

/// What the kubelet asks for: memory bytes, CPU millicores as quota (per 100 ms) and shares.
fn expected(
    memory_bytes: Option<u64>,
    cpu_limit_milli: Option<u64>,
    cpu_request_milli: u64,
) -> Limits {
    let shares = (cpu_request_milli * 1024 / 1000).max(2);
    match layout().0 {
        Layout::V1 => Limits {
            memory: memory_bytes.map_or(V1_NO_MEMORY_LIMIT.into(), |b| b.to_string()),
            quota: cpu_limit_milli.map_or("-1".into(), |m| (m * 100).to_string()),
            period: "100000".into(),
            shares_or_weight: shares.to_string(),
        },
        Layout::V2 => Limits {
            memory: memory_bytes.map_or("max".into(), |b| b.to_string()),
            quota: cpu_limit_milli.map_or("-1".into(), |m| (m * 100).to_string()),
            period: "100000".into(),
            shares_or_weight: (1 + ((shares - 2) * 9999) / 262142).to_string(),
        },
    }
}

/// memory.limit_in_bytes of a v1 cgroup without a limit (PAGE_COUNTER_MAX pages of 4 KiB).
const V1_NO_MEMORY_LIMIT: &str = "9223372036854771712";

fn container_id(pod: &Pod, container: &str) -> String {
    let id = container_status(pod, container)
        .container_id
        .clone()
        .expect("a container ID");
    id.split_once("://")
        .map(|(_, id)| id.to_owned())
        .unwrap_or(id)
}

#[tokio::test]
async fn requests_and_limits_in_cgroups() {
    let ns = TestNs::new("resources").await;
    let mi = 1024 * 1024;
    let mut burstable = busybox("app", "sleep 3600");
    burstable["resources"] = json!({
        "requests": { "cpu": "100m", "memory": "32Mi" },
        "limits": { "cpu": "250m", "memory": "64Mi" },
    });
    let mut guaranteed = busybox("app", "sleep 3600");
    guaranteed["resources"] = json!({ "limits": { "cpu": "200m", "memory": "48Mi" } });
    let best_effort = busybox("app", "sleep 3600");
    for (name, c) in [
        ("burstable", burstable),
        ("guaranteed", guaranteed),
        ("best-effort", best_effort),
    ] {
        ns.create::<Pod>(pod(
            name,
            "Always",
            vec![c],
            json!({ "nodeName": node_name() }),
        ))
        .await;
    }

    let cases = [
        // name, QoS dir, memory limit, CPU limit (m), CPU request (m)
        (
            "burstable",
            under_kubepods("burstable"),
            Some(64 * mi),
            Some(250),
            100,
        ),
        (
            "guaranteed",
            under_kubepods(""),
            Some(48 * mi),
            Some(200),
            200,
        ),
        ("best-effort", under_kubepods("besteffort"), None, None, 0),
    ];
    for (name, qos_dir, memory, cpu_limit, cpu_request) in cases {
        let pod = ns
            .wait_pod(name, "Ready", Duration::from_secs(60), pod_ready)
            .await;
        let qos = pod
            .status
            .as_ref()
            .and_then(|s| s.qos_class.clone())
            .unwrap();
        let uid = pod.metadata.uid.clone().unwrap();
        let pod_dir = format!("{qos_dir}/pod{uid}");
        let container_dir = format!("{pod_dir}/{}", container_id(&pod, "app"));
        let want = expected(memory, cpu_limit, cpu_request);
        // The pod cgroup (the kubelet's) and the container's (Berth's) both carry the limits:
        // one container, so the pod's sums are the container's values.
        assert_eq!(
            limits_of(&pod_dir),
            want,
            "{name} ({qos}): pod cgroup {pod_dir}"
        );
        assert_eq!(
            limits_of(&container_dir),
            want,
            "{name} ({qos}): container cgroup {container_dir}"
        );
        // The container's process is in the container's cgroup.
        let procs = match layout().0 {
            Layout::V1 => read(
                Path::new("/sys/fs/cgroup/memory")
                    .join(&container_dir)
                    .join("cgroup.procs"),
            ),
            Layout::V2 => read(
                Path::new("/sys/fs/cgroup")
                    .join(&container_dir)
                    .join("cgroup.procs"),
            ),
        };
        assert!(!procs.is_empty(), "{name}: no process in {container_dir}");
    }
}

/// In-place resize (`kubectl patch --subresource resize`, InPlacePodVerticalScaling): the
/// kubelet calls UpdateContainerResources; the new CPU and memory limits land in the running
/// container's cgroup, the pod status reports them from ContainerStatus, and the container is
/// not restarted.
#[tokio::test]
async fn in_place_resize_changes_the_live_cgroup() {
    let ns = TestNs::new("resize").await;
    let mi = 1024 * 1024;
    let mut app = busybox("app", "sleep 3600");
    app["resources"] = json!({
        "requests": { "cpu": "100m", "memory": "32Mi" },
        "limits": { "cpu": "200m", "memory": "64Mi" },
    });
    ns.create::<Pod>(pod(
        "resize",
        "Always",
        vec![app],
        json!({ "nodeName": node_name() }),
    ))
    .await;
    let before = ns
        .wait_pod("resize", "Ready", Duration::from_secs(60), pod_ready)
        .await;
    let uid = before.metadata.uid.clone().unwrap();
    let dir = under_kubepods(&format!(
        "burstable/pod{uid}/{}",
        container_id(&before, "app")
    ));
    assert_eq!(limits_of(&dir), expected(Some(64 * mi), Some(200), 100));

    let patch = json!({ "spec": { "containers": [{ "name": "app", "resources": {
        "requests": { "cpu": "150m", "memory": "32Mi" },
        "limits": { "cpu": "300m", "memory": "96Mi" },
    }}]}})
    .to_string();
    let out = kubectl_timeout(
        &[
            "patch",
            "pod",
            "resize",
            "-n",
            &ns.name,
            "--subresource",
            "resize",
            "--patch",
            &patch,
        ],
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    assert!(out.status.success(), "kubectl patch: {}", text(&out.stderr));
    let after = ns
        .wait_pod("resize", "resized", Duration::from_secs(60), |p| {
            let limits = has_container_status(p, "app")
                .and_then(|c| c.resources.as_ref())
                .and_then(|r| r.limits.as_ref());
            limits.is_some_and(|l| {
                l.get("cpu").is_some_and(|q| q.0 == "300m")
                    && l.get("memory").is_some_and(|q| q.0 == "96Mi")
            })
        })
        .await;
    assert_eq!(limits_of(&dir), expected(Some(96 * mi), Some(300), 150));
    assert_eq!(restart_count(&after, "app"), 0);
    assert_eq!(container_id(&after, "app"), container_id(&before, "app"));
}
