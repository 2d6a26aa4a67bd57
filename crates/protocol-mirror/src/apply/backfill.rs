//! Backfilled objects: Protocol's REST API lists an object, and the mirror applies it
//! as a `<resource>.backfill` event of [`Origin::Backfill`](super::Origin): it
//! overwrites a row only when no event changed that row after the page was requested,
//! and otherwise only fills missing keys. Tombstones win, messages still obey
//! `updated_at`.

use protocol_types::{Object, Payload, Resource};
use rusqlite::Connection;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::{Delivery, Effect, Outcome, Write, upsert};
use crate::store::StoreError;

/// What a listed object met in the replica, for [`Delivery::backfill`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Basis {
    /// No row or tombstone has the object's id.
    None,
    /// Its row, last changed by this event.
    Row(i64),
    /// Its tombstone, made by this event.
    Deleted(i64),
}

impl Basis {
    /// The sequence number of the event it names, if any.
    pub fn seq(self) -> Option<i64> {
        match self {
            Basis::None => None,
            Basis::Row(seq) | Basis::Deleted(seq) => Some(seq),
        }
    }
}

/// The `type` of a backfill event of `resource` (`message.backfill`): the log's type
/// of the objects `backfill` applied.
pub fn event_type(resource: Resource) -> String {
    format!("{resource}.backfill")
}

impl Delivery {
    /// The synthetic event for an object Protocol's REST API listed in a page
    /// requested at log position `page_seq`. Its id derives from (resource, id, body),
    /// `basis`, the sequence number of the last event that changed the stored row or
    /// deleted it (none when there is neither), and whether a row's event came after
    /// the page (then the object may only fill the row): the same object against the
    /// same row is the same event (a duplicate), while a row changed since (say, by a
    /// webhook whose undo was missed) gets a new event that heals it, and so does an
    /// object that a webhook racing its page held back, once a later page may
    /// overwrite. A delete holds nothing back, whatever the page's age: the object is
    /// ignored, and the next pass's event for it is the same (a delete newer than the
    /// first page made two; a black-box probe).
    pub fn backfill(resource: Resource, object: Object, basis: Basis, page_seq: i64) -> Delivery {
        let payload = Value::Object(object);
        let id = payload["id"].as_str().unwrap_or_default().to_owned();
        let mut hash = Sha256::new();
        hash.update(resource.as_str());
        hash.update([0]);
        hash.update(&id);
        hash.update([0]);
        hash.update(payload.to_string());
        hash.update([0]);
        hash.update(
            basis
                .seq()
                .map_or_else(|| "none".to_owned(), |seq| seq.to_string()),
        );
        if matches!(basis, Basis::Row(seq) if seq > page_seq) {
            hash.update(b"\0held");
        }
        Delivery::synthetic("backfill", hash, event_type(resource), payload)
    }

    /// The synthetic delete of an object Protocol no longer has (`backfill --prune`),
    /// found missing by the pass that began at `pass_seq`.
    pub fn prune(resource: Resource, id: &str, pass_seq: i64) -> Delivery {
        let mut hash = Sha256::new();
        hash.update(resource.as_str());
        hash.update([0]);
        hash.update(id);
        hash.update([0]);
        hash.update(pass_seq.to_be_bytes());
        let payload = serde_json::json!({"id": id});
        Delivery::synthetic("prune", hash, format!("{resource}.deleted"), payload)
    }

    /// A synthetic event of type `kind` with `payload`, its id `<prefix>_` and the
    /// first 16 bytes of `hash` in hex. (Its body is not checked as a delivered one's
    /// is: what a page lists is an object with a non-empty string id, re-serialized,
    /// which `Delivery::parse` accepts.)
    fn synthetic(prefix: &str, hash: Sha256, kind: String, payload: Value) -> Delivery {
        let digest: String = hash.finalize()[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let envelope = serde_json::json!({
            "id": format!("{prefix}_{digest}"),
            "type": kind,
            "payload": payload,
        });
        let body = envelope.to_string();
        let parsed = protocol_types::Event::from_slice(body.as_bytes());
        debug_assert!(
            matches!(
                parsed,
                Ok(_) | Err(protocol_types::EventError::Field { .. })
            ),
            "{parsed:?}"
        );
        Delivery { parsed, body }
    }
}

/// Applies a backfilled object (an event of unknown type `kind` whose payload is
/// the raw object) as event number `seq`.
pub(super) fn replay(
    conn: &Connection,
    kind: &str,
    payload: &Payload,
    page_seq: i64,
    seq: i64,
) -> Result<Effect, StoreError> {
    let resource = kind
        .strip_suffix(".backfill")
        .and_then(|r| r.parse::<Resource>().ok());
    let (Some(resource), Payload::Unknown(object)) = (resource, payload) else {
        return Ok(Effect::of(Outcome::Unsupported));
    };
    let typed = match Payload::from_object(resource, object.clone()) {
        Ok(typed) => typed,
        Err(error) => {
            return Ok(Effect {
                outcome: Outcome::Rejected,
                error: Some(format!("payload {error}")),
                cascade: Default::default(),
            });
        }
    };
    let write = Write::Backfill { page_seq };
    match &typed {
        Payload::Contact(p) => upsert(conn, write, p, seq),
        Payload::Conversation(p) => upsert(conn, write, p, seq),
        Payload::Message(p) => upsert(conn, write, p, seq),
        Payload::Group(p) => upsert(conn, write, p, seq),
        Payload::Attachment(p) => upsert(conn, write, p, seq),
        Payload::Unknown(_) => Ok(Effect::of(Outcome::Unsupported)),
    }
}
