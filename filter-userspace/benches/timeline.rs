//! Rates over time as a PNG (plotters line charts): the limiter against its configured rate,
//! and a flood's offered, dropped and passed rates. One chart per plot, stacked, each with its
//! own y axis (a flood in Mpps and a client in pps do not share one).

use std::path::Path;
use std::sync::OnceLock;

use anyhow::{Context, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};

const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

/// Register the chart font once (plotters draws text only with a registered font).
pub fn use_font() -> Result<()> {
    static DONE: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    DONE.get_or_init(|| {
        let font = std::fs::read(FONT).map_err(|e| {
            format!("{FONT} (Debian fonts-dejavu-core) is needed for the charts: {e}")
        })?;
        register_font(
            "sans-serif",
            FontStyle::Normal,
            Box::leak(font.into_boxed_slice()),
        )
        .map_err(|_| format!("cannot use {FONT}"))
    })
    .clone()
    .map_err(anyhow::Error::msg)
}

/// One series: (seconds, value) points joined by a line.
pub struct Line {
    pub label: String,
    pub points: Vec<(f64, f64)>,
    pub color: RGBColor,
    /// A reference (a configured rate): drawn thinner.
    pub reference: bool,
}

impl Line {
    pub fn new(label: impl Into<String>, points: Vec<(f64, f64)>, color: RGBColor) -> Line {
        Line {
            label: label.into(),
            points,
            color,
            reference: false,
        }
    }

    /// A flat line at `value` from `t0` to `t1`.
    pub fn flat(label: impl Into<String>, value: f64, t0: f64, t1: f64, color: RGBColor) -> Line {
        Line {
            label: label.into(),
            points: vec![(t0, value), (t1, value)],
            color,
            reference: true,
        }
    }
}

/// One chart: its title, the unit of its y axis, its series.
pub struct Plot {
    pub title: String,
    pub unit: String,
    pub lines: Vec<Line>,
}

pub const BLUE: RGBColor = RGBColor(31, 119, 180);
pub const ORANGE: RGBColor = RGBColor(255, 127, 14);
pub const GREEN: RGBColor = RGBColor(44, 160, 44);
pub const RED: RGBColor = RGBColor(214, 39, 40);
pub const GREY: RGBColor = RGBColor(110, 110, 110);

const WIDTH: u32 = 1200;
const PLOT_HEIGHT: u32 = 380;
const HEADER: u32 = 36;

/// Pixel size of the picture of `plots`.
pub fn size(plots: &[Plot]) -> (u32, u32) {
    (WIDTH, HEADER + PLOT_HEIGHT * plots.len().max(1) as u32)
}

/// Write `plots` under `title` to the PNG at `path`.
pub fn draw(path: &Path, title: &str, plots: &[Plot]) -> Result<()> {
    use_font()?;
    let root = BitMapBackend::new(path, size(plots)).into_drawing_area();
    render(&root, title, plots)?;
    root.present()
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Draw `plots` on `root`, stacked.
pub fn render<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    plots: &[Plot],
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE).map_err(err)?;
    root.draw(&Text::new(
        title.to_string(),
        (12, 10),
        ("sans-serif", 18).into_font(),
    ))
    .map_err(err)?;
    let body = root.margin(HEADER, 0, 0, 0);
    let areas = body.split_evenly((plots.len().max(1), 1));
    for (plot, area) in plots.iter().zip(&areas) {
        let points = || plot.lines.iter().flat_map(|l| l.points.iter());
        let finite = |v: &f64| v.is_finite();
        let t_max = points()
            .map(|p| p.0)
            .filter(finite)
            .fold(0.0f64, f64::max)
            .max(1e-3);
        let y_max = points()
            .map(|p| p.1)
            .filter(finite)
            .fold(0.0f64, f64::max)
            .max(1e-9)
            * 1.15;
        let mut chart = ChartBuilder::on(area)
            .caption(&plot.title, ("sans-serif", 16))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(80)
            .build_cartesian_2d(0.0..t_max, 0.0..y_max)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("seconds")
            .y_desc(plot.unit.as_str())
            .label_style(("sans-serif", 13))
            .axis_desc_style(("sans-serif", 14))
            .light_line_style(RGBColor(235, 235, 235))
            .y_label_formatter(&|v| {
                if y_max >= 100.0 {
                    format!("{v:.0}")
                } else {
                    format!("{v:.1}")
                }
            })
            .draw()
            .map_err(err)?;
        for line in &plot.lines {
            let pts: Vec<(f64, f64)> = line
                .points
                .iter()
                .copied()
                .filter(|(t, v)| t.is_finite() && v.is_finite())
                .collect();
            let style = line.color.stroke_width(if line.reference { 2 } else { 3 });
            let color = line.color;
            chart
                .draw_series(std::iter::once(PathElement::new(pts, style)))
                .map_err(err)?
                .label(line.label.clone())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(3))
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .label_font(("sans-serif", 13))
            .background_style(WHITE.mix(0.85))
            .border_style(GREY)
            .draw()
            .map_err(err)?;
    }
    Ok(())
}

fn err<E: std::error::Error + Send + Sync + 'static>(e: E) -> anyhow::Error {
    anyhow::Error::new(e)
}

/// Per-interval rates from cumulative counts: `(t_mid, delta / dt * scale)` for each pair of
/// neighbouring samples `(t, count)` (a sample whose count went backwards gives 0).
pub fn rates(samples: &[(f64, u64)], scale: f64) -> Vec<(f64, f64)> {
    samples
        .windows(2)
        .filter_map(|w| {
            let dt = w[1].0 - w[0].0;
            (dt > 0.0).then(|| {
                let d = w[1].1.saturating_sub(w[0].1) as f64;
                ((w[0].0 + w[1].0) / 2.0, d / dt * scale)
            })
        })
        .collect()
}
