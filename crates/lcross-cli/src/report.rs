//! Results a person can read: CSV, Markdown tables and SVG plots.

use std::path::Path;

use anyhow::{Context as _, Result};
use lcross_core::artifact::write_atomic;
use lcross_core::eval::AbResult;
use plotters::prelude::*;

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
    line_plot(&dir.join("sweep.svg"), &format!("{dataset}"), "beta", "mean p(matching)", &series)
}

/// A line plot of several named series into an SVG file.
pub fn line_plot(path: &Path, title: &str, x_label: &str, y_label: &str, series: &[(String, Vec<(f64, f64)>)]) -> Result<()> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (720, 480)).into_drawing_area();
        root.fill(&WHITE)?;
        let xs = series.iter().flat_map(|s| s.1.iter().map(|p| p.0));
        let (xmin, xmax) = xs.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| (a.min(x), b.max(x)));
        let (xmin, xmax) = if xmin < xmax { (xmin, xmax) } else { (xmin - 1.0, xmin + 1.0) };
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(56)
            .build_cartesian_2d(xmin..xmax, 0.0f64..1.0f64)?;
        chart.configure_mesh().x_desc(x_label).y_desc(y_label).draw()?;
        for (i, (name, pts)) in series.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            chart
                .draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))?
                .label(name.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2)));
            chart.draw_series(pts.iter().map(|p| Circle::new(*p, 3, color.filled())))?;
        }
        chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw()?;
        root.present()?;
    }
    write_atomic(path, svg.as_bytes())?;
    Ok(())
}
