//! `protocol-mirror serve`: configuration, secrets, and the daemon's lifecycle.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use std::net::SocketAddr;

use anyhow::Context;
use protocol_mirror::secrets::{self, Source};
use protocol_mirror::serve::checkpointer::{self, Checkpointer};
use protocol_mirror::serve::read_api::ReadPool;
use protocol_mirror::serve::reconcile::{ClientSource, Reconciler};
use protocol_mirror::serve::writer::LogLeft;
use protocol_mirror::serve::writer::{self, Writer};
use protocol_mirror::serve::{self, Routes, metrics::Metrics};
use protocol_mirror::store::{self, Store};

#[derive(clap::Args)]
pub(crate) struct ServeArgs {
    /// Address to listen on. Protocol must reach it: put it behind your TLS proxy (have
    /// it forward /webhooks alone: docs/API.md), or listen publicly (e.g.
    /// 0.0.0.0:8787; the read API then needs --read-listen on loopback, a
    /// --read-token, or --no-read-api).
    #[arg(long, default_value = "127.0.0.1:8787", value_name = "ADDR")]
    listen: String,
    /// File of webhook secrets, one per line (refused if its group or others have any
    /// access, 0600, or if another user than this one or root owns it). Added to those of
    /// PROTOCOL_WEBHOOK_SECRET. With neither, a secret is generated beside the database.
    #[arg(long, value_name = "PATH")]
    secret_file: Option<PathBuf>,
    /// PROTOCOL_WEBHOOK_SECRET: webhook secrets, comma-separated (rotation: any one
    /// matches), read from the environment only (a secret on the command line would
    /// show in `ps`).
    #[arg(skip = super::env_text("PROTOCOL_WEBHOOK_SECRET"))]
    secret_env: Result<Option<String>, super::UsageError>,
    /// Require `Authorization: Bearer <TOKEN>` on the read API, /metrics and
    /// /openapi.json; else $PROTOCOL_MIRROR_READ_TOKEN (unless empty or blank).
    #[arg(long, value_name = "TOKEN")]
    read_token: Option<String>,
    /// PROTOCOL_MIRROR_READ_TOKEN, read by hand: empty counts as unset, as it does for
    /// the other variables (an empty `--read-token` is refused).
    #[arg(skip = super::env_text("PROTOCOL_MIRROR_READ_TOKEN"))]
    read_token_env: Result<Option<String>, super::UsageError>,
    /// Serve the read API, /metrics and /openapi.json on this separate address (e.g.
    /// 127.0.0.1:8788), leaving only /webhooks and /healthz on --listen.
    #[arg(long, value_name = "ADDR", conflicts_with = "no_read_api")]
    read_listen: Option<String>,
    /// Do not serve the read API, /metrics and /openapi.json at all.
    #[arg(long)]
    no_read_api: bool,
    /// Run a backfill pass (see `backfill`) now and then every DURATION (e.g. 30m, 6h)
    /// in the background; needs an API token.
    #[arg(long, value_name = "DURATION", value_parser = positive_duration, allow_hyphen_values = true)]
    reconcile_every: Option<Duration>,
    /// Let those passes prune rows Protocol no longer has.
    #[arg(long, requires = "reconcile_every")]
    reconcile_prune: bool,
    #[command(flatten)]
    api: super::backfill::ApiArgs,
    /// Largest accepted body in bytes; larger ones get 413 (0 would refuse every event,
    /// so it is refused).
    #[arg(long, default_value_t = 1024 * 1024, value_name = "N",
          value_parser = super::whole_number::<usize>(1, usize::MAX as u64))]
    max_body_bytes: usize,
    /// Seconds a request may take in all (1 to 86,400: 0 would fail every event); an
    /// answer its reader stops reading for as long is cut off.
    #[arg(long, default_value_t = 30, value_name = "SECS",
          value_parser = super::whole_number::<u64>(1, 86_400))]
    request_timeout: u64,
    /// Seconds a client may take to send a request's headers (1 to 86,400).
    #[arg(long, default_value_t = 10, value_name = "SECS",
          value_parser = super::whole_number::<u64>(1, 86_400))]
    header_timeout: u64,
    /// Events waiting for the writer before new ones get 503 with Retry-After (1 to
    /// 1,000,000).
    #[arg(long, default_value_t = 8192, value_name = "N",
          value_parser = super::whole_number::<usize>(1, 1_000_000))]
    queue: usize,
    /// Most events committed in one transaction (1 to 1,000,000).
    #[arg(long, default_value_t = 1024, value_name = "N",
          value_parser = super::whole_number::<usize>(1, 1_000_000))]
    max_batch: usize,
    /// Most webhooks handled at once, and as many read API requests apart (1 to
    /// 1,000,000: with 0 none would ever be).
    #[arg(long, default_value_t = 1024, value_name = "N",
          value_parser = super::whole_number::<usize>(1, 1_000_000))]
    concurrency_limit: usize,
    /// Most connections open at once on each listener (--read-listen's apart); more
    /// wait in the kernel's queue (1 to 1,000,000; default 1,024, or fewer where the
    /// open-file limit leaves less room).
    #[arg(long, value_name = "N",
          value_parser = super::whole_number::<usize>(1, 1_000_000))]
    max_connections: Option<usize>,
}

/// The longest read token: room for it in a request head of
/// [`protocol_mirror::serve::MAX_HEAD_BYTES`], with the rest of the head.
const MAX_READ_TOKEN_BYTES: usize = 4096;

