//! Finding and running plugin binaries (SPEC section 2).

use std::collections::HashMap;
use std::fmt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::error::CniError;
use crate::version::CniVersion;

/// `CNI_COMMAND`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Command {
    Add,
    Del,
    Check,
    Status,
    Gc,
    Version,
}

impl Command {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Add => "ADD",
            Self::Del => "DEL",
            Self::Check => "CHECK",
            Self::Status => "STATUS",
            Self::Gc => "GC",
            Self::Version => "VERSION",
        }
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Looks `plugin_type` up in `dirs`, in order: the first regular,
/// executable file wins.
pub fn find_plugin(plugin_type: &str, dirs: &[PathBuf]) -> Result<PathBuf, CniError> {
    let not_found = || CniError::PluginNotFound {
        plugin: plugin_type.to_owned(),
        dirs: dirs.to_vec(),
    };
    if crate::config::validate_plugin_type(plugin_type).is_err() {
        return Err(not_found());
    }
    for dir in dirs {
        let p = dir.join(plugin_type);
        let executable = std::fs::metadata(&p)
            .map(|md| md.is_file() && md.permissions().mode() & 0o111 != 0)
            .unwrap_or(false);
        if executable {
            return Ok(p);
        }
    }
    Err(not_found())
}

/// The environment of one plugin call.
#[derive(Clone, Debug, Default)]
pub struct PluginEnv {
    pub container_id: Option<String>,
    pub netns: Option<PathBuf>,
    pub ifname: Option<String>,
    pub args: Option<String>,
}

/// The `VERSION` answer of a plugin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VersionInfo {
    pub supported: Vec<CniVersion>,
}

impl VersionInfo {
    pub fn supports(&self, v: CniVersion) -> bool {
        self.supported.contains(&v)
    }
}

/// A CNI error result, `{code, msg, details}`.
#[derive(Deserialize)]
struct WireError {
    code: u32,
    #[serde(default)]
    msg: String,
    #[serde(default)]
    details: String,
}

/// Output of a successful plugin run.
#[derive(Debug)]
pub struct PluginOutput {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub elapsed: Duration,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct FileStamp {
    len: u64,
    mtime: i64,
    mtime_nsec: i64,
    ino: u64,
}

impl FileStamp {
    fn of(path: &Path) -> Option<Self> {
        let md = std::fs::metadata(path).ok()?;
        Some(Self {
            len: md.len(),
            mtime: md.mtime(),
            mtime_nsec: md.mtime_nsec(),
            ino: md.ino(),
        })
    }
}

/// Runs plugins: finds them in `bin_dirs`, passes `CNI_*` and stdin, kills
/// them (and everything they started) after `timeout`, and turns failures
/// into [`CniError`]s naming the plugin and command.
#[derive(Debug)]
pub struct Invoker {
    bin_dirs: Vec<PathBuf>,
    timeout: Duration,
    versions: Mutex<HashMap<PathBuf, (FileStamp, VersionInfo)>>,
}

/// How much of a plugin's stderr goes into an error message.
const STDERR_TAIL: usize = 2000;

impl Invoker {
    pub fn new(bin_dirs: Vec<PathBuf>, timeout: Duration) -> Self {
        Self {
            bin_dirs,
            timeout,
            versions: Mutex::new(HashMap::new()),
        }
    }

