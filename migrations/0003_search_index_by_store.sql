-- The full-text index over message text is kept in step by the store (store/rows.rs),
-- no longer by triggers. A statement that fires a trigger writing an FTS5 table opens
-- a statement savepoint, and FTS5 flushes its pending terms to disk at every
-- savepoint: each message became an index segment of its own, merged again and
-- again (about half of the import time). Written by the store, the terms of a whole
-- transaction are flushed at once. The index holds the same rows as before: the
-- non-null `message` of each message, under its rowid.
DROP TRIGGER IF EXISTS messages_fts_insert;
DROP TRIGGER IF EXISTS messages_fts_delete;
DROP TRIGGER IF EXISTS messages_fts_update;

-- Merge index segments 16 at a time rather than 4: each term's postings are
-- rewritten about half as often as the index grows, for a few more segments to
-- read per search.
INSERT INTO messages_fts (messages_fts, rank) VALUES ('automerge', 16);
