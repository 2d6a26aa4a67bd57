//! The store: every SQL statement of the mirror lives in this module (and in
//! `migrations/`). The rest of the crate calls its typed functions.
//!
//! - [`Store::open`] opens (or creates) a database for writing: it runs the migrations
//!   and sets the writer's pragmas (WAL, `synchronous=FULL`, foreign keys), and a busy
//!   handler that tries for the write lock every millisecond for up to 5 s. It refuses
//!   a folder, a schema newer than this binary's, and another program's SQLite file,
//!   and creates a missing database only under its serve lock (not while an import is
//!   building it beside its name); [`Store::open_locked`] is for the lock's holder.
//! - [`Store::unjournaled`] and [`Store::journal_again`] bracket the building of a new
//!   database no one else can open (`building.rs` puts it in place whole).
//! - [`Store::open_read_only`] never creates, migrates or writes; it reports a schema
//!   of another version in one line naming the fix.
//! - No descriptor of a database file, its WAL or its `-shm` is opened beside a
//!   connection to it (closing one would drop the process's SQLite locks): a header is
//!   peeked at before any connection, and permissions are asked with `faccessat`.

pub mod backfill;
mod backup;
mod building;
mod error;
mod log;
pub mod query;
mod rows;
mod schema;
mod snapshot;

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use crate::lock::ServeLock;

pub use building::remove_stale_backup_copies;
pub(crate) use building::{building_path, publish, remove_database_files};
pub(crate) use error::Context;
pub use error::{Result, StoreError};
pub(crate) use log::Log;
pub use log::LogEntry;
pub use rows::get;
pub(crate) use rows::{
    Members, Stored, Table, attachments_of, clear_replica, conversations_of_group, delete,
    is_tombstoned, load, load_row, messages_of, one_to_one_conversations_of, probe_write, save,
    tombstone,
};
pub use schema::SCHEMA_VERSION;
pub use snapshot::Snapshot;

/// The size, in bytes, a writer cuts the WAL file back to when it starts over.
pub const WAL_SIZE_LIMIT: i64 = 64 * 1024 * 1024;

/// What to tell whoever migrated a database from an older schema: earlier versions
/// stored some states differently from what this version's rules give (README,
/// "Upgrading"), and a rebuild recomputes the replica from the event log by them.
pub const REBUILD_ADVICE: &str = "run `protocol-mirror rebuild` (with the daemon stopped) \
     so that the replica follows this version's rules: earlier versions stored some states \
     differently (see README, \"Upgrading\")";

/// The oldest schema whose builds already applied this version's replica rules: a
/// database migrated from it or a newer one holds what a rebuild would give, and the
/// migration needs no [`REBUILD_ADVICE`]. (Schema 12 only adds a column that its
/// migration fills; README, "Upgrading".)
pub const SAME_RULES_SINCE: i64 = 11;

/// How long a connection waits for another one's lock before failing with "busy".
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// How often a writer waiting for the write lock tries again. SQLite's own busy
/// handler backs off to a try every 100 ms, and a writer that commits and begins again
/// at once (an import) leaves gaps of microseconds: a daemon's writer polling every
/// 100 ms could miss every one of them until its timeout (503s beside an import of
/// events the log already had, whose batches commit almost nothing).
pub const BUSY_POLL: Duration = Duration::from_millis(1);

/// The busy handler of writing connections: waits [`BUSY_POLL`] and tries again, for
/// up to [`BUSY_TIMEOUT`] in all, by the clock: counted in tries, a wait took longer
/// than the timeout by every sleep's oversleep (5.7-7.3 s on a busy machine, found by
/// a black-box probe). The handler runs on the thread that waits; `attempts` is 0 at
/// the first try of each wait.
fn wait_for_lock(attempts: i32) -> bool {
    thread_local! {
        static WAIT_STARTED: std::cell::Cell<Option<std::time::Instant>> =
            const { std::cell::Cell::new(None) };
    }
    let now = std::time::Instant::now();
    let started = WAIT_STARTED.with(|started| match started.get() {
        Some(at) if attempts > 0 => at,
        _ => {
            started.set(Some(now));
            now
        }
    });
    let left = BUSY_TIMEOUT.saturating_sub(now.duration_since(started));
    if left.is_zero() {
        return false;
    }
    std::thread::sleep(BUSY_POLL.min(left));
    true
}

/// A connection to a replica database.
pub struct Store {
    conn: Connection,
    path: Option<PathBuf>,
    migrated_from: Option<i64>,
    removed_leftover: Option<PathBuf>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

impl Store {
    /// Opens the database at `path` for writing, creating it (mode 0600, and its
    /// folder) if needed, and migrating it to this binary's schema.
    ///
    /// A database that does not exist yet is created under its [`ServeLock`]: while
    /// another process holds that lock, this fails rather than create the file that
    /// process is about to put there: with [`StoreError::Building`] for an import
    /// building the database beside its name (see `import::import_into_new`), else
    /// with [`StoreError::InUse`].
    pub fn open(path: &Path) -> Result<Store> {
        let _creating = match path.symlink_metadata() {
            // An import building it is said so by `serve_lock`.
            Err(_) => match serve_lock(path, crate::lock::Role::Create) {
                Ok(lock) => Some(lock),
                // Another writer is creating it (not an import, which builds beside
                // it): the file appears in moments. Opened then, as one that existed
                // (SQLite's own locks order the migrations). On a busy machine the
                // creator's migrations outlasted the lock's short retry.
                Err(held @ StoreError::InUse(crate::lock::LockError::Held { .. })) => {
                    if !appears(path) {
                        return Err(held);
                    }
                    None
                }
                Err(other) => return Err(other),
            },
            Ok(_) => None,
        };
        Store::open_file(path, false)
    }

