//! `lcross data fetch` against a loopback HTTP server standing in for the origins: it
//! serves the local mirror (`../shared/data`) under `/{repo}/{commit}/{path}`, so a good
//! download, a file with other bytes, a cut connection and a missing file are each
//! exercised over a real socket. The mirror fetch (`--from DIR`) and resuming are tested too.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use lcross_core::data::{file_state, FileState, DATA_FILES};
use lcross_eval::data_fetch::{data_status, fetch_data, DataSource, FetchAction};
use lcross_eval::EvalError;

/// The project's local mirror of the data.
fn mirror() -> PathBuf {
    match std::env::var_os("LCROSS_DATA").filter(|d| !d.is_empty()) {
        Some(d) => d.into(),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data"),
    }
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("lcross-data-fetch-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// How the stand-in origin answers one URL path.
#[derive(Clone)]
enum Reply {
    /// These bytes, with a right Content-Length.
    Bytes(Vec<u8>),
    /// Announce `len` bytes, send the first half, close.
    Cut {
        bytes: Vec<u8>,
    },
    NotFound,
}

/// Serve `replies` by URL path (anything else: 404) until the test ends; counts requests.
fn origin(replies: HashMap<String, Reply>) -> (String, Arc<Mutex<usize>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let count = Arc::new(Mutex::new(0usize));
    let seen = count.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut first = String::new();
            if reader.read_line(&mut first).is_err() {
                continue;
            }
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() || line == "\r\n" || line.is_empty() {
                    break;
                }
            }
            *seen.lock().unwrap() += 1;
            let path = first.split_whitespace().nth(1).unwrap_or("").to_string();
            let _ = match replies.get(&path).cloned().unwrap_or(Reply::NotFound) {
                Reply::Bytes(b) => {
                    let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n", b.len());
                    stream.write_all(head.as_bytes()).and_then(|_| stream.write_all(&b))
                }
                Reply::Cut { bytes } => {
                    let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n", bytes.len());
                    stream.write_all(head.as_bytes()).and_then(|_| stream.write_all(&bytes[..bytes.len() / 2]))
                }
                Reply::NotFound => stream.write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"),
            };
        }
    });
    (base, count)
}

/// Every data file as the origin serves it, from the mirror.
fn good_replies() -> HashMap<String, Reply> {
    DATA_FILES
        .iter()
        .map(|f| {
            let bytes = std::fs::read(f.path.split('/').fold(mirror(), |p, s| p.join(s))).unwrap();
            (format!("/{}/{}/{}", f.repo, f.commit, f.origin_path), Reply::Bytes(bytes))
        })
        .collect()
}

fn url_path(i: usize) -> String {
    let f = &DATA_FILES[i];
    format!("/{}/{}/{}", f.repo, f.commit, f.origin_path)
}

#[test]
fn downloads_verify_and_resume() {
    let (base, count) = origin(good_replies());
    let dest = tmp("good");
    let mut seen = 0;
    let report = fetch_data(&dest, &DataSource::Origins { base_url: base.clone() }, |_| seen += 1).unwrap();
    assert_eq!(report.len(), DATA_FILES.len());
    assert_eq!(seen, DATA_FILES.len(), "progress is called once a file");
    assert!(report.iter().all(|f| f.action == FetchAction::Fetched));
    assert!(data_status(&dest).unwrap().iter().all(|(_, s)| *s == FileState::Verified));
    assert_eq!(*count.lock().unwrap(), DATA_FILES.len());
    // A second fetch asks the origin nothing and keeps every file.
    let again = fetch_data(&dest, &DataSource::Origins { base_url: base }, |_| {}).unwrap();
    assert!(again.iter().all(|f| f.action == FetchAction::AlreadyThere));
    assert_eq!(*count.lock().unwrap(), DATA_FILES.len(), "files already there were downloaded again");
    // A dataset reader finds them there.
    let ds = lcross_core::dataset::load_concept("caa:refusal", &dest).unwrap();
    assert_eq!(ds.pairs.len(), 408);
    let _ = std::fs::remove_dir_all(&dest);
}

