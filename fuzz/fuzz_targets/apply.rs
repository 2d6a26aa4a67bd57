//! `apply`: short histories of webhook events, built from a small alphabet, through
//! `protocol_mirror::store::Store::apply` (SPEC section 4).
//!
//! The input is decoded (with `arbitrary`) into up to 16 events. Each has a type
//! (`resource.action` of the 15 documented ones, or an unknown resource or action), an
//! event id from a small set (so that redeliveries happen), an object id from a tiny
//! weighted set shared by every resource (so that events meet on the same object, ids
//! collide across resources and parents point at real rows), and up to 6 fields: mostly well-typed values drawn from small
//! sets (parent ids, timestamps with frequent ties, texts including an empty string and
//! a NUL), but also `null`, values of the wrong JSON type, keys of other resources
//! (unknown keys), embedded attachments, embedded contacts and group members (whose own
//! fields are fuzzed the same way). About one event in 32 is not an event envelope at
//! all (not JSON, empty event id, empty payload id, payload not an object).
//!
//! Invariants checked:
//! - applying never panics and never fails with `ApplyError::Store`;
//! - `ApplyError::Invalid` exactly for the broken envelopes; a field of the wrong type
//!   is logged as `rejected`, an unknown type as `unsupported`, a delete is never
//!   `stale`;
//! - an event id is logged once; a redelivery answers `Duplicate` with the outcome of
//!   the first delivery (rule 1);
//! - applying the whole history a second time yields only duplicates (and the same
//!   `Invalid`s), leaves the snapshot and the event log unchanged;
//! - `rebuild` replays the log to the same snapshot, with no changed outcome (rule 9);
//! - no object exists whose (resource, id) is tombstoned (rule 2);
//! - `PRAGMA integrity_check` is `ok`, `PRAGMA foreign_key_check` finds nothing, and the
//!   FTS5 index passes its `integrity-check` against the `messages` table.
//!
//! With `FUZZ_APPLY_STRICT_PARENTS=1` in the environment it also checks that no stored
//! child points at a tombstoned parent (a message at a tombstoned conversation, an
//! attachment at a tombstoned message, a group conversation at a tombstoned group, a
//! 1:1 conversation at a tombstoned contact). SPEC section 4 implies this through
//! rules 2 and 6 but does not state it for embedded copies, so it is opt-in.

#![no_main]

use std::collections::HashMap;
use std::sync::OnceLock;

use arbitrary::{Arbitrary, Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use protocol_mirror::Snapshot;
use protocol_mirror::apply::{Applied, ApplyError, Outcome};
use protocol_mirror::rebuild::rebuild;
use protocol_mirror::store::Store;
use protocol_types::{Event, EventError, EventKind};
use serde_json::{Map, Value, json};

/// Object ids, shared by every resource, weighted so that events often meet on the same
/// object (`a` most of all); the last one holds a NUL.
const IDS: &[&str] = &["a", "b", "a", "c", "a", "b", "d\u{0}x"];
/// Texts for string fields.
const TEXTS: &[&str] = &[
    "kevin",
    "Kevin",
    "",
    "ünï cödé",
    "\u{0}",
    "meetings",
    "a\"b\\c",
];
/// Timestamps: mostly a few small values so that ties and reorderings are common.
const TIMESTAMPS: &[i64] = &[1, 2, 3, 1, 2, 3, 0, -1, 692_233_200, i64::MAX, i64::MIN];
/// Integers for `file_size`.
const INTEGERS: &[i64] = &[0, 1, 21_352, -1, i64::MAX, i64::MIN];
/// Unknown resource and action names.
const UNKNOWN_RESOURCE: &str = "reaction";
const UNKNOWN_ACTION: &str = "archived";

const RESOURCES: [&str; 5] = ["contact", "conversation", "message", "group", "attachment"];

/// What a key holds, when well typed.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A parent or sibling id.
    Ref,
    Text,
    Timestamp,
    Bool,
    Integer,
    /// A message's `contact`.
    EmbeddedContact,
    /// A message's `reactions`.
    Reactions,
    /// A message's `attachments`.
    Attachments,
    /// A group's `contacts`.
    Members,
}

