//! Phase 1: N pod lifecycles, each CRI call timed (one untimed warm-up first).

use berth_e2e::client::CriClient;
use serde_json::{Value, json};

use crate::cri;
use crate::requests::Bench;
use crate::stats::{Samples, timed};

/// The steps in table order ("A+B" is the sum of two calls; "lifecycle" the whole pod).
const STEPS: &[&str] = &[
    "RunPodSandbox",
    "CreateContainer",
    "StartContainer",
    "Create+StartContainer",
    "ExecSync",
    "StopContainer",
    "RemoveContainer",
    "Stop+RemoveContainer",
    "StopPodSandbox",
    "RemovePodSandbox",
    "Stop+RemovePodSandbox",
    "lifecycle",
];

/// Runs the lifecycles, prints the table, puts `steps` (and the warm-up pod's `pod_ip`)
/// into `out`.
pub async fn run(
    bench: &Bench,
    c: &mut CriClient,
    iterations: usize,
    out: &mut serde_json::Map<String, Value>,
) -> anyhow::Result<()> {
    let mut samples = Samples::default();
    let mut exec_supported = true;
    for i in 0..=iterations {
        let name = format!("{}-life-{i}", bench.run_tag);
        let mut s: Vec<(&str, f64)> = Vec::new();
        let config = bench.pod_config(&name)?;
        let (_, lifecycle) = timed(async {
            let (pod, t) = timed(cri::run_pod(c, &config)).await?;
            s.push(("RunPodSandbox", t));
            if i == 0 {
                // Untimed, in the warm-up only: which network the pods are on.
                let ip = cri::pod_ip(c, &pod).await?;
                println!(
                    "pod IP (warm-up pod): {}",
                    if ip.is_empty() { "none" } else { &ip }
                );
                out.insert("pod_ip".into(), json!(ip));
            }

            let (ctr, create) =
                timed(cri::create_ctr(c, &pod, bench.ctr_config(), &config, "")).await?;
            let ((), start) = timed(cri::start_ctr(c, &ctr, "")).await?;
            s.extend([
                ("CreateContainer", create),
                ("StartContainer", start),
                ("Create+StartContainer", create + start),
            ]);

            if exec_supported {
                let (ran, t) = timed(cri::exec_true(c, &ctr)).await?;
                if ran {
                    s.push(("ExecSync", t));
                } else {
                    println!("ExecSync: Unimplemented, skipped");
                    exec_supported = false;
                }
            }

            let ((), stop) = timed(cri::stop_ctr(c, &ctr, "")).await?;
            let ((), rm) = timed(cri::remove_ctr(c, &ctr, "")).await?;
            s.extend([
                ("StopContainer", stop),
                ("RemoveContainer", rm),
                ("Stop+RemoveContainer", stop + rm),
            ]);

            let ((), stopp) = timed(cri::stop_pod(c, &pod)).await?;
            let ((), rmp) = timed(cri::remove_pod(c, &pod)).await?;
            s.extend([
                ("StopPodSandbox", stopp),
                ("RemovePodSandbox", rmp),
                ("Stop+RemovePodSandbox", stopp + rmp),
            ]);
            anyhow::Ok(())
        })
        .await?;
        s.push(("lifecycle", lifecycle));
        let _ = std::fs::remove_dir_all(bench.log_dir.join(&name));
        // Iteration 0 warms caches (image config, monitor binary, cgroup dirs): not counted.
        if i > 0 {
            samples.add(s);
        }
    }
    println!("\nlifecycle x{iterations} (ms)          median      p90");
    out.insert("steps".into(), samples.table(STEPS));
    Ok(())
}
