//! Idmapped mounts for the containers of a `hostUsers: false` pod: a file
//! owned by host ID N appears owned by N + the pod's host offset, so that
//! inside the pod's user namespace it reads as N again. Image layers are
//! mapped (never copied or chowned per pod) and stacked as the overlay's
//! lower dirs; volumes are mapped at a staging path under the bundle that
//! the container binds.
//!
//! Written on the raw syscalls (`open_tree`, `mount_setattr`, `move_mount`):
//! nix has no `mount_setattr`, and libcontainer 0.7 refuses idmapped mounts
//! in a spec (`MountIdmapUnsupported`).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use anyhow::Context;

/// The pod's user namespace, opened from its pin.
pub fn open_userns(pin: &Path) -> anyhow::Result<std::fs::File> {
    std::fs::File::open(pin)
        .with_context(|| format!("cannot open the pod's user namespace {}", pin.display()))
}

/// Mounts a clone of `src` (recursively: what is mounted below it too),
/// idmapped through `userns`, at `dst` (an existing dir, or file for a file
/// `src`).
///
/// `readonly`: read-only (and nosuid, nodev) in the same call, before any
/// container's mount namespace copies it: the kernel then locks the flag,
/// so a pod's root with CAP_SYS_ADMIN in its own user namespace cannot
/// remount it read-write.
///
/// Propagation is left as the clone has it: a clone of a shared mount is a
/// peer of it, so a `HostToContainer` or `Bidirectional` volume (which the
/// spec binds rslave/rshared from the clone) receives what the host mounts
/// below the source later (e2e `userns.rs`).
pub fn bind(src: &Path, dst: &Path, userns: &std::fs::File, readonly: bool) -> anyhow::Result<()> {
    let tree = open_tree(src)?;
    let ro = if readonly {
        libc::MOUNT_ATTR_RDONLY | libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NODEV
    } else {
        0
    };
    let mut attr = libc::mount_attr {
        attr_set: libc::MOUNT_ATTR_IDMAP | ro,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.as_raw_fd() as u64,
    };
    // SAFETY: a valid fd, an empty C string and a mount_attr of the size
    // passed; the kernel only reads `attr`.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH | libc::AT_RECURSIVE,
            &mut attr as *mut libc::mount_attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| {
            format!(
                "cannot idmap a mount of {} (does its filesystem support idmapped mounts?)",
                src.display()
            )
        });
    }
    let to = path_cstr(dst)?;
    // SAFETY: a valid detached-tree fd and NUL-terminated paths.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| {
            format!(
                "cannot attach the idmapped {} at {}",
                src.display(),
                dst.display()
            )
        });
    }
    Ok(())
}

/// A detached recursive clone of the mount tree at `src`.
fn open_tree(src: &Path) -> anyhow::Result<OwnedFd> {
    let from = path_cstr(src)?;
    // SAFETY: a NUL-terminated path; the returned fd is owned below.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::OPEN_TREE_CLONE | libc::OPEN_TREE_CLOEXEC | libc::AT_RECURSIVE as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("cannot clone the mount of {}", src.display()));
    }
    // SAFETY: open_tree returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn path_cstr(p: &Path) -> anyhow::Result<std::ffi::CString> {
    use std::os::unix::ffi::OsStrExt;
    std::ffi::CString::new(p.as_os_str().as_bytes())
        .with_context(|| format!("path {} holds a NUL byte", p.display()))
}

/// Runs `stack` (which mounts an overlay) over read-only idmapped clones
/// of `layers`, staged at `dir/<i>` and detached after it returns:
/// overlayfs keeps its own private clones of its lower dirs, so the shared
/// layer dirs are never copied or chowned per pod. The kernel refuses to
/// idmap an overlay mount itself, not its lower dirs.
pub fn with_idmapped_layers<T>(
    layers: &[PathBuf],
    dir: &Path,
    userns: &std::fs::File,
    stack: impl FnOnce(&[PathBuf]) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let staged: Vec<PathBuf> = (0..layers.len()).map(|i| dir.join(i.to_string())).collect();
    let stacked = (|| {
        for (layer, at) in layers.iter().zip(&staged) {
            std::fs::create_dir_all(at)
                .with_context(|| format!("cannot create {}", at.display()))?;
            bind(layer, at, userns, true)?;
        }
        stack(&staged)
    })();
    for at in &staged {
        let _ = nix::mount::umount2(at, nix::mount::MntFlags::MNT_DETACH);
    }
    stacked
}

