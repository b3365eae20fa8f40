//! `sampling`: the setting readers of sampled drops get (1 in N, the cap per second), shown or
//! changed at run time.

use anyhow::Result;

use crate::observe::samples;
use crate::outln;
use crate::state::pins::{Access, Locked};
use crate::state::PinDir;

pub fn sampling(pins: &PinDir, every: Option<u32>, cap: Option<u32>, json: bool) -> Result<()> {
    let _locked = Locked::loaded(pins, Access::Read)?;
    if every.is_some() || cap.is_some() {
        samples::configure(pins, every, cap)?;
    }
    let s = samples::status(pins)?;
    if json {
        outln!("{}", serde_json::to_string_pretty(&s)?)?;
    } else {
        outln!("{}", render(&s))?;
    }
    Ok(())
}

/// One line for `sampling` and `status`.
pub fn render(s: &samples::SamplingStatus) -> String {
    let now = match (s.readers, s.effective_every) {
        (0, _) => "off (no reader)".to_string(),
        (_, 0) => format!("off ({} reader(s), sampling set to 0)", s.readers),
        (n, 1) => format!(
            "every drop, {n} reader(s){}",
            if s.raised {
                ", raised by a capture"
            } else {
                ""
            }
        ),
        (n, e) => format!("1 in {e}, {n} reader(s)"),
    };
    let t = &s.samples;
    let setting = match s.every {
        0 => "off for readers that do not raise it".to_string(),
        n => format!("1 in {n} drops"),
    };
    format!(
        "sampling: {setting}, at most {} records/s; now {now}; since load {} records written, {} samples refused by the cap, {} records lost to a full ring",
        s.cap_per_second, t.written, t.capped, t.lost
    )
}
