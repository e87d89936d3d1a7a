//! Pausing a cgroup's tasks with the freezer (v1 `freezer.state`, v2
//! `cgroup.freeze`): a pod checkpoint pauses every container before CRIU
//! captures any, so the pod is cut at one moment. Handwritten: libcgroups'
//! freezer is reachable only through its managers, which berthd does not
//! build for a container it did not create in-process.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::cgroup::{Cgroup, Dirs};
use crate::error::Error;

/// How often a freeze in progress is checked.
const POLL: Duration = Duration::from_millis(5);

impl Cgroup {
    /// The directory CRIU's `--freeze-cgroup` takes: the freezer
    /// hierarchy's (v1), the cgroup's own (v2). `None` where v1 has no
    /// freezer mounted.
    pub fn freezer_dir(&self) -> Option<&Path> {
        self.dir("freezer")
    }

    /// Freezes the cgroup's tasks and waits until they all are, at most
    /// `timeout`; a freeze that does not complete in time is undone.
    pub fn freeze(&self, timeout: Duration) -> Result<(), Error> {
        let (control, frozen) = self.freezer_files()?;
        write(&control, if self.is_v1() { "FROZEN" } else { "1" })?;
        let deadline = Instant::now() + timeout;
        loop {
            if frozen_now(&frozen, self.is_v1())? {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let _ = self.thaw();
                return Err(Error::Freeze {
                    dir: control,
                    message: format!("its tasks were not all frozen within {timeout:?}"),
                });
            }
            std::thread::sleep(POLL);
        }
    }

    /// Lets the cgroup's tasks run again (a thawed cgroup stays thawed).
    pub fn thaw(&self) -> Result<(), Error> {
        let (control, _) = self.freezer_files()?;
        write(&control, if self.is_v1() { "THAWED" } else { "0" })
    }

    fn is_v1(&self) -> bool {
        matches!(self.dirs, Dirs::V1(_))
    }

    /// The file written to freeze, and the one saying whether it is done.
    fn freezer_files(&self) -> Result<(PathBuf, PathBuf), Error> {
        match &self.dirs {
            Dirs::V1(_) => {
                let dir = self.dir("freezer").ok_or_else(|| Error::Freeze {
                    dir: self.rel.clone(),
                    message: "no v1 freezer hierarchy is mounted".to_string(),
                })?;
                Ok((dir.join("freezer.state"), dir.join("freezer.state")))
            }
            Dirs::V2 { dir, .. } => Ok((dir.join("cgroup.freeze"), dir.join("cgroup.events"))),
        }
    }
}

/// Thaws the cgroup whose freezer directory ([`Cgroup::freezer_dir`]) is
/// `dir`, knowing nothing else of it: what a restarted berthd does for a
/// pod checkpoint a crash interrupted. v1 has `freezer.state`, v2
/// `cgroup.freeze`. Whether it was frozen (or freezing); a cgroup that is
/// gone is an error.
pub fn thaw_dir(dir: &Path) -> Result<bool, Error> {
    let read = |file: &Path| {
        std::fs::read_to_string(file).map_err(|e| Error::Freeze {
            dir: file.to_path_buf(),
            message: e.to_string(),
        })
    };
    let v1 = dir.join("freezer.state");
    let (file, thawed) = if v1.exists() {
        (v1, "THAWED")
    } else {
        (dir.join("cgroup.freeze"), "0")
    };
    if read(&file)?.trim() == thawed {
        return Ok(false);
    }
    write(&file, thawed).map(|()| true)
}

fn write(file: &Path, value: &str) -> Result<(), Error> {
    std::fs::write(file, value).map_err(|e| Error::Freeze {
        dir: file.to_path_buf(),
        message: e.to_string(),
    })
}

/// v1: `freezer.state` reads `FROZEN` (not `FREEZING`); v2: `cgroup.events`
/// has `frozen 1`.
fn frozen_now(file: &Path, v1: bool) -> Result<bool, Error> {
    let text = std::fs::read_to_string(file).map_err(|e| Error::Freeze {
        dir: file.to_path_buf(),
        message: e.to_string(),
    })?;
    Ok(if v1 {
        text.trim() == "FROZEN"
    } else {
        text.lines().any(|l| l.trim() == "frozen 1")
    })
}

#[cfg(test)]
mod tests {
    use crate::cgroup::tests::fake_v1;
    use crate::{Cgroup, Error};
    use std::time::Duration;

    #[test]
    fn v1_freezes_and_thaws_through_freezer_state() {
        let d = tempfile::tempdir().unwrap();
        let l = fake_v1(d.path(), &["freezer"]);
        let c = Cgroup::of(&l, "/berth/c1").unwrap();
        let dir = d.path().join("freezer/berth/c1");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("freezer.state"), "THAWED\n").unwrap();
        assert_eq!(c.freezer_dir(), Some(dir.as_path()));
        // A plain file reads back what was written: FROZEN at once.
        c.freeze(Duration::from_millis(50)).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.join("freezer.state")).unwrap(),
            "FROZEN"
        );
        c.thaw().unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.join("freezer.state")).unwrap(),
            "THAWED"
        );
    }

    #[test]
    fn v1_without_a_freezer_hierarchy_is_an_error() {
        let d = tempfile::tempdir().unwrap();
        let l = fake_v1(d.path(), &["memory"]);
        let c = Cgroup::of(&l, "/berth/c1").unwrap();
        assert_eq!(c.freezer_dir(), None);
        assert!(matches!(
            c.freeze(Duration::from_millis(10)),
            Err(Error::Freeze { .. })
        ));
    }

    #[test]
    fn a_freezer_dir_alone_is_thawed_v1_and_v2() {
        let d = tempfile::tempdir().unwrap();
        let (v1, v2) = (d.path().join("v1"), d.path().join("v2"));
        std::fs::create_dir_all(&v1).unwrap();
        std::fs::create_dir_all(&v2).unwrap();
        std::fs::write(v1.join("freezer.state"), "FROZEN\n").unwrap();
        std::fs::write(v2.join("cgroup.freeze"), "1\n").unwrap();
        assert!(crate::thaw_dir(&v1).unwrap());
        assert!(crate::thaw_dir(&v2).unwrap());
        assert_eq!(
            std::fs::read_to_string(v1.join("freezer.state")).unwrap(),
            "THAWED"
        );
        assert_eq!(
            std::fs::read_to_string(v2.join("cgroup.freeze")).unwrap(),
            "0"
        );
        // Thawed already: nothing to do.
        assert!(!crate::thaw_dir(&v1).unwrap());
        assert!(!crate::thaw_dir(&v2).unwrap());
        // A cgroup that is gone.
        assert!(crate::thaw_dir(&d.path().join("gone")).is_err());
    }

    #[test]
    fn a_freeze_that_never_completes_times_out_and_is_undone() {
        let d = tempfile::tempdir().unwrap();
        let l = crate::Layout::V2 {
            root: d.path().to_path_buf(),
        };
        let c = Cgroup::of(&l, "/berth/c1").unwrap();
        let dir = d.path().join("berth/c1");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("cgroup.events"), "populated 1\nfrozen 0\n").unwrap();
        let err = c.freeze(Duration::from_millis(30)).unwrap_err();
        assert!(err.to_string().contains("not all frozen"), "{err}");
        assert_eq!(
            std::fs::read_to_string(dir.join("cgroup.freeze")).unwrap(),
            "0"
        );
    }
}
