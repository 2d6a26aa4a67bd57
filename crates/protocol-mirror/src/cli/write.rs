//! The commands that write a database: import, rebuild and migrate write the replica;
//! backup reads it (read-only) and writes its copy.

use std::io::{BufRead, BufReader, IsTerminal};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use protocol_mirror::import::{
    ImportError, ImportOptions, ImportSummary, import as import_stream, import_into_new,
};
use protocol_mirror::rebuild::{LogCopy, RebuildSummary};
use protocol_mirror::serve::writer::DatabaseFile;
use protocol_mirror::store::{self, SCHEMA_VERSION, Store, StoreError};

use super::interrupt::Interrupt;

#[derive(clap::Args)]
pub(crate) struct ImportArgs {
    /// The NDJSON file, or `-` for standard input.
    file: PathBuf,
    /// Most events per transaction. A transaction also commits after 2 s, or after
    /// about 0.5 s while a daemon serves the database (a webhook then waits for one
    /// such transaction, its commit included, before its own).
    #[arg(long, value_name = "N", default_value_t = ImportOptions::default().batch_size,
          value_parser = super::whole_number::<usize>(1, usize::MAX as u64))]
    batch_size: usize,
    /// The longest line read, in bytes; a longer one is reported as malformed and
    /// skipped (so a file without line ends is never read whole into memory).
    #[arg(long, value_name = "N", default_value_t = protocol_mirror::import::DEFAULT_MAX_LINE_BYTES,
          value_parser = super::whole_number::<usize>(1, usize::MAX as u64))]
    max_line_bytes: usize,
}

/// A progress bar on a terminal (stderr), nothing otherwise.
fn progress_bar(len: Option<u64>, template: &str) -> Option<ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = match len {
        Some(len) => ProgressBar::new(len),
        None => ProgressBar::no_length(),
    };
    bar.set_style(
        ProgressStyle::with_template(template)
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    Some(bar)
}

