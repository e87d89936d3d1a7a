//! Streaming extraction of OCI/Docker layer blobs into a directory — hostile-input code.
//!
//! One pass over the blob: hash the compressed bytes (blob digest), decompress, hash the
//! tar stream (diffID), and extract. Every path is resolved by us relative to a dirfd
//! of `dest` with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`, and every object is
//! created with `*at` syscalls on the final component, so nothing can land outside
//! `dest` whatever the tar says (see `fsops.rs`). The `tar` crate is used only to parse
//! headers and read entry data, never to write.
//!
//! OCI whiteouts become overlayfs whiteouts: `.wh.NAME` → a 0/0 char device `NAME`,
//! `.wh..wh..opq` → `trusted.overlay.opaque=y` on the directory.

mod fsops;
#[cfg(test)]
mod tests;

use std::cell::Cell;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;
use std::rc::Rc;
use std::sync::mpsc;

use nix::sys::time::TimeSpec;
use tracing::{debug, debug_span};

use crate::digest::{Digest, DigestReader, Hasher};
use fsops::{EntryMeta, Extractor, Kind, Xattrs};

/// Read buffer for the compressed blob: big reads keep syscalls and decoder calls few.
const BLOB_BUF_SIZE: usize = 1 << 20;
/// Cap on what the tar parser may read between two entries (PAX/GNU long-name data
/// is held in memory by the `tar` crate). Same cap as Go's archive/tar.
const MAX_HEADER_BYTES: u64 = 1 << 20;
/// Longest entry path we accept (PATH_MAX - 1); also bounds directory depth.
const MAX_PATH_LEN: usize = 4095;

/// Layer compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    /// Compression of a layer from its descriptor media type (OCI and Docker schema 2,
    /// including the non-distributable / foreign variants). Parameters after `;` are ignored.
    pub fn from_media_type(mt: &str) -> Result<Compression, UnpackError> {
        let base = mt
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        let unsupported = |reason: &str| UnpackError::UnsupportedMediaType {
            media_type: mt.to_string(),
            reason: reason.to_string(),
        };
        if base.ends_with("+encrypted") {
            return Err(unsupported("encrypted layers are not supported"));
        }
        Ok(match base.as_str() {
            "application/vnd.oci.image.layer.v1.tar"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar"
            | "application/vnd.docker.image.rootfs.diff.tar"
            | "application/vnd.docker.image.rootfs.foreign.diff.tar" => Compression::None,
            "application/vnd.oci.image.layer.v1.tar+gzip"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
            | "application/vnd.docker.image.rootfs.diff.tar.gzip"
            | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => Compression::Gzip,
            "application/vnd.oci.image.layer.v1.tar+zstd"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"
            | "application/vnd.docker.image.rootfs.diff.tar.zstd" => Compression::Zstd,
            _ => return Err(unsupported("not a known layer media type")),
        })
    }

    /// Compression recognised from the first bytes of a blob, if any.
    pub fn sniff(head: &[u8]) -> Option<Compression> {
        if head.starts_with(&[0x1f, 0x8b]) {
            Some(Compression::Gzip)
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Some(Compression::Zstd)
        } else {
            None
        }
    }
}

/// Resource caps for one layer; exceeding one is a [`UnpackError::LimitExceeded`].
#[derive(Debug, Clone)]
pub struct UnpackLimits {
    /// Largest size of one entry's data.
    pub max_entry_size: u64,
    /// Largest sum of entry data sizes. The whole decompressed stream (headers included)
    /// is bounded by this plus 1 KiB per allowed entry.
    pub max_total_size: u64,
    /// Largest number of tar entries.
    pub max_entries: u64,
    /// Unpacking stops with [`UnpackError::DiskFull`] once the layer's
    /// filesystem has less than this free (checked while writing, every
    /// [`FREE_SPACE_CHECK_BYTES`] of file data, not only before a pull). 0:
    /// no check.
    pub min_free_bytes: u64,
}

/// File data written between two free-space checks.
pub const FREE_SPACE_CHECK_BYTES: u64 = 64 << 20;

impl Default for UnpackLimits {
    fn default() -> Self {
        UnpackLimits {
            max_entry_size: 32 << 30,
            max_total_size: 64 << 30,
            max_entries: 10_000_000,
            min_free_bytes: 0,
        }
    }
}

