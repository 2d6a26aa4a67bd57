//! A reference model of the replica (SPEC section 4, "Replica semantics"), and a
//! generator of random webhook delivery streams to hold the real engine to it.
//!
//! The model is deliberately naive: plain maps of JSON objects, one straightforward
//! function per rule, no SQL, no indexes. It shares nothing with the engine but the
//! wire format (`protocol-types` decides which bodies are events, and which events have
//! a field of the wrong type). Test binaries include this file with
//! `#[path = ".../tests/model/mod.rs"] mod model;`.
//!
//! Where SPEC section 4 is silent, the model follows the interpretation the engine
//! documents; each such choice is marked "Choice:" below.

// Shared by several test binaries, each of which uses only a part of it.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use proptest::prelude::*;
use proptest::sample::Index;
use protocol_types::{Action, Event, EventError, EventType, Resource};
use serde_json::{Map, Value, json};

/// A JSON object, as stored and as printed.
pub(crate) type Object = Map<String, Value>;

// ---------------------------------------------------------------------------------------
// Outcomes and snapshots
// ---------------------------------------------------------------------------------------

/// What the event log records for an event (SPEC sections 3 and 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Applied,
    Stale,
    IgnoredDeleted,
    Unsupported,
    Rejected,
}

impl Outcome {
    /// The name the event log uses: `applied`, `stale`, ...
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Outcome::Applied => "applied",
            Outcome::Stale => "stale",
            Outcome::IgnoredDeleted => "ignored_deleted",
            Outcome::Unsupported => "unsupported",
            Outcome::Rejected => "rejected",
        }
    }
}

/// The rows a delete removed besides its own (rule 6), per table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Cascade {
    pub(crate) conversations: u64,
    pub(crate) messages: u64,
    pub(crate) attachments: u64,
    /// Group memberships: a member entry of a group's `contacts`.
    pub(crate) memberships: u64,
}

impl Cascade {
    fn count(&mut self, resource: Resource) {
        match resource {
            Resource::Conversation => self.conversations += 1,
            Resource::Message => self.messages += 1,
            Resource::Attachment => self.attachments += 1,
            Resource::Contact | Resource::Group => unreachable!("no cascade removes {resource}s"),
        }
    }
}

/// What delivering one body did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Receipt {
    /// A new event id, logged with this outcome and what its cascade removed.
    Logged {
        outcome: &'static str,
        cascade: Cascade,
    },
    /// An event id seen before: not applied again.
    Duplicate { first: &'static str },
    /// Not an event envelope at all (HTTP 400): nothing stored, nothing logged.
    Invalid,
}

/// The observable state of a replica: what `get` prints, and the tombstones.
///
/// Same shape as the engine's `protocol_mirror::Snapshot`, so that test binaries can
/// convert one into the other.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Snapshot {
    /// Output objects keyed by (resource singular name, id).
    pub(crate) objects: BTreeMap<(String, String), Value>,
    /// Tombstoned (resource singular name, id) pairs.
    pub(crate) tombstones: BTreeSet<(String, String)>,
}

impl Snapshot {
    /// A readable list of the differences between `self` (what was expected) and
    /// `actual`, or `None` when they are equal.
    pub(crate) fn diff(&self, actual: &Snapshot) -> Option<String> {
        let mut out = String::new();
        let keys: BTreeSet<_> = self.objects.keys().chain(actual.objects.keys()).collect();
        for key @ (resource, id) in keys {
            match (self.objects.get(key), actual.objects.get(key)) {
                (Some(want), Some(got)) if want != got => {
                    out += &format!("{resource} {id}: objects differ\n");
                    out += &object_diff(want, got);
                }
                (Some(want), None) => out += &format!("{resource} {id}: missing\n  want {want}\n"),
                (None, Some(got)) => out += &format!("{resource} {id}: unexpected\n  got  {got}\n"),
                _ => {}
            }
        }
        for (resource, id) in self.tombstones.difference(&actual.tombstones) {
            out += &format!("tombstone {resource} {id}: missing\n");
        }
        for (resource, id) in actual.tombstones.difference(&self.tombstones) {
            out += &format!("tombstone {resource} {id}: unexpected\n");
        }
        (!out.is_empty()).then_some(out)
    }
}

