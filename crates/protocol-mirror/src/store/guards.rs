//! What is checked before and around opening a database, so that a wrong path,
//! another program's file, a read-only place, a database a daemon is migrating or an
//! import is building, is refused in one line that names the cause rather than in
//! SQLite's words; and the flags and file mode writers open with.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use super::{BUSY_POLL, BUSY_TIMEOUT, Context, Result, SCHEMA_VERSION, StoreError, importing_path};
use crate::lock::ServeLock;

/// Refuses, without writing anything, a file at `path` that is another program's
/// SQLite database, or ours at a schema newer than this binary's (what a writer's open
/// refuses): for commands that would otherwise create files beside it first (`serve`'s
/// lock) or listen first. It reads the file's header, and, where that names a schema
/// version, the tables the file holds, read as the file alone has them (an ordinary
/// SQLite open would leave a `-wal` and `-shm` beside a WAL database: a review); so
/// what only a write-ahead log holds yet is left to the open. A file that is not
/// SQLite at all is not ours either; a missing or empty file (a new database), or one
/// cut short within its header, passes: the writer's open says what is wrong with it.
///
/// Only before this process opens the database: it reads the header through a
/// descriptor of its own, and closing that drops every POSIX lock the process holds
/// on the file, SQLite's included (readers glance through SQLite alone instead).
pub fn refuse_before_opening(path: &Path) -> Result<()> {
    use std::io::Read;
    refuse_companion(path)?;
    if !path.exists() {
        return Ok(());
    }
    refuse_non_file(path)?;
    let mut header = Vec::with_capacity(108);
    let read = std::fs::File::open(path).and_then(|file| file.take(108).read_to_end(&mut header));
    match read {
        // An empty file is a new database; one that cannot be read fails, named, at
        // its open.
        Ok(0) | Err(_) => return Ok(()),
        // Anything else that is not SQLite is not ours either (a lock file was made
        // beside it before SQLite said so).
        Ok(_) if !header.starts_with(b"SQLite format 3\0") => {
            return Err(not_sqlite(path));
        }
        Ok(n) if n < 108 => return Ok(()),
        Ok(_) => {}
    }
    // A signed number, as SQLite keeps it (-1 was read as 4294967295, a newer schema).
    let user_version = i64::from(i32::from_be_bytes([
        header[60], header[61], header[62], header[63],
    ]));
    // Page 1 holds the schema table: an interior page, or a leaf with any cell, means
    // tables (or indexes).
    let page_type = header[100];
    let cells = u16::from_be_bytes([header[103], header[104]]);
    let has_tables = page_type == 0x05 || (page_type == 0x0d && cells > 0);
    if user_version == 0 && !has_tables {
        return Ok(());
    }
    // Whose tables they are, and whether they are those of the version the file says,
    // the tables say. (A file they cannot be read from is left to the open, which says
    // how it is damaged; at version 0, with tables, it is not ours in any case.)
    match open_file_alone(path).map(|conn| refuse_foreign(&conn, path)) {
        Ok(Err(
            error @ (StoreError::NotOurs(_)
            | StoreError::VersionSetBack { .. }
            | StoreError::LostTables { .. }
            | StoreError::SchemaAhead { .. }),
        )) => return Err(error),
        Ok(Ok(())) => {}
        // Tables at version 0 that cannot be read are not ours in any case (it was
        // said from the header alone, before `serve` made its lock file: a review).
        _ if user_version == 0 => return Err(StoreError::NotOurs(path.to_owned())),
        _ => {}
    }
    refuse_ahead(user_version, path)
}

/// Refuses another program's SQLite file at `path` from a glance at it through SQLite
/// alone, as its file holds it ([`open_file_alone`]: nothing is made beside it), for
/// readers, which cannot remove the `-wal` and `-shm` their open makes beside a WAL
/// database. Never through a descriptor of its own, unlike [`refuse_before_opening`]:
/// readers open beside the daemon's writer, and closing a descriptor of the file drops
/// every POSIX lock the process holds on it (the daemon's readers did so, and the next
/// process to close the database took itself for its last user and removed the
/// daemon's write-ahead log: a review). SQLite's own descriptors are kept open while
/// the process has locks on the file. What else the glance finds (not SQLite, damaged,
/// a newer schema) is left to the open, which says it.
pub(super) fn refuse_foreign_at_a_glance(path: &Path) -> Result<()> {
    let Ok(conn) = open_file_alone(path) else {
        return Ok(());
    };
    match refuse_foreign(&conn, path) {
        Err(error @ (StoreError::NotOurs(_) | StoreError::VersionSetBack { .. })) => Err(error),
        _ => Ok(()),
    }
}

