-- Schema 20 changes no table. It marks the databases written by this version's replica
-- rules, so that one migrated from an older schema is told to rebuild where they differ
-- (`store::rules_differ`):
--
-- - a deleted contact or group whose `conversation_id` is `""` cascades to no
--   conversation: Protocol's ids are never empty (an event whose payload's `id` is
--   empty is refused), so the empty id names none. Builds of schema 19 and older
--   tombstoned the conversation `""`, removed every message stored with an empty
--   `conversation_id` (and their attachments), and ignored every later one (a
--   review). That tombstone is the only trace those builds leave of the rule, so a
--   database migrated from schema 18 or 19 is told to rebuild only when it holds it;
--   one from an older schema always is, for the rules schema 18 marks.
--
-- Applied once, as 0013 is (see there): the write lock first, then a failure when
-- another process already brought the database to 20.
DELETE FROM tombstones WHERE 0;
SELECT json('schema 20 is in place already')
WHERE (SELECT user_version FROM pragma_user_version) >= 20;
