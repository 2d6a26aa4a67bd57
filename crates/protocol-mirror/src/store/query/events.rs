//! `events`: the event log, newest first, by type, outcome and time.

use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, params_from_iter};

use super::super::{Context, Result, log::Log};
use super::push_where;

/// One row of the event log, as `events` prints it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct EventRecord {
    /// Sequence number in apply order.
    pub seq: i64,
    /// Protocol's event id.
    pub id: String,
    /// The event's type string.
    #[serde(rename = "type")]
    pub event_type: String,
    /// The id of the object it is about.
    pub object_id: String,
    /// `applied`, `stale`, `ignored_deleted`, `unsupported` or `rejected`.
    pub outcome: String,
    /// Why it was rejected.
    pub error: Option<String>,
    /// When the mirror received it (Unix seconds).
    pub received_at: i64,
    /// Rows its cascade removed.
    pub cascaded: i64,
    /// Redeliveries after the first.
    pub duplicates: i64,
    /// Where it came from: `webhook`, `import` or `backfill`.
    pub source: String,
}

/// Filters of `events`.
#[derive(Debug, Clone, Default)]
pub struct EventsQuery {
    /// Only events of one of these type strings (every type when empty).
    pub event_types: Vec<String>,
    /// Only this outcome; `duplicate` stands for the events delivered again (a
    /// redelivery is not logged apart: its event's `duplicates` counts it).
    pub outcome: Option<String>,
    /// Only events received at or after this time (Unix seconds).
    pub since: Option<i64>,
    /// Only events after this sequence number (for `--follow`).
    pub after_seq: Option<i64>,
    /// Only events up to this sequence number (for `--follow`, which reads what came
    /// in bounded steps).
    pub until_seq: Option<i64>,
    /// At most this many (the newest).
    pub limit: Option<usize>,
}

/// The sequence number of the newest event in the log (0 when it is empty).
pub fn last_seq(conn: &Connection) -> Result<i64> {
    Ok(Log::next_seq(conn)? - 1)
}

/// The event log, newest first.
///
/// Only the filters given become conditions, so that `--type` walks the log's index
/// on `type` (newest first, no sort) instead of scanning the whole log for a rare
/// type: a condition like `?1 IS NULL OR type = ?1` can use no index.
pub fn events(conn: &Connection, query: &EventsQuery) -> Result<Vec<EventRecord>> {
    let mut events = Vec::new();
    events_each(conn, query, |event| {
        events.push(event);
        Ok::<_, super::super::StoreError>(())
    })?;
    Ok(events)
}

/// [`events`] an event at a time, in constant memory: `each` is given every event in
/// order as it is read; an error from it stops the listing and is returned.
pub fn events_each<E: From<super::super::StoreError>>(
    conn: &Connection,
    query: &EventsQuery,
    mut each: impl FnMut(EventRecord) -> std::result::Result<(), E>,
) -> std::result::Result<(), E> {
    // Nothing received at or after `since` (a time to come, or a typo): said from the
    // index on the time at once, where the newest-first walk read the whole log.
    if let Some(since) = query.since {
        let newest: Option<i64> = conn
            .query_row("SELECT MAX(received_at) FROM events", [], |row| row.get(0))
            .context("reading the event log")?;
        if newest.is_none_or(|newest| newest < since) {
            return Ok(());
        }
    }
    let (sql, values) = events_statement(query, few_redelivered(conn, query)?);
    let mut stmt = conn.prepare_cached(&sql).context("reading the event log")?;
    let mut rows = stmt
        .query(params_from_iter(values))
        .context("reading the event log")?;
    while let Some(row) = rows.next().context("reading the event log")? {
        each(record(row).context("reading the event log")?)?;
    }
    Ok(())
}

/// The sequence number of the `n`th newest event `query` lists (its `limit` aside), or
/// of its oldest when it lists fewer; `None` when it lists none, or `n` is 0. Where
/// `events --follow` starts its listing, which it then reads oldest first, in steps
/// (it held all of `--limit` events at once: 490 MB for 300,000 of them).
pub fn nth_newest_seq(conn: &Connection, query: &EventsQuery, n: usize) -> Result<Option<i64>> {
    if n == 0 {
        return Ok(None);
    }
    let (sql, values) = events_statement(
        &EventsQuery {
            limit: Some(n),
            ..query.clone()
        },
        few_redelivered(conn, query)?,
    );
    let seq = conn
        .prepare_cached(&format!("SELECT MIN(seq) FROM ({sql})"))
        .and_then(|mut stmt| stmt.query_row(params_from_iter(values), |row| row.get(0)))
        .context("reading the event log")?;
    Ok(seq)
}

