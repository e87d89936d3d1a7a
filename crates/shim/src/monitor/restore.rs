//! Start of a container created to be restored from a checkpoint: CRIU
//! restores the checkpoint's process tree in place of the init
//! libcontainer created, and the monitor adopts it.
//!
//! Why this shape: libcontainer 0.7 has no restore, and cannot adopt a
//! process it did not start. But its create already did everything a
//! restore needs around the process (the cgroup with its limits, the state
//! dir kill/delete work from, the bundle), so the restore keeps all that:
//! the waiting init is killed and reaped (its exit is not the container's),
//! criu runs as the monitor's child inside the container's cgroups
//! (`--manage-cgroups=ignore`: the restored tree inherits them) with
//! `--restore-sibling --restore-detached`, so the restored init is the
//! monitor's child like any container's init, and libcontainer's state is
//! pointed at it (`set_pid`, `Running`, saved). From then on kill, stop,
//! delete, exec, update and the reaper treat it as any container. Writing
//! libcontainer's own state (through its API, not its file) was preferred
//! to a second kind of container record in the monitor: every operation
//! stays on one path.
//!
//! criu runs synchronously, bounded by the request's timeout (a restore of
//! a small container takes a few hundred ms): the loop is not served
//! meanwhile, as for libcontainer's create.
//!
//! What criu is given, as runc and CRI-O give it: the new container's
//! rootfs as `--root`; its stdout/stderr (and stdin) pipes for the ones
//! the checkpoint recorded (`descriptors.json`: `--inherit-fd
//! fd[N]:pipe:[ino]`); the pod's pinned network and PID namespaces for the
//! external ones (`extRootNetNS`, `extRootPidNS`); for each external mount
//! of the dump (keyed by its mount point) the new container's source: the
//! spec's bind mounts, and for the cgroup hierarchies the host dir the new
//! container's own mount of it shows.

use std::fs::{self, File};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use libcontainer::container::ContainerStatus;
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::waitpid;
use nix::unistd::Pid;

use super::error::{Op, OpError};
use super::stdio::{stdin_pipe, stdio_pipe};
use super::{Monitor, cgroup_of, now_ns};
use crate::exit_record;
use berth_monitor_protocol::{EventKind, ExitRecord, RestoreFrom, Status};
use berth_mountinfo::Mount;

/// The CRIU images inside the unpacked checkpoint.
const IMAGES_DIR: &str = "checkpoint";
/// CRIU's restore log, its stderr and the restored init's pid, in the
/// checkpoint's dir.
const LOG: &str = "restore.log";
const STDERR: &str = "restore.stderr";
const PIDFILE: &str = "restore.pid";
/// A restore's limit when the request names none.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// Lines of CRIU's log a failure quotes.
const LOG_TAIL_LINES: usize = 12;
/// The exit code of a container whose restore failed (containerd's for a
/// failed start).
const FAILED_EXIT_CODE: i32 = 128;

impl Monitor {
    /// Restores the checkpoint into the created container `id` (its start).
    pub(super) fn restore(&mut self, id: &str) -> Result<(), OpError> {
        let t0 = Instant::now();
        let c = self.get(id)?;
        let Some(from) = c.restore.clone() else {
            return Err(Op::Start.invalid_state(id, "it is not a restore"));
        };
        let init = c.pid;
        let bundle = c.container.bundle().clone();
        let cgroup_dirs: Vec<PathBuf> = cgroup_of(&self.cgroups, &c.cgroup_path)
            .map(|g| {
                g.dirs()
                    .into_iter()
                    .filter(|d| d.is_dir())
                    .map(Path::to_path_buf)
                    .collect()
            })
            .unwrap_or_default();
        // Everything read while the waiting init shows the new container's
        // mounts; a failure here leaves the container CREATED.
        let plan = Plan::new(&bundle, init, &from).map_err(|e| Op::Start.failed(id, e))?;

        // The waiting init goes; its exit is not the container's.
        if init > 0 {
            let _ = kill(Pid::from_raw(init), Signal::SIGKILL);
            let _ = waitpid(Pid::from_raw(init), None);
        }
        let stdin = self.get(id)?.stdin;
        match run_criu(&plan, &from, &cgroup_dirs, stdin) {
            Ok(done) => {
                let pod_id = self.pod_id.clone();
                let c = self.get_mut(id)?;
                c.container
                    .set_pid(done.pid)
                    .set_status(ContainerStatus::Running);
                if let Err(e) = c.container.save() {
                    eprintln!(
                        "berth-monitor {pod_id}: restore {id}: cannot save libcontainer's state: {e}"
                    );
                }
                c.pid = done.pid;
                c.status = Status::Running;
                c.started_at = now_ns();
                c.restore = None;
                // The killed init's pipes are at EOF: the restored tree
                // writes to the new ones.
                c.pipes = [Some(done.stdout), Some(done.stderr)];
                if let Some(w) = done.stdin {
                    c.stdin_pipe = Some(w);
                }
                eprintln!(
                    "berth-monitor {}: restored container {id} from {} (pid {}) in {} ms (criu {} ms)",
                    self.pod_id,
                    from.dir.display(),
                    done.pid,
                    t0.elapsed().as_millis(),
                    done.took.as_millis()
                );
                Ok(())
            }
            Err(why) => {
                eprintln!("berth-monitor {}: restore {id} failed: {why}", self.pod_id);
                self.restore_failed(id);
                Err(Op::Start.failed(id, why))
            }
        }
    }