/// A read-only connection to the database at `path` as its file alone holds it
/// (SQLite's `immutable`): nothing is made beside it, and a write-ahead log beside it
/// is not read. Only for a glance before the real open, since a writer may change
/// the file under it.
fn open_file_alone(path: &Path) -> rusqlite::Result<Connection> {
    use std::fmt::Write as _;
    // Every byte but the unreserved ones escaped, `/` too: a path starting `//` would
    // be read as an authority.
    let mut uri = String::from("file:");
    // A file named `:memory:` is that file (`./:memory:`), not a database in memory.
    for &byte in sqlite_path(path).as_os_str().as_encoded_bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            uri.push(char::from(byte));
        } else {
            let _ = write!(uri, "%{byte:02X}");
        }
    }
    uri.push_str("?immutable=1");
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_URI;
    Connection::open_with_flags(uri, flags)
}

/// Takes the [`ServeLock`] of `path` (a daemon, a rebuild, an import into a new
/// database): held by an import building the database, that is said
/// ([`StoreError::Building`]), not "in use by another process; stop it first" of a
/// process that ends by itself.
///
/// # Errors
///
/// When another process holds the lock, or the lock file cannot be made.
pub fn serve_lock(path: &Path, role: crate::lock::Role) -> Result<ServeLock> {
    // Before its lock file is made beside it.
    refuse_companion(path)?;
    ServeLock::acquire(path, role).map_err(|error| match error {
        crate::lock::LockError::Held { .. } if !path.exists() && importing_path(path).exists() => {
            StoreError::Building(path.to_owned())
        }
        other => StoreError::InUse(other),
    })
}

/// The identity (device and inode) of the file at `path`, and its length: a file
/// moved away or replaced under that name has another identity.
///
/// # Errors
///
/// When there is no file at `path`, or it cannot be reached.
#[cfg(unix)]
pub fn file_identity(path: &Path) -> std::io::Result<((u64, u64), u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).map(|m| ((m.dev(), m.ino()), m.len()))
}

/// The identity of the file at `path` (none where there are no inodes: always the
/// same), and its length.
///
/// # Errors
///
/// When there is no file at `path`, or it cannot be reached.
#[cfg(not(unix))]
pub fn file_identity(path: &Path) -> std::io::Result<((u64, u64), u64)> {
    std::fs::metadata(path).map(|m| ((0, 0), m.len()))
}

/// Fails unless there is a file at `path`: [`missing`] says why when there is none;
/// a path this user may not reach (a folder it cannot enter, a file in the place of
/// a folder, a loop of symbolic links) is said as such. (Such a path was "no database
/// at ... start `protocol-mirror serve`", and `events --follow` waited for it.)
///
/// # Errors
///
/// When there is no file at `path`, or it cannot be reached, or it is another
/// database's companion ([`refuse_companion`]).
pub fn present(path: &Path) -> Result<()> {
    // A database's companion is named as such, there or not.
    refuse_companion(path)?;
    match std::fs::metadata(path) {
        Ok(_) => refuse_unreadable(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(missing(path)),
        Err(source) => Err(StoreError::Io {
            context: "cannot read",
            path: path.to_owned(),
            source,
        }),
    }
}

/// Why there is no database at `path`: an import is building it, one was stopped
/// before it ended, or there never was one.
pub fn missing(path: &Path) -> StoreError {
    let building = importing_path(path);
    if building.exists() && crate::lock::ServeLock::is_held(path) {
        return StoreError::Building(path.to_owned());
    }
    if let Some(building) = abandoned_import(path) {
        return StoreError::Abandoned {
            path: path.to_owned(),
            building,
        };
    }
    StoreError::Missing(path.to_owned())
}

/// The hidden file an import into a new database at `db` left when it was stopped
/// before it ended (killed), if `db` is not there and no import is building it now.
fn abandoned_import(db: &Path) -> Option<PathBuf> {
    let building = importing_path(db);
    (!db.exists() && building.exists() && !crate::lock::ServeLock::is_held(db)).then_some(building)
}

/// The schema version of the database file at `path`, without migrating it, for a
/// writer (`migrate`): a transaction a writer stopped in the middle of is rolled back.
pub fn schema_version_of(path: &Path) -> Result<i64> {
    refuse_companion(path)?;
    refuse_non_file(path)?;
    refuse_unreadable(path)?;
    let conn = Connection::open_with_flags(sqlite_path(path), OpenFlags::SQLITE_OPEN_READ_ONLY)
        .context("opening the database")?;
    match user_version(&conn).map_err(|e| not_ours(e, path)) {
        // A transaction a writer stopped in the middle of: rolled back, as every
        // writer's first read does, by a read with write access (`migrate` failed on
        // it for good, saying to run `migrate`: a black-box probe).
        Err(StoreError::InterruptedWrite(_)) => {
            drop(conn);
            let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
            let conn = Connection::open_with_flags(sqlite_path(path), flags)
                .context("opening the database")?;
            conn.busy_timeout(super::BUSY_TIMEOUT)
                .context("setting the busy timeout")?;
            user_version(&conn).map_err(|e| not_ours(e, path))
        }
        other => other,
    }
}

/// How a writer opens a file (named as [`sqlite_path`] says): read-write, created if
/// missing; not `SQLITE_OPEN_URI` (rusqlite's default has it), as no name is a URI here.
pub(super) fn writer_flags() -> OpenFlags {
    OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
}

/// `path` as SQLite must be given it to open the file of that name. The bundled SQLite
/// reads a name starting with `file:` as a URI whatever the flags say (it is built with
/// `SQLITE_USE_URI`), and `:memory:` as its in-memory database: such relative names go
/// as `./file:…` and `./:memory:`. (Writers took `--db file:x.db` for one file and
/// readers for another; `--db :memory:` imported into memory and lost it.)
pub(super) fn sqlite_path(path: &Path) -> std::borrow::Cow<'_, Path> {
    let name = path.as_os_str().as_encoded_bytes();
    if name.starts_with(b"file:") || name == b":memory:" {
        Path::new(".").join(path).into()
    } else {
        path.into()
    }
}

