//! The `runtime.v1.ImageService` trait, wired to the per-RPC modules.

use std::sync::Arc;

use berth_api::v1::image_service_server::ImageService;
use berth_api::v1::*;
use tonic::{Request, Response, Status};

use super::{
    BoxStream, image_fs_info, image_list, image_pull, image_remove, image_status, list_stream,
};
use crate::daemon::Daemon;

pub struct ImageSvc {
    daemon: Arc<Daemon>,
}

impl ImageSvc {
    pub fn new(daemon: Arc<Daemon>) -> Self {
        ImageSvc { daemon }
    }
}

/// Runs a synchronous store call off the async workers: image-store calls
/// touch redb and the filesystem.
async fn blocking<T: Send + 'static>(
    daemon: &Arc<Daemon>,
    f: impl FnOnce(&Daemon) -> Result<T, Status> + Send + 'static,
) -> Result<Response<T>, Status> {
    let daemon = daemon.clone();
    tokio::task::spawn_blocking(move || f(&daemon))
        .await
        .map_err(|e| Status::internal(format!("image task failed: {e}")))?
        .map(Response::new)
}

#[tonic::async_trait]
impl ImageService for ImageSvc {
    type StreamImagesStream = BoxStream<StreamImagesResponse>;

    #[tracing::instrument(skip_all)]
    async fn list_images(
        &self,
        req: Request<ListImagesRequest>,
    ) -> Result<Response<ListImagesResponse>, Status> {
        let req = req.into_inner();
        blocking(&self.daemon, move |d| image_list::list_images(d, req)).await
    }

    #[tracing::instrument(skip_all)]
    async fn stream_images(
        &self,
        req: Request<StreamImagesRequest>,
    ) -> Result<Response<Self::StreamImagesStream>, Status> {
        let list = ListImagesRequest {
            filter: req.into_inner().filter,
        };
        let items = blocking(&self.daemon, move |d| image_list::list_images(d, list))
            .await?
            .into_inner()
            .images;
        Ok(Response::new(list_stream::chunked(items, |images| {
            StreamImagesResponse { images }
        })))
    }

    #[tracing::instrument(skip_all)]
    async fn image_status(
        &self,
        req: Request<ImageStatusRequest>,
    ) -> Result<Response<ImageStatusResponse>, Status> {
        let req = req.into_inner();
        blocking(&self.daemon, move |d| image_status::image_status(d, req)).await
    }

    #[tracing::instrument(skip_all)]
    async fn pull_image(
        &self,
        req: Request<PullImageRequest>,
    ) -> Result<Response<PullImageResponse>, Status> {
        image_pull::pull_image(&self.daemon, req.into_inner())
            .await
            .map(Response::new)
    }

    #[tracing::instrument(skip_all)]
    async fn remove_image(
        &self,
        req: Request<RemoveImageRequest>,
    ) -> Result<Response<RemoveImageResponse>, Status> {
        let req = req.into_inner();
        blocking(&self.daemon, move |d| image_remove::remove_image(d, req)).await
    }

    #[tracing::instrument(skip_all)]
    async fn image_fs_info(
        &self,
        req: Request<ImageFsInfoRequest>,
    ) -> Result<Response<ImageFsInfoResponse>, Status> {
        let req = req.into_inner();
        blocking(&self.daemon, move |d| image_fs_info::image_fs_info(d, req)).await
    }
}
