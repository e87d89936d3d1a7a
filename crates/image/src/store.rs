//! On-disk layout and metadata of the image store.
//!
//! ```text
//! root/images/blobs/sha256/<hex>   manifests, indexes, configs (content-addressed)
//! root/images/layers/<hex>/        one unpacked layer, <hex> = its diffID
//! root/images/tmp/                 pulls in progress, trash being deleted
//! ```
//!
//! A layer dir is keyed by its diffID (the digest of the uncompressed tar),
//! not by a chain ID: each dir holds only that layer's diff with whiteouts as
//! overlayfs whiteouts, so its content does not depend on the layers below it
//! and one dir serves every image that contains that diff, on whatever parent
//! and whatever compression the registry used. Compressed blobs are not kept:
//! they are streamed straight into the unpacker, which halves the disk writes
//! and space of a pull, and a node never needs to serve them again.
//!
//! Metadata lives in redb tables (prefix `image_`). Visibility rules that
//! make `kill -9` at any point safe:
//! - a layer record exists only after its dir was synced and renamed into
//!   `layers/` (and that rename made durable);
//! - an image record (and its tags) is written in one transaction after all
//!   its layers have records and its blobs are durable;
//! - `open()` deletes `tmp/`, dirs without a record and records nothing refers to.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::error::{ImageError, IoContext};

/// image id (`sha256:<config hex>`) → ImageRecord (JSON).
const IMAGES: TableDefinition<&str, &[u8]> = TableDefinition::new("image_images");
/// `repo:tag` or `repo@digest` → image id.
const REFS: TableDefinition<&str, &str> = TableDefinition::new("image_refs");
/// diffID → LayerRecord (JSON).
const LAYERS: TableDefinition<&str, &[u8]> = TableDefinition::new("image_layers");
/// container id → diffIDs it uses (JSON), so removing its image keeps them.
const LEASES: TableDefinition<&str, &[u8]> = TableDefinition::new("image_leases");

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct ImageRecord {
    pub id: String,
    /// Digest of the platform manifest.
    pub manifest_digest: String,
    /// Digest of the index it was chosen from, if any.
    pub index_digest: Option<String>,
    /// diffIDs, lowest first.
    pub layers: Vec<String>,
    pub repo_tags: Vec<String>,
    pub repo_digests: Vec<String>,
    /// Bytes on disk of its unpacked layers (shared layers count in each image).
    pub size: u64,
    pub user: Option<String>,
    pub pinned: bool,
    pub pulled_at_unix_nanos: i64,
}

