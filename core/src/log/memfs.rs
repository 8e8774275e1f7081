//! An in-memory file system for the simulation (`log/sim.rs`): what the segment device's calls
//! do to a file on ext4 or xfs through O_DIRECT, as far as a crash can tell.
//!
//! - **What reads see, and what survives.** Each file has the bytes reads see (its size is
//!   their length) and the bytes a power loss keeps (with the size it keeps). A write changes
//!   the first and marks its sectors (512 bytes, the unit a disk writes atomically) pending;
//!   `fdatasync` makes every pending sector durable, and the size; an O_DSYNC write makes its
//!   own sectors durable, and the size, when it completes (nothing else pending).
//! - **Sizes.** A write past the end grows the file (the gap reads as zeros). Preallocation
//!   keeps the size (`FALLOC_FL_KEEP_SIZE`). Until the size is durable, a power loss keeps any
//!   size the file had since it last was. `O_TRUNC` is metadata too: a power loss keeps it,
//!   with what followed it, or neither.
//! - **Names.** Creating and unlinking change a directory's entries; they are durable once the
//!   directory is synced. A power loss keeps each pending change, or not, one by one; a file
//!   whose name is lost is gone.
//! - **Crashes.** Every call is one step; a crash falls between two steps, or during one
//!   ([`MemFs::arm`]). A power loss lands each pending sector, or not (a torn write), the step
//!   in progress included (each crash picks the odds: none, all, or anything between); a
//!   process crash keeps everything the kernel was given (durable or
//!   not: a later power loss may still lose it), and the step in progress happens whole or
//!   not at all (the kernel finishes an O_DSYNC write it has started).
//! - **Faults.** A write or an fdatasync fails with EIO ([`MemFs::set_eio`]): a failed write
//!   lands some of its sectors, not durably; after a failed fdatasync each pending sector is
//!   durable, still pending, or dropped (reads see the old bytes again). The files are
//!   O_DIRECT: there is no page cache whose pages a failed fsync marks clean while they still
//!   read back ("fsyncgate"), so that is not modelled. A bit flips in durable data
//!   ([`MemFs::flip`]). Someone cuts a file at any byte ([`MemFs::cut`]).
//!
//! Not modelled: running out of space, reads that fail, misdirected or lost writes the disk
//! acknowledged, and directories that need creating (the data dir exists, durably).

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use super::fs::{Fs, Mode};

/// The unit a disk writes atomically: a torn write tears between sectors.
const SECTOR: usize = 512;
/// O_DIRECT writes start and end on multiples of this.
const DMA_ALIGN: u64 = 512;

/// xorshift64*: small, seedable, good enough to pick faults.
pub(super) struct Rng(u64);

impl Rng {
    pub(super) fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub(super) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub(super) fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    pub(super) fn chance(&mut self, per_thousand: u64) -> bool {
        self.below(1000) < per_thousand
    }
}

/// How the process stops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Crash {
    /// The machine loses power: what was not durable lands or not, sector by sector.
    Power,
    /// The process dies (kill -9): the kernel keeps what it was given.
    Process,
}

/// A file system in memory that crashes (see the module docs). Clones share the disk.
#[derive(Clone)]
pub(super) struct MemFs(Rc<RefCell<Disk>>);

/// An open file.
pub(super) struct MemFile {
    ino: u64,
    write: bool,
    dsync: bool,
    /// The disk's incarnation it was opened in (a crash closes every file).
    generation: u64,
}

struct Disk {
    inodes: BTreeMap<u64, Inode>,
    dirs: BTreeMap<PathBuf, Dir>,
    next_ino: u64,
    rng: Rng,
    /// Calls so far, and the call a crash falls in.
    steps: u64,
    armed: Option<(u64, Crash)>,
    /// The process is dead: every call fails until [`MemFs::restart`].
    dead: Option<Crash>,
    generation: u64,
    eio_per_mille: u64,
    trace: bool,
}

