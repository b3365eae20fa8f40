//! Publishing a policy: its lists, rules and limits become one new generation together with
//! everything else the program reads, so no packet is judged by half of the old policy and
//! half of the new one. A failed or interrupted apply leaves the previous policy in force.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Result};
use filter_common::limits::{GlobalBucket, LimitConf, MAX_LIMITS, PER_GLOBAL};
use filter_common::rules::MAX_RULES;
use filter_common::trie::Family;
use filter_common::{
    ListKind, PolicyConfig, MAX_INTERFACES, POLICY_BANS, POLICY_KNOWN, POLICY_PROTECTED,
};
use serde::Serialize;

use super::rules::RuleTables;
use super::{guard, limits, load, Policy};
use crate::lists::{edit_lists, plan, Edit, Edited};
use crate::state::attach::AttachOutcome;
use crate::state::snapshot::{AppliedPolicy, Origin};
use crate::state::{PinDir, Session, Snapshot};

/// Everything policy-wide a set holds, compiled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyTables {
    pub config: PolicyConfig,
    pub rules: RuleTables,
    /// `MAX_LIMITS` entries, the first `config.limits` in use.
    pub limits: Vec<LimitConf>,
}

/// The table rules of a policy, in match order, each with its counter slot.
fn rule_specs(a: &AppliedPolicy) -> Vec<(filter_common::model::RuleSpec, u32)> {
    a.policy
        .rules
        .iter()
        .flat_map(|r| {
            let slot = a.rule_slots.get(&r.name).copied().unwrap_or(0);
            r.specs().map(move |s| (s, slot))
        })
        .collect()
}

