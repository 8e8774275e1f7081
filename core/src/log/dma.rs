//! The log's device on disk: a shard's directory of segment files. It performs the [`Op`]s a
//! [`Log`](super::Log) hands out; it decides nothing the log could decide. It is generic over
//! its file system ([`Fs`]): glommio's DMA (O_DIRECT) files in the broker ([`DmaFs`], the
//! default), an in-memory disk that crashes in the simulation (`log/sim.rs`), so the code
//! below is the code the simulation runs.
//!
//! A segment is `<dir>/<id, 20 digits>.seg`. Creating one reserves `segment_bytes` of disk
//! (`fallocate` keeping the size, so the file's length is what was written) and syncs the
//! directory, so the new file's name is as durable as the records synced into it. Writes are
//! block-aligned (the log pads them) and copied once into a DMA buffer.
//!
//! With `dsync` (the log's `fsync = "always"`), segments are opened `O_DSYNC`: a write
//! completes once it is on stable storage (the kernel issues it with FUA, or flushes), so the
//! log's `Sync` op has nothing left to do and is answered at once (but for the first one in a
//! segment reopened after a restart: see `perform`). One device round trip per batch instead
//! of two: through glommio on this machine a batch's write took ~170 us and its fdatasync
//! ~165 us (submission to completion), an O_DSYNC write ~250 us (the raw syscall: ~100 us; see
//! docs/benchmarks.md, "Durable publishes").

use std::io;
use std::path::{Path, PathBuf};

use super::fs::{DmaFs, Fs, Mode};
use super::Op;

/// Suffix of segment file names.
const SUFFIX: &str = ".seg";
/// Bytes read at a time at recovery.
const READ_CHUNK: usize = 4 << 20;
/// A write that would pass the written part of a segment first extends it with zeros to the
/// next multiple of this: later writes land inside the file, where an O_DSYNC write needs no
/// journal commit of the file's size (the raw syscall here: ~100 us instead of ~180 us for a
/// write that grows the file). Recovery reads zeros after the valid data as nothing.
pub const ZERO_STEP: u64 = 1 << 20;
/// O_DIRECT writes start and end on multiples of the device's logical block: at least this.
const DMA_ALIGN: u64 = 512;
/// The largest logical block O_DIRECT asks writes to align to: zeros past a segment's end
/// start at a multiple of it, whatever the segment's size.
const DMA_ALIGN_MAX: u64 = 4096;

/// Where segment `id` of the directory `dir` is.
fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:020}{SUFFIX}"))
}

/// A shard's segment files (see the module docs).
pub struct Segments<F: Fs = DmaFs> {
    fs: F,
    dir: PathBuf,
    reserve: u64,
    dsync: bool,
    zero_step: u64,
    /// The segment taking writes, open, and how far it is written (zeros included).
    open: Option<(u64, F::File)>,
    zeroed: u64,
    /// Everything in the open segment is durable: it was created here and written O_DSYNC,
    /// or synced since it was opened.
    durable: bool,
}

impl Segments {
    /// The device for the segments in `dir` (created if missing); new segments reserve
    /// `reserve` bytes of disk; `dsync`: every write is durable when it completes.
    pub fn new(dir: impl Into<PathBuf>, reserve: u64, dsync: bool) -> io::Result<Self> {
        Segments::with_fs(DmaFs, dir, reserve, dsync)
    }

    /// `len` bytes of segment `id` from `offset` (fewer at the end of the file): a catch-up
    /// read, on its own file handle (the segment may be the one taking writes).
    pub async fn read_span(dir: &Path, id: u64, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        Segments::read_span_on(&DmaFs, dir, id, offset, len).await
    }
}

impl<F: Fs> Segments<F> {
    /// [`Segments::new`] over the file system `fs`.
    pub fn with_fs(fs: F, dir: impl Into<PathBuf>, reserve: u64, dsync: bool) -> io::Result<Self> {
        let dir = dir.into();
        fs.create_dir_all(&dir)?;
        Ok(Segments {
            fs,
            dir,
            reserve,
            dsync,
            zero_step: ZERO_STEP,
            open: None,
            zeroed: 0,
            durable: false,
        })
    }

    /// Extends segments with zeros `bytes` at a time (see [`ZERO_STEP`], the default): the
    /// simulation uses small steps to keep its disk small. Panics unless `bytes` is a
    /// positive multiple of 512 (a programming error: the zeros are written O_DIRECT).
    pub fn zero_step(mut self, bytes: u64) -> Self {
        assert!(
            bytes > 0 && bytes.is_multiple_of(DMA_ALIGN),
            "a zero step must be a positive multiple of {DMA_ALIGN}"
        );
        self.zero_step = bytes;
        self
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, id: u64) -> PathBuf {
        segment_path(&self.dir, id)
    }

