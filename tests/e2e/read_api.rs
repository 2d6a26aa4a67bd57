//! The read API (`/v1/...`), its token, its listener rules and its OpenAPI document.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::{Value, json};

use crate::support::{self, Mirror, SECRET};

/// Imports `events` (NDJSON lines) into a fresh database, then starts a daemon on it.
fn mirror_with(events: &[Vec<u8>], env: &[(&str, &str)], extra: &[&str]) -> Mirror {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("mirror.db");
    let mut input = Vec::new();
    for event in events {
        input.extend_from_slice(event);
        input.push(b'\n');
    }
    let out = support::run(
        dir.path(),
        &["--db", db.to_str().unwrap(), "import", "-"],
        &input,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut env = env.to_vec();
    env.push(("PROTOCOL_WEBHOOK_SECRET", SECRET));
    Mirror::start_in(dir, &env, extra)
}

fn message(i: usize, conversation: &str, created_at: Value) -> Vec<u8> {
    support::event(
        &format!("e{i}"),
        "message.created",
        json!({"id": format!("m{i:04}"), "conversation_id": conversation,
               "message": format!("message number {i}"), "created_at": created_at}),
    )
}

fn ids(page: &Value) -> Vec<String> {
    page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["id"].as_str().unwrap().to_owned())
        .collect()
}

/// Pages through `/v1/messages` at limit 7, forwards from the start and backwards
/// from the last object; returns both id sequences (backwards in list order).
fn page_both_ways(mirror: &Mirror, last: &str) -> (Vec<String>, Vec<String>) {
    let mut forwards = Vec::new();
    let mut path = "/v1/messages?limit=7".to_owned();
    loop {
        let response = mirror.get(&path);
        assert_eq!(response.status, 200, "{}", response.text());
        let page = response.json();
        forwards.extend(ids(&page));
        if !page["has_more"].as_bool().unwrap() {
            break;
        }
        path = format!(
            "/v1/messages?limit=7&starting_after={}",
            forwards.last().unwrap()
        );
    }
    let mut backwards: Vec<String> = Vec::new();
    let mut path = format!("/v1/messages?limit=7&ending_before={last}");
    loop {
        let page = mirror.get(&path).json();
        let mut page_ids = ids(&page);
        page_ids.append(&mut backwards);
        backwards = page_ids;
        if !page["has_more"].as_bool().unwrap() {
            break;
        }
        path = format!("/v1/messages?limit=7&ending_before={}", backwards[0]);
    }
    (forwards, backwards)
}

#[test]
fn paging_through_1000_messages_returns_each_once_in_order() {
    // Timestamps with many ties and a few missing ones.
    let events: Vec<Vec<u8>> = (0..1000)
        .map(|i| {
            let created = if i % 97 == 0 {
                Value::Null
            } else {
                json!(1_000 + (i % 50))
            };
            message(i, "c1", created)
        })
        .collect();
    let mirror = mirror_with(&events, &[], &[]);
    let expected: Vec<String> = {
        let out = support::run(
            mirror.dir(),
            &[
                "--db",
                mirror.db.to_str().unwrap(),
                "list",
                "messages",
                "--limit",
                "5000",
                "--format",
                "json",
            ],
            b"",
        );
        let all: Value = serde_json::from_slice(&out.stdout).unwrap();
        all.as_array()
            .unwrap()
            .iter()
            .map(|o| o["id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(expected.len(), 1000);
    let (forwards, backwards) = page_both_ways(&mirror, expected.last().unwrap());
    assert_eq!(forwards, expected, "forwards: the CLI's order, each once");
    assert_eq!(
        backwards,
        expected[..999],
        "backwards: everything before the last"
    );
}

#[test]
fn paging_is_stable_while_a_writer_adds_events() {
    let events: Vec<Vec<u8>> = (0..1000)
        .map(|i| message(i, "c1", json!(5_000 + i % 40)))
        .collect();
    let mirror = mirror_with(&events, &[], &[]);
    let expected: Vec<String> = {
        let mut all = Vec::new();
        let mut path = "/v1/messages?limit=100".to_owned();
        loop {
            let page = mirror.get(&path).json();
            all.extend(ids(&page));
            if !page["has_more"].as_bool().unwrap() {
                break;
            }
            path = format!(
                "/v1/messages?limit=100&starting_after={}",
                all.last().unwrap()
            );
        }
        all
    };
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        let addr = mirror.addr;
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                // New messages at old, tied and new timestamps.
                let body = message(10_000 + n, "c1", json!(5_000 + (n * 7) % 60));
                let signature = protocol_verify::sign(SECRET, &body);
                let response = support::request(
                    addr,
                    "POST",
                    "/webhooks",
                    &[("x-protocol-signature", &signature)],
                    &body,
                );
                assert_eq!(response.status, 200);
                n += 1;
            }
            n
        })
    };
    let (forwards, backwards) = page_both_ways(&mirror, expected.last().unwrap());
    stop.store(true, Ordering::SeqCst);
    let written = writer.join().unwrap();
    assert!(written > 0, "the writer ran during the paging");
    let old = |ids: Vec<String>| -> Vec<String> {
        ids.into_iter().filter(|id| expected.contains(id)).collect()
    };
    let forwards_len = forwards.len();
    let forwards = old(forwards);
    assert_eq!(forwards, expected, "no old message skipped or repeated");
    let mut seen = std::collections::HashSet::new();
    assert!(forwards_len >= expected.len());
    assert!(
        old(backwards.clone())
            .iter()
            .all(|id| seen.insert(id.clone())),
        "no repeats"
    );
    assert_eq!(old(backwards), expected[..999]);
}

