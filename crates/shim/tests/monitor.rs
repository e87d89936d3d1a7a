//! End-to-end tests of `berth-monitor`: real containers (busybox-static
//! rootfs), real cgroups. They need root and `/bin/busybox`; elsewhere they
//! print why and pass.

use std::fs;
use std::io::{BufRead, BufReader, Write};
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
        let dir = tempfile::tempdir().unwrap();
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let cgroup_parent = format!("berth-test-{}-{name}-{nanos:x}", std::process::id());
        let state = dir.path().join("state");
        let pid = client::spawn(&monitor_bin(), name, &state).expect("spawn monitor");
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
        let bundle = self.dir.path().join("bundles").join(id);
        let rootfs = bundle.join("rootfs");
        for d in ["bin", "proc", "dev", "sys", "tmp", "etc"] {
            fs::create_dir_all(rootfs.join(d)).unwrap();
        }
        fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
        for applet in ["sh", "sleep", "echo", "cat", "true"] {
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
        let log_path = self.log_path(id);
        match self.call(Request::Create {
            id: id.into(),
            bundle,
            log_path,
            stdin: false,
            stdin_once: false,
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
    let path = bundle.join("config.json");
    let mut config: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    config["process"]["oomScoreAdj"] = value.into();
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
