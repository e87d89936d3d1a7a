//! The host-wide `favordynmods` setting, for fast cgroup moves.
//!
//! Moving a process into a cgroup (the `cgroup.procs` write of every
//! container create and exec) takes the kernel's global
//! `cgroup_threadgroup_rwsem` for writing, whose first writer after a quiet
//! moment waits a full RCU grace period (`rcu_sync_enter` ->
//! `synchronize_rcu`): 10-20 ms here, more than all else a create does. The
//! kernel's `favordynmods` mode keeps that lock ready for writers (at the
//! price of a memory barrier in fork and exit), and any cgroup hierarchy
//! mounted with it turns it on for the whole lock. So on hosts that already
//! have cgroup v1 hierarchies (legacy, hybrid), berthd mounts an empty named
//! v1 hierarchy (`name=berth`, no controllers, nothing ever moved into it)
//! with `favordynmods` under `<state>/cgroup-favordynmods` and leaves it
//! mounted: the monitors live on after berthd. It is skipped on pure cgroup
//! v2 hosts, where a v1 line in every /proc/PID/cgroup could confuse
//! programs that detect the layout from it; there, boot with
//! `cgroup_favordynmods=1` or mount cgroup2 with `favordynmods`.

use std::path::{Path, PathBuf};

use berth_mountinfo::Mount;
use nix::mount::MsFlags;

use crate::error::Error;

/// Where the named hierarchy is mounted, under berthd's state dir.
pub const MOUNT_DIR: &str = "cgroup-favordynmods";

/// What [`enable_favordynmods`] found or did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Favordynmods {
    /// A v1 hierarchy has it already (ours from an earlier start, or the host's).
    AlreadyOn,
    /// A pure v2 host: left to the host's boot or cgroup2 mount options.
    PureV2,
    /// The named hierarchy was mounted there.
    Mounted(PathBuf),
}

/// Turns `favordynmods` on for the host (see the module doc), logging the
/// outcome as berthd always did. `state_dir` is berthd's state directory.
pub fn enable_favordynmods(state_dir: &Path) -> Result<Favordynmods, Error> {
    let mounts = berth_mountinfo::read_self().unwrap_or_default();
    let outcome = match needed(&mounts) {
        Some(done) => Ok(done),
        None => mount(&state_dir.join(MOUNT_DIR)),
    };
    match &outcome {
        Ok(Favordynmods::AlreadyOn) => {}
        Ok(Favordynmods::PureV2) => tracing::info!(
            "pure cgroup v2 host: boot with cgroup_favordynmods=1 (or mount cgroup2 with favordynmods) for fast container starts"
        ),
        Ok(Favordynmods::Mounted(path)) => tracing::info!(
            path = %path.display(),
            "cgroup favordynmods on (named v1 hierarchy): fast cgroup moves for container creates and execs"
        ),
        Err(e) => tracing::info!(
            error = %e,
            "cannot turn cgroup favordynmods on: container creates pay an RCU grace period"
        ),
    }
    outcome
}

/// `Some` when there is nothing to mount.
fn needed(mounts: &[Mount]) -> Option<Favordynmods> {
    let v1 = || mounts.iter().filter(|m| m.fstype == "cgroup");
    if v1().any(|m| m.super_options.split(',').any(|o| o == "favordynmods")) {
        return Some(Favordynmods::AlreadyOn);
    }
    if v1().next().is_none() {
        return Some(Favordynmods::PureV2);
    }
    None
}

fn mount(target: &Path) -> Result<Favordynmods, Error> {
    let failed = |source: std::io::Error| Error::Mount {
        dir: target.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(target).map_err(failed)?;
    nix::mount::mount(
        Some("berth"),
        target,
        Some("cgroup"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("none,name=berth,favordynmods"),
    )
    .map_err(|e| failed(e.into()))?;
    Ok(Favordynmods::Mounted(target.to_path_buf()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::tests::{HYBRID, LEGACY, UNIFIED};

    #[test]
    fn what_is_needed_per_layout() {
        let m = berth_mountinfo::parse;
        assert_eq!(needed(&m(UNIFIED)), Some(Favordynmods::PureV2));
        assert_eq!(needed(&m(LEGACY)), None);
        // HYBRID carries berthd's own named hierarchy from an earlier start.
        assert_eq!(needed(&m(HYBRID)), Some(Favordynmods::AlreadyOn));
    }
}
