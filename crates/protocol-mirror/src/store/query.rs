//! Read queries: the one query layer behind the CLI (and the read API).

use std::path::Path;

use protocol_types::Resource;
use rusqlite::types::{Value as SqlValue, ValueRef};
use rusqlite::{Connection, OptionalExtension, params_from_iter};
use serde_json::{Map, Value, json};

use super::{Context, Result, StoreError, rows};

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
fn one_snapshot<T, E: From<StoreError>>(
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
    const MAX: usize = 64;
    match id.char_indices().nth(MAX) {
        None => format!("{id:?}"),
        Some((end, _)) => format!("{:?}… ({} bytes)", &id[..end], id.len()),
    }
}

impl ListQuery {
    /// Refuses a filter that does not apply to `resource`, naming it.
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
/// took 3 GB). Returns how many there were. An error from `each` (a closed output)
/// stops the list and is returned as [`ListError::Output`].
pub fn list_each(
    conn: &Connection,
    resource: Resource,
    query: &ListQuery,
    mut each: impl FnMut(&Value) -> std::io::Result<()>,
) -> std::result::Result<usize, ListError> {
    one_snapshot(conn, |snapshot| {
        let mut left = query.limit.unwrap_or(usize::MAX);
        let mut page_query = ListQuery {
            limit: Some(left.min(LIST_EACH_PAGE)),
            cursor: None,
            ..query.clone()
        };
        let mut count = 0;
        while left > 0 {
            let mut last = None;
            let mut read = 0;
            let has_more = list_page_each(snapshot, resource, &page_query, |object| {
                each(&object)?;
                read += 1;
                last = object["id"].as_str().map(str::to_owned);
                Ok(())
            })?;
            count += read;
            left -= read;
            match last {
                Some(last) if has_more => {
                    page_query.cursor = Some(Cursor::After(last));
                    page_query.limit = Some(left.min(LIST_EACH_PAGE));
                }
                _ => break,
            }
        }
        Ok(count)
    })
}

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
    let mut flag = |condition: &'static str, value: Option<bool>| {
        if let Some(value) = value {
            conditions.push(condition);
            values.push(SqlValue::Integer(i64::from(value)));
        }
    };
    flag("COALESCE(is_muted, 0) = ?", query.muted);
    flag("COALESCE(is_pinned, 0) = ?", query.pinned);
    flag("(archived_at IS NOT NULL) = ?", query.archived);
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

/// A message found by [`search`].
#[derive(Debug, Clone, PartialEq)]
pub struct SearchHit {
    /// The message, as `get` prints it.
    pub message: Value,
    /// The matching part of its text, matches between `open` and `close` markers.
    pub snippet: String,
}

/// Why a search failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SearchError {
    /// A raw FTS5 query that SQLite could not parse.
    #[error("invalid full-text query: {0}")]
    InvalidQuery(String),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Turns user text into an FTS5 query that matches every word, literally: each
