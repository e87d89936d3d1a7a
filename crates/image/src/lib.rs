//! Berth image service: references, registry client, content store and layer unpacking.
//!
//! [`ImageStore`] is what berthd uses: pull (streaming, layers in parallel,
//! shared layers fetched once), list, get, remove, fs usage and the layer
//! dirs a container rootfs is stacked from. See `store.rs` for the on-disk
//! layout and the crash-safety rules.

mod blob_fetch;
pub mod digest;
pub mod error;
mod import;
pub mod manifest;
mod manifest_fetch;
pub mod platform;
mod pull;
pub mod reference;
pub mod registries_conf;
pub mod registry;
mod session;
mod store;
mod token;
pub mod tree_usage;
pub mod unpack;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use futures::future::{BoxFuture, Shared};

pub use error::{ImageError, ImageErrorKind};
pub use import::ImportOptions;
pub use platform::Platform;
pub use reference::ImageRef;
pub use registries_conf::RegistriesConfig;
pub use registry::RegistryAuth;
pub use unpack::UnpackLimits;

use error::IoContext;
use store::{ImageRecord, Layout, Meta};

/// Tunables; `Default` is what berthd uses with no config.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Layers of one pull downloaded and unpacked at the same time.
    pub max_parallel_layers: usize,
    /// Platform used to pick a manifest out of an image index.
    pub platform: Platform,
    pub unpack_limits: UnpackLimits,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            max_parallel_layers: 4,
            platform: Platform::host(),
            unpack_limits: UnpackLimits::default(),
        }
    }
}

/// An image as the CRI sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Image {
    /// `sha256:<hex>` of the image config.
    pub id: String,
    /// `docker.io/library/busybox:latest`, sorted.
    pub repo_tags: Vec<String>,
    /// `docker.io/library/busybox@sha256:...` (manifest or index digest), sorted.
    pub repo_digests: Vec<String>,
    /// Bytes on disk of its unpacked layers.
    pub size: u64,
    /// The config's `User`, as written (`1000`, `1000:1000`, `nobody`, ...).
    pub user: Option<String>,
    pub pinned: bool,
    pub manifest_digest: String,
    /// diffIDs, lowest first.
    pub layers: Vec<String>,
    /// The image config exactly as pulled (its sha256 is `id`).
    pub config_json: Vec<u8>,
}

impl Image {
    fn user_name_part(&self) -> Option<&str> {
        let u = self.user.as_deref()?.split(':').next()?;
        (!u.is_empty()).then_some(u)
    }

    /// Numeric uid from `User`, if it is numeric.
    pub fn uid(&self) -> Option<i64> {
        self.user_name_part()?.parse().ok()
    }

    /// User name from `User` when it is not numeric (CRI `username`).
    pub fn username(&self) -> String {
        match self.user_name_part() {
            Some(u) if u.parse::<i64>().is_err() => u.to_string(),
            _ => String::new(),
        }
    }

    /// The config parsed with oci-spec.
    pub fn config(&self) -> Result<oci_spec::image::ImageConfiguration, ImageError> {
        serde_json::from_slice(&self.config_json).map_err(|e| {
            ImageError::Store(format!("config of image {} does not parse: {e}", self.id))
        })
    }
}

/// Space used by the image store (CRI ImageFsInfo).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsUsage {
    pub timestamp_nanos: i64,
    /// `root/images`.
    pub path: PathBuf,
    /// Mount point of the filesystem holding `path`.
    pub mountpoint: PathBuf,
    /// `st_dev` of that filesystem.
    pub fs_id: u64,
    pub used_bytes: u64,
    pub inodes_used: u64,
}

type LayerFuture = Shared<BoxFuture<'static, Result<(), ImageError>>>;

#[derive(Default)]
struct State {
    /// Layer downloads in progress, by diffID: every pull needing one awaits the same.
    inflight: HashMap<String, LayerFuture>,
    /// Digests (layers, blobs) an unfinished pull relies on; GC leaves them.
    pins: HashMap<String, usize>,
}

pub(crate) struct Inner {
    layout: Layout,
    meta: Meta,
    registries: RwLock<RegistriesConfig>,
    clients: registry::Clients,
    opts: StoreOptions,
    state: Mutex<State>,
    /// Layer bytes received from registries since the store opened
    /// (failed and cancelled downloads included).
    layer_bytes_fetched: AtomicU64,
}

