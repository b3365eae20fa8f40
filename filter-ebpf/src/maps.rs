//! Every map of the product, named as `filter_common::maps` declares (a test checks the built
//! object against that list). All but the LRU state and aya-log's are pinned by name, so the
//! filter keeps its state when the controller exits and the bench object shares them.

use aya_ebpf::macros::map;
use aya_ebpf::maps::{Array, LruHashMap, PerCpuArray, ProgramArray, RingBuf};
use filter_common::limits::{
    Ban, BanKey, Bucket, GlobalBucket, KnownKey, LimitConf, SourceKey, BAN_ENTRIES, KNOWN_SOURCES,
    MAX_LIMITS, SKETCH_ROWS, SKETCH_WIDTH, SOURCE_BUCKETS as SOURCE_BUCKET_ENTRIES,
};
use filter_common::maps::{DEFAULT_POOL_NODES, LIMIT_COUNTER_SLOTS, RULE_COUNTER_SLOTS};
use filter_common::rules::{RuleBits, BITS_ENTRIES, CLASS_TABLE_WORDS, INFO_ENTRIES};
use filter_common::sample::{SampleCpu, RING_BYTES};
use filter_common::trie::{Node, NodeMeta, PARTS_ENTRIES, ROOT_TABLE_WORDS, SETS};
use filter_common::{Counter, PolicyConfig, MAX_IFINDEX, MAX_INTERFACES, REASON_SLOTS};

/// Lets the controller write tables through mmap instead of a syscall per entry.
const BPF_F_MMAPABLE: u32 = 1 << 10;

#[map]
pub static COUNTERS: PerCpuArray<Counter> = PerCpuArray::pinned(MAX_INTERFACES * REASON_SLOTS, 0);

/// ifindex -> counter slot (0: no slot).
#[map]
pub static IFACE_SLOTS: Array<u32> = Array::pinned(MAX_IFINDEX, 0);

/// The generation word: bit 0 says which set of tables is live.
#[map]
pub static STATE: Array<u64> = Array::pinned(filter_common::maps::STATE_ENTRIES, BPF_F_MMAPABLE);

#[map]
pub static POLICY: Array<PolicyConfig> = Array::pinned(SETS, BPF_F_MMAPABLE);

#[map]
pub static LIST_ROOT: Array<u64> = Array::pinned(ROOT_TABLE_WORDS, BPF_F_MMAPABLE);

#[map]
pub static LIST_PARTS: Array<u64> = Array::pinned(PARTS_ENTRIES, BPF_F_MMAPABLE);

/// The node pool; its size is chosen when the controller first loads the program.
#[map]
pub static LIST_NODES: Array<Node> = Array::pinned(DEFAULT_POOL_NODES, BPF_F_MMAPABLE);

#[map]
pub static LIST_META: Array<NodeMeta> = Array::pinned(DEFAULT_POOL_NODES, BPF_F_MMAPABLE);

#[map]
pub static RULE_CLASSES: Array<u64> = Array::pinned(CLASS_TABLE_WORDS, BPF_F_MMAPABLE);

#[map]
pub static RULE_BITS: Array<RuleBits> = Array::pinned(BITS_ENTRIES, BPF_F_MMAPABLE);

#[map]
pub static RULE_INFO: Array<u64> = Array::pinned(INFO_ENTRIES, BPF_F_MMAPABLE);

#[map]
pub static RULE_MONITOR: Array<RuleBits> = Array::pinned(SETS, BPF_F_MMAPABLE);

#[map]
pub static RULE_COUNTERS: PerCpuArray<Counter> = PerCpuArray::pinned(RULE_COUNTER_SLOTS, 0);

#[map]
pub static LIMITS: Array<LimitConf> = Array::pinned(SETS * MAX_LIMITS, BPF_F_MMAPABLE);

#[map]
pub static LIMIT_COUNTERS: PerCpuArray<Counter> = PerCpuArray::pinned(LIMIT_COUNTER_SLOTS, 0);

#[map]
pub static SOURCE_BUCKETS: LruHashMap<SourceKey, Bucket> =
    LruHashMap::pinned(SOURCE_BUCKET_ENTRIES, 0);

#[map]
pub static GLOBAL_BUCKETS: PerCpuArray<GlobalBucket> =
    PerCpuArray::pinned(MAX_LIMITS * MAX_INTERFACES, 0);

#[map]
pub static SKETCH: PerCpuArray<u32> = PerCpuArray::pinned(SKETCH_ROWS * SKETCH_WIDTH, 0);

#[map]
pub static BANS: LruHashMap<BanKey, Ban> = LruHashMap::pinned(BAN_ENTRIES, 0);

#[map]
pub static KNOWN: LruHashMap<KnownKey, u64> = LruHashMap::pinned(KNOWN_SOURCES, 0);

/// Sampling's per-CPU countdown, token bucket and the record being filled.
#[map]
pub static SAMPLE_CPU: PerCpuArray<SampleCpu> = PerCpuArray::pinned(1, 0);

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
