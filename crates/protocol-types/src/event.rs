//! The event envelope: `{"id", "type", "payload"}`.

use std::fmt;
use std::str::FromStr;

use serde_json::Value;

use crate::json::{Marked, Object, parse_noting_surrogates, type_name};
use crate::{Attachment, Contact, Conversation, EventError, FieldError, Group, Message, Model};

/// The five kinds of object Protocol sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Resource {
    /// `contact`
    Contact,
    /// `conversation`
    Conversation,
    /// `message`
    Message,
    /// `group`
    Group,
    /// `attachment`
    Attachment,
}

impl Resource {
    /// All five, in a fixed order.
    pub const ALL: [Resource; 5] = [
        Resource::Contact,
        Resource::Conversation,
        Resource::Message,
        Resource::Group,
        Resource::Attachment,
    ];

    /// The singular name used in event types: `contact`, `conversation`, ...
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Resource::Contact => "contact",
            Resource::Conversation => "conversation",
            Resource::Message => "message",
            Resource::Group => "group",
            Resource::Attachment => "attachment",
        }
    }

    /// The plural name used in REST paths: `contacts`, `conversations`, ...
    #[must_use]
    pub fn plural(self) -> &'static str {
        match self {
            Resource::Contact => "contacts",
            Resource::Conversation => "conversations",
            Resource::Message => "messages",
            Resource::Group => "groups",
            Resource::Attachment => "attachments",
        }
    }

    fn from_singular(name: &str) -> Option<Resource> {
        Resource::ALL.into_iter().find(|r| r.as_str() == name)
    }
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not one of Protocol's resources, actions or event types.
///
/// Its `Display` and `Debug` show at most the first 100 characters of the name, which
/// may be a sender's.
#[derive(Clone, PartialEq, Eq)]
pub struct UnknownName {
    what: &'static str,
    name: String,
}

impl UnknownName {
    /// What the name was read as: `resource`, `action` or `event type`.
    #[must_use]
    pub fn what(&self) -> &'static str {
        self.what
    }

    /// The name as it was given, whole.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl fmt::Display for UnknownName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The name may be a sender's: shortened, control characters escaped.
        write!(
            f,
            "unknown {} `{}`",
            self.what,
            crate::error::Shown(&self.name)
        )
    }
}

impl fmt::Debug for UnknownName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UnknownName")
            .field("what", &self.what)
            .field("name", &crate::error::Shown(&self.name))
            .finish()
    }
}

impl std::error::Error for UnknownName {}

impl FromStr for Resource {
    type Err = UnknownName;

    /// Accepts the singular or the plural name: `message` or `messages`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Resource::ALL
            .into_iter()
            .find(|r| r.as_str() == s || r.plural() == s)
            .ok_or_else(|| UnknownName {
                what: "resource",
                name: s.to_owned(),
            })
    }
}

/// What happened to the object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Action {
    /// `created`
    Created,
    /// `updated`
    Updated,
    /// `deleted`
    Deleted,
}

impl Action {
    /// All three, in a fixed order.
    pub const ALL: [Action; 3] = [Action::Created, Action::Updated, Action::Deleted];

    /// `created`, `updated` or `deleted`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Created => "created",
            Action::Updated => "updated",
            Action::Deleted => "deleted",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Action {
    type Err = UnknownName;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Action::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| UnknownName {
                what: "action",
                name: s.to_owned(),
            })
    }
}

/// One of the 15 documented event types, `<resource>.<action>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventType {
    /// The kind of object.
    pub resource: Resource,
    /// What happened to it.
    pub action: Action,
}

impl EventType {
    /// The event type of `action` on `resource`.
    #[must_use]
    pub fn new(resource: Resource, action: Action) -> Self {
        EventType { resource, action }
    }

    /// All 15 documented event types.
    pub fn all() -> impl Iterator<Item = EventType> {
        Resource::ALL
            .into_iter()
            .flat_map(|r| Action::ALL.into_iter().map(move |a| EventType::new(r, a)))
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.resource, self.action)
    }
}

impl FromStr for EventType {
    type Err = UnknownName;

    /// Parses exactly `<resource>.<action>` with the singular resource name.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.split_once('.')
            .and_then(|(resource, action)| {
                Some(EventType::new(
                    Resource::from_singular(resource)?,
                    action.parse().ok()?,
                ))
            })
            .ok_or_else(|| UnknownName {
                what: "event type",
                name: s.to_owned(),
            })
    }
}

/// The `type` of an event: one of the documented types, or any other string.
///
/// Unknown types are not errors: Protocol may add types, and the mirror records them
/// as unsupported rather than refusing them.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// One of the 15 documented types.
    Known(EventType),
    /// Any other type string, kept as it came. One built by hand that holds a
    /// documented type's name is written as that type, and read back as
    /// [`EventKind::Known`]: [`EventKind::from_str`] is how a kind is made from a name.
    ///
    /// Its [`Display`](fmt::Display) writes the string as the sender wrote it, of any
    /// length and with any characters (line ends too): quote or escape it before it
    /// goes into a log line.
    Unknown(String),
}

impl EventKind {
    /// The documented type, if this is one.
    #[must_use]
    pub fn known(&self) -> Option<EventType> {
        match self {
            EventKind::Known(event_type) => Some(*event_type),
            EventKind::Unknown(_) => None,
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EventKind::Known(event_type) => event_type.fmt(f),
            EventKind::Unknown(raw) => f.write_str(raw),
        }
    }
}

