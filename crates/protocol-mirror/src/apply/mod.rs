//! The apply engine: SPEC section 4, one event at a time, inside a transaction the
//! caller owns (so callers can commit many events at once).
//!
//! [`apply_body`] takes a delivered body, deduplicates it by event id, applies it to
//! the replica and logs it. `replay` is the replica half alone, which `rebuild`
//! runs over the log. Neither contains SQL: they call the typed functions of
//! [`crate::store`].

use std::fmt;
use std::str::FromStr;

use protocol_types::{Action, Event, EventError, EventKind, Message, Object, Payload, Resource};
use rusqlite::Connection;

use crate::store::{self, Log, LogEntry, StoreError};

mod backfill;

pub use backfill::Basis;
pub use backfill::event_type as backfill_event_type;
mod rules;
#[cfg(test)]
mod tests;

use rules::Rules;

/// What a delivery of an event already logged is answered with (`"status"`), counted
/// as (metrics) and listed as (`events --outcome`): it is not logged again.
pub const DUPLICATE: &str = "duplicate";

/// What applying an event did, as recorded in the event log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Outcome {
    /// The event changed the replica as it says.
    Applied,
    /// The replica already had newer data: the event only filled missing keys.
    Stale,
    /// The object, or its parent, is deleted: the event was ignored.
    IgnoredDeleted,
    /// The event's type is not one the mirror knows: recorded, not applied.
    Unsupported,
    /// A payload field had the wrong JSON type: recorded, not applied.
    Rejected,
}

impl Outcome {
    /// All outcomes, in a fixed order.
    pub const ALL: [Outcome; 5] = [
        Outcome::Applied,
        Outcome::Stale,
        Outcome::IgnoredDeleted,
        Outcome::Unsupported,
        Outcome::Rejected,
    ];

    /// The name stored in the log: `applied`, `stale`, `ignored_deleted`,
    /// `unsupported` or `rejected`.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Applied => "applied",
            Outcome::Stale => "stale",
            Outcome::IgnoredDeleted => "ignored_deleted",
            Outcome::Unsupported => "unsupported",
            Outcome::Rejected => "rejected",
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Outcome {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Outcome::ALL
            .into_iter()
            .find(|o| o.as_str() == s)
            .ok_or_else(|| format!("unknown outcome `{s}`"))
    }
}

/// Where a delivery came from; recorded in the log and used again by `rebuild`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Delivered by Protocol to `POST /webhooks`.
    Webhook,
    /// Read from a file by `protocol-mirror import`.
    Import,
    /// An object listed by Protocol's REST API (`backfill`), fetched in a page requested
    /// when the log's last sequence number was `page_seq`.
    Backfill {
        /// The log position when the page was requested.
        page_seq: i64,
    },
}

impl Origin {
    /// The name stored in the log's `source` column.
    pub fn source(self) -> &'static str {
        match self {
            Origin::Webhook => "webhook",
            Origin::Import => "import",
            Origin::Backfill { .. } => "backfill",
        }
    }

    /// The page position of a backfilled object.
    pub fn page_seq(self) -> Option<i64> {
        match self {
            Origin::Backfill { page_seq } => Some(page_seq),
            Origin::Webhook | Origin::Import => None,
        }
    }

    /// The origin of a logged event, from its `source` and `page_seq` columns.
    pub(crate) fn from_log(source: &str, page_seq: Option<i64>) -> Origin {
        match (source, page_seq) {
            ("backfill", Some(page_seq)) => Origin::Backfill { page_seq },
            ("import", _) => Origin::Import,
            _ => Origin::Webhook,
        }
    }
}

/// The rows a delete removed besides its own, per table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cascade {
    /// Conversations deleted (and tombstoned).
    pub conversations: u64,
    /// Messages deleted (and tombstoned).
    pub messages: u64,
    /// Attachments deleted (and tombstoned).
    pub attachments: u64,
    /// Group memberships removed.
    pub memberships: u64,
}

impl Cascade {
    /// How many rows the cascade removed (memberships included).
    pub fn total(&self) -> u64 {
        self.conversations + self.messages + self.attachments + self.memberships
    }

