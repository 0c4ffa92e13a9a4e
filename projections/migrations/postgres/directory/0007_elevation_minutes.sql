-- How long an elevation's password stays the shared account's (SharedAccountConfigured
-- version 2). Tenants configured before it had the hour agents kept then.
ALTER TABLE tenants ADD COLUMN elevation_minutes BIGINT NOT NULL DEFAULT 60;
