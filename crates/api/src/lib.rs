//! CRI `runtime.v1` API (Kubernetes 1.36, k8s.io/cri-api v0.36.3), and
//! Berth's own admin API `berth.admin.v1` (image import; berthctl's).
//!
//! Generated at build time from `proto/api.proto` and `proto/admin.proto`;
//! see `proto/README.md`.

#[allow(clippy::all, clippy::pedantic, missing_docs, rustdoc::all)]
pub mod runtime {
    pub mod v1 {
        tonic::include_proto!("runtime.v1");
    }
}

pub use runtime::v1;

#[allow(clippy::all, clippy::pedantic, missing_docs, rustdoc::all)]
pub mod admin {
    pub mod v1 {
        tonic::include_proto!("berth.admin.v1");
    }
}
