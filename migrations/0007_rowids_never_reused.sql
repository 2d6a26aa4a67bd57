-- The highest rowid each resource table ever gave a row that is now deleted, found
-- quickly: a new row takes a rowid above it (`store::rows::next_rowid`), so lists
-- ordered by `(created_at, rowid)` never put a new object at or before the position
-- a deleted one held (which a cursor naming that deleted object pages on from).
CREATE INDEX tombstones_row ON tombstones (resource, row);
