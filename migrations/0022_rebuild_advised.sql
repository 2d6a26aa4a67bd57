-- Schema 22 keeps the advice to rebuild until a rebuild follows it. A migration from a
-- schema whose rules stored other states than this version's (`store::rules_differ`)
-- records here the schema it migrated from, in its own transaction (this migration's
-- hook, `store::schema::record_rebuild_advice`), and a rebuild, which recomputes the
-- replica by this version's rules, removes it. Until then `serve` says so at every
-- start, and `migrate` whenever it finds the database at this schema: the advice was
-- said once, at the migration, and a line missed in a daemon's log left a replica
-- under older rules with nothing to tell (black-box probes).
--
-- Applied once, as 0013 is (see there): the write lock first, then a failure when
-- another process already brought the database to 22. (The table may be there
-- already where a schema version was set back by hand.)
DELETE FROM tombstones WHERE 0;
SELECT json('schema 22 is in place already')
WHERE (SELECT user_version FROM pragma_user_version) >= 22;
CREATE TABLE IF NOT EXISTS rebuild_advised (
    from_schema INTEGER NOT NULL
);
