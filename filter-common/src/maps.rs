//! Every map the XDP program shares with the controller, named once: the program declares a
//! static with exactly this name (a test checks the built object against [`PRODUCT_MAPS`]),
//! the controller opens the pin of this name, and `status`, the tests and `bpftool` see it.
//! Names stay within the kernel's 15 characters.
//!
//! | name | kind | key -> value | what |
//! | --- | --- | --- | --- |
//! | `COUNTERS` | per-CPU array | slot * REASON_SLOTS + reason -> [`Counter`](crate::Counter) | packets and bytes per interface and reason |
//! | `CONFIG` | array | 0 -> [`FilterConfig`](crate::FilterConfig) | malformed policy |
//! | `IFACE_SLOTS` | array | ifindex -> u32 | counter slot of an interface (0: "other") |
//! | `STATE` | array, mmapable | 0 -> u64, 1 -> u64 | generation word: bit 0 is the active set ([`state`]); layout version ([`LAYOUT_VERSION`]) |
//! | `LIST_ROOT` | array, mmapable | (set, family, /16 / 32) -> u64 | root cells, see [`trie`](crate::trie) |
//! | `LIST_PARTS` | array, mmapable | (set, family, /16) -> u64 | partition entries |
//! | `LIST_NODES` | array, mmapable | node -> [`Node`](crate::trie::Node) | the node pool: cells |
//! | `LIST_META` | array, mmapable | node -> [`NodeMeta`](crate::trie::NodeMeta) | the node pool: child positions |
//!
//! The controller adds maps the program never reads: `ATTACHMENTS` (attached interfaces) and
//! one snapshot per generation under `state/` (the entries as entered, see the controller).

pub const COUNTERS: &str = "COUNTERS";
pub const CONFIG: &str = "CONFIG";
pub const IFACE_SLOTS: &str = "IFACE_SLOTS";
pub const STATE: &str = "STATE";
pub const LIST_ROOT: &str = "LIST_ROOT";
pub const LIST_PARTS: &str = "LIST_PARTS";
pub const LIST_NODES: &str = "LIST_NODES";
pub const LIST_META: &str = "LIST_META";

/// Maps the product object declares, in the order `status` lists them.
pub const PRODUCT_MAPS: [&str; 8] = [
    COUNTERS,
    CONFIG,
    IFACE_SLOTS,
    STATE,
    LIST_ROOT,
    LIST_PARTS,
    LIST_NODES,
    LIST_META,
];

/// Controller-only map of attached interfaces.
pub const ATTACHMENTS: &str = "ATTACHMENTS";

/// Default size of the node pool (the shared capacity of both lists' long prefixes), 160 MiB:
/// room to replace a million scattered IPv4 entries by another million (old and new nodes
/// live side by side until the flip); `attach --list-capacity` sets another on first load.
pub const DEFAULT_POOL_NODES: u32 = 1 << 21;

/// `STATE` entries: the generation word, and the layout version the controller wrote when it
/// loaded the program.
pub const STATE_ENTRIES: u32 = 2;
pub const STATE_LAYOUT: u32 = 1;
/// The layout of every map and the meaning of its values, as this build reads and writes
/// them. Bump it whenever either changes: a controller refuses pins of another layout instead
/// of writing words the pinned program would misread.
pub const LAYOUT_VERSION: u64 = 2;

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
