//! The bench table as a PNG (plotters): one horizontal bar panel per part, values printed on
//! the bars, so the chart reads without the JSON.

use std::path::Path;

use anyhow::{Context, Result};
use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};

const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

pub struct Panel {
    pub title: String,
    pub unit: &'static str,
    /// (label, value, ours?) — ours are drawn in one colour, peers in another.
    pub rows: Vec<(String, f64, bool)>,
}

pub fn draw(path: &Path, machine: &str, panels: &[Panel]) -> Result<()> {
    let font = std::fs::read(FONT)
        .with_context(|| format!("{FONT} (Debian fonts-dejavu-core) is needed for the chart"))?;
    register_font(
        "sans-serif",
        FontStyle::Normal,
        Box::leak(font.into_boxed_slice()),
    )
    .map_err(|_| anyhow::anyhow!("cannot use {FONT}"))?;
    let row_h = 26u32;
    let heights: Vec<u32> = panels
        .iter()
        .map(|p| 50 + row_h * p.rows.len() as u32)
        .collect();
    let width = 1100u32;
    let height = 40 + heights.iter().sum::<u32>();
    let root = BitMapBackend::new(path, (width, height)).into_drawing_area();
    root.fill(&WHITE)?;
    root.draw(&Text::new(
        format!("floodgate bench — {machine}"),
        (12, 10),
        ("sans-serif", 18).into_font(),
    ))?;
    let mut y = 40i32;
    let label_w = 360i32;
    let bar_max = width as i32 - label_w - 120;
    for (panel, h) in panels.iter().zip(&heights) {
        root.draw(&Text::new(
            panel.title.clone(),
            (12, y + 8),
            ("sans-serif", 16).into_font(),
        ))?;
        let max = panel
            .rows
            .iter()
            .map(|r| r.1)
            .fold(0.0f64, f64::max)
            .max(1e-9);
        for (i, (label, value, ours)) in panel.rows.iter().enumerate() {
            let top = y + 36 + i as i32 * row_h as i32;
            root.draw(&Text::new(
                label.clone(),
                (12, top + 4),
                ("sans-serif", 13).into_font(),
            ))?;
            let len = ((value / max) * bar_max as f64).round().max(1.0) as i32;
            let color = if *ours {
                RGBColor(31, 119, 180)
            } else {
                RGBColor(170, 170, 170)
            };
            root.draw(&Rectangle::new(
                [(label_w, top), (label_w + len, top + row_h as i32 - 6)],
                color.filled(),
            ))?;
            root.draw(&Text::new(
                format!("{value:.1} {}", panel.unit),
                (label_w + len + 6, top + 4),
                ("sans-serif", 13).into_font(),
            ))?;
        }
        y += *h as i32;
    }
    root.present()?;
    Ok(())
}