/// whitespace-separated token becomes a quoted string (quotes doubled), so FTS
/// operators and stray quotes are just text.
pub fn literal_fts_query(text: &str) -> String {
    text.split_whitespace()
        .map(|token| format!("\"{}\"", token.replace('"', "\"\"")))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Full-text search over message text, best matches first. With `raw`, `text` is
/// FTS5 query syntax (`AND`, `OR`, `NEAR`, `prefix*`, ...); otherwise every word must
/// appear, literally. With `markers`, each hit has a snippet of its text with the
/// matches between them; without, snippets are empty (not computed).
///
/// Snippets are made for the hits returned only (in the query that sorts the matches
/// they were made for every match: `search hotel` over 10,000 matches made 10,000).
/// FTS5's snippet takes time that grows with the square of a text's matches (one
/// 160 KB message of 20,000 matches: 3.5 s), so a text over [`SNIPPET_MAX_BYTES`]
/// (or one holding a NUL, where FTS5's snippet stops), and any hit of a prefix query
/// (which FTS5 expands again for each snippet), gets a plain one instead: the words
/// around the first place holding most of the query's words (compared as the index
/// folds them), or the text's start.
pub fn search(
    conn: &Connection,
    text: &str,
    raw: bool,
    conversation: Option<&str>,
    limit: usize,
    markers: Option<(&str, &str)>,
) -> std::result::Result<Vec<SearchHit>, SearchError> {
    one_snapshot(conn, |conn| {
        search_in(conn, text, raw, conversation, limit, markers)
    })
}

/// [`search`] on `conn` as it is (in the caller's snapshot).
fn search_in(
    conn: &Connection,
    text: &str,
    raw: bool,
    conversation: Option<&str>,
    limit: usize,
    markers: Option<(&str, &str)>,
) -> std::result::Result<Vec<SearchHit>, SearchError> {
    let query = if raw {
        text.to_owned()
    } else {
        literal_fts_query(text)
    };
    if query.trim().is_empty() {
        return Ok(Vec::new());
    }
    // Ranked in the index alone, ties by arrival: only the hits returned are read
    // from `messages` (joined for every match, a common word's 200,000 matches read
    // 200,000 messages, and took 0.4-0.6 s). A conversation's messages are a set
    // looked up for each match.
    let sql = "SELECT rowid FROM messages_fts
               WHERE messages_fts MATCH ?1
                 AND (?2 IS NULL
                      OR rowid IN (SELECT rowid FROM messages WHERE conversation_id = ?2))
               ORDER BY bm25(messages_fts), rowid
               LIMIT ?3";
    let rowids = conn
        .prepare_cached(sql)
        .and_then(|mut stmt| {
            stmt.query_map(
                rusqlite::params![query, conversation, limit as i64],
                |row| row.get::<_, i64>(0),
            )?
            .collect::<rusqlite::Result<Vec<i64>>>()
        })
        .map_err(|e| search_error(e, "searching"))?;
    // Both reads are on one snapshot (see [`search`]): every hit has its row.
    let found = rowids
        .into_iter()
        .map(|rowid| {
            conn.prepare_cached("SELECT id, data FROM messages WHERE rowid = ?1")
                .and_then(|mut stmt| {
                    stmt.query_row([rowid], |row| {
                        Ok((rowid, row.get::<_, String>(0)?, row.get::<_, String>(1)?))
                    })
                })
                .map_err(|e| search_error(e, "reading a search hit"))
        })
        .collect::<std::result::Result<Vec<(i64, String, String)>, SearchError>>()?;
    found
        .into_iter()
        .map(|(rowid, id, data)| {
            let message = rows::output(conn, Resource::Message, &id, &data)?;
            let snippet = match markers {
                None => String::new(),
                Some(markers) => {
                    let text = message["message"].as_str().unwrap_or_default();
                    // FTS5's snippet also stops at a NUL in the text (words went
                    // missing around it), and it expands a prefix query again for
                    // every hit (`w1*`, 11,000 words: up to 1.7 s a snippet).
                    if text.len() > SNIPPET_MAX_BYTES
                        || text.contains('\0')
                        || (raw && query.contains('*'))
                    {
                        plain_snippet(text, &query, markers)
                    } else {
                        fts_snippet(conn, &query, rowid, markers)?
                    }
                }
            };
            Ok(SearchHit { message, snippet })
        })
        .collect()
}

/// The longest message text whose snippet FTS5 makes (see [`search`]).
pub const SNIPPET_MAX_BYTES: usize = 8 * 1024;

/// A query FTS5 could not parse is the caller's mistake; anything else the store's.
fn search_error(error: rusqlite::Error, context: &'static str) -> SearchError {
    match error {
        rusqlite::Error::SqliteFailure(e, Some(message))
            if e.code == rusqlite::ErrorCode::Unknown =>
        {
            SearchError::InvalidQuery(message)
        }
        source => StoreError::Sqlite { context, source }.into(),
    }
}

/// FTS5's snippet of message `rowid` for `query`: up to 12 tokens around the best
/// matches, each between `markers`.
fn fts_snippet(
    conn: &Connection,
    query: &str,
    rowid: i64,
    markers: (&str, &str),
) -> std::result::Result<String, SearchError> {
    conn.prepare_cached(
        "SELECT snippet(messages_fts, 0, ?3, ?4, '…', 12) FROM messages_fts
         WHERE messages_fts MATCH ?1 AND rowid = ?2",
    )
    .and_then(|mut stmt| {
        stmt.query_row(
            rusqlite::params![query, rowid, markers.0, markers.1],
            |row| row.get::<_, Option<String>>(0),
        )
        .optional()
    })
    .map(|snippet| snippet.flatten().unwrap_or_default())
    .map_err(|e| search_error(e, "making a snippet"))
}

/// The words of `text` as FTS5's `unicode61 remove_diacritics 2` tokenizer sees them,
/// near enough: runs of letters and digits, each with its byte range in `text`, and
/// folded (lower case, diacritics removed: `Café` is `cafe`).
fn folded_words(text: &str) -> impl Iterator<Item = (std::ops::Range<usize>, String)> + '_ {
    use unicode_normalization::UnicodeNormalization;
    let mut words = Vec::new();
    let mut start = None;
    for (at, c) in text.char_indices().chain([(text.len(), ' ')]) {
        // A combining mark belongs to the letter before it (`cafe` + U+0301 is `café`).
        let in_word = c.is_alphanumeric()
            || (start.is_some() && unicode_normalization::char::is_combining_mark(c));
        match (in_word, start) {
            (true, None) => start = Some(at),
            (false, Some(from)) => {
                words.push(from..at);
                start = None;
            }
            _ => {}
        }
    }
    words.into_iter().map(move |range| {
        let folded = text[range.clone()]
            .nfd()
            .filter(|c| !unicode_normalization::char::is_combining_mark(*c))
            .flat_map(char::to_lowercase)
            .collect();
        (range, folded)
    })
}

