//! Wakes agents long-polling the change feed, per tenant, without polling: one task follows
//! the log's commit notifications, reads the new events' envelopes (which tenant, which seq),
//! waits until the read models have them, and then tells the waiters of those tenants only.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use eventlog::{EventLog, RocksLog};
use projections::Progress;
use tokio::sync::watch;
use uuid::Uuid;

/// Per-tenant watches of the newest projected seq, for tenants someone waits on, and the last
/// pages answered: a thousand agents woken by one commit ask for the same page, and then all
/// come back for the (empty) page after it; each is read and serialised once, by whichever
/// request asks first, while the others wait for that read.
#[derive(Default)]
pub struct Feed {
    tenants: Mutex<HashMap<Uuid, watch::Sender<u64>>>,
    pages: Mutex<HashMap<PageKey, CachedPage>>,
}

/// A page as answered: its serialised body, and whether it had nothing new in it.
pub type Page = (Arc<[u8]>, bool);

/// A page being read (or read) at a generation: the first request fills it.
type CachedPage = (u64, Arc<tokio::sync::OnceCell<Page>>);

/// A page of one tenant's feed: its cursor and limit.
type PageKey = (Uuid, Option<u64>, usize);

/// Pages kept at most; beyond it, the cache starts over.
const CACHED_PAGES: usize = 10_000;

/// How long the feed task waits for the read models before it logs that it still waits.
const PATIENCE: Duration = Duration::from_secs(30);

/// Waits until the read models have `position`, however long that takes: agents woken
/// before would read pages without the commit and keep them under the new generation, and
/// nothing would wake them again once the read models had it. True once they have it, or
/// once a projector has stopped (nothing more will come: wake the agents with what there
/// is); false if `stop` turned true first.
async fn projected(progress: &Progress, position: u64, stop: &mut watch::Receiver<bool>) -> bool {
    loop {
        tokio::select! {
            reached = progress.wait_for(position, PATIENCE) => {
                if reached || progress.stopped() {
                    return true;
                }
                tracing::warn!(position, "the change feed is waiting for the read models to reach a commit");
            }
            _ = stop.wait_for(|s| *s) => return false,
        }
    }
}

/// Adds to `seqs` each tenant's newest seq among `events` that can change its feed.
fn feed_seqs(events: &[eventlog::RecordedEvent], seqs: &mut HashMap<Uuid, u64>) {
    for event in events {
        // Audit-only records (`projections::NOT_IN_FEED`) wake no agent.
        if projections::NOT_IN_FEED.contains(&event.event_type.as_str()) {
            continue;
        }
        let seq = seqs.entry(event.stream.0).or_default();
        *seq = (*seq).max(event.seq);
    }
}

impl Feed {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, watch::Sender<u64>>> {
        self.tenants.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A receiver that changes when events of `tenant` newer than the ones projected now are
    /// projected.
    pub fn watch(&self, tenant: Uuid) -> watch::Receiver<u64> {
        let mut tenants = self.lock();
        if let Some(sender) = tenants.get(&tenant) {
            return sender.subscribe();
        }
        // A new watch starts its generations at 0 again: pages cached under an older watch
        // of this tenant must not pass for current.
        self.pages
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(t, _, _), _| *t != tenant);
        tenants
            .entry(tenant)
            .or_insert_with(|| watch::channel(0).0)
            .subscribe()
    }

    /// The page for `key` at `generation` (the tenant's watch value before it is read): read
    /// by `read` if no request has read it at this generation yet, else what that request
    /// read (waiting for it if it is still reading). A later commit of the tenant changes the
    /// generation, so a page, empty ones included, never outlives what it shows. A failed
    /// read is not kept: the next request reads again.
    pub async fn page<E, F>(&self, key: PageKey, generation: u64, read: F) -> Result<Page, E>
    where
        F: std::future::Future<Output = Result<Page, E>>,
    {
        let cell = {
            let mut pages = self.pages.lock().unwrap_or_else(|e| e.into_inner());
            match pages.get(&key) {
                Some((made, cell)) if *made == generation => cell.clone(),
                _ => {
                    if pages.len() >= CACHED_PAGES {
                        pages.clear();
                    }
                    let cell = Arc::new(tokio::sync::OnceCell::new());
                    pages.insert(key, (generation, cell.clone()));
                    cell
                }
            }
        };
        cell.get_or_try_init(|| read).await.cloned()
    }

    /// How many long-polls are waiting now, on all tenants.
    pub fn waiting(&self) -> usize {
        self.lock().values().map(|s| s.receiver_count()).sum()
    }

