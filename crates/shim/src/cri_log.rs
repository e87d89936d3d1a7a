//! The CRI container log writer.
//!
//! The kubelet reads container logs itself (`kubectl logs`, log rotation), so
//! the file format is fixed by its parser, `parseCRILog` in
//! k8s.io/kubernetes `pkg/kubelet/kuberuntime/logs`:
//!
//! ```text
//! <timestamp> <stdout|stderr> <P|F> <content>\n
//! ```
//!
//! * `F` closes a line; the kubelet hands the content *with* the newline back.
//! * `P` is a piece of a longer line; the kubelet drops the record's `\n` and
//!   glues the pieces to the next record of the stream.
//!
//! The splitting rules copy containerd's `redirectLogs`
//! (`internal/cri/io/logger.go`, behind `NewCRILogger`):
//! * a line is buffered until its newline arrives; once more than
//!   `max_line_size` bytes of it are buffered, exactly `max_line_size` bytes
//!   are written as a `P` record (default 16 KiB, containerd's
//!   `max_container_log_line_size`);
//! * at end of stream a pending unterminated line is flushed as `P`.
//!
//! Two deliberate differences from containerd:
//! * `\r` before `\n` stays in the content (containerd strips it; CRI-O's
//!   conmon keeps it): the kubelet then returns the bytes the container wrote.
//! * The timestamp is always UTC with nine fractional digits
//!   (`2006-01-02T15:04:05.000000000Z`, the kubelet's `RFC3339NanoFixed`).
//!   containerd writes Go's `RFC3339Nano`, which trims trailing zeros; the
//!   kubelet parses both (`RFC3339NanoLenient`), and fixed width keeps every
//!   record the same shape for other log shippers.
//!
//! Both streams of a container go to one file. Each record is assembled in
//! memory and handed to a single `write(2)` on an `O_APPEND` descriptor, so
//! records of the two streams never interleave mid-line. The writer never
//! blocks on a full disk: `ENOSPC` comes back as an error, the record is
//! dropped and counted, and a torn record is cut off again so the next one
//! starts on a fresh line.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// containerd's default `max_container_log_line_size`.
pub const DEFAULT_MAX_LINE_SIZE: usize = 16 * 1024;

/// Mode of a new log file: containerd's `openLogFile` uses 0640.
const LOG_FILE_MODE: u32 = 0o640;

/// Which output stream of the container a chunk came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    /// The stream's name in the log format.
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }

    fn index(self) -> usize {
        match self {
            Stream::Stdout => 0,
            Stream::Stderr => 1,
        }
    }
}

/// The tag of a record (`runtimeapi.LogTagPartial` / `LogTagFull`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tag {
    Partial,
    Full,
}

impl Tag {
    pub fn as_str(self) -> &'static str {
        match self {
            Tag::Partial => "P",
            Tag::Full => "F",
        }
    }
}

/// Errors of the log writer. Write errors are meant to be logged and counted
/// by the caller, who keeps draining the container's output.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("open CRI log file {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("write CRI log file {path}: {source} ({dropped} record(s) dropped)")]
    Write {
        path: PathBuf,
        /// Records of this call that were not written.
        dropped: u64,
        #[source]
        source: io::Error,
    },
}

/// Counters since the writer was created.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogStats {
    /// Records written in full.
    pub records: u64,
    /// Bytes written (whole records, headers included).
    pub bytes: u64,
    /// Records lost to write errors.
    pub dropped_records: u64,
    /// Bytes of the records lost to write errors.
    pub dropped_bytes: u64,
}

/// Source of record timestamps; replaceable so tests get exact output.
pub type Clock = fn() -> SystemTime;

/// Writes the output of one container to its CRI log file.
#[derive(Debug)]
pub struct CriLogWriter {
    path: PathBuf,
    file: File,
    max_line_size: usize,
    /// Unterminated line of each stream (never longer than `max_line_size`).
    pending: [Vec<u8>; 2],
    /// Reused record buffer, so a record costs no allocation once warm.
    record: Vec<u8>,
    clock: Clock,
    stats: LogStats,
}

