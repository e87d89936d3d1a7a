//! ListContainers (the records, kept current by the pod monitors' events;
//! a pod whose monitor is not subscribed is asked) and the records as last
//! known, for the stats RPCs.

use std::collections::BTreeMap;

use super::watch::{Read, as_stored};
use super::{ContainerError, ContainerRecord, Containers, internal, monitor};

impl Containers {
    /// Every record: as it is for pods whose monitor is subscribed (no
    /// round trip), refreshed with one monitor `list` per other pod that
    /// has a live container (subscribing, or a monitor older than events).
    pub async fn list(&self) -> Result<Vec<ContainerRecord>, ContainerError> {
        self.list_map(|r| Some(r.clone())).await
    }

    /// What `f` makes of each record [`Self::list`] would give, oldest
    /// first, copying only the records that must be brought up to date
    /// (ListContainers, every second from the kubelet, wants a few fields
    /// of each).
    pub async fn list_map<T>(
        &self,
        f: impl Fn(&ContainerRecord) -> Option<T>,
    ) -> Result<Vec<T>, ContainerError> {
        // Sorted before `f` runs: sorting its answers moved each (a CRI
        // `Container` is ~300 bytes) several times.
        let (out, stale) = {
            let modes = self.watches.modes();
            let inner = self.lock();
            let mut fresh: Vec<&ContainerRecord> = Vec::with_capacity(inner.records.len());
            let mut stale = Vec::new();
            for r in inner.records.values() {
                if as_stored(r, modes.get(&r.pod_id)) {
                    fresh.push(r);
                } else {
                    stale.push(r.clone());
                }
            }
            fresh.sort_by_key(|r| r.created_at);
            let out: Vec<(i64, T)> = fresh
                .into_iter()
                .filter_map(|r| f(r).map(|t| (r.created_at, t)))
                .collect();
            (out, stale)
        };
        if stale.is_empty() {
            return Ok(out.into_iter().map(|(_, t)| t).collect());
        }
        // Records asked of their monitors (oldest first too), merged in.
        let asked: Vec<(i64, T)> = self
            .current(stale)
            .await?
            .iter()
            .filter_map(|r| f(r).map(|t| (r.created_at, t)))
            .collect();
        Ok(merge_by_created(out, asked))
    }

    /// [`Self::list`] for one pod's containers: PodSandboxStatus's
    /// container statuses (the Evented PLEG's view of the pod) and the
    /// container events.
    pub async fn list_pod(&self, pod_id: &str) -> Result<Vec<ContainerRecord>, ContainerError> {
        let recs: Vec<ContainerRecord> = self
            .lock()
            .records
            .values()
            .filter(|r| r.pod_id == pod_id)
            .cloned()
            .collect();
        self.current(recs).await
    }

    /// `recs` brought up to date, oldest first.
    async fn current(
        &self,
        recs: Vec<ContainerRecord>,
    ) -> Result<Vec<ContainerRecord>, ContainerError> {
        let mut pods: BTreeMap<String, Vec<ContainerRecord>> = BTreeMap::new();
        let mut out = Vec::with_capacity(recs.len());
        {
            let modes = self.watches.modes();
            for r in recs {
                let mode = modes.get(&r.pod_id);
                match super::watch::as_read(r, mode) {
                    Read::Now(r) => out.push(r),
                    Read::Ask(r) => pods.entry(r.pod_id.clone()).or_default().push(r),
                }
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

    /// How many containers there are records of.
    pub fn count(&self) -> usize {
        self.lock().records.len()
    }

    /// Every record as last known, without asking the monitors: the stats
    /// RPCs (polled by the kubelet) read cgroups directly and need no refresh.
    pub fn records(&self) -> Vec<ContainerRecord> {
        self.lock().records.values().cloned().collect()
    }
}

impl Containers {
    /// Pod monitors berthd follows, by how (`live`, `connecting`, `polled`,
    /// `unresponsive`): the monitors alive, for the metrics endpoint.
    pub fn monitors_by_mode(&self) -> BTreeMap<&'static str, usize> {
        let mut out = BTreeMap::new();
        for mode in self.watches.modes().all() {
            let name = match mode {
                super::watch::Mode::Live => "live",
                super::watch::Mode::Connecting => "connecting",
                super::watch::Mode::Polled => "polled",
                super::watch::Mode::Unresponsive => "unresponsive",
            };
            *out.entry(name).or_insert(0) += 1;
        }
        out
    }
}

/// Two lists sorted by creation time, merged (the first's first on a tie).
fn merge_by_created<T>(a: Vec<(i64, T)>, b: Vec<(i64, T)>) -> Vec<T> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut a, mut b) = (a.into_iter().peekable(), b.into_iter().peekable());
    loop {
        let take_a = match (a.peek(), b.peek()) {
            (Some((x, _)), Some((y, _))) => x <= y,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => return out,
        };
        let next = if take_a { a.next() } else { b.next() };
        out.extend(next.map(|(_, t)| t));
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn merged_in_creation_order() {
        let a = vec![(1, "a1"), (3, "a3"), (5, "a5")];
        let b = vec![(2, "b2"), (3, "b3"), (6, "b6")];
        assert_eq!(
            super::merge_by_created(a, b),
            ["a1", "b2", "a3", "b3", "a5", "b6"]
        );
        assert_eq!(
            super::merge_by_created::<&str>(vec![], vec![(1, "b")]),
            ["b"]
        );
    }
}