/// The read token of `--read-token` (`given`), else of `PROTOCOL_MIRROR_READ_TOKEN`
/// (`env`), trimmed; refused when empty or when no client could send it.
fn read_token(
    given: Option<String>,
    env: Result<Option<String>, super::UsageError>,
    read_api: bool,
) -> anyhow::Result<Option<String>> {
    // Trimmed as secrets are: a token pasted with a space could never be matched. An
    // empty `--read-token` is refused, not taken for no token: `--read-token "$TOKEN"`
    // with the variable unset would otherwise serve the read API to anyone on the
    // machine. (An empty variable is unset, as the other variables are.)
    let token = match given {
        Some(token) => Some(token),
        None => env?.filter(|t| {
            // Said, as an empty PROTOCOL_WEBHOOK_SECRET is: a failed expansion in a
            // service's unit left the read API open to every local user without a
            // word (a black-box probe).
            let blank = t.trim().is_empty();
            if blank && read_api {
                super::note!(
                    "PROTOCOL_MIRROR_READ_TOKEN is set but empty, so it counts as unset: the \
                     read API and /metrics take requests without a token"
                );
            }
            !blank
        }),
    };
    let token = match token.map(|t| t.trim().to_owned()) {
        Some(empty) if empty.is_empty() => {
            return Err(super::UsageError(
                "--read-token is empty: give a token, or leave the option out".into(),
            )
            .into());
        }
        token => token,
    };
    // No client could send it.
    if let Some(token) = &token {
        super::UsageError::unless_header_safe(
            "the read token",
            token,
            "check --read-token or PROTOCOL_MIRROR_READ_TOKEN",
        )?;
        // Nor one that fills a request's head: every request would get 431.
        if token.len() > MAX_READ_TOKEN_BYTES {
            return Err(super::UsageError(format!(
                "the read token is {} bytes; at most {MAX_READ_TOKEN_BYTES} (a request's \
                 head is at most {} KiB): check --read-token or PROTOCOL_MIRROR_READ_TOKEN",
                token.len(),
                protocol_mirror::serve::MAX_HEAD_BYTES / 1024
            ))
            .into());
        }
    }
    Ok(token)
}

/// Refuses a read API reachable off loopback without a token.
fn check_exposure(read_addr: Option<SocketAddr>, token: Option<&str>) -> anyhow::Result<()> {
    match read_addr {
        // `to_canonical`: `[::ffff:127.0.0.1]` is loopback too.
        // A usage mistake (exit 2): the command line asks for what is refused.
        Some(addr) if !addr.ip().to_canonical().is_loopback() && token.is_none() => {
            Err(super::UsageError(format!(
                "refusing to serve the read API and /metrics on {addr} (not loopback) without a token; \
                 either set a token with --read-token or PROTOCOL_MIRROR_READ_TOKEN, \
                 or serve the read API on a loopback address with --read-listen 127.0.0.1:8788, \
                 or turn it off with --no-read-api"
            ))
            .into())
        }
        _ => Ok(()),
    }
}

/// The socket addresses `addr` (`--listen`, `--read-listen`) stands for; one that is
/// no address, or a name that does not resolve, is a usage mistake (exit 2).
fn addresses(addr: &str) -> anyhow::Result<Vec<SocketAddr>> {
    std::net::ToSocketAddrs::to_socket_addrs(addr)
        .map(Iterator::collect)
        .map_err(|e| {
            // A port alone (`--listen 8787`) said only "invalid socket address".
            let hint = if addr.trim().parse::<u16>().is_ok() {
                format!(
                    " (an address is HOST:PORT: 127.0.0.1:{} for this machine alone)",
                    addr.trim()
                )
            } else if !addr.contains(':') {
                " (an address is HOST:PORT, e.g. 127.0.0.1:8787)".to_owned()
            } else if let Some(port) = addr.trim().strip_prefix(':') {
                // Go's and nginx's spelling of every address (an operator probe).
                format!(
                    " (an address needs its host: 127.0.0.1:{port} for this machine alone, \
                     0.0.0.0:{port} for every address)"
                )
            } else {
                String::new()
            };
            super::UsageError(format!("cannot listen on {addr}: {e}{hint}")).into()
        })
}

/// What `--reconcile-every` runs: how often, and where each pass gets its API client.
fn reconcile_settings(
    every: Option<Duration>,
    api: &super::backfill::ApiArgs,
) -> anyhow::Result<Option<(Duration, ClientSource)>> {
    match every {
        Some(every) if !api.has_token() => Err(super::UsageError(format!(
            "--reconcile-every {} needs Protocol's API token: set PROTOCOL_API_TOKEN or pass --token-file",
            humantime::format_duration(every)
        ))
        .into()),
        // Checked now (a start with unusable settings is refused), and read again
        // before every pass.
        Some(every) => {
            let first = api.client()?;
            // A token file that is a pipe gives its token once: kept for every pass
            // (each later pass found the pipe empty, and none ever ran: a re-probe).
            let source: ClientSource = if api.token_file_is_pipe() {
                Box::new(move || Ok(first.clone()))
            } else {
                let api = api.clone();
                // Said as the CLI says an error, each cause once (a re-probe read "No
                // such file or directory" twice).
                Box::new(move || api.client().map_err(|e| crate::one_line(&e)))
            };
            Ok(Some((every, source)))
        }
        None => Ok(None),
    }
}

