//! The RocksDB backend: one database for every tenant, keys under fixed prefixes in a handful of
//! column families (never one per tenant, so an idle tenant costs nothing but its bytes).
//!
//! Writes go through one committer thread that group-commits (see [`committer`]); reads go
//! straight to RocksDB on tokio's blocking pool.

mod backup;
mod committer;
mod journal;
mod maintenance;
mod pipeline;
mod segment;

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;

use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamily, ColumnFamilyDescriptor, DB, DBCompressionType, Options,
    ReadOptions,
};
use tokio::sync::{oneshot, watch};
use uuid::Uuid;

pub use backup::{BackupReport, RestoreReport};

use crate::encoding::{self, keys};
use crate::error::{Error, Location, Result};
use crate::log::EventLog;
use crate::model::{
    BlobId, Commit, Committed, RecordedEvent, Reservation, Snapshot, StreamHead, StreamId,
    WrappedKey,
};

/// The column families, each with its key layout in [`crate::encoding::keys`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Cf {
    Events,
    Streams,
    Reservations,
    Owned,
    Blobs,
    Keys,
    Snapshots,
    Meta,
}

impl Cf {
    const ALL: [Cf; 8] = [
        Cf::Events,
        Cf::Streams,
        Cf::Reservations,
        Cf::Owned,
        Cf::Blobs,
        Cf::Keys,
        Cf::Snapshots,
        Cf::Meta,
    ];

    fn name(self) -> &'static str {
        match self {
            Cf::Events => "events",
            Cf::Streams => "streams",
            Cf::Reservations => "reservations",
            Cf::Owned => "owned",
            Cf::Blobs => "blobs",
            Cf::Keys => "keys",
            Cf::Snapshots => "snapshots",
            Cf::Meta => "meta",
        }
    }
}

/// Tuning for [`RocksLog::open_with`].
#[derive(Clone, Debug)]
pub struct RocksOptions {
    /// Shared block cache for all column families.
    pub block_cache_bytes: usize,
    /// Memtable size per column family: each time one fills, it is flushed to a table file.
    /// Small only in tests that want many flushes.
    pub memtable_bytes: usize,
    /// Size of a journal segment: each time one fills, the memtables are flushed and the
    /// segment is zeroed for reuse. Small only in tests that want many rotations.
    pub journal_segment_bytes: u64,
    /// Write the journal's zero-filled segments with `O_DIRECT | O_DSYNC` where the
    /// filesystem takes it (one syscall makes a record durable; faster on the disks measured).
    /// Off: `pwrite` and `fdatasync`, as on a filesystem that refuses `O_DIRECT`.
    pub journal_direct_io: bool,
}

impl Default for RocksOptions {
    fn default() -> Self {
        RocksOptions {
            block_cache_bytes: 128 << 20,
            memtable_bytes: 64 << 20,
            journal_segment_bytes: 64 << 20,
            journal_direct_io: true,
        }
    }
}

/// What the committer and the readers share.
pub(crate) struct Shared {
    pub(crate) db: DB,
    pub(crate) stats: Counters,
}

/// Counters of the committer's work, for metrics.
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) commits: AtomicU64,
    pub(crate) rejected: AtomicU64,
    pub(crate) syncs: AtomicU64,
    pub(crate) events: AtomicU64,
}

/// What the log has written since it was opened.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct WriteStats {
    /// Commits made durable.
    pub commits: u64,
    /// Commits refused (conflicts, invalid input, storage failures).
    pub rejected: u64,
    /// Synced batch writes: with group commit, fewer than `commits` under concurrency.
    pub syncs: u64,
    /// Events appended.
    pub events: u64,
}

impl Shared {
    pub(crate) fn cf(&self, cf: Cf) -> Result<&ColumnFamily> {
        self.db.cf_handle(cf.name()).ok_or_else(|| {
            Error::storage(
                "looking up a column family",
                std::io::Error::other(format!("column family {} is missing", cf.name())),
            )
        })
    }
}

