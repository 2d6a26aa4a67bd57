//! Import benchmark: N generated events (default 1,000,000) imported into a fresh file
//! database, against a raw baseline of plain prepared INSERTs measured in the same run.
//!
//! Run it (optimized) with
//!
//! ```text
//! cargo bench -p protocol-mirror --bench import
//! IMPORT_BENCH_EVENTS=20000 cargo bench -p protocol-mirror --bench import   # quick run
//! ```
//!
//! Environment:
//! - `IMPORT_BENCH_EVENTS`: how many events to generate (default 1,000,000).
//! - `IMPORT_BENCH_BATCH`: events per transaction for both runs (default: the default
//!   `ImportOptions::batch_size`), to see how commit size matters.
//! - `IMPORT_BENCH_DIR`: put the NDJSON file and the databases in this folder and keep
//!   them (default: a fresh temporary folder, removed at the end). The filesystem matters:
//!   every batch commit fsyncs the WAL (`synchronous=FULL`), which is free on tmpfs.
//!
//! What it does:
//! 1. Generates the events deterministically (xorshift PRNG, fixed seed), streaming them
//!    to `events.ndjson`: ~84% `message.created` (0.5-1 KiB each: 150-600 bytes of text, an embedded sender,
//!    some embedded attachments and reactions), plus contacts, 1:1 and group
//!    conversations, groups with members, attachments, updates, deletes (with cascades)
//!    and ~0.8% redeliveries; all 15 event types, 16-character alphanumeric ids.
//! 2. Runs `protocol_mirror::import::import` on `Store::open(fresh file)` with the
//!    default `ImportOptions`, in a child process (this binary re-executed with
//!    `IMPORT_BENCH_CHILD=import`), which reports its wall time and its own peak RSS
//!    (`VmHWM`).
//! 3. Runs the raw baseline in another child (`IMPORT_BENCH_CHILD=baseline`): a fresh
//!    database with the same schema (`Store::open`), and for each batch of the same
//!    size the rows are first extracted from the same NDJSON (untimed: the resource
//!    table's columns and `data` JSON, embedded attachments and group members,
//!    tombstones for deletes, the `events` and `event_bodies` rows), then only
//!    `BEGIN IMMEDIATE`, plain prepared INSERTs and `COMMIT` are timed: the rows, the
//!    message text into `messages_fts` (as the store does), `events`, `event_bodies`.
//!    Updates are `INSERT OR REPLACE` of the payload's columns; no reads, no apply
//!    logic.
//! 4. Prints a table: events, seconds, events/s, peak RSS, and the ratio.
//!
//! For profiling, the steps run alone: `IMPORT_BENCH_CHILD=generate <bench binary>
//! events.ndjson 20000`, then `IMPORT_BENCH_CHILD=import <bench binary> events.ndjson
//! out.db` (or `baseline`), where the bench binary is `target/release/deps/import-<hash>`.

use std::collections::{HashSet, VecDeque};
use std::fmt::Write as _;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use protocol_mirror::import::{ImportOptions, import};
use protocol_mirror::store::Store;
use protocol_types::{
    Action, Attachment, Contact, Conversation, EmbeddedContact, Event, Field, Group, Object,
    Payload, Timestamp,
};
use rusqlite::types::Value as Sql;

/// The allocator the `protocol-mirror` binary uses (see `src/main.rs`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const DEFAULT_EVENTS: u64 = 1_000_000;
const CHILD_ENV: &str = "IMPORT_BENCH_CHILD";
const SEED: u64 = 0x5eed_1234_abcd_9876;
/// The length range of message text, in bytes: with the envelope, the embedded
/// sender and the other fields, a `message.created` line is 0.5-1 KiB, the size the
/// benchmarks issue names as realistic (and the size `mirror-bench` posts).
const MESSAGE_TEXT: (usize, usize) = (150, 600);
/// `received_at` of every event, so both children write the same values.
const RECEIVED_AT: i64 = 1_700_000_000;

fn main() {
    if let Ok(mode) = std::env::var(CHILD_ENV) {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let (ndjson, db) = match args.as_slice() {
            [ndjson, db, ..] => (Path::new(ndjson), Path::new(db)),
            _ => fail("child usage: IMPORT_BENCH_CHILD=import|baseline|generate <ndjson> <db|N>"),
        };
        match mode.as_str() {
            "import" => child_import(ndjson, db),
            "baseline" => child_baseline(ndjson, db),
            "generate" => {
                let n = args[1]
                    .parse()
                    .unwrap_or_else(|_| fail("generate <ndjson> <N>"));
                let generated = generate(ndjson, n).unwrap_or_else(|e| fail(&e.to_string()));
                println!("{}", generated.mix());
            }
            other => fail(&format!("unknown {CHILD_ENV} mode `{other}`")),
        }
        return;
    }
    parent();
}

fn fail(message: &str) -> ! {
    eprintln!("import bench: {message}");
    std::process::exit(2);
}

// ---------------------------------------------------------------------------------
// The parent: generate, run both children, print the table.

