//! Phase 2, the warm pod: containers one after another in ONE running pod. The pod's monitor
//! (berthd) or shim and pause (containerd) already exist, so this separates container work
//! from the per-pod process start that the first CreateContainer/RunPodSandbox pays.

use berth_e2e::client::CriClient;
use serde_json::Value;

use crate::cri::{self, WARM};
use crate::requests::Bench;
use crate::stats::{Samples, timed};

/// Runs N containers (after one untimed), prints the table, puts `warm` into `out`.
pub async fn run(
    bench: &Bench,
    c: &mut CriClient,
    iterations: usize,
    out: &mut serde_json::Map<String, Value>,
) -> anyhow::Result<()> {
    let name = format!("{}-warm", bench.run_tag);
    let config = bench.pod_config(&name)?;
    let pod = cri::run_pod(c, &config).await?;
    let mut samples = Samples::default();
    for i in 0..=iterations {
        let mut cfg = bench.ctr_config();
        if let Some(m) = cfg.metadata.as_mut() {
            m.attempt = i as u32; // a fresh name each time
        }
        cfg.log_path = format!("sleep/{i}.log");
        let (ctr, create) = timed(cri::create_ctr(c, &pod, cfg, &config, WARM)).await?;
        let ((), start) = timed(cri::start_ctr(c, &ctr, WARM)).await?;
        let ((), stop) = timed(cri::stop_ctr(c, &ctr, WARM)).await?;
        let ((), rm) = timed(cri::remove_ctr(c, &ctr, WARM)).await?;
        if i > 0 {
            samples.add([
                ("warm CreateContainer", create),
                ("warm StartContainer", start),
                ("warm StopContainer", stop),
                ("warm RemoveContainer", rm),
            ]);
        }
    }
    cri::teardown(c, &pod, None).await?;
    let _ = std::fs::remove_dir_all(bench.log_dir.join(&name));
    println!("\nwarm pod (pod and its monitor/shim already up) x{iterations} (ms)");
    out.insert("warm".into(), samples.table(&samples.names()));
    Ok(())
}