/// The event log on RocksDB.
pub struct RocksLog {
    shared: Arc<Shared>,
    head: watch::Receiver<u64>,
    /// How far the committer's groups are finished, and the failure that stopped writes.
    progress: Arc<pipeline::Progress>,
    writer: Option<(mpsc::Sender<committer::Request>, JoinHandle<()>)>,
    maintenance: maintenance::Handle,
    log_id: Uuid,
}

impl RocksLog {
    /// Opens (creating if needed) the log in directory `path` with default tuning.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(path, RocksOptions::default())
    }

    pub fn open_with(path: impl AsRef<Path>, options: RocksOptions) -> Result<Self> {
        let path = path.as_ref();
        let cache = Cache::new_lru_cache(options.block_cache_bytes);
        let mut db_options = Options::default();
        db_options.create_if_missing(true);
        db_options.create_missing_column_families(true);
        db_options.set_paranoid_checks(true);
        db_options.set_max_background_jobs(2);
        // Writes bypass RocksDB's WAL (the journal has made them durable), but a data
        // directory written before the journal existed still has WAL files, replayed at open.
        db_options.set_max_total_wal_size(options.memtable_bytes.saturating_mul(4) as u64);
        db_options.set_keep_log_file_num(4);
        let db = DB::open_cf_descriptors(
            &db_options,
            path,
            descriptors(&cache, options.memtable_bytes),
        )
        .map_err(|e| Error::storage("opening the event log", e))?;
        let shared = Arc::new(Shared {
            db,
            stats: Counters::default(),
        });
        // Before the journal's replay, so that the flush making the identity durable flushes
        // nothing else.
        let log_id = log_identity(&shared)?;
        let spares = journal::Spares::default();
        let (journal, chore) = journal::Journal::open(
            &path.join("journal"),
            options.journal_segment_bytes,
            options.journal_direct_io,
            journal_checkpoint(&shared)?,
            Arc::clone(&spares),
            |batch| {
                shared
                    .db
                    .write_opt(
                        rocksdb::WriteBatch::from_data(batch),
                        &committer::unlogged(),
                    )
                    .map_err(|e| Error::storage("replaying the journal", e))
            },
        )?;
        let head = committer::recorded_head(&shared)?;
        let (head_tx, head_rx) = watch::channel(head);
        let maintenance = maintenance::Handle::start(
            Arc::clone(&shared),
            maintenance::JournalFiles {
                spares,
                segment_bytes: options.journal_segment_bytes,
                unretired: Vec::new(),
            },
        )?;
        if let Some(chore) = chore {
            let _ = maintenance.sender().send(maintenance::Job::Journal(chore));
        }
        let progress = Arc::new(pipeline::Progress::default());
        let writer = committer::start(
            Arc::clone(&shared),
            head,
            head_tx,
            maintenance.sender(),
            journal,
            Arc::clone(&progress),
        )?;
        Ok(RocksLog {
            shared,
            head: head_rx,
            progress,
            writer: Some(writer),
            maintenance,
            log_id,
        })
    }

    /// Stops writes as a failed journal write would, with `reason`: for tests of what callers
    /// do with a log in that state (a real failure needs a failing disk).
    #[cfg(feature = "testkit")]
    pub fn fail_writes(&self, reason: &str) {
        self.progress.fail(reason);
    }

    /// What the log has written since it was opened.
    pub fn write_stats(&self) -> WriteStats {
        let stats = &self.shared.stats;
        WriteStats {
            commits: stats.commits.load(Ordering::Relaxed),
            rejected: stats.rejected.load(Ordering::Relaxed),
            syncs: stats.syncs.load(Ordering::Relaxed),
            events: stats.events.load(Ordering::Relaxed),
        }
    }

    /// Waits until every compaction queued by earlier deletions has run, so that deleted data
    /// is gone from the files on disk, not only from every read.
    pub async fn settle(&self) -> Result<()> {
        self.maintenance.settle().await
    }

    /// Flushes and fully compacts every column family: reads then touch the fewest files. For
    /// operators after a bulk import, and for the benchmark.
    pub async fn compact(&self) -> Result<()> {
        let shared = Arc::clone(&self.shared);
        blocking(move || {
            let mut options = rocksdb::CompactOptions::default();
            options.set_bottommost_level_compaction(rocksdb::BottommostLevelCompaction::Force);
            for cf in Cf::ALL {
                let handle = shared.cf(cf)?;
                shared
                    .db
                    .flush_cf(handle)
                    .map_err(|e| Error::storage("flushing a memtable", e))?;
                shared
                    .db
                    .compact_range_cf_opt(handle, None::<&[u8]>, None::<&[u8]>, &options);
            }
            Ok(())
        })
        .await
    }

    /// Flushes every memtable to table files (used before taking a file-level copy, and by
    /// tests that look at the files).
    pub async fn flush(&self) -> Result<()> {
        let shared = Arc::clone(&self.shared);
        blocking(move || {
            for cf in Cf::ALL {
                shared
                    .db
                    .flush_cf(shared.cf(cf)?)
                    .map_err(|e| Error::storage("flushing a memtable", e))?;
            }
            Ok(())
        })
        .await
    }

    /// Writes a consistent copy of the whole log, as it stands now, into the new directory
    /// `to`, while commits go on (see the `backup` module). The copy holds no data keys, only which
    /// ones it left out: [`RocksLog::restore`] turns it back into a log with them.
    pub async fn backup(&self, to: impl AsRef<Path>) -> Result<BackupReport> {
        let to = to.as_ref().to_path_buf();
        self.read(move |shared| backup::write(shared, &to)).await
    }

    /// Makes the backup in `backup` a log in the new directory `into` (complete or absent),
    /// putting back the data keys the backup left out from `key_store`: the live key store's
    /// entries, as [`RocksLog::data_key_store`] read them, kept apart from the backups. A
    /// key missing there stays missing (the report names it). Blocking: file copies.
    pub fn restore(
        backup: impl AsRef<Path>,
        into: impl AsRef<Path>,
        key_store: &[(StreamId, WrappedKey)],
    ) -> Result<RestoreReport> {
        backup::restore(backup.as_ref(), into.as_ref(), key_store)
    }

    /// The data keys a backup left out, when this log is such a backup opened as it is
    /// (`None` for a log, or a backup restored with [`RocksLog::restore`]): such a copy holds
    /// every event but none of the keys its sealed data needs.
    pub async fn keys_left_out(&self) -> Result<Option<Vec<(StreamId, u32)>>> {
        self.read(|shared| {
            let stored = shared
                .db
                .get_pinned_cf(shared.cf(Cf::Meta)?, keys::KEYS_LEFT_OUT)
                .map_err(|e| Error::storage("reading the backup's record of its keys", e))?;
            stored
                .map(|value| backup::parse_left_out(&value))
                .transpose()
        })
        .await
    }

    /// Every entry of the key store (each stream's wrapped data keys), by stream then
    /// version: what a copy of the key store kept apart from the backups holds.
    pub async fn data_key_store(&self) -> Result<Vec<(StreamId, WrappedKey)>> {
        self.read(|shared| key_store_entries(shared, None)).await
    }

    /// Every stream that holds events, in id order: one seek per stream in the stream index,
    /// not a walk of the log (deleted streams are not listed).
    pub async fn streams(&self) -> Result<Vec<StreamId>> {
        self.read(|shared| {
            let mut iter = shared.db.raw_iterator_cf(shared.cf(Cf::Streams)?);
            let mut streams = Vec::new();
            iter.seek_to_first();
            while let Some(key) = iter.key() {
                let (stream, _) = keys::parse_stream(key).ok_or_else(|| Error::Corrupt {
                    at: Location::default(),
                    reason: format!("a stream index key has {} bytes", key.len()),
                })?;
                streams.push(stream);
                let (_, next) = keys::stream_prefix_range(stream);
                iter.seek(next);
            }
            iter.status()
                .map_err(|e| Error::storage("listing streams", e))?;
            Ok(streams)
        })
        .await
    }

    /// Every stream this log deleted, in id order (its tombstones in `meta`): what a copy of
    /// the key store kept apart from the backups must forget, and what a restore of an older
    /// backup must delete again.
    pub async fn deleted_streams(&self) -> Result<Vec<StreamId>> {
        self.read(|shared| {
            let prefix = keys::TOMBSTONE_PREFIX;
            let mut options = rocksdb::ReadOptions::default();
            options.set_iterate_range(rocksdb::PrefixRange(prefix));
            let mut iter = shared.db.raw_iterator_cf_opt(shared.cf(Cf::Meta)?, options);
            let mut deleted = Vec::new();
            iter.seek(prefix);
            while let Some(key) = iter.key() {
                let id = key
                    .strip_prefix(prefix)
                    .and_then(|id| uuid::Uuid::from_slice(id).ok())
                    .ok_or_else(|| Error::Corrupt {
                        at: Location::default(),
                        reason: format!("a stream tombstone key has {} bytes", key.len()),
                    })?;
                deleted.push(StreamId(id));
                iter.next();
            }
            iter.status()
                .map_err(|e| Error::storage("listing deleted streams", e))?;
            Ok(deleted)
        })
        .await
    }

    fn read<T: Send + 'static>(
        &self,
        read: impl FnOnce(&Shared) -> Result<T> + Send + 'static,
    ) -> impl std::future::Future<Output = Result<T>> + Send + 'static {
        let shared = Arc::clone(&self.shared);
        blocking(move || read(&shared))
    }
}

