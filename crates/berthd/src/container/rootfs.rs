//! A container's root filesystem: an overlay of the image's shared, read-only
//! layer dirs plus the container's own upper dir (its whole disk cost); and
//! the per-pod files bind-mounted into every container of the pod.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use berth_api::v1::{NamespaceMode, PodSandboxConfig};
use nix::mount::{MntFlags, MsFlags};

/// Mounts the overlay at `target`; `layers` are lowest first (as the image
/// store returns them), overlayfs wants the highest first.
///
/// For a pod in its own user namespace (`userns`) the lower dirs are
/// idmapped clones of the shared layer dirs (staged under `layer_dir/m`,
/// detached once the overlay holds them: overlayfs keeps its own private
/// clones), and the upper dir belongs to the pod's root, so the container
/// sees the image's owners and may write its root dir. The kernel refuses
/// to idmap the overlay mount itself, not its layers.
pub fn mount_overlay(
    layers: &[PathBuf],
    layer_dir: &Path,
    target: &Path,
    userns: Option<&super::PodUserns>,
) -> anyhow::Result<()> {
    if layers.is_empty() {
        bail!("the image has no layers");
    }
    let upper = layer_dir.join("upper");
    let work = layer_dir.join("work");
    for d in [&upper, &work, &target.to_path_buf()] {
        std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
    }
    let rest = format!(",upperdir={},workdir={}", upper.display(), work.display());
    let Some(userns) = userns else {
        return overlay(&overlay_options(layers, &rest)?, target);
    };
    std::os::unix::fs::chown(
        &upper,
        Some(userns.maps.uid.host_id),
        Some(userns.maps.gid.host_id),
    )
    .with_context(|| format!("cannot give {} to the pod's root", upper.display()))?;
    let ns = super::idmap::open_userns(&userns.pin)?;
    super::idmap::with_idmapped_layers(layers, &layer_dir.join("m"), &ns, |staged| {
        overlay(&overlay_options(staged, &rest)?, target)
    })
}

fn overlay(data: &str, target: &Path) -> anyhow::Result<()> {
    nix::mount::mount(
        Some("overlay"),
        target,
        Some("overlay"),
        MsFlags::empty(),
        Some(data),
    )
    .with_context(|| format!("cannot mount the overlay rootfs at {}", target.display()))
}

/// Overlay mount data: `lowerdir=` of `layers` (given lowest first,
/// overlayfs wants the highest first), then `rest`. The mount data is
/// limited to one page; many deep layers would need shorter paths
/// (symlinks), not needed for the images Berth runs yet.
pub fn overlay_options(layers: &[PathBuf], rest: &str) -> anyhow::Result<String> {
    let lower: Vec<String> = layers
        .iter()
        .rev()
        .map(|p| p.display().to_string())
        .collect();
    let data = format!("lowerdir={}{rest}", lower.join(":"));
    if data.len() >= 4096 {
        bail!(
            "overlay options are {} bytes: too many layers for one mount",
            data.len()
        );
    }
    Ok(data)
}

/// Unmounts `target` if it is mounted; not mounted (or missing) is success.
pub fn unmount(target: &Path) -> anyhow::Result<()> {
    match nix::mount::umount2(target, MntFlags::empty()) {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOENT) => Ok(()),
        // Something still holds it (a process cwd): detach, the kernel frees it later.
        Err(nix::errno::Errno::EBUSY) => nix::mount::umount2(target, MntFlags::MNT_DETACH)
            .with_context(|| format!("cannot unmount {}", target.display())),
        Err(e) => Err(e).with_context(|| format!("cannot unmount {}", target.display())),
    }
}

