//! The `Stream*` list RPCs (CRIListStreaming) against a real berthd: each
//! answers what its `List*` twin answers, filters included, every item in
//! exactly one message; a list larger than one message's budget comes in
//! several messages, each under the gRPC limit. Needs root.

use std::collections::BTreeSet;

use berth_api::v1::*;
use berth_e2e::pods::*;
use futures::StreamExt;
use prost::Message;

/// Every message of a stream; panics on an error or an empty message.
async fn collect<T: Message>(mut s: tonic::Streaming<T>) -> Vec<T> {
    let mut out = Vec::new();
    while let Some(m) = s.next().await {
        let m = m.unwrap();
        assert!(m.encoded_len() > 0, "an empty message");
        // Our own budget, with room to spare under the 4 MiB default.
        assert!(m.encoded_len() <= 1 << 20, "{} bytes", m.encoded_len());
        out.push(m);
    }
    out
}

fn sorted(ids: impl IntoIterator<Item = String>) -> Vec<String> {
    let v: Vec<String> = ids.into_iter().collect();
    let set: BTreeSet<&String> = v.iter().collect();
    assert_eq!(set.len(), v.len(), "an item sent twice: {v:?}");
    set.into_iter().cloned().collect()
}

#[tokio::test]
async fn every_stream_answers_what_its_list_answers() {
    let mut env = setup(&[BUSYBOX]).await;
    // 300 KiB of annotations per container: the 6 containers take more
    // than one message.
    let big = "a".repeat(300 << 10);
    let mut pods = Vec::new();
    let mut containers = Vec::new();
    for p in 0..2 {
        let (pod, pc) = run_pod(&mut env, &format!("stream-{p}")).await;
        for i in 0..3 {
            let mut cfg = ctr_config(&format!("c{i}"), BUSYBOX, "sleep 300");
            cfg.annotations.insert("big".into(), big.clone());
            let id = create(&mut env.c, &pod, &pc, cfg).await.unwrap();
            start(&mut env.c, &id).await;
            containers.push(id);
        }
        pods.push(pod);
    }
    let c = &mut env.c;

    // Containers: all, then one pod's.
    let msgs = collect(
        c.runtime
            .stream_containers(StreamContainersRequest::default())
            .await
            .unwrap()
            .into_inner(),
    )
    .await;
    assert!(msgs.len() > 1, "{} messages for ~1.8 MiB", msgs.len());
    let streamed = sorted(msgs.into_iter().flat_map(|m| m.containers).map(|c| c.id));
    let listed = c
        .runtime
        .list_containers(ListContainersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .containers;
    assert_eq!(streamed, sorted(listed.into_iter().map(|c| c.id)));
    assert_eq!(streamed, sorted(containers.clone()));
    let filter = ContainerFilter {
        pod_sandbox_id: pods[1].clone(),
        ..Default::default()
    };
    let msgs = collect(
        c.runtime
            .stream_containers(StreamContainersRequest {
                filter: Some(filter),
            })
            .await
            .unwrap()
            .into_inner(),
    )
    .await;
    let streamed = sorted(msgs.into_iter().flat_map(|m| m.containers).map(|c| c.id));
    assert_eq!(streamed, sorted(containers[3..].to_vec()));

    // Pods.
    let msgs = collect(
        c.runtime
            .stream_pod_sandboxes(StreamPodSandboxesRequest::default())
            .await
            .unwrap()
            .into_inner(),
    )
    .await;
    let streamed = sorted(msgs.into_iter().flat_map(|m| m.pod_sandboxes).map(|p| p.id));
    assert_eq!(streamed, sorted(pods.clone()));
    let filter = PodSandboxFilter {
        id: pods[0].clone(),
        ..Default::default()
    };
    let msgs = collect(
        c.runtime
            .stream_pod_sandboxes(StreamPodSandboxesRequest {
                filter: Some(filter),
            })
            .await
            .unwrap()
            .into_inner(),
    )
    .await;
    let streamed = sorted(msgs.into_iter().flat_map(|m| m.pod_sandboxes).map(|p| p.id));
    assert_eq!(streamed, vec![pods[0].clone()]);

    // Container and pod stats, pod metrics.
    let msgs = collect(
        c.runtime
            .stream_container_stats(StreamContainerStatsRequest::default())
            .await
            .unwrap()
            .into_inner(),
    )
    .await;
    let streamed = sorted(
        msgs.into_iter()
            .flat_map(|m| m.container_stats)
            .map(|s| s.attributes.unwrap().id),
    );
    assert_eq!(streamed, sorted(containers.clone()));
    let msgs = collect(
        c.runtime
            .stream_pod_sandbox_stats(StreamPodSandboxStatsRequest::default())
            .await
            .unwrap()
            .into_inner(),
    )
    .await;
    let streamed = sorted(
        msgs.into_iter()
            .flat_map(|m| m.pod_sandbox_stats)
            .map(|s| s.attributes.unwrap().id),
    );
    assert_eq!(streamed, sorted(pods.clone()));
    let msgs = collect(
        c.runtime
            .stream_pod_sandbox_metrics(StreamPodSandboxMetricsRequest {})
            .await
            .unwrap()
            .into_inner(),
    )
    .await;
    let streamed = sorted(
        msgs.into_iter()
            .flat_map(|m| m.pod_sandbox_metrics)
            .map(|m| m.pod_sandbox_id),
    );
    assert_eq!(streamed, sorted(pods.clone()));

    // Images.
    let msgs = collect(
        c.image
            .stream_images(StreamImagesRequest::default())
            .await
            .unwrap()
            .into_inner(),
    )
    .await;
    let streamed = sorted(msgs.into_iter().flat_map(|m| m.images).map(|i| i.id));
    let listed = c
        .image
        .list_images(ListImagesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .images;
    assert_eq!(streamed, sorted(listed.into_iter().map(|i| i.id)));
    assert!(!streamed.is_empty());

    for pod in &pods {
        stop_pod(c, pod).await;
        remove_pod(c, pod).await;
    }
    // Nothing left: every stream ends at once, with no message.
    let msgs = collect(
        c.runtime
            .stream_containers(StreamContainersRequest::default())
            .await
            .unwrap()
            .into_inner(),
    )
    .await;
    assert!(msgs.is_empty());
}