impl FromStr for EventKind {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s.parse::<EventType>() {
            Ok(event_type) => EventKind::Known(event_type),
            Err(_) => EventKind::Unknown(s.to_owned()),
        })
    }
}

impl From<EventType> for EventKind {
    fn from(event_type: EventType) -> Self {
        EventKind::Known(event_type)
    }
}

/// Serializes a name type as its string (`"message"`, `"updated"`, `"message.updated"`)
/// and reads it back with its `FromStr`, so embedders can keep these in their own
/// serde types.
macro_rules! serde_as_string {
    ($($name:ty),*) => {$(
        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = String::deserialize(deserializer)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
    )*};
}

serde_as_string!(Resource, Action, EventType, EventKind);

/// The object an event carries: typed for the documented types, raw JSON otherwise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    /// A `contact.*` payload.
    Contact(Contact),
    /// A `conversation.*` payload.
    Conversation(Conversation),
    /// A `message.*` payload.
    Message(Message),
    /// A `group.*` payload.
    Group(Group),
    /// An `attachment.*` payload.
    Attachment(Attachment),
    /// The payload of an event of unknown type, as it came (its `id` is a non-empty
    /// string: the envelope guarantees that for every type).
    Unknown(Object),
}

impl Payload {
    /// Reads the payload of a `resource` event.
    ///
    /// # Errors
    ///
    /// A documented key of the wrong JSON type (or a missing, empty or non-string
    /// `id`), named in the [`FieldError`].
    pub fn from_object(resource: Resource, object: Object) -> Result<Payload, FieldError> {
        Ok(match resource {
            Resource::Contact => Payload::Contact(Contact::from_object(object)?),
            Resource::Conversation => Payload::Conversation(Conversation::from_object(object)?),
            Resource::Message => Payload::Message(Message::from_object(object)?),
            Resource::Group => Payload::Group(Group::from_object(object)?),
            Resource::Attachment => Payload::Attachment(Attachment::from_object(object)?),
        })
    }

    /// The object's id.
    pub fn id(&self) -> &str {
        match self {
            Payload::Contact(m) => &m.id,
            Payload::Conversation(m) => &m.id,
            Payload::Message(m) => &m.id,
            Payload::Group(m) => &m.id,
            Payload::Attachment(m) => &m.id,
            Payload::Unknown(object) => object.get("id").and_then(Value::as_str).unwrap_or(""),
        }
    }

    /// Which resource the payload is, unless it is unknown.
    #[must_use]
    pub fn resource(&self) -> Option<Resource> {
        Some(match self {
            Payload::Contact(_) => Resource::Contact,
            Payload::Conversation(_) => Resource::Conversation,
            Payload::Message(_) => Resource::Message,
            Payload::Group(_) => Resource::Group,
            Payload::Attachment(_) => Resource::Attachment,
            Payload::Unknown(_) => return None,
        })
    }

    /// The payload as JSON, with exactly the keys it was read with.
    #[must_use]
    pub fn to_object(&self) -> Object {
        match self {
            Payload::Contact(m) => m.to_object(),
            Payload::Conversation(m) => m.to_object(),
            Payload::Message(m) => m.to_object(),
            Payload::Group(m) => m.to_object(),
            Payload::Attachment(m) => m.to_object(),
            Payload::Unknown(object) => object.clone(),
        }
    }
}

/// One webhook delivery: `{"id": ..., "type": ..., "payload": {...}}`.
///
/// `kind` and `payload` agree: a [`EventKind::Known`] event carries the payload
/// variant of its resource, an [`EventKind::Unknown`] one carries
/// [`Payload::Unknown`]. The constructors and parsers keep it so; the fields are
/// public, so code that sets them by hand keeps it too (serializing writes what the
/// fields hold, and a `type` that names another resource than the payload's is a
/// body [`Event::from_slice`] reads with that other resource's rules).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The event's unique id (non-empty), used to deliver it at most once.
    pub id: String,
    /// The event's `type`.
    pub kind: EventKind,
    /// The object the event is about.
    pub payload: Payload,
    /// The envelope's other keys, kept as received (none are documented): a key
    /// Protocol adds to its envelopes survives a read and a write, as a model's
    /// unknown keys do (they were dropped: an embedder's review).
    pub extra: Object,
}

/// What is wrong with `bytes` if they are not UTF-8, as a syntax error says it:
/// serde_json called a `\xff` inside a string "invalid unicode code point" (a probe).
/// Looked at only once the document failed to parse.
fn not_utf8(bytes: &[u8]) -> Option<String> {
    let error = std::str::from_utf8(bytes).err()?;
    Some(format!(
        "not UTF-8 text: the byte at offset {} does not begin or continue a character",
        error.valid_up_to()
    ))
}

impl Event {
    /// An event of a documented type: `action` on `model`.
    ///
    /// Nothing is checked here: an event whose `id` or whose model's id is empty is
    /// built as given, and [`Event::from_slice`] refuses its JSON (ids must be
    /// non-empty strings); give both a non-empty id.
    ///
    /// ```
    /// use protocol_types::{Action, Contact, Event};
    ///
    /// let event = Event::new("evt1", Action::Updated, Contact {
    ///     display_name: "Kev".into(),
    ///     ..Contact::new("c1")
    /// });
    /// assert_eq!(
    ///     event.to_value(),
    ///     serde_json::json!({"id": "evt1", "type": "contact.updated",
    ///                        "payload": {"id": "c1", "display_name": "Kev"}}),
    /// );
    /// ```
    pub fn new<M: Model>(id: impl Into<String>, action: Action, model: M) -> Event {
        Event {
            id: id.into(),
            kind: EventKind::Known(EventType::new(M::RESOURCE, action)),
            payload: model.into_payload(),
            extra: Object::new(),
        }
    }

