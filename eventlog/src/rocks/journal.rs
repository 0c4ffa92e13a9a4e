//! The log's write-ahead journal. Every group's RocksDB batch is written here and synced before
//! RocksDB applies it (with RocksDB's own WAL off), and after a crash the journal replays what the
//! table files do not hold yet.
//!
//! Why not RocksDB's WAL: its files grow, so each fdatasync also journals the file's new size (two
//! device writes per sync instead of one; ~4,900 syncs/s against the disk's ~7,400 here, ~100
//! against ~145 on a disk throttled to 300 writes/s). RocksDB can recycle WAL files to avoid that,
//! but a recycled file keeps its old bytes, and a deleted tenant's events must not stay on disk.
//! The journal writes into segment files that were filled with zeros beforehand, so a sync
//! overwrites blocks that already exist, and it zeroes every segment it retires. A record goes
//! to its segment's pending bytes in memory; the write that makes it durable (with
//! `O_DIRECT | O_DSYNC`, one syscall) is [`Segment::write_through`]'s, in `segment.rs`.
//!
//! On disk: `journal/segment-N`. A segment holds the records of one *generation* (a counter that
//! only grows; a file can hold different generations over its life). A record is
//!
//! ```text
//! length u32 | generation u64 | index u64 | previous u64 | checksum [8] | payload (length bytes)
//! ```
//!
//! little-endian, where `index` counts records within the generation from 0, `previous` (in a
//! generation's first record) is how many records the generation before holds, and `checksum` is
//! the CRC-32 of the 28 header bytes before it and the payload, then 4 zero bytes. The length's
//! top bit marks that checksum; a record without it (written by an earlier version, found when
//! a crash left it to replay) carries the first 8 bytes of the SHA-256 instead, and is read as
//! well. A checksum only has to catch torn and stale records: the events inside carry their own
//! SHA-256 hash chain, which `verify` checks. Reading a
//! segment stops at the first record that is zeros, torn, fails its checksum, or belongs to
//! another generation (a reused segment's stale bytes): a crash can only tear records nobody was
//! told are durable (the newest few: groups are answered in order, each once its record is
//! written through), and any intact record after a torn one was never answered either.
//! `previous` makes a record lost from the middle of an older generation an error instead of
//! a silent truncation.
//!
//! Retirement: when the active segment is full, the journal moves to a new generation in a spare
//! segment and hands the older file to the maintenance thread ([`Chore::Retire`]), which
//! flushes RocksDB's memtables, records the *checkpoint* (the oldest generation still needed)
//! in the `meta` family and keeps up to [`MAX_SPARES`] files for reuse. Recovery replays, in
//! order, every record of the generations from the checkpoint on. Replaying a batch whose
//! writes RocksDB already holds changes nothing: batches are puts and deletes (no merges),
//! replayed in their original order.
//!
//! Erasure: a reused spare still holds old generations past what is rewritten (harmless to
//! recovery, which stops at a record of another generation), so a deletion must not leave its
//! data there. A deletion makes the journal move to a *clean* (all-zero) spare or a new file,
//! and sends the segment it left and every stale spare to be zeroed. The pool counts
//! deletions; a retired file is zeroed before it becomes a spare if a deletion came after it
//! started to be written, so that no file the committer can pick up holds deleted bytes. Zeroing
//! only then, not at every retirement, halves the bytes the journal writes (~10% of throughput
//! under sustained batches). A clean close and every open zero all the journal's files too.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

use super::segment::{BLOCK, Segment};
use crate::error::{Error, Location, Result};

/// Bytes before each record's payload.
const HEADER: usize = 36;
/// Set in a record's length field: its checksum is a CRC-32 (see the module's doc).
const CRC_RECORD: u32 = 1 << 31;
/// Segments kept for reuse; retired files beyond these are deleted.
pub(crate) const MAX_SPARES: usize = 2;
const FILE_PREFIX: &str = "segment-";
/// Once a segment that grows as it is written (not prefilled) holds this fraction of a
/// segment, a prefilled spare is prepared: a log that barely writes never pays for one.
const PREPARE_SPARE_AFTER: u64 = 64;
/// Zeroing works in chunks of this size.
const CHUNK: usize = 1 << 20;

/// Segment files ready to be written, and how many deletions have asked the journal to zero
/// its copies of their data; shared with the maintenance thread.
#[derive(Default, Debug)]
pub(crate) struct Pool {
    spares: Vec<Spare>,
    erasures: u64,
}

/// A whole-segment file ready to be written.
#[derive(Debug)]
struct Spare {
    path: PathBuf,
    /// All zeros; otherwise it holds old generations.
    clean: bool,
}

pub(crate) type Spares = Arc<Mutex<Pool>>;

/// Work for the maintenance thread.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Chore {
    /// Create this file zero-filled to the segment size, and add it to the spares.
    Prepare(PathBuf),
    /// Once RocksDB's table files hold every generation below `below`, record `below` as the
    /// checkpoint, then give `files` (which hold only generations below it) back to the pool.
    Retire { below: u64, files: Vec<Retired> },
}

/// A segment file on its way back to the pool.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Retired {
    pub(crate) path: PathBuf,
    /// Zero it first: it may hold a deleted stream's data.
    pub(crate) erase: bool,
    /// The pool's deletion count when the file started to be written: if a deletion came
    /// since, it is zeroed too.
    pub(crate) erasures: u64,
}

pub(crate) struct Journal {
    dir: PathBuf,
    segment_bytes: u64,
    active: Active,
    spares: Spares,
    /// Number for the next new file's name.
    next_file: u64,
    spare_requested: bool,
    /// Write zero-filled segments with `O_DIRECT | O_DSYNC` (see [`Segment`]); cleared if the
    /// filesystem refuses it.
    direct: bool,
    /// Set by a failed write: whether the record reached the disk is unknown, so nothing more
    /// is written until the log is reopened and recovery has settled it.
    failed: Option<String>,
}

