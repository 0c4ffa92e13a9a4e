//! The command pipeline every write goes through: fold the tenant's stream, decide in the
//! domain, commit the events with the decision's reservations at the seq that was folded, and
//! start over if another writer got there first (optimistic concurrency).

use chrono::{DateTime, Utc};
use domain::decision::{Decision, DomainError};
use domain::event::Event;
use domain::ids::TenantId;
use eventlog::{Commit, Committed, EventLog, Expected, Reservation, StreamAppend, StreamId};
use projections::codec;
use uuid::Uuid;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use domain::snapshot::TenantState;

use crate::app::AppState;
use crate::problem::Problem;

/// How many times a command is decided again after losing a race for its stream.
const ATTEMPTS: usize = 5;

/// One async lock per tenant with a command in flight; entries go when nobody holds them.
#[derive(Default)]
pub struct TenantLocks {
    locks: std::sync::Mutex<
        std::collections::HashMap<TenantId, std::sync::Arc<tokio::sync::Mutex<()>>>,
    >,
}

/// A tenant's turn; the tenant's entry is dropped with the last holder or waiter.
pub struct Turn<'a> {
    locks: &'a TenantLocks,
    tenant: TenantId,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl TenantLocks {
    pub async fn acquire(&self, tenant: TenantId) -> Turn<'_> {
        let lock = self
            .locks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(tenant)
            .or_default()
            .clone();
        Turn {
            locks: self,
            tenant,
            guard: Some(lock.lock_owned().await),
        }
    }

    /// Tenants with a lock entry (for tests).
    pub fn len(&self) -> usize {
        self.locks.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut locks = self.locks.locks.lock().unwrap_or_else(|e| e.into_inner());
        // Only the map holds it: no one holds or awaits this tenant's lock.
        if locks
            .get(&self.tenant)
            .is_some_and(|lock| std::sync::Arc::strong_count(lock) == 1)
        {
            locks.remove(&self.tenant);
        }
    }
}

/// A tenant's history so far: the seq it has been read to, and the tenant's state folded from
/// it, kept up to date one event at a time as the log is read (so a command never replays
/// the whole stream, however many logins and sessions it holds).
pub struct History {
    pub seq: u64,
    pub(crate) folded: Folded,
    /// The hash of the event at `seq` (the zero hash at 0): what a snapshot of this state names.
    hash: eventlog::Digest32,
    /// The seq of the last snapshot this history resumed from or copied its state for (0 for
    /// none): the next is due `snapshots::interval` events after it.
    snapshot_at: u64,
    /// The last snapshot's size in bytes (0 until known): its writing stores it here.
    snapshot_size: Arc<AtomicUsize>,
    /// Bytes of event data folded in since the last snapshot (or since seq 1 without one).
    grown: usize,
}

/// The state folded from a stream so far.
pub(crate) enum Folded {
    Empty,
    Msp(domain::msp::MspTenant),
    Customer(Box<domain::customer::CustomerTenant>),
    /// An event could not be folded: every command on the tenant answers this, as a replay
    /// of the whole stream would.
    Corrupt(DomainError),
}

impl History {
    pub fn new() -> History {
        History {
            seq: 0,
            folded: Folded::Empty,
            hash: eventlog::ZERO_HASH,
            snapshot_at: 0,
            snapshot_size: Arc::default(),
            grown: 0,
        }
    }

    /// An estimate of the state's size in bytes, for the cache's bound: its last snapshot's
    /// encoded size plus the data of every event folded in since (an event that replaces part
    /// of the state counts as growth, so the estimate errs high until the next snapshot).
    /// Encoded JSON is close to what the state takes in memory.
    pub fn weight(&self) -> usize {
        self.snapshot_size
            .load(Ordering::Relaxed)
            .saturating_add(self.grown)
    }

    /// Takes the state a snapshot holds, if it decodes (whether it matches the stream is the
    /// caller's to check).
    fn resume(&mut self, snapshot: eventlog::Snapshot) -> Result<(), String> {
        self.folded = match domain::snapshot::decode(&snapshot.data).map_err(|e| e.to_string())? {
            domain::snapshot::TenantState::Msp(tenant) => Folded::Msp(tenant),
            domain::snapshot::TenantState::Customer(tenant) => Folded::Customer(tenant),
        };
        self.seq = snapshot.seq;
        self.hash = snapshot.hash;
        self.snapshot_at = snapshot.seq;
        self.snapshot_size = Arc::new(AtomicUsize::new(snapshot.data.len()));
        self.grown = 0;
        Ok(())
    }

