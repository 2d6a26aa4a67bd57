//! Rebuild: recompute every replica table from the event log, replaying events in
//! sequence order through the same rules as live ingestion (SPEC rule 9).

use std::ops::{ControlFlow, RangeInclusive};
use std::path::Path;

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
    /// The sequence numbers of the log's entries a salvage could not read, as ranges
    /// (always empty but for [`LogCopy::Salvage`]).
    pub lost: Vec<RangeInclusive<i64>>,
}

impl RebuildSummary {
    /// How many entries of the log a salvage could not read.
    pub fn lost_entries(&self) -> u64 {
        self.lost
            .iter()
            .map(|range| range.end().abs_diff(*range.start()) + 1)
            .sum()
    }
}

/// How [`rebuild_into`] copies the event log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogCopy {
    /// Every entry, or nothing: the rebuild fails where the log cannot be read.
    Whole,
    /// Every entry that can be read whole; those that cannot are left out, and their
    /// sequence numbers reported ([`RebuildSummary::lost`]). For a log SQLite finds
    /// damaged, with no backup to restore.
    Salvage,
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
/// [`ServeLock`], and holds it itself meanwhile; refuses a database whose event log
/// SQLite's check finds damaged ([`StoreError::LogDamaged`]: the rebuild would leave
/// that damage, and [`rebuild_into`] replays what can be read).
pub fn rebuild(
    store: &mut Store,
    progress: impl FnMut(u64, u64) -> ControlFlow<()>,
) -> Result<RebuildSummary, RebuildError> {
    let _lock = store
        .path()
        .map(|path| ServeLock::acquire(path, Role::Rebuild))
        .transpose()?;
    store.refuse_damaged_log()?;
    replay_log(store, progress)
}

/// Rebuilds the replica of `source`, whose event log must be whole (or `copy` says
/// to salvage what can be read of it), into a new
/// database at `dest`, leaving `source` as it is: its log (backfills' entries too)
/// is copied and replayed, at this binary's schema, whatever `source`'s. For a
/// replica that lost tables (which `rebuild` in place refuses), or one of an older
/// schema kept as it was. The new database is built beside `dest` (as a backup's copy
/// is: `.<name>.<pid>.partial`) and given its name once whole; `progress` as for
/// [`rebuild`], a stop removing what was built.
///
/// # Errors
///
/// When `dest` exists or is being made by another process, or the log cannot be
/// read or written; nothing is left at `dest` then.
pub fn rebuild_into(
    source: &Store,
    dest: &Path,
    copy: LogCopy,
    mut progress: impl FnMut(u64, u64) -> ControlFlow<()>,
) -> Result<RebuildSummary, RebuildError> {
    // A log of a newer schema follows rules this binary does not know.
    source.refuse_newer_schema()?;
    // Nor is one that lost a table of its own whole (its error says so).
    let lost = source.lost_tables()?;
    if lost
        .iter()
        .any(|table| ["events", "event_bodies"].contains(table))
    {
        return Err(StoreError::LostTables {
            path: source.path().map(Path::to_owned).unwrap_or_default(),
            tables: lost,
        }
        .into());
    }
    let new_database =
        || crate::store::refuse_as_new_database(dest, crate::store::NewDatabase::Rebuild);
    new_database()?;
    let lock = crate::store::serve_lock(dest, Role::Rebuild)?;
    // Asked again under the lock: another process may have made it meanwhile.
    new_database()?;
    let building = crate::store::partial_copy_path(dest);
    crate::store::remove_database_files(&building);
    let built = (|| {
        let mut store = Store::open_locked(&building)?;
        let batch = store.transaction()?;
        // While the log is copied, `progress` shows nothing done yet, and is asked
        // whether to go on.
        let mut go_on = || progress(0, 0).is_continue();
        let lost = match copy {
            LogCopy::Whole => Log::copy(source.conn(), &batch, &mut go_on).map(|_| Vec::new())?,
            LogCopy::Salvage => Log::salvage(source.conn(), &batch, &mut go_on)?,
        };
        batch.commit()?;
        let summary = RebuildSummary {
            lost,
            ..replay_log(&mut store, progress)?
        };
        store.close()?;
        match crate::store::publish(&building, dest) {
            // Another process made `dest` meanwhile (without its lock): the rebuild is
            // removed as any that failed, and said so (the error of an import's, which
            // keeps its database, named a file this then removed; a review).
            Err(StoreError::NameTaken { dest, .. }) => Err(StoreError::Io {
                context: "cannot put the new database in place at",
                path: dest,
                source: std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    "another process created it meanwhile",
                ),
            })?,
            published => published?,
        }
        Ok(summary)
    })();
    if built.is_err() {
        crate::store::remove_database_files(&building);
    }
    drop(lock);
    built
}

