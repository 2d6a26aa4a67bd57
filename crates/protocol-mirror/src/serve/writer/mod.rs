//! The single writer: one thread owns the write connection. Handlers queue work on a
//! bounded channel; the writer applies what is queued, up to `max_batch` events, in one
//! transaction (other work queued among them, a backfill page, runs alone), commits
//! (`synchronous=FULL`), then answers each handler. A 2xx is only ever sent after that
//! commit (group commit: one fsync for many events).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

mod database_file;

pub use self::database_file::DatabaseFile;
use super::log_limit::LogLimit;
use super::metrics::Metrics;
use crate::apply::{Applied, Delivery, Origin, apply_delivery};
use crate::lock::ImportMark;
use crate::store::{Store, StoreError};

/// The WAL size (in 4 KiB pages) at which the daemon's writer checkpoints itself.
pub const CHECKPOINT_PAGES: i64 = 4_000;

/// Sets the daemon's writer connection up. It commits small batches (about as many
/// events as requests in flight), unlike import and rebuild, for which `Store::open`
/// tunes the connection (measured with `mirror-bench ingest`, see BENCHMARKS.md):
/// - a 16 MiB page cache rather than 64 MiB: part of SQLite's work at some commits
///   grows with the cache, and the daemon stays small (about 50 MiB less RSS);
/// - checkpoints by a thread of their own ([`super::checkpointer`]), so that commits,
///   which every request in flight waits for, rarely copy pages into the database.
///   The writer's own automatic checkpoint stays, every [`CHECKPOINT_PAGES`] pages of
///   WAL, to finish the job and start the WAL over.
pub fn tune(store: &Store) -> Result<(), StoreError> {
    store.set_cache_kib(16 * 1024)?;
    store.set_autocheckpoint(CHECKPOINT_PAGES)
}

/// Why an event could not be committed (the sender should retry: 503).
#[derive(Debug, Clone, thiserror::Error)]
pub enum WriteError {
    /// The queue is full: the writer is behind.
    #[error("the writer is busy; retry later")]
    Overloaded,
    /// The writer has stopped (shutting down, or failed).
    #[error("the mirror is shutting down")]
    Stopped,
    /// The transaction failed and was rolled back (disk full, locked, I/O error).
    #[error("the database could not commit: {0}")]
    Commit(String),
    /// The deadline passed before the writer began applying the event: it was not
    /// stored, and will not be.
    #[error("the event was not stored within the request time limit; retry later")]
    TimedOut,
    /// The health probe committed, but the last commit of events failed a moment ago
    /// and none has succeeded since.
    #[error("the last commit of events failed {seconds} s ago: {message}")]
    EventsFailing {
        /// Whole seconds since the failure.
        seconds: u64,
        /// The failure.
        message: String,
    },
}

/// How long `/healthz` reports a failed commit of events, unless events commit again
/// meanwhile. The health probe's own commit is tiny and may fit where events no
/// longer do (a disk full but for WAL space already allocated): without this, a
/// mirror refusing every event answered healthy. Bounded, so that a mirror that a
/// load balancer stops sending events to after a 503 gets healthy again once it can.
pub const FAILURE_SHOWS_FOR: Duration = Duration::from_secs(10);

/// The last failed commit of events, cleared by the next one that succeeds; with
/// whether it lasts, not [`FAILURE_SHOWS_FOR`]: a damaged database, which mends by no
/// waiting, is reported, and refuses events, until the daemon stops.
#[derive(Debug, Default)]
struct LastFailure(Mutex<Option<(Instant, String, bool)>>);

impl LastFailure {
    fn set(&self, message: Option<String>) {
        let mut last = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if last.as_ref().is_some_and(|(_, _, lasting)| *lasting) {
            return;
        }
        *last = message.map(|m| (Instant::now(), m, false));
    }

    /// A failure that lasts until the daemon stops: nothing ends it, a later one of
    /// another kind (a busy database: a review) or the first of its kind neither.
    fn set_lasting(&self, message: String) {
        let mut last = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if last.as_ref().is_some_and(|(_, _, lasting)| *lasting) {
            return;
        }
        *last = Some((Instant::now(), message, true));
    }

    /// The lasting failure, if there is one.
    fn lasting(&self) -> Option<String> {
        let last = self.0.lock().unwrap_or_else(|e| e.into_inner());
        last.as_ref()
            .filter(|(_, _, lasting)| *lasting)
            .map(|(_, message, _)| message.clone())
    }

    /// The failure, if it is recent (or lasting).
    fn recent(&self) -> Option<WriteError> {
        let last = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let (at, message, lasting) = last.as_ref()?;
        let ago = at.elapsed();
        (*lasting || ago < FAILURE_SHOWS_FOR).then(|| WriteError::EventsFailing {
            seconds: ago.as_secs(),
            message: message.clone(),
        })
    }
}

/// When the writer's connection last ran SQL: a statement that runs for seconds (one
/// event's cascade over a conversation of 400,000 messages) beats it about every
/// [`PULSE_OPS`] steps, so `/healthz` can tell a writer at work from one that waits
/// on a lock or hangs.
#[derive(Debug)]
struct Pulse {
    since: Instant,
    /// Milliseconds from `since` to the last beat; 0 before the first.
    last: AtomicU64,
}

/// Steps of SQLite's virtual machine between two beats of the writer's [`Pulse`]
/// (well under a millisecond of work, and a clock read each time).
const PULSE_OPS: i32 = 10_000;

impl Pulse {
    fn new() -> Pulse {
        Pulse {
            since: Instant::now(),
            last: AtomicU64::new(0),
        }
    }

    fn beat(&self) {
        let now = u64::try_from(self.since.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(now.max(1), Ordering::Relaxed);
    }

    /// Whether it beat within `window` of now.
    fn within(&self, window: Duration) -> bool {
        let last = self.last.load(Ordering::Relaxed);
        let now = u64::try_from(self.since.elapsed().as_millis()).unwrap_or(u64::MAX);
        let window = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
        last != 0 && now.saturating_sub(last) <= window
    }
}

/// Who decides an event's fate when its request may give up: the writer takes it (then
/// it is applied, and the request waits for the commit) or the request abandons it
/// (then the writer skips it). Whichever comes first wins.
#[derive(Debug, Default)]
pub(crate) struct Claim(std::sync::atomic::AtomicU8);

const PENDING: u8 = 0;
const TAKEN: u8 = 1;
const ABANDONED: u8 = 2;

impl Claim {
    /// The writer's side: whether it may apply the event.
    fn take(&self) -> bool {
        self.0
            .compare_exchange(PENDING, TAKEN, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
            || self.0.load(Ordering::SeqCst) == TAKEN
    }

    /// Whether the request gave the event up (for good: it is never taken then).
    fn abandoned(&self) -> bool {
        self.0.load(Ordering::SeqCst) == ABANDONED
    }

    /// The request's side: whether it gave the event up before the writer took it.
    fn abandon(&self) -> bool {
        self.0
            .compare_exchange(PENDING, ABANDONED, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
            || self.0.load(Ordering::SeqCst) == ABANDONED
    }
}

/// Abandons the event when the request's future is dropped before its answer.
struct Abandon(Arc<Claim>);

impl Drop for Abandon {
    fn drop(&mut self) {
        self.0.abandon();
    }
}

enum Job {
    Apply {
        delivery: Box<Delivery>,
        received_at: i64,
        reply: oneshot::Sender<Result<Applied, WriteError>>,
        claim: Arc<Claim>,
        /// The event's share of the budget of parsed events, given back when the
        /// writer is done with the job: a request that gave up left its parsed event
        /// queued outside the budget (retries of large events beside a long cascade
        /// took the daemon to 3.5 GB; a review).
        _budget: Option<tokio::sync::OwnedSemaphorePermit>,
    },
    Probe {
        reply: oneshot::Sender<Result<(), WriteError>>,
    },
    /// Work that runs in a transaction of its own (a backfill page), between batches.
    Run(Work),
}

/// Work for [`Job::Run`]: given the store, or why it may not write (the database file
/// removed or replaced, as a batch is refused).
type Work = Box<dyn FnOnce(Result<&mut Store, StoreError>) + Send>;

/// The writer thread's name. A panic there ends the process (the binary's panic hook):
/// a daemon whose writer is gone can store nothing, and answered every webhook and
/// `/healthz` 503 while it stayed up, so no supervisor restarted it (a review). What
/// was acknowledged is committed; what was not is sent again.
pub const THREAD_NAME: &str = "protocol-mirror-writer";

/// The handle handlers use to reach the writer.
#[derive(Clone)]
pub struct Writer {
    queue: mpsc::Sender<Job>,
    alive: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
    last_failure: Arc<LastFailure>,
    pulse: Arc<Pulse>,
    /// The database file the writer opened, watched (none for a database in memory).
    file: Option<database_file::FileWatch>,
}

/// Owns the writer thread; joining it closes the database.
pub struct WriterThread {
    thread: JoinHandle<Result<(Store, LogLeft), StoreError>>,
}

/// What the writer's last copy of the write-ahead log into the database file, at its
/// stop, left in the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogLeft {
    /// Nothing: the file alone holds every committed event.
    Nothing,
    /// What a reader in the middle of a read held back: the next writer copies it.
    HeldByReader,
    /// The copy failed (a full disk): the log holds events the file lacks until a
    /// later writer copies them in.
    Failed(String),
    /// The database file was emptied while the daemon ran (cut shorter than its
    /// header): nothing was copied into it, and it is to be restored.
    FileEmptied,
    /// The `-wal` was cut while the daemon ran (its header gone): nothing was copied
    /// into the file, which holds what the last copy before put in it.
    LogCut,
    /// The database file was removed, replaced or moved away while the daemon ran (or
    /// its `-wal` or `-shm` were): events were refused from then on, and the log was
    /// copied into the file that was, where it could be. (The stop said "stopped
    /// cleanly", exit 0: a black-box probe.)
    FileGone,
}

impl WriterThread {
    /// Waits for the writer to finish its current batch and close the database.
    /// Every [`Writer`] handle must be dropped first.
    pub fn join(self) -> Result<(), StoreError> {
        self.finish()?.0.close()
    }

