//! Network configuration: loading the conf dir, validating, deriving the
//! per-plugin request configuration (SPEC.md sections 1 and 3).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::error::CniError;
use crate::version::CniVersion;

/// File name extensions considered in a conf dir.
pub const CONF_EXTENSIONS: [&str; 3] = ["conflist", "conf", "json"];

/// One plugin configuration object of a network config list.
#[derive(Clone, Debug, PartialEq)]
pub struct PluginConf {
    /// The `type`: the plugin binary's name.
    pub plugin_type: String,
    /// The `capabilities` the plugin declares (only `true` ones are kept).
    pub capabilities: BTreeMap<String, bool>,
    /// The whole object as written, passed through to the plugin.
    pub raw: Map<String, Value>,
}

impl PluginConf {
    /// Whether the plugin declared `capability: true`.
    pub fn has_capability(&self, capability: &str) -> bool {
        self.capabilities.get(capability).copied().unwrap_or(false)
    }
}

/// A validated network configuration list (a `.conf` is wrapped into one).
#[derive(Clone, Debug, PartialEq)]
pub struct NetworkConfigList {
    pub name: String,
    /// The `cniVersion` field.
    pub cni_version: CniVersion,
    /// The `cniVersions` field (entries newer than this crate knows dropped).
    pub cni_versions: Vec<CniVersion>,
    pub disable_check: bool,
    pub disable_gc: bool,
    pub plugins: Vec<PluginConf>,
    /// The file it came from, if any.
    pub source: Option<PathBuf>,
}

impl NetworkConfigList {
    /// Parses and validates a config. `path` is used for error messages and
    /// its extension decides whether a single plugin config (`.conf`,
    /// `.json`) is accepted; a `.conflist` must have `plugins`.
    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Self, CniError> {
        let invalid = |reason: String| CniError::InvalidConfig {
            path: path.to_owned(),
            reason,
        };
        let value: Value =
            serde_json::from_slice(bytes).map_err(|e| invalid(format!("not valid JSON: {e}")))?;
        let is_conflist = path.extension().is_some_and(|e| e == "conflist");
        Self::from_value(value, is_conflist)
            .map(|mut l| {
                l.source = Some(path.to_owned());
                l
            })
            .map_err(invalid)
    }

    /// Reads and validates one config file.
    pub fn from_file(path: &Path) -> Result<Self, CniError> {
        let bytes = std::fs::read(path).map_err(|e| CniError::InvalidConfig {
            path: path.to_owned(),
            reason: format!("cannot read: {e}"),
        })?;
        Self::from_bytes(&bytes, path)
    }

    /// Validates a config given as JSON. With `require_list`, a single
    /// plugin config (no `plugins` key) is refused instead of wrapped.
    pub fn from_value(value: Value, require_list: bool) -> Result<Self, String> {
        let Value::Object(mut obj) = value else {
            return Err("not a JSON object".to_owned());
        };
        let name = match obj.get("name") {
            Some(Value::String(s)) => s.clone(),
            Some(_) => return Err("\"name\" must be a string".to_owned()),
            None => return Err("missing \"name\"".to_owned()),
        };
        validate_name(&name).map_err(|e| format!("\"name\": {e}"))?;
        let declared = match obj.get("cniVersion") {
            Some(Value::String(s)) => {
                CniVersion::parse(s).map_err(|e| format!("\"cniVersion\": {e}"))?
            }
            Some(_) => return Err("\"cniVersion\" must be a string".to_owned()),
            None => return Err("missing \"cniVersion\"".to_owned()),
        };
        let mut cni_versions = Vec::new();
        match obj.get("cniVersions") {
            None => {}
            Some(Value::Array(items)) => {
                for item in items {
                    let Value::String(s) = item else {
                        return Err("\"cniVersions\" must be a list of strings".to_owned());
                    };
                    let v = CniVersion::parse(s).map_err(|e| format!("\"cniVersions\": {e}"))?;
                    if v.is_supported() {
                        cni_versions.push(v);
                    }
                }
            }
            Some(_) => return Err("\"cniVersions\" must be a list of strings".to_owned()),
        }
        if !declared.is_supported() && cni_versions.is_empty() {
            return Err(format!(
                "cniVersion {declared} is not supported (this runtime speaks {})",
                supported_list()
            ));
        }
        let disable_check = read_bool(&obj, "disableCheck")?;
        let disable_gc = read_bool(&obj, "disableGC")?;

        let plugin_values: Vec<Value> = match obj.remove("plugins") {
            Some(Value::Array(items)) => {
                if items.is_empty() {
                    return Err("\"plugins\" is empty".to_owned());
                }
                items
            }
            Some(_) => return Err("\"plugins\" must be a list".to_owned()),
            None if require_list => {
                return Err("missing \"plugins\" (a .conflist needs a plugin list)".to_owned());
            }
            // A single plugin config: the whole object is the one plugin.
            None => vec![Value::Object(obj)],
        };
        let mut plugins = Vec::with_capacity(plugin_values.len());
        for (i, v) in plugin_values.into_iter().enumerate() {
            plugins.push(parse_plugin(v).map_err(|e| format!("plugin {i}: {e}"))?);
        }
        Ok(Self {
            name,
            cni_version: declared,
            cni_versions,
            disable_check,
            disable_gc,
            plugins,
            source: None,
        })
    }

