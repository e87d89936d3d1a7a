//! Many containers from one image: every container's rootfs is an overlay
//! of the same shared layer dir, so each one costs only its own upper dir.

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use berth_api::v1::*;
use berth_e2e::pods::*;

const PODS: usize = 5;
const PER_POD: usize = 10;

/// Bytes allocated on disk under `dir` (hard links counted once).
fn disk_usage(dir: &Path) -> u64 {
    let mut seen = HashSet::new();
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let m = e.metadata().unwrap();
            if m.is_dir() {
                stack.push(e.path());
            }
            if seen.insert((m.dev(), m.ino())) {
                total += m.blocks() * 512;
            }
        }
    }
    total
}

/// The overlay mount options of the mount at `target`.
fn overlay_options(target: &Path) -> String {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let target = target.to_str().unwrap();
    info.lines()
        .find(|l| l.split(' ').nth(4) == Some(target))
        .and_then(|l| l.split(" - ").nth(1))
        .unwrap_or_else(|| panic!("{target} is not mounted"))
        .to_string()
}

#[tokio::test]
async fn fifty_containers_share_the_image_layers() {
    let mut env = setup(&[BUSYBOX]).await;
    let image = env
        .c
        .image
        .image_status(ImageStatusRequest {
            image: Some(ImageSpec {
                image: BUSYBOX.into(),
                ..Default::default()
            }),
            verbose: true,
        })
        .await
        .unwrap()
        .into_inner();
    let info: serde_json::Value = serde_json::from_str(&image.info["info"]).unwrap();
    let diff_id = info["layers"][0].as_str().unwrap().to_string();
    let layer_dir = env
        .d
        .config
        .root
        .join("images/layers")
        .join(diff_id.trim_start_matches("sha256:"));
    assert!(layer_dir.is_dir(), "{layer_dir:?}");
    let layers_before = disk_usage(&env.d.config.root.join("images/layers"));

    // Each container writes 1 MiB of its own, then waits.
    let script = "dd if=/dev/zero of=/own.bin bs=1M count=1 2>/dev/null; touch /ready; sleep 1000";
    let mut ids = vec![];
    let started = std::time::Instant::now();
    for p in 0..PODS {
        let (pod, pod_cfg) = run_pod(&mut env, &format!("many-{p}")).await;
        for i in 0..PER_POD {
            let cfg = ctr_config(&format!("c{i}"), BUSYBOX, script);
            let id = create(&mut env.c, &pod, &pod_cfg, cfg).await.unwrap();
            start(&mut env.c, &id).await;
            ids.push(id);
        }
    }
    println!(
        "{} containers created and started in {:?}",
        ids.len(),
        started.elapsed()
    );

    let mut uppers: Vec<PathBuf> = vec![];
    for id in &ids {
        let st = env
            .c
            .runtime
            .container_status(ContainerStatusRequest {
                container_id: id.clone(),
                verbose: true,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            st.status.unwrap().state,
            ContainerState::ContainerRunning as i32
        );
        let rec: serde_json::Value = serde_json::from_str(&st.info["info"]).unwrap();
        let rootfs = PathBuf::from(rec["bundle"].as_str().unwrap()).join("rootfs");
        let opts = overlay_options(&rootfs);
        // The only lower layer is the image's one shared, read-only dir.
        assert!(
            opts.contains(&format!("lowerdir={}", layer_dir.display())),
            "{opts}"
        );
        let upper = PathBuf::from(rec["layer_dir"].as_str().unwrap()).join("upper");
        assert!(
            opts.contains(&format!("upperdir={}", upper.display())),
            "{opts}"
        );
        // Wait until the container wrote its file.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while !upper.join("ready").exists() {
            assert!(std::time::Instant::now() < deadline, "{id} never got ready");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        uppers.push(upper);
    }

    // The image's layers were not copied: their disk use is what it was.
    let layers_after = disk_usage(&env.d.config.root.join("images/layers"));
    assert_eq!(layers_before, layers_after);
    // Each container costs its own upper dir: its 1 MiB file and little else.
    let per_container: Vec<u64> = uppers.iter().map(|u| disk_usage(u)).collect();
    for (u, bytes) in uppers.iter().zip(&per_container) {
        assert!(
            (1 << 20..(1 << 20) + (256 << 10)).contains(bytes),
            "{u:?}: {bytes} bytes"
        );
    }
    let containers_total = disk_usage(&env.d.config.root.join("containers"));
    println!(
        "image layer (stored once): {} KiB; {} containers: {} KiB in all, {} KiB each on average",
        layers_after / 1024,
        ids.len(),
        containers_total / 1024,
        containers_total / 1024 / ids.len() as u64
    );
    assert!(containers_total < ids.len() as u64 * ((1 << 20) + (256 << 10)));
}
