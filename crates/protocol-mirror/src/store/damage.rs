//! The damage mark, `<database>.damaged`: what the daemon's writer leaves beside a
//! database that SQLite found damaged at a commit of events, so that the finding
//! outlives the process. Without it a restarted daemon answered `/healthz` 200 and
//! took events again until one touched the damaged pages (an operator probe), and a
//! damaged index on event ids can let a re-delivered event through as new.
//!
//! `serve` asks [`Store::recheck_damage`] before it takes events: while SQLite's
//! `quick_check` still finds the file damaged, the start is refused, naming the fix;
//! once it finds the file whole (restored from a backup, recovered), the mark is
//! removed and the daemon starts.

use std::io::Write;
use std::path::{Path, PathBuf};

use rusqlite::Connection;

use super::{Result, Store, StoreError, integrity_check_finding, quick_check, quick_check_finding};

/// The mark's file for `database`, beside the file itself (a link's target keeps it).
pub fn damage_mark_path(database: &Path) -> PathBuf {
    crate::beside(&crate::lock::real_path(database), ".damaged")
}

/// Leaves the mark for `database`, holding `finding` (what SQLite said), unless one is
/// there already: the first finding is kept. Best effort for the caller, which says
/// when it fails (also when something other than a file stands at the mark's name).
pub fn mark_damaged(database: &Path, finding: &str) -> std::io::Result<()> {
    let path = damage_mark_path(database);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = match options.open(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return match read_mark(&path) {
                Some(Mark::Finding(_)) | None => Ok(()),
                Some(Mark::Other) => Err(std::io::Error::other(
                    "something other than a damage mark stands at that name",
                )),
            };
        }
        opened => opened?,
    };
    let at = humantime::format_rfc3339_seconds(std::time::SystemTime::now());
    writeln!(file, "{at} {}", one_line(finding))?;
    file.sync_all()
}

/// [`mark_damaged`] for the daemon's writer, which goes on whether or not the mark
/// could be left: a failure is logged.
pub(crate) fn mark_damaged_or_warn(database: &Path, finding: &str) {
    if let Err(e) = mark_damaged(database, finding) {
        tracing::warn!(
            "could not leave the damage mark {}: {e}",
            damage_mark_path(database).display()
        );
    }
}

/// Whether a mark left by a finding stands beside `database` now: a file with some
/// text in it (not an empty file, a folder, or nothing).
pub fn is_marked(database: &Path) -> bool {
    mark_stands(&damage_mark_path(database))
}

/// [`is_marked`], for a mark's path already found ([`damage_mark_path`] follows the
/// database's links, which a caller asking before every batch need not do again).
pub(crate) fn mark_stands(mark: &Path) -> bool {
    std::fs::metadata(mark).is_ok_and(|m| m.is_file() && m.len() > 0)
}

/// The most bytes a mark holds: its line is cut to [`one_line`]'s 1,000 characters.
const MARK_MOST: u64 = 8 * 1024;

/// What stands at a mark's name.
enum Mark {
    /// A mark (a small file, or a link to one): its text, as `mark_damaged` wrote it.
    Finding(String),
    /// Something else (a folder, a large file: another program's, or the user's).
    Other,
}

/// What stands at `path`, the mark's name, if anything does.
fn read_mark(path: &Path) -> Option<Mark> {
    let meta = std::fs::metadata(path).or_else(|_| std::fs::symlink_metadata(path));
    let meta = meta.ok()?;
    if !meta.is_file() || meta.len() > MARK_MOST {
        return Some(Mark::Other);
    }
    let bytes = std::fs::read(path).ok()?;
    Some(Mark::Finding(String::from_utf8_lossy(&bytes).into_owned()))
}

/// `text` on one line, without control characters (a mark is echoed in a log), and not
/// longer than a mark needs.
fn one_line(text: &str) -> String {
    const MOST: usize = 1000;
    let text: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match line.char_indices().nth(MOST) {
        Some((end, _)) => format!("{}…", &line[..end]),
        None => line,
    }
}

