//! Crash points for the fault tests: `BERTH_FAILPOINTS=a,b` makes berthd
//! SIGKILL itself when it reaches point `a` or `b`, so a test can check that
//! the restarted daemon completes or cleans up whatever the interrupted RPC
//! left. Unset (always, outside tests), a point costs one branch on a value
//! read once.

use std::sync::OnceLock;

/// The environment variable naming the points to crash at.
pub const ENV: &str = "BERTH_FAILPOINTS";

fn armed() -> &'static [String] {
    static ARMED: OnceLock<Vec<String>> = OnceLock::new();
    ARMED.get_or_init(|| {
        std::env::var(ENV)
            .map(|v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default()
    })
}

/// Crashes the daemon here (SIGKILL: no destructor, no flush) when `name` is armed.
pub fn hit(name: &str) {
    if armed().iter().any(|a| a == name) {
        tracing::warn!(failpoint = name, "failpoint reached: killing berthd");
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    }
}