const CONTACT_KEYS: &[(&str, Kind)] = &[
    ("username", Kind::Text),
    ("phone_number", Kind::Text),
    ("avatar_url", Kind::Text),
    ("display_name", Kind::Text),
    ("conversation_id", Kind::Ref),
    ("last_active_at", Kind::Timestamp),
    ("created_at", Kind::Timestamp),
];
const CONVERSATION_KEYS: &[(&str, Kind)] = &[
    ("contact_id", Kind::Ref),
    ("group_id", Kind::Ref),
    ("pinned_message_id", Kind::Ref),
    ("is_pinned", Kind::Bool),
    ("is_muted", Kind::Bool),
    ("last_active_at", Kind::Timestamp),
    ("last_opened_at", Kind::Timestamp),
    ("created_at", Kind::Timestamp),
    ("archived_at", Kind::Timestamp),
];
const MESSAGE_KEYS: &[(&str, Kind)] = &[
    ("conversation_id", Kind::Ref),
    ("contact", Kind::EmbeddedContact),
    ("message", Kind::Text),
    ("reactions", Kind::Reactions),
    ("attachments", Kind::Attachments),
    ("read_at", Kind::Timestamp),
    ("created_at", Kind::Timestamp),
    ("updated_at", Kind::Timestamp),
    ("updated_at", Kind::Timestamp),
];
const GROUP_KEYS: &[(&str, Kind)] = &[
    ("name", Kind::Text),
    ("description", Kind::Text),
    ("avatar_url", Kind::Text),
    ("conversation_id", Kind::Ref),
    ("contacts", Kind::Members),
    ("created_at", Kind::Timestamp),
    ("archived_at", Kind::Timestamp),
];
const ATTACHMENT_KEYS: &[(&str, Kind)] = &[
    ("message_id", Kind::Ref),
    ("filename", Kind::Text),
    ("file_url", Kind::Text),
    ("file_type", Kind::Text),
    ("file_size", Kind::Integer),
    ("created_at", Kind::Timestamp),
];
/// Keys no resource documents (kept in `extra`).
const UNKNOWN_KEYS: &[(&str, Kind)] = &[("nickname", Kind::Text), ("labels", Kind::Members)];

fn keys_of(resource: usize) -> &'static [(&'static str, Kind)] {
    match resource {
        0 => CONTACT_KEYS,
        1 => CONVERSATION_KEYS,
        2 => MESSAGE_KEYS,
        3 => GROUP_KEYS,
        4 => ATTACHMENT_KEYS,
        _ => UNKNOWN_KEYS,
    }
}

/// Any JSON leaf, mostly of a type no key expects.
#[derive(Debug, Arbitrary)]
enum Leaf {
    Bool(bool),
    Integer(i64),
    Float(f64),
    Text(u8),
    EmptyArray,
    EmptyObject,
    ArrayOfNull,
}

impl Leaf {
    fn json(&self) -> Value {
        match self {
            Leaf::Bool(b) => json!(b),
            Leaf::Integer(i) => json!(i),
            Leaf::Float(f) => serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number),
            Leaf::Text(i) => json!(pick(TEXTS, *i)),
            Leaf::EmptyArray => json!([]),
            Leaf::EmptyObject => json!({}),
            Leaf::ArrayOfNull => json!([null]),
        }
    }
}

/// A value of a field of an embedded object: well typed most of the time.
#[derive(Debug)]
enum Simple {
    Good(u8),
    Null,
    Wrong(Leaf),
}

impl<'a> Arbitrary<'a> for Simple {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        Ok(match u8::arbitrary(u)? % 16 {
            0..=12 => Simple::Good(u.arbitrary()?),
            13 | 14 => Simple::Null,
            _ => Simple::Wrong(u.arbitrary()?),
        })
    }
}

