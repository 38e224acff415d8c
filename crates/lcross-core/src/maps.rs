//! Linear maps between the hidden spaces of two models (L-Cross, Eq. 3.1), fitted in
//! f64 with faer, with diagnostics and the map artifact.
//!
//! `T = argmin ||Y - X T||`: X `(n, d_s)` holds source states, Y `(n, d_t)` target states
//! of the same texts; a source vector `v` transfers as `v T`.

use std::collections::BTreeMap;
use std::path::Path;

use faer::Mat;
use rand::SeedableRng;
use rand_distr::{Distribution, Normal};
use serde::{Deserialize, Serialize};

use crate::artifact;
use crate::error::{CoreError, Result};

/// How T is estimated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "lowercase")]
pub enum Estimator {
    /// Ordinary least squares by pseudo-inverse, `T = X^+ Y` (the paper; minimum-norm
    /// solution when X is rank-deficient or n < d_s).
    Ols,
    /// Ridge: `T = (X^T X + lambda I)^-1 X^T Y`; `lambda: None` = chosen by generalised
    /// cross-validation.
    Ridge { lambda: Option<f64> },
    /// Orthogonal Procrustes: `T = U V^T` from the SVD of `X^T Y` (semi-orthogonal when
    /// d_s != d_t).
    Procrustes,
    /// Seeded Gaussian entries scaled so that `||x T||` matches `||y||` on average (ablation).
    Random { seed: u64 },
    /// The identity (only when d_s == d_t: the "no T" ablation).
    Identity,
    /// Reduced-rank regression: the OLS map restricted to the `rank` leading directions
    /// of its fitted values, `T_r = T V_r V_r^T` with `V_r` the top right singular vectors
    /// of `X T`; `rank: None` = chosen on a held-out fifth of the rows (the rank of the
    /// best held-out R^2 among 1, 2, 4, ... and the full rank).
    #[serde(rename = "reduced-rank")]
    ReducedRank { rank: Option<usize> },
    /// The autoencoder map of Oozeer et al. (ReLU encoder, linear decoder; `hidden` units,
    /// default the target's size), trained with a seeded optimiser
    /// ([`crate::mlp_map`]). Vectors move as the mean of `map(h + v) - map(h)` over the
    /// source states it was fitted on; `T` is its mean Jacobian.
    Mlp { hidden: Option<usize> },
    /// OLS between the two models' input token embeddings, on the rows of the vocabulary
    /// strings both tokenizers share (Emb2Emb): no forward passes, no corpus. The rows
    /// are given to [`fit`] like states; the fit itself is OLS.
    Embedding,
    /// Affine least squares: OLS on centred states plus a bias, `y = x T + b` with
    /// `b = mean(y) - mean(x) T` (ConTrans, model stitching). A steering vector is a
    /// difference of states, so it moves through the linear part alone (`v T`); the bias
    /// only changes how states are mapped (and the R^2).
    Affine,
}

impl Estimator {
    /// Parse `ols`, `ridge`, `ridge:0.1`, `procrustes`, `affine`, `embedding`, `mlp`,
    /// `mlp:HIDDEN`, `random`, `random:SEED`, `identity`, `reduced-rank`, `reduced-rank:RANK`.
    pub fn parse(s: &str) -> Option<Self> {
        let (name, arg) = s.split_once(':').map_or((s, None), |(a, b)| (a, Some(b)));
        match name {
            "ols" | "pinv" => Some(Self::Ols),
            "ridge" => match arg {
                None => Some(Self::Ridge { lambda: None }),
                Some(x) => x.parse().ok().filter(|l: &f64| *l > 0.0).map(|l| Self::Ridge { lambda: Some(l) }),
            },
            "procrustes" => Some(Self::Procrustes),
            "random" => Some(Self::Random { seed: arg.map_or(Some(0), |x| x.parse().ok())? }),
            "identity" | "none" => Some(Self::Identity),
            "affine" => Some(Self::Affine),
            "embedding" => Some(Self::Embedding),
            "mlp" => match arg {
                None => Some(Self::Mlp { hidden: None }),
                Some(x) => x.parse().ok().filter(|h: &usize| (1..=1 << 16).contains(h)).map(|h| Self::Mlp { hidden: Some(h) }),
            },
            "reduced-rank" | "rrr" => match arg {
                None => Some(Self::ReducedRank { rank: None }),
                Some(x) => x.parse().ok().filter(|r: &usize| *r > 0).map(|r| Self::ReducedRank { rank: Some(r) }),
            },
            _ => None,
        }
    }
}

/// A dense row-major f64 matrix with its shape (rows of states).
#[derive(Debug, Clone)]
pub struct Rows {
    pub n: usize,
    pub d: usize,
    pub data: Vec<f64>,
}

impl Rows {
    /// From rows of f32 (all the same length).
    pub fn from_f32(rows: &[Vec<f32>]) -> Result<Self> {
        let n = rows.len();
        let d = rows.first().map_or(0, |r| r.len());
        if n == 0 || d == 0 {
            return Err(CoreError::Empty { what: "states to fit a map on".into() });
        }
        let mut data = Vec::with_capacity(n * d);
        for (i, r) in rows.iter().enumerate() {
            if r.len() != d {
                return Err(CoreError::SizeMismatch { what: format!("state {i}"), expected: d, got: r.len() });
            }
            if let Some(j) = r.iter().position(|x| !x.is_finite()) {
                return Err(CoreError::NonFinite { what: format!("state {i} (value {j})") });
            }
            data.extend(r.iter().map(|x| *x as f64));
        }
        Ok(Self { n, d, data })
    }
    /// From `n` rows of `d` f64 values, row-major (`data.len() == n * d`).
    pub fn from_f64(n: usize, d: usize, data: Vec<f64>) -> Result<Self> {
        if n == 0 || d == 0 {
            return Err(CoreError::Empty { what: "states to fit a map on".into() });
        }
        if data.len() != n * d {
            return Err(CoreError::SizeMismatch { what: format!("values of {n} rows of {d}"), expected: n * d, got: data.len() });
        }
        if let Some(i) = data.iter().position(|x| !x.is_finite()) {
            return Err(CoreError::NonFinite { what: format!("state {} (value {})", i / d, i % d) });
        }
        Ok(Self { n, d, data })
    }

