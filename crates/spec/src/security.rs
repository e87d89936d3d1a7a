//! Seccomp, AppArmor, masked and read-only paths.

use std::path::{Path, PathBuf};

use berth_api::v1;
use berth_api::v1::security_profile::ProfileType;
use oci_spec::runtime::{Capabilities, LinuxSeccomp};

use crate::HostEnv;
use crate::error::{Result, SpecError};
use crate::seccomp_default;

const SC: &str = "linux.security_context";

/// containerd's default masked paths (`populateDefaultUnixSpec`; the
/// kubelet's `DefaultMaskedPaths` are the same list).
pub const DEFAULT_MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
    "/proc/scsi",
];

/// containerd's default read-only paths.
pub const DEFAULT_READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Masked and read-only paths: none for a privileged container; the CRI's
/// lists when given; else the defaults, except in a pod with its own user
/// namespace, where the lists are taken as given, empty included. (containerd
/// uses them verbatim, empty included. The kubelet always sends the defaults
/// unless `procMount: Unmasked`, which the API allows only with
/// `hostUsers: false`; elsewhere an empty list comes from a client like
/// crictl that never sets them, and it gets the safe defaults.)
pub fn masked_and_readonly_paths(
    sc: Option<&v1::LinuxContainerSecurityContext>,
    privileged: bool,
    own_user_ns: bool,
) -> Result<(Vec<String>, Vec<String>)> {
    if privileged {
        return Ok((Vec::new(), Vec::new()));
    }
    let pick =
        |given: Option<&Vec<String>>, default: &[&str], field: &str| -> Result<Vec<String>> {
            match given {
                Some(g) if !g.is_empty() => {
                    for (i, p) in g.iter().enumerate() {
                        if !p.starts_with('/') {
                            return Err(SpecError::invalid(
                                format!("{SC}.{field}[{i}]"),
                                format!("{p:?} is not an absolute path"),
                            ));
                        }
                    }
                    Ok(g.clone())
                }
                Some(_) if own_user_ns => Ok(Vec::new()),
                _ => Ok(default.iter().map(|s| s.to_string()).collect()),
            }
        };
    Ok((
        pick(
            sc.map(|s| &s.masked_paths),
            DEFAULT_MASKED_PATHS,
            "masked_paths",
        )?,
        pick(
            sc.map(|s| &s.readonly_paths),
            DEFAULT_READONLY_PATHS,
            "readonly_paths",
        )?,
    ))
}

/// The deprecated string form ("runtime/default", "docker/default",
/// "unconfined", "localhost/<ref>") as a profile: containerd's
/// `generateSecurityProfile`.
fn profile_from_string(s: &str, field: &str) -> Result<Option<v1::SecurityProfile>> {
    let p = |t: ProfileType, r: &str| {
        Some(v1::SecurityProfile {
            profile_type: t as i32,
            localhost_ref: r.to_string(),
        })
    };
    Ok(match s {
        "" => None,
        "runtime/default" | "docker/default" => p(ProfileType::RuntimeDefault, ""),
        "unconfined" => p(ProfileType::Unconfined, ""),
        other => match other.strip_prefix("localhost/") {
            Some(r) => p(ProfileType::Localhost, r),
            None => {
                return Err(SpecError::invalid(
                    field,
                    format!("invalid profile {other:?}"),
                ));
            }
        },
    })
}

fn profile_type(p: &v1::SecurityProfile, field: &str) -> Result<ProfileType> {
    let t = ProfileType::try_from(p.profile_type).map_err(|_| {
        SpecError::invalid(
            format!("{field}.profile_type"),
            format!("unknown profile type {}", p.profile_type),
        )
    })?;
    if t != ProfileType::Localhost && !p.localhost_ref.is_empty() {
        return Err(SpecError::invalid(
            format!("{field}.localhost_ref"),
            "must only be set if profile_type is Localhost",
        ));
    }
    Ok(t)
}