impl Simple {
    fn json(&self, kind: Kind) -> Value {
        match self {
            Simple::Good(i) => good(kind, *i),
            Simple::Null => Value::Null,
            Simple::Wrong(leaf) => leaf.json(),
        }
    }
}

/// An id of an embedded object: usually one of `IDS`, sometimes missing or wrong.
#[derive(Debug, Arbitrary)]
struct EmbeddedId(u8);

impl EmbeddedId {
    fn put(&self, object: &mut Map<String, Value>) {
        match self.0 % 16 {
            14 => {}
            15 => {
                object.insert("id".into(), json!(7));
            }
            i => {
                object.insert("id".into(), json!(pick(IDS, i)));
            }
        }
    }
}

/// An embedded attachment (a message's `attachments` entry).
#[derive(Debug, Arbitrary)]
struct EmbeddedAttachment {
    id: EmbeddedId,
    fields: Vec<(u8, Simple)>,
}

/// An embedded contact (a message's `contact`, a group's `contacts` entry).
#[derive(Debug, Arbitrary)]
struct EmbeddedContact {
    id: EmbeddedId,
    fields: Vec<(u8, Simple)>,
}

fn embedded_object(
    id: &EmbeddedId,
    fields: &[(u8, Simple)],
    keys: &[(&str, Kind)],
) -> Map<String, Value> {
    let mut object = Map::new();
    for (key, value) in fields.iter().take(4) {
        let (name, kind) = keys[usize::from(*key) % keys.len()];
        // Embedded objects hold only simple values.
        let kind = match kind {
            Kind::EmbeddedContact | Kind::Reactions | Kind::Attachments | Kind::Members => {
                Kind::Text
            }
            kind => kind,
        };
        object.insert(name.into(), value.json(kind));
    }
    id.put(&mut object);
    object
}

impl EmbeddedAttachment {
    fn json(&self) -> Value {
        Value::Object(embedded_object(&self.id, &self.fields, ATTACHMENT_KEYS))
    }
}

impl EmbeddedContact {
    fn json(&self) -> Value {
        // The id is optional for an embedded contact: "missing" is well typed here.
        Value::Object(embedded_object(&self.id, &self.fields, CONTACT_KEYS))
    }
}

/// The value of a payload key.
#[derive(Debug)]
enum Val {
    /// Well typed for the key.
    Good(u8),
    Null,
    /// Some leaf, usually of the wrong type.
    Wrong(Leaf),
    /// An array of embedded attachments (right for a message's `attachments`).
    Attachments(Vec<EmbeddedAttachment>),
    /// An array of embedded contacts (right for a group's `contacts`; a message's
    /// `contact` takes the first one).
    Contacts(Vec<EmbeddedContact>),
}

impl<'a> Arbitrary<'a> for Val {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        Ok(match u8::arbitrary(u)? % 32 {
            0..=19 => Val::Good(u.arbitrary()?),
            20..=22 => Val::Null,
            23 | 24 => Val::Wrong(u.arbitrary()?),
            25..=28 => Val::Attachments(u.arbitrary()?),
            _ => Val::Contacts(u.arbitrary()?),
        })
    }
}

impl Val {
    fn json(&self, kind: Kind) -> Value {
        match self {
            Val::Good(i) => good(kind, *i),
            Val::Null => Value::Null,
            Val::Wrong(leaf) => leaf.json(),
            Val::Attachments(items) => {
                Value::Array(items.iter().take(3).map(EmbeddedAttachment::json).collect())
            }
            Val::Contacts(items) if kind == Kind::EmbeddedContact => items
                .first()
                .map_or_else(|| json!({}), EmbeddedContact::json),
            Val::Contacts(items) => {
                Value::Array(items.iter().take(3).map(EmbeddedContact::json).collect())
            }
        }
    }
}

fn pick<T: Copy>(items: &[T], i: u8) -> T {
    items[usize::from(i) % items.len()]
}

