//! The durable record of each attachment: the config, runtime parameters
//! and ADD result, so that DEL (after a daemon restart too) passes the
//! plugins what ADD used and returned.
//!
//! One JSON file per attachment, `<dir>/results/<network>:<container>:<ifname>.json`
//! (`:` cannot occur in any of the three, so names never collide), written
//! atomically: temp file, fsync, rename, fsync of the dir.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::attachment::AttachmentKey;
use crate::error::CniError;

const KIND: &str = "berthCniCacheV1";
const TMP_PREFIX: &str = ".tmp.";

/// One cached attachment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CacheEntry {
    pub kind: String,
    pub network: String,
    pub container_id: String,
    pub ifname: String,
    /// `CNI_NETNS` at ADD.
    pub netns: PathBuf,
    /// `CNI_ARGS` at ADD.
    pub cni_args: Vec<(String, String)>,
    /// The capability arguments at ADD (all of them, before filtering).
    pub capability_args: Map<String, Value>,
    /// The spec version the plugins were called with.
    pub cni_version: String,
    /// The network config list used for ADD (DEL uses it, not the conf dir).
    pub config: Value,
    /// The file the config came from.
    #[serde(default)]
    pub config_path: Option<PathBuf>,
    /// The final ADD result; `None` while ADD runs, or when it failed and
    /// its undoing DEL failed too. Either way the attachment needs a DEL.
    #[serde(default)]
    pub result: Option<Value>,
    /// Seconds since the epoch when the record was first written.
    #[serde(default)]
    pub created_unix: u64,
}

impl CacheEntry {
    pub fn key(&self) -> AttachmentKey {
        AttachmentKey {
            network: self.network.clone(),
            container_id: self.container_id.clone(),
            ifname: self.ifname.clone(),
        }
    }

    /// Whether ADD completed (there is a result to pass to DEL/CHECK).
    pub fn is_complete(&self) -> bool {
        self.result.is_some()
    }

    pub(crate) fn kind() -> String {
        KIND.to_owned()
    }
}

/// The result cache dir (berthd passes `<state>/cni`).
#[derive(Clone, Debug)]
pub struct ResultCache {
    dir: PathBuf,
}

static TMP_SEQ: AtomicU64 = AtomicU64::new(0);

impl ResultCache {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn results_dir(&self) -> PathBuf {
        self.dir.join("results")
    }

    fn file_name(key: &AttachmentKey) -> String {
        format!("{}:{}:{}.json", key.network, key.container_id, key.ifname)
    }

    /// The file of one attachment.
    pub fn path_for(&self, key: &AttachmentKey) -> PathBuf {
        self.results_dir().join(Self::file_name(key))
    }

    fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> CniError + '_ {
        move |source| CniError::Cache {
            path: path.to_owned(),
            source,
        }
    }

    /// Writes `entry` atomically: a reader (or a crash) sees the old file
    /// or the new one, never a mix.
    pub fn save(&self, entry: &CacheEntry) -> Result<(), CniError> {
        let dir = self.results_dir();
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(Self::io_err(&dir))?;
        let target = self.path_for(&entry.key());
        let data = serde_json::to_vec(entry).expect("cache entry serializes");
        let tmp = dir.join(format!(
            "{TMP_PREFIX}{}.{}.{}",
            Self::file_name(&entry.key()),
            std::process::id(),
            TMP_SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let write = || -> std::io::Result<()> {
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(&data)?;
            f.sync_all()?;
            drop(f);
            fs::rename(&tmp, &target)?;
            File::open(&dir)?.sync_all()
        };
        write().map_err(|e| {
            let _ = fs::remove_file(&tmp);
            CniError::Cache {
                path: target.clone(),
                source: e,
            }
        })
    }

    /// Reads one attachment's record; `None` if there is none.
    pub fn load(&self, key: &AttachmentKey) -> Result<Option<CacheEntry>, CniError> {
        let path = self.path_for(key);
        match fs::read(&path) {
            Ok(bytes) => parse(&path, &bytes).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Self::io_err(&path)(e)),
        }
    }

    /// Removes one attachment's record (absent is fine).
    pub fn remove(&self, key: &AttachmentKey) -> Result<(), CniError> {
        let path = self.path_for(key);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Self::io_err(&path)(e)),
        }
    }

    /// Every record, sorted by key. Unreadable or corrupt files are logged
    /// and skipped; temp files are ignored.
    pub fn list(&self) -> Result<Vec<CacheEntry>, CniError> {
        self.list_matching(|_| true)
    }

    /// The records of one container and interface, in any network.
    pub fn find(&self, container_id: &str, ifname: &str) -> Result<Vec<CacheEntry>, CniError> {
        let suffix = format!(":{container_id}:{ifname}.json");
        self.list_matching(|name| name.ends_with(&suffix))
    }

    fn list_matching(&self, want: impl Fn(&str) -> bool) -> Result<Vec<CacheEntry>, CniError> {
        let dir = self.results_dir();
        let rd = match fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Self::io_err(&dir)(e)),
        };
        let mut out = Vec::new();
        for ent in rd {
            let ent = ent.map_err(Self::io_err(&dir))?;
            let name = ent.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.starts_with('.') || !name.ends_with(".json") || !want(name) {
                continue;
            }
            let path = ent.path();
            match fs::read(&path)
                .map_err(Self::io_err(&path))
                .and_then(|b| parse(&path, &b))
            {
                Ok(e) => out.push(e),
                Err(e) => tracing::warn!(error = %e, "skipping CNI cache file"),
            }
        }
        out.sort_by_key(|a| a.key());
        Ok(out)
    }

    /// Removes temp files a crash left behind (call once at startup, before
    /// any `save`).
    pub fn remove_stale_temp_files(&self) -> Result<usize, CniError> {
        let dir = self.results_dir();
        let rd = match fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(Self::io_err(&dir)(e)),
        };
        let mut n = 0;
        for ent in rd.flatten() {
            if ent.file_name().to_string_lossy().starts_with(TMP_PREFIX)
                && fs::remove_file(ent.path()).is_ok()
            {
                n += 1;
            }
        }
        Ok(n)
    }
}

