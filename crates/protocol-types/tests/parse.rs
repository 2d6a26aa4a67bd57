//! Parsing and writing events, from the outside: this file uses the crate exactly as
//! another program would.

use proptest::prelude::*;
use protocol_types::{
    Action, Contact, Event, EventError, EventKind, EventType, Field, Message, Payload, Resource,
    Timestamp,
};
use serde_json::{Value, json};

const SAMPLE: &str = include_str!("data/sample-events.ndjson");

#[test]
fn every_sample_event_round_trips() {
    let mut seen = std::collections::BTreeSet::new();
    for line in SAMPLE.lines().filter(|l| !l.trim().is_empty()) {
        let event = Event::from_slice(line.as_bytes()).unwrap_or_else(|e| panic!("{e}: {line}"));
        let original: Value = serde_json::from_str(line).unwrap();
        assert_eq!(event.to_value(), original);
        assert_eq!(serde_json::to_value(&event).unwrap(), original);
        let via_serde: Event = serde_json::from_str(line).unwrap();
        assert_eq!(via_serde, event);
        seen.insert(event.event_type().unwrap());
    }
    assert_eq!(seen.len(), 15, "the sample covers all 15 types");
}

#[test]
fn unknown_types_and_fields_survive_a_round_trip() {
    let original = json!({
        "id": "e1",
        "type": "reaction.created",
        "payload": {"id": "r1", "emoji": "tada", "nested": {"deep": [1, null, "x"]}}
    });
    let event = Event::from_value(original.clone()).unwrap();
    assert_eq!(event.kind, EventKind::Unknown("reaction.created".into()));
    assert!(matches!(event.payload, Payload::Unknown(_)));
    assert_eq!(event.to_value(), original);

    let original = json!({
        "id": "e2",
        "type": "message.created",
        "payload": {
            "id": "m1",
            "edited_by": {"id": "c9"},
            "contact": {"id": "c1", "pronouns": "they"},
            "attachments": [{"id": "a1", "thumbnail": "t.png"}],
            "reactions": [{"tada": []}]
        }
    });
    let event = Event::from_value(original.clone()).unwrap();
    assert_eq!(event.to_value(), original);

    // The envelope's own unknown keys too (they were dropped), in `extra`; its three
    // documented keys are the fields', whatever `extra` is given.
    let original = json!({
        "id": "e3",
        "type": "contact.created",
        "payload": {"id": "c1"},
        "api_version": "2024-01",
        "delivery": {"attempt": 2}
    });
    let bytes = original.to_string();
    let mut event = Event::from_slice(bytes.as_bytes()).unwrap();
    assert_eq!(event.extra["api_version"], "2024-01");
    assert_eq!(event.to_value(), original);
    assert_eq!(serde_json::to_value(&event).unwrap(), original);
    event.extra.insert("id".into(), json!("not the id"));
    assert_eq!(event.to_value()["id"], "e3");
}

/// Floats in unknown keys survive a round trip exactly (found by fuzzing: without
/// serde_json's `float_roundtrip`, `1.5e200` came back one ulp off).
#[test]
#[cfg(feature = "float-roundtrip")]
fn floats_round_trip_exactly() {
    for body in [
        r#"{"id":"e","type":"r","payload":{"id":"1","":[1.5e200]}}"#,
        r#"{"id":"e","type":"contact.updated","payload":{"id":"1","score":0.1,"tiny":5e-324,"big":1.7976931348623157e308}}"#,
    ] {
        let event = Event::from_slice(body.as_bytes()).unwrap();
        let again = Event::from_slice(&event.to_vec()).unwrap();
        assert_eq!(again, event, "{body}");
        assert_eq!(
            event.to_value(),
            serde_json::from_str::<Value>(body).unwrap()
        );
    }
}

