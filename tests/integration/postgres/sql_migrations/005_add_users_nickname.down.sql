-- Idempotent: undoes whatever part of the up script ran.
DROP INDEX IF EXISTS users_nickname_key;
ALTER TABLE orders DROP CONSTRAINT IF EXISTS orders_note_short;
ALTER TABLE users DROP COLUMN IF EXISTS nickname;
