//! The schema: migrations embedded from the top-level `migrations/` folder.

use rusqlite_migration::{M, Migrations};

/// The migrations 1 to 16, in order: a released migration never changes. Later ones
/// are appended in [`migrations`], after 17 (which has a hook, so it cannot be here).
const LIST: &[M<'static>] = &[
    M::up(include_str!("../../../../migrations/0001_replica.sql")),
    M::up(include_str!("../../../../migrations/0002_backfill.sql")),
    M::up(include_str!(
        "../../../../migrations/0003_search_index_by_store.sql"
    )),
    M::up(include_str!(
        "../../../../migrations/0004_message_text_once.sql"
    )),
    M::up(include_str!(
        "../../../../migrations/0005_tombstone_positions.sql"
    )),
    M::up(include_str!(
        "../../../../migrations/0006_members_by_username.sql"
    )),
    M::up(include_str!(
        "../../../../migrations/0007_rowids_never_reused.sql"
    )),
    M::up(include_str!(
        "../../../../migrations/0008_deleted_usernames.sql"
    )),
    M::up(include_str!(
        "../../../../migrations/0009_list_order_indexes.sql"
    )),
    M::up(include_str!(
        "../../../../migrations/0010_filter_indexes.sql"
    )),
    M::up(include_str!(
        "../../../../migrations/0011_search_index_merges_in_steps.sql"
    )),
    M::up(include_str!(
        "../../../../migrations/0012_attachments_by_conversation.sql"
    )),
    M::up(include_str!(
        "../../../../migrations/0013_rules_of_deletes_and_members.sql"
    )),
    M::up(include_str!(
        "../../../../migrations/0014_flag_filter_indexes.sql"
    )),
    M::up(include_str!(
        "../../../../migrations/0015_deletes_under_deleted_parents.sql"
    )),
    M::up(include_str!(
        "../../../../migrations/0016_attachments_of_message_deletes.sql"
    )),
];

/// Migration 17's SQL: the full-text index made again, empty; its hook
/// ([`index_every_message`]) fills it.
const SEARCH_WORDS_KEEP_THEIR_MARKS: &str =
    include_str!("../../../../migrations/0017_search_words_keep_their_marks.sql");

/// The migration after 17, which has a hook: it runs after it.
const AFTER_17: [&str; 1] = [include_str!(
    "../../../../migrations/0018_children_of_deleted_parents.sql"
)];

/// Migration 19's SQL: its hook ([`make_the_search_index_again_if_early`]) does its
/// work.
const SEARCH_INDEX_OF_EARLY_17_BUILDS: &str =
    include_str!("../../../../migrations/0019_search_index_of_early_17_builds.sql");

/// The migrations after 19, which has a hook: they run after it, in order.
const AFTER_19: [&str; 2] = [
    include_str!("../../../../migrations/0020_no_conversation_named_empty.sql"),
    include_str!("../../../../migrations/0021_an_empty_reference_names_nothing.sql"),
];

/// Migration 22, which has a hook: [`record_rebuild_advice`].
const REBUILD_ADVISED: &str = include_str!("../../../../migrations/0022_rebuild_advised.sql");

/// Every migration, as `rusqlite_migration` runs them: [`LIST`], then 17, whose hook
/// of Rust code runs in the migration's transaction after its SQL, then
/// [`AFTER_17`], then 19 and its hook, then [`AFTER_19`], then 22 and its hook.
pub(crate) fn migrations() -> Migrations<'static> {
    let mut all = LIST.to_vec();
    all.push(M::up_with_hook(
        SEARCH_WORDS_KEEP_THEIR_MARKS,
        index_every_message,
    ));
    all.extend(AFTER_17.map(M::up));
    all.push(M::up_with_hook(
        SEARCH_INDEX_OF_EARLY_17_BUILDS,
        make_the_search_index_again_if_early,
    ));
    all.extend(AFTER_19.map(M::up));
    all.push(M::up_with_hook(REBUILD_ADVISED, record_rebuild_advice));
    Migrations::new(all)
}

/// The schema version this binary reads and writes (SQLite's `user_version`).
pub const SCHEMA_VERSION: i64 = (LIST.len() + 1 + AFTER_17.len() + 1 + AFTER_19.len() + 1) as i64;

/// Migration 22's hook: where the database, migrated from an older schema (not made
/// now), holds states this version's rules would not give ([`super::rules_differ`]),
/// records the advice to rebuild, in the migration's own transaction: recorded in a
/// commit after it, a process killed between the two left the database at this schema
/// with the advice lost (a review). The version the database had is still its
/// `user_version` here: `rusqlite_migration` sets the new one after the last hook. (A
/// later migration whose rules differ records it in a hook of its own.)
fn record_rebuild_advice(tx: &rusqlite::Transaction<'_>) -> rusqlite_migration::HookResult {
    let from: i64 = tx
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(|e| rusqlite_migration::HookError::Hook(e.to_string()))?;
    if from > 0 && super::rules_differ(tx, from) {
        super::rows::advise_rebuild(tx, from)
            .map_err(|e| rusqlite_migration::HookError::Hook(e.to_string()))?;
    }
    Ok(())
}