    /// Whether enough events were folded since the last snapshot for a new one.
    pub fn snapshot_due(&self) -> bool {
        let size = self.snapshot_size.load(Ordering::Relaxed);
        self.seq
            >= self
                .snapshot_at
                .saturating_add(crate::snapshots::interval(size))
    }

    /// A copy of the state folded so far, for a snapshot of it, if it is a tenant's (not
    /// empty, not corrupt). Either way the next is due an interval from here.
    pub fn take_snapshot(&mut self, stream: StreamId) -> Option<crate::snapshots::Pending> {
        self.snapshot_at = self.seq;
        // The weight so far stands for the snapshot's size until its writing stores the size
        // it found (or for good, should the writing fail).
        self.snapshot_size.store(self.weight(), Ordering::Relaxed);
        self.grown = 0;
        let state = match &self.folded {
            Folded::Msp(tenant) => TenantState::Msp(tenant.clone()),
            Folded::Customer(tenant) => TenantState::Customer(tenant.clone()),
            Folded::Empty | Folded::Corrupt(_) => return None,
        };
        Some(crate::snapshots::Pending {
            stream,
            seq: self.seq,
            hash: self.hash,
            state,
            size: self.snapshot_size.clone(),
        })
    }

    /// Whether the state takes `event` in unchanged (a login, a session), so that it need not
    /// be decoded: the domain names those types.
    fn passes_over(&self, event: &eventlog::RecordedEvent) -> bool {
        let (kind, version) = (event.event_type.as_str(), event.schema_version);
        match &self.folded {
            Folded::Msp(_) => domain::msp::MspTenant::ignores(kind, version),
            Folded::Customer(_) => domain::customer::CustomerTenant::ignores(kind, version),
            Folded::Empty | Folded::Corrupt(_) => false,
        }
    }

    /// Folds in the next event, exactly as the domain's `replay` would have.
    pub(crate) fn fold(&mut self, event: &domain::event::Event) {
        let folded = std::mem::replace(&mut self.folded, Folded::Empty);
        self.folded = match folded {
            Folded::Empty => match event {
                Event::MspTenantCreated(_) => {
                    match domain::msp::MspTenant::replay(std::iter::once(event)) {
                        Ok(Some(tenant)) => Folded::Msp(tenant),
                        Ok(None) => Folded::Empty,
                        Err(e) => Folded::Corrupt(e),
                    }
                }
                Event::CustomerTenantOpened(_) => {
                    match domain::customer::CustomerTenant::replay(std::iter::once(event)) {
                        Ok(Some(tenant)) => Folded::Customer(Box::new(tenant)),
                        Ok(None) => Folded::Empty,
                        Err(e) => Folded::Corrupt(e),
                    }
                }
                other => Folded::Corrupt(DomainError::Corrupt(format!(
                    "a tenant stream starts with {}",
                    other.type_name()
                ))),
            },
            Folded::Msp(mut tenant) => match tenant.apply(event) {
                Ok(()) => Folded::Msp(tenant),
                Err(e) => Folded::Corrupt(e),
            },
            Folded::Customer(mut tenant) => match tenant.apply(event) {
                Ok(()) => Folded::Customer(tenant),
                Err(e) => Folded::Corrupt(e),
            },
            corrupt @ Folded::Corrupt(_) => corrupt,
        };
    }
}

impl Default for History {
    fn default() -> History {
        History::new()
    }
}

/// Folded states of recently commanded tenants, so that a command reads, decodes and folds
/// only the events written since the last one. Bounded by count and by the states' estimated
/// size ([`History::weight`]): when either is reached, the tenants commanded longest ago leave
/// (they come back from their snapshots). Any entry may go at any time.
pub struct HistoryCache {
    entries: std::sync::Mutex<Entries>,
    /// The most the held histories may weigh together, in bytes.
    budget: usize,
}

#[derive(Default)]
struct Entries {
    /// Each history with the tick of its last use and its weight when put.
    histories: std::collections::HashMap<TenantId, Cached>,
    tick: u64,
    /// The sum of the held histories' weights.
    weight: usize,
}

