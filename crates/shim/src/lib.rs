//! Berth's per-pod monitor ("shim").
//!
//! The monitor binary comes later; for now this crate holds the pieces it is
//! built from. Everything here is synchronous and single-threaded on purpose:
//! libcontainer must never run in a process with a second thread
//! (ARCHITECTURE.md), so the monitor has no async runtime.

pub mod cri_log;
