//! Interoperability with moby/spdystream, the SPDY implementation kubelet,
//! kubectl and crictl use: the Go client in `tests/interop/` against the
//! `echo_server` example. Runs when `go` is on PATH (CI has it), and says
//! so plainly when it is not.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use berth_spdy::Config;
use tokio::net::TcpListener;
use tokio::process::Command;

#[path = "../examples/echo_server.rs"]
mod echo_server;

fn go_on_path() -> bool {
    std::process::Command::new("go")
        .arg("version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spdystream_client_against_our_server() {
    if !go_on_path() {
        eprintln!("SKIPPED: `go` is not on PATH; the spdystream interop check did not run");
        return;
    }
    // Our header blocks both ways: stored (the default) and deflated.
    for compress_headers in [false, true] {
        let config = Config {
            compress_headers,
            ..Config::default()
        };
        run_go_client(config).await;
    }
}

async fn run_go_client(config: Config) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(echo_server::serve(listener, config.clone()));

    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop");
    // The first run downloads github.com/moby/spdystream from the module
    // proxy and compiles; builds go to Go's cache, nothing into the repo.
    let run = Command::new("go")
        .args(["run", ".", &addr.to_string()])
        .current_dir(&dir)
        .env("GOFLAGS", "-mod=readonly")
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(300), run)
        .await
        .expect("go client finished within 5 minutes")
        .expect("go ran");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.contains("OK"),
        "go client failed ({}, {config:?}):\n{stdout}\n{stderr}",
        output.status
    );
}