/// `serve`'s settings of Protocol's API are used only by `--reconcile-every`: given
/// without it, they are refused as `--reconcile-prune` is (they were taken and ignored,
/// and a daemon started with an API URL and token but no interval never reconciled;
/// a probe). Their variables stay ambient: only what the command line gives counts.
pub(super) fn api_settings_need_reconcile(serve: clap::Command) -> clap::Command {
    ["api_url", "token_file", "rate", "api_timeout"]
        .into_iter()
        .fold(serve, |serve, id| {
            serve.mut_arg(id, |arg| arg.requires("reconcile_every"))
        })
}

/// The names a read API without a token answers besides loopback's: that of the
/// listener that serves it (with --read-listen, the webhooks' public name was taken for
/// one too: a review).
fn read_api_names(listen: &str, read_listen: Option<&str>) -> Vec<String> {
    serve::host::listen_names(std::iter::once(read_listen.unwrap_or(listen)))
}

/// A duration such as `30m` or `6h`, not zero (passes back to back, without a pause).
fn positive_duration(text: &str) -> Result<Duration, String> {
    match humantime::parse_duration(text) {
        Ok(duration) if duration.is_zero() => Err("must be longer than 0".into()),
        Ok(duration) => Ok(duration),
        // humantime's words alone ("expected number at 0" for `-5m` or `banana`) named
        // no fix (an operator probe).
        Err(e) => Err(format!(
            "{e}: a duration is a number and a unit, such as 90s, 30m, 6h or 1d"
        )),
    }
}

/// Refuses `--read-listen` on the address `--listen` takes (binding it twice failed
/// with a bare "address in use"), also where one of them is every address of the
/// machine on that port (`0.0.0.0:P` takes `127.0.0.1:P` too).
/// `listened` and `read_on` are what `listen` and `read_listen` stand for ([`addresses`]).
fn same_address_twice(
    (listen, listened): (&str, &[SocketAddr]),
    (read_listen, read_on): (&str, &[SocketAddr]),
) -> anyhow::Result<()> {
    // Every address: `0.0.0.0` of IPv4, `[::]` of both (Linux's default).
    let takes = |wide: &std::net::SocketAddr, other: &std::net::SocketAddr| {
        wide.ip().is_unspecified() && (wide.is_ipv6() || other.is_ipv4())
    };
    // Port 0 picks a free one for each.
    let overlap = |a: &std::net::SocketAddr, b: &std::net::SocketAddr| {
        a.port() != 0 && a.port() == b.port() && (a.ip() == b.ip() || takes(a, b) || takes(b, a))
    };
    if read_on
        .iter()
        .any(|a| listened.iter().any(|b| overlap(a, b)))
    {
        return Err(super::UsageError(format!(
            "--read-listen {read_listen} is the address --listen {listen} already takes; \
             give it another (e.g. 127.0.0.1:8788), or leave it out to serve the read API on \
             --listen"
        ))
        .into());
    }
    Ok(())
}

/// The room the daemon's WAL may take beside the database under load: it is cut back
/// to [`store::WAL_SIZE_LIMIT`] when it starts over.
const WAL_ROOM: u64 = store::WAL_SIZE_LIMIT as u64;

