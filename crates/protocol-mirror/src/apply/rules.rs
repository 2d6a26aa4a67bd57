//! The per-resource parts of the replica rules: parents, versions, embedded objects
//! and cascades.

use protocol_types::{Attachment, Contact, Conversation, Field, Group, Message, Resource};
use rusqlite::Connection;

use super::{Cascade, Outcome};
use crate::store::{self, Members, StoreError, Table};

/// The per-resource parts of the rules.
pub(super) trait Rules: Table {
    /// The parent whose tombstone makes this object's events ignored: from the
    /// payload when it has the key (even `null`), else from the stored row.
    fn parent<'a>(_payload: &'a Self, _stored: Option<&'a Self>) -> Option<(Resource, &'a str)> {
        None
    }

    /// Whether `payload` itself settles which parent the object has, so that an event
    /// of one never stored, ignored under a tombstoned parent, may tombstone it
    /// (`apply::tombstone_ignored`). Only a conversation's can be in doubt.
    fn parent_is_certain(_payload: &Self) -> bool {
        true
    }

    /// What an ignored event of this object, tombstoned under its tombstoned parent,
    /// lists that goes with it (a message's `attachments`): tombstoned, never filled
    /// or made (rule 7 reads embedded objects only of events that are not ignored).
    fn tombstone_listed(
        _conn: &Connection,
        _payload: &Self,
        _seq: i64,
        _cascade: &mut Cascade,
    ) -> Result<(), StoreError> {
        Ok(())
    }

    /// Whether `payload` is older than the stored row (only messages have versions).
    fn older(_payload: &Self, _stored: &Self) -> bool {
        false
    }

    /// Rule 7: embedded objects of a created/updated event that was not ignored.
    /// `held_back` is, for a backfilled copy that a newer event held back (`stale`), the
    /// row as it was before the copy filled it.
    fn embedded(
        _conn: &Connection,
        _payload: &Self,
        _outcome: Outcome,
        _held_back: Option<&Self>,
        _seq: i64,
    ) -> Result<(), StoreError> {
        Ok(())
    }

    /// Rule 7 for a delete that applies, before its cascade: only a message's
    /// `attachments` are read from a delete ("every message event that is not
    /// ignored"), and the cascade then removes and tombstones them with the rest of
    /// its attachments, so that no late event brings back one Protocol listed under
    /// the deleted message (a black-box probe). A group's `contacts` would be replaced
    /// only to be removed.
    fn embedded_in_delete(
        _conn: &Connection,
        _payload: &Self,
        _seq: i64,
    ) -> Result<(), StoreError> {
        Ok(())
    }

    /// Rule 6: removes what depends on the deleted object.
    fn cascade(
        _conn: &Connection,
        _payload: &Self,
        _stored: Option<&Self>,
        _seq: i64,
        _cascade: &mut Cascade,
    ) -> Result<(), StoreError> {
        Ok(())
    }
}

/// What a reference (an id, or a member's username) names: its string value, unless
/// that is empty. Protocol's ids are never empty (an event whose payload's `id` is
/// empty is refused), so `""` names nothing, as `null` does: a cascade on the
/// conversation `""` removed every message stored with an empty `conversation_id`, a
/// contact's delete with the username `""` removed every member listed as
/// `{"username": ""}`, and a conversation with the `group_id` `""` was a group's that
/// no group's delete by id could ever remove (reviews).
fn named(field: &Field<String>) -> Option<&str> {
    field
        .value()
        .map(String::as_str)
        .filter(|id| !id.is_empty())
}

/// What the payload's value of a key names when the payload has the key, else what
/// the stored one does.
fn effective<'a>(payload: &'a Field<String>, stored: Option<&'a Field<String>>) -> Option<&'a str> {
    if payload.is_present() {
        named(payload)
    } else {
        stored.and_then(named)
    }
}

/// The distinct things a key names in the stored row and the payload.
fn both<'a>(payload: &'a Field<String>, stored: Option<&'a Field<String>>) -> Vec<&'a str> {
    let mut ids: Vec<&str> = stored.and_then(named).into_iter().collect();
    if let Some(id) = named(payload)
        && !ids.contains(&id)
    {
        ids.push(id);
    }
    ids
}

impl Rules for Contact {
    /// Deletes the contact's 1:1 conversations (its `conversation_id`, unless that is
    /// a group conversation, and those with `contact_id` = the contact and no group)
    /// and its group memberships (by id, or by username for members listed without
    /// an id).
    fn cascade(
        conn: &Connection,
        payload: &Self,
        stored: Option<&Self>,
        seq: i64,
        cascade: &mut Cascade,
    ) -> Result<(), StoreError> {
        let mut conversations = Vec::new();
        for id in both(&payload.conversation_id, stored.map(|s| &s.conversation_id)) {
            match store::load::<Conversation>(conn, id)? {
                Some(conversation) if named(&conversation.group_id).is_none() => {
                    conversations.push(id.to_owned());
                }
                // A group's conversation is never a contact's to delete.
                Some(_) => {}
                None => remove_unstored_conversation(conn, id, seq, cascade)?,
            }
        }
        conversations.extend(store::one_to_one_conversations_of(conn, &payload.id)?);
        remove_conversations(conn, &conversations, seq, cascade)?;
        let usernames = both(&payload.username, stored.map(|s| &s.username));
        cascade.memberships += Members::remove_contact(conn, &payload.id, &usernames, seq)?;
        Ok(())
    }
}

