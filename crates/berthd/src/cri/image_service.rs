//! The `runtime.v1.ImageService` trait, wired to the image RPC modules.

use std::sync::Arc;

use berth_api::v1::image_service_server::ImageService;
use berth_api::v1::*;
use tonic::{Request, Response, Status};

use super::{BoxStream, unimplemented};
use crate::daemon::Daemon;

pub struct ImageSvc {
    #[allow(dead_code)] // used by the image RPCs as they land
    daemon: Arc<Daemon>,
}

impl ImageSvc {
    pub fn new(daemon: Arc<Daemon>) -> Self {
        ImageSvc { daemon }
    }
}

#[tonic::async_trait]
impl ImageService for ImageSvc {
    type StreamImagesStream = BoxStream<StreamImagesResponse>;

    #[tracing::instrument(skip_all)]
    async fn list_images(
        &self,
        _req: Request<ListImagesRequest>,
    ) -> Result<Response<ListImagesResponse>, Status> {
        unimplemented("ListImages")
    }

    #[tracing::instrument(skip_all)]
    async fn stream_images(
        &self,
        _req: Request<StreamImagesRequest>,
    ) -> Result<Response<Self::StreamImagesStream>, Status> {
        unimplemented("StreamImages")
    }

    #[tracing::instrument(skip_all)]
    async fn image_status(
        &self,
        _req: Request<ImageStatusRequest>,
    ) -> Result<Response<ImageStatusResponse>, Status> {
        unimplemented("ImageStatus")
    }

    #[tracing::instrument(skip_all)]
    async fn pull_image(
        &self,
        _req: Request<PullImageRequest>,
    ) -> Result<Response<PullImageResponse>, Status> {
        unimplemented("PullImage")
    }

    #[tracing::instrument(skip_all)]
    async fn remove_image(
        &self,
        _req: Request<RemoveImageRequest>,
    ) -> Result<Response<RemoveImageResponse>, Status> {
        unimplemented("RemoveImage")
    }

    #[tracing::instrument(skip_all)]
    async fn image_fs_info(
        &self,
        _req: Request<ImageFsInfoRequest>,
    ) -> Result<Response<ImageFsInfoResponse>, Status> {
        unimplemented("ImageFsInfo")
    }
}
