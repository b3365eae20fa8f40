//! Allow and block lists: editing them (add, del, load, replace, flush), planning what the
//! program must see (pure: entries in, words out, capacity checked before anything is
//! written), and publishing the plan as one new generation.

pub mod compile;
pub mod entries;

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{bail, Result};
use filter_common::trie::{Family, ROOT_BITS, TRIE_LISTS, TRIE_PROTECTED};
use filter_common::{ListKind, LIST_CAPACITY};

use crate::error::usage;
use crate::state::snapshot::{EntryList, Origin};
use crate::state::{Entry, Plan, Session, Snapshot};
use compile::{Built, Extent, Item, Region};
use entries::Prefix;

/// A change to one list.
#[derive(Clone, Debug)]
pub enum Edit {
    Add(Vec<Prefix>),
    /// Every entry must be on the list, exactly as it was added.
    Del(Vec<Prefix>),
    Replace(Vec<Prefix>),
    Flush,
}

/// What a change did, for the operator.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Change {
    pub added: usize,
    pub removed: usize,
    pub total: usize,
    /// The generation now in force.
    pub generation: u64,
}

fn sorted_entries(prefixes: impl IntoIterator<Item = Prefix>) -> [Vec<Entry>; 2] {
    let mut out: [Vec<Entry>; 2] = Default::default();
    for p in prefixes {
        out[p.family() as usize].push(Entry::of(p));
    }
    for l in &mut out {
        l.sort_unstable();
        l.dedup();
    }
    out
}

/// Entries in exactly one of two sorted lists.
fn symmetric_difference(a: &EntryList, b: &EntryList) -> Vec<Entry> {
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::new();
    while i < a.len() || j < b.len() {
        if i == a.len() {
            out.push(b.get(j));
            j += 1;
        } else if j == b.len() {
            out.push(a.get(i));
            i += 1;
        } else {
            let (x, y) = (a.get(i), b.get(j));
            if x == y {
                i += 1;
                j += 1;
            } else if x < y {
                out.push(x);
                i += 1;
            } else {
                out.push(y);
                j += 1;
            }
        }
    }
    out
}

/// A list after an edit: the new entries and those that changed (added or removed).
pub struct Edited {
    pub lists: [EntryList; 2],
    pub changed: [Vec<Entry>; 2],
    pub change: Change,
}

/// The `origin` lists of `kind` after `edit` (pure). Deleting an absent entry is a usage
/// error (naming the policy file when the entry comes from there); a list over capacity is
/// refused.
pub fn edit_lists(old: &Snapshot, origin: Origin, kind: ListKind, edit: Edit) -> Result<Edited> {
    let current = |f: Family| old.list(origin, kind, f);
    let (lists, changed): ([EntryList; 2], [Vec<Entry>; 2]) = match edit {
        Edit::Replace(prefixes) => {
            let new = sorted_entries(prefixes);
            let lists =
                Family::ALL.map(|f| EntryList::from_sorted(f, new[f as usize].iter().copied()));
            let changed = Family::ALL.map(|f| symmetric_difference(current(f), &lists[f as usize]));
            (lists, changed)
        }
        Edit::Flush => (
            Family::ALL.map(EntryList::new),
            Family::ALL.map(|f| current(f).iter().collect()),
        ),
        Edit::Add(prefixes) => {
            let mut add = sorted_entries(prefixes);
            for f in Family::ALL {
                add[f as usize].retain(|e| !current(f).contains(e));
            }
            let lists = Family::ALL.map(|f| current(f).merged(&add[f as usize]));
            (lists, add)
        }
        Edit::Del(prefixes) => {
            let del = sorted_entries(prefixes);
            let absent: Vec<String> = Family::ALL
                .iter()
                .flat_map(|&f| {
                    del[f as usize]
                        .iter()
                        .filter(move |e| !current(f).contains(e))
                        .map(move |e| e.prefix(f).to_string())
                })
                .collect();
            if !absent.is_empty() {
                let from_policy = Family::ALL.iter().any(|&f| {
                    del[f as usize]
                        .iter()
                        .any(|e| old.list(Origin::Policy, kind, f).contains(e))
                });
                let hint = match (&old.policy.policy.source, from_policy) {
                    (Some(file), true) => format!(
                        "; entries from the policy file change only by editing {} and applying it",
                        file.display()
                    ),
                    _ => String::new(),
                };
                return Err(usage(format!(
                    "not on the {} list: {}; nothing was changed (see `floodgate {} list`){hint}",
                    kind.name(),
                    crate::text::capped(absent, ", "),
                    kind.name()
                )));
            }
            let lists = Family::ALL.map(|f| current(f).without(&del[f as usize]));
            (lists, del)
        }
    };
    for family in Family::ALL {
        let n = lists[family as usize].len();
        if n > LIST_CAPACITY as usize {
            bail!(usage(format!(
                "the {} list would hold {n} {} entries; a list holds at most {LIST_CAPACITY} per address family: nothing was changed; aggregate entries into shorter prefixes",
                kind.name(),
                family.name()
            )));
        }
    }
    let mut change = Change {
        generation: old.generation,
        ..Default::default()
    };
    for family in Family::ALL {
        let f = family as usize;
        let removed = changed[f]
            .iter()
            .filter(|e| current(family).contains(e))
            .count();
        change.removed += removed;
        change.added += changed[f].len() - removed;
        change.total += lists[f].len();
    }
    Ok(Edited {
        lists,
        changed,
        change,
    })
}

