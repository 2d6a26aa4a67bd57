//! `protocol-mirror backfill`: load the account from Protocol's REST API and heal
//! what webhooks missed.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use protocol_mirror::apply::Outcome;
use protocol_mirror::backfill::client::{Client, ClientConfig};
use protocol_mirror::backfill::{
    self, BackfillError, DEFAULT_API_URL, Db, Options, ResourceReport,
};
use protocol_mirror::store::{Store, StoreError};
use protocol_mirror::{secrets, serve};
use protocol_types::Resource;
use rusqlite::Connection;

use super::interrupt::Interrupt;

/// The store, which refuses to read or write once Ctrl-C (or SIGTERM) came: the pass
/// stops before its next page, and every page before it is committed whole, with its
/// cursor (the next run resumes there).
struct Interruptible<'a> {
    store: &'a mut Store,
    interrupt: Interrupt,
}

impl Interruptible<'_> {
    /// The store, unless a signal came.
    fn store(&mut self) -> Result<&mut Store, StoreError> {
        if self.interrupt.is_set() {
            return Err(StoreError::Stopped);
        }
        Ok(self.store)
    }
}

impl Db for Interruptible<'_> {
    fn read<T, F>(&mut self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        self.store()?.read(f)
    }

    fn write<T, F>(&mut self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let interrupt = self.interrupt.clone();
        backfill::write_waiting(self.store()?, || interrupt.is_set(), f)
    }
}

/// How to reach Protocol's REST API.
#[derive(clap::Args, Clone)]
pub(crate) struct ApiArgs {
    /// Protocol's API base URL (PROTOCOL_API_URL when set and not blank) [default:
    /// https://api.protocol.chat].
    #[arg(long, value_name = "URL")]
    api_url: Option<String>,
    /// File holding the API token (mode 0600, owned by this user or root); else
    /// PROTOCOL_API_TOKEN.
    #[arg(long, value_name = "PATH")]
    token_file: Option<PathBuf>,
    /// PROTOCOL_API_TOKEN, read from the environment only (a token on the command line
    /// would show in `ps`).
    #[arg(skip = super::env_text("PROTOCOL_API_TOKEN"))]
    token_env: Result<Option<String>, super::UsageError>,
    /// Most API requests per second (0: unlimited; else 0.001 to 1,000,000).
    #[arg(long, default_value_t = 5.0, value_name = "N", value_parser = request_rate)]
    rate: f64,
    /// Seconds one API request may take (1 to 86,400).
    #[arg(long, default_value_t = 30, value_name = "SECS",
          value_parser = super::whole_number::<u64>(1, 86_400))]
    api_timeout: u64,
}

/// Protocol's API base URL, `flag` naming where it came from: an http(s) URL with a
/// host, no user name or password, no query or fragment.
fn check_api_url(flag: &str, api_url: &str) -> Result<(), super::UsageError> {
    // A user name or password in it (`https://user:pass@host`) is no way to give
    // Protocol's token, and it was repeated in every error that named the URL (a
    // black-box probe): refused without repeating it.
    let authority = api_url.trim().split_once("://").map_or("", |(_, rest)| {
        rest.split(['/', '?', '#']).next().unwrap_or("")
    });
    if authority.contains('@') {
        return Err(super::UsageError(format!(
            "{flag} holds a user name or password (before an @): give the API's base \
             URL without them; the token goes in PROTOCOL_API_TOKEN or --token-file"
        )));
    }
    super::UsageError::unless_http_url(flag, api_url)?;
    // Paths are appended to the base URL: a query or fragment in it broke them all.
    if api_url.contains(['?', '#']) {
        return Err(super::UsageError(format!(
            "{flag} {api_url}: expected a base URL without a query or fragment"
        )));
    }
    // Every path it asks for begins with /v1: a base URL ending so asked for
    // `/v1/v1/...`, and every list said so after failing (a new user's walk).
    if api_url
        .trim()
        .trim_end_matches('/')
        .to_ascii_lowercase()
        .ends_with("/v1")
    {
        return Err(super::UsageError(format!(
            "{flag} {api_url}: give the API's base URL, without /v1 (the paths asked for \
             begin with it: /v1/contacts, ...)"
        )));
    }
    // Once: the settings are checked again before every reconcile pass, and the check
    // may resolve a name.
    static TOLD: std::sync::Once = std::sync::Once::new();
    if !TOLD.is_completed() && cleartext_off_this_machine(api_url) {
        TOLD.call_once(|| {
            tracing::warn!(
                "{flag} is an http:// URL of another machine: the API token goes to it \
                 unencrypted (use https://)"
            );
        });
    }
    Ok(())
}