/// A record given to its segment but maybe not on the disk yet.
pub(crate) struct Unsynced {
    segment: Arc<Segment>,
    /// Where the record ends in its segment.
    end: u64,
}

impl Unsynced {
    /// Makes this record durable, and every record given to the same segment before it.
    /// Returns whether that took a write (`false`: a later record's write covered it).
    pub(crate) fn sync(&self) -> Result<bool, String> {
        self.segment.write_through(self.end)
    }
}

/// The segment being written.
struct Active {
    path: PathBuf,
    /// Shared with the records written to it until they are synced (see [`Unsynced`]).
    segment: Arc<Segment>,
    generation: u64,
    records: u64,
    offset: u64,
    /// Records in the generation before this one, written into this one's first record.
    previous: u64,
    /// Zero-filled to the segment size beforehand: writes need no metadata to be durable.
    prefilled: bool,
    /// Held nothing but zeros before this generation: no stale bytes after the records.
    clean: bool,
    /// The pool's deletion count when it became active.
    erasures: u64,
}

impl Active {
    /// A new file just created: it grows as it is written, and holds nothing stale.
    fn new_file(path: PathBuf, segment: Segment, generation: u64, previous: u64) -> Self {
        Active {
            path,
            segment: Arc::new(segment),
            generation,
            records: 0,
            offset: 0,
            previous,
            prefilled: false,
            clean: true,
            erasures: 0,
        }
    }
}

impl Journal {
    /// Opens the journal in `dir` (creating it), passes every record of the generations from
    /// `checkpoint` on to `apply` in order, and starts a new generation in a new file. Returns
    /// the chore that retires the replayed files once RocksDB holds them.
    pub(crate) fn open(
        dir: &Path,
        segment_bytes: u64,
        direct: bool,
        checkpoint: u64,
        spares: Spares,
        mut apply: impl FnMut(&[u8]) -> Result<()>,
    ) -> Result<(Journal, Option<Chore>)> {
        if !dir.exists() {
            std::fs::create_dir_all(dir).map_err(|e| storage("creating the journal", e))?;
            if let Some(parent) = dir.parent() {
                sync_dir(parent).map_err(|e| storage("creating the journal", e))?;
            }
        }
        let mut live = Vec::new();
        let mut idle = Vec::new();
        let mut next_file = 0;
        let entries = std::fs::read_dir(dir).map_err(|e| storage("listing the journal", e))?;
        for entry in entries {
            let path = entry.map_err(|e| storage("listing the journal", e))?.path();
            let Some(number) = file_number(&path) else {
                continue;
            };
            next_file = next_file.max(number + 1);
            match first_generation(&path)? {
                Some(generation) if generation >= checkpoint => live.push((generation, path)),
                _ => idle.push(path),
            }
        }
        live.sort();

        let mut previous: Option<(u64, u64, &Path)> = None; // (generation, records, file)
        for (i, (generation, path)) in live.iter().enumerate() {
            let expected = checkpoint + i as u64;
            if *generation != expected {
                return Err(corrupt(
                    path,
                    format!(
                        "the journal needs generation {expected} next, but this segment holds \
                         {generation}: a segment is missing"
                    ),
                ));
            }
            let records = scan(path, *generation, |index, declared, payload| {
                if index == 0
                    && let Some((before, held, file)) = previous
                    && declared != held
                {
                    return Err(corrupt(
                        file,
                        format!(
                            "{held} intact records of generation {before} could be read, but \
                             generation {generation} (in {}) says it holds {declared}: records \
                             were lost",
                            path.display()
                        ),
                    ));
                }
                apply(payload)
            })?;
            previous = Some((*generation, records, path));
        }

        let (generation, previous) = match previous {
            Some((generation, records, _)) => (generation + 1, records),
            None => (checkpoint, 0),
        };
        let path = dir.join(format!("{FILE_PREFIX}{next_file}"));
        let file = create(dir, &path).map_err(|e| storage("creating a journal segment", e))?;
        let journal = Journal {
            dir: dir.to_path_buf(),
            segment_bytes,
            active: Active::new_file(path, Segment::new(file, false), generation, previous),
            spares,
            next_file: next_file + 1,
            spare_requested: false,
            // Whole segments are whole blocks, so that a direct write never reaches past one.
            direct: direct && segment_bytes.is_multiple_of(BLOCK as u64),
            failed: None,
        };
        // Zeroed, since a crash may have come between a deletion and the zeroing it asked for.
        let files: Vec<Retired> = live
            .into_iter()
            .map(|(_, path)| path)
            .chain(idle)
            .map(|path| Retired {
                path,
                erase: true,
                erasures: 0,
            })
            .collect();
        let chore = (!files.is_empty()).then_some(Chore::Retire {
            below: generation,
            files,
        });
        Ok((journal, chore))
    }

    /// Writes `payload` as the next record and makes it durable: when this returns `Ok`, the
    /// record survives a crash. Returns chores for the maintenance thread. (The committer
    /// does this in two steps; see [`Journal::write`].)
    #[cfg(test)]
    pub(crate) fn append(&mut self, payload: &[u8]) -> Result<Vec<Chore>, String> {
        let (record, chores) = self.write(payload)?;
        if let Err(e) = record.sync() {
            self.failed = Some(e.clone());
            return Err(e);
        }
        Ok(chores)
    }

