//! Token selection and the generation loop with a KV cache.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::error::{ModelError, Result};

/// How the next token is chosen.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sampling {
    /// Argmax (ties: lowest id, as torch.argmax).
    Greedy,
    /// Sample from softmax(logits / temperature) restricted to the top-p nucleus.
    Sample { temperature: f64, top_p: f64, seed: u64 },
}

/// Options of [`crate::Model::generate`].
#[derive(Debug, Clone)]
pub struct GenerateOptions {
    /// Maximum number of new tokens.
    pub max_tokens: usize,
    pub sampling: Sampling,
    /// Stop after any of these (the stop token is included in the output).
    pub stop_tokens: Vec<u32>,
}

/// Index of the largest value; the first one on ties.
pub fn argmax(values: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in values.iter().enumerate() {
        if v > values[best] {
            best = i;
        }
    }
    best
}

/// Chooses tokens from logits.
pub struct Sampler {
    sampling: Sampling,
    rng: StdRng,
}

impl Sampler {
    /// A sampler; errors on a non-positive temperature or top-p outside (0, 1].
    pub fn new(sampling: Sampling) -> Result<Self> {
        let seed = match sampling {
            Sampling::Greedy => 0,
            Sampling::Sample { temperature, top_p, seed } => {
                if !(temperature.is_finite() && temperature > 0.0) {
                    return Err(ModelError::InvalidInput(format!("temperature must be > 0, got {temperature} (use greedy decoding for 0)")));
                }
                if !(top_p > 0.0 && top_p <= 1.0) {
                    return Err(ModelError::InvalidInput(format!("top-p must be in (0, 1], got {top_p}")));
                }
                seed
            }
        };
        Ok(Self { sampling, rng: StdRng::seed_from_u64(seed) })
    }

    /// The next token given the last position's logits.
    pub fn next(&mut self, logits: &[f32]) -> u32 {
        match self.sampling {
            Sampling::Greedy => argmax(logits) as u32,
            Sampling::Sample { temperature, top_p, .. } => {
                let max = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
                let mut probs: Vec<(usize, f64)> = logits.iter().enumerate().map(|(i, &l)| (i, ((l as f64 - max) / temperature).exp())).collect();
                let total: f64 = probs.iter().map(|p| p.1).sum();
                probs.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
                let mut kept = 0.0;
                let mut cut = probs.len();
                for (n, p) in probs.iter().enumerate() {
                    kept += p.1 / total;
                    if kept >= top_p {
                        cut = n + 1;
                        break;
                    }
                }
                let nucleus = &probs[..cut];
                let mass: f64 = nucleus.iter().map(|p| p.1).sum();
                let mut u = self.rng.random::<f64>() * mass;
                for &(i, p) in nucleus {
                    u -= p;
                    if u <= 0.0 {
                        return i as u32;
                    }
                }
                nucleus[nucleus.len() - 1].0 as u32
            }
        }
    }
}

/// Turns a stream of token ids into text pieces, holding back incomplete UTF-8.
pub struct TextStream {
    ids: Vec<u32>,
    emitted: usize,
}

impl TextStream {
    /// An empty stream.
    pub fn new() -> Self {
        Self { ids: Vec::new(), emitted: 0 }
    }

    /// Add a token; return the new text it completes, if any.
    pub fn push(&mut self, id: u32, decode: impl Fn(&[u32]) -> Result<String>) -> Result<Option<String>> {
        self.ids.push(id);
        let text = decode(&self.ids)?;
        if text.ends_with('\u{FFFD}') || text.len() <= self.emitted || !text.is_char_boundary(self.emitted) {
            return Ok(None);
        }
        let piece = text[self.emitted..].to_string();
        self.emitted = text.len();
        Ok(Some(piece))
    }
}

impl Default for TextStream {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argmax_takes_first_of_ties() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0, 2.0]), 1);
    }

    #[test]
    fn sampling_is_seeded_and_respects_top_p() {
        let logits = [0.0f32, 10.0, 9.5, -5.0];
        let draw = |seed| {
            let mut s = Sampler::new(Sampling::Sample { temperature: 1.0, top_p: 0.9, seed }).unwrap();
            (0..50).map(|_| s.next(&logits)).collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert!(draw(7).iter().all(|&t| t == 1 || t == 2), "top-p must cut tokens 0 and 3");
        assert!(draw(7).contains(&2) && draw(7).contains(&1));
    }

    #[test]
    fn bad_sampling_parameters_are_errors() {
        assert!(Sampler::new(Sampling::Sample { temperature: 0.0, top_p: 1.0, seed: 0 }).is_err());
        assert!(Sampler::new(Sampling::Sample { temperature: 1.0, top_p: 1.5, seed: 0 }).is_err());
        assert!(Sampler::new(Sampling::Sample { temperature: f64::NAN, top_p: 1.0, seed: 0 }).is_err());
    }
}
