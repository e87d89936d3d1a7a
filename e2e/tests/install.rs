//! `hack/install.sh` into a temporary DESTDIR, and the installed berthd run
//! the way berth.service runs it: its ExecStart, the installed config, CNI
//! network and registries.conf, `NOTIFY_SOCKET` read for READY=1 (Type=notify)
//! and STOPPING=1; a restart as `systemctl restart` does it with
//! KillMode=process (SIGTERM to berthd alone) leaves running containers
//! running; `--uninstall` leaves nothing. The unit itself is checked by
//! `systemd-analyze verify` (systemd need not be running). Needs root.
//!
//! Where systemd runs as PID 1 the unit can be started for real:
//! docs/install.md says how; this machine's PID 1 is not systemd.

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use berth_api::v1::*;
use berth_e2e::cleanup::Guard;
use berth_e2e::daemon::{Berthd, BerthdConfig};
use berth_e2e::pods::*;

const PREFIX: &str = "/usr/local";

fn install_sh(args: &[&str]) -> String {
    let root = berth_e2e::workspace_root();
    let out = Command::new("bash")
        .arg(root.join("hack/install.sh"))
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "install.sh {args:?} failed:\n{text}");
    text
}

/// Every file and dir under `dir`.
fn tree(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![];
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() && !p.is_symlink() {
                todo.push(p.clone());
            }
            out.push(p);
        }
    }
    out
}