/// Refuses, before anything opens it, a database with a damage mark whose file is
/// missing or shorter than a database header (emptied under a daemon, removed): an
/// open would make a new database there, and read into it the `-wal` the old file
/// left, which the operator is told to move away (a refused start consumed it: a
/// probe). [`Store::recheck_damage`] decides the rest, once it is open.
pub fn refuse_marked_and_empty(database: &Path) -> Result<()> {
    let mark = damage_mark_path(database);
    let Some(Mark::Finding(text)) = read_mark(&mark) else {
        return Ok(());
    };
    let real = crate::lock::real_path(database);
    let length = std::fs::metadata(&real).map_or(0, |m| m.len());
    if length >= super::HEADER_BYTES {
        return Ok(());
    }
    Err(super::StoreError::Damaged {
        path: database.to_owned(),
        problem: format!(
            "{}, and the file is {} now; move its -wal and -shm away before restoring it \
             (they belong to the file that was), or, to start over with an empty \
             database, remove {}",
            finding_of(&text),
            if real.exists() { "empty" } else { "gone" },
            mark.display()
        ),
    })
}

/// How a mark's text, as [`mark_damaged`] writes it ("<when> <what was found>"), is
/// said.
fn finding_of(text: &str) -> String {
    match one_line(text).split_once(' ') {
        Some((at, said)) => format!("it was found damaged at {at}: {said}"),
        None => "it was found damaged before".to_owned(),
    }
}

/// `error`, or, when it is a constraint that failed on a table that SQLite's
/// `quick_check` of that table finds damaged, that damage (an error that
/// [`StoreError::is_damage`] says is, which names the check's finding and the
/// constraint). None of the mirror's writes can fail a constraint of a whole table
/// (a new row's rowid is one past the highest), so such a failure is a bug or
/// damage; damage surfaced so from a garbled page (`UNIQUE constraint failed:
/// messages.rowid`), and was taken for one event's own failure: no mark, and the
/// daemon took events into the file (a black-box probe). Only a failure is checked,
/// and only the one table: 0.7 s for a table of a million messages (1 GB), paid
/// again at each redelivery of an event that fails so on a whole table (a bug), and
/// twice when the daemon retries its batch one event at a time.
pub(crate) fn damage_behind(conn: &Connection, error: StoreError) -> StoreError {
    let StoreError::Sqlite {
        context,
        source: rusqlite::Error::SqliteFailure(failure, Some(said)),
    } = &error
    else {
        return error;
    };
    if failure.code != rusqlite::ErrorCode::ConstraintViolation {
        return error;
    }
    let Some(table) = constrained_table(said) else {
        return error;
    };
    let finding = match quick_check_finding(conn, Some(table)) {
        Ok(Some(finding)) => one_line(&finding),
        Ok(None) | Err(_) => return error,
    };
    StoreError::damage_found(
        context,
        &format!("SQLite's check of the table {table} finds: {finding} (met as `{said}`)"),
    )
}

/// The table a constraint's failure names (`UNIQUE constraint failed: messages.rowid`,
/// `NOT NULL constraint failed: events.body`), if it names one.
fn constrained_table(said: &str) -> Option<&str> {
    let (_, columns) = said.split_once(" constraint failed: ")?;
    let (table, _) = columns.split_once('.')?;
    let plain = !table.is_empty()
        && table
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_');
    plain.then_some(table)
}

impl Store {
    /// Refuses a database whose event log SQLite's `integrity_check` of its table and
    /// indexes finds damaged ([`StoreError::LogDamaged`]): what a rebuild in place,
    /// which reads the log by sequence number alone, would not meet (1.3 s for a
    /// million events, a tenth of their rebuild; `quick_check` passed an index of
    /// event ids with one key changed, in order, which let a new event be answered
    /// as a duplicate: a black-box probe).
    pub(crate) fn refuse_damaged_log(&self) -> Result<()> {
        let finding =
            integrity_check_finding(&self.conn, "events").map_err(|source| StoreError::Sqlite {
                context: "checking the event log",
                source,
            })?;
        match finding {
            None => Ok(()),
            Some(finding) => Err(StoreError::LogDamaged {
                path: self.path.clone().unwrap_or_default(),
                finding: one_line(&finding),
            }),
        }
    }

