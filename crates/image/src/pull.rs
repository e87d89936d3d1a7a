//! The pull: resolve the manifest (mirrors in order, then the location),
//! fetch and verify the config, then stream every layer straight from the
//! network through digest, decompression, diffID and untar in one pass, a
//! few layers at a time. A layer another pull is already fetching is awaited,
//! not fetched again. The image becomes visible in one transaction at the end.

use std::io::{self, Read};
use std::path::PathBuf;
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt, TryStreamExt};
use tokio::sync::mpsc;
use tracing::{Instrument, debug, info};

use crate::blob_fetch::{fetch_small_blob, open_blob};
use crate::digest::Digest;
use crate::error::{ImageError, IoContext};
use crate::manifest::{self, Descriptor, Manifest};
use crate::manifest_fetch::get_manifest;
use crate::reference::ImageRef;
use crate::registries_conf::{Endpoint, PullSources};
use crate::registry::{RegErr, RegErrKind, RegistryAuth};
use crate::session::Session;
use crate::store::{self, ImageRecord, LayerRecord};
use crate::unpack::UnpackError;
use crate::unpack::{Compression, unpack_layer};
use crate::{Image, ImageStore, Inner};

/// What the manifest resolution found, and where.
struct Resolved {
    endpoint: Endpoint,
    /// Authorized for the endpoint's repository: the config and layers come from there too.
    session: Session,
    /// Digest of what the reference names (index or manifest).
    top_digest: Digest,
    index: Option<(Digest, Vec<u8>)>,
    manifest_digest: Digest,
    manifest_body: Vec<u8>,
    config: Descriptor,
    layers: Vec<Descriptor>,
}

fn sha256(b: &[u8]) -> Digest {
    Digest::sha256_of(b)
}

pub(crate) async fn pull(
    inner: Arc<Inner>,
    reference: &str,
    auth: RegistryAuth,
) -> Result<Image, ImageError> {
    let r = ImageRef::parse(reference)?;
    let span = tracing::info_span!("image_pull", image = %r);
    pull_ref(inner, r, auth).instrument(span).await
}

