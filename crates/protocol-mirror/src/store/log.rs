//! The event log: every accepted event, in apply order, with its outcome.

use rusqlite::{Connection, OptionalExtension, params};

use super::{Context, Result, StoreError};

mod salvage;

/// One row of the event log, as the apply engine writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry<'a> {
    /// Sequence number: the event's place in apply order.
    pub seq: i64,
    /// Protocol's event id.
    pub event_id: &'a str,
    /// The event's `type` string, as received.
    pub event_type: &'a str,
    /// The id of the object the event is about.
    pub object_id: &'a str,
    /// When the mirror received it (Unix seconds).
    pub received_at: i64,
    /// `applied`, `stale`, `ignored_deleted`, `unsupported` or `rejected`.
    pub outcome: &'a str,
    /// Why a `rejected` event was rejected.
    pub error: Option<&'a str>,
    /// How many rows the event's cascade removed.
    pub cascaded: u64,
    /// The cascade per table, as JSON, when anything cascaded.
    pub cascade: Option<&'a str>,
    /// The raw body.
    pub body: &'a str,
    /// Where it came from: `webhook`, `import` or `backfill`.
    pub source: &'a str,
    /// For a backfilled object, the log position its page was requested at.
    pub page_seq: Option<i64>,
}

/// Typed access to the `events` and `event_bodies` tables.
pub(crate) struct Log;

/// How many entries a copy of the log makes between two questions whether to go on (a
/// `rebuild --into` heard Ctrl-C only once the log was copied: 6 s for 300,000
/// entries; a review).
pub(crate) const COPY_STEP: u64 = 4096;

impl Log {
    /// The outcome, error and type recorded for `event_id`, if it was seen before.
    ///
    /// The entry the index of event ids leads to is checked to be that event's, as
    /// the entry itself holds its id (read from the entry by its sequence number:
    /// the id in the index is what the index holds). One key of the index changed,
    /// in order, passed SQLite's `quick_check`, and a new event with that id was
    /// answered `duplicate` and never stored (a black-box probe): such an entry is
    /// now damage ([`StoreError::is_damage`]), which stops the daemon taking events.
    /// A duplicate pays one more lookup; a new event, none.
    pub(crate) fn outcome_of(
        conn: &Connection,
        event_id: &str,
    ) -> Result<Option<(String, Option<String>, String)>> {
        let found: Option<(String, Option<String>, String, i64, String)> = conn
            .prepare_cached(
                "SELECT outcome, error, type, seq, \
                        (SELECT entry.event_id FROM events AS entry WHERE entry.seq = events.seq) \
                 FROM events WHERE event_id = ?1",
            )
            .and_then(|mut stmt| {
                stmt.query_row([event_id], |row| {
                    Ok((
                        row.get(0)?,
                        row.get(1)?,
                        row.get(2)?,
                        row.get(3)?,
                        row.get(4)?,
                    ))
                })
                .optional()
            })
            .context("looking up an event id")?;
        let Some((outcome, error, event_type, seq, held)) = found else {
            return Ok(None);
        };
        if held != event_id {
            return Err(StoreError::damage_found(
                "looking up an event id",
                &format!(
                    "the index of event ids leads the id {} to the log's entry {seq}, which \
                     holds another",
                    crate::store::query::shown(event_id)
                ),
            ));
        }
        Ok(Some((outcome, error, event_type)))
    }

    /// Counts one more delivery of an event already logged.
    pub(crate) fn count_duplicate(conn: &Connection, event_id: &str) -> Result<()> {
        conn.prepare_cached("UPDATE events SET duplicates = duplicates + 1 WHERE event_id = ?1")
            .and_then(|mut stmt| stmt.execute([event_id]))
            .context("counting a duplicate delivery")?;
        Ok(())
    }

    /// The sequence number the next logged event gets.
    pub(crate) fn next_seq(conn: &Connection) -> Result<i64> {
        conn.prepare_cached("SELECT COALESCE(MAX(seq), 0) + 1 FROM events")
            .and_then(|mut stmt| stmt.query_row([], |row| row.get(0)))
            .context("reading the last sequence number")
    }