/// What [`unpack_layer`] did.
#[derive(Debug, Clone)]
pub struct UnpackStats {
    /// sha256 of the blob as read (equals the expected digest on success).
    pub compressed_digest: Digest,
    /// sha256 of the decompressed tar stream (equals the expected diffID on success).
    pub diff_id: Digest,
    /// Bytes of the blob read.
    pub compressed_bytes: u64,
    /// Bytes of the decompressed tar stream (what the diffID covers).
    pub unpacked_bytes: u64,
    /// Bytes of file data written (regular files; hardlinks count once;
    /// runs of zeros are left as holes and not counted).
    pub file_bytes: u64,
    /// Tar entries processed, including skipped ones and whiteouts.
    pub entries: u64,
}

/// Why a layer could not be unpacked. Entry paths are as written in the tar.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("unsupported layer media type {media_type:?}: {reason}")]
    UnsupportedMediaType { media_type: String, reason: String },
    #[error("layer destination {path:?} must be an existing empty directory")]
    BadDestination { path: String },
    #[error("layer blob digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error("layer diffID mismatch (uncompressed tar digest): expected {expected}, got {actual}")]
    DiffIdMismatch { expected: Digest, actual: Digest },
    #[error("reading the layer blob: {0}")]
    Read(#[source] io::Error),
    #[error("corrupt or truncated layer ({context}): {source}")]
    Corrupt {
        context: String,
        #[source]
        source: io::Error,
    },
    #[error("unsafe layer entry {path:?}: {reason}")]
    UnsafeEntry { path: String, reason: String },
    #[error("unsupported layer entry {path:?}: {reason}")]
    UnsupportedEntry { path: String, reason: String },
    /// `path` is empty when the limit is not about one entry (stream size).
    #[error("layer {}: {what} exceeds the limit of {limit}", describe_path(path))]
    LimitExceeded {
        path: String,
        what: &'static str,
        limit: u64,
    },
    /// The node's disk, not the layer: less than `min_free_bytes` left.
    #[error(
        "layer entry {path:?}: only {free} bytes free on the image filesystem, {reserve} must stay free"
    )]
    DiskFull {
        path: String,
        free: u64,
        reserve: u64,
    },
    #[error("layer entry {path:?}: {op}: {source}")]
    Io {
        path: String,
        op: &'static str,
        #[source]
        source: io::Error,
    },
}

fn describe_path(path: &str) -> String {
    if path.is_empty() {
        "stream".to_string()
    } else {
        format!("entry {path:?}")
    }
}

