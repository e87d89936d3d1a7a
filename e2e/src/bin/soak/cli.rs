//! The command line of `soak`.

use std::path::PathBuf;

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "soak",
    about = "Parallel pod churn with periodic kill -9 of berthd; counts errors, losses and leaks"
)]
pub struct Cli {
    /// How long the churn runs.
    #[arg(long, default_value_t = 5.0)]
    pub minutes: f64,
    /// Parallel workers, each cycling one pod at a time.
    #[arg(long, default_value_t = 8)]
    pub workers: usize,
    /// Seconds between two kill -9 of berthd (each followed by a restart); 0: never.
    #[arg(long, default_value_t = 30)]
    pub kill_every: u64,
    /// How long each pod keeps its container running before it is stopped.
    #[arg(long, default_value_t = 1000)]
    pub dwell_ms: u64,
    /// A registry (HOST:PORT, plain HTTP) already serving berth-test/busybox
    /// (e.g. hack/registry.sh); default: start one with the test images.
    #[arg(long)]
    pub registry: Option<String>,
    /// Copy berthd's log here at the end (its temp dir goes).
    #[arg(long)]
    pub keep_log: Option<PathBuf>,
}
