//! Rebuild: recompute every replica table from the event log, replaying events in
//! sequence order through the same rules as live ingestion (SPEC rule 9).

use std::ops::ControlFlow;

use protocol_types::Event;

use crate::apply::{Origin, replay};
use crate::lock::{LockError, Role, ServeLock};
use crate::store::{Log, Store, StoreError};

/// What a rebuild did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RebuildSummary {
    /// Events replayed.
    pub events: u64,
    /// Events whose replayed outcome, error or cascade count differs from the logged
    /// one (their log rows are updated). Zero unless the rules changed since they were
    /// logged.
    pub changed_outcomes: u64,
    /// The replica's tables whose count of rows the rebuild changed: `(table, before,
    /// after)`. (Rows it changed in place are not counted: the report said "0 log
    /// entries changed" of a rebuild that removed messages an older version had kept;
    /// an upgrade probe.)
    pub changed_counts: Vec<(&'static str, i64, i64)>,
}

/// Why a rebuild failed; the replica is then left as it was.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RebuildError {
    /// A daemon serves the database (or its lock file could not be taken).
    #[error("{}", locked(.0))]
    Locked(#[from] LockError),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a lock that could not be taken means for a rebuild: only a held one is a daemon
/// (a read-only filesystem was blamed on one), and only when its holder is one, or
/// did not say what it is (another rebuild, or an import creating the database, end by
/// themselves).
fn locked(error: &LockError) -> String {
    match error {
        LockError::Held {
            role: None | Some(Role::Daemon),
            ..
        } => format!("cannot rebuild while a daemon serves the database: {error}"),
        LockError::Held { .. } => format!("cannot rebuild now: {error}"),
        other => other.to_string(),
    }
}

/// Recomputes the replica from the log in one transaction (all or nothing).
/// `progress(done, total)` is called as events are replayed; when it breaks, the
/// rebuild stops and is rolled back ([`StoreError::Interrupted`]).
///
/// Refuses while another process (a serving daemon) holds the database's
/// [`ServeLock`], and holds it itself meanwhile.
pub fn rebuild(
    store: &mut Store,
    mut progress: impl FnMut(u64, u64) -> ControlFlow<()>,
) -> Result<RebuildSummary, RebuildError> {
    let _lock = store
        .path()
        .map(|path| ServeLock::acquire(path, Role::Rebuild))
        .transpose()?;
    let tx = store.transaction()?;
    let total = Log::count(&tx)?;
    let before = crate::store::replica_counts(&tx)?;
    crate::store::clear_replica(&tx)?;
    let mut summary = RebuildSummary::default();
    Log::for_each_body(&tx, |seq, body, source, page_seq| {
        let parsed = Event::from_slice(body.as_bytes());
        let effect = replay(&tx, &parsed, Origin::from_log(source, page_seq), seq)?;
        let (outcome, error, cascaded) = Log::outcome_at(&tx, seq)?;
        if outcome != effect.outcome.as_str()
            || error.as_deref() != effect.error.as_deref()
            || cascaded != effect.cascade.total()
        {
            summary.changed_outcomes += 1;
            Log::set_outcome(
                &tx,
                seq,
                effect.outcome.as_str(),
                effect.error.as_deref(),
                effect.cascade.total(),
                effect.cascade.to_json().as_deref(),
            )?;
        }
        summary.events += 1;
        if summary.events % 1024 == 0 && progress(summary.events, total).is_break() {
            return Err(StoreError::Interrupted);
        }
        // One transaction holds the whole rebuild: write the queued search index
        // changes from time to time, so the queue stays small.
        if summary.events % 16_384 == 0 {
            tx.flush()?;
        }
        Ok(())
    })?;
    let after = crate::store::replica_counts(&tx)?;
    summary.changed_counts = before
        .into_iter()
        .zip(after)
        .filter(|((_, before), (_, after))| before != after)
        .map(|((table, before), (_, after))| (table, before, after))
        .collect();
    tx.commit()?;
    // Done: a stop asked for now comes too late to matter.
    let _ = progress(summary.events, total);
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = include_str!("../../../tests/data/sample-events.ndjson");

    #[test]
    fn rebuild_reproduces_live_ingestion_and_refuses_under_a_daemon() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.db");
        let mut store = Store::open(&path).unwrap();
        for line in SAMPLE.lines() {
            store.apply(line.as_bytes(), 1).unwrap();
        }
        // A rejected and an unsupported event are replayed too.
        store
            .apply(
                br#"{"id":"x1","type":"contact.updated","payload":{"id":"c","username":1}}"#,
                2,
            )
            .unwrap();
        store
            .apply(
                br#"{"id":"x2","type":"poll.created","payload":{"id":"p"}}"#,
                2,
            )
            .unwrap();
        let live = store.snapshot().unwrap();

        let daemon = ServeLock::acquire(&path, Role::Daemon).unwrap();
        let err = rebuild(&mut store, |_, _| ControlFlow::Continue(())).unwrap_err();
        assert!(matches!(err, RebuildError::Locked(_)), "{err}");
        assert!(
            err.to_string()
                .starts_with("cannot rebuild while a daemon serves the database"),
            "{err}"
        );
        drop(daemon);
        // Another rebuild is no daemon, and ends by itself.
        let other = ServeLock::acquire(&path, Role::Rebuild).unwrap();
        let err = rebuild(&mut store, |_, _| ControlFlow::Continue(())).unwrap_err();
        assert!(err.to_string().starts_with("cannot rebuild now: "), "{err}");
        assert!(
            err.to_string().contains("try again once it is done"),
            "{err}"
        );
        drop(other);

        let mut calls = Vec::new();
        let summary = rebuild(&mut store, |done, total| {
            calls.push((done, total));
            ControlFlow::Continue(())
        })
        .unwrap();
        assert_eq!(
            summary,
            RebuildSummary {
                events: 21,
                changed_outcomes: 0,
                changed_counts: Vec::new(),
            }
        );
        assert_eq!(calls.last(), Some(&(21, 21)));
        assert_eq!(store.snapshot().unwrap(), live);
        // The full-text index was rebuilt with the table.
        let hits: i64 = store
            .conn()
            .query_row(
                "SELECT COUNT(*) FROM messages_fts WHERE messages_fts MATCH 'meetings'",
                [],
                |row| row.get(0),
            )
            .unwrap();
        assert_eq!(hits, 1);

        // A replica that differs from its log (as one an older version kept can): the
        // tables whose count of rows the rebuild changes are told.
        let contacts: i64 = store
            .conn()
            .query_row("SELECT COUNT(*) FROM contacts", [], |row| row.get(0))
            .unwrap();
        assert!(contacts > 0);
        store
            .conn()
            .execute_batch("DELETE FROM contacts WHERE id = (SELECT MIN(id) FROM contacts)")
            .unwrap();
        let summary = rebuild(&mut store, |_, _| ControlFlow::Continue(())).unwrap();
        assert_eq!(
            summary.changed_counts,
            [("contacts", contacts - 1, contacts)]
        );
        assert_eq!(store.snapshot().unwrap(), live);
    }
}
