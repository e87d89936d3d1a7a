//! The registry fixture and the test images, checked from the outside with curl and tar:
//! what later pull tests rely on must really be served this way.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use berth_e2e::registry::{Registry, TEST_IMAGES, build_test_images};
use serde_json::Value;
use sha2::{Digest, Sha256};

const MANIFEST_ACCEPT: &str = "Accept: application/vnd.oci.image.manifest.v1+json, \
     application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json, \
     application/vnd.docker.distribution.manifest.list.v2+json";

struct Http {
    status: u16,
    headers: String,
    body: Vec<u8>,
}

impl Http {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    fn json(&self) -> Result<Value> {
        serde_json::from_slice(&self.body).context("response body is not JSON")
    }
}

/// `curl URL EXTRA...`: status, headers and body of the (last) response.
fn curl(url: &str, extra: &[&str]) -> Result<Http> {
    let tmp = tempfile::tempdir()?;
    let (body, headers) = (tmp.path().join("body"), tmp.path().join("headers"));
    let out = Command::new("curl")
        .args(["-sS", "-o"])
        .arg(&body)
        .arg("-D")
        .arg(&headers)
        .args(["-w", "%{http_code}"])
        .args(extra)
        .arg(url)
        .output()
        .context("running curl")?;
    ensure!(
        out.status.success(),
        "curl {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(Http {
        status: String::from_utf8(out.stdout)?
            .trim()
            .parse()
            .context("curl's status code")?,
        headers: fs::read_to_string(&headers).unwrap_or_default(),
        body: fs::read(&body).unwrap_or_default(),
    })
}

fn get_manifest(reg: &Registry, repo: &str, reference: &str) -> Result<Http> {
    let url = format!("http://{}/v2/{repo}/manifests/{reference}", reg.host_port());
    let resp = curl(&url, &["-H", MANIFEST_ACCEPT])?;
    ensure!(resp.status == 200, "GET {url}: {}", resp.status);
    Ok(resp)
}

fn get_blob(reg: &Registry, repo: &str, digest: &str) -> Result<Vec<u8>> {
    let url = format!("http://{}/v2/{repo}/blobs/{digest}", reg.host_port());
    let resp = curl(&url, &[])?;
    ensure!(resp.status == 200, "GET {url}: {}", resp.status);
    ensure!(
        sha256(&resp.body) == digest,
        "blob {digest} does not match its digest"
    );
    Ok(resp.body)
}

fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// `tar -t` of a (possibly compressed) layer; tar detects gzip and zstd itself.
fn tar_list(layer: &[u8]) -> Result<Vec<String>> {
    tar_run(layer, &["-t"]).map(|out| {
        out.lines()
            .map(|l| l.trim_end_matches('/').to_owned())
            .collect()
    })
}

fn tar_cat(layer: &[u8], path: &str) -> Result<String> {
    tar_run(layer, &["-xO", path])
}

