//! The CNI caller against fake plugins: one shell script (written once per
//! test process, linked under each plugin name) that records its
//! environment and stdin and does what the test asks: print a canned
//! result, fail with an error result, crash, print garbage or hang.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use berth_net::{
    Attachment, CapabilityArgs, Cni, CniError, CniOptions, CniVersion, GcAttachment, PodRef,
    PortMapping, Protocol,
};
use serde_json::{Value, json};

const SCRIPT: &str = r#"#!/bin/sh
self=$0
name=${self##*/}
bindir=${self%/*}
d=${bindir%/*}
cmd=$CNI_COMMAND
stdin=$(cat)
echo "$name $cmd" >> "$d/log"
printf '%s' "$stdin" > "$d/rec/$name.$cmd.json"
env | grep '^CNI_' | sort > "$d/rec/$name.$cmd.env"
mode=ok
if [ -f "$d/mode/$name.$cmd" ]; then mode=$(cat "$d/mode/$name.$cmd"); fi
case "$mode" in
ok)
  case "$cmd" in
  ADD) cat "$d/out/$name" ;;
  VERSION)
    if [ -f "$d/version/$name" ]; then cat "$d/version/$name"
    else echo '{"cniVersion":"1.0.0","supportedVersions":["0.1.0","0.2.0","0.3.0","0.3.1","0.4.0","1.0.0"]}'; fi ;;
  esac ;;
fail) printf '{"cniVersion":"1.0.0","code":7,"msg":"bad thing","details":"from %s"}\n' "$name"; exit 1 ;;
status50) printf '{"cniVersion":"1.1.0","code":50,"msg":"not available"}\n'; exit 1 ;;
crash) echo "panic: $name exploded" >&2; exit 2 ;;
garbage) echo "this is not json" ;;
hang) sleep 1000 & echo $! > "$d/rec/$name.child"; wait ;;
esac
"#;

/// The script, in cargo's per-target temp dir (no leak per run), written
/// once before any test of this process runs a plugin and put in place by
/// rename, so no forked child ever holds the executed file open for
/// writing (no ETXTBSY).
fn script() -> &'static Path {
    static SCRIPT_PATH: OnceLock<PathBuf> = OnceLock::new();
    SCRIPT_PATH.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"));
        let p = dir.join("berth-net-fake-plugin.sh");
        if std::fs::read_to_string(&p).ok().as_deref() != Some(SCRIPT) {
            let tmp = dir.join(format!(".berth-net-fake-plugin.{}", std::process::id()));
            std::fs::write(&tmp, SCRIPT).unwrap();
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).unwrap();
            std::fs::rename(&tmp, &p).unwrap();
        }
        p
    })
}

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        for sub in [
            "bin", "bin2", "conf", "cache", "rec", "mode", "out", "version",
        ] {
            std::fs::create_dir(dir.path().join(sub)).unwrap();
        }
        std::fs::write(dir.path().join("log"), "").unwrap();
        Self { dir }
    }

    fn p(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// A fake plugin `name` in `bin` (or `bin2`) printing `out` on ADD.
    fn plugin_in(&self, bin: &str, name: &str, out: Value) {
        std::os::unix::fs::symlink(script(), self.p(bin).join(name)).unwrap();
        std::fs::write(self.p("out").join(name), out.to_string()).unwrap();
    }

    fn plugin(&self, name: &str, out: Value) {
        self.plugin_in("bin", name, out)
    }

    fn mode(&self, name: &str, cmd: &str, mode: &str) {
        std::fs::write(self.p("mode").join(format!("{name}.{cmd}")), mode).unwrap();
    }

    fn clear_mode(&self, name: &str, cmd: &str) {
        std::fs::remove_file(self.p("mode").join(format!("{name}.{cmd}"))).unwrap();
    }

    fn versions(&self, name: &str, versions: &[&str]) {
        std::fs::write(
            self.p("version").join(name),
            json!({"cniVersion": "1.1.0", "supportedVersions": versions}).to_string(),
        )
        .unwrap();
    }

    fn conf(&self, file: &str, v: Value) {
        std::fs::write(self.p("conf").join(file), v.to_string()).unwrap();
    }

    fn log(&self) -> Vec<String> {
        std::fs::read_to_string(self.p("log"))
            .unwrap()
            .lines()
            .filter(|l| !l.ends_with(" VERSION"))
            .map(str::to_owned)
            .collect()
    }

    fn clear_log(&self) {
        std::fs::write(self.p("log"), "").unwrap();
    }

    fn stdin(&self, name: &str, cmd: &str) -> Value {
        let p = self.p("rec").join(format!("{name}.{cmd}.json"));
        serde_json::from_slice(&std::fs::read(&p).unwrap_or_else(|e| panic!("{p:?}: {e}"))).unwrap()
    }

    fn env(&self, name: &str, cmd: &str) -> BTreeMap<String, String> {
        std::fs::read_to_string(self.p("rec").join(format!("{name}.{cmd}.env")))
            .unwrap()
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }

    fn options(&self) -> CniOptions {
        CniOptions {
            conf_dir: self.p("conf"),
            bin_dirs: vec![self.p("bin"), self.p("bin2")],
            cache_dir: self.p("cache"),
            plugin_timeout: Duration::from_secs(20),
        }
    }

    fn cni(&self) -> Cni {
        Cni::new(self.options())
    }

    fn cache_files(&self) -> Vec<String> {
        match std::fs::read_dir(self.p("cache/results")) {
            Ok(rd) => {
                let mut v: Vec<String> = rd
                    .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect();
                v.sort();
                v
            }
            Err(_) => Vec::new(),
        }
    }
}

fn result_with(version: &str, extra_if: &str, ip: &str) -> Value {
    json!({
        "cniVersion": version,
        "interfaces": [
            {"name": "br-fake", "mac": "aa:00:00:00:00:01"},
            {"name": "eth0", "mac": "aa:00:00:00:00:02", "sandbox": "/run/netns/fake"},
            {"name": extra_if}
        ],
        "ips": [
            {"address": format!("{ip}/24"), "gateway": "10.99.0.1", "interface": 1},
            {"address": "fd99::7/64", "interface": 1}
        ],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dns": {"nameservers": ["10.99.0.1"]}
    })
}

fn three_plugins(fx: &Fixture, version: &str) {
    fx.plugin("a", result_with(version, "from-a", "10.99.0.5"));
    fx.plugin("b", result_with(version, "from-b", "10.99.0.5"));
    fx.plugin_in("bin2", "c", result_with(version, "from-c", "10.99.0.6"));
    fx.conf(
        "10-test.conflist",
        json!({
            "cniVersion": version, "name": "testnet",
            "plugins": [
                {"type": "a", "bridge": "br-fake", "ipam": {"type": "host-local"}},
                {"type": "b", "capabilities": {"mac": true, "bandwidth": false}},
                {"type": "c", "capabilities": {"portMappings": true}, "snat": true}
            ]
        }),
    );
}

fn pod_attachment(fx: &Fixture, id: &str) -> Attachment {
    let pod = PodRef {
        namespace: "ns1".into(),
        name: "pod1".into(),
        uid: "uid-1".into(),
    };
    let mut att = Attachment::for_pod(id, fx.p("netns-file"), &pod);
    att.capabilities = CapabilityArgs {
        port_mappings: vec![PortMapping {
            host_port: 8080,
            container_port: 80,
            protocol: Protocol::Tcp,
            host_ip: String::new(),
        }],
        bandwidth: Some(berth_net::Bandwidth {
            ingress_rate: 1_000_000,
            ..Default::default()
        }),
        extra: [("mac".to_string(), json!("c2:11:22:33:44:55"))].into(),
        ..Default::default()
    };
    att
}

#[tokio::test]
async fn add_chains_prev_result_filters_runtime_config_and_sets_env() {
    let fx = Fixture::new();
    three_plugins(&fx, "1.0.0");
    let cni = fx.cni();
    assert!(cni.ready().ready, "{:?}", cni.ready());
    let att = pod_attachment(&fx, "sandbox1");
    let res = cni.add(&att).await.unwrap();

    assert_eq!(fx.log(), ["a ADD", "b ADD", "c ADD"]);
    // First plugin: no prevResult, no runtimeConfig (it declares nothing), no capabilities.
    let a = fx.stdin("a", "ADD");
    assert_eq!(
        a,
        json!({"cniVersion": "1.0.0", "name": "testnet", "type": "a", "bridge": "br-fake",
               "ipam": {"type": "host-local"}})
    );
    // b declares mac (true) and bandwidth (false): only mac.
    let b = fx.stdin("b", "ADD");
    assert_eq!(b["prevResult"], result_with("1.0.0", "from-a", "10.99.0.5"));
    assert_eq!(b["runtimeConfig"], json!({"mac": "c2:11:22:33:44:55"}));
    assert!(b.get("capabilities").is_none());
    // c gets b's result and only portMappings.
    let c = fx.stdin("c", "ADD");
    assert_eq!(c["prevResult"], result_with("1.0.0", "from-b", "10.99.0.5"));
    assert_eq!(
        c["runtimeConfig"],
        json!({"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]})
    );
    assert_eq!(c["snat"], true);

    let env = fx.env("b", "ADD");
    let want: BTreeMap<String, String> = [
        ("CNI_COMMAND", "ADD".to_string()),
        ("CNI_CONTAINERID", "sandbox1".to_string()),
        ("CNI_NETNS", fx.p("netns-file").display().to_string()),
        ("CNI_IFNAME", "eth0".to_string()),
        (
            "CNI_ARGS",
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=ns1;K8S_POD_NAME=pod1;K8S_POD_INFRA_CONTAINER_ID=sandbox1;K8S_POD_UID=uid-1"
                .to_string(),
        ),
        (
            "CNI_PATH",
            format!("{}:{}", fx.p("bin").display(), fx.p("bin2").display()),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    assert_eq!(env, want);

    // The final result is c's.
    assert_eq!(res.raw, result_with("1.0.0", "from-c", "10.99.0.6"));
    assert_eq!(res.cni_version, CniVersion::V1_0_0);
    assert_eq!(
        res.pod_ips(),
        vec![
            "10.99.0.6".parse::<std::net::IpAddr>().unwrap(),
            "fd99::7".parse().unwrap()
        ]
    );
    assert_eq!(res.result.dns.nameservers, vec!["10.99.0.1"]);
    // Cached, complete.
    assert_eq!(fx.cache_files(), ["testnet:sandbox1:eth0.json"]);
    let cached = cni.cached_attachments().await.unwrap();
    assert_eq!(cached.len(), 1);
    assert_eq!(cached[0].result.as_ref(), Some(&res.raw));
    let again = cni
        .cached_result("sandbox1", "eth0")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.pod_ips(), res.pod_ips());

    // A second ADD of the same attachment is refused.
    let err = cni.add(&att).await.unwrap_err();
    assert!(matches!(err, CniError::AlreadyAttached(_)), "{err}");
}

#[tokio::test]
async fn del_after_restart_uses_cached_config_reverse_order_and_prev_result() {
    let fx = Fixture::new();
    three_plugins(&fx, "1.0.0");
    let att = pod_attachment(&fx, "sb2");
    let added = fx.cni().add(&att).await.unwrap();

    // "Restart": a new Cni, and the admin replaced the config meanwhile.
    std::fs::remove_file(fx.p("conf/10-test.conflist")).unwrap();
    fx.plugin("z", json!({"cniVersion": "1.0.0"}));
    fx.conf(
        "05-other.conflist",
        json!({"cniVersion": "1.0.0", "name": "othernet", "plugins": [{"type": "z"}]}),
    );
    let cni = fx.cni();
    fx.clear_log();
    // The daemon only knows the sandbox ID; no capability args given.
    cni.del(&Attachment::new("sb2", "")).await.unwrap();
    assert_eq!(fx.log(), ["c DEL", "b DEL", "a DEL"]);
    for p in ["a", "b", "c"] {
        let s = fx.stdin(p, "DEL");
        assert_eq!(s["prevResult"], added.raw, "{p}");
        assert_eq!(s["name"], "testnet");
        let env = fx.env(p, "DEL");
        assert_eq!(
            env["CNI_NETNS"],
            fx.p("netns-file").display().to_string(),
            "recorded netns"
        );
        assert!(
            env["CNI_ARGS"].contains("K8S_POD_NAME=pod1"),
            "recorded CNI_ARGS"
        );
    }
    // portmap-like plugins need the same runtimeConfig on DEL as on ADD.
    assert_eq!(
        fx.stdin("c", "DEL")["runtimeConfig"]["portMappings"][0]["hostPort"],
        8080
    );
    assert!(fx.cache_files().is_empty());

    // DEL again: nothing cached, so the current config's plugins get a DEL
    // (plugins must accept that), which succeeds.
    fx.clear_log();
    cni.del(&Attachment::new("sb2", "")).await.unwrap();
    assert_eq!(fx.log(), ["z DEL"]);
    let z = fx.stdin("z", "DEL");
    assert!(z.get("prevResult").is_none());
    assert!(
        !fx.env("z", "DEL").contains_key("CNI_NETNS"),
        "empty netns is not passed"
    );
}

#[tokio::test]
async fn failed_del_keeps_the_record_for_a_retry() {
    let fx = Fixture::new();
    three_plugins(&fx, "1.0.0");
    let cni = fx.cni();
    let att = pod_attachment(&fx, "sb3");
    cni.add(&att).await.unwrap();
    fx.mode("b", "DEL", "fail");
    fx.clear_log();
    let err = cni.del(&att).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "CNI plugin b DEL failed (network testnet, code 7): bad thing: from b"
    );
    assert_eq!(err.plugin(), Some("b"));
    assert_eq!(fx.log(), ["c DEL", "b DEL"], "stops at the failing plugin");
    let pending = cni.cached_attachments().await.unwrap();
    assert_eq!(pending.len(), 1);
    assert!(pending[0].is_complete());

    fx.clear_mode("b", "DEL");
    fx.clear_log();
    cni.del_cached(&pending[0].key()).await.unwrap();
    assert_eq!(fx.log(), ["c DEL", "b DEL", "a DEL"]);
    assert!(cni.cached_attachments().await.unwrap().is_empty());
    // Absent is fine.
    cni.del_cached(&pending[0].key()).await.unwrap();
}

#[tokio::test]
async fn failed_add_is_undone_and_leaves_no_record() {
    let fx = Fixture::new();
    three_plugins(&fx, "1.0.0");
    let cni = fx.cni();
    fx.mode("b", "ADD", "fail");
    let err = cni.add(&pod_attachment(&fx, "sb4")).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "CNI plugin b ADD failed (network testnet, code 7): bad thing: from b"
    );
    assert_eq!(err.code(), Some(7));
    assert_eq!(fx.log(), ["a ADD", "b ADD", "c DEL", "b DEL", "a DEL"]);
    // The undoing DEL has no prevResult (the chain never finished) but the
    // same runtimeConfig.
    assert!(fx.stdin("a", "DEL").get("prevResult").is_none());
    assert!(fx.stdin("c", "DEL")["runtimeConfig"]["portMappings"].is_array());
    assert!(fx.cache_files().is_empty());

    // Non-JSON failure: exit status and the end of stderr.
    fx.clear_mode("b", "ADD");
    fx.mode("c", "ADD", "crash");
    let err = cni.add(&pod_attachment(&fx, "sb4")).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "CNI plugin c ADD failed (network testnet): exit status 2: panic: c exploded"
    );
    // Garbage on stdout with exit 0 is an invalid result naming the plugin.
    fx.clear_mode("c", "ADD");
    fx.mode("a", "ADD", "garbage");
    let err = cni.add(&pod_attachment(&fx, "sb4")).await.unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.starts_with("CNI plugin a ADD returned an invalid result (network testnet): not JSON"),
        "{msg}"
    );
    assert!(fx.cache_files().is_empty());
}

#[tokio::test]
async fn failed_add_with_failed_undo_keeps_a_record_for_del() {
    let fx = Fixture::new();
    three_plugins(&fx, "1.0.0");
    let cni = fx.cni();
    fx.mode("c", "ADD", "fail");
    fx.mode("a", "DEL", "crash");
    let att = pod_attachment(&fx, "sb5");
    let err = cni.add(&att).await.unwrap_err();
    assert!(matches!(err, CniError::AddRollback { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.starts_with("CNI plugin c ADD failed (network testnet, code 7): bad thing: from c; the DEL to undo it failed too: CNI plugin a DEL failed"),
        "{msg}"
    );
    let pending = cni.cached_attachments().await.unwrap();
    assert_eq!(pending.len(), 1);
    assert!(!pending[0].is_complete());
    assert_eq!(
        pending[0].capability_args["portMappings"][0]["hostPort"],
        8080
    );

    // A retried ADD first finishes the DEL of the unfinished one.
    fx.clear_mode("a", "DEL");
    fx.clear_mode("c", "ADD");
    fx.clear_log();
    cni.add(&att).await.unwrap();
    assert_eq!(
        fx.log(),
        ["c DEL", "b DEL", "a DEL", "a ADD", "b ADD", "c ADD"]
    );
    cni.del(&att).await.unwrap();
    assert!(fx.cache_files().is_empty());
}

#[tokio::test]
async fn hanging_plugin_is_killed_after_the_timeout() {
    let fx = Fixture::new();
    three_plugins(&fx, "1.0.0");
    let mut opts = fx.options();
    opts.plugin_timeout = Duration::from_millis(1500);
    let cni = Cni::new(opts);
    fx.mode("b", "ADD", "hang");
    let start = Instant::now();
    let err = cni.add(&pod_attachment(&fx, "sb6")).await.unwrap_err();
    let took = start.elapsed();
    assert_eq!(
        err.to_string(),
        "CNI plugin b ADD timed out after 1.5s (network testnet); killed it"
    );
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(10),
        "{took:?}"
    );
    // What the plugin started is killed too (its process group).
    wait_dead(&fx.p("rec/b.child"));
    // And the ADD was undone.
    assert_eq!(fx.log(), ["a ADD", "b ADD", "c DEL", "b DEL", "a DEL"]);
    assert!(fx.cache_files().is_empty());
}

#[tokio::test]
async fn missing_plugin_is_named_with_the_dirs_searched() {
    let fx = Fixture::new();
    fx.plugin("a", result_with("1.0.0", "x", "10.99.0.9"));
    fx.conf(
        "10-m.conflist",
        json!({"cniVersion": "1.0.0", "name": "m", "plugins": [{"type": "a"}, {"type": "nope"}]}),
    );
    let cni = fx.cni();
    let want = format!(
        "CNI plugin \"nope\" not found in {}:{}",
        fx.p("bin").display(),
        fx.p("bin2").display()
    );
    let r = cni.ready();
    assert!(!r.ready);
    assert_eq!(r.reason, "NetworkPluginNotReady");
    assert_eq!(r.message, format!("network m: {want}"));
    let err = cni.add(&Attachment::new("sb7", "/x")).await.unwrap_err();
    assert_eq!(err.to_string(), want);
    assert_eq!(err.plugin(), Some("nope"));
}

#[tokio::test]
async fn readiness_follows_the_conf_dir() {
    let fx = Fixture::new();
    fx.plugin("a", result_with("1.0.0", "x", "10.99.0.9"));
    let cni = fx.cni();
    let r = cni.ready();
    assert!(!r.ready);
    assert_eq!(
        r.message,
        format!(
            "no CNI network config in {} (looked for *.conflist, *.conf, *.json)",
            fx.p("conf").display()
        )
    );
    assert!(!cni.refresh(), "nothing changed");
    let err = cni.add(&Attachment::new("sb8", "/x")).await.unwrap_err();
    assert!(err.is_config_error(), "{err}");

    // An invalid file: not ready, the message names it.
    fx.conf(
        "10-bad.conflist",
        json!({"cniVersion": "1.0.0", "name": "bad"}),
    );
    assert!(cni.refresh());
    let r = cni.ready();
    assert!(!r.ready);
    assert_eq!(
        r.message,
        format!(
            "invalid CNI network config {}: missing \"plugins\" (a .conflist needs a plugin list)",
            fx.p("conf/10-bad.conflist").display()
        )
    );
    // A valid .conf sorting first wins; it is wrapped into a list.
    fx.conf(
        "01-good.conf",
        json!({"cniVersion": "0.4.0", "name": "good", "type": "a"}),
    );
    let r = cni.ready();
    assert!(r.ready, "{r:?}");
    assert_eq!(
        r.message,
        format!("network good from {}", fx.p("conf/01-good.conf").display())
    );
    assert_eq!(cni.network().unwrap().plugins.len(), 1);
    // Removing it falls back to the invalid one.
    std::fs::remove_file(fx.p("conf/01-good.conf")).unwrap();
    assert!(!cni.ready().ready);
}

#[tokio::test]
async fn versions_decide_prev_result_on_del_and_check() {
    // 0.3.1: DEL without prevResult; no CHECK.
    let fx = Fixture::new();
    three_plugins(&fx, "0.3.1");
    let cni = fx.cni();
    let att = pod_attachment(&fx, "sb9");
    let res = cni.add(&att).await.unwrap();
    assert_eq!(res.cni_version, CniVersion::V0_3_1);
    assert_eq!(fx.stdin("a", "ADD")["cniVersion"], "0.3.1");
    let err = cni.check(&att).await.unwrap_err();
    assert!(matches!(err, CniError::CheckUnsupported { .. }), "{err}");
    cni.del(&att).await.unwrap();
    assert!(fx.stdin("b", "DEL").get("prevResult").is_none());

    // 0.4.0: CHECK in order with the cached result.
    let fx = Fixture::new();
    three_plugins(&fx, "0.4.0");
    let cni = fx.cni();
    let att = pod_attachment(&fx, "sb10");
    let err = cni.check(&att).await.unwrap_err();
    assert!(matches!(err, CniError::NotCached(_)), "{err}");
    let res = cni.add(&att).await.unwrap();
    fx.clear_log();
    cni.check(&att).await.unwrap();
    assert_eq!(fx.log(), ["a CHECK", "b CHECK", "c CHECK"]);
    assert_eq!(fx.stdin("a", "CHECK")["prevResult"], res.raw);
    assert_eq!(fx.env("a", "CHECK")["CNI_COMMAND"], "CHECK");
    fx.mode("b", "CHECK", "fail");
    let err = cni.check(&att).await.unwrap_err();
    assert!(
        err.to_string().starts_with("CNI plugin b CHECK failed"),
        "{err}"
    );
    cni.del(&att).await.unwrap();
    assert_eq!(fx.stdin("b", "DEL")["prevResult"], res.raw);

    // disableCheck: CHECK runs nothing.
    let fx = Fixture::new();
    fx.plugin("a", result_with("1.0.0", "x", "10.99.0.9"));
    fx.conf(
        "10.conflist",
        json!({"cniVersion": "1.0.0", "name": "nc", "disableCheck": true, "plugins": [{"type": "a"}]}),
    );
    let cni = fx.cni();
    let att = Attachment::new("sb11", "/x");
    cni.add(&att).await.unwrap();
    fx.clear_log();
    cni.check(&att).await.unwrap();
    assert!(fx.log().is_empty());
}

#[tokio::test]
async fn cni_versions_pick_what_plugins_support_and_gate_status_and_gc() {
    let fx = Fixture::new();
    fx.plugin("a", result_with("1.1.0", "x", "10.99.0.9"));
    fx.plugin("b", result_with("1.1.0", "y", "10.99.0.9"));
    fx.conf(
        "10.conflist",
        json!({"cniVersion": "1.0.0", "cniVersions": ["0.4.0", "1.0.0", "1.1.0"], "name": "vn",
               "plugins": [{"type": "a"}, {"type": "b"}]}),
    );
    // b speaks 1.0.0 at most (the default fake answer): 1.0.0 is chosen.
    fx.versions("a", &["0.4.0", "1.0.0", "1.1.0"]);
    let cni = fx.cni();
    assert_eq!(cni.network_version().await.unwrap(), CniVersion::V1_0_0);
    let att = Attachment::new("sb12", "/x");
    cni.add(&att).await.unwrap();
    assert_eq!(fx.stdin("b", "ADD")["cniVersion"], "1.0.0");
    fx.clear_log();
    cni.status().await.unwrap();
    let report = cni.gc(&[]).await.unwrap();
    assert_eq!(
        fx.log(),
        ["b DEL", "a DEL"],
        "GC DELs the stale attachment, no plugin GC below 1.1.0"
    );
    assert_eq!(report.deleted.len(), 1);
    assert!(report.errors.is_empty());

    // Both speak 1.1.0 now (a fresh Cni: version answers are per binary).
    fx.versions("b", &["1.0.0", "1.1.0"]);
    let cni = fx.cni();
    assert_eq!(cni.network_version().await.unwrap(), CniVersion::V1_1_0);
    fx.clear_log();
    cni.status().await.unwrap();
    assert_eq!(fx.log(), ["a STATUS", "b STATUS"]);
    let st = fx.stdin("a", "STATUS");
    assert_eq!(
        st,
        json!({"cniVersion": "1.1.0", "name": "vn", "type": "a"})
    );
    let env = fx.env("a", "STATUS");
    assert!(!env.contains_key("CNI_CONTAINERID") && env.contains_key("CNI_PATH"));
    fx.mode("a", "STATUS", "status50");
    let err = cni.status().await.unwrap_err();
    assert_eq!(err.code(), Some(50));
    assert!(
        err.to_string().contains("CNI plugin a STATUS failed"),
        "{err}"
    );

    // GC: keeps valid attachments, DELs the rest, then GC to each plugin.
    cni.add(&Attachment::new("keep", "/x")).await.unwrap();
    cni.add(&Attachment::new("stale", "/x")).await.unwrap();
    fx.clear_log();
    let valid = [GcAttachment {
        container_id: "keep".into(),
        ifname: "eth0".into(),
    }];
    let report = cni.gc(&valid).await.unwrap();
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(report.deleted.len(), 1);
    assert_eq!(report.deleted[0].container_id, "stale");
    assert_eq!(fx.log(), ["b DEL", "a DEL", "a GC", "b GC"]);
    let gc = fx.stdin("b", "GC");
    assert_eq!(
        gc["cni.dev/valid-attachments"],
        json!([{"containerID": "keep", "ifname": "eth0"}])
    );
    assert_eq!(gc["cniVersion"], "1.1.0");
    assert_eq!(fx.cache_files(), ["vn:keep:eth0.json"]);

    // A 1.1.0 config (no choice offered): a plugin that does not declare
    // 1.1.0 gets neither STATUS nor GC.
    fx.versions("b", &["1.0.0"]);
    fx.conf(
        "10.conflist",
        json!({"cniVersion": "1.1.0", "name": "vn", "plugins": [{"type": "a"}, {"type": "b"}]}),
    );
    let cni = fx.cni();
    assert_eq!(cni.network_version().await.unwrap(), CniVersion::V1_1_0);
    fx.clear_mode("a", "STATUS");
    fx.clear_log();
    cni.status().await.unwrap();
    let report = cni.gc(&valid).await.unwrap();
    assert!(report.errors.is_empty() && report.deleted.is_empty());
    assert_eq!(fx.log(), ["a STATUS", "a GC"]);
}

#[tokio::test]
async fn parallel_adds_and_dels_of_many_pods() {
    let fx = Fixture::new();
    three_plugins(&fx, "1.0.0");
    let cni = std::sync::Arc::new(fx.cni());
    let mut tasks = Vec::new();
    for i in 0..12 {
        let cni = cni.clone();
        let att = pod_attachment(&fx, &format!("par{i}"));
        tasks.push(tokio::spawn(async move { cni.add(&att).await.map(|_| ()) }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(fx.cache_files().len(), 12);
    let mut tasks = Vec::new();
    for i in 0..12 {
        let cni = cni.clone();
        let att = Attachment::new(format!("par{i}"), "");
        tasks.push(tokio::spawn(async move { cni.del(&att).await }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert!(fx.cache_files().is_empty());
}

#[tokio::test]
async fn invalid_attachments_are_refused_before_any_plugin_runs() {
    let fx = Fixture::new();
    three_plugins(&fx, "1.0.0");
    let cni = fx.cni();
    for (cid, ifname) in [
        ("", "eth0"),
        ("-x", "eth0"),
        ("a/b", "eth0"),
        ("ok", "a:b"),
        ("ok", ""),
    ] {
        let mut att = Attachment::new(cid, "/x");
        att.ifname = ifname.into();
        let err = cni.add(&att).await.unwrap_err();
        assert!(
            matches!(err, CniError::InvalidArgument(_)),
            "{cid:?} {ifname:?}: {err}"
        );
        assert!(cni.del(&att).await.is_err());
    }
    assert!(fx.log().is_empty());
}

#[test]
fn shipped_default_conflist_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../hack/cni/10-berth.conflist");
    let l = berth_net::NetworkConfigList::from_file(&path).unwrap();
    assert_eq!(l.name, "berth");
    assert_eq!(l.preferred_version(), CniVersion::V1_1_0);
    let types: Vec<&str> = l.plugins.iter().map(|p| p.plugin_type.as_str()).collect();
    // No firewall plugin: berthd writes the bridge's FORWARD rules itself.
    assert_eq!(types, ["bridge", "portmap"]);
    assert_eq!(berth_net::forward::bridge_of(&l).as_deref(), Some("berth0"));
    let bridge = &l.plugins[0].raw;
    assert_eq!(bridge["bridge"], "berth0");
    assert_eq!(bridge["isGateway"], true);
    assert_eq!(bridge["ipMasq"], false);
    assert_eq!(bridge["hairpinMode"], true);
    assert_eq!(bridge["ipam"]["type"], "host-local");
    assert_eq!(bridge["ipam"]["ranges"][0][0]["subnet"], "10.86.0.0/16");
    assert!(l.plugins[1].has_capability("portMappings"));
    assert_eq!(l.plugins[1].raw["snat"], true);
}

#[tokio::test]
async fn conf_dir_errors_and_version_probe_failures_are_not_sticky() {
    let fx = Fixture::new();
    fx.plugin("a", result_with("1.0.0", "x", "10.99.0.9"));
    // The conf dir path is a file: unreadable, reported with its path.
    std::fs::remove_dir(fx.p("conf")).unwrap();
    std::fs::write(fx.p("conf"), "").unwrap();
    let cni = fx.cni();
    let r = cni.ready();
    assert!(!r.ready);
    assert!(
        r.message.starts_with(&format!(
            "invalid CNI network config {}: cannot read the dir",
            fx.p("conf").display()
        )),
        "{r:?}"
    );
    // It becomes a dir with a config offering a version choice.
    std::fs::remove_file(fx.p("conf")).unwrap();
    std::fs::create_dir(fx.p("conf")).unwrap();
    fx.conf(
        "10.conflist",
        json!({"cniVersion": "1.0.0", "cniVersions": ["1.1.0"], "name": "vp", "plugins": [{"type": "a"}]}),
    );
    assert!(cni.ready().ready);
    // VERSION fails: the ADD fails naming it, and nothing ran.
    fx.mode("a", "VERSION", "crash");
    let att = Attachment::new("sb13", "/x");
    let err = cni.add(&att).await.unwrap_err();
    assert!(
        err.to_string().starts_with("CNI plugin a VERSION failed"),
        "{err}"
    );
    assert!(fx.log().is_empty());
    assert!(fx.cache_files().is_empty());
    // Once VERSION answers, the next ADD asks again and goes on at 1.0.0.
    fx.clear_mode("a", "VERSION");
    let res = cni.add(&att).await.unwrap();
    assert_eq!(res.cni_version, CniVersion::V1_0_0);
}

fn wait_dead(pid_file: &Path) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let pid: i32 = loop {
        let pid = std::fs::read_to_string(pid_file)
            .ok()
            .and_then(|s| s.trim().parse().ok());
        if let Some(p) = pid {
            break p;
        }
        assert!(Instant::now() < deadline, "{pid_file:?} never written");
        std::thread::sleep(Duration::from_millis(10));
    };
    loop {
        let alive = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| s.split(' ').nth(2).is_none_or(|st| st != "Z"))
            .unwrap_or(false);
        if !alive {
            return;
        }
        assert!(Instant::now() < deadline, "plugin child {pid} survived");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test]
async fn an_abandoned_add_kills_its_plugin_and_leaves_a_record_to_del() {
    let fx = Fixture::new();
    three_plugins(&fx, "1.0.0");
    let cni = std::sync::Arc::new(fx.cni());
    fx.mode("b", "ADD", "hang");
    let att = pod_attachment(&fx, "sb14");
    let task = {
        let cni = cni.clone();
        let att = att.clone();
        tokio::spawn(async move { cni.add(&att).await })
    };
    // Wait until b runs, then drop the ADD (a cancelled gRPC call, say).
    let deadline = Instant::now() + Duration::from_secs(10);
    while !fx.p("rec/b.child").exists() {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    wait_dead(&fx.p("rec/b.child"));
    // The record written before the first plugin ran says a DEL is due.
    let pending = cni.cached_attachments().await.unwrap();
    assert_eq!(pending.len(), 1);
    assert!(!pending[0].is_complete());
    fx.clear_mode("b", "ADD");
    fx.clear_log();
    cni.del_cached(&pending[0].key()).await.unwrap();
    assert_eq!(fx.log(), ["c DEL", "b DEL", "a DEL"]);
    assert!(fx.cache_files().is_empty());
}