/// Replays the log of `store` into its replica, in one transaction.
fn replay_log(
    store: &mut Store,
    mut progress: impl FnMut(u64, u64) -> ControlFlow<()>,
) -> Result<RebuildSummary, RebuildError> {
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

    /// `rebuild_into` copies a log of schema 1 (without the columns later schemas
    /// added: those take their defaults) and replays it at this schema; a stop leaves
    /// nothing at the new name nor beside it, and a name taken is refused.
    #[test]
    fn a_log_of_an_older_schema_is_rebuilt_into_a_new_database() {
        let dir = tempfile::tempdir().unwrap();
        let old = dir.path().join("old.db");
        let mut conn = rusqlite::Connection::open(&old).unwrap();
        crate::store::schema::migrations()
            .to_version(&mut conn, 1)
            .unwrap();
        // Past the 1,024 events after which a stop is asked about.
        for n in 1..=1100 {
            let body = format!(
                r#"{{"id":"e{n}","type":"contact.created","payload":{{"id":"c{n}","username":"u"}}}}"#
            );
            conn.execute(
                "INSERT INTO events (seq, event_id, type, object_id, received_at, outcome) \
                 VALUES (?1, 'e' || ?1, 'contact.created', 'c' || ?1, 7, 'applied')",
                [n],
            )
            .unwrap();
            conn.execute(
                "INSERT INTO event_bodies (seq, body) VALUES (?1, ?2)",
                rusqlite::params![n, body],
            )
            .unwrap();
        }
        drop(conn);
        let source = Store::open_to_copy(&old).unwrap();
        let new = dir.path().join("new.db");
        let stop = rebuild_into(&source, &new, LogCopy::Whole, |_, _| ControlFlow::Break(()));
        assert!(matches!(
            stop,
            Err(RebuildError::Store(StoreError::Interrupted))
        ));
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .filter(|name| name.starts_with(".new.db") || name.starts_with("new.db."))
            .collect();
        assert!(left.iter().all(|name| name == "new.db.lock"), "{left:?}");
        assert!(!new.exists());
        let summary = rebuild_into(&source, &new, LogCopy::Whole, |_, _| {
            ControlFlow::Continue(())
        })
        .unwrap();
        assert_eq!(summary.events, 1100);
        let rebuilt = Store::open_read_only(&new).unwrap();
        let contact =
            crate::store::get(rebuilt.conn(), protocol_types::Resource::Contact, "c1").unwrap();
        assert_eq!(
            contact,
            Some(serde_json::json!({"id": "c1", "username": "u"}))
        );
        let (received, source_column): (i64, String) = rebuilt
            .conn()
            .query_row(
                "SELECT received_at, source FROM events WHERE seq = 1",
                [],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .unwrap();
        assert_eq!((received, source_column.as_str()), (7, "webhook"));
        let taken = rebuild_into(&source, &new, LogCopy::Whole, |_, _| {
            ControlFlow::Continue(())
        });
        assert!(taken.is_err());
        // Made by another process (without the lock) as the rebuild ends: left alone,
        // and the rebuild removed as the error says.
        let raced = dir.path().join("raced.db");
        let err = rebuild_into(&source, &raced, LogCopy::Whole, |done, total| {
            if done == total && !raced.exists() {
                std::fs::write(&raced, b"theirs").unwrap();
            }
            ControlFlow::Continue(())
        })
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("another process created it meanwhile"),
            "{err}"
        );
        assert_eq!(std::fs::read(&raced).unwrap(), b"theirs");
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .filter(|name| name.starts_with(".raced.db"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }

    /// A log with damaged pages: the whole copy fails on damage; a salvage copies
    /// every entry that can be read (those of a range whose read ended early without
    /// an error, the cell pointers of a page garbled, one by one: 232 were lost that
    /// could each be read alone), names each one it cannot, and replays those it
    /// copied; what it made has gaps, and is no damage to a later rebuild.
    #[test]
    fn a_damaged_log_is_salvaged_into_a_new_database_entry_by_entry() {
        const EVENTS: i64 = 600;
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("a.db");
        let store = Store::open(&db).unwrap();
        for n in 1..=EVENTS {
            let body = serde_json::json!({
                "id": format!("e{n}"),
                "type": "message.created",
                "payload": {"id": format!("m{n}"), "conversation_id": "c", "text": "x".repeat(300)},
            });
            store
                .conn()
                .execute(
                    "INSERT INTO events (seq, event_id, type, object_id, received_at, outcome) \
                     VALUES (?1, 'e' || ?1, 'message.created', 'm' || ?1, 7, 'applied')",
                    [n],
                )
                .unwrap();
            store
                .conn()
                .execute(
                    "INSERT INTO event_bodies (seq, body) VALUES (?1, ?2)",
                    rusqlite::params![n, body.to_string()],
                )
                .unwrap();
        }
        store.close().unwrap();
        let whole = |into: &str| {
            let source = Store::open_to_copy(&db).unwrap();
            let whole = rebuild_into(&source, &dir.path().join(into), LogCopy::Whole, |_, _| {
                ControlFlow::Continue(())
            });
            assert!(
                matches!(&whole, Err(RebuildError::Store(error)) if error.is_damage()),
                "{whole:?}"
            );
        };
        crate::store::garble_leaf_page(&db, "event_bodies", 28, |page| page[8..16].fill(0xFF));
        whole("ended-early.db");
        crate::store::garble_leaf_page(&db, "event_bodies", 5, |page| page.fill(0xA5));
        crate::store::garble_leaf_page(&db, "events", 7, |page| page[0..12].fill(0xFF));
        whole("unreadable.db");
        let source = Store::open_to_copy(&db).unwrap();
        let new = dir.path().join("new.db");
        let summary = rebuild_into(&source, &new, LogCopy::Salvage, |_, _| {
            ControlFlow::Continue(())
        })
        .unwrap();
        // Three pages' entries at most: a page of bodies holds about ten, one of
        // events about seventy-five.
        let lost = summary.lost_entries();
        assert!((3..=100).contains(&lost), "{:?}", summary.lost);
        assert_eq!(summary.events + lost, EVENTS as u64);
        let rebuilt = Store::open_read_only(&new).unwrap();
        let (check, messages): (String, i64) = rebuilt
            .conn()
            .query_row(
                "SELECT (SELECT integrity_check FROM pragma_integrity_check), \
                 (SELECT count(*) FROM messages)",
                [],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .unwrap();
        assert_eq!((check.as_str(), messages), ("ok", summary.events as i64));
        for n in 1..=EVENTS {
            let message = crate::store::get(
                rebuilt.conn(),
                protocol_types::Resource::Message,
                &format!("m{n}"),
            )
            .unwrap();
            let is_lost = summary.lost.iter().any(|range| range.contains(&n));
            assert_eq!(message.is_none(), is_lost, "m{n}");
        }
        // Its gaps are no damage: it is rebuilt whole again (the copy's check took the
        // last sequence number for the count of entries, and refused it; a review).
        drop(rebuilt);
        let again = rebuild_into(
            &Store::open_to_copy(&new).unwrap(),
            &dir.path().join("again.db"),
            LogCopy::Whole,
            |_, _| ControlFlow::Continue(()),
        )
        .unwrap();
        assert_eq!(again.events, summary.events);
    }

    /// `rebuild_into` reads the log as of one moment beside a writer (it read the
    /// bodies after the events, and a body committed between had no event: "FOREIGN
    /// KEY constraint failed", a probe); refuses a log of a newer schema, whose rules
    /// this binary does not know; and makes no folder for a mistyped path.
    #[test]
    fn rebuild_into_reads_one_moment_and_refuses_what_it_cannot_build() {
        let dir = tempfile::tempdir().unwrap();
        let old = dir.path().join("old.db");
        let mut writer = Store::open(&old).unwrap();
        let event = |n: u64| {
            format!(r#"{{"id":"e{n}","type":"contact.created","payload":{{"id":"c{n}"}}}}"#)
        };
        for n in 0..2000 {
            writer.apply(event(n).as_bytes(), 1).unwrap();
        }
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writing = std::thread::spawn({
            let stop = stop.clone();
            move || {
                let mut n = 2000;
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    writer.apply(event(n).as_bytes(), 1).unwrap();
                    n += 1;
                }
            }
        });
        let source = Store::open_to_copy(&old).unwrap();
        for round in 0..5 {
            let new = dir.path().join(format!("new-{round}.db"));
            let built = rebuild_into(&source, &new, LogCopy::Whole, |_, _| {
                ControlFlow::Continue(())
            });
            assert!(built.is_ok(), "{round}: {:?}", built.err());
        }
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        writing.join().unwrap();

        let missing = dir.path().join("no-such-folder").join("new.db");
        let err = rebuild_into(&source, &missing, LogCopy::Whole, |_, _| {
            ControlFlow::Continue(())
        })
        .unwrap_err();
        assert!(err.to_string().contains("no such folder"), "{err}");
        assert!(!dir.path().join("no-such-folder").exists());

        drop(source);
        rusqlite::Connection::open(&old)
            .unwrap()
            .pragma_update(None, "user_version", crate::store::SCHEMA_VERSION + 1)
            .unwrap();
        let newer = Store::open_to_copy(&old).unwrap();
        let err = rebuild_into(&newer, &dir.path().join("n.db"), LogCopy::Whole, |_, _| {
            ControlFlow::Continue(())
        })
        .unwrap_err();
        assert!(
            matches!(err, RebuildError::Store(StoreError::SchemaAhead { .. })),
            "{err}"
        );
    }

    /// A stop is heard while the log is copied, every `COPY_STEP` entries, and leaves
    /// nothing at the new name nor beside it: `rebuild --into` heard Ctrl-C only once
    /// the whole log was copied (6 s for 300,000 entries; a review).
    #[test]
    fn a_stop_is_heard_while_the_log_is_copied() {
        let dir = tempfile::tempdir().unwrap();
        let mut source = Store::open_in_memory().unwrap();
        let tx = source.transaction().unwrap();
        for n in 0..crate::store::COPY_STEP + 10 {
            let body =
                format!(r#"{{"id":"e{n}","type":"contact.created","payload":{{"id":"c{n}"}}}}"#);
            let delivery = crate::apply::Delivery::parse(body.as_bytes()).unwrap();
            crate::apply::apply_delivery(&tx, &delivery, crate::apply::Origin::Import, 0).unwrap();
        }
        tx.commit().unwrap();
        for copy in [LogCopy::Whole, LogCopy::Salvage] {
            let new = dir.path().join("new.db");
            let mut asked = Vec::new();
            let stopped = rebuild_into(&source, &new, copy, |done, total| {
                asked.push((done, total));
                ControlFlow::Break(())
            });
            assert!(
                matches!(stopped, Err(RebuildError::Store(StoreError::Interrupted))),
                "{copy:?}: {stopped:?}"
            );
            // Asked by the copy, before the replay (which says how many events it has).
            assert_eq!(asked, [(0, 0)], "{copy:?}");
            let left: Vec<_> = std::fs::read_dir(dir.path())
                .unwrap()
                .map(|entry| entry.unwrap().file_name())
                .filter(|name| name != "new.db.lock")
                .collect();
            assert!(left.is_empty(), "{copy:?}: {left:?}");
        }
    }

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
                lost: Vec::new(),
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