/// Refuses to write the database at `path` (or create it) on a read-only filesystem,
/// naming the cause at once: writes failed later with "attempt to write a readonly
/// database" (or "enabling WAL: ...", or a daemon's lock file), each in its own words.
pub fn refuse_read_only_filesystem(path: &Path) -> Result<()> {
    let folder = folder_of(path);
    let on_disk = if path.exists() { path } else { folder };
    if on_read_only_filesystem(on_disk) {
        return Err(StoreError::WriteOnReadOnlyFilesystem(path.to_owned()));
    }
    Ok(())
}

/// The folder `path` is in (`.` for a bare name).
fn folder_of(path: &Path) -> &Path {
    path.parent()
        .filter(|folder| !folder.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Refuses to make the database at `path`, or its `-wal` and `-shm`, on a filesystem
/// with fewer free inodes than the files it lacks: SQLite said "unable to open
/// database file" (at "enabling WAL", or at a migration), and a database file with no
/// log beside it was left there (an operator probe on a tmpfs of 3 inodes).
#[cfg(unix)]
pub(super) fn refuse_without_inodes(path: &Path) -> Result<()> {
    let real = super::through_links(path);
    let lacking = [
        real.clone(),
        crate::beside(&real, "-wal"),
        crate::beside(&real, "-shm"),
    ]
    .iter()
    .filter(|file| !file.exists())
    .count() as u64;
    if lacking == 0 {
        return Ok(());
    }
    let Ok(fs) = rustix::fs::statvfs(folder_of(&real)) else {
        return Ok(());
    };
    // A filesystem without a count of inodes (btrfs says 0) is not judged.
    if fs.f_files == 0 || fs.f_favail >= lacking {
        return Ok(());
    }
    Err(StoreError::Io {
        context: "no file can be made for the database (its filesystem has no free inodes \
                  left: see `df -i`) at",
        path: path.to_owned(),
        source: std::io::Error::from(std::io::ErrorKind::StorageFull),
    })
}

#[cfg(not(unix))]
pub(super) fn refuse_without_inodes(_path: &Path) -> Result<()> {
    Ok(())
}

/// The least free space on a database's disk with which its events can be expected
/// to commit: each touches tens of pages (the log, the body, the object, its indexes
/// and the text index), and a batch of them megabytes of the write-ahead log. With
/// 48 KiB free a daemon's start check committed, its `/healthz` said ok, and every
/// event got 503 (a probe).
pub const MIN_FREE_BYTES: u64 = 1024 * 1024;

/// Why events cannot be expected to commit to the database at `path`, when its disk
/// has less than [`MIN_FREE_BYTES`] free: for a daemon's start (a running one's WAL
/// may have room where the disk has none, so it is judged by its commits). Counted as
/// this user may write (root, the blocks reserved for it too: a review), and never for
/// a filesystem that reports no size at all (some FUSE ones).
#[must_use]
pub fn too_little_room(path: &Path) -> Option<String> {
    let free = free_bytes(path)?;
    (free < MIN_FREE_BYTES).then(|| {
        format!(
            "only {} KiB free on the disk of {}: too little for events to commit (at least \
             {} MiB is needed); free some space",
            free / 1024,
            path.display(),
            MIN_FREE_BYTES / (1024 * 1024)
        )
    })
}

/// The bytes this process may still write on the filesystem of `path` (a file or
/// folder on it): as root, the blocks reserved for root too; `None` where the system
/// does not say, or the filesystem reports no blocks at all (some FUSE ones).
#[cfg(unix)]
pub fn free_bytes(path: &Path) -> Option<u64> {
    let fs = rustix::fs::statvfs(path).ok()?;
    if fs.f_blocks == 0 {
        return None;
    }
    let blocks = if rustix::process::geteuid().is_root() {
        fs.f_bfree
    } else {
        fs.f_bavail
    };
    Some(blocks.saturating_mul(fs.f_frsize))
}

/// The free space where `path` is: unknown off unix.
#[cfg(not(unix))]
pub fn free_bytes(_path: &Path) -> Option<u64> {
    None
}

/// Whether `path` is on a filesystem mounted read-only.
#[cfg(unix)]
fn on_read_only_filesystem(path: &Path) -> bool {
    rustix::fs::statvfs(path)
        .is_ok_and(|fs| fs.f_flag.contains(rustix::fs::StatVfsMountFlags::RDONLY))
}

#[cfg(not(unix))]
fn on_read_only_filesystem(_path: &Path) -> bool {
    false
}

pub(super) fn user_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.pragma_query_value(None, "user_version", |row| row.get(0))
}

/// What a file that SQLite does not take for a database is: a replica whose header
/// was overwritten is damaged; anything else is not ours. A replica is told by its
/// schema's rows, as SQLite stores them in its first pages (a table's type, name and
/// table name side by side: text a dump of the database, or the migrations' SQL, does
/// not hold), in a file of whole pages that holds no other database's header (an
/// archive of the database holds both). Only the first [`SCHEMA_SCANNED`] bytes are
/// read. (A replica with its header overwritten was said to be "not a protocol-mirror
/// database", with no word of damage: a black-box probe.)
pub(super) fn not_sqlite(path: &Path) -> StoreError {
    use std::io::Read;
    const HEADER: &[u8] = b"SQLite format 3\0";
    let mut start = Vec::new();
    let read = std::fs::File::open(path)
        .and_then(|file| file.take(SCHEMA_SCANNED).read_to_end(&mut start));
    let whole_pages = std::fs::metadata(path).is_ok_and(|m| m.len() % 512 == 0);
    let holds = |text: &[u8]| start.windows(text.len()).any(|w| w == text);
    // The file's own first bytes may still be SQLite's, and the rest of its header
    // damaged (its page size, its versions: SQLite says "not a database" too).
    let archived = start
        .chunks(512)
        .skip(1)
        .any(|block| block.starts_with(HEADER));
    let ours = read.is_ok()
        && whole_pages
        && !archived
        && SCHEMA_ROWS.iter().all(|row| holds(row.as_bytes()));
    if !ours {
        return StoreError::NotOurs(path.to_owned());
    }
    StoreError::Damaged {
        path: path.to_owned(),
        problem: "its first bytes, SQLite's header, were overwritten: the rest still holds \
                  the mirror's tables"
            .to_owned(),
    }
}

/// How much of a file [`not_sqlite`] reads for the schema's rows: a replica's schema
/// is written by its first migrations, within its first few hundred KiB.
const SCHEMA_SCANNED: u64 = 4 << 20;

/// The start of two rows of the mirror's schema as SQLite stores them: the type, the
/// name and the table's name, one after the other.
const SCHEMA_ROWS: [&str; 2] = [
    "tableevent_bodiesevent_bodies",
    "tablewriter_probewriter_probe",
];

pub(super) fn not_ours(error: rusqlite::Error, path: &Path) -> StoreError {
    match &error {
        rusqlite::Error::SqliteFailure(e, _) if e.code == rusqlite::ErrorCode::NotADatabase => {
            not_sqlite(path)
        }
        // A file cut short, or pages overwritten: "reading the schema version: database
        // disk image is malformed" named neither the file nor a way out (a probe).
        rusqlite::Error::SqliteFailure(e, message)
            if e.code == rusqlite::ErrorCode::DatabaseCorrupt =>
        {
            StoreError::Damaged {
                path: path.to_owned(),
                problem: message.clone().unwrap_or_else(|| e.to_string()),
            }
        }
        // The first read of a WAL database maps its `-shm` file: a reader that cannot
        // create or write it gets "attempt to write a readonly database" (or an I/O
        // error on a full disk), which says nothing of where the problem is.
        // On a read-only filesystem, with no `-shm` there to share, SQLite cannot open
        // a WAL database at all ("unable to open database file"). Read as immutable,
        // it would miss or tear under a writer of the same file through a writable
        // path (a read-only bind mount of a served folder), so it is refused, named.
        rusqlite::Error::SqliteFailure(e, _)
            if e.extended_code == rusqlite::ffi::SQLITE_READONLY_ROLLBACK =>
        {
            StoreError::InterruptedWrite(path.to_owned())
        }
        rusqlite::Error::SqliteFailure(e, _)
            if e.code == rusqlite::ErrorCode::CannotOpen && on_read_only_filesystem(path) =>
        {
            StoreError::ReadOnlyFilesystem(path.to_owned())
        }
        rusqlite::Error::SqliteFailure(e, _)
            if matches!(
                e.code,
                rusqlite::ErrorCode::ReadOnly
                    | rusqlite::ErrorCode::SystemIoFailure
                    | rusqlite::ErrorCode::CannotOpen
            ) =>
        {
            StoreError::NoSharedMemory(path.to_owned())
        }
        _ => StoreError::Sqlite {
            context: "reading the schema version",
            source: error,
        },
    }
}

/// Refuses a database at schema version `found` when it is newer than this binary's.
pub(super) fn refuse_ahead(found: i64, path: &Path) -> Result<()> {
    if found > SCHEMA_VERSION {
        return Err(StoreError::SchemaAhead {
            path: path.to_owned(),
            found,
            expected: SCHEMA_VERSION,
        });
    }
    Ok(())
}

/// Puts the database in WAL mode. Switching a new database's journal mode needs it to
/// itself for an instant, which SQLite does not wait for: a second process opening the
/// same new database at the same moment (a daemon started beside a first import) is
/// given the busy timeout to get its turn.
pub(super) fn enable_wal(conn: &Connection) -> Result<()> {
    let started = std::time::Instant::now();
    loop {
        match conn
            .pragma_update(None, "journal_mode", "WAL")
            .context("enabling WAL")
        {
            Err(error) if error.is_busy() && started.elapsed() < BUSY_TIMEOUT => {
                std::thread::sleep(BUSY_POLL);
            }
            done => return done,
        }
    }
}

/// Whether the database holds no table, index or view at all (a new, empty one).
pub(super) fn has_no_schema(conn: &Connection) -> rusqlite::Result<bool> {
    conn.query_row("SELECT COUNT(*) = 0 FROM sqlite_schema", [], |row| {
        row.get(0)
    })
}

/// A database of schema version 0 with tables of its own is some other program's:
/// migrating it would add the replica's tables to it (a mistyped `--db`, say). Unless
/// they are a replica's: then its version was set back by hand or by another program
/// ([`StoreError::VersionSetBack`]), as one below 0, which no migration writes, was.
pub(super) fn refuse_foreign(conn: &Connection, path: &Path) -> Result<()> {
    let version = user_version(conn).map_err(|e| not_ours(e, path))?;
    if version == 0 && has_no_schema(conn).map_err(|e| not_ours(e, path))? {
        // A new database.
        return Ok(());
    }
    if version <= 0 {
        let missing = missing_tables(conn, SCHEMA_VERSION).map_err(|e| not_ours(e, path))?;
        return Err(if another_programs(&missing, SCHEMA_VERSION) {
            StoreError::NotOurs(path.to_owned())
        } else {
            StoreError::VersionSetBack {
                path: path.to_owned(),
                found: version,
            }
        });
    }
    // Another program's file may set `user_version` too (then it was migrated, or
    // taken for one of a newer schema, and switched to WAL).
    refuse_without_our_tables(conn, path, version)
}

/// The replica's tables, each with the schema version that made it: a database at a
/// version has every one made at or before it, the full-text index's shadow tables
/// among them. (Only six were checked: a replica that lost `contacts` opened, and
/// `serve` answered `/healthz` ok and every contact event 503; one that lost
/// `messages_fts_docsize` took imports: black-box probes.)
const OUR_TABLES: [(&str, i64); 19] = [
    ("events", 1),
    ("event_bodies", 1),
    ("tombstones", 1),
    ("messages", 1),
    ("messages_fts", 1),
    ("messages_fts_data", 1),
    ("messages_fts_idx", 1),
    ("messages_fts_docsize", 1),
    ("messages_fts_config", 1),
    ("contacts", 1),
    ("conversations", 1),
    ("groups", 1),
    ("attachments", 1),
    ("group_members", 1),
    ("writer_probe", 1),
    ("backfill_cursors", 2),
    ("backfill_seen", 2),
    ("deleted_usernames", 8),
    ("rebuild_advised", 22),
];

/// Which of [`OUR_TABLES`] a database at schema `version` lacks.
pub(super) fn missing_tables(
    conn: &Connection,
    version: i64,
) -> rusqlite::Result<Vec<&'static str>> {
    let mut names = conn.prepare("SELECT name FROM sqlite_schema WHERE type = 'table'")?;
    let there = names
        .query_map([], |row| row.get::<_, String>(0))?
        .collect::<rusqlite::Result<std::collections::HashSet<_>>>()?;
    Ok(OUR_TABLES
        .iter()
        .filter(|(table, since)| *since <= version && !there.contains(*table))
        .map(|(table, _)| *table)
        .collect())
}