/// The keys on which two objects differ, one line each.
fn object_diff(want: &Value, got: &Value) -> String {
    let (Some(want), Some(got)) = (want.as_object(), got.as_object()) else {
        return format!("  want {want}\n  got  {got}\n");
    };
    let keys: BTreeSet<&String> = want.keys().chain(got.keys()).collect();
    let show = |value: Option<&Value>| value.map_or("(absent)".to_owned(), Value::to_string);
    keys.into_iter()
        .filter(|key| want.get(*key) != got.get(*key))
        .map(|key| {
            format!(
                "  .{key}\n    want {}\n    got  {}\n",
                show(want.get(key)),
                show(got.get(key))
            )
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// The model
// ---------------------------------------------------------------------------------------

/// An in-memory replica that follows SPEC section 4 rule by rule.
#[derive(Debug, Clone, Default)]
pub(crate) struct Model {
    /// Stored objects, exactly the keys received (merged), by (resource, id).
    rows: BTreeMap<(Resource, String), Object>,
    /// Each group's members, in the order of the array that last set them.
    members: BTreeMap<String, Vec<Value>>,
    /// Deleted ids, directly or by a cascade.
    tombstones: BTreeSet<(Resource, String)>,
    /// The usernames of deleted contacts (from their rows and their deletes).
    deleted_usernames: BTreeSet<String>,
    /// Every event id logged, in apply order, with its outcome (rule 1).
    log: Vec<(String, Outcome)>,
}

impl Model {
    /// An empty replica.
    pub(crate) fn new() -> Model {
        Model::default()
    }

    /// Delivers one webhook body.
    pub(crate) fn apply(&mut self, body: &[u8]) -> Receipt {
        let event = match Event::from_slice(body) {
            Ok(event) => event,
            // A known type with a wrong field type: logged as rejected, changes nothing.
            Err(EventError::Field { event_id, .. }) => {
                return self.log_once(event_id, |_| (Outcome::Rejected, Cascade::default()));
            }
            Err(_) => return Receipt::Invalid,
        };
        let payload: Value = serde_json::from_slice(body).expect("parsed above");
        let Some(Value::Object(payload)) = payload.get("payload").cloned() else {
            unreachable!("the envelope was checked");
        };
        let event_type = event.event_type();
        self.log_once(event.id, |model| match event_type {
            None => (Outcome::Unsupported, Cascade::default()),
            Some(event_type) => model.apply_event(event_type, payload),
        })
    }

    /// Rule 1: applies an event id at most once, and remembers its first outcome.
    fn log_once(
        &mut self,
        event_id: String,
        apply: impl FnOnce(&mut Model) -> (Outcome, Cascade),
    ) -> Receipt {
        if let Some((_, first)) = self.log.iter().find(|(id, _)| *id == event_id) {
            return Receipt::Duplicate {
                first: first.as_str(),
            };
        }
        let (outcome, cascade) = apply(self);
        self.log.push((event_id, outcome));
        Receipt::Logged {
            outcome: outcome.as_str(),
            cascade,
        }
    }

    fn apply_event(&mut self, event_type: EventType, payload: Object) -> (Outcome, Cascade) {
        let resource = event_type.resource;
        let id = payload["id"]
            .as_str()
            .expect("checked by the envelope")
            .to_owned();
        let key = (resource, id.clone());
        // Rule 2: nothing brings a tombstoned id back. Choice: deleting it again is
        // ignored too.
        if self.tombstones.contains(&key) {
            // Choice: what a message event lists goes with it, as its delete's
            // cascade took what it had.
            let mut cascade = Cascade::default();
            if resource == Resource::Message {
                self.tombstone_listed_attachments(&id, &payload, &mut cascade);
            }
            return (Outcome::IgnoredDeleted, cascade);
        }
        // Rule 2: a child whose parent is tombstoned is ignored, whatever the event.
        // Choice: its delete still removes and tombstones it (as its parent's cascade
        // would have), so that nothing brings back what Protocol deleted.
        let parent_gone = parent_of(resource, &payload, self.rows.get(&key))
            .is_some_and(|parent| self.tombstones.contains(&parent));
        if event_type.action == Action::Deleted {
            // Choice: an id never seen is still tombstoned, and still cascades.
            let mut cascade = Cascade::default();
            self.tombstones.insert(key.clone());
            let stored = self.rows.remove(&key);
            // Rule 7, "every message event that is not ignored": a message's delete
            // copies its `attachments` too, which its cascade then removes. Choice: an
            // ignored one tombstones those it lists, as its parent's cascade would
            // have, and fills none.
            if resource == Resource::Message && !parent_gone {
                self.copy_embedded_attachments(&id, &payload);
            } else if resource == Resource::Message {
                self.tombstone_listed_attachments(&id, &payload, &mut cascade);
            }
            self.cascade(resource, &id, stored.as_ref(), Some(&payload), &mut cascade);
            let outcome = if parent_gone {
                Outcome::IgnoredDeleted
            } else {
                Outcome::Applied
            };
            return (outcome, cascade);
        }
        // Choice: a child never stored is tombstoned all the same, with what it lists
        // and what is stored under it, as its parent's cascade would have had it come
        // first: a later partial update names no parent. A stored one (under another,
        // living parent) stays; so does one of a conversation whose payload has no
        // `group_id` (it may prove a group's, which no contact's delete removes).
        if parent_gone {
            let mut cascade = Cascade::default();
            let certain = resource != Resource::Conversation || payload.contains_key("group_id");
            // One stored without a parent (an update came first) goes too.
            let unparented = self
                .rows
                .get(&key)
                .is_none_or(|row| parent_of(resource, row, None).is_none());
            if unparented && certain {
                self.tombstones.insert(key.clone());
                let stored = self.rows.remove(&key);
                if resource == Resource::Message {
                    self.tombstone_listed_attachments(&id, &payload, &mut cascade);
                }
                self.cascade(resource, &id, stored.as_ref(), Some(&payload), &mut cascade);
            }
            return (Outcome::IgnoredDeleted, cascade);
        }
        let outcome = match self.rows.get_mut(&key) {
            // Rules 3 and 4: either action inserts a missing row.
            None => {
                self.rows.insert(key, payload.clone());
                Outcome::Applied
            }
            // Rule 3: `created` on an existing row only fills. Choice: `stale` even when
            // it filled something.
            Some(stored) if event_type.action == Action::Created => {
                fill(stored, &payload);
                Outcome::Stale
            }
            // Rule 5: an older message version only fills.
            Some(stored)
                if resource == Resource::Message && version(&payload) < version(stored) =>
            {
                fill(stored, &payload);
                Outcome::Stale
            }
            // Rule 4: merge.
            Some(stored) => {
                stored.extend(payload.clone());
                Outcome::Applied
            }
        };
        match resource {
            Resource::Message => self.copy_embedded_attachments(&id, &payload),
            Resource::Group => self.set_members(&id, &payload, outcome),
            _ => {}
        }
        (outcome, Cascade::default())
    }

    /// The attachments an ignored message event lists, tombstoned with it: one not
    /// stored; one stored without `message_id`, or under this message (removed). One
    /// under another message stays as it is.
    fn tombstone_listed_attachments(
        &mut self,
        message_id: &str,
        payload: &Object,
        cascade: &mut Cascade,
    ) {
        let Some(Value::Array(attachments)) = payload.get("attachments") else {
            return;
        };
        for attachment in attachments {
            let id = attachment["id"].as_str().expect("typed as required");
            let key = (Resource::Attachment, id.to_owned());
            if self.tombstones.contains(&key) {
                continue;
            }
            match self.rows.get(&key).map(|row| row.get("message_id")) {
                Some(Some(other)) if other.as_str() != Some(message_id) => continue,
                Some(_) => {
                    self.rows.remove(&key);
                    cascade.attachments += 1;
                }
                None => {}
            }
            self.tombstones.insert(key);
        }
    }

    /// Rule 7: a message's `attachments` insert missing attachment rows and fill
    /// existing ones, never overwriting; tombstoned ones are ignored.
    fn copy_embedded_attachments(&mut self, message_id: &str, payload: &Object) {
        let Some(Value::Array(attachments)) = payload.get("attachments") else {
            return;
        };
        for attachment in attachments {
            let attachment = attachment.as_object().expect("typed as objects");
            let id = attachment["id"].as_str().expect("typed as required");
            let key = (Resource::Attachment, id.to_owned());
            if self.tombstones.contains(&key) {
                continue;
            }
            // The copy belongs to this message: a new row gets its id, and an existing
            // row without a `message_id` is filled with it (one with another keeps it).
            let mut copy = attachment.clone();
            copy.insert("message_id".into(), message_id.into());
            match self.rows.get_mut(&key) {
                Some(stored) => fill(stored, &copy),
                None => {
                    self.rows.insert(key, copy);
                }
            }
        }
    }

    /// Rule 7: a group's `contacts` is its membership.
    fn set_members(&mut self, group_id: &str, payload: &Object, outcome: Outcome) {
        let Some(contacts) = payload.get("contacts") else {
            return;
        };
        // Choice: `"contacts": null` means no members; an empty id or username names
        // no contact, as everywhere. A member whose contact is
        // tombstoned stays removed (rule 6: no late event brings a removed row back);
        // one listed by username alone, while a deleted contact had that username and
        // no stored contact has it.
        let contacts: Vec<Value> = contacts
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(
                |member| match (name_in(member, "id"), name_in(member, "username")) {
                    (Some(id), _) => !self
                        .tombstones
                        .contains(&(Resource::Contact, id.to_owned())),
                    (None, Some(name)) => {
                        !self.deleted_usernames.contains(name)
                            || self.rows.iter().any(|((resource, _), row)| {
                                *resource == Resource::Contact
                                    && row.get("username").and_then(Value::as_str) == Some(name)
                            })
                    }
                    (None, None) => true,
                },
            )
            .collect();
        let members = self.members.entry(group_id.to_owned()).or_default();
        // A stale `group.created` sets members only if the group has none.
        if outcome == Outcome::Applied || members.is_empty() {
            *members = contacts;
        }
    }

    /// Rules 2 and 6: removes and tombstones `(resource, id)`, then cascades, counting
    /// in `cascade` what else it removes.
    fn delete(
        &mut self,
        resource: Resource,
        id: &str,
        payload: Option<&Object>,
        cascade: &mut Cascade,
    ) {
        self.tombstones.insert((resource, id.to_owned()));
        let stored = self.rows.remove(&(resource, id.to_owned()));
        self.cascade(resource, id, stored.as_ref(), payload, cascade);
    }

    /// Rule 6: what deleting `(resource, id)` removes besides itself, transitively.
    /// `stored` is the row as it was, `payload` the delete event's payload (for a
    /// direct delete). Choice: the conversation a contact or a group names is the one
    /// its stored row names and the one its payload names, both; an empty id names
    /// none (Protocol's ids are never empty).
    fn cascade(
        &mut self,
        resource: Resource,
        id: &str,
        stored: Option<&Object>,
        payload: Option<&Object>,
        cascade: &mut Cascade,
    ) {
        let named = |key: &str| -> BTreeSet<String> {
            [stored, payload]
                .into_iter()
                .flatten()
                .filter_map(|object| object.get(key).and_then(Value::as_str))
                .filter(|id| !id.is_empty())
                .map(str::to_owned)
                .collect()
        };
        let mut doomed = BTreeSet::new();
        match resource {
            Resource::Contact => {
                // Members with its id, and members without an id under its username
                // (from the stored row and from the payload).
                let usernames: Vec<String> = [
                    stored.and_then(|row| row.get("username")),
                    payload.and_then(|p| p.get("username")),
                ]
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .filter(|name| !name.is_empty())
                .map(str::to_owned)
                .collect();
                self.deleted_usernames.extend(usernames.iter().cloned());
                // A username another stored contact has is that contact's: its members
                // listed by username alone stay (as a group event keeps them).
                let usernames: Vec<String> = usernames
                    .into_iter()
                    .filter(|name| {
                        !self.rows.iter().any(|((resource, other), row)| {
                            *resource == Resource::Contact
                                && other != id
                                && row.get("username").and_then(Value::as_str) == Some(name)
                        })
                    })
                    .collect();
                for members in self.members.values_mut() {
                    let before = members.len();
                    members.retain(|member| match name_in(member, "id") {
                        Some(member_id) => member_id != id,
                        None => !name_in(member, "username")
                            .is_some_and(|name| usernames.iter().any(|u| u == name)),
                    });
                    cascade.memberships += (before - members.len()) as u64;
                }
                // Only 1:1 conversations, never a group's.
                for conversation in named("conversation_id") {
                    match self.row(Resource::Conversation, &conversation) {
                        Some(row) if is_one_to_one(row) => {
                            doomed.insert((Resource::Conversation, conversation));
                        }
                        Some(_) => {}
                        None => doomed.extend(self.unstored_conversation(&conversation)),
                    }
                }
                doomed.extend(self.children(Resource::Conversation, |row| {
                    str_field(row, "contact_id") == Some(id) && is_one_to_one(row)
                }));
            }
            Resource::Group => {
                let members = self.members.remove(id).unwrap_or_default();
                cascade.memberships += members.len() as u64;
                for conversation in named("conversation_id") {
                    if self.row(Resource::Conversation, &conversation).is_some() {
                        doomed.insert((Resource::Conversation, conversation));
                    } else {
                        doomed.extend(self.unstored_conversation(&conversation));
                    }
                }
                doomed.extend(self.children(Resource::Conversation, |row| {
                    str_field(row, "group_id") == Some(id)
                }));
            }
            Resource::Conversation => doomed.extend(self.children(Resource::Message, |row| {
                str_field(row, "conversation_id") == Some(id)
            })),
            Resource::Message => doomed.extend(self.children(Resource::Attachment, |row| {
                str_field(row, "message_id") == Some(id)
            })),
            Resource::Attachment => {}
        }
        for (child_resource, child_id) in doomed {
            // An earlier branch of this cascade may have removed it already.
            if self.row(child_resource, &child_id).is_some() {
                cascade.count(child_resource);
                self.delete(child_resource, &child_id, None, cascade);
            }
        }
    }

    /// A conversation a deleted contact or group names but that was never stored: its
    /// id is tombstoned (no row removed, none counted) and its orphan messages are
    /// returned, to be removed with the rest of the cascade.
    fn unstored_conversation(&mut self, id: &str) -> Vec<(Resource, String)> {
        self.tombstones
            .insert((Resource::Conversation, id.to_owned()));
        self.children(Resource::Message, |row| {
            str_field(row, "conversation_id") == Some(id)
        })
    }

    fn row(&self, resource: Resource, id: &str) -> Option<&Object> {
        self.rows.get(&(resource, id.to_owned()))
    }

    /// The stored rows of `resource` that satisfy `is_child`.
    fn children(
        &self,
        resource: Resource,
        is_child: impl Fn(&Object) -> bool,
    ) -> Vec<(Resource, String)> {
        self.rows
            .iter()
            .filter(|((r, _), row)| *r == resource && is_child(row))
            .map(|(key, _)| key.clone())
            .collect()
    }

    /// The event log: every event id logged, in sequence order, with its outcome.
    pub(crate) fn log(&self) -> Vec<(String, &'static str)> {
        self.log
            .iter()
            .map(|(id, outcome)| (id.clone(), outcome.as_str()))
            .collect()
    }

    /// Rule 8: the replica as `get` prints it, and the tombstones.
    pub(crate) fn snapshot(&self) -> Snapshot {
        let objects = self
            .rows
            .iter()
            .map(|((resource, id), row)| {
                let mut object = row.clone();
                match resource {
                    Resource::Message => {
                        let attachments = self.attachments_of(id);
                        // Choice: the key is shown when it was ever received or when
                        // rows point at the message; received as `null` (a stored
                        // `null` is a value), it stays `null` while no rows do.
                        let received = object.get("attachments").is_some_and(|a| !a.is_null());
                        if received || !attachments.is_empty() {
                            object.insert("attachments".into(), Value::Array(attachments));
                        }
                    }
                    Resource::Group if object.contains_key("contacts") => {
                        let members = self.members.get(id).cloned().unwrap_or_default();
                        // As for attachments: `null` stays while the group has no members.
                        if !object["contacts"].is_null() || !members.is_empty() {
                            object.insert("contacts".into(), Value::Array(members));
                        }
                    }
                    _ => {}
                }
                ((resource.to_string(), id.clone()), Value::Object(object))
            })
            .collect();
        let tombstones = self
            .tombstones
            .iter()
            .map(|(resource, id)| (resource.to_string(), id.clone()))
            .collect();
        Snapshot {
            objects,
            tombstones,
        }
    }

    /// The attachment rows of a message, ordered by `(created_at, id)`; a missing or
    /// null `created_at` sorts first, as SQL's NULL does.
    fn attachments_of(&self, message_id: &str) -> Vec<Value> {
        let mut rows: Vec<(&String, &Object)> = self
            .rows
            .iter()
            .filter(|((resource, _), row)| {
                *resource == Resource::Attachment
                    && str_field(row, "message_id") == Some(message_id)
            })
            .map(|((_, id), row)| (id, row))
            .collect();
        rows.sort_by_key(|(id, row)| (row.get("created_at").and_then(Value::as_i64), *id));
        rows.into_iter()
            .map(|(_, row)| Value::Object(row.clone()))
            .collect()
    }
}

/// Rule 2: the parent whose tombstone makes an event for this object ignored. A key the
/// payload carries (even as `null`) wins over the stored row's.
fn parent_of(
    resource: Resource,
    payload: &Object,
    stored: Option<&Object>,
) -> Option<(Resource, String)> {
    let field = |key: &str| -> Option<&Value> {
        if payload.contains_key(key) {
            payload.get(key)
        } else {
            stored.and_then(|row| row.get(key))
        }
    };
    let parent = |resource: Resource, key: &str| {
        field(key)
            .and_then(Value::as_str)
            .filter(|id| !id.is_empty())
            .map(|id| (resource, id.to_owned()))
    };
    match resource {
        Resource::Contact | Resource::Group => None,
        // A group conversation's parent is its group; a 1:1 conversation's, its contact.
        Resource::Conversation => {
            parent(Resource::Group, "group_id").or_else(|| parent(Resource::Contact, "contact_id"))
        }
        Resource::Message => parent(Resource::Conversation, "conversation_id"),
        Resource::Attachment => parent(Resource::Message, "message_id"),
    }
}

/// Rule 3: takes from `patch` only the keys `stored` lacks (a stored null is a value).
fn fill(stored: &mut Object, patch: &Object) {
    for (key, value) in patch {
        if !stored.contains_key(key) {
            stored.insert(key.clone(), value.clone());
        }
    }
}

/// Rule 5: a message's version; a missing or null `updated_at` sorts below every number.
fn version(message: &Object) -> Option<i64> {
    message.get("updated_at").and_then(Value::as_i64)
}

/// A conversation with no `group_id` (null, absent or empty).
fn is_one_to_one(conversation: &Object) -> bool {
    str_field(conversation, "group_id").is_none()
}

/// What a reference names: its string, unless empty (Protocol's ids are never empty,
/// so `""` names nothing, as `null` does).
fn str_field<'a>(object: &'a Object, key: &str) -> Option<&'a str> {
    object
        .get(key)
        .and_then(Value::as_str)
        .filter(|id| !id.is_empty())
}

/// [`str_field`] of an embedded object (a group's member).
fn name_in<'a>(member: &'a Value, key: &str) -> Option<&'a str> {
    member.as_object().and_then(|member| str_field(member, key))
}