impl Rules for Conversation {
    /// Without `group_id`, a payload does not say whether the conversation is a
    /// group's or 1:1: its contact's tombstone ignores the event, but is no ground to
    /// tombstone a conversation that may prove a group's, which no contact's delete
    /// removes (a review: one order of the same events left it tombstoned).
    fn parent_is_certain(payload: &Self) -> bool {
        payload.group_id.is_present()
    }

    /// A group conversation's parent is its group; a 1:1 conversation's is its contact.
    fn parent<'a>(payload: &'a Self, stored: Option<&'a Self>) -> Option<(Resource, &'a str)> {
        match effective(&payload.group_id, stored.map(|s| &s.group_id)) {
            Some(group) => Some((Resource::Group, group)),
            None => effective(&payload.contact_id, stored.map(|s| &s.contact_id))
                .map(|contact| (Resource::Contact, contact)),
        }
    }

    fn cascade(
        conn: &Connection,
        payload: &Self,
        _stored: Option<&Self>,
        seq: i64,
        cascade: &mut Cascade,
    ) -> Result<(), StoreError> {
        remove_messages_of(conn, &payload.id, seq, cascade)
    }
}

impl Rules for Message {
    fn parent<'a>(payload: &'a Self, stored: Option<&'a Self>) -> Option<(Resource, &'a str)> {
        effective(&payload.conversation_id, stored.map(|s| &s.conversation_id))
            .map(|conversation| (Resource::Conversation, conversation))
    }

    /// A missing or `null` `updated_at` sorts below every number.
    fn older(payload: &Self, stored: &Self) -> bool {
        payload.updated_at.value() < stored.updated_at.value()
    }

    /// Embedded attachments create missing rows and fill existing ones.
    fn embedded(
        conn: &Connection,
        payload: &Self,
        _outcome: Outcome,
        _held_back: Option<&Self>,
        seq: i64,
    ) -> Result<(), StoreError> {
        let Some(attachments) = payload.attachments.value() else {
            return Ok(());
        };
        for attachment in attachments {
            if store::is_tombstoned(conn, Resource::Attachment, &attachment.id)? {
                continue;
            }
            // The copy belongs to this message: a new row gets its id, and an existing
            // row without a `message_id` is filled with it (one with another keeps it).
            let mut copy = attachment.clone();
            copy.message_id = Field::Value(payload.id.clone());
            match store::load_row::<Attachment>(conn, &attachment.id)? {
                Some(mut row) => {
                    if row.model.fill(copy) {
                        store::save(conn, &row.model, seq, Some(&row.slot))?;
                    }
                }
                None => store::save(conn, &copy, seq, None)?,
            }
        }
        Ok(())
    }

    fn embedded_in_delete(conn: &Connection, payload: &Self, seq: i64) -> Result<(), StoreError> {
        Self::embedded(conn, payload, Outcome::Applied, None, seq)
    }

    /// The attachments it lists: one not stored is tombstoned; one stored without a
    /// `message_id`, or under this message, is removed and tombstoned, as the
    /// message's cascade would have once its copy gave it this message; one under
    /// another message stays as it is (an ignored event filled it: a review).
    fn tombstone_listed(
        conn: &Connection,
        payload: &Self,
        seq: i64,
        cascade: &mut Cascade,
    ) -> Result<(), StoreError> {
        let Some(attachments) = payload.attachments.value() else {
            return Ok(());
        };
        for attachment in attachments {
            let id = attachment.id.as_str();
            if store::is_tombstoned(conn, Resource::Attachment, id)? {
                continue;
            }
            match store::load::<Attachment>(conn, id)? {
                Some(row)
                    if row.message_id.is_present()
                        && row.message_id.value() != Some(&payload.id) => {}
                Some(_) => {
                    if remove(conn, Resource::Attachment, id, seq)? {
                        cascade.attachments += 1;
                    }
                }
                None => store::tombstone(conn, Resource::Attachment, id, seq, None)?,
            }
        }
        Ok(())
    }

    fn cascade(
        conn: &Connection,
        payload: &Self,
        _stored: Option<&Self>,
        seq: i64,
        cascade: &mut Cascade,
    ) -> Result<(), StoreError> {
        remove_attachments_of(conn, &payload.id, seq, cascade)
    }
}

