//! The report's plots, each as SVG and PNG: accuracy against the largest node's MACs (the paper's
//! figure), against measured step time, training curves, and the auxiliary classifiers by depth.

use std::path::Path;

use anyhow::{Context, Result};
use plotters::prelude::*;

use super::chart::{
    accuracy_range, family_colour, family_name, integer_label, legend, line_once, log_label,
    log_range, log_ticks, perr, run_colour, Area, FONT, SIZE,
};
use super::runs::Row;
use super::stats::{SeedGroup, Spread};

/// Every plot: its file stem and what it shows (the caption in `report.md`).
pub(super) const PLOTS: [(&str, &str); 4] = [
    (
        "accuracy_vs_max_node_macs",
        "Accuracy against the largest node's MACs; bubble area follows inference MACs (the \
         paper's figure).",
    ),
    (
        "accuracy_vs_step_time",
        "Accuracy against measured seconds per training step.",
    ),
    (
        "curves",
        "Training curves: head test accuracy and head training loss by epoch.",
    ),
    (
        "units",
        "Auxiliary classifiers' test accuracy by depth (boundary) and group: the line is the \
         group mean, the dots the groups.",
    ),
];

/// Draws `$draw` (generic over the backend) as `OUT/STEM.svg` and `OUT/STEM.png`, each written to a
/// temporary name and renamed.
macro_rules! plot_both {
    ($out:expr, $stem:expr, $rows:expr, $draw:ident) => {{
        let (out, stem): (&Path, &str) = ($out, $stem);
        for ext in ["svg", "png"] {
            let tmp = out.join(format!("{stem}.tmp.{ext}"));
            {
                let drawn = if ext == "svg" {
                    let root = SVGBackend::new(&tmp, SIZE).into_drawing_area();
                    $draw(&root, $rows).and_then(|()| root.present().map_err(perr))
                } else {
                    let root = BitMapBackend::new(&tmp, SIZE).into_drawing_area();
                    $draw(&root, $rows).and_then(|()| root.present().map_err(perr))
                };
                drawn
                    .with_context(|| format!("{}", out.join(format!("{stem}.{ext}")).display()))?;
            }
            let dst = out.join(format!("{stem}.{ext}"));
            std::fs::rename(&tmp, &dst).with_context(|| format!("{}", dst.display()))?;
        }
    }};
}

/// The runs of a report and their seed groups; `seeded` when some configuration ran with several
/// seeds, and the plots then show one point per configuration.
pub(super) struct Runs<'a> {
    /// Every run, in report order.
    pub rows: &'a [Row],
    /// Their seed groups.
    pub groups: &'a [SeedGroup],
    /// Whether a configuration ran with several seeds.
    pub seeded: bool,
}

impl Runs<'_> {
    /// Each run's colour and legend entry: its own, or its configuration's when seeded (a legend
    /// shows each entry once).
    fn styles(&self) -> Vec<(RGBColor, String)> {
        let mut styles = vec![(BLACK, String::new()); self.rows.len()];
        if self.seeded {
            for (j, g) in self.groups.iter().enumerate() {
                for &i in &g.members {
                    styles[i] = (run_colour(j), g.name.clone());
                }
            }
        } else {
            for (i, r) in self.rows.iter().enumerate() {
                styles[i] = (run_colour(i), r.name.clone());
            }
        }
        styles
    }
}

/// One point of a scatter: a run, or a configuration over its seeds (the mean, with each run
/// beside it and a bar of one standard deviation either side).
struct Point {
    x: f64,
    /// Head test accuracy, %.
    y: f64,
    /// `(mean - std, mean + std)` of a configuration over two or more seeds.
    bar: Option<(f64, f64)>,
    /// The configuration's runs, `(x, %)`.
    runs: Vec<(f64, f64)>,
    radius: i32,
    colour: RGBColor,
    family: String,
    method: String,
    name: String,
}

