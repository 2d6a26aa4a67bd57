//! `mirror-bench ingest`: durable ingest over HTTP against the ceilings of the same run.
//!
//! 1. Generates distinct events of all 15 types and renders them as signed requests.
//! 2. Measures the disk's commit rate on the benchmark folder (one-row transactions,
//!    WAL, `synchronous=FULL`: what the daemon's writer pays per batch at the least).
//! 3. For each concurrency: the generator against an in-process no-op axum endpoint
//!    (same bodies, cycled), then against the release `protocol-mirror serve` on a
//!    fresh database in the benchmark folder (each event sent once). The daemon's RSS
//!    is sampled, its `/metrics` scraped for the commit batch sizes, and its event log
//!    checked afterwards: every 2xx is in the log, no event was a duplicate.
//! 4. With `wrk` installed: wrk against the no-op endpoint with the same requests,
//!    to show the generator is at least as fast.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::events::{Generator, Mix, STREAM_SEED, TYPES};
use crate::load::{self, Load, Outcome, Requests};
use crate::machine::{cpu_seconds, filesystem, load_average, rss_kib, table, thousands};

const SECRET: &str = "mirror-bench-webhook-secret";

/// Options of the ingest benchmark.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct IngestArgs {
    /// Concurrencies (connections) to run, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "16,64,256")]
    pub(crate) concurrency: Vec<usize>,
    /// Seconds per run (each concurrency, daemon and no-op alike) [default: 10; 1 with --quick].
    #[arg(long)]
    pub(crate) duration: Option<f64>,
    /// Worker threads of the load generator.
    #[arg(long, default_value_t = 2)]
    pub(crate) threads: usize,
    /// Worker threads of the in-process no-op server.
    #[arg(long, default_value_t = 2)]
    pub(crate) noop_threads: usize,
    /// Distinct events to render [default: 60,000 per second of run].
    #[arg(long)]
    pub(crate) events: Option<usize>,
    /// Extra arguments for `protocol-mirror serve` (e.g. --daemon-arg=--max-batch=2048).
    #[arg(long = "daemon-arg", allow_hyphen_values = true)]
    pub(crate) daemon_args: Vec<String>,
    /// Extra environment for the daemon, NAME=VALUE (e.g. RUST_LOG=warn).
    #[arg(long = "daemon-env")]
    pub(crate) daemon_env: Vec<String>,
    /// Skip the comparison with wrk.
    #[arg(long)]
    pub(crate) no_wrk: bool,
    /// Skip the no-op baseline (for quick tuning runs).
    #[arg(long, conflicts_with = "no_daemon")]
    pub(crate) no_baseline: bool,
    /// Skip the daemon: only the no-op baseline and wrk (to tune the generator).
    #[arg(long)]
    pub(crate) no_daemon: bool,
}

