use std::os::fd::AsFd;

use nix::fcntl::{OFlag, openat};
use nix::sys::stat::{Mode, mkdirat};

use super::*;

/// `depth` nested dirs named `d` under `root`, made through dir fds (the
/// path is far beyond PATH_MAX), with a file at a few levels.
fn deep_tree(root: &Path, depth: usize) {
    std::fs::create_dir(root).unwrap();
    let mut cur: OwnedFd = std::fs::File::open(root).unwrap().into();
    for i in 0..depth {
        mkdirat(cur.as_fd(), c"d", Mode::from_bits_truncate(0o755)).unwrap();
        if i % 10_000 == 0 {
            let f = openat(
                cur.as_fd(),
                c"f",
                OFlag::O_CREAT | OFlag::O_WRONLY | OFlag::O_CLOEXEC,
                Mode::from_bits_truncate(0o644),
            )
            .unwrap();
            drop(f);
        }
        cur = openat(cur.as_fd(), c"d", DIR_FLAGS, Mode::empty()).unwrap();
    }
}

/// The tests of this module one at a time: one counts the process's fds
/// and lowers its fd limit, which the others' fds would upset.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// A tmpfs on a temp dir (root: mount), so 200,000 directories cost
/// memory, not minutes of disk journaling; unmounted on drop.
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    fn new() -> Tmpfs {
        let d = tempfile::tempdir().unwrap();
        nix::mount::mount(
            Some("tmpfs"),
            d.path(),
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            Some("size=256m"),
        )
        .unwrap();
        Tmpfs(d)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(self.0.path(), nix::mount::MntFlags::MNT_DETACH);
    }
}

/// 200,000 levels with the soft fd limit at 64: std's remove_dir_all holds
/// fds per level (it fails with EMFILE under a 4096 limit here);
/// remove_tree needs a handful whatever the depth.
#[test]
fn a_very_deep_tree_is_removed() {
    let _serial = serial();
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let tmp = Tmpfs::new();
    let root = tmp.0.path().join("deep");
    deep_tree(&root, 200_000);
    let before = open_fds();
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    setrlimit(Resource::RLIMIT_NOFILE, 64, hard).unwrap();
    let r = remove_tree(&root);
    setrlimit(Resource::RLIMIT_NOFILE, soft, hard).unwrap();
    r.unwrap();
    assert!(!root.exists());
    assert_eq!(open_fds(), before, "fds leaked");
}

/// Symlinks are removed, never followed: a link to a dir outside the tree
/// leaves that dir and its files alone.
#[test]
fn symlinks_are_not_followed() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let outside = tmp.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("keep"), b"x").unwrap();
    let root = tmp.path().join("tree");
    std::fs::create_dir_all(root.join("a/b")).unwrap();
    std::os::unix::fs::symlink(&outside, root.join("a/link")).unwrap();
    std::os::unix::fs::symlink(&outside, root.join("a/b/link")).unwrap();
    remove_tree(&root).unwrap();
    assert!(!root.exists());
    assert!(outside.join("keep").exists());

    // The path itself a symlink: the link goes, the target stays.
    let link = tmp.path().join("top-link");
    std::os::unix::fs::symlink(&outside, &link).unwrap();
    remove_tree(&link).unwrap();
    assert!(!link.exists() && outside.join("keep").exists());
}

/// Wide dirs, names the remover uses itself, special files, a read-only
/// dir: all gone; a missing path is fine.
#[test]
fn wide_trees_odd_names_and_special_files() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("tree");
    for i in 0..500 {
        std::fs::create_dir_all(root.join(format!("w/{i}/x"))).unwrap();
        std::fs::write(root.join(format!("w/{i}/x/f")), b"data").unwrap();
    }
    std::fs::create_dir_all(root.join(".berth-rmtree.1.0/0/1")).unwrap();
    std::fs::create_dir_all(root.join(format!(".berth-rmtree.{}.0/0", std::process::id())))
        .unwrap();
    nix::unistd::mkfifo(&root.join("fifo"), Mode::from_bits_truncate(0o600)).unwrap();
    std::fs::create_dir_all(root.join("ro/inner")).unwrap();
    std::fs::write(root.join("ro/inner/f"), b"x").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(root.join("ro"), std::fs::Permissions::from_mode(0o555)).unwrap();
    remove_tree(&root).unwrap();
    assert!(!root.exists());
    remove_tree(&root).unwrap();
    let file = tmp.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    remove_tree(&file).unwrap();
    assert!(!file.exists());
}
