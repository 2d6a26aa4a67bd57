-- Schema 13 changes no table. It marks the databases written by this version's replica
-- rules, so that one migrated from an older schema is told to rebuild
-- (`store::SAME_RULES_SINCE`):
--
-- - a delete of a child whose parent is tombstoned (a `message.deleted` naming a
--   deleted conversation, say) is `ignored_deleted`, as every other event of such a
--   child is: it tombstones nothing and removes no orphan. Earlier builds applied it;
-- - a stale `group.created` that sets the members of a group that had none, and a
--   `contact.deleted` that removes the contact from groups, record themselves as the
--   last event that changed the group (`groups.seq`), so that a backfill page
--   requested before them only fills. Earlier builds left the sequence number of the
--   event before, and the page's members replaced the event's;
-- - a backfilled group that a newer event held back fills its members only where the
--   group never had `contacts`. Earlier builds set them wherever the group had none,
--   so a page put back the members an event had just removed (`"contacts": []`).
--
-- Applied once: a process that read an older version just before another one migrated
-- the database runs this again after it, and fails here (the database is at 13 then,
-- and it says another process migrated it) rather than find nothing to change and say
-- it migrated the database too. (A migration that changes tables fails on its own.)
-- The write lock first, waited for while another process migrates: read before it, the
-- version would be of a snapshot that the other's commit makes stale, and the write
-- after it would fail at once, before that commit.
DELETE FROM tombstones WHERE 0;
SELECT json('schema 13 is in place already')
WHERE (SELECT user_version FROM pragma_user_version) >= 13;