fn parse(path: &Path, bytes: &[u8]) -> Result<CacheEntry, CniError> {
    let corrupt = |reason: String| CniError::CacheCorrupt {
        path: path.to_owned(),
        reason,
    };
    let e: CacheEntry = serde_json::from_slice(bytes).map_err(|e| corrupt(e.to_string()))?;
    if e.kind != KIND {
        return Err(corrupt(format!("kind {:?}, expected {KIND:?}", e.kind)));
    }
    Ok(e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    pub(crate) fn entry(net: &str, cid: &str, ifname: &str, result: Option<Value>) -> CacheEntry {
        CacheEntry {
            kind: CacheEntry::kind(),
            network: net.into(),
            container_id: cid.into(),
            ifname: ifname.into(),
            netns: "/run/netns/x".into(),
            cni_args: vec![("K8S_POD_NAME".into(), "p".into())],
            capability_args: serde_json::from_value(json!({"portMappings": []})).unwrap(),
            cni_version: "1.0.0".into(),
            config: json!({"cniVersion": "1.0.0", "name": net, "plugins": [{"type": "a"}]}),
            config_path: Some("/etc/cni/net.d/10-x.conflist".into()),
            result,
            created_unix: 1,
        }
    }

    #[test]
    fn round_trip_find_remove() {
        let d = tempfile::tempdir().unwrap();
        let c = ResultCache::new(d.path().join("cni"));
        assert!(c.list().unwrap().is_empty());
        let e1 = entry(
            "net-a",
            "c1",
            "eth0",
            Some(json!({"cniVersion": "1.0.0", "ips": []})),
        );
        let e2 = entry("net-b", "c1", "eth0", None);
        let e3 = entry("net-a", "c11", "eth0", None);
        for e in [&e1, &e2, &e3] {
            c.save(e).unwrap();
        }
        assert_eq!(c.load(&e1.key()).unwrap().as_ref(), Some(&e1));
        assert_eq!(c.list().unwrap(), vec![e1.clone(), e3.clone(), e2.clone()]);
        // find matches the whole container ID, not a suffix of it.
        assert_eq!(c.find("c1", "eth0").unwrap(), vec![e1.clone(), e2.clone()]);
        assert_eq!(c.find("1", "eth0").unwrap(), vec![]);
        assert_eq!(c.find("c1", "eth1").unwrap(), vec![]);
        c.remove(&e1.key()).unwrap();
        c.remove(&e1.key()).unwrap();
        assert_eq!(c.load(&e1.key()).unwrap(), None);
        // Overwrite replaces.
        let mut e2b = e2.clone();
        e2b.result = Some(json!({"cniVersion": "1.0.0"}));
        c.save(&e2b).unwrap();
        assert_eq!(c.load(&e2.key()).unwrap(), Some(e2b));
        // Files are private.
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(c.path_for(&e2.key()))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn atomic_writes_leave_no_temp_and_skip_garbage() {
        let d = tempfile::tempdir().unwrap();
        let c = ResultCache::new(d.path());
        let e = entry("n", "c", "eth0", None);
        c.save(&e).unwrap();
        let ino_before = {
            use std::os::unix::fs::MetadataExt;
            fs::metadata(c.path_for(&e.key())).unwrap().ino()
        };
        c.save(&e).unwrap();
        let ino_after = {
            use std::os::unix::fs::MetadataExt;
            fs::metadata(c.path_for(&e.key())).unwrap().ino()
        };
        // Replaced by rename (a new inode), never rewritten in place.
        assert_ne!(ino_before, ino_after);
        let names: Vec<String> = fs::read_dir(d.path().join("results"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec!["n:c:eth0.json".to_string()]);

        // A crash mid-write leaves a temp file (ignored, then cleaned up);
        // a torn or foreign file is skipped by list and an error for load.
        let results = d.path().join("results");
        fs::write(results.join(".tmp.n:d:eth0.json.1.1"), "{\"kind\":").unwrap();
        fs::write(results.join("n:torn:eth0.json"), "{\"kind\":\"berthCni").unwrap();
        fs::write(
            results.join("n:other:eth0.json"),
            r#"{"kind":"cniCacheV1"}"#,
        )
        .unwrap();
        assert_eq!(c.list().unwrap(), vec![e.clone()]);
        let torn = AttachmentKey {
            network: "n".into(),
            container_id: "torn".into(),
            ifname: "eth0".into(),
        };
        let err = c.load(&torn).unwrap_err().to_string();
        assert!(
            err.contains("corrupt") && err.contains("n:torn:eth0.json"),
            "{err}"
        );
        assert_eq!(c.remove_stale_temp_files().unwrap(), 1);
        assert!(!results.join(".tmp.n:d:eth0.json.1.1").exists());
    }

    #[test]
    fn concurrent_saves_of_one_key() {
        let d = tempfile::tempdir().unwrap();
        let c = ResultCache::new(d.path());
        std::thread::scope(|s| {
            for i in 0..8 {
                let c = c.clone();
                s.spawn(move || {
                    for j in 0..20 {
                        let mut e = entry("n", "c", "eth0", Some(json!({"i": i, "j": j})));
                        e.created_unix = i * 100 + j;
                        c.save(&e).unwrap();
                        // Every read sees a whole record.
                        let got = c.load(&e.key()).unwrap().unwrap();
                        assert!(got.result.is_some());
                    }
                });
            }
        });
        assert_eq!(c.list().unwrap().len(), 1);
        assert_eq!(fs::read_dir(d.path().join("results")).unwrap().count(), 1);
    }
}
