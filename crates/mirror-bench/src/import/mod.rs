//! `mirror-bench import`: generated events imported from NDJSON into a fresh database
//! by `protocol_mirror::import::import_into_new` (as `protocol-mirror import` builds a
//! new database), beside the raw baseline: the same rows,
//! extracted beforehand, written by plain prepared INSERTs into the same schema in the
//! same batch size. Each run is a child process (`mirror-bench import-child`) that
//! reports its wall time and its own peak RSS.
//!
//! The events come from the generator every benchmark uses ([`crate::events`]), in
//! its import mix: ~84% `message.created` of 0.6-1.1 KiB, all 15 types, cascading
//! deletes, ~0.8% redeliveries, stale and late updates.

mod baseline;
pub(crate) mod child;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail};
use serde_json::Value;

use crate::events::{Generator, Mix, TYPES};
use crate::machine::{filesystem, load_average, table, thousands};
use child::Run;

/// Options of the import benchmark.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct ImportArgs {
    /// Events to import [default: 1,000,000; 20,000 with --quick].
    #[arg(long)]
    pub(crate) import_events: Option<u64>,
    /// Events per transaction, for both runs [default: `import`'s own].
    #[arg(long)]
    pub(crate) import_batch: Option<usize>,
    /// Keep the NDJSON file and both databases (in `<dir>/import`), to look at or profile.
    #[arg(long)]
    pub(crate) keep: bool,
}

/// What a child reported.
struct Figures {
    events: u64,
    secs: f64,
    hwm_kib: u64,
    db_bytes: u64,
    user_secs: f64,
    system_secs: f64,
    written_bytes: u64,
    detail: String,
}

impl Figures {
    fn rate(&self) -> f64 {
        self.events as f64 / self.secs
    }
}

const MIB: f64 = 1024.0 * 1024.0;

/// Runs the import benchmark with its files in `dir/import` and returns its report.
pub(crate) fn run(args: &ImportArgs, quick: bool, dir: &Path) -> anyhow::Result<String> {
    let events = args
        .import_events
        .unwrap_or(if quick { 20_000 } else { 1_000_000 });
    let batch = args
        .import_batch
        .unwrap_or(protocol_mirror::import::ImportOptions::default().batch_size)
        .max(1);
    let folder = dir.join("import");
    std::fs::create_dir_all(&folder)
        .with_context(|| format!("cannot create {}", folder.display()))?;
    let ndjson = folder.join("events.ndjson");
    eprintln!("import: generating {events} events...");
    let started = Instant::now();
    let (generator, bytes) = generate(&ndjson, events)?;
    let generated_in = started.elapsed().as_secs_f64();

    let load_before = load_average();
    let mut figures = Vec::new();
    for run in [Run::Import, Run::Baseline] {
        let name = run_name(run);
        let db = folder.join(format!("{name}.db"));
        crate::remove_database(&db);
        eprintln!("import: the {name} run...");
        figures.push(run_child(run, &ndjson, &db, batch)?);
        if !args.keep {
            crate::remove_database(&db);
        }
    }
    let load_after = load_average();
    if !args.keep {
        let _ = std::fs::remove_file(&ndjson);
    }
    let [import, baseline] =
        <[Figures; 2]>::try_from(figures).map_err(|_| anyhow::anyhow!("two runs were made"))?;
    Ok(report(&Report {
        events,
        batch,
        bytes,
        generated_in,
        generator: &generator,
        folder: &folder,
        load: (load_before, load_after),
        import,
        baseline,
    }))
}

fn run_name(run: Run) -> &'static str {
    match run {
        Run::Import => "import",
        Run::Baseline => "baseline",
    }
}

/// Writes `events` events of the import mix to `path`; returns the generator (for its
/// counts) and the bytes written.
fn generate(path: &Path, events: u64) -> anyhow::Result<(Generator, u64)> {
    let file =
        std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
    let mut generator = Generator::new(Mix::Import.seed(), Mix::Import);
    let mut bytes = 0u64;
    for _ in 0..events {
        let (_, body) = generator.next_event();
        out.write_all(&body)?;
        out.write_all(b"\n")?;
        bytes += body.len() as u64 + 1;
    }
    out.flush()?;
    Ok((generator, bytes))
}

