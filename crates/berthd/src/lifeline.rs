//! Child processes that must not outlive berthd: CRIU's dumps. A criu
//! that lives on after berthd is killed (SIGKILL, the OOM killer, a
//! crash) holds the container it seized (ptraced, or frozen for a pod
//! checkpoint) and whatever berthd inherited (an e2e run's cache lock), and
//! nobody waits for it; berth.service's `KillMode=process` leaves it
//! running on a stop too. (Monitors and containers are the opposite:
//! they outlive berthd by design, and are not started here.)
//!
//! How: the child asks the kernel for SIGKILL on its parent's death
//! (`PR_SET_PDEATHSIG`) between fork and exec, and checks that the parent
//! did not die before it asked (the kernel would clear the setting on an
//! exec that gains privileges, a set-user-ID criu; root exec'ing criu
//! gains none). The kernel sends that signal when the
//! *thread* that forked exits, not the process: a tokio worker may be
//! turned into a blocking-pool thread (`block_in_place`) and a blocking-pool
//! thread exits after 10 s idle, which would kill a dump in progress. So
//! every such child is forked by one thread of berthd's own that never
//! exits ([`spawn`] hands it the command and awaits the child); it
//! dies only with the process. Once berthd is gone the kernel kills the
//! child at once; its own children (criu's short-lived `iptables-restore`
//! of its network lock) are not covered. A restarted berthd kills what
//! still runs in a leftover checkpoint work dir and undoes what a killed
//! dump left (container::checkpoint::remove_leftovers).

use std::io;
use std::sync::OnceLock;
use std::sync::mpsc;

type Job = Box<dyn FnOnce() + Send>;

/// The forking thread's queue (None: the thread could not be started).
static SPAWNER: OnceLock<Option<mpsc::Sender<Job>>> = OnceLock::new();

fn spawner() -> io::Result<&'static mpsc::Sender<Job>> {
    SPAWNER
        .get_or_init(|| {
            let (tx, rx) = mpsc::channel::<Job>();
            let started = std::thread::Builder::new()
                .name("berth-lifeline".into())
                // Runs for as long as berthd: the static sender is never dropped.
                .spawn(move || rx.into_iter().for_each(|job| job()));
            match started {
                Ok(_) => Some(tx),
                Err(e) => {
                    tracing::error!(error = %e, "cannot start the thread that starts criu");
                    None
                }
            }
        })
        .as_ref()
        .ok_or_else(|| io::Error::other("the thread that starts criu could not be started"))
}

/// Spawns `cmd` (in the current tokio runtime, so the child is reaped and
/// awaited as any tokio child) so that it is SIGKILLed when berthd dies.
pub async fn spawn(mut cmd: tokio::process::Command) -> io::Result<tokio::process::Child> {
    let parent = nix::unistd::getpid().as_raw();
    // SAFETY: prctl and getppid are async-signal-safe syscalls on no
    // shared memory, fit to run between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if nix::libc::prctl(nix::libc::PR_SET_PDEATHSIG, nix::libc::SIGKILL) != 0 {
                return Err(io::Error::last_os_error());
            }
            // berthd died before the prctl: the signal will never come.
            if nix::libc::getppid() != parent {
                return Err(io::Error::from_raw_os_error(nix::libc::ESRCH));
            }
            Ok(())
        });
    }
    let handle = tokio::runtime::Handle::current();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let job: Job = Box::new(move || {
        let _runtime = handle.enter();
        let _ = tx.send(cmd.spawn());
    });
    let gone = || io::Error::other("the thread that starts criu is gone");
    spawner()?.send(job).map_err(|_| gone())?;
    rx.await.map_err(|_| gone())?
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use nix::sys::wait::{WaitStatus, waitpid};
    use nix::unistd::{ForkResult, Pid, fork, pipe, read};

    /// Whether `pid` is alive (a zombie is not).
    fn alive(pid: i32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| {
                let state = s.get(s.rfind(')')? + 2..)?.chars().next()?;
                Some(state != 'Z' && state != 'X')
            })
            .unwrap_or(false)
    }

    /// A forked child process that plays berthd (its forking thread is
    /// its own: nothing here starts one in the test process itself): a
    /// tokio runtime starts `sleep`
    /// through [`super::spawn`] from a task on a worker thread (a blocking
    /// thread too, which then exits); `sleep` must live on while that
    /// process does (the worker and blocking threads that asked do not
    /// matter), and die with it.
    #[test]
    fn a_child_lives_while_berthd_does_and_dies_with_it() {
        let (r, w) = pipe().unwrap();
        // SAFETY: the test binary may run other threads; the child only
        // builds a fresh runtime and never returns into the test harness.
        match unsafe { fork() }.unwrap() {
            ForkResult::Child => {
                drop(r);
                let code = std::panic::catch_unwind(|| {
                    let rt = tokio::runtime::Builder::new_multi_thread()
                        .worker_threads(1)
                        .thread_keep_alive(Duration::from_millis(50))
                        .enable_all()
                        .build()
                        .unwrap();
                    let pid = rt.block_on(async {
                        // From a blocking-pool thread, which exits 50 ms later.
                        let child = tokio::task::spawn_blocking(|| {
                            tokio::runtime::Handle::current().block_on(async {
                                let mut cmd = tokio::process::Command::new("sleep");
                                cmd.arg("30");
                                super::spawn(cmd).await.unwrap()
                            })
                        })
                        .await
                        .unwrap();
                        let pid = child.id().unwrap();
                        std::mem::forget(child);
                        pid
                    });
                    nix::unistd::write(&w, format!("{pid}\n").as_bytes()).unwrap();
                    // Outlive the blocking thread, then die without cleanup.
                    std::thread::sleep(Duration::from_millis(500));
                    0
                })
                .unwrap_or(1);
                // SAFETY: ends the forked child at once.
                unsafe { nix::libc::_exit(code) };
            }
            ForkResult::Parent { child } => {
                drop(w);
                let mut buf = [0u8; 32];
                let n = read(&r, &mut buf).unwrap();
                let pid: i32 = std::str::from_utf8(&buf[..n])
                    .unwrap()
                    .trim()
                    .parse()
                    .unwrap();
                // Alive after the thread that forked it (blocking pool) is gone.
                std::thread::sleep(Duration::from_millis(300));
                assert!(alive(pid), "sleep died with the thread that forked it");
                assert_eq!(waitpid(child, None).unwrap(), WaitStatus::Exited(child, 0));
                // Gone once "berthd" is.
                let deadline = Instant::now() + Duration::from_secs(5);
                while alive(pid) && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(10));
                }
                let left = alive(pid);
                if left {
                    let _ = nix::sys::signal::kill(Pid::from_raw(pid), nix::sys::signal::SIGKILL);
                }
                assert!(!left, "sleep {pid} outlived its parent process");
            }
        }
    }
}
