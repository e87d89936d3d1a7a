//! `berthctl`: Berth's operator command line. It talks to berthd's admin API
//! (`berth.admin.v1`, `proto/admin.proto`) on the CRI socket, so it runs
//! wherever that socket is reachable.
//!
//!     berthctl [--endpoint unix:///run/berth/berth.sock] image import [--name REF] FILE|DIR|-

mod connect;
mod image_import;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "berthctl", version, about = "Berth's operator command line")]
struct Cli {
    /// berthd's socket.
    #[arg(
        long,
        global = true,
        env = "BERTH_ENDPOINT",
        default_value = "unix:///run/berth/berth.sock"
    )]
    endpoint: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Images in berthd's store.
    Image {
        #[command(subcommand)]
        action: ImageAction,
    },
}

#[derive(Subcommand)]
enum ImageAction {
    /// Load images with their tags from an OCI archive (a tar of an OCI image
    /// layout), an OCI layout directory, or a `docker save` tarball; `-` reads
    /// the archive from stdin (`docker save IMAGE | berthctl image import -`).
    Import {
        /// Tag the imported image with this reference instead of the names the
        /// archive holds (an archive of one image only).
        #[arg(long, value_name = "REF")]
        name: Option<String>,
        /// The archive, OCI layout directory, or `-`.
        path: PathBuf,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("berthctl: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async {
        match cli.command {
            Command::Image {
                action: ImageAction::Import { name, path },
            } => image_import::run(&cli.endpoint, &path, name).await,
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("berthctl: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
