//! The writable layer of a container: bytes and inodes under its overlay
//! upper dir, measured by walking it, counted as `berth_image::fs_usage_of`
//! counts (allocated blocks, every inode, hard links once).
//!
//! `fs_usage_of` also finds the mount point by reading /proc/self/mountinfo,
//! which holds a line per container rootfs: O(mounts) per container, so
//! O(containers²) per ListContainerStats (reading it took ~250 us with 68
//! lines here). All upper dirs share one filesystem, so the mount point is
//! taken from `fs_usage_of` once per filesystem (`st_dev`) and the walks are
//! done here. With 20 containers, a ListContainerStats that walks them all
//! took 11-16 ms with `fs_usage_of` per container, 3-8 ms this way (release).
//!
//! A walk costs in proportion to the files a container wrote, and the
//! kubelet asks every ~10 s for every container, so each result is cached
//! for a while: [`TTL_FACTOR`] times what the walk took, within
//! [`MIN_TTL`]..[`MAX_TTL`]. A small upper dir (the usual case) is measured
//! afresh at most once a second; one that takes 100 ms to walk is measured
//! every 5 s, so walking never takes more than ~2% of a core per container.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use berth_image::FsUsage;
use berth_image::tree_usage::{self, TreeUsage, WalkLimits};

pub const MIN_TTL: Duration = Duration::from_secs(1);
pub const MAX_TTL: Duration = Duration::from_secs(60);
pub const TTL_FACTOR: u32 = 50;

struct Entry {
    usage: FsUsage,
    taken: Instant,
    ttl: Duration,
}

#[derive(Default)]
pub struct LayerCache {
    /// Container id → last measurement. Never held during a walk.
    inner: Mutex<HashMap<String, Entry>>,
    /// `st_dev` → mount point, as `fs_usage_of` found it.
    mountpoints: Mutex<HashMap<u64, PathBuf>>,
}

/// Deepest level a walk descends to (one open fd per level); deeper
/// subtrees, only made by hostile containers, are not counted.
pub const MAX_WALK_DEPTH: usize = 128;
/// Entries a walk visits at most (its cost per poll is bounded); the rest
/// are not counted.
pub const MAX_WALK_ENTRIES: u64 = 2_000_000;

/// The limits of a writable-layer walk (see `berth_image::tree_usage`).
const LIMITS: WalkLimits = WalkLimits {
    max_depth: MAX_WALK_DEPTH,
    max_entries: MAX_WALK_ENTRIES,
};

/// Walks the upper dir `dir` (a container writes it while we walk):
/// `berth_image::tree_usage::walk`, never following a symlink, bounded in
/// fds, memory and work. `None` when `dir` does not exist.
fn walk(dir: &Path) -> std::io::Result<Option<TreeUsage>> {
    let w = tree_usage::walk(dir, &LIMITS)?;
    if w.as_ref().is_some_and(|w| w.truncated) {
        tracing::debug!(dir = %dir.display(), "writable layer walk cut short (depth or entry cap): usage is a lower bound");
    }
    Ok(w)
}

/// How long a walk that took `took` stays valid.
pub fn ttl_for(took: Duration) -> Duration {
    (took * TTL_FACTOR).clamp(MIN_TTL, MAX_TTL)
}