    /// [`Store::open`] for a process that holds the database's [`ServeLock`] itself
    /// (a daemon): creates the file if needed without taking the lock again.
    pub fn open_locked(path: &Path) -> Result<Store> {
        Store::open_file(path, true)
    }

    fn open_file(path: &Path, holds_serve_lock: bool) -> Result<Store> {
        refuse_non_file(path)?;
        refuse_unreadable(path)?;
        refuse_hard_links(path)?;
        refuse_read_only_filesystem(path)?;
        // What a killed import into this new database left beside it: no import builds
        // it now (this process holds the serve lock, or `open` returned), and once the
        // database exists an import goes into it, never to that file again.
        let building = building_path(path, "importing");
        let leftover = (!path.exists() && building.exists()).then_some(building);
        create_private_file(path)?;
        let conn = Connection::open_with_flags(sqlite_path(path), writer_flags())
            .context("opening the database")?;
        let mut store = Store::writer(conn, Some((path.to_owned(), holds_serve_lock)))?;
        if let Some(leftover) = leftover {
            remove_database_files(&leftover);
            store.removed_leftover = Some(leftover);
        }
        Ok(store)
    }

    /// The file a killed import into this database had left (`.<name>.importing`),
    /// if this store created the database and removed it.
    pub fn removed_import_leftover(&self) -> Option<&Path> {
        self.removed_leftover.as_deref()
    }

    /// The schema version the database had when this store opened it, if it migrated
    /// it from an older one: the replica then follows this version's rules only once
    /// rebuilt (see [`REBUILD_ADVICE`]).
    pub fn migrated_from(&self) -> Option<i64> {
        self.migrated_from
    }

    /// What to tell the user when this store migrated the database: from which version,
    /// and [`REBUILD_ADVICE`] when that version's rules were not this one's.
    pub fn migration_note(&self) -> Option<String> {
        let (from, path) = (self.migrated_from?, self.path.as_deref()?);
        let mut note = format!(
            "migrated {} from schema version {from} to {SCHEMA_VERSION}",
            path.display()
        );
        if from < SAME_RULES_SINCE {
            note.push_str("; ");
            note.push_str(REBUILD_ADVICE);
        }
        Some(note)
    }

    /// A writable database in memory, for tests and fuzzing.
    pub fn open_in_memory() -> Result<Store> {
        let conn = Connection::open_in_memory().context("opening an in-memory database")?;
        Store::writer(conn, None)
    }

    /// A writing store on `conn`: for a file, its path and whether this process holds
    /// its [`ServeLock`] (a daemon's own open).
    fn writer(conn: Connection, file: Option<(PathBuf, bool)>) -> Result<Store> {
        conn.busy_handler(Some(wait_for_lock))
            .context("setting the busy handler")?;
        let mut migrated_from = None;
        // A file that is not a database fails here, named, before any pragma.
        if let Some((path, holds_serve_lock)) = &file {
            refuse_foreign(&conn, path)?;
            let mut found = user_version(&conn).map_err(|e| not_ours(e, path))?;
            refuse_ahead(found, path)?;
            if (1..SCHEMA_VERSION).contains(&found) && !holds_serve_lock {
                found = wait_out_a_migrating_daemon(&conn, path, found)?;
            }
            if (1..SCHEMA_VERSION).contains(&found) {
                migrated_from = Some(found);
            }
        }
        let path = file.map(|(path, _)| path);
        enable_wal(&conn)?;
        // An acknowledged event must survive power loss: fsync the WAL at every commit.
        conn.pragma_update(None, "synchronous", "FULL")
            .context("setting synchronous=FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .context("enabling foreign keys")?;
        // The writer runs more distinct statements than rusqlite caches by default
        // (16): past that, every event prepared some of them again.
        conn.set_prepared_statement_cache_capacity(128);
        let mut store = Store {
            conn,
            path,
            migrated_from,
            removed_leftover: None,
        };
        // Bulk writes (migrations, rebuild, backfill) touch pages of several indexes on
        // random ids: a 64 MiB cache keeps them between statements (it only fills as
        // the file grows). `import` and the daemon set their own sizes.
        store.set_cache_kib(64 * 1024)?;
        // Checkpoint about every 40 MiB of WAL rather than 4 MiB: an index page that
        // several commits rewrite is copied into the database once.
        store.set_autocheckpoint(10_000)?;
        // A WAL that grew while a long read held it (a 40 s search under a stream of
        // webhooks: 565 MB) is cut back to 64 MiB when it starts over, rather than
        // keep its largest size on disk for good.
        store
            .conn
            .pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT)
            .context("setting the WAL size limit")?;
        if !schema::migrate(&mut store.conn)? {
            // Another process migrated it while this one waited: theirs to report.
            store.migrated_from = None;
        }
        rows::prepare_writer(&store.conn)?;
        Ok(store)
    }

    /// Opens the database at `path` read-only: never creates it, never migrates it,
    /// and refuses a schema of another version with a message naming the fix.
    pub fn open_read_only(path: &Path) -> Result<Store> {
        Store::read_only(path, false)
    }

    /// Opens the database at `path` read-only to copy it: like
    /// [`Store::open_read_only`], but a database of this program at another schema
    /// version is accepted too (backing up before a migration is the careful order).
    pub fn open_to_copy(path: &Path) -> Result<Store> {
        Store::read_only(path, true)
    }

