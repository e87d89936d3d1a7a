//! The `runtime.v1.RuntimeService` trait, wired to the per-RPC modules.
//! RPCs not built yet answer `Unimplemented` naming the RPC.

use std::sync::Arc;

use berth_api::v1::runtime_service_server::RuntimeService;
use berth_api::v1::*;
use berth_stream::StreamingServer;
use tonic::{Request, Response, Status};

use super::{
    BoxStream, container_attach, container_checkpoint, container_create, container_events,
    container_exec, container_exec_sync, container_list, container_remove, container_reopen_log,
    container_start, container_status, container_stop, container_update_resources, list_stream,
    runtime_config, sandbox_checkpoint, sandbox_list, sandbox_port_forward, sandbox_remove,
    sandbox_restore, sandbox_run, sandbox_status, sandbox_stop, sandbox_update_resources, status,
    update_runtime_config, version,
};
use super::{container_stats, container_stats_list, metrics, sandbox_stats, sandbox_stats_list};
use crate::daemon::Daemon;

pub struct RuntimeSvc {
    daemon: Arc<Daemon>,
    streaming: Arc<StreamingServer>,
}

impl RuntimeSvc {
    pub fn new(daemon: Arc<Daemon>, streaming: Arc<StreamingServer>) -> Self {
        RuntimeSvc { daemon, streaming }
    }
}

#[tonic::async_trait]
impl RuntimeService for RuntimeSvc {
    type StreamPodSandboxesStream = BoxStream<StreamPodSandboxesResponse>;
    type StreamContainersStream = BoxStream<StreamContainersResponse>;
    type StreamContainerStatsStream = BoxStream<StreamContainerStatsResponse>;
    type StreamPodSandboxStatsStream = BoxStream<StreamPodSandboxStatsResponse>;
    type GetContainerEventsStream = BoxStream<ContainerEventResponse>;
    type StreamPodSandboxMetricsStream = BoxStream<StreamPodSandboxMetricsResponse>;

    #[tracing::instrument(skip_all)]
    async fn version(
        &self,
        req: Request<VersionRequest>,
    ) -> Result<Response<VersionResponse>, Status> {
        Ok(Response::new(version::version(req.into_inner())))
    }

    #[tracing::instrument(skip_all)]
    async fn run_pod_sandbox(
        &self,
        req: Request<RunPodSandboxRequest>,
    ) -> Result<Response<RunPodSandboxResponse>, Status> {
        sandbox_run::run_pod_sandbox(&self.daemon, req.into_inner())
            .await
            .map(Response::new)
    }

    #[tracing::instrument(skip_all)]
    async fn stop_pod_sandbox(
        &self,
        req: Request<StopPodSandboxRequest>,
    ) -> Result<Response<StopPodSandboxResponse>, Status> {
        sandbox_stop::stop_pod_sandbox(&self.daemon, req.into_inner())
            .await
            .map(Response::new)
    }

    #[tracing::instrument(skip_all)]
    async fn remove_pod_sandbox(
        &self,
        req: Request<RemovePodSandboxRequest>,
    ) -> Result<Response<RemovePodSandboxResponse>, Status> {
        sandbox_remove::remove_pod_sandbox(&self.daemon, req.into_inner())
            .await
            .map(Response::new)
    }

    #[tracing::instrument(skip_all)]
    async fn pod_sandbox_status(
        &self,
        req: Request<PodSandboxStatusRequest>,
    ) -> Result<Response<PodSandboxStatusResponse>, Status> {
        sandbox_status::pod_sandbox_status(&self.daemon, req.into_inner())
            .await
            .map(Response::new)
    }

    #[tracing::instrument(skip_all)]
    async fn list_pod_sandbox(
        &self,
        req: Request<ListPodSandboxRequest>,
    ) -> Result<Response<ListPodSandboxResponse>, Status> {
        sandbox_list::list_pod_sandbox(&self.daemon, req.into_inner()).map(Response::new)
    }

    #[tracing::instrument(skip_all)]
    async fn stream_pod_sandboxes(
        &self,
        req: Request<StreamPodSandboxesRequest>,
    ) -> Result<Response<Self::StreamPodSandboxesStream>, Status> {
        let list = ListPodSandboxRequest {
            filter: req.into_inner().filter,
        };
        let items = sandbox_list::list_pod_sandbox(&self.daemon, list)?.items;
        Ok(Response::new(list_stream::chunked(
            items,
            |pod_sandboxes| StreamPodSandboxesResponse { pod_sandboxes },
        )))
    }

    #[tracing::instrument(skip_all)]
    async fn create_container(
        &self,
        req: Request<CreateContainerRequest>,
    ) -> Result<Response<CreateContainerResponse>, Status> {
        container_create::create_container(&self.daemon, req.into_inner())
            .await
            .map(Response::new)
    }

    #[tracing::instrument(skip_all)]
    async fn start_container(
        &self,
        req: Request<StartContainerRequest>,
    ) -> Result<Response<StartContainerResponse>, Status> {
        container_start::start_container(&self.daemon, req.into_inner())
            .await
            .map(Response::new)
    }