    /// Appends `entry` to the log.
    pub(crate) fn append(conn: &Connection, entry: &LogEntry<'_>) -> Result<()> {
        conn.prepare_cached(
            "INSERT INTO events (seq, event_id, type, object_id, received_at, outcome, error,
                 cascaded, cascade, source, page_seq)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        )
        .and_then(|mut stmt| {
            stmt.execute(params![
                entry.seq,
                entry.event_id,
                entry.event_type,
                entry.object_id,
                entry.received_at,
                entry.outcome,
                entry.error,
                entry.cascaded as i64,
                entry.cascade,
                entry.source,
                entry.page_seq,
            ])
        })
        .context("logging an event")?;
        conn.prepare_cached("INSERT INTO event_bodies (seq, body) VALUES (?1, ?2)")
            .and_then(|mut stmt| stmt.execute(params![entry.seq, entry.body]))
            .context("logging an event body")?;
        Ok(())
    }

    /// Calls `f` with `(seq, body, source, page_seq)` of every logged event, in
    /// sequence order.
    pub(crate) fn for_each_body(
        conn: &Connection,
        mut f: impl FnMut(i64, &str, &str, Option<i64>) -> Result<()>,
    ) -> Result<()> {
        let mut stmt = conn
            .prepare(
                "SELECT b.seq, b.body, e.source, e.page_seq
                 FROM event_bodies b JOIN events e ON e.seq = b.seq ORDER BY b.seq",
            )
            .context("reading the event log")?;
        let mut rows = stmt.query([]).context("reading the event log")?;
        while let Some(row) = rows.next().context("reading the event log")? {
            let seq: i64 = row.get(0).context("reading the event log")?;
            let body = row
                .get_ref(1)
                .and_then(|v| Ok(v.as_str()?))
                .context("reading the event log")?;
            let source = row
                .get_ref(2)
                .and_then(|v| Ok(v.as_str()?))
                .context("reading the event log")?;
            let page_seq: Option<i64> = row.get(3).context("reading the event log")?;
            f(seq, body, source, page_seq)?;
        }
        Ok(())
    }

    /// Whether no event is logged (without counting them all).
    pub(crate) fn is_empty(conn: &Connection) -> Result<bool> {
        conn.query_row("SELECT NOT EXISTS (SELECT 1 FROM events)", [], |row| {
            row.get(0)
        })
        .context("looking for events")
    }

    /// Whether any logged event came by webhook (not by `import` or `backfill`; those
    /// an import of a schema-1 build logged read as webhooks': it recorded no source).
    /// Stops at the first: it reads the whole log only when there is none.
    pub(crate) fn has_webhook_events(conn: &Connection) -> Result<bool> {
        conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM events WHERE source = 'webhook')",
            [],
            |row| row.get(0),
        )
        .context("looking for events delivered by webhook")
    }

    /// Copies the event log of `from` (its `events` and `event_bodies`, every column
    /// both databases' schemas have) into the empty log of `to`, in sequence order,
    /// for `rebuild --into`; returns how many events it copied. The rows of columns
    /// `from` lacks (an older schema's) get their defaults, which the replay of the
    /// log then sets. `go_on` is asked every [`COPY_STEP`] entries: once it says no,
    /// the copy stops with [`StoreError::Interrupted`].
    pub(crate) fn copy(
        from: &Connection,
        to: &Connection,
        go_on: &mut dyn FnMut() -> bool,
    ) -> Result<u64> {
        // Both tables as of one moment: read in two, beside a writer, a body came
        // without its event (a probe: "FOREIGN KEY constraint failed").
        let snapshot = from
            .unchecked_transaction()
            .context("reading the event log to copy")?;
        let from: &Connection = &snapshot;
        let mut copied = [0u64; 2];
        for (table, copied) in ["events", "event_bodies"].into_iter().zip(&mut copied) {
            let theirs = table_columns(from, table)?;
            let columns: Vec<String> = table_columns(to, table)?
                .into_iter()
                .filter(|column| theirs.contains(column))
                .map(|column| format!("\"{}\"", column.replace('"', "\"\"")))
                .collect();
            let list = columns.join(", ");
            let marks = vec!["?"; columns.len()].join(", ");
            let mut read = from
                .prepare(&format!("SELECT {list} FROM {table} ORDER BY seq"))
                .context("reading the event log to copy")?;
            let mut write = to
                .prepare(&format!("INSERT INTO {table} ({list}) VALUES ({marks})"))
                .context("copying the event log")?;
            let mut rows = read.query([]).context("reading the event log to copy")?;
            while let Some(row) = rows.next().context("reading the event log to copy")? {
                let values = (0..columns.len())
                    .map(|index| row.get::<_, rusqlite::types::Value>(index))
                    .collect::<rusqlite::Result<Vec<_>>>()
                    .context("reading the event log to copy")?;
                // A value the new log refuses (a `NULL` body, an event id twice) was
                // read off a garbled page: damage, which a salvage reads around (it
                // was said as the constraint alone, naming no way out).
                match write.execute(rusqlite::params_from_iter(values)) {
                    Err(rusqlite::Error::SqliteFailure(e, message))
                        if e.code == rusqlite::ErrorCode::ConstraintViolation =>
                    {
                        return Err(StoreError::damage_found(
                            "reading the event log to copy",
                            &format!(
                                "an entry read as one the copy refuses ({})",
                                message.unwrap_or_else(|| e.to_string())
                            ),
                        ));
                    }
                    written => written.map(drop).context("copying the event log")?,
                }
                *copied += 1;
                if (*copied).is_multiple_of(COPY_STEP) && !go_on() {
                    return Err(StoreError::Interrupted);
                }
            }
        }
        // A read of a range over a garbled page can end early without an error (232
        // of 600 entries were left out so, in a salvage's test). A read of the whole
        // table was not seen to (1,500 random garbles), but would be said done: the
        // entries are counted again through an index of the events (SQLite counts
        // through the smallest, a B-tree of its own), and every event has its body.
        // (Not by the last sequence number: a salvaged log has gaps; a review.)
        let counted: i64 = from
            .query_row("SELECT count(*) FROM events", [], |row| row.get(0))
            .context("reading the event log to copy")?;
        if copied != [counted.max(0) as u64; 2] {
            return Err(StoreError::damage_found(
                "reading the event log to copy",
                &format!(
                    "its {counted} entries read as {} events and {} bodies",
                    copied[0], copied[1]
                ),
            ));
        }
        Ok(copied[0])
    }

    /// The number of logged events.
    pub(crate) fn count(conn: &Connection) -> Result<u64> {
        conn.query_row("SELECT COUNT(*) FROM events", [], |row| {
            row.get::<_, i64>(0)
        })
        .map(|n| n as u64)
        .context("counting events")
    }

    /// Rewrites the outcome columns of event `seq` (used by rebuild when a replay
    /// decides differently, which only a changed rule can cause).
    pub(crate) fn set_outcome(
        conn: &Connection,
        seq: i64,
        outcome: &str,
        error: Option<&str>,
        cascaded: u64,
        cascade: Option<&str>,
    ) -> Result<()> {
        conn.prepare_cached(
            "UPDATE events SET outcome = ?2, error = ?3, cascaded = ?4, cascade = ?5
             WHERE seq = ?1",
        )
        .and_then(|mut stmt| stmt.execute(params![seq, outcome, error, cascaded as i64, cascade]))
        .context("updating an event's outcome")?;
        Ok(())
    }

    /// The outcome columns of event `seq`.
    pub(crate) fn outcome_at(conn: &Connection, seq: i64) -> Result<(String, Option<String>, u64)> {
        conn.prepare_cached("SELECT outcome, error, cascaded FROM events WHERE seq = ?1")
            .and_then(|mut stmt| {
                stmt.query_row([seq], |row| {
                    Ok((row.get(0)?, row.get(1)?, row.get::<_, i64>(2)? as u64))
                })
            })
            .context("reading an event's outcome")
    }
}

/// The names of `table`'s columns in `conn`'s database.
fn table_columns(conn: &Connection, table: &str) -> Result<Vec<String>> {
    let mut columns = conn
        .prepare("SELECT name FROM pragma_table_info(?1)")
        .context("reading a table's columns")?;
    columns
        .query_map([table], |row| row.get(0))
        .context("reading a table's columns")?
        .collect::<rusqlite::Result<_>>()
        .context("reading a table's columns")
}
