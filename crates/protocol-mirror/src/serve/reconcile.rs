//! `serve --reconcile-every`: a backfill pass in a background thread, at an interval,
//! writing through the daemon's writer thread (so webhooks keep flowing: each page is
//! a short transaction of its own between webhook batches).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::Connection;

use super::metrics::{Metrics, Pass, Reconciled};
use super::writer::Writer;
use crate::backfill::client::{Client, ClientConfig};
use crate::backfill::{self, BackfillError, Db, Options};
use crate::store::{Store, StoreError};

/// The writer handle the reconcile thread may use; emptied at shutdown, so that the
/// writer can finish even while a pass still waits for Protocol's API.
type WriterSlot = Arc<Mutex<Option<Writer>>>;

/// The reconcile thread's read-only connection, in a slot the daemon's stop empties
/// (closing it) while a pass still waits for Protocol's API: left open, it outlived the
/// writer's, and the `-wal` and `-shm` stayed beside the database (a review).
type ReaderSlot = Arc<Mutex<Option<Store>>>;

/// Reads from a read-only connection, writes through the writer thread.
struct WriterDb {
    writer: WriterSlot,
    reader: ReaderSlot,
    stop: Arc<AtomicBool>,
}

impl Db for WriterDb {
    fn read<T, F>(&mut self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        if self.stop.load(Ordering::SeqCst) {
            return Err(StoreError::Stopped);
        }
        match &*self.reader.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(reader) => f(reader.conn()),
            None => Err(StoreError::Stopped),
        }
    }

    fn write<T, F>(&mut self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let writer = self
            .writer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        match writer {
            Some(writer) if !self.stop.load(Ordering::SeqCst) => {
                writer.run_blocking(f).map_err(|_| StoreError::Stopped)?
            }
            _ => Err(StoreError::Stopped),
        }
    }
}

/// Where each pass gets its API settings: called before every pass, so that a token
/// file replaced while the daemon runs is used from the next pass on (an `Err` says
/// why the settings cannot be read, and that pass is skipped).
pub type ClientSource = Box<dyn FnMut() -> Result<ClientConfig, String> + Send>;

/// After this many passes in a row that left a resource unfinished, the next pass
/// starts a new run instead of resuming (see [`Reconciler::start`]).
pub const RESTART_AFTER: u32 = 3;

/// The background reconcile thread.
pub struct Reconciler {
    stop: Arc<AtomicBool>,
    writer: WriterSlot,
    reader: ReaderSlot,
    wake: mpsc::Sender<()>,
    thread: JoinHandle<()>,
}