async fn pull_ref(inner: Arc<Inner>, r: ImageRef, auth: RegistryAuth) -> Result<Image, ImageError> {
    let name = r.to_string();
    let started = std::time::Instant::now();
    let sources = inner
        .registries
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .pull_sources(&r)?;
    let endpoints = match sources {
        PullSources::Blocked { registry } => {
            return Err(ImageError::Blocked {
                image: name,
                registry,
            });
        }
        PullSources::Endpoints(v) => v,
    };
    let res = resolve(&inner, &auth, &endpoints, &name).await?;
    let host = res.endpoint.host().to_string();
    debug!(registry = %host, manifest = %res.manifest_digest, "manifest resolved");

    // Config: small, read into memory, verified.
    let config_digest: Digest =
        res.config
            .digest
            .parse::<Digest>()
            .map_err(|e| ImageError::Verification {
                image: name.clone(),
                what: "config descriptor".into(),
                detail: e.to_string(),
            })?;
    if res.config.size as u64 > manifest::MAX_CONFIG_SIZE {
        return Err(ImageError::Unsupported {
            image: name,
            detail: format!(
                "config is {} bytes, more than the {} byte limit",
                res.config.size,
                manifest::MAX_CONFIG_SIZE
            ),
        });
    }
    let config_body = fetch_small_blob(&res.session, &res.config)
        .await
        .map_err(|e| reg_error(e, &name, &host, "config", vec![]))?;
    if sha256(&config_body) != config_digest {
        return Err(ImageError::Verification {
            image: name,
            what: format!("config {config_digest}"),
            detail: format!("content hashes to {}", sha256(&config_body)),
        });
    }
    let (summary, diff_ids) =
        manifest::parse_config(&config_body).map_err(|detail| ImageError::Verification {
            image: name.clone(),
            what: format!("config {config_digest}"),
            detail,
        })?;
    if diff_ids.len() != res.layers.len() {
        return Err(ImageError::Verification {
            image: name,
            what: "config rootfs.diff_ids".into(),
            detail: format!(
                "{} diff_ids for {} layers in the manifest",
                diff_ids.len(),
                res.layers.len()
            ),
        });
    }
    let p = &inner.opts.platform;
    if (summary.architecture != p.architecture && !summary.architecture.is_empty())
        || (summary.os != p.os && !summary.os.is_empty())
    {
        tracing::warn!(
            os = %summary.os,
            arch = %summary.architecture,
            node = %inner.opts.platform,
            "image config is for another platform"
        );
    }

    // Layers.
    let mut jobs = Vec::with_capacity(res.layers.len());
    for (i, (desc, diff_id)) in res.layers.iter().zip(diff_ids.iter()).enumerate() {
        let layer_name = format!("{} (layer {} of {})", desc.digest, i + 1, res.layers.len());
        let compression =
            layer_compression(&desc.media_type, desc.urls.is_some()).map_err(|detail| {
                ImageError::Unsupported {
                    image: name.clone(),
                    detail: format!("layer {layer_name}: {detail}"),
                }
            })?;
        let blob_digest: Digest =
            desc.digest
                .parse::<Digest>()
                .map_err(|e| ImageError::Verification {
                    image: name.clone(),
                    what: format!("layer {layer_name}"),
                    detail: e.to_string(),
                })?;
        jobs.push(LayerJob {
            image: name.clone(),
            layer_name,
            diff_id: diff_id.clone(),
            blob_digest,
            size: desc.size as u64,
            compression,
            session: res.session.clone(),
            host: host.clone(),
        });
    }

    let mut pinned: Vec<String> = diff_ids.iter().map(|d| d.to_string()).collect();
    pinned.push(config_digest.to_string());
    pinned.push(res.manifest_digest.to_string());
    if let Some((d, _)) = &res.index {
        pinned.push(d.to_string());
    }
    let _pins = Pins::new(inner.clone(), pinned);

    futures::stream::iter(jobs.into_iter().map(|j| ensure_layer(inner.clone(), j)))
        .buffer_unordered(inner.opts.max_parallel_layers)
        .try_collect::<Vec<()>>()
        .await?;

    // Blobs, then the record: visible only now, all at once.
    let layer_ids: Vec<String> = diff_ids.iter().map(|d| d.to_string()).collect();
    let repo_tags = if r.digest.is_none() {
        r.tagged().into_iter().collect()
    } else {
        // `name:tag@digest` is pulled by digest; the tag is not trusted
        // (the registry's tag may point elsewhere), as in Docker.
        vec![]
    };
    let repo_digests = vec![r.with_digest(&res.top_digest)];
    let user = summary
        .config
        .and_then(|c| c.user)
        .filter(|u| !u.is_empty());
    let mut blobs = vec![(res.manifest_digest.clone(), res.manifest_body.clone())];
    blobs.extend(res.index.clone());
    blobs.push((config_digest.clone(), config_body));
    let rec = record_image(
        inner.clone(),
        NewImage {
            id: config_digest.to_string(),
            manifest_digest: res.manifest_digest.to_string(),
            index_digest: res.index.as_ref().map(|(d, _)| d.to_string()),
            blobs,
            layers: layer_ids,
            repo_tags,
            repo_digests,
            user,
        },
    )
    .await?;
    info!(id = %rec.id, elapsed_ms = started.elapsed().as_millis() as u64, "image pulled");
    ImageStore { inner }.to_image(rec)
}

/// An image whose layers are all recorded, about to become visible.
pub(crate) struct NewImage {
    /// `sha256:<hex>` of the config.
    pub id: String,
    pub manifest_digest: String,
    pub index_digest: Option<String>,
    /// Manifest, index (if any) and config, with their digests.
    pub blobs: Vec<(Digest, Vec<u8>)>,
    /// diffIDs, lowest first.
    pub layers: Vec<String>,
    pub repo_tags: Vec<String>,
    pub repo_digests: Vec<String>,
    pub user: Option<String>,
}

