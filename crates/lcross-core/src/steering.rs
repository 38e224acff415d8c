//! Steering vectors: extraction (CAA mean difference, RepE first principal component),
//! metadata, and the artifact format.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::activations::LayerStates;
use crate::artifact;
use crate::error::{CoreError, Result};

/// How a vector was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// Mean of the differences positive - negative (CAA).
    MeanDiff,
    /// First principal component of the differences, sign by majority (RepE).
    Pca,
    /// Transferred from another model through a linear map.
    Transferred,
}

impl Method {
    /// Parse `mean-diff` or `pca`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "mean-diff" | "caa" => Some(Self::MeanDiff),
            "pca" | "repe" => Some(Self::Pca),
            _ => None,
        }
    }
}

/// Everything an SV file says about where it came from.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VectorMetadata {
    /// lcross version that wrote the file.
    pub lcross_version: String,
    /// Model the vector lives in (id and file sha256).
    pub model_id: String,
    pub model_sha256: String,
    pub hidden_size: usize,
    pub layers: Vec<usize>,
    pub concept: String,
    pub dataset: String,
    pub dataset_sha256: String,
    pub method: Method,
    pub n_pairs: usize,
    /// Unit-normalised per layer.
    pub normalized: bool,
    /// (pairs whose positive letter is A, is B), for A/B data.
    pub letter_balance: Option<(usize, usize)>,
    /// Whether the A- and B-matching groups were averaged separately.
    pub balanced_letters: bool,
    /// Cosine between the vectors of the first and second half of the pairs, per layer.
    pub half_split_cosine: BTreeMap<usize, f64>,
    /// For transferred vectors: source vector, map and their provenance.
    #[serde(default)]
    pub provenance: Option<serde_json::Value>,
    /// The hook point the vector was read at, and is added at unless told (`resid_post`
    /// when absent: files written before hook points existed).
    #[serde(default, skip_serializing_if = "is_resid_post")]
    pub hook: lcross_model::HookPoint,
    /// The beta chosen by `lcross calibrate` (field `beta`) with the metric, budget and
    /// the effects it measured; read by `--beta auto`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibration: Option<Calibration>,
}

/// What `lcross calibrate` chose for a vector, kept in its metadata (the key
/// `calibration`); `--beta auto` reads `beta`. The JSON is one flat object: the typed
/// fields, then the rest of the calibration report (sweep, test rows, budgets).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    /// The chosen beta.
    pub beta: f64,
    /// The metric it was chosen on (`ab`, `open-ended`, `harm`, `fair`, `emotion`).
    #[serde(default)]
    pub metric: String,
    /// The model it was measured on.
    #[serde(default)]
    pub model: String,
    /// The positions it was measured with (as `Positions`' debug form, e.g. `All`).
    #[serde(default)]
    pub positions: String,
    /// Hook point and intervention, when not `resid_post` and `add`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hook: Option<lcross_model::HookPoint>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intervention: Option<lcross_model::InterventionKind>,
    /// The rest of the report: dev sweep, test rows, effect, budgets.
    #[serde(flatten)]
    pub report: serde_json::Map<String, serde_json::Value>,
}

impl Calibration {
    /// A calibration that records only its beta (tests, hand-made vectors).
    pub fn with_beta(beta: f64) -> Self {
        Self { beta, metric: String::new(), model: String::new(), positions: String::new(), hook: None, intervention: None, report: Default::default() }
    }
}

/// One vector per layer: `layer -> values`.
pub type LayerVectors = BTreeMap<usize, Vec<f32>>;

/// Whether a hook point is the default `resid_post` (not written into files).
pub fn is_resid_post(p: &lcross_model::HookPoint) -> bool {
    *p == lcross_model::HookPoint::ResidPost
}

impl VectorMetadata {
    /// The calibrated beta (`--beta auto`), or an error saying how to get one.
    pub fn calibrated_beta(&self) -> Result<f64> {
        let beta = self.calibration.as_ref().map(|c| c.beta);
        match beta {
            Some(b) if b.is_finite() && b.abs() <= f32::MAX as f64 => Ok(b),
            Some(b) => Err(CoreError::BadValue {
                what: "calibrated beta (metadata `calibration.beta`)".into(),
                value: b.to_string(),
                expected: "a finite number within f32's range: calibrate the vector again".into(),
            }),
            None => Err(CoreError::NotCalibrated { concept: self.concept.clone(), model: self.model_id.clone() }),
        }
    }
}

