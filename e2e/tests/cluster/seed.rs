//! The seed scenario: 30 nginx replicas from one image, all Ready; scaled to 0 and back to 30;
//! a ClusterIP Service reaches them through kube-proxy, by IP and by its CoreDNS name.

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{ListParams, Patch, PatchParams};
use serde_json::json;

use crate::common::*;

const REPLICAS: i32 = 30;

async fn ready_replicas(deployments: &kube::Api<Deployment>, name: &str) -> i32 {
    deployments
        .get(name)
        .await
        .ok()
        .and_then(|d| d.status)
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0)
}

async fn wait_ready_replicas(ns: &TestNs, name: &str, want: i32, timeout: Duration) -> Duration {
    let deployments: kube::Api<Deployment> = ns.api();
    let started = Instant::now();
    let deadline = started + timeout;
    loop {
        let ready = ready_replicas(&deployments, name).await;
        if ready == want {
            return started.elapsed();
        }
        if Instant::now() > deadline {
            let pods = kubectl(&["-n", &ns.name, "get", "pods", "-o", "wide"]);
            panic!(
                "deployment {name}: {ready} of {want} replicas Ready after {timeout:?}\n{}\n{}",
                text(&pods.stdout),
                ns.events()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn seed_30_nginx_replicas_scale_and_service() {
    let ns = TestNs::new("seed").await;
    let deployments: kube::Api<Deployment> = ns.api();
    let started = Instant::now();
    ns.create::<Deployment>(json!({
        "metadata": { "name": "web" },
        "spec": {
            "replicas": REPLICAS,
            "selector": { "matchLabels": { "app": "web" } },
            "template": {
                "metadata": { "labels": { "app": "web" } },
                "spec": {
                    "terminationGracePeriodSeconds": 2,
                    "containers": [{
                        "name": "nginx",
                        "image": NGINX,
                        "imagePullPolicy": "IfNotPresent",
                        "ports": [{ "containerPort": 80 }],
                        "readinessProbe": { "httpGet": { "path": "/", "port": 80 }, "periodSeconds": 2 },
                    }],
                },
            },
        },
    }))
    .await;
    wait_ready_replicas(&ns, "web", REPLICAS, Duration::from_secs(150)).await;
    let to_ready = started.elapsed();
    println!(
        "seed: {REPLICAS} nginx replicas from create to all Ready: {:.1} s",
        to_ready.as_secs_f64()
    );

    // One image for all: every pod runs the same image ID.
    let pods: kube::Api<Pod> = ns.api();
    let listed = pods
        .list(&ListParams::default().labels("app=web"))
        .await
        .unwrap();
    let image_ids: std::collections::BTreeSet<String> = listed
        .items
        .iter()
        .map(|p| container_status(p, "nginx").image_id.clone())
        .collect();
    assert_eq!(
        image_ids.len(),
        1,
        "the replicas run different images: {image_ids:?}"
    );

    // Scale to 0: every pod goes away.
    let scale = |n: i32| json!({ "spec": { "replicas": n } });
    let started = Instant::now();
    deployments
        .patch("web", &PatchParams::default(), &Patch::Merge(scale(0)))
        .await
        .unwrap();
    wait_for("all web pods deleted", Duration::from_secs(90), || async {
        let left = pods
            .list(&ListParams::default().labels("app=web"))
            .await
            .ok()?;
        left.items.is_empty().then_some(())
    })
    .await;
    println!(
        "seed: scaled to 0 in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let started = Instant::now();
    deployments
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(scale(REPLICAS)),
        )
        .await
        .unwrap();
    wait_ready_replicas(&ns, "web", REPLICAS, Duration::from_secs(150)).await;
    println!(
        "seed: scaled back to {REPLICAS} Ready in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // The Service: kube-proxy's DNAT to the ready endpoints.
    let svc: Service = ns
        .create(json!({
            "metadata": { "name": "web" },
            "spec": { "selector": { "app": "web" }, "ports": [{ "port": 80, "targetPort": 80 }] },
        }))
        .await;
    let cluster_ip = svc.spec.and_then(|s| s.cluster_ip).expect("a ClusterIP");
    let slices: kube::Api<EndpointSlice> = ns.api();
    wait_for(
        "30 ready endpoints for the Service",
        Duration::from_secs(60),
        || async {
            let list = slices
                .list(&ListParams::default().labels("kubernetes.io/service-name=web"))
                .await
                .ok()?;
            let ready = list
                .items
                .iter()
                .flat_map(|s| s.endpoints.iter().flatten())
                .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) == Some(true))
                .count();
            (ready == REPLICAS as usize).then_some(())
        },
    )
    .await;

    let dns_name = format!("web.{}.svc.cluster.local", ns.name);
    // kube-proxy syncs its rules a moment after the endpoints change: retry for a while.
    let script = format!(
        "for url in http://{cluster_ip} http://{dns_name}; do ok=; \
         for i in $(seq 30); do if timeout 5 wget -qO- $url; then ok=1; break; fi; sleep 1; done; \
         [ -n \"$ok\" ] || {{ echo FAILED $url; exit 1; }}; echo OK $url; done"
    );
    let (_, logs) = ns
        .run_to_success(
            pod("client", "Never", vec![busybox("wget", &script)], json!({})),
            Duration::from_secs(90),
        )
        .await;
    assert!(
        logs.contains(&format!("OK http://{cluster_ip}")),
        "no answer by ClusterIP:\n{logs}"
    );
    assert!(
        logs.contains(&format!("OK http://{dns_name}")),
        "no answer by DNS name:\n{logs}"
    );
    assert!(
        logs.contains("Welcome to nginx!"),
        "not nginx's page:\n{logs}"
    );
}
