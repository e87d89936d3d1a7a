//! Evil-tar tests. Each tar is built in memory byte by byte (the `tar` crate's Builder
//! refuses `..` and the like), unpacked into `<tmp>/dest`, and every test checks that
//! `<tmp>` holds nothing but `dest` and the empty sentinel dir `<tmp>/outside`.
//! Tests run as root (chown, mknod, trusted xattrs), as CI does.

use std::ffi::CString;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use tar::EntryType;

use super::*;

// ---------- building tars ----------

struct TarW {
    buf: Vec<u8>,
    uid: u64,
    gid: u64,
    mtime: u64,
    /// Raw typeflag byte for the next entry (for '\0' and other oddities).
    typeflag: Option<u8>,
}

fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    // "LEN key=value\n", LEN counting itself.
    let rest = key.len() + value.len() + 3;
    let mut len = rest + 1;
    while len.to_string().len() + rest != len {
        len += 1;
    }
    let mut r = format!("{len} {key}=").into_bytes();
    r.extend_from_slice(value);
    r.push(b'\n');
    r
}

impl TarW {
    fn new() -> TarW {
        TarW {
            buf: Vec::new(),
            uid: 0,
            gid: 0,
            mtime: 1_600_000_000,
            typeflag: None,
        }
    }

    fn pad(&mut self) {
        let rem = self.buf.len() % 512;
        if rem != 0 {
            self.buf.resize(self.buf.len() + 512 - rem, 0);
        }
    }

    /// A raw entry: `declared` is the size written in the header, `data` what follows.
    #[allow(clippy::too_many_arguments)]
    fn raw(
        &mut self,
        path: &[u8],
        kind: EntryType,
        mode: u32,
        link: &[u8],
        declared: u64,
        data: &[u8],
        dev: (u32, u32),
    ) -> &mut Self {
        let mut pax = Vec::new();
        if path.len() > 100 {
            pax.push(("path", path.to_vec()));
        }
        if link.len() > 100 {
            pax.push(("linkpath", link.to_vec()));
        }
        if !pax.is_empty() {
            let recs: Vec<(&str, &[u8])> = pax.iter().map(|(k, v)| (*k, v.as_slice())).collect();
            self.pax(&recs);
        }
        let mut h = tar::Header::new_ustar();
        {
            let u = h.as_ustar_mut().unwrap();
            let n = path.len().min(100);
            u.name[..n].copy_from_slice(&path[..n]);
            let l = link.len().min(100);
            u.linkname[..l].copy_from_slice(&link[..l]);
        }
        h.set_size(declared);
        h.set_mode(mode);
        h.set_uid(self.uid);
        h.set_gid(self.gid);
        h.set_mtime(self.mtime);
        h.set_entry_type(kind);
        h.set_device_major(dev.0).unwrap();
        h.set_device_minor(dev.1).unwrap();
        if let Some(t) = self.typeflag.take() {
            h.as_mut_bytes()[156] = t;
        }
        h.set_cksum();
        self.buf.extend_from_slice(h.as_bytes());
        self.buf.extend_from_slice(data);
        self.pad();
        self
    }

    fn pax(&mut self, records: &[(&str, &[u8])]) -> &mut Self {
        let mut data = Vec::new();
        for (k, v) in records {
            data.extend(pax_record(k, v));
        }
        let mut h = tar::Header::new_ustar();
        h.as_ustar_mut().unwrap().name[..9].copy_from_slice(b"PaxHeader");
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(EntryType::XHeader);
        h.set_cksum();
        self.buf.extend_from_slice(h.as_bytes());
        self.buf.extend_from_slice(&data);
        self.pad();
        self
    }

    fn file(&mut self, path: &str, data: &[u8], mode: u32) -> &mut Self {
        self.raw(
            path.as_bytes(),
            EntryType::Regular,
            mode,
            b"",
            data.len() as u64,
            data,
            (0, 0),
        )
    }

    fn dir(&mut self, path: &str, mode: u32) -> &mut Self {
        self.raw(
            path.as_bytes(),
            EntryType::Directory,
            mode,
            b"",
            0,
            b"",
            (0, 0),
        )
    }

    fn symlink(&mut self, path: &str, target: &str) -> &mut Self {
        self.raw(
            path.as_bytes(),
            EntryType::Symlink,
            0o777,
            target.as_bytes(),
            0,
            b"",
            (0, 0),
        )
    }

    fn hardlink(&mut self, path: &str, target: &str) -> &mut Self {
        self.raw(
            path.as_bytes(),
            EntryType::Link,
            0o644,
            target.as_bytes(),
            0,
            b"",
            (0, 0),
        )
    }

    fn node(&mut self, path: &str, kind: EntryType, mode: u32, dev: (u32, u32)) -> &mut Self {
        self.raw(path.as_bytes(), kind, mode, b"", 0, b"", dev)
    }

    fn owner(&mut self, uid: u64, gid: u64) -> &mut Self {
        self.uid = uid;
        self.gid = gid;
        self
    }

    fn mtime(&mut self, t: u64) -> &mut Self {
        self.mtime = t;
        self
    }

    fn finish(&mut self) -> Vec<u8> {
        let mut b = std::mem::take(&mut self.buf);
        b.extend_from_slice(&[0; 1024]);
        b
    }
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::encode_all(data, 3).unwrap()
}

// ---------- running ----------

struct Sandbox {
    tmp: tempfile::TempDir,
    dest: PathBuf,
    outside: PathBuf,
}

impl Sandbox {
    fn new() -> Sandbox {
        let tmp = tempfile::tempdir().unwrap();
        let dest = tmp.path().join("dest");
        let outside = tmp.path().join("outside");
        std::fs::create_dir(&dest).unwrap();
        std::fs::create_dir(&outside).unwrap();
        Sandbox { tmp, dest, outside }
    }

    fn p(&self, rel: &str) -> PathBuf {
        self.dest.join(rel)
    }

