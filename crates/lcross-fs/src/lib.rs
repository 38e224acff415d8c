//! One atomic writer for every file lcross writes: vectors, maps, reports, plots, memos.
//!
//! [`write_atomic`] writes a temporary file in the target's directory (created with
//! `O_EXCL`, so it never follows a planted link), fsyncs it, renames it over the target
//! and fsyncs the directory, so a reader sees the old file or the new one, never half of
//! one, and the rename survives a power cut. A failed write removes its temporary file;
//! temporaries a killed process left for the same target are removed by the next write.
//!
//! It refuses to replace what is not a regular file (a symlink, a device, a FIFO, a
//! directory) unless asked ([`WriteOptions::replace_special`], or `LCROSS_REPLACE_SPECIAL=1`
//! for every writer): asked, it writes through a symlink to its target (atomically,
//! next to the target) and into a device or FIFO directly (`-o /dev/stdout`).
//!
//! Hand-written rather than a crate: `tempfile`'s `persist` does the temp-and-rename part
//! but neither the directory fsync, nor the refusal of links and devices, nor the
//! clean-up of a killed process's temporaries.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

/// Why a write failed; every variant names the target.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The target exists and is not a regular file; nothing was written.
    #[error("{path} is {what}: lcross does not replace it (write to another path, or set LCROSS_REPLACE_SPECIAL=1 to write {through})")]
    NotRegular { path: PathBuf, what: String, through: &'static str },
    /// An I/O error (the step says where it happened); the target is unchanged.
    #[error("{path}: {step}: {source}")]
    Io {
        path: PathBuf,
        step: &'static str,
        #[source]
        source: std::io::Error,
    },
}

impl WriteError {
    fn io(path: &Path, step: &'static str, source: std::io::Error) -> Self {
        Self::Io { path: path.to_path_buf(), step, source }
    }
}

/// How [`write_atomic_with`] treats a target that is not a regular file.
#[derive(Debug, Clone, Copy, Default)]
pub struct WriteOptions {
    /// Write through a symlink to its target, and into a device or FIFO directly,
    /// instead of refusing.
    pub replace_special: bool,
}

impl WriteOptions {
    /// The default options, with `replace_special` set by `LCROSS_REPLACE_SPECIAL=1`.
    pub fn from_env() -> Self {
        Self { replace_special: std::env::var("LCROSS_REPLACE_SPECIAL").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true")) }
    }
}

/// Temporaries older than this are removed whatever their process (a crashed machine's).
const STALE_AFTER: Duration = Duration::from_secs(24 * 3600);

/// The marker in a temporary's name: `.{target name}.lcross-tmp.{pid}.{n}`.
const TMP_MARK: &str = ".lcross-tmp.";

/// Write `bytes` to `path` atomically ([`WriteOptions::from_env`]).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), WriteError> {
    write_atomic_with(path, bytes, WriteOptions::from_env())
}

/// Write `bytes` to `path` atomically with explicit options.
pub fn write_atomic_with(path: &Path, bytes: &[u8], options: WriteOptions) -> Result<(), WriteError> {
    let mut target = path.to_path_buf();
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        let kind = meta.file_type();
        if kind.is_symlink() {
            let to = std::fs::read_link(path).map(|t| t.display().to_string()).unwrap_or_else(|_| "?".into());
            if !options.replace_special {
                return Err(WriteError::NotRegular { path: path.to_path_buf(), what: format!("a symlink (to {to})"), through: "through the link" });
            }
            target = std::fs::canonicalize(path).map_err(|e| WriteError::io(path, "resolving the symlink", e))?;
            if std::fs::metadata(&target).is_ok_and(|m| !m.is_file()) {
                return write_into(&target, bytes);
            }
        } else if !kind.is_file() {
            let what = describe(&kind);
            if !options.replace_special || kind.is_dir() {
                return Err(WriteError::NotRegular { path: path.to_path_buf(), what, through: "into it" });
            }
            return write_into(path, bytes);
        }
    }
    replace(&target, bytes)
}

/// What a non-regular file is, in words.
fn describe(kind: &std::fs::FileType) -> String {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if kind.is_char_device() || kind.is_block_device() {
            return "a device".into();
        }
        if kind.is_fifo() {
            return "a FIFO".into();
        }
        if kind.is_socket() {
            return "a socket".into();
        }
    }
    if kind.is_dir() {
        "a directory".into()
    } else {
        "not a regular file".into()
    }
}

/// Write into an existing device or FIFO (asked for: no rename is possible).
fn write_into(path: &Path, bytes: &[u8]) -> Result<(), WriteError> {
    let mut f = OpenOptions::new().write(true).open(path).map_err(|e| WriteError::io(path, "opening", e))?;
    f.write_all(bytes).map_err(|e| WriteError::io(path, "writing", e))
}

