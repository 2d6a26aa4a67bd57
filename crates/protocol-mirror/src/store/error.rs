//! Errors of the store.

use std::path::{Path, PathBuf};

/// What to do about a database SQLite found damaged partway through a read or write
/// (one found so on open is [`StoreError::Damaged`], which names the file). The
/// commands name `<database>`, which the binary replaces with the database's path
/// ([`rebuild_into_command`], [`recover_command`]).
pub const DAMAGED_HINT: &str = "the database file is damaged: restore it from a backup; or, \
     if its event log can be read, rebuild its replica into a new file: `protocol-mirror \
     --db=<database> rebuild --into NEW.db`; or `sqlite3 <database> .recover | sqlite3 \
     recovered.db` may save its rows into a new file";

/// The command that rebuilds the replica of the database at `path` from its event log
/// into a new file, `path` quoted for a shell where it needs it: the way back from
/// damage anywhere but in the log's table (`.recover` failed on every replica with an
/// older `sqlite3`, and was the only way named: a black-box probe).
pub fn rebuild_into_command(path: &Path) -> String {
    rebuild_into_command_to(path, Path::new("NEW.db"))
}

/// [`rebuild_into_command`], building into `into` (quoted as `path` is).
pub fn rebuild_into_command_to(path: &Path, into: &Path) -> String {
    format!(
        "protocol-mirror --db={} rebuild --into {}",
        shell_quoted(&path.display().to_string()),
        shell_quoted(&into.display().to_string())
    )
}

/// The command that may save a damaged database's rows into a new file (SQLite's
/// `.recover` prints SQL): `path` quoted for a shell where it needs it (a path with a
/// space was two words: a black-box probe).
pub fn recover_command(path: &Path) -> String {
    // Not an option of sqlite3's (`-d.db` was: a probe).
    let path = path.display().to_string();
    let path = match path.starts_with('-') {
        true => format!("./{path}"),
        false => path,
    };
    format!(
        "sqlite3 {} .recover | sqlite3 recovered.db",
        shell_quoted(&path)
    )
}

