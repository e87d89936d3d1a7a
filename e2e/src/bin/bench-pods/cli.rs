//! The command line of `bench-pods` (the modes are in the crate docs).

use std::path::PathBuf;

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "bench-pods",
    about = "Pod/container lifecycle and 50-pod memory benchmark over CRI v1"
)]
pub struct Cli {
    /// The runtime's CRI unix socket.
    #[arg(long, env = "CRI_SOCKET")]
    pub socket: Option<PathBuf>,
    /// Image for every container (pulled first); must have `sleep` and `true`.
    #[arg(long)]
    pub image: Option<String>,
    /// Timed pod lifecycles (after one untimed warm-up).
    #[arg(long, default_value_t = 30)]
    pub iterations: usize,
    /// Pods (one container each) in the many-pods phase; 0 skips it.
    #[arg(long, default_value_t = 50)]
    pub pods: usize,
    /// Concurrent clients in the second many-pods batch.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Instead of the three phases: keep pods running at each of these sizes (ascending,
    /// comma-separated) and measure there (scale.rs).
    #[arg(long, value_delimiter = ',', value_name = "N,N,...")]
    pub scale: Vec<usize>,
    /// With --scale: pods started and torn down one at a time at each size.
    #[arg(long, default_value_t = 30)]
    pub scale_probes: usize,
    /// With --scale: calls of each List RPC at each size.
    #[arg(long, default_value_t = 30)]
    pub scale_list_calls: usize,
    /// The daemon's pid, for its PSS/RSS.
    #[arg(long)]
    pub daemon_pid: Option<i32>,
    /// argv[0] basename of a per-pod process (berth-monitor; containerd-shim-runc-v2, pause).
    #[arg(long = "pod-proc")]
    pub pod_procs: Vec<String>,
    /// Per-pod processes must have this in their command line (or be a child of one that
    /// has): keeps other daemons' monitors and shims on this host out of the sums.
    #[arg(long = "match", default_value = "")]
    pub match_str: String,
    /// Directory for the pods' CRI logs (default: a temp dir, removed at the end).
    #[arg(long)]
    pub log_dir: Option<PathBuf>,
    /// Also write the results as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Only measure the cost of one NRI plugin connected to this NRI socket (nri.rs).
    #[arg(long, value_name = "PATH", requires = "socket")]
    pub nri_socket: Option<PathBuf>,
    /// Start a registry with the test images, print HOST:PORT, serve until stdin closes.
    #[arg(long, conflicts_with_all = ["socket", "floor"])]
    pub serve_registry: bool,
    /// Time N fork+exec+wait of /bin/true and exit.
    #[arg(long, value_name = "N")]
    pub floor: Option<usize>,
    /// With --floor: also time executions (`VERSION`) of the CNI plugins loopback, bridge,
    /// host-local and portmap in DIR, the floor of a CNI ADD or DEL.
    #[arg(long, value_name = "DIR", requires = "floor")]
    pub cni_bin_dir: Option<PathBuf>,
    /// Make the benchmark's CNI network in DIR, hold it until stdin closes, then remove it.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["socket", "floor", "serve_registry"])]
    pub serve_net: Option<PathBuf>,
    /// Only time streaming against this running container (stream.rs): exec round trips,
    /// exec -it first bytes, exec output throughput, in one client process.
    #[arg(long, value_name = "ID", requires = "socket")]
    pub stream_container: Option<String>,
    /// With --stream-container: instead of timing, hold N idle `exec -i sh` sessions on one
    /// gRPC connection (prints `ready N`) until stdin closes.
    #[arg(long, value_name = "N", requires = "stream_container")]
    pub stream_sessions: Option<usize>,
    /// With --stream-container: also time a port-forward into this pod.
    #[arg(long, value_name = "ID", requires = "stream_container")]
    pub stream_pod: Option<String>,
    /// The pod's port that sends --stream-bytes bytes to each connection.
    #[arg(long, default_value_t = 5001)]
    pub stream_port: u16,
    /// Bytes moved by exec output and port-forward.
    #[arg(long, default_value_t = 64 << 20)]
    pub stream_bytes: u64,
    /// Streaming transport: spdy or websocket.
    #[arg(long, default_value = "spdy")]
    pub stream_transport: String,
    /// berthd's `--state`: with --bundle-out, copy one container's bundle instead of benchmarking.
    #[arg(long, value_name = "STATE", requires = "bundle_out")]
    pub save_bundle: Option<PathBuf>,
    /// Where --save-bundle writes `config.json` and `lowerdir`.
    #[arg(long, value_name = "DIR", requires = "save_bundle")]
    pub bundle_out: Option<PathBuf>,
}
