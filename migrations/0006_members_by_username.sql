-- A contact's delete removes its group memberships: the members listed with its id,
-- and the members listed by username alone (no id) under its username, which is how
-- Protocol's examples list group members. This index finds the latter.
CREATE INDEX group_members_username ON group_members (username) WHERE contact_id IS NULL;
