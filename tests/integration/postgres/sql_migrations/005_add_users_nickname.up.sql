-- Fails half-way on purpose: the nicknames derived below are not unique, so the
-- concurrent unique index build fails and leaves an INVALID index behind, after the
-- column and a NOT VALID constraint were already added (no transaction can undo it).
ALTER TABLE users ADD COLUMN nickname text;
UPDATE users SET nickname = split_part(email, '@', 2);
ALTER TABLE orders ADD CONSTRAINT orders_note_short CHECK (char_length(note) < 100) NOT VALID;
CREATE UNIQUE INDEX CONCURRENTLY users_nickname_key ON users (nickname);
