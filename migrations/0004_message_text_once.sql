-- Message text is stored once, in `data`. It was also in the `message` column, a
-- second copy of the largest field of the largest table (about a quarter of the
-- bytes written per message). `message` is now a virtual generated column:
-- computed from `data` when read, stored nowhere, so queries (and the full-text
-- index, whose external content it is) read it as before. The index itself is
-- unchanged: same rows, same text.
ALTER TABLE messages DROP COLUMN message;
ALTER TABLE messages ADD COLUMN message TEXT
    GENERATED ALWAYS AS (json_extract(data, '$.message')) VIRTUAL;

-- Let the full-text index gather up to 16 MiB of terms in memory before it writes a
-- segment (the default is 1 MiB): an import batch becomes a few large segments
-- rather than dozens of small ones that are merged again and again.
INSERT INTO messages_fts (messages_fts, rank) VALUES ('hashsize', 16777216);
