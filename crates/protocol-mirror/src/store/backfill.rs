//! Typed access to the backfill state: resumable cursors and the ids seen in a pass.

use protocol_types::Resource;
use rusqlite::{Connection, OptionalExtension, params};

use super::{Context, Result};

/// Where a pass over one list stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CursorState {
    /// The last id of the last committed page (`None`: nothing committed yet).
    pub cursor: Option<String>,
    /// Whether the list was paged to its end.
    pub complete: bool,
    /// The log position when the pass began.
    pub pass_seq: i64,
    /// The number of the run the pass belongs to.
    pub run: i64,
}

/// The state of list `(resource, scope)` (scope: a conversation id for messages,
/// `""` otherwise).
pub fn cursor(conn: &Connection, resource: Resource, scope: &str) -> Result<Option<CursorState>> {
    cursor_row_scoped(conn, resource.as_str(), scope)
}

fn cursor_row(conn: &Connection, key: &str) -> Result<Option<CursorState>> {
    cursor_row_scoped(conn, key, "")
}

fn cursor_row_scoped(conn: &Connection, key: &str, scope: &str) -> Result<Option<CursorState>> {
    conn.prepare_cached(
        "SELECT cursor, complete, pass_seq, run FROM backfill_cursors
         WHERE resource = ?1 AND scope = ?2",
    )
    .and_then(|mut stmt| {
        stmt.query_row(params![key, scope], |row| {
            Ok(CursorState {
                cursor: row.get(0)?,
                complete: row.get(1)?,
                pass_seq: row.get(2)?,
                run: row.get(3)?,
            })
        })
        .optional()
    })
    .context("reading a backfill cursor")
}

/// Records where list `(resource, scope)` stands.
pub fn save_cursor(
    conn: &Connection,
    resource: Resource,
    scope: &str,
    state: &CursorState,
) -> Result<()> {
    save_row(conn, resource.as_str(), scope, state)
}

fn save_row(conn: &Connection, key: &str, scope: &str, state: &CursorState) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO backfill_cursors (resource, scope, cursor, complete, pass_seq, run)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (resource, scope) DO UPDATE SET cursor = excluded.cursor,
             complete = excluded.complete, pass_seq = excluded.pass_seq, run = excluded.run",
    )
    .and_then(|mut stmt| {
        stmt.execute(params![
            key,
            scope,
            state.cursor,
            state.complete,
            state.pass_seq,
            state.run
        ])
    })
    .context("saving a backfill cursor")?;
    Ok(())
}

/// Starts a new pass over `resource` in run `run`: forgets its cursors and the ids it
/// saw.
pub fn start_pass(conn: &Connection, resource: Resource, pass_seq: i64, run: i64) -> Result<()> {
    conn.prepare_cached("DELETE FROM backfill_cursors WHERE resource = ?1")
        .and_then(|mut stmt| stmt.execute([resource.as_str()]))
        .context("starting a backfill pass")?;
    conn.prepare_cached("DELETE FROM backfill_seen WHERE resource = ?1")
        .and_then(|mut stmt| stmt.execute([resource.as_str()]))
        .context("starting a backfill pass")?;
    save_cursor(
        conn,
        resource,
        "",
        &CursorState {
            cursor: None,
            complete: false,
            pass_seq,
            run,
        },
    )
}

/// Records that Protocol listed `id` in the current pass over `resource`.
pub fn mark_seen(conn: &Connection, resource: Resource, id: &str) -> Result<()> {
    conn.prepare_cached("INSERT OR IGNORE INTO backfill_seen (resource, id) VALUES (?1, ?2)")
        .and_then(|mut stmt| stmt.execute(params![resource.as_str(), id]))
        .context("recording a listed id")?;
    Ok(())
}

/// Where the current (or last) run over all resources stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunState {
    /// Its number.
    pub run: i64,
    /// The log position when it began.
    pub pass_seq: i64,
    /// Whether every resource finished.
    pub complete: bool,
    /// How many backfills (or reconcile passes) in a row resumed it and committed no
    /// page.
    pub stalled: u32,
}

