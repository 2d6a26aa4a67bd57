//! The raw baseline of the import benchmark: the rows the store would write for each
//! event, extracted beforehand, then written by plain prepared INSERTs.

use std::collections::HashSet;
use std::io::BufRead;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use protocol_mirror::store::Store;
use protocol_types::{
    Action, Attachment, Contact, Conversation, EmbeddedContact, Event, Field, Group, Object,
    Payload, Timestamp,
};
use rusqlite::types::Value as Sql;

use super::child::{Measured, RECEIVED_AT, open_input};

/// The baseline's statements, by index into [`BASELINE_SQL`].
#[derive(Clone, Copy)]
enum Stmt {
    Contact,
    Conversation,
    Message,
    MessageText,
    Group,
    Attachment,
    EmbeddedAttachment,
    Member,
    Tombstone,
    Event,
    Body,
}

const BASELINE_SQL: [&str; 11] = [
    "INSERT OR REPLACE INTO contacts (id, username, phone_number, avatar_url, display_name,
         conversation_id, last_active_at, created_at, seq, data)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    "INSERT OR REPLACE INTO conversations (id, contact_id, group_id, pinned_message_id,
         is_pinned, is_muted, last_active_at, last_opened_at, created_at, archived_at, seq, data)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
    "INSERT OR REPLACE INTO messages (id, conversation_id, sender_id, read_at, created_at,
         updated_at, seq, data)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    "INSERT INTO messages_fts (rowid, message) VALUES (last_insert_rowid(), ?1)",
    "INSERT OR REPLACE INTO groups (id, name, description, avatar_url, conversation_id,
         created_at, archived_at, seq, data)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    "INSERT OR REPLACE INTO attachments (id, message_id, filename, file_url, file_type,
         file_size, created_at, seq, data)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    "INSERT OR IGNORE INTO attachments (id, message_id, filename, file_url, file_type,
         file_size, created_at, seq, data)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    "INSERT OR REPLACE INTO group_members (group_id, position, contact_id, username, data)
     VALUES (?1, ?2, ?3, ?4, ?5)",
    "INSERT OR IGNORE INTO tombstones (resource, id, seq) VALUES (?1, ?2, ?3)",
    "INSERT INTO events (seq, event_id, type, object_id, received_at, outcome, error,
         cascaded, cascade)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    "INSERT INTO event_bodies (seq, body) VALUES (?1, ?2)",
];

/// One pre-extracted INSERT.
struct Row {
    stmt: Stmt,
    values: Vec<Sql>,
}

/// Writes the rows of every event of `ndjson` into a fresh database at `db`, in
/// transactions of `batch_size` events; only the transactions are timed.
pub(super) fn run(ndjson: &Path, db: &Path, batch_size: usize) -> anyhow::Result<Measured> {
    let mut store = Store::open(db)?;
    // Written as `import_into_new` writes a new database: no journal, no syncs but one
    // at the end (timed).
    store.unjournaled()?;
    // The page cache `import` runs with.
    store.set_cache_kib(protocol_mirror::import::IMPORT_CACHE_KIB)?;
    let conn = store.conn_mut();
    let mut stmts = BASELINE_SQL
        .iter()
        .map(|sql| conn.prepare(sql))
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut input = open_input(ndjson)?;
    let mut line = Vec::with_capacity(4096);
    let mut seen: HashSet<u64> = HashSet::new();
    let mut rows: Vec<Row> = Vec::new();
    let mut seq = 0i64;
    let mut events = 0u64;
    let mut timed = Duration::ZERO;
    let mut at_end = false;
    while !at_end {
        // Untimed: read and extract one batch.
        rows.clear();
        let mut in_batch = 0;
        while in_batch < batch_size {
            line.clear();
            if input.read_until(b'\n', &mut line)? == 0 {
                at_end = true;
                break;
            }
            let body = line.trim_ascii();
            if body.is_empty() {
                continue;
            }
            in_batch += 1;
            events += 1;
            extract(body, &mut seen, &mut seq, &mut rows)?;
        }
        // Timed: the plain INSERTs of the batch, in one transaction.
        let started = Instant::now();
        conn.execute_batch("BEGIN IMMEDIATE")?;
        for row in &rows {
            stmts[row.stmt as usize]
                .execute(rusqlite::params_from_iter(row.values.iter()))
                .context("baseline insert")?;
        }
        conn.execute_batch("COMMIT")?;
        timed += started.elapsed();
    }
    drop(stmts);
    let started = Instant::now();
    std::fs::File::open(db)?.sync_all()?;
    timed += started.elapsed();
    Ok(Measured {
        events,
        secs: timed.as_secs_f64(),
        detail: format!("logged={seq} (timed: the transactions only)"),
    })
}

fn text(field: &Field<String>) -> Sql {
    field.value().map_or(Sql::Null, |s| Sql::Text(s.clone()))
}

fn time(field: &Field<Timestamp>) -> Sql {
    field.value().map_or(Sql::Null, |t| Sql::Integer(t.0))
}

fn boolean(field: &Field<bool>) -> Sql {
    field
        .value()
        .map_or(Sql::Null, |b| Sql::Integer(i64::from(*b)))
}

/// The object as JSON text, with the array under `emptied` (stored in a table of its
/// own) replaced by an empty one, as the store does.
fn json(mut object: Object, emptied: &str) -> Sql {
    if let Some(value) = object.get_mut(emptied) {
        *value = serde_json::Value::Array(Vec::new());
    }
    Sql::Text(serde_json::Value::Object(object).to_string())
}