/// An event of a row of [`events_statement`]'s query.
fn record(row: &rusqlite::Row<'_>) -> rusqlite::Result<EventRecord> {
    Ok(EventRecord {
        seq: row.get(0)?,
        id: row.get(1)?,
        event_type: row.get(2)?,
        object_id: row.get(3)?,
        outcome: row.get(4)?,
        error: row.get(5)?,
        received_at: row.get(6)?,
        cascaded: row.get(7)?,
        duplicates: row.get(8)?,
        source: row.get(9)?,
    })
}

/// Most redelivered events that [`events_statement`] reads from their partial index
/// and sorts, rather than walk the log newest first until `--limit` of them are found.
const FEW_REDELIVERED: i64 = 10_000;

/// Whether `query` lists redelivered events (`--outcome duplicate`) and the log holds
/// at most [`FEW_REDELIVERED`] of them.
fn few_redelivered(conn: &Connection, query: &EventsQuery) -> Result<bool> {
    if query.outcome.as_deref() != Some(crate::apply::DUPLICATE) {
        return Ok(false);
    }
    let count: i64 = conn
        .prepare_cached("SELECT COUNT(*) FROM (SELECT 1 FROM events WHERE duplicates > 0 LIMIT ?1)")
        .and_then(|mut stmt| stmt.query_row([FEW_REDELIVERED + 1], |row| row.get(0)))
        .context("reading the event log")?;
    Ok(count <= FEW_REDELIVERED)
}