fn parent() {
    let events = match std::env::var("IMPORT_BENCH_EVENTS") {
        Ok(n) => n
            .replace('_', "")
            .parse::<u64>()
            .unwrap_or_else(|_| fail("IMPORT_BENCH_EVENTS must be a positive integer")),
        Err(_) => DEFAULT_EVENTS,
    };
    let (_temp, dir) = match std::env::var_os("IMPORT_BENCH_DIR") {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            std::fs::create_dir_all(&dir).unwrap_or_else(|e| fail(&e.to_string()));
            (None, dir)
        }
        None => {
            let temp = tempfile::Builder::new()
                .prefix("import-bench-")
                .tempdir()
                .unwrap_or_else(|e| fail(&format!("cannot create a temp dir: {e}")));
            let dir = temp.path().to_owned();
            (Some(temp), dir)
        }
    };
    let ndjson = dir.join("events.ndjson");
    let import_db = dir.join("import.db");
    let baseline_db = dir.join("baseline.db");
    for db in [&import_db, &baseline_db] {
        for suffix in ["", "-wal", "-shm"] {
            let mut path = db.as_os_str().to_owned();
            path.push(suffix);
            let _ = std::fs::remove_file(PathBuf::from(path));
        }
    }

    println!(
        "import bench: {events} events, batches of {}, in {} ({})",
        batch_size(),
        dir.display(),
        filesystem_of(&dir)
    );
    let started = Instant::now();
    let generated = generate(&ndjson, events).unwrap_or_else(|e| fail(&e.to_string()));
    println!(
        "generated {} events, {:.1} MiB, in {:.1} s",
        generated.events,
        generated.bytes as f64 / MIB,
        started.elapsed().as_secs_f64()
    );
    println!("  mix: {}", generated.mix());

    // The machine may be shared: the load says how much to trust wall times.
    println!("load average before the runs: {}", load_average());
    let import = run_child("import", &ndjson, &import_db);
    let baseline = run_child("baseline", &ndjson, &baseline_db);
    println!("load average after the runs: {}", load_average());

    println!();
    println!(
        "{:<10} {:>10} {:>9} {:>10} {:>13} {:>9}",
        "run", "events", "seconds", "events/s", "peak RSS MiB", "db MiB"
    );
    for (name, r) in [("import", &import), ("baseline", &baseline)] {
        println!(
            "{:<10} {:>10} {:>9.2} {:>10.0} {:>13.1} {:>9.1}",
            name,
            r.events,
            r.secs,
            r.rate(),
            r.hwm_kib as f64 / 1024.0,
            r.db_bytes as f64 / MIB,
        );
    }
    let ratio = import.rate() / baseline.rate();
    println!("ratio import/baseline: {ratio:.2}");
    println!("import:   {}", import.usage);
    println!("baseline: {}", baseline.usage);
    println!("import outcomes: {}", import.detail);
    println!(
        "targets: >= 50000 events/s: {}; peak RSS < 256 MiB: {}; >= 0.5x baseline: {}",
        verdict(import.rate() >= 50_000.0),
        verdict(import.hwm_kib < 256 * 1024),
        verdict(ratio >= 0.5),
    );
}

const MIB: f64 = 1024.0 * 1024.0;

fn verdict(ok: bool) -> &'static str {
    if ok { "ok" } else { "MISSED" }
}

/// What a child reported.
struct ChildResult {
    events: u64,
    secs: f64,
    hwm_kib: u64,
    db_bytes: u64,
    usage: String,
    detail: String,
}

impl ChildResult {
    fn rate(&self) -> f64 {
        self.events as f64 / self.secs
    }
}

fn run_child(mode: &str, ndjson: &Path, db: &Path) -> ChildResult {
    let exe = std::env::current_exe().unwrap_or_else(|e| fail(&e.to_string()));
    let output = Command::new(exe)
        .env(CHILD_ENV, mode)
        .arg(ndjson)
        .arg(db)
        .output()
        .unwrap_or_else(|e| fail(&format!("cannot start the {mode} child: {e}")));
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        fail(&format!(
            "the {mode} child failed ({}): {}{}",
            output.status,
            stdout,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .unwrap_or_else(|| fail(&format!("the {mode} child printed no result: {stdout}")));
    let field = |key: &str| -> &str {
        line.split(' ')
            .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
            .unwrap_or_else(|| fail(&format!("no {key} in `{line}`")))
    };
    let number = |key: &str| -> u64 { field(key).parse().unwrap_or(0) };
    ChildResult {
        events: number("events"),
        secs: field("secs").parse().unwrap_or(f64::NAN),
        hwm_kib: number("hwm_kib"),
        db_bytes: number("db_bytes"),
        usage: line.split(" | ").nth(1).unwrap_or("").to_owned(),
        detail: line.split(" | ").nth(2).unwrap_or("").to_owned(),
    }
}

/// The 1, 5 and 15 minute load averages (from /proc/loadavg).
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split(' ').take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// The filesystem type and mount point of the mount holding `dir` (from /proc/mounts).
fn filesystem_of(dir: &Path) -> String {
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_owned());
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") else {
        return "filesystem unknown".into();
    };
    mounts
        .lines()
        .filter_map(|line| {
            let mut parts = line.split(' ');
            let device = parts.next()?;
            let mount = parts.next()?.replace("\\040", " ");
            let fstype = parts.next()?;
            dir.starts_with(&mount)
                .then(|| (mount.len(), format!("{fstype}: {device} on {mount}")))
        })
        .max_by_key(|(len, _)| *len)
        .map_or_else(|| "filesystem unknown".into(), |(_, fs)| fs)
}

// ---------------------------------------------------------------------------------
// The children.

/// This process's peak resident set size, in KiB.
fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status.lines().find_map(|line| {
                line.strip_prefix("VmHWM:")?
                    .trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse()
                    .ok()
            })
        })
        .unwrap_or(0)
}

/// This process's CPU seconds (user, system) and bytes written (`wchar`: through
/// write calls, page cache included), for the report.
fn cpu_and_io() -> String {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which is in parentheses): utime and stime are
    // the 12th and 13th (in clock ticks, 100 per second on Linux).
    let after = stat.rsplit_once(") ").map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split(' ').collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let io = std::fs::read_to_string("/proc/self/io").unwrap_or_default();
    let wchar = io
        .lines()
        .find_map(|l| l.strip_prefix("wchar: "))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0);
    format!(
        "user={:.1}s sys={:.1}s written={:.0}MiB",
        ticks(11) / 100.0,
        ticks(12) / 100.0,
        wchar as f64 / MIB
    )
}

fn db_bytes(db: &Path) -> u64 {
    ["", "-wal"]
        .iter()
        .map(|suffix| {
            let mut path = db.as_os_str().to_owned();
            path.push(suffix);
            std::fs::metadata(PathBuf::from(path)).map_or(0, |m| m.len())
        })
        .sum()
}

fn open_input(ndjson: &Path) -> BufReader<File> {
    let file = File::open(ndjson).unwrap_or_else(|e| fail(&format!("{}: {e}", ndjson.display())));
    BufReader::with_capacity(1 << 16, file)
}

