//! The salvage copy of a damaged event log, for `rebuild --into NEW.db --salvage`:
//! every entry that can still be read is copied, and the sequence numbers of those
//! that cannot are reported, so a damaged log with no backup still gives back all
//! it holds (SQLite's `.recover`, the only other way, saved nothing from any replica
//! with an older `sqlite3` shell).
//!
//! A log's sequence numbers are `1..=last` without a gap (each entry takes the last
//! one's plus one, and none is ever removed), so every number in that range that is
//! not copied is an entry lost: one on a page SQLite cannot read, one whose values are
//! not of their column's type, or one whose other half (its event or its body) was
//! lost. (A log salvaged before keeps its gaps, which a later salvage names again.)

use std::ops::RangeInclusive;

use rusqlite::types::Value;
use rusqlite::{Connection, params_from_iter};

use super::{Context, Log, Result, StoreError, table_columns};

/// Entries read at once; a read that meets damage is split in halves down to one.
const CHUNK: i64 = 512;

/// A column of the new database's table: its name and what a value of it must be.
struct Column {
    name: String,
    integer: bool,
    not_null: bool,
}

impl Column {
    fn admits(&self, value: &Value) -> bool {
        match value {
            Value::Null => !self.not_null,
            Value::Integer(_) => self.integer,
            Value::Text(_) => !self.integer,
            Value::Real(_) | Value::Blob(_) => false,
        }
    }
}

impl Log {
    /// Copies every entry of `from`'s event log that can be read whole into the empty
    /// log of `to`, as [`Log::copy`] does for a whole one; returns the sequence numbers
    /// of those it could not, as ranges. `go_on` is asked as [`Log::copy`] asks it.
    pub(crate) fn salvage(
        from: &Connection,
        to: &Connection,
        go_on: &mut dyn FnMut() -> bool,
    ) -> Result<Vec<RangeInclusive<i64>>> {
        let snapshot = from
            .unchecked_transaction()
            .context("reading the event log to salvage")?;
        let from: &Connection = &snapshot;
        let Some(last) = last_seq(from)? else {
            return Ok(Vec::new());
        };
        for table in ["events", "event_bodies"] {
            let columns = shared_columns(from, to, table)?;
            let mut lo = 1;
            while lo <= last {
                let hi = lo.saturating_add(CHUNK - 1).min(last);
                copy_range(from, to, table, &columns, lo..=hi)?;
                lo = hi + 1;
                if (lo - 1).unsigned_abs().is_multiple_of(super::COPY_STEP) && !go_on() {
                    return Err(StoreError::Interrupted);
                }
            }
        }
        // An event whose body was lost cannot be replayed (a body without its event
        // was refused by the foreign key as it was copied).
        to.execute(
            "DELETE FROM events WHERE NOT EXISTS \
             (SELECT 1 FROM event_bodies b WHERE b.seq = events.seq)",
            [],
        )
        .context("leaving out events whose bodies were lost")?;
        let mut lost = Vec::new();
        let mut expected = 1;
        let mut seqs = to
            .prepare("SELECT seq FROM events ORDER BY seq")
            .context("reading the salvaged log")?;
        let mut rows = seqs.query([]).context("reading the salvaged log")?;
        while let Some(row) = rows.next().context("reading the salvaged log")? {
            let seq: i64 = row.get(0).context("reading the salvaged log")?;
            if seq > expected {
                lost.push(expected..=seq - 1);
            }
            expected = seq + 1;
        }
        // A new database with no events would be an empty mirror said to be rebuilt.
        if expected == 1 {
            return Err(StoreError::damage_found(
                "salvaging the event log",
                "no entry of the event log could be read whole",
            ));
        }
        if expected <= last {
            lost.push(expected..=last);
        }
        Ok(lost)
    }
}

/// The last sequence number of the log, by three B-trees that hold it apart: the
/// highest of the events' table, of the bodies' table, and of an index of the events
/// (a page garbled at the end of one tells another number): the middle one of three,
/// else the higher of two unless it is far above the other (a garbled one: a number
/// of 4e12 had every empty range above the log read entry by entry, for hours on a
/// large file, and reported as lost; a review), and never more than the file's bytes
/// could hold. `None` for an empty log; an error when no B-tree can tell.
fn last_seq(from: &Connection) -> Result<Option<i64>> {
    let bytes: i64 = from
        .query_row(
            "SELECT page_count * page_size FROM pragma_page_count, pragma_page_size",
            [],
            |row| row.get(0),
        )
        .context("reading the database's size")?;
    let mut found = Vec::new();
    let mut failure = None;
    for sql in [
        "SELECT max(seq) FROM events",
        "SELECT max(seq) FROM event_bodies",
        "SELECT max(seq) FROM events INDEXED BY events_received",
    ] {
        match from.query_row(sql, [], |row| row.get::<_, Option<i64>>(0)) {
            Ok(last) => found.extend(last),
            // The index may be missing too (dropped by hand): one B-tree fewer.
            Err(_) if sql.contains("INDEXED BY") => {}
            Err(error) if unreadable(&error) => {
                failure.get_or_insert(error);
            }
            Err(error) => return Err(error).context("reading the last sequence number"),
        }
    }
    found.sort_unstable();
    let last = match found[..] {
        [] => {
            return match failure {
                Some(error) => Err(error).context("reading the last sequence number"),
                None => Ok(None),
            };
        }
        [one] => one,
        [low, high] if high > low.saturating_mul(2).saturating_add(CHUNK) => low,
        [_, high] => high,
        [_, middle, ..] => middle,
    };
    // At least 16 bytes an entry, its event and its body.
    Ok(Some(last.min(bytes / 16)))
}

