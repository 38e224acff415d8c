//! How alike two models' representations of the same texts are: the alignment metrics of
//! Huh et al., "The Platonic Representation Hypothesis" (ICML 2024), with the conventions
//! of their reference code.
//!
//! Both sides are `(n, d)` states of the same `n` texts (the dimensions may differ). Every
//! metric first L2-normalises each state, then works on the inner-product kernels
//! `K = A A^T` and `L = B B^T`:
//! - mutual k-NN: the share of each text's `k` nearest neighbours (by inner product, the
//!   text itself excluded) that both sides agree on, averaged;
//! - CKA: `HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))` with the biased HSIC `tr(K H L H)`;
//! - unbiased CKA: the same with Song et al.'s unbiased HSIC (needs n >= 4);
//! - CKNNA: unbiased CKA restricted to the pairs that are among each other's `k` nearest
//!   neighbours on both sides (the kernels masked by the intersection of the k-NN masks);
//! - SVCCA: each side's columns centred and scaled (sample standard deviation), the top
//!   `cca_dim` left singular vectors kept, and the mean of the canonical correlations of
//!   the two subspaces (the singular values of `U_A^T U_B`, exact; the reference code
//!   fits scikit-learn's iterative CCA on a randomized SVD, which approximates the same).
//!
//! Unlike the reference code no `1e-6` is added to the denominators, so a representation
//! against itself (or a rotation of itself) gives exactly 1 up to rounding.

use faer::Mat;
use serde::Serialize;

use crate::error::{CoreError, Result};
use crate::maps::Rows;

/// Options of [`alignment`].
#[derive(Debug, Clone, Copy)]
pub struct SimilarityOptions {
    /// Neighbours per text for mutual k-NN and CKNNA (Huh et al.: 10).
    pub topk: usize,
    /// Singular directions kept per side for SVCCA (Huh et al.: 10).
    pub cca_dim: usize,
}

impl Default for SimilarityOptions {
    fn default() -> Self {
        Self { topk: 10, cca_dim: 10 }
    }
}

/// Every alignment metric of two representations of the same texts.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Alignment {
    pub mutual_knn: f64,
    pub cka: f64,
    pub unbiased_cka: f64,
    pub cknna: f64,
    pub svcca: f64,
    /// Texts compared.
    pub n: usize,
}

/// The alignment of `a` and `b` (row `i` of each: the state of text `i`).
pub fn alignment(a: &Rows, b: &Rows, opts: &SimilarityOptions) -> Result<Alignment> {
    let n = a.n;
    if b.n != n {
        return Err(CoreError::SizeMismatch { what: "texts on the two sides".into(), expected: n, got: b.n });
    }
    if n < 4 {
        return Err(CoreError::TooFew { what: "texts to compare representations (unbiased HSIC)".into(), needed: 4, got: n });
    }
    if opts.topk < 2 || opts.topk >= n {
        return Err(CoreError::BadValue { what: "topk".into(), value: opts.topk.to_string(), expected: format!("2 <= topk < n = {n}") });
    }
    if opts.cca_dim == 0 || opts.cca_dim > n.min(a.d).min(b.d) {
        return Err(CoreError::BadValue {
            what: "cca_dim".into(),
            value: opts.cca_dim.to_string(),
            expected: format!("1 <= cca_dim <= min(n, d_a, d_b) = {}", n.min(a.d).min(b.d)),
        });
    }
    let (an, bn) = (normalized(a, "first")?, normalized(b, "second")?);
    let k = &an * an.transpose();
    let l = &bn * bn.transpose();
    let knn_k = neighbours(&k, opts.topk);
    let knn_l = neighbours(&l, opts.topk);
    let mutual_knn = knn_k.iter().zip(&knn_l).map(|(x, y)| x.iter().filter(|j| y.contains(j)).count() as f64 / opts.topk as f64).sum::<f64>() / n as f64;
    let cka = ratio(hsic_biased(&k, &l), hsic_biased(&k, &k), hsic_biased(&l, &l));
    let unbiased_cka = ratio(hsic_unbiased(&k, &l), hsic_unbiased(&k, &k), hsic_unbiased(&l, &l));
    let masked =
        |m: &Mat<f64>, x: &[Vec<usize>], y: &[Vec<usize>]| Mat::from_fn(n, n, |i, j| if x[i].contains(&j) && y[i].contains(&j) { m[(i, j)] } else { 0.0 });
    let cknna = ratio(
        hsic_unbiased(&masked(&k, &knn_k, &knn_l), &masked(&l, &knn_k, &knn_l)),
        hsic_unbiased(&masked(&k, &knn_k, &knn_k), &masked(&k, &knn_k, &knn_k)),
        hsic_unbiased(&masked(&l, &knn_l, &knn_l), &masked(&l, &knn_l, &knn_l)),
    );
    let svcca = svcca(&an, &bn, opts.cca_dim)?;
    Ok(Alignment { mutual_knn, cka, unbiased_cka, cknna, svcca, n })
}

