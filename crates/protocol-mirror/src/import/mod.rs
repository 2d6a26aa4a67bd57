//! Import: apply an NDJSON stream of event envelopes (trusted local input: no
//! signatures) through the same engine as delivered events, in bounded batches and
//! constant memory.

use std::collections::BTreeMap;
use std::io::BufRead;

use crate::apply::{Applied, Origin, Outcome, apply_delivery};
use crate::lock::ServeLock;
use crate::store::{self, Store, StoreError};

mod input;

pub use input::{CHUNKS_AHEAD, PARSED_AHEAD_BYTES, without_bom};
use input::{Item, Next, Reader};

/// How an import runs.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// Most events per transaction.
    pub batch_size: usize,
    /// Longest a transaction is kept open while no daemon serves the database: long
    /// transactions write each page of the indexes on random ids once for many
    /// events (about half the bytes written at a million events).
    pub max_batch_time: std::time::Duration,
    /// About the longest a transaction is kept open while a daemon serves the database
    /// (it holds the database's [`ServeLock`], looked at before every batch), its
    /// commit included (`apply_budget` estimates the commit from the last one, so a
    /// batch may outlast it): the daemon's writer waits for one such transaction (and
    /// for at most 5 s before answering 503).
    pub shared_batch_time: std::time::Duration,
    /// The receive time recorded for every imported event (Unix seconds).
    pub received_at: i64,
    /// The longest line read, in bytes: a longer one is reported as malformed and
    /// skipped without being held in memory (a file with no line ends, such as a binary
    /// one, would otherwise be read whole).
    pub max_line_bytes: usize,
    /// Once this is set (by a signal handler), the import commits what it has applied
    /// (within [`STOP_POLL`] while it waits for input), calls `progress` with
    /// [`ImportSummary::interrupted`] set, and returns; a program may also end from
    /// that last `progress` call.
    pub stop: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
}

/// How often an import waiting for input looks at [`ImportOptions::stop`].
pub const STOP_POLL: std::time::Duration = std::time::Duration::from_millis(200);

impl Default for ImportOptions {
    fn default() -> Self {
        ImportOptions {
            batch_size: 50_000,
            max_batch_time: std::time::Duration::from_secs(2),
            shared_batch_time: std::time::Duration::from_millis(500),
            received_at: crate::now(),
            max_line_bytes: DEFAULT_MAX_LINE_BYTES,
            stop: None,
        }
    }
}

/// A line that was not an event envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed {
    /// Its line number, from 1.
    pub line: u64,
    /// What is wrong with it.
    pub error: String,
}

/// What an import did so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportSummary {
    /// Bytes read from the input.
    pub bytes: u64,
    /// Lines read (blank lines included).
    pub lines: u64,
    /// New events, by outcome.
    pub outcomes: BTreeMap<Outcome, u64>,
    /// Events whose id was already in the log.
    pub duplicates: u64,
    /// Lines skipped because they are not event envelopes.
    pub malformed: u64,
    /// Of the [`ImportSummary::malformed`] lines, those skipped unread for being
    /// longer than [`ImportOptions::max_line_bytes`].
    pub too_long: u64,
    /// The first [`ImportSummary::MAX_REPORTED`] malformed lines.
    pub first_malformed: Vec<Malformed>,
    /// Whether [`ImportOptions::stop`] ended the import before the end of its input
    /// (what was read was committed).
    pub interrupted: bool,
    /// On a stop, why what a stop does after the last commit failed (a new database
    /// that could not be given its name); the import then returns that error.
    pub stop_failed: Option<StopFailed>,
}

/// What a stop could not do after its last commit (see [`ImportSummary::stop_failed`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StopFailed {
    /// The error, as text.
    pub message: String,
    /// Whether it was the new database's name taken by another process meanwhile (the
    /// work is then left where it was built, and the message says where).
    pub name_taken: bool,
}

impl ImportSummary {
    /// How many malformed lines are kept for the report (the rest are counted).
    pub const MAX_REPORTED: usize = 20;

    /// Events read (new and duplicate).
    pub fn events(&self) -> u64 {
        self.outcomes.values().sum::<u64>() + self.duplicates
    }

    /// Counts the line just read as malformed, and keeps it for the report while
    /// fewer than [`ImportSummary::MAX_REPORTED`] are kept.
    fn note_malformed(&mut self, error: String) {
        self.malformed += 1;
        if self.first_malformed.len() < Self::MAX_REPORTED {
            self.first_malformed.push(Malformed {
                line: self.lines,
                error,
            });
        }
    }

    /// The count of new events with `outcome`.
    pub fn count(&self, outcome: Outcome) -> u64 {
        self.outcomes.get(&outcome).copied().unwrap_or(0)
    }
}

/// Where a read failed: after the last line read, or before the first ("after line
/// 0" said nothing; a probe).
fn after_line(line: u64) -> String {
    match line {
        0 => "before its first line".to_owned(),
        line => format!("after line {line}"),
    }
}

/// Why an import stopped. Batches committed before the error stay committed (after
/// a read error, every line read before it is committed); the import can be run
/// again (events already logged are duplicates).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImportError {
    /// Reading the input failed.
    #[error("reading the input failed {}: {source}", after_line(*line))]
    Read {
        /// The last line read completely.
        line: u64,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A new database could not be built: another process holds its lock.
    #[error(transparent)]
    Lock(#[from] crate::lock::LockError),
}

/// How long an import beside a daemon waits for the daemon's transaction before it
/// stops (each try waits out the busy timeout).
pub const DAEMON_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// Imports every line of `input`. `progress` is called after each committed batch.
///
/// Three threads: one reads the input line by line, one parses lines, and this one
/// applies them in input order, as if read one line at a time. The queues between them
/// are short (memory stays bounded whatever the input), and a line reaches this thread
/// as soon as it is read: an input that pauses (a pipe whose producer is slow) never
/// holds a batch open past its time limit, and no transaction is open while this
/// thread waits for the first line of the next batch. So a daemon serving the same
/// database waits for at most one batch's time limit, however the input arrives.
///
/// The import returns (an error, a stop) without waiting for the reading thread: one
/// blocked on a quiet pipe ends, dropping `input`, once the pipe gives it something
/// or closes.
pub fn import(
    store: &mut Store,
    input: impl BufRead + Send + 'static,
    options: ImportOptions,
    progress: impl FnMut(&ImportSummary),
) -> Result<ImportSummary, ImportError> {
    // On a stop, the log is copied into the database file and emptied: a program may
    // end from the `progress` call that follows, with the connection still open, and
    // left 40 MB of log beside the file (a probe). Not waited for: a daemon writing
    // keeps its part for its own checkpoints.
    import_then(store, Others::Maybe, input, options, progress, |store| {
        let _ = store.checkpoint_truncate_now();
        Ok(())
    })
}

/// Whether other connections may write the database an import writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Others {
    /// An existing database: a daemon, another import or a backfill may write it.
    Maybe,
    /// A database being built under a name of its own, which no one else opens.
    Never,
}

/// [`import`], calling `before_stop` with the store once a stop has committed what
/// was read and before `progress` is told (a program may end from that call).
fn import_then(
    store: &mut Store,
    others: Others,
    input: impl BufRead + Send + 'static,
    options: ImportOptions,
    progress: impl FnMut(&ImportSummary),
    before_stop: impl FnMut(&mut Store) -> Result<(), StoreError>,
) -> Result<ImportSummary, ImportError> {
    // A large page cache keeps the indexes on random ids between statements while
    // long transactions touch every page of them (96 MiB: measured with the import
    // benchmark, 1M events, peak RSS ~175 MiB).
    let cache = store.cache_kib()?;
    store.set_cache_kib(cache.max(IMPORT_CACHE_KIB))?;
    let mut reader = input::pipeline(input, options.max_line_bytes);
    let _waits = store::end_waits_on(options.stop.clone());
    let result = apply_batches(store, others, &mut reader, options, progress, before_stop);
    store.set_cache_kib(cache)?;
    result
}

