//! Test support: run the real `protocol-mirror` binary hermetically, and talk HTTP/1.1
//! to it over plain TCP (no client library, so tests control every byte).

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_protocol-mirror")
}

/// The environment variables that configure the binary: cleared for every run so
/// that nothing of the developer's shell leaks into a test.
const CONFIG_VARS: &[&str] = &[
    "PROTOCOL_MIRROR_DB",
    "PROTOCOL_WEBHOOK_SECRET",
    "PROTOCOL_MIRROR_READ_TOKEN",
    "PROTOCOL_API_TOKEN",
    "RUST_LOG",
    "COLUMNS",
];

/// A command for the binary with a clean environment and a private home.
pub fn command(home: &Path) -> Command {
    let mut cmd = Command::new(bin());
    for var in CONFIG_VARS {
        cmd.env_remove(var);
    }
    cmd.env("HOME", home)
        .env("XDG_DATA_HOME", home.join("data"));
    cmd
}

/// Runs the binary to completion with `args` and `stdin` (which it need not read: a
/// command that fails early closes its stdin unread).
pub fn run(home: &Path, args: &[&str], stdin: &[u8]) -> Output {
    let mut child = command(home)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn protocol-mirror");
    if let Err(e) = child.stdin.take().unwrap().write_all(stdin) {
        assert_eq!(
            e.kind(),
            std::io::ErrorKind::BrokenPipe,
            "writing stdin: {e}"
        );
    }
    child.wait_with_output().unwrap()
}

pub const SECRET: &str = "whsec_e2e_test_secret";

/// A running `protocol-mirror serve` on 127.0.0.1:0 with a temp database.
pub struct Mirror {
    pub child: Child,
    pub addr: SocketAddr,
    dir: Option<tempfile::TempDir>,
    pub db: PathBuf,
    /// Everything the daemon printed on stderr up to the listening line.
    pub startup: String,
    /// Everything the daemon printed on stderr so far (kept by a draining thread).
    stderr: Arc<Mutex<String>>,
}

impl Mirror {
    /// Starts a daemon with the test secret and `extra` arguments.
    pub fn start(extra: &[&str]) -> Mirror {
        let dir = tempfile::tempdir().unwrap();
        Mirror::start_in(dir, &[("PROTOCOL_WEBHOOK_SECRET", SECRET)], extra)
    }

    /// Starts a daemon in `dir` (database `dir/mirror.db`) with `env` and `extra`.
    pub fn start_in(dir: tempfile::TempDir, env: &[(&str, &str)], extra: &[&str]) -> Mirror {
        let db = dir.path().join("mirror.db");
        let mut cmd = command(dir.path());
        cmd.args(serve_args(&db, extra)).envs(env.iter().copied());
        Mirror::launch(cmd, Some(dir), db)
    }

    /// Spawns `cmd` (a `serve` command line for `db`, possibly wrapped, e.g. in `sh -c`)
    /// and waits for its "listening on" line. `dir`, when given, lives as long as the
    /// daemon. Everything it prints on stderr is kept (see [`Mirror::stderr`]).
    pub fn launch(cmd: Command, dir: Option<tempfile::TempDir>, db: PathBuf) -> Mirror {
        Mirror::try_launch(cmd, dir, db)
            .unwrap_or_else(|(_, startup)| panic!("the daemon exited before listening:\n{startup}"))
    }

