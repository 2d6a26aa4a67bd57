//! Property tests of backfill's rules among webhooks: random histories of webhooks,
//! listed pages fetched at any earlier log position, and prunes, over a few ids of
//! every resource (1:1 and group conversations, embedded attachments, members).
//!
//! After every step no id is both a row and a tombstone, and a page never changed a
//! key of a row an event wrote after the page was fetched (SPEC section 5, backfill);
//! listing the same page again changes nothing; and a rebuild from the log gives the
//! same replica with every outcome as logged (SPEC rule 9).

use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;

/// How one object is drawn: which of its resource's ids, and for each of four keys
/// whether it is there and which of three values it has (see [`object`]).
type Draw = (u8, [Option<u8>; 4]);

#[derive(Debug, Clone)]
enum Step {
    /// A webhook `resource.action` of the object drawn.
    Webhook(Resource, &'static str, Draw),
    /// A page of one object (every key there, as the API lists it), fetched when the
    /// log was at `fetched` parts in 256 of its length.
    Page(Resource, Draw, u8),
    /// A prune of the object drawn's id.
    Prune(Resource, Draw),
}

fn resource() -> impl Strategy<Value = Resource> {
    prop::sample::select(Resource::ALL.to_vec())
}

fn draw() -> impl Strategy<Value = Draw> {
    (any::<u8>(), prop::array::uniform4(prop::option::of(0..3u8)))
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        2 => (resource(), prop::sample::select(vec!["created", "updated", "deleted"]), draw())
            .prop_map(|(resource, action, draw)| Step::Webhook(resource, action, draw)),
        1 => (resource(), draw(), any::<u8>())
            .prop_map(|(resource, draw, fetched)| Step::Page(resource, draw, fetched)),
        1 => (resource(), draw()).prop_map(|(resource, draw)| Step::Prune(resource, draw)),
    ]
}

/// The object drawn. Each resource has ids that fit together: contact `c1` has the
/// 1:1 conversation `v1` and `c2` has `v3`; `v2` is group `g1`'s (with `c2`); message
/// `mN` is in `vN` with attachment `aN`. `full`: every key there (a listed copy).
fn object(resource: Resource, (pick, slots): Draw, full: bool) -> Object {
    let n = usize::from(pick % 3) + 1;
    let mut object = Object::new();
    let mut put = |slot: usize, key: &str, value: &dyn Fn(u8) -> Value| {
        let drawn = if full {
            Some(slots[slot].unwrap_or(0))
        } else {
            slots[slot]
        };
        if let Some(drawn) = drawn {
            object.insert(key.into(), value(drawn));
        }
    };
    let id = match resource {
        Resource::Contact => {
            let n = n.min(2);
            put(0, "username", &|_| json!(format!("u{n}")));
            put(1, "display_name", &|v| {
                if v == 2 {
                    Value::Null
                } else {
                    json!(format!("d{v}"))
                }
            });
            put(2, "conversation_id", &|_| {
                json!(if n == 1 { "v1" } else { "v3" })
            });
            put(3, "last_active_at", &|v| json!(v));
            format!("c{n}")
        }
        Resource::Conversation => {
            put(0, "contact_id", &|_| {
                json!(if n == 1 { "c1" } else { "c2" })
            });
            put(1, "group_id", &|_| {
                if n == 2 { json!("g1") } else { Value::Null }
            });
            put(2, "is_muted", &|v| json!(v == 1));
            put(3, "archived_at", &|v| {
                if v == 0 { Value::Null } else { json!(v) }
            });
            format!("v{n}")
        }
        Resource::Message => {
            put(0, "conversation_id", &|_| json!(format!("v{n}")));
            put(1, "message", &|v| json!(format!("t{v}")));
            put(2, "updated_at", &|v| {
                if v == 0 { Value::Null } else { json!(v) }
            });
            put(
                3,
                "attachments",
                &|v| json!([{"id": format!("a{n}"), "filename": format!("f{v}"), "created_at": 1}]),
            );
            format!("m{n}")
        }
        Resource::Group => {
            put(0, "name", &|v| json!(format!("g{v}")));
            put(1, "conversation_id", &|_| json!("v2"));
            put(2, "contacts", &|v| match v {
                0 => json!([{"id": "c1", "username": "u1"}, {"username": "u2"}]),
                1 => json!([{"username": "u1"}]),
                _ => json!([]),
            });
            put(3, "description", &|v| {
                if v == 0 {
                    Value::Null
                } else {
                    json!(format!("x{v}"))
                }
            });
            "g1".to_owned()
        }
        Resource::Attachment => {
            put(0, "message_id", &|_| json!(format!("m{n}")));
            put(1, "filename", &|v| json!(format!("f{v}")));
            put(2, "created_at", &|v| json!(v));
            put(3, "file_size", &|v| json!(v));
            format!("a{n}")
        }
    };
    object.insert("id".into(), json!(id));
    object
}

