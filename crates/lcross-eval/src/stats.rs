//! Small statistics: mean, standard error, rank correlation.

/// Arithmetic mean (NaN for no values).
pub fn mean(xs: &[f64]) -> f64 {
    if xs.is_empty() {
        return f64::NAN;
    }
    xs.iter().sum::<f64>() / xs.len() as f64
}

/// Standard error of the mean: sample standard deviation (n - 1) over sqrt(n);
/// 0 for a single value, NaN for none.
pub fn stderr(xs: &[f64]) -> f64 {
    match xs.len() {
        0 => f64::NAN,
        1 => 0.0,
        n => {
            let m = mean(xs);
            let var = xs.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1) as f64;
            (var / n as f64).sqrt()
        }
    }
}

/// Ranks 1..=n, ties get the mean of their ranks.
pub fn ranks(xs: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..xs.len()).collect();
    order.sort_by(|&a, &b| xs[a].total_cmp(&xs[b]));
    let mut out = vec![0.0; xs.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && xs[order[j + 1]] == xs[order[i]] {
            j += 1;
        }
        let rank = (i + j) as f64 / 2.0 + 1.0;
        for &k in &order[i..=j] {
            out[k] = rank;
        }
        i = j + 1;
    }
    out
}

/// Pearson correlation (NaN when either side is constant or lengths differ).
pub fn pearson(x: &[f64], y: &[f64]) -> f64 {
    if x.len() != y.len() || x.len() < 2 {
        return f64::NAN;
    }
    let (mx, my) = (mean(x), mean(y));
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (a, b) in x.iter().zip(y) {
        sxy += (a - mx) * (b - my);
        sxx += (a - mx).powi(2);
        syy += (b - my).powi(2);
    }
    if sxx == 0.0 || syy == 0.0 {
        return f64::NAN;
    }
    sxy / (sxx * syy).sqrt()
}

/// Spearman rank correlation (Pearson on tie-averaged ranks).
pub fn spearman(x: &[f64], y: &[f64]) -> f64 {
    pearson(&ranks(x), &ranks(y))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_and_standard_error() {
        let xs = [2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0];
        assert_eq!(mean(&xs), 5.0);
        // sample sd = sqrt(32/7)
        assert!((stderr(&xs) - (32.0f64 / 7.0).sqrt() / 8f64.sqrt()).abs() < 1e-12);
        assert_eq!(stderr(&[3.0]), 0.0);
        assert!(mean(&[]).is_nan() && stderr(&[]).is_nan());
    }

    #[test]
    fn spearman_handles_ties_and_monotone_maps() {
        assert_eq!(ranks(&[10.0, 20.0, 20.0, 5.0]), vec![2.0, 3.5, 3.5, 1.0]);
        let x = [1.0, 2.0, 3.0, 4.0, 5.0];
        let y: Vec<f64> = x.iter().map(|v: &f64| v.powi(3)).collect();
        assert!((spearman(&x, &y) - 1.0).abs() < 1e-12);
        let rev: Vec<f64> = x.iter().rev().copied().collect();
        assert!((spearman(&x, &rev) + 1.0).abs() < 1e-12);
        // scipy.stats.spearmanr([1,2,3,4,5],[2,1,4,3,5]) = 0.8
        assert!((spearman(&x, &[2.0, 1.0, 4.0, 3.0, 5.0]) - 0.8).abs() < 1e-12);
        assert!(spearman(&x, &[1.0; 5]).is_nan());
    }
}

/// k-nearest-neighbour purity: the mean, over points, of the share of its `k` nearest
/// other points (Euclidean) that carry its label. Chance is about sum_c (n_c / n)^2.
pub fn knn_purity(points: &[Vec<f64>], labels: &[usize], k: usize) -> f64 {
    let n = points.len();
    if n < 2 || k == 0 || labels.len() != n {
        return f64::NAN;
    }
    let k = k.min(n - 1);
    let mut total = 0.0;
    for i in 0..n {
        let mut d: Vec<(f64, usize)> =
            (0..n).filter(|&j| j != i).map(|j| (points[i].iter().zip(&points[j]).map(|(a, b)| (a - b).powi(2)).sum::<f64>(), j)).collect();
        d.select_nth_unstable_by(k - 1, |a, b| a.0.total_cmp(&b.0));
        total += d[..k].iter().filter(|(_, j)| labels[*j] == labels[i]).count() as f64 / k as f64;
    }
    total / n as f64
}

#[cfg(test)]
mod knn_tests {
    use super::knn_purity;

    #[test]
    fn separated_clusters_are_pure_and_mixed_ones_are_not() {
        let pts: Vec<Vec<f64>> = (0..20).map(|i| vec![if i < 10 { 0.0 } else { 100.0 } + (i % 10) as f64 * 0.1]).collect();
        let labels: Vec<usize> = (0..20).map(|i| i / 10).collect();
        assert_eq!(knn_purity(&pts, &labels, 5), 1.0);
        let alternating: Vec<usize> = (0..20).map(|i| i % 2).collect();
        assert!(knn_purity(&pts, &alternating, 5) < 0.6);
        assert!(knn_purity(&pts[..1], &labels[..1], 5).is_nan());
    }
}

