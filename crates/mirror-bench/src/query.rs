//! `mirror-bench query`: whole-process time of the CLI's read commands on a replica of
//! 1,000,000 messages, against the `sqlite3` shell running the equivalent SQL on the
//! same file.
//!
//! The replica is built once with `protocol-mirror import` of generated NDJSON and
//! kept in the cache folder (named by its size and the generator's version).

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::events::{Generator, Mix, REPLICA_SEED, SEARCH_WORD};
use crate::machine::{filesystem, table, thousands};

/// Bump when the generator changes, so cached replicas are rebuilt.
const REPLICA_VERSION: u32 = 1;

/// Options of the query benchmark.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct QueryArgs {
    /// Messages in the replica [default: 1,000,000; 20,000 with --quick].
    #[arg(long)]
    pub(crate) messages: Option<u64>,
    /// Timed runs of each command [default: 50; 5 with --quick].
    #[arg(long)]
    pub(crate) runs: Option<usize>,
    /// Build the replica again even if the cache has it.
    #[arg(long)]
    pub(crate) rebuild: bool,
}

struct Case {
    name: &'static str,
    args: Vec<String>,
    sql: Option<String>,
    target_ms: Option<f64>,
}

/// Runs the query benchmark and returns its Markdown report.
pub(crate) fn run(
    args: &QueryArgs,
    quick: bool,
    cache: &Path,
    mirror: &Path,
) -> anyhow::Result<String> {
    let messages = args
        .messages
        .unwrap_or(if quick { 20_000 } else { 1_000_000 });
    let runs = args.runs.unwrap_or(if quick { 5 } else { 50 }).max(1);
    let (db, built) = replica(cache, mirror, messages, args.rebuild)?;
    let sqlite3 = Command::new("sqlite3")
        .arg("-version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());

    let conn =
        rusqlite::Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let (conversation, in_conversation): (String, i64) = conn.query_row(
        "SELECT conversation_id, COUNT(*) FROM messages GROUP BY conversation_id ORDER BY 2 DESC LIMIT 1",
        [],
        |row| Ok((row.get(0)?, row.get(1)?)),
    )?;
    let stored: i64 = conn.query_row("SELECT COUNT(*) FROM messages", [], |row| row.get(0))?;
    let message: String = conn.query_row(
        "SELECT id FROM messages WHERE rowid >= (SELECT MAX(rowid) / 2 FROM messages) ORDER BY rowid LIMIT 1",
        [],
        |row| row.get(0),
    )?;
    let hits: i64 = conn.query_row(
        "SELECT COUNT(*) FROM messages_fts WHERE messages_fts MATCH ?1",
        [format!("\"{SEARCH_WORD}\"")],
        |row| row.get(0),
    )?;
    let events: i64 = conn.query_row("SELECT COUNT(*) FROM events", [], |row| row.get(0))?;
    drop(conn);
    let size = std::fs::metadata(&db).map_or(0, |m| m.len());

    let attachments = |id: &str| {
        format!(
            "(SELECT json_group_array(json(a.data)) FROM (SELECT data FROM attachments \
             WHERE message_id = {id} ORDER BY created_at, id) AS a)"
        )
    };
    // `list R --conversation C --limit 50 --format json`.
    let list_of = |resource: &str| -> Vec<String> {
        [
            "list",
            resource,
            "--conversation",
            &conversation,
            "--limit",
            "50",
            "--format",
            "json",
        ]
        .map(String::from)
        .to_vec()
    };
    let cases = vec![
        Case {
            name: "start-up (`--version`)",
            args: vec!["--version".into()],
            sql: Some("SELECT 1;".into()),
            target_ms: None,
        },
        Case {
            name: "`list messages --conversation C --limit 50 --format json`",
            args: list_of("messages"),
            sql: Some(format!(
                "SELECT m.id, m.data, {} FROM messages AS m WHERE conversation_id = '{conversation}' \
                 ORDER BY created_at DESC, rowid DESC LIMIT 51;",
                attachments("m.id")
            )),
            target_ms: Some(20.0),
        },
        Case {
            name: "`list attachments --conversation C --limit 50 --format json`",
            args: list_of("attachments"),
            sql: Some(format!(
                "SELECT id, data FROM attachments WHERE conversation_id = '{conversation}' \
                 ORDER BY created_at DESC, rowid DESC LIMIT 51;"
            )),
            target_ms: Some(20.0),
        },
        Case {
            name: "`get message ID`",
            args: ["get", "message", &message].map(String::from).to_vec(),
            sql: Some(format!(
                "SELECT data, {} FROM messages WHERE id = '{message}';",
                attachments(&format!("'{message}'"))
            )),
            target_ms: Some(10.0),
        },
        Case {
            name: "`search WORD`",
            args: vec!["search".into(), SEARCH_WORD.into()],
            // As `search` does it: ranked in the index, then the 20 hits read, each
            // with its snippet.
            sql: Some(format!(
                "WITH top AS (SELECT rowid AS r FROM messages_fts \
                 WHERE messages_fts MATCH '\"{SEARCH_WORD}\"' ORDER BY bm25(messages_fts), rowid LIMIT 20) \
                 SELECT hit.id, hit.data, (SELECT snippet(messages_fts, 0, '[', ']', '…', 12) \
                 FROM messages_fts WHERE messages_fts MATCH '\"{SEARCH_WORD}\"' AND rowid = top.r), {} \
                 FROM top JOIN messages AS hit ON hit.rowid = top.r;",
                attachments("hit.id")
            )),
            target_ms: Some(50.0),
        },
        Case {
            name: "`stats`",
            args: vec!["stats".into()],
            sql: Some(
                "SELECT COUNT(*) FROM contacts; SELECT COUNT(*) FROM conversations; \
                 SELECT COUNT(*) FROM messages; SELECT COUNT(*) FROM groups; \
                 SELECT COUNT(*) FROM attachments; SELECT COUNT(*) FROM group_members; \
                 SELECT resource, COUNT(*) FROM tombstones GROUP BY resource; \
                 SELECT COUNT(*) FROM events; \
                 SELECT COALESCE(SUM(duplicates), 0) FROM events WHERE duplicates > 0; \
                 SELECT (SELECT MIN(received_at) FROM events), \
                 (SELECT MAX(received_at) FROM events); \
                 SELECT outcome, COUNT(*) FROM events WHERE outcome <> 'applied' GROUP BY outcome;"
                    .into(),
            ),
            target_ms: None,
        },
    ];

    let mut rows = Vec::new();
    for case in &cases {
        eprintln!("query: {}...", case.name);
        let mut command = Command::new(mirror);
        command
            .arg("--db")
            .arg(&db)
            .args(&case.args)
            .env_remove("RUST_LOG")
            .env_remove("PROTOCOL_MIRROR_DB");
        let ours = time_command(&mut command, runs)
            .with_context(|| format!("timing protocol-mirror {}", case.args.join(" ")))?;
        let theirs = match (&case.sql, &sqlite3) {
            (Some(sql), Some(_)) => {
                let mut command = Command::new("sqlite3");
                command.arg("-readonly").arg("-json").arg(&db).arg(sql);
                Some(time_command(&mut command, runs).context("timing sqlite3")?)
            }
            _ => None,
        };
        let met = case.target_ms.map_or("-".into(), |target| {
            if ours.median_ms() < target {
                format!("< {target:.0} ms: yes")
            } else {
                format!("< {target:.0} ms: **no**")
            }
        });
        rows.push(vec![
            case.name.to_owned(),
            format!("{:.2}", ours.median_ms()),
            format!("{:.2}", ours.p90_ms()),
            theirs
                .as_ref()
                .map_or("-".into(), |t| format!("{:.2}", t.median_ms())),
            theirs
                .as_ref()
                .map_or("-".into(), |t| format!("{:.2}", t.p90_ms())),
            theirs.as_ref().map_or("-".into(), |t| {
                format!("{:.2}", ours.median_ms() / t.median_ms())
            }),
            met,
            thousands(ours.output_bytes as f64),
        ]);
    }

    let mut report = format!(
        "### Queries (whole process)\n\n\
         - replica: `{}` ({:.0} MiB, filesystem {}){}: {} messages, {} events in the log\n\
         - `C`: the busiest conversation ({} messages); `ID`: the message in the middle of the table; \
         `WORD`: `{SEARCH_WORD}`, in {} messages ({:.2}%)\n\
         - {runs} timed runs per command after one warm-up run (page cache warm), output to /dev/null; \
         baseline: {} running the equivalent SQL (`sqlite3 -readonly -json DB 'SQL'`, the same \
         statements the command runs, attachments included)\n\n",
        db.display(),
        size as f64 / 1024.0 / 1024.0,
        filesystem(&db),
        built.map_or_else(
            || " (cached)".to_owned(),
            |d| format!(
                " (built by `protocol-mirror import` in {:.0} s)",
                d.as_secs_f64()
            )
        ),
        thousands(stored as f64),
        thousands(events as f64),
        thousands(in_conversation as f64),
        thousands(hits as f64),
        100.0 * hits as f64 / stored.max(1) as f64,
        sqlite3.as_deref().map_or(
            "no sqlite3 shell (apt-get install -y sqlite3)".to_owned(),
            |v| {
                format!(
                    "the sqlite3 shell {}",
                    v.split_whitespace().next().unwrap_or(v)
                )
            }
        ),
    );
    report.push_str(&table(
        &[
            "command",
            "median ms",
            "p90 ms",
            "sqlite3 median ms",
            "sqlite3 p90 ms",
            "ratio",
            "target",
            "output bytes",
        ],
        &rows,
    ));
    report.push('\n');
    Ok(report)
}

/// The cached replica of `messages` messages, built if needed (and how long that took).
fn replica(
    cache: &Path,
    mirror: &Path,
    messages: u64,
    rebuild: bool,
) -> anyhow::Result<(PathBuf, Option<Duration>)> {
    std::fs::create_dir_all(cache).with_context(|| format!("cannot create {}", cache.display()))?;
    let db = cache.join(format!("replica-{messages}-v{REPLICA_VERSION}.db"));
    if db.exists() && !rebuild {
        // A replica cached by an older binary: bring it to this binary's schema.
        let status = Command::new(mirror)
            .arg("--db")
            .arg(&db)
            .arg("migrate")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .context("running protocol-mirror migrate")?;
        if !status.success() {
            bail!("protocol-mirror migrate failed on the cached replica with {status}");
        }
        return Ok((db, None));
    }
    let partial = cache.join(format!("replica-{messages}-v{REPLICA_VERSION}.partial.db"));
    let ndjson = cache.join(format!("replica-{messages}-v{REPLICA_VERSION}.ndjson"));
    for path in [&db, &partial] {
        crate::remove_database(path);
    }
    eprintln!(
        "query: generating {messages} messages into {}...",
        ndjson.display()
    );
    let mut generator = Generator::new(REPLICA_SEED, Mix::Replica);
    let mut out = BufWriter::with_capacity(1 << 20, std::fs::File::create(&ndjson)?);
    while generator.live_messages < messages as i64 {
        let (_, body) = generator.next_event();
        out.write_all(&body)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    drop(out);
    eprintln!("query: importing (protocol-mirror import)...");
    let started = Instant::now();
    let status = Command::new(mirror)
        .arg("--db")
        .arg(&partial)
        .arg("import")
        .arg(&ndjson)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .context("running protocol-mirror import")?;
    let took = started.elapsed();
    let _ = std::fs::remove_file(&ndjson);
    if !status.success() {
        bail!("protocol-mirror import failed with {status}");
    }
    std::fs::rename(&partial, &db)?;
    // What is left beside the name it was built under (its lock file).
    crate::remove_database(&partial);
    eprintln!("query: replica built in {:.0} s", took.as_secs_f64());
    Ok((db, Some(took)))
}

struct Timings {
    sorted: Vec<Duration>,
    output_bytes: usize,
}

impl Timings {
    fn quantile_ms(&self, q: f64) -> f64 {
        let i = ((self.sorted.len() - 1) as f64 * q).round() as usize;
        self.sorted[i].as_secs_f64() * 1000.0
    }

    fn median_ms(&self) -> f64 {
        self.quantile_ms(0.5)
    }

    fn p90_ms(&self) -> f64 {
        self.quantile_ms(0.9)
    }
}

/// One checked warm-up run (exit 0, some output), then `runs` timed runs of the
/// whole process, output to /dev/null.
fn time_command(command: &mut Command, runs: usize) -> anyhow::Result<Timings> {
    let warm = command.stdin(Stdio::null()).output()?;
    if !warm.status.success() || warm.stdout.is_empty() {
        bail!(
            "{:?} failed ({}): {}",
            command,
            warm.status,
            String::from_utf8_lossy(&warm.stderr).trim()
        );
    }
    let mut sorted = Vec::with_capacity(runs);
    for _ in 0..runs {
        command.stdout(Stdio::null()).stderr(Stdio::null());
        let started = Instant::now();
        let status = command.status()?;
        sorted.push(started.elapsed());
        if !status.success() {
            bail!("{command:?} failed ({status})");
        }
    }
    sorted.sort_unstable();
    Ok(Timings {
        sorted,
        output_bytes: warm.stdout.len(),
    })
}