fn child_import(ndjson: &Path, db: &Path) {
    let mut store = Store::open(db).unwrap_or_else(|e| fail(&e.to_string()));
    let input = open_input(ndjson);
    let options = ImportOptions {
        batch_size: batch_size(),
        received_at: RECEIVED_AT,
        ..ImportOptions::default()
    };
    let started = Instant::now();
    let summary =
        import(&mut store, input, options, |_| {}).unwrap_or_else(|e| fail(&e.to_string()));
    let secs = started.elapsed().as_secs_f64();
    let hwm = peak_rss_kib();
    let usage = cpu_and_io();
    store.close().unwrap_or_else(|e| fail(&e.to_string()));
    let mut detail = String::new();
    for (outcome, n) in &summary.outcomes {
        let _ = write!(detail, "{outcome}={n} ");
    }
    let _ = write!(
        detail,
        "duplicates={} malformed={}",
        summary.duplicates, summary.malformed
    );
    println!(
        "RESULT events={} secs={secs:.6} hwm_kib={hwm} db_bytes={} | {usage} | {detail}",
        summary.events() + summary.malformed,
        db_bytes(db),
    );
}

/// Events per transaction: `ImportOptions`' default, unless `IMPORT_BENCH_BATCH` says
/// otherwise (an experiment knob: both runs use the same size).
fn batch_size() -> usize {
    std::env::var("IMPORT_BENCH_BATCH")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(ImportOptions::default().batch_size)
        .max(1)
}

/// The baseline's statements, by index into [`BASELINE_SQL`].
#[derive(Clone, Copy)]
enum Stmt {
    Contact,
    Conversation,
    Message,
    MessageText,
    Group,
    Attachment,
    EmbeddedAttachment,
    Member,
    Tombstone,
    Event,
    Body,
}

const BASELINE_SQL: [&str; 11] = [
    "INSERT OR REPLACE INTO contacts (id, username, phone_number, avatar_url, display_name,
         conversation_id, last_active_at, created_at, seq, data)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    "INSERT OR REPLACE INTO conversations (id, contact_id, group_id, pinned_message_id,
         is_pinned, is_muted, last_active_at, last_opened_at, created_at, archived_at, seq, data)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
    "INSERT OR REPLACE INTO messages (id, conversation_id, sender_id, read_at, created_at,
         updated_at, seq, data)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    "INSERT INTO messages_fts (rowid, message) VALUES (last_insert_rowid(), ?1)",
    "INSERT OR REPLACE INTO groups (id, name, description, avatar_url, conversation_id,
         created_at, archived_at, seq, data)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    "INSERT OR REPLACE INTO attachments (id, message_id, filename, file_url, file_type,
         file_size, created_at, seq, data)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    "INSERT OR IGNORE INTO attachments (id, message_id, filename, file_url, file_type,
         file_size, created_at, seq, data)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    "INSERT OR REPLACE INTO group_members (group_id, position, contact_id, username, data)
     VALUES (?1, ?2, ?3, ?4, ?5)",
    "INSERT OR IGNORE INTO tombstones (resource, id, seq) VALUES (?1, ?2, ?3)",
    "INSERT INTO events (seq, event_id, type, object_id, received_at, outcome, error,
         cascaded, cascade)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    "INSERT INTO event_bodies (seq, body) VALUES (?1, ?2)",
];

/// One pre-extracted INSERT.
struct Row {
    stmt: Stmt,
    values: Vec<Sql>,
}

fn child_baseline(ndjson: &Path, db: &Path) {
    let mut store = Store::open(db).unwrap_or_else(|e| fail(&e.to_string()));
    // The page cache `import` runs with.
    store
        .set_cache_kib(protocol_mirror::import::IMPORT_CACHE_KIB)
        .unwrap_or_else(|e| fail(&e.to_string()));
    let batch_size = batch_size();
    let conn = store.conn_mut();
    let mut stmts: Vec<rusqlite::Statement<'_>> = BASELINE_SQL
        .iter()
        .map(|sql| conn.prepare(sql).unwrap_or_else(|e| fail(&e.to_string())))
        .collect();
    let mut input = open_input(ndjson);
    let mut line = Vec::with_capacity(4096);
    let mut seen: HashSet<u64> = HashSet::new();
    let mut rows: Vec<Row> = Vec::new();
    let mut seq = 0i64;
    let mut events = 0u64;
    let mut timed = Duration::ZERO;
    let mut at_end = false;
    while !at_end {
        // Untimed: read and extract one batch.
        rows.clear();
        let mut in_batch = 0;
        while in_batch < batch_size {
            line.clear();
            let n = input
                .read_until(b'\n', &mut line)
                .unwrap_or_else(|e| fail(&e.to_string()));
            if n == 0 {
                at_end = true;
                break;
            }
            let body = line.trim_ascii();
            if body.is_empty() {
                continue;
            }
            in_batch += 1;
            events += 1;
            extract(body, &mut seen, &mut seq, &mut rows);
        }
        // Timed: the plain INSERTs of the batch, in one transaction.
        let started = Instant::now();
        conn.execute_batch("BEGIN IMMEDIATE")
            .unwrap_or_else(|e| fail(&e.to_string()));
        for row in &rows {
            stmts[row.stmt as usize]
                .execute(rusqlite::params_from_iter(row.values.iter()))
                .unwrap_or_else(|e| fail(&format!("baseline insert: {e}")));
        }
        conn.execute_batch("COMMIT")
            .unwrap_or_else(|e| fail(&e.to_string()));
        timed += started.elapsed();
    }
    let hwm = peak_rss_kib();
    let usage = cpu_and_io();
    stmts.clear();
    drop(stmts);
    store.close().unwrap_or_else(|e| fail(&e.to_string()));
    println!(
        "RESULT events={events} secs={:.6} hwm_kib={hwm} db_bytes={} | {usage} (with extraction) | logged={seq}",
        timed.as_secs_f64(),
        db_bytes(db),
    );
}

fn text(field: &Field<String>) -> Sql {
    field.value().map_or(Sql::Null, |s| Sql::Text(s.clone()))
}

fn time(field: &Field<Timestamp>) -> Sql {
    field.value().map_or(Sql::Null, |t| Sql::Integer(t.0))
}

