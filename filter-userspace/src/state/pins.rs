//! The pin directory on bpffs: the filter's whole state, so it keeps enforcing (and can be
//! managed) after the controller exits.
//!
//! Layout: `prog` (the loaded program), `maps/NAME` (every map, named as
//! `filter_common::maps` says), `links/IFNAME` (one bpf_link per attached interface),
//! `state/GENERATION` (the snapshot of the live generation; see `snapshot`).

use std::ffi::CString;
use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use aya::maps::MapData;

use crate::error::{usage, NotLoaded};
use crate::text;

pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/floodgate";
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
const BPFFS_ROOT: &str = "/sys/fs/bpf";

/// Mount bpffs at its usual place, as bpftool does: minimal systems and fresh VMs lack it.
/// Whether this process runs in a mount namespace of its own (as `ip netns exec` makes, with
/// a fresh /sys): a bpffs mounted there vanishes with the command, and the filter with it.
fn private_mount_namespace() -> bool {
    use std::os::unix::fs::MetadataExt;
    if let (Ok(me), Ok(init)) = (
        std::fs::metadata("/proc/self/ns/mnt"),
        std::fs::metadata("/proc/1/ns/mnt"),
    ) {
        return me.ino() != init.ino();
    }
    // Where init's namespace link cannot be read: init has bpffs at /sys/fs/bpf and we do not.
    std::fs::read_to_string("/proc/1/mountinfo").is_ok_and(|m| {
        m.lines().any(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let sep = f.iter().position(|x| *x == "-");
            f.get(4) == Some(&BPFFS_ROOT) && sep.and_then(|i| f.get(i + 1)) == Some(&"bpf")
        })
    }) && !is_bpffs(Path::new(BPFFS_ROOT))
}

/// Why pins made here would not outlive this command, and what to run instead.
const PRIVATE_MOUNTS: &str = "this command runs in a mount namespace of its own without bpffs at /sys/fs/bpf (as `ip netns exec` sets up, with a fresh /sys): a filter pinned here would vanish when the command exits. Enter only the network namespace instead, e.g. `nsenter --net=/run/netns/NAME floodgate ...`";

fn mount_bpffs() -> Result<()> {
    if private_mount_namespace() {
        bail!(PRIVATE_MOUNTS);
    }
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

#[derive(Clone, Debug)]
pub struct PinDir {
    root: PathBuf,
}

/// The flock on the pin directory, held while a command reads or changes state: concurrent
/// invocations queue up behind it.
struct Lock {
    _dir: File,
}

/// A pin directory whose lock this process holds: the one way to take it, so every command
/// that touches the filter's state is serialized with every other.
pub struct Locked {
    _lock: Lock,
}

/// How much the holder of a lock may do.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Read only: other readers may hold the lock at the same time.
    Read,
    Write,
}

impl Locked {
    /// A loaded filter's directory; creates nothing. Fails with [`NotLoaded`] when nothing is
    /// loaded, also when the filter was removed while this command waited for the lock.
    pub fn loaded(pins: &PinDir, access: Access) -> Result<Locked> {
        pins.require_loaded()?;
        pins.check_bpffs(false)?;
        let Some(lock) = pins.lock_dir(access, false)? else {
            return Err(pins.not_loaded());
        };
        // The filter may have been unloaded while we waited for the lock.
        pins.require_loaded()?;
        pins.require_current_layout()?;
        Ok(Locked { _lock: lock })
    }

    /// An existing directory, loaded or not (for `detach --all`); `None` if there is none,
    /// also when it was removed while this command waited for the lock.
    pub fn existing(pins: &PinDir) -> Result<Option<Locked>> {
        if !pins.root.exists() {
            return Ok(None);
        }
        pins.check_bpffs(false)?;
        Ok(pins
            .lock_dir(Access::Write, false)?
            .map(|lock| Locked { _lock: lock }))
    }

    /// Create the directory tree if needed (first attach) and lock it; if `detach --all`
    /// removes it while this command waits, it is created again.
    pub fn creating(pins: &PinDir) -> Result<Locked> {
        pins.check_bpffs(true)?;
        match pins.lock_dir(Access::Write, true)? {
            Some(lock) => Ok(Locked { _lock: lock }),
            None => bail!(
                "{} keeps disappearing while floodgate creates it",
                pins.shown()
            ),
        }
    }
}