impl CriLogWriter {
    /// Opens (creates, appends to) the log file with the default line size.
    pub fn open(path: impl Into<PathBuf>) -> Result<Self, LogError> {
        Self::open_with_max_line_size(path, DEFAULT_MAX_LINE_SIZE)
    }

    /// Opens the log file; lines longer than `max_line_size` bytes are split
    /// into `P` records. 0 means the default: an unbounded line would let a
    /// container grow the monitor's memory without limit.
    pub fn open_with_max_line_size(
        path: impl Into<PathBuf>,
        max_line_size: usize,
    ) -> Result<Self, LogError> {
        let path = path.into();
        let file = open_log_file(&path)?;
        let max_line_size = if max_line_size == 0 {
            DEFAULT_MAX_LINE_SIZE
        } else {
            max_line_size
        };
        Ok(Self {
            path,
            file,
            max_line_size,
            pending: [Vec::new(), Vec::new()],
            record: Vec::with_capacity(256),
            clock: SystemTime::now,
            stats: LogStats::default(),
        })
    }

    /// Replaces the timestamp source (tests).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn max_line_size(&self) -> usize {
        self.max_line_size
    }

    pub fn stats(&self) -> LogStats {
        self.stats
    }

    /// Bytes of an unterminated line buffered for `stream`.
    pub fn pending_len(&self, stream: Stream) -> usize {
        self.pending[stream.index()].len()
    }

    /// Feeds a chunk read from `stream`. Complete lines are written at once;
    /// the tail without a newline waits for the next chunk (or `finish`).
    ///
    /// On a write error the rest of the chunk is still processed (like
    /// containerd, which keeps draining so the container never blocks on a
    /// full pipe); the first error is returned with the number of records of
    /// this call that were lost.
    pub fn write(&mut self, stream: Stream, mut data: &[u8]) -> Result<(), LogError> {
        let mut failure = Failure::default();
        while !data.is_empty() {
            match data.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    self.push(stream, &data[..i], &mut failure);
                    self.flush_line(stream, Tag::Full, &mut failure);
                    data = &data[i + 1..];
                }
                None => {
                    self.push(stream, data, &mut failure);
                    break;
                }
            }
        }
        failure.into_result(&self.path)
    }

    /// End of `stream` (the container closed it): a pending unterminated line
    /// is written as a `P` record, as containerd's `redirectLogs` does at EOF.
    pub fn finish(&mut self, stream: Stream) -> Result<(), LogError> {
        let mut failure = Failure::default();
        if !self.pending[stream.index()].is_empty() {
            self.flush_line(stream, Tag::Partial, &mut failure);
        }
        failure.into_result(&self.path)
    }

    /// Reopens the log path, for `ReopenContainerLog` after the kubelet
    /// renamed the file away. The old descriptor is kept if the new open
    /// fails, so no output is lost; pending partial lines go to the new file.
    pub fn reopen(&mut self) -> Result<(), LogError> {
        self.file = open_log_file(&self.path)?;
        Ok(())
    }

    /// Appends `bytes` to the pending line of `stream`, writing `P` records of
    /// exactly `max_line_size` bytes while the line is longer than that.
    fn push(&mut self, stream: Stream, mut bytes: &[u8], failure: &mut Failure) {
        let idx = stream.index();
        loop {
            let pending = self.pending[idx].len();
            if pending + bytes.len() <= self.max_line_size {
                self.pending[idx].extend_from_slice(bytes);
                return;
            }
            let take = self.max_line_size - pending;
            let (head, tail) = bytes.split_at(take);
            self.build_record(stream, Tag::Partial, head);
            self.pending[idx].clear();
            self.emit(failure);
            bytes = tail;
        }
    }

    /// Writes the pending line of `stream` as one record and clears it.
    fn flush_line(&mut self, stream: Stream, tag: Tag, failure: &mut Failure) {
        self.build_record(stream, tag, &[]);
        self.pending[stream.index()].clear();
        self.emit(failure);
    }

    /// Assembles `<ts> <stream> <tag> <pending><extra>\n` in `self.record`.
    fn build_record(&mut self, stream: Stream, tag: Tag, extra: &[u8]) {
        let now = (self.clock)();
        let rec = &mut self.record;
        rec.clear();
        format_timestamp(now, rec);
        rec.push(b' ');
        rec.extend_from_slice(stream.as_str().as_bytes());
        rec.push(b' ');
        rec.extend_from_slice(tag.as_str().as_bytes());
        rec.push(b' ');
        rec.extend_from_slice(&self.pending[stream.index()]);
        rec.extend_from_slice(extra);
        rec.push(b'\n');
    }

    fn emit(&mut self, failure: &mut Failure) {
        let len = self.record.len() as u64;
        match write_record(&mut self.file, &self.record) {
            Ok(()) => {
                self.stats.records += 1;
                self.stats.bytes += len;
            }
            Err(e) => {
                self.stats.dropped_records += 1;
                self.stats.dropped_bytes += len;
                failure.add(e);
            }
        }
    }
}