/// The items of a trie's lists (both origins) of `family` inside partition `p16` (longer
/// than /16), sorted.
fn partition_items(s: &Snapshot, trie: u32, family: Family, p16: u16) -> Vec<Item> {
    let lo = u128::from(p16) << 112;
    let mut items = Vec::new();
    for (origin, kind) in Origin::ALL
        .into_iter()
        .flat_map(|o| ListKind::ALL.map(|k| (o, k)))
        .filter(|(_, k)| k.trie() == trie)
    {
        let list = s.list(origin, kind, family);
        let start = list.partition_point(|e| e.addr < lo);
        let end = if p16 == u16::MAX {
            list.len()
        } else {
            list.partition_point(|e| e.addr < lo + (1u128 << 112))
        };
        items.extend(
            (start..end)
                .map(|i| list.get(i))
                .filter(|e| u32::from(e.len) > ROOT_BITS)
                .map(|e| Item {
                    addr: e.addr,
                    len: e.len,
                    verdict: kind.verdict() as u8,
                }),
        );
    }
    items.sort_unstable();
    items
}

/// Free runs of the pool given the extents in use (node 0 is never used).
fn free_runs(in_use: impl Iterator<Item = Extent>, pool_nodes: u32) -> Vec<Extent> {
    let mut used: Vec<Extent> = in_use.collect();
    used.sort_unstable_by_key(|e| e.first);
    let mut free = Vec::new();
    let mut at = 1u32;
    for e in used {
        if e.first > at {
            free.push(Extent {
                first: at,
                count: e.first - at,
            });
        }
        at = at.max(e.end());
    }
    if pool_nodes > at {
        free.push(Extent {
            first: at,
            count: pool_nodes - at,
        });
    }
    free
}

/// A partition's place: trie, family and /16.
type PartKey = (u32, Family, u16);

/// One partition to recompile: its items, and the chunks it had in the last generation.
struct Job {
    key: PartKey,
    items: Vec<Item>,
    old: BTreeMap<Region, Extent>,
}

/// Whether an entry in `changed` (sorted) lies inside `region` and is longer than it: only
/// those can change the region's chunk.
fn touches(changed: &[Entry], region: Region) -> bool {
    let from = changed.partition_point(|e| e.addr < region.start);
    changed[from..]
        .iter()
        .take_while(|e| e.addr <= region.last())
        .any(|e| e.len > region.depth)
}