impl VectorMetadata {
    /// Metadata of a vector that was not extracted from pairs (imported, synthetic for
    /// benchmarks and tests): no pairs, no split cosines, no provenance yet.
    pub fn made_by_hand(model_id: &str, model_sha256: &str, hidden_size: usize, layers: Vec<usize>, concept: &str, dataset: &str) -> Self {
        Self {
            lcross_version: crate::VERSION.into(),
            model_id: model_id.into(),
            model_sha256: model_sha256.into(),
            hidden_size,
            layers,
            concept: concept.into(),
            dataset: dataset.into(),
            dataset_sha256: String::new(),
            method: Method::MeanDiff,
            n_pairs: 0,
            normalized: false,
            letter_balance: None,
            balanced_letters: false,
            half_split_cosine: Default::default(),
            hook: Default::default(),
            provenance: None,
            calibration: None,
        }
    }
}

/// A seeded pseudo-random direction of length `norm` (xorshift64, independent of any
/// crate's random streams, so it stays the same across versions).
pub fn pseudo_random_direction(dim: usize, seed: u64, norm: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v: Vec<f32> = (0..dim)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 11) as f32 / (1u64 << 53) as f32 - 0.5
        })
        .collect();
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(f32::MIN_POSITIVE);
    v.iter_mut().for_each(|x| *x *= norm / n);
    v
}

/// A steering vector: one direction per layer of one model.
#[derive(Debug, Clone)]
pub struct SteeringVector {
    pub metadata: VectorMetadata,
    pub layers: BTreeMap<usize, Vec<f32>>,
}

/// Mean of `rows` in f64.
fn mean(rows: &[&[f64]]) -> Vec<f64> {
    let d = rows.first().map_or(0, |r| r.len());
    let mut m = vec![0.0; d];
    for r in rows {
        for (a, b) in m.iter_mut().zip(r.iter()) {
            *a += b;
        }
    }
    let n = rows.len().max(1) as f64;
    m.iter_mut().for_each(|x| *x /= n);
    m
}

/// Cosine of two vectors.
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    if na == 0.0 || nb == 0.0 {
        0.0
    } else {
        dot / (na * nb)
    }
}

/// CAA: mean of `pos - neg`. With `letter_groups` (the positive letter of each pair),
/// the mean of each letter group is taken first and the groups averaged, cancelling the
/// "A vs B" component when the groups are unequal.
pub fn mean_difference(pos: &[Vec<f32>], neg: &[Vec<f32>], letter_groups: Option<&[char]>) -> Result<Vec<f32>> {
    let diffs = differences(pos, neg)?;
    let rows: Vec<&[f64]> = diffs.iter().map(|d| d.as_slice()).collect();
    let m = match letter_groups {
        None => mean(&rows),
        Some(letters) => {
            let mut groups: BTreeMap<char, Vec<&[f64]>> = BTreeMap::new();
            for (r, l) in rows.iter().zip(letters) {
                groups.entry(*l).or_default().push(r);
            }
            let means: Vec<Vec<f64>> = groups.values().map(|g| mean(g)).collect();
            let refs: Vec<&[f64]> = means.iter().map(|m| m.as_slice()).collect();
            mean(&refs)
        }
    };
    Ok(m.into_iter().map(|x| x as f32).collect())
}

fn differences(pos: &[Vec<f32>], neg: &[Vec<f32>]) -> Result<Vec<Vec<f64>>> {
    if pos.is_empty() {
        return Err(CoreError::Empty { what: "positive states in the pairs".into() });
    }
    if pos.len() != neg.len() {
        return Err(CoreError::SizeMismatch { what: "negative states (one per positive state)".into(), expected: pos.len(), got: neg.len() });
    }
    pos.iter()
        .zip(neg)
        .map(|(p, n)| {
            if p.len() != n.len() {
                return Err(CoreError::SizeMismatch { what: "a negative state (values)".into(), expected: p.len(), got: n.len() });
            }
            Ok(p.iter().zip(n).map(|(a, b)| *a as f64 - *b as f64).collect())
        })
        .collect()
}

/// RepE: first principal component of the differences, unit norm.
///
/// RepE presents each pair in a shuffled order, so its differences have random signs and
/// their mean is near zero before centring. We make that deterministic: the difference
/// of pair `i` is negated when `i` is odd. The set is centred, PC1 taken (thin SVD, f64),
/// and the sign chosen so that the positive text projects higher than the negative one
/// on the majority of pairs.
pub fn pca_direction(pos: &[Vec<f32>], neg: &[Vec<f32>]) -> Result<Vec<f32>> {
    let diffs = differences(pos, neg)?;
    let n = diffs.len();
    let d = diffs[0].len();
    if n < 2 {
        return Err(CoreError::TooFew { what: "pairs of a PCA vector".into(), needed: 2, got: diffs.len() });
    }
    let signed: Vec<Vec<f64>> = diffs.iter().enumerate().map(|(i, r)| if i % 2 == 1 { r.iter().map(|x| -x).collect() } else { r.clone() }).collect();
    let rows: Vec<&[f64]> = signed.iter().map(|r| r.as_slice()).collect();
    let mu = mean(&rows);
    let x = faer::Mat::<f64>::from_fn(n, d, |i, j| signed[i][j] - mu[j]);
    let svd = x.thin_svd().map_err(|e| CoreError::Numerical(format!("SVD of the differences: {e:?}")))?;
    let v = svd.V();
    let mut dir: Vec<f64> = (0..d).map(|j| v[(j, 0)]).collect();
    let agree = diffs.iter().filter(|r| r.iter().zip(&dir).map(|(a, b)| a * b).sum::<f64>() > 0.0).count();
    if 2 * agree < n {
        dir.iter_mut().for_each(|x| *x = -*x);
    }
    let norm = dir.iter().map(|x| x * x).sum::<f64>().sqrt();
    Ok(dir.into_iter().map(|x| (x / norm) as f32).collect())
}

