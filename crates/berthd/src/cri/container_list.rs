//! `ListContainers`: filters by id (prefix), pod id (prefix), state and labels.

use std::collections::{HashMap, HashSet};
use std::sync::{LazyLock, Mutex, MutexGuard};

use berth_api::v1::{
    Container, ContainerFilter, ImageSpec, ListContainersRequest, ListContainersResponse,
};
use bytes::Bytes;
use tonic::Status;

use crate::container::ContainerRecord;
use crate::daemon::Daemon;

#[tracing::instrument(skip_all)]
pub async fn list_containers(
    daemon: &Daemon,
    req: ListContainersRequest,
) -> Result<ListContainersResponse, Status> {
    // Only the answer's fields are copied (the kubelet lists every
    // container every second).
    let containers = selected(daemon, req, container).await?;
    Ok(ListContainersResponse { containers })
}

/// What `make` gives for each record the request's filter selects, oldest
/// first.
async fn selected<T>(
    daemon: &Daemon,
    req: ListContainersRequest,
    make: impl Fn(&ContainerRecord) -> T,
) -> Result<Vec<T>, Status> {
    let f = req.filter.unwrap_or_default();
    let wanted = filter(&f);
    let out = daemon
        .containers()
        .list_map(|r| wanted(r).then(|| make(r)))
        .await?;
    Ok(out)
}

/// The records `f` selects: by id (prefix), pod id (prefix), state and labels.
fn filter(f: &ContainerFilter) -> impl Fn(&ContainerRecord) -> bool + '_ {
    |r: &ContainerRecord| {
        (f.id.is_empty() || r.id.starts_with(&f.id))
            && (f.pod_sandbox_id.is_empty() || r.pod_id.starts_with(&f.pod_sandbox_id))
            && f.state
                .as_ref()
                .is_none_or(|s| r.state.to_cri() as i32 == s.state)
            && f.label_selector
                .iter()
                .all(|(k, v)| r.labels.get(k) == Some(v))
    }
}

/// The record as a CRI `Container`.
fn container(r: &ContainerRecord) -> Container {
    Container {
        id: r.id.clone(),
        pod_sandbox_id: r.pod_id.clone(),
        metadata: Some(r.metadata()),
        image: Some(ImageSpec {
            image: r.shown_image().to_owned(),
            user_specified_image: r.user_specified_image.clone(),
            ..Default::default()
        }),
        image_ref: r.image_ref.clone(),
        state: r.state.to_cri() as i32,
        created_at: r.created_at,
        labels: super::string_map(&r.labels),
        annotations: super::string_map(&r.annotations),
        image_id: r.image_id.clone(),
    }
}

/// ListContainers' answer with each `Container` already encoded: the
/// kubelet lists every container every second, and building the owned
/// prost messages (every id, name, image and label copied) and encoding
/// them was most of berthd's work for the call. Served by
/// [`super::list_route`]; the bytes on the wire are those of a
/// `ListContainersResponse` (field 1, repeated `Container`).
#[derive(Debug, Default, Clone)]
pub struct EncodedContainers(pub Vec<Bytes>);

impl prost::Message for EncodedContainers {
    fn encode_raw(&self, buf: &mut impl bytes::BufMut) {
        for c in &self.0 {
            prost::encoding::bytes::encode(1, c, buf);
        }
    }

    /// Only ever encoded (berthd answers with it); decoding skips all.
    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: prost::encoding::WireType,
        buf: &mut impl bytes::Buf,
        ctx: prost::encoding::DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        prost::encoding::skip_field(wire_type, tag, buf, ctx)
    }

    fn encoded_len(&self) -> usize {
        prost::encoding::bytes::encoded_len_repeated(1, &self.0)
    }

    fn clear(&mut self) {
        self.0.clear();
    }
}

/// Each container's encoded `Container`, with the state and creation time
/// it was encoded at: the rest of a record never changes after
/// CreateContainer, so a record with the same two reads the same. Lock
/// order: after the records' (taken inside [`crate::container::Containers::list_map`]).
static ENCODED: LazyLock<Mutex<HashMap<String, Encoded>>> = LazyLock::new(Mutex::default);

/// One container's entry in [`ENCODED`].
struct Encoded {
    state: i32,
    created_at: i64,
    bytes: Bytes,
}

fn encoded_cache() -> MutexGuard<'static, HashMap<String, Encoded>> {
    ENCODED.lock().unwrap_or_else(|e| e.into_inner())
}

/// [`list_containers`], answered from the encoded cache.
#[tracing::instrument(skip_all)]
pub async fn list_containers_encoded(
    daemon: &Daemon,
    req: ListContainersRequest,
) -> Result<EncodedContainers, Status> {
    let containers = selected(daemon, req, encoded).await?;
    // Entries of removed containers stay until the cache is well over the
    // records (then each is looked up once). The cache's lock is never
    // held while the records' is taken.
    let cached = encoded_cache().len();
    if cached > 2 * daemon.containers().count() + 64 {
        let live: HashSet<String> = daemon
            .containers()
            .records()
            .into_iter()
            .map(|r| r.id)
            .collect();
        encoded_cache().retain(|id, _| live.contains(id));
    }
    Ok(EncodedContainers(containers))
}

/// The record's `Container`, encoded (from the cache when it holds the
/// record as it is).
fn encoded(r: &ContainerRecord) -> Bytes {
    let state = r.state.to_cri() as i32;
    if let Some(e) = encoded_cache().get(&r.id)
        && e.state == state
        && e.created_at == r.created_at
    {
        return e.bytes.clone();
    }
    let bytes = Bytes::from(prost::Message::encode_to_vec(&container(r)));
    let entry = Encoded {
        state,
        created_at: r.created_at,
        bytes: bytes.clone(),
    };
    encoded_cache().insert(r.id.clone(), entry);
    bytes
}

#[cfg(test)]
mod tests {
    use berth_api::v1::{Container, ContainerMetadata, ListContainersResponse};
    use prost::Message;

    use super::EncodedContainers;

    #[test]
    fn encoded_containers_read_as_a_list_containers_response() {
        let c = |id: &str, state: i32| Container {
            id: id.into(),
            pod_sandbox_id: "pod".into(),
            metadata: Some(ContainerMetadata {
                name: format!("n-{id}"),
                attempt: 2,
            }),
            state,
            created_at: 7,
            labels: [("k".to_string(), "v".to_string())].into(),
            ..Default::default()
        };
        let owned = ListContainersResponse {
            containers: vec![c("a", 1), c("b", 2)],
        };
        let encoded = EncodedContainers(
            owned
                .containers
                .iter()
                .map(|c| c.encode_to_vec().into())
                .collect(),
        );
        let wire = encoded.encode_to_vec();
        assert_eq!(wire.len(), encoded.encoded_len());
        assert_eq!(wire, owned.encode_to_vec());
        assert_eq!(ListContainersResponse::decode(&wire[..]).unwrap(), owned);
        assert!(EncodedContainers(vec![]).encode_to_vec().is_empty());
    }
}