/// Runs the ingest benchmark and returns its Markdown report.
pub(crate) fn run(
    args: &IngestArgs,
    quick: bool,
    dir: &Path,
    mirror: &Path,
) -> anyhow::Result<String> {
    let duration = Duration::from_secs_f64(args.duration.unwrap_or(if quick { 1.0 } else { 10.0 }));
    let fs = filesystem(dir);
    let count = args
        .events
        .unwrap_or((60_000.0 * duration.as_secs_f64()).ceil() as usize);
    eprintln!("ingest: rendering {count} signed events...");
    let started = Instant::now();
    let (requests, by_type) = render(count);
    let requests = Arc::new(requests);
    eprintln!(
        "ingest: {} requests, mean body {:.0} B, in {:.1} s",
        requests.len(),
        requests.mean_body(),
        started.elapsed().as_secs_f64()
    );

    let mut report = String::new();
    report.push_str(&format!(
        "### Ingest over HTTP\n\n\
         - database folder: `{}`, filesystem: {fs}\n\
         - events: {} distinct, signed, all 15 types, mean body {:.0} B ({} `message.created`)\n\
         - each run: {:.0} s, closed loop, HTTP/1.1 keep-alive, generator on {} threads\n\n",
        dir.display(),
        thousands(requests.len() as f64),
        requests.mean_body(),
        thousands(by_type[6] as f64),
        duration.as_secs_f64(),
        args.threads,
    ));
    report.push_str(&format!(
        "Event types sent: {}.\n\n",
        TYPES
            .iter()
            .zip(by_type)
            .map(|(t, n)| format!("{t} {}", thousands(n as f64)))
            .collect::<Vec<_>>()
            .join(", ")
    ));

    let load_before = load_average();
    let commit = commit_rate(dir, if quick { 0.5 } else { 3.0 })?;
    report.push_str(&format!(
        "Disk commit rate on this filesystem (one-row transactions, WAL, `synchronous=FULL`): \
         **{} commits/s** (median {:.3} ms per commit). An empty `BEGIN; COMMIT;` writes \
         nothing and so never syncs: {} per second.\n\n",
        thousands(commit.rate),
        commit.median_ms,
        thousands(commit.empty_rate),
    ));

    let noop = if args.no_baseline {
        None
    } else {
        Some(Noop::start(args.noop_threads)?)
    };
    let mut rows = Vec::new();
    let mut notes = Vec::new();
    for &concurrency in &args.concurrency {
        let baseline = match &noop {
            Some(noop) => {
                eprintln!("ingest: no-op endpoint, concurrency {concurrency}...");
                let outcome = load::run(
                    Load {
                        addr: noop.addr,
                        concurrency,
                        duration,
                        threads: args.threads,
                        cycle: true,
                    },
                    requests.clone(),
                )?;
                Some(outcome)
            }
            None => None,
        };
        if args.no_daemon {
            if let Some(b) = baseline {
                rows.push(vec![
                    concurrency.to_string(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    thousands(b.rate()),
                    format!("{:.2} / {:.2}", b.ms(0.5), b.ms(0.99)),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    b.status_summary(),
                ]);
            }
            continue;
        }
        eprintln!("ingest: protocol-mirror serve, concurrency {concurrency}...");
        let db = dir.join(format!("ingest-c{concurrency}.db"));
        let daemon = run_daemon(args, mirror, &db, concurrency, duration, requests.clone())?;
        if daemon.outcome.exhausted {
            notes.push(format!(
                "- concurrency {concurrency}: all {} events were sent before {:.0} s; the rate is over {:.1} s (raise --events).",
                requests.len(),
                duration.as_secs_f64(),
                daemon.outcome.elapsed.as_secs_f64()
            ));
        }
        if daemon.outcome.duplicates > 0 || daemon.logged != daemon.outcome.ok() {
            notes.push(format!(
                "- concurrency {concurrency}: {} answered duplicate; {} logged events for {} 2xx answers.",
                daemon.outcome.duplicates,
                daemon.logged,
                daemon.outcome.ok()
            ));
        }
        let ok_rate = daemon.outcome.ok() as f64 / daemon.outcome.elapsed.as_secs_f64();
        rows.push(vec![
            concurrency.to_string(),
            thousands(ok_rate),
            format!("{:.2}", daemon.outcome.ms(0.5)),
            format!("{:.2}", daemon.outcome.ms(0.99)),
            baseline
                .as_ref()
                .map_or("-".into(), |b| thousands(b.rate())),
            baseline.as_ref().map_or("-".into(), |b| {
                format!("{:.2} / {:.2}", b.ms(0.5), b.ms(0.99))
            }),
            baseline
                .as_ref()
                .map_or("-".into(), |b| format!("{:.2}", ok_rate / b.rate())),
            format!("{:.0}", daemon.mean_batch),
            thousands(concurrency as f64 * commit.rate),
            format!(
                "{:.0} / {:.0}",
                daemon.cpu * 1e6 / daemon.outcome.ok().max(1) as f64,
                daemon.writer_cpu * 1e6 / daemon.outcome.ok().max(1) as f64
            ),
            format!("{:.1}", daemon.peak_rss_kib as f64 / 1024.0),
            daemon.outcome.status_summary(),
        ]);
        crate::remove_database(&db);
    }
    report.push_str(&table(
        &[
            "concurrency",
            "daemon events/s",
            "p50 ms",
            "p99 ms",
            "no-op req/s",
            "no-op p50 / p99 ms",
            "daemon / no-op",
            "mean batch",
            "disk ceiling (c × commits/s)",
            "daemon / writer CPU µs per event",
            "daemon peak RSS MiB",
            "daemon statuses",
        ],
        &rows,
    ));
    report.push_str(
        "\n`daemon events/s` counts 2xx answers (each after its batch committed with \
         `synchronous=FULL`); `mean batch` is `protocol_mirror_commit_batch_size` sum/count \
         from the daemon's /metrics; `disk ceiling` is the most a durable closed loop of `c` \
         requests can get from this disk (all of them in every commit); peak RSS is the daemon's `VmHWM`; CPU is user + system time from \
         `/proc` during the run, for the whole daemon and for its writer thread (1 / writer \
         CPU per event bounds the rate on any number of cores). After each run the \
         event log is checked: one row per 2xx answer, no redeliveries.\n",
    );
    report.push_str(&format!(
        "Load average (1 min) before the runs: {load_before}, after: {}.\n",
        load_average()
    ));
    for note in &notes {
        report.push_str(note);
        report.push('\n');
    }
    report.push('\n');

    if let Some(noop) = &noop
        && !args.no_wrk
    {
        if which("wrk") {
            report.push_str(&compare_wrk(noop.addr, duration, args)?);
        } else {
            report.push_str(
                "wrk is not installed (`apt-get install -y wrk`): no comparison of the generator with wrk.\n\n",
            );
        }
    }
    if let Some(noop) = noop {
        noop.stop();
    }
    Ok(report)
}

/// `count` events from a fixed seed, signed and rendered; and how many of each type.
fn render(count: usize) -> (Requests, [u64; 15]) {
    let mut generator = Generator::new(STREAM_SEED, Mix::Stream);
    let bodies: Vec<Vec<u8>> = (0..count).map(|_| generator.next_event().1).collect();
    let requests = Requests::render(bodies.iter().map(Vec::as_slice), SECRET);
    (requests, generator.by_type)
}

struct CommitRate {
    rate: f64,
    median_ms: f64,
    empty_rate: f64,
}

/// Commits per second of one-row transactions with WAL and `synchronous=FULL` in `dir`.
fn commit_rate(dir: &Path, seconds: f64) -> anyhow::Result<CommitRate> {
    let path = dir.join("commit-rate.db");
    let cleanup = || crate::remove_database(&path);
    cleanup();
    let result = (|| -> anyhow::Result<CommitRate> {
        let conn = rusqlite::Connection::open(&path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, x INTEGER)")?;
        let mut insert = conn.prepare("INSERT OR REPLACE INTO t (id, x) VALUES (1, ?1)")?;
        let mut times = Vec::new();
        let start = Instant::now();
        let mut i = 0i64;
        while start.elapsed().as_secs_f64() < seconds {
            let t = Instant::now();
            conn.execute_batch("BEGIN IMMEDIATE")?;
            insert.execute([i])?;
            conn.execute_batch("COMMIT")?;
            times.push(t.elapsed());
            i += 1;
        }
        let rate = times.len() as f64 / start.elapsed().as_secs_f64();
        times.sort_unstable();
        let median_ms = times[times.len() / 2].as_secs_f64() * 1000.0;
        let start = Instant::now();
        let mut empty = 0u64;
        while start.elapsed().as_secs_f64() < seconds.min(0.5) {
            conn.execute_batch("BEGIN IMMEDIATE; COMMIT;")?;
            empty += 1;
        }
        let empty_rate = empty as f64 / start.elapsed().as_secs_f64();
        Ok(CommitRate {
            rate,
            median_ms,
            empty_rate,
        })
    })();
    cleanup();
    result.context("measuring the commit rate")
}

/// The no-op baseline: an axum endpoint that reads the body and answers 200.
struct Noop {
    addr: SocketAddr,
    runtime: tokio::runtime::Runtime,
    stop: tokio::sync::oneshot::Sender<()>,
}

impl Noop {
    fn start(threads: usize) -> anyhow::Result<Noop> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .thread_name("mirror-bench-noop")
            .enable_all()
            .build()?;
        let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
        let addr = listener.local_addr()?;
        let app = axum::Router::new().route(
            "/webhooks",
            axum::routing::post(|_body: axum::body::Bytes| async { axum::http::StatusCode::OK }),
        );
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        runtime.spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
        });
        Ok(Noop {
            addr,
            runtime,
            stop,
        })
    }

    fn stop(self) {
        let _ = self.stop.send(());
        self.runtime.shutdown_timeout(Duration::from_secs(2));
    }
}