impl LayerCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Usage of the upper dir in `layer_dir` (`<root>/containers/<id>`).
    /// Blocking: call from a blocking thread.
    pub fn usage(&self, id: &str, layer_dir: &Path) -> std::io::Result<FsUsage> {
        let now = Instant::now();
        if let Some(e) = self.lock().get(id)
            && now.duration_since(e.taken) < e.ttl
        {
            return Ok(e.usage.clone());
        }
        let upper: PathBuf = layer_dir.join("upper");
        let usage = match walk(&upper)? {
            Some(w) => self.with_mountpoint(&upper, w)?,
            // No upper dir (never mounted, or removed): fs_usage_of reports
            // it empty, on the filesystem of its nearest ancestor.
            None => berth_image::fs_usage_of(&upper)?,
        };
        let took = now.elapsed();
        let ttl = ttl_for(took);
        if took > Duration::from_millis(100) {
            tracing::debug!(container = %id, ?took, ?ttl, "slow writable layer walk, cached longer");
        }
        self.lock().insert(
            id.to_string(),
            Entry {
                usage: usage.clone(),
                taken: Instant::now(),
                ttl,
            },
        );
        Ok(usage)
    }

    /// The walk as an `FsUsage`, with the mount point of its filesystem
    /// (from `fs_usage_of`, the first time this filesystem is seen).
    fn with_mountpoint(&self, upper: &Path, w: TreeUsage) -> std::io::Result<FsUsage> {
        let known = self
            .mountpoints
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&w.dev)
            .cloned();
        let mountpoint = match known {
            Some(m) => m,
            None => {
                let u = berth_image::fs_usage_of(upper)?;
                self.mountpoints
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(u.fs_id, u.mountpoint.clone());
                u.mountpoint
            }
        };
        Ok(FsUsage {
            timestamp_nanos: crate::ids::now_ns(),
            path: upper.to_path_buf(),
            mountpoint,
            fs_id: w.dev,
            used_bytes: w.bytes,
            inodes_used: w.inodes,
        })
    }

    /// Forgets containers `keep` rejects.
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        self.lock().retain(|k, _| keep(k));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_scales_with_walk_cost() {
        assert_eq!(ttl_for(Duration::from_micros(50)), MIN_TTL);
        assert_eq!(ttl_for(Duration::from_millis(100)), Duration::from_secs(5));
        assert_eq!(ttl_for(Duration::from_secs(10)), MAX_TTL);
    }

    #[test]
    fn measures_the_upper_dir_and_caches_it() {
        let d = tempfile::tempdir().unwrap();
        let upper = d.path().join("upper");
        std::fs::create_dir_all(upper.join("sub")).unwrap();
        std::fs::write(upper.join("sub/f"), vec![1u8; 64 * 1024]).unwrap();
        let cache = LayerCache::default();
        let u = cache.usage("c1", d.path()).unwrap();
        assert!(u.used_bytes >= 64 * 1024, "{u:?}");
        assert!(u.inodes_used >= 2, "{u:?}");
        // Within the TTL the cached value is returned, even if the dir grew.
        std::fs::write(upper.join("g"), vec![1u8; 64 * 1024]).unwrap();
        assert_eq!(
            cache.usage("c1", d.path()).unwrap().used_bytes,
            u.used_bytes
        );
        cache.retain(|_| false);
        assert!(cache.usage("c1", d.path()).unwrap().used_bytes > u.used_bytes);
    }

    #[test]
    fn counts_as_fs_usage_of_counts() {
        let d = tempfile::tempdir().unwrap();
        let upper = d.path().join("upper");
        std::fs::create_dir_all(upper.join("a/b")).unwrap();
        std::fs::write(upper.join("a/b/f"), vec![7u8; 100_000]).unwrap();
        std::fs::write(upper.join("g"), b"x").unwrap();
        std::fs::hard_link(upper.join("g"), upper.join("a/g2")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", upper.join("link")).unwrap();
        let ours = LayerCache::default().usage("c", d.path()).unwrap();
        let theirs = berth_image::fs_usage_of(&upper).unwrap();
        assert_eq!(
            (ours.used_bytes, ours.inodes_used, ours.fs_id),
            (theirs.used_bytes, theirs.inodes_used, theirs.fs_id)
        );
        assert_eq!(ours.mountpoint, theirs.mountpoint);
        assert_eq!(ours.inodes_used, 6, "upper, a, b, f, g (once), link");
    }

    #[test]
    fn a_missing_upper_dir_is_empty() {
        let d = tempfile::tempdir().unwrap();
        let u = LayerCache::default()
            .usage("c", &d.path().join("gone"))
            .unwrap();
        assert_eq!((u.used_bytes, u.inodes_used), (0, 0));
    }

    /// A container swapping a dir of its upper layer for a symlink to a
    /// host dir while the walk runs must never lead the walk onto the host:
    /// the 8 MiB host file is never counted.
    #[test]
    fn a_dir_swapped_for_a_symlink_mid_walk_is_not_followed() {
        use std::sync::atomic::{AtomicBool, Ordering};
        let d = tempfile::tempdir().unwrap();
        let host = d.path().join("host");
        std::fs::create_dir(&host).unwrap();
        std::fs::write(host.join("big"), vec![1u8; 8 << 20]).unwrap();
        let upper = d.path().join("upper");
        std::fs::create_dir_all(upper.join("sub")).unwrap();
        for i in 0..50 {
            std::fs::write(upper.join(format!("sub/f{i}")), b"x").unwrap();
        }
        let stop = AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| {
                let (real, link, tmp) = (upper.join("sub"), upper.join("sub"), upper.join("real"));
                while !stop.load(Ordering::Relaxed) {
                    std::fs::rename(&real, &tmp).unwrap();
                    std::os::unix::fs::symlink(&host, &link).unwrap();
                    std::thread::yield_now();
                    std::fs::remove_file(&link).unwrap();
                    std::fs::rename(&tmp, &real).unwrap();
                }
            });
            for _ in 0..300 {
                let w = walk(&upper).unwrap().unwrap();
                assert!(w.bytes < 4 << 20, "walked onto the host: {} bytes", w.bytes);
            }
            stop.store(true, Ordering::Relaxed);
        });
    }

    /// The walk's depth is capped: a deep tree costs bounded fds and still
    /// gives a (lower-bound) answer.
    #[test]
    fn deep_trees_are_cut_at_the_depth_cap() {
        let d = tempfile::tempdir().unwrap();
        let mut p = d.path().join("upper");
        for _ in 0..(MAX_WALK_DEPTH + 50) {
            p.push("d");
        }
        std::fs::create_dir_all(&p).unwrap();
        let w = walk(&d.path().join("upper")).unwrap().unwrap();
        assert_eq!(w.inodes, MAX_WALK_DEPTH as u64 + 1);
    }
}
