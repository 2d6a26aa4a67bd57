//! The replica engine against an independent reference model of SPEC section 4
//! (`tests/model`), on random histories of a small account delivered badly: reordered,
//! duplicated, late, with unknown types and wrong field types mixed in.
//!
//! - `engine_follows_the_model`: every delivery's outcome (and cascade counts), the
//!   replica after every delivery, and the event log agree with the model.
//! - `redelivering_everything_changes_nothing`: rule 1.
//! - `rebuild_reproduces_live_ingestion`: rule 9.
//!
//! The model itself is checked on hand-written histories at the end of this file.

#[path = "../../../tests/model/mod.rs"]
mod model;

use model::{Cascade, Delivery, Model, Receipt, Snapshot, describe};
use proptest::prelude::*;
use protocol_mirror::apply::{Applied, ApplyError};
use protocol_mirror::rebuild::rebuild;
use protocol_mirror::store::Store;
use protocol_mirror::store::query::{ListQuery, list};
use protocol_types::Resource;
use std::collections::{BTreeMap, BTreeSet};

/// Cases per property; sized so that the file runs in seconds in a debug build.
const CASES: u32 = 256;

/// Delivers one body to the engine, as a receipt comparable with the model's.
fn deliver(store: &mut Store, body: &[u8], received_at: i64) -> Receipt {
    match store.apply(body, received_at) {
        Ok(Applied::Logged {
            outcome, cascade, ..
        }) => Receipt::Logged {
            outcome: outcome.as_str(),
            cascade: Cascade {
                conversations: cascade.conversations,
                messages: cascade.messages,
                attachments: cascade.attachments,
                memberships: cascade.memberships,
            },
        },
        Ok(Applied::Duplicate { first, .. }) => Receipt::Duplicate {
            first: first.as_str(),
        },
        Err(ApplyError::Invalid(_)) => Receipt::Invalid,
        Err(error) => panic!("the store failed: {error}"),
    }
}

/// Delivers the whole stream, in order, and returns the receipts.
fn deliver_all(store: &mut Store, history: &[Delivery]) -> Vec<Receipt> {
    history
        .iter()
        .zip(0..)
        .map(|(delivery, received_at)| deliver(store, &delivery.0, received_at))
        .collect()
}

fn snapshot(store: &Store) -> Snapshot {
    let snapshot = store.snapshot().expect("the snapshot reads");
    Snapshot {
        objects: snapshot.objects,
        tombstones: snapshot.tombstones,
    }
}

/// The engine's event log: event ids in sequence order, with their outcomes.
fn event_log(store: &Store) -> Vec<(String, String)> {
    let mut stmt = store
        .conn()
        .prepare("SELECT event_id, outcome FROM events ORDER BY seq")
        .expect("the log reads");
    stmt.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
        .and_then(Iterator::collect)
        .expect("the log reads")
}

/// Fails the case with a readable diff when the replicas differ.
fn assert_same(
    want: &Snapshot,
    got: &Snapshot,
    what: &str,
    history: &[Delivery],
) -> Result<(), TestCaseError> {
    match want.diff(got) {
        None => Ok(()),
        Some(diff) => Err(TestCaseError::fail(format!(
            "{what} (want vs got):\n{diff}\nhistory:\n{}",
            describe(history)
        ))),
    }
}

/// `list attachments --conversation C` holds the attachments whose stored message is
/// in `C`, by the model's replica (the store keeps each attachment's conversation in
/// step with its message; migration 0012).
fn attachments_by_conversation_follow_messages(
    store: &Store,
    want: &Snapshot,
) -> Result<(), String> {
    let object = |resource: &'static str| {
        want.objects
            .iter()
            .filter(move |((r, _), _)| r == resource)
            .map(|((_, id), object)| (id.clone(), object))
    };
    let conversation_of: BTreeMap<String, Option<String>> = object("message")
        .map(|(id, message)| (id, message["conversation_id"].as_str().map(str::to_owned)))
        .collect();
    let mut expected: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (id, _) in object("conversation") {
        expected.entry(id).or_default();
    }
    for (id, attachment) in object("attachment") {
        let message = attachment["message_id"].as_str();
        if let Some(Some(conversation)) = message.and_then(|m| conversation_of.get(m)) {
            expected.entry(conversation.clone()).or_default().insert(id);
        }
    }
    for conversation in conversation_of.values().flatten() {
        expected.entry(conversation.clone()).or_default();
    }
    for (conversation, want) in expected {
        let query = ListQuery {
            conversation: Some(conversation.clone()),
            ..ListQuery::default()
        };
        let got: BTreeSet<String> = list(store.conn(), Resource::Attachment, &query)
            .map_err(|e| e.to_string())?
            .iter()
            .map(|a| a["id"].as_str().unwrap_or_default().to_owned())
            .collect();
        if got != want {
            return Err(format!(
                "attachments of conversation {conversation}: want {want:?}, got {got:?}"
            ));
        }
    }
    Ok(())
}

