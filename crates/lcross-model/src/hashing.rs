//! sha256 of model files, remembered across runs (hashing a 1 GB file takes seconds).

use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{ModelError, Result};

fn hash_cache_dir() -> PathBuf {
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
    std::env::var_os("LCROSS_CACHE").filter(|d| !d.is_empty()).map(PathBuf::from).unwrap_or_else(|| home.join(".cache").join("lcross")).join("hashes")
}

fn stamp(path: &Path) -> Result<String> {
    let md = std::fs::metadata(path).map_err(|e| ModelError::io(path, e))?;
    let mtime = md.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map_or(0, |d| d.as_nanos());
    let canon = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    Ok(format!("{}|{}|{}", canon.display(), md.len(), mtime))
}

/// sha256 of one file, streamed.
pub fn file_sha256(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).map_err(|e| ModelError::io(path, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| ModelError::io(path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// sha256 of one file, or of the concatenated hashes of several, using the on-disk memo.
pub fn files_sha256(files: &[PathBuf]) -> Result<String> {
    let stamps: Vec<String> = files.iter().map(|p| stamp(p)).collect::<Result<_>>()?;
    let memo = hash_cache_dir().join(hex::encode(Sha256::digest(stamps.join("\n").as_bytes())));
    if let Ok(s) = std::fs::read_to_string(&memo) {
        if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(s);
        }
    }
    let hashes: Vec<String> = files.iter().map(|p| file_sha256(p)).collect::<Result<_>>()?;
    let h = if hashes.len() == 1 { hashes[0].clone() } else { hex::encode(Sha256::digest(hashes.join("\n").as_bytes())) };
    // A memo: a failed write only costs the next run a rehash.
    let _ = lcross_fs::write_atomic(&memo, h.as_bytes());
    Ok(h)
}