/// Unmounts (detached) every entry of `dir`: the mounts Berth staged under
/// a bundle (image volumes, idmapped volumes). A missing dir, or an entry
/// not mounted, is success; a dying container may still hold one.
pub fn unmount_entries(dir: &Path) -> anyhow::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("cannot list {}", dir.display())),
    };
    for entry in entries {
        let path = entry
            .with_context(|| format!("cannot list {}", dir.display()))?
            .path();
        match nix::mount::umount2(&path, MntFlags::MNT_DETACH) {
            Ok(()) | Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOENT) => {}
            Err(e) => return Err(e).with_context(|| format!("cannot unmount {}", path.display())),
        }
    }
    Ok(())
}

/// Unmounts the idmapped layer clones a crash left staged under a
/// container's layer dir (`m/<i>`, see [`mount_overlay`]).
pub fn unmount_staged_layers(layer_dir: &Path) -> anyhow::Result<()> {
    unmount_entries(&layer_dir.join("m"))
}

/// Removes a container's dir, its writable layer included: whatever tree
/// the container made there (any depth) goes without recursion.
pub fn remove_dir(dir: &Path) -> anyhow::Result<()> {
    berth_rmtree::remove_tree(dir).with_context(|| format!("cannot remove {}", dir.display()))
}

/// The pod's `/etc/hostname`, `/etc/hosts` and `/etc/resolv.conf`, written
/// into `<pod dir>/etc` (once per pod; every container binds the same files,
/// read-write as containerd does). That dir is a tmpfs of its own, 1 MiB at
/// most: the pod dir lives in berthd's state dir on the host's `/run`, and a
/// container writing without end into its `/etc/hosts` must fill its pod's
/// small tmpfs, not the host's `/run`.
pub struct PodFilePaths {
    pub hostname: PathBuf,
    pub hosts: PathBuf,
    pub resolv_conf: PathBuf,
}

pub fn write_pod_files(
    pod_dir: &Path,
    config: &PodSandboxConfig,
    node_hostname: &str,
) -> anyhow::Result<PodFilePaths> {
    let etc = pod_dir.join(POD_ETC_DIR);
    mount_pod_etc(pod_dir, &etc)?;
    let paths = PodFilePaths {
        hostname: etc.join("hostname"),
        hosts: etc.join("hosts"),
        resolv_conf: etc.join("resolv.conf"),
    };
    let hostname = if config.hostname.is_empty() {
        node_hostname
    } else {
        config.hostname.as_str()
    };
    let hosts = hosts_file(config, hostname, Path::new(HOST_ETC_HOSTS))?;
    let resolv = match &config.dns_config {
        Some(dns)
            if !(dns.servers.is_empty() && dns.searches.is_empty() && dns.options.is_empty()) =>
        {
            let mut s = String::new();
            if !dns.searches.is_empty() {
                s.push_str(&format!("search {}\n", dns.searches.join(" ")));
            }
            for server in &dns.servers {
                s.push_str(&format!("nameserver {server}\n"));
            }
            if !dns.options.is_empty() {
                s.push_str(&format!("options {}\n", dns.options.join(" ")));
            }
            s
        }
        // As the kubelet's DNSDefault with no config: the host's resolver.
        _ => std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
    };
    for (path, text) in [
        (&paths.hostname, format!("{hostname}\n")),
        (&paths.hosts, hosts),
        (&paths.resolv_conf, resolv),
    ] {
        if !path.exists() {
            write_atomic(path, text.as_bytes())?;
        }
    }
    Ok(paths)
}

/// The pod dir's subdir holding its files, a size-limited tmpfs.
pub const POD_ETC_DIR: &str = "etc";

/// Bounds what containers can write into the pod's files (three small
/// files; a few inodes spare).
const POD_ETC_TMPFS_OPTIONS: &str = "size=1m,nr_inodes=64,mode=0755";