// ---------------------------------------------------------------------------------------
// The generator: coherent histories of one small account, delivered badly
// ---------------------------------------------------------------------------------------

/// One webhook delivery: the exact body bytes. A duplicate delivery repeats them.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Delivery(pub(crate) Vec<u8>);

impl fmt::Debug for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.0))
    }
}

/// The stream, one body per line, numbered: for failure messages.
pub(crate) fn describe(deliveries: &[Delivery]) -> String {
    deliveries
        .iter()
        .enumerate()
        .map(|(i, delivery)| format!("{i:3} {delivery:?}\n"))
        .collect()
}

// The universe of one history. Ids are shared across resources on purpose (a contact
// and a group are both `k1`, a message and an attachment both `m1`): rows and
// tombstones are keyed by (resource, id).

/// Contacts: (id, the 1:1 conversation named by `conversation_id`). `k3` names a
/// conversation that never exists; `k4` names group `g1`'s, which its delete spares
/// (a review: no history reached that rule, and the engine passed without it).
const CONTACTS: [(&str, &str); 4] = [("k1", "v1"), ("k2", "v2"), ("k3", "v9"), ("k4", "v3")];

/// Conversations: (id, contact_id, group_id). `v1` and `v2` are 1:1; `v3` is group
/// `g1`'s and `v4` group `k1`'s, both with a `contact_id` too.
const CONVERSATIONS: [(&str, &str, Option<&str>); 4] = [
    ("v1", "k1", None),
    ("v2", "k2", None),
    ("v3", "k1", Some("g1")),
    ("v4", "k3", Some("k1")),
];