/// Whether `api_url` (checked by [`check_api_url`]) is `http://` to a host other than
/// this machine, where the token would travel in clear text (a security review).
fn cleartext_off_this_machine(api_url: &str) -> bool {
    let Some(rest) = api_url
        .trim()
        .get(..7)
        .filter(|scheme| scheme.eq_ignore_ascii_case("http://"))
        .map(|_| &api_url.trim()[7..])
    else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let authority = authority
        .rsplit_once('@')
        .map_or(authority, |(_userinfo, host)| host);
    // One that is not `HOST[:PORT]` is taken for another machine's.
    let Some(host) = serve::host::host_of(authority) else {
        return true;
    };
    // A name of this machine's (`/etc/hosts`) is local too (a probe).
    let resolves_to_loopback = || {
        std::net::ToSocketAddrs::to_socket_addrs(&(host, 80)).is_ok_and(|addrs| {
            let ips: Vec<_> = addrs.map(|addr| addr.ip()).collect();
            !ips.is_empty() && ips.iter().all(|ip| ip.to_canonical().is_loopback())
        })
    };
    !(serve::host::is_loopback_name(host, &[]) || resolves_to_loopback())
}

/// `--rate`: 0 (unlimited), or 0.001 to 1,000,000 requests per second. A negative,
/// infinite or NaN rate ran unlimited, and one so small that a request's wait
/// overflowed a `Duration` would have panicked (a regression probe).
fn request_rate(text: &str) -> Result<f64, String> {
    let rate: f64 = text
        .trim()
        .parse()
        .map_err(|_| "expected requests per second, such as 5 or 0.5 (0: unlimited)".to_owned())?;
    if rate == 0.0 || (0.001..=1_000_000.0).contains(&rate) {
        Ok(rate)
    } else {
        Err("must be 0 (unlimited) or from 0.001 to 1000000 requests per second".into())
    }
}

impl ApiArgs {
    /// Whether a token is configured.
    pub(crate) fn has_token(&self) -> bool {
        // One that is not UTF-8 is a token, refused by `client`.
        self.token_file.is_some()
            || self
                .token_env
                .as_ref()
                .map_or(true, |t| t.as_deref().is_some_and(|t| !t.trim().is_empty()))
    }

    /// The token, if one can be read, without a word about why not (for blanking it
    /// out of an error; [`ApiArgs::client`] reads it for use).
    fn token_if_any(&self) -> Option<String> {
        match (&self.token_file, &self.token_env) {
            (Some(file), _) => secrets::read_file(file).ok()?.into_iter().next(),
            (None, Ok(Some(token))) => Some(token.trim().to_owned()),
            _ => None,
        }
    }

    /// Whether the token file is a pipe (`<(pass show api)`, `/dev/stdin`), which can
    /// be read once.
    pub(crate) fn token_file_is_pipe(&self) -> bool {
        #[cfg(unix)]
        {
            use std::os::unix::fs::FileTypeExt;
            self.token_file
                .as_deref()
                .and_then(|file| std::fs::metadata(file).ok())
                .is_some_and(|metadata| metadata.file_type().is_fifo())
        }
        #[cfg(not(unix))]
        false
    }