/// A snippet made in one pass over a long `text`: about 12 words around the first
/// place where most of the phrases of `query` appear, every word of the query in
/// them between `markers`; the text's first words when none does. Words compare as FTS5's
/// tokenizer splits and folds them ([`folded_words`]: `don't` holds `don`, `e-mail`
/// holds `mail`, `café` is `cafe`), and only the word is marked (`e-[mail]`, as FTS5's
/// own snippets do); a query word ending in `*` (a prefix) marks the words it begins;
/// a column filter (`message:` or `{message}:`), the operators and `NEAR`'s distance
/// are not words of the query.
fn plain_snippet(text: &str, query: &str, markers: (&str, &str)) -> String {
    const AROUND: usize = 6;
    let phrases = query_phrases(query);
    let tokens: Vec<&str> = text.split_whitespace().collect();
    // Which phrases each token holds (one bit each, the 64th for any after it); the
    // snippet is centred on the first token whose neighbourhood holds the most of them,
    // as FTS5 picks the window with the most phrases (a lone first word drew the
    // snippet away from a phrase of two words further on).
    let held: Vec<u64> = tokens
        .iter()
        .map(|token| {
            phrase_marks(token, &phrases)
                .into_iter()
                .fold(0, |bits, (_, phrase)| bits | 1 << phrase.min(63))
        })
        .collect();
    let around = |i: usize| {
        held[i.saturating_sub(AROUND)..(i + AROUND).min(held.len())]
            .iter()
            .fold(0u64, |bits, b| bits | b)
            .count_ones()
    };
    // The most phrases; of those, the first.
    let best = (0..tokens.len())
        .filter(|&i| held[i] != 0)
        .max_by_key(|&i| (around(i), std::cmp::Reverse(i)));
    let start = best.map_or(0, |i| i.saturating_sub(AROUND));
    let end = (start + 2 * AROUND).min(tokens.len());
    let mut snippet = String::new();
    if start > 0 {
        snippet.push('…');
    }
    for (i, token) in tokens[start..end].iter().enumerate() {
        if i > 0 || start > 0 {
            snippet.push(' ');
        }
        let mut from = 0;
        for (mark, _) in phrase_marks(token, &phrases) {
            snippet.push_str(&token[from..mark.start]);
            snippet.push_str(markers.0);
            snippet.push_str(&token[mark.clone()]);
            snippet.push_str(markers.1);
            from = mark.end;
        }
        snippet.push_str(&token[from..]);
    }
    if end < tokens.len() {
        snippet.push_str(" …");
    }
    snippet
}

/// A phrase of a query, as [`plain_snippet`] looks for it: its folded words, and
/// whether its last word is a prefix.
type Phrase = (Vec<String>, bool);

/// The phrases of an FTS5 query: each whitespace-separated word of it is a phrase of
/// its words, as `literal_fts_query` makes them (`e-mail` is the phrase `e mail`),
/// without a column filter, the operators, the parentheses of a group or of `NEAR`,
/// or `NEAR`'s distance (`NEAR(a b, 5)` holds the phrases `a` and `b`).
fn query_phrases(query: &str) -> Vec<Phrase> {
    let mut phrases = Vec::new();
    let mut after_comma = false;
    for chunk in query.split_whitespace() {
        let chunk = chunk.rsplit_once(':').map_or(chunk, |(_, after)| after);
        let chunk = chunk.strip_prefix("NEAR(").unwrap_or(chunk);
        let chunk = chunk.trim_start_matches(['(', '^']);
        let bare = chunk.trim_end_matches([')', ',']);
        let distance = after_comma && !bare.is_empty() && bare.bytes().all(|b| b.is_ascii_digit());
        after_comma = chunk.ends_with(',');
        if distance || matches!(bare, "AND" | "OR" | "NOT") {
            continue;
        }
        let words: Vec<String> = folded_words(bare).map(|(_, word)| word).collect();
        if !words.is_empty() {
            phrases.push((words, bare.ends_with('*')));
        }
    }
    phrases
}