    #[tracing::instrument(skip_all)]
    async fn stop_container(
        &self,
        req: Request<StopContainerRequest>,
    ) -> Result<Response<StopContainerResponse>, Status> {
        container_stop::stop_container(&self.daemon, req.into_inner())
            .await
            .map(Response::new)
    }

    #[tracing::instrument(skip_all)]
    async fn remove_container(
        &self,
        req: Request<RemoveContainerRequest>,
    ) -> Result<Response<RemoveContainerResponse>, Status> {
        container_remove::remove_container(&self.daemon, req.into_inner())
            .await
            .map(Response::new)
    }

    #[tracing::instrument(skip_all)]
    async fn list_containers(
        &self,
        req: Request<ListContainersRequest>,
    ) -> Result<Response<ListContainersResponse>, Status> {
        container_list::list_containers(&self.daemon, req.into_inner())
            .await
            .map(Response::new)
    }

    #[tracing::instrument(skip_all)]
    async fn stream_containers(
        &self,
        req: Request<StreamContainersRequest>,
    ) -> Result<Response<Self::StreamContainersStream>, Status> {
        let list = ListContainersRequest {
            filter: req.into_inner().filter,
        };
        let items = container_list::list_containers(&self.daemon, list)
            .await?
            .containers;
        Ok(Response::new(list_stream::chunked(items, |containers| {
            StreamContainersResponse { containers }
        })))
    }

    #[tracing::instrument(skip_all)]
    async fn container_status(
        &self,
        req: Request<ContainerStatusRequest>,
    ) -> Result<Response<ContainerStatusResponse>, Status> {
        container_status::container_status(&self.daemon, req.into_inner())
            .await
            .map(Response::new)
    }

    #[tracing::instrument(skip_all)]
    async fn update_container_resources(
        &self,
        req: Request<UpdateContainerResourcesRequest>,
    ) -> Result<Response<UpdateContainerResourcesResponse>, Status> {
        container_update_resources::update_container_resources(&self.daemon, req.into_inner())
            .await
            .map(Response::new)
    }

    #[tracing::instrument(skip_all)]
    async fn reopen_container_log(
        &self,
        req: Request<ReopenContainerLogRequest>,
    ) -> Result<Response<ReopenContainerLogResponse>, Status> {
        container_reopen_log::reopen_container_log(&self.daemon, req.into_inner())
            .await
            .map(Response::new)
    }

    #[tracing::instrument(skip_all)]
    async fn exec_sync(
        &self,
        req: Request<ExecSyncRequest>,
    ) -> Result<Response<ExecSyncResponse>, Status> {
        container_exec_sync::exec_sync(&self.daemon, req.into_inner())
            .await
            .map(Response::new)
    }

    #[tracing::instrument(skip_all)]
    async fn exec(&self, req: Request<ExecRequest>) -> Result<Response<ExecResponse>, Status> {
        container_exec::exec(&self.daemon, &self.streaming, req.into_inner())
            .await
            .map(Response::new)
    }

    #[tracing::instrument(skip_all)]
    async fn attach(
        &self,
        req: Request<AttachRequest>,
    ) -> Result<Response<AttachResponse>, Status> {
        container_attach::attach(&self.daemon, &self.streaming, req.into_inner())
            .await
            .map(Response::new)
    }

    #[tracing::instrument(skip_all)]
    async fn port_forward(
        &self,
        req: Request<PortForwardRequest>,
    ) -> Result<Response<PortForwardResponse>, Status> {
        sandbox_port_forward::port_forward(&self.daemon, &self.streaming, req.into_inner())
            .await
            .map(Response::new)
    }

    #[tracing::instrument(skip_all)]
    async fn container_stats(
        &self,
        req: Request<ContainerStatsRequest>,
    ) -> Result<Response<ContainerStatsResponse>, Status> {
        container_stats::container_stats(&self.daemon, req.into_inner())
            .await
            .map(Response::new)
    }

    #[tracing::instrument(skip_all)]
    async fn list_container_stats(
        &self,
        req: Request<ListContainerStatsRequest>,
    ) -> Result<Response<ListContainerStatsResponse>, Status> {
        container_stats_list::list_container_stats(&self.daemon, req.into_inner())
            .await
            .map(Response::new)
    }

    #[tracing::instrument(skip_all)]
    async fn stream_container_stats(
        &self,
        req: Request<StreamContainerStatsRequest>,
    ) -> Result<Response<Self::StreamContainerStatsStream>, Status> {
        let list = ListContainerStatsRequest {
            filter: req.into_inner().filter,
        };
        let items = container_stats_list::list_container_stats(&self.daemon, list)
            .await?
            .stats;
        Ok(Response::new(list_stream::chunked(
            items,
            |container_stats| StreamContainerStatsResponse { container_stats },
        )))
    }

    #[tracing::instrument(skip_all)]
    async fn pod_sandbox_stats(
        &self,
        req: Request<PodSandboxStatsRequest>,
    ) -> Result<Response<PodSandboxStatsResponse>, Status> {
        sandbox_stats::pod_sandbox_stats(&self.daemon, req.into_inner())
            .await
            .map(Response::new)
    }

