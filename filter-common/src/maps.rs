//! Every map the XDP program shares with the controller, named once: the program declares a
//! static with exactly this name (a test checks the built object against [`PRODUCT_MAPS`]),
//! the controller opens the pin of this name, and `status`, the tests and `bpftool` see it.
//! Names stay within the kernel's 15 characters.
//!
//! | name | kind | key -> value | what |
//! | --- | --- | --- | --- |
//! | `COUNTERS` | per-CPU array | slot * REASON_SLOTS + reason -> [`Counter`](crate::Counter) | packets and bytes per interface and reason |
//! | `IFACE_SLOTS` | array | ifindex -> u32 | counter slot of an interface (0: "other") |
//! | `STATE` | array, mmapable | 0 -> u64, 1 -> u64, 2.. -> u64 | generation word: bit 0 is the active set ([`state`]); layout version ([`LAYOUT_VERSION`]); sampling word, lease, setting and reader slots ([`sample`](crate::sample)) |
//! | `POLICY` | array, mmapable | set -> [`PolicyConfig`](crate::PolicyConfig) | malformed policy, block-list mode, what is in use |
//! | `LIST_ROOT` | array, mmapable | (set, trie, family, /16 / 32) -> u64 | root cells, see [`trie`](crate::trie) |
//! | `LIST_PARTS` | array, mmapable | (set, trie, family, /16) -> u64 | partition entries |
//! | `LIST_NODES` | array, mmapable | node -> [`Node`](crate::trie::Node) | the node pool: cells |
//! | `LIST_META` | array, mmapable | node -> [`NodeMeta`](crate::trie::NodeMeta) | the node pool: child positions |
//! | `RULE_CLASSES` | array, mmapable | (set, dim, value / 4) -> u64 | value classes, see [`rules`](crate::rules) |
//! | `RULE_BITS` | array, mmapable | (set, dim, class) -> [`RuleBits`](crate::rules::RuleBits) | rules accepting a class |
//! | `RULE_INFO` | array, mmapable | (set, rule) -> u64 | action, mode, counter slot |
//! | `RULE_MONITOR` | array, mmapable | set -> `RuleBits` | rules in monitor mode |
//! | `RULE_COUNTERS` | per-CPU array | counter slot -> `Counter` | packets and bytes each rule matched |
//! | `LIMITS` | array, mmapable | (set, limit) -> [`LimitConf`](crate::limits::LimitConf) | the limits |
//! | `LIMIT_COUNTERS` | per-CPU array | counter slot -> `Counter` | packets and bytes each limit refused (or would have) |
//! | `SOURCE_BUCKETS` | LRU hash | [`SourceKey`](crate::limits::SourceKey) -> [`Bucket`](crate::limits::Bucket) | per-source buckets, shared by all CPUs |
//! | `GLOBAL_BUCKETS` | per-CPU array | limit counter slot * MAX_INTERFACES + interface slot -> [`GlobalBucket`](crate::limits::GlobalBucket) | global buckets, the rate split over CPUs |
//! | `SKETCH` | per-CPU array | slot -> u32 | count-min sketch deciding which sources get a bucket |
//! | `BANS` | LRU hash | [`BanKey`](crate::limits::BanKey) -> [`Ban`](crate::limits::Ban) | banned sources and when each ban lapses |
//! | `KNOWN` | LRU hash | [`KnownKey`](crate::limits::KnownKey) -> u64 | sources seen in peacetime |
//! | `SAMPLE_CPU` | per-CPU array | 0 -> [`SampleCpu`](crate::sample::SampleCpu) | sampling countdown, token bucket, the record being filled |
//! | `SAMPLER` | program array | 0 -> the sampler program | reached by tail call for a sampled packet |
//! | `SAMPLES0`..`SAMPLES3` | ring buffer | | sampled drop records, one ring per reader ([`sample`](crate::sample)) |
//! | `AYA_LOGS` | ring buffer (aya-log) | | rare kernel-side events (a ban placed) |
//!
//! The controller adds maps the program never reads: `ATTACHMENTS` (attached interfaces) and
//! one snapshot per generation under `state/` (the entries as entered, see the controller).

