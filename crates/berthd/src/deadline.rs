//! The client's deadline (`grpc-timeout`) enforced as gRPC says: an RPC
//! still running when it passes is dropped and answers DEADLINE_EXCEEDED.
//!
//! tonic's server already drops the handler at that deadline, but answers
//! CANCELLED ("Timeout expired"), which the kubelet and critest's "public
//! image should timeout if requested" read as a client cancel. Its timeout
//! layer wraps every layer a server adds, so its answer cannot be rewritten
//! from here; instead berthd's own layer (`rpc_layer`, inside it) gives
//! up a little earlier.
//! tonic polls the inner future before its own timer, so even when both
//! timers land on the same tick, this answer is the one sent. What the
//! handler was doing is dropped exactly as tonic would drop it: pulls,
//! creates and the rest are already safe to cancel at any await.

use std::time::Duration;

use tonic::codegen::http;

/// The client's budget from a request's `grpc-timeout`, if it sent one.
pub fn budget(headers: &http::HeaderMap) -> Option<Duration> {
    headers
        .get("grpc-timeout")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_grpc_timeout)
}

/// [`budget`] from a request's metadata (for a handler that bounds its own
/// work, to undo it before the deadline).
pub fn budget_of(metadata: &tonic::metadata::MetadataMap) -> Option<Duration> {
    budget(metadata.as_ref())
}

/// `answer` bounded by `budget`: past it, dropped and DEADLINE_EXCEEDED.
pub async fn bounded<B: Default, E>(
    rpc: &str,
    budget: Option<Duration>,
    answer: impl Future<Output = Result<http::Response<B>, E>>,
) -> Result<http::Response<B>, E> {
    let Some(budget) = budget else {
        return answer.await;
    };
    match tokio::time::timeout(ahead_of_tonic(budget), answer).await {
        Ok(answered) => answered,
        Err(_) => {
            tracing::warn!(rpc = %rpc, deadline = ?budget, "client deadline passed; request dropped");
            Ok(tonic::Status::deadline_exceeded(format!(
                "{rpc}: the client's deadline ({budget:?}) passed before it finished; \
                 it was stopped and left nothing behind (retry with a longer timeout)"
            ))
            .into_http())
        }
    }
}

/// Our timer's budget: 1/16 short of the client's, so it fires no later
/// than tonic's, which started a moment before ours.
fn ahead_of_tonic(budget: Duration) -> Duration {
    budget - budget / 16
}

/// `grpc-timeout`: at most 8 digits and a unit (H, M, S, m, u, n), as the
/// gRPC over HTTP/2 spec has it. Anything else is no deadline (tonic
/// ignores it too).
fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    let unit = value.chars().last()?;
    let digits = &value[..value.len() - unit.len_utf8()];
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        'H' => Duration::from_secs(n * 3600),
        'M' => Duration::from_secs(n * 60),
        'S' => Duration::from_secs(n),
        'm' => Duration::from_millis(n),
        'u' => Duration::from_micros(n),
        'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use tower::{Layer, Service};

    use super::*;
    use crate::rpc_layer::RpcLayer;

    #[test]
    fn grpc_timeout_values() {
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout("2M"), Some(Duration::from_secs(120)));
        assert_eq!(parse_grpc_timeout("3S"), Some(Duration::from_secs(3)));
        assert_eq!(parse_grpc_timeout("999m"), Some(Duration::from_millis(999)));
        assert_eq!(
            parse_grpc_timeout("999000u"),
            Some(Duration::from_millis(999))
        );
        assert_eq!(parse_grpc_timeout("12n"), Some(Duration::from_nanos(12)));
        for bad in ["", "S", "123456789S", "1x", "-1S", "1.5S", "1é", "１S"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad:?}");
        }
    }

    fn request(timeout: Option<&str>) -> http::Request<()> {
        let mut b = http::Request::builder().uri("/runtime.v1.ImageService/PullImage");
        if let Some(t) = timeout {
            b = b.header("grpc-timeout", t);
        }
        b.body(()).unwrap()
    }

    fn grpc_status(res: &http::Response<String>) -> Option<&str> {
        res.headers()
            .get("grpc-status")
            .map(|v| v.to_str().unwrap())
    }

    #[tokio::test]
    async fn late_answers_become_deadline_exceeded() {
        let slow = tower::service_fn(|_req: http::Request<()>| async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            Ok::<_, Infallible>(http::Response::new("late".to_string()))
        });
        let mut svc = RpcLayer.layer(slow);
        let started = std::time::Instant::now();
        let res = svc.call(request(Some("20m"))).await.unwrap();
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(grpc_status(&res), Some("4"), "DEADLINE_EXCEEDED");
        assert_eq!(res.body(), "");
    }

    #[tokio::test]
    async fn timely_or_unbounded_answers_pass_through() {
        let fast = tower::service_fn(|_req: http::Request<()>| async {
            Ok::<_, Infallible>(http::Response::new("answer".to_string()))
        });
        let mut svc = RpcLayer.layer(fast);
        for timeout in [Some("5S"), None, Some("garbage")] {
            let res = svc.call(request(timeout)).await.unwrap();
            assert_eq!((grpc_status(&res), res.body().as_str()), (None, "answer"));
        }
    }
}
