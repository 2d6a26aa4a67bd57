//! The query CLI and the developer tools, run as users run them: every subcommand and
//! format against a database filled from the sample stream (snapshots with insta).

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{self, Mirror, SAMPLE};

/// A temp folder with `mirror.db` filled from the sample stream.
struct Sample {
    dir: tempfile::TempDir,
    db: PathBuf,
}

impl Sample {
    fn new() -> Sample {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("mirror.db");
        let sample = Sample { dir, db };
        let out = sample.run(&["import", "-"], SAMPLE.as_bytes());
        assert!(out.status.success(), "{}", stderr(&out));
        sample
    }

    fn run(&self, args: &[&str], stdin: &[u8]) -> Output {
        let mut all = vec!["--db", self.db.to_str().unwrap()];
        all.extend_from_slice(args);
        support::run(self.dir.path(), &all, stdin)
    }

    /// A command on the database, with its output piped.
    fn command(&self, args: &[&str]) -> std::process::Command {
        let mut command = support::command(self.dir.path());
        command
            .args(["--db", self.db.to_str().unwrap()])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        command
    }

    /// Starts a command with its output piped.
    fn spawn(&self, args: &[&str]) -> std::process::Child {
        self.command(args).spawn().unwrap()
    }

    /// Starts a command with its input and output piped.
    fn spawn_with_input(&self, args: &[&str]) -> std::process::Child {
        self.command(args).stdin(Stdio::piped()).spawn().unwrap()
    }

    /// Runs a command that must succeed; returns its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args, b"");
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        String::from_utf8(out.stdout).unwrap()
    }
}

/// Characters of a private use area are letters to the full-text index: `search`
/// finds them without saying the text has no words (it said so, and found them). But
/// for U+E000 and U+F8FF, which split words since schema 17, as they are said to.
#[test]
fn search_takes_private_use_characters_for_words() {
    let s = Sample::new();
    let line = support::event(
        "pua-1",
        "message.created",
        json!({"id": "pua", "conversation_id": "c", "message": "icon \u{e123} here \u{e000}"}),
    );
    let out = s.run(&["import", "-"], &line);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = s.run(&["search", "-f", "json", "\u{e123}"], b"");
    assert!(out.status.success(), "{}", stderr(&out));
    let found: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(found[0]["id"], "pua", "{found}");
    assert_eq!(stderr(&out), "");
    let out = s.run(&["search", "-f", "json", "\u{e000}"], b"");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "[]");
    assert!(stderr(&out).contains("no words"), "{}", stderr(&out));
}

/// The characters that mark `search`'s highlights, in a message's text or an id, are
/// text in every other table: `get`, `list` and `sql` printed colour codes for them,
/// piped and under `NO_COLOR` too (a review).
#[test]
fn highlight_marks_in_the_text_are_no_colours() {
    let s = Sample::new();
    let line = support::event(
        "pua-2",
        "message.created",
        json!({"id": "p\u{e000}id", "conversation_id": "c\u{e001}", "message": "hi \u{e000} there \u{e001}"}),
    );
    let out = s.run(&["import", "-"], &line);
    assert!(out.status.success(), "{}", stderr(&out));
    for args in [
        &["get", "message", "p\u{e000}id"][..],
        &["list", "messages", "--conversation", "c\u{e001}"],
        &[
            "sql",
            "SELECT id, message FROM messages WHERE conversation_id = 'c\u{e001}'",
        ],
        &["search", "there"],
    ] {
        for columns in ["80", ""] {
            let out = support::command(s.dir.path())
                .args(["--db", s.db.to_str().unwrap()])
                .args(args)
                .env("COLUMNS", columns)
                .env("NO_COLOR", "1")
                .output()
                .unwrap();
            assert!(out.status.success(), "{args:?}: {}", stderr(&out));
            let text = String::from_utf8(out.stdout).unwrap();
            assert!(!text.contains('\x1b'), "{args:?}:\n{text}");
            assert!(text.contains("there"), "{args:?}:\n{text}");
        }
    }
}

/// `stats` reads the WAL's size beside the database file itself, where SQLite keeps
/// it, also when `--db` is a symbolic link (through one, it said 0 bytes).
#[cfg(unix)]
#[test]
fn stats_through_a_symbolic_link_counts_the_wal() {
    let s = Sample::new();
    let links = tempfile::tempdir().unwrap();
    let link = links.path().join("linked.db");
    std::os::unix::fs::symlink(&s.db, &link).unwrap();
    // A writer that leaves its commit in the WAL.
    let writer = rusqlite::Connection::open(&s.db).unwrap();
    writer
        .execute_batch(
            "PRAGMA wal_autocheckpoint = 0;
             UPDATE events SET duplicates = duplicates + 1 WHERE seq = 1;",
        )
        .unwrap();
    let wal = |db: &Path| -> u64 {
        let out = support::run(
            s.dir.path(),
            &["--db", db.to_str().unwrap(), "stats", "-f", "json"],
            b"",
        );
        assert!(out.status.success(), "{}", stderr(&out));
        let stats: Value = serde_json::from_slice(&out.stdout).unwrap();
        stats["wal_bytes"].as_u64().unwrap()
    };
    let direct = wal(&s.db);
    assert!(direct > 0);
    assert_eq!(wal(&link), direct);
    drop(writer);
}

/// Read through a hard link, the reader says the file has other names: what a daemon
/// commits through another name stays in the log beside it, which this name does not
/// read (a probe read stale counts without a word). Through its only name, nothing.
#[cfg(unix)]
#[test]
fn a_reader_through_a_hard_link_says_the_file_has_other_names() {
    let s = Sample::new();
    let stats = |db: &Path| {
        support::run(
            s.dir.path(),
            &["--db", db.to_str().unwrap(), "stats", "-f", "json"],
            b"",
        )
    };
    let alone = stats(&s.db);
    assert!(
        alone.status.success() && stderr(&alone).is_empty(),
        "{}",
        stderr(&alone)
    );
    let linked = s.dir.path().join("linked.db");
    std::fs::hard_link(&s.db, &linked).unwrap();
    for db in [&linked, &s.db] {
        let out = stats(db);
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(
            stderr(&out).contains("has 2 names (hard links)"),
            "{}",
            stderr(&out)
        );
    }
}

/// `n` lines of NDJSON, each a `contact.created` of its own: event ids
/// `<events>-0`..., contact ids `<contacts>0`....
fn contacts_created(events: &str, contacts: &str, n: usize) -> String {
    (0..n)
        .map(|i| {
            let mut line = support::event(
                &format!("{events}-{i}"),
                "contact.created",
                json!({"id": format!("{contacts}{i}")}),
            );
            line.push(b'\n');
            String::from_utf8(line).unwrap()
        })
        .collect()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn list_and_get_in_every_format() {
    let s = Sample::new();
    insta::assert_snapshot!("list_messages_table", s.ok(&["list", "messages"]));
    insta::assert_snapshot!(
        "list_contacts_csv",
        s.ok(&["list", "contacts", "--format", "csv"])
    );
    insta::assert_snapshot!(
        "list_conversations_ndjson",
        s.ok(&["list", "conversation", "--format", "ndjson"])
    );
    insta::assert_snapshot!(
        "get_message_json",
        s.ok(&["get", "message", "SIuAFUNKdSYHZF2w", "--format", "json"])
    );
    insta::assert_snapshot!(
        "get_contact_table",
        s.ok(&["get", "contacts", "WAz8eIbvDR60rouK"])
    );

    // JSON is exactly the stored objects: an array for lists, one object for get.
    let list: Value =
        serde_json::from_str(&s.ok(&["list", "messages", "--format", "json"])).unwrap();
    let get: Value =
        serde_json::from_str(&s.ok(&["get", "message", "SIuAFUNKdSYHZF2w", "-f", "json"])).unwrap();
    assert_eq!(list, json!([get.clone()]));
    assert_eq!(get["attachments"], json!([]));
    assert_eq!(
        get["reactions"],
        json!([{"red_angry_face": ["KateMcCallister"]}])
    );

    // Filters, and an empty list is fine.
    assert_eq!(
        s.ok(&["list", "messages", "--conversation", "nope", "-f", "json"])
            .trim(),
        "[]"
    );
    assert_eq!(
        s.ok(&["list", "messages", "--conversation", "nope", "-f", "ndjson"]),
        ""
    );
    let listed = s.ok(&[
        "list",
        "messages",
        "--conversation",
        "xgQQXg3hrtjh7AvZ",
        "-f",
        "ndjson",
    ]);
    assert_eq!(listed.lines().count(), 1);
}

#[test]
fn get_of_a_missing_object_exits_1_with_one_line() {
    let s = Sample::new();
    for format in ["table", "json", "ndjson", "csv"] {
        let out = s.run(&["get", "message", "nope", "--format", format], b"");
        assert_eq!(out.status.code(), Some(1));
        assert!(out.stdout.is_empty());
        assert_eq!(stderr(&out).trim().lines().count(), 1, "{}", stderr(&out));
        assert!(stderr(&out).contains("nope"));
        assert!(!stderr(&out).contains("deleted"), "{}", stderr(&out));
    }
    // An empty id is a usage error, as an empty `--conversation` is (it was exit 1,
    // "no message with id \"\"": a black-box probe).
    let out = s.run(&["get", "message", ""], b"");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("is empty"), "{}", stderr(&out));
    // A deleted one says so (it was told as if mistyped; a probe), in `get` and in
    // the note of a list by it.
    let out = s.run(&["get", "message", "gWqY86BMFRiH5o11"], b"");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out).trim(),
        r#"protocol-mirror: no message with id "gWqY86BMFRiH5o11" (it was deleted)"#
    );
    let out = s.run(
        &["list", "messages", "--conversation", "ZYjVAbCE9g5XRlra"],
        b"",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("(it was deleted)"),
        "{}",
        stderr(&out)
    );
    // A long id is quoted by its start, as the read API's 404 quotes it.
    let long = "x".repeat(100_000);
    let out = s.run(&["get", "message", &long], b"");
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).len() < 200, "{}", stderr(&out));
    assert!(stderr(&out).contains("(100000 bytes)"), "{}", stderr(&out));
}

#[test]
fn usage_mistakes_exit_2() {
    let s = Sample::new();
    for args in [
        &["list", "widgets"][..],
        &["list", "contacts", "--message", "m"],
        &["get", "message"],
        &["list", "messages", "--format", "yaml"],
        &["events", "--outcome", "great"],
        &["frobnicate"],
        &["serve", "--max-body-bytes", "0"],
        // An empty id filters nothing (it listed nothing, exit 0; the read API says 400).
        &["list", "messages", "--conversation", ""],
        &["search", "hotel", "--conversation", ""],
    ] {
        let out = s.run(args, b"");
        let text = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {text}");
        assert_eq!(text.lines().count(), 1, "{args:?}: one line: {text}");
        assert!(text.starts_with("protocol-mirror: "), "{args:?}: {text}");
        assert!(!text.contains("panicked"));
    }
    // Clap's own mistakes carry its hints, still on the one line.
    let text = stderr(&s.run(&["list", "messages", "--format", "yaml"], b""));
    assert!(
        text.contains("possible values: table, json, ndjson, csv"),
        "{text}"
    );
    // A blank --db names no database (one named by spaces was made).
    let out = support::run(
        s.dir.path(),
        &["--db", "  ", "import", "-"],
        SAMPLE.as_bytes(),
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--db is blank"), "{}", stderr(&out));
    // A path that can only name a folder is refused before anything is made: an
    // import built its database, could not put it in place and left it behind, and
    // other writers left a lock (a probe).
    for (db, args) in [
        ("imp/", &["import", "-"][..]),
        ("new/sub/", &["migrate"]),
        ("srv/", &["serve", "--listen", "127.0.0.1:0"]),
        ("imp/.", &["list", "messages"]),
        // `sign` and `send` ignored it (they use a database only for its secret).
        ("imp/", &["sign"]),
    ] {
        let folder = tempfile::tempdir().unwrap();
        let db = format!("{}/{db}", folder.path().display());
        let args = [&["--db", db.as_str()][..], args].concat();
        let out = support::run(folder.path(), &args, SAMPLE.as_bytes());
        let text = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {text}");
        assert!(text.contains("names a folder"), "{args:?}: {text}");
        assert_eq!(text.lines().count(), 1, "{args:?}: {text}");
        let left: Vec<_> = std::fs::read_dir(folder.path()).unwrap().collect();
        assert!(left.is_empty(), "{args:?} left {left:?}");
    }
    // So is a backup's: it copied the whole database, then failed to name the copy.
    let folder = tempfile::tempdir().unwrap();
    let copy = format!("{}/new/", folder.path().display());
    let out = s.run(&["backup", &copy], b"");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("is a folder"), "{}", stderr(&out));
    assert_eq!(std::fs::read_dir(folder.path()).unwrap().count(), 0);
    // Asking for help is not a mistake.
    let out = s.run(&["list", "--help"], b"");
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("Usage:"));
}

/// A column name is shown like a cell: an escape sequence in it never reaches the
/// terminal (`sql` names columns after what the user wrote).
#[test]
fn table_headers_show_control_characters() {
    let s = Sample::new();
    let table = s.ok(&["sql", "SELECT 1 AS \"\u{1b}[31mred\""]);
    assert!(!table.contains('\u{1b}'), "{table:?}");
    assert!(table.contains("␛[31mred"), "{table}");
}

#[test]
fn search_highlights_and_takes_any_text_safely() {
    let s = Sample::new();
    insta::assert_snapshot!("search_table", s.ok(&["search", "meetings"]));
    let found: Value =
        serde_json::from_str(&s.ok(&["search", "HATE meetings", "-f", "json"])).unwrap();
    assert_eq!(found[0]["id"], "SIuAFUNKdSYHZF2w");
    // Several words unquoted are one text, as users type them.
    assert_eq!(
        s.ok(&["search", "HATE", "meetings", "-f", "json"]),
        s.ok(&["search", "HATE meetings", "-f", "json"])
    );
    assert_eq!(
        s.ok(&["search", "hate", "lunch", "-f", "json"]).trim(),
        "[]"
    );
    // A text of no words matches nothing, and says why.
    for wordless in ["", "😀", "--"] {
        let out = s.run(&["search", "-f", "json", "--", wordless], b"");
        assert!(out.status.success(), "{wordless}: {}", stderr(&out));
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "[]");
        assert!(stderr(&out).contains("holds no words"), "{}", stderr(&out));
    }
    let out = s.run(&["search", "--fts", "-f", "json", " "], b"");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("query is empty"), "{}", stderr(&out));
    for hostile in [
        "\"",
        "'",
        "NEAR(",
        "meet*",
        "a OR b",
        "\"unbalanced",
        "x'); DROP TABLE messages; --",
        "*",
        "-",
    ] {
        let out = s.run(&["search", hostile, "-f", "json"], b"");
        assert!(out.status.success(), "{hostile}: {}", stderr(&out));
    }
    assert!(
        s.ok(&["search", "meet*", "--fts", "-f", "ndjson"])
            .contains("SIuAFUNKdSYHZF2w")
    );
    let out = s.run(&["search", "NEAR(", "--fts"], b"");
    assert_eq!(
        out.status.code(),
        Some(2),
        "a mistake in the query given, like a `sql` statement that would write"
    );
    assert!(
        stderr(&out).contains("invalid full-text query"),
        "{}",
        stderr(&out)
    );
    assert_eq!(stderr(&out).trim().lines().count(), 1);
}

/// A table too wide for a width that was given (a terminal's, or `COLUMNS`) comes a
/// row at a time, a field a line; output to a file or a pipe with no width given
/// keeps its header and a row per table line, for `grep` and the like. Ids come out
/// whole either way.
#[test]
fn wide_tables_go_a_row_at_a_time_only_at_a_given_width() {
    let s = Sample::new();
    let query = "SELECT * FROM messages";
    let id = "SIuAFUNKdSYHZF2w";
    let piped = s.ok(&["sql", query]);
    let header = piped.lines().nth(1).unwrap_or_default();
    assert!(
        header.contains("conversation_id") && header.contains("sender_id"),
        "{piped}"
    );
    assert!(piped.contains(id), "{piped}");
    // Not fitted to any width: the row is one line (borders, header, row), for grep.
    assert_eq!(piped.lines().count(), 5, "{piped}");
    let listed = s.ok(&["list", "messages"]);
    let row = listed.lines().find(|l| l.contains(id)).unwrap_or_default();
    assert!(row.contains("I hate meetin…"), "{listed}");
    let narrow = support::command(s.dir.path())
        .env("COLUMNS", "80")
        .args(["--db", s.db.to_str().unwrap(), "sql", query])
        .output()
        .unwrap();
    assert!(narrow.status.success());
    let narrow = String::from_utf8_lossy(&narrow.stdout);
    assert!(
        narrow.lines().any(|l| l.starts_with("│ sender_id ")),
        "{narrow}"
    );
    assert!(narrow.contains(id), "{narrow}");
    assert!(narrow.lines().all(|l| l.chars().count() <= 80), "{narrow}");
}

