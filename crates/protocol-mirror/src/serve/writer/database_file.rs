//! The database file the daemon's writer opened, watched by identity: what it does
//! when `--db` stops naming that file, or the `-wal` and `-shm` beside it are no
//! longer the ones it opened (RELIABILITY.md, "removed or replaced").

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::store::{HEADER_BYTES, Store, StoreError, file_identity};

/// The database file the writer opened, by identity (device and inode): a file removed
/// or replaced under a running daemon (`rm -rf` of its folder, a backup moved over it)
/// took commits that no later open would see, each acknowledged (found by a black-box
/// probe: ~22,000 events acknowledged into a deleted file, then lost). Checked before
/// every batch, so such events get 503 instead; once found gone, the writer takes no
/// more events until a restart, even if the file comes back (its `-wal` may be gone).
pub struct DatabaseFile {
    path: PathBuf,
    /// Where SQLite keeps it and its `-wal` and `-shm`: beside the file a link leads to.
    real: PathBuf,
    identity: (u64, u64),
    /// The `-wal` and `-shm` files beside it when the writer began, with their
    /// identities. SQLite finds them by name: once the database file is replaced (a
    /// backup moved over it), the next process to open the new file reads this log
    /// into it, and the next writer (the restart the 503s advise) checkpoints it there
    /// for good (a black-box probe). [`DatabaseFile::disown`] removes them once the
    /// name no longer holds this file: this process keeps them open, and its
    /// connections, on a moved file, never checkpoint into or remove what now stands
    /// at those names.
    companions: Vec<(PathBuf, (u64, u64))>,
    /// Set once the path was found not to name the file: latched (a file moved away
    /// and back must not take commits into a log already taken away; a review).
    gone: Arc<AtomicBool>,
    /// Set, with `gone`, once the file was still at its name but its `-wal` or
    /// `-shm` no longer were (removed, or others put there): the writer's commits
    /// would go into a log no other process reads, or that others index apart, and
    /// be lost at a crash.
    log_lost: Cell<bool>,
    /// Set once the log was copied and the companions taken away (or, when the log
    /// was lost, once it was copied: nothing is taken away then).
    disowned: Cell<bool>,
    /// Set once a copy of the log held back by a reader was logged.
    said_held_back: Cell<bool>,
    /// Set once the file was seen to hold at least a database header: SQLite never
    /// makes it shorter than its first page again.
    had_header: Cell<bool>,
    /// Set, with `gone`, once the file was still at its name but shorter than a
    /// database header (`truncate -s 0`, `: > m.db`): every batch went on committing
    /// into the log of a database that was no more, and each was acknowledged (a
    /// black-box probe: 6,000 events answered 200, then the file was unreadable).
    emptied: Cell<bool>,
    /// Set, with `gone`, once the `-wal` was found without its header after a commit
    /// (`truncate -s 0 m.db-wal`, to free space: SQLite went on writing its frames
    /// where they were, after a hole): the commits since the last copy into the file
    /// are lost from the log, and copying it would write the hole's zeros into the
    /// file as pages (a black-box probe: acknowledged events went on, `/healthz` said
    /// ok, the stop said "stopped cleanly", and the file was malformed).
    log_cut: Cell<bool>,
    /// The damage mark's name (`store::damage`), and whether a mark stood there when
    /// the writer started (one the start found whole is removed before).
    mark: (PathBuf, bool),
}

/// Whether a file of `length` that `had_header` was emptied (cut shorter than a
/// header): SQLite never makes a database file shorter than its first page again.
fn cut_short(length: u64, had_header: bool) -> bool {
    had_header && length < HEADER_BYTES
}

/// Whether `path` names the file of `identity`: `Some(false)` when it names another
/// file or none; `None` when that cannot be told (a folder this user may not read):
/// nothing is decided on that.
fn names(path: &Path, identity: (u64, u64)) -> Option<bool> {
    length_if_named(path, identity).map(|length| length.is_some())
}