struct Cached {
    history: History,
    used: u64,
    weight: usize,
}

/// Tenants whose histories are kept at most.
const CACHED_HISTORIES: usize = 256;

/// What the held histories may weigh together (see [`History::weight`]): 256 MiB of encoded
/// state, ~500,000 directory users. A customer of 10,000 users weighs ~5 MiB.
pub const CACHED_HISTORY_BYTES: usize = 256 << 20;

impl Default for HistoryCache {
    fn default() -> HistoryCache {
        HistoryCache::with_budget(CACHED_HISTORY_BYTES)
    }
}

impl HistoryCache {
    /// A cache whose histories weigh `budget` bytes at most together.
    pub fn with_budget(budget: usize) -> HistoryCache {
        HistoryCache {
            entries: Default::default(),
            budget,
        }
    }

    fn take(&self, tenant: TenantId) -> Option<History> {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let cached = entries.histories.remove(&tenant)?;
        entries.weight -= cached.weight;
        Some(cached.history)
    }

    fn put(&self, tenant: TenantId, history: History) {
        let weight = history.weight();
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.tick += 1;
        let used = entries.tick;
        if let Some(held) = entries.histories.remove(&tenant) {
            entries.weight -= held.weight;
        }
        if weight > self.budget {
            // Heavier than the whole cache: it is resumed from its snapshot each time.
            return;
        }
        while entries.histories.len() >= CACHED_HISTORIES
            || entries.weight.saturating_add(weight) > self.budget
        {
            // A scan of at most a few hundred entries, only when one must leave.
            let oldest = entries
                .histories
                .iter()
                .min_by_key(|(_, cached)| cached.used)
                .map(|(tenant, _)| *tenant);
            let Some(gone) = oldest.and_then(|oldest| entries.histories.remove(&oldest)) else {
                break;
            };
            entries.weight -= gone.weight;
        }
        entries.weight += weight;
        entries.histories.insert(
            tenant,
            Cached {
                history,
                used,
                weight,
            },
        );
    }

    /// How many histories are held, and their weight together.
    pub fn held(&self) -> (usize, usize) {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        (entries.histories.len(), entries.weight)
    }

    /// Whether `tenant`'s history is held.
    #[cfg(test)]
    fn holds(&self, tenant: TenantId) -> bool {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .histories
            .contains_key(&tenant)
    }
}

/// Brings `history` of `tenant` up to the end of its stream: from the stream's snapshot (or
/// seq 1) if the history is new, and has a new snapshot written once enough events were
/// folded since the last one (in a task of its own: the command waits only for the copy).
async fn catch_up(
    state: &AppState,
    tenant: TenantId,
    history: &mut History,
) -> Result<(), Problem> {
    let cold = history.seq == 0;
    let from = if cold {
        match resume(state.log.as_ref(), tenant, history).await {
            Resumed::Snapshot => "snapshot",
            Resumed::Start => "start",
            Resumed::Unusable(reason) => {
                tracing::info!(%tenant, %reason, "the tenant's snapshot is not used; folding its whole stream");
                state
                    .metrics
                    .count(crate::metrics::Counter::Snapshots, "unusable");
                "start"
            }
        }
    } else {
        "cache"
    };
    let before = history.seq;
    fold_from_log::<_, Problem>(state.log.as_ref(), tenant, history, |_| true).await?;
    if cold {
        state
            .metrics
            .count(crate::metrics::Counter::HistoryFolds, from);
        state.metrics.add(
            crate::metrics::Counter::HistoryEvents,
            from,
            history.seq - before,
        );
    }
    if history.snapshot_due()
        && let Some(pending) = history.take_snapshot(StreamId(tenant.0))
    {
        state
            .snapshot_writes
            .spawn(state.log.clone(), state.metrics.clone(), tenant, pending);
    }
    Ok(())
}

/// Where the fold of a new history begins.
#[derive(Debug, PartialEq, Eq)]
pub enum Resumed {
    /// At the stream's snapshot.
    Snapshot,
    /// At seq 1: the stream has no snapshot (or it could not be read).
    Start,
    /// At seq 1: the stream's snapshot was written by a build with another state, or does not
    /// match the stored event it names.
    Unusable(String),
}

