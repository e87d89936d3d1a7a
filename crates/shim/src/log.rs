//! libcontainer's own log events in the monitor's `monitor.log`.
//!
//! libcontainer explains most failures only through `tracing` events
//! ("failed to drop capabilities", "failed to chdir", ...), often in the
//! container's intermediate or init process, while the error it returns
//! says little more than "failed syscall". [`install`] routes events at WARN
//! and above to `monitor.log`; [`Mark`] finds the ones a failed call wrote,
//! so the monitor can hand the explanation back to berthd.
//!
//! No background thread, no buffering, no lock: each event is formatted in
//! memory and written with one `write(2)` on an `O_APPEND` descriptor of its
//! own (close-on-exec). So lines from the monitor and from libcontainer's
//! forked children (which inherit the descriptor until they exec) never
//! interleave, and a child cloned while the monitor formats an event finds
//! no lock held (the monitor is single-threaded; see docs/architecture.md). The
//! descriptor is not the monitor's stderr, which libcontainer's init dup2s
//! onto the container's own stderr before most of its work.

use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use tracing::field::{Field, Visit};
use tracing::level_filters::LevelFilter;
use tracing::span::{Attributes, Id, Record};
use tracing::subscriber::Interest;
use tracing::{Event, Level, Metadata, Subscriber};

/// The most verbose level written.
const MAX_LEVEL: Level = Level::WARN;
/// A longer event is cut (one write per event, a bounded line).
const MAX_LINE: usize = 4096;
/// Most that [`Mark::errors`] reads back.
const MAX_READ_BACK: u64 = 64 * 1024;

/// Targets whose warnings are noise: libcgroups lists every cgroup
/// controller the host lacks (or it does not know) at each container
/// create and delete. Their errors are still written.
const QUIET_WARNINGS: &[&str] = &["libcgroups::v1::manager", "libcgroups::v2::util"];

/// Whether an event (spans: never) is written. Decided once per callsite.
fn wanted(is_event: bool, level: Level, target: &str) -> bool {
    is_event && (level == Level::ERROR || (level <= MAX_LEVEL && !QUIET_WARNINGS.contains(&target)))
}

/// Writes WARN-and-above events as lines to one file.
struct FileSubscriber {
    fd: OwnedFd,
}

/// Installs the subscriber for the whole process, appending to `log`.
/// Errors (the file cannot be opened, a subscriber is already set) leave
/// the process without one: libcontainer's events are then dropped, as
/// before.
pub fn install(log: &Path) -> std::io::Result<()> {
    let sub = FileSubscriber::open(log)?;
    tracing::subscriber::set_global_default(sub).map_err(std::io::Error::other)
}

impl FileSubscriber {
    fn open(log: &Path) -> std::io::Result<FileSubscriber> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(log)?;
        Ok(FileSubscriber {
            fd: OwnedFd::from(file),
        })
    }
}

impl Subscriber for FileSubscriber {
    fn register_callsite(&self, meta: &'static Metadata<'static>) -> Interest {
        if self.enabled(meta) {
            Interest::always()
        } else {
            Interest::never()
        }
    }

    fn enabled(&self, meta: &Metadata<'_>) -> bool {
        wanted(meta.is_event(), *meta.level(), meta.target())
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(LevelFilter::from_level(MAX_LEVEL))
    }

    // Spans are never enabled (see `enabled`); these only satisfy the trait.
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }

    fn record(&self, _: &Id, _: &Record<'_>) {}

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let line = format_event(
            SystemTime::now(),
            std::process::id(),
            event.metadata(),
            |v| event.record(v),
        );
        // One write: O_APPEND keeps it whole. A failure has nowhere to go.
        let _ = nix::unistd::write(&self.fd, line.as_bytes());
    }

    fn enter(&self, _: &Id) {}

    fn exit(&self, _: &Id) {}
}

/// `<RFC 3339 UTC> <LEVEL> [<pid>] <target>: <message> <field>=<value>...\n`
fn format_event(
    now: SystemTime,
    pid: u32,
    meta: &Metadata<'_>,
    record: impl FnOnce(&mut dyn Visit),
) -> String {
    let mut ts = Vec::with_capacity(32);
    crate::cri_log::format_timestamp(now, &mut ts);
    let mut line = String::with_capacity(256);
    line.push_str(&String::from_utf8_lossy(&ts));
    let _ = write!(line, " {} [{pid}] {}:", meta.level(), meta.target());
    let mut v = LineVisitor {
        message: String::new(),
        fields: String::new(),
    };
    record(&mut v);
    if !v.message.is_empty() {
        line.push(' ');
        line.push_str(&v.message);
    }
    line.push_str(&v.fields);
    // One line per event, bounded.
    let mut line = line.replace('\n', " ");
    if line.len() > MAX_LINE {
        let mut cut = MAX_LINE;
        while !line.is_char_boundary(cut) {
            cut -= 1;
        }
        line.truncate(cut);
    }
    line.push('\n');
    line
}

struct LineVisitor {
    message: String,
    fields: String,
}

