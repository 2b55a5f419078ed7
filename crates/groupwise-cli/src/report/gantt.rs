//! A Gantt chart of a simulated segment (`plan --simulate --gantt`): one row per worker, a bar per
//! node's phase, over the last steps of the segment (the pipeline full).

use std::path::Path;

use anyhow::{bail, Context, Result};
use plotters::prelude::*;

use groupwise::local::Phase;
use groupwise::parallel::Topology;
use groupwise::sim::{Prediction, Setup};

use super::chart::{perr, register_font, FONT, SIZE};

/// Steps shown: the last ones of the segment.
const SHOWN: usize = 3;

fn colour(phase: Phase) -> RGBColor {
    match phase {
        Phase::Trunk => RGBColor(31, 90, 200),
        Phase::Classifier => RGBColor(120, 170, 240),
        Phase::Backward => RGBColor(225, 120, 0),
        Phase::Update => RGBColor(60, 160, 60),
    }
}

/// Draws the last 3 steps of `p` to `png` (written to a temporary name, then renamed).
pub fn draw(png: &Path, topo: &Topology, setup: &Setup, p: &Prediction, title: &str) -> Result<()> {
    if png.extension().and_then(|e| e.to_str()) != Some("png") {
        bail!(
            "--gantt {}: the chart is a PNG file (name it *.png)",
            png.display()
        );
    }
    register_font(None)?;
    let steps = p.step_ends.len();
    let from = match steps.checked_sub(SHOWN + 1) {
        Some(i) => p.step_ends[i],
        None => 0.0,
    };
    let to = p.segment_seconds.max(from + 1e-9);
    let rows = setup.workers.len();
    let tmp = png.with_extension("tmp.png");
    {
        let root = BitMapBackend::new(&tmp, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(perr)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                format!("{title}: simulated, {rows} workers, last {SHOWN} steps"),
                (FONT, 20),
            )
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(0f64..(to - from) * 1e3, -0.5f64..rows as f64 - 0.5)
            .map_err(perr)?;
        // Worker 0 on top.
        let row = |w: usize| (rows - 1 - w) as f64;
        chart
            .configure_mesh()
            .disable_mesh()
            .x_desc("ms into the last steps")
            .y_desc("worker")
            .y_labels(rows.min(32))
            .y_label_formatter(&|y| {
                let r = y.round();
                if (y - r).abs() < 1e-6 && r >= 0.0 && (r as usize) < rows {
                    format!("{}", rows - 1 - r as usize)
                } else {
                    String::new()
                }
            })
            .label_style((FONT, 14))
            .draw()
            .map_err(perr)?;
        let shown = p
            .timeline
            .iter()
            .filter(|i| i.end > from && i.start < to && i.end > i.start);
        for i in shown {
            let y0 = row(i.worker) - 0.4;
            let y1 = row(i.worker) + 0.4;
            let (x0, x1) = (
                (i.start.max(from) - from) * 1e3,
                (i.end.min(to) - from) * 1e3,
            );
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(x0, y0), (x1, y1)],
                    colour(i.phase).filled(),
                )))
                .map_err(perr)?;
            // Name the node on its trunk bar when there is room.
            if i.phase == Phase::Trunk && (x1 - x0) / ((to - from) * 1e3) > 0.055 {
                chart
                    .draw_series(std::iter::once(Text::new(
                        topo.name(i.node).to_string(),
                        (x0, row(i.worker) + 0.1),
                        (FONT, 11).into_font().color(&WHITE),
                    )))
                    .map_err(perr)?;
            }
        }
        for (phase, name) in [
            (Phase::Trunk, "trunk"),
            (Phase::Classifier, "classifier"),
            (Phase::Backward, "loss + backward"),
            (Phase::Update, "update"),
        ] {
            chart
                .draw_series(std::iter::empty::<Rectangle<(f64, f64)>>())
                .map_err(perr)?
                .label(name)
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 14, y + 5)], colour(phase).filled())
                });
        }
        chart
            .configure_series_labels()
            .label_font((FONT, 13))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperRight)
            .draw()
            .map_err(perr)?;
        root.present().map_err(perr)?;
    }
    std::fs::rename(&tmp, png).with_context(|| format!("{}", png.display()))?;
    Ok(())
}