/// Groups: (id, conversation_id).
const GROUPS: [(&str, &str); 2] = [("g1", "v3"), ("k1", "v4")];

/// Messages. Ids are opaque strings: one is not plain ASCII, and has a quote.
const MESSAGES: [&str; 6] = ["m1", "m2", "m3", "m4", "m5", "m6'é"];

const ATTACHMENTS: [&str; 4] = ["f1", "f2", "f3", "m1"];

/// The documented keys of each resource besides `id`.
fn keys(resource: Resource) -> &'static [&'static str] {
    match resource {
        Resource::Contact => &[
            "username",
            "phone_number",
            "avatar_url",
            "display_name",
            "conversation_id",
            "last_active_at",
            "created_at",
        ],
        Resource::Conversation => &[
            "contact_id",
            "group_id",
            "pinned_message_id",
            "is_pinned",
            "is_muted",
            "last_active_at",
            "last_opened_at",
            "created_at",
            "archived_at",
        ],
        Resource::Message => &[
            "conversation_id",
            "contact",
            "message",
            "reactions",
            "attachments",
            "read_at",
            "created_at",
            "updated_at",
        ],
        Resource::Group => &[
            "name",
            "description",
            "avatar_url",
            "conversation_id",
            "contacts",
            "created_at",
            "archived_at",
        ],
        Resource::Attachment => &[
            "message_id",
            "filename",
            "file_url",
            "file_type",
            "file_size",
            "created_at",
        ],
    }
}

