//! Times the monitor's container hot paths without berthd (profiling aid, not a test).
//!
//! ```text
//! cargo run --release -p berth-shim --example monitor-profile -- \
//!     --config CONFIG.JSON --layer DIR [--work DIR] [--iterations N]
//! ```
//!
//! Forks a monitor (the same code as `berth-monitor --foreground`), then N times: mounts
//! an overlay of `--layer` with a fresh upper dir, writes CONFIG.JSON (a bundle berthd made;
//! root, cgroupsPath and namespace paths are rewritten) and times create, start, exec `true`,
//! kill -9 + wait for the exit, delete over the monitor socket. The pod's network, IPC and
//! UTS namespaces are pinned once, as berthd does. Run it under
//! `strace -f --seccomp-bpf -tt -T -e trace=...` for a syscall timeline of the same steps.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use berth_monitor_protocol::{Client, Request, Response, Status};
use berth_shim::monitor::Monitor;

fn arg(name: &str) -> Option<String> {
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        if a == name {
            return it.next();
        }
    }
    None
}

fn main() {
    let config = PathBuf::from(arg("--config").expect("--config"));
    let layer = PathBuf::from(arg("--layer").expect("--layer"));
    let work = PathBuf::from(arg("--work").unwrap_or_else(|| "/tmp/monitor-profile".into()));
    let n: usize = arg("--iterations").map_or(20, |s| s.parse().expect("--iterations"));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(work.join("ns")).unwrap();
    let pins = pin_namespaces(&work.join("ns"));
    let state = work.join("mon");
    std::fs::create_dir_all(&state).unwrap();

    // The monitor: a forked child of this (single-threaded) process.
    let pid = match unsafe { nix::unistd::fork() }.unwrap() {
        nix::unistd::ForkResult::Child => {
            let m = Monitor::new("profile", &state).expect("monitor");
            m.run();
            std::process::exit(0);
        }
        nix::unistd::ForkResult::Parent { child } => child,
    };
    // A failed step must not leave the monitor (and its containers) behind.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        hook(info);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
    }));
    let mut client = loop {
        match Client::connect(&state) {
            Ok(c) => break c,
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    };
    let spec: serde_json::Value = serde_json::from_slice(&std::fs::read(&config).unwrap()).unwrap();
    let mut samples: Vec<(&str, Vec<f64>)> = ["create", "start", "exec", "kill+wait", "delete"]
        .iter()
        .map(|s| (*s, Vec::new()))
        .collect();
    for i in 0..=n {
        let id = format!("prof{i:04}{}", std::process::id());
        let bundle = work.join(&id);
        let rootfs = bundle.join("rootfs");
        for d in ["upper", "work", "rootfs"] {
            std::fs::create_dir_all(bundle.join(d)).unwrap();
        }
        let data = format!(
            "lowerdir={},upperdir={},workdir={}",
            layer.display(),
            bundle.join("upper").display(),
            bundle.join("work").display()
        );
        nix::mount::mount(
            Some("overlay"),
            &rootfs,
            Some("overlay"),
            nix::mount::MsFlags::empty(),
            Some(data.as_str()),
        )
        .unwrap();
        let mut s = spec.clone();
        s["root"]["path"] = rootfs.display().to_string().into();
        s["linux"]["cgroupsPath"] = format!("/berth/{id}").into();
        for ns in s["linux"]["namespaces"].as_array_mut().unwrap() {
            if let Some(p) = pins.iter().find(|(t, _)| ns["type"] == *t) {
                ns["path"] = p.1.display().to_string().into();
            }
        }
        for m in s["mounts"].as_array_mut().unwrap() {
            // The pod files: any existing file will do.
            if m["type"] == "bind"
                && m["destination"]
                    .as_str()
                    .is_some_and(|d| d.starts_with("/etc/"))
            {
                m["source"] = "/etc/hostname".into();
            }
            if m["destination"] == "/dev/shm" && m["type"] == "bind" {
                m["source"] = work.join("ns").display().to_string().into();
            }
        }
        std::fs::write(bundle.join("config.json"), serde_json::to_vec(&s).unwrap()).unwrap();
        let mut times = Vec::new();
        let t = Instant::now();
        expect_ok(client.call(&Request::Create {
            id: id.clone(),
            bundle: bundle.clone(),
            log_path: bundle.join("log"),
            stdin: false,
            stdin_once: false,
            restore: None,
        }));
        times.push(t.elapsed());
        let t = Instant::now();
        expect_ok(client.call(&Request::Start { id: id.clone() }));
        times.push(t.elapsed());
        let t = Instant::now();
        match client.call(&Request::Exec {
            id: id.clone(),
            args: vec!["true".into()],
            env: vec![],
            cwd: None,
            timeout_ms: 10_000,
            max_output: 1 << 20,
        }) {
            Ok(Response::Exec { exit_code: 0, .. }) => {}
            other => panic!("exec: {other:?}"),
        }
        times.push(t.elapsed());
        let t = Instant::now();
        expect_ok(client.call(&Request::Kill {
            id: id.clone(),
            signal: 9,
            all: true,
        }));
        loop {
            match client.call(&Request::State { id: id.clone() }) {
                Ok(Response::State(s)) if s.status == Status::Exited => break,
                Ok(Response::State(_)) => std::thread::sleep(Duration::from_micros(200)),
                other => panic!("state: {other:?}"),
            }
        }
        times.push(t.elapsed());
        let t = Instant::now();
        expect_ok(client.call(&Request::Delete {
            id: id.clone(),
            force: true,
        }));
        times.push(t.elapsed());
        nix::mount::umount(&rootfs).unwrap();
        let _ = std::fs::remove_dir_all(&bundle);
        if i > 0 {
            for (k, d) in times.iter().enumerate() {
                samples[k].1.push(d.as_secs_f64() * 1e3);
            }
        }
    }
    let _ = client.call(&Request::Shutdown);
    let _ = nix::sys::wait::waitpid(pid, None);
    println!("monitor-profile x{n} (ms)     median      p90");
    for (name, mut v) in samples {
        v.sort_by(f64::total_cmp);
        let med = v[v.len() / 2];
        let p90 = v[(v.len() * 9).div_ceil(10).max(1) - 1];
        println!("  {name:<20} {med:8.2} {p90:8.2}");
    }
    for (_, p) in &pins {
        let _ = nix::mount::umount(p);
    }
}