#[test]
fn sql_reads_in_every_format_and_refuses_writes() {
    let s = Sample::new();
    let query = "SELECT type, outcome FROM events WHERE seq <= 3 ORDER BY seq";
    insta::assert_snapshot!("sql_table", s.ok(&["sql", query]));
    insta::assert_snapshot!("sql_csv", s.ok(&["sql", query, "-f", "csv"]));
    let rows: Value = serde_json::from_str(&s.ok(&["sql", query, "-f", "json"])).unwrap();
    assert_eq!(
        rows[0],
        json!({"type": "contact.created", "outcome": "applied"})
    );
    // JSON objects keep the columns' order, and a repeated name loses no value.
    let ordered = "SELECT 2 AS z, 1 AS a, 3 AS a";
    assert_eq!(
        s.ok(&["sql", ordered, "-f", "ndjson"]),
        "{\"z\":2,\"a\":1,\"a_2\":3}\n"
    );
    assert_eq!(s.ok(&["sql", ordered, "-f", "csv"]), "z,a,a\n2,1,3\n");
    let before = std::fs::read(&s.db).unwrap();
    for write in [
        "DELETE FROM messages",
        "DROP TABLE messages",
        "UPDATE contacts SET username = 'x'",
    ] {
        let out = s.run(&["sql", write], b"");
        assert!(!out.status.success(), "{write}");
        assert_eq!(stderr(&out).trim().lines().count(), 1, "{}", stderr(&out));
    }
    // Mistakes in the statement are usage errors (exit 2), as a write is.
    for (mistake, says) in [
        ("SELECT 1; SELECT 2", "one statement at a time"),
        ("SELECT ?", "parameter"),
        ("SELEC 1", "syntax error"),
        ("SELECT * FROM nope", "no such table"),
        ("BEGIN", "returns no rows"),
        ("ATTACH 'other.db' AS other", "returns no rows"),
    ] {
        let out = s.run(&["sql", mistake], b"");
        assert_eq!(out.status.code(), Some(2), "{mistake}: {}", stderr(&out));
        assert!(stderr(&out).contains(says), "{mistake}: {}", stderr(&out));
    }
    assert_eq!(std::fs::read(&s.db).unwrap(), before, "nothing written");
}

#[test]
fn events_and_stats() {
    let s = Sample::new();
    let events: Value = serde_json::from_str(&s.ok(&["events", "-f", "json"])).unwrap();
    let events = events.as_array().unwrap();
    assert_eq!(events.len(), 19);
    assert_eq!(events[0]["type"], "contact.deleted", "newest first");
    for key in ["id", "type", "outcome", "received_at", "source"] {
        assert!(events[0].get(key).is_some(), "{key}");
    }
    assert_eq!(events[0]["source"], "import");
    let stale = s.ok(&["events", "--outcome", "stale", "-f", "ndjson"]);
    assert_eq!(stale.lines().count(), 1);
    assert!(stale.contains("attachment.created"));
    // In any case, as `--format`'s value.
    assert_eq!(
        s.ok(&["events", "--outcome", "STALE", "-f", "ndjson"]),
        stale
    );
    assert_eq!(
        s.ok(&["events", "--type", "group.deleted", "-f", "csv"])
            .lines()
            .count(),
        2
    );
    assert_eq!(
        s.ok(&["events", "--limit", "2", "-f", "ndjson"])
            .lines()
            .count(),
        2
    );
    // A type that is none of the 15 gets an empty list and a note on stderr (a typo
    // listed nothing without a word); a documented type with no events gets none.
    let typo = s.run(&["events", "--type", "messages.created", "-f", "json"], b"");
    assert!(typo.status.success());
    assert_eq!(String::from_utf8_lossy(&typo.stdout).trim(), "[]");
    assert!(
        stderr(&typo).contains("did you mean `message.created`"),
        "{}",
        stderr(&typo)
    );
    // The backfill types are types too, and their near misses get the nearest one.
    let plural = s.run(&["events", "--type", "messages.backfill"], b"");
    assert!(
        stderr(&plural).contains("did you mean `message.backfill`"),
        "{}",
        stderr(&plural)
    );
    let backfill = s.run(&["events", "--type", "message.backfill"], b"");
    assert!(backfill.status.success());
    assert_eq!(stderr(&backfill), "");
    // The note quotes the type with its control characters escaped.
    let escaped = s.run(&["events", "--type", "mess\u{1b}age.created"], b"");
    assert!(!stderr(&escaped).contains('\u{1b}'), "{}", stderr(&escaped));
    assert!(
        stderr(&escaped).contains("mess\\u{1b}age"),
        "{}",
        stderr(&escaped)
    );
    let none = s.run(
        &[
            "events",
            "--type",
            "group.updated",
            "--outcome",
            "rejected",
            "-f",
            "json",
        ],
        b"",
    );
    assert_eq!(String::from_utf8_lossy(&none.stdout).trim(), "[]");
    assert_eq!(stderr(&none), "");

    let stats: Value = serde_json::from_str(&s.ok(&["stats", "--format", "json"])).unwrap();
    assert_eq!(stats["rows"]["messages"], 1);
    assert_eq!(stats["rows"]["contacts"], 1);
    assert_eq!(stats["tombstones"]["conversations"], 2);
    assert_eq!(stats["events"]["total"], 19);
    assert_eq!(stats["events"]["by_outcome"]["applied"], 18);
    assert!(stats["database_bytes"].as_u64().unwrap() > 0);
    let table = s.ok(&["stats"]);
    assert!(
        table.contains("rows.messages") && table.contains("tombstones.groups"),
        "{table}"
    );
    // Times in UTC, as in every table (they were Unix seconds); CSV keeps the number.
    let first = stats["events"]["first_received_at"].as_i64().unwrap();
    let line = table
        .lines()
        .find(|l| l.contains("events.first_received_at"))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(!line.contains(&first.to_string()), "{line}");
    assert!(line.contains(" UTC") || line.contains(':'), "{line}");
    let csv = s.ok(&["stats", "--format", "csv"]);
    assert!(
        csv.contains(&format!("events.first_received_at,{first}")),
        "{csv}"
    );

    // An event delivered again: `--outcome duplicate` lists it, and its table shows
    // the redeliveries it selected by (the table had no such column).
    let first_line = support::SAMPLE.lines().next().unwrap();
    assert!(
        s.run(&["import", "-"], first_line.as_bytes())
            .status
            .success()
    );
    // Only a table with redeliveries shows the column: a column of zeros took every
    // table past 120 characters, each row wrapped in two.
    let plain = s.ok(&["events", "--outcome", "stale"]);
    assert!(!plain.contains("duplicates"), "{plain}");
    assert!(plain.lines().all(|l| l.chars().count() <= 120), "{plain}");
    let table = s.ok(&["events", "--outcome", "duplicate"]);
    let header = table.lines().nth(1).unwrap_or_default();
    assert!(header.contains("duplicates"), "{table}");
    // Nor a column of empty errors: with it, that table cut ids and times in two.
    assert!(!header.contains("error"), "{table}");
    assert_eq!(table.lines().count(), 5, "one line per row:\n{table}");
    let rejected = r#"{"id":"bad1","type":"contact.updated","payload":{"id":"c9","username":5}}"#;
    assert!(
        s.run(&["import", "-"], rejected.as_bytes())
            .status
            .success()
    );
    let with_error = s.ok(&["events", "--outcome", "rejected"]);
    let header = with_error.lines().nth(1).unwrap_or_default();
    assert!(header.contains("error"), "{with_error}");
    assert!(with_error.contains("username"), "{with_error}");
    // Not on a terminal, tables take the width `COLUMNS` gives (else 120).
    let wide = support::command(s.dir.path())
        .env("COLUMNS", "200")
        .args([
            "--db",
            s.db.to_str().unwrap(),
            "events",
            "--outcome",
            "duplicate",
        ])
        .output()
        .unwrap();
    let wide = String::from_utf8_lossy(&wide.stdout);
    assert_eq!(wide.lines().count(), 5, "one line per row:\n{wide}");
    let row = table
        .lines()
        .find(|l| l.contains("contact.created"))
        .unwrap_or_else(|| panic!("{table}"));
    let cells: Vec<&str> = row.split(['│', '┆']).map(str::trim).collect();
    assert!(cells.contains(&"1"), "{row}");
}

/// An import that meets damage in the database says how to get it back, naming the
/// file (it said `sqlite3 <database> .recover`: a probe), and leaves the damage mark,
/// so that the next `serve` checks the file first (it started on it: a probe).
#[test]
fn an_import_that_meets_damage_names_the_fix_and_marks_the_file() {
    let s = Sample::new();
    support::garble_root_page(&s.db, "events_event_id");
    let new = support::event("after-damage", "contact.created", json!({"id": "k9"}));
    let out = s.run(&["import", "-"], &new);
    let text = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{text}");
    assert_eq!(text.trim().lines().count(), 1, "{text}");
    let fix = format!("sqlite3 {} .recover", s.db.display());
    assert!(
        text.contains(&fix) && !text.contains("<database>"),
        "{text}"
    );
    // The way back that keeps every event comes first (`.recover` failed on every
    // replica with an older sqlite3, and was the only way named: a probe).
    let rebuild = format!(
        "protocol-mirror --db={} rebuild --into NEW.db",
        s.db.display()
    );
    assert!(text.contains(&rebuild), "{text}");
    assert!(support::with_suffix(&s.db, ".damaged").exists(), "{text}");
}

/// A rebuild in place of a database whose event log is damaged (an index of it) is
/// refused, naming the rebuild into a new database, which replays the log: it read
/// the log by sequence number alone, said it rebuilt the replica, and left the
/// damage (a black-box probe).
#[test]
fn a_rebuild_in_place_refuses_a_damaged_log_and_names_the_rebuild_into_a_new_file() {
    let s = Sample::new();
    let before = s.ok(&["stats", "--format", "json"]);
    support::garble_root_page(&s.db, "events_event_id");
    let out = s.run(&["rebuild"], b"");
    let text = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{text}");
    assert_eq!(text.trim().lines().count(), 1, "{text}");
    let fix = format!("--db={} rebuild --into NEW.db", s.db.display());
    assert!(text.contains("event log") && text.contains(&fix), "{text}");
    assert!(support::with_suffix(&s.db, ".damaged").exists(), "{text}");

    let new = s.dir.path().join("new.db");
    s.ok(&["rebuild", "--into", new.to_str().unwrap()]);
    assert_eq!(support::integrity_check(&new), "ok");
    let stats = ["--db", new.to_str().unwrap(), "stats", "--format", "json"];
    let after = support::run(s.dir.path(), &stats, b"");
    let rows = |stats: &[u8]| serde_json::from_slice::<Value>(stats).unwrap()["rows"].clone();
    assert_eq!(rows(&after.stdout), rows(before.as_bytes()));
}

/// A rebuild into a new file of a log with a damaged page names `--salvage` (it named
/// `rebuild --into` again: a session's note), which replays every entry that can
/// be read and names the sequence numbers of those that cannot; a log no entry of
/// which can be read makes nothing.
#[test]
fn a_damaged_log_is_salvaged_into_a_new_file_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("m.db");
    let events: String = (1..=300)
        .map(|n| {
            let text = "x".repeat(300);
            format!(
                "{{\"id\":\"e{n}\",\"type\":\"message.created\",\"payload\":{{\"id\":\"m{n}\",\
                 \"conversation_id\":\"c\",\"message\":\"{text}\"}}}}\n"
            )
        })
        .collect();
    let mirror = |args: &[&str]| {
        let db = format!("--db={}", db.display());
        support::run(
            dir.path(),
            &[&[db.as_str()], args].concat(),
            events.as_bytes(),
        )
    };
    assert!(mirror(&["import", "-"]).status.success());
    support::garble_leaf_page(&db, "event_bodies", 5);

    let new = dir.path().join("new.db");
    let out = mirror(&["rebuild", "--into", new.to_str().unwrap()]);
    let text = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{text}");
    assert_eq!(text.trim().lines().count(), 1, "{text}");
    let salvage = format!(
        "--db={} rebuild --into {} --salvage",
        db.display(),
        new.display()
    );
    assert!(text.contains(&salvage), "{text}");
    assert!(!new.exists());

    let out = mirror(&["rebuild", "--into", new.to_str().unwrap(), "--salvage"]);
    let text = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    let lost: u64 = text
        .split("warning: ")
        .nth(1)
        .and_then(|warning| warning.split(' ').next())
        .and_then(|count| count.parse().ok())
        .unwrap_or_else(|| panic!("{text}"));
    assert!((1..=20).contains(&lost), "{text}");
    assert!(
        text.contains("sequence numbers") && text.contains("backfill"),
        "{text}"
    );
    assert_eq!(support::integrity_check(&new), "ok");
    let stats = ["--db", new.to_str().unwrap(), "stats", "--format", "json"];
    let stats: Value =
        serde_json::from_slice(&support::run(dir.path(), &stats, b"").stdout).unwrap();
    assert_eq!(stats["rows"]["messages"], 300 - lost, "{stats}");
    assert_eq!(stats["events"]["total"], 300 - lost, "{stats}");

    // Nothing readable: nothing made, and no salvage named again.
    support::garble_root_page(&db, "event_bodies");
    let none = dir.path().join("none.db");
    let out = mirror(&["rebuild", "--into", none.to_str().unwrap(), "--salvage"]);
    let text = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{text}");
    assert!(
        text.contains("cannot be read even in part") && !text.contains("--salvage"),
        "{text}"
    );
    assert!(!none.exists());
    // Only with --into.
    assert_eq!(mirror(&["rebuild", "--salvage"]).status.code(), Some(2));
}

/// A migration that meets damage (its hook reads the messages, and SQLite's error
/// comes back as text) marks the file and names the fix too: it said neither (a
/// black-box probe).
#[test]
fn a_migration_that_meets_damage_names_the_fix_and_marks_the_file() {
    let s = Sample::new();
    rusqlite::Connection::open(&s.db)
        .unwrap()
        .execute_batch("PRAGMA user_version = 16")
        .unwrap();
    support::garble_root_page(&s.db, "messages");
    let out = s.run(&["migrate"], b"");
    let text = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{text}");
    let fix = format!("sqlite3 {} .recover", s.db.display());
    assert!(text.contains("malformed") && text.contains(&fix), "{text}");
    assert!(support::with_suffix(&s.db, ".damaged").exists(), "{text}");
}

/// A damaged database is copied page for page by SQLite's backup API; `backup` reads
/// the copy back through `quick_check` and says so, in one line, keeping the copy.
#[test]
fn backup_reports_a_damaged_database() {
    let s = Sample::new();
    // Garble the root page of the events table (not page 1: the file stays a database).
    support::garble_root_page(&s.db, "events");
    let copy = s.dir.path().join("copy.db");
    let out = s.run(&["backup", copy.to_str().unwrap()], b"");
    let text = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{text}");
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(
        text.contains("damaged") && text.contains("is kept"),
        "{text}"
    );
    // Said of the database: its advice was to restore the copy from a backup.
    assert!(
        !text.contains("copy.db is damaged") && text.contains("restore it from an earlier backup"),
        "{text}"
    );
    assert!(copy.exists(), "the copy is kept");

    // `--no-check` copies without reading the copy back.
    let unchecked = s.dir.path().join("unchecked.db");
    s.ok(&["backup", "--no-check", unchecked.to_str().unwrap()]);
    let check = rusqlite::Connection::open(&unchecked).unwrap().query_row(
        "PRAGMA quick_check",
        [],
        |row| row.get::<_, String>(0),
    );
    assert!(!matches!(check.as_deref(), Ok("ok")), "{check:?}");
}

/// An import that another writer keeps out past the busy timeout (a rebuild, say)
/// says what holds it and what to do, in one line ("database is locked" before).
#[test]
fn an_import_kept_out_by_another_writer_says_so() {
    let s = Sample::new();
    let locker = rusqlite::Connection::open(&s.db).unwrap();
    locker.execute_batch("BEGIN IMMEDIATE").unwrap();
    let out = s.run(&["import", "-"], SAMPLE.as_bytes());
    locker.execute_batch("COMMIT").unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let text = stderr(&out);
    assert!(
        text.contains("stayed locked by another writer") && text.contains("import again"),
        "{text}"
    );
    assert_eq!(text.trim().lines().count(), 1, "{text}");
}

/// An empty `-wal` this user may not write (left by another user's run, say) is named
/// by `import` and `rebuild`, as a non-empty one is. They checked after opening the
/// database, and SQLite, opening the WAL read-only, makes an empty one writable: the
/// check passed and the first write failed with "attempt to write a readonly
/// database" (a black-box probe). File modes bind no one as root, so as root the
/// commands run as `nobody` (with `setpriv`); the test says why it skips elsewhere.
#[cfg(unix)]
#[test]
fn writers_name_an_empty_wal_they_may_not_write() {
    use std::os::unix::fs::PermissionsExt;
    let root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| out.stdout.trim_ascii() == b"0");
    let wrap = |args: &[&str]| {
        let mut cmd = if root {
            let mut cmd = std::process::Command::new("setpriv");
            cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
                .arg(support::bin());
            cmd
        } else {
            std::process::Command::new(support::bin())
        };
        cmd.args(args).env_remove("PROTOCOL_MIRROR_DB");
        support::run_timeout(cmd, Duration::from_secs(30))
    };
    if root && !wrap(&["--version"]).status.success() {
        eprintln!("skipped: as root this needs `setpriv`, and a binary user nobody may run");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("m.db");
    let events = dir.path().join("events.ndjson");
    std::fs::write(&events, SAMPLE).unwrap();
    let db_arg = db.to_str().unwrap();
    let imported = support::run(
        dir.path(),
        &["--db", db_arg, "import", "-"],
        SAMPLE.as_bytes(),
    );
    assert!(imported.status.success(), "{}", stderr(&imported));
    let wal = support::with_suffix(&db, "-wal");
    std::fs::write(&wal, b"").unwrap();
    std::fs::set_permissions(&wal, std::fs::Permissions::from_mode(0o444)).unwrap();
    if root {
        for entry in std::fs::read_dir(dir.path()).unwrap() {
            std::os::unix::fs::chown(entry.unwrap().path(), Some(65534), Some(65534)).unwrap();
        }
        std::os::unix::fs::chown(dir.path(), Some(65534), Some(65534)).unwrap();
    }
    for args in [
        &["--db", db_arg, "import", events.to_str().unwrap()][..],
        &["--db", db_arg, "rebuild"],
    ] {
        let out = wrap(args);
        let text = stderr(&out);
        assert_eq!(out.status.code(), Some(3), "{args:?}: {text}");
        assert!(
            text.contains("m.db-wal") && text.contains("do not remove it"),
            "{args:?}: {text}"
        );
        assert!(!text.contains("readonly database"), "{args:?}: {text}");
        assert_eq!(text.trim().lines().count(), 1, "{args:?}: {text}");
    }
    assert_eq!(support::mode(&wal), 0o444, "nothing opened the WAL");
}