/// Streams a (compressed) layer blob from `blob`: hashes the compressed bytes,
/// decompresses, hashes the tar (diffID), extracts into `dest` (an existing empty
/// directory) safely, converting OCI whiteouts to overlayfs whiteouts, and verifies
/// both digests at the end (after reading the blob to its end).
///
/// `compression` comes from the media type; gzip/zstd magic bytes in the blob win over
/// it (as containerd does), since some registries mislabel layers.
///
/// Two threads: this one extracts, a scoped helper reads, hashes and decompresses, so
/// one layer can use two cores (`tar -xz` gets the same from its gzip child).
///
/// On any error `dest` may hold partial content: extract into a temp dir and rename on
/// Ok only. Bound `blob` to the descriptor size (e.g. `Read::take`) and compare
/// `compressed_bytes`: a stream of skippable zstd frames could otherwise be endless.
/// Call it from a blocking thread (all I/O is synchronous); needs root for chown/mknod.
pub fn unpack_layer<R: Read + Send>(
    blob: R,
    compression: Compression,
    expected_digest: &Digest,
    expected_diff_id: &Digest,
    dest: &Path,
    limits: &UnpackLimits,
) -> Result<UnpackStats, UnpackError> {
    let span = debug_span!("unpack_layer", digest = %expected_digest, dest = %dest.display());
    let _enter = span.enter();

    let mut ex = Extractor::open(dest)?;
    ex.min_free_bytes = limits.min_free_bytes;
    let stream_limit = limits
        .max_total_size
        .saturating_add(limits.max_entries.saturating_mul(1024));

    let (extracted, decoded) = std::thread::scope(|scope| {
        let (tx, rx) = mpsc::sync_channel(PIPE_DEPTH);
        let (free_tx, free_rx) = mpsc::sync_channel(PIPE_DEPTH + 2);
        let decode_span = span.clone();
        let decoder = std::thread::Builder::new()
            .name("layer-decode".into())
            .spawn_scoped(scope, move || {
                let _enter = decode_span.enter();
                decode_stage(blob, compression, stream_limit, tx, free_rx)
            })
            .map_err(|e| UnpackError::Io {
                path: dest.display().to_string(),
                op: "spawn decompression thread",
                source: e,
            })?;
        let mut reader = ChunkReader {
            rx,
            free_tx,
            cur: Vec::new(),
            pos: 0,
            failed: false,
        };
        let mut extracted = extract_stream(&mut reader, &mut ex, limits);
        match &extracted {
            // Both digests cover whole streams: read what follows the end-of-archive.
            Ok(()) => {
                if let Err(e) = drain_read(&mut reader, &mut ex.buf) {
                    extracted = Err(stream_error(e, b"", "after the end of the tar"));
                }
            }
            // A corrupt tar is often a wrong blob: let the digest be computed to tell.
            Err(UnpackError::Corrupt { .. }) if !reader.failed => {
                let _ = drain_read(&mut reader, &mut ex.buf);
            }
            // Otherwise stop the decoder (its sends fail once `reader` is gone).
            Err(_) => {}
        }
        drop(reader);
        let decoded = decoder.join().unwrap_or_else(|_| DecodeOutcome {
            compressed: None,
            diff_id: Digest::sha256_of(b""),
            unpacked_bytes: 0,
        });
        Ok::<_, UnpackError>((extracted, decoded))
    })?;

    let Some((compressed_digest, compressed_bytes)) = decoded.compressed else {
        // The decoder could not read the whole blob; the extraction error says why.
        return Err(extracted
            .err()
            .unwrap_or_else(|| corrupt("decoder", "decompression thread failed")));
    };
    if let Err(e) = extracted {
        if matches!(e, UnpackError::Corrupt { .. }) && &compressed_digest != expected_digest {
            return Err(UnpackError::DigestMismatch {
                expected: expected_digest.clone(),
                actual: compressed_digest,
            });
        }
        return Err(e);
    }
    if &compressed_digest != expected_digest {
        return Err(UnpackError::DigestMismatch {
            expected: expected_digest.clone(),
            actual: compressed_digest,
        });
    }
    let diff_id = decoded.diff_id;
    if &diff_id != expected_diff_id {
        return Err(UnpackError::DiffIdMismatch {
            expected: expected_diff_id.clone(),
            actual: diff_id,
        });
    }
    ex.apply_dir_times()?;
    let stats = UnpackStats {
        compressed_digest,
        diff_id,
        compressed_bytes,
        unpacked_bytes: decoded.unpacked_bytes,
        file_bytes: ex.file_bytes,
        entries: ex.entries,
    };
    debug!(
        entries = stats.entries,
        compressed_bytes,
        unpacked_bytes = stats.unpacked_bytes,
        "layer unpacked"
    );
    Ok(stats)
}

fn corrupt(context: &str, msg: &str) -> UnpackError {
    UnpackError::Corrupt {
        context: context.to_string(),
        source: io::Error::new(io::ErrorKind::InvalidData, msg.to_string()),
    }
}

/// Parses the tar stream from `reader` and extracts every entry.
fn extract_stream(
    reader: &mut ChunkReader,
    ex: &mut Extractor,
    limits: &UnpackLimits,
) -> Result<(), UnpackError> {
    let state = Rc::new(GuardState {
        header_budget: Cell::new(None),
    });
    let mut archive = tar::Archive::new(Guard {
        inner: reader,
        state: state.clone(),
    });
    extract_entries(&mut archive, &state, ex, limits)
}

/// Decompressed data in flight between the two threads: 8 × 256 KiB.
const PIPE_DEPTH: usize = 8;
const CHUNK_SIZE: usize = 256 << 10;

type Chunk = io::Result<Vec<u8>>;

/// What the decode thread saw.
struct DecodeOutcome {
    /// Digest and length of the whole blob; None if it could not be read to its end.
    compressed: Option<(Digest, u64)>,
    /// Digest and length of the decompressed bytes produced (all of them on success).
    diff_id: Digest,
    unpacked_bytes: u64,
}