    /// What became of a damage mark left beside this database (by a daemon, or
    /// another writer, that found it damaged): `Ok(None)` when there is none;
    /// `Ok(Some(note))` when SQLite's `quick_check` finds the file whole now (the mark
    /// is then removed, and the note says so); the check's
    /// [`super::StoreError::Damaged`] when it still finds it damaged, the finding
    /// added. Something else at the mark's name (a folder, a large file) is checked
    /// for as a mark is, and left as it is.
    pub fn recheck_damage(&self) -> Result<Option<String>> {
        let Some(database) = self.path.as_deref() else {
            return Ok(None);
        };
        let mark = damage_mark_path(database);
        let Some(found) = read_mark(&mark) else {
            return Ok(None);
        };
        let finding = match &found {
            Mark::Finding(text) => finding_of(text),
            Mark::Other => {
                "something other than a damage mark stands at its mark's name".to_owned()
            }
        };
        if let Err(error) = quick_check(&self.conn, database) {
            return Err(match error {
                super::StoreError::Damaged { path, problem } => super::StoreError::Damaged {
                    path,
                    problem: match found {
                        Mark::Finding(_) => format!(
                            "{problem}; {finding}; {} goes once the file checks whole",
                            mark.display()
                        ),
                        Mark::Other => format!("{problem}; {finding}: {}", mark.display()),
                    },
                },
                other => other,
            });
        }
        // Whole, but empty: the restore failed (`.recover` into a new file printed
        // nothing), or the file was removed, and all its events would be gone without
        // a word (a black-box probe: the mark was removed and the daemon started).
        if let Mark::Finding(_) = found
            && self.is_empty()?
        {
            return Err(super::StoreError::Damaged {
                path: database.to_owned(),
                problem: format!(
                    "{finding}, and it holds no events now: a restore that failed? To \
                     start over with an empty database, remove {}",
                    mark.display()
                ),
            });
        }
        if let Mark::Other = found {
            return Ok(Some(format!(
                "{} stands where a damage mark of {} would, and is no mark: left as it is \
                 (SQLite's integrity check finds the database whole)",
                mark.display(),
                database.display()
            )));
        }
        std::fs::remove_file(&mark)
            .or_else(|e| match e.kind() {
                std::io::ErrorKind::NotFound => Ok(()),
                _ => Err(e),
            })
            .map_err(|source| super::StoreError::Io {
                context: "removing the damage mark",
                path: mark.clone(),
                source,
            })?;
        Ok(Some(format!(
            "{}: {finding}; SQLite's integrity check finds it whole now, so its damage mark \
             {} is removed",
            database.display(),
            mark.display()
        )))
    }
}

/// Overwrites the root page of the table or index `name` of the database at `db` (not
/// open, its WAL copied in), as damage on disk would: for tests.
#[cfg(test)]
pub(crate) fn garble_root_page(db: &Path, name: &str) {
    edit_root_page(db, name, |page| page.fill(0xA5));
}

/// Sets the rowid of the last row in the root page of `table` (a leaf: a table of a
/// few rows) of the database at `db` (not open, its WAL copied in) to that of its
/// first row, as damage on disk would: the highest rowid then reads low, and a new
/// row's collides with one stored. For tests.
#[cfg(test)]
pub(crate) fn garble_last_rowid(db: &Path, table: &str) {
    edit_root_page(db, table, |page| {
        assert_eq!(page[0], 13, "the root page of {table} is a leaf");
        let cells = usize::from(u16::from_be_bytes([page[3], page[4]]));
        let cell = |n: usize| usize::from(u16::from_be_bytes([page[8 + 2 * n], page[9 + 2 * n]]));
        // A cell: its payload's length (a varint), then its rowid (one byte, for
        // rowids below 128).
        let rowid_at = |at: usize| at + page[at..].iter().position(|b| b & 0x80 == 0).unwrap() + 1;
        let (first, last) = (rowid_at(cell(0)), rowid_at(cell(cells - 1)));
        assert!(page[first] < 0x80 && page[last] < 0x80, "small rowids");
        page[last] = page[first];
    });
}

/// Replaces the bytes `from` with `to` (as long) in the root page of the table or
/// index `name` of the database at `db` (not open, its WAL copied in), as damage on
/// disk would: for tests.
#[cfg(test)]
pub(crate) fn garble_in_root_page(db: &Path, name: &str, from: &[u8], to: &[u8]) {
    assert_eq!(from.len(), to.len());
    edit_root_page(db, name, |page| {
        let at = page
            .windows(from.len())
            .position(|w| w == from)
            .expect("the bytes are in the page");
        page[at..at + to.len()].copy_from_slice(to);
    });
}

/// Has `edit` change the `nth` leaf page (from 0, in the order of the file) of the
/// table `name` of the database at `db` (not open, its WAL copied in), as damage on
/// disk would: for tests.
#[cfg(test)]
pub(crate) fn garble_leaf_page(db: &Path, name: &str, nth: u32, edit: impl FnOnce(&mut [u8])) {
    let page: u32 = rusqlite::Connection::open(db)
        .unwrap()
        .query_row(
            "SELECT pageno FROM dbstat WHERE name = ?1 AND pagetype = 'leaf' \
             ORDER BY pageno LIMIT 1 OFFSET ?2",
            rusqlite::params![name, nth],
            |row| row.get(0),
        )
        .unwrap();
    edit_page(db, page, edit);
}