/// The keys naming an object's parents, which a delete payload may carry.
fn parent_keys(resource: Resource) -> &'static [&'static str] {
    match resource {
        Resource::Contact | Resource::Group | Resource::Message => &["conversation_id"],
        Resource::Conversation => &["contact_id", "group_id"],
        Resource::Attachment => &["message_id"],
    }
}

/// The random parts of the account's structure.
#[derive(Debug, Clone)]
struct Universe {
    /// Each message's conversation (an index into `CONVERSATIONS`).
    message_conversation: Vec<usize>,
    /// Each attachment's message (an index into `MESSAGES`).
    attachment_message: Vec<usize>,
}

/// One object of the universe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct ObjectRef {
    resource: Resource,
    index: usize,
}

/// How many objects of each resource the universe has.
const COUNTS: [(Resource, usize); 5] = [
    (Resource::Contact, CONTACTS.len()),
    (Resource::Conversation, CONVERSATIONS.len()),
    (Resource::Group, GROUPS.len()),
    (Resource::Message, MESSAGES.len()),
    (Resource::Attachment, ATTACHMENTS.len()),
];

impl ObjectRef {
    fn all() -> Vec<ObjectRef> {
        COUNTS
            .into_iter()
            .flat_map(|(resource, n)| (0..n).map(move |index| ObjectRef { resource, index }))
            .collect()
    }

    /// The next object of the same resource (the first after the last).
    fn neighbour(self) -> ObjectRef {
        let (_, n) = COUNTS
            .into_iter()
            .find(|(resource, _)| *resource == self.resource)
            .expect("every resource is counted");
        ObjectRef {
            index: (self.index + 1) % n,
            ..self
        }
    }

    fn id(self) -> &'static str {
        match self.resource {
            Resource::Contact => CONTACTS[self.index].0,
            Resource::Conversation => CONVERSATIONS[self.index].0,
            Resource::Group => GROUPS[self.index].0,
            Resource::Message => MESSAGES[self.index],
            Resource::Attachment => ATTACHMENTS[self.index],
        }
    }
}

/// How one key of a generated payload is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Choice {
    Absent,
    Null,
    /// A value of the key's type; the number picks which one.
    Value(u8),
}

