//! A real OCI registry for tests: Debian's `docker-registry` (distribution 2.8) on a free
//! loopback port with its own temporary storage, holding the images that
//! `hack/build-test-images.sh` builds from busybox-static.
//!
//! ```no_run
//! # fn main() -> anyhow::Result<()> {
//! let registry = berth_e2e::registry::Registry::start()?;
//! registry.push_test_images()?;
//! let name = registry.image("berth-test/busybox:latest"); // "127.0.0.1:PORT/berth-test/busybox:latest"
//! # Ok(()) }
//! ```
//!
//! The registry speaks plain HTTP: a client must treat `127.0.0.1:PORT` as insecure.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock, mpsc};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail};
use serde_json::Value;
use tempfile::TempDir;

/// Every image `push_test_images` pushes (repository:tag under the registry).
pub const TEST_IMAGES: &[&str] = &[
    "berth-test/busybox:latest",
    "berth-test/layered:latest",
    "berth-test/multiarch:latest",
    "berth-test/busybox-zstd:latest",
    "berth-test/busybox-plain:latest",
    "berth-test/docker-v2:latest",
    "berth-test/user:latest",
];

/// Accept header that lets the registry serve every manifest kind as stored.
const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, \
     application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json, \
     application/vnd.docker.distribution.manifest.list.v2+json";

const START_ATTEMPTS: usize = 8;
const READY_TIMEOUT: Duration = Duration::from_secs(20);
const HTTP_TIMEOUT: Duration = Duration::from_secs(30);

/// A running `docker-registry`; killed and its storage removed on drop.
pub struct Registry {
    child: Child,
    endpoint: Endpoint,
    log_path: PathBuf,
    /// Sent back by the registry in a response header, so we know we talk to our own
    /// process and not to another test's registry that grabbed the port.
    token: String,
    marker: AtomicU64,
    // Storage, config and log; dropped (removed) after `drop` has reaped the process.
    _dir: TempDir,
}

impl Registry {
    /// Starts Debian's `docker-registry` on a free 127.0.0.1 port with its own temp
    /// storage and waits until `/v2/` answers.
    pub fn start() -> Result<Registry> {
        Self::start_inner(None)
    }

    /// Same, with htpasswd basic auth: `/v2/` answers 401 without these credentials.
    pub fn start_with_basic_auth(user: &str, password: &str) -> Result<Registry> {
        Self::start_inner(Some((user.to_owned(), password.to_owned())))
    }

    fn start_inner(auth: Option<(String, String)>) -> Result<Registry> {
        let dir = tempfile::Builder::new()
            .prefix("berth-registry-")
            .tempdir()
            .context("creating the registry's temp dir")?;
        let storage = dir.path().join("storage");
        fs::create_dir(&storage).with_context(|| format!("creating {}", storage.display()))?;
        let htpasswd = dir.path().join("htpasswd");
        if let Some((user, password)) = &auth {
            write_htpasswd(&htpasswd, user, password)?;
        }
        let token = unique_token();
        let log_path = dir.path().join("registry.log");
        let config_path = dir.path().join("config.yml");

        let mut last_err = None;
        for _ in 0..START_ATTEMPTS {
            let port = free_port()?;
            let config = registry_config(port, &storage, auth.as_ref().map(|_| &*htpasswd), &token);
            fs::write(&config_path, config)
                .with_context(|| format!("writing {}", config_path.display()))?;
            // Fresh log per attempt, so "address already in use" is about this attempt.
            let log = File::create(&log_path)
                .with_context(|| format!("creating {}", log_path.display()))?;
            let mut cmd = Command::new("docker-registry");
            cmd.arg("serve")
                .arg(&config_path)
                .stdin(Stdio::null())
                // Access log goes to stdout, app log to stderr: keep both in one file.
                .stdout(log.try_clone().context("duplicating the log file handle")?)
                .stderr(log);
            let mut child = spawn_killed_on_exit(cmd)
                .context("spawning docker-registry (is the docker-registry package installed?)")?;
            let endpoint = Endpoint {
                port,
                auth: auth.clone(),
            };
            match wait_ready(&mut child, &endpoint, &token, &log_path) {
                Ok(()) => {
                    return Ok(Registry {
                        child,
                        endpoint,
                        log_path,
                        token,
                        marker: AtomicU64::new(0),
                        _dir: dir,
                    });
                }
                Err(StartError::AddrInUse) => {
                    // Another process took the port between our probe and the registry's bind.
                    kill_and_reap(&mut child);
                    last_err = Some(anyhow!("127.0.0.1:{port} was already in use"));
                }
                Err(StartError::Other(e)) => {
                    kill_and_reap(&mut child);
                    return Err(e.context(format!(
                        "starting docker-registry on 127.0.0.1:{port}; its log ends with:\n{}",
                        log_tail(&log_path, 40)
                    )));
                }
            }
        }
        Err(last_err
            .unwrap_or_else(|| anyhow!("no attempt made"))
            .context(format!(
                "starting docker-registry: no free port after {START_ATTEMPTS} attempts"
            )))
    }

