//! Image volumes (the CRI's `Mount.image`, `image_sub_path`): an image's
//! shared layer dirs mounted read-only at `<bundle>/image-volumes/<n>` (an
//! overlay without an upper dir; a read-only bind for a one-layer image,
//! since overlayfs wants two lower dirs when it has no upper one), then
//! bound from there, or from the `image_sub_path` inside it, into the
//! container as a read-only bind mount. Nothing is copied. The container's
//! image lease holds the layers of its volume images too, so removing such
//! an image while it is mounted keeps its layers until the container goes.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use berth_api::v1;
use nix::mount::{MntFlags, MsFlags};

use super::ContainerError;
use super::record::{ImageMountRecord, MountRecord};

/// Where the image volumes of a container are mounted on the host.
const DIR: &str = "image-volumes";

/// An image mount of a CreateContainer request, its image found.
pub struct Requested {
    /// Index in `ContainerConfig.mounts`.
    pub index: usize,
    pub image: berth_image::Image,
}

/// The image mounts of `mounts`, checked, their images looked up. Nothing
/// is mounted or leased yet.
pub fn requested(
    images: &berth_image::ImageStore,
    mounts: &[v1::Mount],
) -> Result<Vec<Requested>, ContainerError> {
    let invalid = |m: String| Err(ContainerError::InvalidArgument(m));
    let mut out = vec![];
    for (index, m) in mounts.iter().enumerate() {
        let name = m.image.as_ref().map(|i| i.image.as_str()).unwrap_or("");
        if name.is_empty() {
            if !m.image_sub_path.is_empty() {
                return invalid(format!(
                    "mounts[{index}].image_sub_path is set but mounts[{index}].image is not: a sub path applies to image volumes only"
                ));
            }
            continue;
        }
        if !m.host_path.is_empty() {
            return invalid(format!(
                "mounts[{index}] names both a host_path and an image: an image volume has no host path"
            ));
        }
        if !m.readonly {
            return invalid(format!(
                "mounts[{index}] mounts image {name:?} writable: image volumes are read-only (set readonly)"
            ));
        }
        let image = images
            .get(name)
            .map_err(|e| ContainerError::Internal(anyhow::Error::new(e)))?
            .ok_or_else(|| {
                ContainerError::NotFound(format!(
                    "image {name:?} of the image volume at {:?} is not pulled: pull it before creating the container",
                    m.container_path
                ))
            })?;
        out.push(Requested { index, image });
    }
    Ok(out)
}

/// The host dir the `index`th mount's image is mounted at.
pub fn dir(bundle: &Path, index: usize) -> PathBuf {
    bundle.join(DIR).join(index.to_string())
}

/// Mounts `layers` (lowest first) read-only at `target`. Set-uid bits and
/// device nodes of the image do nothing there; its programs may run (as
/// the CRI's image volume tests expect). In a pod with its own user
/// namespace the layers are idmapped through it (a one-layer image is its
/// idmapped clone; several are stacked from clones staged at
/// `<target>.m/`), so the image's files keep their owners there.
pub fn mount(
    layers: &[PathBuf],
    target: &Path,
    userns: Option<&super::PodUserns>,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(target)
        .with_context(|| format!("cannot create {}", target.display()))?;
    if layers.is_empty() {
        bail!("the image has no layers");
    }
    let Some(userns) = userns else {
        return mount_layers(layers, target);
    };
    let ns = super::idmap::open_userns(&userns.pin)?;
    if let [only] = layers {
        return super::idmap::bind(only, target, &ns, true);
    }
    let staging = target.with_extension("m");
    let mounted = super::idmap::with_idmapped_layers(layers, &staging, &ns, |staged| {
        mount_layers(staged, target)
    });
    // Empty dirs now (never a recursive removal: a clone that failed to
    // detach is a layer).
    for i in 0..layers.len() {
        let _ = std::fs::remove_dir(staging.join(i.to_string()));
    }
    let _ = std::fs::remove_dir(&staging);
    mounted
}