impl Reconciler {
    /// Starts passes over every resource every `every` (the first one now), reading
    /// through `reader` (a read-only connection to `database`, opened by the caller
    /// so that a database it cannot read stops `serve` from starting; opened at each
    /// pass, one that failed once ended the passes for good). A pass the API refuses
    /// (its token, 401 or 403) is tried again at the next interval with the settings
    /// `client` gives then. Each pass is counted in `metrics`.
    pub fn start(
        writer: Writer,
        database: PathBuf,
        reader: Store,
        mut client: ClientSource,
        every: Duration,
        prune: bool,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<Reconciler> {
        let stop = Arc::new(AtomicBool::new(false));
        let slot: WriterSlot = Arc::new(Mutex::new(Some(writer)));
        let reader: ReaderSlot = Arc::new(Mutex::new(Some(reader)));
        let (wake, woken) = mpsc::channel::<()>();
        let thread = {
            let stop = stop.clone();
            let mut db = WriterDb {
                writer: slot.clone(),
                reader: reader.clone(),
                stop: stop.clone(),
            };
            std::thread::Builder::new()
                .name("protocol-mirror-reconcile".into())
                .spawn(move || {
                    let mut options = Options {
                        resources: backfill::ORDER.to_vec(),
                        prune,
                        restart: false,
                    };
                    // Passes in a row that left a resource unfinished: a pass resumes
                    // the run the last one left, so a page that fails every time
                    // (too large, malformed) would stop every resource from being
                    // listed again. After a few, the next pass starts a new run.
                    let mut unfinished = 0u32;
                    // The rate is kept from one pass's last request to the next's first.
                    let mut last_request = None;
                    // When the API asked to be asked again (a long `Retry-After`): no
                    // pass starts before then.
                    let mut come_back_at: Option<std::time::Instant> = None;
                    // Waits for the next pass: false once the daemon stops.
                    let next_pass = |come_back_at: Option<std::time::Instant>| {
                        let wait = come_back_at.map_or(every, |at| {
                            every.max(at.saturating_duration_since(std::time::Instant::now()))
                        });
                        woken.recv_timeout(wait) == Err(mpsc::RecvTimeoutError::Timeout)
                    };
                    loop {
                        // One backfill at a time: they share where each list stands.
                        let backfilling = match crate::lock::BackfillLock::try_take(&database) {
                            Ok(Some(lock)) => lock,
                            Ok(None) => {
                                tracing::info!(
                                    "a backfill of the database is running; this reconcile pass is skipped"
                                );
                                metrics.record_pass(Pass::Skipped);
                                if !next_pass(come_back_at) {
                                    break;
                                }
                                continue;
                            }
                            Err(e) => {
                                // With its cause: "cannot lock X" alone named no fix (a
                                // re-probe: the lock file was a symbolic link).
                                tracing::error!(error = %crate::with_causes(&e), "reconcile cannot take the backfill lock; it tries again at the next pass");
                                metrics.record_pass(Pass::Failed);
                                if !next_pass(come_back_at) {
                                    break;
                                }
                                continue;
                            }
                        };
                        let mut api = match client() {
                            // The daemon's stop ends the waits between retries too.
                            Ok(config) => Client::new(config)
                                .stop_when(stop.clone())
                                .paced_after(last_request),
                            Err(error) => {
                                tracing::error!(
                                    %error,
                                    "reconcile cannot read its API settings; it tries again at the next pass"
                                );
                                metrics.record_pass(Pass::Failed);
                                if !next_pass(come_back_at) {
                                    break;
                                }
                                continue;
                            }
                        };
                        let mut seen = Reconciled::default();
                        let ran = backfill::run(&mut db, &mut api, &options, |report| {
                            metrics.record_reconciled(report, &mut seen);
                            if report.done {
                                log_resource(report);
                            }
                        });
                        last_request = api.last_request().or(last_request);
                        come_back_at = api.come_back_at();
                        let asked_to_wait = come_back_at
                            .map(|at| at.saturating_duration_since(std::time::Instant::now()));
                        if let Some(wait) = asked_to_wait.filter(|wait| *wait > every) {
                            tracing::info!(
                                wait_secs = wait.as_secs(),
                                "Protocol's API asked to be asked again later (Retry-After); the \
                                 next reconcile pass waits for it"
                            );
                        }
                        match ran {
                            Ok(reports) => {
                                let finished = reports.iter().all(|r| r.complete);
                                unfinished = if finished { 0 } else { unfinished + 1 };
                                let pass = if finished {
                                    Pass::Complete
                                } else {
                                    Pass::Incomplete
                                };
                                metrics.record_pass(pass);
                            }
                            Err(BackfillError::Store(StoreError::Stopped)) => break,
                            // Until the token is replaced (a token file is read again
                            // before every pass); webhooks are not affected.
                            Err(e @ BackfillError::Unauthorized(_)) => {
                                tracing::error!(
                                    error = %e,
                                    "reconcile was refused by Protocol's API; it tries again at the next pass"
                                );
                                metrics.record_pass(Pass::Failed);
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, "reconcile pass failed");
                                metrics.record_pass(Pass::Failed);
                            }
                        }
                        drop(backfilling);
                        options.restart = unfinished >= RESTART_AFTER;
                        if options.restart {
                            tracing::warn!(
                                passes = unfinished,
                                "reconcile passes keep stopping short; the next one starts over"
                            );
                            unfinished = 0;
                        }
                        if !next_pass(come_back_at) {
                            break;
                        }
                    }
                })?
        };
        Ok(Reconciler {
            stop,
            writer: slot,
            reader,
            wake,
            thread,
        })
    }