/// Options of [`extract`].
#[derive(Debug, Clone)]
pub struct ExtractSpec {
    pub method: Method,
    pub normalize: bool,
    /// Average A- and B-matching groups separately (A/B data only).
    pub balance_letters: bool,
}

/// Steering vector per layer from the states of each pair.
/// `letters`: positive letter of each pair for A/B data.
pub fn extract(
    states: &[(LayerStates, LayerStates)],
    layers: &[usize],
    letters: Option<&[char]>,
    spec: &ExtractSpec,
) -> Result<(LayerVectors, BTreeMap<usize, f64>)> {
    let mut out = BTreeMap::new();
    let mut stability = BTreeMap::new();
    for &l in layers {
        let get = |s: &LayerStates| {
            s.get(&l).cloned().ok_or_else(|| CoreError::MissingLayer { what: "the captured states".into(), layer: l, layers: s.keys().copied().collect() })
        };
        let pos: Vec<Vec<f32>> = states.iter().map(|(p, _)| get(p)).collect::<Result<_>>()?;
        let neg: Vec<Vec<f32>> = states.iter().map(|(_, n)| get(n)).collect::<Result<_>>()?;
        let groups = if spec.balance_letters { letters } else { None };
        let one = |p: &[Vec<f32>], n: &[Vec<f32>], g: Option<&[char]>| -> Result<Vec<f32>> {
            match spec.method {
                Method::MeanDiff => mean_difference(p, n, g),
                Method::Pca => pca_direction(p, n),
                Method::Transferred => {
                    Err(CoreError::BadValue { what: "extraction method".into(), value: "transferred".into(), expected: "mean-diff or pca".into() })
                }
            }
        };
        let mut v = one(&pos, &neg, groups)?;
        let half = pos.len() / 2;
        if half >= 2 {
            let (g1, g2) = match groups {
                Some(g) => (Some(&g[..half]), Some(&g[half..])),
                None => (None, None),
            };
            let a = one(&pos[..half], &neg[..half], g1)?;
            let b = one(&pos[half..], &neg[half..], g2)?;
            stability.insert(l, cosine(&a, &b));
        }
        if spec.normalize {
            let norm = v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
            if norm > 0.0 {
                v.iter_mut().for_each(|x| *x = (*x as f64 / norm) as f32);
            }
        }
        out.insert(l, v);
    }
    Ok((out, stability))
}

impl SteeringVector {
    /// The vector's identity for cache keys: sha256 (hex) over each layer (u64, little
    /// endian) and its values (f32, little endian), in layer order. Metadata and file
    /// names do not enter it: two files with the same numbers steer the same way.
    pub fn fingerprint(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        for (l, vals) in &self.layers {
            h.update((*l as u64).to_le_bytes());
            for x in vals {
                h.update(x.to_le_bytes());
            }
        }
        hex::encode(h.finalize())
    }

