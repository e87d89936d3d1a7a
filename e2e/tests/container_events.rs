//! `GetContainerEvents` against a real berthd: two subscribers each see a
//! container's created, started, stopped and deleted events in order, with
//! the pod's status and its containers' statuses, whatever caused the
//! change (CRI calls, and an exit the monitor reported); and the pod's own
//! created, started, stopped and deleted, with the pod id as the container id
//! (as containerd and CRI-O send them). Needs root.

use std::time::Duration;

use berth_api::v1::*;
use berth_e2e::pods::*;
use futures::StreamExt;

async fn next_event(s: &mut tonic::Streaming<ContainerEventResponse>) -> ContainerEventResponse {
    tokio::time::timeout(Duration::from_secs(30), s.next())
        .await
        .expect("no container event within 30 s")
        .expect("the event stream ended")
        .unwrap()
}

#[tokio::test]
async fn subscribers_see_each_lifecycle_event_with_the_pod_statuses() {
    let mut env = setup(&[BUSYBOX]).await;
    let mut subs = Vec::new();
    for _ in 0..2 {
        subs.push(
            env.c
                .runtime
                .get_container_events(GetEventsRequest {})
                .await
                .unwrap()
                .into_inner(),
        );
    }
    let (pod, pc) = run_pod(&mut env, "events").await;
    // Exits on its own: the stop comes from the monitor, not a CRI call.
    let id = create(&mut env.c, &pod, &pc, ctr_config("e", BUSYBOX, "sleep 1"))
        .await
        .unwrap();
    start(&mut env.c, &id).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while status(&mut env.c, &id).await.unwrap().state != ContainerState::ContainerExited as i32 {
        assert!(
            std::time::Instant::now() < deadline,
            "the container did not exit"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    remove_container(&mut env.c, &id).await;

    stop_pod(&mut env.c, &pod).await;
    remove_pod(&mut env.c, &pod).await;

    for s in &mut subs {
        // Everything up to the pod's own deleted event.
        let mut seen = Vec::new();
        loop {
            let ev = next_event(s).await;
            let done = ev.container_id == pod
                && ev.container_event_type == ContainerEventType::ContainerDeletedEvent as i32;
            seen.push(ev);
            if done {
                break;
            }
        }
        // The pod's own events, with its id as the container id.
        let pod_kinds: Vec<i32> = seen
            .iter()
            .filter(|e| e.container_id == pod)
            .map(|e| e.container_event_type)
            .collect();
        use ContainerEventType as E;
        assert_eq!(
            pod_kinds,
            [
                E::ContainerCreatedEvent as i32,
                E::ContainerStartedEvent as i32,
                E::ContainerStoppedEvent as i32,
                E::ContainerDeletedEvent as i32
            ],
            "{seen:?}"
        );
        for ev in seen.iter().filter(|e| e.container_id == pod) {
            let ps = ev.pod_sandbox_status.as_ref().expect("the pod's status");
            assert_eq!(
                ps.metadata.as_ref().unwrap().uid,
                pc.metadata.as_ref().unwrap().uid
            );
        }
        let mut mine = seen.iter().filter(|e| e.container_id == id);
        let mut last_at = 0;
        for (kind, state) in [
            (
                E::ContainerCreatedEvent,
                Some(ContainerState::ContainerCreated),
            ),
            (
                E::ContainerStartedEvent,
                Some(ContainerState::ContainerRunning),
            ),
            (
                E::ContainerStoppedEvent,
                Some(ContainerState::ContainerExited),
            ),
            (E::ContainerDeletedEvent, None),
        ] {
            let ev = mine.next().expect("a container event missing");
            assert_eq!(ev.container_event_type, kind as i32, "{ev:?}");
            assert!(ev.created_at >= last_at, "{ev:?}");
            last_at = ev.created_at;
            let ps = ev.pod_sandbox_status.as_ref().expect("the pod's status");
            assert_eq!(ps.id, pod);
            assert_eq!(
                ps.metadata.as_ref().unwrap().uid,
                pc.metadata.as_ref().unwrap().uid
            );
            let own: Vec<&ContainerStatus> = ev
                .containers_statuses
                .iter()
                .filter(|c| c.id == id)
                .collect();
            match state {
                Some(state) => {
                    assert_eq!(own.len(), 1, "{ev:?}");
                    // The record may already be further along when sent.
                    assert!(own[0].state >= state as i32, "{ev:?}");
                }
                None => assert!(own.is_empty(), "{ev:?}"),
            }
        }
        assert!(mine.next().is_none(), "{seen:?}");
    }
}

/// PodSandboxStatus lists the pod's own containers, newest first, and no
/// `timestamp`: with one, a kubelet with EventedPLEG takes its containers
/// from this list (an empty list reads as "no containers") but loses which
/// are the current sandbox's, and reruns init containers forever.
#[tokio::test]
async fn pod_status_carries_its_own_containers_and_when_they_were_read() {
    let mut env = setup(&[BUSYBOX]).await;
    let (pod, pc) = run_pod(&mut env, "with-ctrs").await;
    let (other, other_pc) = run_pod(&mut env, "other").await;
    let id = create(&mut env.c, &pod, &pc, ctr_config("c", BUSYBOX, "sleep 60"))
        .await
        .unwrap();
    let stranger = create(
        &mut env.c,
        &other,
        &other_pc,
        ctr_config("s", BUSYBOX, "sleep 60"),
    )
    .await
    .unwrap();
    start(&mut env.c, &id).await;

    let first = pod_status_response(&mut env.c, &pod).await;
    let states: Vec<(&str, i32)> = first
        .containers_statuses
        .iter()
        .map(|c| (c.id.as_str(), c.state))
        .collect();
    assert_eq!(
        states,
        [(id.as_str(), ContainerState::ContainerRunning as i32)],
        "only the pod's own container, as it is: {first:?}"
    );
    assert!(!states.iter().any(|(c, _)| *c == stranger));
    // No timestamp: a kubelet with EventedPLEG then reads the pod's
    // containers as it does without it (see sandbox_status.rs).
    assert_eq!(first.timestamp, 0);

    stop_container(&mut env.c, &id).await;
    let second = pod_status_response(&mut env.c, &pod).await;
    assert_eq!(
        second.containers_statuses[0].state,
        ContainerState::ContainerExited as i32,
        "{second:?}"
    );

    // The restart: newest first, as the kubelet takes the first status
    // of a name for its latest attempt.
    let mut again = ctr_config("c", BUSYBOX, "sleep 60");
    again.metadata.as_mut().unwrap().attempt = 1;
    let restarted = create(&mut env.c, &pod, &pc, again).await.unwrap();
    start(&mut env.c, &restarted).await;
    let third = pod_status_response(&mut env.c, &pod).await;
    let order: Vec<(&str, i32)> = third
        .containers_statuses
        .iter()
        .map(|c| (c.id.as_str(), c.state))
        .collect();
    assert_eq!(
        order,
        [
            (restarted.as_str(), ContainerState::ContainerRunning as i32),
            (id.as_str(), ContainerState::ContainerExited as i32)
        ],
        "the latest attempt first: {third:?}"
    );

    for p in [&pod, &other] {
        stop_pod(&mut env.c, p).await;
        remove_pod(&mut env.c, p).await;
    }
}