/// Mounts the pod's files tmpfs at `etc` unless it is mounted already (a
/// mount point: another device than the pod dir).
fn mount_pod_etc(pod_dir: &Path, etc: &Path) -> anyhow::Result<()> {
    use anyhow::Context;
    use std::os::unix::fs::MetadataExt;
    match std::fs::create_dir(etc) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e).with_context(|| format!("cannot create {}", etc.display())),
    }
    let dev = |p: &Path| {
        std::fs::symlink_metadata(p)
            .map(|m| m.dev())
            .with_context(|| format!("cannot stat {}", p.display()))
    };
    if dev(etc)? != dev(pod_dir)? {
        return Ok(());
    }
    nix::mount::mount(
        Some("tmpfs"),
        etc,
        Some("tmpfs"),
        nix::mount::MsFlags::MS_NOSUID
            | nix::mount::MsFlags::MS_NODEV
            | nix::mount::MsFlags::MS_NOEXEC,
        Some(POD_ETC_TMPFS_OPTIONS),
    )
    .with_context(|| format!("cannot mount the pod files tmpfs at {}", etc.display()))
}

/// The host's hosts file, which a host-network pod sees.
const HOST_ETC_HOSTS: &str = "/etc/hosts";

/// The pod's `/etc/hosts`. A pod in the host's network namespace gets a
/// copy of the host's (`host_hosts`), as containerd does: it has the
/// host's names and addresses. Any other pod gets a localhost-only file
/// (the kubelet mounts its own managed /etc/hosts over it for those pods).
fn hosts_file(
    config: &PodSandboxConfig,
    hostname: &str,
    host_hosts: &Path,
) -> anyhow::Result<String> {
    let host_network = config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.as_ref())
        .is_some_and(|n| n.network == NamespaceMode::Node as i32);
    if host_network {
        match std::fs::read_to_string(host_hosts) {
            Ok(s) => return Ok(s),
            // A host without one: the generated file, as for other pods.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                tracing::debug!(path = %host_hosts.display(), "the host has no hosts file: generating one");
            }
            Err(e) => {
                return Err(e).with_context(|| format!("cannot read {}", host_hosts.display()));
            }
        }
    }
    Ok(format!(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n127.0.1.1\t{hostname}\n"
    ))
}

/// tmp + rename: a concurrent create of another container never binds a half file.
pub fn write_atomic(path: &Path, data: &[u8]) -> anyhow::Result<()> {
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = path.with_extension(format!("tmp{}", n));
    std::fs::write(&tmp, data).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}

/// Takes the overlay at `target` out of the mount table at once and returns
/// a handle that keeps its superblock alive: the overlay's last unmount
/// syncs its whole upper filesystem (the node's disk, every dirty page of
/// every process), and that happens where the handle is dropped, off the
/// request path. `None`: nothing is mounted there.
pub fn detach(target: &Path) -> anyhow::Result<Option<OwnedFd>> {
    use nix::fcntl::{OFlag, open};
    let fd = match open(
        target,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(nix::errno::Errno::ENOENT) => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot open {}", target.display())),
    };
    match nix::mount::umount2(target, MntFlags::MNT_DETACH) {
        Ok(()) => Ok(Some(fd)),
        // Not a mount point (never mounted, or already unmounted).
        Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOENT) => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot unmount {}", target.display())),
    }
}

/// Moves `dir` to `trash/<name>` (a rename: same filesystem), to be deleted
/// off the request path by [`empty_trash`]; a missing `dir` is success. If it
/// cannot be moved, it is deleted now.
pub fn to_trash(dir: &Path, trash: &Path, name: &str) -> anyhow::Result<()> {
    let dest = trash.join(name);
    let moved = std::fs::create_dir_all(trash).and_then(|()| std::fs::rename(dir, &dest));
    match moved {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !dir.exists() => Ok(()),
        Err(e) => {
            tracing::debug!(dir = %dir.display(), error = %e, "cannot move to the trash: removing now");
            remove_dir(dir)
        }
    }
}

/// Deletes `trash/<name>`.
pub fn empty_trash_entry(trash: &Path, name: &str) -> anyhow::Result<()> {
    remove_dir(&trash.join(name))
}

