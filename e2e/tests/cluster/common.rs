//! What every cluster test uses: a client, a namespace of its own, waiting for a condition with
//! a deadline (and the object's state in the panic message when it is not met), kubectl.

use std::fmt::Debug;
use std::future::Future;
use std::process::Output;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ContainerStatus, Namespace, Pod, ServiceAccount};
use k8s_openapi::serde::de::DeserializeOwned;
use kube::api::{Api, DeleteParams, LogParams, PostParams};
use kube::{Client, Resource};
use serde_json::Value;

/// The node hack/cluster.sh registers, or the one hack/kind.sh names (BERTH_NODE_NAME): where
/// tests that need a node's files run their pods.
pub fn node_name() -> String {
    std::env::var("BERTH_NODE_NAME").unwrap_or_else(|_| "berth-node".into())
}

/// The cluster's run dir (BERTH_CLUSTER_RUN_DIR): berthd's pid file lives there.
pub fn run_dir() -> String {
    std::env::var("BERTH_CLUSTER_RUN_DIR").unwrap_or_else(|_| "/run/berth-cluster".into())
}

/// Small, local images (hack/cluster/images.sh): never pulled from anywhere but the cluster's
/// registry; IfNotPresent so a test does not ask the registry again for every pod.
pub const BUSYBOX: &str = "busybox";
pub const NGINX: &str = "nginx";

pub async fn client() -> Client {
    Client::try_default()
        .await
        .expect("no Kubernetes client: run through hack/cluster-test.sh (or eval \"$(hack/cluster.sh env)\")")
}

/// A namespace that lives as long as the test: created with a unique name, deleted (without
/// waiting) when dropped, also when the test panics.
pub struct TestNs {
    pub name: String,
    pub client: Client,
}

impl TestNs {
    pub async fn new(prefix: &str) -> TestNs {
        let client = client().await;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let name = format!(
            "e2e-{prefix}-{:x}{:05x}",
            std::process::id() & 0xfff,
            nanos >> 12
        );
        let ns: Namespace = from_json(serde_json::json!({
            "metadata": { "name": name, "labels": { "berth-e2e": "cluster" } }
        }));
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .unwrap_or_else(|e| panic!("create namespace {name}: {e}"));
        let test_ns = TestNs { name, client };
        // Pods are refused until the service account controller made "default".
        let sas: Api<ServiceAccount> = test_ns.api();
        wait_for(
            "service account default",
            Duration::from_secs(30),
            || async { sas.get_opt("default").await.ok().flatten() },
        )
        .await;
        test_ns
    }