pub(crate) fn import(db: &Path, args: ImportArgs) -> anyhow::Result<ExitCode> {
    // Before the input is read, and before an import into a new database says it
    // stopped: nothing was begun.
    store::refuse_companion(db)?;
    let (input, len): (Box<dyn BufRead + Send>, Option<u64>) = if args.file == Path::new("-") {
        let stdin = super::stdin::announced("events, one per line,");
        (Box::new(BufReader::new(stdin)), None)
    } else {
        let (file, len) = super::open_events_file(&args.file, "import")?;
        (Box::new(BufReader::with_capacity(1 << 16, file)), len)
    };
    // A database that does not exist yet is built beside and put in place whole (no
    // journal, no syncs until the end); one that exists may be served meanwhile. A
    // symbolic link to none names a new one (it was taken for a database).
    let new = protocol_mirror::store::through_links(db)
        .symlink_metadata()
        .is_err();
    if !new {
        writable(db)?;
    }
    let mut store = if new { None } else { Some(Store::open(db)?) };
    // The file opened, watched as the daemon watches its own: one removed or replaced
    // under the import took its events, and the import said they were imported (a
    // black-box probe). Not when that cannot be told (a folder that cannot be read).
    let opened = store.as_ref().and_then(|_| DatabaseFile::of(db));
    let gone = || opened.as_ref().is_some_and(DatabaseFile::gone);
    if let Some(note) = store.as_ref().and_then(Store::migration_note) {
        super::note!("{note}");
    }
    let bar = progress_bar(
        len,
        if len.is_some() {
            "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {msg} (ETA {eta})"
        } else {
            // Standard input: no size to measure against.
            "{spinner} [{elapsed_precise}] {bytes} read, {msg}"
        },
    );
    let started = std::time::Instant::now();
    let interrupt = Interrupt::install();
    let options = ImportOptions {
        batch_size: args.batch_size,
        max_line_bytes: args.max_line_bytes,
        stop: Some(interrupt.flag()),
        ..ImportOptions::default()
    };
    // What the last committed batch had imported: kept when a later batch fails.
    let committed = std::cell::Cell::new(0u64);
    let progress = |s: &ImportSummary| {
        committed.set(s.events());
        if let Some(bar) = &bar {
            bar.set_position(s.bytes);
            let rate = s.events() as f64 / started.elapsed().as_secs_f64().max(1e-3);
            // Told at each commit (every --batch-size events, or 2 s): said, so that a
            // count that moves by 50,000 at a time does not look stuck.
            bar.set_message(format!("{} events committed, {rate:.0}/s", s.events()));
        }
        if s.interrupted {
            // Committed (and a new database put in place): said, and the end.
            if let Some(bar) = &bar {
                bar.finish_and_clear();
            }
            if let Some(failed) = &s.stop_failed {
                super::note!(
                    "protocol-mirror: {}",
                    super::escaped_in_one_line(&format!(
                        "{}: {}",
                        unfinished_import(db, failed.name_taken),
                        failed.message
                    ))
                );
                std::process::exit(3);
            }
            report_import(s, started);
            if let Some(file) = opened.as_ref().filter(|_| gone()) {
                let lost = lost_its_file(db, file, None, s.events());
                super::note!("protocol-mirror: {}", super::escaped_in_one_line(&lost));
            }
            std::process::exit(130);
        }
    };
    let summary = match &mut store {
        Some(store) => import_stream(store, input, options, progress),
        None => import_into_new(db, input, options, progress),
    };
    let summary = match summary {
        // "database is locked" alone said nothing of who or what to do. Beside a
        // daemon, the import waited for its writer for a minute; otherwise another
        // import, a backfill, a migration or another program held it past the busy
        // timeout (a rebuild holds the daemon's lock: the arm before).
        Err(ImportError::Store(e))
            if e.is_busy() && protocol_mirror::lock::ServeLock::is_held(db) =>
        {
            use protocol_mirror::lock::{Role, ServeLock};
            let pid = ServeLock::holder(db).unwrap_or_else(|| "unknown".into());
            let holder = match ServeLock::holder_role(db) {
                Some(Role::Daemon) => "its daemon",
                Some(Role::Rebuild) => "a rebuild",
                _ => "its daemon, or a rebuild",
            };
            bail!(
                "the protocol-mirror process holding the database (pid {pid}: {holder}) kept \
                 it for over {} s: import again once it is done (events already imported \
                 are skipped as duplicates)",
                protocol_mirror::import::DAEMON_WAIT.as_secs()
            )
        }
        Err(ImportError::Store(e)) if e.is_busy() => bail!(
            "the database stayed locked by another writer (another import, a backfill, \
             a migration, or another program): import again once it ends (events already \
             imported are skipped as duplicates)"
        ),
        // A full disk partway: what was committed before stays (a database being
        // built is removed, and there is no such count for it).
        Err(e) if store.is_some() && committed.get() > 0 => {
            let kept = match (&opened, &store) {
                (Some(file), Some(store)) if gone() => {
                    lost_its_file(db, file, Some(store), committed.get())
                }
                _ => format!(
                    "the import stopped after {} events, which are kept (importing the \
                     file again skips them as duplicates)",
                    committed.get()
                ),
            };
            return Err(anyhow::Error::new(e).context(kept));
        }
        // Before any commit (a full disk, at once): said so, and where (it said only
        // "saving a row: database or disk is full").
        Err(e) if store.is_some() => {
            return Err(anyhow::Error::new(e).context(format!(
                "the import into {} stopped before any event was kept",
                db.display()
            )));
        }
        // Kept out before it began: nothing of its own was built.
        Err(e @ ImportError::Store(StoreError::Building(_) | StoreError::InUse(_))) => {
            return Err(e.into());
        }
        // A read error: the database built so far is put in place, if it holds any
        // event (it said the database was removed, with 19 events in it).
        Err(e @ ImportError::Read { .. }) if committed.get() > 0 => {
            return Err(anyhow::Error::new(e).context(format!(
                "the import into {} stopped after {} events, which are kept (importing \
                 the input again skips them as duplicates)",
                db.display(),
                committed.get()
            )));
        }
        // Said as it is: a name taken says where the work is, and a database that
        // could not be removed (a folder that takes no removals) is left (it said
        // "removed" of both; a probe).
        Err(e @ (ImportError::Store(_) | ImportError::Read { .. })) => {
            let name_taken = matches!(e, ImportError::Store(StoreError::NameTaken { .. }));
            return Err(anyhow::Error::new(e).context(unfinished_import(db, name_taken)));
        }
        other => other?,
    };
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    if let (Some(file), Some(store)) = (&opened, &store)
        && gone()
    {
        bail!("{}", lost_its_file(db, file, Some(store), summary.events()));
    }
    // A terminal's Ctrl-C also stops the program feeding a pipe: the input may end
    // before the import sees the signal, and it is still an interrupted import.
    let mut summary = summary;
    summary.interrupted |= interrupt.is_set();
    if !summary.interrupted && summary.events() == 0 && summary.malformed > 0 {
        // Not one event envelope: the wrong file (compressed, binary, not NDJSON), which
        // a script must be able to tell from a file with a few bad lines. One line: a
        // summary of "0 events imported" before it contradicted it.
        let first = summary
            .first_malformed
            .first()
            .map(|m| format!("; line {}: {}", m.line, m.error))
            .unwrap_or_default();
        // Lines too long to read may be events: said so, not asked whether the file
        // is NDJSON at all (a probe).
        let question = if summary.too_long == summary.malformed {
            "for longer lines, raise --max-line-bytes"
        } else {
            "is it NDJSON of Protocol events?"
        };
        bail!(
            "no line of {} was an event envelope ({} malformed{first}): {question}",
            args.file.display(),
            summary.malformed
        );
    }
    report_import(&summary, started);
    if summary.interrupted {
        return Ok(ExitCode::from(130));
    }
    Ok(ExitCode::SUCCESS)
}