fn replace(path: &Path, bytes: &[u8]) -> Result<(), WriteError> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| WriteError::io(dir, "creating the directory", e))?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "file".into());
    remove_stale_temporaries(dir, &name);
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let tmp = dir.join(format!(".{name}{TMP_MARK}{}.{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed)));
    let written = (|| {
        let mut f = OpenOptions::new().write(true).create_new(true).open(&tmp).map_err(|e| WriteError::io(&tmp, "creating the temporary file", e))?;
        f.write_all(bytes).map_err(|e| WriteError::io(&tmp, "writing", e))?;
        f.sync_all().map_err(|e| WriteError::io(&tmp, "flushing to disk", e))?;
        drop(f);
        std::fs::rename(&tmp, path).map_err(|e| WriteError::io(path, "renaming the temporary file over it", e))
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    sync_dir(dir).map_err(|e| WriteError::io(dir, "flushing the directory", e))
}

/// fsync a directory, so that a rename in it is on disk (a no-op where directories
/// cannot be opened, as on Windows).
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

/// Remove `.{name}.lcross-tmp.{pid}.{n}` files whose process is gone (Linux: no
/// `/proc/{pid}`) or that are older than a day. Best effort: a failure is ignored.
fn remove_stale_temporaries(dir: &Path, name: &str) {
    let prefix = format!(".{name}{TMP_MARK}");
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let file_name = e.file_name();
        let Some(rest) = file_name.to_str().and_then(|n| n.strip_prefix(&prefix)) else { continue };
        let Some(pid) = rest.split('.').next().and_then(|p| p.parse::<u32>().ok()) else { continue };
        let old = e.metadata().ok().and_then(|m| m.modified().ok()).and_then(|t| SystemTime::now().duration_since(t).ok()).is_some_and(|age| age > STALE_AFTER);
        if pid != std::process::id() && (old || process_is_gone(pid)) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Whether process `pid` has ended (known on Linux only; elsewhere only age counts).
fn process_is_gone(pid: u32) -> bool {
    let proc = Path::new("/proc");
    proc.join("self").exists() && !proc.join(pid.to_string()).exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("lcross-fs-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn leftovers(dir: &Path) -> Vec<String> {
        std::fs::read_dir(dir).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).filter(|n| n.contains(TMP_MARK)).collect()
    }

    #[test]
    fn replaces_a_file_and_leaves_no_temporary() {
        let d = tmpdir("plain");
        let p = d.join("a.json");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert!(leftovers(&d).is_empty());
        // A missing directory is created.
        write_atomic(&d.join("sub/b.txt"), b"x").unwrap();
        assert_eq!(std::fs::read(d.join("sub/b.txt")).unwrap(), b"x");
    }

    #[cfg(unix)]
    #[test]
    fn a_symlink_is_refused_unless_asked_then_written_through() {
        let d = tmpdir("link");
        let real = d.join("real.txt");
        std::fs::write(&real, b"old").unwrap();
        let link = d.join("link.txt");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let e = write_atomic_with(&link, b"new", WriteOptions::default()).unwrap_err();
        assert!(matches!(e, WriteError::NotRegular { .. }), "{e}");
        assert!(e.to_string().contains("link.txt is a symlink") && e.to_string().contains("real.txt"), "{e}");
        assert_eq!(std::fs::read(&real).unwrap(), b"old");
        write_atomic_with(&link, b"new", WriteOptions { replace_special: true }).unwrap();
        assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink(), "the link is kept");
        assert_eq!(std::fs::read(&real).unwrap(), b"new");
        assert!(leftovers(&d).is_empty());
    }

    #[cfg(unix)]
    #[test]
    fn a_device_or_directory_is_never_replaced() {
        let d = tmpdir("dev");
        let e = write_atomic_with(Path::new("/dev/null"), b"x", WriteOptions::default()).unwrap_err();
        assert!(e.to_string().contains("/dev/null is a device"), "{e}");
        assert!(!std::fs::metadata("/dev/null").unwrap().file_type().is_file());
        // Asked, the bytes go into the device; it stays a device.
        write_atomic_with(Path::new("/dev/null"), b"x", WriteOptions { replace_special: true }).unwrap();
        use std::os::unix::fs::FileTypeExt;
        assert!(std::fs::metadata("/dev/null").unwrap().file_type().is_char_device());
        let sub = d.join("sub");
        std::fs::create_dir(&sub).unwrap();
        let e = write_atomic_with(&sub, b"x", WriteOptions { replace_special: true }).unwrap_err();
        assert!(e.to_string().contains("is a directory"), "{e}");
    }

    #[test]
    fn a_killed_writers_temporary_is_removed_by_the_next_write() {
        let d = tmpdir("stale");
        let p = d.join("r.md");
        // A process id that cannot be running (above Linux's pid_max limit), and one of ours.
        let dead = d.join(format!(".r.md{TMP_MARK}4194305.0"));
        let ours = d.join(format!(".r.md{TMP_MARK}{}.999", std::process::id()));
        let other_target = d.join(format!(".s.md{TMP_MARK}4194305.0"));
        for f in [&dead, &ours, &other_target] {
            std::fs::write(f, b"half").unwrap();
        }
        write_atomic(&p, b"whole").unwrap();
        let left = leftovers(&d);
        if Path::new("/proc/self").exists() {
            assert!(!dead.exists(), "{left:?}");
        }
        assert!(ours.exists() && other_target.exists(), "only the same target's, of other processes: {left:?}");
    }

    #[test]
    fn a_failed_write_leaves_the_target_and_no_temporary() {
        let d = tmpdir("fail");
        let p = d.join("x.bin");
        std::fs::write(&p, b"before").unwrap();
        // Renaming onto a non-empty directory fails after the temporary was written.
        let target_dir = d.join("dir");
        std::fs::create_dir(&target_dir).unwrap();
        std::fs::write(target_dir.join("inside"), b"").unwrap();
        assert!(replace(&target_dir, b"data").is_err());
        assert!(leftovers(&d).is_empty(), "{:?}", leftovers(&d));
        assert_eq!(std::fs::read(&p).unwrap(), b"before");
    }
}
