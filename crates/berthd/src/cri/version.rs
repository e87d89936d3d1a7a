//! `Version`: who we are and which CRI version we speak.

use berth_api::v1::{VersionRequest, VersionResponse};

/// The version of the kubelet-runtime API, which the kubelet expects as "0.1.0".
const KUBE_RUNTIME_API_VERSION: &str = "0.1.0";

pub fn version(_req: VersionRequest) -> VersionResponse {
    VersionResponse {
        version: KUBE_RUNTIME_API_VERSION.to_string(),
        runtime_name: "berth".to_string(),
        runtime_version: env!("CARGO_PKG_VERSION").to_string(),
        runtime_api_version: "v1".to_string(),
    }
}
