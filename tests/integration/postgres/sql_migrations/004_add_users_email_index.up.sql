CREATE INDEX users_email_idx ON users (email);
ALTER TABLE users ADD COLUMN created_at timestamptz NOT NULL DEFAULT '2026-01-01 00:00:00+00';
