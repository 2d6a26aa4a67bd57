-- Indexes for filters that read a whole table (a performance probe on a replica of
-- 700,000 messages and 1,000,000 logged events):
--
-- `list messages --contact` (by sender) walked every message: 0.5 s.
CREATE INDEX messages_sender_created ON messages (sender_id, created_at);

-- `events --outcome` scanned the whole log for the outcomes that are rare (0.1 s;
-- with `--type`, 0.3 s), and `stats` counted every outcome in one more full scan.
-- Only the events that did not apply are indexed: the others are most of the log,
-- and are counted as the rest.
CREATE INDEX events_unusual_outcome ON events (outcome) WHERE outcome <> 'applied';

-- `stats` sums the redeliveries of the few events that had any.
CREATE INDEX events_redelivered ON events (duplicates) WHERE duplicates > 0;