#[derive(Default)]
struct Failure {
    first: Option<io::Error>,
    dropped: u64,
}

impl Failure {
    fn add(&mut self, e: io::Error) {
        self.dropped += 1;
        if self.first.is_none() {
            self.first = Some(e);
        }
    }

    fn into_result(self, path: &Path) -> Result<(), LogError> {
        match self.first {
            None => Ok(()),
            Some(source) => Err(LogError::Write {
                path: path.to_path_buf(),
                dropped: self.dropped,
                source,
            }),
        }
    }
}

fn open_log_file(path: &Path) -> Result<File, LogError> {
    let open = || -> io::Result<File> {
        // containerd's openLogFile creates the parent directory too.
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        // The log dir is the kubelet's, reachable from pods with a hostPath
        // mount: a symlink planted at the log path must not make root append
        // container output to a host file, and a FIFO must not block the
        // monitor's single thread (O_NONBLOCK, then only regular files).
        let f = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(LOG_FILE_MODE)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(path)?;
        if !f.metadata()?.is_file() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a regular file",
            ));
        }
        Ok(f)
    };
    open().map_err(|source| LogError::Open {
        path: path.to_path_buf(),
        source,
    })
}

/// One `write(2)` per record in the normal case. A short write (a signal, a
/// nearly full disk) is continued so the record stays whole; if the write
/// then fails, the bytes already appended are cut off again so the next
/// record does not end up glued to a torn one.
fn write_record(file: &mut File, record: &[u8]) -> io::Result<()> {
    let mut written = 0;
    while written < record.len() {
        match file.write(&record[written..]) {
            Ok(0) => {
                let e = io::Error::new(io::ErrorKind::WriteZero, "log file accepted no bytes");
                cut_torn(file, written);
                return Err(e);
            }
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                cut_torn(file, written);
                return Err(e);
            }
        }
    }
    Ok(())
}

fn cut_torn(file: &File, written: usize) {
    if written == 0 {
        return;
    }
    // We are the only writer of the file, so its end is our torn record.
    if let Ok(meta) = file.metadata() {
        let _ = file.set_len(meta.len().saturating_sub(written as u64));
    }
}

