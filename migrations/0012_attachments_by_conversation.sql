-- Attachments by conversation (`list attachments --conversation`, the read API's
-- documented `GET /v1/attachments?conversation_id=`) read the ids of every message of
-- the conversation for each page: 0.23-0.31 s a page for a conversation of 99,569
-- messages, and paging through its 10,160 attachments took half a minute.
--
-- Each attachment now keeps its message's `conversation_id` (null while its message
-- is not stored). The store keeps it in step: an attachment takes it from its message
-- when written, and a message writes it to its attachments when saved (an attachment
-- may arrive before its message, and a message may move).
ALTER TABLE attachments ADD COLUMN conversation_id TEXT;

UPDATE attachments
SET conversation_id = (SELECT m.conversation_id FROM messages m WHERE m.id = attachments.message_id)
WHERE message_id IS NOT NULL;

CREATE INDEX attachments_conversation_created ON attachments (conversation_id, created_at);

-- The attachments without a conversation, by message: a new message finds there the
-- ones that came before it. Almost always empty, so the look-up every new message
-- makes costs a page that stays in the cache.
CREATE INDEX attachments_unplaced ON attachments (message_id) WHERE conversation_id IS NULL;
