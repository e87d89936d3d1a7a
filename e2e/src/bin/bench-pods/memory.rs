//! Memory: PSS/RSS of the daemon and of the per-pod processes (monitors; shims and pauses),
//! summed, as JSON and as printed lines.

use std::collections::BTreeMap;

use berth_e2e::procs::{self, pss_rss_kb};
use serde_json::{Value, json};

use crate::cli::Cli;

#[derive(Default, Clone, Copy)]
pub struct Mem {
    pub procs: usize,
    pub pss_kb: u64,
    pub rss_kb: u64,
}

impl Mem {
    fn add(&mut self, (pss, rss): (u64, u64)) {
        self.procs += 1;
        self.pss_kb += pss;
        self.rss_kb += rss;
    }

    pub fn json(&self) -> Value {
        json!({"procs": self.procs, "pss_kb": self.pss_kb, "rss_kb": self.rss_kb})
    }
}

/// Per-pod processes, by name: those whose argv[0] basename is one of `names` and whose
/// command line contains `match_str`, plus such processes that are children of those
/// (containerd's pause, a child of its shim).
pub fn pod_processes(names: &[String], match_str: &str) -> BTreeMap<String, Vec<i32>> {
    let procs: Vec<_> = procs::processes()
        .into_iter()
        .filter(|p| names.contains(&p.argv0_name))
        .collect();
    let roots: Vec<i32> = procs
        .iter()
        .filter(|p| p.cmdline.contains(match_str))
        .map(|p| p.pid)
        .collect();
    let mut out: BTreeMap<String, Vec<i32>> = BTreeMap::new();
    for p in procs {
        if roots.contains(&p.pid) || roots.contains(&p.ppid) {
            out.entry(p.argv0_name).or_default().push(p.pid);
        }
    }
    out
}

/// How many per-pod processes are alive.
pub fn pod_process_count(cli: &Cli) -> usize {
    pod_processes(&cli.pod_procs, &cli.match_str)
        .values()
        .map(Vec::len)
        .sum()
}

/// Memory of the daemon and of every per-pod process, grouped by process name.
pub fn measure(cli: &Cli) -> (Option<Mem>, BTreeMap<String, Mem>) {
    let daemon = cli.daemon_pid.and_then(pss_rss_kb).map(|m| {
        let mut d = Mem::default();
        d.add(m);
        d
    });
    let groups = pod_processes(&cli.pod_procs, &cli.match_str)
        .into_iter()
        .map(|(name, pids)| {
            let mut m = Mem::default();
            for pid in pids {
                if let Some(x) = pss_rss_kb(pid) {
                    m.add(x);
                }
            }
            (name, m)
        })
        .collect();
    (daemon, groups)
}

/// The sum over all per-pod process groups (PSS and RSS; `procs` too).
fn total(groups: &BTreeMap<String, Mem>) -> Mem {
    let mut all = Mem::default();
    for m in groups.values() {
        all.procs += m.procs;
        all.pss_kb += m.pss_kb;
        all.rss_kb += m.rss_kb;
    }
    all
}

pub fn mem_json(pods: usize, daemon: Option<Mem>, groups: &BTreeMap<String, Mem>) -> Value {
    let all = total(groups);
    let per = |kb: u64| kb as f64 / pods.max(1) as f64;
    json!({
        "daemon": daemon.map(|d| d.json()),
        "per_pod_procs": groups.iter().map(|(k, v)| (k.clone(), v.json())).collect::<serde_json::Map<_, _>>(),
        "per_pod_total": all.json(),
        "per_pod_pss_kb": per(all.pss_kb),
        "per_pod_rss_kb": per(all.rss_kb),
    })
}

pub fn print_mem(what: &str, pods: usize, daemon: Option<Mem>, groups: &BTreeMap<String, Mem>) {
    let mb = |kb: u64| kb as f64 / 1024.0;
    println!("  memory while {pods} pods run ({what}):");
    if let Some(d) = daemon {
        println!(
            "    daemon                 PSS {:7.1} MiB  RSS {:7.1} MiB",
            mb(d.pss_kb),
            mb(d.rss_kb)
        );
    }
    for (name, m) in groups {
        println!(
            "    {:<22} PSS {:7.1} MiB  RSS {:7.1} MiB  ({} processes; per pod PSS {:.2} MiB RSS {:.2} MiB)",
            name,
            mb(m.pss_kb),
            mb(m.rss_kb),
            m.procs,
            mb(m.pss_kb) / pods.max(1) as f64,
            mb(m.rss_kb) / pods.max(1) as f64
        );
    }
    let all = total(groups);
    println!(
        "    per pod (all per-pod processes): PSS {:.2} MiB, RSS {:.2} MiB",
        mb(all.pss_kb) / pods.max(1) as f64,
        mb(all.rss_kb) / pods.max(1) as f64
    );
}
