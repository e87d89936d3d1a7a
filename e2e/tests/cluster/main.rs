//! Tests against a running single-node Kubernetes cluster on Berth (hack/cluster.sh), with the
//! `kube` crate and kubectl where a user would use it. Run them with hack/cluster-test.sh; each
//! test works in a namespace of its own, so they run in parallel. Tests named `serial_*` disturb
//! the whole node (they kill berthd) and run alone, after the others.
//!
//! Built only with the `cluster` feature: `cargo test -p berth-e2e --features cluster --test cluster`.

mod berthd_restart;
mod checkpoint;
mod common;
mod cri_stats;
mod image_gc;
mod kind;
mod log_rotation;
mod logs;
mod node;
mod probes;
mod resources;
mod security;
mod seed;
mod streaming;
mod summary;
mod volumes;
