//! One journal segment file, and the records given to it that are not on the disk yet.
//!
//! The committer adds each group's record to the segment's *pending* bytes, in memory. Whoever
//! finishes the group then calls [`Segment::write_through`] with the record's end, which writes
//! every pending byte up to there and beyond in one write, and returns once they are durable;
//! a later record's write makes every earlier one durable, so the groups queued behind one
//! write need none of their own.
//!
//! Two ways to write, chosen per file:
//! - *direct*: a segment zero-filled to its full size beforehand, on a filesystem that takes
//!   `O_DIRECT`. The file is opened with `O_DIRECT | O_DSYNC`, so one `pwrite` of whole
//!   [`BLOCK`]s is durable when it returns: no page cache, no separate fdatasync, and on this
//!   machine's disk a 10 KB record is durable in ~130 µs against ~210 µs for pwrite and
//!   fdatasync (BENCHMARKS.md). A write starts at the block where the durable bytes end and
//!   rewrites that block whole: its first bytes again as they are, then the new records, then
//!   zeros to the block's end.
//! - *buffered*: a file that grows as it is written (not zero-filled), or one where `O_DIRECT`
//!   is refused, at open or by a first write of zeros: `pwrite` of the pending bytes, then
//!   fdatasync.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::sync::{Mutex, MutexGuard, PoisonError};

use rustix::fs::OFlags;

/// Direct writes start and end on multiples of this, from memory aligned to it: the device's
/// logical block size is 512 or 4096 bytes, and 4096 serves both.
pub(crate) const BLOCK: usize = 4096;
/// A write buffer larger than this (a huge commit) is not kept for the next write.
const KEEP_BUFFER_BYTES: usize = 16 << 20;

pub(crate) struct Segment {
    file: File,
    direct: bool,
    pending: Mutex<Pending>,
    /// Held for the whole of a write, so that writes reach the file one at a time, in order.
    writing: Mutex<()>,
}

struct Pending {
    /// The file's bytes from `start` on. Direct: `start` is the block where the durable bytes
    /// end, and the bytes before `durable` are kept to write that block whole again.
    bytes: Aligned,
    start: u64,
    /// Every byte before this offset is durable.
    durable: u64,
    /// The buffer of the previous write, kept to take turns with `bytes`.
    spare: Option<Aligned>,
    /// Set by a failed write: whether its bytes reached the disk is unknown.
    failed: Option<String>,
}

impl Segment {
    /// A segment whose records start at offset 0. `direct`: `file` was opened with
    /// `O_DIRECT | O_DSYNC`.
    pub(crate) fn new(file: File, direct: bool) -> Segment {
        Segment {
            file,
            direct,
            pending: Mutex::new(Pending {
                bytes: Aligned::with_capacity(BLOCK),
                start: 0,
                durable: 0,
                spare: None,
                failed: None,
            }),
            writing: Mutex::new(()),
        }
    }

    /// Opens an existing whole segment file to write: direct if `direct` and the filesystem
    /// takes `O_DIRECT` (tmpfs before Linux 6.6, for one, refuses it), buffered otherwise.
    /// The file must be zero-filled or hold only records nobody needs any more: its first
    /// block is written with zeros to try a direct write.
    pub(crate) fn open(path: &Path, direct: bool) -> std::io::Result<Segment> {
        Segment::open_trying(path, direct, |file, zeros| file.write_all_at(zeros, 0))
    }

