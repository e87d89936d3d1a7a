//! The `Stream*` list RPCs (KEP 5825, feature gate `CRIListStreaming`): the
//! answer of the matching `List*` call, cut into messages well under the
//! gRPC message limit (4 MiB by default on the kubelet's side), so a node
//! with thousands of containers never hits it. Each message holds at least
//! one item, each item is in exactly one message, and the stream ends when
//! all are sent, as the API asks.
//!
//! The list itself is taken at once (one consistent view, like `List*`);
//! only its encoding is spread over messages.

use prost::Message;

use super::BoxStream;

/// Encoded bytes per message: a quarter of the default limit leaves room
/// for framing and for one item larger than the rest.
const CHUNK_BYTES: usize = 1 << 20;

/// `items` as a stream of `wrap(chunk)` messages of at most [`CHUNK_BYTES`]
/// (one item alone may be larger: it still goes, in its own message).
pub fn chunked<T, R>(items: Vec<T>, wrap: fn(Vec<T>) -> R) -> BoxStream<R>
where
    T: Message + Send + 'static,
    R: Send + 'static,
{
    let chunks: Vec<Result<R, tonic::Status>> = split(items, CHUNK_BYTES)
        .into_iter()
        .map(|c| Ok(wrap(c)))
        .collect();
    Box::pin(futures::stream::iter(chunks))
}

fn split<T: Message>(items: Vec<T>, budget: usize) -> Vec<Vec<T>> {
    let mut chunks = Vec::new();
    let mut current = Vec::new();
    let mut used = 0;
    for item in items {
        // A repeated field costs the item, its length prefix and its tag.
        let size = item.encoded_len() + prost::length_delimiter_len(item.encoded_len()) + 1;
        if !current.is_empty() && used + size > budget {
            chunks.push(std::mem::take(&mut current));
            used = 0;
        }
        used += size;
        current.push(item);
    }
    if !current.is_empty() {
        chunks.push(current);
    }
    chunks
}

#[cfg(test)]
mod tests {
    use berth_api::v1::{Container, StreamContainersResponse};
    use futures::StreamExt;

    use super::*;

    fn container(i: usize, pad: usize) -> Container {
        Container {
            id: format!("{i:064}"),
            annotations: [("pad".to_string(), "x".repeat(pad))].into(),
            ..Default::default()
        }
    }

    #[test]
    fn chunks_stay_under_the_budget_and_keep_every_item_once_in_order() {
        let items: Vec<Container> = (0..5000).map(|i| container(i, 900)).collect();
        let chunks = split(items, CHUNK_BYTES);
        assert!(chunks.len() > 1, "{} chunks", chunks.len());
        let mut next = 0;
        for chunk in &chunks {
            assert!(!chunk.is_empty());
            let msg = StreamContainersResponse {
                containers: chunk.clone(),
            };
            assert!(msg.encoded_len() <= CHUNK_BYTES, "{}", msg.encoded_len());
            for c in chunk {
                assert_eq!(c.id, format!("{next:064}"));
                next += 1;
            }
        }
        assert_eq!(next, 5000);
    }

    #[test]
    fn an_item_larger_than_the_budget_goes_alone() {
        let items = vec![container(0, 10), container(1, 3000), container(2, 10)];
        let chunks = split(items, 1000);
        let sizes: Vec<usize> = chunks.iter().map(Vec::len).collect();
        assert_eq!(sizes, [1, 1, 1]);
    }

    #[tokio::test]
    async fn nothing_to_send_is_an_empty_stream() {
        let s = chunked(Vec::<Container>::new(), |containers| {
            StreamContainersResponse { containers }
        });
        assert_eq!(s.count().await, 0);
    }
}
