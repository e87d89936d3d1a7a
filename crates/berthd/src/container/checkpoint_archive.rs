//! The checkpoint archive CheckpointContainer writes, in the layout CRI-O
//! and containerd write for kubelet checkpoints (what checkpointctl reads):
//!
//! ```text
//! checkpoint/        CRIU's images (inventory.img, pstree.img, pages-*.img, ...)
//! config.dump        the container's metadata (id, name, image, times) as JSON
//! spec.dump          its OCI runtime spec (the bundle's config.json)
//! rootfs-diff.tar    its writable layer's changes (the overlay upper dir)
//! deleted.files      JSON list of the image's files it deleted (only if any)
//! dump.log           CRIU's log of the dump
//! ```
//!
//! Blocking code (run on tokio's blocking pool). The archive is written to
//! a temporary file beside `location`, created with `O_EXCL | O_NOFOLLOW`
//! relative to the parent dir's fd, then renamed over `location`: nothing
//! is written through a symlink at `location`, and a failure leaves no
//! partial archive.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};

use anyhow::Context;
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

use super::checkpoint::{DUMP_LOG, IMAGES_DIR};
use super::{ContainerError, ContainerRecord, internal};

pub const CONFIG_DUMP: &str = "config.dump";
pub const SPEC_DUMP: &str = "spec.dump";
pub const ROOTFS_DIFF: &str = "rootfs-diff.tar";
pub const DELETED_FILES: &str = "deleted.files";

/// What [`write`] needs.
pub struct ArchiveInput {
    /// The dump's work dir: `checkpoint/` and `dump.log` in it; the other
    /// files are written there too before they go into the archive.
    pub work_dir: PathBuf,
    /// The container's overlay upper dir.
    pub upper_dir: PathBuf,
    /// The bundle's config.json, as it is.
    pub spec_json: Vec<u8>,
    /// [`config_dump`]'s JSON.
    pub config_json: Vec<u8>,
    /// Where the archive goes (absolute; validated by the caller).
    pub location: PathBuf,
}

/// `config.dump`: checkpointctl's `ContainerConfig` fields (as CRI-O
/// writes them), then Berth's own record of the container under `berth`,
/// what a restore would need to recreate it.
pub fn config_dump(rec: &ContainerRecord) -> Result<Vec<u8>, ContainerError> {
    let now = crate::ids::now_ns();
    let v = serde_json::json!({
        "id": rec.id,
        "name": rec.name,
        "rootfsImage": rec.shown_image(),
        "rootfsImageRef": rec.image_id,
        "rootfsImageName": rec.image,
        "runtime": "berth",
        "createdTime": rfc3339(rec.created_at),
        "checkpointedTime": rfc3339(now),
        "restoredTime": rfc3339(0),
        "restored": false,
        "berth": {
            "version": env!("CARGO_PKG_VERSION"),
            "podId": rec.pod_id,
            "attempt": rec.attempt,
            "imageRef": rec.image_ref,
            "labels": rec.labels,
            "annotations": rec.annotations,
            "logPath": rec.log_path,
            "mounts": rec.mounts,
            "tty": rec.tty,
            "stdin": rec.stdin,
        },
    });
    serde_json::to_vec_pretty(&v).map_err(|e| internal(anyhow::anyhow!("config.dump: {e}")))
}

/// Writes the archive; returns its size in bytes.
pub fn write(input: &ArchiveInput) -> anyhow::Result<u64> {
    let work = &input.work_dir;
    std::fs::write(work.join(SPEC_DUMP), &input.spec_json).context("cannot write spec.dump")?;
    std::fs::write(work.join(CONFIG_DUMP), &input.config_json)
        .context("cannot write config.dump")?;
    let spec: serde_json::Value =
        serde_json::from_slice(&input.spec_json).context("config.json is not JSON")?;
    let deleted = rootfs_diff(
        &input.upper_dir,
        &work.join(ROOTFS_DIFF),
        &mount_points(&spec),
    )?;
    if !deleted.is_empty() {
        std::fs::write(work.join(DELETED_FILES), serde_json::to_vec(&deleted)?)
            .context("cannot write deleted.files")?;
    }
    let mut names = vec![CONFIG_DUMP, SPEC_DUMP, ROOTFS_DIFF];
    if !deleted.is_empty() {
        names.push(DELETED_FILES);
    }
    names.push(DUMP_LOG);
    write_at(&input.location, |out| {
        let mut tar = tar::Builder::new(out);
        tar.follow_symlinks(false);
        tar.mode(tar::HeaderMode::Complete);
        tar.append_dir_all(IMAGES_DIR, work.join(IMAGES_DIR))
            .context("cannot archive the CRIU images")?;
        for name in &names {
            tar.append_path_with_name(work.join(name), name)
                .with_context(|| format!("cannot archive {name}"))?;
        }
        Ok(tar.into_inner()?)
    })
}

