//! Read queries: the one query layer behind the CLI (and the read API).

use protocol_types::Resource;
use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, OptionalExtension, params_from_iter};
use serde_json::Value;

use super::{Context, Result, StoreError, rows};

mod events;
mod search;
mod sql;
mod stats;

pub use events::{EventRecord, EventsQuery, events, events_each, last_seq, nth_newest_seq};
pub(crate) use search::indexed_form;
pub use search::{SNIPPET_MAX_BYTES, SearchError, SearchHit, has_words, literal_fts_query, search};
pub use sql::{SqlError, SqlRows, sql, sql_each};
pub use stats::stats;

/// Filters and paging of `list`. Each filter applies to some resources only; see
/// [`ListQuery::check`].
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    /// Messages and attachments in this conversation; contacts and groups whose
    /// `conversation_id` it is.
    pub conversation: Option<String>,
    /// Messages sent by this contact; conversations with them; groups they are in
    /// (members listed with their id, or by their username alone).
    pub contact: Option<String>,
    /// Conversations of this group; contacts who are its members (listed with their
    /// id, or by their username alone).
    pub group: Option<String>,
    /// Attachments of this message.
    pub message: Option<String>,
    /// Objects created at or after this time (Unix seconds).
    pub since: Option<i64>,
    /// Conversations that are (or are not) muted.
    pub muted: Option<bool>,
    /// Conversations that are (or are not) pinned.
    pub pinned: Option<bool>,
    /// Conversations or groups that are (or are not) archived.
    pub archived: Option<bool>,
    /// At most this many objects.
    pub limit: Option<usize>,
    /// Where the page starts.
    pub cursor: Option<Cursor>,
}

/// A page boundary, named by an object id (Protocol's `starting_after` and
/// `ending_before`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cursor {
    /// The objects that come after this one in list order.
    After(String),
    /// The objects that come before this one in list order.
    Before(String),
}

/// One page of a list.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    /// The objects, in list order (newest first).
    pub data: Vec<Value>,
    /// Whether more objects lie beyond this page, in the direction of paging.
    pub has_more: bool,
}

/// What [`list_each`] listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listed {
    /// How many objects it listed.
    pub count: usize,
    /// Whether more objects lie beyond the limit: a list of exactly as many objects
    /// as the limit has none (`list` said "there may be more" of one: a note). A limit
    /// of 0 reads nothing, and says `false`.
    pub more: bool,
}

/// Why a list failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ListError {
    /// A cursor names no stored object, nor one deleted from the replica.
    #[error("no {resource} with id {} to page from", shown(id))]
    UnknownCursor {
        /// The resource listed.
        resource: &'static str,
        /// The cursor's id.
        id: String,
    },
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Writing an object out failed (see [`list_each`]).
    #[error(transparent)]
    Output(std::io::Error),
}

/// Runs `read` with all its statements on one snapshot of the database: in a read
/// transaction of its own, or in the caller's when `conn` is in one. A read of several
/// statements (a list page's segments, a search's ranking and its hits, the counts of
/// `stats`) saw each statement's own state of a database being written: the same
/// object twice in a page, hits that no longer matched, `applied` counts below zero
/// (found by a black-box probe).
pub(crate) fn one_snapshot<T, E: From<StoreError>>(
    conn: &Connection,
    read: impl FnOnce(&Connection) -> std::result::Result<T, E>,
) -> std::result::Result<T, E> {
    if !conn.is_autocommit() {
        return read(conn);
    }
    // Ended by its drop: a read has nothing to commit.
    let snapshot = conn
        .unchecked_transaction()
        .context("reading the replica")?;
    read(&snapshot)
}

/// An id as an error message quotes it: in full up to 64 characters, else its start
/// (a 60 KB cursor need not come back in the answer).
pub fn shown(id: &str) -> String {
    shown_within(id, 64)
}

/// `text` quoted, in full up to `max` characters, else its start and its length.
pub fn shown_within(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        None => format!("{text:?}"),
        Some((end, _)) => format!("{:?}… ({} bytes)", &text[..end], text.len()),
    }
}

