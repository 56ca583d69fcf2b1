ALTER TABLE users DROP COLUMN created_at;
DROP INDEX users_email_idx;
