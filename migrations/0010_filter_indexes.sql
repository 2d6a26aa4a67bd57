-- Indexes for filters that read a whole table (a performance probe on a replica of
-- 1,000,000 logged events):
--
-- `events --outcome` scanned the whole log for the outcomes that are rare (0.1 s;
-- with `--type`, 0.3 s), and `stats` counted every outcome in one more full scan.
-- Only the events that did not apply are indexed: the others are most of the log,
-- and are counted as the rest.
CREATE INDEX events_unusual_outcome ON events (outcome) WHERE outcome <> 'applied';

-- `stats` sums the redeliveries of the few events that had any.
CREATE INDEX events_redelivered ON events (duplicates) WHERE duplicates > 0;

-- Not indexed: messages by sender (`list messages --contact`, 0.5 s at 700,000
-- messages). An index on `sender_id` puts one more random page in every commit of
-- the daemon: its writer did 12-17% fewer events a second.