/// The points of a scatter of head accuracy against `x`: one per run, or one per configuration
/// when seeded; runs without a test accuracy or a positive `x` are left out.
fn points(runs: &Runs, x: &dyn Fn(&Row) -> f64, radius: &dyn Fn(&Row) -> i32) -> Vec<Point> {
    let shown = |r: &Row| r.head.is_finite() && x(r).is_finite() && x(r) > 0.0;
    let point = |r: &Row, name: &str, members: Vec<&Row>| {
        let xs = Spread::of(members.iter().map(|m| x(m)))?;
        let ys = Spread::of(members.iter().map(|m| 100.0 * m.head))?;
        Some(Point {
            x: xs.mean,
            y: ys.mean,
            bar: (ys.n > 1).then_some((ys.mean - ys.std, ys.mean + ys.std)),
            runs: if ys.n > 1 {
                members.iter().map(|m| (x(m), 100.0 * m.head)).collect()
            } else {
                Vec::new()
            },
            radius: radius(r),
            colour: family_colour(r),
            family: family_name(r),
            method: if ys.n > 1 {
                format!("{} (n={})", r.method(), ys.n)
            } else {
                r.method()
            },
            name: if ys.n > 1 {
                format!("{name} (n={})", ys.n)
            } else {
                name.to_string()
            },
        })
    };
    if runs.seeded {
        runs.groups
            .iter()
            .filter_map(|g| {
                let members: Vec<&Row> = g
                    .counted(runs.rows)
                    .into_iter()
                    .filter(|r| shown(r))
                    .collect();
                point(members.first()?, &g.name, members)
            })
            .collect()
    } else {
        runs.rows
            .iter()
            .filter(|r| shown(r))
            .filter_map(|r| point(r, &r.name, vec![r]))
            .collect()
    }
}

/// Scatter of head accuracy against an x value (log x axis), labelled, coloured by family.
fn scatter<DB: DrawingBackend>(
    root: &Area<DB>,
    shown: &[Point],
    caption: &str,
    x_desc: &str,
) -> Result<()> {
    root.fill(&WHITE).map_err(perr)?;
    let xr = log_range(
        shown
            .iter()
            .flat_map(|p| std::iter::once(p.x).chain(p.runs.iter().map(|r| r.0))),
    );
    let (ticks, grid) = log_ticks(&xr);
    let yr = accuracy_range(shown.iter().flat_map(|p| {
        let bar = p.bar.map_or(Vec::new(), |(lo, hi)| vec![lo, hi]);
        std::iter::once(p.y)
            .chain(bar)
            .chain(p.runs.iter().map(|r| r.1))
    }));
    let mut chart = ChartBuilder::on(root)
        .caption(caption, (FONT, 22))
        .margin(20)
        .x_label_area_size(50)
        .y_label_area_size(60)
        .build_cartesian_2d(
            xr.log_scale()
                .with_key_points(ticks)
                .with_light_points(grid),
            yr,
        )
        .map_err(perr)?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc("test accuracy, head (%)")
        .x_label_formatter(&log_label)
        .label_style((FONT, 14))
        .draw()
        .map_err(perr)?;
    // Points are labelled with their method, or with the run's (configuration's) name where
    // methods repeat (a grid over budgets, say).
    let unique = shown
        .iter()
        .all(|p| shown.iter().filter(|q| q.method == p.method).count() == 1);
    let mut families: Vec<String> = Vec::new();
    for p in shown {
        let colour = p.colour;
        let at = (p.x, p.y);
        let series = chart
            .draw_series(std::iter::once(Circle::new(
                at,
                p.radius,
                colour.mix(0.45).filled(),
            )))
            .map_err(perr)?;
        if !families.contains(&p.family) {
            series
                .label(p.family.clone())
                .legend(move |(x, y)| Circle::new((x + 8, y), 6, colour.filled()));
            families.push(p.family.clone());
        }
        if let Some((lo, hi)) = p.bar {
            let line = colour.stroke_width(2);
            chart
                .draw_series(std::iter::once(PathElement::new(
                    vec![(p.x, lo), (p.x, hi)],
                    line,
                )))
                .map_err(perr)?;
            chart
                .draw_series([lo, hi].map(|y| {
                    EmptyElement::at((p.x, y)) + PathElement::new(vec![(-6, 0), (6, 0)], line)
                }))
                .map_err(perr)?;
        }
        chart
            .draw_series(
                p.runs
                    .iter()
                    .map(|&r| Cross::new(r, 3, colour.stroke_width(1))),
            )
            .map_err(perr)?;
        chart
            .draw_series(std::iter::once(Circle::new(at, 2, colour.filled())))
            .map_err(perr)?;
        chart
            .draw_series(std::iter::once(
                EmptyElement::at(at)
                    + Text::new(
                        if unique {
                            p.method.clone()
                        } else {
                            p.name.clone()
                        },
                        (7, -14),
                        (FONT, 13).into_font().color(&BLACK),
                    ),
            ))
            .map_err(perr)?;
    }
    legend(&mut chart, 14)?;
    Ok(())
}

