//! Devices: the CRI's `devices` and the host's /dev for privileged
//! containers, with their device cgroup rules.
//!
//! Follows containerd's `WithDevices` (internal/cri/opts) over
//! `oci.WithDevices`/`getDevices`/`DeviceFromPath` (pkg/oci/utils_unix.go),
//! and `WithHostDevices` + `WithAllDevicesAllowed` for privileged.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use berth_api::v1;
use oci_spec::runtime::{LinuxDevice, LinuxDeviceCgroup, LinuxDeviceType};

use crate::error::{Result, SpecError};

/// The container's device nodes and device cgroup rules.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Devices {
    pub devices: Vec<LinuxDevice>,
    pub rules: Vec<LinuxDeviceCgroup>,
}

fn rule(
    allow: bool,
    typ: Option<LinuxDeviceType>,
    major: Option<i64>,
    minor: Option<i64>,
    access: &str,
) -> LinuxDeviceCgroup {
    let mut r = LinuxDeviceCgroup::default();
    r.set_allow(allow)
        .set_typ(typ)
        .set_major(major)
        .set_minor(minor)
        .set_access(Some(access.to_string()));
    r
}

/// Builds the device list: deny everything (containerd's default spec; the
/// runtime adds its standard /dev/null, /dev/zero, ... rules), allow each CRI
/// device with its permissions; privileged: every host device and a single
/// allow-all rule.
pub fn build(config: &v1::ContainerConfig, privileged: bool, dev_dir: &Path) -> Result<Devices> {
    let mut out = Devices {
        devices: Vec::new(),
        rules: vec![rule(false, None, None, None, "rwm")],
    };
    for (i, d) in config.devices.iter().enumerate() {
        let field = format!("devices[{i}]");
        let access = permissions(&d.permissions, &format!("{field}.permissions"))?;
        if d.host_path.is_empty() {
            return Err(SpecError::invalid(format!("{field}.host_path"), "empty"));
        }
        if !d.container_path.is_empty() && !d.container_path.starts_with('/') {
            return Err(SpecError::invalid(
                format!("{field}.container_path"),
                format!("{:?} is not an absolute path", d.container_path),
            ));
        }
        let host_field = format!("{field}.host_path");
        let path = std::fs::canonicalize(&d.host_path)
            .map_err(|e| SpecError::io(&host_field, &d.host_path, e))?;
        let container_path = if d.container_path.is_empty() {
            None
        } else {
            Some(PathBuf::from(&d.container_path))
        };
        for dev in devices_at(&path, container_path.as_deref(), &host_field)? {
            out.rules.push(rule(
                true,
                Some(dev.typ()),
                Some(dev.major()),
                Some(dev.minor()),
                &access,
            ));
            push_unique(&mut out.devices, dev);
        }
    }
    if privileged {
        for dev in devices_at(dev_dir, None, "privileged")? {
            push_unique(&mut out.devices, dev);
        }
        out.rules = vec![rule(true, None, None, None, "rwm")];
    }
    Ok(out)
}

/// Two nodes at one container path would make the runtime fail: the first
/// (the CRI's) wins.
fn push_unique(list: &mut Vec<LinuxDevice>, dev: LinuxDevice) {
    if !list.iter().any(|d| d.path() == dev.path()) {
        list.push(dev);
    }
}

/// Cgroup permissions: a non-empty combination of r, w and m.
fn permissions(p: &str, field: &str) -> Result<String> {
    if p.is_empty() {
        // Device plugins always set them; CRI-O defaults an empty value to
        // everything, which is what the device cgroup reads "" as anyway.
        return Ok("rwm".into());
    }
    let mut seen = String::new();
    for c in p.chars() {
        if !"rwm".contains(c) {
            return Err(SpecError::invalid(
                field,
                format!("{p:?}: only r, w and m are allowed"),
            ));
        }
        if !seen.contains(c) {
            seen.push(c);
        }
    }
    Ok(seen)
}