struct DaemonRun {
    outcome: Outcome,
    mean_batch: f64,
    peak_rss_kib: u64,
    logged: u64,
    /// CPU seconds the daemon used during the run, all threads.
    cpu: f64,
    /// CPU seconds its writer thread used during the run.
    writer_cpu: f64,
}

/// CPU seconds of each thread of `pid` that could be its writer: named
/// `protocol-mirror-writer`, which the kernel truncates to the main thread's
/// `protocol-mirror`, and not the main thread.
fn writer_candidates(pid: u32) -> std::collections::BTreeMap<String, f64> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Default::default();
    };
    tasks
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|task| {
            task.file_name().and_then(|n| n.to_str()) != Some(&pid.to_string())
                && std::fs::read_to_string(task.join("comm"))
                    .is_ok_and(|comm| comm.trim().starts_with("protocol-mirr"))
        })
        .filter_map(|task| {
            let stat = task.join("stat").to_string_lossy().into_owned();
            let cpu = cpu_seconds(&stat)?;
            Some((stat, cpu))
        })
        .collect()
}

/// A running `protocol-mirror serve`: [`Daemon::stop`] stops it gracefully; dropped
/// while running (the benchmark failed), it is killed.
struct Daemon {
    child: Child,
    addr: SocketAddr,
    log: Arc<std::sync::Mutex<Vec<String>>>,
}

