-- The directory projection: tenants with their settings, users, access, devices, and the
-- directory change feed (users and settings carry the tenant seq of their last change).
-- Rebuilt from the log at will; never written by commands.
-- Flags are INTEGER 0/1 on both databases: sqlx's Any driver has no SQLite boolean type.

CREATE TABLE projector_state (
    singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
    -- Last log position applied; written in the same transaction as the rows.
    position BIGINT NOT NULL,
    -- 1 once this generation became the one served (see generations in db.rs).
    active INTEGER NOT NULL
);
INSERT INTO projector_state (singleton, position, active) VALUES (1, 0, 0);

-- Tenants whose events this projection could not apply: skipped from `seq` on, retried at start.
CREATE TABLE quarantine (
    tenant_id TEXT PRIMARY KEY,
    seq BIGINT NOT NULL,
    position BIGINT NOT NULL,
    event_type TEXT NOT NULL,
    error TEXT NOT NULL
);

CREATE TABLE tenants (
    tenant_id TEXT PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('msp', 'customer')),
    msp_id TEXT,
    name TEXT NOT NULL,
    display_name TEXT NOT NULL,
    host_label TEXT NOT NULL UNIQUE,
    user_source TEXT NOT NULL,
    master_key_version BIGINT,
    desktop_login_enabled INTEGER NOT NULL,
    desktop_login_method TEXT,
    branding_version BIGINT NOT NULL,
    branding_background TEXT,
    branding_logo TEXT,
    branding_text TEXT,
    shared_account TEXT,
    created_at TEXT NOT NULL,
    -- The tenant's own stream: last seq applied, and the seqs the change feed reports.
    last_seq BIGINT NOT NULL,
    desktop_login_seq BIGINT NOT NULL,
    branding_seq BIGINT NOT NULL,
    shared_account_seq BIGINT NOT NULL
);
CREATE INDEX tenants_by_msp ON tenants (msp_id, name);

-- MSP users and directory users alike; removed directory users stay as tombstones (deleted)
-- so the change feed can report the removal.
CREATE TABLE users (
    tenant_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    email TEXT NOT NULL,
    first_name TEXT,
    last_name TEXT,
    username TEXT,
    is_admin INTEGER NOT NULL,
    enabled INTEGER NOT NULL,
    has_password INTEGER NOT NULL,
    password_version BIGINT NOT NULL,
    passwordless INTEGER NOT NULL,
    has_personal_email INTEGER NOT NULL,
    devices BIGINT NOT NULL,
    created_at TEXT NOT NULL,
    deleted INTEGER NOT NULL,
    changed_seq BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, user_id)
);
CREATE INDEX users_by_change ON users (tenant_id, changed_seq);

-- Who reaches which tenant, and through what: 'admin', 'delegation' or 'auditor'.
CREATE TABLE access (
    user_id TEXT NOT NULL,
    tenant_id TEXT NOT NULL,
    via TEXT NOT NULL CHECK (via IN ('admin', 'delegation', 'auditor')),
    msp_id TEXT NOT NULL,
    PRIMARY KEY (user_id, tenant_id, via)
);
CREATE INDEX access_by_tenant ON access (tenant_id);
CREATE INDEX access_by_msp ON access (msp_id);

-- Enrolled authenticators (kind 'authenticator', with their user) and desktop agents.
CREATE TABLE devices (
    tenant_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('authenticator', 'agent')),
    user_id TEXT,
    name TEXT NOT NULL,
    public_key TEXT,
    enrolled_at TEXT NOT NULL,
    revoked INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, device_id)
);

-- One-time tokens for enrolling desktop agents (only their ids: the digest stays in the log).
CREATE TABLE enrollment_tokens (
    tenant_id TEXT NOT NULL,
    token_id TEXT NOT NULL,
    issued_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    -- The agent that used it, once used.
    device_id TEXT,
    PRIMARY KEY (tenant_id, token_id)
);