    fn read_only(path: &Path, any_version: bool) -> Result<Store> {
        present(path)?;
        refuse_non_file(path)?;
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(sqlite_path(path), flags)
            .context("opening the database")?;
        conn.busy_timeout(BUSY_TIMEOUT)
            .context("setting the busy timeout")?;
        conn.pragma_update(None, "query_only", "ON")
            .context("setting query_only")?;
        let mut found = user_version(&conn).map_err(|e| not_ours(e, path))?;
        // A daemon of this version migrating it on start: read once it is done (it
        // said "run `protocol-mirror migrate`", which would only wait for the daemon).
        if (1..SCHEMA_VERSION).contains(&found) && !any_version {
            found = wait_out_a_migrating_daemon(&conn, path, found)?;
        }
        if found == 0 || !has_our_tables(&conn).map_err(|e| not_ours(e, path))? {
            // An empty file (`touch mirror.db`) or database: a replica not made yet,
            // which a writer makes there, not another program's file.
            let empty = found == 0 && has_no_schema(&conn).unwrap_or(false);
            return Err(if empty {
                StoreError::Empty(path.to_owned())
            } else {
                StoreError::NotOurs(path.to_owned())
            });
        }
        if any_version {
            return Ok(Store {
                conn,
                path: Some(path.to_owned()),
                migrated_from: None,
                removed_leftover: None,
            });
        }
        if found < SCHEMA_VERSION {
            return Err(StoreError::SchemaBehind {
                path: path.to_owned(),
                found,
                expected: SCHEMA_VERSION,
            });
        }
        refuse_ahead(found, path)?;
        Ok(Store {
            conn,
            path: Some(path.to_owned()),
            migrated_from: None,
            removed_leftover: None,
        })
    }

    /// The underlying connection.
    pub fn conn(&self) -> &Connection {
        &self.conn
    }

    /// The underlying connection, mutably (to start transactions).
    pub fn conn_mut(&mut self) -> &mut Connection {
        &mut self.conn
    }

    /// The database file, unless the store is in memory.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Proves the database takes a commit: writes the health-check row in a transaction
    /// of its own. Opening can succeed on a database that cannot be written (a file or
    /// `-shm` that is read-only for this user, a full disk), as nothing needs writing
    /// when its schema is current; this finds out.
    pub fn check_writable(&mut self) -> Result<()> {
        let written = (|| {
            let tx = self.transaction()?;
            probe_write(&tx)?;
            tx.commit()
        })();
        match (written, &self.path) {
            (Err(error), Some(path)) => Err(read_only_companion(path).unwrap_or(error)),
            (written, _) => written,
        }
    }

    /// Whether this user may write the database file and its WAL and shared-memory
    /// files, without writing (so without waiting for a busy database): the error
    /// names the file and the fix. (A full disk shows only at a commit:
    /// [`Store::check_writable`].)
    pub fn check_permissions(&self) -> Result<()> {
        self.path.as_deref().map_or(Ok(()), check_permissions)
    }

    /// Starts a write transaction (`BEGIN IMMEDIATE`, so a busy database fails here
    /// rather than halfway through).
    pub fn transaction(&mut self) -> Result<Batch<'_>> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .context("starting a transaction")?;
        Ok(Batch { tx })
    }

    /// SQLite's `data_version`: it changes whenever another connection commits.
    pub fn data_version(&self) -> Result<i64> {
        self.conn
            .pragma_query_value(None, "data_version", |row| row.get(0))
            .context("reading the data version")
    }

    /// The page cache size, in KiB.
    pub fn cache_kib(&self) -> Result<i64> {
        let size: i64 = self
            .conn
            .pragma_query_value(None, "cache_size", |row| row.get(0))
            .context("reading the cache size")?;
        // Positive values count pages (of 4 KiB here), negative ones KiB.
        Ok(if size < 0 { -size } else { size * 4 })
    }

    /// Sets the page cache size, in KiB (the cache only fills as pages are read).
    pub fn set_cache_kib(&self, kib: i64) -> Result<()> {
        self.conn
            .pragma_update(None, "cache_size", -kib)
            .context("setting the cache size")
    }

    /// Calls `beat` about every `ops` steps of SQLite's virtual machine while a
    /// statement of this connection runs (never while it waits for a lock, or for the
    /// disk): a sign of life from inside a long statement. `beat` never interrupts it.
    pub fn on_progress(&self, ops: i32, mut beat: impl FnMut() + Send + 'static) -> Result<()> {
        self.conn
            .progress_handler(
                ops,
                Some(move || {
                    beat();
                    false
                }),
            )
            .context("setting the progress handler")
    }

    /// Checkpoints automatically after a commit that leaves at least `pages` pages in
    /// the WAL (0: never).
    pub fn set_autocheckpoint(&self, pages: i64) -> Result<()> {
        self.conn
            .pragma_update(None, "wal_autocheckpoint", pages)
            .context("setting the checkpoint interval")
    }

    /// Writes without a journal and without syncing, for building a new database that
    /// no other connection opens and that is thrown away if building fails (an import
    /// into a database that did not exist: see `import::import_into_new`). Pages are
    /// still written to the file at every commit, so after a commit the file is a
    /// whole database; nothing is synced until [`Store::journal_again`]. A transaction
    /// must never be rolled back in this mode (SQLite's rollback needs the journal):
    /// on a failure, the database is discarded.
    pub fn unjournaled(&self) -> Result<()> {
        self.conn
            .pragma_update(None, "journal_mode", "OFF")
            .context("turning the journal off")?;
        self.conn
            .pragma_update(None, "synchronous", "OFF")
            .context("setting synchronous=OFF")
    }

