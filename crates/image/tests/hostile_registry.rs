//! A fake registry on 127.0.0.1 that answers whatever each test wants:
//! bogus JSON, wrong sizes, wrong digests, wrong content types, truncated
//! bodies, errors. Every answer must give an error that names the image
//! (and the layer, for layers) and leave nothing visible or half-written.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use berth_image::{ImageErrorKind, ImageStore, Platform, RegistriesConfig, StoreOptions};
use sha2::{Digest as _, Sha256};

#[derive(Clone)]
struct Resp {
    status: u16,
    content_type: String,
    body: Vec<u8>,
    /// Content-Length to announce instead of the body's (truncation).
    announce_len: Option<usize>,
}

fn ok(ct: &str, body: Vec<u8>) -> Resp {
    Resp {
        status: 200,
        content_type: ct.into(),
        body,
        announce_len: None,
    }
}

#[derive(Clone)]
struct Fake {
    host: String,
    routes: Arc<Mutex<HashMap<String, Resp>>>,
    /// When set, the registry wants this bearer token, which its `/token`
    /// endpoint gives to basic auth `u:p` only (the Docker token flow).
    bearer: Arc<Mutex<Option<String>>>,
    /// Paths answered with a 200 "manifest" of this many bytes ("{" then
    /// spaces), with or without a Content-Length, and how many bytes the
    /// client took before it hung up.
    floods: Arc<Mutex<HashMap<String, Flood>>>,
    /// Paths answered with this status and a body of `ENDLESS` bytes, no
    /// Content-Length, written lazily in chunks (never built in memory).
    endless: Arc<Mutex<HashMap<String, u16>>>,
    /// Requests to `/token` so far.
    token_requests: Arc<std::sync::atomic::AtomicUsize>,
}

/// "Endless": more than any client may keep, sent until it hangs up.
const ENDLESS: usize = 1 << 30;

#[derive(Clone)]
struct Flood {
    bytes: usize,
    announce: bool,
    served: Arc<std::sync::atomic::AtomicUsize>,
}

impl Fake {
    fn start() -> Fake {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let host = l.local_addr().unwrap().to_string();
        let routes: Arc<Mutex<HashMap<String, Resp>>> = Arc::default();
        routes
            .lock()
            .unwrap()
            .insert("/v2/".into(), ok("application/json", b"{}".to_vec()));
        let f = Fake {
            host,
            routes,
            bearer: Arc::default(),
            floods: Arc::default(),
            endless: Arc::default(),
            token_requests: Arc::default(),
        };
        let f2 = f.clone();
        std::thread::spawn(move || {
            for conn in l.incoming() {
                let Ok(conn) = conn else { continue };
                let f = f2.clone();
                std::thread::spawn(move || {
                    let _ = serve(conn, &f);
                });
            }
        });
        f
    }

    fn set(&self, path: &str, r: Resp) {
        self.routes.lock().unwrap().insert(path.into(), r);
    }

    fn blob(&self, repo: &str, data: &[u8]) -> String {
        let d = sha(data);
        self.set(
            &format!("/v2/{repo}/blobs/{d}"),
            ok("application/octet-stream", data.to_vec()),
        );
        d
    }
}