/// `getDevices`: one device, or every device below a directory (skipping the
/// pseudo directories and `console`, like containerd and runc).
fn devices_at(path: &Path, container_path: Option<&Path>, field: &str) -> Result<Vec<LinuxDevice>> {
    let meta = std::fs::metadata(path).map_err(|e| SpecError::io(field, path, e))?;
    if !meta.is_dir() {
        return match device_from_path(path).map_err(|e| SpecError::io(field, path, e))? {
            Some(mut dev) => {
                if let Some(cp) = container_path {
                    dev.set_path(cp.to_path_buf());
                }
                Ok(vec![dev])
            }
            None => Err(SpecError::invalid(
                field,
                format!("{} is not a device node", path.display()),
            )),
        };
    }
    let mut out = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(path)
        .map_err(|e| SpecError::io(field, path, e))?
        .flatten()
        .collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name();
        let name_s = name.to_string_lossy();
        let child = path.join(&name);
        let cp = container_path.map(|c| c.join(&name));
        let Ok(ft) = e.file_type() else { continue };
        if ft.is_dir() {
            if matches!(
                name_s.as_ref(),
                "pts" | "shm" | "fd" | "mqueue" | ".lxc" | ".lxd-mounts" | ".udev"
            ) {
                continue;
            }
            out.extend(devices_at(&child, cp.as_deref(), field)?);
            continue;
        }
        if name_s == "console" {
            continue;
        }
        match device_from_path(&child) {
            Ok(Some(mut dev)) if dev.typ() != LinuxDeviceType::P => {
                if let Some(cp) = cp {
                    dev.set_path(cp);
                }
                out.push(dev);
            }
            // Not a device, a FIFO, or gone meanwhile: skipped, as containerd does.
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(SpecError::io(field, &child, e)),
        }
    }
    Ok(out)
}