/// Imports every line of `input` into a database at `db` that does not exist yet:
/// as [`import`] does, but faster (about 1.4 times at a million events) and writing
/// half the bytes, as nothing else can be reading or writing it. The database is built
/// beside `db` (beside the file it names, when `db` is a symbolic link) as a hidden
/// `.<name>.importing` (replacing any left by an import that was killed), with no journal and no syncs, under `db`'s [`ServeLock`] (no daemon
/// can start on `db` meanwhile); once the input ends, it is synced and given its name.
/// So `db` appears whole or not at all: until then, readers find no database (and are
/// told that an import is building it).
///
/// What is imported when the import stops early is kept, as [`import`] keeps it: on
/// [`ImportOptions::stop`] (the database is put in place before `progress` is called
/// with [`ImportSummary::interrupted`], so a program may end from that call) and on a
/// read error. A database error (a full disk) removes the database being built: its
/// transaction cannot be rolled back without a journal, and nothing existed before.
/// An import that logs no event (an empty input, or one without a single event
/// envelope: the wrong file) leaves no database. When `db` exists by the time the
/// lock is taken, this is [`import`] into it.
pub fn import_into_new(
    db: &std::path::Path,
    input: impl BufRead + Send + 'static,
    options: ImportOptions,
    progress: impl FnMut(&ImportSummary),
) -> Result<ImportSummary, ImportError> {
    let lock = store::serve_lock(db, crate::lock::Role::Import).map_err(|error| match error {
        StoreError::InUse(lock) => ImportError::Lock(lock),
        other => ImportError::Store(other),
    })?;
    // A symbolic link to a database not there yet names a new one where it points:
    // built beside that, and published there (the link counted as a database, and the
    // import wrote in place, visible half done; a black-box probe).
    let target = store::through_links(db);
    let building = store::importing_path(db);
    // A name too long for the building file's longer one and its `-journal` (most
    // file systems allow 255 bytes) is imported into as an existing database is.
    let too_long = building
        .file_name()
        .is_some_and(|name| name.len() + "-journal".len() > store::MAX_NAME_BYTES);
    if target.symlink_metadata().is_ok() || too_long {
        drop(lock);
        let mut store = Store::open(db)?;
        return import(&mut store, input, options, progress);
    }
    store::remove_database_files(&building);
    // Under `db`'s lock, which this process holds.
    let mut store = Store::open_locked(&building)
        .and_then(|store| store.unjournaled().map(|()| store))
        .inspect_err(|_| store::remove_database_files(&building))?;
    // Once the input is read (or a stop or a read error ends it), the database is
    // made an ordinary one (WAL), synced and given its name. On a stop, that happens
    // before `progress` is told (the connection stays open: a program may end from
    // that call).
    // An import that logged no event (of an empty input, or of the wrong file) leaves
    // no database.
    let mut finished = false;
    let result = import_then(
        &mut store,
        Others::Never,
        input,
        options,
        progress,
        |store| {
            if store.is_empty()? {
                store::remove_database_files(&building);
            } else {
                // Removed here if need be, as at the end below: a caller may end the
                // process when told of the failure (a review: a stop left it, unsaid).
                published_or_removed(
                    store
                        .journal_again()
                        .and_then(|()| store::publish(&building, &target)),
                    &building,
                )?;
            }
            finished = true;
            // A program may end from the `progress` call that follows: the lock's line
            // goes now, as a holder that ends empties it.
            lock.clear_record();
            Ok(())
        },
    );
    // Whether what was built is kept: not when the database cannot even say whether
    // it holds an event, which is said (unless a read error is said already), the
    // database removed (it was left beside its name, and the read error lost: a
    // review).
    let kept = match &result {
        _ if finished => return result,
        // Left where it was built, as the error says.
        Err(ImportError::Store(StoreError::NameTaken { .. })) => return result,
        Ok(_) | Err(ImportError::Read { .. }) => store.is_empty().map(|empty| !empty),
        _ => Ok(false),
    };
    match kept {
        Ok(true) => {
            published_or_removed(
                store
                    .journal_again()
                    .and_then(|()| store.close())
                    .and_then(|()| store::publish(&building, &target)),
                &building,
            )?;
            result
        }
        unread => {
            drop(store);
            store::remove_database_files(&building);
            match unread {
                Err(error) if result.is_ok() => Err(error.into()),
                _ => result,
            }
        }
    }
}

/// `published`, the outcome of giving the database built at `building` its name; one
/// that could not take it is removed, as the error says (`--db imp/`: it stayed beside
/// the name; a probe), but for a name taken, whose error says it is left where it was
/// built.
fn published_or_removed(
    published: Result<(), StoreError>,
    building: &std::path::Path,
) -> Result<(), StoreError> {
    if let Err(error) = &published
        && !matches!(error, StoreError::NameTaken { .. })
    {
        store::remove_database_files(building);
    }
    published
}

/// The longest pause after each batch while a daemon serves the database: the pause
/// ends as soon as another connection (the daemon's writer) has committed, and lasts
/// this long only when the daemon had nothing to write (5% of a batch then).
///
/// A fixed pause of 5 ms was too short on a busy machine: the daemon's writer, polling
/// for the lock every [`crate::store::BUSY_POLL`], was often not scheduled in time,
/// the import took the lock again, and a webhook waited for two batches (0.85 s).
pub const SHARED_PAUSE: std::time::Duration = std::time::Duration::from_millis(25);

/// The longest pause after a batch of an import with no daemon beside it, for another
/// writer (an import, a daemon starting, a `backfill`) to take the lock: a twentieth of
/// the time since the last pause, and none shorter than [`MIN_ALONE_PAUSE`] (small
/// batches pause every 40 ms or so). At most 5% of the import's time when no one waits
/// (0.5% for batches of 2 s), and the pause ends as soon as another writer has committed.
pub const ALONE_PAUSE: std::time::Duration = std::time::Duration::from_millis(10);

/// The shortest pause of an import alone (see [`ALONE_PAUSE`]).
pub const MIN_ALONE_PAUSE: std::time::Duration = std::time::Duration::from_millis(2);

/// The page cache of an import, in KiB.
pub const IMPORT_CACHE_KIB: i64 = 96 * 1024;

/// The default of [`ImportOptions::max_line_bytes`]: 8 MiB, eight times the daemon's
/// default body limit.
pub const DEFAULT_MAX_LINE_BYTES: usize = 8 * 1024 * 1024;

/// Most bytes of lines in one transaction (past the first line): until it commits,
/// the store keeps the text of each message for the full-text index, and SQLite the
/// pages the transaction wrote. Two seconds of 4.6 MB lines took an import to 716 MB
/// (found by a black-box probe); ordinary batches (50,000 events of about 1 KB) stay
/// under it.
pub const MAX_BATCH_BYTES: u64 = 64 * 1024 * 1024;

/// Runs `before_stop` on a stop. When it fails, `progress` is told all the same, with
/// [`ImportSummary::stop_failed`], before the error is returned: a caller that ends
/// the process from the `progress` call of a stop hears of it there.
fn stop_with(
    store: &mut Store,
    summary: &mut ImportSummary,
    before_stop: &mut impl FnMut(&mut Store) -> Result<(), StoreError>,
    progress: &mut impl FnMut(&ImportSummary),
) -> Result<(), ImportError> {
    before_stop(store).map_err(|error| {
        summary.stop_failed = Some(StopFailed {
            message: error.to_string(),
            name_taken: matches!(error, StoreError::NameTaken { .. }),
        });
        progress(summary);
        error.into()
    })
}

