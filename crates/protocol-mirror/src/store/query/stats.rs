//! `stats`: counts of rows, tombstones and events, and the database's size.

use std::path::Path;

use protocol_types::Resource;
use rusqlite::Connection;
use serde_json::{Map, Value, json};

use super::super::{Context, Result};
use super::one_snapshot;

/// `stats`: counts and sizes, as a JSON object.
pub fn stats(conn: &Connection, database: Option<&Path>) -> Result<Value> {
    one_snapshot(conn, |conn| stats_in(conn, database))
}

/// [`stats`] on `conn` as it is (in the caller's snapshot).
fn stats_in(conn: &Connection, database: Option<&Path>) -> Result<Value> {
    let count = |sql: &str| -> Result<i64> {
        conn.query_row(sql, [], |row| row.get(0))
            .context("counting rows")
    };
    let mut rows_per_table = Map::new();
    for resource in Resource::ALL {
        let n = count(&format!("SELECT COUNT(*) FROM {}", resource.plural()))?;
        rows_per_table.insert(resource.plural().into(), n.into());
    }
    rows_per_table.insert(
        "group_members".into(),
        count("SELECT COUNT(*) FROM group_members")?.into(),
    );
    let mut tombstones = Map::new();
    for resource in Resource::ALL {
        tombstones.insert(resource.plural().into(), 0.into());
    }
    let mut outcomes = Map::new();
    for outcome in crate::apply::Outcome::ALL {
        outcomes.insert(outcome.as_str().into(), 0.into());
    }
    let grouped = |sql: &str, into: &mut Map<String, Value>, plural: bool| -> Result<()> {
        let pairs = conn
            .prepare(sql)
            .and_then(|mut stmt| {
                stmt.query_map([], |row| {
                    Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()
            })
            .context("counting rows")?;
        for (key, n) in pairs {
            let key = match (plural, key.parse::<Resource>()) {
                (true, Ok(resource)) => resource.plural().to_owned(),
                _ => key,
            };
            into.insert(key, n.into());
        }
        Ok(())
    };
    grouped(
        "SELECT resource, COUNT(*) FROM tombstones GROUP BY resource",
        &mut tombstones,
        true,
    )?;
    // No pass over the log: the count from its smallest index, the outcomes other
    // than `applied` (the few) and the redeliveries from partial indexes (migration
    // 10), the times from the index on them; `applied` is the rest. A full scan took
    // 0.3 s at a million events.
    let events = count("SELECT COUNT(*) FROM events")?;
    let duplicates = count("SELECT COALESCE(SUM(duplicates), 0) FROM events WHERE duplicates > 0")?;
    // Two subqueries: SQLite reads a lone MIN or MAX from the index's end, but both in
    // one query scan it (80 ms warm, 0.6 s cold at a million events; a probe).
    let (first, last) = conn
        .query_row(
            "SELECT (SELECT MIN(received_at) FROM events), (SELECT MAX(received_at) FROM events)",
            [],
            |row| Ok((row.get::<_, Option<i64>>(0)?, row.get::<_, Option<i64>>(1)?)),
        )
        .context("summarizing the event log")?;
    grouped(
        "SELECT outcome, COUNT(*) FROM events WHERE outcome <> 'applied' GROUP BY outcome",
        &mut outcomes,
        false,
    )?;
    let others: i64 = outcomes
        .iter()
        .filter(|(outcome, _)| *outcome != crate::apply::Outcome::Applied.as_str())
        .filter_map(|(_, n)| n.as_i64())
        .sum();
    outcomes.insert(
        crate::apply::Outcome::Applied.as_str().into(),
        (events - others).into(),
    );
    let sizes = database.map(super::super::file_sizes);
    Ok(json!({
        "rows": rows_per_table,
        "tombstones": tombstones,
        "events": {
            "total": events,
            "by_outcome": outcomes,
            "redeliveries": duplicates,
            "first_received_at": first,
            "last_received_at": last,
        },
        "database_bytes": sizes.map(|(database, _)| database),
        "wal_bytes": sizes.map(|(_, wal)| wal),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::query::sample;

    #[test]
    fn stats_count_everything() {
        let store = sample();
        let stats = stats(store.conn(), None).unwrap();
        assert_eq!(stats["rows"]["messages"], 1);
        assert_eq!(stats["tombstones"]["conversations"], 2);
        assert_eq!(stats["events"]["total"], 19);
        assert_eq!(stats["events"]["by_outcome"]["stale"], 1);
        assert_eq!(stats["events"]["first_received_at"], 100);
    }

    /// `stats` counts from indexes (migration 10); the counts are those of a scan of
    /// the log, an outcome this binary does not know included.
    #[test]
    fn stats_from_indexes_equal_a_scan_of_the_log() {
        let mut store = sample();
        let first = "{\"id\":\"r1\",\"type\":\"reaction.created\",\"payload\":{\"id\":\"x\"}}";
        for _ in 0..3 {
            store.apply(first.as_bytes(), 200).unwrap();
        }
        store
            .conn()
            .execute(
                "UPDATE events SET outcome = 'from_the_future' WHERE seq = 1",
                [],
            )
            .unwrap();
        let stats = stats(store.conn(), None).unwrap();
        let scanned: Vec<(String, i64)> = store
            .conn()
            .prepare("SELECT outcome, COUNT(*) FROM events NOT INDEXED GROUP BY outcome")
            .unwrap()
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        for (outcome, n) in &scanned {
            assert_eq!(stats["events"]["by_outcome"][outcome], *n, "{outcome}");
        }
        assert_eq!(stats["events"]["by_outcome"]["unsupported"], 1);
        assert_eq!(stats["events"]["by_outcome"]["from_the_future"], 1);
        assert_eq!(stats["events"]["total"], 20);
        assert_eq!(stats["events"]["redeliveries"], 2);
        assert_eq!(stats["events"]["last_received_at"], 200);
    }
}