/// Reads and hashes the blob, decompresses and hashes the tar stream, and sends it in
/// chunks. On a decode error it sends the error, then still reads the rest of the blob
/// so its digest can tell "wrong blob" from "corrupt image".
fn decode_stage<R: Read>(
    blob: R,
    compression: Compression,
    stream_limit: u64,
    tx: mpsc::SyncSender<Chunk>,
    free_rx: mpsc::Receiver<Vec<u8>>,
) -> DecodeOutcome {
    let mut compressed =
        DigestReader::new(BufReader::with_capacity(BLOB_BUF_SIZE, SourceReader(blob)));
    let mut diff = TarHash {
        hasher: None,
        bytes: 0,
    };
    let outcome = |compressed: Option<(Digest, u64)>, diff: TarHash| DecodeOutcome {
        unpacked_bytes: diff.bytes,
        // Uncompressed: the tar is the blob, one hash serves both digests.
        diff_id: match diff.hasher {
            Some(h) => h.finish(),
            None => compressed
                .as_ref()
                .map_or_else(|| Digest::sha256_of(b""), |(d, _)| d.clone()),
        },
        compressed,
    };
    let head = loop {
        match compressed.fill_buf() {
            Ok(h) => break h,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                let _ = tx.send(Err(e));
                return outcome(None, diff);
            }
        }
    };
    let compression = Compression::sniff(head).unwrap_or(compression);
    if compression != Compression::None {
        diff.hasher = Some(Hasher::new());
    }
    let mut decoder = match Decoder::new(compression, compressed) {
        Ok(d) => d,
        Err(e) => {
            let _ = tx.send(Err(e));
            return outcome(None, diff);
        }
    };
    loop {
        let mut buf = free_rx.try_recv().unwrap_or_default();
        buf.resize(CHUNK_SIZE, 0);
        // Fill whole chunks: fewer, larger messages.
        let mut n = 0;
        let mut result = Ok(());
        while n < buf.len() {
            match decoder.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        buf.truncate(n);
        if let Some(h) = &mut diff.hasher {
            h.update(&buf);
        }
        diff.bytes += n as u64;
        if diff.bytes > stream_limit {
            result = Err(io::Error::other(LimitHit {
                what: "decompressed layer size",
                limit: stream_limit,
            }));
        }
        if n > 0 && tx.send(Ok(buf)).is_err() {
            return outcome(None, diff); // the extractor gave up
        }
        match result {
            Ok(()) if n > 0 => continue,
            Ok(()) => break,
            Err(e) => {
                let from_source = e.get_ref().is_some_and(|i| i.is::<SourceError>());
                let limit = e.get_ref().is_some_and(|i| i.is::<LimitHit>());
                let _ = tx.send(Err(e));
                drop(tx);
                if from_source || limit {
                    return outcome(None, diff);
                }
                // Corrupt data: read the rest of the blob for its digest.
                let mut compressed = decoder.into_inner();
                return match drain_bufread(&mut compressed) {
                    Ok(_) => {
                        let (_, d, len) = compressed.into_parts();
                        outcome(Some((d, len)), diff)
                    }
                    Err(_) => outcome(None, diff),
                };
            }
        }
    }
    // End of the decompressed stream: anything left in the blob is covered as well.
    let mut compressed = decoder.into_inner();
    if let Err(e) = drain_bufread(&mut compressed) {
        let _ = tx.send(Err(e));
        return outcome(None, diff);
    }
    let (_, d, len) = compressed.into_parts();
    outcome(Some((d, len)), diff)
}

/// Hash and length of the decompressed stream.
struct TarHash {
    /// None for uncompressed blobs, whose digest is the diffID.
    hasher: Option<Hasher>,
    bytes: u64,
}