/// Beside a daemon (its lock held), the import waits out a transaction longer than the
/// busy timeout (one event's cascade over a large conversation), as the daemon waits
/// out an import's: it stopped at 5 s, blaming "a rebuild, a migration, or another
/// program" (a regression probe).
#[test]
fn an_import_beside_a_daemon_waits_out_its_long_transaction() {
    let s = Sample::new();
    let _daemon =
        protocol_mirror::lock::ServeLock::acquire(&s.db, protocol_mirror::lock::Role::Daemon)
            .unwrap();
    let locker = rusqlite::Connection::open(&s.db).unwrap();
    locker.execute_batch("BEGIN IMMEDIATE").unwrap();
    let held = protocol_mirror::store::BUSY_TIMEOUT + Duration::from_secs(2);
    let started = Instant::now();
    let out = std::thread::scope(|scope| {
        let import = scope.spawn(|| s.run(&["import", "-"], SAMPLE.as_bytes()));
        std::thread::sleep(held);
        locker.execute_batch("COMMIT").unwrap();
        import.join().unwrap()
    });
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(started.elapsed() >= held);
    assert!(stderr(&out).contains("19 duplicate"), "{}", stderr(&out));
}

/// An import with no daemon beside it whose transactions cannot be marked (something
/// else at `<db>.import.lock`) says nothing of it: the warning names a daemon that
/// may answer 503, and there is none (a review: every import alone said it).
#[test]
fn an_import_alone_that_cannot_mark_its_transactions_says_nothing_of_it() {
    let s = Sample::new();
    std::fs::create_dir(s.dir.path().join("mirror.db.import.lock")).unwrap();
    let out = s.run(&["import", "-"], SAMPLE.as_bytes());
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains("cannot mark"), "{}", stderr(&out));
    assert!(stderr(&out).contains("19 duplicate"), "{}", stderr(&out));
}

#[test]
fn import_backup_rebuild_and_migrate() {
    let s = Sample::new();
    // Importing again: all duplicates; a malformed line is reported by number.
    let mut input = SAMPLE.as_bytes().to_vec();
    input.extend_from_slice(b"not json\n");
    let out = s.run(&["import", "-"], &input);
    assert!(out.status.success());
    let text = stderr(&out);
    assert!(text.contains("19 duplicate"), "{text}");
    assert!(text.contains("line 20"), "{text}");

    // Not one event in the file (a compressed file, say): reported, and a failure.
    let out = s.run(&["import", "-"], b"\x1f\x8b\x08\x00garbage\nmore garbage\n");
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no line of - was an event envelope (2 malformed; line 1: "),
        "{}",
        stderr(&out)
    );
    // One line: no summary of "0 events imported" before the failure.
    assert_eq!(stderr(&out).trim().lines().count(), 1, "{}", stderr(&out));
    assert!(stderr(&out).ends_with("is it NDJSON of Protocol events?\n"));
    // Only lines too long to read, the last without its line end: they may be events,
    // and the message says how to read them (it asked whether the file was NDJSON).
    let long = format!(
        r#"{{"id":"long","type":"contact.created","payload":{{"id":"k","note":"{}"}}}}"#,
        "x".repeat(200)
    );
    let out = s.run(&["import", "--max-line-bytes", "100", "-"], long.as_bytes());
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let text = stderr(&out);
    assert!(
        text.contains(&format!(
            "line 1: longer than 100 bytes: skipped ({} bytes read)): for longer lines, raise --max-line-bytes",
            long.len()
        )),
        "{text}"
    );

    let copy = s.dir.path().join("copy.db");
    s.ok(&["backup", copy.to_str().unwrap()]);
    assert_eq!(support::snapshot(&copy), support::snapshot(&s.db));
    let out = s.run(&["backup", copy.to_str().unwrap()], b"");
    // An existing file is a usage mistake as `-` and a folder are (it was exit 3).
    assert_eq!(
        out.status.code(),
        Some(2),
        "never overwrites: {}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("it exists"), "{}", stderr(&out));
    // Standard output and a folder are usage mistakes, said as such (`-` made a file
    // of that name; a folder was "refusing to overwrite").
    for (target, says) in [("-", "not standard output"), (".", "is a folder")] {
        let out = support::command(s.dir.path())
            .current_dir(s.dir.path())
            .args(["--db", s.db.to_str().unwrap(), "backup", target])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{target}: {}", stderr(&out));
        assert!(stderr(&out).contains(says), "{}", stderr(&out));
    }
    assert!(!s.dir.path().join("-").exists());

    let before = support::snapshot(&s.db);
    let out = s.run(&["rebuild"], b"");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("19 events"), "{}", stderr(&out));
    assert_eq!(support::snapshot(&s.db), before);

    let out = s.run(&["migrate"], b"");
    assert!(
        stderr(&out).contains("already at schema version"),
        "{}",
        stderr(&out)
    );
}

/// An import into an existing database that fails partway (a full disk) says how
/// much it kept: it said only "committing: database or disk is full" (found by a
/// black-box probe).
#[test]
fn an_import_that_fails_partway_says_what_it_kept() {
    let s = Sample::new();
    // The log takes four more events, then the "disk" is full.
    rusqlite::Connection::open(&s.db)
        .unwrap()
        .execute_batch(
            "CREATE TRIGGER full BEFORE INSERT ON events
             WHEN (SELECT count(*) FROM events) >= 23 BEGIN
                 SELECT RAISE(ABORT, 'database or disk is full (test)'); END;",
        )
        .unwrap();
    // Two redeliveries first: kept events count them once (they were counted twice).
    let mut events: String = support::SAMPLE
        .lines()
        .take(2)
        .map(|l| format!("{l}\n"))
        .collect();
    events.extend((0..10).map(|i| {
        format!(
            "{{\"id\":\"full-{i}\",\"type\":\"contact.created\",\"payload\":{{\"id\":\"f{i}\"}}}}\n"
        )
    }));
    let out = s.run(&["import", "--batch-size", "2", "-"], events.as_bytes());
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("the import stopped after 6 events, which are kept")
            && stderr(&out).contains("database or disk is full (test)"),
        "{}",
        stderr(&out)
    );
    assert_eq!(stderr(&out).trim().lines().count(), 1, "{}", stderr(&out));
    // Full before the first commit: said so, naming the database (it said only
    // "saving a row: database or disk is full").
    let more: String = (10..14)
        .map(|i| {
            format!(
                "{{\"id\":\"full-{i}\",\"type\":\"contact.created\",\"payload\":{{\"id\":\"f{i}\"}}}}\n"
            )
        })
        .collect();
    let out = s.run(&["import", "-"], more.as_bytes());
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let text = stderr(&out);
    assert!(
        text.contains("stopped before any event was kept")
            && text.contains(&s.db.display().to_string())
            && text.contains("database or disk is full (test)"),
        "{text}"
    );
    assert_eq!(text.trim().lines().count(), 1, "{text}");
}

/// Several writing commands on one database at once (3 `import`, 3 `migrate` and a
/// `rebuild`) all end well. `import` and `rebuild` checked this user's permissions by
/// opening the database, its WAL and its `-shm` beside their own connection: closing
/// those descriptors dropped every POSIX lock the process held on them, SQLite's
/// included, so another process took the shared memory for unused and started it
/// over under them: 7 to 12 of 15 rounds had a process die of SIGBUS, or fail with
/// "locking protocol" (a black-box probe).
#[cfg(unix)]
#[test]
fn writers_on_one_database_at_once_all_end_well() {
    use std::os::unix::process::ExitStatusExt;
    let s = Sample::new();
    for round in 0..12 {
        let runs: Vec<(&str, std::process::Child)> = (0..3)
            .flat_map(|_| {
                [
                    ("migrate", s.spawn(&["migrate"])),
                    ("import", {
                        let mut child = support::command(s.dir.path())
                            .args(["--db", s.db.to_str().unwrap(), "import", "-"])
                            .stdin(Stdio::piped())
                            .stdout(Stdio::piped())
                            .stderr(Stdio::piped())
                            .spawn()
                            .unwrap();
                        let mut stdin = child.stdin.take().unwrap();
                        stdin.write_all(SAMPLE.as_bytes()).unwrap();
                        child
                    }),
                ]
            })
            .chain([("rebuild", s.spawn(&["rebuild"]))])
            .collect();
        for (what, child) in runs {
            let out = child.wait_with_output().unwrap();
            assert_eq!(
                out.status.signal(),
                None,
                "round {round}: {what} killed by a signal: {}",
                stderr(&out)
            );
            assert!(
                out.status.success(),
                "round {round}: {what}: {}",
                stderr(&out)
            );
        }
    }
}

/// A database of schema version 1, as the first release wrote it, at `db`.
fn first_release_database(db: &Path) {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.execute_batch(include_str!("../../migrations/0001_replica.sql"))
        .unwrap();
    conn.pragma_update(None, "user_version", 1).unwrap();
}

/// An older build's daemon serving a database of its schema: this version's writers
/// leave it alone (`migrate` and `import` migrated it under that daemon, whose reads
/// then failed and whose writes went on by its rules: found by a black-box probe).
/// Once it is stopped, a restart of the daemon, the usual upgrade, migrates and says
/// to rebuild, as `migrate` does.
#[test]
fn an_older_database_is_not_migrated_under_its_daemon_and_upgrades_say_to_rebuild() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("mirror.db");
    first_release_database(&db);
    let before = std::fs::read(&db).unwrap();
    {
        let older_daemon =
            protocol_mirror::lock::ServeLock::acquire(&db, protocol_mirror::lock::Role::Daemon)
                .unwrap();
        // An older build writes its pid alone: it is refused at once (after 10 s
        // before, as a daemon of this version migrating on start is waited for).
        std::fs::write(older_daemon.path(), "4242\n").unwrap();
        for args in [&["migrate"][..], &["import", "-"], &["stats"]] {
            let mut all = vec!["--db", db.to_str().unwrap()];
            all.extend_from_slice(args);
            let started = Instant::now();
            let out = support::run(dir.path(), &all, SAMPLE.as_bytes());
            assert!(started.elapsed() < Duration::from_secs(5), "{args:?}");
            let text = stderr(&out);
            assert_eq!(out.status.code(), Some(3), "{args:?}: {text}");
            assert!(
                text.contains("schema version 1")
                    && text.contains(&format!(
                        "stop it first, then run `protocol-mirror --db={} migrate`",
                        db.display()
                    )),
                "{text}"
            );
            assert_eq!(text.trim().lines().count(), 1, "{text}");
        }
        assert_eq!(std::fs::read(&db).unwrap(), before, "left as it was");
        // An older build's `rebuild`, which ends by itself, is said as such: it was
        // called a daemon, to be stopped, throwing its work away (an upgrade probe).
        std::fs::write(older_daemon.path(), "4243 schema 1 rebuild\n").unwrap();
        for args in [&["migrate"][..], &["stats"]] {
            let mut all = vec!["--db", db.to_str().unwrap()];
            all.extend_from_slice(args);
            let out = support::run(dir.path(), &all, b"");
            let text = stderr(&out);
            assert_eq!(out.status.code(), Some(3), "{args:?}: {text}");
            assert!(
                text.contains("`protocol-mirror rebuild` (pid 4243), which ends by itself"),
                "{args:?}: {text}"
            );
            assert!(!text.contains("stop it"), "{args:?}: {text}");
        }
    }
    let mirror = Mirror::start_in(dir, &[("PROTOCOL_WEBHOOK_SECRET", support::SECRET)], &[]);
    // The rebuild advised names this database (it named none, so acted on the
    // default one: an upgrade probe), as a warning.
    let line = mirror
        .startup
        .lines()
        .find(|line| line.contains("from schema version 1"))
        .unwrap_or_else(|| panic!("{}", mirror.startup));
    assert!(
        line.contains(" WARN ")
            && line.contains(&format!(
                "run `protocol-mirror --db={} rebuild`",
                db.display()
            )),
        "{line}"
    );
}

/// A daemon that migrates a database whose rules were this version's says so as news,
/// not as a warning, and advises nothing (it warned: a black-box probe).
#[test]
fn a_migration_that_needs_nothing_more_is_no_warning() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("mirror.db");
    let out = support::run(dir.path(), &["--db", db.to_str().unwrap(), "migrate"], b"");
    assert!(out.status.success(), "{}", stderr(&out));
    let from = protocol_mirror::store::SCHEMA_VERSION - 1;
    rusqlite::Connection::open(&db)
        .unwrap()
        .pragma_update(None, "user_version", from)
        .unwrap();
    let mirror = Mirror::start_in(dir, &[("PROTOCOL_WEBHOOK_SECRET", support::SECRET)], &[]);
    let line = mirror
        .startup
        .lines()
        .find(|line| line.contains(&format!("from schema version {from}")))
        .unwrap_or_else(|| panic!("{}", mirror.startup));
    assert!(
        line.contains(" INFO ") && !line.contains("rebuild"),
        "{line}"
    );
}

/// The advice to rebuild is kept until a rebuild: `migrate` finding the database at
/// this schema and every start of the daemon say it again (it was said once, at the
/// migration, and a line missed in the daemon's log left nothing to tell: black-box
/// probes); after the rebuild, neither does.
#[test]
fn the_advice_to_rebuild_is_said_until_a_rebuild() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("mirror.db");
    first_release_database(&db);
    let run = |args: &[&str]| {
        let mut all = vec!["--db", db.to_str().unwrap()];
        all.extend_from_slice(args);
        let out = support::run(dir.path(), &all, b"");
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        stderr(&out)
    };
    let serve = || {
        let mut cmd = support::command(dir.path());
        cmd.args(support::serve_args(&db, &[]))
            .env("PROTOCOL_WEBHOOK_SECRET", support::SECRET);
        let mirror = Mirror::launch(cmd, None, db.clone());
        let startup = mirror.startup.clone();
        assert!(mirror.stop().success());
        startup
    };
    let advice = "was migrated from schema version 1 and not rebuilt since";
    assert!(run(&["migrate"]).contains("from schema version 1 to"));
    for _ in 0..2 {
        let text = run(&["migrate"]);
        assert!(
            text.contains("already at schema version")
                && text.contains(advice)
                && text.contains(&format!("`protocol-mirror --db={} rebuild`", db.display())),
            "{text}"
        );
        let startup = serve();
        let line = startup
            .lines()
            .find(|line| line.contains(advice))
            .unwrap_or_else(|| panic!("{startup}"));
        assert!(line.contains(" WARN "), "{line}");
    }
    assert!(run(&["rebuild"]).contains("rebuilt the replica"));
    assert!(!run(&["migrate"]).contains("rebuild"));
    let startup = serve();
    assert!(!startup.contains("rebuild"), "{startup}");
}

/// `rebuild` of an older database migrates it first, and says so as every writer
/// does (an upgrade probe: it said nothing, and the older build refused the file from
/// then on); it is the rebuild the others advise, so it does not advise one.
#[test]
fn a_rebuild_says_it_migrated_an_older_database() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("old.db");
    first_release_database(&db);
    let out = support::run(dir.path(), &["--db", db.to_str().unwrap(), "rebuild"], b"");
    let text = stderr(&out);
    assert!(out.status.success(), "{text}");
    let version = protocol_mirror::store::SCHEMA_VERSION;
    assert!(
        text.contains(&format!("from schema version 1 to {version}")),
        "{text}"
    );
    assert!(text.contains("rebuilt the replica from 0 events"), "{text}");
    assert!(text.contains("(0 log entries changed"), "{text}");
    assert!(
        !text.contains("rebuild` (with the daemon stopped)"),
        "{text}"
    );
}

/// This version's daemon holds the database while it migrates it on start (seconds,
/// for a large one): an import meanwhile waits for the migration, where it was told
/// an older daemon served the database (a regression probe), and so does a reader,
/// which was told to run `migrate`.
#[test]
fn an_import_waits_for_a_daemon_migrating_the_database() {
    let s = Sample::new();
    let version = protocol_mirror::store::SCHEMA_VERSION;
    let conn = rusqlite::Connection::open(&s.db).unwrap();
    let daemon =
        protocol_mirror::lock::ServeLock::acquire(&s.db, protocol_mirror::lock::Role::Daemon)
            .unwrap();
    conn.pragma_update(None, "user_version", version - 1)
        .unwrap();
    let (out, stats) = std::thread::scope(|scope| {
        let import = scope.spawn(|| s.run(&["import", "-"], SAMPLE.as_bytes()));
        let stats = scope.spawn(|| s.run(&["stats"], b""));
        std::thread::sleep(Duration::from_secs(2));
        // The migration ends; the daemon serves on.
        conn.pragma_update(None, "user_version", version).unwrap();
        let out = (import.join().unwrap(), stats.join().unwrap());
        drop(daemon);
        out
    });
    assert!(stats.status.success(), "{}", stderr(&stats));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("19 duplicate"), "{}", stderr(&out));
    // The advice to rebuild where the version it waited on had other rules.
    assert_eq!(
        stderr(&out).contains("rebuild"),
        version - 1 < protocol_mirror::store::SAME_RULES_SINCE,
        "{}",
        stderr(&out)
    );
}

/// Several `migrate`s of one older database at once: one migrates it and says so; the
/// others, which waited on it, say another process did (all said "migrated" before;
/// from schema 12, whose migration to 13 changes no table, two to four of them did).
#[test]
fn concurrent_migrations_are_reported_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("old.db");
    first_release_database(&db);
    migrate_at_once(dir.path(), &db, 1);
    // From schema 12, whose migration to 13 changes no table (and so, from 12 to 14,
    // fails on none of its own).
    let db = dir.path().join("twelve.db");
    database_at_schema(&db, 12);
    migrate_at_once(dir.path(), &db, 12);
}

/// A database of schema `version`, made by the migrations up to it.
fn database_at_schema(db: &Path, version: usize) {
    let folder = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../migrations");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&folder)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "sql"))
        .collect();
    files.sort();
    let conn = rusqlite::Connection::open(db).unwrap();
    for file in &files[..version] {
        conn.execute_batch(&std::fs::read_to_string(file).unwrap())
            .unwrap();
    }
    conn.pragma_update(None, "user_version", version as i64)
        .unwrap();
}

