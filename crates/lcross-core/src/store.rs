//! The result store: an embedded SQLite database (WAL mode) that remembers computed
//! activations, evaluations and other cached results across runs and processes.
//!
//! Every entry lives under a *kind* (`activation`, `ab-eval`, ...) and a 32-byte key
//! that hashes everything that changes its numbers ([`NumericsKey`] of the model plus
//! the exact inputs). SQLite gives what a hand-written append file had to fake: several
//! processes may read and write at once (WAL, a busy timeout instead of lock errors),
//! a process killed mid-write loses only its open transaction, and nothing is ever
//! half-written.

use std::path::{Path, PathBuf};
use std::time::Duration;

use lcross_model::Model;
use rusqlite::{params, Connection, OptionalExtension};
use sha2::{Digest, Sha256};

use crate::error::{CoreError, Result};

/// A key of 32 bytes (sha256 of the entry's identity).
pub type Key = [u8; 32];

/// Default location: `$LCROSS_CACHE/lcross.sqlite` or `~/.cache/lcross/lcross.sqlite`.
pub fn default_store_path() -> PathBuf {
    if let Some(d) = std::env::var_os("LCROSS_CACHE").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("lcross.sqlite");
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
    home.join(".cache").join("lcross").join("lcross.sqlite")
}

/// What makes a model's numbers what they are: the weights file, how the weights are
/// held, the compute dtype and device, and the runtime revision (bumped whenever the
/// forward pass changes its arithmetic). Part of every cache key.
pub fn numerics_key(model: &Model) -> Result<String> {
    Ok(format!("model_sha256={};{};runtime={}", model.file_sha256()?, model.numerics(), lcross_model::RUNTIME_REVISION))
}

/// Hash parts into a key.
pub fn key_of(parts: &[&[u8]]) -> Key {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    h.finalize().into()
}

/// How long a connection waits for another process's lock before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(60);

/// Run `f` again while SQLite answers "busy" or "locked" without having waited (the
/// journal-mode switch and schema setup of a new database), for up to [`BUSY_TIMEOUT`].
fn retry_while_busy<T>(mut f: impl FnMut() -> rusqlite::Result<T>) -> rusqlite::Result<T> {
    let start = std::time::Instant::now();
    let mut pause = Duration::from_millis(5);
    loop {
        match f() {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if matches!(e.code, rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) && start.elapsed() < BUSY_TIMEOUT =>
            {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(200));
            }
            other => return other,
        }
    }
}

/// An open store.
pub struct Store {
    conn: Connection,
    path: PathBuf,
}

