//! SVG line plots of results (plotters' SVG backend: no system fonts or libraries needed).

use std::path::Path;

use lcross_core::artifact::write_atomic;
use plotters::prelude::*;

use crate::error::Result;

/// A named series of (x, y) points.
pub type Series = (String, Vec<(f64, f64)>);

/// A line plot of `series` into the SVG file `path`; `y_range` bounds the y axis.
pub fn line_plot(path: &Path, title: &str, x_label: &str, y_label: &str, y_range: (f64, f64), series: &[Series]) -> Result<()> {
    let mut svg = String::new();
    draw(&mut svg, title, x_label, y_label, y_range, series)
        .map_err(|e| lcross_core::CoreError::Encode { what: format!("the plot {}", path.display()), reason: e.to_string() })?;
    write_atomic(path, svg.as_bytes())?;
    Ok(())
}

fn draw<'a>(
    svg: &'a mut String,
    title: &str,
    x_label: &str,
    y_label: &str,
    y_range: (f64, f64),
    series: &[Series],
) -> std::result::Result<(), Box<dyn std::error::Error + 'a>> {
    let root = SVGBackend::with_string(svg, (720, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let xs = series.iter().flat_map(|s| s.1.iter().map(|p| p.0));
    let (xmin, xmax) = xs.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| (a.min(x), b.max(x)));
    let (xmin, xmax) = if xmin < xmax {
        (xmin, xmax)
    } else if xmin.is_finite() {
        (xmin - 1.0, xmin + 1.0)
    } else {
        (0.0, 1.0)
    };
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(56)
        .build_cartesian_2d(xmin..xmax, y_range.0..y_range.1)?;
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
    Ok(())
}

/// A point of a scatter: its panel (e.g. a model), its group (e.g. a concept) and place.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ScatterPoint {
    pub panel: String,
    pub group: String,
    pub x: f64,
    pub y: f64,
}

/// Scatter panels side by side (one per distinct `panel`, in first-appearance order), one
/// colour per group of `groups`, into the SVG file `path`.
pub fn scatter_panels(path: &Path, points: &[ScatterPoint], groups: &[String]) -> Result<()> {
    let mut svg = String::new();
    draw_scatter(&mut svg, points, groups)
        .map_err(|e| lcross_core::CoreError::Encode { what: format!("the plot {}", path.display()), reason: e.to_string() })?;
    write_atomic(path, svg.as_bytes())?;
    Ok(())
}

fn draw_scatter<'a>(svg: &'a mut String, points: &[ScatterPoint], groups: &[String]) -> std::result::Result<(), Box<dyn std::error::Error + 'a>> {
    let mut panels: Vec<&str> = Vec::new();
    for p in points {
        if !panels.contains(&p.panel.as_str()) {
            panels.push(&p.panel);
        }
    }
    let root = SVGBackend::with_string(svg, (480 * panels.len().max(1) as u32, 500)).into_drawing_area();
    root.fill(&WHITE)?;
    let areas = root.split_evenly((1, panels.len().max(1)));
    for (area, m) in areas.iter().zip(&panels) {
        let pts: Vec<&ScatterPoint> = points.iter().filter(|p| p.panel == *m).collect();
        let (x0, x1) = pts.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| (a.min(p.x), b.max(p.x)));
        let (y0, y1) = pts.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| (a.min(p.y), b.max(p.y)));
        let pad = |a: f64, b: f64| ((b - a) * 0.05).max(1e-6);
        let mut chart = ChartBuilder::on(area)
            .caption(*m, ("sans-serif", 16))
            .margin(10)
            .x_label_area_size(20)
            .y_label_area_size(30)
            .build_cartesian_2d((x0 - pad(x0, x1))..(x1 + pad(x0, x1)), (y0 - pad(y0, y1))..(y1 + pad(y0, y1)))?;
        chart.configure_mesh().disable_mesh().draw()?;
        for (k, c) in groups.iter().enumerate() {
            let color = Palette99::pick(k).to_rgba();
            chart
                .draw_series(pts.iter().filter(|p| p.group == *c).map(|p| Circle::new((p.x, p.y), 3, color.filled())))?
                .label(c.clone())
                .legend(move |(x, y)| Circle::new((x + 5, y), 4, color.filled()));
        }
        chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw()?;
    }
    root.present()?;
    Ok(())
}

/// A heatmap into the SVG file `path`: `values[i][j]` is the cell of `x.1[i]` (across) and
/// `y.1[j]` (up), coloured on viridis from the grid's minimum to its maximum (NaN cells
/// grey), with the scale written in the title.
pub fn heatmap(path: &Path, title: &str, x: (&str, &[usize]), y: (&str, &[usize]), values: &[Vec<f64>]) -> Result<()> {
    let mut svg = String::new();
    draw_heatmap(&mut svg, title, x, y, values)
        .map_err(|e| lcross_core::CoreError::Encode { what: format!("the plot {}", path.display()), reason: e.to_string() })?;
    write_atomic(path, svg.as_bytes())?;
    Ok(())
}

fn draw_heatmap<'a>(
    svg: &'a mut String,
    title: &str,
    (x_label, xs): (&str, &[usize]),
    (y_label, ys): (&str, &[usize]),
    values: &[Vec<f64>],
) -> std::result::Result<(), Box<dyn std::error::Error + 'a>> {
    use plotters::style::colors::colormaps::{ColorMap, ViridisRGB};
    let finite = values.iter().flatten().copied().filter(|v| v.is_finite());
    let (lo, hi) = finite.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(v), b.max(v)));
    let (lo, hi) = if lo < hi {
        (lo, hi)
    } else if lo.is_finite() {
        (lo - 0.5, lo + 0.5)
    } else {
        (0.0, 1.0)
    };
    let root = SVGBackend::with_string(svg, (780, 660)).into_drawing_area();
    root.fill(&WHITE)?;
    let (nx, ny) = (xs.len().max(1), ys.len().max(1));
    let mut chart = ChartBuilder::on(&root)
        .caption(format!("{title}; colour {lo:.3} (dark) to {hi:.3} (yellow)"), ("sans-serif", 13))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(48)
        .build_cartesian_2d(0f64..nx as f64, 0f64..ny as f64)?;
    let tick = |labels: &[usize], v: f64| labels.get(v.floor() as usize).map(|l| l.to_string()).unwrap_or_default();
    chart
        .configure_mesh()
        .disable_mesh()
        .x_desc(x_label)
        .y_desc(y_label)
        .x_labels(nx.min(16))
        .y_labels(ny.min(16))
        .x_label_formatter(&|v| tick(xs, *v))
        .y_label_formatter(&|v| tick(ys, *v))
        .draw()?;
    chart.draw_series(values.iter().enumerate().flat_map(|(i, row)| {
        row.iter().enumerate().map(move |(j, &v)| {
            let color = if v.is_finite() { ViridisRGB.get_color_normalized(v, lo, hi) } else { RGBColor(200, 200, 200) };
            Rectangle::new([(i as f64, j as f64), (i as f64 + 1.0, j as f64 + 1.0)], color.filled())
        })
    }))?;
    root.present()?;
    Ok(())
}