/// Runs four `migrate`s of `db`, at schema `from`, at once, and checks that one says it
/// migrated the database, and the others that another process did.
fn migrate_at_once(home: &Path, db: &Path, from: i64) {
    // Held exclusively while they start, so that all of them find version `from`.
    let mut holder = rusqlite::Connection::open(db).unwrap();
    let held = holder
        .transaction_with_behavior(rusqlite::TransactionBehavior::Exclusive)
        .unwrap();
    let outputs = std::thread::scope(|scope| {
        let runs: Vec<_> = (0..4)
            .map(|_| {
                scope.spawn(|| support::run(home, &["--db", db.to_str().unwrap(), "migrate"], b""))
            })
            .collect();
        std::thread::sleep(Duration::from_millis(700));
        held.rollback().unwrap();
        runs.into_iter()
            .map(|run| run.join().unwrap())
            .collect::<Vec<_>>()
    });
    let texts: Vec<String> = outputs.iter().map(stderr).collect();
    for (out, text) in outputs.iter().zip(&texts) {
        assert!(out.status.success(), "{text}");
    }
    let winner = format!("from schema version {from} to");
    let migrated = texts.iter().filter(|text| text.contains(&winner)).count();
    assert_eq!(migrated, 1, "{texts:#?}");
    assert!(
        texts
            .iter()
            .filter(|text| !text.contains(&winner))
            .all(|text| text.contains("another process migrated it")
                || text.contains("already at schema version")),
        "{texts:#?}"
    );
    // Those that lost the race say to rebuild too, as the winner does (from a schema
    // whose rules were not this version's).
    for text in &texts {
        if text.contains("migrated it") || text.contains(&winner) {
            assert!(
                text.contains(&format!("protocol-mirror --db={} rebuild", db.display())),
                "{text}"
            );
        }
    }
}