fn apply_batches(
    store: &mut Store,
    others: Others,
    reader: &mut Reader,
    options: ImportOptions,
    mut progress: impl FnMut(&ImportSummary),
    mut before_stop: impl FnMut(&mut Store) -> Result<(), StoreError>,
) -> Result<ImportSummary, ImportError> {
    let mut summary = ImportSummary::default();
    let batch_size = options.batch_size.max(1);
    // Whether a daemon or a rebuild holds it is asked of the database's path.
    let path = store.path().map(std::path::Path::to_path_buf);
    // How long the last commit beside a daemon took: the next batch leaves that much
    // of its time for its own commit.
    let mut last_shared_commit = None;
    // Whether a mark that could not be made was said (once).
    let mut told_unmarked = false;
    // When the lock was last left free for another writer (see `ALONE_PAUSE`).
    let mut last_pause = std::time::Instant::now();
    let stopped = || {
        options
            .stop
            .as_ref()
            .is_some_and(|stop| stop.load(std::sync::atomic::Ordering::Relaxed))
    };
    loop {
        // No transaction is open while the input is awaited: a batch begins with its
        // first line at hand.
        let first = loop {
            if stopped() {
                summary.interrupted = true;
                stop_with(store, &mut summary, &mut before_stop, &mut progress)?;
                progress(&summary);
                return Ok(summary);
            }
            let poll = options
                .stop
                .as_ref()
                .map(|_| std::time::Instant::now() + STOP_POLL);
            match reader.next_before(poll) {
                Next::Line(parsed) => break parsed,
                Next::Wait => {}
                Next::End => return Ok(summary),
            }
        };
        let shared = path.as_deref().is_some_and(ServeLock::is_held);
        let apply_time = if shared {
            apply_budget(options.shared_batch_time, last_shared_commit)
        } else {
            options.max_batch_time
        };
        // Beside a daemon, its writer may hold the database for seconds (one event's
        // cascade over a large conversation): waited for, up to `DAEMON_WAIT`, as the
        // daemon waits out an import's long transaction. (It stopped the import at the
        // busy timeout, blaming "a rebuild, a migration, or another program".)
        let waiting_since = std::time::Instant::now();
        // A stop ends the wait (within one busy timeout): the line at hand is not
        // imported.
        let mut waited = false;
        let tx = loop {
            if waited && stopped() {
                summary.interrupted = true;
                stop_with(store, &mut summary, &mut before_stop, &mut progress)?;
                progress(&summary);
                return Ok(summary);
            }
            // Asked again at each try: a rebuild (or a daemon) that took the database
            // after the batch began is waited for as one there from the start (three
            // imports and a rebuild at once: an import stopped at the busy timeout,
            // blaming another program; a black-box probe).
            let beside_ours = || {
                shared
                    || path.as_deref().is_some_and(|path| {
                        ServeLock::is_held(path) || crate::lock::ImportMark::is_held(path)
                    })
            };
            match store.transaction() {
                Err(e)
                    if e.is_busy()
                        && (stopped()
                            || beside_ours() && waiting_since.elapsed() < DAEMON_WAIT) =>
                {
                    waited = true;
                }
                other => break other?,
            }
        };
        // Held until the batch commits: the daemon waits out this transaction, however
        // long one event's cascade makes it; so do a daemon starting and another import
        // (which, alone, stopped at the busy timeout: a review). Taken once the
        // transaction has begun: an import that waits holds no mark that another would
        // wait for (taken before, beside a daemon starting, it had that daemon wait a
        // minute for another program's lock, said to be an import's: a review).
        let mark = match path.as_deref().filter(|_| others == Others::Maybe) {
            Some(path) => crate::lock::ImportMark::take(path)
                .inspect_err(|e| {
                    // Once, and only beside a daemon: a lock file that is a link was
                    // passed over without a word (a probe).
                    if shared && !std::mem::replace(&mut told_unmarked, true) {
                        tracing::warn!(
                            "cannot mark this import's transactions in {}: {e}; the daemon \
                             beside it may answer 503 while one of them takes long",
                            crate::lock::ImportMark::path_for(path).display()
                        );
                    }
                })
                .ok(),
            None => None,
        };
        let deadline = std::time::Instant::now() + apply_time;
        let mut in_batch = 0;
        // Lines of the batch, events or not: a run of blank or too long lines ends a
        // batch at its deadline too (it held the transaction, and the daemon, until the
        // next event: 16 s and a 503 for 150 MB of line ends; a review).
        let mut lines_in_batch = 0;
        let mut batch_bytes = 0;
        let mut at_end = false;
        let mut read_failed = None;
        let mut next = Some(first);
        // At least one line per batch, whatever the time limit; then lines while they
        // come before the deadline.
        while in_batch < batch_size {
            if stopped() {
                summary.interrupted = true;
                break;
            }
            let parsed = match next.take() {
                Some(parsed) => parsed,
                None if lines_in_batch > 0
                    && (std::time::Instant::now() >= deadline
                        || batch_bytes >= MAX_BATCH_BYTES) =>
                {
                    break;
                }
                // A stop is looked for every `STOP_POLL` while the input is awaited
                // (it was seen at the batch's deadline, 2 s on; a review).
                None => match reader.next_before(Some(poll_until(deadline, &options))) {
                    Next::Line(parsed) => parsed,
                    Next::Wait if std::time::Instant::now() < deadline => continue,
                    Next::Wait => break,
                    Next::End => {
                        at_end = true;
                        break;
                    }
                },
            };
            let too_long = matches!(parsed.item, Item::TooLong);
            let delivery = match parsed.item {
                Item::ReadFailed(source) => {
                    // The lines before it are imported: commit them, then fail.
                    read_failed = Some(ImportError::Read {
                        line: parsed.number,
                        source,
                    });
                    break;
                }
                Item::Blank | Item::TooLong => None,
                Item::Event(delivery) => Some(delivery),
            };
            summary.bytes += parsed.bytes;
            batch_bytes += parsed.bytes;
            summary.lines += 1;
            lines_in_batch += 1;
            let Some(delivery) = delivery else {
                if too_long {
                    // Its bytes as read, a line end among them if it had one (the
                    // last line may have none: it said "with its line end" all the
                    // same; a probe).
                    summary.too_long += 1;
                    summary.note_malformed(format!(
                        "longer than {} bytes: skipped ({} bytes read)",
                        options.max_line_bytes, parsed.bytes
                    ));
                }
                continue;
            };
            in_batch += 1;
            let applied = (*delivery).map(|delivery| {
                apply_delivery(&tx, &delivery, Origin::Import, options.received_at)
            });
            match applied {
                Ok(Ok(Applied::Logged { outcome, .. })) => {
                    *summary.outcomes.entry(outcome).or_default() += 1;
                }
                Ok(Ok(Applied::Duplicate { .. })) => summary.duplicates += 1,
                Err(error) => summary.note_malformed(error.to_string()),
                Ok(Err(error)) => return Err(error.into()),
            }
        }
        let committing = std::time::Instant::now();
        tx.commit()?;
        drop(mark);
        if shared {
            last_shared_commit = Some(committing.elapsed());
        }
        if summary.interrupted {
            stop_with(store, &mut summary, &mut before_stop, &mut progress)?;
        }
        progress(&summary);
        if let Some(error) = read_failed {
            return Err(error);
        }
        if at_end || summary.interrupted {
            return Ok(summary);
        }
        // Leave the lock free until a writer that waits (polling every `BUSY_POLL`)
        // has taken it and committed, rather than after the next batch: the daemon's,
        // or another import's (begun again at once, it kept another import out past
        // its busy timeout, and a daemon starting: a review).
        // Alone, a twentieth of the time since the last pause, from 2 ms up to
        // `ALONE_PAUSE`: a pause of 10 ms after every batch took 1,000 batches of one
        // event from 0.57 to 11.5 s (a review).
        let pause = match (shared, others) {
            (true, _) => SHARED_PAUSE,
            (false, Others::Maybe) => {
                let due = last_pause.elapsed() / 20;
                if due >= MIN_ALONE_PAUSE {
                    due.min(ALONE_PAUSE)
                } else {
                    std::time::Duration::ZERO
                }
            }
            (false, Others::Never) => std::time::Duration::ZERO,
        };
        if !pause.is_zero() {
            let before = store.data_version()?;
            let paused = std::time::Instant::now();
            while paused.elapsed() < pause && store.data_version()? == before {
                std::thread::sleep(crate::store::BUSY_POLL);
            }
            last_pause = std::time::Instant::now();
        }
    }
}

