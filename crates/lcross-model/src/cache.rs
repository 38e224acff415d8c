//! Key/value cache for incremental decoding of a batch of sequences ("rows").
//!
//! Every layer holds one preallocated key buffer and one value buffer of shape
//! `(row_capacity, kv_heads, seq_capacity, head_dim)`. A forward pass writes its new
//! keys in place at each row's own length (no concatenation, so decoding is linear in
//! the sequence length, not quadratic) and attends over a strided view of the buffer.
//! The buffers grow in chunks of [`SEQ_CHUNK`] positions (and double in rows) when a
//! pass needs more room; growth copies once.
//!
//! Rows have their own lengths, so sequences of different lengths decode together.
//! Forking a row (a shared prompt continued several ways) copies the row's cached keys
//! and values — a memory copy of a few hundred kilobytes per hundred tokens on the
//! models here, against a full recomputation of the prefix — rather than sharing blocks
//! between rows; see docs/ARCHITECTURE.md for that trade-off.

use candle_core::{DType, Device, Tensor};

use crate::error::{ModelError, Result};

/// Positions added at a time when a buffer grows.
pub const SEQ_CHUNK: usize = 256;

/// One layer's key and value buffers.
#[derive(Debug)]
struct LayerBuffers {
    k: Tensor,
    v: Tensor,
}

impl LayerBuffers {
    fn row_capacity(&self) -> usize {
        self.k.dims()[0]
    }
    fn seq_capacity(&self) -> usize {
        self.k.dims()[2]
    }
}

/// Keys and values of every layer for the rows seen so far.
///
/// `Clone` copies the buffers (they are written in place, so clones must not share
/// storage).
#[derive(Debug)]
pub struct KvCache {
    layers: Vec<Option<LayerBuffers>>,
    row_lens: Vec<usize>,
    /// Layers `0..valid_layers` hold every cached position (a pass that stopped early
    /// leaves deeper layers behind).
    valid_layers: usize,
}

impl Clone for KvCache {
    fn clone(&self) -> Self {
        let layers = self
            .layers
            .iter()
            .map(|l| {
                l.as_ref()
                    .map(|b| LayerBuffers { k: b.k.force_contiguous().expect("copying a KV buffer"), v: b.v.force_contiguous().expect("copying a KV buffer") })
            })
            .collect();
        Self { layers, row_lens: self.row_lens.clone(), valid_layers: self.valid_layers }
    }
}

impl Default for KvCache {
    fn default() -> Self {
        Self::new(0)
    }
}

impl KvCache {
    /// An empty cache of one row for `num_layers` layers.
    pub fn new(num_layers: usize) -> Self {
        Self::with_rows(num_layers, 1)
    }

    /// An empty cache of `rows` rows.
    pub fn with_rows(num_layers: usize, rows: usize) -> Self {
        Self { layers: (0..num_layers).map(|_| None).collect(), row_lens: vec![0; rows], valid_layers: num_layers }
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.row_lens.len()
    }

    /// Positions cached for each row.
    pub fn row_lens(&self) -> &[usize] {
        &self.row_lens
    }

    /// Positions cached in the longest row (for a one-row cache: its length).
    pub fn len(&self) -> usize {
        self.row_lens.iter().copied().max().unwrap_or(0)
    }

    /// True when no row has anything cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of leading layers whose cache covers every position.
    pub fn valid_layers(&self) -> usize {
        self.valid_layers
    }

    /// Positions the buffers hold per row before they must grow.
    pub fn seq_capacity(&self) -> usize {
        self.layers.iter().flatten().next().map_or(0, |b| b.seq_capacity())
    }