fn expect_ok(r: std::io::Result<Response>) {
    match r {
        Ok(Response::Error(e)) => panic!("monitor: {e}"),
        Ok(_) => {}
        Err(e) => panic!("monitor: {e}"),
    }
}

/// New net, IPC and UTS namespaces, bind-mounted on files under `dir`.
fn pin_namespaces(dir: &Path) -> Vec<(&'static str, PathBuf)> {
    use nix::sched::CloneFlags;
    let (r, w) = nix::unistd::pipe().unwrap();
    let child = match unsafe { nix::unistd::fork() }.unwrap() {
        nix::unistd::ForkResult::Child => {
            nix::sched::unshare(
                CloneFlags::CLONE_NEWNET | CloneFlags::CLONE_NEWIPC | CloneFlags::CLONE_NEWUTS,
            )
            .unwrap();
            nix::unistd::write(&w, b"x").unwrap();
            std::thread::sleep(Duration::from_secs(3600));
            std::process::exit(0);
        }
        nix::unistd::ForkResult::Parent { child } => child,
    };
    drop(w);
    let mut b = [0u8; 1];
    nix::unistd::read(&r, &mut b).unwrap();
    let mut out = Vec::new();
    for (t, f) in [("network", "net"), ("ipc", "ipc"), ("uts", "uts")] {
        let p = dir.join(f);
        std::fs::write(&p, b"").unwrap();
        nix::mount::mount(
            Some(Path::new(&format!("/proc/{child}/ns/{f}"))),
            &p,
            None::<&str>,
            nix::mount::MsFlags::MS_BIND,
            None::<&str>,
        )
        .unwrap();
        out.push((t, p));
    }
    let _ = nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
    let _ = nix::sys::wait::waitpid(child, None);
    out
}
