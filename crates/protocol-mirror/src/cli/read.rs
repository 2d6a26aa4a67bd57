//! The read-only commands: list, get, search, sql, events, stats. They open the
//! database read-only, so they never block a running daemon's commits (a reader slow
//! to take its output holds its read transaction, and the WAL grows meanwhile:
//! docs/CLI.md).

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::bail;
use clap::builder::NonEmptyStringValueParser;
use protocol_mirror::store::query::{self, EventRecord, EventsQuery, ListQuery};
use protocol_mirror::store::{self, Store};
use protocol_types::{EventType, Resource};
use serde_json::Value;

use super::output::{self, Format, Out};

#[derive(clap::Args)]
pub(crate) struct ListArgs {
    /// contacts, conversations, messages, groups or attachments (singular works too).
    #[arg(value_parser = super::ResourceParser, hide_possible_values = true)]
    resource: Resource,
    /// Messages and attachments of this conversation (contacts, groups: whose conversation it is).
    #[arg(long, value_name = "ID", value_parser = NonEmptyStringValueParser::new())]
    conversation: Option<String>,
    /// Messages sent by this contact, conversations with them, groups they are in.
    #[arg(long, value_name = "ID", value_parser = NonEmptyStringValueParser::new())]
    contact: Option<String>,
    /// Conversations of this group, or contacts who are its members.
    #[arg(long, value_name = "ID", value_parser = NonEmptyStringValueParser::new())]
    group: Option<String>,
    /// Attachments of this message.
    #[arg(long, value_name = "ID", value_parser = NonEmptyStringValueParser::new())]
    message: Option<String>,
    /// Only objects created at or after this time: Unix seconds, a UTC date or time as
    /// tables print them (2024-05-01, "2024-05-01 12:30:00", 2024-05-01T12:30:00Z), a
    /// time with its offset (2024-05-01T14:30:00+02:00), or a duration back from now
    /// (30m, 2h, 7d, "1h 30m").
    #[arg(long, value_name = "TIME", value_parser = parse_time, allow_hyphen_values = true)]
    since: Option<i64>,
    /// Conversations that are muted (`--muted false`: that are not).
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true",
          value_parser = flag_value("muted"))]
    muted: Option<bool>,
    /// Conversations that are pinned (`--pinned false`: that are not).
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true",
          value_parser = flag_value("pinned"))]
    pinned: Option<bool>,
    /// Conversations or groups that are archived (`--archived false`: that are not).
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true",
          value_parser = flag_value("archived"))]
    archived: Option<bool>,
    /// At most this many objects.
    #[arg(long, short = 'n', value_name = "N", default_value_t = 100, value_parser = count())]
    limit: usize,
    #[command(flatten)]
    format: super::FormatArg,
}

#[derive(clap::Args)]
pub(crate) struct GetArgs {
    /// contact, conversation, message, group or attachment (plural works too).
    #[arg(value_parser = super::ResourceParser, hide_possible_values = true)]
    resource: Resource,
    /// The object's id.
    #[arg(value_parser = NonEmptyStringValueParser::new())]
    id: String,
    #[command(flatten)]
    format: super::FormatArg,
}

#[derive(clap::Args)]
pub(crate) struct SearchArgs {
    /// Words that must all appear, as words: case and accents ignored (`cafe` finds
    /// "Café"), split at anything but letters, digits and marks (so a run of CJK characters
    /// is one word); words joined by other characters than spaces (`e-mail`, `don't`,
    /// `hotel,lobby`) must appear together, in that order, as a phrase; operators and
    /// quotes are plain text (see --fts). Several
    /// arguments are one text (`search hotel lobby` is `search 'hotel lobby'`). Text
    /// that begins with `-` goes after `--`: `search -- -hotel`.
    #[arg(required = true, num_args = 1.., value_name = "TEXT")]
    text: Vec<String>,
    /// Only messages of this conversation.
    #[arg(long, value_name = "ID", value_parser = NonEmptyStringValueParser::new())]
    conversation: Option<String>,
    /// At most this many messages.
    #[arg(long, short = 'n', value_name = "N", default_value_t = 20, value_parser = count())]
    limit: usize,
    /// Treat TEXT as an FTS5 query (AND, OR, NOT, NEAR, "phrases", prefix*).
    #[arg(long)]
    fts: bool,
    #[command(flatten)]
    format: super::FormatArg,
}

#[derive(clap::Args)]
pub(crate) struct SqlArgs {
    /// One read-only statement (SELECT, EXPLAIN, read-only PRAGMA).
    statement: String,
    #[command(flatten)]
    format: super::FormatArg,
}

#[derive(clap::Args)]
pub(crate) struct EventsArgs {
    /// Only events of this type, e.g. message.updated.
    #[arg(long = "type", value_name = "TYPE", value_hint = clap::ValueHint::Other,
          value_parser = NonEmptyStringValueParser::new())]
    event_type: Option<String>,
    /// Only events with this outcome; `duplicate`: the events that were delivered
    /// again (each is logged once, with its first outcome and how many redeliveries
    /// it had).
    #[arg(long, ignore_case = true, value_parser = ["applied", "stale", "ignored_deleted", "unsupported", "rejected", "duplicate"])]
    outcome: Option<String>,
    /// Only events received at or after this time: Unix seconds, a UTC date or time as
    /// tables print them (2024-05-01, "2024-05-01 12:30:00", 2024-05-01T12:30:00Z), a
    /// time with its offset (2024-05-01T14:30:00+02:00), or a duration back from now
    /// (30m, 2h, 7d, "1h 30m").
    #[arg(long, value_name = "TIME", value_parser = parse_time, allow_hyphen_values = true)]
    since: Option<i64>,
    /// At most this many (the newest).
    #[arg(long, short = 'n', value_name = "N", default_value_t = 50, value_parser = count())]
    limit: usize,
    /// Keep printing new events as the daemon commits them (Ctrl-C to stop). A stream
    /// has no end to close an array at: `--format json` prints one object per line, as
    /// ndjson does. A database not made yet is waited for (as `tail -F` waits for a
    /// file).
    #[arg(long)]
    follow: bool,
    #[command(flatten)]
    format: super::FormatArg,
}

/// `--limit`'s parser: a whole number, 0 or more.
fn count() -> impl Fn(&str) -> Result<usize, String> + Clone + Send + Sync + 'static {
    super::whole_number(0, usize::MAX as u64)
}

fn open(db: &Path) -> anyhow::Result<Store> {
    let store = Store::open_read_only(db)?;
    note_other_names(db);
    Ok(store)
}

/// Says so when the database file has other names (hard links): SQLite keeps the
/// write-ahead log beside the name it opens, so what a daemon commits through another
/// name is not read through this one until it is copied into the file (a probe read
/// 14,077 events through a link while the daemon's name had 14,170, without a word;
/// writers refuse such a file).
#[cfg(unix)]
fn note_other_names(db: &Path) {
    use std::os::unix::fs::MetadataExt;
    if let Ok(meta) = std::fs::metadata(db)
        && meta.nlink() > 1
    {
        super::note!(
            "protocol-mirror: note: {} has {} names (hard links): what a daemon writing \
             through another name committed last may not be read through this one",
            super::escaped_in_one_line(&db.display().to_string()),
            meta.nlink()
        );
    }
}