    fn mat(&self) -> Mat<f64> {
        Mat::from_fn(self.n, self.d, |i, j| self.data[i * self.d + j])
    }
    fn select(&self, idx: &[usize]) -> Self {
        let mut data = Vec::with_capacity(idx.len() * self.d);
        for &i in idx {
            data.extend_from_slice(&self.data[i * self.d..(i + 1) * self.d]);
        }
        Self { n: idx.len(), d: self.d, data }
    }
}

/// Fit diagnostics stored with the map.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FitDiagnostics {
    pub n: usize,
    pub source_dim: usize,
    pub target_dim: usize,
    /// Numerical rank of X.
    pub rank: usize,
    /// n <= d_s and X has full row rank: OLS interpolates (X T = Y), and any vector in the
    /// row span of X (e.g. a mean difference of corpus texts) transfers to exactly what
    /// the target's states of the same texts give.
    pub interpolating: bool,
    /// R^2 of the fit on its own data (1 - SS_res / SS_tot, SS_tot about column means).
    pub train_r2: f64,
    /// R^2 on a held-out 20% when the map is refitted on the other 80% (None for n < 10).
    pub heldout_r2: Option<f64>,
    /// Ridge: the lambda used.
    pub lambda: Option<f64>,
    /// Reduced-rank: the rank of the map (given, or chosen on held-out rows).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub map_rank: Option<usize>,
    /// Free parameters of the map: `d_s d_t` for the linear families (the rank's
    /// `r (d_s + d_t)` for reduced-rank), plus `d_t` for the affine bias, the weights and
    /// biases of the mlp. 0 for the random and identity maps (nothing is fitted).
    #[serde(default)]
    pub parameters: usize,
    /// Seconds spent fitting T.
    pub seconds: f64,
    /// Seconds spent on the diagnostics (R^2, held-out refit).
    #[serde(default)]
    pub diagnostics_seconds: f64,
}

fn thin_svd(x: &Mat<f64>) -> Result<(Mat<f64>, Vec<f64>, Mat<f64>)> {
    let svd = x.thin_svd().map_err(|e| CoreError::Numerical(format!("SVD did not converge: {e:?}")))?;
    let s: Vec<f64> = (0..svd.S().dim()).map(|i| svd.S()[i]).collect();
    Ok((svd.U().to_owned(), s, svd.V().to_owned()))
}

/// Singular values below this are treated as zero (numpy's lstsq / pinv convention).
fn rank_tolerance(s: &[f64], n: usize, d: usize) -> f64 {
    s.first().copied().unwrap_or(0.0) * (n.max(d) as f64) * f64::EPSILON
}

/// `V diag(f(s)) U^T Y` for a spectral filter f.
fn spectral_solve(u: &Mat<f64>, s: &[f64], v: &Mat<f64>, y: &Mat<f64>, filter: impl Fn(f64) -> f64) -> Mat<f64> {
    let uty = u.transpose() * y; // (k, d_t)
    let scaled = Mat::from_fn(uty.nrows(), uty.ncols(), |i, j| uty[(i, j)] * filter(s[i]));
    v * &scaled
}

fn r2(x: &Mat<f64>, y: &Mat<f64>, t: &Mat<f64>, bias: Option<&[f64]>) -> f64 {
    let mut pred = x * t;
    if let Some(b) = bias {
        for i in 0..pred.nrows() {
            for (j, bj) in b.iter().enumerate() {
                pred[(i, j)] += bj;
            }
        }
    }
    let (n, d) = (y.nrows(), y.ncols());
    let mut ss_res = 0.0;
    let mut ss_tot = 0.0;
    for j in 0..d {
        let mean = (0..n).map(|i| y[(i, j)]).sum::<f64>() / n as f64;
        for i in 0..n {
            ss_res += (y[(i, j)] - pred[(i, j)]).powi(2);
            ss_tot += (y[(i, j)] - mean).powi(2);
        }
    }
    if ss_tot == 0.0 {
        f64::NAN
    } else {
        1.0 - ss_res / ss_tot
    }
}

/// T, the rank of X, ridge's lambda, reduced-rank's rank and the affine map's bias.
type RawFit = (Mat<f64>, usize, Option<f64>, Option<usize>, Option<Vec<f64>>);

/// Column means of `m`.
fn column_means(m: &Mat<f64>) -> Vec<f64> {
    (0..m.ncols()).map(|j| (0..m.nrows()).map(|i| m[(i, j)]).sum::<f64>() / m.nrows().max(1) as f64).collect()
}

/// `m` with `means` subtracted from its columns.
fn centred(m: &Mat<f64>, means: &[f64]) -> Mat<f64> {
    Mat::from_fn(m.nrows(), m.ncols(), |i, j| m[(i, j)] - means[j])
}

