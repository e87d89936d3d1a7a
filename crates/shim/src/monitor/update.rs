//! Update: UpdateContainerResources on the live cgroup.

use super::Monitor;
use super::cgroup_update::update_cgroup;
use super::error::{Op, OpError};

impl Monitor {
    /// Applies `resources` (an OCI `LinuxResources` object) to the cgroup of
    /// a live container.
    pub(super) fn update(&mut self, id: &str, resources: serde_json::Value) -> Result<(), OpError> {
        self.reap();
        let c = self.get(id)?;
        if !c.alive() {
            return Err(Op::Update.invalid_state(id, "it has exited"));
        }
        let res: libcontainer::oci_spec::runtime::LinuxResources =
            serde_json::from_value(resources)
                .map_err(|e| Op::Update.invalid_argument(id, format!("bad resources: {e}")))?;
        update_cgroup(&c.cgroup_path, &res).map_err(|e| Op::Update.failed(id, e))
    }
}
