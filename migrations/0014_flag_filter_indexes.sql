-- The read API's documented filters `muted`, `pinned` and `archived` (and `list
-- --muted`, `--pinned`, `--archived`) walked the list's order index and looked up every
-- row until a page was full: for a value few rows have, a scan of the whole table per
-- page (84 ms for `?muted=true` among 300,001 conversations, and 8 such requests at
-- once held every other read of the read API's 4 readers for a second).
--
-- The rows with the flag set, in list order: partial indexes, small as the rows they
-- hold, which the list query reads for `= true` (its conditions are written as these
-- are). `= false`, the many, finds its rows at once in the order index.
CREATE INDEX conversations_muted ON conversations (created_at) WHERE is_muted = 1;
CREATE INDEX conversations_pinned ON conversations (created_at) WHERE is_pinned = 1;
CREATE INDEX conversations_archived ON conversations (created_at) WHERE archived_at IS NOT NULL;
CREATE INDEX groups_archived ON groups (created_at) WHERE archived_at IS NOT NULL;