impl ImageRecord {
    pub fn blobs(&self) -> Vec<String> {
        let mut v = vec![self.id.clone(), self.manifest_digest.clone()];
        v.extend(self.index_digest.clone());
        v
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct LayerRecord {
    pub diff_id: String,
    /// The compressed blob it was unpacked from (informational).
    pub blob_digest: String,
    pub blob_size: u64,
    pub bytes: u64,
    pub inodes: u64,
}

#[derive(Debug, Clone)]
pub(crate) struct Layout {
    pub root: PathBuf,
    pub blobs: PathBuf,
    pub layers: PathBuf,
    pub tmp: PathBuf,
}

static TMP_SEQ: AtomicU64 = AtomicU64::new(0);

impl Layout {
    pub fn new(root: &Path) -> Layout {
        let root = root.join("images");
        Layout {
            blobs: root.join("blobs").join("sha256"),
            layers: root.join("layers"),
            tmp: root.join("tmp"),
            root,
        }
    }

    pub fn create(&self) -> Result<(), ImageError> {
        for d in [&self.blobs, &self.layers, &self.tmp] {
            fs::create_dir_all(d).ctx(|| format!("creating {}", d.display()))?;
        }
        Ok(())
    }

    fn hex(digest: &str) -> &str {
        digest.strip_prefix("sha256:").unwrap_or(digest)
    }

    pub fn layer_dir(&self, diff_id: &str) -> PathBuf {
        self.layers.join(Self::hex(diff_id))
    }

    pub fn blob_path(&self, digest: &str) -> PathBuf {
        self.blobs.join(Self::hex(digest))
    }

    /// A fresh unique path under tmp/.
    pub fn tmp_path(&self, what: &str) -> PathBuf {
        let n = TMP_SEQ.fetch_add(1, Ordering::Relaxed);
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        self.tmp
            .join(format!("{what}-{}-{n}-{t}", std::process::id()))
    }

    /// Writes a content-addressed blob durably (tmp file, fsync, rename, fsync dir).
    pub fn write_blob(&self, digest: &str, data: &[u8]) -> Result<(), ImageError> {
        use std::io::Write;
        let dst = self.blob_path(digest);
        if dst.exists() {
            return Ok(());
        }
        let tmp = self.tmp_path("blob");
        let mut f = fs::File::create(&tmp).ctx(|| format!("creating {}", tmp.display()))?;
        f.write_all(data)
            .and_then(|_| f.sync_all())
            .ctx(|| format!("writing {}", tmp.display()))?;
        fs::rename(&tmp, &dst).ctx(|| format!("renaming blob into {}", dst.display()))?;
        fsync_dir(&self.blobs)
    }

    /// Moves a path into tmp/ (atomic disappearance) and deletes it.
    pub fn trash(&self, p: &Path) -> Result<(), ImageError> {
        let t = self.tmp_path("trash");
        match fs::rename(p, &t) {
            Ok(()) => remove_any(&t),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(ImageError::io(format!("removing {}", p.display()), e)),
        }
    }
}

/// Removes a file or a whole tree (a layer, a pull's leftovers) without
/// recursion and with a fixed number of fds (`berth_rmtree`): an image
/// decides a layer's depth (up to PATH_MAX, 2047 levels), and a remover
/// holding an fd per level fails on it under a small fd limit, which
/// would also fail every later open of the store (it empties tmp/).
pub(crate) fn remove_any(p: &Path) -> Result<(), ImageError> {
    berth_rmtree::remove_tree(p).ctx(|| format!("removing {}", p.display()))
}

pub(crate) fn fsync_dir(p: &Path) -> Result<(), ImageError> {
    fs::File::open(p)
        .and_then(|f| f.sync_all())
        .ctx(|| format!("syncing directory {}", p.display()))
}

/// Bytes on disk and inodes of a tree (hard links counted once), walked
/// through dir fds with bounded memory (`tree_usage`): an unpacked layer
/// may hold millions of entries in one dir, or paths longer than
/// `PATH_MAX` under the store's root. Deeper than [`MAX_USAGE_DEPTH`] is
/// not counted (only a hostile layer goes there; the unpacker's limits
/// bound what it wrote).
pub(crate) fn disk_usage(p: &Path) -> std::io::Result<(u64, u64)> {
    let limits = crate::tree_usage::WalkLimits {
        max_depth: MAX_USAGE_DEPTH,
        max_entries: u64::MAX,
    };
    match crate::tree_usage::walk(p, &limits)? {
        Some(w) => {
            if w.truncated {
                tracing::warn!(dir = %p.display(), depth = MAX_USAGE_DEPTH, "tree deeper than the usage walk goes: its size is a lower bound");
            }
            Ok((w.bytes, w.inodes))
        }
        None => Err(std::io::Error::from(std::io::ErrorKind::NotFound)),
    }
}

/// Open dirs a usage walk holds at most.
pub(crate) const MAX_USAGE_DEPTH: usize = 256;

/// Metadata access. All methods are synchronous and short.
#[derive(Clone)]
pub(crate) struct Meta {
    db: Arc<Database>,
}

/// What a removal or garbage collection freed.
#[derive(Debug, Default)]
pub(crate) struct Freed {
    /// diffIDs whose records were deleted: delete their dirs.
    pub layers: Vec<String>,
    /// Blob digests still referenced; any other blob file can go.
    pub live_blobs: BTreeSet<String>,
}

impl Meta {
    pub fn open(db: Arc<Database>) -> Result<Meta, ImageError> {
        let txn = db.begin_write()?;
        txn.open_table(IMAGES)?;
        txn.open_table(REFS)?;
        txn.open_table(LAYERS)?;
        txn.open_table(LEASES)?;
        txn.commit()?;
        Ok(Meta { db })
    }

    pub fn layer(&self, diff_id: &str) -> Result<Option<LayerRecord>, ImageError> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(LAYERS)?;
        Ok(match t.get(diff_id)? {
            Some(v) => Some(serde_json::from_slice(v.value())?),
            None => None,
        })
    }

    pub fn put_layer(&self, rec: &LayerRecord) -> Result<(), ImageError> {
        let txn = self.db.begin_write()?;
        {
            let mut t = txn.open_table(LAYERS)?;
            t.insert(rec.diff_id.as_str(), serde_json::to_vec(rec)?.as_slice())?;
        }
        txn.commit()?;
        Ok(())
    }

    pub fn layers(&self) -> Result<HashMap<String, LayerRecord>, ImageError> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(LAYERS)?;
        let mut out = HashMap::new();
        for r in t.iter()? {
            let (k, v) = r?;
            out.insert(k.value().to_string(), serde_json::from_slice(v.value())?);
        }
        Ok(out)
    }

