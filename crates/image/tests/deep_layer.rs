//! A layer as deep as an image can make it (PATH_MAX: 2047 levels) is
//! removed under a small fd limit, and so the store still opens: opening
//! empties tmp/, where layers go to be deleted. Its own test binary: it
//! lowers the process's fd limit.

use std::sync::Arc;

use berth_image::{ImageStore, RegistriesConfig};
use nix::fcntl::{OFlag, openat};
use nix::sys::stat::{Mode, mkdirat};

#[test]
fn a_layer_2047_levels_deep_is_removed_with_256_fds() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let db = Arc::new(redb::Database::create(dir.path().join("meta.redb")).unwrap());
    drop(ImageStore::open(&root, db.clone(), RegistriesConfig::default()).unwrap());

    // What a crash leaves in tmp/: a layer being deleted, "d/d/.../d/f".
    let trash = root.join("images/tmp/trash-layer");
    std::fs::create_dir(&trash).unwrap();
    let mut fd = std::fs::File::open(&trash).unwrap().into();
    for _ in 0..2047 {
        mkdirat(&fd, "d", Mode::from_bits_truncate(0o755)).unwrap();
        fd = openat(
            &fd,
            "d",
            OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .unwrap();
    }
    drop(fd);

    // A node whose berthd runs with a small soft limit.
    nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, 256, 4096).unwrap();
    let store = ImageStore::open(&root, db, RegistriesConfig::default());
    assert!(store.is_ok(), "{:?}", store.err());
    assert!(!trash.exists());
}
