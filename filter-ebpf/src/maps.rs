//! Maps shared with the controller. Pinned ones live under the pin directory so the filter keeps
//! its state when the controller exits; names stay within the kernel's 15 characters.

use aya_ebpf::macros::map;
use aya_ebpf::maps::{Array, HashMap, LpmTrie, PerCpuArray};
use filter_common::{
    Counter, FilterConfig, HostBitmap, V4Detail, V6Block, V6PrefixKey, MAX_IFINDEX, MAX_INTERFACES,
    REASON_SLOTS, V4_DETAIL_SLOTS, V4_HOSTS_CAPACITY, V4_SUMMARY_WORDS, V4_VERDICT24_WORDS,
    V6_BLOCKS_CAPACITY, V6_FILTER32_WORDS, V6_LONG_CAPACITY, V6_SUMMARY16_WORDS,
};

const BPF_F_NO_PREALLOC: u32 = 1;
/// Lets the controller fill the multi-MiB summaries through mmap instead of 1M syscalls.
const BPF_F_MMAPABLE: u32 = 1 << 10;

#[map]
pub static COUNTERS: PerCpuArray<Counter> = PerCpuArray::pinned(MAX_INTERFACES * REASON_SLOTS, 0);

#[map]
pub static CONFIG: Array<FilterConfig> = Array::pinned(1, 0);

/// ifindex -> counter slot (0: no slot).
#[map]
pub static IFACE_SLOTS: Array<u32> = Array::pinned(MAX_IFINDEX, 0);

#[map]
pub static V4_SUMMARY: Array<u64> = Array::pinned(V4_SUMMARY_WORDS, BPF_F_MMAPABLE);

/// First level for IPv4: 2 bits per /24 that settle most packets without touching V4_SUMMARY.
#[map]
pub static V4_VERDICT24: Array<u64> = Array::pinned(V4_VERDICT24_WORDS, BPF_F_MMAPABLE);

/// Direct-mapped table of mixed or partial /24s (see `v4_detail_slot`).
#[map]
pub static V4_DETAIL_INDEX: Array<u64> = Array::pinned(V4_DETAIL_SLOTS, BPF_F_MMAPABLE);

#[map]
pub static V4_DETAIL: Array<V4Detail> = Array::pinned(V4_DETAIL_SLOTS, BPF_F_MMAPABLE);

#[map]
pub static ALLOW_V4_HOSTS: HashMap<u32, HostBitmap> =
    HashMap::pinned(V4_HOSTS_CAPACITY, BPF_F_NO_PREALLOC);

#[map]
pub static BLOCK_V4_HOSTS: HashMap<u32, HostBitmap> =
    HashMap::pinned(V4_HOSTS_CAPACITY, BPF_F_NO_PREALLOC);

#[map]
pub static V6_SUMMARY16: Array<u64> = Array::pinned(V6_SUMMARY16_WORDS, BPF_F_MMAPABLE);

#[map]
pub static V6_FILTER32: Array<u64> = Array::pinned(V6_FILTER32_WORDS, BPF_F_MMAPABLE);

#[map]
pub static ALLOW_V6_BLOCKS: HashMap<u32, V6Block> =
    HashMap::pinned(V6_BLOCKS_CAPACITY, BPF_F_NO_PREALLOC);

#[map]
pub static BLOCK_V6_BLOCKS: HashMap<u32, V6Block> =
    HashMap::pinned(V6_BLOCKS_CAPACITY, BPF_F_NO_PREALLOC);

#[map]
pub static ALLOW_V6_LONG: HashMap<V6PrefixKey, u8> =
    HashMap::pinned(V6_LONG_CAPACITY, BPF_F_NO_PREALLOC);

#[map]
pub static BLOCK_V6_LONG: HashMap<V6PrefixKey, u8> =
    HashMap::pinned(V6_LONG_CAPACITY, BPF_F_NO_PREALLOC);

/// Bench only: the same blocklist in kernel LPM tries, to compare against (never pinned).
#[map]
pub static BENCH_LPM_V4: LpmTrie<[u8; 4], u8> =
    LpmTrie::with_max_entries(1 << 21, BPF_F_NO_PREALLOC);

#[map]
pub static BENCH_LPM_V6: LpmTrie<[u8; 16], u8> =
    LpmTrie::with_max_entries(1 << 21, BPF_F_NO_PREALLOC);
