//! The command line: arguments (clap derive) and one module per group of commands.

mod backfill;
mod connections;
mod interrupt;
mod output;
mod read;
mod serve;
mod stdin;
mod tools;
mod usage;
mod write;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

pub(crate) use output::Format;

/// A local, queryable SQLite replica of a Protocol account, fed by signed webhooks.
///
/// Start the daemon with `protocol-mirror serve`, point Protocol's webhooks at it, and
/// query the replica with `list`, `get`, `search`, `sql`, `events` and `stats`.
#[derive(Parser)]
#[command(
    name = "protocol-mirror",
    version,
    about,
    long_about,
    propagate_version = true,
    args_override_self = true
)]
pub(crate) struct Cli {
    /// The replica database; else $PROTOCOL_MIRROR_DB (unless empty or blank) [default: <data
    /// dir>/protocol-mirror/mirror.db, e.g. ~/.local/share/protocol-mirror/mirror.db]
    #[arg(long, global = true, value_name = "PATH", display_order = 900)]
    pub(crate) db: Option<PathBuf>,

    #[command(subcommand)]
    pub(crate) command: Command,
}

impl Cli {
    /// Parses the command line `args` (the program's name first). A negative number
    /// given to an option that takes a number is refused as a value of that option
    /// (`--limit -1`: "invalid value '-1' for '--limit'"), not as an unknown flag with
    /// a tip to write `-- -1`, which would have made it a file name or the search text.
    pub(crate) fn try_parse_args<I, T>(args: I) -> Result<Cli, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        use clap::{CommandFactory, FromArgMatches};
        let mut command = Cli::command()
            .version(VERSION.as_str())
            .mut_subcommands(|c| c.allow_negative_numbers(true))
            .mut_subcommand("serve", serve::api_settings_need_reconcile);
        let mut args: Vec<std::ffi::OsString> = args.into_iter().map(Into::into).collect();
        // `help --help` asks for the help of `help`, as `help help` does (clap took the
        // flag for a command's name: "unrecognized subcommand", exit 2; a probe).
        if let [_, help, flag, ..] = args.as_mut_slice()
            && help == "help"
            && (flag == "--help" || flag == "-h")
        {
            *flag = "help".into();
        }
        if let Some(word) = usage::help_in_a_word(&args) {
            return Err(usage::unexpected(&command, &args, word));
        }
        let mut matches = command
            .try_get_matches_from_mut(&args)
            .map_err(|e| usage::explained(&command, &args, e))?;
        Cli::from_arg_matches_mut(&mut matches).map_err(|e| e.format(&mut command))
    }
}

/// What `--version` prints: the release, and the database schema this binary reads
/// and migrates to (the one `migrate` and the upgrade notes speak of).
static VERSION: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "{} (database schema {})",
        env!("CARGO_PKG_VERSION"),
        protocol_mirror::store::SCHEMA_VERSION
    )
});

/// Output format of the printing commands.
#[derive(clap::Args, Clone, Copy)]
pub(crate) struct FormatArg {
    /// How to print: a table for people, or json, ndjson, csv for scripts.
    #[arg(long, short = 'f', value_enum, ignore_case = true, default_value_t = Format::Table)]
    pub(crate) format: Format,
}

