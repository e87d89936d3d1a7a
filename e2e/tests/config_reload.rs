//! Config reload without a restart: registries.conf re-read when it changes
//! on disk and on SIGHUP; a broken file keeps the last good config and the
//! log says why; a plain-HTTP registry not marked `insecure` fails with a
//! message that says what to add. Needs root (berthd runs as root).

use std::time::{Duration, Instant};

use berth_api::v1::*;
use berth_e2e::client::CriClient;
use berth_e2e::daemon::{Berthd, BerthdConfig};
use berth_e2e::registry::Registry;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

async fn pull(c: &mut CriClient, image: &str) -> Result<String, tonic::Status> {
    c.image
        .pull_image(PullImageRequest {
            image: Some(ImageSpec {
                image: image.into(),
                ..Default::default()
            }),
            auth: None,
            sandbox_config: None,
        })
        .await
        .map(|r| r.into_inner().image_ref)
}

async fn remove(c: &mut CriClient, image: &str) {
    c.image
        .remove_image(RemoveImageRequest {
            image: Some(ImageSpec {
                image: image.into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
}

/// Replaces the file as config managers do (a new file renamed over it).
fn rewrite(path: &std::path::Path, text: &str) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Waits until `what` appears in the daemon's log `n` times.
async fn log_count(d: &Berthd, what: &str, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while d.log_text().matches(what).count() < n {
        assert!(
            Instant::now() < deadline,
            "{what:?} not logged {n} times:\n{}",
            d.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn registries_conf_reloads_on_change_and_sighup_and_survives_a_broken_file() {
    let reg = Registry::start().unwrap();
    reg.push_test_images().unwrap();
    let hp = reg.host_port();
    let image = "docker.io/berth-test/busybox:latest";
    let plain = format!(
        "[[registry]]\nprefix = \"docker.io/berth-test\"\nlocation = \"{hp}/berth-test\"\n"
    );
    let insecure = format!("{plain}insecure = true\n");
    let mut config = BerthdConfig::new().unwrap();
    config.registries_conf = Some(plain.clone());
    let conf = config.dir.path().join("registries.conf");
    let d = Berthd::start_with(config).await.unwrap();
    let mut c = d.client().await.unwrap();

    // Plain HTTP without `insecure`: refused, with the fix in the message.
    let err = pull(&mut c, image).await.unwrap_err();
    assert!(
        err.message().contains("insecure = true") && err.message().contains(&hp),
        "{err:?}"
    );

    // Changed on disk: picked up without a signal.
    rewrite(&conf, &insecure);
    log_count(&d, "config reloaded", 1).await;
    pull(&mut c, image).await.unwrap();
    remove(&mut c, image).await;

    // A broken file: refused, the last good config stays in force.
    rewrite(&conf, "[[registry]\nthis is not toml");
    log_count(&d, "keeping the last good config", 1).await;
    pull(&mut c, image).await.unwrap();
    remove(&mut c, image).await;

    // Fixed again; then SIGHUP reloads at once, changed or not.
    rewrite(&conf, &insecure);
    log_count(&d, "config reloaded", 2).await;
    kill(Pid::from_raw(d.pid().unwrap() as i32), Signal::SIGHUP).unwrap();
    log_count(&d, "config reloaded trigger=\"SIGHUP\"", 1).await;
    pull(&mut c, image).await.unwrap();

    // A later good edit is applied: the registry is now blocked.
    rewrite(&conf, &format!("{insecure}blocked = true\n"));
    log_count(&d, "config reloaded", 4).await;
    let err = pull(&mut c, image).await.unwrap_err();
    assert!(err.message().contains("blocked"), "{err:?}");
}
