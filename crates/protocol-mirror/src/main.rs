//! The `protocol-mirror` command: the daemon (`serve`) and the replica tools.

mod cli;

use std::io::Write;
use std::process::ExitCode;

/// mimalloc rather than the system allocator: the apply path allocates many small
/// values (parsed JSON), often on one thread and freed on another (import parses on
/// a thread of its own; the daemon parses in request handlers for the writer thread),
/// where glibc's allocator contends on its arena locks (import benchmark: ~5% faster).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    std::panic::set_hook(Box::new(report_panic));
    let args = match cli::Cli::try_parse_args(std::env::args_os()) {
        Ok(args) => args,
        Err(error) => return usage_error(&error),
    };
    let (filter, filter_note) = log_filter();
    let log = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| cli::Stderr)
        // Colours only for a terminal, and not when NO_COLOR asks for none: a log
        // file or journal gets plain text.
        .with_ansi(
            std::io::IsTerminal::is_terminal(&std::io::stderr())
                && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
        );
    if matches!(args.command, cli::Command::Serve(_)) {
        log.init();
    } else {
        // A command's notes (backfill's retries) are read as it runs, beside its
        // own lines: without the time and the module a daemon's log needs.
        log.event_format(CommandLog).init();
    }
    // Not through the log: a filter that is a mistake may let nothing through.
    if let Some(note) = filter_note {
        cli::note!("protocol-mirror: {}", cli::escaped_in_one_line(&note));
    }
    match cli::run(args) {
        Ok(code) => code,
        Err(error) if is_broken_pipe(&error) => ExitCode::SUCCESS,
        Err(error) => {
            // 1 is reserved for `get` finding nothing, 2 for usage mistakes.
            let code = if error.is::<cli::UsageError>() { 2 } else { 3 };
            let _ = writeln!(
                std::io::stderr().lock(),
                "protocol-mirror: {}",
                one_line(&error)
            );
            ExitCode::from(code)
        }
    }
}

/// How the log of a command other than `serve` reads: as the command's own lines do
/// (`protocol-mirror: waiting before retrying path=…`, `protocol-mirror: warning: …`),
/// with no time, no padded level and, above `debug`, no module. (`tracing`'s compact
/// format began each line with a space, the padding of `INFO`.)
struct CommandLog;

impl<S, N> tracing_subscriber::fmt::FormatEvent<S, N> for CommandLog
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        use tracing::Level;
        let metadata = event.metadata();
        write!(writer, "protocol-mirror: ")?;
        match *metadata.level() {
            Level::ERROR => write!(writer, "error: ")?,
            Level::WARN => write!(writer, "warning: ")?,
            Level::INFO => {}
            level => write!(
                writer,
                "{}: {}: ",
                level.as_str().to_ascii_lowercase(),
                metadata.target()
            )?,
        }
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

/// A panic is a bug, or the system refusing a resource a library does not expect to
/// be refused (tokio panics when it cannot start a thread): one line on stderr, as
/// every other error, whatever `RUST_BACKTRACE` says, never a backtrace. On the main
/// thread the process then exits at once, code 3: unwinding could wait for ever on
/// threads that will not stop (tokio's runtime, failing to start its workers, waited
/// for the ones it had started: `serve` hung under `ulimit -u`, a black-box probe).
/// A panic on another thread ends that thread, as before (a request's task, or the
/// writer, whose end the daemon reports as a failed commit), but for a thread the
/// system refused its signal stack, which cannot unwind, and tokio's blocking pool
/// refused its first thread (it panics only when it has none, so every blocking task
/// would fail): exit 3 too. (A daemon said "cannot start a thread" after "listening
/// on", and stayed up, listening, until its first request aborted it: a probe under
/// `ulimit -v`.)
fn report_panic(info: &std::panic::PanicHookInfo<'_>) {
    let message = info
        .payload()
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| info.payload().downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".to_owned());
    let thread = std::thread::current();
    let name = thread.name().unwrap_or("unnamed");
    let at = info
        .location()
        .map(|l| format!(" at {}:{}", l.file(), l.line()))
        .unwrap_or_default();
    // The panics seen outside a bug are no internal error: said as the same refusal
    // met elsewhere is, without the library's source path (a probe under `ulimit -v`
    // read tokio's file in the cargo registry). The system refusing a new thread its
    // signal stack panics in the thread's start, which cannot unwind: the process
    // aborted ("fatal runtime error") after a line naming Rust's own source file
    // (CI under `ulimit -v`), so it ends here, as one refused at the start does.
    let alternative_stack = message.starts_with("failed to allocate an alternative stack");
    let no_thread = message.starts_with("OS can't spawn") || alternative_stack;
    let line = if no_thread {
        format!("protocol-mirror: cannot start a thread: {message}{THREAD_LIMIT_HINT}")
    } else {
        format!("protocol-mirror: internal error: thread '{name}' panicked{at}: {message}")
    };
    let _ = writeln!(
        std::io::stderr().lock(),
        "{}",
        cli::escaped_in_one_line(&line)
    );
    if name == "main" || name == protocol_mirror::serve::writer::THREAD_NAME || no_thread {
        std::process::exit(3);
    }
}