    /// The client configuration (reads the token file).
    pub(crate) fn client(&self) -> anyhow::Result<ClientConfig> {
        // An empty PROTOCOL_API_URL counts as unset, as an empty PROTOCOL_MIRROR_DB does.
        let api_url = match &self.api_url {
            Some(url) => url.clone(),
            None => super::env_text("PROTOCOL_API_URL")?
                .filter(|url| !url.trim().is_empty())
                .unwrap_or_else(|| DEFAULT_API_URL.to_owned()),
        };
        // As it was checked: spaces around it (an env file's) passed the check, and
        // then every request failed, each retried (a black-box probe).
        let api_url = api_url.trim().to_owned();
        let flag = if self.api_url.is_some() {
            "--api-url"
        } else {
            "PROTOCOL_API_URL"
        };
        if let Err(super::UsageError(message)) = check_api_url(flag, &api_url) {
            // The token, put in the URL by mistake, is not repeated (a probe): the
            // client never logs it either.
            let message = match self.token_if_any() {
                Some(token) => protocol_mirror::backfill::client::without_token(&message, &token),
                None => message,
            };
            return Err(super::UsageError(message).into());
        }
        let token = match (&self.token_file, self.token_env.clone()?) {
            (Some(file), _) => {
                let mut tokens = match secrets::read_file(file) {
                    // A file with no token in it is a mistake in the configuration,
                    // as one with several is (exit 2).
                    Err(secrets::SecretError::Empty(_)) => {
                        return Err(super::UsageError(format!(
                            "--token-file {}: holds no API token",
                            file.display()
                        ))
                        .into());
                    }
                    other => other.context("the API token file")?,
                };
                // Several lines are several webhook secrets in a secret file, but one
                // API token can be sent: using the first was a silent guess.
                if tokens.len() > 1 {
                    return Err(super::UsageError(format!(
                        "--token-file {}: holds {} tokens (one per line), but one is sent: keep only it",
                        file.display(),
                        tokens.len()
                    ))
                    .into());
                }
                tokens.pop().unwrap_or_default()
            }
            (None, Some(token)) if !token.trim().is_empty() => token.trim().to_owned(),
            _ => {
                return Err(super::UsageError(
                    "no API token: pass --token-file or set PROTOCOL_API_TOKEN".into(),
                )
                .into());
            }
        };
        // A token no header can carry failed every request, each retried as a network
        // error, for more than a minute.
        super::UsageError::unless_header_safe(
            "the API token",
            &token,
            "check PROTOCOL_API_TOKEN or --token-file",
        )?;
        Ok(ClientConfig {
            base_url: api_url,
            token,
            rate: self.rate,
            timeout: Duration::from_secs(self.api_timeout),
            retries: 5,
            backoff: Duration::from_millis(500),
        })
    }
}

#[derive(clap::Args)]
pub(crate) struct BackfillArgs {
    #[command(flatten)]
    api: ApiArgs,
    /// Only these resources (repeatable); all by default.
    #[arg(long = "resource", value_name = "R", value_parser = super::ResourceParser, hide_possible_values = true)]
    resources: Vec<Resource>,
    /// After a complete pass, delete (and tombstone) rows Protocol no longer has.
    #[arg(long)]
    prune: bool,
    /// Forget saved cursors and start over.
    #[arg(long)]
    restart: bool,
}

fn summary(report: &ResourceReport) -> String {
    if report.listed_earlier() {
        return format!(
            "{}: listed to the end before, by the backfill this one resumed (`--restart` \
             lists everything again)",
            report.resource.plural()
        );
    }
    let changed: u64 = report.outcomes.values().sum();
    let by_outcome = if changed == 0 {
        String::new()
    } else {
        let outcomes: Vec<String> = report
            .outcomes
            .iter()
            .map(|(o, n)| format!("{n} {o}"))
            .collect();
        format!(" ({})", outcomes.join(", "))
    };
    // What the count is: a list that started over listed some objects twice, and one
    // resumed lists this backfill's share alone; said, so that the count is not taken
    // for the account's.
    let mut of_count = match report.listed_before_start_over {
        0 => String::new(),
        n => format!(" ({n} of them before a list started over, its cursor refused)"),
    };
    if report.resumed {
        of_count.push_str(" (resumed where an earlier backfill stopped)");
    }
    let mut line = format!(
        "{}: {} listed in {} page{}{of_count}, {} changed{by_outcome}, {} unchanged",
        report.resource.plural(),
        report.listed,
        report.pages,
        if report.pages == 1 { "" } else { "s" },
        changed,
        report.unchanged
    );
    // Rejected by an earlier pass, and listed as they were then: stored nowhere still.
    if report.still_rejected > 0 {
        line.push_str(&format!(", {} still rejected", report.still_rejected));
    }
    if !report.pruned.is_empty() {
        line.push_str(&format!(
            ", {} pruned ({})",
            report.pruned.len(),
            // Ids are Protocol's text: escaped, so that one cannot clear the screen
            // or forge a line of the report (a review), and quoted when plain text
            // would not keep them apart (`"q r"`).
            report
                .pruned
                .iter()
                .map(|id| named_id(id))
                .collect::<Vec<_>>()
                .join(" ")
        ));
    }
    if !report.complete {
        line.push_str(", INCOMPLETE");
    }
    // Which was rejected, and why: the count alone left it to the log (a probe).
    if let Some((id, why)) = report
        .first_rejected
        .as_ref()
        .or(report.first_still_rejected.as_ref())
    {
        let rejected = report
            .outcomes
            .get(&Outcome::Rejected)
            .copied()
            .unwrap_or(0)
            + report.still_rejected;
        line.push_str(&format!(
            "; rejected{}: {} ({}; `events --outcome rejected` lists {})",
            if rejected > 1 { ", the first" } else { "" },
            named_id(id),
            super::escaped_in_one_line(why),
            if rejected > 1 { "them" } else { "it" },
        ));
    }
    line
}

