//! Update: UpdateContainerResources on the live cgroup.

use super::error::{Op, OpError};
use super::{Monitor, cgroup_of};

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
        let cgroup = cgroup_of(&self.cgroups, &c.cgroup_path)
            .ok_or_else(|| Op::Update.failed(id, "no cgroup hierarchy on this host"))?;
        cgroup.update(&res).map_err(|e| Op::Update.failed(id, e))
    }
}