    /// Whether the event log is empty (nothing was ever delivered or imported).
    pub fn is_empty(&self) -> Result<bool> {
        Log::is_empty(&self.conn)
    }

    /// Back from [`Store::unjournaled`] to the writer's WAL with `synchronous=FULL`.
    pub fn journal_again(&self) -> Result<()> {
        enable_wal(&self.conn)?;
        self.conn
            .pragma_update(None, "synchronous", "FULL")
            .context("setting synchronous=FULL")
    }

    /// Copies committed WAL frames into the database file as far as readers allow,
    /// without waiting for (or blocking) the writer or readers: SQLite's PASSIVE
    /// checkpoint. Returns how many frames the WAL holds and how many are copied.
    pub fn checkpoint_passive(&self) -> Result<(i64, i64)> {
        self.conn
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
                Ok((row.get(1)?, row.get(2)?))
            })
            .context("checkpointing")
    }

    /// The full replica state (objects as `get` prints them, and tombstones).
    pub fn snapshot(&self) -> Result<Snapshot> {
        snapshot::take(&self.conn)
    }

    /// Closes the connection, reporting any error (a dropped store closes silently).
    pub fn close(self) -> Result<()> {
        self.conn.close().map_err(|(_, source)| StoreError::Sqlite {
            context: "closing the database",
            source,
        })
    }
}

/// A write transaction. It dereferences to the connection (what the apply engine
/// takes); [`Batch::commit`] first writes the full-text index changes the
/// transaction queued (see `rows::flush_search_index`), then commits. Dropped
/// without a commit, it rolls back, queued index changes included.
pub struct Batch<'a> {
    tx: rusqlite::Transaction<'a>,
}

impl Batch<'_> {
    /// Writes the queued full-text index changes now (a long transaction, such as a
    /// rebuild, calls this from time to time to bound the queue).
    pub fn flush(&self) -> Result<()> {
        rows::flush_search_index(&self.tx)
    }

    /// Writes the queued full-text index changes and commits.
    pub fn commit(self) -> Result<()> {
        self.flush()?;
        self.tx.commit().context("committing")
    }
}

impl std::ops::Deref for Batch<'_> {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        &self.tx
    }
}

/// Refuses, without writing anything, a file at `path` that is another program's
/// SQLite database (what a writer's open refuses): for commands that would otherwise
/// create files beside it first (`serve`'s lock). It reads the file's header rather
/// than opening it with SQLite, which would leave a `-wal` and `-shm` beside a WAL
/// database. A missing file, or one that is not SQLite at all, passes: the writer's
/// open says what is wrong with it.
pub fn refuse_if_foreign(path: &Path) -> Result<()> {
    use std::io::Read;
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
            return Err(StoreError::NotOurs(path.to_owned()));
        }
        Ok(n) if n < 108 => return Ok(()),
        Ok(_) => {}
    }
    let user_version = u32::from_be_bytes([header[60], header[61], header[62], header[63]]);
    // Page 1 holds the schema table: an interior page, or a leaf with any cell, means
    // tables (or indexes) of some other program's.
    let page_type = header[100];
    let cells = u16::from_be_bytes([header[103], header[104]]);
    if user_version == 0 && (page_type == 0x05 || (page_type == 0x0d && cells > 0)) {
        return Err(StoreError::NotOurs(path.to_owned()));
    }
    // Another program may set `user_version` too: then its tables say.
    if user_version != 0 {
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        if let Ok(conn) = Connection::open_with_flags(sqlite_path(path), flags)
            && let Ok(false) = has_our_tables(&conn)
        {
            return Err(StoreError::NotOurs(path.to_owned()));
        }
    }
    Ok(())
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
    ServeLock::acquire(path, role).map_err(|error| match error {
        crate::lock::LockError::Held { .. }
            if !path.exists() && building_path(path, "importing").exists() =>
        {
            StoreError::Building(path.to_owned())
        }
        other => StoreError::InUse(other),
    })
}

/// Fails unless there is a file at `path`: [`missing`] says why when there is none;
/// a path this user may not reach (a folder it cannot enter, a file in the place of
/// a folder, a loop of symbolic links) is said as such. (Such a path was "no database
/// at ... start `protocol-mirror serve`", and `events --follow` waited for it.)
///
/// # Errors
///
/// When there is no file at `path`, or it cannot be reached.
pub fn present(path: &Path) -> Result<()> {
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
    let building = building_path(path, "importing");
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
    let building = building_path(db, "importing");
    (!db.exists() && building.exists() && !crate::lock::ServeLock::is_held(db)).then_some(building)
}

/// The schema version of the database file at `path`, without migrating it.
pub fn schema_version_of(path: &Path) -> Result<i64> {
    refuse_non_file(path)?;
    refuse_unreadable(path)?;
    let conn = Connection::open_with_flags(sqlite_path(path), OpenFlags::SQLITE_OPEN_READ_ONLY)
        .context("opening the database")?;
    user_version(&conn).map_err(|e| not_ours(e, path))
}

/// How a writer opens a file (named as [`sqlite_path`] says): read-write, created if
/// missing; not `SQLITE_OPEN_URI` (rusqlite's default has it), as no name is a URI here.
fn writer_flags() -> OpenFlags {
    OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
}

