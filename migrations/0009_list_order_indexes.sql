-- Lists (`list`, the read API) go newest first by `(created_at, rowid)`. Messages had
-- an index in that order; the other tables were read whole and sorted for every
-- page (500,000 attachments: 0.33 s a page, paging through them all took time that
-- grew with the square of the table). An index on `created_at` holds the rowid too.
CREATE INDEX attachments_created ON attachments (created_at);
CREATE INDEX conversations_created ON conversations (created_at);
CREATE INDEX contacts_created ON contacts (created_at);
CREATE INDEX groups_created ON groups (created_at);
