//! `UpdateRuntimeConfig`: the kubelet hands over the node's pod CIDR.

use berth_api::v1::{UpdateRuntimeConfigRequest, UpdateRuntimeConfigResponse};
use tonic::Status;

use crate::daemon::Daemon;

pub fn update_runtime_config(
    daemon: &Daemon,
    req: UpdateRuntimeConfigRequest,
) -> Result<UpdateRuntimeConfigResponse, Status> {
    let Some(network) = req.runtime_config.and_then(|c| c.network_config) else {
        return Ok(UpdateRuntimeConfigResponse {});
    };
    // The kubelet sends an empty CIDR when it has none; keep what we had.
    if network.pod_cidr.is_empty() {
        return Ok(UpdateRuntimeConfigResponse {});
    }
    for cidr in network.pod_cidr.split(',') {
        validate_cidr(cidr.trim())?;
    }
    daemon.set_pod_cidr(&network.pod_cidr).map_err(|e| {
        Status::unavailable(format!("cannot record pod CIDR {}: {e}", network.pod_cidr))
    })?;
    tracing::info!(pod_cidr = %network.pod_cidr, "pod CIDR updated");
    Ok(UpdateRuntimeConfigResponse {})
}

fn validate_cidr(cidr: &str) -> Result<(), Status> {
    let bad = || {
        Status::invalid_argument(format!(
            "pod CIDR {cidr:?} is not an IPv4 or IPv6 CIDR (e.g. 10.88.0.0/16)"
        ))
    };
    let (addr, len) = cidr.split_once('/').ok_or_else(bad)?;
    let addr: std::net::IpAddr = addr.parse().map_err(|_| bad())?;
    let len: u8 = len.parse().map_err(|_| bad())?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    if len > max {
        return Err(bad());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::validate_cidr;

    #[test]
    fn cidrs() {
        assert!(validate_cidr("10.88.0.0/16").is_ok());
        assert!(validate_cidr("fd00::/64").is_ok());
        assert!(validate_cidr("10.88.0.0").is_err());
        assert!(validate_cidr("10.88.0.0/33").is_err());
        assert!(validate_cidr("nonsense/8").is_err());
    }
}