    /// Write this pass's keys and values `(rows, kv_heads, t, head_dim)` of `layer` at
    /// each row's current length and return views of every row's keys and values up to
    /// the longest row plus `t`: `(rows, kv_heads, max_len + t, head_dim)`.
    ///
    /// Row `i` must only read positions below its own length plus its real tokens; the
    /// slots past them hold padding or stale values (the attention mask hides them).
    pub(crate) fn write(&mut self, layer: usize, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
        let (rows, _, t, _) = k.dims4()?;
        if rows != self.rows() {
            return Err(ModelError::InvalidInput(format!("the KV cache has {} rows, the batch {rows}", self.rows())));
        }
        let total = self.len() + t;
        ensure_capacity(&mut self.layers[layer], rows, total, k)?;
        let buf = self.layers[layer].as_ref().expect("allocated by ensure_capacity");
        let (k, v) = (k.contiguous()?, v.contiguous()?);
        let first = self.row_lens[0];
        if self.row_lens.iter().all(|&l| l == first) {
            buf.k.narrow(0, 0, rows)?.slice_set(&k, 2, first)?;
            buf.v.narrow(0, 0, rows)?.slice_set(&v, 2, first)?;
        } else {
            // Rows of different lengths: one scatter per buffer puts row i's new
            // positions at slots len_i.. (one op, not one copy per row).
            let (_, kv_heads, _, head_dim) = k.dims4()?;
            let slots: Vec<u32> = self
                .row_lens
                .iter()
                .flat_map(|&len| (0..kv_heads).flat_map(move |_| (len..len + t).flat_map(move |s| std::iter::repeat_n(s as u32, head_dim))))
                .collect();
            let slots = Tensor::from_vec(slots, (rows, kv_heads, t, head_dim), k.device())?;
            buf.k.narrow(0, 0, rows)?.scatter_set(&slots, &k, 2)?;
            buf.v.narrow(0, 0, rows)?.scatter_set(&slots, &v, 2)?;
        }
        Ok((buf.k.narrow(0, 0, rows)?.narrow(2, 0, total)?, buf.v.narrow(0, 0, rows)?.narrow(2, 0, total)?))
    }

    /// Record that row `i` gained `added[i]` positions in a pass that ran layers
    /// `0..layers_run`.
    pub(crate) fn advance(&mut self, added: &[usize], layers_run: usize) {
        for (len, n) in self.row_lens.iter_mut().zip(added) {
            *len += n;
        }
        self.valid_layers = self.valid_layers.min(layers_run);
    }

    /// A new cache whose rows are copies of `rows` of this one (a row may repeat: that
    /// forks it).
    pub fn select_rows(&self, rows: &[usize]) -> Result<KvCache> {
        if let Some(&bad) = rows.iter().find(|&&r| r >= self.rows()) {
            return Err(ModelError::InvalidInput(format!("row {bad} is out of range: the KV cache has {} rows", self.rows())));
        }
        let mut out = KvCache {
            layers: Vec::with_capacity(self.layers.len()),
            row_lens: rows.iter().map(|&r| self.row_lens[r]).collect(),
            valid_layers: self.valid_layers,
        };
        for layer in &self.layers {
            out.layers.push(match layer {
                None => None,
                Some(b) if rows.is_empty() => Some(LayerBuffers { k: b.k.narrow(0, 0, 0)?.force_contiguous()?, v: b.v.narrow(0, 0, 0)?.force_contiguous()? }),
                Some(b) => {
                    let idx = Tensor::from_vec(rows.iter().map(|&r| r as u32).collect::<Vec<_>>(), rows.len(), b.k.device())?;
                    Some(LayerBuffers { k: b.k.index_select(&idx, 0)?, v: b.v.index_select(&idx, 0)? })
                }
            });
        }
        Ok(out)
    }

    /// Remove row `i` by moving the last row into its place (a copy of one row); the
    /// order of the other rows is kept except for the moved one.
    pub fn swap_remove_row(&mut self, i: usize) -> Result<()> {
        let last = self.rows().checked_sub(1).ok_or_else(|| ModelError::InvalidInput("the KV cache has no rows".into()))?;
        if i > last {
            return Err(ModelError::InvalidInput(format!("row {i} is out of range: the KV cache has {} rows", self.rows())));
        }
        if i != last {
            let len = self.row_lens[last];
            for b in self.layers.iter().flatten() {
                if len > 0 {
                    for buf in [&b.k, &b.v] {
                        let src = buf.narrow(0, last, 1)?.narrow(2, 0, len)?.force_contiguous()?;
                        buf.narrow(0, i, 1)?.slice_set(&src, 2, 0)?;
                    }
                }
            }
            self.row_lens[i] = len;
        }
        self.row_lens.pop();
        Ok(())
    }

