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

/// Paired bootstrap of mean(a - b) over items (`a` and `b` measured on the same items in
/// the same order): the observed mean difference and the one-sided p-value of "a is
/// not above b" (share of `resamples` resampled means <= 0, with the +1 correction).
/// Seeded, so a report is reproducible. None when the lengths differ or are 0.
pub fn paired_bootstrap(a: &[f64], b: &[f64], resamples: usize, seed: u64) -> Option<(f64, f64)> {
    if a.len() != b.len() || a.is_empty() {
        return None;
    }
    let d: Vec<f64> = a.iter().zip(b).map(|(x, y)| x - y).collect();
    let observed = mean(&d);
    let mut s = seed ^ 0x9E37_79B9_7F4A_7C15;
    let mut next = || {
        // splitmix64
        s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let n = d.len();
    let mut not_above = 0usize;
    for _ in 0..resamples {
        let m: f64 = (0..n).map(|_| d[(next() % n as u64) as usize]).sum::<f64>() / n as f64;
        if m <= 0.0 {
            not_above += 1;
        }
    }
    Some((observed, (not_above + 1) as f64 / (resamples + 1) as f64))
}

#[cfg(test)]
mod bootstrap_tests {
    use super::*;

    #[test]
    fn paired_bootstrap_separates_clear_and_null_effects() {
        let b: Vec<f64> = (0..40).map(|i| (i % 7) as f64 / 7.0).collect();
        let up: Vec<f64> = b.iter().enumerate().map(|(i, x)| x + 0.1 + 0.02 * ((i % 3) as f64 - 1.0)).collect();
        let (d, p) = paired_bootstrap(&up, &b, 2000, 1).unwrap();
        assert!((d - 0.1).abs() < 1e-3 && p < 0.01, "{d} {p}");
        let noise: Vec<f64> = b.iter().enumerate().map(|(i, x)| x + if i % 2 == 0 { 0.05 } else { -0.05 }).collect();
        let (d, p) = paired_bootstrap(&noise, &b, 2000, 1).unwrap();
        assert!(d.abs() < 1e-9 && p > 0.3, "{d} {p}");
        let (_, p) = paired_bootstrap(&b, &up, 2000, 1).unwrap();
        assert!(p > 0.99);
        assert_eq!(paired_bootstrap(&up, &b, 2000, 1), paired_bootstrap(&up, &b, 2000, 1));
        assert!(paired_bootstrap(&[1.0], &[], 10, 0).is_none());
    }
}