/// One event in an object's life.
#[derive(Debug, Clone)]
enum Step {
    /// A full payload (a few keys may be absent), maybe with an unknown key.
    Created {
        keys: Vec<Choice>,
        extra: Option<u8>,
    },
    /// A partial payload: the keys listed (by index into `keys()`), maybe an unknown key.
    Updated {
        keys: Vec<(usize, Choice)>,
        extra: Option<u8>,
    },
    /// A payload of the id, maybe with the parent keys (each the object's, or null).
    Deleted { parents: Choice },
}

/// An object's events, each with the tick at which Protocol sends it.
#[derive(Debug, Clone)]
struct Script {
    object: ObjectRef,
    steps: Vec<(u8, Step)>,
}

/// Events that are not part of any object's life.
#[derive(Debug, Clone)]
enum Noise {
    /// `reaction.created`: unsupported.
    UnknownType,
    /// A known type with a field of the wrong type (at the top level, or deeper):
    /// rejected.
    WrongType { object: Index, deep: bool },
    /// An envelope whose payload has no id: invalid, not logged.
    NotAnEnvelope,
}

/// How a delivery stream departs from the order Protocol sent it in.
#[derive(Debug, Clone)]
enum Mishap {
    /// Two nearby deliveries swap places.
    Swap { at: Index, distance: usize },
    /// A delivery is sent again a little later, with the same bytes.
    Duplicate { of: Index, delay: usize },
    /// A delivery arrives much later than sent.
    Late { of: Index, delay: usize },
}

/// Random coherent histories of the account, delivered with reorderings, duplicates
/// and late arrivals: the exact bodies, in delivery order.
pub(crate) fn history() -> impl Strategy<Value = Vec<Delivery>> {
    let scripts: Vec<_> = ObjectRef::all().into_iter().map(script).collect();
    let noise = prop::collection::vec((any::<u8>(), noise()), 0..=3);
    let mishaps = prop::collection::vec(mishap(), 0..=8);
    (universe(), scripts, noise, mishaps).prop_map(|(universe, scripts, noise, mishaps)| {
        deliver(universe.send(&scripts, &noise), &mishaps)
    })
}

fn universe() -> impl Strategy<Value = Universe> {
    (
        prop::collection::vec(0..CONVERSATIONS.len(), MESSAGES.len()),
        prop::collection::vec(0..MESSAGES.len(), ATTACHMENTS.len()),
    )
        .prop_map(|(message_conversation, attachment_message)| Universe {
            message_conversation,
            attachment_message,
        })
}

/// An object's life: usually created, updated up to twice, sometimes deleted; now and
/// then deleted first, or sent out of order.
fn script(object: ObjectRef) -> impl Strategy<Value = Script> {
    let n = keys(object.resource).len();
    let extra = || proptest::option::weighted(0.2, any::<u8>());
    // Message updates mostly carry their version, the last key.
    let key_index = if object.resource == Resource::Message {
        prop_oneof![1 => Just(n - 1), 2 => 0..n].boxed()
    } else {
        (0..n).boxed()
    };
    let some_keys_absent = prop_oneof![
        1 => Just(Choice::Absent),
        1 => Just(Choice::Null),
        8 => any::<u8>().prop_map(Choice::Value),
    ];
    let present = prop_oneof![
        1 => Just(Choice::Null),
        4 => any::<u8>().prop_map(Choice::Value),
    ];
    let created = (prop::collection::vec(some_keys_absent, n), extra())
        .prop_map(|(keys, extra)| Step::Created { keys, extra });
    let updated = (prop::collection::vec((key_index, present), 1..=3), extra())
        .prop_map(|(keys, extra)| Step::Updated { keys, extra });
    let deleted = prop_oneof![
        4 => Just(Choice::Absent),
        1 => Just(Choice::Null),
        4 => any::<u8>().prop_map(Choice::Value),
    ]
    .prop_map(|parents| Step::Deleted { parents });
    (
        proptest::option::weighted(0.85, created),
        prop::collection::vec(updated, 0..=2),
        proptest::option::weighted(0.3, deleted),
        proptest::bool::weighted(0.15),
        proptest::bool::weighted(0.8),
        prop::collection::vec(any::<u8>(), 4),
    )
        .prop_map(
            move |(created, updated, deleted, deleted_first, in_order, mut ticks)| {
                let mut steps: Vec<Step> = created.into_iter().chain(updated).collect();
                match deleted {
                    Some(deleted) if deleted_first => steps.insert(0, deleted),
                    Some(deleted) => steps.push(deleted),
                    None => {}
                }
                ticks.truncate(steps.len());
                if in_order {
                    ticks.sort_unstable();
                }
                Script {
                    object,
                    steps: ticks.into_iter().zip(steps).collect(),
                }
            },
        )
}

fn noise() -> impl Strategy<Value = Noise> {
    prop_oneof![
        Just(Noise::UnknownType),
        (any::<Index>(), any::<bool>())
            .prop_map(|(object, deep)| Noise::WrongType { object, deep }),
        Just(Noise::NotAnEnvelope),
    ]
}

fn mishap() -> impl Strategy<Value = Mishap> {
    prop_oneof![
        (any::<Index>(), 1..=3usize).prop_map(|(at, distance)| Mishap::Swap { at, distance }),
        (any::<Index>(), 0..=10usize).prop_map(|(of, delay)| Mishap::Duplicate { of, delay }),
        (any::<Index>(), 5..=30usize).prop_map(|(of, delay)| Mishap::Late { of, delay }),
    ]
}

/// Applies the mishaps, in turn, to the stream as sent.
fn deliver(mut stream: Vec<Delivery>, mishaps: &[Mishap]) -> Vec<Delivery> {
    for mishap in mishaps {
        let len = stream.len();
        if len == 0 {
            break;
        }
        match *mishap {
            Mishap::Swap { at, distance } => {
                let i = at.index(len);
                stream.swap(i, (i + distance).min(len - 1));
            }
            Mishap::Duplicate { of, delay } => {
                let i = of.index(len);
                let copy = stream[i].clone();
                stream.insert((i + 1 + delay).min(len), copy);
            }
            Mishap::Late { of, delay } => {
                let i = of.index(len);
                let late = stream.remove(i);
                stream.insert((i + delay).min(len - 1), late);
            }
        }
    }
    stream
}

