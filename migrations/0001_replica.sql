-- The replica of a Protocol account, and the log of every event applied to it.
--
-- Resource tables are rowid tables with a unique index on Protocol's text id: random
-- 16-character ids as a clustered key would scatter every insert across the table.
-- Each keeps the documented fields as typed columns (for filters and indexes) and the
-- full merged JSON object in `data` (so unknown fields survive). `seq` is the event-log
-- sequence number of the last event that changed the row.

CREATE TABLE contacts (
    id              TEXT NOT NULL,
    username        TEXT,
    phone_number    TEXT,
    avatar_url      TEXT,
    display_name    TEXT,
    conversation_id TEXT,
    last_active_at  INTEGER,
    created_at      INTEGER,
    seq             INTEGER NOT NULL,
    data            TEXT NOT NULL
);
CREATE UNIQUE INDEX contacts_id ON contacts (id);
CREATE INDEX contacts_conversation ON contacts (conversation_id);

CREATE TABLE conversations (
    id                TEXT NOT NULL,
    contact_id        TEXT,
    group_id          TEXT,
    pinned_message_id TEXT,
    is_pinned         INTEGER,
    is_muted          INTEGER,
    last_active_at    INTEGER,
    last_opened_at    INTEGER,
    created_at        INTEGER,
    archived_at       INTEGER,
    seq               INTEGER NOT NULL,
    data              TEXT NOT NULL
);
CREATE UNIQUE INDEX conversations_id ON conversations (id);
CREATE INDEX conversations_contact ON conversations (contact_id);
CREATE INDEX conversations_group ON conversations (group_id);

-- `data` holds the message without its attachments: those live in `attachments`
-- (an `"attachments": []` in `data` only records that the key was received).
CREATE TABLE messages (
    id              TEXT NOT NULL,
    conversation_id TEXT,
    sender_id       TEXT,
    message         TEXT,
    read_at         INTEGER,
    created_at      INTEGER,
    updated_at      INTEGER,
    seq             INTEGER NOT NULL,
    data            TEXT NOT NULL
);
CREATE UNIQUE INDEX messages_id ON messages (id);
CREATE INDEX messages_conversation_created ON messages (conversation_id, created_at);
CREATE INDEX messages_created ON messages (created_at);

-- `data` holds the group without its members: those live in `group_members`.
CREATE TABLE groups (
    id              TEXT NOT NULL,
    name            TEXT,
    description     TEXT,
    avatar_url      TEXT,
    conversation_id TEXT,
    created_at      INTEGER,
    archived_at     INTEGER,
    seq             INTEGER NOT NULL,
    data            TEXT NOT NULL
);
CREATE UNIQUE INDEX groups_id ON groups (id);

CREATE TABLE attachments (
    id         TEXT NOT NULL,
    message_id TEXT,
    filename   TEXT,
    file_url   TEXT,
    file_type  TEXT,
    file_size  INTEGER,
    created_at INTEGER,
    seq        INTEGER NOT NULL,
    data       TEXT NOT NULL
);
CREATE UNIQUE INDEX attachments_id ON attachments (id);
CREATE INDEX attachments_message ON attachments (message_id, created_at, id);

-- A group's members, in the order the group's last `contacts` array listed them.
-- Members are not contact rows: `contact_id` may name no stored contact, or be null.
CREATE TABLE group_members (
    group_id   TEXT NOT NULL,
    position   INTEGER NOT NULL,
    contact_id TEXT,
    username   TEXT,
    data       TEXT NOT NULL,
    PRIMARY KEY (group_id, position)
) WITHOUT ROWID;
CREATE INDEX group_members_contact ON group_members (contact_id);

-- Deleted ids, directly or by a cascade: no later event brings them back.
CREATE TABLE tombstones (
    resource TEXT NOT NULL,
    id       TEXT NOT NULL,
    seq      INTEGER NOT NULL,
    PRIMARY KEY (resource, id)
) WITHOUT ROWID;

-- Every event the writer accepted (applied or not), in apply order. Redeliveries of
-- an event id are not logged again; `duplicates` counts them.
CREATE TABLE events (
    seq         INTEGER PRIMARY KEY,
    event_id    TEXT NOT NULL,
    type        TEXT NOT NULL,
    object_id   TEXT NOT NULL,
    received_at INTEGER NOT NULL,
    outcome     TEXT NOT NULL,
    error       TEXT,
    cascaded    INTEGER NOT NULL DEFAULT 0,
    cascade     TEXT,
    duplicates  INTEGER NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX events_event_id ON events (event_id);
CREATE INDEX events_type ON events (type);
CREATE INDEX events_received ON events (received_at);

-- Raw bodies, exactly as received, kept out of the log's B-tree (they are only read
-- back by `rebuild`).
CREATE TABLE event_bodies (
    seq  INTEGER PRIMARY KEY REFERENCES events (seq),
    body TEXT NOT NULL
);

-- Full-text index over message text, kept in sync with `messages` by triggers.
CREATE VIRTUAL TABLE messages_fts USING fts5 (
    message,
    content = 'messages',
    content_rowid = 'rowid',
    tokenize = 'unicode61 remove_diacritics 2'
);

CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages
WHEN new.message IS NOT NULL BEGIN
    INSERT INTO messages_fts (rowid, message) VALUES (new.rowid, new.message);
END;

CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages
WHEN old.message IS NOT NULL BEGIN
    INSERT INTO messages_fts (messages_fts, rowid, message) VALUES ('delete', old.rowid, old.message);
END;

CREATE TRIGGER messages_fts_update AFTER UPDATE OF message ON messages
WHEN old.message IS NOT new.message BEGIN
    INSERT INTO messages_fts (messages_fts, rowid, message)
        SELECT 'delete', old.rowid, old.message WHERE old.message IS NOT NULL;
    INSERT INTO messages_fts (rowid, message)
        SELECT new.rowid, new.message WHERE new.message IS NOT NULL;
END;

-- One row the daemon's health check writes, to prove the database takes a commit.
CREATE TABLE writer_probe (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    at INTEGER NOT NULL
);