    /// Waits for the writer to finish its current batch and copy the write-ahead log
    /// into the database file, and returns its connection, still open: the daemon
    /// closes it once its other connections are closed, so that its close is the last
    /// and removes the log and its index (a read-only connection cannot; which thread
    /// closed last was luck, and the files were left in one stop of the e2e suite).
    /// Every [`Writer`] handle must be dropped first. With it, what the copy left in
    /// the log.
    pub fn finish(self) -> Result<(Store, LogLeft), StoreError> {
        self.thread.join().unwrap_or_else(|_| {
            Err(StoreError::Corrupt {
                resource: "writer",
                id: String::new(),
                message: "the writer thread panicked".into(),
            })
        })
    }
}

impl Writer {
    /// Starts the writer thread on `store`, with a queue of `capacity` events and
    /// batches of at most `max_batch`.
    pub fn start(
        store: Store,
        capacity: usize,
        max_batch: usize,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<(Writer, WriterThread)> {
        let (queue, jobs) = mpsc::channel(capacity.max(1));
        let alive = Arc::new(AtomicBool::new(true));
        let last_failure = Arc::new(LastFailure::default());
        let pulse = Arc::new(Pulse::new());
        {
            let pulse = pulse.clone();
            store
                .on_progress(PULSE_OPS, move || pulse.beat())
                .map_err(std::io::Error::other)?;
        }
        // The file as it is now, before the daemon says it listens: found by the
        // writer's thread, it could be a file already removed (and a removal was never
        // told: a CI run of the e2e tests).
        let file = store.path().and_then(DatabaseFile::of);
        let watch = file.as_ref().map(DatabaseFile::watch);
        let thread = {
            let alive = alive.clone();
            let metrics = metrics.clone();
            let last_failure = last_failure.clone();
            std::thread::Builder::new()
                .name(THREAD_NAME.into())
                .spawn(move || {
                    let failure_log = Arc::new(LogLimit::default());
                    let lone_failure = std::cell::RefCell::new(None);
                    let writing = Writing {
                        metrics: &metrics,
                        last_failure: &last_failure,
                        failure_log: &failure_log,
                        file: file.as_ref(),
                        lone_failure: &lone_failure,
                    };
                    let result = run(store, jobs, max_batch.max(1), writing);
                    alive.store(false, Ordering::SeqCst);
                    result
                })?
        };
        Ok((
            Writer {
                queue,
                alive,
                metrics,
                last_failure,
                pulse,
                file: watch,
            },
            WriterThread { thread },
        ))
    }

    /// Queues `delivery` and waits until it is committed (or failed). Never waits for
    /// room in the queue: a full queue is [`WriteError::Overloaded`].
    pub async fn apply(&self, delivery: Delivery, received_at: i64) -> Result<Applied, WriteError> {
        self.apply_until(delivery, received_at, None, None, || {})
            .await
    }

    /// Like [`Writer::apply`], but gives up at `deadline` unless the writer has begun
    /// applying the event by then: [`WriteError::TimedOut`] means the event was not and
    /// will not be stored. If the writer has begun it, `on_taken` is called and the
    /// answer waited for. Dropped before an answer (the sender hung up), it gives up
    /// the same way, if it still can. `budget`, the event's share of a memory budget,
    /// is held until the writer is done with it (also after the request gave up).
    pub async fn apply_until(
        &self,
        delivery: Delivery,
        received_at: i64,
        deadline: Option<tokio::time::Instant>,
        budget: Option<tokio::sync::OwnedSemaphorePermit>,
        on_taken: impl FnOnce(),
    ) -> Result<Applied, WriteError> {
        let (reply, mut answer) = oneshot::channel();
        let claim = Arc::new(Claim::default());
        self.send(Job::Apply {
            delivery: Box::new(delivery),
            received_at,
            reply,
            claim: claim.clone(),
            _budget: budget,
        })?;
        let _abandon = Abandon(claim.clone());
        if let Some(deadline) = deadline {
            match tokio::time::timeout_at(deadline, &mut answer).await {
                Ok(result) => return result.unwrap_or(Err(WriteError::Stopped)),
                Err(_) if claim.abandon() => return Err(WriteError::TimedOut),
                // The writer is applying it: its answer comes with the commit.
                Err(_) => on_taken(),
            }
        }
        answer.await.unwrap_or(Err(WriteError::Stopped))
    }

    /// Checks that the writer is alive, the database takes a write, and events did
    /// not fail to commit in the last [`FAILURE_SHOWS_FOR`] (unless some committed
    /// since).
    ///
    /// It waits for room in the queue: a queue full of events is a busy writer, which
    /// the caller tells from a stuck one ([`Writer::worked_within`]); it answered
    /// [`WriteError::Overloaded`] at once, and `/healthz` 503 in the middle of a
    /// cascade (a review).
    pub async fn probe(&self) -> Result<(), WriteError> {
        let (reply, answer) = oneshot::channel();
        // A slot first (given up with no trace if the caller stops waiting), then the
        // job, counted before the writer can take it.
        let slot = self
            .queue
            .reserve()
            .await
            .map_err(|_| WriteError::Stopped)?;
        self.metrics.queue_depth.inc();
        slot.send(Job::Probe { reply });
        answer.await.unwrap_or(Err(WriteError::Stopped))?;
        self.last_failure.recent().map_or(Ok(()), Err)
    }

    /// Runs `work` in a write transaction of its own on the writer thread, between
    /// webhook batches, and returns its result after the commit. Blocks (never call it
    /// from async code); waits for room in the queue instead of failing when it is full.
    pub fn run_blocking<T, F>(&self, work: F) -> Result<Result<T, StoreError>, WriteError>
    where
        T: Send + 'static,
        F: FnOnce(&rusqlite::Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply, answer) = std::sync::mpsc::sync_channel(1);
        let job = Job::Run(Box::new(move |store: Result<&mut Store, StoreError>| {
            let result = store.and_then(|store| {
                let tx = store.transaction()?;
                let value = work(&tx)?;
                tx.commit()?;
                Ok(value)
            });
            let _ = reply.send(result);
        }));
        self.metrics.queue_depth.inc();
        if self.queue.blocking_send(job).is_err() {
            self.metrics.queue_depth.dec();
            return Err(WriteError::Stopped);
        }
        answer.recv().map_err(|_| WriteError::Stopped)
    }

    /// The failure of events to commit within the last [`FAILURE_SHOWS_FOR`], if none
    /// committed since: what [`Writer::probe`] answers then, without a commit.
    pub fn events_failing(&self) -> Option<WriteError> {
        self.last_failure.recent()
    }

    /// Whether the writer ran SQL within `window` of now: it is at work (a long
    /// cascade), not waiting on another connection's lock or stuck.
    pub fn worked_within(&self, window: Duration) -> bool {
        self.pulse.within(window)
    }

    /// Whether the writer thread is running.
    pub fn is_alive(&self) -> bool {
        self.alive.load(Ordering::SeqCst)
    }

    /// Whether the database file the writer opened is still at its path, and was
    /// never found gone (a backup moved over it, say): what other connections
    /// read of it answers for the database only while it is.
    pub fn file_holds(&self) -> bool {
        self.file
            .as_ref()
            .is_none_or(database_file::FileWatch::holds)
    }

    /// Queues `job`, counted in the queue's depth before the writer can take it
    /// (counted after, the depth read -1 now and then: a review).
    fn send(&self, job: Job) -> Result<(), WriteError> {
        self.metrics.queue_depth.inc();
        let sent = self.queue.try_send(job);
        if sent.is_err() {
            self.metrics.queue_depth.dec();
        }
        match sent {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => Err(WriteError::Overloaded),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(WriteError::Stopped),
        }
    }
}

/// What the writer thread reports to besides the requests it answers.
#[derive(Clone, Copy)]
struct Writing<'a> {
    metrics: &'a Metrics,
    last_failure: &'a LastFailure,
    failure_log: &'a Arc<LogLimit>,
    file: Option<&'a DatabaseFile>,
    /// The id of the event that last failed for its own data, alone in its batch, with
    /// no event committed since, and when it first did (see [`commit_batch`]).
    lone_failure: &'a std::cell::RefCell<Option<(String, Instant)>>,
}

/// The writer's end of the queue, where a job taken out of turn waits in front.
struct Jobs<'a> {
    queue: mpsc::Receiver<Job>,
    held: Option<Job>,
    metrics: &'a Metrics,
}

impl Jobs<'_> {
    /// The next job, waiting for one; `None` once every handle is dropped and the
    /// queue is drained.
    fn next(&mut self) -> Option<Job> {
        if let Some(job) = self.held.take() {
            return Some(job);
        }
        let job = self.queue.blocking_recv();
        self.dequeued(job)
    }

    /// The next job, if one is waiting.
    fn try_next(&mut self) -> Option<Job> {
        if let Some(job) = self.held.take() {
            return Some(job);
        }
        let job = self.queue.try_recv().ok();
        self.dequeued(job)
    }

    /// A job taken from the queue, counted out of its depth.
    fn dequeued(&self, job: Option<Job>) -> Option<Job> {
        if job.is_some() {
            self.metrics.queue_depth.dec();
        }
        job
    }

    /// The next job if one is waiting and it is a webhook's (an event or a health
    /// probe); other work is held for its turn.
    fn try_next_webhook(&mut self) -> Option<Job> {
        match self.try_next()? {
            run @ Job::Run(_) => {
                self.held = Some(run);
                None
            }
            job => Some(job),
        }
    }
}