#[derive(Default)]
struct Dir {
    now: BTreeMap<OsString, u64>,
    durable: BTreeMap<OsString, u64>,
}

#[derive(Default)]
struct Inode {
    /// What reads see; its length is the file's size.
    data: Vec<u8>,
    /// What a power loss keeps (past `durable_size`: nothing).
    durable: Vec<u8>,
    durable_size: usize,
    /// Sectors of `data` written since they were last durable.
    pending: BTreeSet<usize>,
    /// Sizes the file had since its size was durable.
    sizes: Vec<usize>,
    /// Truncated since its size was durable.
    truncated: bool,
    /// Bytes preallocated (sizes and reads ignore them, as `FALLOC_FL_KEEP_SIZE` does).
    allocated: u64,
    /// A bit has flipped in it (once per file: see `log/sim.rs`).
    flipped: bool,
}

/// What happens to the step a call is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Fate {
    Live,
    /// The process dies during it.
    Dies(Crash),
}

fn crashed() -> io::Error {
    io::Error::other("simulated crash")
}

impl Inode {
    /// Writes `len` bytes at `offset` (`bytes`, or zeros), the sectors `keep` says.
    fn write(
        &mut self,
        offset: usize,
        bytes: Option<&[u8]>,
        len: usize,
        keep: impl FnMut() -> bool,
    ) {
        let end = offset + len;
        let mut keep = keep;
        for s in offset / SECTOR..end.div_ceil(SECTOR) {
            if !keep() {
                continue;
            }
            let (from, to) = ((s * SECTOR).max(offset), ((s + 1) * SECTOR).min(end));
            if self.data.len() < to {
                self.data.resize(to, 0);
                self.sizes.push(to);
            }
            match bytes {
                Some(b) => self.data[from..to].copy_from_slice(&b[from - offset..to - offset]),
                None => self.data[from..to].fill(0),
            }
            self.pending.insert(s);
        }
    }

    /// Sector `s` as reads see it becomes durable.
    fn land(&mut self, s: usize) {
        self.pending.remove(&s);
        let from = s * SECTOR;
        let to = (from + SECTOR).min(self.data.len());
        if from >= to {
            return;
        }
        if self.durable.len() < to {
            self.durable.resize(to, 0);
        }
        self.durable[from..to].copy_from_slice(&self.data[from..to]);
    }

    /// Sector `s` reads as it is durable again (the disk dropped a write).
    fn revert(&mut self, s: usize) {
        self.pending.remove(&s);
        let from = s * SECTOR;
        let to = (from + SECTOR).min(self.data.len());
        for at in from..to {
            self.data[at] = self.durable.get(at).copied().unwrap_or(0);
        }
    }

    /// The sectors `sectors` and the file's size (and a truncate) become durable.
    fn persist(&mut self, sectors: Vec<usize>) {
        if self.truncated {
            self.durable.clear();
            self.truncated = false;
        }
        for s in sectors {
            self.land(s);
        }
        self.durable_size = self.data.len();
        self.durable.resize(self.durable_size, 0);
        self.sizes.clear();
    }

    fn power_loss(&mut self, rng: &mut Rng, land_per_mille: u64) {
        let truncate_lands = self.truncated && rng.chance(500);
        if self.truncated && !truncate_lands {
            // The truncate never reached the journal, nor anything that followed it.
            self.durable.resize(self.durable_size, 0);
        } else {
            if truncate_lands {
                self.durable.clear();
            }
            let pending: Vec<usize> = self.pending.iter().copied().collect();
            for s in pending {
                if rng.chance(land_per_mille) {
                    self.land(s);
                }
            }
            let mut sizes = std::mem::take(&mut self.sizes);
            if !truncate_lands {
                sizes.push(self.durable_size);
            }
            self.durable_size = sizes[rng.below(sizes.len() as u64) as usize];
            self.durable.resize(self.durable_size, 0);
        }
        self.data = self.durable.clone();
        self.pending.clear();
        self.sizes.clear();
        self.truncated = false;
    }
}

