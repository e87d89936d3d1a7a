//! Image import for nodes without a registry: an OCI image layout as a tar
//! (an "OCI archive"), or a `docker save` tarball, becomes images in the
//! store exactly as a pull makes them: the same content store and layer
//! dirs (a layer already pulled is not unpacked again), the same unpacker
//! with its digest, diffID and hostile-entry checks and limits, the same
//! records.
//!
//! The archive is hostile input. It is spooled to `tmp/` and indexed (entry
//! names are only keys of a map, never joined to a host path); every blob an
//! image needs is read back and verified against its digest before anything
//! is unpacked, so a tampered archive changes nothing; layers are unpacked
//! next, and the images are recorded last, all of them or none.

use std::cell::Cell;
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;

use futures::FutureExt;
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tracing::info;

use crate::digest::{Digest, Hasher};
use crate::error::{ImageError, IoContext};
use crate::manifest::{self, Descriptor, Manifest};
use crate::pull::{
    NewImage, Pins, ensure_layer_with, finish_layer, layer_compression, record_image,
};
use crate::reference::ImageRef;
use crate::store;
use crate::unpack::{Compression, UnpackError, unpack_layer};
use crate::{Image, ImageStore, Inner};

/// Largest JSON document (index.json, manifest.json, a manifest) read from an archive.
const MAX_DOCUMENT_SIZE: u64 = 4 << 20;
/// Largest number of tar entries in an archive.
const MAX_ENTRIES: u64 = 100_000;
/// Largest number of images in an archive.
const MAX_IMAGES: usize = 1000;
/// Cap on tar header data (PAX / GNU long names) between two entries, as in
/// the layer unpacker.
const MAX_HEADER_BYTES: u64 = 1 << 20;
/// Free space is checked while spooling, every this many bytes.
const SPOOL_CHECK_BYTES: u64 = 64 << 20;
/// Symlinks followed to reach one entry (`docker save` links repeated layers).
const MAX_LINKS: usize = 8;

const OCI_REF_NAME: &str = "org.opencontainers.image.ref.name";
const CONTAINERD_NAME: &str = "io.containerd.image.name";

/// How to name what an archive holds.
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// Tag the archive's one image with this reference instead of its names.
    pub name: Option<String>,
}

impl ImageStore {
    /// Imports every image of an archive read from `source` (an OCI layout
    /// tar or a `docker save` tarball) and returns them as stored now.
    pub async fn import<R: AsyncRead + Unpin + Send>(
        &self,
        source: R,
        opts: &ImportOptions,
    ) -> Result<Vec<Image>, ImageError> {
        let started = std::time::Instant::now();
        let inner = self.inner.clone();
        let spool = Spool(inner.layout.tmp_path("import"));
        let bytes =
            spool_archive(source, &spool.0, inner.opts.unpack_limits.min_free_bytes).await?;
        let path = spool.0.clone();
        let name = opts.name.clone();
        let inner2 = inner.clone();
        let plans = tokio::task::spawn_blocking(move || -> Result<Vec<Plan>, ImageError> {
            let archive = ArchiveIndex::read(&path)?;
            let mut plans = plan(&inner2, &archive, name.as_deref())?;
            verify_layers(&archive, &mut plans)?;
            Ok(plans)
        })
        .await
        .map_err(|e| ImageError::Store(format!("import task failed: {e}")))??;

        let mut keys: Vec<String> = Vec::new();
        for p in &plans {
            keys.extend(p.layers.iter().map(|l| l.diff_id.to_string()));
            keys.extend(p.image.blobs.iter().map(|(d, _)| d.to_string()));
        }
        let _pins = Pins::new(inner.clone(), keys);
        // Layers one at a time: an archive is one local file, not a network.
        for p in &plans {
            for (i, l) in p.layers.iter().enumerate() {
                let job = LayerImport {
                    archive: spool.0.clone(),
                    layer: l.clone(),
                    image: p.name.clone(),
                    layer_name: format!(
                        "{} (layer {} of {})",
                        l.blob_digest,
                        i + 1,
                        p.layers.len()
                    ),
                };
                let span = tracing::info_span!("layer", layer = %job.layer_name);
                ensure_layer_with(inner.clone(), l.diff_id.to_string(), span, move |inner| {
                    import_layer(inner, job).boxed()
                })
                .await?;
            }
        }
        let mut ids: Vec<String> = Vec::with_capacity(plans.len());
        for p in plans {
            let rec = record_image(inner.clone(), p.image).await?;
            if !ids.contains(&rec.id) {
                ids.push(rec.id);
            }
        }
        // Each image once (entries of an archive may share one), with all its tags.
        let mut images = Vec::with_capacity(ids.len());
        for id in ids {
            images.extend(self.get(&id)?);
        }
        info!(
            images = images.len(),
            bytes,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "archive imported"
        );
        Ok(images)
    }
}

