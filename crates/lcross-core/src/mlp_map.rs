//! The autoencoder map of Oozeer et al. (ICML 2025): a ReLU encoder and a linear decoder,
//! `map(x) = relu(x' W1 + b1) W2 + b2` on standardised states (`x' = (x - mean) / scale`,
//! the output scaled back), trained on the mean squared error with AdamW on candle, full
//! batch, from seeded initial weights: the same states and seed give the same map.
//!
//! A steering vector moves as the mean of `map(h + v) - map(h)` over the source states
//! the map was fitted on (kept in the map file as its anchors, at most [`MAX_ANCHORS`]);
//! the map's `T` is its Jacobian averaged over those states (exact for small vectors).

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::optim::{AdamW, Optimizer, ParamsAdamW};
use rand::SeedableRng;
use rand_distr::{Distribution, Normal};

use crate::error::{CoreError, Result};
use crate::maps::Rows;

/// Source states kept with the map to move vectors around.
pub const MAX_ANCHORS: usize = 256;
/// Optimiser steps (full batch).
pub const STEPS: usize = 600;
/// AdamW's learning rate.
pub const LEARNING_RATE: f64 = 3e-3;

/// A fitted autoencoder map (weights in standardised coordinates, f32).
#[derive(Debug, Clone)]
pub struct MlpMap {
    pub source_dim: usize,
    pub hidden: usize,
    pub target_dim: usize,
    /// (source_dim, hidden), row-major.
    pub w1: Vec<f32>,
    pub b1: Vec<f32>,
    /// (hidden, target_dim), row-major.
    pub w2: Vec<f32>,
    pub b2: Vec<f32>,
    pub x_mean: Vec<f32>,
    pub x_scale: Vec<f32>,
    pub y_mean: Vec<f32>,
    pub y_scale: Vec<f32>,
    /// Source states vectors are moved around, (n, source_dim) row-major.
    pub anchors: Vec<f32>,
}

fn candle(e: candle_core::Error) -> CoreError {
    CoreError::Numerical(format!("training the mlp map: {e}"))
}

/// Column means and scales (standard deviations; 1 where a column is constant).
fn standardiser(r: &Rows) -> (Vec<f32>, Vec<f32>) {
    let (n, d) = (r.n, r.d);
    let mut mean = vec![0f64; d];
    for row in r.data.chunks_exact(d) {
        mean.iter_mut().zip(row).for_each(|(m, x)| *m += x);
    }
    mean.iter_mut().for_each(|m| *m /= n as f64);
    let mut var = vec![0f64; d];
    for row in r.data.chunks_exact(d) {
        var.iter_mut().zip(row).zip(&mean).for_each(|((v, x), m)| *v += (x - m).powi(2));
    }
    let scale = var.iter().map(|v| (v / n as f64).sqrt()).map(|s| if s > 1e-12 { s } else { 1.0 }).map(|s| s as f32).collect();
    (mean.into_iter().map(|m| m as f32).collect(), scale)
}

fn standardised(r: &Rows, mean: &[f32], scale: &[f32]) -> Vec<f32> {
    r.data.iter().enumerate().map(|(k, &x)| ((x as f32) - mean[k % r.d]) / scale[k % r.d]).collect()
}

/// Seeded N(0, 1/fan_in) weights.
fn init(rng: &mut rand::rngs::StdRng, rows: usize, cols: usize) -> Vec<f32> {
    let normal = Normal::new(0.0, 1.0 / (rows as f64).sqrt()).expect("a positive standard deviation");
    (0..rows * cols).map(|_| normal.sample(rng) as f32).collect()
}

