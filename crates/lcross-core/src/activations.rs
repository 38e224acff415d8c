//! Last-token activations of many texts, computed in batches (pairs share their common
//! prefix: it runs once and its KV cache is forked into the two texts), stopping after
//! the deepest requested layer, and remembered in the result store so long extractions
//! resume after an interruption.
//!
//! Batches are fixed chunks of the input list sorted by length: a chunk with any state
//! missing is computed whole, so a resumed or repeated run computes exactly the same batches and
//! gets bit-identical states.

use std::collections::BTreeMap;

use lcross_model::{BatchRow, HookPoint, Hooks, KvCache, Logits, Model};

use crate::error::{CoreError, Result};
use crate::store::{bytes_to_f32s, f32s_to_bytes, key_of, numerics_key, Key, Store};
use crate::texts::common_prefix;

/// Per-layer last-token state of one text.
pub type LayerStates = BTreeMap<usize, Vec<f32>>;

/// Store kind of activation entries.
const KIND: &str = "activation";

/// Default batch size of extraction: rows in one forward pass.
pub const DEFAULT_EXTRACT_BATCH: usize = 16;

/// Options of [`Extractor`].
#[derive(Debug, Clone, Copy)]
pub struct ExtractOptions {
    /// Run the shared prefix of a pair once (default on).
    pub prefix_sharing: bool,
    /// Stop the forward pass after the deepest requested layer (default on).
    pub early_exit: bool,
    /// Pairs (or texts) per forward pass (default [`DEFAULT_EXTRACT_BATCH`]).
    pub batch_size: usize,
    /// The hook point read at each layer (default `resid_post`).
    pub point: HookPoint,
}

impl Default for ExtractOptions {
    fn default() -> Self {
        Self { prefix_sharing: true, early_exit: true, batch_size: DEFAULT_EXTRACT_BATCH, point: HookPoint::ResidPost }
    }
}

/// Reads last-token states of texts at one hook point (default `resid_post`) of several layers.
pub struct Extractor<'m> {
    model: &'m Model,
    layers: Vec<usize>,
    store: Option<Store>,
    numerics: String,
    opts: ExtractOptions,
}

impl<'m> Extractor<'m> {
    /// An extractor for `layers`; `store` may be None (nothing remembered).
    pub fn new(model: &'m Model, layers: &[usize], store: Option<Store>, opts: ExtractOptions) -> Result<Self> {
        let n = model.config().num_layers;
        if layers.is_empty() {
            return Err(CoreError::Empty { what: "layers to capture".into() });
        }
        if let Some(&bad) = layers.iter().find(|&&l| l >= n) {
            return Err(CoreError::LayerOutOfRange { model: model.id().to_string(), layer: bad, layers: n });
        }
        if opts.batch_size == 0 {
            return Err(CoreError::BadValue { what: "batch size".into(), value: "0".into(), expected: "at least 1".into() });
        }
        let mut layers = layers.to_vec();
        layers.sort_unstable();
        layers.dedup();
        let numerics = if store.is_some() { numerics_key(model)? } else { String::new() };
        Ok(Self { model, layers, store, numerics, opts })
    }

    fn key(&self, layer: usize, ids: &[u32]) -> Key {
        let ids: Vec<u8> = ids.iter().flat_map(|i| i.to_le_bytes()).collect();
        match self.opts.point {
            // resid_post keeps the keys it had before hook points existed.
            HookPoint::ResidPost => key_of(&[self.numerics.as_bytes(), &(layer as u64).to_le_bytes(), &ids]),
            p => key_of(&[self.numerics.as_bytes(), &(layer as u64).to_le_bytes(), &ids, p.as_str().as_bytes()]),
        }
    }

    fn cached(&self, ids: &[u32]) -> Result<Option<LayerStates>> {
        let Some(store) = self.store.as_ref() else { return Ok(None) };
        let mut out = LayerStates::new();
        for &l in &self.layers {
            match store.get(KIND, &self.key(l, ids))? {
                Some(b) => {
                    let v = bytes_to_f32s(&b).filter(|v| v.len() == self.model.config().hidden_size).ok_or_else(|| CoreError::Store {
                        path: store.path().to_path_buf(),
                        reason: format!("activation entry of layer {l} has {} bytes, not {} f32 values", b.len(), self.model.config().hidden_size),
                    })?;
                    out.insert(l, v);
                }
                None => return Ok(None),
            }
        }
        Ok(Some(out))
    }

    fn store_all(&mut self, items: &[(&[u32], &LayerStates)]) -> Result<()> {
        let entries: Vec<(Key, Vec<u8>)> = items.iter().flat_map(|(ids, st)| st.iter().map(|(l, v)| (self.key(*l, ids), f32s_to_bytes(v)))).collect();
        if let Some(store) = self.store.as_mut() {
            store.put_many(KIND, &entries)?;
        }
        Ok(())
    }