/// Ban prefix lengths of a family the program looks up: those of the limits that ban, and
/// those of the live bans (placed by hand, or by limits since removed, until they lapse).
fn ban_prefixes(a: &AppliedPolicy, family: Family) -> Result<[u8; 4]> {
    let mut by_limits: Vec<u8> = a
        .policy
        .limits
        .iter()
        .filter(|l| l.ban_seconds.is_some())
        .map(|l| match family {
            Family::V4 => l.prefix_v4,
            Family::V6 => l.prefix_v6,
        })
        .collect();
    by_limits.sort_unstable();
    by_limits.dedup();
    let mut lens = by_limits.clone();
    lens.extend(a.manual_ban_prefixes[family as usize].iter().copied());
    lens.sort_unstable();
    lens.dedup();
    if lens.len() > 4 {
        let shown = |l: &[u8]| {
            l.iter()
                .map(|x| format!("/{x}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let by_bans: Vec<u8> = lens
            .iter()
            .copied()
            .filter(|l| !by_limits.contains(l))
            .collect();
        if by_limits.len() > 4 {
            bail!(
                "limits ban at {} distinct {} prefix lengths ({}); at most 4: give the limits that ban the same prefix_v4/prefix_v6",
                by_limits.len(),
                family.name(),
                shown(&by_limits)
            );
        }
        bail!(
            "bans would be looked up at {} distinct {} prefix lengths ({}); at most 4: bans at {} (placed by hand, or by limits no longer in the policy) keep those lengths in use: lift them with `floodgate bans del` or `floodgate bans flush`, or wait for them to lapse",
            lens.len(),
            family.name(),
            shown(&lens),
            shown(&by_bans)
        );
    }
    let mut out = [0u8; 4];
    // A /0 ban would end the list early: ban lookups need at least one bit.
    for (o, l) in out.iter_mut().zip(lens.iter().filter(|&&l| l > 0)) {
        *o = *l;
    }
    Ok(out)
}

/// Compile the policy-wide tables of a generation (pure).
pub fn tables(a: &AppliedPolicy) -> Result<PolicyTables> {
    let p = &a.policy;
    let rules = super::rules::compile(&rule_specs(a))?;
    let mut limits = vec![LimitConf::default(); MAX_LIMITS as usize];
    for (slot, l) in limits.iter_mut().zip(&p.limits) {
        *slot = limits::conf(l, a.limit_slots.get(&l.name).copied().unwrap_or(0), a.cpus);
    }
    let v4 = ban_prefixes(a, Family::V4)?;
    let v6 = ban_prefixes(a, Family::V6)?;
    let mut flags = 0;
    if v4[0] != 0 || v6[0] != 0 {
        flags |= POLICY_BANS;
    }
    if p.limits
        .iter()
        .any(|l| l.per == PER_GLOBAL && l.known_sources_first)
    {
        flags |= POLICY_KNOWN;
    }
    if !p.limits.is_empty() && a.has_protected {
        flags |= POLICY_PROTECTED;
    }
    Ok(PolicyTables {
        config: PolicyConfig {
            malformed_policy: p.malformed_policy() as u32,
            block_mode: if p.block_monitor { 1 } else { 0 },
            rule_words: rules.words,
            rule_dims: rules.dims,
            limits: p.limits.len() as u32,
            flags,
            ban_prefixes_v4: v4,
            ban_prefixes_v6: v6,
        },
        rules,
        limits,
    })
}

/// Give every rule and limit a counter slot, keeping the slot of a name that stays.
fn slots(old: &BTreeMap<String, u32>, names: &[&str], max: u32) -> BTreeMap<String, u32> {
    let mut out: BTreeMap<String, u32> = names
        .iter()
        .filter_map(|n| old.get(*n).map(|&s| (n.to_string(), s)))
        .collect();
    let used: Vec<u32> = out.values().copied().collect();
    let mut free = (0..max).filter(|s| !used.contains(s));
    for n in names {
        if !out.contains_key(*n) {
            out.insert(n.to_string(), free.next().expect("fewer names than slots"));
        }
    }
    out
}

/// The policy as it will be in force.
pub fn applied(old: &AppliedPolicy, policy: Policy) -> AppliedPolicy {
    let rule_names: Vec<&str> = policy.rules.iter().map(|r| r.name.as_str()).collect();
    let limit_names: Vec<&str> = policy.limits.iter().map(|l| l.name.as_str()).collect();
    AppliedPolicy {
        rule_slots: slots(&old.rule_slots, &rule_names, MAX_RULES),
        limit_slots: slots(&old.limit_slots, &limit_names, MAX_LIMITS),
        cpus: aya::util::online_cpus().map_or(1, |c| c.len() as u32),
        applied_at: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        has_protected: !policy.lists.protected.is_empty(),
        manual_ban_prefixes: old.manual_ban_prefixes.clone(),
        policy,
    }
}

/// The policy was published, but interfaces it names could not be attached (each with why).
#[derive(Debug, thiserror::Error)]
pub struct NotAttached {
    pub generation: u64,
    pub failed: Vec<String>,
    /// The apply had loaded the filter itself and, with nothing attached, removed it again.
    pub unloaded: bool,
}

impl std::fmt::Display for NotAttached {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let failed = self.failed.join("; ");
        if self.unloaded {
            write!(
                f,
                "could not attach to {failed}; nothing was attached, so nothing is loaded"
            )
        } else {
            write!(
                f,
                "the policy is in force as generation {}, but could not attach to {failed}; nothing was detached",
                self.generation
            )
        }
    }
}

/// What an apply changes (or would change, with `--dry-run`).
#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub generation: u64,
    pub lists: BTreeMap<String, (usize, usize)>,
    pub rules_added: Vec<String>,
    pub rules_removed: Vec<String>,
    pub rules_changed: Vec<String>,
    pub limits_added: Vec<String>,
    pub limits_removed: Vec<String>,
    pub limits_changed: Vec<String>,
    pub attach: Vec<String>,
    pub detach: Vec<String>,
    pub settings_changed: Vec<String>,
    /// The filter is not loaded: the apply loads it first.
    pub loads: bool,
    /// The policy in force already is this one (lists, rules, limits, settings, interfaces):
    /// nothing is published, and `generation` stays in force.
    pub unchanged: bool,
}

fn diff_named<T: PartialEq>(
    old: &[T],
    new: &[T],
    name: impl Fn(&T) -> &str,
) -> (Vec<String>, Vec<String>, Vec<String>) {
    let find = |list: &[T], n: &str| list.iter().position(|x| name(x) == n);
    let added = new
        .iter()
        .filter(|x| find(old, name(x)).is_none())
        .map(|x| name(x).to_string())
        .collect();
    let removed = old
        .iter()
        .filter(|x| find(new, name(x)).is_none())
        .map(|x| name(x).to_string())
        .collect();
    let changed = new
        .iter()
        .filter(|x| find(old, name(x)).is_some_and(|i| old[i] != **x))
        .map(|x| name(x).to_string())
        .collect();
    (added, removed, changed)
}

/// List edits of one apply: origin, list and the edited entries.
type ListEdits = Vec<(Origin, ListKind, Edited)>;

/// What `policy` changes against `old` with `attached` interfaces: the list edits, the
/// report and the next applied policy. Checks that interfaces exist and (without `force`) the
/// lockout guard; changes nothing.
fn prepare(
    old: &Snapshot,
    attached: Vec<String>,
    policy: &Policy,
    path: &Path,
    force: bool,
) -> Result<(ListEdits, Report, AppliedPolicy)> {
    limits::check_bans(&policy.limits)?;
    let mut edits = Vec::new();
    let mut report = Report::default();
    for (kind, entries) in [
        (ListKind::Allow, &policy.lists.allow),
        (ListKind::Block, &policy.lists.block),
        (ListKind::Protected, &policy.lists.protected),
    ] {
        let edited = edit_lists(old, Origin::Policy, kind, Edit::Replace(entries.clone()))?;
        report.lists.insert(
            kind.name().to_string(),
            (edited.change.added, edited.change.removed),
        );
        if edited.change.added + edited.change.removed > 0 {
            edits.push((Origin::Policy, kind, edited));
        }
    }
    let old_p = &old.policy.policy;
    (
        report.rules_added,
        report.rules_removed,
        report.rules_changed,
    ) = diff_named(&old_p.rules, &policy.rules, |r| &r.name);
    (
        report.limits_added,
        report.limits_removed,
        report.limits_changed,
    ) = diff_named(&old_p.limits, &policy.limits, |l| &l.name);
    if old_p.malformed_pass != policy.malformed_pass {
        report.settings_changed.push("malformed".into());
    }
    if old_p.block_monitor != policy.block_monitor {
        report.settings_changed.push("lists.mode".into());
    }
    if let Some(want) = &policy.interfaces {
        report.attach = want
            .names
            .iter()
            .filter(|n| !attached.contains(n))
            .cloned()
            .collect();
        report.detach = attached
            .iter()
            .filter(|n| !want.names.contains(n))
            .cloned()
            .collect();
    }
    for name in report.attach.iter() {
        if crate::state::attach::ifindex(name).is_none() {
            bail!(crate::error::UsageError(format!(
                "interface {name} named in {} does not exist (see `ip link`); nothing was changed",
                path.display()
            )));
        }
    }
    let next = applied(&old.policy, policy.clone());
    if !force {
        guard::check(old, &next, policy)?;
    }
    report.generation = old.generation;
    report.unchanged = changes_nothing(&old.policy, &edits, &report, &next);
    Ok((edits, report, next))
}

/// Whether publishing `next` would change nothing: no list edits, no interface to attach or
/// detach, and the same policy with the same slots (only the time of the apply differs). A
/// daemon then leaves the generation in force alone when an editor saves the file unchanged.
fn changes_nothing(
    old: &AppliedPolicy,
    edits: &ListEdits,
    report: &Report,
    next: &AppliedPolicy,
) -> bool {
    // The stored policy keeps no list entries (the snapshot holds them): the list edits say
    // whether they changed.
    let without_lists = |a: &AppliedPolicy| {
        let mut a = a.clone();
        a.policy.lists = Default::default();
        a.applied_at = 0;
        a
    };
    edits.is_empty()
        && report.attach.is_empty()
        && report.detach.is_empty()
        && without_lists(old) == without_lists(next)
}

/// Check `path`, guard against lockout, and publish it as one generation (or, with
/// `dry_run`, only say what would change). A policy with interfaces loads the filter if
/// it is not loaded yet.
pub fn apply(pins: &PinDir, path: &Path, dry_run: bool, force: bool) -> Result<Report> {
    let policy = load(path)?;
    let mut loaded_here = false;
    if !pins.is_loaded() {
        if policy.interfaces.is_none() {
            bail!(
                "floodgate is not loaded at {}: give {} an [interfaces] section to load and attach it, or run `floodgate attach IFACE` first",
                pins.shown(),
                path.display()
            );
        }
        // Everything is checked against an empty filter before anything is loaded.
        let (_, mut report, _) = prepare(&Snapshot::default(), Vec::new(), &policy, path, force)?;
        if dry_run {
            report.loads = true;
            return Ok(report);
        }
        let _locked = crate::state::pins::Locked::creating(pins)?;
        crate::state::attach::ensure_loaded(pins, filter_common::maps::DEFAULT_POOL_NODES)?;
        loaded_here = true;
    }
    let result = apply_loaded(pins, path, &policy, dry_run, force);
    if loaded_here {
        let attached_any = crate::state::attach::attached(pins).map_or(true, |a| {
            a.iter()
                .any(|i| i.state == crate::state::attach::LinkState::Attached)
        });
        if !attached_any {
            // Nothing filters: leave nothing pinned (the maps hold 160 MiB), as a failed
            // first `attach` does.
            match crate::state::attach::detach_all(pins) {
                Ok(_) => {
                    if let Err(e) = result {
                        return Err(match e.downcast::<NotAttached>() {
                            Ok(n) => NotAttached {
                                unloaded: true,
                                ..n
                            }
                            .into(),
                            Err(e) => e,
                        });
                    }
                }
                Err(e) => tracing::warn!("cannot remove what this apply loaded: {e:#}"),
            }
        }
    }
    result
}

fn apply_loaded(
    pins: &PinDir,
    path: &Path,
    policy: &Policy,
    dry_run: bool,
    force: bool,
) -> Result<Report> {
    let mut session = Session::open_for_change(pins)?;
    let old = session.current()?;
    let links = crate::state::attach::attached(pins)?;
    refuse_mode_changes(&links, policy, path)?;
    let attached: Vec<String> = links.into_iter().map(|a| a.name).collect();
    let (edits, mut report, mut next) = prepare(&old, attached, policy, path, force)?;
    if dry_run {
        return Ok(report);
    }
    // The program ignores bans of protected sources: lift them, so that `bans list` does not
    // show them and their lengths are not looked up.
    crate::state::bans::lift_covered(pins, &policy.lists.protected)?;
    next.manual_ban_prefixes = crate::state::bans::live_prefix_lengths(pins)?;
    // The bans placed by hand may have changed since (placed, lapsed): check again with them.
    report.unchanged = changes_nothing(&old.policy, &edits, &report, &next);
    if report.unchanged {
        return Ok(report);
    }
    let new_rule_slots: Vec<u32> = next
        .rule_slots
        .iter()
        .filter(|(n, _)| !old.policy.rule_slots.contains_key(*n))
        .map(|(_, &s)| s)
        .collect();
    let new_limit_slots: Vec<u32> = next
        .limit_slots
        .iter()
        .filter(|(n, _)| !old.policy.limit_slots.contains_key(*n))
        .map(|(_, &s)| s)
        .collect();
    let reset_slots = changed_global_slots(&old.policy, &next);
    let plan = plan(old, edits, Some(next), session.pool_nodes())?;
    report.generation = plan.snapshot.generation;
    // Slots given to new names start at zero; the old generation does not count into them.
    session.reset_counters(&new_rule_slots, &new_limit_slots)?;
    // Global buckets are keyed by counter slot: a limit that is new or whose rate changed
    // starts with full buckets, not with what another limit or its old rate left.
    reset_global_buckets(pins, &reset_slots)?;
    session.commit(plan)?;
    if let Some(want) = &policy.interfaces {
        if !report.attach.is_empty() {
            let done = crate::state::attach::attach(
                pins,
                &report.attach,
                super::attach_mode(&want.mode),
                None,
            )?;
            let failed: Vec<String> = done
                .outcomes
                .iter()
                .filter_map(|(name, outcome)| match outcome {
                    AttachOutcome::Failed(e) => Some(format!("{name} ({e:#})")),
                    _ => None,
                })
                .collect();
            if !failed.is_empty() {
                // Interfaces still filtered stay filtered: nothing is detached.
                return Err(NotAttached {
                    generation: report.generation,
                    failed,
                    unloaded: false,
                }
                .into());
            }
        }
        if !report.detach.is_empty() {
            crate::state::attach::detach(pins, &report.detach)?;
        }
    }
    Ok(report)
}

/// An interface the policy names in another mode than the one it is attached in: refused, as
/// `attach` refuses it (switching means detaching, and the interface is unfiltered in between;
/// an apply never does that by itself, and must not report the policy in force while the
/// interface runs in the other mode).
fn refuse_mode_changes(
    links: &[crate::state::attach::AttachedIface],
    policy: &Policy,
    path: &Path,
) -> Result<()> {
    let Some(want) = &policy.interfaces else {
        return Ok(());
    };
    if want.mode == "auto" {
        return Ok(());
    }
    for link in links {
        // A link without a record, or filtering an interface of another namespace, has no
        // mode to compare.
        if want.names.contains(&link.name)
            && link.state == crate::state::attach::LinkState::Attached
            && link.present
            && matches!(link.mode, "native" | "skb")
            && link.mode != want.mode
        {
            let shown = crate::text::name(&link.name);
            bail!(crate::error::UsageError(format!(
                "{} asks for {shown} in {} mode, but it is attached in {} mode; to switch, run `floodgate detach {shown}` and apply again (the interface is unfiltered in between); nothing was changed",
                path.display(),
                want.mode,
                link.mode
            )));
        }
    }
    Ok(())
}

/// Counter slots of the global limits of `next` that are new (by name and slot) or whose
/// costs differ from the limit of the same name in `old`.
fn changed_global_slots(old: &AppliedPolicy, next: &AppliedPolicy) -> Vec<u32> {
    let costs = |c: &LimitConf| {
        (
            c.per,
            c.pkt_cost,
            c.pkt_tolerance,
            c.byte_cost,
            c.byte_tolerance,
        )
    };
    next.policy
        .limits
        .iter()
        .filter(|l| l.per == PER_GLOBAL)
        .filter_map(|l| {
            let slot = next.limit_slots.get(&l.name).copied()?;
            let new = limits::conf(l, slot, next.cpus);
            let kept = old
                .policy
                .limits
                .iter()
                .find(|o| o.name == l.name && old.limit_slots.get(&o.name) == Some(&slot))
                .is_some_and(|o| costs(&limits::conf(o, slot, old.cpus)) == costs(&new));
            (!kept).then_some(slot)
        })
        .collect()
}

/// Empty the global buckets of these limit counter slots, on every CPU and interface.
fn reset_global_buckets(pins: &PinDir, slots: &[u32]) -> Result<()> {
    if slots.is_empty() {
        return Ok(());
    }
    let mut buckets: aya::maps::PerCpuArray<_, GlobalBucket> = aya::maps::PerCpuArray::try_from(
        aya::maps::Map::PerCpuArray(pins.open_map(filter_common::maps::GLOBAL_BUCKETS)?),
    )?;
    let cpus = aya::util::nr_cpus().map_err(|(_, e)| e)?;
    for &slot in slots {
        for iface in 0..MAX_INTERFACES {
            let zeros = aya::maps::PerCpuValues::try_from(vec![GlobalBucket::default(); cpus])?;
            buckets.set(slot * MAX_INTERFACES + iface, zeros, 0)?;
        }
    }
    Ok(())
}

/// Change the malformed-packet policy alone, as one generation.
pub fn set_malformed(pins: &PinDir, pass: bool) -> Result<u64> {
    let session = Session::open_for_change(pins)?;
    let old = session.current()?;
    if old.policy.policy.malformed_pass == pass {
        return Ok(old.generation);
    }
    let mut next = old.policy.clone();
    next.policy.malformed_pass = pass;
    let plan = plan(old, Vec::new(), Some(next), session.pool_nodes())?;
    let generation = plan.snapshot.generation;
    session.commit(plan)?;
    Ok(generation)
}

/// Look bans up at the lengths of the policy's ban limits, those of the live bans and
/// `adding` (bans about to be placed), as one generation if that changes anything. Refused,
/// with nothing changed, when that makes more than four lengths in a family.
pub fn ensure_ban_prefixes(session: Session, adding: &[(Family, u8)]) -> Result<()> {
    let old = session.current()?;
    let mut next = old.policy.clone();
    next.manual_ban_prefixes = crate::state::bans::live_prefix_lengths(&session.pins)?;
    for &(family, len) in adding {
        let l = &mut next.manual_ban_prefixes[family as usize];
        if !l.contains(&len) {
            l.push(len);
            l.sort_unstable();
        }
    }
    if next == old.policy {
        return Ok(());
    }
    // Checked here, before anything is written: at most four lengths per family.
    tables(&next)?;
    let plan = plan(old, Vec::new(), Some(next), session.pool_nodes())?;
    session.commit(plan)
}

/// Look bans up only at the lengths still in use (after bans were lifted).
pub fn sync_ban_prefixes(session: Session) -> Result<()> {
    ensure_ban_prefixes(session, &[])
}
