//! ExecSync inside a running container, and live cgroup updates.
//!
//! An exec is started with libcontainer's tenant builder, so it joins the
//! container init's namespaces and cgroup and takes the container's own
//! process spec (user, groups, capabilities, no_new_privs, rlimits,
//! AppArmor) with only args/env/cwd replaced. The tenant builder drops the
//! spec's `linux.seccomp`, so a small executor installs the container's
//! seccomp filter itself right before exec. In a pod with its own user
//! namespace the builder runs in a helper that joined it first
//! (`exec_userns`).
//!
//! `build()` returns once the process exec'd; from then on the monitor's
//! poll loop reads its stdout/stderr pipes, the SIGCHLD reaper records its
//! exit, and the deferred answer goes back to the waiting connection.

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use libcontainer::container::builder::ContainerBuilder;
use libcontainer::oci_spec::runtime::{LinuxNamespaceType, LinuxSeccomp, Process, Spec};
use libcontainer::syscall::syscall::SyscallType;
use libcontainer::workload::default::DefaultExecutor;
use libcontainer::workload::{Executor, ExecutorError, ExecutorValidationError};

use crate::monitor::{Op, OpError, chain};
use berth_monitor_protocol::TerminalSize;

/// What to run: the container's process with args (and optionally env and
/// cwd) replaced.
pub(crate) struct ExecSpec<'a> {
    pub args: &'a [String],
    pub env: &'a [String],
    pub cwd: Option<&'a Path>,
}

/// An exec's stdio.
pub(crate) enum ExecStdio<'a> {
    /// stdin (`None`: /dev/null), stdout, stderr.
    Fds {
        stdin: Option<OwnedFd>,
        stdout: OwnedFd,
        stderr: OwnedFd,
    },
    /// A new pseudo-terminal: libcontainer sends its master to the
    /// listening socket at `console_socket`; the process starts at `size`.
    Terminal {
        console_socket: &'a Path,
        size: Option<TerminalSize>,
    },
}

/// What every exec in a container starts from: the process spec and the
/// seccomp filter of its bundle. Read once per container (the bundle does
/// not change while it lives), not once per exec.
pub(crate) struct ExecBase {
    process: Process,
    seccomp: Option<LinuxSeccomp>,
    /// The pinned user namespace the container joined (a `hostUsers:
    /// false` pod): an exec joins it too.
    userns: Option<PathBuf>,
}

impl ExecBase {
    pub fn load(id: &str, bundle: &Path) -> Result<ExecBase, OpError> {
        let cfg = Spec::load(bundle.join("config.json"))
            .map_err(|e| Op::Exec.failed(id, format!("load config.json: {e}")))?;
        let userns = cfg
            .linux()
            .as_ref()
            .and_then(|l| l.namespaces().as_ref())
            .and_then(|ns| ns.iter().find(|n| n.typ() == LinuxNamespaceType::User))
            .map(|n| {
                // Berth's containers join their pod's pinned namespace; one
                // made for the container alone could not be named here.
                n.path()
                    .clone()
                    .ok_or_else(|| Op::Exec.failed(id, "its user namespace has no path to join"))
            })
            .transpose()?;
        Ok(ExecBase {
            process: cfg.process().clone().unwrap_or_default(),
            seccomp: cfg.linux().as_ref().and_then(|l| l.seccomp().clone()),
            userns,
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
    stdio: ExecStdio<'_>,
) -> Result<i32, OpError> {
    if spec.args.is_empty() {
        return Err(Op::Exec.invalid_argument(id, "empty command"));
    }
    let mut process = base.process.clone();
    process.set_args(Some(spec.args.to_vec()));
    process.set_terminal(Some(matches!(stdio, ExecStdio::Terminal { .. })));
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
        .map_err(|e| Op::Exec.failed(id, format!("write process spec: {e}")))?;
    let proc_path = format!("/proc/self/fd/{}", memfd.as_raw_fd());
    let start = || build_tenant(root, id, base, &proc_path, nnp, stdio);
    let started = match &base.userns {
        Some(ns) => crate::exec_userns::start_in_user_namespace(ns, process.oom_score_adj(), start),
        None => start(),
    };
    drop(memfd);
    started.map_err(|why| Op::Exec.failed(id, why))
}

/// Runs libcontainer's tenant builder for the process spec at `proc_path`;
/// returns the exec'd process's host pid.
fn build_tenant(
    root: &Path,
    id: &str,
    base: &ExecBase,
    proc_path: &str,
    nnp: bool,
    stdio: ExecStdio<'_>,
) -> Result<i32, String> {
    let mut winsize = None;
    let builder = ContainerBuilder::new(id.to_string(), SyscallType::default())
        .with_root_path(root)
        .map_err(|e| e.to_string())?;
    let builder = match stdio {
        ExecStdio::Fds {
            stdin,
            stdout,
            stderr,
        } => {
            let stdin = match stdin {
                Some(fd) => fd,
                None => File::open("/dev/null")
                    .map_err(|e| format!("open /dev/null: {e}"))?
                    .into(),
            };
            builder
                .with_stdin(stdin)
                .with_stdout(stdout)
                .with_stderr(stderr)
        }
        // The process's stdio is the terminal's slave (libcontainer).
        ExecStdio::Terminal {
            console_socket,
            size,
        } => {
            winsize = size;
            builder.with_console_socket(Some(console_socket))
        }
    };
    builder
        .with_executor(SeccompExecutor {
            seccomp: base.seccomp.clone(),
            nnp,
            winsize,
        })
        .as_tenant()
        .with_process(Some(proc_path))
        .with_detach(true)
        .build()
        .map(|pid| pid.as_raw())
        .map_err(|e| chain(&e))
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

/// Sets the terminal's size (with a terminal, stdin is its slave), installs
/// the container's seccomp filter, then execs like libcontainer's
/// default executor. Runs in the exec'd child after capabilities were
/// dropped: without no_new_privs (and without CAP_SYS_ADMIN) the kernel
/// refuses the filter, so then no_new_privs is set first: stricter than the
/// container's init, never looser (runc installs it before dropping caps,
/// which the tenant builder gives no hook for).
#[derive(Clone)]
struct SeccompExecutor {
    seccomp: Option<LinuxSeccomp>,
    nnp: bool,
    /// The terminal's first size: set here, before the program runs, so
    /// it never sees another (libcontainer has no consoleSize).
    winsize: Option<TerminalSize>,
}

impl Executor for SeccompExecutor {
    fn exec(&self, spec: &Spec) -> Result<(), ExecutorError> {
        if let Some(size) = self.winsize {
            crate::monitor::set_terminal_size(std::io::stdin().as_fd(), size)
                .map_err(|e| ExecutorError::Other(format!("set terminal size: {e}")))?;
        }
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
}