/// Tables of [`OUR_TABLES`] whose names another program's file would hardly have: the
/// event log's, the tombstones, the backfill's, the health probe's. (The names of the
/// five resources, `group_members` and a full-text `messages_fts` are a chat
/// program's too: a file with those was taken for a damaged replica, and a replica
/// that lost its full-text index and four small tables for another program's: a
/// black-box probe and a review.)
const OURS_ALONE: [&str; 7] = [
    "events",
    "event_bodies",
    "tombstones",
    "writer_probe",
    "backfill_cursors",
    "backfill_seen",
    "deleted_usernames",
];

/// Refuses a database of schema version `version` (not 0) that lacks some of
/// [`OUR_TABLES`]: another program's file if it lacks `event_bodies` and half of
/// those its schema has of [`OURS_ALONE`] or more; else one of ours that lost some, said to be damaged, naming
/// them (it was "not a protocol-mirror database"; a black-box probe dropped the
/// full-text index from a replica, another the event log), or, at a schema newer than
/// this binary's, which may have done without one, said as newer.
pub(super) fn refuse_without_our_tables(
    conn: &Connection,
    path: &Path,
    version: i64,
) -> Result<()> {
    let missing = missing_tables(conn, version).map_err(|e| not_ours(e, path))?;
    refuse_lacking(&missing, path, version)
}

