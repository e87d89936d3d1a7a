//! The one tower layer around every gRPC request berthd serves: the
//! client's deadline ([`crate::deadline`]) and the RPC's code and time
//! ([`crate::prometheus`]).

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use tonic::codegen::http;
use tower::{Layer, Service};

#[derive(Clone, Copy, Debug, Default)]
pub struct RpcLayer;

impl<S> Layer<S> for RpcLayer {
    type Service = Rpc<S>;

    fn layer(&self, inner: S) -> Rpc<S> {
        Rpc { inner }
    }
}

#[derive(Clone, Debug)]
pub struct Rpc<S> {
    inner: S,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for Rpc<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = http::Response<ResBody>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<ReqBody>) -> Self::Future {
        let rpc = req.uri().path().to_owned();
        let budget = crate::deadline::budget(req.headers());
        let started = Instant::now();
        let answer = self.inner.call(req);
        Box::pin(async move {
            let res = crate::deadline::bounded(&rpc, budget, answer).await;
            crate::prometheus::global().rpc_answered(&rpc, &res, started.elapsed());
            res
        })
    }
}