#[cfg(not(unix))]
fn note_other_names(_db: &Path) {}

/// Opens `db` to follow its log: a database not made yet (none there, an import
/// building it or one stopped before it ended, or an empty file a starting daemon has
/// just created) is waited for, as `tail -F` waits for a file, saying so once. `None`
/// when Ctrl-C or SIGTERM came first, or the reader of its output has gone. (Started
/// beside a starting `serve`, the follower failed, saying to start it.) Once it waits,
/// `interrupt` holds the handler it installed.
fn open_when_made(
    db: &Path,
    interrupt: &mut Option<super::interrupt::Interrupt>,
) -> anyhow::Result<Option<Store>> {
    loop {
        // A reader gone (`| head`) ends the waiting too, as it ends the following.
        if interrupt.as_ref().is_some_and(|i| i.is_set()) || stdout_closed() {
            return Ok(None);
        }
        match Store::open_read_only(db) {
            Ok(store) => return Ok(Some(store)),
            // An import stopped before it ended left its file: the next makes the
            // database anew (the follower ended there, exit 3: a probe).
            Err(
                error @ (store::StoreError::Missing(_)
                | store::StoreError::Building(_)
                | store::StoreError::Abandoned { .. }
                | store::StoreError::Empty(_)),
            ) => {
                if interrupt.is_none() {
                    super::note!(
                        "protocol-mirror: {}; following it once it is made (Ctrl-C to stop)",
                        super::escaped_in_one_line(&error.to_string())
                    );
                    *interrupt = Some(super::interrupt::Interrupt::install());
                }
            }
            Err(error) => return Err(error.into()),
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Reads a time: Unix seconds, a UTC date (`2024-05-01`) or date and time
/// (`2024-05-01 12:30:00`, as tables print them, or `12:30`, or RFC 3339 with `T` and
/// `Z` or an offset, `+02:00`), or a duration back from now (`2h`, `7d`, `1h 30m`, also
/// with ` ago`).
fn parse_time(text: &str) -> Result<i64, String> {
    parse_time_at(text, std::time::SystemTime::now())
}

/// The value of `--muted`, `--pinned` or `--archived`: `true` or `false`, in any case
/// as `--format` and `--outcome` take theirs (`TRUE` was refused: a black-box probe).
/// A resource name there was put after the flag, which took it for its value (`list
/// --muted conversations`): the fix is said (an operator probe).
fn flag_value(flag: &'static str) -> impl Fn(&str) -> Result<bool, String> + Clone {
    move |text| match text {
        _ if text.eq_ignore_ascii_case("true") => Ok(true),
        _ if text.eq_ignore_ascii_case("false") => Ok(false),
        _ if super::resource(text).is_ok() => Err(format!(
            "expected true or false; the resource goes before the flag: `list {text} --{flag}`"
        )),
        _ => Err("expected true or false".to_owned()),
    }
}

/// [`parse_time`], with durations counted back from `now`.
fn parse_time_at(text: &str, now: std::time::SystemTime) -> Result<i64, String> {
    let text = text.trim();
    if let Ok(seconds) = text.parse::<i64>() {
        return Ok(seconds);
    }
    if let Some(seconds) = super::output::parse_utc(text) {
        return Ok(seconds);
    }
    // A duration needs a unit (`5` alone is Unix seconds, read above). Whole seconds,
    // as times are: `90s` back from 12:00:00.7 is from 11:58:30 on.
    let ago = text.strip_suffix("ago").map_or(text, str::trim_end);
    if let Ok(duration) = humantime::parse_duration(ago) {
        return now
            .checked_sub(duration)
            .and_then(unix_seconds)
            .ok_or_else(|| format!("{text} back from now is before any time this can count"));
    }
    with_fraction(text)
        .or_else(|| with_offset(text))
        .ok_or_else(|| {
            "expected Unix seconds, a UTC date or time such as 2024-05-01, \
             \"2024-05-01 12:30:00\" or 2024-05-01T12:30:00Z (or +02:00), or a duration \
             back from now such as 30m, 2h or 7d"
                .to_owned()
        })
}

/// A UTC time with a fraction of a second, as RFC 3339 allows (`22:13:20.5Z`). Times
/// are whole seconds: "at or after 20.5" is from 21 on (rounding down took in the
/// second before).
fn with_fraction(text: &str) -> Option<i64> {
    let (whole, fraction) = text.split_once('.')?;
    let (digits, zone) = match fraction.strip_suffix(['Z', 'z']) {
        Some(digits) => (digits, "Z"),
        None => (fraction, ""),
    };
    // A fraction of seconds: after a time of day with its seconds (`12:30.5` could
    // be of a minute), not after a date.
    if whole.matches(':').count() != 2
        || digits.is_empty()
        || !digits.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let seconds = super::output::parse_utc(&format!("{whole}{zone}"))?;
    seconds.checked_add(i64::from(digits.bytes().any(|b| b != b'0')))
}

/// A date and time with an offset from UTC (`2024-05-01T14:30:00+02:00`, RFC 3339's
/// other zone; also `+0200` and `+02`): the UTC time it names. (It was refused: a
/// parser before that took fractions also took some offsets, and ignored them.)
fn with_offset(text: &str) -> Option<i64> {
    let (date, time) = text.split_once([' ', 'T', 't'])?;
    let at = time.rfind(['+', '-'])?;
    let (clock, offset) = time.split_at(at);
    let (sign, offset) = offset.split_at(1);
    let (hours, minutes) = match offset.split_once(':') {
        Some((hours, minutes)) => (hours, minutes),
        None if offset.len() == 4 => offset.split_at(2),
        None => (offset, "00"),
    };
    let two_digits = |text: &str| {
        (text.len() == 2 && text.bytes().all(|b| b.is_ascii_digit()))
            .then(|| text.parse::<i64>().ok())
            .flatten()
    };
    let (hours, minutes) = (two_digits(hours)?, two_digits(minutes)?);
    if hours > 23 || minutes > 59 || !clock.ends_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    let local = format!("{date}T{clock}");
    let seconds = super::output::parse_utc(&local).or_else(|| with_fraction(&local))?;
    let offset = (hours * 3600 + minutes * 60) * if sign == "-" { -1 } else { 1 };
    seconds.checked_sub(offset)
}

/// The whole second `time` falls in, in Unix seconds (rounded down, also before 1970).
fn unix_seconds(time: std::time::SystemTime) -> Option<i64> {
    match time.duration_since(std::time::UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_secs()).ok(),
        Err(before) => {
            let before = before.duration();
            let whole = i64::try_from(before.as_secs()).ok()?;
            whole
                .checked_add(i64::from(before.subsec_nanos() > 0))
                .map(|s| -s)
        }
    }
}

/// A `--since` of eight digits that make a date (`20231114`) is read as Unix seconds
/// (a moment of August 1970, when no event was sent): the note says so, and how to
/// write the date.
fn compact_date_note(since: Option<i64>) -> Option<String> {
    let seconds = since.filter(|s| (19_700_101..=21_001_231).contains(s))?;
    let digits = seconds.to_string();
    let date = format!("{}-{}-{}", &digits[..4], &digits[4..6], &digits[6..]);
    super::output::parse_utc(&date)?;
    Some(format!(
        "--since {digits} is read as Unix seconds ({} UTC); for the date, write {date}",
        super::output::format_time(seconds)
    ))
}

pub(crate) fn list(db: &Path, args: ListArgs) -> anyhow::Result<ExitCode> {
    if let Some(note) = compact_date_note(args.since) {
        super::note!("protocol-mirror: {note}");
    }
    let query = ListQuery {
        conversation: args.conversation,
        contact: args.contact,
        group: args.group,
        message: args.message,
        since: args.since,
        muted: args.muted,
        pinned: args.pinned,
        archived: args.archived,
        limit: Some(args.limit),
        ..ListQuery::default()
    };
    if let Err(message) = query.check(args.resource) {
        return Err(super::UsageError(message).into());
    }
    let store = open(db)?;
    let mut out = Out::new(args.format.format);
    let format = args.format.format;
    // JSON is written an object at a time, whatever the limit: a page of 100
    // messages with 6,500 attachments each took 1.1 GB held whole; a table a block
    // of rows at a time ([`output::TABLE_BLOCK`]); CSV a row at a time, after a first
    // pass for the columns of keys only some objects have.
    let listed = match format {
        Format::Json | Format::Ndjson => {
            stream_list(&store, &mut out, args.resource, &query, format)?
        }
        Format::Table => list_table(&store, &mut out, args.resource, &query)?,
        Format::Csv => list_csv(&store, &mut out, args.resource, &query)?,
    };
    out.flush()?;
    note_at_limit(format, listed.more, args.limit);
    if listed.count == 0 {
        note_unknown_ids(
            &store,
            &[
                (Resource::Conversation, query.conversation.as_deref()),
                (Resource::Contact, query.contact.as_deref()),
                (Resource::Group, query.group.as_deref()),
                (Resource::Message, query.message.as_deref()),
            ],
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Keeps the characters that mark `search`'s highlights ([`output::HIGHLIGHT`]) out
/// of a coloured row but where the snippet put them: in an id, they are shown as
/// `�`; in a message whose text holds them, the snippet's marks cannot be told from
/// the text's, and all go (that hit is shown without its highlights). Its own, they
/// were coloured as the snippet's marks are (a review).
fn without_own_highlights(row: &mut [Value], message: &Value) {
    let (on, off) = output::HIGHLIGHT;
    let is_mark = |c: char| on.starts_with(c) || off.starts_with(c);
    let Some((snippet, others)) = row.split_last_mut() else {
        return;
    };
    for value in others {
        if let Value::String(text) = value
            && text.contains(is_mark)
        {
            *text = text
                .chars()
                .map(|c| if is_mark(c) { '\u{fffd}' } else { c })
                .collect();
        }
    }
    if message
        .get("message")
        .and_then(Value::as_str)
        .is_some_and(|text| text.contains(is_mark))
        && let Value::String(text) = snippet
    {
        text.retain(|c| !is_mark(c));
    }
}

/// How many rows to read for a table of `limit`: one more, to tell whether there are
/// more ([`note_at_limit`]), but none for none.
fn one_beyond(limit: usize) -> usize {
    if limit == 0 {
        0
    } else {
        limit.saturating_add(1)
    }
}

/// After a table of `limit` rows with `more` beyond them, a note that says so: `list
/// messages` printed its 100 rows of many thousands and said nothing of the default
/// limit (an operator probe). Said only when there are more: of a list of exactly
/// `limit` rows it said "there may be more" (a note). Tables only: they are for
/// people, and JSON, CSV and NDJSON for programs, which set their limits.
fn note_at_limit(format: Format, more: bool, limit: usize) {
    if format == Format::Table && more && limit > 0 {
        match limit {
            1 => super::note!("protocol-mirror: the first one shown (--limit); there are more"),
            _ => super::note!("protocol-mirror: the first {limit} shown (--limit); there are more"),
        }
    }
}

/// After an empty list (or search), a note for each id filter that names no stored
/// object: a mistyped id listed nothing, as a real one with nothing under it does, and
/// said no more (a probe). Quoted short, as `get` quotes an id it does not find.
fn note_unknown_ids(store: &Store, filters: &[(Resource, Option<&str>)]) -> anyhow::Result<()> {
    for &(resource, id) in filters {
        if let Some(id) = id
            && store::get(store.conn(), resource, id)?.is_none()
        {
            super::note!(
                "protocol-mirror: no {resource} with id {} is stored{}",
                store::query::shown(id),
                store::absent_because(store.conn(), resource, id)?
            );
        }
    }
    Ok(())
}

/// Prints `query`'s list as tables of [`output::TABLE_BLOCK`] rows each; returns what
/// it listed.
fn list_table(
    store: &Store,
    out: &mut Out,
    resource: protocol_types::Resource,
    query: &ListQuery,
) -> anyhow::Result<query::Listed> {
    let mut blocks = output::Blocks::new();
    let listed = query::list_each(store.conn(), resource, query, |object| {
        blocks.push(object, |block, _| {
            output::objects(out, Format::Table, resource, block, false)
        })
    })
    .map_err(list_error)?;
    blocks.finish(|block, _| output::objects(out, Format::Table, resource, block, false))?;
    Ok(listed)
}

/// Most objects `list --format csv` gathers before it prints them, in one pass.
const CSV_IN_ONE_PASS: usize = 1_000;

/// Prints `query`'s list as CSV. Up to [`CSV_IN_ONE_PASS`] objects (`--limit`; 100 by
/// default) are read once and held, for their keys beyond the documented fields (its
/// columns) and then their rows. More are printed a row at a time: a first pass over
/// the stored objects finds the columns, a second prints the rows, both in one read
/// transaction, so that they list the same objects. (Gathered whole, 200,000 messages
/// took 877 MB; read twice, `--contact`'s scan took twice as long: a probe.) Returns
/// what it listed.
fn list_csv(
    store: &Store,
    out: &mut Out,
    resource: protocol_types::Resource,
    query: &ListQuery,
) -> anyhow::Result<query::Listed> {
    let mut csv = output::CsvObjects::new(resource);
    if query.limit.is_some_and(|limit| limit <= CSV_IN_ONE_PASS) {
        let mut objects = Vec::new();
        let listed = query::list_each(store.conn(), resource, query, |object| {
            csv.note_object_keys(&object);
            objects.push(object);
            Ok(())
        })
        .map_err(list_error)?;
        csv.header(out)?;
        for object in &objects {
            csv.row(out, object)?;
        }
        return Ok(listed);
    }
    let snapshot = store.conn().unchecked_transaction()?;
    query::list_stored_each(&snapshot, resource, query, |stored| {
        csv.note_keys(stored);
        Ok(())
    })
    .map_err(list_error)?;
    csv.header(out)?;
    query::list_each(&snapshot, resource, query, |object| csv.row(out, &object)).map_err(list_error)
}

/// A [`query::ListError`] at the command's edge.
fn list_error(error: query::ListError) -> anyhow::Error {
    match error {
        query::ListError::Store(e) => anyhow::Error::from(e),
        query::ListError::Output(e) => anyhow::Error::from(e),
        other => anyhow::anyhow!("{other}"),
    }
}

/// Prints `query`'s list as JSON or NDJSON an object at a time (see
/// [`query::list_each`]); returns what it listed.
fn stream_list(
    store: &Store,
    out: &mut Out,
    resource: protocol_types::Resource,
    query: &ListQuery,
    format: Format,
) -> anyhow::Result<query::Listed> {
    let mut index = 0;
    let listed = query::list_each(store.conn(), resource, query, |object| {
        out.next_object(format, index, &object)?;
        index += 1;
        Ok(())
    })
    .map_err(list_error)?;
    out.end_objects(format, listed.count)?;
    Ok(listed)
}

pub(crate) fn get(db: &Path, args: GetArgs) -> anyhow::Result<ExitCode> {
    let store = open(db)?;
    let Some(object) = store::get(store.conn(), args.resource, &args.id)? else {
        // Quoted short, as the read API's 404 does: the id may be kilobytes long.
        super::note!(
            "protocol-mirror: no {} with id {}{}",
            args.resource,
            store::query::shown(&args.id),
            store::absent_because(store.conn(), args.resource, &args.id)?
        );
        return Ok(ExitCode::from(1));
    };
    let mut out = Out::new(args.format.format);
    output::objects(&mut out, args.format.format, args.resource, &[object], true)?;
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn search(db: &Path, args: SearchArgs) -> anyhow::Result<ExitCode> {
    let store = open(db)?;
    let text = args.text.join(" ");
    // Only letters, digits and marks make words: a text of none (`search 😀`,
    // `search ""`) matches nothing, said so (after the empty answer) rather than an
    // empty answer alone. Said only of an empty answer: the index's tables of
    // characters are older than Rust's, and take some characters Unicode assigned
    // since (a skin tone, 🤔) for letters (a text of "no words" had hits; a probe).
    let no_words_note = if !args.fts && !store::query::has_words(&text) {
        Some("the text holds no words (letters, digits or marks), so no message matches it")
    } else if args.fts && text.trim().is_empty() {
        Some("the full-text query is empty, so no message matches it")
    } else {
        None
    };
    let mut out = Out::new(args.format.format);
    // JSON prints the messages, no snippet: none is made.
    let markers = match args.format.format {
        Format::Json | Format::Ndjson => None,
        // Colours on a terminal, unless NO_COLOR (no-color.org) says otherwise.
        Format::Table
            if out.is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()) =>
        {
            Some(output::HIGHLIGHT)
        }
        _ => Some(("[", "]")),
    };
    // One hit beyond the limit, to tell whether there are more (none for none).
    let mut hits = match query::search(
        store.conn(),
        &text,
        args.fts,
        args.conversation.as_deref(),
        one_beyond(args.limit),
        markers,
    ) {
        // A query FTS5 cannot parse is a mistake on the command line (exit 2).
        Err(error @ query::SearchError::InvalidQuery(_)) => {
            return Err(super::UsageError(format!(
                "{error} in `{}` (FTS5 syntax: words, \"a phrase\", prefix*, AND, OR, NOT, \
                 NEAR(a b), parentheses that close; without --fts the text is searched as \
                 plain words)",
                super::escaped_in_one_line(&text)
            ))
            .into());
        }
        other => other?,
    };
    let more = hits.len() > args.limit;
    hits.truncate(args.limit);
    let found = hits.len();
    let coloured = markers == Some(output::HIGHLIGHT);
    if coloured {
        out.colour_highlights();
    }
    match args.format.format {
        Format::Json | Format::Ndjson => {
            let messages: Vec<Value> = hits.into_iter().map(|h| h.message).collect();
            out.records(args.format.format, &[], &[], &messages, false)?;
        }
        format => {
            let columns = ["id", "conversation_id", "created_at", "snippet"].map(String::from);
            let rows: Vec<Vec<Value>> = hits
                .iter()
                .map(|h| {
                    let mut row = vec![
                        output::pick(&h.message, "id"),
                        output::pick(&h.message, "conversation_id"),
                        output::pick(&h.message, "created_at"),
                        Value::String(h.snippet.clone()),
                    ];
                    if coloured {
                        without_own_highlights(&mut row, &h.message);
                    }
                    row
                })
                .collect();
            out.records(format, &columns, &rows, &[], false)?;
        }
    }
    out.flush()?;
    note_at_limit(args.format.format, more, args.limit);
    if found == 0 {
        if let Some(note) = no_words_note {
            super::note!("protocol-mirror: {note}");
        }
        note_unknown_ids(
            &store,
            &[(Resource::Conversation, args.conversation.as_deref())],
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn sql(db: &Path, args: SqlArgs) -> anyhow::Result<ExitCode> {
    // A replica that lost some of its tables is read all the same: what it has,
    // its event log above all, is what a user saves from it.
    let store = Store::open_to_salvage(db)?;
    note_other_names(db);
    let format = args.format.format;
    let mut out = Out::new(format);
    // JSON, NDJSON and CSV are printed as rows are read (a result of millions of rows,
    // or one without end piped to `head`, in constant memory); a table a block of
    // rows at a time ([`output::TABLE_BLOCK`]).
    let mut stream = output::ResultStream::new(format);
    let mut blocks = output::Blocks::new();
    let result = query::sql_each(store.conn(), &args.statement, |columns, row| {
        if format == Format::Table {
            blocks.push(row, |block, _| out.result_set(format, columns, block))
        } else {
            out.stream_row(&mut stream, columns, &row)
        }
    });
    let columns = match result {
        // Nothing to run, or a statement that would write, is a mistake on the command
        // line (exit 2), like a missing argument.
        Err(
            error @ (query::SqlError::Empty
            | query::SqlError::NotReadOnly
            | query::SqlError::PragmaSets(_)
            | query::SqlError::LoadExtension
            | query::SqlError::NotAQuery
            | query::SqlError::Invalid(_)),
        ) => {
            return Err(super::UsageError(error.to_string()).into());
        }
        // A closed output (`| head`) is the reader's choice, as with every command.
        Err(query::SqlError::Output(error)) => return Err(error.into()),
        other => other?,
    };
    if format == Format::Table {
        blocks.finish(|block, _| out.result_set(format, &columns, block))?;
    } else {
        out.stream_end(&stream, &columns)?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// The columns of `events` in CSV: every field JSON prints.
const EVENT_COLUMNS: [&str; 10] = [
    "seq",
    "received_at",
    "type",
    "id",
    "object_id",
    "outcome",
    "cascaded",
    "error",
    "duplicates",
    "source",
];

/// The columns of an `events` table: all but the source, the redeliveries before the
/// error (a long text), so that `--outcome duplicate` shows what it selected. A drawn
/// table leaves out `duplicates` and `error` when no listed event has one.
const EVENT_TABLE_COLUMNS: [&str; 9] = [
    "seq",
    "received_at",
    "type",
    "id",
    "object_id",
    "outcome",
    "cascaded",
    "duplicates",
    "error",
];

fn event_columns(format: Format) -> &'static [&'static str] {
    match format {
        Format::Table => &EVENT_TABLE_COLUMNS,
        _ => &EVENT_COLUMNS,
    }
}

/// Prints the events `query` lists, newest first, as they are read: tables of
/// [`output::TABLE_BLOCK`] rows each, JSON and NDJSON an object at a time, CSV a row
/// at a time. Returns how many there were, and whether more lie beyond its limit
/// (one more is read to tell).
fn print_events(
    store: &Store,
    query: &EventsQuery,
    columns: &[String],
    format: Format,
    out: &mut Out,
) -> anyhow::Result<(usize, bool)> {
    let mut blocks = output::Blocks::new();
    let mut csv = output::ResultStream::new(format);
    let mut print = |out: &mut Out, block: &[EventRecord], printed: usize| -> std::io::Result<()> {
        match format {
            Format::Table => {
                // A drawn table shows the redeliveries and the errors when some
                // listed event has them: an empty column took a table past 120
                // characters, cutting ids and times in two when piped.
                let shown: Vec<String> = columns
                    .iter()
                    .filter(|c| match c.as_str() {
                        "duplicates" => block.iter().any(|e| e.duplicates > 0),
                        "error" => block.iter().any(|e| e.error.is_some()),
                        _ => true,
                    })
                    .cloned()
                    .collect();
                let (rows, objects) = event_rows(block, &shown);
                out.records(format, &shown, &rows, &objects, false)
            }
            Format::Csv => {
                let (rows, _) = event_rows(block, columns);
                rows.iter()
                    .try_for_each(|row| out.stream_row(&mut csv, columns, row))
            }
            Format::Json | Format::Ndjson => {
                let (_, objects) = event_rows(block, columns);
                objects.iter().enumerate().try_for_each(|(index, object)| {
                    out.next_object(format, printed + index, object)
                })
            }
        }
    };
    let (limit, mut read) = (query.limit.unwrap_or(usize::MAX), 0);
    let one_more = EventsQuery {
        limit: Some(one_beyond(limit)),
        ..query.clone()
    };
    query::events_each(store.conn(), &one_more, |event| -> anyhow::Result<()> {
        read += 1;
        if read > limit {
            return Ok(());
        }
        Ok(blocks.push(event, |block, before| print(out, block, before))?)
    })?;
    // An empty last block prints nothing but a table's header.
    let printed = blocks.finish(|block, before| print(out, block, before))?;
    match format {
        Format::Csv => out.stream_end(&csv, columns)?,
        Format::Json | Format::Ndjson => out.end_objects(format, printed)?,
        Format::Table => {}
    }
    Ok((printed, read > limit))
}

/// The events as JSON objects, and as rows of `columns`.
fn event_rows(events: &[EventRecord], columns: &[String]) -> (Vec<Vec<Value>>, Vec<Value>) {
    let objects: Vec<Value> = events
        .iter()
        .map(|e| serde_json::to_value(e).unwrap_or(Value::Null))
        .collect();
    let rows = objects
        .iter()
        .map(|o| columns.iter().map(|c| output::pick(o, c)).collect())
        .collect();
    (rows, objects)
}

/// The types `--type name` lists: `name` in lower case when that is one of Protocol's
/// 15 types or a backfill type (`MESSAGE.CREATED`), as `--outcome` and resource names
/// are taken in any case (it listed nothing: an operator probe), and `name` as given,
/// as other types are logged (`Contact.Created`, logged `unsupported`, could not be
/// listed: a probe).
fn known_type_in_any_case(name: String) -> Vec<String> {
    let lower = name.to_ascii_lowercase();
    if lower != name && is_known_type(&lower) {
        vec![lower, name]
    } else {
        vec![name]
    }
}

/// Whether `name` is one of Protocol's 15 event types or a `<resource>.backfill` type.
fn is_known_type(name: &str) -> bool {
    name.parse::<EventType>().is_ok()
        || Resource::ALL
            .into_iter()
            .any(|r| protocol_mirror::apply::backfill_event_type(r) == name)
}

/// For a `--type` that is none of the 15 documented types, a note saying so and the
/// nearest one (a typo, or a plural, otherwise listed nothing without a word). Other
/// types are valid filters: they are logged as they came, as `unsupported`.
fn unknown_type_note(name: &str) -> Option<String> {
    if is_known_type(name) {
        return None;
    }
    let backfill = Resource::ALL.map(protocol_mirror::apply::backfill_event_type);
    let nearest = EventType::all()
        .map(|t| t.to_string())
        .chain(backfill)
        .min_by_key(|t| strsim::levenshtein(&name.to_lowercase(), t))?;
    let guess = if strsim::levenshtein(&name.to_lowercase(), &nearest) <= 3 {
        format!(" (did you mean `{nearest}`?)")
    } else {
        String::new()
    };
    let backfill_types = if name.contains("backfill") {
        " nor `<resource>.backfill` (resource singular)"
    } else {
        ""
    };
    Some(format!(
        "no events of type `{name}`, which is not one of Protocol's 15 event \
         types{backfill_types}{guess}; events of other types are listed under the type \
         they came with"
    ))
}

/// How many logged events `events --follow` reads at a time (fewer when filtered).
const FOLLOW_STEP: i64 = 1000;

/// The ranges of sequence numbers, `(after, until]`, in which `events --follow` reads
/// what the log got after `last` up to `head`: in order, each of at most
/// [`FOLLOW_STEP`] events. (Sequence numbers commit in order: each is chosen inside
/// its writer's transaction, and SQLite has one writer at a time.)
fn follow_steps(mut last: i64, head: i64) -> impl Iterator<Item = (i64, i64)> {
    std::iter::from_fn(move || {
        (last < head).then(|| {
            let step = (last, head.min(last.saturating_add(FOLLOW_STEP)));
            last = step.1;
            step
        })
    })
}

/// Where there is no SIGTERM (off unix), what `events --follow` waits on in its place:
/// nothing, ever (Ctrl-C alone ends the following there).
#[cfg(not(unix))]
struct NoTerminate;

#[cfg(not(unix))]
impl NoTerminate {
    async fn recv(&mut self) -> Option<()> {
        std::future::pending().await
    }
}

pub(crate) fn events(db: &Path, args: EventsArgs) -> anyhow::Result<ExitCode> {
    // Set when the follower waited for the database: a signal then may have come
    // before the follow loop's own handlers.
    let mut interrupt = None;
    let store = if args.follow {
        match open_when_made(db, &mut interrupt)? {
            Some(store) => store,
            None => return Ok(ExitCode::SUCCESS),
        }
    } else {
        // The log of a replica that lost some other table is read all the same.
        Store::open_to_salvage(db)?
    };
    note_other_names(db);
    // A database waited for came to be after following began: all of its log is new,
    // as `tail -F` prints the whole of a file that appears (an import building one
    // showed only the last `--limit` of its events: a probe).
    let waited = interrupt.is_some();
    if let Some(note) = compact_date_note(args.since) {
        super::note!("protocol-mirror: {note}");
    }
    let mut query = EventsQuery {
        event_types: args
            .event_type
            .map(known_type_in_any_case)
            .unwrap_or_default(),
        // In any case, as `--format`'s value (clap passes it on as given).
        outcome: args.outcome.map(|outcome| outcome.to_ascii_lowercase()),
        since: args.since,
        after_seq: None,
        until_seq: None,
        limit: Some(args.limit),
    };
    let columns: Vec<String> = event_columns(args.format.format)
        .iter()
        .map(|c| (*c).to_owned())
        .collect();
    let mut out = Out::new(args.format.format);
    let unknown_type_note = || {
        if let Some(note) = query.event_types.first().and_then(|t| unknown_type_note(t)) {
            super::note!("protocol-mirror: {}", super::escaped_in_one_line(&note));
        }
    };
    if !args.follow {
        let (listed, more) = print_events(&store, &query, &columns, args.format.format, &mut out)?;
        out.flush()?;
        note_at_limit(args.format.format, more, args.limit);
        if listed == 0 {
            unknown_type_note();
        }
        return Ok(ExitCode::SUCCESS);
    }
    // Ctrl-C and SIGTERM end the following as its normal end (exit 0), also while the
    // listing before it is printed (a slow reader of a long one): their default action
    // killed it there (exit 143; a review). A second one stops it at once.
    if interrupt.is_none() {
        interrupt = Some(super::interrupt::Interrupt::install());
    }
    // Where the listing starts: after the `--limit`th newest event (then read oldest
    // first, in steps, as what comes later is: it held all of them at once), at the
    // log's start for a database waited for, at its head for none (`--limit 0`, or no
    // match: it printed the whole log once). Read before it is printed: an event
    // logged in between is then followed, not lost.
    let head = query::last_seq(store.conn())?;
    let start = if waited {
        Some(0)
    } else {
        query::nth_newest_seq(store.conn(), &query, args.limit)?.map(|seq| seq - 1)
    };
    // The note is said if nothing is listed (also for a follower that waited, which
    // never said it: a review).
    let listed_nothing = match start {
        Some(_) if !waited => false,
        None if args.limit > 0 => true,
        // Waited for, or `--limit 0`: whether the log holds any match at all.
        _ => query::nth_newest_seq(store.conn(), &query, 1)?.is_none(),
    };
    if listed_nothing {
        unknown_type_note();
    }
    // Following: oldest first, like `tail -f`, one record per line.
    let format = match args.format.format {
        Format::Json => Format::Ndjson,
        other => other,
    };
    let mut last = start.unwrap_or(head);
    let mut aligned = AlignedLines::new(&columns, head);
    let mut print = |out: &mut Out, events: &[EventRecord], header: bool| -> anyhow::Result<()> {
        let (rows, objects) = event_rows(events, &columns);
        match format {
            Format::Table | Format::Csv => {
                if header && format == Format::Csv {
                    out.line(&columns.join(","))?;
                }
                // Followed lines are not a drawn table (its widths are not known in
                // advance): the column names head them, in columns as wide as what
                // came so far.
                let mut lines = Vec::new();
                if header && format == Format::Table {
                    lines.push(columns.to_vec());
                }
                for row in rows.iter().rev() {
                    let cells = row.iter().zip(&columns).map(|(v, c)| match (v, format) {
                        (Value::Number(n), Format::Table) if c.ends_with("_at") => {
                            n.as_i64().map(output::format_time).unwrap_or_default()
                        }
                        (Value::String(s), Format::Table) => output::shown_in_one_line(s),
                        (Value::String(s), _) => s.clone(),
                        (Value::Null, _) => String::new(),
                        (other, _) => other.to_string(),
                    });
                    if format == Format::Csv {
                        let mut csv = csv::WriterBuilder::new()
                            .has_headers(false)
                            .from_writer(Vec::new());
                        csv.write_record(cells)?;
                        out.line(String::from_utf8_lossy(&csv.into_inner()?).trim_end())?;
                    } else {
                        lines.push(cells.collect());
                    }
                }
                for line in aligned.lines(lines) {
                    out.line(&line)?;
                }
            }
            _ => {
                out.records(
                    format,
                    &[],
                    &[],
                    &objects.into_iter().rev().collect::<Vec<_>>(),
                    false,
                )?;
            }
        }
        out.flush()?;
        Ok(())
    };
    // The file followed: once its name leads elsewhere (removed, moved, or replaced by
    // another database), the following ends, saying so (it went on reading the old
    // file, and showed nothing of the new one: a probe).
    // (A path it cannot look at now, a folder made unreadable, is not taken for one
    // that leads elsewhere.)
    // So does one whose `-shm` (SQLite's index of the log, which the follower's
    // connection maps) was removed or replaced: the follower read an index no writer
    // updates, and showed nothing more, without a word (a probe removed it to restore
    // a backup). SQLite removes it only with the last connection, the follower's.
    let shm = protocol_mirror::beside(&store::through_links(db), "-shm");
    let identity_of = |path: &Path| store::file_identity(path).ok().map(|(id, _)| id);
    let (followed, followed_shm) = (identity_of(db), identity_of(&shm));
    let names =
        |path: &Path, followed: Option<(u64, u64)>| match (followed, store::file_identity(path)) {
            (None, _) => true,
            (Some(followed), Ok((identity, _))) => identity == followed,
            (Some(_), Err(error)) => error.kind() != std::io::ErrorKind::NotFound,
        };
    let still_followed = || names(db, followed) && names(&shm, followed_shm);
    let mut ending = false;
    // The header; the listing is the first pass of the following below.
    print(&mut out, &[], true)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        // Ctrl-C and SIGTERM both end the following, as its normal end (exit 0).
        let ctrl_c = tokio::signal::ctrl_c();
        tokio::pin!(ctrl_c);
        #[cfg(unix)]
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        #[cfg(not(unix))]
        let mut terminate = NoTerminate;
        let mut listing = true;
        loop {
            if !listing {
                tokio::select! {
                    _ = &mut ctrl_c => return Ok::<_, anyhow::Error>(()),
                    _ = terminate.recv() => return Ok(()),
                    () = tokio::time::sleep(Duration::from_millis(250)) => {}
                }
            }
            listing = false;
            if stdout_closed() || interrupt.as_ref().is_some_and(|i| i.is_set()) {
                return Ok(());
            }
            // What the file holds is printed once more, then the following ends: the
            // events committed just before it went are not lost.
            if ending {
                bail!(
                    "{} is no longer the database followed (removed, moved or replaced): \
                     run `events --follow` again to follow what is there now",
                    db.display()
                );
            }
            ending = !still_followed();
            // What came since, in steps: an import of a million was read whole at once.
            let head = query::last_seq(store.conn())?;
            // A log that went back is another (an older copy put over the file in place,
            // `cp backup.db m.db`): its new events reused numbers already shown, and
            // none of them was printed, without a word (a probe).
            if head < last {
                bail!(
                    "the event log of {} went back, from entry {last} to entry {head} (an \
                     older copy put over the database?): run `events --follow` again to \
                     follow what is there now",
                    db.display()
                );
            }
            query.limit = None;
            for (after, until) in follow_steps(last, head) {
                query.after_seq = Some(after);
                query.until_seq = Some(until);
                let new = query::events(store.conn(), &query)?;
                last = until;
                if !new.is_empty() {
                    print(&mut out, &new, false)?;
                }
                if stdout_closed() || interrupt.as_ref().is_some_and(|i| i.is_set()) {
                    return Ok(());
                }
            }
        }
    })?;
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn stats(db: &Path, format: Format) -> anyhow::Result<ExitCode> {
    let store = open(db)?;
    let stats = query::stats(store.conn(), Some(db))?;
    let mut out = Out::new(format);
    match format {
        Format::Json => out.records(format, &[], &[], &[stats], true)?,
        Format::Ndjson => out.records(format, &[], &[], &[stats], false)?,
        format => {
            let mut rows = Vec::new();
            flatten("", &stats, &mut rows);
            // Tables print times in UTC, as every other table does, and sizes also in
            // binary units; CSV keeps numbers.
            if format == Format::Table {
                for row in &mut rows {
                    let name = row[0].as_str().unwrap_or_default();
                    let shown = output::time_in_table(name, &row[1])
                        .or_else(|| output::size_in_table(name, &row[1]));
                    if let Some(shown) = shown {
                        row[1] = Value::String(shown);
                    }
                }
            }
            let columns = ["stat".to_owned(), "value".to_owned()];
            if format == Format::Table && rows.is_empty() {
                bail!("no statistics");
            }
            out.records(format, &columns, &rows, &[], false)?;
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// The lines of `events --follow`'s table, in columns: each as wide as its widest cell
/// so far (at least as wide as the documented types and outcomes, and a date and
/// time, so that they rarely grow), two spaces apart, the last one not padded. (Cells
/// joined by two spaces came out unaligned: a new user's probe.)
struct AlignedLines {
    widths: Vec<usize>,
}

impl AlignedLines {
    /// Columns for a log whose newest event is `head`: `seq` has room for ten times
    /// that, and for seven digits at least (it began as wide as its name, and moved
    /// every other column when the numbers passed it: a probe).
    fn new(columns: &[String], head: i64) -> AlignedLines {
        let widths = columns
            .iter()
            .map(|name| {
                let least = match name.as_str() {
                    "seq" => (head.max(1).to_string().len() + 1).max(7),
                    "received_at" => "2024-05-01 12:30:00".len(),
                    "type" => "conversation.created".len(),
                    "outcome" => "ignored_deleted".len(),
                    "id" | "object_id" => 16,
                    _ => 0,
                };
                least.max(output::shown_width(name))
            })
            .collect();
        AlignedLines { widths }
    }

    /// `lines` of cells as text, the columns widened first to hold them all.
    fn lines(&mut self, lines: Vec<Vec<String>>) -> Vec<String> {
        for line in &lines {
            for (width, cell) in self.widths.iter_mut().zip(line) {
                *width = (*width).max(output::shown_width(cell));
            }
        }
        lines
            .into_iter()
            .map(|cells| {
                let mut line = String::new();
                for (cell, width) in cells.iter().zip(&self.widths) {
                    line.push_str(cell);
                    let pad = width.saturating_sub(output::shown_width(cell));
                    line.extend(std::iter::repeat_n(' ', pad + 2));
                }
                line.trim_end().to_owned()
            })
            .collect()
    }
}

/// Whether standard output is a pipe whose reader has gone (`events --follow | head`
/// once `head` has its lines): following ends then, as `tail -f` does, instead of at
/// the next event it would have printed.
#[cfg(unix)]
fn stdout_closed() -> bool {
    use rustix::event::{PollFd, PollFlags, Timespec, poll};
    let stdout = std::io::stdout();
    let mut fds = [PollFd::new(&stdout, PollFlags::OUT)];
    let now = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    matches!(poll(&mut fds, Some(&now)), Ok(n) if n > 0)
        && fds[0].revents().intersects(PollFlags::ERR | PollFlags::HUP)
}

#[cfg(not(unix))]
fn stdout_closed() -> bool {
    false
}

/// Flattens nested objects into `a.b` rows.
fn flatten(prefix: &str, value: &Value, rows: &mut Vec<Vec<Value>>) {
    match value {
        Value::Object(map) => {
            for (key, value) in map {
                let name = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                flatten(&name, value, rows);
            }
        }
        other => rows.push(vec![Value::String(prefix.to_owned()), other.clone()]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// In a coloured search, marks of the text's own are no highlights: shown as `�`
    /// in an id; in a message that holds them, the snippet loses every mark.
    #[test]
    fn a_coloured_search_keeps_the_texts_own_marks_out() {
        let (on, off) = output::HIGHLIGHT;
        let mut row = vec![
            Value::from(format!("m{on}1")),
            Value::from("c"),
            Value::from(5),
            Value::from(format!("a {on}word{off} here")),
        ];
        without_own_highlights(&mut row, &serde_json::json!({"message": "a word here"}));
        assert_eq!(row[0], "m\u{fffd}1");
        assert_eq!(row[3], format!("a {on}word{off} here"), "the snippet's own");
        let text = format!("a word {off}here");
        without_own_highlights(&mut row, &serde_json::json!({ "message": text }));
        assert_eq!(row[3], "a word here");
    }

    #[test]
    fn flags_take_true_or_false_in_any_case() {
        let muted = flag_value("muted");
        for (text, value) in [("true", true), ("TRUE", true), ("False", false)] {
            assert_eq!(muted(text), Ok(value), "{text}");
        }
        assert!(muted("yes").is_err());
        assert!(
            muted("conversations")
                .unwrap_err()
                .contains("list conversations --muted")
        );
    }

    /// What came is read in steps of at most 1,000 logged events, each once, in order.
    #[test]
    fn follow_reads_in_bounded_steps() {
        let steps: Vec<(i64, i64)> = follow_steps(0, 2500).collect();
        assert_eq!(steps, [(0, 1000), (1000, 2000), (2000, 2500)]);
        assert_eq!(follow_steps(7, 8).collect::<Vec<_>>(), [(7, 8)]);
        assert_eq!(follow_steps(5, 5).count(), 0, "nothing new");
        assert_eq!(follow_steps(9, 5).count(), 0, "nothing new");
        let near_the_end: Vec<(i64, i64)> = follow_steps(i64::MAX - 1500, i64::MAX).collect();
        assert_eq!(near_the_end.len(), 2);
        assert_eq!(near_the_end[1].1, i64::MAX);
    }

    /// Tables print times as `2023-11-14 22:13:20`; `--since` only took Unix seconds,
    /// so a time could not be pasted back (found by a black-box probe).
    #[test]
    fn a_compact_date_as_since_gets_a_note() {
        let note = compact_date_note(Some(20_231_114)).unwrap();
        assert!(note.contains("1970-08-23 03:45:14"), "{note}");
        assert!(note.contains("write 2023-11-14"), "{note}");
        for quiet in [
            None,
            Some(1_700_000_000),
            Some(20_231_199),
            Some(19_691_231),
        ] {
            assert_eq!(compact_date_note(quiet), None, "{quiet:?}");
        }
    }

    /// `--since -5` is a time, not a flag `-5` (clap's tip for it, `-- -5`, did not
    /// work either: a black-box probe).
    #[test]
    fn since_takes_a_negative_number_after_a_space() {
        use clap::Parser;
        for args in [
            &["protocol-mirror", "list", "contacts", "--since", "-5"][..],
            &["protocol-mirror", "events", "--since", "-5"],
        ] {
            let parsed = crate::cli::Cli::try_parse_from(args);
            assert!(parsed.is_ok(), "{args:?}: {:?}", parsed.err());
        }
    }

    #[test]
    fn since_takes_seconds_and_the_times_tables_print() {
        assert_eq!(parse_time("1700000000"), Ok(1_700_000_000));
        assert_eq!(parse_time("-5"), Ok(-5));
        let printed = output::format_time(1_700_000_000);
        assert_eq!(parse_time(&printed), Ok(1_700_000_000), "{printed}");
        assert_eq!(parse_time("2023-11-14T22:13:20Z"), Ok(1_700_000_000));
        assert_eq!(parse_time("2023-11-14"), Ok(1_699_920_000));
        // A fraction starts the range at the next whole second.
        assert_eq!(parse_time("2023-11-14T22:13:20.5Z"), Ok(1_700_000_001));
        assert_eq!(parse_time("2023-11-14T22:13:20.000Z"), Ok(1_700_000_000));
        assert_eq!(parse_time("2023-11-14 22:13:20.25"), Ok(1_700_000_001));
        assert_eq!(parse_time("2023-11-14t22:13:20.5z"), Ok(1_700_000_001));
        // An offset names the UTC time it stands for (it was refused, and before
        // that ignored).
        assert_eq!(parse_time("2023-11-14T23:13:20+01:00"), Ok(1_700_000_000));
        assert_eq!(parse_time("2023-11-14T23:13:20.5+01:00"), Ok(1_700_000_001));
        assert_eq!(parse_time("2023-11-14 20:13:20-02:00"), Ok(1_700_000_000));
        assert_eq!(parse_time("2023-11-14T23:13:20+0100"), Ok(1_700_000_000));
        assert_eq!(parse_time("2023-11-14T23:13:20+01"), Ok(1_700_000_000));
        assert_eq!(parse_time("2023-11-14T22:13:20+00:00"), Ok(1_700_000_000));
        assert_eq!(parse_time("2023-11-15T03:43:20+05:30"), Ok(1_700_000_000));
        // Minutes without seconds, as `date` and git take them.
        assert_eq!(parse_time("2023-11-14 22:13"), Ok(1_700_000_000 - 20));
        assert_eq!(parse_time("2023-11-14T23:13+01:00"), Ok(1_700_000_000 - 20));
        for bad in [
            "2023-11-14T22:13:20.Z",
            "2023-11-14T22:13:20.5.5Z",
            "2023-11-14.5",
            "2023-11-14 22:13.5",
            "2023-11-14T22:13:20+24:00",
            "2023-11-14T22:13:20+1:00",
            "2023-11-14T22:13:20+01:60",
            "2023-11-14T22:13:20Z+01:00",
            "2023-11-14T+01:00",
            "2023-11-14+01:00",
        ] {
            assert!(parse_time(bad).is_err(), "{bad}");
        }
        for bad in [
            "yesterday",
            "2023-11-14 25:00:00",
            "2023-13-01",
            "",
            "5x",
            "-5x",
        ] {
            assert!(parse_time(bad).is_err(), "{bad}");
        }
    }

    /// A duration is counted back from now, in whole seconds; a number alone stays
    /// Unix seconds.
    #[test]
    fn since_takes_a_duration_back_from_now() {
        use std::time::{Duration, UNIX_EPOCH};
        let now = UNIX_EPOCH + Duration::from_millis(1_700_000_000_700);
        let at = |text: &str| parse_time_at(text, now);
        assert_eq!(at("90s"), Ok(1_699_999_910));
        assert_eq!(at("30m"), Ok(1_700_000_000 - 1_800));
        assert_eq!(at("2h"), Ok(1_700_000_000 - 7_200));
        assert_eq!(at("7d"), Ok(1_700_000_000 - 7 * 86_400));
        assert_eq!(at("1h 30m"), Ok(1_700_000_000 - 5_400));
        assert_eq!(at("2h ago"), at("2h"));
        assert_eq!(at(" 2hours "), at("2h"));
        assert_eq!(at("0s"), Ok(1_700_000_000));
        assert_eq!(at("1700000000"), Ok(1_700_000_000), "a number alone");
        // Before 1970, rounded down like every other second.
        assert_eq!(at("1700000001s"), Ok(-1));
        assert_eq!(at("1700000000s 700ms"), Ok(0));
        let too_far = at("584000000000y").unwrap_err();
        assert!(too_far.contains("before any time"), "{too_far}");
        let unknown = at("2x").unwrap_err();
        assert!(unknown.contains("duration back from now"), "{unknown}");
    }

    /// A value that starts with `-` but is no number reaches the parser, which names
    /// it whole (clap read `-5x` as a flag `-5` and said so).
    #[test]
    fn a_since_with_a_hyphen_is_named_whole() {
        use clap::Parser;
        let Err(error) = crate::cli::Cli::try_parse_from([
            "protocol-mirror",
            "list",
            "messages",
            "--since",
            "-5x",
        ]) else {
            panic!("-5x was taken");
        };
        let error = error.to_string();
        assert!(error.contains("'-5x'"), "{error}");
    }
}
