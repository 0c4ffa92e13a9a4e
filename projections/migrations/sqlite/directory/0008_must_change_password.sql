-- A temporary password an administrator set (PasswordSet version 2): the user's next
-- workstation login changes it. No password set before it was one.
ALTER TABLE users ADD COLUMN must_change_password INTEGER NOT NULL DEFAULT 0;