pub(crate) fn run(db: &Path, args: ServeArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let bind = |addr: &str, addrs: &[SocketAddr]| {
        // One that cannot be bound (in use, not ours) is a failure.
        match runtime.block_on(async { serve::listen(addrs) }) {
            Ok(listener) => Ok(listener),
            // The daemon of this database, started again with the same command: said
            // as the lock says it, which names it (it was "address already in use").
            Err(e)
                if e.kind() == std::io::ErrorKind::AddrInUse
                    && protocol_mirror::lock::ServeLock::is_held(db) =>
            {
                match protocol_mirror::lock::ServeLock::acquire(
                    db,
                    protocol_mirror::lock::Role::Daemon,
                ) {
                    Err(held) => Err(anyhow::Error::new(held)),
                    Ok(_) => Err(anyhow::Error::new(e).context(format!("cannot listen on {addr}"))),
                }
            }
            // Whose, it cannot tell: what to do, it can (it said the OS's words alone:
            // a new user's walk).
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Err(anyhow::anyhow!(
                "cannot listen on {addr}: {e} (another program, or another protocol-mirror \
                 daemon, listens there: stop it, or give this one another address)"
            )),
            Err(e) => Err(anyhow::Error::new(e).context(format!("cannot listen on {addr}"))),
        }
    };
    // Both addresses are read before either is bound: a refused start never listens,
    // not even for the moment it takes to refuse.
    let listen_on = addresses(&args.listen)?;
    let read_listen_on = args.read_listen.as_deref().map(addresses).transpose()?;
    if let (Some(read_listen), Some(read_on)) = (&args.read_listen, &read_listen_on) {
        same_address_twice((&args.listen, &listen_on), (read_listen, read_on))?;
    }
    let token = read_token(args.read_token, args.read_token_env, !args.no_read_api)?;
    if token.is_some() && args.no_read_api {
        // Not refused: the variable may be set for every daemon of a machine.
        tracing::warn!(
            "a read token is set, but --no-read-api turns the read API off: it protects nothing"
        );
    }
    // Before anything is bound (it bound and listened on 0.0.0.0 first, then refused;
    // a black-box probe): every address the name stands for, and the one bound again
    // below.
    if !args.no_read_api {
        for addr in read_listen_on.as_ref().unwrap_or(&listen_on) {
            check_exposure(Some(*addr), token.as_deref())?;
        }
    }
    let reconcile = reconcile_settings(args.reconcile_every, &args.api)?;

    let secret_env = args.secret_env.clone()?;
    let mut configured = super::env_secrets(secret_env.as_deref())?;
    // Empty counts as unset, as for the other variables; said, because the daemon then
    // checks a generated secret and Protocol's webhooks get 401 (a probe:
    // `Environment=PROTOCOL_WEBHOOK_SECRET=${UNSET}`).
    if secret_env.is_some() && configured.is_empty() && args.secret_file.is_none() {
        super::note!(
            "PROTOCOL_WEBHOOK_SECRET is set but empty, so it counts as unset and no secret \
             is configured"
        );
    }
    // Before the database is opened: a start refused for its secret file creates
    // nothing (it left an empty database and its lock file).
    if let Some(file) = &args.secret_file {
        configured.extend(super::secret_file(file)?);
    }
    // The same secret twice is one (the start-up line counted it twice: a re-probe).
    let mut seen = std::collections::HashSet::new();
    configured.retain(|secret| seen.insert(secret.clone()));
    // The secret the daemon will check, also decided before the database is opened (a
    // generated one kept beside it is read now; a new one is made once it is open).
    // Configured secrets take the place of a generated one: said when they leave it
    // out, because Protocol may still sign with it (it was registered as the app's key).
    let generated = secrets::generated_path(db);
    let (chosen, left_out) = if configured.is_empty() {
        let reused = generated
            .exists()
            .then(|| secrets::generated_in(generated.clone()))
            .transpose()
            .context("the generated webhook secret file")?;
        (reused, false)
    } else {
        let left_out = secrets::read_file(&generated)
            .is_ok_and(|kept| !kept.iter().all(|k| configured.contains(k)));
        (Some((configured, Source::Configured)), left_out)
    };

    // Another program's database, a folder, one of a newer schema, or one another
    // process serves (said as its lock says it, naming the daemon) is refused before
    // anything is bound too; the lock itself is taken after binding (taking it makes
    // the lock file and its folder, which a start that cannot listen should not
    // leave), so it is asked again. So is a database this user cannot write, asked
    // without opening it (opening creates and migrates it). A full disk shows only
    // at the trial commit below, after binding.
    protocol_mirror::store::refuse_before_opening(db)?;
    protocol_mirror::store::refuse_marked_and_empty(db)?;
    if protocol_mirror::lock::ServeLock::is_held(db) {
        drop(protocol_mirror::store::serve_lock(
            db,
            protocol_mirror::lock::Role::Daemon,
        )?);
    }
    protocol_mirror::store::refuse_read_only_filesystem(db)?;
    super::write::writable(db)?;

    // Bound once every setting has been accepted, before the database is opened.
    let listener = bind(&args.listen, &listen_on)?;
    let addr = listener
        .local_addr()
        .context("reading the listen address")?;
    let read_listener = match (&args.read_listen, &read_listen_on) {
        (Some(read_listen), Some(read_on)) => Some(bind(read_listen, read_on)?),
        _ => None,
    };
    let read_addr = match &read_listener {
        Some(listener) => Some(
            listener
                .local_addr()
                .context("reading the listen address")?,
        ),
        None if args.no_read_api => None,
        None => Some(addr),
    };
    check_exposure(read_addr, token.as_deref())?;

    // Asked again: it may have changed while the listeners were bound. (Before the
    // lock file is made beside it.)
    protocol_mirror::store::refuse_before_opening(db)?;
    let lock = protocol_mirror::store::serve_lock(db, protocol_mirror::lock::Role::Daemon)?;
    let mut store = match Store::open_locked(db) {
        Ok(store) => store,
        Err(refused) => {
            lock.give_up();
            return Err(refused.into());
        }
    };
    let lock = Arc::new(std::sync::Mutex::new(lock));
    // An import into this new database was killed: say so, as readers do, rather than
    // start on an empty one without a word.
    // The log's lines do not go through `Stderr::write_fmt`: the commands they advise
    // are given the `--db` here (`run \`protocol-mirror rebuild\`` acted on the default
    // database: an upgrade probe).
    if let Some(note) = super::leftover_note(&store) {
        tracing::warn!("{}", super::for_the_given_db(&note));
    }
    if let Some(note) = store.migration_note() {
        // Restarting the daemon is how most upgrade: the advice `migrate` prints
        // must reach them too, as a warning; a migration that needs nothing more is
        // news (it was a warning too: a black-box probe).
        let advised = note.contains(store::REBUILD_ADVICE);
        let note = super::for_the_given_db(&note);
        if advised {
            tracing::warn!("{note}");
        } else {
            tracing::info!("{note}");
        }
    }
    // At every start until a rebuild (it was said once, at the migration).
    if let Some(note) = store.unrebuilt_note()? {
        tracing::warn!("{}", super::for_the_given_db(&note));
    }
    writer::tune(&store)?;
    // An earlier daemon found the file damaged: refused while it still is (it started,
    // said healthy, and took events into it until one failed again: a probe).
    if let Some(note) = store.recheck_damage()? {
        tracing::warn!("{}", super::for_the_given_db(&note));
    }
    // A mark that stands now is no finding of this daemon's.
    let mark = store::damage_mark_path(db);
    let marked_at_start = store::is_marked(db);
    // Refuse now rather than answer every webhook 503: Protocol would retry forever
    // against a daemon that cannot commit. (A database busy for longer than the busy
    // timeout is refused too; starting again is the fix then as well.) But for an
    // import's transaction, waited out as the writer waits it out later (one event
    // can cascade for seconds): a daemon started during one said "database is locked"
    // and stopped (a review).
    let waiting_since = std::time::Instant::now();
    let mut told_of_the_import = false;
    loop {
        match store.check_writable() {
            Err(error)
                if error.is_busy()
                    && protocol_mirror::lock::ImportMark::is_held(db)
                    && waiting_since.elapsed() < protocol_mirror::import::DAEMON_WAIT =>
            {
                if !std::mem::replace(&mut told_of_the_import, true) {
                    tracing::info!(
                        "an import of this database is in a transaction: waiting for it \
                         before serving"
                    );
                }
            }
            other => break other,
        }
    }
    .with_context(|| format!("{} cannot be written", db.display()))?;
    // A tiny commit fits where events do not: refused too (it started, said healthy,
    // and answered every event 503: a probe).
    if let Some(why) = store::too_little_room(db) {
        anyhow::bail!("{why}");
    }
    let (secrets, source) = match chosen {
        Some(chosen) => chosen,
        None => secrets::generated_in(generated.clone())?,
    };
    let verifier = protocol_verify::Verifier::new(&secrets).context("invalid webhook secret")?;
    match &source {
        // A database Protocol delivered to, with no secret beside it (restored or
        // moved without its `.secret`): its deliveries get 401 from now on, which the
        // first run's note did not say (a black-box probe).
        Source::Generated(path) if store.holds_webhook_events()? => tracing::warn!(
            "generated a new webhook secret in {}, but this database holds events \
             delivered by webhook, signed with a secret that is not beside it (a database \
             restored or moved without its {}?): Protocol's deliveries get 401 until that \
             secret is configured with PROTOCOL_WEBHOOK_SECRET or --secret-file, or the \
             new one is registered with Protocol (`cat {}`)",
            shown(path),
            path.file_name().map_or_else(String::new, |name| {
                super::escaped_in_one_line(&name.to_string_lossy())
            }),
            shell_shown(path)
        ),
        Source::Generated(path) => super::note!(
            "generated a webhook secret in {} (mode 0600).\n\
             Register it with Protocol as your app's webhook key (`cat {}`); or, if \
             Protocol gave you the key, configure that one with PROTOCOL_WEBHOOK_SECRET \
             or --secret-file.",
            shown(path),
            shell_shown(path)
        ),
        Source::ReplacedEmpty(path) => tracing::warn!(
            "the webhook secret file {} was empty (truncated, or left so by a start killed \
             while writing it): generated a new secret in it (mode 0600). Webhooks signed \
             with a secret it held before get 401: register the new one with Protocol \
             (`cat {}`), or configure the old one with PROTOCOL_WEBHOOK_SECRET or \
             --secret-file.",
            shown(path),
            shell_shown(path)
        ),
        Source::Reused(path) => super::note!("using the webhook secret in {}", shown(path)),
        // A warning, as the log's: webhooks Protocol signs with it get 401 (it was a
        // plain line among the log's: an operator's probe).
        Source::Configured if left_out => tracing::warn!(
            "not using the generated webhook secret in {}: the configured secrets replace \
             it, and webhooks signed with it get 401. To accept it during a rotation, add it \
             to PROTOCOL_WEBHOOK_SECRET or to the --secret-file.",
            shown(&generated)
        ),
        Source::Configured => {}
    }

    // The WAL takes its room beside the database before any of it is copied in: on a
    // small disk it filled the disk by itself, and the daemon answered 503 until space
    // was freed (a black-box probe: a 20 MB volume, 17 MiB free at the start).
    if let Some(free) = store::free_bytes(db).filter(|&free| free < WAL_ROOM) {
        tracing::warn!(
            "only {:.1} MiB free on the database's disk: under load the WAL alone may take \
             {} MiB beside the database, and once the disk is full every event gets 503 \
             until space is freed",
            free as f64 / (1024.0 * 1024.0),
            WAL_ROOM / (1024 * 1024)
        );
    }
    let metrics = Arc::new(Metrics::new(Some(db.to_owned())));
    let (writer, writer_thread) = Writer::start(store, args.queue, args.max_batch, metrics.clone())
        .context("starting the writer thread")?;
    let checkpointer = Checkpointer::start(
        db.to_owned(),
        checkpointer::EVERY,
        writer::CHECKPOINT_PAGES,
        {
            let writer = writer.clone();
            move || writer.file_holds()
        },
    )
    .context("starting the checkpoint thread")?;
    let config = serve::Config {
        max_body_bytes: args.max_body_bytes,
        request_timeout: Duration::from_secs(args.request_timeout),
        header_timeout: Duration::from_secs(args.header_timeout),
        concurrency_limit: args.concurrency_limit,
        loopback_names: read_api_names(&args.listen, args.read_listen.as_deref()),
        database: Some(db.to_owned()),
        ..serve::Config::default()
    };
    let (header_timeout, grace) = (config.header_timeout, config.shutdown_grace);
    let listeners = if args.read_listen.is_some() { 2 } else { 1 };
    let places = super::connections::max_connections(args.max_connections, listeners);
    let write_timeout = config.request_timeout;
    let reconciler = reconcile
        .map(|(every, client)| -> anyhow::Result<Reconciler> {
            let reader = Store::open_read_only(db).context("opening the database to reconcile")?;
            Reconciler::start(
                writer.clone(),
                db.to_owned(),
                reader,
                client,
                every,
                args.reconcile_prune,
                metrics.clone(),
            )
            .context("starting the reconcile thread")
        })
        .transpose()?;
    // Also with --no-read-api: a redelivery the writer has no room for is answered
    // with its first outcome from them (SPEC §3); without, it got 503 (a review).
    let reads = Some(ReadPool::new(db.to_owned()).context("starting the read API's threads")?);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let state = serve::AppState::new(
        config,
        verifier,
        writer,
        metrics.clone(),
        reads,
        token.clone(),
    )
    .stopping_on(stopped.clone());
    let main_routes = Routes {
        webhooks: true,
        read_api: read_addr.is_some() && read_listener.is_none(),
    };
    let router = serve::router(state.clone(), main_routes);
    let read = read_listener.map(|listener| {
        let routes = Routes {
            webhooks: false,
            read_api: true,
        };
        (listener, serve::router(state.clone(), routes))
    });
    let held_logs = state.held_logs();
    let read_pool = state.read_pool();
    drop(state);
    if args.max_body_bytes > serve::UNSIGNED_BODIES_BYTES {
        tracing::warn!(
            max_body_bytes = args.max_body_bytes,
            "bodies over the 64 MiB that unsigned bodies share are read one at a time, \
             whole, before their signature can be checked: anyone who can reach the webhook \
             endpoint can make the daemon hold one (up to about twice its size while it is read)"
        );
    }

    tracing::info!(
        address = %addr,
        read_api = %read_addr.map_or_else(|| "off".to_owned(), |a| a.to_string()),
        read_token = token.is_some(),
        database = %shown(db),
        secrets = secrets.len(),
        // Which build serves (an operator's probe: the log said none).
        version = env!("CARGO_PKG_VERSION"),
        schema = store::SCHEMA_VERSION,
        "protocol-mirror serving"
    );
    let ending = Ending::default();
    stop_on_signals(stop, ending.clone()).context("listening for signals")?;
    super::note!("listening on {addr}");
    if let (Some(read_addr), Some(_)) = (read_addr, &read) {
        super::note!("read API listening on {read_addr}");
    }
    let until_stopped = |mut stopped: tokio::sync::watch::Receiver<bool>| async move {
        let _ = stopped.wait_for(|stop| *stop).await;
    };
    let served = runtime.block_on(async {
        let keeper = tokio::spawn(keep_lock(lock.clone(), db.to_owned()));
        let connections = || serve::Connections {
            header_timeout,
            // An answer whose reader stops reading is given as long as a request is.
            write_timeout,
            grace,
            metrics: metrics.clone(),
            places: Arc::new(tokio::sync::Semaphore::new(places)),
        };
        let main = serve::serve(
            listener,
            router,
            connections(),
            until_stopped(stopped.clone()),
        );
        let result = match read {
            Some((listener, router)) => {
                let read = serve::serve(listener, router, connections(), until_stopped(stopped));
                let (main, read) = tokio::join!(main, read);
                main.and(read)
            }
            None => main.await,
        };
        keeper.abort();
        result
    });
    ending.claim_if_failed(served)?;
    held_logs.flush();
    if let Some(reconciler) = reconciler {
        reconciler.stop();
    }
    runtime.shutdown_timeout(Duration::from_secs(5));
    // The checkpoint thread stops first: a checkpoint of its under way would keep the
    // writer's last copy of the log into a database file found replaced from finishing
    // (a review).
    checkpointer.stop();
    // The readers' connections close first (nothing asks them anything once the
    // runtime is gone): a read still running held back the writer's last copy of the
    // log (a review).
    if let Some(pool) = read_pool {
        pool.close();
    }
    // Every handle to the writer is gone: it finishes its batch and copies the log
    // into the database file. Its connection closes last, so that its close removes
    // the log and its index.
    let (store, log_left) =
        ending.claim_if_failed(writer_thread.finish().context("closing the database"))?;
    ending.claim_if_failed(store.close().context("closing the database"))?;
    // The last handle, once the runtime and its keeper are gone: its drop empties the
    // lock file.
    drop(lock);
    // SQLite's own close, the last, may yet have copied what the writer could not.
    let (_, log_bytes) = protocol_mirror::store::file_sizes(db);
    // From here on the stop's line and exit code are the daemon's last (a second
    // signal changes nothing).
    ending.claim();
    match log_left {
        LogLeft::Failed(error) if log_bytes > 0 => anyhow::bail!(
            "stopped, but the write-ahead log could not be copied into the database file \
             ({error}): {db} alone is not whole; keep its -wal and -shm beside it (the next \
             start copies them in, once it can)",
            db = db.display()
        ),
        LogLeft::FileEmptied => anyhow::bail!(
            "stopped; {db} was emptied while the daemon ran, and holds none of its events: \
             move its -wal and -shm away (they belong to the emptied file), then restore \
             it from a backup",
            db = db.display()
        ),
        LogLeft::LogCut => anyhow::bail!(
            "stopped; the write-ahead log of {db} was cut while the daemon ran, so the events \
             committed since its last copy into the database are gone (nothing more was \
             copied into it); move its -wal and -shm away, start the daemon again, and run \
             `protocol-mirror backfill` to heal what Protocol will not deliver again",
            db = db.display()
        ),
        LogLeft::FileGone => anyhow::bail!(
            "stopped; {db} was removed, replaced or moved away while the daemon ran (or \
             its -wal or -shm were): it took no events from then on (Protocol delivers \
             again those it refused); start it again on the database to serve",
            db = db.display()
        ),
        // Found damaged while it ran: not "stopped cleanly", exit 0 (a probe).
        _ if !marked_at_start && store::is_marked(db) => anyhow::bail!(
            "stopped; {db} was found damaged while the daemon ran (see {mark}): restore it \
             from a backup; or, if its event log can be read, rebuild its replica into a \
             new file: `{rebuild}`; or `{recover}` may save its rows into a new file; until \
             then the next start refuses it",
            db = db.display(),
            mark = mark.display(),
            rebuild = store::rebuild_into_command(db),
            recover = store::recover_command(db)
        ),
        LogLeft::HeldByReader if log_bytes > 0 => tracing::warn!(
            "stopped; a reader in the middle of a read held part of the write-ahead log \
             back: it stays beside the database file until the next writer copies it in \
             (copy the -wal with the file)"
        ),
        _ => tracing::info!("stopped cleanly"),
    }
    Ok(ExitCode::SUCCESS)
}

