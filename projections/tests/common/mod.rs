//! Shared by the projection tests: a fresh event log, the two read-model stores, and a macro
//! that runs each test against both.
#![allow(dead_code)]

use std::sync::Arc;

use chrono::{TimeZone, Utc};
use domain::event::Event;
use domain::ids::TenantId;
use eventlog::{Commit, EventLog, Expected, NewEvent, RocksLog, StreamAppend, StreamId};
use projections::{Backend, Options, Projections, codec};
use tempfile::TempDir;
use uuid::Uuid;

/// A read-model store for one test: a temporary SQLite directory, or PostgreSQL schemas with
/// a prefix of the test's own.
pub struct Store {
    pub backend: Backend,
    _dir: Option<TempDir>,
}

impl Store {
    pub fn sqlite() -> Store {
        let dir = tempfile::tempdir().unwrap();
        Store {
            backend: Backend::Sqlite {
                dir: dir.path().join("readmodels"),
            },
            _dir: Some(dir),
        }
    }

    /// The server is the one the test command starts (scripts/test); without it this fails.
    pub fn postgres() -> Store {
        let url = std::env::var("IDEM_TEST_DATABASE_URL").expect(
            "IDEM_TEST_DATABASE_URL is not set: run the tests with scripts/test, which starts a \
             PostgreSQL server on loopback and sets it",
        );
        let prefix = format!("t{}_", &Uuid::now_v7().simple().to_string()[20..]);
        Store {
            backend: Backend::Postgres {
                url,
                schema_prefix: prefix,
            },
            _dir: None,
        }
    }

    /// Another store of the same kind, empty.
    pub fn sibling(&self) -> Store {
        match self.backend {
            Backend::Sqlite { .. } => Store::sqlite(),
            Backend::Postgres { .. } => Store::postgres(),
        }
    }

    pub async fn cleanup(&self) {
        self.backend.remove_all().await.unwrap();
    }
}

/// Runs each named `async fn(&Store)` once on SQLite and once on PostgreSQL.
#[macro_export]
macro_rules! on_both_databases {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let store = $crate::common::Store::sqlite();
                    super::$name(&store).await;
                    store.cleanup().await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let store = $crate::common::Store::postgres();
                    super::$name(&store).await;
                    store.cleanup().await;
                }
            )*
        }
    };
}

/// A fresh event log with helpers to write domain events into it.
pub struct World {
    pub log: Arc<RocksLog>,
    _dir: TempDir,
}

pub fn at() -> chrono::DateTime<Utc> {
    Utc.timestamp_opt(1_795_000_000, 0).unwrap()
}

fn encode(event: &Event) -> NewEvent {
    encode_at(event, at())
}

fn encode_at(event: &Event, occurred_at: chrono::DateTime<Utc>) -> NewEvent {
    codec::encode(event, Uuid::now_v7(), occurred_at, "user:test").unwrap()
}

impl World {
    pub fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        let log = RocksLog::open(dir.path().join("log")).unwrap();
        World {
            log: Arc::new(log),
            _dir: dir,
        }
    }

    /// This log as a backup of it taken now and restored holds it: the same log, by its
    /// identity, at today's head.
    pub async fn restored_copy(&self) -> World {
        let dir = tempfile::tempdir().unwrap();
        let backup = dir.path().join("backup");
        self.log.backup(&backup).await.unwrap();
        let key_store = self.log.data_key_store().await.unwrap();
        RocksLog::restore(&backup, dir.path().join("log"), &key_store).unwrap();
        let log = RocksLog::open(dir.path().join("log")).unwrap();
        World {
            log: Arc::new(log),
            _dir: dir,
        }
    }

    /// Appends `events` to `tenant`'s stream; answers the commit's position.
    pub async fn append(&self, tenant: TenantId, events: Vec<Event>) -> u64 {
        self.commit(vec![(tenant, events)], None).await
    }

    /// Appends `events`, as having occurred at `occurred_at`, to `tenant`'s stream.
    pub async fn append_at(
        &self,
        tenant: TenantId,
        occurred_at: chrono::DateTime<Utc>,
        events: Vec<Event>,
    ) -> u64 {
        let append = StreamAppend::new(StreamId(tenant.0), Expected::Any)
            .events(events.iter().map(|e| encode_at(e, occurred_at)));
        self.log.append(append).await.unwrap().position
    }

    /// One atomic commit of appends to several streams, and optionally a deletion.
    pub async fn commit(
        &self,
        appends: Vec<(TenantId, Vec<Event>)>,
        delete: Option<TenantId>,
    ) -> u64 {
        let mut commit = Commit::new();
        for (tenant, events) in appends {
            commit = commit.append(
                StreamAppend::new(StreamId(tenant.0), Expected::Any)
                    .events(events.iter().map(encode)),
            );
        }
        if let Some(tenant) = delete {
            commit = commit.delete(StreamId(tenant.0));
        }
        self.log.commit(commit).await.unwrap().position
    }

    /// Appends an event as stored bytes, bypassing the domain: a bad or future event.
    pub async fn raw(&self, tenant: TenantId, event_type: &str, data: &str) -> u64 {
        let event = NewEvent {
            id: Uuid::now_v7(),
            event_type: event_type.into(),
            schema_version: 1,
            occurred_at: at(),
            actor: "user:test".into(),
            data: data.as_bytes().to_vec(),
        };
        self.log
            .append(StreamAppend::new(StreamId(tenant.0), Expected::Any).event(event))
            .await
            .unwrap()
            .position
    }

    pub fn head(&self) -> u64 {
        self.log.head_position()
    }

    /// Projections over this log into `store`.
    pub async fn project(&self, store: &Store, options: Options) -> Projections<RocksLog> {
        Projections::start(self.log.clone(), store.backend.clone(), options)
            .await
            .unwrap()
    }

    /// Projects the whole log into a fresh store and dumps it: what any projection of this
    /// log must equal.
    pub async fn reference_dump(&self, like: &Store) -> Vec<String> {
        let store = like.sibling();
        let projections = self.project(&store, Options::default()).await;
        assert!(projections.wait_for(self.head(), LONG).await);
        let dump = projections.read_models().dump().await.unwrap();
        projections.shutdown().await;
        store.cleanup().await;
        dump
    }
}

/// How long a test waits for projections before calling it a failure.
pub const LONG: std::time::Duration = std::time::Duration::from_secs(60);