    pub(crate) fn to_json(self) -> Option<String> {
        (self.total() > 0).then(|| {
            format!(
                r#"{{"conversations":{},"messages":{},"attachments":{},"memberships":{}}}"#,
                self.conversations, self.messages, self.attachments, self.memberships
            )
        })
    }
}

/// The result of delivering one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// The event was new: it is in the log with this outcome.
    Logged {
        /// Its sequence number in the log.
        seq: i64,
        /// What applying it did.
        outcome: Outcome,
        /// What its cascade removed.
        cascade: Cascade,
    },
    /// The event id was seen before: nothing was applied again.
    Duplicate {
        /// The outcome of its first delivery.
        first: Outcome,
        /// Why its first delivery was rejected, as the log keeps it (`None` unless
        /// `first` is [`Outcome::Rejected`]): a redelivery is answered with the first
        /// delivery's reason, whatever body it brings.
        rejection: Option<String>,
    },
}

impl Applied {
    /// The outcome of the event's first (or only) delivery.
    pub fn outcome(&self) -> Outcome {
        match self {
            Applied::Logged { outcome, .. } => *outcome,
            Applied::Duplicate { first, .. } => *first,
        }
    }
}

/// Why a body could not be applied.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApplyError {
    /// The body is not an event envelope (not JSON, or lacking `id`, `type` or
    /// `payload.id`): nothing was stored.
    #[error(transparent)]
    Invalid(EventError),
    /// The database failed; the caller's transaction must be rolled back.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What replaying one event did to the replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Effect {
    pub(crate) outcome: Outcome,
    pub(crate) error: Option<String>,
    pub(crate) cascade: Cascade,
}

impl Effect {
    fn of(outcome: Outcome) -> Effect {
        Effect {
            outcome,
            error: None,
            cascade: Cascade::default(),
        }
    }
}

/// A delivered body that is an event envelope: either a well-formed event, or one
/// whose payload has a field of the wrong type (to be logged as rejected).
#[derive(Debug, Clone)]
pub struct Delivery {
    parsed: Result<Event, EventError>,
    body: String,
}

impl Delivery {
    /// Parses a delivered body. Fails (the 400 class: nothing is stored) when it is
    /// not an event envelope at all.
    pub fn parse(body: &[u8]) -> Result<Delivery, EventError> {
        let parsed = Event::from_slice(body);
        if let Err(error) = &parsed
            && !error.is_field()
        {
            return Err(error.clone());
        }
        // Valid JSON is valid UTF-8: nothing is replaced.
        let body = String::from_utf8_lossy(body).into_owned();
        Ok(Delivery { parsed, body })
    }

    /// The event id.
    pub fn event_id(&self) -> &str {
        match &self.parsed {
            Ok(event) => &event.id,
            Err(EventError::Field { event_id, .. }) => event_id,
            Err(_) => unreachable!("Delivery::parse keeps only field errors"),
        }
    }

    /// The event's `type` string.
    pub fn event_type(&self) -> String {
        match &self.parsed {
            Ok(event) => event.kind.to_string(),
            Err(EventError::Field { event_type, .. }) => event_type.to_string(),
            Err(_) => unreachable!("Delivery::parse keeps only field errors"),
        }
    }

    /// The parsed event, or why its payload is rejected.
    pub fn event(&self) -> &Result<Event, EventError> {
        &self.parsed
    }

    /// The raw body.
    pub fn body(&self) -> &str {
        &self.body
    }
}

/// Applies one delivered `body` (received by webhook at `received_at`, Unix seconds)
/// inside the caller's transaction on `conn`: see [`apply_delivery`].
pub fn apply_body(conn: &Connection, body: &[u8], received_at: i64) -> Result<Applied, ApplyError> {
    let delivery = Delivery::parse(body).map_err(ApplyError::Invalid)?;
    Ok(apply_delivery(
        conn,
        &delivery,
        Origin::Webhook,
        received_at,
    )?)
}