fn fit_raw(x: &Mat<f64>, y: &Mat<f64>, est: &Estimator) -> Result<RawFit> {
    let (n, ds, dt) = (x.nrows(), x.ncols(), y.ncols());
    match est {
        Estimator::Ols | Estimator::Embedding => {
            let (u, s, v) = thin_svd(x)?;
            let tol = rank_tolerance(&s, n, ds);
            let rank = s.iter().filter(|&&x| x > tol).count();
            Ok((spectral_solve(&u, &s, &v, y, |si| if si > tol { 1.0 / si } else { 0.0 }), rank, None, None, None))
        }
        Estimator::Ridge { lambda } => {
            let (u, s, v) = thin_svd(x)?;
            let tol = rank_tolerance(&s, n, ds);
            let rank = s.iter().filter(|&&x| x > tol).count();
            let lam = match lambda {
                Some(l) => *l,
                None => choose_lambda(&u, &s, y),
            };
            Ok((spectral_solve(&u, &s, &v, y, |si| si / (si * si + lam)), rank, Some(lam), None, None))
        }
        Estimator::Procrustes => {
            // Only the rank of X is reported: its singular values suffice (no vectors).
            let s = x.singular_values().map_err(|e| CoreError::Numerical(format!("SVD did not converge: {e:?}")))?;
            let rank = s.iter().filter(|&&v| v > rank_tolerance(&s, n, ds)).count();
            let m = x.transpose() * y; // (d_s, d_t)
            let (u, _, v) = thin_svd(&m)?;
            Ok((&u * v.transpose(), rank, None, None, None))
        }
        Estimator::Random { seed } => {
            let mean_sq = |m: &Mat<f64>| (0..m.nrows()).map(|i| (0..m.ncols()).map(|j| m[(i, j)].powi(2)).sum::<f64>()).sum::<f64>() / m.nrows() as f64;
            let sigma = (mean_sq(y) / (dt as f64 * mean_sq(x).max(1e-300))).sqrt();
            let mut rng = rand::rngs::StdRng::seed_from_u64(*seed);
            let normal = Normal::new(0.0, sigma.max(1e-300)).map_err(|e| CoreError::Numerical(e.to_string()))?;
            Ok((Mat::from_fn(ds, dt, |_, _| normal.sample(&mut rng)), 0, None, None, None))
        }
        Estimator::Identity => {
            if ds != dt {
                return Err(CoreError::SizeMismatch { what: "the identity map's target hidden size".into(), expected: ds, got: dt });
            }
            Ok((Mat::from_fn(ds, dt, |i, j| if i == j { 1.0 } else { 0.0 }), 0, None, None, None))
        }
        Estimator::ReducedRank { rank } => {
            let (t, x_rank, _, _, _) = fit_raw(x, y, &Estimator::Ols)?;
            let r = match rank {
                Some(r) => *r,
                None => choose_rank(x, y)?,
            };
            let (t, r) = reduce_rank(x, &t, r)?;
            Ok((t, x_rank, None, Some(r), None))
        }
        Estimator::Mlp { .. } => Err(CoreError::BadValue {
            what: "estimator".into(),
            value: "mlp".into(),
            expected: "a linear estimator here: the mlp map is fitted by fit_mlp".into(),
        }),
        Estimator::Affine => {
            let (mx, my) = (column_means(x), column_means(y));
            let (t, rank, _, _, _) = fit_raw(&centred(x, &mx), &centred(y, &my), &Estimator::Ols)?;
            let bias: Vec<f64> = (0..dt).map(|j| my[j] - (0..ds).map(|i| mx[i] * t[(i, j)]).sum::<f64>()).collect();
            Ok((t, rank, None, None, Some(bias)))
        }
    }
}

/// `T V_r V_r^T` with `V_r` the top `r` right singular vectors of `X T` (r capped at the
/// number there are); the rank used.
fn reduce_rank(x: &Mat<f64>, t: &Mat<f64>, r: usize) -> Result<(Mat<f64>, usize)> {
    let (_, s, v) = thin_svd(&(x * t))?;
    let r = r.min(s.len()).max(1);
    let vr = Mat::from_fn(v.nrows(), r, |i, j| v[(i, j)]);
    Ok((t * (&vr * vr.transpose()), r))
}

/// The rank of the best held-out R^2 (every 5th row held out) among 1, 2, 4, ... and the
/// full rank of the fitted values; ties go to the smaller rank.
fn choose_rank(x: &Mat<f64>, y: &Mat<f64>) -> Result<usize> {
    let n = x.nrows();
    let full = x.ncols().min(y.ncols()).min(n);
    if n < 10 {
        return Ok(full);
    }
    let (train, test) = split(n);
    let rows = |m: &Mat<f64>, idx: &[usize]| Mat::from_fn(idx.len(), m.ncols(), |i, j| m[(idx[i], j)]);
    let (xt, yt, xh, yh) = (rows(x, &train), rows(y, &train), rows(x, &test), rows(y, &test));
    let (t, _, _, _, _) = fit_raw(&xt, &yt, &Estimator::Ols)?;
    let mut candidates: Vec<usize> = std::iter::successors(Some(1usize), |r| r.checked_mul(2)).take_while(|&r| r < full).collect();
    candidates.push(full);
    let mut best = (f64::NEG_INFINITY, full);
    for r in candidates {
        let (tr, _) = reduce_rank(&xt, &t, r)?;
        let score = r2(&xh, &yh, &tr, None);
        if score > best.0 + 1e-12 {
            best = (score, r);
        }
    }
    Ok(best.1)
}

/// Held-out split: every 5th row.
fn split(n: usize) -> (Vec<usize>, Vec<usize>) {
    (0..n).partition(|i| i % 5 != 4)
}

fn to_mat(r: &Rows) -> Mat<f64> {
    r.mat()
}