#[derive(Subcommand)]
pub(crate) enum Command {
    /// Receive Protocol's webhooks and keep the replica up to date.
    #[command(
        after_help = "Examples:\n  protocol-mirror serve\n  protocol-mirror serve --secret-file secret \\\n      --listen 0.0.0.0:8787 --read-listen 127.0.0.1:8788"
    )]
    Serve(Box<serve::ServeArgs>),
    /// List contacts, conversations, messages, groups or attachments, newest first.
    #[command(
        after_help = "Examples:\n  protocol-mirror list messages --conversation xgQQXg3hrtjh7AvZ --limit 20\n  protocol-mirror list contacts --format csv > contacts.csv"
    )]
    List(read::ListArgs),
    /// Print one object by id (exit code 1 when there is none).
    #[command(
        after_help = "Example:\n  protocol-mirror get message SIuAFUNKdSYHZF2w --format json"
    )]
    Get(read::GetArgs),
    /// Full-text search over message text.
    #[command(
        after_help = "Examples:\n  protocol-mirror search hotel\n  protocol-mirror search --fts 'meet* NOT lunch'"
    )]
    Search(read::SearchArgs),
    /// Run one read-only SQL statement on the replica.
    #[command(
        after_help = "Example:\n  protocol-mirror sql 'SELECT conversation_id, COUNT(*) FROM messages GROUP BY 1'"
    )]
    Sql(read::SqlArgs),
    /// The event log, newest first; --follow prints new events as they are committed.
    #[command(
        after_help = "Examples:\n  protocol-mirror events --outcome rejected --since 1h\n  protocol-mirror events --follow"
    )]
    Events(read::EventsArgs),
    /// Row counts, tombstones, events by outcome, database size.
    #[command(after_help = "Example:\n  protocol-mirror stats --format json")]
    Stats(FormatArg),
    /// Apply an NDJSON file of event envelopes (trusted local input: no signatures).
    #[command(
        after_help = "Into a database that does not exist yet, the import is faster: it builds \
                      the database beside its name (.<name>.importing) and gives it the name when \
                      done, so it appears whole.\n\nExamples:\n  protocol-mirror import events.ndjson\n  \
                      zcat events.ndjson.gz | protocol-mirror import -"
    )]
    Import(write::ImportArgs),
    /// Recompute the replica from the event log (refused while a daemon serves it).
    #[command(
        after_help = "With --into, the database is left as it is, and its log is copied and replayed \
                      into a new one: for a replica that lost tables, which a rebuild in place \
                      refuses. With --into and --salvage, a damaged event log gives what can still be \
                      read of it.\n\nExamples:\n  protocol-mirror rebuild\n  protocol-mirror --db \
                      damaged.db rebuild --into mirror-new.db"
    )]
    Rebuild {
        /// Build the replica in this new file (must not exist) instead, from a copy of
        /// the database's event log, leaving the database as it is.
        #[arg(long, value_name = "FILE")]
        into: Option<PathBuf>,
        /// With --into, for an event log SQLite finds damaged: copy every entry that
        /// can still be read, leave out those that cannot, and name them.
        #[arg(long, requires = "into")]
        salvage: bool,
    },
    /// Copy the database consistently, even while the daemon runs.
    #[command(after_help = "Example:\n  protocol-mirror backup mirror-$(date +%F).db")]
    Backup {
        /// The new file (must not exist).
        file: PathBuf,
        /// Skip reading the copy back through SQLite's integrity check (`quick_check`)
        /// once it is written.
        #[arg(long)]
        no_check: bool,
    },
    /// Bring the database to this binary's schema.
    #[command(after_help = "Example:\n  protocol-mirror migrate")]
    Migrate,
    /// Load the account from Protocol's REST API and heal missed events (resumable).
    #[command(
        after_help = "Examples:\n  PROTOCOL_API_TOKEN=... protocol-mirror backfill\n  protocol-mirror backfill --token-file token --resource messages --prune"
    )]
    Backfill(backfill::BackfillArgs),
    /// Print the signature of the body read on standard input.
    #[command(after_help = "Example:\n  protocol-mirror sign --secret-file secret < event.json")]
    Sign(tools::SignArgs),
    /// POST each NDJSON envelope, signed, to a mirror (a local stand-in for Protocol).
    #[command(
        after_help = "Example:\n  protocol-mirror send --url http://127.0.0.1:8787/webhooks events.ndjson"
    )]
    Send(tools::SendArgs),
    /// Print a shell completion script.
    #[command(
        after_help = "Example (bash, for this user; /etc/bash_completion.d for all, as root):\n  protocol-mirror completions bash > ~/.local/share/bash-completion/completions/protocol-mirror"
    )]
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// Runs the parsed command line.
pub(crate) fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let writes = matches!(
        cli.command,
        Command::Serve(_)
            | Command::Import(_)
            | Command::Rebuild { .. }
            | Command::Migrate
            | Command::Backfill(_)
    );
    let result = run_command(cli);
    if let (Err(error), Some(db), true) = (&result, given_db(), writes) {
        mark_if_damaged(db, error);
    }
    result
}

