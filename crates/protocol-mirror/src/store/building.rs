//! Databases written under a name of their own and given their real name once whole:
//! a backup's copy, and the database an import into a new file builds. Someone
//! looking at the real name sees nothing, then the whole database; never half of it.

use std::path::{Path, PathBuf};

use super::{Result, StoreError};

/// Where a new database at `dest` is built: a hidden file beside it named after it
/// and `what` (`importing`, or a backup's `<pid>.partial`).
pub(crate) fn building_path(dest: &Path, what: &str) -> PathBuf {
    let name = dest
        .file_name()
        .map_or_else(|| "database".into(), |n| n.to_string_lossy().into_owned());
    dest.with_file_name(format!(".{name}.{what}"))
}

/// The names SQLite gives the files it keeps beside a database.
const COMPANIONS: [&str; 3] = ["-journal", "-wal", "-shm"];

/// The names of the lock files the mirror keeps beside a database
/// ([`crate::lock`]), and of its damage mark (`store::damage`).
const LOCK_FILES: [&str; 4] = [".lock", ".import.lock", ".backfill.lock", ".damaged"];

/// The database whose file `path` is, named after it with one of `suffixes`, if there
/// is one: a file of that name that is empty (a database not made yet) or SQLite's
/// (another file beside a name ending so, `notes` beside `notes.lock`, is none: a
/// review).
fn database_beside(path: &Path, suffixes: &[&str]) -> Option<PathBuf> {
    let name = path.file_name()?;
    suffixes.iter().find_map(|suffix| {
        let stem = without_suffix(name, suffix).filter(|stem| !stem.is_empty())?;
        let database = path.with_file_name(stem);
        is_database_or_new(&database).then_some(database)
    })
}

/// `name` without `suffix` at its end, compared as bytes: a name that is not UTF-8
/// has companions too (it was passed over: a review).
#[cfg(unix)]
fn without_suffix<'a>(name: &'a std::ffi::OsStr, suffix: &str) -> Option<&'a std::ffi::OsStr> {
    use std::os::unix::ffi::OsStrExt;
    name.as_bytes()
        .strip_suffix(suffix.as_bytes())
        .map(std::ffi::OsStr::from_bytes)
}

#[cfg(not(unix))]
fn without_suffix<'a>(name: &'a std::ffi::OsStr, suffix: &str) -> Option<&'a std::ffi::OsStr> {
    name.to_str()?
        .strip_suffix(suffix)
        .map(std::ffi::OsStr::new)
}

/// Whether `path` is a regular file that is empty or begins with SQLite's header (one
/// that cannot be read is taken for one: refusing a name wrongly is the lesser harm).
/// It reads the file through a descriptor of its own, whose close drops the POSIX
/// locks this process holds on it: the commands ask before they open a database (the
/// library's `Store::backup` asks with its source open, then refuses the copy; a
/// reading connection, whose close removes nothing).
fn is_database_or_new(path: &Path) -> bool {
    use std::io::Read;
    if !path.is_file() {
        return false;
    }
    let mut header = Vec::with_capacity(16);
    match std::fs::File::open(path).and_then(|file| file.take(16).read_to_end(&mut header)) {
        Ok(_) => header.is_empty() || header == b"SQLite format 3\0",
        Err(_) => true,
    }
}

/// The database `path` is a companion of, SQLite's or the mirror's (`m.db-wal`,
/// `m.db.lock` of `m.db`), if that database exists, by its name or, for a symbolic
/// link, by the name it leads to (where the lock file of `path` would be made): given
/// as a database, a lock file was made a replica, and then every daemon of `m.db` was
/// refused (a probe; through a link: a review).
pub(crate) fn companion_of(path: &Path) -> Option<PathBuf> {
    let suffixes = [COMPANIONS.as_slice(), LOCK_FILES.as_slice()].concat();
    database_beside(path, &suffixes).or_else(|| {
        let target = through_links(path);
        (target != path)
            .then(|| database_beside(&target, &suffixes))
            .flatten()
    })
}