/// 256 cases; on failure, shrink long enough to get a history of a few events.
fn config() -> ProptestConfig {
    ProptestConfig {
        max_shrink_iters: 20_000,
        ..ProptestConfig::with_cases(CASES)
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn engine_follows_the_model(history in model::history()) {
        let mut store = Store::open_in_memory().unwrap();
        let mut model = Model::new();
        for (i, delivery) in history.iter().enumerate() {
            let want = model.apply(&delivery.0);
            let got = deliver(&mut store, &delivery.0, i as i64);
            prop_assert_eq!(
                &got, &want,
                "delivery {} {:?}: receipts differ (left: engine, right: model)\nhistory:\n{}",
                i, delivery, describe(&history)
            );
            // After every delivery, not only at the end: a later delete could hide
            // a wrong row.
            let what = format!("after delivery {i} {delivery:?}, the replica differs from the model");
            assert_same(&model.snapshot(), &snapshot(&store), &what, &history)?;
            attachments_by_conversation_follow_messages(&store, &model.snapshot())
                .map_err(|e| TestCaseError::fail(format!("after delivery {i}: {e}\nhistory:\n{}", describe(&history))))?;
        }
        let model_log: Vec<(String, String)> = model
            .log()
            .into_iter()
            .map(|(id, outcome)| (id, outcome.to_owned()))
            .collect();
        prop_assert_eq!(event_log(&store), model_log, "event log (left: engine, right: model)");
    }

    #[test]
    fn redelivering_everything_changes_nothing(history in model::history()) {
        let mut store = Store::open_in_memory().unwrap();
        let first = deliver_all(&mut store, &history);
        let once = snapshot(&store);
        let log = event_log(&store);
        let again = deliver_all(&mut store, &history);
        for (i, (first, again)) in first.iter().zip(&again).enumerate() {
            let want = match first {
                Receipt::Logged { outcome, .. } | Receipt::Duplicate { first: outcome } => {
                    Receipt::Duplicate { first: outcome }
                }
                Receipt::Invalid => Receipt::Invalid,
            };
            prop_assert_eq!(again, &want, "redelivery of {}: {:?}", i, history[i]);
        }
        prop_assert_eq!(event_log(&store), log, "the log grew");
        assert_same(&once, &snapshot(&store), "redelivery changed the replica", &history)?;
    }

    #[test]
    fn rebuild_reproduces_live_ingestion(history in model::history()) {
        let mut store = Store::open_in_memory().unwrap();
        deliver_all(&mut store, &history);
        let live = snapshot(&store);
        let log = event_log(&store);
        let summary = rebuild(&mut store, |_, _| std::ops::ControlFlow::Continue(())).unwrap();
        prop_assert_eq!(summary.events, log.len() as u64);
        prop_assert_eq!(summary.changed_outcomes, 0, "rebuild changed logged outcomes");
        prop_assert_eq!(event_log(&store), log);
        assert_same(&live, &snapshot(&store), "rebuild differs from live ingestion", &history)?;
        attachments_by_conversation_follow_messages(&store, &live)
            .map_err(|e| TestCaseError::fail(format!("after rebuild: {e}\nhistory:\n{}", describe(&history))))?;
    }
}

/// The reference model on hand-written histories, so that it can be trusted.
mod the_model {
    use proptest::strategy::{Strategy, ValueTree};
    use proptest::test_runner::TestRunner;
    use serde_json::{Value, json};

    use super::model::{Cascade, Model, Receipt, Snapshot, history};

    /// Applies each envelope; returns the outcome names ("duplicate", "invalid" for
    /// those receipts).
    fn run(model: &mut Model, events: &[Value]) -> Vec<&'static str> {
        events
            .iter()
            .map(|event| match model.apply(event.to_string().as_bytes()) {
                Receipt::Logged { outcome, .. } => outcome,
                Receipt::Duplicate { .. } => "duplicate",
                Receipt::Invalid => "invalid",
            })
            .collect()
    }

    fn event(id: &str, kind: &str, payload: Value) -> Value {
        json!({"id": id, "type": kind, "payload": payload})
    }

    fn object(snapshot: &Snapshot, resource: &str, id: &str) -> Option<Value> {
        snapshot
            .objects
            .get(&(resource.to_owned(), id.to_owned()))
            .cloned()
    }

    fn tombstones(snapshot: &Snapshot) -> Vec<String> {
        snapshot
            .tombstones
            .iter()
            .map(|(resource, id)| format!("{resource} {id}"))
            .collect()
    }

    #[test]
    fn created_fills_updated_merges_deleted_stays_deleted() {
        let mut model = Model::new();
        let outcomes = run(
            &mut model,
            &[
                event(
                    "e1",
                    "contact.updated",
                    json!({"id": "k1", "username": "a", "x": 1}),
                ),
                event(
                    "e2",
                    "contact.created",
                    json!({"id": "k1", "username": "b", "phone_number": "1", "display_name": null}),
                ),
                event(
                    "e3",
                    "contact.created",
                    json!({"id": "k1", "display_name": "filled?"}),
                ),
                event(
                    "e4",
                    "contact.updated",
                    json!({"id": "k1", "display_name": "K", "x": null}),
                ),
                event(
                    "e1",
                    "contact.updated",
                    json!({"id": "k1", "username": "a", "x": 1}),
                ),
            ],
        );
        assert_eq!(
            outcomes,
            ["applied", "stale", "stale", "applied", "duplicate"]
        );
        assert_eq!(
            object(&model.snapshot(), "contact", "k1").unwrap(),
            json!({"id": "k1", "username": "a", "phone_number": "1", "display_name": "K", "x": null})
        );

        let outcomes = run(
            &mut model,
            &[
                event("e5", "contact.deleted", json!({"id": "k1"})),
                event(
                    "e6",
                    "contact.updated",
                    json!({"id": "k1", "username": "back"}),
                ),
                event("e7", "contact.created", json!({"id": "k1"})),
                event("e8", "contact.deleted", json!({"id": "k1"})),
                // Another resource with the same id is another object.
                event("e9", "message.created", json!({"id": "k1"})),
                event("e10", "reaction.created", json!({"id": "k1"})),
                event(
                    "e11",
                    "message.updated",
                    json!({"id": "k1", "read_at": "soon"}),
                ),
                event(
                    "e11",
                    "message.updated",
                    json!({"id": "k1", "read_at": "soon"}),
                ),
                event("e12", "message.updated", json!({"read_at": 1})),
                event("e12", "message.updated", json!({"id": "k1", "read_at": 1})),
            ],
        );
        assert_eq!(
            outcomes,
            [
                "applied",
                "ignored_deleted",
                "ignored_deleted",
                "ignored_deleted",
                "applied",
                "unsupported",
                "rejected",
                "duplicate",
                "invalid",
                "applied"
            ]
        );
        let snapshot = model.snapshot();
        assert_eq!(object(&snapshot, "contact", "k1"), None);
        assert_eq!(
            object(&snapshot, "message", "k1").unwrap(),
            json!({"id": "k1", "read_at": 1})
        );
        assert_eq!(tombstones(&snapshot), ["contact k1"]);
        assert_eq!(
            model
                .log()
                .into_iter()
                .map(|(id, _)| id)
                .collect::<Vec<_>>(),
            [
                "e1", "e2", "e3", "e4", "e5", "e6", "e7", "e8", "e9", "e10", "e11", "e12"
            ]
        );
    }

    #[test]
    fn message_versions_order_updates() {
        let mut model = Model::new();
        let outcomes = run(
            &mut model,
            &[
                event(
                    "e1",
                    "message.created",
                    json!({"id": "m1", "message": "a", "updated_at": 5}),
                ),
                event(
                    "e2",
                    "message.updated",
                    json!({"id": "m1", "message": "old", "read_at": 1, "updated_at": 4}),
                ),
                event(
                    "e3",
                    "message.updated",
                    json!({"id": "m1", "message": "tie", "updated_at": 5}),
                ),
                event(
                    "e4",
                    "message.updated",
                    json!({"id": "m1", "message": "unversioned"}),
                ),
                event(
                    "e5",
                    "message.updated",
                    json!({"id": "m1", "updated_at": null, "x": 1}),
                ),
                event(
                    "e6",
                    "message.created",
                    json!({"id": "m1", "message": "new", "updated_at": 9}),
                ),
                event(
                    "e7",
                    "message.updated",
                    json!({"id": "m1", "updated_at": 6}),
                ),
                // Without a number on either side, updates apply in arrival order.
                event("e8", "message.updated", json!({"id": "m2", "message": "x"})),
                event(
                    "e9",
                    "message.updated",
                    json!({"id": "m2", "message": "y", "updated_at": null}),
                ),
                event(
                    "e10",
                    "message.updated",
                    json!({"id": "m2", "message": "z"}),
                ),
            ],
        );
        assert_eq!(
            outcomes,
            [
                "applied", "stale", "applied", "stale", "stale", "stale", "applied", "applied",
                "applied", "applied"
            ]
        );
        let snapshot = model.snapshot();
        assert_eq!(
            object(&snapshot, "message", "m1").unwrap(),
            json!({"id": "m1", "message": "tie", "read_at": 1, "updated_at": 6, "x": 1})
        );
        assert_eq!(
            object(&snapshot, "message", "m2").unwrap(),
            json!({"id": "m2", "message": "z", "updated_at": null})
        );
    }

    #[test]
    fn embedded_attachments_and_cascades() {
        let mut model = Model::new();
        let outcomes = run(
            &mut model,
            &[
                event(
                    "e1",
                    "conversation.created",
                    json!({"id": "v1", "contact_id": "k1", "group_id": null}),
                ),
                event(
                    "e2",
                    "message.created",
                    json!({"id": "m1", "conversation_id": "v1", "updated_at": 5, "attachments": [
                        {"id": "a2", "created_at": 5},
                        {"id": "a1", "created_at": 5, "message_id": "elsewhere"},
                        {"id": "a0"}
                    ]}),
                ),
                event(
                    "e3",
                    "attachment.updated",
                    json!({"id": "a1", "filename": "new"}),
                ),
                // A stale message still copies its attachments, fill-only.
                event(
                    "e4",
                    "message.updated",
                    json!({"id": "m1", "updated_at": 4, "attachments": [
                        {"id": "a1", "filename": "copy", "created_at": 1, "size": 3},
                        {"id": "a3", "created_at": 4}
                    ]}),
                ),
                // An attachment missing from a later array stays.
                event(
                    "e5",
                    "message.updated",
                    json!({"id": "m1", "updated_at": 6, "attachments": []}),
                ),
                event(
                    "e6",
                    "attachment.created",
                    json!({"id": "a4", "message_id": "m1", "created_at": null}),
                ),
            ],
        );
        assert_eq!(
            outcomes,
            [
                "applied", "applied", "applied", "stale", "applied", "applied"
            ]
        );
        let snapshot = model.snapshot();
        assert_eq!(
            object(&snapshot, "message", "m1").unwrap(),
            json!({"id": "m1", "conversation_id": "v1", "updated_at": 6, "attachments": [
                {"id": "a0", "message_id": "m1"},
                {"id": "a4", "message_id": "m1", "created_at": null},
                {"id": "a3", "message_id": "m1", "created_at": 4},
                {"id": "a1", "message_id": "m1", "created_at": 5, "filename": "new", "size": 3},
                {"id": "a2", "message_id": "m1", "created_at": 5}
            ]})
        );

        let deleted = model.apply(
            event("e7", "contact.deleted", json!({"id": "k1"}))
                .to_string()
                .as_bytes(),
        );
        assert_eq!(
            deleted,
            Receipt::Logged {
                outcome: "applied",
                cascade: Cascade {
                    conversations: 1,
                    messages: 1,
                    attachments: 5,
                    memberships: 0
                }
            }
        );
        let snapshot = model.snapshot();
        assert!(snapshot.objects.is_empty(), "{:?}", snapshot.objects);
        assert_eq!(
            tombstones(&snapshot),
            [
                "attachment a0",
                "attachment a1",
                "attachment a2",
                "attachment a3",
                "attachment a4",
                "contact k1",
                "conversation v1",
                "message m1"
            ]
        );

        let outcomes = run(
            &mut model,
            &[
                event("e8", "message.created", json!({"id": "m1"})),
                event(
                    "e9",
                    "attachment.updated",
                    json!({"id": "a1", "filename": "late"}),
                ),
                // Children of tombstoned parents, by payload...
                event(
                    "e10",
                    "message.created",
                    json!({"id": "m9", "conversation_id": "v1"}),
                ),
                event(
                    "e11",
                    "conversation.created",
                    json!({"id": "v5", "contact_id": "k1", "group_id": null}),
                ),
                // ...but a group conversation's parent is its group, not its contact.
                event(
                    "e12",
                    "conversation.created",
                    json!({"id": "v6", "contact_id": "k1", "group_id": "g1"}),
                ),
                // A row without a parent key has no parent.
                event("e13", "message.created", json!({"id": "m8"})),
                event(
                    "e14",
                    "message.updated",
                    json!({"id": "m8", "conversation_id": "v1"}),
                ),
                // Parents come from the payload, else from the stored row: `v6` becomes
                // a 1:1 conversation with its stored (deleted) contact...
                event(
                    "e15",
                    "conversation.updated",
                    json!({"id": "v6", "group_id": null}),
                ),
                // ...unless the payload names another one (`null` included).
                event(
                    "e16",
                    "conversation.updated",
                    json!({"id": "v6", "group_id": null, "contact_id": null}),
                ),
            ],
        );
        assert_eq!(
            outcomes,
            [
                "ignored_deleted",
                "ignored_deleted",
                "ignored_deleted",
                "ignored_deleted",
                "applied",
                "applied",
                "ignored_deleted",
                "ignored_deleted",
                "applied"
            ]
        );
        assert_eq!(
            object(&model.snapshot(), "conversation", "v6").unwrap(),
            json!({"id": "v6", "contact_id": null, "group_id": null})
        );
    }

    #[test]
    fn group_memberships_and_group_cascades() {
        let mut model = Model::new();
        let outcomes = run(
            &mut model,
            &[
                event(
                    "e1",
                    "group.created",
                    json!({"id": "g1", "conversation_id": "v3", "contacts": [
                        {"id": "k1", "username": "kevin"}, {"username": "kate"}
                    ]}),
                ),
                event(
                    "e2",
                    "conversation.created",
                    json!({"id": "v3", "contact_id": "k1", "group_id": "g1"}),
                ),
                event(
                    "e3",
                    "conversation.created",
                    json!({"id": "v4", "group_id": "g1"}),
                ),
                event(
                    "e4",
                    "message.created",
                    json!({"id": "m1", "conversation_id": "v3"}),
                ),
            ],
        );
        assert_eq!(outcomes, ["applied"; 4]);

        // Deleting a member removes the membership, not the group conversation.
        let deleted = model.apply(
            event("e5", "contact.deleted", json!({"id": "k1"}))
                .to_string()
                .as_bytes(),
        );
        assert_eq!(
            deleted,
            Receipt::Logged {
                outcome: "applied",
                cascade: Cascade {
                    memberships: 1,
                    ..Cascade::default()
                }
            }
        );
        let members =
            |model: &Model| object(&model.snapshot(), "group", "g1").unwrap()["contacts"].clone();
        assert_eq!(members(&model), json!([{"username": "kate"}]));

        let outcomes = run(
            &mut model,
            &[
                // A stale created sets members only when the group has none.
                event(
                    "e6",
                    "group.created",
                    json!({"id": "g1", "contacts": [{"username": "x"}]}),
                ),
                event("e7", "group.updated", json!({"id": "g1", "contacts": null})),
                event(
                    "e8",
                    "group.created",
                    json!({"id": "g1", "contacts": [{"username": "y"}, {"id": "k2"}]}),
                ),
            ],
        );
        assert_eq!(outcomes, ["stale", "applied", "stale"]);
        assert_eq!(members(&model), json!([{"username": "y"}, {"id": "k2"}]));

        let deleted = model.apply(
            event("e9", "group.deleted", json!({"id": "g1"}))
                .to_string()
                .as_bytes(),
        );
        assert_eq!(
            deleted,
            Receipt::Logged {
                outcome: "applied",
                cascade: Cascade {
                    conversations: 2,
                    messages: 1,
                    attachments: 0,
                    memberships: 2
                }
            }
        );
        // A contact may share the group's id: it is another object.
        let outcomes = run(
            &mut model,
            &[event("e10", "contact.created", json!({"id": "g1"}))],
        );
        assert_eq!(outcomes, ["applied"]);
        let snapshot = model.snapshot();
        assert_eq!(
            tombstones(&snapshot),
            [
                "contact k1",
                "conversation v3",
                "conversation v4",
                "group g1",
                "message m1"
            ]
        );
        assert_eq!(snapshot.objects.len(), 1);
    }

    #[test]
    fn deletes_of_unseen_ids_tombstone_and_cascade() {
        let mut model = Model::new();
        let outcomes = run(
            &mut model,
            &[
                event(
                    "e1",
                    "message.created",
                    json!({"id": "m1", "conversation_id": "v1"}),
                ),
                event(
                    "e2",
                    "conversation.created",
                    json!({"id": "v2", "contact_id": "k1"}),
                ),
                event(
                    "e3",
                    "conversation.created",
                    json!({"id": "v7", "contact_id": "k9", "group_id": null}),
                ),
                event("e4", "conversation.deleted", json!({"id": "v1"})),
                // The payload names the contact's conversation.
                event(
                    "e5",
                    "contact.deleted",
                    json!({"id": "k2", "conversation_id": "v7"}),
                ),
                event("e6", "contact.deleted", json!({"id": "k1"})),
            ],
        );
        assert_eq!(outcomes, ["applied"; 6]);
        let snapshot = model.snapshot();
        assert!(snapshot.objects.is_empty(), "{:?}", snapshot.objects);
        assert_eq!(
            tombstones(&snapshot),
            [
                "contact k1",
                "contact k2",
                "conversation v1",
                "conversation v2",
                "conversation v7",
                "message m1"
            ]
        );
    }

    /// The generator exercises every rule: without this, a generator that never made
    /// a cascade would let the property tests pass vacuously.
    #[test]
    fn generated_histories_cover_the_rules() {
        let mut runner = TestRunner::deterministic();
        let mut outcomes = std::collections::BTreeSet::new();
        let mut most = Cascade::default();
        let (mut deliveries, mut histories) = (0, 0);
        for _ in 0..200 {
            let history = history().new_tree(&mut runner).unwrap().current();
            let mut model = Model::new();
            for delivery in &history {
                match model.apply(&delivery.0) {
                    Receipt::Logged { outcome, cascade } => {
                        outcomes.insert(outcome);
                        most.conversations = most.conversations.max(cascade.conversations);
                        most.messages = most.messages.max(cascade.messages);
                        most.attachments = most.attachments.max(cascade.attachments);
                        most.memberships = most.memberships.max(cascade.memberships);
                    }
                    Receipt::Duplicate { .. } => {
                        outcomes.insert("duplicate");
                    }
                    Receipt::Invalid => {
                        outcomes.insert("invalid");
                    }
                }
            }
            deliveries += history.len();
            histories += 1;
        }
        assert_eq!(
            outcomes.into_iter().collect::<Vec<_>>(),
            [
                "applied",
                "duplicate",
                "ignored_deleted",
                "invalid",
                "rejected",
                "stale",
                "unsupported"
            ]
        );
        assert!(most.conversations >= 2 && most.messages >= 2, "{most:?}");
        assert!(most.attachments >= 2 && most.memberships >= 1, "{most:?}");
        let average = deliveries / histories;
        assert!(
            (20..=80).contains(&average),
            "{average} deliveries per history"
        );
    }
}