impl Universe {
    /// The bodies Protocol sends, in the order it sends them, with fresh event ids.
    fn send(&self, scripts: &[Script], noise: &[(u8, Noise)]) -> Vec<Delivery> {
        // (tick, tie-breaker, type, payload); `None` as the type marks a body that is
        // not an event envelope.
        let mut events: Vec<(u8, usize, Option<String>, Object)> = Vec::new();
        for script in scripts {
            for (tick, step) in &script.steps {
                let (action, payload) = self.payload(script.object, step);
                let event_type = format!("{}.{action}", script.object.resource);
                events.push((*tick, events.len(), Some(event_type), payload));
            }
        }
        for (tick, noise) in noise {
            let (event_type, payload) = self.noise(noise);
            events.push((*tick, events.len(), event_type, payload));
        }
        events.sort_by_key(|(tick, order, ..)| (*tick, *order));
        events
            .into_iter()
            .enumerate()
            .map(|(n, (_, _, event_type, payload))| {
                let envelope = match event_type {
                    Some(event_type) => {
                        json!({"id": format!("e{n:02}"), "type": event_type, "payload": payload})
                    }
                    None => json!({"id": format!("e{n:02}"), "type": "contact.updated",
                                   "payload": {"username": "no id"}}),
                };
                Delivery(serde_json::to_vec(&envelope).expect("JSON values serialize"))
            })
            .collect()
    }

    /// The payload of one step of `object`'s life.
    fn payload(&self, object: ObjectRef, step: &Step) -> (Action, Object) {
        let mut payload = Object::new();
        payload.insert("id".into(), object.id().into());
        let keys = keys(object.resource);
        let extra = match step {
            Step::Created {
                keys: choices,
                extra,
            } => {
                for (key, choice) in keys.iter().zip(choices) {
                    self.set(&mut payload, object, key, *choice);
                }
                extra
            }
            Step::Updated { keys: picks, extra } => {
                for (index, choice) in picks {
                    self.set(&mut payload, object, keys[*index], *choice);
                }
                extra
            }
            Step::Deleted { parents } => {
                // Now and then the payload names another object's parents (its
                // neighbour's), and a contact's delete a username: a delete follows
                // the stored row's and the payload's both (a test review: following
                // the payload's alone passed every test).
                let named = match parents {
                    Choice::Value(v) if v % 4 == 3 => object.neighbour(),
                    _ => object,
                };
                for key in parent_keys(object.resource) {
                    self.set(&mut payload, named, key, *parents);
                }
                if let (Resource::Contact, Choice::Value(v)) = (object.resource, parents)
                    && v % 2 == 1
                {
                    payload.insert("username".into(), self.value(object, "username", *v));
                }
                // Now and then a message's delete lists attachments (rule 7 reads
                // them from it): its own, or its neighbour's.
                if let (Resource::Message, Choice::Value(v)) = (object.resource, parents)
                    && v % 3 != 0
                {
                    let copies = self.embedded_attachments(named.index, v.rotate_left(2));
                    payload.insert("attachments".into(), copies);
                }
                return (Action::Deleted, payload);
            }
        };
        if let Some(v) = extra {
            let key = ["x_note", "x_flag"][usize::from(v % 2)];
            payload.insert(key.into(), json!(format!("extra {}", v % 3)));
        }
        let action = match step {
            Step::Created { .. } => Action::Created,
            _ => Action::Updated,
        };
        (action, payload)
    }

    fn set(&self, payload: &mut Object, object: ObjectRef, key: &str, choice: Choice) {
        match choice {
            Choice::Absent => {}
            Choice::Null => {
                payload.insert(key.into(), Value::Null);
            }
            Choice::Value(v) => {
                payload.insert(key.into(), self.value(object, key, v));
            }
        }
    }

    /// A value for `key` of `object`: parents are the universe's, but one time in
    /// eight a neighbour's (the object moves: no history moved one before, a review);
    /// other values are picked by `v` from small sets, so that equal values and ties
    /// are common.
    fn value(&self, object: ObjectRef, key: &str, v: u8) -> Value {
        let i = object.index;
        let moved = v % 8 == 7;
        match (object.resource, key) {
            (Resource::Conversation, "contact_id") if moved => {
                CONVERSATIONS[(i + 1) % CONVERSATIONS.len()].1.into()
            }
            (Resource::Conversation, "group_id") if moved => {
                CONVERSATIONS[(i + 1) % CONVERSATIONS.len()].2.into()
            }
            // An empty `group_id` names no group: the conversation is 1:1 (a probe).
            (Resource::Conversation, "group_id") if v % 8 == 6 => "".into(),
            (Resource::Message, "conversation_id") if moved => {
                let conversation = (self.message_conversation[i] + 1) % CONVERSATIONS.len();
                CONVERSATIONS[conversation].0.into()
            }
            (Resource::Attachment, "message_id") if moved => {
                MESSAGES[(self.attachment_message[i] + 1) % MESSAGES.len()].into()
            }
            // An empty id, which names no conversation (a review: a cascade on it
            // removed the messages stored with an empty `conversation_id`).
            (Resource::Contact | Resource::Group, "conversation_id") if moved => "".into(),
            (Resource::Message, "conversation_id") if v % 8 == 6 => "".into(),
            (Resource::Contact, "conversation_id") => CONTACTS[i].1.into(),
            // Usernames that groups list members by (`members`), so that a contact's
            // delete removes members listed by username alone; and an empty one, which
            // names no member (a review: it removed every `{"username": ""}`).
            (Resource::Contact, "username") => {
                ["kate", "kevin", "frank", "lone", ""][usize::from(v % 5)].into()
            }
            (Resource::Conversation, "contact_id") => CONVERSATIONS[i].1.into(),
            (Resource::Conversation, "group_id") => CONVERSATIONS[i].2.into(),
            (Resource::Conversation, "pinned_message_id") => {
                MESSAGES[usize::from(v) % MESSAGES.len()].into()
            }
            (Resource::Message, "conversation_id") => {
                CONVERSATIONS[self.message_conversation[i]].0.into()
            }
            (Resource::Message, "contact") => sender(v),
            (Resource::Message, "reactions") => reactions(v),
            (Resource::Message, "attachments") => self.embedded_attachments(i, v),
            // Few versions, so that ties are common.
            (Resource::Message, "updated_at") => json!(100 + u32::from(v % 3)),
            (Resource::Group, "conversation_id") => GROUPS[i].1.into(),
            (Resource::Group, "contacts") => members(v),
            (Resource::Attachment, "message_id") => MESSAGES[self.attachment_message[i]].into(),
            (Resource::Attachment, "file_size") => json!(u32::from(v) * 100),
            // Few creation times, so that the `(created_at, id)` order needs the id.
            (Resource::Attachment, "created_at") => json!(10 + u32::from(v % 3)),
            (_, "is_pinned" | "is_muted") => v.is_multiple_of(2).into(),
            (_, key) if key.ends_with("_at") => json!(1000 + u32::from(v % 4)),
            (_, key) => format!("{key} {}", v % 4).into(),
        }
    }

