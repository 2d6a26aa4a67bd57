//! Repeated failures, logged at a bounded rate: the first of a run is logged, then one
//! line per [`LogLimit::EVERY`] with how many were not (a full disk failed thousands of
//! commits a second, each an ERROR line; a sender with a wrong secret is refused at
//! its own rate). Failures held back are told of at the end of their period
//! ([`LogLimit::flush_later`]), even if no other failure or success follows.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What to do with a failure.
#[derive(Debug, PartialEq, Eq)]
enum Failure {
    /// Log it, with how many were held back since the last line.
    Log { unlogged: u64 },
    /// Hold it back. The first one held back since the last line says when the period
    /// ends: [`LogLimit::flush_later`] then tells of the failures held back, even if
    /// no other comes.
    Held { flush_in: Option<Duration> },
}

/// When the last line was logged, how many failures were not since, and whether the
/// end of the last run of failures was told.
#[derive(Debug, Default)]
pub(crate) struct LogLimit {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    logged_at: Option<Instant>,
    unlogged: u64,
    recovery_told: bool,
    /// What the first failure held back since the last line said, if told.
    first_held: Option<String>,
}

/// Failures held back, as told at the end of their period or at the stop.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Held {
    /// How many.
    pub(crate) count: u64,
    /// What the first of them said, where the caller told it
    /// ([`LogLimit::failed`]).
    pub(crate) first: Option<String>,
}

impl LogLimit {
    /// At most one line per this long.
    pub(crate) const EVERY: Duration = Duration::from_secs(10);

    /// A failure that says `detail` (its error, if told): `Some(failures held back
    /// since the last line)` when this one is to be logged now. Held back, and the
    /// first held back since the last line, `tell` is called with the failures held
    /// back at the end of the period ([`LogLimit::flush_later`]), even if no other
    /// failure comes; the line says `detail`.
    pub(crate) fn failed(
        self: &Arc<Self>,
        detail: Option<&str>,
        tell: impl FnOnce(Held) + Send + 'static,
    ) -> Option<u64> {
        match self.failure(detail) {
            Failure::Log { unlogged } => Some(unlogged),
            Failure::Held {
                flush_in: Some(wait),
            } => {
                self.flush_later(wait, tell);
                None
            }
            Failure::Held { flush_in: None } => None,
        }
    }

    /// A failure that says `detail`: to be logged, or held back (see
    /// [`Failure::Held`]).
    fn failure(&self, detail: Option<&str>) -> Failure {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match state.logged_at {
            Some(at) if at.elapsed() < Self::EVERY => {
                state.unlogged += 1;
                if state.unlogged == 1 {
                    state.first_held = detail.map(str::to_owned);
                }
                Failure::Held {
                    flush_in: (state.unlogged == 1)
                        .then(|| Self::EVERY.saturating_sub(at.elapsed())),
                }
            }
            _ => {
                state.logged_at = Some(Instant::now());
                state.recovery_told = false;
                state.first_held = None;
                Failure::Log {
                    unlogged: std::mem::take(&mut state.unlogged),
                }
            }
        }
    }

    /// Calls `tell` with the failures held back since the last line, if any, as the
    /// line logged now: at the stop, where the end of their period would never come
    /// (the writer's and the listener's went unsaid at a stop within 10 s: a review).
    pub(crate) fn flush(&self, tell: impl FnOnce(Held)) {
        self.flushed(false, tell);
    }

    /// [`LogLimit::flush`] if the last line's period is over: for the end of a period
    /// in which failures came and then stopped (otherwise only the next failure or
    /// success would tell of them: a new run of failed commits within a period of the
    /// last line went unsaid, its error never logged; a probe). Nothing where a line
    /// since told of them (two lines came a millisecond apart: a probe).
    fn flush_due(&self, tell: impl FnOnce(Held)) {
        self.flushed(true, tell);
    }