/// The extraction side of the pipe: a `Read` over the chunks the decode thread sends.
struct ChunkReader {
    rx: mpsc::Receiver<Chunk>,
    free_tx: mpsc::SyncSender<Vec<u8>>,
    cur: Vec<u8>,
    pos: usize,
    /// The decode thread reported an error (it has stopped sending).
    failed: bool,
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.cur.len() {
            if self.failed {
                return Err(io::Error::other("layer stream failed earlier"));
            }
            match self.rx.recv() {
                Ok(Ok(next)) => {
                    // Hand the used buffer back: no allocation per chunk.
                    let used = std::mem::replace(&mut self.cur, next);
                    let _ = self.free_tx.try_send(used);
                    self.pos = 0;
                }
                Ok(Err(e)) => {
                    self.failed = true;
                    return Err(e);
                }
                Err(mpsc::RecvError) => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len() - self.pos);
        buf[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

fn extract_entries<R: Read>(
    archive: &mut tar::Archive<Guard<R>>,
    guard: &GuardState,
    ex: &mut Extractor,
    limits: &UnpackLimits,
) -> Result<(), UnpackError> {
    let mut entries = archive
        .entries()
        .map_err(|e| stream_error(e, b"", "tar start"))?;
    // Reused across entries: no per-entry allocations for paths and link names.
    let mut raw_path = Vec::with_capacity(256);
    let mut link = Vec::with_capacity(256);
    let mut xattrs = Vec::new();
    loop {
        guard.header_budget.set(Some(MAX_HEADER_BYTES));
        let next = entries.next();
        guard.header_budget.set(None);
        let mut entry = match next {
            None => return Ok(()),
            Some(Ok(entry)) => entry,
            Some(Err(e)) => {
                return Err(if ex.entries == 0 {
                    stream_error(e, b"", "first tar header")
                } else {
                    stream_error(e, &raw_path, "tar header after entry")
                });
            }
        };
        raw_path.clear();
        raw_path.extend_from_slice(&entry.path_bytes());

        ex.entries += 1;
        if ex.entries > limits.max_entries {
            return Err(UnpackError::LimitExceeded {
                path: lossy(&raw_path),
                what: "number of entries",
                limit: limits.max_entries,
            });
        }
        let size = entry.size();
        if size > limits.max_entry_size {
            return Err(UnpackError::LimitExceeded {
                path: lossy(&raw_path),
                what: "entry size",
                limit: limits.max_entry_size,
            });
        }
        ex.declared_bytes = ex.declared_bytes.saturating_add(size);
        if ex.declared_bytes > limits.max_total_size {
            return Err(UnpackError::LimitExceeded {
                path: lossy(&raw_path),
                what: "total unpacked size",
                limit: limits.max_total_size,
            });
        }

        let meta = entry_meta(&mut entry, &raw_path, &mut link, &mut xattrs)?;
        ex.extract(&mut entry, &raw_path, &link, &meta, &xattrs, size)?;
    }
}

/// Header fields of one entry, with PAX overrides applied.
fn entry_meta<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    raw_path: &[u8],
    link: &mut Vec<u8>,
    xattrs: &mut Xattrs,
) -> Result<EntryMeta, UnpackError> {
    let bad = |what: &str, e: io::Error| UnpackError::Corrupt {
        context: format!("entry {:?}: bad {what}", lossy(raw_path)),
        source: e,
    };
    let header = entry.header();
    let typeflag = header.as_bytes()[156];
    let kind = match header.entry_type() {
        // V7 tar marks directories with a trailing slash on a '\0' typeflag (Go does too).
        tar::EntryType::Regular if typeflag == 0 && raw_path.ends_with(b"/") => Kind::Dir,
        tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
            Kind::File
        }
        tar::EntryType::Directory => Kind::Dir,
        tar::EntryType::Symlink => Kind::Symlink,
        tar::EntryType::Link => Kind::HardLink,
        tar::EntryType::Char => Kind::Char,
        tar::EntryType::Block => Kind::Block,
        tar::EntryType::Fifo => Kind::Fifo,
        tar::EntryType::XGlobalHeader => Kind::Skip,
        other => {
            return Err(UnpackError::UnsupportedEntry {
                path: lossy(raw_path),
                reason: format!("tar entry type {:?}", other.as_byte() as char),
            });
        }
    };
    let raw_hdr = header.as_bytes();
    let mode = blank_is_zero(header.mode().map(u64::from), &raw_hdr[100..108])
        .map_err(|e| bad("mode", e))? as u32
        & 0o7777;
    let uid = blank_is_zero(header.uid(), &raw_hdr[108..116]).map_err(|e| bad("uid", e))?;
    let gid = blank_is_zero(header.gid(), &raw_hdr[116..124]).map_err(|e| bad("gid", e))?;
    let (uid, gid) = match (u32::try_from(uid), u32::try_from(gid)) {
        // u32::MAX is chown's "leave unchanged", not an owner.
        (Ok(u), Ok(g)) if u != u32::MAX && g != u32::MAX => (u, g),
        _ => {
            return Err(UnpackError::UnsafeEntry {
                path: lossy(raw_path),
                reason: format!("owner {uid}:{gid} out of range"),
            });
        }
    };
    let mtime = blank_is_zero(header.mtime(), &raw_hdr[136..148]).map_err(|e| bad("mtime", e))?;
    let mut mtime = TimeSpec::new(i64::try_from(mtime).unwrap_or(i64::MAX), 0);
    let (mut dev_major, mut dev_minor) = (0, 0);
    if matches!(kind, Kind::Char | Kind::Block) {
        dev_major = header
            .device_major()
            .map_err(|e| bad("device major", e))?
            .unwrap_or(0);
        dev_minor = header
            .device_minor()
            .map_err(|e| bad("device minor", e))?
            .unwrap_or(0);
    }
    link.clear();
    if matches!(kind, Kind::Symlink | Kind::HardLink) {
        match entry.link_name_bytes() {
            Some(l) if !l.is_empty() => link.extend_from_slice(&l),
            _ => {
                return Err(UnpackError::UnsafeEntry {
                    path: lossy(raw_path),
                    reason: "link entry without a link target".into(),
                });
            }
        }
    }

    xattrs.clear();
    let mut atime = None;
    if let Some(pax) = entry.pax_extensions().map_err(|e| bad("PAX header", e))? {
        for ext in pax {
            let ext = ext.map_err(|e| bad("PAX record", e))?;
            let key = ext.key_bytes();
            if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
                if let Ok(name) = std::ffi::CString::new(name) {
                    xattrs.push((name, ext.value_bytes().to_vec()));
                }
            } else if key == b"mtime" {
                if let Some(t) = parse_pax_time(ext.value_bytes()) {
                    mtime = t;
                }
            } else if key == b"atime" {
                atime = parse_pax_time(ext.value_bytes());
            } else if key.starts_with(b"GNU.sparse.") {
                // PAX sparse formats: the tar crate would hand us the sparse map as data.
                return Err(UnpackError::UnsupportedEntry {
                    path: lossy(raw_path),
                    reason: "PAX sparse files are not supported".into(),
                });
            }
        }
    }
    // Like containerd: atime is the later of atime and mtime.
    let atime = match atime {
        Some(a) if a > mtime => a,
        _ => mtime,
    };
    Ok(EntryMeta {
        kind,
        mode,
        uid,
        gid,
        atime,
        mtime,
        dev_major,
        dev_minor,
    })
}