impl Drop for RocksLog {
    fn drop(&mut self) {
        if let Some((sender, thread)) = self.writer.take() {
            // Closing the channel lets the committer finish what is queued and exit.
            drop(sender);
            let _ = thread.join();
        }
        self.maintenance.stop();
    }
}

/// Every column family with its options: LZ4 tables sharing `cache`, and bloom filters for the
/// families read by point lookups (heads, reservations, tombstones).
fn descriptors(cache: &Cache, memtable_bytes: usize) -> [ColumnFamilyDescriptor; 8] {
    Cf::ALL.map(|cf| {
        let mut table = BlockBasedOptions::default();
        table.set_block_cache(cache);
        if cf != Cf::Events {
            table.set_bloom_filter(10.0, false);
        }
        let mut cf_options = Options::default();
        cf_options.set_compression_type(DBCompressionType::Lz4);
        cf_options.set_write_buffer_size(memtable_bytes);
        cf_options.set_block_based_table_factory(&table);
        ColumnFamilyDescriptor::new(cf.name(), cf_options)
    })
}

/// The log's identity ([`EventLog::log_id`]), made and flushed on the first open without one:
/// a new log, or one written before logs had an identity.
fn log_identity(shared: &Shared) -> Result<Uuid> {
    let meta = shared.cf(Cf::Meta)?;
    let stored = shared
        .db
        .get_pinned_cf(meta, keys::LOG_ID)
        .map_err(|e| Error::storage("reading the log's identity", e))?;
    if let Some(bytes) = stored {
        return Uuid::from_slice(&bytes).map_err(|_| Error::Corrupt {
            at: Location::default(),
            reason: format!("the log's identity record has {} bytes", bytes.len()),
        });
    }
    let id = Uuid::now_v7();
    shared
        .db
        .put_cf_opt(meta, keys::LOG_ID, id.as_bytes(), &committer::unlogged())
        .map_err(|e| Error::storage("recording the log's identity", e))?;
    // Unlogged, like every write outside the journal: durable once flushed.
    shared
        .db
        .flush_cf(meta)
        .map_err(|e| Error::storage("recording the log's identity", e))?;
    Ok(id)
}