/// Creates the file at `location` with what `fill` writes, atomically: a
/// temporary file in the same dir (opened relative to the dir's fd, never
/// through a symlink), synced, then renamed over `location`.
fn write_at(
    location: &Path,
    fill: impl FnOnce(BufWriter<File>) -> anyhow::Result<BufWriter<File>>,
) -> anyhow::Result<u64> {
    let (Some(parent), Some(name)) = (location.parent(), location.file_name()) else {
        anyhow::bail!("{} names no file", location.display());
    };
    let dir: OwnedFd = nix::fcntl::open(
        parent,
        OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .with_context(|| format!("cannot open the dir {}", parent.display()))?;
    let tmp = PathBuf::from(format!(
        ".{}.berth-tmp.{}",
        name.to_string_lossy(),
        crate::ids::now_ns()
    ));
    let fd = nix::fcntl::openat(
        &dir,
        &tmp,
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        // A checkpoint holds the process's memory: its owner's only.
        Mode::from_bits_truncate(0o600),
    )
    .with_context(|| format!("cannot create a file in {}", parent.display()))?;
    let result = (|| -> anyhow::Result<u64> {
        let out = fill(BufWriter::new(File::from(fd)))?;
        let file = out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        let size = file.metadata()?.len();
        nix::fcntl::renameat(&dir, &tmp, &dir, name)
            .with_context(|| format!("cannot rename the archive to {}", location.display()))?;
        let _ = nix::unistd::fsync(&dir);
        Ok(size)
    })();
    if result.is_err() {
        let _ = nix::unistd::unlinkat(&dir, &tmp, nix::unistd::UnlinkatFlags::NoRemoveDir);
    }
    result
}

/// The spec's mount destinations, relative to the rootfs: what is under
/// them in the upper dir are mount points the runtime made, not the
/// container's changes.
fn mount_points(spec: &serde_json::Value) -> Vec<PathBuf> {
    spec.get("mounts")
        .and_then(|v| v.as_array())
        .into_iter()
        .flatten()
        .filter_map(|m| m.get("destination")?.as_str())
        .map(|d| {
            Path::new(d)
                .components()
                .filter(|c| matches!(c, Component::Normal(_)))
                .collect::<PathBuf>()
        })
        .filter(|p| !p.as_os_str().is_empty())
        .collect()
}

/// Writes the upper dir's content to `out` as a tar (paths relative to the
/// rootfs, symlinks as symlinks); overlay whiteouts (0:0 character devices)
/// are not archived but returned, as the deleted files' paths.
fn rootfs_diff(upper: &Path, out: &Path, skip: &[PathBuf]) -> anyhow::Result<Vec<String>> {
    let file = File::create(out).with_context(|| format!("cannot create {}", out.display()))?;
    let mut tar = tar::Builder::new(BufWriter::new(file));
    tar.follow_symlinks(false);
    tar.mode(tar::HeaderMode::Complete);
    let mut deleted = Vec::new();
    // A container created before its upper dir existed has no changes.
    if upper.is_dir() {
        walk(upper, Path::new(""), skip, &mut tar, &mut deleted)?;
    }
    let mut w = tar.into_inner()?;
    w.flush()?;
    Ok(deleted)
}

fn walk(
    upper: &Path,
    rel: &Path,
    skip: &[PathBuf],
    tar: &mut tar::Builder<BufWriter<File>>,
    deleted: &mut Vec<String>,
) -> anyhow::Result<()> {
    let dir = upper.join(rel);
    let mut entries: Vec<_> = match std::fs::read_dir(&dir) {
        Ok(it) => it.filter_map(|e| e.ok()).map(|e| e.file_name()).collect(),
        // The container runs on: what it removed meanwhile is not a change.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", dir.display())),
    };
    entries.sort();
    for name in entries {
        let rel = rel.join(&name);
        if skip.iter().any(|s| rel.starts_with(s)) {
            continue;
        }
        let full = upper.join(&rel);
        let meta = match std::fs::symlink_metadata(&full) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("cannot stat {}", full.display())),
        };
        if meta.file_type().is_char_device() && meta.rdev() == 0 {
            deleted.push(rel.display().to_string());
            continue;
        }
        if meta.file_type().is_socket() {
            // tar has no sockets; a socket file is recreated by its server.
            continue;
        }
        match tar.append_path_with_name(&full, &rel) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("cannot archive {}", full.display())),
        }
        if meta.is_dir() {
            walk(upper, &rel, skip, tar, deleted)?;
        }
    }
    Ok(())
}