/// Starts a new `history` of `tenant` from its stream's snapshot, if it has a usable one.
pub async fn resume<L: EventLog>(log: &L, tenant: TenantId, history: &mut History) -> Resumed {
    let stream = StreamId(tenant.0);
    let snapshot = match log.snapshot(stream).await {
        Ok(Some(snapshot)) => snapshot,
        Ok(None) => return Resumed::Start,
        Err(e) => {
            tracing::warn!(%tenant, error = %e, "the tenant's snapshot could not be read; folding its whole stream");
            return Resumed::Start;
        }
    };
    // The log stored it only for the event it names; checked again here, as it costs one read
    // and a snapshot that does not match must never stand for the stream.
    let (seq, hash) = (snapshot.seq, snapshot.hash);
    let matches = match log.read_stream(stream, seq, 1).await {
        Ok(events) => events
            .first()
            .is_some_and(|e| e.seq == seq && e.hash == hash),
        Err(_) => false,
    };
    let resumed = if matches {
        history.resume(snapshot)
    } else {
        Err(format!("no stored event at seq {seq} has its hash"))
    };
    match resumed {
        Ok(()) => Resumed::Snapshot,
        Err(reason) => {
            // A newer snapshot replaces it once the stream has grown past it.
            *history = History {
                snapshot_at: seq,
                ..History::new()
            };
            Resumed::Unusable(reason)
        }
    }
}

/// Events read from the log at a time while folding a history: a tenant with millions of
/// events (every workstation login is one) is folded in bounded memory.
const HISTORY_PAGE: usize = 4096;

/// Folds `tenant`'s events after `history.seq` into it, in pages, up to the end of the
/// stream or the first event `wanted` refuses. Events of a type the state takes in unchanged
/// (logins, sessions: most of a busy customer's stream) are not decoded.
pub async fn fold_from_log<L: EventLog, E>(
    log: &L,
    tenant: TenantId,
    history: &mut History,
    wanted: impl Fn(&eventlog::RecordedEvent) -> bool,
) -> Result<(), E>
where
    E: From<eventlog::Error> + From<domain::event::DecodeError>,
{
    loop {
        let page = log
            .read_stream(StreamId(tenant.0), history.seq + 1, HISTORY_PAGE)
            .await?;
        for event in &page {
            if !wanted(event) {
                return Ok(());
            }
            if !history.passes_over(event) {
                history.fold(&codec::decode(event)?);
                history.grown = history.grown.saturating_add(event.data.len());
            }
            history.seq = event.seq;
            history.hash = event.hash;
        }
        if page.len() < HISTORY_PAGE {
            return Ok(());
        }
    }
}

/// An MSP tenant's state from its history; `NotFound` if the stream is empty.
pub fn fold_msp(history: &History) -> Result<&domain::msp::MspTenant, DomainError> {
    match &history.folded {
        Folded::Msp(tenant) => Ok(tenant),
        Folded::Empty => Err(DomainError::NotFound("tenant")),
        Folded::Customer(_) => Err(DomainError::Corrupt(
            "an MSP stream starts with CustomerTenantOpened".to_owned(),
        )),
        Folded::Corrupt(error) => Err(error.clone()),
    }
}

/// A customer tenant's state from its history; `NotFound` if the stream is empty.
pub fn fold_customer(history: &History) -> Result<&domain::customer::CustomerTenant, DomainError> {
    match &history.folded {
        Folded::Customer(tenant) => Ok(tenant.as_ref()),
        Folded::Empty => Err(DomainError::NotFound("tenant")),
        Folded::Msp(_) => Err(DomainError::Corrupt(
            "a customer stream starts with MspTenantCreated".to_owned(),
        )),
        Folded::Corrupt(error) => Err(error.clone()),
    }
}

/// Runs `look` on the tenant's current history, from the cache (caught up with the log),
/// holding the tenant's turn only while it runs: for reads that need what only the log has
/// (a sealed verifier), without decoding the whole stream each time.
pub async fn with_history<T>(
    state: &AppState,
    tenant: TenantId,
    look: impl FnOnce(&History) -> T,
) -> Result<T, Problem> {
    let _turn = state.tenant_locks.acquire(tenant).await;
    let mut history = state.histories.take(tenant).unwrap_or_default();
    let caught_up = catch_up(state, tenant, &mut history).await;
    let answer = caught_up.map(|()| look(&history));
    state.histories.put(tenant, history);
    answer
}