    /// Embedded copies of (some of) message `i`'s attachments, picked by the low bits
    /// of `v`; the high bits make them partial, give them a `message_id` (the message's,
    /// or null), or add an unknown key.
    fn embedded_attachments(&self, i: usize, v: u8) -> Value {
        let mine = (0..ATTACHMENTS.len()).filter(|&a| self.attachment_message[a] == i);
        mine.enumerate()
            .filter(|(bit, _)| v & (1 << bit) != 0)
            .map(|(_, a)| {
                let mut copy =
                    json!({"id": ATTACHMENTS[a], "filename": format!("copy {}.pdf", v % 3)});
                if v & 0x10 == 0 {
                    copy["file_url"] = json!(format!("https://files.invalid/{}", ATTACHMENTS[a]));
                    copy["file_type"] = json!("application/pdf");
                    copy["file_size"] = json!(v);
                    copy["created_at"] = json!(10 + u32::from((v >> 5) % 3));
                }
                match v & 0x60 {
                    0x20 => copy["message_id"] = json!(MESSAGES[i]),
                    0x40 => copy["message_id"] = Value::Null,
                    _ => {}
                }
                if v & 0x80 != 0 {
                    copy["x_thumbnail"] = json!("thumb.png");
                }
                copy
            })
            .collect()
    }

    /// An event that is not part of any object's life: (type, payload), or no type for
    /// a body that is not an event envelope.
    fn noise(&self, noise: &Noise) -> (Option<String>, Object) {
        let (event_type, payload) = match noise {
            Noise::UnknownType => ("reaction.created", json!({"id": "m1", "emoji": "tada"})),
            Noise::WrongType { object, deep } => {
                let objects = ObjectRef::all();
                let object = objects[object.index(objects.len())];
                let id = object.id();
                match object.resource {
                    Resource::Contact => (
                        "contact.updated",
                        json!({"id": id, "last_active_at": "soon"}),
                    ),
                    Resource::Conversation => {
                        ("conversation.updated", json!({"id": id, "is_muted": "yes"}))
                    }
                    Resource::Message if !deep => {
                        ("message.updated", json!({"id": id, "read_at": "soon"}))
                    }
                    Resource::Message => (
                        "message.created",
                        json!({"id": id, "attachments": [{"id": "f1", "file_size": "big"}]}),
                    ),
                    Resource::Group => {
                        ("group.created", json!({"id": id, "contacts": [{"id": 7}]}))
                    }
                    Resource::Attachment => {
                        ("attachment.created", json!({"id": id, "file_size": "big"}))
                    }
                }
            }
            Noise::NotAnEnvelope => return (None, Object::new()),
        };
        let Value::Object(payload) = payload else {
            unreachable!("payloads are objects");
        };
        (Some(event_type.to_owned()), payload)
    }
}

/// A message's embedded sender: a contact of the account, or a stranger.
fn sender(v: u8) -> Value {
    match v % 4 {
        0 => json!({"id": "k1", "username": "kevin"}),
        1 => json!({"id": "k2", "username": "frank", "avatar_url": "https://a.invalid/frank.jpg"}),
        2 => json!({"username": "stranger"}),
        _ => json!({"id": "s9", "username": "outsider", "created_at": 5, "x_badge": "new"}),
    }
}

fn reactions(v: u8) -> Value {
    match v % 3 {
        0 => json!([]),
        1 => json!([{"smile": ["kevin"]}]),
        _ => json!([{"red_angry_face": ["KateMcCallister", "kevin"]}, {"tada": []}]),
    }
}

/// A group's members: some picked by the bits of `v` but the fifth, maybe in reverse
/// order. Some have an id, some only a username, as in Protocol's examples, and some
/// an empty one, which names no contact (a review).
fn members(v: u8) -> Value {
    let pool = [
        (0, json!({"id": "k1", "username": "kevin"})),
        (1, json!({"username": "kate"})),
        (
            2,
            json!({"id": "k2", "username": "frank", "display_name": null}),
        ),
        (3, json!({"id": "k3"})),
        (5, json!({"username": ""})),
        (6, json!({"id": "", "username": "lone"})),
    ];
    let mut picked: Vec<Value> = pool
        .into_iter()
        .filter(|(bit, _)| v & (1 << bit) != 0)
        .map(|(_, member)| member)
        .collect();
    if v & 0x10 != 0 {
        picked.reverse();
    }
    Value::Array(picked)
}