/// How the daemon ends, decided once: by a second signal, which logs its line and
/// exits 130 at once, or by the stop, whose last line and exit code are then the
/// process's. Both at once gave both: "stopped cleanly" and the second signal's line,
/// with either exit code (a black-box probe: 1-3% of rounds of two signals 1 ms
/// apart).
#[derive(Clone, Default)]
struct Ending(Arc<std::sync::Mutex<bool>>);

impl Ending {
    /// Claims the end for the stop: a second signal heard from now on changes nothing.
    /// Waits while a second signal's exit is under way, which ends the process first.
    fn claim(&self) {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = true;
    }

    /// `result`, the end claimed first when it is an error, which is then the last
    /// line (a second signal heard as it was said logged its own line beside it: a
    /// review).
    fn claim_if_failed<T, E>(&self, result: Result<T, E>) -> Result<T, E> {
        if result.is_err() {
            self.claim();
        }
        result
    }

    /// A second signal's end: unless the stop claimed it, logs so and exits 130, still
    /// holding the claim (the stop then never says it stopped cleanly).
    fn exit_now(&self) {
        let claimed = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !*claimed {
            tracing::warn!("second signal: stopping now, without the requests in flight");
            std::process::exit(130);
        }
    }
}

/// Stops the daemon on SIGINT, SIGTERM and SIGHUP (a closed terminal, whose default
/// action ended the daemon at once; not where the daemon was started ignoring it,
/// `nohup`: it stays ignored), listened for from the moment this is called, just after
/// the "protocol-mirror serving" line (so a signal sent right after the "listening on"
/// line is never the default, fatal, action; one sent while the daemon starts, such as
/// during a migration, still is: nothing was acknowledged yet, and SQLite rolls back a
/// migration cut short). The first asks the servers to stop once the requests in flight
/// are answered (`stop`); a second ends the process at once, with exit code 130 and a
/// line that says so ([`Ending::exit_now`]), however far the stop has come (also while
/// the writer finishes its last batch), until the stop's last line: safe at any moment,
/// since every acknowledged event is committed and a transaction cut short is rolled
/// back by SQLite. Two signals the kernel delivers together (`kill -TERM pid pid`) may
/// count as one, as pending signals of one kind do.
///
/// One thread hears them all, to the exit. A second signal heard by the runtime's task,
/// which ended with the serving, or by a handler put in place after it, ended the
/// process without the line, or was lost (a crash probe: 4 of 9 double SIGTERMs 5 ms
/// apart left no line).
#[cfg(unix)]
fn stop_on_signals(stop: tokio::sync::watch::Sender<bool>, ending: Ending) -> std::io::Result<()> {
    let mut signals = signal_hook::iterator::Signals::new(super::interrupt::stop_signals())?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut received = signals.forever();
            if let Some(signal) = received.next() {
                // Named: SIGHUP stops the daemon too, and a service manager's "reload"
                // sent one; the log said only "shutting down" (an operator's probe).
                tracing::info!(
                    signal = signal_name(signal),
                    "shutting down: finishing in-flight requests (signal again to stop at once)"
                );
                let _ = stop.send(true);
            }
            if received.next().is_some() {
                ending.exit_now();
            }
        })?;
    Ok(())
}