#[test]
fn partial_payloads_parse() {
    let event =
        Event::from_slice(br#"{"id":"e","type":"contact.deleted","payload":{"id":"c1"}}"#).unwrap();
    assert_eq!(event.payload, Payload::Contact(Contact::new("c1")));
    let event = Event::from_slice(
        br#"{"id":"e","type":"message.updated","payload":{"id":"m","updated_at":null}}"#,
    )
    .unwrap();
    let Payload::Message(message) = event.payload else {
        panic!()
    };
    assert_eq!(message.updated_at, Field::Null);
    assert_eq!(message.message, Field::Absent);
}

/// Every documented field, with a value of a wrong type: the error names it.
#[test]
fn wrong_field_types_name_the_field() {
    let fields: &[(&str, &[&str])] = &[
        (
            "contact",
            &[
                "username",
                "phone_number",
                "avatar_url",
                "display_name",
                "conversation_id",
                "last_active_at",
                "created_at",
            ],
        ),
        (
            "conversation",
            &[
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
        ),
        (
            "message",
            &[
                "conversation_id",
                "contact",
                "message",
                "reactions",
                "attachments",
                "read_at",
                "created_at",
                "updated_at",
            ],
        ),
        (
            "group",
            &[
                "name",
                "description",
                "avatar_url",
                "conversation_id",
                "contacts",
                "created_at",
                "archived_at",
            ],
        ),
        (
            "attachment",
            &[
                "message_id",
                "filename",
                "file_url",
                "file_type",
                "file_size",
                "created_at",
            ],
        ),
    ];
    for (resource, names) in fields {
        for name in *names {
            // A float is wrong for every documented field (strings, booleans, integer
            // timestamps and sizes, objects, arrays).
            for wrong in [json!(1.5), json!({"x": 1}), json!([true])] {
                let bad = json!({"id": "e", "type": format!("{resource}.updated"),
                                 "payload": {"id": "x", *name: wrong}});
                let is_container =
                    matches!(*name, "contact" | "reactions" | "attachments" | "contacts");
                match Event::from_value(bad.clone()) {
                    Err(EventError::Field {
                        source, event_id, ..
                    }) => {
                        assert_eq!(event_id, "e");
                        assert!(
                            source.path().starts_with(&format!("payload.{name}")),
                            "{bad}: {source}"
                        );
                        assert!(source.to_string().contains(name));
                    }
                    // An array or object can be right for the container fields, whose
                    // elements are then checked.
                    Ok(_) if is_container => {}
                    other => panic!("{bad}: {other:?}"),
                }
            }
        }
    }
}

#[test]
fn builders_write_what_parsers_read() {
    let message = Message {
        conversation_id: "conv".into(),
        message: "hi".into(),
        read_at: Field::Null,
        updated_at: Timestamp(10).into(),
        ..Message::new("m1")
    };
    let event = Event::new("e1", Action::Created, message);
    assert_eq!(
        event.event_type(),
        Some(EventType::new(Resource::Message, Action::Created))
    );
    let body = event.to_vec();
    assert_eq!(Event::from_slice(&body).unwrap(), event);
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap(),
        json!({"id": "e1", "type": "message.created", "payload": {
            "id": "m1", "conversation_id": "conv", "message": "hi",
            "read_at": null, "updated_at": 10}})
    );
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        "[a-z_]{0,8}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("id".to_string()),
                    Just("type".to_string()),
                    Just("payload".to_string()),
                    Just("created_at".to_string()),
                    Just("contact".to_string()),
                    Just("attachments".to_string()),
                    "[a-z_]{1,12}"
                ],
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    /// Parsing never panics, whatever the bytes.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = Event::from_slice(&bytes);
    }

    /// Whatever JSON comes in: it is an event, or a precise error; and an event
    /// re-serializes to the JSON it was read from (minus unknown envelope keys).
    #[test]
    fn arbitrary_json_parses_or_errors(
        payload in arb_json(),
        kind in prop_oneof![
            Just("contact.created".to_string()), Just("message.updated".to_string()),
            Just("group.created".to_string()), Just("attachment.deleted".to_string()),
            Just("conversation.updated".to_string()), "[a-z.]{0,12}"
        ],
    ) {
        let mut payload = payload;
        if let Value::Object(map) = &mut payload {
            map.insert("id".into(), json!("x1"));
        }
        let envelope = json!({"id": "e1", "type": kind, "payload": payload});
        match Event::from_value(envelope.clone()) {
            Ok(event) => prop_assert_eq!(event.to_value(), envelope),
            Err(EventError::Field { source, .. }) => {
                prop_assert!(source.path().starts_with("payload."));
            }
            Err(EventError::Envelope { field, .. }) => prop_assert_eq!(field, "payload"),
            Err(other) => prop_assert!(false, "unexpected {:?}", other),
        }
    }
}