#[test]
fn documented_filters() {
    let events = vec![
        support::event(
            "e1",
            "conversation.created",
            json!({"id": "cv-muted", "is_muted": true, "is_pinned": false, "archived_at": null, "group_id": null, "created_at": 1}),
        ),
        support::event(
            "e2",
            "conversation.created",
            json!({"id": "cv-pinned", "is_muted": false, "is_pinned": true, "archived_at": 5, "group_id": "g1", "created_at": 2}),
        ),
        support::event(
            "e3",
            "group.created",
            json!({"id": "g1", "archived_at": 9, "created_at": 1}),
        ),
        support::event(
            "e4",
            "group.created",
            json!({"id": "g2", "archived_at": null, "created_at": 2}),
        ),
        message(5, "cv-muted", json!(10)),
        message(6, "cv-pinned", json!(11)),
        support::event(
            "e7",
            "attachment.created",
            json!({"id": "a1", "message_id": "m0005", "created_at": 3}),
        ),
    ];
    let mirror = mirror_with(&events, &[], &[]);
    let list = |path: &str| {
        let response = mirror.get(path);
        assert_eq!(response.status, 200, "{path}: {}", response.text());
        ids(&response.json())
    };
    assert_eq!(list("/v1/conversations?muted=true"), ["cv-muted"]);
    assert_eq!(list("/v1/conversations?muted=false"), ["cv-pinned"]);
    assert_eq!(list("/v1/conversations?pinned=true"), ["cv-pinned"]);
    assert_eq!(list("/v1/conversations?archived=true"), ["cv-pinned"]);
    assert_eq!(list("/v1/conversations?archived=false"), ["cv-muted"]);
    assert_eq!(list("/v1/conversations?group_id=g1"), ["cv-pinned"]);
    assert_eq!(list("/v1/groups?archived=true"), ["g1"]);
    assert_eq!(list("/v1/groups?archived=false"), ["g2"]);
    assert_eq!(list("/v1/messages?conversation_id=cv-muted"), ["m0005"]);
    assert_eq!(list("/v1/attachments?conversation_id=cv-muted"), ["a1"]);
    assert_eq!(
        list("/v1/attachments?conversation_id=cv-pinned"),
        Vec::<String>::new()
    );
    assert_eq!(list("/v1/groups"), ["g2", "g1"], "newest first");

    for (path, needle) in [
        ("/v1/messages?limit=101", "limit"),
        ("/v1/messages?limit=0", "limit"),
        ("/v1/messages?colour=red&size=2", r#""colour", "size""#),
        ("/v1/messages?conversation_id=%FF", "not UTF-8"),
        ("/v1/groups?muted=true", "muted"),
        ("/v1/conversations?muted=yes", "muted"),
        ("/v1/messages?starting_after=nope", "nope"),
        (
            "/v1/messages?starting_after=m0005&ending_before=m0006",
            "not both",
        ),
    ] {
        let response = mirror.get(path);
        assert_eq!(response.status, 400, "{path}");
        let body = response.json();
        assert_eq!(body["type"], "invalid_request", "{path}");
        assert!(
            body["message"].as_str().unwrap().contains(needle),
            "{path}: {body}"
        );
    }
}

#[test]
fn objects_and_404s() {
    let mirror = mirror_with(&[message(1, "c", json!(1))], &[], &[]);
    let response = mirror.get("/v1/messages/m0001");
    assert_eq!(response.status, 200);
    assert_eq!(response.json()["message"], "message number 1");
    for path in [
        "/v1/messages/nope",
        "/v1/contacts/m0001",
        "/v1/widgets",
        "/v1/widgets/x",
    ] {
        let response = mirror.get(path);
        assert_eq!(response.status, 404, "{path}");
        assert_eq!(response.json()["type"], "invalid_request", "{path}");
        let message = response.json()["message"].as_str().unwrap().to_owned();
        assert!(!message.contains("deleted"), "{message}");
    }
    // A deleted object's 404 says so.
    let deleted = support::event("d1", "message.deleted", json!({"id": "m0001"}));
    assert_eq!(mirror.post_signed(&deleted).status, 200);
    let response = mirror.get("/v1/messages/m0001");
    assert_eq!(response.status, 404);
    assert_eq!(
        response.json()["message"],
        r#"no message with id "m0001" (it was deleted)"#
    );
    // A trailing slash is named as what is wrong.
    let response = mirror.get("/v1/messages/");
    assert_eq!(response.status, 404);
    let message = response.json()["message"].as_str().unwrap().to_owned();
    assert!(message.contains("no trailing slash"), "{message}");
    assert!(message.contains("\"/v1/messages\""), "{message}");
    // Only where the path without it is a route.
    for path in [
        "/v1/widgets",
        "/v1/widgets/",
        "/nope/",
        "/v1/message/",
        "/v1/contact/c1/",
    ] {
        let message = mirror.get(path).json()["message"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(!message.contains("slash"), "{path}: {message}");
    }
    // Percent-escapes that are not UTF-8, and parameters a single object does not
    // take: a JSON 400.
    for path in ["/v1/contacts/%ff", "/v1/messages/m0001?foo=1", "/v1/%C3%28"] {
        let response = mirror.get(path);
        assert_eq!(response.status, 400, "{path}");
        assert_eq!(response.json()["type"], "invalid_request", "{path}");
    }
    assert!(
        mirror.get("/v1/messages/m0001?foo=1").json()["message"]
            .as_str()
            .unwrap()
            .contains("foo")
    );
    // In the words the query string's get, not the framework's.
    for path in ["/v1/contacts/%ff", "/v1/%C3%28"] {
        assert_eq!(
            mirror.get(path).json()["message"],
            "the path holds percent-escapes that are not UTF-8",
            "{path}"
        );
    }
    // A wrong method on a known route: 405, with the same JSON error body.
    for (method, path, allowed) in [
        ("GET", "/webhooks", "POST"),
        ("DELETE", "/v1/messages/m0001", "GET"),
        ("PUT", "/v1/messages", "GET"),
    ] {
        let response = mirror.request(method, path, &[], b"");
        assert_eq!(response.status, 405, "{method} {path}");
        assert_eq!(
            response.json()["type"],
            "invalid_request",
            "{method} {path}"
        );
        assert!(
            response.header("allow").unwrap().contains(allowed),
            "{method} {path}"
        );
        // The message names them too (it never could: axum adds the header last).
        let message = response.json()["message"].as_str().unwrap().to_owned();
        assert!(message.contains(allowed), "{method} {path}: {message}");
    }
    // A path that names no resource is no route, whatever the method: a 404, as for
    // `GET` (it was a 405).
    for (method, path) in [("POST", "/v1/nope"), ("DELETE", "/v1/nope/x")] {
        let response = mirror.request(method, path, &[], b"");
        assert_eq!(response.status, 404, "{method} {path}");
        assert!(
            response.json()["message"]
                .as_str()
                .unwrap()
                .starts_with("unknown resource"),
            "{method} {path}"
        );
    }
}

#[test]
fn the_read_token_guards_the_read_api_and_metrics_only() {
    let mirror = mirror_with(
        &[message(1, "c", json!(1))],
        &[("PROTOCOL_MIRROR_READ_TOKEN", "r3ad")],
        &[],
    );
    for path in [
        "/v1/messages",
        "/v1/messages/m0001",
        "/metrics",
        "/openapi.json",
    ] {
        let response = mirror.get(path);
        assert_eq!(response.status, 401, "{path}");
        assert!(!response.text().contains("r3ad"));
        let response = mirror.request("GET", path, &[("Authorization", "Bearer wrong")], b"");
        assert_eq!(response.status, 401, "{path}");
        let response = mirror.request("GET", path, &[("Authorization", "Bearer r3ad")], b"");
        assert_eq!(response.status, 200, "{path}");
        // Two Authorization headers are refused, whichever holds the token, and the
        // refusal says so (the first one decided).
        for pair in [
            ["Bearer r3ad", "Bearer wrong"],
            ["Bearer wrong", "Bearer r3ad"],
        ] {
            let headers = [("Authorization", pair[0]), ("Authorization", pair[1])];
            let response = mirror.request("GET", path, &headers, b"");
            assert_eq!(response.status, 401, "{path} {pair:?}");
            assert!(response.text().contains("has 2"), "{}", response.text());
        }
    }
    assert_eq!(
        mirror.get("/healthz").status,
        200,
        "liveness needs no token"
    );
    // A path that names no resource is answered as GET answers it, whatever the
    // method: the token first (it was a 404 without one).
    for method in ["GET", "POST"] {
        let response = mirror.request(method, "/v1/nope", &[], b"");
        assert_eq!(response.status, 401, "{method}");
        let response = mirror.request(method, "/v1/nope", &[("Authorization", "Bearer r3ad")], b"");
        assert_eq!(response.status, 404, "{method}");
    }
    // The webhook endpoint never takes the read token for a signature.
    let body = message(2, "c", json!(2));
    let response = mirror.request(
        "POST",
        "/webhooks",
        &[("Authorization", "Bearer r3ad")],
        &body,
    );
    assert_eq!(response.status, 401);
    assert_eq!(mirror.post_signed(&body).status, 200);
}

#[test]
fn without_a_token_the_read_api_is_open_on_loopback() {
    let mirror = Mirror::start(&[]);
    assert_eq!(mirror.get("/v1/contacts").status, 200);
    assert_eq!(
        mirror.get("/v1/contacts").json(),
        json!({"has_more": false, "data": []})
    );
    // An empty PROTOCOL_MIRROR_READ_TOKEN is unset (a systemd EnvironmentFile line
    // `PROTOCOL_MIRROR_READ_TOKEN=`), as the other variables are.
    for empty in ["", " "] {
        let mirror = Mirror::start_in(
            tempfile::tempdir().unwrap(),
            &[
                ("PROTOCOL_WEBHOOK_SECRET", SECRET),
                ("PROTOCOL_MIRROR_READ_TOKEN", empty),
            ],
            &[],
        );
        assert_eq!(mirror.get("/v1/contacts").status, 200, "{empty:?}");
    }
}

/// Starts `serve` with `args`; returns the child and the two listening addresses.
fn start_raw(
    dir: &std::path::Path,
    args: &[&str],
    env: &[(&str, &str)],
) -> (std::process::Child, SocketAddr, Option<SocketAddr>) {
    let db = dir.join("mirror.db");
    let mut child = support::command(dir)
        .arg("--db")
        .arg(&db)
        .arg("serve")
        .args(args)
        .env("PROTOCOL_WEBHOOK_SECRET", SECRET)
        .envs(env.iter().copied())
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let (mut main, mut read) = (None, None);
    let mut line = String::new();
    while stderr.read_line(&mut line).unwrap() > 0 {
        if let Some(addr) = line.trim().strip_prefix("listening on ") {
            main = Some(addr.parse().unwrap());
        }
        if let Some(addr) = line.trim().strip_prefix("read API listening on ") {
            read = Some(addr.parse().unwrap());
        }
        if main.is_some() && (read.is_some() || !args.contains(&"--read-listen")) {
            break;
        }
        line.clear();
    }
    std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
    (child, main.expect("listening line"), read)
}

/// Why `/healthz` fails (it names the database's path) is said on the read API's
/// listener, and to this machine; a listener without the read API says only that it
/// fails to a request from elsewhere, also one that names a loopback host (anyone who
/// reaches a public webhook listener may send `Host: 127.0.0.1`; a review). Elsewhere
/// is this machine's own address on another interface than loopback: the test says
/// why it skips that part where there is none.
#[test]
fn healthz_says_why_to_this_machine_only() {
    let raw = "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    // The address a packet to a documentation network would leave from (no packet is
    // sent: a UDP socket's connect only picks the route).
    let elsewhere = std::net::UdpSocket::bind("0.0.0.0:0")
        .and_then(|socket| {
            socket.connect("192.0.2.1:9")?;
            socket.local_addr()
        })
        .map(|addr| addr.ip())
        .ok()
        .filter(|ip| !ip.is_loopback() && !ip.is_unspecified());
    if elsewhere.is_none() {
        eprintln!("skipping the request from elsewhere: no address beside loopback's");
    }
    for args in [
        &["--listen", "0.0.0.0:0", "--read-listen", "127.0.0.1:0"][..],
        &["--listen", "0.0.0.0:0", "--no-read-api"],
    ] {
        let dir = tempfile::tempdir().unwrap();
        let (mut child, main, read) = start_raw(dir.path(), args, &[]);
        let local = SocketAddr::from(([127, 0, 0, 1], main.port()));
        // Started whole (its writer knows its file) before the file goes.
        let ready = support::wait_until(std::time::Duration::from_secs(10), || {
            support::request(local, "GET", "/healthz", &[], b"").status == 200
        });
        assert!(ready, "{args:?}");
        let db = dir.path().join("mirror.db");
        std::fs::remove_file(&db).unwrap();
        // Events fail once the writer finds the file gone (a first one may still be
        // stored in the removed file, under load).
        let mut n = 0;
        let failing = support::wait_until(std::time::Duration::from_secs(10), || {
            n += 1;
            let event = support::event(
                &format!("e-gone-{n}"),
                "contact.created",
                json!({"id": "k"}),
            );
            support::post_signed_to(local, &event).is_ok_and(|answer| answer.status == 503)
        });
        assert!(failing, "{args:?}");
        let path = db.to_str().unwrap();
        let here = support::send_raw(local, raw.as_bytes());
        assert_eq!(here.status, 503, "{args:?}");
        assert!(here.text().contains(path), "{args:?}: {}", here.text());
        if let Some(ip) = elsewhere {
            let there = support::send_raw(SocketAddr::new(ip, main.port()), raw.as_bytes());
            assert_eq!(there.status, 503, "{args:?}");
            assert!(!there.text().contains(path), "{args:?}: {}", there.text());
            assert!(
                there.text().contains("/healthz says why"),
                "{}",
                there.text()
            );
        }
        if let Some(read) = read {
            let health = support::send_raw(read, raw.as_bytes());
            assert_eq!(health.status, 503);
            assert!(health.text().contains(path), "{}", health.text());
        }
        child.kill().unwrap();
        child.wait().unwrap();
    }
}

/// `--read-token "$TOKEN"` with the variable unset must not serve the read API
/// without a token (an empty token was taken for none, on loopback, silently); a
/// token no client could send (a control character, beyond ASCII) is refused too.
/// An empty PROTOCOL_MIRROR_READ_TOKEN is unset, as the other variables are (see
/// `without_a_token_the_read_api_is_open_on_loopback`). Nor one too long for a
/// request's head (every request got 431).
#[test]
fn an_empty_or_unsendable_read_token_is_refused() {
    let long = "t".repeat(40_000);
    for token in ["", "  ", "t\u{1}k", "tök", long.as_str()] {
        let dir = tempfile::tempdir().unwrap();
        let out = support::run_timeout(
            {
                let mut cmd = support::command(dir.path());
                cmd.arg("--db")
                    .arg(dir.path().join("mirror.db"))
                    .args(["serve", "--listen", "127.0.0.1:0", "--read-token", token])
                    .env("PROTOCOL_WEBHOOK_SECRET", SECRET);
                cmd
            },
            std::time::Duration::from_secs(30),
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{token:?}: {stderr}");
        assert!(
            stderr.contains("read token") || stderr.contains("--read-token"),
            "{stderr}"
        );
        assert!(
            stderr.contains("empty")
                || stderr.contains("no HTTP header")
                || stderr.contains("at most 4096"),
            "{stderr}"
        );
        assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    }
}

/// A read token with the read API turned off protects nothing: said at start (it was
/// accepted without a word; not refused, since the variable may be set machine-wide).
#[test]
fn a_read_token_without_a_read_api_is_said_to_protect_nothing() {
    let mirror = Mirror::start(&["--no-read-api", "--read-token", "tok"]);
    assert!(
        mirror.startup.contains("protects nothing"),
        "{}",
        mirror.startup
    );
    assert_eq!(mirror.get("/v1/contacts").status, 404);
}

/// A start refused for its settings listens on nothing, not even for the moment it
/// takes to refuse: with its port held by another socket, the refusal is the
/// setting's, not "address in use" (it bound 0.0.0.0 first, then refused to expose
/// the read API there; found by a black-box probe). A database refused at its open
/// is left without a lock file beside it.
#[test]
fn a_start_refused_for_its_settings_binds_nothing() {
    let public = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let loopback = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let public = format!("0.0.0.0:{}", public.local_addr().unwrap().port());
    let loopback = loopback.local_addr().unwrap().to_string();
    let cases: [(&[&str], &str); 5] = [
        (&["--listen", &public], "without a token"),
        // The second address is read before the first is bound (a review).
        (&["--listen", &public, "--read-listen", "8788"], "HOST:PORT"),
        (
            &["--listen", &loopback, "--read-listen", "127.0.0.1"],
            "HOST:PORT",
        ),
        (
            &["--listen", &loopback, "--read-listen", &public],
            "without a token",
        ),
        (
            &["--listen", &loopback, "--secret-file", "./no-such-secret"],
            "no-such-secret",
        ),
    ];
    for (args, said) in cases {
        let dir = tempfile::tempdir().unwrap();
        let out = support::run_timeout(
            {
                let mut cmd = support::command(dir.path());
                cmd.arg("--db")
                    .arg(dir.path().join("mirror.db"))
                    .arg("serve")
                    .args(args)
                    .env("PROTOCOL_WEBHOOK_SECRET", SECRET);
                cmd
            },
            std::time::Duration::from_secs(30),
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}");
        if said == "HOST:PORT" || said == "without a token" {
            assert_eq!(out.status.code(), Some(2), "a usage mistake: {stderr}");
        }
        assert!(stderr.contains(said), "{args:?}: {stderr}");
        assert!(!stderr.contains("in use"), "{args:?}: {stderr}");
        assert!(!dir.path().join("mirror.db").exists(), "nothing created");
    }

    // A database that is another program's, or that another daemon serves, too.
    let dir = tempfile::tempdir().unwrap();
    let foreign = dir.path().join("notes.txt");
    std::fs::write(&foreign, "not a database\n").unwrap();
    // One of a newer schema (a later version's), said only once it was opened.
    let ahead = dir.path().join("ahead.db");
    let migrated = support::run(
        dir.path(),
        &["--db", ahead.to_str().unwrap(), "migrate"],
        b"",
    );
    assert!(migrated.status.success());
    rusqlite::Connection::open(&ahead)
        .unwrap()
        .execute_batch(&format!(
            "PRAGMA user_version = {}; PRAGMA wal_checkpoint(TRUNCATE);",
            protocol_mirror::store::SCHEMA_VERSION + 1
        ))
        .unwrap();
    // Another program's in WAL mode, its tables only in its log yet: refused at the
    // open, after the lock was taken, whose new file goes with the refusal.
    let logged = dir.path().join("logged.db");
    let conn = rusqlite::Connection::open(&logged).unwrap();
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA wal_autocheckpoint = 0; CREATE TABLE notes (x);",
    )
    .unwrap();
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE,
        true,
    )
    .unwrap();
    drop(conn);
    let served = Mirror::start(&[]);
    for (db, said) in [
        (&foreign, "not a protocol-mirror database"),
        (&ahead, "newer than this binary's"),
        (&served.db, "stop it first"),
    ] {
        let out = support::run_timeout(
            {
                let mut cmd = support::command(dir.path());
                cmd.arg("--db")
                    .arg(db)
                    .args(["serve", "--listen", &public, "--no-read-api"])
                    .env("PROTOCOL_WEBHOOK_SECRET", SECRET);
                cmd
            },
            std::time::Duration::from_secs(30),
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{db:?}");
        assert!(stderr.contains(said), "{db:?}: {stderr}");
        assert!(!stderr.contains("already in use"), "{db:?}: {stderr}");
    }
    // Bound first (the header cannot tell), then refused.
    let out = support::run_timeout(
        {
            let mut cmd = support::command(dir.path());
            cmd.arg("--db")
                .arg(&logged)
                .args(["serve", "--listen", "127.0.0.1:0"])
                .env("PROTOCOL_WEBHOOK_SECRET", SECRET);
            cmd
        },
        std::time::Duration::from_secs(30),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("not a protocol-mirror database"),
        "{stderr}"
    );
    let lock_file = support::with_suffix(&logged, ".lock");
    assert!(
        !lock_file.exists(),
        "a refusal left {}",
        lock_file.display()
    );
}

#[test]
fn serve_refuses_a_public_read_api_without_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let out = support::run_timeout(
        {
            let mut cmd = support::command(dir.path());
            cmd.arg("--db")
                .arg(dir.path().join("mirror.db"))
                .args(["serve", "--listen", "0.0.0.0:0"])
                .env("PROTOCOL_WEBHOOK_SECRET", SECRET);
            cmd
        },
        std::time::Duration::from_secs(30),
    );
    assert_eq!(out.status.code(), Some(2), "a usage mistake");
    let stderr = String::from_utf8_lossy(&out.stderr);
    for fix in ["--read-token", "--read-listen", "--no-read-api"] {
        assert!(stderr.contains(fix), "names {fix}: {stderr}");
    }
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    assert!(!dir.path().join("mirror.db").exists(), "nothing created");

    // Each of the three fixes works.
    for (args, env) in [
        (
            vec!["--listen", "0.0.0.0:0", "--read-listen", "127.0.0.1:0"],
            vec![],
        ),
        (vec!["--listen", "0.0.0.0:0", "--no-read-api"], vec![]),
        (
            vec!["--listen", "0.0.0.0:0"],
            vec![("PROTOCOL_MIRROR_READ_TOKEN", "t")],
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let (mut child, main, read) = start_raw(dir.path(), &args, &env);
        let main = SocketAddr::from(([127, 0, 0, 1], main.port()));
        let on_main = support::request(main, "GET", "/v1/contacts", &[], b"").status;
        match (read, args.contains(&"--no-read-api")) {
            (Some(read), _) => {
                assert_eq!(on_main, 404, "the read API left the public listener");
                // Said so: "no such route" alone left the docs' `curl` lines, pasted
                // for the wrong port, a puzzle (a new user's probe).
                let metrics = support::request(main, "GET", "/metrics", &[], b"");
                assert_eq!(metrics.status, 404);
                assert!(
                    metrics.text().contains("does not serve the read API")
                        && metrics.text().contains("--read-listen"),
                    "{}",
                    metrics.text()
                );
                let webhooks = support::request(read, "POST", "/webhooks", &[], b"");
                assert_eq!(webhooks.status, 404);
                assert!(
                    webhooks.text().contains("serve --listen"),
                    "{}",
                    webhooks.text()
                );
                assert_eq!(
                    support::request(read, "GET", "/v1/contacts", &[], b"").status,
                    200
                );
                assert_eq!(
                    support::request(read, "GET", "/metrics", &[], b"").status,
                    200
                );
            }
            (None, true) => assert_eq!(on_main, 404),
            (None, false) => assert_eq!(on_main, 401, "token required"),
        }
        let webhook = support::event("w", "contact.created", json!({"id": "c"}));
        let signature = protocol_verify::sign(SECRET, &webhook);
        let response = support::request(
            main,
            "POST",
            "/webhooks",
            &[("x-protocol-signature", &signature)],
            &webhook,
        );
        assert_eq!(response.status, 200, "webhooks stay on the main listener");
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// Configuration mistakes found by a black-box probe: a token set with surrounding
/// spaces could never be matched (secrets are trimmed, tokens were not); a secret
/// variable holding only commas silently generated a secret; `--read-listen` on the
/// `--listen` address failed with a bare "address in use".
#[test]
fn serve_trims_the_token_and_refuses_empty_secrets_and_one_address_twice() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, main, _) = start_raw(
        dir.path(),
        &["--listen", "127.0.0.1:0"],
        &[("PROTOCOL_MIRROR_READ_TOKEN", " tok ")],
    );
    let main = SocketAddr::from(([127, 0, 0, 1], main.port()));
    let with = |token: &str| {
        let header = format!("Bearer {token}");
        support::request(
            main,
            "GET",
            "/v1/contacts",
            &[("authorization", &header)],
            b"",
        )
        .status
    };
    assert_eq!(with("tok"), 200);
    assert_eq!(with("other"), 401);
    let _ = child.kill();
    let _ = child.wait();

    let refused = |args: &[&str], secret: &str| {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = support::command(dir.path());
        cmd.arg("--db")
            .arg(dir.path().join("mirror.db"))
            .arg("serve")
            .args(args)
            .env("PROTOCOL_WEBHOOK_SECRET", secret);
        let out = support::run_timeout(cmd, std::time::Duration::from_secs(30));
        assert_eq!(out.status.code(), Some(2), "{args:?}: usage error");
        assert!(!dir.path().join("mirror.db").exists(), "nothing created");
        String::from_utf8_lossy(&out.stderr).trim().to_owned()
    };
    let stderr = refused(&["--listen", "127.0.0.1:0"], " , ");
    assert!(stderr.contains("holds no secret"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    // `sign` too (it fell back to the generated secret).
    let dir = tempfile::tempdir().unwrap();
    let mut sign = support::command(dir.path());
    sign.args(["sign"])
        .env("PROTOCOL_WEBHOOK_SECRET", " , ")
        .stdin(std::process::Stdio::null());
    let out = support::run_timeout(sign, std::time::Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    // No secret anywhere is a setting missing (it exited 3), and a secret file that
    // holds none a mistake in the configuration, as an empty token file is (a probe).
    let mut sign = support::command(dir.path());
    sign.arg("--db")
        .arg(dir.path().join("no.db"))
        .arg("sign")
        .stdin(std::process::Stdio::null());
    let out = support::run_timeout(sign, std::time::Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no secret"),
        "{out:?}"
    );
    let empty = dir.path().join("empty-secrets");
    std::fs::write(&empty, "# none yet\n").unwrap();
    std::fs::set_permissions(&empty, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let stderr = refused(
        &[
            "--listen",
            "127.0.0.1:0",
            "--secret-file",
            empty.to_str().unwrap(),
        ],
        "",
    );
    assert!(stderr.contains("holds no secret"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    // Empty counts as unset, and is said: the daemon then checks a generated secret.
    let mirror = Mirror::start_in(
        tempfile::tempdir().unwrap(),
        &[("PROTOCOL_WEBHOOK_SECRET", "")],
        &[],
    );
    assert!(
        mirror
            .startup
            .contains("PROTOCOL_WEBHOOK_SECRET is set but empty"),
        "{}",
        mirror.startup
    );
    assert!(mirror.dir().join("mirror.db.secret").exists());
    drop(mirror);
    // So is a blank read token: the read API then takes requests without one.
    let mirror = Mirror::start_in(
        tempfile::tempdir().unwrap(),
        &[("PROTOCOL_MIRROR_READ_TOKEN", "  ")],
        &[],
    );
    assert!(
        mirror
            .startup
            .contains("PROTOCOL_MIRROR_READ_TOKEN is set but empty"),
        "{}",
        mirror.startup
    );
    assert_eq!(mirror.get("/v1/contacts").status, 200);
    drop(mirror);
    // A database Protocol delivered to, served without its secret (restored without
    // its `.secret`): the secret generated for it is warned of, not announced as a
    // first run's (a black-box probe).
    let mirror = Mirror::start(&[]);
    let body = crate::support::event("e1", "contact.created", serde_json::json!({"id": "c1"}));
    assert_eq!(mirror.post_signed(&body).status, 200);
    let (_, dir) = mirror.terminate();
    let mirror = Mirror::start_in(dir, &[("PROTOCOL_WEBHOOK_SECRET", "")], &[]);
    assert!(
        mirror
            .startup
            .contains("but this database holds events delivered by webhook"),
        "{}",
        mirror.startup
    );
    drop(mirror);
    let addr = crate::support::free_address();
    let stderr = refused(&["--listen", &addr, "--read-listen", &addr], SECRET);
    assert!(stderr.contains("--read-listen"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

#[test]
fn the_openapi_document_lists_every_route() {
    let mirror = Mirror::start(&[]);
    let response = mirror.get("/openapi.json");
    assert_eq!(response.status, 200);
    let doc = response.json();
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    for resource in [
        "contacts",
        "conversations",
        "messages",
        "groups",
        "attachments",
    ] {
        assert!(
            paths[&format!("/v1/{resource}")]["get"].is_object(),
            "{resource}"
        );
        assert!(
            paths[&format!("/v1/{resource}/{{id}}")]["get"].is_object(),
            "{resource}"
        );
    }
    assert!(paths["/webhooks"]["post"].is_object());
    for route in ["/healthz", "/metrics", "/openapi.json"] {
        assert!(paths[route]["get"].is_object(), "{route}");
    }
    // Every route the document names answers (not 404) on this daemon.
    for path in paths.keys() {
        let concrete = path.replace("{id}", "x");
        let method = if path == "/webhooks" { "POST" } else { "GET" };
        let status = mirror.request(method, &concrete, &[], b"").status;
        let expected_404 = concrete.ends_with("/x");
        assert!(
            status != 404 || expected_404,
            "{method} {concrete}: {status}"
        );
    }
}

/// `GET path` with `host` as its only `Host` header (and `extra` headers).
fn get_as_host(mirror: &Mirror, host: &str, path: &str, extra: &str) -> support::Response {
    let raw = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n{extra}\r\n");
    support::send_raw(mirror.addr, raw.as_bytes())
}

/// A read API without a token answers only requests addressed to a loopback name: a
/// web page whose own name resolves to 127.0.0.1 (DNS rebinding) read the whole
/// replica, `/metrics` too (a security review). `/healthz` and `/webhooks` answer any
/// name, and behind a token the token decides.
#[test]
fn a_read_api_without_a_token_answers_only_loopback_names() {
    let mirror = mirror_with(&[message(1, "c", json!(1))], &[], &[]);
    let port = mirror.addr.port();
    for path in [
        "/v1/messages",
        "/v1/messages/m0001",
        "/metrics",
        "/openapi.json",
    ] {
        for host in [
            format!("evil.example.com:{port}"),
            "evil.example.com".to_owned(),
            format!("0.0.0.0:{port}"),
        ] {
            let response = get_as_host(&mirror, &host, path, "");
            assert_eq!(response.status, 403, "{host} {path}");
            assert_eq!(response.json()["type"], "forbidden", "{host} {path}");
            assert!(!response.text().contains("m0001"), "{host} {path}");
        }
        for host in [
            format!("127.0.0.1:{port}"),
            format!("localhost:{port}"),
            format!("[::1]:{port}"),
        ] {
            assert_eq!(
                get_as_host(&mirror, &host, path, "").status,
                200,
                "{host} {path}"
            );
        }
    }
    let health = get_as_host(&mirror, "evil.example.com", "/healthz", "");
    assert_eq!(health.status, 200);
    let body = support::event("e-host", "contact.created", json!({"id": "k"}));
    let signature = protocol_verify::sign(SECRET, &body);
    let raw = format!(
        "POST /webhooks HTTP/1.1\r\nHost: mirror.example.com\r\nConnection: close\r\n\
         Content-Length: {}\r\nx-protocol-signature: {signature}\r\n\r\n",
        body.len()
    );
    let mut raw = raw.into_bytes();
    raw.extend_from_slice(&body);
    assert_eq!(support::send_raw(mirror.addr, &raw).status, 200);

    // Behind a token, the token decides, whatever the name.
    let guarded = mirror_with(&[], &[("PROTOCOL_MIRROR_READ_TOKEN", "r3ad")], &[]);
    let bearer = "Authorization: Bearer r3ad\r\n";
    let response = get_as_host(&guarded, "mirror.example.com", "/v1/contacts", bearer);
    assert_eq!(response.status, 200);
    let proxied = format!("{bearer}X-Forwarded-For: 203.0.113.9\r\n");
    let response = get_as_host(&guarded, "127.0.0.1", "/v1/contacts", &proxied);
    assert_eq!(response.status, 200);
}

/// Without a token, a request a proxy forwarded is refused, though it names loopback
/// as a proxy on this machine makes it (`Host: 127.0.0.1:8787`, nginx's and Apache's
/// default): behind one that made `/webhooks` public, the replica was anyone's (a
/// review). `/healthz` and `/webhooks` answer it; so does a wrong method's route.
#[test]
fn a_read_api_without_a_token_refuses_what_a_proxy_forwarded() {
    let mirror = mirror_with(&[message(1, "c", json!(1))], &[], &[]);
    let host = format!("127.0.0.1:{}", mirror.addr.port());
    for header in [
        "X-Forwarded-For: 203.0.113.9",
        "x-real-ip: 203.0.113.9",
        "Forwarded: for=203.0.113.9",
        "Via: 1.1 proxy",
        "X-Forwarded-Proto: https",
        "X-Forwarded-Host: mirror.example.com",
        "X-Forwarded-Port: 443",
        "CF-Connecting-IP: 203.0.113.9",
        "True-Client-IP: 203.0.113.9",
    ] {
        let extra = format!("{header}\r\n");
        for path in [
            "/v1/messages",
            "/v1/messages/m0001",
            "/metrics",
            "/openapi.json",
        ] {
            let response = get_as_host(&mirror, &host, path, &extra);
            assert_eq!(response.status, 403, "{header} {path}");
            assert!(
                response.json()["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("came through a proxy")),
                "{header} {path}: {}",
                response.text()
            );
            assert!(!response.text().contains("m0001"), "{header} {path}");
        }
        assert_eq!(get_as_host(&mirror, &host, "/healthz", &extra).status, 200);
    }
    // A wrong method's answer on a read path says nothing more than a GET's.
    let raw = format!(
        "POST /v1/nope HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\
         X-Forwarded-For: 203.0.113.9\r\nContent-Length: 0\r\n\r\n"
    );
    assert_eq!(support::send_raw(mirror.addr, raw.as_bytes()).status, 403);
    assert_eq!(get_as_host(&mirror, &host, "/v1/messages", "").status, 200);
}

/// HTTP/1.1 requires `Host` (RFC 9112): a request without one is answered 400 on every
/// route, the read API's data not given (it was, as to HTTP/1.0: a black-box probe);
/// HTTP/1.0 may leave it out. Two, or one that names no host, are refused too.
#[test]
fn an_http_1_1_request_without_host_is_refused() {
    let mirror = mirror_with(&[message(1, "c", json!(1))], &[], &[]);
    for path in ["/v1/messages", "/healthz", "/metrics", "/nowhere"] {
        let raw = format!("GET {path} HTTP/1.1\r\nConnection: close\r\n\r\n");
        let response = support::send_raw(mirror.addr, raw.as_bytes());
        assert_eq!(response.status, 400, "{path}");
        assert_eq!(response.json()["type"], "invalid_request", "{path}");
        assert!(
            response.json()["message"]
                .as_str()
                .unwrap()
                .contains("Host")
        );
    }
    let body = support::event("e-no-host", "contact.created", json!({"id": "k"}));
    let signature = protocol_verify::sign(SECRET, &body);
    let raw = format!(
        "POST /webhooks HTTP/1.1\r\nConnection: close\r\nContent-Length: {}\r\n\
         x-protocol-signature: {signature}\r\n\r\n",
        body.len()
    );
    let mut raw = raw.into_bytes();
    raw.extend_from_slice(&body);
    assert_eq!(support::send_raw(mirror.addr, &raw).status, 400);
    for hosts in [
        "Host: 127.0.0.1\r\nHost: 127.0.0.1\r\n",
        "Host: a b\r\n",
        "Host: 127.0.0.1:99999\r\n",
    ] {
        let raw = format!("GET /healthz HTTP/1.1\r\n{hosts}Connection: close\r\n\r\n");
        let response = support::send_raw(mirror.addr, raw.as_bytes());
        assert_eq!(response.status, 400, "{hosts}");
    }
    let empty = b"GET /healthz HTTP/1.1\r\nHost:\r\nConnection: close\r\n\r\n";
    assert_eq!(support::send_raw(mirror.addr, empty).status, 200);
    let old = support::send_raw(mirror.addr, b"GET /v1/messages HTTP/1.0\r\n\r\n");
    assert_eq!(old.status, 200);
    assert!(old.text().contains("m0001"));
}

/// Each listener has its own `--max-connections`: a flood of silent connections on
/// the public webhook listener holds up nothing on `--read-listen` (with one limit
/// for both, a review's `/healthz` there waited 5 s).
#[test]
fn a_full_webhook_listener_holds_up_nothing_on_the_read_listener() {
    let dir = tempfile::tempdir().unwrap();
    let (child, main, read) = start_raw(
        dir.path(),
        &[
            "--listen",
            "127.0.0.1:0",
            "--read-listen",
            "127.0.0.1:0",
            "--max-connections",
            "4",
        ],
        &[],
    );
    let mut child = support::Reaped(child);
    let read = read.expect("a read listener");
    let held: Vec<std::net::TcpStream> = (0..20)
        .map(|_| std::net::TcpStream::connect(main).unwrap())
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(300));
    for path in ["/healthz", "/v1/contacts", "/metrics"] {
        let started = std::time::Instant::now();
        let response = support::request(read, "GET", path, &[], b"");
        assert_eq!(response.status, 200, "{path}");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(2),
            "{path}: {:?}",
            started.elapsed()
        );
    }
    drop(held);
    support::signal(&child.0, "TERM");
    support::wait_timeout(&mut child.0, std::time::Duration::from_secs(30)).unwrap();
}

/// A page still being written when SIGTERM comes is written whole before the daemon
/// exits: it is written as it is read from the database, after its handler returned,
/// and shutdown (waiting only for handlers) cut 27 MB pages off in the middle (a
/// black-box probe).
#[test]
fn a_page_being_written_at_sigterm_is_written_whole() {
    use std::io::{Read, Write};
    let text = "x".repeat(900 * 1024);
    let events: Vec<Vec<u8>> = (0..30)
        .map(|i| {
            support::event(
                &format!("e{i}"),
                "message.created",
                json!({"id": format!("m{i:02}"), "conversation_id": "c", "message": text}),
            )
        })
        .collect();
    let mut mirror = mirror_with(&events, &[], &[]);
    let mut stream = std::net::TcpStream::connect(mirror.addr).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    write!(
        stream,
        "GET /v1/messages?limit=100 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    )
    .unwrap();
    let mut answer = vec![0; 64 * 1024];
    let first = stream.read(&mut answer).unwrap();
    answer.truncate(first);
    support::signal(&mirror.child, "TERM");
    // A slow reader: about a second for the page.
    let mut buf = vec![0; 64 * 1024];
    loop {
        std::thread::sleep(std::time::Duration::from_millis(2));
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
        }
        if answer.ends_with(b"\r\n0\r\n\r\n") {
            break;
        }
    }
    let response = support::parse_response(&answer);
    assert_eq!(response.status, 200);
    let page: Value = serde_json::from_slice(&response.body)
        .unwrap_or_else(|e| panic!("{} bytes of page, cut off: {e}", response.body.len()));
    assert_eq!(ids(&page).len(), 30);
    let status = support::wait_timeout(&mut mirror.child, std::time::Duration::from_secs(30))
        .expect("the daemon did not exit");
    assert!(status.success(), "the daemon exited with {status}");
}

/// A body sent along with a `GET` is read and thrown away, as a 404's is: the
/// connection then serves the sender's next request. (Left unread, a body of 64 KiB
/// or more closed the connection after the answer, without `Connection: close`: a
/// black-box probe.)
#[test]
fn a_body_sent_with_a_get_leaves_the_connection_usable() {
    use std::io::{Read, Write};
    let mirror = mirror_with(&[], &[], &[]);
    let body = vec![b'x'; 200 * 1024];
    for (path, host, status) in [
        ("/healthz", "127.0.0.1", 200),
        ("/metrics", "127.0.0.1", 200),
        ("/v1/contacts", "127.0.0.1", 200),
        ("/v1/contacts/nobody", "127.0.0.1", 404),
        ("/v1/contacts", "example.com", 403),
    ] {
        let mut stream = std::net::TcpStream::connect(mirror.addr).unwrap();
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(30)))
            .unwrap();
        let mut writer = stream.try_clone().unwrap();
        let mut raw = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        raw.extend_from_slice(&body);
        raw.extend_from_slice(
            b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
        );
        let sending = std::thread::spawn(move || writer.write_all(&raw));
        let mut answers = Vec::new();
        let _ = stream.read_to_end(&mut answers);
        let _ = sending.join().unwrap();
        let answers = String::from_utf8_lossy(&answers);
        let statuses: Vec<&str> = answers
            .match_indices("HTTP/1.1 ")
            .map(|(at, _)| &answers[at + 9..at + 12])
            .collect();
        assert_eq!(
            statuses,
            [status.to_string().as_str(), "200"],
            "{path} as {host}: {}",
            &answers[..answers.len().min(600)]
        );
    }
}