    pub fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.name)
    }

    /// Creates an object of this namespace from its JSON manifest.
    pub async fn create<K>(&self, manifest: Value) -> K
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + DeserializeOwned
            + k8s_openapi::serde::Serialize
            + Debug,
        <K as Resource>::DynamicType: Default,
    {
        let object: K = from_json(manifest);
        self.api::<K>()
            .create(&PostParams::default(), &object)
            .await
            .unwrap_or_else(|e| panic!("create {:?} in {}: {e}", object.meta().name, self.name))
    }

    /// The pod, once `cond` holds for it; panics with its status after `timeout`.
    pub async fn wait_pod(
        &self,
        name: &str,
        what: &str,
        timeout: Duration,
        cond: impl Fn(&Pod) -> bool,
    ) -> Pod {
        let pods: Api<Pod> = self.api();
        let mut last = None;
        let deadline = Instant::now() + timeout;
        loop {
            match pods.get_opt(name).await {
                Ok(Some(pod)) if cond(&pod) => return pod,
                Ok(pod) => last = pod,
                Err(e) => eprintln!("get pod {name}: {e}"),
            }
            if Instant::now() > deadline {
                let status = last
                    .and_then(|p| p.status)
                    .map(|s| serde_json::to_string_pretty(&s).unwrap());
                panic!(
                    "pod {}/{name}: not {what} within {timeout:?}; its status: {}\nevents:\n{}",
                    self.name,
                    status.unwrap_or_else(|| "(no pod)".into()),
                    self.events()
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// `kubectl get events` of the namespace, for failure messages.
    pub fn events(&self) -> String {
        let out = kubectl(&[
            "-n",
            &self.name,
            "get",
            "events",
            "--sort-by=.lastTimestamp",
        ]);
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
    }

    /// The logs of a pod's container (through the API, as `kubectl logs`).
    pub async fn logs(&self, pod: &str, container: Option<&str>) -> String {
        let params = LogParams {
            container: container.map(str::to_owned),
            ..LogParams::default()
        };
        self.api::<Pod>()
            .logs(pod, &params)
            .await
            .unwrap_or_else(|e| panic!("logs of {}/{pod}: {e}", self.name))
    }

    /// Runs a pod to completion (restartPolicy Never) and returns it with its logs; panics
    /// unless it succeeded.
    pub async fn run_to_success(&self, manifest: Value, timeout: Duration) -> (Pod, String) {
        let pod: Pod = self.create(manifest).await;
        let name = pod.metadata.name.unwrap();
        let pod = self
            .wait_pod(&name, "finished", timeout, |p| {
                matches!(phase(p), "Succeeded" | "Failed")
            })
            .await;
        // One container: its log; more: each one's, under a "== NAME ==" line.
        let names: Vec<String> = pod
            .spec
            .iter()
            .flat_map(|s| s.containers.iter().map(|c| c.name.clone()))
            .collect();
        let logs = if let [only] = names.as_slice() {
            self.logs(&name, Some(only)).await
        } else {
            let mut all = String::new();
            for container in &names {
                all += &format!(
                    "== {container} ==\n{}",
                    self.logs(&name, Some(container)).await
                );
            }
            all
        };
        assert_eq!(
            phase(&pod),
            "Succeeded",
            "pod {name} failed; its logs:\n{logs}\nstatus: {:?}",
            pod.status
        );
        (pod, logs)
    }

    /// The pod's IP once it is running.
    pub async fn pod_ip(&self, name: &str) -> String {
        let pod = self
            .wait_pod(name, "Ready", Duration::from_secs(60), pod_ready)
            .await;
        pod.status
            .and_then(|s| s.pod_ip)
            .expect("a Ready pod has an IP")
    }
}

impl Drop for TestNs {
    fn drop(&mut self) {
        // Synchronous on purpose (Drop also runs while a panic unwinds): the namespace
        // controller deletes the pods; hack/cluster-test.sh waits for them at the end.
        let out = kubectl(&["delete", "namespace", &self.name, "--wait=false"]);
        if !out.status.success() {
            eprintln!(
                "delete namespace {}: {}",
                self.name,
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

pub fn from_json<K: DeserializeOwned>(manifest: Value) -> K {
    serde_json::from_value(manifest.clone()).unwrap_or_else(|e| {
        panic!(
            "bad manifest ({e}):\n{}",
            serde_json::to_string_pretty(&manifest).unwrap()
        )
    })
}

/// Polls `probe` every 250 ms until it returns Some; panics after `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        if Instant::now() > deadline {
            panic!("{what}: not within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

pub fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

pub fn pod_ready(pod: &Pod) -> bool {
    condition_true(pod, "Ready")
}

pub fn condition_true(pod: &Pod, kind: &str) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == kind && c.status == "True"))
}

pub fn container_status<'a>(pod: &'a Pod, name: &str) -> &'a ContainerStatus {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.name == name))
        .unwrap_or_else(|| {
            panic!(
                "pod {:?} has no status for container {name}",
                pod.metadata.name
            )
        })
}

pub fn has_container_status<'a>(pod: &'a Pod, name: &str) -> Option<&'a ContainerStatus> {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.name == name))
}

pub fn restart_count(pod: &Pod, container: &str) -> i32 {
    has_container_status(pod, container).map_or(0, |c| c.restart_count)
}

/// kubectl from PATH (hack/cluster.sh env puts the cluster's there), KUBECONFIG from the
/// environment.
pub fn kubectl(args: &[&str]) -> Output {
    std::process::Command::new("kubectl")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run kubectl {args:?}: {e}"))
}

/// kubectl with a deadline: Err(what it printed so far) if it did not finish in time.
pub async fn kubectl_timeout(args: &[&str], timeout: Duration) -> Result<Output, String> {
    let child = tokio::process::Command::new("kubectl")
        .args(args)
        .kill_on_drop(true)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("run kubectl {args:?}: {e}"));
    match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(out) => Ok(out.expect("kubectl output")),
        Err(_) => Err(format!(
            "kubectl {args:?} did not finish within {timeout:?}"
        )),
    }
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Deletes a pod with the API default options and waits until it is gone.
pub async fn delete_pod_and_wait(ns: &TestNs, name: &str, timeout: Duration) -> Duration {
    let pods: Api<Pod> = ns.api();
    let started = Instant::now();
    pods.delete(name, &DeleteParams::default())
        .await
        .unwrap_or_else(|e| panic!("delete pod {name}: {e}"));
    wait_for(&format!("pod {}/{name} gone", ns.name), timeout, || async {
        matches!(pods.get_opt(name).await, Ok(None)).then_some(())
    })
    .await;
    started.elapsed()
}

/// A busybox container spec (JSON) running `script` with sh.
pub fn busybox(name: &str, script: &str) -> Value {
    serde_json::json!({
        "name": name,
        "image": BUSYBOX,
        "imagePullPolicy": "IfNotPresent",
        "command": ["sh", "-c", script],
    })
}

/// A pod manifest with these containers, restartPolicy and terminationGracePeriod 1 s (tests
/// should not wait 30 s for a `sleep` to die); `extra` is merged into the spec.
pub fn pod(name: &str, restart: &str, containers: Vec<Value>, extra: Value) -> Value {
    let mut spec = serde_json::json!({
        "restartPolicy": restart,
        "terminationGracePeriodSeconds": 1,
        "containers": containers,
    });
    if let (Some(spec), Value::Object(extra)) = (spec.as_object_mut(), extra) {
        spec.extend(extra);
    }
    serde_json::json!({ "metadata": { "name": name, "labels": { "app": name } }, "spec": spec })
}