    /// "127.0.0.1:PORT".
    pub fn host_port(&self) -> String {
        self.endpoint.host_port()
    }

    /// The credentials of a registry started with basic auth.
    pub fn credentials(&self) -> Option<(&str, &str)> {
        self.endpoint
            .auth
            .as_ref()
            .map(|(u, p)| (u.as_str(), p.as_str()))
    }

    /// Builds the test images (cached, see [`build_test_images`]) and pushes every one of
    /// [`TEST_IMAGES`]; returns once all are pushed.
    pub fn push_test_images(&self) -> Result<()> {
        let images = build_test_images()?;
        let list_path = images.join("images.list");
        let list = fs::read_to_string(&list_path)
            .with_context(|| format!("reading {}", list_path.display()))?;
        let entries: Vec<(&str, &str, &str)> = list
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                let mut f = l.split('\t');
                match (f.next(), f.next(), f.next()) {
                    (Some(r), Some(d), Some(m)) => Ok((r, d, m)),
                    _ => Err(anyhow!("malformed line in {}: {l:?}", list_path.display())),
                }
            })
            .collect::<Result<_>>()?;
        let layout = images.join("oci");
        // busybox first: its layer is the base of most others, so the parallel pushes
        // after it find that blob present instead of all uploading it at once.
        let (first, rest): (Vec<_>, Vec<_>) = entries.iter().partition(|(r, _, _)| *r == "busybox");
        for (ref_name, dest, mode) in first {
            self.skopeo_push(&layout, ref_name, dest, mode)?
                .wait_checked()?;
        }
        let pushes = rest
            .iter()
            .map(|(r, d, m)| self.skopeo_push(&layout, r, d, m))
            .collect::<Result<Vec<_>>>()?;
        let mut errors = Vec::new();
        for push in pushes {
            if let Err(e) = push.wait_checked() {
                errors.push(format!("{e:#}"));
            }
        }
        if !errors.is_empty() {
            bail!(
                "pushing test images to {}:\n{}\nregistry log ends with:\n{}",
                self.host_port(),
                errors.join("\n"),
                self.log_tail(20)
            );
        }
        Ok(())
    }

    fn skopeo_push(&self, layout: &Path, ref_name: &str, dest: &str, mode: &str) -> Result<Push> {
        let mut cmd = Command::new("skopeo");
        cmd.args([
            "copy",
            "--quiet",
            "--insecure-policy",
            "--dest-tls-verify=false",
        ]);
        match mode {
            // Byte-identical manifests and blobs: digests in tests match the layout.
            "oci" => cmd.arg("--preserve-digests"),
            "index" => cmd.args(["--all", "--preserve-digests"]),
            "v2s2" => cmd.args(["--format", "v2s2"]),
            other => bail!("unknown push mode {other:?} for {ref_name} in images.list"),
        };
        if let Some((user, password)) = &self.endpoint.auth {
            cmd.arg("--dest-creds").arg(format!("{user}:{password}"));
        }
        cmd.arg(format!("oci:{}:{ref_name}", layout.display()))
            .arg(format!("docker://{}/{dest}", self.host_port()))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let what = format!("skopeo copy {ref_name} -> {}/{dest}", self.host_port());
        let child = cmd.spawn().with_context(|| {
            format!("{what}: spawning skopeo (is the skopeo package installed?)")
        })?;
        Ok(Push { what, child })
    }

    /// The name as a node would pull it: "127.0.0.1:PORT/berth-test/busybox:latest".
    pub fn image(&self, repo_tag: &str) -> String {
        format!("{}/{repo_tag}", self.host_port())
    }

    /// Digest (sha256:...) of a pushed manifest or index, as the registry reports it.
    pub fn manifest_digest(&self, repo_tag: &str) -> Result<String> {
        let (repo, reference) = split_reference(repo_tag);
        let resp = self.get_ok(
            &format!("/v2/{repo}/manifests/{reference}"),
            MANIFEST_ACCEPT,
        )?;
        resp.header("docker-content-digest")
            .map(str::to_owned)
            .with_context(|| format!("no Docker-Content-Digest header for manifest {repo_tag}"))
    }

    /// Layer digests of an image, in order; for an index, those of its linux/amd64 manifest.
    pub fn layer_digests(&self, repo_tag: &str) -> Result<Vec<String>> {
        let (repo, reference) = split_reference(repo_tag);
        let mut manifest = self.get_json(&format!("/v2/{repo}/manifests/{reference}"))?;
        if manifest.get("manifests").is_some() {
            let digest = manifest["manifests"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|m| {
                    m["platform"]["os"] == "linux" && m["platform"]["architecture"] == "amd64"
                })
                .and_then(|m| m["digest"].as_str())
                .with_context(|| format!("index {repo_tag} has no linux/amd64 manifest"))?
                .to_owned();
            manifest = self.get_json(&format!("/v2/{repo}/manifests/{digest}"))?;
        }
        manifest["layers"]
            .as_array()
            .with_context(|| format!("manifest of {repo_tag} has no layers array"))?
            .iter()
            .map(|l| {
                l["digest"]
                    .as_str()
                    .map(str::to_owned)
                    .with_context(|| format!("a layer of {repo_tag} has no digest"))
            })
            .collect()
    }

    /// How many successful GETs of blob `digest` (any repository) the registry has served,
    /// counted from its access log. HEADs (existence checks) do not count.
    pub fn blob_fetch_count(&self, digest: &str) -> Result<usize> {
        self.sync_log()?;
        let log = fs::read_to_string(&self.log_path)
            .with_context(|| format!("reading registry log {}", self.log_path.display()))?;
        let suffix = format!("/blobs/{digest}");
        Ok(log
            .lines()
            .filter_map(parse_access_line)
            .filter(|a| a.method == "GET" && (200..300).contains(&a.status))
            .filter(|a| {
                a.path
                    .split('?')
                    .next()
                    .is_some_and(|p| p.ends_with(&suffix))
            })
            .count())
    }

    /// The last `lines` lines of the registry's log (access and app log).
    pub fn log_tail(&self, lines: usize) -> String {
        log_tail(&self.log_path, lines)
    }

    /// Waits until the requests answered so far are in the access log: the registry
    /// writes a line only after the response went out, so a client can be faster than
    /// the log. Each line is written as its handler returns, so a request finished before
    /// our marker request was sent is logged before the marker shows up.
    fn sync_log(&self) -> Result<()> {
        let n = self.marker.fetch_add(1, Ordering::Relaxed);
        let path = format!("/v2/?berth-log-marker={}-{n}", self.token);
        self.endpoint
            .request(&path, None)
            .context("sending the log marker request")?;
        let needle = format!("\"GET {path} ");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let log = fs::read_to_string(&self.log_path).unwrap_or_default();
            if log.contains(&needle) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "the marker request never appeared in the registry's access log; it ends with:\n{}",
                    self.log_tail(20)
                );
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    fn get_json(&self, path: &str) -> Result<Value> {
        let resp = self.get_ok(path, MANIFEST_ACCEPT)?;
        serde_json::from_slice(&resp.body).with_context(|| format!("GET {path}: body is not JSON"))
    }

    fn get_ok(&self, path: &str, accept: &str) -> Result<Response> {
        let resp = self.endpoint.request(path, Some(accept))?;
        if resp.status != 200 {
            bail!(
                "GET http://{}{path} answered {}: {}",
                self.host_port(),
                resp.status,
                String::from_utf8_lossy(&resp.body)
            );
        }
        Ok(resp)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        kill_and_reap(&mut self.child);
        // `_dir` (storage, config, log) is removed when the field drops, after the reap.
    }
}