pub const COUNTERS: &str = "COUNTERS";
pub const IFACE_SLOTS: &str = "IFACE_SLOTS";
pub const STATE: &str = "STATE";
pub const POLICY: &str = "POLICY";
pub const LIST_ROOT: &str = "LIST_ROOT";
pub const LIST_PARTS: &str = "LIST_PARTS";
pub const LIST_NODES: &str = "LIST_NODES";
pub const LIST_META: &str = "LIST_META";
pub const RULE_CLASSES: &str = "RULE_CLASSES";
pub const RULE_BITS: &str = "RULE_BITS";
pub const RULE_INFO: &str = "RULE_INFO";
pub const RULE_MONITOR: &str = "RULE_MONITOR";
pub const RULE_COUNTERS: &str = "RULE_COUNTERS";
pub const LIMITS: &str = "LIMITS";
pub const LIMIT_COUNTERS: &str = "LIMIT_COUNTERS";
pub const SOURCE_BUCKETS: &str = "SOURCE_BUCKETS";
pub const GLOBAL_BUCKETS: &str = "GLOBAL_BUCKETS";
pub const SKETCH: &str = "SKETCH";
pub const BANS: &str = "BANS";
pub const KNOWN: &str = "KNOWN";
pub const SAMPLE_CPU: &str = "SAMPLE_CPU";
pub const SAMPLER: &str = "SAMPLER";
/// The sampler program, tail-called from the main program.
pub const SAMPLER_PROGRAM: &str = "fg_sample";
/// The sample rings, one per reader slot (`SAMPLES[slot]`).
pub const SAMPLES: [&str; crate::sample::READER_SLOTS as usize] =
    ["SAMPLES0", "SAMPLES1", "SAMPLES2", "SAMPLES3"];
/// aya-log's ring buffer (named by aya-log-ebpf).
pub const AYA_LOGS: &str = "AYA_LOGS";

/// Maps the product object declares, in the order `status` lists them (read-only data
/// sections, such as aya-log's level, become maps named after their section too).
pub const PRODUCT_MAPS: [&str; 27] = [
    COUNTERS,
    IFACE_SLOTS,
    STATE,
    POLICY,
    LIST_ROOT,
    LIST_PARTS,
    LIST_NODES,
    LIST_META,
    RULE_CLASSES,
    RULE_BITS,
    RULE_INFO,
    RULE_MONITOR,
    RULE_COUNTERS,
    LIMITS,
    LIMIT_COUNTERS,
    SOURCE_BUCKETS,
    GLOBAL_BUCKETS,
    SKETCH,
    BANS,
    KNOWN,
    SAMPLE_CPU,
    SAMPLER,
    SAMPLES[0],
    SAMPLES[1],
    SAMPLES[2],
    SAMPLES[3],
    AYA_LOGS,
];

/// The maps pinned under `maps/` (all but aya-log's ring buffer, which lives with the
/// program).
pub fn pinned_maps() -> impl Iterator<Item = &'static str> {
    PRODUCT_MAPS.into_iter().filter(|&m| m != AYA_LOGS)
}

/// Counter slots for rules and limits (a slot follows a rule or limit by name across
/// policy changes).
pub const RULE_COUNTER_SLOTS: u32 = crate::rules::MAX_RULES;
pub const LIMIT_COUNTER_SLOTS: u32 = crate::limits::MAX_LIMITS;

/// Controller-only map of attached interfaces.
pub const ATTACHMENTS: &str = "ATTACHMENTS";

/// Default size of the node pool (the shared capacity of both lists' long prefixes), 160 MiB:
/// room to replace a million scattered IPv4 entries by another million (old and new nodes
/// live side by side until the flip); `attach --list-capacity` sets another on first load.
pub const DEFAULT_POOL_NODES: u32 = 1 << 21;

/// `STATE` entries: the generation word, the layout version the controller wrote when it
/// loaded the program, then sampling's words (see [`sample`](crate::sample)).
pub const STATE_ENTRIES: u32 = crate::sample::STATE_READERS + crate::sample::READER_SLOTS;
pub const STATE_LAYOUT: u32 = 1;
/// The layout of every map and the meaning of its values, as this build reads and writes
/// them. Bump it whenever either changes: a controller refuses pins of another layout instead
/// of writing words the pinned program would misread.
pub const LAYOUT_VERSION: u64 = 6;

/// The generation word in `STATE`.
pub mod state {
    /// The set the program reads.
    pub const ACTIVE_BIT: u64 = 1;
    /// Set `s` may differ from the snapshot of the current generation (a change was cut
    /// short): the controller rewrites it before anything else.
    pub const fn dirty_bit(set: u32) -> u64 {
        2 << set
    }
    pub const GENERATION_SHIFT: u32 = 8;

    pub const fn active(word: u64) -> u32 {
        (word & ACTIVE_BIT) as u32
    }

    pub const fn generation(word: u64) -> u64 {
        word >> GENERATION_SHIFT
    }

    pub const fn is_dirty(word: u64, set: u32) -> bool {
        word & dirty_bit(set) != 0
    }

    pub const fn compose(generation: u64, active: u32, dirty_sets: u64) -> u64 {
        (generation << GENERATION_SHIFT) | dirty_sets | (active as u64 & ACTIVE_BIT)
    }
}
