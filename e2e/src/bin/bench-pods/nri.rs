//! `--nri-socket`: the cost of one NRI plugin on the pod path. Rounds of N
//! lifecycles alternate between no plugin connected and one plugin
//! (berth_e2e::nri_plugin: subscribed to every pod and container event, it
//! sets an env var in each container) on the runtime's NRI socket; the
//! medians of RunPodSandbox, Create+StartContainer and Stop+RemovePodSandbox
//! of each condition, and their difference. Plain CRI and plain NRI: it runs
//! unchanged against containerd 2.x.

use std::path::Path;

use berth_e2e::client::CriClient;
use berth_e2e::nri_plugin::{Behaviour, TestPlugin};
use serde_json::{Value, json};

use crate::cri;
use crate::requests::Bench;
use crate::stats::{Samples, stats, timed};

const STEPS: &[&str] = &[
    "RunPodSandbox",
    "Create+StartContainer",
    "Stop+RemovePodSandbox",
];

pub async fn run(
    bench: &Bench,
    c: &mut CriClient,
    nri_socket: &Path,
    iterations: usize,
    out: &mut serde_json::Map<String, Value>,
) -> anyhow::Result<()> {
    let mut by_condition = [Samples::default(), Samples::default()];
    let mut events = 0;
    // off, on, off, on: drift in the machine's load falls on both alike.
    for round in 0..4 {
        let with = round % 2 == 1;
        let plugin = if with {
            let b = Behaviour {
                env: Some(("NRI_BENCH".into(), "1".into())),
                ..Default::default()
            };
            Some(TestPlugin::connect(nri_socket, "bench", "10", b).await?)
        } else {
            None
        };
        for i in 0..=iterations / 2 {
            let name = format!("{}-nri-{round}-{i}", bench.run_tag);
            let config = bench.pod_config(&name)?;
            let (pod, runp) = timed(cri::run_pod(c, &config)).await?;
            let (ctr, create) =
                timed(cri::create_ctr(c, &pod, bench.ctr_config(), &config, "")).await?;
            let ((), start) = timed(cri::start_ctr(c, &ctr, "")).await?;
            let ((), stopp) = timed(cri::stop_pod(c, &pod)).await?;
            let ((), rmp) = timed(cri::remove_pod(c, &pod)).await?;
            // The first of each round warms up.
            if i > 0 {
                by_condition[with as usize].add([
                    ("RunPodSandbox", runp),
                    ("Create+StartContainer", create + start),
                    ("Stop+RemovePodSandbox", stopp + rmp),
                ]);
            }
        }
        if let Some(p) = plugin {
            // Pod run/stop/remove, container create/post-create/start/
            // post-start/stop/remove: 9 per lifecycle.
            let seen = p.seen().len();
            anyhow::ensure!(
                seen >= 9 * (iterations / 2 + 1),
                "the plugin saw only {seen} events"
            );
            events += seen;
        }
    }
    println!("NRI: {iterations} lifecycles per condition; the plugin saw {events} events");
    println!("  without a plugin (NRI on):");
    let without = by_condition[0].table(STEPS);
    println!("  with one plugin:");
    let with = by_condition[1].table(STEPS);
    println!("  cost of the plugin (difference of medians):");
    let mut cost = serde_json::Map::new();
    for step in STEPS {
        let m = |s: &Samples| match s.get(step) {
            [] => f64::NAN,
            v => stats(v).0,
        };
        let d = m(&by_condition[1]) - m(&by_condition[0]);
        println!("  {step:<24} {d:>+8.2} ms");
        cost.insert(step.to_string(), json!(d));
    }
    out.insert(
        "nri".into(),
        json!({"without_plugin": without, "with_plugin": with, "cost_ms": cost, "events": events}),
    );
    Ok(())
}