/// Why a new database (a backup's copy) cannot be made at `path`, when it cannot:
/// - `path` is another database's companion (as `refuse_companion` reads it: `<db>-journal`, `-wal`,
///   `-shm`, or a lock file, where a database `<db>` exists): the next reader of
///   `<db>` read the copy as a hot journal and failed, and its next writer removed it
///   (a review); a copy at its lock file's name kept its daemons from starting
///   (another);
/// - a companion of `path` lies there already (a crashed database's `-wal`): SQLite
///   would read it into the copy, which then held the other database (a re-probe);
/// - `path`'s name leaves no room for `-wal` within 255 bytes: the copy, written
///   under another name, could never be opened under its own (a re-probe).
pub fn unusable_database_name(path: &Path) -> Option<String> {
    let name = path.file_name()?;
    if let Some(database) = companion_of(path) {
        return Some(format!(
            "the database {} keeps a file of that name beside it (SQLite's, or its lock \
             file), which the copy would be taken for",
            database.display()
        ));
    }
    if let Some(left) = COMPANIONS
        .into_iter()
        .map(|suffix| crate::beside(path, suffix))
        .find(|companion| companion.symlink_metadata().is_ok())
    {
        return Some(format!(
            "{} lies beside that name, left by another database, and SQLite would read it \
             into the copy (remove it, or name the copy otherwise)",
            left.display()
        ));
    }
    let longest = MAX_NAME_BYTES - "-wal".len();
    (name.len() > longest).then(|| {
        format!(
            "its name is {} bytes, and SQLite needs room for `-wal` beside it (at most {longest})",
            name.len()
        )
    })
}

/// A command that makes a new database under a name given to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NewDatabase {
    /// `backup`'s copy.
    Backup,
    /// `rebuild --into`'s replica.
    Rebuild,
}

/// Refuses `dest` as the name of the new database `made` makes: a name taken (a
/// symbolic link too, even one that points nowhere: the new file could only be put in
/// place by replacing it), one SQLite cannot use ([`unusable_database_name`]), or one
/// in a folder that does not exist (unlike a database, which `open` creates with its
/// folder, a mistyped path is an error, not a new folder tree: `rebuild --into`'s
/// lock file made one; a probe).
pub(crate) fn refuse_as_new_database(dest: &Path, made: NewDatabase) -> Result<()> {
    let (exists, unusable, no_folder) = match made {
        NewDatabase::Backup => (
            "it exists (back up to a new file)",
            "refusing to back up to",
            "cannot back up into",
        ),
        NewDatabase::Rebuild => (
            "it exists (rebuild into a new file)",
            "refusing to rebuild into",
            "cannot rebuild into",
        ),
    };
    let refused = |context, path: &Path, kind, reason: String| {
        Err(StoreError::Io {
            context,
            path: path.to_owned(),
            source: std::io::Error::new(kind, reason),
        })
    };
    if dest.symlink_metadata().is_ok() {
        let kind = std::io::ErrorKind::AlreadyExists;
        return refused("refusing to overwrite", dest, kind, exists.to_owned());
    }
    if let Some(reason) = unusable_database_name(dest) {
        return refused(unusable, dest, std::io::ErrorKind::InvalidInput, reason);
    }
    match dest.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(dir) if !dir.is_dir() => refused(
            no_folder,
            dir,
            std::io::ErrorKind::NotFound,
            "no such folder".to_owned(),
        ),
        _ => Ok(()),
    }
}

/// The longest file name most file systems take, in bytes.
pub const MAX_NAME_BYTES: usize = 255;

/// Most bytes of a backup's name kept in its partial copy's name
/// (`.<name>.<pid>.partial`, and its `-journal`: within the 255 bytes most file
/// systems allow; a target of a valid name over 238 bytes failed with "File name too
/// long", a review).
const PARTIAL_NAME_BYTES: usize = 200;

/// The name of `dest` that its backup's partial copy is named after: its own, cut to
/// [`PARTIAL_NAME_BYTES`] at a character's end.
fn partial_stem(dest: &Path) -> Option<String> {
    let mut name = dest.file_name()?.to_string_lossy().into_owned();
    if name.len() > PARTIAL_NAME_BYTES {
        let end = (0..=PARTIAL_NAME_BYTES)
            .rev()
            .find(|&end| name.is_char_boundary(end))
            .unwrap_or(0);
        name.truncate(end);
    }
    Some(name)
}

/// Where a backup to `dest` by this process writes its copy until it is whole: a
/// hidden `.<name>.<pid>.partial` beside it.
pub(crate) fn partial_copy_path(dest: &Path) -> PathBuf {
    let name = partial_stem(dest).unwrap_or_else(|| "database".into());
    dest.with_file_name(format!(".{name}.{}.partial", std::process::id()))
}

