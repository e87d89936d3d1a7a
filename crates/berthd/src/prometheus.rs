//! berthd's own Prometheus endpoint (`[metrics] address`, off by default):
//! `GET /metrics` in the OpenMetrics text format, through the
//! `prometheus-client` crate.
//!
//! Metric names (also in `hack/config.example.toml`):
//! - `berth_cri_requests_total{rpc,code}`: CRI and admin RPCs answered, by
//!   gRPC code (`OK` when the answer carries no error status up front: a
//!   unary success's status travels in its trailers).
//! - `berth_cri_request_duration_seconds{rpc}`: time to the answer's
//!   headers (a unary RPC's whole time; a stream's time to its start).
//! - `berth_cni_duration_seconds{op,result}`: CNI ADD and DEL of a pod.
//! - `berth_pods{state}`, `berth_containers{state}`: records by CRI state,
//!   read at scrape time.
//! - `berth_pod_monitors{watch}`: pod monitors berthd follows, by how.
//! - `berth_pod_monitors_unresponsive_total`: times a monitor stopped
//!   answering past its deadline (its containers read UNKNOWN meanwhile).
//! - `berth_containers_lost_total`: containers whose exit can never be
//!   known, stored exited with code 255: their monitor vanished under them
//!   (killed, crashed) or no longer has them (a host reboot). Berth never
//!   restarts a monitor: it is its containers' parent, so a lost one is
//!   its pod's end, and this counter is what an operator alerts on.
//! - `berth_image_pulls_total{result}`, `berth_image_pull_duration_seconds
//!   {result}`: `PullImage`s by gRPC code (`OK` on success).
//! - `berth_image_pull_layer_bytes_total`: layer bytes received from
//!   registries (failed downloads included; layers already stored cost 0).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tonic::codegen::http;

use crate::daemon::Daemon;