/// Blobs, then the record: visible only now, all at once (a pull's and an
/// import's last step).
pub(crate) async fn record_image(
    inner: Arc<Inner>,
    n: NewImage,
) -> Result<ImageRecord, ImageError> {
    tokio::task::spawn_blocking(move || -> Result<ImageRecord, ImageError> {
        let l = &inner.layout;
        for (d, b) in &n.blobs {
            l.write_blob(d.as_ref(), b)?;
        }
        let mut size = 0;
        for d in &n.layers {
            match inner.meta.layer(d)? {
                Some(lr) => size += lr.bytes,
                None => {
                    return Err(ImageError::Store(format!(
                        "layer {d} vanished before the image was recorded"
                    )));
                }
            }
        }
        inner.meta.commit_image(ImageRecord {
            id: n.id,
            manifest_digest: n.manifest_digest,
            index_digest: n.index_digest,
            layers: n.layers,
            repo_tags: n.repo_tags,
            repo_digests: n.repo_digests,
            size,
            user: n.user,
            pinned: false,
            pulled_at_unix_nanos: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as i64)
                .unwrap_or(0),
        })
    })
    .await
    .map_err(|e| ImageError::Store(format!("recording image: {e}")))?
}

/// Chooses the decompressor for a layer media type; refuses what we cannot
/// or must not pull.
pub(crate) fn layer_compression(media_type: &str, has_urls: bool) -> Result<Compression, String> {
    if media_type.contains("foreign") || media_type.contains("nondistributable") || has_urls {
        return Err(format!(
            "foreign/non-distributable layer ({media_type}) must be fetched from external URLs; Berth does not pull those"
        ));
    }
    Compression::from_media_type(media_type).map_err(|e| e.to_string())
}

/// Tries each endpoint in order until one serves the manifest.
async fn resolve(
    inner: &Inner,
    auth: &RegistryAuth,
    endpoints: &[Endpoint],
    name: &str,
) -> Result<Resolved, ImageError> {
    let mut tried = Vec::new();
    let mut last = None;
    for ep in endpoints {
        let session = inner
            .clients
            .session(auth, ep)
            .map_err(|e| ImageError::Unauthenticated {
                image: name.to_string(),
                registry: ep.host().to_string(),
                detail: format!("bad credentials in the request: {e}"),
            })?;
        match fetch_manifest(inner, session, ep).await {
            Ok(r) => return Ok(r),
            Err(e) => {
                debug!(endpoint = %ep.reference, error = %e.detail, "manifest fetch failed");
                if ep.is_mirror {
                    tried.push(format!("{}: {}", ep.host(), e.detail));
                }
                last = Some((e, ep));
            }
        }
    }
    let (e, ep) = last.expect("pull_sources always returns the location");
    // The location's answer decides the error; mirrors are named in it.
    Err(reg_error(e, name, ep.host(), "manifest", tried))
}

