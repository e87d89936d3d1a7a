//! Pinned pod namespaces, without a pause process (like CRI-O's `pinns`).
//!
//! `unshare(2)` acts on the calling thread only and berthd runs many threads,
//! so the namespaces are made by a short-lived child: berthd re-executes itself
//! as `berthd pin-namespaces ...` ([`child_main`], run before tokio starts, so
//! single-threaded). The child unshares, sets the hostname, applies sysctls,
//! brings `lo` up, bind-mounts `/proc/self/ns/X` onto `<dir>/X` and exits; the
//! bind mounts keep the namespaces alive.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, unshare};

use super::record::Pins;

/// The hidden subcommand name; `main()` dispatches on it before anything else.
pub const SUBCOMMAND: &str = "pin-namespaces";

/// What the child must make.
#[derive(Debug, Default)]
pub struct PinRequest {
    pub net: bool,
    pub ipc: bool,
    pub uts: bool,
    pub hostname: String,
    pub sysctls: BTreeMap<String, String>,
}

/// berthd side: runs the child and returns the pin paths under `ns_dir`.
/// On failure, whatever the child made is undone by the caller's [`unpin`].
pub async fn pin(ns_dir: &Path, req: &PinRequest) -> anyhow::Result<Pins> {
    let mut cmd = tokio::process::Command::new("/proc/self/exe");
    cmd.arg(SUBCOMMAND).arg("--dir").arg(ns_dir);
    for (on, flag) in [(req.net, "--net"), (req.ipc, "--ipc"), (req.uts, "--uts")] {
        if on {
            cmd.arg(flag);
        }
    }
    if req.uts && !req.hostname.is_empty() {
        cmd.arg("--hostname").arg(&req.hostname);
    }
    for (k, v) in &req.sysctls {
        cmd.arg("--sysctl").arg(format!("{k}={v}"));
    }
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(10), cmd.output())
        .await
        .context("namespace pinning helper did not finish within 10 s")?
        .context("cannot run the namespace pinning helper")?;
    if !out.status.success() {
        bail!(
            "namespace pinning failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let at = |on: bool, name: &str| on.then(|| ns_dir.join(name));
    Ok(Pins {
        net: at(req.net, "net"),
        ipc: at(req.ipc, "ipc"),
        uts: at(req.uts, "uts"),
    })
}

/// Unmounts and deletes every pin under `ns_dir`, then the dir's own mount.
/// Safe on a partly made or already removed dir.
pub fn unpin(ns_dir: &Path) -> anyhow::Result<()> {
    for name in ["net", "ipc", "uts"] {
        let p = ns_dir.join(name);
        detach(&p)?;
        match std::fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("cannot remove {}", p.display())),
        }
    }
    detach(ns_dir)
}

fn detach(p: &Path) -> anyhow::Result<()> {
    match umount2(p, MntFlags::MNT_DETACH) {
        // EINVAL: not a mount point (never pinned, or already unmounted).
        Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot unmount {}", p.display())),
    }
}

/// True when `p` is a live nsfs bind mount (false after a reboot emptied the state dir).
pub fn is_pinned(p: &Path) -> bool {
    nix::sys::statfs::statfs(p).is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::NSFS_MAGIC)
}