#[test]
fn a_wrong_checksum_writes_nothing_and_names_the_file() {
    let mut replies = good_replies();
    let Reply::Bytes(mut bytes) = replies[&url_path(4)].clone() else { unreachable!() };
    bytes[10] ^= 1;
    replies.insert(url_path(4), Reply::Bytes(bytes));
    let (base, _) = origin(replies);
    let dest = tmp("checksum");
    let err = fetch_data(&dest, &DataSource::Origins { base_url: base.clone() }, |_| {}).unwrap_err();
    assert!(matches!(&err, EvalError::Checksum { file, .. } if file == DATA_FILES[4].path), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains(DATA_FILES[4].sha256) && msg.contains("not written"), "{msg}");
    assert_eq!(file_state(&dest, &DATA_FILES[4]).unwrap(), FileState::Missing, "a file with the wrong bytes was written");
    assert_eq!(file_state(&dest, &DATA_FILES[3]).unwrap(), FileState::Verified, "files before it are kept");
    // A local file with other bytes is replaced by the origin's.
    std::fs::write(dest.join("caa/coordinate-other-ais/generate_dataset.json"), b"[]").unwrap();
    assert_eq!(file_state(&dest, &DATA_FILES[0]).unwrap(), FileState::Mismatch);
    let (good, _) = origin(good_replies());
    fetch_data(&dest, &DataSource::Origins { base_url: good }, |_| {}).unwrap();
    assert_eq!(file_state(&dest, &DATA_FILES[0]).unwrap(), FileState::Verified);
    let _ = std::fs::remove_dir_all(&dest);
}

#[test]
fn a_cut_connection_and_a_missing_file_are_download_errors() {
    for (case, reply) in [("cut", Reply::Cut { bytes: vec![b'x'; 100_000] }), ("missing", Reply::NotFound)] {
        let mut replies = good_replies();
        if let Reply::Cut { .. } = reply {
            let Reply::Bytes(bytes) = replies[&url_path(0)].clone() else { unreachable!() };
            replies.insert(url_path(0), Reply::Cut { bytes });
        } else {
            replies.remove(&url_path(0));
        }
        let (base, _) = origin(replies);
        let dest = tmp(case);
        let err = fetch_data(&dest, &DataSource::Origins { base_url: base }, |_| {}).unwrap_err();
        match &err {
            EvalError::Download { url, reason } => {
                assert!(url.ends_with(&url_path(0)), "{case}: {url}");
                if case == "missing" {
                    assert!(reason.contains("404"), "{case}: {reason}");
                }
            }
            other => panic!("{case}: want a download error, got {other:?}"),
        }
        assert_eq!(file_state(&dest, &DATA_FILES[0]).unwrap(), FileState::Missing, "{case}: a partial file was left");
        let leftovers: Vec<_> = walk(&dest);
        assert!(leftovers.is_empty(), "{case}: files left behind: {leftovers:?}");
        let _ = std::fs::remove_dir_all(&dest);
    }
}

#[test]
fn a_local_mirror_is_copied_and_verified() {
    let dest = tmp("mirror");
    let report = fetch_data(&dest, &DataSource::Mirror(mirror()), |_| {}).unwrap();
    assert!(report.iter().all(|f| f.action == FetchAction::Fetched));
    assert!(data_status(&dest).unwrap().iter().all(|(_, s)| *s == FileState::Verified));
    // A mirror with a changed file is refused for that file.
    let bad = tmp("bad-mirror");
    fetch_data(&bad, &DataSource::Mirror(mirror()), |_| {}).unwrap();
    std::fs::write(bad.join("repe/emotions/fear.json"), b"[\"changed\"]").unwrap();
    let dest2 = tmp("mirror2");
    let err = fetch_data(&dest2, &DataSource::Mirror(bad.clone()), |_| {}).unwrap_err();
    assert!(matches!(&err, EvalError::Checksum { file, .. } if file == "repe/emotions/fear.json"), "{err:?}");
    for d in [dest, bad, dest2] {
        let _ = std::fs::remove_dir_all(d);
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
