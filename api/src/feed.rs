//! Wakes agents long-polling the change feed, per tenant, without polling: one task follows
//! the log's commit notifications, reads the new events' envelopes (which tenant, which seq),
//! waits until the read models have them, and then tells the waiters of those tenants only.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use eventlog::{EventLog, RocksLog};
use projections::Progress;
use tokio::sync::watch;
use uuid::Uuid;

/// Per-tenant watches of the newest projected seq, for tenants someone waits on, and the last
/// pages answered: a thousand agents woken by one commit ask for the same page, which is read
/// and serialised once.
#[derive(Default)]
pub struct Feed {
    tenants: Mutex<HashMap<Uuid, watch::Sender<u64>>>,
    pages: Mutex<HashMap<PageKey, CachedPage>>,
}

/// A serialised page and the generation it was read at.
type CachedPage = (u64, Arc<[u8]>);

/// A page of one tenant's feed: its cursor and limit.
type PageKey = (Uuid, Option<u64>, usize);

/// Pages kept at most; beyond it, the cache starts over.
const CACHED_PAGES: usize = 10_000;

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

    /// The page for `key` if it was made at `generation` (the tenant's watch value when it was
    /// read); a later commit of the tenant changes the generation and so misses it.
    pub fn cached_page(&self, key: PageKey, generation: u64) -> Option<Arc<[u8]>> {
        let pages = self.pages.lock().unwrap_or_else(|e| e.into_inner());
        pages
            .get(&key)
            .filter(|(made, _)| *made == generation)
            .map(|(_, page)| page.clone())
    }

    /// Keeps a page made at `generation`.
    pub fn keep_page(&self, key: PageKey, generation: u64, page: Arc<[u8]>) {
        let mut pages = self.pages.lock().unwrap_or_else(|e| e.into_inner());
        if pages.len() >= CACHED_PAGES {
            pages.clear();
        }
        pages.insert(key, (generation, page));
    }

    /// How many long-polls are waiting now, on all tenants.
    pub fn waiting(&self) -> usize {
        self.lock().values().map(|s| s.receiver_count()).sum()
    }

    /// Tells the waiters of each tenant in `seqs` that its events up to that seq are projected;
    /// forgets tenants nobody waits on any more.
    fn notify(&self, seqs: &HashMap<Uuid, u64>) {
        let mut tenants = self.lock();
        for (tenant, seq) in seqs {
            if let Some(sender) = tenants.get(tenant) {
                sender.send_replace(*seq);
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
                        for event in &page {
                            let seq = seqs.entry(event.stream.0).or_default();
                            *seq = (*seq).max(event.seq);
                            next = event.position + 1;
                        }
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
            progress
                .wait_for(head, std::time::Duration::from_secs(30))
                .await;
            // A backstop for writers that did not settle: what changed leaves the cache.
            cache.forget_after(&events);
            self.notify(&seqs);
        }
    }
}