impl Store {
    /// Open (or create) the store at `path`.
    pub fn open(path: &Path) -> Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| CoreError::io(dir, e))?;
        }
        let err = |e: rusqlite::Error| CoreError::Store { path: path.to_path_buf(), reason: e.to_string() };
        let conn = Connection::open(path).map_err(err)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(err)?;
        // Switching a new database to WAL and creating its table take locks that SQLite
        // does not wait for through the busy handler: processes opening the same new
        // store at once get "database is locked" at once. Retry until the busy timeout.
        retry_while_busy(|| {
            conn.pragma_update(None, "journal_mode", "WAL")?;
            conn.pragma_update(None, "synchronous", "NORMAL")?;
            conn.execute_batch(
                "CREATE TABLE IF NOT EXISTS entries (
                     kind TEXT NOT NULL,
                     key BLOB NOT NULL,
                     value BLOB NOT NULL,
                     created TEXT NOT NULL DEFAULT (datetime('now')),
                     PRIMARY KEY (kind, key)
                 ) WITHOUT ROWID;",
            )
        })
        .map_err(err)?;
        Ok(Self { conn, path: path.to_path_buf() })
    }

    /// Open the default store.
    pub fn open_default() -> Result<Self> {
        Self::open(&default_store_path())
    }

    /// Where the database lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self, e: rusqlite::Error) -> CoreError {
        CoreError::Store { path: self.path.clone(), reason: e.to_string() }
    }

    /// The value stored under (`kind`, `key`).
    pub fn get(&self, kind: &str, key: &Key) -> Result<Option<Vec<u8>>> {
        self.conn
            .query_row("SELECT value FROM entries WHERE kind = ?1 AND key = ?2", params![kind, key.as_slice()], |r| r.get(0))
            .optional()
            .map_err(|e| self.err(e))
    }

    /// Store several entries in one transaction (all or nothing); existing keys keep
    /// their first value.
    pub fn put_many(&mut self, kind: &str, entries: &[(Key, Vec<u8>)]) -> Result<()> {
        let path = self.path.clone();
        let err = |e: rusqlite::Error| CoreError::Store { path: path.clone(), reason: e.to_string() };
        let tx = self.conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(err)?;
        {
            let mut stmt = tx.prepare_cached("INSERT OR IGNORE INTO entries (kind, key, value) VALUES (?1, ?2, ?3)").map_err(err)?;
            for (k, v) in entries {
                stmt.execute(params![kind, k.as_slice(), v]).map_err(err)?;
            }
        }
        tx.commit().map_err(err)
    }

    /// Store one entry.
    pub fn put(&mut self, kind: &str, key: &Key, value: &[u8]) -> Result<()> {
        self.put_many(kind, &[(*key, value.to_vec())])
    }

    /// Number of entries of `kind`.
    pub fn count(&self, kind: &str) -> Result<usize> {
        self.conn.query_row("SELECT COUNT(*) FROM entries WHERE kind = ?1", params![kind], |r| r.get::<_, i64>(0)).map(|n| n as usize).map_err(|e| self.err(e))
    }

    /// SQLite's own consistency check ("ok" when sound).
    pub fn integrity_check(&self) -> Result<String> {
        self.conn.query_row("PRAGMA integrity_check", [], |r| r.get(0)).map_err(|e| self.err(e))
    }
}

/// f32 values as little-endian bytes.
pub fn f32s_to_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Little-endian bytes as f32 values (None when the length is not a multiple of 4).
pub fn bytes_to_f32s(b: &[u8]) -> Option<Vec<f32>> {
    if !b.len().is_multiple_of(4) {
        return None;
    }
    Some(b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_opening_one_new_store_at_once_all_succeed() {
        // The CI failure this guards: two processes creating the same store together, one
        // got "database is locked" from the WAL switch in 0.16 s. Threads with their own
        // connections lock the file as processes do.
        for round in 0..10 {
            let dir = std::env::temp_dir().join(format!("lcross-store-race-{}-{round}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            let path = dir.join("s.sqlite");
            let barrier = std::sync::Arc::new(std::sync::Barrier::new(8));
            let writers: Vec<_> = (0..8u8)
                .map(|t| {
                    let (path, barrier) = (path.clone(), barrier.clone());
                    std::thread::spawn(move || {
                        barrier.wait();
                        let mut s = Store::open(&path)?;
                        s.put("x", &key_of(&[&[t]]), &[t])
                    })
                })
                .collect();
            for w in writers {
                w.join().unwrap().unwrap();
            }
            assert_eq!(Store::open(&path).unwrap().count("x").unwrap(), 8);
            let _ = std::fs::remove_dir_all(&dir);
        }
    }

    #[test]
    fn entries_round_trip_and_keep_their_first_value() {
        let dir = std::env::temp_dir().join(format!("lcross-store-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut s = Store::open(&dir.join("s.sqlite")).unwrap();
        let k = key_of(&[b"a", b"b"]);
        assert_ne!(k, key_of(&[b"ab"]), "parts are length-prefixed");
        assert_eq!(s.get("x", &k).unwrap(), None);
        s.put("x", &k, &f32s_to_bytes(&[1.0, -2.5])).unwrap();
        s.put("x", &k, &f32s_to_bytes(&[9.0])).unwrap();
        assert_eq!(bytes_to_f32s(&s.get("x", &k).unwrap().unwrap()).unwrap(), vec![1.0, -2.5]);
        assert_eq!(s.get("y", &k).unwrap(), None, "kinds are separate");
        assert_eq!(s.count("x").unwrap(), 1);
        assert_eq!(s.integrity_check().unwrap(), "ok");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