/// The journal's checkpoint: the oldest generation recovery must replay (0 for a new log).
fn journal_checkpoint(shared: &Shared) -> Result<u64> {
    let stored = shared
        .db
        .get_pinned_cf(shared.cf(Cf::Meta)?, keys::JOURNAL_CHECKPOINT)
        .map_err(|e| Error::storage("reading the journal checkpoint", e))?;
    match stored {
        None => Ok(0),
        Some(bytes) => {
            let bytes: [u8; 8] = bytes.as_ref().try_into().map_err(|_| Error::Corrupt {
                at: Location::default(),
                reason: format!("the journal checkpoint record has {} bytes", bytes.len()),
            })?;
            Ok(u64::from_be_bytes(bytes))
        }
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::storage("running a read on the blocking pool", e))?
}

impl EventLog for RocksLog {
    async fn commit(&self, commit: Commit) -> Result<Committed> {
        let (sender, _) = self.writer.as_ref().ok_or(Error::Closed)?;
        // A deleted stream's index is read here, off the committer: walking a million-event
        // stream there held up every writer for the whole walk.
        let mut known_index = HashMap::new();
        for stream in commit.delete.iter().copied() {
            let index = self
                .read(move |shared| committer::stored_index(shared, stream, 0))
                .await?;
            known_index.insert(stream, index);
        }
        let (reply, answer) = oneshot::channel();
        sender
            .send(committer::Request {
                commit,
                reply,
                known_index,
            })
            .map_err(|_| Error::Closed)?;
        answer.await.map_err(|_| Error::Closed)?
    }