    /// Gives `payload` to the active segment as the next record, without writing it out: the
    /// record is durable once [`Unsynced::sync`] returned `Ok` for it or for any record after
    /// it. Whoever syncs must report a failure back through [`Journal::fail`]. Returns chores
    /// for the maintenance thread, to be sent once the record is durable and applied.
    pub(crate) fn write(&mut self, payload: &[u8]) -> Result<(Unsynced, Vec<Chore>), String> {
        if let Some(failure) = &self.failed {
            return Err(format!(
                "the journal takes no writes after a failed one until the log is reopened \
                 ({failure})"
            ));
        }
        let written = self.write_record(payload);
        if let Err(e) = &written {
            self.failed = Some(e.clone());
        }
        written
    }

    /// Stops all further writes: used when syncing a written record failed, or RocksDB refused a
    /// batch the journal already holds.
    pub(crate) fn fail(&mut self, reason: &str) {
        self.failed = Some(reason.to_string());
    }

    /// After a deletion, whose data must not stay in the journal: counts the deletion, moves
    /// to a clean segment (unless the active one is clean and empty) and sends the segment
    /// left and every stale spare to be zeroed. Nothing after a failed write: retiring would
    /// record RocksDB's state as complete without the failed batch. If moving fails, the
    /// active segment is zeroed when it is retired, as it started before this deletion.
    pub(crate) fn rotate_for_erasure(&mut self) -> Vec<Chore> {
        if self.failed.is_some() {
            return Vec::new();
        }
        let mut files: Vec<Retired> = {
            let mut pool = lock(&self.spares);
            pool.erasures += 1;
            let erasures = pool.erasures;
            let (stale, clean) = std::mem::take(&mut pool.spares)
                .into_iter()
                .partition(|spare| !spare.clean);
            pool.spares = clean;
            stale
                .into_iter()
                .map(|spare: Spare| Retired {
                    path: spare.path,
                    erase: true,
                    erasures,
                })
                .collect()
        };
        let mut below = self.active.generation;
        if (self.active.records > 0 || !self.active.clean)
            && let Ok(chores) = self.switch(true)
        {
            for chore in chores {
                if let Chore::Retire { below: b, files: f } = chore {
                    below = b;
                    files.extend(f);
                }
            }
        }
        if files.is_empty() {
            return Vec::new();
        }
        vec![Chore::Retire { below, files }]
    }

    /// Retires the active segment for good (the log is closing), zeroed: a log closed cleanly
    /// leaves nothing to replay and nothing in its journal. Nothing after a failed write,
    /// which recovery must settle.
    pub(crate) fn close(self) -> Option<Chore> {
        if self.failed.is_some() {
            return None;
        }
        let below = self.active.generation + u64::from(self.active.records > 0);
        Some(Chore::Retire {
            below,
            files: vec![Retired {
                path: self.active.path,
                erase: true,
                erasures: self.active.erasures,
            }],
        })
    }

    fn write_record(&mut self, payload: &[u8]) -> Result<(Unsynced, Vec<Chore>), String> {
        let length = u32::try_from(payload.len())
            .ok()
            .filter(|length| *length < CRC_RECORD)
            .ok_or_else(|| format!("a batch of {} bytes is too large", payload.len()))?;
        let size = (HEADER + payload.len()) as u64;
        let mut chores = Vec::new();
        let full = self.active.records > 0 && self.active.offset + size > self.segment_bytes;
        if full || (!self.active.prefilled && self.spare_ready()) {
            chores.extend(self.switch(false)?);
        }
        let active = &mut self.active;
        let previous = if active.records == 0 {
            active.previous
        } else {
            0
        };
        let header = header(
            length | CRC_RECORD,
            active.generation,
            active.records,
            previous,
        );
        let sum = checksum(&header, payload);
        let end = active.segment.add(&[&header, &sum, payload]);
        active.offset = end;
        active.records += 1;
        let record = Unsynced {
            segment: Arc::clone(&active.segment),
            end,
        };
        if !active.prefilled
            && !self.spare_requested
            && active.offset >= self.segment_bytes / PREPARE_SPARE_AFTER
        {
            self.spare_requested = true;
            chores.push(Chore::Prepare(self.new_path()));
        }
        Ok((record, chores))
    }

    fn spare_ready(&self) -> bool {
        !lock(&self.spares).spares.is_empty()
    }

    /// Continues in a spare (only a clean one if `for_erasure`) or a new file when there is
    /// none, in the next generation unless the active one is still empty, and retires the file
    /// left (to be zeroed if `for_erasure`).
    fn switch(&mut self, for_erasure: bool) -> Result<Vec<Chore>, String> {
        let (spare, erasures) = {
            let mut pool = lock(&self.spares);
            let pick = if for_erasure {
                pool.spares.iter().position(|spare| spare.clean)
            } else {
                pool.spares.len().checked_sub(1)
            };
            (pick.map(|at| pool.spares.swap_remove(at)), pool.erasures)
        };
        let clean = spare.as_ref().is_none_or(|spare| spare.clean);
        let (path, segment, prefilled) = match spare.map(|spare| spare.path) {
            Some(path) => {
                let length = std::fs::metadata(&path)
                    .map_err(|e| format!("reading a spare journal segment: {e}"))?
                    .len();
                let prefilled = length >= self.segment_bytes;
                let segment = Segment::open(&path, self.direct && prefilled)
                    .map_err(|e| format!("opening a spare journal segment: {e}"))?;
                if prefilled && !segment.is_direct() {
                    // The filesystem refuses O_DIRECT: no point in asking again.
                    self.direct = false;
                }
                (path, segment, prefilled)
            }
            None => {
                let path = self.new_path();
                let file = create(&self.dir, &path)
                    .map_err(|e| format!("creating a journal segment: {e}"))?;
                (path, Segment::new(file, false), false)
            }
        };
        if !prefilled {
            self.spare_requested = false;
        }
        let (generation, previous) = if self.active.records == 0 {
            (self.active.generation, self.active.previous)
        } else {
            (self.active.generation + 1, self.active.records)
        };
        let left = std::mem::replace(
            &mut self.active,
            Active {
                prefilled,
                clean,
                erasures,
                ..Active::new_file(path, segment, generation, previous)
            },
        );
        Ok(vec![Chore::Retire {
            below: generation,
            files: vec![Retired {
                path: left.path,
                erase: for_erasure,
                erasures: left.erasures,
            }],
        }])
    }