/// Commits `objects` as one page of `resource` fetched at `page_seq`.
fn page(store: &mut Store, resource: Resource, objects: Vec<Object>, page_seq: i64) {
    let cursor = CursorState {
        cursor: None,
        complete: true,
        pass_seq: 0,
        run: 1,
    };
    let tx = store.transaction().unwrap();
    commit_page(&tx, resource, "", objects, page_seq, &cursor).unwrap();
    tx.commit().unwrap();
}

/// Runs `steps`, checking after each; the first broken rule, said with the steps
/// that led to it.
fn run(steps: &[Step]) -> Result<(), String> {
    let mut store = Store::open_in_memory().unwrap();
    for (index, step) in steps.iter().enumerate() {
        let said = || format!("after step {index} of {steps:#?}");
        match *step {
            Step::Webhook(resource, action, draw) => {
                let body = json!({"id": format!("w{index}"), "type": format!("{resource}.{action}"),
                                  "payload": object(resource, draw, false)});
                store.apply(body.to_string().as_bytes(), 0).unwrap();
            }
            Step::Page(resource, draw, fetched) => {
                let last = state::last_seq(store.conn()).unwrap();
                let page_seq = last * i64::from(fetched) / 255;
                let listed = object(resource, draw, true);
                let id = listed["id"].as_str().unwrap_or_default().to_owned();
                let written = state::row_seq(store.conn(), resource, &id).unwrap();
                let before = crate::store::get(store.conn(), resource, &id).unwrap();
                page(&mut store, resource, vec![listed.clone()], page_seq);
                let after = crate::store::get(store.conn(), resource, &id).unwrap();
                // A message's attachments come from their rows, which the page may
                // add to (they only fill): not a key of the row it overwrites.
                if let (Some(written), Some(before)) = (written, &before)
                    && written > page_seq
                {
                    for (key, value) in before.as_object().into_iter().flatten() {
                        let now = after.as_ref().and_then(|after| after.get(key));
                        if key != "attachments" && now != Some(value) {
                            return Err(format!(
                                "a page fetched at {page_seq} changed {resource} {id}'s \
                                 {key:?}, written at {written}: {value} became {now:?}, {}",
                                said()
                            ));
                        }
                    }
                }
                // Listed again, as the next pass would list it unchanged.
                let once = store.snapshot().unwrap();
                let last = state::last_seq(store.conn()).unwrap();
                page(&mut store, resource, vec![listed], last);
                let twice = store.snapshot().unwrap();
                if once != twice && written.is_none_or(|w| w <= page_seq) {
                    return Err(format!(
                        "listing the page again (fetched at {last}) changed the \
                         replica: {once:?} became {twice:?}, {}",
                        said()
                    ));
                }
            }
            Step::Prune(resource, draw) => {
                let id = object(resource, draw, false)["id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                let pass_seq = state::last_seq(store.conn()).unwrap();
                let prune = Delivery::prune(resource, &id, pass_seq);
                let tx = store.transaction().unwrap();
                apply_delivery(&tx, &prune, Origin::Backfill { page_seq: pass_seq }, 0).unwrap();
                tx.commit().unwrap();
            }
        }
        let snapshot = store.snapshot().unwrap();
        if let Some(both) = snapshot
            .objects
            .keys()
            .find(|key| snapshot.tombstones.contains(*key))
        {
            return Err(format!("{both:?} is both a row and a tombstone {}", said()));
        }
    }
    let live = store.snapshot().unwrap();
    let summary =
        crate::rebuild::rebuild(&mut store, |_, _| std::ops::ControlFlow::Continue(())).unwrap();
    let rebuilt = store.snapshot().unwrap();
    if live != rebuilt || summary.changed_outcomes != 0 {
        return Err(format!(
            "the rebuild differs ({} outcomes changed): {live:?} became {rebuilt:?}, after \
             {steps:#?}",
            summary.changed_outcomes
        ));
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn pages_keep_what_later_events_wrote_and_rebuild_alike(
        steps in prop::collection::vec(step(), 1..40)
    ) {
        if let Err(broken) = run(&steps) {
            return Err(TestCaseError::fail(broken));
        }
    }
}