fn run(
    mut store: Store,
    queue: mpsc::Receiver<Job>,
    max_batch: usize,
    writing: Writing<'_>,
) -> Result<(Store, LogLeft), StoreError> {
    let mut jobs = Jobs {
        queue,
        held: None,
        metrics: writing.metrics,
    };
    let mut batch = Vec::with_capacity(max_batch);
    // The writer finishes what was queued, then hands the database back.
    while let Some(first) = jobs.next() {
        batch.push(first);
        while batch.len() < max_batch {
            match jobs.try_next() {
                Some(job) => batch.push(job),
                None => break,
            }
        }
        // Webhook jobs are committed together; other work runs alone, in order.
        let mut group = Vec::with_capacity(batch.len());
        for job in batch.drain(..) {
            match job {
                Job::Run(work) => {
                    if !group.is_empty() {
                        commit_batch(&mut store, &mut group, writing, None);
                    }
                    // Refused as a batch is, once the file is gone (a backfill page
                    // went into a log taken away; a review).
                    // And once its log was cut (a reconcile's commit went into it, and
                    // the stop copied the hole into the file: a review).
                    let ready = writing.file.map_or(Ok(()), |file| {
                        file.check_before_writing(&store)
                            .and_then(|()| file.check_log())
                    });
                    work(ready.map(|()| &mut store));
                }
                other => group.push(other),
            }
        }
        if !group.is_empty() {
            // The last group may take in what was queued while it waited for the
            // database (another process's write, such as an import's batch).
            commit_batch(
                &mut store,
                &mut group,
                writing,
                Some((&mut jobs, max_batch)),
            );
        }
    }
    writing.failure_log.flush(log_held_failures);
    // A log cut since the last commit is found now, before anything copies it (the
    // stop's copy failed on it as "disk I/O error", and lost the events in it without
    // a word: a review).
    if let Some(file) = writing.file {
        let _ = file.check_log();
    }
    // A file replaced since the last batch: its log is taken away before the next
    // start opens what stands there now. A copy held back (the checkpoint thread's
    // under way) is tried again for a moment.
    if let Some(file) = writing.file {
        file.disown_at_stop(&store);
    }
    // Everything into the database file, and the log emptied, even while another
    // process has the database open (SQLite's close does that only as the last
    // connection): a reader between two reads holds nothing back, so the file alone is
    // then whole. A reader in the middle of a read (`events --follow`) keeps what it
    // reads in the log, for the next writer to copy. Not into a file emptied under
    // the daemon: what stands at its name is to be restored, not added to; nor by
    // SQLite's close, which as the last connection copied the log into it and removed
    // the log the stop says to move away (a review).
    // Asked first: the check it makes may find the file emptied only now.
    let gone = writing.file.is_some_and(DatabaseFile::gone);
    if writing.file.is_some_and(DatabaseFile::emptied) {
        store.keep_log_at_close()?;
        return Ok((store, LogLeft::FileEmptied));
    }
    // Nor into a file whose log was cut: its hole would go in as pages.
    if writing.file.is_some_and(DatabaseFile::log_cut) {
        store.keep_log_at_close()?;
        return Ok((store, LogLeft::LogCut));
    }
    let copied = store.checkpoint_truncate_now();
    // The log ends before the frames SQLite indexes (cut to nothing since the last
    // commit, so its header was not there to miss): the copy read short, and stopped
    // there. Said as a cut log, not as a disk's I/O error (a review).
    if let (Err(error), Some(file)) = (&copied, writing.file)
        && error.is_short_read()
    {
        file.found_log_cut();
        store.keep_log_at_close()?;
        return Ok((store, LogLeft::LogCut));
    }
    let left = match copied {
        Ok(true) => LogLeft::Nothing,
        Ok(false) => LogLeft::HeldByReader,
        // A full disk: said by the stop, which "stopped cleanly" with the file alone
        // damaged (a probe).
        Err(error) => LogLeft::Failed(error.to_string()),
    };
    match left {
        LogLeft::Nothing | LogLeft::HeldByReader if gone => Ok((store, LogLeft::FileGone)),
        left => Ok((store, left)),
    }
}

