//! ListContainers (each live container's state from its pod's monitor) and
//! the records as last known, for the stats RPCs.

use std::collections::BTreeMap;

use super::{ContainerError, ContainerRecord, Containers, State, internal, monitor};

impl Containers {
    /// Every record, refreshed with one monitor `list` per pod that has a
    /// live container.
    pub async fn list(&self) -> Result<Vec<ContainerRecord>, ContainerError> {
        let recs: Vec<ContainerRecord> = self.lock().records.values().cloned().collect();
        let mut pods: BTreeMap<String, Vec<ContainerRecord>> = BTreeMap::new();
        let mut out = Vec::with_capacity(recs.len());
        for r in recs {
            if r.state == State::Exited {
                out.push(r);
            } else {
                pods.entry(r.pod_id.clone()).or_default().push(r);
            }
        }
        for (pod, recs) in pods {
            let listed = monitor::list(&self.monitor_dir(&pod), &pod).await;
            for r in recs {
                let got = match &listed {
                    Ok(states) => Ok(states.iter().find(|s| s.id == r.id).cloned()),
                    Err(monitor::CallError::Unreachable { pod, source }) => {
                        Err(monitor::CallError::Unreachable {
                            pod: pod.clone(),
                            source: std::io::Error::new(source.kind(), source.to_string()),
                        })
                    }
                    // A stuck monitor: its containers as last recorded, so
                    // the kubelet's relist goes on for every other pod.
                    Err(monitor::CallError::Timeout { .. }) => {
                        out.push(r);
                        continue;
                    }
                    Err(e) => return Err(internal(anyhow::anyhow!("{e}"))),
                };
                out.push(self.apply(r, got)?);
            }
        }
        out.sort_by_key(|r| r.created_at);
        Ok(out)
    }

    /// Every record as last known, without asking the monitors: the stats
    /// RPCs (polled by the kubelet) read cgroups directly and need no refresh.
    pub fn records(&self) -> Vec<ContainerRecord> {
        self.lock().records.values().cloned().collect()
    }
}
