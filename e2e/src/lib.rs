//! End-to-end test support: a real `berthd` on temporary dirs ([`daemon`]),
//! Berth's own CRI client over the unix socket ([`client`]), and a real OCI
//! registry serving the project's test images ([`registry`]).

pub mod cleanup;
pub mod client;
pub mod daemon;
pub mod net;
pub mod nri_plugin;
pub mod pods;
pub mod procs;
pub mod registry;

/// The workspace root, for scripts and build outputs.
pub fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("e2e crate lives inside the workspace")
        .to_path_buf()
}

/// Runs a long-run binary's body (soak, hostile) on one client thread, so
/// that on a 2-core host the daemon under test gets the CPUs; exits 1 when
/// the body reports a failed run.
pub fn block_on_verdict(
    run: impl std::future::Future<Output = anyhow::Result<bool>>,
) -> anyhow::Result<()> {
    let ok = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(run)?;
    if !ok {
        std::process::exit(1);
    }
    Ok(())
}
