//! `sql`: one read-only statement of the user's, a row at a time.

use rusqlite::Connection;
use rusqlite::types::ValueRef;
use serde_json::Value;

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
        "only read-only statements are allowed (SELECT, read-only PRAGMAs, EXPLAIN): the replica is written only by the mirror's own commands (serve, import, backfill, rebuild, migrate)"
    )]
    NotReadOnly,
    /// The statement reads nothing: a transaction command (`BEGIN`, `SAVEPOINT`), a
    /// PRAGMA that sets, `ATTACH`. It would print an empty table and succeed.
    #[error(
        "the statement returns no rows: `sql` runs queries only (SELECT, read-only PRAGMAs, EXPLAIN)"
    )]
    NotAQuery,
    /// A PRAGMA given a value (`PRAGMA locking_mode = EXCLUSIVE`): it sets something,
    /// if only on `sql`'s own connection (an exclusive lock there would hold off the
    /// daemon's commits while the statement runs). SQLite counts some such PRAGMAs as
    /// read-only, and they were run.
    // Not "`PRAGMA x` alone reports it": for some (`wal_checkpoint`, `optimize`) the
    // bare form acts too, and is refused as a write (a black-box probe).
    #[error(
        "`PRAGMA {0}` with a value sets something or acts: `sql` only reads (PRAGMAs that \
         only report run with no value, and so do those that take a table or index name, \
         such as `PRAGMA table_info(messages)`)"
    )]
    PragmaSets(String),
    /// `load_extension()`: not a write, and refused all the same.
    #[error("load_extension() is not available: `sql` runs SQLite's own functions only")]
    LoadExtension,
    /// There is no statement to run.
    #[error("no SQL statement given: pass one, e.g. \"SELECT COUNT(*) FROM messages\"")]
    Empty,
    /// SQLite could not prepare the statement (a syntax error, an unknown table or
    /// column, several statements, parameters with no values), or stopped it as it ran
    /// for what it asks (an unknown schema, malformed JSON given to a JSON function,
    /// an integer overflow, a value over SQLite's size limit): a mistake in it.
    #[error("{0}")]
    Invalid(String),
    /// SQLite failed while running the statement.
    #[error("{0}")]
    Sqlite(String),
    /// Writing a row out failed (see [`sql_each`]).
    #[error(transparent)]
    Output(std::io::Error),
}

/// Whether `statement` is `PRAGMA journal_mode` without a value (any case, schema
/// `main.` or not): SQLite counts it as a write, since it may switch the mode, but with
/// no value it only reports it (`wal`), and on the read-only connection nothing could
/// switch it anyway. Users asking whether the replica is in WAL were refused.
fn asks_the_journal_mode(statement: &str) -> bool {
    let words: Vec<String> = statement
        .trim()
        .trim_end_matches(';')
        .split_whitespace()
        .map(str::to_ascii_lowercase)
        .collect();
    matches!(
        words
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .as_slice(),
        ["pragma", "journal_mode" | "main.journal_mode"]
    )
}

/// The PRAGMAs whose value names what they report on (a table, an index, a number of
/// errors to list), which [`prepare_one`] lets through.
const PRAGMAS_ASKING_OF: &[&str] = &[
    "foreign_key_check",
    "foreign_key_list",
    "index_info",
    "index_list",
    "index_xinfo",
    "integrity_check",
    "quick_check",
    "table_info",
    "table_list",
    "table_xinfo",
];

/// Why [`prepare_one`] prepared nothing.
enum NotPrepared {
    /// A PRAGMA given a value (its name), other than one of [`PRAGMAS_ASKING_OF`].
    PragmaSets(String),
    /// Only comments.
    Empty,
    /// More than one statement.
    Several,
    /// A write SQLite could not prepare (`INSERT INTO contacts VALUES (1)`: its error
    /// was a column count, as if the statement only needed mending).
    Writes,
    /// SQLite refused it.
    Sqlite(rusqlite::Error),
}