    pub fn image(&self, id: &str) -> Result<Option<ImageRecord>, ImageError> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(IMAGES)?;
        Ok(match t.get(id)? {
            Some(v) => Some(serde_json::from_slice(v.value())?),
            None => None,
        })
    }

    pub fn images(&self) -> Result<Vec<ImageRecord>, ImageError> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(IMAGES)?;
        let mut out = Vec::new();
        for r in t.iter()? {
            let (_, v) = r?;
            out.push(serde_json::from_slice(v.value())?);
        }
        Ok(out)
    }

    pub fn resolve_ref(&self, key: &str) -> Result<Option<String>, ImageError> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(REFS)?;
        Ok(t.get(key)?.map(|v| v.value().to_string()))
    }

    /// Makes an image visible with these tags/digests in one transaction.
    /// An existing record of the same id keeps its other refs and pin; a tag
    /// that pointed at another image moves (that image stays, untagged).
    pub fn commit_image(&self, rec: ImageRecord) -> Result<ImageRecord, ImageError> {
        let txn = self.db.begin_write()?;
        let merged = {
            let mut images = txn.open_table(IMAGES)?;
            let mut refs = txn.open_table(REFS)?;
            let mut merged = match images.get(rec.id.as_str())? {
                Some(v) => {
                    let mut old: ImageRecord = serde_json::from_slice(v.value())?;
                    for t in &rec.repo_tags {
                        if !old.repo_tags.contains(t) {
                            old.repo_tags.push(t.clone());
                        }
                    }
                    for d in &rec.repo_digests {
                        if !old.repo_digests.contains(d) {
                            old.repo_digests.push(d.clone());
                        }
                    }
                    old.pulled_at_unix_nanos = rec.pulled_at_unix_nanos;
                    old
                }
                None => rec.clone(),
            };
            merged.repo_tags.sort();
            merged.repo_digests.sort();
            for r in rec.repo_tags.iter().chain(rec.repo_digests.iter()) {
                let prev = refs.get(r.as_str())?.map(|v| v.value().to_string());
                if let Some(prev) = prev
                    && prev != rec.id
                {
                    let pv = images.get(prev.as_str())?.map(|v| v.value().to_vec());
                    if let Some(pv) = pv {
                        let mut p: ImageRecord = serde_json::from_slice(&pv)?;
                        p.repo_tags.retain(|t| t != r);
                        p.repo_digests.retain(|t| t != r);
                        images.insert(prev.as_str(), serde_json::to_vec(&p)?.as_slice())?;
                    }
                }
                refs.insert(r.as_str(), rec.id.as_str())?;
            }
            images.insert(rec.id.as_str(), serde_json::to_vec(&merged)?.as_slice())?;
            merged
        };
        txn.commit()?;
        Ok(merged)
    }

    pub fn set_pinned(&self, id: &str, pinned: bool) -> Result<bool, ImageError> {
        let txn = self.db.begin_write()?;
        let found = {
            let mut images = txn.open_table(IMAGES)?;
            let v = images.get(id)?.map(|v| v.value().to_vec());
            match v {
                Some(v) => {
                    let mut r: ImageRecord = serde_json::from_slice(&v)?;
                    r.pinned = pinned;
                    images.insert(id, serde_json::to_vec(&r)?.as_slice())?;
                    true
                }
                None => false,
            }
        };
        txn.commit()?;
        Ok(found)
    }

    /// Removes refs (or, with `whole`, the image `id` and all its refs). Then frees
    /// layers and blobs nothing refers to anymore (images, leases, `pins`),
    /// all in one transaction. Returns what to delete on disk.
    pub fn remove(
        &self,
        id: &str,
        refs_to_remove: &[String],
        whole: bool,
        pins: &HashMap<String, usize>,
    ) -> Result<Freed, ImageError> {
        let txn = self.db.begin_write()?;
        {
            let mut images = txn.open_table(IMAGES)?;
            let mut refs = txn.open_table(REFS)?;
            let v = images.get(id)?.map(|v| v.value().to_vec());
            if let Some(v) = v {
                let mut r: ImageRecord = serde_json::from_slice(&v)?;
                let gone: Vec<String> = if whole {
                    r.repo_tags
                        .iter()
                        .chain(r.repo_digests.iter())
                        .cloned()
                        .collect()
                } else {
                    refs_to_remove.to_vec()
                };
                r.repo_tags.retain(|t| !gone.contains(t));
                r.repo_digests.retain(|t| !gone.contains(t));
                // By tag: the image goes with its last tag (its digest refs
                // are aliases, not names a user gave). By digest: only when
                // nothing at all is left.
                let removed_a_tag = refs_to_remove.iter().any(|x| !x.contains('@'));
                let drop_all = whole
                    || (r.repo_tags.is_empty() && (removed_a_tag || r.repo_digests.is_empty()));
                let gone: Vec<String> = if drop_all {
                    gone.into_iter()
                        .chain(r.repo_tags.iter().cloned())
                        .chain(r.repo_digests.iter().cloned())
                        .collect()
                } else {
                    gone
                };
                for g in &gone {
                    let owner = refs.get(g.as_str())?.map(|v| v.value().to_string());
                    if owner.as_deref() == Some(id) {
                        refs.remove(g.as_str())?;
                    }
                }
                if drop_all {
                    images.remove(id)?;
                } else {
                    images.insert(id, serde_json::to_vec(&r)?.as_slice())?;
                }
            }
        }
        let freed = collect_garbage(&txn, pins)?;
        txn.commit()?;
        Ok(freed)
    }

    /// Not fsynced on its own: the caller's next durable commit on the same
    /// database (berthd's container record, written right after) makes it
    /// durable with it (redb persists every earlier commit with a durable
    /// one). A crash in between loses the lease and the record together;
    /// berthd's startup reconciliation then removes the container's dirs.
    pub fn lease(&self, container_id: &str, diff_ids: &[String]) -> Result<(), ImageError> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(redb::Durability::None)?;
        {
            let mut t = txn.open_table(LEASES)?;
            t.insert(container_id, serde_json::to_vec(diff_ids)?.as_slice())?;
        }
        txn.commit()?;
        Ok(())
    }

    /// Ids of every container holding a lease.
    pub fn leases(&self) -> Result<Vec<String>, ImageError> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(LEASES)?;
        let mut ids = vec![];
        for entry in t.iter()? {
            ids.push(entry?.0.value().to_string());
        }
        Ok(ids)
    }

    pub fn unlease(
        &self,
        container_id: &str,
        pins: &HashMap<String, usize>,
    ) -> Result<Freed, ImageError> {
        let txn = self.db.begin_write()?;
        txn.open_table(LEASES)?.remove(container_id)?;
        let freed = collect_garbage(&txn, pins)?;
        txn.commit()?;
        Ok(freed)
    }

    /// Startup repair: drops images whose layers are gone and all records
    /// nothing refers to. Returns the live layer set and live blob set.
    pub fn repair(
        &self,
        layer_dir_exists: impl Fn(&str) -> bool,
    ) -> Result<(BTreeSet<String>, BTreeSet<String>), ImageError> {
        let txn = self.db.begin_write()?;
        {
            let mut layers = txn.open_table(LAYERS)?;
            let missing: Vec<String> = layers
                .iter()?
                .filter_map(|r| r.ok())
                .map(|(k, _)| k.value().to_string())
                .filter(|k| !layer_dir_exists(k))
                .collect();
            for m in &missing {
                tracing::warn!(layer = %m, "layer directory missing; dropping its record");
                layers.remove(m.as_str())?;
            }
            let present: HashSet<String> = layers
                .iter()?
                .filter_map(|r| r.ok())
                .map(|(k, _)| k.value().to_string())
                .collect();
            let mut images = txn.open_table(IMAGES)?;
            let mut refs = txn.open_table(REFS)?;
            let mut broken = Vec::new();
            for r in images.iter()? {
                let (k, v) = r?;
                let rec: ImageRecord = serde_json::from_slice(v.value())?;
                if rec.layers.iter().any(|l| !present.contains(l)) {
                    broken.push(k.value().to_string());
                }
            }
            for b in &broken {
                tracing::warn!(image = %b, "image has a missing layer; removing it (pull it again)");
                images.remove(b.as_str())?;
            }
            let dangling: Vec<String> = refs
                .iter()?
                .filter_map(|r| r.ok())
                .filter(|(_, v)| broken.contains(&v.value().to_string()))
                .map(|(k, _)| k.value().to_string())
                .collect();
            for d in dangling {
                refs.remove(d.as_str())?;
            }
        }
        let _ = collect_garbage(&txn, &HashMap::new())?;
        let live = live_sets(&txn)?;
        txn.commit()?;
        Ok(live)
    }
}

