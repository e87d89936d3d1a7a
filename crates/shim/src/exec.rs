//! ExecSync inside a running container, and live cgroup updates.
//!
//! An exec is started with libcontainer's tenant builder, so it joins the
//! container init's namespaces and cgroup and takes the container's own
//! process spec (user, groups, capabilities, no_new_privs, rlimits,
//! AppArmor) with only args/env/cwd replaced. The tenant builder drops the
//! spec's `linux.seccomp`, so a small executor installs the container's
//! seccomp filter itself right before exec.
//!
//! `build()` returns once the process exec'd; from then on the monitor's
//! poll loop reads its stdout/stderr pipes, the SIGCHLD reaper records its
//! exit, and the deferred answer goes back to the waiting connection.

use std::fs::{self, File};
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Instant;

use libcontainer::container::builder::ContainerBuilder;
use libcontainer::oci_spec::runtime::{LinuxResources, LinuxSeccomp, Process, Spec};
use libcontainer::syscall::syscall::SyscallType;
use libcontainer::workload::default::DefaultExecutor;
use libcontainer::workload::{Executor, ExecutorError, ExecutorValidationError};

/// One running exec and what it printed so far.
pub(crate) struct Exec {
    pub ctr: String,
    /// The connection waiting for the answer.
    pub conn: u64,
    pub pid: i32,
    /// Read ends of stdout and stderr; `None` once at EOF.
    pub pipes: [Option<OwnedFd>; 2],
    pub out: [Vec<u8>; 2],
    pub max_output: usize,
    pub truncated: bool,
    pub deadline: Option<Instant>,
    pub timed_out: bool,
    /// Shell-style exit code once reaped.
    pub exit_code: Option<i32>,
}

impl Exec {
    /// Keeps what fits under the cap (both streams together), drops the rest.
    pub fn push(&mut self, idx: usize, data: &[u8]) {
        let used = self.out[0].len() + self.out[1].len();
        let room = self.max_output.saturating_sub(used);
        if data.len() > room {
            self.truncated = true;
        }
        self.out[idx].extend_from_slice(&data[..data.len().min(room)]);
    }
}

/// What to run: the container's process with args (and optionally env and
/// cwd) replaced.
pub(crate) struct ExecSpec<'a> {
    pub args: &'a [String],
    pub env: &'a [String],
    pub cwd: Option<&'a Path>,
}

/// What every exec in a container starts from: the process spec and the
/// seccomp filter of its bundle. Read once per container (the bundle does
/// not change while it lives), not once per exec.
pub(crate) struct ExecBase {
    process: Process,
    seccomp: Option<LinuxSeccomp>,
}

impl ExecBase {
    pub fn load(id: &str, bundle: &Path) -> Result<ExecBase, String> {
        let cfg = Spec::load(bundle.join("config.json"))
            .map_err(|e| format!("exec in container {id}: load config.json: {e}"))?;
        Ok(ExecBase {
            process: cfg.process().clone().unwrap_or_default(),
            seccomp: cfg.linux().as_ref().and_then(|l| l.seccomp().clone()),
        })
    }
}

/// Starts `spec` in container `id` (state under `root`) with the given
/// stdio. Returns the host pid of the process. Blocks until it exec'd (a few
/// ms); the caller handles oom_score_adj and the signal mask as for a create.
pub(crate) fn spawn(
    root: &Path,
    id: &str,
    base: &ExecBase,
    spec: &ExecSpec<'_>,
    stdio: [OwnedFd; 2],
) -> Result<i32, String> {
    if spec.args.is_empty() {
        return Err(format!("exec in container {id}: empty command"));
    }
    let mut process = base.process.clone();
    process.set_args(Some(spec.args.to_vec()));
    process.set_terminal(Some(false));
    process.set_env(Some(merge_env(
        process.env().clone().unwrap_or_default(),
        spec.env,
    )));
    if let Some(cwd) = spec.cwd {
        process.set_cwd(cwd.to_path_buf());
    }
    let nnp = process.no_new_privileges().unwrap_or(false);

    // The tenant builder reads the process from a file: a memfd, reached
    // through /proc/self/fd (it reads it in this process, before cloning),
    // so an exec writes and deletes nothing on disk.
    let memfd = process_memfd(&process)
        .map_err(|e| format!("exec in container {id}: write process spec: {e}"))?;
    let proc_path = format!("/proc/self/fd/{}", memfd.as_raw_fd());
    let devnull = File::open("/dev/null")
        .map_err(|e| format!("exec in container {id}: open /dev/null: {e}"))?;
    let [out_w, err_w] = stdio;
    let built = ContainerBuilder::new(id.to_string(), SyscallType::default())
        .with_root_path(root)
        .map_err(|e| format!("exec in container {id}: {e}"))
        .map(|b| {
            b.with_stdin(devnull)
                .with_stdout(out_w)
                .with_stderr(err_w)
                .with_executor(SeccompExecutor {
                    seccomp: base.seccomp.clone(),
                    nnp,
                })
                .as_tenant()
                .with_process(Some(&proc_path))
                .with_detach(true)
                .build()
        });
    drop(memfd);
    match built? {
        Ok(pid) => Ok(pid.as_raw()),
        Err(e) => Err(format!(
            "exec in container {id}: {}",
            crate::monitor::chain(&e)
        )),
    }
}

