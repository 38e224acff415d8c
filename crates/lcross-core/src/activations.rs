//! Last-token activations of many texts, with prefix sharing, early exit and an on-disk
//! cache that makes long extractions resumable.
//!
//! Cache: one append-only file per model (keyed by the model file's sha256) under
//! `$LCROSS_CACHE` or `~/.cache/lcross/activations`. A record is
//! `[sha256(model hash, layer, ids): 32 bytes][layer: u32][dim: u32][dim x f32]`, all
//! little-endian. The file is opened in append mode and every record is written whole
//! under an exclusive file lock, so several lcross processes can share a cache; a run
//! that is interrupted leaves at most one partial record at the end, which is cut off
//! (under the same lock) when the cache is next opened.

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use lcross_model::{Hooks, Logits, Model};
use sha2::{Digest, Sha256};

use crate::error::{CoreError, Result};
use crate::texts::common_prefix;

/// Per-layer last-token state of one text.
pub type LayerStates = BTreeMap<usize, Vec<f32>>;

/// Default cache directory.
pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("LCROSS_CACHE").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("activations");
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
    home.join(".cache").join("lcross").join("activations")
}

/// The on-disk activation cache of one model.
pub struct ActivationCache {
    path: PathBuf,
    entries: HashMap<[u8; 32], Vec<f32>>,
    file: File,
    model_hash: String,
}

impl ActivationCache {
    /// Open (or create) the cache of the model whose file hash is `model_hash`.
    pub fn open(dir: &Path, model_hash: &str, hidden_size: usize) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| CoreError::io(dir, e))?;
        let path = dir.join(format!("{}.bin", &model_hash[..model_hash.len().min(24)]));
        let mut file = OpenOptions::new().create(true).append(true).read(true).open(&path).map_err(|e| CoreError::io(&path, e))?;
        file.lock().map_err(|e| CoreError::io(&path, e))?;
        let loaded = Self::read_records(&mut file, &path, hidden_size);
        let unlocked = file.unlock();
        let entries = loaded?;
        unlocked.map_err(|e| CoreError::io(&path, e))?;
        Ok(Self { path, entries, file, model_hash: model_hash.to_string() })
    }

    /// Read every whole record; cut a trailing partial one. Call with the lock held.
    fn read_records(file: &mut File, path: &Path, hidden_size: usize) -> Result<HashMap<[u8; 32], Vec<f32>>> {
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(|e| CoreError::io(path, e))?;
        let mut entries = HashMap::new();
        let mut off = 0usize;
        while off + 40 <= bytes.len() {
            let dim = u32::from_le_bytes(bytes[off + 36..off + 40].try_into().expect("4 bytes")) as usize;
            if dim != hidden_size {
                return Err(CoreError::parse(path, None, format!(
                    "activation cache record at byte {off} has {dim} values, the model has {hidden_size}: the cache is damaged; delete it")));
            }
            let end = off + 40 + 4 * dim;
            if end > bytes.len() {
                break; // partial record of an interrupted run
            }
            let mut key = [0u8; 32];
            key.copy_from_slice(&bytes[off..off + 32]);
            let v: Vec<f32> = bytes[off + 40..end].chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes"))).collect();
            entries.insert(key, v);
            off = end;
        }
        if (off as u64) < bytes.len() as u64 {
            file.set_len(off as u64).map_err(|e| CoreError::io(path, e))?;
        }
        Ok(entries)

    }

    /// Cached entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn key(&self, layer: usize, ids: &[u32]) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.model_hash.as_bytes());
        h.update((layer as u64).to_le_bytes());
        for id in ids {
            h.update(id.to_le_bytes());
        }
        h.finalize().into()
    }

    fn get(&self, layer: usize, ids: &[u32]) -> Option<&Vec<f32>> {
        self.entries.get(&self.key(layer, ids))
    }

    fn put(&mut self, layer: usize, ids: &[u32], v: &[f32]) -> Result<()> {
        let key = self.key(layer, ids);
        if self.entries.contains_key(&key) {
            return Ok(());
        }
        let mut rec = Vec::with_capacity(40 + 4 * v.len());
        rec.extend_from_slice(&key);
        rec.extend_from_slice(&(layer as u32).to_le_bytes());
        rec.extend_from_slice(&(v.len() as u32).to_le_bytes());
        for x in v {
            rec.extend_from_slice(&x.to_le_bytes());
        }
        self.file.lock().map_err(|e| CoreError::io(&self.path, e))?;
        let written = self.file.write_all(&rec);
        let unlocked = self.file.unlock();
        written.and(unlocked).map_err(|e| CoreError::io(&self.path, e))?;
        self.entries.insert(key, v.to_vec());
        Ok(())
    }

    /// Make the records written so far durable.
    pub fn flush(&mut self) -> Result<()> {
        self.file.sync_data().map_err(|e| CoreError::io(&self.path, e))
    }
}

/// Options of [`Extractor`].
#[derive(Debug, Clone, Copy)]
pub struct ExtractOptions {
    /// Run the shared prefix of a pair once (default on).
    pub prefix_sharing: bool,
    /// Stop the forward pass after the deepest requested layer (default on).
    pub early_exit: bool,
}

impl Default for ExtractOptions {
    fn default() -> Self {
        Self { prefix_sharing: true, early_exit: true }
    }
}

/// Reads last-token `resid_post` states of texts from a model.
pub struct Extractor<'m> {
    model: &'m Model,
    layers: Vec<usize>,
    cache: Option<ActivationCache>,
    opts: ExtractOptions,
}