#[test]
fn read_only_commands_never_migrate_an_older_database() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("old.db");
    first_release_database(&db);
    let run = |args: &[&str]| {
        let mut all = vec!["--db", db.to_str().unwrap()];
        all.extend_from_slice(args);
        support::run(dir.path(), &all, b"")
    };
    let before = std::fs::read(&db).unwrap();
    for args in [
        &["list", "contacts"][..],
        &["stats"],
        &["events"],
        &["sql", "SELECT 1"],
    ] {
        let out = run(args);
        assert!(!out.status.success(), "{args:?}");
        let text = stderr(&out);
        let fix = format!("protocol-mirror --db={} migrate", db.display());
        assert!(text.contains(&fix), "{text}");
        assert_eq!(text.trim().lines().count(), 1, "{text}");
    }
    assert_eq!(
        std::fs::read(&db).unwrap(),
        before,
        "not migrated by a reader"
    );
    // A backup before migrating is the careful order: it copies the older schema.
    let copy = dir.path().join("before-migrate.db");
    let out = run(&["backup", copy.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let version: i64 = rusqlite::Connection::open(&copy)
        .unwrap()
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .unwrap();
    assert_eq!(version, 1);
    assert_eq!(
        std::fs::read(&db).unwrap(),
        before,
        "not migrated by backup"
    );
    let out = run(&["migrate"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("from schema version 1"),
        "{}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains(&format!("protocol-mirror --db={} rebuild", db.display())),
        "{}",
        stderr(&out)
    );
    assert!(run(&["list", "contacts"]).status.success());
}

#[test]
fn a_missing_or_corrupt_database_is_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.db");
    let corrupt = dir.path().join("corrupt.db");
    std::fs::write(
        &corrupt,
        (0..10_000u32)
            .map(|i| (i * 7919 % 251) as u8)
            .collect::<Vec<_>>(),
    )
    .unwrap();
    for db in [&missing, &corrupt] {
        for args in [
            &["list", "messages"][..],
            &["get", "contact", "x"],
            &["stats"],
            &["search", "x"],
        ] {
            let mut all = vec!["--db", db.to_str().unwrap()];
            all.extend_from_slice(args);
            let out = support::run(dir.path(), &all, b"");
            assert!(!out.status.success());
            assert_ne!(out.status.code(), Some(2));
            let text = stderr(&out);
            assert_eq!(text.trim().lines().count(), 1, "{text}");
            assert!(!text.contains("panicked"));
        }
    }
    assert!(!missing.exists(), "no file created");
    // A replica cut in half: named, with a way out, by readers and writers alike (it
    // was "reading the schema version: database disk image is malformed").
    let whole = dir.path().join("whole.db");
    let out = support::run(
        dir.path(),
        &["--db", whole.to_str().unwrap(), "import", "-"],
        SAMPLE.as_bytes(),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let bytes = std::fs::read(&whole).unwrap();
    let cut = dir.path().join("cut.db");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    // What `args` on `db` says: one line, exit 3.
    let failing = |db: &Path, args: &[&str]| -> String {
        let out = support::run(
            dir.path(),
            &[&["--db", db.to_str().unwrap()], args].concat(),
            b"",
        );
        let text = stderr(&out);
        assert_eq!(out.status.code(), Some(3), "{args:?}: {text}");
        assert_eq!(text.trim().lines().count(), 1, "{text}");
        text
    };
    for args in [&["stats"][..], &["migrate"], &["rebuild"]] {
        let text = failing(&cut, args);
        assert!(
            text.contains("cut.db is damaged") && text.contains("backup"),
            "{args:?}: {text}"
        );
    }
    // Damage met partway (its last page zeroed): SQLite's words, and what to do.
    let mut bytes = bytes;
    let len = bytes.len();
    bytes[len - 4096..].fill(0);
    let zeroed = dir.path().join("zeroed.db");
    std::fs::write(&zeroed, &bytes).unwrap();
    for args in [&["rebuild"][..], &["sql", "SELECT * FROM event_bodies"]] {
        let text = failing(&zeroed, args);
        assert!(
            text.contains("malformed") && text.contains("damaged") && text.contains(".recover"),
            "{args:?}: {text}"
        );
    }
}

/// A replica that lost one of its tables is refused, naming it, by every command but
/// those that save what it has (`sql`, `events`, and `backup`, which says its copy
/// lacks them too), and its event log replayed
/// into a new database as the message says gives the replica back. (Only six tables
/// were checked: without `contacts`, `serve` answered every contact event 503 with
/// `/healthz` ok; a black-box probe. Then checking them all refused `sql` on the
/// log: a review.)
#[test]
fn a_replica_that_lost_a_table_is_named_and_its_log_replays() {
    let dir = tempfile::tempdir().unwrap();
    let whole = dir.path().join("whole.db");
    let run = |args: &[&str], stdin: &[u8]| support::run(dir.path(), args, stdin);
    // With an event of an unknown type that a backfill's entries' types end as: it is
    // replayed (left out, its id was logged anew at a redelivery; a review).
    let odd = r#"{"id":"odd-1","type":"note.backfill","payload":{"id":"n1"}}"#;
    let out = run(
        &["--db", whole.to_str().unwrap(), "import", "-"],
        format!("{SAMPLE}\n{odd}\n").as_bytes(),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let lost = dir.path().join("lost.db");
    std::fs::copy(&whole, &lost).unwrap();
    rusqlite::Connection::open(&lost)
        .unwrap()
        .execute_batch("DROP TABLE contacts")
        .unwrap();
    let before = std::fs::read(&lost).unwrap();
    let db = ["--db", lost.to_str().unwrap()];
    for args in [
        &["stats"][..],
        &["get", "contact", "x"],
        &["import", "-"],
        &["rebuild"],
    ] {
        let out = run(&[&db[..], args].concat(), b"");
        let text = stderr(&out);
        assert_eq!(out.status.code(), Some(3), "{args:?}: {text}");
        assert!(
            text.contains("lost.db is damaged (its table contacts is missing)")
                && text.contains(&format!("--db={} rebuild --into NEW.db", lost.display())),
            "{args:?}: {text}"
        );
    }
    assert_eq!(std::fs::read(&lost).unwrap(), before, "nothing written");
    // `rebuild --into`, as the message says: the replica whole again, its log (the
    // times it was received too) as it was, and the damaged file left as it is.
    let rebuilt = dir.path().join("rebuilt.db");
    let out = run(
        &[&db[..], &["rebuild", "--into", rebuilt.to_str().unwrap()]].concat(),
        b"",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("into"), "{}", stderr(&out));
    let objects = |db: &Path| support::snapshot(db).objects;
    assert_eq!(objects(&rebuilt), objects(&whole));
    let log = |db: &Path| {
        support::texts(
            &support::open_db(db),
            "SELECT event_id || received_at || outcome FROM events ORDER BY seq",
        )
    };
    assert_eq!(log(&rebuilt), log(&whole));
    assert_eq!(std::fs::read(&lost).unwrap(), before, "nothing written");
    // Into a name taken, or `-`: a usage mistake, nothing written.
    // So is a name too long for its lock file beside it (251 bytes failed to lock).
    let long = dir.path().join("x".repeat(251));
    for taken in [rebuilt.to_str().unwrap(), "-", long.to_str().unwrap()] {
        let out = run(&[&db[..], &["rebuild", "--into", taken]].concat(), b"");
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    }
    // A partial database a killed rebuild left (its pid gone) is removed.
    let left = dir.path().join(".again.db.999999999.partial");
    std::fs::write(&left, b"").unwrap();
    let again = dir.path().join("again.db");
    let out = run(
        &[&db[..], &["rebuild", "--into", again.to_str().unwrap()]].concat(),
        b"",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("removed"), "{}", stderr(&out));
    assert!(!left.exists());
    let events = run(&[&db[..], &["events", "--format", "json"]].concat(), b"");
    assert!(events.status.success(), "{}", stderr(&events));
    // A backup copies what it has, and says the copy lacks what it lost. (One of the
    // full-text index's tables lost made the copy's check fail, and the error blamed
    // the copy: "cannot back up to copy.db"; a probe.)
    let fts_lost = dir.path().join("fts-lost.db");
    std::fs::copy(&whole, &fts_lost).unwrap();
    rusqlite::Connection::open(&fts_lost)
        .unwrap()
        .execute_batch("DROP TABLE messages_fts_config")
        .unwrap();
    for (from, table) in [(&lost, "contacts"), (&fts_lost, "messages_fts_config")] {
        let copy = dir.path().join(format!("copy-of-{table}.db"));
        let backup = run(
            &[
                "--db",
                from.to_str().unwrap(),
                "backup",
                copy.to_str().unwrap(),
            ],
            b"",
        );
        let text = stderr(&backup);
        assert_eq!(backup.status.code(), Some(3), "{text}");
        assert!(
            text.contains("but the copy lacks the tables the database lost")
                && text.contains(&format!("(its table {table} is missing)"))
                && !text.contains("cannot back up"),
            "{text}"
        );
        let logged = |db: &Path| -> i64 {
            support::open_db(db)
                .query_row("SELECT COUNT(*) FROM event_bodies", [], |row| row.get(0))
                .unwrap()
        };
        assert_eq!(logged(&copy), logged(&whole), "the copy keeps the log");
    }

    // The replay by hand (docs/CLI.md): its `sql`, its bodies one per line (as `jq`
    // would write them), imported into a new database.
    let bodies = support::replayed_log(dir.path(), &lost).join("\n");
    assert!(bodies.contains(odd), "{bodies}");
    let new = dir.path().join("new.db");
    let out = run(
        &["--db", new.to_str().unwrap(), "import", "-"],
        bodies.as_bytes(),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(objects(&new), objects(&whole));

    // At an older schema, which `migrate` refuses to migrate so, `sql` reads it too.
    rusqlite::Connection::open(&lost)
        .unwrap()
        .execute_batch("PRAGMA user_version = 15")
        .unwrap();
    assert!(!support::replayed_log(dir.path(), &lost).is_empty());
    // And rebuilt into a new database, at this schema.
    let from_15 = dir.path().join("from-15.db");
    let out = run(
        &[&db[..], &["rebuild", "--into", from_15.to_str().unwrap()]].concat(),
        b"",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(objects(&from_15), objects(&whole));
    // Without its whole log, no replay is offered.
    rusqlite::Connection::open(&lost)
        .unwrap()
        .execute_batch("DROP TABLE event_bodies")
        .unwrap();
    let said = stderr(&run(&[&db[..], &["stats"]].concat(), b""));
    assert!(
        said.contains("event_bodies, contacts are missing") && !said.contains("--into"),
        "{said}"
    );
    let out = run(&[&db[..], &["rebuild", "--into", "never.db"]].concat(), b"");
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(!dir.path().join("never.db").exists());
}

#[test]
fn reads_never_fail_while_the_daemon_writes_under_load() {
    let mirror = Mirror::start(&[]);
    let db = mirror.db.clone();
    let addr = mirror.addr;
    let senders: Vec<_> = (0..8)
        .map(|t| {
            std::thread::spawn(move || {
                for i in 0..150 {
                    let body = support::event(
                        &format!("load-{t}-{i}"),
                        "message.created",
                        json!({"id": format!("m-{t}-{i}"), "conversation_id": format!("c{t}"),
                               "message": format!("load test word{i}"), "created_at": i}),
                    );
                    let signature = protocol_verify::sign(support::SECRET, &body);
                    let r = support::request(
                        addr,
                        "POST",
                        "/webhooks",
                        &[("x-protocol-signature", &signature)],
                        &body,
                    );
                    assert_eq!(r.status, 200);
                }
            })
        })
        .collect();
    let mut reads = 0;
    while senders.iter().any(|s| !s.is_finished()) || reads < 10 {
        for args in [
            &[
                "list",
                "messages",
                "--conversation",
                "c1",
                "--limit",
                "5",
                "-f",
                "json",
            ][..],
            &["stats", "-f", "json"],
            &["search", "word7", "-f", "json"],
            &["events", "--limit", "3", "-f", "json"],
        ] {
            let mut all = vec!["--db", db.to_str().unwrap()];
            all.extend_from_slice(args);
            let out = support::run(mirror.dir(), &all, b"");
            assert!(out.status.success(), "{args:?}: {}", stderr(&out));
            assert!(!stderr(&out).contains("locked"));
            reads += 1;
        }
    }
    for sender in senders {
        sender.join().unwrap();
    }
    assert!(reads >= 10);
}

#[test]
fn events_follow_prints_new_events_and_stops_on_ctrl_c() {
    let s = Sample::new();
    let mut child = s.spawn(&["events", "--follow", "--limit", "2", "-f", "ndjson"]);
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first: Vec<Value> = (0..2)
        .map(|_| serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap())
        .collect();
    assert_eq!(first[0]["seq"], 18, "the last two, oldest first");
    assert_eq!(first[1]["seq"], 19);
    let new = support::event("followed", "contact.created", json!({"id": "new"}));
    let out = s.run(&["import", "-"], &new);
    assert!(out.status.success());
    let next: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(next["id"], "followed");
    support::signal(&child, "INT");
    let status =
        support::wait_timeout(&mut child, Duration::from_secs(10)).expect("exits on Ctrl-C");
    assert!(status.success(), "{status:?}");

    // `--limit 0`: only new events (it printed the whole log, then followed). The CSV
    // header says the listing is done.
    let mut child = s.spawn(&["events", "--follow", "--limit", "0", "-f", "csv"]);
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert!(lines.next().unwrap().unwrap().starts_with("seq,"));
    let new = support::event("only-new", "contact.created", json!({"id": "new2"}));
    assert!(s.run(&["import", "-"], &new).status.success());
    let next = lines.next().unwrap().unwrap();
    assert!(next.contains(",only-new,"), "{next}");
    // SIGTERM ends it as Ctrl-C does (it exited 143, Ctrl-C 0).
    support::signal(&child, "TERM");
    let status =
        support::wait_timeout(&mut child, Duration::from_secs(10)).expect("exits on SIGTERM");
    assert!(status.success(), "{status:?}");

    // `| head -n 1`: once the reader is gone, following ends quietly, as `tail -f`
    // does, with no new event to write (it waited for the next one to fail on).
    let mut child = s.spawn(&["events", "--follow", "--limit", "1", "-f", "ndjson"]);
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert!(lines.next().unwrap().unwrap().contains("only-new"));
    drop(lines);
    let status = support::wait_timeout(&mut child, Duration::from_secs(5))
        .expect("ends once its reader has gone");
    assert!(status.success(), "{status:?}");

    // The table's lines are in columns, each as wide as its widest cell so far: the
    // same offset for each field in every line, the header's too (they were joined
    // by two spaces, unaligned).
    let mut child = s.spawn(&["events", "--follow", "--limit", "3"]);
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut table: Vec<String> = (0..4).map(|_| lines.next().unwrap().unwrap()).collect();
    let new = support::event("new-event-id-16c", "group.created", json!({"id": "g9"}));
    assert!(s.run(&["import", "-"], &new).status.success());
    table.push(lines.next().unwrap().unwrap());
    support::signal(&child, "INT");
    support::wait_timeout(&mut child, Duration::from_secs(10)).expect("exits on Ctrl-C");
    let at = |line: &str, field: &str| line.find(field).unwrap_or_else(|| panic!("{field}"));
    let outcome = at(&table[0], "outcome");
    for line in &table[1..] {
        assert_eq!(at(line, "applied"), outcome, "{table:#?}");
    }
    assert!(table[4].contains("group.created"), "{table:#?}");
    assert!(table.iter().all(|l| !l.ends_with(' ')), "{table:#?}");
}

/// A followed database moved away (or replaced) ends the following, saying so: it went
/// on reading the old file, showing nothing of what came to its name (a probe).
#[test]
fn events_follow_ends_when_its_database_is_moved_away() {
    let s = Sample::new();
    let mut child = s.spawn(&["events", "--follow", "--limit", "1", "-f", "ndjson"]);
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert!(lines.next().unwrap().unwrap().contains("\"seq\":19"));
    let moved = s.dir.path().join("moved.db");
    std::fs::rename(&s.db, &moved).unwrap();
    let status = support::wait_timeout(&mut child, Duration::from_secs(10))
        .expect("ends once its database is moved");
    assert_eq!(status.code(), Some(3));
    let err = support::take_stderr(&mut child);
    assert_eq!(
        err,
        format!(
            "protocol-mirror: {} is no longer the database followed (removed, moved or replaced): run `events --follow` again to follow what is there now\n",
            s.db.display()
        )
    );
}

/// A followed log that goes back (an older copy put over the file in place: `cp`
/// keeps its inode) ends the following, saying so: its new events reused numbers
/// already shown, and none was printed (a probe). So does a `-shm` removed under
/// the follower: it read an index no writer updated, and showed nothing more.
#[test]
fn events_follow_ends_when_its_log_goes_back_or_its_index_is_removed() {
    let s = Sample::new();
    let older = s.dir.path().join("older.db");
    assert!(!support::with_suffix(&s.db, "-wal").exists());
    std::fs::copy(&s.db, &older).unwrap();
    let three = contacts_created("later", "k", 3);
    assert!(s.run(&["import", "-"], three.as_bytes()).status.success());
    let mut child = s.spawn(&["events", "--follow", "--limit", "1", "-f", "ndjson"]);
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert!(lines.next().unwrap().unwrap().contains("\"seq\":22"));
    std::fs::copy(&older, &s.db).unwrap();
    let one = support::event(
        "after-the-copy",
        "contact.created",
        json!({"id": "c-after"}),
    );
    assert!(s.run(&["import", "-"], &one).status.success());
    let status = support::wait_timeout(&mut child, Duration::from_secs(10))
        .expect("ends once its log went back");
    assert_eq!(status.code(), Some(3));
    let err = support::take_stderr(&mut child);
    assert!(
        err.contains("went back, from entry 22 to entry 20"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");

    let mut child = s.spawn(&["events", "--follow", "--limit", "1", "-f", "ndjson"]);
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert!(lines.next().unwrap().unwrap().contains("after-the-copy"));
    std::fs::remove_file(support::with_suffix(&s.db, "-shm")).unwrap();
    let status = support::wait_timeout(&mut child, Duration::from_secs(10))
        .expect("ends once its index is removed");
    assert_eq!(status.code(), Some(3));
    let err = support::take_stderr(&mut child);
    assert!(err.contains("no longer the database followed"), "{err}");
}

/// SIGTERM while `events --follow` prints its listing to a reader that is slow to read
/// it ends the following as its normal end (exit 0), once the step of the listing
/// being written is (whole lines, 1,000 events a step): the signal's default action
/// killed it there (exit 143; a review).
#[test]
fn events_follow_stops_cleanly_while_its_listing_is_printed() {
    let s = Sample::new();
    let lines = contacts_created("l", "k", 3000);
    assert!(s.run(&["import", "-"], lines.as_bytes()).status.success());
    let mut child = s.spawn(&["events", "--follow", "--limit", "3000", "-f", "ndjson"]);
    // Nothing is read for a while: the listing fills the pipe and waits.
    std::thread::sleep(Duration::from_millis(700));
    support::signal(&child, "TERM");
    std::thread::sleep(Duration::from_millis(200));
    let mut listing = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut listing)
        .unwrap();
    let status = support::wait_timeout(&mut child, Duration::from_secs(10)).expect("exits");
    assert!(status.success(), "{status:?}");
    let seqs: Vec<i64> = listing
        .lines()
        .map(|line| {
            serde_json::from_str::<Value>(line).unwrap()["seq"]
                .as_i64()
                .unwrap()
        })
        .collect();
    assert!(
        seqs.len().is_multiple_of(1000) && !seqs.is_empty() && seqs.len() <= 3000,
        "{}",
        seqs.len()
    );
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "in order, none missing"
    );
}

/// A large import while following: every event once and in order, across the steps
/// in which what came is read (their bounds: `follow_reads_in_bounded_steps`).
#[test]
fn events_follow_reads_a_large_import_in_steps() {
    let s = Sample::new();
    let mut child = s.spawn(&["events", "--follow", "--limit", "0", "-f", "ndjson"]);
    let stdout = child.stdout.take().unwrap();
    // Read aside (2,500 lines fill a pipe), and given up on after a while rather than
    // wait for lines that never come.
    let (sender, seqs) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let read: Vec<i64> = BufReader::new(stdout)
            .lines()
            .take(2500)
            .map_while(|line| {
                let line: Value = serde_json::from_str(&line.ok()?).ok()?;
                line["seq"].as_i64()
            })
            .collect();
        let _ = sender.send(read);
    });
    std::thread::sleep(Duration::from_millis(600));
    let many: Vec<u8> = (0..2500)
        .flat_map(|i| {
            let mut line = support::event(
                &format!("big{i}"),
                "contact.created",
                json!({"id": format!("k{i}")}),
            );
            line.push(b'\n');
            line
        })
        .collect();
    assert!(s.run(&["import", "-"], &many).status.success());
    let read = seqs.recv_timeout(Duration::from_secs(60));
    support::signal(&child, "INT");
    let status = support::wait_timeout(&mut child, Duration::from_secs(10)).expect("exits");
    assert!(status.success(), "{status:?}");
    let read = read.or_else(|_| seqs.recv_timeout(Duration::from_secs(10)));
    assert_eq!(read, Ok((20..20 + 2500).collect::<Vec<_>>()));
}

/// `events --follow` started before the database is made (beside a starting daemon,
/// or before an import) waits for it, saying so once on stderr, and then follows it
/// from its start (it failed, saying to start the daemon: a black-box probe). Ctrl-C
/// while it waits ends it as following ends, exit 0.
#[test]
fn events_follow_waits_for_the_database_to_be_made() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("later.db");
    let follow = |db: &Path| {
        support::command(dir.path())
            .args([
                "--db",
                db.to_str().unwrap(),
                "events",
                "--follow",
                "--limit",
                "5",
                "-f",
                "ndjson",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut child = follow(&db);
    std::thread::sleep(Duration::from_millis(600));
    assert!(child.try_wait().unwrap().is_none(), "it waits");
    let out = support::run(
        dir.path(),
        &["--db", db.to_str().unwrap(), "import", "-"],
        SAMPLE.as_bytes(),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    // Every event of the import that made it, not the last `--limit` (5) of the 19,
    // as `tail -F` prints the whole of a file that appears (a probe).
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(first["seq"], 1, "from the log's start");
    std::thread::sleep(Duration::from_millis(1500));
    support::signal(&child, "INT");
    let status = support::wait_timeout(&mut child, Duration::from_secs(10)).expect("exits");
    assert!(status.success(), "{status:?}");
    let rest: Vec<Value> = lines
        .map(|line| serde_json::from_str::<Value>(&line.unwrap()).unwrap()["seq"].clone())
        .collect();
    assert_eq!(rest, (2..=19).map(Value::from).collect::<Vec<_>>());
    let err = support::take_stderr(&mut child);
    assert!(
        err.contains("no database at") && err.contains("following it once it is made"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "said once: {err}");

    // An import stopped before it ended left its file: waited through too, until the
    // next import makes the database (the follower ended, exit 3: a probe).
    let again = dir.path().join("again.db");
    std::fs::write(protocol_mirror::store::importing_path(&again), b"").unwrap();
    let mut child = follow(&again);
    std::thread::sleep(Duration::from_millis(600));
    assert!(child.try_wait().unwrap().is_none(), "it waits");
    let out = support::run(
        dir.path(),
        &["--db", again.to_str().unwrap(), "import", "-"],
        SAMPLE.as_bytes(),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(first["seq"], 1);
    support::signal(&child, "INT");
    let status = support::wait_timeout(&mut child, Duration::from_secs(10)).expect("exits");
    assert!(status.success(), "{status:?}");
    // Its reader gone while it waits: it ends, as following ends then.
    let mut child = follow(&dir.path().join("unread.db"));
    drop(child.stdout.take());
    let status = support::wait_timeout(&mut child, Duration::from_secs(10)).expect("ends");
    assert!(status.success(), "{status:?}");
    // Stopped while it waits: exit 0, nothing made.
    let never = dir.path().join("never.db");
    let mut child = follow(&never);
    std::thread::sleep(Duration::from_millis(600));
    support::signal(&child, "TERM");
    let status = support::wait_timeout(&mut child, Duration::from_secs(10)).expect("exits");
    assert!(status.success(), "{status:?}");
    assert!(!never.exists());
    // Not following, a missing database is still an error at once.
    let out = support::run(
        dir.path(),
        &["--db", never.to_str().unwrap(), "events"],
        b"",
    );
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    // One that cannot be reached is no database to wait for (it waited for good, and
    // without --follow said "no database at"): a regression probe.
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"").unwrap();
    let beyond = file.join("x.db");
    for args in [&["events", "--follow"][..], &["events"], &["rebuild"]] {
        let mut all = vec!["--db", beyond.to_str().unwrap()];
        all.extend_from_slice(args);
        let mut cmd = support::command(dir.path());
        cmd.args(&all);
        let out = support::run_timeout(cmd, Duration::from_secs(10));
        assert_eq!(out.status.code(), Some(3), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("cannot read") && !stderr(&out).contains("no database"),
            "{}",
            stderr(&out)
        );
    }
}

/// Runs `import -` on `db`, feeds it three events (ids `<prefix>-0..2`) on a pipe it
/// keeps open, calls `before_ctrl_c`, sends SIGINT, and returns the exit status and
/// stderr.
fn interrupted_import(
    home: &Path,
    db: &Path,
    prefix: &str,
    before_ctrl_c: impl FnOnce(),
) -> (std::process::ExitStatus, String) {
    signalled_import(home, db, prefix, before_ctrl_c, "INT")
}

/// [`interrupted_import`], stopped by `signal` (`INT`, `TERM`, `HUP`).
fn signalled_import(
    home: &Path,
    db: &Path,
    prefix: &str,
    before_ctrl_c: impl FnOnce(),
    signal: &str,
) -> (std::process::ExitStatus, String) {
    let mut child = support::command(home)
        .args(["--db", db.to_str().unwrap(), "import", "-"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    for i in 0..3 {
        let mut line = support::event(
            &format!("{prefix}-{i}"),
            "contact.created",
            json!({"id": format!("{prefix}{i}")}),
        );
        line.push(b'\n');
        stdin.write_all(&line).unwrap();
    }
    stdin.flush().unwrap();
    std::thread::sleep(Duration::from_millis(700));
    before_ctrl_c();
    support::signal(&child, signal);
    let status = support::wait_timeout(&mut child, Duration::from_secs(10))
        .expect("the import stops on the signal while its input stays open");
    let err = support::take_stderr(&mut child);
    drop(stdin);
    (status, err)
}

/// Ctrl-C on `import -` commits what was read and says so (it died silently, the last
/// batch's events lost until imported again; black-box probe). Exit 130, as a shell
/// reports an interrupted command.
#[test]
fn an_interrupted_import_commits_what_it_read_and_says_so() {
    let s = Sample::new();
    let (status, err) = interrupted_import(s.dir.path(), &s.db, "ctrl-c", || {});
    assert_eq!(status.code(), Some(130), "{err}");
    assert!(err.contains("interrupted: imported 3 events"), "{err}");
    let events: Value = serde_json::from_str(&s.ok(&["events", "-f", "json"])).unwrap();
    assert_eq!(events[0]["id"], "ctrl-c-2");
}

/// SIGHUP (the terminal closed) stops an import as Ctrl-C does: what was read is
/// committed, and into a new database put in place (its default action killed the
/// import, and a new database's was removed by the next writer: a review).
#[test]
fn a_hangup_stops_an_import_as_ctrl_c_does() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("new.db");
    let (status, err) = signalled_import(dir.path(), &db, "hup", || {}, "HUP");
    assert_eq!(status.code(), Some(130), "{err}");
    assert!(err.contains("interrupted: imported 3 events"), "{err}");
    assert_eq!(support::event_count(&db), 3);
}

/// An import whose database is removed while it runs says its events went with the
/// file that was, not that they were imported (exit 0: a black-box probe); and so
/// does one stopped by Ctrl-C after the removal (a review).
#[test]
fn an_import_whose_database_is_removed_meanwhile_says_so() {
    #[derive(PartialEq)]
    enum Case {
        Moved,
        RemovedThenCtrlC,
        LogRemoved,
    }
    for case in [Case::Moved, Case::RemovedThenCtrlC, Case::LogRemoved] {
        let s = Sample::new();
        let sampled = support::event_count(&s.db);
        let mut child = s.spawn_with_input(&["import", "-"]);
        let mut stdin = child.stdin.take().unwrap();
        stdin
            .write_all(contacts_created("before", "b", 3).as_bytes())
            .unwrap();
        stdin.flush().unwrap();
        // Once the import has the file open and committed what it read (every 2 s).
        let deadline = Instant::now() + Duration::from_secs(20);
        while support::event_count(&s.db) < sampled + 3 {
            assert!(Instant::now() < deadline, "the import committed nothing");
            std::thread::sleep(Duration::from_millis(50));
        }
        let moved = s.dir.path().join("moved.db");
        match case {
            Case::Moved => std::fs::rename(&s.db, &moved).unwrap(),
            Case::RemovedThenCtrlC => std::fs::remove_file(&s.db).unwrap(),
            Case::LogRemoved => {
                for suffix in ["-wal", "-shm"] {
                    std::fs::remove_file(support::with_suffix(&s.db, suffix)).unwrap();
                }
            }
        }
        stdin
            .write_all(contacts_created("after", "a", 3).as_bytes())
            .unwrap();
        stdin.flush().unwrap();
        if case == Case::RemovedThenCtrlC {
            support::signal(&child, "INT");
        } else {
            drop(stdin);
        }
        let status = support::wait_timeout(&mut child, Duration::from_secs(30)).expect("ends");
        let err = support::take_stderr(&mut child);
        match case {
            Case::Moved => {
                assert_eq!(status.code(), Some(3), "{err}");
                assert!(
                    err.contains(
                        "was removed, replaced or moved away while the import ran: the 6 \
                         events it imported went into the file that was;"
                    ),
                    "{err}"
                );
                // All of them: its log was copied into it, and taken away from beside
                // the name, where the next database there took it for its own (a probe).
                assert_eq!(support::event_count(&moved), sampled + 6);
                assert!(!support::with_suffix(&s.db, "-wal").exists());
            }
            Case::RemovedThenCtrlC => {
                assert_eq!(status.code(), Some(130), "{err}");
                assert!(
                    err.contains("was removed, replaced or moved away while the import ran")
                        && err.contains("else move them away before anything opens"),
                    "{err}"
                );
            }
            // Said as what it is: the file stayed, and holds every event (it was said
            // to have been moved away: a review).
            Case::LogRemoved => {
                assert_eq!(status.code(), Some(3), "{err}");
                assert!(
                    err.contains("-shm of") && err.contains("which holds the 6 events"),
                    "{err}"
                );
                assert_eq!(support::event_count(&s.db), sampled + 6);
            }
        }
    }
}

/// Ctrl-C on `rebuild` rolls it back and says so, exit 130 (it exited 130 without a
/// word: a black-box probe). The rebuild is held at its start by another writer's
/// transaction, so that the signal lands while it runs.
#[test]
fn an_interrupted_rebuild_is_rolled_back_and_says_so() {
    let s = Sample::new();
    let lines = contacts_created("r", "c", 1500);
    let out = s.run(&["import", "-"], lines.as_bytes());
    assert!(out.status.success(), "{}", stderr(&out));
    let before = support::snapshot(&s.db);
    let mut other = support::open_db(&s.db);
    let held = other
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .unwrap();
    let mut child = s.spawn(&["rebuild"]);
    // Its lock file names it once it has begun (its handler is installed by then).
    let lock = s.dir.path().join("mirror.db.lock");
    let pid = child.id().to_string();
    let began = (0..200).any(|_| {
        std::thread::sleep(Duration::from_millis(25));
        std::fs::read_to_string(&lock).is_ok_and(|text| text.contains(&pid))
    });
    assert!(began, "the rebuild never took the lock");
    support::signal(&child, "INT");
    held.rollback().unwrap();
    let status = support::wait_timeout(&mut child, Duration::from_secs(30)).expect("stops");
    let err = support::take_stderr(&mut child);
    assert_eq!(status.code(), Some(130), "{err}");
    assert!(
        err.contains("interrupted: the rebuild was rolled back"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert_eq!(support::snapshot(&s.db), before, "the replica is as it was");
}

/// Into a database that does not exist yet, `import` builds it beside its name and
/// renames it when done; Ctrl-C puts what was read in place before exiting 130, and
/// no file is left behind but the lock file.
#[test]
fn an_interrupted_import_into_a_new_database_keeps_what_it_read() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("new.db");
    let (status, err) = interrupted_import(dir.path(), &db, "new", || {
        // Being built: the name is free until the end.
        assert!(!db.exists());
        assert!(dir.path().join(".new.db.importing").exists());
        // Other writers meanwhile are told an import is building it (they were told
        // "in use by another process; stop it first", of an import that ends).
        for args in [
            &["import", "-"][..],
            &["migrate"],
            &["rebuild"],
            &["serve", "--listen", "127.0.0.1:0"],
        ] {
            let mut all = vec!["--db", db.to_str().unwrap()];
            all.extend_from_slice(args);
            let out = support::run(dir.path(), &all, SAMPLE.as_bytes());
            assert_eq!(out.status.code(), Some(3), "{args:?}: {}", stderr(&out));
            assert!(
                stderr(&out).contains("an import is building it")
                    && !stderr(&out).contains("stop it first")
                    && !stderr(&out).contains("nothing was kept"),
                "{args:?}: {}",
                stderr(&out)
            );
        }
    });
    assert_eq!(status.code(), Some(130), "{err}");
    assert!(err.contains("interrupted: imported 3 events"), "{err}");
    let mut files: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(files, ["new.db", "new.db.lock"]);
    // An ordinary database, in WAL mode (a stopped one was left without).
    let mode: String = support::open_db(&db)
        .query_row("PRAGMA journal_mode", [], |row| row.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    let mut cmd = support::command(dir.path());
    cmd.args(["--db", db.to_str().unwrap(), "stats", "-f", "json"]);
    let out = support::run_timeout(cmd, Duration::from_secs(30));
    assert!(out.status.success(), "{}", stderr(&out));
    let stats: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(stats["rows"]["contacts"], 3, "{stats}");
}

/// Through a symbolic link to a database not there yet, `import` builds it beside the
/// file the link names, as into any new database: it was taken for an existing one and
/// written in place, readable half done (a black-box probe).
#[cfg(unix)]
#[test]
fn an_import_through_a_link_to_no_database_builds_a_new_one() {
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("real");
    std::fs::create_dir(&real).unwrap();
    let link = dir.path().join("link.db");
    std::os::unix::fs::symlink(real.join("new.db"), &link).unwrap();
    let (status, err) = interrupted_import(dir.path(), &link, "linked", || {
        assert!(!real.join("new.db").exists());
        assert!(real.join(".new.db.importing").exists());
        let out = support::run(dir.path(), &["--db", link.to_str().unwrap(), "stats"], b"");
        assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
        assert!(
            stderr(&out).contains("an import is building it"),
            "{}",
            stderr(&out)
        );
    });
    assert_eq!(status.code(), Some(130), "{err}");
    let mut files: Vec<String> = std::fs::read_dir(&real)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(files, ["new.db", "new.db.lock"]);
    assert!(link.symlink_metadata().unwrap().file_type().is_symlink());
}

/// A database's lock file, left empty by the import that made it, given as `--db`:
/// refused by readers and writers alike, and left as it was (an import made a replica
/// of it, and every daemon of the database was refused after: a probe).
#[test]
fn a_databases_lock_file_is_not_taken_for_a_database() {
    let s = Sample::new();
    let lock = support::with_suffix(&s.db, ".lock");
    assert_eq!(std::fs::read(&lock).unwrap(), b"");
    for args in [
        &["import", "-"][..],
        &["stats"],
        &["serve", "--listen", "127.0.0.1:0"],
    ] {
        let mut all = vec!["--db", lock.to_str().unwrap()];
        all.extend_from_slice(args);
        let out = support::run(s.dir.path(), &all, SAMPLE.as_bytes());
        assert_eq!(out.status.code(), Some(3), "{args:?}: {}", stderr(&out));
        let expected = format!(
            "protocol-mirror: {} is a file the database {} keeps beside it, not a database: give {} itself\n",
            lock.display(),
            s.db.display(),
            s.db.display()
        );
        assert_eq!(stderr(&out), expected, "{args:?}");
    }
    assert_eq!(std::fs::read(&lock).unwrap(), b"");
    assert!(!support::with_suffix(&lock, ".lock").exists());
    assert!(s.ok(&["stats", "-f", "json"]).contains("\"events\""));
}

/// `sql` prints JSON, NDJSON and CSV as rows are read: a result without end piped to
/// `head` prints at once and ends when `head` does (it printed nothing and grew by
/// 180 MB a second until memory ran out; a black-box probe).
/// Long lists print as JSON or NDJSON a page at a time (a list of 700,000 messages was
/// held whole: 3 GB): byte for byte what the whole list prints, an empty one too.
#[test]
fn long_lists_print_as_whole_lists_do() {
    let s = Sample::new();
    for resource in ["contacts", "messages", "attachments", "groups"] {
        for format in ["json", "ndjson"] {
            let whole = s.ok(&["list", resource, "--limit", "100", "-f", format]);
            let streamed = s.ok(&["list", resource, "--limit", "1000000", "-f", format]);
            assert_eq!(streamed, whole, "{resource} {format}");
        }
    }
    let args = [
        "list",
        "messages",
        "--conversation",
        "nope",
        "--limit",
        "5000",
    ];
    assert_eq!(s.ok(&[&args[..], &["-f", "json"]].concat()), "[]\n");
    assert_eq!(s.ok(&[&args[..], &["-f", "ndjson"]].concat()), "");
}

#[test]
fn sql_streams_rows_in_constant_memory() {
    let s = Sample::new();
    let endless = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT x FROM c";
    // A table too, a block of rows at a time (drawn whole, it grew until killed).
    for format in ["ndjson", "csv", "json", "table"] {
        let mut child = s.spawn(&["sql", endless, "--format", format]);
        let stdout = child.stdout.take().unwrap();
        // Read apart, so that output that never comes fails the test, not hangs it.
        let (sent, first) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let first: Vec<String> = (0..5).filter_map(|_| lines.next()?.ok()).collect();
            let _ = sent.send(first);
        });
        let Ok(first) = first.recv_timeout(Duration::from_secs(30)) else {
            let _ = child.kill();
            panic!("{format}: no rows within 30 s");
        };
        assert!(first.iter().any(|l| l.contains('1')), "{format}: {first:?}");
        let status = support::wait_timeout(&mut child, Duration::from_secs(10))
            .expect("ends once its output is closed");
        assert!(status.success(), "{format}: {status:?}");
    }
}

/// `m.db` in `dir`, of `count` contacts `c00000`, `c00001`... created a second apart,
/// imported; `shape` may change each one's payload.
fn contacts_database(dir: &Path, count: usize, shape: impl Fn(usize, &mut Value)) -> PathBuf {
    let db = dir.join("m.db");
    let events: String = (0..count)
        .map(|n| {
            let mut payload = json!({"id": format!("c{n:05}"), "created_at": 1_700_000_000 + n});
            shape(n, &mut payload);
            let event =
                json!({"id": format!("e{n:05}"), "type": "contact.created", "payload": payload});
            format!("{event}\n")
        })
        .collect();
    let out = support::run(
        dir,
        &["--db", db.to_str().unwrap(), "import", "-"],
        events.as_bytes(),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    db
}

/// Tables of more than 1,000 rows are printed a block of 1,000 rows at a time, each a
/// table with its header, so that memory stays bounded (`events --limit 1000000`
/// took 1.26 GB drawn whole); every row is there, once, in order.
#[test]
fn long_tables_are_printed_in_blocks_of_rows() {
    let dir = tempfile::tempdir().unwrap();
    let db = contacts_database(dir.path(), 2_100, |_, _| {});
    let db_arg = db.to_str().unwrap();
    let table = |args: &[&str]| {
        let out = support::run(dir.path(), &[&["--db", db_arg], args].concat(), b"");
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        String::from_utf8(out.stdout).unwrap()
    };
    let ids = |text: &str, prefix: char| -> Vec<String> {
        text.lines()
            .filter_map(|line| line.split(['│', '┆']).nth(1))
            .map(str::trim)
            .filter(|cell| cell.starts_with(prefix))
            .map(str::to_owned)
            .collect()
    };
    let newest_first = |prefix: char| -> Vec<String> {
        (0..2_100)
            .rev()
            .map(|n| format!("{prefix}{n:05}"))
            .collect()
    };
    let contacts = table(&["list", "contacts", "--limit", "5000"]);
    assert_eq!(contacts.matches("│ id ").count(), 3, "three headers");
    assert!(
        ids(&contacts, 'c') == newest_first('c'),
        "every contact, once, in order"
    );
    let events = table(&["events", "--limit", "5000"]);
    assert_eq!(events.matches("│ seq ").count(), 3, "three headers");
    let seqs: Vec<String> = events
        .lines()
        .filter_map(|line| line.split(['│', '┆']).nth(1))
        .map(str::trim)
        .filter(|cell| cell.parse::<u32>().is_ok())
        .map(str::to_owned)
        .collect();
    let expected: Vec<String> = (1..=2_100).rev().map(|n| n.to_string()).collect();
    assert!(seqs == expected, "every event, once, in order");
    let rows = table(&["sql", "SELECT id FROM contacts ORDER BY id"]);
    assert_eq!(rows.matches("│ id ").count(), 3, "three headers");
    let mut expected = newest_first('c');
    expected.reverse();
    assert!(ids(&rows, 'c') == expected, "every row, once, in order");
    // Exactly a block: one table, and no empty one after it.
    let block = table(&["list", "contacts", "--limit", "1000"]);
    assert_eq!(block.matches("│ id ").count(), 1);
}

/// A CSV list of up to 1,000 objects is read once and held; a longer one is printed a
/// row at a time, after a first pass for its columns. Either way a key only the
/// last-listed object has (beyond the first page read) is a column, and its row has
/// the value.
#[test]
fn a_csv_list_has_the_keys_of_objects_far_down_the_list() {
    let dir = tempfile::tempdir().unwrap();
    let db = contacts_database(dir.path(), 1_500, |n, payload| {
        if n == 0 || n == 500 {
            payload["pronouns"] = json!("they");
        }
    });
    let db_arg = db.to_str().unwrap();
    for (limit, last) in [("5000", "c00000,"), ("1000", "c00500,")] {
        let args = [
            "--db", db_arg, "list", "contacts", "--limit", limit, "-f", "csv",
        ];
        let out = support::run(dir.path(), &args, b"");
        assert!(out.status.success(), "{}", stderr(&out));
        let csv = String::from_utf8(out.stdout).unwrap();
        let lines: Vec<&str> = csv.lines().collect();
        let listed: usize = limit.parse::<usize>().unwrap().min(1_500);
        assert_eq!(lines.len(), 1 + listed, "--limit {limit}");
        assert!(lines[0].ends_with(",created_at,pronouns"), "{}", lines[0]);
        assert!(lines[listed].starts_with(last) && lines[listed].ends_with(",they"));
        assert!(lines[1].starts_with("c01499,") && lines[1].ends_with(','));
    }
}

/// Configuration mistakes are usage errors (exit 2), found by a documentation probe:
/// a missing API token exited 3, `--api-timeout 0` was accepted (every request then
/// timed out), and an empty PROTOCOL_API_URL was taken for a URL.
#[test]
fn backfill_configuration_mistakes_are_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("m.db");
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let mut cmd = support::command(dir.path());
        cmd.args(["--db", db.to_str().unwrap()])
            .args(args)
            .env_remove("PROTOCOL_API_TOKEN")
            .env_remove("PROTOCOL_API_URL")
            .envs(env.iter().copied());
        support::run_timeout(cmd, Duration::from_secs(30))
    };
    let out = run(&["backfill"], &[("PROTOCOL_API_URL", "")]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("no API token"), "{}", stderr(&out));
    let out = run(
        &["backfill", "--api-timeout", "0"],
        &[("PROTOCOL_API_TOKEN", "t")],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let out = run(
        &["backfill"],
        &[("PROTOCOL_API_URL", "ftp://x"), ("PROTOCOL_API_TOKEN", "t")],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("PROTOCOL_API_URL"),
        "{}",
        stderr(&out)
    );
    let out = run(
        &["backfill", "--api-url", "http://127.0.0.1:9/?x=1"],
        &[("PROTOCOL_API_TOKEN", "t")],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("query"), "{}", stderr(&out));
    // A token put in the URL by mistake is not repeated (a probe).
    let out = run(
        &[
            "backfill",
            "--api-url",
            "http://127.0.0.1:9/tok-secret-7?x=1",
        ],
        &[("PROTOCOL_API_TOKEN", "tok-secret-7")],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(!stderr(&out).contains("tok-secret-7"), "{}", stderr(&out));
    assert!(stderr(&out).contains("[token]"), "{}", stderr(&out));
    let out = run(
        &["serve", "--reconcile-every", "0s"],
        &[("PROTOCOL_API_TOKEN", "t")],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    // A duration humantime cannot read names the form it takes (an operator probe).
    for every in ["-5m", "banana"] {
        let out = run(
            &["serve", "--reconcile-every", every],
            &[("PROTOCOL_API_TOKEN", "t")],
        );
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        assert!(
            stderr(&out).contains("a number and a unit, such as 90s"),
            "{every}: {}",
            stderr(&out)
        );
    }
    // `serve`'s API settings without an interval were taken and ignored: a daemon
    // given a URL and a token never reconciled (a probe). Its variables stay ambient.
    for flags in [
        &["--api-url", "http://127.0.0.1:9"][..],
        &["--token-file", "t"],
        &["--rate", "3"],
        &["--api-timeout", "5"],
    ] {
        let out = run(&[&["serve"][..], flags].concat(), &[]);
        assert_eq!(out.status.code(), Some(2), "{flags:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("--reconcile-every"),
            "{flags:?}: {}",
            stderr(&out)
        );
    }
    assert!(!db.exists(), "nothing created");
}

#[test]
fn a_closed_pipe_exits_quietly() {
    let s = Sample::new();
    let many: Vec<u8> = (0..3000)
        .flat_map(|i| {
            let mut line = support::event(
                &format!("p{i}"),
                "contact.created",
                json!({"id": format!("c{i}"), "username": "x".repeat(200)}),
            );
            line.push(b'\n');
            line
        })
        .collect();
    assert!(s.run(&["import", "-"], &many).status.success());
    // Every format (CSV's writer wraps the I/O error of a closed pipe in its own).
    for format in ["ndjson", "csv", "json", "table"] {
        let mut child = s.spawn(&["list", "contacts", "--limit", "3000", "-f", format]);
        let mut stdout = child.stdout.take().unwrap();
        let mut first = [0u8; 64];
        stdout.read_exact(&mut first).unwrap();
        drop(stdout);
        let output = child.wait_with_output().unwrap();
        assert!(output.status.success(), "{format}: {:?}", output.status);
        assert_eq!(stderr(&output), "", "{format}");
    }
    // A command whose report goes to a closed stderr did its work all the same: an
    // import into a new database exited 3 (the report's `eprintln!` panicked), and a
    // script would have retried it.
    let db = s.dir.path().join("new.db");
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let status = support::command(s.dir.path())
        .args(["--db", db.to_str().unwrap(), "import", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(writer)
        .spawn()
        .and_then(|mut child| {
            child.stdin.take().unwrap().write_all(&many)?;
            child.wait()
        })
        .unwrap();
    assert!(status.success(), "{status:?}");
    let sql = "SELECT COUNT(*) FROM contacts";
    let count = support::run(
        s.dir.path(),
        &["--db", db.to_str().unwrap(), "sql", sql, "-f", "csv"],
        b"",
    );
    assert_eq!(
        String::from_utf8_lossy(&count.stdout).lines().nth(1),
        Some("3000")
    );
}

/// CSV prints every key `get` prints: fields Protocol added after this version (kept in
/// the replica) come after the documented ones; `events` has every column its JSON has.
#[test]
fn csv_has_every_key_received() {
    let s = Sample::new();
    let line = support::event(
        "x1",
        "contact.created",
        json!({"id": "k2", "username": "u", "pronouns": "they", "badges": [1, 2]}),
    );
    assert!(s.run(&["import", "-"], &line).status.success());
    let csv = s.ok(&["get", "contact", "k2", "--format", "csv"]);
    let mut lines = csv.lines();
    assert_eq!(
        lines.next().unwrap(),
        "id,username,phone_number,avatar_url,display_name,conversation_id,last_active_at,created_at,badges,pronouns"
    );
    assert_eq!(lines.next().unwrap(), "k2,u,,,,,,,\"[1,2]\",they");
    let events = s.ok(&["events", "--limit", "1", "--format", "csv"]);
    assert_eq!(
        events.lines().next().unwrap(),
        "seq,received_at,type,id,object_id,outcome,cascaded,error,duplicates,source"
    );
    assert!(
        events.lines().nth(1).unwrap().ends_with(",0,import"),
        "{events}"
    );
}

/// `list` takes the read API's boolean filters: `--muted` (or `--muted false`),
/// `--pinned` and `--archived`, where they apply.
#[test]
fn list_filters_conversations_and_groups_by_flags() {
    let s = Sample::new();
    let mut more = support::event(
        "f1",
        "conversation.created",
        json!({"id": "quiet", "is_muted": false, "is_pinned": true}),
    );
    more.push(b'\n');
    more.extend(support::event(
        "f2",
        "group.created",
        json!({"id": "old-group", "archived_at": 700_000_000}),
    ));
    assert!(s.run(&["import", "-"], &more).status.success());
    let ids = |args: &[&str]| -> Vec<String> {
        let mut all = vec!["list"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--format", "json"]);
        let list: Vec<Value> = serde_json::from_str(&s.ok(&all)).unwrap();
        list.iter()
            .map(|o| o["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let all = ids(&["conversations"]);
    let muted = ids(&["conversations", "--muted"]);
    let unmuted = ids(&["conversations", "--muted", "false"]);
    assert!(!muted.is_empty() && !unmuted.is_empty(), "{all:?}");
    assert_eq!(muted.len() + unmuted.len(), all.len());
    assert!(muted.iter().all(|id| !unmuted.contains(id)));
    assert_eq!(ids(&["conversations", "--muted=true"]), muted);
    assert!(unmuted.contains(&"quiet".to_owned()), "{unmuted:?}");
    let pinned = ids(&["conversations", "--pinned"]);
    let unpinned = ids(&["conversations", "--pinned", "false"]);
    assert!(pinned.contains(&"quiet".to_owned()), "{pinned:?}");
    assert_eq!(pinned.len() + unpinned.len(), all.len());
    let groups = ids(&["groups"]).len();
    let archived = ids(&["groups", "--archived"]);
    let live = ids(&["groups", "--archived", "false"]);
    assert_eq!(archived, ["old-group"]);
    assert_eq!(archived.len() + live.len(), groups);
    let out = s.run(&["list", "groups", "--muted"], b"");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--archived"), "{}", stderr(&out));
    // A resource after the flag is taken for its value: the fix is said (a probe).
    let out = s.run(&["list", "--muted", "conversations"], b"");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("`list conversations --muted`"),
        "{}",
        stderr(&out)
    );
}

/// An empty list (or search) whose id filter names no stored object says so on
/// stderr, and still exits 0; one whose ids are all stored says nothing more.
#[test]
fn an_empty_list_names_the_ids_it_does_not_know() {
    let s = Sample::new();
    let quiet = support::event(
        "q1",
        "conversation.created",
        json!({"id": "quiet", "is_muted": false}),
    );
    assert!(s.run(&["import", "-"], &quiet).status.success());
    for format in ["json", "table", "csv", "ndjson"] {
        let out = s.run(
            &[
                "list",
                "messages",
                "--conversation",
                "nosuch",
                "--format",
                format,
            ],
            b"",
        );
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(
            stderr(&out).trim(),
            "protocol-mirror: no conversation with id \"nosuch\" is stored",
            "{format}"
        );
        let out = s.run(
            &[
                "list",
                "messages",
                "--conversation",
                "quiet",
                "--format",
                format,
            ],
            b"",
        );
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(stderr(&out), "", "{format}");
    }
    let out = s.run(&["search", "anything", "--conversation", "nosuch"], b"");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stderr(&out).trim(),
        "protocol-mirror: no conversation with id \"nosuch\" is stored",
    );
    let out = s.run(
        &[
            "list",
            "attachments",
            "--message",
            "m-gone",
            "--format",
            "json",
        ],
        b"",
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "[]");
    assert!(
        stderr(&out).contains("no message with id \"m-gone\" is stored"),
        "{}",
        stderr(&out)
    );
}

/// A standard input left non-blocking by the program sharing it (Node.js leaves pipes
/// so) is waited on: `import -` and `sign` read it as they read a blocking one.
#[cfg(unix)]
#[test]
fn a_non_blocking_standard_input_is_waited_for() {
    use std::os::unix::net::UnixStream;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("mirror.db");
    let secret = dir.path().join("secret");
    support::write_private(&secret, support::SECRET);
    let commands: [(&[&str], &[u8]); 2] = [
        (
            &["--db", db.to_str().unwrap(), "import", "-"],
            SAMPLE.as_bytes(),
        ),
        (
            &["sign", "--secret-file", secret.to_str().unwrap()],
            b"{\"id\":\"e1\"}",
        ),
    ];
    for (args, input) in commands {
        let (mut ours, theirs) = UnixStream::pair().unwrap();
        theirs.set_nonblocking(true).unwrap();
        let child = support::command(dir.path())
            .args(args)
            .stdin(std::os::fd::OwnedFd::from(theirs))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Nothing yet: the first read finds the input empty.
        std::thread::sleep(Duration::from_millis(300));
        ours.write_all(input).unwrap();
        drop(ours);
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    }
    assert_eq!(
        support::event_count(&db),
        SAMPLE.lines().filter(|l| !l.trim().is_empty()).count() as i64
    );
}

/// A table cut at its `--limit` says on stderr that there are more (100 rows of many
/// thousands said nothing: an operator probe); a table of exactly `--limit` rows, with
/// none beyond, says nothing (it said "there may be more": a note), nor do shorter
/// tables, nor JSON, CSV and NDJSON, for programs.
#[test]
fn a_table_cut_at_its_limit_says_there_are_more() {
    let s = Sample::new();
    // The sample keeps one message and one contact: three more of each.
    let more: Vec<u8> = (0..3)
        .flat_map(|i| {
            let message = json!({"id": format!("m{i}"), "conversation_id": "c1",
                                 "message": format!("more meetings {i}"), "created_at": i});
            let contact = json!({"id": format!("k{i}"), "username": format!("k{i}")});
            [
                support::event(&format!("em{i}"), "message.created", message),
                b"\n".to_vec(),
                support::event(&format!("ek{i}"), "contact.created", contact),
                b"\n".to_vec(),
            ]
            .concat()
        })
        .collect();
    let out = s.run(&["import", "-"], &more);
    assert!(out.status.success(), "{}", stderr(&out));
    let note = "the first one shown (--limit); there are more";
    for listing in [
        &["list", "messages"][..],
        &["events"],
        &["list", "contacts"],
        &["search", "meetings"],
    ] {
        let limited = |limit: usize, more: &[&str]| {
            let limit = limit.to_string();
            s.run(&[listing, &["--limit", &limit], more].concat(), b"")
        };
        let args = &[listing, &["--limit", "1"]].concat()[..];
        let out = s.run(args, b"");
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(stderr(&out).contains(note), "{args:?}: {}", stderr(&out));
        for format in ["json", "csv", "ndjson"] {
            let out = s.run(&[args, &["--format", format]].concat(), b"");
            assert_eq!(stderr(&out), "", "{args:?} {format}");
        }
        // As many rows as there are: no note.
        let all = limited(100_000, &["-f", "ndjson"]);
        let count = String::from_utf8_lossy(&all.stdout).lines().count();
        assert!(count > 1, "{listing:?}");
        let exact = limited(count, &[]);
        assert!(exact.status.success(), "{}", stderr(&exact));
        assert_eq!(stderr(&exact), "", "{listing:?} -n {count}");
        // None asked for: nothing said of more (it said "the first 0 shown").
        let none = limited(0, &[]);
        assert_eq!(stderr(&none), "", "{listing:?} -n 0");
        let cut = limited(count - 1, &[]);
        assert!(stderr(&cut).contains("there are more"), "{listing:?}");
    }
    let out = s.run(&["list", "messages", "-n", "1000"], b"");
    assert_eq!(stderr(&out), "");
}

/// A database a writer was killed while making (a hot rollback journal beside it) is
/// named so to readers, which cannot roll it back, and `migrate` rolls it back and
/// goes on. Both said an `-shm` file could not be made, and `migrate` failed for good
/// (a black-box probe, whose files these are).
#[test]
fn a_write_left_unfinished_is_named_and_migrate_rolls_it_back() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("mirror.db");
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/data/interrupted-write");
    std::fs::copy(data.join("replica"), &db).unwrap();
    std::fs::copy(
        data.join("replica-journal"),
        support::with_suffix(&db, "-journal"),
    )
    .unwrap();
    let run = |args: &[&str]| {
        support::run(
            dir.path(),
            &[&["--db", db.to_str().unwrap()][..], args].concat(),
            b"",
        )
    };
    for args in [&["stats"][..], &["sql", "SELECT 1"], &["events"]] {
        let out = run(args);
        assert_eq!(out.status.code(), Some(3), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("a writer stopped in the middle of a transaction")
                // With the database given (as printed, it acted on the default one,
                // where `migrate` made an empty database: a new user's walk).
                && stderr(&out).contains(&format!(
                    "run `protocol-mirror --db={} migrate`",
                    db.display()
                )),
            "{args:?}: {}",
            stderr(&out)
        );
    }
    let out = run(&["migrate"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = run(&["stats", "--format", "json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!support::with_suffix(&db, "-journal").exists());
}

/// `events --type` takes Protocol's types in any case, as `--outcome` does (an
/// operator probe's `MESSAGE.CREATED` listed nothing).
#[test]
fn events_take_a_known_type_in_any_case() {
    let s = Sample::new();
    let lower = s.ok(&["events", "--type", "contact.created", "-f", "ndjson"]);
    assert!(!lower.is_empty());
    for given in ["CONTACT.CREATED", "Contact.Created"] {
        let out = s.run(&["events", "--type", given, "-f", "ndjson"], b"");
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(String::from_utf8_lossy(&out.stdout), lower, "{given}");
        assert_eq!(stderr(&out), "", "{given}");
    }
    // A type logged in another case (unsupported) is listed by that case too, with
    // Protocol's (it could not be listed at all: a probe).
    let odd = br#"{"id":"odd-case","type":"Contact.Created","payload":{"id":"k"}}"#;
    let out = s.run(&["import", "-"], odd);
    assert!(out.status.success(), "{}", stderr(&out));
    let listed = s.ok(&["events", "--type", "Contact.Created", "-f", "ndjson"]);
    assert_eq!(
        listed.lines().count(),
        lower.lines().count() + 1,
        "{listed}"
    );
    assert!(
        listed
            .lines()
            .next()
            .unwrap()
            .contains(r#""id":"odd-case""#),
        "{listed}"
    );
    assert_eq!(
        s.ok(&["events", "--type", "contact.created", "-f", "ndjson"]),
        lower
    );
    // An empty one is a mistake (it listed nothing, exit 0; a probe).
    let out = s.run(&["events", "--type", ""], b"");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

/// `sql` with nothing to run is a usage mistake (exit 2); `backup` into a folder that
/// does not exist fails and creates nothing; `migrate` of a folder says it is one.
#[test]
fn command_line_mistakes_are_named() {
    let s = Sample::new();
    let out = s.run(&["sql", " ; "], b"");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let missing = s.dir.path().join("typo").join("copy.db");
    let out = s.run(&["backup", missing.to_str().unwrap()], b"");
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("no such folder"), "{}", stderr(&out));
    assert!(!s.dir.path().join("typo").exists());
    // A URL that is not one is refused at once (it was retried as a network error).
    let token = s.dir.path().join("token");
    support::write_private(&token, "t0k3n\n");
    let started = Instant::now();
    let out = s.run(
        &[
            "backfill",
            "--api-url",
            "notaurl",
            "--token-file",
            token.to_str().unwrap(),
        ],
        b"",
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(stderr(&out).contains("--api-url"), "{}", stderr(&out));
    // Writes refused by `sql`, a URL that is not one for `send`, an address that is not
    // one for `serve`, and limits of 0 (a daemon that could never answer): exit 2.
    let line = support::event("u1", "contact.created", json!({"id": "u"}));
    let mistakes: [&[&str]; 10] = [
        &["serve", "--queue", "18446744073709551615"],
        &["serve", "--concurrency-limit", "3000000000000000000"],
        &["serve", "--header-timeout", "18446744073709551615"],
        &["sql", "DELETE FROM messages"],
        &["send", "--url", "ftp://x", "-"],
        &["serve", "--listen", "nonsense"],
        &["serve", "--concurrency-limit", "0"],
        &["serve", "--request-timeout", "0"],
        &["serve", "--queue", "0"],
        &["serve", "--max-batch", "0"],
    ];
    for args in mistakes {
        let out = s.run(args, &line);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
    }
    // A secret file its group may read is refused, like one anybody may read.
    let secret = s.dir.path().join("secret");
    std::fs::write(&secret, "s3cret\n").unwrap();
    #[cfg(unix)]
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o640)).unwrap();
    let out = s.run(&["sign", "--secret-file", secret.to_str().unwrap()], &line);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("chmod 600"), "{}", stderr(&out));
    // Another program's database: `serve` refuses it and leaves nothing beside it.
    let foreign = s.dir.path().join("other.db");
    rusqlite::Connection::open(&foreign)
        .unwrap()
        .execute_batch("CREATE TABLE notes (text TEXT)")
        .unwrap();
    let out = support::run(
        s.dir.path(),
        &[
            "--db",
            foreign.to_str().unwrap(),
            "serve",
            "--listen",
            "127.0.0.1:0",
        ],
        b"",
    );
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(!s.dir.path().join("other.db.lock").exists());
    let folder = s.dir.path().to_str().unwrap();
    let out = support::run(s.dir.path(), &["--db", folder, "migrate"], b"");
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("not a folder"), "{}", stderr(&out));
}

#[test]
fn sign_send_completions_and_help() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    support::write_private(&secret, &format!("{}\n", support::SECRET));
    let out = support::run(
        dir.path(),
        &["sign", "--secret-file", secret.to_str().unwrap()],
        b"hello",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().trim(),
        protocol_verify::sign(support::SECRET, b"hello")
    );

    let mirror = Mirror::start(&[]);
    let url = format!("http://{}/webhooks", mirror.addr);
    let send = |input: &[u8]| send(dir.path(), &url, &secret, input);
    let out = send(SAMPLE.as_bytes());
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("18 × 200 applied"),
        "{}",
        stderr(&out)
    );
    assert_eq!(support::event_count(&mirror.db), 19);

    // A byte order mark before the first line is skipped; a line the mirror refuses
    // is reported by number, and the command fails with 3 like any other failure.
    let input = "\u{feff}{\"id\":\"s1\",\"type\":\"contact.created\",\"payload\":{\"id\":\"s1\"}}\nnot json\n";
    let out = send(input.as_bytes());
    let text = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{text}");
    assert!(text.contains("line 2: 400"), "{text}");
    assert!(text.contains("1 × 200 applied"), "{text}");
    assert_eq!(support::event_count(&mirror.db), 20);

    // A secret the daemon does not have: the note says which one signed (a daemon
    // started with --secret-file refused the generated one, unsaid: a probe).
    let wrong = dir.path().join("wrong-secret");
    support::write_private(&wrong, "not-the-daemons\n");
    let out = self::send(
        dir.path(),
        &url,
        &wrong,
        b"{\"id\":\"w1\",\"type\":\"contact.created\",\"payload\":{\"id\":\"w1\"}}\n",
    );
    let text = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{text}");
    assert!(
        text.contains(&format!(
            "these were signed with the secret of --secret-file {}; sign with one of its secrets",
            wrong.display()
        )),
        "{text}"
    );
    assert!(!text.contains("not-the-daemons"), "{text}");
    // A URL without the endpoint's path: every line a 404, and a hint at /webhooks.
    let root = format!("http://{}", mirror.addr);
    let out = self::send(dir.path(), &root, &secret, SAMPLE.as_bytes());
    let text = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{text}");
    assert!(text.contains("sent: 19 × 404"), "{text}");
    assert!(
        text.contains("/webhooks (--url http://HOST:PORT/webhooks)"),
        "{text}"
    );
    // A 404 at /webhooks itself: a listener that takes no webhooks, such as
    // `--read-listen`'s (it was told of the path it had right: a README walk).
    let read_only = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/webhooks", read_only.local_addr().unwrap());
    let answering = std::thread::spawn(move || {
        let (mut stream, _) = read_only.accept().unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap() == 1 {
            head.push(byte[0]);
        }
        stream
            .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            .unwrap();
    });
    let one = SAMPLE.lines().next().unwrap().as_bytes();
    let out = self::send(dir.path(), &url, &secret, one);
    answering.join().unwrap();
    let text = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{text}");
    assert!(text.contains("--read-listen"), "{text}");
    assert!(
        !text.contains("(--url http://HOST:PORT/webhooks)"),
        "{text}"
    );
    // Nothing listening: what was sent (nothing), then one line that says where
    // it stopped and asks whether the daemon runs there (it said only "line 1:
    // cannot reach", no summary: a new user's probe).
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let nowhere = format!("http://{}/webhooks", closed.local_addr().unwrap());
    drop(closed);
    let out = self::send(dir.path(), &nowhere, &secret, SAMPLE.as_bytes());
    let text = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{text}");
    assert!(text.starts_with("sent: nothing\n"), "{text}");
    let last = text.lines().last().unwrap_or_default();
    assert!(last.contains("line 1: cannot reach"), "{text}");
    assert!(
        last.contains("is `protocol-mirror serve` listening there?"),
        "{text}"
    );

    let out = support::run(dir.path(), &["completions", "bash"], b"");
    assert!(out.status.success());
    let script = String::from_utf8(out.stdout).unwrap();
    assert!(script.contains("protocol-mirror"));
    // Past the subcommand's name too (clap_complete spelled the states of a hyphenated
    // binary's subcommands two ways, and only subcommand names completed).
    let path = dir.path().join("completion.bash");
    std::fs::write(&path, &script).unwrap();
    // What bash completes for the word `cur` after `before` (the words typed before
    // it), or `None` where there is no bash to ask.
    let complete = |before: &str, cur: &str| -> Option<String> {
        let words = before.split_whitespace().count();
        let previous = before.split_whitespace().last().unwrap_or_default();
        let probe = format!(
            "source {}; COMP_WORDS=({before} {cur}); COMP_CWORD={words}; \
             _protocol__mirror protocol-mirror {cur} {previous}; echo \"${{COMPREPLY[*]}}\"",
            path.display()
        );
        shell_output("bash", &["-c", &probe])
    };
    if let Some(flags) = complete("protocol-mirror list messages", "--for") {
        assert_eq!(flags, "--format");
    }
    // Resource names complete after `list` and `get` (only flags did).
    if let Some(names) = complete("protocol-mirror get", "mes") {
        assert_eq!(names, "messages");
    }

    // fish's script completes them too (clap_complete's completes only options there).
    let out = support::run(dir.path(), &["completions", "fish"], b"");
    assert!(out.status.success());
    let path = dir.path().join("completion.fish");
    std::fs::write(&path, &out.stdout).unwrap();
    // What fish completes for `line`, or `None` where there is no fish to ask.
    let fish = |line: &str| -> Option<String> {
        let probe = format!("source {}; complete -C '{line}'", path.display());
        shell_output("fish", &["--no-config", "-c", &probe])
    };
    if let Some(names) = fish("protocol-mirror list mes") {
        assert_eq!(names, "messages");
    }
    if let Some(names) = fish("protocol-mirror get ") {
        assert_eq!(
            names.lines().collect::<Vec<_>>(),
            [
                "attachments",
                "contacts",
                "conversations",
                "groups",
                "messages"
            ]
        );
    }
    if let Some(shells) = fish("protocol-mirror completions z") {
        assert_eq!(shells, "zsh");
    }
    if let Some(flags) = fish("protocol-mirror list messages --for") {
        assert!(flags.starts_with("--format\t"), "{flags}");
    }

    for command in [
        "serve",
        "list",
        "get",
        "search",
        "sql",
        "events",
        "stats",
        "import",
        "rebuild",
        "backup",
        "migrate",
        "backfill",
        "sign",
        "send",
        "completions",
    ] {
        let out = support::run(dir.path(), &[command, "--help"], b"");
        assert!(out.status.success(), "{command}");
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(help.contains("Example"), "{command} --help has an example");
    }
}

/// What `shell` with `args` prints, trimmed, or `None` where there is no such shell.
/// It must succeed.
fn shell_output(shell: &str, args: &[&str]) -> Option<String> {
    let out = std::process::Command::new(shell).args(args).output().ok()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// `send` and `import` given a folder say so, as a usage mistake, before sending or
/// writing anything (`send` said it sent nothing, then that reading failed: a probe).
#[test]
fn send_and_import_given_a_folder_say_so() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    support::write_private(&secret, "s3cret");
    let folder = dir.path().join("events");
    std::fs::create_dir(&folder).unwrap();
    let folder = folder.to_str().unwrap();
    let db = dir.path().join("m.db");
    let secret = secret.to_str().unwrap();
    for (command, args) in [
        (
            "send",
            vec![
                "send",
                "--url",
                "http://127.0.0.1:9/webhooks",
                "--secret-file",
                secret,
                folder,
            ],
        ),
        (
            "import",
            vec!["--db", db.to_str().unwrap(), "import", folder],
        ),
        // With no secret configured, the folder is the mistake told (it was "no
        // secret": a probe).
        ("send", vec!["--db", db.to_str().unwrap(), "send", folder]),
    ] {
        let out = support::run(dir.path(), &args, b"");
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        assert_eq!(
            stderr(&out),
            format!(
                "protocol-mirror: {folder} is a folder: {command} takes an NDJSON file of events, or - for standard input\n"
            )
        );
    }
    assert!(!db.exists());
}

/// `protocol-mirror send --url URL --secret-file SECRET -` with `input` on stdin.
fn send(home: &Path, url: &str, secret: &Path, input: &[u8]) -> Output {
    support::run(
        home,
        &[
            "send",
            "--url",
            url,
            "--secret-file",
            secret.to_str().unwrap(),
            "-",
        ],
        input,
    )
}

/// Reads one HTTP request from `stream`: the lines of its head, and its body (of its
/// `content-length`).
fn read_request(stream: &std::net::TcpStream) -> (Vec<String>, Vec<u8>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut head = Vec::new();
    let mut length = 0;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = value.trim().parse().unwrap();
        }
        if line.trim().is_empty() {
            break;
        }
        head.push(line);
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).unwrap();
    (head, body)
}

/// `send` follows no redirect: a 302 is an answer that did not take the event (it
/// followed it, as a GET without the body, and counted the 200 of that for the
/// event's). A line that is not UTF-8 is said by its number and the rest is sent (it
/// stopped there, with no summary). A review of the tools found both.
#[test]
fn send_follows_no_redirect_and_skips_lines_that_are_not_text() {
    let dir = tempfile::tempdir().unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/webhooks", listener.local_addr().unwrap());
    let server = std::thread::spawn(move || {
        let mut requests = Vec::new();
        for stream in listener.incoming().take(2) {
            let mut stream = stream.unwrap();
            let (head, _) = read_request(&stream);
            requests.push(head[0].clone());
            stream
                .write_all(
                    b"HTTP/1.1 302 Found\r\nlocation: /healthz\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                )
                .unwrap();
        }
        requests
    });
    let secret = dir.path().join("secret");
    support::write_private(&secret, "s3cret");
    let mut input = br#"{"id":"e1","type":"contact.created","payload":{"id":"c1"}}"#.to_vec();
    input.extend(b"\n{\"id\":\"x\xff\"}\n");
    input.extend(br#"{"id":"e3","type":"contact.created","payload":{"id":"c3"}}"#);
    let out = send(dir.path(), &url, &secret, &input);
    let text = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{text}");
    for said in [
        "line 1: 302",
        "line 2: not UTF-8 text: not sent",
        "line 3: 302",
        "sent: 2 × 302",
        "a 3xx is a redirect",
        "2 of the events sent were not accepted; 1 line was not UTF-8 text, and not sent",
    ] {
        assert!(text.contains(said), "{said}: {text}");
    }
    let requests = server.join().unwrap();
    assert!(
        requests
            .iter()
            .all(|line| line.starts_with("POST /webhooks")),
        "{requests:?}"
    );
}

/// A receiver that closes the connection after each answer without saying so (one
/// that answered without reading the body closes it so, with a reset): `send` tries
/// the event again on a new connection. It stopped at the second line as if nothing
/// listened ("cannot reach ... Connection reset by peer"); the mirror's 404 for a
/// path it does not serve can close it so, and `send` to a wrong URL failed that way
/// once in a full run of the tests.
#[test]
fn send_tries_again_on_a_connection_the_receiver_closed() {
    let dir = tempfile::tempdir().unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/webhooks", listener.local_addr().unwrap());
    // Not joined: without the retry, fewer connections come than it waits for.
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let mut stream = stream.unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap() > 0 && line != "\r\n" {
                line.clear();
            }
            stream
                .write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 2\r\n\r\nno")
                .unwrap();
            // Closed a moment later: after the next request came (closed at once,
            // the client sees it before sending on it).
            std::thread::sleep(Duration::from_millis(200));
        }
    });
    let secret = dir.path().join("secret");
    support::write_private(&secret, "s3cret");
    let input: String = (1..=3)
        .map(|n| {
            format!(
                "{{\"id\":\"e{n}\",\"type\":\"contact.created\",\"payload\":{{\"id\":\"c{n}\"}}}}\n"
            )
        })
        .collect();
    let out = send(dir.path(), &url, &secret, input.as_bytes());
    let text = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{text}");
    assert!(text.contains("sent: 3 × 404"), "{text}");
    assert!(!text.contains("cannot reach"), "{text}");
}

/// An `https://` URL for a server that speaks plain HTTP is said to be one, by `send`
/// and by `backfill` (which does not try again: it would fail alike). rustls said
/// "received corrupt message of type InvalidContentType", and backfill tried five
/// times over 16 s (an operator probe).
#[test]
fn https_to_a_plain_http_server_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = connections.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let mut stream = stream.unwrap();
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let mut hello = [0; 512];
            let _ = stream.read(&mut hello);
            let _ = stream.write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n");
        }
    });
    let secret = dir.path().join("secret");
    support::write_private(&secret, "s3cret");
    let out = send(
        dir.path(),
        &format!("https://{addr}/webhooks"),
        &secret,
        b"{\"id\":\"e1\",\"type\":\"contact.created\",\"payload\":{\"id\":\"c1\"}}\n",
    );
    let text = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{text}");
    assert!(
        text.contains("does it speak HTTPS? For plain HTTP"),
        "{text}"
    );
    let sent = connections.load(std::sync::atomic::Ordering::SeqCst);
    let db = dir.path().join("mirror.db");
    let mut cmd = support::command(dir.path());
    cmd.args(["--db", db.to_str().unwrap(), "backfill", "--api-url"])
        .arg(format!("https://{addr}"))
        .env("PROTOCOL_API_TOKEN", "t");
    let out = support::run_timeout(cmd, Duration::from_secs(60));
    let text = stderr(&out);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("does the server at --api-url speak HTTPS?"),
        "{text}"
    );
    assert_eq!(
        connections.load(std::sync::atomic::Ordering::SeqCst) - sent,
        1,
        "tried once: {text}"
    );
}

/// `sign` writing to a pipe whose reader has gone, or to a full disk, ends in one line
/// (it panicked: "failed printing to stdout").
#[cfg(unix)]
#[test]
fn sign_says_when_it_cannot_write() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    support::write_private(&secret, "s3cret");
    let out = support::command(dir.path())
        .args(["sign", "--secret-file", secret.to_str().unwrap()])
        .stdin(std::fs::File::open(&secret).unwrap())
        .stdout(
            std::fs::OpenOptions::new()
                .write(true)
                .open("/dev/full")
                .unwrap(),
        )
        .output()
        .unwrap();
    let text = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{text}");
    assert!(!text.contains("panicked"), "{text}");
    assert_eq!(text.trim().lines().count(), 1, "{text}");
    assert!(text.contains("writing the signature"), "{text}");
}

/// `send` quotes what the server at `--url` answered on one line, with nothing a
/// terminal would act on: it printed the body as it came (a black-box probe's server
/// retitled the terminal and broke the line).
#[test]
fn send_quotes_a_servers_answer_safely() {
    let dir = tempfile::tempdir().unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/webhooks", listener.local_addr().unwrap());
    let server = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        read_request(&stream);
        // Bytes that are not UTF-8 too: such an answer was shown as nothing.
        let mut answer = b"\xff PWNED\x07".to_vec();
        answer.extend(
            format!(
                "\u{1b}]0;\u{7}\u{1b}[31mred\nsecond \u{9b}2J\u{202e}line\r\u{1b}[2K{}",
                "\u{1b}".repeat(1000)
            )
            .bytes(),
        );
        write!(
            stream,
            "HTTP/1.1 500 Oops\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            answer.len()
        )
        .unwrap();
        stream.write_all(&answer).unwrap();
    });
    let secret = dir.path().join("secret");
    support::write_private(&secret, "s3cret");
    let out = send(
        dir.path(),
        &url,
        &secret,
        br#"{"id":"e1","type":"contact.created","payload":{"id":"c1"}}"#,
    );
    let text = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{text}");
    let line = text.lines().next().unwrap();
    assert!(line.starts_with("line 1: 500 "), "{text}");
    // Only now: a command that never connected would leave the server waiting.
    server.join().unwrap();
    assert!(line.contains("PWNED") && line.contains("second"), "{text}");
    assert!(
        !text
            .chars()
            .any(|c| c.is_control() && c != '\n' || c == '\u{202e}'),
        "{text:?}"
    );
    assert_eq!(text.lines().count(), 3, "{text}");
    // Cut short after escaping: an escape sequence takes several characters.
    assert!(line.chars().count() < 520, "{}", line.chars().count());
}

#[test]
fn the_default_database_lives_in_the_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let out = support::run(dir.path(), &["import", "-"], SAMPLE.as_bytes());
    assert!(out.status.success(), "{}", stderr(&out));
    let expected: &Path = &dir.path().join("data/protocol-mirror/mirror.db");
    assert!(expected.exists(), "XDG_DATA_HOME/protocol-mirror/mirror.db");
    let start = Instant::now();
    let out = support::run(
        dir.path(),
        &["get", "contact", "WAz8eIbvDR60rouK", "-f", "json"],
        b"",
    );
    assert!(out.status.success());
    assert!(start.elapsed() < Duration::from_secs(30));

    // PROTOCOL_MIRROR_DB names another database; empty, it counts as unset.
    let elsewhere = dir.path().join("elsewhere.db");
    let stats = |value: &std::ffi::OsStr| {
        support::command(dir.path())
            .env("PROTOCOL_MIRROR_DB", value)
            .args(["stats", "-f", "json"])
            .output()
            .unwrap()
    };
    let out = stats(elsewhere.as_os_str());
    assert_eq!(out.status.code(), Some(3));
    assert!(stderr(&out).contains("elsewhere.db"), "{}", stderr(&out));
    let out = stats(std::ffi::OsStr::new(""));
    assert!(out.status.success(), "{}", stderr(&out));
}

/// A database path that starts with `~`, which no shell expanded (quoted, or set in a
/// service's environment), is a usage mistake that names the path meant; it made a
/// folder `~` in the working folder (an operator probe). `./~/x.db` is taken.
#[test]
fn a_db_path_under_an_unexpanded_tilde_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let event = b"{\"id\":\"e1\",\"type\":\"contact.created\",\"payload\":{\"id\":\"c1\"}}\n";
    for (db, env) in [("~/t.db", false), ("~/t.db", true)] {
        let mut cmd = support::command(dir.path());
        cmd.current_dir(dir.path()).env("HOME", "/home/someone");
        if env {
            cmd.env("PROTOCOL_MIRROR_DB", db).args(["import", "-"]);
        } else {
            cmd.args(["--db", db, "import", "-"]);
        }
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let _ = child.stdin.take().unwrap().write_all(event);
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        assert!(
            stderr(&out).contains("/home/someone/t.db"),
            "{}",
            stderr(&out)
        );
        assert!(!dir.path().join("~").exists(), "no folder ~ made");
    }
    let mut cmd = support::command(dir.path());
    cmd.current_dir(dir.path())
        .args(["--db", "./~/t.db", "stats"]);
    let out = support::run_timeout(cmd, Duration::from_secs(30));
    assert!(
        !stderr(&out).contains("only a shell expands"),
        "{}",
        stderr(&out)
    );
}

