//! Last-token activations of many texts, with prefix sharing, early exit and an on-disk
//! cache that makes long extractions resumable.
//!
//! Cache: one append-only file per model (keyed by the model file's sha256) under
//! `$LCROSS_CACHE` or `~/.cache/lcross/activations`. A record is
//! `[sha256(model hash, layer, ids): 32 bytes][layer: u32][dim: u32][dim x f32]`, all
//! little-endian. A run that is interrupted leaves at most one partial record at the
//! end, which is cut off when the cache is next opened.

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Write};
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
    writer: BufWriter<File>,
    model_hash: String,
    pending: usize,
}

impl ActivationCache {
    /// Open (or create) the cache of the model whose file hash is `model_hash`.
    pub fn open(dir: &Path, model_hash: &str, hidden_size: usize) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| CoreError::io(dir, e))?;
        let path = dir.join(format!("{}.bin", &model_hash[..model_hash.len().min(24)]));
        let mut entries = HashMap::new();
        let mut good_len = 0u64;
        if path.exists() {
            let mut bytes = Vec::new();
            File::open(&path).and_then(|mut f| f.read_to_end(&mut bytes)).map_err(|e| CoreError::io(&path, e))?;
            let mut off = 0usize;
            while off + 40 <= bytes.len() {
                let dim = u32::from_le_bytes(bytes[off + 36..off + 40].try_into().expect("4 bytes")) as usize;
                if dim != hidden_size {
                    tracing::warn!(path = %path.display(), offset = off, "activation cache record of wrong size; ignoring the rest");
                    break;
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
            good_len = off as u64;
        }
        let file = OpenOptions::new().create(true).append(false).write(true).truncate(false).open(&path).map_err(|e| CoreError::io(&path, e))?;
        file.set_len(good_len).map_err(|e| CoreError::io(&path, e))?;
        let mut writer = BufWriter::new(file);
        std::io::Seek::seek(&mut writer, std::io::SeekFrom::Start(good_len)).map_err(|e| CoreError::io(&path, e))?;
        Ok(Self { path, entries, writer, model_hash: model_hash.to_string(), pending: 0 })
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
        self.writer.write_all(&rec).map_err(|e| CoreError::io(&self.path, e))?;
        self.entries.insert(key, v.to_vec());
        self.pending += 1;
        if self.pending >= 64 {
            self.flush()?;
        }
        Ok(())
    }

    /// Write buffered records to disk.
    pub fn flush(&mut self) -> Result<()> {
        self.pending = 0;
        self.writer.flush().map_err(|e| CoreError::io(&self.path, e))
    }
}

impl Drop for ActivationCache {
    fn drop(&mut self) {
        let _ = self.writer.flush();
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
