//! The two measured runs of the import benchmark, each in a process of its own (this
//! binary again, `mirror-bench import-child`), so that each peak RSS is its own.

use std::fmt::Write as _;
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use protocol_mirror::import::{ImportOptions, import_into_new};
use serde_json::json;

use crate::machine;

/// `received_at` of every event, so both runs write the same values.
pub(super) const RECEIVED_AT: i64 = 1_700_000_000;

/// Which run a child makes.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Run {
    /// `protocol_mirror::import::import_into_new`, as `protocol-mirror import` runs it
    /// into a new database.
    Import,
    /// Plain prepared INSERTs of the same rows.
    Baseline,
}

/// What a run measured, before the process adds its own figures.
pub(super) struct Measured {
    pub(super) events: u64,
    pub(super) secs: f64,
    pub(super) detail: String,
}

/// Arguments of the hidden `import-child` command.
#[derive(clap::Args, Debug)]
pub(crate) struct ChildArgs {
    /// Which run.
    #[arg(long, value_enum)]
    pub(crate) run: Run,
    /// The NDJSON file.
    pub(crate) ndjson: PathBuf,
    /// The (new) database.
    pub(crate) db: PathBuf,
    /// Events per transaction.
    #[arg(long)]
    pub(crate) batch: usize,
}

/// Makes one run and prints its figures as one JSON object on stdout.
pub(crate) fn main(args: &ChildArgs) -> anyhow::Result<()> {
    let measured = match args.run {
        Run::Import => run_import(&args.ndjson, &args.db, args.batch)?,
        Run::Baseline => super::baseline::run(&args.ndjson, &args.db, args.batch)?,
    };
    let (_, hwm_kib) = machine::rss_kib(std::process::id()).unwrap_or((0, 0));
    let (user, system) = machine::cpu_times("/proc/self/stat").unwrap_or((0.0, 0.0));
    let report = json!({
        "events": measured.events,
        "secs": measured.secs,
        "hwm_kib": hwm_kib,
        "db_bytes": db_bytes(&args.db),
        "user_secs": user,
        "system_secs": system,
        "written_bytes": written_bytes(),
        "detail": measured.detail,
    });
    println!("{report}");
    Ok(())
}

fn run_import(ndjson: &Path, db: &Path, batch_size: usize) -> anyhow::Result<Measured> {
    let input = open_input(ndjson)?;
    let options = ImportOptions {
        batch_size,
        received_at: RECEIVED_AT,
        ..ImportOptions::default()
    };
    // As `protocol-mirror import` imports into a database that does not exist yet.
    let started = Instant::now();
    let summary = import_into_new(db, input, options, |_| {})?;
    let secs = started.elapsed().as_secs_f64();
    let mut detail = String::new();
    for (outcome, n) in &summary.outcomes {
        let _ = write!(detail, "{outcome}={n} ");
    }
    let _ = write!(
        detail,
        "duplicates={} malformed={}",
        summary.duplicates, summary.malformed
    );
    Ok(Measured {
        events: summary.events() + summary.malformed,
        secs,
        detail,
    })
}

pub(super) fn open_input(ndjson: &Path) -> anyhow::Result<BufReader<File>> {
    let file = File::open(ndjson).with_context(|| format!("cannot open {}", ndjson.display()))?;
    Ok(BufReader::with_capacity(1 << 16, file))
}

/// The database and its WAL, in bytes.
fn db_bytes(db: &Path) -> u64 {
    ["", "-wal"]
        .iter()
        .map(|suffix| std::fs::metadata(protocol_mirror::beside(db, suffix)).map_or(0, |m| m.len()))
        .sum()
}

/// Bytes this process passed to write calls (`wchar`: page cache included).
fn written_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/io")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("wchar: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}
