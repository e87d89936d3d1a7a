//! What the run prints: each hostile behaviour's outcome and the summary.

use std::time::Duration;

use berth_e2e::procs::mib;

use crate::leaks::{Leaks, total};
use crate::probes::Probes;

/// What one hostile behaviour did: facts, and notes (anything unexpected).
pub struct Outcome {
    pub name: &'static str,
    pub lines: Vec<String>,
    pub notes: Vec<String>,
}

impl Outcome {
    pub fn new(name: &'static str) -> Outcome {
        Outcome {
            name,
            lines: vec![],
            notes: vec![],
        }
    }

    pub fn line(&mut self, s: String) {
        self.lines.push(s);
    }

    pub fn note(&mut self, s: String) {
        eprintln!("[{}] {}: {s}", crate::stamp(), self.name);
        if self.notes.len() < 20 {
            self.notes.push(s);
        }
    }
}

/// berthd's RSS (kB): idle after setup, the most seen, idle after the hostile pods left.
pub struct Rss {
    pub before: u64,
    pub max: u64,
    pub after: u64,
}

pub struct Summary<'a> {
    pub minutes: f64,
    pub good: usize,
    pub probes: &'a Probes,
    /// The same probes before any hostile pod ran.
    pub baseline: &'a Probes,
    pub rss: Rss,
    pub restarts: u32,
    pub outcomes: &'a [Outcome],
    /// StopPodSandbox + RemovePodSandbox of each hostile pod.
    pub removals: &'a [(String, Result<Duration, String>)],
    pub leaks: &'a Leaks,
}

/// Prints the summary; true when no probe failed, berthd never restarted and nothing leaked.
pub fn print(s: &Summary) -> bool {
    let p = s.probes;
    let (p50, p99, max) = p.percentiles();
    println!();
    println!("=== hostile summary ===");
    println!(
        "run: {:.1} min, {} well-behaved pods beside 5 hostile ones",
        s.minutes, s.good
    );
    println!(
        "well-behaved ExecSync `true`: {} calls, {} failed; latency p50 {p50:.1} ms, p99 {p99:.1} ms, max {max:.1} ms",
        p.count(),
        p.failed()
    );
    let (b50, b99, bmax) = s.baseline.percentiles();
    println!(
        "  baseline before the hostile pods: {} calls, {} failed; p50 {b50:.1} ms, p99 {b99:.1} ms, max {bmax:.1} ms",
        s.baseline.count(),
        s.baseline.failed()
    );
    println!(
        "berthd RSS: before {} (idle after setup), during {} (max), after {} (idle, hostile pods removed)",
        mib(s.rss.before),
        mib(s.rss.max),
        mib(s.rss.after)
    );
    println!("berthd restarts: {}", s.restarts);
    for o in s.outcomes {
        println!("{}:", o.name);
        for l in &o.lines {
            println!("  {l}");
        }
        for n in &o.notes {
            println!("  NOTE: {n}");
        }
    }
    println!("hostile pods' StopPodSandbox + RemovePodSandbox:");
    for (name, r) in s.removals {
        match r {
            Ok(d) => println!("  {name:<10} {:.2} s", d.as_secs_f64()),
            Err(e) => println!("  {name:<10} FAILED: {e}"),
        }
    }
    println!("leaks:");
    for (what, v) in s.leaks {
        println!("  {what:<26} {}", v.len());
    }
    println!("  {:<26} {}", "total", total(s.leaks));
    for (what, v) in s.leaks {
        for x in v {
            println!("  leftover {what}: {x}");
        }
    }
    let mut failures = s.baseline.failures.lock().unwrap().clone();
    failures.extend(p.failures.lock().unwrap().iter().cloned());
    if !failures.is_empty() {
        println!("first failed probes:");
        for f in failures.iter().take(20) {
            println!("  {f}");
        }
    }
    let ok = failures.is_empty() && s.restarts == 0 && total(s.leaks) == 0;
    println!("\nresult: {}", if ok { "PASS" } else { "FAIL" });
    ok
}