/// Where the phrases are in one whitespace-separated `token` of a text, as FTS5 marks
/// them: `e-mail` searched for is `[e-mail]`, `e mail` is `[e]-[mail]`, `mail` alone
/// `e-[mail]`, `ca*` in `café-au-lait` is `[café]-au-lait`.
/// Each with the index of the phrase it is.
fn phrase_marks(token: &str, phrases: &[Phrase]) -> Vec<(std::ops::Range<usize>, usize)> {
    let words: Vec<_> = folded_words(token).collect();
    let mut marks = Vec::new();
    let mut at = 0;
    while at < words.len() {
        let found = phrases.iter().enumerate().find(|(_, (phrase, prefix))| {
            words.len() - at >= phrase.len()
                && words[at..at + phrase.len()]
                    .iter()
                    .zip(phrase.iter())
                    .enumerate()
                    .all(|(k, ((_, word), wanted))| {
                        if *prefix && k + 1 == phrase.len() {
                            word.starts_with(wanted.as_str())
                        } else {
                            word == wanted
                        }
                    })
        });
        match found {
            Some((index, (phrase, _))) => {
                marks.push((words[at].0.start..words[at + phrase.len() - 1].0.end, index));
                at += phrase.len();
            }
            None => at += 1,
        }
    }
    marks
}

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
    /// Only this type string.
    pub event_type: Option<String>,
    /// Only this outcome; `duplicate` stands for the events delivered again (a
    /// redelivery is not logged apart: its event's `duplicates` counts it).
    pub outcome: Option<String>,
    /// Only events received at or after this time (Unix seconds).
    pub since: Option<i64>,
    /// Only events after this sequence number (for `--follow`).
    pub after_seq: Option<i64>,
    /// At most this many (the newest).
    pub limit: Option<usize>,
}

/// Appends ` WHERE c1 AND c2 ...` to `sql`, if there are any conditions.
fn push_where(sql: &mut String, conditions: &[&str]) {
    if !conditions.is_empty() {
        sql.push_str(" WHERE ");
        sql.push_str(&conditions.join(" AND "));
    }
}

/// The sequence number of the newest event in the log (0 when it is empty).
pub fn last_seq(conn: &Connection) -> Result<i64> {
    Ok(super::log::Log::next_seq(conn)? - 1)
}

/// The event log, newest first.
///
/// Only the filters given become conditions, so that `--type` walks the log's index
/// on `type` (newest first, no sort) instead of scanning the whole log for a rare
/// type: a condition like `?1 IS NULL OR type = ?1` can use no index.
pub fn events(conn: &Connection, query: &EventsQuery) -> Result<Vec<EventRecord>> {
    // Nothing received at or after `since` (a time to come, or a typo): said from the
    // index on the time at once, where the newest-first walk read the whole log.
    if let Some(since) = query.since {
        let newest: Option<i64> = conn
            .query_row("SELECT MAX(received_at) FROM events", [], |row| row.get(0))
            .context("reading the event log")?;
        if newest.is_none_or(|newest| newest < since) {
            return Ok(Vec::new());
        }
    }
    let (sql, values) = events_statement(query);
    conn.prepare_cached(&sql)
        .and_then(|mut stmt| {
            stmt.query_map(params_from_iter(values), |row| {
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
            })?
            .collect()
        })
        .context("reading the event log")
}

