//! berthd's `favordynmods` cgroup hierarchy beside other runtimes on the
//! node: runc, for a container with its own cgroup namespace, mounts every
//! cgroup v1 hierarchy of the host's mount table into it, taking the mount
//! options from the mount point's basename; the hierarchy berthd used to
//! leave mounted at `<state>/cgroup-favordynmods` made that mount fail
//! ("data: cgroup-favordynmods: invalid argument"). berthd now keeps the
//! hierarchy alive without a mount (crates/cgroup/src/favordynmods.rs).
//!
//! Needs root and runc (hack/install-deps.sh installs it): a missing runc
//! fails the test, saying so.

use std::path::{Path, PathBuf};
use std::process::Command;

use berth_e2e::daemon::{Berthd, BerthdConfig};
use nix::mount::{MntFlags, MsFlags};

/// One test at a time: the second one mounts the hierarchy where an older
/// berthd did, which would fail the first one's runc container.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn hierarchy() -> String {
    format!("name={}", berth_cgroup::FAVORDYNMODS_HIERARCHY)
}

/// Whether this host has cgroup v1 hierarchies (legacy or hybrid), where
/// berthd makes its named hierarchy; on a pure v2 host it makes none.
fn host_has_v1() -> bool {
    mounts().iter().any(|m| m.fstype == "cgroup")
}

fn mounts() -> Vec<berth_mountinfo::Mount> {
    berth_mountinfo::read_self().unwrap()
}

/// Mount points of Berth's named hierarchy (anywhere).
fn our_mounts() -> Vec<PathBuf> {
    let name = hierarchy();
    mounts()
        .into_iter()
        .filter(|m| m.fstype == "cgroup" && m.super_options.split(',').any(|o| o == name))
        .map(|m| m.mount_point)
        .collect()
}

/// Whether the hierarchy exists (mounted or not): a line of /proc/self/cgroup.
fn hierarchy_listed() -> bool {
    let name = hierarchy();
    std::fs::read_to_string("/proc/self/cgroup")
        .unwrap()
        .lines()
        .any(|l| l.split(':').nth(1) == Some(name.as_str()))
}

/// The hierarchy's superblock options, read by mounting it (reusing the
/// live hierarchy, with options that do not ask for favordynmods) under
/// `dir` for a moment.
fn hierarchy_options(dir: &Path) -> String {
    let mnt = dir.join("peek");
    std::fs::create_dir_all(&mnt).unwrap();
    nix::mount::mount(
        Some("berth"),
        &mnt,
        Some("cgroup"),
        MsFlags::empty(),
        Some(format!("none,{}", hierarchy()).as_str()),
    )
    .unwrap();
    let opts = mounts()
        .into_iter()
        .find(|m| m.mount_point == mnt)
        .unwrap()
        .super_options;
    let keepalive = mnt.join(berth_cgroup::FAVORDYNMODS_KEEPALIVE).is_dir();
    nix::mount::umount2(&mnt, MntFlags::MNT_DETACH).unwrap();
    assert!(keepalive, "the hierarchy has no keepalive cgroup: {opts}");
    opts
}

/// runc from PATH; panics, telling how to install it, when missing.
fn runc() -> PathBuf {
    let ok = Command::new("runc")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "runc is not installed: this test runs a runc container beside berthd; install it with \
         hack/install-deps.sh (Debian's runc package)"
    );
    PathBuf::from("runc")
}