/// Reads the root page of the table or index `name` of the database at `db` (pages of
/// 4 KiB), has `edit` change it, and writes it back: for tests.
#[cfg(test)]
fn edit_root_page(db: &Path, name: &str, edit: impl FnOnce(&mut [u8])) {
    let root: u32 = rusqlite::Connection::open(db)
        .unwrap()
        .query_row(
            "SELECT rootpage FROM sqlite_schema WHERE name = ?1",
            [name],
            |row| row.get(0),
        )
        .unwrap();
    edit_page(db, root, edit);
}

/// Reads page `page` of the database at `db` (pages of 4 KiB), has `edit` change it,
/// and writes it back: for tests.
#[cfg(test)]
fn edit_page(db: &Path, page: u32, edit: impl FnOnce(&mut [u8])) {
    use std::io::{Read, Seek, SeekFrom};
    let at = (u64::from(page) - 1) * 4096;
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(db)
        .unwrap();
    let mut page = vec![0; 4096];
    file.seek(SeekFrom::Start(at)).unwrap();
    file.read_exact(&mut page).unwrap();
    edit(&mut page);
    file.seek(SeekFrom::Start(at)).unwrap();
    file.write_all(&page).unwrap();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One key of the index of event ids changed, in order, passes `quick_check`: a
    /// new event with that id was answered `duplicate` and never stored, and a
    /// rebuild in place said it rebuilt (a black-box probe). The entry the index
    /// leads to is checked to be the event's, and the rebuild checks the log with
    /// `integrity_check`.
    #[test]
    fn an_index_of_event_ids_leading_to_another_entry_is_damage() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("m.db");
        let mut store = Store::open(&db).unwrap();
        for n in [10, 20, 30] {
            let event =
                format!(r#"{{"id":"e{n}","type":"contact.created","payload":{{"id":"c{n}"}}}}"#);
            store.apply(event.as_bytes(), 100).unwrap();
        }
        drop(store);
        garble_in_root_page(&db, "events_event_id", b"e20", b"e25");
        let mut store = Store::open(&db).unwrap();
        assert_eq!(
            quick_check_finding(&store.conn, None).unwrap(),
            None,
            "the quick check passes it"
        );
        let event = br#"{"id":"e25","type":"contact.created","payload":{"id":"c25"}}"#;
        let crate::apply::ApplyError::Store(error) = store.apply(event, 100).unwrap_err() else {
            panic!("a store error")
        };
        assert!(error.is_damage(), "{error}");
        assert!(error.to_string().contains("leads the id"), "{error}");
        let refused = store.refuse_damaged_log().unwrap_err();
        assert!(
            matches!(refused, StoreError::LogDamaged { .. }),
            "{refused}"
        );
        // A redelivery the index still leads right is answered as ever.
        let again = br#"{"id":"e30","type":"contact.created","payload":{"id":"c30"}}"#;
        assert!(store.apply(again, 100).is_ok());
    }

    /// A constraint that fails on a damaged table is said to be the damage: a rowid
    /// read low from a garbled page failed `UNIQUE constraint failed: messages.rowid`,
    /// which was taken for one event's own failure (a black-box probe). One that
    /// fails on a whole table stays what it is.
    #[test]
    fn a_constraint_failed_by_damage_is_said_to_be_damage() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("m.db");
        let mut store = Store::open(&db).unwrap();
        for n in 1..=3 {
            let event =
                format!(r#"{{"id":"e{n}","type":"message.created","payload":{{"id":"m{n}"}}}}"#);
            store.apply(event.as_bytes(), 100).unwrap();
        }
        let whole = StoreError::Sqlite {
            context: "saving a row",
            source: rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY),
                Some("UNIQUE constraint failed: messages.rowid".to_owned()),
            ),
        };
        let said = damage_behind(&store.conn, whole);
        assert!(!said.is_damage(), "{said}");
        drop(store);

        garble_last_rowid(&db, "messages");
        let mut store = Store::open(&db).unwrap();
        let event = br#"{"id":"e4","type":"message.created","payload":{"id":"m4"}}"#;
        let error = store.apply(event, 100).unwrap_err();
        let crate::apply::ApplyError::Store(error) = error else {
            panic!("{error}")
        };
        assert!(error.is_damage(), "{error}");
        let said = error.to_string();
        assert!(
            said.contains("database disk image is malformed")
                && said.contains("out of order")
                && said.contains("UNIQUE constraint failed: messages.rowid"),
            "{said}"
        );
        assert_eq!(constrained_table("FOREIGN KEY constraint failed"), None);
        assert_eq!(constrained_table("CHECK constraint failed: x\"y.z"), None);
    }

    #[test]
    fn the_first_finding_is_kept_on_one_line() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("m.db");
        mark_damaged(&db, "database disk image\nis malformed").unwrap();
        mark_damaged(&db, "a later finding").unwrap();
        let mark = std::fs::read_to_string(damage_mark_path(&db)).unwrap();
        assert!(
            mark.ends_with(" database disk image is malformed\n"),
            "{mark}"
        );
        assert_eq!(mark.lines().count(), 1, "{mark}");
        assert_eq!(one_line(&"é".repeat(1500)).chars().count(), 1001);
    }

    /// Something other than a mark at its name (a folder, another program's file) is
    /// said, not taken for a mark, and never removed: a folder there kept the mark
    /// from being left, without a word, and the next start went ahead (a probe).
    #[test]
    fn what_is_no_mark_is_said_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("m.db");
        let store = Store::open(&db).unwrap();
        let mark = damage_mark_path(&db);
        std::fs::create_dir(&mark).unwrap();
        let refused = mark_damaged(&db, "malformed").unwrap_err().to_string();
        assert!(refused.contains("other than a damage mark"), "{refused}");
        let note = store.recheck_damage().unwrap().unwrap();
        assert!(note.contains("is no mark: left as it is"), "{note}");
        assert!(mark.is_dir());
        std::fs::remove_dir(&mark).unwrap();
        std::fs::write(&mark, vec![b'x'; MARK_MOST as usize + 1]).unwrap();
        assert!(store.recheck_damage().unwrap().is_some());
        assert!(mark.exists(), "a large file is not ours to remove");
        drop(store);
        garble_root_page(&db, "events");
        let store = Store::open(&db).unwrap();
        let refused = store.recheck_damage().unwrap_err().to_string();
        assert!(
            refused.contains("is damaged") && refused.contains("other than a damage mark"),
            "{refused}"
        );
    }

    /// A marked database whose file is empty or gone is refused before anything opens
    /// it: an open made a new database there, reading into it the `-wal` the old file
    /// left (a probe).
    #[test]
    fn a_marked_file_emptied_or_gone_is_refused_before_it_is_opened() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("m.db");
        refuse_marked_and_empty(&db).unwrap();
        std::fs::write(&db, "").unwrap();
        refuse_marked_and_empty(&db).unwrap();
        mark_damaged(&db, "the file was emptied").unwrap();
        let refused = refuse_marked_and_empty(&db).unwrap_err().to_string();
        assert!(refused.contains("the file is empty now"), "{refused}");
        std::fs::remove_file(&db).unwrap();
        let refused = refuse_marked_and_empty(&db).unwrap_err().to_string();
        assert!(refused.contains("the file is gone now"), "{refused}");
        assert!(!db.exists(), "nothing made");
        drop(Store::open(&db).unwrap());
        refuse_marked_and_empty(&db).unwrap();
    }

    #[test]
    fn a_whole_database_loses_its_mark_and_a_damaged_one_keeps_it() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("m.db");
        let mut store = Store::open(&db).unwrap();
        assert!(
            store.recheck_damage().unwrap().is_none(),
            "no mark, nothing said"
        );
        mark_damaged(&db, "database disk image is malformed").unwrap();
        // Whole but empty: a restore that failed, refused (a probe).
        let refused = store.recheck_damage().unwrap_err().to_string();
        assert!(refused.contains("holds no events now"), "{refused}");
        assert!(damage_mark_path(&db).exists());
        let event = br#"{"id":"e1","type":"contact.created","payload":{"id":"k1"}}"#;
        store.apply(event, 100).unwrap();
        let note = store.recheck_damage().unwrap().unwrap();
        assert!(note.contains("whole now"), "{note}");
        assert!(!damage_mark_path(&db).exists());
        drop(store);

        garble_root_page(&db, "events");
        mark_damaged(&db, "database disk image is malformed").unwrap();
        let store = Store::open(&db).unwrap();
        let refused = store.recheck_damage().unwrap_err().to_string();
        assert!(
            refused.contains("is damaged") && refused.contains("it was found damaged at"),
            "{refused}"
        );
        assert!(
            damage_mark_path(&db).exists(),
            "kept while the file is damaged"
        );
    }
}
