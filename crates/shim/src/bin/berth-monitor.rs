//! `berth-monitor --pod-id ID --state-dir DIR [--foreground]`: the per-pod
//! monitor (see `berth_shim::daemon`); run as `berth-pod-init`, a pod's PID 1
//! (`berth_shim::pod_init`). Hand-rolled flags: clap would cost
//! memory in a process that lives as long as the pod.

use std::path::PathBuf;

fn main() {
    // Containers and execs are clones of this process: they must never
    // reach the host's binary through /proc/<pid>/exe (berth_monitor_protocol::sealed).
    // berthd starts monitors from its sealed copy; started any other way,
    // the monitor copies itself once here.
    if let Err(e) = berth_monitor_protocol::sealed::reexec_if_unsealed(c"berth-monitor") {
        eprintln!("berth-monitor: cannot run from a sealed copy of its binary: {e}");
        std::process::exit(1);
    }
    use std::os::unix::ffi::OsStrExt;
    let argv0 = std::env::args_os().next().unwrap_or_default();
    if argv0.as_bytes() == berth_shim::pod_init::ARGV0.to_bytes() {
        berth_shim::pod_init::main();
    }
    // Exec'd through /proc/self/fd/N, the process is named "N": name it for ps and pgrep.
    // SAFETY: prctl with a NUL-terminated constant.
    unsafe {
        libc::prctl(libc::PR_SET_NAME, c"berth-monitor".as_ptr());
    }
    let mut pod_id = None;
    let mut state_dir = None;
    let mut foreground = false;
    let (mut mounts_root, mut pod_dir) = (None, None);
    let mut args = std::env::args_os().skip(1);
    while let Some(a) = args.next() {
        match a.to_str() {
            Some("--pod-id") => pod_id = args.next().and_then(|v| v.into_string().ok()),
            Some("--state-dir") => state_dir = args.next().map(PathBuf::from),
            Some("--foreground") => foreground = true,
            Some("--mounts-root") => mounts_root = args.next().map(PathBuf::from),
            Some("--pod-dir") => pod_dir = args.next().map(PathBuf::from),
            _ => {
                eprintln!("berth-monitor: unknown argument {a:?}");
                std::process::exit(2);
            }
        }
    }
    let (Some(pod_id), Some(state_dir)) = (pod_id, state_dir) else {
        eprintln!(
            "usage: berth-monitor --pod-id ID --state-dir DIR [--mounts-root DIR --pod-dir DIR] [--foreground]"
        );
        std::process::exit(2);
    };
    std::process::exit(berth_shim::daemon::main(berth_shim::daemon::Args {
        pod_id,
        state_dir,
        mounts: mounts_root.zip(pod_dir),
        foreground,
    }));
}
