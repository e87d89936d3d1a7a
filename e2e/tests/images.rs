//! The ImageService through the CRI socket of a real berthd, pulling from a
//! real registry: names as the kubelet sends them, digests, platforms,
//! compressions, layer sharing, removal, filesystem usage, auth and errors.

use berth_api::v1::*;
use berth_e2e::client::CriClient;
use berth_e2e::daemon::{Berthd, BerthdConfig};
use berth_e2e::registry::Registry;
use tonic::Code;

use std::time::Duration;

/// A daemon whose registries.conf sends `docker.io/berth-test/*` to the
/// fixture registry and allows plain HTTP to it.
async fn daemon_for(reg: &Registry) -> Berthd {
    let hp = reg.host_port();
    let mut config = BerthdConfig::new().unwrap();
    config.registries_conf = Some(format!(
        "[[registry]]\nprefix = \"docker.io/berth-test\"\nlocation = \"{hp}/berth-test\"\ninsecure = true\n\n\
         [[registry]]\nlocation = \"{hp}\"\ninsecure = true\n"
    ));
    Berthd::start_with(config).await.unwrap()
}

async fn setup() -> (Registry, Berthd, CriClient) {
    let reg = Registry::start().unwrap();
    reg.push_test_images().unwrap();
    let d = daemon_for(&reg).await;
    let c = d.client().await.unwrap();
    (reg, d, c)
}

fn spec(image: &str) -> Option<ImageSpec> {
    Some(ImageSpec {
        image: image.to_string(),
        ..Default::default()
    })
}

async fn pull(c: &mut CriClient, image: &str) -> Result<String, tonic::Status> {
    c.image
        .pull_image(PullImageRequest {
            image: spec(image),
            auth: None,
            sandbox_config: None,
        })
        .await
        .map(|r| r.into_inner().image_ref)
}

async fn status(c: &mut CriClient, image: &str, verbose: bool) -> ImageStatusResponse {
    c.image
        .image_status(ImageStatusRequest {
            image: spec(image),
            verbose,
        })
        .await
        .unwrap()
        .into_inner()
}