/// The process spec as JSON in a close-on-exec memfd.
fn process_memfd(process: &Process) -> std::io::Result<File> {
    let json = serde_json::to_vec(process).map_err(std::io::Error::other)?;
    // SAFETY: a constant NUL-terminated name and plain flags.
    let fd = unsafe { libc::memfd_create(c"berth-exec-process".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: memfd_create just returned this fd; nothing else owns it.
    let mut f = unsafe { <File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    f.write_all(&json)?;
    Ok(f)
}

/// The container's env with `extra` (`KEY=value`) overriding by key.
fn merge_env(mut base: Vec<String>, extra: &[String]) -> Vec<String> {
    let key = |e: &str| e.split('=').next().unwrap_or("").to_string();
    for e in extra {
        let k = key(e);
        base.retain(|b| key(b) != k);
        base.push(e.clone());
    }
    base
}

/// Installs the container's seccomp filter, then execs like libcontainer's
/// default executor. Runs in the exec'd child after capabilities were
/// dropped: without no_new_privs (and without CAP_SYS_ADMIN) the kernel
/// refuses the filter, so then no_new_privs is set first: stricter than the
/// container's init, never looser (runc installs it before dropping caps,
/// which the tenant builder gives no hook for).
#[derive(Clone)]
struct SeccompExecutor {
    seccomp: Option<LinuxSeccomp>,
    nnp: bool,
}

impl Executor for SeccompExecutor {
    fn exec(&self, spec: &Spec) -> Result<(), ExecutorError> {
        if let Some(s) = &self.seccomp {
            let install = || libcontainer::seccomp::initialize_seccomp(s);
            let res = match install() {
                Err(_) if !self.nnp => {
                    // SAFETY: prctl with constant arguments, no pointers.
                    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
                        return Err(ExecutorError::Other(format!(
                            "set no_new_privs for seccomp: {}",
                            std::io::Error::last_os_error()
                        )));
                    }
                    install()
                }
                r => r,
            };
            match res {
                // A notify fd is only for a seccomp agent, which exec has not.
                Ok(Some(fd)) => {
                    // SAFETY: the fd was just returned to us and is owned here.
                    unsafe { libc::close(fd) };
                }
                Ok(None) => {}
                Err(e) => return Err(ExecutorError::Other(format!("seccomp: {e}"))),
            }
        }
        DefaultExecutor {}.exec(spec)
    }

    fn validate(&self, spec: &Spec) -> Result<(), ExecutorValidationError> {
        DefaultExecutor {}.validate(spec)
    }
}

/// Applies `res` to the live cgroup `cgroup` (as libcontainer computed it
/// at create). Written straight to cgroupfs: the shim has no direct
/// libcgroups dependency and these are a handful of files. A hybrid host is
/// driven as v1, like libcontainer does.
pub(crate) fn update_cgroup(cgroup: &Path, res: &LinuxResources) -> Result<(), String> {
    let rel = cgroup.strip_prefix("/").unwrap_or(cgroup);
    let base = Path::new("/sys/fs/cgroup");
    let v2 = base.join("cgroup.controllers").exists();
    let w = |dir: PathBuf, file: &str, val: String| -> Result<(), String> {
        let p = dir.join(file);
        fs::write(&p, &val).map_err(|e| format!("write {val:?} to {}: {e}", p.display()))
    };
    let v1 = |ctrl: &str| base.join(ctrl).join(rel);
    let dir2 = base.join(rel);

    if let Some(cpu) = res.cpu() {
        if v2 {
            if let Some(shares) = cpu.shares() {
                // runc's shares→weight conversion.
                let weight = if shares == 0 {
                    100
                } else {
                    1 + ((shares.clamp(2, 262144) - 2) * 9999) / 262142
                };
                w(dir2.clone(), "cpu.weight", weight.to_string())?;
            }
            if cpu.quota().is_some() || cpu.period().is_some() {
                let quota = match cpu.quota() {
                    Some(q) if q > 0 => q.to_string(),
                    _ => "max".to_string(),
                };
                let period = cpu.period().unwrap_or(100_000);
                w(dir2.clone(), "cpu.max", format!("{quota} {period}"))?;
            }
        } else {
            if let Some(shares) = cpu.shares() {
                w(v1("cpu"), "cpu.shares", shares.to_string())?;
            }
            if let Some(period) = cpu.period() {
                w(v1("cpu"), "cpu.cfs_period_us", period.to_string())?;
            }
            if let Some(quota) = cpu.quota() {
                w(v1("cpu"), "cpu.cfs_quota_us", quota.to_string())?;
            }
        }
        let cs = if v2 { dir2.clone() } else { v1("cpuset") };
        if let Some(cpus) = cpu.cpus() {
            w(cs.clone(), "cpuset.cpus", cpus.clone())?;
        }
        if let Some(mems) = cpu.mems() {
            w(cs, "cpuset.mems", mems.clone())?;
        }
    }

    if let Some(mem) = res.memory() {
        if v2 {
            if let Some(limit) = mem.limit() {
                let v = if limit > 0 {
                    limit.to_string()
                } else {
                    "max".into()
                };
                w(dir2.clone(), "memory.max", v)?;
                // v1 swap is memory+swap; v2's swap.max is swap alone.
                if let Some(swap) = mem.swap() {
                    let s = if swap > 0 && limit > 0 {
                        (swap - limit).max(0).to_string()
                    } else {
                        "max".into()
                    };
                    w(dir2.clone(), "memory.swap.max", s)?;
                }
            }
        } else {
            let dir = v1("memory");
            let limit = mem.limit().map(|l| l.to_string());
            let swap = mem.swap().map(|s| s.to_string());
            // memsw must stay >= limit: raising needs memsw first, lowering
            // needs the limit first. Try limit first, then the other order.
            let set = |first: &str, a: &Option<String>, second: &str, b: &Option<String>| {
                if let Some(a) = a {
                    w(dir.clone(), first, a.clone())?;
                }
                if let Some(b) = b {
                    w(dir.clone(), second, b.clone())?;
                }
                Ok::<(), String>(())
            };
            const L: &str = "memory.limit_in_bytes";
            const S: &str = "memory.memsw.limit_in_bytes";
            set(L, &limit, S, &swap).or_else(|_| set(S, &swap, L, &limit))?;
        }
    }

    if let Some(pages) = res.hugepage_limits() {
        for h in pages {
            let (dir, file) = if v2 {
                (dir2.clone(), format!("hugetlb.{}.max", h.page_size()))
            } else {
                (
                    v1("hugetlb"),
                    format!("hugetlb.{}.limit_in_bytes", h.page_size()),
                )
            };
            w(dir, &file, h.limit().to_string())?;
        }
    }

    if v2 && let Some(unified) = res.unified() {
        for (k, v) in unified {
            if k.contains('/') {
                return Err(format!("unified key {k:?} is not a file name"));
            }
            w(dir2.clone(), k, v.clone())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_override_by_key() {
        let got = merge_env(
            vec!["PATH=/bin".into(), "A=1".into()],
            &["A=2".into(), "B=3".into()],
        );
        assert_eq!(got, ["PATH=/bin", "A=2", "B=3"]);
    }

    #[test]
    fn output_capped_across_streams() {
        let mut e = Exec {
            ctr: "c".into(),
            conn: 0,
            pid: 1,
            pipes: [None, None],
            out: [Vec::new(), Vec::new()],
            max_output: 5,
            truncated: false,
            deadline: None,
            timed_out: false,
            exit_code: None,
        };
        e.push(0, b"abc");
        assert!(!e.truncated);
        e.push(1, b"defg");
        assert_eq!(e.out, [b"abc".to_vec(), b"de".to_vec()]);
        assert!(e.truncated);
    }
}
