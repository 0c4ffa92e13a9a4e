-- Tombstones of removed directory users are kept for the change feed's retention, then go.
-- `removed_at` is when the user was removed (Unix seconds, the event's time); a tenant's
-- `feed_horizon` is the highest seq of a tombstone gone, below which a cursor cannot be
-- continued and gets a snapshot. A tombstone keeps only what the feed reports of a removal
-- (id and username): the removed user's names and email go at once.
ALTER TABLE users ADD COLUMN removed_at BIGINT;
ALTER TABLE tenants ADD COLUMN feed_horizon BIGINT NOT NULL DEFAULT 0;
-- Tombstones made before: their time is unknown, so they go at their tenant's next removal.
UPDATE users SET removed_at = 0, email = '', first_name = NULL, last_name = NULL
    WHERE deleted = 1;
CREATE INDEX users_by_removal ON users (tenant_id, removed_at) WHERE removed_at IS NOT NULL;
