//! The serve lock: an exclusive advisory lock on `<database>.lock`, held by a serving
//! daemon, by `rebuild`, by an import into a new database while it builds it, and for
//! a moment by any writer creating one, so that a rebuild never rewrites a replica under a
//! running daemon, nor two daemons share one database. Beside it, an import's mark
//! (`<database>.import.lock`) and the backfill lock (`<database>.backfill.lock`, one
//! backfill or reconcile pass at a time). Only a lock file is ever emptied or written:
//! anything else found at those names is refused and left whole.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Why the lock could not be taken.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LockError {
    /// Another process holds it.
    #[error("{}", held(database, pid, *role))]
    Held {
        /// The database the lock guards.
        database: PathBuf,
        /// The holder's pid as it wrote it, or `unknown`.
        pid: String,
        /// What the holder does, as it wrote it (`None`: a build before that record,
        /// or a holder still writing it).
        role: Option<Role>,
    },
    /// The database is on a read-only filesystem, where its lock file cannot be made.
    #[error("{}", read_only_filesystem(database))]
    ReadOnlyFilesystem {
        /// The database the lock guards.
        database: PathBuf,
    },
    /// The lock file could not be opened or locked.
    #[error("cannot lock {}{}", path.display(), lock_hint(source))]
    Io {
        /// The lock file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// Why a process holds a database's [`ServeLock`]: written into the lock file, so that
/// a process refused by it can say who holds it and whether to wait or to stop them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Role {
    /// `serve`: the daemon, until it is stopped.
    Daemon,
    /// `rebuild`, which ends by itself.
    Rebuild,
    /// An import creating the database (`import_into_new`), which ends by itself.
    Import,
    /// A writer creating the database file and its tables, for a moment.
    Create,
}

impl Role {
    /// The word the lock file holds: `serve`, `rebuild`, `import` or `create`.
    pub fn word(self) -> &'static str {
        match self {
            Role::Daemon => "serve",
            Role::Rebuild => "rebuild",
            Role::Import => "import",
            Role::Create => "create",
        }
    }

    fn from_word(word: &str) -> Option<Role> {
        [Role::Daemon, Role::Rebuild, Role::Import, Role::Create]
            .into_iter()
            .find(|role| role.word() == word)
    }
}

/// A held lock, said with who holds it and what to do: stop a daemon; wait for a
/// process that ends by itself (a rebuild was "stop it first", as if it were one).
fn held(database: &Path, pid: &str, role: Option<Role>) -> String {
    let database = database.display();
    match role {
        Some(Role::Daemon) => format!(
            "{database} is in use by a protocol-mirror daemon (`serve`, pid {pid}); stop it first"
        ),
        Some(Role::Rebuild) => format!(
            "{database} is in use by `protocol-mirror rebuild` (pid {pid}), which ends by \
             itself; try again once it is done"
        ),
        Some(Role::Import) => format!(
            "{database} is in use by `protocol-mirror import` (pid {pid}), which is creating \
             it; try again once it is done"
        ),
        Some(Role::Create) => format!(
            "{database} is in use by another protocol-mirror process (pid {pid}), which is \
             creating it; try again in a moment"
        ),
        None => format!(
            "{database} is in use by another protocol-mirror process (pid {pid}); stop it first"
        ),
    }
}

/// The fix for a lock file this user may not make or open (a folder it cannot write:
/// "Permission denied" alone named none).
fn lock_hint(source: &std::io::Error) -> &'static str {
    if source.kind() == std::io::ErrorKind::PermissionDenied {
        " (this user must be able to write the database's folder, where the lock file, \
         the WAL and its shared memory go, and the lock file if it is there)"
    } else {
        ""
    }
}

/// What a writer of `database` on a read-only filesystem is told, whether its lock
/// file or the database itself is where it stops.
pub(crate) fn read_only_filesystem(database: &Path) -> String {
    format!(
        "cannot write {}: it is on a read-only filesystem; remount it read-write, or use a \
         database in a writable folder (copy it there, with any -wal file beside it)",
        database.display()
    )
}

/// An exclusive lock on a database, released when dropped (or when the process
/// dies: the kernel drops advisory locks with their file descriptors).
#[derive(Debug)]
pub struct ServeLock {
    file: File,
    path: PathBuf,
    role: Role,
    /// Whether taking it made the lock file (there was none at its name).
    made: bool,
}