/// The image store. Cheap to clone; all clones share state.
#[derive(Clone)]
pub struct ImageStore {
    inner: Arc<Inner>,
}

enum Resolved {
    /// The input named the image by id: it applies to the whole image.
    Id(ImageRecord),
    /// The input named one tag or digest ref of the image.
    Ref(ImageRecord, String),
}

impl ImageStore {
    /// Opens (creating if needed) the store under `root/images`, with its
    /// tables in `db`, and removes what interrupted pulls left behind.
    pub fn open(
        root: &Path,
        db: Arc<redb::Database>,
        registries: RegistriesConfig,
    ) -> Result<ImageStore, ImageError> {
        Self::open_with(root, db, registries, StoreOptions::default())
    }

    pub fn open_with(
        root: &Path,
        db: Arc<redb::Database>,
        registries: RegistriesConfig,
        opts: StoreOptions,
    ) -> Result<ImageStore, ImageError> {
        let layout = Layout::new(root);
        layout.create()?;
        let meta = Meta::open(db)?;
        let store = ImageStore {
            inner: Arc::new(Inner {
                clients: registry::Clients::new(),
                layout,
                meta,
                registries: RwLock::new(registries),
                opts: StoreOptions {
                    max_parallel_layers: opts.max_parallel_layers.max(1),
                    ..opts
                },
                state: Mutex::new(State::default()),
                layer_bytes_fetched: AtomicU64::new(0),
            }),
        };
        store.recover()?;
        Ok(store)
    }

    /// Startup cleanup: tmp/, layer dirs without a record, records nothing
    /// uses, blobs no image refers to.
    fn recover(&self) -> Result<(), ImageError> {
        let l = &self.inner.layout;
        store::remove_any(&l.tmp)?;
        std::fs::create_dir_all(&l.tmp).ctx(|| format!("creating {}", l.tmp.display()))?;
        let (live_layers, live_blobs) = self.inner.meta.repair(|d| l.layer_dir(d).is_dir())?;
        let live_hex =
            |set: &std::collections::BTreeSet<String>| -> std::collections::HashSet<String> {
                set.iter()
                    .map(|d| d.strip_prefix("sha256:").unwrap_or(d).to_string())
                    .collect()
            };
        let (ll, lb) = (live_hex(&live_layers), live_hex(&live_blobs));
        for (dir, live) in [(&l.layers, &ll), (&l.blobs, &lb)] {
            let rd = std::fs::read_dir(dir).ctx(|| format!("reading {}", dir.display()))?;
            for e in rd {
                let e = e.ctx(|| format!("reading {}", dir.display()))?;
                let name = e.file_name().to_string_lossy().into_owned();
                if !live.contains(&name) {
                    tracing::info!(path = %e.path().display(), "removing leftover of an interrupted pull or removal");
                    l.trash(&e.path())?;
                }
            }
        }
        Ok(())
    }

    /// Replaces the registries configuration (e.g. on reload).
    pub fn set_registries(&self, registries: RegistriesConfig) {
        *self
            .inner
            .registries
            .write()
            .unwrap_or_else(|p| p.into_inner()) = registries;
    }

    /// Pulls `reference` (as the kubelet sends it) and returns the image.
    pub async fn pull(
        &self,
        reference: &str,
        auth: Option<RegistryAuth>,
    ) -> Result<Image, ImageError> {
        pull::pull(self.inner.clone(), reference, auth.unwrap_or_default()).await
    }

    /// Layer bytes received from registries since the store opened, failed
    /// and cancelled downloads included (for berthd's Prometheus counter).
    pub fn layer_bytes_fetched(&self) -> u64 {
        self.inner.layer_bytes_fetched.load(Ordering::Relaxed)
    }

    pub fn list(&self) -> Result<Vec<Image>, ImageError> {
        let mut v: Vec<Image> = self
            .inner
            .meta
            .images()?
            .into_iter()
            .map(|r| self.to_image(r))
            .collect::<Result<_, _>>()?;
        v.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(v)
    }

    /// By image id (with or without `sha256:`, or a unique hex prefix),
    /// tag, digest reference or short name.
    pub fn get(&self, id_or_ref: &str) -> Result<Option<Image>, ImageError> {
        match self.resolve(id_or_ref)? {
            Some(Resolved::Id(r)) | Some(Resolved::Ref(r, _)) => Ok(Some(self.to_image(r)?)),
            None => Ok(None),
        }
    }