/// A well-typed value of `kind`, chosen by `i`.
fn good(kind: Kind, i: u8) -> Value {
    match kind {
        Kind::Ref => json!(pick(IDS, i)),
        Kind::Text => json!(pick(TEXTS, i)),
        Kind::Timestamp => json!(pick(TIMESTAMPS, i)),
        Kind::Bool => json!(i & 1 == 1),
        Kind::Integer => json!(pick(INTEGERS, i)),
        Kind::EmbeddedContact => json!({"id": pick(IDS, i), "username": pick(TEXTS, i >> 4)}),
        Kind::Reactions => match i % 3 {
            0 => json!([]),
            1 => json!([{"red_angry_face": [pick(TEXTS, i >> 2)]}]),
            _ => json!([{"smile": []}, {"smile": ["kevin", "frank"]}]),
        },
        Kind::Attachments => match i % 3 {
            0 => json!([]),
            _ => json!([{"id": pick(IDS, i >> 2), "created_at": pick(TIMESTAMPS, i >> 4)}]),
        },
        Kind::Members => match i % 3 {
            0 => json!([]),
            1 => json!([{"username": pick(TEXTS, i >> 2)}]),
            _ => json!([{"id": pick(IDS, i >> 2), "username": "kevin"}, {"username": "frank"}]),
        },
    }
}

/// One delivery of the history.
#[derive(Debug, Arbitrary)]
struct Ev {
    event_id: u8,
    resource: u8,
    action: u8,
    object: u8,
    /// `(key selector, value)`: a selector below 224 picks a key of the event's own
    /// resource, above it a key of any resource (or an unknown key).
    fields: Vec<(u8, Val)>,
    /// One in 32 is a broken envelope.
    shape: u8,
}

/// Why a body is not an event envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Broken {
    NotJson,
    EmptyEventId,
    EmptyPayloadId,
    PayloadNotObject,
}

/// A body to deliver, and what it is.
#[derive(Debug)]
struct Body {
    bytes: Vec<u8>,
    /// The event id, unless the envelope is broken.
    event_id: Option<String>,
    broken: Option<Broken>,
}

impl Ev {
    fn body(&self) -> Body {
        // One in 11 unknown (not at 0 or 255).
        let resource = match self.resource % 11 {
            r @ 0..=9 => usize::from(r / 2),
            _ => 5,
        };
        // One in 16 unknown; not at 0 or 255, the bytes mutations produce most.
        let action = match self.action % 16 {
            9 => UNKNOWN_ACTION,
            a => ["created", "updated", "deleted"][usize::from(a % 3)],
        };
        let resource_name = RESOURCES.get(resource).copied().unwrap_or(UNKNOWN_RESOURCE);
        let kind = format!("{resource_name}.{action}");
        let event_id = format!("e{}", self.event_id % 24);

        let mut payload = Map::new();
        for (selector, value) in self.fields.iter().take(6) {
            let keys = if *selector < 224 {
                keys_of(resource)
            } else {
                keys_of(usize::from(*selector) % 6)
            };
            let (name, kind) = keys[usize::from(*selector) % keys.len()];
            payload.insert(name.into(), value.json(kind));
        }
        payload.insert("id".into(), json!(pick(IDS, self.object)));

        let broken = match self.shape {
            s if s % 32 != 31 => None,
            s => Some(match (s / 32) % 4 {
                0 => Broken::NotJson,
                1 => Broken::EmptyEventId,
                2 => Broken::EmptyPayloadId,
                _ => Broken::PayloadNotObject,
            }),
        };
        let mut envelope = Map::new();
        envelope.insert("id".into(), json!(event_id));
        envelope.insert("type".into(), json!(kind));
        envelope.insert("payload".into(), Value::Object(payload));
        match broken {
            Some(Broken::EmptyEventId) => {
                envelope.insert("id".into(), json!(""));
            }
            Some(Broken::EmptyPayloadId) => {
                envelope["payload"]["id"] = json!("");
            }
            Some(Broken::PayloadNotObject) => {
                envelope.insert("payload".into(), json!([pick(IDS, self.object)]));
            }
            Some(Broken::NotJson) | None => {}
        }
        let mut bytes = Value::Object(envelope).to_string().into_bytes();
        if broken == Some(Broken::NotJson) {
            bytes.truncate(bytes.len() - 1);
        }
        Body {
            bytes,
            event_id: broken.is_none().then_some(event_id),
            broken,
        }
    }
}