    /// An event of any type string with a raw payload, checked as a received one
    /// would be (a documented type gets a typed payload, or the field error).
    ///
    /// # Errors
    ///
    /// As [`Event::from_value`]: an empty `id` or payload `id` is
    /// [`EventError::Envelope`], a documented field of the wrong type
    /// [`EventError::Field`].
    pub fn from_parts(
        id: impl Into<String>,
        kind: &str,
        payload: Object,
    ) -> Result<Event, EventError> {
        let mut envelope = Object::new();
        envelope.insert("id".into(), Value::String(id.into()));
        envelope.insert("type".into(), Value::String(kind.to_owned()));
        envelope.insert("payload".into(), Value::Object(payload));
        Event::from_value(Value::Object(envelope))
    }

    /// Parses a delivered body. Never panics; the error says what is wrong and where.
    ///
    /// Stricter than `serde_json::from_slice`: a key repeated within one object is a
    /// syntax error, so every reader of the body sees the same document.
    ///
    /// # Errors
    ///
    /// [`EventError::Syntax`] for bytes that are not one JSON document (or repeat a
    /// key), [`EventError::Envelope`] for an envelope without a non-empty string `id`,
    /// a string `type` and an object `payload` with a non-empty string `id` (what a
    /// receiver answers 400), [`EventError::Field`] for a documented type whose payload
    /// has a field of the wrong JSON type (422).
    pub fn from_slice(bytes: &[u8]) -> Result<Event, EventError> {
        let (value, marked) = parse_noting_surrogates(bytes).map_err(|e| EventError::Syntax {
            message: not_utf8(bytes).unwrap_or_else(|| e.to_string()),
        })?;
        // Text may be cut inside an emoji; an id may not: two ids that differed only in
        // their lone surrogates would read the same, and the second event would be
        // answered as the first one's duplicate (a black-box probe).
        let refused = match &marked {
            Marked::NoLoneSurrogate => None,
            Marked::Read(marked) => holds_a_replaced_id(&value, marked).then_some(REPLACED_ID),
            Marked::Unreadable => Some(UNTOLD_IDS),
        };
        if let Some(message) = refused {
            return Err(EventError::Syntax {
                message: message.into(),
            });
        }
        Event::from_value(value)
    }

    /// Reads an event from a JSON value (see [`Event::from_slice`]). Unknown keys of
    /// the envelope itself are kept in [`Event::extra`].
    ///
    /// # Errors
    ///
    /// As [`Event::from_slice`], but for [`EventError::Syntax`].
    pub fn from_value(value: Value) -> Result<Event, EventError> {
        let Value::Object(mut envelope) = value else {
            return Err(EventError::Envelope {
                field: "the document",
                expected: "a JSON object",
            });
        };
        let id = match envelope.get_mut("id").map(Value::take) {
            Some(Value::String(id)) if !id.is_empty() => id,
            _ => {
                return Err(EventError::Envelope {
                    field: "id",
                    expected: "a non-empty string",
                });
            }
        };
        let kind = match envelope.get_mut("type").map(Value::take) {
            Some(Value::String(kind)) => kind,
            _ => {
                return Err(EventError::Envelope {
                    field: "type",
                    expected: "a string",
                });
            }
        };
        let payload = match envelope.get_mut("payload").map(Value::take) {
            Some(Value::Object(payload)) => payload,
            _ => {
                return Err(EventError::Envelope {
                    field: "payload",
                    expected: "an object",
                });
            }
        };
        if !matches!(payload.get("id"), Some(Value::String(s)) if !s.is_empty()) {
            return Err(EventError::Envelope {
                field: "payload.id",
                expected: "a non-empty string",
            });
        }
        // Taken above as `null`s, removed in one pass: the unknown keys left keep their
        // received order under serde_json's `preserve_order`, whose `Map::remove`
        // moves the last key into the removed one's place.
        crate::json::without_keys(&mut envelope, &["id", "type", "payload"]);
        let kind: EventKind = kind.parse().unwrap_or_else(|never| match never {});
        let payload = match &kind {
            EventKind::Known(event_type) => Payload::from_object(event_type.resource, payload)
                .map_err(|source| EventError::Field {
                    event_id: id.clone(),
                    event_type: *event_type,
                    source: source.within("payload"),
                })?,
            EventKind::Unknown(_) => Payload::Unknown(payload),
        };
        Ok(Event {
            id,
            kind,
            payload,
            extra: envelope,
        })
    }

    /// The documented type, unless the event's type is unknown.
    #[must_use]
    pub fn event_type(&self) -> Option<EventType> {
        self.kind.known()
    }

    /// The event as a JSON value: the envelope with exactly the keys it was read with,
    /// its payload's too. `id`, `type` and `payload` are the fields', whatever
    /// [`Event::extra`] holds.
    #[must_use]
    pub fn to_value(&self) -> Value {
        let mut envelope = self.extra.clone();
        envelope.insert("id".into(), Value::String(self.id.clone()));
        envelope.insert("type".into(), Value::String(self.kind.to_string()));
        envelope.insert("payload".into(), Value::Object(self.payload.to_object()));
        Value::Object(envelope)
    }