/// Decides `command` on the MSP tenant `tenant` and commits it, as `actor`.
pub async fn on_msp(
    state: &AppState,
    tenant: TenantId,
    actor: &str,
    command: domain::msp::MspCommand,
) -> Result<Option<Committed>, Problem> {
    let (committed, _) = execute(state, tenant, actor, Utc::now(), |history| {
        domain::msp::decide(Some(fold_msp(history)?), command.clone())
    })
    .await?;
    Ok(committed)
}

/// Decides `command` on the customer tenant `tenant` and commits it, as `actor`.
pub async fn on_customer(
    state: &AppState,
    tenant: TenantId,
    actor: &str,
    command: domain::customer::CustomerCommand,
) -> Result<Option<Committed>, Problem> {
    let (committed, _) = execute(state, tenant, actor, Utc::now(), |history| {
        domain::customer::decide(Some(fold_customer(history)?), command.clone())
    })
    .await?;
    Ok(committed)
}

/// Runs `decide` against the tenant's current history and commits what it decides; answers
/// the commit (none if nothing was to be written) and the decision. A refusal in the decision
/// is returned after its events are committed.
pub async fn execute(
    state: &AppState,
    tenant: TenantId,
    actor: &str,
    now: DateTime<Utc>,
    decide: impl Fn(&History) -> Result<Decision, DomainError>,
) -> Result<(Option<Committed>, Decision), Problem> {
    execute_plan(state, tenant, actor, now, |history| {
        decide(history).map(Plan::on_tenant)
    })
    .await
}

/// What one command writes: its decision on the tenant whose history was folded, and what it
/// writes to other streams in the same atomic commit (a customer tenant opened or deleted with
/// its MSP's record of it).
pub struct Plan {
    pub decision: Decision,
    /// Appends to new streams, which must not exist yet.
    pub new_streams: Vec<(TenantId, Decision)>,
    /// Streams deleted for good with this commit.
    pub deleted: Vec<TenantId>,
    /// Wrapped data keys stored for the tenant with this commit (never in the log).
    pub keys: Vec<eventlog::WrappedKey>,
    /// Blobs (branding images) stored for the tenant with this commit.
    pub blobs: Vec<Vec<u8>>,
    /// The tenant's blobs removed with this commit (images nothing shows any more).
    pub drop_blobs: Vec<eventlog::BlobId>,
}

impl Plan {
    pub fn on_tenant(decision: Decision) -> Plan {
        Plan {
            decision,
            new_streams: Vec::new(),
            deleted: Vec::new(),
            keys: Vec::new(),
            blobs: Vec::new(),
            drop_blobs: Vec::new(),
        }
    }
}

fn stream_append(
    tenant: TenantId,
    expected: Expected,
    decision: &Decision,
    actor: &str,
    now: DateTime<Utc>,
) -> Result<StreamAppend, Problem> {
    let mut append = StreamAppend::new(StreamId(tenant.0), expected);
    for event in &decision.events {
        append = append.event(
            codec::encode(event, Uuid::now_v7(), now, actor).map_err(|e| Problem::internal(&e))?,
        );
    }
    for claim in &decision.claims {
        append = append.reserve(Reservation::new(claim.scope.clone(), claim.key.clone()));
    }
    for claim in &decision.releases {
        append = append.release(Reservation::new(claim.scope.clone(), claim.key.clone()));
    }
    Ok(append)
}

