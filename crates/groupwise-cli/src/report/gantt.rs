//! Gantt charts of a segment's last steps: one row per worker, a bar per node's phase. `plan
//! --simulate --gantt` draws the simulated timeline; with `--trace RUN_DIR` (and in `bench --parallel
//! --gantt`) the run's real timeline goes above the simulated one of the same placement, on the same
//! time scale, so a user sees where the model and the machine part.

use std::path::Path;

use anyhow::{bail, Context, Result};
use plotters::prelude::*;

use groupwise::local::Phase;
use groupwise::parallel::{Interval, Topology};

use super::chart::{perr, register_font, FONT, SIZE};

/// Steps shown: the last ones of the segment.
const SHOWN: usize = 3;

/// One timeline to draw.
pub struct Panel<'a> {
    /// What it is (`simulated`, `measured`).
    pub label: String,
    /// Workers (rows).
    pub rows: usize,
    /// Its compute (workers numbered from 0).
    pub intervals: &'a [Interval],
}

fn colour(phase: Phase) -> RGBColor {
    match phase {
        Phase::Trunk => RGBColor(31, 90, 200),
        Phase::Classifier => RGBColor(120, 170, 240),
        Phase::Backward => RGBColor(225, 120, 0),
        Phase::Update => RGBColor(60, 160, 60),
    }
}

/// The last [`SHOWN`] steps of `intervals`: from the end of the step before them (when it is there,
/// else the first start) to the end of the last one, and how many steps that is.
fn window(intervals: &[Interval]) -> (f64, f64, usize) {
    let last = intervals.iter().map(|i| i.step).max().unwrap_or(0);
    let first_step = intervals.iter().map(|i| i.step).min().unwrap_or(0);
    let end_of = |step: usize| {
        intervals
            .iter()
            .filter(|i| i.step == step)
            .map(|i| i.end)
            .fold(f64::NEG_INFINITY, f64::max)
    };
    let first = intervals
        .iter()
        .map(|i| i.start)
        .fold(f64::INFINITY, f64::min);
    let (from, steps) = match last.checked_sub(SHOWN) {
        Some(s) if s > 0 && end_of(s).is_finite() => (end_of(s), SHOWN),
        _ => (first, last + 1 - first_step),
    };
    let to = end_of(last);
    if from.is_finite() && to.is_finite() {
        (from, to.max(from + 1e-9), steps)
    } else {
        (0.0, 1e-9, 1)
    }
}

/// Seconds per step over the last steps a chart shows.
pub fn step_seconds(intervals: &[Interval]) -> f64 {
    let (from, to, steps) = window(intervals);
    (to - from) / steps.max(1) as f64
}

/// Draws the last 3 steps of every panel to `png`, one above the other on one time scale (written to
/// a temporary name, then renamed).
pub fn draw(png: &Path, topo: &Topology, title: &str, panels: &[Panel]) -> Result<()> {
    if png.extension().and_then(|e| e.to_str()) != Some("png") {
        bail!(
            "--gantt {}: the chart is a PNG file (name it *.png)",
            png.display()
        );
    }
    register_font(None)?;
    let windows: Vec<(f64, f64, usize)> = panels.iter().map(|p| window(p.intervals)).collect();
    let span = windows.iter().map(|(f, t, _)| t - f).fold(1e-9, f64::max) * 1e3;
    let height = match panels.len() {
        0 | 1 => SIZE.1,
        n => 40 + 430 * n as u32,
    };
    let tmp = png.with_extension("tmp.png");
    {
        let root = BitMapBackend::new(&tmp, (SIZE.0, height)).into_drawing_area();
        root.fill(&WHITE).map_err(perr)?;
        let root = root.titled(title, (FONT, 22)).map_err(perr)?;
        let areas = root.split_evenly((panels.len().max(1), 1));
        for ((panel, &window), area) in panels.iter().zip(&windows).zip(&areas) {
            draw_panel(area, topo, panel, window, span)?;
        }
        root.present().map_err(perr)?;
    }
    std::fs::rename(&tmp, png).with_context(|| format!("{}", png.display()))?;
    Ok(())
}

fn draw_panel(
    area: &DrawingArea<BitMapBackend, plotters::coord::Shift>,
    topo: &Topology,
    panel: &Panel,
    (from, to, steps): (f64, f64, usize),
    span_ms: f64,
) -> Result<()> {
    let rows = panel.rows.max(1);
    let mut chart = ChartBuilder::on(area)
        .caption(
            format!(
                "{}: {rows} workers, last {steps} steps, {:.1} ms per step",
                panel.label,
                (to - from) * 1e3 / steps.max(1) as f64
            ),
            (FONT, 18),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        // Room on the right for the legend.
        .build_cartesian_2d(0f64..span_ms * 1.22, -0.5f64..rows as f64 - 0.5)
        .map_err(perr)?;
    // Worker 0 on top.
    let row = |w: usize| (rows - 1 - w.min(rows - 1)) as f64;
    chart
        .configure_mesh()
        .disable_mesh()
        .x_desc(format!("ms into the last {steps} steps"))
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
    let shown = panel
        .intervals
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
        if i.phase == Phase::Trunk && (x1 - x0) / span_ms > 0.055 {
            chart
                .draw_series(std::iter::once(Text::new(
                    topo.name(i.node).to_string(),
                    (x0, row(i.worker) + 0.1),
                    (FONT, 11).into_font().color(&WHITE),
                )))
                .map_err(perr)?;
        }
    }
    for phase in Phase::ALL {
        chart
            .draw_series(std::iter::empty::<Rectangle<(f64, f64)>>())
            .map_err(perr)?
            .label(phase.name())
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
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(step: usize, start: f64, end: f64) -> Interval {
        Interval {
            worker: 0,
            node: 0,
            phase: Phase::Trunk,
            step,
            start,
            end,
        }
    }

    #[test]
    fn the_window_is_the_last_three_steps() {
        let steps: Vec<Interval> = (1..=6).map(|s| at(s, s as f64, s as f64 + 0.5)).collect();
        assert_eq!(window(&steps), (3.5, 6.5, 3));
        assert_eq!(step_seconds(&steps), 1.0);
        // Fewer steps than shown: from the first start.
        assert_eq!(window(&steps[4..]), (5.0, 6.5, 2));
        assert_eq!(window(&[]), (0.0, 1e-9, 1));
    }
}