    /// Stops the thread: it takes no more work, its writer handle is dropped at once
    /// (so the writer can finish), and it is given a moment to end; a pass still
    /// waiting for Protocol's API is abandoned (nothing of it is half-committed:
    /// every page is a transaction of its own), its connection closed.
    pub fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        self.writer.lock().unwrap_or_else(|e| e.into_inner()).take();
        let _ = self.wake.send(());
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        while !self.thread.is_finished() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if self.thread.is_finished() {
            let _ = self.thread.join();
        } else {
            // Its connection is closed now (a read under way, a local query, is
            // waited for), so that the writer's close is the last.
            drop(self.reader.lock().unwrap_or_else(|e| e.into_inner()).take());
            tracing::info!("not waiting for the reconcile pass in flight");
        }
    }
}

/// The log lines of a resource whose part of a pass is done, said as it ends (said
/// at the pass's end, a pass of hours said nothing of its first resources until then,
/// and nothing at all when a stop cut it short).
fn log_resource(r: &crate::backfill::ResourceReport) {
    let changed = r.outcomes.values().sum::<u64>();
    if r.listed_earlier() {
        tracing::info!(
            resource = %r.resource.plural(),
            "reconciled earlier in this run (a pass resumed it)"
        );
    } else if r.complete {
        tracing::info!(
            resource = %r.resource.plural(),
            listed = r.listed,
            changed,
            unchanged = r.unchanged,
            still_rejected = r.still_rejected,
            pruned = r.pruned.len(),
            "reconciled"
        );
        if !r.pruned.is_empty() {
            tracing::info!(
                resource = %r.resource.plural(),
                ids = %some_ids(&r.pruned),
                "pruned rows Protocol no longer has"
            );
        }
    } else {
        tracing::warn!(
            resource = %r.resource.plural(),
            listed = r.listed,
            changed,
            error = r.error.as_deref().unwrap_or(""),
            "reconcile did not finish a resource; the next pass resumes it"
        );
    }
}

/// Up to [`IDS_LOGGED`] of `ids`, escaped, then how many more: which rows a pass
/// deleted, in one log line of bounded length (the CLI lists them all).
fn some_ids(ids: &[String]) -> String {
    let mut line: Vec<String> = ids
        .iter()
        .take(IDS_LOGGED)
        .map(|id| crate::store::query::shown(id))
        .collect();
    if ids.len() > IDS_LOGGED {
        line.push(format!("and {} more", ids.len() - IDS_LOGGED));
    }
    line.join(" ")
}

/// How many pruned ids a reconcile pass logs per resource.
const IDS_LOGGED: usize = 20;

#[cfg(test)]
mod tests {
    /// An error's causes come with it in the log: "cannot lock X" alone named no fix
    /// (a re-probe: the backfill lock file was a symbolic link).
    #[test]
    fn errors_are_logged_with_their_causes() {
        let error = crate::lock::LockError::Io {
            path: "m.db.backfill.lock".into(),
            source: std::io::Error::other("it is a symbolic link, not a lock file: remove it"),
        };
        assert_eq!(
            crate::with_causes(&error),
            "cannot lock m.db.backfill.lock: it is a symbolic link, not a lock file: remove it"
        );
    }

    use super::*;

    #[test]
    fn pruned_ids_are_logged_escaped_and_bounded() {
        let ids: Vec<String> = (0..25).map(|i| format!("c{i}")).collect();
        let line = some_ids(&ids);
        assert!(line.starts_with(r#""c0" "c1" "#), "{line}");
        assert!(line.ends_with(r#""c19" and 5 more"#), "{line}");
        let line = some_ids(&["a\nb".to_owned()]);
        assert!(!line.contains('\n'), "{line}");
    }
}
