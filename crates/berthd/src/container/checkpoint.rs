//! CheckpointContainer: the running container dumped by CRIU with
//! `--leave-running` (it goes on running, as the kubelet's forensic
//! checkpointing expects) into an archive in the layout CRI-O and
//! containerd write (see [`super::checkpoint_archive`]).
//!
//! Who runs criu: berthd, as a child process of its own, not the pod's
//! monitor nor libcontainer. libcontainer 0.7's `Container::checkpoint`
//! would have to run in the monitor (libcontainer stays out of berthd), where
//! a dump of seconds would stall the single-threaded monitor and with it
//! every other request of the pod; and it finds criu only as `criu` on the
//! PATH (`rust_criu::Criu::new()`, no way to pass a path), so the monitor's
//! environment would decide which CRIU runs. What a dump needs is the
//! container's pid (CRIU seizes the tree with ptrace: root suffices, the
//! tree need not be its child), its OCI spec (which bind mounts and
//! namespaces are external) and its upper dir: berthd has all three. Here
//! criu is a tokio child under the request's deadline, killed when it
//! passes, and when berthd dies (crate::lifeline: a criu killed mid-dump
//! detaches from the tree it seized, which runs on); other containers and
//! pods are not held up.
//!
//! The dump's options follow libcontainer's (and runc's): the spec's bind
//! mounts and the cgroup mounts are external mounts, a pinned (pod-shared)
//! network or PID namespace is an external namespace (`extRootNetNS`,
//! `extRootPidNS`), so CRIU records a reference, not the pod's veth.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context;
use berth_monitor_protocol::Status as MonStatus;

use super::checkpoint_archive::{self, ArchiveInput};
use super::{ContainerError, Containers, State, internal, monitor};

/// The CRIU images dir inside the work dir (and the archive).
pub const IMAGES_DIR: &str = "checkpoint";
/// CRIU's log, at the top of the work dir (and the archive).
pub const DUMP_LOG: &str = "dump.log";
/// Lines of the CRIU log a failure quotes.
const LOG_TAIL_LINES: usize = 12;
/// In the work dir: the path of the network namespace the dump locks, for
/// [`unlock_network`] after a dump that did not end by itself.
const NETNS_FILE: &str = "netns";
/// The chain of CRIU's network lock (`network_lock_internal`, iptables).
const CRIU_CHAIN: &str = "CRIU";

/// What a finished checkpoint reports (logged; tests read the archive).
#[derive(Debug)]
pub struct Checkpointed {
    pub dump: Duration,
    pub total: Duration,
    pub archive_bytes: u64,
}

/// The CRIU settings of one checkpoint.
#[derive(Debug, Clone)]
pub struct CriuOptions {
    /// The criu binary: absolute, or a bare name looked up on PATH.
    pub criu: PathBuf,
    /// The dump's limit.
    pub timeout: Duration,
}

impl Containers {
    /// Dumps the running container `id` with CRIU (leaving it running) and
    /// writes the checkpoint archive at `location` (an absolute path whose
    /// parent exists; checked by the caller, opened safely here).
    pub async fn checkpoint(
        &self,
        id: &str,
        location: &Path,
        opts: &CriuOptions,
    ) -> Result<Checkpointed, ContainerError> {
        let started = Instant::now();
        let rec = self.must(id)?;
        // A stop or remove of this container waits for the dump to end.
        let lock = self.op_lock(&rec.id);
        let _op = lock.lock().await;
        let (rec, pid) = self.running_for_checkpoint(&rec.id).await?;
        self.checkpoint_locked(&rec, pid, location, opts, None, started)
            .await
    }

    /// The container's record and its init's pid, when it runs (its op
    /// lock held by the caller).
    pub(super) async fn running_for_checkpoint(
        &self,
        id: &str,
    ) -> Result<(super::ContainerRecord, i32), ContainerError> {
        let rec = self.refresh(self.must(id)?).await?;
        if rec.state != State::Running {
            return Err(ContainerError::FailedPrecondition(format!(
                "container {} is {:?}, not running: only a running container can be checkpointed",
                rec.id,
                rec.state.to_cri()
            )));
        }
        let live = monitor::state(&self.monitor_dir(&rec.pod_id), &rec.pod_id, &rec.id)
            .await
            .map_err(internal)?;
        if live.status != MonStatus::Running || live.pid <= 0 {
            return Err(ContainerError::FailedPrecondition(format!(
                "container {} is not running (its monitor reports {:?}, pid {})",
                rec.id, live.status, live.pid
            )));
        }
        Ok((rec, live.pid))
    }