/// `RUST_LOG` (default `info`), except that the HTTP client never logs below debug:
/// its trace level dumps requests, the API token included. With it, a note for the
/// log when `RUST_LOG` is not what it was surely meant to be (see [`log_filter_note`]).
fn log_filter() -> (tracing_subscriber::EnvFilter, Option<String>) {
    use tracing_subscriber::EnvFilter;
    // One that is not UTF-8 is no filter either: said, as such a one is (it was taken
    // for unset without a word).
    if matches!(
        std::env::var("RUST_LOG"),
        Err(std::env::VarError::NotUnicode(_))
    ) {
        return (
            EnvFilter::new("info,rusqlite_migration=warn"),
            Some("RUST_LOG is not UTF-8 text, so no log filter; logging at info".to_owned()),
        );
    }
    let value = std::env::var("RUST_LOG")
        .ok()
        .filter(|value| !value.trim().is_empty())
        .map(|value| without_client_trace(&value));
    // Parsed once, for the filter and for the note.
    let parsed = value.map(|value| {
        let filter = EnvFilter::try_new(&value);
        (value, filter)
    });
    let noted = parsed
        .as_ref()
        .and_then(|(value, filter)| log_filter_note(value, filter.as_ref()));
    // A filter that names nothing known (`RUST_LOG=debg`) would log nothing, its errors
    // included: logging at info instead, as for one that is no filter (an operator's
    // probe).
    let names_nothing = noted.as_ref().is_some_and(|(_, nothing)| *nothing);
    let note = noted.map(|(note, _)| note);
    let filter = parsed
        .filter(|_| !names_nothing)
        .and_then(|(value, filter)| {
            let filter = filter.ok()?;
            // Migrations log every statement at debug: hundreds of lines at the first
            // start, unless asked for by name. (Only ever made quieter: where the filter
            // gives them `warn` or `off`, as `warn,protocol_mirror=debug` does, it stays
            // as it is; judged by the filter's highest level, that one logged their
            // `info` line.)
            let verbose = level_of_target(&value, "rusqlite_migration")
                > tracing::level_filters::LevelFilter::INFO;
            if verbose && !value.contains("rusqlite_migration") {
                return EnvFilter::try_new(format!("{value},rusqlite_migration=info")).ok();
            }
            Some(filter)
        })
        .unwrap_or_else(|| EnvFilter::new("info,rusqlite_migration=warn"));
    if filter
        .max_level_hint()
        .is_some_and(|level| level < tracing::level_filters::LevelFilter::TRACE)
    {
        return (filter, note);
    }
    let filter = ["ureq=debug", "ureq_proto=debug", "rustls=debug"]
        .into_iter()
        .filter_map(|directive| directive.parse().ok())
        .fold(filter, tracing_subscriber::EnvFilter::add_directive);
    (filter, note)
}

