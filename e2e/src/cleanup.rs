//! Removes what a test's pods leave on the host when a test ends without
//! removing them (a failure, or a test that stops at an assertion): the pod
//! monitors outlive berthd by design, and so do their containers, cgroups and
//! mounts. Without this every test run leaks running containers.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Cleans up on drop; hold one for the lifetime of a test's dirs.
pub struct Guard(pub PathBuf);

impl Drop for Guard {
    fn drop(&mut self) {
        reap_leftovers(&self.0);
    }
}

struct Proc {
    pid: i32,
    ppid: i32,
    /// Dead, waiting for its parent (often the host's init) to reap it.
    zombie: bool,
    cmdline: String,
}

fn processes() -> Vec<Proc> {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    rd.flatten()
        .filter_map(|e| {
            let pid: i32 = e.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            // The command name may hold spaces and parens: fields start after the last ')'.
            let mut fields = stat.rsplit_once(')')?.1.split_whitespace();
            let zombie = fields.next()? == "Z";
            let ppid = fields.next()?.parse().ok()?;
            let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
            Some(Proc {
                pid,
                ppid,
                zombie,
                cmdline: String::from_utf8_lossy(&cmdline).replace('\0', " "),
            })
        })
        .collect()
}

/// The cgroup dirs of `pid`, for cgroup v1 controllers and the v2 tree.
fn cgroup_dirs(pid: i32) -> Vec<PathBuf> {
    let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/cgroup")) else {
        return vec![];
    };
    let mut dirs = vec![];
    for line in text.lines() {
        let mut f = line.splitn(3, ':');
        let (Some(_), Some(ctrls), Some(path)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        if path == "/" {
            continue;
        }
        let roots: Vec<String> = if ctrls.is_empty() {
            vec!["unified".into(), String::new()]
        } else {
            ctrls
                .split(',')
                .map(|c| c.trim_start_matches("name=").to_string())
                .collect()
        };
        for root in roots {
            let dir = Path::new("/sys/fs/cgroup").join(root).join(&path[1..]);
            if dir.is_dir() {
                dirs.push(dir);
            }
        }
    }
    dirs
}

/// Kills the monitors started under `dir` and their containers, removes the
/// containers' cgroups, and detaches every mount under `dir`.
pub fn reap_leftovers(dir: &Path) {
    let needle = dir.to_string_lossy();
    let procs = processes();
    let monitors: Vec<i32> = procs
        .iter()
        .filter(|p| p.cmdline.contains("berth-monitor") && p.cmdline.contains(&*needle))
        .map(|p| p.pid)
        .collect();
    let containers: Vec<i32> = procs
        .iter()
        .filter(|p| monitors.contains(&p.ppid))
        .map(|p| p.pid)
        .collect();
    let mut cgroups: Vec<PathBuf> = containers.iter().flat_map(|&p| cgroup_dirs(p)).collect();
    // Containers that already exited have no process left to ask: their
    // bundles still name their cgroups.
    cgroups.extend(bundle_cgroups(dir));
    // Pod inits (PID mode POD) hold their pod's PID namespace: killing
    // one kills every process in it.
    let inits = in_pid_namespaces(&procs, &pinned_pid_namespaces(dir));
    for pid in containers.iter().chain(&monitors).chain(&inits) {
        let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
    }
    // A cgroup can be removed once its processes are gone.
    cgroups.sort();
    cgroups.dedup();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !cgroups.is_empty() && Instant::now() < deadline {
        cgroups.retain(|c| std::fs::remove_dir(c).is_err() && c.exists());
        if !cgroups.is_empty() {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let mut mounts = mounts_under(dir);
    mounts.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
    for m in mounts {
        let _ = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// Mount points strictly below `dir` (berthd makes its state dir a mount
/// point of its own: what its pods leave is below it).
pub fn mounts_below(dir: &Path) -> Vec<PathBuf> {
    let mut m = mounts_under(dir);
    m.retain(|p| p != dir);
    m
}

/// Mount points at or below `dir`, from /proc/self/mountinfo.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let prefix = dir.to_string_lossy();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| m.starts_with(&*prefix))
        .map(PathBuf::from)
        .collect()
}

/// Non-directory entries up to `max_depth` levels below `dir` (symlinks
/// not followed) for which `want(parent dir, name)` holds.
fn files_below(
    dir: &Path,
    max_depth: usize,
    want: impl Fn(&Path, &std::ffi::OsStr) -> bool,
) -> Vec<PathBuf> {
    let mut found = vec![];
    let mut stack = vec![(dir.to_path_buf(), 0)];
    while let Some((d, depth)) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let Ok(ty) = e.file_type() else { continue };
            if ty.is_dir() {
                if depth < max_depth {
                    stack.push((e.path(), depth + 1));
                }
            } else if want(&d, &e.file_name()) {
                found.push(e.path());
            }
        }
    }
    found
}

/// Cgroup dirs named by the `linux.cgroupsPath` of every OCI bundle
/// (`config.json`) up to four levels below `dir`.
fn bundle_cgroups(dir: &Path) -> Vec<PathBuf> {
    let mut found = vec![];
    for bundle in files_below(dir, 4, |_, name| name == "config.json") {
        let cg = std::fs::read(&bundle)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| v["linux"]["cgroupsPath"].as_str().map(str::to_string));
        let Some(cg) = cg.filter(|c| c.starts_with('/') && c.len() > 1) else {
            continue;
        };
        let Ok(roots) = std::fs::read_dir("/sys/fs/cgroup") else {
            continue;
        };
        for r in roots.flatten() {
            let d = r.path().join(&cg[1..]);
            if d.is_dir() {
                found.push(d);
            }
        }
    }
    found
}

/// Inode numbers of the PID namespaces pinned under `dir` (`pods/<id>/ns/pid`).
pub fn pinned_pid_namespaces(dir: &Path) -> Vec<u64> {
    use std::os::unix::fs::MetadataExt;
    files_below(dir, 5, |d, name| {
        name == "pid" && d.file_name().is_some_and(|n| n == "ns")
    })
    .into_iter()
    .filter_map(|pin| {
        // A live pin is an nsfs bind (another device than its dir): its inode is the namespace's.
        let m = std::fs::metadata(&pin).ok()?;
        let parent = std::fs::metadata(pin.parent()?).ok()?;
        (m.dev() != parent.dev()).then(|| m.ino())
    })
    .collect()
}

/// Pids of the live (not zombie) processes whose PID namespace is one of
/// `namespaces` (inodes).
pub fn pids_in_namespaces(namespaces: &[u64]) -> Vec<i32> {
    in_pid_namespaces(&processes(), namespaces)
}

fn in_pid_namespaces(procs: &[Proc], namespaces: &[u64]) -> Vec<i32> {
    if namespaces.is_empty() {
        return vec![];
    }
    procs
        .iter()
        .filter(|p| !p.zombie)
        .filter(|p| {
            std::fs::read_link(format!("/proc/{}/ns/pid", p.pid))
                .ok()
                .and_then(|l| {
                    l.to_str()?
                        .strip_prefix("pid:[")?
                        .strip_suffix(']')?
                        .parse::<u64>()
                        .ok()
                })
                .is_some_and(|ino| namespaces.contains(&ino))
        })
        .map(|p| p.pid)
        .collect()
}
