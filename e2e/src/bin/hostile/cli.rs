//! The command line of `hostile`.

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "hostile",
    about = "Well-behaved pods beside hostile tenants; counts failed probes, restarts and leaks"
)]
pub struct Cli {
    /// How long the hostile tenants run beside the well-behaved pods.
    #[arg(long, default_value_t = 10.0)]
    pub minutes: f64,
    /// Well-behaved pods, each probed with ExecSync `true` every second.
    #[arg(long, default_value_t = 20)]
    pub good: usize,
}