/// The paper's figure: accuracy against max node MACs, bubble area following inference MACs.
fn bubbles<DB: DrawingBackend>(root: &Area<DB>, runs: &Runs) -> Result<()> {
    let biggest = runs
        .rows
        .iter()
        .map(|r| r.inference_macs)
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let caption = if runs.seeded {
        "Accuracy vs largest node (bubble area: inference MACs; bars: ±1 std over seeds)"
    } else {
        "Accuracy vs largest node (bubble area: inference MACs)"
    };
    scatter(
        root,
        &points(runs, &|r| r.max_node_macs as f64, &|r| {
            (6.0 + 26.0 * (r.inference_macs as f64 / biggest).sqrt()) as i32
        }),
        caption,
        "max node forward MACs per image (log)",
    )
}

/// Accuracy against measured seconds per step.
fn versus_time<DB: DrawingBackend>(root: &Area<DB>, runs: &Runs) -> Result<()> {
    scatter(
        root,
        &points(runs, &|r| r.step_seconds, &|_| 8),
        "Accuracy vs measured training time",
        "seconds per training step, measured (log)",
    )
}

/// Head test accuracy and head training loss by epoch, one line per run (one colour per
/// configuration when seeded).
fn curves<DB: DrawingBackend>(root: &Area<DB>, runs: &Runs) -> Result<()> {
    let (rows, styles) = (runs.rows, runs.styles());
    root.fill(&WHITE).map_err(perr)?;
    let (left, right) = root.split_horizontally(SIZE.0 / 2);
    let epochs = rows
        .iter()
        .map(|r| r.metrics.iter().map(|m| m.epoch).max().unwrap_or(1))
        .max()
        .unwrap_or(1)
        .max(2) as f64;
    let tests = |r: &Row| -> Vec<(f64, f64)> {
        r.metrics
            .iter()
            .filter_map(|m| m.test.as_ref().map(|t| (m.epoch as f64, 100.0 * t.head)))
            .collect()
    };
    let losses = |r: &Row| -> Vec<(f64, f64)> {
        r.metrics
            .iter()
            .filter(|m| m.train_head_loss.is_finite())
            .map(|m| (m.epoch as f64, m.train_head_loss))
            .collect()
    };
    let yr = accuracy_range(rows.iter().flat_map(|r| tests(r).into_iter().map(|p| p.1)));
    let lmax = rows
        .iter()
        .flat_map(|r| losses(r).into_iter().map(|p| p.1))
        .fold(0.0f64, f64::max)
        .max(1e-3)
        * 1.1;
    let panels: [(&Area<DB>, &str, std::ops::Range<f64>, bool); 2] = [
        (&left, "head test accuracy (%)", yr, true),
        (&right, "head training loss", 0.0..lmax, false),
    ];
    for (area, desc, range, is_acc) in panels {
        let mut chart = ChartBuilder::on(area)
            .caption(desc, (FONT, 18))
            .margin(15)
            .x_label_area_size(40)
            .y_label_area_size(55)
            .build_cartesian_2d(0.5..epochs + 0.5, range)
            .map_err(perr)?;
        chart
            .configure_mesh()
            .x_desc("epoch")
            .x_labels(epochs as usize + 2)
            .x_label_formatter(&integer_label)
            .label_style((FONT, 13))
            .draw()
            .map_err(perr)?;
        let mut labelled: Vec<&str> = Vec::new();
        for (r, (colour, label)) in rows.iter().zip(&styles) {
            let pts = if is_acc { tests(r) } else { losses(r) };
            let colour = *colour;
            line_once(&mut chart, pts.clone(), colour, label, &mut labelled)?;
            chart
                .draw_series(pts.into_iter().map(|p| Circle::new(p, 3, colour.filled())))
                .map_err(perr)?;
        }
        if is_acc {
            legend(&mut chart, 12)?;
        }
    }
    Ok(())
}

