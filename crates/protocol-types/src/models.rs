//! The five Protocol resources, and the objects embedded in them.
//!
//! Every struct keeps each documented key as a [`Field`] (absent, `null` or a value)
//! and every other key in `extra`, so that [`to_object`](Contact::to_object) gives back
//! exactly the keys that came in.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::json::{Json, Object, Slot, without_keys};
use crate::{Field, FieldError, Payload, Resource, Timestamp};

mod sealed {
    /// Keeps [`Model`](super::Model) to this crate's types.
    pub trait Sealed {}
}

/// Implemented by the five top-level resources, which can be the payload of an event.
///
/// Sealed: only this crate's five models implement it (an outside type whose
/// `into_payload` gave another resource's payload would build an event that reads back
/// as a different one, and a sealed trait can grow methods without breaking anyone).
pub trait Model: Sized + sealed::Sealed {
    /// Which resource this is.
    const RESOURCE: Resource;

    /// The object's id.
    fn id(&self) -> &str;

    /// Reads the object from JSON, naming the field on a wrong type.
    ///
    /// # Errors
    ///
    /// A documented key of the wrong JSON type, or a missing, empty or non-string `id`.
    fn from_object(object: Object) -> Result<Self, FieldError>;

    /// Writes the object as JSON, with exactly the keys it was read with.
    fn to_object(&self) -> Object;

    /// Wraps the object as an event payload.
    fn into_payload(self) -> Payload;

    /// Applies an `updated` payload: keys present in `patch` (an explicit `null`
    /// too) overwrite, absent keys are kept, unknown keys are merged.
    fn merge(&mut self, patch: Self);

    /// Applies a `created` payload to an existing object: `patch` only fills keys
    /// this object lacks. Returns whether anything changed.
    fn fill(&mut self, patch: Self) -> bool;
}

