//! The public datasets lcross evaluates on: which files, where they come from (a public
//! repository at a pinned commit), their sha256, and where lcross looks for them.
//!
//! The project never ships these files (their sentences are not ours). `lcross data fetch`
//! downloads them from their origins (or copies a local mirror with `--from`) into the data
//! directory, checking every file's sha256; every reader of the data finds it through
//! [`default_data_dir`] and [`data_file`], so a missing file is an error that names the
//! fetch command.

use std::path::{Path, PathBuf};

use crate::error::{CoreError, Result};

/// One file of the public datasets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataFile {
    /// Path inside the data directory (`/`-separated).
    pub path: &'static str,
    /// Public GitHub repository it comes from (`owner/name`).
    pub repo: &'static str,
    /// The commit it is pinned at.
    pub commit: &'static str,
    /// Its path inside that repository.
    pub origin_path: &'static str,
    /// sha256 of its bytes (lowercase hex).
    pub sha256: &'static str,
    /// Its size in bytes.
    pub bytes: u64,
}

impl DataFile {
    /// Where the file is fetched from, under a raw-content base URL
    /// (`{base}/{repo}/{commit}/{origin_path}`).
    pub fn url(&self, base: &str) -> String {
        format!("{}/{}/{}/{}", base.trim_end_matches('/'), self.repo, self.commit, self.origin_path)
    }
}