    fn new_path(&mut self) -> PathBuf {
        let path = self.dir.join(format!("{FILE_PREFIX}{}", self.next_file));
        self.next_file += 1;
        path
    }
}

/// Zero-fills a new file to `segment_bytes` for use as a spare.
pub(crate) fn prepare(path: &Path, segment_bytes: u64) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let file = create(dir, path)?;
    zero(&file, 0, segment_bytes)?;
    file.sync_data()
}

/// Gives a retired file back to the pool once RocksDB holds its generations: zeroed first if
/// it was retired for erasure or a deletion came since it started to be written; kept as a
/// spare if it is a whole segment and the pool has room, deleted otherwise.
pub(crate) fn give_back(spares: &Spares, retired: Retired, segment_bytes: u64) {
    let mut erase = retired.erase;
    loop {
        if erase && self::erase(&retired.path).is_err() {
            // Deleting it frees its blocks, as RocksDB does with its table files.
            let _ = std::fs::remove_file(&retired.path);
            return;
        }
        let whole = std::fs::metadata(&retired.path).is_ok_and(|m| m.len() >= segment_bytes);
        let mut pool = lock(spares);
        if !erase && pool.erasures > retired.erasures {
            // A deletion came while it was written or since: its data may be in it. Checked
            // under the lock that the deletion's rotation takes, so the committer can never
            // pick the file up before it is zeroed.
            erase = true;
            continue;
        }
        if whole && pool.spares.len() < MAX_SPARES {
            pool.spares.push(Spare {
                path: retired.path,
                clean: erase,
            });
            return;
        }
        drop(pool);
        let _ = std::fs::remove_file(&retired.path);
        return;
    }
}

/// Adds a freshly zero-filled file to the spares, or deletes it if the pool is full.
pub(crate) fn add_prepared(spares: &Spares, path: PathBuf) {
    let mut pool = lock(spares);
    if pool.spares.len() < MAX_SPARES {
        pool.spares.push(Spare { path, clean: true });
    } else {
        drop(pool);
        let _ = std::fs::remove_file(&path);
    }
}

/// Overwrites every non-zero byte of the file with zeros, so that it holds nothing of what it
/// held.
fn erase(path: &Path) -> std::io::Result<()> {
    let file = OpenOptions::new().read(true).write(true).open(path)?;
    let length = file.metadata()?.len();
    let mut chunk = vec![0u8; CHUNK];
    let mut wrote = false;
    let mut at = 0;
    while at < length {
        let n = (length - at).min(CHUNK as u64) as usize;
        file.read_exact_at(&mut chunk[..n], at)?;
        if chunk[..n].iter().any(|b| *b != 0) {
            chunk[..n].fill(0);
            file.write_all_at(&chunk[..n], at)?;
            wrote = true;
        }
        at += n as u64;
    }
    if wrote {
        file.sync_data()?;
    }
    Ok(())
}

fn zero(file: &File, from: u64, to: u64) -> std::io::Result<()> {
    let zeros = vec![0u8; CHUNK];
    let mut at = from;
    while at < to {
        let n = (to - at).min(CHUNK as u64) as usize;
        file.write_all_at(&zeros[..n], at)?;
        at += n as u64;
    }
    Ok(())
}

/// Creates a file that must not exist yet, and makes its name durable.
fn create(dir: &Path, path: &Path) -> std::io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path)?;
    sync_dir(dir)?;
    Ok(file)
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

fn file_number(path: &Path) -> Option<u64> {
    path.file_name()?
        .to_str()?
        .strip_prefix(FILE_PREFIX)?
        .parse()
        .ok()
}

/// A record's header before its checksum.
fn header(length: u32, generation: u64, index: u64, previous: u64) -> [u8; HEADER - 8] {
    let mut header = [0u8; HEADER - 8];
    header[..4].copy_from_slice(&length.to_le_bytes());
    header[4..12].copy_from_slice(&generation.to_le_bytes());
    header[12..20].copy_from_slice(&index.to_le_bytes());
    header[20..28].copy_from_slice(&previous.to_le_bytes());
    header
}

fn checksum(header: &[u8], payload: &[u8]) -> [u8; 8] {
    let mut crc = crc32fast::Hasher::new();
    crc.update(header);
    crc.update(payload);
    let mut sum = [0u8; 8];
    sum[..4].copy_from_slice(&crc.finalize().to_le_bytes());
    sum
}

/// The checksum of records written before [`CRC_RECORD`].
fn legacy_checksum(header: &[u8], payload: &[u8]) -> [u8; 8] {
    let digest = Sha256::new()
        .chain_update(header)
        .chain_update(payload)
        .finalize();
    let mut sum = [0u8; 8];
    sum.copy_from_slice(&digest[..8]);
    sum
}

/// A record's header fields.
struct Header {
    length: u64,
    /// The checksum is a CRC-32, not the legacy SHA-256 prefix.
    crc: bool,
    generation: u64,
    index: u64,
    previous: u64,
    checksum: [u8; 8],
}

