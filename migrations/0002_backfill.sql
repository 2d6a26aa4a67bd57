-- Backfill from Protocol's REST API (and the origin of every logged event).

-- Where an event came from: 'webhook', 'import' or 'backfill'. A backfilled object
-- carries `page_seq`, the log sequence number current when its page was requested:
-- it overwrites a row only if no event changed that row after `page_seq`, and
-- otherwise only fills missing keys (so `rebuild` replays the same decision).
ALTER TABLE events ADD COLUMN source TEXT NOT NULL DEFAULT 'webhook';
ALTER TABLE events ADD COLUMN page_seq INTEGER;

-- Resumable passes: per resource (and, for messages, per conversation), the last id
-- of the last committed page. A pass starts at `pass_seq` (the log position then) and
-- belongs to run number `run`; the row of resource 'run' numbers the current run, so
-- that a run that stopped halfway resumes without re-listing the resources it finished.
CREATE TABLE backfill_cursors (
    resource TEXT NOT NULL,
    scope    TEXT NOT NULL,
    cursor   TEXT,
    complete INTEGER NOT NULL DEFAULT 0,
    pass_seq INTEGER NOT NULL,
    run      INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (resource, scope)
) WITHOUT ROWID;

-- Ids listed by Protocol during the current pass of each resource (for --prune).
CREATE TABLE backfill_seen (
    resource TEXT NOT NULL,
    id       TEXT NOT NULL,
    PRIMARY KEY (resource, id)
) WITHOUT ROWID;