#[derive(Arbitrary)]
struct Input {
    events: Vec<Ev>,
}

/// The history as the NDJSON bodies it delivers (what `cargo fuzz fmt apply FILE`
/// prints), which `protocol-mirror import` can replay.
impl std::fmt::Debug for Input {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for ev in self.events.iter().take(16) {
            writeln!(f, "{}", String::from_utf8_lossy(&ev.body().bytes))?;
        }
        Ok(())
    }
}

fn strict_parents() -> bool {
    static STRICT: OnceLock<bool> = OnceLock::new();
    *STRICT.get_or_init(|| {
        std::env::var_os("FUZZ_APPLY_STRICT_PARENTS").is_some_and(|v| !v.is_empty() && v != "0")
    })
}

/// `(event_id, outcome, cascaded)` in sequence order.
fn event_log(store: &Store) -> Vec<(i64, String, String, i64)> {
    let mut stmt = store
        .conn()
        .prepare("SELECT seq, event_id, outcome, cascaded FROM events ORDER BY seq")
        .expect("the log reads");
    stmt.query_map([], |row| {
        Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
    })
    .and_then(Iterator::collect)
    .expect("the log reads")
}

fn check_database(store: &Store, when: &str) {
    let conn = store.conn();
    let integrity: Vec<String> = conn
        .prepare("PRAGMA integrity_check")
        .and_then(|mut stmt| {
            stmt.query_map([], |row| row.get(0))?
                .collect::<std::result::Result<_, _>>()
        })
        .expect("integrity_check runs");
    assert_eq!(integrity, ["ok"], "PRAGMA integrity_check {when}");
    let violations = conn
        .prepare("PRAGMA foreign_key_check")
        .and_then(|mut stmt| Ok(stmt.query_map([], |_| Ok(()))?.count()))
        .expect("foreign_key_check runs");
    assert_eq!(violations, 0, "PRAGMA foreign_key_check {when}");
    if let Err(error) = conn.execute(
        "INSERT INTO messages_fts (messages_fts) VALUES ('integrity-check')",
        [],
    ) {
        panic!("FTS5 integrity-check {when}: {error}");
    }
}

fn check_snapshot(snapshot: &Snapshot, when: &str) {
    for key in snapshot.objects.keys() {
        assert!(
            !snapshot.tombstones.contains(key),
            "{key:?} exists and is tombstoned {when}"
        );
    }
    if !strict_parents() {
        return;
    }
    let tombstoned = |resource: &str, id: &Value| -> bool {
        id.as_str().is_some_and(|id| {
            snapshot
                .tombstones
                .contains(&(resource.to_owned(), id.to_owned()))
        })
    };
    for ((resource, id), object) in &snapshot.objects {
        let dangling = match resource.as_str() {
            "message" => tombstoned("conversation", &object["conversation_id"]),
            "attachment" => tombstoned("message", &object["message_id"]),
            "conversation" if object["group_id"].is_string() => {
                tombstoned("group", &object["group_id"])
            }
            "conversation" => tombstoned("contact", &object["contact_id"]),
            _ => false,
        };
        assert!(
            !dangling,
            "{resource} {id:?} points at a tombstoned parent {when}: {object}"
        );
    }
}