impl MemFs {
    /// An empty disk; `seed` picks its faults.
    pub(super) fn new(seed: u64, trace: bool) -> Self {
        MemFs(Rc::new(RefCell::new(Disk {
            inodes: BTreeMap::new(),
            dirs: BTreeMap::new(),
            next_ino: 1,
            rng: Rng::new(seed ^ 0x6d65_6d66_7300),
            steps: 0,
            armed: None,
            dead: None,
            generation: 0,
            eio_per_mille: 0,
            trace,
        })))
    }

    /// The process dies during the call `after` calls from now (0: the next one).
    pub(super) fn arm(&self, after: u64, how: Crash) {
        let mut d = self.0.borrow_mut();
        d.armed = Some((d.steps + after + 1, how));
    }

    /// No crash is due.
    pub(super) fn disarm(&self) {
        self.0.borrow_mut().armed = None;
    }

    /// The process dies now, between two calls.
    pub(super) fn crash(&self, how: Crash) {
        let mut d = self.0.borrow_mut();
        d.armed = None;
        d.dead.get_or_insert(how);
    }

    /// How the process died, if it did.
    pub(super) fn dead(&self) -> Option<Crash> {
        self.0.borrow().dead
    }

    /// Writes and fdatasyncs fail with EIO this often.
    pub(super) fn set_eio(&self, per_mille: u64) {
        self.0.borrow_mut().eio_per_mille = per_mille;
    }

    /// Boots the machine again after the crash: settles what the crash kept, and closes
    /// every file. How it died.
    pub(super) fn restart(&self) -> Option<Crash> {
        let d = &mut *self.0.borrow_mut();
        let how = d.dead.take()?;
        d.armed = None;
        d.generation += 1;
        if how == Crash::Power {
            for dir in d.dirs.values_mut() {
                let names: BTreeSet<OsString> =
                    dir.now.keys().chain(dir.durable.keys()).cloned().collect();
                for name in names {
                    let (now, durable) = (dir.now.get(&name), dir.durable.get(&name));
                    if now != durable && d.rng.chance(500) {
                        match now {
                            Some(&ino) => dir.durable.insert(name, ino),
                            None => dir.durable.remove(&name),
                        };
                    }
                }
                dir.now = dir.durable.clone();
            }
        }
        // A file no name leads to, durable or not, is gone (its handles died with the
        // process).
        let live: BTreeSet<u64> = d
            .dirs
            .values()
            .flat_map(|x| x.now.values().chain(x.durable.values()).copied())
            .collect();
        d.inodes.retain(|ino, _| live.contains(ino));
        if how == Crash::Power {
            let land = match d.rng.below(4) {
                0 => 0,
                1 => 1000,
                _ => d.rng.below(1001),
            };
            for f in d.inodes.values_mut() {
                f.power_loss(&mut d.rng, land);
            }
        }
        if d.trace {
            eprintln!("    fs: restart after a {how:?} crash");
        }
        Some(how)
    }

    /// The size of the file at `path`, if there is one.
    pub(super) fn size(&self, path: &Path) -> Option<usize> {
        let d = self.0.borrow();
        let ino = d.lookup(path).ok()?;
        d.inodes.get(&ino).map(|f| f.data.len())
    }

    /// Someone cuts the file at `path` to `len` bytes, durably (by hand, or a filesystem's
    /// repair): its size need not be a multiple of anything.
    pub(super) fn cut(&self, path: &Path, len: usize) {
        let d = &mut *self.0.borrow_mut();
        let Ok(ino) = d.lookup(path) else { return };
        if let Some(f) = d.inodes.get_mut(&ino) {
            f.persist((0..f.data.len().div_ceil(SECTOR)).collect());
            f.data.truncate(len);
            f.persist(Vec::new());
        }
    }