impl ListQuery {
    /// Refuses a filter that does not apply to `resource`, naming it, and those that do
    /// (`--since` among them: it applies to every resource, and went unnamed; a probe).
    pub fn check(&self, resource: Resource) -> std::result::Result<(), String> {
        let allowed: &[&str] = match resource {
            Resource::Contact => &["conversation", "group"],
            Resource::Conversation => &["contact", "group", "muted", "pinned", "archived"],
            Resource::Message => &["conversation", "contact"],
            Resource::Group => &["conversation", "contact", "archived"],
            Resource::Attachment => &["conversation", "message"],
        };
        let given = [
            ("conversation", self.conversation.is_some()),
            ("contact", self.contact.is_some()),
            ("group", self.group.is_some()),
            ("message", self.message.is_some()),
            ("muted", self.muted.is_some()),
            ("pinned", self.pinned.is_some()),
            ("archived", self.archived.is_some()),
        ];
        for (name, present) in given {
            if present && !allowed.contains(&name) {
                return Err(format!(
                    "--{name} does not apply to {}; filters for them: {}",
                    resource.plural(),
                    allowed
                        .iter()
                        .chain(&["since"])
                        .map(|f| format!("--{f}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
        }
        Ok(())
    }
}

/// Lists objects of `resource`, newest first (`created_at` descending, objects without
/// one last, ties in reverse arrival order), as `get` prints them.
pub fn list(conn: &Connection, resource: Resource, query: &ListQuery) -> Result<Vec<Value>> {
    let query = ListQuery {
        cursor: None,
        ..query.clone()
    };
    match list_page(conn, resource, &query) {
        Ok(page) => Ok(page.data),
        Err(ListError::Store(e)) => Err(e),
        Err(ListError::UnknownCursor { .. } | ListError::Output(_)) => {
            unreachable!("no cursor was given, and nothing written")
        }
    }
}

/// [`list`] an object at a time: `each` is called with every object, in order, as
/// they are read a page of [`LIST_EACH_PAGE`] at a time, all in one read transaction
/// (the same objects as one read of the list; a list of 700,000 messages held whole
/// took 3 GB). Returns how many there were, and whether more lie beyond the limit. An
/// error from `each` (a closed output) stops the list and is returned as
/// [`ListError::Output`].
pub fn list_each(
    conn: &Connection,
    resource: Resource,
    query: &ListQuery,
    mut each: impl FnMut(Value) -> std::io::Result<()>,
) -> std::result::Result<Listed, ListError> {
    page_through(conn, query, |snapshot, page_query| {
        let (mut read, mut last) = (0, None);
        let has_more = list_page_each(snapshot, resource, page_query, |object| {
            last = object["id"].as_str().map(str::to_owned);
            read += 1;
            each(object)
        })?;
        Ok((read, last, has_more))
    })
}

/// [`list_each`] of each object's stored JSON text, as received and merged, without
/// what a listing adds from other tables (a message's `attachments`, a group's
/// `contacts`): for a caller that needs only its other keys (`list --format csv`
/// finds its columns so, and then lists the objects: reading them whole twice took
/// 1.7 times as long as once).
pub fn list_stored_each(
    conn: &Connection,
    resource: Resource,
    query: &ListQuery,
    mut each: impl FnMut(&str) -> std::io::Result<()>,
) -> std::result::Result<Listed, ListError> {
    page_through(conn, query, |snapshot, page_query| {
        let (stored, has_more) = stored_page(snapshot, resource, page_query)?;
        for (_, data) in &stored {
            each(data).map_err(ListError::Output)?;
        }
        let last = stored.last().map(|(id, _)| id.clone());
        Ok((stored.len(), last, has_more))
    })
}

/// Pages through `query`'s list, [`LIST_EACH_PAGE`] objects at a time, in one read
/// transaction: `page` reads one page (the limit and cursor it is given), and says how
/// many objects it read, the last one's id, and whether more lie beyond. Returns how
/// many there were, and whether more lie beyond the limit.
fn page_through(
    conn: &Connection,
    query: &ListQuery,
    mut page: impl FnMut(
        &Connection,
        &ListQuery,
    ) -> std::result::Result<(usize, Option<String>, bool), ListError>,
) -> std::result::Result<Listed, ListError> {
    one_snapshot(conn, |snapshot| {
        let mut left = query.limit.unwrap_or(usize::MAX);
        let mut page_query = ListQuery {
            limit: Some(left.min(LIST_EACH_PAGE)),
            cursor: None,
            ..query.clone()
        };
        let mut listed = Listed {
            count: 0,
            more: false,
        };
        while left > 0 {
            let (read, last, has_more) = page(snapshot, &page_query)?;
            listed.count += read;
            listed.more = has_more;
            left -= read;
            match last {
                Some(last) if has_more => {
                    page_query.cursor = Some(Cursor::After(last));
                    page_query.limit = Some(left.min(LIST_EACH_PAGE));
                }
                _ => break,
            }
        }
        Ok(listed)
    })
}

/// The conditions of the flag filters, for `false` and for `true`: literals, as the
/// partial indexes of the rows with the flag set are written (migration 0014), which
/// SQLite reads only for a condition it can match with theirs (not `= ?`). An absent or
/// `null` flag is `false`; `archived` is an `archived_at`.
const MUTED: [&str; 2] = ["COALESCE(is_muted, 0) = 0", "is_muted = 1"];
const PINNED: [&str; 2] = ["COALESCE(is_pinned, 0) = 0", "is_pinned = 1"];
const ARCHIVED: [&str; 2] = ["archived_at IS NULL", "archived_at IS NOT NULL"];

/// How many objects [`list_each`] reads at a time.
pub const LIST_EACH_PAGE: usize = 1000;

/// One page of [`list`], from a cursor. The order is stable under concurrent writes:
/// paging through a table that is being written never skips or repeats an object that
/// was there throughout (new objects land on the pages already passed or still ahead).
pub fn list_page(
    conn: &Connection,
    resource: Resource,
    query: &ListQuery,
) -> std::result::Result<Page, ListError> {
    let mut data = Vec::new();
    let has_more = list_page_each(conn, resource, query, |object| {
        data.push(object);
        Ok(())
    })?;
    Ok(Page { data, has_more })
}

/// [`list_page`] an object at a time: `each` is given every object of the page, in
/// order, as it is made, and the page's `has_more` is returned. Only the page's stored
/// rows are held, never all its objects at once: an object put together (a message
/// with its attachments, a group with its members) takes many times its JSON text
/// (a page of 100 messages with 6,500 attachments each, 15.8 MB of JSON, took about
/// 250 MB held whole). An error from `each` stops the page ([`ListError::Output`]).
pub fn list_page_each(
    conn: &Connection,
    resource: Resource,
    query: &ListQuery,
    mut each: impl FnMut(Value) -> std::io::Result<()>,
) -> std::result::Result<bool, ListError> {
    one_snapshot(conn, |conn| {
        let (stored, has_more) = stored_page(conn, resource, query)?;
        for (id, data) in &stored {
            each(rows::output(conn, resource, id, data)?).map_err(ListError::Output)?;
        }
        Ok(has_more)
    })
}

/// The stored rows (`id`, `data`) of a page, in list order, and whether more lie
/// beyond it, on `conn` as it is (in the caller's snapshot).
fn stored_page(
    conn: &Connection,
    resource: Resource,
    query: &ListQuery,
) -> std::result::Result<(Vec<(String, String)>, bool), ListError> {
    let mut conditions: Vec<&str> = Vec::new();
    let mut values: Vec<SqlValue> = Vec::new();
    // The value is bound to each `?` of the condition.
    let mut filter = |condition: &'static str, value: &Option<String>| {
        if let Some(value) = value {
            conditions.push(condition);
            for _ in condition.matches('?') {
                values.push(SqlValue::Text(value.clone()));
            }
        }
    };
    match resource {
        Resource::Contact => {
            filter("conversation_id = ?", &query.conversation);
            // Members are listed by id, or by username alone (as in Protocol's
            // examples): the same members a contact's delete removes.
            filter(
                "(id IN (SELECT contact_id FROM group_members WHERE group_id = ?)
                  OR username IN (SELECT username FROM group_members
                                  WHERE group_id = ? AND contact_id IS NULL))",
                &query.group,
            );
        }
        Resource::Conversation => {
            filter("contact_id = ?", &query.contact);
            filter("group_id = ?", &query.group);
        }
        Resource::Message => {
            filter("conversation_id = ?", &query.conversation);
            filter("sender_id = ?", &query.contact);
        }
        Resource::Group => {
            filter("conversation_id = ?", &query.conversation);
            filter(
                "id IN (SELECT group_id FROM group_members WHERE contact_id = ?
                        UNION
                        SELECT m.group_id FROM contacts c JOIN group_members m
                            ON m.contact_id IS NULL AND m.username = c.username
                        WHERE c.id = ?)",
                &query.contact,
            );
        }
        Resource::Attachment => {
            // The message's conversation, kept on the attachment (migration 0012).
            filter("conversation_id = ?", &query.conversation);
            filter("message_id = ?", &query.message);
        }
    }
    for (condition, value) in [
        (MUTED, query.muted),
        (PINNED, query.pinned),
        (ARCHIVED, query.archived),
    ] {
        if let Some(value) = value {
            conditions.push(condition[usize::from(value)]);
        }
    }
    if let Some(since) = query.since {
        conditions.push("created_at >= ?");
        values.push(SqlValue::Integer(since));
    }
    let table = resource.plural();
    let backwards = matches!(query.cursor, Some(Cursor::Before(_)));
    // The rows after the cursor in paging order, as segments read one after the
    // other, each a range of an index on `created_at` (which holds the rowid): one
    // condition with `OR`s made SQLite scan the list from its start, so a page deep in
    // a list took time that grew with its depth (72 ms at the end of 700,000
    // messages; paging through them all, time that grew with the square).
    let segments: Vec<(&str, Vec<SqlValue>)> = match &query.cursor {
        None => vec![("", Vec::new())],
        Some(Cursor::After(id) | Cursor::Before(id)) => {
            // An object deleted since the page before still says where it stood.
            let position = match cursor_position(conn, table, id)? {
                Some(position) => Some(position),
                None => super::rows::tombstone_position(conn, resource, id)?,
            };
            let (created, rowid) = position.ok_or_else(|| ListError::UnknownCursor {
                resource: resource.as_str(),
                id: id.clone(),
            })?;
            // Newest first is `created_at` descending, objects without one last, ties
            // by rowid descending.
            match (backwards, created) {
                (false, Some(c)) => vec![
                    ("created_at = ? AND rowid < ?", vec![c.into(), rowid.into()]),
                    ("created_at < ?", vec![c.into()]),
                    ("created_at IS NULL", Vec::new()),
                ],
                (false, None) => vec![("created_at IS NULL AND rowid < ?", vec![rowid.into()])],
                (true, Some(c)) => vec![
                    ("created_at = ? AND rowid > ?", vec![c.into(), rowid.into()]),
                    ("created_at > ?", vec![c.into()]),
                ],
                (true, None) => vec![
                    ("created_at IS NULL AND rowid > ?", vec![rowid.into()]),
                    ("created_at IS NOT NULL", Vec::new()),
                ],
            }
        }
    };
    let order = if backwards {
        " ORDER BY created_at ASC, rowid ASC"
    } else {
        " ORDER BY created_at DESC, rowid DESC"
    };
    // One more than the page, to tell whether there is more.
    let wanted = query.limit.map(|limit| limit.saturating_add(1));
    let mut stored: Vec<(String, String)> = Vec::new();
    for (segment, bounds) in segments {
        let left = wanted.map(|wanted| wanted - stored.len());
        if left == Some(0) {
            break;
        }
        let mut all = conditions.clone();
        if !segment.is_empty() {
            all.push(segment);
        }
        let mut sql = format!("SELECT id, data FROM {table}");
        push_where(&mut sql, &all);
        sql.push_str(order);
        let mut bound: Vec<SqlValue> = values.iter().cloned().chain(bounds).collect();
        if let Some(left) = left {
            sql.push_str(" LIMIT ?");
            bound.push(SqlValue::Integer(left.min(i64::MAX as usize) as i64));
        }
        let rows = conn
            .prepare_cached(&sql)
            .and_then(|mut stmt| {
                stmt.query_map(params_from_iter(bound), |row| {
                    Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()
            })
            .context("listing objects")?;
        stored.extend(rows);
    }
    let has_more = query.limit.is_some_and(|limit| stored.len() > limit);
    if let Some(limit) = query.limit {
        stored.truncate(limit);
    }
    if backwards {
        stored.reverse();
    }
    Ok((stored, has_more))
}

/// Appends ` WHERE c1 AND c2 ...` to `sql`, if there are any conditions.
fn push_where(sql: &mut String, conditions: &[&str]) {
    if !conditions.is_empty() {
        sql.push_str(" WHERE ");
        sql.push_str(&conditions.join(" AND "));
    }
}

fn cursor_position(conn: &Connection, table: &str, id: &str) -> Result<Option<(Option<i64>, i64)>> {
    conn.prepare_cached(&format!(
        "SELECT created_at, rowid FROM {table} WHERE id = ?1"
    ))
    .and_then(|mut stmt| {
        stmt.query_row([id], |row| Ok((row.get(0)?, row.get(1)?)))
            .optional()
    })
    .context("finding a cursor")
}

/// The sample event stream applied to a store in memory (for the tests of each kind of read).
#[cfg(test)]
fn sample() -> crate::store::Store {
    let mut store = crate::store::Store::open_in_memory().unwrap();
    for line in include_str!("../../../../../tests/data/sample-events.ndjson").lines() {
        store.apply(line.as_bytes(), 100).unwrap();
    }
    store
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;
    use serde_json::json;

    #[test]
    fn an_unknown_cursor_is_quoted_short() {
        let error = |id: String| {
            ListError::UnknownCursor {
                resource: "message",
                id,
            }
            .to_string()
        };
        assert_eq!(
            error("m1".into()),
            r#"no message with id "m1" to page from"#
        );
        let long = error("é".repeat(30_000));
        assert!(long.len() < 200, "{long}");
        assert!(long.contains("(60000 bytes)"), "{long}");
    }

    #[test]
    fn list_filters_and_orders() {
        let store = sample();
        let all = list(store.conn(), Resource::Message, &ListQuery::default()).unwrap();
        assert_eq!(all.len(), 1);
        let none = list(
            store.conn(),
            Resource::Message,
            &ListQuery {
                conversation: Some("' OR 1=1 --".into()),
                ..ListQuery::default()
            },
        )
        .unwrap();
        assert!(none.is_empty());
        let err = ListQuery {
            message: Some("m".into()),
            ..ListQuery::default()
        }
        .check(Resource::Contact)
        .unwrap_err();
        assert_eq!(
            err,
            "--message does not apply to contacts; filters for them: --conversation, \
             --group, --since"
        );
    }

    fn ids(page: &Page) -> Vec<String> {
        page.data
            .iter()
            .map(|o| o["id"].as_str().unwrap().to_owned())
            .collect()
    }

    /// Pages forwards then backwards through `expected.len()` messages at limit 7.
    fn page_through(store: &mut Store, expected: &[String], write_between: bool) {
        let query = |cursor| ListQuery {
            limit: Some(7),
            cursor,
            ..ListQuery::default()
        };
        let mut seen = Vec::new();
        let mut cursor = None;
        let mut extra = 0;
        loop {
            let page = list_page(store.conn(), Resource::Message, &query(cursor)).unwrap();
            seen.extend(ids(&page));
            if write_between {
                extra += 1;
                let body = json!({"id": format!("w{extra}"), "type": "message.created",
                    "payload": {"id": format!("new{extra}"), "created_at": extra % 3}});
                store.apply(body.to_string().as_bytes(), 0).unwrap();
            }
            if !page.has_more {
                break;
            }
            cursor = Some(Cursor::After(seen.last().unwrap().clone()));
        }
        let seen: Vec<String> = seen
            .into_iter()
            .filter(|id| !id.starts_with("new"))
            .collect();
        assert_eq!(seen, expected, "forwards");

        let mut back = Vec::new();
        let mut cursor = Some(Cursor::Before(expected.last().unwrap().clone()));
        loop {
            let page = list_page(store.conn(), Resource::Message, &query(cursor)).unwrap();
            let mut ids = ids(&page);
            ids.extend(back);
            back = ids;
            if !page.has_more {
                break;
            }
            cursor = Some(Cursor::Before(back[0].clone()));
        }
        let back: Vec<String> = back
            .into_iter()
            .filter(|id| !id.starts_with("new"))
            .collect();
        assert_eq!(back, &expected[..expected.len() - 1], "backwards");
    }

    #[test]
    fn cursor_paging_is_stable_in_both_directions_and_under_writes() {
        for write_between in [false, true] {
            let mut store = Store::open_in_memory().unwrap();
            // 100 messages: created_at with ties and nulls.
            for i in 0..100 {
                store.apply(&message_with_ties(i), 0).unwrap();
            }
            let expected: Vec<String> =
                list(store.conn(), Resource::Message, &ListQuery::default())
                    .unwrap()
                    .iter()
                    .map(|o| o["id"].as_str().unwrap().to_owned())
                    .collect();
            assert_eq!(expected.len(), 100);
            page_through(&mut store, &expected, write_between);
        }
    }

    /// Message event `i` of a list with `created_at` ties (13 values) and objects
    /// without one (every tenth).
    fn message_with_ties(i: usize) -> Vec<u8> {
        let created = if i.is_multiple_of(10) {
            Value::Null
        } else {
            json!(i % 13)
        };
        json!({"id": format!("e{i}"), "type": "message.created",
            "payload": {"id": format!("m{i:05}"), "created_at": created}})
        .to_string()
        .into_bytes()
    }

    /// `list_each` gives what `list` gives, across pages of `LIST_EACH_PAGE`, with
    /// ties and objects without `created_at`, whatever the limit.
    #[test]
    fn list_each_equals_list() {
        let mut store = Store::open_in_memory().unwrap();
        let tx = store.transaction().unwrap();
        for i in 0..(2 * LIST_EACH_PAGE + 345) {
            crate::apply::apply_delivery(
                &tx,
                &crate::apply::Delivery::parse(&message_with_ties(i)).unwrap(),
                crate::apply::Origin::Import,
                0,
            )
            .unwrap();
        }
        tx.commit().unwrap();
        for limit in [
            None,
            Some(0),
            Some(7),
            Some(LIST_EACH_PAGE),
            Some(2 * LIST_EACH_PAGE + 1),
            Some(2 * LIST_EACH_PAGE + 345),
            Some(2 * LIST_EACH_PAGE + 346),
        ] {
            let query = ListQuery {
                limit,
                ..ListQuery::default()
            };
            let whole = list(store.conn(), Resource::Message, &query).unwrap();
            let mut each = Vec::new();
            let listed = list_each(store.conn(), Resource::Message, &query, |o| {
                each.push(o);
                Ok(())
            })
            .unwrap();
            assert_eq!(listed.count, whole.len(), "{limit:?}");
            // More lie beyond a limit below the number stored, none at or above it.
            let stored_count = 2 * LIST_EACH_PAGE + 345;
            let more = limit.is_some_and(|limit| limit > 0 && limit < stored_count);
            assert_eq!(listed.more, more, "{limit:?}");
            assert_eq!(each, whole, "{limit:?}");
            // The stored text of the same objects, in the same order.
            let mut stored = Vec::new();
            let listed_stored = list_stored_each(store.conn(), Resource::Message, &query, |data| {
                stored.push(serde_json::from_str::<Value>(data).unwrap()["id"].clone());
                Ok(())
            })
            .unwrap();
            assert_eq!(listed_stored, listed, "{limit:?}");
            let ids: Vec<Value> = whole.iter().map(|o| o["id"].clone()).collect();
            assert_eq!(stored, ids, "{limit:?}");
        }
        let stopped = list_each(
            store.conn(),
            Resource::Message,
            &ListQuery::default(),
            |_| Err(std::io::ErrorKind::BrokenPipe.into()),
        );
        assert!(matches!(stopped, Err(ListError::Output(_))));
    }

    /// A read API client pages on from an object deleted since its last page, directly
    /// or by a cascade: the tombstone keeps where the row stood.
    #[test]
    fn a_cursor_deleted_between_pages_still_pages_on() {
        let build = || {
            let mut store = Store::open_in_memory().unwrap();
            // One conversation per message, so that deleting it removes that message
            // alone; created_at with ties and nulls.
            for i in 0..40 {
                let created = if i % 9 == 0 {
                    Value::Null
                } else {
                    json!(i % 7)
                };
                let body = json!({"id": format!("e{i}"), "type": "message.created",
                    "payload": {"id": format!("m{i:02}"), "conversation_id": format!("c{i:02}"),
                                "created_at": created}});
                store.apply(body.to_string().as_bytes(), 0).unwrap();
            }
            store
        };
        let remove = |store: &mut Store, n: usize, id: &str| {
            let body = if n.is_multiple_of(2) {
                json!({"id": format!("d{n}"), "type": "message.deleted", "payload": {"id": id}})
            } else {
                let conversation = format!("c{}", &id[1..]);
                json!({"id": format!("d{n}"), "type": "conversation.deleted",
                       "payload": {"id": conversation}})
            };
            store.apply(body.to_string().as_bytes(), 0).unwrap();
        };
        let page = |store: &Store, cursor| {
            let query = ListQuery {
                limit: Some(7),
                cursor: Some(cursor),
                ..ListQuery::default()
            };
            list_page(store.conn(), Resource::Message, &query).unwrap()
        };
        let mut store = build();
        let expected: Vec<String> = list(store.conn(), Resource::Message, &ListQuery::default())
            .unwrap()
            .iter()
            .map(|o| o["id"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(expected.len(), 40);

        // Forwards, deleting each page's last object before asking for the next.
        let first = ListQuery {
            limit: Some(7),
            ..ListQuery::default()
        };
        let mut current = list_page(store.conn(), Resource::Message, &first).unwrap();
        let mut seen = ids(&current);
        let mut n = 0;
        while current.has_more {
            let last = seen.last().unwrap().clone();
            remove(&mut store, n, &last);
            n += 1;
            current = page(&store, Cursor::After(last));
            seen.extend(ids(&current));
        }
        assert_eq!(seen, expected, "forwards");

        // Backwards from the oldest, deleting each page's first object.
        let mut store = build();
        let oldest = expected.last().unwrap().clone();
        remove(&mut store, 0, &oldest);
        let mut current = page(&store, Cursor::Before(oldest));
        let mut back = ids(&current);
        let mut n = 1;
        while current.has_more {
            let first = back[0].clone();
            remove(&mut store, n, &first);
            n += 1;
            current = page(&store, Cursor::Before(first));
            let mut ids = ids(&current);
            ids.extend(back);
            back = ids;
        }
        assert_eq!(back, &expected[..expected.len() - 1], "backwards");

        // An id deleted before it ever had a row still names no position.
        let body = json!({"id": "x", "type": "message.deleted", "payload": {"id": "never"}});
        store.apply(body.to_string().as_bytes(), 0).unwrap();
        let query = ListQuery {
            cursor: Some(Cursor::After("never".into())),
            ..ListQuery::default()
        };
        let err = list_page(store.conn(), Resource::Message, &query).unwrap_err();
        assert!(matches!(err, ListError::UnknownCursor { .. }), "{err}");
    }

    /// SQLite gives a new row the largest rowid plus one, which after the newest row
    /// is deleted is the deleted row's: a contact created after that delete, on the
    /// same `created_at`, could not be reached from the deleted one's cursor in either
    /// direction (found by a black-box probe).
    #[test]
    fn a_new_row_never_takes_a_deleted_rows_place() {
        let mut store = Store::open_in_memory().unwrap();
        let apply = |store: &mut Store, event: &str, kind: &str, id: &str| {
            let body = json!({"id": event, "type": kind,
                              "payload": {"id": id, "created_at": 100}});
            store.apply(body.to_string().as_bytes(), 0).unwrap();
        };
        apply(&mut store, "e1", "contact.created", "x1");
        apply(&mut store, "e2", "contact.created", "x2");
        apply(&mut store, "e3", "contact.deleted", "x2");
        apply(&mut store, "e4", "contact.created", "x3");
        let page = |store: &Store, cursor| {
            let query = ListQuery {
                cursor: Some(cursor),
                ..ListQuery::default()
            };
            ids(&list_page(store.conn(), Resource::Contact, &query).unwrap())
        };
        assert_eq!(page(&store, Cursor::Before("x2".into())), ["x3"]);
        assert_eq!(page(&store, Cursor::After("x2".into())), ["x1"]);
        let all = list(store.conn(), Resource::Contact, &ListQuery::default()).unwrap();
        let all: Vec<&str> = all.iter().map(|o| o["id"].as_str().unwrap()).collect();
        assert_eq!(all, ["x3", "x1"]);

        // The same after a rebuild, which replays the log into emptied tables.
        let before = store.snapshot().unwrap();
        crate::rebuild::rebuild(&mut store, |_, _| std::ops::ControlFlow::Continue(())).unwrap();
        assert_eq!(store.snapshot().unwrap(), before);
        assert_eq!(page(&store, Cursor::Before("x2".into())), ["x3"]);
    }

    /// Protocol's examples list group members by username alone: `--group` and
    /// `--contact` found only members listed with an id, though a contact's delete
    /// removes both (found by a black-box probe).
    #[test]
    fn members_listed_by_username_are_found_by_the_filters() {
        let mut store = Store::open_in_memory().unwrap();
        for body in [
            json!({"id": "e1", "type": "contact.created",
                   "payload": {"id": "k1", "username": "KevinMcCallister"}}),
            json!({"id": "e2", "type": "contact.created",
                   "payload": {"id": "k2", "username": "Buzz"}}),
            json!({"id": "e3", "type": "contact.created",
                   "payload": {"id": "k3", "username": "Kate"}}),
            json!({"id": "e4", "type": "group.created", "payload": {"id": "g1", "contacts": [
                {"username": "KevinMcCallister"}, {"id": "k2"}, {"id": "other", "username": "Kate"}]}}),
            json!({"id": "e5", "type": "group.created", "payload": {"id": "g2", "contacts": [
                {"id": "k1", "username": "KevinMcCallister"}]}}),
        ] {
            store.apply(body.to_string().as_bytes(), 0).unwrap();
        }
        let found = |resource, query: ListQuery| -> Vec<String> {
            let mut ids: Vec<String> = list(store.conn(), resource, &query)
                .unwrap()
                .iter()
                .map(|o| o["id"].as_str().unwrap().to_owned())
                .collect();
            ids.sort();
            ids
        };
        let group = |g: &str| ListQuery {
            group: Some(g.into()),
            ..ListQuery::default()
        };
        let contact = |c: &str| ListQuery {
            contact: Some(c.into()),
            ..ListQuery::default()
        };
        // Kate is listed with another id: not her.
        assert_eq!(found(Resource::Contact, group("g1")), ["k1", "k2"]);
        assert_eq!(found(Resource::Contact, group("g2")), ["k1"]);
        assert_eq!(found(Resource::Group, contact("k1")), ["g1", "g2"]);
        assert_eq!(found(Resource::Group, contact("k2")), ["g1"]);
        assert!(found(Resource::Group, contact("k3")).is_empty());
        assert_eq!(found(Resource::Group, contact("other")), ["g1"]);
    }

    #[test]
    fn unknown_cursors_and_flags() {
        let store = sample();
        let err = list_page(
            store.conn(),
            Resource::Message,
            &ListQuery {
                cursor: Some(Cursor::After("nope".into())),
                ..ListQuery::default()
            },
        )
        .unwrap_err();
        assert!(matches!(err, ListError::UnknownCursor { .. }), "{err}");
        let muted = |muted| {
            list(
                store.conn(),
                Resource::Conversation,
                &ListQuery {
                    muted: Some(muted),
                    ..ListQuery::default()
                },
            )
            .unwrap()
            .len()
        };
        assert_eq!((muted(true), muted(false)), (1, 0));
    }

    /// The statements of one read see one state of the database, whatever another
    /// connection commits meanwhile; inside the caller's transaction, the caller's.
    #[test]
    fn a_read_of_several_statements_sees_one_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("m.db");
        let mut writer = Store::open(&db).unwrap();
        let reader = Store::open_read_only(&db).unwrap();
        let count = |conn: &Connection| -> i64 {
            conn.query_row("SELECT COUNT(*) FROM events", [], |row| row.get(0))
                .unwrap()
        };
        let mut n = 0;
        let mut write = |writer: &mut Store| {
            n += 1;
            let body =
                format!(r#"{{"id":"e{n}","type":"contact.created","payload":{{"id":"c{n}"}}}}"#);
            writer.apply(body.as_bytes(), 1).unwrap();
        };
        let (before, after) = one_snapshot(reader.conn(), |conn| {
            let before = count(conn);
            write(&mut writer);
            Ok::<_, StoreError>((before, count(conn)))
        })
        .unwrap();
        assert_eq!((before, after), (0, 0));
        assert_eq!(count(reader.conn()), 1, "a new read sees the commit");
        let snapshot = reader.conn().unchecked_transaction().unwrap();
        let first = count(&snapshot);
        write(&mut writer);
        let inner = one_snapshot(&snapshot, |conn| Ok::<_, StoreError>(count(conn))).unwrap();
        assert_eq!((first, inner), (1, 1), "the caller's snapshot");
        drop(snapshot);
        let stats = stats(reader.conn(), None).unwrap();
        assert_eq!(stats["events"]["by_outcome"]["applied"], 2);
    }

    /// `events --type` walks the log's index on `type`, not the whole log.
    /// Every list is read in its order from an index, never sorted whole (500,000
    /// attachments took 0.33 s a page; migration 0009).
    #[test]
    fn lists_read_their_order_from_an_index() {
        let store = sample();
        for table in [
            "contacts",
            "conversations",
            "messages",
            "groups",
            "attachments",
        ] {
            for order in ["DESC", "ASC"] {
                let sql = format!(
                    "EXPLAIN QUERY PLAN SELECT id, data FROM {table}
                     ORDER BY created_at {order}, rowid {order} LIMIT 20"
                );
                let plan: Vec<String> = store
                    .conn()
                    .prepare(&sql)
                    .unwrap()
                    .query_map([], |row| row.get(3))
                    .unwrap()
                    .map(Result::unwrap)
                    .collect();
                assert!(
                    !plan.concat().contains("TEMP B-TREE"),
                    "{table} {order}: {plan:?}"
                );
            }
        }
    }

    /// A flag filter set to `true` reads the partial index of the rows with that flag
    /// (migration 0014), in list order: it walked the order index and looked up every
    /// row, a scan of the table for a value few rows have (84 ms a page at 300,001
    /// conversations, found by a review).
    #[test]
    fn flags_set_read_their_index() {
        let store = sample();
        for (table, condition, index) in [
            ("conversations", MUTED[1], "conversations_muted"),
            ("conversations", PINNED[1], "conversations_pinned"),
            ("conversations", ARCHIVED[1], "conversations_archived"),
            ("groups", ARCHIVED[1], "groups_archived"),
        ] {
            for (order, segment) in [("DESC", ""), ("DESC", " AND created_at < 5"), ("ASC", "")] {
                let sql = format!(
                    "EXPLAIN QUERY PLAN SELECT id, data FROM {table} WHERE {condition}{segment}
                     ORDER BY created_at {order}, rowid {order} LIMIT 20"
                );
                let plan: String = store
                    .conn()
                    .prepare(&sql)
                    .unwrap()
                    .query_map([], |row| row.get::<_, String>(3))
                    .unwrap()
                    .map(Result::unwrap)
                    .collect::<Vec<_>>()
                    .join("; ");
                assert!(
                    plan.contains(index) && !plan.contains("TEMP B-TREE"),
                    "{table} {condition}{segment} {order}: {plan}"
                );
            }
        }
    }

    /// Attachments by conversation are a range of their own index, in list order
    /// (they read every message id of the conversation for each page before
    /// migration 0012).
    #[test]
    fn attachments_by_conversation_read_their_index() {
        let store = sample();
        for order in ["DESC", "ASC"] {
            let sql = format!(
                "EXPLAIN QUERY PLAN SELECT id, data FROM attachments WHERE conversation_id = ?1
                 ORDER BY created_at {order}, rowid {order} LIMIT 20"
            );
            let plan: Vec<String> = store
                .conn()
                .prepare(&sql)
                .unwrap()
                .query_map(["c1"], |row| row.get(3))
                .unwrap()
                .map(Result::unwrap)
                .collect();
            assert_eq!(plan.len(), 1, "{plan:?}");
            assert!(
                plan[0].contains("INDEX attachments_conversation_created"),
                "{plan:?}"
            );
        }
    }
}