/// Applies a parsed delivery inside the caller's transaction on `conn`: deduplicates
/// by event id, applies the replica rules, and logs the event with its outcome. A
/// payload with a field of the wrong type is logged as [`Outcome::Rejected`].
///
/// A constraint that fails is checked for damage to the table it names, which it is
/// when SQLite's check says so (`store::damage_behind`): a garbled page surfaced as
/// `UNIQUE constraint failed: messages.rowid`, taken for one event's own failure (a
/// black-box probe).
pub fn apply_delivery(
    conn: &Connection,
    delivery: &Delivery,
    origin: Origin,
    received_at: i64,
) -> Result<Applied, StoreError> {
    apply_logged(conn, delivery, origin, received_at)
        .map_err(|error| store::damage_behind(conn, error))
}

/// [`apply_delivery`], without the check of a failed constraint for damage.
fn apply_logged(
    conn: &Connection,
    delivery: &Delivery,
    origin: Origin,
    received_at: i64,
) -> Result<Applied, StoreError> {
    let event_id = delivery.event_id();
    if let Some(first) = first_delivery(conn, event_id)? {
        Log::count_duplicate(conn, event_id)?;
        return Ok(first);
    }
    let seq = Log::next_seq(conn)?;
    let effect = replay(conn, &delivery.parsed, origin, seq)?;
    let object_id = match &delivery.parsed {
        Ok(event) => event.payload.id().to_owned(),
        Err(_) => payload_id(&delivery.body),
    };
    Log::append(
        conn,
        &LogEntry {
            seq,
            event_id,
            event_type: &delivery.event_type(),
            object_id: &object_id,
            received_at,
            outcome: effect.outcome.as_str(),
            error: effect.error.as_deref(),
            cascaded: effect.cascade.total(),
            cascade: effect.cascade.to_json().as_deref(),
            body: &delivery.body,
            source: origin.source(),
            page_seq: origin.page_seq(),
        },
    )?;
    Ok(Applied::Logged {
        seq,
        outcome: effect.outcome,
        cascade: effect.cascade,
    })
}

/// What a redelivery of `event_id` is answered, if it is logged: the outcome the log
/// holds for it, and a rejected event's reason. Reads only (a redelivery counted by [`apply_delivery`] also writes).
pub fn first_delivery(conn: &Connection, event_id: &str) -> Result<Option<Applied>, StoreError> {
    Log::outcome_of(conn, event_id)?
        .map(|(first, error, event_type)| {
            let first: Outcome = first.parse().map_err(|message| StoreError::Corrupt {
                resource: "event",
                id: event_id.to_owned(),
                message,
            })?;
            // Said as the first delivery's answer said it (the log keeps the field's
            // error, under the event's type; the words are `EventError::Field`'s
            // `Display`, in protocol-types, which has no constructor from text).
            let rejection = error
                .filter(|_| first == Outcome::Rejected)
                .map(|error| format!("invalid {event_type} payload: {error}"));
            Ok(Applied::Duplicate { first, rejection })
        })
        .transpose()
}