/// Defines a model struct and its JSON conversions, merge and fill rules.
macro_rules! model {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $( $(#[$fmeta:meta])* pub $field:ident : $ty:ty, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Default)]
        pub struct $name {
            $( $(#[$fmeta])* pub $field: $ty, )*
            /// Keys that are not documented, kept as they came so nothing is lost. A
            /// documented key put here is left out of [`Self::to_object`]: its field
            /// decides.
            pub extra: Object,
        }

        impl $name {
            /// Reads the object from JSON. A documented key of the wrong JSON type is an
            /// error naming it; unknown keys go to `extra`.
            ///
            /// # Errors
            ///
            /// A documented key of the wrong JSON type, named in the
            /// [`FieldError`]; so is an `id` that is missing, empty or not a
            /// string, except in an [`EmbeddedContact`], whose id may be missing or
            /// empty (only a wrong type is an error there).
            pub fn from_object(mut object: Object) -> Result<Self, FieldError> {
                $( let $field = <$ty as Slot>::take(&mut object, stringify!($field))?; )*
                without_keys(&mut object, &[$( stringify!($field) ),*]);
                Ok(Self { $( $field, )* extra: object })
            }

            /// Writes the object as JSON, with exactly the keys it was read with.
            pub fn to_object(&self) -> Object {
                let mut object = self.extra.clone();
                $( Slot::put(&self.$field, &mut object, stringify!($field)); )*
                object
            }

            /// Applies an `updated` payload: every key present in `patch` (including an
            /// explicit `null`, and unknown keys) overwrites; absent keys are kept. The
            /// ids are not compared (callers merge the payload of the object they
            /// looked up by its id): the object keeps its own, except an
            /// [`EmbeddedContact`], whose id is a field like the others.
            pub fn merge(&mut self, patch: Self) {
                $( Slot::merge(&mut self.$field, patch.$field); )*
                self.extra.extend(patch.extra);
            }

            /// Applies a `created` payload to an object that already exists: `patch`
            /// only fills keys this object lacks (a stored `null` is a value, not a
            /// gap). Returns whether anything changed.
            pub fn fill(&mut self, patch: Self) -> bool {
                let mut changed = false;
                $( changed |= Slot::fill(&mut self.$field, patch.$field); )*
                for (key, value) in patch.extra {
                    if let serde_json::map::Entry::Vacant(slot) = self.extra.entry(key) {
                        slot.insert(value);
                        changed = true;
                    }
                }
                changed
            }
        }

        impl Json for $name {
            const EXPECTED: &'static str = "object";

            fn from_json(value: Value) -> Result<Self, FieldError> {
                match value {
                    Value::Object(object) => Self::from_object(object),
                    other => Err(FieldError::new("", "object", crate::json::type_name(&other))),
                }
            }

            fn to_json(&self) -> Value {
                Value::Object(self.to_object())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                self.to_object().serialize(serializer)
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let object = Object::deserialize(deserializer)?;
                Self::from_object(object).map_err(serde::de::Error::custom)
            }
        }
    };
}

/// Implements [`Model`] for a top-level resource.
macro_rules! top_level {
    ($name:ident) => {
        impl $name {
            /// An object with this id and no other key (all fields absent): a starting
            /// point for building one, e.g. `Contact { username: "kevin".into(), ..Contact::new("c1") }`.
            pub fn new(id: impl Into<String>) -> Self {
                Self {
                    id: id.into(),
                    ..Self::default()
                }
            }
        }

        impl sealed::Sealed for $name {}

        impl Model for $name {
            const RESOURCE: Resource = Resource::$name;

            fn id(&self) -> &str {
                &self.id
            }

            fn from_object(object: Object) -> Result<Self, FieldError> {
                $name::from_object(object)
            }

            fn to_object(&self) -> Object {
                $name::to_object(self)
            }

            fn into_payload(self) -> Payload {
                Payload::$name(self)
            }

            fn merge(&mut self, patch: Self) {
                $name::merge(self, patch)
            }

            fn fill(&mut self, patch: Self) -> bool {
                $name::fill(self, patch)
            }
        }

        impl From<$name> for Payload {
            fn from(model: $name) -> Payload {
                Payload::$name(model)
            }
        }
    };
}

model! {
    /// A contact of the account (`contact.*` events).
    pub struct Contact {
        /// Unique id (required, non-empty).
        pub id: String,
        /// The contact's username.
        pub username: Field<String>,
        /// The contact's phone number.
        pub phone_number: Field<String>,
        /// URL of the contact's avatar.
        pub avatar_url: Field<String>,
        /// Name shown in the UI (defaults to the username there when `null`).
        pub display_name: Field<String>,
        /// Id of the 1:1 conversation with this contact.
        pub conversation_id: Field<String>,
        /// When the contact was last active.
        pub last_active_at: Field<Timestamp>,
        /// When the contact was created.
        pub created_at: Field<Timestamp>,
    }
}
top_level!(Contact);

model! {
    /// A conversation: 1:1 with a contact, or a group's (`group_id` set).
    pub struct Conversation {
        /// Unique id (required, non-empty).
        pub id: String,
        /// The other party's contact id.
        pub contact_id: Field<String>,
        /// The group, for a group conversation; `null` for a 1:1 conversation.
        pub group_id: Field<String>,
        /// The pinned message, if any.
        pub pinned_message_id: Field<String>,
        /// Whether the conversation is pinned.
        pub is_pinned: Field<bool>,
        /// Whether the conversation is muted.
        pub is_muted: Field<bool>,
        /// When the conversation was last active.
        pub last_active_at: Field<Timestamp>,
        /// When the conversation was last opened.
        pub last_opened_at: Field<Timestamp>,
        /// When the conversation was created.
        pub created_at: Field<Timestamp>,
        /// When the conversation was archived; `null` when it is not.
        pub archived_at: Field<Timestamp>,
    }
}
top_level!(Conversation);

model! {
    /// A message in a conversation. The only resource with a version, `updated_at`.
    pub struct Message {
        /// Unique id (required, non-empty).
        pub id: String,
        /// The conversation the message belongs to.
        pub conversation_id: Field<String>,
        /// The sender, embedded: a snapshot, not necessarily one of the account's contacts.
        pub contact: Field<EmbeddedContact>,
        /// The text of the message.
        pub message: Field<String>,
        /// Reactions, each mapping a reaction name to the usernames who reacted.
        pub reactions: Field<Vec<Reaction>>,
        /// Attachments, embedded.
        pub attachments: Field<Vec<Attachment>>,
        /// When the message was read.
        pub read_at: Field<Timestamp>,
        /// When the message was created.
        pub created_at: Field<Timestamp>,
        /// When the message was last changed: its version.
        pub updated_at: Field<Timestamp>,
    }
}
top_level!(Message);

model! {
    /// A group of contacts with a conversation of its own.
    pub struct Group {
        /// Unique id (required, non-empty).
        pub id: String,
        /// The group's name.
        pub name: Field<String>,
        /// The group's description.
        pub description: Field<String>,
        /// URL of the group's avatar.
        pub avatar_url: Field<String>,
        /// Id of the group's conversation.
        pub conversation_id: Field<String>,
        /// The members (Protocol's examples show members with only a `username`).
        pub contacts: Field<Vec<EmbeddedContact>>,
        /// When the group was created.
        pub created_at: Field<Timestamp>,
        /// When the group was archived; `null` when it is not.
        pub archived_at: Field<Timestamp>,
    }
}
top_level!(Group);

model! {
    /// A file attached to a message.
    pub struct Attachment {
        /// Unique id (required, non-empty).
        pub id: String,
        /// The message the file is attached to.
        pub message_id: Field<String>,
        /// The file's name.
        pub filename: Field<String>,
        /// Where the file can be downloaded.
        pub file_url: Field<String>,
        /// The file's MIME type.
        pub file_type: Field<String>,
        /// The file's size in bytes.
        pub file_size: Field<i64>,
        /// When the attachment was created.
        pub created_at: Field<Timestamp>,
    }
}
top_level!(Attachment);

model! {
    /// A contact embedded in another object: a message's sender or a group's member.
    ///
    /// Unlike a [`Contact`], its `id` may be missing (group members often carry only a
    /// `username`).
    pub struct EmbeddedContact {
        /// The contact's id, when given.
        pub id: Field<String>,
        /// The contact's username.
        pub username: Field<String>,
        /// The contact's phone number.
        pub phone_number: Field<String>,
        /// URL of the contact's avatar.
        pub avatar_url: Field<String>,
        /// Name shown in the UI.
        pub display_name: Field<String>,
        /// Id of the 1:1 conversation with this contact.
        pub conversation_id: Field<String>,
        /// When the contact was last active.
        pub last_active_at: Field<Timestamp>,
        /// When the contact was created.
        pub created_at: Field<Timestamp>,
    }
}

/// One entry of a message's `reactions`: reaction name to the usernames who reacted,
/// e.g. `{"red_angry_face": ["KateMcCallister"]}`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Reaction(pub BTreeMap<String, Vec<String>>);

impl Json for Reaction {
    const EXPECTED: &'static str = "object of username arrays";

    fn from_json(value: Value) -> Result<Self, FieldError> {
        BTreeMap::from_json(value).map(Reaction)
    }

    fn to_json(&self) -> Value {
        self.0.to_json()
    }
}

impl serde::Serialize for Reaction {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de> serde::Deserialize<'de> for Reaction {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        BTreeMap::deserialize(deserializer).map(Reaction)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn object(value: Value) -> Object {
        match value {
            Value::Object(object) => object,
            _ => panic!("not an object"),
        }
    }

    /// A documented key put in `extra` by hand went out beside (or instead of) its
    /// field: a body this crate's own parser then refused.
    #[test]
    fn documented_keys_in_extra_never_reach_the_object() {
        let mut contact = Contact::new("c1");
        contact.extra.insert("username".into(), json!(5));
        contact.extra.insert("id".into(), json!("other"));
        contact.extra.insert("nickname".into(), json!("k"));
        assert_eq!(
            Value::Object(contact.to_object()),
            json!({"id": "c1", "nickname": "k"})
        );
        contact.username = Field::Value("kevin".into());
        assert_eq!(contact.to_object()["username"], json!("kevin"));
    }

    #[test]
    fn absent_null_and_value_stay_distinct() {
        let contact = Contact::from_object(object(json!({
            "id": "c1", "display_name": null, "username": "kevin"
        })))
        .unwrap();
        assert_eq!(contact.display_name, Field::Null);
        assert_eq!(contact.username, Field::from("kevin"));
        assert_eq!(contact.phone_number, Field::Absent);
    }

    #[test]
    fn unknown_keys_survive_a_round_trip() {
        let input = json!({"id": "c1", "nickname": {"x": [1, 2]}, "username": "kevin"});
        let contact = Contact::from_object(object(input.clone())).unwrap();
        assert_eq!(contact.extra.get("nickname"), Some(&json!({"x": [1, 2]})));
        assert_eq!(Value::Object(contact.to_object()), input);
    }

    /// Unknown keys keep the order the parsed map gave them, and documented keys
    /// follow in their fixed order: with serde_json's `preserve_order`, the received
    /// order (`Map::remove` moved the last key into each removed one's place, so
    /// unknown keys came back shuffled). CI runs this crate's tests with the feature
    /// too; without it, maps are sorted and the test holds as well.
    #[test]
    fn unknown_keys_keep_their_order() {
        let body = r#"{"id":"c","z":1,"username":"k","a":2,"display_name":null,"m":3,"b":4}"#;
        let parsed: Object = serde_json::from_str(body).unwrap();
        let unknown: Vec<&str> = parsed
            .keys()
            .map(String::as_str)
            .filter(|key| ["z", "a", "m", "b"].contains(key))
            .collect();
        let contact = Contact::from_object(parsed.clone()).unwrap();
        let extra: Vec<&str> = contact.extra.keys().map(String::as_str).collect();
        assert_eq!(extra, unknown);
        let written = contact.to_object();
        let keys: Vec<&str> = written.keys().map(String::as_str).collect();
        let mut expected = unknown.clone();
        expected.extend(["id", "username", "display_name"]);
        let fixed_order: Object = expected
            .iter()
            .map(|k| (k.to_string(), Value::Null))
            .collect();
        assert_eq!(
            keys,
            fixed_order.keys().map(String::as_str).collect::<Vec<_>>()
        );
        assert_eq!(written, parsed);

        // A documented key put in `extra` and left absent goes without moving others.
        let mut contact = contact;
        contact.extra.insert("phone_number".into(), json!("1"));
        contact.extra.insert("y".into(), json!(5));
        let written = contact.to_object();
        let unknown: Vec<&String> = contact
            .extra
            .keys()
            .filter(|k| *k != "phone_number")
            .collect();
        let documented = ["id", "username", "display_name"];
        let written_unknown: Vec<&String> = written
            .keys()
            .filter(|k| !documented.contains(&k.as_str()))
            .collect();
        assert_eq!(written_unknown, unknown);
    }

    #[test]
    fn wrong_types_name_the_field() {
        let err = Message::from_object(object(json!({
            "id": "m1",
            "attachments": [{"id": "a1", "file_size": "big"}]
        })))
        .unwrap_err();
        assert_eq!(err.path(), "attachments[0].file_size");
        assert_eq!(err.expected(), "integer");
        assert_eq!(err.found(), "string");

        let err = Message::from_object(object(json!({
            "id": "m1", "reactions": [{"smile": ["a", 3]}]
        })))
        .unwrap_err();
        assert_eq!(err.path(), "reactions[0].smile[1]");

        let err =
            Conversation::from_object(object(json!({"id": "c", "is_muted": "yes"}))).unwrap_err();
        assert_eq!(
            err.to_string(),
            "field `is_muted`: expected boolean, found string"
        );

        let err =
            Group::from_object(object(json!({"id": "g", "contacts": [{"id": 7}]}))).unwrap_err();
        assert_eq!(err.path(), "contacts[0].id");
    }

    #[test]
    fn ids_are_required_and_non_empty() {
        for bad in [
            json!({}),
            json!({"id": ""}),
            json!({"id": 5}),
            json!({"id": null}),
        ] {
            let err = Attachment::from_object(object(bad)).unwrap_err();
            assert_eq!(err.path(), "id");
        }
        // An embedded contact needs no id.
        let member = EmbeddedContact::from_json(json!({"username": "kevin"})).unwrap();
        assert_eq!(member.id, Field::Absent);
    }

    #[test]
    fn merge_and_fill_follow_the_replica_rules() {
        let mut stored = Contact::from_object(object(json!({
            "id": "c1", "username": "kevin", "display_name": null, "x": 1
        })))
        .unwrap();
        let created = Contact::from_object(object(json!({
            "id": "c1", "username": "other", "display_name": "Kev",
            "phone_number": "1", "x": 2, "y": 3
        })))
        .unwrap();
        assert!(stored.clone().fill(created.clone()));
        let mut filled = stored.clone();
        filled.fill(created);
        assert_eq!(
            Value::Object(filled.to_object()),
            json!({"id": "c1", "username": "kevin", "display_name": null,
                   "phone_number": "1", "x": 1, "y": 3})
        );

        let update =
            Contact::from_object(object(json!({"id": "c1", "username": null, "x": 9}))).unwrap();
        stored.merge(update);
        assert_eq!(
            Value::Object(stored.to_object()),
            json!({"id": "c1", "username": null, "display_name": null, "x": 9})
        );
    }

    #[test]
    fn serde_impls_agree_with_object_conversions() {
        let json = json!({"id": "a1", "file_size": 10, "created_at": null, "z": true});
        let attachment: Attachment = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(attachment.file_size, Field::Value(10));
        assert_eq!(serde_json::to_value(&attachment).unwrap(), json);
        let err = serde_json::from_value::<Attachment>(json!({"id": "a1", "file_size": 1.5}))
            .unwrap_err();
        assert!(err.to_string().contains("file_size"), "{err}");
    }
}