/// The spooled archive; removed when the import ends, however it ends.
struct Spool(PathBuf);

impl Drop for Spool {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Copies the archive into `path`, keeping `min_free` bytes free on its
/// filesystem (checked every [`SPOOL_CHECK_BYTES`]).
async fn spool_archive<R: AsyncRead + Unpin>(
    mut source: R,
    path: &Path,
    min_free: u64,
) -> Result<u64, ImageError> {
    let mut f = tokio::fs::File::create(path)
        .await
        .ctx(|| format!("creating {}", path.display()))?;
    let mut buf = vec![0u8; 1 << 20];
    let (mut total, mut next_check) = (0u64, 0u64);
    loop {
        let n = source
            .read(&mut buf)
            .await
            .ctx(|| "receiving the archive".to_string())?;
        if n == 0 {
            break;
        }
        if total >= next_check && min_free > 0 {
            let st =
                nix::sys::statvfs::statvfs(path).ctx(|| format!("statvfs {}", path.display()))?;
            let free = st.blocks_available() as u64 * st.fragment_size() as u64;
            if free < min_free + n as u64 {
                return Err(ImageError::io(
                    format!(
                        "importing: storing the archive would leave less than the {} MiB reserve free on {}",
                        min_free >> 20,
                        path.display()
                    ),
                    io::Error::from_raw_os_error(libc::ENOSPC),
                ));
            }
            next_check = total + SPOOL_CHECK_BYTES;
        }
        f.write_all(&buf[..n])
            .await
            .ctx(|| format!("writing {}", path.display()))?;
        total += n as u64;
    }
    f.flush()
        .await
        .ctx(|| format!("writing {}", path.display()))?;
    if total == 0 {
        return Err(ImageError::Archive("the archive is empty".into()));
    }
    Ok(total)
}

#[derive(Debug, Clone)]
enum Member {
    File {
        offset: u64,
        size: u64,
    },
    /// A symlink, its target already made a normalized archive path.
    Link(String),
}

/// Where each file of the archive is: normalized path -> data offset and size.
struct ArchiveIndex {
    path: PathBuf,
    members: HashMap<String, Member>,
}

/// The archive file, counting header bytes the tar parser reads between
/// entries (entry data is skipped by seeking, so it never counts).
struct Budgeted {
    file: File,
    budget: Rc<Cell<Option<u64>>>,
}

impl Read for Budgeted {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read(buf)?;
        if let Some(b) = self.budget.get() {
            if n as u64 > b {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "tar header metadata (PAX / GNU long names) over {MAX_HEADER_BYTES} bytes"
                    ),
                ));
            }
            self.budget.set(Some(b - n as u64));
        }
        Ok(n)
    }
}

impl Seek for Budgeted {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.file.seek(pos)
    }
}

