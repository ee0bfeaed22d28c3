-- Registration keys kept in the DB (besides NBGATE_REGISTRATION_KEY): nebari's
-- coupons. Only a hash of each key is stored.
CREATE TABLE registration_keys (
    id             INTEGER PRIMARY KEY,
    name           TEXT NOT NULL UNIQUE,        -- what admins call it
    key_hash       BLOB NOT NULL UNIQUE,        -- sha256(key)
    max_uses       INTEGER,                     -- NULL: unlimited
    uses           INTEGER NOT NULL DEFAULT 0,
    valid_until    INTEGER,                     -- unix seconds; NULL: forever
    account_days   INTEGER,                     -- lifetime of accounts made with it
    email_domains  TEXT,                        -- comma-separated patterns; NULL: no e-mail asked
    revoked        INTEGER NOT NULL DEFAULT 0,
    created_at     INTEGER NOT NULL
) STRICT;

-- Accounts. The volume name carries sha256(username) and the bcrypt hash, so
-- this table can be rebuilt from the volumes alone (`nbgate volume
-- rebuild-index`); a rebuilt row knows the name's hash but not the name until
-- its owner logs in again.
CREATE TABLE users (
    id              INTEGER PRIMARY KEY,
    name_sha256     TEXT NOT NULL UNIQUE,       -- hex sha256 of the normalised username: decides races
    username        TEXT UNIQUE,                -- normalised; NULL after a rebuild until next login
    password_hash   TEXT NOT NULL,
    volume          TEXT NOT NULL UNIQUE,
    email           TEXT,
    is_admin        INTEGER NOT NULL DEFAULT 0,
    key_id          INTEGER REFERENCES registration_keys(id) ON DELETE SET NULL,
    created_at      INTEGER NOT NULL,
    expires_at      INTEGER,                    -- account lifetime end; NULL: never
    last_login_at   INTEGER,
    -- A password change in flight: the new volume being filled. Set before the
    -- copy, cleared with the switch; at start, a leftover means the copy never
    -- finished and the new volume is discarded.
    pending_volume  TEXT,
    -- The volume a finished password change left behind, removed once safe.
    old_volume      TEXT
) STRICT;

-- Failed attempts, so throttling survives a restart. scope: 'user:<sha256>',
-- 'ip:<addr>', 'key-ip:<addr>'.
CREATE TABLE failures (
    scope     TEXT PRIMARY KEY NOT NULL,
    count     INTEGER NOT NULL,
    last_at   INTEGER NOT NULL
) STRICT;