    /// The event as compact JSON bytes, ready to sign and send.
    #[must_use]
    pub fn to_vec(&self) -> Vec<u8> {
        self.to_value().to_string().into_bytes()
    }
}

impl serde::Serialize for Event {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.to_value().serialize(serializer)
    }
}

impl<'de> serde::Deserialize<'de> for Event {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        Event::from_value(value).map_err(serde::de::Error::custom)
    }
}

/// Whether a string that names an object held a lone surrogate: the event's `id` and
/// its payload's (what every envelope must have), and for a documented type the keys
/// of its model that name another object (a message's `conversation_id`, the `id` of
/// its sender and of its attachments, ...; see [`REFERENCES`]). Other keys, unknown
/// ones named like ids (`external_id`) included, hold text like any other: a sender
/// that cut one inside an emoji had its whole event refused (400), though the mirror
/// stores it as it stores text. The rest of an unknown type's payload is only logged.
///
/// `value` is the document with its lone surrogates read as U+FFFD, `marked` the same
/// with them read as U+FFFF: a string that differs between the two held one. (U+FFFD
/// itself in an id, with a lone surrogate anywhere else, was refused.)
fn holds_a_replaced_id(value: &Value, marked: &Value) -> bool {
    let resource = value
        .get("type")
        .and_then(Value::as_str)
        .and_then(|kind| kind.parse::<EventType>().ok())
        .map(|kind| kind.resource);
    names_replaced(Some(value), Some(marked), &["id"])
        || object_holds_a_replaced_id(resource, value.get("payload"), marked.get("payload"))
}

/// Whether `object` (read as `marked` too: see [`holds_a_replaced_id`]) held a lone
/// surrogate in its `id`, or, as an object of `resource`, in a key naming another.
fn object_holds_a_replaced_id(
    resource: Option<Resource>,
    object: Option<&Value>,
    marked: Option<&Value>,
) -> bool {
    names_replaced(object, marked, &["id"])
        || REFERENCES
            .iter()
            .filter(|(of, _, _)| Some(*of) == resource)
            .any(|(_, embedded, keys)| match embedded {
                None => names_replaced(object, marked, keys),
                Some(embedded) => names_replaced(
                    object.and_then(|o| o.get(embedded)),
                    marked.and_then(|m| m.get(embedded)),
                    keys,
                ),
            })
}

/// Whether a string under `keys` of `object`, or of the objects in its arrays, held a
/// lone surrogate: it differs from its reading in `marked`.
fn names_replaced(object: Option<&Value>, marked: Option<&Value>, keys: &[&str]) -> bool {
    match object {
        Some(Value::Array(items)) => items.iter().enumerate().any(|(index, item)| {
            names_replaced(Some(item), marked.and_then(|m| m.get(index)), keys)
        }),
        Some(object @ Value::Object(_)) => keys.iter().any(|key| {
            let value = object.get(key);
            value.is_some_and(|value| {
                value.is_string() && Some(value) != marked.and_then(|m| m.get(key))
            })
        }),
        _ => false,
    }
}

/// Why a document whose ids held a lone surrogate is refused.
const REPLACED_ID: &str = "an id holds an escaped lone UTF-16 surrogate, which ids may not \
                           hold (it reads as U+FFFD, and ids differing only there would be one)";

/// Why a document in which that cannot be told is refused.
const UNTOLD_IDS: &str = "two keys of an object differ only where one holds an escaped lone \
                          UTF-16 surrogate and the other U+FFFF, so which ids hold a lone \
                          surrogate (which ids may not) cannot be told";

/// Reads a page of one of Protocol's REST lists of `resource`'s objects
/// (`{"data": [...], "has_more": ...}`) as [`parse_json`](crate::parse_json) reads any
/// document, and refuses one that [`Event::from_slice`] would refuse as an event for
/// its ids: where an object of `data` held an escaped lone UTF-16 surrogate in its
/// `id`, or in a key of `resource`'s model that names another object. Read as U+FFFD,
/// two ids that differed only there would be one object.
///
/// ```
/// use protocol_types::{Resource, parse_list_page};
///
/// // Text cut inside an emoji is text.
/// let text = br#"{"data": [{"id": "c1", "username": "a\ud800"}], "has_more": false}"#;
/// let page = parse_list_page(text, Resource::Contact)?;
/// assert_eq!(page["data"][0]["username"], "a\u{FFFD}");
/// // An id cut so is refused.
/// let id = br#"{"data": [{"id": "c1"}, {"id": "c\ud800"}], "has_more": false}"#;
/// let error = parse_list_page(id, Resource::Contact).unwrap_err();
/// assert!(error.to_string().starts_with("data[1]: an id holds an escaped lone"));
/// # Ok::<(), serde_json::Error>(())
/// ```
///
/// # Errors
///
/// What [`parse_json`](crate::parse_json) refuses, and such ids (or a document in which
/// they cannot be told: two keys of one object differing only where one holds a lone
/// surrogate and the other U+FFFF). Only objects under `data` are looked at: the rest of
/// the document is the caller's to read.
pub fn parse_list_page(bytes: &[u8], resource: Resource) -> Result<Value, serde_json::Error> {
    use serde::de::Error as _;
    let (value, marked) = parse_noting_surrogates(bytes)?;
    match &marked {
        Marked::NoLoneSurrogate => Ok(value),
        Marked::Unreadable => Err(serde_json::Error::custom(UNTOLD_IDS)),
        Marked::Read(marked) => {
            let objects = value.get("data").and_then(Value::as_array);
            let replaced = objects
                .into_iter()
                .flatten()
                .enumerate()
                .find(|(index, object)| {
                    let marked = marked.get("data").and_then(|data| data.get(index));
                    object.is_object()
                        && object_holds_a_replaced_id(Some(resource), Some(object), marked)
                });
            match replaced {
                Some((index, _)) => Err(serde_json::Error::custom(format_args!(
                    "data[{index}]: {REPLACED_ID}"
                ))),
                None => Ok(value),
            }
        }
    }
}

