//! The bench's time-series charts (benches/timeline.rs), tested without root: the bench itself
//! is a `harness = false` binary whose tests `cargo test` would not run.

#[path = "../benches/timeline.rs"]
mod timeline;

use plotters::prelude::{BitMapBackend, IntoDrawingArea, RGBColor};
use timeline::*;

fn plots() -> Vec<Plot> {
    let passed: Vec<(f64, u64)> = (0..40u32)
        .map(|i| (f64::from(i) * 0.1, u64::from(i) * 2000))
        .collect();
    vec![
        Plot {
            title: "limiter".into(),
            unit: "pps".into(),
            lines: vec![
                Line::flat("configured", 20_000.0, 0.0, 3.9, GREY),
                Line::new("passed", rates(&passed, 1.0), BLUE),
            ],
        },
        Plot {
            title: "client".into(),
            unit: "pps".into(),
            lines: vec![
                Line::new("delivered", vec![(0.0, 900.0), (3.9, 1000.0)], RED),
                Line::new("offered", vec![(0.0, 1500.0), (3.9, 1500.0)], ORANGE),
            ],
        },
    ]
}

#[test]
fn rates_are_deltas_over_time_at_the_midpoint() {
    let r = rates(&[(0.0, 0), (0.1, 2000), (0.3, 2000), (0.4, 1000)], 1.0);
    let want = [(0.05, 20_000.0), (0.2, 0.0), (0.35, 0.0)];
    assert_eq!(r.len(), want.len());
    for ((t, v), (wt, wv)) in r.iter().zip(want) {
        assert!((t - wt).abs() < 1e-9 && (v - wv).abs() < 1e-6, "{r:?}");
    }
}

#[test]
fn every_series_is_drawn_in_its_colour() {
    use_font().unwrap();
    let p = plots();
    let (w, h) = size(&p);
    let mut buf = vec![0u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        render(&root, "test", &p).unwrap();
        root.present().unwrap();
    }
    let has = |c: RGBColor| buf.chunks(3).any(|px| px == [c.0, c.1, c.2]);
    for c in [GREY, BLUE, RED, ORANGE] {
        assert!(has(c), "no pixel of {c:?}");
    }
    assert!(!has(GREEN), "a colour no series uses was drawn");
}

#[test]
fn the_png_has_the_size_of_its_plots() {
    let dir = std::env::temp_dir().join(format!("fg-timeline-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("t.png");
    let p = plots();
    let drawn = draw(&path, "test", &p);
    let bytes = std::fs::read(&path);
    std::fs::remove_dir_all(&dir).unwrap();
    drawn.unwrap();
    let bytes = bytes.unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    // IHDR: width and height, big-endian, right after the chunk's length and type.
    let w = u32::from_be_bytes(bytes[16..20].try_into().unwrap());
    let h = u32::from_be_bytes(bytes[20..24].try_into().unwrap());
    assert_eq!((w, h), size(&p));
    assert!(h > w / 2, "two plots stack: {w}x{h}");
}