/// Ridge lambda by generalised cross-validation (Golub, Heath & Wahba 1979) over a grid
/// relative to s_max^2: GCV(l) = n ||(I - H_l) Y||^2 / (n - tr H_l)^2 with the hat
/// matrix H_l = U diag(s^2 / (s^2 + l)) U^T. It uses only the rows it is given, so the
/// held-out R^2 of [`fit`] (which refits on the training split) is scored on rows that
/// never chose lambda.
fn choose_lambda(u: &Mat<f64>, s: &[f64], y: &Mat<f64>) -> f64 {
    let n = y.nrows() as f64;
    let smax2 = s.first().copied().unwrap_or(1.0).powi(2).max(1e-300);
    let grid: Vec<f64> = (-8..=0).map(|k| smax2 * 10f64.powi(k)).collect();
    let uty = u.transpose() * y;
    let proj: Vec<f64> = (0..uty.nrows()).map(|i| (0..uty.ncols()).map(|j| uty[(i, j)].powi(2)).sum()).collect();
    let total: f64 = (0..y.nrows()).map(|i| (0..y.ncols()).map(|j| y[(i, j)].powi(2)).sum::<f64>()).sum();
    let outside = (total - proj.iter().sum::<f64>()).max(0.0);
    let mut best = (f64::INFINITY, grid[grid.len() / 2]);
    for &lam in &grid {
        let f: Vec<f64> = s.iter().map(|&si| si * si / (si * si + lam)).collect();
        let rss = outside + f.iter().zip(&proj).map(|(fi, p)| (1.0 - fi).powi(2) * p).sum::<f64>();
        let dof = n - f.iter().sum::<f64>();
        if dof <= 1e-9 {
            continue;
        }
        let gcv = n * rss / (dof * dof);
        if gcv < best.0 {
            best = (gcv, lam);
        }
    }
    best.1
}

/// Fit T on paired states, with diagnostics (the affine map's bias dropped: see
/// [`fit_with_bias`]).
pub fn fit(x: &Rows, y: &Rows, est: &Estimator) -> Result<(Mat<f64>, FitDiagnostics)> {
    let (t, _, d) = fit_with_bias(x, y, est)?;
    Ok((t, d))
}

/// Fit T (and, for [`Estimator::Affine`], its bias) on paired states, with diagnostics.
pub fn fit_with_bias(x: &Rows, y: &Rows, est: &Estimator) -> Result<(Mat<f64>, Option<Vec<f64>>, FitDiagnostics)> {
    if x.n != y.n {
        return Err(CoreError::SizeMismatch { what: "target states (one per source state: they are paired)".into(), expected: x.n, got: y.n });
    }
    let start = std::time::Instant::now();
    let (xm, ym) = (to_mat(x), to_mat(y));
    let (t, rank, lambda, map_rank, bias) = fit_raw(&xm, &ym, est)?;
    let fit_seconds = start.elapsed().as_secs_f64();
    let diag_start = std::time::Instant::now();
    let train_r2 = r2(&xm, &ym, &t, bias.as_deref());
    let heldout_r2 = if x.n >= 10 {
        let (tr, te) = split(x.n);
        let (xt, yt) = (to_mat(&x.select(&tr)), to_mat(&y.select(&tr)));
        // Ridge without a given lambda chooses it again on the training rows alone.
        let (t_tr, _, _, _, b_tr) = fit_raw(&xt, &yt, est)?;
        Some(r2(&to_mat(&x.select(&te)), &to_mat(&y.select(&te)), &t_tr, b_tr.as_deref()))
    } else {
        None
    };
    let rank_full = if matches!(est, Estimator::Random { .. } | Estimator::Identity) {
        let (_, s, _) = thin_svd(&xm)?;
        s.iter().filter(|&&v| v > rank_tolerance(&s, x.n, x.d)).count()
    } else {
        rank
    };
    let diag = FitDiagnostics {
        n: x.n,
        source_dim: x.d,
        target_dim: y.d,
        rank: rank_full,
        interpolating: x.n <= x.d && rank_full == x.n,
        train_r2,
        heldout_r2,
        lambda,
        map_rank,
        parameters: match est {
            Estimator::Random { .. } | Estimator::Identity => 0,
            Estimator::ReducedRank { .. } => map_rank.unwrap_or(0) * (x.d + y.d),
            Estimator::Affine => x.d * y.d + y.d,
            _ => x.d * y.d,
        },
        seconds: fit_seconds,
        diagnostics_seconds: diag_start.elapsed().as_secs_f64(),
    };
    Ok((t, bias, diag))
}

/// Fit the autoencoder map (seed 0), with diagnostics as [`fit`] gives them (R^2 of the
/// map itself; held out: refitted on 80% of the rows, scored on the rest). `T` is the
/// map's mean Jacobian.
pub fn fit_mlp(x: &Rows, y: &Rows, hidden: Option<usize>) -> Result<(Mat<f64>, crate::mlp_map::MlpMap, FitDiagnostics)> {
    let start = std::time::Instant::now();
    let mlp = crate::mlp_map::fit(x, y, hidden, 0)?;
    let seconds = start.elapsed().as_secs_f64();
    let diag_start = std::time::Instant::now();
    let train_r2 = mlp.r2(x, y)?;
    let heldout_r2 = if x.n >= 10 {
        let (tr, te) = split(x.n);
        let held = crate::mlp_map::fit(&x.select(&tr), &y.select(&tr), hidden, 0)?;
        Some(held.r2(&x.select(&te), &y.select(&te))?)
    } else {
        None
    };
    let (_, s, _) = thin_svd(&x.mat())?;
    let rank = s.iter().filter(|&&v| v > rank_tolerance(&s, x.n, x.d)).count();
    let jac = mlp.mean_jacobian();
    let t = Mat::from_fn(x.d, y.d, |i, j| jac[i * y.d + j]);
    let diag = FitDiagnostics {
        n: x.n,
        source_dim: x.d,
        target_dim: y.d,
        rank,
        interpolating: false,
        train_r2,
        heldout_r2,
        lambda: None,
        map_rank: None,
        parameters: mlp.w1.len() + mlp.b1.len() + mlp.w2.len() + mlp.b2.len(),
        seconds,
        diagnostics_seconds: diag_start.elapsed().as_secs_f64(),
    };
    Ok((t, mlp, diag))
}