    /// Tells the feed that `events`, just written, are projected, before the write is
    /// answered: the writer's next read of the feed (an agent syncing right after a change
    /// it made, a test) must not be answered a page cached before them. The feed task also
    /// sees them, later, and then wakes nobody twice.
    pub fn projected(&self, events: &[eventlog::RecordedEvent]) {
        let mut seqs = HashMap::new();
        feed_seqs(events, &mut seqs);
        if !seqs.is_empty() {
            self.notify(&seqs);
        }
    }

    /// Tells the waiters of each tenant in `seqs` that its events up to that seq are projected;
    /// forgets tenants nobody waits on any more. A tenant's generation only rises: the feed
    /// task catching up with a batch older than a settled write must not bring back the
    /// generation its pages were cached under.
    fn notify(&self, seqs: &HashMap<Uuid, u64>) {
        let mut tenants = self.lock();
        for (tenant, seq) in seqs {
            if let Some(sender) = tenants.get(tenant) {
                sender.send_if_modified(|newest| {
                    let newer = *seq > *newest;
                    if newer {
                        *newest = *seq;
                    }
                    newer
                });
            }
        }
        tenants.retain(|_, sender| sender.receiver_count() > 0);
    }

    /// Follows the log from its current head until `stop` turns true.
    pub async fn run(
        self: Arc<Self>,
        log: Arc<RocksLog>,
        progress: Progress,
        cache: Arc<crate::cache::Cache>,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut heads = log.subscribe();
        let mut next = log.head_position() + 1;
        loop {
            tokio::select! {
                changed = heads.changed() => if changed.is_err() { return },
                _ = stop.wait_for(|s| *s) => return,
            }
            let head = *heads.borrow_and_update();
            let mut seqs: HashMap<Uuid, u64> = HashMap::new();
            let mut events = Vec::new();
            while next <= head {
                match log.read_all(next, 10_000).await {
                    Ok(page) if page.is_empty() => break,
                    Ok(page) => {
                        if let Some(last) = page.last() {
                            next = last.position + 1;
                        }
                        feed_seqs(&page, &mut seqs);
                        events.extend(page.into_iter().map(|mut e| {
                            // Only the stream and type matter to the cache.
                            e.data = Vec::new();
                            e
                        }));
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "the change feed could not read the log");
                        break;
                    }
                }
            }
            // Holes left by deleted tenants: continue after the head.
            next = next.max(head + 1);
            if seqs.is_empty() {
                continue;
            }
            if !projected(&progress, head, &mut stop).await {
                return;
            }
            // A backstop for writers that did not settle: what changed leaves the cache.
            cache.forget_after(&events);
            self.notify(&seqs);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn recorded(tenant: Uuid, seq: u64, event_type: &str) -> eventlog::RecordedEvent {
        eventlog::RecordedEvent {
            id: Uuid::nil(),
            stream: eventlog::StreamId(tenant),
            seq,
            position: seq,
            event_type: event_type.into(),
            schema_version: 1,
            occurred_at: chrono::DateTime::from_timestamp(0, 0).unwrap(),
            actor: String::new(),
            data: Vec::new(),
            prev_hash: eventlog::Digest32([0; 32]),
            hash: eventlog::Digest32([0; 32]),
        }
    }

    #[test]
    fn audit_records_wake_no_agent_and_directory_changes_do() {
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let mut seqs = HashMap::new();
        feed_seqs(
            &[
                recorded(a, 7, "DirectoryUserCreated"),
                recorded(a, 8, "DesktopLoginRecorded"),
                recorded(b, 3, "SessionStarted"),
                recorded(b, 4, "ElevationRecorded"),
            ],
            &mut seqs,
        );
        assert_eq!(seqs, HashMap::from([(a, 7)]), "only a's user change wakes");
        feed_seqs(
            &[
                recorded(b, 5, "BrandingUpdated"),
                recorded(a, 9, "PasswordSet"),
            ],
            &mut seqs,
        );
        assert_eq!(seqs, HashMap::from([(a, 9), (b, 5)]));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_page_is_read_once_per_generation_however_many_ask_at_once() {
        let feed = Arc::new(Feed::default());
        let reads = Arc::new(AtomicUsize::new(0));
        let key = (Uuid::from_u128(1), Some(7), 100);
        let (release, gate) = watch::channel(false);
        let mut askers = Vec::new();
        for _ in 0..100 {
            let (feed, reads, mut gate) = (feed.clone(), reads.clone(), gate.clone());
            askers.push(tokio::spawn(async move {
                feed.page(key, 3, async {
                    reads.fetch_add(1, Ordering::SeqCst);
                    // The first reader is slow: everyone else arrives while it reads.
                    let _ = gate.wait_for(|open| *open).await;
                    Ok::<_, ()>((Arc::from(&b"{}"[..]), true))
                })
                .await
            }));
        }
        // Once the first read has begun, the others queue behind it; then it finishes.
        while reads.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        release.send_replace(true);
        for asker in askers {
            let (body, empty) = asker.await.unwrap().unwrap();
            assert_eq!(&*body, b"{}");
            assert!(empty);
        }
        assert_eq!(
            reads.load(Ordering::SeqCst),
            1,
            "one read for one generation"
        );

        // The next generation reads again; a failed read is not kept.
        let failed: Result<Page, &str> = feed.page(key, 4, async { Err("busy") }).await;
        assert_eq!(failed, Err("busy"));
        let again = feed
            .page(key, 4, async {
                Ok::<_, ()>((Arc::from(&b"[1]"[..]), false))
            })
            .await
            .unwrap();
        assert_eq!(&*again.0, b"[1]");
        let cached = feed
            .page(key, 4, async {
                Ok::<_, ()>((Arc::from(&b"[2]"[..]), false))
            })
            .await
            .unwrap();
        assert_eq!(
            &*cached.0, b"[1]",
            "the same generation answers what was read"
        );
    }

    #[tokio::test]
    async fn a_settled_write_is_never_answered_from_a_page_cached_before_it() {
        let feed = Feed::default();
        let tenant = Uuid::from_u128(1);
        let key = (tenant, Some(7), 100);
        let page = |body: &'static [u8]| async move { Ok::<_, ()>((Arc::from(body), false)) };
        let waiting = feed.watch(tenant);
        let before = *waiting.borrow();
        let old = feed.page(key, before, page(b"[]")).await.unwrap();
        assert_eq!(&*old.0, b"[]");

        // The write of seq 8 is projected and settled before the feed task has seen it: the
        // next request of the same page reads again.
        feed.projected(&[recorded(tenant, 8, "DesktopLoginConfigured")]);
        let after = *feed.watch(tenant).borrow();
        assert_ne!(after, before);
        let new = feed.page(key, after, page(b"[8]")).await.unwrap();
        assert_eq!(&*new.0, b"[8]");

        // The feed task, catching up with an older batch, does not bring back the generation
        // the old page was cached under; nor does an audit record move it.
        feed.notify(&HashMap::from([(tenant, 5)]));
        feed.projected(&[recorded(tenant, 9, "DesktopLoginRecorded")]);
        assert_eq!(*feed.watch(tenant).borrow(), after);
        let again = feed.page(key, after, page(b"[9]")).await.unwrap();
        assert_eq!(&*again.0, b"[8]", "nothing new: the page stays");
        drop(waiting);
    }

    #[tokio::test(start_paused = true)]
    async fn agents_are_woken_only_once_the_read_models_have_the_commit() {
        let status = |checkpoint| projections::ProjectorStatus {
            projection: "directory",
            generation: 1,
            checkpoint,
            quarantined: Vec::new(),
            rebuilding: None,
            failure: None,
            stopped: false,
        };
        let wait = |progress: Progress, mut stop: watch::Receiver<bool>| {
            tokio::spawn(async move { projected(&progress, 5, &mut stop).await })
        };
        let (_stopping, stop) = watch::channel(false);

        // The read models lag for minutes (time is paused: it moves only when every task
        // waits): the feed keeps waiting, then wakes the agents once they have the commit.
        let (projector, statuses) = watch::channel(status(4));
        let waiting = wait(Progress::watching(vec![statuses]), stop.clone());
        tokio::time::sleep(PATIENCE * 10).await;
        assert!(!waiting.is_finished(), "still waiting for the read models");
        projector.send_modify(|s| s.checkpoint = 5);
        assert!(waiting.await.unwrap());

        // A projector that stopped will not get there: the agents are woken anyway.
        let (projector, statuses) = watch::channel(status(4));
        let waiting = wait(Progress::watching(vec![statuses]), stop.clone());
        projector.send_modify(|s| s.stopped = true);
        assert!(waiting.await.unwrap());

        // The service stopping ends the wait without waking anyone.
        let (_projector, statuses) = watch::channel(status(4));
        let (stopping, stop) = watch::channel(false);
        let waiting = wait(Progress::watching(vec![statuses]), stop);
        stopping.send_replace(true);
        assert!(!waiting.await.unwrap());
    }
}
