//! What aya 0.14 does not offer: mmap of BPF_F_MMAPABLE arrays (how every list structure and
//! snapshot is written and read: no syscall per entry), creating such arrays with a name, a
//! batched read of per-CPU arrays, and the kernel's memory accounting of a map.

use std::io;
use std::marker::PhantomData;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd};

use aya::maps::MapData;
use bytemuck::Pod;

const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
pub const BPF_F_MMAPABLE: u32 = 1 << 10;
const BPF_MAP_TYPE_ARRAY: u32 = 2;

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
/// kernel copies whole values into our buffers, so a map from another floodgate version must
/// be refused, not read.
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

/// A BPF_F_MMAPABLE array mapped into our address space as a slice of `T`. Stores of 8-byte
/// aligned words are single stores, so the XDP program sees either the old or the new word.
pub struct Mapped<T> {
    ptr: *mut T,
    len: usize,
    /// The mapping itself (`ptr` may point into it, for a window).
    base: *mut libc::c_void,
    bytes: usize,
    _t: PhantomData<T>,
}

// SAFETY: the mapping is plain memory; access is through &self/&mut self.
unsafe impl<T: Send> Send for Mapped<T> {}
// SAFETY: as above; shared access only reads.
unsafe impl<T: Sync> Sync for Mapped<T> {}

impl<T: Pod> Mapped<T> {
    /// Map the whole array; its values must be `T` (a multiple of 8 bytes, so the kernel's
    /// per-element stride equals `size_of::<T>()`).
    pub fn new(map: &MapData, writable: bool) -> io::Result<Self> {
        assert_eq!(std::mem::size_of::<T>() % 8, 0);
        let fd = checked::<u32, T>(map)?;
        let info = map.info().map_err(io::Error::other)?;
        if info.map_flags() & BPF_F_MMAPABLE == 0 {
            return Err(io::Error::other(format!(
                "map {} cannot be mapped: pinned by another floodgate version; run `floodgate detach --all` and attach again",
                info.name_as_str().unwrap_or("?")
            )));
        }
        let len = info.max_entries() as usize;
        let bytes = len * std::mem::size_of::<T>();
        let prot = if writable {
            libc::PROT_READ | libc::PROT_WRITE
        } else {
            libc::PROT_READ
        };
        // SAFETY: mapping a map fd with the length of its value area; checked for failure.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes.max(1),
                prot,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Self {
            ptr: ptr.cast(),
            len,
            base: ptr,
            bytes,
            _t: PhantomData,
        })
    }

    /// Map only the pages holding entries `first..first + count` (a few nodes of a large
    /// pool: mapping all of it costs milliseconds per 64 MiB). Index 0 of the result is entry
    /// `first`.
    pub fn window(map: &MapData, first: usize, count: usize) -> io::Result<Self> {
        let size = std::mem::size_of::<T>();
        assert!(size.is_power_of_two(), "entries must tile pages");
        let fd = checked::<u32, T>(map)?;
        let info = map.info().map_err(io::Error::other)?;
        if first + count > info.max_entries() as usize || count == 0 {
            return Err(io::Error::other("window beyond the map"));
        }
        // SAFETY: sysconf has no preconditions.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
        let start = first * size / page * page;
        let end = ((first + count) * size).div_ceil(page) * page;
        // SAFETY: a page-aligned part of the map's value area; checked for failure.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                end - start,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                start as libc::off_t,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Self {
            // SAFETY: `first * size - start` is inside the mapping just made.
            ptr: unsafe { base.cast::<u8>().add(first * size - start).cast() },
            len: count,
            bytes: end - start,
            base: base.cast(),
            _t: PhantomData,
        })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn get(&self, i: usize) -> T {
        assert!(i < self.len, "index {i} beyond {}", self.len);
        // SAFETY: in bounds of the mapping; volatile because the kernel side shares it.
        unsafe { self.ptr.add(i).read_volatile() }
    }

    pub fn set(&mut self, i: usize, v: T) {
        assert!(i < self.len, "index {i} beyond {}", self.len);
        // SAFETY: in bounds of a writable shared mapping.
        unsafe { self.ptr.add(i).write_volatile(v) }
    }

    /// The whole array, for bulk reads of maps the program never writes.
    pub fn as_slice(&self) -> &[T] {
        // SAFETY: the mapping holds `len` initialised `T`s (any bit pattern is valid: Pod).
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }

    /// The whole array, for bulk writes of structures the program does not read right now.
    pub fn as_mut_slice(&mut self) -> &mut [T] {
        // SAFETY: as above, and the mapping is writable when this is called.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

impl<T> Drop for Mapped<T> {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what new() mapped.
        unsafe {
            libc::munmap(self.base, self.bytes.max(1));
        }
    }
}