fn serve(conn: std::net::TcpStream, f: &Fake) -> std::io::Result<()> {
    let mut w = conn.try_clone()?;
    let mut r = BufReader::new(conn);
    loop {
        let mut first = String::new();
        if r.read_line(&mut first)? == 0 {
            return Ok(());
        }
        let mut len = 0usize;
        let mut authz = String::new();
        loop {
            let mut h = String::new();
            r.read_line(&mut h)?;
            if h == "\r\n" || h.is_empty() {
                break;
            }
            if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                len = v.trim().parse().unwrap_or(0);
            }
            if h.to_ascii_lowercase().starts_with("authorization:") {
                authz = h["authorization:".len()..].trim().to_string();
            }
        }
        let mut sink = vec![0; len];
        r.read_exact(&mut sink)?;
        let mut parts = first.split_whitespace();
        let method = parts.next().unwrap_or("");
        let path = parts
            .next()
            .unwrap_or("")
            .split('?')
            .next()
            .unwrap_or("")
            .to_string();
        if path == "/token" {
            f.token_requests
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        let endless = f.endless.lock().unwrap().get(&path).copied();
        if let Some(status) = endless {
            write!(
                w,
                "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n"
            )?;
            let chunk = vec![b' '; 64 << 10];
            let mut left = ENDLESS;
            while left > 0 {
                let n = left.min(chunk.len());
                w.write_all(&chunk[..n])?;
                left -= n;
            }
            return Ok(());
        }
        let bearer = f.bearer.lock().unwrap().clone();
        let (status, extra, body) = match &bearer {
            // base64("u:p") = "dTpw"
            Some(token) if path == "/token" && authz == "Basic dTpw" => (
                200,
                String::new(),
                format!(r#"{{"token":"{token}"}}"#).into_bytes(),
            ),
            Some(_) if path == "/token" => (401, String::new(), b"{}".to_vec()),
            Some(token) if authz != format!("Bearer {token}") => (
                401,
                format!(
                    "WWW-Authenticate: Bearer realm=\"http://{}/token\",service=\"fake\"\r\n",
                    f.host
                ),
                br#"{"errors":[{"code":"UNAUTHORIZED","message":"token please"}]}"#.to_vec(),
            ),
            _ => (0, String::new(), vec![]),
        };
        if status != 0 {
            write!(
                w,
                "HTTP/1.1 {status} X\r\n{extra}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                body.len()
            )?;
            w.write_all(&body)?;
            w.flush()?;
            continue;
        }
        let flood = f.floods.lock().unwrap().get(&path).cloned();
        if let Some(fl) = flood {
            let len = if fl.announce {
                format!("Content-Length: {}\r\n", fl.bytes)
            } else {
                String::new()
            };
            write!(
                w,
                "HTTP/1.1 200 OK\r\nContent-Type: {OCI_MANIFEST}\r\n{len}Connection: close\r\n\r\n{{"
            )?;
            let chunk = vec![b' '; 64 << 10];
            let mut left = fl.bytes - 1;
            while left > 0 {
                let n = left.min(chunk.len());
                w.write_all(&chunk[..n])?;
                fl.served.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
                left -= n;
            }
            return Ok(());
        }
        let resp = f
            .routes
            .lock()
            .unwrap()
            .get(&path)
            .cloned()
            .unwrap_or(Resp {
                status: 404,
                content_type: "application/json".into(),
                body: br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"nope"}]}"#.to_vec(),
                announce_len: None,
            });
        let n = resp.announce_len.unwrap_or(resp.body.len());
        write!(
            w,
            "HTTP/1.1 {} X\r\nContent-Type: {}\r\nContent-Length: {n}\r\n\r\n",
            resp.status, resp.content_type
        )?;
        if method != "HEAD" {
            w.write_all(&resp.body)?;
        }
        w.flush()?;
        if resp.announce_len.is_some() {
            // Truncated: close so the client sees a short body.
            return Ok(());
        }
    }
}

fn sha(b: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(b)))
}

fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, name, *data).unwrap();
    }
    b.into_inner().unwrap()
}

fn gz(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

const GZ: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// A valid one-layer image, as parts a test can break before publishing.
struct Img {
    repo: String,
    layer_blob: Vec<u8>,
    layer_media_type: String,
    diff_ids: Vec<String>,
    config: serde_json::Value,
}

impl Img {
    fn new(repo: &str) -> Img {
        let tar = tar_of(&[("hello.txt", b"hello\n")]);
        Img {
            repo: repo.into(),
            layer_blob: gz(&tar),
            layer_media_type: GZ.into(),
            diff_ids: vec![sha(&tar)],
            config: serde_json::Value::Null,
        }
    }

    fn config_json(&self) -> Vec<u8> {
        if !self.config.is_null() {
            return serde_json::to_vec(&self.config).unwrap();
        }
        serde_json::to_vec(&serde_json::json!({
            "architecture": "amd64", "os": "linux",
            "config": {"Cmd": ["/hello"]},
            "rootfs": {"type": "layers", "diff_ids": self.diff_ids},
        }))
        .unwrap()
    }

    /// Publishes blobs and returns the manifest JSON (not yet served).
    fn publish_blobs(&self, f: &Fake) -> serde_json::Value {
        let cfg = self.config_json();
        let cd = f.blob(&self.repo, &cfg);
        let ld = f.blob(&self.repo, &self.layer_blob);
        serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cfg.len()},
            "layers": [{"mediaType": self.layer_media_type, "digest": ld, "size": self.layer_blob.len()}],
        })
    }

    fn serve_manifest(&self, f: &Fake, m: &serde_json::Value) {
        f.set(
            &format!("/v2/{}/manifests/latest", self.repo),
            ok(OCI_MANIFEST, serde_json::to_vec(m).unwrap()),
        );
    }

    fn layer_path(&self) -> String {
        format!("/v2/{}/blobs/{}", self.repo, sha(&self.layer_blob))
    }
}