    /// Removes an image: by id, the image with all its tags; by tag, that
    /// tag (the image goes with its last tag); by digest reference, that
    /// reference (the image goes when it has no tag and no digest left).
    /// Layers still used by another image or leased by a container stay.
    /// An unknown image is not an error (the kubelet expects that).
    pub fn remove(&self, id_or_ref: &str) -> Result<(), ImageError> {
        let Some(res) = self.resolve(id_or_ref)? else {
            return Ok(());
        };
        let (id, refs, whole) = match res {
            Resolved::Id(r) => (r.id, vec![], true),
            Resolved::Ref(r, key) => (r.id, vec![key], false),
        };
        tracing::info!(image = %id_or_ref, id = %id, "removing image");
        self.gc(|meta, pins| meta.remove(&id, &refs, whole, pins))
    }

    /// Marks an image pinned (never garbage collected by the kubelet).
    pub fn set_pinned(&self, id_or_ref: &str, pinned: bool) -> Result<(), ImageError> {
        match self.resolve(id_or_ref)? {
            Some(Resolved::Id(r)) | Some(Resolved::Ref(r, _)) => {
                self.inner.meta.set_pinned(&r.id, pinned)?;
                Ok(())
            }
            None => Err(ImageError::NotFound {
                reference: id_or_ref.to_string(),
                detail: String::new(),
            }),
        }
    }

    /// Records that container `container_id` uses the layers of an image,
    /// so they stay even if the image is removed. Returns the layer dirs,
    /// lowest first. Not fsynced: durable with the caller's next durable
    /// commit on the same database (see `store::Meta::lease`).
    pub fn lease(&self, container_id: &str, image: &str) -> Result<Vec<PathBuf>, ImageError> {
        let rec = self.record(image)?;
        self.inner.meta.lease(container_id, &rec.layers)?;
        Ok(self.dirs(&rec))
    }

    /// [`Self::lease`] for a container that also mounts images as volumes:
    /// one lease holds the layers of all of `images` (its rootfs image and
    /// each image volume's), so the container's existing lease lifecycle
    /// (dropped at removal, reconciled at startup) covers them all. Returns
    /// each image's layer dirs, lowest first, in the order given.
    pub fn lease_all(
        &self,
        container_id: &str,
        images: &[&str],
    ) -> Result<Vec<Vec<PathBuf>>, ImageError> {
        let recs = images
            .iter()
            .map(|i| self.record(i))
            .collect::<Result<Vec<_>, _>>()?;
        let mut layers: Vec<String> = Vec::new();
        for l in recs.iter().flat_map(|r| r.layers.iter()) {
            if !layers.contains(l) {
                layers.push(l.clone());
            }
        }
        self.inner.meta.lease(container_id, &layers)?;
        Ok(recs.iter().map(|r| self.dirs(r)).collect())
    }

    /// Ids of the containers holding a lease (startup reconciliation).
    pub fn leases(&self) -> Result<Vec<String>, ImageError> {
        self.inner.meta.leases()
    }

    /// Drops a container's lease; layers nothing else uses are deleted.
    pub fn unlease(&self, container_id: &str) -> Result<(), ImageError> {
        self.gc(|meta, pins| meta.unlease(container_id, pins))
    }

    /// Layer dirs of an image, lowest first (overlay lowerdirs are given
    /// highest first: reverse this).
    pub fn layer_dirs(&self, image: &str) -> Result<Vec<PathBuf>, ImageError> {
        Ok(self.dirs(&self.record(image)?))
    }

