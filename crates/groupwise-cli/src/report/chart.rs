//! Chart furniture shared by the report's plots: the font, the image size, colours by family and
//! by run, axis ranges, log-axis ticks and labels, legends, and a line with one legend entry.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Result};
use plotters::coord::types::RangedCoordf64;
use plotters::coord::{CoordTranslate, Shift};
use plotters::prelude::*;

use super::runs::Row;

/// The font every plot's text uses.
pub(super) const FONT: &str = "sans-serif";

/// Registers a TrueType file as [`FONT`] (once per process).
pub(super) fn register_font(explicit: Option<&Path>) -> Result<()> {
    static DONE: std::sync::OnceLock<std::result::Result<(), String>> = std::sync::OnceLock::new();
    let candidates = [
        "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/TTF/DejaVuSans.ttf",
        "/usr/share/fonts/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
        "/usr/share/fonts/liberation/LiberationSans-Regular.ttf",
    ];
    let result = DONE.get_or_init(|| {
        let path = match explicit {
            Some(p) => p.to_path_buf(),
            None => match candidates.iter().map(PathBuf::from).find(|p| p.exists()) {
                Some(p) => p,
                None => {
                    return Err("no TrueType font for the plots: install fonts-dejavu-core \
                         (apt-get install fonts-dejavu-core) or pass --font FILE.ttf"
                        .into())
                }
            },
        };
        let bytes = std::fs::read(&path).map_err(|e| format!("--font {}: {e}", path.display()))?;
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        plotters::style::register_font(FONT, FontStyle::Normal, bytes)
            .map_err(|_| format!("{} is not a TrueType font", path.display()))
    });
    result.clone().map_err(|e| anyhow!(e))
}

pub(super) const SIZE: (u32, u32) = (960, 640);

pub(super) type Area<DB> = DrawingArea<DB, Shift>;

/// A plotting error as text (the backends' error types differ).
pub(super) fn perr<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("plotting: {e:?}")
}

/// The series legend, boxed in the lower right corner.
pub(super) fn legend<'a, DB: DrawingBackend + 'a, CT: CoordTranslate>(
    chart: &mut ChartContext<'a, DB, CT>,
    font_size: u32,
) -> Result<()> {
    chart
        .configure_series_labels()
        .label_font((FONT, font_size))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerRight)
        .draw()
        .map_err(perr)
}

/// The paper's colours: end-to-end black, DGL green, G=2 blue, G=4 yellow, G=8 brown; other G from
/// a palette.
pub(super) fn family_colour(r: &Row) -> RGBColor {
    colour_of(r.is_end_to_end(), r.config.groups)
}

/// [`family_colour`] of a configuration: end-to-end, or its G.
pub(super) fn colour_of(end_to_end: bool, groups: i64) -> RGBColor {
    match (end_to_end, groups) {
        (true, _) => RGBColor(20, 20, 20),
        (false, 1) => RGBColor(34, 139, 34),
        (false, 2) => RGBColor(31, 90, 200),
        (false, 4) => RGBColor(225, 170, 0),
        (false, 8) => RGBColor(140, 80, 30),
        (false, g) => {
            let c = Palette99::pick(g as usize).to_rgba();
            RGBColor(c.0, c.1, c.2)
        }
    }
}

pub(super) fn family_name(r: &Row) -> String {
    match (r.is_end_to_end(), r.config.groups) {
        (true, _) => "end-to-end".into(),
        (false, 1) => "DGL (G=1)".into(),
        (false, g) => format!("G={g}"),
    }
}

/// One colour per run: ten dark, distinct colours, then a palette.
pub(super) fn run_colour(i: usize) -> RGBColor {
    const COLOURS: [RGBColor; 10] = [
        RGBColor(20, 20, 20),
        RGBColor(34, 139, 34),
        RGBColor(31, 90, 200),
        RGBColor(230, 120, 0),
        RGBColor(140, 80, 30),
        RGBColor(200, 30, 60),
        RGBColor(120, 60, 170),
        RGBColor(0, 140, 140),
        RGBColor(120, 120, 120),
        RGBColor(180, 150, 0),
    ];
    COLOURS.get(i).copied().unwrap_or_else(|| {
        let c = Palette99::pick(i).to_rgba();
        RGBColor(c.0, c.1, c.2)
    })
}

