//! The RuntimeService with ListContainers answered from pre-encoded
//! containers ([`super::container_list::list_containers_encoded`]): tonic's
//! generated server fixes that method's answer to an owned
//! `ListContainersResponse`, so this wrapper takes the method's path first
//! and serves it with the same gRPC machinery and limits; every other call
//! goes to the generated server.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use berth_api::v1::ListContainersRequest;
use berth_api::v1::runtime_service_server::RuntimeServiceServer;
use tonic::body::Body;
use tonic::codegen::http;
use tonic::server::{Grpc, NamedService};
use tonic::{Request, Response};
use tonic_prost::ProstCodec;

use super::container_list::{EncodedContainers, list_containers_encoded};
use super::runtime_service::RuntimeSvc;
use crate::daemon::Daemon;

const LIST_CONTAINERS: &str = "/runtime.v1.RuntimeService/ListContainers";

/// [`RuntimeServiceServer`] with ListContainers taken first.
#[derive(Clone)]
pub struct RuntimeRoutes {
    inner: RuntimeServiceServer<RuntimeSvc>,
    daemon: Arc<Daemon>,
    max_decoding: usize,
}

impl RuntimeRoutes {
    /// `runtime`'s generated server and the ListContainers route, both
    /// decoding requests of at most `max_decoding` bytes.
    pub fn new(runtime: RuntimeSvc, daemon: Arc<Daemon>, max_decoding: usize) -> Self {
        RuntimeRoutes {
            inner: RuntimeServiceServer::new(runtime).max_decoding_message_size(max_decoding),
            daemon,
            max_decoding,
        }
    }
}

impl NamedService for RuntimeRoutes {
    const NAME: &'static str = <RuntimeServiceServer<RuntimeSvc> as NamedService>::NAME;
}

type BoxFuture = Pin<Box<dyn Future<Output = Result<http::Response<Body>, Infallible>> + Send>>;

impl tower::Service<http::Request<Body>> for RuntimeRoutes {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        tower::Service::<http::Request<Body>>::poll_ready(&mut self.inner, cx)
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        if req.uri().path() != LIST_CONTAINERS {
            return Box::pin(tower::Service::call(&mut self.inner, req));
        }
        let daemon = self.daemon.clone();
        let handler = tower::service_fn(move |req: Request<ListContainersRequest>| {
            let daemon = daemon.clone();
            async move {
                list_containers_encoded(&daemon, req.into_inner())
                    .await
                    .map(Response::new)
            }
        });
        let max_decoding = self.max_decoding;
        Box::pin(async move {
            let codec = ProstCodec::<EncodedContainers, ListContainersRequest>::default();
            let mut grpc = Grpc::new(codec).apply_max_message_size_config(Some(max_decoding), None);
            Ok(grpc.unary(handler, req).await)
        })
    }
}
