//! Predicted speed-up against the number of workers, one line per configuration (`plan --search
//! --plot`), coloured by family as the report's plots are.

use std::path::Path;

use anyhow::{bail, Context, Result};
use plotters::prelude::*;

use super::chart::{colour_of, perr, register_font, FONT, SIZE};

/// One configuration's predicted curve.
pub struct Curve {
    /// Its name (end of the line).
    pub label: String,
    /// End-to-end (drawn black).
    pub end_to_end: bool,
    /// G (the colour).
    pub groups: i64,
    /// Isolated auxiliary input (drawn dashed).
    pub dashed: bool,
    /// `(workers, speed-up)`, workers increasing.
    pub points: Vec<(usize, f64)>,
}

/// Draws `curves` to `png` on a log2 workers axis (written to a temporary name, then renamed).
pub fn draw(png: &Path, curves: &[Curve], title: &str, y_desc: &str) -> Result<()> {
    if png.extension().and_then(|e| e.to_str()) != Some("png") {
        bail!(
            "--plot {}: the plot is a PNG file (name it *.png)",
            png.display()
        );
    }
    register_font(None)?;
    let max_w = curves
        .iter()
        .flat_map(|c| c.points.iter().map(|p| p.0))
        .max()
        .unwrap_or(1)
        .max(2);
    let max_y = curves
        .iter()
        .flat_map(|c| c.points.iter().map(|p| p.1))
        .fold(1.0f64, f64::max);
    let tmp = png.with_extension("tmp.png");
    {
        let root = BitMapBackend::new(&tmp, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(perr)?;
        let x_max = (max_w as f64).log2();
        let mut chart = ChartBuilder::on(&root)
            .caption(title, (FONT, 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(55)
            .build_cartesian_2d(0f64..x_max * 1.25, 0f64..max_y * 1.08)
            .map_err(perr)?;
        chart
            .configure_mesh()
            .x_desc("workers")
            .y_desc(y_desc)
            .x_labels(x_max as usize + 1)
            .x_label_formatter(&|x| {
                if (x - x.round()).abs() < 1e-6 && *x <= x_max + 1e-6 {
                    format!("{}", 1usize << x.round() as u32)
                } else {
                    String::new()
                }
            })
            .label_style((FONT, 14))
            .light_line_style(WHITE.mix(0.0))
            .draw()
            .map_err(perr)?;
        for c in curves {
            let colour = colour_of(c.end_to_end, c.groups);
            let points: Vec<(f64, f64)> = c
                .points
                .iter()
                .map(|&(w, s)| ((w as f64).log2(), s))
                .collect();
            let style = colour.stroke_width(2);
            if c.dashed {
                chart
                    .draw_series(DashedLineSeries::new(points.clone(), 6, 4, style))
                    .map_err(perr)?;
            } else {
                chart
                    .draw_series(LineSeries::new(points.clone(), style))
                    .map_err(perr)?;
            }
            if let Some(&(x, y)) = points.last() {
                chart
                    .draw_series(std::iter::once(Text::new(
                        c.label.clone(),
                        (x + 0.05, y),
                        (FONT, 11).into_font().color(&colour),
                    )))
                    .map_err(perr)?;
            }
        }
        root.present().map_err(perr)?;
    }
    std::fs::rename(&tmp, png).with_context(|| format!("{}", png.display()))?;
    Ok(())
}