impl<'m> Extractor<'m> {
    /// An extractor for `layers`; `cache` may be None (no disk cache).
    pub fn new(model: &'m Model, layers: &[usize], cache: Option<ActivationCache>, opts: ExtractOptions) -> Result<Self> {
        let n = model.config().num_layers;
        if layers.is_empty() {
            return Err(CoreError::Invalid("no layers given".into()));
        }
        if let Some(&bad) = layers.iter().find(|&&l| l >= n) {
            return Err(CoreError::Invalid(format!("layer {bad} is out of range: {} has layers 0..={}", model.id(), n - 1)));
        }
        let mut layers = layers.to_vec();
        layers.sort_unstable();
        layers.dedup();
        Ok(Self { model, layers, cache, opts })
    }

    fn cached(&self, ids: &[u32]) -> Option<LayerStates> {
        let c = self.cache.as_ref()?;
        self.layers.iter().map(|&l| c.get(l, ids).map(|v| (l, v.clone()))).collect()
    }

    fn store(&mut self, ids: &[u32], states: &LayerStates) -> Result<()> {
        if let Some(c) = self.cache.as_mut() {
            for (l, v) in states {
                c.put(*l, ids, v)?;
            }
        }
        Ok(())
    }

    fn hooks(&self) -> Hooks {
        Hooks::capture_last(&self.layers)
    }

    fn logits(&self) -> Logits {
        if self.opts.early_exit { Logits::None } else { Logits::Last }
    }

    fn to_states(out: lcross_model::ForwardOutput) -> Result<LayerStates> {
        out.captures.into_iter().map(|(l, t)| Ok((l, t.flatten_all().map_err(lcross_model::ModelError::from)?.to_vec1::<f32>().map_err(lcross_model::ModelError::from)?))).collect()
    }

    /// States of one text.
    pub fn text(&mut self, ids: &[u32]) -> Result<LayerStates> {
        if let Some(s) = self.cached(ids) {
            return Ok(s);
        }
        let out = self.model.forward(ids, None, &self.hooks(), self.logits())?;
        let states = Self::to_states(out)?;
        self.store(ids, &states)?;
        Ok(states)
    }

    /// States of both texts of a pair; their shared prefix is run once.
    pub fn pair(&mut self, pos: &[u32], neg: &[u32]) -> Result<(LayerStates, LayerStates)> {
        if let (Some(a), Some(b)) = (self.cached(pos), self.cached(neg)) {
            return Ok((a, b));
        }
        let shared = common_prefix(pos, neg).min(pos.len() - 1).min(neg.len() - 1);
        if !self.opts.prefix_sharing || shared == 0 {
            return Ok((self.text(pos)?, self.text(neg)?));
        }
        let mut prefix_cache = self.model.new_cache();
        self.model.forward(&pos[..shared], Some(&mut prefix_cache), &self.hooks(), self.logits())?;
        let run = |ids: &[u32]| -> Result<LayerStates> {
            let mut cache = prefix_cache.clone();
            let out = self.model.forward(&ids[shared..], Some(&mut cache), &self.hooks(), self.logits())?;
            Self::to_states(out)
        };
        let (a, b) = (run(pos)?, run(neg)?);
        self.store(pos, &a)?;
        self.store(neg, &b)?;
        Ok((a, b))
    }

    /// States of many pairs with a progress bar on stderr.
    pub fn pairs(&mut self, pairs: &[(Vec<u32>, Vec<u32>)], label: &str) -> Result<Vec<(LayerStates, LayerStates)>> {
        let bar = progress(pairs.len() as u64, label);
        let mut out = Vec::with_capacity(pairs.len());
        for (p, n) in pairs {
            out.push(self.pair(p, n)?);
            bar.inc(1);
        }
        bar.finish_and_clear();
        if let Some(c) = self.cache.as_mut() {
            c.flush()?;
        }
        Ok(out)
    }

    /// States of many texts with a progress bar on stderr.
    pub fn texts(&mut self, texts: &[Vec<u32>], label: &str) -> Result<Vec<LayerStates>> {
        let bar = progress(texts.len() as u64, label);
        let mut out = Vec::with_capacity(texts.len());
        for t in texts {
            out.push(self.text(t)?);
            bar.inc(1);
        }
        bar.finish_and_clear();
        if let Some(c) = self.cache.as_mut() {
            c.flush()?;
        }
        Ok(out)
    }
}

/// A progress bar on stderr (hidden when stderr is not a terminal).
pub fn progress(len: u64, label: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(len);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg} {bar:30} {pos}/{len} [{elapsed_precise} < {eta_precise}]").unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_message(label.to_string());
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_writers_sharing_a_cache_do_not_overwrite_each_other() {
        let dir = std::env::temp_dir().join(format!("lcross-cache-share-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let hash = "ab".repeat(32);
        let mut a = ActivationCache::open(&dir, &hash, 3).unwrap();
        let mut b = ActivationCache::open(&dir, &hash, 3).unwrap();
        a.put(1, &[1, 2], &[1.0, 2.0, 3.0]).unwrap();
        b.put(1, &[7], &[4.0, 5.0, 6.0]).unwrap();
        a.put(2, &[1, 2], &[7.0, 8.0, 9.0]).unwrap();
        let c = ActivationCache::open(&dir, &hash, 3).unwrap();
        assert_eq!(c.len(), 3);
        assert_eq!(c.get(1, &[1, 2]), Some(&vec![1.0, 2.0, 3.0]));
        assert_eq!(c.get(1, &[7]), Some(&vec![4.0, 5.0, 6.0]));
        assert_eq!(c.get(2, &[1, 2]), Some(&vec![7.0, 8.0, 9.0]));
        // A record of the wrong size is reported, not silently used.
        assert!(ActivationCache::open(&dir, &hash, 4).err().expect("must fail").to_string().contains("damaged"));
    }
}