    /// Like [`Mirror::launch`], but a daemon that exits before it listens is an error:
    /// its exit status and what it printed on stderr.
    pub fn try_launch(
        mut cmd: Command,
        dir: Option<tempfile::TempDir>,
        db: PathBuf,
    ) -> Result<Mirror, (std::process::ExitStatus, String)> {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn protocol-mirror serve");
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut startup = String::new();
        let addr = loop {
            let mut line = String::new();
            if stderr.read_line(&mut line).unwrap() == 0 {
                return Err((child.wait().unwrap(), startup));
            }
            startup.push_str(&line);
            if let Some(addr) = line.trim().strip_prefix("listening on ") {
                break addr.parse().unwrap();
            }
        };
        // Keep draining stderr so the daemon never blocks on a full pipe.
        let kept = Arc::new(Mutex::new(startup.clone()));
        let sink = kept.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n) = stderr.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let text = String::from_utf8_lossy(&buf[..n]);
                sink.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push_str(&text);
            }
        });
        Ok(Mirror {
            child,
            addr,
            dir,
            db,
            startup,
            stderr: kept,
        })
    }

    /// Everything the daemon printed on stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Fails the test if the daemon panicked (it prints "panicked" on stderr).
    #[track_caller]
    pub fn assert_no_panic(&self) {
        let stderr = self.stderr();
        assert!(
            !stderr.contains("panicked"),
            "the daemon panicked:\n{stderr}"
        );
    }

    /// Whether the daemon process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// The daemon's folder (its database, lock and secret files).
    pub fn dir(&self) -> &Path {
        match &self.dir {
            Some(dir) => dir.path(),
            None => self.db.parent().unwrap(),
        }
    }

    /// POSTs `body` to `/webhooks`, signed with the test secret.
    pub fn post_signed(&self, body: &[u8]) -> Response {
        self.post_signed_by(SECRET, body)
    }

    /// POSTs `body` to `/webhooks`, signed with `secret`.
    pub fn post_signed_by(&self, secret: &str, body: &[u8]) -> Response {
        let signature = protocol_verify::sign(secret, body);
        self.post_with(&[("x-protocol-signature", signature.as_str())], body)
    }

    /// POSTs `body` to `/webhooks` with exactly these extra `headers`.
    pub fn post_with(&self, headers: &[(&str, &str)], body: &[u8]) -> Response {
        self.request("POST", "/webhooks", headers, body)
    }

    /// The `/metrics` text.
    pub fn metrics(&self) -> String {
        let response = self.get("/metrics");
        assert_eq!(response.status, 200, "{}", response.text());
        response.text()
    }

    /// Sends one request on a fresh connection.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Response {
        request(self.addr, method, path, headers, body)
    }

    /// GET `path`.
    pub fn get(&self, path: &str) -> Response {
        self.request("GET", path, &[], b"")
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(mut self) -> (std::process::ExitStatus, tempfile::TempDir) {
        let status = self.stop_now();
        (status, self.dir.take().unwrap())
    }

    /// Sends SIGTERM and waits for the exit status (for a daemon started without a
    /// temp dir of its own, see [`Mirror::launch`]).
    pub fn stop(mut self) -> std::process::ExitStatus {
        self.stop_now()
    }

    /// Sends SIGTERM and waits for the exit status; with it, everything the daemon
    /// printed on stderr, its last line (which says `stopped`) included.
    pub fn stop_with_stderr(mut self) -> (std::process::ExitStatus, String) {
        let status = self.stop_now();
        // The draining thread reads the rest once the daemon is gone.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !self.stderr().contains("stopped") && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        (status, self.stderr())
    }

    fn stop_now(&mut self) -> std::process::ExitStatus {
        signal(&self.child, "TERM");
        wait_timeout(&mut self.child, Duration::from_secs(30)).expect("daemon exit")
    }

    /// Kills the daemon with SIGKILL and waits for it.
    pub fn kill(mut self) -> tempfile::TempDir {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.dir.take().unwrap()
    }
}

/// `protocol-mirror --db DB serve --listen 127.0.0.1:0` with `home` as its home and
/// the test secret, for [`Mirror::launch`] and [`Mirror::try_launch`].
pub fn serve_command(home: &Path, db: &Path) -> Command {
    let mut cmd = command(home);
    cmd.args(serve_args(db, &[]))
        .env("PROTOCOL_WEBHOOK_SECRET", SECRET);
    cmd
}

/// The arguments of `protocol-mirror --db DB serve --listen 127.0.0.1:0 EXTRA...`.
pub fn serve_args(db: &Path, extra: &[&str]) -> Vec<std::ffi::OsString> {
    let mut args: Vec<std::ffi::OsString> = vec!["--db".into(), db.into()];
    args.extend(["serve", "--listen", "127.0.0.1:0"].map(Into::into));
    args.extend(extra.iter().map(Into::into));
    args
}