    /// The dump and the archive of the running `rec` (init `pid`), its op
    /// lock held by the caller. `frozen`: the freezer cgroup the caller
    /// froze the container in (a pod checkpoint), which CRIU must seize
    /// through (`--freeze-cgroup`) and leaves frozen.
    pub(super) async fn checkpoint_locked(
        &self,
        rec: &super::ContainerRecord,
        pid: i32,
        location: &Path,
        opts: &CriuOptions,
        frozen: Option<&Path>,
        started: Instant,
    ) -> Result<Checkpointed, ContainerError> {
        tracing::info!(pod = %rec.pod_id, container = %rec.id, pid, location = %location.display(), "checkpointing container");

        let work = WorkDir::create(&self.checkpoint_work_dir, &rec.id).map_err(internal)?;
        let (spec_json, args) = {
            let bundle = rec.bundle.clone();
            let work_path = work.path.clone();
            let frozen = frozen.map(Path::to_path_buf);
            crate::blocking::run(move || {
                let spec_json = std::fs::read(bundle.join("config.json"))
                    .with_context(|| format!("cannot read {}/config.json", bundle.display()))?;
                let spec: serde_json::Value = serde_json::from_slice(&spec_json)
                    .context("the container's config.json is not JSON")?;
                let mountinfo = std::fs::read_to_string(format!("/proc/{pid}/mountinfo"))
                    .with_context(|| format!("cannot read /proc/{pid}/mountinfo"))?;
                let mut args = dump_args(pid, &work_path, &spec, &mountinfo)?;
                if let Some(dir) = frozen {
                    args.push("--freeze-cgroup".into());
                    args.push(dir.display().to_string());
                }
                write_descriptors(pid, &work_path.join(IMAGES_DIR))?;
                if let Some(netns) = pinned_netns(&spec) {
                    std::fs::write(work_path.join(NETNS_FILE), netns)
                        .context("cannot write the work dir's netns")?;
                }
                Ok((spec_json, args))
            })
            .await?
        };

        let dump_started = Instant::now();
        run_criu(&opts.criu, &args, &work.path, opts.timeout, &rec.id).await?;
        let dump = dump_started.elapsed();
        tracing::debug!(container = %rec.id, ?dump, "criu dump done");

        let input = ArchiveInput {
            work_dir: work.path.clone(),
            upper_dir: rec.layer_dir.join("upper"),
            spec_json,
            config_json: checkpoint_archive::config_dump(rec)?,
            location: location.to_path_buf(),
        };
        let archive_bytes = crate::blocking::run(move || {
            let n = checkpoint_archive::write(&input)?;
            // The work dir goes with the blocking task's end either way.
            drop(work);
            Ok(n)
        })
        .await?;
        let done = Checkpointed {
            dump,
            total: started.elapsed(),
            archive_bytes,
        };
        tracing::info!(pod = %rec.pod_id, container = %rec.id, dump_ms = done.dump.as_millis() as u64,
            total_ms = done.total.as_millis() as u64, bytes = done.archive_bytes, "container checkpointed");
        Ok(done)
    }
}