/// Child side: `berthd pin-namespaces --dir D [--net] [--ipc] [--uts]
/// [--hostname H] [--sysctl k=v]...`. Runs single-threaded, before tokio.
pub fn child_main(args: Vec<OsString>) -> std::process::ExitCode {
    match child(args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn child(args: Vec<OsString>) -> anyhow::Result<()> {
    let mut dir: Option<PathBuf> = None;
    let mut req = PinRequest::default();
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        let mut value = || it.next().with_context(|| format!("{a:?} needs a value"));
        match a.to_str() {
            Some("--dir") => dir = Some(PathBuf::from(value()?)),
            Some("--net") => req.net = true,
            Some("--ipc") => req.ipc = true,
            Some("--uts") => req.uts = true,
            Some("--hostname") => req.hostname = value()?.to_string_lossy().into_owned(),
            Some("--sysctl") => {
                let kv = value()?.to_string_lossy().into_owned();
                let (k, v) = kv.split_once('=').context("--sysctl needs key=value")?;
                req.sysctls.insert(k.to_string(), v.to_string());
            }
            _ => bail!("unknown argument {a:?}"),
        }
    }
    let dir = dir.context("--dir is required")?;

    let mut flags = CloneFlags::empty();
    flags.set(CloneFlags::CLONE_NEWNET, req.net);
    flags.set(CloneFlags::CLONE_NEWIPC, req.ipc);
    flags.set(CloneFlags::CLONE_NEWUTS, req.uts);
    unshare(flags).context("unshare")?;
    if req.uts && !req.hostname.is_empty() {
        nix::unistd::sethostname(&req.hostname).context("sethostname")?;
    }
    if req.net {
        loopback_up().context("cannot bring up lo in the pod network namespace")?;
    }
    // /proc/sys/net and the IPC sysctls resolve to the opener's namespaces: ours now.
    for (k, v) in &req.sysctls {
        let path = Path::new("/proc/sys").join(sysctl_path(k));
        std::fs::write(&path, v).with_context(|| format!("cannot set sysctl {k}={v}"))?;
    }

    // The pin dir becomes its own unbindable mount (as CRI-O's pinns does): the nsfs
    // binds under it neither propagate to peer mounts nor get copied by a later
    // recursive bind (a container bind-mounting the state dir).
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    mount(
        Some(&dir),
        &dir,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .with_context(|| format!("cannot bind {} onto itself", dir.display()))?;
    mount(
        None::<&str>,
        &dir,
        None::<&str>,
        MsFlags::MS_UNBINDABLE,
        None::<&str>,
    )
    .with_context(|| format!("cannot make {} unbindable", dir.display()))?;
    for (on, name) in [(req.net, "net"), (req.ipc, "ipc"), (req.uts, "uts")] {
        if !on {
            continue;
        }
        let pin = dir.join(name);
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&pin)
            .with_context(|| format!("cannot create {}", pin.display()))?;
        let src = format!("/proc/self/ns/{name}");
        mount(
            Some(src.as_str()),
            &pin,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .with_context(|| format!("cannot bind {src} onto {}", pin.display()))?;
    }
    Ok(())
}

/// `net.ipv4.ip_forward` → `net/ipv4/ip_forward`; a name already in slash form is kept.
pub fn sysctl_path(name: &str) -> String {
    if name.contains('/') {
        name.to_string()
    } else {
        name.replace('.', "/")
    }
}

/// `ip link set lo up`, by ioctl on a socket of the (new) network namespace.
fn loopback_up() -> std::io::Result<()> {
    // SAFETY: plain syscalls on a socket we own; `ifreq` is zero-initialised
    // and its name is NUL-terminated.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut ifr: libc::ifreq = std::mem::zeroed();
        for (d, s) in ifr.ifr_name.iter_mut().zip(b"lo\0") {
            *d = *s as libc::c_char;
        }
        let mut rc = libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut ifr);
        if rc == 0 {
            ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            rc = libc::ioctl(fd, libc::SIOCSIFFLAGS, &ifr);
        }
        let err = std::io::Error::last_os_error();
        libc::close(fd);
        if rc != 0 { Err(err) } else { Ok(()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sysctl_names_map_to_proc_paths() {
        assert_eq!(
            sysctl_path("net.ipv4.ip_unprivileged_port_start"),
            "net/ipv4/ip_unprivileged_port_start"
        );
        assert_eq!(
            sysctl_path("net/ipv4/conf/eth0.1/rp_filter"),
            "net/ipv4/conf/eth0.1/rp_filter"
        );
    }

    #[test]
    fn unpin_of_a_missing_dir_is_fine() {
        let d = tempfile::tempdir().unwrap();
        unpin(&d.path().join("nope")).unwrap();
        assert!(!is_pinned(&d.path().join("nope")));
    }
}