/// Every file `lcross data fetch` brings: CAA's seven behaviours (generation pairs, A/B
/// and open-ended tests; EleutherAI's copy of nrimsky/CAA's `datasets/`), RepE's emotion
/// scenarios, StereoSet's intrasentence dev set (bias-bench's copy in EditBias), AdvBench's
/// harmful behaviours and the self-instruct seed tasks. Each was checked equal (git blob)
/// to the file at the pinned commit.
pub const DATA_FILES: &[DataFile] = &[
    DataFile {
        path: "caa/coordinate-other-ais/generate_dataset.json",
        repo: "EleutherAI/rnngineering",
        commit: "b18a80e3f7e3259f21e2a6574aaed3a21954aac6",
        origin_path: "Datasets/generate/coordinate-other-ais/generate_dataset.json",
        sha256: "6248eeab5b49d335df85ba16c5b6347500ab6cb00e0a94823d8f833280c94046",
        bytes: 138018,
    },
    DataFile {
        path: "caa/coordinate-other-ais/test_dataset_ab.json",
        repo: "EleutherAI/rnngineering",
        commit: "b18a80e3f7e3259f21e2a6574aaed3a21954aac6",
        origin_path: "Datasets/test/coordinate-other-ais/test_dataset_ab.json",
        sha256: "10a56904dfd6ecdacdac3986b6a289ce2911bf36ff543ae5cadfe124189aad75",
        bytes: 18266,
    },
    DataFile {
        path: "caa/coordinate-other-ais/test_dataset_open_ended.json",
        repo: "EleutherAI/rnngineering",
        commit: "b18a80e3f7e3259f21e2a6574aaed3a21954aac6",
        origin_path: "Datasets/test/coordinate-other-ais/test_dataset_open_ended.json",
        sha256: "0cf5e59923da2014038689d237e34aab84cab76f4bc41f9a541377665b6f1e2c",
        bytes: 11828,
    },
    DataFile {
        path: "caa/corrigible-neutral-HHH/generate_dataset.json",
        repo: "EleutherAI/rnngineering",
        commit: "b18a80e3f7e3259f21e2a6574aaed3a21954aac6",
        origin_path: "Datasets/generate/corrigible-neutral-HHH/generate_dataset.json",
        sha256: "e7a789f1f4b1243ea3559f7d4f3b511d435d57cd655d9bfc96d850785f58b7d5",
        bytes: 96229,
    },
    DataFile {
        path: "caa/corrigible-neutral-HHH/test_dataset_ab.json",
        repo: "EleutherAI/rnngineering",
        commit: "b18a80e3f7e3259f21e2a6574aaed3a21954aac6",
        origin_path: "Datasets/test/corrigible-neutral-HHH/test_dataset_ab.json",
        sha256: "9d66cd416a742f3db1dd463be4466d32b02fe25cc84da1af35b485dec6a9d3d7",
        bytes: 16542,
    },
    DataFile {
        path: "caa/corrigible-neutral-HHH/test_dataset_open_ended.json",
        repo: "EleutherAI/rnngineering",
        commit: "b18a80e3f7e3259f21e2a6574aaed3a21954aac6",
        origin_path: "Datasets/test/corrigible-neutral-HHH/test_dataset_open_ended.json",
        sha256: "23efa5ccdf693323c8f1407d4ac3ebffc0d48ca987937e5b4f145b5fdabcee70",
        bytes: 9392,
    },
    DataFile {
        path: "caa/hallucination/generate_dataset.json",
        repo: "EleutherAI/rnngineering",
        commit: "b18a80e3f7e3259f21e2a6574aaed3a21954aac6",
        origin_path: "Datasets/generate/hallucination/generate_dataset.json",
        sha256: "8b0eb0fd7c235c2d35fde4d54b108c01ae552c5dbb369fad03c1ddfb1d2c549f",
        bytes: 783594,
    },
    DataFile {
        path: "caa/hallucination/test_dataset_ab.json",
        repo: "EleutherAI/rnngineering",
        commit: "b18a80e3f7e3259f21e2a6574aaed3a21954aac6",
        origin_path: "Datasets/test/hallucination/test_dataset_ab.json",
        sha256: "558b1cc55a5a48303a524a581d5fcd2a1747c682eefeaa100719ab9b238fb5b9",
        bytes: 39852,
    },
    DataFile {
        path: "caa/hallucination/test_dataset_open_ended.json",
        repo: "EleutherAI/rnngineering",
        commit: "b18a80e3f7e3259f21e2a6574aaed3a21954aac6",
        origin_path: "Datasets/test/hallucination/test_dataset_open_ended.json",
        sha256: "d2ba42c5d5d08c3f12743b3891993cc900d629a0c4fe6cd2d73dd07df3507507",
        bytes: 11213,
    },
    DataFile {
        path: "caa/myopic-reward/generate_dataset.json",
        repo: "EleutherAI/rnngineering",
        commit: "b18a80e3f7e3259f21e2a6574aaed3a21954aac6",
        origin_path: "Datasets/generate/myopic-reward/generate_dataset.json",
        sha256: "9d4d98897bb45ac57a59b2cbb345b045a971e51bafa4f52b5e3e5665cd274ebd",
        bytes: 324647,
    },
    DataFile {
        path: "caa/myopic-reward/test_dataset_ab.json",
        repo: "EleutherAI/rnngineering",
        commit: "b18a80e3f7e3259f21e2a6574aaed3a21954aac6",
        origin_path: "Datasets/test/myopic-reward/test_dataset_ab.json",
        sha256: "1e91ce1aace40d1f6f52efea4205fd18b48b5e18385b505ce6c9b1e29fb3bcac",
        bytes: 16983,
    },
    DataFile {
        path: "caa/myopic-reward/test_dataset_open_ended.json",
        repo: "EleutherAI/rnngineering",
        commit: "b18a80e3f7e3259f21e2a6574aaed3a21954aac6",
        origin_path: "Datasets/test/myopic-reward/test_dataset_open_ended.json",
        sha256: "31f4cb000b486d44ed39f3b1c781759b1ecf331cbeabb1f4fb69f2ea8286053e",
        bytes: 8998,
    },
    DataFile {
        path: "caa/refusal/generate_dataset.json",
        repo: "EleutherAI/rnngineering",
        commit: "b18a80e3f7e3259f21e2a6574aaed3a21954aac6",
        origin_path: "Datasets/generate/refusal/generate_dataset.json",
        sha256: "48f3ce5c017609b9d733f82f92fd63d074aa7d29bf7c4cc1d18155d87da244d1",
        bytes: 159566,
    },
    DataFile {
        path: "caa/refusal/test_dataset_ab.json",
        repo: "EleutherAI/rnngineering",
        commit: "b18a80e3f7e3259f21e2a6574aaed3a21954aac6",
        origin_path: "Datasets/test/refusal/test_dataset_ab.json",
        sha256: "bee717b4e90afcceb226601843ddc3a34fd7c0b7348c0183cc018642b205d016",
        bytes: 19830,
    },
    DataFile {
        path: "caa/refusal/test_dataset_open_ended.json",
        repo: "EleutherAI/rnngineering",
        commit: "b18a80e3f7e3259f21e2a6574aaed3a21954aac6",
        origin_path: "Datasets/test/refusal/test_dataset_open_ended.json",
        sha256: "f29156da69e0daaced06c67ec4d82e9caf15a2aaa3aedc264b2adb67b8c5dfe5",
        bytes: 3824,
    },
    DataFile {
        path: "caa/survival-instinct/generate_dataset.json",
        repo: "EleutherAI/rnngineering",
        commit: "b18a80e3f7e3259f21e2a6574aaed3a21954aac6",
        origin_path: "Datasets/generate/survival-instinct/generate_dataset.json",
        sha256: "1dda5220455899f029d18731af2dd6515464c238d6c1ae43f1f87fcae06a637f",
        bytes: 325061,
    },
    DataFile {
        path: "caa/survival-instinct/test_dataset_ab.json",
        repo: "EleutherAI/rnngineering",
        commit: "b18a80e3f7e3259f21e2a6574aaed3a21954aac6",
        origin_path: "Datasets/test/survival-instinct/test_dataset_ab.json",
        sha256: "059930dedb0974c41a8d237837f36ce77e07f86de90dfc85d1599657ff63d231",
        bytes: 18684,
    },
    DataFile {
        path: "caa/survival-instinct/test_dataset_open_ended.json",
        repo: "EleutherAI/rnngineering",
        commit: "b18a80e3f7e3259f21e2a6574aaed3a21954aac6",
        origin_path: "Datasets/test/survival-instinct/test_dataset_open_ended.json",
        sha256: "699320c2ade03ebcfbd10919aa1d69bbe8512fea2731bbb3b47262b3aa63db62",
        bytes: 10589,
    },
    DataFile {
        path: "caa/sycophancy/generate_dataset.json",
        repo: "EleutherAI/rnngineering",
        commit: "b18a80e3f7e3259f21e2a6574aaed3a21954aac6",
        origin_path: "Datasets/generate/sycophancy/generate_dataset.json",
        sha256: "b05f9811714384b0ac099ab0d9fa93aeb88f93cb92cdbaca3727c132c2fec00b",
        bytes: 871128,
    },
    DataFile {
        path: "caa/sycophancy/test_dataset_ab.json",
        repo: "EleutherAI/rnngineering",
        commit: "b18a80e3f7e3259f21e2a6574aaed3a21954aac6",
        origin_path: "Datasets/test/sycophancy/test_dataset_ab.json",
        sha256: "9c996dda4e4b8ccacf9ead4c8f7b9dfdfe224bd6c7e927fd7a9e91eb6b1c3c5f",
        bytes: 43427,
    },
    DataFile {
        path: "caa/sycophancy/test_dataset_open_ended.json",
        repo: "EleutherAI/rnngineering",
        commit: "b18a80e3f7e3259f21e2a6574aaed3a21954aac6",
        origin_path: "Datasets/test/sycophancy/test_dataset_open_ended.json",
        sha256: "6d537f3ceea4dcf8b9eea843914d267cb8a425b2580e3e009cd20fb50d11d714",
        bytes: 6663,
    },
    DataFile {
        path: "repe/emotions/happiness.json",
        repo: "andyzoujm/representation-engineering",
        commit: "5455d8a375d5fb1cb191f9ebcd089b7c21e9a31e",
        origin_path: "data/emotions/happiness.json",
        sha256: "3dedefdc819007074a1a53c7a606d1e5661ac0cc19984212aa809c3a9f6bb646",
        bytes: 13270,
    },
    DataFile {
        path: "repe/emotions/fear.json",
        repo: "andyzoujm/representation-engineering",
        commit: "5455d8a375d5fb1cb191f9ebcd089b7c21e9a31e",
        origin_path: "data/emotions/fear.json",
        sha256: "cf791978f94f62ec617480a646f3a16d38aaf594a385c698bec08bf32747ee2b",
        bytes: 13325,
    },
    DataFile {
        path: "repe/emotions/all_truncated_outputs.json",
        repo: "andyzoujm/representation-engineering",
        commit: "5455d8a375d5fb1cb191f9ebcd089b7c21e9a31e",
        origin_path: "data/emotions/all_truncated_outputs.json",
        sha256: "c87990913b839fa792b751b532a8f9abc372770bf4d34a1de358a3a233edb6e5",
        bytes: 9824,
    },
    DataFile {
        path: "repe/stereoset_dev.json",
        repo: "zjunlp/EditBias",
        commit: "5ecfebcf154a40107cf7e885ab0a3c8274378a5b",
        origin_path: "data/stereoset/dev.json",
        sha256: "072118376792416850bc454a27b0a2bb1e39c9a5dc454f53bc62ddfd73797429",
        bytes: 1989248,
    },
    DataFile {
        path: "advbench/harmful_behaviors.csv",
        repo: "YancyKahn/PocoGCG",
        commit: "131c89005c410871dfeb53940ec4c7388084edfb",
        origin_path: "data/advbench/harmful_behaviors.csv",
        sha256: "dc1f2e4cfc7856a0e91f8bfdb8236d219644309a7522ece3f2d13bb2cc4a339c",
        bytes: 82219,
    },
    DataFile {
        path: "instructions/seed_tasks.jsonl",
        repo: "tatsu-lab/stanford_alpaca",
        commit: "761dc5bfbdeeffa89b8bff5d038781a4055f796a",
        origin_path: "seed_tasks.jsonl",
        sha256: "7779004fa198fdf27cf70a159363879d8a26c53329e11b436af17b3941875f48",
        bytes: 110934,
    },
];

