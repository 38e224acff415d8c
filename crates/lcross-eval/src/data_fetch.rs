//! `lcross data fetch`: bring the public datasets ([`lcross_core::data::DATA_FILES`]) into
//! the data directory, from their origins at pinned commits or from a local mirror, every
//! file checked against its sha256 before it is written (atomically) into place.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use lcross_core::data::{file_state, DataFile, FileState, DATA_FILES};

use crate::error::{EvalError, Result};

/// Where the files come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataSource {
    /// Download each file from `{base_url}/{repo}/{commit}/{path}`.
    Origins { base_url: String },
    /// Copy each file from a directory with the data directory's layout.
    Mirror(PathBuf),
}

impl DataSource {
    /// The origins, at `$LCROSS_DATA_URL` when set, else [`lcross_core::data::DEFAULT_DATA_URL`].
    pub fn origins() -> Self {
        let base_url = std::env::var("LCROSS_DATA_URL").ok().filter(|u| !u.is_empty()).unwrap_or_else(|| lcross_core::data::DEFAULT_DATA_URL.to_string());
        Self::Origins { base_url }
    }
}

/// What happened to one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FetchAction {
    /// It was there with the right bytes.
    AlreadyThere,
    /// It was brought (absent or with other bytes before).
    Fetched,
}

/// One line of a fetch's report.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FetchedFile {
    /// Path inside the data directory.
    pub path: &'static str,
    pub action: FetchAction,
    pub bytes: u64,
}

/// Timeout of one download.
const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(120);

/// Bring every data file into `dest` from `source`. Files already there with the right
/// sha256 are left alone (so a rerun after an interruption fetches only what is missing);
/// a file whose bytes do not match is an error naming it and both hashes, and nothing is
/// written for it.
pub fn fetch_data(dest: &Path, source: &DataSource, mut progress: impl FnMut(&FetchedFile)) -> Result<Vec<FetchedFile>> {
    let client = match source {
        DataSource::Origins { .. } => Some(
            reqwest::blocking::Client::builder()
                .timeout(DOWNLOAD_TIMEOUT)
                .build()
                .map_err(|e| EvalError::Download { url: "(client)".into(), reason: e.to_string() })?,
        ),
        DataSource::Mirror(_) => None,
    };
    let mut report = Vec::with_capacity(DATA_FILES.len());
    for file in DATA_FILES {
        let action = match file_state(dest, file)? {
            FileState::Verified => FetchAction::AlreadyThere,
            FileState::Missing | FileState::Mismatch => {
                let (bytes, from) = match source {
                    DataSource::Mirror(dir) => {
                        let path = local_path(dir, file);
                        (std::fs::read(&path).map_err(|e| lcross_core::CoreError::Io { path: path.clone(), source: e })?, path.display().to_string())
                    }
                    DataSource::Origins { base_url } => {
                        let url = file.url(base_url);
                        (download(client.as_ref().expect("a client for origins"), &url, file.bytes)?, url)
                    }
                };
                check(file, &bytes, &from)?;
                lcross_core::artifact::write_atomic(&local_path(dest, file), &bytes)?;
                FetchAction::Fetched
            }
        };
        let line = FetchedFile { path: file.path, action, bytes: file.bytes };
        progress(&line);
        report.push(line);
    }
    Ok(report)
}

/// The state of every data file in `dir`, in [`DATA_FILES`] order.
pub fn data_status(dir: &Path) -> Result<Vec<(&'static DataFile, FileState)>> {
    DATA_FILES.iter().map(|f| Ok((f, file_state(dir, f)?))).collect()
}

fn local_path(dir: &Path, file: &DataFile) -> PathBuf {
    file.path.split('/').fold(dir.to_path_buf(), |p, part| p.join(part))
}

/// GET `url`, reading at most one byte more than `expected` (a longer body is wrong anyway).
fn download(client: &reqwest::blocking::Client, url: &str, expected: u64) -> Result<Vec<u8>> {
    let err = |reason: String| EvalError::Download { url: url.to_string(), reason };
    let resp = client.get(url).send().map_err(|e| err(e.to_string()))?;
    if !resp.status().is_success() {
        return Err(err(format!("HTTP status {}", resp.status())));
    }
    let mut bytes = Vec::with_capacity(expected as usize);
    resp.take(expected + 1).read_to_end(&mut bytes).map_err(|e| err(format!("connection broken after {} bytes: {e}", bytes.len())))?;
    Ok(bytes)
}

fn check(file: &DataFile, bytes: &[u8], from: &str) -> Result<()> {
    use sha2::{Digest, Sha256};
    let got = hex::encode(Sha256::digest(bytes));
    if got != file.sha256 || bytes.len() as u64 != file.bytes {
        return Err(EvalError::Checksum {
            file: file.path.to_string(),
            from: from.to_string(),
            expected: format!("{} ({} bytes)", file.sha256, file.bytes),
            got: format!("{got} ({} bytes)", bytes.len()),
        });
    }
    Ok(())
}