/// `v T` for a row vector `v`.
pub fn apply(t: &Mat<f64>, v: &[f32]) -> Result<Vec<f32>> {
    if v.len() != t.nrows() {
        return Err(CoreError::SizeMismatch { what: "vector (the map's source size)".into(), expected: t.nrows(), got: v.len() });
    }
    Ok((0..t.ncols()).map(|j| (0..t.nrows()).map(|i| v[i] as f64 * t[(i, j)]).sum::<f64>() as f32).collect())
}

/// Metadata of a map file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MapMetadata {
    pub lcross_version: String,
    pub source_model_id: String,
    pub source_model_sha256: String,
    pub target_model_id: String,
    pub target_model_sha256: String,
    pub source_layer: usize,
    pub target_layer: usize,
    pub estimator: Estimator,
    pub corpus: String,
    pub corpus_sha256: String,
    pub diagnostics: FitDiagnostics,
    /// Cosine between the transferred and the target's own vector, when one was given.
    #[serde(default)]
    pub native_cosine: Option<f64>,
    #[serde(default)]
    pub native_vector: Option<String>,
    /// Hook points of the source and target states (`resid_post` when absent: maps
    /// written before hook points existed).
    #[serde(default, skip_serializing_if = "crate::steering::is_resid_post")]
    pub source_hook: lcross_model::HookPoint,
    #[serde(default, skip_serializing_if = "crate::steering::is_resid_post")]
    pub target_hook: lcross_model::HookPoint,
}

/// A fitted map with its provenance.
#[derive(Debug, Clone)]
pub struct LinearMap {
    pub metadata: MapMetadata,
    pub t: Mat<f64>,
    /// The bias of an affine map (`y = x T + b`; tensor `b`), None for linear ones.
    /// Vectors move through `T` alone.
    pub bias: Option<Vec<f64>>,
    /// The autoencoder of an `mlp` map (tensors `mlp.*`): vectors move through it, not `T`.
    pub mlp: Option<crate::mlp_map::MlpMap>,
}

impl LinearMap {
    /// A steering vector moved through the map: `v T`, or for an `mlp` map the mean of
    /// `map(h + v) - map(h)` over its anchor states.
    pub fn move_vector(&self, v: &[f32]) -> Result<Vec<f32>> {
        match &self.mlp {
            Some(m) => m.move_vector(v),
            None => apply(&self.t, v),
        }
    }
}

impl LinearMap {
    /// Save as safetensors (`T`, shape `(d_s, d_t)`, f32) + metadata, atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let (r, c) = (self.t.nrows(), self.t.ncols());
        let mut data = Vec::with_capacity(r * c);
        for i in 0..r {
            for j in 0..c {
                data.push(self.t[(i, j)] as f32);
            }
        }
        if data.iter().any(|x| !x.is_finite()) {
            return Err(CoreError::Numerical("the fitted map has non-finite entries".into()));
        }
        let mut tensors: BTreeMap<String, (Vec<usize>, Vec<f32>)> = [("T".to_string(), (vec![r, c], data))].into_iter().collect();
        if let Some(b) = &self.bias {
            let b: Vec<f32> = b.iter().map(|&x| x as f32).collect();
            if b.len() != c || b.iter().any(|x| !x.is_finite()) {
                return Err(CoreError::Numerical(format!("the map's bias has {} values (expected {c}) or non-finite ones", b.len())));
            }
            tensors.insert("b".into(), (vec![c], b));
        }
        if let Some(m) = &self.mlp {
            let (ds, h, dt) = (m.source_dim, m.hidden, m.target_dim);
            let parts: [(&str, Vec<usize>, &Vec<f32>); 9] = [
                ("mlp.w1", vec![ds, h], &m.w1),
                ("mlp.b1", vec![h], &m.b1),
                ("mlp.w2", vec![h, dt], &m.w2),
                ("mlp.b2", vec![dt], &m.b2),
                ("mlp.x_mean", vec![ds], &m.x_mean),
                ("mlp.x_scale", vec![ds], &m.x_scale),
                ("mlp.y_mean", vec![dt], &m.y_mean),
                ("mlp.y_scale", vec![dt], &m.y_scale),
                ("mlp.anchors", vec![m.anchors.len() / ds.max(1), ds], &m.anchors),
            ];
            for (name, shape, data) in parts {
                tensors.insert(name.into(), (shape, data.clone()));
            }
        }
        artifact::save(path, &tensors, &self.metadata)
    }

    /// Load and validate a map file.
    pub fn load(path: &Path) -> Result<Self> {
        let (tensors, metadata): (artifact::Tensors, MapMetadata) = artifact::load(path)?;
        let (shape, data) = tensors.get("T").ok_or_else(|| CoreError::parse(path, None, "no tensor `T`: not a map file"))?;
        let d = &metadata.diagnostics;
        if shape.as_slice() != [d.source_dim, d.target_dim] {
            return Err(CoreError::parse(path, None, format!("T has shape {shape:?}, metadata says ({}, {})", d.source_dim, d.target_dim)));
        }
        if let Some(i) = data.iter().position(|x| !x.is_finite()) {
            return Err(CoreError::parse(path, None, format!("T has a non-finite value at ({}, {})", i / shape[1].max(1), i % shape[1].max(1))));
        }
        let t = Mat::from_fn(shape[0], shape[1], |i, j| data[i * shape[1] + j] as f64);
        let bias = match tensors.get("b") {
            None => None,
            Some((shape, b)) if shape.as_slice() == [d.target_dim] && b.iter().all(|x| x.is_finite()) => Some(b.iter().map(|&x| x as f64).collect()),
            Some((shape, _)) => {
                return Err(CoreError::parse(path, None, format!("bias `b` has shape {shape:?} (expected [{}]) or a non-finite value", d.target_dim)))
            }
        };
        let mlp = if matches!(metadata.estimator, Estimator::Mlp { .. }) { Some(load_mlp(path, &tensors, d.source_dim, d.target_dim)?) } else { None };
        Ok(Self { metadata, t, bias, mlp })
    }
}