/// Why the store could not do what was asked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// An SQLite call failed; `context` says what the store was doing.
    #[error("{context}: {source}")]
    Sqlite {
        /// What the store was doing, e.g. `saving a message`.
        context: &'static str,
        /// The SQLite error.
        #[source]
        source: rusqlite::Error,
    },
    /// Bringing the schema up to date failed.
    #[error("cannot migrate the database: {}", migration_failure(.0))]
    Migrate(#[from] rusqlite_migration::Error),
    /// The caller asked to stop (a signal) before the work was done.
    #[error("interrupted")]
    Interrupted,
    /// The database does not exist yet and another process holds its lock: an import
    /// is building it (or a daemon serves a file removed from under it).
    #[error(transparent)]
    InUse(#[from] crate::lock::LockError),
    /// A new database was built beside `dest` and another process created `dest`
    /// meanwhile: the built one is left where it was built.
    #[error(
        "{} was created by another process meanwhile, so it was left alone; what was imported is in {}: move it to {} yourself, or import again",
        dest.display(), built.display(), dest.display()
    )]
    NameTaken {
        /// The database asked for.
        dest: PathBuf,
        /// The database built.
        built: PathBuf,
    },
    /// A read-only open of a file that does not exist.
    #[error("no database at {}: start `protocol-mirror serve` or run `protocol-mirror import` first", .0.display())]
    Missing(PathBuf),
    /// A read-only open of a database an import is building (it gets its name, whole,
    /// when the import ends).
    #[error("no database at {} yet: an import is building it, and it appears there when the import ends", .0.display())]
    Building(PathBuf),
    /// A read-only open of a database whose import stopped before it was done (killed),
    /// leaving the hidden file it was building.
    #[error(
        "no database at {}: an import into it was stopped before it ended, leaving {} (import again to start over, or delete that file)",
        path.display(), building.display()
    )]
    Abandoned {
        /// The database asked for.
        path: PathBuf,
        /// The file the import was building.
        building: PathBuf,
    },
    /// A writer's open of a database file with more than one name (hard links). SQLite
    /// keeps the WAL and its index, and the mirror its lock, beside each name: writers
    /// through two names never see each other and corrupt the file.
    #[error(
        "{} has {links} hard links: SQLite keeps a database's WAL and locks beside its name, so writers through two names corrupt it; remove the other links (`find / -xdev -samefile {}`), or give the copy its own file (`protocol-mirror backup`)",
        path.display(), path.display()
    )]
    HardLinked {
        /// The database file.
        path: PathBuf,
        /// How many names it has.
        links: u64,
    },
    /// A writer's open of a database at an older schema that a daemon of an older build
    /// serves: migrating it under that daemon broke its reads and left it writing by
    /// its own rules into the new schema.
    #[error(
        "{} is at schema version {found}, and the protocol-mirror daemon serving it (pid {pid}) is an older version's (its lock file says so, or it did not migrate the database within 60 s, as this version's does on start); stop it first, then run `protocol-mirror migrate` or start this version's daemon",
        path.display()
    )]
    ServedByOlder {
        /// The database file.
        path: PathBuf,
        /// Its schema version.
        found: i64,
        /// The daemon's pid, as its lock file says.
        pid: String,
    },
    /// The file is not a protocol-mirror database.
    #[error("{} is not a protocol-mirror database", .0.display())]
    NotOurs(PathBuf),
    /// A file the database `database` keeps beside it (its write-ahead log, lock
    /// file, ...), given as a database.
    #[error(
        "{} is a file the database {} keeps beside it, not a database: give {} itself",
        path.display(), database.display(), database.display()
    )]
    Companion {
        /// The file given.
        path: PathBuf,
        /// The database it belongs to.
        database: PathBuf,
    },
    /// A read-only open of an empty file or database: no replica has been made there
    /// yet (a writer makes it).
    #[error("{} is empty: no replica yet; start `protocol-mirror serve` or run `protocol-mirror import` on it first", .0.display())]
    Empty(PathBuf),
    /// A database whose schema version is not its tables' (0 over a replica's tables,
    /// or below 0, which no migration writes): changed by hand or by another program.
    #[error(
        "the database at {} has schema version {found}, which is not its tables' (they are a replica's): was `PRAGMA user_version` changed by hand or by another program? Set it back, or restore a backup",
        path.display()
    )]
    VersionSetBack {
        /// The database file.
        path: PathBuf,
        /// The schema version it has.
        found: i64,
    },
    /// A read-only open of a database whose schema is older than this binary's.
    #[error(
        "the database at {} has schema version {found}, this binary uses {expected}: run `protocol-mirror migrate` (back it up first: older builds refuse it once migrated)",
        path.display()
    )]
    SchemaBehind {
        /// The database file.
        path: PathBuf,
        /// Its schema version.
        found: i64,
        /// This binary's schema version.
        expected: i64,
    },
    /// A database whose schema is newer than this binary's.
    #[error(
        "the database at {} has schema version {found}, newer than this binary's {expected}: upgrade protocol-mirror (`protocol-mirror migrate` only moves a database forward)",
        path.display()
    )]
    SchemaAhead {
        /// The database file.
        path: PathBuf,
        /// Its schema version.
        found: i64,
        /// This binary's schema version.
        expected: i64,
    },
    /// A stored JSON object could not be read back.
    #[error("stored {resource} {id} is corrupt: {message}")]
    Corrupt {
        /// The resource of the row.
        resource: &'static str,
        /// The row's id.
        id: String,
        /// What is wrong with it.
        message: String,
    },
    /// A reader met a transaction that a writer stopped in the middle of (killed while
    /// it made the database): the `-journal` beside it is to be rolled back, which
    /// only a writer can do. (It was said to be an `-shm` file that could not be
    /// made: a black-box probe.)
    #[error(
        "cannot read {}: a writer stopped in the middle of a transaction, and only a writer \
         can roll back what it left ({}-journal); run `protocol-mirror migrate` (or start \
         `serve`), then read again",
        .0.display(),
        .0.display()
    )]
    InterruptedWrite(PathBuf),
    /// A read-only open of a WAL database failed because SQLite could not create or
    /// write its shared-memory file beside it.
    #[error(
        "cannot read {}: SQLite needs to create or write {}-shm beside it, and cannot \
         (the folder, or an existing -shm file, is not writable for this user, or the disk is \
         full); make them writable, or copy the database (with any -wal file beside it) to a \
         writable folder",
        .0.display(),
        .0.display()
    )]
    NoSharedMemory(PathBuf),
    /// A database on a read-only filesystem: SQLite cannot create the `-shm` file that
    /// opening a WAL database needs (for reading too).
    #[error(
        "cannot open {}: it is on a read-only filesystem, and SQLite needs to create {}-shm \
         beside it to open a WAL database, even to read it; copy it (with any -wal file \
         beside it) to a writable folder, or `protocol-mirror backup` it from where it is \
         writable",
        .0.display(),
        .0.display()
    )]
    ReadOnlyFilesystem(PathBuf),
    /// A writer's open of a database on a read-only filesystem.
    #[error("{}", crate::lock::read_only_filesystem(.0))]
    WriteOnReadOnlyFilesystem(PathBuf),
    /// SQLite's integrity check, or its reading of the schema, found a problem in the
    /// database file.
    #[error(
        "{} is damaged ({problem}): restore it from a backup (`protocol-mirror backup` \
         makes them while the daemon runs); or, if its event log can be read, rebuild \
         its replica into a new file: `{}`; or `{}` may save its rows into a new file",
        path.display(),
        rebuild_into_command(path),
        recover_command(path)
    )]
    Damaged {
        /// The database file.
        path: PathBuf,
        /// The first problem the check reported.
        problem: String,
    },
    /// A replica that lost some of its tables (dropped by hand, or by another program):
    /// none of ours drops one. Its event log, if whole, can be replayed into a new
    /// database ([`crate::store::Store::open_to_salvage`] still reads it).
    #[error("{}", lost_tables(path, tables))]
    LostTables {
        /// The database file.
        path: PathBuf,
        /// The tables it lacks.
        tables: Vec<&'static str>,
    },
    /// A rebuild in place of a database whose event log SQLite's check finds damaged
    /// (an index of it: the rebuild reads the log by sequence number alone, so it
    /// went ahead, said it rebuilt the replica, and left the damage: a probe). A
    /// rebuild into a new database replays the log where it can be read.
    #[error(
        "{} is damaged (SQLite's check of its event log: {finding}), and a rebuild in \
         place would leave it so: rebuild its replica from its event log into a new \
         database, which leaves it as it is: `{}`, or restore it from a backup",
        path.display(),
        rebuild_into_command(path)
    )]
    LogDamaged {
        /// The database file.
        path: PathBuf,
        /// The check's first finding.
        finding: String,
    },
    /// The daemon is shutting down: its writer takes no more work.
    #[error("the mirror is shutting down")]
    Stopped,
    /// The daemon's writer found the database damaged at an earlier commit (what it
    /// said then), and takes no more events into it until it is restarted.
    #[error("{0}")]
    DamageFound(String),
    /// A file operation around the database failed.
    #[error("{context} {}: {source}", path.display())]
    Io {
        /// What the store was doing.
        context: &'static str,
        /// The file concerned.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// What went wrong in a migration, without the SQL text of the whole migration (several
/// KiB) that `rusqlite_migration` puts in its message.
/// A migration that finds its own tables or columns there already met a database
/// whose `user_version` is older than its tables (set by hand, or by another tool):
/// the SQLite error alone ("duplicate column name: conversation_id") says nothing of
/// that.
fn migration_failure(error: &rusqlite_migration::Error) -> String {
    match error {
        rusqlite_migration::Error::RusqliteError { err, .. } => {
            let message = err.to_string();
            if message.starts_with("duplicate column name") || message.ends_with("already exists") {
                format!(
                    "{message} (the database's tables are newer than its schema version, \
                     `PRAGMA user_version`, says: was that changed by hand or by another \
                     program? Set it back, or restore a backup)"
                )
            } else {
                message
            }
        }
        other => other.to_string(),
    }
}

/// `Result` with [`StoreError`] as the default error.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Attaches a context to SQLite errors.
pub(crate) trait Context<T> {
    fn context(self, context: &'static str) -> Result<T>;
}

impl<T> Context<T> for rusqlite::Result<T> {
    fn context(self, context: &'static str) -> Result<T> {
        self.map_err(|source| StoreError::Sqlite { context, source })
    }
}

impl StoreError {
    /// Damage the mirror found where SQLite's own error did not say so (a failed
    /// constraint SQLite's check then found to be damage, an index leading to the
    /// wrong log entry): coded as SQLite's `SQLITE_CORRUPT`, with SQLite's words first,
    /// so that every writer takes it as damage ([`StoreError::is_damage`]: the latch,
    /// the mark, the fixes named) as it would SQLite's.
    pub(crate) fn damage_found(context: &'static str, what: &str) -> StoreError {
        StoreError::Sqlite {
            context,
            source: rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CORRUPT),
                Some(format!("database disk image is malformed: {what}")),
            ),
        }
    }

    /// `true` when a read of the database or its write-ahead log ended before what
    /// SQLite expected there (SQLITE_IOERR_SHORT_READ): a file cut under it.
    pub fn is_short_read(&self) -> bool {
        matches!(
            self,
            StoreError::Sqlite {
                source: rusqlite::Error::SqliteFailure(e, _),
                ..
            } if e.extended_code == rusqlite::ffi::SQLITE_IOERR_SHORT_READ
        )
    }

    /// `true` when SQLite reported the database busy or locked by another connection
    /// (past the busy timeout): retrying later may succeed.
    pub fn is_busy(&self) -> bool {
        matches!(
            self,
            StoreError::Sqlite { source: rusqlite::Error::SqliteFailure(e, _), .. }
                if matches!(e.code, rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
        )
    }

    /// `true` when the failure is the database's or the system's, so that every write
    /// would fail alike: busy or locked, disk full, I/O, read-only, out of memory, a
    /// damaged file, the file gone or replaced. `false` for what one event's data may
    /// cause alone (a constraint, a value too big, a stored row that cannot be read
    /// back): the daemon then applies a failed batch's events one by one, so that one
    /// such event cannot fail the others.
    pub fn is_environmental(&self) -> bool {
        self.is_damage() || self.is_environmental_but_damage()
    }

    /// `true` when SQLite found the database file damaged (malformed, or not a
    /// database): what no retry mends.
    pub fn is_damage(&self) -> bool {
        matches!(
            self,
            StoreError::Sqlite {
                source: rusqlite::Error::SqliteFailure(e, _),
                ..
            } if matches!(
                e.code,
                rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase
            )
        )
    }

    fn is_environmental_but_damage(&self) -> bool {
        use rusqlite::ErrorCode as Code;
        match self {
            StoreError::Sqlite {
                source: rusqlite::Error::SqliteFailure(e, _),
                ..
            } => matches!(
                e.code,
                Code::DatabaseBusy
                    | Code::DatabaseLocked
                    | Code::DiskFull
                    | Code::SystemIoFailure
                    | Code::ReadOnly
                    | Code::CannotOpen
                    | Code::OutOfMemory
                    | Code::DatabaseCorrupt
                    | Code::NotADatabase
                    | Code::PermissionDenied
                    | Code::FileLockingProtocolFailed
                    | Code::OperationInterrupted
                    | Code::NoLargeFileSupport
            ),
            StoreError::Sqlite { .. } | StoreError::Corrupt { .. } => false,
            _ => true,
        }
    }
}

/// [`StoreError::LostTables`]'s message: which tables `path` lacks, and how to get the
/// replica back: the replay of its event log when it has one.
fn lost_tables(database: &Path, tables: &[&str]) -> String {
    let lost = match tables {
        [one] => format!("its table {one} is missing"),
        _ => format!("its tables {} are missing", tables.join(", ")),
    };
    let path = database.display();
    if tables
        .iter()
        .any(|t| ["events", "event_bodies"].contains(t))
    {
        return format!(
            "{path} is damaged ({lost}): restore it from a backup (its event log is not whole, \
             so it cannot be replayed)"
        );
    }
    format!(
        "{path} is damaged ({lost}): restore it from a backup, or rebuild its replica from \
         its event log into a new database, which leaves it as it is: `{}` (docs/CLI.md, \
         \"A replica that lost tables\")",
        rebuild_into_command(database)
    )
}

/// `text` as one word of a shell command: as it is when it holds only characters no
/// shell reads specially, else in single quotes (the recipe's `--db my mirror.db` ran
/// as two words: a review).
pub fn shell_quoted(text: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "/._-+,:@%=".contains(c);
    if !text.is_empty() && text.chars().all(plain) {
        return text.to_owned();
    }
    format!("'{}'", text.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_in_the_replay_recipe_are_one_word() {
        assert_eq!(shell_quoted("/var/lib/mirror.db"), "/var/lib/mirror.db");
        assert_eq!(shell_quoted("my mirror.db"), "'my mirror.db'");
        assert_eq!(shell_quoted("it's.db"), r"'it'\''s.db'");
        assert_eq!(shell_quoted("$HOME.db"), "'$HOME.db'");
        // The fix a damaged database's error names, pasted as it is (it was two
        // words: a probe).
        assert_eq!(
            recover_command(Path::new("sp ace/m 1.db")),
            "sqlite3 'sp ace/m 1.db' .recover | sqlite3 recovered.db"
        );
        assert_eq!(
            recover_command(Path::new("-d.db")),
            "sqlite3 ./-d.db .recover | sqlite3 recovered.db"
        );
    }

    fn sqlite(code: std::ffi::c_int) -> StoreError {
        StoreError::Sqlite {
            context: "testing",
            source: rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), None),
        }
    }

    /// What fails every write alike is environmental; what one event's data may
    /// cause is not (the writer then applies a failed batch one event at a time).
    #[test]
    fn environmental_failures_are_told_from_an_events_own() {
        use rusqlite::ffi;
        for code in [
            ffi::SQLITE_BUSY,
            ffi::SQLITE_FULL,
            ffi::SQLITE_IOERR,
            ffi::SQLITE_READONLY,
        ] {
            assert!(sqlite(code).is_environmental(), "{code}");
        }
        for code in [
            ffi::SQLITE_CONSTRAINT,
            ffi::SQLITE_TOOBIG,
            ffi::SQLITE_MISMATCH,
        ] {
            assert!(!sqlite(code).is_environmental(), "{code}");
        }
        let corrupt = StoreError::Corrupt {
            resource: "message",
            id: "m1".into(),
            message: "not JSON".into(),
        };
        assert!(!corrupt.is_environmental());
        assert!(StoreError::Stopped.is_environmental());
    }
}
