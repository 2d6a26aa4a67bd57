//! Import: apply an NDJSON stream of event envelopes (trusted local input: no
//! signatures) through the same engine as delivered events, in bounded batches and
//! constant memory.

use std::collections::BTreeMap;
use std::io::BufRead;

use crate::apply::{Applied, Delivery, Origin, Outcome, apply_delivery};
use crate::store::{Store, StoreError};

/// How an import runs.
#[derive(Debug, Clone, Copy)]
pub struct ImportOptions {
    /// Most events per transaction. A running daemon waits for at most one batch.
    pub batch_size: usize,
    /// Longest a transaction is kept open: a batch commits early when it takes longer,
    /// so a running daemon never waits long (the daemon waits up to 5 s for the lock).
    pub max_batch_time: std::time::Duration,
    /// The receive time recorded for every imported event (Unix seconds).
    pub received_at: i64,
}

impl Default for ImportOptions {
    fn default() -> Self {
        ImportOptions {
            batch_size: 10_000,
            max_batch_time: std::time::Duration::from_millis(500),
            received_at: crate::now(),
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
    /// The first [`ImportSummary::MAX_REPORTED`] malformed lines.
    pub first_malformed: Vec<Malformed>,
}

impl ImportSummary {
    /// How many malformed lines are kept for the report (the rest are counted).
    pub const MAX_REPORTED: usize = 20;

    /// Events read (new and duplicate).
    pub fn events(&self) -> u64 {
        self.outcomes.values().sum::<u64>() + self.duplicates
    }

    /// The count of new events with `outcome`.
    pub fn count(&self, outcome: Outcome) -> u64 {
        self.outcomes.get(&outcome).copied().unwrap_or(0)
    }
}

/// Why an import stopped. Batches committed before the error stay committed; the
/// import can be run again (events already logged are duplicates).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImportError {
    /// Reading the input failed.
    #[error("reading the input failed after line {line}: {source}")]
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
}

/// Imports every line of `input`. `progress` is called after each committed batch.
pub fn import(
    store: &mut Store,
    mut input: impl BufRead,
    options: ImportOptions,
    mut progress: impl FnMut(&ImportSummary),
) -> Result<ImportSummary, ImportError> {
    let mut summary = ImportSummary::default();
    let mut line = Vec::with_capacity(4096);
    let batch_size = options.batch_size.max(1);
    loop {
        let tx = store.transaction()?;
        let mut in_batch = 0;
        let mut at_end = false;
        let started = std::time::Instant::now();
        while in_batch < batch_size && started.elapsed() < options.max_batch_time {
            line.clear();
            let n = input
                .read_until(b'\n', &mut line)
                .map_err(|source| ImportError::Read {
                    line: summary.lines,
                    source,
                })?;
            if n == 0 {
                at_end = true;
                break;
            }
            summary.bytes += n as u64;
            summary.lines += 1;
            let body = line.trim_ascii();
            if body.is_empty() {
                continue;
            }
            in_batch += 1;
            let applied = Delivery::parse(body).map(|delivery| {
                apply_delivery(&tx, &delivery, Origin::Import, options.received_at)
            });
            match applied {
                Ok(Ok(Applied::Logged { outcome, .. })) => {
                    *summary.outcomes.entry(outcome).or_default() += 1;
                }
                Ok(Ok(Applied::Duplicate { .. })) => summary.duplicates += 1,
                Err(error) => {
                    summary.malformed += 1;
                    if summary.first_malformed.len() < ImportSummary::MAX_REPORTED {
                        summary.first_malformed.push(Malformed {
                            line: summary.lines,
                            error: error.to_string(),
                        });
                    }
                }
                Ok(Err(error)) => return Err(error.into()),
            }
        }
        tx.commit().map_err(|source| StoreError::Sqlite {
            context: "committing an import batch",
            source,
        })?;
        progress(&summary);
        if at_end {
            return Ok(summary);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        };
        let summary = import(&mut store, input.as_bytes(), options, |_| batches += 1).unwrap();
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
}
