//! Berth's per-pod monitor ("shim").
//!
//! Everything here is synchronous and single-threaded on purpose:
//! libcontainer must never run in a process with a second thread
//! (ARCHITECTURE.md), so the monitor has no async runtime and spawns no
//! threads.

pub mod cri_log;
pub mod daemon;
pub(crate) mod exec;
pub mod exit_record;
pub mod log;
pub mod monitor;

/// TEMPORARY: berthd's `container/mod.rs` still imports
/// `berth_shim::protocol`; remove once it uses `berth_monitor_protocol`.
pub use berth_monitor_protocol as protocol;