/// `a/./b//c` -> `a/b/c`; `..` is resolved inside the archive and may not
/// climb above its top. None: not a usable name.
fn normalize(base: &[&str], name: &str) -> Option<String> {
    let mut parts: Vec<&str> = base.to_vec();
    for c in name.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            c => parts.push(c),
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

impl ArchiveIndex {
    fn read(path: &Path) -> Result<ArchiveIndex, ImageError> {
        let file = File::open(path).ctx(|| format!("opening {}", path.display()))?;
        let budget = Rc::new(Cell::new(None));
        let mut ar = tar::Archive::new(Budgeted {
            file,
            budget: budget.clone(),
        });
        let bad = |e: io::Error| ImageError::Archive(format!("not a readable tar archive: {e}"));
        let mut entries = ar.entries_with_seek().map_err(bad)?;
        let mut members = HashMap::new();
        let mut count = 0u64;
        loop {
            budget.set(Some(MAX_HEADER_BYTES));
            let next = entries.next();
            budget.set(None);
            let entry = match next {
                None => break,
                Some(e) => e.map_err(bad)?,
            };
            count += 1;
            if count > MAX_ENTRIES {
                return Err(ImageError::Archive(format!(
                    "more than {MAX_ENTRIES} entries"
                )));
            }
            let raw = entry.path_bytes();
            let Ok(name) = std::str::from_utf8(&raw) else {
                continue; // no image file has such a name
            };
            if name.starts_with('/') {
                return Err(ImageError::Archive(format!(
                    "entry {name:?} has an absolute path"
                )));
            }
            let Some(key) = normalize(&[], name) else {
                if name.trim_matches(['.', '/']).is_empty() {
                    continue; // "./"
                }
                return Err(ImageError::Archive(format!(
                    "entry {name:?} climbs out of the archive"
                )));
            };
            let kind = entry.header().entry_type();
            let member = if kind.is_file() || kind == tar::EntryType::Continuous {
                Member::File {
                    offset: entry.raw_file_position(),
                    size: entry.size(),
                }
            } else if kind.is_symlink() {
                let target = entry
                    .link_name_bytes()
                    .and_then(|t| std::str::from_utf8(&t).ok().map(str::to_string))
                    .unwrap_or_default();
                let dir: Vec<&str> = key.split('/').collect();
                let base = if target.starts_with('/') {
                    &[][..]
                } else {
                    &dir[..dir.len() - 1]
                };
                match normalize(base, &target) {
                    Some(t) => Member::Link(t),
                    None => continue, // dangling out of the archive: never usable
                }
            } else {
                continue; // dirs, hardlinks, devices: an image archive needs none
            };
            members.insert(key, member);
        }
        Ok(ArchiveIndex {
            path: path.to_path_buf(),
            members,
        })
    }

    fn has(&self, name: &str) -> bool {
        self.members.contains_key(name)
    }

    /// Offset and size of a file, following symlinks inside the archive.
    fn locate(&self, name: &str) -> Result<(u64, u64), ImageError> {
        let mut cur = name.to_string();
        for _ in 0..=MAX_LINKS {
            match self.members.get(&cur) {
                Some(Member::File { offset, size }) => return Ok((*offset, *size)),
                Some(Member::Link(t)) => cur = t.clone(),
                None => {
                    return Err(ImageError::Archive(format!(
                        "{name} is missing from the archive"
                    )));
                }
            }
        }
        Err(ImageError::Archive(format!("{name}: too many symlinks")))
    }

    /// A reader over one file's data.
    fn open(&self, name: &str) -> Result<(io::Take<File>, u64), ImageError> {
        let (offset, size) = self.locate(name)?;
        let mut f = File::open(&self.path).ctx(|| format!("opening {}", self.path.display()))?;
        f.seek(SeekFrom::Start(offset))
            .ctx(|| format!("reading {name} in the archive"))?;
        Ok((f.take(size), size))
    }

    /// A small file, whole; refused above `cap` bytes.
    fn read_small(&self, name: &str, cap: u64) -> Result<Vec<u8>, ImageError> {
        let (mut r, size) = self.open(name)?;
        if size > cap {
            return Err(ImageError::Archive(format!(
                "{name} is {size} bytes, more than the {cap} byte limit"
            )));
        }
        let mut v = Vec::with_capacity(size as usize);
        r.read_to_end(&mut v)
            .ctx(|| format!("reading {name} in the archive"))?;
        Ok(v)
    }

    /// sha256 and length of one file's data.
    fn hash(&self, name: &str) -> Result<(Digest, u64), ImageError> {
        let (mut r, _) = self.open(name)?;
        let mut h = Hasher::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = r
                .read(&mut buf)
                .ctx(|| format!("reading {name} in the archive"))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        let len = h.bytes();
        Ok((h.finish(), len))
    }
}

/// One layer of an image to import.
#[derive(Debug, Clone)]
struct LayerPlan {
    diff_id: Digest,
    blob_digest: Digest,
    /// Path of its blob in the archive, and where its data is.
    member: String,
    offset: u64,
    size: u64,
    compression: Compression,
}

/// One image of the archive, checked for structure, blobs not read yet.
struct Plan {
    /// For messages: its first tag, else its id.
    name: String,
    image: NewImage,
    layers: Vec<LayerPlan>,
    /// `docker save`: the layers' digests are learnt by reading them, and
    /// the manifest Berth stores is made from them (verify_layers).
    docker: bool,
}

fn plan(
    inner: &Inner,
    archive: &ArchiveIndex,
    name: Option<&str>,
) -> Result<Vec<Plan>, ImageError> {
    let forced = name
        .map(|n| {
            let r = ImageRef::parse(n)?;
            r.tagged().ok_or_else(|| ImageError::InvalidReference {
                reference: n.to_string(),
                reason: "an import name needs a tag, not a digest".into(),
            })
        })
        .transpose()?;
    let plans = if archive.has("index.json") {
        plan_oci(inner, archive, forced.as_deref())?
    } else if archive.has("manifest.json") {
        plan_docker(archive, forced.as_deref())?
    } else {
        return Err(ImageError::Archive(
            "neither an OCI image layout (index.json) nor a `docker save` tarball (manifest.json) at its top".into(),
        ));
    };
    if plans.is_empty() {
        return Err(ImageError::Archive("it holds no image".into()));
    }
    if forced.is_some() && plans.len() > 1 {
        return Err(ImageError::Archive(format!(
            "it holds {} images: a name can be given to an archive of one image only",
            plans.len()
        )));
    }
    Ok(plans)
}

fn blob_path(d: &Digest) -> String {
    format!("blobs/{}/{}", d.algorithm(), d.hex())
}

fn archive_err(what: &str) -> impl Fn(String) -> ImageError + '_ {
    move |e| ImageError::Archive(format!("{what}: {e}"))
}