/// Migration 17's hook: the store indexes every message's text
/// ([`super::rows::index_every_message`]: in the form it indexes text, which SQL
/// cannot compute).
fn index_every_message(tx: &rusqlite::Transaction<'_>) -> rusqlite_migration::HookResult {
    super::rows::index_every_message(tx)
        .map_err(|e| rusqlite_migration::HookError::Hook(e.to_string()))
}

/// Migration 19's hook: when the full-text index is not as migration 17 makes it (an
/// early build of 17 made it without 0017's separators), makes it again with 0017's
/// statements, and indexes every message again.
fn make_the_search_index_again_if_early(
    tx: &rusqlite::Transaction<'_>,
) -> rusqlite_migration::HookResult {
    if search_index_is_17s(tx)? {
        return Ok(());
    }
    tx.execute_batch(search_index_of_17())?;
    index_every_message(tx)
}

/// Whether the full-text index is defined as migration 17 defines it: its `tokenize`
/// setting, separators and all, stands in the definition SQLite keeps.
fn search_index_is_17s(conn: &rusqlite::Connection) -> rusqlite::Result<bool> {
    let definition: String = conn.query_row(
        "SELECT sql FROM sqlite_schema WHERE name = 'messages_fts'",
        [],
        |row| row.get(0),
    )?;
    let tokenize = SEARCH_WORDS_KEEP_THEIR_MARKS
        .lines()
        .map(str::trim)
        .find(|line| line.starts_with("tokenize = "))
        .expect("migration 17 sets the index's tokenize");
    Ok(definition.contains(tokenize))
}

/// Migration 17's statements that make the full-text index again, empty: from its
/// `DROP TABLE` to the comment after its settings.
fn search_index_of_17() -> &'static str {
    let sql = SEARCH_WORDS_KEEP_THEIR_MARKS;
    let start = sql
        .find("DROP TABLE messages_fts;")
        .expect("migration 17 drops the index");
    let end = start
        + sql[start..]
            .find("\n--")
            .expect("a comment follows migration 17's statements");
    &sql[start..end]
}