/// The file `db` names: where a symbolic link leads (also to a file not there yet,
/// where SQLite would create the database), else `db` itself.
pub fn through_links(db: &Path) -> PathBuf {
    if db
        .symlink_metadata()
        .is_ok_and(|meta| meta.file_type().is_symlink())
    {
        crate::lock::real_path(db)
    } else {
        db.to_owned()
    }
}

/// Where an import into a new database at `db` builds it: beside the file `db` names,
/// through symbolic links (built beside a link to a database not there yet, it was
/// never built: the link counted as a database, and the import wrote in place).
pub fn importing_path(db: &Path) -> PathBuf {
    building_path(&through_links(db), "importing")
}

/// Removes the database file `path` and the journal, WAL and shared-memory files
/// beside it, if they exist (nothing to report when one cannot be removed: they
/// only take space).
pub(crate) fn remove_database_files(path: &Path) {
    for suffix in ["", "-journal", "-wal", "-shm"] {
        let _ = std::fs::remove_file(crate::beside(path, suffix));
    }
}

/// Removes the partial copies that backups to `dest` killed before they ended left
/// beside it (`.<name>.<pid>.partial` and its journal, whose process is gone), and
/// returns them: each was as large as the copy got (727 MB in a black-box probe), and
/// nothing else would ever remove it. Only where a process's liveness can be read
/// (`/proc`); elsewhere none.
pub fn remove_stale_backup_copies(dest: &Path) -> Vec<PathBuf> {
    let proc = Path::new("/proc/self");
    if !proc.exists() {
        return Vec::new();
    }
    let Some(name) = partial_stem(dest) else {
        return Vec::new();
    };
    let Ok(entries) = std::fs::read_dir(folder_of(dest)) else {
        return Vec::new();
    };
    let prefix = format!(".{name}.");
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let file = entry.file_name().to_string_lossy().into_owned();
        // The copy, or a file of its left alone: a backup killed while it removed a
        // killed one's files left its journal for good (a probe).
        let Some(copy) = ["-journal", "-wal", "-shm", ""]
            .into_iter()
            .find_map(|suffix| file.strip_suffix(suffix))
        else {
            continue;
        };
        let ours = copy
            .strip_prefix(&prefix)
            .and_then(|rest| rest.strip_suffix(".partial"))
            .is_some_and(|pid| !pid.contains('.'));
        let path = entry.path().with_file_name(copy);
        if ours && is_stale_backup_copy(copy) && !removed.contains(&path) {
            remove_database_files(&path);
            // Told only when it is gone: a folder of that name stays (it was said to
            // be removed: a probe).
            if path.symlink_metadata().is_err() {
                removed.push(path);
            }
        }
    }
    removed.sort();
    removed
}

/// Gives the complete database `building` the name `dest`, unless something took that
/// name meanwhile (a hard link fails then; where hard links are not supported, a
/// rename that replaces nothing).
pub(crate) fn put_in_place(building: &Path, dest: &Path) -> std::io::Result<()> {
    match std::fs::hard_link(building, dest) {
        // Gone already (a writer that found the database under both names took this
        // import for a killed one): it is in place all the same.
        // The old name that stays is said, not a failure: the database is in place,
        // and callers took an error for one that was not (a rebuild said "nothing was
        // made there" of it; a review).
        Ok(()) => {
            match std::fs::remove_file(building) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => tracing::warn!(
                    building = %building.display(),
                    error = %e,
                    "the new database is in place, but the name it was built under could not be removed"
                ),
                _ => {}
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(e),
        Err(_) => rename_replacing_nothing(building, dest),
    }
}

/// Renames `from` to `to`, failing with `AlreadyExists` when `to` is taken: at once
/// where the system can (Linux's `renameat2` with `RENAME_NOREPLACE`); elsewhere, or
/// on a file system that cannot, by looking first. (A plain rename replaced a file
/// made under the name after it was checked; a review.)
fn rename_replacing_nothing(from: &Path, to: &Path) -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use rustix::fs::{CWD, RenameFlags, renameat_with};
        match renameat_with(CWD, from, CWD, to, RenameFlags::NOREPLACE) {
            Ok(()) => return Ok(()),
            Err(rustix::io::Errno::INVAL | rustix::io::Errno::NOSYS) => {}
            Err(errno) => return Err(errno.into()),
        }
    }
    if to.symlink_metadata().is_ok() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            "the name is taken",
        ));
    }
    std::fs::rename(from, to)
}