/// The seccomp filter, following containerd's `GenerateSeccompSpecOpts`:
/// none for privileged containers; the deprecated `seccomp_profile_path`
/// when `seccomp` is unset, where "" means unconfined; `RuntimeDefault` is
/// [`seccomp_default::profile`] over the bounding set; `Localhost` loads an
/// OCI seccomp JSON file from an absolute path.
pub fn seccomp(
    sc: Option<&v1::LinuxContainerSecurityContext>,
    privileged: bool,
    bounding: &Capabilities,
    host: &HostEnv,
) -> Result<Option<LinuxSeccomp>> {
    if privileged {
        return Ok(None);
    }
    let field = format!("{SC}.seccomp");
    let profile = match sc.and_then(|s| s.seccomp.clone()) {
        Some(p) => Some(p),
        #[allow(deprecated)]
        None => profile_from_string(
            sc.map(|s| s.seccomp_profile_path.as_str()).unwrap_or(""),
            &format!("{SC}.seccomp_profile_path"),
        )?,
    };
    let Some(profile) = profile else {
        return Ok(None);
    };
    let t = profile_type(&profile, &field)?;
    if !host.seccomp_enabled {
        if t != ProfileType::Unconfined {
            return Err(SpecError::unsupported(
                field,
                "seccomp is not supported on this host",
            ));
        }
        return Ok(None);
    }
    match t {
        ProfileType::Unconfined => Ok(None),
        ProfileType::RuntimeDefault => Ok(Some(seccomp_default::profile(bounding))),
        ProfileType::Localhost => {
            let r = profile
                .localhost_ref
                .strip_prefix("localhost/")
                .unwrap_or(&profile.localhost_ref);
            let ref_field = format!("{field}.localhost_ref");
            let path = localhost_path(r, host, &ref_field)?;
            let data = read_profile(&path).map_err(|e| SpecError::io(&ref_field, &path, e))?;
            let s: LinuxSeccomp = serde_json::from_slice(&data).map_err(|e| {
                SpecError::invalid(
                    &ref_field,
                    format!("decoding seccomp profile {} failed: {e}", path.display()),
                )
            })?;
            Ok(Some(s))
        }
    }
}

/// Largest seccomp profile read (containerd's default profile is ~20 KiB).
const MAX_PROFILE_BYTES: u64 = 1 << 20;

/// Reads a Localhost seccomp profile: a regular file of at most
/// [`MAX_PROFILE_BYTES`]. Opened non-blocking so a FIFO planted at the path
/// cannot hang the caller; `/dev/zero` and other endless files are refused
/// before any read.
fn read_profile(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    let md = f.metadata()?;
    if !md.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    if md.len() > MAX_PROFILE_BYTES {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("larger than {MAX_PROFILE_BYTES} bytes"),
        ));
    }
    let mut data = Vec::with_capacity(md.len() as usize);
    // The file may grow after the fstat: the cap holds for what is read.
    f.take(MAX_PROFILE_BYTES + 1).read_to_end(&mut data)?;
    if data.len() as u64 > MAX_PROFILE_BYTES {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("larger than {MAX_PROFILE_BYTES} bytes"),
        ));
    }
    Ok(data)
}

fn localhost_path(r: &str, host: &HostEnv, field: &str) -> Result<PathBuf> {
    if r.is_empty() {
        return Err(SpecError::invalid(field, "empty for a Localhost profile"));
    }
    let p = Path::new(r);
    if p.is_absolute() {
        return Ok(p.to_path_buf());
    }
    match &host.seccomp_profile_root {
        Some(root) if !r.split('/').any(|c| c == "..") => Ok(root.join(p)),
        _ => Err(SpecError::invalid(
            field,
            format!("{r:?} must be an absolute path to the seccomp profile"),
        )),
    }
}