fn attachment_row(stmt: Stmt, a: &Attachment, message_id: Sql, seq: i64) -> Row {
    Row {
        stmt,
        values: vec![
            Sql::Text(a.id.clone()),
            message_id,
            text(&a.filename),
            text(&a.file_url),
            text(&a.file_type),
            a.file_size.value().map_or(Sql::Null, |n| Sql::Integer(*n)),
            time(&a.created_at),
            Sql::Integer(seq),
            json(a.to_object(), ""),
        ],
    }
}

/// The rows the store would write for one event (as if every event applied).
fn extract(
    body: &[u8],
    seen: &mut HashSet<u64>,
    seq: &mut i64,
    rows: &mut Vec<Row>,
) -> anyhow::Result<()> {
    let event = Event::from_slice(body).context("a generated event does not parse")?;
    if !seen.insert(hash(&event.id)) {
        return Ok(()); // a redelivery: the engine only counts it
    }
    *seq += 1;
    let seq = *seq;
    let Some(event_type) = event.event_type() else {
        bail!("the generator writes known types only");
    };
    let id = event.payload.id().to_owned();
    if event_type.action == Action::Deleted {
        rows.push(Row {
            stmt: Stmt::Tombstone,
            values: vec![
                Sql::Text(event_type.resource.as_str().into()),
                Sql::Text(id.clone()),
                Sql::Integer(seq),
            ],
        });
    } else {
        payload_rows(&event.payload, seq, rows);
    }
    rows.push(Row {
        stmt: Stmt::Event,
        values: vec![
            Sql::Integer(seq),
            Sql::Text(event.id.clone()),
            Sql::Text(event_type.to_string()),
            Sql::Text(id),
            Sql::Integer(RECEIVED_AT),
            Sql::Text("applied".into()),
            Sql::Null,
            Sql::Integer(0),
            Sql::Null,
        ],
    });
    let body = String::from_utf8(body.to_vec()).context("a generated event is not UTF-8")?;
    rows.push(Row {
        stmt: Stmt::Body,
        values: vec![Sql::Integer(seq), Sql::Text(body)],
    });
    Ok(())
}

/// The rows of a created or updated object.
fn payload_rows(payload: &Payload, seq: i64, rows: &mut Vec<Row>) {
    match payload {
        Payload::Contact(c) => rows.push(contact_row(c, seq)),
        Payload::Conversation(c) => rows.push(conversation_row(c, seq)),
        Payload::Message(m) => {
            rows.push(Row {
                stmt: Stmt::Message,
                values: vec![
                    Sql::Text(m.id.clone()),
                    text(&m.conversation_id),
                    m.contact
                        .value()
                        .map_or(Sql::Null, |c: &EmbeddedContact| text(&c.id)),
                    time(&m.read_at),
                    time(&m.created_at),
                    time(&m.updated_at),
                    Sql::Integer(seq),
                    json(m.to_object(), "attachments"),
                ],
            });
            if let Some(text) = m.message.value() {
                rows.push(Row {
                    stmt: Stmt::MessageText,
                    values: vec![Sql::Text(text.clone())],
                });
            }
            for a in m.attachments.value().into_iter().flatten() {
                let row = attachment_row(Stmt::EmbeddedAttachment, a, Sql::Text(m.id.clone()), seq);
                rows.push(row);
            }
        }
        Payload::Group(g) => {
            rows.push(group_row(g, seq));
            for (position, member) in g.contacts.value().into_iter().flatten().enumerate() {
                rows.push(Row {
                    stmt: Stmt::Member,
                    values: vec![
                        Sql::Text(g.id.clone()),
                        Sql::Integer(position as i64),
                        text(&member.id),
                        text(&member.username),
                        json(member.to_object(), ""),
                    ],
                });
            }
        }
        Payload::Attachment(a) => {
            rows.push(attachment_row(
                Stmt::Attachment,
                a,
                text(&a.message_id),
                seq,
            ));
        }
        Payload::Unknown(_) => {}
    }
}

fn contact_row(c: &Contact, seq: i64) -> Row {
    Row {
        stmt: Stmt::Contact,
        values: vec![
            Sql::Text(c.id.clone()),
            text(&c.username),
            text(&c.phone_number),
            text(&c.avatar_url),
            text(&c.display_name),
            text(&c.conversation_id),
            time(&c.last_active_at),
            time(&c.created_at),
            Sql::Integer(seq),
            json(c.to_object(), ""),
        ],
    }
}

fn conversation_row(c: &Conversation, seq: i64) -> Row {
    Row {
        stmt: Stmt::Conversation,
        values: vec![
            Sql::Text(c.id.clone()),
            text(&c.contact_id),
            text(&c.group_id),
            text(&c.pinned_message_id),
            boolean(&c.is_pinned),
            boolean(&c.is_muted),
            time(&c.last_active_at),
            time(&c.last_opened_at),
            time(&c.created_at),
            time(&c.archived_at),
            Sql::Integer(seq),
            json(c.to_object(), ""),
        ],
    }
}

fn group_row(g: &Group, seq: i64) -> Row {
    Row {
        stmt: Stmt::Group,
        values: vec![
            Sql::Text(g.id.clone()),
            text(&g.name),
            text(&g.description),
            text(&g.avatar_url),
            text(&g.conversation_id),
            time(&g.created_at),
            time(&g.archived_at),
            Sql::Integer(seq),
            json(g.to_object(), "contacts"),
        ],
    }
}

/// FNV-1a: enough to spot redeliveries of 16-character random ids.
fn hash(id: &str) -> u64 {
    id.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}