    /// `tell` runs under the lock, so that no success's line on another thread
    /// comes between the count taken and its line (a review).
    fn flushed(&self, when_due: bool, tell: impl FnOnce(Held)) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let early = state.logged_at.is_some_and(|at| at.elapsed() < Self::EVERY);
        if state.unlogged == 0 || (when_due && early) {
            return;
        }
        state.logged_at = Some(Instant::now());
        // A line of failures: the next success tells that they are over.
        state.recovery_told = false;
        tell(Held {
            count: std::mem::take(&mut state.unlogged),
            first: state.first_held.take(),
        });
    }

    /// After `wait` (a [`Failure::Held`]'s `flush_in`), calls `tell` with the
    /// failures held back, if a line has not told of them since: on the tokio
    /// runtime the caller runs on, or else on a thread of its own (the writer's
    /// failures). A thread that cannot be started leaves them to the next line, or
    /// the stop's [`LogLimit::flush`].
    fn flush_later(self: &Arc<Self>, wait: Duration, tell: impl FnOnce(Held) + Send + 'static) {
        let limit = Arc::clone(self);
        let flush = move || limit.flush_due(tell);
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    tokio::time::sleep(wait).await;
                    flush();
                });
            }
            Err(_) => {
                let _ = std::thread::Builder::new()
                    .name("protocol-mirror-log".into())
                    .spawn(move || {
                        std::thread::sleep(wait);
                        flush();
                    });
            }
        }
    }

    /// A success: `Some(failures not logged)` when it is to be logged as the end of a
    /// run of failures: the first success after a logged failure, or one at least a
    /// period after the last line when failures were held back since. Successes and
    /// failures that alternate (a client opening and closing connections while the
    /// file descriptors run out) thus log at most two lines a period; a success did
    /// not use to count as a line, and each failure after it was logged again.
    pub(crate) fn succeeded(&self) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let at = state.logged_at?;
        if state.recovery_told && (state.unlogged == 0 || at.elapsed() < Self::EVERY) {
            return None;
        }
        state.recovery_told = true;
        state.logged_at = Some(Instant::now());
        state.first_held = None;
        Some(std::mem::take(&mut state.unlogged))
    }

    #[cfg(test)]
    fn age(&self, by: Duration) {
        let mut state = self.state.lock().unwrap();
        state.logged_at = state.logged_at.map(|at| at - by);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a flush tells (`due`: only once the period is over), as a count.
    fn flushed(log: &LogLimit, due: bool) -> Option<u64> {
        let mut told = None;
        if due {
            log.flush_due(|held| told = Some(held.count));
        } else {
            log.flush(|held| told = Some(held.count));
        }
        told
    }

    /// A failure: `Some(failures not logged since the last line)` when it is logged.
    fn failed(log: &LogLimit) -> Option<u64> {
        match log.failure(None) {
            Failure::Log { unlogged } => Some(unlogged),
            Failure::Held { .. } => None,
        }
    }

    #[test]
    fn a_run_of_failures_is_logged_once_then_once_per_period() {
        let log = LogLimit::default();
        assert_eq!(log.succeeded(), None, "nothing to report");
        assert_eq!(failed(&log), Some(0), "the first is logged");
        assert_eq!(failed(&log), None);
        assert_eq!(failed(&log), None);
        log.age(LogLimit::EVERY);
        assert_eq!(failed(&log), Some(2), "then one line with the count");
        assert_eq!(failed(&log), None);
        assert_eq!(log.succeeded(), Some(1), "the end of the run");
        assert_eq!(log.succeeded(), None, "told once");
        log.age(LogLimit::EVERY);
        assert_eq!(failed(&log), Some(0), "a new run of failures");
    }

    /// A client churning connections while file descriptors ran out: each accept
    /// failure after a success was logged again (195 lines in 10 s).
    #[test]
    fn failures_alternating_with_successes_log_two_lines_a_period() {
        let log = LogLimit::default();
        let mut lines = 0;
        for _ in 0..100 {
            lines += usize::from(failed(&log).is_some());
            lines += usize::from(log.succeeded().is_some());
        }
        assert_eq!(lines, 2, "a failure, then the end of the run");
        log.age(LogLimit::EVERY);
        assert_eq!(failed(&log), Some(99), "the next period's line counts them");
        assert_eq!(log.succeeded(), Some(0));
        failed(&log);
        assert_eq!(log.succeeded(), None, "held within the period");
        log.age(LogLimit::EVERY);
        assert_eq!(log.succeeded(), Some(1), "told by a success a period later");
        assert_eq!(log.succeeded(), None);
    }

    #[test]
    fn failures_held_back_are_flushed_at_the_end_of_the_period() {
        let log = LogLimit::default();
        assert_eq!(flushed(&log, false), None, "nothing held back");
        assert_eq!(log.failure(None), Failure::Log { unlogged: 0 });
        let Failure::Held {
            flush_in: Some(wait),
        } = log.failure(None)
        else {
            panic!("the first one held back says when to flush");
        };
        assert!(
            wait <= LogLimit::EVERY && wait > LogLimit::EVERY / 2,
            "{wait:?}"
        );
        assert_eq!(log.failure(None), Failure::Held { flush_in: None });
        assert_eq!(flushed(&log, false), Some(2));
        assert_eq!(flushed(&log, false), None, "told once");
        // The flush counts as a line: the next failure is held back for a period.
        assert!(matches!(
            log.failure(None),
            Failure::Held { flush_in: Some(_) }
        ));
    }

    /// Failures held back within a period of the last line (a new run of failed
    /// commits soon after the last had ended) are told at the period's end, and the
    /// next success says they are over; a flush that comes when a line has just told
    /// of them says nothing (two lines came a millisecond apart: a probe).
    #[test]
    fn a_new_run_held_back_is_told_at_the_end_of_the_period_and_once() {
        let log = LogLimit::default();
        assert_eq!(failed(&log), Some(0));
        assert_eq!(log.succeeded(), Some(0), "the run is over");
        assert!(matches!(
            log.failure(None),
            Failure::Held { flush_in: Some(_) }
        ));
        assert_eq!(flushed(&log, true), None, "not before the period ends");
        assert_eq!(log.succeeded(), None, "held within the period");
        log.age(LogLimit::EVERY);
        assert_eq!(flushed(&log, true), Some(1), "the new run, told at the end");
        assert_eq!(log.succeeded(), Some(0), "and its end");
        // A failure logged as the period ends, then one held back: the first flush
        // (due as the line was written) says nothing; the held one waits a period.
        log.age(LogLimit::EVERY);
        assert!(matches!(log.failure(None), Failure::Log { .. }));
        assert!(matches!(
            log.failure(None),
            Failure::Held { flush_in: Some(_) }
        ));
        assert_eq!(flushed(&log, true), None);
        log.age(LogLimit::EVERY);
        assert_eq!(flushed(&log, true), Some(1));
    }

    /// `flush_later` tells of the failures held back after the wait, off the tokio
    /// runtime too (the writer's thread).
    #[test]
    fn flush_later_tells_after_the_wait() {
        let log = Arc::new(LogLimit::default());
        assert_eq!(failed(&log), Some(0));
        assert!(matches!(log.failure(None), Failure::Held { .. }));
        log.age(LogLimit::EVERY);
        let (tx, rx) = std::sync::mpsc::channel();
        log.flush_later(Duration::from_millis(10), move |held| {
            let _ = tx.send(held);
        });
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(10)),
            Ok(Held {
                count: 1,
                first: None
            })
        );
        // The first failure held back is told with what it said.
        log.age(LogLimit::EVERY);
        assert!(matches!(log.failure(None), Failure::Log { .. }));
        for detail in ["disk full", "later"] {
            assert!(matches!(log.failure(Some(detail)), Failure::Held { .. }));
        }
        let mut told = None;
        log.flush(|held| told = Some(held));
        assert_eq!(
            told,
            Some(Held {
                count: 2,
                first: Some("disk full".to_owned())
            })
        );
    }
}