    /// [`Segment::open`], with `first_write` writing the zeros of the first block to a file
    /// opened direct (tests stand in a filesystem that refuses it).
    fn open_trying(
        path: &Path,
        direct: bool,
        first_write: impl FnOnce(&File, &[u8]) -> std::io::Result<()>,
    ) -> std::io::Result<Segment> {
        if direct {
            let opened = OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(direct_flags())
                .open(path);
            match opened {
                Ok(file) => {
                    // Some filesystems take the flag at open and refuse the writes (or want
                    // larger blocks than ours): one block, written as every record will be,
                    // settles it before a record depends on it.
                    match first_write(&file, Aligned::zero_block().as_slice()) {
                        Ok(()) => return Ok(Segment::new(file, true)),
                        Err(e) if refused(&e) => {}
                        Err(e) => return Err(e),
                    }
                }
                Err(e) if refused(&e) => {}
                Err(e) => return Err(e),
            }
        }
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        Ok(Segment::new(file, false))
    }

    pub(crate) fn is_direct(&self) -> bool {
        self.direct
    }

    /// Adds `parts`, in order, after every byte added before; returns the offset where they end.
    pub(crate) fn add(&self, parts: &[&[u8]]) -> u64 {
        let mut pending = lock(&self.pending);
        for part in parts {
            pending.bytes.extend(part);
        }
        pending.start + pending.bytes.len() as u64
    }

    /// Makes every byte added before offset `end` durable (and whatever else is pending).
    /// Returns whether it wrote: `false` when an earlier call's write covered `end` already.
    pub(crate) fn write_through(&self, end: u64) -> Result<bool, String> {
        let _writing = lock(&self.writing);
        let (mut bytes, start, durable) = {
            let mut pending = lock(&self.pending);
            if let Some(failure) = &pending.failed {
                return Err(failure.clone());
            }
            if pending.durable >= end {
                return Ok(false);
            }
            let taken_end = pending.start + pending.bytes.len() as u64;
            // What the next write starts with: the partly written block, written whole again.
            let keep_from = if self.direct {
                taken_end - taken_end % BLOCK as u64
            } else {
                taken_end
            };
            let mut next = pending
                .spare
                .take()
                .unwrap_or_else(|| Aligned::with_capacity(pending.bytes.capacity()));
            next.clear();
            next.extend(&pending.bytes.as_slice()[(keep_from - pending.start) as usize..]);
            let taken = std::mem::replace(&mut pending.bytes, next);
            let started = std::mem::replace(&mut pending.start, keep_from);
            (taken, started, pending.durable)
        };
        let written = if self.direct {
            self.file.write_all_at(bytes.padded(), start)
        } else {
            let from = (durable - start) as usize;
            self.file
                .write_all_at(&bytes.as_slice()[from..], durable)
                .and_then(|()| self.file.sync_data())
        };
        let mut pending = lock(&self.pending);
        match written {
            Ok(()) => {
                pending.durable = start + bytes.len() as u64;
                if bytes.capacity() <= KEEP_BUFFER_BYTES {
                    pending.spare = Some(bytes);
                }
                Ok(true)
            }
            Err(e) => {
                let failure = format!("writing the journal: {e}");
                pending.failed = Some(failure.clone());
                Err(failure)
            }
        }
    }
}

/// Bytes in memory aligned to [`BLOCK`], as `O_DIRECT` needs, with room to pad them to a
/// whole number of blocks.
struct Aligned {
    raw: Vec<u8>,
    /// Where the aligned bytes start in `raw`.
    at: usize,
    len: usize,
}

impl Aligned {
    fn with_capacity(capacity: usize) -> Aligned {
        let capacity = capacity.max(BLOCK).next_multiple_of(BLOCK);
        let raw = vec![0u8; capacity + BLOCK];
        // The address's distance to the next multiple of BLOCK (an address, not a pointer
        // dereference: no unsafe code).
        let at = (BLOCK - raw.as_ptr() as usize % BLOCK) % BLOCK;
        Aligned { raw, at, len: 0 }
    }

    /// One block of zeros, what a direct write of a segment's first block needs.
    fn zero_block() -> Aligned {
        let mut zeros = Aligned::with_capacity(BLOCK);
        zeros.extend(&[0u8; BLOCK]);
        zeros
    }

    /// A multiple of [`BLOCK`].
    fn capacity(&self) -> usize {
        self.raw.len() - BLOCK
    }