    /// The versions this config may run at, best first: `cniVersion` and
    /// `cniVersions`, those this crate supports.
    pub fn version_candidates(&self) -> Vec<CniVersion> {
        let mut v: Vec<CniVersion> = std::iter::once(self.cni_version)
            .chain(self.cni_versions.iter().copied())
            .filter(|v| v.is_supported())
            .collect();
        v.sort_unstable_by(|a, b| b.cmp(a));
        v.dedup();
        v
    }

    /// The highest version this config offers (before asking plugins).
    pub fn preferred_version(&self) -> CniVersion {
        self.version_candidates()
            .first()
            .copied()
            .unwrap_or(self.cni_version)
    }

    /// The config as a list object (what the result cache stores).
    pub fn to_value(&self) -> Value {
        let mut m = Map::new();
        m.insert("cniVersion".into(), self.cni_version.to_string().into());
        if !self.cni_versions.is_empty() {
            m.insert(
                "cniVersions".into(),
                self.cni_versions
                    .iter()
                    .map(|v| Value::from(v.to_string()))
                    .collect(),
            );
        }
        m.insert("name".into(), self.name.clone().into());
        if self.disable_check {
            m.insert("disableCheck".into(), true.into());
        }
        if self.disable_gc {
            m.insert("disableGC".into(), true.into());
        }
        m.insert(
            "plugins".into(),
            self.plugins
                .iter()
                .map(|p| Value::Object(p.raw.clone()))
                .collect(),
        );
        Value::Object(m)
    }

    /// Derives the request configuration for plugin `index` (SPEC section
    /// 3): the plugin object with `cniVersion` and `name` set, `capabilities`
    /// removed, `runtimeConfig` holding the runtime's capability arguments
    /// the plugin declared, and `prevResult` when given.
    pub fn plugin_request(
        &self,
        index: usize,
        version: CniVersion,
        capability_args: &Map<String, Value>,
        prev_result: Option<&Value>,
    ) -> Value {
        let plugin = &self.plugins[index];
        let mut req = plugin.raw.clone();
        req.remove("capabilities");
        req.insert("cniVersion".into(), version.to_string().into());
        req.insert("name".into(), self.name.clone().into());
        let mut rc = Map::new();
        for (cap, data) in capability_args {
            if plugin.has_capability(cap) {
                rc.insert(cap.clone(), data.clone());
            }
        }
        if !rc.is_empty() {
            // Keep a static runtimeConfig the admin wrote; ours wins per key.
            match req.get_mut("runtimeConfig") {
                Some(Value::Object(existing)) => existing.extend(rc),
                _ => {
                    req.insert("runtimeConfig".into(), Value::Object(rc));
                }
            }
        }
        match prev_result {
            Some(prev) => {
                req.insert("prevResult".into(), prev.clone());
            }
            None => {
                req.remove("prevResult");
            }
        }
        Value::Object(req)
    }

    /// The request configuration for STATUS and GC: no attachment data.
    pub fn plugin_request_plain(
        &self,
        index: usize,
        version: CniVersion,
        extra: &[(&str, Value)],
    ) -> Value {
        let mut req = self.plugins[index].raw.clone();
        req.remove("capabilities");
        req.remove("prevResult");
        req.insert("cniVersion".into(), version.to_string().into());
        req.insert("name".into(), self.name.clone().into());
        for (k, v) in extra {
            req.insert((*k).to_owned(), v.clone());
        }
        Value::Object(req)
    }
}

fn supported_list() -> String {
    CniVersion::SUPPORTED
        .iter()
        .map(|v| v.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn read_bool(obj: &Map<String, Value>, key: &str) -> Result<bool, String> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        // libcni accepts "true"/"false" strings too; so do we.
        Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => Ok(true),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => Ok(false),
        Some(_) => Err(format!("\"{key}\" must be true or false")),
    }
}

