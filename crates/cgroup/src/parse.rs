//! Parsers for the text formats of cgroup files. Pure functions
//! over file contents, so the unit tests feed them samples.

use std::collections::HashMap;

/// A file holding one number (`memory.current`, `pids.current`, ...).
/// `max` (cgroup v2's "no limit") is `None`, as is anything unparsable.
pub fn single(text: &str) -> Option<u64> {
    let t = text.trim();
    if t == "max" {
        return None;
    }
    t.parse().ok()
}

/// A limit file: `None` when unlimited (`max` on v2, a huge page-rounded
/// value on v1; as containerd and cAdvisor, anything above 2^62 is "none").
pub fn limit(text: &str) -> Option<u64> {
    single(text).filter(|&v| v <= 1 << 62)
}

/// A flat keyed file (`memory.stat`, `cpu.stat`, `memory.events`,
/// `cpuacct.stat`, `memory.oom_control`): `key value` per line.
pub fn flat_keyed(text: &str) -> HashMap<&str, u64> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let k = f.next()?;
            let v = f.next()?.parse().ok()?;
            Some((k, v))
        })
        .collect()
}

/// One line of a PSI file (`some avg10=0.00 avg60=0.00 avg300=0.00 total=0`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PsiLine {
    pub avg10: f64,
    pub avg60: f64,
    pub avg300: f64,
    /// Microseconds stalled, cumulative (as the kernel reports it).
    pub total_us: u64,
}

/// A PSI file (`cpu.pressure`, `memory.pressure`, `io.pressure`): the
/// `some` and `full` lines (older kernels have no `full` line for cpu).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Psi {
    pub some: Option<PsiLine>,
    pub full: Option<PsiLine>,
}

pub fn psi(text: &str) -> Psi {
    let mut out = Psi::default();
    for l in text.lines() {
        let mut f = l.split_whitespace();
        let slot = match f.next() {
            Some("some") => &mut out.some,
            Some("full") => &mut out.full,
            _ => continue,
        };
        let mut line = PsiLine::default();
        for kv in f {
            let Some((k, v)) = kv.split_once('=') else {
                continue;
            };
            match k {
                "avg10" => line.avg10 = v.parse().unwrap_or(0.0),
                "avg60" => line.avg60 = v.parse().unwrap_or(0.0),
                "avg300" => line.avg300 = v.parse().unwrap_or(0.0),
                "total" => line.total_us = v.parse().unwrap_or(0),
                _ => {}
            }
        }
        *slot = Some(line);
    }
    out
}

/// The first pid of a `cgroup.procs` file.
pub fn first_pid(text: &str) -> Option<i32> {
    text.lines().find_map(|l| l.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_values_and_limits() {
        assert_eq!(single("12345\n"), Some(12345));
        assert_eq!(single("max\n"), None);
        assert_eq!(single(""), None);
        assert_eq!(limit("max\n"), None);
        // cgroup v1 "unlimited": LONG_MAX rounded down to a page.
        assert_eq!(limit("9223372036854771712\n"), None);
        assert_eq!(limit("104857600\n"), Some(104857600));
    }

    #[test]
    fn flat_keyed_reads_pairs_and_skips_junk() {
        let m = flat_keyed("cache 4096\nrss 8192\ntotal_inactive_file 100\nbogus\nx y\n");
        assert_eq!(m["cache"], 4096);
        assert_eq!(m["rss"], 8192);
        assert_eq!(m["total_inactive_file"], 100);
        assert_eq!(m.len(), 3);
        let oom = flat_keyed("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n");
        assert_eq!(oom["oom_kill"], 2);
    }

    #[test]
    fn psi_some_and_full() {
        let p = psi("some avg10=1.50 avg60=0.25 avg300=0.00 total=123456\n\
                     full avg10=0.00 avg60=0.00 avg300=0.00 total=42\n");
        let some = p.some.unwrap();
        assert_eq!((some.avg10, some.avg60, some.total_us), (1.5, 0.25, 123456));
        assert_eq!(p.full.unwrap().total_us, 42);
        let only_some = psi("some avg10=0.00 avg60=0.00 avg300=0.00 total=7\n");
        assert!(only_some.full.is_none());
        assert_eq!(only_some.some.unwrap().total_us, 7);
    }

    #[test]
    fn first_pid_of_procs() {
        assert_eq!(first_pid("4242\n4243\n"), Some(4242));
        assert_eq!(first_pid(""), None);
    }
}