/// [`names`], with the file's length when `path` names it: `Some(Some(length))`.
fn length_if_named(path: &Path, identity: (u64, u64)) -> Option<Option<u64>> {
    match file_identity(path) {
        Ok((found, length)) => Some((found == identity).then_some(length)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some(None),
        Err(_) => None,
    }
}

impl DatabaseFile {
    /// The file `path` names now, with the `-wal` and `-shm` beside it: what a writer
    /// (the daemon's, an `import`'s) opened there. `None` when there is none.
    pub fn of(path: &Path) -> Option<DatabaseFile> {
        let real = crate::store::through_links(path);
        let companions = ["-wal", "-shm"]
            .into_iter()
            .filter_map(|suffix| {
                let companion = crate::beside(&real, suffix);
                identity(&companion).map(|id| (companion, id))
            })
            .collect();
        let (identity, length) = file_identity(&real).ok()?;
        Some(DatabaseFile {
            path: path.to_owned(),
            identity,
            real,
            companions,
            gone: Arc::new(AtomicBool::new(false)),
            log_lost: Cell::new(false),
            disowned: Cell::new(false),
            said_held_back: Cell::new(false),
            // The store made and migrated it before: a header it has (emptied before
            // the first batch, it was never found so: a review).
            had_header: Cell::new(length >= HEADER_BYTES),
            emptied: Cell::new(false),
            log_cut: Cell::new(false),
            mark: (
                crate::store::damage_mark_path(path),
                crate::store::is_marked(path),
            ),
        })
    }

    /// Once the name SQLite keeps this database's `-wal` and `-shm` beside no longer
    /// holds this file (removed, moved away, another moved over it; not a link
    /// pointed elsewhere, whose target keeps its own): copies the write-ahead log
    /// into the file (through the writer's connection, which still has it: a file
    /// moved elsewhere keeps every committed event; a removed one loses nothing more),
    /// then, only if all of it was copied, takes the `-wal` and `-shm` away from
    /// beside the name (those that are still those files, never a new database's), so
    /// that the file now there, or the next one put there, is read as it is. A copy
    /// that could not finish (a reader's snapshot, a checkpoint under way) is tried
    /// again at the next batch and when the writer stops: until then the log stays,
    /// as the file moved elsewhere needs it.
    ///
    /// The file still at its name, but its `-wal` or `-shm` removed or replaced
    /// ([`DatabaseFile::check`] latched it): the log is copied into the file the
    /// same way, so that a crash before the restart loses no acknowledged event, and
    /// nothing beside the name is removed here (what stands there now is others';
    /// SQLite's own close at the stop still removes the `-wal` at the name, when it
    /// finds the database file where it was: a review).
    ///
    /// Returns whether nothing is left to do (for now: until the name is found not to
    /// hold the file).
    pub(super) fn disown(&self, store: &Store, stopping: bool) -> bool {
        // Only once latched, or at the stop: the writer never writes again (a path not
        // told, which is refused without being latched, may name the file again).
        // A cut log is copied nowhere: its hole would go in as pages.
        if self.disowned.get()
            || self.log_cut.get()
            || !(self.gone.load(Ordering::Relaxed) || stopping)
        {
            return true;
        }
        let file_gone = names(&self.real, self.identity) == Some(false);
        if !file_gone && !self.log_lost.get() {
            return true;
        }
        // Without waiting for readers: a snapshot in the way makes it busy at once, and
        // it is tried again (each refused batch, or health probe, waited the busy
        // timeout; a review).
        let copied = store.checkpoint_truncate_now();
        if !matches!(copied, Ok(true)) {
            // Said once: it is tried again at every batch.
            if !self.said_held_back.replace(true) {
                if file_gone {
                    tracing::warn!(
                        ?copied,
                        "the database file was removed or replaced; its write-ahead log \
                         could not all be copied into it yet, and stays beside the name \
                         until it is"
                    );
                } else {
                    tracing::warn!(
                        ?copied,
                        "the database's write-ahead log or shared-memory file was removed \
                         or replaced; the log could not all be copied into the database \
                         yet: it is tried again, and at the stop"
                    );
                }
            }
            return false;
        }
        self.disowned.set(true);
        if !file_gone {
            tracing::warn!(
                "the database's write-ahead log or shared-memory file was removed or \
                 replaced: copied the log into the database; no more events are taken \
                 until a restart"
            );
            return true;
        }
        for (companion, id) in &self.companions {
            if identity(companion) == Some(*id) && std::fs::remove_file(companion).is_ok() {
                tracing::warn!(
                    file = %companion.display(),
                    "the database file was removed or replaced: removed the write-ahead log \
                     or shared-memory file it had, which the file now at its name would \
                     otherwise take for its own"
                );
            }
        }
        true
    }

    /// When the writer stops (its `store` still open): once the name no longer holds
    /// the file, copies the write-ahead log into the file and takes the `-wal` and
    /// `-shm` away from beside the name (`disown`), a copy held back (the checkpoint
    /// thread's under way) tried again for a moment. SQLite's own close copies
    /// nothing into a file moved away.
    pub fn disown_at_stop(&self, store: &Store) {
        let began = Instant::now();
        let mut done = self.disown(store, true);
        while !done && began.elapsed() < Duration::from_secs(2) {
            std::thread::sleep(Duration::from_millis(50));
            done = self.disown(store, true);
        }
        if !done && self.log_lost.get() {
            tracing::error!(
                file = %self.real.display(),
                "the database's write-ahead log or shared-memory file was removed or \
                 replaced, and the log could not all be copied into the database before \
                 the stop (a reader held part of it): the database file alone is not \
                 whole until the last process reading it closes it, which finishes the \
                 copy; let that reader end before starting the daemon again"
            );
        } else if !done {
            tracing::error!(
                file = %self.real.display(),
                "the database file was removed or replaced, and its write-ahead log could \
                 not all be copied into it before the stop (a reader held part of it): \
                 move the -wal and -shm files beside this name away before anything opens \
                 the file now there, which would take them for its own"
            );
        }
    }

    /// Whether the file was emptied while the writer had it open (found now, or by
    /// an earlier check).
    pub fn emptied(&self) -> bool {
        let _ = self.check();
        self.emptied.get()
    }

    /// Whether the `-wal` was found cut while the writer had it open (found by an
    /// earlier check of the writer's).
    pub fn log_cut(&self) -> bool {
        self.log_cut.get()
    }

    /// After a commit (and before a reconcile's page, and at the stop): whether the
    /// `-wal` beside the file still begins with its header. Cut, the writer takes no
    /// more events (latched, as for a file emptied), the checkpointer copies nothing
    /// into the file, and the file is marked, so that a restart checks it (a copy
    /// under way as the log was cut may have written zeros into it). SQLite takes no
    /// lock on the `-wal` itself (only on the database file and the `-shm`), so
    /// reading it here drops none.
    pub(super) fn check_log(&self) -> Result<(), StoreError> {
        if !self.log_cut.get()
            && !self.gone.load(Ordering::Relaxed)
            && !wal_begins_with_its_header(&crate::beside(&self.real, "-wal"))
        {
            self.found_log_cut();
        }
        self.check()
    }

    /// Latches the writer on a `-wal` found cut (by [`DatabaseFile::check_log`], or by
    /// a copy of it that read short), and marks the file.
    pub(super) fn found_log_cut(&self) {
        if self.log_cut.replace(true) {
            return;
        }
        self.gone.store(true, Ordering::Relaxed);
        crate::store::mark_damaged_or_warn(
            &self.path,
            "the write-ahead log was cut while protocol-mirror wrote to it: the events \
             committed since its last copy into the database are gone from it",
        );
    }

    /// Whether the `-wal` or `-shm` the writer opened were removed or replaced while
    /// the file stayed at its name (found by an earlier check, or [`DatabaseFile::gone`]).
    pub fn log_lost(&self) -> bool {
        self.log_lost.get()
    }

    /// Whether the path stopped naming the file (or its `-wal` or `-shm`) while the
    /// writer had it open (found now, or by an earlier check).
    pub fn gone(&self) -> bool {
        let _ = self.check();
        self.gone.load(Ordering::Relaxed)
    }

    /// A handle other threads ask whether the file is still the database: see
    /// [`FileWatch`].
    pub(super) fn watch(&self) -> FileWatch {
        FileWatch {
            path: self.path.clone(),
            wal: crate::beside(&self.real, "-wal"),
            identity: self.identity,
            had_header: self.had_header.get(),
            gone: self.gone.clone(),
        }
    }

    /// The database's path, as `--db` gave it.
    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// The damage mark, if another process (an import beside the daemon) left one
    /// since the writer started: it found the file damaged. (An empty file at its
    /// name is none: `touch` made it, and the daemon said the file was found damaged:
    /// a probe.)
    pub(super) fn marked_since_start(&self) -> Option<&Path> {
        let (mark, at_start) = &self.mark;
        (!at_start && crate::store::mark_stands(mark)).then_some(mark.as_path())
    }

    /// [`DatabaseFile::check`] before the writer writes: refused, the log is also
    /// taken away ([`DatabaseFile::disown`]).
    pub(super) fn check_before_writing(&self, store: &Store) -> Result<(), StoreError> {
        self.check().inspect_err(|_| {
            self.disown(store, false);
        })
    }

    /// Whether the path still names the file the writer has open (and always did),
    /// with the `-wal` and `-shm` it opened beside it.
    pub(super) fn check(&self) -> Result<(), StoreError> {
        let mut told = true;
        if !self.gone.load(Ordering::Relaxed) {
            match length_if_named(&self.path, self.identity) {
                Some(Some(length)) if cut_short(length, self.had_header.get()) => {
                    self.gone.store(true, Ordering::Relaxed);
                    self.emptied.set(true);
                    // Marked as damage is: a restart (a supervisor's) started on the
                    // empty file as on a new database, without a word (a probe); now
                    // it refuses a file whose log is empty while the mark stands.
                    let finding = "the file was emptied while protocol-mirror wrote to it: the events \
                                   it held are gone from it";
                    crate::store::mark_damaged_or_warn(&self.path, finding);
                }
                Some(Some(_)) if self.lost_a_companion() => {
                    self.gone.store(true, Ordering::Relaxed);
                    self.log_lost.set(true);
                }
                Some(Some(length)) => {
                    self.had_header
                        .set(self.had_header.get() || length >= HEADER_BYTES);
                    return Ok(());
                }
                // Not told (a folder this user may not read now): refused, not latched.
                None => told = false,
                Some(None) => self.gone.store(true, Ordering::Relaxed),
            }
        }
        let (context, source) = if !told {
            // It said the file was removed or replaced, and to restart, which would
            // fail as long as the folder stays so (an operator probe).
            (
                "cannot tell whether the database file is still there (its folder cannot \
                 be read now: were its permissions changed?), so events are refused until \
                 it can be told, at",
                std::io::Error::from(std::io::ErrorKind::PermissionDenied),
            )
        } else if self.emptied.get() {
            (
                "the database file was emptied (cut shorter than a database header) while \
                 this daemon ran; stop this daemon and restore from a backup the file",
                std::io::Error::other(
                    "the events it held are gone from it, and a commit now would go into \
                     a log of a database that is no more",
                ),
            )
        } else if self.log_cut.get() {
            (
                "the database's write-ahead log was cut (emptied, or its start overwritten) \
                 while this daemon ran, so the events committed since its last copy into \
                 the database are gone from it; stop this daemon (nothing more is copied \
                 into the file), move the -wal and -shm away, and start it again on",
                std::io::Error::other(
                    "a commit now would go into a log no start reads (run `backfill` after the \
                     restart: Protocol does not deliver again what was acknowledged)",
                ),
            )
        } else if self.log_lost.get() {
            (
                "the database's write-ahead log or shared-memory file was removed or \
                 replaced; stop this daemon and start it again on",
                std::io::Error::other(
                    "a commit now would go where other processes would not see it, or \
                     would index it apart",
                ),
            )
        } else if names(&self.path, self.identity) == Some(true) {
            // Moved away and back: it said a commit would go to a file no later
            // start would open, of the file at its name again (a probe).
            (
                "the database file was moved away while this daemon ran, and is back; \
                 stop this daemon and start it again on",
                std::io::Error::other(
                    "a daemon that found its file gone takes no more events until it is \
                     started again (its log of the file may have been taken away)",
                ),
            )
        } else {
            (
                "the database file was removed or replaced; stop this daemon and start it again on",
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "a commit now would go to a file no later start would open",
                ),
            )
        };
        Err(StoreError::Io {
            context,
            path: self.path.clone(),
            source,
        })
    }

    /// Whether a `-wal` or `-shm` the writer opened is no longer at its name (removed:
    /// `rm m.db-*` under a running daemon; or replaced). SQLite keeps both for as
    /// long as the writer's connection is open, so neither goes away by itself.
    fn lost_a_companion(&self) -> bool {
        self.companions
            .iter()
            .any(|(companion, id)| names(companion, *id) == Some(false))
    }
}

