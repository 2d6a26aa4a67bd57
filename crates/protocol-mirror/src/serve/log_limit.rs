//! Repeated failures, logged at a bounded rate: the first of a run is logged, then one
//! line per [`LogLimit::EVERY`] with how many were not (a full disk failed thousands of
//! commits a second, each an ERROR line; a sender with a wrong secret is refused at
//! its own rate).

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What to do with a failure.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Failure {
    /// Log it, with how many were held back since the last line.
    Log { unlogged: u64 },
    /// Hold it back. The first one held back since the last line says when the period
    /// ends: a [`LogLimit::flush`] then tells of the failures held back, even if no
    /// other comes.
    Held { flush_in: Option<Duration> },
}

/// When the last line was logged, and how many failures were not since.
#[derive(Debug, Default)]
pub(crate) struct LogLimit {
    state: Mutex<(Option<Instant>, u64)>,
}

impl LogLimit {
    /// At most one line per this long.
    pub(crate) const EVERY: Duration = Duration::from_secs(10);

    /// A failure: `Some(failures not logged since the last line)` when this one is
    /// to be logged.
    pub(crate) fn failed(&self) -> Option<u64> {
        match self.failure() {
            Failure::Log { unlogged } => Some(unlogged),
            Failure::Held { .. } => None,
        }
    }

    /// A failure: to be logged, or held back (see [`Failure::Held`]).
    pub(crate) fn failure(&self) -> Failure {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (logged_at, unlogged) = &mut *state;
        match logged_at {
            Some(at) if at.elapsed() < Self::EVERY => {
                *unlogged += 1;
                Failure::Held {
                    flush_in: (*unlogged == 1).then(|| Self::EVERY.saturating_sub(at.elapsed())),
                }
            }
            _ => {
                *logged_at = Some(Instant::now());
                Failure::Log {
                    unlogged: std::mem::take(unlogged),
                }
            }
        }
    }

    /// The failures held back since the last line, if any, as a line logged now: for
    /// the end of a period in which failures came and then stopped (otherwise only
    /// the next failure would tell of them).
    pub(crate) fn flush(&self) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (logged_at, unlogged) = &mut *state;
        if *unlogged == 0 {
            return None;
        }
        *logged_at = Some(Instant::now());
        Some(std::mem::take(unlogged))
    }

    /// A success: `Some(failures not logged)` when failures had been logged (the run
    /// of failures is over).
    pub(crate) fn succeeded(&self) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (logged_at, unlogged) = &mut *state;
        logged_at.take()?;
        Some(std::mem::take(unlogged))
    }

    #[cfg(test)]
    fn age(&self, by: Duration) {
        let mut state = self.state.lock().unwrap();
        state.0 = state.0.map(|at| at - by);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_of_failures_is_logged_once_then_once_per_period() {
        let log = LogLimit::default();
        assert_eq!(log.succeeded(), None, "nothing to report");
        assert_eq!(log.failed(), Some(0), "the first is logged");
        assert_eq!(log.failed(), None);
        assert_eq!(log.failed(), None);
        log.age(LogLimit::EVERY);
        assert_eq!(log.failed(), Some(2), "then one line with the count");
        assert_eq!(log.failed(), None);
        assert_eq!(log.succeeded(), Some(1));
        assert_eq!(log.failed(), Some(0), "a new run of failures");
    }

    #[test]
    fn failures_held_back_are_flushed_at_the_end_of_the_period() {
        let log = LogLimit::default();
        assert_eq!(log.flush(), None, "nothing held back");
        assert_eq!(log.failure(), Failure::Log { unlogged: 0 });
        let Failure::Held {
            flush_in: Some(wait),
        } = log.failure()
        else {
            panic!("the first one held back says when to flush");
        };
        assert!(
            wait <= LogLimit::EVERY && wait > LogLimit::EVERY / 2,
            "{wait:?}"
        );
        assert_eq!(log.failure(), Failure::Held { flush_in: None });
        assert_eq!(log.flush(), Some(2));
        assert_eq!(log.flush(), None, "told once");
        // The flush counts as a line: the next failure is held back for a period.
        assert!(matches!(log.failure(), Failure::Held { flush_in: Some(_) }));
    }
}