    pub fn fs_usage(&self) -> Result<FsUsage, ImageError> {
        use std::os::unix::fs::MetadataExt;
        let l = &self.inner.layout;
        let mut used = 0u64;
        let mut inodes = 0u64;
        for rec in self.inner.meta.layers()?.values() {
            used += rec.bytes;
            inodes += rec.inodes;
        }
        // Blobs and tmp are small or short-lived; measure them directly.
        for p in [&l.blobs, &l.tmp] {
            if let Ok((b, i)) = store::disk_usage(p) {
                used += b;
                inodes += i;
            }
        }
        let md = std::fs::metadata(&l.root).ctx(|| format!("stat {}", l.root.display()))?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as i64)
            .unwrap_or(0);
        Ok(FsUsage {
            timestamp_nanos: now,
            path: l.root.clone(),
            mountpoint: mountpoint_of(&l.root),
            fs_id: md.dev(),
            used_bytes: used,
            inodes_used: inodes,
        })
    }

    /// Root of the image store (`root/images`).
    pub fn path(&self) -> &Path {
        &self.inner.layout.root
    }

    fn dirs(&self, rec: &ImageRecord) -> Vec<PathBuf> {
        rec.layers
            .iter()
            .map(|d| self.inner.layout.layer_dir(d))
            .collect()
    }

    fn record(&self, image: &str) -> Result<ImageRecord, ImageError> {
        match self.resolve(image)? {
            Some(Resolved::Id(r)) | Some(Resolved::Ref(r, _)) => Ok(r),
            None => Err(ImageError::NotFound {
                reference: image.to_string(),
                detail: String::new(),
            }),
        }
    }

    fn to_image(&self, r: ImageRecord) -> Result<Image, ImageError> {
        let p = self.inner.layout.blob_path(&r.id);
        let config_json = std::fs::read(&p).ctx(|| format!("reading config {}", p.display()))?;
        Ok(Image {
            id: r.id,
            repo_tags: r.repo_tags,
            repo_digests: r.repo_digests,
            size: r.size,
            user: r.user,
            pinned: r.pinned,
            manifest_digest: r.manifest_digest,
            layers: r.layers,
            config_json,
        })
    }

    fn resolve(&self, s: &str) -> Result<Option<Resolved>, ImageError> {
        let meta = &self.inner.meta;
        let hex = s.strip_prefix("sha256:").unwrap_or(s);
        let is_hex = !hex.is_empty()
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if is_hex
            && hex.len() == 64
            && let Some(r) = meta.image(&format!("sha256:{hex}"))?
        {
            return Ok(Some(Resolved::Id(r)));
        }
        if let Ok(r) = ImageRef::parse(s) {
            let key = match &r.digest {
                Some(d) => Some(r.with_digest(d)),
                None => r.tagged(),
            };
            if let Some(key) = key
                && let Some(id) = meta.resolve_ref(&key)?
                && let Some(rec) = meta.image(&id)?
            {
                return Ok(Some(Resolved::Ref(rec, key)));
            }
        }
        // A truncated id, as `crictl images` shows them.
        if is_hex && hex.len() < 64 {
            let mut m = meta
                .images()?
                .into_iter()
                .filter(|r| r.id["sha256:".len()..].starts_with(hex));
            if let (Some(one), None) = (m.next(), m.next()) {
                return Ok(Some(Resolved::Id(one)));
            }
        }
        Ok(None)
    }

    /// Runs a metadata change that may free layers/blobs, then deletes them.
    /// Holding the state lock makes it atomic with respect to pulls pinning
    /// and finding layers.
    fn gc(
        &self,
        f: impl FnOnce(&Meta, &HashMap<String, usize>) -> Result<store::Freed, ImageError>,
    ) -> Result<(), ImageError> {
        let l = &self.inner.layout;
        let mut doomed = Vec::new();
        {
            let st = self.inner.state.lock().unwrap_or_else(|p| p.into_inner());
            let freed = f(&self.inner.meta, &st.pins)?;
            for d in &freed.layers {
                let t = l.tmp_path("trash");
                match std::fs::rename(l.layer_dir(d), &t) {
                    Ok(()) => doomed.push(t),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(ImageError::io(format!("removing layer {d}"), e)),
                }
            }
            let rd =
                std::fs::read_dir(&l.blobs).ctx(|| format!("reading {}", l.blobs.display()))?;
            for e in rd.flatten() {
                let digest = format!("sha256:{}", e.file_name().to_string_lossy());
                if !freed.live_blobs.contains(&digest) && !st.pins.contains_key(&digest) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        // Deleting big trees happens outside the lock.
        for t in doomed {
            store::remove_any(&t)?;
        }
        Ok(())
    }
}

/// Space used under any directory (e.g. containers' writable layers), by
/// walking it; for CRI `container_filesystems`. A missing dir is empty.
pub fn fs_usage_of(path: &Path) -> std::io::Result<FsUsage> {
    use std::os::unix::fs::MetadataExt;
    let (used_bytes, inodes_used) = match store::disk_usage(path) {
        Ok(u) => u,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => (0, 0),
        Err(e) => return Err(e),
    };
    let existing = path
        .ancestors()
        .find(|p| p.exists())
        .unwrap_or(Path::new("/"));
    let fs_id = std::fs::metadata(existing)?.dev();
    Ok(FsUsage {
        timestamp_nanos: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as i64)
            .unwrap_or(0),
        path: path.to_path_buf(),
        mountpoint: mountpoint_of(existing),
        fs_id,
        used_bytes,
        inodes_used,
    })
}

