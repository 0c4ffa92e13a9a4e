-- The audit projection: each tenant's timeline of events, newest first, with sealed values
-- and digests redacted. Rebuilt from the log at will; never written by commands.
-- Flags are INTEGER 0/1 on both databases: sqlx's Any driver has no SQLite boolean type.

CREATE TABLE projector_state (
    singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
    position BIGINT NOT NULL,
    active INTEGER NOT NULL
);
INSERT INTO projector_state (singleton, position, active) VALUES (1, 0, 0);

CREATE TABLE quarantine (
    tenant_id TEXT PRIMARY KEY,
    seq BIGINT NOT NULL,
    position BIGINT NOT NULL,
    event_type TEXT NOT NULL,
    error TEXT NOT NULL
);

CREATE TABLE timeline (
    tenant_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    position BIGINT NOT NULL,
    event_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    occurred_at TEXT NOT NULL,
    actor TEXT NOT NULL,
    -- The event's data as JSON, with sealed values and digests replaced by "[redacted]".
    details TEXT NOT NULL,
    PRIMARY KEY (tenant_id, seq)
);