    async fn read_stream(
        &self,
        stream: StreamId,
        from_seq: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>> {
        self.read(move |shared| read_stream(shared, stream, from_seq, limit))
            .await
    }

    async fn read_all(&self, from_position: u64, limit: usize) -> Result<Vec<RecordedEvent>> {
        self.read(move |shared| read_all(shared, from_position, limit))
            .await
    }

    async fn stream_head(&self, stream: StreamId) -> Result<Option<StreamHead>> {
        self.read(move |shared| stream_head(shared, stream)).await
    }

    fn head_position(&self) -> u64 {
        *self.head.borrow()
    }

    fn log_id(&self) -> Uuid {
        self.log_id
    }

    fn subscribe(&self) -> watch::Receiver<u64> {
        self.head.clone()
    }

    fn write_failure(&self) -> Option<String> {
        self.progress.failure()
    }

    async fn is_deleted(&self, stream: StreamId) -> Result<bool> {
        self.read(move |shared| is_deleted(shared, stream)).await
    }

    async fn reservation_owner(&self, reservation: &Reservation) -> Result<Option<StreamId>> {
        let key = keys::reservation(reservation);
        self.read(move |shared| reservation_owner(shared, &key))
            .await
    }

    async fn blob(&self, stream: StreamId, id: BlobId) -> Result<Option<Vec<u8>>> {
        self.read(move |shared| {
            shared
                .db
                .get_cf(shared.cf(Cf::Blobs)?, keys::blob(stream, &id))
                .map_err(|e| Error::storage("reading a blob", e))
        })
        .await
    }

    async fn data_keys(&self, stream: StreamId) -> Result<Vec<WrappedKey>> {
        self.read(move |shared| data_keys(shared, stream)).await
    }

    async fn snapshot(&self, stream: StreamId) -> Result<Option<Snapshot>> {
        self.read(move |shared| snapshot(shared, stream)).await
    }
}

/// The stream's stored snapshot, if any.
pub(crate) fn snapshot(shared: &Shared, stream: StreamId) -> Result<Option<Snapshot>> {
    let value = shared
        .db
        .get_pinned_cf(shared.cf(Cf::Snapshots)?, keys::snapshot(stream))
        .map_err(|e| Error::storage("reading a snapshot", e))?;
    let Some(value) = value else {
        return Ok(None);
    };
    let (seq, hash, data) = keys::parse_snapshot_value(&value).ok_or_else(|| Error::Corrupt {
        at: Location {
            stream: Some(stream),
            ..Location::default()
        },
        reason: format!("snapshot value has {} bytes", value.len()),
    })?;
    Ok(Some(Snapshot {
        stream,
        seq,
        hash,
        data: data.to_vec(),
    }))
}

pub(crate) fn stream_head(shared: &Shared, stream: StreamId) -> Result<Option<StreamHead>> {
    let mut iter = shared.db.raw_iterator_cf(shared.cf(Cf::Streams)?);
    iter.seek_for_prev(keys::stream(stream, u64::MAX));
    let head = match iter.item() {
        Some((key, value)) => match keys::parse_stream(key) {
            Some((owner, seq)) if owner == stream => {
                let (position, hash) = parse_index_value(stream, seq, value)?;
                Some(StreamHead {
                    seq,
                    position,
                    hash,
                })
            }
            _ => None,
        },
        None => None,
    };
    iter.status()
        .map_err(|e| Error::storage("reading a stream head", e))?;
    Ok(head)
}

/// The position and hash a stream index entry holds for the event at `seq` of `stream`.
pub(crate) fn parse_index_value(
    stream: StreamId,
    seq: u64,
    value: &[u8],
) -> Result<(u64, crate::Digest32)> {
    keys::parse_stream_value(value).ok_or_else(|| Error::Corrupt {
        at: Location {
            stream: Some(stream),
            seq: Some(seq),
            position: None,
        },
        reason: format!("stream index value has {} bytes", value.len()),
    })
}

pub(crate) fn is_deleted(shared: &Shared, stream: StreamId) -> Result<bool> {
    shared
        .db
        .get_pinned_cf(shared.cf(Cf::Meta)?, keys::tombstone(stream))
        .map(|value| value.is_some())
        .map_err(|e| Error::storage("reading a stream tombstone", e))
}

pub(crate) fn reservation_owner(shared: &Shared, key: &[u8]) -> Result<Option<StreamId>> {
    let value = shared
        .db
        .get_pinned_cf(shared.cf(Cf::Reservations)?, key)
        .map_err(|e| Error::storage("reading a reservation", e))?;
    match value {
        None => Ok(None),
        Some(owner) => {
            let bytes: [u8; 16] = owner.as_ref().try_into().map_err(|_| Error::Corrupt {
                at: Location::default(),
                reason: format!("reservation owner has {} bytes", owner.len()),
            })?;
            Ok(Some(StreamId(uuid::Uuid::from_bytes(bytes))))
        }
    }
}

fn data_keys(shared: &Shared, stream: StreamId) -> Result<Vec<WrappedKey>> {
    let entries = key_store_entries(shared, Some(stream))?;
    Ok(entries.into_iter().map(|(_, key)| key).collect())
}

/// Up to `limit` entries of the key store, by stream then version: one stream's, or all.
fn key_store_entries(
    shared: &Shared,
    stream: Option<StreamId>,
) -> Result<Vec<(StreamId, WrappedKey)>> {
    let mut options = ReadOptions::default();
    let start = match stream {
        Some(stream) => {
            let (start, end) = keys::stream_prefix_range(stream);
            options.set_iterate_upper_bound(end.to_vec());
            start.to_vec()
        }
        None => Vec::new(),
    };
    let mut iter = shared.db.raw_iterator_cf_opt(shared.cf(Cf::Keys)?, options);
    iter.seek(start);
    let mut out = Vec::new();
    while let Some((key, value)) = iter.item() {
        let (stream, version) = parse_data_key(key)?;
        out.push((
            stream,
            WrappedKey {
                version,
                wrapped: value.to_vec(),
            },
        ));
        iter.next();
    }
    iter.status()
        .map_err(|e| Error::storage("reading data keys", e))?;
    Ok(out)
}

/// A key store entry's stream and version (`keys::data_key`'s layout).
pub(crate) fn parse_data_key(key: &[u8]) -> Result<(StreamId, u32)> {
    let stream = key
        .get(..16)
        .and_then(|s| s.try_into().ok())
        .map(|s| StreamId(uuid::Uuid::from_bytes(s)));
    let version = key
        .get(16..)
        .and_then(|v| <[u8; 4]>::try_from(v).ok())
        .map(u32::from_be_bytes);
    stream.zip(version).ok_or_else(|| Error::Corrupt {
        at: Location {
            stream,
            ..Location::default()
        },
        reason: format!("data key entry has a {}-byte key", key.len()),
    })
}

fn read_all(shared: &Shared, from_position: u64, limit: usize) -> Result<Vec<RecordedEvent>> {
    let mut options = ReadOptions::default();
    options.set_readahead_size(2 << 20);
    // A scan of the log must not evict the blocks that point reads keep hot.
    options.fill_cache(false);
    let mut iter = shared
        .db
        .raw_iterator_cf_opt(shared.cf(Cf::Events)?, options);
    iter.seek(keys::event_seek(from_position));
    let mut out = Vec::with_capacity(limit.min(4096));
    while out.len() < limit {
        let Some((key, value)) = iter.item() else {
            break;
        };
        let Some((position, stream, seq)) = keys::parse_event(key) else {
            return Err(Error::Corrupt {
                at: Location::default(),
                reason: format!("event key of {} bytes in the log", key.len()),
            });
        };
        let at = Location {
            stream: Some(stream),
            seq: Some(seq),
            position: Some(position),
        };
        let event = encoding::decode(value, at)?;
        check_place(&event, at)?;
        out.push(event);
        iter.next();
    }
    iter.status()
        .map_err(|e| Error::storage("scanning the log", e))?;
    Ok(out)
}

fn read_stream(
    shared: &Shared,
    stream: StreamId,
    from_seq: u64,
    limit: usize,
) -> Result<Vec<RecordedEvent>> {
    // The stream index gives each event's position (hence its key) and expected hash ...
    let (_, end) = keys::stream_prefix_range(stream);
    let mut options = ReadOptions::default();
    options.set_iterate_upper_bound(end.to_vec());
    let mut iter = shared
        .db
        .raw_iterator_cf_opt(shared.cf(Cf::Streams)?, options);
    iter.seek(keys::stream(stream, from_seq));
    let mut index = Vec::with_capacity(limit.min(4096));
    while index.len() < limit {
        let Some((key, value)) = iter.item() else {
            break;
        };
        let (owner, seq) = keys::parse_stream(key).ok_or_else(|| Error::Corrupt {
            at: Location {
                stream: Some(stream),
                ..Location::default()
            },
            reason: format!("stream index key of {} bytes", key.len()),
        })?;
        let at = Location {
            stream: Some(owner),
            seq: Some(seq),
            position: None,
        };
        let (position, hash) = keys::parse_stream_value(value).ok_or_else(|| Error::Corrupt {
            at,
            reason: format!("stream index value of {} bytes", value.len()),
        })?;
        index.push((seq, position, hash));
        iter.next();
    }
    iter.status()
        .map_err(|e| Error::storage("reading a stream index", e))?;
    drop(iter);

    // ... then the events themselves, fetched in one batched lookup (positions ascend).
    let event_keys: Vec<_> = index
        .iter()
        .map(|(seq, position, _)| keys::event(*position, stream, *seq))
        .collect();
    let values = shared
        .db
        .batched_multi_get_cf(shared.cf(Cf::Events)?, &event_keys, true);
    let mut out = Vec::with_capacity(index.len());
    for ((seq, position, hash), value) in index.into_iter().zip(values) {
        let at = Location {
            stream: Some(stream),
            seq: Some(seq),
            position: Some(position),
        };
        let value = value
            .map_err(|e| Error::storage("reading events of a stream", e))?
            .ok_or_else(|| Error::Corrupt {
                at,
                reason: "the stream index names an event that is not in the log".into(),
            })?;
        let event = encoding::decode(&value, at)?;
        check_place(&event, at)?;
        if event.hash != hash {
            return Err(Error::Corrupt {
                at,
                reason: format!(
                    "the stream index records hash {hash}, the event has {}",
                    event.hash
                ),
            });
        }
        out.push(event);
    }
    Ok(out)
}

/// An event must say it is where its key puts it.
fn check_place(event: &RecordedEvent, at: Location) -> Result<()> {
    let stored = Location {
        stream: Some(event.stream),
        seq: Some(event.seq),
        position: Some(event.position),
    };
    if stored != at {
        return Err(Error::Corrupt {
            at,
            reason: format!("the event records itself at {stored}"),
        });
    }
    Ok(())
}