impl Drop for ServeLock {
    /// Empties the lock file while it still holds the lock: its line named a holder
    /// long gone (a `rebuild` that had ended, with its pid; a new user's probe).
    fn drop(&mut self) {
        self.clear_record();
    }
}

impl ServeLock {
    /// Empties the lock file, still holding the lock, as its drop does: for a holder
    /// about to end without dropping it (an import a stop ends from its progress
    /// call left its line, naming a holder gone; a probe).
    ///
    /// Only while it holds a lock's record: a file copied over it in place (`cp` keeps
    /// its inode) was emptied at the daemon's stop (a probe).
    pub(crate) fn clear_record(&self) {
        if record_text(&self.file).is_some() {
            let _ = self.file.set_len(0);
        }
    }

    /// The lock file of `database`: beside the file itself, wherever the path given
    /// leads (through symbolic links, `..` and relative paths), so that every name of
    /// the database finds the same lock. (Hard links are names of their own, which is why
    /// writers refuse a database file with several: `Store::open`.)
    pub fn path_for(database: &Path) -> PathBuf {
        crate::beside(&real_path(database), ".lock")
    }

    /// Takes the lock of `database` without waiting, for `role` (which the lock file
    /// records for whoever it refuses).
    pub fn acquire(database: &Path, role: Role) -> Result<ServeLock, LockError> {
        let path = Self::path_for(database);
        // On a read-only filesystem, said as writers of the database say it (the lock
        // file's raw error named no fix, and `rebuild` blamed a daemon for it).
        let io = |source: std::io::Error| match source.kind() {
            std::io::ErrorKind::ReadOnlyFilesystem => LockError::ReadOnlyFilesystem {
                database: database.to_owned(),
            },
            _ => LockError::Io {
                path: path.clone(),
                source,
            },
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            crate::create_folder(dir).map_err(io)?;
        }
        let made = path.symlink_metadata().is_err();
        let file = open_lock_file(&path).map_err(io)?;
        lock_now(&file, database, io)?;
        write_record(&file, role).map_err(io)?;
        Ok(ServeLock {
            file,
            path,
            role,
            made,
        })
    }

    /// Lets the lock go for a holder that refused its database, removing the lock
    /// file when taking the lock made it, so that refusing a file leaves nothing
    /// beside it. (A daemon refusing another program's WAL-mode database, whose
    /// tables only its write-ahead log holds yet, left an empty `<db>.lock` there; a
    /// probe.) A lock file that was there before is left, emptied, as a drop leaves it.
    pub fn give_up(self) {
        if self.made && same_file(&self.file, &self.path) {
            let _ = std::fs::remove_file(&self.path);
        }
    }