/// What an import says of `events` it imported into `db`, whose `file` stopped being
/// the database while it ran (it said they were imported: a black-box probe), having
/// first done what the daemon does, when it still has the database (`store`): the
/// log copied into a file moved away, which SQLite's close does not do (its last
/// events stayed in a `-wal` beside the name, which the next database there took for
/// its own: a probe), and its `-wal` and `-shm` taken from beside the name; nothing
/// copied into an emptied file.
fn lost_its_file(db: &Path, file: &DatabaseFile, store: Option<&Store>, events: u64) -> String {
    let name = db.display();
    let companions = || {
        let real = store::through_links(db);
        format!(
            "{} and {}",
            protocol_mirror::beside(&real, "-wal").display(),
            protocol_mirror::beside(&real, "-shm").display()
        )
    };
    if file.emptied() {
        if let Some(store) = store {
            let _ = store.keep_log_at_close();
        }
        return format!(
            "{name} was emptied while the import ran: the events it held, and the {events} \
             imported, are gone from it; move {} away (they belong to the emptied file), \
             then restore it from a backup",
            companions()
        );
    }
    let Some(store) = store else {
        // Interrupted: the log cannot be copied here (the import has the database).
        return format!(
            "{name} was removed, replaced or moved away while the import ran (or its -wal \
             or -shm were): the last of the {events} events it imported are in {}: if the \
             file was moved, put them beside it, named as it is with -wal and -shm, before \
             anything opens it; else move them away before anything opens {name}",
            companions()
        );
    };
    file.disown_at_stop(store);
    if file.log_lost() {
        return format!(
            "the -wal or -shm of {name} was removed or replaced while the import ran: the \
             import copied its log into {name}, which holds the {events} events it imported; \
             what another process wrote to the database meanwhile may be lost"
        );
    }
    format!(
        "{name} was removed, replaced or moved away while the import ran: the {events} \
         events it imported went into the file that was; import again into the database \
         now at that name (events it holds already are skipped as duplicates)"
    )
}