fn parse(bytes: &[u8; HEADER]) -> Header {
    let u64_at = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&bytes[at..at + 8]);
        u64::from_le_bytes(b)
    };
    let mut length = [0u8; 4];
    length.copy_from_slice(&bytes[..4]);
    let mut checksum = [0u8; 8];
    checksum.copy_from_slice(&bytes[28..36]);
    let length = u32::from_le_bytes(length);
    Header {
        length: u64::from(length & !CRC_RECORD),
        crc: length & CRC_RECORD != 0,
        generation: u64_at(4),
        index: u64_at(12),
        previous: u64_at(20),
        checksum,
    }
}

/// Reads the segment's records in order and passes (index, previous, payload) of each to
/// `each`, stopping at the first that is not a whole, intact record of `generation` (`None`:
/// of the generation its first record names). Returns how many were read.
fn read_records(
    path: &Path,
    generation: Option<u64>,
    limit: u64,
    mut each: impl FnMut(&Header, &[u8]) -> Result<()>,
) -> Result<u64> {
    let file = File::open(path).map_err(|e| storage("opening a journal segment", e))?;
    let length = file
        .metadata()
        .map_err(|e| storage("reading a journal segment", e))?
        .len();
    let mut reader = BufReader::with_capacity(CHUNK, file);
    let mut generation = generation;
    let mut offset = 0u64;
    let mut records = 0u64;
    let mut payload = Vec::new();
    while records < limit && offset + HEADER as u64 <= length {
        let mut bytes = [0u8; HEADER];
        reader
            .read_exact(&mut bytes)
            .map_err(|e| storage("reading a journal segment", e))?;
        let header = parse(&bytes);
        let end = offset + HEADER as u64 + header.length;
        if header.length == 0 || end > length {
            break;
        }
        payload.resize(header.length as usize, 0);
        reader
            .read_exact(&mut payload)
            .map_err(|e| storage("reading a journal segment", e))?;
        let sum = if header.crc {
            checksum(&bytes[..28], &payload)
        } else {
            legacy_checksum(&bytes[..28], &payload)
        };
        if sum != header.checksum
            || header.index != records
            || generation.is_some_and(|g| g != header.generation)
        {
            break;
        }
        generation = Some(header.generation);
        each(&header, &payload)?;
        records += 1;
        offset = end;
    }
    Ok(records)
}

/// The generation of the segment's first record, if it has an intact one.
fn first_generation(path: &Path) -> Result<Option<u64>> {
    let mut first = None;
    read_records(path, None, 1, |header, _| {
        first = Some(header.generation);
        Ok(())
    })?;
    Ok(first)
}

/// Passes (index, previous, payload) of each record of `generation` in the segment to `each`.
fn scan(
    path: &Path,
    generation: u64,
    mut each: impl FnMut(u64, u64, &[u8]) -> Result<()>,
) -> Result<u64> {
    read_records(path, Some(generation), u64::MAX, |header, payload| {
        each(header.index, header.previous, payload)
    })
}

pub(crate) fn lock(spares: &Spares) -> std::sync::MutexGuard<'_, Pool> {
    spares
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn storage(context: &'static str, e: std::io::Error) -> Error {
    Error::storage(context, e)
}

