-- Schema 21 marks the databases written by this version's replica rules, so that one
-- migrated from an older schema is told to rebuild where they differ
-- (`store::rules_differ`), and gives the members a group lists with an empty `id` or
-- `username` none in their row, as this version stores them:
--
-- - an empty `id`, `username` or `group_id` names nothing, as `null` does (Protocol's
--   ids are never empty), as schema 20 made of `conversation_id`. Builds of schema 20
--   and older removed, on the delete of a contact whose username was `""`, every
--   member listed as `{"username": ""}` from every group and kept later ones out; took
--   a member listed with the `id` `""` for a contact's, so its contact's delete by
--   username left it; and took a conversation with the `group_id` `""` for a group's,
--   which no contact's delete removed (reviews). Their traces: the deleted username
--   `""`, a member listed with the `id` `""`, a conversation event in the log with
--   the `group_id` `""` (a later update may have given the conversation a group).
--
-- Applied once, as 0013 is (see there): the write lock first, then a failure when
-- another process already brought the database to 21.
UPDATE group_members SET contact_id = NULL WHERE contact_id = '';
UPDATE group_members SET username = NULL WHERE username = '';
SELECT json('schema 21 is in place already')
WHERE (SELECT user_version FROM pragma_user_version) >= 21;
