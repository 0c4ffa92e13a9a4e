-- Enrolled desktop agents by the digest of their device credential: how an agent's request is
-- authenticated. Revoking the agent removes its row, so it is refused at once.
CREATE TABLE agent_credentials (
    credential_digest TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    device_id TEXT NOT NULL
);
CREATE INDEX agent_credentials_by_tenant ON agent_credentials (tenant_id, device_id);
