//! Lookups every request makes, kept in memory: the tenant served at a host label, and the
//! tenant and device of an agent's credential. Entries are dropped once a write that changes
//! them has been projected (`forget_after`, called by `routes::settle` and by the feed task for
//! every commit), so a reader never keeps an answer older than the last projected change.
//!
//! A lookup that raced a change cannot leave a stale entry behind: every fill notes the
//! generation before it reads, and is kept only if no invalidation happened meanwhile.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use eventlog::RecordedEvent;
use projections::TenantRow;
use uuid::Uuid;

/// Event types that change a tenant's row (its settings, its existence).
const TENANT_ROW_EVENTS: &[&str] = &[
    "MspTenantCreated",
    "CustomerTenantOpened",
    "CustomerTenantCreated",
    "CustomerTenantDeleted",
    "UserSourceSet",
    "MasterKeyEnabled",
    "MasterKeyDisabled",
    "DesktopLoginConfigured",
    "BrandingUpdated",
    "SharedAccountConfigured",
];

#[derive(Default)]
pub struct Cache {
    generation: AtomicU64,
    /// Host label → tenant row.
    hosts: Mutex<HashMap<String, Arc<TenantRow>>>,
    /// Credential digest → (tenant, device).
    agents: Mutex<HashMap<String, (Uuid, Uuid)>>,
}

/// Entries kept at most per map; beyond it, the map starts over.
const CAPACITY: usize = 100_000;

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Cache {
    /// The generation to note before a lookup whose answer may be kept.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    pub fn host(&self, label: &str) -> Option<Arc<TenantRow>> {
        lock(&self.hosts).get(label).cloned()
    }

    /// Keeps a host's row read at `generation`, unless something changed since.
    pub fn keep_host(&self, label: &str, row: Arc<TenantRow>, generation: u64) {
        let mut hosts = lock(&self.hosts);
        if self.generation() != generation {
            return;
        }
        if hosts.len() >= CAPACITY {
            hosts.clear();
        }
        hosts.insert(label.to_owned(), row);
    }

    pub fn agent(&self, digest: &str) -> Option<(Uuid, Uuid)> {
        lock(&self.agents).get(digest).copied()
    }

    /// Keeps a credential's owner read at `generation`, unless something changed since.
    pub fn keep_agent(&self, digest: &str, owner: (Uuid, Uuid), generation: u64) {
        let mut agents = lock(&self.agents);
        if self.generation() != generation {
            return;
        }
        if agents.len() >= CAPACITY {
            agents.clear();
        }
        agents.insert(digest.to_owned(), owner);
    }

    /// Drops what these projected events change: tenant rows for settings and lifecycle
    /// events, credentials for revoked agents; everything for a deleted customer. The
    /// generation moves first, so a lookup that read before this cannot be kept after it.
    pub fn forget_after(&self, events: &[RecordedEvent]) {
        let relevant = |e: &RecordedEvent| {
            TENANT_ROW_EVENTS.contains(&e.event_type.as_str()) || e.event_type == "AgentRevoked"
        };
        if !events.iter().any(relevant) {
            return;
        }
        self.generation.fetch_add(1, Ordering::SeqCst);
        for event in events {
            let tenant = event.stream.0;
            if event.event_type == "CustomerTenantDeleted" {
                lock(&self.hosts).clear();
                lock(&self.agents).clear();
            } else if TENANT_ROW_EVENTS.contains(&event.event_type.as_str()) {
                lock(&self.hosts).retain(|_, row| row.id != tenant);
            } else if event.event_type == "AgentRevoked" {
                lock(&self.agents).retain(|_, (owner, _)| *owner != tenant);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use eventlog::{Digest32, StreamId};

    fn event(stream: Uuid, event_type: &str) -> RecordedEvent {
        RecordedEvent {
            id: Uuid::nil(),
            stream: StreamId(stream),
            seq: 1,
            position: 1,
            event_type: event_type.into(),
            schema_version: 1,
            occurred_at: chrono::DateTime::from_timestamp(0, 0).unwrap(),
            actor: String::new(),
            data: Vec::new(),
            prev_hash: Digest32([0; 32]),
            hash: Digest32([0; 32]),
        }
    }

    fn row(id: Uuid) -> Arc<TenantRow> {
        Arc::new(TenantRow {
            id,
            kind: "customer".into(),
            msp_id: None,
            name: "c".into(),
            display_name: "C".into(),
            host_label: "c-m".into(),
            user_source: "local".into(),
            master_key_version: None,
            desktop_login_enabled: false,
            desktop_login_method: None,
            branding_version: 0,
            branding_background: None,
            branding_logo: None,
            branding_text: None,
            shared_account: None,
            elevation_minutes: 60,
            created_at: String::new(),
            last_seq: 1,
        })
    }

    #[test]
    fn changes_drop_what_they_change_and_a_racing_lookup_is_not_kept() {
        let cache = Cache::default();
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let g = cache.generation();
        cache.keep_host("a", row(a), g);
        cache.keep_host("b", row(b), g);
        cache.keep_agent("cred-a", (a, Uuid::from_u128(9)), g);
        // Users and logins change no row and no credential.
        cache.forget_after(&[
            event(a, "DirectoryUserCreated"),
            event(a, "DesktopLoginRecorded"),
        ]);
        assert!(cache.host("a").is_some() && cache.agent("cred-a").is_some());
        assert_eq!(cache.generation(), g);
        // A setting of tenant a: a's row goes, b's stays.
        cache.forget_after(&[event(a, "DesktopLoginConfigured")]);
        assert!(cache.host("a").is_none() && cache.host("b").is_some());
        // A lookup that started before that change is not kept.
        cache.keep_host("a", row(a), g);
        assert!(cache.host("a").is_none());
        // A revoked agent's credential goes.
        cache.forget_after(&[event(a, "AgentRevoked")]);
        assert!(cache.agent("cred-a").is_none());
        // A deleted customer: everything goes.
        cache.forget_after(&[event(b, "CustomerTenantDeleted")]);
        assert!(cache.host("b").is_none());
    }
}
