//! L4 rules compiled into lookup tables, so the cost per packet does not grow with the number
//! of rules (the bit-vector scheme of Lakshman and Stiliadis).
//!
//! Each packet fact is a *dimension* (protocol, source port, ...). Per dimension, every value
//! maps to a *class*: a run of values no rule boundary splits. Per class, a bitmap says which
//! rules accept that class. A packet's candidate rules are the AND of one bitmap per dimension;
//! the first set bit (rules keep their file order) decides. Dimensions no rule constrains are
//! skipped.
//!
//! ```text
//! RULE_CLASSES[set][dim][value / 4]  -> four 16-bit classes per word
//! RULE_BITS[set][dim][class]          -> [u64; RULE_WORDS]: bit r = rule r accepts the class
//! RULE_INFO[set][rule]                -> action | mode << 8 | counter << 16
//! RULE_MONITOR[set]                   -> [u64; RULE_WORDS]: the rules in monitor mode
//! ```

use crate::packet::Packet;

/// Rules one policy can hold, and the bitmap words that take.
pub const MAX_RULES: u32 = 512;
pub const RULE_WORDS: usize = (MAX_RULES / 64) as usize;

/// The dimensions, in table order.
pub const DIM_PROTO: u32 = 0;
pub const DIM_SPORT: u32 = 1;
pub const DIM_DPORT: u32 = 2;
pub const DIM_TCP_FLAGS: u32 = 3;
pub const DIM_ICMP_TYPE: u32 = 4;
pub const DIM_TTL: u32 = 5;
pub const DIM_LEN: u32 = 6;
pub const DIM_FRAG: u32 = 7;
pub const DIMS: u32 = 8;

/// Values per dimension (ports, flags and ICMP types have one more: "none").
pub const DIM_VALUES: [u32; DIMS as usize] = [256, 65537, 65537, 257, 257, 256, 65536, 3];

/// Classes a dimension can have: every rule adds at most two boundaries per range.
pub const MAX_CLASSES: u32 = 2048;

/// Words of class table per dimension (four 16-bit classes per word).
pub const fn class_words(dim: u32) -> u32 {
    DIM_VALUES[dim as usize].div_ceil(4)
}

/// Where each dimension's class words start within one set's table.
pub const CLASS_OFFSETS: [u32; DIMS as usize + 1] = {
    let mut out = [0u32; DIMS as usize + 1];
    let mut d = 0;
    while d < DIMS as usize {
        out[d + 1] = out[d] + class_words(d as u32);
        d += 1;
    }
    out
};

/// Class words per set, and in the map (two sets).
pub const CLASS_SET_WORDS: u32 = CLASS_OFFSETS[DIMS as usize];
pub const CLASS_TABLE_WORDS: u32 = 2 * CLASS_SET_WORDS;
/// Bitmaps in the map: per set, dimension and class.
pub const BITS_ENTRIES: u32 = 2 * DIMS * MAX_CLASSES;
pub const INFO_ENTRIES: u32 = 2 * MAX_RULES;

pub const ACTION_DROP: u64 = 1;
pub const ACTION_PASS: u64 = 2;
pub const MODE_ENFORCE: u64 = 0;
pub const MODE_MONITOR: u64 = 1;

/// A rule's action, mode and counter slot, as `RULE_INFO` holds them.
#[inline(always)]
pub const fn rule_info(action: u64, mode: u64, counter: u32) -> u64 {
    action | (mode << 8) | ((counter as u64) << 16)
}

#[inline(always)]
pub const fn info_action(info: u64) -> u64 {
    info & 0xff
}

#[inline(always)]
pub const fn info_mode(info: u64) -> u64 {
    (info >> 8) & 0xff
}

#[inline(always)]
pub const fn info_counter(info: u64) -> u32 {
    (info >> 16) as u32
}

/// A bitmap of rules.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct RuleBits {
    pub words: [u64; RULE_WORDS],
}

#[inline(always)]
pub const fn class_index(set: u32, dim: u32, value: u32) -> u32 {
    set * CLASS_SET_WORDS + CLASS_OFFSETS[dim as usize & 7] + value / 4
}