/// `path` as SQLite must be given it to open the file of that name. The bundled SQLite
/// reads a name starting with `file:` as a URI whatever the flags say (it is built with
/// `SQLITE_USE_URI`), and `:memory:` as its in-memory database: such relative names go
/// as `./file:…` and `./:memory:`. (Writers took `--db file:x.db` for one file and
/// readers for another; `--db :memory:` imported into memory and lost it.)
fn sqlite_path(path: &Path) -> std::borrow::Cow<'_, Path> {
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
    let folder = path
        .parent()
        .filter(|folder| !folder.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let on_disk = if path.exists() { path } else { folder };
    if on_read_only_filesystem(on_disk) {
        return Err(StoreError::WriteOnReadOnlyFilesystem(path.to_owned()));
    }
    Ok(())
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

fn user_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.pragma_query_value(None, "user_version", |row| row.get(0))
}

fn not_ours(error: rusqlite::Error, path: &Path) -> StoreError {
    match &error {
        rusqlite::Error::SqliteFailure(e, _) if e.code == rusqlite::ErrorCode::NotADatabase => {
            StoreError::NotOurs(path.to_owned())
        }
        // The first read of a WAL database maps its `-shm` file: a reader that cannot
        // create or write it gets "attempt to write a readonly database" (or an I/O
        // error on a full disk), which says nothing of where the problem is.
        // On a read-only filesystem, with no `-shm` there to share, SQLite cannot open
        // a WAL database at all ("unable to open database file"). Read as immutable,
        // it would miss or tear under a writer of the same file through a writable
        // path (a read-only bind mount of a served folder), so it is refused, named.
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
fn refuse_ahead(found: i64, path: &Path) -> Result<()> {
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
fn enable_wal(conn: &Connection) -> Result<()> {
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
fn has_no_schema(conn: &Connection) -> rusqlite::Result<bool> {
    conn.query_row("SELECT COUNT(*) = 0 FROM sqlite_schema", [], |row| {
        row.get(0)
    })
}

/// A database of schema version 0 with tables of its own is some other program's:
/// migrating it would add the replica's tables to it (a mistyped `--db`, say).
fn refuse_foreign(conn: &Connection, path: &Path) -> Result<()> {
    let ours = if user_version(conn).map_err(|e| not_ours(e, path))? == 0 {
        // Ours if it is empty: a new database.
        has_no_schema(conn)
    } else {
        // Another program's file may set `user_version` too (then it was migrated, or
        // taken for one of a newer schema, and switched to WAL).
        has_our_tables(conn)
    };
    if !ours.map_err(|e| not_ours(e, path))? {
        return Err(StoreError::NotOurs(path.to_owned()));
    }
    Ok(())
}

/// Whether the tables every schema version has are there (names another program
/// would hardly have all of, the full-text index's shadow tables among them).
fn has_our_tables(conn: &Connection) -> rusqlite::Result<bool> {
    conn.query_row(
        "SELECT COUNT(*) = 6 FROM sqlite_schema
         WHERE type = 'table' AND name IN ('events', 'event_bodies', 'tombstones',
                                           'messages', 'messages_fts', 'messages_fts_data')",
        [],
        |row| row.get(0),
    )
}

/// A folder (or a pipe, socket or device) given as the database gets a clear error
/// rather than SQLite's "unable to open database file", "disk I/O error", or a hang.
fn refuse_non_file(path: &Path) -> Result<()> {
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

/// How long a writer waits for a daemon that holds an older database to migrate it.
const MIGRATING_DAEMON_WAIT: Duration = Duration::from_secs(10);

/// The schema version of the database on `conn` (at `found` now) once no daemon holds
/// it at an older one. A daemon of this version migrates on start, and holds the
/// database meanwhile (seconds, for a large one): waited for, up to
/// [`MIGRATING_DAEMON_WAIT`]. One that keeps it at an older version is an older
/// build's: migrated under it, that daemon read nothing more (500s) and went on writing
/// by its own rules, so it is refused.
fn wait_out_a_migrating_daemon(conn: &Connection, path: &Path, found: i64) -> Result<i64> {
    let started = std::time::Instant::now();
    let mut version = found;
    while ServeLock::is_held(path) {
        // A holder that says it brings databases to an older schema (or, a build
        // before that record, says nothing of it) never migrates this one: refused at
        // once, rather than after the wait.
        let older = ServeLock::holder_schema(path)
            .is_some_and(|schema| schema.is_none_or(|schema| schema < SCHEMA_VERSION));
        if older || started.elapsed() >= MIGRATING_DAEMON_WAIT {
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
fn appears(path: &Path) -> bool {
    let started = std::time::Instant::now();
    while started.elapsed() < BUSY_TIMEOUT {
        if path.symlink_metadata().is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

/// Refuses a database file with several names (see [`StoreError::HardLinked`]): a
/// second daemon through a hard link took a lock and a WAL of its own, and both
/// acknowledged events into a file they corrupted (found by a black-box probe).
#[cfg(unix)]
fn refuse_hard_links(path: &Path) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    match std::fs::metadata(path) {
        Ok(meta) if meta.nlink() > 1 => Err(StoreError::HardLinked {
            path: path.to_owned(),
            links: meta.nlink(),
        }),
        _ => Ok(()),
    }
}

#[cfg(not(unix))]
fn refuse_hard_links(_path: &Path) -> Result<()> {
    Ok(())
}

/// SQLite's `quick_check` of the database on `conn` (the file at `path`), as a result.
fn quick_check(conn: &Connection, path: &Path) -> Result<()> {
    let problem: String = conn
        .query_row("PRAGMA quick_check(1)", [], |row| row.get(0))
        .or_else(|error| match error {
            // A page too damaged to read at all is a finding, not a failure to check.
            rusqlite::Error::SqliteFailure(e, message)
                if e.code == rusqlite::ErrorCode::DatabaseCorrupt =>
            {
                Ok(message.unwrap_or_else(|| e.to_string()))
            }
            other => Err(other),
        })
        .context("checking the database")?;
    if problem == "ok" {
        return Ok(());
    }
    Err(StoreError::Damaged {
        path: path.to_owned(),
        problem,
    })
}

/// Creates `path` (and its folder) readable by its owner only, unless it exists.
/// SQLite gives the `-wal` and `-shm` files the database file's mode.
fn create_private_file(path: &Path) -> Result<()> {
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

/// [`Store::check_permissions`] before a connection is opened: call it first. SQLite
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
/// by a run on a read-only file keeps that file's mode after the file is fixed.
fn read_only_companion(database: &Path) -> Option<StoreError> {
    ["", "-wal", "-shm"].into_iter().find_map(|suffix| {
        let path = crate::beside(database, suffix);
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
fn refuse_unreadable(path: &Path) -> Result<()> {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Migration 0012 gives the attachments of a schema-11 database their message's
    /// conversation (an orphan none), and a migration from schema 11 asks for no
    /// rebuild; one from 10 still does.
    #[test]
    fn attachments_migrated_from_schema_11_know_their_conversation() {
        let dir = tempfile::tempdir().unwrap();
        for from in [10, 11] {
            let db = dir.path().join(format!("from-{from}.db"));
            let mut conn = Connection::open(&db).unwrap();
            schema::MIGRATIONS.to_version(&mut conn, from).unwrap();
            conn.execute_batch(
                r#"INSERT INTO messages (id, conversation_id, seq, data)
                     VALUES ('m1', 'c1', 1, '{}'), ('m2', NULL, 2, '{}');
                 INSERT INTO attachments (id, message_id, created_at, seq, data)
                     VALUES ('a1', 'm1', 5, 3, '{"id":"a1"}'), ('a2', 'm1', 6, 4, '{"id":"a2"}'),
                            ('a3', 'm2', 7, 5, '{"id":"a3"}'), ('a4', 'x', 8, 6, '{"id":"a4"}');"#,
            )
            .unwrap();
            drop(conn);
            let store = Store::open(&db).unwrap();
            let note = store.migration_note().unwrap();
            assert!(
                note.contains(&format!("from schema version {from}")),
                "{note}"
            );
            assert_eq!(
                from < 11,
                note.contains("protocol-mirror rebuild"),
                "{note}"
            );
            let in_c1 = query::list(
                store.conn(),
                protocol_types::Resource::Attachment,
                &query::ListQuery {
                    conversation: Some("c1".into()),
                    ..query::ListQuery::default()
                },
            )
            .unwrap();
            let ids: Vec<&str> = in_c1.iter().map(|a| a["id"].as_str().unwrap()).collect();
            assert_eq!(ids, ["a2", "a1"]);
            let unset: i64 = store
                .conn()
                .query_row(
                    "SELECT COUNT(*) FROM attachments WHERE conversation_id IS NULL",
                    [],
                    |row| row.get(0),
                )
                .unwrap();
            assert_eq!(unset, 2, "a3 (its message has none) and a4 (an orphan)");
        }
    }

    /// A database that does not exist yet is not created while another holder has
    /// its lock (an import building it beside: `migrate` or `backfill` created the
    /// file under it, and the import's work ended up in a hidden file); one that
    /// exists opens as before.
    #[test]
    fn a_database_being_built_elsewhere_is_not_created() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("m.db");
        let importing = ServeLock::acquire(&db, crate::lock::Role::Import).unwrap();
        let err = Store::open(&db).unwrap_err();
        assert!(matches!(err, StoreError::InUse(_)), "{err}");
        assert!(err.to_string().contains("in use"), "{err}");
        assert!(!db.exists());
        // An import's file beside it: said to be an import building it.
        let building = building_path(&db, "importing");
        std::fs::write(&building, b"").unwrap();
        let err = Store::open(&db).unwrap_err();
        assert!(matches!(err, StoreError::Building(_)), "{err}");
        assert!(
            err.to_string().contains("an import is building it"),
            "{err}"
        );
        std::fs::remove_file(&building).unwrap();
        drop(importing);
        Store::open(&db).unwrap();
        let _daemon = ServeLock::acquire(&db, crate::lock::Role::Daemon).unwrap();
        Store::open(&db).unwrap();
    }

    /// A WAL that a long read let grow is cut back once it starts over.
    #[test]
    fn a_grown_wal_is_cut_back() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("m.db");
        let mut store = Store::open(&db).unwrap();
        store.set_autocheckpoint(0).unwrap();
        let limit: i64 = store
            .conn()
            .pragma_query_value(None, "journal_size_limit", |row| row.get(0))
            .unwrap();
        assert_eq!(limit, WAL_SIZE_LIMIT);
        // The same at a smaller scale (80 MiB of writes slowed the tests beside it):
        // 4 MiB of WAL over a 1 MiB limit, checkpointed; the next write starts the WAL
        // over and cuts it back.
        const SMALL: i64 = 1024 * 1024;
        store
            .conn()
            .pragma_update(None, "journal_size_limit", SMALL)
            .unwrap();
        let tx = store.transaction().unwrap();
        tx.execute_batch(
            "CREATE TABLE t (x); WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n
             WHERE i < 1000) INSERT INTO t SELECT randomblob(4000) FROM n;",
        )
        .unwrap();
        tx.commit().unwrap();
        let wal = crate::beside(&db, "-wal");
        assert!(std::fs::metadata(&wal).unwrap().len() > 3 * SMALL as u64);
        store.checkpoint_passive().unwrap();
        let tx = store.transaction().unwrap();
        tx.execute_batch("INSERT INTO t VALUES (1)").unwrap();
        tx.commit().unwrap();
        assert!(std::fs::metadata(&wal).unwrap().len() <= SMALL as u64);
    }

    /// A database reached through a symbolic link to a file not there yet is created
    /// where the link points, readable by its owner only, like any other.
    #[cfg(unix)]
    #[test]
    fn a_database_created_through_a_dangling_link_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("real.db");
        let link = dir.path().join("link.db");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        Store::open(&link).unwrap();
        let mode = std::fs::metadata(&target).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(link.symlink_metadata().unwrap().file_type().is_symlink());
    }

    #[test]
    fn writer_pragmas() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("sub/m.db")).unwrap();
        let get = |name: &str| -> String {
            store
                .conn()
                .pragma_query_value(None, name, |row| row.get::<_, rusqlite::types::Value>(0))
                .map(|v| format!("{v:?}"))
                .unwrap()
        };
        assert_eq!(get("journal_mode"), "Text(\"wal\")");
        assert_eq!(get("synchronous"), "Integer(2)", "FULL");
        assert_eq!(get("foreign_keys"), "Integer(1)");
        assert_eq!(get("user_version"), format!("Integer({SCHEMA_VERSION})"));
    }

    #[cfg(unix)]
    #[test]
    fn new_databases_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.db");
        Store::open(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    /// The busy handler's timeout is a time, not a count of tries (which overslept
    /// sleeps stretch): many tries at the start of a wait still go on. That a wait
    /// ends after `BUSY_TIMEOUT` is the e2e test of a locked database's 503.
    #[test]
    fn the_lock_wait_is_measured_by_the_clock() {
        assert!(wait_for_lock(0));
        assert!(wait_for_lock(10_000));
        assert!(wait_for_lock(i32::MAX));
        // A new wait (its first try) starts the clock again.
        assert!(wait_for_lock(0));
    }

    /// While an import builds a new database, readers were told to run an import.
    #[test]
    fn a_database_an_import_is_building_is_said_to_be_coming() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.db");
        std::fs::write(building_path(&path, "importing"), b"").unwrap();
        // A file left by an import that was killed is not an import going on.
        let err = Store::open_read_only(&path).unwrap_err();
        assert!(matches!(err, StoreError::Abandoned { .. }), "{err}");
        assert!(err.to_string().contains(".m.db.importing"), "{err}");
        let lock = crate::lock::ServeLock::acquire(&path, crate::lock::Role::Import).unwrap();
        let err = Store::open_read_only(&path).unwrap_err();
        assert!(matches!(err, StoreError::Building(_)), "{err}");
        assert!(
            err.to_string().contains("an import is building it"),
            "{err}"
        );
        drop(lock);
    }

    #[test]
    fn read_only_opens_never_create_or_migrate() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.db");
        let err = Store::open_read_only(&path).unwrap_err();
        assert!(matches!(err, StoreError::Missing(_)), "{err}");
        assert!(!path.exists());

        // An empty SQLite file is not ours.
        Connection::open(&path)
            .unwrap()
            .execute_batch("CREATE TABLE t (x)")
            .unwrap();
        let err = Store::open_read_only(&path).unwrap_err();
        assert!(matches!(err, StoreError::NotOurs(_)), "{err}");

        // Garbage is not ours either.
        let junk = dir.path().join("junk.db");
        std::fs::write(&junk, vec![7u8; 8192]).unwrap();
        let err = Store::open_read_only(&junk).unwrap_err();
        assert!(matches!(err, StoreError::NotOurs(_)), "{err}");

        // An empty file is no replica yet, which a writer makes there (not "not a
        // protocol-mirror database", which `migrate` then made it).
        let empty = dir.path().join("empty.db");
        std::fs::write(&empty, b"").unwrap();
        let err = Store::open_read_only(&empty).unwrap_err();
        assert!(matches!(err, StoreError::Empty(_)), "{err}");
        assert!(
            err.to_string().contains("is empty: no replica yet"),
            "{err}"
        );
        Store::open(&empty).unwrap();
        Store::open_read_only(&empty).unwrap();
    }

    #[test]
    fn schema_mismatches_name_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.db");
        Store::open(&path).unwrap();
        let set = |v: i64| {
            Connection::open(&path)
                .unwrap()
                .pragma_update(None, "user_version", v)
                .unwrap()
        };
        set(SCHEMA_VERSION + 1);
        let err = Store::open_read_only(&path).unwrap_err();
        assert!(err.to_string().contains("upgrade protocol-mirror"), "{err}");
        assert!(
            err.to_string().contains("`protocol-mirror migrate`"),
            "{err}"
        );
        let err = Store::open(&path).unwrap_err();
        assert!(matches!(err, StoreError::SchemaAhead { .. }), "{err}");
        if SCHEMA_VERSION > 1 {
            set(SCHEMA_VERSION - 1);
            let err = Store::open_read_only(&path).unwrap_err();
            assert!(err.to_string().contains("protocol-mirror migrate"), "{err}");
        }
    }

    /// `check_writable` commits a write, and fails where the
    /// database takes none; `serve` refuses to start then.
    #[test]
    fn check_writable_fails_where_nothing_can_be_written() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("m.db")).unwrap();
        store.check_writable().unwrap();
        store
            .conn()
            .pragma_update(None, "query_only", "ON")
            .unwrap();
        let err = store.check_writable().unwrap_err();
        assert!(err.to_string().contains("readonly"), "{err}");
    }

    /// A reader that cannot create or write the `-shm` file (a folder it cannot write)
    /// is told so, not "attempt to write a readonly database". (Reproduced by hand as
    /// user `nobody`; root ignores file modes, so the mapping is tested here.)
    #[test]
    fn a_reader_without_shared_memory_is_told_where_the_problem_is() {
        let readonly = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_READONLY),
            Some("attempt to write a readonly database".into()),
        );
        let err = not_ours(readonly, Path::new("/data/m.db"));
        assert!(matches!(err, StoreError::NoSharedMemory(_)), "{err}");
        assert!(err.to_string().contains("/data/m.db-shm"), "{err}");
    }

    /// Several writers opening the same new database at once (a daemon started while a
    /// first import runs) all succeed: one migrates, the others find it done.
    #[test]
    fn writers_racing_to_create_a_database_all_open_it() {
        for _ in 0..5 {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("m.db");
            let barrier = std::sync::Barrier::new(4);
            std::thread::scope(|scope| {
                let opened: Vec<_> = (0..4)
                    .map(|_| {
                        scope.spawn(|| {
                            barrier.wait();
                            Store::open(&path).map(|_| ()).map_err(|e| e.to_string())
                        })
                    })
                    .collect();
                for handle in opened {
                    handle.join().unwrap().unwrap();
                }
            });
            let conn = Connection::open(&path).unwrap();
            assert_eq!(user_version(&conn).unwrap(), SCHEMA_VERSION);
        }
    }

    /// Another program's SQLite file, or a folder, is refused by writers and readers
    /// alike, and left as it was.
    #[test]
    fn foreign_databases_and_folders_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("other.db");
        Connection::open(&path)
            .unwrap()
            .execute_batch("CREATE TABLE foo (x); INSERT INTO foo VALUES (1);")
            .unwrap();
        let before = std::fs::read(&path).unwrap();
        for err in [
            Store::open(&path).unwrap_err(),
            Store::open_read_only(&path).unwrap_err(),
        ] {
            assert!(matches!(err, StoreError::NotOurs(_)), "{err}");
        }
        assert_eq!(std::fs::read(&path).unwrap(), before);
        // What `serve` checks before making its lock file beside the database: another
        // program's SQLite file, and a file that is not SQLite at all (a lock file was
        // made beside it before SQLite refused it).
        assert!(matches!(
            refuse_if_foreign(&path),
            Err(StoreError::NotOurs(_))
        ));
        let junk = dir.path().join("junk.db");
        std::fs::write(&junk, b"hello junk\n").unwrap();
        assert!(matches!(
            refuse_if_foreign(&junk),
            Err(StoreError::NotOurs(_))
        ));
        let ours = dir.path().join("ours.db");
        Store::open(&ours).unwrap();
        refuse_if_foreign(&ours).unwrap();
        // Another program's file that sets `user_version` (as ours does) was migrated,
        // or taken for a newer schema, and switched to WAL.
        for version in [3, SCHEMA_VERSION, SCHEMA_VERSION + 1] {
            let versioned = dir.path().join(format!("versioned-{version}.db"));
            Connection::open(&versioned)
                .unwrap()
                .execute_batch(&format!(
                    "CREATE TABLE notes (x); PRAGMA user_version = {version};"
                ))
                .unwrap();
            let before = std::fs::read(&versioned).unwrap();
            for err in [
                Store::open(&versioned).unwrap_err(),
                Store::open_read_only(&versioned).unwrap_err(),
                Store::open_to_copy(&versioned).unwrap_err(),
                refuse_if_foreign(&versioned).unwrap_err(),
            ] {
                assert!(matches!(err, StoreError::NotOurs(_)), "{version}: {err}");
            }
            assert_eq!(std::fs::read(&versioned).unwrap(), before, "{version}");
        }
        // An empty file is a new database.
        let empty = dir.path().join("empty.db");
        std::fs::write(&empty, b"").unwrap();
        refuse_if_foreign(&empty).unwrap();
        Store::open(&empty).unwrap();
        for err in [
            Store::open(dir.path()).unwrap_err(),
            Store::open_read_only(dir.path()).unwrap_err(),
        ] {
            assert!(err.to_string().contains("not a folder"), "{err}");
        }
    }

    /// A named pipe given as the database hung every command in `open` (it waits for a
    /// writer); a socket or a device holds no database either.
    #[cfg(unix)]
    #[test]
    fn pipes_sockets_and_devices_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("socket.db");
        let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        let fifo = dir.path().join("fifo.db");
        let mut paths = vec![socket, PathBuf::from("/dev/null")];
        if crate::tests::mkfifo(&fifo) {
            paths.push(fifo);
        }
        for path in paths {
            for err in [
                Store::open(&path).unwrap_err(),
                Store::open_read_only(&path).unwrap_err(),
                Store::open_to_copy(&path).unwrap_err(),
                refuse_if_foreign(&path).unwrap_err(),
            ] {
                assert!(
                    err.to_string().contains("not a pipe, socket or device"),
                    "{path:?}: {err}"
                );
            }
        }
    }

    #[test]
    fn read_only_connections_refuse_writes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.db");
        Store::open(&path).unwrap();
        let store = Store::open_read_only(&path).unwrap();
        assert!(store.conn().execute("DELETE FROM contacts", []).is_err());
    }
}