    /// The container whose restore failed is EXITED, its record written,
    /// whatever CRIU may have left in its cgroup killed.
    fn restore_failed(&mut self, id: &str) {
        let Some(c) = self.ctrs.get_mut(id) else {
            return;
        };
        if let Ok(sig) = libcontainer::signal::Signal::try_from(libc::SIGKILL) {
            let _ = c.container.kill(sig, true);
        }
        let rec = ExitRecord {
            exit_code: FAILED_EXIT_CODE,
            signal: 0,
            finished_at: now_ns(),
            oom_killed: false,
        };
        if let Err(e) = exit_record::write(&self.exits_dir, id, &rec) {
            eprintln!("berth-monitor {}: exit record of {id}: {e}", self.pod_id);
        }
        c.status = Status::Exited;
        c.exit = Some(rec);
        c.restore = None;
        c.close_stdin();
        self.notify(EventKind::Exited, id);
    }
}

/// What the restore of one container needs, read before its waiting init
/// is killed.
#[derive(Debug)]
struct Plan {
    rootfs: PathBuf,
    /// `descriptors.json`: what the checkpointed init's fds 0-2 were.
    descriptors: Vec<String>,
    /// The namespaces the pod pinned, opened: (CRIU's key, fd).
    namespaces: Vec<(&'static str, OwnedFd)>,
    /// `mnt[KEY]:SOURCE` for each mount the dump made external.
    mounts: Vec<(String, PathBuf)>,
}

impl Plan {
    fn new(bundle: &Path, init: i32, from: &RestoreFrom) -> Result<Plan, String> {
        let spec: serde_json::Value = fs::read(bundle.join("config.json"))
            .map_err(|e| format!("cannot read {}/config.json: {e}", bundle.display()))
            .and_then(|b| {
                serde_json::from_slice(&b).map_err(|e| format!("config.json is not JSON: {e}"))
            })?;
        let root = spec
            .pointer("/root/path")
            .and_then(|v| v.as_str())
            .ok_or("config.json names no root.path")?;
        let rootfs = bundle.join(root);
        let descriptors_path = from.dir.join(IMAGES_DIR).join("descriptors.json");
        let descriptors: Vec<String> = fs::read(&descriptors_path)
            .map_err(|e| format!("cannot read {}: {e}", descriptors_path.display()))
            .and_then(|b| {
                serde_json::from_slice(&b)
                    .map_err(|e| format!("descriptors.json is not a list of strings: {e}"))
            })?;
        let mut namespaces = Vec::new();
        for ns in spec
            .pointer("/linux/namespaces")
            .and_then(|v| v.as_array())
            .into_iter()
            .flatten()
        {
            let (Some(kind), Some(path)) = (
                ns.get("type").and_then(|v| v.as_str()),
                ns.get("path").and_then(|v| v.as_str()),
            ) else {
                continue;
            };
            let key = match kind {
                "network" => "extRootNetNS",
                "pid" => "extRootPidNS",
                _ => continue,
            };
            let fd = File::open(path)
                .map_err(|e| format!("cannot open the pod's {kind} namespace {path}: {e}"))?;
            namespaces.push((key, OwnedFd::from(fd)));
        }
        let mut mounts = bind_sources(&spec);
        let own = fs::read_to_string(format!("/proc/{init}/mountinfo"))
            .map_err(|e| format!("cannot read the new container's mounts (init {init}): {e}"))?;
        let host = fs::read_to_string("/proc/self/mountinfo")
            .map_err(|e| format!("cannot read /proc/self/mountinfo: {e}"))?;
        mounts.extend(cgroup_sources(
            &berth_mountinfo::parse(&own),
            &berth_mountinfo::parse(&host),
        ));
        mounts.sort();
        mounts.dedup_by(|a, b| a.0 == b.0);
        Ok(Plan {
            rootfs,
            descriptors,
            namespaces,
            mounts,
        })
    }
}

/// The spec's bind mounts as (destination, source).
fn bind_sources(spec: &serde_json::Value) -> Vec<(String, PathBuf)> {
    spec.get("mounts")
        .and_then(|v| v.as_array())
        .into_iter()
        .flatten()
        .filter(|m| {
            m.get("type").and_then(|v| v.as_str()) == Some("bind")
                || m.get("options")
                    .and_then(|v| v.as_array())
                    .is_some_and(|o| {
                        o.iter()
                            .any(|o| matches!(o.as_str(), Some("bind" | "rbind")))
                    })
        })
        .filter_map(|m| {
            Some((
                m.get("destination")?.as_str()?.to_string(),
                PathBuf::from(m.get("source")?.as_str()?),
            ))
        })
        .collect()
}

/// One line of a mountinfo.
/// For each cgroup mount of the new container (`own`, its mountinfo):
/// the host path it shows, found on the host's mount of the same hierarchy
/// (same device) whose root contains it.
fn cgroup_sources(own: &[Mount], host: &[Mount]) -> Vec<(String, PathBuf)> {
    own.iter()
        .filter(|m| matches!(m.fstype.as_str(), "cgroup" | "cgroup2"))
        .filter_map(|m| {
            let h = host
                .iter()
                .filter(|h| h.dev == m.dev && m.root.starts_with(&h.root))
                .max_by_key(|h| h.root.as_os_str().len())?;
            let rel = m.root.strip_prefix(&h.root).ok()?;
            Some((m.mount_point.display().to_string(), h.mount_point.join(rel)))
        })
        .collect()
}

/// A finished restore.
struct Restored {
    pid: i32,
    stdout: OwnedFd,
    stderr: OwnedFd,
    stdin: Option<OwnedFd>,
    took: Duration,
}

/// Runs `criu restore`, bounded by the request's timeout. An error is the
/// message the start fails with (CRIU's log tail in it).
fn run_criu(
    plan: &Plan,
    from: &RestoreFrom,
    cgroup_dirs: &[PathBuf],
    want_stdin: bool,
) -> Result<Restored, String> {
    let t0 = Instant::now();
    let pipe = |e: io::Error| format!("pipe: {e}");
    let (out_r, out_w) = stdio_pipe().map_err(pipe)?;
    let (err_r, err_w) = stdio_pipe().map_err(pipe)?;
    let (in_r, in_w) = stdin_pipe().map_err(pipe)?;
    // Fds criu inherits: (fd, RES of `--inherit-fd fd[N]:RES`).
    let mut inherit: Vec<(RawFd, String)> = Vec::new();
    let mut seen: Vec<&str> = Vec::new();
    for (n, what) in plan.descriptors.iter().enumerate().take(3) {
        if !what.starts_with("pipe:[") || seen.contains(&what.as_str()) {
            continue;
        }
        seen.push(what);
        let fd = match n {
            0 => in_r.as_raw_fd(),
            1 => out_w.as_raw_fd(),
            _ => err_w.as_raw_fd(),
        };
        inherit.push((fd, what.clone()));
    }
    for (key, fd) in &plan.namespaces {
        inherit.push((fd.as_raw_fd(), key.to_string()));
    }
    let pidfile = from.dir.join(PIDFILE);
    let _ = fs::remove_file(&pidfile);
    let mut args: Vec<String> = vec![
        "restore".into(),
        "--images-dir".into(),
        from.dir.join(IMAGES_DIR).display().to_string(),
        "--work-dir".into(),
        from.dir.display().to_string(),
        "--log-file".into(),
        LOG.into(),
        "-v4".into(),
        "--root".into(),
        plan.rootfs.display().to_string(),
        "--restore-detached".into(),
        "--restore-sibling".into(),
        "--pidfile".into(),
        pidfile.display().to_string(),
        "--manage-cgroups=ignore".into(),
        "--tcp-established".into(),
        "--file-locks".into(),
        "--ext-unix-sk".into(),
    ];
    for (fd, res) in &inherit {
        args.push("--inherit-fd".into());
        args.push(format!("fd[{fd}]:{res}"));
    }
    for (key, source) in &plan.mounts {
        args.push("--external".into());
        args.push(format!("mnt[{key}]:{}", source.display()));
    }
    let stderr = File::create(from.dir.join(STDERR))
        .map_err(|e| format!("cannot create {}: {e}", from.dir.join(STDERR).display()))?;
    // Prepared before the fork: the child only makes syscalls.
    let procs: Vec<std::ffi::CString> = cgroup_dirs
        .iter()
        .filter_map(|d| std::ffi::CString::new(d.join("cgroup.procs").as_os_str().as_bytes()).ok())
        .collect();
    let fds: Vec<RawFd> = inherit.iter().map(|(fd, _)| *fd).collect();
    let mut cmd = Command::new(&from.criu);
    cmd.args(&args)
        .current_dir(&from.dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(stderr));
    // SAFETY: the monitor is single-threaded; the closure only calls
    // open/write/close/fcntl on memory prepared before the fork.
    unsafe {
        cmd.pre_exec(move || {
            // Into the container's cgroups: the restored tree inherits them.
            for p in &procs {
                let fd = libc::open(p.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd >= 0 {
                    libc::write(fd, b"0".as_ptr().cast(), 1);
                    libc::close(fd);
                }
            }
            for fd in &fds {
                if libc::fcntl(*fd, libc::F_SETFD, 0) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            format!(
                "criu not found at {}: install CRIU 4 (hack/install-criu.sh) and set [checkpoint] criu_path",
                from.criu.display()
            )
        } else {
            format!("cannot run {}: {e}", from.criu.display())
        }
    })?;
    let timeout = match from.timeout_ms {
        0 => DEFAULT_TIMEOUT,
        ms => Duration::from_millis(ms),
    };
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if t0.elapsed() < timeout => std::thread::sleep(Duration::from_millis(2)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "criu restore did not finish within {} ms (killed); the end of CRIU's log:\n{}",
                    timeout.as_millis(),
                    log_tail(&from.dir)
                ));
            }
            Err(e) => return Err(format!("waiting for criu: {e}")),
        }
    };
    let took = t0.elapsed();
    if !status.success() {
        return Err(format!(
            "criu restore failed ({status}); the end of CRIU's log:\n{}",
            log_tail(&from.dir)
        ));
    }
    let pid: i32 = fs::read_to_string(&pidfile)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("criu restore wrote no pid to {}", pidfile.display()))?;
    // The monitor's copies of the restored tree's ends go; it keeps its own
    // (stdin's write end only for a container with stdin whose checkpointed
    // init read a pipe).
    drop((out_w, err_w, in_r));
    let stdin_is_pipe = plan
        .descriptors
        .first()
        .is_some_and(|d| d.starts_with("pipe:["));
    Ok(Restored {
        pid,
        stdout: out_r,
        stderr: err_r,
        stdin: (want_stdin && stdin_is_pipe).then_some(in_w),
        took,
    })
}