/// The criu command line of a dump of `pid`'s tree into `work`.
fn dump_args(
    pid: i32,
    work: &Path,
    spec: &serde_json::Value,
    mountinfo: &str,
) -> anyhow::Result<Vec<String>> {
    let mut args: Vec<String> = vec![
        "dump".into(),
        "--tree".into(),
        pid.to_string(),
        "--images-dir".into(),
        work.join(IMAGES_DIR).display().to_string(),
        "--work-dir".into(),
        work.display().to_string(),
        "--log-file".into(),
        DUMP_LOG.into(),
        "-v4".into(),
        "--leave-running".into(),
        // What runc and CRI-O allow for a kubelet checkpoint: established
        // TCP connections, file locks and sockets to peers outside the tree
        // (the pod's DNS, a host daemon) are dumped instead of failing it.
        "--tcp-established".into(),
        "--file-locks".into(),
        "--ext-unix-sk".into(),
    ];
    let mut external: Vec<String> = Vec::new();
    // Namespaces the pod pinned (a path in the spec): references only.
    let namespaces = spec
        .pointer("/linux/namespaces")
        .and_then(|v| v.as_array())
        .cloned()
        .unwrap_or_default();
    for ns in &namespaces {
        let (Some(kind), Some(path)) = (
            ns.get("type").and_then(|v| v.as_str()),
            ns.get("path").and_then(|v| v.as_str()),
        ) else {
            continue;
        };
        let (name, key) = match kind {
            "network" => ("net", "extRootNetNS"),
            "pid" => ("pid", "extRootPidNS"),
            _ => continue,
        };
        let ino = std::os::unix::fs::MetadataExt::ino(
            &std::fs::metadata(path)
                .with_context(|| format!("cannot stat the pod's {kind} namespace {path}"))?,
        );
        external.push(format!("{name}[{ino}]:{key}"));
    }
    // Bind mounts come from outside the container: CRIU must not try to
    // dump what they show, only where they go (the restore provides them).
    let mounts = spec
        .get("mounts")
        .and_then(|v| v.as_array())
        .cloned()
        .unwrap_or_default();
    let mut points: Vec<String> = Vec::new();
    for m in &mounts {
        let Some(dest) = m.get("destination").and_then(|v| v.as_str()) else {
            continue;
        };
        let typ = m.get("type").and_then(|v| v.as_str()).unwrap_or("");
        let bind = typ == "bind"
            || m.get("options")
                .and_then(|v| v.as_array())
                .is_some_and(|o| {
                    o.iter()
                        .any(|o| matches!(o.as_str(), Some("bind" | "rbind")))
                });
        if bind {
            points.push(dest.to_string());
        }
    }
    // The cgroup hierarchies the container sees (one per v1 controller on
    // a v1 or hybrid host) are the host's, bound in: external too.
    for m in berth_mountinfo::parse(mountinfo) {
        if matches!(m.fstype.as_str(), "cgroup" | "cgroup2") {
            points.push(m.mount_point.display().to_string());
        }
    }
    points.sort();
    points.dedup();
    for p in points {
        external.push(format!("mnt[{p}]:{p}"));
    }
    for e in external {
        args.push("--external".into());
        args.push(e);
    }
    Ok(args)
}

/// `descriptors.json` in the images dir, as runc and crun write it: what
/// the init's fds 0-2 are (`pipe:[ino]`, `/dev/null`, a pty), which a
/// restore hands back to it with `--inherit-fd fd[N]:pipe:[ino]`.
fn write_descriptors(pid: i32, images: &Path) -> anyhow::Result<()> {
    let fds: Vec<String> = (0..3)
        .map(|n| {
            std::fs::read_link(format!("/proc/{pid}/fd/{n}"))
                .map(|p| p.display().to_string())
                .unwrap_or_else(|_| "/dev/null".to_string())
        })
        .collect();
    std::fs::write(images.join("descriptors.json"), serde_json::to_vec(&fds)?)
        .context("cannot write descriptors.json")
}

/// Runs criu with `args`, killed once `timeout` passes; a failure quotes
/// the end of its log.
async fn run_criu(
    criu: &Path,
    args: &[String],
    work: &Path,
    timeout: Duration,
    id: &str,
) -> Result<(), ContainerError> {
    tracing::debug!(container = %id, criu = %criu.display(), ?args, "running criu");
    let mut cmd = tokio::process::Command::new(criu);
    cmd.args(args)
        .current_dir(work)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    // Dies with berthd: never a dump left holding the container.
    let child = crate::lifeline::spawn(cmd).await.map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            ContainerError::FailedPrecondition(format!(
                "criu not found ({}): install CRIU 4 or later (hack/install-criu.sh builds one) \
                 and set [checkpoint] criu_path in berthd's config",
                criu.display()
            ))
        } else {
            internal(anyhow::anyhow!("cannot run {}: {e}", criu.display()))
        }
    })?;
    let out = match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(out) => out.map_err(|e| internal(anyhow::anyhow!("waiting for criu: {e}")))?,
        // Dropping the future kills criu (kill_on_drop); the tree it had
        // seized is released by the kernel as its tracer dies, but its
        // network lock stays: undone here.
        Err(_) => {
            unlock_after_kill(work).await;
            let tail = log_tail(&work.join(DUMP_LOG));
            tracing::warn!(container = %id, ?timeout, "criu dump timed out: killed");
            return Err(ContainerError::DeadlineExceeded(format!(
                "checkpoint of container {id} did not finish within {}s (criu killed); \
                 the end of CRIU's log:\n{tail}",
                timeout.as_secs()
            )));
        }
    };
    if out.status.success() {
        return Ok(());
    }
    if std::os::unix::process::ExitStatusExt::signal(&out.status).is_some() {
        // Killed (not failed: criu unlocks on its own error paths).
        unlock_after_kill(work).await;
    }
    let mut tail = log_tail(&work.join(DUMP_LOG));
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !stderr.trim().is_empty() {
        tail = format!("{}\n{tail}", stderr.trim());
    }
    tracing::warn!(container = %id, status = %out.status, "criu dump failed");
    Err(internal(anyhow::anyhow!(
        "criu dump of container {id} failed ({}); the end of CRIU's log:\n{tail}",
        out.status
    )))
}

