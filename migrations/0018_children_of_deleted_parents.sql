-- Schema 18 changes no table. It marks the databases written by this version's replica
-- rules, so that one migrated from an older schema is told to rebuild
-- (`store::SAME_RULES_SINCE`):
--
-- - an event for a child never stored whose parent is tombstoned (a `message.created`
--   naming a deleted conversation, a `conversation.created` naming a deleted group) is
--   still `ignored_deleted`, and now tombstones the child, with the orphans stored
--   under its id and the attachments a message lists (tombstoned, never filled), as
--   the parent's cascade would have had the child come first; not for a conversation
--   whose payload has no `group_id` (it may prove a group's), nor for a backfilled
--   object. Builds of schema 17 and older stored nothing and tombstoned nothing, so a
--   later partial update of the child, which names no parent, brought back a message
--   of a deleted conversation, and the same events in another order left none (a
--   black-box probe);
-- - one stored without a parent (a partial update came before its `created`) goes
--   the same way;
-- - an ignored delete of such a child, and any event of a deleted message, tombstones
--   the attachments its payload lists (never filling one), so that no late event
--   brings them back.
--
-- Applied once, as 0013 is (see there): the write lock first, then a failure when
-- another process already brought the database to 18.
DELETE FROM tombstones WHERE 0;
SELECT json('schema 18 is in place already')
WHERE (SELECT user_version FROM pragma_user_version) >= 18;