    /// `bytes` land at `offset` of the file at `path`, durably: what a torn write of a record
    /// that was never acknowledged leaves.
    pub(super) fn scribble(&self, path: &Path, offset: usize, bytes: &[u8]) {
        let d = &mut *self.0.borrow_mut();
        let Ok(ino) = d.lookup(path) else { return };
        if let Some(f) = d.inodes.get_mut(&ino) {
            f.write(offset, Some(bytes), bytes.len(), || true);
            f.persist((0..f.data.len().div_ceil(SECTOR)).collect());
        }
    }

    /// A bit flips in the durable bytes of a file no bit flipped in yet; whether one did.
    pub(super) fn flip(&self) -> bool {
        let d = &mut *self.0.borrow_mut();
        let ids: Vec<u64> = d
            .inodes
            .iter()
            .filter(|(_, f)| !f.flipped && f.durable_size > 0)
            .map(|(&ino, _)| ino)
            .collect();
        let Some(&ino) = ids.get(d.rng.below(ids.len() as u64) as usize) else {
            return false;
        };
        let Some(f) = d.inodes.get_mut(&ino) else {
            return false;
        };
        let at = d.rng.below(f.durable_size as u64) as usize;
        let bit = 1u8 << d.rng.below(8);
        f.durable[at] ^= bit;
        if !f.pending.contains(&(at / SECTOR)) && at < f.data.len() {
            f.data[at] ^= bit;
        }
        f.flipped = true;
        if d.trace {
            eprintln!("    fs: a bit flips in inode {ino} at {at}");
        }
        true
    }
}

impl Disk {
    /// One call: where a crash can fall.
    fn enter(&mut self, what: &dyn Fn() -> String) -> io::Result<Fate> {
        if self.dead.is_some() {
            return Err(crashed());
        }
        self.steps += 1;
        let fate = match self.armed {
            Some((at, how)) if self.steps >= at => {
                self.armed = None;
                self.dead = Some(how);
                Fate::Dies(how)
            }
            _ => Fate::Live,
        };
        if self.trace {
            let dies = match fate {
                Fate::Live => String::new(),
                Fate::Dies(how) => format!(" (a {how:?} crash falls here)"),
            };
            eprintln!("    fs {}: {}{dies}", self.steps, what());
        }
        Ok(fate)
    }

    /// Whether the step a dying process was in happens (a process crash: whole, or not at
    /// all); a live one always does.
    fn happens(&mut self, fate: Fate) -> bool {
        match fate {
            Fate::Live | Fate::Dies(Crash::Power) => true,
            Fate::Dies(Crash::Process) => self.rng.chance(500),
        }
    }

    fn split(path: &Path) -> io::Result<(&Path, OsString)> {
        match (path.parent(), path.file_name()) {
            (Some(dir), Some(name)) => Ok((dir, name.to_owned())),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a file path",
            )),
        }
    }

    fn lookup(&self, path: &Path) -> io::Result<u64> {
        let (dir, name) = Self::split(path)?;
        self.dirs
            .get(dir)
            .and_then(|d| d.now.get(&name))
            .copied()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such file"))
    }

    fn inode(&mut self, f: &MemFile) -> io::Result<&mut Inode> {
        if f.generation != self.generation {
            return Err(io::Error::other("a file opened before a crash"));
        }
        self.inodes
            .get_mut(&f.ino)
            .ok_or_else(|| io::Error::other("no such inode"))
    }

    fn write(
        &mut self,
        f: &MemFile,
        offset: u64,
        bytes: Option<&[u8]>,
        len: usize,
    ) -> io::Result<usize> {
        let fate = self.enter(&|| format!("write {len} at {offset} of inode {}", f.ino))?;
        if !f.write || !offset.is_multiple_of(DMA_ALIGN) || !(len as u64).is_multiple_of(DMA_ALIGN)
        {
            // O_DIRECT refuses a write that is not block-aligned.
            return Err(match fate {
                Fate::Live => io::Error::from_raw_os_error(libc::EINVAL),
                Fate::Dies(_) => crashed(),
            });
        }
        let eio = fate == Fate::Live && self.rng.chance(self.eio_per_mille);
        let happens = self.happens(fate);
        let Disk { inodes, rng, .. } = self;
        let ino = inodes
            .get_mut(&f.ino)
            .ok_or_else(|| io::Error::other("no such inode"))?;
        if eio {
            // Some of its sectors reached the disk, not durably.
            ino.write(offset as usize, bytes, len, || rng.chance(500));
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        if happens {
            ino.write(offset as usize, bytes, len, || true);
            // A write in flight at a power loss is not durable, O_DSYNC or not.
            if f.dsync && fate != Fate::Dies(Crash::Power) {
                let first = offset as usize / SECTOR;
                ino.persist((first..(offset as usize + len).div_ceil(SECTOR)).collect());
            }
        }
        match fate {
            Fate::Live => Ok(len),
            Fate::Dies(_) => Err(crashed()),
        }
    }
}