/// The next datagram on the notify socket, within 20 s.
fn notified(sock: &UnixDatagram) -> String {
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut buf = [0u8; 4096];
    let n = sock
        .recv(&mut buf)
        .expect("no message on NOTIFY_SOCKET within 20 s");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

async fn network_ready(d: &Berthd) -> bool {
    let mut c = d.client().await.unwrap();
    let st = c
        .runtime
        .status(StatusRequest { verbose: false })
        .await
        .unwrap()
        .into_inner();
    st.status
        .unwrap()
        .conditions
        .iter()
        .any(|c| c.r#type == "NetworkReady" && c.status)
}

/// The start time (clock ticks since boot) of the container's PID 1, as the
/// container itself sees it: the same process iff the same value.
async fn init_start_time(c: &mut berth_e2e::client::CriClient, id: &str) -> String {
    let r = exec(c, id, &["cat", "/proc/1/stat"], 10).await.unwrap();
    let stat = String::from_utf8_lossy(&r.stdout).into_owned();
    // Field 22; the comm field (2) is in parentheses and has no spaces here.
    stat.split_whitespace().nth(21).unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_run_as_the_unit_restart_keeps_pods_uninstall_leaves_nothing() {
    let root = berth_e2e::workspace_root();
    let bin_dir = berth_e2e::daemon::berthd_bin()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf();
    let dest = tempfile::tempdir().unwrap();
    let dd = dest.path().to_str().unwrap();
    install_sh(&[
        "--destdir",
        dd,
        "--prefix",
        PREFIX,
        "--bin-dir",
        bin_dir.to_str().unwrap(),
    ]);

    let at = |p: &str| dest.path().join(p.trim_start_matches('/'));
    for f in [
        "usr/local/bin/berthd",
        "usr/local/bin/berth-monitor",
        "usr/local/bin/berthctl",
    ] {
        let m = std::fs::metadata(at(f)).unwrap();
        assert!(
            std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o111 != 0,
            "{f}"
        );
    }
    assert_eq!(
        std::fs::read_to_string(at("/etc/berth/config.toml")).unwrap(),
        std::fs::read_to_string(root.join("hack/config.example.toml")).unwrap(),
        "the documented default config"
    );
    assert_eq!(
        std::fs::read(at("/etc/cni/net.d/10-berth.conflist")).unwrap(),
        std::fs::read(root.join("hack/cni/10-berth.conflist")).unwrap()
    );
    assert!(at("/etc/berth/registries.conf").is_file());
    let unit = std::fs::read_to_string(at("/etc/systemd/system/berth.service")).unwrap();
    for line in [
        "Type=notify",
        "ExecStart=/usr/local/bin/berthd",
        "KillMode=process",
        "Delegate=yes",
        "Restart=on-failure",
        "RestartForceExitStatus=75",
        "SuccessExitStatus=75",
    ] {
        assert!(
            unit.lines().any(|l| l == line),
            "berth.service lacks {line}:\n{unit}"
        );
    }

    // The unit as systemd would load it, its ExecStart pointing into DESTDIR
    // (systemd-analyze checks that the command exists).
    match Command::new("systemd-analyze").arg("--version").output() {
        Ok(_) => {
            let copy = dest.path().join("verify/berth.service");
            std::fs::create_dir_all(copy.parent().unwrap()).unwrap();
            std::fs::write(
                &copy,
                unit.replace(
                    "ExecStart=/usr/local/bin/",
                    &format!("ExecStart={dd}/usr/local/bin/"),
                ),
            )
            .unwrap();
            let out = Command::new("systemd-analyze")
                .arg("verify")
                .arg(&copy)
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stderr).into_owned()
                + &String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success() && text.trim().is_empty(),
                "systemd-analyze verify:\n{text}"
            );
            std::fs::remove_dir_all(copy.parent().unwrap()).unwrap();
        }
        Err(e) => eprintln!(
            "systemd-analyze is not installed ({e}): the unit file was checked by its lines only"
        ),
    }

    // ExecStart's command, with the installed files; the paths the unit
    // would use (/var/lib/berth, /run/berth) are a test's own dirs.
    let exec_start = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .unwrap();
    let mut config = BerthdConfig::new().unwrap();
    let _g = Guard(config.dir.path().to_path_buf());
    let notify_path = config.dir.path().join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    config.bin = Some(at(exec_start));
    config.env = vec![("NOTIFY_SOCKET".into(), notify_path.display().to_string())];
    config.args = vec![
        "--config".into(),
        at("/etc/berth/config.toml").display().to_string(),
        "--registries-config".into(),
        at("/etc/berth/registries.conf").display().to_string(),
        "--cni-conf-dir".into(),
        at("/etc/cni/net.d").display().to_string(),
    ];
    let mut d = Berthd::start_with(config).await.unwrap();
    assert_eq!(notified(&notify), "READY=1\n");
    assert!(
        network_ready(&d).await,
        "the installed CNI network is usable:\n{}",
        d.log_text()
    );
    assert!(d.stop().await.unwrap().success());
    assert_eq!(notified(&notify), "STOPPING=1\n");

    // Pods on the installed binaries (the installed berth-monitor beside the
    // installed berthd), images from the test registry, no CNI network (the
    // test must not make the default network's berth0 bridge on this host).
    let reg = test_registry(&mut d.config);
    d.config.args.truncate(2);
    d.restart().await.unwrap();
    assert_eq!(notified(&notify), "READY=1\n");
    let mut c = d.client().await.unwrap();
    c.image
        .pull_image(PullImageRequest {
            image: Some(ImageSpec {
                image: BUSYBOX.into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    let pc = pod_config_for(&d, "installed");
    let pod = run_pod_with(&mut c, &pc).await;
    let ctr = running(
        &mut c,
        &pod,
        &pc,
        sleeper("sleeper", BUSYBOX, Default::default(), None),
    )
    .await;
    let before = status(&mut c, &ctr).await.unwrap();
    let start_before = init_start_time(&mut c, &ctr).await;

    // `systemctl restart berth` with KillMode=process: SIGTERM to berthd
    // only; the monitor and the container stay.
    let restarted = Instant::now();
    d.restart().await.unwrap();
    assert_eq!(notified(&notify), "STOPPING=1\n");
    assert_eq!(notified(&notify), "READY=1\n");
    eprintln!(
        "berthd restarted and READY again in {:?}",
        restarted.elapsed()
    );
    let mut c = d.client().await.unwrap();
    let after = status(&mut c, &ctr).await.unwrap();
    assert_eq!(
        after.state,
        ContainerState::ContainerRunning as i32,
        "{after:?}"
    );
    assert_eq!(
        after.started_at, before.started_at,
        "the container was not restarted"
    );
    assert_eq!(
        init_start_time(&mut c, &ctr).await,
        start_before,
        "same process"
    );
    stop_pod(&mut c, &pod).await;
    remove_pod(&mut c, &pod).await;
    d.stop().await.unwrap();
    drop(reg);

    install_sh(&["--uninstall", "--destdir", dd, "--prefix", PREFIX]);
    let left = tree(dest.path());
    assert!(left.is_empty(), "uninstall left {left:?}");
}