/// Prepares `statement`, which must be one statement and no PRAGMA given a value, but
/// for [`PRAGMAS_ASKING_OF`]. Told by SQLite's authorizer, which sees past comments
/// and spellings (`PRAGMA main.locking_mode(exclusive)`), and in place for every
/// statement prepared: SQLite carries some PRAGMAs out as it prepares them
/// (`hard_heap_limit = 1` left the connection out of memory). The statements are
/// prepared one at a time, so that a PRAGMA in a second statement is refused as a
/// second statement.
fn prepare_one<'c>(
    conn: &'c Connection,
    statement: &str,
) -> std::result::Result<rusqlite::Statement<'c>, NotPrepared> {
    use rusqlite::fallible_iterator::FallibleIterator;
    use rusqlite::hooks::{AuthAction, AuthContext, Authorization};
    use std::sync::{Arc, Mutex};
    /// What the authorizer saw while the statement was prepared.
    #[derive(Default)]
    struct Heard {
        /// The first PRAGMA given a value that it refused.
        pragma_set: Option<String>,
        /// Whether the statement writes.
        wrote: bool,
    }
    let heard: Arc<Mutex<Heard>> = Arc::default();
    let hearing = heard.clone();
    conn.authorizer(Some(move |context: AuthContext<'_>| {
        let mut heard = hearing.lock().unwrap_or_else(|e| e.into_inner());
        match context.action {
            AuthAction::Pragma {
                pragma_name,
                pragma_value: Some(_),
            } if !PRAGMAS_ASKING_OF.contains(&pragma_name.to_ascii_lowercase().as_str()) => {
                heard
                    .pragma_set
                    .get_or_insert_with(|| pragma_name.to_ascii_lowercase());
                Authorization::Deny
            }
            action => {
                heard.wrote |= is_a_write(&action);
                Authorization::Allow
            }
        }
    }))
    .map_err(NotPrepared::Sqlite)?;
    let mut batch = rusqlite::Batch::new(conn, statement);
    let prepared = match batch.next() {
        Err(error) => {
            let heard = std::mem::take(&mut *heard.lock().unwrap_or_else(|e| e.into_inner()));
            match heard.pragma_set {
                Some(pragma) => Err(NotPrepared::PragmaSets(pragma)),
                None if fails_as_a_write(statement, heard.wrote) => Err(NotPrepared::Writes),
                None => Err(NotPrepared::Sqlite(error)),
            }
        }
        Ok(None) => Err(NotPrepared::Empty),
        Ok(Some(first)) => match batch.next() {
            Ok(None) => Ok(first),
            _ => Err(NotPrepared::Several),
        },
    };
    // Left in place, it would only go on refusing PRAGMA values on this connection.
    let _ = conn.authorizer(None::<fn(AuthContext<'_>) -> Authorization>);
    prepared
}

/// Whether a statement SQLite could not prepare is a write: it says so by its first
/// word (`INSERT INTO no_such_table ...` fails before SQLite tells the authorizer
/// anything), or by the word after its `WITH` clause (`WITH x AS (...) UPDATE
/// messages SET message = 'x'`, which fails at the generated column before the
/// authorizer hears of it: a black-box probe), or the authorizer saw it write
/// (`authorized_a_write`: `WITH ... INSERT`); but an `EXPLAIN` of one is a read, whose
/// mistake is said as SQLite says it (a review).
fn fails_as_a_write(statement: &str, authorized_a_write: bool) -> bool {
    const WRITES: &[&str] = &[
        "insert", "replace", "update", "delete", "create", "drop", "alter", "vacuum", "reindex",
        "analyze",
    ];
    let first = first_word(statement);
    let verb = match first.as_str() {
        "with" => verb_after_with(statement),
        _ => first.clone(),
    };
    first != "explain" && (authorized_a_write || WRITES.contains(&verb.as_str()))
}

/// The word that follows the `WITH` clause `statement` begins with (its common table
/// expressions, each `name [(columns)] AS [[NOT] MATERIALIZED] (...)`), in lower case:
/// the first word, outside parentheses, after a closing parenthesis, but `AS`. Quoted
/// text and comments are skipped; empty if there is none.
fn verb_after_with(statement: &str) -> String {
    let mut chars = statement.chars().peekable();
    let (mut depth, mut after_close) = (0usize, false);
    while let Some(c) = chars.next() {
        match c {
            '\'' | '"' | '`' | '[' => {
                let close = if c == '[' { ']' } else { c };
                for d in chars.by_ref() {
                    if d == close {
                        break;
                    }
                }
            }
            '-' if chars.peek() == Some(&'-') => {
                for d in chars.by_ref() {
                    if d == '\n' {
                        break;
                    }
                }
            }
            '/' if chars.peek() == Some(&'*') => {
                chars.next();
                let mut last = ' ';
                for d in chars.by_ref() {
                    if last == '*' && d == '/' {
                        break;
                    }
                    last = d;
                }
            }
            '(' => depth += 1,
            ')' => {
                depth = depth.saturating_sub(1);
                after_close = depth == 0;
            }
            c if depth == 0 && c.is_ascii_alphabetic() => {
                let mut word = c.to_ascii_lowercase().to_string();
                while let Some(&d) = chars
                    .peek()
                    .filter(|d| d.is_ascii_alphanumeric() || **d == '_')
                {
                    word.push(d.to_ascii_lowercase());
                    chars.next();
                }
                if after_close && word != "as" {
                    return word;
                }
                after_close = false;
            }
            c if depth == 0 && !c.is_whitespace() => after_close = false,
            _ => {}
        }
    }
    String::new()
}

/// The first word of `statement`, in lower case, past white space and comments.
fn first_word(statement: &str) -> String {
    let mut rest = statement;
    loop {
        rest = rest.trim_start();
        if let Some(comment) = rest.strip_prefix("--") {
            rest = comment.split_once('\n').map_or("", |(_, after)| after);
        } else if let Some(comment) = rest.strip_prefix("/*") {
            rest = comment.split_once("*/").map_or("", |(_, after)| after);
        } else {
            break;
        }
    }
    rest.chars()
        .take_while(char::is_ascii_alphabetic)
        .collect::<String>()
        .to_ascii_lowercase()
}

/// Whether an error of `code` is the database's or the machine's, not a statement's.
fn not_the_statements(code: rusqlite::ErrorCode) -> bool {
    use rusqlite::ErrorCode as C;
    matches!(
        code,
        C::DatabaseBusy
            | C::DatabaseLocked
            | C::SystemIoFailure
            | C::DatabaseCorrupt
            | C::NotADatabase
            | C::OutOfMemory
            | C::CannotOpen
            | C::DiskFull
            | C::FileLockingProtocolFailed
    )
}

/// Whether the authorizer's `action` changes the database or its schema.
fn is_a_write(action: &rusqlite::hooks::AuthAction<'_>) -> bool {
    use rusqlite::hooks::AuthAction as A;
    matches!(
        action,
        A::Insert { .. }
            | A::Update { .. }
            | A::Delete { .. }
            | A::CreateIndex { .. }
            | A::CreateTable { .. }
            | A::CreateTempIndex { .. }
            | A::CreateTempTable { .. }
            | A::CreateTempTrigger { .. }
            | A::CreateTempView { .. }
            | A::CreateTrigger { .. }
            | A::CreateView { .. }
            | A::CreateVtable { .. }
            | A::DropIndex { .. }
            | A::DropTable { .. }
            | A::DropTempIndex { .. }
            | A::DropTempTable { .. }
            | A::DropTempTrigger { .. }
            | A::DropTempView { .. }
            | A::DropTrigger { .. }
            | A::DropView { .. }
            | A::DropVtable { .. }
            | A::AlterTable { .. }
            | A::Reindex { .. }
            | A::Analyze { .. }
    )
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
        // a bare "not authorized", which was exit 3).
        rusqlite::Error::SqliteFailure(_, Some(message)) if message == "not authorized" => {
            SqlError::LoadExtension
        }
        // A statement SQLite prepared as a read that writes once it runs
        // (`SELECT * FROM pragma_optimize`, which `PRAGMA optimize` is refused as): the
        // read-only connection stops it at its first write (a black-box probe got
        // "attempt to write a readonly database", exit 3). That code alone: the
        // extended ones of its kind (a WAL this user cannot recover, say) are not
        // the statement's doing.
        rusqlite::Error::SqliteFailure(f, _)
            if f.extended_code == rusqlite::ffi::SQLITE_READONLY =>
        {
            SqlError::NotReadOnly
        }
        // SQLite's plain error, or a value too big, from a statement it prepared:
        // what the statement asks cannot be done (`SELECT * FROM
        // pragma_auto_vacuum(1)`: "unknown database '1'"; `json_extract('{', '$')`;
        // `abs(-9223372036854775808)`), a mistake in it like one found at prepare
        // (a black-box probe got exit 3, a failure). Only those codes: a busy
        // database, damage or an I/O error are not the statement's doing.
        rusqlite::Error::SqliteFailure(f, Some(message))
            if f.extended_code == rusqlite::ffi::SQLITE_ERROR
                || f.code == rusqlite::ErrorCode::TooBig =>
        {
            SqlError::Invalid(message)
        }
        // Damage a read reached partway: said with what to do about it.
        corrupt @ rusqlite::Error::SqliteFailure(f, _)
            if f.code == rusqlite::ErrorCode::DatabaseCorrupt =>
        {
            SqlError::Sqlite(format!("{corrupt} ({})", crate::store::DAMAGED_HINT))
        }
        other => SqlError::Sqlite(other.to_string()),
    };
    if statement.trim().trim_end_matches(';').trim().is_empty() {
        return Err(SqlError::Empty);
    }
    // At prepare, SQLite's errors are the statement's, but for those of the database
    // or the machine (busy, damaged, I/O, memory), which fail the command (exit 3)
    // rather than call it a mistake (they were exit 2: a review).
    let invalid = |e: rusqlite::Error| match e {
        rusqlite::Error::MultipleStatement => {
            SqlError::Invalid("give one statement at a time (this has several)".into())
        }
        rusqlite::Error::SqliteFailure(f, _) if not_the_statements(f.code) => sqlite(e),
        e => match sqlite(e) {
            SqlError::Sqlite(message) => SqlError::Invalid(message),
            other => other,
        },
    };
    let mut stmt = prepare_one(conn, statement).map_err(|e| match e {
        NotPrepared::PragmaSets(pragma) => SqlError::PragmaSets(pragma),
        NotPrepared::Empty => SqlError::Empty,
        NotPrepared::Several => invalid(rusqlite::Error::MultipleStatement),
        NotPrepared::Writes => SqlError::NotReadOnly,
        NotPrepared::Sqlite(e) => invalid(e),
    })?;
    // `EXPLAIN` of a write runs nothing (SQLite reports the statement it explains).
    if !stmt.readonly() && stmt.is_explain() == 0 && !asks_the_journal_mode(statement) {
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
    // A statement SQLite stopped as it ran says so: its words alone ("malformed
    // JSON", "integer overflow") did not say where they came from (a review).
    let ran = |e: rusqlite::Error| match sqlite(e) {
        SqlError::Invalid(message) => {
            SqlError::Invalid(format!("the statement stopped as it ran: {message}"))
        }
        other => other,
    };
    let mut rows = stmt.query([]).map_err(ran)?;
    while let Some(found) = rows.next().map_err(ran)? {
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

    /// A database busy (or damaged, or failing) when the statement is prepared fails
    /// the command, exit 3, not the statement (it was a usage mistake, exit 2: a
    /// review); a statement SQLite cannot read is still one.
    #[test]
    fn a_busy_database_at_prepare_is_no_mistake_of_the_statement() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.db");
        let writer = Connection::open(&path).unwrap();
        writer
            .execute_batch("CREATE TABLE t (x); BEGIN EXCLUSIVE; INSERT INTO t VALUES (1);")
            .unwrap();
        let reader = Connection::open(&path).unwrap();
        reader
            .busy_timeout(std::time::Duration::from_millis(10))
            .unwrap();
        let busy = sql_each(&reader, "SELECT x FROM t", |_, _| Ok(())).unwrap_err();
        assert!(matches!(busy, SqlError::Sqlite(_)), "{busy:?}");
        writer.execute_batch("COMMIT").unwrap();
        let typo = sql_each(&reader, "SELEC x FROM t", |_, _| Ok(())).unwrap_err();
        assert!(matches!(typo, SqlError::Invalid(_)), "{typo:?}");
    }
    use crate::store::query::sample;
    use serde_json::json;

    #[test]
    fn the_verb_after_a_with_clause_is_found() {
        for (statement, verb) in [
            ("WITH x AS (SELECT 1) SELECT * FROM x", "select"),
            ("with x(a, b) as (select 1, 2) update t set a = 1", "update"),
            (
                "WITH a AS NOT MATERIALIZED (SELECT '(') , b AS (SELECT 1) DELETE FROM t",
                "delete",
            ),
            (
                "WITH x AS (SELECT 1) -- ) insert\n SELECT replace('a', 'b', 'c')",
                "select",
            ),
            ("WITH x AS (SELECT 1", ""),
        ] {
            assert_eq!(verb_after_with(statement), verb, "{statement}");
        }
    }

    #[test]
    fn sql_refuses_writes() {
        let store = sample();
        // Also those SQLite cannot prepare (a black-box probe: they got its error,
        // "table contacts has 10 columns but 1 values were supplied").
        for write in [
            "DELETE FROM messages",
            "INSERT INTO contacts VALUES (1)",
            "CREATE TABLE contacts (id)",
            "WITH x AS (SELECT 1) INSERT INTO contacts VALUES (1)",
            // Refused by SQLite (a generated column) before the authorizer hears of it.
            "WITH x AS (SELECT 1) UPDATE messages SET message = 'x'",
            "with recursive \"a)\"(n) AS MATERIALIZED (select ')'), b AS (SELECT 2) /* ) */ update messages SET message = 'x'",
            // Refused by SQLite before the authorizer hears of them (a review).
            "INSERT INTO no_such_table VALUES (1)",
            " -- a comment\n /* and another */ delete FROM no_such_table",
            "DROP TABLE no_such_table",
            "UPDATE contacts SET no_such_column = 1",
        ] {
            assert!(
                matches!(sql(store.conn(), write), Err(SqlError::NotReadOnly)),
                "{write}: {:?}",
                sql(store.conn(), write)
            );
        }
        // A mistake in a read is still said as SQLite says it, in an EXPLAIN of a
        // write too (a review: it was refused as a write, which EXPLAIN is not).
        for (read, said) in [
            ("SELECT no_such_column FROM contacts", "no_such_column"),
            ("EXPLAIN INSERT INTO contacts VALUES (1)", "10 columns"),
            (
                "/* x */ explain query plan DELETE FROM no_such_table",
                "no such table",
            ),
        ] {
            assert!(
                matches!(sql(store.conn(), read), Err(SqlError::Invalid(ref m)) if m.contains(said)),
                "{read}: {:?}",
                sql(store.conn(), read)
            );
        }
        assert!(sql(store.conn(), "EXPLAIN INSERT INTO contacts (id) VALUES (1)").is_ok());
        // Prepared as a read, it writes when run: `sql`'s read-only connection stops
        // it, and that is the refusal.
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("m.db");
        drop(crate::store::Store::open(&db).unwrap());
        let reader = crate::store::Store::open_read_only(&db).unwrap();
        for writes in [
            "SELECT * FROM pragma_optimize",
            "select * from PRAGMA_OPTIMIZE(2)",
        ] {
            assert!(
                matches!(sql(reader.conn(), writes), Err(SqlError::NotReadOnly)),
                "{writes}: {:?}",
                sql(reader.conn(), writes)
            );
        }
        // Prepared, and stopped as it runs for what it asks: a mistake all the same.
        for (asks, said) in [
            ("SELECT * FROM pragma_auto_vacuum(1)", "unknown database"),
            ("SELECT json_extract('{', '$')", "malformed JSON"),
            ("SELECT abs(-9223372036854775808)", "integer overflow"),
            ("SELECT zeroblob(2000000000)", "too big"),
        ] {
            assert!(
                matches!(sql(reader.conn(), asks), Err(SqlError::Invalid(ref m))
                    if m.contains(said) && m.starts_with("the statement stopped as it ran: ")),
                "{asks}: {:?}",
                sql(reader.conn(), asks)
            );
        }
        assert!(matches!(
            sql(store.conn(), "select 1; delete from messages"),
            Err(SqlError::Invalid(_))
        ));
        assert!(matches!(
            sql(store.conn(), "SELECT 1; PRAGMA journal_mode = delete"),
            Err(SqlError::Invalid(m)) if m.contains("one statement")
        ));
        // Asking the journal mode is a read (SQLite counts it as a write: it may
        // switch the mode); switching it is refused.
        for ask in ["PRAGMA journal_mode", " pragma  MAIN.journal_mode ; "] {
            let rows = sql(store.conn(), ask).unwrap().rows;
            assert_eq!(rows.len(), 1, "{ask}");
        }
        for switch in [
            "PRAGMA journal_mode = DELETE",
            "PRAGMA journal_mode(delete)",
        ] {
            assert!(
                matches!(sql(store.conn(), switch), Err(SqlError::PragmaSets(p)) if p == "journal_mode"),
                "{switch}"
            );
        }
        // PRAGMAs that SQLite counts as read-only but that set something (an
        // exclusive lock would hold off the daemon's commits): refused, however
        // written (a black-box probe ran them); those that name what they report
        // on run.
        for sets in [
            "PRAGMA locking_mode=EXCLUSIVE",
            "/* x */ pragma MAIN.Locking_Mode ( exclusive )",
            "PRAGMA busy_timeout=1",
            "PRAGMA mmap_size=1000",
            "PRAGMA hard_heap_limit=1",
            "PRAGMA soft_heap_limit=1",
            "PRAGMA threads=4",
            "PRAGMA max_page_count=1",
            "PRAGMA foreign_keys = ON",
        ] {
            let refused = sql(store.conn(), sets).unwrap_err();
            assert!(
                matches!(refused, SqlError::PragmaSets(_)),
                "{sets}: {refused}"
            );
        }
        for asks in [
            "PRAGMA locking_mode",
            "PRAGMA table_info(messages)",
            "PRAGMA index_list('messages')",
            "PRAGMA quick_check(1)",
            "SELECT name FROM pragma_table_info('messages')",
        ] {
            assert!(!sql(store.conn(), asks).unwrap().rows.is_empty(), "{asks}");
        }
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
        // Loading an extension is refused, naming it (it said "not authorized",
        // then that only reads were allowed).
        assert!(matches!(
            sql(store.conn(), "SELECT load_extension('x')"),
            Err(SqlError::LoadExtension)
        ));
        // Statements that read nothing are no queries (they printed an empty table).
        for nothing in ["BEGIN", "SAVEPOINT x", "ATTACH ':memory:' AS other"] {
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
}