/// The level `value` (a valid `RUST_LOG`) gives the events of `target`, as
/// `tracing`'s filter decides it: the directive whose target is the longest that
/// `target` starts with (a bare level has none; the last of equals wins), `off` when
/// none does. Directives that name spans or fields are left out: they apply only
/// inside those spans.
fn level_of_target(value: &str, target: &str) -> tracing::level_filters::LevelFilter {
    use tracing::level_filters::LevelFilter;
    let mut chosen: Option<(usize, LevelFilter)> = None;
    for directive in value.split(',').map(str::trim) {
        if directive.is_empty() || directive.contains('[') {
            continue;
        }
        let (name, level) = match directive.split_once('=') {
            Some((name, level)) => (name.trim(), level.trim().parse().ok()),
            // A bare word is a level, or a target with every level.
            None => match directive.parse::<LevelFilter>() {
                Ok(level) => ("", Some(level)),
                Err(_) => (directive, Some(LevelFilter::TRACE)),
            },
        };
        let Some(level) = level else { continue };
        if target.starts_with(name) && chosen.is_none_or(|(longest, _)| name.len() >= longest) {
            chosen = Some((name.len(), level));
        }
    }
    chosen.map_or(LevelFilter::OFF, |(_, level)| level)
}

/// `value` without the directives that would have the HTTP client, or the TLS library
/// under it, log at trace level, which dumps requests, the API token included: one
/// naming a module of theirs (`ureq_proto::util=trace`) beat the `ureq_proto=debug`
/// added after it (a review). A directive naming them with no level enables every
/// level, trace too.
fn without_client_trace(value: &str) -> String {
    value
        .split(',')
        .filter(|directive| {
            let directive = directive.trim();
            let target = directive
                .split(['=', '['])
                .next()
                .unwrap_or_default()
                .trim();
            let names_client = ["ureq", "rustls"].iter().any(|c| target.starts_with(c));
            // The level follows the last `=`, unless the directive ends with its span
            // (`target[span{field=1}]`, no level).
            let level = directive
                .rsplit_once('=')
                .filter(|_| !directive.ends_with(']'))
                .map(|(_, level)| level.trim().to_ascii_lowercase());
            let traces = match level.as_deref() {
                None => true,
                Some(level) => level == "trace" || level == "5",
            };
            !(names_client && traces)
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// What to say of a `RUST_LOG` that is surely a mistake: one that is no filter at all
/// (logging is then at `info`), or a name that is neither a level nor a module of this
/// program, alone or before `=` (`RUST_LOG=debg` names a module `debg`, and logged
/// nothing else, the errors included, without a word).
fn log_filter_note(
    value: &str,
    parsed: Result<&tracing_subscriber::EnvFilter, &tracing_subscriber::filter::ParseError>,
) -> Option<(String, bool)> {
    const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];
    const MODULES: [&str; 15] = [
        "protocol_mirror",
        "protocol_types",
        "protocol_verify",
        "axum",
        "hyper",
        "hyper_util",
        "tower",
        "tower_http",
        "tokio",
        "rusqlite",
        "rusqlite_migration",
        "ureq",
        "ureq_proto",
        "rustls",
        "mio",
    ];
    if let Err(error) = parsed {
        return Some((
            format!("RUST_LOG={value:?} is not a log filter ({error}); logging at info"),
            false,
        ));
    }
    let unknown: Vec<&str> = value
        .split(',')
        .map(str::trim)
        .filter_map(|directive| {
            // `target=level` names a module as a bare word does (`debg=info` too
            // logged nothing); span filters (`[request]=debug`) name none.
            let (target, bare) = match directive.split_once('=') {
                Some((target, _)) => (target.trim(), false),
                None => (directive, true),
            };
            // A level alone, by name or by number: 0 (off) to 5 (trace); `6` names a
            // module.
            let level = bare
                && (LEVELS.contains(&target.to_ascii_lowercase().as_str())
                    || target.parse::<u8>().is_ok_and(|level| level <= 5));
            let ours = match target.split_once("::") {
                // Ours, checked to the end (`protocol_mirror::serve::webhok` logged
                // nothing at all without a word: a probe); others' by their crate.
                Some(("protocol_mirror", path)) => is_module_of_ours(path),
                _ => MODULES.contains(&target.split("::").next().unwrap_or_default()),
            };
            let span = target.contains(['[', '{']);
            let named = !(target.is_empty() || span || level || ours);
            named.then_some(target)
        })
        .collect();
    let directives = value.split(',').filter(|d| !d.trim().is_empty()).count();
    let nothing_else = unknown.len() == directives;
    (!unknown.is_empty()).then(|| {
        let logged = match nothing_else {
            true => "it names nothing else, so logging at info instead",
            false => "only what it names is logged",
        };
        (
            format!(
                "RUST_LOG names {:?}, which is neither a level ({}) nor a module of this \
                 program: {logged}",
                unknown.join(","),
                LEVELS.join(", ")
            ),
            nothing_else,
        )
    })
}

/// The modules of this program (library and binary) below `protocol_mirror`, for
/// [`log_filter_note`]; a test holds it to the source files.
const MODULES_OF_OURS: [&str; 53] = [
    "apply",
    "apply::backfill",
    "apply::rules",
    "backfill",
    "backfill::client",
    "cli",
    "cli::backfill",
    "cli::connections",
    "cli::interrupt",
    "cli::output",
    "cli::output::table",
    "cli::output::table::widths",
    "cli::output::text",
    "cli::read",
    "cli::serve",
    "cli::stdin",
    "cli::tools",
    "cli::usage",
    "cli::write",
    "import",
    "import::input",
    "lock",
    "rebuild",
    "secrets",
    "serve",
    "serve::access",
    "serve::checkpointer",
    "serve::host",
    "serve::log_limit",
    "serve::metrics",
    "serve::openapi",
    "serve::read_api",
    "serve::reconcile",
    "serve::webhook",
    "serve::writer",
    "serve::writer::database_file",
    "store",
    "store::backfill",
    "store::backup",
    "store::building",
    "store::damage",
    "store::error",
    "store::guards",
    "store::log",
    "store::log::salvage",
    "store::query",
    "store::query::events",
    "store::query::search",
    "store::query::sql",
    "store::query::stats",
    "store::rows",
    "store::schema",
    "store::snapshot",
];

/// Whether `path` (below `protocol_mirror::`) starts one of [`MODULES_OF_OURS`]: as
/// `tracing`'s filter matches, text for text, so that `ser` covers `serve::webhook`
/// (said part for part, a filter that worked got the note: a review).
fn is_module_of_ours(path: &str) -> bool {
    MODULES_OF_OURS
        .iter()
        .any(|module| module.starts_with(path))
}

/// Output closed early (`| head`): not an error worth a word.
fn is_broken_pipe(error: &anyhow::Error) -> bool {
    caused_by_io(error, std::io::ErrorKind::BrokenPipe)
}

/// Whether an I/O error of `kind` is among the error's causes.
fn caused_by_io(error: &anyhow::Error, kind: std::io::ErrorKind) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == kind)
    })
}