#[derive(Deserialize)]
struct OciIndex {
    #[serde(default)]
    manifests: Vec<OciIndexEntry>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OciIndexEntry {
    #[serde(flatten)]
    desc: Descriptor,
    #[serde(default)]
    annotations: HashMap<String, String>,
}

/// Reads a blob of an OCI layout (small), checking size and digest now.
fn oci_blob(
    archive: &ArchiveIndex,
    d: &Descriptor,
    cap: u64,
) -> Result<(Digest, Vec<u8>), ImageError> {
    let digest: Digest = d.digest.parse().map_err(|e: crate::digest::DigestError| {
        ImageError::Archive(format!("descriptor digest {:?}: {e}", d.digest))
    })?;
    let body = archive.read_small(&blob_path(&digest), cap)?;
    let actual = Digest::sha256_of(&body);
    if actual != digest || body.len() as i64 != d.size {
        return Err(ImageError::ArchiveCorrupt(format!(
            "blob {digest} ({} bytes in its descriptor) holds {} bytes hashing to {actual}",
            d.size,
            body.len()
        )));
    }
    Ok((digest, body))
}

fn plan_oci(
    inner: &Inner,
    archive: &ArchiveIndex,
    forced: Option<&str>,
) -> Result<Vec<Plan>, ImageError> {
    let layout = archive.read_small("oci-layout", MAX_DOCUMENT_SIZE)?;
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Layout {
        image_layout_version: String,
    }
    let v: Layout =
        serde_json::from_slice(&layout).map_err(|e| archive_err("oci-layout")(e.to_string()))?;
    if !v.image_layout_version.starts_with("1.") {
        return Err(ImageError::Archive(format!(
            "OCI image layout version {:?} is not supported (1.x is)",
            v.image_layout_version
        )));
    }
    let body = archive.read_small("index.json", MAX_DOCUMENT_SIZE)?;
    let index: OciIndex =
        serde_json::from_slice(&body).map_err(|e| archive_err("index.json")(e.to_string()))?;
    if index.manifests.len() > MAX_IMAGES {
        return Err(ImageError::Archive(format!(
            "more than {MAX_IMAGES} images"
        )));
    }
    let mut plans = Vec::new();
    for entry in index.manifests {
        let names = match forced {
            Some(f) => vec![f.to_string()],
            None => oci_names(&entry.annotations)?,
        };
        let (top_digest, top_body) = oci_blob(archive, &entry.desc, MAX_DOCUMENT_SIZE)?;
        let parsed = manifest::parse_manifest(&top_body)
            .map_err(|e| archive_err(&format!("manifest {top_digest}"))(e.to_string()))?;
        let (index_blob, manifest_digest, manifest_body, config, layers) = match parsed {
            Manifest::Image { config, layers } => {
                (None, top_digest.clone(), top_body, config, layers)
            }
            Manifest::Index { manifests } => {
                let p = &inner.opts.platform;
                let i = p
                    .select(manifests.iter().map(|m| match &m.platform {
                        Some(pl) => (
                            pl.os.as_str(),
                            pl.architecture.as_str(),
                            pl.variant.as_deref(),
                        ),
                        None => ("", "", None),
                    }))
                    .ok_or_else(|| {
                        ImageError::Archive(format!(
                            "image index {top_digest} has no manifest for {p}"
                        ))
                    })?;
                let (d, b) = oci_blob(archive, &manifests[i], MAX_DOCUMENT_SIZE)?;
                match manifest::parse_manifest(&b)
                    .map_err(|e| archive_err(&format!("manifest {d}"))(e.to_string()))?
                {
                    Manifest::Image { config, layers } => {
                        (Some((top_digest.clone(), top_body)), d, b, config, layers)
                    }
                    Manifest::Index { .. } => {
                        return Err(ImageError::Archive(format!(
                            "index {top_digest} points at another index"
                        )));
                    }
                }
            }
        };
        let (config_digest, config_body) = oci_blob(archive, &config, manifest::MAX_CONFIG_SIZE)?;
        let (user, diff_ids) = config_of(&config_body, &config_digest, layers.len())?;
        let mut layer_plans = Vec::new();
        for (l, diff_id) in layers.iter().zip(diff_ids) {
            let compression = layer_compression(&l.media_type, l.urls.is_some())
                .map_err(|e| ImageError::Archive(format!("layer {}: {e}", l.digest)))?;
            let blob_digest: Digest =
                l.digest.parse().map_err(|e: crate::digest::DigestError| {
                    ImageError::Archive(format!("layer digest {:?}: {e}", l.digest))
                })?;
            let member = blob_path(&blob_digest);
            let (offset, size) = archive.locate(&member)?;
            if size != l.size as u64 {
                return Err(ImageError::ArchiveCorrupt(format!(
                    "layer {blob_digest} is {size} bytes, its descriptor says {}",
                    l.size
                )));
            }
            layer_plans.push(LayerPlan {
                diff_id,
                blob_digest,
                member,
                offset,
                size,
                compression,
            });
        }
        let repo_tags: Vec<String> = names.clone();
        let repo_digests = names
            .iter()
            .filter_map(|n| ImageRef::parse(n).ok())
            .map(|r| r.with_digest(&top_digest))
            .collect();
        let mut blobs = vec![(manifest_digest.clone(), manifest_body)];
        blobs.extend(index_blob.clone());
        blobs.push((config_digest.clone(), config_body));
        plans.push(Plan {
            name: names
                .first()
                .cloned()
                .unwrap_or_else(|| config_digest.to_string()),
            image: NewImage {
                id: config_digest.to_string(),
                manifest_digest: manifest_digest.to_string(),
                index_digest: index_blob.map(|(d, _)| d.to_string()),
                blobs,
                layers: layer_plans.iter().map(|l| l.diff_id.to_string()).collect(),
                repo_tags,
                repo_digests,
                user,
            },
            layers: layer_plans,
            docker: false,
        });
    }
    Ok(plans)
}

/// The names of an OCI layout entry: containerd's full name, else the
/// OCI ref name when it is a reference; normalized, tagged.
fn oci_names(ann: &HashMap<String, String>) -> Result<Vec<String>, ImageError> {
    let Some(n) = ann.get(CONTAINERD_NAME).or_else(|| ann.get(OCI_REF_NAME)) else {
        return Ok(vec![]); // imported by id only
    };
    let r = ImageRef::parse(n).map_err(|e| {
        ImageError::Archive(format!(
            "image name {n:?} in index.json is not a reference ({e}); import it with a name (berthctl image import --name REPO:TAG)"
        ))
    })?;
    Ok(r.tagged().into_iter().collect())
}

/// User and diffIDs of a config; as many diffIDs as layers.
fn config_of(
    body: &[u8],
    digest: &Digest,
    layers: usize,
) -> Result<(Option<String>, Vec<Digest>), ImageError> {
    let (summary, diff_ids) = manifest::parse_config(body)
        .map_err(|e| ImageError::Archive(format!("config {digest}: {e}")))?;
    if diff_ids.len() != layers {
        return Err(ImageError::Archive(format!(
            "config {digest} has {} diff_ids for {layers} layers",
            diff_ids.len()
        )));
    }
    let user = summary
        .config
        .and_then(|c| c.user)
        .filter(|u| !u.is_empty());
    Ok((user, diff_ids))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerManifest {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

fn plan_docker(archive: &ArchiveIndex, forced: Option<&str>) -> Result<Vec<Plan>, ImageError> {
    let body = archive.read_small("manifest.json", MAX_DOCUMENT_SIZE)?;
    let list: Vec<DockerManifest> =
        serde_json::from_slice(&body).map_err(|e| archive_err("manifest.json")(e.to_string()))?;
    if list.len() > MAX_IMAGES {
        return Err(ImageError::Archive(format!(
            "more than {MAX_IMAGES} images"
        )));
    }
    let mut plans = Vec::new();
    for m in list {
        let config_member = normalize(&[], &m.config)
            .ok_or_else(|| ImageError::Archive(format!("config path {:?}", m.config)))?;
        let config_body = archive.read_small(&config_member, manifest::MAX_CONFIG_SIZE)?;
        let config_digest = Digest::sha256_of(&config_body);
        // Docker names the config after its digest (`<hex>.json`, or
        // `blobs/sha256/<hex>` since Docker 25): a name is a claim to check.
        if let Some(claimed) = hex_in_name(&config_member)
            && claimed != config_digest.hex()
        {
            return Err(ImageError::ArchiveCorrupt(format!(
                "config {config_member} hashes to {config_digest}"
            )));
        }
        let (user, diff_ids) = config_of(&config_body, &config_digest, m.layers.len())?;
        let mut layer_plans = Vec::new();
        for (l, diff_id) in m.layers.iter().zip(diff_ids) {
            let member = normalize(&[], l)
                .ok_or_else(|| ImageError::Archive(format!("layer path {l:?}")))?;
            let (offset, size) = archive.locate(&member)?;
            // Digest and compression are learnt by reading it (verify_layers).
            layer_plans.push(LayerPlan {
                blob_digest: diff_id.clone(),
                diff_id,
                member,
                offset,
                size,
                compression: Compression::None,
            });
        }
        let names: Vec<String> = match forced {
            Some(f) => vec![f.to_string()],
            None => m
                .repo_tags
                .unwrap_or_default()
                .iter()
                .map(|t| {
                    ImageRef::parse(t)
                        .map_err(|e| ImageError::Archive(format!("RepoTags entry {t:?}: {e}")))
                        .map(|r| r.tagged().unwrap_or_default())
                })
                .collect::<Result<_, _>>()?,
        };
        plans.push(Plan {
            name: names
                .first()
                .cloned()
                .unwrap_or_else(|| config_digest.to_string()),
            image: NewImage {
                id: config_digest.to_string(),
                manifest_digest: String::new(),
                index_digest: None,
                blobs: vec![(config_digest.clone(), config_body)],
                layers: layer_plans.iter().map(|l| l.diff_id.to_string()).collect(),
                // A `docker save` archive carries no registry digest.
                repo_tags: names,
                repo_digests: vec![],
                user,
            },
            layers: layer_plans,
            docker: true,
        });
    }
    Ok(plans)
}

/// `abc…64.json`, `x/blobs/sha256/abc…64`: the hex a Docker name claims.
fn hex_in_name(member: &str) -> Option<&str> {
    let base = member.rsplit('/').next()?;
    let hex = base.strip_suffix(".json").unwrap_or(base);
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit())).then_some(hex)
}

/// Reads back every layer blob before anything is unpacked: digests must
/// match. For `docker save` layers, whose digests no manifest gives, this is
/// where they (and their compression) are learnt, and the manifest Berth
/// stores for the image is made from them.
fn verify_layers(archive: &ArchiveIndex, plans: &mut [Plan]) -> Result<(), ImageError> {
    let mut hashed: HashMap<u64, Digest> = HashMap::new();
    for p in plans.iter_mut() {
        for l in p.layers.iter_mut() {
            let actual = match hashed.get(&l.offset) {
                Some(d) => d.clone(),
                None => {
                    let (d, _) = archive.hash(&l.member)?;
                    hashed.insert(l.offset, d.clone());
                    d
                }
            };
            if p.docker {
                let mut head = [0u8; 4];
                let (mut r, _) = archive.open(&l.member)?;
                let n = r.read(&mut head).ctx(|| format!("reading {}", l.member))?;
                l.compression = Compression::sniff(&head[..n]).unwrap_or(Compression::None);
                let claimed = hex_in_name(&l.member);
                if claimed.is_some_and(|h| h != actual.hex())
                    || (l.compression == Compression::None && actual != l.diff_id)
                {
                    return Err(ImageError::ArchiveCorrupt(format!(
                        "{}: layer {} hashes to {actual}, its config says {}",
                        p.name, l.member, l.diff_id
                    )));
                }
                l.blob_digest = actual;
            } else if actual != l.blob_digest {
                return Err(ImageError::ArchiveCorrupt(format!(
                    "{}: layer blob {} hashes to {actual}",
                    p.name, l.blob_digest
                )));
            }
        }
        if p.docker {
            let (digest, body) = docker_manifest(&p.image.id, &p.image.blobs, &p.layers)?;
            p.image.manifest_digest = digest.to_string();
            p.image.blobs.push((digest, body));
        }
    }
    Ok(())
}

/// The Docker schema 2 manifest of a `docker save` image, as a registry
/// would serve it, so the image is stored like a pulled one.
fn docker_manifest(
    config_id: &str,
    blobs: &[(Digest, Vec<u8>)],
    layers: &[LayerPlan],
) -> Result<(Digest, Vec<u8>), ImageError> {
    let config_size = blobs
        .iter()
        .find(|(d, _)| d.as_ref() == config_id)
        .map_or(0, |(_, b)| b.len());
    let layers: Vec<serde_json::Value> = layers
        .iter()
        .map(|l| {
            let media_type = match l.compression {
                Compression::None => "application/vnd.docker.image.rootfs.diff.tar",
                Compression::Gzip => "application/vnd.docker.image.rootfs.diff.tar.gzip",
                Compression::Zstd => "application/vnd.docker.image.rootfs.diff.tar.zstd",
            };
            serde_json::json!({"mediaType": media_type, "size": l.size, "digest": l.blob_digest.as_str()})
        })
        .collect();
    let m = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": manifest::DOCKER_MANIFEST,
        "config": {"mediaType": manifest::DOCKER_CONFIG, "size": config_size, "digest": config_id},
        "layers": layers,
    });
    let body = serde_json::to_vec(&m)?;
    Ok((Digest::sha256_of(&body), body))
}

