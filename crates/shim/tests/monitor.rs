//! End-to-end tests of `berth-monitor`: real containers (busybox-static
//! rootfs), real cgroups. They need root and `/bin/busybox`; elsewhere they
//! print why and pass.

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::symlink;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use berth_monitor_protocol::{
    self as client, Client, ContainerState, ErrorCode, ErrorReply, Request, Response, Status,
};

const BIN: &str = env!("CARGO_BIN_EXE_berth-monitor");

/// The monitor under test; `BERTH_MONITOR_BIN` measures another build (e.g.
/// target/release/berth-monitor) with the same tests.
fn monitor_bin() -> PathBuf {
    std::env::var_os("BERTH_MONITOR_BIN").map_or_else(|| PathBuf::from(BIN), PathBuf::from)
}

fn usable() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let ok = root && Path::new("/bin/busybox").exists();
    if !ok {
        eprintln!("skipped: needs root and /bin/busybox (busybox-static)");
    }
    ok
}

/// A running monitor with its state dir; kills what is left on drop.
struct Pod {
    dir: tempfile::TempDir,
    pid: i32,
    cgroup_parent: String,
    client: Client,
}

impl Pod {
    fn start(name: &str) -> Pod {
        Pod::start_from(&monitor_bin(), name)
    }

    fn start_from(bin: &Path, name: &str) -> Pod {
        Pod::start_in(tempfile::tempdir().unwrap(), bin, name, None)
    }

    /// A monitor in `dir`; `mounts`: its mount view's root and pod dir.
    fn start_in(
        dir: tempfile::TempDir,
        bin: &Path,
        name: &str,
        mounts: Option<(&Path, &Path)>,
    ) -> Pod {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let cgroup_parent = format!("berth-test-{}-{name}-{nanos:x}", std::process::id());
        let state = dir.path().join("state");
        let pid = client::spawn(bin, name, &state, mounts).expect("spawn monitor");
        let client = Client::connect(&state).expect("connect");
        Pod {
            dir,
            pid,
            cgroup_parent,
            client,
        }
    }

    fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn call(&mut self, req: Request) -> Response {
        self.client.call(&req).expect("monitor call")
    }

    /// Writes a bundle (busybox rootfs + config.json) for `id` running
    /// `sh -c script`.
    fn bundle(&self, id: &str, script: &str) -> PathBuf {
        self.bundle_at(&self.dir.path().join("bundles").join(id), id, script)
    }