/// What an import did, on stderr.
fn report_import(summary: &ImportSummary, started: std::time::Instant) {
    for malformed in &summary.first_malformed {
        super::note!("line {}: {}", malformed.line, malformed.error);
    }
    if summary.malformed > summary.first_malformed.len() as u64 {
        super::note!(
            "... and {} more malformed lines",
            summary.malformed - summary.first_malformed.len() as u64
        );
    }
    let outcomes: Vec<String> = summary
        .outcomes
        .iter()
        .map(|(outcome, n)| format!("{n} {outcome}"))
        .collect();
    let plural = |n: u64| if n == 1 { "" } else { "s" };
    super::note!(
        "{}imported {} event{} in {:.1}s: {}; {} duplicate; {} malformed line{} skipped",
        if summary.interrupted {
            "interrupted: "
        } else {
            ""
        },
        summary.events(),
        plural(summary.events()),
        started.elapsed().as_secs_f64(),
        if outcomes.is_empty() {
            "none new".to_owned()
        } else {
            outcomes.join(", ")
        },
        summary.duplicates,
        summary.malformed,
        plural(summary.malformed)
    );
}

/// Refuses a database this user cannot write (a read-only file, WAL or `-shm`) before
/// any work, naming the file and the fix, as `serve` does: the first write failed with
/// SQLite's "attempt to write a readonly database" alone. Nothing is written, so a
/// busy database is left to the command's own wait (a trial commit waited out the
/// busy timeout first: a rebuild beside a lock took twice its 5 s). Called before the
/// database is opened ([`store::check_permissions`] says why).
pub(crate) fn writable(db: &Path) -> anyhow::Result<()> {
    store::check_permissions(db).with_context(|| format!("{} cannot be written", db.display()))
}

pub(crate) fn rebuild(db: &Path) -> anyhow::Result<ExitCode> {
    store::present(db)?;
    writable(db)?;
    let mut store = Store::open(db)?;
    // Said as every writer says it (an upgrade probe: the file was at schema 14
    // without a word, and the older build refused it from then on); the rebuild that
    // follows is what the other writers' note advises.
    let migrated_from = store.migrated_from();
    if let Some(from) = migrated_from {
        super::note!(
            "migrated {} from schema version {from} to {SCHEMA_VERSION}",
            db.display()
        );
    }
    // A rebuild stopped or failed after the migration leaves the database at this
    // schema with the older rules' replica, and no later command would say so (the
    // migration was done): said now (an upgrade probe).
    let still = match migrated_from {
        Some(from) if store::rebuild_due(store.conn()) => format!(
            "; the migration from schema version {from} stays, so the replica still \
             follows the older rules until a rebuild ends"
        ),
        _ => String::new(),
    };
    let started = std::time::Instant::now();
    let rebuilt =
        with_rebuild_progress(|progress| protocol_mirror::rebuild::rebuild(&mut store, progress));
    let summary = match rebuilt {
        Err(protocol_mirror::rebuild::RebuildError::Store(StoreError::Interrupted)) => {
            super::note!(
                "interrupted: the rebuild was rolled back (the replica is as it was{still})"
            );
            return Ok(ExitCode::from(130));
        }
        Err(protocol_mirror::rebuild::RebuildError::Store(e)) if e.is_busy() => bail!(
            "the database stayed locked by another writer past {} s (an import, a \
             migration, or another program): rebuild once it ends (the replica is as it \
             was{still})",
            store::BUSY_TIMEOUT.as_secs()
        ),
        // Nothing was begun: the error says all.
        Err(protocol_mirror::rebuild::RebuildError::Store(e @ StoreError::LogDamaged { .. })) => {
            return Err(e.into());
        }
        Err(protocol_mirror::rebuild::RebuildError::Store(e)) => {
            return Err(anyhow::Error::new(e).context(format!(
                "the rebuild failed and was rolled back (the replica is as it was{still})"
            )));
        }
        other => other?,
    };
    // Counted: log entries whose outcome, error or cascade count changed (a probe
    // counted 12 outcomes where it said 16: four deletes changed their cascade count).
    let changed = summary.changed_outcomes;
    // And the tables whose count of rows changed (a rebuild after an upgrade removed
    // messages an older version had kept, and said only "0 log entries changed").
    let counts = if summary.changed_counts.is_empty() {
        "; every table holds as many rows as before".to_owned()
    } else {
        let changes: Vec<String> = summary
            .changed_counts
            .iter()
            .map(|(table, before, after)| format!("{table} {before} -> {after}"))
            .collect();
        format!("; rows: {}", changes.join(", "))
    };
    super::note!(
        "rebuilt the replica from {} events in {:.1}s ({changed} log entr{} changed: an \
         outcome, error or cascade count{counts})",
        summary.events,
        started.elapsed().as_secs_f64(),
        if changed == 1 { "y" } else { "ies" }
    );
    Ok(ExitCode::SUCCESS)
}

