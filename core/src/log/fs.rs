//! What the segment device (`log/dma.rs`) needs from a file system, as a trait: the broker's
//! implementation is [`DmaFs`] (glommio's DMA files, O_DIRECT); the seeded simulation
//! (`log/sim.rs`) runs the same device over an in-memory disk that crashes (`log/memfs.rs`).
//! The device is generic over it, so the broker pays nothing for the seam: no boxed futures,
//! no dynamic dispatch.
//!
//! A call is one I/O step: where a simulated crash can fall. Writes are O_DIRECT: `offset` and
//! the length are multiples of the device's logical block (the log pads its writes).

use std::ffi::OsString;
use std::io;
use std::path::Path;

use glommio::io::{DmaFile, OpenOptions};

/// How a file is opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// For reading (it must exist).
    Read,
    /// For writing: `create` creates it, or truncates it if it exists; `dsync`: O_DSYNC
    /// (a write is on stable storage, with the size that reads it back, when it completes).
    Write {
        /// Create or truncate.
        create: bool,
        /// O_DSYNC.
        dsync: bool,
    },
}

/// A file system as the segment device uses it (see the module docs). Async methods take the
/// file system by `&self`: an implementation that shares state does so inside.
// Thread-per-core: a file never leaves the thread that opened it, so the futures need no
// `Send` bound (glommio's are not `Send`).
#[allow(async_fn_in_trait)]
pub trait Fs {
    /// An open file.
    type File;

    /// Creates a directory and its parents, if missing.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// The names in a directory.
    fn read_dir(&self, dir: &Path) -> io::Result<Vec<OsString>>;
    /// Unlinks a file (durable once its directory is synced).
    fn remove_file(&self, path: &Path) -> io::Result<()>;

    /// Opens a file (see [`Mode`]). A created file's name is durable once its directory is
    /// synced.
    async fn open(&self, path: &Path, mode: Mode) -> io::Result<Self::File>;
    /// Makes the directory's entries durable (fsync of the directory).
    async fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// The file's size.
    async fn file_size(&self, f: &Self::File) -> io::Result<u64>;
    /// Reserves `bytes` of disk for the file, keeping its size (`FALLOC_FL_KEEP_SIZE`).
    async fn pre_allocate(&self, f: &Self::File, bytes: u64) -> io::Result<()>;
    /// Writes `data` at `offset`; how many bytes were written.
    async fn write_at(&self, f: &Self::File, offset: u64, data: &[u8]) -> io::Result<usize>;
    /// Writes `len` zeros at `offset`; how many bytes were written.
    async fn write_zeros_at(&self, f: &Self::File, offset: u64, len: usize) -> io::Result<usize>;
    /// Appends up to `len` bytes from `offset` to `out` (fewer at the end of the file); how
    /// many.
    async fn read_at(
        &self,
        f: &Self::File,
        offset: u64,
        len: usize,
        out: &mut Vec<u8>,
    ) -> io::Result<usize>;
    /// Makes every completed write to the file durable, and its size (fdatasync).
    async fn fdatasync(&self, f: &Self::File) -> io::Result<()>;
    /// Closes the file.
    async fn close(&self, f: Self::File) -> io::Result<()>;
}

/// The broker's file system: glommio DMA files (O_DIRECT through io_uring).
#[derive(Clone, Copy, Debug, Default)]
pub struct DmaFs;

impl Fs for DmaFs {
    type File = DmaFile;

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        std::fs::create_dir_all(dir)
    }

    fn read_dir(&self, dir: &Path) -> io::Result<Vec<OsString>> {
        std::fs::read_dir(dir)?
            .map(|e| e.map(|e| e.file_name()))
            .collect()
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    async fn open(&self, path: &Path, mode: Mode) -> io::Result<DmaFile> {
        Ok(match mode {
            Mode::Read => DmaFile::open(path).await?,
            Mode::Write { create, dsync } => {
                OpenOptions::new()
                    .write(true)
                    .create(create)
                    .truncate(create)
                    .custom_flags(if dsync { libc::O_DSYNC } else { 0 })
                    .dma_open(path)
                    .await?
            }
        })
    }

    async fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        Ok(glommio::io::Directory::open(dir).await?.sync().await?)
    }

    async fn file_size(&self, f: &DmaFile) -> io::Result<u64> {
        Ok(f.file_size().await?)
    }

    async fn pre_allocate(&self, f: &DmaFile, bytes: u64) -> io::Result<()> {
        Ok(f.pre_allocate(bytes, true).await?)
    }

    async fn write_at(&self, f: &DmaFile, offset: u64, data: &[u8]) -> io::Result<usize> {
        // The one copy: into memory aligned for O_DIRECT.
        let mut buf = f.alloc_dma_buffer(data.len());
        buf.as_bytes_mut().copy_from_slice(data);
        Ok(f.write_at(buf, offset).await?)
    }

    async fn write_zeros_at(&self, f: &DmaFile, offset: u64, len: usize) -> io::Result<usize> {
        let mut buf = f.alloc_dma_buffer(len);
        buf.as_bytes_mut().fill(0);
        Ok(f.write_at(buf, offset).await?)
    }

    async fn read_at(
        &self,
        f: &DmaFile,
        offset: u64,
        len: usize,
        out: &mut Vec<u8>,
    ) -> io::Result<usize> {
        let r = f.read_at(offset, len).await?;
        out.extend_from_slice(&r);
        Ok(r.len())
    }

    async fn fdatasync(&self, f: &DmaFile) -> io::Result<()> {
        Ok(f.fdatasync().await?)
    }

    async fn close(&self, f: DmaFile) -> io::Result<()> {
        Ok(f.close().await?)
    }
}