/// A command line clap refused: help and version are printed as clap prints them;
/// a mistake is one line on stderr (clap's message, hints and possible values
/// included), exit code 2.
fn usage_error(error: &clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(
        error.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        // Help sent nowhere (`> /dev/full`) is a failure like any other output's; a
        // closed pipe (`| head`) is not.
        return match error.print().and_then(|()| std::io::stdout().flush()) {
            Ok(()) => ExitCode::from(u8::try_from(error.exit_code()).unwrap_or(2)),
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
            Err(e) => {
                let _ = writeln!(std::io::stderr().lock(), "protocol-mirror: {e}");
                ExitCode::from(3)
            }
        };
    }
    let _ = writeln!(
        std::io::stderr().lock(),
        "protocol-mirror: {}",
        usage_line(&error.render().to_string())
    );
    ExitCode::from(2)
}

/// clap's rendered error as one line: its lines joined, without the `Usage:` line and
/// the closing `For more information, try '--help'.`, which becomes `(see --help)`.
fn usage_line(rendered: &str) -> String {
    let parts: Vec<&str> = rendered
        .lines()
        .map(str::trim)
        .filter(|line| {
            !line.is_empty()
                && !line.starts_with("Usage:")
                && !line.starts_with("For more information")
        })
        .collect();
    let mut line = String::new();
    for part in parts {
        if !line.is_empty() {
            line.push_str(if part.starts_with("tip:") { "; " } else { " " });
        }
        line.push_str(part);
    }
    let line = line.strip_prefix("error: ").unwrap_or(&line);
    // The value clap quotes is the user's, and may hold what a terminal acts on.
    cli::escaped_in_one_line(&format!("{line} (see --help)"))
}