/// [`execute`] for commands that also write other streams: `plan` decides on the tenant's
/// history, and everything it plans commits atomically, or nothing does.
pub async fn execute_plan(
    state: &AppState,
    tenant: TenantId,
    actor: &str,
    now: DateTime<Utc>,
    plan: impl Fn(&History) -> Result<Plan, DomainError>,
) -> Result<(Option<Committed>, Decision), Problem> {
    // Commands on one tenant queue here instead of racing for its stream: under load, every
    // racer but one would fold and decide for nothing. The retries below remain for writers
    // this lock does not see (records, other processes).
    let _turn = state.tenant_locks.acquire(tenant).await;
    for _ in 0..ATTEMPTS {
        // Holding the tenant's turn, this command alone uses (and puts back) its cached history.
        let mut history = state.histories.take(tenant).unwrap_or_default();
        catch_up(state, tenant, &mut history).await?;
        let planned = plan(&history);
        let seq = history.seq;
        state.histories.put(tenant, history);
        let Plan {
            decision,
            new_streams,
            deleted,
            keys,
            blobs,
            drop_blobs,
        } = planned?;
        if decision.events.is_empty() && new_streams.is_empty() && deleted.is_empty() {
            if let Some(refusal) = decision.refusal {
                return Err(refusal.into());
            }
            return Ok((None, decision));
        }
        let expected = if seq == 0 {
            Expected::NoStream
        } else {
            Expected::At(seq)
        };
        let mut append = stream_append(tenant, expected, &decision, actor, now)?;
        for key in keys {
            append = append.key(key);
        }
        for blob in blobs {
            append = append.blob(blob);
        }
        for id in drop_blobs {
            append = append.drop_blob(id);
        }
        let mut commit = Commit::new().append(append);
        for (other, other_decision) in &new_streams {
            commit = commit.append(stream_append(
                *other,
                Expected::NoStream,
                other_decision,
                actor,
                now,
            )?);
        }
        for gone in &deleted {
            commit = commit.delete(StreamId(gone.0));
        }
        match state.log.commit(commit).await {
            Ok(committed) => {
                state
                    .metrics
                    .count(crate::metrics::Counter::Commits, "command");
                if !deleted.is_empty() {
                    // The deleted tenants' keys left the key store: they leave its copy too.
                    state.refresh_key_mirror().await;
                }
                if let Some(refusal) = decision.refusal {
                    return Err(refusal.into());
                }
                return Ok((Some(committed), decision));
            }
            // Someone else wrote first: decide again on what they wrote.
            Err(eventlog::Error::WrongExpectedSeq { .. }) => continue,
            Err(eventlog::Error::ReservationTaken { reservation }) => {
                return Err(
                    DomainError::Conflict(format!("{} is already taken", reservation.key)).into(),
                );
            }
            Err(eventlog::Error::StreamDeleted { .. }) => {
                return Err(Problem::not_found("no such tenant"));
            }
            Err(e) => return Err(Problem::internal(&e)),
        }
    }
    Err(DomainError::Conflict("the tenant is changing too fast; try again".into()).into())
}