/// Rows scaled to unit L2 norm (a zero row is an error).
fn normalized(x: &Rows, side: &str) -> Result<Mat<f64>> {
    let mut m = Mat::from_fn(x.n, x.d, |i, j| x.data[i * x.d + j]);
    for i in 0..x.n {
        let norm = (0..x.d).map(|j| m[(i, j)] * m[(i, j)]).sum::<f64>().sqrt();
        if !(norm > 0.0 && norm.is_finite()) {
            return Err(CoreError::BadValue {
                what: format!("state {i} of the {side} side"),
                value: format!("norm {norm}"),
                expected: "a finite, non-zero state".into(),
            });
        }
        for j in 0..x.d {
            m[(i, j)] /= norm;
        }
    }
    Ok(m)
}

/// Each row's `k` largest entries' columns, the diagonal excluded (ties: lower index first).
fn neighbours(kernel: &Mat<f64>, k: usize) -> Vec<Vec<usize>> {
    let n = kernel.nrows();
    (0..n)
        .map(|i| {
            let mut order: Vec<usize> = (0..n).filter(|&j| j != i).collect();
            order.sort_by(|&x, &y| kernel[(i, y)].total_cmp(&kernel[(i, x)]).then(x.cmp(&y)));
            order.truncate(k);
            order
        })
        .collect()
}

fn ratio(kl: f64, kk: f64, ll: f64) -> f64 {
    let denominator = (kk * ll).sqrt();
    if denominator > 0.0 {
        kl / denominator
    } else {
        0.0
    }
}

/// `tr(K H L H)` with `H = I - 1/n` (the biased HSIC, unnormalised: the factor cancels in CKA).
fn hsic_biased(k: &Mat<f64>, l: &Mat<f64>) -> f64 {
    let n = k.nrows();
    let row_mean: Vec<f64> = (0..n).map(|i| (0..n).map(|j| k[(i, j)]).sum::<f64>() / n as f64).collect();
    let col_mean: Vec<f64> = (0..n).map(|j| (0..n).map(|i| k[(i, j)]).sum::<f64>() / n as f64).collect();
    let mean = row_mean.iter().sum::<f64>() / n as f64;
    let mut total = 0.0;
    for i in 0..n {
        for j in 0..n {
            // (H K H)_ij L_ji
            total += (k[(i, j)] - row_mean[i] - col_mean[j] + mean) * l[(j, i)];
        }
    }
    total
}

/// Song et al.'s unbiased HSIC (JMLR 2012, eq. 5) of `K` and `L` with zeroed diagonals.
fn hsic_unbiased(k: &Mat<f64>, l: &Mat<f64>) -> f64 {
    let m = k.nrows();
    let kt = |i: usize, j: usize| if i == j { 0.0 } else { k[(i, j)] };
    let lt = |i: usize, j: usize| if i == j { 0.0 } else { l[(i, j)] };
    let mut trace = 0.0;
    let (mut sum_k, mut sum_l) = (0.0, 0.0);
    let mut col_k = vec![0.0; m];
    let mut row_l = vec![0.0; m];
    for (i, row_sum) in row_l.iter_mut().enumerate() {
        for (j, col_sum) in col_k.iter_mut().enumerate() {
            trace += kt(i, j) * lt(j, i);
            sum_k += kt(i, j);
            sum_l += lt(i, j);
            *col_sum += kt(i, j);
            *row_sum += lt(i, j);
        }
    }
    // sum of all entries of K~ L~ = sum_c (column c of K~) . (row c of L~)
    let sum_product: f64 = col_k.iter().zip(&row_l).map(|(a, b)| a * b).sum();
    let mf = m as f64;
    (trace + sum_k * sum_l / ((mf - 1.0) * (mf - 2.0)) - 2.0 * sum_product / (mf - 2.0)) / (mf * (mf - 3.0))
}

/// Mean canonical correlation of the top `dim` singular subspaces of the standardised
/// representations.
fn svcca(a: &Mat<f64>, b: &Mat<f64>, dim: usize) -> Result<f64> {
    let ua = top_left_singular(&standardized(a), dim)?;
    let ub = top_left_singular(&standardized(b), dim)?;
    let m = ua.transpose() * &ub;
    let svd = m.thin_svd().map_err(|e| CoreError::Numerical(format!("SVD did not converge: {e:?}")))?;
    let s = svd.S();
    Ok((0..dim).map(|i| s[i].min(1.0)).sum::<f64>() / dim as f64)
}