    /// Takes the lock again if its file was removed or replaced while it was held
    /// (the holder's lock is on a file no one else opens then: a second daemon, or a
    /// `rebuild`, started beside a daemon whose `<db>.lock` was deleted; a probe).
    /// `Ok(false)` when the file at its name is still the one locked; `Ok(true)` when a
    /// new one was made there and locked; [`LockError::Held`] when another process
    /// took the new one first.
    ///
    /// # Errors
    ///
    /// When the lock file cannot be made again, or another process holds it.
    pub fn keep(&mut self, database: &Path) -> Result<bool, LockError> {
        if same_file(&self.file, &self.path) {
            // Written over in place (`cp`, `>`): still this lock, left as it is, but
            // said, as another file put there is (it went unnoticed: a probe).
            let Some(text) = record_text(&self.file) else {
                return Err(LockError::Io {
                    path: self.path.clone(),
                    source: std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        "it was written over with another file's content, which this daemon \
                         leaves whole; copy it elsewhere and remove it, and the lock is \
                         made again",
                    ),
                });
            };
            // Emptied, or another holder's record copied over it: its own record is
            // written again, or a refused process named a pid that holds nothing (a
            // probe: "stop pid 12345").
            if text != own_record(self.role) {
                write_record(&self.file, self.role).map_err(|source| LockError::Io {
                    path: self.path.clone(),
                    source,
                })?;
            }
            return Ok(false);
        }
        let io = |source: std::io::Error| LockError::Io {
            path: self.path.clone(),
            source,
        };
        let file = open_lock_file(&self.path).map_err(io)?;
        lock_now(&file, database, io)?;
        write_record(&file, self.role).map_err(io)?;
        // The old file, no longer at the lock's name, is closed, and its lock with it.
        self.file = file;
        Ok(true)
    }

    /// Whether another process holds the lock of `database` now (a daemon serves it).
    /// Never waits, and never keeps the lock (it takes it for a moment when it is free:
    /// [`ServeLock::acquire`] tries again for 50 ms before giving up).
    pub fn is_held(database: &Path) -> bool {
        locked_elsewhere(&Self::path_for(database))
    }

    /// The pid the holder of `database`'s lock wrote, if any (it may be stale: ask
    /// [`ServeLock::is_held`] whether the lock is held).
    pub fn holder(database: &Path) -> Option<String> {
        Record::read(database).map(|record| record.pid)
    }

    /// The schema version the holder of `database`'s lock brings a database to, as it
    /// wrote it: `Some(None)` for a holder that wrote its pid alone (a build before
    /// this record, all of an older schema), `None` when there is no pid to read (no
    /// holder, or one still writing it).
    pub fn holder_schema(database: &Path) -> Option<Option<i64>> {
        Record::read(database)
            .filter(Record::has_pid)
            .map(|record| record.schema)
    }

    /// What the holder of `database`'s lock does, as it wrote it: `None` for a build
    /// before that record, or when there is no holder's record to read.
    pub fn holder_role(database: &Path) -> Option<Role> {
        Record::read(database)
            .filter(Record::has_pid)
            .and_then(|record| record.role)
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// What a holder wrote in the lock file: `<pid> schema <version> <role>`; builds before
/// the role wrote the first three words, older ones the pid alone.
struct Record {
    /// The first word, as written.
    pid: String,
    /// The version after `schema`, if it reads as one (`None` when there is none).
    schema: Option<i64>,
    role: Option<Role>,
}

impl Record {
    /// The record of `database`'s lock file: `None` when there is no file or no word
    /// in it (a holder still writing it).
    fn read(database: &Path) -> Option<Record> {
        let text = small_text(&open_to_read(&ServeLock::path_for(database))?)?;
        let words: Vec<&str> = text.split_whitespace().collect();
        let (schema, role) = match words.as_slice() {
            [_, "schema", version, rest @ ..] => (
                version.parse().ok(),
                rest.first().and_then(|word| Role::from_word(word)),
            ),
            _ => (None, None),
        };
        Some(Record {
            pid: (*words.first()?).to_owned(),
            schema,
            role,
        })
    }

    /// Whether the first word is a pid: what follows it is read only then.
    fn has_pid(&self) -> bool {
        self.pid.parse::<u32>().is_ok()
    }
}

/// `path` with symbolic links and relative parts resolved; for a file that does not
/// exist yet, its folder's real path and its name; as given when even that fails.
pub(crate) fn real_path(path: &Path) -> PathBuf {
    real_path_within(path, 40)
}

/// [`real_path`], following at most `links` symbolic links to files that do not
/// exist yet (a database created through a link is created where the link points).
fn real_path_within(path: &Path, links: u32) -> PathBuf {
    if let Ok(real) = std::fs::canonicalize(path) {
        return real;
    }
    if links > 0
        && let Ok(target) = std::fs::read_link(path)
    {
        let target = match path.parent() {
            Some(dir) if target.is_relative() => dir.join(target),
            _ => target,
        };
        return real_path_within(&target, links - 1);
    }
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return path.to_owned();
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    std::fs::canonicalize(dir).map_or_else(|_| path.to_owned(), |dir| dir.join(name))
}

/// An import's mark on a database: a shared advisory lock on `<database>.import.lock`,
/// held while one of its transactions runs (taken once it has begun, so that an import
/// waiting for the database holds none). A daemon starting, another import, and a daemon whose
/// writer waited its busy timeout for the write lock ask [`ImportMark::is_held`]: an
/// import's transaction (one event can cascade over hundreds of thousands of rows, for
/// seconds) is waited out, as "a running daemon is delayed for a moment, never failed"
/// says; another program's lock still gets its 503. (Not a lock on the database file
/// itself: closing any descriptor of it drops SQLite's own locks in that process.)
#[derive(Debug)]
pub struct ImportMark {
    _file: File,
}

impl ImportMark {
    /// The mark's file for `database`.
    pub fn path_for(database: &Path) -> PathBuf {
        crate::beside(&real_path(database), ".import.lock")
    }

    /// Marks an import on `database` until dropped; an error when the mark cannot be
    /// made (the import goes on unmarked, and says so: a daemon then fails what waits
    /// too long, as before).
    pub fn take(database: &Path) -> std::io::Result<ImportMark> {
        let file = open_lock_file(&Self::path_for(database))?;
        file.lock_shared()?;
        Ok(ImportMark { _file: file })
    }

    /// Whether an import holds its mark on `database` now.
    pub fn is_held(database: &Path) -> bool {
        locked_elsewhere(&Self::path_for(database))
    }
}

/// A backfill's lock: an exclusive advisory lock on `<database>.backfill.lock`, held
/// for a `backfill` run or a pass of the daemon's `--reconcile-every`. The two share
/// where each list stands and the ids a pass has seen: run at once, each moved the
/// other's cursors, and began passes under it (a review of backfill).
#[derive(Debug)]
pub struct BackfillLock {
    _file: File,
}

impl BackfillLock {
    /// The lock's file for `database`.
    pub fn path_for(database: &Path) -> PathBuf {
        crate::beside(&real_path(database), ".backfill.lock")
    }

    /// Takes the lock without waiting: `Ok(None)` while another backfill holds it.
    pub fn try_take(database: &Path) -> Result<Option<BackfillLock>, LockError> {
        let path = Self::path_for(database);
        let io = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        let file = open_lock_file(&path).map_err(io)?;
        match file.try_lock() {
            Ok(()) => Ok(Some(BackfillLock { _file: file })),
            Err(TryLockError::WouldBlock) => Ok(None),
            Err(TryLockError::Error(e)) => Err(io(e)),
        }
    }
}

/// Opens (or creates, readable by its owner alone) the lock file at `path`, as it is:
/// its holder's line is only rewritten once the lock is taken. A symbolic link or
/// anything but a plain file there is refused: the holder's line empties the file, and
/// a link in a folder other users may write led a daemon run as root to empty any file
/// (a security review).
fn open_lock_file(path: &Path) -> std::io::Result<File> {
    let mut options = OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
        options.custom_flags(no_follow_no_wait());
    }
    let not_a_file = |what: &str| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("it is {what}, not a lock file: remove it"),
        )
    };
    let file = options
        .open(path)
        .map_err(|e| match path.symlink_metadata() {
            Ok(metadata) if metadata.is_symlink() => not_a_file("a symbolic link"),
            // Said as such ("Is a directory (os error 21)" named no fix; a socket's
            // "No such device or address" neither).
            Ok(metadata) if metadata.is_dir() => not_a_file("a folder"),
            Ok(metadata) if !metadata.is_file() => not_a_file("no plain file"),
            _ => e,
        })?;
    let metadata = file.metadata()?;
    if !metadata.is_file() {
        return Err(not_a_file("no plain file"));
    }
    // Only a lock file is emptied and written: a file put at its name (the database
    // itself moved or hard-linked there, its secret) was emptied by the lock's holder,
    // the replica or the secret lost (a probe).
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if metadata.nlink() > 1 {
            // Removing this name leaves the file under its others.
            return Err(not_a_file(&format!(
                "a name of a file with {} hard links (another file's too, such as the \
                 database's)",
                metadata.nlink()
            )));
        }
    }
    // Another file, whole: moved away, not removed (it may be the database itself).
    let another_file = |what: String| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "it is {what}, not a lock file: it may be another file moved there (the \
                 database, a secret); move it away"
            ),
        )
    };
    if metadata.len() > MAX_RECORD_BYTES {
        return Err(another_file(format!("a file of {} bytes", metadata.len())));
    }
    if record_text(&file).is_none() {
        return Err(another_file(
            "a file that holds no lock's record (`<pid> schema <version> <role>`)".into(),
        ));
    }
    Ok(file)
}