/// Default raw-content base URL of the origins (`$LCROSS_DATA_URL` overrides it, e.g. for
/// a mirror).
pub const DEFAULT_DATA_URL: &str = "https://raw.githubusercontent.com";

/// The data directory: `$LCROSS_DATA`, else `~/.cache/lcross/data` (`$HOME`), else
/// `./lcross-data` when there is no home directory.
pub fn default_data_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("LCROSS_DATA").filter(|d| !d.is_empty()) {
        return d.into();
    }
    match std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        Some(home) => PathBuf::from(home).join(".cache").join("lcross").join("data"),
        None => PathBuf::from("lcross-data"),
    }
}

/// The path of data file `rel` (`/`-separated, e.g. `repe/emotions/fear.json`) under
/// `data_dir`, or [`CoreError::MissingData`] naming the fetch command when it is not there.
pub fn data_file(data_dir: &Path, rel: &str) -> Result<PathBuf> {
    let path = rel.split('/').fold(data_dir.to_path_buf(), |p, part| p.join(part));
    if path.is_file() {
        Ok(path)
    } else {
        Err(CoreError::MissingData { path, data_dir: data_dir.to_path_buf() })
    }
}

/// Read a user's text file (dataset, prompts, corpus, experiment): a UTF-8 byte-order mark
/// is dropped (editors on Windows write one; JSON and TOML readers stumble on it), UTF-16
/// is named as such, and bytes that are not UTF-8 are located by line and column.
pub fn read_text(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|e| read_error(path, e))?;
    decode_text(path, bytes)
}

