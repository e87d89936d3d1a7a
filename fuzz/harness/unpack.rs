//! Fuzz check of the layer unpacker: any bytes as a layer blob (plain tar,
//! gzip or zstd, sniffed as the unpacker does) into a fresh directory.
//!
//! Shared by the `unpack` fuzz target and the stable corpus replay test
//! (crates/image/tests/fuzz_corpus.rs), so both check the same things:
//! - no panic, whatever the blob;
//! - nothing is created, changed or linked outside the layer directory: the
//!   sandbox around it holds only the layer dir and an untouched canary file
//!   (same content, mode, and link count 1: no hardlink to it from the layer);
//! - the limits hold: no entry larger than `max_entry_size`, real disk use
//!   within `max_total_size` (holes of sparse entries cost nothing), and on
//!   success the stats agree with the limits and with what is on disk.

use std::fs;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use berth_image::digest::Digest;
use berth_image::unpack::{Compression, UnpackLimits, unpack_layer};

/// Small limits so that a fuzz input can reach each of them.
pub fn limits() -> UnpackLimits {
    UnpackLimits {
        max_entry_size: 1 << 20,
        max_total_size: 4 << 20,
        max_entries: 256,
        min_free_bytes: 0,
    }
}

const CANARY: &[u8] = b"outside the layer: must never change\n";

/// Where sandboxes go: `$BERTH_FUZZ_TMPDIR` (hack/fuzz.sh uses a tmpfs), else
/// the system temp dir.
fn base_dir() -> PathBuf {
    std::env::var_os("BERTH_FUZZ_TMPDIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
}

/// The tar stream's sha256 as the unpacker will compute it, so that valid
/// inputs reach the success path. Decompression stops a little past the
/// unpacker's own stream limit (past it the digest no longer matters).
fn diff_id_of(data: &[u8], l: &UnpackLimits) -> Digest {
    let cap = l
        .max_total_size
        .saturating_add(l.max_entries.saturating_mul(1024))
        .saturating_add(1);
    let mut out = Vec::new();
    let read = match Compression::sniff(data) {
        Some(Compression::Gzip) => flate2::read::MultiGzDecoder::new(data)
            .take(cap)
            .read_to_end(&mut out)
            .is_ok(),
        Some(Compression::Zstd) => match zstd::stream::read::Decoder::new(data) {
            Ok(d) => d.take(cap).read_to_end(&mut out).is_ok(),
            Err(_) => false,
        },
        _ => return Digest::sha256_of(data),
    };
    if read {
        Digest::sha256_of(&out)
    } else {
        Digest::sha256_of(b"")
    }
}

pub fn run(data: &[u8]) {
    let limits = limits();
    let sandbox = tempfile::Builder::new()
        .prefix("berth-fuzz-unpack-")
        .tempdir_in(base_dir())
        .expect("sandbox dir");
    let root = sandbox.path().join("layer");
    fs::create_dir(&root).expect("layer dir");
    let canary = sandbox.path().join("canary");
    fs::write(&canary, CANARY).expect("canary");
    let canary_before = fs::symlink_metadata(&canary).expect("canary stat");

    let digest = Digest::sha256_of(data);
    let diff_id = diff_id_of(data, &limits);
    let result = unpack_layer(data, Compression::None, &digest, &diff_id, &root, &limits);

    // Nothing outside the layer dir.
    let mut names: Vec<_> = fs::read_dir(sandbox.path())
        .expect("read sandbox")
        .map(|e| e.expect("sandbox entry").file_name())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["canary", "layer"],
        "entries appeared beside the layer dir"
    );
    let canary_after = fs::symlink_metadata(&canary).expect("canary stat");
    assert!(canary_after.is_file(), "canary replaced");
    assert_eq!(canary_after.ino(), canary_before.ino(), "canary replaced");
    assert_eq!(
        canary_after.nlink(),
        1,
        "the layer hardlinked a file outside it"
    );
    assert_eq!(
        canary_after.mode(),
        canary_before.mode(),
        "canary mode changed"
    );
    assert_eq!(
        fs::read(&canary).expect("canary read"),
        CANARY,
        "canary changed"
    );
    let root_meta = fs::symlink_metadata(&root).expect("layer dir stat");
    assert!(root_meta.is_dir(), "the layer dir was replaced");

    // Limits, checked on what is on disk.
    let usage = walk(&root);
    assert!(
        usage.largest_file <= limits.max_entry_size,
        "a file of {} bytes exceeds max_entry_size",
        usage.largest_file
    );
    // Each file may round up to a few blocks of its own.
    let slack = usage.files.saturating_mul(8192);
    assert!(
        usage.file_disk_bytes <= limits.max_total_size + slack,
        "{} bytes on disk in {} files exceed max_total_size",
        usage.file_disk_bytes,
        usage.files
    );
    if let Ok(stats) = result {
        assert!(
            stats.entries <= limits.max_entries,
            "entries over the limit"
        );
        assert!(
            stats.file_bytes <= limits.max_total_size,
            "file bytes over the limit"
        );
        assert_eq!(stats.compressed_digest, digest);
        assert_eq!(stats.diff_id, diff_id);
        assert_eq!(stats.compressed_bytes, data.len() as u64);
    }
    // A hostile layer may leave directories we cannot enter or delete as is.
    make_removable(&root);
}

#[derive(Default)]
struct Usage {
    files: u64,
    largest_file: u64,
    file_disk_bytes: u64,
}

/// Walks the layer without following symlinks (iteratively: depth is the
/// layer's choice).
fn walk(root: &Path) -> Usage {
    let mut u = Usage::default();
    let mut seen = std::collections::HashSet::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(rd) = fs::read_dir(&dir) else { continue };
        for e in rd.flatten() {
            let Ok(m) = fs::symlink_metadata(e.path()) else {
                continue;
            };
            if m.is_dir() {
                stack.push(e.path());
            } else if m.is_file() && seen.insert((m.dev(), m.ino())) {
                // Hardlinks of a layer share one inode: count it once.
                u.files += 1;
                u.largest_file = u.largest_file.max(m.len());
                u.file_disk_bytes += m.blocks() * 512;
            }
        }
    }
    u
}

/// Gives every directory owner rwx so the temp dir can be removed (as root
/// this is needed only for immutable attributes, which layers cannot set, but
/// the replay test may run unprivileged).
fn make_removable(root: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let _ = fs::set_permissions(&dir, fs::Permissions::from_mode(0o700));
        let Ok(rd) = fs::read_dir(&dir) else { continue };
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(e.path());
            }
        }
    }
}