/// Columns centred and divided by their sample standard deviation (+1e-8, as the reference).
fn standardized(x: &Mat<f64>) -> Mat<f64> {
    let (n, d) = (x.nrows(), x.ncols());
    let mut out = x.to_owned();
    for j in 0..d {
        let mean = (0..n).map(|i| x[(i, j)]).sum::<f64>() / n as f64;
        let var = (0..n).map(|i| (x[(i, j)] - mean).powi(2)).sum::<f64>() / (n as f64 - 1.0);
        let sd = var.sqrt() + 1e-8;
        for i in 0..n {
            out[(i, j)] = (x[(i, j)] - mean) / sd;
        }
    }
    out
}

fn top_left_singular(x: &Mat<f64>, dim: usize) -> Result<Mat<f64>> {
    let svd = x.thin_svd().map_err(|e| CoreError::Numerical(format!("SVD did not converge: {e:?}")))?;
    let u = svd.U();
    Ok(Mat::from_fn(x.nrows(), dim, |i, j| u[(i, j)]))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// splitmix64 of (seed, i, j) as a uniform value in [-1, 1): a fixed, well-spread sequence.
    fn pseudo(i: usize, j: usize, seed: u64) -> f64 {
        let mut z = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ ((i as u64) << 32 | j as u64);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
    }

    fn rows(n: usize, d: usize, seed: u64) -> Rows {
        Rows { n, d, data: (0..n * d).map(|k| pseudo(k / d, k % d, seed)).collect() }
    }

    #[test]
    fn a_representation_against_itself_and_a_rotation_of_itself_is_fully_aligned() {
        let a = rows(40, 16, 1);
        let same = alignment(&a, &a, &SimilarityOptions::default()).unwrap();
        for (name, v) in [("mutual_knn", same.mutual_knn), ("cka", same.cka), ("unbiased_cka", same.unbiased_cka), ("cknna", same.cknna), ("svcca", same.svcca)]
        {
            assert!((v - 1.0).abs() < 1e-9, "{name} of a representation with itself: {v}");
        }
        // An orthogonal map (a Householder reflection) keeps every inner product.
        let w: Vec<f64> = (0..16).map(|j| pseudo(99, j, 7)).collect();
        let ww: f64 = w.iter().map(|x| x * x).sum();
        let mut data = a.data.clone();
        for i in 0..40 {
            let row = &a.data[i * 16..(i + 1) * 16];
            let dot: f64 = row.iter().zip(&w).map(|(x, y)| x * y).sum();
            for j in 0..16 {
                data[i * 16 + j] = row[j] - 2.0 * dot / ww * w[j];
            }
        }
        let rotated = alignment(&a, &Rows { n: 40, d: 16, data }, &SimilarityOptions::default()).unwrap();
        // Kernel and neighbour metrics see only inner products; SVCCA scales each column by
        // its own deviation first, which a rotation changes (as in the reference code).
        for v in [rotated.mutual_knn, rotated.cka, rotated.unbiased_cka, rotated.cknna] {
            assert!((v - 1.0).abs() < 1e-9, "{rotated:?}");
        }
        assert!(rotated.svcca < 1.0 - 1e-6, "{rotated:?}");
    }

    #[test]
    fn unrelated_representations_are_far_less_aligned() {
        let x = alignment(&rows(60, 24, 1), &rows(60, 32, 2), &SimilarityOptions::default()).unwrap();
        assert!(x.unbiased_cka.abs() < 0.3 && x.mutual_knn < 0.5, "{x:?}");
    }

    #[test]
    fn bad_sizes_are_errors() {
        let opts = SimilarityOptions::default();
        assert!(alignment(&rows(20, 8, 1), &rows(21, 8, 1), &opts).is_err());
        assert!(alignment(&rows(3, 8, 1), &rows(3, 8, 1), &opts).is_err());
        assert!(alignment(&rows(12, 8, 1), &rows(12, 8, 1), &SimilarityOptions { topk: 12, cca_dim: 4 }).is_err());
        assert!(alignment(&rows(12, 8, 1), &rows(12, 8, 1), &SimilarityOptions { topk: 3, cca_dim: 9 }).is_err());
        let mut zero = rows(12, 8, 1);
        zero.data[..8].fill(0.0);
        assert!(alignment(&zero, &rows(12, 8, 2), &SimilarityOptions { topk: 3, cca_dim: 4 }).is_err());
    }
}