fn parse_plugin(v: Value) -> Result<PluginConf, String> {
    let Value::Object(raw) = v else {
        return Err("not a JSON object".to_owned());
    };
    let plugin_type = match raw.get("type") {
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err("\"type\" must be a string".to_owned()),
        None => return Err("missing \"type\"".to_owned()),
    };
    validate_plugin_type(&plugin_type)?;
    let mut capabilities = BTreeMap::new();
    match raw.get("capabilities") {
        None | Some(Value::Null) => {}
        Some(Value::Object(caps)) => {
            for (k, v) in caps {
                match v {
                    Value::Bool(true) => {
                        capabilities.insert(k.clone(), true);
                    }
                    Value::Bool(false) => {}
                    _ => return Err(format!("capability {k:?} must be true or false")),
                }
            }
        }
        Some(_) => return Err("\"capabilities\" must be an object".to_owned()),
    }
    Ok(PluginConf {
        plugin_type,
        capabilities,
        raw,
    })
}

/// A plugin `type` names a file in a bin dir: no path separators.
pub fn validate_plugin_type(t: &str) -> Result<(), String> {
    if t.is_empty() {
        return Err("\"type\" is empty".to_owned());
    }
    if t == "." || t == ".." || t.contains(['/', '\\', '\0']) {
        return Err(format!("\"type\" {t:?} is not a plugin file name"));
    }
    Ok(())
}

/// Network names and container IDs: an alphanumeric first character, then
/// alphanumerics, `_`, `.` or `-` (SPEC sections 1 and 3).
pub fn validate_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    match chars.next() {
        None => return Err("must not be empty".to_owned()),
        Some(c) if !c.is_ascii_alphanumeric() => {
            return Err(format!("{name:?} must start with a letter or digit"));
        }
        _ => {}
    }
    if let Some(c) = chars.find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))) {
        return Err(format!(
            "{name:?} has a character {c:?} outside [A-Za-z0-9_.-]"
        ));
    }
    Ok(())
}

/// One conf dir entry as seen by the change detection.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Stamp {
    name: OsString,
    len: u64,
    mtime_sec: i64,
    mtime_nsec: i64,
    ino: u64,
}

/// What the conf dir looked like: the candidate files, in load order, with
/// (name, size, mtime, inode). Taking one costs a `readdir` and a `stat` per
/// candidate file; comparing two tells whether a reload is needed. No
/// inotify: the daemon compares on demand (before ADD, on `Status`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfDirFingerprint {
    /// `None` when the dir does not exist.
    entries: Option<Vec<Stamp>>,
}

