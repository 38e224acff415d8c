//! The result store under concurrent processes and a process killed mid-write: nothing
//! lost that was committed, nothing torn, the database sound.
//!
//! The writer processes are this test binary re-run on `store_writer_child`, which
//! writes only when `LCROSS_STORE_CHILD` names a database.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use lcross_core::store::{bytes_to_f32s, f32s_to_bytes, key_of, Store};

const KIND: &str = "activation";
const DIM: usize = 256;

/// The value every writer stores for entry `i`: checkable without the writer.
fn value(i: u64) -> Vec<f32> {
    (0..DIM).map(|j| (i * 1000 + j as u64) as f32).collect()
}

fn key(i: u64) -> [u8; 32] {
    key_of(&[b"entry", &i.to_le_bytes()])
}

/// Entries `from..to` in transactions of 8, forever when `to` is 0.
fn write_entries(path: &Path, from: u64, to: u64) {
    let mut store = Store::open(path).unwrap();
    let mut i = from;
    while to == 0 || i < to {
        let batch: Vec<_> = (i..i + 8).filter(|&k| to == 0 || k < to).map(|k| (key(k), f32s_to_bytes(&value(k)))).collect();
        store.put_many(KIND, &batch).unwrap();
        i += 8;
    }
}

#[test]
fn store_writer_child() {
    let Some(path) = std::env::var_os("LCROSS_STORE_CHILD") else { return };
    let from: u64 = std::env::var("LCROSS_STORE_FROM").unwrap().parse().unwrap();
    let to: u64 = std::env::var("LCROSS_STORE_TO").unwrap().parse().unwrap();
    write_entries(Path::new(&path), from, to);
}

fn spawn_writer(path: &Path, from: u64, to: u64) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "store_writer_child", "--nocapture", "--test-threads", "1"])
        .env("LCROSS_STORE_CHILD", path)
        .env("LCROSS_STORE_FROM", from.to_string())
        .env("LCROSS_STORE_TO", to.to_string())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("lcross-store-proc-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d.join("store.sqlite")
}

/// Every entry present is whole and right; returns how many there are.
fn check_entries(path: &Path, upto: u64) -> usize {
    let store = Store::open(path).unwrap();
    assert_eq!(store.integrity_check().unwrap(), "ok");
    let mut n = 0;
    for i in 0..upto {
        if let Some(b) = store.get(KIND, &key(i)).unwrap() {
            assert_eq!(bytes_to_f32s(&b).unwrap(), value(i), "entry {i} is torn or wrong");
            n += 1;
        }
    }
    assert_eq!(n, store.count(KIND).unwrap(), "entries outside the expected keys");
    n
}

#[test]
fn two_processes_writing_at_once_lose_nothing() {
    let path = tmp("two");
    // Overlapping ranges: both write 400..600.
    let (mut a, mut b) = (spawn_writer(&path, 0, 600), spawn_writer(&path, 400, 1000));
    assert!(a.wait().unwrap().success() && b.wait().unwrap().success(), "a writer failed");
    assert_eq!(check_entries(&path, 1000), 1000);
}

#[test]
fn a_writer_killed_mid_write_corrupts_nothing() {
    let path = tmp("kill");
    write_entries(&path, 0, 64);
    let mut child = spawn_writer(&path, 64, 0);
    // Let it write for a while, then kill -9 it in the middle of its loop.
    let start = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(50));
        let n = Store::open(&path).unwrap().count(KIND).unwrap();
        if n > 200 || start.elapsed() > Duration::from_secs(30) {
            break;
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    // The writer goes in order from 64, 8 entries a transaction: what survives must be
    // exactly entries 0..n, each whole, with n a multiple of 8.
    let total = Store::open(&path).unwrap().count(KIND).unwrap();
    let n = check_entries(&path, total as u64);
    assert_eq!(n, total, "entries missing below the last committed one");
    assert!(n > 64, "the writer wrote nothing before it was killed ({n})");
    assert_eq!(n % 8, 0, "transactions are all or nothing (8 entries each): {n}");
    // The store keeps working after the crash.
    write_entries(&path, 2_000_000, 2_000_008);
    let store = Store::open(&path).unwrap();
    assert_eq!(store.count(KIND).unwrap(), total + 8);
    assert_eq!(store.integrity_check().unwrap(), "ok");
}
