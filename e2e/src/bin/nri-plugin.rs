//! A pre-installed NRI plugin for the tests: berthd starts it from its
//! `[nri] plugin_path` with the connection as fd 3 (`NRI_PLUGIN_SOCKET`)
//! and its name and index in `NRI_PLUGIN_NAME` / `NRI_PLUGIN_IDX`. Its
//! configuration `NAME=VALUE` is set in every container it is asked about
//! (berth_e2e::nri_plugin). Runs until berthd closes the connection.

use std::os::fd::FromRawFd;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let fd: i32 = std::env::var("NRI_PLUGIN_SOCKET")?.parse()?;
    let name = std::env::var("NRI_PLUGIN_NAME")?;
    let idx = std::env::var("NRI_PLUGIN_IDX")?;
    // SAFETY: berthd handed this process the descriptor to own.
    let std_stream = unsafe { std::os::unix::net::UnixStream::from_raw_fd(fd) };
    std_stream.set_nonblocking(true)?;
    let stream = tokio::net::UnixStream::from_std(std_stream)?;
    let plugin =
        berth_e2e::nri_plugin::TestPlugin::register(stream, &name, &idx, Default::default())
            .await?;
    // Until berthd goes away: its end closing ends the process.
    plugin.closed().await;
    Ok(())
}
