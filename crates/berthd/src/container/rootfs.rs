//! A container's root filesystem: an overlay of the image's shared, read-only
//! layer dirs plus the container's own upper dir (its whole disk cost); and
//! the per-pod files bind-mounted into every container of the pod.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use berth_api::v1::PodSandboxConfig;
use nix::mount::{MntFlags, MsFlags};

/// Mounts the overlay at `target`; `layers` are lowest first (as the image
/// store returns them), overlayfs wants the highest first.
pub fn mount_overlay(layers: &[PathBuf], layer_dir: &Path, target: &Path) -> anyhow::Result<()> {
    if layers.is_empty() {
        bail!("the image has no layers");
    }
    let upper = layer_dir.join("upper");
    let work = layer_dir.join("work");
    for d in [&upper, &work, &target.to_path_buf()] {
        std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
    }
    let lower: Vec<String> = layers
        .iter()
        .rev()
        .map(|p| p.display().to_string())
        .collect();
    let data = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.join(":"),
        upper.display(),
        work.display()
    );
    // The mount data is limited to one page; many deep layers would need
    // shorter paths (symlinks) — not needed for the images Berth runs yet.
    if data.len() >= 4096 {
        bail!(
            "overlay options are {} bytes: too many layers for one mount",
            data.len()
        );
    }
    nix::mount::mount(
        Some("overlay"),
        target,
        Some("overlay"),
        MsFlags::empty(),
        Some(data.as_str()),
    )
    .with_context(|| format!("cannot mount the overlay rootfs at {}", target.display()))
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

pub fn remove_dir(dir: &Path) -> anyhow::Result<()> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot remove {}", dir.display())),
    }
}

/// The pod's `/etc/hostname`, `/etc/hosts` and `/etc/resolv.conf`, written
/// into the pod's state dir (once per pod; every container binds the same files).
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
    let paths = PodFilePaths {
        hostname: pod_dir.join("hostname"),
        hosts: pod_dir.join("hosts"),
        resolv_conf: pod_dir.join("resolv.conf"),
    };
    let hostname = if config.hostname.is_empty() {
        node_hostname
    } else {
        config.hostname.as_str()
    };
    let hosts = format!(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n127.0.1.1\t{hostname}\n"
    );
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
