//! Every map of the product, named as `filter_common::maps` declares (a test checks the built
//! object against that list). All but aya-log's are pinned by name, so the filter keeps its
//! state when the controller exits and the bench object shares them. Maps with a key and a
//! value are BTF-defined ([`crate::btf_map`]) so that the kernel knows their types and
//! `bpftool map dump` prints named fields; ring buffers and the program array cannot carry
//! key or value types and stay in the legacy section.

use aya_ebpf::macros::{btf_map, map};
use aya_ebpf::maps::{ProgramArray, RingBuf};
use filter_common::limits::{
    Ban, BanKey, Bucket, GlobalBucket, KnownKey, LimitConf, SourceKey, BAN_ENTRIES, KNOWN_SOURCES,
    MAX_LIMITS, SKETCH_ROWS, SKETCH_WIDTH, SOURCE_BUCKETS as SOURCE_BUCKET_ENTRIES,
};
use filter_common::maps::{DEFAULT_POOL_NODES, LIMIT_COUNTER_SLOTS, RULE_COUNTER_SLOTS};
use filter_common::rules::{RuleBits, BITS_ENTRIES, CLASS_TABLE_WORDS, INFO_ENTRIES};
use filter_common::sample::{SampleCpu, RING_BYTES};
use filter_common::trie::{Node, NodeMeta, PARTS_ENTRIES, ROOT_TABLE_WORDS, SETS};
use filter_common::{Counter, PolicyConfig, MAX_IFINDEX, MAX_INTERFACES, REASON_SLOTS};

use crate::btf_map::{Array, LruHashMap, PerCpuArray};

/// A map size as the `.maps` definitions take it.
const fn entries(n: u32) -> usize {
    n as usize
}

/// Lets the controller write tables through mmap instead of a syscall per entry.
const BPF_F_MMAPABLE: usize = 1 << 10;

#[btf_map]
pub static COUNTERS: PerCpuArray<Counter, { entries(MAX_INTERFACES * REASON_SLOTS) }, 0> =
    PerCpuArray::new();

/// ifindex -> counter slot (0: no slot).
#[btf_map]
pub static IFACE_SLOTS: Array<u32, { entries(MAX_IFINDEX) }, 0> = Array::new();

/// The generation word: bit 0 says which set of tables is live.
#[btf_map]
pub static STATE: Array<u64, { entries(filter_common::maps::STATE_ENTRIES) }, BPF_F_MMAPABLE> =
    Array::new();

#[btf_map]
pub static POLICY: Array<PolicyConfig, { entries(SETS) }, BPF_F_MMAPABLE> = Array::new();

#[btf_map]
pub static LIST_ROOT: Array<u64, { entries(ROOT_TABLE_WORDS) }, BPF_F_MMAPABLE> = Array::new();

#[btf_map]
pub static LIST_PARTS: Array<u64, { entries(PARTS_ENTRIES) }, BPF_F_MMAPABLE> = Array::new();

/// The node pool; its size is chosen when the controller first loads the program.
#[btf_map]
pub static LIST_NODES: Array<Node, { entries(DEFAULT_POOL_NODES) }, BPF_F_MMAPABLE> = Array::new();

#[btf_map]
pub static LIST_META: Array<NodeMeta, { entries(DEFAULT_POOL_NODES) }, BPF_F_MMAPABLE> =
    Array::new();

#[btf_map]
pub static RULE_CLASSES: Array<u64, { entries(CLASS_TABLE_WORDS) }, BPF_F_MMAPABLE> = Array::new();

#[btf_map]
pub static RULE_BITS: Array<RuleBits, { entries(BITS_ENTRIES) }, BPF_F_MMAPABLE> = Array::new();

#[btf_map]
pub static RULE_INFO: Array<u64, { entries(INFO_ENTRIES) }, BPF_F_MMAPABLE> = Array::new();

#[btf_map]
pub static RULE_MONITOR: Array<RuleBits, { entries(SETS) }, BPF_F_MMAPABLE> = Array::new();

#[btf_map]
pub static RULE_COUNTERS: PerCpuArray<Counter, { entries(RULE_COUNTER_SLOTS) }, 0> =
    PerCpuArray::new();

#[btf_map]
pub static LIMITS: Array<LimitConf, { entries(SETS * MAX_LIMITS) }, BPF_F_MMAPABLE> = Array::new();

#[btf_map]
pub static LIMIT_COUNTERS: PerCpuArray<Counter, { entries(LIMIT_COUNTER_SLOTS) }, 0> =
    PerCpuArray::new();

#[btf_map]
pub static SOURCE_BUCKETS: LruHashMap<SourceKey, Bucket, { entries(SOURCE_BUCKET_ENTRIES) }, 0> =
    LruHashMap::new();

#[btf_map]
pub static GLOBAL_BUCKETS: PerCpuArray<GlobalBucket, { entries(MAX_LIMITS * MAX_INTERFACES) }, 0> =
    PerCpuArray::new();

#[btf_map]
pub static SKETCH: PerCpuArray<u32, { entries(SKETCH_ROWS * SKETCH_WIDTH) }, 0> =
    PerCpuArray::new();

#[btf_map]
pub static BANS: LruHashMap<BanKey, Ban, { entries(BAN_ENTRIES) }, 0> = LruHashMap::new();

#[btf_map]
pub static KNOWN: LruHashMap<KnownKey, u64, { entries(KNOWN_SOURCES) }, 0> = LruHashMap::new();

/// Sampling's per-CPU countdown, token bucket and the record being filled.
#[btf_map]
pub static SAMPLE_CPU: PerCpuArray<SampleCpu, 1, 0> = PerCpuArray::new();

/// Slot 0: the sampler program, tail-called for a packet to sample.
#[map]
pub static SAMPLER: ProgramArray = ProgramArray::pinned(1, 0);

/// The sample rings, one per reader slot.
#[map]
pub static SAMPLES0: RingBuf = RingBuf::pinned(RING_BYTES, 0);
#[map]
pub static SAMPLES1: RingBuf = RingBuf::pinned(RING_BYTES, 0);
#[map]
pub static SAMPLES2: RingBuf = RingBuf::pinned(RING_BYTES, 0);
#[map]
pub static SAMPLES3: RingBuf = RingBuf::pinned(RING_BYTES, 0);
