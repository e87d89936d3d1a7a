//! berthd's state dir as a mount point of its own. Every pod's mounts (its
//! `shm` and `etc`, its namespace pins, its containers' rootfs) lie below
//! it, so a pod's monitor can unmount it in a private copy of the mount
//! namespace and keep only its own pod's: libcontainer's builds then read a
//! mount table that does not grow with the number of pods (the monitor's
//! `mount_view`, docs/scaling.md).
//!
//! Two private binds of the dir onto itself, stacked: the monitor unmounts
//! and mounts again the upper one, whose parent is then the lower (private)
//! one. Were the parent the host's `/` (shared on systemd hosts), the
//! kernel would propagate both to the host. Private also keeps the pods'
//! mounts from being copied into every namespace that is a peer of `/`.

use std::path::{Path, PathBuf};

use nix::mount::{MsFlags, mount};

/// `state` (canonical) once it is the upper of two stacked private binds
/// of itself, made unless there. `None` while mounts of pods from a berthd
/// that ran without them lie below it: a bind would hide them. Their
/// monitors build in the host's namespace, as before; the next start after
/// they are gone makes the binds.
pub fn ensure(state: &Path) -> Option<PathBuf> {
    let state = match std::fs::canonicalize(state) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(state = %state.display(), error = %e, "cannot resolve the state dir: pods' monitors will see every pod's mounts");
            return None;
        }
    };
    let mounts = match berth_mountinfo::read_self() {
        Ok(m) => m,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the mount table: pods' monitors will see every pod's mounts");
            return None;
        }
    };
    let binds = match plan(&mounts, &state) {
        Plan::Ready => return Some(state),
        Plan::Skip { below } => {
            tracing::info!(state = %state.display(), mounts = below, "mounts of earlier pods below the state dir: it becomes a mount point once they are gone (until then pods' monitors see every pod's mounts)");
            return None;
        }
        Plan::Bind(n) => n,
    };
    let private = |what: &str| {
        mount(
            None::<&str>,
            &state,
            None::<&str>,
            MsFlags::MS_PRIVATE,
            None::<&str>,
        )
        .map_err(|e| format!("make {what} private: {e}"))
    };
    let bind = || {
        mount(
            Some(&state),
            &state,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| format!("bind the state dir onto itself: {e}"))
    };
    // What is mounted there already first, then each bind as it is made.
    let made = (|| {
        if binds == 1 {
            private("the mount at the state dir")?;
        }
        for _ in 0..binds {
            bind()?;
            private("the bind")?;
        }
        Ok::<(), String>(())
    })();
    match made {
        Ok(()) => Some(state),
        Err(e) => {
            tracing::warn!(state = %state.display(), error = %e, "pods' monitors will see every pod's mounts");
            None
        }
    }
}

#[derive(Debug, PartialEq)]
enum Plan {
    /// Two mounts at the state dir already (this berthd's, from an earlier start).
    Ready,
    /// This many binds to make (one: a filesystem is mounted there already).
    Bind(usize),
    /// Mounts of earlier pods below it, none at it.
    Skip { below: usize },
}

fn plan(mounts: &[berth_mountinfo::Mount], dir: &Path) -> Plan {
    let at = mounts.iter().filter(|m| m.mount_point == dir).count();
    let below = mounts
        .iter()
        .filter(|m| m.mount_point.starts_with(dir) && m.mount_point != dir)
        .count();
    match (at, below) {
        (2.., _) => Plan::Ready,
        (_, 1..) => Plan::Skip { below },
        (at, 0) => Plan::Bind(2 - at),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(points: &[&str]) -> Vec<berth_mountinfo::Mount> {
        let text: String = points
            .iter()
            .enumerate()
            .map(|(i, p)| format!("{} 1 0:{i} / {p} rw - tmpfs tmpfs rw\n", i + 20))
            .collect();
        berth_mountinfo::parse(&text)
    }

    #[test]
    fn plan_for_the_state_dir() {
        let s = Path::new("/run/berth");
        assert_eq!(plan(&table(&["/", "/run"]), s), Plan::Bind(2));
        assert_eq!(plan(&table(&["/", "/run/berth"]), s), Plan::Bind(1));
        let stacked = ["/", "/run/berth", "/run/berth", "/run/berth/pods/a/shm"];
        assert_eq!(plan(&table(&stacked), s), Plan::Ready);
        assert_eq!(
            plan(
                &table(&[
                    "/",
                    "/run/berth/pods/a/shm",
                    "/run/berth/containers/b/rootfs"
                ]),
                s
            ),
            Plan::Skip { below: 2 }
        );
        // A sibling whose name starts alike is not below.
        assert_eq!(plan(&table(&["/", "/run/berth2/x"]), s), Plan::Bind(2));
    }
}