    fn hooks(&self) -> Hooks {
        Hooks::capture_last_at(&self.layers, self.opts.point)
    }

    fn logits(&self) -> Logits {
        if self.opts.early_exit {
            Logits::None
        } else {
            Logits::Last
        }
    }

    fn to_states(out: lcross_model::ForwardOutput) -> Result<LayerStates> {
        out.captures
            .into_iter()
            .map(|(name, t)| {
                Ok((name.layer, t.flatten_all().map_err(lcross_model::ModelError::from)?.to_vec1::<f32>().map_err(lcross_model::ModelError::from)?))
            })
            .collect()
    }

    /// States of texts run together in one pass.
    fn run_texts(&self, texts: &[&[u32]]) -> Result<Vec<LayerStates>> {
        let hooks = self.hooks();
        let rows: Vec<BatchRow<'_>> = texts.iter().map(|t| BatchRow { tokens: t, hooks: &hooks }).collect();
        self.model.forward_batch(&rows, None, self.logits())?.into_iter().map(Self::to_states).collect()
    }

    /// States of pairs run together: the shared prefixes in one pass, then their KV
    /// caches forked into the two texts of each pair for one more pass.
    fn run_pairs(&self, pairs: &[(&[u32], &[u32])]) -> Result<Vec<(LayerStates, LayerStates)>> {
        let shared: Vec<usize> = pairs.iter().map(|(p, n)| common_prefix(p, n).min(p.len() - 1).min(n.len() - 1)).collect();
        if !self.opts.prefix_sharing || shared.contains(&0) {
            let texts: Vec<&[u32]> = pairs.iter().flat_map(|(p, n)| [*p, *n]).collect();
            let mut states = self.run_texts(&texts)?.into_iter();
            return Ok(pairs.iter().map(|_| (states.next().expect("two per pair"), states.next().expect("two per pair"))).collect());
        }
        let hooks = self.hooks();
        let mut prefix_cache = KvCache::with_rows(self.model.config().num_layers, pairs.len());
        let prefixes: Vec<BatchRow<'_>> = pairs.iter().zip(&shared).map(|((p, _), &s)| BatchRow { tokens: &p[..s], hooks: &hooks }).collect();
        self.model.forward_batch(&prefixes, Some(&mut prefix_cache), self.logits())?;
        let forks: Vec<usize> = (0..pairs.len()).flat_map(|i| [i, i]).collect();
        let mut cache = prefix_cache.select_rows(&forks)?;
        let rows: Vec<BatchRow<'_>> = pairs
            .iter()
            .zip(&shared)
            .flat_map(|((p, n), &s)| [BatchRow { tokens: &p[s..], hooks: &hooks }, BatchRow { tokens: &n[s..], hooks: &hooks }])
            .collect();
        let mut states = self.model.forward_batch(&rows, Some(&mut cache), self.logits())?.into_iter().map(Self::to_states);
        pairs.iter().map(|_| Ok((states.next().expect("two per pair")?, states.next().expect("two per pair")?))).collect()
    }

    /// States of one text.
    pub fn text(&mut self, ids: &[u32]) -> Result<LayerStates> {
        Ok(self.texts(&[ids.to_vec()], "")?.pop().expect("one text in, one out"))
    }

    /// States of both texts of a pair; their shared prefix is run once.
    pub fn pair(&mut self, pos: &[u32], neg: &[u32]) -> Result<(LayerStates, LayerStates)> {
        Ok(self.pairs(&[(pos.to_vec(), neg.to_vec())], "")?.pop().expect("one pair in, one out"))
    }

    /// States of many pairs, in batches, with a progress bar on stderr.
    pub fn pairs(&mut self, pairs: &[(Vec<u32>, Vec<u32>)], label: &str) -> Result<Vec<(LayerStates, LayerStates)>> {
        for (i, (p, n)) in pairs.iter().enumerate() {
            if p.is_empty() || n.is_empty() {
                return Err(CoreError::Empty { what: format!("tokens in one text of pair {i} (it is empty)") });
            }
        }
        let bar = progress(pairs.len() as u64, label);
        // Pairs of similar length share a batch (less padding); the order only depends on
        // the input, so reruns compute the same batches.
        let order = length_order(pairs.iter().map(|(p, n)| p.len().max(n.len())));
        let mut out: Vec<Option<(LayerStates, LayerStates)>> = vec![None; pairs.len()];
        for chunk_order in order.chunks(self.opts.batch_size) {
            let chunk: Vec<&(Vec<u32>, Vec<u32>)> = chunk_order.iter().map(|&i| &pairs[i]).collect();
            let mut hits = Vec::with_capacity(chunk.len());
            for (p, n) in chunk.iter().copied() {
                match (self.cached(p)?, self.cached(n)?) {
                    (Some(a), Some(b)) => hits.push((a, b)),
                    _ => break,
                }
            }
            if hits.len() == chunk.len() {
                for (&i, h) in chunk_order.iter().zip(hits) {
                    out[i] = Some(h);
                }
            } else {
                let refs: Vec<(&[u32], &[u32])> = chunk.iter().map(|(p, n)| (p.as_slice(), n.as_slice())).collect();
                let states = self.run_pairs(&refs)?;
                let items: Vec<(&[u32], &LayerStates)> = refs.iter().zip(&states).flat_map(|((p, n), (a, b))| [(*p, a), (*n, b)]).collect();
                self.store_all(&items)?;
                // States already stored win (the store keeps the first value), so what a
                // run returns is always what a rerun reads back.
                for (j, computed) in states.into_iter().enumerate() {
                    out[chunk_order[j]] = Some(match hits.get(j) {
                        Some(h) => h.clone(),
                        None => computed,
                    });
                }
            }
            bar.inc(chunk.len() as u64);
        }
        bar.finish_and_clear();
        Ok(out.into_iter().map(|s| s.expect("every pair computed")).collect())
    }