fn live_sets(
    txn: &redb::WriteTransaction,
) -> Result<(BTreeSet<String>, BTreeSet<String>), ImageError> {
    let mut layers = BTreeSet::new();
    let mut blobs = BTreeSet::new();
    let images = txn.open_table(IMAGES)?;
    for r in images.iter()? {
        let (_, v) = r?;
        let rec: ImageRecord = serde_json::from_slice(v.value())?;
        layers.extend(rec.layers.iter().cloned());
        blobs.extend(rec.blobs());
    }
    let leases = txn.open_table(LEASES)?;
    for r in leases.iter()? {
        let (_, v) = r?;
        let ids: Vec<String> = serde_json::from_slice(v.value())?;
        layers.extend(ids);
    }
    Ok((layers, blobs))
}

/// Deletes layer records no image, lease or pin refers to; returns them
/// and the blob digests no image refers to.
fn collect_garbage(
    txn: &redb::WriteTransaction,
    pins: &HashMap<String, usize>,
) -> Result<Freed, ImageError> {
    let (live_layers, live_blobs) = live_sets(txn)?;
    let mut t = txn.open_table(LAYERS)?;
    let dead: Vec<String> = t
        .iter()?
        .filter_map(|r| r.ok())
        .map(|(k, _)| k.value().to_string())
        .filter(|k| !live_layers.contains(k) && !pins.contains_key(k))
        .collect();
    for d in &dead {
        t.remove(d.as_str())?;
    }
    Ok(Freed {
        layers: dead,
        live_blobs,
    })
}