/// The keys of each model that name another object: at the payload's top level
/// (`None`), or of the objects embedded under a key (an object, or an array of them).
/// An embedded contact's `conversation_id` is left out on purpose: a snapshot, it
/// places nothing, and refusing it would refuse the whole message (an embedder's
/// probe asked; [`EventError::Syntax`] says so).
const REFERENCES: &[(Resource, Option<&str>, &[&str])] = &[
    (Resource::Contact, None, &["conversation_id"]),
    (
        Resource::Conversation,
        None,
        &["contact_id", "group_id", "pinned_message_id"],
    ),
    (Resource::Message, None, &["conversation_id"]),
    (Resource::Message, Some("contact"), &["id"]),
    (
        Resource::Message,
        Some("attachments"),
        &["id", "message_id"],
    ),
    (Resource::Group, None, &["conversation_id"]),
    (Resource::Group, Some("contacts"), &["id"]),
    (Resource::Attachment, None, &["message_id"]),
];

/// Describes a JSON value's type for messages, as [`FieldError`]'s `found` says it:
/// `null`, `boolean`, `integer` (one within `i64`), `integer out of range` (one above
/// `i64::MAX` up to `u64::MAX`, which no documented integer field holds; with
/// serde_json's `arbitrary_precision`, any integer beyond `i64`), `number` (any other:
/// without that feature, an integer beyond `u64` or below `i64::MIN` is read as a
/// float), `string`, `array` or `object`.
#[must_use]
pub fn json_type_name(value: &Value) -> &'static str {
    type_name(value)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// Bytes that are not UTF-8 are said to be (serde_json said "invalid unicode code
    /// point" of a `\xff` inside a string: a probe).
    #[test]
    fn bytes_that_are_not_utf8_are_said_to_be() {
        let body = b"{\"id\":\"e1\",\"type\":\"x.y\",\"payload\":{\"id\":\"p\xff\"}}";
        let Err(EventError::Syntax { message }) = Event::from_slice(body) else {
            panic!("parsed");
        };
        assert_eq!(
            message,
            "not UTF-8 text: the byte at offset 42 does not begin or continue a character"
        );
    }

    /// The envelope's unknown keys keep the order the parsed map gave them: with
    /// serde_json's `preserve_order`, the received order (`Map::remove` of `id`, `type`
    /// and `payload` shuffled them: an embedder's review). CI runs this crate's tests
    /// with the feature too; without it, maps are sorted and the test holds as well.
    #[test]
    fn unknown_envelope_keys_keep_their_order() {
        let body = r#"{"a":1,"id":"e","b":2,"type":"x.y","c":3,"payload":{"id":"p"},"d":4,"e":5}"#;
        let parsed: Object = serde_json::from_str(body).unwrap();
        let unknown: Vec<&str> = parsed
            .keys()
            .map(String::as_str)
            .filter(|key| !["id", "type", "payload"].contains(key))
            .collect();
        let event = Event::from_slice(body.as_bytes()).unwrap();
        let extra: Vec<&str> = event.extra.keys().map(String::as_str).collect();
        assert_eq!(extra, unknown);
        assert_eq!(
            event.to_value(),
            serde_json::from_str::<Value>(body).unwrap()
        );
    }

    /// A lone surrogate reads as U+FFFD in text, but an id holding one is refused: ids
    /// that differed only there would be one.
    #[test]
    fn lone_surrogates_are_text_never_ids() {
        let event = |envelope: &str| Event::from_slice(envelope.as_bytes());
        let parsed = event(
            r#"{"id":"e1","type":"message.created","payload":{"id":"m1","message":"cut \ud83d"}}"#,
        )
        .unwrap();
        assert_eq!(parsed.payload.to_object()["message"], json!("cut \u{fffd}"));
        for refused in [
            r#"{"id":"e\ud800","type":"message.created","payload":{"id":"m1"}}"#,
            r#"{"id":"e2","type":"message.created","payload":{"id":"m\udc00"}}"#,
            r#"{"id":"e3","type":"message.created","payload":{"id":"m1","conversation_id":"c\ud800"}}"#,
            r#"{"id":"e4","type":"message.created","payload":{"id":"m1","attachments":[{"id":"a\ud800"}]}}"#,
            r#"{"id":"e\ud800","type":"poll.created","payload":{"id":"p1"}}"#,
            r#"{"id":"e5","type":"poll.created","payload":{"id":"p\ud800"}}"#,
        ] {
            let error = event(refused).unwrap_err();
            assert!(
                matches!(&error, EventError::Syntax { message } if message.contains("lone UTF-16 surrogate")),
                "{refused}: {error}"
            );
        }
        // An unknown type's payload names nothing stored: it is logged as it came.
        let unknown = event(
            r#"{"id":"e6","type":"poll.created","payload":{"id":"p1","voter_id":"v\ud800","x":{"poll_id":"\ud800"}}}"#,
        )
        .unwrap();
        assert_eq!(unknown.event_type(), None);
        assert_eq!(unknown.payload.to_object()["voter_id"], json!("v\u{fffd}"));
        // U+FFFD itself, sent as such, is an id's to hold, also beside a lone
        // surrogate in text (an embedder's probe: such events were refused).
        assert!(
            event(r#"{"id":"e\ufffd","type":"contact.created","payload":{"id":"k\ufffd"}}"#)
                .is_ok()
        );
        for accepted in [
            r#"{"id":"e\ufffd","type":"message.created","payload":{"id":"m","message":"cut \ud83d"}}"#,
            r#"{"id":"e7","type":"message.created","payload":{"id":"m","contact":{"id":"k\ufffd"},"message":"\udc00"}}"#,
            r#"{"id":"e8","type":"message.created","payload":{"id":"m","meta":{"ref_id":"r\ufffd"},"message":"\ud83d"}}"#,
            // An embedded contact's `conversation_id` is a snapshot's text.
            r#"{"id":"e9","type":"message.created","payload":{"id":"m","contact":{"id":"k","conversation_id":"v\ud800"}}}"#,
            r#"{"id":"e10","type":"group.created","payload":{"id":"g","contacts":[{"username":"u","conversation_id":"v\ud800"}]}}"#,
        ] {
            assert!(event(accepted).is_ok(), "{accepted}");
        }
        // A lone surrogate in an id beside U+FFFD in another.
        for refused in [
            r#"{"id":"e\ufffd","type":"message.created","payload":{"id":"m\ud800"}}"#,
            r#"{"id":"e9","type":"message.created","payload":{"id":"m","attachments":[{"id":"a"},{"id":"b\udfff"}]}}"#,
            r#"{"id":"e9","type":"message.created","payload":{"id":"m","attachments":[{"id":"a","message_id":"m\udfff"}]}}"#,
            r#"{"id":"e9","type":"message.created","payload":{"id":"m","contact":{"id":"k\udfff"}}}"#,
            r#"{"id":"e9","type":"group.updated","payload":{"id":"g","contacts":[{"id":"k\udfff"}]}}"#,
            r#"{"id":"e9","type":"conversation.updated","payload":{"id":"c","pinned_message_id":"m\udfff"}}"#,
            r#"{"id":"e9","type":"attachment.updated","payload":{"id":"a","message_id":"m\udfff"}}"#,
            // Keys that read as one once lone surrogates are marked (a review: the ids
            // went unchecked, and two events of ids differing there read as one).
            r#"{"id":"e\ud800","type":"contact.created","payload":{"id":"c","k\ud800":1,"k\uffff":2}}"#,
            r#"{"id":"e1","type":"message.created","payload":{"id":"m\ud800","n\ud800":1,"n\uffff":2}}"#,
            r#"{"id":"e1","type":"message.created","payload":{"id":"m","n\ud800":1,"n\uffff":2}}"#,
        ] {
            assert!(event(refused).is_err(), "{refused}");
        }
        // Keys that name no object hold text, those named like ids too (a review: an
        // unknown `external_id` cut inside an emoji had its event refused, 400).
        for accepted in [
            r#"{"id":"e9","type":"contact.created","payload":{"id":"k","external_id":"ab\ud83d"}}"#,
            r#"{"id":"e9","type":"message.created","payload":{"id":"m","x\ud800":{"ref_id":"r\ud800"}}}"#,
            r#"{"id":"e9","type":"contact.updated","payload":{"id":"k","contact_id":"\ud800"}}"#,
            r#"{"id":"e9","type":"message.created","payload":{"id":"m","contact":{"id":"k","ref_id":"\ud800"}}}"#,
        ] {
            let parsed = event(accepted).unwrap_or_else(|e| panic!("{accepted}: {e}"));
            assert!(
                Value::Object(parsed.payload.to_object())
                    .to_string()
                    .contains('\u{fffd}'),
                "{accepted}"
            );
        }
    }

    /// A list page is refused for the ids an event is refused for, at every place in
    /// `data`, and read as `parse_json` reads it otherwise.
    #[test]
    fn a_list_page_refuses_the_ids_an_event_refuses() {
        let page = |data: &str, resource| {
            parse_list_page(
                format!(r#"{{"data":[{data}],"has_more":true}}"#).as_bytes(),
                resource,
            )
        };
        for (refused, resource) in [
            (r#"{"id":"c\ud800"}"#, Resource::Contact),
            (r#"{"id":"c1"},{"id":"c\udc00"}"#, Resource::Contact),
            (
                r#"{"id":"m","conversation_id":"c\ud800"}"#,
                Resource::Message,
            ),
            (
                r#"{"id":"m","contact":{"id":"k\ud800"}}"#,
                Resource::Message,
            ),
            (
                r#"{"id":"m","attachments":[{"id":"a"},{"id":"b\udfff"}]}"#,
                Resource::Message,
            ),
            (
                r#"{"id":"g","contacts":[{"id":"k\udfff"}]}"#,
                Resource::Group,
            ),
            (r#"{"id":"c","group_id":"g\ud800"}"#, Resource::Conversation),
            (r#"{"id":"a","message_id":"m\ud800"}"#, Resource::Attachment),
            (r#"{"id":"k","n\ud800":1,"n\uffff":2}"#, Resource::Contact),
        ] {
            let error = page(refused, resource).unwrap_err().to_string();
            assert!(
                error.contains("lone UTF-16 surrogate"),
                "{refused}: {error}"
            );
        }
        let error = page(
            r#"{"id":"c1"},{"id":"c2"},{"id":"c\ud800"}"#,
            Resource::Contact,
        );
        assert!(error.unwrap_err().to_string().starts_with("data[2]: "));
        for (accepted, resource) in [
            (
                r#"{"id":"c1","display_name":"cut \ud83d"}"#,
                Resource::Contact,
            ),
            // Another resource's references are text; so is what is not an object.
            (
                r#"{"id":"c1","conversation_id":"v\ud800"}"#,
                Resource::Conversation,
            ),
            (
                r#""\ud800",{"id":"c\ufffd","x":"\ud800"}"#,
                Resource::Contact,
            ),
        ] {
            let read = page(accepted, resource).unwrap_or_else(|e| panic!("{accepted}: {e}"));
            assert!(read.to_string().contains('\u{fffd}'), "{accepted}");
        }
        // Outside `data` is the caller's to read; the rest as `parse_json` reads it.
        assert!(parse_list_page(br#"{"data":[],"next":"c\ud800"}"#, Resource::Contact).is_ok());
        assert!(parse_list_page(br#"{"data":[],"data":[]}"#, Resource::Contact).is_err());
        assert_eq!(
            parse_list_page(
                br#"{"data":[{"id":"c1"}],"has_more":false}"#,
                Resource::Contact
            )
            .unwrap(),
            crate::parse_json(br#"{"data":[{"id":"c1"}],"has_more":false}"#).unwrap()
        );
    }

    /// The name may be a sender's: a megabyte of it, with line breaks and terminal
    /// escapes, went into the message whole.
    #[test]
    fn unknown_names_are_shown_short_and_on_one_line() {
        let name = format!("x\nFORGED\u{1b}[31m{}", "k".repeat(1_000_000));
        let message = name.parse::<Resource>().unwrap_err().to_string();
        assert!(message.len() < 200, "{}", message.len());
        assert!(!message.contains(['\n', '\u{1b}']), "{message}");
        assert!(
            message.starts_with("unknown resource `x\\nFORGED"),
            "{message}"
        );
        let debug = format!("{:?}", name.parse::<Resource>().unwrap_err());
        assert!(debug.len() < 200, "{}", debug.len());
        assert!(
            debug.starts_with(r#"UnknownName { what: "resource", name: "x\nFORGED\u{1b}[31mkkk"#)
                && debug.ends_with("kk\"… }"),
            "{debug}"
        );
        // The whole name stays reachable, for a caller's own message.
        let error = name.parse::<Resource>().unwrap_err();
        assert_eq!((error.what(), error.name()), ("resource", name.as_str()));
        let error = "archived".parse::<Action>().unwrap_err();
        assert_eq!((error.what(), error.name()), ("action", "archived"));
    }

    #[test]
    fn names_serialize_as_their_strings() {
        let event_type = EventType::new(Resource::Message, Action::Updated);
        let value = json!({
            "resource": Resource::Group,
            "action": Action::Deleted,
            "type": event_type,
            "kind": EventKind::Unknown("reaction.created".into()),
        });
        assert_eq!(
            value,
            json!({"resource": "group", "action": "deleted", "type": "message.updated",
                   "kind": "reaction.created"})
        );
        let back: EventType = serde_json::from_value(json!("message.updated")).unwrap();
        assert_eq!(back, event_type);
        let plural: Resource = serde_json::from_value(json!("contacts")).unwrap();
        assert_eq!(plural, Resource::Contact);
        let kind: EventKind = serde_json::from_value(json!("contact.created")).unwrap();
        assert_eq!(
            kind,
            EventKind::Known(EventType::new(Resource::Contact, Action::Created))
        );
        let error = serde_json::from_value::<Action>(json!("renamed")).unwrap_err();
        assert!(error.to_string().contains("renamed"), "{error}");
        assert!(serde_json::from_value::<Resource>(json!(3)).is_err());
    }

    #[test]
    fn the_fifteen_types_round_trip() {
        let all: Vec<EventType> = EventType::all().collect();
        assert_eq!(all.len(), 15);
        for event_type in all {
            let text = event_type.to_string();
            assert_eq!(text.parse::<EventType>().unwrap(), event_type);
            assert_eq!(
                text.parse::<EventKind>().unwrap(),
                EventKind::Known(event_type)
            );
        }
    }

    #[test]
    fn other_type_strings_are_unknown_not_errors() {
        for raw in [
            "reaction.created",
            "contacts.created",
            "contact",
            "",
            "contact.created.x",
        ] {
            let kind: EventKind = raw.parse().unwrap();
            assert_eq!(kind, EventKind::Unknown(raw.to_owned()));
            assert_eq!(kind.to_string(), raw);
        }
    }

    #[test]
    fn resources_parse_singular_and_plural() {
        assert_eq!("messages".parse::<Resource>().unwrap(), Resource::Message);
        assert_eq!("message".parse::<Resource>().unwrap(), Resource::Message);
        assert_eq!(
            "mesage".parse::<Resource>().unwrap_err().to_string(),
            "unknown resource `mesage`"
        );
    }

    #[test]
    fn envelope_errors_name_the_field() {
        let cases = [
            (json!([]), "the document"),
            (
                json!({"type": "contact.created", "payload": {"id": "x"}}),
                "id",
            ),
            (
                json!({"id": "", "type": "contact.created", "payload": {"id": "x"}}),
                "id",
            ),
            (
                json!({"id": 1, "type": "contact.created", "payload": {"id": "x"}}),
                "id",
            ),
            (json!({"id": "e", "payload": {"id": "x"}}), "type"),
            (
                json!({"id": "e", "type": null, "payload": {"id": "x"}}),
                "type",
            ),
            (json!({"id": "e", "type": "contact.created"}), "payload"),
            (
                json!({"id": "e", "type": "contact.created", "payload": []}),
                "payload",
            ),
            (
                json!({"id": "e", "type": "contact.created", "payload": {}}),
                "payload.id",
            ),
            (
                json!({"id": "e", "type": "x.y", "payload": {"id": ""}}),
                "payload.id",
            ),
        ];
        for (value, expected_field) in cases {
            match Event::from_value(value.clone()) {
                Err(EventError::Envelope { field, .. }) => {
                    assert_eq!(field, expected_field, "{value}")
                }
                other => panic!("{value}: {other:?}"),
            }
        }
        // The whole document is not quoted as if it were a field.
        assert_eq!(
            Event::from_value(json!([])).unwrap_err().to_string(),
            "invalid event envelope: the document must be a JSON object"
        );
    }

    /// A number of the right kind named by what is wrong with it: digits beyond 64
    /// bits are an integer out of range, not "number" (beyond `u64`, only where
    /// serde_json keeps the digits: with `arbitrary_precision`, as protocol-mirror has
    /// it; else they were read as a float).
    #[test]
    fn out_of_range_integers_are_said_so() {
        let beyond_u64 = if *crate::json::ARBITRARY_PRECISION {
            "integer out of range"
        } else {
            "number"
        };
        for (value, found) in [
            ("99999999999999999999", beyond_u64),
            ("-99999999999999999999", beyond_u64),
            ("18446744073709551615", "integer out of range"),
            ("2.5", "number"),
            ("1e3", "number"),
        ] {
            let body = format!(
                r#"{{"id":"e1","type":"message.updated","payload":{{"id":"m","updated_at":{value}}}}}"#
            );
            let error = Event::from_slice(body.as_bytes()).unwrap_err().to_string();
            assert!(
                error.ends_with(&format!("expected integer timestamp, found {found}")),
                "{value}: {error}"
            );
        }
    }

    /// As the crate's docs say: `null` inside an array is a wrong type, named by its
    /// place; an empty id naming another object is read, an object's own is not.
    #[test]
    fn nulls_in_arrays_and_empty_ids_of_other_objects() {
        let body = |kind: &str, payload: &str| {
            format!(r#"{{"id":"e1","type":"{kind}","payload":{{"id":"x",{payload}}}}}"#)
        };
        for (kind, payload, path) in [
            (
                "message.created",
                r#""attachments":[null]"#,
                "attachments[0]",
            ),
            ("message.created", r#""reactions":[null]"#, "reactions[0]"),
            (
                "message.created",
                r#""reactions":[{"x":[null]}]"#,
                "reactions[0].x[0]",
            ),
            (
                "group.updated",
                r#""contacts":[{"username":"a"},null]"#,
                "contacts[1]",
            ),
            (
                "message.created",
                r#""attachments":[{"id":""}]"#,
                "attachments[0].id",
            ),
        ] {
            match Event::from_slice(body(kind, payload).as_bytes()) {
                Err(EventError::Field { source, .. }) => {
                    assert_eq!(source.path(), format!("payload.{path}"), "{payload}");
                }
                other => panic!("{payload}: {other:?}"),
            }
        }
        for (kind, payload) in [
            ("message.created", r#""conversation_id":"""#),
            ("message.created", r#""contact":{"id":""}"#),
            (
                "message.created",
                r#""attachments":[{"id":"a","message_id":""}]"#,
            ),
            ("group.updated", r#""contacts":[{"id":""}]"#),
        ] {
            assert!(
                Event::from_slice(body(kind, payload).as_bytes()).is_ok(),
                "{payload}"
            );
        }
    }

    #[test]
    fn field_errors_carry_the_event() {
        let body = br#"{"id":"e1","type":"message.updated","payload":{"id":"m","read_at":"soon"}}"#;
        match Event::from_slice(body) {
            Err(EventError::Field {
                event_id,
                event_type,
                source,
            }) => {
                assert_eq!(event_id, "e1");
                assert_eq!(event_type.to_string(), "message.updated");
                assert_eq!(source.path(), "payload.read_at");
            }
            other => panic!("{other:?}"),
        }
        // The field's text is in the message once: not repeated as a `source()` that
        // error reporters would print after it.
        let error = Event::from_slice(body).unwrap_err();
        assert!(std::error::Error::source(&error).is_none());
        assert_eq!(error.to_string().matches("payload.read_at").count(), 1);
    }

    #[test]
    fn syntax_errors() {
        for body in [
            &b""[..],
            b"{",
            b"nul",
            b"{\"id\":\"a\",\"id\":\"b\"}",
            b"\xff\xfe",
            b"{} x",
        ] {
            assert!(
                matches!(Event::from_slice(body), Err(EventError::Syntax { .. })),
                "{body:?}"
            );
        }
    }

    #[test]
    fn builders_match_parsing() {
        let event = Event::from_parts("e", "group.created", {
            let mut o = Object::new();
            o.insert("id".into(), json!("g"));
            o.insert("name".into(), json!("Plaza"));
            o
        })
        .unwrap();
        assert_eq!(event.event_type().unwrap().to_string(), "group.created");
        assert_eq!(event.payload.id(), "g");
        assert_eq!(event.payload.resource(), Some(Resource::Group));
        let reparsed = Event::from_slice(&event.to_vec()).unwrap();
        assert_eq!(reparsed, event);
    }
}