/// `[lo, hi]` of accuracies in percent, padded, within [0, 100].
pub(super) fn accuracy_range(values: impl Iterator<Item = f64>) -> std::ops::Range<f64> {
    let v: Vec<f64> = values.filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return 0.0..100.0;
    }
    let lo = v.iter().cloned().fold(f64::INFINITY, f64::min);
    let hi = v.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let pad = ((hi - lo) * 0.15).max(1.0);
    (lo - pad).max(0.0)..(hi + pad).min(101.0)
}

/// `[lo, hi]` of positive values on a log axis, padded by a factor.
pub(super) fn log_range(values: impl Iterator<Item = f64>) -> std::ops::Range<f64> {
    let v: Vec<f64> = values.filter(|x| x.is_finite() && *x > 0.0).collect();
    if v.is_empty() {
        return 1.0..10.0;
    }
    let lo = v.iter().cloned().fold(f64::INFINITY, f64::min);
    let hi = v.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    lo / 1.6..hi * 1.6
}

/// Ticks of a log axis over `range`: labelled ones at 1, 2 and 5 times powers of ten (every
/// 1..9 multiple when that gives fewer than three), and light grid lines at every 1..9 multiple.
pub(super) fn log_ticks(range: &std::ops::Range<f64>) -> (Vec<f64>, Vec<f64>) {
    let (lo, hi) = (range.start, range.end);
    if !(lo > 0.0 && hi > lo && hi.is_finite()) {
        return (Vec::new(), Vec::new());
    }
    let multiples = |mantissas: &[f64]| -> Vec<f64> {
        let mut out = Vec::new();
        for exp in lo.log10().floor() as i32..=hi.log10().ceil() as i32 {
            for m in mantissas {
                // Through a decimal string, so 0.2 is 0.2 and labels print short.
                match format!("{m}e{exp}").parse::<f64>() {
                    Ok(v) if v >= lo && v <= hi => out.push(v),
                    _ => {}
                }
            }
        }
        out
    };
    let all = multiples(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]);
    let bold = multiples(&[1.0, 2.0, 5.0]);
    if bold.len() >= 3 {
        (bold, all)
    } else {
        (all.clone(), all)
    }
}

/// A log axis tick label: plain decimals from 0.001 to 9999, else `2e6` style.
pub(super) fn log_label(v: &f64) -> String {
    if *v >= 1e-3 && *v < 1e4 {
        let text = format!("{v:.3}");
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        format!("{v:e}")
    }
}

/// Tick labels of an integer axis: whole numbers only.
pub(super) fn integer_label(v: &f64) -> String {
    if (v - v.round()).abs() < 1e-6 {
        format!("{v:.0}")
    } else {
        String::new()
    }
}

/// Draws `pts` as a line of `colour` with a legend entry `label`, unless `labelled` already has one
/// (the runs of one configuration share an entry).
pub(super) fn line_once<'a, 'l, DB: DrawingBackend + 'a>(
    chart: &mut ChartContext<'a, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>,
    pts: Vec<(f64, f64)>,
    colour: RGBColor,
    label: &'l str,
    labelled: &mut Vec<&'l str>,
) -> Result<()> {
    let series = chart
        .draw_series(LineSeries::new(pts, colour.stroke_width(2)))
        .map_err(perr)?;
    if !labelled.contains(&label) {
        labelled.push(label);
        series.label(label).legend(move |(x, y)| {
            PathElement::new(vec![(x, y), (x + 16, y)], colour.stroke_width(2))
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_axes_label_a_few_round_values_in_every_range() {
        // The MACs of the README's sweep: 1, 2 and 5 times powers of ten.
        let (bold, light) = log_ticks(&(1.5e6..8.6e7));
        assert_eq!(bold, vec![2e6, 5e6, 1e7, 2e7, 5e7]);
        assert_eq!(light.len(), 16);
        assert_eq!(
            bold.iter().map(log_label).collect::<Vec<_>>(),
            ["2e6", "5e6", "1e7", "2e7", "5e7"]
        );
        // Less than a decade (seconds per step): every multiple is labelled.
        let (bold, _) = log_ticks(&(0.17..0.9));
        assert_eq!(bold, vec![0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]);
        assert_eq!(log_label(&0.2), "0.2");
        assert_eq!(log_label(&3.0), "3");
        assert_eq!(log_label(&0.015), "0.015");
        // Degenerate ranges draw no ticks rather than panic.
        assert_eq!(log_ticks(&(0.0..1.0)), (vec![], vec![]));
        assert_eq!(log_ticks(&(2.0..2.0)), (vec![], vec![]));
    }
}