/// `O_NOFOLLOW | O_NONBLOCK`: a lock file is never followed, and never waited for (a
/// FIFO at its name blocked `serve` and `import` in `open` for good, deaf to Ctrl-C: a
/// probe; on a plain file `O_NONBLOCK` changes nothing).
#[cfg(unix)]
fn no_follow_no_wait() -> i32 {
    (rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK).bits() as i32
}

/// The plain file at `path`, opened to read (see [`no_follow_no_wait`]); `None` for
/// anything else, or nothing.
fn open_to_read(path: &Path) -> Option<File> {
    let mut options = OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(no_follow_no_wait());
    }
    let file = options.open(path).ok()?;
    file.metadata().ok()?.is_file().then_some(file)
}

/// What the open lock `file` holds, if it is what a lock file holds (see
/// [`is_a_record`]).
fn record_text(file: &File) -> Option<String> {
    small_text(file).filter(|text| is_a_record(text))
}

/// The text of `file`, read without moving its offset, if it is no longer than a
/// lock's record may be.
fn small_text(file: &File) -> Option<String> {
    let metadata = file.metadata().ok()?;
    if metadata.len() > MAX_RECORD_BYTES {
        return None;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileExt;
        let mut bytes = vec![0; usize::try_from(metadata.len()).unwrap_or(0)];
        file.read_exact_at(&mut bytes, 0).ok()?;
        String::from_utf8(bytes).ok()
    }
    #[cfg(not(unix))]
    {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut &*file, &mut text).ok()?;
        Some(text)
    }
}