/// Fit the map `x -> y` with `hidden` units (default: the target's size) from `seed`.
pub fn fit(x: &Rows, y: &Rows, hidden: Option<usize>, seed: u64) -> Result<MlpMap> {
    if x.n != y.n {
        return Err(CoreError::SizeMismatch { what: "target states (paired with the source states)".into(), expected: x.n, got: y.n });
    }
    let (n, ds, dt) = (x.n, x.d, y.d);
    let h = hidden.unwrap_or(dt);
    if h == 0 || h > 1 << 16 {
        return Err(CoreError::BadValue { what: "mlp hidden units".into(), value: h.to_string(), expected: "1 to 65536".into() });
    }
    let (x_mean, x_scale) = standardiser(x);
    let (y_mean, y_scale) = standardiser(y);
    let dev = Device::Cpu;
    let xs = Tensor::from_vec(standardised(x, &x_mean, &x_scale), (n, ds), &dev).map_err(candle)?;
    let ys = Tensor::from_vec(standardised(y, &y_mean, &y_scale), (n, dt), &dev).map_err(candle)?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let var = |data: Vec<f32>, shape: (usize, usize)| Var::from_tensor(&Tensor::from_vec(data, shape, &dev)?);
    let w1 = var(init(&mut rng, ds, h), (ds, h)).map_err(candle)?;
    let b1 = Var::zeros(h, DType::F32, &dev).map_err(candle)?;
    let w2 = var(init(&mut rng, h, dt), (h, dt)).map_err(candle)?;
    let b2 = Var::zeros(dt, DType::F32, &dev).map_err(candle)?;
    let params = ParamsAdamW { lr: LEARNING_RATE, weight_decay: 0.0, ..ParamsAdamW::default() };
    let mut opt = AdamW::new(vec![w1.clone(), b1.clone(), w2.clone(), b2.clone()], params).map_err(candle)?;
    for _ in 0..STEPS {
        lcross_model::interrupt::check()?;
        let forward = || xs.matmul(w1.as_tensor())?.broadcast_add(b1.as_tensor())?.relu()?.matmul(w2.as_tensor())?.broadcast_add(b2.as_tensor());
        let pred = forward().map_err(candle)?;
        let loss = (pred - &ys).and_then(|d| d.sqr()).and_then(|d| d.mean_all()).map_err(candle)?;
        opt.backward_step(&loss).map_err(candle)?;
    }
    let flat = |v: &Var| v.as_tensor().flatten_all().and_then(|t| t.to_vec1::<f32>()).map_err(candle);
    let (w1, b1, w2, b2) = (flat(&w1)?, flat(&b1)?, flat(&w2)?, flat(&b2)?);
    if [&w1, &b1, &w2, &b2].iter().any(|w| w.iter().any(|x| !x.is_finite())) {
        return Err(CoreError::Numerical("the mlp map diverged (non-finite weights)".into()));
    }
    let keep = n.min(MAX_ANCHORS);
    let anchors = (0..keep).flat_map(|k| (0..ds).map(move |j| (k * n / keep, j))).map(|(i, j)| x.data[i * ds + j] as f32).collect();
    Ok(MlpMap { source_dim: ds, hidden: h, target_dim: dt, w1, b1, w2, b2, x_mean, x_scale, y_mean, y_scale, anchors })
}

impl MlpMap {
    /// `map(x)` for rows `x` ((n, source_dim) row-major), in the target's units.
    pub fn map_rows(&self, x: &[f32]) -> Result<Vec<f32>> {
        let (ds, h, dt) = (self.source_dim, self.hidden, self.target_dim);
        if !x.len().is_multiple_of(ds) {
            return Err(CoreError::SizeMismatch { what: "rows for the mlp map".into(), expected: ds, got: x.len() % ds });
        }
        let n = x.len() / ds;
        let mut out = vec![0f32; n * dt];
        let mut hid = vec![0f32; h];
        for i in 0..n {
            hid.copy_from_slice(&self.b1);
            for k in 0..ds {
                let xv = (x[i * ds + k] - self.x_mean[k]) / self.x_scale[k];
                if xv != 0.0 {
                    let row = &self.w1[k * h..(k + 1) * h];
                    hid.iter_mut().zip(row).for_each(|(a, w)| *a += xv * w);
                }
            }
            let o = &mut out[i * dt..(i + 1) * dt];
            o.copy_from_slice(&self.b2);
            for (u, &a) in hid.iter().enumerate() {
                if a > 0.0 {
                    let row = &self.w2[u * dt..(u + 1) * dt];
                    o.iter_mut().zip(row).for_each(|(y, w)| *y += a * w);
                }
            }
            for (j, y) in o.iter_mut().enumerate() {
                *y = *y * self.y_scale[j] + self.y_mean[j];
            }
        }
        Ok(out)
    }

    /// The vector `v` moved: the mean of `map(h + v) - map(h)` over the anchors.
    pub fn move_vector(&self, v: &[f32]) -> Result<Vec<f32>> {
        let ds = self.source_dim;
        if v.len() != ds {
            return Err(CoreError::SizeMismatch { what: "vector (the map's source size)".into(), expected: ds, got: v.len() });
        }
        let shifted: Vec<f32> = self.anchors.iter().enumerate().map(|(k, &a)| a + v[k % ds]).collect();
        let (a, b) = (self.map_rows(&shifted)?, self.map_rows(&self.anchors)?);
        let n = self.anchors.len() / ds;
        let dt = self.target_dim;
        Ok((0..dt).map(|j| ((0..n).map(|i| (a[i * dt + j] - b[i * dt + j]) as f64).sum::<f64>() / n.max(1) as f64) as f32).collect())
    }