/// The SQL of `events` for `query`, and its parameters.
fn events_statement(query: &EventsQuery) -> (String, Vec<SqlValue>) {
    let mut conditions: Vec<&str> = Vec::new();
    let mut values: Vec<SqlValue> = Vec::new();
    if let Some(event_type) = &query.event_type {
        conditions.push("type = ?");
        values.push(SqlValue::Text(event_type.clone()));
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
    let mut sql = String::from(
        "SELECT seq, event_id, type, object_id, outcome, error, received_at, cascaded,
                duplicates, source
         FROM events",
    );
    push_where(&mut sql, &conditions);
    sql.push_str(" ORDER BY seq DESC LIMIT ?");
    values.push(SqlValue::Integer(
        query.limit.map_or(-1, |l| l.min(i64::MAX as usize) as i64),
    ));
    (sql, values)
}

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
    let (first, last) = conn
        .query_row(
            "SELECT MIN(received_at), MAX(received_at) FROM events",
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
    let size = |suffix: &str| -> Option<u64> {
        Some(std::fs::metadata(crate::beside(database?, suffix)).map_or(0, |m| m.len()))
    };
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
        "database_bytes": size(""),
        "wal_bytes": size("-wal"),
    }))
}

/// The result of a `sql` statement.
#[derive(Debug, Clone, PartialEq)]
pub struct SqlRows {
    /// Column names.
    pub columns: Vec<String>,
    /// Rows of JSON values (integers, reals, text, null; blobs as hex strings).
    pub rows: Vec<Vec<Value>>,
}

/// Why a `sql` statement was refused or failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SqlError {
    /// The statement would write.
    #[error(
        "only read-only statements are allowed (SELECT, read-only PRAGMAs, EXPLAIN): the replica is written by the daemon alone"
    )]
    NotReadOnly,
    /// The statement reads nothing: a transaction command (`BEGIN`, `SAVEPOINT`), a
    /// PRAGMA that sets, `ATTACH`. It would print an empty table and succeed.
    #[error(
        "the statement returns no rows: `sql` runs queries only (SELECT, read-only PRAGMAs, EXPLAIN)"
    )]
    NotAQuery,
    /// There is no statement to run.
    #[error("no SQL statement given: pass one, e.g. \"SELECT COUNT(*) FROM messages\"")]
    Empty,
    /// SQLite could not prepare the statement (a syntax error, an unknown table or
    /// column, several statements, parameters with no values): a mistake in it.
    #[error("{0}")]
    Invalid(String),
    /// SQLite failed while running the statement.
    #[error("{0}")]
    Sqlite(String),
    /// Writing a row out failed (see [`sql_each`]).
    #[error(transparent)]
    Output(std::io::Error),
}

/// Runs one read-only statement.
pub fn sql(conn: &Connection, statement: &str) -> std::result::Result<SqlRows, SqlError> {
    let mut rows = Vec::new();
    let columns = sql_each(conn, statement, |_, row| {
        rows.push(row);
        Ok(())
    })?;
    Ok(SqlRows { columns, rows })
}