/// The columns of `table` both logs have (an older schema's lacks later ones, whose
/// defaults the replay then sets), `seq` first.
fn shared_columns(from: &Connection, to: &Connection, table: &str) -> Result<Vec<Column>> {
    let theirs = table_columns(from, table)?;
    let mut info = to
        .prepare("SELECT name, type, \"notnull\" FROM pragma_table_info(?1) ORDER BY pk DESC, cid")
        .context("reading a table's columns")?;
    info.query_map([table], |row| {
        Ok(Column {
            name: row.get(0)?,
            integer: row.get::<_, String>(1)?.eq_ignore_ascii_case("INTEGER"),
            not_null: row.get::<_, bool>(2)? || row.get::<_, String>(0)? == "seq",
        })
    })
    .context("reading a table's columns")?
    .filter(|column| {
        column
            .as_ref()
            .map_or(true, |column| theirs.contains(&column.name))
    })
    .collect::<rusqlite::Result<_>>()
    .context("reading a table's columns")
}

/// Copies the rows of `table` in `range` that can be read, halving the range where a
/// read meets damage, down to single entries, which are then left out.
fn copy_range(
    from: &Connection,
    to: &Connection,
    table: &str,
    columns: &[Column],
    range: RangeInclusive<i64>,
) -> Result<()> {
    match read_range(from, table, columns, &range) {
        Ok(rows) => {
            let mut read = vec![false; range.clone().count()];
            for row in rows {
                if let Value::Integer(seq) = row[0] {
                    read[(seq - range.start()) as usize] = true;
                }
                write_row(to, table, columns, &row)?;
            }
            // A read of a range over a garbled page can end early without an error
            // (256 entries went missing so, each of which could be read alone).
            if range.start() < range.end() {
                for (seq, _) in range.zip(read).filter(|(_, read)| !read) {
                    copy_range(from, to, table, columns, seq..=seq)?;
                }
            }
            Ok(())
        }
        Err(error) if unreadable(&error) => {
            let (lo, hi) = range.into_inner();
            if lo < hi {
                let mid = lo + (hi - lo) / 2;
                copy_range(from, to, table, columns, lo..=mid)?;
                copy_range(from, to, table, columns, mid + 1..=hi)?;
            }
            Ok(())
        }
        Err(error) => Err(error).context("reading the event log to salvage"),
    }
}

/// The rows of `table` in `range` whose values are of their columns' types (a row
/// out of the range was read from a garbled page and is left out; of two with one
/// sequence number, the new log keeps the first).
fn read_range(
    from: &Connection,
    table: &str,
    columns: &[Column],
    range: &RangeInclusive<i64>,
) -> rusqlite::Result<Vec<Vec<Value>>> {
    let list = quoted_list(columns);
    let mut read = from.prepare_cached(&format!(
        "SELECT {list} FROM {table} WHERE seq BETWEEN ?1 AND ?2 ORDER BY seq"
    ))?;
    let mut rows = read.query([range.start(), range.end()])?;
    let mut kept = Vec::new();
    while let Some(row) = rows.next()? {
        let values = (0..columns.len())
            .map(|index| row.get::<_, Value>(index))
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let in_range = matches!(values[0], Value::Integer(seq) if range.contains(&seq));
        if in_range && columns.iter().zip(&values).all(|(c, v)| c.admits(v)) {
            kept.push(values);
        }
    }
    Ok(kept)
}

/// Writes one salvaged row; one the new log refuses (an event id read twice, a body
/// whose event was lost) is left out.
fn write_row(to: &Connection, table: &str, columns: &[Column], row: &[Value]) -> Result<()> {
    let list = quoted_list(columns);
    let marks = vec!["?"; columns.len()].join(", ");
    let written = to
        .prepare_cached(&format!("INSERT INTO {table} ({list}) VALUES ({marks})"))
        .and_then(|mut write| write.execute(params_from_iter(row)));
    match written {
        Err(rusqlite::Error::SqliteFailure(e, _))
            if e.code == rusqlite::ErrorCode::ConstraintViolation =>
        {
            Ok(())
        }
        written => written.map(drop).context("copying the event log"),
    }
}

fn quoted_list(columns: &[Column]) -> String {
    columns
        .iter()
        .map(|column| format!("\"{}\"", column.name.replace('"', "\"\"")))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Whether a read failed on what the file holds (a damaged page, a value that is
/// not what its column says), not on the machine (I/O, memory, an interrupt).
fn unreadable(error: &rusqlite::Error) -> bool {
    match error {
        // Too big: a garbled length of a record or of its value (a review).
        rusqlite::Error::SqliteFailure(e, _) => matches!(
            e.code,
            rusqlite::ErrorCode::DatabaseCorrupt
                | rusqlite::ErrorCode::NotADatabase
                | rusqlite::ErrorCode::TooBig
        ),
        rusqlite::Error::FromSqlConversionFailure(..)
        | rusqlite::Error::InvalidColumnType(..)
        | rusqlite::Error::Utf8Error(..) => true,
        _ => false,
    }
}
