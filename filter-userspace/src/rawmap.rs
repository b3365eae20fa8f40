//! What aya 0.14 does not offer: batched map syscalls (1M updates in a few calls instead of 1M)
//! and mmap of BPF_F_MMAPABLE arrays (the multi-MiB list summaries).

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use aya::maps::MapData;
use bytemuck::Pod;

const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;
const BPF_MAP_DELETE_BATCH: libc::c_long = 27;
/// Entries per batch syscall: large enough to amortise, small enough to bound kernel work.
const CHUNK: usize = 65536;

#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// The map's fd, after checking that its key and value sizes are those of `K` and `V`: the
/// kernel copies whole keys and values into our buffers, so a map from another floodgate
/// version must be refused, not read.
fn checked<K, V>(map: &MapData) -> io::Result<BorrowedFd<'_>> {
    let info = map.info().map_err(io::Error::other)?;
    let (k, v) = (
        std::mem::size_of::<K>() as u32,
        std::mem::size_of::<V>() as u32,
    );
    if info.key_size() != k || info.value_size() != v {
        return Err(io::Error::other(format!(
            "map {} has {}-byte keys and {}-byte values, this floodgate expects {k} and {v}: it was pinned by another version; run `floodgate detach --all` and attach again",
            info.name_as_str().unwrap_or("?"),
            info.key_size(),
            info.value_size()
        )));
    }
    Ok(map.fd().as_fd())
}

fn bpf(cmd: libc::c_long, attr: &mut BatchAttr) -> io::Result<()> {
    // SAFETY: attr is a valid, initialised bpf_attr prefix for the batch commands and every
    // pointer in it refers to a live buffer of the size the kernel will use.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut BatchAttr,
            std::mem::size_of::<BatchAttr>(),
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Insert or overwrite `keys[i] -> values[i]`.
pub fn update_batch<K: Pod + Sync, V: Pod + Sync>(
    map: &MapData,
    keys: &[K],
    values: &[V],
) -> io::Result<()> {
    assert_eq!(keys.len(), values.len());
    let fd = checked::<K, V>(map)?;
    // Kernel-side inserts (about a microsecond each for large hash maps) dominate big loads:
    // split them over two threads, the hash map locks per bucket.
    if keys.len() >= 4 * CHUNK {
        let mid = keys.len() / 2;
        return std::thread::scope(|s| {
            let first = s.spawn(|| update_chunks(fd, &keys[..mid], &values[..mid]));
            let second = update_chunks(fd, &keys[mid..], &values[mid..]);
            first.join().expect("batch writer panicked").and(second)
        });
    }
    update_chunks(fd, keys, values)
}

fn update_chunks<K: Pod, V: Pod>(fd: BorrowedFd<'_>, keys: &[K], values: &[V]) -> io::Result<()> {
    for (k, v) in keys.chunks(CHUNK).zip(values.chunks(CHUNK)) {
        let mut attr = BatchAttr {
            keys: k.as_ptr() as u64,
            values: v.as_ptr() as u64,
            count: k.len() as u32,
            map_fd: fd.as_raw_fd() as u32,
            ..Default::default()
        };
        bpf(BPF_MAP_UPDATE_BATCH, &mut attr)?;
    }
    Ok(())
}

/// Delete `keys`; keys that are already gone are an error (ENOENT), so pass only present keys.
pub fn delete_batch<K: Pod, V: Pod>(map: &MapData, keys: &[K]) -> io::Result<()> {
    let fd = checked::<K, V>(map)?;
    for k in keys.chunks(CHUNK) {
        let mut attr = BatchAttr {
            keys: k.as_ptr() as u64,
            count: k.len() as u32,
            map_fd: fd.as_raw_fd() as u32,
            ..Default::default()
        };
        bpf(BPF_MAP_DELETE_BATCH, &mut attr)?;
    }
    Ok(())
}

/// Read every entry of a hash map.
pub fn lookup_all<K: Pod, V: Pod>(map: &MapData) -> io::Result<Vec<(K, V)>> {
    let fd = checked::<K, V>(map)?;
    let mut out = Vec::new();
    let mut keys = vec![K::zeroed(); CHUNK];
    let mut values = vec![V::zeroed(); CHUNK];
    // The batch cursor is opaque to us; 8 bytes is what hash maps use.
    let mut cursor = [0u64; 2];
    let mut first = true;
    loop {
        let mut attr = BatchAttr {
            in_batch: if first { 0 } else { cursor.as_ptr() as u64 },
            out_batch: cursor.as_mut_ptr() as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: CHUNK as u32,
            map_fd: fd.as_raw_fd() as u32,
            ..Default::default()
        };
        let res = bpf(BPF_MAP_LOOKUP_BATCH, &mut attr);
        let n = attr.count as usize;
        out.extend(keys[..n].iter().copied().zip(values[..n].iter().copied()));
        match res {
            Ok(()) => first = false,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(out),
            Err(e) => return Err(e),
        }
    }
}

/// A BPF_F_MMAPABLE array of u64 words mapped into our address space. Word stores are single
/// aligned 64-bit writes, so the XDP program sees either the old or the new word.
pub struct MappedWords {
    ptr: *mut u64,
    len: usize,
}

impl MappedWords {
    pub fn new(map: &MapData, words: usize) -> io::Result<Self> {
        Self::of_values::<u64>(map, words)
    }

    /// Map an mmapable array of `entries` values of type `V` (a multiple of 8 bytes) as words.
    pub fn of_values<V: Pod>(map: &MapData, entries: usize) -> io::Result<Self> {
        assert_eq!(std::mem::size_of::<V>() % 8, 0);
        let fd = checked::<u32, V>(map)?;
        let max = map.info().map_err(io::Error::other)?.max_entries() as usize;
        if max != entries {
            return Err(io::Error::other(format!(
                "array holds {max} entries, expected {entries}: pinned by another version; run `floodgate detach --all` and attach again"
            )));
        }
        let words = entries * std::mem::size_of::<V>() / 8;
        let bytes = words * 8;
        // SAFETY: mapping a map fd with the length of its value area; checked for failure.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_fd().as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Self {
            ptr: ptr.cast(),
            len: words,
        })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn get(&self, i: usize) -> u64 {
        assert!(i < self.len);
        // SAFETY: in bounds of the mapping; volatile because the kernel side shares it.
        unsafe { self.ptr.add(i).read_volatile() }
    }

    pub fn set(&mut self, i: usize, v: u64) {
        assert!(i < self.len);
        // SAFETY: in bounds of a writable shared mapping.
        unsafe { self.ptr.add(i).write_volatile(v) }
    }
}