    /// Nothing may appear next to dest, nor inside the sentinel dir.
    fn assert_contained(&self) {
        let mut names: Vec<_> = std::fs::read_dir(self.tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        assert_eq!(
            names,
            ["dest", "outside"],
            "something was created next to dest"
        );
        assert_eq!(
            std::fs::read_dir(&self.outside).unwrap().count(),
            0,
            "something was created in the sentinel dir outside dest"
        );
    }

    fn unpack_blob(
        &self,
        blob: &[u8],
        comp: Compression,
        digest: &Digest,
        diff_id: &Digest,
        limits: &UnpackLimits,
    ) -> Result<UnpackStats, UnpackError> {
        let r = unpack_layer(blob, comp, digest, diff_id, &self.dest, limits);
        self.assert_contained();
        r
    }

    fn unpack_as(&self, tar: &[u8], comp: Compression) -> Result<UnpackStats, UnpackError> {
        let blob = match comp {
            Compression::None => tar.to_vec(),
            Compression::Gzip => gzip(tar),
            Compression::Zstd => zstd(tar),
        };
        self.unpack_blob(
            &blob,
            comp,
            &Digest::sha256_of(&blob),
            &Digest::sha256_of(tar),
            &UnpackLimits::default(),
        )
    }

    fn unpack(&self, tar: &[u8]) -> Result<UnpackStats, UnpackError> {
        self.unpack_as(tar, Compression::None)
    }
}

fn lstat(p: &Path) -> std::fs::Metadata {
    std::fs::symlink_metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn exists(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok()
}

fn get_xattr(p: &Path, name: &str) -> Option<Vec<u8>> {
    let cp = CString::new(p.as_os_str().as_bytes()).unwrap();
    let cn = CString::new(name).unwrap();
    let mut buf = vec![0u8; 1024];
    // SAFETY: valid C strings and buffer.
    let n =
        unsafe { libc::lgetxattr(cp.as_ptr(), cn.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return None;
    }
    buf.truncate(n as usize);
    Some(buf)
}

#[track_caller]
fn assert_unsafe(r: Result<UnpackStats, UnpackError>, path: &str, reason_part: &str) {
    match r {
        Err(UnpackError::UnsafeEntry { path: p, reason }) => {
            assert_eq!(p, path);
            assert!(
                reason.contains(reason_part),
                "reason {reason:?} lacks {reason_part:?}"
            );
        }
        other => panic!("expected UnsafeEntry for {path}, got {other:?}"),
    }
}

// ---------- tests ----------

#[test]
fn media_types() {
    use Compression as C;
    for (mt, c) in [
        ("application/vnd.oci.image.layer.v1.tar", C::None),
        ("application/vnd.oci.image.layer.v1.tar+gzip", C::Gzip),
        ("application/vnd.oci.image.layer.v1.tar+zstd", C::Zstd),
        (
            "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
            C::Gzip,
        ),
        ("application/vnd.docker.image.rootfs.diff.tar.gzip", C::Gzip),
        (
            "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
            C::Gzip,
        ),
        ("application/vnd.docker.image.rootfs.diff.tar", C::None),
        ("application/vnd.docker.image.rootfs.diff.tar.zstd", C::Zstd),
        (
            "Application/VND.OCI.image.layer.v1.tar+gzip; foo=bar",
            C::Gzip,
        ),
    ] {
        assert_eq!(Compression::from_media_type(mt).unwrap(), c, "{mt}");
    }
    for bad in [
        "application/vnd.oci.image.layer.v1.tar+gzip+encrypted",
        "application/vnd.oci.image.config.v1+json",
        "",
    ] {
        assert!(matches!(
            Compression::from_media_type(bad),
            Err(UnpackError::UnsupportedMediaType { .. })
        ));
    }
}

#[test]
fn basic_tree_with_metadata_all_compressions() {
    for comp in [Compression::None, Compression::Gzip, Compression::Zstd] {
        let sb = Sandbox::new();
        let mut w = TarW::new();
        w.owner(1000, 2000).mtime(1_500_000_000);
        w.dir("usr/", 0o755)
            .dir("usr/bin/", 0o750)
            .file("usr/bin/tool", b"#!/bin/sh\necho hi\n", 0o755)
            .file("usr/empty", b"", 0o600)
            .symlink("usr/link", "/etc/shadow");
        let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        w.file("big.bin", &big, 0o644);
        let tar = w.finish();
        let stats = sb.unpack_as(&tar, comp).unwrap();
        assert_eq!(stats.entries, 6);
        assert_eq!(stats.unpacked_bytes, tar.len() as u64);
        assert_eq!(stats.file_bytes, big.len() as u64 + 18);
        assert_eq!(stats.diff_id, Digest::sha256_of(&tar));

        assert_eq!(
            std::fs::read(sb.p("usr/bin/tool")).unwrap(),
            b"#!/bin/sh\necho hi\n"
        );
        assert_eq!(std::fs::read(sb.p("big.bin")).unwrap(), big);
        let m = lstat(&sb.p("usr/bin/tool"));
        assert_eq!((m.mode() & 0o7777, m.uid(), m.gid()), (0o755, 1000, 2000));
        assert_eq!(m.mtime(), 1_500_000_000);
        let d = lstat(&sb.p("usr/bin"));
        assert!(d.is_dir());
        assert_eq!((d.mode() & 0o7777, d.uid(), d.gid()), (0o750, 1000, 2000));
        // Directory mtimes survive the creation of their children.
        assert_eq!(d.mtime(), 1_500_000_000);
        assert_eq!(lstat(&sb.p("usr")).mtime(), 1_500_000_000);
        let l = lstat(&sb.p("usr/link"));
        assert!(l.file_type().is_symlink());
        assert_eq!(
            std::fs::read_link(sb.p("usr/link")).unwrap(),
            Path::new("/etc/shadow")
        );
        assert_eq!((l.uid(), l.gid(), l.mtime()), (1000, 2000, 1_500_000_000));
    }
}

#[test]
fn dotdot_traversal_is_rejected() {
    for evil in [
        "../evil",
        "a/../../evil",
        "./../outside/evil",
        "a/b/../../../evil",
    ] {
        let sb = Sandbox::new();
        let tar = TarW::new()
            .file("ok", b"1", 0o644)
            .file(evil, b"pwned", 0o644)
            .finish();
        assert_unsafe(sb.unpack(&tar), evil, "climbs above the layer root");
    }
    // `..` that stays inside is just a path.
    let sb = Sandbox::new();
    let tar = TarW::new().file("a/../b", b"x", 0o644).finish();
    sb.unpack(&tar).unwrap();
    assert_eq!(std::fs::read(sb.p("b")).unwrap(), b"x");
    assert!(!exists(&sb.p("a"))); // cleaned lexically: `a` is never created
}

#[test]
fn absolute_paths_land_inside_dest() {
    let sb = Sandbox::new();
    let outside_file = sb.outside.join("evil");
    let tar = TarW::new()
        .file(outside_file.to_str().unwrap(), b"pwned", 0o644)
        .file("/etc/passwd", b"root::0:0::/:/bin/sh\n", 0o644)
        .finish();
    sb.unpack(&tar).unwrap();
    let rel = outside_file.strip_prefix("/").unwrap();
    assert_eq!(std::fs::read(sb.dest.join(rel)).unwrap(), b"pwned");
    assert_eq!(
        std::fs::read(sb.p("etc/passwd")).unwrap(),
        b"root::0:0::/:/bin/sh\n"
    );
}

#[test]
fn symlink_then_write_through_is_rejected() {
    let sb = Sandbox::new();
    let target = sb.outside.to_str().unwrap().to_string();
    let tar = TarW::new()
        .symlink("a", &target)
        .file("a/x", b"pwned", 0o644)
        .finish();
    assert_unsafe(sb.unpack(&tar), "a/x", "symlink");
    // The symlink itself is fine: its target is only resolved inside the container.
    assert_eq!(std::fs::read_link(sb.p("a")).unwrap(), Path::new(&target));

    // Same through every other entry type.
    for (kind, link) in [
        (EntryType::Directory, ""),
        (EntryType::Symlink, "/x"),
        (EntryType::Fifo, ""),
        (EntryType::Char, ""),
    ] {
        let sb = Sandbox::new();
        let mut w = TarW::new();
        w.symlink("a", sb.outside.to_str().unwrap());
        w.raw(b"a/x", kind, 0o644, link.as_bytes(), 0, b"", (1, 3));
        assert_unsafe(sb.unpack(&w.finish()), "a/x", "symlink");
    }
}

#[test]
fn symlink_to_dotdot_is_not_followed() {
    let sb = Sandbox::new();
    let tar = TarW::new()
        .symlink("up", "..")
        .file("up/outside/evil", b"pwned", 0o644)
        .finish();
    assert_unsafe(sb.unpack(&tar), "up/outside/evil", "symlink");

    let sb = Sandbox::new();
    let tar = TarW::new()
        .dir("d/", 0o755)
        .symlink("d/up", "../../..")
        .file("d/up/evil", b"pwned", 0o644)
        .finish();
    assert_unsafe(sb.unpack(&tar), "d/up/evil", "symlink");
}

#[test]
fn hardlink_to_host_file_is_rejected() {
    let before = std::fs::metadata("/etc/passwd").unwrap().nlink();
    let sb = Sandbox::new();
    let tar = TarW::new().hardlink("passwd", "/etc/passwd").finish();
    assert_unsafe(
        sb.unpack(&tar),
        "passwd",
        "not an earlier entry of this layer",
    );
    assert_eq!(std::fs::metadata("/etc/passwd").unwrap().nlink(), before);
    assert!(!exists(&sb.p("passwd")));
}

#[test]
fn hardlink_with_dotdot_is_rejected() {
    let sb = Sandbox::new();
    std::fs::write(sb.tmp.path().join("outside/x"), b"secret").unwrap();
    let tar = TarW::new().hardlink("l", "../outside/x").finish();
    let r = unpack_layer(
        &tar[..],
        Compression::None,
        &Digest::sha256_of(&tar),
        &Digest::sha256_of(&tar),
        &sb.dest,
        &UnpackLimits::default(),
    );
    assert_unsafe(r, "l", "climbs above the layer root");
    assert_eq!(lstat(&sb.tmp.path().join("outside/x")).nlink(), 1);
    std::fs::remove_file(sb.tmp.path().join("outside/x")).unwrap();
    sb.assert_contained();

    let sb = Sandbox::new();
    let tar = TarW::new().hardlink("l", "../../x").finish();
    assert_unsafe(sb.unpack(&tar), "l", "climbs above the layer root");
}

#[test]
fn hardlink_through_symlink_is_rejected() {
    let sb = Sandbox::new();
    std::fs::write(sb.outside.join("secret"), b"s").unwrap();
    let tar = TarW::new()
        .symlink("s", sb.outside.to_str().unwrap())
        .hardlink("l", "s/secret")
        .finish();
    let r = unpack_layer(
        &tar[..],
        Compression::None,
        &Digest::sha256_of(&tar),
        &Digest::sha256_of(&tar),
        &sb.dest,
        &UnpackLimits::default(),
    );
    assert_unsafe(r, "l", "goes through a symlink");
    assert_eq!(lstat(&sb.outside.join("secret")).nlink(), 1);
    std::fs::remove_file(sb.outside.join("secret")).unwrap();
    sb.assert_contained();

    // A symlink in the path to the target that points inside is refused as well.
    let sb = Sandbox::new();
    let tar = TarW::new()
        .file("real/f", b"x", 0o644)
        .symlink("s", "real")
        .hardlink("l", "s/f")
        .finish();
    assert_unsafe(sb.unpack(&tar), "l", "goes through a symlink");
}

#[test]
fn directory_replaced_by_symlink_between_entries() {
    // CVE-2026-33056 class: `a/` is a dir (and the cached parent), then becomes a
    // symlink to the outside, then `a/x` is written.
    let sb = Sandbox::new();
    let tar = TarW::new()
        .dir("a/", 0o755)
        .file("a/y", b"y", 0o644)
        .symlink("a", sb.outside.to_str().unwrap())
        .file("a/x", b"pwned", 0o644)
        .finish();
    assert_unsafe(sb.unpack(&tar), "a/x", "symlink");
    assert!(lstat(&sb.p("a")).file_type().is_symlink());

    // Deeper: replace a middle directory.
    let sb = Sandbox::new();
    let tar = TarW::new()
        .dir("a/", 0o755)
        .dir("a/b/", 0o755)
        .file("a/b/c", b"c", 0o644)
        .symlink("a/b", "../../outside")
        .file("a/b/c2", b"pwned", 0o644)
        .finish();
    assert_unsafe(sb.unpack(&tar), "a/b/c2", "symlink");

    // A hardlink that turns a path into a symlink is no way around it either.
    let sb = Sandbox::new();
    let tar = TarW::new()
        .symlink("s", sb.outside.to_str().unwrap())
        .hardlink("a", "s")
        .file("a/x", b"pwned", 0o644)
        .finish();
    assert_unsafe(sb.unpack(&tar), "a/x", "symlink");
}

#[test]
fn entries_over_symlinks_replace_them_without_following() {
    let sb = Sandbox::new();
    let out = sb.outside.to_str().unwrap().to_string();
    let before = lstat(&sb.outside).mtime();
    let tar = TarW::new()
        .owner(1234, 1234)
        .mtime(1_000_000_000)
        .symlink("f", &format!("{out}/victim"))
        .file("f", b"mine", 0o4755)
        .symlink("d", &out)
        .dir("d/", 0o700)
        .file("d/in", b"in", 0o644)
        .symlink("n", &out)
        .node("n", EntryType::Fifo, 0o600, (0, 0))
        .file("t", b"t", 0o644)
        .symlink("h", &out)
        .hardlink("h", "t")
        // A directory whose recorded mtime is applied at the end, by then a symlink.
        .dir("late/", 0o755)
        .symlink("late", &out)
        .finish();
    sb.unpack(&tar).unwrap();
    assert!(lstat(&sb.p("f")).is_file());
    assert_eq!(lstat(&sb.p("f")).mode() & 0o7777, 0o4755);
    assert!(lstat(&sb.p("d")).is_dir());
    assert_eq!(std::fs::read(sb.p("d/in")).unwrap(), b"in");
    assert!(lstat(&sb.p("n")).file_type().is_fifo());
    assert_eq!(lstat(&sb.p("h")).ino(), lstat(&sb.p("t")).ino());
    assert!(lstat(&sb.p("late")).file_type().is_symlink());
    // No chown, chmod or utimes went through a symlink to the sentinel.
    let o = lstat(&sb.outside);
    assert_eq!((o.uid(), o.mode() & 0o7777), (0, 0o755));
    assert_eq!(o.mtime(), before);
}

#[test]
fn decompressed_size_limit() {
    // 10 MB of zeros after the end of the archive compress to almost nothing.
    let mut tar = TarW::new().file("f", b"x", 0o644).finish();
    tar.resize(10 << 20, 0);
    let gz = gzip(&tar);
    let sb = Sandbox::new();
    let limits = UnpackLimits {
        max_entry_size: 1 << 20,
        max_total_size: 1 << 20,
        max_entries: 10,
        ..Default::default()
    };
    let r = sb.unpack_blob(
        &gz,
        Compression::Gzip,
        &Digest::sha256_of(&gz),
        &Digest::sha256_of(&tar),
        &limits,
    );
    match r {
        Err(e @ UnpackError::LimitExceeded { .. }) => {
            assert_eq!(
                e.to_string(),
                format!(
                    "layer stream: decompressed layer size exceeds the limit of {}",
                    (1 << 20) + 10 * 1024
                )
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn error_messages_name_the_entry_and_the_reason() {
    let sb = Sandbox::new();
    let tar = TarW::new()
        .symlink("a", "/etc")
        .file("a/passwd", b"x", 0o644)
        .finish();
    let msg = sb.unpack(&tar).unwrap_err().to_string();
    assert!(
        msg.starts_with(
            "unsafe layer entry \"a/passwd\": a parent directory in its path is a symlink"
        ),
        "{msg}"
    );
}

#[test]
fn device_nodes_and_fifos() {
    let sb = Sandbox::new();
    let tar = TarW::new()
        .owner(5, 6)
        .node("dev/null", EntryType::Char, 0o666, (1, 3))
        .node("dev/loop0", EntryType::Block, 0o660, (7, 0))
        .node("run/fifo", EntryType::Fifo, 0o620, (0, 0))
        .finish();
    sb.unpack(&tar).unwrap();
    let n = lstat(&sb.p("dev/null"));
    assert!(n.file_type().is_char_device());
    assert_eq!(n.rdev(), nix::sys::stat::makedev(1, 3));
    assert_eq!((n.mode() & 0o7777, n.uid(), n.gid()), (0o666, 5, 6));
    let b = lstat(&sb.p("dev/loop0"));
    assert!(b.file_type().is_block_device());
    assert_eq!(b.rdev(), nix::sys::stat::makedev(7, 0));
    let f = lstat(&sb.p("run/fifo"));
    assert!(f.file_type().is_fifo());
    assert_eq!(f.mode() & 0o7777, 0o620);
    // Parents created implicitly are plain 0755 directories.
    assert_eq!(lstat(&sb.p("dev")).mode() & 0o7777, 0o755);
}

#[test]
fn special_mode_bits_survive_chown() {
    let sb = Sandbox::new();
    let tar = TarW::new()
        .owner(1000, 1000)
        .file("bin/su", b"\x7fELF", 0o4755)
        .file("bin/wall", b"\x7fELF", 0o2755)
        .dir("tmp/", 0o1777)
        .dir("shared/", 0o2775)
        .file("shared/f", b"", 0o640)
        .finish();
    sb.unpack(&tar).unwrap();
    let m = |p| lstat(&sb.p(p)).mode() & 0o7777;
    assert_eq!(m("bin/su"), 0o4755);
    assert_eq!(lstat(&sb.p("bin/su")).uid(), 1000);
    assert_eq!(m("bin/wall"), 0o2755);
    assert_eq!(m("tmp"), 0o1777);
    assert_eq!(m("shared"), 0o2775);
    assert_eq!(m("shared/f"), 0o640);
}

#[test]
fn huge_declared_size_hits_the_limit_without_reading() {
    let sb = Sandbox::new();
    let mut w = TarW::new();
    // Declares 1 TiB but carries no data: must fail on the header alone.
    w.raw(
        b"huge",
        EntryType::Regular,
        0o644,
        b"",
        1 << 40,
        b"",
        (0, 0),
    );
    let tar = w.finish();
    match sb.unpack(&tar) {
        Err(UnpackError::LimitExceeded { path, what, limit }) => {
            assert_eq!(path, "huge");
            assert_eq!(what, "entry size");
            assert_eq!(limit, 32 << 30);
        }
        other => panic!("{other:?}"),
    }
    assert!(!exists(&sb.p("huge")));

    let limits = UnpackLimits {
        max_entry_size: 100,
        max_total_size: 150,
        max_entries: 3,
        ..Default::default()
    };
    let run = |tar: Vec<u8>| {
        let sb = Sandbox::new();
        sb.unpack_blob(
            &tar,
            Compression::None,
            &Digest::sha256_of(&tar),
            &Digest::sha256_of(&tar),
            &limits,
        )
    };
    let r = run(TarW::new().file("a", &[1; 101], 0o644).finish());
    assert!(
        matches!(r, Err(UnpackError::LimitExceeded { ref path, what: "entry size", .. }) if path == "a"),
        "{r:?}"
    );
    let r = run(TarW::new()
        .file("a", &[1; 100], 0o644)
        .file("b", &[1; 51], 0o644)
        .finish());
    assert!(
        matches!(r, Err(UnpackError::LimitExceeded { ref path, what: "total unpacked size", .. }) if path == "b"),
        "{r:?}"
    );
    let r = run(TarW::new()
        .dir("a/", 0o755)
        .dir("b/", 0o755)
        .dir("c/", 0o755)
        .dir("d/", 0o755)
        .finish());
    assert!(
        matches!(r, Err(UnpackError::LimitExceeded { ref path, what: "number of entries", .. }) if path == "d/"),
        "{r:?}"
    );
}

#[test]
fn oversized_pax_header_is_refused() {
    // A 2 MiB PAX header would be buffered whole by the tar parser.
    let sb = Sandbox::new();
    let mut w = TarW::new();
    let junk = vec![b'a'; 2 << 20];
    w.pax(&[("comment", &junk)]);
    w.file("f", b"x", 0o644);
    let tar = w.finish();
    let r = sb.unpack_as(&tar, Compression::Gzip);
    assert!(
        matches!(r, Err(UnpackError::LimitExceeded { what, .. }) if what.contains("PAX")),
        "{r:?}"
    );
}

#[test]
fn truncated_gzip() {
    let sb = Sandbox::new();
    let tar = TarW::new().file("f", &vec![7; 200_000], 0o644).finish();
    let gz = gzip(&tar);
    let cut = &gz[..gz.len() / 2];
    // The registry sent half the blob: that is a digest mismatch (the cause).
    let r = sb.unpack_blob(
        cut,
        Compression::Gzip,
        &Digest::sha256_of(&gz),
        &Digest::sha256_of(&tar),
        &UnpackLimits::default(),
    );
    assert!(
        matches!(r, Err(UnpackError::DigestMismatch { .. })),
        "{r:?}"
    );
    // The image itself references a truncated gzip: corrupt data.
    let sb = Sandbox::new();
    let r = sb.unpack_blob(
        cut,
        Compression::Gzip,
        &Digest::sha256_of(cut),
        &Digest::sha256_of(&tar),
        &UnpackLimits::default(),
    );
    match r {
        Err(e @ UnpackError::Corrupt { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains("\"f\""), "{msg}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn corrupt_zstd() {
    let sb = Sandbox::new();
    let tar = TarW::new().file("f", &vec![7; 200_000], 0o644).finish();
    let mut z = zstd(&tar);
    let n = z.len();
    for b in &mut z[n / 2..n / 2 + 8] {
        *b ^= 0xa5;
    }
    let r = sb.unpack_blob(
        &z,
        Compression::Zstd,
        &Digest::sha256_of(&z),
        &Digest::sha256_of(&tar),
        &UnpackLimits::default(),
    );
    assert!(matches!(r, Err(UnpackError::Corrupt { .. })), "{r:?}");

    // Not compressed at all although labelled gzip, and plain garbage.
    for (blob, comp) in [
        (
            b"this is not a layer at all, just some text....".repeat(20),
            Compression::Gzip,
        ),
        (vec![0x5a; 4096], Compression::None),
    ] {
        let sb = Sandbox::new();
        let r = sb.unpack_blob(
            &blob,
            comp,
            &Digest::sha256_of(&blob),
            &Digest::sha256_of(&blob),
            &UnpackLimits::default(),
        );
        assert!(matches!(r, Err(UnpackError::Corrupt { .. })), "{r:?}");
    }
}

#[test]
fn truncated_tar_data() {
    let sb = Sandbox::new();
    let mut tar = TarW::new().file("f", &[1; 5000], 0o644).finish();
    tar.truncate(512 + 3000);
    let r = sb.unpack(&tar);
    match r {
        Err(UnpackError::Corrupt { context, source }) => {
            assert!(context.contains("\"f\""), "{context}");
            assert!(source.to_string().contains("3000 of 5000"), "{source}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn wrong_digest_and_wrong_diff_id() {
    let tar = TarW::new().file("f", b"hello", 0o644).finish();
    let gz = gzip(&tar);
    let other = Digest::sha256_of(b"other");

    let sb = Sandbox::new();
    let r = sb.unpack_blob(
        &gz,
        Compression::Gzip,
        &other,
        &Digest::sha256_of(&tar),
        &UnpackLimits::default(),
    );
    match r {
        Err(UnpackError::DigestMismatch { expected, actual }) => {
            assert_eq!(expected, other);
            assert_eq!(actual, Digest::sha256_of(&gz));
        }
        r => panic!("{r:?}"),
    }

    let sb = Sandbox::new();
    let r = sb.unpack_blob(
        &gz,
        Compression::Gzip,
        &Digest::sha256_of(&gz),
        &other,
        &UnpackLimits::default(),
    );
    match r {
        Err(UnpackError::DiffIdMismatch { expected, actual }) => {
            assert_eq!(expected, other);
            assert_eq!(actual, Digest::sha256_of(&tar));
        }
        r => panic!("{r:?}"),
    }
}

#[test]
fn digests_cover_data_after_the_end_of_archive() {
    // GNU tar pads archives to 10 KiB records: that padding is part of the diffID.
    let sb = Sandbox::new();
    let mut tar = TarW::new().file("f", b"x", 0o644).finish();
    tar.resize(10240, 0);
    let stats = sb.unpack_as(&tar, Compression::Gzip).unwrap();
    assert_eq!(stats.unpacked_bytes, 10240);
    assert_eq!(stats.compressed_bytes, gzip(&tar).len() as u64);
}

#[test]
fn whiteouts_become_overlay_whiteouts() {
    let sb = Sandbox::new();
    let tar = TarW::new()
        .owner(1000, 1000)
        .file(".wh.gone", b"", 0o644)
        .dir("etc/", 0o755)
        .file("etc/.wh.passwd", b"", 0o600)
        .file("var/lib/.wh..wh..opq", b"", 0o644)
        .file("var/lib/new", b"n", 0o644)
        .file(".wh..wh.plnk/1234.5678", b"aufs", 0o644)
        .file("usr/.wh..wh.aufs", b"", 0o644)
        .file("kept", b"k", 0o644)
        .file(".wh.kept", b"", 0o644) // a same-layer entry is not hidden
        .finish();
    sb.unpack(&tar).unwrap();
    for p in ["gone", "etc/passwd"] {
        let m = lstat(&sb.p(p));
        assert!(m.file_type().is_char_device(), "{p}");
        assert_eq!(m.rdev(), 0, "{p}");
    }
    assert!(!exists(&sb.p(".wh.gone")));
    assert!(!exists(&sb.p("etc/.wh.passwd")));
    assert_eq!(
        get_xattr(&sb.p("var/lib"), "trusted.overlay.opaque").unwrap(),
        b"y"
    );
    assert!(!exists(&sb.p("var/lib/.wh..wh..opq")));
    assert_eq!(std::fs::read(sb.p("var/lib/new")).unwrap(), b"n");
    assert!(get_xattr(&sb.p("var"), "trusted.overlay.opaque").is_none());
    assert!(!exists(&sb.p(".wh..wh.plnk")));
    assert!(!exists(&sb.p("usr/.wh..wh.aufs")));
    assert_eq!(std::fs::read(sb.p("kept")).unwrap(), b"k");

    // A whiteout first, then a real entry of the same name: the entry wins.
    let sb = Sandbox::new();
    let tar = TarW::new()
        .file(".wh.x", b"", 0o644)
        .file("x", b"real", 0o644)
        .file(".wh..wh..opq", b"", 0o644)
        .finish();
    sb.unpack(&tar).unwrap();
    assert_eq!(std::fs::read(sb.p("x")).unwrap(), b"real");
    assert_eq!(get_xattr(&sb.dest, "trusted.overlay.opaque").unwrap(), b"y");
}

#[test]
fn whiteout_through_symlink_is_rejected() {
    let sb = Sandbox::new();
    let tar = TarW::new()
        .symlink("d", sb.outside.to_str().unwrap())
        .file("d/.wh.x", b"", 0o644)
        .finish();
    assert_unsafe(sb.unpack(&tar), "d/.wh.x", "symlink");
    let sb = Sandbox::new();
    let tar = TarW::new()
        .symlink("d", sb.outside.to_str().unwrap())
        .file("d/.wh..wh..opq", b"", 0o644)
        .finish();
    assert_unsafe(sb.unpack(&tar), "d/.wh..wh..opq", "symlink");
    assert!(get_xattr(&sb.outside, "trusted.overlay.opaque").is_none());
}

#[test]
fn xattrs_are_filtered() {
    let sb = Sandbox::new();
    // VFS_CAP_REVISION_2 with CAP_NET_BIND_SERVICE permitted+effective.
    let mut cap = Vec::new();
    cap.extend_from_slice(&(0x0200_0000u32 | 1).to_le_bytes());
    cap.extend_from_slice(&(1u32 << 10).to_le_bytes());
    cap.extend_from_slice(&0u32.to_le_bytes());
    cap.extend_from_slice(&0u32.to_le_bytes());
    cap.extend_from_slice(&0u32.to_le_bytes());
    let mut w = TarW::new();
    w.pax(&[
        ("SCHILY.xattr.user.mime", b"text/plain"),
        ("SCHILY.xattr.security.capability", &cap),
        ("SCHILY.xattr.trusted.overlay.opaque", b"y"),
        ("SCHILY.xattr.trusted.overlay.redirect", b"/etc"),
        ("SCHILY.xattr.user.overlay.opaque", b"y"),
        (
            "SCHILY.xattr.security.selinux",
            b"system_u:object_r:shadow_t:s0",
        ),
    ]);
    w.owner(0, 0).file("bin/ping", b"\x7fELF", 0o755);
    w.pax(&[
        ("SCHILY.xattr.trusted.overlay.opaque", b"y"),
        ("SCHILY.xattr.user.d", b"1"),
    ]);
    w.dir("d/", 0o755);
    w.file("d/f", b"", 0o644);
    sb.unpack(&w.finish()).unwrap();
    let f = sb.p("bin/ping");
    assert_eq!(get_xattr(&f, "user.mime").unwrap(), b"text/plain");
    assert_eq!(get_xattr(&f, "security.capability").unwrap(), cap);
    assert!(get_xattr(&f, "trusted.overlay.opaque").is_none());
    assert!(get_xattr(&f, "trusted.overlay.redirect").is_none());
    assert!(get_xattr(&f, "user.overlay.opaque").is_none());
    assert!(get_xattr(&sb.p("d"), "trusted.overlay.opaque").is_none());
    assert_eq!(get_xattr(&sb.p("d"), "user.d").unwrap(), b"1");
}

#[test]
fn hardlinks_inside_the_layer_share_the_inode() {
    let sb = Sandbox::new();
    let tar = TarW::new()
        .owner(7, 7)
        .file("usr/bin/perl5.36", b"perl", 0o4711)
        .hardlink("usr/bin/perl", "usr/bin/perl5.36")
        .hardlink("/usr/bin/perl-abs", "/usr/bin/perl5.36")
        .hardlink("other/perl", "./usr/bin/../bin/perl5.36")
        .hardlink("usr/bin/perl", "usr/bin/perl5.36") // repeated: fine
        .finish();
    let stats = sb.unpack(&tar).unwrap();
    assert_eq!(stats.file_bytes, 4);
    let a = lstat(&sb.p("usr/bin/perl5.36"));
    for p in ["usr/bin/perl", "usr/bin/perl-abs", "other/perl"] {
        let b = lstat(&sb.p(p));
        assert_eq!((a.dev(), a.ino()), (b.dev(), b.ino()), "{p}");
    }
    assert_eq!(a.nlink(), 4);
    assert_eq!(a.mode() & 0o7777, 0o4711);

    let sb = Sandbox::new();
    let tar = TarW::new().dir("d/", 0o755).hardlink("l", "d").finish();
    assert_unsafe(sb.unpack(&tar), "l", "directory");
    let sb = Sandbox::new();
    let tar = TarW::new()
        .hardlink("l", "later")
        .file("later", b"", 0o644)
        .finish();
    assert_unsafe(sb.unpack(&tar), "l", "not an earlier entry");
}

#[test]
fn later_entries_replace_earlier_ones() {
    let sb = Sandbox::new();
    let tar = TarW::new()
        // dir over dir merges, with the later metadata
        .dir("m/", 0o700)
        .file("m/keep", b"k", 0o644)
        .dir("m/", 0o751)
        // file over a dir tree removes the tree
        .dir("t/", 0o755)
        .dir("t/sub/", 0o755)
        .file("t/sub/deep", b"d", 0o644)
        .symlink("t/sub/ln", "/")
        .file("t", b"now a file", 0o644)
        // anything over a file replaces it
        .file("f1", b"old", 0o644)
        .file("f1", b"new", 0o600)
        .file("f2", b"old", 0o644)
        .symlink("f2", "f1")
        .file("f3", b"old", 0o644)
        .dir("f3/", 0o755)
        .file("f3/in", b"i", 0o644)
        .symlink("s", "/somewhere")
        .file("s", b"plain", 0o644)
        .finish();
    sb.unpack(&tar).unwrap();
    assert_eq!(lstat(&sb.p("m")).mode() & 0o7777, 0o751);
    assert_eq!(std::fs::read(sb.p("m/keep")).unwrap(), b"k");
    assert_eq!(std::fs::read(sb.p("t")).unwrap(), b"now a file");
    assert_eq!(std::fs::read(sb.p("f1")).unwrap(), b"new");
    assert_eq!(lstat(&sb.p("f1")).mode() & 0o7777, 0o600);
    assert_eq!(std::fs::read_link(sb.p("f2")).unwrap(), Path::new("f1"));
    assert_eq!(std::fs::read(sb.p("f3/in")).unwrap(), b"i");
    assert!(lstat(&sb.p("s")).is_file());

    // A directory is then recreated where a file replaced it (stale parent cache).
    let sb = Sandbox::new();
    let tar = TarW::new()
        .dir("a/", 0o755)
        .dir("a/b/", 0o755)
        .file("a", b"file", 0o644)
        .dir("a/", 0o755)
        .file("a/b/c", b"c", 0o644)
        .finish();
    sb.unpack(&tar).unwrap();
    assert_eq!(std::fs::read(sb.p("a/b/c")).unwrap(), b"c");
}

#[test]
fn long_names_pax_and_gnu() {
    let sb = Sandbox::new();
    let long_dir = "d".repeat(150);
    let long = format!("{long_dir}/{}", "f".repeat(200));
    let link_target = format!("/{}", "t".repeat(300));
    let mut w = TarW::new();
    w.file(&long, b"pax", 0o644);
    w.symlink("sym", &link_target);
    // PAX times with nanoseconds.
    w.pax(&[
        ("mtime", b"1700000000.123456789"),
        ("uid", b"3000000"),
        ("gid", b"3000001"),
    ]);
    w.file("precise", b"", 0o644);
    let mut tar = w.finish();
    tar.truncate(tar.len() - 1024);
    // GNU long name, as written by the tar crate's own builder.
    let mut b = tar::Builder::new(Vec::new());
    let gnu_long = format!("g/{}", "n".repeat(180));
    let mut h = tar::Header::new_gnu();
    h.set_size(3);
    h.set_mode(0o640);
    h.set_entry_type(EntryType::Regular);
    b.append_data(&mut h, &gnu_long, &b"gnu"[..]).unwrap();
    tar.extend(b.into_inner().unwrap());
    sb.unpack(&tar).unwrap();
    assert_eq!(std::fs::read(sb.p(&long)).unwrap(), b"pax");
    assert_eq!(
        std::fs::read_link(sb.p("sym")).unwrap(),
        Path::new(&link_target)
    );
    assert_eq!(std::fs::read(sb.p(&gnu_long)).unwrap(), b"gnu");
    let m = lstat(&sb.p("precise"));
    assert_eq!((m.mtime(), m.mtime_nsec()), (1_700_000_000, 123_456_789));
    assert_eq!((m.uid(), m.gid()), (3_000_000, 3_000_001));
}

#[test]
fn root_entry_and_v7_directories() {
    let sb = Sandbox::new();
    let mut w = TarW::new();
    w.owner(0, 0).mtime(1_234_567_890).dir("./", 0o711);
    // Old-style directory: '\0' typeflag and a trailing slash.
    w.typeflag = Some(0);
    w.raw(b"v7dir/", EntryType::Regular, 0o755, b"", 0, b"", (0, 0));
    // An empty numeric field (uid, gid, mtime) reads as 0, as in Go's archive/tar.
    w.typeflag = Some(b'0');
    w.raw(b"blank", EntryType::Regular, 0o644, b"", 0, b"", (0, 0));
    let n = w.buf.len();
    let hdr = &mut w.buf[n - 512..];
    hdr[108..124].fill(0);
    hdr[136..148].fill(b' ');
    let mut h = tar::Header::new_old();
    h.as_mut_bytes().copy_from_slice(hdr);
    h.set_cksum();
    hdr.copy_from_slice(h.as_bytes());
    let tar = w.finish();
    sb.unpack(&tar).unwrap();
    let root = lstat(&sb.dest);
    assert_eq!(root.mode() & 0o7777, 0o711);
    assert_eq!(root.mtime(), 1_234_567_890);
    assert!(lstat(&sb.p("v7dir")).is_dir());
    let b = lstat(&sb.p("blank"));
    assert_eq!((b.uid(), b.gid(), b.mtime()), (0, 0, 0));

    let sb = Sandbox::new();
    let tar = TarW::new().file("./", b"x", 0o644).finish();
    assert_unsafe(sb.unpack(&tar), "./", "layer root");
}

#[test]
fn nul_bytes_and_overlong_paths_are_rejected() {
    let sb = Sandbox::new();
    let mut w = TarW::new();
    w.pax(&[("path", b"a\0b")]);
    w.file("ignored", b"", 0o644);
    assert_unsafe(sb.unpack(&w.finish()), "a\0b", "NUL");

    let sb = Sandbox::new();
    let deep = "a/".repeat(3000);
    let tar = TarW::new().file(&format!("{deep}f"), b"", 0o644).finish();
    assert_unsafe(sb.unpack(&tar), &format!("{deep}f"), "PATH_MAX");
}

#[test]
fn destination_must_be_empty() {
    let sb = Sandbox::new();
    std::fs::write(sb.p("pre"), b"").unwrap();
    let tar = TarW::new().file("f", b"", 0o644).finish();
    let r = unpack_layer(
        &tar[..],
        Compression::None,
        &Digest::sha256_of(&tar),
        &Digest::sha256_of(&tar),
        &sb.dest,
        &UnpackLimits::default(),
    );
    assert!(
        matches!(r, Err(UnpackError::BadDestination { .. })),
        "{r:?}"
    );
}

#[test]
fn blob_read_errors_are_not_corruption() {
    struct Failing(usize);
    impl Read for Failing {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.0 == 0 {
                return Err(io::Error::new(io::ErrorKind::ConnectionReset, "peer reset"));
            }
            self.0 -= 1;
            buf[..512].fill(0);
            Ok(512)
        }
    }
    let sb = Sandbox::new();
    let d = Digest::sha256_of(b"");
    let r = unpack_layer(
        Failing(1),
        Compression::None,
        &d,
        &d,
        &sb.dest,
        &UnpackLimits::default(),
    );
    match r {
        Err(UnpackError::Read(e)) => assert_eq!(e.kind(), io::ErrorKind::ConnectionReset),
        other => panic!("{other:?}"),
    }
    sb.assert_contained();
}

#[test]
fn mislabelled_compression_is_detected() {
    // Declared plain but actually gzip (some registries do this): magic bytes win.
    let sb = Sandbox::new();
    let tar = TarW::new().file("f", b"x", 0o644).finish();
    let gz = gzip(&tar);
    sb.unpack_blob(
        &gz,
        Compression::None,
        &Digest::sha256_of(&gz),
        &Digest::sha256_of(&tar),
        &UnpackLimits::default(),
    )
    .unwrap();
    assert_eq!(std::fs::read(sb.p("f")).unwrap(), b"x");
}

#[test]
fn normalize_paths() {
    let mut out = Vec::new();
    for (inp, want) in [
        ("a/b/c", "a/b/c"),
        ("/a//b/./c/", "a/b/c"),
        ("./", ""),
        ("/", ""),
        ("a/..", ""),
        ("a/b/../c", "a/c"),
    ] {
        fsops::normalize(inp.as_bytes(), &mut out).unwrap();
        assert_eq!(out, want.as_bytes(), "{inp}");
    }
    for bad in ["..", "../a", "/..", "a/../..", "a/../../b"] {
        assert!(fsops::normalize(bad.as_bytes(), &mut out).is_err(), "{bad}");
    }
}

#[test]
fn pax_time_parsing() {
    let t = |s: &str| parse_pax_time(s.as_bytes()).map(|t| (t.tv_sec(), t.tv_nsec()));
    assert_eq!(t("1700000000"), Some((1_700_000_000, 0)));
    assert_eq!(t("1700000000.5"), Some((1_700_000_000, 500_000_000)));
    assert_eq!(t("1.1234567891"), Some((1, 123_456_789)));
    assert_eq!(t("-1.5"), Some((-2, 500_000_000)));
    assert_eq!(t("x"), None);
    assert_eq!(t(""), None);
    assert_eq!(t("1.2.3"), None);
}

/// Throughput check on a real layer: `BERTH_BENCH_BLOB=x.tar.gz BERTH_BENCH_DIFF_ID=sha256:..
/// BERTH_BENCH_DEST=/empty/dir cargo test --release -p berth-image --lib -- --ignored
/// --nocapture bench_unpack_from_env`. The blob digest is computed beforehand, untimed.
#[test]
#[ignore = "benchmark; needs BERTH_BENCH_* variables"]
fn bench_unpack_from_env() {
    let blob = PathBuf::from(std::env::var("BERTH_BENCH_BLOB").expect("BERTH_BENCH_BLOB"));
    let diff_id: Digest = std::env::var("BERTH_BENCH_DIFF_ID")
        .expect("BERTH_BENCH_DIFF_ID")
        .parse()
        .unwrap();
    let dest = PathBuf::from(std::env::var("BERTH_BENCH_DEST").expect("BERTH_BENCH_DEST"));
    let digest: Digest = match std::env::var("BERTH_BENCH_DIGEST") {
        Ok(d) => d.parse().unwrap(),
        Err(_) => Digest::sha256_of(&std::fs::read(&blob).unwrap()),
    };
    let name = blob.to_string_lossy();
    let comp = if name.ends_with(".gz") {
        Compression::Gzip
    } else if name.ends_with(".zst") {
        Compression::Zstd
    } else {
        Compression::None
    };
    let start = std::time::Instant::now();
    let f = std::fs::File::open(&blob).unwrap();
    let stats = unpack_layer(f, comp, &digest, &diff_id, &dest, &UnpackLimits::default()).unwrap();
    let secs = start.elapsed().as_secs_f64();
    println!(
        "BENCH {name}: {secs:.3} s, {} entries, {:.1} MB tar -> {:.1} MB/s (uncompressed)",
        stats.entries,
        stats.unpacked_bytes as f64 / 1e6,
        stats.unpacked_bytes as f64 / 1e6 / secs
    );
}

#[test]
fn corrupt_tar_from_a_wrong_blob_is_a_digest_mismatch() {
    // The tar parser fails on a bad header while the decompressor is fine: the rest is
    // still read and hashed, and the blob digest names the real cause.
    let good = TarW::new()
        .file("a", &[1; 3000], 0o644)
        .file("b", b"b", 0o644)
        .finish();
    let mut bad = good.clone();
    bad[512 * 7 + 10] ^= 0xff; // header of "b"
    let sb = Sandbox::new();
    let r = sb.unpack_blob(
        &bad,
        Compression::None,
        &Digest::sha256_of(&good),
        &Digest::sha256_of(&good),
        &UnpackLimits::default(),
    );
    match r {
        Err(UnpackError::DigestMismatch { actual, .. }) => {
            assert_eq!(actual, Digest::sha256_of(&bad))
        }
        other => panic!("{other:?}"),
    }
    // With the digest the image names, it is corruption, located after entry "a".
    let sb = Sandbox::new();
    let r = sb.unpack_blob(
        &bad,
        Compression::None,
        &Digest::sha256_of(&bad),
        &Digest::sha256_of(&bad),
        &UnpackLimits::default(),
    );
    match r {
        Err(UnpackError::Corrupt { context, .. }) => {
            assert_eq!(context, "tar header after entry \"a\"")
        }
        other => panic!("{other:?}"),
    }
}

/// A GNU sparse entry (typeflag 'S', old-GNU sparse map in the header):
/// `real_size` bytes long, with `data` at `offset` and holes elsewhere.
fn gnu_sparse(tw: &mut TarW, path: &str, real_size: u64, offset: u64, data: &[u8]) {
    let mut h = tar::Header::new_gnu();
    h.as_gnu_mut().unwrap().name[..path.len()].copy_from_slice(path.as_bytes());
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_mtime(tw.mtime);
    h.set_entry_type(EntryType::GNUSparse);
    let octal = |field: &mut [u8; 12], v: u64| {
        let s = format!("{v:011o}");
        field[..11].copy_from_slice(s.as_bytes());
        field[11] = 0;
    };
    {
        let g = h.as_gnu_mut().unwrap();
        octal(&mut g.realsize, real_size);
        octal(&mut g.sparse[0].offset, offset);
        octal(&mut g.sparse[0].numbytes, data.len() as u64);
        // A last, empty segment at the end: the hole up to real_size.
        octal(&mut g.sparse[1].offset, real_size);
        octal(&mut g.sparse[1].numbytes, 0);
    }
    h.set_cksum();
    tw.buf.extend_from_slice(h.as_bytes());
    tw.buf.extend_from_slice(data);
    tw.pad();
}

/// A few KB of layer declaring 256 MiB of sparse zeros must not cost 256 MiB
/// of disk: holes stay holes, the data lands where the map says.
#[test]
fn gnu_sparse_holes_are_not_written() {
    let sb = Sandbox::new();
    let mut tw = TarW::new();
    let data = vec![b'x'; 1024];
    gnu_sparse(&mut tw, "bomb", 256 << 20, 128 << 20, &data);
    let tar = tw.finish();
    assert!(tar.len() < 8192, "the layer itself is small");
    let stats = sb.unpack(&tar).unwrap();
    let path = sb.dest.join("bomb");
    let md = lstat(&path);
    assert_eq!(md.len(), 256 << 20, "apparent size is the real size");
    assert!(
        md.blocks() * 512 < 1 << 20,
        "{} bytes allocated for 1 KiB of data",
        md.blocks() * 512
    );
    // Whole 4 KiB blocks are written or skipped: the data's block counts.
    assert!(
        (1024..=8192).contains(&stats.file_bytes),
        "{} bytes counted as written for 1 KiB of data",
        stats.file_bytes
    );
    let content = std::fs::read(&path).unwrap();
    assert!(content[..128 << 20].iter().all(|&b| b == 0));
    assert_eq!(&content[128 << 20..(128 << 20) + 1024], &data[..]);
    assert!(content[(128 << 20) + 1024..].iter().all(|&b| b == 0));
}

/// Zero runs inside a plain file become holes too, and the content reads back
/// exactly (data, a zero run, data, a trailing zero run).
#[test]
fn zero_runs_of_regular_files_read_back_exactly() {
    let sb = Sandbox::new();
    let mut content = vec![7u8; 5000];
    content.extend(vec![0u8; 3 * 4096 + 100]);
    content.extend(vec![9u8; 4096]);
    content.extend(vec![0u8; 2 * 4096]);
    let tar = TarW::new().file("f", &content, 0o644).finish();
    sb.unpack(&tar).unwrap();
    assert_eq!(std::fs::read(sb.dest.join("f")).unwrap(), content);
}

/// Free space is checked while writing: with the reserve above what the disk
/// has, the first file data fails the layer as DiskFull (ResourceExhausted
/// for the kubelet), not after the disk filled.
#[test]
fn free_space_is_checked_while_writing() {
    let sb = Sandbox::new();
    let tar = TarW::new().file("f", b"data", 0o644).finish();
    let limits = UnpackLimits {
        min_free_bytes: u64::MAX,
        ..Default::default()
    };
    let r = sb.unpack_blob(
        &tar,
        Compression::None,
        &Digest::sha256_of(&tar),
        &Digest::sha256_of(&tar),
        &limits,
    );
    assert!(
        matches!(r, Err(UnpackError::DiskFull { ref path, reserve: u64::MAX, .. }) if path == "f"),
        "{r:?}"
    );
}