impl Drop for Mirror {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes `contents` to a new file at `path` that only its owner may read (mode 0600
/// on Unix): what the binary requires of a secret or token file.
pub fn write_private(path: &Path, contents: &str) {
    std::fs::write(path, contents).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
}

/// A loopback address (`127.0.0.1:PORT`) whose port was free a moment ago, for a
/// command that must be told its address before it starts.
pub fn free_address() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("127.0.0.1:{port}")
}

/// A child process killed and waited for when dropped: a test that fails midway leaves
/// no daemon behind.
/// The rest of a child's piped stderr (read once it has exited).
pub fn take_stderr(child: &mut Child) -> String {
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    err
}

pub struct Reaped(pub Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Sends a signal with the `kill` command (no libc in tests).
pub fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .args([format!("-{name}"), child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

pub fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// An HTTP response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One request with `Connection: close`; reads the whole response.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if !headers
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        && !headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("transfer-encoding"))
    {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let mut raw = head.into_bytes();
    raw.extend_from_slice(body);
    send_raw(addr, &raw)
}

/// Writes `raw` bytes and parses the response (the server may answer early and close).
pub fn send_raw(addr: SocketAddr, raw: &[u8]) -> Response {
    try_send_raw(addr, raw).unwrap_or_else(|e| panic!("{e}"))
}

/// Like [`request`], but a refused connection or a connection closed without a
/// response is an error rather than a panic (for tests that race a shutdown).
pub fn try_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<Response, String> {
    let mut raw = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        raw.push_str(&format!("{name}: {value}\r\n"));
    }
    raw.push_str("\r\n");
    let mut raw = raw.into_bytes();
    raw.extend_from_slice(body);
    try_send_raw(addr, &raw)
}

/// Like [`send_raw`], returning an error when no response came back.
pub fn try_send_raw(addr: SocketAddr, raw: &[u8]) -> Result<Response, String> {
    let mut stream = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    // The server may answer (413) and close before the whole body is written.
    let _ = stream.write_all(raw);
    let mut bytes = Vec::new();
    let _ = stream.read_to_end(&mut bytes);
    try_parse_response(&bytes)
}

pub fn parse_response(bytes: &[u8]) -> Response {
    try_parse_response(bytes).unwrap_or_else(|e| panic!("{e}"))
}

fn try_parse_response(bytes: &[u8]) -> Result<Response, String> {
    let text_end = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| format!("no response head in {:?}", String::from_utf8_lossy(bytes)))?;
    let head = String::from_utf8_lossy(&bytes[..text_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("no status line in {head:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let mut body = bytes[text_end + 4..].to_vec();
    if headers
        .iter()
        .any(|(n, v)| n.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"))
    {
        body = dechunk(&body);
    }
    Ok(Response {
        status,
        headers,
        body,
    })
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(end) = data.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size =
            usize::from_str_radix(String::from_utf8_lossy(&data[..end]).trim(), 16).unwrap_or(0);
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&data[end + 2..end + 2 + size]);
        data = &data[end + 2 + size + 2..];
    }
}

/// An event envelope as compact JSON bytes.
pub fn event(id: &str, kind: &str, payload: serde_json::Value) -> Vec<u8> {
    serde_json::json!({"id": id, "type": kind, "payload": payload})
        .to_string()
        .into_bytes()
}

/// The sample event stream shipped with the tests.
pub const SAMPLE: &str = include_str!("../data/sample-events.ndjson");

/// Reads a metric's value (the sum over its label sets matching `filter`).
pub fn metric(text: &str, name: &str, filter: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(name) && l.contains(filter))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Runs `cmd` to completion, killing it (and failing the test) after `timeout`:
/// for commands that must refuse to start rather than serve forever.
pub fn run_timeout(mut cmd: Command, timeout: Duration) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn protocol-mirror");
    if wait_timeout(&mut child, timeout).is_none() {
        let _ = child.kill();
        let output = child.wait_with_output().unwrap();
        panic!(
            "still running after {timeout:?}; stderr:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    child.wait_with_output().unwrap()
}

// ---------------------------------------------------------------------------------------
// Reading the replica (beside a running daemon: WAL readers never block it)
// ---------------------------------------------------------------------------------------

/// A read-only connection to the database at `db`.
pub fn open_db(db: &Path) -> rusqlite::Connection {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap_or_else(|e| panic!("open {}: {e}", db.display()));
    conn.busy_timeout(Duration::from_secs(10)).unwrap();
    conn
}

/// How many events the log holds.
pub fn event_count(db: &Path) -> i64 {
    open_db(db)
        .query_row("SELECT COUNT(*) FROM events", [], |row| row.get(0))
        .unwrap()
}

/// The logged outcome of `event_id`, if it is in the log.
pub fn outcome(db: &Path, event_id: &str) -> Option<String> {
    use rusqlite::OptionalExtension;
    open_db(db)
        .query_row(
            "SELECT outcome FROM events WHERE event_id = ?1",
            [event_id],
            |row| row.get(0),
        )
        .optional()
        .unwrap()
}

/// The whole replica, as `get` prints it.
pub fn snapshot(db: &Path) -> protocol_mirror::Snapshot {
    protocol_mirror::store::Store::open_read_only(db)
        .and_then(|store| store.snapshot())
        .unwrap_or_else(|e| panic!("snapshot of {}: {e}", db.display()))
}

/// One object as `get` prints it.
pub fn object(
    db: &Path,
    resource: protocol_types::Resource,
    id: &str,
) -> Option<serde_json::Value> {
    let store = protocol_mirror::store::Store::open_read_only(db).unwrap();
    protocol_mirror::store::get(store.conn(), resource, id).unwrap()
}

/// Every table of the database at `db` but the ones named in `skip` (and SQLite's
/// and FTS5's internal ones), each as its rows rendered to text and sorted: two dumps
/// are equal when the tables hold the same rows. Values over 256 bytes are abbreviated
/// (length, both ends and a sample of the middle), so that dumping a table of 1 MiB
/// ids stays cheap.
pub fn dump(db: &Path, skip: &[&str]) -> std::collections::BTreeMap<String, Vec<String>> {
    let conn = open_db(db);
    let tables = texts(
        &conn,
        "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name",
    );
    let mut out = std::collections::BTreeMap::new();
    for table in tables {
        if skip.contains(&table.as_str())
            || table.starts_with("sqlite_")
            || table.starts_with("messages_fts")
        {
            continue;
        }
        let mut stmt = conn.prepare(&format!("SELECT * FROM \"{table}\"")).unwrap();
        let width = stmt.column_count();
        let mut rows: Vec<String> = stmt
            .query_map([], |row| {
                (0..width)
                    .map(|i| row.get::<_, rusqlite::types::Value>(i).map(|v| render(&v)))
                    .collect::<Result<Vec<_>, _>>()
                    .map(|cells| cells.join(" | "))
            })
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        rows.sort();
        out.insert(table, rows);
    }
    out
}

/// A value of a dump: as is, or abbreviated when long.
fn render(value: &rusqlite::types::Value) -> String {
    use rusqlite::types::Value;
    let bytes = match value {
        Value::Text(text) => text.as_bytes(),
        Value::Blob(blob) => blob.as_slice(),
        other => return format!("{other:?}"),
    };
    if bytes.len() <= 256 {
        return format!("{value:?}");
    }
    let sample = bytes.iter().step_by(61).fold(0u64, |acc, b| {
        acc.wrapping_mul(31).wrapping_add(u64::from(*b))
    });
    format!(
        "{} bytes {:?}..{:?} sample {sample:x}",
        bytes.len(),
        String::from_utf8_lossy(&bytes[..64]),
        String::from_utf8_lossy(&bytes[bytes.len() - 64..])
    )
}

/// The tables `dump` should skip to compare only the replica: the event log, and the
/// row the health check writes.
pub const LOG_TABLES: &[&str] = &["events", "event_bodies", "writer_probe"];

/// `PRAGMA integrity_check` of the database at `db` ("ok" when sound).
/// Overwrites the root page of the table or index `name` of the database at `db` (its
/// WAL copied in first; not page 1, so the file stays a database), as damage on disk
/// would.
pub fn garble_root_page(db: &Path, name: &str) {
    use std::io::{Seek, SeekFrom};
    let root: i64 = {
        let conn = open_db(db);
        conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
            .unwrap();
        conn.query_row(
            "SELECT rootpage FROM sqlite_schema WHERE name = ?1",
            [name],
            |row| row.get(0),
        )
        .unwrap()
    };
    assert!(root > 1, "{name}: root page {root}");
    let mut file = std::fs::OpenOptions::new().write(true).open(db).unwrap();
    file.seek(SeekFrom::Start((root as u64 - 1) * 4096))
        .unwrap();
    file.write_all(&[0xa5; 4096]).unwrap();
}

/// Overwrites the `nth` leaf page (from 0, in the order of the file) of the table
/// `name` of the database at `db` (not open) with a pattern, as damage on disk would.
pub fn garble_leaf_page(db: &Path, name: &str, nth: u32) {
    use std::io::{Seek, SeekFrom};
    let page: i64 = {
        let conn = open_db(db);
        conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
            .unwrap();
        conn.query_row(
            "SELECT pageno FROM dbstat WHERE name = ?1 AND pagetype = 'leaf' \
             ORDER BY pageno LIMIT 1 OFFSET ?2",
            rusqlite::params![name, nth],
            |row| row.get(0),
        )
        .unwrap()
    };
    let mut file = std::fs::OpenOptions::new().write(true).open(db).unwrap();
    file.seek(SeekFrom::Start((page as u64 - 1) * 4096))
        .unwrap();
    file.write_all(&[0xa5; 4096]).unwrap();
}

pub fn integrity_check(db: &Path) -> String {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.busy_timeout(Duration::from_secs(10)).unwrap();
    texts(&conn, "PRAGMA integrity_check").join("\n")
}

/// The first column of every row `sql` returns, as text.
pub fn texts(conn: &rusqlite::Connection, sql: &str) -> Vec<String> {
    conn.prepare(sql)
        .unwrap()
        .query_map([], |row| row.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// The permission bits of `path`.
#[cfg(unix)]
pub fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// `path` with `suffix` appended to its file name (`mirror.db` + `-wal`).
pub fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    protocol_mirror::beside(path, suffix)
}

/// Polls `condition` every 20 ms until it holds; false if it still does not after
/// `timeout`.
pub fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A small deterministic random generator (xorshift64*), so that a failing run can be
/// repeated from its printed seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed` (any value; 0 is remapped).
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    /// A seed from the clock, or from the environment variable `var` when it is set.
    pub fn seed_from_env(var: &str) -> u64 {
        std::env::var(var)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |d| d.as_nanos() as u64)
            })
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// True with probability `percent` / 100.
    pub fn percent(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// POSTs `body` to `/webhooks` at `addr`, signed with the test secret, on a fresh
/// connection; an error when no response came back (refused, reset, or closed by a
/// shutdown or a kill).
pub fn post_signed_to(addr: SocketAddr, body: &[u8]) -> Result<Response, String> {
    let signature = protocol_verify::sign(SECRET, body);
    try_request(
        addr,
        "POST",
        "/webhooks",
        &[("x-protocol-signature", &signature)],
        body,
    )
}

// ---------------------------------------------------------------------------------------
// Encodings
// ---------------------------------------------------------------------------------------

const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding (for signature headers in other encodings).
pub fn base64_encode(bytes: &[u8]) -> String {
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(BASE64[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The inverse of [`base64_encode`].
pub fn base64_decode(text: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let mut acc = 0u32;
    let mut bits = 0;
    for c in text.bytes().filter(|c| *c != b'=') {
        let value = BASE64
            .iter()
            .position(|b| *b == c)
            .unwrap_or_else(|| panic!("not base64: {c}")) as u32;
        acc = (acc << 6) | value;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

/// Bytes of a lowercase or uppercase hex string.
pub fn hex_decode(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn base64_round_trips() {
    for len in 0..20 {
        let bytes: Vec<u8> = (0..len).map(|i| (i * 37 + 5) as u8).collect();
        assert_eq!(base64_decode(&base64_encode(&bytes)), bytes);
    }
    assert_eq!(base64_encode(b"hi!"), "aGkh");
}

/// The replay by hand of a replica's event log that docs/CLI.md gives ("A replica
/// that lost tables"): its `sql` run on `db`, and each body as its `jq -r .body`
/// writes it.
pub fn replayed_log(home: &Path, db: &Path) -> Vec<String> {
    let doc = include_str!("../../docs/CLI.md");
    let query = doc
        .lines()
        .find_map(|line| line.strip_prefix("protocol-mirror --db=mirror.db sql \""))
        .and_then(|rest| rest.split_once("\" --format ndjson"))
        .expect("the replay in docs/CLI.md")
        .0;
    let db = db.to_str().unwrap();
    let log = run(home, &["--db", db, "sql", query, "--format", "ndjson"], b"");
    assert!(
        log.status.success(),
        "{}",
        String::from_utf8_lossy(&log.stderr)
    );
    String::from_utf8(log.stdout)
        .unwrap()
        .lines()
        .map(|line| {
            let row: serde_json::Value = serde_json::from_str(line).unwrap();
            row["body"].as_str().unwrap().to_owned()
        })
        .collect()
}