fn tar_run(layer: &[u8], args: &[&str]) -> Result<String> {
    let tmp = tempfile::tempdir()?;
    let file = tmp.path().join("layer");
    fs::write(&file, layer)?;
    let out = Command::new("tar")
        .args(args)
        .arg("-f")
        .arg(&file)
        .output()
        .context("running tar")?;
    ensure!(
        out.status.success(),
        "tar {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}

fn started_with_images() -> Result<Registry> {
    let t = Instant::now();
    let reg = Registry::start()?;
    let started = t.elapsed();
    reg.push_test_images()?;
    eprintln!(
        "registry start {started:?}, then push_test_images {:?}",
        t.elapsed() - started
    );
    Ok(reg)
}

#[test]
fn every_test_image_is_served_with_the_digest_of_the_built_layout() -> Result<()> {
    let reg = started_with_images()?;

    // The script's push list and the fixture's public list agree.
    let dir = build_test_images()?;
    let listed: BTreeSet<String> = fs::read_to_string(dir.join("images.list"))?
        .lines()
        .filter_map(|l| l.split('\t').nth(1).map(str::to_owned))
        .collect();
    let public: BTreeSet<String> = TEST_IMAGES.iter().map(|s| s.to_string()).collect();
    assert_eq!(listed, public);

    for repo_tag in TEST_IMAGES {
        let (repo, tag) = repo_tag.split_once(':').unwrap();
        let resp = get_manifest(&reg, repo, tag)?;
        let digest = reg.manifest_digest(repo_tag)?;
        assert_eq!(sha256(&resp.body), digest, "{repo_tag}");
        assert_eq!(
            resp.header("Docker-Content-Digest"),
            Some(digest.as_str()),
            "{repo_tag}"
        );
        // Pullable by digest too.
        get_manifest(&reg, repo, &digest)?;
        assert_eq!(
            reg.image(repo_tag),
            format!("{}/{repo_tag}", reg.host_port())
        );
    }

    // Pushed byte for byte (--preserve-digests): the registry serves the layout's manifests.
    let index: Value = serde_json::from_slice(&fs::read(dir.join("oci/index.json"))?)?;
    for m in index["manifests"].as_array().context("layout index")? {
        let name = m["annotations"]["org.opencontainers.image.ref.name"]
            .as_str()
            .unwrap();
        if name != "docker-v2" {
            let digest = reg.manifest_digest(&format!("berth-test/{name}:latest"))?;
            assert_eq!(m["digest"].as_str(), Some(digest.as_str()), "{name}");
        }
    }
    Ok(())
}

#[test]
fn multiarch_is_an_index_listing_arm64_first() -> Result<()> {
    let reg = started_with_images()?;
    let resp = get_manifest(&reg, "berth-test/multiarch", "latest")?;
    assert_eq!(
        resp.header("Content-Type"),
        Some("application/vnd.oci.image.index.v1+json")
    );
    let index = resp.json()?;
    let manifests = index["manifests"]
        .as_array()
        .context("index has manifests")?;
    let platforms: Vec<(&str, &str)> = manifests
        .iter()
        .map(|m| {
            (
                m["platform"]["os"].as_str().unwrap(),
                m["platform"]["architecture"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(platforms, [("linux", "arm64"), ("linux", "amd64")]);

    // Each entry is a distinct image whose config and /arch say its architecture.
    for (m, arch) in manifests.iter().zip(["arm64", "amd64"]) {
        let manifest =
            get_manifest(&reg, "berth-test/multiarch", m["digest"].as_str().unwrap())?.json()?;
        let config: Value = serde_json::from_slice(&get_blob(
            &reg,
            "berth-test/multiarch",
            manifest["config"]["digest"].as_str().unwrap(),
        )?)?;
        assert_eq!(config["architecture"], arch);
        let top = manifest["layers"].as_array().unwrap().last().unwrap();
        let layer = get_blob(
            &reg,
            "berth-test/multiarch",
            top["digest"].as_str().unwrap(),
        )?;
        assert_eq!(tar_cat(&layer, "arch")?, format!("{arch}\n"));
        if arch == "amd64" {
            let layers: Vec<String> = manifest["layers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| l["digest"].as_str().unwrap().to_owned())
                .collect();
            assert_eq!(reg.layer_digests("berth-test/multiarch:latest")?, layers);
        }
    }
    Ok(())
}

#[test]
fn layered_image_shares_its_base_layer_and_whites_out_files() -> Result<()> {
    let reg = started_with_images()?;
    let busybox = reg.layer_digests("berth-test/busybox:latest")?;
    let layered = reg.layer_digests("berth-test/layered:latest")?;
    assert_eq!(busybox.len(), 1);
    assert_eq!(layered.len(), 3);
    assert_eq!(
        layered[0], busybox[0],
        "layered's base layer must be busybox's blob"
    );

    let repo = "berth-test/layered";
    let l2 = get_blob(&reg, repo, &layered[1])?;
    let mut entries = tar_list(&l2)?;
    entries.sort();
    assert_eq!(
        entries,
        [
            "data",
            "data/gone.txt",
            "data/keep.txt",
            "data/replace.txt",
            "opaque",
            "opaque/a.txt",
            "opaque/b.txt",
            "opaque/sub",
            "opaque/sub/c.txt"
        ]
    );
    assert_eq!(tar_cat(&l2, "data/replace.txt")?, "old\n");

    let l3 = get_blob(&reg, repo, &layered[2])?;
    let mut entries = tar_list(&l3)?;
    entries.sort();
    assert_eq!(
        entries,
        [
            "data",
            "data/.wh.gone.txt",
            "data/replace.txt",
            "opaque",
            "opaque/.wh..wh..opq",
            "opaque/new.txt"
        ]
    );
    assert_eq!(tar_cat(&l3, "data/replace.txt")?, "new\n");
    Ok(())
}

#[test]
fn layers_have_the_media_type_of_their_compression() -> Result<()> {
    let reg = started_with_images()?;
    let cases = [
        (
            "berth-test/busybox",
            "application/vnd.oci.image.layer.v1.tar+gzip",
            &[0x1f, 0x8b][..],
        ),
        (
            "berth-test/busybox-zstd",
            "application/vnd.oci.image.layer.v1.tar+zstd",
            &[0x28, 0xb5, 0x2f, 0xfd],
        ),
        (
            "berth-test/busybox-plain",
            "application/vnd.oci.image.layer.v1.tar",
            &[],
        ),
        (
            "berth-test/docker-v2",
            "application/vnd.docker.image.rootfs.diff.tar.gzip",
            &[0x1f, 0x8b],
        ),
    ];
    let mut busybox_files = None;
    for (repo, media_type, magic) in cases {
        let manifest = get_manifest(&reg, repo, "latest")?.json()?;
        let layers = manifest["layers"].as_array().context("layers")?;
        assert_eq!(layers.len(), 1, "{repo}");
        assert_eq!(layers[0]["mediaType"], media_type, "{repo}");
        let blob = get_blob(&reg, repo, layers[0]["digest"].as_str().unwrap())?;
        assert!(blob.starts_with(magic), "{repo}: wrong magic bytes");
        if magic.is_empty() {
            assert_eq!(&blob[257..262], b"ustar", "{repo}: not a plain tar");
        }
        // Same files whatever the compression.
        let files = tar_list(&blob)?;
        for want in [
            "bin/busybox",
            "bin/sh",
            "bin/wget",
            "etc/passwd",
            "etc/group",
            "tmp",
            "home/berth",
        ] {
            assert!(files.iter().any(|f| f == want), "{repo} lacks {want}");
        }
        match &busybox_files {
            None => busybox_files = Some(files),
            Some(first) => assert_eq!(first, &files, "{repo} differs from busybox"),
        }
    }

    let docker = get_manifest(&reg, "berth-test/docker-v2", "latest")?;
    assert_eq!(
        docker.header("Content-Type"),
        Some("application/vnd.docker.distribution.manifest.v2+json")
    );
    assert_eq!(
        docker.json()?["config"]["mediaType"],
        "application/vnd.docker.container.image.v1+json"
    );
    // Converted, not recompressed: the very blob busybox has (skopeo may substitute blobs
    // it knows in another compression when it converts; this would catch it).
    assert_eq!(
        reg.layer_digests("berth-test/docker-v2:latest")?,
        reg.layer_digests("berth-test/busybox:latest")?
    );

    // The user image differs from busybox only by its config's User.
    let user = get_manifest(&reg, "berth-test/user", "latest")?.json()?;
    let config: Value = serde_json::from_slice(&get_blob(
        &reg,
        "berth-test/user",
        user["config"]["digest"].as_str().unwrap(),
    )?)?;
    assert_eq!(config["config"]["User"], "berth");
    assert_eq!(config["config"]["Cmd"], serde_json::json!(["sh"]));
    assert_eq!(
        reg.layer_digests("berth-test/user:latest")?,
        reg.layer_digests("berth-test/busybox:latest")?
    );
    Ok(())
}

#[test]
fn basic_auth_registry_refuses_anonymous_and_accepts_the_credentials() -> Result<()> {
    let reg = Registry::start_with_basic_auth("berth", "s3cret")?;
    assert_eq!(reg.credentials(), Some(("berth", "s3cret")));
    let v2 = format!("http://{}/v2/", reg.host_port());

    let anonymous = curl(&v2, &[])?;
    assert_eq!(anonymous.status, 401);
    let challenge = anonymous
        .header("WWW-Authenticate")
        .context("no WWW-Authenticate")?;
    assert!(challenge.starts_with("Basic realm="), "{challenge}");
    assert_eq!(curl(&v2, &["-u", "berth:wrong"])?.status, 401);
    assert_eq!(curl(&v2, &["-u", "berth:s3cret"])?.status, 200);

    reg.push_test_images()?;
    let manifest = format!(
        "http://{}/v2/berth-test/busybox/manifests/latest",
        reg.host_port()
    );
    assert_eq!(curl(&manifest, &["-H", MANIFEST_ACCEPT])?.status, 401);
    let authed = curl(&manifest, &["-H", MANIFEST_ACCEPT, "-u", "berth:s3cret"])?;
    assert_eq!(authed.status, 200);
    assert_eq!(
        sha256(&authed.body),
        reg.manifest_digest("berth-test/busybox:latest")?
    );
    Ok(())
}

#[test]
fn blob_fetch_count_counts_gets_of_that_blob_only() -> Result<()> {
    let reg = started_with_images()?;
    let layers = reg.layer_digests("berth-test/layered:latest")?;
    let (base, top) = (&layers[0], &layers[2]);
    // Pushing only checks blobs with HEAD.
    assert_eq!(reg.blob_fetch_count(base)?, 0);

    let url =
        |repo: &str, digest: &str| format!("http://{}/v2/{repo}/blobs/{digest}", reg.host_port());
    assert_eq!(curl(&url("berth-test/busybox", base), &["-I"])?.status, 200);
    assert_eq!(reg.blob_fetch_count(base)?, 0, "HEAD is not a fetch");

    get_blob(&reg, "berth-test/busybox", base)?;
    assert_eq!(reg.blob_fetch_count(base)?, 1);
    // Same blob through another repository still counts: it is the same content.
    get_blob(&reg, "berth-test/layered", base)?;
    assert_eq!(reg.blob_fetch_count(base)?, 2);
    assert_eq!(reg.blob_fetch_count(top)?, 0);

    // A failed GET (blob not in that repository) is not a served fetch.
    assert_eq!(curl(&url("berth-test/busybox", top), &[])?.status, 404);
    assert_eq!(reg.blob_fetch_count(top)?, 0);
    Ok(())
}

#[test]
fn registries_started_in_parallel_get_distinct_ports_and_stop_on_drop() -> Result<()> {
    let regs = thread::scope(|s| {
        let handles: Vec<_> = (0..4).map(|_| s.spawn(Registry::start)).collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("start panicked"))
            .collect::<Result<Vec<_>>>()
    })?;
    let ports: BTreeSet<String> = regs.iter().map(Registry::host_port).collect();
    assert_eq!(ports.len(), regs.len(), "{ports:?}");
    for reg in &regs {
        assert_eq!(
            curl(&format!("http://{}/v2/", reg.host_port()), &[])?.status,
            200
        );
    }
    let addr = regs[0].host_port();
    drop(regs);
    if std::net::TcpStream::connect(&addr).is_ok() {
        bail!("{addr} still accepts connections after the registry was dropped");
    }
    Ok(())
}

#[test]
fn test_images_build_is_cached() -> Result<()> {
    let dir = build_test_images()?;
    let stamp = fs::metadata(dir.join("stamp"))?.modified()?;
    let t = Instant::now();
    build_test_images()?;
    let warm = t.elapsed();
    assert_eq!(
        fs::metadata(dir.join("stamp"))?.modified()?,
        stamp,
        "a warm build must not rebuild"
    );
    assert!(Path::new(&dir.join("oci/index.json")).is_file());
    eprintln!("warm build_test_images took {warm:?}");
    Ok(())
}
