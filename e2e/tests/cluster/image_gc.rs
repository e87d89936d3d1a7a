//! Image garbage collection by the kubelet through Berth (ImageFsInfo, ListImages, RemoveImage):
//! with its thresholds below the disk's current use, the kubelet removes the images no container
//! uses and keeps those in use. Serial: it restarts the kubelet with another configuration.
//! Slow: the kubelet's image GC runs at its start (where it always fails once: "invalid capacity
//! 0 on image filesystem", its filesystem stats are not ready yet) and then every 5 minutes
//! (ImageGCPeriod, not configurable), so the test takes over 5 minutes: it is `#[ignore]`d and
//! run by `hack/cluster-test.sh --slow` (as `slow_*` with --ignored).

use std::process::Command;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};

use crate::common::*;

fn cluster_dir() -> String {
    std::env::var("BERTH_CLUSTER_DIR").unwrap_or_else(|_| "/var/lib/berth-cluster".into())
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?}: {}", text(&out.stderr));
    text(&out.stdout)
}

/// Berth's images as `crictl images -o json` lists them: (id, repo tags).
fn images() -> Vec<(String, Vec<String>)> {
    let listed: Value =
        serde_json::from_str(&run(Command::new("crictl").args(["images", "-o", "json"]))).unwrap();
    listed["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            let tags = i["repoTags"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|t| t.as_str().map(str::to_owned));
            (i["id"].as_str().unwrap().to_owned(), tags.collect())
        })
        .collect()
}

fn has_image(tag: &str) -> bool {
    images()
        .iter()
        .any(|(_, tags)| tags.iter().any(|t| t == tag))
}

/// The kubelet restarted (by its supervisor) on its config file with `edit` applied; the
/// original file and kubelet are back when dropped.
struct KubeletConfig {
    path: String,
    original: String,
}

impl KubeletConfig {
    fn edit(edit: impl Fn(&str) -> String) -> KubeletConfig {
        let path = format!("{}/kubelet/config.yaml", cluster_dir());
        let original = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        std::fs::write(&path, edit(&original)).unwrap();
        restart_kubelet();
        KubeletConfig { path, original }
    }
}

impl Drop for KubeletConfig {
    fn drop(&mut self) {
        let _ = std::fs::write(&self.path, &self.original);
        restart_kubelet();
    }
}

/// SIGTERM to the kubelet; its supervisor starts it again. Returns once the new one is healthy.
fn restart_kubelet() {
    let pid_file = format!("{}/kubelet.pid", run_dir());
    let old = std::fs::read_to_string(&pid_file)
        .expect("kubelet pid file")
        .trim()
        .to_owned();
    run(Command::new("kill").args(["-TERM", &old]));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let pid = std::fs::read_to_string(&pid_file)
            .unwrap_or_default()
            .trim()
            .to_owned();
        let healthy = pid != old
            && Command::new("curl")
                .args(["-fs", "-o", "/dev/null", "http://127.0.0.1:10248/healthz"])
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
        if healthy {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the kubelet did not come back within 60 s"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Pushes an image of its own to the cluster's registry (busybox with one more label: its own
/// config, so its own image ID, sharing busybox's layer) and pulls it into Berth, unused.
fn pull_unused_image(tag: &str) -> String {
    let registry = format!(
        "127.0.0.1:{}",
        std::fs::read_to_string(format!("{}/registry.port", cluster_dir()))
            .unwrap()
            .trim()
    );
    let cache = std::env::var("BERTH_CACHE")
        .unwrap_or_else(|_| format!("{}/.cache/berth", std::env::var("HOME").unwrap()));
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("oci");
    let layout = layout.to_str().unwrap();
    run(Command::new("skopeo").args([
        "copy",
        "--quiet",
        "--insecure-policy",
        &format!("oci:{cache}/cluster-images/oci:busybox"),
        &format!("oci:{layout}:victim"),
    ]));
    run(Command::new("umoci").args([
        "config",
        "--image",
        &format!("{layout}:victim"),
        "--config.label",
        &format!("berth-e2e={tag}"),
    ]));
    let image = format!("{registry}/berth-e2e/gc-victim:{tag}");
    run(Command::new("skopeo").args([
        "copy",
        "--quiet",
        "--insecure-policy",
        "--dest-tls-verify=false",
        &format!("oci:{layout}:victim"),
        &format!("docker://{image}"),
    ]));
    run(Command::new("crictl").args(["pull", &image]));
    image
}

#[tokio::test]
#[ignore = "slow (over 5 min: the kubelet's image GC period): run by hack/cluster-test.sh --slow"]
async fn slow_image_gc_removes_unused_images_keeps_used() {
    let ns = TestNs::new("imagegc").await;
    // In use: busybox (this pod) and CoreDNS.
    ns.create::<Pod>(pod(
        "user",
        "Always",
        vec![busybox("app", "sleep 3600")],
        json!({}),
    ))
    .await;
    let before = ns
        .wait_pod("user", "Ready", Duration::from_secs(60), pod_ready)
        .await;
    let tag = ns.name.clone();
    let victim = pull_unused_image(&tag);
    assert!(
        has_image(&victim),
        "{victim} not in Berth after crictl pull: {:?}",
        images()
    );

    {
        // Thresholds below the disk's use (and no minimum age: the restarted kubelet sees every
        // image for the first time): its image GC at start frees everything it may.
        let _config = KubeletConfig::edit(|config| {
            let edited: Vec<String> = config
                .lines()
                .map(|l| match l.split_once(':').map(|(k, _)| k) {
                    Some("imageGCHighThresholdPercent") => "imageGCHighThresholdPercent: 1".into(),
                    Some("imageGCLowThresholdPercent") => "imageGCLowThresholdPercent: 0".into(),
                    _ => l.to_owned(),
                })
                .collect();
            edited.join("\n") + "\nimageMinimumGCAge: 0s\n"
        });
        // The GC at the kubelet's start fails (its image filesystem stats are not ready), the
        // next one is 5 minutes later.
        wait_for(
            &format!("the kubelet removed {victim}"),
            Duration::from_secs(400),
            || async { (!has_image(&victim)).then_some(()) },
        )
        .await;
        let left = images();
        let tagged = |name: &str| {
            left.iter()
                .any(|(_, tags)| tags.iter().any(|t| t.starts_with(name)))
        };
        assert!(
            tagged("docker.io/library/busybox"),
            "busybox, in use, was removed: {left:?}"
        );
        assert!(
            tagged("registry.k8s.io/coredns/coredns"),
            "CoreDNS, in use, was removed: {left:?}"
        );
    }

    // The kubelet is back on its own config; the pod that uses busybox never noticed.
    let after = ns
        .wait_pod("user", "Ready", Duration::from_secs(60), pod_ready)
        .await;
    let id = |p: &Pod| container_status(p, "app").container_id.clone();
    assert_eq!(id(&after), id(&before), "the container was recreated");
    assert_eq!(restart_count(&after, "app"), 0);
    // The removed image's layer is busybox's too: a new busybox container still starts.
    ns.run_to_success(
        pod("again", "Never", vec![busybox("app", "echo ok")], json!({})),
        Duration::from_secs(60),
    )
    .await;
}
