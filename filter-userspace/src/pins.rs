//! The pin directory on bpffs: the filter's whole state, so it keeps enforcing (and can be
//! managed) after the controller exits.
//!
//! Layout: `prog` (the loaded program), `maps/NAME` (every map), `links/IFNAME` (one bpf_link
//! per attached interface).

use std::ffi::CString;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use aya::maps::MapData;

pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/floodgate";
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
const BPFFS_ROOT: &str = "/sys/fs/bpf";

/// Mount bpffs at its usual place, as bpftool does: minimal systems and fresh VMs lack it.
fn mount_bpffs() -> Result<()> {
    tracing::info!("mounting bpffs at {BPFFS_ROOT}");
    let target = CString::new(BPFFS_ROOT).expect("no NUL");
    let fstype = CString::new("bpf").expect("no NUL");
    // SAFETY: valid C strings; no data argument.
    let rc = unsafe {
        libc::mount(
            fstype.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("{BPFFS_ROOT} is not bpffs and mounting it failed"));
    }
    Ok(())
}

/// Maps the controller creates itself (the program never reads them).
pub const ATTACHMENTS: &str = "ATTACHMENTS";

pub fn records_map(kind: filter_common::ListKind, v6: bool) -> &'static str {
    use filter_common::ListKind::*;
    match (kind, v6) {
        (Allow, false) => "ALLOW_V4_REC",
        (Block, false) => "BLOCK_V4_REC",
        (Allow, true) => "ALLOW_V6_REC",
        (Block, true) => "BLOCK_V6_REC",
    }
}

#[derive(Clone, Debug)]
pub struct PinDir {
    root: PathBuf,
}

/// Held while a command changes state: concurrent invocations queue up behind it.
pub struct Lock {
    _dir: File,
}

impl PinDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn prog(&self) -> PathBuf {
        self.root.join("prog")
    }

    pub fn maps_dir(&self) -> PathBuf {
        self.root.join("maps")
    }

    pub fn map(&self, name: &str) -> PathBuf {
        self.maps_dir().join(name)
    }

    pub fn links_dir(&self) -> PathBuf {
        self.root.join("links")
    }

    pub fn link(&self, ifname: &str) -> PathBuf {
        self.links_dir().join(ifname)
    }

    pub fn is_loaded(&self) -> bool {
        self.prog().exists()
    }

    /// Fail with instructions unless the filter has been loaded (by `floodgate attach`).
    pub fn require_loaded(&self) -> Result<()> {
        if !self.is_loaded() {
            bail!(
                "floodgate is not loaded (no pinned program at {}); run `floodgate attach IFACE` first",
                self.prog().display()
            );
        }
        Ok(())
    }

    /// Create the directory tree (its parent must be on bpffs) and take the lock.
    pub fn lock(&self) -> Result<Lock> {
        let parent = self.root.parent().unwrap_or(Path::new("/"));
        if !is_bpffs(parent) && parent == Path::new(BPFFS_ROOT) {
            mount_bpffs()?;
        }
        if !is_bpffs(parent) {
            bail!(
                "{} is not on a BPF filesystem; mount one with `mount -t bpf bpf {}` or choose another --pin-dir",
                parent.display(),
                parent.display()
            );
        }
        for dir in [self.root.clone(), self.maps_dir(), self.links_dir()] {
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create pin directory {}", dir.display()))?;
        }
        let dir = File::open(&self.root)
            .with_context(|| format!("cannot open pin directory {}", self.root.display()))?;
        // SAFETY: flock on a file descriptor we own.
        if unsafe { libc::flock(dir.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("cannot lock {}", self.root.display()));
        }
        Ok(Lock { _dir: dir })
    }

    pub fn open_map(&self, name: &str) -> Result<MapData> {
        let path = self.map(name);
        MapData::from_pin(&path).with_context(|| {
            format!(
                "cannot open pinned map {}; is floodgate attached? (`floodgate status`)",
                path.display()
            )
        })
    }
}

pub fn is_bpffs(path: &Path) -> bool {
    let Ok(c) = CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: statfs into a zeroed struct with a valid C string.
    unsafe {
        let mut st: libc::statfs = std::mem::zeroed();
        libc::statfs(c.as_ptr(), &mut st) == 0 && st.f_type as i64 == BPF_FS_MAGIC
    }
}