/// The autoencoder of an `mlp` map file, every tensor's shape checked.
fn load_mlp(path: &Path, tensors: &artifact::Tensors, ds: usize, dt: usize) -> Result<crate::mlp_map::MlpMap> {
    let get = |name: &str| tensors.get(name).ok_or_else(|| CoreError::parse(path, None, format!("an mlp map without tensor `{name}`")));
    let (w1_shape, w1) = get("mlp.w1")?;
    let h = match w1_shape.as_slice() {
        [s, h] if *s == ds && *h > 0 => *h,
        other => return Err(CoreError::parse(path, None, format!("`mlp.w1` has shape {other:?}, expected [{ds}, hidden]"))),
    };
    let (anchor_shape, anchors) = get("mlp.anchors")?;
    let expected: [(&str, Vec<usize>); 7] = [
        ("mlp.b1", vec![h]),
        ("mlp.w2", vec![h, dt]),
        ("mlp.b2", vec![dt]),
        ("mlp.x_mean", vec![ds]),
        ("mlp.x_scale", vec![ds]),
        ("mlp.y_mean", vec![dt]),
        ("mlp.y_scale", vec![dt]),
    ];
    let mut data = Vec::new();
    for (name, shape) in expected {
        let (s, v) = get(name)?;
        if *s != shape {
            return Err(CoreError::parse(path, None, format!("`{name}` has shape {s:?}, expected {shape:?}")));
        }
        data.push(v.clone());
    }
    if anchor_shape.len() != 2 || anchor_shape[1] != ds || anchor_shape[0] == 0 {
        return Err(CoreError::parse(path, None, format!("`mlp.anchors` has shape {anchor_shape:?}, expected [n, {ds}]")));
    }
    let all = [w1, anchors].into_iter().chain(data.iter());
    for v in all {
        if v.iter().any(|x| !x.is_finite()) {
            return Err(CoreError::parse(path, None, "an mlp tensor has a non-finite value"));
        }
    }
    if data[4].iter().chain(&data[6]).any(|&s| s == 0.0) {
        return Err(CoreError::parse(path, None, "an mlp scale is 0"));
    }
    let mut it = data.into_iter();
    let mut next = || it.next().expect("seven tensors");
    Ok(crate::mlp_map::MlpMap {
        source_dim: ds,
        hidden: h,
        target_dim: dt,
        w1: w1.clone(),
        b1: next(),
        w2: next(),
        b2: next(),
        x_mean: next(),
        x_scale: next(),
        y_mean: next(),
        y_scale: next(),
        anchors: anchors.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rows_from(n: usize, d: usize, f: impl Fn(usize, usize) -> f64) -> Rows {
        Rows { n, d, data: (0..n * d).map(|k| f(k / d, k % d)).collect() }
    }

    /// splitmix64 of (i, j, s) mapped to [-1, 1).
    fn pseudo(i: usize, j: usize, s: u64) -> f64 {
        let mut z = (i as u64).wrapping_mul(0x9E3779B97F4A7C15) ^ (j as u64).wrapping_mul(0xBF58476D1CE4E5B9) ^ s.wrapping_mul(0x94D049BB133111EB);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
        z ^= z >> 31;
        ((z >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(16))]
        #[test]
        fn ols_recovers_a_known_linear_map(n in 12usize..40, ds in 2usize..8, dt in 2usize..8, seed in 0u64..1000) {
            prop_assume!(n > ds + 2);
            let x = rows_from(n, ds, |i, j| pseudo(i, j, seed));
            let t_true = Mat::from_fn(ds, dt, |i, j| pseudo(i + 100, j, seed + 1));
            let xm = x.mat();
            let ym = &xm * &t_true;
            let y = Rows { n, d: dt, data: (0..n * dt).map(|k| ym[(k / dt, k % dt)]).collect() };
            let (t, diag) = fit(&x, &y, &Estimator::Ols).unwrap();
            for i in 0..ds { for j in 0..dt { prop_assert!((t[(i, j)] - t_true[(i, j)]).abs() < 1e-8); } }
            prop_assert!(diag.train_r2 > 1.0 - 1e-10);
            prop_assert!(!diag.interpolating);
        }

        #[test]
        fn procrustes_output_is_semi_orthogonal(n in 10usize..30, ds in 2usize..7, dt in 2usize..7, seed in 0u64..1000) {
            let x = rows_from(n, ds, |i, j| pseudo(i, j, seed));
            let y = rows_from(n, dt, |i, j| pseudo(i, j, seed + 7));
            let (t, _) = fit(&x, &y, &Estimator::Procrustes).unwrap();
            // T T^T = I (d_s <= d_t) or T^T T = I (d_s >= d_t)
            let g = if ds <= dt { &t * t.transpose() } else { t.transpose() * &t };
            for i in 0..g.nrows() { for j in 0..g.ncols() {
                let want = if i == j { 1.0 } else { 0.0 };
                prop_assert!((g[(i, j)] - want).abs() < 1e-9, "gram[{},{}] = {}", i, j, g[(i, j)]);
            } }
        }
    }

    #[test]
    fn ols_interpolates_when_n_is_below_the_source_dim() {
        let x = rows_from(5, 12, |i, j| pseudo(i, j, 3));
        let y = rows_from(5, 7, |i, j| pseudo(i, j, 4));
        let (t, diag) = fit(&x, &y, &Estimator::Ols).unwrap();
        assert!(diag.interpolating && diag.rank == 5);
        assert!(diag.train_r2 > 1.0 - 1e-10);
        // A combination of corpus rows maps to the same combination of target rows.
        let v: Vec<f32> = (0..12).map(|j| (x.data[j] - x.data[12 + j]) as f32).collect();
        let got = apply(&t, &v).unwrap();
        for (k, g) in got.iter().enumerate() {
            assert!((*g as f64 - (y.data[k] - y.data[7 + k])).abs() < 1e-5);
        }
    }

    #[test]
    fn ridge_shrinks_and_identity_needs_equal_sizes() {
        let x = rows_from(30, 4, |i, j| pseudo(i, j, 1));
        let y = rows_from(30, 4, |i, j| pseudo(i, j, 2));
        let (t_ols, _) = fit(&x, &y, &Estimator::Ols).unwrap();
        let (t_ridge, d) = fit(&x, &y, &Estimator::Ridge { lambda: Some(100.0) }).unwrap();
        assert_eq!(d.lambda, Some(100.0));
        assert!(t_ridge.norm_l2() < t_ols.norm_l2());
        let y3 = rows_from(30, 3, |i, j| pseudo(i, j, 2));
        assert!(fit(&x, &y3, &Estimator::Identity).is_err());
        let (ti, _) = fit(&x, &y, &Estimator::Identity).unwrap();
        assert_eq!(ti[(1, 1)], 1.0);
    }

    #[test]
    fn gcv_lambda_minimises_the_explicit_gcv_score() {
        // Noisy linear data: y = x W + noise, n = 40, d_s = 6.
        let (n, ds, dt) = (40, 6, 3);
        let x = rows_from(n, ds, |i, j| pseudo(i, j, 3));
        let y = rows_from(n, dt, |i, j| (0..ds).map(|k| pseudo(i, k, 3) * ((k + j) as f64 * 0.3 - 0.5)).sum::<f64>() + 2.0 * pseudo(i, j, 9));
        let (xm, ym) = (x.mat(), y.mat());
        let (u, sv, _) = thin_svd(&xm).unwrap();
        let chosen = choose_lambda(&u, &sv, &ym);
        // GCV from the hat matrix built explicitly: H = X T_l with T_l the ridge map of
        // X onto the identity (so H e_i is the fitted value of e_i).
        let eye = rows_from(n, n, |i, j| if i == j { 1.0 } else { 0.0 });
        let gcv = |lam: f64| {
            let (t_h, _) = fit(&x, &eye, &Estimator::Ridge { lambda: Some(lam) }).unwrap();
            let h = &xm * &t_h;
            let tr: f64 = (0..n).map(|i| h[(i, i)]).sum();
            let resid = &ym - &h * &ym;
            let rss: f64 = (0..n).map(|i| (0..dt).map(|j| resid[(i, j)].powi(2)).sum::<f64>()).sum();
            n as f64 * rss / (n as f64 - tr).powi(2)
        };
        let smax2 = sv[0].powi(2);
        let grid: Vec<f64> = (-8..=0).map(|k| smax2 * 10f64.powi(k)).collect();
        let best = grid.iter().copied().min_by(|a, b| gcv(*a).total_cmp(&gcv(*b))).unwrap();
        assert!((chosen / best - 1.0).abs() < 1e-9, "GCV chose {chosen}, the explicit score {best}");
        // The automatic fit reports that lambda and a held-out R^2 from a refit.
        let (_, d) = fit(&x, &y, &Estimator::Ridge { lambda: None }).unwrap();
        assert_eq!(d.lambda, Some(chosen));
        assert!(d.heldout_r2.is_some());
    }

    #[test]
    fn random_map_is_seeded() {
        let x = rows_from(10, 4, |i, j| pseudo(i, j, 1));
        let y = rows_from(10, 3, |i, j| pseudo(i, j, 2));
        let (a, _) = fit(&x, &y, &Estimator::Random { seed: 5 }).unwrap();
        let (b, _) = fit(&x, &y, &Estimator::Random { seed: 5 }).unwrap();
        let (c, _) = fit(&x, &y, &Estimator::Random { seed: 6 }).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    /// Y = X A B + noise with A B of rank 3: reduced-rank regression finds a small rank on
    /// held-out rows and predicts held-out rows at least as well as OLS; a given rank gives
    /// a map of exactly that rank.
    #[test]
    fn reduced_rank_recovers_a_low_rank_map() {
        let (n, ds, dt, k) = (120, 24, 16, 3);
        let a = rows_from(ds, k, |i, j| pseudo(i, j, 11)).mat();
        let b = rows_from(k, dt, |i, j| pseudo(i, j, 12)).mat();
        let truth = &a * &b;
        let x = rows_from(n, ds, |i, j| pseudo(i, j, 13));
        let clean = x.mat() * &truth;
        let y = rows_from(n, dt, |i, j| clean[(i, j)] + 0.3 * pseudo(i, j, 14));
        let (_, rrr) = fit(&x, &y, &Estimator::ReducedRank { rank: None }).unwrap();
        let (_, ols) = fit(&x, &y, &Estimator::Ols).unwrap();
        let chosen = rrr.map_rank.unwrap();
        assert!((2..=4).contains(&chosen), "chosen rank {chosen}");
        assert!(rrr.heldout_r2.unwrap() >= ols.heldout_r2.unwrap() - 1e-3, "{rrr:?} vs {ols:?}");
        let (t2, d2) = fit(&x, &y, &Estimator::ReducedRank { rank: Some(2) }).unwrap();
        assert_eq!(d2.map_rank, Some(2));
        let s = t2.singular_values().unwrap();
        assert!(s[2] < 1e-9 * s[0], "rank-2 map: singular values {s:?}");
    }

    #[test]
    fn estimator_names_parse() {
        assert_eq!(Estimator::parse("ols"), Some(Estimator::Ols));
        assert_eq!(Estimator::parse("ridge:0.5"), Some(Estimator::Ridge { lambda: Some(0.5) }));
        assert_eq!(Estimator::parse("ridge:-1"), None);
        assert_eq!(Estimator::parse("random:9"), Some(Estimator::Random { seed: 9 }));
        assert_eq!(Estimator::parse("bogus"), None);
        assert_eq!(Estimator::parse("reduced-rank"), Some(Estimator::ReducedRank { rank: None }));
        assert_eq!(Estimator::parse("reduced-rank:8"), Some(Estimator::ReducedRank { rank: Some(8) }));
        assert_eq!(Estimator::parse("reduced-rank:0"), None);
        assert_eq!(Estimator::parse("affine"), Some(Estimator::Affine));
    }

    /// The affine map equals OLS on states with a column of ones appended (its last row is
    /// the bias: an independent formulation), recovers a known affine map exactly where
    /// OLS without a bias cannot, and its bias survives a save and load.
    #[test]
    fn affine_maps_are_ols_with_a_constant_column() {
        let (n, ds, dt) = (40, 6, 5);
        let x = rows_from(n, ds, |i, j| pseudo(i, j, 7) + 3.0);
        let t_true = Mat::from_fn(ds, dt, |i, j| pseudo(i + 50, j, 8));
        let b_true: Vec<f64> = (0..dt).map(|j| 10.0 * pseudo(99, j, 9)).collect();
        let xm = x.mat();
        let ym = &xm * &t_true;
        let y = Rows { n, d: dt, data: (0..n * dt).map(|k| ym[(k / dt, k % dt)] + b_true[k % dt] + 0.01 * pseudo(k, 3, 4)).collect() };
        let (t, bias, diag) = fit_with_bias(&x, &y, &Estimator::Affine).unwrap();
        let bias = bias.unwrap();
        let augmented = rows_from(n, ds + 1, |i, j| if j < ds { x.data[i * ds + j] } else { 1.0 });
        let (ta, _) = fit(&augmented, &y, &Estimator::Ols).unwrap();
        for j in 0..dt {
            for i in 0..ds {
                assert!((t[(i, j)] - ta[(i, j)]).abs() < 1e-9, "T[{i},{j}]");
            }
            assert!((bias[j] - ta[(ds, j)]).abs() < 1e-8, "b[{j}]");
            assert!((bias[j] - b_true[j]).abs() < 0.05, "b[{j}] = {} vs {}", bias[j], b_true[j]);
        }
        let (_, ols) = fit(&x, &y, &Estimator::Ols).unwrap();
        assert!(diag.train_r2 > 0.999 && diag.heldout_r2.unwrap() > 0.999, "{diag:?}");
        assert_eq!(diag.parameters, ds * dt + dt);
        assert!(ols.train_r2 < diag.train_r2 - 0.01, "without a bias the fit is worse: {} vs {}", ols.train_r2, diag.train_r2);
        let dir = std::env::temp_dir().join(format!("lcross-affine-{}", std::process::id()));
        let meta = MapMetadata {
            lcross_version: "test".into(),
            source_model_id: "a".into(),
            source_model_sha256: String::new(),
            target_model_id: "b".into(),
            target_model_sha256: String::new(),
            source_layer: 0,
            target_layer: 0,
            estimator: Estimator::Affine,
            corpus: String::new(),
            corpus_sha256: String::new(),
            diagnostics: diag,
            native_cosine: None,
            native_vector: None,
            source_hook: Default::default(),
            target_hook: Default::default(),
        };
        let map = LinearMap { metadata: meta, t: t.clone(), bias: Some(bias.clone()), mlp: None };
        map.save(&dir.join("m.safetensors")).unwrap();
        let back = LinearMap::load(&dir.join("m.safetensors")).unwrap();
        let b2 = back.bias.unwrap();
        assert!(b2.iter().zip(&bias).all(|(a, b)| (a - b).abs() < 1e-5));
        // A vector moves through T alone.
        let v: Vec<f32> = (0..ds).map(|i| i as f32).collect();
        let want: Vec<f32> = (0..dt).map(|j| (0..ds).map(|i| v[i] as f64 * t[(i, j)]).sum::<f64>() as f32).collect();
        assert_eq!(apply(&back.t, &v).unwrap().len(), dt);
        assert!(apply(&back.t, &v).unwrap().iter().zip(&want).all(|(a, b)| (a - b).abs() < 1e-4));
    }
}
