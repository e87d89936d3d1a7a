//! Pinned pod namespaces, without a pause process (like CRI-O's `pinns`).
//!
//! `unshare(2)` acts on the calling thread only and berthd runs many threads,
//! so the namespaces are made by a short-lived child: berthd re-executes itself
//! as `berthd pin-namespaces ...` ([`child_main`], run before tokio starts, so
//! single-threaded). The child unshares, sets the hostname, applies sysctls,
//! brings `lo` up, bind-mounts `/proc/self/ns/X` onto `<dir>/X` and exits; the
//! bind mounts keep the namespaces alive.
//!
//! A PID namespace can't be kept by a pin alone: once its init dies no
//! process can enter it. So for a pod whose PID mode is POD the child also
//! unshares a PID namespace and forks Berth's pod init into it
//! ([`fork_pod_init`]; `berth_shim::pod_init`, run from berthd's sealed copy
//! of `berth-monitor`): PID 1 of the pod, it reaps orphans (as the pause
//! container does) and lives until StopPodSandbox kills it. It is detached (own session, stdio closed)
//! and is reparented to the host's init when the child exits, so it outlives
//! berthd like the monitors do. The child also mounts the pod's /dev/shm tmpfs.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, unshare};

use berth_spec::userns::{IdRange, UsernsMaps};

use super::record::{Pins, PodInit};

/// Size of a pod's /dev/shm tmpfs (what the kubelet's pause container and
/// containerd give a pod).
const SHM_SIZE: &str = "size=65536k";

/// The hidden subcommand name; `main()` dispatches on it before anything else.
pub const SUBCOMMAND: &str = "pin-namespaces";

/// What the child must make.
#[derive(Debug, Default)]
pub struct PinRequest {
    pub net: bool,
    pub ipc: bool,
    pub uts: bool,
    /// Make a PID namespace held by a pod init.
    pub pid: bool,
    /// Child side: the inherited fd of the sealed copy the pod init runs from.
    pub init_exe_fd: Option<std::os::fd::RawFd>,
    /// Mount the pod's /dev/shm tmpfs here.
    pub shm: Option<PathBuf>,
    pub hostname: String,
    pub sysctls: BTreeMap<String, String>,
    /// Make a user namespace with these maps first, and the other
    /// namespaces inside it (`hostUsers: false`).
    pub userns: Option<UsernsMaps>,
}

/// What the child made.
#[derive(Debug, Default)]
pub struct Pinned {
    pub pins: Pins,
    pub init: Option<PodInit>,
    pub shm: Option<PathBuf>,
}