/// The mount point holding `p`, from /proc/self/mountinfo (longest match).
fn mountpoint_of(p: &Path) -> PathBuf {
    let p = std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let mounts = berth_mountinfo::read_self().unwrap_or_default();
    berth_mountinfo::mount_point_of(&mounts, &p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::LayerRecord;

    fn d(n: u8) -> String {
        format!("sha256:{}", hex::encode([n; 32]))
    }

    struct T {
        _dir: tempfile::TempDir,
        root: PathBuf,
        db: Arc<redb::Database>,
        store: ImageStore,
    }

    fn setup() -> T {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let db = Arc::new(redb::Database::create(root.join("meta.redb")).unwrap());
        let store = ImageStore::open(&root, db.clone(), RegistriesConfig::default()).unwrap();
        T {
            _dir: dir,
            root,
            db,
            store,
        }
    }

    impl T {
        fn reopen(&mut self) {
            self.store =
                ImageStore::open(&self.root, self.db.clone(), RegistriesConfig::default()).unwrap();
        }

        /// A layer as a finished pull leaves it: dir with a file, then record.
        fn layer(&self, n: u8) -> String {
            let id = d(n);
            let dir = self.store.inner.layout.layer_dir(&id);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join(format!("f{n}")), [n; 100]).unwrap();
            self.store
                .inner
                .meta
                .put_layer(&LayerRecord {
                    diff_id: id.clone(),
                    blob_digest: d(n + 100),
                    blob_size: 1,
                    bytes: 4096,
                    inodes: 2,
                })
                .unwrap();
            id
        }

        fn image(&self, cfg: u8, layers: &[u8], tags: &[&str]) -> String {
            let id = d(cfg);
            let l = &self.store.inner.layout;
            l.write_blob(
                &id,
                format!("{{\"config\":{{\"User\":\"{cfg}\"}}}}").as_bytes(),
            )
            .unwrap();
            l.write_blob(&d(cfg + 50), b"{}").unwrap();
            self.store
                .inner
                .meta
                .commit_image(ImageRecord {
                    id: id.clone(),
                    manifest_digest: d(cfg + 50),
                    index_digest: None,
                    layers: layers.iter().map(|n| self.layer(*n)).collect(),
                    repo_tags: tags.iter().map(|t| t.to_string()).collect(),
                    repo_digests: vec![format!("docker.io/library/x@{}", d(cfg + 50))],
                    size: 1,
                    user: Some(format!("{cfg}")),
                    pinned: false,
                    pulled_at_unix_nanos: 0,
                })
                .unwrap();
            id
        }

        fn layer_exists(&self, n: u8) -> bool {
            let dir = self.store.inner.layout.layer_dir(&d(n));
            let rec = self.store.inner.meta.layer(&d(n)).unwrap();
            assert_eq!(
                dir.exists(),
                rec.is_some(),
                "dir and record of layer {n} disagree"
            );
            rec.is_some()
        }
    }

    #[test]
    fn get_by_id_tag_digest_short_name_and_prefix() {
        let t = setup();
        let id = t.image(1, &[10, 11], &["docker.io/library/busybox:latest"]);
        let s = &t.store;
        let hex = &id["sha256:".len()..];
        for q in [
            id.as_str(),
            hex,
            &hex[..12],
            "busybox",
            "busybox:latest",
            "docker.io/library/busybox:latest",
            &format!("docker.io/library/x@{}", d(51)),
        ] {
            let img = s.get(q).unwrap().unwrap_or_else(|| panic!("{q} not found"));
            assert_eq!(img.id, id, "{q}");
        }
        assert!(s.get("busybox:other").unwrap().is_none());
        assert!(s.get("nothing").unwrap().is_none());
        let img = s.get("busybox").unwrap().unwrap();
        assert_eq!(img.uid(), Some(1));
        assert_eq!(img.username(), "");
        assert_eq!(img.layers, vec![d(10), d(11)]);
        assert_eq!(
            s.layer_dirs("busybox").unwrap(),
            vec![
                t.root.join("images/layers").join(hex::encode([10; 32])),
                t.root.join("images/layers").join(hex::encode([11; 32]))
            ]
        );
        assert_eq!(s.list().unwrap().len(), 1);
    }

    #[test]
    fn remove_keeps_shared_layers() {
        let t = setup();
        let a = t.image(1, &[10, 11], &["docker.io/library/a:1"]);
        let _b = t.image(
            2,
            &[10, 12],
            &["docker.io/library/b:1", "docker.io/library/b:2"],
        );
        // By tag with another tag left: only the tag goes.
        t.store.remove("b:1").unwrap();
        assert_eq!(
            t.store.get("b:2").unwrap().unwrap().repo_tags,
            ["docker.io/library/b:2"]
        );
        assert!(t.layer_exists(12));
        // By id: all tags, and the layers only it used.
        t.store.remove(&a).unwrap();
        assert!(t.store.get("a:1").unwrap().is_none());
        assert!(t.store.get(&a).unwrap().is_none());
        assert!(t.layer_exists(10), "shared base layer must stay");
        assert!(!t.layer_exists(11));
        assert!(!t.store.inner.layout.blob_path(&a).exists());
        // By last tag: the image goes, with its digest refs.
        t.store.remove("b:2").unwrap();
        assert!(t.store.list().unwrap().is_empty());
        assert!(!t.layer_exists(10));
        assert!(!t.layer_exists(12));
        // Unknown images are not an error.
        t.store.remove("nothing:here").unwrap();
        t.store.remove(&d(99)).unwrap();
    }

    #[test]
    fn remove_by_digest_keeps_tagged_image() {
        let t = setup();
        t.image(1, &[10], &["docker.io/library/x:1"]);
        t.store.remove(&format!("x@{}", d(51))).unwrap();
        let img = t.store.get("x:1").unwrap().unwrap();
        assert!(img.repo_digests.is_empty());
        t.store.remove("x:1").unwrap();
        assert!(t.store.list().unwrap().is_empty());
    }

    #[test]
    fn tag_moves_to_new_image() {
        let t = setup();
        let old = t.image(1, &[10], &["docker.io/library/x:latest"]);
        let new = t.image(2, &[11], &["docker.io/library/x:latest"]);
        assert_eq!(t.store.get("x").unwrap().unwrap().id, new);
        let o = t.store.get(&old).unwrap().unwrap();
        assert!(o.repo_tags.is_empty());
        assert_eq!(o.repo_digests.len(), 1);
        // Pulling the same image again keeps one record with merged refs.
        t.image(2, &[11], &["docker.io/library/y:1"]);
        let n = t.store.get(&new).unwrap().unwrap();
        assert_eq!(
            n.repo_tags,
            ["docker.io/library/x:latest", "docker.io/library/y:1"]
        );
        assert_eq!(t.store.list().unwrap().len(), 2);
    }

    #[test]
    fn leases_keep_layers_of_removed_images() {
        let t = setup();
        t.image(1, &[10, 11], &["docker.io/library/x:1"]);
        let dirs = t.store.lease("ctr1", "x:1").unwrap();
        assert_eq!(dirs.len(), 2);
        t.store.remove("x:1").unwrap();
        assert!(t.layer_exists(10) && t.layer_exists(11));
        t.store.unlease("ctr1").unwrap();
        assert!(!t.layer_exists(10) && !t.layer_exists(11));
    }

    /// One lease holds the layers of a container's image and of the images
    /// it mounts as volumes: all stay while it lives, and go together.
    #[test]
    fn one_lease_holds_several_images() {
        let t = setup();
        t.image(1, &[10, 11], &["docker.io/library/x:1"]);
        t.image(2, &[11, 12], &["docker.io/library/y:1"]);
        let dirs = t.store.lease_all("ctr1", &["x:1", "y:1"]).unwrap();
        assert_eq!(dirs.len(), 2);
        assert_eq!(dirs[0].len(), 2);
        assert_eq!(dirs[1].len(), 2);
        assert_eq!(dirs[0][1], dirs[1][0], "the shared layer is one dir");
        t.store.remove("x:1").unwrap();
        t.store.remove("y:1").unwrap();
        assert!(t.layer_exists(10) && t.layer_exists(11) && t.layer_exists(12));
        t.store.unlease("ctr1").unwrap();
        assert!(!t.layer_exists(10) && !t.layer_exists(11) && !t.layer_exists(12));
        // An unknown image leases nothing.
        assert!(t.store.lease_all("ctr2", &["nope:1"]).is_err());
        assert!(t.store.leases().unwrap().is_empty());
    }

    #[test]
    fn pins_keep_layers_during_pulls() {
        let t = setup();
        t.image(1, &[10], &["docker.io/library/x:1"]);
        t.store.inner.state.lock().unwrap().pins.insert(d(10), 1);
        t.store.remove("x:1").unwrap();
        assert!(t.layer_exists(10));
    }

    #[test]
    fn open_cleans_leftovers_of_killed_pulls() {
        let mut t = setup();
        let keep = t.image(1, &[10], &["docker.io/library/x:1"]);
        let l = t.store.inner.layout.clone();
        // A half-unpacked layer in tmp/.
        std::fs::create_dir_all(l.tmp.join("layer-1/usr/bin")).unwrap();
        // A renamed layer whose record was never written.
        std::fs::create_dir_all(l.layer_dir(&d(20)).join("etc")).unwrap();
        // A finished layer of a pull that never recorded its image.
        t.layer(21);
        // A blob of that pull.
        l.write_blob(&d(22), b"{}").unwrap();
        // An image whose layer dir vanished.
        let broken = t.image(3, &[23], &["docker.io/library/broken:1"]);
        std::fs::remove_dir_all(l.layer_dir(&d(23))).unwrap();
        // A read-only dir inside a leftover must not stop cleanup.
        std::fs::create_dir_all(l.layer_dir(&d(24)).join("ro/sub")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            l.layer_dir(&d(24)).join("ro"),
            std::fs::Permissions::from_mode(0o555),
        )
        .unwrap();

        t.reopen();
        assert_eq!(std::fs::read_dir(&l.tmp).unwrap().count(), 0);
        assert!(!l.layer_dir(&d(20)).exists());
        assert!(!t.layer_exists(21));
        assert!(!l.blob_path(&d(22)).exists());
        assert!(!l.layer_dir(&d(24)).exists());
        assert!(t.store.get(&broken).unwrap().is_none());
        assert!(t.store.get("broken:1").unwrap().is_none());
        assert_eq!(t.store.get("x:1").unwrap().unwrap().id, keep);
        assert!(t.layer_exists(10));
        assert!(l.blob_path(&keep).exists());
    }

    #[test]
    fn fs_usage_counts_layers_and_blobs() {
        let t = setup();
        t.image(1, &[10, 11], &["docker.io/library/x:1"]);
        let u = t.store.fs_usage().unwrap();
        assert!(u.used_bytes >= 2 * 4096, "{u:?}");
        assert!(u.inodes_used >= 4, "{u:?}");
        assert_eq!(u.path, t.root.join("images"));
        assert!(
            u.path.starts_with(&u.mountpoint)
                || std::fs::canonicalize(&u.path)
                    .unwrap()
                    .starts_with(&u.mountpoint)
        );
        assert!(u.timestamp_nanos > 0);
    }

    #[test]
    fn pinned_and_user_names() {
        let t = setup();
        let id = t.image(1, &[10], &["docker.io/library/x:1"]);
        t.store.set_pinned("x:1", true).unwrap();
        assert!(t.store.get(&id).unwrap().unwrap().pinned);
        assert!(t.store.set_pinned("nope", true).is_err());
        let mut img = t.store.get(&id).unwrap().unwrap();
        img.user = Some("berth:staff".into());
        assert_eq!((img.uid(), img.username().as_str()), (None, "berth"));
        img.user = Some("1000:1000".into());
        assert_eq!((img.uid(), img.username().as_str()), (Some(1000), ""));
        img.user = Some(":1000".into());
        assert_eq!((img.uid(), img.username().as_str()), (None, ""));
    }

    #[test]
    fn fs_usage_of_any_dir() {
        let t = setup();
        let d = t.root.join("containers/c1");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("f"), vec![1u8; 10_000]).unwrap();
        let u = fs_usage_of(&t.root.join("containers")).unwrap();
        assert!(u.used_bytes >= 10_000 && u.inodes_used == 3, "{u:?}");
        let none = fs_usage_of(&t.root.join("nothing")).unwrap();
        assert_eq!((none.used_bytes, none.inodes_used), (0, 0));
        assert_eq!(none.fs_id, u.fs_id);
    }
}
