-- Schema 15 changes no table. It marks the databases written by this version's replica
-- rules, so that one migrated from an older schema is told to rebuild
-- (`store::SAME_RULES_SINCE`):
--
-- - a delete of an object whose parent is tombstoned (a `conversation.deleted` naming
--   a deleted group, for a conversation never stored) stays `ignored_deleted`, as
--   every event of such a child is, but removes and tombstones the object all the
--   same, with what is stored under it, as its parent's cascade would have had it
--   known the child. Builds of schemas 13 and 14 tombstoned nothing: a later partial
--   update, which names no parent, brought back an object Protocol had deleted (a
--   black-box probe).
--
-- Applied once, as 0013 is (see there): the write lock first, then a failure when
-- another process already brought the database to 15.
DELETE FROM tombstones WHERE 0;
SELECT json('schema 15 is in place already')
WHERE (SELECT user_version FROM pragma_user_version) >= 15;
