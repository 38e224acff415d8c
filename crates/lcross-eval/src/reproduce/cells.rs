//! Finished cells: one JSON object per line in `cells.jsonl`, appended and synced as each
//! cell finishes. A run killed mid-write leaves at most a torn last line, which is cut off
//! when the file is opened again; a rerun skips every cell already there.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::grid::CellKey;
use crate::error::{EvalError, Result};

/// One finished cell: its key and its values. Fields ending in `_s` are timings (they
/// differ between runs; everything else is reproducible).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CellRecord {
    /// `CellKey::id()`.
    pub id: String,
    #[serde(flatten)]
    pub key: CellKey,
    /// Mean of the metric over the test items (None when the cell was skipped).
    pub mean: Option<f64>,
    pub stderr: Option<f64>,
    pub n: usize,
    /// The metric per test item, in item order (paired tests between conditions).
    #[serde(default)]
    pub per_item: Vec<f64>,
    /// Why the cell has no value (e.g. identity across hidden sizes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
    /// Cosine of the steering vector to the target's own vector.
    #[serde(default)]
    pub cosine_to_native: Option<f64>,
    /// Diagnostics of the map (transfer conditions).
    #[serde(default)]
    pub train_r2: Option<f64>,
    #[serde(default)]
    pub heldout_r2: Option<f64>,
    /// Whether the map interpolates its corpus (n <= d_s, OLS): the paper's regime.
    #[serde(default)]
    pub interpolating: Option<bool>,
    /// Whether the map's corpus contains the vector's own pairs.
    #[serde(default)]
    pub map_saw_vector_pairs: Option<bool>,
    #[serde(default)]
    pub map_n: Option<usize>,
    /// Further named values of the cell (e.g. the map comparisons of `map-similarity`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub values: BTreeMap<String, f64>,
    /// Seconds spent preparing the cell's group (vectors, maps), shared by its cells.
    #[serde(default)]
    pub prepare_s: f64,
    /// Seconds of this cell's evaluation (near 0 when the cache answered).
    #[serde(default)]
    pub eval_s: f64,
}

impl CellRecord {
    /// A record of `key` with no values yet (every field but the key empty or zero).
    pub fn empty(key: CellKey) -> Self {
        Self {
            id: key.id(),
            key,
            mean: None,
            stderr: None,
            n: 0,
            per_item: Vec::new(),
            skipped: None,
            cosine_to_native: None,
            train_r2: None,
            heldout_r2: None,
            interpolating: None,
            map_saw_vector_pairs: None,
            map_n: None,
            values: BTreeMap::new(),
            prepare_s: 0.0,
            eval_s: 0.0,
        }
    }

    /// The record without timings, for comparing runs.
    pub fn without_timings(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).unwrap_or(serde_json::Value::Null);
        if let Some(o) = v.as_object_mut() {
            o.retain(|k, _| !k.ends_with("_s"));
        }
        v
    }
}

/// The `cells.jsonl` of one run directory.
pub struct CellLog {
    path: PathBuf,
    cells: BTreeMap<String, CellRecord>,
}

impl CellLog {
    /// Open (or create) `dir/cells.jsonl`, cutting off a torn last line.
    pub fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| EvalError::io(dir, e))?;
        let path = dir.join("cells.jsonl");
        let cells = read_cells(&path, true)?;
        // An empty file marks a shard that owns no cells (merges expect one per directory).
        std::fs::OpenOptions::new().create(true).append(true).open(&path).map_err(|e| EvalError::io(&path, e))?;
        Ok(Self { path, cells })
    }

    /// Whether a cell is done.
    pub fn contains(&self, id: &str) -> bool {
        self.cells.contains_key(id)
    }

    /// Finished cells by id.
    pub fn cells(&self) -> &BTreeMap<String, CellRecord> {
        &self.cells
    }

    /// Append a finished cell (synced to disk before returning).
    pub fn append(&mut self, record: CellRecord) -> Result<()> {
        let line = serde_json::to_string(&record)?;
        let io = |e: std::io::Error| EvalError::io(&self.path, e);
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&self.path).map_err(io)?;
        f.write_all(format!("{line}\n").as_bytes()).map_err(io)?;
        f.sync_data().map_err(io)?;
        self.cells.insert(record.id.clone(), record);
        Ok(())
    }
}

/// Read a `cells.jsonl`; with `repair`, a last line without its newline (a write cut
/// short) is removed from the file. Any other bad line is an error naming it.
pub fn read_cells(path: &Path, repair: bool) -> Result<BTreeMap<String, CellRecord>> {
    let mut out = BTreeMap::new();
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(EvalError::io(path, e)),
    };
    let complete = match text.rfind('\n') {
        Some(i) => i + 1,
        None => 0,
    };
    if complete < text.len() {
        if !repair {
            return Err(EvalError::parse(path, None, "the last line is cut short (an interrupted run); rerun it to repair"));
        }
        tracing::warn!(path = %path.display(), "dropping a torn last line (interrupted write)");
        let f = std::fs::OpenOptions::new().write(true).open(path).map_err(|e| EvalError::io(path, e))?;
        f.set_len(complete as u64).map_err(|e| EvalError::io(path, e))?;
    }
    for (i, line) in text[..complete].lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let r: CellRecord = serde_json::from_str(line).map_err(|e| EvalError::parse(path, Some(i + 1), format!("not a cell ({e})")))?;
        out.insert(r.id.clone(), r);
    }
    Ok(out)
}