struct Node {
    _dir: tempfile::TempDir,
    root: PathBuf,
    store: ImageStore,
}

fn node(f: &Fake) -> Node {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let db = Arc::new(redb::Database::create(root.join("meta.redb")).unwrap());
    let conf = RegistriesConfig::parse(&format!(
        "[[registry]]\nlocation = \"{}\"\ninsecure = true\n",
        f.host
    ))
    .unwrap();
    let store = ImageStore::open_with(
        &root,
        db,
        conf,
        StoreOptions {
            platform: Platform::new("linux", "amd64", None),
            ..Default::default()
        },
    )
    .unwrap();
    Node {
        _dir: dir,
        root,
        store,
    }
}

/// Pulls `repo`, expects an error of `kind` whose message names the image
/// and contains `needle`; checks nothing was left behind.
async fn expect_err(f: &Fake, repo: &str, kind: ImageErrorKind, needle: &str) {
    let n = node(f);
    let name = format!("{}/{repo}:latest", f.host);
    let e = n.store.pull(&name, None).await.unwrap_err();
    eprintln!("{repo}: {e}");
    assert_eq!(e.kind(), kind, "{repo}: {e}");
    let msg = e.to_string();
    assert!(
        msg.contains(&name),
        "{repo}: error does not name the image: {msg}"
    );
    assert!(
        msg.contains(needle),
        "{repo}: error lacks {needle:?}: {msg}"
    );
    assert!(n.store.list().unwrap().is_empty());
    let layers = std::fs::read_dir(n.root.join("images/layers"))
        .unwrap()
        .count();
    let tmp = std::fs::read_dir(n.root.join("images/tmp"))
        .unwrap()
        .count();
    assert_eq!((layers, tmp), (0, 0), "{repo}: leftovers");
}

#[tokio::test]
async fn a_valid_image_pulls_even_with_a_wrong_content_type() {
    let f = Fake::start();
    let img = Img::new("good/img");
    let m = img.publish_blobs(&f);
    f.set(
        "/v2/good/img/manifests/latest",
        ok("text/plain", serde_json::to_vec(&m).unwrap()),
    );
    let n = node(&f);
    let got = n
        .store
        .pull(&format!("{}/good/img", f.host), None)
        .await
        .unwrap();
    let dirs = n.store.layer_dirs(&got.id).unwrap();
    assert_eq!(
        std::fs::read_to_string(dirs[0].join("hello.txt")).unwrap(),
        "hello\n"
    );
}