impl Drop for MappedWords {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what new() mapped.
        unsafe {
            libc::munmap(self.ptr.cast(), self.len * 8);
        }
    }
}

/// Read the first `n` entries of a per-CPU array in one syscall, summed over CPUs. `V` must be
/// a multiple of 8 bytes (per-CPU values are laid out at 8-byte strides).
pub fn percpu_array_sums<V: Pod>(
    map: &MapData,
    n: u32,
    ncpus: usize,
    add: impl Fn(&mut V, &V),
) -> io::Result<Vec<V>> {
    assert_eq!(std::mem::size_of::<V>() % 8, 0);
    let fd = checked::<u32, V>(map)?;
    let mut keys = vec![0u32; n as usize];
    let mut values = vec![V::zeroed(); n as usize * ncpus];
    let mut cursor = [0u64; 2];
    let mut attr = BatchAttr {
        out_batch: cursor.as_mut_ptr() as u64,
        keys: keys.as_mut_ptr() as u64,
        values: values.as_mut_ptr() as u64,
        count: n,
        map_fd: fd.as_raw_fd() as u32,
        ..Default::default()
    };
    match bpf(BPF_MAP_LOOKUP_BATCH, &mut attr) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
        Err(e) => return Err(e),
    }
    if attr.count != n || keys.iter().enumerate().any(|(i, k)| *k != i as u32) {
        return Err(io::Error::other(
            "per-CPU batch lookup returned unexpected keys",
        ));
    }
    Ok(values
        .chunks(ncpus)
        .map(|per_cpu| {
            let mut sum = V::zeroed();
            for v in per_cpu {
                add(&mut sum, v);
            }
            sum
        })
        .collect())
}
