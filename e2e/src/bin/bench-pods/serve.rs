//! The helper processes hack/bench-pods.sh holds open for a whole run: each serves until the
//! script closes its stdin (`--serve-registry` here, `--serve-net` in [`crate::net`]).

use std::io::{Read, Write};

/// Blocks until stdin reaches EOF: the caller closed it, or died.
pub fn until_stdin_closes() {
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
}

/// `--serve-registry`: a registry with the test images; prints HOST:PORT, serves until stdin
/// closes.
pub fn serve_registry() -> anyhow::Result<()> {
    let registry = berth_e2e::registry::Registry::start()?;
    registry.push_test_images()?;
    println!("{}", registry.host_port());
    std::io::stdout().flush()?;
    // The registry goes with `registry`.
    until_stdin_closes();
    drop(registry);
    Ok(())
}
