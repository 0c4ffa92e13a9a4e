-- Authorizing a request reads a user's delegations and auditor roles, not the admin role's
-- one row per customer: this index finds them without walking the admin rows.
CREATE INDEX access_by_user_role ON access (user_id, via);
