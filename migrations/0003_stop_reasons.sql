-- Why a session's server was last stopped, shown on the next visit
-- ("stopped at 14:02 after 10 minutes idle — your files in ~/work are safe").
ALTER TABLE sessions ADD COLUMN stop_reason TEXT;
ALTER TABLE sessions ADD COLUMN stopped_at INTEGER;