/// Brings the database on `conn` to [`SCHEMA_VERSION`].
///
/// `rusqlite_migration` reads the version before its transaction: two processes
/// opening the same new database at once (a daemon started while a first import runs)
/// both see version 0, and the second one's transaction fails on tables the first one
/// has just created, then rolls back. When the database is at the latest version after
/// such a failure, another process did the work, and that is not an error.
///
/// Returns whether this connection changed the schema: `false` when it was at the
/// latest version already, or another process brought it there meanwhile (a process
/// that waited on another's migration must not say it migrated the database too).
pub(crate) fn migrate(conn: &mut rusqlite::Connection) -> Result<bool, super::StoreError> {
    let version = |conn: &rusqlite::Connection| -> i64 {
        conn.pragma_query_value(None, "user_version", |row| row.get(0))
            .unwrap_or(0)
    };
    let before = version(conn);
    let started = std::time::Instant::now();
    loop {
        match migrations().to_latest(conn) {
            // `to_latest` reads the version again: one that another process committed
            // between the two reads leaves it nothing to do, and the schema as it is.
            Ok(()) => return Ok(before < SCHEMA_VERSION && version(conn) == SCHEMA_VERSION),
            Err(_) if version(conn) == SCHEMA_VERSION => return Ok(false),
            // Another process migrating holds the write lock longer than the busy
            // timeout (migration 17 indexes every message: 11 s for a million; a
            // daemon started beside `migrate` failed with "database is locked": a
            // review). Tried again: the "applied once" guards make that safe.
            Err(error)
                if is_busy(&error) && started.elapsed() < super::guards::MIGRATING_DAEMON_WAIT =>
            {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Err(error) => return Err(error.into()),
        }
    }
}

/// Whether `error` is SQLite's "database is locked" (or "busy").
fn is_busy(error: &rusqlite_migration::Error) -> bool {
    use rusqlite::ErrorCode::{DatabaseBusy, DatabaseLocked};
    match error {
        rusqlite_migration::Error::RusqliteError { err, .. } => {
            matches!(err.sqlite_error_code(), Some(DatabaseBusy | DatabaseLocked))
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A migration added to [`LIST`] would run before 17: they go in [`migrations`].
    #[test]
    fn migrations_after_16_are_appended_after_17() {
        assert_eq!(LIST.len(), 16);
    }

    /// A search index an early build of schema 17 made (without 0017's separators) is
    /// made again at 19: `lol🤣` holds `lol` (it was one word, even after a rebuild: an
    /// upgrade probe). One made as 17 makes it is left as it is.
    #[test]
    fn an_early_17_search_index_is_made_again() {
        let found = |conn: &rusqlite::Connection, word: &str| -> i64 {
            conn.query_row(
                "SELECT count(*) FROM messages_fts WHERE messages_fts MATCH ?1",
                [word],
                |row| row.get(0),
            )
            .unwrap()
        };
        let mut conn = rusqlite::Connection::open_in_memory().unwrap();
        migrations().to_version(&mut conn, 18).unwrap();
        assert!(search_index_is_17s(&conn).unwrap());
        conn.execute_batch(
            "DROP TABLE messages_fts;
             CREATE VIRTUAL TABLE messages_fts USING fts5 (
                 message, content = 'messages', content_rowid = 'rowid',
                 tokenize = 'unicode61 remove_diacritics 2 categories ''L* N* M*''');
             INSERT INTO messages (id, seq, data)
                 VALUES ('m1', 1, '{\"id\":\"m1\",\"message\":\"lol\u{1f923} funny\"}');",
        )
        .unwrap();
        super::super::rows::index_every_message(&conn).unwrap();
        assert!(!search_index_is_17s(&conn).unwrap());
        assert_eq!((found(&conn, "lol"), found(&conn, "funny")), (0, 1));
        migrate(&mut conn).unwrap();
        assert!(search_index_is_17s(&conn).unwrap());
        assert_eq!((found(&conn, "lol"), found(&conn, "funny")), (1, 1));
        // Made as 17 makes it: nothing is done (the index keeps what it holds, here
        // a word no message has, which indexing again would drop).
        let mut conn = rusqlite::Connection::open_in_memory().unwrap();
        migrations().to_version(&mut conn, 18).unwrap();
        conn.execute_batch("INSERT INTO messages_fts (rowid, message) VALUES (7, 'kept');")
            .unwrap();
        migrate(&mut conn).unwrap();
        assert_eq!(found(&conn, "kept"), 1);
    }

    #[test]
    fn migrations_are_valid() {
        migrations().validate().unwrap();
    }

    /// Every file in `migrations/` is embedded, in name order, and none is forgotten.
    #[test]
    fn every_migration_file_is_listed() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../migrations");
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .filter(|name| name.ends_with(".sql"))
            .collect();
        files.sort();
        assert_eq!(files.len() as i64, SCHEMA_VERSION, "{files:?}");
        for (i, name) in files.iter().enumerate() {
            assert!(
                name.starts_with(&format!("{:04}_", i + 1)),
                "migration {name} is out of sequence"
            );
        }
    }

    /// A database whose `user_version` was set back by hand fails to migrate: the
    /// error says why, not only which column or index exists already. (From 12 or
    /// later, migration 14's index is the one found there already.)
    #[test]
    fn a_version_older_than_the_tables_is_named_as_the_cause() {
        for version in [1, 11, 12] {
            let mut conn = rusqlite::Connection::open_in_memory().unwrap();
            migrations().to_latest(&mut conn).unwrap();
            conn.pragma_update(None, "user_version", version).unwrap();
            let error = migrate(&mut conn).unwrap_err().to_string();
            assert!(
                error.starts_with("cannot migrate the database: ")
                    && error.contains("tables are newer than its schema version"),
                "{error}"
            );
            assert!(!error.contains("CREATE"), "{error}");
        }
    }

    /// A migration waits out another process's write lock held past the busy timeout
    /// (migration 17 over a large replica), rather than fail with "database is
    /// locked" (a daemon started beside `migrate` did: a review). Takes 7 s.
    #[test]
    fn a_migration_waits_out_a_long_write() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.db");
        let mut conn = rusqlite::Connection::open(&path).unwrap();
        migrations().to_version(&mut conn, 16).unwrap();
        let (began, has_begun) = std::sync::mpsc::channel();
        let holder = std::thread::spawn({
            let path = path.clone();
            move || {
                let mut other = rusqlite::Connection::open(&path).unwrap();
                let tx = other
                    .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                    .unwrap();
                began.send(()).unwrap();
                std::thread::sleep(std::time::Duration::from_secs(7));
                tx.commit().unwrap();
            }
        });
        has_begun.recv().unwrap();
        assert!(migrate(&mut conn).unwrap());
        holder.join().unwrap();
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
    }

    /// Migration 0017 makes the full-text index again with words that keep their marks:
    /// a replica of schema 16 finds a Hindi word whole afterwards, not by a piece of it,
    /// and a decomposed Bengali one as typed composed; its index is whole, and keeps
    /// the settings of migrations 0004 and 0011.
    #[test]
    fn migration_17_indexes_words_with_their_marks() {
        let dir = tempfile::tempdir().unwrap();
        // What schema 16 wrote: its index split words at marks.
        let mut conn = rusqlite::Connection::open(dir.path().join("16.db")).unwrap();
        migrations().to_version(&mut conn, 16).unwrap();
        conn.execute_batch(
            r#"INSERT INTO messages (id, conversation_id, seq, data) VALUES
                   ('m1', 'c1', 1, '{"id":"m1","conversation_id":"c1","message":"नमस्ते दोस्त"}'),
                   ('m2', 'c1', 2, '{"id":"m2","conversation_id":"c1","message":null}'),
                   ('m3', 'c1', 3, '{"id":"m3","conversation_id":"c1","message":"\u09b8\u09c7\u09be\u09a8\u09be\u09b0"}');
               INSERT INTO messages_fts (rowid, message)
                   SELECT rowid, message FROM messages WHERE message IS NOT NULL;"#,
        )
        .unwrap();
        let count = |conn: &rusqlite::Connection, word: &str| -> i64 {
            conn.query_row(
                "SELECT COUNT(*) FROM messages_fts WHERE messages_fts MATCH ?1",
                [format!("\"{word}\"")],
                |row| row.get(0),
            )
            .unwrap()
        };
        assert_eq!(count(&conn, "नमस"), 1, "schema 16 split the word");
        drop(conn);
        let store = crate::store::Store::open(&dir.path().join("16.db")).unwrap();
        let conn = store.conn();
        assert_eq!(count(conn, "नमस"), 0);
        assert_eq!(count(conn, "नमस्ते"), 1);
        assert_eq!(count(conn, "दोस्त"), 1);
        // Indexed composed (NFC): found as typed composed, its vowel sign one character.
        assert_eq!(count(conn, "\u{09b8}\u{09cb}\u{09a8}\u{09be}\u{09b0}"), 1);
        conn.execute(
            "INSERT INTO messages_fts (messages_fts) VALUES ('integrity-check')",
            [],
        )
        .unwrap();
        let settings: Vec<(String, i64)> = conn
            .prepare("SELECT k, v FROM messages_fts_config WHERE k <> 'version' ORDER BY k")
            .unwrap()
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(
            settings,
            [
                ("automerge".to_owned(), 16),
                ("crisismerge".to_owned(), 64),
                ("hashsize".to_owned(), 16_777_216)
            ]
        );
    }

    /// Migration 0004 moves message text out of its own column into `data` alone:
    /// a database written at version 3 reads the same after it, and its full-text
    /// index (left as it was) still matches the text, for searches and for the
    /// index changes later writes make.
    #[test]
    fn message_text_survives_migration_4() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.db");
        let mut conn = rusqlite::Connection::open(&path).unwrap();
        migrations().to_version(&mut conn, 3).unwrap();
        // What version 3 wrote: the text in the column and in `data`, and indexed.
        conn.execute_batch(
            r#"INSERT INTO messages (id, conversation_id, message, seq, data)
                   VALUES ('m1', 'c1', 'hello brave world', 1,
                           '{"id":"m1","conversation_id":"c1","message":"hello brave world"}'),
                          ('m2', 'c1', NULL, 2, '{"id":"m2","conversation_id":"c1","message":null}');
               INSERT INTO messages_fts (rowid, message)
                   SELECT rowid, message FROM messages WHERE message IS NOT NULL;"#,
        )
        .unwrap();
        drop(conn);

        let mut store = crate::store::Store::open(&path).unwrap();
        let conn = store.conn();
        let text: Vec<Option<String>> = conn
            .prepare("SELECT message FROM messages ORDER BY id")
            .unwrap()
            .query_map([], |row| row.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(text, [Some("hello brave world".to_owned()), None]);
        conn.execute(
            "INSERT INTO messages_fts (messages_fts) VALUES ('integrity-check')",
            [],
        )
        .unwrap();
        let search = |store: &crate::store::Store, word: &str| -> i64 {
            store
                .conn()
                .query_row(
                    "SELECT COUNT(*) FROM messages_fts WHERE messages_fts MATCH ?1",
                    [word],
                    |row| row.get(0),
                )
                .unwrap()
        };
        assert_eq!(search(&store, "brave"), 1);

        // A later update removes the old words from the index and adds the new ones.
        store
            .apply(
                br#"{"id":"e1","type":"message.updated","payload":{"id":"m1","message":"goodbye"}}"#,
                0,
            )
            .unwrap();
        assert_eq!(search(&store, "brave"), 0);
        assert_eq!(search(&store, "goodbye"), 1);
        store
            .conn()
            .execute(
                "INSERT INTO messages_fts (messages_fts) VALUES ('integrity-check')",
                [],
            )
            .unwrap();
    }
}
