//! CreateContainer from a checkpoint archive (CRI-O's convention: the
//! request's `image.image` is the absolute path of an archive written by
//! CheckpointContainer). The archive is unpacked into the new container's
//! dir with the image layers' hostile-tar code (nothing lands outside it),
//! its `config.dump` names the image the rootfs is built from (it must be
//! in the store), the container is created as any from the request (the
//! new pod's namespaces, mounts and log), its `rootfs-diff.tar` unpacked
//! into the overlay's upper dir before the mount and its `deleted.files`
//! removed through the mounted rootfs (resolved in it). The monitor is told
//! to restore it (`RestoreFrom`) on StartContainer: CRIU, not a fresh start.

use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::{Component, Path, PathBuf};

use anyhow::Context;
use berth_image::digest::{Digest, Hasher};
use berth_image::unpack::{Compression, UnpackLimits, unpack_layer};
use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::Mode;

use super::ContainerError;
use super::checkpoint::IMAGES_DIR;
use super::checkpoint_archive::{CONFIG_DUMP, DELETED_FILES, ROOTFS_DIFF, SPEC_DUMP};

/// The unpacked archive inside the container's layer dir.
pub const RESTORE_DIR: &str = "checkpoint";
/// Largest `config.dump`/`deleted.files` read.
const MAX_JSON: u64 = 16 << 20;

/// The archive path of a CreateContainer's `image.image`, when it names
/// one: an absolute path (an image reference never starts with `/`).
pub fn archive_of(image: &str) -> Option<&Path> {
    image.starts_with('/').then(|| Path::new(image))
}

/// What the archive says about the container it holds.
#[derive(Debug, Clone)]
pub struct Staged {
    /// Where it was unpacked.
    pub dir: PathBuf,
    /// The image the rootfs is built from: `rootfsImageRef` (an image id),
    /// else `rootfsImageName`.
    pub image_ref: String,
    pub image_name: String,
}

fn invalid(archive: &Path, why: impl std::fmt::Display) -> ContainerError {
    ContainerError::InvalidArgument(format!(
        "{} is not a usable checkpoint archive: {why}",
        archive.display()
    ))
}

/// Unpacks the archive at `archive` into `dir` (created; the caller removes
/// it on failure) and checks its layout. Blocking.
pub fn stage(archive: &Path, dir: &Path) -> Result<Staged, ContainerError> {
    let meta = std::fs::metadata(archive).map_err(|e| invalid(archive, e))?;
    if !meta.is_file() {
        return Err(invalid(archive, "not a regular file"));
    }
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create {}", dir.display()))
        .map_err(super::internal)?;
    unpack_tar(archive, dir).map_err(|e| invalid(archive, format!("{e:#}")))?;
    for name in [CONFIG_DUMP, SPEC_DUMP] {
        let m = std::fs::symlink_metadata(dir.join(name));
        if !m.is_ok_and(|m| m.is_file()) {
            return Err(invalid(archive, format!("it has no {name}")));
        }
    }
    let images = std::fs::symlink_metadata(dir.join(IMAGES_DIR));
    if !images.is_ok_and(|m| m.is_dir()) {
        return Err(invalid(
            archive,
            format!("it has no {IMAGES_DIR}/ (CRIU images)"),
        ));
    }
    let config: serde_json::Value = read_json(&dir.join(CONFIG_DUMP))
        .map_err(|e| invalid(archive, format!("{CONFIG_DUMP}: {e:#}")))?;
    let field = |k: &str| {
        config
            .get(k)
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string()
    };
    let (image_ref, image_name) = (field("rootfsImageRef"), field("rootfsImageName"));
    if image_ref.is_empty() && image_name.is_empty() {
        return Err(invalid(
            archive,
            format!("{CONFIG_DUMP} names no image (rootfsImageRef, rootfsImageName)"),
        ));
    }
    Ok(Staged {
        dir: dir.to_path_buf(),
        image_ref,
        image_name,
    })
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> anyhow::Result<T> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(MAX_JSON)
        .read_to_end(&mut bytes)?;
    Ok(serde_json::from_slice(&bytes)?)
}

/// Extracts the (uncompressed) tar at `tar` into the empty dir `dest` with
/// the layer unpacker: every path resolved beneath `dest`, no symlink or
/// hardlink escape. Its digest is computed first (the unpacker verifies
/// one).
fn unpack_tar(tar: &Path, dest: &Path) -> anyhow::Result<()> {
    let mut hasher = Hasher::new();
    let mut f =
        std::fs::File::open(tar).with_context(|| format!("cannot open {}", tar.display()))?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    let digest: Digest = hasher.digest();
    let f = std::fs::File::open(tar)?;
    unpack_layer(
        f,
        Compression::None,
        &digest,
        &digest,
        dest,
        &UnpackLimits::default(),
    )?;
    Ok(())
}

/// The container's changes from the archive into its (still empty, not yet
/// mounted) upper dir. Blocking.
pub fn apply_diff(staged: &Path, upper: &Path) -> anyhow::Result<()> {
    let diff = staged.join(ROOTFS_DIFF);
    if !diff.is_file() {
        return Ok(());
    }
    std::fs::create_dir_all(upper).with_context(|| format!("cannot create {}", upper.display()))?;
    unpack_tar(&diff, upper).with_context(|| format!("cannot apply {ROOTFS_DIFF}"))
}