    /// The segments present, oldest first. Other files are left alone; a file that looks like
    /// a segment but does not parse is an error (a person should look at it).
    pub fn list(&self) -> io::Result<Vec<u64>> {
        let mut ids = Vec::new();
        for name in self.fs.read_dir(&self.dir)? {
            let Some(name) = name.to_str() else { continue };
            let Some(stem) = name.strip_suffix(SUFFIX) else {
                continue;
            };
            let id = stem.parse::<u64>().map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{}: not a segment name", self.dir.join(name).display()),
                )
            })?;
            ids.push(id);
        }
        ids.sort_unstable();
        Ok(ids)
    }

    /// Checks that the directory takes O_DIRECT files (tmpfs does not): creates, writes one
    /// block to, and removes a probe file.
    pub async fn probe(&self) -> io::Result<()> {
        let path = self.dir.join(".probe");
        let mode = Mode::Write {
            create: true,
            dsync: self.dsync,
        };
        let f = self.fs.open(&path, mode).await?;
        let written = self.fs.write_zeros_at(&f, 0, 4096).await;
        let _ = self.fs.close(f).await;
        let _ = self.fs.remove_file(&path);
        written.map(|_| ())
    }

    /// A segment's bytes, whole.
    pub async fn read(&self, id: u64) -> io::Result<Vec<u8>> {
        let f = self.fs.open(&self.path(id), Mode::Read).await?;
        let read = self.read_all(&f).await;
        let closed = self.fs.close(f).await;
        let out = read?;
        closed?;
        Ok(out)
    }

    async fn read_all(&self, f: &F::File) -> io::Result<Vec<u8>> {
        let len = self.fs.file_size(f).await?;
        let mut out = Vec::with_capacity(len as usize);
        let mut at = 0u64;
        while at < len {
            let want = READ_CHUNK.min((len - at) as usize);
            let n = self.fs.read_at(f, at, want, &mut out).await?;
            if n == 0 {
                break; // the file shrank under us: what was read is what there is
            }
            at += n as u64;
        }
        Ok(out)
    }

    /// [`Segments::read_span`] over the file system `fs`.
    pub async fn read_span_on(
        fs: &F,
        dir: &Path,
        id: u64,
        offset: u64,
        len: usize,
    ) -> io::Result<Vec<u8>> {
        let f = fs.open(&segment_path(dir, id), Mode::Read).await?;
        let mut out = Vec::with_capacity(len);
        let r = fs.read_at(&f, offset, len, &mut out).await;
        let _ = fs.close(f).await;
        r.map(|_| out)
    }

    /// Performs one op of the log.
    pub async fn perform(&mut self, op: &Op) -> io::Result<()> {
        match op {
            Op::Create { segment } => {
                self.close().await?;
                let mode = Mode::Write {
                    create: true,
                    dsync: self.dsync,
                };
                let f = self.fs.open(&self.path(*segment), mode).await?;
                // Reserving room is an optimisation (fewer extent updates per sync); a
                // filesystem without fallocate still works.
                let _ = self.fs.pre_allocate(&f, self.reserve).await;
                self.fs.sync_dir(&self.dir).await?;
                self.open = Some((*segment, f));
                self.zeroed = 0;
                self.durable = true;
                Ok(())
            }
            Op::Write {
                segment,
                offset,
                data,
            } => {
                let end = offset + data.len() as u64;
                // Open the segment first: opening it is what reads how far it is written.
                // Compared before that, a segment reopened after a restart looked empty, and
                // its recovered records were overwritten with zeros.
                self.file(*segment).await?;
                if self.dsync && end > self.zeroed {
                    let zeroed = self.zeroed;
                    let to = end.next_multiple_of(self.zero_step);
                    let len = (to - zeroed) as usize;
                    let (fs, f) = self.file(*segment).await?;
                    let n = fs.write_zeros_at(f, zeroed, len).await?;
                    if n != len {
                        return Err(io::Error::new(
                            io::ErrorKind::WriteZero,
                            format!("short write of zeros: {n} of {len} bytes"),
                        ));
                    }
                    self.zeroed = to;
                }
                let (fs, f) = self.file(*segment).await?;
                let n = fs.write_at(f, *offset, data).await?;
                if n != data.len() {
                    return Err(io::Error::new(
                        io::ErrorKind::WriteZero,
                        format!("short write: {n} of {} bytes", data.len()),
                    ));
                }
                Ok(())
            }
            // O_DSYNC: the writes before it were durable when they completed. Not so the bytes
            // of a segment reopened after a restart: a write that failed, or a run with
            // `fsync = "never"`, may have left them in the disk's volatile cache, where
            // recovery read them; so its first sync (recovery's own op, before any append) is
            // a real one.
            Op::Sync { segment }
                if self.dsync
                    && self.durable
                    && self.open.as_ref().is_some_and(|(id, _)| id == segment) =>
            {
                Ok(())
            }
            Op::Sync { segment } => {
                let (fs, f) = self.file(*segment).await?;
                fs.fdatasync(f).await?;
                self.durable = true;
                Ok(())
            }
        }
    }

    /// The open file of `segment` (and the file system, to use it with), opened for writing
    /// if it is not the one open.
    async fn file(&mut self, segment: u64) -> io::Result<(&F, &F::File)> {
        if self.open.as_ref().is_none_or(|(id, _)| *id != segment) {
            self.close().await?;
            let mode = Mode::Write {
                create: false,
                dsync: self.dsync,
            };
            let f = self.fs.open(&self.path(segment), mode).await?;
            // Zeros start where the file ends, rounded up to a block: a file cut at any byte
            // (by hand, or a filesystem's repair) would have the zero extension start there,
            // and O_DIRECT refuses an unaligned write. The bytes skipped are past the end:
            // they read as zeros once the file grows over them.
            let size = self.fs.file_size(&f).await?;
            self.zeroed = size.next_multiple_of(DMA_ALIGN_MAX);
            self.durable = false;
            self.open = Some((segment, f));
        }
        match &self.open {
            Some((_, f)) => Ok((&self.fs, f)),
            None => Err(io::Error::other("segment not open")),
        }
    }

    /// Deletes a segment (retention).
    pub fn remove(&mut self, id: u64) -> io::Result<()> {
        if self.open.as_ref().is_some_and(|(s, _)| *s == id) {
            // Never the segment taking appends (the log does not name it); dropping the
            // handle closes it.
            self.open = None;
        }
        self.fs.remove_file(&self.path(id))
    }

    /// Closes the open segment.
    pub async fn close(&mut self) -> io::Result<()> {
        if let Some((_, f)) = self.open.take() {
            self.fs.close(f).await?;
        }
        Ok(())
    }
}
