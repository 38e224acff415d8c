//! Exact t-SNE (van der Maaten & Hinton, 2008) for the small point sets of the paper's
//! Figure 3 (a few hundred difference vectors). Written here because no maintained
//! pure-Rust crate offers a seeded exact t-SNE; O(n^2) per iteration is fine at this size.

use faer::Mat;
use rand::SeedableRng;
use rand_distr::{Distribution, Normal};

use crate::error::{CoreError, Result};

/// t-SNE settings (scikit-learn's defaults where they apply).
#[derive(Debug, Clone)]
pub struct TsneOptions {
    pub perplexity: f64,
    pub iterations: usize,
    pub early_exaggeration: f64,
    pub seed: u64,
    /// Reduce to this many principal components first.
    pub pca_dims: usize,
}

impl Default for TsneOptions {
    fn default() -> Self {
        Self { perplexity: 30.0, iterations: 1000, early_exaggeration: 12.0, seed: 0, pca_dims: 50 }
    }
}

fn pca(points: &[Vec<f64>], k: usize) -> Result<Vec<Vec<f64>>> {
    let (n, d) = (points.len(), points[0].len());
    let mean: Vec<f64> = (0..d).map(|j| points.iter().map(|p| p[j]).sum::<f64>() / n as f64).collect();
    let x = Mat::from_fn(n, d, |i, j| points[i][j] - mean[j]);
    let svd = x.thin_svd().map_err(|e| CoreError::Numerical(format!("PCA: {e:?}")))?;
    let k = k.min(n).min(d);
    let (u, s) = (svd.U(), svd.S());
    Ok((0..n).map(|i| (0..k).map(|c| u[(i, c)] * s[c]).collect()).collect())
}

/// Conditional probabilities of row i with the bandwidth found by bisection on perplexity.
fn row_affinities(d2: &[f64], i: usize, perplexity: f64) -> Vec<f64> {
    let target = perplexity.ln();
    let (mut lo, mut hi, mut beta) = (0.0f64, f64::INFINITY, 1.0f64);
    let mut p = vec![0.0; d2.len()];
    for _ in 0..64 {
        let mut sum = 0.0;
        for (j, &d) in d2.iter().enumerate() {
            p[j] = if j == i { 0.0 } else { (-d * beta).exp() };
            sum += p[j];
        }
        let sum = sum.max(1e-300);
        let mut h = 0.0;
        for (j, &d) in d2.iter().enumerate() {
            if j != i {
                p[j] /= sum;
                h += beta * d * p[j];
            }
        }
        let entropy = h + sum.ln();
        if (entropy - target).abs() < 1e-5 {
            break;
        }
        if entropy > target {
            lo = beta;
            beta = if hi.is_finite() { (beta + hi) / 2.0 } else { beta * 2.0 };
        } else {
            hi = beta;
            beta = (beta + lo) / 2.0;
        }
    }
    p
}

/// 2-D embedding of `points` (each a vector of the same length).
pub fn tsne(points: &[Vec<f64>], opts: &TsneOptions) -> Result<Vec<[f64; 2]>> {
    let n = points.len();
    if n < 5 {
        return Err(CoreError::TooFew { what: "points of a t-SNE".into(), needed: 5, got: n });
    }
    let x = pca(points, opts.pca_dims)?;
    let perplexity = opts.perplexity.min((n as f64 - 1.0) / 3.0);
    let dist2 = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(u, v)| (u - v).powi(2)).sum::<f64>();
    let mut p = vec![0.0; n * n];
    for i in 0..n {
        let d2: Vec<f64> = (0..n).map(|j| dist2(&x[i], &x[j])).collect();
        let row = row_affinities(&d2, i, perplexity);
        p[i * n..(i + 1) * n].copy_from_slice(&row);
    }
    for i in 0..n {
        for j in i + 1..n {
            let s = ((p[i * n + j] + p[j * n + i]) / (2.0 * n as f64)).max(1e-12);
            p[i * n + j] = s;
            p[j * n + i] = s;
        }
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(opts.seed);
    let normal = Normal::new(0.0, 1e-4).map_err(|e| CoreError::Numerical(e.to_string()))?;
    let mut y: Vec<[f64; 2]> = (0..n).map(|_| [normal.sample(&mut rng), normal.sample(&mut rng)]).collect();
    let mut vel = vec![[0.0f64; 2]; n];
    let mut gains = vec![[1.0f64; 2]; n];
    let lr = (n as f64 / opts.early_exaggeration / 4.0).max(50.0);
    let mut num = vec![0.0; n * n];
    for it in 0..opts.iterations {
        let exag = if it < 250 { opts.early_exaggeration } else { 1.0 };
        let momentum = if it < 250 { 0.5 } else { 0.8 };
        let mut z = 0.0;
        for i in 0..n {
            for j in i + 1..n {
                let q = 1.0 / (1.0 + (y[i][0] - y[j][0]).powi(2) + (y[i][1] - y[j][1]).powi(2));
                num[i * n + j] = q;
                num[j * n + i] = q;
                z += 2.0 * q;
            }
        }
        for i in 0..n {
            let mut g = [0.0f64; 2];
            for j in 0..n {
                if i == j {
                    continue;
                }
                let q = num[i * n + j];
                let m = 4.0 * (exag * p[i * n + j] - q / z) * q;
                g[0] += m * (y[i][0] - y[j][0]);
                g[1] += m * (y[i][1] - y[j][1]);
            }
            for k in 0..2 {
                gains[i][k] = if (g[k] > 0.0) != (vel[i][k] > 0.0) { gains[i][k] + 0.2 } else { (gains[i][k] * 0.8).max(0.01) };
                vel[i][k] = momentum * vel[i][k] - lr * gains[i][k] * g[k];
            }
        }
        for i in 0..n {
            y[i][0] += vel[i][0];
            y[i][1] += vel[i][1];
        }
    }
    Ok(y)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn separates_well_separated_clusters() {
        let mut pts = Vec::new();
        for c in 0..3 {
            for i in 0..20 {
                let mut v = vec![0.0; 10];
                v[c] = 10.0;
                v[3 + (i % 7)] += 0.1 * (i as f64 / 20.0);
                pts.push(v);
            }
        }
        let y = tsne(&pts, &TsneOptions { iterations: 500, ..Default::default() }).unwrap();
        let centre = |c: usize| {
            let s = &y[c * 20..(c + 1) * 20];
            [s.iter().map(|p| p[0]).sum::<f64>() / 20.0, s.iter().map(|p| p[1]).sum::<f64>() / 20.0]
        };
        let spread = |c: usize| {
            let m = centre(c);
            y[c * 20..(c + 1) * 20].iter().map(|p| ((p[0] - m[0]).powi(2) + (p[1] - m[1]).powi(2)).sqrt()).fold(0.0, f64::max)
        };
        for a in 0..3 {
            for b in a + 1..3 {
                let (ca, cb) = (centre(a), centre(b));
                let d = ((ca[0] - cb[0]).powi(2) + (ca[1] - cb[1]).powi(2)).sqrt();
                assert!(d > spread(a) + spread(b), "clusters {a} and {b} overlap");
            }
        }
    }
}