/// The database the command was given, once it was read (error messages name it).
static GIVEN_DB: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// The database the command was given, if it was read.
pub(crate) fn given_db() -> Option<&'static Path> {
    GIVEN_DB.get().map(PathBuf::as_path)
}

/// Set once [`GIVEN_DB`] came from `--db` (not from `PROTOCOL_MIRROR_DB`, which the
/// next command in the same shell reads too).
static GIVEN_BY_FLAG: std::sync::OnceLock<()> = std::sync::OnceLock::new();

/// `text` with the commands it advises (`run \`protocol-mirror migrate\``) given the
/// command's `--db`: as printed, they acted on the default database, where `migrate`
/// made an empty one (a new user's walk).
pub(crate) fn for_the_given_db(text: &str) -> std::borrow::Cow<'_, str> {
    const ADVISED: [&str; 6] = [
        "run `protocol-mirror migrate`",
        "run `protocol-mirror rebuild`",
        "run `protocol-mirror import`",
        "run `protocol-mirror backfill`",
        "start `protocol-mirror serve`",
        "(or start `serve`",
    ];
    let (Some(db), Some(())) = (given_db(), GIVEN_BY_FLAG.get()) else {
        return text.into();
    };
    if !ADVISED.iter().any(|advice| text.contains(advice)) {
        return text.into();
    }
    let flag = format!(
        "--db={}",
        protocol_mirror::store::shell_quoted(&db.display().to_string())
    );
    let mut text = text.to_owned();
    for advice in ADVISED {
        let given = match advice.split_once("`protocol-mirror ") {
            Some((before, command)) => format!("{before}`protocol-mirror {flag} {command}"),
            None => advice.replace("`serve`", &format!("`protocol-mirror {flag} serve`")),
        };
        text = text.replace(advice, &given);
    }
    text.into()
}

/// Leaves the damage mark beside `db` (`store::damage`) if `error`, from a command
/// that writes, is SQLite finding the file damaged, so that the next `serve` checks
/// the file before it takes events (an import met the damage, and the daemon started
/// on the file after: a black-box probe).
fn mark_if_damaged(db: &Path, error: &anyhow::Error) {
    if !crate::is_damage(error) {
        return;
    }
    // What was found, without the fix the error names (the start's refusal names it,
    // and said it twice: a probe).
    let line = crate::one_line(error);
    let log_finding = error.chain().find_map(|cause| match cause.downcast_ref() {
        Some(protocol_mirror::store::StoreError::LogDamaged { finding, .. }) => {
            Some(format!("SQLite's check of the event log: {finding}"))
        }
        _ => None,
    });
    let finding = match &log_finding {
        Some(finding) => finding,
        None => line
            .split_once(" (the database file is damaged")
            .map_or(line.as_str(), |(finding, _)| finding),
    };
    if let Err(e) = protocol_mirror::store::mark_damaged(db, finding) {
        note!(
            "protocol-mirror: warning: could not leave the damage mark {}: {e}",
            protocol_mirror::store::damage_mark_path(db).display()
        );
    }
}