/// Removes the files `deleted.files` lists through the mounted `rootfs`
/// (overlayfs turns each into a whiteout), each resolved in it. Blocking.
pub fn remove_deleted(staged: &Path, rootfs: &Path) -> anyhow::Result<()> {
    let list = staged.join(DELETED_FILES);
    if !list.is_file() {
        return Ok(());
    }
    let deleted: Vec<String> = read_json(&list).context("deleted.files")?;
    let root: OwnedFd = nix::fcntl::open(
        rootfs,
        OFlag::O_DIRECTORY | OFlag::O_PATH | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .with_context(|| format!("cannot open {}", rootfs.display()))?;
    for path in deleted {
        let Some((parent, name)) = split(&path) else {
            tracing::warn!(path, "deleted.files: not a removable path, skipped");
            continue;
        };
        let how = OpenHow::new()
            .flags(OFlag::O_DIRECTORY | OFlag::O_PATH | OFlag::O_CLOEXEC)
            .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
        let dir = match nix::fcntl::openat2(&root, &parent, how) {
            Ok(d) => d,
            Err(Errno::ENOENT) => continue,
            Err(e) => return Err(e).with_context(|| format!("cannot open the dir of {path}")),
        };
        let r = nix::unistd::unlinkat(&dir, &name, nix::unistd::UnlinkatFlags::NoRemoveDir);
        let r = match r {
            Err(Errno::EISDIR) => {
                nix::unistd::unlinkat(&dir, &name, nix::unistd::UnlinkatFlags::RemoveDir)
            }
            r => r,
        };
        match r {
            Ok(()) | Err(Errno::ENOENT) => {}
            Err(e) => return Err(e).with_context(|| format!("cannot remove {path}")),
        }
    }
    Ok(())
}

/// `path` (relative to the rootfs) as its parent (`.` at the top) and a
/// plain last component; `None` for `..`, `.`, empty or the root.
fn split(path: &str) -> Option<(PathBuf, PathBuf)> {
    let p = Path::new(path);
    if p.components()
        .any(|c| matches!(c, Component::ParentDir | Component::Prefix(_)))
    {
        return None;
    }
    let name = match p.components().next_back()? {
        Component::Normal(n) => PathBuf::from(n),
        _ => return None,
    };
    let parent: PathBuf = p
        .parent()
        .map(|q| {
            q.components()
                .filter(|c| matches!(c, Component::Normal(_)))
                .collect()
        })
        .unwrap_or_default();
    let parent = if parent.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        parent
    };
    Some((parent, name))
}

/// The criu binary berthd's config names, absolute (the monitor runs with
/// its own PATH): a bare name is looked up on berthd's PATH.
pub fn criu_path(configured: &Path) -> Result<PathBuf, ContainerError> {
    if configured.is_absolute() {
        return Ok(configured.to_path_buf());
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(configured))
        .find(|c| c.is_file())
        .ok_or_else(|| {
            ContainerError::FailedPrecondition(format!(
                "criu ({}) not found on PATH: install CRIU 4 or later (hack/install-criu.sh builds one) \
                 and set [checkpoint] criu_path in berthd's config",
                configured.display()
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archives_are_absolute_paths() {
        assert_eq!(archive_of("/x/c.tar"), Some(Path::new("/x/c.tar")));
        assert_eq!(archive_of("busybox:latest"), None);
        assert_eq!(archive_of("docker.io/library/busybox"), None);
    }

    #[test]
    fn deleted_paths_split_safely() {
        assert_eq!(
            split("etc/group"),
            Some((PathBuf::from("etc"), PathBuf::from("group")))
        );
        assert_eq!(
            split("/top"),
            Some((PathBuf::from("."), PathBuf::from("top")))
        );
        assert_eq!(split("../etc/passwd"), None);
        assert_eq!(split("etc/.."), None);
        assert_eq!(split(""), None);
        assert_eq!(split("/"), None);
    }

    #[test]
    fn a_hostile_archive_is_refused_and_nothing_escapes() {
        let t = tempfile::tempdir().unwrap();
        let archive = t.path().join("evil.tar");
        {
            let mut b = tar::Builder::new(std::fs::File::create(&archive).unwrap());
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_size(0);
            h.set_mode(0o777);
            b.append_link(&mut h, "escape", t.path()).unwrap();
            let data = b"pwned";
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            b.append_data(&mut h, "escape/pwned", &data[..]).unwrap();
            b.finish().unwrap();
        }
        let dir = t.path().join("staged");
        let e = stage(&archive, &dir).unwrap_err();
        assert!(matches!(e, ContainerError::InvalidArgument(_)), "{e:?}");
        assert!(!t.path().join("pwned").exists());
        // Missing files are named.
        let empty = t.path().join("empty.tar");
        tar::Builder::new(std::fs::File::create(&empty).unwrap())
            .into_inner()
            .unwrap();
        let e = stage(&empty, &t.path().join("staged2")).unwrap_err();
        assert!(e.to_string().contains("config.dump"), "{e}");
        // A dir is not an archive.
        let e = stage(t.path(), &t.path().join("staged3")).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
    }
}