/// The state of the current (or last) run over all resources. (Kept in the cursor
/// table's `run` row, whose cursor column holds `stalled`: 0 where an earlier version
/// left none.)
pub fn run(conn: &Connection) -> Result<Option<RunState>> {
    Ok(cursor_row(conn, "run")?.map(|row| RunState {
        run: row.run,
        pass_seq: row.pass_seq,
        complete: row.complete,
        stalled: row
            .cursor
            .and_then(|stalled| stalled.parse().ok())
            .unwrap_or(0),
    }))
}

/// Records the state of a run.
pub fn save_run(conn: &Connection, state: &RunState) -> Result<()> {
    save_row(
        conn,
        "run",
        "",
        &CursorState {
            cursor: Some(state.stalled.to_string()),
            complete: state.complete,
            pass_seq: state.pass_seq,
            run: state.run,
        },
    )
}

/// Forgets every cursor and seen id (`backfill --restart`).
pub fn reset(conn: &Connection) -> Result<()> {
    conn.execute_batch("DELETE FROM backfill_cursors; DELETE FROM backfill_seen;")
        .context("resetting the backfill state")
}

/// Rows of `resource` that the current pass did not see and that no event changed
/// since the pass began (`seq <= pass_seq`): candidates for pruning.
pub fn unseen_since(conn: &Connection, resource: Resource, pass_seq: i64) -> Result<Vec<String>> {
    conn.prepare(&format!(
        "SELECT id FROM {} WHERE seq <= ?1
           AND id NOT IN (SELECT id FROM backfill_seen WHERE resource = ?2)
         ORDER BY rowid",
        resource.plural()
    ))
    .and_then(|mut stmt| {
        stmt.query_map(params![pass_seq, resource.as_str()], |row| row.get(0))?
            .collect()
    })
    .context("finding rows to prune")
}

/// A stored row of `resource` that the current pass listed, if there is one.
pub fn one_seen(conn: &Connection, resource: Resource) -> Result<Option<String>> {
    conn.prepare(&format!(
        "SELECT s.id FROM backfill_seen s JOIN {} r ON r.id = s.id
         WHERE s.resource = ?1 LIMIT 1",
        resource.plural()
    ))
    .and_then(|mut stmt| {
        stmt.query_row([resource.as_str()], |row| row.get(0))
            .optional()
    })
    .context("finding a listed row")
}

/// The sequence number of the last event that changed row `id`, if it exists.
pub fn row_seq(conn: &Connection, resource: Resource, id: &str) -> Result<Option<i64>> {
    conn.prepare_cached(&format!(
        "SELECT seq FROM {} WHERE id = ?1",
        resource.plural()
    ))
    .and_then(|mut stmt| stmt.query_row([id], |row| row.get(0)).optional())
    .context("reading a row's sequence number")
}

/// The sequence number of the event that deleted `id`, if it is deleted (tombstoned).
pub fn tombstone_seq(conn: &Connection, resource: Resource, id: &str) -> Result<Option<i64>> {
    conn.prepare_cached("SELECT seq FROM tombstones WHERE resource = ?1 AND id = ?2")
        .and_then(|mut stmt| {
            stmt.query_row(params![resource.as_str(), id], |row| row.get(0))
                .optional()
        })
        .context("reading a tombstone's sequence number")
}

/// The raw body of event `seq` if it is a backfill of `resource` (`<resource>.backfill`).
pub fn backfill_body_at(conn: &Connection, resource: Resource, seq: i64) -> Result<Option<String>> {
    conn.prepare_cached(
        "SELECT b.body FROM events e JOIN event_bodies b ON b.seq = e.seq
         WHERE e.seq = ?1 AND e.type = ?2",
    )
    .and_then(|mut stmt| {
        stmt.query_row(
            params![seq, crate::apply::backfill_event_type(resource)],
            |row| row.get(0),
        )
        .optional()
    })
    .context("reading a backfill event")
}

/// The ids of the stored conversations, oldest first.
pub fn conversation_ids(conn: &Connection) -> Result<Vec<String>> {
    conn.prepare("SELECT id FROM conversations ORDER BY rowid")
        .and_then(|mut stmt| stmt.query_map([], |row| row.get(0))?.collect())
        .context("listing conversations")
}

/// The last sequence number of the event log (0 when it is empty), as the reads
/// have it.
pub use super::query::last_seq;