    /// [`Pod::bundle`] at `bundle`.
    fn bundle_at(&self, bundle: &Path, id: &str, script: &str) -> PathBuf {
        let bundle = bundle.to_path_buf();
        let rootfs = bundle.join("rootfs");
        for d in ["bin", "proc", "dev", "sys", "tmp", "etc"] {
            fs::create_dir_all(rootfs.join(d)).unwrap();
        }
        fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
        for applet in ["sh", "sleep", "echo", "cat", "true", "stty"] {
            symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
        }
        let caps = serde_json::json!([
            "CAP_CHOWN",
            "CAP_DAC_OVERRIDE",
            "CAP_FOWNER",
            "CAP_FSETID",
            "CAP_KILL",
            "CAP_SETGID",
            "CAP_SETUID",
            "CAP_SETPCAP",
            "CAP_NET_BIND_SERVICE",
            "CAP_SYS_CHROOT",
            "CAP_SETFCAP"
        ]);
        let config = serde_json::json!({
            "ociVersion": "1.0.2",
            "process": {
                "terminal": false,
                "user": {"uid": 0, "gid": 0},
                "args": ["/bin/sh", "-c", script],
                "env": ["PATH=/bin", "HOME=/"],
                "cwd": "/",
                "noNewPrivileges": true,
                "capabilities": {
                    "bounding": caps, "effective": caps, "permitted": caps
                }
            },
            "root": {"path": "rootfs", "readonly": false},
            "hostname": id,
            "mounts": [
                {"destination": "/proc", "type": "proc", "source": "proc",
                 "options": ["nosuid", "noexec", "nodev"]},
                {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
                 "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
                {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
                 "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]},
                {"destination": "/sys", "type": "sysfs", "source": "sysfs",
                 "options": ["nosuid", "noexec", "nodev", "ro"]}
            ],
            "linux": {
                "cgroupsPath": format!("/{}/{id}", self.cgroup_parent),
                "namespaces": [
                    {"type": "pid"}, {"type": "ipc"}, {"type": "uts"},
                    {"type": "mount"}, {"type": "network"}
                ],
                "maskedPaths": ["/proc/kcore", "/proc/keys"],
                "readonlyPaths": ["/proc/sys"]
            }
        });
        fs::write(
            bundle.join("config.json"),
            serde_json::to_vec_pretty(&config).unwrap(),
        )
        .unwrap();
        bundle
    }

    fn log_path(&self, id: &str) -> PathBuf {
        self.dir.path().join("logs").join(format!("{id}.log"))
    }

    fn create(&mut self, id: &str, script: &str) -> i32 {
        let bundle = self.bundle(id, script);
        self.create_from(id, bundle)
    }

    fn create_from(&mut self, id: &str, bundle: PathBuf) -> i32 {
        let log_path = self.log_path(id);
        match self.call(Request::Create {
            id: id.into(),
            bundle,
            log_path,
            stdin: false,
            stdin_once: false,
            restore: None,
        }) {
            Response::Created { pid } => pid,
            other => panic!("create {id}: {other:?}"),
        }
    }

    fn state(&mut self, id: &str) -> ContainerState {
        match self.call(Request::State { id: id.into() }) {
            Response::State(s) => s,
            other => panic!("state {id}: {other:?}"),
        }
    }

    fn wait_exited(&mut self, id: &str) -> ContainerState {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let s = self.state(id);
            if s.status == Status::Exited {
                return s;
            }
            assert!(Instant::now() < deadline, "{id} did not exit: {s:?}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Cgroup dirs of container `id` (one per v1 controller, or the v2 one).
    fn cgroup_dirs(&self, id: &str) -> Vec<PathBuf> {
        cgroup_roots()
            .into_iter()
            .map(|r| r.join(&self.cgroup_parent).join(id))
            .filter(|p| p.exists())
            .collect()
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        if let Ok(Response::List { containers }) = self.client.call(&Request::List) {
            for c in containers {
                let _ = self.client.call(&Request::Delete {
                    id: c.id,
                    force: true,
                });
            }
        }
        // SAFETY: signalling our own monitor by pid.
        unsafe {
            libc::kill(self.pid, libc::SIGKILL);
        }
        for r in cgroup_roots() {
            let _ = fs::remove_dir(r.join(&self.cgroup_parent));
        }
    }
}

fn cgroup_roots() -> Vec<PathBuf> {
    let mut roots = Vec::new();
    if let Ok(d) = fs::read_dir("/sys/fs/cgroup") {
        for e in d.flatten() {
            let p = e.path();
            if p.is_dir() && !p.is_symlink() {
                roots.push(p);
            }
        }
    }
    roots.push(PathBuf::from("/sys/fs/cgroup"));
    roots
}

fn proc_field(pid: i32, file: &str, key: &str) -> Option<String> {
    let s = fs::read_to_string(format!("/proc/{pid}/{file}")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix(key).map(|v| v.trim().to_string()))
}

#[test]
fn exit_code_logs_and_exit_record() {
    if !usable() {
        return;
    }
    let mut pod = Pod::start("exit");
    let t0 = Instant::now();
    let pid = pod.create("c1", "echo hello; echo err >&2; exit 3");
    let created = t0.elapsed();
    assert!(pid > 0);
    assert_eq!(pod.state("c1").status, Status::Created);
    assert_eq!(pod.call(Request::Start { id: "c1".into() }), Response::Ok);
    let total = t0.elapsed();
    println!("create {created:?}, create+start {total:?}");

    let s = pod.wait_exited("c1");
    let exit = s.exit.expect("exit record");
    assert_eq!(
        (exit.exit_code, exit.signal, exit.oom_killed),
        (3, 0, false)
    );
    assert!(s.started_at > 0 && exit.finished_at >= s.started_at);

    let log = fs::read_to_string(pod.log_path("c1")).unwrap();
    let records: Vec<(&str, &str, &str)> = log
        .lines()
        .map(|l| {
            let mut f = l.splitn(4, ' ');
            let ts = f.next().unwrap();
            chrono::DateTime::parse_from_rfc3339(ts).expect("timestamp");
            (f.next().unwrap(), f.next().unwrap(), f.next().unwrap())
        })
        .collect();
    assert_eq!(records.len(), 2, "{log}");
    assert!(records.contains(&("stdout", "F", "hello")), "{log}");
    assert!(records.contains(&("stderr", "F", "err")), "{log}");

    let on_disk: serde_json::Value = serde_json::from_slice(
        &fs::read(pod.state_dir().join("exits/c1.json")).expect("exit file"),
    )
    .unwrap();
    assert_eq!(on_disk["exit_code"], 3);

    // Requests for unknown containers are errors naming the id.
    match pod.call(Request::Start { id: "nope".into() }) {
        Response::Error(ErrorReply { code, message }) => {
            assert_eq!(code, ErrorCode::NotFound, "{message}");
            assert!(message.contains("nope"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    // Created twice: refused.
    match pod.call(Request::Start { id: "c1".into() }) {
        Response::Error(ErrorReply { code, message }) => {
            assert_eq!(code, ErrorCode::FailedPrecondition, "{message}");
            assert!(message.contains("c1"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        pod.call(Request::Delete {
            id: "c1".into(),
            force: false
        }),
        Response::Ok
    );
    assert!(!pod.state_dir().join("exits/c1.json").exists());
}

#[test]
fn kill_reports_signal_and_delete_cleans_up() {
    if !usable() {
        return;
    }
    let mut pod = Pod::start("kill");
    pod.create("sleeper", "exec sleep 1000");
    assert_eq!(
        pod.call(Request::Start {
            id: "sleeper".into()
        }),
        Response::Ok
    );
    assert_eq!(pod.state("sleeper").status, Status::Running);
    assert!(pod.state_dir().join("containers/sleeper").exists());
    assert!(!pod.cgroup_dirs("sleeper").is_empty(), "cgroup exists");

    // A running container is not deleted without force.
    match pod.call(Request::Delete {
        id: "sleeper".into(),
        force: false,
    }) {
        Response::Error(ErrorReply { code, message }) => {
            assert_eq!(code, ErrorCode::FailedPrecondition, "{message}");
            assert!(message.contains("sleeper"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        pod.call(Request::Kill {
            id: "sleeper".into(),
            signal: 9,
            all: false
        }),
        Response::Ok
    );
    let exit = pod.wait_exited("sleeper").exit.unwrap();
    assert_eq!((exit.exit_code, exit.signal), (137, 9));
    // Killing an exited container is fine (StopContainer is idempotent).
    assert_eq!(
        pod.call(Request::Kill {
            id: "sleeper".into(),
            signal: 15,
            all: false
        }),
        Response::Ok
    );
    assert_eq!(
        pod.call(Request::Delete {
            id: "sleeper".into(),
            force: false
        }),
        Response::Ok
    );
    assert!(!pod.state_dir().join("containers/sleeper").exists());
    assert_eq!(pod.cgroup_dirs("sleeper"), Vec::<PathBuf>::new());
    assert!(matches!(
        pod.call(Request::State {
            id: "sleeper".into()
        }),
        Response::Error(ErrorReply {
            code: ErrorCode::NotFound,
            ..
        })
    ));

    // Force-deleting a running container kills and removes it.
    pod.create("forced", "exec sleep 1000");
    pod.call(Request::Start {
        id: "forced".into(),
    });
    assert_eq!(
        pod.call(Request::Delete {
            id: "forced".into(),
            force: true
        }),
        Response::Ok
    );
    assert!(!pod.state_dir().join("containers/forced").exists());
    assert_eq!(pod.cgroup_dirs("forced"), Vec::<PathBuf>::new());
}

/// The monitor tells its protocol version; unknown ops and malformed
/// requests are typed bad requests (what berthd's fallbacks key on).
#[test]
fn hello_and_bad_requests() {
    if !usable() {
        return;
    }
    let mut pod = Pod::start("hello");
    if std::env::var_os("BERTH_MONITOR_BIN").is_none() {
        assert_eq!(
            pod.client.hello().unwrap(),
            berth_monitor_protocol::PROTOCOL_VERSION
        );
    }
    let mut raw = UnixStream::connect(pod.state_dir().join("monitor.sock")).unwrap();
    raw.write_all(b"{\"op\":\"teleport\",\"id\":\"c1\"}\nnot json\n")
        .unwrap();
    let mut lines = BufReader::new(raw).lines();
    for _ in 0..2 {
        let line = lines.next().unwrap().unwrap();
        match serde_json::from_str(&line).unwrap() {
            Response::Error(ErrorReply { code, message }) => {
                assert_eq!(code, ErrorCode::BadRequest, "{message}");
                assert!(message.starts_with("bad request"), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn bad_bundle_is_an_error_and_leaves_nothing() {
    if !usable() {
        return;
    }
    let mut pod = Pod::start("bad");
    let bundle = pod.dir.path().join("no-such-bundle");
    match pod.call(Request::Create {
        id: "broken".into(),
        bundle,
        log_path: pod.log_path("broken"),
        stdin: false,
        stdin_once: false,
        restore: None,
    }) {
        Response::Error(ErrorReply { code, message }) => {
            assert_eq!(code, ErrorCode::Internal, "{message}");
            assert!(message.contains("broken"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert!(!pod.state_dir().join("containers/broken").exists());
    // The id is free again.
    pod.create("broken", "true");
    pod.call(Request::Start {
        id: "broken".into(),
    });
    assert_eq!(pod.wait_exited("broken").exit.unwrap().exit_code, 0);
}

#[test]
fn daemonized_single_threaded_and_small() {
    if !usable() {
        return;
    }
    let mut pod = Pod::start("daemon");
    let pid = pod.pid;
    // The spawner (`berth-monitor` run by client::spawn) has exited; the
    // monitor lives on in its own session, not as our child.
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat.rsplit_once(") ").unwrap().1.split(' ').collect();
    let (ppid, sid): (i32, i32) = (fields[1].parse().unwrap(), fields[3].parse().unwrap());
    assert_ne!(ppid, std::process::id() as i32);
    assert_eq!(sid, pid, "session leader");

    // Run a few containers so the measurement includes libcontainer's work.
    let mut lat = Vec::new();
    for i in 0..5 {
        let id = format!("t{i}");
        let bundle = pod.bundle(&id, "echo hi");
        let t = Instant::now();
        let r = pod.call(Request::Create {
            id: id.clone(),
            bundle,
            log_path: pod.log_path(&id),
            stdin: false,
            stdin_once: false,
            restore: None,
        });
        assert!(matches!(r, Response::Created { .. }), "{r:?}");
        assert_eq!(pod.call(Request::Start { id: id.clone() }), Response::Ok);
        lat.push(t.elapsed());
        pod.wait_exited(&id);
    }
    pod.create("long", "exec sleep 1000");
    pod.call(Request::Start { id: "long".into() });
    lat.sort();
    println!(
        "create+start latency: min {:?} median {:?} max {:?}",
        lat[0], lat[2], lat[4]
    );

    assert_eq!(
        proc_field(pid, "status", "Threads:").as_deref(),
        Some("1"),
        "the monitor must stay single-threaded"
    );
    let rss = proc_field(pid, "smaps_rollup", "Rss:").unwrap_or_default();
    let pss = proc_field(pid, "smaps_rollup", "Pss:").unwrap_or_default();
    println!("monitor {pid} with 6 containers (1 running): RSS {rss}, PSS {pss}");

    // Still answering after all that; a new connection works too.
    let mut other = Client::connect(&pod.state_dir()).unwrap();
    assert!(matches!(
        other.call(&Request::List).unwrap(),
        Response::List { containers } if containers.len() == 6
    ));

    for i in 0..5 {
        let r = pod.call(Request::Delete {
            id: format!("t{i}"),
            force: false,
        });
        assert_eq!(r, Response::Ok);
    }

    // Shutdown waits for the running container, then the monitor exits.
    assert_eq!(pod.call(Request::Shutdown), Response::Ok);
    assert!(Path::new(&format!("/proc/{pid}")).exists());
    pod.call(Request::Kill {
        id: "long".into(),
        signal: 9,
        all: false,
    });
    let deadline = Instant::now() + Duration::from_secs(5);
    while proc_field(pid, "status", "State:").is_some_and(|s| !s.starts_with('Z')) {
        assert!(Instant::now() < deadline, "monitor did not exit");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(!pod.state_dir().join("monitor.sock").exists());
    assert!(pod.state_dir().join("exits/long.json").exists());
    // The monitor is gone: remove what berthd would clean up after it.
    for d in pod.cgroup_dirs("long") {
        let _ = fs::remove_dir(d);
    }
}

/// Sets `process.oomScoreAdj` in a bundle's config.json.
fn set_oom_score_adj(bundle: &Path, value: i32) {
    edit_config(bundle, |c| c["process"]["oomScoreAdj"] = value.into());
}

fn edit_config(bundle: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let path = bundle.join("config.json");
    let mut config: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    edit(&mut config);
    fs::write(&path, serde_json::to_vec(&config).unwrap()).unwrap();
}

#[test]
fn oom_score_adj_and_deleting_a_created_container() {
    if !usable() {
        return;
    }
    let mut pod = Pod::start("oomadj");
    let own = proc_field(pod.pid, "oom_score_adj", "").unwrap();
    let bundle = pod.bundle("high", "true");
    set_oom_score_adj(&bundle, 900);
    let r = pod.call(Request::Create {
        id: "high".into(),
        bundle,
        log_path: pod.log_path("high"),
        stdin: false,
        stdin_once: false,
        restore: None,
    });
    let Response::Created { pid } = r else {
        panic!("{r:?}")
    };
    assert_eq!(proc_field(pid, "oom_score_adj", "").as_deref(), Some("900"));
    assert_eq!(
        proc_field(pod.pid, "oom_score_adj", "").unwrap(),
        own,
        "the monitor keeps its own score"
    );
    // Never started: Delete kills the waiting init and removes everything.
    assert_eq!(
        pod.call(Request::Delete {
            id: "high".into(),
            force: false
        }),
        Response::Ok
    );
    assert!(!pod.state_dir().join("containers/high").exists());
    assert_eq!(pod.cgroup_dirs("high"), Vec::<PathBuf>::new());

    // Below what the host allows (CAP_SYS_RESOURCE dropped here): whatever
    // libcontainer makes of it, the answer names the container and a
    // failure leaves nothing behind.
    let bundle = pod.bundle("low", "true");
    set_oom_score_adj(&bundle, -999);
    let r = pod.call(Request::Create {
        id: "low".into(),
        bundle,
        log_path: pod.log_path("low"),
        stdin: false,
        stdin_once: false,
        restore: None,
    });
    println!("oomScoreAdj -999: {r:?}");
    match r {
        Response::Error(ErrorReply { message, .. }) => {
            assert!(message.contains("low"), "{message}");
            assert!(!pod.state_dir().join("containers/low").exists());
        }
        Response::Created { .. } => {}
        other => panic!("{other:?}"),
    }
}

/// A failure libcontainer explains only in its log (here: chdir to a file,
/// in the container's init process) is explained in the error too, and
/// the log events are in monitor.log.
#[test]
fn libcontainer_failure_is_explained() {
    if !usable() {
        return;
    }
    let mut pod = Pod::start("explain");
    let bundle = pod.bundle("badcwd", "true");
    let path = bundle.join("config.json");
    let mut config: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    config["process"]["cwd"] = "/bin/busybox".into();
    fs::write(&path, serde_json::to_vec(&config).unwrap()).unwrap();
    let message = match pod.call(Request::Create {
        id: "badcwd".into(),
        bundle,
        log_path: pod.log_path("badcwd"),
        stdin: false,
        stdin_once: false,
        restore: None,
    }) {
        Response::Error(ErrorReply {
            code: ErrorCode::Internal,
            message,
        }) => message,
        other => panic!("{other:?}"),
    };
    println!("{message}");
    assert!(message.contains("badcwd"), "{message}");
    assert!(message.contains("libcontainer log: "), "{message}");
    assert!(message.contains("chdir"), "{message}");
    let log = fs::read_to_string(pod.state_dir().join("monitor.log")).unwrap();
    println!("{log}");
    assert!(log.contains(" ERROR ["), "{log}");
    assert!(log.contains("chdir"), "{log}");
    // Controller inventory warnings are not written at every create.
    assert!(!log.contains("not supported on this system"), "{log}");
    // Nothing left: the id is free again.
    assert!(!pod.state_dir().join("containers/badcwd").exists());
    fs::remove_dir_all(pod.dir.path().join("bundles/badcwd")).unwrap();
    pod.create("badcwd", "true");
}

/// A stop signal the kernel refuses (0 from a bogus image StopSignal) must
/// not leave the container running: the SIGKILL comes at once, long before
/// the graceful timeout. A real-time stop signal is delivered.
#[test]
fn bogus_stop_signal_still_stops_and_realtime_signals_are_delivered() {
    if !usable() {
        return;
    }
    let mut pod = Pod::start("badsig");
    pod.create("c1", "sleep 1000");
    assert_eq!(pod.call(Request::Start { id: "c1".into() }), Response::Ok);
    let t0 = Instant::now();
    let r = pod.call(Request::Stop {
        id: "c1".into(),
        signal: 0,
        timeout_ms: 30_000,
        kill_wait_ms: 10_000,
    });
    let Response::State(s) = r else {
        panic!("stop with signal 0: {r:?}")
    };
    assert_eq!(s.status, Status::Exited, "{s:?}");
    assert_eq!(s.exit.expect("exit record").signal, libc::SIGKILL);
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());

    // SIGRTMIN+3 (nix's Signal has no real-time signals; the kernel drops
    // unhandled signals to a PID namespace's init) reaches the init's trap.
    let trap = format!(
        "trap 'exit 7' {}; echo ready; sleep 1000 & wait",
        libc::SIGRTMIN() + 3
    );
    pod.create("c2", &trap);
    assert_eq!(pod.call(Request::Start { id: "c2".into() }), Response::Ok);
    // The trap must be set before the signal comes.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !fs::read_to_string(pod.log_path("c2")).is_ok_and(|l| l.contains("ready")) {
        assert!(Instant::now() < deadline, "c2 never got ready");
        std::thread::sleep(Duration::from_millis(5));
    }
    let r = pod.call(Request::Stop {
        id: "c2".into(),
        signal: libc::SIGRTMIN() + 3,
        timeout_ms: 30_000,
        kill_wait_ms: 10_000,
    });
    let Response::State(s) = r else {
        panic!("stop with SIGRTMIN+3: {r:?}")
    };
    assert_eq!(s.exit.as_ref().expect("exit record").exit_code, 7, "{s:?}");
}

// ---- Streaming: terminals, stdin, exec_stream, attach ----

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use berth_monitor_protocol::TerminalSize;
use berth_monitor_protocol::fds::recv_line_with_fds;

/// How long a streaming test waits for output before failing.
const WAIT: Duration = Duration::from_secs(10);

impl Pod {
    /// Creates `id` running `sh -c script`, with a terminal or not, with
    /// `stdin`/`stdin_once`, and starts it.
    fn run_with(&mut self, id: &str, script: &str, terminal: bool, stdin: bool, stdin_once: bool) {
        let bundle = self.bundle(id, script);
        let path = bundle.join("config.json");
        let mut config: serde_json::Value =
            serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        config["process"]["terminal"] = terminal.into();
        fs::write(&path, serde_json::to_vec(&config).unwrap()).unwrap();
        let r = self.call(Request::Create {
            id: id.into(),
            bundle,
            log_path: self.log_path(id),
            stdin,
            stdin_once,
            restore: None,
        });
        assert!(matches!(r, Response::Created { .. }), "create {id}: {r:?}");
        assert_eq!(self.call(Request::Start { id: id.into() }), Response::Ok);
    }

    /// Sends `req` on a new connection; returns it with the answer and the
    /// fds that came with it.
    fn stream(&self, req: &Request) -> (UnixStream, Response, Vec<OwnedFd>) {
        let mut conn = UnixStream::connect(self.state_dir().join("monitor.sock")).unwrap();
        let mut line = serde_json::to_vec(req).unwrap();
        line.push(b'\n');
        conn.write_all(&line).unwrap();
        let (line, fds) = recv_line_with_fds(&conn).expect("answer with fds");
        (conn, serde_json::from_slice(&line).unwrap(), fds)
    }

    fn exec_stream(
        &self,
        id: &str,
        args: &[&str],
        tty: bool,
        stdin: bool,
        size: Option<TerminalSize>,
    ) -> (UnixStream, i32, Vec<OwnedFd>) {
        let req = Request::ExecStream {
            id: id.into(),
            args: args.iter().map(|a| a.to_string()).collect(),
            env: vec![],
            cwd: None,
            tty,
            stdin,
            size,
        };
        match self.stream(&req) {
            (conn, Response::ExecStarted { pid }, fds) => (conn, pid, fds),
            (_, other, _) => panic!("exec_stream {args:?}: {other:?}"),
        }
    }

    fn fd_count(&self) -> usize {
        fs::read_dir(format!("/proc/{}/fd", self.pid))
            .unwrap()
            .count()
    }

    /// The monitor's fd count once it has stopped changing (100 ms alike):
    /// a connection a test just dropped closes when the monitor's loop gets
    /// to it, so a count taken at once may still hold it.
    fn settled_fd_count(&self) -> usize {
        let deadline = Instant::now() + WAIT;
        let (mut last, mut same) = (self.fd_count(), 0);
        while same < 10 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
            let now = self.fd_count();
            same = if now == last { same + 1 } else { 0 };
            last = now;
        }
        last
    }

    /// Waits until the monitor holds `n` fds again (it closes what a
    /// session held as its loop gets to it).
    fn wait_fd_count(&self, n: usize) {
        let deadline = Instant::now() + WAIT;
        while self.fd_count() != n {
            assert!(
                Instant::now() < deadline,
                "monitor fds: {} (baseline {n}): {:?}",
                self.fd_count(),
                fs::read_dir(format!("/proc/{}/fd", self.pid))
                    .unwrap()
                    .map(|e| fs::read_link(e.unwrap().path()).unwrap_or_default())
                    .collect::<Vec<_>>()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Reads `fd` until `done` says the bytes so far are enough, or EOF (a
/// terminal's master reads EIO once the process is gone), failing after
/// `WAIT`.
fn read_until(fd: BorrowedFd<'_>, done: impl Fn(&[u8]) -> bool) -> Vec<u8> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let deadline = Instant::now() + WAIT;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while !done(&out) {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "timed out; read so far: {:?}",
            String::from_utf8_lossy(&out)
        );
        let mut p = [PollFd::new(fd, PollFlags::POLLIN)];
        let ms = PollTimeout::try_from(left.as_millis().min(1000) as i32).unwrap();
        if poll(&mut p, ms).unwrap() == 0 {
            continue;
        }
        match nix::unistd::read(fd, &mut buf) {
            Ok(0) | Err(nix::errno::Errno::EIO) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(nix::errno::Errno::EINTR | nix::errno::Errno::EAGAIN) => {}
            Err(e) => panic!("read: {e}"),
        }
    }
    out
}

fn read_to_end(fd: BorrowedFd<'_>) -> Vec<u8> {
    read_until(fd, |_| false)
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// The last line on a streaming exec's connection, then EOF.
fn exec_exited(conn: &UnixStream) -> i32 {
    let mut lines = BufReader::new(conn).lines();
    let line = lines.next().expect("exec_exited line").unwrap();
    let code = match serde_json::from_str(&line).unwrap() {
        Response::ExecExited { exit_code } => exit_code,
        other => panic!("{other:?}"),
    };
    assert!(
        lines.next().is_none(),
        "the connection closes after exec_exited"
    );
    code
}

fn write_all(fd: &OwnedFd, data: &[u8]) {
    let mut f = fs::File::from(fd.try_clone().unwrap());
    f.write_all(data).unwrap();
}

fn wait_gone(pid: i32) {
    let deadline = Instant::now() + WAIT;
    while Path::new(&format!("/proc/{pid}")).exists() {
        assert!(Instant::now() < deadline, "process {pid} still exists");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn terminal_container_output_goes_to_the_log() {
    if !usable() {
        return;
    }
    let mut pod = Pod::start("ttylog");
    pod.run_with(
        "t",
        "if [ -t 0 ] && [ -t 1 ] && [ -t 2 ]; then echo on-a-tty; fi; echo to-stderr >&2; printf partial; exit 4",
        true,
        false,
        false,
    );
    let exit = pod.wait_exited("t").exit.unwrap();
    assert_eq!(exit.exit_code, 4);
    let log = fs::read_to_string(pod.log_path("t")).unwrap();
    let records: Vec<(&str, &str, &str)> = log
        // Not `lines()`: it would take the terminal's \r away.
        .split_terminator('\n')
        .map(|l| {
            let mut f = l.splitn(4, ' ');
            f.next().unwrap();
            (f.next().unwrap(), f.next().unwrap(), f.next().unwrap())
        })
        .collect();
    // Everything a terminal shows is stdout (the terminal writes \r\n).
    assert_eq!(
        records,
        [
            ("stdout", "F", "on-a-tty\r"),
            ("stdout", "F", "to-stderr\r"),
            ("stdout", "P", "partial")
        ],
        "{log}"
    );
}

#[test]
fn exec_stream_with_pipes() {
    if !usable() {
        return;
    }
    let mut pod = Pod::start("xpipes");
    pod.run_with("c", "exec sleep 1000", false, false, false);
    let baseline = pod.settled_fd_count();

    // stdin echoed back by cat; stdin's EOF ends it.
    let (conn, pid, fds) = pod.exec_stream("c", &["cat"], false, true, None);
    assert!(pid > 0);
    let [stdin, stdout, stderr] = <[OwnedFd; 3]>::try_from(fds).unwrap();
    write_all(&stdin, b"hello\n");
    assert_eq!(
        read_until(stdout.as_fd(), |b| b.ends_with(b"\n")),
        b"hello\n"
    );
    drop(stdin);
    assert_eq!(read_to_end(stdout.as_fd()), b"");
    assert_eq!(read_to_end(stderr.as_fd()), b"");
    assert_eq!(exec_exited(&conn), 0);

    // Exit code and stderr apart; without stdin, the process reads /dev/null.
    let (conn, _, fds) = pod.exec_stream(
        "c",
        &["sh", "-c", "cat; echo out; echo err >&2; exit 3"],
        false,
        false,
        None,
    );
    let [stdout, stderr] = <[OwnedFd; 2]>::try_from(fds).unwrap();
    assert_eq!(read_to_end(stdout.as_fd()), b"out\n");
    assert_eq!(read_to_end(stderr.as_fd()), b"err\n");
    assert_eq!(exec_exited(&conn), 3);

    // Killed by a signal: 128 + signal.
    let (conn, _, _fds) = pod.exec_stream("c", &["sh", "-c", "kill -9 $$"], false, false, None);
    assert_eq!(exec_exited(&conn), 137);

    // Errors are plain answers, without fds.
    match pod.stream(&Request::ExecStream {
        id: "nope".into(),
        args: vec!["true".into()],
        env: vec![],
        cwd: None,
        tty: false,
        stdin: false,
        size: None,
    }) {
        (_, Response::Error(ErrorReply { code, .. }), fds) => {
            assert_eq!(code, ErrorCode::NotFound);
            assert!(fds.is_empty());
        }
        other => panic!("{other:?}"),
    }
    drop((conn, stdout, stderr));
    pod.wait_fd_count(baseline);
}

#[test]
fn exec_stream_with_a_terminal() {
    if !usable() {
        return;
    }
    let mut pod = Pod::start("xtty");
    pod.run_with("c", "exec sleep 1000", false, false, false);

    // The size given is the terminal's from the start.
    let size = TerminalSize {
        width: 100,
        height: 30,
    };
    let (conn, _, fds) = pod.exec_stream("c", &["stty", "size"], true, false, Some(size));
    assert_eq!(fds.len(), 1, "the master only");
    let out = read_to_end(fds[0].as_fd());
    assert_eq!(out, b"30 100\r\n", "{:?}", String::from_utf8_lossy(&out));
    assert_eq!(exec_exited(&conn), 0);
    drop(fds);
    // The console socket is open now: the baseline from here.
    let baseline = pod.settled_fd_count();

    // Input through the master; a resize seen by the process.
    let (conn, _, fds) = pod.exec_stream(
        "c",
        &["sh", "-c", "stty size; read x; stty size; exit 5"],
        true,
        true,
        Some(size),
    );
    let master = &fds[0];
    let first = read_until(master.as_fd(), |b| contains(b, "30 100\r\n"));
    assert!(contains(&first, "30 100"), "{first:?}");
    berth_shim::monitor::set_terminal_size(
        master.as_fd(),
        TerminalSize {
            width: 120,
            height: 40,
        },
    )
    .unwrap();
    write_all(master, b"go\n");
    let rest = read_to_end(master.as_fd());
    assert!(
        contains(&rest, "40 120\r\n"),
        "{:?}",
        String::from_utf8_lossy(&rest)
    );
    assert_eq!(exec_exited(&conn), 5);
    drop(fds);
    pod.wait_fd_count(baseline);
    // libcontainer's console socket links of the execs are gone.
    let left: Vec<_> = fs::read_dir(pod.state_dir().join("containers/c"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("tenant-tty-"))
        .collect();
    assert_eq!(left, Vec::<String>::new());
}

#[test]
fn exec_stream_client_gone_kills_the_process() {
    if !usable() {
        return;
    }
    let mut pod = Pod::start("xgone");
    pod.run_with("c", "exec sleep 1000", false, false, false);
    // Open the console socket first, so the baseline includes it.
    let (conn, _, fds) = pod.exec_stream("c", &["true"], true, false, None);
    assert_eq!(exec_exited(&conn), 0);
    drop(fds);
    let baseline = pod.settled_fd_count();
    for tty in [false, true] {
        let (conn, pid, fds) = pod.exec_stream("c", &["sleep", "1000"], tty, true, None);
        assert!(Path::new(&format!("/proc/{pid}")).exists());
        drop(conn);
        wait_gone(pid);
        drop(fds);
        pod.wait_fd_count(baseline);
    }
    // The container is untouched.
    assert_eq!(pod.state("c").status, Status::Running);
    // Deleting the container kills a streaming exec still running: its
    // client is told.
    let (conn, pid, _fds) = pod.exec_stream("c", &["sleep", "1000"], false, false, None);
    assert_eq!(
        pod.call(Request::Delete {
            id: "c".into(),
            force: true
        }),
        Response::Ok
    );
    assert_eq!(exec_exited(&conn), 137);
    wait_gone(pid);
}

fn attach(pod: &Pod, id: &str, stdin: bool) -> (UnixStream, bool, bool, Vec<OwnedFd>) {
    match pod.stream(&Request::Attach {
        id: id.into(),
        stdin,
    }) {
        (conn, Response::Attached { terminal, stdin }, fds) => (conn, terminal, stdin, fds),
        (_, other, _) => panic!("attach {id}: {other:?}"),
    }
}

/// The connection of an attach ends (EOF) once the container's output did.
fn wait_conn_closed(conn: &UnixStream) {
    conn.set_read_timeout(Some(WAIT)).unwrap();
    let mut b = [0u8; 1];
    assert_eq!((&*conn).read(&mut b).unwrap(), 0);
}

#[test]
fn attach_to_a_container_with_stdin() {
    if !usable() {
        return;
    }
    let mut pod = Pod::start("attach");
    pod.run_with("nostdin", "exec sleep 1000", false, false, false);
    let baseline = pod.settled_fd_count();
    pod.run_with("cat", "exec cat", false, true, false);
    pod.run_with("once", "exec cat", false, true, true);

    // Two clients; the first writes, both read.
    let (c1, terminal, stdin, fds1) = attach(&pod, "cat", true);
    assert_eq!((terminal, stdin, fds1.len()), (false, true, 3));
    let (c2, terminal, stdin, fds2) = attach(&pod, "cat", false);
    assert_eq!((terminal, stdin, fds2.len()), (false, false, 2));
    write_all(&fds1[0], b"ping\n");
    assert_eq!(
        read_until(fds1[1].as_fd(), |b| b.ends_with(b"\n")),
        b"ping\n"
    );
    assert_eq!(
        read_until(fds2[0].as_fd(), |b| b.ends_with(b"\n")),
        b"ping\n"
    );
    // Detaching leaves the container running; the other client still reads.
    drop((c2, fds2));
    write_all(&fds1[0], b"pong\n");
    assert_eq!(
        read_until(fds1[1].as_fd(), |b| b.ends_with(b"\n")),
        b"pong\n"
    );
    drop((c1, fds1));
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(pod.state("cat").status, Status::Running);
    // Not stdin_once: a second attach gets stdin again.
    let (c3, _, stdin, fds3) = attach(&pod, "cat", true);
    assert!(stdin);
    write_all(&fds3[0], b"again\n");
    assert_eq!(
        read_until(fds3[1].as_fd(), |b| b.ends_with(b"\n")),
        b"again\n"
    );
    let log = fs::read_to_string(pod.log_path("cat")).unwrap();
    for l in ["stdout F ping", "stdout F pong", "stdout F again"] {
        assert!(log.contains(l), "{log}");
    }
    // The container exits: the client reads EOF, then the connection ends.
    pod.call(Request::Kill {
        id: "cat".into(),
        signal: 9,
        all: false,
    });
    assert_eq!(read_to_end(fds3[1].as_fd()), b"");
    assert_eq!(read_to_end(fds3[2].as_fd()), b"");
    wait_conn_closed(&c3);
    drop((c3, fds3));

    // stdin_once: the first attach with stdin ending closes it; cat exits.
    let (c, _, stdin, fds) = attach(&pod, "once", true);
    assert!(stdin);
    write_all(&fds[0], b"once\n");
    assert_eq!(
        read_until(fds[1].as_fd(), |b| b.ends_with(b"\n")),
        b"once\n"
    );
    drop((c, fds));
    assert_eq!(pod.wait_exited("once").exit.unwrap().exit_code, 0);

    // A container without stdin: attach answers without it.
    let (c, terminal, stdin, fds) = attach(&pod, "nostdin", true);
    assert_eq!((terminal, stdin, fds.len()), (false, false, 2));
    drop((c, fds));
    // Not running: refused.
    match pod.stream(&Request::Attach {
        id: "once".into(),
        stdin: false,
    }) {
        (_, Response::Error(ErrorReply { code, message }), _) => {
            assert_eq!(code, ErrorCode::FailedPrecondition, "{message}");
        }
        other => panic!("{other:?}"),
    }
    for id in ["cat", "once"] {
        let r = pod.call(Request::Delete {
            id: id.into(),
            force: false,
        });
        assert_eq!(r, Response::Ok);
    }
    pod.wait_fd_count(baseline);
}

/// `close_stdin` (what berthd sends when a `stdin_once` attach's client
/// ended its stdin): the process reads EOF while the attach stays, and
/// what it writes afterwards reaches the attached client until it exits.
#[test]
fn close_stdin_while_attached() {
    if !usable() {
        return;
    }
    let mut pod = Pod::start("closein");
    let script = r#"read x; echo "got $x"; cat >/dev/null; echo eof; sleep 0.2; echo after"#;
    pod.run_with("c", script, false, true, true);
    let (conn, _, stdin, mut fds) = attach(&pod, "c", true);
    assert!(stdin);
    write_all(&fds[0], b"hi\n");
    assert_eq!(
        read_until(fds[1].as_fd(), |b| b.ends_with(b"\n")),
        b"got hi\n"
    );
    // The client's dup of the write end goes first, as berthd's does.
    drop(fds.remove(0));
    assert_eq!(
        pod.call(Request::CloseStdin { id: "c".into() }),
        Response::Ok
    );
    assert_eq!(read_to_end(fds[0].as_fd()), b"eof\nafter\n");
    wait_conn_closed(&conn);
    assert_eq!(pod.wait_exited("c").exit.unwrap().exit_code, 0);
    // Closed already, or no such container.
    assert_eq!(
        pod.call(Request::CloseStdin { id: "c".into() }),
        Response::Ok
    );
    match pod.call(Request::CloseStdin { id: "nope".into() }) {
        Response::Error(ErrorReply { code, .. }) => assert_eq!(code, ErrorCode::NotFound),
        other => panic!("{other:?}"),
    }
}

#[test]
fn attach_to_a_terminal_container() {
    if !usable() {
        return;
    }
    let mut pod = Pod::start("attachtty");
    pod.run_with("t", "exec cat", true, true, false);
    // A client gone and back (as after a berthd restart): the monitor
    // holds the terminal.
    drop(Client::connect(&pod.state_dir()).unwrap());
    let baseline = pod.settled_fd_count();
    let (conn, terminal, stdin, fds) = attach(&pod, "t", true);
    assert_eq!((terminal, stdin, fds.len()), (true, true, 2));
    let [master, out] = <[OwnedFd; 2]>::try_from(fds).unwrap();
    write_all(&master, b"hi\n");
    // The terminal echoes the input, then cat prints it.
    let got = read_until(out.as_fd(), |b| b == b"hi\r\nhi\r\n");
    assert_eq!(got, b"hi\r\nhi\r\n");
    // A resize through the master is the container's terminal's.
    berth_shim::monitor::set_terminal_size(
        master.as_fd(),
        TerminalSize {
            width: 77,
            height: 22,
        },
    )
    .unwrap();
    let (c, _, fds) = pod.exec_stream(
        "t",
        &["stty", "-F", "/dev/console", "size"],
        false,
        false,
        None,
    );
    assert_eq!(read_to_end(fds[0].as_fd()), b"22 77\n");
    assert_eq!(exec_exited(&c), 0);
    drop((c, fds));
    let log = fs::read_to_string(pod.log_path("t")).unwrap();
    assert!(log.contains("stdout F hi\r\n"), "{log}");
    // Detach: the container runs on.
    drop((conn, master, out));
    pod.wait_fd_count(baseline);
    assert_eq!(pod.state("t").status, Status::Running);
    assert_eq!(
        pod.call(Request::Delete {
            id: "t".into(),
            force: true
        }),
        Response::Ok
    );
}

/// Creates and starts container `id` from `bundle`; its init's pid.
fn run_bundle(pod: &mut Pod, id: &str, bundle: PathBuf) -> i32 {
    let r = pod.call(Request::Create {
        id: id.into(),
        bundle,
        log_path: pod.log_path(id),
        stdin: false,
        stdin_once: false,
        restore: None,
    });
    let Response::Created { pid } = r else {
        panic!("create {id}: {r:?}")
    };
    assert_eq!(pod.call(Request::Start { id: id.into() }), Response::Ok);
    pid
}

fn file_hash(path: &Path) -> u64 {
    use std::hash::Hasher;
    let mut f = fs::File::open(path).unwrap();
    let mut h = std::hash::DefaultHasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            return h.finish();
        }
        h.write(&buf[..n]);
    }
}

fn wait_for(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The contents of a file a container writes, once it is there and written.
fn wait_for_file(path: &Path) -> String {
    wait_for(path);
    std::thread::sleep(Duration::from_millis(50));
    fs::read_to_string(path).unwrap()
}

/// CVE-2019-5736 class. A container's init (and every exec) is a clone of
/// the monitor until it execs, so an init whose program is `/proc/self/exe`
/// runs the monitor's binary inside the container, loading the image's
/// libc. Container B keeps an fd to that process's executable; once
/// nothing runs it (A and the monitor gone: a crash, an upgrade), B
/// writes through the fd. The monitor runs from a sealed copy, so what B
/// holds is that copy: the write is refused and the binary on disk is
/// unchanged (without the copy, B's write lands in the monitor's file).
#[test]
fn a_container_cannot_write_the_monitor_binary() {
    if !usable() {
        return;
    }
    // The monitor runs from a scratch copy: on a build without the sealed
    // copy the write lands there, not in target/.
    let scratch = tempfile::tempdir().unwrap();
    let bin = scratch.path().join("berth-monitor");
    fs::copy(monitor_bin(), &bin).unwrap();
    let before = file_hash(&bin);
    let mut pod = Pod::start_from(&bin, "sealed");
    assert!(
        client::sealed::exe_is_sealed(&pod.pid.to_string()),
        "the monitor does not run from a sealed copy: {:?}",
        fs::read_link(format!("/proc/{}/exe", pod.pid))
    );

    // Both in the host's PID namespace (so B sees A), with the host's /usr
    // (glibc) standing in for an image's libraries.
    let share_host = |c: &mut serde_json::Value, args: serde_json::Value| {
        c["process"]["args"] = args;
        let ns = c["linux"]["namespaces"].as_array_mut().unwrap();
        ns.retain(|n| n["type"] != "pid");
        c["mounts"].as_array_mut().unwrap().push(serde_json::json!(
            {"destination": "/usr", "type": "bind", "source": "/usr",
             "options": ["rbind", "ro", "nosuid", "nodev"]}
        ));
    };
    let a = pod.bundle("a", "true");
    for (link, to) in [("lib", "usr/lib"), ("lib64", "usr/lib64")] {
        symlink(to, a.join("rootfs").join(link)).unwrap();
    }
    edit_config(&a, |c| {
        share_host(
            c,
            serde_json::json!([
                "/proc/self/exe",
                "--pod-id",
                "inner",
                "--state-dir",
                "/tmp/inner",
                "--foreground"
            ]),
        )
    });
    let a_pid = run_bundle(&mut pod, "a", a);
    // A's init now runs whatever /proc/self/exe gave it (the monitor's
    // binary, in the container), serving a socket of its own.
    wait_for(
        &pod.dir
            .path()
            .join("bundles/a/rootfs/tmp/inner/monitor.sock"),
    );
    let a_exe = fs::read_link(format!("/proc/{a_pid}/exe")).unwrap();

    let script = format!(
        "exec 3< /proc/{a_pid}/exe || {{ echo cannot-open > /tmp/result; exit 1; }}
         touch /tmp/held
         while [ ! -e /tmp/go ]; do sleep 0.1; done
         if echo pwned >> /proc/self/fd/3; then echo wrote; else echo refused; fi > /tmp/result 2>&1
         sleep 1000"
    );
    let b = pod.bundle("b", &script);
    edit_config(&b, |c| {
        share_host(c, serde_json::json!(["/bin/sh", "-c", script]))
    });
    let b_pid = run_bundle(&mut pod, "b", b);
    let b_tmp = pod.dir.path().join("bundles/b/rootfs/tmp");
    let held = wait_for_file(&b_tmp.join("held"));
    assert!(!b_tmp.join("result").exists(), "{held}");

    // Nothing runs the executable any more: the kernel's ETXTBSY no longer
    // guards it.
    for pid in [a_pid, pod.pid] {
        // SAFETY: signalling processes this test started.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        wait_gone(pid);
    }
    fs::write(b_tmp.join("go"), "").unwrap();
    let result = wait_for_file(&b_tmp.join("result"));
    // SAFETY: as above.
    unsafe { libc::kill(b_pid, libc::SIGKILL) };
    wait_gone(b_pid);
    for id in ["a", "b"] {
        for d in pod.cgroup_dirs(id) {
            let _ = fs::remove_dir(d);
        }
    }
    assert_eq!(
        file_hash(&bin),
        before,
        "a container wrote the monitor's binary through {a_exe:?} ({result})"
    );
    assert!(result.contains("refused"), "{result}");
    assert!(
        a_exe.to_string_lossy().starts_with("/memfd:berth-monitor"),
        "{a_exe:?}"
    );
}

/// A monitor started from its file rather than through `spawn` (by hand,
/// by another tool) copies itself once at startup: it too runs sealed.
#[test]
fn a_monitor_started_from_its_file_reexecs_sealed() {
    if !usable() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(monitor_bin())
        .args(["--pod-id", "direct", "--state-dir"])
        .arg(dir.path().join("state"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let pid: i32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    let sealed = client::sealed::exe_is_sealed(&pid.to_string());
    let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap();
    let exe = fs::read_link(format!("/proc/{pid}/exe"));
    // SAFETY: signalling the monitor this test started.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    wait_gone(pid);
    assert!(sealed, "{exe:?}");
    assert_eq!(comm.trim(), "berth-monitor");
}

/// ExecSync output is held by the monitor, which runs outside the pod's
/// cgroup: execs running at once share one budget (32 MiB), whatever
/// each may keep alone (16 MiB). Three execs that each print 16 MiB and
/// then linger get at most the budget between them, the rest truncated.
#[test]
fn exec_output_held_at_once_is_bounded_per_monitor() {
    if !usable() {
        return;
    }
    let mut pod = Pod::start("execbudget");
    let bundle = pod.bundle("c", "sleep 1000");
    run_bundle(&mut pod, "c", bundle);
    let cap = client::DEFAULT_MAX_OUTPUT;
    let mut conns: Vec<UnixStream> = (0..3)
        .map(|_| UnixStream::connect(pod.state_dir().join(client::SOCKET_NAME)).unwrap())
        .collect();
    for c in &mut conns {
        let req = Request::Exec {
            id: "c".into(),
            args: vec![
                "/bin/busybox".into(),
                "sh".into(),
                "-c".into(),
                format!("busybox head -c {cap} /dev/zero; sleep 2"),
            ],
            env: vec![],
            cwd: None,
            timeout_ms: 60_000,
            max_output: cap,
        };
        let mut line = serde_json::to_vec(&req).unwrap();
        line.push(b'\n');
        c.write_all(&line).unwrap();
    }
    // Read at once: the monitor gives up on a client that does not take
    // its answer.
    let answers: Vec<_> = conns
        .into_iter()
        .map(|c| {
            std::thread::spawn(move || {
                let mut answer = String::new();
                BufReader::new(c).read_line(&mut answer).unwrap();
                answer
            })
        })
        .collect();
    let mut total = 0;
    let mut truncated = 0;
    for a in answers {
        let answer = a.join().unwrap();
        match serde_json::from_str(&answer).unwrap() {
            Response::Exec {
                exit_code,
                stdout,
                truncated: t,
                ..
            } => {
                assert_eq!(exit_code, 0);
                assert!(stdout.iter().all(|&b| b == 0));
                total += stdout.len();
                truncated += usize::from(t);
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(
        total <= 32 << 20,
        "the monitor held {total} bytes of output"
    );
    assert!(total >= 16 << 20, "{total}");
    assert!(truncated >= 1, "{truncated}");
}

/// Unmounts every mount below `dir` on drop, deepest first.
struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let mut points: Vec<String> = fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|m| Path::new(m).starts_with(&self.0))
            .map(str::to_string)
            .collect();
        points.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for p in points {
            let _ = nix::mount::umount2(p.as_str(), nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

fn mount_tmpfs(at: &Path) {
    fs::create_dir_all(at).unwrap();
    nix::mount::mount(
        Some("tmpfs"),
        at,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        Some("size=64k"),
    )
    .unwrap();
}

fn bind(from: &Path, at: &Path) {
    nix::mount::mount(
        Some(from),
        at,
        None::<&str>,
        nix::mount::MsFlags::MS_BIND,
        None::<&str>,
    )
    .unwrap();
}

/// `dir` bound onto itself, then given `propagation` (e.g. MS_PRIVATE).
fn self_bind(dir: &Path, propagation: nix::mount::MsFlags) {
    bind(dir, dir);
    nix::mount::mount(None::<&str>, dir, None::<&str>, propagation, None::<&str>).unwrap();
}

/// This process's mount points below `dir`, sorted (a path once per mount).
fn mount_points_below(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
        .filter(|m| Path::new(m).starts_with(dir))
        .collect();
    v.sort();
    v
}

/// `dir/run` made as berthd makes its state dir: two private binds of
/// itself, stacked (not `dir/state`, the monitor's own state dir).
fn mounts_root(dir: &Path) -> PathBuf {
    let root = dir.join("run");
    fs::create_dir_all(&root).unwrap();
    for _ in 0..2 {
        self_bind(&root, nix::mount::MsFlags::MS_PRIVATE);
    }
    root
}

fn mnt_ns(pid: &str) -> PathBuf {
    fs::read_link(format!("/proc/{pid}/ns/mnt")).unwrap()
}

/// With a mounts root (berthd's state dir as a mount point), libcontainer's
/// build runs where that root holds only the pod's mounts and the bundle's:
/// a createRuntime hook (run by the builder, in the monitor) lists the
/// mount table it sees. Other pods' mounts are not in it; the pod's shm,
/// its namespace pin (below an unbindable dir) and the bundle's rootfs are,
/// and the container runs. The monitor is back in the host's namespace after.
#[test]
fn builds_see_only_their_pods_mounts() {
    if !usable() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = mounts_root(dir.path());
    let pods = root.join("pods");
    mount_tmpfs(&pods.join("other").join("shm"));
    mount_tmpfs(&root.join("containers/other-ctr/rootfs"));
    let mine = pods.join("mine");
    mount_tmpfs(&mine.join("shm"));
    let pins = mine.join("ns");
    fs::create_dir_all(&pins).unwrap();
    self_bind(&pins, nix::mount::MsFlags::MS_UNBINDABLE);
    fs::write(pins.join("uts"), "").unwrap();
    fs::write(pins.join("not-a-pin"), "").unwrap();
    bind(Path::new("/proc/self/ns/uts"), &pins.join("uts"));

    let mut pod = Pod::start_in(dir, &monitor_bin(), "view", Some((&root, &mine)));
    // Dropped before the pod (which removes the dir).
    let _unmount = Unmount(pod.dir.path().to_path_buf());
    let bundle = pod.bundle_at(&root.join("containers/c1"), "c1", "exit 0");
    let rootfs = bundle.join("rootfs");
    bind(&rootfs, &rootfs);
    let seen = pod.dir.path().join("seen");
    edit_config(&bundle, |c| {
        c["hooks"] = serde_json::json!({"createRuntime": [{
            "path": "/bin/busybox",
            "args": ["sh", "-c", format!("cat /proc/self/mountinfo > {}", seen.display())]
        }]});
    });
    let host_before = mount_points_below(pod.dir.path());
    pod.create_from("c1", bundle);
    // Nothing done in the view reached this namespace (on a host whose `/`
    // is shared too: run the test under `unshare -m --propagation shared`).
    assert_eq!(mount_points_below(pod.dir.path()), host_before);
    let table = fs::read_to_string(&seen).expect("the hook ran");
    let points: Vec<&str> = table.lines().filter_map(|l| l.split(' ').nth(4)).collect();
    let has = |p: &Path| points.contains(&p.to_str().unwrap());
    assert!(has(&root), "{table}");
    assert!(has(&mine.join("shm")), "{table}");
    assert!(has(&pins.join("uts")), "{table}");
    assert!(has(&rootfs), "{table}");
    assert!(!has(&pods.join("other/shm")), "{table}");
    assert!(!has(&root.join("containers/other-ctr/rootfs")), "{table}");
    assert!(!has(&pins.join("not-a-pin")), "{table}");
    assert_eq!(pod.call(Request::Start { id: "c1".into() }), Response::Ok);
    let exit = pod.wait_exited("c1").exit.expect("exit record");
    assert_eq!(exit.exit_code, 0);
    assert_eq!(mnt_ns(&pod.pid.to_string()), mnt_ns("self"));
}

/// What the mount view saves (benchmark, prints figures): a create and 100
/// ExecSyncs of `/bin/true`, with 0 and 1,750 mounts of other pods below the
/// state dir (a node of ~250 pods), with and without the view. Run it in a
/// mount namespace of its own, on a release monitor:
/// `BERTH_MONITOR_BIN=target/release/berth-monitor unshare -m
/// target/debug/deps/monitor-<hash> cost_of_builds_among_many_mounts --ignored --nocapture`.
#[test]
#[ignore = "benchmark: run with --ignored --nocapture"]
fn cost_of_builds_among_many_mounts() {
    if !usable() {
        return;
    }
    for others in [0, 1750] {
        for view in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let root = mounts_root(dir.path());
            for i in 0..others {
                mount_tmpfs(&root.join(format!("pods/other{i}/shm")));
            }
            let mine = root.join("pods/mine");
            mount_tmpfs(&mine.join("shm"));
            let mounts = view.then_some((root.as_path(), mine.as_path()));
            let mut pod = Pod::start_in(dir, &monitor_bin(), "cost", mounts);
            let _unmount = Unmount(pod.dir.path().to_path_buf());
            let bundle = pod.bundle_at(&root.join("containers/c1"), "c1", "sleep 1000");
            let t = Instant::now();
            pod.create_from("c1", bundle);
            let create = t.elapsed();
            assert_eq!(pod.call(Request::Start { id: "c1".into() }), Response::Ok);
            let mut execs: Vec<Duration> = (0..100)
                .map(|_| {
                    let t = Instant::now();
                    let r = pod.call(Request::Exec {
                        id: "c1".into(),
                        args: vec!["/bin/true".into()],
                        env: vec![],
                        cwd: None,
                        timeout_ms: 10_000,
                        max_output: 1 << 20,
                    });
                    assert!(matches!(r, Response::Exec { exit_code: 0, .. }), "{r:?}");
                    t.elapsed()
                })
                .collect();
            execs.sort();
            println!(
                "{others:>5} other mounts, view {:<5}: create {:>7.2} ms, exec median {:>6.2} ms, p90 {:>6.2} ms",
                view,
                create.as_secs_f64() * 1e3,
                execs[50].as_secs_f64() * 1e3,
                execs[90].as_secs_f64() * 1e3
            );
        }
    }
}
