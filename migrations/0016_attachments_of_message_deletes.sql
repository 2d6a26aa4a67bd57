-- Schema 16 changes no table. It marks the databases written by this version's replica
-- rules, so that one migrated from an older schema is told to rebuild
-- (`store::SAME_RULES_SINCE`):
--
-- - a `message.deleted` that applies reads its payload's `attachments` as every other
--   message event does (SPEC rule 7): an attachment it lists that is not stored yet is
--   made under the message, so that the delete's cascade removes and tombstones it. Builds
--   of schemas 15 and older read nothing from a delete's payload but its parents: a later
--   `attachment.created` naming no message brought back, as an orphan, an attachment
--   Protocol had listed under the deleted message (a black-box probe).
--
-- Applied once, as 0013 is (see there): the write lock first, then a failure when
-- another process already brought the database to 16.
DELETE FROM tombstones WHERE 0;
SELECT json('schema 16 is in place already')
WHERE (SELECT user_version FROM pragma_user_version) >= 16;