/// Tolerance within which two runs' numbers count as the same result. A value the cache
/// serves may have been computed in a batch of another composition (other rows in flight, a
/// prefix shared up to another layer): that changes the row count of the products, hence
/// the kernel (lcross's own for 8..=32 rows, gemm otherwise) and the order of its f32 sums.
/// Such values differ by f32 rounding carried through the layers (measured: 1.5e-6 on an
/// A/B probability near 0.5) and in nothing else, while a real difference (another vector,
/// beta or question) moves the numbers by orders of magnitude more. Numbers are compared as
/// `|x - y| <= SAME_RESULT_TOL * max(1, |x|, |y|)`: relative for large values, absolute for
/// the small effects and probabilities whose rounding is set by the unit scale.
pub const SAME_RESULT_TOL: f64 = 1e-5;

/// Whether two cells (as JSON, timings removed) hold the same result: the same fields,
/// strings, booleans and nulls exactly; numbers to [`SAME_RESULT_TOL`].
pub fn same_result(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    use serde_json::Value;
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_f64(), y.as_f64()) {
            (Some(x), Some(y)) => x == y || (x - y).abs() <= SAME_RESULT_TOL * x.abs().max(y.abs()).max(1.0),
            _ => x == y,
        },
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same_result(x, y)),
        (Value::Object(x), Value::Object(y)) => x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same_result(v, w))),
        _ => a == b,
    }
}

/// Join the cells of several run directories (shards). The same cell in two places must
/// hold the same result ([`same_result`], timings aside).
pub fn merge(dirs: &[PathBuf]) -> Result<BTreeMap<String, CellRecord>> {
    let mut out: BTreeMap<String, CellRecord> = BTreeMap::new();
    for d in dirs {
        let path = d.join("cells.jsonl");
        if !path.is_file() {
            return Err(EvalError::Incompatible { path: d.clone(), reason: "no cells.jsonl: is it a run directory?".into() });
        }
        for (id, r) in read_cells(&path, false)? {
            if let Some(prev) = out.get(&id) {
                if !same_result(&prev.without_timings(), &r.without_timings()) {
                    return Err(EvalError::Incompatible {
                        path: d.clone(),
                        reason: format!("cell {id} differs between shards: were they run with different settings?"),
                    });
                }
                continue;
            }
            out.insert(id, r);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::config::ConditionKind;
    use super::*;

    fn record(beta: f64) -> CellRecord {
        let key = CellKey {
            target: "t".into(),
            source: None,
            concept: "refusal".into(),
            vector: Default::default(),
            condition: ConditionKind::SelfModulation,
            estimator: None,
            beta: beta.into(),
            metric: "ab".into(),
        };
        CellRecord {
            mean: Some(0.5),
            stderr: Some(0.1),
            n: 2,
            per_item: vec![0.4, 0.6],
            cosine_to_native: Some(1.0),
            prepare_s: 1.5,
            eval_s: 0.25,
            ..CellRecord::empty(key)
        }
    }

    #[test]
    fn same_result_forgives_rounding_and_nothing_else() {
        let a = record(4.0).without_timings();
        let mut b = a.clone();
        b["per_item"][0] = serde_json::json!(0.4 + 2e-6);
        assert!(same_result(&a, &b), "f32 rounding of a sum reassociated by another batch");
        b["per_item"][0] = serde_json::json!(0.4 + 1e-4);
        assert!(!same_result(&a, &b), "a real difference");
        assert!(!same_result(&a, &record(8.0).without_timings()), "another beta");
        let mut c = a.clone();
        c["skipped"] = serde_json::json!("no map");
        assert!(!same_result(&a, &c), "a skipped cell");
        c.as_object_mut().unwrap().remove("skipped");
        c.as_object_mut().unwrap().remove("mean");
        assert!(!same_result(&a, &c) && !same_result(&c, &a), "a missing field");
    }

    #[test]
    fn a_torn_last_line_is_cut_and_the_rest_kept() {
        let dir = std::env::temp_dir().join(format!("lcross-cells-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut log = CellLog::open(&dir).unwrap();
        log.append(record(1.0)).unwrap();
        log.append(record(2.0)).unwrap();
        // a write cut short by kill -9
        let mut f = std::fs::OpenOptions::new().append(true).open(dir.join("cells.jsonl")).unwrap();
        f.write_all(b"{\"id\": \"target=t;sou").unwrap();
        drop(f);
        assert!(read_cells(&dir.join("cells.jsonl"), false).is_err());
        let mut log = CellLog::open(&dir).unwrap();
        assert_eq!(log.cells().len(), 2);
        log.append(record(3.0)).unwrap();
        let back = read_cells(&dir.join("cells.jsonl"), false).unwrap();
        assert_eq!(back.len(), 3);
        assert_eq!(back[&record(3.0).id], record(3.0));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn merge_accepts_equal_duplicates_and_refuses_conflicts() {
        let base = std::env::temp_dir().join(format!("lcross-merge-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let (a, b) = (base.join("a"), base.join("b"));
        CellLog::open(&a).unwrap().append(record(1.0)).unwrap();
        let mut lb = CellLog::open(&b).unwrap();
        lb.append(CellRecord { eval_s: 9.0, ..record(1.0) }).unwrap();
        lb.append(record(2.0)).unwrap();
        assert_eq!(merge(&[a.clone(), b.clone()]).unwrap().len(), 2);
        CellLog::open(&a).unwrap().append(CellRecord { mean: Some(0.9), ..record(2.0) }).unwrap();
        assert!(merge(&[a, b]).unwrap_err().to_string().contains("differs between shards"));
        let _ = std::fs::remove_dir_all(&base);
    }
}