/// Create a BPF_F_MMAPABLE array of `entries` values of `T` named `name` (at most 15 bytes),
/// not referenced by any program: the controller's own storage on bpffs.
pub fn create_mmapable_array<T: Pod>(name: &str, entries: u32) -> io::Result<MapData> {
    let obj = aya_obj::Map::new_from_params(
        BPF_MAP_TYPE_ARRAY,
        4,
        std::mem::size_of::<T>() as u32,
        entries.max(1),
        BPF_F_MMAPABLE,
    );
    MapData::create(obj, name, None).map_err(io::Error::other)
}

/// What a pinned bpf_link is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkInfo {
    /// The program it runs.
    pub prog_id: u32,
    /// For an XDP link, the interface it is attached to; 0 once that interface has gone.
    pub ifindex: u32,
    pub is_xdp: bool,
}

/// The program a pinned bpf_link runs, if `path` is a link pin.
pub fn link_prog_id(path: &std::path::Path) -> Option<u32> {
    link_info(path).map(|l| l.prog_id)
}

/// What the bpf_link pinned at `path` is, if it is one.
pub fn link_info(path: &std::path::Path) -> Option<LinkInfo> {
    const BPF_OBJ_GET: libc::c_long = 7;
    const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
    const BPF_LINK_TYPE_XDP: u32 = 6;
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).ok()?;
    // bpf_attr for BPF_OBJ_GET: pathname, bpf_fd, file_flags.
    let mut get = [0u64; 3];
    get[0] = c.as_ptr() as u64;
    // SAFETY: a bpf_attr prefix with a valid path pointer.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET,
            get.as_mut_ptr(),
            std::mem::size_of_val(&get),
        )
    };
    if fd < 0 {
        return None;
    }
    // SAFETY: a new fd the kernel gave us, closed on drop.
    let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) };
    // A map or program pin answers BPF_OBJ_GET_INFO_BY_FD too, with another layout: only a
    // link's fdinfo has a link_id line.
    let fdinfo = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd())).ok()?;
    if !fdinfo.lines().any(|l| l.starts_with("link_id:")) {
        return None;
    }
    // struct bpf_link_info: type, id, prog_id (u32 each), then a union aligned to 8 bytes
    // whose `xdp` member is the ifindex.
    let mut info = [0u32; 16];
    #[repr(C)]
    struct InfoAttr {
        bpf_fd: u32,
        info_len: u32,
        info: u64,
    }
    let mut attr = InfoAttr {
        bpf_fd: fd.as_raw_fd() as u32,
        info_len: std::mem::size_of_val(&info) as u32,
        info: info.as_mut_ptr() as u64,
    };
    // SAFETY: info points at a buffer of info_len bytes.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET_INFO_BY_FD,
            &mut attr as *mut InfoAttr,
            std::mem::size_of::<InfoAttr>(),
        )
    };
    if rc != 0 {
        return None;
    }
    let is_xdp = info[0] == BPF_LINK_TYPE_XDP;
    Some(LinkInfo {
        prog_id: info[2],
        ifindex: if is_xdp { info[4] } else { 0 },
        is_xdp,
    })
}

/// Kernel memory charged for a map (the `memlock` bpftool shows), from /proc/self/fdinfo.
pub fn memlock(map: &MapData) -> Option<u64> {
    let fd = map.fd().as_fd().as_raw_fd();
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).ok()?;
    info.lines()
        .find_map(|l| l.strip_prefix("memlock:"))
        .and_then(|v| v.trim().parse().ok())
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

/// Entries in a (non-per-CPU) hash map and its capacity, counted with batched lookups (a few
/// syscalls for a quarter-million entries, where walking the keys takes one per entry). The
/// count is a moment's: the program adds and removes entries meanwhile.
pub fn hash_len(map: &MapData) -> io::Result<(u64, u32)> {
    const BATCH: u32 = 4096;
    let info = map.info().map_err(io::Error::other)?;
    let (key_size, value_size) = (info.key_size() as usize, info.value_size() as usize);
    let fd = map.fd().as_fd();
    let mut keys = vec![0u8; key_size * BATCH as usize];
    let mut values = vec![0u8; value_size * BATCH as usize];
    // The kernel's cursor for hash maps is a bucket index (u32); 8 bytes leave room.
    let mut cursor_in = [0u64; 1];
    let mut cursor_out = [0u64; 1];
    let mut total = 0u64;
    let mut first = true;
    loop {
        let mut attr = BatchAttr {
            in_batch: if first {
                0
            } else {
                cursor_in.as_mut_ptr() as u64
            },
            out_batch: cursor_out.as_mut_ptr() as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: BATCH,
            map_fd: fd.as_raw_fd() as u32,
            ..Default::default()
        };
        let done = match bpf(BPF_MAP_LOOKUP_BATCH, &mut attr) {
            Ok(()) => false,
            // The end of the map: `count` holds what this last call returned.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => true,
            Err(e) => return Err(e),
        };
        total += u64::from(attr.count);
        if done {
            return Ok((total, info.max_entries()));
        }
        cursor_in = cursor_out;
        first = false;
    }
}