/// How long to wait for the input before `deadline`: until it, or for `STOP_POLL`
/// when the import can be stopped.
fn poll_until(deadline: std::time::Instant, options: &ImportOptions) -> std::time::Instant {
    match options.stop {
        Some(_) => deadline.min(std::time::Instant::now() + STOP_POLL),
        None => deadline,
    }
}

/// How long a batch beside a daemon may apply events, so that applying them and
/// committing them fit in `batch_time` together (the daemon waits for both): the time
/// left once the last such commit is allowed for, with a quarter more as a margin (half
/// the batch time before the first), and never less than a tenth of it. A commit takes
/// about half as long as applying what it commits (2026-11-28: 270-360 ms for
/// 0.5 s of events), so a budget of the whole batch time held the daemon up to 0.85 s.
fn apply_budget(
    batch_time: std::time::Duration,
    last_commit: Option<std::time::Duration>,
) -> std::time::Duration {
    let commit = last_commit.unwrap_or(batch_time / 2);
    batch_time
        .saturating_sub(commit + commit / 4)
        .max(batch_time / 10)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    /// Options for batches of `batch_size` that stop once the flag returned is set.
    fn stoppable(
        batch_size: usize,
    ) -> (std::sync::Arc<std::sync::atomic::AtomicBool>, ImportOptions) {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let options = ImportOptions {
            batch_size,
            stop: Some(stop.clone()),
            ..ImportOptions::default()
        };
        (stop, options)
    }

    /// A read that failed before any line was read says so.
    #[test]
    fn a_read_failure_says_where() {
        let failed = |line| {
            ImportError::Read {
                line,
                source: std::io::Error::other("gone"),
            }
            .to_string()
        };
        assert_eq!(
            failed(0),
            "reading the input failed before its first line: gone"
        );
        assert_eq!(failed(3), "reading the input failed after line 3: gone");
    }

    #[test]
    fn counts_outcomes_duplicates_and_malformed_lines() {
        let input = concat!(
            r#"{"id":"e1","type":"contact.created","payload":{"id":"c1"}}"#,
            "\n\n",
            "not json\n",
            r#"{"id":"e1","type":"contact.created","payload":{"id":"c1"}}"#,
            "\r\n",
            r#"{"id":"e2","type":"contact.created","payload":{"id":"c1","username":"x"}}"#,
            "\n",
            r#"{"id":"e3","type":"contact.updated","payload":{"id":"c1","username":5}}"#,
            "\n",
            r#"{"id":"e4","type":"reaction.created","payload":{"id":"r"}}"#,
            "\n",
            r#"{"id":"e5","type":"contact.created"}"#,
        );
        let mut store = Store::open_in_memory().unwrap();
        let mut batches = 0;
        let options = ImportOptions {
            batch_size: 2,
            received_at: 7,
            max_batch_time: std::time::Duration::from_secs(60),
            shared_batch_time: std::time::Duration::from_secs(60),
            ..ImportOptions::default()
        };
        let summary = import(&mut store, Cursor::new(input), options, |_| batches += 1).unwrap();
        assert_eq!(summary.lines, 8);
        assert_eq!(summary.bytes, input.len() as u64);
        assert_eq!(summary.count(Outcome::Applied), 1);
        assert_eq!(summary.count(Outcome::Stale), 1);
        assert_eq!(summary.count(Outcome::Rejected), 1);
        assert_eq!(summary.count(Outcome::Unsupported), 1);
        assert_eq!(summary.duplicates, 1);
        assert_eq!(summary.malformed, 2);
        assert_eq!(summary.first_malformed[0].line, 3);
        assert_eq!(summary.first_malformed[1].line, 8);
        assert!(summary.first_malformed[1].error.contains("payload"));
        assert_eq!(batches, 4, "7 events in batches of 2");
    }

    /// An input that fails once `text` is read.
    fn failing_after(text: &str) -> impl BufRead + Send + use<> {
        struct Failing(std::io::Cursor<Vec<u8>>);
        impl std::io::Read for Failing {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                match self.0.read(buf)? {
                    0 => Err(std::io::Error::other("disk on fire")),
                    n => Ok(n),
                }
            }
        }
        std::io::BufReader::new(Failing(std::io::Cursor::new(text.as_bytes().to_vec())))
    }

    fn lines(n: usize) -> String {
        (0..n)
            .map(|i| {
                format!(r#"{{"id":"e{i}","type":"contact.created","payload":{{"id":"c{i}"}}}}"#)
                    + "\n"
            })
            .collect()
    }

    /// Lines of contact events, made as they are read until `enough` is set.
    struct Endless {
        next: usize,
        enough: std::sync::Arc<std::sync::atomic::AtomicBool>,
        line: Vec<u8>,
    }

    impl std::io::Read for Endless {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.line.is_empty() {
                if self.enough.load(std::sync::atomic::Ordering::Relaxed) {
                    return Ok(0);
                }
                let n = self.next;
                self.next += 1;
                self.line = format!(
                    "{{\"id\":\"e{n}\",\"type\":\"contact.created\",\"payload\":{{\"id\":\"c{n}\"}}}}\n"
                )
                .into_bytes();
            }
            let taken = buf.len().min(self.line.len());
            buf[..taken].copy_from_slice(&self.line[..taken]);
            self.line.drain(..taken);
            Ok(taken)
        }
    }

    /// Alone, an import marks its transactions and leaves the lock free after each
    /// batch until another writer waiting for it has committed (which then waits for
    /// the batch under way, at most, not for several): begun again at once,
    /// it kept a second import waiting for several batches, past its busy timeout, and
    /// a daemon starting (a review: waits of 0.15-1.84 s for batches of 0.2 s).
    #[test]
    fn another_writer_gets_in_between_the_batches_of_an_import_alone() {
        use std::sync::atomic::{AtomicBool, Ordering};
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("m.db");
        let mut store = Store::open(&db).unwrap();
        let batch = std::time::Duration::from_millis(200);
        let options = ImportOptions {
            max_batch_time: batch,
            ..ImportOptions::default()
        };
        let enough = std::sync::Arc::new(AtomicBool::new(false));
        let input = std::io::BufReader::new(Endless {
            next: 0,
            enough: enough.clone(),
            line: Vec::new(),
        });
        let (marked, waits) = std::thread::scope(|scope| {
            let importing = scope.spawn(|| import(&mut store, input, options, |_| {}));
            let since = std::time::Instant::now();
            let marked = loop {
                if crate::lock::ImportMark::is_held(&db) {
                    break true;
                }
                if since.elapsed() > std::time::Duration::from_secs(10) {
                    break false;
                }
                std::thread::sleep(std::time::Duration::from_millis(5));
            };
            let mut other = Store::open(&db).unwrap();
            let mut waits = Vec::new();
            for _ in 0..10 {
                let started = std::time::Instant::now();
                let taken = other.transaction().map(drop);
                waits.push((started.elapsed(), taken.is_ok()));
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            enough.store(true, Ordering::Relaxed);
            importing.join().unwrap().unwrap();
            (marked, waits)
        });
        assert!(marked, "the import alone never marked a transaction");
        assert!(waits.iter().all(|(_, taken)| *taken), "{waits:?}");
        let total: std::time::Duration = waits.iter().map(|(wait, _)| *wait).sum();
        let longest = waits.iter().map(|(wait, _)| *wait).max().unwrap();
        assert!(
            total < batch * 15 && longest < batch * 4,
            "another writer waited {total:?} in all, {longest:?} at most, for batches of \
             {batch:?}: {waits:?}"
        );
    }

    /// Alone, small batches pause for a fraction of their time, not 10 ms each: that
    /// took 1,000 batches of one event from 0.57 to 11.5 s (a review). 300 batches of
    /// one event paused 3 s so.
    #[test]
    fn an_import_alone_in_small_batches_pauses_little() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("m.db")).unwrap();
        // The commits' syncs are not what is measured.
        store
            .conn()
            .pragma_update(None, "synchronous", "OFF")
            .unwrap();
        let options = ImportOptions {
            batch_size: 1,
            ..ImportOptions::default()
        };
        let started = std::time::Instant::now();
        let summary = import(&mut store, Cursor::new(lines(300)), options, |_| {}).unwrap();
        let took = started.elapsed();
        assert_eq!(summary.outcomes.get(&Outcome::Applied), Some(&300));
        assert!(
            took < std::time::Duration::from_secs(2),
            "300 batches of one event took {took:?}"
        );
    }

    /// Beside a serving daemon (which holds the database's lock), batches end after
    /// `shared_batch_time`; alone, after `max_batch_time`. A batch always takes at
    /// least one line, even with a time limit of zero.
    #[test]
    fn a_stop_commits_what_was_applied_and_returns() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("m.db")).unwrap();
        let (stop, options) = stoppable(4);
        let options = ImportOptions {
            received_at: 0,
            ..options
        };
        let mut calls = Vec::new();
        let summary = import(&mut store, Cursor::new(lines(20)), options, |s| {
            calls.push(s.interrupted);
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
        })
        .unwrap();
        assert!(summary.interrupted);
        assert_eq!(summary.count(Outcome::Applied), 4, "the first batch only");
        assert_eq!(calls, [false, true], "told once more, interrupted");
        let logged: i64 = store
            .conn()
            .query_row("SELECT COUNT(*) FROM events", [], |row| row.get(0))
            .unwrap();
        assert_eq!(logged, 4, "committed");
    }

    /// Lines that are no event (blank, or too long) end a batch at its time limit
    /// too: a run of them held the transaction, and a daemon beside it, until the next
    /// event (150 MB of line ends: 16 s, and a webhook answered 503).
    #[test]
    fn lines_that_are_no_event_end_a_batch_in_time() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("m.db")).unwrap();
        let options = ImportOptions {
            max_batch_time: std::time::Duration::ZERO,
            max_line_bytes: 100,
            ..ImportOptions::default()
        };
        let input = format!("\n\n{}\n\n{}", "x".repeat(150), lines(1));
        let mut commits = 0;
        let summary = import(&mut store, Cursor::new(input.clone()), options, |_| {
            commits += 1
        })
        .unwrap();
        assert_eq!(summary.events(), 1);
        assert_eq!(commits, 5, "a line a batch, with a time limit of zero");
    }

    /// The events logged in the database at `db`, and its journal mode.
    fn logged_in(db: &std::path::Path) -> (i64, String) {
        let store = Store::open_read_only(db).unwrap();
        let logged = store
            .conn()
            .query_row("SELECT COUNT(*) FROM events", [], |row| row.get(0))
            .unwrap();
        let mode = store
            .conn()
            .pragma_query_value(None, "journal_mode", |row| row.get(0))
            .unwrap();
        (logged, mode)
    }

    /// The files of a folder, sorted.
    fn files_in(dir: &std::path::Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_stop_whose_database_cannot_take_its_name_is_told() {
        // Another process makes the name while the import runs, and a stop comes:
        // `progress` hears of the failure (the CLI ends there), and the work stays
        // where it was built.
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("m.db");
        let (stop, options) = stoppable(10);
        let mut told = Vec::new();
        let err = import_into_new(&db, Cursor::new(lines(35)), options, |s| {
            if !s.interrupted {
                std::fs::write(&db, "someone else's").unwrap();
                stop.store(true, std::sync::atomic::Ordering::Relaxed);
            }
            told.push((s.interrupted, s.stop_failed.clone()));
        })
        .unwrap_err();
        assert!(
            matches!(err, ImportError::Store(StoreError::NameTaken { .. })),
            "{err}"
        );
        let (interrupted, failed) = told.last().unwrap().clone();
        assert!(interrupted);
        let failed = failed.unwrap();
        assert!(failed.name_taken);
        assert!(failed.message.contains("another process"), "{failed:?}");
        assert!(dir.path().join(".m.db.importing").exists());
    }

    #[test]
    fn a_stopped_database_that_cannot_take_its_name_is_removed() {
        // As at the end of the input: the caller may end the process when told, so
        // the removal cannot wait for the import's own return (a review: a stop left
        // `.imp.importing` behind, unsaid).
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("imp/");
        let (stop, options) = stoppable(10);
        let mut left_when_told = None;
        let err = import_into_new(&db, Cursor::new(lines(35)), options, |s| {
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            if let Some(failed) = &s.stop_failed {
                assert!(!failed.name_taken, "{failed:?}");
                left_when_told = Some(dir.path().join(".imp.importing").exists());
            }
        })
        .unwrap_err();
        assert!(err.to_string().contains("in place"), "{err}");
        assert_eq!(
            left_when_told,
            Some(false),
            "removed before the caller is told"
        );
    }

    #[test]
    fn a_database_that_cannot_take_its_name_is_removed() {
        // `imp/` names a folder that is not there: the database is built beside it as
        // `.imp.importing`, and cannot be given the name.
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("imp/");
        let options = ImportOptions::default();
        let err = import_into_new(&db, Cursor::new(lines(5)), options, |_| {}).unwrap_err();
        assert!(err.to_string().contains("in place"), "{err}");
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .filter(|name| name != "imp.lock")
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }

    #[test]
    fn a_new_database_appears_whole_under_its_name() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("m.db");
        let building = dir.path().join(".m.db.importing");
        let options = ImportOptions {
            batch_size: 10,
            ..ImportOptions::default()
        };
        let mut seen = Vec::new();
        let summary = import_into_new(&db, Cursor::new(lines(35)), options, |s| {
            // Built beside, with no journal: the name is free until the end.
            seen.push((s.events(), db.exists(), building.exists()));
        })
        .unwrap();
        assert_eq!(summary.count(Outcome::Applied), 35);
        assert_eq!(
            seen,
            [
                (10, false, true),
                (20, false, true),
                (30, false, true),
                (35, false, true)
            ]
        );
        assert_eq!(files_in(dir.path()), ["m.db", "m.db.lock"]);
        assert_eq!(logged_in(&db), (35, "wal".to_owned()));
        // Ordinary again: a second import goes into it as into any database.
        let mut store = Store::open(&db).unwrap();
        let again = import(
            &mut store,
            Cursor::new(lines(40)),
            ImportOptions::default(),
            |_| {},
        )
        .unwrap();
        assert_eq!((again.duplicates, again.count(Outcome::Applied)), (35, 5));
    }

    /// Through a symbolic link to a database not there yet, the database is built
    /// beside the file the link names and appears there whole; the link stays a link.
    /// (The link counted as a database: the import wrote in place, in WAL mode,
    /// readable half done, and a kill left half a database; a black-box probe.)
    #[cfg(unix)]
    #[test]
    fn a_new_database_through_a_link_appears_whole_where_the_link_points() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("real")).unwrap();
        let link = dir.path().join("link.db");
        std::os::unix::fs::symlink(dir.path().join("real/m.db"), &link).unwrap();
        let (db, building) = (
            dir.path().join("real/m.db"),
            dir.path().join("real/.m.db.importing"),
        );
        let options = ImportOptions {
            batch_size: 10,
            ..ImportOptions::default()
        };
        let mut seen = Vec::new();
        import_into_new(&link, Cursor::new(lines(25)), options, |s| {
            seen.push((s.events(), db.exists(), building.exists()));
        })
        .unwrap();
        assert_eq!(
            seen,
            [(10, false, true), (20, false, true), (25, false, true)]
        );
        assert_eq!(files_in(&dir.path().join("real")), ["m.db", "m.db.lock"]);
        assert!(link.symlink_metadata().unwrap().file_type().is_symlink());
        assert_eq!(logged_in(&link), (25, "wal".to_owned()));
    }

    #[test]
    fn a_stopped_import_into_a_new_database_puts_it_in_place_first() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("m.db");
        let (stop, options) = stoppable(4);
        let mut in_place_when_told = None;
        let summary = import_into_new(&db, Cursor::new(lines(20)), options, |s| {
            if s.interrupted {
                // A program ending from this call keeps what was imported, in an
                // ordinary (WAL) database, with no file left beside it, and the
                // lock's line gone (a holder that ends empties it).
                let record = std::fs::read(dir.path().join("m.db.lock")).unwrap();
                assert!(record.is_empty(), "{}", String::from_utf8_lossy(&record));
                in_place_when_told = Some((files_in(dir.path()), logged_in(&db)));
            }
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
        })
        .unwrap();
        assert!(summary.interrupted);
        assert_eq!(
            in_place_when_told,
            Some((
                vec!["m.db".to_owned(), "m.db.lock".to_owned()],
                (4, "wal".to_owned())
            ))
        );
    }

    /// A stopped import into an existing database copies its log into the file
    /// before `progress` is told: a program ending from that call left the whole
    /// import in the `-wal` (a probe).
    #[test]
    fn a_stopped_import_leaves_its_log_copied_into_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("m.db");
        let mut store = Store::open(&db).unwrap();
        let (stop, options) = stoppable(4);
        let mut log_when_told = None;
        let summary = import(&mut store, Cursor::new(lines(20)), options, |s| {
            if s.interrupted {
                let wal = std::fs::metadata(dir.path().join("m.db-wal")).map_or(0, |m| m.len());
                log_when_told = Some(wal);
            }
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
        })
        .unwrap();
        assert!(summary.interrupted);
        assert_eq!(log_when_told, Some(0));
    }

    #[test]
    fn a_read_error_keeps_the_new_database_with_the_lines_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("m.db");
        let input = failing_after(&lines(25));
        let options = ImportOptions {
            batch_size: 10,
            ..ImportOptions::default()
        };
        let err = import_into_new(&db, input, options, |_| {}).unwrap_err();
        assert!(matches!(err, ImportError::Read { line: 25, .. }), "{err}");
        assert_eq!(logged_in(&db), (25, "wal".to_owned()));
    }

    #[test]
    fn a_new_database_is_not_built_while_its_lock_is_held() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("m.db");
        let _daemon = ServeLock::acquire(&db, crate::lock::Role::Daemon).unwrap();
        let err = import_into_new(&db, Cursor::new(lines(3)), ImportOptions::default(), |_| {})
            .unwrap_err();
        assert!(matches!(err, ImportError::Lock(_)), "{err}");
        assert_eq!(files_in(dir.path()), ["m.db.lock"]);
    }

    #[test]
    fn what_a_killed_import_left_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("m.db");
        // A killed import's half-built database (no journal: possibly damaged).
        let building = dir.path().join(".m.db.importing");
        std::fs::write(&building, b"half a database").unwrap();
        std::fs::write(dir.path().join(".m.db.importing-journal"), b"x").unwrap();
        import_into_new(&db, Cursor::new(lines(3)), ImportOptions::default(), |_| {}).unwrap();
        assert_eq!(files_in(dir.path()), ["m.db", "m.db.lock"]);
        assert_eq!(logged_in(&db).0, 3);
    }

    /// An empty input, or one without an event (the wrong file), leaves no database,
    /// also when stopped.
    #[test]
    fn an_import_of_no_event_leaves_no_new_database() {
        for input in ["", "\n\n", "not json\n\u{1f}\u{8b}\n"] {
            let dir = tempfile::tempdir().unwrap();
            let db = dir.path().join("m.db");
            let summary =
                import_into_new(&db, Cursor::new(input), ImportOptions::default(), |_| {}).unwrap();
            assert_eq!(summary.events(), 0);
            assert_eq!(files_in(dir.path()), ["m.db.lock"], "{input:?}");
        }
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("m.db");
        let options = ImportOptions {
            stop: Some(std::sync::Arc::new(std::sync::atomic::AtomicBool::new(
                true,
            ))),
            ..ImportOptions::default()
        };
        let summary = import_into_new(&db, Cursor::new(lines(3)), options, |_| {}).unwrap();
        assert!(summary.interrupted);
        assert_eq!(files_in(dir.path()), ["m.db.lock"]);
    }

    /// When another process takes the name anyway, what was imported stays where it
    /// was built, and the error says where.
    #[test]
    fn a_name_taken_meanwhile_leaves_the_import_where_it_was_built() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("m.db");
        let mut taken = false;
        let options = ImportOptions {
            batch_size: 2,
            ..ImportOptions::default()
        };
        let err = import_into_new(&db, Cursor::new(lines(3)), options, |_| {
            if !taken {
                std::fs::write(&db, b"someone else's").unwrap();
                taken = true;
            }
        })
        .unwrap_err();
        assert!(err.to_string().contains(".m.db.importing"), "{err}");
        assert_eq!(std::fs::read(&db).unwrap(), b"someone else's");
        let built = dir.path().join(".m.db.importing");
        assert_eq!(logged_in(&built).0, 3);
    }

    /// A name with no room for `.<name>.importing` beside it is imported into in
    /// place (the building file's name was too long for the file system).
    #[test]
    fn a_name_too_long_to_build_beside_is_imported_in_place() {
        let dir = tempfile::tempdir().unwrap();
        for n in [230, 240, 243] {
            let db = dir.path().join(format!("{}.db", "n".repeat(n)));
            let summary =
                import_into_new(&db, Cursor::new(lines(3)), ImportOptions::default(), |_| {})
                    .unwrap();
            assert_eq!(summary.count(Outcome::Applied), 3, "{n}");
            assert_eq!(logged_in(&db).0, 3, "{n}");
        }
    }

    #[test]
    fn a_database_that_exists_by_then_is_imported_into_as_usual() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("m.db");
        let mut store = Store::open(&db).unwrap();
        import(
            &mut store,
            Cursor::new(lines(2)),
            ImportOptions::default(),
            |_| {},
        )
        .unwrap();
        let summary =
            import_into_new(&db, Cursor::new(lines(3)), ImportOptions::default(), |_| {}).unwrap();
        assert_eq!(
            (summary.duplicates, summary.count(Outcome::Applied)),
            (2, 1)
        );
        assert_eq!(logged_in(&db).0, 3);
    }

    #[test]
    fn a_batch_beside_a_daemon_leaves_time_for_its_commit() {
        let ms = std::time::Duration::from_millis;
        assert_eq!(
            apply_budget(ms(500), None),
            std::time::Duration::from_micros(187_500)
        );
        assert_eq!(apply_budget(ms(500), Some(ms(160))), ms(300));
        assert_eq!(apply_budget(ms(500), Some(ms(2_000))), ms(50));
        assert_eq!(apply_budget(ms(0), None), ms(0));
    }

    #[test]
    fn batches_are_short_while_a_daemon_serves_the_database() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("m.db");
        let options = ImportOptions {
            batch_size: 1_000,
            max_batch_time: std::time::Duration::from_secs(600),
            shared_batch_time: std::time::Duration::ZERO,
            received_at: 0,
            ..ImportOptions::default()
        };
        let mut store = Store::open(&db).unwrap();
        let mut batches = 0;
        let summary = import(&mut store, Cursor::new(lines(10)), options.clone(), |_| {
            batches += 1
        })
        .unwrap();
        assert_eq!((summary.count(Outcome::Applied), batches), (10, 1));

        let daemon = ServeLock::acquire(&db, crate::lock::Role::Daemon).unwrap();
        let mut batches = 0;
        let input = lines(20);
        let summary = import(
            &mut store,
            Cursor::new(input.clone()),
            options.clone(),
            |_| batches += 1,
        )
        .unwrap();
        assert_eq!(summary.count(Outcome::Applied), 10);
        assert_eq!(summary.duplicates, 10);
        assert_eq!(
            batches, 20,
            "one line per batch (the end needs none of its own)"
        );
        drop(daemon);
    }

    /// A rebuild that takes the database while an import waits for another writer is
    /// waited out, as one there when the batch began is: the import stopped at the
    /// busy timeout (three imports and a rebuild at once; a black-box probe).
    #[test]
    fn a_rebuild_that_comes_while_the_import_waits_is_waited_out() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("m.db");
        let mut store = Store::open(&db).unwrap();
        let (held, release) = std::sync::mpsc::channel();
        let other = {
            let db = db.clone();
            std::thread::spawn(move || {
                // Another writer first (no lock of ours: the import waits the busy
                // timeout), then a rebuild's lock, kept past the busy timeout.
                let writer = Store::open(&db).unwrap();
                writer.conn().execute_batch("BEGIN IMMEDIATE").unwrap();
                held.send(()).unwrap();
                std::thread::sleep(std::time::Duration::from_secs(1));
                let rebuild = ServeLock::acquire(&db, crate::lock::Role::Rebuild).unwrap();
                std::thread::sleep(crate::store::BUSY_TIMEOUT + std::time::Duration::from_secs(1));
                writer.conn().execute_batch("COMMIT").unwrap();
                drop(rebuild);
            })
        };
        release.recv().unwrap();
        let summary = import(
            &mut store,
            Cursor::new(lines(3)),
            ImportOptions::default(),
            |_| {},
        )
        .expect("waited for the rebuild");
        assert_eq!(summary.count(Outcome::Applied), 3);
        other.join().unwrap();
    }

    /// An input that pauses (a pipe whose producer is slow) holds no transaction open:
    /// the lines read so far are committed when the batch's time is up, and while the
    /// input is awaited another writer (a daemon) gets the lock at once. (The
    /// transaction used to stay open until the next line arrived: a daemon beside
    /// `import -` got 503s for as long as the pipe was quiet.)
    #[test]
    fn an_input_that_pauses_holds_no_transaction_open() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("m.db");
        let (read, mut write) = std::io::pipe().unwrap();
        let text = lines(8);
        let (first, rest) = text.split_at(text.match_indices('\n').nth(4).unwrap().0 + 1);
        let (first, rest) = (first.to_owned(), rest.to_owned());
        let producer = std::thread::spawn(move || {
            std::io::Write::write_all(&mut write, first.as_bytes()).unwrap();
            std::thread::sleep(std::time::Duration::from_secs(3));
            std::io::Write::write_all(&mut write, rest.as_bytes()).unwrap();
        });
        let importer = {
            let db = db.clone();
            std::thread::spawn(move || {
                let mut store = Store::open(&db).unwrap();
                let options = ImportOptions {
                    max_batch_time: std::time::Duration::from_millis(200),
                    received_at: 0,
                    ..ImportOptions::default()
                };
                import(&mut store, std::io::BufReader::new(read), options, |_| {}).unwrap()
            })
        };
        std::thread::sleep(std::time::Duration::from_millis(1_500));
        let other = Store::open(&db).unwrap();
        let count: i64 = other
            .conn()
            .query_row("SELECT COUNT(*) FROM events", [], |row| row.get(0))
            .unwrap();
        assert_eq!(count, 5, "the lines read before the pause are committed");
        let started = std::time::Instant::now();
        other
            .conn()
            .execute_batch("BEGIN IMMEDIATE; COMMIT")
            .unwrap();
        assert!(
            started.elapsed() < std::time::Duration::from_millis(500),
            "the lock was held for {:?} while the input paused",
            started.elapsed()
        );
        producer.join().unwrap();
        let summary = importer.join().unwrap();
        assert_eq!(summary.count(Outcome::Applied), 8);
    }

    /// Beside a daemon, another writer gets the lock between two batches, even when
    /// the batches commit almost nothing (events the log already has) and the import
    /// begins the next one at once: the import pauses after each batch and writers
    /// poll for the lock every millisecond. (With SQLite's own busy handler, which
    /// backs off to a try every 100 ms, such a writer waited for the whole import.)
    #[test]
    fn a_daemon_gets_the_lock_between_batches_of_duplicates() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("m.db");
        let input = lines(2_000);
        let mut store = Store::open(&db).unwrap();
        import(
            &mut store,
            Cursor::new(input.to_owned()),
            ImportOptions::default(),
            |_| {},
        )
        .unwrap();
        let _daemon = ServeLock::acquire(&db, crate::lock::Role::Daemon).unwrap();
        let options = ImportOptions {
            shared_batch_time: std::time::Duration::from_millis(20),
            ..ImportOptions::default()
        };
        let stop = std::sync::atomic::AtomicBool::new(false);
        let waits = std::thread::scope(|scope| {
            scope.spawn(|| {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let summary = import(
                        &mut store,
                        Cursor::new(input.clone()),
                        options.clone(),
                        |_| {},
                    )
                    .unwrap();
                    assert_eq!(summary.duplicates, 2_000);
                }
            });
            let mut daemon = Store::open(&db).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(100));
            let mut waits = Vec::new();
            for i in 0..30 {
                let started = std::time::Instant::now();
                let body = format!(
                    r#"{{"id":"d{i}","type":"contact.created","payload":{{"id":"d{i}"}}}}"#
                );
                let applied = daemon.apply(body.as_bytes(), 0);
                waits.push((started.elapsed(), applied.map_err(|e| e.to_string())));
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            // Stopped before any assertion, so that a failure cannot leave the
            // importing thread (which the scope waits for) running.
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            waits
        });
        for (waited, applied) in &waits {
            assert!(applied.is_ok(), "after {waited:?}: {applied:?}");
        }
        let waits: Vec<_> = waits.into_iter().map(|(waited, _)| waited).collect();
        let longest = waits.iter().max().unwrap();
        // A batch is 20 ms (the waits are mostly well under 100 ms, but a machine busy
        // with other tests can miss a pause); the old handler's waits ran to its 5 s
        // timeout and failed.
        assert!(
            *longest < std::time::Duration::from_millis(2_500),
            "a writer waited {longest:?} beside the import: {waits:?}"
        );
    }

    /// A byte order mark at the start of the file is not part of the first event.
    #[test]
    fn a_leading_byte_order_mark_is_skipped() {
        let mut store = Store::open_in_memory().unwrap();
        let mut run = |input: &str| {
            import(
                &mut store,
                Cursor::new(input.to_owned()),
                ImportOptions::default(),
                |_| {},
            )
            .unwrap()
        };
        let input = format!("\u{feff}{}", lines(2));
        let summary = run(&input);
        assert_eq!((summary.count(Outcome::Applied), summary.malformed), (2, 0));
        assert_eq!(summary.bytes, input.len() as u64);
        // Only at the start: elsewhere it is a malformed line.
        let summary = run(&format!("{}\u{feff}{}", lines(1), lines(1)));
        assert_eq!(summary.malformed, 1);
    }

    /// A line over the limit is reported as malformed with its line number and size,
    /// and skipped without being held; the lines around it are imported, and the byte
    /// count still covers the whole input (also a last line without a line end).
    #[test]
    fn a_line_over_the_limit_is_skipped_not_held() {
        let mut store = Store::open_in_memory().unwrap();
        let long = format!("{{\"id\":\"{}\"}}\n", "x".repeat(5_000));
        let input = format!("{}{long}{}{}", lines(2), lines(3), "y".repeat(3_000));
        let options = ImportOptions {
            max_line_bytes: 1_000,
            ..ImportOptions::default()
        };
        let summary = import(&mut store, Cursor::new(input.clone()), options, |_| {}).unwrap();
        assert_eq!(summary.count(Outcome::Applied), 3, "e0, e1, then e2");
        assert_eq!(summary.duplicates, 2, "lines(3) repeats e0 and e1");
        assert_eq!(summary.malformed, 2);
        assert_eq!(summary.too_long, 2, "the last too, with no line end");
        assert_eq!(summary.first_malformed[0].line, 3);
        assert!(
            summary.first_malformed[0]
                .error
                .contains("longer than 1000 bytes: skipped (5010 bytes read)"),
            "{:?}",
            summary.first_malformed
        );
        assert_eq!(summary.first_malformed[1].line, 7);
        assert_eq!(summary.lines, 7);
        assert_eq!(summary.bytes, input.len() as u64);
        // A line of exactly the limit (its line end not counted) is read.
        let exact = format!(
            "{}\n",
            r#"{"id":"q","type":"contact.created","payload":{"id":"q"}}"#
        );
        let options = ImportOptions {
            max_line_bytes: exact.len() - 1,
            ..ImportOptions::default()
        };
        let summary = import(
            &mut store,
            Cursor::new(exact.clone()),
            options.clone(),
            |_| {},
        )
        .unwrap();
        assert_eq!((summary.count(Outcome::Applied), summary.malformed), (1, 0));
        // Whatever ends it: CRLF, or nothing at the end of the input; one byte more is
        // too long.
        let body = exact.trim_end();
        for (input, applied, malformed) in [
            (format!("{body}\r\n").replace("\"q\"", "\"r\""), 1, 0),
            (body.replace("\"q\"", "\"s\""), 1, 0),
            (format!("{body} \r\n"), 0, 1),
            (format!("{body} "), 0, 1),
        ] {
            let summary = import(
                &mut store,
                Cursor::new(input.clone()),
                options.clone(),
                |_| {},
            )
            .unwrap();
            assert_eq!(
                (summary.count(Outcome::Applied), summary.malformed),
                (applied, malformed),
                "{input:?}"
            );
        }
        // The largest limits took every line for too long (the room for a line end
        // wrapped around).
        for max_line_bytes in [usize::MAX, usize::MAX - 1] {
            let options = ImportOptions {
                max_line_bytes,
                ..ImportOptions::default()
            };
            let line = exact.replace("\"q\"", &format!("\"m{max_line_bytes}\""));
            let summary = import(&mut store, Cursor::new(line.clone()), options, |_| {}).unwrap();
            assert_eq!((summary.count(Outcome::Applied), summary.malformed), (1, 0));
        }
    }

    /// The page cache is raised for the import and put back after.
    #[test]
    fn the_cache_size_is_restored() {
        let mut store = Store::open_in_memory().unwrap();
        store.set_cache_kib(1_000).unwrap();
        import(
            &mut store,
            Cursor::new(lines(3)),
            ImportOptions::default(),
            |_| {},
        )
        .unwrap();
        assert_eq!(store.cache_kib().unwrap(), 1_000);
    }

    /// A read error stops the import after the batches already committed; the line
    /// number is that of the last line read whole.
    #[test]
    fn a_read_error_names_the_last_line_read() {
        let mut store = Store::open_in_memory().unwrap();
        let input = failing_after(&lines(250));
        let options = ImportOptions {
            batch_size: 100,
            ..ImportOptions::default()
        };
        let mut committed = Vec::new();
        let err = import(&mut store, input, options, |s| committed.push(s.events())).unwrap_err();
        let ImportError::Read { line, .. } = err else {
            panic!("{err}")
        };
        assert_eq!(line, 250);
        // Every line read before the error is committed, the half batch it was met in
        // too (and reported as committed).
        assert_eq!(crate::store::Log::count(store.conn()).unwrap(), 250);
        assert_eq!(committed, [100, 200, 250]);
    }

    /// Line numbers, byte counts and outcomes stay exact across the parsing thread's
    /// chunks and the batches: malformed and blank lines on either side of chunk
    /// boundaries, and more lines than are ever read ahead.
    #[test]
    fn lines_are_numbered_across_chunks_and_batches() {
        let bad = [1u64, 63, 64, 65, 256, 257, 258, 999, 1000];
        let blank = [2u64, 128, 129, 500];
        let mut input = String::new();
        for number in 1..=1000u64 {
            if bad.contains(&number) {
                input.push_str("{not json\n");
            } else if blank.contains(&number) {
                input.push_str("   \n");
            } else {
                input.push_str(&format!(
                    r#"{{"id":"e{number}","type":"contact.created","payload":{{"id":"c{number}"}}}}"#
                ));
                input.push('\n');
            }
        }
        let mut store = Store::open_in_memory().unwrap();
        let options = ImportOptions {
            batch_size: 100,
            ..ImportOptions::default()
        };
        let mut seen = Vec::new();
        let summary = import(&mut store, Cursor::new(input.clone()), options, |s| {
            seen.push((s.lines, s.events() + s.malformed))
        })
        .unwrap();
        assert_eq!(summary.lines, 1000);
        assert_eq!(summary.bytes, input.len() as u64);
        assert_eq!(summary.malformed, bad.len() as u64);
        let lines: Vec<u64> = summary.first_malformed.iter().map(|m| m.line).collect();
        assert_eq!(lines, bad);
        assert_eq!(
            summary.count(Outcome::Applied),
            1000 - (bad.len() + blank.len()) as u64
        );
        // Each batch holds 100 non-blank lines (the last the 96 left); progress saw
        // them in order.
        assert!(seen.windows(2).all(|w| w[0].0 < w[1].0));
        let counts: Vec<u64> = seen.iter().map(|(_, n)| *n).collect();
        let mut expected: Vec<u64> = (1..=9).map(|k| k * 100).collect();
        expected.push(996);
        assert_eq!(counts, expected);
    }

    /// An import that fails (here, a database another program keeps locked) says so
    /// at once, while its input stays open (a quiet pipe: the import waited for it to
    /// end, deaf to Ctrl-C; a review).
    #[test]
    fn an_error_is_returned_while_the_input_stays_open() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("m.db");
        let mut store = Store::open(&db).unwrap();
        let other = Store::open(&db).unwrap();
        other.conn().execute_batch("BEGIN IMMEDIATE").unwrap();
        let (read, mut write) = std::io::pipe().unwrap();
        std::io::Write::write_all(&mut write, lines(1).as_bytes()).unwrap();
        let (done, finished) = std::sync::mpsc::channel();
        let importer = std::thread::spawn(move || {
            let result = import(
                &mut store,
                std::io::BufReader::new(read),
                ImportOptions::default(),
                |_| {},
            );
            done.send(result.map_err(|e| e.to_string())).unwrap();
        });
        let got = finished.recv_timeout(crate::store::BUSY_TIMEOUT * 3);
        drop(write);
        importer.join().unwrap();
        assert!(
            matches!(&got, Ok(Err(e)) if e.contains("lock")),
            "no error while the input stayed open: {got:?}"
        );
    }

    /// A stop while a batch waits for more input is seen within `STOP_POLL`, not at
    /// the batch's deadline (2 s; a review).
    #[test]
    fn a_stop_while_a_batch_waits_for_input_is_seen_within_stop_poll() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("m.db")).unwrap();
        let (read, mut write) = std::io::pipe().unwrap();
        std::io::Write::write_all(&mut write, lines(1).as_bytes()).unwrap();
        let (stop, options) = stoppable(50_000);
        let stopper = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(300));
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            let at = std::time::Instant::now();
            std::thread::sleep(std::time::Duration::from_secs(4));
            drop(write);
            at
        });
        let mut told = None;
        let summary = import(&mut store, std::io::BufReader::new(read), options, |s| {
            if s.interrupted {
                told = Some(std::time::Instant::now());
            }
        })
        .unwrap();
        let stopped_at = stopper.join().unwrap();
        assert!(summary.interrupted);
        assert_eq!(summary.events(), 1, "the line read is kept");
        let latency = told.unwrap().saturating_duration_since(stopped_at);
        assert!(
            latency < STOP_POLL + std::time::Duration::from_millis(500),
            "the stop was told {latency:?} after it was set"
        );
    }

    /// A stop while another program holds the write lock ends the wait at once (it
    /// was heeded at the end of the busy timeout, 5 s; a re-probe).
    #[test]
    fn a_stop_ends_a_wait_for_another_programs_lock() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("m.db");
        let mut store = Store::open(&db).unwrap();
        let other = Store::open(&db).unwrap();
        other.conn().execute_batch("BEGIN IMMEDIATE").unwrap();
        let (stop, options) = stoppable(10);
        let stopper = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(300));
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            std::time::Instant::now()
        });
        let summary = import(&mut store, Cursor::new(lines(3)), options, |_| {}).unwrap();
        let latency = stopper.join().unwrap().elapsed();
        drop(other);
        assert!(summary.interrupted);
        assert_eq!(summary.events(), 0);
        assert!(
            latency < std::time::Duration::from_secs(1),
            "the stop was heeded {latency:?} after it was set"
        );
    }
}