/// Whether a CRI mount asks for an idmapping.
pub fn asks_idmap(m: &berth_api::v1::Mount) -> bool {
    !m.uid_mappings.is_empty() || !m.gid_mappings.is_empty()
}

/// Where the container's idmapped volumes are staged, under its bundle.
const DIR: &str = "idmapped";

/// Stages the CRI mounts that ask for an idmapping (the kubelet asks for
/// every volume of a `hostUsers: false` pod, with the pod's maps): each
/// source is mapped at `bundle/idmapped/<index>`, and the mount becomes a
/// plain bind of that (libcontainer binds it as it is). A mapping other
/// than the pod's, or on a pod without a user namespace, is refused.
pub fn stage_volumes(
    mounts: &mut [berth_api::v1::Mount],
    bundle: &Path,
    userns: Option<&super::PodUserns>,
) -> Result<(), super::ContainerError> {
    use super::ContainerError::InvalidArgument;
    let mut ns = None;
    for (i, m) in mounts.iter_mut().enumerate() {
        if !asks_idmap(m) {
            continue;
        }
        let field = format!("mounts[{i}] ({})", m.container_path);
        let Some(userns) = userns else {
            return Err(InvalidArgument(format!(
                "{field}: uid/gid mappings need a pod with its own user namespace (hostUsers: false)"
            )));
        };
        let is_pods = |maps: &[berth_api::v1::IdMapping], r: berth_spec::userns::IdRange| matches!(maps, [m] if m.container_id == 0 && m.host_id == r.host_id && m.length == r.length);
        if !is_pods(&m.uid_mappings, userns.maps.uid) || !is_pods(&m.gid_mappings, userns.maps.gid)
        {
            return Err(InvalidArgument(format!(
                "{field}: only the pod's own uid and gid mappings can idmap a mount"
            )));
        }
        let source = Path::new(&m.host_path);
        // A missing source is made a directory, as for a plain bind
        // (`berth_spec::mounts`; the kubelet relies on it for hostPath
        // volumes without a type).
        let meta = std::fs::metadata(source)
            .or_else(|e| match e.kind() {
                std::io::ErrorKind::NotFound => std::fs::DirBuilder::new()
                    .recursive(true)
                    .create(source)
                    .and_then(|()| std::fs::metadata(source)),
                _ => Err(e),
            })
            .map_err(|e| {
                InvalidArgument(format!("{field}: host path {}: {e}", source.display()))
            })?;
        let at = bundle.join(DIR).join(i.to_string());
        let made = (|| {
            std::fs::create_dir_all(bundle.join(DIR))?;
            if meta.is_dir() {
                std::fs::create_dir(&at)
            } else {
                std::fs::File::create(&at).map(drop)
            }
        })();
        made.map_err(|e| super::internal(anyhow::anyhow!("cannot create {}: {e}", at.display())))?;
        if ns.is_none() {
            ns = Some(open_userns(&userns.pin).map_err(super::internal)?);
        }
        let ns = ns.as_ref().expect("opened above");
        bind(source, &at, ns, m.readonly)
            .map_err(|e| InvalidArgument(format!("{field}: {e:#}")))?;
        m.host_path = at.display().to_string();
        m.uid_mappings.clear();
        m.gid_mappings.clear();
    }
    Ok(())
}

/// Unmounts the container's staged idmapped volumes (none, or a bundle
/// already gone, is success). Detached: a dying container may hold one.
pub fn unmount_all(bundle: &Path) -> anyhow::Result<()> {
    super::rootfs::unmount_entries(&bundle.join(DIR))
}
