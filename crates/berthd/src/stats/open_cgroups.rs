//! The containers' cgroups, kept open between stats calls
//! ([`berth_cgroup::OpenCgroup`]): the kubelet reads the same cgroups every
//! 10 s (and `/metrics/cadvisor` on each scrape), and walking each file's
//! path from `/sys/fs/cgroup` down was the largest part of a collection.
//!
//! Each entry holds an `O_PATH` descriptor per hierarchy read (up to five
//! on a v1 host, one on v2). The descriptors kept stay under a quarter of
//! berthd's soft open-files limit: past it, a cgroup is opened for the
//! reading and closed after, as without the cache. Entries go with their
//! containers ([`OpenCgroups::retain`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use berth_cgroup::{Cgroup, OpenCgroup};

pub struct OpenCgroups {
    inner: Mutex<Inner>,
    max_fds: usize,
}

#[derive(Default)]
struct Inner {
    by_id: HashMap<String, Arc<OpenCgroup>>,
    fds: usize,
}

impl Default for OpenCgroups {
    fn default() -> OpenCgroups {
        let soft = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
            .map_or(1024, |(soft, _)| soft);
        OpenCgroups::with_max_fds(usize::try_from(soft / 4).unwrap_or(usize::MAX))
    }
}

impl OpenCgroups {
    pub fn with_max_fds(max_fds: usize) -> OpenCgroups {
        OpenCgroups {
            inner: Mutex::default(),
            max_fds,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Container `id`'s cgroup, open: the kept one, or opened now (and kept
    /// when all its directories were there and the bound allows); `cgroup`
    /// names it, asked only when it is not kept. The lock is not held while
    /// opening.
    pub fn get(
        &self,
        id: &str,
        cgroup: impl FnOnce() -> Option<Cgroup>,
    ) -> Option<Arc<OpenCgroup>> {
        if let Some(open) = self.lock().by_id.get(id) {
            return Some(open.clone());
        }
        let open = Arc::new(cgroup()?.open());
        if open.complete() {
            let mut inner = self.lock();
            let fds = open.fds();
            if inner.fds + fds <= self.max_fds && !inner.by_id.contains_key(id) {
                inner.fds += fds;
                inner.by_id.insert(id.to_string(), open.clone());
            }
        }
        Some(open)
    }

    /// Keeps only the containers `keep` says exist.
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        let mut inner = self.lock();
        let mut dropped = 0;
        inner.by_id.retain(|id, open| {
            let k = keep(id);
            if !k {
                dropped += open.fds();
            }
            k
        });
        inner.fds -= dropped;
    }

    /// Descriptors kept (for tests and the log).
    #[cfg(test)]
    fn fds(&self) -> usize {
        self.lock().fds
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_cgroup::Layout;

    /// A v1 layout of `controllers` under `root`, each with cgroup `c/<id>`.
    fn layout(root: &std::path::Path, controllers: &[&str], ids: &[&str]) -> Layout {
        let mut mi = String::new();
        for (i, c) in controllers.iter().enumerate() {
            let mp = root.join(c);
            for id in ids {
                std::fs::create_dir_all(mp.join("c").join(id)).unwrap();
            }
            mi.push_str(&format!(
                "{} 1 0:{} / {} rw - cgroup cgroup rw,{c}\n",
                30 + i,
                30 + i,
                mp.display()
            ));
        }
        Layout::from_mountinfo_under(&mi, root).unwrap()
    }

    #[test]
    fn kept_until_gone_and_within_the_bound() {
        let d = tempfile::tempdir().unwrap();
        let l = layout(d.path(), &["memory", "pids"], &["a", "b", "c"]);
        let l = &l;
        let cg = |id: &'static str| move || Cgroup::of(l, &format!("/c/{id}"));
        // Room for two cgroups of two directories each.
        let cache = OpenCgroups::with_max_fds(4);
        let a = cache.get("a", cg("a")).unwrap();
        assert!(Arc::ptr_eq(&a, &cache.get("a", cg("a")).unwrap()), "kept");
        let b = cache.get("b", cg("b")).unwrap();
        assert_eq!(cache.fds(), 4);
        let c = cache.get("c", cg("c")).unwrap();
        assert!(
            !Arc::ptr_eq(&c, &cache.get("c", cg("c")).unwrap()),
            "over the bound: not kept"
        );
        cache.retain(|id| id != "a");
        assert_eq!(cache.fds(), 2);
        assert!(Arc::ptr_eq(&b, &cache.get("b", cg("b")).unwrap()));
        let c = cache.get("c", cg("c")).unwrap();
        assert!(
            Arc::ptr_eq(&c, &cache.get("c", cg("c")).unwrap()),
            "room again"
        );
        // A cgroup not made yet is not kept: it is looked for again.
        let missing = cache.get("x", cg("x")).unwrap();
        assert!(!missing.complete());
        assert_eq!(cache.fds(), 4);
    }
}
