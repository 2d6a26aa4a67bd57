//! `protocol-mirror serve`: configuration, secrets, and the daemon's lifecycle.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use protocol_mirror::lock::ServeLock;
use protocol_mirror::secrets::{self, Source};
use protocol_mirror::serve::{self, metrics::Metrics, writer::Writer};
use protocol_mirror::store::Store;

#[derive(clap::Args)]
pub(crate) struct ServeArgs {
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

pub(crate) fn run(db: &Path, args: ServeArgs) -> anyhow::Result<ExitCode> {
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