    /// States of many texts, in batches of similar length, with a progress bar on stderr.
    pub fn texts(&mut self, texts: &[Vec<u32>], label: &str) -> Result<Vec<LayerStates>> {
        if let Some(i) = texts.iter().position(|t| t.is_empty()) {
            return Err(CoreError::Empty { what: format!("tokens in text {i} (it is empty)") });
        }
        // Sorting by length keeps padding small; the order only depends on the input.
        let order = length_order(texts.iter().map(Vec::len));
        let bar = progress(texts.len() as u64, label);
        let mut out: Vec<Option<LayerStates>> = vec![None; texts.len()];
        for chunk in order.chunks(self.opts.batch_size) {
            let mut hits = Vec::with_capacity(chunk.len());
            for &i in chunk {
                match self.cached(&texts[i])? {
                    Some(s) => hits.push(s),
                    None => break,
                }
            }
            let states = if hits.len() == chunk.len() {
                hits
            } else {
                let refs: Vec<&[u32]> = chunk.iter().map(|&i| texts[i].as_slice()).collect();
                let states = self.run_texts(&refs)?;
                let items: Vec<(&[u32], &LayerStates)> = refs.iter().copied().zip(&states).collect();
                self.store_all(&items)?;
                // Stored states win, as for pairs.
                states.into_iter().enumerate().map(|(i, s)| hits.get(i).cloned().unwrap_or(s)).collect()
            };
            for (&i, s) in chunk.iter().zip(states) {
                out[i] = Some(s);
            }
            bar.inc(chunk.len() as u64);
        }
        bar.finish_and_clear();
        Ok(out.into_iter().map(|s| s.expect("every text computed")).collect())
    }
}

/// The order in which items of these lengths are batched: shortest first, ties in input
/// order (so items of similar length share a batch and pad little, and the batches depend
/// only on the input).
pub fn length_order(lengths: impl IntoIterator<Item = usize>) -> Vec<usize> {
    let lengths: Vec<usize> = lengths.into_iter().collect();
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    order.sort_by_key(|&i| (lengths[i], i));
    order
}

thread_local! {
    static PROGRESS_HIDDEN: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Run `work` with the progress bars [`progress`] makes on this thread shown (on a
/// terminal stderr, the default) or hidden (`shown = false`): how a library caller
/// (the Python package's `progress=`) chooses for one call.
pub fn with_progress<R>(shown: bool, work: impl FnOnce() -> R) -> R {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            PROGRESS_HIDDEN.with(|h| h.set(self.0));
        }
    }
    let _restore = Restore(PROGRESS_HIDDEN.with(|h| h.replace(!shown)));
    work()
}

/// A progress bar on stderr (hidden when stderr is not a terminal, or inside
/// [`with_progress`]`(false, ..)`).
pub fn progress(len: u64, label: &str) -> indicatif::ProgressBar {
    let bar = if PROGRESS_HIDDEN.with(|h| h.get()) { indicatif::ProgressBar::hidden() } else { indicatif::ProgressBar::new(len) };
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg} {bar:30} {pos}/{len} [{elapsed_precise} < {eta_precise}]")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_message(label.to_string());
    bar
}

#[cfg(test)]
mod tests {
    use super::{length_order, progress, with_progress};

    #[test]
    fn progress_can_be_hidden_for_one_call() {
        assert!(with_progress(false, || progress(3, "x").is_hidden()));
        assert!(with_progress(true, || with_progress(false, || progress(3, "x").is_hidden())));
        // Outside, the bar follows stderr (hidden under the test harness, which captures
        // it, unless run on a terminal): only the inner call above was forced.
        assert_eq!(with_progress(true, || progress(3, "x").is_hidden()), !std::io::IsTerminal::is_terminal(&std::io::stderr()));
    }

    #[test]
    fn length_order_is_shortest_first_and_stable() {
        assert_eq!(length_order([5, 2, 9, 2, 1]), vec![4, 1, 3, 0, 2]);
        assert!(length_order(std::iter::empty()).is_empty());
    }
}
