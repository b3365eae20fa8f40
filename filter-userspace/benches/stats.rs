//! Medians and spreads over rounds, and ratios paired within a round: on a noisy VM a figure
//! only means something next to its reference measured in the same round.

use serde_json::{json, Value};

/// A figure over rounds: median, min and max, and the samples in round order.
#[derive(Clone, Debug)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub samples: Vec<f64>,
}

impl Spread {
    pub fn of(samples: &[f64]) -> Spread {
        let mut v: Vec<f64> = samples.iter().copied().filter(|x| x.is_finite()).collect();
        v.sort_by(|a, b| a.total_cmp(b));
        let median = match v.len() {
            0 => f64::NAN,
            n if n % 2 == 1 => v[n / 2],
            n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
        };
        Spread {
            median,
            min: v.first().copied().unwrap_or(f64::NAN),
            max: v.last().copied().unwrap_or(f64::NAN),
            samples: samples.to_vec(),
        }
    }

    /// Per-round `f(a[i], b[i])`: a figure against its reference of the same round.
    pub fn paired(a: &[f64], b: &[f64], f: impl Fn(f64, f64) -> f64) -> Spread {
        let v: Vec<f64> = a.iter().zip(b).map(|(&x, &y)| f(x, y)).collect();
        Spread::of(&v)
    }

    /// Per-round ratio `a[i] / b[i]`.
    pub fn ratio(a: &[f64], b: &[f64]) -> Spread {
        Spread::paired(a, b, |x, y| x / y)
    }

    pub fn json(&self) -> Value {
        json!({"median": self.median, "min": self.min, "max": self.max, "samples": self.samples})
    }

    /// `12.3 (11.0-14.1)` with `prec` decimals.
    pub fn show(&self, prec: usize) -> String {
        format!(
            "{:.p$} ({:.p$}-{:.p$})",
            self.median,
            self.min,
            self.max,
            p = prec
        )
    }

    /// `0.35x (0.31-0.40)`.
    pub fn show_ratio(&self) -> String {
        self.show_ratio_prec(2)
    }

    /// As [`show_ratio`](Self::show_ratio), with `prec` decimals.
    pub fn show_ratio_prec(&self, prec: usize) -> String {
        format!(
            "{:.p$}x ({:.p$}-{:.p$})",
            self.median,
            self.min,
            self.max,
            p = prec
        )
    }

    pub fn range(&self) -> Option<(f64, f64)> {
        (self.min.is_finite() && self.max.is_finite()).then_some((self.min, self.max))
    }
}

/// A goal: met or not, and by how much (the median against the bound).
pub fn verdict_at_most(s: &Spread, bound: f64) -> Value {
    json!({"bound": format!("<= {bound}"), "median": s.median, "worst_round": s.max,
           "met": s.median <= bound, "met_every_round": s.max <= bound})
}

pub fn verdict_at_least(s: &Spread, bound: f64) -> Value {
    json!({"bound": format!(">= {bound}"), "median": s.median, "worst_round": s.min,
           "met": s.median >= bound, "met_every_round": s.min >= bound})
}

/// One line for the goals summary.
pub fn goal_line(name: &str, v: &Value) -> String {
    let met = v["met"].as_bool().unwrap_or(false);
    let every = v["met_every_round"].as_bool().unwrap_or(false);
    format!(
        "{:<62} {:>10} median {:>7.3}, worst round {:>7.3}: {}",
        name,
        v["bound"].as_str().unwrap_or(""),
        v["median"].as_f64().unwrap_or(f64::NAN),
        v["worst_round"].as_f64().unwrap_or(f64::NAN),
        match (met, every) {
            (true, true) => "MET (every round)",
            (true, false) => "met (median; not every round)",
            _ => "NOT MET",
        }
    )
}