impl PinDir {
    /// A pin directory; relative paths are taken from the current directory.
    pub fn new(root: impl Into<PathBuf>) -> Result<Self> {
        let root: PathBuf = root.into();
        if root.as_os_str().is_empty() {
            return Err(usage(
                "--pin-dir is empty; give a directory on bpffs, such as /sys/fs/bpf/floodgate",
            ));
        }
        let root = std::path::absolute(&root)
            .with_context(|| format!("cannot resolve the pin directory {}", text::path(&root)))?;
        Ok(Self { root })
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

    pub fn state_dir(&self) -> PathBuf {
        self.root.join("state")
    }

    pub fn snapshot(&self, generation: u64) -> PathBuf {
        self.state_dir().join(generation.to_string())
    }

    pub fn is_loaded(&self) -> bool {
        self.prog().exists()
    }

    /// The directory as messages show it (control characters escaped).
    pub fn shown(&self) -> String {
        text::path(&self.root)
    }

    pub fn not_loaded(&self) -> anyhow::Error {
        anyhow::Error::new(NotLoaded(text::path(&self.prog())))
    }

    /// Fail with instructions ([`NotLoaded`]) unless the filter has been loaded (by
    /// `floodgate attach`).
    pub fn require_loaded(&self) -> Result<()> {
        if !self.is_loaded() {
            if self.root.starts_with(BPFFS_ROOT)
                && !is_bpffs(Path::new(BPFFS_ROOT))
                && private_mount_namespace()
            {
                bail!(PRIVATE_MOUNTS);
            }
            return Err(self.not_loaded());
        }
        Ok(())
    }

    /// The existing directory (or, with `create`, the parent it will be created in) must be
    /// on bpffs; /sys/fs/bpf itself is mounted when missing.
    fn check_bpffs(&self, create: bool) -> Result<()> {
        let probe = if create {
            self.root
                .ancestors()
                .find(|a| a.exists())
                .unwrap_or(Path::new("/"))
        } else {
            self.root.as_path()
        };
        if !is_bpffs(probe) && probe == Path::new(BPFFS_ROOT) {
            mount_bpffs()?;
        }
        if !is_bpffs(probe) {
            bail!(
                "{} is not on a BPF filesystem (bpffs): pins can only live on bpffs; use a --pin-dir under /sys/fs/bpf",
                self.shown()
            );
        }
        Ok(())
    }

    fn create_tree(&self) -> Result<()> {
        for dir in [
            self.root.clone(),
            self.maps_dir(),
            self.links_dir(),
            self.state_dir(),
        ] {
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create pin directory {}", text::path(&dir)))?;
        }
        Ok(())
    }

    /// Lock the directory now at the path (creating it first with `create`); `None` if there
    /// is none. A command that queued behind `detach --all` holds the removed directory; it
    /// must not go on beside whoever locks a new one there. When another command holds the
    /// lock, say so once before waiting: a stopped holder must not leave us silent forever.
    fn lock_dir(&self, access: Access, create: bool) -> Result<Option<Lock>> {
        use std::os::unix::fs::MetadataExt;
        let how = match access {
            Access::Read => libc::LOCK_SH,
            Access::Write => libc::LOCK_EX,
        };
        let mut announced = false;
        for _ in 0..100 {
            if create {
                self.create_tree()?;
            }
            let dir = match File::open(&self.root) {
                Ok(dir) => dir,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => {
                    return Err(e)
                        .with_context(|| format!("cannot open pin directory {}", self.shown()))
                }
            };
            if !try_flock(&dir, how | libc::LOCK_NB)
                .with_context(|| format!("cannot lock {}", self.shown()))?
            {
                if !announced {
                    announced = true;
                    let _ = writeln!(
                        std::io::stderr(),
                        "floodgate: waiting for the lock on {} (another floodgate command holds it)",
                        self.shown()
                    );
                }
                while !try_flock(&dir, how)
                    .with_context(|| format!("cannot lock {}", self.shown()))?
                {}
            }
            let held = dir.metadata()?;
            match std::fs::metadata(&self.root) {
                Ok(now) if now.dev() == held.dev() && now.ino() == held.ino() => {
                    return Ok(Some(Lock { _dir: dir }));
                }
                // Replaced or removed while we waited: lock what is there now.
                _ => continue,
            }
        }
        bail!(
            "{} keeps being replaced while floodgate waits for its lock",
            self.shown()
        )
    }

    /// Refuse pins left by a floodgate whose maps are laid out differently: the program is
    /// pinned but a map this version needs is not.
    pub fn require_current_layout(&self) -> Result<()> {
        if let Some(missing) = filter_common::maps::pinned_maps().find(|m| !self.map(m).exists()) {
            bail!(
                "{} holds a filter pinned by another floodgate version (it has no map {missing}): run `floodgate detach --all` and attach again (this removes its lists: save them first with `floodgate block list > FILE` using that version)",
                self.shown()
            );
        }
        let layout = self.pinned_layout()?;
        if layout != Some(filter_common::maps::LAYOUT_VERSION) {
            bail!(
                "{} holds a filter pinned by another floodgate version (map layout {}, this floodgate writes layout {}): run `floodgate detach --all` and attach again (this removes its lists: save them first with `floodgate block list > FILE` using that version)",
                self.shown(),
                layout.map_or_else(|| "1".to_string(), |l| l.to_string()),
                filter_common::maps::LAYOUT_VERSION
            );
        }
        Ok(())
    }

    /// The layout version in the pinned `STATE` map; `None` for a map without one (the first
    /// layout had a single entry).
    fn pinned_layout(&self) -> Result<Option<u64>> {
        use filter_common::maps::{STATE, STATE_LAYOUT};
        let map = aya::maps::Array::<MapData, u64>::try_from(aya::maps::Map::Array(
            self.open_map(STATE)?,
        ))?;
        if map.len() <= STATE_LAYOUT {
            return Ok(None);
        }
        Ok(Some(map.get(&STATE_LAYOUT, 0)?))
    }

    pub fn open_map_at(&self, path: &Path) -> Result<MapData> {
        MapData::from_pin(path)
            .with_context(|| format!("cannot open pinned map {}", text::path(path)))
    }

    pub fn open_map(&self, name: &str) -> Result<MapData> {
        let path = self.map(name);
        MapData::from_pin(&path).with_context(|| {
            format!(
                "cannot open pinned map {}; is floodgate attached? (`floodgate status`)",
                text::path(&path)
            )
        })
    }
}

/// flock; false when it would block (with LOCK_NB). Interrupted calls are retried.
fn try_flock(file: &File, how: libc::c_int) -> std::io::Result<bool> {
    loop {
        // SAFETY: flock on a file descriptor we own.
        if unsafe { libc::flock(file.as_raw_fd(), how) } == 0 {
            return Ok(true);
        }
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EWOULDBLOCK) if how & libc::LOCK_NB != 0 => return Ok(false),
            _ => return Err(e),
        }
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
