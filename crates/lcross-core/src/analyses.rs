//! Comparing maps (paper's Table 4): SSIM of the matrices as images, mean absolute
//! difference of eigenvalues (singular values when not square), Frobenius distance.

use faer::Mat;
use serde::Serialize;

use crate::error::{CoreError, Result};

/// SSIM of two equally shaped matrices treated as grey images, as scikit-image's
/// `structural_similarity` with its defaults (7x7 uniform window, sample covariance,
/// K1 = 0.01, K2 = 0.03), `data_range` = the value range spanned by both matrices, mean
/// over all window positions that fit inside the matrix.
pub fn ssim(a: &Mat<f64>, b: &Mat<f64>) -> Result<f64> {
    let (r, c) = (a.nrows(), a.ncols());
    if (r, c) != (b.nrows(), b.ncols()) {
        return Err(CoreError::SizeMismatch {
            what: format!("SSIM of a {r}x{c} matrix with a {}x{} one (values)", b.nrows(), b.ncols()),
            expected: r * c,
            got: b.nrows() * b.ncols(),
        });
    }
    const W: usize = 7;
    if r < W || c < W {
        return Err(CoreError::TooFew { what: format!("rows and columns of SSIM's matrices ({W}x{W} windows)"), needed: W, got: r.min(c) });
    }
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for i in 0..r {
        for j in 0..c {
            lo = lo.min(a[(i, j)]).min(b[(i, j)]);
            hi = hi.max(a[(i, j)]).max(b[(i, j)]);
        }
    }
    let range = (hi - lo).max(1e-300);
    let (c1, c2) = ((0.01 * range).powi(2), (0.03 * range).powi(2));
    // Summed-area tables of a, b, a^2, b^2, ab.
    let sat = |f: &dyn Fn(usize, usize) -> f64| {
        let mut t = vec![0.0f64; (r + 1) * (c + 1)];
        for i in 0..r {
            let mut row = 0.0;
            for j in 0..c {
                row += f(i, j);
                t[(i + 1) * (c + 1) + j + 1] = t[i * (c + 1) + j + 1] + row;
            }
        }
        t
    };
    let sa = sat(&|i, j| a[(i, j)]);
    let sb = sat(&|i, j| b[(i, j)]);
    let saa = sat(&|i, j| a[(i, j)] * a[(i, j)]);
    let sbb = sat(&|i, j| b[(i, j)] * b[(i, j)]);
    let sab = sat(&|i, j| a[(i, j)] * b[(i, j)]);
    let rect = |t: &[f64], i: usize, j: usize| t[(i + W) * (c + 1) + j + W] - t[i * (c + 1) + j + W] - t[(i + W) * (c + 1) + j] + t[i * (c + 1) + j];
    let np = (W * W) as f64;
    let cov_norm = np / (np - 1.0);
    let mut total = 0.0;
    let mut count = 0usize;
    for i in 0..=r - W {
        for j in 0..=c - W {
            let (ma, mb) = (rect(&sa, i, j) / np, rect(&sb, i, j) / np);
            let va = cov_norm * (rect(&saa, i, j) / np - ma * ma);
            let vb = cov_norm * (rect(&sbb, i, j) / np - mb * mb);
            let vab = cov_norm * (rect(&sab, i, j) / np - ma * mb);
            total += ((2.0 * ma * mb + c1) * (2.0 * vab + c2)) / ((ma * ma + mb * mb + c1) * (va + vb + c2));
            count += 1;
        }
    }
    Ok(total / count as f64)
}

/// Singular values, descending.
pub fn singular_values(m: &Mat<f64>) -> Result<Vec<f64>> {
    m.singular_values().map_err(|e| CoreError::Numerical(format!("singular values: {e:?}")))
}

/// Mean absolute difference of the spectra: eigenvalues sorted by modulus for square
/// matrices (the difference of complex values, as a modulus), singular values otherwise.
pub fn spectral_difference(a: &Mat<f64>, b: &Mat<f64>) -> Result<f64> {
    if a.nrows() == a.ncols() && b.nrows() == b.ncols() && a.nrows() == b.nrows() {
        let eig = |m: &Mat<f64>| -> Result<Vec<(f64, f64)>> {
            let mut v: Vec<(f64, f64)> =
                m.eigenvalues().map_err(|e| CoreError::Numerical(format!("eigenvalues: {e:?}")))?.into_iter().map(|z| (z.re, z.im)).collect();
            v.sort_by(|x, y| (y.0.hypot(y.1)).total_cmp(&x.0.hypot(x.1)).then(y.0.total_cmp(&x.0)).then(y.1.total_cmp(&x.1)));
            Ok(v)
        };
        let (ea, eb) = (eig(a)?, eig(b)?);
        Ok(ea.iter().zip(&eb).map(|(x, y)| (x.0 - y.0).hypot(x.1 - y.1)).sum::<f64>() / ea.len() as f64)
    } else {
        let (sa, sb) = (singular_values(a)?, singular_values(b)?);
        let k = sa.len().min(sb.len());
        Ok(sa.iter().zip(&sb).take(k).map(|(x, y)| (x - y).abs()).sum::<f64>() / k as f64)
    }
}

