//! `berthctl image import` against a real berthd: an OCI layout dir, an OCI
//! archive and a `docker save` tarball (from stdin), all made here from the
//! project's test images (hack/build-test-images.sh); layers shared between
//! them are unpacked once; a container runs from an imported image; a
//! tampered archive is refused and changes nothing. Needs root.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use berth_api::v1::*;
use berth_e2e::cleanup::Guard;
use berth_e2e::client::CriClient;
use berth_e2e::daemon::{Berthd, BerthdConfig};
use berth_e2e::pods::*;
use berth_e2e::registry::build_test_images;
use serde_json::{Value, json};

const OCI_REF_NAME: &str = "org.opencontainers.image.ref.name";

fn berthctl_bin() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| berth_e2e::workspace_root().join("target"));
    let bin = target.join("debug/berthctl");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build -p berthctl` (or `cargo build --workspace --bins`) first",
        bin.display()
    );
    bin
}

/// Runs `berthctl image import ARGS` against `d`; (success, stdout, stderr).
fn import(d: &Berthd, args: &[&str], stdin: Option<&Path>) -> (bool, String, String) {
    let mut cmd = Command::new(berthctl_bin());
    cmd.arg("--endpoint")
        .arg(format!("unix://{}", d.config.socket.display()))
        .args(["image", "import"])
        .args(args);
    cmd.stdin(match stdin {
        Some(p) => Stdio::from(std::fs::File::open(p).unwrap()),
        None => Stdio::null(),
    });
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn read_json(p: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

fn blob(layout: &Path, digest: &str) -> PathBuf {
    layout
        .join("blobs/sha256")
        .join(digest.trim_start_matches("sha256:"))
}

/// The index.json entry of a test image (by its ref name in the shared layout).
fn entry(layout: &Path, name: &str) -> Value {
    read_json(&layout.join("index.json"))["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"][OCI_REF_NAME] == name)
        .unwrap_or_else(|| panic!("no test image {name}"))
        .clone()
}

/// An OCI layout at `dst` with the test layout's blobs and these entries,
/// each renamed: (test image, annotation key, full name).
fn layout_with(src: &Path, dst: &Path, images: &[(&str, &str, &str)]) {
    std::fs::create_dir_all(dst.join("blobs/sha256")).unwrap();
    std::fs::copy(src.join("oci-layout"), dst.join("oci-layout")).unwrap();
    for e in std::fs::read_dir(src.join("blobs/sha256")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dst.join("blobs/sha256").join(e.file_name())).unwrap();
    }
    let manifests: Vec<Value> = images
        .iter()
        .map(|(image, key, name)| {
            let mut m = entry(src, image);
            m["annotations"] = json!({ *key: name });
            m
        })
        .collect();
    let index = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": manifests});
    std::fs::write(dst.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
}

fn tar_dir(dir: &Path, out: &Path) {
    let st = Command::new("tar")
        .arg("-C")
        .arg(dir)
        .arg("-cf")
        .arg(out)
        .arg(".")
        .status()
        .unwrap();
    assert!(st.success());
}

/// A `docker save` tarball of a test image, in Docker's classic layout:
/// `<config hex>.json`, `<n>/layer.tar` (uncompressed), manifest.json,
/// repositories; a second tag whose layer is a symlink, as Docker writes
/// repeated layers.
fn docker_save(src: &Path, image: &str, tag: &str, out: &Path) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let manifest = read_json(&blob(src, entry(src, image)["digest"].as_str().unwrap()));
    let config = manifest["config"]["digest"].as_str().unwrap();
    let config_file = format!("{}.json", config.trim_start_matches("sha256:"));
    std::fs::copy(blob(src, config), d.join(&config_file)).unwrap();
    let mut layers = vec![];
    for (i, l) in manifest["layers"].as_array().unwrap().iter().enumerate() {
        let gz = std::fs::File::open(blob(src, l["digest"].as_str().unwrap())).unwrap();
        std::fs::create_dir_all(d.join(format!("l{i}"))).unwrap();
        let mut out = std::fs::File::create(d.join(format!("l{i}/layer.tar"))).unwrap();
        std::io::copy(&mut flate2::read::GzDecoder::new(gz), &mut out).unwrap();
        layers.push(format!("l{i}/layer.tar"));
    }
    std::fs::create_dir_all(d.join("again")).unwrap();
    std::os::unix::fs::symlink("../l0/layer.tar", d.join("again/layer.tar")).unwrap();
    let m = json!([{"Config": config_file, "RepoTags": [tag], "Layers": layers}]);
    std::fs::write(d.join("manifest.json"), serde_json::to_vec(&m).unwrap()).unwrap();
    tar_dir(d, out);
}

async fn images(c: &mut CriClient) -> Vec<Image> {
    c.image
        .list_images(ListImagesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .images
}

fn layer_dirs(d: &Berthd) -> usize {
    std::fs::read_dir(d.config.root.join("images/layers"))
        .unwrap()
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_oci_layout_archive_and_docker_save_then_run() {
    let test_images = build_test_images().unwrap();
    let src = test_images.join("oci");
    let work = tempfile::tempdir().unwrap();
    let w = work.path();

    // An OCI layout dir named the containerd way; an OCI archive holding two
    // images (one an index: the host's platform is picked) named by OCI ref
    // names; a docker save tarball.
    layout_with(
        &src,
        &w.join("layout"),
        &[(
            "busybox",
            "io.containerd.image.name",
            "docker.io/berth-test/imported-oci:1",
        )],
    );
    layout_with(
        &src,
        &w.join("archive"),
        &[
            ("layered", OCI_REF_NAME, "berth-test/imported-archive:1"),
            ("multiarch", OCI_REF_NAME, "berth-test/imported-multi:1"),
        ],
    );
    tar_dir(&w.join("archive"), &w.join("archive.tar"));
    docker_save(
        &src,
        "user",
        "berth-test/imported-docker:1",
        &w.join("docker.tar"),
    );

    let config = BerthdConfig::new().unwrap();
    let _g = Guard(config.dir.path().to_path_buf());
    let d = Berthd::start_with(config).await.unwrap();
    let mut c = d.client().await.unwrap();

    let (ok, out, err) = import(&d, &[w.join("layout").to_str().unwrap()], None);
    assert!(ok, "{out}{err}");
    assert!(out.contains("docker.io/berth-test/imported-oci:1"), "{out}");
    assert_eq!(layer_dirs(&d), 1);

    let (ok, out, err) = import(&d, &[w.join("archive.tar").to_str().unwrap()], None);
    assert!(ok, "{out}{err}");
    assert!(out.contains("imported 2 image(s)"), "{out}");
    // layered = busybox's layer (already there) + 2 of its own; the amd64
    // image of the index has one more.
    assert_eq!(
        layer_dirs(&d),
        4,
        "busybox's layer is shared, not unpacked again"
    );

    let (ok, out, err) = import(&d, &["-"], Some(&w.join("docker.tar")));
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("docker.io/berth-test/imported-docker:1"),
        "{out}"
    );

    // --name: one image's archive gets that tag; an archive of two is refused.
    let (ok, out, err) = import(
        &d,
        &[
            "--name",
            "renamed/busybox:2",
            w.join("layout").to_str().unwrap(),
        ],
        None,
    );
    assert!(ok, "{out}{err}");
    assert!(out.contains("docker.io/renamed/busybox:2"), "{out}");
    let (ok, _, err) = import(
        &d,
        &["--name", "x:1", w.join("archive.tar").to_str().unwrap()],
        None,
    );
    assert!(!ok && err.contains("one image only"), "{err}");

    let list = images(&mut c).await;
    let tags: Vec<&str> = list
        .iter()
        .flat_map(|i| i.repo_tags.iter().map(String::as_str))
        .collect();
    for t in [
        "docker.io/berth-test/imported-oci:1",
        "docker.io/berth-test/imported-archive:1",
        "docker.io/berth-test/imported-multi:1",
        "docker.io/berth-test/imported-docker:1",
    ] {
        assert!(tags.contains(&t), "{t} not in {tags:?}");
    }
    // An OCI entry keeps its manifest digest, as a pull would record it.
    let oci = list
        .iter()
        .find(|i| {
            i.repo_tags
                .contains(&"docker.io/berth-test/imported-oci:1".to_string())
        })
        .unwrap();
    let busybox_manifest = entry(&src, "busybox")["digest"]
        .as_str()
        .unwrap()
        .to_string();
    // (with --name, the same image got a second tag and digest reference)
    assert_eq!(
        oci.repo_digests,
        [
            format!("docker.io/berth-test/imported-oci@{busybox_manifest}"),
            format!("docker.io/renamed/busybox@{busybox_manifest}")
        ]
    );
    // The docker save image keeps its config's User, as pulled.
    let docker = list
        .iter()
        .find(|i| {
            i.repo_tags
                .contains(&"docker.io/berth-test/imported-docker:1".to_string())
        })
        .unwrap();
    assert_eq!(docker.username, "berth");

    // A container from imported images, as the kubelet would run one.
    let pc = pod_config_for(&d, "imported");
    let pod = run_pod_with(&mut c, &pc).await;
    for (name, image, want) in [
        (
            "oci",
            "berth-test/imported-oci:1",
            "hello from an imported image",
        ),
        ("multi", "berth-test/imported-multi:1", "amd64"),
    ] {
        let script = match name {
            "multi" => "cat /arch",
            _ => "echo hello from an imported image",
        };
        let id = create(&mut c, &pod, &pc, ctr_config(name, image, script))
            .await
            .unwrap();
        start(&mut c, &id).await;
        let s = wait_state(&mut c, &id, ContainerState::ContainerExited).await;
        assert_eq!(s.exit_code, 0, "{s:?}");
        let log =
            std::fs::read_to_string(Path::new(&pc.log_directory).join(format!("{name}/0.log")))
                .unwrap();
        assert!(log.contains(want), "{name}: {log}");
    }
    stop_pod(&mut c, &pod).await;
    remove_pod(&mut c, &pod).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_archive_is_refused_and_changes_nothing() {
    let src = build_test_images().unwrap().join("oci");
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    layout_with(
        &src,
        &w.join("layout"),
        &[("layered", OCI_REF_NAME, "berth-test/tampered:1")],
    );
    // One byte of the last layer's blob changed: its digest no longer matches.
    let manifest = read_json(&blob(
        &w.join("layout"),
        entry(&src, "layered")["digest"].as_str().unwrap(),
    ));
    let last = manifest["layers"].as_array().unwrap().last().unwrap()["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let p = blob(&w.join("layout"), &last);
    let mut bytes = std::fs::read(&p).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&p, &bytes).unwrap();
    tar_dir(&w.join("layout"), &w.join("tampered.tar"));
    // Not an image archive at all.
    std::fs::write(w.join("junk.tar"), vec![7u8; 4096]).unwrap();

    let config = BerthdConfig::new().unwrap();
    let _g = Guard(config.dir.path().to_path_buf());
    let d = Berthd::start_with(config).await.unwrap();
    let mut c = d.client().await.unwrap();
    let before = images(&mut c).await;

    let (ok, out, err) = import(&d, &[w.join("tampered.tar").to_str().unwrap()], None);
    assert!(!ok, "a tampered archive must be refused: {out}");
    assert!(
        err.contains("hashes to") && err.contains("DataLoss"),
        "{err}"
    );
    let (ok, _, err) = import(&d, &[w.join("junk.tar").to_str().unwrap()], None);
    assert!(!ok);
    assert!(
        err.contains("image archive") && err.contains("InvalidArgument"),
        "{err}"
    );

    assert_eq!(images(&mut c).await, before);
    assert_eq!(
        layer_dirs(&d),
        0,
        "no layer of the tampered archive was unpacked"
    );
    let tmp = std::fs::read_dir(d.config.root.join("images/tmp"))
        .unwrap()
        .count();
    assert_eq!(tmp, 0, "the spooled archive is removed");
}