/// `ns` nanoseconds since the epoch as RFC 3339 UTC (Go's `time.Time` JSON,
/// which checkpointctl parses); 0 is Go's zero time.
fn rfc3339(ns: i64) -> String {
    if ns <= 0 {
        return "0001-01-01T00:00:00Z".to_string();
    }
    let secs = ns / 1_000_000_000;
    let nanos = ns % 1_000_000_000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{nanos:09}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_formats_utc() {
        assert_eq!(rfc3339(0), "0001-01-01T00:00:00Z");
        assert_eq!(
            rfc3339(1_700_000_000_123_456_789),
            "2023-11-14T22:13:20.123456789Z"
        );
        assert_eq!(
            rfc3339(951_782_400_000_000_000),
            "2000-02-29T00:00:00.000000000Z"
        );
    }

    #[test]
    fn rootfs_diff_lists_whiteouts_and_skips_mount_points() {
        let t = tempfile::tempdir().unwrap();
        let upper = t.path().join("upper");
        std::fs::create_dir_all(upper.join("etc")).unwrap();
        std::fs::create_dir_all(upper.join("dev/pts")).unwrap();
        std::fs::write(upper.join("etc/hosts"), "").unwrap();
        std::fs::write(upper.join("etc/new"), "x").unwrap();
        std::os::unix::fs::symlink("/etc/new", upper.join("link")).unwrap();
        nix::sys::stat::mknod(
            &upper.join("etc/gone"),
            nix::sys::stat::SFlag::S_IFCHR,
            Mode::from_bits_truncate(0o000),
            0,
        )
        .unwrap();
        let spec = serde_json::json!({"mounts": [
            {"destination": "/etc/hosts"}, {"destination": "/dev"}, {"destination": "/"},
        ]});
        let out = t.path().join("diff.tar");
        let deleted = rootfs_diff(&upper, &out, &mount_points(&spec)).unwrap();
        assert_eq!(deleted, ["etc/gone"]);
        let mut ar = tar::Archive::new(File::open(&out).unwrap());
        let names: Vec<String> = ar
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        assert_eq!(names, ["etc", "etc/new", "link"]);
    }

    #[test]
    fn write_at_replaces_a_symlink_instead_of_following_it() {
        let t = tempfile::tempdir().unwrap();
        let target = t.path().join("target");
        std::fs::write(&target, "keep").unwrap();
        let location = t.path().join("out.tar");
        std::os::unix::fs::symlink(&target, &location).unwrap();
        let n = write_at(&location, |mut w| {
            w.write_all(b"archive")?;
            Ok(w)
        })
        .unwrap();
        assert_eq!(n, 7);
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");
        assert!(!std::fs::symlink_metadata(&location).unwrap().is_symlink());
        assert_eq!(std::fs::read_to_string(&location).unwrap(), "archive");
        // A failure leaves nothing behind.
        let err = write_at(&t.path().join("other"), |_| anyhow::bail!("boom")).unwrap_err();
        assert_eq!(err.to_string(), "boom");
        let left: Vec<_> = std::fs::read_dir(t.path()).unwrap().collect();
        assert_eq!(left.len(), 2);
    }
}
