//! Durable exit records: `<state-dir>/exits/<id>.json`.
//!
//! berthd may be down when a container exits; it reads these after its own
//! restart, so a record is written (tmp file, rename: never seen half
//! written) before the monitor tells anyone about the exit.
//!
//! No fsync: the record lives in the state dir, which a reboot empties
//! (docs/architecture.md: `--state` is runtime state; normally a tmpfs, where
//! fsync does nothing). What it must survive is a `kill -9` of berthd or of
//! the monitor, and the page cache does: the kernel keeps the written file.
//! Only a kernel crash or power loss could lose it, and those kill the
//! container too, which is then reported as exited either way.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use berth_monitor_protocol::ExitRecord;

pub fn path(exits_dir: &Path, id: &str) -> PathBuf {
    exits_dir.join(format!("{id}.json"))
}

/// Writes the record for `id` atomically (see the module docs on durability).
pub fn write(exits_dir: &Path, id: &str, rec: &ExitRecord) -> io::Result<()> {
    let data = serde_json::to_vec(rec).map_err(io::Error::other)?;
    let tmp = exits_dir.join(format!(".{id}.json.tmp"));
    let mut f = File::create(&tmp)?;
    f.write_all(&data)?;
    drop(f);
    fs::rename(&tmp, path(exits_dir, id))
}

/// Reads the record for `id`, `None` if there is none.
pub fn read(exits_dir: &Path, id: &str) -> io::Result<Option<ExitRecord>> {
    match fs::read(path(exits_dir, id)) {
        Ok(data) => serde_json::from_slice(&data)
            .map(Some)
            .map_err(io::Error::other),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Removes the record (after berthd stored it and deleted the container).
pub fn remove(exits_dir: &Path, id: &str) -> io::Result<()> {
    match fs::remove_file(path(exits_dir, id)) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}
