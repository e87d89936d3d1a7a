//! `PullImage`: fetch, verify and unpack an image; answer with its id.

use berth_api::v1::{AuthConfig, PullImageRequest, PullImageResponse};
use berth_image::RegistryAuth;
use tonic::Status;
use tracing::Instrument;

use super::image_convert::{required_image, status_of};
use crate::daemon::Daemon;

pub async fn pull_image(
    daemon: &Daemon,
    req: PullImageRequest,
) -> Result<PullImageResponse, Status> {
    let reference = required_image(req.image, "PullImage")?;
    daemon.check_disk_space("PullImage")?;
    let auth = req.auth.map(registry_auth);
    let started = std::time::Instant::now();
    let image = daemon
        .images()
        .pull(&reference, auth)
        .instrument(tracing::info_span!("pull", image = %reference))
        .await
        .map_err(|e| {
            tracing::warn!(image = %reference, error = %e, "pull failed");
            let status = status_of(e);
            crate::prometheus::global().pull(&format!("{:?}", status.code()), started.elapsed());
            status
        })?;
    crate::prometheus::global().pull("OK", started.elapsed());
    tracing::info!(image = %reference, id = %image.id, elapsed = ?started.elapsed(), "pulled");
    // Like containerd, the image reference returned is the image id.
    Ok(PullImageResponse {
        image_ref: image.id,
    })
}

fn registry_auth(a: AuthConfig) -> RegistryAuth {
    RegistryAuth {
        username: a.username,
        password: a.password,
        auth: a.auth,
        server_address: a.server_address,
        identity_token: a.identity_token,
        registry_token: a.registry_token,
    }
}