/// A numeric header field of only NULs and spaces reads as 0, as in Go's archive/tar
/// (which wrote most layers); the tar crate calls it an error.
fn blank_is_zero(parsed: io::Result<u64>, field: &[u8]) -> io::Result<u64> {
    match parsed {
        Err(_) if field.iter().all(|&b| b == 0 || b == b' ') => Ok(0),
        r => r,
    }
}

/// Parses a PAX time "SECONDS[.FRACTION]" (possibly negative).
fn parse_pax_time(v: &[u8]) -> Option<TimeSpec> {
    let s = std::str::from_utf8(v).ok()?;
    let (neg, s) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    if secs.is_empty() || !secs.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let secs: i64 = secs.parse().ok()?;
    let mut nanos: i64 = 0;
    for (i, b) in frac.bytes().take(9).enumerate() {
        nanos += i64::from(b - b'0') * 10i64.pow(8 - i as u32);
    }
    Some(if neg {
        if nanos > 0 {
            TimeSpec::new(-secs - 1, 1_000_000_000 - nanos)
        } else {
            TimeSpec::new(-secs, 0)
        }
    } else {
        TimeSpec::new(secs, nanos)
    })
}

pub(crate) fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Turns an error from the read side of the pipeline into the right variant: the blob
/// source failed, a limit tripped, or the data is corrupt. `entry` is the tar path the
/// error belongs to (empty if none), `context` says where in the stream we were.
fn stream_error(e: io::Error, entry: &[u8], context: &str) -> UnpackError {
    let e = if e.get_ref().is_some_and(|i| i.is::<SourceError>()) {
        match e.into_inner().map(|i| i.downcast::<SourceError>()) {
            Some(Ok(src)) => return UnpackError::Read(src.0),
            Some(Err(other)) => io::Error::other(other),
            None => io::Error::other("layer stream error"),
        }
    } else {
        e
    };
    if let Some(hit) = e.get_ref().and_then(|i| i.downcast_ref::<LimitHit>()) {
        return UnpackError::LimitExceeded {
            path: lossy(entry),
            what: hit.what,
            limit: hit.limit,
        };
    }
    UnpackError::Corrupt {
        context: if entry.is_empty() {
            context.to_string()
        } else {
            format!("{context} {:?}", lossy(entry))
        },
        source: e,
    }
}

