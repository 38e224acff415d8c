//! Results a person can read: CSV, Markdown tables and SVG plots.

use std::path::Path;

use anyhow::{Context as _, Result};
use lcross_core::artifact::write_atomic;
use lcross_core::eval::AbResult;

/// Write `sweep.csv`, `sweep.md` and `sweep.svg` (metric vs beta) into `dir`.
pub fn write_sweep(dir: &Path, model: &str, dataset: &str, results: &[AbResult]) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut csv = String::from("model,dataset,beta,mean_prob_matching,n\n");
    let mut md = format!("A/B sweep of `{model}` on `{dataset}`\n\n| beta | mean_prob_matching | n |\n|---:|---:|---:|\n");
    for r in results {
        csv.push_str(&format!("{model},{dataset},{},{:.6},{}\n", r.beta, r.mean_prob_matching, r.n));
        md.push_str(&format!("| {} | {:.4} | {} |\n", r.beta, r.mean_prob_matching, r.n));
    }
    write_atomic(&dir.join("sweep.csv"), csv.as_bytes())?;
    write_atomic(&dir.join("sweep.md"), md.as_bytes())?;
    let series = vec![(model.to_string(), results.iter().map(|r| (r.beta, r.mean_prob_matching)).collect::<Vec<_>>())];
    Ok(lcross_eval::plots::line_plot(&dir.join("sweep.svg"), dataset, "beta", "mean p(matching)", (0.0, 1.0), &series)?)
}
