//! `mirror-bench`: benchmarks of protocol-mirror against ceilings measured in the same
//! run, printed as Markdown.
//!
//! ```text
//! cargo run --release -p mirror-bench -- all            # everything (5-9 minutes; the
//!                                                       # first run also builds a replica)
//! cargo run --release -p mirror-bench -- --quick all    # a smoke run (~1.5 min once built)
//! cargo run --release -p mirror-bench -- ingest --concurrency 64 --duration 20
//! ```
//!
//! - `ingest`: durable ingest over HTTP by `protocol-mirror serve` (the release binary,
//!   built first) at several concurrencies, beside a no-op axum endpoint driven by the
//!   same generator and the disk's commit rate; and the generator against wrk.
//! - `import`: 1,000,000 generated events imported from NDJSON into a fresh database,
//!   beside plain INSERTs of the same rows (each run in a child process, for its peak
//!   RSS).
//! - `query`: whole-process time of `list`, `get`, `search` and `stats` on a replica of
//!   1,000,000 messages, beside the `sqlite3` shell running the same SQL.
//! - `verify`: the `protocol-verify` criterion benchmark (signature check vs bare HMAC).
//! - `writer`: the daemon's writer alone (apply and commit in batches, no HTTP), with
//!   pragmas to try; `generate`: the generated events as NDJSON (to profile `import`).
//!
//! Timings are reported, never asserted: nothing here fails because a number is slow.

mod events;
mod import;
mod ingest;
mod load;
mod machine;
mod query;
mod verify;
mod writer;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};

/// The allocator the `protocol-mirror` binary uses (the `writer` benchmark runs its
/// writer in this process).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Benchmarks of protocol-mirror against ceilings measured in the same run.
#[derive(Parser)]
#[command(name = "mirror-bench")]
struct Cli {
    /// A short smoke version: runs of 1 s, a replica of 20,000 messages, few repetitions.
    #[arg(long, global = true)]
    quick: bool,
    /// Folder for the ingest, import and writer databases (its filesystem matters:
    /// fsync is free on tmpfs)
    /// [default: a fresh folder in $TMPDIR or /tmp].
    #[arg(long, global = true, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Folder keeping the query replica between runs [default: target/mirror-bench].
    #[arg(long, global = true, value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    /// The protocol-mirror binary [default: built with `cargo build --release`].
    #[arg(long, global = true, value_name = "PATH")]
    mirror_bin: Option<PathBuf>,
    /// Also write the report to this file.
    #[arg(long, global = true, value_name = "FILE")]
    output: Option<PathBuf>,
    #[command(subcommand)]
    command: Bench,
}

