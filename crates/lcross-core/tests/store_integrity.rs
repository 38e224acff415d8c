//! The result store proves its values: a value whose bytes changed (through SQL or on
//! disk) is a miss, never served; a damaged file names itself and what to do; a store
//! that cannot be written is read and not written.
//!
//! The read-only case runs this test binary again on `read_only_child` in a directory it
//! may not write: as another user (nobody) when the tests run as root, who ignores
//! permissions, else after removing the write permissions.

use std::path::{Path, PathBuf};
use std::process::Command;

use lcross_core::store::{self, bytes_to_f32s, f32s_to_bytes, key_of, Store};
use lcross_core::CoreError;

const KIND: &str = "activation";

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("lcross-store-int-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A value easy to find in the file: 64 distinct f32s.
fn value() -> Vec<f32> {
    (0..64).map(|i| 1234.5 + i as f32).collect()
}

#[test]
fn a_value_changed_through_sql_is_a_miss_then_rewritten() {
    let path = tmp("sql").join("s.sqlite");
    let k = key_of(&[b"a"]);
    let mut s = Store::open(&path).unwrap();
    s.put(KIND, &k, &f32s_to_bytes(&value())).unwrap();
    let mut changed = value();
    changed[7] = 0.0;
    rusqlite::Connection::open(&path).unwrap().execute("UPDATE entries SET value = ?1", [f32s_to_bytes(&changed)]).unwrap();
    assert_eq!(s.get(KIND, &k).unwrap(), None, "a value whose bytes changed is never served");
    assert_eq!(s.failed_checksums(), 1);
    s.put(KIND, &k, &f32s_to_bytes(&value())).unwrap();
    assert_eq!(bytes_to_f32s(&s.get(KIND, &k).unwrap().unwrap()).unwrap(), value(), "the recomputed value is stored in its place");
    // A value moved to another key fails too (the key is in the checksum).
    let k2 = key_of(&[b"b"]);
    s.put(KIND, &k2, &f32s_to_bytes(&[1.0])).unwrap();
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute(
        "UPDATE entries SET value = (SELECT value FROM entries WHERE key = ?1), checksum = (SELECT checksum FROM entries WHERE key = ?1) WHERE key = ?2",
        [k.to_vec(), k2.to_vec()],
    )
    .unwrap();
    assert_eq!(s.get(KIND, &k2).unwrap(), None);
    assert_eq!(s.failed_checksums(), 2);
}

#[test]
fn a_byte_flipped_on_disk_is_caught_and_check_finds_it() {
    let dir = tmp("disk");
    let path = dir.join("s.sqlite");
    let k = key_of(&[b"disk"]);
    Store::open(&path).unwrap().put(KIND, &k, &f32s_to_bytes(&value())).unwrap();
    // Closing the last connection checkpoints the WAL into the database file.
    let mut bytes = std::fs::read(&path).unwrap();
    let needle = f32s_to_bytes(&value());
    let at = bytes.windows(needle.len()).position(|w| w == needle.as_slice()).expect("the value is in the file");
    bytes[at + 30] ^= 0x10; // one bit of one float
    std::fs::write(&path, &bytes).unwrap();
    let report = store::check(&path, false).unwrap();
    assert_eq!(report.integrity, "ok", "SQLite itself sees nothing wrong: only the checksum does");
    assert_eq!((report.bad_checksums, report.entries[KIND]), (1, 1));
    assert!(!report.is_sound());
    let s = Store::open(&path).unwrap();
    assert_eq!(s.get(KIND, &k).unwrap(), None);
    drop(s);
    let repaired = store::check(&path, true).unwrap();
    assert_eq!(repaired.removed, 0, "the read already removed it");
    assert!(repaired.is_sound() && repaired.entries.is_empty(), "{repaired:?}");
}

#[test]
fn check_repair_removes_bad_entries() {
    let path = tmp("repair").join("s.sqlite");
    let mut s = Store::open(&path).unwrap();
    for i in 0..5u8 {
        s.put(KIND, &key_of(&[&[i]]), &[i; 16]).unwrap();
    }
    drop(s);
    rusqlite::Connection::open(&path).unwrap().execute("UPDATE entries SET value = X'00' WHERE key = ?1", [key_of(&[&[3u8]]).to_vec()]).unwrap();
    let r = store::check(&path, false).unwrap();
    assert_eq!((r.bad_checksums, r.removed), (1, 0));
    let r = store::check(&path, true).unwrap();
    assert_eq!((r.bad_checksums, r.removed), (1, 1));
    let r = store::check(&path, false).unwrap();
    assert!(r.is_sound() && r.entries[KIND] == 4, "{r:?}");
}

#[test]
fn a_damaged_file_names_itself_and_what_to_do() {
    let dir = tmp("pages");
    let path = dir.join("s.sqlite");
    let mut s = Store::open(&path).unwrap();
    for i in 0..200u32 {
        s.put(KIND, &key_of(&[&i.to_le_bytes()]), &f32s_to_bytes(&[i as f32; 256])).unwrap();
    }
    drop(s);
    // Garbage over the file's first pages (the header and the schema).
    let mut bytes = std::fs::read(&path).unwrap();
    for b in bytes.iter_mut().take(8192).skip(16) {
        *b = 0xA5;
    }
    std::fs::write(&path, &bytes).unwrap();
    let e = match Store::open(&path) {
        Ok(s) => s.get(KIND, &key_of(&[&0u32.to_le_bytes()])).map(|_| ()).unwrap_err(),
        Err(e) => e,
    };
    assert!(matches!(e, CoreError::StoreDamaged { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(msg.contains("s.sqlite") && msg.contains("lcross cache check") && msg.contains("lcross cache clear"), "{msg}");
    let r = store::check(&path, false).unwrap();
    assert!(!r.is_sound(), "{r:?}");
    let removed = store::clear(&path).unwrap();
    assert!(removed.contains(&path) && !path.exists());
    let mut s = Store::open(&path).unwrap();
    s.put(KIND, &key_of(&[b"x"]), b"fresh").unwrap();
    assert_eq!(s.get(KIND, &key_of(&[b"x"])).unwrap().as_deref(), Some(&b"fresh"[..]));
}

/// A store written before checksums: its entries are misses (recomputed), the table
/// gains the column, nothing fails.
#[test]
fn a_store_from_before_checksums_is_upgraded() {
    let path = tmp("old").join("s.sqlite");
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch(
        "CREATE TABLE entries (kind TEXT NOT NULL, key BLOB NOT NULL, value BLOB NOT NULL, created TEXT NOT NULL DEFAULT (datetime('now')), PRIMARY KEY (kind, key)) WITHOUT ROWID;",
    )
    .unwrap();
    let k = key_of(&[b"old"]);
    conn.execute("INSERT INTO entries (kind, key, value) VALUES (?1, ?2, X'01020304')", rusqlite::params![KIND, k.to_vec()]).unwrap();
    drop(conn);
    assert_eq!(store::check(&path, false).unwrap().without_checksum, 1);
    let mut s = Store::open(&path).unwrap();
    assert_eq!(s.get(KIND, &k).unwrap(), None);
    assert_eq!(s.failed_checksums(), 0, "not reported as damage");
    s.put(KIND, &k, &[9, 9]).unwrap();
    assert_eq!(s.get(KIND, &k).unwrap().as_deref(), Some(&[9u8, 9][..]));
}

/// Run by `a_read_only_store_is_read_and_not_written` in a directory this process may
/// not write (does nothing otherwise).
#[test]
fn read_only_child() {
    let Some(path) = std::env::var_os("LCROSS_STORE_READ_ONLY") else { return };
    let path = PathBuf::from(path);
    let mut s = Store::open(&path).expect("a read-only store opens");
    assert!(s.is_read_only());
    let k = key_of(&[b"kept"]);
    assert_eq!(s.get(KIND, &k).unwrap().as_deref(), Some(&b"cached"[..]), "cached values are read");
    s.put(KIND, &key_of(&[b"new"]), b"not stored").expect("a write is skipped, not an error");
    assert_eq!(s.get(KIND, &key_of(&[b"new"])).unwrap(), None);
    // A store that does not exist yet in a directory that cannot be written: misses.
    let absent = path.with_file_name("absent.sqlite");
    let e = Store::open(&absent).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(e.contains("absent.sqlite") && e.contains("--no-cache"), "{e}");
    println!("READ-ONLY CHILD OK");
}

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").map(|m| m.uid() == 0).unwrap_or(false)
}

#[cfg(target_os = "linux")]
#[test]
fn a_read_only_store_is_read_and_not_written() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let dir = tmp("ro");
    let path = dir.join("s.sqlite");
    Store::open(&path).unwrap().put(KIND, &key_of(&[b"kept"]), b"cached").unwrap();
    let before = std::fs::read(&path).unwrap();
    let mut child;
    if is_root() {
        // root writes anywhere: the child runs as nobody (65534), from a copy of this
        // binary it can read, on a store it can read and not write.
        let exe = dir.join("store_integrity_test");
        std::fs::copy(std::env::current_exe().unwrap(), &exe).unwrap();
        for p in [&dir, &exe] {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        child = Command::new(&exe);
        child.uid(65534).gid(65534);
    } else {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o444)).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o555)).unwrap();
        child = Command::new(std::env::current_exe().unwrap());
    }
    let out = child
        .args(["--exact", "read_only_child", "--nocapture", "--test-threads", "1"])
        .env("LCROSS_STORE_READ_ONLY", &path)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && text.contains("READ-ONLY CHILD OK"), "{text}");
    assert_eq!(std::fs::read(&path).unwrap(), before, "nothing was written");
    let _ = Path::new(&dir);
}