/// Runs a rebuild with a bar of the events replayed on a terminal, Ctrl-C as its stop,
/// the bar cleared once it ends.
fn with_rebuild_progress<T>(
    rebuild: impl FnOnce(&mut dyn FnMut(u64, u64) -> ControlFlow<()>) -> T,
) -> T {
    let bar = progress_bar(
        Some(0),
        "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} events (ETA {eta})",
    );
    let interrupt = Interrupt::install();
    let result = rebuild(&mut |done, total| {
        if let Some(bar) = &bar {
            bar.set_length(total);
            bar.set_position(done);
        }
        if interrupt.is_set() {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    });
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    result
}

/// `rebuild --into`: the replica of `db`'s event log, built in the new database
/// `into`, `db` left as it is; with `salvage`, from the entries that can be read.
pub(crate) fn rebuild_into(db: &Path, into: &Path, salvage: bool) -> anyhow::Result<ExitCode> {
    refuse_as_new_database(into, "rebuild --into")?;
    // Its lock's file is made beside it, `.lock` longer (a name of 251 bytes, which a
    // backup takes, failed to lock: a probe).
    let longest = store::MAX_NAME_BYTES - ".lock".len();
    if let Some(name) = into.file_name().filter(|name| name.len() > longest) {
        return Err(super::UsageError(format!(
            "refusing to write {}: its name is {} bytes, and its lock file needs room for \
             `.lock` beside it (at most {longest})",
            into.display(),
            name.len()
        ))
        .into());
    }
    let source = Store::open_to_copy(db)?;
    for left in store::remove_stale_backup_copies(into) {
        super::note!(
            "protocol-mirror: removed {}, the partial database a rebuild stopped before it \
             ended left",
            left.display()
        );
    }
    let started = std::time::Instant::now();
    let copy = match salvage {
        true => LogCopy::Salvage,
        false => LogCopy::Whole,
    };
    let built = with_rebuild_progress(|progress| {
        protocol_mirror::rebuild::rebuild_into(&source, into, copy, progress)
    });
    let summary = match built {
        Err(protocol_mirror::rebuild::RebuildError::Store(StoreError::Interrupted)) => {
            super::note!("interrupted: nothing was made at {}", into.display());
            return Ok(ExitCode::from(130));
        }
        Err(protocol_mirror::rebuild::RebuildError::Store(error)) if error.is_damage() => {
            return Err(anyhow::anyhow!(
                "cannot rebuild {} into {} (nothing was made there): {}",
                db.display(),
                into.display(),
                unreadable_log(db, into, salvage, &error)
            ));
        }
        Err(error) => {
            return Err(anyhow::Error::new(error).context(format!(
                "cannot rebuild {} into {} (nothing was made there)",
                db.display(),
                into.display()
            )));
        }
        Ok(summary) => summary,
    };
    let lost = summary.lost_entries();
    super::note!(
        "rebuilt the replica of {} into {} from its {} events{} in {:.1}s ({} is left as it \
         was)",
        db.display(),
        into.display(),
        summary.events,
        if lost > 0 { " that could be read" } else { "" },
        started.elapsed().as_secs_f64(),
        db.display(),
    );
    if lost > 0 {
        super::note!("{}", salvage_report(into, &summary, lost));
    } else if salvage {
        super::note!("every entry of its event log could be read");
    }
    Ok(ExitCode::SUCCESS)
}

/// Why a rebuild into `into` could not read `db`'s event log, and what to do: a
/// salvage (it named `rebuild --into` again: a session's note), or, when the salvage
/// failed too, a backup or `.recover`.
fn unreadable_log(db: &Path, into: &Path, salvage: bool, error: &StoreError) -> String {
    if salvage {
        return format!(
            "its event log cannot be read even in part ({error}): restore {} from a \
             backup, or `{}` may save its rows into a new file",
            db.display(),
            store::recover_command(db)
        );
    }
    format!(
        "its event log is damaged ({error}): `{} --salvage` copies every entry that can \
         still be read, and names those that cannot; or restore {} from a backup",
        store::rebuild_into_command_to(db, into),
        db.display()
    )
}

/// What a salvage left out of the rebuild into `into`: how many entries, which
/// sequence numbers (the first ten ranges), and how to heal the replica.
fn salvage_report(into: &Path, summary: &RebuildSummary, lost: u64) -> String {
    const SHOWN: usize = 10;
    let mut ranges: Vec<String> = summary
        .lost
        .iter()
        .take(SHOWN)
        .map(|range| match range.start() == range.end() {
            true => range.start().to_string(),
            false => format!("{}-{}", range.start(), range.end()),
        })
        .collect();
    if summary.lost.len() > SHOWN {
        ranges.push(format!("and {} more ranges", summary.lost.len() - SHOWN));
    }
    let (entries, are) = match lost {
        1 => ("entry", "is"),
        _ => ("entries", "are"),
    };
    let changed = match summary.changed_outcomes {
        0 => String::new(),
        1 => "; one later event's outcome differs from the one logged, as a result".into(),
        n => format!("; {n} later events' outcomes differ from those logged, as a result"),
    };
    format!(
        "protocol-mirror: warning: {lost} {entries} of the event log could not be read, and \
         {are} not in {}: \
         sequence numbers {}{changed}. What they changed is missing from its replica: \
         `protocol-mirror --db={} backfill` loads the account's objects as they are now",
        into.display(),
        ranges.join(", "),
        store::shell_quoted(&into.display().to_string()),
    )
}

/// What became of a new database an import into `db` was building when it failed:
/// said as it is (it said "removed" of a database left in place). A name taken is
/// explained by its error, which says where the work is.
fn unfinished_import(db: &Path, name_taken: bool) -> String {
    let building = store::importing_path(db);
    if name_taken {
        format!("the import into {} stopped", db.display())
    } else if building.exists() {
        format!(
            "the import into {} stopped; the database it was building is left in {} \
             (importing again starts it over)",
            db.display(),
            building.display()
        )
    } else {
        format!(
            "the import into {} stopped; the database it was building was removed, so \
             nothing was kept",
            db.display()
        )
    }
}

/// Refuses `file` as the new database `command` makes (`backup`, `rebuild --into`),
/// as a usage mistake: `-`, a folder, a name taken, or one SQLite cannot use.
fn refuse_as_new_database(file: &Path, command: &str) -> Result<(), super::UsageError> {
    // A database is a file SQLite writes page by page: not a stream (`-` made a file
    // of that name), and not a folder (which was "refusing to overwrite").
    if file.as_os_str() == "-" {
        return Err(super::UsageError(format!(
            "{command} writes a new file, not standard output: name it, e.g. `{command} \
             mirror-copy.db` (a file named `-`: `{command} ./-`)"
        )));
    }
    if file.is_dir() || super::names_a_folder(file) {
        return Err(super::UsageError(format!(
            "{} is a folder: name the new file in it, e.g. `{command} {}`",
            file.display(),
            file.join("mirror-copy.db").display()
        )));
    }
    // A name taken (a symbolic link too, even a dangling one) is the same kind of
    // mistake: nothing was written and the command line names the fix.
    if file.symlink_metadata().is_ok() {
        return Err(super::UsageError(format!(
            "refusing to overwrite {}: it exists (name a new file, or remove it first)",
            file.display()
        )));
    }
    // A name SQLite keeps beside a database, one with such a file beside it, or one
    // too long for them (`store::unusable_database_name`).
    if let Some(reason) = store::unusable_database_name(file) {
        return Err(super::UsageError(format!(
            "refusing to write {}: {reason}",
            file.display(),
        )));
    }
    Ok(())
}

pub(crate) fn backup(db: &Path, file: &Path, check: bool) -> anyhow::Result<ExitCode> {
    refuse_as_new_database(file, "backup")?;
    let store = Store::open_to_copy(db)?;
    // A replica that lost tables is copied as it is (to keep what it has), and said to
    // be so: its copy lacks them too (it was "cannot back up to COPY" when the table
    // lost was one of the full-text index's, which the copy's check could not read,
    // and nothing at all for another).
    let lost = store.lost_tables()?;
    for left in store::remove_stale_backup_copies(file) {
        super::note!(
            "protocol-mirror: removed {}, the partial copy a backup stopped before it ended left",
            left.display()
        );
    }
    let bar = progress_bar(Some(0), "{spinner} {wide_bar} {pos}/{len} pages {msg}");
    let interrupt = Interrupt::install();
    let copied = store.backup(file, check, |done, total| {
        if let Some(bar) = bar.as_ref().filter(|_| total > 0) {
            bar.set_length(total);
            bar.set_position(done);
            if check && done == total {
                bar.set_message("checking the copy");
            }
        }
        if interrupt.is_set() {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    });
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    if let Err(StoreError::Interrupted) = copied {
        super::note!("interrupted: no copy was made");
        return Ok(ExitCode::from(130));
    }
    let as_damaged = || {
        anyhow::Error::new(StoreError::LostTables {
            path: db.to_owned(),
            tables: lost.clone(),
        })
        .context(format!(
            "backed up {} to {}, but the copy lacks the tables the database lost",
            db.display(),
            file.display()
        ))
    };
    copied.map_err(|error| match error {
        _ if !lost.is_empty() && file.exists() => as_damaged(),
        // Said of the database, not as the copy's own damage, whose advice was to
        // restore the copy from a backup (a probe).
        StoreError::Damaged { problem, .. } => anyhow::anyhow!(
            "the copy of {} was written to {} but is not sound ({problem}), so the database \
             itself is probably damaged: restore it from an earlier backup; or, if its \
             event log can be read, rebuild its replica into a new file: `{}`; or `{}` may \
             save the copy's rows into a new file (the copy is kept)",
            db.display(),
            file.display(),
            store::rebuild_into_command(db),
            store::recover_command(file)
        ),
        // Name the copy: "database or disk is full" is about its disk.
        other @ StoreError::Sqlite { .. } => {
            anyhow::Error::new(other).context(format!("cannot back up to {}", file.display()))
        }
        other => other.into(),
    })?;
    if !lost.is_empty() {
        return Err(as_damaged());
    }
    super::note!("backed up {} to {}", db.display(), file.display());
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn migrate(db: &Path) -> anyhow::Result<ExitCode> {
    store::refuse_read_only_filesystem(db)?;
    let before = db
        .exists()
        .then(|| store::schema_version_of(db))
        .transpose()?;
    let store = Store::open(db)?;
    if let Some(note) = super::leftover_note(&store) {
        super::note!("protocol-mirror: {note}");
    }
    match (store.migration_note(), before) {
        (Some(note), _) => super::note!("{note}"),
        (None, Some(v)) if v == SCHEMA_VERSION => {
            super::note!(
                "{} is already at schema version {SCHEMA_VERSION}",
                db.display()
            );
            if let Some(note) = store.unrebuilt_note()? {
                super::note!("{note}");
            }
        }
        // Migrated by another process between that read and this open: said as the
        // store says it, the advice included (it was left out).
        (None, Some(v)) if v > 0 => {
            super::note!("{}", store::migrated_elsewhere_note(store.conn(), db, v))
        }
        (None, _) => super::note!(
            "created {} at schema version {SCHEMA_VERSION}",
            db.display()
        ),
    }
    Ok(ExitCode::SUCCESS)
}