/// berthd side: runs the child and returns the pin paths under `ns_dir`.
/// On failure, whatever the child made is undone by the caller's [`unpin`]
/// (the child kills a pod init it forked before failing).
pub async fn pin(ns_dir: &Path, req: &PinRequest) -> anyhow::Result<Pinned> {
    let mut cmd = tokio::process::Command::new("/proc/self/exe");
    cmd.arg(SUBCOMMAND).arg("--dir").arg(ns_dir);
    // The pod init runs from the sealed copy of berth-monitor that monitors
    // run from (made at startup, shared): the pod's containers can open
    // /proc/1/exe, and must reach no file on the host there. The helper
    // inherits the fd (held open here until it exits) and execs it.
    let init_exe = match req.pid {
        true => Some(sealed_monitor().await?),
        false => None,
    };
    if let Some(exe) = &init_exe {
        let fd = exe.as_raw_fd();
        cmd.arg("--init-exe-fd").arg(fd.to_string());
        // SAFETY: fcntl (async-signal-safe) on an fd this process holds
        // open, in the forked child only, so that its exec keeps it.
        unsafe {
            cmd.pre_exec(move || {
                if libc::fcntl(fd, libc::F_SETFD, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    for (on, flag) in [
        (req.net, "--net"),
        (req.ipc, "--ipc"),
        (req.uts, "--uts"),
        (req.pid, "--pid"),
    ] {
        if on {
            cmd.arg(flag);
        }
    }
    if let Some(shm) = &req.shm {
        cmd.arg("--shm").arg(shm);
    }
    if req.uts && !req.hostname.is_empty() {
        cmd.arg("--hostname").arg(&req.hostname);
    }
    for (k, v) in &req.sysctls {
        cmd.arg("--sysctl").arg(format!("{k}={v}"));
    }
    if let Some(m) = &req.userns {
        cmd.arg("--userns").arg(format!(
            "{}:{}:{}:{}",
            m.uid.host_id, m.uid.length, m.gid.host_id, m.gid.length
        ));
    }
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(10), cmd.output())
        .await
        .context("namespace pinning helper did not finish within 10 s")?
        .context("cannot run the namespace pinning helper")?;
    drop(init_exe);
    if !out.status.success() {
        bail!(
            "namespace pinning failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let init = if req.pid {
        let out = String::from_utf8_lossy(&out.stdout);
        let mut words = out.split_whitespace();
        let parsed = (|| {
            let pid = words.next()?.parse().ok()?;
            let start_time = words.next()?.parse().ok()?;
            Some(PodInit { pid, start_time })
        })();
        Some(parsed.with_context(|| {
            format!("pinning helper printed {out:?}, not \"<pid> <start time>\"")
        })?)
    } else {
        None
    };
    let at = |on: bool, name: &str| on.then(|| ns_dir.join(name));
    Ok(Pinned {
        pins: Pins {
            net: at(req.net, "net"),
            ipc: at(req.ipc, "ipc"),
            uts: at(req.uts, "uts"),
            pid: at(req.pid, "pid"),
            user: at(req.userns.is_some(), "user"),
        },
        init,
        shm: req.shm.clone(),
    })
}

/// berthd's sealed copy of `berth-monitor` (made by the first caller, or
/// already by startup).
async fn sealed_monitor() -> anyhow::Result<std::sync::Arc<std::os::fd::OwnedFd>> {
    let binary = crate::container::monitor::binary()?;
    tokio::task::spawn_blocking(move || {
        berth_monitor_protocol::sealed::shared_copy(&binary).with_context(|| {
            format!(
                "cannot make the sealed copy of {} the pod init runs from",
                binary.display()
            )
        })
    })
    .await
    .context("sealed copy task failed")?
}

/// `/proc/<pid>/stat` field 22 (start time) of a live, non-zombie process.
fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: count from the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    if matches!(fields.next()?, "Z" | "X") {
        return None;
    }
    fields.nth(18)?.parse().ok()
}

/// True while the pod init lives (same pid, same start time, not a zombie).
pub fn init_alive(init: &PodInit) -> bool {
    start_time(init.pid) == Some(init.start_time)
}

/// SIGKILLs the pod init, which makes the kernel kill every process left in
/// the pod's PID namespace, and waits (up to 2 s) until it is gone.
pub async fn kill_init(init: &PodInit) -> anyhow::Result<()> {
    if !init_alive(init) {
        return Ok(());
    }
    match nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(init.pid),
        nix::sys::signal::Signal::SIGKILL,
    ) {
        Ok(()) | Err(Errno::ESRCH) => {}
        Err(e) => return Err(e).with_context(|| format!("cannot kill pod init {}", init.pid)),
    }
    for _ in 0..200 {
        if !init_alive(init) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    bail!("pod init {} still alive 2 s after SIGKILL", init.pid)
}

/// SIGKILLs every process in the PID namespace pinned at `pin` (the pod
/// init of a pod whose record was never written: a crash mid-RunPodSandbox)
/// and waits (up to 2 s) until none is left alive: startup cleanup is done
/// before berthd serves. Scans /proc, so only for startup cleanup.
pub fn kill_pinned_pid_namespace(pin: &Path) {
    use std::os::unix::fs::MetadataExt;
    if !is_pinned(pin) {
        return;
    }
    let Ok(ino) = std::fs::metadata(pin).map(|m| m.ino()) else {
        return;
    };
    let want = format!("pid:[{ino}]");
    for _ in 0..200 {
        let alive = live_pids_in(&want);
        if alive.is_empty() {
            return;
        }
        for pid in alive {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    tracing::warn!(pin = %pin.display(), "processes of a crashed pod still alive 2 s after SIGKILL");
}

/// The live (not zombie) processes whose PID namespace link reads `ns`.
fn live_pids_in(ns: &str) -> Vec<i32> {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    procs
        .flatten()
        .filter_map(|p| {
            let pid = p.file_name().to_str()?.parse::<i32>().ok()?;
            let link = std::fs::read_link(p.path().join("ns/pid")).ok()?;
            if link.as_os_str() != ns {
                return None;
            }
            // State: the field after the parenthesised command name.
            let stat = std::fs::read_to_string(p.path().join("stat")).ok()?;
            let state = stat.rsplit_once(") ")?.1.chars().next()?;
            (state != 'Z').then_some(pid)
        })
        .collect()
}

/// Unmounts and deletes every pin under `ns_dir`, then the dir's own mount,
/// and the pod's /dev/shm (`shm`). Safe on a partly made or already removed dir.
pub fn unpin(ns_dir: &Path, shm: Option<&Path>) -> anyhow::Result<()> {
    if let Some(shm) = shm {
        detach(shm)?;
    }
    for name in ["net", "ipc", "uts", "pid", "user"] {
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

/// Unmounts `p` (lazily); not being a mount point is fine.
pub(crate) fn detach(p: &Path) -> anyhow::Result<()> {
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
            Some("--pid") => req.pid = true,
            Some("--init-exe-fd") => {
                let v = value()?;
                req.init_exe_fd = Some(
                    v.to_str()
                        .and_then(|v| v.parse().ok())
                        .with_context(|| format!("--init-exe-fd {v:?}: not an fd"))?,
                );
            }
            Some("--shm") => req.shm = Some(PathBuf::from(value()?)),
            Some("--hostname") => req.hostname = value()?.to_string_lossy().into_owned(),
            Some("--sysctl") => {
                let kv = value()?.to_string_lossy().into_owned();
                let (k, v) = kv.split_once('=').context("--sysctl needs key=value")?;
                req.sysctls.insert(k.to_string(), v.to_string());
            }
            Some("--userns") => req.userns = Some(parse_userns(&value()?)?),
            _ => bail!("unknown argument {a:?}"),
        }
    }
    let dir = dir.context("--dir is required")?;
    if req.pid && req.init_exe_fd.is_none() {
        bail!("--pid needs --init-exe-fd (the sealed copy the pod init runs from)");
    }
    match req.userns {
        None => pin_here(&dir, &req),
        Some(maps) => pin_in_userns(&dir, &req, maps),
    }
}

/// `--userns UIDHOST:UIDLEN:GIDHOST:GIDLEN`.
fn parse_userns(v: &std::ffi::OsStr) -> anyhow::Result<UsernsMaps> {
    let v = v.to_string_lossy();
    let n: Vec<u32> = v
        .split(':')
        .map(str::parse)
        .collect::<Result<_, _>>()
        .with_context(|| format!("--userns {v:?}: not four numbers"))?;
    let [uh, ul, gh, gl] = n[..] else {
        bail!("--userns {v:?}: not four numbers");
    };
    Ok(UsernsMaps {
        uid: IdRange {
            host_id: uh,
            length: ul,
        },
        gid: IdRange {
            host_id: gh,
            length: gl,
        },
    })
}

/// Makes the namespaces in this process (they belong to the host's user
/// namespace) and pins them.
fn pin_here(dir: &Path, req: &PinRequest) -> anyhow::Result<()> {
    enter_namespaces(req)?;
    let init = match req.pid {
        true => Some(fork_pod_init(&init_root(dir)?, req)?),
        false => None,
    };
    pin_made(dir, req, "self", None, init)
}

/// Pins the namespaces process `proc` ("self" or a pid) made (its user
/// namespace too when `userns`), mounts the pod's /dev/shm and pins the pod
/// init's PID namespace. On failure the init is killed: nothing pins its
/// namespace yet, so nothing else would end it.
fn pin_made(
    dir: &Path,
    req: &PinRequest,
    proc: &str,
    userns: Option<UsernsMaps>,
    init: Option<nix::unistd::Pid>,
) -> anyhow::Result<()> {
    let pinned = (|| {
        pin_dir(dir)?;
        if userns.is_some() {
            pin_ns(dir, "user", proc)?;
        }
        for (on, name) in [(req.net, "net"), (req.ipc, "ipc"), (req.uts, "uts")] {
            if on {
                pin_ns(dir, name, proc)?;
            }
        }
        if let Some(shm) = &req.shm {
            mount_shm(shm, userns)?;
        }
        match init {
            Some(init) => finish_pod_init(&dir.join("pid"), init),
            None => Ok(()),
        }
    })();
    if pinned.is_err()
        && let Some(init) = init
    {
        let _ = nix::sys::signal::kill(init, nix::sys::signal::Signal::SIGKILL);
    }
    pinned
}

/// The namespaces of a `hostUsers: false` pod. A user namespace's maps can
/// only be written from outside it, and the namespaces made inside it can
/// only be pinned (bind-mounted on the host) from outside it: so a child
/// unshares the user namespace, this process writes its maps, the child
/// becomes the pod's root and makes the other namespaces (and the pod
/// init), and this process pins them from /proc/<child>/ns before letting
/// the child exit.
fn pin_in_userns(dir: &Path, req: &PinRequest, maps: UsernsMaps) -> anyhow::Result<()> {
    use nix::unistd::{ForkResult, fork};
    let root = if req.pid { Some(init_root(dir)?) } else { None };
    let (from_child, child_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("pipe2")?;
    let (child_r, to_child) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("pipe2")?;
    // SAFETY: this process is single-threaded (the subcommand runs before
    // any runtime starts), so the child may run arbitrary code.
    let child = match unsafe { fork() }.context("cannot fork the user namespace's first process")? {
        ForkResult::Child => {
            drop((from_child, to_child));
            userns_child(req, root.as_deref(), child_r, child_w)
        }
        ForkResult::Parent { child } => child,
    };
    drop((child_r, child_w));
    let made = (|| {
        let mut from_child = std::io::BufReader::new(std::fs::File::from(from_child));
        let mut line = String::new();
        use std::io::BufRead;
        from_child
            .read_line(&mut line)
            .context("reading the user namespace child")?;
        if line.trim() != "unshared" {
            bail!("cannot make the user namespace: {}", line.trim());
        }
        for (file, range) in [("uid_map", maps.uid), ("gid_map", maps.gid)] {
            let path = format!("/proc/{child}/{file}");
            std::fs::write(&path, range.map_line())
                .with_context(|| format!("cannot write {path} ({})", range.map_line()))?;
        }
        nix::unistd::write(&to_child, b"m").context("telling the child its maps are written")?;
        line.clear();
        from_child
            .read_line(&mut line)
            .context("reading the user namespace child")?;
        let init: i32 = match line.trim().strip_prefix("made ") {
            Some(pid) => pid.parse().context("the child's pod init pid")?,
            None => bail!("{}", line.trim()),
        };
        let init = (init > 0).then(|| nix::unistd::Pid::from_raw(init));
        pin_made(dir, req, &child.as_raw().to_string(), Some(maps), init)
    })();
    // The child exits when its pipe closes; the pins hold what it made.
    drop(to_child);
    let _ = nix::sys::wait::waitpid(child, None);
    made
}

/// The user namespace's first process: unshares it, waits for its maps,
/// becomes the pod's root, makes the pod's namespaces and reports
/// "made <pod init pid or 0>" (or the error), then waits for the parent's
/// pins before exiting.
fn userns_child(
    req: &PinRequest,
    init_root: Option<&Path>,
    from_parent: std::os::fd::OwnedFd,
    to_parent: std::os::fd::OwnedFd,
) -> ! {
    let mut out = std::fs::File::from(to_parent);
    let mut report = |line: String| {
        use std::io::Write;
        let _ = out.write_all(format!("{line}\n").as_bytes());
    };
    let wait_parent = || {
        let mut b = [0u8; 1];
        nix::unistd::read(&from_parent, &mut b)
    };
    let made = (|| -> anyhow::Result<i32> {
        unshare(CloneFlags::CLONE_NEWUSER).context("unshare(CLONE_NEWUSER)")?;
        report("unshared".into());
        if wait_parent().context("waiting for the maps")? != 1 {
            bail!("the parent did not write the maps");
        }
        let root_u = nix::unistd::Uid::from_raw(0);
        let root_g = nix::unistd::Gid::from_raw(0);
        nix::unistd::setresgid(root_g, root_g, root_g).context("setresgid to the pod's root")?;
        nix::unistd::setgroups(&[]).context("setgroups")?;
        nix::unistd::setresuid(root_u, root_u, root_u).context("setresuid to the pod's root")?;
        enter_namespaces(req)?;
        match init_root {
            Some(root) => Ok(fork_pod_init(root, req)?.as_raw()),
            None => Ok(0),
        }
    })();
    match made {
        Ok(init) => report(format!("made {init}")),
        // The parent reads it in place of "unshared" or of "made".
        Err(e) => report(format!("{e:#}").replace('\n', " ")),
    }
    // Until the parent has pinned the namespaces (it closes the pipe).
    let _ = wait_parent();
    // SAFETY: _exit in a forked child: no destructors, no atexit handlers.
    unsafe { libc::_exit(0) }
}

/// Unshares the pod's network, IPC and UTS namespaces in this process and
/// sets them up (hostname, `lo`, sysctls).
fn enter_namespaces(req: &PinRequest) -> anyhow::Result<()> {
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
    Ok(())
}

/// The pin dir becomes its own unbindable mount (as CRI-O's pinns does): the nsfs
/// binds under it neither propagate to peer mounts nor get copied by a later
/// recursive bind (a container bind-mounting the state dir).
fn pin_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    mount(Some(dir), dir, None::<&str>, MsFlags::MS_BIND, None::<&str>)
        .with_context(|| format!("cannot bind {} onto itself", dir.display()))?;
    mount(
        None::<&str>,
        dir,
        None::<&str>,
        MsFlags::MS_UNBINDABLE,
        None::<&str>,
    )
    .with_context(|| format!("cannot make {} unbindable", dir.display()))
}

/// Pins namespace `name` of process `proc` ("self" or a pid) at `dir/name`.
fn pin_ns(dir: &Path, name: &str, proc: &str) -> anyhow::Result<()> {
    let pin = dir.join(name);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&pin)
        .with_context(|| format!("cannot create {}", pin.display()))?;
    let src = format!("/proc/{proc}/ns/{name}");
    mount(
        Some(src.as_str()),
        &pin,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .with_context(|| format!("cannot bind {src} onto {}", pin.display()))
}

/// The pod's /dev/shm tmpfs; in a user namespace its root is the pod's root's.
fn mount_shm(shm: &Path, userns: Option<UsernsMaps>) -> anyhow::Result<()> {
    std::fs::create_dir_all(shm).with_context(|| format!("cannot create {}", shm.display()))?;
    let mut opts = format!("mode=1777,{SHM_SIZE}");
    if let Some(m) = userns {
        opts.push_str(&format!(",uid={},gid={}", m.uid.host_id, m.gid.host_id));
    }
    mount(
        Some("shm"),
        shm,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some(opts.as_str()),
    )
    .with_context(|| format!("cannot mount the pod's /dev/shm tmpfs on {}", shm.display()))
}

/// The pod init's empty root dir (its cwd and chroot).
fn init_root(dir: &Path) -> anyhow::Result<PathBuf> {
    let root = dir.join("init-root");
    std::fs::create_dir_all(&root).with_context(|| format!("cannot create {}", root.display()))?;
    Ok(root)
}

/// Unshares a PID namespace and forks the pod init into it as PID 1; returns
/// once it has executed (or the exec failed).
///
/// The child execs the sealed copy of `berth-monitor` it was handed
/// (`req.init_exe_fd`) as `berth-pod-init`: a fresh image (no heap or
/// mappings of this helper, and a command line that shows no host paths to
/// the pod's containers, which see it as PID 1).
fn fork_pod_init(root: &Path, req: &PinRequest) -> anyhow::Result<nix::unistd::Pid> {
    let exe = req
        .init_exe_fd
        .context("no sealed copy to run the pod init from")?;
    use nix::unistd::{ForkResult, fork};
    // Reports an exec failure; closed (EOF) by a successful exec.
    let (rd, wr) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("pipe2")?;
    unshare(CloneFlags::CLONE_NEWPID).context("unshare(CLONE_NEWPID)")?;
    // SAFETY: this process is single-threaded (the subcommand runs before
    // any runtime starts), so the child may run arbitrary code.
    let child = match unsafe { fork() }.context("cannot fork the pod init")? {
        ForkResult::Child => exec_pod_init(root, wr, exe),
        ForkResult::Parent { child } => child,
    };
    drop(wr);
    let mut err = [0u8; 4];
    let read = nix::unistd::read(&rd, &mut err).context("reading the pod init's exec status");
    match read {
        Ok(0) => Ok(child),
        other => {
            let _ = nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
            let _ = nix::sys::wait::waitpid(child, None);
            match other {
                Ok(_) => bail!(
                    "cannot execute the pod init: {}",
                    Errno::from_raw(i32::from_ne_bytes(err))
                ),
                Err(e) => Err(e),
            }
        }
    }
}

/// Pins the pod init's PID namespace at `pin` and prints "<pid> <start
/// time>" for berthd; kills the init on failure.
fn finish_pod_init(pin: &Path, child: nix::unistd::Pid) -> anyhow::Result<()> {
    let pinned = (|| {
        pin_ns(
            pin.parent().context("pid pin has no dir")?,
            "pid",
            &child.as_raw().to_string(),
        )?;
        start_time(child.as_raw()).context("the pod init died at once")
    })();
    match pinned {
        Ok(start) => {
            println!("{child} {start}");
            Ok(())
        }
        Err(e) => {
            let _ = nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
            // Our child in the host flow; the user namespace child's otherwise.
            let _ = nix::sys::wait::waitpid(child, Some(nix::sys::wait::WaitPidFlag::WNOHANG));
            Err(e)
        }
    }
}

/// Forked child: detach, then exec the sealed copy `exe` as the pod init
/// (cwd = its empty root).
fn exec_pod_init(root: &Path, status: std::os::fd::OwnedFd, exe: std::os::fd::RawFd) -> ! {
    let _ = nix::unistd::setsid();
    if let Err(e) = nix::unistd::chdir(root) {
        // Never an init rooted at the host's / (its chroot(".") follows).
        // SAFETY: write and _exit in a forked child.
        unsafe {
            libc::write(
                status.as_raw_fd(),
                (e as i32).to_ne_bytes().as_ptr().cast(),
                4,
            );
            libc::_exit(127)
        }
    }
    // SAFETY: plain syscalls on fds this process owns, then exec or _exit;
    // nothing else runs in this process.
    unsafe {
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        if null >= 0 {
            for fd in 0..3 {
                libc::dup2(null, fd);
            }
        }
        // Every fd above stderr closes at the exec: above all the stdout
        // pipe to berthd, which waits for its EOF; the status pipe (its EOF
        // says the exec worked); and `exe` (exec'd by fd, the init keeps
        // no fd of it).
        let marked = libc::close_range(3, u32::MAX, libc::CLOSE_RANGE_CLOEXEC as libc::c_int);
        let argv = [
            berth_monitor_protocol::sealed::POD_INIT_ARGV0
                .as_ptr()
                .cast_mut(),
            std::ptr::null_mut(),
        ];
        let envp = [std::ptr::null_mut()];
        if marked == 0 {
            libc::execveat(
                exe,
                c"".as_ptr(),
                argv.as_ptr(),
                envp.as_ptr(),
                libc::AT_EMPTY_PATH,
            );
        }
        let err = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
        libc::write(status.as_raw_fd(), err.to_ne_bytes().as_ptr().cast(), 4);
        libc::_exit(127)
    }
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
        unpin(&d.path().join("nope"), Some(&d.path().join("shm"))).unwrap();
        assert!(!is_pinned(&d.path().join("nope")));
    }
}