fn boolean(field: &Field<bool>) -> Sql {
    field
        .value()
        .map_or(Sql::Null, |b| Sql::Integer(i64::from(*b)))
}

fn json(mut object: Object, emptied: &str) -> Sql {
    if let Some(value) = object.get_mut(emptied) {
        *value = serde_json::Value::Array(Vec::new());
    }
    Sql::Text(serde_json::Value::Object(object).to_string())
}

fn attachment_row(stmt: Stmt, a: &Attachment, message_id: Sql, seq: i64) -> Row {
    Row {
        stmt,
        values: vec![
            Sql::Text(a.id.clone()),
            message_id,
            text(&a.filename),
            text(&a.file_url),
            text(&a.file_type),
            a.file_size.value().map_or(Sql::Null, |n| Sql::Integer(*n)),
            time(&a.created_at),
            Sql::Integer(seq),
            json(a.to_object(), ""),
        ],
    }
}

/// The rows the store would write for one event (as if every event applied).
fn extract(body: &[u8], seen: &mut HashSet<u64>, seq: &mut i64, rows: &mut Vec<Row>) {
    let event = Event::from_slice(body).unwrap_or_else(|e| fail(&format!("bad event: {e}")));
    if !seen.insert(hash(&event.id)) {
        return; // a redelivery: the engine only counts it
    }
    *seq += 1;
    let seq = *seq;
    let Some(event_type) = event.event_type() else {
        fail("the generator writes known types only")
    };
    let resource = event_type.resource;
    let id = event.payload.id().to_owned();
    if event_type.action == Action::Deleted {
        rows.push(Row {
            stmt: Stmt::Tombstone,
            values: vec![
                Sql::Text(resource.as_str().into()),
                Sql::Text(id.clone()),
                Sql::Integer(seq),
            ],
        });
    } else {
        match &event.payload {
            Payload::Contact(c) => rows.push(contact_row(c, seq)),
            Payload::Conversation(c) => rows.push(conversation_row(c, seq)),
            Payload::Message(m) => {
                rows.push(Row {
                    stmt: Stmt::Message,
                    values: vec![
                        Sql::Text(m.id.clone()),
                        text(&m.conversation_id),
                        m.contact
                            .value()
                            .map_or(Sql::Null, |c: &EmbeddedContact| text(&c.id)),
                        time(&m.read_at),
                        time(&m.created_at),
                        time(&m.updated_at),
                        Sql::Integer(seq),
                        json(m.to_object(), "attachments"),
                    ],
                });
                if let Some(text) = m.message.value() {
                    rows.push(Row {
                        stmt: Stmt::MessageText,
                        values: vec![Sql::Text(text.clone())],
                    });
                }
                for a in m.attachments.value().into_iter().flatten() {
                    let row =
                        attachment_row(Stmt::EmbeddedAttachment, a, Sql::Text(m.id.clone()), seq);
                    rows.push(row);
                }
            }
            Payload::Group(g) => {
                rows.push(group_row(g, seq));
                for (position, member) in g.contacts.value().into_iter().flatten().enumerate() {
                    rows.push(Row {
                        stmt: Stmt::Member,
                        values: vec![
                            Sql::Text(g.id.clone()),
                            Sql::Integer(position as i64),
                            text(&member.id),
                            text(&member.username),
                            json(member.to_object(), ""),
                        ],
                    });
                }
            }
            Payload::Attachment(a) => {
                rows.push(attachment_row(
                    Stmt::Attachment,
                    a,
                    text(&a.message_id),
                    seq,
                ));
            }
            Payload::Unknown(_) => {}
        }
    }
    rows.push(Row {
        stmt: Stmt::Event,
        values: vec![
            Sql::Integer(seq),
            Sql::Text(event.id.clone()),
            Sql::Text(event_type.to_string()),
            Sql::Text(id),
            Sql::Integer(RECEIVED_AT),
            Sql::Text("applied".into()),
            Sql::Null,
            Sql::Integer(0),
            Sql::Null,
        ],
    });
    let body = String::from_utf8(body.to_vec()).unwrap_or_else(|_| fail("body is not UTF-8"));
    rows.push(Row {
        stmt: Stmt::Body,
        values: vec![Sql::Integer(seq), Sql::Text(body)],
    });
}

fn contact_row(c: &Contact, seq: i64) -> Row {
    Row {
        stmt: Stmt::Contact,
        values: vec![
            Sql::Text(c.id.clone()),
            text(&c.username),
            text(&c.phone_number),
            text(&c.avatar_url),
            text(&c.display_name),
            text(&c.conversation_id),
            time(&c.last_active_at),
            time(&c.created_at),
            Sql::Integer(seq),
            json(c.to_object(), ""),
        ],
    }
}

fn conversation_row(c: &Conversation, seq: i64) -> Row {
    Row {
        stmt: Stmt::Conversation,
        values: vec![
            Sql::Text(c.id.clone()),
            text(&c.contact_id),
            text(&c.group_id),
            text(&c.pinned_message_id),
            boolean(&c.is_pinned),
            boolean(&c.is_muted),
            time(&c.last_active_at),
            time(&c.last_opened_at),
            time(&c.created_at),
            time(&c.archived_at),
            Sql::Integer(seq),
            json(c.to_object(), ""),
        ],
    }
}

fn group_row(g: &Group, seq: i64) -> Row {
    Row {
        stmt: Stmt::Group,
        values: vec![
            Sql::Text(g.id.clone()),
            text(&g.name),
            text(&g.description),
            text(&g.avatar_url),
            text(&g.conversation_id),
            time(&g.created_at),
            time(&g.archived_at),
            Sql::Integer(seq),
            json(g.to_object(), "contacts"),
        ],
    }
}