/// The payload id of a rejected body (its envelope was checked, so it has one).
fn payload_id(body: &str) -> String {
    protocol_types::parse_json(body.as_bytes())
        .ok()
        .and_then(|v| v["payload"]["id"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// Whether `object`, a listed copy of a `resource` object, is an older version than
/// its stored row (rule 5, as an update is judged: only messages have versions), so
/// that applying it could only fill.
pub(crate) fn older_than_stored(
    conn: &Connection,
    resource: Resource,
    object: &Object,
) -> Result<bool, StoreError> {
    if resource != Resource::Message {
        return Ok(false);
    }
    let Ok(listed) = Message::from_object(object.clone()) else {
        return Ok(false);
    };
    Ok(store::load::<Message>(conn, &listed.id)?
        .is_some_and(|stored| Message::older(&listed, &stored)))
}

/// Applies a parsed event (or the field error of a rejected one) to the replica
/// tables, as event number `seq`, without touching the log.
pub(crate) fn replay(
    conn: &Connection,
    parsed: &Result<Event, EventError>,
    origin: Origin,
    seq: i64,
) -> Result<Effect, StoreError> {
    let event = match parsed {
        Ok(event) => event,
        Err(error) => {
            let message = match error {
                EventError::Field { source, .. } => source.to_string(),
                other => other.to_string(),
            };
            return Ok(Effect {
                outcome: Outcome::Rejected,
                error: Some(message),
                cascade: Cascade::default(),
            });
        }
    };
    let action = match (&event.kind, origin) {
        (EventKind::Known(event_type), _) => event_type.action,
        (EventKind::Unknown(kind), Origin::Backfill { page_seq }) => {
            return backfill::replay(conn, kind, &event.payload, page_seq, seq);
        }
        (EventKind::Unknown(_), _) => return Ok(Effect::of(Outcome::Unsupported)),
    };
    match &event.payload {
        Payload::Contact(p) => apply_to(conn, action, p, seq),
        Payload::Conversation(p) => apply_to(conn, action, p, seq),
        Payload::Message(p) => apply_to(conn, action, p, seq),
        Payload::Group(p) => apply_to(conn, action, p, seq),
        Payload::Attachment(p) => apply_to(conn, action, p, seq),
        Payload::Unknown(_) => Ok(Effect::of(Outcome::Unsupported)),
    }
}

fn apply_to<M: Rules>(
    conn: &Connection,
    action: Action,
    payload: &M,
    seq: i64,
) -> Result<Effect, StoreError> {
    match action {
        Action::Created => upsert(conn, Write::Create, payload, seq),
        Action::Updated => upsert(conn, Write::Update, payload, seq),
        Action::Deleted => {
            let mut cascade = Cascade::default();
            let outcome = delete(conn, payload, seq, &mut cascade)?;
            Ok(Effect {
                outcome,
                error: None,
                cascade,
            })
        }
    }
}

/// How an upsert treats a row that already exists.
#[derive(Debug, Clone, Copy)]
enum Write {
    /// `created`: fill only.
    Create,
    /// `updated`: merge, unless the payload is older (messages).
    Update,
    /// A backfilled object: merge only when no event changed the row after
    /// `page_seq` (and the payload is not older), else fill only.
    Backfill { page_seq: i64 },
}

/// Rules 2-5 and 7: `created` fills, `updated` merges (messages by `updated_at`),
/// tombstoned objects and children of tombstoned parents are ignored. A child of a
/// tombstoned parent that was never stored is tombstoned all the same
/// ([`tombstone_ignored`]).
fn upsert<M: Rules>(
    conn: &Connection,
    write: Write,
    payload: &M,
    seq: i64,
) -> Result<Effect, StoreError> {
    let id = payload.id();
    let backfilled = matches!(write, Write::Backfill { .. });
    let ignored = |cascade| Effect {
        outcome: Outcome::IgnoredDeleted,
        error: None,
        cascade,
    };
    if store::is_tombstoned(conn, M::RESOURCE, id)? {
        // What a message's event lists goes with it, as its delete's cascade took
        // what it had (a probe: one order of the same events left an attachment, the
        // other none). Not what a late event of a contact or group names: their
        // cascades would take another contact's conversation, or a group's, that the
        // event names (a review).
        let mut cascade = Cascade::default();
        if !backfilled {
            M::tombstone_listed(conn, payload, seq, &mut cascade)?;
        }
        return Ok(ignored(cascade));
    }
    let stored: Option<store::Stored<M>> = store::load_row(conn, id)?;
    if let Some((resource, parent)) = M::parent(payload, stored.as_ref().map(|row| &row.model))
        && store::is_tombstoned(conn, resource, parent)?
    {
        // A row stored under another, living parent (the payload names the deleted
        // one) is one its parent's cascade spared: it stays as it is; one stored
        // without a parent (an update came first) goes, as it would have had the
        // event come first (a probe). A backfilled object only fills (its page may
        // postdate the parent's delete, and Protocol still lists it; a review); so
        // does one whose payload does not settle its parent.
        let stored = stored.map(|row| row.model);
        let mut cascade = Cascade::default();
        if stored
            .as_ref()
            .is_none_or(|row| M::parent(row, None).is_none())
            && !backfilled
            && M::parent_is_certain(payload)
        {
            tombstone_ignored(conn, payload, stored.as_ref(), seq, &mut cascade)?;
        }
        return Ok(ignored(cascade));
    }
    let mut held_back = None;
    let outcome = match stored {
        None => {
            store::save(conn, payload, seq, None)?;
            Outcome::Applied
        }
        Some(store::Stored {
            model: mut row,
            seq: row_seq,
            slot,
        }) => {
            let overwrite = match write {
                Write::Create => false,
                Write::Update => !M::older(payload, &row),
                Write::Backfill { page_seq } => row_seq <= page_seq && !M::older(payload, &row),
            };
            if overwrite {
                row.merge(payload.clone());
                store::save(conn, &row, seq, Some(&slot))?;
                Outcome::Applied
            } else {
                if matches!(write, Write::Backfill { .. }) {
                    held_back = Some(row.clone());
                }
                if row.fill(payload.clone()) {
                    store::save(conn, &row, seq, Some(&slot))?;
                }
                Outcome::Stale
            }
        }
    };
    M::embedded(conn, payload, outcome, held_back.as_ref(), seq)?;
    Ok(Effect::of(outcome))
}

/// Rules 2 and 6: a delete removes the row (if any), tombstones the id (always) and
/// cascades over stored rows by parent id. Like any event, it is ignored for a
/// tombstoned object. For a child of a tombstoned parent it is ignored too
/// (`ignored_deleted`), but its object is removed and tombstoned all the same
/// ([`tombstone_ignored`]).
fn delete<M: Rules>(
    conn: &Connection,
    payload: &M,
    seq: i64,
    cascade: &mut Cascade,
) -> Result<Outcome, StoreError> {
    let id = payload.id();
    if store::is_tombstoned(conn, M::RESOURCE, id)? {
        M::tombstone_listed(conn, payload, seq, cascade)?;
        return Ok(Outcome::IgnoredDeleted);
    }
    let stored: Option<M> = store::load(conn, id)?;
    let parent_gone = match M::parent(payload, stored.as_ref()) {
        Some((resource, parent)) => store::is_tombstoned(conn, resource, parent)?,
        None => false,
    };
    if parent_gone {
        tombstone_ignored(conn, payload, stored.as_ref(), seq, cascade)?;
        return Ok(Outcome::IgnoredDeleted);
    }
    remove_object(conn, payload, stored.is_some(), seq)?;
    M::embedded_in_delete(conn, payload, seq)?;
    M::cascade(conn, payload, stored.as_ref(), seq, cascade)?;
    Ok(Outcome::Applied)
}

/// An event of a child of a tombstoned parent, ignored (`ignored_deleted`, rule 2),
/// whose object is removed and tombstoned all the same, with what it lists (a
/// message's attachments, never filled or made: rule 7 reads those of events that
/// are not ignored) and what is stored under it, as the parent's cascade would have
/// had the child been stored under it before (rule 6: "no late event brings it
/// back"); Protocol deleted it with its parent. For its delete, and, since schema 18,
/// for any event of one never stored whose payload settles its parent: a later
/// partial update, which names no parent, brought back a message of a deleted
/// conversation (a black-box probe; so did a conversation of a deleted group,
/// through its delete, before schema 13).
fn tombstone_ignored<M: Rules>(
    conn: &Connection,
    payload: &M,
    stored: Option<&M>,
    seq: i64,
    cascade: &mut Cascade,
) -> Result<(), StoreError> {
    remove_object(conn, payload, stored.is_some(), seq)?;
    M::tombstone_listed(conn, payload, seq, cascade)?;
    M::cascade(conn, payload, stored, seq, cascade)
}

/// Removes the object's row, when one is `stored`, and tombstones its id (always).
fn remove_object<M: Rules>(
    conn: &Connection,
    payload: &M,
    stored: bool,
    seq: i64,
) -> Result<(), StoreError> {
    let id = payload.id();
    let position = match stored {
        true => store::delete(conn, M::RESOURCE, id)?,
        false => None,
    };
    store::tombstone(conn, M::RESOURCE, id, seq, position)
}

impl store::Store {
    /// Applies one delivered body in a transaction of its own (see [`apply_body`]).
    pub fn apply(&mut self, body: &[u8], received_at: i64) -> Result<Applied, ApplyError> {
        let tx = self.transaction()?;
        let applied = apply_body(&tx, body, received_at)?;
        tx.commit()?;
        Ok(applied)
    }
}