/// Stops the daemon on Ctrl-C, and a second Ctrl-C ends it at once, as on unix. One
/// listener, made before this returns and kept to the exit, hears them all on a thread
/// of its own, whose runtime outlives the daemon's: without a listener, Windows ends the
/// process at once, without a line (a review: one made on the thread, and again for the
/// second Ctrl-C, left moments without one).
#[cfg(windows)]
fn stop_on_signals(stop: tokio::sync::watch::Sender<bool>, ending: Ending) -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut ctrl_c = {
        let _entered = runtime.enter();
        tokio::signal::windows::ctrl_c()?
    };
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            runtime.block_on(async move {
                if ctrl_c.recv().await.is_some() {
                    tracing::info!(
                        "shutting down: finishing in-flight requests (Ctrl-C again to stop at once)"
                    );
                    let _ = stop.send(true);
                }
                // Once the stop has claimed the end, a Ctrl-C changes nothing.
                while ctrl_c.recv().await.is_some() {
                    ending.exit_now();
                }
            });
        })?;
    Ok(())
}

#[cfg(unix)]
fn signal_name(signal: std::ffi::c_int) -> &'static str {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    match signal {
        SIGINT => "SIGINT",
        SIGTERM => "SIGTERM",
        SIGHUP => "SIGHUP",
        _ => "a signal",
    }
}

