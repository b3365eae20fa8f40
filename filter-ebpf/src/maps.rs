//! Every map of the product, named as `filter_common::maps` declares (a test checks the built
//! object against that list). All are pinned by name, so the filter keeps its state when the
//! controller exits and the bench object shares them.

use aya_ebpf::macros::map;
use aya_ebpf::maps::{Array, PerCpuArray};
use filter_common::maps::DEFAULT_POOL_NODES;
use filter_common::trie::{Node, NodeMeta, PARTS_ENTRIES, ROOT_TABLE_WORDS};
use filter_common::{Counter, FilterConfig, MAX_IFINDEX, MAX_INTERFACES, REASON_SLOTS};

/// Lets the controller write the list structures through mmap instead of a syscall per entry.
const BPF_F_MMAPABLE: u32 = 1 << 10;

#[map]
pub static COUNTERS: PerCpuArray<Counter> = PerCpuArray::pinned(MAX_INTERFACES * REASON_SLOTS, 0);

#[map]
pub static CONFIG: Array<FilterConfig> = Array::pinned(1, 0);

/// ifindex -> counter slot (0: no slot).
#[map]
pub static IFACE_SLOTS: Array<u32> = Array::pinned(MAX_IFINDEX, 0);

/// The generation word: bit 0 says which set of root tables is live.
#[map]
pub static STATE: Array<u64> = Array::pinned(filter_common::maps::STATE_ENTRIES, BPF_F_MMAPABLE);

#[map]
pub static LIST_ROOT: Array<u64> = Array::pinned(ROOT_TABLE_WORDS, BPF_F_MMAPABLE);

#[map]
pub static LIST_PARTS: Array<u64> = Array::pinned(PARTS_ENTRIES, BPF_F_MMAPABLE);

/// The node pool; its size is chosen when the controller first loads the program.
#[map]
pub static LIST_NODES: Array<Node> = Array::pinned(DEFAULT_POOL_NODES, BPF_F_MMAPABLE);

#[map]
pub static LIST_META: Array<NodeMeta> = Array::pinned(DEFAULT_POOL_NODES, BPF_F_MMAPABLE);
