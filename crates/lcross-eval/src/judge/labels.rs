//! Probabilities of multi-token labels from next-token distributions.
//!
//! Labels are token sequences (`10` is `1`,`0` for tokenizers that split digits). The
//! probability of label `l = t1..tk` is the product of the next-token probabilities
//! along it, times the probability that the reply *ends* there when `l` is a prefix of
//! a longer label (1 minus the probability of continuing toward one): so `1` and `10`
//! split the mass of the token `1`.

use std::collections::{BTreeMap, BTreeSet};

use crate::error::{EvalError, Result};

/// The labels as token sequences, and which next-token probabilities they need.
#[derive(Debug, Clone)]
pub struct LabelTree {
    labels: Vec<Vec<u32>>,
    /// For each prefix (the root is the empty prefix): the tokens labels continue with.
    next: BTreeMap<Vec<u32>, BTreeSet<u32>>,
}

/// For each prefix: the probability of each token of [`LabelTree::needed`].
pub type PrefixProbabilities = BTreeMap<Vec<u32>, BTreeMap<u32, f64>>;

impl LabelTree {
    /// Labels as token sequences (non-empty, distinct).
    pub fn new(labels: Vec<Vec<u32>>) -> Result<Self> {
        let mut next: BTreeMap<Vec<u32>, BTreeSet<u32>> = BTreeMap::new();
        for (i, l) in labels.iter().enumerate() {
            if l.is_empty() {
                return Err(EvalError::Judge(format!("label {i} has no tokens")));
            }
            if labels[..i].contains(l) {
                return Err(EvalError::Judge(format!("labels {i} and {} have the same tokens", labels[..i].iter().position(|x| x == l).unwrap_or(0))));
            }
            for j in 0..l.len() {
                next.entry(l[..j].to_vec()).or_default().insert(l[j]);
            }
        }
        Ok(Self { labels, next })
    }

    /// The prefixes whose next-token distribution is needed, and which tokens of it.
    pub fn needed(&self) -> &BTreeMap<Vec<u32>, BTreeSet<u32>> {
        &self.next
    }

    /// Token paths to run after the prompt so that every needed prefix is seen: the
    /// needed prefixes that are not a prefix of another (for digit labels `0`..`10`:
    /// just `[1]`; for single-token labels: the empty path).
    pub fn chains(&self) -> Vec<Vec<u32>> {
        let keys: Vec<&Vec<u32>> = self.next.keys().collect();
        keys.iter().filter(|k| !keys.iter().any(|o| o.len() > k.len() && o.starts_with(k))).map(|k| (*k).clone()).collect()
    }

    /// Probability of each label (in label order) given the needed probabilities.
    pub fn probabilities(&self, p: &PrefixProbabilities) -> Result<Vec<f64>> {
        let get = |prefix: &[u32], tok: u32| -> Result<f64> {
            p.get(prefix).and_then(|m| m.get(&tok)).copied().ok_or_else(|| EvalError::Judge(format!("no probability for token {tok} after {prefix:?}")))
        };
        self.labels
            .iter()
            .map(|l| {
                let mut prob = 1.0;
                for j in 0..l.len() {
                    prob *= get(&l[..j], l[j])?;
                }
                if let Some(cont) = self.next.get(l) {
                    let go_on: f64 = cont.iter().map(|&t| get(l, t)).sum::<Result<f64>>()?;
                    prob *= (1.0 - go_on).max(0.0);
                }
                Ok(prob)
            })
            .collect()
    }
}

/// Expected value and coverage from label probabilities: `(sum p v / sum p, sum p)`.
pub fn expected_value(probs: &[f64], values: &[f64]) -> (Option<f64>, f64) {
    let mass: f64 = probs.iter().sum();
    if !(mass > 0.0) || !mass.is_finite() {
        return (None, 0.0);
    }
    (Some(probs.iter().zip(values).map(|(p, v)| p * v).sum::<f64>() / mass), mass)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digits() -> LabelTree {
        // tokens: "0".."9" = 100..109; "10" = [101, 100]
        let mut labels: Vec<Vec<u32>> = (0..10).map(|d| vec![100 + d]).collect();
        labels.push(vec![101, 100]);
        LabelTree::new(labels).unwrap()
    }

    #[test]
    fn ten_splits_the_mass_of_one() {
        let t = digits();
        assert_eq!(t.chains(), vec![vec![101]]);
        let mut p = PrefixProbabilities::new();
        // after the prompt: "1" 0.6, "7" 0.3, others 0.01 each (8 of them)
        let mut root: BTreeMap<u32, f64> = (0..10).map(|d| (100 + d, 0.0125)).collect();
        root.insert(101, 0.6);
        root.insert(107, 0.3);
        p.insert(vec![], root);
        // after "1": "0" with 0.75 -> "10" gets 0.45, "1" gets 0.15
        p.insert(vec![101], [(100, 0.75)].into_iter().collect());
        let probs = t.probabilities(&p).unwrap();
        assert!((probs[10] - 0.45).abs() < 1e-12 && (probs[1] - 0.15).abs() < 1e-12, "{probs:?}");
        let values: Vec<f64> = (0..=10).map(f64::from).collect();
        let (ev, mass) = expected_value(&probs, &values);
        let want_mass = 0.6 + 0.3 + 8.0 * 0.0125;
        let want = (0.45 * 10.0 + 0.15 + 0.3 * 7.0 + 0.0125 * (0.0 + 2.0 + 3.0 + 4.0 + 5.0 + 6.0 + 8.0 + 9.0)) / want_mass;
        assert!((mass - want_mass).abs() < 1e-12 && (ev.unwrap() - want).abs() < 1e-12);
    }

    #[test]
    fn single_token_labels_need_only_the_root() {
        let t = LabelTree::new(vec![vec![5], vec![9]]).unwrap();
        assert_eq!(t.chains(), vec![Vec::<u32>::new()]);
        let mut p = PrefixProbabilities::new();
        p.insert(vec![], [(5, 0.2), (9, 0.6)].into_iter().collect());
        assert_eq!(t.probabilities(&p).unwrap(), vec![0.2, 0.6]);
        let (ev, mass) = expected_value(&[0.2, 0.6], &[0.0, 1.0]);
        assert!((ev.unwrap() - 0.75).abs() < 1e-12 && (mass - 0.8).abs() < 1e-12);
        assert_eq!(expected_value(&[0.0, 0.0], &[0.0, 1.0]), (None, 0.0));
    }

    #[test]
    fn bad_labels_are_errors() {
        assert!(LabelTree::new(vec![vec![1], vec![]]).is_err());
        assert!(LabelTree::new(vec![vec![1, 2], vec![1, 2]]).is_err());
        let t = LabelTree::new(vec![vec![1], vec![2]]).unwrap();
        assert!(t.probabilities(&PrefixProbabilities::new()).is_err());
    }
}