/// `DeviceFromPath`: lstat the node; `None` if it is not a device or FIFO.
fn device_from_path(path: &Path) -> std::io::Result<Option<LinuxDevice>> {
    let meta = std::fs::symlink_metadata(path)?;
    let ft = meta.file_type();
    let typ = if ft.is_block_device() {
        LinuxDeviceType::B
    } else if ft.is_char_device() {
        LinuxDeviceType::C
    } else if ft.is_fifo() {
        LinuxDeviceType::P
    } else {
        return Ok(None);
    };
    let rdev = meta.rdev();
    let mut dev = LinuxDevice::default();
    dev.set_path(path.to_path_buf())
        .set_typ(typ)
        .set_major(libc::major(rdev) as i64)
        .set_minor(libc::minor(rdev) as i64)
        .set_file_mode(Some(meta.mode() & 0o7777))
        .set_uid(Some(meta.uid()))
        .set_gid(Some(meta.gid()));
    Ok(Some(dev))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev(host: &str, ctr: &str, perms: &str) -> v1::Device {
        v1::Device {
            host_path: host.into(),
            container_path: ctr.into(),
            permissions: perms.into(),
        }
    }

    fn cfg(devices: Vec<v1::Device>) -> v1::ContainerConfig {
        v1::ContainerConfig {
            devices,
            ..Default::default()
        }
    }

    #[test]
    fn no_devices_denies_all() {
        let d = build(&cfg(vec![]), false, Path::new("/dev")).unwrap();
        assert!(d.devices.is_empty());
        assert_eq!(d.rules, vec![rule(false, None, None, None, "rwm")]);
    }

    #[test]
    fn char_device_with_rule() {
        let d = build(
            &cfg(vec![dev("/dev/null", "/dev/mynull", "rw")]),
            false,
            Path::new("/dev"),
        )
        .unwrap();
        assert_eq!(d.devices.len(), 1);
        let n = &d.devices[0];
        assert_eq!(n.path(), Path::new("/dev/mynull"));
        assert_eq!(n.typ(), LinuxDeviceType::C);
        assert_eq!((n.major(), n.minor()), (1, 3));
        assert_eq!(n.file_mode().map(|m| m & 0o777), Some(0o666));
        assert_eq!(
            d.rules[1],
            rule(true, Some(LinuxDeviceType::C), Some(1), Some(3), "rw")
        );
        assert!(!d.rules[0].allow());
    }

    #[test]
    fn container_path_defaults_to_host_path_and_symlinks_resolve() {
        let t = tempfile::tempdir().unwrap();
        let link = t.path().join("null-link");
        std::os::unix::fs::symlink("/dev/null", &link).unwrap();
        let d = build(
            &cfg(vec![dev(link.to_str().unwrap(), "", "")]),
            false,
            Path::new("/dev"),
        )
        .unwrap();
        assert_eq!(d.devices[0].path(), Path::new("/dev/null"));
        assert_eq!(d.rules[1].access().as_deref(), Some("rwm"));
    }

    #[test]
    fn directory_of_devices() {
        // A directory holding a device node (a bind-free copy: mknod needs
        // CAP_MKNOD, so use a symlink-free dir with a real node when we can).
        let t = tempfile::tempdir().unwrap();
        let node = t.path().join("zero");
        let made = nix::sys::stat::mknod(
            &node,
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::from_bits_truncate(0o600),
            nix::sys::stat::makedev(1, 5),
        );
        if made.is_err() {
            return; // no CAP_MKNOD here
        }
        std::fs::write(t.path().join("regular"), "x").unwrap();
        std::fs::create_dir(t.path().join("pts")).unwrap();
        let d = build(
            &cfg(vec![dev(t.path().to_str().unwrap(), "/dev/things", "r")]),
            false,
            Path::new("/dev"),
        )
        .unwrap();
        assert_eq!(d.devices.len(), 1);
        assert_eq!(d.devices[0].path(), Path::new("/dev/things/zero"));
        assert_eq!((d.devices[0].major(), d.devices[0].minor()), (1, 5));
    }

    #[test]
    fn errors_name_the_field() {
        let e = build(
            &cfg(vec![dev("/dev/null", "/x", "rwx")]),
            false,
            Path::new("/dev"),
        )
        .unwrap_err();
        assert_eq!(e.field(), "devices[0].permissions");
        let e = build(
            &cfg(vec![
                dev("/dev/null", "/x", "r"),
                dev("/nonexistent-dev", "/y", "r"),
            ]),
            false,
            Path::new("/dev"),
        )
        .unwrap_err();
        assert_eq!(e.field(), "devices[1].host_path");
        assert!(e.to_string().contains("/nonexistent-dev"), "{e}");
        let t = tempfile::NamedTempFile::new().unwrap();
        let e = build(
            &cfg(vec![dev(t.path().to_str().unwrap(), "/y", "r")]),
            false,
            Path::new("/dev"),
        )
        .unwrap_err();
        assert!(e.to_string().contains("not a device node"), "{e}");
        let e = build(
            &cfg(vec![dev("/dev/null", "rel", "r")]),
            false,
            Path::new("/dev"),
        )
        .unwrap_err();
        assert_eq!(e.field(), "devices[0].container_path");
        let e = build(&cfg(vec![dev("", "/x", "r")]), false, Path::new("/dev")).unwrap_err();
        assert_eq!(e.field(), "devices[0].host_path");
    }

    #[test]
    fn privileged_gets_host_devices_and_allow_all() {
        let d = build(
            &cfg(vec![dev("/dev/null", "/dev/null", "r")]),
            true,
            Path::new("/dev"),
        )
        .unwrap();
        assert_eq!(d.rules, vec![rule(true, None, None, None, "rwm")]);
        assert!(d.devices.iter().any(|d| d.path() == Path::new("/dev/zero")));
        let nulls = d
            .devices
            .iter()
            .filter(|d| d.path() == Path::new("/dev/null"))
            .count();
        assert_eq!(nulls, 1);
        assert!(!d.devices.iter().any(|d| d.path().starts_with("/dev/pts")));
        assert!(
            !d.devices
                .iter()
                .any(|d| d.path() == Path::new("/dev/console"))
        );
    }
}