async fn fetch_manifest(
    inner: &Inner,
    session: Session,
    ep: &Endpoint,
) -> Result<Resolved, RegErr> {
    let reference = &ep.reference;
    let top_ref = reference.to_oci();
    let body = get_manifest(&session, &top_ref, manifest::ACCEPT).await?;
    let top = sha256(&body);
    if let Some(want) = &reference.digest
        && *want != top
    {
        return Err(RegErr::new(
            RegErrKind::Digest,
            format!("manifest hashes to {top}, not the requested {want}"),
        ));
    }
    let parsed = manifest::parse_manifest(&body).map_err(RegErr::from_manifest)?;
    let (index, manifest_digest, manifest_body, parsed) = match parsed {
        m @ Manifest::Image { .. } => (None, top.clone(), body, m),
        Manifest::Index { manifests } => {
            let p = &inner.opts.platform;
            let pick = p.select(manifests.iter().map(Descriptor::platform_triple));
            let Some(i) = pick else {
                let have: Vec<String> = manifests
                    .iter()
                    .filter_map(|m| m.platform.as_ref())
                    .map(|pl| {
                        let mut s = format!("{}/{}", pl.os, pl.architecture);
                        if let Some(v) = &pl.variant {
                            s = format!("{s}/{v}");
                        }
                        s
                    })
                    .collect();
                return Err(RegErr::new(
                    RegErrKind::NotFound,
                    format!(
                        "the image index has no manifest for {p} (it has: {})",
                        have.join(", ")
                    ),
                ));
            };
            let child: Digest = manifests[i]
                .digest
                .parse::<Digest>()
                .map_err(|e| RegErr::new(RegErrKind::Protocol, e.to_string()))?;
            let child_ref = ImageRef {
                tag: None,
                digest: Some(child.clone()),
                ..reference.clone()
            };
            let cb = get_manifest(&session, &child_ref.to_oci(), manifest::ACCEPT).await?;
            if sha256(&cb) != child {
                return Err(RegErr::new(
                    RegErrKind::Digest,
                    format!("platform manifest hashes to {}, not {child}", sha256(&cb)),
                ));
            }
            let m = manifest::parse_manifest(&cb).map_err(RegErr::from_manifest)?;
            if matches!(m, Manifest::Index { .. }) {
                return Err(RegErr::new(
                    RegErrKind::Protocol,
                    "an image index entry points at another index",
                ));
            }
            (Some((top.clone(), body)), child, cb, m)
        }
    };
    let Manifest::Image { config, layers } = parsed else {
        unreachable!("indexes were resolved above")
    };
    Ok(Resolved {
        endpoint: ep.clone(),
        session,
        top_digest: top,
        index,
        manifest_digest,
        manifest_body,
        config,
        layers,
    })
}

/// Attaches the image (and registry) to a registry failure.
fn reg_error(
    e: RegErr,
    image: &str,
    host: &str,
    what: &str,
    mirrors_tried: Vec<String>,
) -> ImageError {
    let image = image.to_string();
    let registry = host.to_string();
    let mut detail = format!("fetching {what}: {}", e.detail);
    if e.kind == RegErrKind::Unavailable && crate::registry::looks_like_plain_http(&e.detail) {
        detail = format!(
            "{detail} (registry {host} answers in plain HTTP, not HTTPS: if that is intended, \
             add `insecure = true` to its [[registry]] entry in registries.conf)"
        );
    }
    if e.kind != RegErrKind::Unavailable && !mirrors_tried.is_empty() {
        detail = format!(
            "{detail} (mirrors tried first: {})",
            mirrors_tried.join("; ")
        );
    }
    match e.kind {
        RegErrKind::NotFound => ImageError::NotFound {
            reference: image,
            detail: format!("{detail} (registry {registry})"),
        },
        RegErrKind::Unauthenticated => ImageError::Unauthenticated {
            image,
            registry,
            detail,
        },
        RegErrKind::Denied => ImageError::PermissionDenied {
            image,
            registry,
            detail,
        },
        RegErrKind::Unavailable => ImageError::Unavailable {
            image,
            host: registry,
            mirrors_tried,
            detail,
        },
        RegErrKind::Digest => ImageError::Verification {
            image,
            what: what.to_string(),
            detail,
        },
        RegErrKind::Unsupported => ImageError::Unsupported { image, detail },
        RegErrKind::Protocol => ImageError::Registry {
            image,
            registry,
            detail,
        },
    }
}

struct LayerJob {
    image: String,
    layer_name: String,
    diff_id: Digest,
    blob_digest: Digest,
    size: u64,
    compression: Compression,
    session: Session,
    host: String,
}

/// Pins digests against garbage collection for the life of a pull.
pub(crate) struct Pins {
    inner: Arc<Inner>,
    keys: Vec<String>,
}

impl Pins {
    pub(crate) fn new(inner: Arc<Inner>, keys: Vec<String>) -> Pins {
        {
            let mut st = inner.state.lock().unwrap_or_else(|p| p.into_inner());
            for k in &keys {
                *st.pins.entry(k.clone()).or_default() += 1;
            }
        }
        Pins { inner, keys }
    }
}