/// The SQL of `events` for `query`, and its parameters. With `few_redelivered` (see
/// [`few_redelivered`]), the redelivered events are read from their partial index
/// and sorted: SQLite walked the whole log newest first for them, to spare the sort
/// (0.1 s warm and 1.6 s cold at a million events with none redelivered; a probe),
/// a walk that is short only where they are many.
fn events_statement(query: &EventsQuery, few_redelivered: bool) -> (String, Vec<SqlValue>) {
    let mut conditions: Vec<&str> = Vec::new();
    let mut values: Vec<SqlValue> = Vec::new();
    match query.event_types.as_slice() {
        [] => {}
        [event_type] => {
            conditions.push("type = ?");
            values.push(SqlValue::Text(event_type.clone()));
        }
        more => {
            conditions.push("type IN (SELECT value FROM json_each(?))");
            values.push(SqlValue::Text(
                serde_json::Value::from(more.to_vec()).to_string(),
            ));
        }
    }
    if query.outcome.as_deref() == Some(crate::apply::DUPLICATE) {
        // The partial index of the events that have any (migration 0010).
        conditions.push("duplicates > 0");
    } else if let Some(outcome) = &query.outcome {
        conditions.push("outcome = ?");
        values.push(SqlValue::Text(outcome.clone()));
        // Said in so many words, so that SQLite may read the index of the outcomes
        // other than `applied` (partial: it cannot tell that from `?`).
        if outcome != crate::apply::Outcome::Applied.as_str() {
            conditions.push("outcome <> 'applied'");
        }
    }
    if let Some(since) = query.since {
        conditions.push("received_at >= ?");
        values.push(SqlValue::Integer(since));
    }
    if let Some(after_seq) = query.after_seq {
        conditions.push("seq > ?");
        values.push(SqlValue::Integer(after_seq));
    }
    if let Some(until_seq) = query.until_seq {
        conditions.push("seq <= ?");
        values.push(SqlValue::Integer(until_seq));
    }
    let mut sql = String::from(
        "SELECT seq, event_id, type, object_id, outcome, error, received_at, cascaded,
                duplicates, source
         FROM events",
    );
    if few_redelivered {
        sql.push_str(" INDEXED BY events_redelivered");
    }
    push_where(&mut sql, &conditions);
    sql.push_str(" ORDER BY seq DESC LIMIT ?");
    values.push(SqlValue::Integer(
        query.limit.map_or(-1, |l| l.min(i64::MAX as usize) as i64),
    ));
    (sql, values)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;
    use crate::store::query::sample;

    /// `events --outcome` reads an index since migration 10 (it read the whole log).
    #[test]
    fn events_by_outcome_read_their_index() {
        let store = sample();
        let plan = |sql: &str, values: Vec<SqlValue>| -> String {
            store
                .conn()
                .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
                .unwrap()
                .query_map(params_from_iter(values), |row| row.get::<_, String>(3))
                .unwrap()
                .collect::<rusqlite::Result<Vec<_>>>()
                .unwrap()
                .join("; ")
        };
        let (sql, values) = events_statement(
            &EventsQuery {
                outcome: Some("stale".into()),
                event_types: vec!["message.created".into()],
                ..EventsQuery::default()
            },
            false,
        );
        let events_plan = plan(&sql, values);
        assert!(
            events_plan.contains("events_unusual_outcome"),
            "{events_plan}"
        );
        // The redelivered events, when few, from their partial index (the log was
        // walked newest first, the type's index with `--type`: a probe).
        for event_types in [vec![], vec!["message.created".to_owned()]] {
            let query = EventsQuery {
                outcome: Some(crate::apply::DUPLICATE.into()),
                event_types,
                limit: Some(50),
                ..EventsQuery::default()
            };
            assert!(few_redelivered(store.conn(), &query).unwrap());
            let (sql, values) = events_statement(&query, true);
            let duplicates_plan = plan(&sql, values);
            assert!(
                duplicates_plan.contains("events_redelivered"),
                "{duplicates_plan}"
            );
        }
    }

    #[test]
    fn the_nth_newest_event_starts_a_follow() {
        let store = sample();
        let all: Vec<i64> = events(store.conn(), &EventsQuery::default())
            .unwrap()
            .iter()
            .map(|e| e.seq)
            .collect();
        let nth = |query: &EventsQuery, n| nth_newest_seq(store.conn(), query, n).unwrap();
        let any = EventsQuery::default();
        assert_eq!(nth(&any, 1), Some(all[0]));
        assert_eq!(nth(&any, 3), Some(all[2]));
        assert_eq!(nth(&any, 1000), all.last().copied(), "fewer: the oldest");
        assert_eq!(nth(&any, 0), None);
        let stale = EventsQuery {
            outcome: Some("stale".into()),
            limit: Some(0),
            ..EventsQuery::default()
        };
        let stale_seqs: Vec<i64> = events(
            store.conn(),
            &EventsQuery {
                limit: None,
                ..stale.clone()
            },
        )
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect();
        assert_eq!(
            nth(&stale, 5),
            stale_seqs.last().copied(),
            "its limit aside"
        );
        let none = EventsQuery {
            event_types: vec!["reaction.created".into()],
            ..EventsQuery::default()
        };
        assert_eq!(nth(&none, 5), None);
    }

    #[test]
    fn events_newest_first_with_filters() {
        let store = sample();
        let all = events(store.conn(), &EventsQuery::default()).unwrap();
        assert_eq!(all.len(), 19);
        assert_eq!(all[0].seq, 19);
        let stale = events(
            store.conn(),
            &EventsQuery {
                outcome: Some("stale".into()),
                ..EventsQuery::default()
            },
        )
        .unwrap();
        assert_eq!(stale.len(), 1);
        assert_eq!(stale[0].event_type, "attachment.created");
        let query = |q: EventsQuery| -> Vec<i64> {
            events(store.conn(), &q)
                .unwrap()
                .iter()
                .map(|e| e.seq)
                .collect()
        };
        let messages: Vec<i64> = all
            .iter()
            .filter(|e| e.event_type == "message.created")
            .map(|e| e.seq)
            .collect();
        assert!(messages.len() >= 2, "{messages:?}");
        let of_type = |limit, after_seq| EventsQuery {
            event_types: vec!["message.created".into()],
            after_seq,
            limit,
            ..EventsQuery::default()
        };
        assert_eq!(query(of_type(None, None)), messages);
        assert_eq!(query(of_type(Some(1), None)), messages[..1]);
        assert_eq!(
            query(of_type(None, Some(messages[1]))),
            messages[..1],
            "after_seq keeps the newer ones"
        );
        assert_eq!(
            query(EventsQuery {
                until_seq: Some(messages[1]),
                ..of_type(None, None)
            }),
            messages[1..],
            "until_seq keeps the older ones"
        );
        assert_eq!(
            query(EventsQuery {
                until_seq: Some(messages[0] - 1),
                ..of_type(None, Some(messages[1] - 1))
            }),
            messages[1..2],
            "both: a range"
        );
        let since = |since| EventsQuery {
            since: Some(since),
            ..EventsQuery::default()
        };
        assert_eq!(query(since(0)).len(), all.len());
        assert!(query(since(i64::MAX)).is_empty());
        // The newest event's own time still lists it (sample events are received at 100).
        assert_eq!(query(since(100)).len(), all.len());
        assert!(query(since(101)).is_empty());
        let empty = Store::open_in_memory().unwrap();
        assert!(events(empty.conn(), &since(0)).unwrap().is_empty());
    }

    /// Events of several types (`--type` in another case than Protocol's): the newest
    /// of all of them, whatever the other filters, as the whole log filtered gives
    /// them.
    #[test]
    fn events_of_several_types_are_the_newest_of_them_all() {
        let store = sample();
        let all = events(store.conn(), &EventsQuery::default()).unwrap();
        let types = [
            "message.created",
            "contact.updated",
            "group.created",
            "none.such",
        ];
        for count in 2..=types.len() {
            let wanted: Vec<String> = types[..count].iter().map(|t| (*t).to_owned()).collect();
            for limit in [None, Some(0), Some(1), Some(2), Some(3), Some(100)] {
                for (after_seq, until_seq) in [(None, None), (Some(3), Some(15))] {
                    let query = EventsQuery {
                        event_types: wanted.clone(),
                        after_seq,
                        until_seq,
                        limit,
                        ..EventsQuery::default()
                    };
                    let matching: Vec<i64> = all
                        .iter()
                        .filter(|e| wanted.contains(&e.event_type))
                        .filter(|e| after_seq.is_none_or(|after| e.seq > after))
                        .filter(|e| until_seq.is_none_or(|until| e.seq <= until))
                        .map(|e| e.seq)
                        .collect();
                    let listed: Vec<i64> = events(store.conn(), &query)
                        .unwrap()
                        .iter()
                        .map(|e| e.seq)
                        .collect();
                    let expected = &matching[..limit.unwrap_or(usize::MAX).min(matching.len())];
                    assert_eq!(listed, expected, "{query:?}");
                    // Its limit aside.
                    assert_eq!(
                        nth_newest_seq(store.conn(), &query, 2).unwrap(),
                        matching.iter().take(2).next_back().copied(),
                        "{query:?}"
                    );
                }
            }
        }
    }

    /// `--outcome duplicate` lists the events delivered again, with their own
    /// outcome and how many redeliveries they had.
    #[test]
    fn duplicate_lists_the_events_delivered_again() {
        let mut store = sample();
        let duplicate = EventsQuery {
            outcome: Some(crate::apply::DUPLICATE.into()),
            ..EventsQuery::default()
        };
        assert!(events(store.conn(), &duplicate).unwrap().is_empty());
        let lines: Vec<&str> = include_str!("../../../../../tests/data/sample-events.ndjson")
            .lines()
            .collect();
        for line in [lines[2], lines[5], lines[2]] {
            store.apply(line.as_bytes(), 200).unwrap();
        }
        let again = events(store.conn(), &duplicate).unwrap();
        let seqs: Vec<(i64, i64)> = again.iter().map(|e| (e.seq, e.duplicates)).collect();
        assert_eq!(seqs, [(6, 1), (3, 2)]);
        assert!(again.iter().all(|e| e.outcome != crate::apply::DUPLICATE));
    }

    #[test]
    fn events_of_one_type_use_the_type_index() {
        let store = sample();
        let query = EventsQuery {
            event_types: vec!["message.created".into()],
            limit: Some(10),
            ..EventsQuery::default()
        };
        assert_eq!(events(store.conn(), &query).unwrap().len(), 2);
        // The statement `events` ran, planned again.
        let (sql, values) = events_statement(&query, false);
        let plan: Vec<String> = store
            .conn()
            .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .unwrap()
            .query_map(params_from_iter(values), |row| row.get(3))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(plan.len(), 1, "{plan:?}");
        assert!(plan[0].contains("INDEX events_type"), "{plan:?}");
        assert!(!plan[0].contains("TEMP B-TREE"), "no sort: {plan:?}");
    }
}
