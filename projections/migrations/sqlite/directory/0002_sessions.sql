-- Portal sessions, one per login on a tenant's host. Only the token's digest is kept; a
-- request's token is hashed and looked up here. Logout, the user's removal and the tenant's
-- deletion remove the row; expired rows are refused by the reader.
CREATE TABLE sessions (
    token_digest TEXT PRIMARY KEY,
    session_id TEXT NOT NULL UNIQUE,
    -- The host's tenant: a session is valid there and nowhere else.
    tenant_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    -- The user's MSP when it is not `tenant_id` (a technician on a customer host).
    msp_id TEXT,
    device_id TEXT,
    method TEXT NOT NULL,
    started_at TEXT NOT NULL,
    expires_at TEXT NOT NULL
);
CREATE INDEX sessions_by_tenant ON sessions (tenant_id);
CREATE INDEX sessions_by_user ON sessions (user_id);