/// `--db` names a file, whatever it looks like: `file:x.db` and `:memory:` too. (Writers
/// and readers took `file:x.db` for different files, one as a URI for `x.db`; an import
/// into `:memory:` went into memory and was lost.)
#[test]
fn a_db_path_is_always_a_file_name() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.ndjson");
    std::fs::write(
        &events,
        "{\"id\":\"e1\",\"type\":\"contact.created\",\"payload\":{\"id\":\"c1\"}}\n",
    )
    .unwrap();
    // A database `x.db` beside it, which no command below may touch.
    let mut plain = support::command(dir.path());
    plain.current_dir(dir.path());
    plain.args(["--db", "x.db", "import"]).arg(&events);
    assert!(
        support::run_timeout(plain, std::time::Duration::from_secs(30))
            .status
            .success()
    );
    for name in ["file:x.db", ":memory:", "file:y.db?mode=memory"] {
        let run = |args: &[&str]| {
            let mut cmd = support::command(dir.path());
            cmd.current_dir(dir.path()).arg("--db").arg(name).args(args);
            support::run_timeout(cmd, std::time::Duration::from_secs(30))
        };
        let imported = run(&["import", events.to_str().unwrap()]);
        assert!(imported.status.success(), "{name}: {}", stderr(&imported));
        assert!(dir.path().join(name).is_file(), "{name} is a file");
        let got = run(&["get", "contact", "c1", "--format", "json"]);
        assert!(got.status.success(), "{name}: {}", stderr(&got));
        let stats = run(&["stats", "--format", "json"]);
        let stats: serde_json::Value = serde_json::from_slice(&stats.stdout).unwrap();
        assert_eq!(stats["events"]["total"], 1, "{name}: {stats}");
    }
    let mut check = support::command(dir.path());
    check
        .current_dir(dir.path())
        .args(["--db", "x.db", "stats", "--format", "json"]);
    let stats = support::run_timeout(check, std::time::Duration::from_secs(30));
    let stats: serde_json::Value = serde_json::from_slice(&stats.stdout).unwrap();
    assert_eq!(stats["events"]["total"], 1, "x.db untouched: {stats}");
}

