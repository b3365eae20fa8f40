//! The bench table as a PNG (plotters): one horizontal bar panel per part, values printed on
//! the bars (with the min-max over rounds as a whisker where there is one), so the chart reads
//! without the JSON.

use std::path::Path;

use anyhow::Result;
use plotters::prelude::*;

pub struct Panel {
    pub title: String,
    pub unit: &'static str,
    pub rows: Vec<Bar>,
    /// A goal or reference drawn as a vertical dashed line, with its label.
    pub mark: Option<(f64, String)>,
}

pub struct Bar {
    pub label: String,
    /// The median.
    pub value: f64,
    /// Ours are drawn in one colour, peers in another.
    pub ours: bool,
    /// Min and max over rounds, drawn as a whisker.
    pub range: Option<(f64, f64)>,
}

impl Bar {
    pub fn new(label: impl Into<String>, value: f64, ours: bool) -> Bar {
        Bar {
            label: label.into(),
            value,
            ours,
            range: None,
        }
    }

    pub fn spread(label: impl Into<String>, s: &crate::stats::Spread, ours: bool) -> Bar {
        Bar {
            label: label.into(),
            value: s.median,
            ours,
            range: s.range(),
        }
    }
}

pub fn draw(path: &Path, machine: &str, panels: &[Panel]) -> Result<()> {
    crate::timeline::use_font()?;
    let row_h = 26u32;
    let heights: Vec<u32> = panels
        .iter()
        .map(|p| 50 + row_h * p.rows.len() as u32)
        .collect();
    let width = 1400u32;
    let height = 40 + heights.iter().sum::<u32>();
    let root = BitMapBackend::new(path, (width, height)).into_drawing_area();
    root.fill(&WHITE)?;
    root.draw(&Text::new(
        format!("floodgate bench — {machine}"),
        (12, 10),
        ("sans-serif", 18).into_font(),
    ))?;
    let mut y = 40i32;
    let label_w = 460i32;
    let bar_max = width as i32 - label_w - 240;
    for (panel, h) in panels.iter().zip(&heights) {
        root.draw(&Text::new(
            panel.title.clone(),
            (12, y + 8),
            ("sans-serif", 16).into_font(),
        ))?;
        let max = panel
            .rows
            .iter()
            .map(|r| r.range.map_or(r.value, |(_, hi)| hi.max(r.value)))
            .chain(panel.mark.as_ref().map(|m| m.0))
            .filter(|v| v.is_finite())
            .fold(0.0f64, f64::max)
            .max(1e-9);
        let x_of = |v: f64| label_w + ((v / max) * bar_max as f64).round().max(1.0) as i32;
        let prec = if max < 10.0 { 2 } else { 1 };
        for (i, bar) in panel.rows.iter().enumerate() {
            let top = y + 36 + i as i32 * row_h as i32;
            let bottom = top + row_h as i32 - 6;
            root.draw(&Text::new(
                bar.label.clone(),
                (12, top + 4),
                ("sans-serif", 13).into_font(),
            ))?;
            let value = if bar.value.is_finite() {
                bar.value
            } else {
                0.0
            };
            let color = if bar.ours {
                RGBColor(31, 119, 180)
            } else {
                RGBColor(170, 170, 170)
            };
            root.draw(&Rectangle::new(
                [(label_w, top), (x_of(value), bottom)],
                color.filled(),
            ))?;
            let mut text_x = x_of(value);
            if let Some((lo, hi)) = bar.range {
                let mid = (top + bottom) / 2;
                let black = RGBColor(0, 0, 0);
                root.draw(&PathElement::new(
                    vec![(x_of(lo), mid), (x_of(hi), mid)],
                    black.stroke_width(1),
                ))?;
                for x in [x_of(lo), x_of(hi)] {
                    root.draw(&PathElement::new(
                        vec![(x, mid - 5), (x, mid + 5)],
                        black.stroke_width(1),
                    ))?;
                }
                text_x = text_x.max(x_of(hi));
            }
            let text = match bar.range {
                Some((lo, hi)) => {
                    format!("{value:.prec$} {} ({lo:.prec$}-{hi:.prec$})", panel.unit)
                }
                None => format!("{value:.prec$} {}", panel.unit),
            };
            root.draw(&Text::new(
                text,
                (text_x + 6, top + 4),
                ("sans-serif", 13).into_font(),
            ))?;
        }
        if let Some((v, label)) = &panel.mark {
            let x = x_of(*v);
            let red = RGBColor(200, 30, 30);
            let (y0, y1) = (y + 30, y + 36 + panel.rows.len() as i32 * row_h as i32);
            let mut yy = y0;
            while yy < y1 {
                root.draw(&PathElement::new(
                    vec![(x, yy), (x, (yy + 4).min(y1))],
                    red.stroke_width(1),
                ))?;
                yy += 8;
            }
            root.draw(&Text::new(
                label.clone(),
                (x + 4, y + 20),
                ("sans-serif", 12).into_font().color(&red),
            ))?;
        }
        y += *h as i32;
    }
    root.present()?;
    Ok(())
}