    fn len(&self) -> usize {
        self.len
    }

    fn clear(&mut self) {
        self.len = 0;
    }

    fn as_slice(&self) -> &[u8] {
        &self.raw[self.at..self.at + self.len]
    }

    fn extend(&mut self, bytes: &[u8]) {
        let needed = self.len + bytes.len();
        if needed > self.capacity() {
            let mut grown = Aligned::with_capacity(needed.max(2 * self.capacity()));
            grown.extend(self.as_slice());
            *self = grown;
        }
        self.raw[self.at + self.len..self.at + needed].copy_from_slice(bytes);
        self.len = needed;
    }

    /// The bytes and zeros after them to the end of their last block.
    fn padded(&mut self) -> &[u8] {
        let end = self.len.next_multiple_of(BLOCK);
        self.raw[self.at + self.len..self.at + end].fill(0);
        &self.raw[self.at..self.at + end]
    }
}

/// How Linux refuses `O_DIRECT` where a filesystem does not take it, or misaligned writes.
fn refused(e: &std::io::Error) -> bool {
    e.raw_os_error() == Some(rustix::io::Errno::INVAL.raw_os_error())
}

fn direct_flags() -> i32 {
    // The flags' values differ between architectures; rustix knows them.
    (OFlags::DIRECT | OFlags::DSYNC).bits() as i32
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    /// Whether `dir`'s filesystem takes direct writes, found out without [`Segment`]: most
    /// disks' filesystems do (and tmpfs since Linux 6.6); ramfs refuses `O_DIRECT` at open.
    pub(crate) fn takes_direct_writes(dir: &Path) -> bool {
        let path = dir.join("direct-probe");
        std::fs::write(&path, vec![0u8; BLOCK]).unwrap();
        let taken = OpenOptions::new()
            .write(true)
            .custom_flags(direct_flags())
            .open(&path)
            .and_then(|file| file.write_all_at(Aligned::zero_block().as_slice(), 0));
        std::fs::remove_file(&path).unwrap();
        match taken {
            Ok(()) => true,
            Err(e) if refused(&e) => false,
            Err(e) => panic!("probing {}: {e}", dir.display()),
        }
    }

    /// A zero-filled file of `blocks` blocks, opened direct if asked and the filesystem takes it.
    fn segment(dir: &Path, blocks: usize, direct: bool) -> Segment {
        let path = dir.join("segment");
        std::fs::write(&path, vec![0u8; blocks * BLOCK]).unwrap();
        let segment = Segment::open(&path, direct).unwrap();
        assert_eq!(segment.is_direct(), direct && takes_direct_writes(dir));
        segment
    }

    fn file(dir: &Path) -> Vec<u8> {
        std::fs::read(dir.join("segment")).unwrap()
    }

    #[test]
    fn aligned_buffers_start_on_a_block_and_keep_their_bytes_when_they_grow() {
        let mut bytes = Aligned::with_capacity(10);
        assert_eq!(bytes.capacity(), BLOCK);
        let data: Vec<u8> = (0..3 * BLOCK + 7).map(|i| (i % 251) as u8).collect();
        bytes.extend(&data[..100]);
        bytes.extend(&data[100..]);
        assert_eq!(bytes.as_slice(), &data[..]);
        assert_eq!(bytes.as_slice().as_ptr() as usize % BLOCK, 0);
        let padded = bytes.padded();
        assert_eq!(padded.len(), 4 * BLOCK);
        assert!(padded[data.len()..].iter().all(|b| *b == 0));
    }

    #[test]
    fn writes_reach_the_file_in_order_and_a_later_write_covers_earlier_records() {
        for direct in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let segment = segment(dir.path(), 4, direct);
            // Records that share blocks and cross block boundaries.
            let records: Vec<Vec<u8>> = (0..40u8).map(|n| vec![n + 1; 300]).collect();
            let mut ends = Vec::new();
            for (n, record) in records.iter().enumerate() {
                ends.push(segment.add(&[record]));
                if n % 7 == 3 {
                    assert!(segment.write_through(ends[n]).unwrap(), "{direct}");
                }
            }
            // Not written yet: only in memory.
            let last_written = 39 * 300;
            assert!(
                file(dir.path())[last_written..12_000]
                    .iter()
                    .all(|b| *b == 0)
            );

            assert!(segment.write_through(ends[39]).unwrap());
            assert!(
                !segment.write_through(ends[36]).unwrap(),
                "an earlier record is durable already"
            );
            let on_disk = file(dir.path());
            assert_eq!(on_disk[..12_000], records.concat()[..], "{direct}");
            assert!(on_disk[12_000..].iter().all(|b| *b == 0));
        }
    }

    #[test]
    fn opening_direct_tries_a_direct_write_of_the_first_block() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("segment");
        // A reused segment: stale bytes of generations nobody needs.
        std::fs::write(&path, vec![7u8; 2 * BLOCK]).unwrap();
        let segment = Segment::open(&path, true).unwrap();
        let on_disk = std::fs::read(&path).unwrap();
        if takes_direct_writes(dir.path()) {
            assert!(segment.is_direct());
            assert!(on_disk[..BLOCK].iter().all(|b| *b == 0));
            assert!(
                on_disk[BLOCK..].iter().all(|b| *b == 7),
                "only the first block"
            );
        } else {
            // Refused at open: buffered, and nothing written.
            assert!(!segment.is_direct());
            assert!(on_disk.iter().all(|b| *b == 7));
        }
        // Buffered: nothing written at open.
        std::fs::write(&path, vec![7u8; 2 * BLOCK]).unwrap();
        assert!(!Segment::open(&path, false).unwrap().is_direct());
        assert!(std::fs::read(&path).unwrap().iter().all(|b| *b == 7));
    }

    #[test]
    fn a_filesystem_refusing_the_first_direct_write_gets_buffered_writes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("segment");
        std::fs::write(&path, vec![7u8; 2 * BLOCK]).unwrap();
        // What Linux answers for a direct write a filesystem cannot do.
        let refusing = |_: &File, _: &[u8]| Err(std::io::Error::from_raw_os_error(22));
        let segment = Segment::open_trying(&path, true, refusing).unwrap();
        assert!(!segment.is_direct());
        let end = segment.add(&[b"first", b" record"]);
        assert!(segment.write_through(end).unwrap());
        let on_disk = std::fs::read(&path).unwrap();
        assert_eq!(&on_disk[..12], b"first record");
        assert!(
            on_disk[12..].iter().all(|b| *b == 7),
            "buffered writes no padding"
        );

        // Any other failure of that write is the caller's to see, not a reason to go buffered
        // (where the filesystem refuses O_DIRECT at open already, there is no such write).
        let failing = |_: &File, _: &[u8]| Err(std::io::Error::from_raw_os_error(5));
        let opened = Segment::open_trying(&path, true, failing);
        if takes_direct_writes(dir.path()) {
            assert_eq!(opened.err().unwrap().raw_os_error(), Some(5));
        } else {
            assert!(!opened.unwrap().is_direct());
        }
    }

    #[test]
    fn after_a_failed_write_every_write_fails() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("segment");
        std::fs::write(&path, vec![0u8; BLOCK]).unwrap();
        // Read-only: the write is refused.
        let segment = Segment::new(File::open(&path).unwrap(), false);
        let end = segment.add(&[b"refused"]);
        let failure = segment.write_through(end).unwrap_err();
        assert!(failure.starts_with("writing the journal"), "{failure}");
        assert_eq!(segment.write_through(end).unwrap_err(), failure);
        let later = segment.add(&[b"later"]);
        assert_eq!(segment.write_through(later).unwrap_err(), failure);
    }
}