/// Where a registry listens and how to authenticate to it.
struct Endpoint {
    port: u16,
    auth: Option<(String, String)>,
}

impl Endpoint {
    fn host_port(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Minimal HTTP/1.0 client: the registry then neither chunks nor keeps the connection,
    /// so the body is everything up to EOF.
    fn request(&self, path: &str, accept: Option<&str>) -> Result<Response> {
        let addr = self.host_port();
        let fail = || format!("GET http://{addr}{path}");
        let mut stream = TcpStream::connect(&addr).with_context(fail)?;
        stream
            .set_read_timeout(Some(HTTP_TIMEOUT))
            .with_context(fail)?;
        let mut req = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n");
        if let Some(accept) = accept {
            req.push_str(&format!("Accept: {accept}\r\n"));
        }
        if let Some((user, password)) = &self.auth {
            req.push_str(&format!(
                "Authorization: Basic {}\r\n",
                base64(format!("{user}:{password}").as_bytes())
            ));
        }
        req.push_str("\r\n");
        stream.write_all(req.as_bytes()).with_context(fail)?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).with_context(fail)?;
        Response::parse(&raw).with_context(fail)
    }
}

/// Waits until the registry we spawned answers `/v2/` (with our token, with the credentials).
fn wait_ready(
    child: &mut Child,
    endpoint: &Endpoint,
    token: &str,
    log_path: &Path,
) -> Result<(), StartError> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait().map_err(|e| StartError::Other(e.into()))? {
            if log_tail(log_path, 20).contains("address already in use") {
                return Err(StartError::AddrInUse);
            }
            return Err(StartError::Other(anyhow!(
                "docker-registry exited early with {status}"
            )));
        }
        match endpoint.request("/v2/", None) {
            Ok(resp) if resp.header("x-berth-registry") == Some(token) => {
                if resp.status == 200 {
                    return Ok(());
                }
                return Err(StartError::Other(anyhow!(
                    "GET /v2/ answered {} instead of 200: {}",
                    resp.status,
                    String::from_utf8_lossy(&resp.body)
                )));
            }
            // Not ours (another registry won the port race): ours will exit on bind.
            Ok(_) => {}
            // Not listening yet.
            Err(_) => {}
        }
        if Instant::now() > deadline {
            return Err(StartError::Other(anyhow!(
                "/v2/ did not answer within {READY_TIMEOUT:?}"
            )));
        }
        thread::sleep(Duration::from_millis(20));
    }
}

