//! Berth's per-pod monitor ("shim").
//!
//! Everything here is synchronous and single-threaded on purpose:
//! libcontainer must never run in a process with a second thread
//! (docs/architecture.md), so the monitor has no async runtime and spawns no
//! threads.

pub mod cri_log;
pub mod daemon;
pub(crate) mod exec;
pub(crate) mod exec_userns;
pub mod exit_record;
pub mod log;
pub mod monitor;
pub mod pod_init;