/// The error and its causes on one line, each said once: a cause whose text the line
/// already contains (libraries often repeat their source in their own message) is
/// skipped, and so are SQLite's numeric error codes and the migration crate's own
/// wording (`StoreError::Migrate` says what failed; "rusqlite_migration error while
/// executing query ''" after it said nothing more).
fn one_line(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        if cause.is::<rusqlite::ffi::Error>() || cause.is::<rusqlite_migration::Error>() {
            continue;
        }
        let text = cause.to_string();
        if text.is_empty() || line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    if is_disk_full(error) {
        line.push_str(" (free some space on that disk, then run the command again)");
    }
    // Damage met partway (a page a read or write reached): said in SQLite's words
    // alone, with no way out (a regression probe). One found on open names the file.
    if is_damage(error) && !line.contains(".recover") && !line.contains("rebuild --into") {
        line.push_str(&format!(" ({})", protocol_mirror::store::DAMAGED_HINT));
    }
    // The hint's fix names the command's database, where it knows it (it said
    // `sqlite3 <database> .recover`: a black-box probe).
    if let Some(db) = cli::given_db() {
        line = line.replace(
            "sqlite3 <database> .recover | sqlite3 recovered.db",
            &protocol_mirror::store::recover_command(db),
        );
        line = line.replace(
            "protocol-mirror --db=<database> rebuild --into NEW.db",
            &protocol_mirror::store::rebuild_into_command(db),
        );
    }
    if line.contains(" thread") && is_out_of_threads(error) {
        line.push_str(THREAD_LIMIT_HINT);
    }
    cli::escaped_in_one_line(&cli::for_the_given_db(&line))
}

/// Said of a thread the system refused to start.
const THREAD_LIMIT_HINT: &str = " (the system refused a new thread: see the limits on \
     processes and memory, `ulimit -u` and `ulimit -v`, or a service's TasksMax)";

/// Whether the error is the system refusing a thread (`EAGAIN` from `clone`).
fn is_out_of_threads(error: &anyhow::Error) -> bool {
    caused_by_io(error, std::io::ErrorKind::WouldBlock)
}

/// Whether the error comes from a full disk (SQLite's `SQLITE_FULL`, or `ENOSPC`
/// from a file the command wrote itself): SQLite's own words name no fix.
fn is_disk_full(error: &anyhow::Error) -> bool {
    sqlite_said(error, rusqlite::ffi::ErrorCode::DiskFull)
        || caused_by_io(error, std::io::ErrorKind::StorageFull)
}

/// Whether `error` is SQLite finding the database file damaged partway: its error
/// code, or its words where a library passed them on as text (a migration's hook: a
/// black-box probe). (Not a file found damaged on open, which every open finds again,
/// and whose error names the fix.)
fn is_damage(error: &anyhow::Error) -> bool {
    use protocol_mirror::store::StoreError;
    let found = |damage: fn(&StoreError) -> bool| {
        error
            .chain()
            .any(|cause| cause.downcast_ref::<StoreError>().is_some_and(damage))
    };
    // Found by SQLite's check of the log (a rebuild's) is marked too.
    if found(|e| matches!(e, StoreError::LogDamaged { .. })) {
        return true;
    }
    let found_on_open = found(|e| matches!(e, StoreError::Damaged { .. }));
    !found_on_open
        && (sqlite_said(error, rusqlite::ffi::ErrorCode::DatabaseCorrupt)
            || error.chain().any(|cause| {
                cause
                    .to_string()
                    .contains("database disk image is malformed")
            }))
}

