//! Test support: run the real `protocol-mirror` binary hermetically, and talk HTTP/1.1
//! to it over plain TCP (no client library, so tests control every byte).

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
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

/// Runs the binary to completion with `args` and `stdin`.
pub fn run(home: &Path, args: &[&str], stdin: &[u8]) -> Output {
    let mut child = command(home)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn protocol-mirror");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
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
        cmd.arg("--db")
            .arg(&db)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(extra)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn protocol-mirror serve");
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut startup = String::new();
        let addr = loop {
            let mut line = String::new();
            if stderr.read_line(&mut line).unwrap() == 0 {
                let _ = child.wait();
                panic!("the daemon exited before listening:\n{startup}");
            }
            startup.push_str(&line);
            if let Some(addr) = line.trim().strip_prefix("listening on ") {
                break addr.parse().unwrap();
            }
        };
        // Keep draining stderr so the daemon never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut sink = String::new();
            let _ = stderr.read_to_string(&mut sink);
        });
        Mirror {
            child,
            addr,
            dir: Some(dir),
            db,
            startup,
        }
    }

    /// The daemon's folder (its database, lock and secret files).
    pub fn dir(&self) -> &Path {
        self.dir.as_ref().unwrap().path()
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
        signal(&self.child, "TERM");
        let status = wait_timeout(&mut self.child, Duration::from_secs(30)).expect("daemon exit");
        (status, self.dir.take().unwrap())
    }

    /// Kills the daemon with SIGKILL and waits for it.
    pub fn kill(mut self) -> tempfile::TempDir {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.dir.take().unwrap()
    }
}

impl Drop for Mirror {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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