/// Runs the command, keeping its database in [`GIVEN_DB`] once read.
fn run_command(cli: Cli) -> anyhow::Result<ExitCode> {
    let db = || -> anyhow::Result<PathBuf> {
        // Read here rather than by clap, which takes an empty variable for a missing
        // `--db` value; empty means unset, as for most tools, and so does blank (a
        // database named by spaces was made).
        let blank = |v: &std::ffi::OsStr| v.to_string_lossy().trim().is_empty();
        let from_env = std::env::var_os("PROTOCOL_MIRROR_DB").filter(|v| !blank(v));
        let (db, given_by) = match (&cli.db, from_env) {
            (Some(db), _) if blank(db.as_os_str()) => {
                return Err(UsageError("--db is blank: give the database's path".into()).into());
            }
            (Some(db), _) => (db.clone(), "--db"),
            (None, Some(db)) => (PathBuf::from(db), "PROTOCOL_MIRROR_DB"),
            (None, None) => return default_db(),
        };
        if let Ok(rest) = db.strip_prefix("~") {
            // No shell expanded it (quoted, or set by a service manager or an env
            // file): a folder named `~` was made in the working folder (an operator
            // probe).
            let home = dirs::home_dir().map_or_else(|| "/home/you".into(), |h| h.join(rest));
            return Err(UsageError(format!(
                "{given_by} {} starts with `~`, which only a shell expands: give the full \
                 path, such as {} (or ./~/... for a folder named ~)",
                db.display(),
                home.display()
            ))
            .into());
        }
        if names_a_folder(&db) {
            // Writers took `imp/` for a file `imp` in some steps and a folder in
            // others: an import built its database, could not put it in place, and
            // left it behind (a probe).
            return Err(UsageError(format!(
                "{given_by} {} names a folder: give the database file's path, such as {}",
                db.display(),
                db.join("mirror.db").display()
            ))
            .into());
        }
        let _ = GIVEN_DB.set(db.clone());
        if given_by == "--db" {
            let _ = GIVEN_BY_FLAG.set(());
        }
        Ok(db)
    };
    match cli.command {
        Command::Serve(args) => serve::run(&db()?, *args),
        Command::List(args) => read::list(&db()?, args),
        Command::Get(args) => read::get(&db()?, args),
        Command::Search(args) => read::search(&db()?, args),
        Command::Sql(args) => read::sql(&db()?, args),
        Command::Events(args) => read::events(&db()?, args),
        Command::Stats(args) => read::stats(&db()?, args.format),
        Command::Import(args) => write::import(&db()?, args),
        Command::Rebuild { into: None, .. } => write::rebuild(&db()?),
        Command::Rebuild {
            into: Some(into),
            salvage,
        } => write::rebuild_into(&db()?, &into, salvage),
        Command::Backup { file, no_check } => write::backup(&db()?, &file, !no_check),
        Command::Migrate => write::migrate(&db()?),
        Command::Backfill(args) => backfill::run(&db()?, args),
        Command::Sign(args) => tools::sign(tools_db(db())?.as_deref(), args),
        Command::Send(args) => tools::send(tools_db(db())?.as_deref(), args),
        Command::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut command, "protocol-mirror", &mut script);
            let mut script = String::from_utf8(script).context("completions are not UTF-8")?;
            match shell {
                clap_complete::Shell::Bash => script = fix_bash_completion(&script),
                clap_complete::Shell::Fish => script.push_str(&fish_positional_values(&command)),
                _ => {}
            }
            std::io::Write::write_all(&mut output::Stdout::lock(), script.as_bytes())?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The database whose generated secret `sign` and `send` may use: none when no data
/// folder is known, but a `--db` that is a mistake is said (it was ignored).
fn tools_db(db: anyhow::Result<PathBuf>) -> anyhow::Result<Option<PathBuf>> {
    match db {
        Ok(db) => Ok(Some(db)),
        Err(error) if error.is::<UsageError>() => Err(error),
        Err(_) => Ok(None),
    }
}

/// The NDJSON file of events `command` (`import`, `send`) reads, and its length when
/// it is a regular file (a pipe's, `import <(zcat ...)`, is 0: no length to show
/// progress by). A folder is a usage mistake: it opens, and failed only once read,
/// "reading the input failed after line 0: Is a directory" (a new user's probe; `send`
/// said it sent nothing, then that: another).
fn open_events_file(file: &Path, command: &str) -> anyhow::Result<(std::fs::File, Option<u64>)> {
    let opened =
        std::fs::File::open(file).with_context(|| format!("cannot open {}", file.display()))?;
    let meta = opened.metadata().ok();
    if meta.as_ref().is_some_and(std::fs::Metadata::is_dir) {
        return Err(UsageError(format!(
            "{} is a folder: {command} takes an NDJSON file of events, or - for standard input",
            escaped_in_one_line(&file.display().to_string())
        ))
        .into());
    }
    let len = meta.filter(std::fs::Metadata::is_file).map(|m| m.len());
    Ok((opened, len))
}

/// Whether a database path can only name a folder: it ends in a separator, or in `.`
/// or `..` (`imp/`, `imp/.`, `..`).
pub(crate) fn names_a_folder(path: &Path) -> bool {
    let text = path.as_os_str().to_string_lossy();
    path.file_name().is_none()
        || text.ends_with(std::path::is_separator)
        || text == "."
        || text.ends_with("/.")
}

/// The default database: `<data dir>/protocol-mirror/mirror.db`.
fn default_db() -> anyhow::Result<PathBuf> {
    let dir = dirs::data_dir()
        .context("no data directory is known for this user: pass --db or set PROTOCOL_MIRROR_DB")?;
    Ok(dir.join("protocol-mirror").join("mirror.db"))
}

/// Parses a resource name, singular or plural, in any case (`Messages`); an unknown
/// one is refused with the nearest name when it is close (`mesages`, `msg`).
pub(crate) fn resource(name: &str) -> Result<protocol_types::Resource, String> {
    let lower = name.to_lowercase();
    lower.parse().map_err(|_| {
        let all = protocol_types::Resource::ALL;
        // The one resource whose name begins so (`conv`), else the nearest name.
        let mut begun = all.iter().filter(|r| r.as_str().starts_with(&lower));
        let begun = match (begun.next(), begun.next()) {
            (Some(r), None) if lower.len() >= 3 => Some(r.plural()),
            _ => None,
        };
        let nearest = all
            .iter()
            .flat_map(|r| [r.plural(), r.as_str()])
            .map(|n| (strsim::levenshtein(&lower, n), n))
            .min()
            .filter(|&(distance, _)| distance <= 3)
            .map(|(_, n)| n);
        let guess = begun
            .or(nearest)
            .map_or_else(String::new, |n| format!(" (did you mean `{n}`?)"));
        // Escaped here: clap strips terminal escapes from what it prints, so that
        // `mess\e[31mages` read as a refused `messages`.
        format!(
            "unknown resource `{}`{guess}: use contacts, conversations, messages, groups \
             or attachments",
            escaped_in_one_line(name)
        )
    })
}

/// A parser of a whole number from `min` to `max` (`u64::MAX`: no bound) whose refusal
/// says which rule the text broke. clap's own said "invalid digit found in string" for
/// `-5` and for `1.5` alike, and "number too large to fit in target type".
pub(crate) fn whole_number<T: TryFrom<u64>>(
    min: u64,
    max: u64,
) -> impl Fn(&str) -> Result<T, String> + Clone + Send + Sync + 'static {
    move |text| {
        let expected = if max == u64::MAX {
            format!("expected a whole number, {min} or more")
        } else {
            format!("expected a whole number from {min} to {max}")
        };
        let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
        match text.parse::<u64>() {
            Ok(n) if n < min => Err(format!("too small: {expected}")),
            Ok(n) if n > max => Err(format!("too large: at most {max}")),
            Ok(n) => T::try_from(n).map_err(|_| format!("too large: at most {max}")),
            Err(_) if text.strip_prefix('-').is_some_and(digits) => {
                Err(format!("cannot be negative: {expected}"))
            }
            Err(_) if digits(text) => Err(format!("too large: at most {max}")),
            Err(_) => Err(expected),
        }
    }
}