/// Applies `batch` in one transaction and answers every job: with its result after
/// the commit, or with [`WriteError::Commit`] when the batch failed (then nothing of
/// it is applied). A batch that failed for what may be one event's data is applied
/// again one event at a time ([`write_batch`]): one event that cannot be stored (a
/// poison event, redelivered again and again) fails alone, not every batch it joins.
///
/// With `top_up`, the batch takes in webhook jobs queued meanwhile once the database is
/// its, up to the batch size: an event that arrived while the writer waited for
/// another process's transaction then waits for that one only. (Before, it waited for
/// the next one too: 0.85 s beside an import whose batches last 0.5 s.)
fn commit_batch(
    store: &mut Store,
    batch: &mut Vec<Job>,
    writing: Writing<'_>,
    top_up: Option<(&mut Jobs<'_>, usize)>,
) {
    let metrics = writing.metrics;
    // Jobs no one waits for any more are left out before the database is asked for:
    // a batch of them waited out the busy timeout behind another program's lock.
    batch.retain(|job| match job {
        Job::Apply { claim, .. } => !claim.abandoned(),
        Job::Probe { reply } => !reply.is_closed(),
        Job::Run(_) => true,
    });
    if batch.is_empty() {
        return;
    }
    let mut applied = write_batch(store, batch, writing, top_up, false);
    if let Err(error) = &applied {
        let writes = batch
            .iter()
            .filter(|job| !matches!(job, Job::Run(_)))
            .count();
        if writes > 1 && !error.is_environmental() {
            tracing::warn!(
                %error,
                "a batch failed; applying its events one by one, so that one cannot fail \
                 the others"
            );
            applied = write_batch(store, batch, writing, None, true);
        }
    }
    let events = match &applied {
        Ok(results) => results.iter().filter(|r| matches!(r, Some(Ok(_)))).count(),
        // Those whose requests gave up while the batch waited count too: they failed
        // to commit as much as the others (the log names whose lock it was).
        Err(_) => batch
            .iter()
            .filter(|job| matches!(job, Job::Apply { .. }))
            .count(),
    };
    match applied {
        Ok(results) => {
            // Only new events committing says the failures are over: a health probe's
            // tiny commit can fit where events do not, and so can a redelivery's count
            // (`/healthz` said ok after a redelivery on a full disk: a black-box probe).
            let stored = results
                .iter()
                .any(|r| matches!(r, Some(Ok(Applied::Logged { .. }))));
            if stored {
                writing.last_failure.set(None);
                writing.lone_failure.take();
                if let Some(unlogged) = writing.failure_log.succeeded() {
                    tracing::info!(
                        unlogged_failures = unlogged,
                        "commits succeed again after failures"
                    );
                }
            }
            metrics.record_batch(events);
            tracing::trace!(events, "committed a batch");
            for (job, result) in batch.drain(..).zip(results) {
                match (job, result) {
                    (
                        Job::Apply {
                            delivery, reply, ..
                        },
                        Some(Ok(applied)),
                    ) => {
                        metrics.record_event(delivery.event(), &applied);
                        log_applied(&delivery, &applied);
                        let _ = reply.send(Ok(applied));
                    }
                    (Job::Apply { reply, .. }, Some(Err(message))) => {
                        let _ = reply.send(Err(WriteError::Commit(message)));
                    }
                    (Job::Probe { reply }, _) => {
                        let _ = reply.send(Ok(()));
                    }
                    (Job::Apply { reply, .. }, None) => {
                        let _ = reply.send(Err(WriteError::Stopped));
                    }
                    (Job::Run(_), _) => {}
                }
            }
        }
        // A batch of health probes alone is no failed commit of events: `/healthz`
        // answers its 503 with the reason.
        Err(error) if events == 0 => {
            tracing::debug!(%error, "a health probe could not commit");
            answer_failed(batch, &error.to_string(), None);
        }
        // One event that failed for its own data, alone in its batch (at low traffic,
        // most are), and again at its redeliveries: 503 for it, and the daemon is no
        // less healthy. It marked events failing, and `/healthz` answered 503 after
        // each redelivery (a review). Another event failing so before any commits, or
        // every event of a larger batch failing alone, still marks them.
        Err(error) if events == 1 && !error.is_environmental() && lone(batch, writing) => {
            metrics.commit_failures.inc();
            let message = error.to_string();
            tracing::warn!(%error, "an event failed, alone in its batch; it was rolled back");
            // A health probe that shared the batch asks again on its own: the event's
            // failure was its own, and says nothing of the writer (`/healthz` beside
            // a poison event answered 503).
            let mut probes = batch
                .extract_if(.., |job| matches!(job, Job::Probe { .. }))
                .collect();
            let stored = redeliveries_answerable(store, writing.file).then_some((&*store, metrics));
            answer_failed(batch, &message, stored);
            commit_batch(store, &mut probes, writing, None);
        }
        Err(error) => {
            metrics.commit_failures.inc();
            // A damaged database says how to get it back, and `/healthz` says so until
            // events commit again: it went back to 200 after 10 s without events, so
            // no supervisor or load balancer ever learned (an operator probe).
            let damaged = error.is_damage();
            let message = match writing.file {
                Some(file) if damaged => StoreError::Damaged {
                    path: file.path().to_owned(),
                    problem: error.to_string(),
                }
                .to_string(),
                _ => error.to_string(),
            };
            let told = writing
                .failure_log
                .failed(Some(&message), log_held_failures);
            if let Some(unlogged) = told {
                // "database is locked" alone did not say whose lock: an import's, held
                // for as long as a stopped (Ctrl-Z) import stays stopped, is named.
                let held_by_an_import = error.is_busy()
                    && writing
                        .file
                        .is_some_and(|file| ImportMark::is_held(file.path()));
                tracing::error!(
                    events,
                    error = %message,
                    held_by = held_by_an_import.then_some(
                        "an import of this database, in one transaction for longer than the \
                         requests could wait (is it stopped?)"
                    ),
                    unlogged_failures = unlogged,
                    "a batch failed; it was rolled back (further failures are logged at most \
                     every 10 s; protocol_mirror_commit_failures_total counts them all)"
                );
            }
            if damaged {
                writing.last_failure.set_lasting(format!(
                    "{message}; this daemon takes no more events: stop it, then restore the \
                     file (the next start refuses it while it is damaged)"
                ));
                // Kept beside the file, so that a restart does not take events into
                // it as if whole (`store::damage`).
                if let Some(file) = writing.file {
                    crate::store::mark_damaged_or_warn(file.path(), &error.to_string());
                }
            } else {
                writing.last_failure.set(Some(message.clone()));
            }
            let stored = redeliveries_answerable(store, writing.file).then_some((&*store, metrics));
            answer_failed(batch, &message, stored);
        }
    }
}

/// Whether the one event of `batch` is the only one that failed for its own data since
/// an event last committed (none failed so, or only it, at an earlier delivery), for
/// less than [`LONE_FAILURE_GRACE`]: remembered as such. Past it, with no event
/// committed meanwhile, the failure is taken for the database's after all (an event
/// of its own is what a writer that fails every event shows to a sender that retries
/// one event in order: a review).
fn lone(batch: &[Job], writing: Writing<'_>) -> bool {
    let Some(id) = batch.iter().find_map(|job| match job {
        Job::Apply { delivery, .. } => Some(delivery.event_id()),
        _ => None,
    }) else {
        return false;
    };
    let mut last = writing.lone_failure.borrow_mut();
    match last.as_ref() {
        Some((other, since)) => other == id && since.elapsed() < LONE_FAILURE_GRACE,
        None => {
            *last = Some((id.to_owned(), Instant::now()));
            true
        }
    }
}

/// How long one event failing alone for its own data, with no event committed
/// meanwhile, leaves the writer healthy (see [`lone`]); 3 s in the unit tests, so
/// that its end is tested (and two failed commits fit well within it).
const LONE_FAILURE_GRACE: Duration = Duration::from_secs(if cfg!(test) { 3 } else { 60 });

/// What became of a job of a batch whose transaction commits: `None` for one not
/// applied (its request gave up, or it is a probe), else the event's outcome, or why
/// it alone failed (in a batch applied one by one).
type Written = Option<Result<Applied, String>>;

/// Applies `batch` in one transaction and commits it; see [`commit_batch`] for
/// `top_up`. Any failure fails the whole batch, unless `one_by_one`: then each event
/// is applied in a savepoint of its own, and one that fails for its own data (not
/// [`StoreError::is_environmental`]) is left out and answered alone; the batch fails
/// only when the failure is the database's, or when no event of it could be applied.
fn write_batch(
    store: &mut Store,
    batch: &mut Vec<Job>,
    writing: Writing<'_>,
    top_up: Option<(&mut Jobs<'_>, usize)>,
    one_by_one: bool,
) -> Result<Vec<Written>, StoreError> {
    if let Some(file) = writing.file {
        file.check_before_writing(store)?;
        // Found damaged by another process (an import beside the daemon): latched as
        // if by this one (the daemon acknowledged events into it: a black-box probe).
        // A latch already set keeps its first finding.
        if let Some(mark) = file.marked_since_start() {
            writing.last_failure.set_lasting(format!(
                "{} was found damaged by another process ({} says when and how); this \
                 daemon takes no more events: stop it, then restore the file (the next \
                 start refuses it while it is damaged)",
                file.path().display(),
                mark.display()
            ));
        }
    }
    // A database found damaged takes no more events: some still committed, into a
    // file the next start refuses and the fix replaces, so they were acknowledged and
    // lost (3,460 of 10,000 after the first 503: a black-box probe).
    if let Some(found) = writing.last_failure.lasting() {
        return Err(StoreError::DamageFound(found));
    }
    // Another process's transaction outlasted the busy timeout. An import's is
    // waited out while a request of the batch still waits (an import delays the
    // daemon, never fails it: one event of it may cascade for seconds); anyone
    // else's fails the batch (503). A request waits for an event taken as well as
    // for one not yet taken, until it gives up: the one-by-one retry of a failed
    // batch finds them all taken (by the first try), and failed them all beside an
    // import (a review).
    let mut tx = loop {
        match store.transaction() {
            Err(e)
                if e.is_busy()
                    && writing
                        .file
                        .is_some_and(|file| ImportMark::is_held(file.path()))
                    && batch.iter().any(|job| match job {
                        Job::Apply { claim, reply, .. } => !claim.abandoned() && !reply.is_closed(),
                        Job::Probe { reply } => !reply.is_closed(),
                        Job::Run(_) => false,
                    }) =>
            {
                tracing::debug!("waiting for an import's transaction");
            }
            other => break other?,
        }
    };
    if let Some((jobs, max_batch)) = top_up {
        while batch.len() < max_batch {
            match jobs.try_next_webhook() {
                Some(job) => batch.push(job),
                None => break,
            }
        }
    }
    let mut results = Vec::with_capacity(batch.len());
    let (mut succeeded, mut failed) = (false, None);
    for job in batch.iter() {
        results.push(match job {
            // The request gave up waiting (its time limit passed, or the sender
            // hung up) and was answered with an error: the sender will deliver
            // it again, so it is not applied now. Claiming it first means the
            // request can no longer give up: its answer is this commit's. (A claim
            // taken by a first try of the batch stays taken.)
            Job::Apply { claim, .. } if !claim.take() => {
                tracing::debug!("skipped an event whose request gave up waiting");
                None
            }
            Job::Apply {
                delivery,
                received_at,
                ..
            } if one_by_one => {
                let applied = tx
                    .isolated(|conn| apply_delivery(conn, delivery, Origin::Webhook, *received_at));
                match applied {
                    Err(error) if error.is_environmental() => return Err(error),
                    Err(error) => {
                        tracing::warn!(
                            event_id = ?delivery.event_id(),
                            %error,
                            "an event failed, and was left out of its batch"
                        );
                        let message = error.to_string();
                        failed.get_or_insert(error);
                        Some(Err(message))
                    }
                    Ok(applied) => {
                        succeeded = true;
                        Some(Ok(applied))
                    }
                }
            }
            Job::Apply {
                delivery,
                received_at,
                ..
            } => Some(Ok(apply_delivery(
                &tx,
                delivery,
                Origin::Webhook,
                *received_at,
            )?)),
            Job::Probe { .. } => {
                crate::store::probe_write(&tx)?;
                None
            }
            Job::Run(_) => None,
        });
    }
    // Every event failed alone: that is a failed commit of events (for `/healthz`
    // and the metrics) as much as one failure of them all.
    if let (false, Some(first)) = (succeeded, failed) {
        return Err(first);
    }
    tx.commit()?;
    // The log cut under the commit: its events are not in a log any start reads, so
    // they are not acknowledged (each was, into a file then malformed: a probe).
    if let Some(file) = writing.file {
        file.check_log()?;
    }
    Ok(results)
}

/// Logs failed batches the 10 s limit held back: at the end of their period, and at
/// the stop.
fn log_held_failures(held: crate::serve::log_limit::Held) {
    let first = held.first.unwrap_or_default();
    tracing::error!(
        error = %first,
        unlogged_failures = held.count,
        "batches that failed and were rolled back since the last line: {} (the first of \
         them: {first})",
        held.count
    );
}

/// The debug line of an event the writer committed (after the commit: a batch rolled
/// back after its events were applied had them logged as applied; a review): its id,
/// type, outcome, sequence number, the rows its cascade removed, and the field that
/// got it rejected. The id, type and error are debug-quoted and cut at 100
/// characters: each holds what a sender chose (a 100,000-character type made one line
/// of 100 KB, and the line said "applied" of every outcome, with the outcome a Rust
/// debug dump: a probe).
fn log_applied(delivery: &Delivery, applied: &Applied) {
    if !tracing::enabled!(tracing::Level::DEBUG) {
        return;
    }
    let cut = |text: &str| {
        let mut text = text.to_owned();
        if let Some((at, _)) = text.char_indices().nth(100) {
            text.truncate(at);
            text.push('…');
        }
        text
    };
    let event_id = cut(delivery.event_id());
    let event_type = cut(&delivery.event_type().to_string());
    let rejected = match delivery.event() {
        Err(protocol_types::EventError::Field { source, .. }) => Some(cut(&source.to_string())),
        _ => None,
    };
    match applied {
        Applied::Logged {
            seq,
            outcome,
            cascade,
        } => tracing::debug!(
            event_id,
            event_type,
            seq,
            removed = cascade.total(),
            error = rejected,
            "event {}",
            outcome.as_str()
        ),
        Applied::Duplicate { first, .. } => tracing::debug!(
            event_id,
            event_type,
            first = first.as_str(),
            "event seen before (duplicate)"
        ),
    }
}

/// Whether the redeliveries of a failed batch can be answered from the log: only
/// after a clean rollback (a connection still in the transaction would see the failed
/// batch's own events), and while the file is still the database's (a removed or
/// replaced file's events must come again).
fn redeliveries_answerable(store: &Store, file: Option<&DatabaseFile>) -> bool {
    store.conn().is_autocommit() && file.is_none_or(|file| file.check().is_ok())
}

/// Answers every job of a batch that failed with [`WriteError::Commit`]; with
/// `stored`, a redelivery of an event committed before the batch with its first
/// outcome instead, as a batch that committed would (SPEC: "the status of its first
/// outcome"): the event is stored, only its count of redeliveries could not be
/// written. They got 503 with a full disk, and the sender retried an event the
/// mirror had (found by a black-box probe).
fn answer_failed(batch: &mut Vec<Job>, message: &str, stored: Option<(&Store, &Metrics)>) {
    for job in batch.drain(..) {
        let error = WriteError::Commit(message.to_owned());
        match job {
            // Answered, and counted, only where the claim is the writer's: a request
            // that gave up was answered by a reader, and counted then (a redelivery
            // counted twice: a probe). Taken, the request can no longer give up; a
            // sender that hung up is counted as a commit would count it (the reply's
            // being closed was asked: a request that had just given up was counted
            // twice, and a taken one whose sender hung up not at all; a review).
            Job::Apply {
                delivery,
                reply,
                claim,
                ..
            } if claim.take() => {
                let first = stored.and_then(|(store, metrics)| {
                    let applied = crate::apply::first_delivery(store.conn(), delivery.event_id())
                        .ok()
                        .flatten()?;
                    metrics.record_event(delivery.event(), &applied);
                    Some(applied)
                });
                let _ = reply.send(first.ok_or(error));
            }
            Job::Apply { .. } => {}
            Job::Probe { reply } => {
                let _ = reply.send(Err(error));
            }
            Job::Run(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    /// A writer on a fresh database in a folder of its own.
    struct Running {
        writer: Writer,
        thread: WriterThread,
        metrics: Arc<Metrics>,
        db: std::path::PathBuf,
        dir: tempfile::TempDir,
    }

    impl Running {
        /// With room for `capacity` queued jobs, and batches of at most 16 events.
        fn start(capacity: usize) -> Running {
            let dir = tempfile::tempdir().unwrap();
            let db = dir.path().join("m.db");
            Running::on(db, dir, capacity)
        }

        /// A writer on the database `db`, in `dir`.
        fn on(db: std::path::PathBuf, dir: tempfile::TempDir, capacity: usize) -> Running {
            let metrics = Arc::new(Metrics::new(None));
            let (writer, thread) =
                Writer::start(Store::open(&db).unwrap(), capacity, 16, metrics.clone()).unwrap();
            Running {
                writer,
                thread,
                metrics,
                db,
                dir,
            }
        }

        /// Stops the writer, has `damage` change the database file (closed, its log
        /// copied in), and starts a writer on it again.
        fn restart_after(self, damage: impl FnOnce(&std::path::Path)) -> Running {
            let db = self.db.clone();
            let dir = self.stop();
            damage(&db);
            Running::on(db, dir, 16)
        }

        /// Stops the writer and waits for its thread; the folder stays until the
        /// returned handle is dropped.
        fn stop(self) -> tempfile::TempDir {
            drop(self.writer);
            self.thread.join().unwrap();
            self.dir
        }
    }

    /// A `contact.created` event numbered `n`.
    fn event(n: u32) -> Delivery {
        let body = format!(r#"{{"id":"e{n}","type":"contact.created","payload":{{"id":"c{n}"}}}}"#);
        Delivery::parse(body.as_bytes()).unwrap()
    }

    /// The health probe's own commit is tiny and can succeed where events fail (a full
    /// disk with WAL space left): `/healthz` answered 200 while every event got 503
    /// (found by a black-box probe). A failed commit of events now shows in the probe
    /// until events commit again.
    #[test]
    fn the_probe_reports_events_that_fail_to_commit() {
        let running = Running::start(16);
        let writer = &running.writer;
        let fail = |on: bool| {
            let store = Store::open(&running.db).unwrap();
            let sql = if on {
                "CREATE TRIGGER fail BEFORE INSERT ON events BEGIN
                     SELECT RAISE(ABORT, 'no room for events (test)'); END;"
            } else {
                "DROP TRIGGER fail"
            };
            store.conn().execute_batch(sql).unwrap();
        };
        runtime().block_on(async {
            assert!(writer.apply(event(1), 0).await.is_ok());
            assert!(writer.probe().await.is_ok());
            fail(true);
            // One event failing alone may be its own doing (see
            // `a_lone_event_that_cannot_be_stored_leaves_the_writer_healthy`); a second
            // one, before any commits, is the database's.
            let refused = writer.apply(event(2), 0).await.unwrap_err();
            assert!(matches!(refused, WriteError::Commit(_)), "{refused}");
            assert!(writer.probe().await.is_ok(), "one event alone");
            let refused = writer.apply(event(4), 0).await.unwrap_err();
            assert!(matches!(refused, WriteError::Commit(_)), "{refused}");
            let unhealthy = writer.probe().await.unwrap_err().to_string();
            assert!(
                unhealthy.starts_with("the last commit of events failed 0 s ago")
                    && unhealthy.contains("no room for events"),
                "{unhealthy}"
            );
            let again = writer.apply(event(1), 0).await;
            assert!(matches!(again, Ok(Applied::Duplicate { .. })), "{again:?}");
            assert!(
                writer.probe().await.is_err(),
                "a redelivery stores no event"
            );
            fail(false);
            assert!(writer.probe().await.is_err(), "until events commit again");
            assert!(writer.apply(event(3), 0).await.is_ok());
            assert!(writer.probe().await.is_ok());
        });
        running.stop();
    }

    /// A full queue is a busy writer: the probe waits for room, and is answered (it
    /// was `Overloaded` at once, and `/healthz` 503 in the middle of a cascade). An
    /// event's budget share is held until the writer is done with it, also when its
    /// request gave up (a review: abandoned events stayed queued outside the budget).
    #[test]
    fn a_full_queue_is_probed_and_holds_its_budget() {
        let running = Running::start(1);
        let writer = &running.writer;
        let budget = Arc::new(tokio::sync::Semaphore::new(1));
        runtime().block_on(async {
            // The writer busy for a moment, and the queue full behind it.
            let (started, running) = std::sync::mpsc::channel();
            let busy = {
                let writer = writer.clone();
                tokio::task::spawn_blocking(move || {
                    writer.run_blocking(move |_| {
                        started.send(()).unwrap();
                        std::thread::sleep(Duration::from_millis(300));
                        Ok(())
                    })
                })
            };
            running.recv().unwrap();
            let share = budget.clone().try_acquire_owned().unwrap();
            let deadline = tokio::time::Instant::now() + Duration::from_millis(50);
            let given_up = writer
                .apply_until(event(1), 0, Some(deadline), Some(share), || {})
                .await;
            assert!(
                matches!(given_up, Err(WriteError::TimedOut)),
                "{given_up:?}"
            );
            assert_eq!(budget.available_permits(), 0, "held while queued");
            assert!(matches!(
                writer.apply(event(2), 0).await,
                Err(WriteError::Overloaded)
            ));
            // A probe given up while it waits for room leaves no trace in the depth.
            let given_up = tokio::time::timeout(Duration::from_millis(10), writer.probe()).await;
            assert!(given_up.is_err(), "still waiting for room");
            assert!(writer.probe().await.is_ok(), "waited for room");
            assert_eq!(budget.available_permits(), 1, "given back once skipped");
            busy.await.unwrap().unwrap().unwrap();
        });
        assert_eq!(running.metrics.queue_depth.get(), 0);
        running.stop();
    }

    /// A full disk fails every commit, a redelivery's count of duplicates too; the
    /// event itself is stored, and its redelivery is answered with its first outcome
    /// (it got 503, and the sender retried it; found by a black-box probe).
    #[test]
    fn a_redelivery_of_a_stored_event_is_answered_when_commits_fail() {
        let running = Running::start(16);
        let (writer, db) = (&running.writer, running.db.clone());
        let rejected = Delivery::parse(
            br#"{"id":"bad","type":"contact.created","payload":{"id":"c","username":5}}"#,
        )
        .unwrap();
        runtime().block_on(async {
            assert!(writer.apply(event(1), 0).await.is_ok());
            assert!(writer.apply(rejected.clone(), 0).await.is_ok());
            Store::open(&db)
                .unwrap()
                .conn()
                .execute_batch(
                    "CREATE TRIGGER full_i BEFORE INSERT ON events BEGIN
                         SELECT RAISE(ABORT, 'disk full (test)'); END;
                     CREATE TRIGGER full_u BEFORE UPDATE ON events BEGIN
                         SELECT RAISE(ABORT, 'disk full (test)'); END;",
                )
                .unwrap();
            assert_eq!(
                writer.apply(event(1), 0).await.unwrap(),
                Applied::Duplicate {
                    first: crate::apply::Outcome::Applied,
                    rejection: None,
                }
            );
            let again = writer.apply(rejected, 0).await.unwrap();
            assert!(
                matches!(
                    &again,
                    Applied::Duplicate {
                        first: crate::apply::Outcome::Rejected,
                        rejection: Some(why),
                    } if why.contains("payload.username")
                ),
                "{again:?}"
            );
            let new = writer.apply(event(2), 0).await.unwrap_err();
            assert!(matches!(new, WriteError::Commit(_)), "{new}");
        });
        let _dir = running.stop();
        let store = Store::open(&db).unwrap();
        let counted: i64 = store
            .conn()
            .query_row("SELECT sum(duplicates) FROM events", [], |row| row.get(0))
            .unwrap();
        assert_eq!(counted, 0, "the failed batches wrote nothing");
    }

    /// A health probe that cannot commit (another program's lock) is no failed batch
    /// of events: it counted in `protocol_mirror_commit_failures_total` and logged "a
    /// batch failed" with no event in it (found by a black-box probe).
    #[test]
    fn a_failed_probe_is_no_failed_commit_of_events() {
        let running = Running::start(16);
        let locker = rusqlite::Connection::open(&running.db).unwrap();
        locker.execute_batch("BEGIN IMMEDIATE").unwrap();
        runtime().block_on(async {
            let locked = running.writer.probe().await.unwrap_err();
            assert!(matches!(locked, WriteError::Commit(_)), "{locked}");
        });
        assert_eq!(running.metrics.commit_failures.get(), 0);
        locker.execute_batch("COMMIT").unwrap();
        running.stop();
    }

    /// An event whose request gave up before the writer took it is left out before
    /// the database is asked for: a batch of only such events waited out the busy
    /// timeout behind another program's lock, and counted as one more failed commit
    /// (a review). Takes the busy timeout twice.
    #[test]
    fn events_given_up_in_the_queue_wait_for_no_lock() {
        let running = Running::start(16);
        let writer = &running.writer;
        let locker = rusqlite::Connection::open(&running.db).unwrap();
        locker.execute_batch("BEGIN IMMEDIATE").unwrap();
        runtime().block_on(async {
            // The first is taken (within its second), and its batch waits for the
            // lock; the second gives up in the queue behind it.
            for (n, wait) in [(1, 1_000), (2, 50)] {
                let deadline = tokio::time::Instant::now() + Duration::from_millis(wait);
                let given_up = writer
                    .apply_until(event(n), 0, Some(deadline), None, || {})
                    .await;
                assert!(
                    matches!(given_up, Err(WriteError::TimedOut)),
                    "{given_up:?}"
                );
            }
            // Behind them, waiting for the lock until its busy timeout.
            let probed = writer.probe().await;
            assert!(matches!(probed, Err(WriteError::Commit(_))), "{probed:?}");
        });
        assert_eq!(
            running.metrics.commit_failures.get(),
            1,
            "the first batch only"
        );
        locker.execute_batch("COMMIT").unwrap();
        running.stop();
    }

    /// An event queued while the writer waits for another process's transaction
    /// joins the batch that waits: it waited for the next such transaction too (0.85 s
    /// beside an import, found by a black-box probe).
    #[test]
    fn events_queued_while_the_database_is_busy_join_the_waiting_batch() {
        let running = Running::start(16);
        let writer = &running.writer;
        let mut other = Store::open(&running.db).unwrap();
        let held = other.transaction().unwrap();
        runtime().block_on(async {
            let first = tokio::spawn({
                let writer = writer.clone();
                async move { writer.apply(event(1), 0).await }
            });
            tokio::time::sleep(Duration::from_millis(150)).await;
            let second = tokio::spawn({
                let writer = writer.clone();
                async move { writer.apply(event(2), 0).await }
            });
            tokio::time::sleep(Duration::from_millis(150)).await;
            held.commit().unwrap();
            assert!(first.await.unwrap().is_ok());
            assert!(second.await.unwrap().is_ok());
        });
        let text = running.metrics.render();
        let value = |name: &str| {
            text.lines()
                .find_map(|line| line.strip_prefix(name)?.trim().parse::<f64>().ok())
                .unwrap_or_else(|| panic!("{name} in\n{text}"))
        };
        assert_eq!(
            value("protocol_mirror_commit_batch_size_count"),
            1.0,
            "{text}"
        );
        assert_eq!(
            value("protocol_mirror_commit_batch_size_sum"),
            2.0,
            "{text}"
        );
        running.stop();
    }

    /// A trigger that makes `event(2)` (contact `c2`) fail for its own data: what
    /// could make one event fail (no input does today).
    fn poison_contact_c2(store: &Store) {
        store
            .conn()
            .execute_batch(
                "CREATE TRIGGER poison BEFORE INSERT ON contacts WHEN NEW.id = 'c2' BEGIN
                     SELECT RAISE(ABORT, 'poisoned (test)'); END;",
            )
            .unwrap();
    }

    /// One event that cannot be stored fails alone: the others of its batch are
    /// applied. (Before, it failed the whole batch, and, redelivered again and again,
    /// every batch it joined; a review.) A trigger stands for what could make one
    /// event fail: no input does today.
    #[test]
    fn an_event_that_cannot_be_stored_fails_alone() {
        let running = Running::start(16);
        let writer = &running.writer;
        let mut other = Store::open(&running.db).unwrap();
        poison_contact_c2(&other);
        let held = other.transaction().unwrap();
        let results = runtime().block_on(async {
            let applying: Vec<_> = (1..=3)
                .map(|n| {
                    let writer = writer.clone();
                    tokio::spawn(async move { writer.apply(event(n), 0).await })
                })
                .collect();
            tokio::time::sleep(Duration::from_millis(300)).await;
            held.commit().unwrap();
            let mut results = Vec::new();
            for applying in applying {
                results.push(applying.await.unwrap());
            }
            results
        });
        assert!(results[0].is_ok(), "{results:?}");
        assert!(
            matches!(&results[1], Err(WriteError::Commit(m)) if m.contains("poisoned")),
            "{results:?}"
        );
        assert!(results[2].is_ok(), "{results:?}");
        let text = running.metrics.render();
        assert!(
            text.contains("protocol_mirror_commit_batch_size_count 1\n"),
            "one batch: {text}"
        );
        let stopped = running.stop();
        let ids: Vec<String> = Store::open_read_only(&stopped.path().join("m.db"))
            .unwrap()
            .conn()
            .prepare("SELECT event_id FROM events ORDER BY seq")
            .unwrap()
            .query_map([], |row| row.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(ids, ["e1", "e3"]);
    }

    /// An event that cannot be stored, alone in its batch, gets 503 without marking
    /// events failing, at each redelivery (`/healthz` answered 503 after each: a
    /// review).
    #[test]
    fn a_lone_event_that_cannot_be_stored_leaves_the_writer_healthy() {
        let running = Running::start(16);
        let writer = &running.writer;
        poison_contact_c2(&Store::open(&running.db).unwrap());
        for _ in 0..2 {
            let result = runtime().block_on(writer.clone().apply(event(2), 0));
            assert!(
                matches!(&result, Err(WriteError::Commit(m)) if m.contains("poisoned")),
                "{result:?}"
            );
            let failing = writer.events_failing();
            assert!(failing.is_none(), "{failing:?}");
        }
        let text = running.metrics.render();
        assert!(
            text.contains("protocol_mirror_commit_failures_total 2\n"),
            "{text}"
        );
        // Past the grace, with nothing committed meanwhile, the failure is the
        // writer's after all.
        std::thread::sleep(LONE_FAILURE_GRACE + Duration::from_millis(100));
        let result = runtime().block_on(writer.clone().apply(event(2), 0));
        assert!(matches!(&result, Err(WriteError::Commit(_))), "{result:?}");
        assert!(writer.events_failing().is_some());
        assert!(
            runtime()
                .block_on(writer.clone().apply(event(1), 0))
                .is_ok()
        );
        assert!(writer.events_failing().is_none(), "an event committed");
    }

    /// A health probe batched with an event that cannot be stored is answered for the
    /// writer, not for the event (it answered 503: `/healthz` failed beside a poison
    /// event).
    #[test]
    fn a_probe_batched_with_a_lone_poison_event_is_answered_ok() {
        let running = Running::start(16);
        let writer = &running.writer;
        poison_contact_c2(&Store::open(&running.db).unwrap());
        // The writer is held while the event and the probe queue: one batch takes both.
        let holding = std::thread::spawn({
            let writer = writer.clone();
            move || {
                writer.run_blocking(|_| {
                    std::thread::sleep(Duration::from_millis(300));
                    Ok(())
                })
            }
        });
        std::thread::sleep(Duration::from_millis(100));
        let (event, probe) =
            runtime().block_on(async { tokio::join!(writer.apply(event(2), 0), writer.probe()) });
        holding.join().unwrap().unwrap().unwrap();
        assert!(
            matches!(&event, Err(WriteError::Commit(m)) if m.contains("poisoned")),
            "{event:?}"
        );
        assert!(probe.is_ok(), "{probe:?}");
        assert!(writer.events_failing().is_none());
    }

    /// An import's transaction that outlasts the busy timeout (one event of it may
    /// cascade over hundreds of thousands of rows) is waited out: the event gets 503
    /// from a stranger's lock, and waits for an import's (found by a black-box probe:
    /// webhooks beside `import` got 503). Takes the busy timeout twice over.
    #[test]
    fn an_imports_long_transaction_is_waited_out() {
        let running = Running::start(16);
        let (writer, db) = (&running.writer, &running.db);
        let mut other = Store::open(db).unwrap();
        let hold = crate::store::BUSY_TIMEOUT + Duration::from_secs(1);
        for (n, import) in [(1, false), (2, true)] {
            let mark = import.then(|| ImportMark::take(db).unwrap());
            let held = other.transaction().unwrap();
            let applying = std::thread::spawn({
                let writer = writer.clone();
                move || runtime_result(writer, n)
            });
            std::thread::sleep(hold);
            held.commit().unwrap();
            drop(mark);
            let result = applying.join().unwrap();
            if import {
                assert!(result.is_ok(), "{result:?}");
            } else {
                assert!(matches!(result, Err(WriteError::Commit(_))), "{result:?}");
            }
        }
        runtime().block_on(async { assert!(writer.apply(event(3), 0).await.is_ok()) });
        running.stop();
    }

    /// The one-by-one retry of a failed batch waits out an import's long transaction
    /// too, though the first try took every event of it (it waited only while an
    /// event was not yet taken, and failed the retry's good events with 503: a
    /// review). Takes the busy timeout and a second.
    #[test]
    fn a_retry_one_by_one_waits_out_an_import() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("m.db");
        let mut store = Store::open(&db).unwrap();
        let (metrics, failure_log) = (Metrics::new(None), Arc::new(LogLimit::default()));
        let (last_failure, lone_failure) = (LastFailure::default(), Default::default());
        let file = DatabaseFile::of(&db);
        let writing = Writing {
            metrics: &metrics,
            last_failure: &last_failure,
            failure_log: &failure_log,
            file: file.as_ref(),
            lone_failure: &lone_failure,
        };
        let (reply, _answer) = oneshot::channel();
        let claim = Arc::new(Claim::default());
        assert!(claim.take(), "taken by the first try");
        let mut batch = vec![Job::Apply {
            delivery: Box::new(event(1)),
            received_at: 0,
            reply,
            claim,
            _budget: None,
        }];
        let mark = ImportMark::take(&db).unwrap();
        let mut import = Store::open(&db).unwrap();
        let (began, has_begun) = std::sync::mpsc::channel();
        let importing = std::thread::spawn(move || {
            let held = import.transaction().unwrap();
            began.send(()).unwrap();
            std::thread::sleep(crate::store::BUSY_TIMEOUT + Duration::from_secs(1));
            held.commit().unwrap();
            drop(mark);
        });
        has_begun.recv().unwrap();
        let retried = write_batch(&mut store, &mut batch, writing, None, true);
        importing.join().unwrap();
        assert!(retried.is_ok(), "{:?}", retried.err());
    }

    /// A failed batch answers, and counts, the stored redeliveries whose claim is the
    /// writer's: one whose request gave up is a reader's to answer and count; one
    /// taken whose sender hung up is counted, as a commit counts it (a review: the
    /// first was counted twice, the second never).
    #[test]
    fn a_failed_batch_counts_the_redeliveries_it_answers() {
        let mut store = Store::open_in_memory().unwrap();
        store
            .apply(
                br#"{"id":"e1","type":"contact.created","payload":{"id":"c1"}}"#,
                1,
            )
            .unwrap();
        let updated = br#"{"id":"e2","type":"contact.updated","payload":{"id":"c1"}}"#;
        store.apply(updated, 1).unwrap();
        let metrics = Metrics::new(None);
        let (given_up, taken) = (Arc::new(Claim::default()), Arc::new(Claim::default()));
        assert!(given_up.abandon());
        assert!(taken.take());
        let (reply_open, _answer) = oneshot::channel();
        let (reply_closed, answer) = oneshot::channel();
        drop(answer);
        let mut batch = vec![
            Job::Apply {
                delivery: Box::new(event(1)),
                received_at: 0,
                reply: reply_open,
                claim: given_up,
                _budget: None,
            },
            Job::Apply {
                delivery: Box::new(Delivery::parse(updated).unwrap()),
                received_at: 0,
                reply: reply_closed,
                claim: taken,
                _budget: None,
            },
        ];
        answer_failed(&mut batch, "disk full", Some((&store, &metrics)));
        let text = metrics.render();
        let counted: Vec<_> = text
            .lines()
            .filter(|line| {
                line.starts_with("protocol_mirror_events_total{") && !line.ends_with(" 0")
            })
            .collect();
        assert_eq!(
            counted,
            [r#"protocol_mirror_events_total{type="contact.updated",outcome="duplicate"} 1"#],
            "{text}"
        );
    }

    /// Applies `event(n)` through `writer` on a runtime of its own.
    fn runtime_result(writer: Writer, n: u32) -> Result<Applied, WriteError> {
        runtime().block_on(async move { writer.apply(event(n), 0).await })
    }

    /// A backup to restore: a database of one event, `restored.db` in `dir`.
    fn a_backup(dir: &std::path::Path) -> std::path::PathBuf {
        let backup = dir.join("restored.db");
        Store::open(&backup)
            .unwrap()
            .apply(
                br#"{"id":"r1","type":"contact.created","payload":{"id":"c"}}"#,
                1,
            )
            .unwrap();
        backup
    }

    /// Applies `event(n)` for every `n` of `events`, each acknowledged.
    async fn apply_all(writer: &Writer, events: std::ops::RangeInclusive<u32>) {
        for n in events {
            assert!(writer.apply(event(n), 0).await.is_ok());
        }
    }

    /// How many events the database at `path` logged, and its integrity check.
    fn logged(path: &std::path::Path) -> (i64, String) {
        Store::open_read_only(path)
            .unwrap()
            .conn()
            .query_row(
                "SELECT (SELECT COUNT(*) FROM events), (SELECT * FROM pragma_integrity_check)",
                [],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .unwrap()
    }

    /// A database moved over the running daemon's (a backup restored) is not given
    /// the daemon's write-ahead log: SQLite finds it by name, and the next open of the
    /// new file read it in (a black-box probe: its events were 159 where it held 19,
    /// and its indexes broken; a restart checkpointed that into it for good).
    #[test]
    fn a_database_moved_over_the_writers_keeps_its_own_content() {
        let running = Running::start(16);
        let (writer, db) = (&running.writer, running.db.clone());
        let restored = a_backup(running.dir.path());
        runtime().block_on(async {
            apply_all(writer, 1..=50).await;
            assert!(crate::beside(&db, "-wal").exists());
            std::fs::rename(&restored, &db).unwrap();
            assert!(writer.apply(event(51), 0).await.is_err());
        });
        let _dir = running.stop();
        assert_eq!(logged(&db), (1, "ok".to_owned()));
    }

    /// A database moved over the writer's after its last batch, with none after it
    /// before the stop: the stop takes the log away too (a review).
    #[test]
    fn a_database_moved_over_after_the_last_batch_keeps_its_own_content() {
        let running = Running::start(16);
        let (writer, db) = (&running.writer, running.db.clone());
        let restored = a_backup(running.dir.path());
        runtime().block_on(async {
            apply_all(writer, 1..=50).await;
        });
        std::fs::rename(&restored, &db).unwrap();
        let _dir = running.stop();
        assert_eq!(logged(&db), (1, "ok".to_owned()));
    }

    /// A database moved elsewhere under the writer keeps every event it acknowledged:
    /// its write-ahead log, taken away from beside the old name, is first copied into
    /// the file where it now is.
    #[test]
    fn a_database_moved_away_from_the_writer_keeps_its_events() {
        let running = Running::start(16);
        let (writer, db) = (&running.writer, running.db.clone());
        let moved = running.dir.path().join("moved.db");
        runtime().block_on(async {
            apply_all(writer, 1..=50).await;
            std::fs::rename(&db, &moved).unwrap();
            assert!(writer.apply(event(51), 0).await.is_err());
        });
        assert!(!crate::beside(&db, "-wal").exists(), "taken away");
        let _dir = running.stop();
        assert_eq!(logged(&moved), (50, "ok".to_owned()));
    }

    /// A reader's snapshot keeps the log from being copied whole into a database moved
    /// away: the log stays beside the name until it is (the file needs it), and goes
    /// when the writer stops (it was taken away at once, and the moved file, killed
    /// before the stop, was damaged; a review).
    #[test]
    fn a_log_not_copied_whole_stays_until_it_is() {
        let running = Running::start(16);
        let (writer, db) = (&running.writer, running.db.clone());
        let moved = running.dir.path().join("moved.db");
        let reader = Store::open_read_only(&db).unwrap();
        runtime().block_on(async {
            apply_all(writer, 1..=50).await;
            reader
                .conn()
                .execute_batch("BEGIN; SELECT COUNT(*) FROM events;")
                .unwrap();
            apply_all(writer, 51..=60).await;
            std::fs::rename(&db, &moved).unwrap();
            assert!(writer.apply(event(61), 0).await.is_err());
        });
        assert!(
            crate::beside(&db, "-wal").exists(),
            "kept while it is needed"
        );
        reader.conn().execute_batch("COMMIT").unwrap();
        drop(reader);
        let _dir = running.stop();
        assert!(
            !crate::beside(&db, "-wal").exists(),
            "taken away at the stop"
        );
        assert_eq!(logged(&moved), (60, "ok".to_owned()));
    }

    /// Found gone once, the database takes no more events, even moved back: its log
    /// was copied into it and taken away from beside the name, and commits into a log
    /// no other process sees would be lost (a review).
    #[test]
    fn a_database_moved_away_and_back_takes_no_more_events() {
        let running = Running::start(16);
        let (writer, db) = (&running.writer, running.db.clone());
        let moved = running.dir.path().join("moved.db");
        runtime().block_on(async {
            apply_all(writer, 1..=10).await;
            std::fs::rename(&db, &moved).unwrap();
            assert!(writer.apply(event(11), 0).await.is_err());
            std::fs::rename(&moved, &db).unwrap();
            // Said as it is: the file is back (it was said to be gone; a probe).
            let refused = writer.apply(event(12), 0).await.unwrap_err().to_string();
            assert!(
                refused.contains("was moved away while this daemon ran, and is back"),
                "{refused}"
            );
            assert!(refused.contains("start it again"), "{refused}");
        });
        // A backfill page too (it went into the log taken away; a review).
        let page = writer.run_blocking(|conn| {
            conn.execute_batch("CREATE TABLE page (x); INSERT INTO page VALUES (1);")
                .map_err(|source| crate::store::StoreError::Sqlite {
                    context: "writing a page",
                    source,
                })
        });
        let refused = page.unwrap().unwrap_err().to_string();
        assert!(refused.contains("moved away"), "{refused}");
        let _dir = running.stop();
        assert_eq!(logged(&db), (10, "ok".to_owned()));
    }

    /// `--db` a symbolic link pointed elsewhere: the events go no further, and the
    /// file it led to keeps its `-wal` and `-shm` (it is still there, and they are
    /// its own; a review).
    #[cfg(unix)]
    #[test]
    fn a_link_pointed_elsewhere_leaves_its_old_files_their_log() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, link) = (
            dir.path().join("a.db"),
            dir.path().join("b.db"),
            dir.path().join("m.db"),
        );
        drop(Store::open(&b).unwrap());
        std::os::unix::fs::symlink(&a, &link).unwrap();
        let metrics = Arc::new(Metrics::new(None));
        let (writer, thread) = Writer::start(Store::open(&link).unwrap(), 16, 16, metrics).unwrap();
        runtime().block_on(async {
            apply_all(&writer, 1..=10).await;
            std::fs::remove_file(&link).unwrap();
            std::os::unix::fs::symlink(&b, &link).unwrap();
            assert!(writer.apply(event(11), 0).await.is_err());
        });
        assert!(crate::beside(&a, "-wal").exists(), "a.db keeps its log");
        assert!(crate::beside(&a, "-shm").exists());
        drop(writer);
        thread.join().unwrap();
        assert_eq!(logged(&a), (10, "ok".to_owned()));
    }

    #[test]
    fn a_database_removed_under_the_writer_takes_no_more_events() {
        let running = Running::start(16);
        let (writer, db, dir) = (&running.writer, &running.db, running.dir.path());
        runtime().block_on(async {
            assert!(writer.apply(event(1), 0).await.is_ok());
            assert!(writer.file_holds());
            // Replaced: moved away, and another file put in its place.
            std::fs::rename(db, dir.join("moved.db")).unwrap();
            std::fs::write(db, b"").unwrap();
            // Seen at once by the readers' answers to redeliveries, before the next
            // batch (they answered `duplicate` from the old file: a review).
            assert!(!writer.file_holds());
            let refused = writer.apply(event(2), 0).await.unwrap_err().to_string();
            assert!(refused.contains("removed or replaced"), "{refused}");
            // A redelivery too: the event is in a file no later start opens.
            assert!(writer.apply(event(1), 0).await.is_err(), "not a duplicate");
            let health = writer.probe().await.unwrap_err().to_string();
            assert!(health.contains("removed or replaced"), "{health}");
            // Removed.
            std::fs::remove_file(db).unwrap();
            assert!(writer.apply(event(3), 0).await.is_err());
        });
        // Said at the stop (it said "stopped cleanly": a black-box probe).
        drop(running.writer);
        let (_, left) = running.thread.finish().unwrap();
        assert_eq!(left, LogLeft::FileGone);
    }

    /// A database file removed after the writer's last batch is found at the stop.
    #[test]
    fn a_database_removed_after_the_last_batch_is_said_at_the_stop() {
        let running = Running::start(16);
        runtime().block_on(apply_all(&running.writer, 1..=3));
        std::fs::remove_file(&running.db).unwrap();
        drop(running.writer);
        let (_, left) = running.thread.finish().unwrap();
        assert_eq!(left, LogLeft::FileGone);
    }

    /// The database file emptied under a running writer (`truncate -s 0 m.db`): every
    /// batch went on committing into the log of a database that was no more, each
    /// acknowledged, and the file was unreadable afterwards (a black-box probe). Now it
    /// takes no more events, and says to restore the file.
    #[test]
    fn a_database_emptied_under_the_writer_takes_no_more_events() {
        let empty = |db: &std::path::Path| {
            std::fs::OpenOptions::new()
                .write(true)
                .open(db)
                .unwrap()
                .set_len(0)
                .unwrap();
        };
        // Before the first batch too (it was never found so then: a review).
        for events in [20, 0] {
            let running = Running::start(16);
            let (writer, db) = (&running.writer, running.db.clone());
            runtime().block_on(async {
                apply_all(writer, 1..=events).await;
                empty(&db);
                // The readers' answers to redeliveries see it at once.
                assert!(!writer.file_holds());
                let refused = writer.apply(event(21), 0).await.unwrap_err().to_string();
                assert!(refused.contains("was emptied"), "{refused}");
                assert!(refused.contains("restore from a backup"), "{refused}");
                let health = writer.probe().await.unwrap_err().to_string();
                assert!(health.contains("was emptied"), "{health}");
            });
            // The stop leaves the file as it found it, and the log beside it, as it
            // says (SQLite's close copied the log into it and removed it: a review).
            let (_, left) = {
                drop(running.writer);
                running.thread.finish().unwrap()
            };
            assert_eq!(left, LogLeft::FileEmptied);
            assert_eq!(std::fs::metadata(&db).unwrap().len(), 0, "{events}");
            assert!(crate::beside(&db, "-wal").exists(), "{events}");
            // Marked, so that a restart does not start over on it without a word (a
            // probe); the start refuses a file whose log is empty while it stands.
            let mark = std::fs::read_to_string(crate::store::damage_mark_path(&db)).unwrap();
            assert!(mark.contains("was emptied"), "{mark}");
            drop(running.dir);
        }
    }

    /// The `-wal` cut under a running writer (`truncate -s 0 m.db-wal`, to free space):
    /// SQLite went on writing its frames after a hole, every event was acknowledged,
    /// and the stop copied the hole's zeros into the file as pages (a black-box probe:
    /// malformed). Now the commit that finds the log cut is answered with an error,
    /// no more events are taken, and nothing of the log goes into the file, which is
    /// marked, and holds what the last copy put there.
    #[test]
    fn a_log_cut_under_the_writer_takes_no_more_events_and_is_not_copied() {
        // After the cut: an event; a reconcile's page (its commit skipped the check,
        // and the stop copied the hole: a review); nothing (the stop's copy read
        // short, and said "disk I/O error": a review).
        for after in ["an event", "a page", "nothing"] {
            let running = Running::start(16);
            let (writer, db) = (&running.writer, running.db.clone());
            runtime().block_on(async {
                // Ten copied into the file (as the checkpointer does), ten in the log.
                apply_all(writer, 1..=10).await;
                rusqlite::Connection::open(&db)
                    .unwrap()
                    .execute_batch("PRAGMA wal_checkpoint(PASSIVE)")
                    .unwrap();
                apply_all(writer, 11..=20).await;
            });
            std::fs::OpenOptions::new()
                .write(true)
                .open(crate::beside(&db, "-wal"))
                .unwrap()
                .set_len(0)
                .unwrap();
            match after {
                "an event" => runtime().block_on(async {
                    let refused = writer.apply(event(21), 0).await.unwrap_err().to_string();
                    assert!(refused.contains("write-ahead log was cut"), "{refused}");
                    assert!(refused.contains("backfill"), "{refused}");
                    let again = writer.apply(event(22), 0).await.unwrap_err().to_string();
                    assert!(again.contains("write-ahead log was cut"), "{again}");
                    let health = writer.probe().await.unwrap_err().to_string();
                    assert!(health.contains("was cut"), "{health}");
                }),
                "a page" => {
                    let _ = writer.run_blocking(|conn| {
                        conn.execute_batch("CREATE TABLE page (x); INSERT INTO page VALUES (1);")
                            .map_err(|source| crate::store::StoreError::Sqlite {
                                context: "writing a page",
                                source,
                            })
                    });
                }
                _ => {}
            }
            let (store, left) = {
                drop(running.writer);
                running.thread.finish().unwrap()
            };
            store.close().unwrap();
            assert_eq!(left, LogLeft::LogCut, "{after}");
            let mark = std::fs::read_to_string(crate::store::damage_mark_path(&db)).unwrap();
            assert!(mark.contains("write-ahead log was cut"), "{after}: {mark}");
            // The file as the last copy left it: whole, without the events the cut log
            // held.
            std::fs::remove_file(crate::beside(&db, "-wal")).unwrap();
            let _ = std::fs::remove_file(crate::beside(&db, "-shm"));
            assert_eq!(logged(&db), (10, "ok".to_owned()), "{after}");
            drop(running.dir);
        }
    }

    /// The `-wal` (or `-shm`) removed under a running writer (`rm m.db-*`): its
    /// commits went into a log no other process reads, and a crash lost every event
    /// acknowledged since. Now it takes no more events, and the log it has is copied
    /// into the file at once: the file alone, as a crash would leave it, holds all
    /// it acknowledged.
    #[test]
    fn a_log_removed_under_the_writer_is_copied_and_takes_no_more_events() {
        for suffix in ["-wal", "-shm"] {
            let running = Running::start(16);
            let (writer, db, dir) = (&running.writer, &running.db, running.dir.path());
            runtime().block_on(async {
                apply_all(writer, 1..=20).await;
                std::fs::remove_file(crate::beside(db, suffix)).unwrap();
                let refused = writer.apply(event(21), 0).await.unwrap_err().to_string();
                assert!(refused.contains("log or shared-memory file"), "{refused}");
                let health = writer.probe().await.unwrap_err().to_string();
                assert!(health.contains("removed or replaced"), "{health}");
            });
            // The file alone, as a kill now would leave it for the next start.
            let alone = dir.join("alone.db");
            std::fs::copy(db, &alone).unwrap();
            assert_eq!(logged(&alone), (20, "ok".to_owned()), "{suffix}");
            running.stop();
        }
    }

    /// A statement that runs for long (a cascade over a large conversation) shows the
    /// writer at work; an idle writer, or one waiting for another connection's lock,
    /// does not.
    #[test]
    fn the_writer_shows_it_works_while_a_long_statement_runs() {
        let running = Running::start(16);
        let writer = &running.writer;
        let window = Duration::from_millis(200);
        assert!(!writer.worked_within(window), "no SQL yet");

        // A statement of about a second, on the writer thread.
        let long = {
            let writer = writer.clone();
            std::thread::spawn(move || {
                writer.run_blocking(|conn| {
                    let started = Instant::now();
                    while started.elapsed() < Duration::from_millis(1500) {
                        conn.query_row(
                            "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n \
                             WHERE x < 20000) SELECT count(*) FROM n",
                            [],
                            |row| row.get::<_, i64>(0),
                        )
                        .map_err(|source| StoreError::Sqlite {
                            context: "counting",
                            source,
                        })?;
                    }
                    Ok(())
                })
            })
        };
        assert!(
            wait_until(Duration::from_secs(5), || writer.worked_within(window)),
            "the long statement never showed"
        );
        long.join().unwrap().unwrap().unwrap();
        assert!(
            wait_until(Duration::from_secs(5), || !writer.worked_within(window)),
            "an idle writer still shows at work"
        );

        // Waiting for another connection's lock is not work.
        let locker = rusqlite::Connection::open(&running.db).unwrap();
        locker.execute_batch("BEGIN IMMEDIATE").unwrap();
        let waiting = {
            let writer = writer.clone();
            std::thread::spawn(move || runtime_result(writer, 1))
        };
        std::thread::sleep(Duration::from_secs(1));
        assert!(
            !writer.worked_within(window),
            "a wait for a lock shows as work"
        );
        locker.execute_batch("COMMIT").unwrap();
        assert!(waiting.join().unwrap().is_ok());
        running.stop();
    }

    /// Whether `done` holds before `limit` passes (checked every 10 ms).
    fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
        let started = Instant::now();
        while started.elapsed() < limit {
            if done() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        done()
    }

    #[test]
    fn a_failure_shows_for_a_while() {
        let last = LastFailure::default();
        assert!(last.recent().is_none());
        last.set(Some("full".into()));
        assert!(last.recent().is_some());
        *last.0.lock().unwrap() = Some((Instant::now() - FAILURE_SHOWS_FOR, "full".into(), false));
        assert!(last.recent().is_none(), "not past FAILURE_SHOWS_FOR");
        last.set(None);
        assert!(last.recent().is_none());
        // A damaged database's shows until the daemon stops, whatever fails meanwhile
        // (a busy database's failure ended it after 10 s: a review), and whatever
        // commits (events committed into the damaged file: a probe).
        last.set_lasting("damaged".into());
        *last.0.lock().unwrap() =
            Some((Instant::now() - FAILURE_SHOWS_FOR, "damaged".into(), true));
        assert!(last.recent().is_some(), "lasting");
        last.set(Some("busy".into()));
        last.set_lasting("damaged again".into());
        let shown = last.recent().map(|e| e.to_string()).unwrap_or_default();
        assert!(shown.ends_with(": damaged"), "the first finding: {shown}");
        last.set(None);
        assert_eq!(last.lasting().as_deref(), Some("damaged"));
    }

    /// A database found damaged at a commit of events (an index's page overwritten)
    /// is said to be, with how to get it back, and `/healthz` reports it until the
    /// daemon stops; it was a failure like a full disk's, "retry later", and `/healthz`
    /// was ok again 10 s later (an operator probe).
    #[test]
    fn a_damaged_database_is_said_to_be_and_shows_in_the_probe() {
        let running = Running::start(16);
        runtime().block_on(apply_all(&running.writer, 1..=50));
        // The root page of the index on event ids, overwritten.
        let running =
            running.restart_after(|db| crate::store::garble_root_page(db, "events_event_id"));
        let writer = &running.writer;
        runtime().block_on(async {
            for n in [51, 52] {
                let refused = writer.apply(event(n), 0).await.unwrap_err().to_string();
                assert!(refused.contains("is damaged"), "{refused}");
            }
            let health = writer.probe().await.unwrap_err().to_string();
            assert!(
                health.contains("is damaged") && health.contains("restore it from a backup"),
                "{health}"
            );
        });
        // Left beside it for the next start (`store::damage`).
        let mark = std::fs::read_to_string(crate::store::damage_mark_path(&running.db)).unwrap();
        assert!(mark.contains("malformed"), "{mark}");
        running.stop();
    }

    /// Damage that fails a constraint (a rowid read low from a garbled page) latches
    /// the writer as SQLite's own finding does: it was taken for the one event's own
    /// failure, and the writer took other events into the file (a black-box probe).
    #[test]
    fn damage_met_as_a_failed_constraint_takes_no_more_events() {
        let running = Running::start(16);
        runtime().block_on(apply_all(&running.writer, 1..=3));
        let running = running.restart_after(|db| crate::store::garble_last_rowid(db, "contacts"));
        let writer = &running.writer;
        runtime().block_on(async {
            let refused = writer.apply(event(4), 0).await.unwrap_err().to_string();
            assert!(
                refused.contains("is damaged") && refused.contains("out of order"),
                "{refused}"
            );
            let health = writer.probe().await.unwrap_err().to_string();
            assert!(health.contains("takes no more events"), "{health}");
        });
        let mark = std::fs::read_to_string(crate::store::damage_mark_path(&running.db)).unwrap();
        assert!(mark.contains("UNIQUE constraint failed"), "{mark}");
        running.stop();
    }

    /// A damage mark another process leaves while the daemon runs (an import that met
    /// the damage) latches the writer as its own finding would: the daemon took events
    /// into the file after it (a black-box probe).
    #[test]
    fn a_mark_left_by_another_process_takes_no_more_events() {
        let running = Running::start(16);
        runtime().block_on(async {
            apply_all(&running.writer, 1..=3).await;
            // An empty file at the mark's name (`touch`) is no finding (a probe).
            let mark = crate::store::damage_mark_path(&running.db);
            std::fs::write(&mark, "").unwrap();
            running.writer.apply(event(4), 0).await.unwrap();
            std::fs::remove_file(&mark).unwrap();
            crate::store::mark_damaged(&running.db, "malformed").unwrap();
            let refused = running.writer.apply(event(5), 0).await.unwrap_err();
            assert!(
                refused
                    .to_string()
                    .contains("found damaged by another process"),
                "{refused}"
            );
            let health = running.writer.probe().await.unwrap_err().to_string();
            assert!(health.contains("takes no more events"), "{health}");
        });
        drop(running.stop());
    }

    /// Either the writer takes an event or its request abandons it, never both: an
    /// event answered "not stored" (503) is never applied afterwards.
    #[test]
    fn an_event_is_either_taken_or_abandoned() {
        let claim = Claim::default();
        assert!(claim.abandon());
        assert!(!claim.take());
        assert!(claim.abandon(), "abandoning twice is still abandoned");
        let claim = Claim::default();
        assert!(claim.take());
        assert!(!claim.abandon());
        assert!(claim.take(), "taking twice is still taken");
    }
}
