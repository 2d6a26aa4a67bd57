//! The `protocol-mirror` command: the daemon (`serve`) and the replica tools.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use protocol_mirror::import::{ImportOptions, import};
use protocol_mirror::lock::ServeLock;
use protocol_mirror::secrets::{self, Source};
use protocol_mirror::serve::{self, metrics::Metrics, writer::Writer};
use protocol_mirror::store::Store;

/// A local, queryable SQLite replica of a Protocol account, fed by signed webhooks.
#[derive(Parser)]
#[command(version, about, propagate_version = true)]
struct Cli {
    /// The replica database [default: <data dir>/protocol-mirror/mirror.db, e.g.
    /// ~/.local/share/protocol-mirror/mirror.db]
    #[arg(long, global = true, env = "PROTOCOL_MIRROR_DB", value_name = "PATH")]
    db: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Receive Protocol's webhooks and keep the replica up to date.
    ///
    /// Example: PROTOCOL_WEBHOOK_SECRET=... protocol-mirror serve --listen 0.0.0.0:8787
    Serve(ServeArgs),
    /// Apply an NDJSON file of event envelopes (trusted local input: no signatures).
    ///
    /// Example: protocol-mirror import events.ndjson
    Import {
        /// The file, or `-` for standard input.
        file: PathBuf,
        /// Events per transaction.
        #[arg(long, default_value_t = 2000)]
        batch_size: usize,
    },
    /// Recompute the replica from the event log (refused while a daemon serves it).
    ///
    /// Example: protocol-mirror rebuild
    Rebuild,
    /// Bring the database to this binary's schema.
    ///
    /// Example: protocol-mirror migrate
    Migrate,
    /// Print the signature of the body read on standard input.
    ///
    /// Example: protocol-mirror sign --secret-file secret < event.json
    Sign {
        /// File holding the secret (the first one is used); else `PROTOCOL_WEBHOOK_SECRET`.
        #[arg(long, value_name = "PATH")]
        secret_file: Option<PathBuf>,
    },
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Address to listen on. Protocol must reach it: put it behind your TLS proxy, or
    /// listen publicly (e.g. 0.0.0.0:8787).
    #[arg(long, default_value = "127.0.0.1:8787", value_name = "ADDR")]
    listen: String,
    /// File of webhook secrets, one per line (mode 0600). Added to those of
    /// PROTOCOL_WEBHOOK_SECRET. With neither, a secret is generated beside the database.
    #[arg(long, value_name = "PATH")]
    secret_file: Option<PathBuf>,
    /// Webhook secrets, comma-separated (rotation: any one matches).
    #[arg(
        long = "secret",
        env = "PROTOCOL_WEBHOOK_SECRET",
        hide_env_values = true,
        hide = true
    )]
    secret_env: Option<String>,
    /// Largest accepted body in bytes; larger ones get 413.
    #[arg(long, default_value_t = 1024 * 1024, value_name = "N")]
    max_body_bytes: usize,
    /// Seconds a request may take in all.
    #[arg(long, default_value_t = 30, value_name = "SECS")]
    request_timeout: u64,
    /// Seconds a client may take to send a request's headers.
    #[arg(long, default_value_t = 10, value_name = "SECS")]
    header_timeout: u64,
    /// Events waiting for the writer before new ones get 503 with Retry-After.
    #[arg(long, default_value_t = 8192, value_name = "N")]
    queue: usize,
    /// Most events committed in one transaction.
    #[arg(long, default_value_t = 1024, value_name = "N")]
    max_batch: usize,
    /// Most requests handled at once.
    #[arg(long, default_value_t = 1024, value_name = "N")]
    concurrency_limit: usize,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(cli) {
        Ok(code) => code,
        Err(error) => {
            let mut stderr = std::io::stderr().lock();
            let _ = writeln!(stderr, "protocol-mirror: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let db = match cli.db {
        Some(db) => db,
        None => default_db()?,
    };
    match cli.command {
        Command::Serve(args) => serve_command(&db, args),
        Command::Import { file, batch_size } => import_command(&db, &file, batch_size),
        Command::Rebuild => {
            let mut store = Store::open(&db)?;
            let summary = protocol_mirror::rebuild::rebuild(&mut store, |_, _| {})?;
            println!(
                "rebuilt the replica from {} events ({} outcomes changed)",
                summary.events, summary.changed_outcomes
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Migrate => {
            Store::open(&db)?;
            println!(
                "{} is at schema version {}",
                db.display(),
                protocol_mirror::store::SCHEMA_VERSION
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Sign { secret_file } => {
            let secret = match secret_file {
                Some(path) => secrets::read_file(&path)?,
                None => secrets::from_env_value(
                    &std::env::var("PROTOCOL_WEBHOOK_SECRET").unwrap_or_default(),
                ),
            };
            let Some(secret) = secret.into_iter().next() else {
                bail!("no secret: pass --secret-file or set PROTOCOL_WEBHOOK_SECRET");
            };
            let mut body = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut body)
                .context("reading standard input")?;
            println!("{}", protocol_verify::sign(secret, &body));
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn default_db() -> anyhow::Result<PathBuf> {
    let dir = dirs::data_dir()
        .context("no data directory is known for this user: pass --db or set PROTOCOL_MIRROR_DB")?;
    Ok(dir.join("protocol-mirror").join("mirror.db"))
}

fn import_command(db: &Path, file: &Path, batch_size: usize) -> anyhow::Result<ExitCode> {
    let mut store = Store::open(db)?;
    let options = ImportOptions {
        batch_size,
        ..ImportOptions::default()
    };
    let summary = if file == Path::new("-") {
        import(&mut store, std::io::stdin().lock(), options, |_| {})?
    } else {
        let input =
            std::fs::File::open(file).with_context(|| format!("cannot open {}", file.display()))?;
        import(&mut store, std::io::BufReader::new(input), options, |_| {})?
    };
    for malformed in &summary.first_malformed {
        eprintln!("line {}: {}", malformed.line, malformed.error);
    }
    let outcomes: Vec<String> = summary
        .outcomes
        .iter()
        .map(|(outcome, n)| format!("{n} {outcome}"))
        .collect();
    println!(
        "imported {} events: {}; {} duplicate, {} malformed lines skipped",
        summary.events(),
        if outcomes.is_empty() {
            "none new".into()
        } else {
            outcomes.join(", ")
        },
        summary.duplicates,
        summary.malformed
    );
    Ok(ExitCode::SUCCESS)
}

fn serve_command(db: &Path, args: ServeArgs) -> anyhow::Result<ExitCode> {
    let lock = ServeLock::acquire(db)?;
    let store = Store::open(db)?;

    let mut configured = args
        .secret_env
        .as_deref()
        .map(secrets::from_env_value)
        .unwrap_or_default();
    if let Some(file) = &args.secret_file {
        configured.extend(secrets::read_file(file)?);
    }
    let (secrets, source) = if configured.is_empty() {
        secrets::generated(db)?
    } else {
        (configured, Source::Configured)
    };
    let verifier = protocol_verify::Verifier::new(&secrets).context("invalid webhook secret")?;
    match &source {
        Source::Generated(path) => eprintln!(
            "generated a webhook secret in {0} (mode 0600).\n\
             Register it with Protocol as your app's webhook key (`cat {0}`), \
             or configure your own with PROTOCOL_WEBHOOK_SECRET or --secret-file.",
            path.display()
        ),
        Source::Reused(path) => eprintln!("using the webhook secret in {}", path.display()),
        Source::Configured => {}
    }

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind(&args.listen))
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener
        .local_addr()
        .context("reading the listen address")?;

    let metrics = Arc::new(Metrics::new(Some(db.to_owned())));
    let (writer, writer_thread) = Writer::start(store, args.queue, args.max_batch, metrics.clone())
        .context("starting the writer thread")?;
    let config = serve::Config {
        max_body_bytes: args.max_body_bytes,
        request_timeout: Duration::from_secs(args.request_timeout),
        header_timeout: Duration::from_secs(args.header_timeout),
        concurrency_limit: args.concurrency_limit,
        // Metrics are for the operator: only on a loopback listener.
        expose_metrics: addr.ip().is_loopback(),
        ..serve::Config::default()
    };
    let (header_timeout, grace) = (config.header_timeout, config.shutdown_grace);
    let router = serve::router(serve::AppState::new(config, verifier, writer, metrics));

    tracing::info!(
        address = %addr,
        database = %db.display(),
        secrets = secrets.len(),
        "protocol-mirror serving"
    );
    if !addr.ip().is_loopback() {
        tracing::info!("/metrics is not served on a non-loopback address");
    }
    eprintln!("listening on {addr}");
    runtime.block_on(serve::serve(
        listener,
        router,
        header_timeout,
        grace,
        shutdown_signal(),
    ))?;
    runtime.shutdown_timeout(Duration::from_secs(5));
    // Every handle to the writer is gone: it finishes its batch and closes the database.
    writer_thread.join().context("closing the database")?;
    drop(lock);
    tracing::info!("stopped cleanly");
    Ok(ExitCode::SUCCESS)
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(_) => {
                    let _ = interrupt.await;
                    return;
                }
            };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
    tracing::info!("shutting down: finishing in-flight requests");
}