fn corrupt(path: &Path, reason: String) -> Error {
    Error::Corrupt {
        at: Location::default(),
        reason: format!("journal segment {}: {reason}", path.display()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    /// Small segments: a few records each.
    const SEGMENT: u64 = 256;

    fn open(dir: &Path, checkpoint: u64) -> Result<(Journal, Vec<Vec<u8>>, Option<Chore>)> {
        let mut replayed = Vec::new();
        let (journal, chore) = Journal::open(
            &dir.join("journal"),
            SEGMENT,
            true,
            checkpoint,
            Spares::default(),
            |payload| {
                replayed.push(payload.to_vec());
                Ok(())
            },
        )?;
        Ok((journal, replayed, chore))
    }

    fn payload(n: usize) -> Vec<u8> {
        format!("batch {n:03} {}", "x".repeat(40)).into_bytes()
    }

    fn append_all(journal: &mut Journal, range: std::ops::Range<usize>) -> Vec<Chore> {
        range
            .flat_map(|n| journal.append(&payload(n)).unwrap())
            .collect()
    }

    fn segments(dir: &Path) -> Vec<PathBuf> {
        let mut files: Vec<_> = std::fs::read_dir(dir.join("journal"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort_by_key(|p| file_number(p));
        files
    }

    #[test]
    fn records_come_back_in_order_across_segments_and_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let (mut journal, replayed, chore) = open(dir.path(), 0).unwrap();
        assert!(replayed.is_empty());
        assert_eq!(chore, None, "a new journal has nothing to retire");
        let chores = append_all(&mut journal, 0..20);
        let retired = chores
            .iter()
            .filter(|c| matches!(c, Chore::Retire { .. }))
            .count();
        assert!(retired >= 5, "20 records of 86 bytes fill several segments");
        drop(journal);

        let (mut journal, replayed, chore) = open(dir.path(), 0).unwrap();
        assert_eq!(replayed, (0..20).map(payload).collect::<Vec<_>>());
        let Some(Chore::Retire { below, files }) = chore else {
            panic!("the replayed segments are to be retired: {chore:?}");
        };
        assert_eq!(files.len(), segments(dir.path()).len() - 1);
        assert_eq!(below, journal.active.generation);
        append_all(&mut journal, 20..25);
        drop(journal);
        let (_, replayed, _) = open(dir.path(), 0).unwrap();
        assert_eq!(replayed, (0..25).map(payload).collect::<Vec<_>>());
    }

    #[test]
    fn a_torn_newest_record_is_dropped_and_the_journal_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let (mut journal, _, _) = open(dir.path(), 0).unwrap();
        append_all(&mut journal, 0..2);
        let file = journal.active.path.clone();
        drop(journal);
        // The second record's last bytes never reached the disk.
        let bytes = std::fs::read(&file).unwrap();
        std::fs::write(&file, &bytes[..bytes.len() - 5]).unwrap();

        let (mut journal, replayed, _) = open(dir.path(), 0).unwrap();
        assert_eq!(replayed, vec![payload(0)]);
        append_all(&mut journal, 2..4);
        drop(journal);
        // The torn generation is older now; the next one says it holds one record, and it does.
        let (_, replayed, _) = open(dir.path(), 0).unwrap();
        assert_eq!(replayed, vec![payload(0), payload(2), payload(3)]);
    }

    #[test]
    fn a_record_lost_from_an_older_generation_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let (mut journal, _, _) = open(dir.path(), 0).unwrap();
        append_all(&mut journal, 0..8);
        drop(journal);
        // Flip a payload byte of the first segment's second record.
        let first = &segments(dir.path())[0];
        let mut bytes = std::fs::read(first).unwrap();
        let second = HEADER + payload(0).len();
        bytes[second + HEADER + 3] ^= 1;
        std::fs::write(first, bytes).unwrap();

        let opened = open(dir.path(), 0).map(|(_, replayed, _)| replayed.len());
        let Err(Error::Corrupt { reason, .. }) = opened else {
            panic!("a damaged record in the middle of the journal was skipped: {opened:?}");
        };
        assert!(reason.contains("records were lost"), "{reason}");
        assert!(
            reason.starts_with(&format!("journal segment {}:", first.display())),
            "names the damaged file: {reason}"
        );
    }

    #[test]
    fn a_missing_segment_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let (mut journal, _, _) = open(dir.path(), 0).unwrap();
        append_all(&mut journal, 0..12);
        drop(journal);
        std::fs::remove_file(&segments(dir.path())[1]).unwrap();
        let Err(Error::Corrupt { reason, .. }) = open(dir.path(), 0) else {
            panic!("a missing segment went unnoticed");
        };
        assert!(reason.contains("a segment is missing"), "{reason}");
    }

    #[test]
    fn generations_below_the_checkpoint_are_not_replayed() {
        let dir = tempfile::tempdir().unwrap();
        let (mut journal, _, _) = open(dir.path(), 0).unwrap();
        let chores = append_all(&mut journal, 0..6);
        let Some(below) = chores.iter().find_map(|c| match c {
            Chore::Retire { below, .. } => Some(*below),
            Chore::Prepare(_) => None,
        }) else {
            panic!("six records fill more than one segment: {chores:?}");
        };
        let first_in_next = journal_records_before(dir.path(), below);
        assert!(first_in_next > 0);
        drop(journal);
        let (journal, replayed, chore) = open(dir.path(), below).unwrap();
        assert_eq!(
            replayed,
            (first_in_next..6).map(payload).collect::<Vec<_>>()
        );
        let Some(Chore::Retire { files, .. }) = chore else {
            panic!("{chore:?}");
        };
        // Every file but the new active one, replayed or not, is handed back for zeroing.
        assert_eq!(files.len(), segments(dir.path()).len() - 1);
        assert!(
            files
                .iter()
                .all(|f| f.path != journal.active.path && f.erase)
        );
    }

    /// How many records the generations below `below` hold, read from the files.
    fn journal_records_before(dir: &Path, below: u64) -> usize {
        segments(dir)
            .iter()
            .filter_map(|path| {
                let generation = first_generation(path).unwrap()?;
                (generation < below).then(|| scan(path, generation, |_, _, _| Ok(())).unwrap())
            })
            .sum::<u64>() as usize
    }

    #[test]
    fn a_reused_segment_s_stale_records_are_not_replayed() {
        let dir = tempfile::tempdir().unwrap();
        let (mut journal, _, _) = open(dir.path(), 0).unwrap();
        append_all(&mut journal, 0..2);
        let old = journal.active.path.clone();
        let retired = journal.switch(false).unwrap();
        assert_eq!(
            retired,
            vec![Chore::Retire {
                below: 1,
                files: vec![Retired {
                    path: old.clone(),
                    erase: false,
                    erasures: 0
                }]
            }]
        );
        // The old file comes back as a spare without being zeroed: generation 0's two records
        // stay in it. The new active file is empty, so moving into the spare keeps generation
        // 1, whose first record (as long as generation 0's) then lies right before generation
        // 0's second record.
        stale_spare(&journal, &old);
        journal.append(&payload(99)).unwrap();
        assert_eq!(journal.active.path, old);
        assert_eq!(journal.active.generation, 1);
        drop(journal);
        let (_, replayed, _) = open(dir.path(), 1).unwrap();
        assert_eq!(replayed, vec![payload(99)]);
    }

    #[test]
    fn a_growing_segment_asks_for_a_spare_once_and_moves_into_it() {
        let dir = tempfile::tempdir().unwrap();
        let (mut journal, _) = Journal::open(
            &dir.path().join("journal"),
            64 * 1024,
            true,
            0,
            Spares::default(),
            |_| Ok(()),
        )
        .unwrap();
        let first = journal.active.path.clone();
        let mut prepares = Vec::new();
        for n in 0..30 {
            for chore in journal.append(&payload(n)).unwrap() {
                let Chore::Prepare(path) = chore else {
                    panic!("nothing to retire yet: {chore:?}");
                };
                prepares.push(path);
            }
        }
        assert_eq!(prepares.len(), 1, "one spare asked for, after 1 KiB");
        prepare(&prepares[0], 64 * 1024).unwrap();
        assert_eq!(
            std::fs::metadata(&prepares[0]).unwrap().len(),
            64 * 1024,
            "a spare is zero-filled to the segment size"
        );
        add_prepared(&journal.spares, prepares[0].clone());
        let chores = journal.append(&payload(30)).unwrap();
        assert_eq!(
            chores,
            vec![Chore::Retire {
                below: 1,
                files: vec![Retired {
                    path: first,
                    erase: false,
                    erasures: 0
                }]
            }]
        );
        assert_eq!(journal.active.path, prepares[0]);
        assert!(journal.active.prefilled);
        assert_eq!(
            std::fs::metadata(&prepares[0]).unwrap().len(),
            64 * 1024,
            "writing into a spare does not grow it"
        );
    }

    #[test]
    fn records_written_direct_across_blocks_and_segments_come_back_in_order() {
        const SEGMENT: u64 = 2 * BLOCK as u64;
        let dir = tempfile::tempdir().unwrap();
        let open = |dir: &Path| {
            let mut replayed = Vec::new();
            let (journal, _) = Journal::open(
                &dir.join("journal"),
                SEGMENT,
                true,
                0,
                Spares::default(),
                |payload| {
                    replayed.push(payload.to_vec());
                    Ok(())
                },
            )
            .unwrap();
            (journal, replayed)
        };
        // Small records share blocks, larger ones cross them, one outgrows a segment.
        let sizes = [
            60, 60, 700, 3000, 60, 5000, 20_000, 60, 1000, 1000, 1000, 4060,
        ];
        let records: Vec<Vec<u8>> = (0..60)
            .map(|n| vec![n as u8 + 1; sizes[n % sizes.len()]])
            .collect();
        let (mut journal, _) = open(dir.path());
        let mut direct = 0;
        for record in &records {
            for chore in journal.append(record).unwrap() {
                // A spare when asked for one; retired files stay, as RocksDB holds nothing.
                if let Chore::Prepare(path) = chore {
                    prepare(&path, SEGMENT).unwrap();
                    add_prepared(&journal.spares, path);
                }
            }
            direct += usize::from(journal.active.segment.is_direct());
        }
        if crate::rocks::segment::tests::takes_direct_writes(dir.path()) {
            assert!(
                direct > 20,
                "zero-filled segments are written direct ({direct} of 60 records)"
            );
        } else {
            assert_eq!(
                direct, 0,
                "a filesystem refusing O_DIRECT gets buffered writes"
            );
        }
        drop(journal);
        let (_, replayed) = open(dir.path());
        assert_eq!(replayed, records);
    }

    #[test]
    fn records_with_the_legacy_checksum_are_replayed_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("journal")).unwrap();
        // Two records as an earlier version wrote them: SHA-256 prefix, no CRC bit.
        let mut bytes = Vec::new();
        for index in 0..2u64 {
            let payload = payload(index as usize);
            let header = header(payload.len() as u32, 0, index, 0);
            bytes.extend_from_slice(&header);
            bytes.extend_from_slice(&legacy_checksum(&header, &payload));
            bytes.extend_from_slice(&payload);
        }
        let path = dir.path().join("journal/segment-0");
        assert_eq!(
            replayed_from(dir.path(), &path, &bytes),
            vec![payload(0), payload(1)]
        );

        // A changed byte in the second record's payload: it is torn, not replayed.
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        assert_eq!(replayed_from(dir.path(), &path, &bytes), vec![payload(0)]);
    }

    /// Writes `bytes` as the segment file `path`, then what reopening the journal replays.
    fn replayed_from(dir: &Path, path: &Path, bytes: &[u8]) -> Vec<Vec<u8>> {
        std::fs::write(path, bytes).unwrap();
        open(dir, 0).unwrap().1
    }

    #[test]
    fn a_changed_byte_in_a_record_is_caught_by_its_crc() {
        let dir = tempfile::tempdir().unwrap();
        let (mut journal, _, _) = open(dir.path(), 0).unwrap();
        append_all(&mut journal, 0..2);
        let file = journal.active.path.clone();
        drop(journal);
        let mut bytes = std::fs::read(&file).unwrap();
        let first_length = HEADER + payload(0).len();
        assert_eq!(
            u32::from_le_bytes(bytes[..4].try_into().unwrap()) & CRC_RECORD,
            CRC_RECORD,
            "new records carry a CRC"
        );
        // One bit of the second record's payload.
        bytes[first_length + HEADER + 10] ^= 4;
        assert_eq!(replayed_from(dir.path(), &file, &bytes), vec![payload(0)]);
    }

    #[test]
    fn a_record_is_on_the_disk_only_once_synced() {
        let dir = tempfile::tempdir().unwrap();
        let (mut journal, _, _) = open(dir.path(), 0).unwrap();
        let (first, _) = journal.write(&payload(0)).unwrap();
        let (second, _) = journal.write(&payload(1)).unwrap();
        let (third, _) = journal.write(&payload(2)).unwrap();
        assert!(second.sync().unwrap(), "the second record's sync writes");
        assert!(!first.sync().unwrap(), "and covers the first");
        drop((first, second, third));
        drop(journal);
        let (_, replayed, _) = open(dir.path(), 0).unwrap();
        assert_eq!(replayed, vec![payload(0), payload(1)], "never synced: lost");
    }

    #[test]
    fn erasing_zeroes_every_byte() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("segment-7");
        let mut content = vec![0u8; 3 * CHUNK + 100];
        content[10] = 1;
        content[2 * CHUNK + 5] = 0xff;
        content[3 * CHUNK + 99] = 7;
        std::fs::write(&path, &content).unwrap();
        erase(&path).unwrap();
        let after = std::fs::read(&path).unwrap();
        assert_eq!(after.len(), content.len());
        assert!(after.iter().all(|b| *b == 0));
    }

    fn stale_spare(journal: &Journal, path: &Path) {
        lock(&journal.spares).spares.push(Spare {
            path: path.to_path_buf(),
            clean: false,
        });
    }

    fn spares(journal: &Journal) -> Vec<(PathBuf, bool)> {
        lock(&journal.spares)
            .spares
            .iter()
            .map(|s| (s.path.clone(), s.clean))
            .collect()
    }

    /// Gives a retired file back to the journal's pool, as the maintenance thread does.
    fn hand_back(journal: &Journal, path: PathBuf, erase: bool, erasures: u64) {
        let retired = Retired {
            path,
            erase,
            erasures,
        };
        give_back(&journal.spares, retired, SEGMENT);
    }

    /// A whole segment of `byte`s, as a spare holding old generations would be.
    fn whole_segment(dir: &Path, name: &str, byte: u8) -> PathBuf {
        let path = dir.join("journal").join(name);
        std::fs::write(&path, vec![byte; SEGMENT as usize]).unwrap();
        path
    }

    #[test]
    fn a_deletion_moves_to_a_clean_segment_and_sends_stale_ones_to_be_zeroed() {
        let dir = tempfile::tempdir().unwrap();
        let (mut journal, _, _) = open(dir.path(), 0).unwrap();
        journal.append(b"the deleted tenant's event").unwrap();
        let left = journal.active.path.clone();
        let stale = whole_segment(dir.path(), "segment-50", 0xaa);
        let clean = whole_segment(dir.path(), "segment-51", 0);
        stale_spare(&journal, &stale);
        add_prepared(&journal.spares, clean.clone());

        let chores = journal.rotate_for_erasure();
        assert_eq!(journal.active.path, clean, "moved into the clean spare");
        assert_eq!(journal.active.generation, 1);
        let [Chore::Retire { below: 1, files }] = &chores[..] else {
            panic!("{chores:?}");
        };
        let mut sent: Vec<_> = files.iter().map(|f| (f.path.clone(), f.erase)).collect();
        sent.sort();
        assert_eq!(sent, vec![(left, true), (stale, true)]);
        assert!(
            spares(&journal).is_empty(),
            "no stale spare is left to pick"
        );
        assert_eq!(journal.active.erasures, 1);

        // With no clean spare, a new file, not a stale one.
        journal.append(b"another").unwrap();
        let other_stale = whole_segment(dir.path(), "segment-52", 0xbb);
        stale_spare(&journal, &other_stale);
        journal.rotate_for_erasure();
        assert_ne!(journal.active.path, other_stale);
        assert!(journal.active.clean && !journal.active.prefilled);
        // A clean, empty active segment needs no move; the stale spares still go.
        let third_stale = whole_segment(dir.path(), "segment-53", 0xcc);
        stale_spare(&journal, &third_stale);
        let active = journal.active.path.clone();
        let chores = journal.rotate_for_erasure();
        assert_eq!(journal.active.path, active);
        let [Chore::Retire { files, .. }] = &chores[..] else {
            panic!("{chores:?}");
        };
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].path, third_stale);
    }

    #[test]
    fn a_file_retired_before_a_deletion_is_zeroed_before_reuse() {
        let dir = tempfile::tempdir().unwrap();
        let (mut journal, _, _) = open(dir.path(), 0).unwrap();
        let retired = whole_segment(dir.path(), "segment-60", 0xaa);
        // Retired (not for erasure) before the deletion below, given back after it.
        journal.rotate_for_erasure();
        hand_back(&journal, retired.clone(), false, 0);
        assert_eq!(spares(&journal), vec![(retired.clone(), true)]);
        assert!(std::fs::read(&retired).unwrap().iter().all(|b| *b == 0));
    }

    #[test]
    fn a_file_written_since_the_last_deletion_is_reused_as_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let (mut journal, _, _) = open(dir.path(), 0).unwrap();
        journal.rotate_for_erasure();
        let retired = whole_segment(dir.path(), "segment-61", 0xaa);
        hand_back(&journal, retired.clone(), false, 1);
        assert_eq!(spares(&journal), vec![(retired.clone(), false)]);
        assert!(std::fs::read(&retired).unwrap().iter().all(|b| *b == 0xaa));
        // A file shorter than a segment is not worth keeping; nor is one past the pool's room.
        let short = dir.path().join("journal").join("segment-62");
        std::fs::write(&short, [1u8; 10]).unwrap();
        hand_back(&journal, short.clone(), false, 1);
        assert!(!short.exists());
        for n in 63..65 {
            let path = whole_segment(dir.path(), &format!("segment-{n}"), 0);
            hand_back(&journal, path, true, 1);
        }
        assert_eq!(spares(&journal).len(), MAX_SPARES);
        assert!(!dir.path().join("journal/segment-64").exists());
    }

    #[test]
    fn after_a_failed_write_the_journal_takes_nothing_more() {
        let dir = tempfile::tempdir().unwrap();
        let (mut journal, _, _) = open(dir.path(), 0).unwrap();
        journal.append(b"kept").unwrap();
        journal.fail("the disk said no");
        let refused = journal.append(b"refused").unwrap_err();
        assert!(refused.contains("the disk said no"), "{refused}");
        assert!(
            journal.rotate_for_erasure().is_empty(),
            "nothing may be retired either"
        );
        let (mut journal, _, _) = {
            drop(journal);
            open(dir.path(), 0).unwrap()
        };
        journal.fail("again");
        assert_eq!(journal.close(), None, "not even when closing");
        let (_, replayed, _) = open(dir.path(), 0).unwrap();
        assert_eq!(replayed, vec![b"kept".to_vec()]);
    }
}
