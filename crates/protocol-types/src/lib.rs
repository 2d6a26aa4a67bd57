//! Typed models and event envelopes of Protocol's webhooks.
//!
//! Protocol (a hosted messaging service) notifies an app of changes to its contacts,
//! conversations, messages, groups and attachments by POSTing events such as
//! `{"id": "a056V7R7NmNRjl70", "type": "message.updated", "payload": {...}}`. This crate
//! reads and writes those events, and depends on `serde` and `serde_json` only.
//! serde_json is a public dependency: its `Map` and `Value` are in this API (`Object`,
//! every model's `extra`, [`parse_json`]), so a new major version of it would be one
//! of this crate too.
//!
//! - [`Event::from_slice`] parses a delivered body. It never panics; its [`EventError`]
//!   tells a malformed envelope ([`EventError::Syntax`], [`EventError::Envelope`]) from a
//!   well-formed event whose payload has a field of the wrong type ([`EventError::Field`],
//!   which names the field).
//! - The 15 documented types parse into [`EventType`] (`resource.action`); any other
//!   type string is kept as [`EventKind::Unknown`] with its raw payload, for forward
//!   compatibility.
//! - Every model field is a [`Field`]: absent, `null`, or a value, so partial `updated`
//!   payloads and explicit nulls stay distinguishable. Unknown payload keys are kept in
//!   each model's `extra`, so a round trip of a payload loses nothing (numbers are
//!   `serde_json` numbers: an integer beyond 64 bits comes back as a float unless
//!   serde_json's `arbitrary_precision` is on, and a float exactly only with the
//!   default feature `float-roundtrip`). Unknown keys of the envelope itself
//!   (beside `id`, `type` and `payload`) are kept in [`Event::extra`].
//! - Whether `arbitrary_precision` is on (any crate of a program can turn it on) changes
//!   only numbers: with it, `-0` is an integer and `1e400` a number (a wrong type in a
//!   timestamp, not a syntax error), and every number keeps its digits (but a `-0` in a
//!   documented integer field, a [`Timestamp`] or `file_size`, reads as 0 and comes back
//!   `0`; an exponent is written in serde_json's one spelling: `1E2` and `1e2` come back
//!   as `1e+2`). A key named `$serde_json::private::Number`, which serde_json with the
//!   feature reads as a number, stays a key either way in [`Event::from_slice`] (not through
//!   `serde_json::from_slice::<Event>`); [`parse_json`] reads any JSON document so.
//! - `null` is accepted as the value of every documented key but an object's own `id`.
//!   Inside an array (`attachments`, `contacts`, `reactions`, a reaction's usernames)
//!   a `null` is not an element of the array's type: a wrong type, named by its place
//!   (`payload.attachments[0]`). Keys that name another object (`conversation_id`,
//!   `message_id`, a member's `id`) may be empty strings; only an object's own `id`
//!   must not be.
//! - Timestamps are [`Timestamp`]s: integer Unix seconds, to and from `SystemTime`.
//! - Events and models implement `serde`'s `Serialize` and `Deserialize` as Protocol's
//!   JSON, [`Timestamp`] as an integer, and [`Resource`], [`Action`], [`EventType`] and
//!   [`EventKind`] as their names (`"message"`, `"message.updated"`). [`Field`] and
//!   [`Payload`] do not: a field's absence is a property of its parent object (use the
//!   models), and a payload's model depends on the event's type (use [`Event`]).
//!   `serde_json::from_slice::<Event>` takes the last of a repeated key and reports
//!   every error as a `serde_json::Error`; [`Event::from_slice`] refuses repeated keys
//!   and tells a malformed envelope from a wrong field (400 from 422): a receiver
//!   should use it. It also reads an escaped UTF-16 surrogate without its other half
//!   (valid JSON, which serde_json refuses) as U+FFFD, in text; an id holding one is a
//!   syntax error (ids differing only there would read as one): the event's and its
//!   payload's `id`, and for a documented type the keys of its model that name another
//!   object (`conversation_id`, a message's `contact.id`, its attachments' `id` and
//!   `message_id`, a group's members' `id`, ...). Other keys, unknown ones named like
//!   ids included, are text. A body in which that cannot be told (two keys of one
//!   object differing only where one holds a lone surrogate and the other U+FFFF) is
//!   a syntax error too, as is one with two keys of an object that differ only in
//!   their lone surrogates (or where one holds U+FFFD): read so, they are one key,
//!   repeated. [`parse_list_page`] reads a page of Protocol's REST lists with the same
//!   check of its objects' ids.
//! - Deserializing needs a self-describing format (JSON, CBOR, YAML...): payloads are
//!   read as maps of whatever keys they hold, so formats without types on the wire
//!   (bincode, postcard) can write an event but not read it back.
//! - Key order is not kept: a model writes its unknown keys first, then its documented
//!   ones in a fixed order. serde_json sorts an object's keys unless its
//!   `preserve_order` feature is on; with it, unknown keys keep their received order
//!   among themselves.
//! - The crate's default feature `float-roundtrip` turns on serde_json's
//!   `float_roundtrip` (for every crate of the program, as Cargo features are), so a
//!   float in an unknown key comes back as the same number; in serde_json's spelling of
//!   it, unless `arbitrary_precision` is on (`1e3` comes back `1000.0`, `-0` as
//!   `-0.0`). Without it (`default-features = false`), serde_json's faster float
//!   parsing may read a float one ulp off.
//! - Memory: a body is read into `serde_json` values, which take many times its size
//!   (about 90 times for a body of a thousand tiny objects, such as attachments; twice
//!   that for one that holds an escaped lone surrogate, which is read again). Bound the
//!   body's size before [`Event::from_slice`], as the mirror's server does (1 MiB).
//!
//! # Example
//!
//! ```
//! use protocol_types::{Event, EventKind, Field, Payload, Timestamp};
//!
//! let body = r#"{
//!   "id": "a056V7R7NmNRjl70",
//!   "type": "message.updated",
//!   "payload": {
//!     "id": "SIuAFUNKdSYHZF2w",
//!     "conversation_id": "xgQQXg3hrtjh7AvZ",
//!     "message": "I’m traveling with my dad. He’s at a meeting. I hate meetings.",
//!     "reactions": [{"red_angry_face": ["KateMcCallister"]}],
//!     "attachments": [],
//!     "read_at": 705103200,
//!     "created_at": 692233200,
//!     "updated_at": 692233200
//!   }
//! }"#;
//!
//! let event = Event::from_slice(body.as_bytes())?;
//! assert_eq!(event.kind.to_string(), "message.updated");
//! let Payload::Message(message) = &event.payload else { unreachable!() };
//! assert_eq!(message.updated_at, Field::Value(Timestamp(692233200)));
//! assert_eq!(message.contact, Field::Absent); // not in this partial payload
//! assert_eq!(message.reactions.value().unwrap()[0].0["red_angry_face"], ["KateMcCallister"]);
//!
//! // A round trip gives back the same JSON.
//! let original: serde_json::Value = serde_json::from_str(body)?;
//! assert_eq!(event.to_value(), original);
//!
//! // Unknown types are not errors.
//! let future = Event::from_slice(br#"{"id":"e2","type":"reaction.created","payload":{"id":"r1"}}"#)?;
//! assert_eq!(future.kind, EventKind::Unknown("reaction.created".into()));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

// What an embedder relies on: results that are easy to drop are marked, and every
// fallible function says when it fails.
#![warn(clippy::must_use_candidate, clippy::missing_errors_doc)]

mod error;
mod event;
mod field;
mod json;
mod models;
mod timestamp;

pub use error::{EventError, FieldError};
pub use event::{
    Action, Event, EventKind, EventType, Payload, Resource, UnknownName, json_type_name,
    parse_list_page,
};
pub use field::Field;
pub use json::{Object, parse_json};
pub use models::{
    Attachment, Contact, Conversation, EmbeddedContact, Group, Message, Model, Reaction,
};
pub use timestamp::Timestamp;

/// The README's example, compiled and run as a test.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