/// Appends events that no invariant of the tenant's state depends on (a session started or
/// ended) without folding its history: at the stream's end, whatever it is.
pub async fn record(
    state: &AppState,
    tenant: TenantId,
    actor: &str,
    now: DateTime<Utc>,
    decision: Decision,
) -> Result<Committed, Problem> {
    let append = stream_append(tenant, Expected::Any, &decision, actor, now)?;
    match state.log.commit(Commit::from(append)).await {
        Ok(committed) => {
            state
                .metrics
                .count(crate::metrics::Counter::Commits, "record");
            Ok(committed)
        }
        // The tenant was deleted meanwhile.
        Err(eventlog::Error::StreamDeleted { .. }) => Err(Problem::not_found("no such tenant")),
        Err(e) => Err(Problem::internal(&e)),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The first event of an MSP tenant's stream.
    pub(crate) fn msp_created(tenant: TenantId) -> Event {
        domain::event::MspTenantCreated {
            tenant_id: tenant,
            name: "acme".into(),
            display_name: "Acme".into(),
            host_label: "acme".into(),
            admin_user_id: domain::ids::UserId(Uuid::now_v7()),
            admin_email: "alice@acme.example".into(),
        }
        .into()
    }

    #[test]
    fn the_history_cache_lets_the_tenant_used_longest_ago_go() {
        let cache = HistoryCache::default();
        let tenant = |n: usize| TenantId(Uuid::from_u128(n as u128 + 1));
        let with_seq = |seq: u64| History {
            seq,
            ..History::new()
        };
        for n in 0..CACHED_HISTORIES {
            cache.put(tenant(n), with_seq(n as u64));
        }
        // Tenant 0 is used again (taken and put back, as a command does): tenant 1 is now
        // the one used longest ago.
        let history = cache.take(tenant(0)).unwrap();
        assert_eq!(history.seq, 0);
        cache.put(tenant(0), history);
        cache.put(tenant(CACHED_HISTORIES), with_seq(1_000));
        assert!(cache.holds(tenant(0)));
        assert!(!cache.holds(tenant(1)), "the least recently used left");
        for n in 2..=CACHED_HISTORIES {
            assert!(cache.holds(tenant(n)), "tenant {n} stays");
        }
        // Putting back a tenant already held takes no one's place.
        cache.put(tenant(2), with_seq(2));
        assert!((2..=CACHED_HISTORIES).all(|n| cache.holds(tenant(n))));
        assert_eq!(cache.take(tenant(CACHED_HISTORIES)).unwrap().seq, 1_000);
    }

    /// Heavy histories push out those used longest ago before the count is reached; one
    /// heavier than the whole budget is not kept, and pushes nobody out.
    #[test]
    fn the_history_cache_keeps_its_histories_within_its_budget() {
        let cache = HistoryCache::with_budget(1_000);
        let tenant = |n: u128| TenantId(Uuid::from_u128(n + 1));
        let weighing = |grown: usize| History {
            grown,
            ..History::new()
        };
        cache.put(tenant(0), weighing(400));
        cache.put(tenant(1), weighing(400));
        assert_eq!(cache.held(), (2, 800));
        let used = cache.take(tenant(0)).unwrap();
        assert_eq!(cache.held(), (1, 400), "a history taken out weighs nothing");
        cache.put(tenant(0), used);
        cache.put(tenant(2), weighing(300));
        assert!(!cache.holds(tenant(1)), "the one used longest ago left");
        assert!(cache.holds(tenant(0)) && cache.holds(tenant(2)));
        assert_eq!(cache.held(), (2, 700));

        // Put back heavier: its old weight is not counted as well.
        let mut heavier = cache.take(tenant(2)).unwrap();
        heavier.grown = 600;
        cache.put(tenant(2), heavier);
        assert_eq!(cache.held(), (2, 1_000));
        cache.put(tenant(2), weighing(600));
        assert_eq!(
            cache.held(),
            (2, 1_000),
            "a tenant put while held replaces itself"
        );

        cache.put(tenant(3), weighing(1_001));
        assert!(!cache.holds(tenant(3)));
        assert_eq!(cache.held(), (2, 1_000));
        cache.put(tenant(4), weighing(1_000));
        assert!(cache.holds(tenant(4)));
        assert_eq!(cache.held(), (1, 1_000), "everyone else left for it");
    }

    /// A history weighs the data of the events it folded in; those it passes over (logins)
    /// add nothing, and a copy for a snapshot carries the weight over.
    #[tokio::test]
    async fn a_history_weighs_what_it_folded_in() {
        use domain::event::{MspUserAdded, SessionEnded};
        let dir = tempfile::tempdir().unwrap();
        let log = eventlog::RocksLog::open(dir.path()).unwrap();
        let tenant = TenantId(Uuid::now_v7());
        let events: Vec<Event> = vec![
            msp_created(tenant),
            SessionEnded {
                session_id: Uuid::now_v7(),
            }
            .into(),
            MspUserAdded {
                user_id: domain::ids::UserId(Uuid::now_v7()),
                email: "bob@acme.example".into(),
                first_name: None,
                last_name: None,
            }
            .into(),
        ];
        let new: Vec<_> = events
            .iter()
            .map(|e| codec::encode(e, Uuid::now_v7(), Utc::now(), "test").unwrap())
            .collect();
        let folded_in = new[0].data.len() + new[2].data.len();
        log.append(StreamAppend::new(StreamId(tenant.0), Expected::NoStream).events(new))
            .await
            .unwrap();

        let mut history = History::new();
        fold_from_log::<_, Problem>(&log, tenant, &mut history, |_| true)
            .await
            .unwrap();
        assert_eq!(history.seq, 3);
        assert_eq!(history.weight(), folded_in);
        let pending = history.take_snapshot(StreamId(tenant.0)).unwrap();
        assert_eq!(
            history.weight(),
            folded_in,
            "until the write finds the size"
        );
        pending.size.store(123, Ordering::Relaxed);
        assert_eq!(history.weight(), 123);
    }

    /// The next snapshot is due an interval after the last copy, by the size its writing
    /// found; a state that is no tenant's gives no copy but waits as long.
    #[test]
    fn a_snapshot_is_due_an_interval_after_the_last_by_its_size() {
        use crate::snapshots::{SNAPSHOT_BYTES_PER_EVENT, SNAPSHOT_EVERY};
        let tenant = TenantId(Uuid::now_v7());
        let stream = StreamId(tenant.0);
        let mut history = History::new();
        history.fold(&msp_created(tenant));
        history.seq = SNAPSHOT_EVERY - 1;
        assert!(!history.snapshot_due());
        history.seq = SNAPSHOT_EVERY;
        assert!(history.snapshot_due());
        let pending = history.take_snapshot(stream).unwrap();
        assert_eq!(pending.seq, SNAPSHOT_EVERY);
        assert!(matches!(&pending.state, TenantState::Msp(t) if t.id == tenant));
        assert!(!history.snapshot_due(), "not again at the same seq");
        history.seq = 2 * SNAPSHOT_EVERY;
        assert!(history.snapshot_due());

        // The write found the state large: the next waits until the events since are worth
        // SNAPSHOT_BYTES_PER_EVENT bytes of it each.
        let large = usize::try_from(10 * SNAPSHOT_EVERY * SNAPSHOT_BYTES_PER_EVENT).unwrap();
        pending.size.store(large, Ordering::Relaxed);
        assert!(!history.snapshot_due());
        history.seq = 11 * SNAPSHOT_EVERY - 1;
        assert!(!history.snapshot_due());
        history.seq = 11 * SNAPSHOT_EVERY;
        assert!(history.snapshot_due());

        // A corrupt state gives nothing to write, and is not asked again at once.
        history.folded = Folded::Corrupt(DomainError::Corrupt("test".into()));
        assert!(history.take_snapshot(stream).is_none());
        assert!(!history.snapshot_due());
    }

    #[tokio::test]
    async fn commands_on_one_tenant_take_turns_and_leave_no_entry_behind() {
        let locks = std::sync::Arc::new(TenantLocks::default());
        let (a, b) = (TenantId(Uuid::from_u128(1)), TenantId(Uuid::from_u128(2)));
        let first = locks.acquire(a).await;
        // Another tenant is not held up.
        let other = locks.acquire(b).await;
        drop(other);
        let waiter = {
            let locks = locks.clone();
            tokio::spawn(async move {
                let _turn = locks.acquire(a).await;
            })
        };
        tokio::task::yield_now().await;
        assert!(
            !waiter.is_finished(),
            "the second command waits for the first"
        );
        drop(first);
        waiter.await.unwrap();
        assert!(locks.is_empty(), "{} entries left", locks.len());
    }

    #[test]
    fn folding_event_by_event_gives_what_a_replay_of_the_stream_gives() {
        use domain::customer::CustomerTenant;
        use domain::msp::MspTenant;
        let mut workload = projections::workload::Workload::new(7);
        let mut streams: std::collections::HashMap<TenantId, Vec<domain::event::Event>> =
            std::collections::HashMap::new();
        for _ in 0..3_000 {
            for (tenant, events) in workload.action().appends {
                streams.entry(tenant).or_default().extend(events);
            }
        }
        let (mut msps, mut customers) = (0, 0);
        for events in streams.values() {
            let mut history = History::new();
            for (i, event) in events.iter().enumerate() {
                history.fold(event);
                let so_far = &events[..=i];
                match MspTenant::replay(so_far) {
                    Ok(Some(msp)) => assert_eq!(fold_msp(&history), Ok(&msp)),
                    _ => assert_eq!(
                        fold_customer(&history).cloned(),
                        CustomerTenant::replay(so_far).map(Option::unwrap)
                    ),
                }
            }
            match history.folded {
                Folded::Msp(_) => msps += 1,
                Folded::Customer(_) => customers += 1,
                _ => panic!("a generated stream did not fold"),
            }
        }
        assert!(
            msps > 0 && customers > 0,
            "{msps} MSPs, {customers} customers"
        );

        // A stream that does not start with a tenant's first event is corrupt from then on.
        let mut history = History::new();
        let customer = streams
            .values()
            .find(|events| matches!(events[0], domain::event::Event::CustomerTenantOpened(_)))
            .unwrap();
        history.fold(&customer[1]);
        assert!(matches!(
            fold_customer(&history),
            Err(DomainError::Corrupt(_))
        ));
        history.fold(&customer[0]);
        assert!(matches!(
            fold_customer(&history),
            Err(DomainError::Corrupt(_))
        ));
    }
}
