//! `mirror-bench writer`: the daemon's writer alone, without HTTP: parsed deliveries
//! applied with `apply_delivery` in transactions of `--batch` events, committed on a
//! connection set up as the daemon's (`Store::open`: WAL, `synchronous=FULL`; then
//! `serve::writer::tune`, and the background checkpointer running beside it). The
//! ceiling of durable ingest on one core, and a harness for tuning the writer.

use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use protocol_mirror::apply::{Delivery, Origin, apply_delivery};
use protocol_mirror::serve::checkpointer::{self, Checkpointer};
use protocol_mirror::store::Store;

use crate::events::{Generator, Mix, STREAM_SEED};
use crate::machine::{cpu_seconds, filesystem, table, thousands};

/// Options of the writer benchmark.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct WriterArgs {
    /// Events to apply [default: 100,000; 10,000 with --quick].
    #[arg(long)]
    pub(crate) events: Option<usize>,
    /// Events per transaction, comma-separated for several runs.
    #[arg(long, value_delimiter = ',', default_value = "16,64,256")]
    pub(crate) batch: Vec<usize>,
    /// Pragmas set after opening, NAME=VALUE (e.g. wal_autocheckpoint=10000).
    #[arg(long)]
    pub(crate) pragma: Vec<String>,
}

/// Runs the writer benchmark and returns its Markdown report.
pub(crate) fn run(args: &WriterArgs, quick: bool, dir: &Path) -> anyhow::Result<String> {
    let count = args.events.unwrap_or(if quick { 10_000 } else { 100_000 });
    let mut generator = Generator::new(STREAM_SEED, Mix::Stream);
    let deliveries = (0..count)
        .map(|_| Delivery::parse(&generator.next_event().1))
        .collect::<Result<Vec<_>, _>>()
        .context("a generated event does not parse")?;
    let mut rows = Vec::new();
    for &batch in &args.batch {
        let db = dir.join(format!("writer-b{batch}.db"));
        crate::remove_database(&db);
        let mut store = Store::open(&db)?;
        protocol_mirror::serve::writer::tune(&store)?;
        let checkpointer = Checkpointer::start(
            db.clone(),
            checkpointer::EVERY,
            protocol_mirror::serve::writer::CHECKPOINT_PAGES,
            || true,
        )?;
        for pragma in &args.pragma {
            let (name, value) = pragma
                .split_once('=')
                .with_context(|| format!("--pragma {pragma}: expected NAME=VALUE"))?;
            store.conn().pragma_update(None, name, value)?;
        }
        eprintln!("writer: {count} events in batches of {batch}...");
        let started = Instant::now();
        let cpu_before = cpu_seconds("/proc/thread-self/stat").unwrap_or(0.0);
        let mut commits = 0u64;
        for chunk in deliveries.chunks(batch.max(1)) {
            let tx = store.transaction()?;
            for delivery in chunk {
                apply_delivery(&tx, delivery, Origin::Webhook, 1_700_000_000)?;
            }
            tx.commit()?;
            commits += 1;
        }
        let elapsed = started.elapsed().as_secs_f64();
        let cpu = cpu_seconds("/proc/thread-self/stat").unwrap_or(0.0) - cpu_before;
        checkpointer.stop();
        drop(store);
        crate::remove_database(&db);
        rows.push(vec![
            batch.to_string(),
            thousands(count as f64 / elapsed),
            format!("{:.1}", elapsed * 1e6 / count as f64),
            thousands(commits as f64 / elapsed),
            format!("{:.1}", cpu * 1e6 / count as f64),
        ]);
    }
    let mut report = format!(
        "### The writer alone (no HTTP)\n\n\
         {} events applied with `apply_delivery` and committed on a connection set up as \
         the daemon's (WAL, `synchronous=FULL`, `serve::writer::tune`, background \
         checkpoints) in `{}` ({}){}. CPU is the writer thread's alone.\n\n",
        thousands(count as f64),
        dir.display(),
        filesystem(dir),
        if args.pragma.is_empty() {
            String::new()
        } else {
            format!(", pragmas {}", args.pragma.join(", "))
        },
    );
    report.push_str(&table(
        &[
            "events per commit",
            "events/s",
            "µs per event",
            "commits/s",
            "CPU µs per event",
        ],
        &rows,
    ));
    report.push('\n');
    Ok(report)
}