/// A write over a key whose stored value fails its checksum replaces it (a key that
/// was never read in this run must not keep a bad value forever), and is counted.
#[test]
fn a_write_replaces_a_bad_value_it_was_not_asked_to_read() {
    let path = tmp("put").join("s.sqlite");
    let k = key_of(&[b"p"]);
    let mut s = Store::open(&path).unwrap();
    s.put(KIND, &k, b"good").unwrap();
    rusqlite::Connection::open(&path).unwrap().execute("UPDATE entries SET value = X'00'", []).unwrap();
    s.put(KIND, &k, b"good").unwrap();
    assert_eq!(s.failed_checksums(), 1);
    assert_eq!(s.get(KIND, &k).unwrap().as_deref(), Some(&b"good"[..]));
    // A proven value keeps its first value.
    s.put(KIND, &k, b"other").unwrap();
    assert_eq!(s.get(KIND, &k).unwrap().as_deref(), Some(&b"good"[..]));
}

/// A page in the middle broken (the header intact): `check` reports it, it does not fail.
#[test]
fn a_broken_page_in_the_middle_is_reported_by_check() {
    let path = tmp("middle").join("s.sqlite");
    let mut s = Store::open(&path).unwrap();
    for i in 0..400u32 {
        s.put(KIND, &key_of(&[&i.to_le_bytes()]), &f32s_to_bytes(&[i as f32; 256])).unwrap();
    }
    drop(s);
    let mut bytes = std::fs::read(&path).unwrap();
    assert!(bytes.len() > 64 * 1024, "{} bytes", bytes.len());
    let mid = bytes.len() / 2 / 4096 * 4096;
    for b in &mut bytes[mid..mid + 8192] {
        *b = 0xC3;
    }
    std::fs::write(&path, &bytes).unwrap();
    let r = store::check(&path, false).expect("a report, not an error");
    assert!(!r.is_sound(), "{r:?}");
}
