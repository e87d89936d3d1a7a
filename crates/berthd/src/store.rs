//! The daemon's metadata store: one redb file under `--root`.
//!
//! redb gives crash-safe transactions, so a record is either fully written or
//! absent after a `kill -9`. Each subsystem owns its own tables; this module
//! owns the file, its schema version and the daemon-wide settings table.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

/// Bumped when a table's layout changes incompatibly. A store written by a
/// newer build is refused; older versions are migrated (none exist yet).
pub const SCHEMA_VERSION: u64 = 1;

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const SETTINGS: TableDefinition<&str, &str> = TableDefinition::new("settings");

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "metadata store {path} is already open in another process (is another berthd using --root {root}?)"
    )]
    Locked { path: PathBuf, root: PathBuf },
    #[error(
        "metadata store {path} has schema version {found}, newer than this berthd understands ({supported}); run the newer berthd, or move the store aside to start empty"
    )]
    TooNew {
        path: PathBuf,
        found: u64,
        supported: u64,
    },
    #[error("cannot open metadata store {path}: {message}")]
    Open { path: PathBuf, message: String },
    #[error("metadata store error: {0}")]
    Db(String),
}

macro_rules! db_err {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::Db(e.to_string())
            }
        }
    )*};
}
db_err!(
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

#[derive(Clone)]
pub struct Store {
    db: Arc<Database>,
    path: PathBuf,
}

impl Store {
    pub fn open(root: &Path) -> Result<Store, StoreError> {
        let path = root.join("berth.redb");
        let db = Database::create(&path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => StoreError::Locked {
                path: path.clone(),
                root: root.to_path_buf(),
            },
            other => StoreError::Open {
                path: path.clone(),
                message: other.to_string(),
            },
        })?;
        let store = Store {
            db: Arc::new(db),
            path,
        };
        store.check_schema()?;
        Ok(store)
    }

    fn check_schema(&self) -> Result<(), StoreError> {
        let txn = self.db.begin_write()?;
        {
            let mut meta = txn.open_table(META)?;
            let found = meta.get("schema_version")?.map(|v| v.value());
            match found {
                Some(v) if v > SCHEMA_VERSION => {
                    return Err(StoreError::TooNew {
                        path: self.path.clone(),
                        found: v,
                        supported: SCHEMA_VERSION,
                    });
                }
                Some(_) => {}
                None => {
                    meta.insert("schema_version", SCHEMA_VERSION)?;
                }
            }
            // Creating every table up front lets read transactions open them unconditionally.
            txn.open_table(SETTINGS)?;
        }
        txn.commit()?;
        Ok(())
    }

    /// The database handle, shared with subsystems that keep their own tables.
    pub fn db(&self) -> Arc<Database> {
        self.db.clone()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn get_setting(&self, key: &str) -> Result<Option<String>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(SETTINGS)?;
        Ok(table.get(key)?.map(|v| v.value().to_string()))
    }

    pub fn set_setting(&self, key: &str, value: &str) -> Result<(), StoreError> {
        let txn = self.db.begin_write()?;
        txn.open_table(SETTINGS)?.insert(key, value)?;
        txn.commit()?;
        Ok(())
    }
}

/// redb's answer to every call after a write failed with an I/O error
/// (ENOSPC, EIO): the open database refuses all further work until it is
/// reopened.
const POISONED: &str = "Previous I/O error occurred";

/// Crash-only backstop: when the store is poisoned, berthd exits so its
/// supervisor (systemd, the DaemonSet) restarts it with a freshly opened
/// store. Nothing is lost: every record is durable and containers outlive
/// berthd. Better than answering Internal to every RPC until a human comes.
pub fn exit_if_poisoned(message: &str) {
    if message.contains(POISONED) {
        tracing::error!(
            error = message,
            "the metadata store hit an I/O error (disk full?) and must be reopened: berthd exits to be restarted"
        );
        std::process::exit(75);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Store::open(dir.path()).unwrap();
            s.set_setting("pod_cidr", "10.88.0.0/16").unwrap();
        }
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(
            s.get_setting("pod_cidr").unwrap().as_deref(),
            Some("10.88.0.0/16")
        );
        assert_eq!(s.get_setting("absent").unwrap(), None);
    }

    #[test]
    fn second_open_is_refused_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let _first = Store::open(dir.path()).unwrap();
        let err = Store::open(dir.path()).err().unwrap();
        assert!(matches!(err, StoreError::Locked { .. }), "{err}");
    }

    #[test]
    fn newer_schema_is_refused_with_a_clear_message() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Store::open(dir.path()).unwrap();
            let txn = s.db.begin_write().unwrap();
            txn.open_table(META)
                .unwrap()
                .insert("schema_version", SCHEMA_VERSION + 1)
                .unwrap();
            txn.commit().unwrap();
        }
        let err = Store::open(dir.path()).err().unwrap().to_string();
        assert!(err.contains("newer than this berthd"), "{err}");
    }

    #[test]
    fn garbage_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("berth.redb"), b"not a database at all").unwrap();
        let err = Store::open(dir.path()).err().unwrap().to_string();
        assert!(err.contains("berth.redb"), "{err}");
    }
}
