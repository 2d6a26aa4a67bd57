-- Schema 19 makes the full-text index again where an early build of schema 17 made it
-- with fewer separators, and changes nothing elsewhere.
--
-- Migration 0017 was changed after its first builds (a6fc81e and the commits up to
-- 3c254e7): they made the index with marks kept in words but without 0017's list of
-- separators, so emoji and symbols newer than FTS5's tables stayed inside words
-- (`lol🤣` was one word, and `search lol` did not find it), as did the variation
-- selectors of `❤️love`. A database they made reads schema 17 like any other, so 0017
-- never ran again on it, and a rebuild, which keeps the index's definition, left it as
-- it was (an upgrade probe).
--
-- The migration's hook (`store::schema::make_the_search_index_again_if_early`) reads
-- the index's definition: when it is not 0017's, it runs 0017's statements that make
-- the index, and indexes every message again, as 0017's hook does. On a database whose
-- index is 0017's, it reads one row and does nothing more.
--
-- Applied once, as 0013 is (see there): the write lock first, then a failure when
-- another process already brought the database to 19.
DELETE FROM tombstones WHERE 0;
SELECT json('schema 19 is in place already')
WHERE (SELECT user_version FROM pragma_user_version) >= 19;