/// [`read_text`] on bytes already read from `path`.
pub fn decode_text(path: &Path, mut bytes: Vec<u8>) -> Result<String> {
    if bytes.starts_with(&[0xEF, 0xBB, 0xBF]) {
        bytes.drain(..3);
    } else if bytes.starts_with(&[0xFF, 0xFE]) || bytes.starts_with(&[0xFE, 0xFF]) {
        return Err(CoreError::parse(path, None, "the file is UTF-16 (it starts with a UTF-16 byte-order mark): save it as UTF-8"));
    }
    String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        let before = &e.as_bytes()[..at];
        let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
        let line_start = before.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        let column = String::from_utf8_lossy(&before[line_start..]).chars().count() + 1;
        CoreError::parse(path, None, format!("not UTF-8 at line {line}, column {column} (byte {at}, 0x{:02X}): save the file as UTF-8", e.as_bytes()[at]))
    })
}

/// The error for reading `path` that failed with `err`: [`CoreError::MissingData`] when
/// `path` is a dataset file of [`DATA_FILES`] that is not there (naming the fetch
/// command), else the plain I/O error.
pub fn read_error(path: &Path, err: std::io::Error) -> CoreError {
    if err.kind() == std::io::ErrorKind::NotFound {
        for f in DATA_FILES {
            let rel: PathBuf = f.path.split('/').collect();
            if path.ends_with(&rel) {
                let mut dir = path.to_path_buf();
                for _ in rel.components() {
                    dir.pop();
                }
                return CoreError::MissingData { path: path.to_path_buf(), data_dir: dir };
            }
        }
    }
    CoreError::io(path, err)
}