/// The last lines of CRIU's log ("(no log)" when there is none).
fn log_tail(path: &Path) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
        }
        Err(e) => format!("(no log at {}: {e})", path.display()),
    }
}

/// The dump's scratch dir, `<root>/checkpoint-work/<id>.<nonce>`: removed
/// when dropped, and at berthd's start whatever a crash left.
pub(super) struct WorkDir {
    pub path: PathBuf,
}

impl WorkDir {
    fn create(base: &Path, id: &str) -> anyhow::Result<WorkDir> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(base)
            .with_context(|| format!("cannot create {}", base.display()))?;
        let nonce = crate::ids::now_ns();
        let path = base.join(format!("{id}.{nonce}"));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(path.join(IMAGES_DIR))
            .with_context(|| format!("cannot create {}/{IMAGES_DIR}", path.display()))?;
        Ok(WorkDir { path })
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(dir = %self.path.display(), error = %e, "cannot remove a checkpoint work dir");
        }
    }
}

/// The pod's network namespace the container joins (a path in its spec),
/// if any: a dump of the container locks it.
fn pinned_netns(spec: &serde_json::Value) -> Option<String> {
    spec.pointer("/linux/namespaces")?
        .as_array()?
        .iter()
        .find(|ns| ns.get("type").and_then(|t| t.as_str()) == Some("network"))?
        .get("path")?
        .as_str()
        .map(str::to_string)
}

/// [`unlock_network_of`] on a blocking thread, for a criu that was killed.
async fn unlock_after_kill(work: &Path) {
    let w = work.to_path_buf();
    let _ = crate::blocking::run(move || {
        unlock_network_of(&w);
        Ok(())
    })
    .await;
}

/// [`unlock_network`] of the namespace a dump in `work` locked, if its
/// criu could have left it locked (the work dir names it).
fn unlock_network_of(work: &Path) {
    if let Ok(netns) = std::fs::read_to_string(work.join(NETNS_FILE)) {
        unlock_network(Path::new(netns.trim()));
    }
}