fn mount_layers(layers: &[PathBuf], target: &Path) -> anyhow::Result<()> {
    let ro = MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    match layers {
        [] => bail!("the image has no layers"),
        [only] => {
            nix::mount::mount(
                Some(only.as_path()),
                target,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .with_context(|| format!("cannot bind {} at {}", only.display(), target.display()))?;
            // A bind takes its flags from a remount.
            if let Err(e) = nix::mount::mount(
                None::<&str>,
                target,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REMOUNT | ro,
                None::<&str>,
            ) {
                let _ = nix::mount::umount2(target, MntFlags::MNT_DETACH);
                return Err(e).with_context(|| {
                    format!("cannot make the bind at {} read-only", target.display())
                });
            }
            Ok(())
        }
        _ => {
            let data = super::rootfs::overlay_options(layers, "")?;
            nix::mount::mount(
                Some("overlay"),
                target,
                Some("overlay"),
                ro,
                Some(data.as_str()),
            )
            .with_context(|| format!("cannot mount the image overlay at {}", target.display()))
        }
    }
}

/// What the container binds: the mounted image, or `sub_path` inside it
/// (resolved as in the image: its symlinks and `..` stay inside).
pub fn bind_source(target: &Path, sub_path: &str, image: &str) -> Result<PathBuf, ContainerError> {
    if sub_path.is_empty() {
        return Ok(target.to_path_buf());
    }
    match berth_spec::in_root::resolve(target, sub_path) {
        Ok(Some(p)) => Ok(p),
        Ok(None) => Err(ContainerError::InvalidArgument(format!(
            "image_sub_path {sub_path:?} does not exist in image {image:?}"
        ))),
        Err(e) => Err(ContainerError::InvalidArgument(format!(
            "image_sub_path {sub_path:?} of image {image:?}: {e}"
        ))),
    }
}

/// The mount the OCI spec is built from: a read-only bind of `source`.
pub fn as_bind(m: &v1::Mount, source: &Path) -> v1::Mount {
    v1::Mount {
        host_path: source.display().to_string(),
        readonly: true,
        image: None,
        image_sub_path: String::new(),
        // The kubelet's mappings were applied to the image's layers
        // (`mount`); the mounted image itself is bound as it is.
        uid_mappings: Vec::new(),
        gid_mappings: Vec::new(),
        ..m.clone()
    }
}

/// What ContainerStatus reports for it: the mount as given, with the id
/// its image resolved to.
pub fn record(m: &v1::Mount, image: &berth_image::Image) -> MountRecord {
    let spec = m.image.clone().unwrap_or_default();
    MountRecord {
        image: Some(ImageMountRecord {
            image: spec.image,
            user_specified_image: spec.user_specified_image,
            image_ref: image.id.clone(),
            sub_path: m.image_sub_path.clone(),
        }),
        ..MountRecord::from(m)
    }
}

/// Unmounts every image volume of the container whose bundle is `bundle`
/// (none, or a bundle already gone, is success). Detached: a process of a
/// dying container may still hold one; nothing is written through them.
pub fn unmount_all(bundle: &Path) -> anyhow::Result<()> {
    let dir = bundle.join(DIR);
    // Idmapped layer clones a crash left staged (`<i>.m/<j>`) first.
    if let Ok(entries) = std::fs::read_dir(&dir) {
        for e in entries.flatten() {
            if e.path().extension().is_some_and(|x| x == "m") {
                super::rootfs::unmount_entries(&e.path())?;
            }
        }
    }
    super::rootfs::unmount_entries(&dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image_mount(readonly: bool) -> v1::Mount {
        v1::Mount {
            container_path: "/data".into(),
            readonly,
            image: Some(v1::ImageSpec {
                image: "sha256:abc".into(),
                user_specified_image: "data:1".into(),
                ..Default::default()
            }),
            image_sub_path: "etc".into(),
            ..Default::default()
        }
    }

    #[test]
    fn the_spec_sees_a_read_only_bind_of_the_source() {
        let m = as_bind(&image_mount(true), Path::new("/run/b/image-volumes/0/etc"));
        assert_eq!(m.host_path, "/run/b/image-volumes/0/etc");
        assert!(m.readonly && m.image.is_none() && m.image_sub_path.is_empty());
        assert_eq!(m.container_path, "/data");
    }

    /// Mounts one- and two-layer images read-only, binds a sub path, and
    /// unmounts them all. Needs root (mount).
    #[test]
    fn mounts_read_only_and_resolves_sub_paths() {
        let d = tempfile::tempdir().unwrap();
        let (l1, l2) = (d.path().join("l1"), d.path().join("l2"));
        std::fs::create_dir_all(l1.join("etc")).unwrap();
        std::fs::write(l1.join("etc/passwd"), "root\n").unwrap();
        std::fs::create_dir_all(l2.join("bin")).unwrap();
        std::fs::write(l2.join("bin/tool"), "x").unwrap();
        std::os::unix::fs::symlink("../../../..", l2.join("bin/up")).unwrap();
        let bundle = d.path().join("bundle");
        for (i, layers) in [vec![l1.clone()], vec![l1.clone(), l2.clone()]]
            .iter()
            .enumerate()
        {
            let t = dir(&bundle, i);
            mount(layers, &t, None).unwrap();
            assert_eq!(
                std::fs::read_to_string(t.join("etc/passwd")).unwrap(),
                "root\n"
            );
            let err = std::fs::write(t.join("new"), "x").unwrap_err();
            assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");
            let src = bind_source(&t, "/etc", "img").unwrap();
            assert!(src.ends_with("etc") && src.join("passwd").is_file());
            assert!(matches!(
                bind_source(&t, "not-existing", "img"),
                Err(ContainerError::InvalidArgument(_))
            ));
        }
        // A symlink climbing out lands at the image's root.
        let t = dir(&bundle, 1);
        let up = bind_source(&t, "bin/up", "img").unwrap();
        assert_eq!(up, std::fs::canonicalize(&t).unwrap());
        unmount_all(&bundle).unwrap();
        assert!(!dir(&bundle, 0).join("etc").exists());
        assert!(!dir(&bundle, 1).join("bin").exists());
        unmount_all(&bundle).unwrap();
        unmount_all(&d.path().join("no-bundle")).unwrap();
    }
}
