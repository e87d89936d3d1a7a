//! Berth's own CRI client: tonic over the daemon's unix socket.

use std::path::{Path, PathBuf};

use anyhow::Context;
use berth_api::v1::image_service_client::ImageServiceClient;
use berth_api::v1::runtime_service_client::RuntimeServiceClient;
use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint};

/// Both CRI services on one connection.
#[derive(Clone)]
pub struct CriClient {
    pub runtime: RuntimeServiceClient<Channel>,
    pub image: ImageServiceClient<Channel>,
}

impl CriClient {
    pub async fn connect(socket: &Path) -> anyhow::Result<CriClient> {
        let socket: PathBuf = socket.to_path_buf();
        // The URI is required by tonic but unused: the connector dials the socket.
        let channel = Endpoint::try_from("http://berth.invalid")?
            .connect_with_connector(tower::service_fn(move |_| {
                let socket = socket.clone();
                async move {
                    let stream = tokio::net::UnixStream::connect(socket).await?;
                    Ok::<_, std::io::Error>(TokioIo::new(stream))
                }
            }))
            .await
            .context("cannot connect to berthd's CRI socket")?;
        Ok(CriClient {
            runtime: RuntimeServiceClient::new(channel.clone()).max_decoding_message_size(16 << 20),
            image: ImageServiceClient::new(channel).max_decoding_message_size(16 << 20),
        })
    }

    /// PullImage of `image`, anonymous; the error names the image.
    pub async fn pull(&mut self, image: &str) -> anyhow::Result<()> {
        use berth_api::v1::{ImageSpec, PullImageRequest};
        self.image
            .pull_image(PullImageRequest {
                image: Some(ImageSpec {
                    image: image.to_string(),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .map_err(|s| anyhow::anyhow!("PullImage {image}: {s:?}"))?;
        Ok(())
    }
}