/// [`resource`] as an argument's parser that also names the resources, so that shell
/// completions offer them (`list <Tab>`).
#[derive(Clone, Copy)]
pub(crate) struct ResourceParser;

impl clap::builder::TypedValueParser for ResourceParser {
    type Value = protocol_types::Resource;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<Self::Value, clap::Error> {
        let parse: fn(&str) -> Result<protocol_types::Resource, String> = resource;
        parse.parse_ref(cmd, arg, value)
    }

    fn possible_values(
        &self,
    ) -> Option<Box<dyn Iterator<Item = clap::builder::PossibleValue> + '_>> {
        Some(Box::new(protocol_types::Resource::ALL.iter().map(|r| {
            clap::builder::PossibleValue::new(r.plural()).alias(r.as_str())
        })))
    }
}

/// The webhook secrets of `PROTOCOL_WEBHOOK_SECRET`'s `value`: none when it is unset
/// or blank, and a usage error when it is set to nothing but commas (`serve` would
/// otherwise generate a secret, `sign` and `send` use the generated one).
pub(crate) fn env_secrets(value: Option<&str>) -> anyhow::Result<Vec<String>> {
    let Some(value) = value.filter(|v| !v.trim().is_empty()) else {
        return Ok(Vec::new());
    };
    let secrets = protocol_mirror::secrets::from_env_value(value);
    if secrets.is_empty() {
        return Err(UsageError(
            "PROTOCOL_WEBHOOK_SECRET is set but holds no secret (it takes secrets separated \
             by commas; unset it to use the generated one)"
                .into(),
        )
        .into());
    }
    Ok(secrets)
}