/// The AppArmor profile, following containerd's `GenerateApparmorSpecOpts`,
/// except that on hosts without AppArmor every request is ignored (the brief
/// of issue 4: "AppArmor only where the host has it"; containerd errors on
/// anything but Unconfined there).
pub fn apparmor(
    sc: Option<&v1::LinuxContainerSecurityContext>,
    privileged: bool,
    host: &HostEnv,
) -> Result<Option<String>> {
    let field = format!("{SC}.apparmor");
    let profile = match sc.and_then(|s| s.apparmor.clone()) {
        Some(p) => Some(p),
        #[allow(deprecated)]
        None => profile_from_string(
            sc.map(|s| s.apparmor_profile.as_str()).unwrap_or(""),
            &format!("{SC}.apparmor_profile"),
        )?,
    };
    // Unset means the runtime default (kubernetes#51746).
    let profile = profile.unwrap_or_default();
    let t = profile_type(&profile, &field)?;
    if !host.apparmor_enabled {
        return Ok(None);
    }
    match t {
        ProfileType::Unconfined => Ok(None),
        ProfileType::RuntimeDefault if privileged => Ok(None),
        ProfileType::RuntimeDefault => Ok(host.apparmor_default_profile.clone()),
        ProfileType::Localhost => {
            let name = profile
                .localhost_ref
                .strip_prefix("localhost/")
                .unwrap_or(&profile.localhost_ref);
            if name.is_empty() {
                return Err(SpecError::invalid(
                    format!("{field}.localhost_ref"),
                    "empty for a Localhost profile",
                ));
            }
            Ok(Some(name.to_string()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{Capability, LinuxSeccompAction};

    fn sc_with_seccomp(t: ProfileType, r: &str) -> v1::LinuxContainerSecurityContext {
        v1::LinuxContainerSecurityContext {
            seccomp: Some(v1::SecurityProfile {
                profile_type: t as i32,
                localhost_ref: r.into(),
            }),
            ..Default::default()
        }
    }

    fn caps() -> Capabilities {
        crate::caps::DEFAULT.into_iter().collect()
    }

    #[test]
    fn seccomp_runtime_default_and_unconfined() {
        let h = HostEnv::default();
        let sc = sc_with_seccomp(ProfileType::RuntimeDefault, "");
        let p = seccomp(Some(&sc), false, &caps(), &h).unwrap().unwrap();
        assert_eq!(p.default_action(), LinuxSeccompAction::ScmpActErrno);
        assert!(
            seccomp(Some(&sc), true, &caps(), &h).unwrap().is_none(),
            "privileged"
        );
        let sc = sc_with_seccomp(ProfileType::Unconfined, "");
        assert!(seccomp(Some(&sc), false, &caps(), &h).unwrap().is_none());
        // Nothing at all: unconfined, as containerd with no
        // unset_seccomp_profile configured.
        assert!(seccomp(None, false, &caps(), &h).unwrap().is_none());
    }

    #[test]
    fn seccomp_deprecated_path_forms() {
        let h = HostEnv::default();
        #[allow(deprecated)]
        let with = |s: &str| {
            let sc = v1::LinuxContainerSecurityContext {
                seccomp_profile_path: s.into(),
                ..Default::default()
            };
            seccomp(Some(&sc), false, &caps(), &h)
        };
        assert!(with("runtime/default").unwrap().is_some());
        assert!(with("docker/default").unwrap().is_some());
        assert!(with("unconfined").unwrap().is_none());
        assert!(with("").unwrap().is_none());
        assert_eq!(
            with("bogus").unwrap_err().field(),
            "linux.security_context.seccomp_profile_path"
        );
    }

    #[test]
    fn seccomp_localhost() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("profile.json");
        std::fs::write(
            &path,
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir","mkdirat"],"action":"SCMP_ACT_ERRNO","errnoRet":1}]}"#,
        )
        .unwrap();
        let h = HostEnv::default();
        let sc = sc_with_seccomp(ProfileType::Localhost, path.to_str().unwrap());
        let p = seccomp(Some(&sc), false, &caps(), &h).unwrap().unwrap();
        assert_eq!(p.default_action(), LinuxSeccompAction::ScmpActAllow);
        assert_eq!(
            p.syscalls().as_ref().unwrap()[0].names(),
            &["mkdir", "mkdirat"]
        );
        // "localhost/" prefix tolerated, as containerd does.
        let sc = sc_with_seccomp(
            ProfileType::Localhost,
            &format!("localhost/{}", path.display()),
        );
        assert!(seccomp(Some(&sc), false, &caps(), &h).unwrap().is_some());
    }

    /// A Localhost profile path naming /dev/zero, a FIFO or a huge file is
    /// refused at once: no endless read, no hang, no unbounded buffer.
    #[test]
    fn seccomp_localhost_reads_are_bounded() {
        let d = tempfile::tempdir().unwrap();
        let h = HostEnv {
            seccomp_enabled: true,
            ..Default::default()
        };
        let fifo = d.path().join("fifo.json");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let big = d.path().join("big.json");
        std::fs::File::create(&big)
            .unwrap()
            .set_len(MAX_PROFILE_BYTES + 1)
            .unwrap();
        for p in [Path::new("/dev/zero"), &fifo, &big] {
            let sc = sc_with_seccomp(ProfileType::Localhost, p.to_str().unwrap());
            let e = seccomp(Some(&sc), false, &caps(), &h).unwrap_err();
            assert_eq!(e.field(), "linux.security_context.seccomp.localhost_ref");
            assert!(
                e.to_string().contains("regular file") || e.to_string().contains("larger"),
                "{e}"
            );
        }
    }

    #[test]
    fn seccomp_localhost_errors_name_field_and_path() {
        let d = tempfile::tempdir().unwrap();
        let h = HostEnv::default();
        let missing = d.path().join("missing.json");
        let sc = sc_with_seccomp(ProfileType::Localhost, missing.to_str().unwrap());
        let e = seccomp(Some(&sc), false, &caps(), &h).unwrap_err();
        assert_eq!(e.field(), "linux.security_context.seccomp.localhost_ref");
        assert!(e.to_string().contains("missing.json"), "{e}");

        let sc = sc_with_seccomp(ProfileType::Localhost, "relative.json");
        let e = seccomp(Some(&sc), false, &caps(), &h).unwrap_err();
        assert!(e.to_string().contains("absolute"), "{e}");
        let rooted = HostEnv {
            seccomp_profile_root: Some(d.path().to_path_buf()),
            ..Default::default()
        };
        std::fs::write(
            d.path().join("relative.json"),
            r#"{"defaultAction":"SCMP_ACT_LOG"}"#,
        )
        .unwrap();
        assert!(
            seccomp(Some(&sc), false, &caps(), &rooted)
                .unwrap()
                .is_some()
        );
        let sc = sc_with_seccomp(ProfileType::Localhost, "../escape.json");
        assert!(seccomp(Some(&sc), false, &caps(), &rooted).is_err());

        let bad = d.path().join("bad.json");
        std::fs::write(&bad, "{not json").unwrap();
        let sc = sc_with_seccomp(ProfileType::Localhost, bad.to_str().unwrap());
        let e = seccomp(Some(&sc), false, &caps(), &h).unwrap_err();
        assert!(e.to_string().contains("bad.json"), "{e}");

        let sc = sc_with_seccomp(ProfileType::RuntimeDefault, "/x.json");
        let e = seccomp(Some(&sc), false, &caps(), &h).unwrap_err();
        assert_eq!(e.field(), "linux.security_context.seccomp.localhost_ref");

        let mut sc = sc_with_seccomp(ProfileType::RuntimeDefault, "");
        sc.seccomp.as_mut().unwrap().profile_type = 9;
        let e = seccomp(Some(&sc), false, &caps(), &h).unwrap_err();
        assert_eq!(e.field(), "linux.security_context.seccomp.profile_type");
    }

    #[test]
    fn seccomp_on_a_host_without_it() {
        let h = HostEnv {
            seccomp_enabled: false,
            ..Default::default()
        };
        let sc = sc_with_seccomp(ProfileType::RuntimeDefault, "");
        let e = seccomp(Some(&sc), false, &caps(), &h).unwrap_err();
        assert!(matches!(e, SpecError::Unsupported { .. }));
        let sc = sc_with_seccomp(ProfileType::Unconfined, "");
        assert!(seccomp(Some(&sc), false, &caps(), &h).unwrap().is_none());
    }

    #[test]
    fn seccomp_default_follows_capabilities() {
        let mut c = caps();
        c.insert(Capability::SysAdmin);
        let sc = sc_with_seccomp(ProfileType::RuntimeDefault, "");
        let p = seccomp(Some(&sc), false, &c, &HostEnv::default())
            .unwrap()
            .unwrap();
        assert!(
            p.syscalls()
                .as_ref()
                .unwrap()
                .iter()
                .any(|s| s.names().iter().any(|n| n == "mount"))
        );
    }

    fn sc_with_apparmor(t: ProfileType, r: &str) -> v1::LinuxContainerSecurityContext {
        v1::LinuxContainerSecurityContext {
            apparmor: Some(v1::SecurityProfile {
                profile_type: t as i32,
                localhost_ref: r.into(),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn apparmor_only_where_enabled() {
        let off = HostEnv::default();
        let on = HostEnv {
            apparmor_enabled: true,
            apparmor_default_profile: Some("berth-default".into()),
            ..Default::default()
        };
        let local = sc_with_apparmor(ProfileType::Localhost, "my-profile");
        assert_eq!(apparmor(Some(&local), false, &off).unwrap(), None);
        assert_eq!(
            apparmor(Some(&local), false, &on).unwrap().as_deref(),
            Some("my-profile")
        );
        assert_eq!(
            apparmor(None, false, &on).unwrap().as_deref(),
            Some("berth-default")
        );
        assert_eq!(apparmor(None, true, &on).unwrap(), None, "privileged");
        let unconf = sc_with_apparmor(ProfileType::Unconfined, "");
        assert_eq!(apparmor(Some(&unconf), false, &on).unwrap(), None);
        #[allow(deprecated)]
        let old = v1::LinuxContainerSecurityContext {
            apparmor_profile: "localhost/legacy".into(),
            ..Default::default()
        };
        assert_eq!(
            apparmor(Some(&old), false, &on).unwrap().as_deref(),
            Some("legacy")
        );
        let bad = sc_with_apparmor(ProfileType::Unconfined, "x");
        assert_eq!(
            apparmor(Some(&bad), false, &on).unwrap_err().field(),
            "linux.security_context.apparmor.localhost_ref"
        );
    }

    #[test]
    fn masked_paths() {
        let (m, r) = masked_and_readonly_paths(None, false, false).unwrap();
        assert_eq!(m.len(), DEFAULT_MASKED_PATHS.len());
        assert_eq!(r.len(), DEFAULT_READONLY_PATHS.len());
        let sc = v1::LinuxContainerSecurityContext {
            masked_paths: vec!["/proc/x".into()],
            readonly_paths: vec!["/proc/y".into()],
            ..Default::default()
        };
        let (m, r) = masked_and_readonly_paths(Some(&sc), false, false).unwrap();
        assert_eq!(
            (m, r),
            (vec!["/proc/x".to_string()], vec!["/proc/y".to_string()])
        );
        let (m, r) = masked_and_readonly_paths(Some(&sc), true, false).unwrap();
        assert!(m.is_empty() && r.is_empty());
        let bad = v1::LinuxContainerSecurityContext {
            masked_paths: vec!["proc".into()],
            ..Default::default()
        };
        assert_eq!(
            masked_and_readonly_paths(Some(&bad), false, false)
                .unwrap_err()
                .field(),
            "linux.security_context.masked_paths[0]"
        );
        // procMount: Unmasked (the kubelet's empty lists) is honoured only in
        // a pod with its own user namespace; elsewhere empty means defaults.
        let unmasked = v1::LinuxContainerSecurityContext::default();
        let (m, r) = masked_and_readonly_paths(Some(&unmasked), false, true).unwrap();
        assert!(m.is_empty() && r.is_empty());
        let (m, r) = masked_and_readonly_paths(Some(&unmasked), false, false).unwrap();
        assert_eq!(m.len(), DEFAULT_MASKED_PATHS.len());
        assert_eq!(r.len(), DEFAULT_READONLY_PATHS.len());
        // No security context at all (crictl): the defaults, user namespace or not.
        let (m, _) = masked_and_readonly_paths(None, false, true).unwrap();
        assert_eq!(m.len(), DEFAULT_MASKED_PATHS.len());
    }
}
