//! `policy`: the malformed-packet policy.

use anyhow::Result;
use filter_common::MalformedPolicy;

use crate::cli::MalformedArg;
use crate::outln;
use crate::state::pins::{Access, Locked};
use crate::state::{maps, PinDir};

pub fn malformed_name(policy: u32) -> &'static str {
    if policy == MalformedPolicy::Pass as u32 {
        "pass"
    } else {
        "drop"
    }
}

pub fn policy(pins: &PinDir, malformed: Option<MalformedArg>) -> Result<()> {
    let _locked = Locked::loaded(pins, Access::Write)?;
    let mut map = maps::config(pins)?;
    let mut config = map.get(&0, 0)?;
    if let Some(m) = malformed {
        config.malformed_policy = match m {
            MalformedArg::Drop => MalformedPolicy::Drop,
            MalformedArg::Pass => MalformedPolicy::Pass,
        } as u32;
        map.set(0, config, 0)?;
        return super::report_done(
            "the policy is in force",
            format_args!(
                "malformed packets: {}\n",
                malformed_name(config.malformed_policy)
            ),
        );
    }
    outln!(
        "malformed packets: {}",
        malformed_name(config.malformed_policy)
    )?;
    Ok(())
}
