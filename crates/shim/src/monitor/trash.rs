//! The trash: deleted containers' state, removed one entry at a time when
//! the loop is idle (file deletions can be slow synchronous discards; a
//! Delete only renames).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Directory (inside the state dir) of deleted containers' leftovers.
pub(super) const TRASH_DIR: &str = "trash";
/// Idle time after which the loop removes one trash entry.
const TRASH_IDLE: Duration = Duration::from_millis(20);

pub(super) struct Trash {
    dir: PathBuf,
    /// What is in `dir`, still to remove.
    entries: Vec<PathBuf>,
}

impl Trash {
    /// The trash at `dir`, with what an earlier monitor left in it.
    pub fn open(dir: PathBuf) -> Trash {
        Trash {
            entries: fs::read_dir(&dir)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path())
                .collect(),
            dir,
        }
    }

    /// Moves `from` into the trash as `name`; removes it at once if it
    /// cannot be moved. A missing `from` is nothing to do.
    pub fn put(&mut self, from: &Path, name: &str) {
        let to = self.dir.join(name);
        match fs::rename(from, &to) {
            Ok(()) => self.entries.push(to),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(_) => remove_any(from),
        }
    }

    /// When the loop, idle since `now`, should wake to empty the trash.
    pub fn idle_deadline(&self, now: Instant) -> Option<Instant> {
        (!self.entries.is_empty()).then(|| now + TRASH_IDLE)
    }

    /// Removes one entry (the loop was idle).
    pub fn empty_one(&mut self) {
        if let Some(p) = self.entries.pop() {
            remove_any(&p);
        }
    }
}

fn remove_any(p: &Path) {
    // Container dirs: any depth the container made, without recursion.
    let r = berth_rmtree::remove_tree(p);
    if let Err(e) = r
        && e.kind() != io::ErrorKind::NotFound
    {
        eprintln!("berth-monitor: remove {}: {e}", p.display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_then_empty_when_idle() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("trash");
        fs::create_dir(&dir).unwrap();
        fs::create_dir(dir.join("left-by-an-earlier-monitor")).unwrap();
        let mut t = Trash::open(dir.clone());
        let now = Instant::now();
        assert_eq!(t.idle_deadline(now), Some(now + TRASH_IDLE));

        let state = tmp.path().join("c1");
        fs::create_dir_all(state.join("sub")).unwrap();
        fs::write(state.join("sub/f"), b"x").unwrap();
        t.put(&state, "c1");
        t.put(&tmp.path().join("missing"), "missing");
        assert!(!state.exists());
        assert!(dir.join("c1/sub/f").exists());
        assert_eq!(t.entries.len(), 2);

        t.empty_one();
        t.empty_one();
        assert_eq!(t.idle_deadline(now), None);
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 0);
        t.empty_one();
    }
}