impl Drop for Pins {
    fn drop(&mut self) {
        let mut st = self.inner.state.lock().unwrap_or_else(|p| p.into_inner());
        for k in &self.keys {
            if let Some(n) = st.pins.get_mut(k) {
                *n -= 1;
                if *n == 0 {
                    st.pins.remove(k);
                }
            }
        }
    }
}

/// Makes sure a layer is present: already there, being fetched by another
/// pull (await it), or fetch it now.
async fn ensure_layer(inner: Arc<Inner>, job: LayerJob) -> Result<(), ImageError> {
    let key = job.diff_id.to_string();
    let span = tracing::info_span!("layer", layer = %job.layer_name);
    ensure_layer_with(inner, key, span, move |inner| {
        fetch_layer(inner, job).boxed()
    })
    .await
}

/// Makes sure layer `key` (a diffID) is present: already recorded, being
/// made by another pull or import (await that), or made now by `make`, which
/// must record it. Shared by pulls and imports, so one layer is never
/// unpacked twice at once.
pub(crate) async fn ensure_layer_with(
    inner: Arc<Inner>,
    key: String,
    span: tracing::Span,
    make: impl FnOnce(Arc<Inner>) -> BoxFuture<'static, Result<(), ImageError>> + Send + 'static,
) -> Result<(), ImageError> {
    let fut = {
        let mut st = inner.state.lock().unwrap_or_else(|p| p.into_inner());
        // Checked under the lock: the fetching task records the layer
        // before it leaves `inflight`, so one of the two is always seen.
        if inner.meta.layer(&key)?.is_some() {
            debug!(layer = %key, "layer already present");
            return Ok(());
        }
        match st.inflight.get(&key) {
            Some(f) => {
                debug!(layer = %key, "layer being fetched by another pull; waiting");
                f.clone()
            }
            None => {
                let inner2 = inner.clone();
                let key2 = key.clone();
                // Spawned so that it finishes (and cleans up) even if the
                // pull that started it is cancelled while others wait on it.
                let task = tokio::spawn(
                    async move {
                        let r = make(inner2.clone()).await;
                        inner2
                            .state
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .inflight
                            .remove(&key2);
                        r
                    }
                    .instrument(span),
                );
                let f = async move {
                    task.await
                        .map_err(|e| ImageError::Store(format!("layer task failed: {e}")))?
                }
                .boxed()
                .shared();
                st.inflight.insert(key.clone(), f.clone());
                f
            }
        }
    };
    fut.await
}

async fn fetch_layer(inner: Arc<Inner>, job: LayerJob) -> Result<(), ImageError> {
    let started = std::time::Instant::now();
    let tmp = inner.layout.tmp_path("layer");
    std::fs::create_dir(&tmp).ctx(|| format!("creating {}", tmp.display()))?;
    let r = download_and_unpack(&inner, &job, tmp.clone()).await;
    let inner2 = inner.clone();
    let diff_id = job.diff_id.to_string();
    let blob_digest = job.blob_digest.to_string();
    let size = job.size;
    let r = tokio::task::spawn_blocking(move || {
        if let Err(e) = r {
            let _ = store::remove_any(&tmp);
            return Err(e);
        }
        let res = finish_layer(&inner2, &tmp, diff_id, blob_digest, size);
        if res.is_err() {
            let _ = store::remove_any(&tmp);
        }
        res
    })
    .await
    .map_err(|e| ImageError::Store(format!("layer task failed: {e}")))?;
    if r.is_ok() {
        info!(
            layer = %job.layer_name,
            bytes = job.size,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "layer unpacked"
        );
    }
    r
}