/// Compile partitions on every core: a full list is tens of thousands of them. `changed`
/// holds the changed entries per trie and family, sorted.
fn compile_all(jobs: &[Job], changed: &[[Vec<Entry>; 2]; 2]) -> Vec<Built> {
    let one = |job: &Job| {
        let (trie, family, p16) = job.key;
        let changed = &changed[trie as usize][family as usize];
        let keep = |r: Region| job.old.contains_key(&r) && !touches(changed, r);
        compile::build(family, Region::partition(p16), &job.items, true, &keep)
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    if threads == 1 || jobs.len() < 256 {
        return jobs.iter().map(one).collect();
    }
    let chunk = jobs.len().div_ceil(threads);
    std::thread::scope(|s| {
        // A part whose thread cannot start (thread limit, no memory for a stack) is compiled
        // here, after the others started.
        let started: Vec<_> = jobs
            .chunks(chunk)
            .map(|part| {
                let spawned = std::thread::Builder::new()
                    .spawn_scoped(s, move || part.iter().map(one).collect::<Vec<_>>());
                (part, spawned.ok())
            })
            .collect();
        started
            .into_iter()
            .flat_map(|(part, handle)| match handle {
                Some(h) => h.join().expect("compiler thread panicked"),
                None => part.iter().map(one).collect(),
            })
            .collect()
    })
}

/// Everything needed to go from `old` to a snapshot with `edits` made to its lists and,
/// if given, `policy` in force (pure): the next snapshot, the chunks to write and where,
/// and every table of the new generation. Capacity is checked here, before anything is
/// written.
pub fn plan(
    old: Snapshot,
    edits: Vec<(Origin, ListKind, Edited)>,
    policy: Option<crate::state::snapshot::AppliedPolicy>,
    pool_nodes: u32,
) -> Result<Plan> {
    let free_before = free_runs(
        old.chunks
            .iter()
            .flatten()
            .flat_map(|p| p.values().copied()),
        pool_nodes,
    );
    let in_use = old.pool_in_use();
    let mut next = old;
    next.generation += 1;
    if let Some(p) = policy {
        next.policy = p;
    }
    let mut changed_all: [[Vec<Entry>; 2]; 2] = Default::default();
    for (origin, kind, edited) in edits {
        let Edited { lists, changed, .. } = edited;
        for (family, list) in Family::ALL.into_iter().zip(lists) {
            *next.list_mut(origin, kind, family) = list;
        }
        for family in Family::ALL {
            changed_all[kind.trie() as usize][family as usize]
                .extend(changed[family as usize].iter().copied());
        }
    }
    let mut jobs = Vec::new();
    for trie in [TRIE_LISTS, TRIE_PROTECTED] {
        for family in Family::ALL {
            let changed = &mut changed_all[trie as usize][family as usize];
            changed.sort_unstable();
            let touched: BTreeSet<u16> = changed
                .iter()
                .filter(|e| u32::from(e.len) > ROOT_BITS)
                .map(|e| (e.addr >> 112) as u16)
                .collect();
            for p16 in touched {
                let region = Region::partition(p16);
                let chunks = &mut next.chunks[trie as usize][family as usize];
                let inside: Vec<Region> = chunks
                    .range(
                        region..=Region {
                            start: region.last(),
                            depth: 128,
                        },
                    )
                    .map(|(r, _)| *r)
                    .collect();
                let old = inside
                    .into_iter()
                    .map(|r| (r, chunks.remove(&r).expect("listed")))
                    .collect();
                jobs.push(Job {
                    key: (trie, family, p16),
                    items: partition_items(&next, trie, family, p16),
                    old,
                });
            }
        }
    }
    let built = compile_all(&jobs, &changed_all);
    // Copy on write: new chunks go only where nothing of the old generation lives.
    let mut free = free_before;
    let needed: u64 = built.iter().map(Built::new_nodes).sum();
    let available: u64 = free.iter().map(|e| u64::from(e.count)).sum();
    let mut alloc = |n: u32| -> Result<u32> {
        let Some(run) = free.iter_mut().find(|r| r.count >= n) else {
            // Room for the lists in force and this change, with some to spare.
            let suggest = ((in_use + needed) * 5 / 4).div_ceil(1 << 20) << 20;
            bail!(
                "the lists need {needed} free nodes in the list pool for this change, but it has {available}{} (capacity {pool_nodes}, {in_use} in use: a change keeps the nodes of the lists in force until it takes effect): nothing was changed. Ways out: make the change smaller (a `--replace` by a very different list needs room for both; `floodgate block flush` then `floodgate block load FILE` needs room for the new list alone, but leaves the list empty in between; deleting entries elsewhere frees nodes); or re-create the filter with a larger pool: save both lists (`floodgate block list > block.txt`, `floodgate allow list > allow.txt`), run `floodgate detach --all`, then `floodgate attach IFACE --list-capacity {suggest}` and load them again (the interfaces are unfiltered until then)",
                if available >= needed { " but not in one piece" } else { "" }
            );
        };
        run.first += n;
        run.count -= n;
        Ok(run.first - n)
    };
    let mut chunks = Vec::new();
    for (job, b) in jobs.iter().zip(built) {
        if job.items.is_empty() {
            continue;
        }
        let (trie, family, _) = job.key;
        b.place(
            &mut alloc,
            &job.old,
            &mut next.chunks[trie as usize][family as usize],
            &mut chunks,
        )?;
    }
    let tables = crate::policy::apply::tables(&next.policy)?;
    Ok(Plan {
        roots: [TRIE_LISTS, TRIE_PROTECTED].map(|t| Family::ALL.map(|f| next.root_tables(t, f))),
        snapshot: next,
        chunks,
        tables,
    })
}

/// Apply `edit` to the command-line list `kind` of the filter pinned at `pins`, as one new
/// generation.
pub fn change(pins: &crate::state::PinDir, kind: ListKind, edit: Edit) -> Result<Change> {
    change_in(Session::open_for_change(pins)?, kind, edit)
}

/// As [`change`], in a session the caller opened for change.
pub fn change_in(session: Session, kind: ListKind, edit: Edit) -> Result<Change> {
    let t = std::time::Instant::now();
    let old = session.current()?;
    tracing::debug!("read snapshot: {:.1} ms", t.elapsed().as_secs_f64() * 1e3);
    let edited = edit_lists(&old, Origin::Cli, kind, edit)?;
    let mut change = edited.change;
    if change.added == 0 && change.removed == 0 {
        return Ok(change);
    }
    let plan = plan(
        old,
        vec![(Origin::Cli, kind, edited)],
        None,
        session.pool_nodes(),
    )?;
    tracing::debug!("planned: {:.1} ms", t.elapsed().as_secs_f64() * 1e3);
    change.generation = plan.snapshot.generation;
    session.commit(plan)?;
    Ok(change)
}

/// Every entry of one list (both origins), IPv4 first, each family sorted.
pub fn entries(s: &Snapshot, kind: ListKind) -> impl Iterator<Item = Prefix> + '_ {
    Family::ALL
        .into_iter()
        .flat_map(move |f| s.union(kind, f).into_iter().map(move |e| e.prefix(f)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use compile::Image;
    use filter_common::trie::{CELL_ALLOW, CELL_BLOCK, CELL_NONE};
    use rand::{Rng, SeedableRng};

    fn p(t: &str) -> Prefix {
        entries::parse_entry(t).unwrap()
    }

    /// What the program would see after a plan: the old image with the plan's partitions
    /// written into their extents and the new root tables, read by the shared lookup.
    struct Pool {
        nodes: Vec<filter_common::trie::Node>,
        meta: Vec<filter_common::trie::NodeMeta>,
    }

    impl Pool {
        fn new(n: u32) -> Pool {
            Pool {
                nodes: vec![Default::default(); n as usize],
                meta: vec![Default::default(); n as usize],
            }
        }

        fn apply(&mut self, plan: &Plan) {
            for c in &plan.chunks {
                let at = c.extent.first as usize..c.extent.end() as usize;
                self.nodes[at.clone()].copy_from_slice(&c.nodes);
                self.meta[at].copy_from_slice(&c.meta);
            }
        }

        /// The program's view after `plan` (the pool moves into the image and back).
        fn image(&mut self, plan: &Plan, family: Family) -> Image {
            Image {
                family,
                root: plan.roots[0][family as usize].clone(),
                nodes: std::mem::take(&mut self.nodes),
                meta: std::mem::take(&mut self.meta),
                directory: Default::default(),
            }
        }

        fn restore(&mut self, image: Image) {
            self.nodes = image.nodes;
            self.meta = image.meta;
        }

        fn lookup(&mut self, plan: &Plan, family: Family, addr: u128) -> u64 {
            let image = self.image(plan, family);
            let v = image.lookup(addr);
            self.restore(image);
            v
        }
    }

    fn apply(pool: &mut Pool, s: &mut Snapshot, kind: ListKind, edit: Edit) -> Plan {
        let edited = edit_lists(s, Origin::Cli, kind, edit).unwrap();
        let plan = plan(
            s.clone(),
            vec![(Origin::Cli, kind, edited)],
            None,
            pool.nodes.len() as u32,
        )
        .unwrap();
        pool.apply(&plan);
        *s = plan.snapshot.clone();
        plan
    }

    #[test]
    fn edits_count_what_changed() {
        let s = Snapshot::default();
        let e = edit_lists(
            &s,
            Origin::Cli,
            ListKind::Block,
            Edit::Add(vec![p("10.0.0.0/8"), p("10.0.0.0/8"), p("::1")]),
        )
        .unwrap();
        let c = e.change;
        assert_eq!((c.added, c.removed, c.total), (2, 0, 2));
        let mut s2 = s.clone();
        for (f, l) in Family::ALL.into_iter().zip(e.lists) {
            *s2.list_mut(Origin::Cli, ListKind::Block, f) = l;
        }
        let again = edit_lists(&s2, Origin::Cli, ListKind::Block, Edit::Add(vec![p("::1")]))
            .unwrap()
            .change;
        assert_eq!((again.added, again.total), (0, 2));
        let err = edit_lists(
            &s2,
            Origin::Cli,
            ListKind::Block,
            Edit::Del(vec![p("10.0.0.0/9")]),
        )
        .err()
        .unwrap();
        assert!(
            format!("{err}").contains("not on the block list: 10.0.0.0/9"),
            "{err}"
        );
        let c = edit_lists(
            &s2,
            Origin::Cli,
            ListKind::Block,
            Edit::Replace(vec![p("::1"), p("192.0.2.1")]),
        )
        .unwrap()
        .change;
        assert_eq!((c.added, c.removed, c.total), (1, 1, 2));
    }

    #[test]
    fn capacity_is_checked_against_the_final_list() {
        let s = Snapshot::default();
        let many: Vec<Prefix> = (0..=LIST_CAPACITY)
            .map(|i| Prefix::v4(i << 8, 24))
            .collect();
        let err = edit_lists(&s, Origin::Cli, ListKind::Block, Edit::Replace(many))
            .err()
            .unwrap();
        assert!(
            format!("{err}").contains("at most 2097152 per address family"),
            "{err}"
        );
    }

    #[test]
    fn a_full_pool_is_refused_before_anything_is_written() {
        let s = Snapshot::default();
        let many: Vec<Prefix> = (0..100u32)
            .map(|i| Prefix::v4(0x0a00_0001 + (i << 16), 32))
            .collect();
        let edited = edit_lists(&s, Origin::Cli, ListKind::Block, Edit::Add(many)).unwrap();
        let err = plan(s, vec![(Origin::Cli, ListKind::Block, edited)], None, 50).unwrap_err();
        assert!(format!("{err}").contains("nothing was changed"), "{err}");
    }

    /// Random edits, round after round: the pool must read as a fresh compile of the lists,
    /// and (chunk for chunk) hold exactly the chunks a fresh compile makes.
    fn incremental_rounds(seed: u64, chunk_items: usize) {
        compile::CHUNK_ITEMS_FOR_TEST.with(|c| c.set(chunk_items));
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut pool = Pool::new(1 << 16);
        let mut s = Snapshot::default();
        for round in 0..40 {
            let kind = if rng.random_bool(0.3) {
                ListKind::Allow
            } else {
                ListKind::Block
            };
            let random: Vec<Prefix> = (0..rng.random_range(1..30))
                .map(|_| {
                    if rng.random_bool(0.5) {
                        Prefix::v4(
                            0x0a00_0000 | (rng.random::<u32>() >> rng.random_range(8..32)),
                            rng.random_range(0..=32),
                        )
                    } else {
                        Prefix::v6(
                            (0x2001_0db8u128 << 96)
                                ^ (rng.random::<u128>() >> rng.random_range(16..128)),
                            rng.random_range(0..=128),
                        )
                    }
                })
                .collect();
            let edit = match round % 4 {
                0 | 1 => Edit::Add(random),
                2 => {
                    let present: Vec<Prefix> = entries(&s, kind).take(5).collect();
                    if present.is_empty() {
                        Edit::Add(random)
                    } else {
                        Edit::Del(present)
                    }
                }
                _ => Edit::Replace(random),
            };
            let before: Vec<Extent> = s
                .chunks
                .iter()
                .flatten()
                .flat_map(|m| m.values().copied())
                .collect();
            let plan = apply(&mut pool, &mut s, kind, edit);
            // Copy on write: nothing is written where the old generation lives.
            for new in plan.chunks.iter().map(|c| c.extent) {
                assert!(
                    before
                        .iter()
                        .all(|old| new.end() <= old.first || old.end() <= new.first),
                    "round {round}: {new:?} overlaps the old generation"
                );
            }
            // Every placed chunk lies inside the pool and they never overlap.
            let mut extents: Vec<Extent> = s
                .chunks
                .iter()
                .flatten()
                .flat_map(|m| m.values().copied())
                .collect();
            extents.sort_unstable_by_key(|e| e.first);
            assert!(extents.windows(2).all(|w| w[0].end() <= w[1].first));
            for family in Family::ALL {
                let mut items: Vec<Item> = Vec::new();
                for k in [ListKind::Allow, ListKind::Block] {
                    items.extend(s.list(Origin::Cli, k, family).iter().map(|e| Item {
                        addr: e.addr,
                        len: e.len,
                        verdict: k.verdict() as u8,
                    }));
                }
                items.sort_unstable();
                let fresh = Image::compile(family, &items);
                let sizes = |d: &BTreeMap<Region, Extent>| -> Vec<(Region, u32)> {
                    d.iter().map(|(r, e)| (*r, e.count)).collect()
                };
                assert_eq!(
                    sizes(&s.chunks[0][family as usize]),
                    sizes(&fresh.directory),
                    "round {round} {family:?}: the chunks differ from a fresh compile's"
                );
                let seen = pool.image(&plan, family);
                for _ in 0..2000 {
                    let mut probe: u128 = if rng.random_bool(0.7) && !items.is_empty() {
                        let it = items[rng.random_range(0..items.len())];
                        it.addr
                            | rng
                                .random::<u128>()
                                .checked_shr(u32::from(it.len))
                                .unwrap_or(0)
                    } else if family == Family::V4 {
                        u128::from(0x0a00_0000 | rng.random::<u32>() >> 8) << 96
                    } else {
                        (0x2001_0db8u128 << 96) ^ (rng.random::<u128>() >> 16)
                    };
                    if family == Family::V4 {
                        probe &= u128::MAX << 96;
                    }
                    assert_eq!(
                        seen.lookup(probe),
                        fresh.lookup(probe),
                        "round {round} {family:?} {probe:#x}"
                    );
                }
                pool.restore(seen);
            }
        }
    }

    #[test]
    fn incremental_changes_match_a_fresh_compile() {
        incremental_rounds(5, compile::CHUNK_ITEMS);
    }

    #[test]
    fn incremental_changes_with_links_at_every_level_match_a_fresh_compile() {
        // Chunks of at most 3 entries: every change goes through links, kept chunks, and
        // chunks that switch between linked and inline.
        for seed in 0..4 {
            incremental_rounds(100 + seed, 3);
        }
    }

    #[test]
    fn one_change_in_a_crowded_partition_rewrites_few_nodes() {
        // 6to4 (2002::/16) holds 44% of a real country list: one /16, hundreds of thousands
        // of entries. A change there must rewrite its path of chunks, not the /16.
        let mut rng = rand::rngs::StdRng::seed_from_u64(9);
        let mut pool = Pool::new(1 << 20);
        let mut s = Snapshot::default();
        let crowd: Vec<Prefix> = (0..3 * compile::CHUNK_ITEMS)
            .map(|_| {
                let len = *[48u8, 64, 128].get(rng.random_range(0..3)).unwrap();
                Prefix::v6((0x2002u128 << 112) | (rng.random::<u128>() >> 16), len)
            })
            .collect();
        let full = apply(&mut pool, &mut s, ListKind::Block, Edit::Add(crowd));
        let full_nodes: usize = full.chunks.iter().map(|c| c.nodes.len()).sum();
        for round in 0..20 {
            let addr = (0x2002u128 << 112) | (rng.random::<u128>() >> 16);
            let one = Prefix::v6(addr, 128);
            let kind = if round % 2 == 0 {
                ListKind::Block
            } else {
                ListKind::Allow
            };
            let plan = apply(&mut pool, &mut s, kind, Edit::Add(vec![one]));
            let written: usize = plan.chunks.iter().map(|c| c.nodes.len()).sum();
            assert!(
                written * 20 < full_nodes,
                "round {round}: one entry rewrote {written} of {full_nodes} nodes"
            );
            let expected = kind.verdict();
            assert_eq!(pool.lookup(&plan, Family::V6, addr), expected);
            let plan = apply(&mut pool, &mut s, kind, Edit::Del(vec![one]));
            assert_ne!(
                pool.lookup(&plan, Family::V6, addr),
                CELL_ALLOW,
                "round {round}: deleted"
            );
        }
        // After all that churn, the pool still reads as a fresh compile of the lists.
        let items: Vec<Item> = s
            .list(Origin::Cli, ListKind::Block, Family::V6)
            .iter()
            .map(|e| Item {
                addr: e.addr,
                len: e.len,
                verdict: CELL_BLOCK as u8,
            })
            .collect();
        let fresh = Image::compile(Family::V6, &items);
        let plan = apply(&mut pool, &mut s, ListKind::Allow, Edit::Flush);
        for _ in 0..20_000 {
            let it = items[rng.random_range(0..items.len())];
            let probe = it.addr | rng.random::<u128>().checked_shr(it.len.into()).unwrap_or(0);
            assert_eq!(pool.lookup(&plan, Family::V6, probe), fresh.lookup(probe));
        }
    }

    #[test]
    fn the_last_partition_of_each_family_works() {
        let mut pool = Pool::new(1 << 12);
        let mut s = Snapshot::default();
        let plan = apply(
            &mut pool,
            &mut s,
            ListKind::Block,
            Edit::Add(vec![
                p("255.255.255.255"),
                p("ffff:ffff::/32"),
                p("ffff::1"),
            ]),
        );
        let at = |t: &str| p(t).top_aligned();
        assert_eq!(
            pool.lookup(&plan, Family::V4, at("255.255.255.255")),
            CELL_BLOCK
        );
        assert_eq!(
            pool.lookup(&plan, Family::V4, at("255.255.255.254")),
            CELL_NONE
        );
        assert_eq!(
            pool.lookup(&plan, Family::V6, at("ffff:ffff::7")),
            CELL_BLOCK
        );
        assert_eq!(pool.lookup(&plan, Family::V6, at("ffff::1")), CELL_BLOCK);
        assert_eq!(pool.lookup(&plan, Family::V6, at("ffff::2")), CELL_NONE);
    }

    #[test]
    fn allow_and_block_combine_in_one_trie() {
        let mut pool = Pool::new(1 << 12);
        let mut s = Snapshot::default();
        apply(
            &mut pool,
            &mut s,
            ListKind::Block,
            Edit::Add(vec![p("198.51.100.0/24"), p("2001:db8::/32")]),
        );
        let plan = apply(
            &mut pool,
            &mut s,
            ListKind::Allow,
            Edit::Add(vec![p("198.51.100.7"), p("2001:db8:1::/48")]),
        );
        let at = |t: &str| p(t).top_aligned();
        assert_eq!(
            pool.lookup(&plan, Family::V4, at("198.51.100.7")),
            CELL_ALLOW
        );
        assert_eq!(
            pool.lookup(&plan, Family::V4, at("198.51.100.8")),
            CELL_BLOCK
        );
        assert_eq!(
            pool.lookup(&plan, Family::V4, at("198.51.101.8")),
            CELL_NONE
        );
        assert_eq!(
            pool.lookup(&plan, Family::V6, at("2001:db8:1::5")),
            CELL_ALLOW
        );
        assert_eq!(
            pool.lookup(&plan, Family::V6, at("2001:db8:2::5")),
            CELL_BLOCK
        );
    }
}