#[tokio::test]
async fn bogus_manifests() {
    let f = Fake::start();
    let cases: Vec<(&str, Vec<u8>, ImageErrorKind, &str)> = vec![
        ("m/notjson", b"<html>hi</html>".to_vec(), ImageErrorKind::Unavailable, "not valid JSON"),
        ("m/null", b"null".to_vec(), ImageErrorKind::Unavailable, "manifest"),
        ("m/array", b"[1,2]".to_vec(), ImageErrorKind::Unavailable, "manifest"),
        ("m/empty", b"".to_vec(), ImageErrorKind::Unavailable, "manifest"),
        ("m/schema1", br#"{"schemaVersion":1,"name":"x","tag":"y","fsLayers":[]}"#.to_vec(), ImageErrorKind::Unimplemented, "schema 1"),
        ("m/schema3", br#"{"schemaVersion":3}"#.to_vec(), ImageErrorKind::Unavailable, "schemaVersion"),
        ("m/nolayers", br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000","size":2}}"#.to_vec(), ImageErrorKind::Unavailable, "no layers"),
        ("m/bigsize", br#"{"schemaVersion":2,"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000","size":1e30},"layers":[]}"#.to_vec(), ImageErrorKind::Unavailable, "manifest"),
        ("m/negsize", br#"{"schemaVersion":2,"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000","size":-5},"layers":[]}"#.to_vec(), ImageErrorKind::Unavailable, "negative"),
        ("m/baddigest", br#"{"schemaVersion":2,"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"md5:abc","size":5},"layers":[]}"#.to_vec(), ImageErrorKind::Unavailable, "digest"),
        ("m/artifact", br#"{"schemaVersion":2,"config":{"mediaType":"application/vnd.cncf.helm.config.v1+json","digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000","size":5},"layers":[]}"#.to_vec(), ImageErrorKind::Unimplemented, "artifact"),
        ("m/weirdtype", br#"{"schemaVersion":2,"mediaType":"application/x-foo","config":{},"layers":[]}"#.to_vec(), ImageErrorKind::Unimplemented, "x-foo"),
        ("m/nestedindex", br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.index.v1+json","digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000","size":5,"platform":{"os":"linux","architecture":"amd64"}}]}"#.to_vec(), ImageErrorKind::NotFound, "sha256:0000"),
        ("m/indexnoplatform", br#"{"schemaVersion":2,"manifests":[{"mediaType":"x","digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000","size":5}]}"#.to_vec(), ImageErrorKind::NotFound, "linux/amd64"),
    ];
    for (repo, body, kind, needle) in cases {
        f.set(
            &format!("/v2/{repo}/manifests/latest"),
            ok(OCI_MANIFEST, body),
        );
        expect_err(&f, repo, kind, needle).await;
    }
}

#[tokio::test]
async fn registry_status_codes() {
    let f = Fake::start();
    let cases = [
        ("s/e500", 500, ImageErrorKind::Unavailable),
        ("s/e503", 503, ImageErrorKind::Unavailable),
        ("s/e429", 429, ImageErrorKind::Unavailable),
        ("s/e403", 403, ImageErrorKind::PermissionDenied),
        ("s/e401", 401, ImageErrorKind::Unauthenticated),
        ("s/e404", 404, ImageErrorKind::NotFound),
        ("s/e418", 418, ImageErrorKind::Unavailable),
    ];
    for (repo, status, kind) in cases {
        f.set(
            &format!("/v2/{repo}/manifests/latest"),
            Resp {
                status,
                content_type: "text/html".into(),
                body: b"<html>no</html>".to_vec(),
                announce_len: None,
            },
        );
        expect_err(&f, repo, kind, &f.host).await;
    }
    // The OCI error envelope, as a real registry sends it.
    f.set(
        "/v2/s/denied/manifests/latest",
        Resp {
            status: 403,
            content_type: "application/json".into(),
            body: br#"{"errors":[{"code":"DENIED","message":"requested access to the resource is denied"}]}"#.to_vec(),
            announce_len: None,
        },
    );
    expect_err(&f, "s/denied", ImageErrorKind::PermissionDenied, "denied").await;
}

#[tokio::test]
async fn bad_configs() {
    let f = Fake::start();

    // Served config bytes differ from the digest (same length).
    let img = Img::new("c/digest");
    let m = img.publish_blobs(&f);
    let cd = m["config"]["digest"].as_str().unwrap().to_string();
    let mut bad = img.config_json();
    bad[0] = b' ';
    f.set(
        &format!("/v2/c/digest/blobs/{cd}"),
        ok("application/json", bad),
    );
    img.serve_manifest(&f, &m);
    expect_err(&f, "c/digest", ImageErrorKind::DataLoss, "config").await;

    // Longer than its descriptor says.
    let img = Img::new("c/long");
    let m = img.publish_blobs(&f);
    let cd = m["config"]["digest"].as_str().unwrap().to_string();
    let mut long = img.config_json();
    long.extend_from_slice(b"      ");
    f.set(
        &format!("/v2/c/long/blobs/{cd}"),
        ok("application/json", long),
    );
    img.serve_manifest(&f, &m);
    expect_err(&f, "c/long", ImageErrorKind::DataLoss, "config").await;

    // A descriptor announcing a huge config.
    let img = Img::new("c/huge");
    let mut m = img.publish_blobs(&f);
    m["config"]["size"] = serde_json::json!(1u64 << 40);
    img.serve_manifest(&f, &m);
    expect_err(&f, "c/huge", ImageErrorKind::Unimplemented, "limit").await;

    // Not JSON / no rootfs.
    for (repo, cfg) in [
        ("c/notjson", serde_json::json!("just a string")),
        (
            "c/norootfs",
            serde_json::json!({"architecture": "amd64", "os": "linux"}),
        ),
        (
            "c/badtype",
            serde_json::json!({"rootfs": {"type": "zfs", "diff_ids": []}}),
        ),
        (
            "c/baddiff",
            serde_json::json!({"rootfs": {"type": "layers", "diff_ids": ["sha256:xyz"]}}),
        ),
    ] {
        let mut img = Img::new(repo);
        img.config = cfg;
        let m = img.publish_blobs(&f);
        img.serve_manifest(&f, &m);
        expect_err(&f, repo, ImageErrorKind::DataLoss, "config").await;
    }

    // diff_ids count differs from the layer count.
    let mut img = Img::new("c/count");
    img.diff_ids.push(sha(b"another"));
    let m = img.publish_blobs(&f);
    img.serve_manifest(&f, &m);
    expect_err(&f, "c/count", ImageErrorKind::DataLoss, "diff_ids").await;
}

#[tokio::test]
async fn bad_layers() {
    let f = Fake::start();

    // Bytes changed, same length: digest mismatch.
    let img = Img::new("l/digest");
    let m = img.publish_blobs(&f);
    let mut bad = img.layer_blob.clone();
    let last = bad.len() - 9;
    bad[last] ^= 0xff;
    f.set(&img.layer_path(), ok("application/octet-stream", bad));
    img.serve_manifest(&f, &m);
    expect_err(&f, "l/digest", ImageErrorKind::DataLoss, "layer sha256:").await;

    // Longer than the descriptor.
    let img = Img::new("l/long");
    let m = img.publish_blobs(&f);
    let mut long = img.layer_blob.clone();
    long.extend_from_slice(&[0; 4096]);
    f.set(&img.layer_path(), ok("application/octet-stream", long));
    img.serve_manifest(&f, &m);
    expect_err(&f, "l/long", ImageErrorKind::DataLoss, "layer sha256:").await;

    // Shorter, and the registry says so.
    let img = Img::new("l/short");
    let m = img.publish_blobs(&f);
    let short = img.layer_blob[..10].to_vec();
    f.set(&img.layer_path(), ok("application/octet-stream", short));
    img.serve_manifest(&f, &m);
    expect_err(&f, "l/short", ImageErrorKind::DataLoss, "layer sha256:").await;

    // Truncated: the connection closes before Content-Length bytes.
    let img = Img::new("l/trunc");
    let m = img.publish_blobs(&f);
    f.set(
        &img.layer_path(),
        Resp {
            announce_len: Some(img.layer_blob.len()),
            ..ok("application/octet-stream", img.layer_blob[..10].to_vec())
        },
    );
    img.serve_manifest(&f, &m);
    expect_err(&f, "l/trunc", ImageErrorKind::Unavailable, "layer sha256:").await;

    // The diffID in the config is not the tar's.
    let mut img = Img::new("l/diffid");
    img.diff_ids = vec![sha(b"something else")];
    let m = img.publish_blobs(&f);
    img.serve_manifest(&f, &m);
    expect_err(&f, "l/diffid", ImageErrorKind::DataLoss, "layer sha256:").await;

    // Not gzip at all, with a matching digest.
    let mut img = Img::new("l/notgz");
    img.layer_blob = b"this is not gzip data, not at all".to_vec();
    let m = img.publish_blobs(&f);
    img.serve_manifest(&f, &m);
    expect_err(&f, "l/notgz", ImageErrorKind::DataLoss, "layer sha256:").await;

    // Foreign, non-distributable and unknown media types.
    for (repo, mt) in [
        (
            "l/foreign",
            "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
        ),
        (
            "l/nondist",
            "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
        ),
        ("l/unknown", "application/x-squashfs"),
    ] {
        let mut img = Img::new(repo);
        img.layer_media_type = mt.into();
        let m = img.publish_blobs(&f);
        img.serve_manifest(&f, &m);
        expect_err(&f, repo, ImageErrorKind::Unimplemented, "layer sha256:").await;
    }

    // The layer blob is missing.
    let img = Img::new("l/missing");
    let m = img.publish_blobs(&f);
    f.routes.lock().unwrap().remove(&img.layer_path());
    img.serve_manifest(&f, &m);
    expect_err(&f, "l/missing", ImageErrorKind::NotFound, "layer sha256:").await;
}

#[tokio::test]
async fn digest_pull_with_wrong_content() {
    let f = Fake::start();
    let img = Img::new("d/img");
    let m = img.publish_blobs(&f);
    let body = serde_json::to_vec(&m).unwrap();
    let want = sha(b"a different manifest");
    f.set(
        &format!("/v2/d/img/manifests/{want}"),
        ok(OCI_MANIFEST, body),
    );
    let n = node(&f);
    let name = format!("{}/d/img@{want}", f.host);
    let e = n.store.pull(&name, None).await.unwrap_err();
    eprintln!("{e}");
    assert_eq!(e.kind(), ImageErrorKind::DataLoss, "{e}");
    assert!(e.to_string().contains(&name), "{e}");
}

#[tokio::test]
async fn bearer_token_flow() {
    let f = Fake::start();
    *f.bearer.lock().unwrap() = Some("tok123".into());
    let img = Img::new("b/img");
    let m = img.publish_blobs(&f);
    img.serve_manifest(&f, &m);
    let name = format!("{}/b/img:latest", f.host);

    // Anonymous: the token endpoint refuses, the registry says 401.
    expect_err(&f, "b/img", ImageErrorKind::Unauthenticated, &f.host).await;
    // Wrong password.
    let n = node(&f);
    let e = n
        .store
        .pull(&name, Some(berth_image::RegistryAuth::basic("u", "wrong")))
        .await
        .unwrap_err();
    eprintln!("{e}");
    assert_eq!(e.kind(), ImageErrorKind::Unauthenticated, "{e}");
    assert!(e.to_string().contains(&f.host), "{e}");
    // Right credentials: token fetched, then manifest, config and layer.
    let got = n
        .store
        .pull(&name, Some(berth_image::RegistryAuth::basic("u", "p")))
        .await
        .unwrap();
    assert_eq!(n.store.layer_dirs(&got.id).unwrap().len(), 1);
    // A registry token from the CRI request is used as the bearer directly.
    let n2 = node(&f);
    let auth = berth_image::RegistryAuth {
        registry_token: "tok123".into(),
        ..Default::default()
    };
    n2.store.pull(&name, Some(auth)).await.unwrap();
}

/// A token serves every later pull of the repository with the same
/// credentials; when the registry stops taking it (rotated, or expired
/// before its `expires_in`), the 401 gets a fresh one and the pull goes on.
/// Other credentials never get it.
#[tokio::test]
async fn tokens_are_reused_and_renewed_when_refused() {
    use std::sync::atomic::Ordering::Relaxed;
    let f = Fake::start();
    *f.bearer.lock().unwrap() = Some("tok1".into());
    let img = Img::new("t/img");
    let m = img.publish_blobs(&f);
    img.serve_manifest(&f, &m);
    let name = format!("{}/t/img:latest", f.host);
    let creds = || Some(berth_image::RegistryAuth::basic("u", "p"));
    let n = node(&f);
    n.store.pull(&name, creds()).await.unwrap();
    assert_eq!(f.token_requests.load(Relaxed), 1);
    n.store.pull(&name, creds()).await.unwrap();
    assert_eq!(f.token_requests.load(Relaxed), 1, "the token was reused");
    *f.bearer.lock().unwrap() = Some("tok2".into());
    n.store.pull(&name, creds()).await.unwrap();
    assert_eq!(f.token_requests.load(Relaxed), 2, "a new token after a 401");
    let e = n.store.pull(&name, None).await.unwrap_err();
    assert_eq!(e.kind(), ImageErrorKind::Unauthenticated, "{e}");
    assert!(e.to_string().contains("token server"), "{e}");
}

/// A registry that sends a manifest far over the 4 MiB limit, announced or
/// not (chunked to the end, or a length it lies about): the pull fails with
/// a message naming the limit, nothing is stored, and the client stopped
/// reading near the limit instead of taking it all into memory.
#[tokio::test]
async fn huge_or_endless_manifests_are_cut_off() {
    let f = Fake::start();
    let total = 64 << 20;
    for (repo, announce) in [("flood/announced", true), ("flood/unannounced", false)] {
        let served = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        f.floods.lock().unwrap().insert(
            format!("/v2/{repo}/manifests/latest"),
            Flood {
                bytes: total,
                announce,
                served: served.clone(),
            },
        );
        expect_err(
            &f,
            repo,
            ImageErrorKind::Unimplemented,
            "4194304 byte limit",
        )
        .await;
        // What the socket buffers held when the client hung up, at most.
        let taken = served.load(std::sync::atomic::Ordering::Relaxed);
        assert!(
            taken < total / 4,
            "{repo}: the client read {taken} of {total} bytes"
        );
    }
}

/// This process's resident memory, in bytes.
fn rss() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = s.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb << 10
}

/// Runs `pull` while sampling the RSS; returns its result, the peak RSS
/// growth and the time it took.
async fn measured<T>(pull: impl std::future::Future<Output = T>) -> (T, u64, std::time::Duration) {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let before = rss();
    let peak = Arc::new(AtomicU64::new(before));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, stop) = (peak.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                peak.fetch_max(rss(), Ordering::Relaxed);
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        })
    };
    let started = std::time::Instant::now();
    let r = pull.await;
    let took = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    let grew = peak.load(Ordering::Relaxed).saturating_sub(before);
    (r, grew, took)
}

/// Answers with an endless body where oci-client 0.18 read whole bodies:
/// the token of the Docker token flow (200 and refusal) and error answers
/// to manifest, config and layer requests. Each pull fails quickly with a
/// clear error and memory stays flat. One test, run in sequence, so that
/// the RSS measured is this pull's alone.
#[tokio::test]
async fn endless_token_and_error_bodies_are_cut_off() {
    const MAX_GROWTH: u64 = 64 << 20;
    let f = Fake::start();
    let img = Img::new("e/img");
    let m = img.publish_blobs(&f);
    img.serve_manifest(&f, &m);
    let cfg_path = format!(
        "/v2/e/img/blobs/{}",
        m["config"]["digest"].as_str().unwrap()
    );
    let creds = || Some(berth_image::RegistryAuth::basic("u", "p"));
    let cases: Vec<(&str, String, u16, bool, ImageErrorKind, &str)> = vec![
        // The token endpoint grants, with an endless token.
        (
            "token 200",
            "/token".into(),
            200,
            true,
            ImageErrorKind::Unavailable,
            "token",
        ),
        // The token endpoint refuses, with an endless reason.
        (
            "token 401",
            "/token".into(),
            401,
            true,
            ImageErrorKind::Unauthenticated,
            "token",
        ),
        // Errors with endless bodies.
        (
            "manifest 500",
            "/v2/e/img/manifests/latest".into(),
            500,
            false,
            ImageErrorKind::Unavailable,
            "manifest",
        ),
        (
            "config 500",
            cfg_path.clone(),
            500,
            false,
            ImageErrorKind::Unavailable,
            "config",
        ),
        (
            "config 404",
            cfg_path,
            404,
            false,
            ImageErrorKind::NotFound,
            "config",
        ),
        (
            "layer 503",
            img.layer_path(),
            503,
            false,
            ImageErrorKind::Unavailable,
            "layer sha256:",
        ),
    ];
    let mut failures = Vec::new();
    for (what, path, status, bearer, kind, needle) in cases {
        *f.bearer.lock().unwrap() = bearer.then(|| "tok".to_string());
        f.endless.lock().unwrap().clear();
        f.endless.lock().unwrap().insert(path, status);
        let n = node(&f);
        let name = format!("{}/e/img:latest", f.host);
        let (r, grew, took) = measured(n.store.pull(&name, creds())).await;
        let Err(e) = r else {
            failures.push(format!("{what}: the pull succeeded"));
            continue;
        };
        let msg = e.to_string();
        // Shortened: before the fix the message held the whole body.
        let short: String = msg.chars().take(300).collect();
        eprintln!("{what}: {short} (RSS +{} KiB, {took:?})", grew >> 10);
        if e.kind() != kind {
            failures.push(format!(
                "{what}: kind {:?}, not {kind:?}: {short}",
                e.kind()
            ));
        }
        if !msg.contains(&name) || !msg.contains(needle) {
            failures.push(format!(
                "{what}: error lacks the image or {needle:?}: {msg}"
            ));
        }
        if grew >= MAX_GROWTH {
            failures.push(format!(
                "{what}: RSS grew by {} MiB during the pull",
                grew >> 20
            ));
        }
        if took >= std::time::Duration::from_secs(20) {
            failures.push(format!("{what}: took {took:?}"));
        }
        assert!(n.store.list().unwrap().is_empty());
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