/// The secrets of a `--secret-file`: one that holds none is a mistake in the
/// configuration (exit 2), as an empty `--token-file` is; one that cannot be read, or
/// is open to other users, a failure (exit 3).
pub(crate) fn secret_file(path: &Path) -> anyhow::Result<Vec<String>> {
    match protocol_mirror::secrets::read_file(path) {
        Err(error @ protocol_mirror::secrets::SecretError::Empty(_)) => {
            Err(UsageError(format!("the webhook secret file: {error}")).into())
        }
        other => other.context("the webhook secret file"),
    }
}

/// An environment variable read by hand (`#[arg(skip = env_text(NAME))]`, and where
/// it is needed): `None` when unset, and as an error one that is not UTF-8, refused
/// where it is used. (Taken for unset, a webhook secret in Latin-1 left the daemon
/// with a generated one, every webhook answered 401, and a read token so written
/// left the read API without one.)
pub(crate) fn env_text(name: &str) -> Result<Option<String>, UsageError> {
    match std::env::var(name) {
        Ok(value) => Ok(Some(value)),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => Err(UsageError(format!(
            "{name} is not valid UTF-8: set it to text, or unset it"
        ))),
    }
}

/// A usage mistake found after parsing (exit code 2, like clap's own).
#[derive(Debug, Clone)]
pub(crate) struct UsageError(pub(crate) String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

impl UsageError {
    /// Refuses a `flag`'s `url` that is not an `http://` or `https://` URL with a host:
    /// a mistyped URL is a usage mistake, not a network error to retry.
    pub(crate) fn unless_http_url(flag: &str, url: &str) -> Result<(), UsageError> {
        let url = url.trim();
        let rest = url
            .strip_prefix("https://")
            .or_else(|| url.strip_prefix("http://"));
        if rest.is_none_or(|rest| rest.is_empty() || rest.starts_with('/')) {
            return Err(UsageError(format!(
                "{flag} {url}: expected an http:// or https:// URL with a host"
            )));
        }
        // What the HTTP client would refuse at every try (a bracket left open, a space
        // in the host, port 99999) is a mistake in the command, not a network error to
        // retry for 15 s and resume.
        let parsed = url
            .parse::<ureq::http::Uri>()
            .map_err(|e| UsageError(format!("{flag} {url}: not a valid URL ({e})")))?;
        let host_and_port = parsed
            .authority()
            .and_then(|a| a.as_str().rsplit('@').next())
            .unwrap_or_default();
        let port = match host_and_port.strip_prefix('[') {
            Some(ipv6) => ipv6.split_once("]:").map(|(_, port)| port),
            None => host_and_port.rsplit_once(':').map(|(_, port)| port),
        };
        if let Some(port) = port.filter(|port| !port.is_empty())
            && !matches!(port.parse::<u16>(), Ok(1..))
        {
            return Err(UsageError(format!(
                "{flag} {url}: the port must be a number from 1 to 65535"
            )));
        }
        Ok(())
    }

    /// Refuses a `token` that goes into an HTTP header but holds a character no header
    /// may carry (a control character, or beyond ASCII): every request would fail.
    /// Said without echoing the token; `fix` says where it came from.
    pub(crate) fn unless_header_safe(name: &str, token: &str, fix: &str) -> Result<(), UsageError> {
        let Some(bad) = token.chars().find(|c| !(c.is_ascii_graphic() || *c == ' ')) else {
            return Ok(());
        };
        let what = if bad.is_ascii_control() {
            "a control character"
        } else {
            "a character beyond ASCII"
        };
        Err(UsageError(format!(
            "{name} holds {what}, which no HTTP header may carry: {fix}"
        )))
    }
}

/// clap_complete's bash script (4.6.11) spells the state of a subcommand of a binary
/// whose name has a hyphen two ways: its dispatch loop reaches
/// `protocol__mirror__subcmd__list`, its `case` arms say
/// `protocol__subcmd__mirror__subcmd__list`, so nothing past the subcommand's name
/// completed (clap-rs/clap#6421). The arms are respelled the way the loop spells them.
fn fix_bash_completion(script: &str) -> String {
    script.replace("protocol__subcmd__mirror__", "protocol__mirror__")
}

/// Lines for clap_complete's fish script (4.6.11), which completes options only: the
/// values of each subcommand's first argument where it has a list of them (`list` and
/// `get` a resource, `completions` a shell), until one of them is on the line.
fn fish_positional_values(command: &clap::Command) -> String {
    let mut lines = String::new();
    for sub in command.get_subcommands() {
        let Some(first) = sub.get_positionals().next() else {
            continue;
        };
        let values: Vec<String> = first
            .get_possible_values()
            .iter()
            .filter(|value| !value.is_hide_set())
            .map(|value| value.get_name().to_owned())
            .collect();
        if values.is_empty() {
            continue;
        }
        let values = values.join(" ");
        lines.push_str(&format!(
            "complete -c protocol-mirror -n \"__fish_protocol_mirror_using_subcommand {}; \
             and not __fish_seen_subcommand_from {values}\" -f -a \"{values}\"\n",
            sub.get_name()
        ));
    }
    lines
}

/// What to tell the user when `store` created its database where a killed import had
/// left the file it was building, and removed that file.
pub(crate) fn leftover_note(store: &protocol_mirror::store::Store) -> Option<String> {
    let left = store.removed_import_leftover()?;
    Some(format!(
        "an import into {} was stopped before it ended; started a new, empty database \
         there and removed {}, the one it was building (import again to fill it)",
        store
            .path()
            .map_or_else(String::new, |p| p.display().to_string()),
        left.display()
    ))
}

/// Standard error for the daemon's log and every command's notes and reports, where a
/// failed write is dropped: a log reader that went away (`| tee` killed, a journal
/// restarted) or a full disk must not stop the daemon. The logging library wrote its
/// own complaint with `eprintln!`, which panics when that fails too: the request whose
/// handling logged lost its connection, and a stop exited 3. So did an import whose
/// stderr was closed, once it had imported everything (a probe).
#[derive(Clone, Copy)]
pub(crate) struct Stderr;

impl std::io::Write for Stderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let _ = std::io::stderr().write_all(buf);
        Ok(buf.len())
    }

    /// Formatted whole, then written at once: written piece by piece, another
    /// thread's log line could land inside this one (an e2e test read "listening on"
    /// with a reconcile pass's warning in the middle of the address).
    fn write_fmt(&mut self, args: std::fmt::Arguments<'_>) -> std::io::Result<()> {
        let text = std::fmt::format(args);
        self.write_all(for_the_given_db(&text).as_bytes())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let _ = std::io::stderr().flush();
        Ok(())
    }
}