/// Frobenius norm of `a - b`.
pub fn frobenius_distance(a: &Mat<f64>, b: &Mat<f64>) -> Result<f64> {
    if (a.nrows(), a.ncols()) != (b.nrows(), b.ncols()) {
        return Err(CoreError::SizeMismatch {
            what: "the Frobenius distance's second matrix (values)".into(),
            expected: a.nrows() * a.ncols(),
            got: b.nrows() * b.ncols(),
        });
    }
    Ok((a - b).norm_l2())
}

/// The three measures of Table 4.
#[derive(Debug, Clone, Serialize)]
pub struct MapComparison {
    pub ssim: f64,
    pub spectral_mean_abs_diff: f64,
    pub frobenius: f64,
}

/// Compare two maps.
pub fn compare(a: &Mat<f64>, b: &Mat<f64>) -> Result<MapComparison> {
    Ok(MapComparison { ssim: ssim(a, b)?, spectral_mean_abs_diff: spectral_difference(a, b)?, frobenius: frobenius_distance(a, b)? })
}

/// A seeded Gaussian matrix with the mean and standard deviation of the entries of `like`.
pub fn random_like(like: &Mat<f64>, seed: u64) -> Mat<f64> {
    use rand::SeedableRng;
    use rand_distr::{Distribution, Normal};
    let n = (like.nrows() * like.ncols()) as f64;
    let mean = (0..like.nrows()).flat_map(|i| (0..like.ncols()).map(move |j| (i, j))).map(|(i, j)| like[(i, j)]).sum::<f64>() / n;
    let var = (0..like.nrows()).flat_map(|i| (0..like.ncols()).map(move |j| (i, j))).map(|(i, j)| (like[(i, j)] - mean).powi(2)).sum::<f64>() / n;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let normal = Normal::new(mean, var.sqrt().max(1e-300)).expect("finite parameters");
    Mat::from_fn(like.nrows(), like.ncols(), |_, _| normal.sample(&mut rng))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(r: usize, c: usize, f: impl Fn(usize, usize) -> f64) -> Mat<f64> {
        Mat::from_fn(r, c, f)
    }

    #[test]
    fn ssim_of_identical_matrices_is_one_and_of_noise_is_small() {
        let a = m(20, 30, |i, j| ((i * 7 + j * 3) % 11) as f64);
        assert!((ssim(&a, &a).unwrap() - 1.0).abs() < 1e-12);
        let r = random_like(&a, 1);
        let s = ssim(&a, &r).unwrap();
        assert!(s.abs() < 0.2, "{s}");
    }

    #[test]
    fn ssim_matches_a_hand_computed_single_window() {
        // 7x7: one window; compare with the closed form.
        let a = m(7, 7, |i, j| (i + 2 * j) as f64);
        let b = m(7, 7, |i, j| (2 * i + j) as f64 + 1.0);
        let n = 49.0;
        let (av, bv): (Vec<f64>, Vec<f64>) = (0..49).map(|k| (a[(k / 7, k % 7)], b[(k / 7, k % 7)])).unzip();
        let (ma, mb) = (av.iter().sum::<f64>() / n, bv.iter().sum::<f64>() / n);
        let va = av.iter().map(|x| (x - ma).powi(2)).sum::<f64>() / (n - 1.0);
        let vb = bv.iter().map(|x| (x - mb).powi(2)).sum::<f64>() / (n - 1.0);
        let cov = av.iter().zip(&bv).map(|(x, y)| (x - ma) * (y - mb)).sum::<f64>() / (n - 1.0);
        let range = 19.0 - 0.0; // min 0 (a), max 19 (b: 2*6+6+1)
        let (c1, c2) = ((0.01f64 * range).powi(2), (0.03f64 * range).powi(2));
        let want = ((2.0 * ma * mb + c1) * (2.0 * cov + c2)) / ((ma * ma + mb * mb + c1) * (va + vb + c2));
        assert!((ssim(&a, &b).unwrap() - want).abs() < 1e-12);
    }

    #[test]
    fn spectra_and_frobenius() {
        let a = m(3, 3, |i, j| if i == j { (i + 1) as f64 } else { 0.0 });
        let b = m(3, 3, |i, j| if i == j { 2.0 * (i + 1) as f64 } else { 0.0 });
        assert!((spectral_difference(&a, &b).unwrap() - 2.0).abs() < 1e-9); // (1+2+3)/3
        assert!((frobenius_distance(&a, &b).unwrap() - 14f64.sqrt()).abs() < 1e-12);
        let c = m(2, 3, |i, j| if i == j { 3.0 } else { 0.0 });
        let d = m(2, 3, |i, j| if i == j { 1.0 } else { 0.0 });
        assert!((spectral_difference(&c, &d).unwrap() - 2.0).abs() < 1e-9);
    }
}