/// Formats `t` as `YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ` (UTC) onto `out`.
pub fn format_timestamp(t: SystemTime, out: &mut Vec<u8>) {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (year, month, day) = civil_from_days((secs / 86_400) as i64);
    let sod = secs % 86_400;
    // Writing to a Vec cannot fail.
    let _ = write!(
        out,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z",
        sod / 3600,
        sod / 60 % 60,
        sod % 60,
        d.subsec_nanos()
    );
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian
/// calendar (Howard Hinnant's `civil_from_days`); avoids a date library in a
/// process whose memory is a headline figure.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const TS: &str = "2024-02-29T23:59:58.000000042Z";

    fn fixed_clock() -> SystemTime {
        // 2024-02-29T23:59:58Z + 42ns
        UNIX_EPOCH + Duration::new(1_709_251_198, 42)
    }

    fn writer(dir: &tempfile::TempDir, max: usize) -> CriLogWriter {
        CriLogWriter::open_with_max_line_size(dir.path().join("c/0.log"), max)
            .unwrap()
            .with_clock(fixed_clock)
    }

    fn read(w: &CriLogWriter) -> String {
        String::from_utf8(std::fs::read(w.path()).unwrap()).unwrap()
    }

    fn rec(stream: &str, tag: &str, content: &str) -> String {
        format!("{TS} {stream} {tag} {content}\n")
    }

    /// A parsed record, mirroring the kubelet's `parseCRILog`.
    #[derive(Debug, PartialEq)]
    struct Parsed {
        stream: String,
        partial: bool,
        /// Content as the kubelet returns it: with `\n` for `F`, without for `P`.
        log: Vec<u8>,
    }

    /// Parses a log file the way the kubelet's `ReadLogs` + `parseCRILog` do:
    /// split after each `\n`; timestamp (RFC3339Nano, lenient), stream (must
    /// be stdout/stderr), tag (first `:`-separated field), then the rest; a
    /// `P` record loses its trailing `\n`.
    fn kubelet_parse(data: &[u8]) -> Vec<Parsed> {
        let mut out = Vec::new();
        for line in data.split_inclusive(|&b| b == b'\n') {
            assert_eq!(line.last(), Some(&b'\n'), "unterminated record");
            let sp = line.iter().position(|&b| b == b' ').expect("timestamp");
            let ts = std::str::from_utf8(&line[..sp]).unwrap();
            chrono::DateTime::parse_from_rfc3339(ts).expect("RFC3339Nano timestamp");
            let rest = &line[sp + 1..];
            let sp = rest.iter().position(|&b| b == b' ').expect("stream");
            let stream = std::str::from_utf8(&rest[..sp]).unwrap().to_string();
            assert!(stream == "stdout" || stream == "stderr", "stream {stream}");
            let rest = &rest[sp + 1..];
            let sp = rest.iter().position(|&b| b == b' ').expect("tag");
            let tags = std::str::from_utf8(&rest[..sp]).unwrap();
            let partial = tags.split(':').next() == Some("P");
            let mut log = rest[sp + 1..].to_vec();
            if partial {
                log.pop();
            }
            out.push(Parsed {
                stream,
                partial,
                log,
            });
        }
        out
    }

    /// What `kubectl logs` shows for one stream: the records glued together.
    fn reassemble(records: &[Parsed], stream: &str) -> Vec<u8> {
        records
            .iter()
            .filter(|r| r.stream == stream)
            .flat_map(|r| r.log.clone())
            .collect()
    }

    #[test]
    fn timestamp_format_matches_rfc3339nano_fixed() {
        let mut out = Vec::new();
        format_timestamp(fixed_clock(), &mut out);
        assert_eq!(String::from_utf8(out).unwrap(), TS);
        for secs in [
            0u64,
            951_782_400,
            4_102_444_799,
            1_234_567_890,
            253_402_300_799,
        ] {
            let t = UNIX_EPOCH + Duration::new(secs, 123_456_789);
            let mut out = Vec::new();
            format_timestamp(t, &mut out);
            let expect = chrono::DateTime::<chrono::Utc>::from(t)
                .format("%Y-%m-%dT%H:%M:%S%.9fZ")
                .to_string();
            assert_eq!(String::from_utf8(out).unwrap(), expect);
        }
    }

    #[test]
    fn one_full_line() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = writer(&dir, 16);
        w.write(Stream::Stdout, b"hello\n").unwrap();
        assert_eq!(read(&w), rec("stdout", "F", "hello"));
    }

    #[test]
    fn line_split_across_chunks_is_one_record() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = writer(&dir, 1024);
        w.write(Stream::Stdout, b"hel").unwrap();
        assert_eq!(read(&w), "", "nothing written before the newline");
        assert_eq!(w.pending_len(Stream::Stdout), 3);
        w.write(Stream::Stdout, b"lo wor").unwrap();
        w.write(Stream::Stdout, b"ld\nnext").unwrap();
        assert_eq!(read(&w), rec("stdout", "F", "hello world"));
        assert_eq!(w.pending_len(Stream::Stdout), 4);
    }

    #[test]
    fn many_lines_in_one_chunk() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = writer(&dir, 1024);
        w.write(Stream::Stdout, b"a\nbb\n\nccc\n").unwrap();
        let expect = [
            rec("stdout", "F", "a"),
            rec("stdout", "F", "bb"),
            rec("stdout", "F", ""),
            rec("stdout", "F", "ccc"),
        ]
        .concat();
        assert_eq!(read(&w), expect);
        assert_eq!(w.stats().records, 4);
        assert_eq!(w.stats().bytes, expect.len() as u64);
    }

    #[test]
    fn every_chunking_gives_the_same_file() {
        let input = b"first line\nsecond, a bit longer line\n\nx\nlast without newline";
        let reference = {
            let dir = tempfile::tempdir().unwrap();
            let mut w = writer(&dir, 8);
            w.write(Stream::Stdout, input).unwrap();
            w.finish(Stream::Stdout).unwrap();
            read(&w)
        };
        for chunk in [1, 2, 3, 5, 7, 8, 9, 13, 64] {
            let dir = tempfile::tempdir().unwrap();
            let mut w = writer(&dir, 8);
            for c in input.chunks(chunk) {
                w.write(Stream::Stdout, c).unwrap();
            }
            w.finish(Stream::Stdout).unwrap();
            assert_eq!(read(&w), reference, "chunk size {chunk}");
        }
        let parsed = kubelet_parse(reference.as_bytes());
        assert_eq!(reassemble(&parsed, "stdout"), input.to_vec());
    }

    #[test]
    fn long_line_40k_is_p_p_f() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = CriLogWriter::open(dir.path().join("0.log"))
            .unwrap()
            .with_clock(fixed_clock);
        assert_eq!(w.max_line_size(), 16 * 1024);
        let line: Vec<u8> = (0..40 * 1024).map(|i| b'a' + (i % 26) as u8).collect();
        // Arrives in pipe-sized pieces, newline in the last one.
        let mut input = line.clone();
        input.push(b'\n');
        for c in input.chunks(4096) {
            w.write(Stream::Stdout, c).unwrap();
        }
        let data = std::fs::read(w.path()).unwrap();
        let parsed = kubelet_parse(&data);
        let shape: Vec<(bool, usize)> = parsed.iter().map(|p| (p.partial, p.log.len())).collect();
        assert_eq!(
            shape,
            vec![(true, 16384), (true, 16384), (false, 8192 + 1)],
            "P 16 KiB, P 16 KiB, F 8 KiB (+ the newline the kubelet keeps)"
        );
        let mut expect = line;
        expect.push(b'\n');
        assert_eq!(reassemble(&parsed, "stdout"), expect);
    }

    #[test]
    fn split_boundaries_like_containerd() {
        // containerd splits only when the buffered line is *longer* than the
        // limit: exactly max bytes + newline is one F record.
        let dir = tempfile::tempdir().unwrap();
        let mut w = writer(&dir, 4);
        w.write(Stream::Stdout, b"abcd\n").unwrap();
        w.write(Stream::Stdout, b"abcde\n").unwrap();
        w.write(Stream::Stdout, b"abcdefgh\n").unwrap();
        w.write(Stream::Stdout, b"abcdefghi").unwrap();
        w.finish(Stream::Stdout).unwrap();
        let expect = [
            rec("stdout", "F", "abcd"),
            rec("stdout", "P", "abcd"),
            rec("stdout", "F", "e"),
            rec("stdout", "P", "abcd"),
            rec("stdout", "F", "efgh"),
            rec("stdout", "P", "abcd"),
            rec("stdout", "P", "efgh"),
            rec("stdout", "P", "i"),
        ]
        .concat();
        assert_eq!(read(&w), expect);
    }

    #[test]
    fn eof_flushes_partial_as_p_and_only_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = writer(&dir, 1024);
        w.write(Stream::Stderr, b"done\nprompt> ").unwrap();
        w.finish(Stream::Stderr).unwrap();
        w.finish(Stream::Stderr).unwrap();
        w.finish(Stream::Stdout).unwrap();
        assert_eq!(
            read(&w),
            [rec("stderr", "F", "done"), rec("stderr", "P", "prompt> ")].concat()
        );
    }

    #[test]
    fn both_streams_keep_separate_partial_lines() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = writer(&dir, 1024);
        w.write(Stream::Stdout, b"out-").unwrap();
        w.write(Stream::Stderr, b"err-").unwrap();
        w.write(Stream::Stdout, b"1\n").unwrap();
        w.write(Stream::Stderr, b"1\nerr-2\n").unwrap();
        w.write(Stream::Stdout, b"out-2\n").unwrap();
        let expect = [
            rec("stdout", "F", "out-1"),
            rec("stderr", "F", "err-1"),
            rec("stderr", "F", "err-2"),
            rec("stdout", "F", "out-2"),
        ]
        .concat();
        assert_eq!(read(&w), expect);
        let parsed = kubelet_parse(expect.as_bytes());
        assert_eq!(reassemble(&parsed, "stdout"), b"out-1\nout-2\n");
        assert_eq!(reassemble(&parsed, "stderr"), b"err-1\nerr-2\n");
    }

    #[test]
    fn crlf_and_odd_bytes_are_content() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = writer(&dir, 1024);
        let input = b"dos line\r\n\ttab  spaces \x1b[31mred\x1b[0m\n\r\n";
        w.write(Stream::Stdout, input).unwrap();
        let data = std::fs::read(w.path()).unwrap();
        assert!(data.starts_with(format!("{TS} stdout F dos line\r\n").as_bytes()));
        let parsed = kubelet_parse(&data);
        assert_eq!(parsed.len(), 3);
        assert_eq!(reassemble(&parsed, "stdout"), input.to_vec());
    }

    #[test]
    fn binary_and_non_utf8_survive() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = writer(&dir, 5);
        let input: Vec<u8> = (0u8..=255).filter(|&b| b != b'\n').chain([b'\n']).collect();
        w.write(Stream::Stdout, &input).unwrap();
        let parsed = kubelet_parse(&std::fs::read(w.path()).unwrap());
        assert!(
            parsed
                .iter()
                .rev()
                .skip(1)
                .all(|p| p.partial && p.log.len() == 5)
        );
        assert_eq!(reassemble(&parsed, "stdout"), input);
    }

    #[test]
    fn reopen_after_rename_writes_to_new_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = writer(&dir, 1024);
        w.write(Stream::Stdout, b"before\nhalf").unwrap();
        // The kubelet's rotation: rename, then ReopenContainerLog.
        let rotated = dir.path().join("c/0.log.20240229-235958");
        std::fs::rename(w.path(), &rotated).unwrap();
        w.write(Stream::Stdout, b"-way\n").unwrap();
        w.reopen().unwrap();
        w.write(Stream::Stdout, b"after\n").unwrap();
        assert_eq!(
            std::fs::read_to_string(&rotated).unwrap(),
            [rec("stdout", "F", "before"), rec("stdout", "F", "half-way")].concat(),
            "writes before the reopen still go to the renamed file"
        );
        assert_eq!(read(&w), rec("stdout", "F", "after"));
    }

    #[test]
    fn reopen_keeps_pending_partial_line() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = writer(&dir, 1024);
        w.write(Stream::Stdout, b"start-").unwrap();
        std::fs::rename(w.path(), dir.path().join("old.log")).unwrap();
        w.reopen().unwrap();
        w.write(Stream::Stdout, b"end\n").unwrap();
        assert_eq!(read(&w), rec("stdout", "F", "start-end"));
    }

    #[test]
    fn failed_reopen_keeps_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = writer(&dir, 1024);
        let path = w.path().to_path_buf();
        std::fs::remove_file(&path).unwrap();
        // A directory where the log file should be: open fails.
        std::fs::create_dir(&path).unwrap();
        let err = w.reopen().unwrap_err();
        assert!(matches!(err, LogError::Open { .. }), "{err}");
        assert!(err.to_string().contains("0.log"), "{err}");
        w.write(Stream::Stdout, b"still written\n").unwrap();
        assert_eq!(w.stats().records, 1);
    }

    #[test]
    fn creates_parent_dir_and_appends() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pod/ctr/1.log");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, "existing\n").unwrap();
        let mut w = CriLogWriter::open(&path).unwrap().with_clock(fixed_clock);
        w.write(Stream::Stdout, b"x\n").unwrap();
        assert_eq!(read(&w), format!("existing\n{}", rec("stdout", "F", "x")));
        use std::os::unix::fs::PermissionsExt;
        let fresh = CriLogWriter::open(dir.path().join("new/2.log")).unwrap();
        let mode = std::fs::metadata(fresh.path())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o137, 0, "0640 (less the umask): {mode:o}");
    }

    /// A symlink planted at the log path is not followed (no appending to a
    /// host file as root); a FIFO or a device is refused at once instead of
    /// blocking the monitor or writing to it.
    #[test]
    fn hostile_log_paths_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"host file\n").unwrap();
        let link = dir.path().join("link.log");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        assert!(CriLogWriter::open(&link).is_err());
        assert_eq!(std::fs::read(&victim).unwrap(), b"host file\n");

        let fifo = dir.path().join("fifo.log");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let Err(e) = CriLogWriter::open(&fifo) else {
            panic!("a FIFO is refused")
        };
        assert!(e.to_string().contains("fifo.log"), "{e}");
        assert!(CriLogWriter::open("/dev/null").is_err());
    }

    #[test]
    fn disk_full_returns_error_and_counts_drops() {
        // A full 4 KiB tmpfs (root: mount) fails every write with ENOSPC, at
        // once: the writer must report it, count the records and go on
        // draining.
        let dir = tempfile::tempdir().unwrap();
        nix::mount::mount(
            Some("tmpfs"),
            dir.path(),
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            Some("size=4k"),
        )
        .unwrap();
        struct Unmount<'a>(&'a Path);
        impl Drop for Unmount<'_> {
            fn drop(&mut self) {
                let _ = nix::mount::umount2(self.0, nix::mount::MntFlags::MNT_DETACH);
            }
        }
        let _unmount = Unmount(dir.path());
        let full = dir.path().join("full.log");
        let mut filler = std::fs::File::create(dir.path().join("filler")).unwrap();
        while std::io::Write::write_all(&mut filler, &[0u8; 512]).is_ok() {}
        let mut w = CriLogWriter::open(&full).unwrap().with_clock(fixed_clock);
        let err = w.write(Stream::Stdout, b"a\nb\npartial").unwrap_err();
        match &err {
            LogError::Write {
                dropped, source, ..
            } => {
                assert_eq!(*dropped, 2);
                assert_eq!(source.raw_os_error(), Some(libc_enospc()));
            }
            other => panic!("unexpected {other}"),
        }
        assert!(err.to_string().contains("full.log"), "{err}");
        let stats = w.stats();
        assert_eq!((stats.records, stats.dropped_records), (0, 2));
        assert_eq!(
            w.pending_len(Stream::Stdout),
            7,
            "the tail is still buffered"
        );
    }

    fn libc_enospc() -> i32 {
        28
    }

    #[test]
    fn torn_record_is_cut_off() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.log");
        std::fs::write(&path, b"complete\npartial-rec").unwrap();
        let f = OpenOptions::new().append(true).open(&path).unwrap();
        cut_torn(&f, "partial-rec".len());
        assert_eq!(std::fs::read(&path).unwrap(), b"complete\n");
    }
}
