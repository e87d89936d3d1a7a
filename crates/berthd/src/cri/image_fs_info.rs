//! `ImageFsInfo`: bytes and inodes used by the image store and by containers'
//! writable layers, on the filesystems that hold them (the kubelet's image GC
//! and eviction read this).

use berth_api::v1::{
    FilesystemIdentifier, FilesystemUsage, ImageFsInfoRequest, ImageFsInfoResponse, UInt64Value,
};
use tonic::Status;

use super::image_convert::status_of;
use crate::daemon::Daemon;

pub fn image_fs_info(
    daemon: &Daemon,
    _req: ImageFsInfoRequest,
) -> Result<ImageFsInfoResponse, Status> {
    let images = daemon.images().fs_usage().map_err(status_of)?;
    let image_fs = FilesystemUsage {
        timestamp: images.timestamp_nanos,
        fs_id: Some(FilesystemIdentifier {
            mountpoint: images.mountpoint.display().to_string(),
        }),
        used_bytes: Some(UInt64Value {
            value: images.used_bytes,
        }),
        inodes_used: Some(UInt64Value {
            value: images.inodes_used,
        }),
    };
    let containers = daemon.containers_fs_usage().map_err(|e| {
        Status::internal(format!(
            "cannot measure the containers' writable layers: {e}"
        ))
    })?;
    let container_fs = FilesystemUsage {
        timestamp: images.timestamp_nanos,
        fs_id: Some(FilesystemIdentifier {
            mountpoint: containers.mountpoint.display().to_string(),
        }),
        used_bytes: Some(UInt64Value {
            value: containers.used_bytes,
        }),
        inodes_used: Some(UInt64Value {
            value: containers.inodes_used,
        }),
    };
    Ok(ImageFsInfoResponse {
        image_filesystems: vec![image_fs],
        container_filesystems: vec![container_fs],
    })
}