/// Items up to which [`paired_sign_flip`] enumerates every sign pattern (2^16 = 65536).
pub const EXACT_SIGN_FLIP_ITEMS: usize = 16;

/// Paired sign-flip permutation test of mean(a - b) over items (`a` and `b` measured on
/// the same items in the same order): the observed mean difference and the one-sided
/// p-value of "a is not above b", i.e. the share of sign patterns of the differences whose
/// mean is at least the observed one. Exact (every pattern) up to
/// [`EXACT_SIGN_FLIP_ITEMS`] items, so a handful of items can never look significant
/// (2 items: p >= 1/4); above that `resamples` seeded random patterns with the +1
/// correction. None when the lengths differ or are 0.
///
/// Unlike a bootstrap, whose p-value is 0 whenever every difference is positive however
/// few there are, this holds its level at any n.
pub fn paired_sign_flip(a: &[f64], b: &[f64], resamples: usize, seed: u64) -> Option<(f64, f64)> {
    if a.len() != b.len() || a.is_empty() {
        return None;
    }
    let d: Vec<f64> = a.iter().zip(b).map(|(x, y)| x - y).collect();
    let n = d.len();
    let observed: f64 = d.iter().sum();
    // a pattern's sum counts as "at least the observed" up to float rounding of the sums
    let tolerance = 1e-12 * d.iter().map(|x| x.abs()).sum::<f64>();
    let at_least = |signs: &mut dyn FnMut(usize) -> bool| -> bool {
        let sum: f64 = d.iter().enumerate().map(|(i, x)| if signs(i) { -x } else { *x }).sum();
        sum >= observed - tolerance
    };
    let p = if n <= EXACT_SIGN_FLIP_ITEMS {
        let patterns = 1u64 << n;
        let hits = (0..patterns).filter(|&m| at_least(&mut |i| m >> i & 1 == 1)).count();
        hits as f64 / patterns as f64
    } else {
        let mut s = seed ^ 0x9E37_79B9_7F4A_7C15;
        let mut next = || {
            // splitmix64
            s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        let mut hits = 0usize;
        for _ in 0..resamples {
            let mut bits = 0u64;
            let mut left = 0;
            let mut flip = |_: usize| {
                if left == 0 {
                    bits = next();
                    left = 64;
                }
                left -= 1;
                let b = bits & 1 == 1;
                bits >>= 1;
                b
            };
            hits += at_least(&mut flip) as usize;
        }
        (hits + 1) as f64 / (resamples + 1) as f64
    };
    Some((observed / n as f64, p))
}

#[cfg(test)]
mod sign_flip_tests {
    use super::*;

    #[test]
    fn sign_flip_separates_clear_and_null_effects() {
        let b: Vec<f64> = (0..40).map(|i| (i % 7) as f64 / 7.0).collect();
        let up: Vec<f64> = b.iter().enumerate().map(|(i, x)| x + 0.1 + 0.02 * ((i % 3) as f64 - 1.0)).collect();
        let (d, p) = paired_sign_flip(&up, &b, 2000, 1).unwrap();
        assert!((d - 0.1).abs() < 1e-3 && p < 0.01, "{d} {p}");
        let noise: Vec<f64> = b.iter().enumerate().map(|(i, x)| x + if i % 2 == 0 { 0.05 } else { -0.05 }).collect();
        let (d, p) = paired_sign_flip(&noise, &b, 2000, 1).unwrap();
        assert!(d.abs() < 1e-9 && p > 0.3, "{d} {p}");
        let (_, p) = paired_sign_flip(&b, &up, 2000, 1).unwrap();
        assert!(p > 0.99);
        assert_eq!(paired_sign_flip(&up, &b, 2000, 1), paired_sign_flip(&up, &b, 2000, 1));
        assert!(paired_sign_flip(&[1.0], &[], 10, 0).is_none());
    }

    #[test]
    fn few_items_are_never_significant_and_exact_p_values_are_exact() {
        // 2 items both up: 1 of the 4 sign patterns reaches the observed sum
        assert_eq!(paired_sign_flip(&[1.0, 2.0], &[0.0, 0.0], 2000, 0).unwrap().1, 0.25);
        // 5 items all up by different amounts: only the identity pattern reaches it
        let (_, p) = paired_sign_flip(&[1.0, 2.0, 3.0, 4.0, 5.0], &[0.0; 5], 2000, 0).unwrap();
        assert_eq!(p, 1.0 / 32.0);
        // 10 items, all up: p = 1/1024 < 0.05
        let up: Vec<f64> = (1..=10).map(f64::from).collect();
        assert_eq!(paired_sign_flip(&up, &[0.0; 10], 2000, 0).unwrap().1, 1.0 / 1024.0);
        // no difference at all: every pattern ties, p = 1
        assert_eq!(paired_sign_flip(&[0.3, 0.4], &[0.3, 0.4], 2000, 0).unwrap().1, 1.0);
    }
}