/// Whether SQLite failed with `code` somewhere in `error`'s chain.
fn sqlite_said(error: &anyhow::Error, code: rusqlite::ffi::ErrorCode) -> bool {
    error.chain().any(|cause| {
        let found = match cause.downcast_ref::<rusqlite::Error>() {
            Some(rusqlite::Error::SqliteFailure(e, _)) => Some(e.code),
            _ => cause.downcast_ref::<rusqlite::ffi::Error>().map(|e| e.code),
        };
        found == Some(code)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// No directive lets the HTTP client log at trace level, which dumps requests, the
    /// API token included (a review: `ureq_proto::util=trace` did); others stay.
    #[test]
    fn the_http_client_never_logs_at_trace() {
        assert_eq!(
            without_client_trace("info,ureq_proto::util=trace,protocol_mirror=debug"),
            "info,protocol_mirror=debug"
        );
        assert_eq!(without_client_trace("trace"), "trace");
        assert_eq!(without_client_trace("ureq=TRACE,rustls=5,ureq_proto"), "");
        assert_eq!(without_client_trace("ureq[span{a=1}]"), "");
        assert_eq!(
            without_client_trace("ureq=debug,ureq_proto::util[span{a=1}]=trace"),
            "ureq=debug"
        );
        assert_eq!(
            without_client_trace("[span{a=1}]=trace"),
            "[span{a=1}]=trace"
        );
    }

    /// The migrations' lines are made quieter only where the filter gives them more
    /// than `info` (`warn,protocol_mirror=debug` logged their `info` line, judged by
    /// its highest level, debug; a black-box probe).
    #[test]
    fn the_level_a_filter_gives_a_target() {
        use tracing::level_filters::LevelFilter;
        let of = |value| level_of_target(value, "rusqlite_migration");
        assert_eq!(of("warn,protocol_mirror=debug"), LevelFilter::WARN);
        assert_eq!(of("debug"), LevelFilter::DEBUG);
        assert_eq!(of("DEBUG"), LevelFilter::DEBUG);
        assert_eq!(of("4"), LevelFilter::DEBUG);
        assert_eq!(of("debg"), LevelFilter::OFF, "a target of its own");
        assert_eq!(of("error,protocol_mirror::store=trace"), LevelFilter::ERROR);
        assert_eq!(of("rusqlite=debug,warn"), LevelFilter::DEBUG, "by prefix");
        assert_eq!(
            of("rusqlite_migration=off,rusqlite=trace"),
            LevelFilter::OFF
        );
        assert_eq!(of("trace,rusqlite_migration"), LevelFilter::TRACE);
        assert_eq!(of("info,[span]=trace"), LevelFilter::INFO);
        assert_eq!(of("info,debug"), LevelFilter::DEBUG, "the last of equals");
        // As the filter does: the migrations' `info` line is logged where this says.
        for value in [
            "warn,protocol_mirror=debug",
            "debug",
            "rusqlite=debug",
            "debg",
            "info,debug",
            "debug,warn",
            "rusqlite_migration=off,rusqlite=trace",
            "error,rusqlite_migration",
        ] {
            let filter = tracing_subscriber::EnvFilter::try_new(value).unwrap();
            let subscriber = tracing_subscriber::layer::SubscriberExt::with(
                tracing_subscriber::registry(),
                filter,
            );
            let logs_info = tracing::subscriber::with_default(
                subscriber,
                || tracing::enabled!(target: "rusqlite_migration", tracing::Level::INFO),
            );
            assert_eq!(logs_info, of(value) >= LevelFilter::INFO, "{value}");
        }
    }

    /// A value clap quotes back is escaped as other errors escape what the user gave
    /// (`--since $'\u009b2J'`, a C1 control, cleared the terminal, and a bidirectional
    /// override turned the line around; clap itself strips only escape sequences and
    /// some C0 controls).
    #[test]
    fn a_refused_value_is_quoted_without_control_characters() {
        use clap::Parser;
        let Err(error) = cli::Cli::try_parse_from([
            "protocol-mirror",
            "list",
            "messages",
            "--since",
            "a\u{7}\u{9b}2J\u{202e}b",
        ]) else {
            panic!("taken");
        };
        let line = usage_line(&error.render().to_string());
        assert!(line.contains("\\u{9b}2J\\u{202e}b'"), "{line:?}");
        assert!(
            !line.chars().any(|c| c.is_control() || c == '\u{202e}'),
            "{line:?}"
        );
    }

    /// The list of our modules is the source tree's (each file a module; tests
    /// excepted, which log nothing).
    #[test]
    fn the_modules_of_ours_are_the_source_files() {
        fn walk(folder: &std::path::Path, into: &mut Vec<String>, root: &std::path::Path) {
            for entry in std::fs::read_dir(folder).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    walk(&path, into, root);
                    continue;
                }
                let relative = path.strip_prefix(root).unwrap().with_extension("");
                let parts: Vec<String> = relative
                    .iter()
                    .map(|part| part.to_string_lossy().into_owned())
                    .collect();
                let parts = match parts.last().map(String::as_str) {
                    Some("mod") => &parts[..parts.len() - 1],
                    // Test modules (`tests`, and `props` of property tests) log nothing.
                    Some("lib" | "main" | "tests" | "props") => continue,
                    _ => &parts[..],
                };
                into.push(parts.join("::"));
            }
        }
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut found = Vec::new();
        walk(&root, &mut found, &root);
        found.sort();
        assert_eq!(found, super::MODULES_OF_OURS, "update MODULES_OF_OURS");
    }

    #[test]
    fn a_log_filter_that_is_surely_a_mistake_is_said_to_be() {
        let log_filter_note = |value: &str| {
            super::log_filter_note(
                value,
                tracing_subscriber::EnvFilter::try_new(value).as_ref(),
            )
            .map(|(note, _)| note)
        };
        // Naming nothing known, the filter would log nothing: info instead.
        let falls_back = |value: &str| {
            super::log_filter_note(
                value,
                tracing_subscriber::EnvFilter::try_new(value).as_ref(),
            )
            .is_some_and(|(_, nothing)| nothing)
        };
        assert!(falls_back("debg") && falls_back("debg=info,verbose"));
        assert!(!falls_back("warn,debg=info") && !falls_back("info"));
        for fine in [
            "info",
            "DEBUG",
            "warn,protocol_mirror=debug",
            "protocol_mirror::serve",
            "tower_http=trace,hyper",
            "[request]=debug",
            "off",
        ] {
            assert_eq!(log_filter_note(fine), None, "{fine}");
        }
        let note = log_filter_note("debg").unwrap();
        assert!(
            note.contains("\"debg\"") && note.contains("neither a level"),
            "{note}"
        );
        assert_eq!(log_filter_note("3"), None);
        assert!(log_filter_note("6").unwrap().contains("\"6\""));
        assert!(
            log_filter_note("warn,debg=info")
                .unwrap()
                .contains("\"debg\"")
        );
        assert_eq!(
            log_filter_note("hyper_util::client=warn,[span{a=1}]=trace"),
            None
        );
        // A module of ours is checked to its end: a misspelt one logged nothing.
        for fine in [
            "protocol_mirror::serve::webhook=debug",
            "protocol_mirror::store",
            "protocol_mirror::ser",
        ] {
            assert_eq!(log_filter_note(fine), None, "{fine}");
        }
        for wrong in [
            "protocol_mirror::serve::webhok=debug",
            "protocol_mirror::nosuch",
            "protocol_mirror::serve::webhook::x",
        ] {
            assert!(log_filter_note(wrong).is_some(), "{wrong}");
        }
        let note = log_filter_note("info,verbose").unwrap();
        assert!(note.contains("\"verbose\""), "{note}");
        let note = log_filter_note("x=nonsense[").unwrap();
        assert!(
            note.contains("not a log filter") && note.contains("at info"),
            "{note}"
        );
    }

    #[test]
    fn an_error_is_one_line_without_control_characters() {
        let error = anyhow::anyhow!("unrecognized token: \"\u{1b}\" in SELECT \u{1b}[31m 1")
            .context("running\nthe statement");
        assert_eq!(
            one_line(&error),
            "running the statement: unrecognized token: \"\\u{1b}\" in SELECT \\u{1b}[31m 1"
        );
    }

    /// A migration that failed on a full disk said so twice, the second time in the
    /// migration crate's words with an empty query (found by a black-box probe).
    #[test]
    fn a_failed_migration_is_said_once() {
        let full = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_FULL),
            Some("database or disk is full".into()),
        );
        let error = anyhow::Error::new(protocol_mirror::store::StoreError::Migrate(
            rusqlite_migration::Error::RusqliteError {
                query: String::new(),
                err: full,
            },
        ));
        assert_eq!(
            one_line(&error),
            "cannot migrate the database: database or disk is full \
             (free some space on that disk, then run the command again)"
        );
    }
}