    #[tracing::instrument(skip_all)]
    async fn list_pod_sandbox_stats(
        &self,
        req: Request<ListPodSandboxStatsRequest>,
    ) -> Result<Response<ListPodSandboxStatsResponse>, Status> {
        sandbox_stats_list::list_pod_sandbox_stats(&self.daemon, req.into_inner())
            .await
            .map(Response::new)
    }

    #[tracing::instrument(skip_all)]
    async fn stream_pod_sandbox_stats(
        &self,
        req: Request<StreamPodSandboxStatsRequest>,
    ) -> Result<Response<Self::StreamPodSandboxStatsStream>, Status> {
        let list = ListPodSandboxStatsRequest {
            filter: req.into_inner().filter,
        };
        let items = sandbox_stats_list::list_pod_sandbox_stats(&self.daemon, list)
            .await?
            .stats;
        Ok(Response::new(list_stream::chunked(
            items,
            |pod_sandbox_stats| StreamPodSandboxStatsResponse { pod_sandbox_stats },
        )))
    }

    #[tracing::instrument(skip_all)]
    async fn update_runtime_config(
        &self,
        req: Request<UpdateRuntimeConfigRequest>,
    ) -> Result<Response<UpdateRuntimeConfigResponse>, Status> {
        update_runtime_config::update_runtime_config(&self.daemon, req.into_inner())
            .map(Response::new)
    }

    #[tracing::instrument(skip_all)]
    async fn status(
        &self,
        req: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        status::status(&self.daemon, req.into_inner()).map(Response::new)
    }

    #[tracing::instrument(skip_all)]
    async fn checkpoint_container(
        &self,
        req: Request<CheckpointContainerRequest>,
    ) -> Result<Response<CheckpointContainerResponse>, Status> {
        container_checkpoint::checkpoint_container(&self.daemon, req.into_inner())
            .await
            .map(Response::new)
    }

    #[tracing::instrument(skip_all)]
    async fn checkpoint_pod(
        &self,
        req: Request<CheckpointPodRequest>,
    ) -> Result<Response<CheckpointPodResponse>, Status> {
        let budget = crate::deadline::budget_of(req.metadata());
        sandbox_checkpoint::checkpoint_pod(&self.daemon, req.into_inner(), budget)
            .await
            .map(Response::new)
    }

    #[tracing::instrument(skip_all)]
    async fn restore_pod(
        &self,
        req: Request<RestorePodRequest>,
    ) -> Result<Response<RestorePodResponse>, Status> {
        sandbox_restore::restore_pod(&self.daemon, req.into_inner())
            .await
            .map(Response::new)
    }

    #[tracing::instrument(skip_all)]
    async fn get_container_events(
        &self,
        _req: Request<GetEventsRequest>,
    ) -> Result<Response<Self::GetContainerEventsStream>, Status> {
        Ok(Response::new(container_events::get_container_events(
            self.daemon.clone(),
        )))
    }

    #[tracing::instrument(skip_all)]
    async fn list_metric_descriptors(
        &self,
        req: Request<ListMetricDescriptorsRequest>,
    ) -> Result<Response<ListMetricDescriptorsResponse>, Status> {
        Ok(Response::new(metrics::list_metric_descriptors(
            req.into_inner(),
        )))
    }

    #[tracing::instrument(skip_all)]
    async fn list_pod_sandbox_metrics(
        &self,
        req: Request<ListPodSandboxMetricsRequest>,
    ) -> Result<Response<ListPodSandboxMetricsResponse>, Status> {
        metrics::list_pod_sandbox_metrics(&self.daemon, req.into_inner())
            .await
            .map(Response::new)
    }

    #[tracing::instrument(skip_all)]
    async fn stream_pod_sandbox_metrics(
        &self,
        _req: Request<StreamPodSandboxMetricsRequest>,
    ) -> Result<Response<Self::StreamPodSandboxMetricsStream>, Status> {
        let items =
            metrics::list_pod_sandbox_metrics(&self.daemon, ListPodSandboxMetricsRequest {})
                .await?
                .pod_metrics;
        Ok(Response::new(list_stream::chunked(
            items,
            |pod_sandbox_metrics| StreamPodSandboxMetricsResponse {
                pod_sandbox_metrics,
            },
        )))
    }

    #[tracing::instrument(skip_all)]
    async fn runtime_config(
        &self,
        _req: Request<RuntimeConfigRequest>,
    ) -> Result<Response<RuntimeConfigResponse>, Status> {
        Ok(Response::new(runtime_config::runtime_config(&self.daemon)))
    }

    #[tracing::instrument(skip_all)]
    async fn update_pod_sandbox_resources(
        &self,
        req: Request<UpdatePodSandboxResourcesRequest>,
    ) -> Result<Response<UpdatePodSandboxResourcesResponse>, Status> {
        sandbox_update_resources::update_pod_sandbox_resources(&self.daemon, req.into_inner())
            .await
            .map(Response::new)
    }
}
