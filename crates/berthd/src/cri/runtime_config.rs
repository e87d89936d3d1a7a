//! `RuntimeConfig`: the cgroup driver the kubelet must match.

use berth_api::v1::{CgroupDriver, LinuxRuntimeConfiguration, RuntimeConfigResponse};

use crate::config;
use crate::daemon::Daemon;

pub fn runtime_config(daemon: &Daemon) -> RuntimeConfigResponse {
    let driver = match daemon.config().cgroup_driver {
        config::CgroupDriver::Cgroupfs => CgroupDriver::Cgroupfs,
        config::CgroupDriver::Systemd => CgroupDriver::Systemd,
    };
    RuntimeConfigResponse {
        linux: Some(LinuxRuntimeConfiguration {
            cgroup_driver: driver as i32,
        }),
    }
}