async fn list(c: &mut CriClient) -> Vec<Image> {
    c.image
        .list_images(ListImagesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .images
}

async fn remove(c: &mut CriClient, image: &str) {
    c.image
        .remove_image(RemoveImageRequest { image: spec(image) })
        .await
        .unwrap();
}

#[tokio::test]
async fn short_name_pull_is_normalised_and_found_every_way() {
    let (_reg, _d, mut c) = setup().await;
    let id = pull(&mut c, "berth-test/busybox").await.unwrap();
    assert!(id.starts_with("sha256:") && id.len() == 71, "{id}");
    let images = list(&mut c).await;
    assert_eq!(images.len(), 1);
    assert_eq!(images[0].id, id);
    assert_eq!(images[0].repo_tags, ["docker.io/berth-test/busybox:latest"]);
    assert_eq!(images[0].repo_digests.len(), 1);
    assert!(images[0].size > 1_000_000, "{:?}", images[0]);
    for name in [
        "berth-test/busybox",
        "berth-test/busybox:latest",
        "docker.io/berth-test/busybox:latest",
        id.as_str(),
        &id["sha256:".len()..],
    ] {
        let s = status(&mut c, name, false).await;
        assert_eq!(
            s.image.map(|i| i.id).as_deref(),
            Some(id.as_str()),
            "{name}"
        );
    }
    // Unknown image: no image and no error, as the kubelet expects.
    let s = status(&mut c, "berth-test/busybox:nope", false).await;
    assert!(s.image.is_none());
    // The filter of ListImages.
    let filtered = c
        .image
        .list_images(ListImagesRequest {
            filter: Some(ImageFilter {
                image: spec("berth-test/busybox"),
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .images;
    assert_eq!(filtered.len(), 1);
}

#[tokio::test]
async fn digest_pulls_and_verbose_status() {
    let (reg, _d, mut c) = setup().await;
    let digest = reg.manifest_digest("berth-test/busybox:latest").unwrap();
    let by_digest = format!("{}/berth-test/busybox@{digest}", reg.host_port());
    let id = pull(&mut c, &by_digest).await.unwrap();
    let s = status(&mut c, &by_digest, true).await;
    let image = s.image.unwrap();
    assert_eq!(image.id, id);
    assert_eq!(image.repo_digests, [by_digest]);
    assert!(image.repo_tags.is_empty());
    let info: serde_json::Value = serde_json::from_str(&s.info["info"]).unwrap();
    assert_eq!(info["imageSpec"]["architecture"], "amd64");
    assert_eq!(info["imageSpec"]["config"]["Cmd"][0], "sh");
    // name:tag@digest pulls by digest.
    let both = format!("{}/berth-test/busybox:latest@{digest}", reg.host_port());
    assert_eq!(pull(&mut c, &both).await.unwrap(), id);
    // A digest the registry does not have.
    let missing = format!(
        "{}/berth-test/busybox@sha256:{}",
        reg.host_port(),
        "0".repeat(64)
    );
    let err = pull(&mut c, &missing).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
}

#[tokio::test]
async fn index_resolves_to_the_node_platform_not_the_first_entry() {
    let (reg, _d, mut c) = setup().await;
    let name = reg.image("berth-test/multiarch:latest");
    pull(&mut c, &name).await.unwrap();
    let s = status(&mut c, &name, true).await;
    let info: serde_json::Value = serde_json::from_str(&s.info["info"]).unwrap();
    assert_eq!(info["imageSpec"]["architecture"], "amd64", "{info}");
    // The repo digest is the index's digest, which is what the tag points to.
    let index = reg.manifest_digest("berth-test/multiarch:latest").unwrap();
    assert!(
        s.image.unwrap().repo_digests[0].ends_with(&index),
        "repo digest should be the index digest {index}"
    );
}

#[tokio::test]
async fn every_layer_compression_and_manifest_schema() {
    let (reg, _d, mut c) = setup().await;
    let mut ids = vec![];
    for repo in [
        "berth-test/busybox:latest",
        "berth-test/busybox-zstd:latest",
        "berth-test/busybox-plain:latest",
        "berth-test/docker-v2:latest",
    ] {
        let id = pull(&mut c, &reg.image(repo))
            .await
            .unwrap_or_else(|e| panic!("{repo}: {e:?}"));
        ids.push(id);
    }
    // Same content: every variant unpacks to the same layer (same diffID), stored once.
    let mut layer_sets = vec![];
    for repo in ["busybox", "busybox-zstd", "busybox-plain", "docker-v2"] {
        let s = status(
            &mut c,
            &reg.image(&format!("berth-test/{repo}:latest")),
            true,
        )
        .await;
        let info: serde_json::Value = serde_json::from_str(&s.info["info"]).unwrap();
        layer_sets.push(info["layers"].clone());
    }
    assert!(
        layer_sets.windows(2).all(|w| w[0] == w[1]),
        "{layer_sets:?}"
    );
    assert_eq!(list(&mut c).await.len(), ids.len() - count_duplicates(&ids));
}

fn count_duplicates(ids: &[String]) -> usize {
    let mut v = ids.to_vec();
    v.sort();
    v.dedup();
    ids.len() - v.len()
}

#[tokio::test]
async fn shared_base_layer_is_fetched_once() {
    let (reg, _d, mut c) = setup().await;
    let base = reg.layer_digests("berth-test/busybox:latest").unwrap()[0].clone();
    let layered = reg.layer_digests("berth-test/layered:latest").unwrap();
    assert_eq!(
        layered[0], base,
        "fixture: layered must share busybox's base"
    );
    pull(&mut c, &reg.image("berth-test/busybox:latest"))
        .await
        .unwrap();
    assert_eq!(reg.blob_fetch_count(&base).unwrap(), 1);
    pull(&mut c, &reg.image("berth-test/layered:latest"))
        .await
        .unwrap();
    assert_eq!(
        reg.blob_fetch_count(&base).unwrap(),
        1,
        "base fetched again"
    );
    for upper in &layered[1..] {
        assert_eq!(reg.blob_fetch_count(upper).unwrap(), 1);
    }
    // Removing layered keeps busybox whole: it still answers and re-pulling fetches nothing.
    remove(&mut c, &reg.image("berth-test/layered:latest")).await;
    assert!(
        status(&mut c, &reg.image("berth-test/busybox:latest"), false)
            .await
            .image
            .is_some()
    );
    pull(&mut c, &reg.image("berth-test/busybox:latest"))
        .await
        .unwrap();
    assert_eq!(reg.blob_fetch_count(&base).unwrap(), 1);
}

#[tokio::test]
async fn concurrent_pulls_of_one_image_fetch_each_layer_once() {
    let (reg, _d, c) = setup().await;
    let name = reg.image("berth-test/layered:latest");
    let mut tasks = vec![];
    for _ in 0..4 {
        let mut c = c.clone();
        let name = name.clone();
        tasks.push(tokio::spawn(async move { pull(&mut c, &name).await }));
    }
    let mut ids = vec![];
    for t in tasks {
        ids.push(t.await.unwrap().unwrap());
    }
    ids.dedup();
    assert_eq!(ids.len(), 1);
    for layer in reg.layer_digests("berth-test/layered:latest").unwrap() {
        assert_eq!(reg.blob_fetch_count(&layer).unwrap(), 1, "{layer}");
    }
}

#[tokio::test]
async fn remove_by_tag_by_id_and_unknown() {
    let (reg, _d, mut c) = setup().await;
    // Two tags for one image: the short name and the explicit registry name.
    let id = pull(&mut c, "berth-test/busybox").await.unwrap();
    let full = reg.image("berth-test/busybox:latest");
    assert_eq!(pull(&mut c, &full).await.unwrap(), id);
    let tags = status(&mut c, &id, false).await.image.unwrap().repo_tags;
    assert_eq!(tags.len(), 2, "{tags:?}");
    // By tag: only that tag goes.
    remove(&mut c, "berth-test/busybox").await;
    let left = status(&mut c, &id, false).await.image.unwrap();
    assert_eq!(left.repo_tags, std::slice::from_ref(&full));
    // By id: the image with every tag.
    pull(&mut c, "berth-test/busybox").await.unwrap();
    remove(&mut c, &id).await;
    assert!(list(&mut c).await.is_empty());
    assert!(status(&mut c, &full, false).await.image.is_none());
    // Unknown: success.
    remove(&mut c, "berth-test/never-pulled:1").await;
    remove(&mut c, &id).await;
}

#[tokio::test]
async fn user_of_the_image_config_is_reported() {
    let (reg, _d, mut c) = setup().await;
    pull(&mut c, &reg.image("berth-test/user:latest"))
        .await
        .unwrap();
    let image = status(&mut c, &reg.image("berth-test/user:latest"), false)
        .await
        .image
        .unwrap();
    assert_eq!(image.username, "berth");
    assert!(image.uid.is_none());
}

#[tokio::test]
async fn image_fs_info_counts_pulled_layers() {
    let (reg, _d, mut c) = setup().await;
    let before = c
        .image
        .image_fs_info(ImageFsInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    pull(&mut c, &reg.image("berth-test/layered:latest"))
        .await
        .unwrap();
    let after = c
        .image
        .image_fs_info(ImageFsInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    let used = |r: &ImageFsInfoResponse| r.image_filesystems[0].used_bytes.unwrap().value;
    let inodes = |r: &ImageFsInfoResponse| r.image_filesystems[0].inodes_used.unwrap().value;
    assert!(
        used(&after) >= used(&before) + 1_000_000,
        "{before:?} {after:?}"
    );
    assert!(inodes(&after) > inodes(&before) + 200);
    let fs = &after.image_filesystems[0];
    assert!(!fs.fs_id.as_ref().unwrap().mountpoint.is_empty());
    assert!(fs.timestamp > 0);
    assert_eq!(after.container_filesystems.len(), 1);
}

#[tokio::test]
async fn images_survive_a_restart_and_a_kill() {
    let (reg, mut d, mut c) = setup().await;
    let id = pull(&mut c, &reg.image("berth-test/layered:latest"))
        .await
        .unwrap();
    d.restart().await.unwrap();
    let mut c = d.client().await.unwrap();
    assert_eq!(list(&mut c).await[0].id, id);
    d.kill9().await.unwrap();
    d.restart().await.unwrap();
    let mut c = d.client().await.unwrap();
    assert_eq!(list(&mut c).await[0].id, id);
}

#[tokio::test]
async fn errors_carry_the_right_code_and_name_the_image() {
    let (reg, _d, mut c) = setup().await;
    let unknown_tag = reg.image("berth-test/busybox:no-such-tag");
    let err = pull(&mut c, &unknown_tag).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert!(err.message().contains("no-such-tag"), "{err:?}");

    let err = pull(&mut c, "UPPER/Case!!").await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    let err = pull(&mut c, "").await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");

    // A loopback port nobody listens on: Unavailable, naming the host.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut cfg = BerthdConfig::new().unwrap();
    cfg.registries_conf = Some(format!(
        "[[registry]]\nlocation = \"127.0.0.1:{closed}\"\ninsecure = true\n"
    ));
    let d2 = Berthd::start_with(cfg).await.unwrap();
    let mut c2 = d2.client().await.unwrap();
    let err = pull(&mut c2, &format!("127.0.0.1:{closed}/x/y:1"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(
        err.message().contains(&format!("127.0.0.1:{closed}")),
        "{err:?}"
    );
    // Nothing was stored by any failed pull.
    assert!(list(&mut c).await.is_empty());
    assert!(list(&mut c2).await.is_empty());
}

/// A pull whose client deadline passes answers DEADLINE_EXCEEDED (what the
/// kubelet and critest expect, not tonic's CANCELLED) and stores nothing;
/// the daemon serves the next pull.
#[tokio::test]
async fn pull_past_its_deadline_is_deadline_exceeded_and_keeps_nothing() {
    // A "registry" that accepts connections and never answers: the pull
    // hangs until the deadline, whatever the machine's speed.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    let held = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((conn, _)) = silent.accept().await {
            conns.push(conn);
        }
    });
    let reg = Registry::start().unwrap();
    reg.push_test_images().unwrap();
    let hp = reg.host_port();
    let mut config = BerthdConfig::new().unwrap();
    config.registries_conf = Some(format!(
        "[[registry]]\nlocation = \"{hp}\"\ninsecure = true\n\n\
         [[registry]]\nlocation = \"127.0.0.1:{port}\"\ninsecure = true\n"
    ));
    let d = Berthd::start_with(config).await.unwrap();
    let mut c = d.client().await.unwrap();

    // tonic's client keeps a timer of its own at the deadline: the server
    // answers 1/16 earlier, long before it on loopback.
    let deadline = Duration::from_millis(800);
    let mut req = tonic::Request::new(PullImageRequest {
        image: spec(&format!("127.0.0.1:{port}/hangs/forever:1")),
        auth: None,
        sandbox_config: None,
    });
    req.set_timeout(deadline);
    let started = std::time::Instant::now();
    let err = c.image.pull_image(req).await.unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    assert!(err.message().contains("deadline"), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(list(&mut c).await.is_empty());
    let tmp = d.config.root.join("images/tmp");
    assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0, "{tmp:?}");

    // Within its deadline, a pull still works.
    let mut req = tonic::Request::new(PullImageRequest {
        image: spec(&reg.image("berth-test/layered:latest")),
        auth: None,
        sandbox_config: None,
    });
    req.set_timeout(Duration::from_secs(60));
    let id = c
        .image
        .pull_image(req)
        .await
        .unwrap()
        .into_inner()
        .image_ref;
    assert_eq!(list(&mut c).await[0].id, id);
    held.abort();
}

#[tokio::test]
async fn basic_auth_from_the_request() {
    let reg = Registry::start_with_basic_auth("kube", "s3cret").unwrap();
    reg.push_test_images().unwrap();
    let d = daemon_for(&reg).await;
    let mut c = d.client().await.unwrap();
    let name = reg.image("berth-test/busybox:latest");
    let err = pull(&mut c, &name).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    assert!(err.message().contains(&reg.host_port()), "{err:?}");
    let with = |username: &str, password: &str| PullImageRequest {
        image: spec(&name),
        auth: Some(AuthConfig {
            username: username.into(),
            password: password.into(),
            ..Default::default()
        }),
        sandbox_config: None,
    };
    let err = c.image.pull_image(with("kube", "wrong")).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    c.image.pull_image(with("kube", "s3cret")).await.unwrap();
    assert_eq!(list(&mut c).await.len(), 1);
}