/// Syncs the committed database `building` (written without syncing) to the disk,
/// gives it the name `dest`, and syncs the folder so that the name survives a power
/// loss too (a folder that cannot be synced is logged as a warning: the database is in
/// place by then).
pub(crate) fn publish(building: &Path, dest: &Path) -> Result<()> {
    let io = |context: &'static str, path: &Path| {
        let path = path.to_owned();
        move |source| StoreError::Io {
            context,
            path,
            source,
        }
    };
    std::fs::File::open(building)
        .and_then(|file| file.sync_all())
        .map_err(io("syncing", building))?;
    put_in_place(building, dest).map_err(|source| {
        if source.kind() == std::io::ErrorKind::AlreadyExists {
            StoreError::NameTaken {
                dest: dest.to_owned(),
                built: building.to_owned(),
            }
        } else {
            io("cannot put the new database in place at", dest)(source)
        }
    })?;
    // The database is at its name by now: a folder that cannot be synced (a file
    // system without fsync on folders) is said, not a failure, which callers took
    // for a database never put in place, and removed its log (a review).
    if let Err(error) = sync_folder_of(dest) {
        tracing::warn!(
            folder = %folder_of(dest).display(),
            %error,
            "the new database is in place, but its folder could not be synced: its name \
             may not survive a power loss"
        );
    }
    Ok(())
}

/// The folder holding `path` (`.` for a bare name).
pub(crate) fn folder_of(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// Syncs the folder holding `path`, so that a name just given there survives a power
/// loss. A folder's metadata is synced through a handle on it (Unix; elsewhere
/// opening a folder fails, and the name is as durable as the system makes it).
pub(crate) fn sync_folder_of(path: &Path) -> std::io::Result<()> {
    match std::fs::File::open(folder_of(path)) {
        Ok(folder) => folder.sync_all(),
        Err(_) => Ok(()),
    }
}

/// Whether `file`, a name in a folder, is a backup's partial copy
/// (`.<name>.<pid>.partial`) whose process is gone: a backup killed before it ended.
/// Never where a process's liveness cannot be read (`/proc`).
pub(crate) fn is_stale_backup_copy(file: &str) -> bool {
    let Some(pid) = file
        .strip_prefix('.')
        .and_then(|rest| rest.strip_suffix(".partial"))
        .and_then(|rest| rest.rsplit_once('.'))
        .map(|(_, pid)| pid)
    else {
        return false;
    };
    Path::new("/proc/self").exists()
        && !pid.is_empty()
        && pid.bytes().all(|b| b.is_ascii_digit())
        && pid != std::process::id().to_string()
        && !Path::new("/proc").join(pid).exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_is_built_hidden_beside_its_name() {
        assert_eq!(
            building_path(Path::new("/data/m.db"), "importing"),
            Path::new("/data/.m.db.importing")
        );
        assert_eq!(
            building_path(Path::new("m.db"), "1.partial"),
            Path::new(".m.db.1.partial")
        );
    }

    #[test]
    fn publishing_never_replaces_a_file_that_took_the_name() {
        let dir = tempfile::tempdir().unwrap();
        let building = dir.path().join(".m.db.importing");
        let dest = dir.path().join("m.db");
        std::fs::write(&building, b"new").unwrap();
        std::fs::write(&dest, b"someone else's").unwrap();
        let err = publish(&building, &dest).unwrap_err();
        assert!(
            matches!(&err, StoreError::NameTaken { built, .. } if *built == building),
            "{err}"
        );
        assert_eq!(std::fs::read(&dest).unwrap(), b"someone else's");
        assert_eq!(std::fs::read(&building).unwrap(), b"new");
        std::fs::remove_file(&dest).unwrap();
        publish(&building, &dest).unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"new");
        assert!(!building.exists());
    }

    /// Where hard links fail, the rename that puts a database in place replaces
    /// nothing: a name taken meanwhile is an error, and the file there stays.
    #[test]
    fn a_rename_into_place_replaces_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (from, to) = (dir.path().join(".m.db.importing"), dir.path().join("m.db"));
        std::fs::write(&from, b"new").unwrap();
        std::fs::write(&to, b"taken").unwrap();
        let error = rename_replacing_nothing(&from, &to).unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&to).unwrap(), b"taken");
        std::fs::remove_file(&to).unwrap();
        rename_replacing_nothing(&from, &to).unwrap();
        assert_eq!(std::fs::read(&to).unwrap(), b"new");
        assert!(!from.exists());
    }
}
