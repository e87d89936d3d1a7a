//! `Status`: the runtime and network conditions the kubelet gates pods on.

use std::collections::HashMap;

use berth_api::v1::{RuntimeCondition, RuntimeStatus, StatusRequest, StatusResponse};
use tonic::Status;

use crate::daemon::Daemon;

pub const RUNTIME_READY: &str = "RuntimeReady";
pub const NETWORK_READY: &str = "NetworkReady";

pub fn status(daemon: &Daemon, req: StatusRequest) -> Result<StatusResponse, Status> {
    let runtime = condition(RUNTIME_READY, daemon.runtime_readiness());
    let network = condition(NETWORK_READY, daemon.network_readiness());
    let mut info = HashMap::new();
    if req.verbose {
        // crictl info prints each value as JSON, so every value must be valid JSON.
        let config = serde_json::to_string(daemon.config())
            .map_err(|e| Status::internal(format!("cannot encode config: {e}")))?;
        info.insert("config".to_string(), config);
        let pod_cidr = daemon.pod_cidr();
        info.insert(
            "podCIDR".to_string(),
            serde_json::Value::String(pod_cidr).to_string(),
        );
    }
    Ok(StatusResponse {
        status: Some(RuntimeStatus {
            conditions: vec![runtime, network],
        }),
        info,
        runtime_handlers: vec![],
        features: None,
    })
}

fn condition(kind: &str, readiness: Result<(), (String, String)>) -> RuntimeCondition {
    match readiness {
        Ok(()) => RuntimeCondition {
            r#type: kind.to_string(),
            status: true,
            reason: String::new(),
            message: String::new(),
        },
        Err((reason, message)) => RuntimeCondition {
            r#type: kind.to_string(),
            status: false,
            reason,
            message,
        },
    }
}
