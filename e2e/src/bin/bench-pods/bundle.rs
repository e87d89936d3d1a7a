//! `--save-bundle STATE --bundle-out DIR`: the inputs of crates/shim/examples/monitor-profile.rs
//! (the libcontainer floor) from a real berthd container.

use std::path::Path;

use anyhow::Context;
use berth_e2e::client::CriClient;

use crate::cri;
use crate::requests::Bench;

/// Creates one pod and container on berthd (state dir `state`), copies the container's
/// bundle `config.json` and its rootfs overlay's `lowerdir` (the image's layer dirs) into
/// `dir`, and removes both: the inputs of crates/shim/examples/monitor-profile.rs.
pub async fn save_bundle(
    bench: &Bench,
    c: &mut CriClient,
    state: &Path,
    dir: &Path,
) -> anyhow::Result<()> {
    let name = format!("{}-bundle", bench.run_tag);
    let config = bench.pod_config(&name)?;
    let pod = cri::run_pod(c, &config).await?;
    let copied = async {
        let ctr = cri::create_ctr(c, &pod, bench.ctr_config(), &config, "").await?;
        let bundle = state.join("containers").join(&ctr);
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        std::fs::copy(bundle.join("config.json"), dir.join("config.json"))
            .with_context(|| format!("copying {}/config.json", bundle.display()))?;
        let rootfs = bundle.join("rootfs");
        let rootfs = rootfs.to_string_lossy();
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")?;
        let lower = mountinfo
            .lines()
            .find_map(|l| {
                let (fields, fs) = l.split_once(" - ")?;
                if fields.split(' ').nth(4)? != rootfs {
                    return None;
                }
                fs.split(' ')
                    .nth(2)?
                    .split(',')
                    .find_map(|o| o.strip_prefix("lowerdir="))
                    .map(str::to_string)
            })
            .with_context(|| format!("no overlay with a lowerdir mounted at {rootfs}"))?;
        std::fs::write(dir.join("lowerdir"), &lower)?;
        println!(
            "saved the bundle of container {ctr} to {} (lowerdir {lower})",
            dir.display()
        );
        anyhow::Ok(())
    }
    .await;
    cri::teardown(c, &pod, None).await?;
    let _ = std::fs::remove_dir_all(bench.log_dir.join(&name));
    copied
}