/// Output that cannot be written is a failure (exit 3, one line), help and version
/// included: `--help > /dev/full` exited 0.
#[test]
fn output_to_a_full_device_fails() {
    let Ok(full) = std::fs::OpenOptions::new().write(true).open("/dev/full") else {
        eprintln!("skipped: no /dev/full on this system");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    for args in [
        &["--help"][..],
        &["--version"],
        &["list", "--help"],
        &["stats"],
    ] {
        let mut cmd = support::command(dir.path());
        cmd.args(["--db"]).arg(dir.path().join("m.db")).args(args);
        if args == ["stats"] {
            // A database to print the stats of.
            let mut migrate = support::command(dir.path());
            migrate
                .arg("--db")
                .arg(dir.path().join("m.db"))
                .arg("migrate");
            assert!(migrate.output().unwrap().status.success());
        }
        let out = cmd
            .stdin(std::process::Stdio::null())
            .stdout(full.try_clone().unwrap())
            .output()
            .unwrap();
        let stderr = stderr(&out);
        assert_eq!(out.status.code(), Some(3), "{args:?}: {stderr}");
        assert!(stderr.contains("No space left"), "{args:?}: {stderr}");
        // Said to be the output's: alone, it sent a user to the database's disk.
        if args == ["stats"] {
            assert!(stderr.contains("writing the output: "), "{stderr}");
        }
        assert_eq!(stderr.trim().lines().count(), 1, "{args:?}: {stderr}");
    }
}

/// Common slips are taken or named with their fix, each in one line with exit code 2
/// (a new user's probe: resource names in another case or misspelt were refused with
/// no suggestion, `--limit -1` got a tip to write `-- -1`, a repeated option was
/// refused, a folder to import failed only once read, a port alone for `--listen`
/// was "invalid socket address", and an FTS5 syntax error said nothing of the syntax).
#[test]
fn common_slips_are_taken_or_named_with_their_fix() {
    let s = Sample::new();
    let id = "SIuAFUNKdSYHZF2w";
    for name in ["Messages", "MESSAGE"] {
        assert!(s.ok(&["list", name, "-f", "ndjson"]).contains(id), "{name}");
    }
    assert!(
        s.ok(&["get", "Message", id, "--format", "JSON"])
            .contains(id)
    );
    // The last of a repeated option wins (an alias, then an override).
    let two = s.ok(&["events", "--limit", "1", "--limit", "2", "-f", "ndjson"]);
    assert_eq!(two.lines().count(), 2, "{two}");
    let slip = |args: &[&str], says: &[&str]| {
        let out = s.run(args, b"");
        let text = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {text}");
        assert_eq!(text.lines().count(), 1, "{args:?}: {text}");
        for said in says {
            assert!(text.contains(said), "{args:?} should say {said}: {text}");
        }
        assert!(!text.contains("tip:"), "{args:?}: {text}");
    };
    slip(&["list", "mesages"], &["did you mean `messages`?"]);
    // A terminal escape in the name is shown, escaped (clap strips escapes from what
    // it prints, and the refusal read as one of `messages`).
    slip(&["list", "mess\u{1b}[31mages"], &["`mess\\u{1b}[31mages`"]);
    slip(&["get", "conv", "x"], &["did you mean `conversations`?"]);
    slip(
        &["events", "--limit", "-1"],
        &["invalid value '-1' for '--limit <N>'"],
    );
    slip(
        &["list", "messages", "-n", "-5"],
        &["invalid value '-5'", "cannot be negative"],
    );
    // Every whole-number option says which rule its value broke (clap's own said
    // "invalid digit found in string" for both of these).
    slip(
        &["serve", "--request-timeout", "1.5"],
        &["expected a whole number from 1 to 86400"],
    );
    slip(
        &["import", "--batch-size", "-5", "-"],
        &["cannot be negative: expected a whole number, 1 or more"],
    );
    slip(
        &["import", s.dir.path().to_str().unwrap()],
        &["is a folder"],
    );
    slip(
        &["serve", "--listen", "18712"],
        &["HOST:PORT", "127.0.0.1:18712"],
    );
    slip(
        &["serve", "--listen", ":18712"],
        &["needs its host", "127.0.0.1:18712", "0.0.0.0:18712"],
    );
    slip(
        &["search", "--fts", "meet* AND ("],
        &["in `meet* AND (`", "FTS5 syntax"],
    );
    // A negative rate ran unlimited once negative numbers reached the parser.
    slip(
        &["backfill", "--rate", "-1"],
        &["'--rate <N>'", "from 0.001"],
    );
    slip(
        &["serve", "--reconcile-every", "-5m"],
        &["'--reconcile-every <DURATION>'"],
    );
}