/// Runs a busybox container with runc: its own cgroup namespace and a
/// `cgroup` mount at /sys/fs/cgroup, as Docker `--cgroupns=private` and
/// kind nodes have. Returns (success, output).
fn run_runc_container(dir: &Path) -> (bool, String) {
    let bundle = dir.join("bundle");
    let bin = bundle.join("rootfs/bin");
    std::fs::create_dir_all(&bin).unwrap();
    for d in ["proc", "sys", "dev", "tmp"] {
        std::fs::create_dir_all(bundle.join("rootfs").join(d)).unwrap();
    }
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("busybox-static is not installed (hack/install-deps.sh installs it)");
    std::fs::copy(busybox, bin.join("busybox")).unwrap();
    std::os::unix::fs::symlink("busybox", bin.join("sh")).unwrap();
    let id = format!("berth-e2e-fdm-{}", std::process::id());
    let spec = serde_json::json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": 0, "gid": 0},
            "args": ["sh", "-c", "cat /proc/self/cgroup && ls /sys/fs/cgroup"],
            "env": ["PATH=/bin"],
            "cwd": "/",
            "noNewPrivileges": true
        },
        "root": {"path": "rootfs", "readonly": true},
        "hostname": "fdm",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs",
             "options": ["nosuid", "noexec", "nodev", "ro"]},
            {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
             "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}
        ],
        "linux": {
            "cgroupsPath": format!("/{id}"),
            "namespaces": [
                {"type": "pid"}, {"type": "ipc"}, {"type": "uts"},
                {"type": "mount"}, {"type": "cgroup"}
            ]
        }
    });
    std::fs::write(bundle.join("config.json"), spec.to_string()).unwrap();
    let out = Command::new(runc())
        .arg("--root")
        .arg(dir.join("runc-state"))
        .args(["run", "--bundle"])
        .arg(&bundle)
        .arg(&id)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// What berthd leaves of its favordynmods step: no mount (a runc container
/// with a cgroup namespace starts beside it), and on a v1/hybrid host a
/// live named hierarchy with favordynmods on, held by its keepalive cgroup.
fn check_beside_runc(d: &Berthd) {
    assert!(
        d.log_text().contains("favordynmods") || !host_has_v1(),
        "berthd logged nothing of favordynmods:\n{}",
        d.log_text()
    );
    let scratch = tempfile::tempdir().unwrap();
    let (ok, out) = run_runc_container(scratch.path());
    assert!(
        ok,
        "the runc container with a cgroup namespace failed:\n{out}"
    );
    assert_eq!(
        our_mounts(),
        Vec::<PathBuf>::new(),
        "berthd left its hierarchy mounted"
    );
    if host_has_v1() {
        assert!(
            hierarchy_listed(),
            "no {} hierarchy after berthd's start",
            hierarchy()
        );
        let opts = hierarchy_options(scratch.path());
        assert!(
            opts.split(',').any(|o| o == "favordynmods"),
            "the hierarchy lost favordynmods: {opts}"
        );
    }
}

#[tokio::test]
async fn a_runc_container_with_a_cgroup_namespace_starts_beside_berthd() {
    let _serial = SERIAL.lock().await;
    let mut d = Berthd::start().await.unwrap();
    check_beside_runc(&d);
    // A restart finds the hierarchy again and still mounts nothing.
    d.restart().await.unwrap();
    check_beside_runc(&d);
    d.stop().await.unwrap();
    // It outlives berthd, as the monitors do.
    if host_has_v1() {
        assert!(hierarchy_listed());
    }
}

#[tokio::test]
async fn the_mount_an_older_berthd_left_is_taken_down_and_the_hierarchy_kept() {
    let _serial = SERIAL.lock().await;
    if !host_has_v1() {
        // An older berthd mounted nothing on a pure v2 host.
        return;
    }
    let config = BerthdConfig::new().unwrap();
    let legacy = config.state.join(berth_cgroup::FAVORDYNMODS_LEGACY_DIR);
    std::fs::create_dir_all(&legacy).unwrap();
    // What berthd did up to this change (without a child cgroup).
    nix::mount::mount(
        Some("berth"),
        &legacy,
        Some("cgroup"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some(format!("none,{},favordynmods", hierarchy()).as_str()),
    )
    .unwrap();
    let (ok, out) = run_runc_container(tempfile::tempdir().unwrap().path());
    let start = Berthd::start_with(config).await;
    // Never leave the mount behind, whatever failed.
    let _ = nix::mount::umount2(&legacy, MntFlags::MNT_DETACH);
    assert!(
        !ok && out.contains("invalid argument"),
        "with the old mount in place, runc should fail as it did on nodes:\n{out}"
    );
    let d = start.unwrap();
    assert!(!legacy.exists(), "{} is still there", legacy.display());
    assert!(
        d.log_text()
            .contains("unmounted the favordynmods hierarchy an older berthd left"),
        "{}",
        d.log_text()
    );
    check_beside_runc(&d);
}