impl Fs for MemFs {
    type File = MemFile;

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let d = &mut *self.0.borrow_mut();
        let fate = d.enter(&|| format!("mkdir -p {}", dir.display()))?;
        d.dirs.entry(dir.to_owned()).or_default();
        match fate {
            Fate::Live => Ok(()),
            Fate::Dies(_) => Err(crashed()),
        }
    }

    fn read_dir(&self, dir: &Path) -> io::Result<Vec<OsString>> {
        let d = &mut *self.0.borrow_mut();
        let fate = d.enter(&|| format!("list {}", dir.display()))?;
        if let Fate::Dies(_) = fate {
            return Err(crashed());
        }
        d.dirs
            .get(dir)
            .map(|x| x.now.keys().cloned().collect())
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such directory"))
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let d = &mut *self.0.borrow_mut();
        let fate = d.enter(&|| format!("unlink {}", path.display()))?;
        let (dir, name) = Disk::split(path)?;
        let happens = d.happens(fate);
        let found = match d.dirs.get_mut(dir) {
            Some(x) if happens => x.now.remove(&name).is_some(),
            Some(x) => x.now.contains_key(&name),
            None => false,
        };
        match fate {
            Fate::Dies(_) => Err(crashed()),
            Fate::Live if found => Ok(()),
            Fate::Live => Err(io::Error::new(io::ErrorKind::NotFound, "no such file")),
        }
    }

    async fn open(&self, path: &Path, mode: Mode) -> io::Result<MemFile> {
        let d = &mut *self.0.borrow_mut();
        let fate = d.enter(&|| format!("open {} {mode:?}", path.display()))?;
        let (write, create, dsync) = match mode {
            Mode::Read => (false, false, false),
            Mode::Write { create, dsync } => (true, create, dsync),
        };
        let found = d.lookup(path);
        let ino = match found {
            Ok(ino) => {
                if create && d.happens(fate) {
                    if let Some(f) = d.inodes.get_mut(&ino) {
                        // O_TRUNC: metadata, pending like a size.
                        f.data.clear();
                        f.pending.clear();
                        f.sizes = vec![0];
                        f.truncated = true;
                    }
                }
                ino
            }
            Err(e) if !create => {
                return Err(match fate {
                    Fate::Live => e,
                    Fate::Dies(_) => crashed(),
                })
            }
            Err(_) => {
                let ino = d.next_ino;
                if d.happens(fate) {
                    let (dir, name) = Disk::split(path)?;
                    let Some(x) = d.dirs.get_mut(dir) else {
                        return Err(io::Error::new(io::ErrorKind::NotFound, "no such directory"));
                    };
                    d.next_ino += 1;
                    x.now.insert(name, ino);
                    d.inodes.insert(ino, Inode::default());
                }
                ino
            }
        };
        match fate {
            Fate::Live => Ok(MemFile {
                ino,
                write,
                dsync,
                generation: d.generation,
            }),
            Fate::Dies(_) => Err(crashed()),
        }
    }

    async fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let d = &mut *self.0.borrow_mut();
        let fate = d.enter(&|| format!("fsync dir {}", dir.display()))?;
        // At a power loss, the sync in flight may have landed any of the entries: the
        // restart's coin for each pending entry covers it.
        if fate == Fate::Live || fate == Fate::Dies(Crash::Process) && d.happens(fate) {
            if let Some(x) = d.dirs.get_mut(dir) {
                x.durable = x.now.clone();
            }
        }
        match fate {
            Fate::Live => Ok(()),
            Fate::Dies(_) => Err(crashed()),
        }
    }

    async fn file_size(&self, f: &MemFile) -> io::Result<u64> {
        let d = &mut *self.0.borrow_mut();
        let fate = d.enter(&|| format!("size of inode {}", f.ino))?;
        if let Fate::Dies(_) = fate {
            return Err(crashed());
        }
        Ok(d.inode(f)?.data.len() as u64)
    }

    async fn pre_allocate(&self, f: &MemFile, bytes: u64) -> io::Result<()> {
        let d = &mut *self.0.borrow_mut();
        let fate = d.enter(&|| format!("fallocate {bytes} (keep size) inode {}", f.ino))?;
        if d.happens(fate) {
            let i = d.inode(f)?;
            i.allocated = i.allocated.max(bytes);
        }
        match fate {
            Fate::Live => Ok(()),
            Fate::Dies(_) => Err(crashed()),
        }
    }

    async fn write_at(&self, f: &MemFile, offset: u64, data: &[u8]) -> io::Result<usize> {
        self.0.borrow_mut().write(f, offset, Some(data), data.len())
    }

    async fn write_zeros_at(&self, f: &MemFile, offset: u64, len: usize) -> io::Result<usize> {
        self.0.borrow_mut().write(f, offset, None, len)
    }

    async fn read_at(
        &self,
        f: &MemFile,
        offset: u64,
        len: usize,
        out: &mut Vec<u8>,
    ) -> io::Result<usize> {
        let d = &mut *self.0.borrow_mut();
        let fate = d.enter(&|| format!("read {len} at {offset} of inode {}", f.ino))?;
        if let Fate::Dies(_) = fate {
            return Err(crashed());
        }
        let data = &d.inode(f)?.data;
        let from = (offset as usize).min(data.len());
        let to = (offset as usize).saturating_add(len).min(data.len());
        out.extend_from_slice(&data[from..to]);
        Ok(to - from)
    }

    async fn fdatasync(&self, f: &MemFile) -> io::Result<()> {
        let d = &mut *self.0.borrow_mut();
        let fate = d.enter(&|| format!("fdatasync inode {}", f.ino))?;
        let eio = fate == Fate::Live && d.rng.chance(d.eio_per_mille);
        // At a power loss, the sync in flight may have landed any pending sector: the
        // restart's coin for each covers it.
        let happens = fate != Fate::Dies(Crash::Power) && d.happens(fate);
        let Disk { inodes, rng, .. } = d;
        let i = inodes
            .get_mut(&f.ino)
            .ok_or_else(|| io::Error::other("no such inode"))?;
        if eio {
            // Each pending sector reached the disk, or is still on its way, or the disk
            // dropped it (reads see the old bytes again).
            let pending: Vec<usize> = i.pending.iter().copied().collect();
            for s in pending {
                match rng.below(3) {
                    0 => i.land(s),
                    1 => {}
                    _ => i.revert(s),
                }
            }
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        if happens {
            let all: Vec<usize> = i.pending.iter().copied().collect();
            i.persist(all);
        }
        match fate {
            Fate::Live => Ok(()),
            Fate::Dies(_) => Err(crashed()),
        }
    }

    async fn close(&self, f: MemFile) -> io::Result<()> {
        let d = &mut *self.0.borrow_mut();
        let fate = d.enter(&|| format!("close inode {}", f.ino))?;
        match fate {
            Fate::Live => Ok(()),
            Fate::Dies(_) => Err(crashed()),
        }
    }
}