#[inline(always)]
pub const fn bits_index(set: u32, dim: u32, class: u32) -> u32 {
    (set * DIMS + dim) * MAX_CLASSES + (class & (MAX_CLASSES - 1))
}

#[inline(always)]
pub const fn class_of(word: u64, value: u32) -> u32 {
    ((word >> ((value & 3) * 16)) & 0xffff) as u32
}

/// The value of a packet in one dimension.
#[inline(always)]
pub const fn dim_value(p: &Packet, dim: u32) -> u32 {
    match dim {
        DIM_PROTO => p.proto as u32,
        DIM_SPORT => p.sport,
        DIM_DPORT => p.dport,
        DIM_TCP_FLAGS => p.tcp_flags,
        DIM_ICMP_TYPE => p.icmp_type,
        DIM_TTL => p.ttl as u32,
        DIM_LEN => {
            if p.len > 65535 {
                65535
            } else {
                p.len
            }
        }
        _ => p.frag as u32,
    }
}

/// Reads of the compiled rules: maps in the program, vectors in userspace. Bitmaps are handed
/// out whole: one map lookup per dimension, not one per word.
pub trait RuleMemory {
    fn class_word(&self, index: u32) -> u64;
    /// Bitmap `index` (`None` reads as no rule).
    fn bits(&self, index: u32) -> Option<&RuleBits>;
    /// Set `set`'s bitmap of rules in monitor mode (`None` reads as none).
    fn monitor(&self, set: u32) -> Option<&RuleBits>;
}

/// The rules a packet meets: the first enforce-mode rule, and the first monitor-mode rule
/// ahead of it (rule indices in file order).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RuleMatch {
    pub enforce: Option<u32>,
    pub monitor: Option<u32>,
}

/// Match `p` against set `set`'s rules: `words` bitmap words in use, `dims` a bitmask of the
/// dimensions some rule constrains. Bounded: one class word and one bitmap per dimension.
#[inline(always)]
pub fn first_match<M: RuleMemory>(
    m: &M,
    set: u32,
    p: &Packet,
    words: usize,
    dims: u32,
) -> RuleMatch {
    let mut acc = [u64::MAX; RULE_WORDS];
    let mut d = 0;
    while d < DIMS {
        if dims & (1 << d) != 0 {
            let value = dim_value(p, d);
            let class = class_of(m.class_word(class_index(set, d, value)), value);
            // A missing bitmap has no rule in it: nothing can match (an early return, so the
            // verifier follows no second state of `acc` per dimension).
            let Some(bits) = m.bits(bits_index(set, d, class)) else {
                return RuleMatch::default();
            };
            let mut w = 0;
            while w < RULE_WORDS && w < words {
                acc[w] &= bits.words[w];
                w += 1;
            }
        }
        d += 1;
    }
    match m.monitor(set) {
        Some(monitor) => pick(&acc, words, |w| monitor.words[w]),
        None => pick(&acc, words, |_| 0),
    }
}

/// The first enforce-mode rule in `acc`, and the first monitor-mode rule ahead of it;
/// `monitor_word(w)` is word `w` of the monitor-mode bitmap.
#[inline(always)]
fn pick(acc: &[u64; RULE_WORDS], words: usize, monitor_word: impl Fn(usize) -> u64) -> RuleMatch {
    let mut out = RuleMatch::default();
    let mut w = 0;
    while w < RULE_WORDS && w < words {
        let monitor_mask = monitor_word(w);
        let enforce = acc[w] & !monitor_mask;
        let monitor = acc[w] & monitor_mask;
        if out.monitor.is_none()
            && monitor != 0
            && (enforce == 0 || monitor.trailing_zeros() < enforce.trailing_zeros())
        {
            out.monitor = Some(w as u32 * 64 + monitor.trailing_zeros());
        }
        if enforce != 0 {
            out.enforce = Some(w as u32 * 64 + enforce.trailing_zeros());
            return out;
        }
        w += 1;
    }
    out
}