fn hash(id: &str) -> u64 {
    // FNV-1a: enough to spot redeliveries of 16-character random ids.
    id.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

// ---------------------------------------------------------------------------------
// The generator.

/// xorshift64*: small, fast, deterministic.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n` (n > 0).
    fn below(&mut self, n: usize) -> usize {
        (((self.next() >> 32) * n as u64) >> 32) as usize
    }

    /// `true` with probability `percent`/100.
    fn percent(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    fn range(&mut self, low: i64, high: i64) -> i64 {
        low + self.below((high - low + 1) as usize) as i64
    }

    /// A random 16-character alphanumeric id, like Protocol's.
    fn id(&mut self) -> String {
        const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
        (0..16)
            .map(|_| ALNUM[self.below(ALNUM.len())] as char)
            .collect()
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

const WORDS: &[&str] = &[
    "the",
    "be",
    "to",
    "of",
    "and",
    "a",
    "in",
    "that",
    "have",
    "I",
    "it",
    "for",
    "not",
    "on",
    "with",
    "he",
    "as",
    "you",
    "do",
    "at",
    "this",
    "but",
    "his",
    "by",
    "from",
    "they",
    "we",
    "say",
    "her",
    "she",
    "or",
    "an",
    "will",
    "my",
    "one",
    "all",
    "would",
    "there",
    "their",
    "what",
    "so",
    "up",
    "out",
    "if",
    "about",
    "who",
    "get",
    "which",
    "go",
    "me",
    "when",
    "make",
    "can",
    "like",
    "time",
    "no",
    "just",
    "him",
    "know",
    "take",
    "people",
    "into",
    "year",
    "your",
    "good",
    "some",
    "could",
    "them",
    "see",
    "other",
    "than",
    "then",
    "now",
    "look",
    "only",
    "come",
    "its",
    "over",
    "think",
    "also",
    "back",
    "after",
    "use",
    "two",
    "how",
    "our",
    "work",
    "first",
    "well",
    "way",
    "even",
    "new",
    "want",
    "because",
    "any",
    "these",
    "give",
    "day",
    "most",
    "us",
    "meeting",
    "hotel",
    "plaza",
    "Christmas",
    "Chicago",
    "New",
    "York",
    "flight",
    "airport",
    "tickets",
    "pizza",
    "cheese",
    "family",
    "house",
    "burglars",
    "paint",
    "cans",
    "basement",
    "furnace",
    "pigeons",
    "park",
    "toys",
    "store",
    "Kevin",
    "Kate",
    "Frank",
    "Buzz",
    "Marv",
    "Harry",
    "mom",
    "dad",
    "uncle",
    "aunt",
    "cousins",
    "tomorrow",
    "tonight",
    "morning",
    "evening",
    "invoice",
    "room",
    "service",
    "receipt",
    "photo",
    "video",
    "document",
    "schedule",
    "lunch",
    "dinner",
    "café",
    "déjà",
    "vu",
    "naïve",
    "résumé",
    "I’m",
    "you’re",
    "don’t",
    "can’t",
    "it’s",
];

const FIRST: &[&str] = &[
    "Kevin", "Kate", "Peter", "Frank", "Leslie", "Buzz", "Megan", "Linnie", "Jeff", "Fuller",
    "Rob", "Tracy", "Brooke", "Sondra", "Marv", "Harry", "Cedric", "Hector", "Gus", "Marley",
];
const LAST: &[&str] = &[
    "McCallister",
    "Polka",
    "Merchants",
    "Wet",
    "Bandit",
    "Concierge",
    "Plaza",
    "Smith",
    "Jones",
    "Rivera",
    "Nguyen",
    "Kowalski",
];
const FILES: &[(&str, &str)] = &[
    ("pdf", "application/pdf"),
    ("jpg", "image/jpeg"),
    ("png", "image/png"),
    ("mp4", "video/mp4"),
    ("txt", "text/plain"),
    (
        "docx",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    ),
];
const REACTIONS: &[&str] = &[
    "thumbs_up",
    "red_heart",
    "face_with_tears_of_joy",
    "red_angry_face",
];

/// A bounded collection of live objects: pushing past the cap forgets a random one
/// (it just stops being referenced), so generation runs in constant memory.
struct Pool<T> {
    items: Vec<T>,
    cap: usize,
}

impl<T> Pool<T> {
    fn new(cap: usize) -> Self {
        Pool {
            items: Vec::new(),
            cap,
        }
    }

    fn push(&mut self, rng: &mut Rng, item: T) {
        if self.items.len() < self.cap {
            self.items.push(item);
        } else {
            let i = rng.below(self.items.len());
            self.items[i] = item;
        }
    }

    fn pick(&self, rng: &mut Rng) -> Option<&T> {
        (!self.items.is_empty()).then(|| rng.pick(&self.items))
    }

    fn take(&mut self, rng: &mut Rng) -> Option<T> {
        (!self.items.is_empty()).then(|| {
            let i = rng.below(self.items.len());
            self.items.swap_remove(i)
        })
    }

    fn take_where(&mut self, f: impl Fn(&T) -> bool) -> Option<T> {
        let i = self.items.iter().position(f)?;
        Some(self.items.swap_remove(i))
    }
}

struct Person {
    id: String,
    username: String,
    phone: String,
    created_at: i64,
}

struct Conv {
    id: String,
    contact_id: String,
    group_id: Option<String>,
}

struct GroupRef {
    id: String,
    conversation_id: String,
}

struct MessageRef {
    id: String,
    conversation_id: String,
    created_at: i64,
}

struct AttachmentRef {
    id: String,
    message_id: String,
}

/// The 15 types plus redeliveries, with weights per 10,000 events.
const MIX: [(&str, usize); 16] = [
    ("message.created", 8_400),
    ("message.updated", 400),
    ("message.deleted", 100),
    ("attachment.created", 150),
    ("attachment.updated", 50),
    ("attachment.deleted", 30),
    ("contact.created", 200),
    ("contact.updated", 100),
    ("contact.deleted", 20),
    ("conversation.created", 250),
    ("conversation.updated", 100),
    ("conversation.deleted", 10),
    ("group.created", 50),
    ("group.updated", 50),
    ("group.deleted", 10),
    ("redelivery", 80),
];

struct Generated {
    events: u64,
    bytes: u64,
    counts: [u64; 16],
}

impl Generated {
    fn mix(&self) -> String {
        MIX.iter()
            .zip(self.counts)
            .map(|((name, _), n)| format!("{name}={n}"))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

struct Generator {
    rng: Rng,
    now: i64,
    people: Pool<Person>,
    /// Conversations announced by a contact or group, not created yet.
    pending: VecDeque<Conv>,
    conversations: Pool<Conv>,
    groups: Pool<GroupRef>,
    messages: Pool<MessageRef>,
    attachments: Pool<AttachmentRef>,
    /// Recent lines, for redeliveries.
    recent: VecDeque<String>,
    line: String,
}

fn generate(path: &Path, events: u64) -> std::io::Result<Generated> {
    let mut out = BufWriter::with_capacity(1 << 20, File::create(path)?);
    let mut g = Generator {
        rng: Rng(SEED),
        now: 1_600_000_000,
        people: Pool::new(16_384),
        pending: VecDeque::new(),
        conversations: Pool::new(16_384),
        groups: Pool::new(4_096),
        messages: Pool::new(16_384),
        attachments: Pool::new(8_192),
        recent: VecDeque::new(),
        line: String::with_capacity(4096),
    };
    let mut counts = [0u64; 16];
    let mut bytes = 0u64;
    let total: usize = MIX.iter().map(|(_, w)| w).sum();
    for n in 0..events {
        g.now += g.rng.range(0, 2);
        g.line.clear();
        // A few contacts, conversations and a group first, so messages have somewhere
        // to go; then the mix.
        let mut kind = if n < 60 {
            [6, 9, 6, 9, 12, 9][(n % 6) as usize]
        } else {
            let mut roll = g.rng.below(total);
            MIX.iter()
                .position(|(_, w)| {
                    let hit = roll < *w;
                    roll = roll.saturating_sub(*w);
                    hit
                })
                .unwrap_or(0)
        };
        if !g.write(kind) {
            // Nothing to update or delete yet: create a contact instead.
            kind = 6;
            g.line.clear();
            g.write(kind);
        }
        counts[kind] += 1;
        g.line.push('\n');
        out.write_all(g.line.as_bytes())?;
        bytes += g.line.len() as u64;
        if kind != 15 {
            if g.recent.len() == 64 {
                g.recent.pop_front();
            }
            g.recent.push_back(g.line.clone());
        }
    }
    out.flush()?;
    Ok(Generated {
        events,
        bytes,
        counts,
    })
}

impl Generator {
    /// Writes an event of kind `kind` (an index into [`MIX`]) to `self.line`; `false`
    /// when there is nothing to update or delete.
    fn write(&mut self, kind: usize) -> bool {
        match kind {
            0 => self.message_created(),
            1 => self.message_updated(),
            2 => self.message_deleted(),
            3 => self.attachment_created(),
            4 => self.attachment_updated(),
            5 => self.attachment_deleted(),
            6 => self.contact_created(),
            7 => self.contact_updated(),
            8 => self.contact_deleted(),
            9 => self.conversation_created(),
            10 => self.conversation_updated(),
            11 => self.conversation_deleted(),
            12 => self.group_created(),
            13 => self.group_updated(),
            14 => self.group_deleted(),
            _ => self.redelivery(),
        }
    }

    fn envelope(&mut self, event_type: &str) {
        let id = self.rng.id();
        let _ = write!(
            self.line,
            r#"{{"id": "{id}", "type": "{event_type}", "payload": {{"#
        );
    }

    fn close(&mut self) {
        self.line.push_str("}}");
    }

    fn nullable_time(&mut self, percent_set: usize) -> String {
        if self.rng.percent(percent_set) {
            (self.now - self.rng.range(0, 86_400)).to_string()
        } else {
            "null".into()
        }
    }

    fn embedded_contact(&mut self, p_index: usize) {
        let p = &self.people.items[p_index];
        let _ = write!(
            self.line,
            r#"{{"id": "{}", "username": "{}", "phone_number": "{}", "avatar_url": "https://assets.protocol.chat/avatars/{}.jpg", "last_active_at": {}, "created_at": {}}}"#,
            p.id, p.username, p.phone, p.username, self.now, p.created_at
        );
    }

    fn text(&mut self, low: usize, high: usize) {
        let len = low + self.rng.below(high - low + 1);
        let start = self.line.len();
        let mut sentence_start = true;
        while self.line.len() - start < len {
            let word = *self.rng.pick(WORDS);
            if sentence_start {
                let mut chars = word.chars();
                if let Some(first) = chars.next() {
                    self.line.extend(first.to_uppercase());
                    self.line.push_str(chars.as_str());
                }
                sentence_start = false;
            } else {
                self.line.push_str(word);
            }
            match self.rng.below(14) {
                0 => {
                    self.line.push_str(". ");
                    sentence_start = true;
                }
                1 => self.line.push_str(", "),
                2 if self.rng.percent(20) => {
                    self.line.push_str("? ");
                    sentence_start = true;
                }
                _ => self.line.push(' '),
            }
        }
        while self.line.ends_with(' ') {
            self.line.pop();
        }
    }

    /// An attachment's keys, without braces.
    fn attachment_fields(&mut self, id: &str, message_id: &str, created_at: i64) {
        let (ext, mime) = *self.rng.pick(FILES);
        let name = format!(
            "{}_{}_{}.{ext}",
            self.rng.pick(WORDS),
            self.rng.pick(WORDS),
            self.rng.below(1000)
        )
        .replace('’', "");
        let size = self.rng.range(1_000, 5_000_000);
        let _ = write!(
            self.line,
            r#""id": "{id}", "message_id": "{message_id}", "filename": "{name}", "file_url": "https://assets.protocol.chat/attachments/{id}/{name}", "file_type": "{mime}", "file_size": {size}, "created_at": {created_at}"#
        );
    }

    fn attachment(&mut self, id: &str, message_id: &str, created_at: i64) {
        self.line.push('{');
        self.attachment_fields(id, message_id, created_at);
        self.line.push('}');
    }

    fn message_created(&mut self) -> bool {
        let Some(conv) = self.conversations.pick(&mut self.rng) else {
            return false;
        };
        let conversation_id = conv.id.clone();
        if self.people.items.is_empty() {
            return false;
        }
        let sender = self.rng.below(self.people.items.len());
        let id = self.rng.id();
        let now = self.now;
        self.envelope("message.created");
        let _ = write!(
            self.line,
            r#""id": "{id}", "conversation_id": "{conversation_id}", "contact": "#
        );
        self.embedded_contact(sender);
        self.line.push_str(r#", "message": ""#);
        self.text(MESSAGE_TEXT.0, MESSAGE_TEXT.1);
        self.line.push_str(r#"", "reactions": ["#);
        if self.rng.percent(10) {
            let reaction = *self.rng.pick(REACTIONS);
            let who = self.rng.pick(FIRST);
            let _ = write!(self.line, r#"{{"{reaction}": ["{who}McCallister"]}}"#);
        }
        self.line.push_str(r#"], "attachments": ["#);
        if self.rng.percent(8) {
            let n = 1 + usize::from(self.rng.percent(25));
            for i in 0..n {
                if i > 0 {
                    self.line.push_str(", ");
                }
                let attachment_id = self.rng.id();
                self.attachment(&attachment_id, &id, now);
                self.attachments.push(
                    &mut self.rng,
                    AttachmentRef {
                        id: attachment_id,
                        message_id: id.clone(),
                    },
                );
            }
        }
        let read_at = self.nullable_time(30);
        let _ = write!(
            self.line,
            r#"], "read_at": {read_at}, "created_at": {now}, "updated_at": {now}"#
        );
        self.close();
        self.messages.push(
            &mut self.rng,
            MessageRef {
                id,
                conversation_id,
                created_at: now,
            },
        );
        true
    }

    fn message_updated(&mut self) -> bool {
        let Some(m) = self.messages.pick(&mut self.rng) else {
            return false;
        };
        let (id, conversation_id, created_at) =
            (m.id.clone(), m.conversation_id.clone(), m.created_at);
        let now = self.now;
        self.envelope("message.updated");
        let _ = write!(
            self.line,
            r#""id": "{id}", "conversation_id": "{conversation_id}""#
        );
        match self.rng.below(10) {
            0..=4 => {
                let _ = write!(self.line, r#", "read_at": {now}"#);
            }
            5..=7 => {
                self.line.push_str(r#", "message": ""#);
                self.text(MESSAGE_TEXT.0, MESSAGE_TEXT.1);
                self.line.push('"');
            }
            _ => {
                let reaction = *self.rng.pick(REACTIONS);
                let a = self.rng.pick(FIRST);
                let b = self.rng.pick(FIRST);
                let _ = write!(
                    self.line,
                    r#", "reactions": [{{"{reaction}": ["{a}McCallister", "{b}Polka"]}}]"#
                );
            }
        }
        let _ = write!(
            self.line,
            r#", "created_at": {created_at}, "updated_at": {now}"#
        );
        self.close();
        true
    }

    fn message_deleted(&mut self) -> bool {
        let Some(m) = self.messages.take(&mut self.rng) else {
            return false;
        };
        self.envelope("message.deleted");
        let _ = write!(
            self.line,
            r#""id": "{}", "conversation_id": "{}""#,
            m.id, m.conversation_id
        );
        self.close();
        true
    }

    fn attachment_created(&mut self) -> bool {
        let now = self.now;
        // Half re-send an embedded attachment (Protocol sends both), half are new.
        if self.rng.percent(50)
            && let Some(a) = self.attachments.pick(&mut self.rng)
        {
            let (id, message_id) = (a.id.clone(), a.message_id.clone());
            self.envelope("attachment.created");
            self.attachment_fields(&id, &message_id, now);
            self.close();
            return true;
        }
        let Some(m) = self.messages.pick(&mut self.rng) else {
            return false;
        };
        let message_id = m.id.clone();
        let id = self.rng.id();
        self.envelope("attachment.created");
        self.attachment_fields(&id, &message_id, now);
        self.close();
        self.attachments
            .push(&mut self.rng, AttachmentRef { id, message_id });
        true
    }

    fn attachment_updated(&mut self) -> bool {
        let Some(a) = self.attachments.pick(&mut self.rng) else {
            return false;
        };
        let id = a.id.clone();
        let word = self.rng.pick(WORDS).replace('’', "");
        self.envelope("attachment.updated");
        let _ = write!(
            self.line,
            r#""id": "{id}", "filename": "{word}_renamed.pdf""#
        );
        self.close();
        true
    }

    fn attachment_deleted(&mut self) -> bool {
        let Some(a) = self.attachments.take(&mut self.rng) else {
            return false;
        };
        self.envelope("attachment.deleted");
        let _ = write!(self.line, r#""id": "{}""#, a.id);
        self.close();
        true
    }

    fn contact_created(&mut self) -> bool {
        let id = self.rng.id();
        let conversation_id = self.rng.id();
        let username = format!(
            "{}{}{}",
            self.rng.pick(FIRST),
            self.rng.pick(LAST),
            self.rng.below(10_000)
        );
        let phone = format!(
            "1-{:03}-{:03}-{:04}",
            self.rng.range(200, 999),
            self.rng.range(200, 999),
            self.rng.below(10_000)
        );
        let now = self.now;
        let last_active = self.nullable_time(70);
        let display = if self.rng.percent(30) {
            format!("\"{}\"", self.rng.pick(FIRST))
        } else {
            "null".into()
        };
        self.envelope("contact.created");
        let _ = write!(
            self.line,
            r#""id": "{id}", "username": "{username}", "phone_number": "{phone}", "avatar_url": "https://assets.protocol.chat/avatars/{username}.jpg", "display_name": {display}, "conversation_id": "{conversation_id}", "last_active_at": {last_active}, "created_at": {now}"#
        );
        self.close();
        if self.pending.len() >= 4_096 {
            self.pending.pop_front();
        }
        self.pending.push_back(Conv {
            id: conversation_id,
            contact_id: id.clone(),
            group_id: None,
        });
        self.people.push(
            &mut self.rng,
            Person {
                id,
                username,
                phone,
                created_at: now,
            },
        );
        true
    }

    fn contact_updated(&mut self) -> bool {
        let Some(p) = self.people.pick(&mut self.rng) else {
            return false;
        };
        let id = p.id.clone();
        let now = self.now;
        let name = *self.rng.pick(FIRST);
        let last_active = self.nullable_time(90);
        self.envelope("contact.updated");
        if self.rng.percent(50) {
            let _ = write!(self.line, r#""id": "{id}", "display_name": "{name}""#);
        } else {
            let _ = write!(
                self.line,
                r#""id": "{id}", "last_active_at": {last_active}, "avatar_url": "https://assets.protocol.chat/avatars/{id}-{now}.jpg""#
            );
        }
        self.close();
        true
    }

    fn contact_deleted(&mut self) -> bool {
        let Some(p) = self.people.take(&mut self.rng) else {
            return false;
        };
        // Protocol deletes the 1:1 conversation too: forget it.
        let _ = self
            .conversations
            .take_where(|c| c.group_id.is_none() && c.contact_id == p.id);
        self.envelope("contact.deleted");
        let _ = write!(self.line, r#""id": "{}""#, p.id);
        self.close();
        true
    }

    fn conversation_created(&mut self) -> bool {
        let conv = match self.pending.pop_front() {
            Some(conv) => conv,
            None => {
                let Some(p) = self.people.pick(&mut self.rng) else {
                    return false;
                };
                let contact_id = p.id.clone();
                Conv {
                    id: self.rng.id(),
                    contact_id,
                    group_id: None,
                }
            }
        };
        let now = self.now;
        let group = conv
            .group_id
            .as_ref()
            .map_or("null".into(), |g| format!("\"{g}\""));
        let last_active = self.nullable_time(60);
        self.envelope("conversation.created");
        let _ = write!(
            self.line,
            r#""id": "{}", "contact_id": "{}", "group_id": {group}, "pinned_message_id": null, "is_pinned": false, "is_muted": false, "last_active_at": {last_active}, "last_opened_at": null, "created_at": {now}, "archived_at": null"#,
            conv.id, conv.contact_id
        );
        self.close();
        self.conversations.push(&mut self.rng, conv);
        true
    }

    fn conversation_updated(&mut self) -> bool {
        let Some(c) = self.conversations.pick(&mut self.rng) else {
            return false;
        };
        let id = c.id.clone();
        let now = self.now;
        let pinned = self
            .messages
            .pick(&mut self.rng)
            .map_or("null".into(), |m| format!("\"{}\"", m.id));
        let muted = self.rng.percent(50);
        self.envelope("conversation.updated");
        match self.rng.below(3) {
            0 => {
                let _ = write!(self.line, r#""id": "{id}", "is_muted": {muted}"#);
            }
            1 => {
                let _ = write!(
                    self.line,
                    r#""id": "{id}", "is_pinned": true, "pinned_message_id": {pinned}"#
                );
            }
            _ => {
                let _ = write!(
                    self.line,
                    r#""id": "{id}", "last_active_at": {now}, "last_opened_at": {now}"#
                );
            }
        }
        self.close();
        true
    }

    fn conversation_deleted(&mut self) -> bool {
        let Some(c) = self.conversations.take(&mut self.rng) else {
            return false;
        };
        self.envelope("conversation.deleted");
        let _ = write!(self.line, r#""id": "{}""#, c.id);
        self.close();
        true
    }

    fn members(&mut self) {
        self.line.push('[');
        let n = 2 + self.rng.below(7);
        for i in 0..n {
            if i > 0 {
                self.line.push_str(", ");
            }
            match self.people.pick(&mut self.rng) {
                Some(p) if !self.rng.percent(10) => {
                    let _ = write!(
                        self.line,
                        r#"{{"id": "{}", "username": "{}"}}"#,
                        p.id, p.username
                    );
                }
                _ => {
                    let who = self.rng.pick(FIRST);
                    let _ = write!(self.line, r#"{{"username": "{who}Guest"}}"#);
                }
            }
        }
        self.line.push(']');
    }

    fn group_created(&mut self) -> bool {
        let Some(p) = self.people.pick(&mut self.rng) else {
            return false;
        };
        let owner = p.id.clone();
        let id = self.rng.id();
        let conversation_id = self.rng.id();
        let name = format!("{} {}", self.rng.pick(LAST), self.rng.pick(WORDS));
        let now = self.now;
        self.envelope("group.created");
        let _ = write!(
            self.line,
            r#""id": "{id}", "name": "{name}", "description": null, "avatar_url": null, "conversation_id": "{conversation_id}", "contacts": "#
        );
        self.members();
        let _ = write!(self.line, r#", "created_at": {now}, "archived_at": null"#);
        self.close();
        if self.pending.len() >= 4_096 {
            self.pending.pop_front();
        }
        self.pending.push_back(Conv {
            id: conversation_id.clone(),
            contact_id: owner,
            group_id: Some(id.clone()),
        });
        self.groups.push(
            &mut self.rng,
            GroupRef {
                id,
                conversation_id,
            },
        );
        true
    }

    fn group_updated(&mut self) -> bool {
        let Some(group) = self.groups.pick(&mut self.rng) else {
            return false;
        };
        let id = group.id.clone();
        self.envelope("group.updated");
        let _ = write!(self.line, r#""id": "{id}", "#);
        if self.rng.percent(50) {
            self.line.push_str(r#""contacts": "#);
            self.members();
        } else {
            self.line.push_str(r#""description": ""#);
            self.text(20, 80);
            self.line.push('"');
        }
        self.close();
        true
    }

    fn group_deleted(&mut self) -> bool {
        let Some(group) = self.groups.take(&mut self.rng) else {
            return false;
        };
        let _ = self
            .conversations
            .take_where(|c| c.id == group.conversation_id);
        self.envelope("group.deleted");
        let _ = write!(self.line, r#""id": "{}""#, group.id);
        self.close();
        true
    }

    fn redelivery(&mut self) -> bool {
        if self.recent.is_empty() {
            return false;
        }
        let i = self.rng.below(self.recent.len());
        let line = &self.recent[i];
        self.line.push_str(line.trim_end());
        true
    }
}
