//! BTF-defined maps (the `.maps` section, as libbpf declares them) that are pinned by name.
//!
//! The legacy `maps` section carries only sizes, so the kernel and `bpftool map dump` see a
//! value as bytes. A `.maps` definition names its key and value types, which the loader hands
//! to the kernel as BTF type ids: `bpftool map dump` then prints named fields. aya-ebpf's own
//! `btf_maps` types have no `pinning` member, and the product needs its maps pinned by name
//! (the controller exits and the bench object shares them), so these definitions add it; aya
//! reads it as libbpf's `LIBBPF_PIN_BY_NAME`.
//!
//! Each member is a pointer whose pointee encodes one setting (`[i32; N]` for a number, the
//! key and value types themselves); the loader reads them from BTF, the program never does.

use core::borrow::Borrow;
use core::ffi::c_void;
use core::ptr::{self, NonNull};

use aya_ebpf::bindings::bpf_map_type::{
    BPF_MAP_TYPE_ARRAY, BPF_MAP_TYPE_LRU_HASH, BPF_MAP_TYPE_PERCPU_ARRAY,
};
use aya_ebpf::helpers::{bpf_map_delete_elem, bpf_map_lookup_elem, bpf_map_update_elem};

/// libbpf's `LIBBPF_PIN_BY_NAME`: pinned under the loader's map pin directory by map name.
const PIN_BY_NAME: usize = 1;

macro_rules! pinned_btf_map {
    ($(#[$doc:meta])* $name:ident<$($gen:ident),+>, $map_type:expr, key: $key:ty, value: $value:ty) => {
        $(#[$doc])*
        // repr(C): the loader reads the members by name, but libbpf-style tools expect them
        // in declaration order.
        #[repr(C)]
        pub struct $name<$($gen,)+ const MAX_ENTRIES: usize, const FLAGS: usize> {
            r#type: *const [i32; $map_type as usize],
            key: *const $key,
            value: *const $value,
            max_entries: *const [i32; MAX_ENTRIES],
            map_flags: *const [i32; FLAGS],
            pinning: *const [i32; PIN_BY_NAME],
        }

        // SAFETY: the members are never-dereferenced placeholders the loader replaces by the
        // map; all access goes through the kernel's map helpers.
        unsafe impl<$($gen,)+ const MAX_ENTRIES: usize, const FLAGS: usize> Sync
            for $name<$($gen,)+ MAX_ENTRIES, FLAGS>
        {
        }

        impl<$($gen,)+ const MAX_ENTRIES: usize, const FLAGS: usize>
            $name<$($gen,)+ MAX_ENTRIES, FLAGS>
        {
            pub const fn new() -> Self {
                Self {
                    r#type: ptr::null(),
                    key: ptr::null(),
                    value: ptr::null(),
                    max_entries: ptr::null(),
                    map_flags: ptr::null(),
                    pinning: ptr::null(),
                }
            }

            #[inline(always)]
            fn as_ptr(&self) -> *mut c_void {
                ptr::from_ref(self).cast_mut().cast()
            }
        }
    };
}

pinned_btf_map!(
    /// An array map: `u32` index -> `T`.
    Array<T>, BPF_MAP_TYPE_ARRAY, key: u32, value: T
);
pinned_btf_map!(
    /// A per-CPU array map: `u32` index -> this CPU's `T`.
    PerCpuArray<T>, BPF_MAP_TYPE_PERCPU_ARRAY, key: u32, value: T
);
pinned_btf_map!(
    /// An LRU hash map shared by all CPUs: `K` -> `V`.
    LruHashMap<K, V>, BPF_MAP_TYPE_LRU_HASH, key: K, value: V
);

#[inline(always)]
fn lookup<K, V>(map: *mut c_void, key: &K) -> Option<NonNull<V>> {
    // SAFETY: `map` is a map definition the loader relocated and `key` a valid key.
    NonNull::new(unsafe { bpf_map_lookup_elem(map, ptr::from_ref(key).cast()) }.cast())
}

macro_rules! array_access {
    ($name:ident) => {
        impl<T, const MAX_ENTRIES: usize, const FLAGS: usize> $name<T, MAX_ENTRIES, FLAGS> {
            #[inline(always)]
            pub fn get(&self, index: u32) -> Option<&T> {
                // SAFETY: an array slot lives as long as the map and is never freed.
                lookup(self.as_ptr(), &index).map(|p| unsafe { p.as_ref() })
            }

            #[inline(always)]
            pub fn get_ptr_mut(&self, index: u32) -> Option<*mut T> {
                lookup(self.as_ptr(), &index).map(NonNull::as_ptr)
            }
        }
    };
}

array_access!(Array);
array_access!(PerCpuArray);

impl<K, V, const MAX_ENTRIES: usize, const FLAGS: usize> LruHashMap<K, V, MAX_ENTRIES, FLAGS> {
    /// # Safety
    ///
    /// The entry may be evicted or replaced while the reference is held (it then reads
    /// another entry's value); use it only where that is harmless.
    #[inline]
    pub unsafe fn get(&self, key: impl Borrow<K>) -> Option<&V> {
        // SAFETY: the caller accepts that the entry may change under the reference.
        lookup(self.as_ptr(), key.borrow()).map(|p| unsafe { p.as_ref() })
    }

    #[inline]
    pub fn get_ptr_mut(&self, key: impl Borrow<K>) -> Option<*mut V> {
        lookup(self.as_ptr(), key.borrow()).map(NonNull::as_ptr)
    }

    #[inline]
    pub fn insert(
        &self,
        key: impl Borrow<K>,
        value: impl Borrow<V>,
        flags: u64,
    ) -> Result<(), i32> {
        let key = ptr::from_ref(key.borrow()).cast();
        let value = ptr::from_ref(value.borrow()).cast();
        // SAFETY: `key` and `value` point at a valid key and value of this map.
        match unsafe { bpf_map_update_elem(self.as_ptr(), key, value, flags) } {
            0 => Ok(()),
            e => Err(e as i32),
        }
    }

    #[inline]
    pub fn remove(&self, key: impl Borrow<K>) -> Result<(), i32> {
        // SAFETY: `key` points at a valid key of this map.
        match unsafe { bpf_map_delete_elem(self.as_ptr(), ptr::from_ref(key.borrow()).cast()) } {
            0 => Ok(()),
            e => Err(e as i32),
        }
    }
}