/// CRIU's stderr and the last lines of its restore log.
fn log_tail(dir: &Path) -> String {
    let stderr = fs::read_to_string(dir.join(STDERR)).unwrap_or_default();
    let log = match fs::read(dir.join(LOG)) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
        }
        Err(e) => format!("(no log at {}: {e})", dir.join(LOG).display()),
    };
    match stderr.trim() {
        "" => log,
        s => format!("{s}\n{log}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_mounts_map_to_the_host_dirs_they_show() {
        let own = berth_mountinfo::parse(
            "600 500 0:33 /berth/c1 /sys/fs/cgroup/memory ro,nosuid - cgroup cgroup rw,memory\n\
             601 500 0:34 /berth/c1 /sys/fs/cgroup/cpu,cpuacct ro - cgroup cgroup rw,cpu,cpuacct\n\
             602 500 0:5 /null /proc/kcore rw - devtmpfs udev rw\n",
        );
        let host = berth_mountinfo::parse(
            "30 20 0:33 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n\
             31 20 0:34 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n\
             32 20 0:35 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids\n",
        );
        assert_eq!(
            cgroup_sources(&own, &host),
            [
                (
                    "/sys/fs/cgroup/memory".to_string(),
                    PathBuf::from("/sys/fs/cgroup/memory/berth/c1")
                ),
                (
                    "/sys/fs/cgroup/cpu,cpuacct".to_string(),
                    PathBuf::from("/sys/fs/cgroup/cpu,cpuacct/berth/c1")
                ),
            ]
        );
    }

    #[test]
    fn only_bind_mounts_are_external_sources() {
        let spec = serde_json::json!({"mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/etc/hosts", "type": "bind", "source": "/p/hosts", "options": ["rbind"]},
            {"destination": "/dev/shm", "source": "/p/shm", "options": ["bind", "ro"]},
        ]});
        assert_eq!(
            bind_sources(&spec),
            [
                ("/etc/hosts".to_string(), PathBuf::from("/p/hosts")),
                ("/dev/shm".to_string(), PathBuf::from("/p/shm")),
            ]
        );
    }
}
