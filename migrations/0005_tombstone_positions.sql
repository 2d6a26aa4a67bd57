-- Where a deleted row stood in list order (its `created_at` and rowid when it was
-- removed), kept with its tombstone: a read API cursor (`starting_after`,
-- `ending_before`) naming an object deleted between two pages still says where the
-- next page starts. NULL for tombstones of ids that had no row, and for those
-- recorded before this migration.
ALTER TABLE tombstones ADD COLUMN created_at INTEGER;
ALTER TABLE tombstones ADD COLUMN row INTEGER;