/// syncfs, rename into place, make the rename durable, then record.
pub(crate) fn finish_layer(
    inner: &Inner,
    tmp: &PathBuf,
    diff_id: String,
    blob_digest: String,
    blob_size: u64,
) -> Result<(), ImageError> {
    let l = &inner.layout;
    let f = std::fs::File::open(tmp).ctx(|| format!("opening {}", tmp.display()))?;
    nix::unistd::syncfs(&f).ctx(|| format!("syncfs of {}", tmp.display()))?;
    drop(f);
    let (bytes, inodes) = store::disk_usage(tmp).ctx(|| format!("measuring {}", tmp.display()))?;
    let dst = l.layer_dir(&diff_id);
    // A dir without a record is a leftover (records are what count).
    l.trash(&dst)?;
    std::fs::rename(tmp, &dst).ctx(|| format!("renaming layer into {}", dst.display()))?;
    store::fsync_dir(&l.layers)?;
    inner.meta.put_layer(&LayerRecord {
        diff_id,
        blob_digest,
        blob_size,
        bytes,
        inodes,
    })
}

async fn download_and_unpack(
    inner: &Inner,
    job: &LayerJob,
    tmp: PathBuf,
) -> Result<(), ImageError> {
    let layer_err = |e: RegErr| {
        reg_error(
            e,
            &job.image,
            &job.host,
            &format!("layer {}", job.layer_name),
            vec![],
        )
    };
    let mut res = open_blob(&job.session, job.blob_digest.as_ref(), job.size)
        .await
        .map_err(layer_err)?;
    // Bounded: the network never runs more than a few MB ahead of the disk.
    let (tx, rx) = mpsc::channel::<io::Result<Vec<u8>>>(64);
    let compression = job.compression;
    let blob_digest = job.blob_digest.clone();
    let diff_id = job.diff_id.clone();
    let limits = inner.opts.unpack_limits.clone();
    let size = job.size;
    let unpack = tokio::task::spawn_blocking(move || {
        let reader = ChannelReader {
            rx,
            cur: Vec::new(),
            pos: 0,
            total: 0,
            expected: size,
        };
        unpack_layer(reader, compression, &blob_digest, &diff_id, &tmp, &limits)
    });
    let mut net_err = None;
    loop {
        match res.chunk().await {
            Ok(None) => break,
            Ok(Some(b)) => {
                inner
                    .layer_bytes_fetched
                    .fetch_add(b.len() as u64, std::sync::atomic::Ordering::Relaxed);
                if tx.send(Ok(b.to_vec())).await.is_err() {
                    break; // the unpacker stopped; its result says why
                }
            }
            Err(e) => {
                let msg = crate::registry::with_sources(&e);
                let _ = tx.send(Err(io::Error::other(msg.clone()))).await;
                net_err = Some(msg);
                break;
            }
        }
    }
    drop(tx);
    let res = unpack
        .await
        .map_err(|e| ImageError::Store(format!("unpack task failed: {e}")))?;
    match (net_err, res) {
        (Some(msg), _) => Err(layer_err(RegErr::new(RegErrKind::Unavailable, msg))),
        // A write that failed on this node says nothing of the layer.
        (None, Err(e @ (UnpackError::Io { .. } | UnpackError::DiskFull { .. }))) => {
            Err(ImageError::NodeStorage {
                image: job.image.clone(),
                layer: job.layer_name.clone(),
                source: Arc::new(e),
            })
        }
        (None, Err(e)) => Err(ImageError::Corrupt {
            image: job.image.clone(),
            layer: job.layer_name.clone(),
            source: Arc::new(e),
        }),
        (None, Ok(_stats)) => Ok(()),
    }
}

/// Blocking `Read` over the chunks the download task sends; enforces the
/// descriptor size so a registry cannot stream forever.
struct ChannelReader {
    rx: mpsc::Receiver<io::Result<Vec<u8>>>,
    cur: Vec<u8>,
    pos: usize,
    total: u64,
    expected: u64,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.cur.len() {
            match self.rx.blocking_recv() {
                Some(Ok(b)) => {
                    self.total += b.len() as u64;
                    if self.total > self.expected {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!(
                                "blob is larger than its descriptor's {} bytes",
                                self.expected
                            ),
                        ));
                    }
                    self.cur = b;
                    self.pos = 0;
                }
                Some(Err(e)) => return Err(e),
                None if self.total < self.expected => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!(
                            "blob ended after {} of its {} bytes",
                            self.total, self.expected
                        ),
                    ));
                }
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len() - self.pos);
        buf[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}