fn kill_and_reap(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

fn log_tail(log_path: &Path, lines: usize) -> String {
    match fs::read_to_string(log_path) {
        Ok(log) => {
            let all: Vec<&str> = log.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", log_path.display()),
    }
}

enum StartError {
    AddrInUse,
    Other(anyhow::Error),
}

/// A running `skopeo copy`.
struct Push {
    what: String,
    child: Child,
}

impl Push {
    fn wait_checked(self) -> Result<()> {
        let out = self
            .child
            .wait_with_output()
            .with_context(|| format!("{}: waiting for skopeo", self.what))?;
        if !out.status.success() {
            bail!(
                "{} failed ({}): {}",
                self.what,
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }
}

/// Builds the test images with `hack/build-test-images.sh` (a no-op when the cache is
/// current) and returns the output dir: `$BERTH_TEST_IMAGES`, else
/// `<workspace>/target/test-images`. It holds `oci/` (one OCI layout, a ref per image)
/// and `images.list`.
pub fn build_test_images() -> Result<PathBuf> {
    let out = test_images_dir();
    let script = crate::workspace_root().join("hack/build-test-images.sh");
    let output = Command::new("bash")
        .arg(&script)
        .arg(&out)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    if !output.status.success() {
        bail!(
            "{} {} failed ({}):\n{}",
            script.display(),
            out.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(out)
}

/// Where the test images are cached: `$BERTH_TEST_IMAGES` or `<workspace>/target/test-images`.
pub fn test_images_dir() -> PathBuf {
    match std::env::var_os("BERTH_TEST_IMAGES") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => crate::workspace_root().join("target/test-images"),
    }
}

/// Splits "repo:tag", "repo@digest" or "repo:tag@digest" into (repo, tag-or-digest).
fn split_reference(repo_tag: &str) -> (&str, &str) {
    if let Some((name, digest)) = repo_tag.split_once('@') {
        let repo = match name.rsplit_once(':') {
            Some((repo, tag)) if !tag.contains('/') => repo,
            _ => name,
        };
        return (repo, digest);
    }
    match repo_tag.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => (repo, tag),
        _ => (repo_tag, "latest"),
    }
}

fn registry_config(port: u16, storage: &Path, htpasswd: Option<&Path>, token: &str) -> String {
    let mut config = format!(
        "version: 0.1\n\
         log:\n  level: info\n  formatter: text\n  accesslog:\n    disabled: false\n\
         storage:\n  filesystem:\n    rootdirectory: {storage}\n  delete:\n    enabled: true\n\
         http:\n  addr: 127.0.0.1:{port}\n  headers:\n    X-Berth-Registry: [\"{token}\"]\n",
        storage = storage.display(),
    );
    if let Some(path) = htpasswd {
        config.push_str(&format!(
            "auth:\n  htpasswd:\n    realm: berth-test\n    path: {}\n",
            path.display()
        ));
    }
    config
}

fn write_htpasswd(path: &Path, user: &str, password: &str) -> Result<()> {
    // bcrypt is the only hash distribution's htpasswd auth accepts.
    let out = Command::new("htpasswd")
        .args(["-Bbn", user, password])
        .stdin(Stdio::null())
        .output()
        .context("running htpasswd (is apache2-utils installed?)")?;
    if !out.status.success() {
        bail!(
            "htpasswd -Bbn failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(&out.stdout)
        .with_context(|| format!("writing {}", path.display()))
}

/// A port nobody listens on right now. Another process may take it before the registry
/// binds it; `start` retries on "address already in use".
fn free_port() -> Result<u16> {
    let listener =
        TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0 to find a free port")?;
    Ok(listener
        .local_addr()
        .context("reading the probe socket's address")?
        .port())
}

fn unique_token() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{}-{nanos}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Spawns `cmd` with PR_SET_PDEATHSIG=SIGKILL from a thread that lives as long as the
/// test process, so the registry dies with the test binary even when a test aborts or a
/// `static` registry is never dropped. (The death signal follows the spawning *thread*,
/// and libtest runs each test on its own short-lived thread.)
fn spawn_killed_on_exit(cmd: Command) -> std::io::Result<Child> {
    type Job = (Command, mpsc::Sender<std::io::Result<Child>>);
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<Job>>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        thread::Builder::new()
            .name("registry-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
                    unsafe {
                        cmd.pre_exec(|| {
                            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                                .map_err(std::io::Error::from)
                        });
                    }
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("spawning the registry spawner thread");
        Mutex::new(tx)
    });
    let (reply_tx, reply_rx) = mpsc::channel();
    spawner
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .send((cmd, reply_tx))
        .map_err(|_| std::io::Error::other("registry spawner thread is gone"))?;
    reply_rx
        .recv()
        .map_err(|_| std::io::Error::other("registry spawner thread is gone"))?
}

struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    fn parse(raw: &[u8]) -> Result<Response> {
        let end = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .context("response has no end of headers")?;
        let head = std::str::from_utf8(&raw[..end]).context("response headers are not UTF-8")?;
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let status = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("bad status line {status_line:?}"))?;
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        Ok(Response {
            status,
            headers,
            body: raw[end + 4..].to_vec(),
        })
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One line of the registry's access log, Apache combined format:
/// `127.0.0.1 - user [date] "GET /v2/... HTTP/1.1" 200 1234 "referer" "agent"`.
struct AccessLine<'a> {
    method: &'a str,
    path: &'a str,
    status: u16,
}

fn parse_access_line(line: &str) -> Option<AccessLine<'_>> {
    let (_, rest) = line.split_once("] \"")?;
    let (request, rest) = rest.split_once('"')?;
    let mut req = request.split(' ');
    let method = req.next()?;
    let path = req.next()?;
    let status = rest.trim_start().split(' ').next()?.parse().ok()?;
    Some(AccessLine {
        method,
        path,
        status,
    })
}

fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (input, want) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(input.as_bytes()), want);
        }
    }

    #[test]
    fn references_split_into_repo_and_reference() {
        assert_eq!(
            split_reference("berth-test/busybox:latest"),
            ("berth-test/busybox", "latest")
        );
        assert_eq!(
            split_reference("berth-test/busybox"),
            ("berth-test/busybox", "latest")
        );
        assert_eq!(split_reference("a/b@sha256:00"), ("a/b", "sha256:00"));
        assert_eq!(split_reference("a/b:v1@sha256:00"), ("a/b", "sha256:00"));
    }

    #[test]
    fn access_log_lines_parse() {
        let line = r#"127.0.0.1 - bob [28/Nov/2026:01:57:28 +0000] "GET /v2/a/blobs/sha256:ab HTTP/1.1" 200 405 "" "curl/7.88.1""#;
        let a = parse_access_line(line).unwrap();
        assert_eq!(
            (a.method, a.path, a.status),
            ("GET", "/v2/a/blobs/sha256:ab", 200)
        );
        let app = r#"time="..." level=info msg="response completed" http.request.method=GET"#;
        assert!(parse_access_line(app).is_none());
    }
}