/// Whether the writer's file is still the database, for the readers that answer a
/// redelivery the writer had no room for: once it is not (a backup moved over it),
/// what they read is a file no later start opens, and a redelivery answered
/// `duplicate` from it would never come again (a review: 10 of 64 redeliveries were
/// answered 200 from the old file, and the restarted daemon lacked the event).
#[derive(Debug, Clone)]
pub(crate) struct FileWatch {
    path: PathBuf,
    /// The `-wal` beside the file SQLite opened.
    wal: PathBuf,
    identity: (u64, u64),
    had_header: bool,
    gone: Arc<AtomicBool>,
}

impl FileWatch {
    /// `false` once the writer found the file gone, or the path is seen not to name
    /// it now, or it was emptied (before the writer's next batch finds it).
    pub(crate) fn holds(&self) -> bool {
        if self.gone.load(Ordering::Relaxed) {
            return false;
        }
        let named = match length_if_named(&self.path, self.identity) {
            Some(None) => false,
            Some(Some(length)) => !cut_short(length, self.had_header),
            None => true,
        };
        // A `-wal` cut since the writer's last check: the checkpointer copies nothing
        // of it (the hole's zeros would go into the file as pages; a review).
        named && wal_begins_with_its_header(&self.wal)
    }
}

/// Whether the write-ahead log at `wal` begins with SQLite's header (its magic
/// number), or is empty (as SQLite leaves it after copying it all) or not there
/// (removal is [`DatabaseFile::check`]'s). Not told (it cannot be read): taken as
/// whole.
fn wal_begins_with_its_header(wal: &Path) -> bool {
    use std::io::Read;
    const WAL_MAGIC: u32 = 0x377f_0682;
    let mut magic = [0u8; 4];
    match std::fs::File::open(wal).and_then(|mut file| file.read_exact(&mut magic)) {
        Ok(()) => u32::from_be_bytes(magic) & !1 == WAL_MAGIC,
        Err(_) => true,
    }
}

fn identity(path: &Path) -> Option<(u64, u64)> {
    file_identity(path).ok().map(|(identity, _)| identity)
}