/// Everything one layer import needs, moved into its task.
struct LayerImport {
    archive: PathBuf,
    layer: LayerPlan,
    image: String,
    layer_name: String,
}

/// Unpacks one layer from the archive into a tmp dir, then records it, as a
/// pull's layer task does.
async fn import_layer(inner: Arc<Inner>, job: LayerImport) -> Result<(), ImageError> {
    tokio::task::spawn_blocking(move || {
        let tmp = inner.layout.tmp_path("layer");
        std::fs::create_dir(&tmp).ctx(|| format!("creating {}", tmp.display()))?;
        let res = unpack_from_archive(&inner, &job, &tmp).and_then(|()| {
            finish_layer(
                &inner,
                &tmp,
                job.layer.diff_id.to_string(),
                job.layer.blob_digest.to_string(),
                job.layer.size,
            )
        });
        if res.is_err() {
            let _ = store::remove_any(&tmp);
        }
        res
    })
    .await
    .map_err(|e| ImageError::Store(format!("layer task failed: {e}")))?
}

/// The pull's unpacker (digest, diffID, hostile entries, limits) on the
/// layer's bytes in the archive.
fn unpack_from_archive(inner: &Inner, job: &LayerImport, tmp: &Path) -> Result<(), ImageError> {
    let l = &job.layer;
    let mut f = File::open(&job.archive).ctx(|| format!("opening {}", job.archive.display()))?;
    f.seek(SeekFrom::Start(l.offset))
        .ctx(|| format!("reading {} in the archive", l.member))?;
    let limits = &inner.opts.unpack_limits;
    match unpack_layer(
        f.take(l.size),
        l.compression,
        &l.blob_digest,
        &l.diff_id,
        tmp,
        limits,
    ) {
        Ok(_) => Ok(()),
        Err(e @ (UnpackError::Io { .. } | UnpackError::DiskFull { .. })) => {
            Err(ImageError::NodeStorage {
                image: job.image.clone(),
                layer: job.layer_name.clone(),
                source: Arc::new(e),
            })
        }
        Err(e) => Err(ImageError::ArchiveCorrupt(format!(
            "{}: layer {}: {e}",
            job.image, job.layer_name
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_normalized_inside_the_archive() {
        assert_eq!(
            normalize(&[], "./index.json").as_deref(),
            Some("index.json")
        );
        assert_eq!(
            normalize(&[], "blobs//sha256/./ab").as_deref(),
            Some("blobs/sha256/ab")
        );
        assert_eq!(
            normalize(&["a", "b"], "../c/layer.tar").as_deref(),
            Some("a/c/layer.tar")
        );
        assert_eq!(normalize(&[], "../etc/passwd"), None);
        assert_eq!(normalize(&["a"], "../../x"), None);
        assert_eq!(normalize(&[], "./"), None);
    }

    #[test]
    fn docker_names_claim_digests() {
        let h = "a".repeat(64);
        assert_eq!(hex_in_name(&format!("{h}.json")), Some(h.as_str()));
        assert_eq!(hex_in_name(&format!("blobs/sha256/{h}")), Some(h.as_str()));
        assert_eq!(hex_in_name("abc/layer.tar"), None);
    }

    fn tar_of(entries: &[(&str, &[u8])], links: &[(&str, &str)]) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        let mut b = tar::Builder::new(f.reopen().unwrap());
        for (name, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_entry_type(tar::EntryType::Regular);
            b.append_data(&mut h, name, *data).unwrap();
        }
        for (name, target) in links {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_size(0);
            b.append_link(&mut h, name, target).unwrap();
        }
        b.finish().unwrap();
        f
    }

    #[test]
    fn index_follows_links_inside_and_refuses_escapes() {
        let f = tar_of(
            &[("./a/layer.tar", b"hello"), ("manifest.json", b"[]")],
            &[("b/layer.tar", "../a/layer.tar")],
        );
        let ix = ArchiveIndex::read(f.path()).unwrap();
        assert_eq!(ix.read_small("b/layer.tar", 100).unwrap(), b"hello");
        assert_eq!(
            ix.hash("a/layer.tar").unwrap().0,
            Digest::sha256_of(b"hello")
        );
        assert!(ix.read_small("a/layer.tar", 2).is_err(), "size cap");
        assert!(ix.locate("c").is_err());

        // `tar` refuses to write `..` names itself: patch one in.
        let f = tar_of(&[("xx/evil", b"x")], &[]);
        let mut bytes = std::fs::read(f.path()).unwrap();
        bytes[..5].copy_from_slice(b"../ev");
        let mut sum: u32 = bytes[..512]
            .iter()
            .enumerate()
            .map(|(i, b)| {
                if (148..156).contains(&i) {
                    32
                } else {
                    *b as u32
                }
            })
            .sum();
        sum &= 0o777777;
        bytes[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        std::fs::write(f.path(), &bytes).unwrap();
        let err = ArchiveIndex::read(f.path())
            .err()
            .expect("an escaping name is refused");
        assert!(err.to_string().contains("climbs out"), "{err}");
    }
}