    /// The Jacobian of the map averaged over the anchors, `(source_dim, target_dim)`:
    /// `diag(1/x_scale) W1 diag(mean relu') W2 diag(y_scale)`.
    pub fn mean_jacobian(&self) -> Vec<f64> {
        let (ds, h, dt) = (self.source_dim, self.hidden, self.target_dim);
        let n = self.anchors.len() / ds;
        let mut active = vec![0f64; h];
        for i in 0..n {
            for (u, a) in active.iter_mut().enumerate() {
                let pre: f32 = self.b1[u] + (0..ds).map(|k| (self.anchors[i * ds + k] - self.x_mean[k]) / self.x_scale[k] * self.w1[k * h + u]).sum::<f32>();
                if pre > 0.0 {
                    *a += 1.0;
                }
            }
        }
        active.iter_mut().for_each(|a| *a /= n.max(1) as f64);
        let mut j = vec![0f64; ds * dt];
        for k in 0..ds {
            for (u, act) in active.iter().enumerate() {
                let c = self.w1[k * h + u] as f64 * act / self.x_scale[k] as f64;
                if c != 0.0 {
                    for t in 0..dt {
                        j[k * dt + t] += c * self.w2[u * dt + t] as f64;
                    }
                }
            }
        }
        for k in 0..ds {
            for t in 0..dt {
                j[k * dt + t] *= self.y_scale[t] as f64;
            }
        }
        j
    }

    /// R^2 of the map on rows `x` against `y` (1 - SS_res / SS_tot about column means).
    pub fn r2(&self, x: &Rows, y: &Rows) -> Result<f64> {
        let xf: Vec<f32> = x.data.iter().map(|&v| v as f32).collect();
        let pred = self.map_rows(&xf)?;
        let dt = y.d;
        let mut means = vec![0f64; dt];
        for row in y.data.chunks_exact(dt) {
            means.iter_mut().zip(row).for_each(|(m, v)| *m += v / y.n as f64);
        }
        let (mut res, mut tot) = (0f64, 0f64);
        for i in 0..y.n {
            for j in 0..dt {
                res += (y.data[i * dt + j] - pred[i * dt + j] as f64).powi(2);
                tot += (y.data[i * dt + j] - means[j]).powi(2);
            }
        }
        Ok(if tot == 0.0 { f64::NAN } else { 1.0 - res / tot })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// splitmix-style pseudo-random numbers in [-1, 1).
    fn pseudo(k: u64) -> f64 {
        let mut z = k.wrapping_mul(0x9E3779B97F4A7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
    }

    fn rows(n: usize, d: usize, f: impl Fn(usize, usize) -> f64) -> Rows {
        Rows { n, d, data: (0..n * d).map(|k| f(k / d, k % d)).collect() }
    }

    /// States x and y = relu(x A) B + c (a relation an affine map cannot capture).
    fn data(n: usize) -> (Rows, Rows) {
        let (ds, dt, h) = (8, 6, 5);
        let x = rows(n, ds, |i, j| 2.0 * pseudo((i * 31 + j) as u64 + 1) + 5.0);
        let a = |j: usize, u: usize| pseudo(1000 + (j * h + u) as u64);
        let b = |u: usize, t: usize| pseudo(2000 + (u * dt + t) as u64);
        let y = rows(n, dt, |i, t| {
            (0..h).map(|u| (0..ds).map(|j| (x.data[i * ds + j] - 5.0) * a(j, u)).sum::<f64>().max(0.0) * b(u, t)).sum::<f64>() + 3.0 * t as f64
        });
        (x, y)
    }

    #[test]
    fn the_fit_is_deterministic_for_a_seed_and_captures_a_nonlinear_map() {
        let (x, y) = data(240);
        let m1 = fit(&x, &y, Some(32), 0).unwrap();
        let m2 = fit(&x, &y, Some(32), 0).unwrap();
        assert_eq!(m1.w1, m2.w1, "same states, same seed: same map");
        assert_eq!(m1.w2, m2.w2);
        let m3 = fit(&x, &y, Some(32), 1).unwrap();
        assert_ne!(m1.w1, m3.w1, "another seed: other initial weights");
        let r2 = m1.r2(&x, &y).unwrap();
        let (_, ols) = crate::maps::fit(&x, &y, &crate::maps::Estimator::Affine).unwrap();
        assert!(r2 > 0.95 && r2 > ols.train_r2 + 0.02, "mlp R^2 {r2}, affine {}", ols.train_r2);
    }

    /// The mean Jacobian against finite differences of the map at its anchors, and a
    /// small vector moved ~ v J.
    #[test]
    fn the_mean_jacobian_matches_finite_differences() {
        let (x, y) = data(120);
        let m = fit(&x, &y, Some(16), 0).unwrap();
        let (ds, dt) = (m.source_dim, m.target_dim);
        let j = m.mean_jacobian();
        let eps = 1e-3f32;
        for k in 0..ds {
            let mut v = vec![0f32; ds];
            v[k] = eps;
            let moved = m.move_vector(&v).unwrap();
            for t in 0..dt {
                let fd = moved[t] as f64 / eps as f64;
                assert!((fd - j[k * dt + t]).abs() < 2e-2 * (1.0 + j[k * dt + t].abs()), "J[{k},{t}] = {} vs finite difference {fd}", j[k * dt + t]);
            }
        }
    }
}
