//! The log's device on disk: a shard's directory of segment files, written through glommio's
//! DMA (O_DIRECT) files. It performs the [`Op`]s a [`Log`](super::Log) hands out; it decides
//! nothing itself.
//!
//! A segment is `<dir>/<id, 20 digits>.seg`. Creating one reserves `segment_bytes` of disk
//! (`fallocate` keeping the size, so the file's length is what was written) and syncs the
//! directory, so the new file's name is as durable as the records synced into it. Writes are
//! block-aligned (the log pads them) and copied once into a DMA buffer.
//!
//! With `dsync` (the log's `fsync = "always"`), segments are opened `O_DSYNC`: a write
//! completes once it is on stable storage (the kernel issues it with FUA, or flushes), so the
//! log's `Sync` op has nothing left to do and is answered at once. One device round trip per
//! batch instead of two: through glommio on this machine a batch's write took ~170 us and its
//! fdatasync ~165 us (submission to completion), an O_DSYNC write ~250 us (the raw syscall:
//! ~100 us; see docs/benchmarks.md, "Durable publishes").

use std::io;
use std::path::{Path, PathBuf};

use glommio::io::{DmaFile, OpenOptions};

use super::Op;

/// Suffix of segment file names.
const SUFFIX: &str = ".seg";
/// Bytes read at a time at recovery.
const READ_CHUNK: usize = 4 << 20;
/// A write that would pass the written part of a segment first extends it with zeros to the
/// next multiple of this: later writes land inside the file, where an O_DSYNC write needs no
/// journal commit of the file's size (the raw syscall here: ~100 us instead of ~180 us for a
/// write that grows the file). Recovery reads zeros after the valid data as nothing.
const ZERO_STEP: u64 = 1 << 20;

/// Where segment `id` of the directory `dir` is.
fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:020}{SUFFIX}"))
}

/// A shard's segment files (see the module docs).
pub struct Segments {
    dir: PathBuf,
    reserve: u64,
    dsync: bool,
    /// The segment taking writes, open, and how far it is written (zeros included).
    open: Option<(u64, DmaFile)>,
    zeroed: u64,
}

impl Segments {
    /// The device for the segments in `dir` (created if missing); new segments reserve
    /// `reserve` bytes of disk; `dsync`: every write is durable when it completes.
    pub fn new(dir: impl Into<PathBuf>, reserve: u64, dsync: bool) -> io::Result<Self> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir)?;
        Ok(Segments {
            dir,
            reserve,
            dsync,
            open: None,
            zeroed: 0,
        })
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
        for e in std::fs::read_dir(&self.dir)? {
            let name = e?.file_name();
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
        let f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .custom_flags(self.flags())
            .dma_open(&path)
            .await?;
        let mut buf = f.alloc_dma_buffer(4096);
        buf.as_bytes_mut().fill(0);
        let written = f.write_at(buf, 0).await;
        let _ = f.close().await;
        let _ = std::fs::remove_file(&path);
        written.map(|_| ()).map_err(Into::into)
    }

    /// A segment's bytes, whole.
    pub async fn read(&self, id: u64) -> io::Result<Vec<u8>> {
        let f = DmaFile::open(self.path(id)).await?;
        let len = f.file_size().await?;
        let mut out = Vec::with_capacity(len as usize);
        let mut at = 0u64;
        while at < len {
            let want = READ_CHUNK.min((len - at) as usize);
            let r = f.read_at(at, want).await?;
            if r.is_empty() {
                break; // the file shrank under us: what was read is what there is
            }
            out.extend_from_slice(&r);
            at += r.len() as u64;
        }
        f.close().await?;
        Ok(out)
    }

    /// `len` bytes of segment `id` from `offset` (fewer at the end of the file): a catch-up
    /// read, on its own file handle (the segment may be the one taking writes).
    pub async fn read_span(dir: &Path, id: u64, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let f = DmaFile::open(segment_path(dir, id)).await?;
        let r = f.read_at(offset, len).await;
        let _ = f.close().await;
        Ok(r?.to_vec())
    }

    /// Performs one op of the log.
    pub async fn perform(&mut self, op: &Op) -> io::Result<()> {
        match op {
            Op::Create { segment } => {
                self.close().await?;
                let f = OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .custom_flags(self.flags())
                    .dma_open(self.path(*segment))
                    .await?;
                // Reserving room is an optimisation (fewer extent updates per sync); a
                // filesystem without fallocate still works.
                let _ = f.pre_allocate(self.reserve, true).await;
                glommio::io::Directory::open(&self.dir)
                    .await?
                    .sync()
                    .await?;
                self.open = Some((*segment, f));
                self.zeroed = 0;
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
                    let to = end.next_multiple_of(ZERO_STEP);
                    let f = self.file(*segment).await?;
                    let len = (to - zeroed) as usize;
                    let mut zeros = f.alloc_dma_buffer(len);
                    zeros.as_bytes_mut().fill(0);
                    let n = f.write_at(zeros, zeroed).await?;
                    if n != len {
                        return Err(io::Error::new(
                            io::ErrorKind::WriteZero,
                            format!("short write of zeros: {n} of {len} bytes"),
                        ));
                    }
                    self.zeroed = to;
                }
                let f = self.file(*segment).await?;
                let mut buf = f.alloc_dma_buffer(data.len());
                buf.as_bytes_mut().copy_from_slice(data);
                let n = f.write_at(buf, *offset).await?;
                if n != data.len() {
                    return Err(io::Error::new(
                        io::ErrorKind::WriteZero,
                        format!("short write: {n} of {} bytes", data.len()),
                    ));
                }
                Ok(())
            }
            // O_DSYNC: the writes before it were durable when they completed.
            Op::Sync { .. } if self.dsync => Ok(()),
            Op::Sync { segment } => Ok(self.file(*segment).await?.fdatasync().await?),
        }
    }

    /// The open file of `segment`, opened for writing if it is not the one open.
    async fn file(&mut self, segment: u64) -> io::Result<&DmaFile> {
        if self.open.as_ref().is_none_or(|(id, _)| *id != segment) {
            self.close().await?;
            let f = OpenOptions::new()
                .write(true)
                .custom_flags(self.flags())
                .dma_open(self.path(segment))
                .await?;
            // From the next aligned offset: a file whose length is not a multiple of the
            // alignment (cut short by hand, or by a filesystem repair) must not turn the
            // zero-extension into an unaligned O_DIRECT write, which fails the log. The bytes
            // between the length and that offset are past the end of the file, and the
            // write that needs them covers them.
            self.zeroed = f.file_size().await?.next_multiple_of(f.alignment().max(1));
            self.open = Some((segment, f));
        }
        match &self.open {
            Some((_, f)) => Ok(f),
            None => Err(io::Error::other("segment not open")),
        }
    }

    fn flags(&self) -> i32 {
        if self.dsync {
            libc::O_DSYNC
        } else {
            0
        }
    }

    /// Deletes a segment (retention).
    pub fn remove(&mut self, id: u64) -> io::Result<()> {
        if self.open.as_ref().is_some_and(|(s, _)| *s == id) {
            // Never the segment taking appends (the log does not name it); dropping the
            // handle closes it.
            self.open = None;
        }
        std::fs::remove_file(self.path(id))
    }

    /// Closes the open segment.
    pub async fn close(&mut self) -> io::Result<()> {
        if let Some((_, f)) = self.open.take() {
            f.close().await?;
        }
        Ok(())
    }
}
