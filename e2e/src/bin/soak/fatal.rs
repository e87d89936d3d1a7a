//! A fatal end of the soak: berthd's log tail, then the cleanup the fixtures' Drop impls
//! would have done (they do not run on exit).

use berth_e2e::daemon::Berthd;

/// The test network's bridge, for [`fatal`] (which skips `TestNet`'s Drop).
pub static BRIDGE: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Prints `msg` and the end of berthd's log, cleans up by hand, exits 2.
pub fn fatal(d: &Berthd, msg: &str) -> ! {
    let log = d.log_text();
    let tail: Vec<&str> = log.lines().rev().take(30).collect();
    eprintln!(
        "soak: {msg}\nberthd log ends with:\n{}",
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    );
    // The fixtures' Drop impls do not run on exit: clean up by hand.
    berth_e2e::cleanup::reap_leftovers(d.config.dir.path());
    if let Some(bridge) = BRIDGE.get() {
        berth_e2e::net::remove_forward_rules(bridge);
        let _ = std::process::Command::new("ip")
            .args(["link", "del", bridge])
            .status();
    }
    let _ = std::fs::remove_dir_all(d.config.dir.path());
    std::process::exit(2)
}
