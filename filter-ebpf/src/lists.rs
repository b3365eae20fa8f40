//! List membership through the compiled structures described in filter-common.

use filter_common::{
    mask_v6, summary_cell, summary_state, v4_detail_slot, v6_filter48_bit, v6_filter_cell,
    verdict24_cell, ListKind, V6PrefixKey, STATE_FULL, STATE_PARTIAL, V4_VERDICT_ALLOW,
    V4_VERDICT_BLOCK, V4_VERDICT_NONE, V6_BLOCK_FULL,
};

use crate::maps::{
    ALLOW_V4_HOSTS, ALLOW_V6_BLOCKS, ALLOW_V6_LONG, BLOCK_V4_HOSTS, BLOCK_V6_BLOCKS, BLOCK_V6_LONG,
    V4_DETAIL, V4_DETAIL_INDEX, V4_SUMMARY, V4_VERDICT24, V6_FILTER32, V6_SUMMARY16,
};

/// Membership of `addr` in the allow and block lists: the first-level word answers most
/// packets; mixed /24s read their summary cell and, for partial cells, the host bitmap.
#[inline(always)]
pub fn v4_lookup(addr: u32) -> (bool, bool) {
    let (vindex, vshift) = verdict24_cell(addr >> 8);
    let Some(&verdict) = V4_VERDICT24.get(vindex) else {
        return (false, false);
    };
    match (verdict >> vshift) & 3 {
        V4_VERDICT_NONE => return (false, false),
        V4_VERDICT_BLOCK => return (false, true),
        V4_VERDICT_ALLOW => return (true, false),
        _ => {}
    }
    let block24 = addr >> 8;
    if let Some(&slot) = V4_DETAIL_INDEX.get(v4_detail_slot(block24)) {
        if slot as u32 == block24 + 1 {
            if let Some(d) = V4_DETAIL.get((slot >> 32) as u32) {
                return (d.allow.contains(addr as u8), d.block.contains(addr as u8));
            }
        }
    }
    let (index, shift) = summary_cell(addr >> 8);
    let Some(&word) = V4_SUMMARY.get(index) else {
        return (false, false);
    };
    if word == 0 {
        return (false, false);
    }
    (
        v4_in(word, shift, ListKind::Allow, addr),
        v4_in(word, shift, ListKind::Block, addr),
    )
}

#[inline(always)]
fn v4_in(word: u64, shift: u32, kind: ListKind, addr: u32) -> bool {
    match summary_state(word, shift, kind) {
        STATE_FULL => true,
        STATE_PARTIAL => {
            let hosts = match kind {
                ListKind::Allow => &ALLOW_V4_HOSTS,
                ListKind::Block => &BLOCK_V4_HOSTS,
            };
            // SAFETY: the value is plain data; a concurrent update can only make us see the
            // old or the new bitmap words.
            match unsafe { hosts.get(addr >> 8) } {
                Some(bitmap) => bitmap.contains(addr as u8),
                None => false,
            }
        }
        _ => false,
    }
}

#[inline(always)]
pub fn v6_lookup(hi: u64, lo: u64) -> (bool, bool) {
    let (index, shift) = summary_cell((hi >> 48) as u32);
    let Some(&word) = V6_SUMMARY16.get(index) else {
        return (false, false);
    };
    if word == 0 {
        return (false, false);
    }
    let allow = summary_state(word, shift, ListKind::Allow);
    let block = summary_state(word, shift, ListKind::Block);
    let mut filter = 0u64;
    let mut fshift = 0;
    let top32 = (hi >> 32) as u32;
    if allow == STATE_PARTIAL || block == STATE_PARTIAL {
        let (findex, fs) = v6_filter_cell(top32);
        if let Some(&f) = V6_FILTER32.get(findex) {
            filter = f;
            fshift = fs;
        }
    }
    (
        v6_in(allow, filter, fshift, ListKind::Allow, hi, lo),
        v6_in(block, filter, fshift, ListKind::Block, hi, lo),
    )
}

#[inline(always)]
fn v6_in(state: u64, filter: u64, fshift: u32, kind: ListKind, hi: u64, lo: u64) -> bool {
    if state == STATE_FULL {
        return true;
    }
    if state != STATE_PARTIAL || (filter >> (fshift + kind as u32)) & 1 == 0 {
        return false;
    }
    let (blocks, long) = match kind {
        ListKind::Allow => (&ALLOW_V6_BLOCKS, &ALLOW_V6_LONG),
        ListKind::Block => (&BLOCK_V6_BLOCKS, &BLOCK_V6_LONG),
    };
    // SAFETY: plain data, see v4_in.
    let Some(block) = (unsafe { blocks.get((hi >> 32) as u32) }) else {
        return false;
    };
    if block.flags & V6_BLOCK_FULL != 0 {
        return true;
    }
    // One exact lookup per prefix length present under this /32; bounded by 96 lengths.
    // Lengths of /48 and more are skipped at once when this source's /48 holds none.
    let in48 = (block.filter48 >> v6_filter48_bit(hi)) & 1 == 1;
    for half in 0..2 {
        let mut lengths = block.long_lengths[half];
        for _ in 0..64 {
            if lengths == 0 {
                break;
            }
            let bit = lengths.trailing_zeros();
            lengths &= lengths - 1;
            let len = 33 + 64 * half as u32 + bit;
            if len >= 48 && !in48 {
                // Lengths come in ascending order: every remaining one is >= 48 too.
                break;
            }
            let (mh, ml) = mask_v6(hi, lo, len);
            let mut key = V6PrefixKey { addr: [0; 16], len };
            key.addr[..8].copy_from_slice(&mh.to_be_bytes());
            key.addr[8..].copy_from_slice(&ml.to_be_bytes());
            if long.get_ptr(&key).is_some() {
                return true;
            }
        }
    }
    false
}