/// Writes a line to stderr as [`Stderr`] does: a daemon's notes never fail it.
macro_rules! note {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!($crate::cli::Stderr, $($arg)*);
    }};
}
pub(crate) use note;

/// `text` for a line on stderr: on one line, and nothing a terminal would act on
/// (control and bidirectional control characters escaped, as `\u{1b}`). Errors and
/// notes quote what the user gave: SQL, or an event type, with an escape sequence was
/// echoed raw.
pub(crate) fn escaped_in_one_line(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            c if output::breaks_a_line(c) => " ".to_owned(),
            c if c.is_control() || output::is_bidi_control(c) => c.escape_default().to_string(),
            c => c.to_string(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::{Cli, UsageError, names_a_folder, whole_number};

    /// `--version` names the schema too: the upgrade notes speak of schemas, and the
    /// only way to learn a binary's was `migrate` or an error (a new user's probe).
    #[test]
    fn the_version_names_the_database_schema() {
        for args in [
            &["protocol-mirror", "--version"][..],
            &["protocol-mirror", "list", "-V"],
        ] {
            let error = Cli::try_parse_args(args)
                .err()
                .expect("version is not a command");
            let printed = error.render().to_string();
            let schema = protocol_mirror::store::SCHEMA_VERSION;
            assert!(
                printed.ends_with(&format!(" (database schema {schema})\n")),
                "{printed}"
            );
        }
    }

    /// `help --help` is the help of `help` (it was "unrecognized subcommand", exit 2).
    #[test]
    fn help_takes_help_as_its_own_command_does() {
        for flag in ["--help", "-h"] {
            let error = Cli::try_parse_args(["protocol-mirror", "help", flag])
                .err()
                .expect("help is printed");
            assert_eq!(error.kind(), clap::error::ErrorKind::DisplayHelp, "{flag}");
            let printed = error.render().to_string();
            assert!(
                printed.contains("protocol-mirror help [COMMAND]"),
                "{printed}"
            );
        }
    }

    #[test]
    fn a_database_path_ending_in_a_separator_or_dot_names_a_folder() {
        for folder in ["imp/", "a/b/", "/", ".", "..", "imp/.", "imp/..", "./"] {
            assert!(names_a_folder(std::path::Path::new(folder)), "{folder}");
        }
        for file in ["imp", "a/b.db", "./m.db", "../m.db", ".m.db", "m."] {
            assert!(!names_a_folder(std::path::Path::new(file)), "{file}");
        }
    }

    #[test]
    fn whole_numbers_are_refused_for_the_rule_they_break() {
        let seconds = whole_number::<u64>(1, 86_400);
        assert_eq!(seconds("30"), Ok(30));
        assert_eq!(seconds("86400"), Ok(86_400));
        let refusal = |text| seconds(text).unwrap_err();
        assert_eq!(
            refusal("0"),
            "too small: expected a whole number from 1 to 86400"
        );
        assert_eq!(refusal("86401"), "too large: at most 86400");
        assert_eq!(
            refusal("99999999999999999999999"),
            "too large: at most 86400"
        );
        assert_eq!(
            refusal("-5"),
            "cannot be negative: expected a whole number from 1 to 86400"
        );
        assert_eq!(refusal("1.5"), "expected a whole number from 1 to 86400");
        assert_eq!(refusal("abc"), "expected a whole number from 1 to 86400");
        assert_eq!(refusal(""), "expected a whole number from 1 to 86400");
        let count = whole_number::<usize>(0, usize::MAX as u64);
        assert_eq!(count("0"), Ok(0));
        assert_eq!(
            count("-1").unwrap_err(),
            "cannot be negative: expected a whole number, 0 or more"
        );
        assert_eq!(
            count("x").unwrap_err(),
            "expected a whole number, 0 or more"
        );
    }

    #[test]
    fn error_lines_escape_what_a_terminal_acts_on() {
        assert_eq!(
            super::escaped_in_one_line("a\u{1b}[2J\u{9b}\u{202e}b\u{2066}\nc\u{2028}d é"),
            "a\\u{1b}[2J\\u{9b}\\u{202e}b\\u{2066} c d é"
        );
    }

    /// A URL the HTTP client would refuse at every try is a usage error at once (it was
    /// retried for 15 s as a network error, then "run it again to resume").
    #[test]
    fn an_http_url_is_checked_whole() {
        for good in [
            "http://127.0.0.1:8787",
            "https://api.example.com/",
            "http://[::1]:80/base",
            "http://user:pw@host:443",
            "http://host:",
        ] {
            assert!(UsageError::unless_http_url("--url", good).is_ok(), "{good}");
        }
        for bad in [
            "http://[::1",
            "http://a b/",
            "http://127.0.0.1:99999",
            "http://127.0.0.1:0",
            "http://[::1]:70000",
            "http://host:port",
            "ftp://host",
            "http:///path",
        ] {
            assert!(UsageError::unless_http_url("--url", bad).is_err(), "{bad}");
        }
    }
}