/// `path` as [`shown`] says it, quoted for a shell: for a command to paste (`cat
/// sp ace/m.db.secret` was two files: a black-box probe).
fn shell_shown(path: &Path) -> String {
    let path = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
    super::escaped_in_one_line(&store::shell_quoted(&path.display().to_string()))
}

/// A path for the daemon's notes and log, on one line with nothing a terminal acts on
/// (a database path holding a line break split the notes), and absolute, so that the
/// `cat` a secret's note suggests works from any folder (a generated secret was shown
/// absolute, a reused one as given; a probe).
fn shown(path: &Path) -> String {
    let path = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
    super::escaped_in_one_line(&path.display().to_string())
}

/// Keeps the daemon's lock on its database while it serves, checked every second: a
/// lock file removed or replaced (by hand, or a clean-up of "stale" files) is made
/// and taken again. Until then a second daemon or a `rebuild` could start beside this
/// one (a probe ran both). What keeps it from being taken again is logged as an error
/// when it changes, and every minute while it lasts: another process holding the new
/// file writes this database beside the daemon until it stops.
async fn keep_lock(lock: Arc<std::sync::Mutex<protocol_mirror::lock::ServeLock>>, db: PathBuf) {
    const SAID_AGAIN_AFTER: Duration = Duration::from_secs(60);
    let mut every = tokio::time::interval(Duration::from_secs(1));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The last failure logged, and when: a new one is logged at once (one flag
    // silenced every failure after the first: a review).
    let mut said: Option<(String, std::time::Instant)> = None;
    loop {
        every.tick().await;
        // File I/O, and a wait of up to 50 ms for a lock another takes for a moment:
        // off the runtime's threads.
        let (lock, db) = (lock.clone(), db.clone());
        let checked = tokio::task::spawn_blocking(move || {
            let mut held = lock
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            (held.keep(&db), held.path().display().to_string())
        })
        .await;
        let Ok((kept, path)) = checked else {
            continue;
        };
        match kept {
            Ok(false) => said = None,
            Ok(true) => {
                said = None;
                tracing::warn!(
                    lock_file = %path,
                    "the lock file was removed or replaced while this daemon ran: made it \
                     again and took it (leave it while the daemon runs: it keeps a second \
                     daemon and `rebuild` off this database)"
                );
            }
            Err(error) => {
                let text = match &error {
                    protocol_mirror::lock::LockError::Held { pid, role, .. } => format!(
                        "another process ({}pid {pid}) took the new one: it may write this \
                         database beside this daemon; stop one of them",
                        role.map(|role| format!("{}, ", role.word()))
                            .unwrap_or_default()
                    ),
                    other => protocol_mirror::with_causes(other),
                };
                let due = said
                    .as_ref()
                    .is_none_or(|(last, at)| *last != text || at.elapsed() >= SAID_AGAIN_AFTER);
                if due {
                    tracing::error!(
                        lock_file = %path,
                        "the lock file was removed or replaced while this daemon ran, and \
                         could not be taken again: {text}"
                    );
                    said = Some((text, std::time::Instant::now()));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_goes_without_a_token() {
        let open = |addr: &str| check_exposure(Some(addr.parse().unwrap()), None).is_ok();
        assert!(open("127.0.0.1:1"));
        assert!(open("[::1]:1"));
        assert!(open("[::ffff:127.0.0.1]:1"), "IPv4-mapped loopback");
        assert!(!open("0.0.0.0:1"));
        assert!(!open("[::]:1"));
        assert!(!open("[::ffff:10.0.0.1]:1"));
        assert!(check_exposure(Some("0.0.0.0:1".parse().unwrap()), Some("t")).is_ok());
        assert!(check_exposure(None, None).is_ok());
    }

    /// `--read-listen` on an address `--listen` takes is refused as a usage mistake,
    /// also where one of them is every address on that port (a review: `0.0.0.0:P`
    /// beside `127.0.0.1:P` failed on "address already in use").
    #[test]
    fn the_read_listener_takes_an_address_of_its_own() {
        let taken = |listen: &str, read: &str| {
            let (listened, read_on) = (addresses(listen).unwrap(), addresses(read).unwrap());
            same_address_twice((listen, &listened), (read, &read_on)).is_err()
        };
        assert!(taken("127.0.0.1:8787", "127.0.0.1:8787"));
        assert!(taken("0.0.0.0:8787", "127.0.0.1:8787"));
        assert!(taken("127.0.0.1:8787", "0.0.0.0:8787"));
        assert!(taken("[::]:8787", "127.0.0.1:8787"), "[::] takes IPv4 too");
        assert!(taken("[::1]:8787", "[::]:8787"));
        assert!(
            !taken("0.0.0.0:8787", "[::1]:8787"),
            "0.0.0.0 is IPv4's alone"
        );
        assert!(!taken("0.0.0.0:8787", "127.0.0.1:8788"));
        assert!(
            !taken("127.0.0.1:0", "127.0.0.1:0"),
            "port 0 picks a free one each"
        );
    }

    #[test]
    fn the_read_api_answers_the_name_of_its_own_listener() {
        assert_eq!(read_api_names("box:8787", None), ["box"]);
        assert_eq!(
            read_api_names("hooks.example.com:8787", Some("box:8788")),
            ["box"]
        );
        assert!(read_api_names("hooks.example.com:8787", Some("127.0.0.1:8788")).is_empty());
    }

    #[test]
    fn reconcile_intervals_are_positive() {
        assert_eq!(positive_duration("30m"), Ok(Duration::from_secs(1800)));
        assert!(positive_duration("0s").is_err());
        assert!(positive_duration("soon").is_err());
    }
}