impl Visit for LineVisitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.fields, " {}={value:?}", field.name());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.fields, " {}={value:?}", field.name());
        }
    }
}

/// A position in the log before a libcontainer call, to find what that
/// call (and the processes it forked) logged.
pub struct Mark {
    path: PathBuf,
    offset: u64,
}

impl Mark {
    /// The current end of `log` (0 when it does not exist yet).
    pub fn at_end(log: &Path) -> Mark {
        Mark {
            path: log.to_path_buf(),
            offset: std::fs::metadata(log).map_or(0, |m| m.len()),
        }
    }

    /// The ERROR events written since the mark, oldest first, each as
    /// `<target>: <message> <fields>` (timestamp, level and pid dropped).
    /// Read only after a failure: the monitor is the log's only writer
    /// then, as every child it forked for the call has exited.
    pub fn errors(&self) -> Vec<String> {
        let mut text = String::new();
        let read = File::open(&self.path).and_then(|mut f| {
            f.seek(SeekFrom::Start(self.offset))?;
            f.take(MAX_READ_BACK).read_to_string(&mut text)
        });
        if read.is_err() {
            return Vec::new();
        }
        text.lines().filter_map(error_of_line).collect()
    }
}

/// `<target>: <message...>` of an ERROR line written by [`format_event`].
fn error_of_line(line: &str) -> Option<String> {
    let mut parts = line.splitn(4, ' ');
    let (_ts, level, _pid, rest) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    (level == "ERROR").then(|| rest.to_string())
}

/// What a failed libcontainer call reports to berthd: the first ERROR its
/// log events explained it with (the deepest cause: libcontainer logs where
/// a step fails, then each caller logs its own, vaguer, summary), or `None`.
pub fn explanation(mark: &Mark) -> Option<String> {
    mark.errors().into_iter().next()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logged(log: &Path, f: impl FnOnce()) {
        let sub = FileSubscriber::open(log).unwrap();
        tracing::subscriber::with_default(sub, f);
    }

    #[test]
    fn warn_and_above_one_line_each() {
        let d = tempfile::tempdir().unwrap();
        let log = d.path().join("monitor.log");
        logged(&log, || {
            tracing::debug!("not written");
            tracing::info!("not written either");
            tracing::warn!(n = 3, "a warning");
            let err = std::io::Error::from_raw_os_error(libc::ENOTDIR);
            tracing::error!(?err, "failed to chdir");
            tracing::error!("two\nlines {}", "x".repeat(2 * MAX_LINE));
        });
        let text = std::fs::read_to_string(&log).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        let pid = std::process::id();
        let (ts, rest) = lines[0].split_once(' ').unwrap();
        assert!(ts.ends_with('Z') && ts.len() == 30, "{ts}");
        assert_eq!(
            rest,
            format!("WARN [{pid}] berth_shim::log::tests: a warning n=3")
        );
        assert!(
            lines[1].ends_with(&format!(
                "ERROR [{pid}] berth_shim::log::tests: failed to chdir err=Os {{ code: 20, kind: NotADirectory, message: \"Not a directory\" }}"
            )),
            "{}",
            lines[1]
        );
        assert!(lines[2].contains("two lines xxx"), "{}", lines[2]);
        assert!(lines[2].len() <= MAX_LINE, "{}", lines[2].len());
    }

    #[test]
    fn filter() {
        let t = "libcontainer::rootfs";
        assert!(wanted(true, Level::ERROR, t));
        assert!(wanted(true, Level::WARN, t));
        assert!(!wanted(true, Level::INFO, t));
        assert!(!wanted(true, Level::DEBUG, t));
        assert!(!wanted(false, Level::ERROR, t));
        assert!(!wanted(true, Level::WARN, "libcgroups::v1::manager"));
        assert!(wanted(true, Level::ERROR, "libcgroups::v1::manager"));
    }

    #[test]
    fn errors_since_the_mark() {
        let d = tempfile::tempdir().unwrap();
        let log = d.path().join("monitor.log");
        logged(&log, || tracing::error!("an old failure"));
        let mark = Mark::at_end(&log);
        std::fs::OpenOptions::new()
            .append(true)
            .open(&log)
            .and_then(|mut f| {
                std::io::Write::write_all(&mut f, b"berth-monitor p: an eprintln line\n")
            })
            .unwrap();
        logged(&log, || {
            tracing::warn!("a warning");
            tracing::error!(err = "ENOTDIR", "failed to chdir");
            tracing::error!("failed to initialize container process");
        });
        assert_eq!(
            mark.errors(),
            vec![
                "berth_shim::log::tests: failed to chdir err=\"ENOTDIR\"".to_string(),
                "berth_shim::log::tests: failed to initialize container process".to_string(),
            ]
        );
        assert_eq!(
            explanation(&mark).as_deref(),
            Some("berth_shim::log::tests: failed to chdir err=\"ENOTDIR\"")
        );
        // No log at all: nothing, no error.
        assert!(Mark::at_end(&d.path().join("none")).errors().is_empty());
    }
}