/// Undoes CRIU's network lock in the network namespace at `netns`: while
/// it dumps, CRIU drops every packet of the namespace but its own (chain
/// `CRIU`, jumped to from INPUT and OUTPUT, IPv4 and IPv6) and removes the
/// chain at the end; a criu killed in between (its deadline, berthd's
/// death) leaves the pod cut off. Removes what is there, as CRIU's unlock
/// does; nothing when there is nothing. Blocking.
fn unlock_network(netns: &Path) {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let Ok(ns) = std::fs::File::open(netns) else {
        return;
    };
    let fd = ns.as_raw_fd();
    let mut removed = false;
    for tool in ["iptables", "ip6tables"] {
        let run = |args: &[&str]| {
            let mut cmd = std::process::Command::new(tool);
            cmd.args(["-w", "-t", "filter"])
                .args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            // SAFETY: setns (async-signal-safe) on an fd this process
            // holds open, in the forked child only.
            unsafe {
                cmd.pre_exec(move || {
                    if nix::libc::setns(fd, nix::libc::CLONE_NEWNET) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
            cmd.status().is_ok_and(|s| s.success())
        };
        if !run(&["-S", CRIU_CHAIN]) {
            continue;
        }
        for hook in ["INPUT", "OUTPUT"] {
            // Each jump once per lock; a bound, should a delete keep succeeding.
            for _ in 0..8 {
                if !run(&["-D", hook, "-j", CRIU_CHAIN]) {
                    break;
                }
            }
        }
        run(&["-F", CRIU_CHAIN]);
        removed |= run(&["-X", CRIU_CHAIN]);
    }
    if removed {
        tracing::warn!(netns = %netns.display(), "removed the network lock of a CRIU dump that did not finish (the pod's traffic was dropped)");
    }
}

/// Undoes what checkpoints a crash interrupted left in `base`: kills a
/// criu still running in a work dir (one that escaped its death signal,
/// see crate::lifeline), unlocks the network its dump locked, thaws the
/// pods a pod checkpoint froze (its thaw marker), then removes the work
/// dirs and markers.
pub(super) fn remove_leftovers(base: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    let entries: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    if entries.is_empty() {
        return;
    }
    for pid in processes_working_in(base) {
        tracing::warn!(
            pid,
            "killing a process left running in an interrupted checkpoint's work dir"
        );
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    for path in &entries {
        let is_marker = path.file_name().is_some_and(|n| {
            n.to_string_lossy()
                .ends_with(super::checkpoint_pod::THAW_MARKER)
        });
        if is_marker {
            for dir in std::fs::read_to_string(path).unwrap_or_default().lines() {
                match berth_cgroup::thaw_dir(Path::new(dir)) {
                    Ok(true) => tracing::warn!(
                        cgroup = dir,
                        "thawed a container an interrupted pod checkpoint left frozen"
                    ),
                    Ok(false) => {}
                    Err(e) => tracing::debug!(cgroup = dir, error = %e, "cannot thaw (gone?)"),
                }
            }
            let _ = std::fs::remove_file(path);
            continue;
        }
        unlock_network_of(path);
        tracing::info!(dir = %path.display(), "removing an interrupted checkpoint's work dir");
        if let Err(err) = std::fs::remove_dir_all(path) {
            tracing::warn!(dir = %path.display(), error = %err, "cannot remove it");
        }
    }
}

/// Processes whose working directory is below `base` (criu runs in its
/// work dir).
fn processes_working_in(base: &Path) -> Vec<i32> {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    procs
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|cwd| cwd.starts_with(base))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_cgroups_and_pinned_namespaces_are_external() {
        let netns = tempfile::NamedTempFile::new().unwrap();
        let ino = std::os::unix::fs::MetadataExt::ino(&netns.as_file().metadata().unwrap());
        let spec = serde_json::json!({
            "mounts": [
                {"destination": "/proc", "type": "proc", "source": "proc"},
                {"destination": "/etc/hosts", "type": "bind", "source": "/x/hosts", "options": ["rbind", "ro"]},
                {"destination": "/data", "source": "/x/data", "options": ["bind"]},
            ],
            "linux": {"namespaces": [
                {"type": "pid"},
                {"type": "network", "path": netns.path()},
                {"type": "ipc", "path": "/nonexistent"},
            ]},
        });
        let mountinfo = "1 0 0:1 / / rw - overlay overlay rw\n\
            2 1 0:2 / /sys/fs/cgroup/memory ro - cgroup cgroup rw,memory\n\
            3 1 0:3 / /proc rw - proc proc rw\n";
        let args = dump_args(42, Path::new("/w"), &spec, mountinfo).unwrap();
        let joined = args.join(" ");
        assert!(joined.starts_with("dump --tree 42 --images-dir /w/checkpoint --work-dir /w"));
        assert!(joined.contains("--leave-running"));
        let ext: Vec<&str> = args
            .windows(2)
            .filter(|w| w[0] == "--external")
            .map(|w| w[1].as_str())
            .collect();
        assert_eq!(
            ext,
            [
                format!("net[{ino}]:extRootNetNS").as_str(),
                "mnt[/data]:/data",
                "mnt[/etc/hosts]:/etc/hosts",
                "mnt[/sys/fs/cgroup/memory]:/sys/fs/cgroup/memory",
            ]
        );
    }

    #[test]
    fn log_tail_keeps_the_last_lines() {
        let f = tempfile::NamedTempFile::new().unwrap();
        let text: String = (0..30).map(|i| format!("line {i}\n")).collect();
        std::fs::write(f.path(), text).unwrap();
        let tail = log_tail(f.path());
        assert!(tail.starts_with("line 18\n"), "{tail}");
        assert!(tail.ends_with("line 29"));
        assert!(log_tail(Path::new("/nonexistent/dump.log")).starts_with("(no log"));
    }
}
