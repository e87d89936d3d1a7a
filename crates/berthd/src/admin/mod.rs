//! Berth's own admin API (`berth.admin.v1`, `proto/admin.proto`), served on
//! the CRI socket beside it: operator calls the CRI lacks, for `berthctl`.
//! One file per RPC, as for the CRI.

mod image_import;

use std::sync::Arc;

use berth_api::admin::v1::admin_server::Admin;
use berth_api::admin::v1::{ImportImagesRequest, ImportImagesResponse};
use tonic::{Request, Response, Status, Streaming};

use crate::daemon::Daemon;

pub struct AdminSvc {
    daemon: Arc<Daemon>,
}

impl AdminSvc {
    pub fn new(daemon: Arc<Daemon>) -> AdminSvc {
        AdminSvc { daemon }
    }
}

#[tonic::async_trait]
impl Admin for AdminSvc {
    async fn import_images(
        &self,
        request: Request<Streaming<ImportImagesRequest>>,
    ) -> Result<Response<ImportImagesResponse>, Status> {
        image_import::import_images(&self.daemon, request.into_inner())
            .await
            .map(Response::new)
    }
}