#[derive(Subcommand)]
enum Bench {
    /// Durable ingest over HTTP, beside a no-op endpoint and the disk's commit rate.
    Ingest(ingest::IngestArgs),
    /// Import of generated NDJSON beside plain INSERTs of the same rows.
    Import(import::ImportArgs),
    /// One measured run of `import` (started by `import` itself).
    #[command(hide = true)]
    ImportChild(import::child::ChildArgs),
    /// Whole-process time of list, get, search and stats on a large replica.
    Query(query::QueryArgs),
    /// The writer alone, without HTTP: apply and commit in batches.
    Writer(writer::WriterArgs),
    /// Signature checks against a bare HMAC (criterion).
    Verify,
    /// Print the generated events as NDJSON (to profile `import`, or replay with `send`).
    Generate {
        /// How many events.
        #[arg(long, default_value_t = 100_000)]
        events: u64,
        /// Which mix: the webhook stream `ingest` posts, the replica `query` builds, or
        /// the file `import` imports.
        #[arg(long, value_enum, default_value = "stream")]
        mix: events::Mix,
    },
    /// Everything: ingest, import, query and verify.
    All {
        #[command(flatten)]
        ingest: ingest::IngestArgs,
        #[command(flatten)]
        import: import::ImportArgs,
        #[command(flatten)]
        query: query::QueryArgs,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("mirror-bench: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .context("cannot find the workspace")?;
    let target = target_dir(&workspace);
    match &cli.command {
        Bench::Generate { events, mix } => return generate(*events, *mix),
        Bench::ImportChild(args) => return import::child::main(args),
        _ => {}
    }
    let needs_mirror = !matches!(
        cli.command,
        Bench::Verify | Bench::Writer(_) | Bench::Import(_)
    );
    let mirror = match (&cli.mirror_bin, needs_mirror) {
        (Some(path), _) => path.clone(),
        (None, true) => build_mirror(&workspace, &target)?,
        (None, false) => PathBuf::new(),
    };
    let temp = match &cli.dir {
        Some(_) => None,
        None => Some(tempfile::Builder::new().prefix("mirror-bench").tempdir()?),
    };
    let dir = match (&cli.dir, &temp) {
        (Some(dir), _) => {
            std::fs::create_dir_all(dir)?;
            dir.clone()
        }
        (None, Some(temp)) => temp.path().to_owned(),
        (None, None) => unreachable!("a folder is made when none is given"),
    };
    let cache = cli
        .cache_dir
        .clone()
        .unwrap_or_else(|| target.join("mirror-bench"));

    let revision = Command::new("git")
        .current_dir(&workspace)
        .args(["describe", "--always", "--dirty"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map_or_else(
            || "unknown".to_owned(),
            |o| String::from_utf8_lossy(&o.stdout).trim().to_owned(),
        );
    let mut report = format!(
        "## protocol-mirror benchmarks{}\n\n{}- load average (1 min) at the start: {} \
         (other work on the machine skews every figure)\n- revision: `{revision}`, \
         protocol-mirror: `{}`\n\n",
        if cli.quick {
            " (--quick smoke run)"
        } else {
            ""
        },
        machine::describe(),
        machine::load_average(),
        mirror.display(),
    );
    let mut emit = |section: String| {
        print!("{section}");
        report.push_str(&section);
    };
    match &cli.command {
        Bench::Ingest(args) => emit(ingest::run(args, cli.quick, &dir, &mirror)?),
        Bench::Import(args) => emit(import::run(args, cli.quick, &dir)?),
        Bench::Query(args) => emit(query::run(args, cli.quick, &cache, &mirror)?),
        Bench::Verify => emit(verify::run(cli.quick, &workspace, &target)?),
        Bench::Writer(args) => emit(writer::run(args, cli.quick, &dir)?),
        Bench::Generate { .. } | Bench::ImportChild(_) => unreachable!("handled above"),
        Bench::All {
            ingest,
            import,
            query,
        } => {
            emit(ingest::run(ingest, cli.quick, &dir, &mirror)?);
            emit(import::run(import, cli.quick, &dir)?);
            emit(query::run(query, cli.quick, &cache, &mirror)?);
            emit(verify::run(cli.quick, &workspace, &target)?);
        }
    }
    if let Some(path) = &cli.output {
        std::fs::write(path, &report)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

fn generate(events: u64, mix: events::Mix) -> anyhow::Result<()> {
    use std::io::Write;
    let mut generator = events::Generator::new(mix.seed(), mix);
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for _ in 0..events {
        out.write_all(&generator.next_event().1)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(())
}

/// Removes a database and the files SQLite and protocol-mirror keep beside it.
pub(crate) fn remove_database(db: &Path) {
    for suffix in ["", "-wal", "-shm", "-journal", ".lock"] {
        let _ = std::fs::remove_file(protocol_mirror::beside(db, suffix));
    }
}

/// `CARGO_TARGET_DIR`, or the `target` folder this binary was built in.
fn target_dir(workspace: &Path) -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(dir);
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.to_owned()))
        .filter(|dir| dir.join("CACHEDIR.TAG").exists())
        .unwrap_or_else(|| workspace.join("target"))
}

/// A `cargo` command in `workspace`, building into `target`.
pub(crate) fn cargo(workspace: &Path, target: &Path) -> Command {
    let mut command = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    // Under `cargo run`, this process has the variables cargo sets for the program it
    // runs (CARGO_PKG_*, CARGO_MANIFEST_DIR, LD_LIBRARY_PATH...): some build scripts
    // watch them, and would be run (and their crates rebuilt) at every benchmark.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy().into_owned();
        if (name.starts_with("CARGO_")
            && !matches!(name.as_str(), "CARGO_HOME" | "CARGO_TARGET_DIR"))
            || matches!(name.as_str(), "LD_LIBRARY_PATH" | "OUT_DIR")
        {
            command.env_remove(name);
        }
    }
    command
        .current_dir(workspace)
        .env("CARGO_TARGET_DIR", target);
    command
}

/// Builds the release `protocol-mirror` binary and returns its path.
fn build_mirror(workspace: &Path, target: &Path) -> anyhow::Result<PathBuf> {
    eprintln!("building the release protocol-mirror binary...");
    let status = cargo(workspace, target)
        // With this crate in the same build, shared dependencies resolve to the same
        // features as in `cargo run -p mirror-bench`: nothing is compiled twice.
        .args([
            "build",
            "--release",
            "-p",
            "mirror-bench",
            "-p",
            "protocol-mirror",
        ])
        .status()
        .context("running cargo build")?;
    if !status.success() {
        bail!("cargo build --release -p protocol-mirror failed with {status}");
    }
    let binary = target.join("release").join("protocol-mirror");
    if !binary.exists() {
        bail!("{} was not built", binary.display());
    }
    Ok(binary)
}