    /// Append the rows of `other` (a cache of the same model) after this cache's rows.
    pub fn extend_rows(&mut self, other: &KvCache) -> Result<()> {
        if other.layers.len() != self.layers.len() {
            return Err(ModelError::InvalidInput(format!("KV caches of {} and {} layers cannot be joined", self.layers.len(), other.layers.len())));
        }
        let start = self.rows();
        let total_rows = start + other.rows();
        let needed = self.len().max(other.len());
        for (mine, theirs) in self.layers.iter_mut().zip(&other.layers) {
            let Some(t) = theirs else { continue };
            ensure_capacity(mine, total_rows, needed, &t.k)?;
            let m = mine.as_ref().expect("allocated by ensure_capacity");
            let (rows, len) = (other.rows(), other.len());
            if rows > 0 && len > 0 {
                let src_k = t.k.narrow(0, 0, rows)?.narrow(2, 0, len)?.force_contiguous()?;
                let src_v = t.v.narrow(0, 0, rows)?.narrow(2, 0, len)?.force_contiguous()?;
                m.k.narrow(0, start, rows)?.slice_set(&src_k, 2, 0)?;
                m.v.narrow(0, start, rows)?.slice_set(&src_v, 2, 0)?;
            }
        }
        self.row_lens.extend_from_slice(&other.row_lens);
        self.valid_layers = if start == 0 { other.valid_layers } else { self.valid_layers.min(other.valid_layers) };
        Ok(())
    }

    /// Bytes held by the buffers.
    pub fn bytes(&self) -> usize {
        self.layers.iter().flatten().map(|b| 2 * b.k.elem_count() * b.k.dtype().size_in_bytes()).sum()
    }

    /// Device of the buffers, if any were allocated.
    pub fn device(&self) -> Option<Device> {
        self.layers.iter().flatten().next().map(|b| b.k.device().clone())
    }

    /// Dtype of the buffers, if any were allocated.
    pub fn dtype(&self) -> Option<DType> {
        self.layers.iter().flatten().next().map(|b| b.k.dtype())
    }
}

/// Make `entry` hold at least `rows` rows of `seq` positions, shaped like `like`
/// `(_, kv_heads, _, head_dim)`; existing contents are kept.
fn ensure_capacity(entry: &mut Option<LayerBuffers>, rows: usize, seq: usize, like: &Tensor) -> Result<()> {
    let (_, kv_heads, _, head_dim) = like.dims4()?;
    if let Some(b) = entry {
        if b.seq_capacity() >= seq && b.row_capacity() >= rows {
            return Ok(());
        }
    }
    let old_rows = entry.as_ref().map_or(0, |b| b.row_capacity());
    let old_seq = entry.as_ref().map_or(0, |b| b.seq_capacity());
    let row_cap = if rows <= old_rows { old_rows } else { rows.max(2 * old_rows) };
    let seq_cap = (seq.div_ceil(SEQ_CHUNK).max(1) * SEQ_CHUNK).max(old_seq);
    let alloc = || Tensor::zeros((row_cap, kv_heads, seq_cap, head_dim), like.dtype(), like.device());
    let (k, v) = (alloc()?, alloc()?);
    if let Some(old) = entry.take() {
        if old_rows > 0 {
            k.narrow(0, 0, old_rows)?.slice_set(&old.k, 2, 0)?;
            v.narrow(0, 0, old_rows)?.slice_set(&old.v, 2, 0)?;
        }
    }
    *entry = Some(LayerBuffers { k, v });
    Ok(())
}