impl Daemon {
    fn start(args: &IngestArgs, mirror: &Path, db: &Path) -> anyhow::Result<Daemon> {
        let mut command = Command::new(mirror);
        command
            .arg("--db")
            .arg(db)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(&args.daemon_args)
            .env_remove("RUST_LOG")
            .env_remove("PROTOCOL_MIRROR_DB")
            .env_remove("PROTOCOL_MIRROR_READ_TOKEN")
            .env("PROTOCOL_WEBHOOK_SECRET", SECRET)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for pair in &args.daemon_env {
            let (name, value) = pair
                .split_once('=')
                .with_context(|| format!("--daemon-env {pair}: expected NAME=VALUE"))?;
            command.env(name, value);
        }
        let mut child = command
            .spawn()
            .with_context(|| format!("cannot start {}", mirror.display()))?;
        let stderr = child.stderr.take().context("no stderr")?;
        let mut lines = BufReader::new(stderr).lines();
        let log = Arc::new(std::sync::Mutex::new(Vec::new()));
        let addr = loop {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(addr) = line.strip_prefix("listening on ") {
                        break addr.trim().parse::<SocketAddr>()?;
                    }
                    log.lock().unwrap_or_else(|e| e.into_inner()).push(line);
                }
                _ => {
                    let _ = child.wait();
                    bail!(
                        "the daemon exited before listening:\n{}",
                        log.lock().unwrap_or_else(|e| e.into_inner()).join("\n")
                    );
                }
            }
        };
        // Keep draining its stderr (keeping the last lines for error reports).
        let tail = log.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                let mut tail = tail.lock().unwrap_or_else(|e| e.into_inner());
                if tail.len() >= 50 {
                    tail.remove(0);
                }
                tail.push(line);
            }
        });
        Ok(Daemon { child, addr, log })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, then wait (graceful shutdown).
    fn stop(mut self) -> anyhow::Result<()> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait()? {
                if !status.success() {
                    bail!(
                        "the daemon exited with {status}:\n{}",
                        self.log
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .join("\n")
                    );
                }
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                bail!("the daemon did not stop within 30 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn run_daemon(
    args: &IngestArgs,
    mirror: &Path,
    db: &Path,
    concurrency: usize,
    duration: Duration,
    requests: Arc<Requests>,
) -> anyhow::Result<DaemonRun> {
    crate::remove_database(db);
    let daemon = Daemon::start(args, mirror, db)?;
    let pid = daemon.pid();
    let sampling = Arc::new(AtomicBool::new(true));
    let max_rss = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (sampling, max_rss) = (sampling.clone(), max_rss.clone());
        std::thread::spawn(move || {
            while sampling.load(Ordering::Relaxed) {
                if let Some((rss, _)) = rss_kib(pid) {
                    max_rss.fetch_max(rss, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let process_stat = format!("/proc/{pid}/stat");
    let cpu_before = cpu_seconds(&process_stat).unwrap_or(0.0);
    let writers_before = writer_candidates(pid);
    let outcome = load::run(
        Load {
            addr: daemon.addr,
            concurrency,
            duration,
            threads: args.threads,
            cycle: false,
        },
        requests,
    );
    let cpu = cpu_seconds(&process_stat).unwrap_or(0.0) - cpu_before;
    // The writer is the busiest of them.
    let writer_cpu = writer_candidates(pid)
        .into_iter()
        .map(|(stat, cpu)| cpu - writers_before.get(&stat).copied().unwrap_or(0.0))
        .fold(0.0, f64::max);
    sampling.store(false, Ordering::Relaxed);
    let _ = sampler.join();
    let peak = rss_kib(pid).map_or(0, |(_, hwm)| hwm);
    let metrics = http_get(daemon.addr, "/metrics").unwrap_or_default();
    let stopped = daemon.stop();
    let outcome = outcome?;
    stopped?;
    let sum = metric(&metrics, "protocol_mirror_commit_batch_size_sum");
    let count = metric(&metrics, "protocol_mirror_commit_batch_size_count");
    let logged = {
        let conn =
            rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        let (events, redeliveries): (i64, i64) = conn.query_row(
            "SELECT COUNT(*), COALESCE(SUM(duplicates), 0) FROM events",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )?;
        if redeliveries > 0 {
            eprintln!("ingest: {redeliveries} redeliveries were logged");
        }
        events as u64
    };
    Ok(DaemonRun {
        outcome,
        mean_batch: if count > 0.0 { sum / count } else { 0.0 },
        peak_rss_kib: peak.max(max_rss.load(Ordering::Relaxed)),
        logged,
        cpu,
        writer_cpu,
    })
}

/// A value of an un-labelled metric in Prometheus text.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|line| {
            let (key, value) = line.split_once(' ')?;
            (key == name).then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0.0)
}

/// A plain GET over a fresh connection: the response body.
fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<String> {
    let mut stream = std::net::TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    Ok(response
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, body)| body.to_owned()))
}

fn which(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// Requests in the comparison with wrk (each wrk thread loads them all into Lua).
const WRK_REQUESTS: usize = 20_000;

const WRK_SCRIPT: &str = r#"-- Cycles through pre-signed POST /webhooks requests, one "signature body" per line.
local requests = {}
local i = 0
function init(args)
  for line in io.lines(args[1]) do
    local signature, body = line:match("^(%x+) (.*)$")
    requests[#requests + 1] = wrk.format("POST", "/webhooks",
      {["content-type"] = "application/json", ["x-protocol-signature"] = signature}, body)
  end
end
function request()
  i = i + 1
  if i > #requests then i = 1 end
  return requests[i]
end
"#;

/// The generator and wrk against the no-op endpoint, back to back at each
/// concurrency, with the same requests (the first [`WRK_REQUESTS`], cycled).
fn compare_wrk(addr: SocketAddr, duration: Duration, args: &IngestArgs) -> anyhow::Result<String> {
    let folder = tempfile::tempdir()?;
    let script = folder.path().join("webhooks.lua");
    std::fs::write(&script, WRK_SCRIPT)?;
    // The first 20,000 requests (each wrk thread loads them into its Lua state).
    let data = folder.path().join("requests.txt");
    let mut file = std::io::BufWriter::new(std::fs::File::create(&data)?);
    let mut generator = Generator::new(STREAM_SEED, Mix::Stream);
    let bodies: Vec<Vec<u8>> = (0..WRK_REQUESTS)
        .map(|_| generator.next_event().1)
        .collect();
    for body in &bodies {
        file.write_all(protocol_verify::sign(SECRET, body).as_bytes())?;
        file.write_all(b" ")?;
        file.write_all(body)?;
        file.write_all(b"\n")?;
    }
    file.flush()?;
    drop(file);
    let requests = Arc::new(Requests::render(bodies.iter().map(Vec::as_slice), SECRET));
    let mut rows = Vec::new();
    for &concurrency in &args.concurrency {
        eprintln!("ingest: generator and wrk on the no-op endpoint, concurrency {concurrency}...");
        let ours = load::run(
            Load {
                addr,
                concurrency,
                duration,
                threads: args.threads,
                cycle: true,
            },
            requests.clone(),
        )?;
        let output = Command::new("wrk")
            .arg(format!("-t{}", args.threads))
            .arg(format!("-c{concurrency}"))
            .arg(format!("-d{}s", duration.as_secs_f64().ceil() as u64))
            .arg("--latency")
            .arg("-s")
            .arg(&script)
            .arg(format!("http://{addr}"))
            .arg("--")
            .arg(&data)
            .output()
            .context("running wrk")?;
        let text = String::from_utf8_lossy(&output.stdout);
        let wrk = parse_wrk(&text).with_context(|| {
            format!(
                "cannot read wrk's output:\n{text}{}",
                String::from_utf8_lossy(&output.stderr)
            )
        })?;
        rows.push(vec![
            concurrency.to_string(),
            thousands(ours.rate()),
            format!("{:.2} / {:.2}", ours.ms(0.5), ours.ms(0.99)),
            thousands(wrk.rate),
            format!("{:.2} / {:.2}", wrk.p50_ms, wrk.p99_ms),
            format!("{:.2}", ours.rate() / wrk.rate),
        ]);
    }
    let mut out = format!(
        "Generator vs wrk, back to back ({} threads each, the same no-op endpoint, the same \
         {} signed requests cycled; wrk through a Lua script, \
         `wrk -t{} -cN -d{}s --latency -s webhooks.lua`):\n\n",
        args.threads,
        thousands(WRK_REQUESTS as f64),
        args.threads,
        duration.as_secs_f64().ceil()
    );
    out.push_str(&table(
        &[
            "concurrency",
            "generator req/s",
            "generator p50 / p99 ms",
            "wrk req/s",
            "wrk p50 / p99 ms",
            "generator / wrk",
        ],
        &rows,
    ));
    out.push('\n');
    Ok(out)
}

struct Wrk {
    rate: f64,
    p50_ms: f64,
    p99_ms: f64,
}

fn parse_wrk(text: &str) -> Option<Wrk> {
    let rate = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))?
        .trim()
        .parse()
        .ok()?;
    let percentile = |p: &str| -> Option<f64> {
        let value = text.lines().find_map(|l| l.trim().strip_prefix(p))?.trim();
        duration_ms(value)
    };
    Some(Wrk {
        rate,
        p50_ms: percentile("50%")?,
        p99_ms: percentile("99%")?,
    })
}

/// wrk's `812.00us`, `2.31ms`, `1.02s`, in milliseconds.
fn duration_ms(value: &str) -> Option<f64> {
    let split = value.find(|c: char| c.is_ascii_alphabetic())?;
    let (number, unit) = value.split_at(split);
    let number: f64 = number.parse().ok()?;
    Some(match unit {
        "us" => number / 1000.0,
        "ms" => number,
        "s" => number * 1000.0,
        "m" => number * 60_000.0,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrk_output_is_read() {
        let text = "Running 10s test @ http://127.0.0.1:1\n  2 threads and 64 connections\n\
            \x20 Thread Stats   Avg      Stdev     Max   +/- Stdev\n\
            \x20   Latency   812.00us  300.00us   9.00ms   90.00%\n\
            \x20 Latency Distribution\n     50%  700.00us\n     75%  900.00us\n     90%    1.20ms\n\
            \x20    99%    2.31ms\n  800000 requests in 10.00s, 60.00MB read\n\
            Requests/sec:  80000.12\nTransfer/sec:      6.00MB\n";
        let wrk = parse_wrk(text).unwrap();
        assert_eq!(wrk.rate, 80000.12);
        assert!((wrk.p50_ms - 0.7).abs() < 1e-9);
        assert!((wrk.p99_ms - 2.31).abs() < 1e-9);
    }

    #[test]
    fn metrics_are_read() {
        let text = "# TYPE x histogram\nprotocol_mirror_commit_batch_size_sum 300.0\nprotocol_mirror_commit_batch_size_count 3\n";
        assert_eq!(metric(text, "protocol_mirror_commit_batch_size_sum"), 300.0);
        assert_eq!(metric(text, "protocol_mirror_commit_batch_size_count"), 3.0);
        assert_eq!(metric(text, "nope"), 0.0);
    }
}