/// [`sql`] a row at a time, in constant memory: `row` is called with the column names
/// and each row as it is read; the column names are returned (also when there was
/// no row). An error from `row` (a closed output) stops the statement and is
/// returned as [`SqlError::Output`].
pub fn sql_each(
    conn: &Connection,
    statement: &str,
    mut row: impl FnMut(&[String], Vec<Value>) -> std::io::Result<()>,
) -> std::result::Result<Vec<String>, SqlError> {
    let sqlite = |e: rusqlite::Error| match e {
        // What SQLite says of a statement that is only a comment.
        rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::ApiMisuse => {
            SqlError::Empty
        }
        // `load_extension()` with extension loading off (SQLite's generic error and
        // a bare "not authorized", which was exit 3): refused as a write is.
        rusqlite::Error::SqliteFailure(_, Some(message)) if message == "not authorized" => {
            SqlError::NotReadOnly
        }
        other => SqlError::Sqlite(other.to_string()),
    };
    if statement.trim().trim_end_matches(';').trim().is_empty() {
        return Err(SqlError::Empty);
    }
    let invalid = |e: rusqlite::Error| match e {
        rusqlite::Error::MultipleStatement => {
            SqlError::Invalid("give one statement at a time (this has several)".into())
        }
        e => match sqlite(e) {
            SqlError::Sqlite(message) => SqlError::Invalid(message),
            other => other,
        },
    };
    let mut stmt = conn.prepare(statement).map_err(invalid)?;
    // `EXPLAIN` of a write runs nothing (SQLite reports the statement it explains).
    if !stmt.readonly() && stmt.is_explain() == 0 {
        return Err(SqlError::NotReadOnly);
    }
    if stmt.column_count() == 0 {
        return Err(SqlError::NotAQuery);
    }
    if stmt.parameter_count() > 0 {
        return Err(SqlError::Invalid(format!(
            "the statement has {} parameter(s) (`?`, `:name`) and nothing gives them values; \
             write the values into it",
            stmt.parameter_count()
        )));
    }
    let names: Vec<String> = stmt.column_names().into_iter().map(str::to_owned).collect();
    let width = names.len();
    let mut rows = stmt.query([]).map_err(sqlite)?;
    while let Some(found) = rows.next().map_err(sqlite)? {
        let mut values = Vec::with_capacity(width);
        for i in 0..width {
            values.push(match found.get_ref(i).map_err(sqlite)? {
                ValueRef::Null => Value::Null,
                ValueRef::Integer(n) => n.into(),
                ValueRef::Real(x) => x.into(),
                ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned().into(),
                ValueRef::Blob(b) => b
                    .iter()
                    .map(|x| format!("{x:02x}"))
                    .collect::<String>()
                    .into(),
            });
        }
        row(&names, values).map_err(SqlError::Output)?;
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

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

    fn sample() -> Store {
        let mut store = Store::open_in_memory().unwrap();
        for line in include_str!("../../../../tests/data/sample-events.ndjson").lines() {
            store.apply(line.as_bytes(), 100).unwrap();
        }
        store
    }

    /// Snippets are made for the hits returned, by FTS5 for ordinary texts; a long
    /// text with many matches (FTS5's snippet grows with their square) gets a plain
    /// one at once; without markers, none is made.
    #[test]
    fn snippets_of_long_texts_are_made_in_one_pass() {
        let mut store = Store::open_in_memory().unwrap();
        let long = format!(
            "{}the needle is here {}",
            "q r ".repeat(20_000),
            "q r ".repeat(10)
        );
        for (id, text) in [("short", "a q in a haystack"), ("long", long.as_str())] {
            let body = serde_json::json!({"id": format!("e-{id}"), "type": "message.created",
                "payload": {"id": id, "message": text}});
            store.apply(body.to_string().as_bytes(), 1).unwrap();
        }
        let started = std::time::Instant::now();
        let hits = search(store.conn(), "needle", false, None, 10, Some(("[", "]"))).unwrap();
        assert_eq!(hits.len(), 1);
        assert_eq!(hits[0].snippet, "… r q r q r the [needle] is here q r q …");
        let hits = search(store.conn(), "q", false, None, 10, Some(("[", "]"))).unwrap();
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
        let snippets: Vec<(&str, &str)> = hits
            .iter()
            .map(|h| (h.message["id"].as_str().unwrap(), h.snippet.as_str()))
            .collect();
        assert!(
            snippets.contains(&("short", "a [q] in a haystack")),
            "{snippets:?}"
        );
        assert!(
            snippets.contains(&("long", "[q] r [q] r [q] r [q] r [q] r [q] r …")),
            "{snippets:?}"
        );
        let hits = search(store.conn(), "q", false, None, 10, None).unwrap();
        assert!(hits.iter().all(|h| h.snippet.is_empty()));
        // A prefix query: the first word it begins.
        let hits = search(store.conn(), "need*", true, None, 10, Some(("[", "]"))).unwrap();
        assert_eq!(hits[0].snippet, "… r q r q r the [needle] is here q r q …");
    }

    /// Best matches first, ties in arrival order; `--conversation` keeps its own
    /// messages only; a message deleted is not found.
    #[test]
    fn search_ranks_ties_by_arrival_and_filters_by_conversation() {
        let mut store = Store::open_in_memory().unwrap();
        for (id, conversation, text) in [
            ("m-b", "c1", "lunch at noon today"),
            ("m-a", "c2", "lunch at noon today"),
            ("m-c", "c1", "lunch lunch lunch today"),
            ("m-d", "c2", "nothing to see"),
        ] {
            let body = serde_json::json!({"id": format!("e-{id}"), "type": "message.created",
                "payload": {"id": id, "conversation_id": conversation, "message": text}});
            store.apply(body.to_string().as_bytes(), 1).unwrap();
        }
        let ids = |store: &Store, conversation: Option<&str>, limit: usize| -> Vec<String> {
            search(store.conn(), "lunch", false, conversation, limit, None)
                .unwrap()
                .into_iter()
                .map(|hit| hit.message["id"].as_str().unwrap().to_owned())
                .collect()
        };
        assert_eq!(ids(&store, None, 10), ["m-c", "m-b", "m-a"]);
        assert_eq!(ids(&store, None, 2), ["m-c", "m-b"]);
        assert_eq!(ids(&store, Some("c2"), 10), ["m-a"]);
        assert_eq!(ids(&store, Some("c1"), 10), ["m-c", "m-b"]);
        assert!(ids(&store, Some("c-none"), 10).is_empty());
        let body = serde_json::json!({"id": "e-del", "type": "message.deleted",
            "payload": {"id": "m-c"}});
        store.apply(body.to_string().as_bytes(), 1).unwrap();
        assert_eq!(ids(&store, None, 10), ["m-b", "m-a"]);
    }

    /// FTS5's snippet stops at a NUL in the text (`[alpha]` alone, or words run
    /// together): such a text gets the plain snippet, every word kept.
    #[test]
    fn a_text_holding_a_nul_keeps_its_words_in_the_snippet() {
        let mut store = Store::open_in_memory().unwrap();
        let body = serde_json::json!({"id": "e-nul", "type": "message.created",
            "payload": {"id": "m", "message": "alpha\u{0} beta gamma delta"}});
        store.apply(body.to_string().as_bytes(), 1).unwrap();
        for (word, want) in [
            ("alpha", "[alpha]\u{0} beta gamma delta"),
            ("gamma", "alpha\u{0} beta [gamma] delta"),
        ] {
            let hits = search(store.conn(), word, false, None, 10, Some(("[", "]"))).unwrap();
            assert_eq!(hits.len(), 1, "{word}");
            assert_eq!(hits[0].snippet, want, "{word}");
        }
    }

    /// The plain snippet finds the words FTS5 matched: any case, inside punctuation,
    /// never a column filter's name.
    #[test]
    fn a_plain_snippet_finds_the_words_fts5_matches() {
        let text = "message one two ÅNGSTRÖM e-mail don't end";
        for (text, query, snippet) in [
            (
                text,
                "\"ångström\"",
                "message one two [ÅNGSTRÖM] e-mail don't end",
            ),
            (
                text,
                "message:mail",
                "message one two ÅNGSTRÖM e-[mail] don't end",
            ),
            (
                text,
                "{message}:don AND end",
                "message one two ÅNGSTRÖM e-mail [don]'t [end]",
            ),
            (
                text,
                "NEAR(zzz end)",
                "message one two ÅNGSTRÖM e-mail don't [end]",
            ),
            // Accents and case are folded, as FTS5 folds them.
            (
                text,
                "angstrom",
                "message one two [ÅNGSTRÖM] e-mail don't end",
            ),
            ("un café-au-lait", "CAFE", "un [café]-au-lait"),
            // The words of a query's phrase are marked together; a decomposed accent
            // is part of its word.
            (
                text,
                "e-mail",
                "message one two ÅNGSTRÖM [e-mail] don't end",
            ),
            (
                text,
                "e mail",
                "message one two ÅNGSTRÖM [e]-[mail] don't end",
            ),
            ("un cafe\u{301} noir", "cafe", "un [cafe\u{301}] noir"),
            // A NUL splits words (it is not marked).
            ("before\0after word", "before", "[before]\0after word"),
            // A prefix marks the words it begins, of a phrase its last.
            ("w2 w123 w1", "w1*", "w2 [w123] [w1]"),
            ("x Café-au lait", "\"caf\"*", "x [Café]-au lait"),
            ("xy ab", "(x* OR ab)", "[xy] [ab]"),
            // Every word of the query in the snippet is marked.
            (
                "the hotel was nice, hot water and a house",
                "ho*",
                "the [hotel] was nice, [hot] water and a [house]",
            ),
            (
                "Café au lait at the café",
                "\"caf\"*",
                "[Café] au lait at the [café]",
            ),
            // `NEAR`'s words, not its distance.
            (
                "hot water 5 cups",
                "NEAR(ho* wat*, 5)",
                "[hot] [water] 5 cups",
            ),
            ("hot water 5 cups", "NEAR(hot 5)", "[hot] water [5] cups"),
            // The snippet goes where most of the query's phrases are, not to the
            // first word alone.
            (
                "hotel a b c d e f g h i j k l m n o p q r s t u v w x plaza hotel end",
                "NEAR(plaza hotel, 1)",
                "… s t u v w x [plaza] [hotel] end",
            ),
        ] {
            assert_eq!(plain_snippet(text, query, ("[", "]")), snippet, "{query}");
        }
    }

    #[test]
    fn fts_text_is_quoted_literally() {
        assert_eq!(literal_fts_query("a  b"), r#""a" "b""#);
        assert_eq!(
            literal_fts_query(r#"x" OR 1=1 --"#),
            r#""x""" "OR" "1=1" "--""#
        );
        let store = sample();
        for hostile in [
            r#"""#,
            "NEAR(",
            "meet*",
            "'); DROP TABLE messages; --",
            "AND OR NOT",
        ] {
            search(store.conn(), hostile, false, None, 10, Some(("[", "]"))).unwrap();
        }
        let hits = search(store.conn(), "MEETINGS", false, None, 10, Some(("[", "]"))).unwrap();
        assert_eq!(hits.len(), 1);
        assert!(
            hits[0].snippet.contains("[meetings]"),
            "{}",
            hits[0].snippet
        );
        let err = search(store.conn(), "NEAR(", true, None, 10, Some(("[", "]"))).unwrap_err();
        assert!(matches!(err, SearchError::InvalidQuery(_)), "{err}");
        let hits = search(store.conn(), "meet*", true, None, 10, Some(("", ""))).unwrap();
        assert_eq!(hits.len(), 1);
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
        assert!(
            err.contains("--message does not apply to contacts"),
            "{err}"
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
        ] {
            let query = ListQuery {
                limit,
                ..ListQuery::default()
            };
            let whole = list(store.conn(), Resource::Message, &query).unwrap();
            let mut each = Vec::new();
            let count = list_each(store.conn(), Resource::Message, &query, |o| {
                each.push(o.clone());
                Ok(())
            })
            .unwrap();
            assert_eq!(count, whole.len(), "{limit:?}");
            assert_eq!(each, whole, "{limit:?}");
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
        crate::rebuild::rebuild(&mut store, |_, _| {}).unwrap();
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

    #[test]
    fn sql_refuses_writes() {
        let store = sample();
        assert!(matches!(
            sql(store.conn(), "DELETE FROM messages"),
            Err(SqlError::NotReadOnly)
        ));
        assert!(matches!(
            sql(store.conn(), "select 1; delete from messages"),
            Err(SqlError::Invalid(_))
        ));
        // Explaining a write runs nothing: its plan is printed.
        let messages = || {
            sql(store.conn(), "SELECT COUNT(*) FROM messages")
                .unwrap()
                .rows
        };
        let before = messages();
        for explain in [
            "EXPLAIN QUERY PLAN DELETE FROM messages WHERE id = 'x'",
            "EXPLAIN DELETE FROM messages",
        ] {
            assert!(
                !sql(store.conn(), explain).unwrap().rows.is_empty(),
                "{explain}"
            );
        }
        assert_eq!(messages(), before);
        assert_ne!(before, vec![vec![Value::from(0)]]);
        // Loading an extension is refused as a write is (it said "not authorized").
        assert!(matches!(
            sql(store.conn(), "SELECT load_extension('x')"),
            Err(SqlError::NotReadOnly)
        ));
        // Statements that read nothing are no queries (they printed an empty table).
        for nothing in [
            "BEGIN",
            "SAVEPOINT x",
            "PRAGMA foreign_keys = ON",
            "ATTACH ':memory:' AS other",
        ] {
            assert!(
                matches!(sql(store.conn(), nothing), Err(SqlError::NotAQuery)),
                "{nothing}"
            );
        }
        assert_eq!(
            sql(store.conn(), "PRAGMA foreign_keys")
                .unwrap()
                .columns
                .len(),
            1
        );
        let rows = sql(store.conn(), "SELECT id, created_at FROM contacts").unwrap();
        assert_eq!(rows.columns, ["id", "created_at"]);
        assert_eq!(rows.rows, [[json!("WAz8eIbvDR60rouK"), json!(692233200)]]);
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
        let (sql, values) = events_statement(&EventsQuery {
            outcome: Some("stale".into()),
            event_type: Some("message.created".into()),
            ..EventsQuery::default()
        });
        let events_plan = plan(&sql, values);
        assert!(
            events_plan.contains("events_unusual_outcome"),
            "{events_plan}"
        );
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
            event_type: Some("message.created".into()),
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
        let lines: Vec<&str> = include_str!("../../../../tests/data/sample-events.ndjson")
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

    #[test]
    fn events_of_one_type_use_the_type_index() {
        let store = sample();
        let query = EventsQuery {
            event_type: Some("message.created".into()),
            limit: Some(10),
            ..EventsQuery::default()
        };
        assert_eq!(events(store.conn(), &query).unwrap().len(), 2);
        // The statement `events` ran, planned again.
        let (sql, values) = events_statement(&query);
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
