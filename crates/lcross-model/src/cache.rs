//! Key/value cache for incremental decoding.

use candle_core::{Tensor, D};

use crate::error::Result;

/// Keys and values of every layer for the tokens seen so far.
///
/// Cloning is cheap (tensors are reference counted), which lets pairs of texts that
/// share a prefix run the prefix once and continue from clones of the cache.
#[derive(Debug, Clone, Default)]
pub struct KvCache {
    layers: Vec<Option<(Tensor, Tensor)>>,
    len: usize,
    /// Layers `0..valid_layers` hold every cached position (a pass that stopped early
    /// leaves deeper layers behind).
    valid_layers: usize,
}

impl KvCache {
    /// An empty cache for `num_layers` layers.
    pub fn new(num_layers: usize) -> Self {
        Self { layers: vec![None; num_layers], len: 0, valid_layers: num_layers }
    }

    /// Number of positions cached.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Append this step's keys/values `(b, kv_heads, t, head_dim)` for `layer` and
    /// return the full keys/values.
    pub(crate) fn append(&mut self, layer: usize, k: Tensor, v: Tensor) -> Result<(Tensor, Tensor)> {
        let entry = &mut self.layers[layer];
        let (k, v) = match entry.take() {
            None => (k, v),
            Some((pk, pv)) => (Tensor::cat(&[&pk, &k], D::Minus2)?, Tensor::cat(&[&pv, &v], D::Minus2)?),
        };
        *entry = Some((k.clone(), v.clone()));
        Ok((k, v))
    }

    /// Record that `n` positions were added by a pass that ran layers `0..layers_run`.
    pub(crate) fn advance(&mut self, n: usize, layers_run: usize) {
        self.len += n;
        self.valid_layers = self.valid_layers.min(layers_run);
    }

    /// Number of leading layers whose cache covers every position.
    pub fn valid_layers(&self) -> usize {
        self.valid_layers
    }
}