fuzz_target!(|input: Input| {
    let bodies: Vec<Body> = input.events.iter().take(16).map(Ev::body).collect();
    let mut store = Store::open_in_memory().expect("an in-memory store opens");

    // First delivery of the whole history.
    let mut first: HashMap<String, Outcome> = HashMap::new();
    for (i, body) in bodies.iter().enumerate() {
        let text = String::from_utf8_lossy(&body.bytes);
        match store.apply(&body.bytes, i as i64) {
            Ok(Applied::Logged { outcome, .. }) => {
                let id = body
                    .event_id
                    .as_ref()
                    .unwrap_or_else(|| panic!("a broken envelope was logged: {text}"));
                let parsed = Event::from_slice(&body.bytes);
                let expected_ok = match &parsed {
                    Err(EventError::Field { .. }) => outcome == Outcome::Rejected,
                    Ok(event) => match &event.kind {
                        EventKind::Unknown(_) => outcome == Outcome::Unsupported,
                        EventKind::Known(t) if t.action == protocol_types::Action::Deleted => {
                            matches!(outcome, Outcome::Applied | Outcome::IgnoredDeleted)
                        }
                        EventKind::Known(_) => matches!(
                            outcome,
                            Outcome::Applied | Outcome::Stale | Outcome::IgnoredDeleted
                        ),
                    },
                    Err(_) => false,
                };
                assert!(expected_ok, "unexpected outcome {outcome:?} for {text}");
                assert!(
                    first.insert(id.clone(), outcome).is_none(),
                    "event id {id} logged twice"
                );
            }
            Ok(Applied::Duplicate { first: outcome, .. }) => {
                let id = body
                    .event_id
                    .as_ref()
                    .unwrap_or_else(|| panic!("a broken envelope was a duplicate: {text}"));
                assert_eq!(
                    first.get(id),
                    Some(&outcome),
                    "duplicate of {id} reports another outcome: {text}"
                );
            }
            Err(ApplyError::Invalid(error)) => assert!(
                body.broken.is_some(),
                "a well-formed envelope was refused ({error}): {text}"
            ),
            Err(ApplyError::Store(error)) => panic!("ApplyError::Store: {error}\nbody: {text}"),
            Err(error) => panic!("unexpected error: {error}\nbody: {text}"),
        }
    }
    let live = store.snapshot().expect("the snapshot reads");
    let log = event_log(&store);
    assert_eq!(log.len(), first.len(), "one log row per new event id");
    check_snapshot(&live, "after the first delivery");
    check_database(&store, "after the first delivery");

    // Second delivery: only duplicates, and nothing changes.
    for (i, body) in bodies.iter().enumerate() {
        let text = String::from_utf8_lossy(&body.bytes);
        match store.apply(&body.bytes, 1000 + i as i64) {
            Ok(Applied::Duplicate { first: outcome, .. }) => {
                let id = body.event_id.as_ref().expect("not broken");
                assert_eq!(first.get(id), Some(&outcome), "redelivery of {text}");
            }
            Ok(applied) => panic!("redelivery was applied again ({applied:?}): {text}"),
            Err(ApplyError::Invalid(_)) => assert!(body.broken.is_some()),
            Err(error) => panic!("redelivery failed: {error}\nbody: {text}"),
        }
    }
    assert_eq!(
        store.snapshot().expect("the snapshot reads"),
        live,
        "redelivery changed the replica"
    );
    assert_eq!(event_log(&store), log, "redelivery changed the event log");

    // Rebuild from the log: the same replica, the same outcomes.
    let summary =
        rebuild(&mut store, |_, _| std::ops::ControlFlow::Continue(())).expect("rebuild succeeds");
    assert_eq!(
        summary.events,
        log.len() as u64,
        "rebuild replayed every event"
    );
    assert_eq!(
        summary.changed_outcomes, 0,
        "rebuild changed logged outcomes"
    );
    let rebuilt = store.snapshot().expect("the snapshot reads");
    assert_eq!(rebuilt, live, "rebuild differs from live ingestion");
    assert_eq!(event_log(&store), log, "rebuild changed the event log");
    check_snapshot(&rebuilt, "after rebuild");
    check_database(&store, "after rebuild");
});