/// Auxiliary test accuracy by boundary: the group mean as a line, each group as a dot.
fn units<DB: DrawingBackend>(root: &Area<DB>, runs: &Runs) -> Result<()> {
    let (rows, styles) = (runs.rows, runs.styles());
    root.fill(&WHITE).map_err(perr)?;
    let tests: Vec<Option<&groupwise::eval::EvalResult>> = rows
        .iter()
        .map(|r| r.metrics.iter().rev().find_map(|m| m.test.as_ref()))
        .collect();
    let depth = tests
        .iter()
        .map(|t| t.map_or(0, |t| t.units.len()))
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let yr = accuracy_range(
        tests
            .iter()
            .flatten()
            .flat_map(|t| t.units.iter().flatten().map(|a| 100.0 * a)),
    );
    let mut chart = ChartBuilder::on(root)
        .caption(
            "Auxiliary classifiers: test accuracy by depth and group",
            (FONT, 22),
        )
        .margin(20)
        .x_label_area_size(50)
        .y_label_area_size(60)
        .build_cartesian_2d(0.5..depth + 0.5, yr)
        .map_err(perr)?;
    chart
        .configure_mesh()
        .x_desc("boundary k (1 = after the first module)")
        .y_desc("test accuracy (%)")
        .x_labels(depth as usize + 2)
        .x_label_formatter(&integer_label)
        .label_style((FONT, 14))
        .draw()
        .map_err(perr)?;
    let mut labelled: Vec<&str> = Vec::new();
    for (t, (colour, label)) in tests.iter().zip(&styles) {
        let Some(t) = t else { continue };
        if t.units.is_empty() {
            continue;
        }
        let colour = *colour;
        let means: Vec<(f64, f64)> = t
            .units
            .iter()
            .enumerate()
            .map(|(k, g)| {
                let m = g.iter().sum::<f64>() / g.len().max(1) as f64;
                ((k + 1) as f64, 100.0 * m)
            })
            .collect();
        line_once(&mut chart, means, colour, label, &mut labelled)?;
        let dots: Vec<(f64, f64)> = t
            .units
            .iter()
            .enumerate()
            .flat_map(|(k, g)| g.iter().map(move |a| ((k + 1) as f64, 100.0 * a)))
            .collect();
        chart
            .draw_series(
                dots.into_iter()
                    .map(|p| Circle::new(p, 4, colour.mix(0.7).filled())),
            )
            .map_err(perr)?;
    }
    legend(&mut chart, 12)?;
    Ok(())
}

/// Draws every plot of [`PLOTS`] into `out`.
pub(super) fn draw(out: &Path, runs: &Runs) -> Result<()> {
    plot_both!(out, "accuracy_vs_max_node_macs", runs, bubbles);
    plot_both!(out, "accuracy_vs_step_time", runs, versus_time);
    plot_both!(out, "curves", runs, curves);
    plot_both!(out, "units", runs, units);
    Ok(())
}