type Labels = Vec<(&'static str, String)>;

fn latency() -> Histogram {
    // 0.25 ms to ~8 s.
    Histogram::new(exponential_buckets(0.000_25, 2.0, 16))
}

fn pull_latency() -> Histogram {
    // 10 ms to ~5 min.
    Histogram::new(exponential_buckets(0.01, 2.0, 16))
}

pub struct Metrics {
    registry: Registry,
    requests: Family<Labels, Counter>,
    request_seconds: Family<Labels, Histogram, fn() -> Histogram>,
    cni_seconds: Family<Labels, Histogram, fn() -> Histogram>,
    pods: Family<Labels, Gauge>,
    containers: Family<Labels, Gauge>,
    monitors: Family<Labels, Gauge>,
    monitors_unresponsive: Counter,
    containers_lost: Counter,
    pulls: Family<Labels, Counter>,
    pull_seconds: Family<Labels, Histogram, fn() -> Histogram>,
    pull_layer_bytes: Counter,
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::with_prefix("berth");
        let requests = Family::<Labels, Counter>::default();
        let request_seconds =
            Family::<Labels, Histogram, fn() -> Histogram>::new_with_constructor(latency);
        let cni_seconds =
            Family::<Labels, Histogram, fn() -> Histogram>::new_with_constructor(latency);
        let pods = Family::<Labels, Gauge>::default();
        let containers = Family::<Labels, Gauge>::default();
        let monitors = Family::<Labels, Gauge>::default();
        let monitors_unresponsive = Counter::default();
        let containers_lost = Counter::default();
        let pulls = Family::<Labels, Counter>::default();
        let pull_seconds =
            Family::<Labels, Histogram, fn() -> Histogram>::new_with_constructor(pull_latency);
        let pull_layer_bytes = Counter::default();
        registry.register(
            "cri_requests",
            "CRI and admin RPCs answered, by gRPC code",
            requests.clone(),
        );
        registry.register(
            "cri_request_duration_seconds",
            "Time from a request to its answer's headers",
            request_seconds.clone(),
        );
        registry.register(
            "cni_duration_seconds",
            "CNI ADD and DEL of a pod's network",
            cni_seconds.clone(),
        );
        registry.register("pods", "Pod sandboxes by state", pods.clone());
        registry.register("containers", "Containers by state", containers.clone());
        registry.register(
            "pod_monitors",
            "Pod monitors berthd follows, by watch mode",
            monitors.clone(),
        );
        registry.register(
            "pod_monitors_unresponsive",
            "Times a pod monitor stopped answering past its deadline",
            monitors_unresponsive.clone(),
        );
        registry.register(
            "containers_lost",
            "Containers whose exit can never be known: their monitor vanished or forgot them (stored exited, code 255)",
            containers_lost.clone(),
        );
        registry.register("image_pulls", "PullImage by gRPC code", pulls.clone());
        registry.register(
            "image_pull_duration_seconds",
            "PullImage time, by gRPC code",
            pull_seconds.clone(),
        );
        registry.register(
            "image_pull_layer_bytes",
            "Layer bytes received from registries",
            pull_layer_bytes.clone(),
        );
        Metrics {
            registry,
            requests,
            request_seconds,
            cni_seconds,
            pods,
            containers,
            monitors,
            monitors_unresponsive,
            containers_lost,
            pulls,
            pull_seconds,
            pull_layer_bytes,
        }
    }

    /// A pod monitor stopped answering past its deadline.
    pub fn monitor_unresponsive(&self) {
        self.monitors_unresponsive.inc();
    }

    /// A container was found lost (stored exited, code 255).
    pub fn container_lost(&self) {
        self.containers_lost.inc();
    }

    /// One `PullImage` answered: `code` is `OK` or the gRPC code's name.
    pub fn pull(&self, code: &str, took: Duration) {
        let labels = vec![("result", code.to_string())];
        self.pulls.get_or_create(&labels).inc();
        self.pull_seconds
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
    }

    /// One RPC answered: its gRPC code (`OK` when the answer carries no
    /// status up front) and its time.
    pub fn rpc_answered<B, E>(
        &self,
        rpc: &str,
        res: &Result<http::Response<B>, E>,
        took: Duration,
    ) {
        let code = match res {
            Ok(r) => r
                .headers()
                .get("grpc-status")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<i32>().ok())
                .map_or("OK".to_string(), |c| format!("{:?}", tonic::Code::from(c))),
            Err(_) => "transport error".to_string(),
        };
        self.rpc(rpc, &code, took);
    }

    fn rpc(&self, rpc: &str, code: &str, took: Duration) {
        self.requests
            .get_or_create(&vec![("rpc", rpc.to_string()), ("code", code.to_string())])
            .inc();
        self.request_seconds
            .get_or_create(&vec![("rpc", rpc.to_string())])
            .observe(took.as_secs_f64());
    }

    /// One CNI ADD or DEL.
    pub fn cni(&self, op: &'static str, ok: bool, took: Duration) {
        let result = if ok { "ok" } else { "error" };
        self.cni_seconds
            .get_or_create(&vec![
                ("op", op.to_string()),
                ("result", result.to_string()),
            ])
            .observe(took.as_secs_f64());
    }

    /// The text exposition, with the state gauges read now.
    pub async fn render(&self, daemon: &Daemon) -> String {
        use berth_api::v1::{ContainerState, PodSandboxState};
        self.pods.clear();
        for state in [
            PodSandboxState::SandboxReady,
            PodSandboxState::SandboxNotready,
        ] {
            self.pods
                .get_or_create(&vec![("state", state.as_str_name().to_string())])
                .set(0);
        }
        for p in daemon.sandboxes().list() {
            let state = p.state.to_cri().as_str_name().to_string();
            self.pods.get_or_create(&vec![("state", state)]).inc();
        }
        self.containers.clear();
        for state in [
            ContainerState::ContainerCreated,
            ContainerState::ContainerRunning,
            ContainerState::ContainerExited,
        ] {
            self.containers
                .get_or_create(&vec![("state", state.as_str_name().to_string())])
                .set(0);
        }
        if let Ok(recs) = daemon.containers().list().await {
            for r in recs {
                let state = r.state.to_cri().as_str_name().to_string();
                self.containers.get_or_create(&vec![("state", state)]).inc();
            }
        }
        self.monitors.clear();
        for (mode, n) in daemon.containers().monitors_by_mode() {
            self.monitors
                .get_or_create(&vec![("watch", mode.to_string())])
                .set(n as i64);
        }
        // The image store counts; the counter takes its value (fetch_max:
        // two scrapes at once cannot add it twice).
        self.pull_layer_bytes
            .inner()
            .fetch_max(daemon.images().layer_bytes_fetched(), Ordering::Relaxed);
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

/// The process's metrics (recorded whether or not the endpoint is on:
/// a few atomic adds per RPC).
pub fn global() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

/// Serves `GET /metrics` on `addr` for the daemon's lifetime.
pub async fn serve(addr: SocketAddr, daemon: Arc<Daemon>) -> anyhow::Result<SocketAddr> {
    use anyhow::Context as _;
    use http_body_util::Full;
    use hyper::body::{Bytes, Incoming};
    use hyper_util::rt::TokioIo;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} (setting metrics.address)"))?;
    let bound = listener.local_addr()?;
    tracing::info!(address = %bound, "serving Prometheus metrics on /metrics");
    tokio::spawn(async move {
        loop {
            let Ok((conn, _)) = listener.accept().await else {
                continue;
            };
            let daemon = daemon.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: http::Request<Incoming>| {
                    let daemon = daemon.clone();
                    async move {
                        if req.method() == http::Method::GET && req.uri().path() == "/metrics" {
                            let body = global().render(&daemon).await;
                            http::Response::builder()
                                .header(
                                    "content-type",
                                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                                )
                                .body(Full::new(Bytes::from(body)))
                        } else {
                            http::Response::builder()
                                .status(http::StatusCode::NOT_FOUND)
                                .body(Full::new(Bytes::from_static(b"only GET /metrics\n")))
                        }
                    }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(conn), svc);
                // A slow or broken scraper only loses its own connection.
                let _ = tokio::time::timeout(Duration::from_secs(60), conn).await;
            });
        }
    });
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use tower::{Layer, Service};

    use super::*;
    use crate::rpc_layer::RpcLayer;

    #[tokio::test]
    async fn rpcs_are_counted_by_code_and_timed() {
        let svc = tower::service_fn(|req: http::Request<()>| async move {
            let mut res = http::Response::new(());
            if req.uri().path().ends_with("Missing") {
                res.headers_mut()
                    .insert("grpc-status", "5".parse().unwrap());
            }
            Ok::<_, Infallible>(res)
        });
        let mut svc = RpcLayer.layer(svc);
        for path in ["/t.S/Fine", "/t.S/Fine", "/t.S/Missing"] {
            let req = http::Request::builder().uri(path).body(()).unwrap();
            svc.call(req).await.unwrap();
        }
        let mut out = String::new();
        encode(&mut out, &global().registry).unwrap();
        assert!(
            out.contains(r#"berth_cri_requests_total{rpc="/t.S/Fine",code="OK"} 2"#),
            "{out}"
        );
        assert!(
            out.contains(r#"berth_cri_requests_total{rpc="/t.S/Missing",code="NotFound"} 1"#),
            "{out}"
        );
        assert!(
            out.contains(r#"berth_cri_request_duration_seconds_count{rpc="/t.S/Fine"} 2"#),
            "{out}"
        );
    }
}
