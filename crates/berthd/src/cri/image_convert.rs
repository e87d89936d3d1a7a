//! Shared conversions between the image store and CRI messages.

use berth_api::v1::{Image, ImageSpec, Int64Value};
use berth_image::{ImageError, ImageErrorKind};
use tonic::{Code, Status};

/// Maps an image-store error onto the gRPC code the kubelet acts on; the
/// message already names the image, the layer or the registry.
pub fn status_of(e: ImageError) -> Status {
    if let ImageError::Store(m) = &e {
        crate::store::exit_if_poisoned(m);
    }
    let code = match e.kind() {
        ImageErrorKind::NotFound => Code::NotFound,
        ImageErrorKind::InvalidArgument => Code::InvalidArgument,
        ImageErrorKind::Unauthenticated => Code::Unauthenticated,
        ImageErrorKind::PermissionDenied => Code::PermissionDenied,
        ImageErrorKind::Unavailable => Code::Unavailable,
        ImageErrorKind::DataLoss => Code::DataLoss,
        ImageErrorKind::Unimplemented => Code::Unimplemented,
        ImageErrorKind::ResourceExhausted => Code::ResourceExhausted,
        ImageErrorKind::Internal => Code::Internal,
    };
    Status::new(code, e.to_string())
}

/// The CRI view of a stored image.
pub fn to_cri(image: &berth_image::Image) -> Image {
    Image {
        id: image.id.clone(),
        repo_tags: image.repo_tags.clone(),
        repo_digests: image.repo_digests.clone(),
        size: image.size,
        // The kubelet's runAsNonRoot check reads uid, or username when uid is unset.
        uid: image.uid().map(|value| Int64Value { value }),
        username: image.username(),
        spec: Some(ImageSpec {
            image: image.id.clone(),
            ..Default::default()
        }),
        pinned: image.pinned,
    }
}

/// The `image` field of an `ImageSpec`, required by most image RPCs.
pub fn required_image(spec: Option<ImageSpec>, rpc: &str) -> Result<String, Status> {
    match spec {
        Some(s) if !s.image.trim().is_empty() => Ok(s.image.trim().to_string()),
        _ => Err(Status::invalid_argument(format!(
            "{rpc}: image.image is empty; name an image by reference or id"
        ))),
    }
}
