//! `cri`: a tiny CRI client for scripts and benchmarks (hack/bench-pull.sh).
//!
//! ```text
//! cri --socket SOCK pull IMAGE      pulled IMAGE as ID in X.XXX s
//! cri --socket SOCK images          IMAGE ID, SIZE and tags/digests, one image a line
//! cri --socket SOCK rmi IMAGE
//! cri --socket SOCK version
//! ```
//!
//! It speaks plain CRI v1, so it works against any runtime's socket (berthd,
//! containerd's CRI plugin), which lets a benchmark time both with one client.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, anyhow};
use berth_api::v1::{
    ImageSpec, ListImagesRequest, PullImageRequest, RemoveImageRequest, VersionRequest,
};
use berth_e2e::client::CriClient;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cri",
    about = "A tiny CRI v1 client (Berth's, for scripts and benchmarks)"
)]
struct Cli {
    /// The runtime's CRI unix socket.
    #[arg(long, env = "CRI_SOCKET", default_value = "/run/berth/berth.sock")]
    socket: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// PullImage; prints the image id and the time the RPC took.
    Pull { image: String },
    /// ListImages.
    Images,
    /// RemoveImage (by id, tag or digest).
    Rmi { image: String },
    /// Version.
    Version,
}

/// A gRPC failure as an error that keeps its code and message.
fn rpc(what: &str, status: tonic::Status) -> anyhow::Error {
    anyhow!("{what}: {:?}: {}", status.code(), status.message())
}

fn spec(image: &str) -> Option<ImageSpec> {
    Some(ImageSpec {
        image: image.to_owned(),
        user_specified_image: image.to_owned(),
        ..Default::default()
    })
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let mut client = CriClient::connect(&cli.socket)
        .await
        .with_context(|| format!("connecting to {}", cli.socket.display()))?;
    match cli.command {
        Command::Pull { image } => {
            // Only the RPC is timed: connecting and process start are not part of a pull.
            let start = Instant::now();
            let resp = client
                .image
                .pull_image(PullImageRequest {
                    image: spec(&image),
                    ..Default::default()
                })
                .await
                .map_err(|s| rpc(&format!("PullImage {image}"), s))?
                .into_inner();
            let secs = start.elapsed().as_secs_f64();
            println!("pulled {image} as {} in {secs:.3} s", resp.image_ref);
        }
        Command::Images => {
            let images = client
                .image
                .list_images(ListImagesRequest::default())
                .await
                .map_err(|s| rpc("ListImages", s))?
                .into_inner()
                .images;
            println!("{:<71} {:>10}  NAMES", "IMAGE ID", "SIZE");
            for img in images {
                let names: Vec<&str> = img
                    .repo_tags
                    .iter()
                    .chain(&img.repo_digests)
                    .map(String::as_str)
                    .collect();
                let size = format!("{:.1}MB", img.size as f64 / 1e6);
                println!("{:<71} {:>10}  {}", img.id, size, names.join(" "));
            }
        }
        Command::Rmi { image } => {
            client
                .image
                .remove_image(RemoveImageRequest {
                    image: spec(&image),
                })
                .await
                .map_err(|s| rpc(&format!("RemoveImage {image}"), s))?;
            println!("removed {image}");
        }
        Command::Version => {
            let v = client
                .runtime
                .version(VersionRequest::default())
                .await
                .map_err(|s| rpc("Version", s))?
                .into_inner();
            println!(
                "{} {} (CRI {}, kubelet API {})",
                v.runtime_name, v.runtime_version, v.runtime_api_version, v.version
            );
        }
    }
    Ok(())
}