/// The most a lock file holds: one holder's record, a line of a few dozen bytes.
const MAX_RECORD_BYTES: u64 = 256;

/// Whether `text` is what a lock file holds: nothing (no holder yet, or one that ended),
/// or a holder's record, `<pid> schema <version> <role>`, of this build or an older one
/// (`<pid> schema <version>`, or the pid alone).
fn is_a_record(text: &str) -> bool {
    let words: Vec<&str> = text.split_whitespace().collect();
    match words.as_slice() {
        [] => true,
        [pid] => pid.parse::<u32>().is_ok(),
        [pid, "schema", version, rest @ ..] => {
            pid.parse::<u32>().is_ok() && version.parse::<i64>().is_ok() && rest.len() <= 1
        }
        _ => false,
    }
}

/// Takes the lock on `file`, `database`'s lock file, without waiting but for a moment:
/// `is_held` (an import asking whether a daemon serves) takes a free lock for a few
/// microseconds, so it is tried again for 50 ms before it is called held, by the
/// holder its record names.
fn lock_now(
    file: &File,
    database: &Path,
    io: impl Fn(std::io::Error) -> LockError,
) -> Result<(), LockError> {
    let mut attempt = 0;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(()),
            Err(TryLockError::WouldBlock) if attempt < 5 => {
                attempt += 1;
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(TryLockError::WouldBlock) => {
                let record = Record::read(database);
                return Err(LockError::Held {
                    database: database.to_owned(),
                    role: record.as_ref().filter(|r| r.has_pid()).and_then(|r| r.role),
                    pid: record.map_or_else(|| "unknown".into(), |r| r.pid),
                });
            }
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
    }
}

/// Empties a lock file just locked and writes its holder's record: the pid; the
/// schema this build brings a database to (a holder whose record lacks it is an older
/// build, which will never migrate the database to this one's); then the role (builds
/// before it read the first three words only).
fn write_record(mut file: &File, role: Role) -> std::io::Result<()> {
    // Checked again at the last moment: another file's content written over it since
    // it was opened is left whole (a probe caught the moment of a short rebuild's).
    if record_text(file).is_none() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "it was written over with another file's content: move it away",
        ));
    }
    file.set_len(0)?;
    // From the start: a record written before left the offset at its end.
    std::io::Seek::rewind(&mut file)?;
    file.write_all(own_record(role).as_bytes())
}

/// The record this process writes as a holder in `role`.
fn own_record(role: Role) -> String {
    format!(
        "{} schema {} {}\n",
        std::process::id(),
        crate::store::SCHEMA_VERSION,
        role.word()
    )
}

/// Whether `path` names the open `file` (not a symbolic link to it: lock files are
/// never followed). Where that cannot be told, it is taken to.
fn same_file(file: &File, path: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let Ok(open) = file.metadata() else {
            return true;
        };
        match path.symlink_metadata() {
            Ok(named) => (named.dev(), named.ino()) == (open.dev(), open.ino()),
            Err(e) => e.kind() != std::io::ErrorKind::NotFound,
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (file, path);
        true
    }
}

