//! `--floor N`: what any runtime pays at least: a bare fork+exec+wait, and one execution of
//! each CNI plugin (the floor of a CNI ADD or DEL).

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::stats::{ms, stats};

/// The plugins a CNI ADD of the benchmark's network executes (host-local from bridge).
const CNI_PLUGINS: [&str; 4] = ["loopback", "bridge", "host-local", "portmap"];

/// One execution of a CNI plugin: `VERSION`, which every plugin answers without touching the
/// host, so its time is what any command of the plugin pays before it does anything.
fn cni_version(plugin: &Path) -> anyhow::Result<()> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new(plugin)
        .env_clear()
        .env("CNI_COMMAND", "VERSION")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .with_context(|| format!("running {}", plugin.display()))?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(br#"{"cniVersion":"1.0.0"}"#)?;
    let status = child.wait()?;
    if !status.success() {
        bail!("{} VERSION: {status}", plugin.display());
    }
    Ok(())
}

/// `n` timed calls of `call`: (median, p90) in ms and them as JSON `{n, median_ms, p90_ms}`.
fn time_calls(
    n: usize,
    mut call: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<(f64, f64, Value)> {
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        call()?;
        samples.push(ms(t.elapsed()));
    }
    let (median, p90) = stats(&samples);
    Ok((
        median,
        p90,
        json!({"n": n, "median_ms": median, "p90_ms": p90}),
    ))
}

/// The floor of any runtime's container start: a bare fork+exec+wait from this process; with
/// `cni_dir`, also the floor of a CNI command: one execution of each plugin.
pub fn floor(n: usize, cni_dir: Option<&Path>, json_path: Option<&Path>) -> anyhow::Result<()> {
    let runs = n.max(1);
    let (median, p90, floor) = time_calls(runs, || {
        let status = std::process::Command::new("/bin/true").status()?;
        if !status.success() {
            bail!("/bin/true failed: {status}");
        }
        Ok(())
    })?;
    println!("floor: fork+exec+wait /bin/true x{runs}: median {median:.3} ms, p90 {p90:.3} ms");
    let mut v = json!({ "floor": floor });
    if let Some(dir) = cni_dir {
        // Fewer: each is a Go binary's start (several ms).
        let n = n.clamp(1, 50);
        let mut plugins = serde_json::Map::new();
        for name in CNI_PLUGINS {
            let path = dir.join(name);
            cni_version(&path)?; // page cache, not counted
            let (median, p90, timing) = time_calls(n, || cni_version(&path))?;
            println!(
                "floor: CNI plugin {name} (VERSION) x{n}: median {median:.3} ms, p90 {p90:.3} ms"
            );
            plugins.insert(name.into(), timing);
        }
        v["cni_exec"] = Value::Object(plugins);
    }
    if let Some(p) = json_path {
        std::fs::write(p, serde_json::to_string_pretty(&v)?)?;
    }
    Ok(())
}