/// [`refuse_without_our_tables`], given the tables the database lacks.
fn refuse_lacking(missing: &[&'static str], path: &Path, version: i64) -> Result<()> {
    if missing.is_empty() {
        return Ok(());
    }
    if another_programs(missing, version) {
        return Err(StoreError::NotOurs(path.to_owned()));
    }
    refuse_ahead(version, path)?;
    Err(StoreError::LostTables {
        path: path.to_owned(),
        tables: missing.to_vec(),
    })
}

/// Whether a database of schema `version` that lacks `missing` of [`OUR_TABLES`] is
/// another program's: it lacks `event_bodies` and half or more of those of
/// [`OURS_ALONE`] its version has.
fn another_programs(missing: &[&'static str], version: i64) -> bool {
    let distinctive = OUR_TABLES
        .iter()
        .filter(|(table, since)| *since <= version && OURS_ALONE.contains(table));
    let (expected, lacking) = distinctive.fold((0, 0), |(expected, lacking), (table, _)| {
        (expected + 1, lacking + usize::from(missing.contains(table)))
    });
    missing.contains(&"event_bodies") && lacking * 2 >= expected
}

/// Refuses as a database, there or not yet, a file another database keeps beside it
/// (its write-ahead log, shared memory, journal or one of its lock files, where that
/// database exists): its lock file was taken for an empty database and written as
/// one (a probe), and a database made at its `-wal` would be read as that database's
/// log. Every open and [`serve_lock`] refuse it; this says so before anything else.
///
/// # Errors
///
/// [`StoreError::Companion`] for such a file.
pub fn refuse_companion(path: &Path) -> Result<()> {
    match super::companion_of(path) {
        Some(database) => Err(StoreError::Companion {
            path: path.to_owned(),
            database,
        }),
        None => Ok(()),
    }
}

/// A folder (or a pipe, socket or device) given as the database gets a clear error
/// rather than SQLite's "unable to open database file", "disk I/O error", or a hang.
pub(super) fn refuse_non_file(path: &Path) -> Result<()> {
    let Ok(meta) = std::fs::metadata(path) else {
        return Ok(());
    };
    if meta.is_dir() {
        return Err(StoreError::Io {
            context: "expected a database file, not a folder:",
            path: path.to_owned(),
            source: std::io::ErrorKind::IsADirectory.into(),
        });
    }
    // A named pipe blocks its opener until someone writes to it (`--db` given a FIFO
    // hung for good); devices and sockets hold no database either.
    if !meta.is_file() {
        return Err(StoreError::Io {
            context: "expected a database file, not a pipe, socket or device:",
            path: path.to_owned(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a regular file"),
        });
    }
    Ok(())
}

/// How long a writer waits for a daemon that holds an older database to migrate it:
/// migration 17 indexes every message again (11 s for a million; at 10 s a `search`
/// beside a daemon migrating on start was refused: a review).
pub(super) const MIGRATING_DAEMON_WAIT: Duration = Duration::from_secs(60);

/// The schema version of the database on `conn` (at `found` now) once no daemon holds
/// it at an older one. A daemon of this version migrates on start, and holds the
/// database meanwhile (seconds, for a large one): waited for, up to
/// [`MIGRATING_DAEMON_WAIT`]. One that keeps it at an older version is an older
/// build's: migrated under it, that daemon read nothing more (500s) and went on writing
/// by its own rules, so it is refused.
pub(super) fn wait_out_a_migrating_daemon(
    conn: &Connection,
    path: &Path,
    found: i64,
) -> Result<i64> {
    let started = std::time::Instant::now();
    let mut version = found;
    while ServeLock::is_held(path) {
        // A holder that says it brings databases to an older schema (or, a build
        // before that record, says nothing of it) never migrates this one: refused at
        // once, rather than after the wait.
        let older = ServeLock::holder_schema(path)
            .is_some_and(|schema| schema.is_none_or(|schema| schema < SCHEMA_VERSION));
        // An older build's `rebuild` or `import`, which ends by itself, is said as
        // such: it was called a daemon, to be stopped, which would throw its work away
        // (an upgrade probe).
        let role = ServeLock::holder_role(path);
        if older && role.is_some_and(|role| role != crate::lock::Role::Daemon) {
            return Err(StoreError::InUse(crate::lock::LockError::Held {
                database: path.to_owned(),
                pid: ServeLock::holder(path).unwrap_or_else(|| "unknown".into()),
                role,
            }));
        }
        // A daemon of this version is migrating as long as it holds the lock and the
        // version stays older: waited for, however long (60 s was too short for ten
        // million messages; a review), unless its lock file says nothing of its schema.
        let ours =
            ServeLock::holder_schema(path).is_some_and(|schema| schema == Some(SCHEMA_VERSION));
        if older || (!ours && started.elapsed() >= MIGRATING_DAEMON_WAIT) {
            return Err(StoreError::ServedByOlder {
                path: path.to_owned(),
                found: version,
                pid: ServeLock::holder(path).unwrap_or_else(|| "unknown".into()),
            });
        }
        std::thread::sleep(Duration::from_millis(50));
        version = user_version(conn).map_err(|e| not_ours(e, path))?;
        if version >= SCHEMA_VERSION {
            break;
        }
    }
    Ok(version)
}

/// Whether `path` exists within [`BUSY_TIMEOUT`] (looked for every 10 ms).
pub(super) fn appears(path: &Path) -> bool {
    let started = std::time::Instant::now();
    while started.elapsed() < BUSY_TIMEOUT {
        if super::through_links(path).symlink_metadata().is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

/// Refuses a database file with several names (see [`StoreError::HardLinked`]): a
/// second daemon through a hard link took a lock and a WAL of its own, and both
/// acknowledged events into a file they corrupted (found by a black-box probe).
/// (`holds_serve_lock`: whether this process holds the database's [`ServeLock`].)
#[cfg(unix)]
pub(super) fn refuse_hard_links(path: &Path, holds_serve_lock: bool) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    finish_cut_short_publish(path, holds_serve_lock);
    match std::fs::metadata(path) {
        Ok(meta) if meta.nlink() > 1 => Err(StoreError::HardLinked {
            path: path.to_owned(),
            links: meta.nlink(),
        }),
        _ => Ok(()),
    }
}

/// An import into a new database that was killed while it put the database in place,
/// between linking it under its name and removing the name it was built under
/// (`.<name>.importing`, the same file): the database is whole (it was synced before),
/// so the second name is removed, as the import would have. Every writer refused the
/// file for its two links, for good, naming no import (a review). The same for a
/// backup killed there, whose copy (a backup of another name, perhaps restored under
/// this one) kept its `.<backup name>.<pid>.partial` beside it: such a name in the
/// same folder, of the same file, whose process is gone, is removed (a crash probe:
/// the restored backup was refused by every writer).
#[cfg(unix)]
fn finish_cut_short_publish(path: &Path, holds_serve_lock: bool) {
    use std::os::unix::fs::MetadataExt;
    let Ok(database) = std::fs::metadata(path) else {
        return;
    };
    if database.nlink() < 2 {
        return;
    }
    let same_file = |other: &Path| {
        std::fs::symlink_metadata(other)
            .is_ok_and(|meta| (meta.dev(), meta.ino()) == (database.dev(), database.ino()))
    };
    let building = super::importing_path(path);
    if same_file(&building) {
        // Unless the import is alive, putting it in place now (it holds the lock
        // until it is done, so not while this process holds it): it removes that name
        // in a moment, and is waited for (removed under it, its own removal failed,
        // "cannot put the new database in place", and an import stopped midway lost
        // the `-wal` and `-shm` of its open connection; a review).
        let import_alive = || !holds_serve_lock && ServeLock::is_held(path);
        let started = std::time::Instant::now();
        while import_alive() && same_file(&building) && started.elapsed() < BUSY_TIMEOUT {
            std::thread::sleep(Duration::from_millis(10));
        }
        if same_file(&building) && !import_alive() {
            super::remove_database_files(&building);
        }
        return;
    }
    let Ok(entries) = std::fs::read_dir(super::building::folder_of(path)) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if super::building::is_stale_backup_copy(&name) && same_file(&entry.path()) {
            super::remove_database_files(&entry.path());
        }
    }
}

#[cfg(not(unix))]
pub(super) fn refuse_hard_links(_path: &Path, _holds_serve_lock: bool) -> Result<()> {
    Ok(())
}

/// SQLite's `quick_check` of the database on `conn` (the file at `path`), as a result.
pub(super) fn quick_check(conn: &Connection, path: &Path) -> Result<()> {
    match quick_check_finding(conn, None).context("checking the database")? {
        None => Ok(()),
        Some(problem) => Err(StoreError::Damaged {
            path: path.to_owned(),
            problem: format!("SQLite's integrity check: {problem}"),
        }),
    }
}

/// SQLite's `quick_check` of the database on `conn`, or of `table` alone (the table
/// and its indexes): `None` when it finds it whole, else its first finding, on one
/// line without the "in database main" heading that starts it.
pub(super) fn quick_check_finding(
    conn: &Connection,
    table: Option<&str>,
) -> rusqlite::Result<Option<String>> {
    check_finding(conn, "quick_check", table)
}

/// [`quick_check_finding`] with SQLite's `integrity_check`, which also checks that
/// every index holds exactly its table's rows (one key of an index changed, in
/// order, passed the quick check: a black-box probe); about 6 times as long.
pub(super) fn integrity_check_finding(
    conn: &Connection,
    table: &str,
) -> rusqlite::Result<Option<String>> {
    check_finding(conn, "integrity_check", Some(table))
}

fn check_finding(
    conn: &Connection,
    pragma: &str,
    table: Option<&str>,
) -> rusqlite::Result<Option<String>> {
    let check = match table {
        Some(table) => format!("PRAGMA {pragma}(\"{}\")", table.replace('"', "\"\"")),
        None => format!("PRAGMA {pragma}(1)"),
    };
    let finding = conn
        .query_row(&check, [], |row| row.get::<_, String>(0))
        .or_else(|error| match error {
            // A page too damaged to read at all is a finding, not a failure to check.
            rusqlite::Error::SqliteFailure(e, message)
                if e.code == rusqlite::ErrorCode::DatabaseCorrupt =>
            {
                Ok(message.unwrap_or_else(|| e.to_string()))
            }
            other => Err(other),
        })?;
    if finding == "ok" {
        return Ok(None);
    }
    let finding = finding.trim_start_matches("*** in database main ***");
    Ok(Some(
        finding.split_whitespace().collect::<Vec<_>>().join(" "),
    ))
}

/// Creates the file a backup is copied into at `path`, readable by its owner only,
/// where nothing is: a file or a link already there is an error, never written into
/// (the copy would keep that file's owner and mode).
pub(super) fn create_new_private_file(path: &Path) -> Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
        .open(path)
        .map(drop)
        .map_err(|source| StoreError::Io {
            context: "creating the backup's temporary file",
            path: path.to_owned(),
            source,
        })
}

/// Creates `path` (and its folder) readable by its owner only, unless it exists.
/// SQLite gives the `-wal` and `-shm` files the database file's mode.
pub(super) fn create_private_file(path: &Path) -> Result<()> {
    let io = |context| {
        move |source| StoreError::Io {
            context,
            path: path.to_owned(),
            source,
        }
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        crate::create_folder(dir).map_err(io("creating the folder of"))?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(_) => Ok(()),
        // A symbolic link to a file that does not exist yet (`create_new` never follows
        // one): create the file it names, private too (SQLite would make it 0644).
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && !path.exists() => {
            options.create_new(false).create(true);
            options.open(path).map(drop).map_err(io("creating"))
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(io("creating")(e)),
    }
}

/// [`Store::check_permissions`](super::Store::check_permissions) before a connection is opened: call it first. SQLite
/// opens a `-wal` it may not write read-only, and then makes an empty one writable
/// (it sets a new file's mode): the check after the open passed, and the
/// connection's first write failed with "attempt to write a readonly database".
pub fn check_permissions(database: &Path) -> Result<()> {
    match read_only_companion(database) {
        Some(error) => Err(error),
        None => Ok(()),
    }
}

/// The database file, or a `-wal` or `-shm` beside it, that this user may not write,
/// named: SQLite only says "attempt to write a readonly database", and a `-shm` made
/// by a run on a read-only file keeps that file's mode after the file is fixed. Beside
/// the file a symbolic link leads to, where SQLite keeps them (a review).
pub(super) fn read_only_companion(database: &Path) -> Option<StoreError> {
    ["", "-wal", "-shm"].into_iter().find_map(|suffix| {
        let path = crate::beside(&super::through_links(database), suffix);
        match allowed(&path, true) {
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => Some(StoreError::Io {
                context: "cannot write",
                path,
                source: std::io::Error::new(
                    e.kind(),
                    match suffix {
                        "-shm" => {
                            "permission denied (make it writable, or remove it while no \
                             process has the database open)"
                        }
                        // Never to be removed: a WAL may hold committed events.
                        "-wal" => {
                            "permission denied (make it writable for this user; do not \
                             remove it: it may hold committed events)"
                        }
                        _ => "permission denied (make it writable for this user)",
                    },
                ),
            }),
            _ => None,
        }
    })
}

/// A file this user may not read is said to be one (SQLite says "unable to open
/// database file", which names no cause).
pub(super) fn refuse_unreadable(path: &Path) -> Result<()> {
    match allowed(path, false) {
        Err(source) if source.kind() == std::io::ErrorKind::PermissionDenied => {
            Err(StoreError::Io {
                context: "cannot read",
                path: path.to_owned(),
                source,
            })
        }
        _ => Ok(()),
    }
}

/// Whether this user may read (or `write`) the file at `path`, asked of the kernel
/// without opening it (`faccessat` with the effective ids). Never open a database
/// file, its WAL or its `-shm` beside a connection to it: closing any descriptor of a
/// file drops every POSIX lock this process holds on it, SQLite's included, and
/// another process then takes the shared memory for unused and starts it over under
/// the connections still mapping it (several writers at once died of SIGBUS: a
/// black-box probe, after `import` and `rebuild` checked permissions by opening the
/// files).
#[cfg(unix)]
fn allowed(path: &Path, write: bool) -> std::io::Result<()> {
    use rustix::fs::{Access, AtFlags, CWD, accessat};
    let access = if write {
        Access::WRITE_OK
    } else {
        Access::READ_OK
    };
    accessat(CWD, path, access, AtFlags::EACCESS).map_err(std::io::Error::from)
}

#[cfg(not(unix))]
fn allowed(path: &Path, write: bool) -> std::io::Result<()> {
    match std::fs::metadata(path) {
        Ok(meta) if write && meta.permissions().readonly() => {
            Err(std::io::ErrorKind::PermissionDenied.into())
        }
        Ok(_) => Ok(()),
        Err(e) => Err(e),
    }
}