impl Rules for Group {
    /// `contacts` replaces the membership when the event applied; a stale
    /// `group.created` sets it only if the group has no members.
    fn embedded(
        conn: &Connection,
        payload: &Self,
        outcome: Outcome,
        held_back: Option<&Self>,
        seq: i64,
    ) -> Result<(), StoreError> {
        if payload.contacts.is_absent() {
            return Ok(());
        }
        // A member whose contact is deleted stays removed (rule 6: no late event
        // brings back a row a delete removed): by its id's tombstone, or, listed by
        // username alone, by the deleted contact's username.
        let mut members = Vec::new();
        for member in payload.contacts.value().map_or(&[][..], Vec::as_slice) {
            let deleted = match (named(&member.id), named(&member.username)) {
                (Some(id), _) => store::is_tombstoned(conn, Resource::Contact, id)?,
                (None, Some(username)) => Members::is_deleted_username(conn, username)?,
                (None, None) => false,
            };
            if !deleted {
                members.push(member.clone());
            }
        }
        let replace = match (outcome, held_back) {
            (Outcome::Applied, _) => true,
            // A backfilled copy held back by a newer event only fills: the members too,
            // only where the group never had `contacts` (an event that set them, to an
            // empty list or null too, wins over the older page: a probe's page put back
            // the members such an event had removed).
            (Outcome::Stale, Some(before)) => before.contacts.is_absent(),
            (Outcome::Stale, None) => !Members::any(conn, &payload.id)?,
            _ => false,
        };
        if replace {
            Members::replace(conn, &payload.id, &members, seq)?;
        }
        Ok(())
    }

    /// Deletes the group's conversations (its `conversation_id`, and those with
    /// `group_id` = the group) and its memberships; never the member contacts.
    fn cascade(
        conn: &Connection,
        payload: &Self,
        stored: Option<&Self>,
        seq: i64,
        cascade: &mut Cascade,
    ) -> Result<(), StoreError> {
        let mut conversations = Vec::new();
        for id in both(&payload.conversation_id, stored.map(|s| &s.conversation_id)) {
            if store::load::<Conversation>(conn, id)?.is_some() {
                conversations.push(id.to_owned());
            } else {
                remove_unstored_conversation(conn, id, seq, cascade)?;
            }
        }
        conversations.extend(store::conversations_of_group(conn, &payload.id)?);
        remove_conversations(conn, &conversations, seq, cascade)?;
        cascade.memberships += Members::remove_group(conn, &payload.id)?;
        Ok(())
    }
}

impl Rules for Attachment {
    fn parent<'a>(payload: &'a Self, stored: Option<&'a Self>) -> Option<(Resource, &'a str)> {
        effective(&payload.message_id, stored.map(|s| &s.message_id))
            .map(|message| (Resource::Message, message))
    }
}

/// Deletes and tombstones a stored row; returns whether there was one.
fn remove(conn: &Connection, resource: Resource, id: &str, seq: i64) -> Result<bool, StoreError> {
    let Some(position) = store::delete(conn, resource, id)? else {
        return Ok(false);
    };
    store::tombstone(conn, resource, id, seq, Some(position))?;
    Ok(true)
}

/// Deletes and tombstones the stored conversations among `ids` and, transitively,
/// their messages and attachments.
fn remove_conversations(
    conn: &Connection,
    ids: &[String],
    seq: i64,
    cascade: &mut Cascade,
) -> Result<(), StoreError> {
    for id in ids {
        if remove(conn, Resource::Conversation, id, seq)? {
            cascade.conversations += 1;
            remove_messages_of(conn, id, seq, cascade)?;
        }
    }
    Ok(())
}

/// The conversation a deleted contact or group names, when it was never stored: its id
/// is tombstoned like a removed row's (no later event brings the conversation or a
/// message of it in), and the messages stored under it (orphans: their parent was
/// never seen) go with it, as a later cascade on their parent id removes orphans.
/// Before, they stayed, and new messages of the deleted conversation were applied.
fn remove_unstored_conversation(
    conn: &Connection,
    id: &str,
    seq: i64,
    cascade: &mut Cascade,
) -> Result<(), StoreError> {
    store::tombstone(conn, Resource::Conversation, id, seq, None)?;
    remove_messages_of(conn, id, seq, cascade)
}

fn remove_messages_of(
    conn: &Connection,
    conversation: &str,
    seq: i64,
    cascade: &mut Cascade,
) -> Result<(), StoreError> {
    for id in store::messages_of(conn, conversation)? {
        if remove(conn, Resource::Message, &id, seq)? {
            cascade.messages += 1;
            remove_attachments_of(conn, &id, seq, cascade)?;
        }
    }
    Ok(())
}

fn remove_attachments_of(
    conn: &Connection,
    message: &str,
    seq: i64,
    cascade: &mut Cascade,
) -> Result<(), StoreError> {
    for id in store::attachments_of(conn, message)? {
        if remove(conn, Resource::Attachment, &id, seq)? {
            cascade.attachments += 1;
        }
    }
    Ok(())
}