pub(crate) fn run(db: &Path, args: BackfillArgs) -> anyhow::Result<ExitCode> {
    let interrupt = Interrupt::install();
    let config = args.api.client()?;
    let token = config.token.clone();
    let mut client = Client::new(config).stop_when(interrupt.flag());
    // Before any request: a database it cannot write failed at its first page's
    // commit, in SQLite's words (a black-box probe).
    super::write::writable(db)?;
    let mut store = Store::open(db)?;
    if let Some(note) = store.migration_note() {
        super::note!("{note}");
    }
    // One backfill at a time: they share where each list stands.
    let Some(_backfilling) = protocol_mirror::lock::BackfillLock::try_take(db)? else {
        anyhow::bail!(
            "another backfill of {} is running (a `protocol-mirror backfill`, or a pass of \
             the daemon's --reconcile-every): they would share where each list stands; \
             run this one once it ends",
            db.display()
        );
    };
    if let Some(note) = super::leftover_note(&store) {
        super::note!("protocol-mirror: {note}");
    }
    let options = Options {
        resources: if args.resources.is_empty() {
            backfill::ORDER.to_vec()
        } else {
            args.resources
        },
        prune: args.prune,
        restart: args.restart,
    };
    let bar = std::io::IsTerminal::is_terminal(&std::io::stderr()).then(|| {
        let bar = ProgressBar::new_spinner();
        bar.set_style(
            ProgressStyle::with_template("{spinner} [{elapsed_precise}] {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.enable_steady_tick(Duration::from_millis(120));
        bar
    });
    let say = |line: &str| match &bar {
        Some(bar) => bar.println(line),
        None => super::note!("{line}"),
    };
    let mut db = Interruptible {
        store: &mut store,
        interrupt: interrupt.clone(),
    };
    // The last report of each resource so far, and how many of them were said: on a
    // terminal, each once its resource is done; else all at the end.
    let mut reports: Vec<ResourceReport> = Vec::new();
    let mut said = 0;
    let finished = AtomicBool::new(false);
    let run = std::thread::scope(|scope| {
        scope.spawn(|| acknowledge_a_stop(&interrupt, &finished, args.api.api_timeout, &say));
        let run = backfill::run(&mut db, &mut client, &options, |report| {
            match reports.last_mut() {
                Some(last) if last.resource == report.resource => *last = report.clone(),
                _ => reports.push(report.clone()),
            }
            if let Some(bar) = &bar {
                if report.done {
                    say_summary(report, &say);
                    said = reports.len();
                }
                let plural = |n: u64| if n == 1 { "" } else { "s" };
                bar.set_message(format!(
                    "{}: {} object{}, {} page{}",
                    report.resource.plural(),
                    report.listed,
                    plural(report.listed),
                    report.pages,
                    plural(report.pages)
                ));
            }
        });
        finished.store(true, Ordering::Relaxed);
        run
    });
    // A run that stopped early (Ctrl-C, a refused token, the database) says which
    // rows it pruned before that, and nothing else of what it did: the stop is one
    // line. It had said nothing of them (a black-box probe).
    for report in &reports[said..] {
        if run.is_ok() || !report.pruned.is_empty() {
            say_summary(report, &say);
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    if interrupt.is_set() && matches!(run, Err(BackfillError::Store(StoreError::Stopped))) {
        let again = match resume_command(std::env::args_os(), &token) {
            Some(command) => format!("run `{command}` again"),
            None => "run this backfill again, without --restart,".to_owned(),
        };
        super::note!(
            "interrupted: the pages fetched before are kept; {again} to resume where it \
             stopped"
        );
        return Ok(ExitCode::from(130));
    }
    let reports = run.context("backfill stopped")?;
    let failed = reports
        .iter()
        .find(|report| !report.complete || report.error.is_some());
    if let Some(report) = failed {
        let why = report.error.as_deref().unwrap_or("not listed to the end");
        // Listed to the end, but not pruned for a reason a run again meets again: it
        // told to run again "to resume where it stopped" (a new user's probe).
        if report.complete && why.starts_with("not pruning: ") {
            bail!(
                "the backfill listed everything, but did not prune {} ({})",
                report.resource.plural(),
                why.trim_start_matches("not pruning: ")
            );
        }
        bail!(
            "the backfill is incomplete ({}: {}); run it again to resume where it stopped",
            report.resource.plural(),
            why
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// A resource's summary line, and its error on a line of its own.
fn say_summary(report: &ResourceReport, say: &impl Fn(&str)) {
    say(&summary(report));
    if let Some(error) = &report.error {
        say(&format!("  {}: {error}", report.resource.plural()));
    }
}

/// Says that a stop was heard when the run goes on for a moment after it (a request
/// under way is awaited, up to the API timeout; a second signal ends the process).
fn acknowledge_a_stop(
    interrupt: &Interrupt,
    finished: &AtomicBool,
    api_timeout: u64,
    say: &impl Fn(&str),
) {
    let mut heard: Option<std::time::Instant> = None;
    while !finished.load(Ordering::Relaxed) {
        match heard {
            None if interrupt.is_set() => heard = Some(std::time::Instant::now()),
            Some(at) if at.elapsed() >= STOP_NOTICE_AFTER => {
                say(&format!(
                    "stopping: waiting for the step under way (an API request, up to \
                     {api_timeout} s, --api-timeout; or another writer's lock, up to 5 s); \
                     a second Ctrl-C or SIGTERM stops it at once"
                ));
                return;
            }
            _ => {}
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The command that resumes this one, from its arguments `args` (the program's name
/// first): as given, but for `--restart` (which would start over again), quoted for a
/// shell, the program called by its name, and `token` blanked should an argument hold
/// it (`--api-url`, by mistake). Advised as `protocol-mirror --db=X backfill`, a resume
/// went to the default API, or listed every resource (a probe). `None` when an
/// argument is not text a terminal shows as it is (not UTF-8, or holding a control or
/// bidirectional character): such a command is not given to paste.
fn resume_command(
    args: impl IntoIterator<Item = std::ffi::OsString>,
    token: &str,
) -> Option<String> {
    let mut words = vec!["protocol-mirror".to_owned()];
    for arg in args.into_iter().skip(1) {
        let arg = arg.into_string().ok()?;
        if arg == "--restart" {
            continue;
        }
        if arg
            .chars()
            .any(|c| c.is_control() || super::output::is_bidi_control(c))
        {
            return None;
        }
        words.push(protocol_mirror::store::shell_quoted(&arg));
    }
    Some(protocol_mirror::backfill::client::without_token(
        &words.join(" "),
        token,
    ))
}

/// How long a run may go on after Ctrl-C before it says why.
const STOP_NOTICE_AFTER: Duration = Duration::from_millis(500);

/// A pruned id as the report names it: as it is when it is plain text without spaces,
/// else quoted, escaped as Rust quotes text (`"q r"`, `"q\nr"`): a line break was
/// shown as a space, so that `q\nr` and `q r` read alike, and two ids as four (a
/// black-box probe). One over 64 characters is quoted and cut, with its length (a
/// rejected id of 100,000 made a line as long: a probe).
fn named_id(id: &str) -> String {
    const LONGEST_SHOWN: usize = 64;
    let plain = !id.is_empty()
        && id.chars().nth(LONGEST_SHOWN).is_none()
        && id.chars().all(|c| {
            !c.is_whitespace() && !c.is_control() && !super::output::is_bidi_control(c) && c != '"'
        });
    if plain {
        id.to_owned()
    } else {
        super::escaped_in_one_line(&protocol_mirror::store::query::shown_within(
            id,
            LONGEST_SHOWN,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::{check_api_url, named_id, resume_command};

    /// The command to resume is the one given, but for `--restart`, with the token
    /// blanked; none is given for arguments a terminal would not show as they are.
    #[test]
    fn the_resume_command_is_this_one_without_restart() {
        let args = |args: &[&str]| {
            args.iter()
                .map(std::ffi::OsString::from)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            resume_command(
                args(&[
                    "./pm",
                    "--db",
                    "my m.db",
                    "backfill",
                    "--restart",
                    "--resource",
                    "contacts"
                ]),
                "tok_123456"
            )
            .as_deref(),
            Some("protocol-mirror --db 'my m.db' backfill --resource contacts")
        );
        assert_eq!(
            resume_command(
                args(&["pm", "backfill", "--api-url", "https://h/tok_123456/"]),
                "tok_123456"
            )
            .as_deref(),
            Some("protocol-mirror backfill --api-url https://h/[token]/")
        );
        for odd in ["t\u{1b}]0;x\u{7}", "a\nb", "\u{202e}x"] {
            assert_eq!(
                resume_command(args(&["pm", "backfill", "--token-file", odd]), "tok_123456"),
                None
            );
        }
        #[cfg(unix)]
        {
            use std::os::unix::ffi::OsStringExt;
            let not_utf8 = std::ffi::OsString::from_vec(vec![b'm', 0xff]);
            let given = vec!["pm".into(), "--db".into(), not_utf8, "backfill".into()];
            assert_eq!(resume_command(given, "tok_123456"), None);
        }
    }

    /// Pruned ids stay apart and on one line: plain ones as they are, others quoted.
    #[test]
    fn pruned_ids_are_named_apart() {
        assert_eq!(named_id("ct0001"), "ct0001");
        assert_eq!(named_id("q r"), r#""q r""#);
        assert_eq!(named_id("q\nr"), r#""q\nr""#);
        assert_eq!(named_id("a\u{1b}[2J"), r#""a\u{1b}[2J""#);
        assert_eq!(named_id("\u{202e}x"), r#""\u{202e}x""#);
        assert_eq!(named_id(""), r#""""#);
        assert_eq!(named_id(&"r".repeat(64)), "r".repeat(64));
        let long = named_id(&"r".repeat(100_000));
        assert_eq!(long, format!("\"{}\"… (100000 bytes)", "r".repeat(64)));
    }

    use super::cleartext_off_this_machine;

    /// The token travels unencrypted to an `http://` URL of another machine: said
    /// (a security review); this machine's own, and `https://`, are fine.
    #[test]
    fn http_urls_of_other_machines_are_told_apart() {
        for url in [
            "http://api.example.com",
            "http://10.0.0.5:8080/",
            "http://[2001:db8::1]:80",
            "http://localhost.example.com",
            "http://localhost@api.example.com",
            "http://[::1]evil.com",
        ] {
            assert!(cleartext_off_this_machine(url), "{url}");
        }
        for url in [
            "https://api.protocol.chat",
            "http://127.0.0.1:9000",
            "http://localhost:9000/",
            "http://LOCALHOST.",
            "http://fake.localhost",
            "http://[::1]:9000",
            "http://user:secret@localhost:9000",
        ] {
            assert!(!cleartext_off_this_machine(url), "{url}");
        }
    }

    /// Spaces around the base URL are not part of it: they passed the check, and
    /// every request failed (a black-box probe).
    #[test]
    fn spaces_around_the_base_url_are_left_out() {
        let args = super::ApiArgs {
            api_url: Some(" http://127.0.0.1:9/api \t".into()),
            token_file: None,
            token_env: Ok(Some("token".into())),
            rate: 5.0,
            api_timeout: 30,
        };
        assert_eq!(args.client().unwrap().base_url, "http://127.0.0.1:9/api");
    }

    /// A base URL that ends in `/v1` is refused at once (every list asked for
    /// `/v1/v1/...` and failed); one that merely holds `v1` is a base URL.
    #[test]
    fn a_base_url_ending_in_v1_is_refused() {
        for url in [
            "https://api.protocol.chat/v1",
            "https://api.protocol.chat/v1/",
            "http://127.0.0.1:9/proxy/v1",
            "https://api.protocol.chat/V1",
        ] {
            let error = check_api_url("--api-url", url).unwrap_err();
            assert!(error.0.contains("without /v1"), "{url}: {}", error.0);
        }
        for url in [
            "https://api.protocol.chat",
            "https://v1.example.com",
            "http://127.0.0.1:9/v10",
        ] {
            assert!(check_api_url("--api-url", url).is_ok(), "{url}");
        }
    }
}