/// Whether another process holds a lock on the file at `path` now (a missing file
/// has none). Never waits, and never keeps the lock: it takes it for a moment when it
/// is free.
fn locked_elsewhere(path: &Path) -> bool {
    let Some(file) = open_to_read(path) else {
        return false;
    };
    match file.try_lock() {
        Ok(()) => {
            let _ = file.unlock();
            false
        }
        Err(TryLockError::WouldBlock) => true,
        Err(TryLockError::Error(_)) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lock_refused_for_its_permissions_names_the_fix() {
        let error = LockError::Io {
            path: PathBuf::from("/srv/mirror/m.db.lock"),
            source: std::io::ErrorKind::PermissionDenied.into(),
        };
        let text = error.to_string();
        assert!(
            text.starts_with("cannot lock /srv/mirror/m.db.lock (this user must"),
            "{text}"
        );
        let other = LockError::Io {
            path: PathBuf::from("m.db.lock"),
            source: std::io::ErrorKind::Other.into(),
        };
        assert_eq!(other.to_string(), "cannot lock m.db.lock");
    }

    /// A lock file that is a symbolic link is refused, and what it points to is left
    /// as it was: the holder's line emptied it (a review: `m3.db.lock -> victim.txt`
    /// emptied `victim.txt`).
    #[cfg(unix)]
    #[test]
    fn a_lock_file_that_is_a_link_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("m.db");
        let victim = dir.path().join("victim.txt");
        std::fs::write(&victim, "keep me").unwrap();
        std::os::unix::fs::symlink(&victim, dir.path().join("m.db.lock")).unwrap();
        let error = anyhow::Error::from(ServeLock::acquire(&db, Role::Import).unwrap_err());
        assert!(format!("{error:#}").contains("symbolic link"), "{error:#}");
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep me");
        assert!(!ServeLock::is_held(&db));
        std::fs::create_dir(dir.path().join("d.db.lock")).unwrap();
        let error = ServeLock::acquire(&dir.path().join("d.db"), Role::Import).unwrap_err();
        assert!(error.to_string().contains("cannot lock"), "{error}");
    }

    /// A lock given up goes with its file when taking it made the file, and leaves an
    /// older one where it was, emptied.
    #[test]
    fn a_lock_given_up_removes_only_the_file_it_made() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("m.db");
        let lock_file = ServeLock::path_for(&db);
        ServeLock::acquire(&db, Role::Daemon).unwrap().give_up();
        assert!(!lock_file.exists());
        std::fs::write(&lock_file, b"").unwrap();
        ServeLock::acquire(&db, Role::Daemon).unwrap().give_up();
        assert_eq!(std::fs::read(&lock_file).unwrap(), b"");
        assert!(!ServeLock::is_held(&db));
    }

    /// A lock file removed or replaced under its holder is made and taken again by
    /// `keep`, so that the database stays locked; one another process took first is
    /// said as held.
    #[test]
    fn a_lock_file_removed_under_its_holder_is_taken_again() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("m.db");
        let lock_file = ServeLock::path_for(&db);
        let mut held = ServeLock::acquire(&db, Role::Daemon).unwrap();
        assert!(!held.keep(&db).unwrap(), "still its own file");
        std::fs::remove_file(&lock_file).unwrap();
        assert!(!ServeLock::is_held(&db), "no one else would be refused now");
        assert!(held.keep(&db).unwrap());
        assert!(ServeLock::is_held(&db));
        assert_eq!(ServeLock::holder(&db), Some(std::process::id().to_string()));
        assert_eq!(ServeLock::holder_role(&db), Some(Role::Daemon));
        // Replaced by another file: the same.
        std::fs::remove_file(&lock_file).unwrap();
        std::fs::write(&lock_file, b"").unwrap();
        assert!(held.keep(&db).unwrap());
        assert!(ServeLock::is_held(&db));
        assert!(!held.keep(&db).unwrap());
        // Taken by another first (here a second lock of this process, which the
        // kernel tells apart as it would another process's).
        std::fs::remove_file(&lock_file).unwrap();
        let other = ServeLock::acquire(&db, Role::Rebuild).unwrap();
        assert!(matches!(
            held.keep(&db),
            Err(LockError::Held {
                role: Some(Role::Rebuild),
                ..
            })
        ));
        drop(other);
        assert!(held.keep(&db).unwrap(), "free again: taken");
    }

    /// Only a lock file is emptied and written: another file at its name (the database
    /// moved or hard-linked there, a secret) is refused and left whole, when the lock
    /// is taken and when it is taken again (a probe lost the replica so).
    #[cfg(unix)]
    #[test]
    fn another_file_at_the_lock_name_is_left_whole() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("m.db");
        let lock_file = ServeLock::path_for(&db);
        let database = b"SQLite format 3\0".repeat(100);
        std::fs::write(&db, &database).unwrap();
        // A hard link of the database; a file of its size; a small one of other text.
        std::fs::hard_link(&db, &lock_file).unwrap();
        let error = ServeLock::acquire(&db, Role::Daemon).unwrap_err();
        assert!(with_source(&error).contains("hard links"), "{error:?}");
        std::fs::remove_file(&lock_file).unwrap();
        assert_eq!(std::fs::read(&db).unwrap(), database);
        for other in [&database[..], b"whsec_0123456789abcdef\n", b"12 34\n"] {
            std::fs::write(&lock_file, other).unwrap();
            let error = ServeLock::acquire(&db, Role::Daemon).unwrap_err();
            assert!(with_source(&error).contains("move it away"), "{error:?}");
            assert_eq!(std::fs::read(&lock_file).unwrap(), other);
        }
        // Records of this build and older ones, or none, are lock files.
        for record in ["", "4242\n", "4242 schema 9\n", "4242 schema 14 serve\n"] {
            std::fs::write(&lock_file, record).unwrap();
            let held = ServeLock::acquire(&db, Role::Daemon).unwrap();
            let written = std::fs::read_to_string(&lock_file).unwrap();
            assert!(
                written.starts_with(&format!("{} schema ", std::process::id())),
                "{written:?}"
            );
            drop(held);
        }
        // Taken again: the database moved to the lock's name is not touched.
        let mut held = ServeLock::acquire(&db, Role::Daemon).unwrap();
        std::fs::rename(&db, &lock_file).unwrap();
        let error = held.keep(&db).unwrap_err();
        assert!(with_source(&error).contains("move it away"), "{error:?}");
        assert_eq!(std::fs::read(&lock_file).unwrap(), database);
        drop(held);
        assert_eq!(std::fs::read(&lock_file).unwrap(), database);
    }

    /// What else may stand at the lock's name is refused at once, named, and left as it
    /// is: a FIFO (opening it waited for a writer for good), a folder ("Is a
    /// directory"); a lock file written over in place (`cp` keeps its inode) is said
    /// by `keep` and not emptied at the end.
    #[cfg(unix)]
    #[test]
    fn odd_files_at_the_lock_name_are_named_and_never_waited_for() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("m.db");
        let lock_file = ServeLock::path_for(&db);
        rustix::fs::mkfifoat(
            rustix::fs::CWD,
            &lock_file,
            rustix::fs::Mode::RUSR | rustix::fs::Mode::WUSR,
        )
        .unwrap();
        assert!(!ServeLock::is_held(&db));
        assert_eq!(ServeLock::holder(&db), None);
        let error = ServeLock::acquire(&db, Role::Daemon).unwrap_err();
        assert!(with_source(&error).contains("no plain file"), "{error:?}");
        std::fs::remove_file(&lock_file).unwrap();
        std::fs::create_dir(&lock_file).unwrap();
        let error = ServeLock::acquire(&db, Role::Daemon).unwrap_err();
        assert!(with_source(&error).contains("it is a folder"), "{error:?}");
        std::fs::remove_dir(&lock_file).unwrap();

        let mut held = ServeLock::acquire(&db, Role::Daemon).unwrap();
        // Another holder's record copied over it, or the file emptied: its own record
        // is written again, so that a refused process names this one.
        let own = std::fs::read_to_string(&lock_file).unwrap();
        for other in ["12345 schema 15 serve\n", ""] {
            std::fs::write(&lock_file, other).unwrap();
            assert!(!held.keep(&db).unwrap());
            assert_eq!(std::fs::read_to_string(&lock_file).unwrap(), own);
            assert_eq!(ServeLock::holder(&db), Some(std::process::id().to_string()));
        }
        let copy = b"SQLite format 3\0".repeat(64);
        std::fs::write(&lock_file, &copy).unwrap();
        let error = held.keep(&db).unwrap_err();
        assert!(with_source(&error).contains("written over"), "{error:?}");
        assert!(ServeLock::is_held(&db), "still locked");
        drop(held);
        assert_eq!(std::fs::read(&lock_file).unwrap(), copy, "left whole");
    }

    fn with_source(error: &LockError) -> String {
        crate::with_causes(error)
    }

    /// A symbolic link to a served database is the same database: its lock is held.
    #[cfg(unix)]
    #[test]
    fn every_path_to_the_database_finds_the_same_lock() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("m.db");
        std::fs::write(&db, b"").unwrap();
        let link = dir.path().join("link.db");
        std::os::unix::fs::symlink(&db, &link).unwrap();
        let _held = ServeLock::acquire(&db, Role::Daemon).unwrap();
        assert!(ServeLock::is_held(&link));
        assert!(matches!(
            ServeLock::acquire(&link, Role::Daemon),
            Err(LockError::Held { .. })
        ));
        let dotted = dir.path().join("sub").join("..").join("m.db");
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        assert!(ServeLock::is_held(&dotted));
    }

    /// A link to a database not created yet leads to the same lock as the database
    /// it will be (the lock was made beside the link: a second daemon on the file's
    /// own name started).
    #[cfg(unix)]
    #[test]
    fn a_link_to_a_database_not_there_yet_finds_its_lock() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("real")).unwrap();
        std::fs::create_dir(dir.path().join("links")).unwrap();
        let link = dir.path().join("links").join("m.db");
        std::os::unix::fs::symlink("../real/m.db", &link).unwrap();
        let _held = ServeLock::acquire(&link, Role::Daemon).unwrap();
        assert!(dir.path().join("real").join("m.db.lock").exists());
        assert!(ServeLock::is_held(&dir.path().join("real").join("m.db")));
    }

    #[test]
    fn is_held_tells_a_held_lock_without_taking_it() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("m.db");
        assert!(!ServeLock::is_held(&db), "no lock file");
        let lock = ServeLock::acquire(&db, Role::Daemon).unwrap();
        // flock locks belong to the open file: another open of it sees the lock.
        assert!(ServeLock::is_held(&db));
        assert!(ServeLock::is_held(&db), "asking does not take it");
        drop(lock);
        assert!(!ServeLock::is_held(&db));
        let _again = ServeLock::acquire(&db, Role::Daemon).unwrap();
    }

    #[test]
    fn a_second_holder_is_refused_until_the_first_drops() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("m.db");
        let first = ServeLock::acquire(&db, Role::Daemon).unwrap();
        let err = ServeLock::acquire(&db, Role::Rebuild).unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains("in use by a protocol-mirror daemon"),
            "{message}"
        );
        assert!(message.ends_with("stop it first"), "{message}");
        assert!(
            message.contains(&std::process::id().to_string()),
            "{message}"
        );
        assert_eq!(ServeLock::holder(&db), Some(std::process::id().to_string()));
        assert_eq!(
            ServeLock::holder_schema(&db),
            Some(Some(crate::store::SCHEMA_VERSION))
        );
        assert_eq!(ServeLock::holder_role(&db), Some(Role::Daemon));
        std::fs::write(first.path(), "77 schema 12\n").unwrap();
        assert_eq!(ServeLock::holder_schema(&db), Some(Some(12)));
        assert_eq!(ServeLock::holder_role(&db), None, "a build before the role");
        let message = ServeLock::acquire(&db, Role::Daemon)
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("another protocol-mirror process (pid 77); stop it first"),
            "{message}"
        );
        std::fs::write(first.path(), "77\n").unwrap();
        assert_eq!(ServeLock::holder_schema(&db), Some(None), "an older build");
        std::fs::write(first.path(), "").unwrap();
        assert_eq!(ServeLock::holder_schema(&db), None, "still writing");
        drop(first);
        let second = ServeLock::acquire(&db, Role::Rebuild).unwrap();
        let path = second.path().to_owned();
        assert!(
            std::fs::read_to_string(&path)
                .unwrap()
                .ends_with(" rebuild\n")
        );
        // A holder that ends leaves the file empty: its line named it long after.
        drop(second);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "");
        assert_eq!(ServeLock::holder(&db), None);
    }

    /// A process that ends by itself is waited for, not stopped: a daemon refused by
    /// a rebuild was told "stop it first".
    #[test]
    fn a_refusal_says_what_the_holder_does() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("m.db");
        for (role, said) in [
            (Role::Rebuild, "`protocol-mirror rebuild`"),
            (Role::Import, "`protocol-mirror import`"),
            (Role::Create, "which is creating it; try again in a moment"),
        ] {
            let held = ServeLock::acquire(&db, role).unwrap();
            assert_eq!(ServeLock::holder_role(&db), Some(role));
            let message = ServeLock::acquire(&db, Role::Daemon)
                .unwrap_err()
                .to_string();
            assert!(message.contains(said), "{role:?}: {message}");
            assert!(!message.contains("stop it first"), "{role:?}: {message}");
            drop(held);
        }
    }
}
