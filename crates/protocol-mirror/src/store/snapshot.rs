//! The whole replica as a comparable value.

use std::collections::{BTreeMap, BTreeSet};

use protocol_types::Resource;
use rusqlite::Connection;
use serde_json::Value;

use super::{Context, Result, rows};

/// The full state of a replica: every object as `get` prints it, and every tombstone.
/// Two replicas are equal when their snapshots are; rebuild and the property tests
/// compare them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Output objects keyed by (resource singular name, id).
    pub objects: BTreeMap<(String, String), Value>,
    /// Tombstoned (resource singular name, id) pairs.
    pub tombstones: BTreeSet<(String, String)>,
}

pub(super) fn take(conn: &Connection) -> Result<Snapshot> {
    let mut snapshot = Snapshot::default();
    for resource in Resource::ALL {
        let mut stmt = conn
            .prepare(&format!("SELECT id, data FROM {}", resource.plural()))
            .context("taking a snapshot")?;
        let stored = stmt
            .query_map([], |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
            })
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .context("taking a snapshot")?;
        for (id, data) in stored {
            let object = rows::output(conn, resource, &id, &data)?;
            snapshot
                .objects
                .insert((resource.as_str().to_owned(), id), object);
        }
    }
    let mut stmt = conn
        .prepare("SELECT resource, id FROM tombstones")
        .context("taking a snapshot")?;
    snapshot.tombstones = stmt
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
        .and_then(|rows| rows.collect::<rusqlite::Result<_>>())
        .context("taking a snapshot")?;
    Ok(snapshot)
}