    pub fn bin_dirs(&self) -> &[PathBuf] {
        &self.bin_dirs
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// `CNI_PATH`: the bin dirs joined with `:`.
    pub fn cni_path(&self) -> String {
        self.bin_dirs
            .iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(":")
    }

    pub fn find(&self, plugin_type: &str) -> Result<PathBuf, CniError> {
        find_plugin(plugin_type, &self.bin_dirs)
    }

    /// Runs `plugin_type` with `command`, `stdin` as its config. Returns its
    /// output when it exits 0; `network` only decorates error messages.
    pub async fn run(
        &self,
        plugin_type: &str,
        command: Command,
        env: &PluginEnv,
        stdin: &[u8],
        network: &str,
    ) -> Result<PluginOutput, CniError> {
        let path = self.find(plugin_type)?;
        self.run_path(&path, plugin_type, command, env, stdin, network)
            .await
    }

    async fn run_path(
        &self,
        path: &Path,
        plugin_type: &str,
        command: Command,
        env: &PluginEnv,
        stdin: &[u8],
        network: &str,
    ) -> Result<PluginOutput, CniError> {
        let mut cmd = tokio::process::Command::new(path);
        // Inherit the daemon's environment (PATH for iptables etc.), but no
        // stray CNI_* from it.
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("CNI_") {
                cmd.env_remove(k);
            }
        }
        cmd.env("CNI_COMMAND", command.as_str());
        cmd.env("CNI_PATH", self.cni_path());
        if let Some(v) = &env.container_id {
            cmd.env("CNI_CONTAINERID", v);
        }
        if let Some(v) = &env.netns {
            cmd.env("CNI_NETNS", v);
        }
        if let Some(v) = &env.ifname {
            cmd.env("CNI_IFNAME", v);
        }
        if let Some(v) = &env.args {
            cmd.env("CNI_ARGS", v);
        }
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .current_dir("/")
            // Its own process group: a timeout kills what it started too
            // (bridge runs host-local, portmap runs iptables).
            .process_group(0)
            .kill_on_drop(true);

        let exec_err = |source| CniError::Exec {
            plugin: plugin_type.to_owned(),
            command,
            path: path.to_owned(),
            source,
        };
        let start = Instant::now();
        let mut child = cmd.spawn().map_err(exec_err)?;
        let pid = child.id();
        // If this future is dropped mid-run (the caller gave up), the
        // plugin's whole process group goes; `kill_on_drop` alone would only
        // get the plugin itself.
        let mut group = GroupGuard { pid, armed: true };
        let mut child_in = child.stdin.take().expect("piped");
        let mut child_out = child.stdout.take().expect("piped");
        let mut child_err = child.stderr.take().expect("piped");

        let io = async {
            let write = async {
                // A plugin may exit without reading everything (EPIPE):
                // its exit status tells what happened.
                let _ = child_in.write_all(stdin).await;
                drop(child_in);
            };
            let mut out = Vec::new();
            let mut err = Vec::new();
            let (_, r_out, r_err, status) = tokio::join!(
                write,
                child_out.read_to_end(&mut out),
                child_err.read_to_end(&mut err),
                child.wait()
            );
            r_out?;
            r_err?;
            Ok::<(ExitStatus, Vec<u8>, Vec<u8>), std::io::Error>((status?, out, err))
        };
        let outcome = tokio::time::timeout(self.timeout, io).await;
        let (status, stdout, stderr) = match outcome {
            Ok(Ok(v)) => {
                group.armed = false;
                v
            }
            Ok(Err(e)) => {
                group.kill();
                let _ = child.kill().await;
                return Err(exec_err(e));
            }
            Err(_) => {
                group.kill();
                let _ = child.kill().await;
                tracing::warn!(plugin = plugin_type, %command, network, timeout = ?self.timeout, "CNI plugin timed out; killed");
                return Err(CniError::Timeout {
                    plugin: plugin_type.to_owned(),
                    command,
                    network: network.to_owned(),
                    timeout: self.timeout,
                });
            }
        };
        let elapsed = start.elapsed();
        tracing::debug!(
            plugin = plugin_type,
            %command,
            network,
            status = %status,
            elapsed_ms = elapsed.as_secs_f64() * 1e3,
            stderr = %String::from_utf8_lossy(tail(&stderr, STDERR_TAIL)).trim(),
            "CNI plugin ran"
        );
        if status.success() {
            return Ok(PluginOutput {
                stdout,
                stderr,
                elapsed,
            });
        }
        Err(plugin_failure(
            plugin_type,
            command,
            network,
            status,
            &stdout,
            &stderr,
        ))
    }

