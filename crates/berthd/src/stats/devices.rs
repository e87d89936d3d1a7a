//! Names for the `device` label of the fs and blkio metrics, as cAdvisor
//! gives them ("/dev/vda"), looked up once per device number.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

#[derive(Default)]
pub struct DeviceNames {
    /// `(major, minor)` → name. Device numbers are few; an anonymous one
    /// (major 0) reused by a later mount keeps its first name, which only
    /// mislabels.
    names: Mutex<HashMap<(u64, u64), String>>,
}

impl DeviceNames {
    /// A block device's name (`/sys/dev/block/MAJ:MIN` links to its sysfs
    /// directory, named as in /dev), else "MAJ:MIN".
    pub fn block(&self, major: u64, minor: u64) -> String {
        self.get_or(major, minor, || None)
    }

    /// The name of the filesystem `dev` (an `st_dev`) mounted at
    /// `mountpoint`: its block device's, else (overlay, tmpfs, ...) the
    /// mount's source.
    pub fn filesystem(&self, dev: u64, mountpoint: &Path) -> String {
        let (major, minor) = (
            nix::sys::stat::major(dev as nix::libc::dev_t),
            nix::sys::stat::minor(dev as nix::libc::dev_t),
        );
        self.get_or(major, minor, || {
            berth_mountinfo::read_self()
                .ok()?
                .into_iter()
                .rev()
                .find(|m| m.mount_point == mountpoint)
                .map(|m| m.source)
        })
    }

    fn get_or(&self, major: u64, minor: u64, other: impl FnOnce() -> Option<String>) -> String {
        let lock = || self.names.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = lock().get(&(major, minor)) {
            return n.clone();
        }
        let name = block_name(Path::new("/sys/dev/block"), major, minor)
            .or_else(other)
            .unwrap_or_else(|| format!("{major}:{minor}"));
        lock().insert((major, minor), name.clone());
        name
    }
}

/// `/dev/<name>` of block device `major:minor`, from the link under
/// `sys_dev_block` (`254:0 -> ../../devices/.../block/vda`).
fn block_name(sys_dev_block: &Path, major: u64, minor: u64) -> Option<String> {
    let link = std::fs::read_link(sys_dev_block.join(format!("{major}:{minor}"))).ok()?;
    Some(format!("/dev/{}", link.file_name()?.to_str()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_names_from_sysfs_links() {
        let d = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(
            "../../devices/pci0000:00/virtio1/block/vda/vda1",
            d.path().join("254:1"),
        )
        .unwrap();
        assert_eq!(block_name(d.path(), 254, 1).as_deref(), Some("/dev/vda1"));
        assert_eq!(block_name(d.path(), 8, 0), None);
    }

    #[test]
    fn names_fall_back_and_are_kept() {
        let n = DeviceNames::default();
        // No block device 0:4242 (anonymous devices have no sysfs link).
        assert_eq!(n.block(0, 4242), "0:4242");
        assert_eq!(n.get_or(0, 4243, || Some("overlay".into())), "overlay");
        // Kept: the fallback is not asked again.
        assert_eq!(n.get_or(0, 4243, || Some("other".into())), "overlay");
        // The filesystem of / has a name, whatever it is.
        let root_dev = std::os::unix::fs::MetadataExt::dev(&std::fs::metadata("/").unwrap());
        assert!(!n.filesystem(root_dev, Path::new("/")).is_empty());
    }
}
