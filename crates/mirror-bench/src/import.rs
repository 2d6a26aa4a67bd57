//! `mirror-bench import`: runs `protocol-mirror`'s import benchmark (`benches/import.rs`:
//! generated NDJSON imported into a fresh database, against plain prepared INSERTs of
//! the same rows in the same batch size, each in a child process that reports its peak
//! RSS) and puts its report in this one.

use std::path::Path;

use anyhow::{Context, bail};

/// Options of the import benchmark.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct ImportArgs {
    /// Events to import [default: 1,000,000; 20,000 with --quick].
    #[arg(long)]
    pub(crate) import_events: Option<u64>,
}

/// Runs the import benchmark with its files in `dir/import` and returns its report.
pub(crate) fn run(
    args: &ImportArgs,
    quick: bool,
    workspace: &Path,
    target: &Path,
    dir: &Path,
) -> anyhow::Result<String> {
    let events = args
        .import_events
        .unwrap_or(if quick { 20_000 } else { 1_000_000 });
    let folder = dir.join("import");
    eprintln!("import: cargo bench -p protocol-mirror --bench import ({events} events)...");
    let output = crate::cargo(workspace, target)
        .args(["bench", "-p", "protocol-mirror", "--bench", "import"])
        .env("IMPORT_BENCH_EVENTS", events.to_string())
        .env("IMPORT_BENCH_DIR", &folder)
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("running cargo bench")?;
    // The databases and the NDJSON file are large: keep none of them.
    let _ = std::fs::remove_dir_all(&folder);
    if !output.status.success() {
        bail!(
            "cargo bench -p protocol-mirror --bench import failed with {}",
            output.status
        );
    }
    let printed = String::from_utf8_lossy(&output.stdout);
    Ok(format!(
        "### Import\n\n\
         `IMPORT_BENCH_EVENTS={events} cargo bench -p protocol-mirror --bench import`: \
         generated events (0.5-1 KiB messages, all 15 types) imported by `import` into a \
         fresh database, then the raw baseline: the same rows, extracted beforehand, \
         written by plain prepared INSERTs into the same schema in the same batch size. \
         Each runs in a child process that reports its wall time and peak RSS.\n\n\
         ```text\n{}\n```\n",
        printed.trim_end()
    ))
}