impl ConfDirFingerprint {
    /// Scans `dir`. A missing dir is a valid (empty) state.
    pub fn scan(dir: &Path) -> Result<Self, CniError> {
        let rd = match std::fs::read_dir(dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Self { entries: None });
            }
            Err(e) => {
                return Err(CniError::ConfDir {
                    dir: dir.to_owned(),
                    source: e,
                });
            }
        };
        let mut entries = Vec::new();
        for ent in rd {
            let ent = ent.map_err(|e| CniError::ConfDir {
                dir: dir.to_owned(),
                source: e,
            })?;
            let name = ent.file_name();
            if !is_candidate(&name) {
                continue;
            }
            // Follow symlinks: a link to a file counts, a dangling one is
            // skipped, as are directories.
            let Ok(md) = std::fs::metadata(ent.path()) else {
                continue;
            };
            if !md.is_file() {
                continue;
            }
            entries.push(Stamp {
                name,
                len: md.len(),
                mtime_sec: md.mtime(),
                mtime_nsec: md.mtime_nsec(),
                ino: md.ino(),
            });
        }
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Self {
            entries: Some(entries),
        })
    }

    /// The file that would be loaded: the first candidate in lexical order.
    pub fn first_file(&self, dir: &Path) -> Option<PathBuf> {
        self.entries
            .as_ref()
            .and_then(|e| e.first())
            .map(|s| dir.join(&s.name))
    }

    /// Number of candidate files.
    pub fn len(&self) -> usize {
        self.entries.as_ref().map_or(0, Vec::len)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Whether a dir entry name is a config candidate: `*.conflist`, `*.conf`
/// or `*.json`, not hidden (editors and atomic writers leave dot files).
fn is_candidate(name: &OsString) -> bool {
    let Some(name) = name.to_str() else {
        return false;
    };
    if name.starts_with('.') {
        return false;
    }
    match name.rsplit_once('.') {
        Some((stem, ext)) => !stem.is_empty() && CONF_EXTENSIONS.contains(&ext),
        None => false,
    }
}

/// Loads the network config of a conf dir: the first file in lexical order
/// among `*.conflist`, `*.conf` and `*.json` (hidden files skipped). Returns
/// the fingerprint it loaded from (`None` if the dir could not be read), so
/// the caller can detect changes.
pub fn load_conf_dir(
    dir: &Path,
) -> (
    Option<ConfDirFingerprint>,
    Result<NetworkConfigList, CniError>,
) {
    let fp = match ConfDirFingerprint::scan(dir) {
        Ok(fp) => fp,
        Err(e) => return (None, Err(e)),
    };
    let res = match fp.first_file(dir) {
        None => Err(CniError::NoConfig {
            dir: dir.to_owned(),
        }),
        Some(path) => NetworkConfigList::from_file(&path),
    };
    (Some(fp), res)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn list(v: Value) -> Result<NetworkConfigList, String> {
        NetworkConfigList::from_value(v, false)
    }

    #[test]
    fn validates_lists() {
        let ok = list(json!({
            "cniVersion": "1.0.0", "name": "net-1",
            "plugins": [{"type": "bridge", "capabilities": {"portMappings": true, "mac": false}}]
        }))
        .unwrap();
        assert_eq!(ok.name, "net-1");
        assert_eq!(ok.plugins.len(), 1);
        assert!(ok.plugins[0].has_capability("portMappings"));
        assert!(!ok.plugins[0].has_capability("mac"));

        let cases = [
            (
                json!({"cniVersion": "1.0.0", "plugins": [{"type": "x"}]}),
                "missing \"name\"",
            ),
            (
                json!({"name": "n", "plugins": [{"type": "x"}]}),
                "missing \"cniVersion\"",
            ),
            (
                json!({"name": "n", "cniVersion": "one", "plugins": [{"type": "x"}]}),
                "cniVersion",
            ),
            (
                json!({"name": "n", "cniVersion": "9.0.0", "plugins": [{"type": "x"}]}),
                "not supported",
            ),
            (
                json!({"name": "-n", "cniVersion": "1.0.0", "plugins": [{"type": "x"}]}),
                "must start",
            ),
            (
                json!({"name": "a/b", "cniVersion": "1.0.0", "plugins": [{"type": "x"}]}),
                "outside",
            ),
            (
                json!({"name": "n", "cniVersion": "1.0.0", "plugins": []}),
                "empty",
            ),
            (
                json!({"name": "n", "cniVersion": "1.0.0", "plugins": [{}]}),
                "plugin 0: missing \"type\"",
            ),
            (
                json!({"name": "n", "cniVersion": "1.0.0", "plugins": [{"type": "x"}, {"type": "../x"}]}),
                "plugin 1",
            ),
            (
                json!({"name": "n", "cniVersion": "1.0.0", "plugins": [{"type": "x", "capabilities": {"a": 1}}]}),
                "capability",
            ),
            (
                json!({"name": "n", "cniVersion": "1.0.0", "disableCheck": 3, "plugins": [{"type": "x"}]}),
                "disableCheck",
            ),
            (json!([1]), "not a JSON object"),
        ];
        for (v, want) in cases {
            let err = list(v.clone()).unwrap_err();
            assert!(err.contains(want), "{v}: {err:?} should contain {want:?}");
        }
    }

    #[test]
    fn single_conf_is_wrapped_but_not_for_conflist() {
        let single =
            json!({"cniVersion": "0.4.0", "name": "one", "type": "bridge", "bridge": "b0"});
        let l = NetworkConfigList::from_value(single.clone(), false).unwrap();
        assert_eq!(l.plugins.len(), 1);
        assert_eq!(l.plugins[0].plugin_type, "bridge");
        assert_eq!(l.plugins[0].raw["bridge"], "b0");
        let err = NetworkConfigList::from_value(single, true).unwrap_err();
        assert!(err.contains("plugins"), "{err}");
    }

    #[test]
    fn version_selection_candidates() {
        let l = list(json!({
            "cniVersion": "0.4.0", "cniVersions": ["1.0.0", "1.1.0", "7.0.0"], "name": "n",
            "plugins": [{"type": "x"}]
        }))
        .unwrap();
        assert_eq!(
            l.version_candidates(),
            vec![CniVersion::V1_1_0, CniVersion::V1_0_0, CniVersion::V0_4_0]
        );
        assert_eq!(l.preferred_version(), CniVersion::V1_1_0);
        // An unknown future cniVersion is fine when cniVersions offers one we know.
        let l = list(json!({
            "cniVersion": "2.0.0", "cniVersions": ["1.0.0"], "name": "n", "plugins": [{"type": "x"}]
        }))
        .unwrap();
        assert_eq!(l.preferred_version(), CniVersion::V1_0_0);
    }

    #[test]
    fn request_derivation() {
        let l = list(json!({
            "cniVersion": "1.0.0", "name": "net",
            "plugins": [
                {"type": "bridge", "name": "ignored", "cniVersion": "0.1.0", "bridge": "b0",
                 "capabilities": {"ipRanges": true}},
                {"type": "portmap", "capabilities": {"portMappings": true, "bandwidth": false},
                 "runtimeConfig": {"static": 1}}
            ]
        }))
        .unwrap();
        let caps: Map<String, Value> = serde_json::from_value(json!({
            "portMappings": [{"hostPort": 80, "containerPort": 8080, "protocol": "tcp"}],
            "bandwidth": {"ingressRate": 1},
        }))
        .unwrap();
        let r0 = l.plugin_request(0, CniVersion::V1_0_0, &caps, None);
        assert_eq!(
            r0,
            json!({"type": "bridge", "name": "net", "cniVersion": "1.0.0", "bridge": "b0"})
        );
        let prev = json!({"cniVersion": "1.0.0", "ips": []});
        let r1 = l.plugin_request(1, CniVersion::V1_0_0, &caps, Some(&prev));
        assert_eq!(
            r1,
            json!({
                "type": "portmap", "name": "net", "cniVersion": "1.0.0",
                "runtimeConfig": {"static": 1, "portMappings": [{"hostPort": 80, "containerPort": 8080, "protocol": "tcp"}]},
                "prevResult": {"cniVersion": "1.0.0", "ips": []}
            })
        );
    }

    #[test]
    fn conf_dir_order_and_fingerprint() {
        let d = tempfile::tempdir().unwrap();
        let (_, r) = load_conf_dir(&d.path().join("missing"));
        assert!(matches!(r, Err(CniError::NoConfig { .. })));
        let (fp0, r) = load_conf_dir(d.path());
        let fp0 = fp0.unwrap();
        assert!(matches!(r, Err(CniError::NoConfig { .. })));

        let conf = |name: &str| {
            format!(r#"{{"cniVersion":"1.0.0","name":"{name}","plugins":[{{"type":"bridge"}}]}}"#)
        };
        std::fs::write(d.path().join("20-b.conflist"), conf("b")).unwrap();
        std::fs::write(d.path().join("notes.txt"), "x").unwrap();
        std::fs::write(d.path().join(".10-hidden.conflist"), conf("hidden")).unwrap();
        std::fs::create_dir(d.path().join("05-dir.conf")).unwrap();
        let (fp1, r) = load_conf_dir(d.path());
        let fp1 = fp1.unwrap();
        assert_eq!(r.unwrap().name, "b");
        assert_ne!(fp0, fp1);
        assert_eq!(fp1.len(), 1);
        assert_eq!(ConfDirFingerprint::scan(d.path()).unwrap(), fp1);

        // A .conf sorts before and wins.
        std::fs::write(
            d.path().join("10-a.conf"),
            r#"{"cniVersion":"0.3.1","name":"a","type":"ptp"}"#,
        )
        .unwrap();
        let (fp2, r) = load_conf_dir(d.path());
        let fp2 = fp2.unwrap();
        let l = r.unwrap();
        assert_eq!(
            (l.name.as_str(), l.plugins[0].plugin_type.as_str()),
            ("a", "ptp")
        );
        assert_eq!(
            l.source.as_deref(),
            Some(d.path().join("10-a.conf").as_path())
        );
        assert_ne!(fp1, fp2);

        // Rewriting it with the same length is still a change (mtime/inode).
        std::thread::sleep(std::time::Duration::from_millis(5));
        std::fs::write(
            d.path().join("10-a.conf"),
            r#"{"cniVersion":"0.3.1","name":"-","type":"ptp"}"#,
        )
        .unwrap();
        let fp3 = ConfDirFingerprint::scan(d.path()).unwrap();
        assert_ne!(fp2, fp3);
        let (_, r) = load_conf_dir(d.path());
        let err = r.unwrap_err().to_string();
        assert!(err.contains("10-a.conf"), "{err}");

        // An invalid first file is an error naming it (not skipped).
        std::fs::write(d.path().join("00-bad.json"), "{not json").unwrap();
        let (_, r) = load_conf_dir(d.path());
        let err = r.unwrap_err().to_string();
        assert!(
            err.contains("00-bad.json") && err.contains("not valid JSON"),
            "{err}"
        );
    }
}