    /// Asks a plugin which spec versions it speaks (`VERSION`). Answers are
    /// cached per binary (path, size, mtime, inode).
    pub async fn version_info(&self, plugin_type: &str) -> Result<VersionInfo, CniError> {
        let path = self.find(plugin_type)?;
        let stamp = FileStamp::of(&path);
        if let Some(stamp) = &stamp {
            let cached = self.versions.lock().expect("poisoned").get(&path).cloned();
            if let Some((_, vi)) = cached.filter(|(s, _)| s == stamp) {
                return Ok(vi);
            }
        }
        let stdin = format!(r#"{{"cniVersion":"{}"}}"#, CniVersion::LATEST);
        let out = self
            .run_path(
                &path,
                plugin_type,
                Command::Version,
                &PluginEnv::default(),
                stdin.as_bytes(),
                "-",
            )
            .await?;
        let vi = parse_version_info(&out.stdout).map_err(|reason| CniError::InvalidResult {
            plugin: plugin_type.to_owned(),
            command: Command::Version,
            network: "-".to_owned(),
            reason,
        })?;
        if let Some(stamp) = stamp {
            self.versions
                .lock()
                .expect("poisoned")
                .insert(path, (stamp, vi.clone()));
        }
        Ok(vi)
    }
}

/// SIGKILLs a plugin's process group once: explicitly, or when dropped
/// while still armed.
struct GroupGuard {
    pid: Option<u32>,
    armed: bool,
}

impl GroupGuard {
    fn kill(&mut self) {
        if !std::mem::replace(&mut self.armed, false) {
            return;
        }
        if let Some(pid) = self.pid.and_then(|p| i32::try_from(p).ok()) {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

fn parse_version_info(stdout: &[u8]) -> Result<VersionInfo, String> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Wire {
        #[serde(default)]
        supported_versions: Option<Vec<String>>,
    }
    if stdout.iter().all(u8::is_ascii_whitespace) {
        // A plugin from before VERSION existed speaks 0.1.0 only.
        return Ok(VersionInfo {
            supported: vec![CniVersion::V0_1_0],
        });
    }
    let w: Wire = serde_json::from_slice(stdout).map_err(|e| format!("VERSION output: {e}"))?;
    let mut supported = Vec::new();
    for s in w.supported_versions.unwrap_or_default() {
        // Versions we do not know are not an error; they just never match.
        if let Ok(v) = CniVersion::parse(&s) {
            supported.push(v);
        }
    }
    if supported.is_empty() {
        supported.push(CniVersion::V0_1_0);
    }
    Ok(VersionInfo { supported })
}

fn tail(b: &[u8], n: usize) -> &[u8] {
    &b[b.len().saturating_sub(n)..]
}

/// Turns a failed run into an error: the CNI error result (on stdout, or
/// stderr) if there is one, else the end of stderr, else the exit status.
fn plugin_failure(
    plugin: &str,
    command: Command,
    network: &str,
    status: ExitStatus,
    stdout: &[u8],
    stderr: &[u8],
) -> CniError {
    let parsed = serde_json::from_slice::<WireError>(stdout)
        .or_else(|_| serde_json::from_slice::<WireError>(stderr))
        .ok();
    let exit = match (status.code(), status.signal()) {
        (Some(c), _) => format!("exit status {c}"),
        (None, Some(s)) => format!("killed by signal {s}"),
        _ => status.to_string(),
    };
    let (code, message) = match parsed {
        Some(e) => {
            let mut m = e.msg.trim().to_owned();
            let d = e.details.trim();
            if !d.is_empty() {
                if m.is_empty() {
                    m = d.to_owned();
                } else {
                    m = format!("{m}: {d}");
                }
            }
            if m.is_empty() {
                m = exit;
            }
            (Some(e.code), m)
        }
        None => {
            let text = String::from_utf8_lossy(tail(stderr, STDERR_TAIL))
                .trim()
                .to_owned();
            let text = if text.is_empty() {
                String::from_utf8_lossy(tail(stdout, STDERR_TAIL))
                    .trim()
                    .to_owned()
            } else {
                text
            };
            if text.is_empty() {
                (None, exit)
            } else {
                (None, format!("{exit}: {text}"))
            }
        }
    };
    CniError::Plugin {
        plugin: plugin.to_owned(),
        command,
        network: network.to_owned(),
        code,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_output() {
        let vi = parse_version_info(
            br#"{"cniVersion":"1.0.0","supportedVersions":["0.3.1","0.4.0","1.0.0","2.0.0-rc"]}"#,
        )
        .unwrap();
        assert_eq!(
            vi.supported,
            vec![CniVersion::V0_3_1, CniVersion::V0_4_0, CniVersion::V1_0_0]
        );
        assert!(vi.supports(CniVersion::V1_0_0) && !vi.supports(CniVersion::V1_1_0));
        assert_eq!(
            parse_version_info(b"").unwrap().supported,
            vec![CniVersion::V0_1_0]
        );
        assert!(parse_version_info(b"nonsense").is_err());
    }

    #[test]
    fn failure_messages() {
        let st = |code: i32| ExitStatus::from_raw(code << 8);
        let e = plugin_failure(
            "bridge",
            Command::Add,
            "net",
            st(1),
            br#"{"cniVersion":"1.0.0","code":7,"msg":"Invalid Configuration","details":"Network 192.168.0.0/31 too small"}"#,
            b"",
        );
        assert_eq!(e.code(), Some(7));
        assert_eq!(
            e.to_string(),
            "CNI plugin bridge ADD failed (network net, code 7): Invalid Configuration: Network 192.168.0.0/31 too small"
        );
        let e = plugin_failure(
            "portmap",
            Command::Del,
            "net",
            st(2),
            b"",
            b"some log\npanic: boom\n",
        );
        assert_eq!(
            e.to_string(),
            "CNI plugin portmap DEL failed (network net): exit status 2: some log\npanic: boom"
        );
        let e = plugin_failure("x", Command::Check, "n", ExitStatus::from_raw(9), b"", b"");
        assert_eq!(
            e.to_string(),
            "CNI plugin x CHECK failed (network n): killed by signal 9"
        );
        // An error result on stderr is understood too.
        let e = plugin_failure(
            "y",
            Command::Add,
            "n",
            st(1),
            b"",
            br#"{"code":11,"msg":"busy"}"#,
        );
        assert_eq!(e.code(), Some(11));
        assert!(e.to_string().ends_with("code 11): busy"));
    }

    #[test]
    fn finds_plugins_in_order() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let write = |dir: &Path, name: &str, mode: u32| {
            let p = dir.join(name);
            std::fs::write(&p, "#!/bin/sh\n").unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
            p
        };
        write(a.path(), "noexec", 0o644);
        let nb = write(b.path(), "noexec", 0o755);
        let pa = write(a.path(), "both", 0o755);
        write(b.path(), "both", 0o755);
        std::fs::create_dir(a.path().join("dir")).unwrap();
        let dirs = vec![a.path().to_owned(), b.path().to_owned()];
        assert_eq!(find_plugin("both", &dirs).unwrap(), pa);
        assert_eq!(find_plugin("noexec", &dirs).unwrap(), nb);
        let err = find_plugin("dir", &dirs).unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "CNI plugin \"dir\" not found in {}:{}",
                a.path().display(),
                b.path().display()
            )
        );
        assert!(find_plugin("../both", &dirs).is_err());
    }
}
