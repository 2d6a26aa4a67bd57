-- The usernames of deleted contacts. A contact's delete removes the group members
-- listed by its id and those listed with no id under its username; a later group
-- event listing a member by that username alone does not bring it back (rule 6),
-- unless a stored contact has that username by then (the member is that contact's).
-- Members listed by id are kept out by the contact's tombstone.
CREATE TABLE deleted_usernames (
    username TEXT PRIMARY KEY,
    seq      INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX contacts_username ON contacts (username);