/// Names in `trash` (what a crash left there).
pub fn trash_entries(trash: &Path) -> Vec<String> {
    std::fs::read_dir(trash)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_api::v1::{LinuxPodSandboxConfig, LinuxSandboxSecurityContext, NamespaceOption};

    fn pod(network: NamespaceMode) -> PodSandboxConfig {
        PodSandboxConfig {
            hostname: "web-0".into(),
            linux: Some(LinuxPodSandboxConfig {
                security_context: Some(LinuxSandboxSecurityContext {
                    namespace_options: Some(NamespaceOption {
                        network: network as i32,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn host_network_pods_get_the_hosts_hosts_file() {
        let d = tempfile::tempdir().unwrap();
        let host = d.path().join("hosts");
        std::fs::write(&host, "10.1.2.3\tnode-a\n127.0.0.1\tlocalhost\n").unwrap();
        assert_eq!(
            hosts_file(&pod(NamespaceMode::Node), "node-a", &host).unwrap(),
            "10.1.2.3\tnode-a\n127.0.0.1\tlocalhost\n"
        );
        // A pod with its own network: localhost and its own name only.
        for mode in [NamespaceMode::Pod, NamespaceMode::Container] {
            let h = hosts_file(&pod(mode), "web-0", &host).unwrap();
            assert!(h.starts_with("127.0.0.1\tlocalhost\n"), "{h}");
            assert!(h.ends_with("127.0.1.1\tweb-0\n"), "{h}");
            assert!(!h.contains("node-a"), "{h}");
        }
        let h = hosts_file(&PodSandboxConfig::default(), "x", &host).unwrap();
        assert!(!h.contains("node-a"), "{h}");
        // No hosts file on the host: generated.
        let h = hosts_file(&pod(NamespaceMode::Node), "node-a", &d.path().join("none")).unwrap();
        assert!(h.ends_with("127.0.1.1\tnode-a\n"), "{h}");
    }

    /// A container writing without end into its /etc/hosts fills the pod's
    /// 1 MiB tmpfs (ENOSPC), not the host's /run. Needs root (mount).
    #[test]
    fn pod_files_live_in_a_bounded_tmpfs() {
        use std::io::Write;
        let d = tempfile::tempdir().unwrap();
        let paths = write_pod_files(d.path(), &pod(NamespaceMode::Pod), "node").unwrap();
        let etc = d.path().join(POD_ETC_DIR);
        assert_eq!(paths.hosts.parent(), Some(etc.as_path()));
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&paths.hosts)
            .unwrap();
        let chunk = vec![b'x'; 64 << 10];
        let mut written = 0usize;
        let err = loop {
            match f.write_all(&chunk) {
                Ok(()) => written += chunk.len(),
                Err(e) => break e,
            }
            assert!(written <= 4 << 20, "wrote {written} bytes without ENOSPC");
        };
        assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{err}");
        // A second call (the next container) finds the mount and keeps it.
        write_pod_files(d.path(), &pod(NamespaceMode::Pod), "node").unwrap();
        drop(f);
        nix::mount::umount2(&etc, nix::mount::MntFlags::MNT_DETACH).unwrap();
        // Only one mount was made.
        assert!(nix::mount::umount2(&etc, nix::mount::MntFlags::MNT_DETACH).is_err());
    }

    #[test]
    fn write_pod_files_writes_once() {
        let d = tempfile::tempdir().unwrap();
        let paths = write_pod_files(d.path(), &pod(NamespaceMode::Pod), "node").unwrap();
        assert_eq!(std::fs::read_to_string(&paths.hostname).unwrap(), "web-0\n");
        assert!(
            std::fs::read_to_string(&paths.hosts)
                .unwrap()
                .contains("web-0")
        );
        std::fs::write(&paths.hosts, "kept\n").unwrap();
        write_pod_files(d.path(), &pod(NamespaceMode::Pod), "node").unwrap();
        assert_eq!(std::fs::read_to_string(&paths.hosts).unwrap(), "kept\n");
        let _ = nix::mount::umount2(
            &d.path().join(POD_ETC_DIR),
            nix::mount::MntFlags::MNT_DETACH,
        );
    }
}