/// The state of one data file in a directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileState {
    /// Present with the pinned sha256.
    Verified,
    /// Absent.
    Missing,
    /// Present with other bytes.
    Mismatch,
}

/// sha256 of a file's bytes (lowercase hex).
pub fn sha256_file(path: &Path) -> Result<String> {
    use sha2::{Digest, Sha256};
    let mut f = std::fs::File::open(path).map_err(|e| CoreError::io(path, e))?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).map_err(|e| CoreError::io(path, e))?;
    Ok(hex::encode(h.finalize()))
}

/// The state of `file` under `data_dir`.
pub fn file_state(data_dir: &Path, file: &DataFile) -> Result<FileState> {
    let path = file.path.split('/').fold(data_dir.to_path_buf(), |p, part| p.join(part));
    if !path.is_file() {
        return Ok(FileState::Missing);
    }
    Ok(if sha256_file(&path)? == file.sha256 { FileState::Verified } else { FileState::Mismatch })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_files_with_a_bom_read_and_bad_bytes_are_located() {
        let p = Path::new("items.json");
        assert_eq!(decode_text(p, b"\xEF\xBB\xBF[1]".to_vec()).unwrap(), "[1]");
        let e = decode_text(p, b"ok\nfine\nab\xFFc".to_vec()).unwrap_err().to_string();
        assert!(e.contains("items.json") && e.contains("line 3, column 3") && e.contains("0xFF"), "{e}");
        let e = decode_text(p, b"\xFF\xFEa\x00".to_vec()).unwrap_err().to_string();
        assert!(e.contains("UTF-16"), "{e}");
    }

    #[test]
    fn manifest_is_well_formed() {
        let mut seen = std::collections::BTreeSet::new();
        for f in DATA_FILES {
            assert!(seen.insert(f.path), "{} listed twice", f.path);
            assert_eq!(f.sha256.len(), 64, "{}", f.path);
            assert!(f.sha256.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()), "{}", f.path);
            assert_eq!(f.commit.len(), 40, "{}", f.path);
            assert!(f.bytes > 0 && !f.path.starts_with('/') && !f.path.contains(".."), "{}", f.path);
        }
        assert_eq!(DATA_FILES.len(), 7 * 3 + 3 + 1 + 1 + 1);
        assert_eq!(
            DATA_FILES[0].url("http://127.0.0.1:9/"),
            "http://127.0.0.1:9/EleutherAI/rnngineering/b18a80e3f7e3259f21e2a6574aaed3a21954aac6/Datasets/generate/coordinate-other-ais/generate_dataset.json"
        );
    }

    #[test]
    fn missing_file_names_the_fetch_command() {
        let dir = std::env::temp_dir().join(format!("lcross-data-missing-{}", std::process::id()));
        let err = data_file(&dir, "repe/emotions/fear.json").unwrap_err();
        assert!(matches!(err, CoreError::MissingData { .. }));
        let msg = err.to_string();
        assert!(msg.contains("lcross data fetch") && msg.contains("fear.json"), "{msg}");
        let read = read_error(&dir.join("caa").join("refusal").join("test_dataset_ab.json"), std::io::ErrorKind::NotFound.into());
        assert!(matches!(&read, CoreError::MissingData { data_dir, .. } if *data_dir == dir), "{read:?}");
        let other = read_error(&dir.join("mine.json"), std::io::ErrorKind::NotFound.into());
        assert!(matches!(other, CoreError::Io { .. }), "{other:?}");
    }
}
