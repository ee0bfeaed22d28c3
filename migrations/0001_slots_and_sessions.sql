-- Who holds which slot. Docker labels cannot change after a container is
-- created, so assignment lives here; a running container of this instance with
-- no row here is warm, one with a row is assigned (or being recycled).
CREATE TABLE slots (
    id            TEXT PRIMARY KEY NOT NULL,   -- the random /user/<slot>/ segment
    container_id  TEXT NOT NULL,
    assigned_at   INTEGER NOT NULL,            -- unix seconds
    recycling     INTEGER NOT NULL DEFAULT 0   -- 1 once recycling began: never hand out again
) STRICT;

-- Browser sessions. Only a hash of the cookie value is stored, so a copy of
-- the database does not let anyone sign in.
CREATE TABLE sessions (
    id_hash     BLOB PRIMARY KEY NOT NULL,     -- sha256(cookie value)
    user_id     INTEGER,                       -- NULL for ephemeral visitors
    slot_id     TEXT REFERENCES slots(id) ON DELETE SET NULL,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL
) STRICT;

CREATE INDEX sessions_slot ON sessions(slot_id);
