//! Parsers for the text formats of cgroup files. Pure functions
//! over file contents, so the unit tests feed them samples.

use crate::stats::IoDevice;

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
pub fn flat_keyed(text: &str) -> FlatKeyed<'_> {
    // Sized once: growing by doubling costs reallocations.
    let mut pairs = Vec::with_capacity(text.bytes().filter(|&b| b == b'\n').count() + 1);
    pairs.extend(text.lines().filter_map(|l| {
        let mut f = l.split_whitespace();
        let k = f.next()?;
        let v = f.next()?.parse().ok()?;
        Some((k, v))
    }));
    FlatKeyed(pairs)
}

/// The pairs of a flat keyed file, in its order. A few lookups in a few
/// dozen short keys: a scan beats hashing them all (a `HashMap` of v1's
/// `memory.stat` was a tenth of a metrics reading, with its allocation).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlatKeyed<'a>(Vec<(&'a str, u64)>);

impl FlatKeyed<'_> {
    /// The value of `key` (the last, should a file repeat one).
    pub fn get(&self, key: &str) -> Option<&u64> {
        self.0.iter().rev().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    /// The value of `total_<key>`, else of `key` (v1 `memory.stat`'s
    /// hierarchical figure, else the local one).
    pub fn total_or_local(&self, key: &str) -> Option<u64> {
        let total = self
            .0
            .iter()
            .rev()
            .find(|(k, _)| k.strip_prefix("total_") == Some(key));
        total.map(|(_, v)| *v).or_else(|| self.get(key).copied())
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.0.len()
    }
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

/// Every pid of a `cgroup.procs` file.
pub fn pids(text: &str) -> Vec<i32> {
    text.lines().filter_map(|l| l.trim().parse().ok()).collect()
}

/// `pids.max`: `Some(None)` for `max`, `None` when unparsable.
pub fn max_or_value(text: &str) -> Option<Option<u64>> {
    match text.trim() {
        "max" => Some(None),
        t => t.parse().ok().map(Some),
    }
}

/// `MAJ:MIN` of a block device.
fn device(text: &str) -> Option<(u64, u64)> {
    let (maj, min) = text.split_once(':')?;
    Some((maj.parse().ok()?, min.parse().ok()?))
}

/// The entry of `(major, minor)` in `devs`, added if new (files list a
/// device's lines together, so the search is short).
fn device_entry(devs: &mut Vec<IoDevice>, (major, minor): (u64, u64)) -> &mut IoDevice {
    let i = match devs
        .iter()
        .rposition(|d| (d.major, d.minor) == (major, minor))
    {
        Some(i) => i,
        None => {
            devs.push(IoDevice {
                major,
                minor,
                ..Default::default()
            });
            devs.len() - 1
        }
    };
    &mut devs[i]
}

/// cgroup v1 `blkio.throttle.io_service_bytes` and `io_serviced`: `MAJ:MIN
/// Op value` lines (and a device-less `Total` line, left out).
pub fn blkio_v1(service_bytes: Option<&str>, serviced: Option<&str>) -> Vec<IoDevice> {
    let mut devs = Vec::new();
    for (text, bytes) in [(service_bytes, true), (serviced, false)] {
        for l in text.unwrap_or_default().lines() {
            let mut f = l.split_whitespace();
            let (Some(dev), Some(op), Some(v), None) = (f.next(), f.next(), f.next(), f.next())
            else {
                continue;
            };
            let (Some(dev), Ok(v)) = (device(dev), v.parse()) else {
                continue;
            };
            let d = device_entry(&mut devs, dev);
            let ops = if bytes { &mut d.bytes } else { &mut d.ios };
            ops.push((op.to_string(), v));
        }
    }
    devs
}

/// cgroup v2 `io.stat`: `MAJ:MIN rbytes=.. wbytes=.. rios=.. wios=.. dbytes=..
/// dios=..` per device; the operations named as v1 names them.
pub fn io_stat_v2(text: &str) -> Vec<IoDevice> {
    let mut devs = Vec::new();
    for l in text.lines() {
        let mut f = l.split_whitespace();
        let Some(dev) = f.next().and_then(device) else {
            continue;
        };
        let d = device_entry(&mut devs, dev);
        for kv in f {
            let Some((k, Ok(v))) = kv.split_once('=').map(|(k, v)| (k, v.parse::<u64>())) else {
                continue;
            };
            let (bytes, op) = match k {
                "rbytes" => (true, "Read"),
                "wbytes" => (true, "Write"),
                "dbytes" => (true, "Discard"),
                "rios" => (false, "Read"),
                "wios" => (false, "Write"),
                "dios" => (false, "Discard"),
                _ => continue,
            };
            let ops = if bytes { &mut d.bytes } else { &mut d.ios };
            ops.push((op.to_string(), v));
        }
    }
    devs
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
        assert_eq!(m.get("cache"), Some(&4096));
        assert_eq!(m.get("rss"), Some(&8192));
        assert_eq!(m.get("total_inactive_file"), Some(&100));
        assert_eq!(m.get("bogus"), None);
        assert_eq!(m.len(), 3);
        assert_eq!(m.total_or_local("inactive_file"), Some(100));
        assert_eq!(m.total_or_local("rss"), Some(8192));
        assert_eq!(m.total_or_local("swap"), None);
        let oom = flat_keyed("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n");
        assert_eq!(oom.get("oom_kill"), Some(&2));
        // A repeated key: the last, as a map built from the lines holds.
        assert_eq!(flat_keyed("a 1\na 2\n").get("a"), Some(&2));
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
        assert_eq!(pids("4242\n4243\nx\n"), vec![4242, 4243]);
        assert!(pids("").is_empty());
    }

    #[test]
    fn pids_max_values() {
        assert_eq!(max_or_value("max\n"), Some(None));
        assert_eq!(max_or_value("4096\n"), Some(Some(4096)));
        assert_eq!(max_or_value(""), None);
        assert_eq!(max_or_value("-1"), None);
    }

    #[test]
    fn blkio_v1_per_device_and_operation() {
        let bytes = "8:0 Read 4096\n8:0 Write 8192\n8:0 Sync 0\n8:0 Async 12288\n\
                     8:0 Discard 0\n8:0 Total 12288\n254:0 Read 512\n254:0 Write 0\n\
                     254:0 Total 512\nTotal 12800\n";
        let serviced = "8:0 Read 1\n8:0 Write 2\n8:0 Total 3\nbogus line here x\nTotal 3\n";
        let d = blkio_v1(Some(bytes), Some(serviced));
        assert_eq!(d.len(), 2);
        assert_eq!((d[0].major, d[0].minor), (8, 0));
        assert_eq!(d[0].bytes.len(), 6);
        assert_eq!(d[0].bytes_of("Read"), Some(4096));
        assert_eq!(d[0].bytes_of("Write"), Some(8192));
        assert_eq!(
            (d[0].ios_of("Read"), d[0].ios_of("Write")),
            (Some(1), Some(2))
        );
        assert_eq!((d[1].major, d[1].minor), (254, 0));
        assert_eq!(d[1].bytes_of("Read"), Some(512));
        assert!(d[1].ios.is_empty());
        // No device lines (nothing done yet, or no file): no devices.
        assert!(blkio_v1(Some("Total 0\n"), None).is_empty());
        assert!(blkio_v1(None, None).is_empty());
    }

    #[test]
    fn io_stat_v2_per_device() {
        let t = "254:0 rbytes=1048576 wbytes=40960 rios=20 wios=10 dbytes=0 dios=0\n\
                 7:1 rbytes=512 wbytes=0 rios=1 wios=0 dbytes=0 dios=0 cost.usage=3\n";
        let d = io_stat_v2(t);
        assert_eq!(d.len(), 2);
        assert_eq!((d[0].major, d[0].minor), (254, 0));
        assert_eq!(d[0].bytes_of("Read"), Some(1048576));
        assert_eq!(d[0].bytes_of("Write"), Some(40960));
        assert_eq!(d[0].bytes_of("Discard"), Some(0));
        assert_eq!(
            (d[0].ios_of("Read"), d[0].ios_of("Write")),
            (Some(20), Some(10))
        );
        assert_eq!(d[1].bytes.len(), 3, "cost.* keys are not operations");
        assert!(io_stat_v2("").is_empty());
        assert!(io_stat_v2("garbage\n").is_empty());
    }
}