fn run_child(run: Run, ndjson: &Path, db: &Path, batch: usize) -> anyhow::Result<Figures> {
    let name = run_name(run);
    let exe = this_program()?;
    let output = Command::new(exe)
        .args(["import-child", "--run", name, "--batch", &batch.to_string()])
        .arg(ndjson)
        .arg(db)
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("cannot start the {name} run"))?;
    if !output.status.success() {
        bail!("the {name} run failed with {}", output.status);
    }
    let value: Value = serde_json::from_slice(&output.stdout)
        .with_context(|| format!("the {name} run printed no figures"))?;
    let number = |key: &str| value[key].as_f64().unwrap_or(f64::NAN);
    Ok(Figures {
        events: number("events") as u64,
        secs: number("secs"),
        hwm_kib: number("hwm_kib") as u64,
        db_bytes: number("db_bytes") as u64,
        user_secs: number("user_secs"),
        system_secs: number("system_secs"),
        written_bytes: number("written_bytes") as u64,
        detail: value["detail"].as_str().unwrap_or_default().to_owned(),
    })
}

/// This program's file. Linux names a running binary that a build replaced (as
/// `all` does when it builds) `<path> (deleted)`: the new file at `<path>` is the same
/// program, rebuilt.
fn this_program() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot find this program")?;
    if exe.exists() {
        return Ok(exe);
    }
    let text = exe.to_string_lossy();
    match text.strip_suffix(" (deleted)") {
        Some(path) if Path::new(path).exists() => Ok(PathBuf::from(path)),
        _ => bail!("this program ({}) is gone", exe.display()),
    }
}

struct Report<'a> {
    events: u64,
    batch: usize,
    bytes: u64,
    generated_in: f64,
    generator: &'a Generator,
    folder: &'a Path,
    load: (String, String),
    import: Figures,
    baseline: Figures,
}

fn report(r: &Report<'_>) -> String {
    let mut out = format!(
        "### Import\n\n\
         - {} events ({:.0} MiB of NDJSON, generated in {:.1} s), batches of {}, in `{}`, \
         filesystem: {}\n\
         - mix: {}, redeliveries {}\n\
         - each run is a child process into a database that does not exist yet; \
         `import` is `protocol_mirror::import::import_into_new` with the defaults \
         `protocol-mirror import` uses (no journal, no syncs until the end, then WAL, \
         synced and renamed: all timed); the baseline writes the same rows into the \
         same schema, also without a journal, with plain prepared INSERTs in the same \
         batch size, extracted beforehand (its transactions and its final sync are \
         timed)\n\
         - load average (1 min) before the runs: {}, after: {}\n\n",
        thousands(r.events as f64),
        r.bytes as f64 / MIB,
        r.generated_in,
        thousands(r.batch as f64),
        r.folder.display(),
        filesystem(r.folder),
        TYPES
            .iter()
            .zip(r.generator.by_type)
            .map(|(t, n)| format!("{t} {}", thousands(n as f64)))
            .collect::<Vec<_>>()
            .join(", "),
        thousands(r.generator.redeliveries as f64),
        r.load.0,
        r.load.1,
    );
    let row = |name: &str, f: &Figures| {
        vec![
            name.to_owned(),
            thousands(f.events as f64),
            format!("{:.2}", f.secs),
            thousands(f.rate()),
            format!("{:.1}", f.hwm_kib as f64 / 1024.0),
            format!("{:.0}", f.db_bytes as f64 / MIB),
            format!("{:.1} / {:.1}", f.user_secs, f.system_secs),
            format!("{:.0}", f.written_bytes as f64 / MIB),
        ]
    };
    out.push_str(&table(
        &[
            "run",
            "events",
            "seconds",
            "events/s",
            "peak RSS MiB",
            "database MiB",
            "CPU user / system s",
            "written MiB",
        ],
        &[
            row("`import`", &r.import),
            row("raw INSERT baseline", &r.baseline),
        ],
    ));
    let ratio = r.import.rate() / r.baseline.rate();
    let verdict = |ok: bool| if ok { "met" } else { "**missed**" };
    out.push_str(&format!(
        "\nRatio import / baseline: **{ratio:.2}**. Import outcomes: {}. Baseline: {}.\n\n\
         Targets: ≥ 50,000 events/s: {}; peak RSS < 256 MiB: {}; ≥ 0.5x the baseline: {}.\n\n",
        r.import.detail,
        r.baseline.detail,
        verdict(r.import.rate() >= 50_000.0),
        verdict(r.import.hwm_kib < 256 * 1024),
        verdict(ratio >= 0.5),
    ));
    out
}
