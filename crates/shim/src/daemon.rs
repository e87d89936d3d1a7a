//! Starting the monitor as a daemon.
//!
//! `berth-monitor --pod-id ID --state-dir DIR` forks; the child calls
//! setsid, becomes child subreaper, binds its socket and then reports `ok` on
//! a pipe; the parent prints the monitor's pid and exits 0 (or prints the
//! child's error and exits 1). So whoever spawns it (berthd) knows the socket
//! accepts connections when the command returns, and the monitor belongs to
//! no one's session: it survives berthd.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
use nix::unistd::{ForkResult, dup2_stderr, dup2_stdin, dup2_stdout, fork, setsid};

use crate::monitor::Monitor;

/// File (in the state dir) that gets the monitor's own stderr and
/// libcontainer's log events at WARN and above (`crate::log`).
pub const MONITOR_LOG: &str = "monitor.log";

pub struct Args {
    pub pod_id: String,
    pub state_dir: PathBuf,
    /// The mount point every pod's mounts lie below and this pod's dir
    /// beneath it: builds see only this pod's (`monitor::mount_view`).
    pub mounts: Option<(PathBuf, PathBuf)>,
    /// Stay in the foreground (debugging): no fork, no setsid.
    pub foreground: bool,
}

/// Runs the monitor; returns the process exit code.
pub fn main(args: Args) -> i32 {
    // Descriptors berthd leaked to us would otherwise stay open for the life
    // of the pod (and reach containers if not close-on-exec).
    close_inherited_fds();
    if args.foreground {
        return match start(&args) {
            Ok(m) => {
                m.run();
                0
            }
            Err(e) => {
                eprintln!("berth-monitor: {e}");
                1
            }
        };
    }
    let (r, w) = match nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("berth-monitor: pipe: {e}");
            return 1;
        }
    };
    // SAFETY: the process is single-threaded here (nothing spawned threads).
    match unsafe { fork() } {
        Err(e) => {
            eprintln!("berth-monitor: fork: {e}");
            1
        }
        Ok(ForkResult::Parent { child }) => {
            drop(w);
            let mut msg = String::new();
            let _ = File::from(r).read_to_string(&mut msg);
            if msg == "ok" {
                println!("{child}");
                0
            } else if msg.is_empty() {
                eprintln!("berth-monitor: monitor {child} died during startup");
                1
            } else {
                eprintln!("berth-monitor: {msg}");
                1
            }
        }
        Ok(ForkResult::Child) => {
            drop(r);
            let mut w = File::from(w);
            let monitor = match detach(&args.state_dir).and_then(|()| start(&args)) {
                Ok(m) => m,
                Err(e) => {
                    let _ = w.write_all(e.to_string().as_bytes());
                    return 1;
                }
            };
            let _ = w.write_all(b"ok");
            drop(w);
            monitor.run();
            0
        }
    }
}

fn start(args: &Args) -> Result<Monitor, Box<dyn std::error::Error>> {
    // Rust ignores SIGPIPE at startup, and an ignored signal stays ignored
    // across exec: containers would inherit it (`yes | head` would never
    // end). A handler that does nothing is reset to the default by exec, and
    // meanwhile a write to a pipe whose reader left (an attached client's)
    // fails with EPIPE instead of killing the monitor. Sockets are written
    // with MSG_NOSIGNAL anyway.
    extern "C" fn ignore(_: libc::c_int) {}
    let action = SigAction::new(
        SigHandler::Handler(ignore),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    // SAFETY: the handler does nothing, so it is async-signal-safe.
    unsafe { sigaction(Signal::SIGPIPE, &action) }?;
    // Orphaned container processes (and exec'd ones later) are reparented
    // to the monitor, not to the host's init.
    // SAFETY: plain prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
        return Err(format!(
            "PR_SET_CHILD_SUBREAPER: {}",
            std::io::Error::last_os_error()
        )
        .into());
    }
    let mut monitor = Monitor::new(&args.pod_id, &args.state_dir)?;
    if let Some((root, pod_dir)) = &args.mounts
        && let Err(e) = monitor.set_mount_view(root, pod_dir)
    {
        // Builds then see every pod's mounts: slower, not wrong.
        eprintln!("berth-monitor {}: {e}", args.pod_id);
    }
    // libcontainer's log events (its explanations of failures) go to
    // monitor.log; the monitor stays single-threaded (see `crate::log`).
    if let Err(e) = crate::log::install(&args.state_dir.join(MONITOR_LOG)) {
        eprintln!(
            "berth-monitor {}: libcontainer's log events are lost: {e}",
            args.pod_id
        );
    }
    Ok(monitor)
}

/// Own session (no controlling terminal, not killed with berthd's process
/// group), stdio on /dev/null and `monitor.log`.
fn detach(state_dir: &Path) -> Result<(), Box<dyn std::error::Error>> {
    setsid()?;
    std::fs::create_dir_all(state_dir)?;
    let null = File::open("/dev/null")?;
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(state_dir.join(MONITOR_LOG))?;
    dup2_stdin(&null)?;
    dup2_stdout(&log)?;
    dup2_stderr(&log)?;
    Ok(())
}

fn close_inherited_fds() {
    // SAFETY: close_range on fds >= 3; nothing in this process owns any yet.
    let r = unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) };
    if r == 0 {
        return;
    }
    // Kernels before 5.9: close what /proc lists.
    let fds: Vec<i32> = match std::fs::read_dir("/proc/self/fd") {
        Ok(d) => d
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .filter(|&fd| fd > 2)
            .collect(),
        Err(_) => return,
    };
    for fd in fds {
        // SAFETY: see above; the read_dir handle is already closed.
        unsafe {
            libc::close(fd);
        }
    }
}