    /// Save as safetensors (`layer.<L>` tensors) + metadata, atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        self.validate()?;
        let tensors = self.layers.iter().map(|(l, v)| (format!("layer.{l}"), (vec![v.len()], v.clone()))).collect();
        artifact::save(path, &tensors, &self.metadata)
    }

    /// Load and validate a vector file.
    pub fn load(path: &Path) -> Result<Self> {
        let (tensors, metadata): (_, VectorMetadata) = artifact::load(path)?;
        let mut layers = BTreeMap::new();
        for (name, (shape, v)) in tensors {
            let l: usize = name
                .strip_prefix("layer.")
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| CoreError::parse(path, None, format!("tensor `{name}` is not named layer.<N>")))?;
            if shape != [metadata.hidden_size] {
                return Err(CoreError::parse(path, None, format!("tensor `{name}` has shape {shape:?}, metadata says hidden_size {}", metadata.hidden_size)));
            }
            layers.insert(l, v);
        }
        let sv = Self { metadata, layers };
        sv.validate().map_err(|e| CoreError::parse(path, None, e.to_string()))?;
        Ok(sv)
    }

    /// A vector from its metadata and values, checked as a file's are (layers as in the
    /// metadata, each of `hidden_size` finite values).
    pub fn from_parts(metadata: VectorMetadata, layers: LayerVectors) -> Result<Self> {
        let sv = Self { metadata, layers };
        sv.validate()?;
        Ok(sv)
    }

    /// The same vector at `layer` only.
    pub fn only_layer(&self, layer: usize) -> Result<Self> {
        let v = self.layers.get(&layer).ok_or_else(|| CoreError::MissingLayer { what: "the vector".into(), layer, layers: self.metadata.layers.clone() })?;
        let mut metadata = self.metadata.clone();
        metadata.layers = vec![layer];
        Ok(Self { metadata, layers: [(layer, v.clone())].into_iter().collect() })
    }

    fn validate(&self) -> Result<()> {
        let keys: Vec<usize> = self.layers.keys().copied().collect();
        if keys != self.metadata.layers {
            return Err(CoreError::BadValue {
                what: "the vector's layers".into(),
                value: format!("{keys:?}"),
                expected: format!("the layers of its metadata, {:?}", self.metadata.layers),
            });
        }
        if keys.is_empty() {
            return Err(CoreError::Empty { what: "layers in the vector".into() });
        }
        for (l, v) in &self.layers {
            if v.len() != self.metadata.hidden_size {
                return Err(CoreError::SizeMismatch {
                    what: format!("vector layer {l} (hidden_size in its metadata)"),
                    expected: self.metadata.hidden_size,
                    got: v.len(),
                });
            }
            if v.iter().any(|x| !x.is_finite()) {
                return Err(CoreError::NonFinite { what: format!("vector layer {l}") });
            }
        }
        Ok(())
    }

    /// Refuse to use this vector on `model` unless its size matches and (without
    /// `force`) its model id and file hash match.
    pub fn check_model(&self, model: &lcross_model::Model, force: bool) -> Result<()> {
        let h = model.config().hidden_size;
        if self.metadata.hidden_size != h {
            return Err(CoreError::HiddenSizeMismatch {
                what: "the vector".into(),
                made_for: self.metadata.model_id.clone(),
                model: model.id().into(),
                expected: h,
                got: self.metadata.hidden_size,
            });
        }
        if let Some(&bad) = self.layers.keys().find(|&&l| l >= model.config().num_layers) {
            return Err(CoreError::LayerOutOfRange { model: model.id().to_string(), layer: bad, layers: model.config().num_layers });
        }
        if !force {
            let hash = model.file_sha256()?;
            if self.metadata.model_id != model.id() || self.metadata.model_sha256 != hash {
                return Err(CoreError::WrongModel(Box::new(crate::error::ModelMismatch {
                    what: "the vector".into(),
                    made_for: self.metadata.model_id.clone(),
                    made_for_sha256: self.metadata.model_sha256.clone(),
                    model: model.id().to_string(),
                    model_sha256: hash,
                })));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_difference_and_letter_balance() {
        let pos = vec![vec![3.0f32, 1.0], vec![5.0, 1.0], vec![1.0, 1.0]];
        let neg = vec![vec![1.0f32, 0.0], vec![1.0, 0.0], vec![1.0, 0.0]];
        assert_eq!(mean_difference(&pos, &neg, None).unwrap(), vec![2.0, 1.0]);
        // groups: A -> diffs (2,1),(4,1) mean (3,1); B -> (0,1); average (1.5, 1)
        assert_eq!(mean_difference(&pos, &neg, Some(&['A', 'A', 'B'])).unwrap(), vec![1.5, 1.0]);
    }

    #[test]
    fn pca_recovers_a_planted_direction_with_the_right_sign() {
        let dir = [0.6f32, 0.8, 0.0];
        let mut pos = Vec::new();
        let mut neg = Vec::new();
        for i in 0..40 {
            let s = 1.0 + (i % 5) as f32; // varying strength along dir
            let noise = [0.01 * ((i * 7 % 3) as f32 - 1.0), 0.0, 0.02 * ((i % 2) as f32)];
            neg.push(vec![1.0, 2.0, 3.0]);
            pos.push((0..3).map(|k| 1.0 + [0.0, 1.0, 2.0][k] + s * dir[k] + noise[k]).collect());
        }
        let v = pca_direction(&pos, &neg).unwrap();
        assert!(cosine(&v, &dir) > 0.999, "{v:?}");
        let v2 = pca_direction(&neg, &pos).unwrap();
        assert!(cosine(&v2, &dir) < -0.999, "sign must follow the positive side");
    }
}