/// Marks errors of the caller's blob reader so they are not reported as corrupt data.
#[derive(Debug)]
struct SourceError(io::Error);

impl std::fmt::Display for SourceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for SourceError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

struct SourceReader<R>(R);

impl<R: Read> Read for SourceReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf).map_err(|e| {
            if e.kind() == io::ErrorKind::Interrupted {
                e
            } else {
                io::Error::new(e.kind(), SourceError(e))
            }
        })
    }
}

/// A limit tripped deep inside the read pipeline.
#[derive(Debug)]
pub(crate) struct LimitHit {
    pub(crate) what: &'static str,
    pub(crate) limit: u64,
}

impl std::fmt::Display for LimitHit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} exceeds the limit of {}", self.what, self.limit)
    }
}

impl std::error::Error for LimitHit {}

struct GuardState {
    /// While the tar crate looks for the next entry: bytes it may still read. The crate
    /// buffers PAX and GNU long-name data in memory, so this bounds that memory.
    header_budget: Cell<Option<u64>>,
}

/// Sits between the decompressed stream and the tar parser; bounds header reads.
struct Guard<R> {
    inner: R,
    state: Rc<GuardState>,
}

impl<R: Read> Read for Guard<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(budget) = self.state.header_budget.get() else {
            return self.inner.read(buf);
        };
        // Never let a single read overshoot the budget by much.
        let want = buf
            .len()
            .min(usize::try_from(budget).unwrap_or(usize::MAX).max(1));
        let n = self.inner.read(&mut buf[..want])?;
        if n as u64 > budget {
            return Err(io::Error::other(LimitHit {
                what: "tar header metadata (PAX / GNU long names)",
                limit: MAX_HEADER_BYTES,
            }));
        }
        self.state.header_budget.set(Some(budget - n as u64));
        Ok(n)
    }
}

enum Decoder<R: BufRead> {
    Plain(R),
    // Boxed: the decoder states are large and this enum is moved around.
    Gzip(Box<flate2::bufread::MultiGzDecoder<R>>),
    Zstd(Box<zstd::stream::read::Decoder<'static, R>>),
}

impl<R: BufRead> Decoder<R> {
    fn new(c: Compression, r: R) -> io::Result<Decoder<R>> {
        Ok(match c {
            Compression::None => Decoder::Plain(r),
            // Multi-member gzip is valid gzip (pigz, concatenated streams), as in Go.
            Compression::Gzip => Decoder::Gzip(Box::new(flate2::bufread::MultiGzDecoder::new(r))),
            // zstd's default window limit (128 MiB) bounds decoder memory.
            Compression::Zstd => {
                Decoder::Zstd(Box::new(zstd::stream::read::Decoder::with_buffer(r)?))
            }
        })
    }

    fn into_inner(self) -> R {
        match self {
            Decoder::Plain(r) => r,
            Decoder::Gzip(d) => d.into_inner(),
            Decoder::Zstd(d) => d.finish(),
        }
    }
}

impl<R: BufRead> Read for Decoder<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Decoder::Plain(r) => r.read(buf),
            Decoder::Gzip(d) => d.read(buf),
            Decoder::Zstd(d) => d.read(buf),
        }
    }
}

fn drain_bufread<B: BufRead>(r: &mut B) -> io::Result<u64> {
    let mut total = 0;
    loop {
        let n = match r.fill_buf() {
            Ok(b) => b.len(),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if n == 0 {
            return Ok(total);
        }
        r.consume(n);
        total += n as u64;
    }
}

fn drain_read<R: Read>(r: &mut R, buf: &mut [u8]) -> io::Result<u64> {
    let mut total = 0;
    loop {
        match r.read(buf) {
            Ok(0) => return Ok(total),
            Ok(n) => total += n as u64,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}
