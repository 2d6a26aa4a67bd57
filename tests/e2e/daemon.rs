//! The daemon as a process: concurrent senders and group commit, shutdown and kill
//! while requests are in flight, secrets, slow clients, `/healthz` and `/metrics`.

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::{
    self, Mirror, SECRET, event, event_count, metric, open_db, outcome, post_signed_to as post,
    run_timeout, snapshot,
};

// ---------------------------------------------------------------------------------------
// Concurrency
// ---------------------------------------------------------------------------------------

/// Event `n` of a stream of distinct events over all five resources.
fn distinct_event(n: usize) -> Vec<u8> {
    let id = format!("o{n:05}");
    let (kind, payload) = match n % 5 {
        0 => (
            "contact.created",
            json!({"id": id, "username": format!("user {n}")}),
        ),
        1 => (
            "conversation.created",
            json!({"id": id, "contact_id": "nobody", "group_id": null, "is_muted": false}),
        ),
        2 => (
            "message.created",
            json!({"id": id, "conversation_id": "v", "message": format!("hello {n}"),
                   "attachments": [{"id": format!("a{n:05}"), "filename": "f.pdf"}],
                   "updated_at": 100}),
        ),
        3 => (
            "group.updated",
            json!({"id": id, "name": format!("group {n}"),
                   "contacts": [{"id": "k1", "username": "kevin"}]}),
        ),
        _ => (
            "attachment.created",
            json!({"id": id, "message_id": "m", "file_size": n}),
        ),
    };
    event(&format!("e{n:05}"), kind, payload)
}

/// Calls `send(n)` for every `n` in `0..events`, from `senders` threads at once.
fn from_senders(senders: usize, events: usize, send: impl Fn(usize) + Sync) {
    let next = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..senders {
            scope.spawn(|| {
                loop {
                    let n = next.fetch_add(1, Ordering::SeqCst);
                    if n >= events {
                        break;
                    }
                    send(n);
                }
            });
        }
    });
}

#[test]
fn concurrent_senders_are_all_applied_in_group_commits() {
    const SENDERS: usize = 64;
    const EVENTS: usize = 5000;
    let mirror = Mirror::start(&[]);
    let addr = mirror.addr;
    let failures = Mutex::new(Vec::new());
    from_senders(SENDERS, EVENTS, |n| {
        let answer = post(addr, &distinct_event(n)).map(|r| (r.status, r.text()));
        match answer {
            Ok((200, text)) if text.contains(r#""status":"applied""#) => {}
            other => failures.lock().unwrap().push(format!("e{n:05}: {other:?}")),
        }
    });
    let failures = failures.into_inner().unwrap();
    assert!(
        failures.is_empty(),
        "{} events not applied, e.g. {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert_eq!(event_count(&mirror.db), EVENTS as i64);
    let applied: i64 = open_db(&mirror.db)
        .query_row(
            "SELECT COUNT(DISTINCT event_id) FROM events WHERE outcome = 'applied'",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(applied, EVENTS as i64);

    let text = mirror.metrics();
    let batches = metric(&text, "protocol_mirror_commit_batch_size_count", "");
    let events = metric(&text, "protocol_mirror_commit_batch_size_sum", "");
    let singles = metric(
        &text,
        "protocol_mirror_commit_batch_size_bucket",
        "le=\"1.0\"",
    );
    assert_eq!(events, EVENTS as f64, "{text}");
    assert!(
        batches < EVENTS as f64 && singles < batches,
        "no batch held more than one event: {batches} batches, {singles} of one event"
    );
    eprintln!("{EVENTS} events in {batches} commits ({singles} of a single event)");
}

/// Under sustained load the WAL file stays bounded: the background checkpointer copies
/// it and the writer's own checkpoint (every 4,000 pages, 16 MiB) lets it start over.
/// The database grows well past that size, and every page of it went through the WAL.
#[test]
fn the_wal_stays_bounded_under_sustained_load() {
    const SENDERS: usize = 32;
    const EVENTS: usize = 6000;
    let mirror = Mirror::start(&[]);
    let addr = mirror.addr;
    let text = "lorem ipsum dolor sit amet ".repeat(80);
    let refused = AtomicUsize::new(0);
    from_senders(SENDERS, EVENTS, |n| {
        let body = event(
            &format!("w{n:05}"),
            "message.created",
            json!({"id": format!("m{n:05}"), "conversation_id": format!("c{}", n % 97),
                   "message": format!("{n} {text}"), "updated_at": 1}),
        );
        if !matches!(post(addr, &body), Ok(r) if r.status == 200) {
            refused.fetch_add(1, Ordering::SeqCst);
        }
    });
    assert_eq!(refused.into_inner(), 0);
    let size = |suffix: &str| {
        std::fs::metadata(support::with_suffix(&mirror.db, suffix)).map_or(0, |m| m.len())
    };
    // Let the checkpointer copy the last frames into the database file.
    std::thread::sleep(Duration::from_millis(500));
    let (db, wal) = (size(""), size("-wal"));
    eprintln!("database {db} bytes, WAL file {wal} bytes");
    assert!(
        db > 32 << 20,
        "the test needs more data than the WAL bound: {db} bytes"
    );
    assert!(
        wal < 24 << 20,
        "the WAL grew to {wal} bytes (database {db})"
    );
    assert_eq!(event_count(&mirror.db), EVENTS as i64);
}

#[test]
fn concurrent_redeliveries_of_one_event_apply_it_once() {
    const SENDERS: usize = 32;
    let mirror = Mirror::start(&[]);
    let body = event(
        "e-same",
        "contact.updated",
        json!({"id": "c1", "username": "once"}),
    );
    let statuses: Vec<String> = std::thread::scope(|scope| {
        let senders: Vec<_> = (0..SENDERS)
            .map(|_| {
                scope.spawn(|| {
                    let response = post(mirror.addr, &body).unwrap();
                    assert_eq!(response.status, 200, "{}", response.text());
                    response.json()["status"].as_str().unwrap().to_owned()
                })
            })
            .collect();
        senders.into_iter().map(|s| s.join().unwrap()).collect()
    });
    let applied = statuses.iter().filter(|s| *s == "applied").count();
    let duplicate = statuses.iter().filter(|s| *s == "duplicate").count();
    assert_eq!((applied, duplicate), (1, SENDERS - 1), "{statuses:?}");
    assert_eq!(event_count(&mirror.db), 1);
    let duplicates: i64 = open_db(&mirror.db)
        .query_row("SELECT duplicates FROM events", [], |row| row.get(0))
        .unwrap();
    assert_eq!(duplicates, SENDERS as i64 - 1);
}

/// Failed commits that the 10 s log limit held back are told at the stop, with the
/// first one's error: a stop within 10 s of the last line left them unsaid (a review).
#[test]
fn failed_commits_held_back_are_told_at_the_stop() {
    let mirror = Mirror::start(&[]);
    let contact = |n: usize| {
        event(
            &format!("e{n}"),
            "contact.created",
            json!({"id": format!("c{n}")}),
        )
    };
    assert_eq!(mirror.post_signed(&contact(1)).status, 200);
    rusqlite::Connection::open(&mirror.db)
        .unwrap()
        .execute_batch(
            "CREATE TRIGGER refuse BEFORE INSERT ON events \
             BEGIN SELECT RAISE(ABORT, 'refused by the test'); END;",
        )
        .unwrap();
    // The first fails alone (it may be its own data's doing), and is no failed commit
    // of events; the second is, and is logged; the other two are held back.
    for n in 2..=5 {
        assert_eq!(mirror.post_signed(&contact(n)).status, 503, "e{n}");
    }
    let (status, stderr) = mirror.stop_with_stderr();
    assert!(status.success(), "{stderr}");
    assert!(
        stderr.contains("since the last line: 2")
            && stderr.matches("refused by the test").count() >= 2,
        "{stderr}"
    );
}

#[test]
fn a_full_queue_gets_503_with_retry_after_and_stores_nothing() {
    let mirror = Mirror::start(&["--queue", "1"]);
    // A lock held here blocks the writer: with a queue of one, one event is in the
    // writer, one waits in the queue, and the third is turned away at once.
    let locker = rusqlite::Connection::open(&mirror.db).unwrap();
    locker.execute_batch("BEGIN IMMEDIATE").unwrap();
    let senders: Vec<_> = (1..=3)
        .map(|n| {
            let addr = mirror.addr;
            let body = event(
                &format!("e{n}"),
                "contact.created",
                json!({"id": format!("c{n}")}),
            );
            let sender = std::thread::spawn(move || post(addr, &body).unwrap());
            std::thread::sleep(Duration::from_millis(400));
            sender
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(3);
    while senders.iter().all(|s| !s.is_finished()) {
        assert!(Instant::now() < deadline, "no event was turned away");
        std::thread::sleep(Duration::from_millis(10));
    }
    let depth = metric(&mirror.metrics(), "protocol_mirror_queue_depth", "");
    let finished: Vec<bool> = senders.iter().map(|s| s.is_finished()).collect();
    locker.execute_batch("ROLLBACK").unwrap();
    drop(locker);
    let responses: Vec<_> = senders.into_iter().map(|s| s.join().unwrap()).collect();
    assert_eq!(finished.iter().filter(|f| **f).count(), 1, "{responses:?}");
    let turned_away = finished.iter().position(|f| *f).unwrap();
    for (i, response) in responses.iter().enumerate() {
        if i == turned_away {
            assert_eq!(response.status, 503, "{}", response.text());
            assert!(
                response.header("retry-after").is_some(),
                "{:?}",
                response.headers
            );
        } else {
            assert_eq!(response.status, 200, "e{}: {}", i + 1, response.text());
        }
    }
    assert_eq!(depth, 1.0, "queue depth with one event waiting");
    let turned_away = format!("e{}", turned_away + 1);
    assert_eq!(
        outcome(&mirror.db, &turned_away),
        None,
        "the 503 stored something"
    );
    assert_eq!(event_count(&mirror.db), 2);
    // Said at the default level, at a bounded rate (it was logged at debug alone:
    // 15,000 such 503s left no line; an operator probe).
    let (status, stderr) = mirror.stop_with_stderr();
    assert!(status.success(), "{stderr}");
    assert_eq!(
        stderr
            .matches("answered a webhook 503: the mirror is busy")
            .count(),
        1,
        "{stderr}"
    );
}

#[test]
fn keep_alive_connections_carry_several_webhooks_in_order() {
    let mirror = Mirror::start(&[]);
    let mut raw = Vec::new();
    for n in 0..3 {
        let body = event(
            &format!("e{n}"),
            "contact.updated",
            json!({"id": "c1", "username": format!("v{n}")}),
        );
        let signature = protocol_verify::sign(SECRET, &body);
        raw.extend_from_slice(
            format!(
                "POST /webhooks HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\
                 x-protocol-signature: {signature}\r\n{}\r\n",
                body.len(),
                if n == 2 { "Connection: close\r\n" } else { "" }
            )
            .as_bytes(),
        );
        raw.extend_from_slice(&body);
    }
    // All three pipelined in one write.
    let mut stream = TcpStream::connect(mirror.addr).unwrap();
    stream.write_all(&raw).unwrap();
    let (bytes, _) = wait_for_close(&mut stream, Duration::from_secs(10)).expect("not closed");
    let text = String::from_utf8_lossy(&bytes);
    for n in 0..3 {
        assert!(
            text.contains(&format!(r#""event_id":"e{n}","status":"applied""#))
                || text.contains(&format!(r#""status":"applied","event_id":"e{n}""#)),
            "{text}"
        );
    }
    assert_eq!(text.matches("HTTP/1.1 200").count(), 3, "{text}");
    let contact = crate::support::object(&mirror.db, protocol_types::Resource::Contact, "c1");
    assert_eq!(contact, Some(json!({"id": "c1", "username": "v2"})));
}

/// A signed webhook request as raw HTTP/1.1 bytes (the connection kept alive).
fn signed_request(body: &[u8]) -> Vec<u8> {
    let signature = protocol_verify::sign(SECRET, body);
    let mut raw = format!(
        "POST /webhooks HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\
         x-protocol-signature: {signature}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    raw.extend_from_slice(body);
    raw
}

/// A client that shuts its sending side once its request is written (`nc -N`, some
/// health checkers and senders) still gets its answer, and its event is applied: the
/// server used to see the end of input and close the connection without a word (a
/// black-box probe).
#[test]
fn a_client_that_half_closes_after_its_request_gets_the_answer() {
    // The daemon logs why hyper ended a connection at debug level: this test failed
    // once in CI (a connection closed with no answer), and never again in hundreds of
    // runs; should it fail again, its message shows the daemon's log.
    let mirror = Mirror::start_in(
        tempfile::tempdir().unwrap(),
        &[
            ("PROTOCOL_WEBHOOK_SECRET", SECRET),
            ("RUST_LOG", "info,protocol_mirror::serve=debug"),
        ],
        &[],
    );
    let raw = signed_request(&event("e-half", "contact.created", json!({"id": "c1"})));
    for request in [raw, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()] {
        let mut stream = TcpStream::connect(mirror.addr).unwrap();
        stream.write_all(&request).unwrap();
        stream.shutdown(std::net::Shutdown::Write).unwrap();
        let (bytes, _) = wait_for_close(&mut stream, Duration::from_secs(10))
            .unwrap_or_else(|| panic!("not closed; the daemon's log:\n{}", mirror.stderr()));
        assert!(
            !bytes.is_empty(),
            "closed with no answer; the daemon's log:\n{}",
            mirror.stderr()
        );
        let answer = crate::support::parse_response(&bytes);
        assert_eq!(answer.status, 200, "{}", answer.text());
    }
    assert_eq!(outcome(&mirror.db, "e-half").as_deref(), Some("applied"));
}

// ---------------------------------------------------------------------------------------
// Shutdown and kill with requests in flight
// ---------------------------------------------------------------------------------------

/// How many attachments each message of the shutdown tests embeds.
const EMBEDDED: usize = 3;

/// A `message.created` with `EMBEDDED` attachments: applied whole or not at all.
fn message_with_attachments(n: usize) -> Vec<u8> {
    let attachments: Vec<_> = (0..EMBEDDED)
        .map(|a| {
            json!({"id": format!("a{n:05}-{a}"), "filename": format!("{a}.pdf"),
                        "created_at": 10 + a})
        })
        .collect();
    event(
        &format!("e{n:05}"),
        "message.created",
        json!({"id": format!("m{n:05}"), "conversation_id": "v1", "message": "hi",
               "attachments": attachments, "created_at": 1, "updated_at": 1}),
    )
}

/// What the senders saw: for each event sent, whether it got a 2xx.
struct Sent {
    acked: BTreeMap<usize, bool>,
    after_signal: usize,
}

/// Runs `SENDERS` threads posting distinct messages to `mirror` until it goes away;
/// calls `stop` (which ends the daemon) once `before` events were acknowledged.
fn send_until_stopped(mirror: Mirror, before: usize, stop: impl FnOnce(Mirror)) -> Sent {
    const SENDERS: usize = 24;
    let addr = mirror.addr;
    let next = AtomicUsize::new(0);
    let acked_count = AtomicUsize::new(0);
    let signalled = AtomicBool::new(false);
    let after_signal = AtomicUsize::new(0);
    let acked = Mutex::new(BTreeMap::new());
    let deadline = Instant::now() + Duration::from_secs(60);
    std::thread::scope(|scope| {
        for _ in 0..SENDERS {
            scope.spawn(|| {
                loop {
                    let n = next.fetch_add(1, Ordering::SeqCst);
                    let answer = post(addr, &message_with_attachments(n));
                    let ok = matches!(&answer, Ok(r) if (200..300).contains(&r.status));
                    if let Ok(r) = &answer {
                        assert!(ok || r.status == 503, "e{n:05}: {} {}", r.status, r.text());
                    }
                    acked.lock().unwrap().insert(n, ok);
                    if ok {
                        acked_count.fetch_add(1, Ordering::SeqCst);
                        if signalled.load(Ordering::SeqCst) {
                            after_signal.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                    if answer.is_err() && signalled.load(Ordering::SeqCst) {
                        break; // the daemon is gone
                    }
                    assert!(Instant::now() < deadline, "the senders never stopped");
                }
            });
        }
        while acked_count.load(Ordering::SeqCst) < before {
            assert!(Instant::now() < deadline, "too few events acknowledged");
            std::thread::sleep(Duration::from_millis(5));
        }
        signalled.store(true, Ordering::SeqCst);
        stop(mirror);
    });
    Sent {
        acked: acked.into_inner().unwrap(),
        after_signal: after_signal.into_inner(),
    }
}

/// Every acknowledged message is in the replica with all its attachments, and every
/// other one is there whole or not at all.
fn assert_acked_stored_and_nothing_partial(db: &std::path::Path, sent: &Sent) {
    let state = snapshot(db);
    let has = |resource: &str, id: String| state.objects.contains_key(&(resource.to_owned(), id));
    let mut unacked_stored = 0;
    for (&n, &ok) in &sent.acked {
        let event_id = format!("e{n:05}");
        let logged = outcome(db, &event_id);
        let message = has("message", format!("m{n:05}"));
        let attachments = (0..EMBEDDED)
            .filter(|a| has("attachment", format!("a{n:05}-{a}")))
            .count();
        let whole = logged.as_deref() == Some("applied") && message && attachments == EMBEDDED;
        let absent = logged.is_none() && !message && attachments == 0;
        if ok {
            assert!(
                whole,
                "{event_id} was acknowledged but is not stored whole: logged {logged:?}, \
                 message {message}, {attachments} attachments"
            );
        } else {
            assert!(
                whole || absent,
                "{event_id} is partial: logged {logged:?}, message {message}, \
                 {attachments} attachments"
            );
            unacked_stored += usize::from(whole);
        }
        if message {
            let object = &state.objects[&("message".to_owned(), format!("m{n:05}"))];
            assert_eq!(
                object["attachments"].as_array().map(Vec::len),
                Some(EMBEDDED),
                "{object}"
            );
        }
    }
    // Nothing is stored that was never sent.
    assert_eq!(
        event_count(db) as usize,
        sent.acked.values().filter(|ok| **ok).count() + unacked_stored
    );
}

#[test]
fn sigterm_finishes_in_flight_requests_and_loses_nothing_acknowledged() {
    let mirror = Mirror::start(&[]);
    let status = Mutex::new(None);
    let sent = send_until_stopped(mirror, 300, |mirror| {
        *status.lock().unwrap() = Some(mirror.terminate());
    });
    let (status, dir) = status.into_inner().unwrap().unwrap();
    assert!(status.success(), "the daemon exited with {status}");
    let acked = sent.acked.values().filter(|ok| **ok).count();
    eprintln!(
        "{} events sent, {acked} acknowledged, {} of them after SIGTERM",
        sent.acked.len(),
        sent.after_signal
    );
    let db = dir.path().join("mirror.db");
    assert_acked_stored_and_nothing_partial(&db, &sent);

    // A restart on the same database serves it, and remembers every event.
    let mirror = Mirror::start_in(dir, &[("PROTOCOL_WEBHOOK_SECRET", SECRET)], &[]);
    let (&first, _) = sent.acked.iter().find(|(_, ok)| **ok).unwrap();
    let response = mirror.post_signed(&message_with_attachments(first));
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.json()["status"], "duplicate");
    let response = mirror.post_signed(&message_with_attachments(1_000_000));
    assert_eq!(response.json()["status"], "applied", "{}", response.text());
    let (status, _) = mirror.terminate();
    assert!(status.success(), "the daemon exited with {status}");
}

/// Reads one response from a kept-alive connection: its status, and whether it closes
/// the connection. `None` when the connection ends before a whole response.
fn read_one_response(stream: &mut TcpStream) -> Option<(u16, bool)> {
    let mut bytes = Vec::new();
    let mut byte = [0u8; 1];
    while !bytes.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => bytes.push(byte[0]),
            _ => return None,
        }
    }
    let head = String::from_utf8_lossy(&bytes).to_ascii_lowercase();
    let status = head.split(' ').nth(1)?.parse().ok()?;
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map_or(Some(0), |v| v.trim().parse().ok())?;
    let mut body = vec![0; length];
    stream.read_exact(&mut body).ok()?;
    Some((status, head.contains("connection: close")))
}

/// Senders that keep their connection alive between webhooks, as Protocol's may, are
/// all answered through a shutdown: a request written to a kept-alive connection is
/// served (its answer closing the connection), and a sender that connects once the
/// listener is closed is refused, so it knows nothing was delivered. Closing such
/// connections at once left about two requests per shutdown of 32 busy senders
/// unanswered (their senders could not tell whether their event was stored) and made
/// others fail midway through being written.
#[test]
fn sigterm_answers_every_request_written_to_a_kept_alive_connection() {
    const SENDERS: usize = 16;
    let mirror = Mirror::start(&[]);
    let addr = mirror.addr;
    let next = AtomicUsize::new(0);
    let answered = AtomicUsize::new(0);
    let unanswered = Mutex::new(Vec::new());
    let (status, _dir) = std::thread::scope(|scope| {
        for _ in 0..SENDERS {
            scope.spawn(|| {
                let mut stream = None;
                loop {
                    if stream.is_none() {
                        match TcpStream::connect(addr) {
                            Ok(s) => stream = Some(s),
                            Err(_) => break, // refused: the daemon stopped listening
                        }
                    }
                    let conn = stream.as_mut().unwrap();
                    let n = next.fetch_add(1, Ordering::SeqCst);
                    if conn.write_all(&signed_request(&distinct_event(n))).is_err() {
                        unanswered
                            .lock()
                            .unwrap()
                            .push(format!("{n}: cut while written"));
                        break;
                    }
                    match read_one_response(conn) {
                        Some((status, closes)) => {
                            assert!(status == 200 || status == 503, "{n}: {status}");
                            answered.fetch_add(1, Ordering::SeqCst);
                            if closes {
                                stream = None;
                            }
                        }
                        None => {
                            unanswered.lock().unwrap().push(format!("{n}: no answer"));
                            break;
                        }
                    }
                }
            });
        }
        while answered.load(Ordering::SeqCst) < 300 {
            std::thread::sleep(Duration::from_millis(5));
        }
        mirror.terminate()
    });
    assert!(status.success(), "the daemon exited with {status}");
    let unanswered = unanswered.into_inner().unwrap();
    assert!(
        unanswered.is_empty(),
        "{} of {} requests: {unanswered:?}",
        unanswered.len(),
        next.load(Ordering::SeqCst)
    );
}

/// A signal waits for the request in flight; meanwhile `/healthz` says the daemon
/// is shutting down (it said ok to a probe on a connection kept alive).
#[test]
fn sigint_waits_for_the_request_in_flight() {
    let mut mirror = Mirror::start(&[]);
    let db = mirror.db.clone();
    // Another connection holds the write lock, so the request waits in the writer
    // (for less than the daemon's 5 s busy timeout).
    let locker = rusqlite::Connection::open(&db).unwrap();
    locker.execute_batch("BEGIN IMMEDIATE").unwrap();
    let addr = mirror.addr;
    let in_flight = std::thread::spawn(move || {
        post(
            addr,
            &event("e-in-flight", "contact.created", json!({"id": "c1"})),
        )
    });
    // A balancer's probe, its head not all sent as the signal comes.
    let mut probe = TcpStream::connect(addr).unwrap();
    probe
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(700));
    support::signal(&mirror.child, "INT");
    std::thread::sleep(Duration::from_millis(700));
    assert!(
        mirror.child.try_wait().unwrap().is_none(),
        "the daemon exited with a request in flight"
    );
    // Draining: said so, not "ok" (it was, to a connection kept alive: a probe).
    probe.write_all(b"\r\n").unwrap();
    std::thread::sleep(Duration::from_millis(200));
    locker.execute_batch("ROLLBACK").unwrap();
    drop(locker);
    let mut head = [0u8; 12];
    probe.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 503");
    let answer = in_flight.join().unwrap();
    let response = answer.expect("the request in flight got no answer");
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.json()["status"], "applied");
    let status = support::wait_timeout(&mut mirror.child, Duration::from_secs(30))
        .expect("the daemon did not exit");
    assert!(status.success(), "the daemon exited with {status}");
    assert_eq!(outcome(&db, "e-in-flight").as_deref(), Some("applied"));
}

/// A second signal stops the daemon at once: a slow request (here an event the writer
/// waits to commit, another connection holding the write lock) held the shutdown for
/// as long as it took, up to the request time limit, and a second Ctrl-C did nothing
/// (found by a black-box probe). Nothing acknowledged is lost.
#[test]
fn a_second_signal_stops_at_once() {
    let mut mirror = Mirror::start(&[]);
    let body = event("e-before", "contact.created", json!({"id": "c1"}));
    assert_eq!(mirror.post_signed(&body).status, 200);
    let locker = rusqlite::Connection::open(&mirror.db).unwrap();
    locker.execute_batch("BEGIN IMMEDIATE").unwrap();
    let addr = mirror.addr;
    let stalled = std::thread::spawn(move || {
        post(
            addr,
            &event("e-in-flight", "contact.created", json!({"id": "c2"})),
        )
    });
    std::thread::sleep(Duration::from_millis(300));
    support::signal(&mirror.child, "INT");
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        mirror.child.try_wait().unwrap().is_none(),
        "the first signal waits for the request in flight"
    );
    let at = std::time::Instant::now();
    support::signal(&mirror.child, "INT");
    let status = support::wait_timeout(&mut mirror.child, Duration::from_secs(10))
        .expect("the second signal stops the daemon");
    assert!(at.elapsed() < Duration::from_secs(5), "{:?}", at.elapsed());
    assert_eq!(status.code(), Some(130), "{status}");
    let _ = stalled.join();
    locker.execute_batch("ROLLBACK").unwrap();
    assert_eq!(outcome(&mirror.db, "e-before").as_deref(), Some("applied"));
    assert_eq!(
        outcome(&mirror.db, "e-in-flight"),
        None,
        "never acknowledged"
    );
}

/// A second signal stops the daemon at once also once its listeners are closed, while
/// the rest of the stop runs (here a reconcile pass waiting for an API that never
/// answers): it was ignored until the stop was done, and the daemon exited 0 (a
/// review).
#[test]
fn a_second_signal_stops_at_once_after_the_listeners_close() {
    let api = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", api.local_addr().unwrap());
    // Takes connections and answers none.
    let held = std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in api.incoming().take(4) {
            held.push(stream);
        }
        held
    });
    let mut mirror = Mirror::start_in(
        tempfile::tempdir().unwrap(),
        &[
            ("PROTOCOL_WEBHOOK_SECRET", SECRET),
            ("PROTOCOL_API_TOKEN", "tok"),
        ],
        &["--reconcile-every", "1h", "--api-url", &url, "--rate", "0"],
    );
    std::thread::sleep(Duration::from_millis(500));
    support::signal(&mirror.child, "TERM");
    std::thread::sleep(Duration::from_millis(600));
    let at = Instant::now();
    support::signal(&mirror.child, "TERM");
    let status = support::wait_timeout(&mut mirror.child, Duration::from_secs(15))
        .expect("the daemon stops");
    assert_eq!(status.code(), Some(130), "{status}\n{}", mirror.stderr());
    assert!(at.elapsed() < Duration::from_secs(1), "{:?}", at.elapsed());
    drop(held);
}

/// A second signal that comes while an idle daemon stops says so, however far the
/// stop has come: exit 130 with the line, or, where the stop was done first, a clean
/// stop, never both. One heard after the servers had closed ended the process silently
/// (a crash probe: 4 rounds of 9 of two SIGTERMs 5 ms apart left exit 130 and no line);
/// one heard as the stop ended logged its line beside "stopped cleanly", with exit 0 or
/// 130 (a black-box probe: 1-3% of rounds of signals 1 ms apart; too rare for this
/// test to catch, which checks the pairing wherever the second signal lands).
#[test]
fn a_second_signal_always_says_so() {
    for round in 0..8 {
        let mut mirror = Mirror::start(&[]);
        support::signal(&mirror.child, "TERM");
        std::thread::sleep(Duration::from_millis(2 + round));
        support::signal(&mirror.child, "TERM");
        let status = support::wait_timeout(&mut mirror.child, Duration::from_secs(15))
            .expect("the daemon stops");
        // The draining thread reads the rest once the daemon is gone.
        std::thread::sleep(Duration::from_millis(200));
        let stderr = mirror.stderr();
        let (second, clean) = (
            stderr.contains("second signal"),
            stderr.contains("stopped cleanly"),
        );
        match status.code() {
            Some(130) => assert!(second && !clean, "round {round}:\n{stderr}"),
            Some(0) => assert!(clean && !second, "round {round}:\n{stderr}"),
            _ => panic!("round {round}: {status}\n{stderr}"),
        }
    }
}

/// A connection whose request head has not all come is no request in flight: it held
/// the shutdown for the whole header time limit (10 s; found by a black-box probe).
#[test]
fn a_half_sent_request_head_does_not_hold_the_shutdown() {
    let mut mirror = Mirror::start(&[]);
    let mut half = std::net::TcpStream::connect(mirror.addr).unwrap();
    std::io::Write::write_all(&mut half, b"POST /webhooks HTTP/1.1\r\nHost: x\r\n").unwrap();
    let idle = std::net::TcpStream::connect(mirror.addr).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let at = Instant::now();
    support::signal(&mirror.child, "TERM");
    let status = support::wait_timeout(&mut mirror.child, Duration::from_secs(15))
        .expect("the daemon stops");
    assert!(status.success(), "{status}\n{}", mirror.stderr());
    assert!(at.elapsed() < Duration::from_secs(3), "{:?}", at.elapsed());
    drop((half, idle));
}

/// A webhook whose body has not all come is not waited for at shutdown: it is answered
/// 503 and nothing of it is stored (it held the shutdown for the whole request time
/// limit, 30 s; found by a regression probe). One the writer has is still finished.
#[test]
fn a_stalled_body_does_not_hold_the_shutdown() {
    let mut mirror = Mirror::start(&[]);
    let mut stalled = std::net::TcpStream::connect(mirror.addr).unwrap();
    std::io::Write::write_all(
        &mut stalled,
        b"POST /webhooks HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\
          x-protocol-signature: 00\r\n\r\n{\"id\":\"e-stalled\"",
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let at = Instant::now();
    support::signal(&mirror.child, "TERM");
    let (bytes, _) = wait_for_close(&mut stalled, Duration::from_secs(10)).expect("not closed");
    let answer = crate::support::parse_response(&bytes);
    assert_eq!(answer.status, 503, "{}", answer.text());
    assert!(answer.text().contains("shutting down"), "{}", answer.text());
    let status = support::wait_timeout(&mut mirror.child, Duration::from_secs(15))
        .expect("the daemon stops");
    assert!(status.success(), "{status}\n{}", mirror.stderr());
    assert!(at.elapsed() < Duration::from_secs(3), "{:?}", at.elapsed());
    assert_eq!(event_count(&mirror.db), 0);
}

/// A body thrown away after its answer (a 404's, a GET's), which its sender dribbles,
/// does not hold the shutdown: its connection, kept open while the body was read,
/// held it for the whole request time limit (a review).
#[test]
fn a_dribbled_body_after_its_answer_does_not_hold_the_shutdown() {
    for path in ["GET /v1/contacts", "POST /nowhere"] {
        let mut mirror = Mirror::start(&[]);
        let mut stream = std::net::TcpStream::connect(mirror.addr).unwrap();
        let head = format!("{path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2000000\r\n\r\n");
        std::io::Write::write_all(&mut stream, head.as_bytes()).unwrap();
        let mut writer = stream.try_clone().unwrap();
        let dribbling = std::thread::spawn(move || {
            while std::io::Write::write_all(&mut writer, &[b'x'; 512]).is_ok() {
                std::thread::sleep(Duration::from_millis(300));
            }
        });
        std::thread::sleep(Duration::from_millis(500));
        let at = Instant::now();
        support::signal(&mirror.child, "TERM");
        let status = support::wait_timeout(&mut mirror.child, Duration::from_secs(40))
            .expect("the daemon stops");
        assert!(status.success(), "{status}\n{}", mirror.stderr());
        assert!(
            at.elapsed() < Duration::from_secs(3),
            "{path}: {:?}",
            at.elapsed()
        );
        let _ = stream.shutdown(std::net::Shutdown::Both);
        dribbling.join().unwrap();
    }
}

/// After a clean stop the database file alone holds every event, as a user who copies
/// it expects: the read API's connections, and another program's idle one, are no
/// reason to leave the write-ahead log beside it. (The writer's close, not the last
/// of the daemon's connections, copied nothing: up to 16 MB of events stayed in the
/// log after "stopped cleanly", in 3 of 6 stops; a probe.)
#[test]
fn a_clean_stop_leaves_every_event_in_the_database_file() {
    let mirror = Mirror::start(&[]);
    for n in 0..300 {
        let response = mirror.post_signed(&message_with_attachments(n));
        assert_eq!(response.status, 200, "{}", response.text());
    }
    // Every reader thread opens its connection.
    for _ in 0..8 {
        assert_eq!(mirror.get("/v1/messages?limit=100").status, 200);
    }
    // Another program has the database open, between two reads.
    let other = open_db(&mirror.db);
    assert_eq!(
        other
            .query_row("SELECT COUNT(*) FROM events", [], |row| row
                .get::<_, i64>(0))
            .unwrap(),
        300
    );
    let (status, dir) = mirror.terminate();
    assert!(status.success(), "the daemon exited with {status}");
    let db = dir.path().join("mirror.db");
    let wal = std::fs::metadata(dir.path().join("mirror.db-wal")).map_or(0, |m| m.len());
    assert_eq!(wal, 0, "the write-ahead log was left holding events");
    // The file alone, copied without anything beside it.
    let copy = tempfile::tempdir().unwrap();
    std::fs::copy(&db, copy.path().join("mirror.db")).unwrap();
    assert_eq!(event_count(&copy.path().join("mirror.db")), 300);
    drop(other);

    // With no other program, nothing is left beside the file: the readers' connections
    // close first, and the last of the daemon's takes the log away.
    let mirror = Mirror::start_in(dir, &[("PROTOCOL_WEBHOOK_SECRET", SECRET)], &[]);
    for n in 300..400 {
        let response = mirror.post_signed(&message_with_attachments(n));
        assert_eq!(response.status, 200, "{}", response.text());
    }
    for _ in 0..8 {
        assert_eq!(mirror.get("/v1/messages?limit=100").status, 200);
    }
    let (status, dir) = mirror.terminate();
    assert!(status.success(), "the daemon exited with {status}");
    for left in ["mirror.db-wal", "mirror.db-shm"] {
        assert!(!dir.path().join(left).exists(), "{left} was left");
    }
    assert_eq!(event_count(&dir.path().join("mirror.db")), 400);
}

/// The 401s a rate limit holds back are told of at the end of their period; one that
/// never came (the daemon stopped first) lost them.
#[test]
fn refusals_held_back_are_logged_at_shutdown() {
    let mut mirror = Mirror::start(&[]);
    let body = event("e-forged", "contact.created", json!({"id": "c1"}));
    for _ in 0..3 {
        let refused = mirror.post_with(&[("x-protocol-signature", "00")], &body);
        assert_eq!(refused.status, 401);
    }
    support::signal(&mirror.child, "TERM");
    let status = support::wait_timeout(&mut mirror.child, Duration::from_secs(15))
        .expect("the daemon stops");
    assert!(status.success(), "{status}");
    // The test's thread reading the daemon's stderr may be a moment behind its exit.
    let held = "webhooks refused (401) for their signature since the last line: 2";
    support::wait_until(Duration::from_secs(5), || mirror.stderr().contains(held));
    let logs = mirror.stderr();
    assert_eq!(logs.matches("refused a webhook (401)").count(), 1, "{logs}");
    assert!(logs.contains(held), "{logs}");
}

/// The access log, turned on alone, logs a line per request (the read API's had no
/// log at all: an operator probe), quoting a path that is not plain ASCII; it is off by
/// default.
#[test]
fn the_access_log_logs_each_request_when_turned_on() {
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("PROTOCOL_WEBHOOK_SECRET", SECRET),
        ("RUST_LOG", "info,protocol_mirror::serve::access=debug"),
    ];
    let mirror = Mirror::start_in(dir, &env, &[]);
    let body = event("e-logged", "contact.created", json!({"id": "c1"}));
    assert_eq!(mirror.post_signed(&body).status, 200);
    assert_eq!(mirror.get("/v1/contacts?limit=1").status, 200);
    // A parameter not the read API's may hold a secret: its name and value are hidden.
    let hidden = mirror.get("/v1/contacts?limit=1&access_token=s3cr3t-t0ken");
    assert_eq!(hidden.status, 400);
    let raw = "GET /v1/contacts/c\u{e9} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    assert_eq!(support::send_raw(mirror.addr, raw.as_bytes()).status, 404);
    let (status, logs) = mirror.stop_with_stderr();
    assert!(status.success(), "{status}\n{logs}");
    let lines: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("serve::access"))
        .collect();
    assert_eq!(lines.len(), 4, "{logs}");
    assert!(
        !logs.contains("s3cr3t-t0ken") && !logs.contains("access_token"),
        "{logs}"
    );
    assert!(lines[0].contains("POST /webhooks") && lines[0].contains("status=200"));
    assert!(
        lines[1].contains("GET /v1/contacts?limit=1") && lines[1].contains("peer=\"127.0.0.1:")
    );
    assert!(
        lines[2].contains("GET /v1/contacts?limit=1&[hidden] "),
        "{logs}"
    );
    assert!(lines[3].contains("GET \"/v1/contacts/c\u{e9}\""), "{logs}");
    assert!(lines[3].contains("status=404"), "{logs}");
    let mirror = Mirror::start(&[]);
    assert_eq!(mirror.get("/v1/contacts").status, 200);
    let (_, logs) = mirror.stop_with_stderr();
    assert!(!logs.contains("serve::access"), "{logs}");
}

/// A daemon started where an import into a new database was killed said nothing of
/// the partial file (readers name it). Once a writer has created the database, an
/// import goes into it and that file would never be used nor named again (it stayed,
/// 187 MB in a black-box probe): the writer that creates the database removes it, and
/// says so.
#[test]
fn serve_where_an_import_was_killed_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let partial = dir.path().join(".mirror.db.importing");
    std::fs::write(&partial, b"partial").unwrap();
    let mirror = Mirror::start_in(dir, &[("PROTOCOL_WEBHOOK_SECRET", support::SECRET)], &[]);
    let stderr = mirror.stderr();
    assert!(stderr.contains("was stopped before it ended"), "{stderr}");
    assert!(
        stderr.contains("removed") && stderr.contains(".mirror.db.importing"),
        "{stderr}"
    );
    assert!(!partial.exists());
    assert_eq!(mirror.get("/healthz").status, 200);
    // `migrate` (and `backfill`) creating the database do the same; `rebuild` names it.
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("m.db");
    let partial = dir.path().join(".m.db.importing");
    std::fs::write(&partial, b"partial").unwrap();
    let db_arg = db.to_str().unwrap();
    let out = support::run(dir.path(), &["--db", db_arg, "rebuild"], b"");
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && text.contains(".m.db.importing"),
        "{text}"
    );
    let out = support::run(dir.path(), &["--db", db_arg, "migrate"], b"");
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && text.contains("removed"), "{text}");
    assert!(db.exists() && !partial.exists());
}

/// SIGHUP (the terminal that started the daemon closed) had its default action: the
/// daemon ended at once, without its shutdown.
#[test]
fn sighup_shuts_down_cleanly() {
    let mut mirror = Mirror::start(&[]);
    let body = event("e-before", "contact.created", json!({"id": "c1"}));
    assert_eq!(mirror.post_signed(&body).status, 200);
    support::signal(&mirror.child, "HUP");
    let status = support::wait_timeout(&mut mirror.child, Duration::from_secs(10))
        .expect("SIGHUP stops the daemon");
    assert!(status.success(), "{status}\n{}", mirror.stderr());
    // The test's thread reading the daemon's stderr may be a moment behind its exit.
    assert!(
        support::wait_until(Duration::from_secs(5), || mirror
            .stderr()
            .contains("stopped cleanly")),
        "{}",
        mirror.stderr()
    );
    assert_eq!(outcome(&mirror.db, "e-before").as_deref(), Some("applied"));
    // Which signal, and which build started (the log said neither: an operator's probe).
    let log = mirror.stderr();
    assert!(log.contains("signal=\"SIGHUP\""), "{log}");
    assert!(
        log.contains(&format!(
            "schema={}",
            protocol_mirror::store::SCHEMA_VERSION
        )),
        "{log}"
    );
}

/// A daemon started with SIGHUP ignored (`nohup`, a shell's `trap '' HUP`) keeps it
/// ignored: it stopped when the terminal it was started from closed, as if `nohup`
/// had not been there (a review). SIGTERM still stops it cleanly.
#[test]
fn a_daemon_started_under_nohup_outlives_its_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("mirror.db");
    let mut cmd = std::process::Command::new("sh");
    cmd.arg("-c")
        .arg("trap '' HUP; exec \"$0\" \"$@\"")
        .arg(support::bin())
        .args(support::serve_args(&db, &[]))
        .env("HOME", dir.path())
        .env_remove("RUST_LOG")
        .env_remove("PROTOCOL_MIRROR_DB")
        .env("PROTOCOL_WEBHOOK_SECRET", support::SECRET);
    let mut mirror = Mirror::launch(cmd, Some(dir), db);
    support::signal(&mirror.child, "HUP");
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        mirror.is_running(),
        "SIGHUP stopped it:\n{}",
        mirror.stderr()
    );
    let body = event("e-after", "contact.created", json!({"id": "c1"}));
    assert_eq!(mirror.post_signed(&body).status, 200);
    let (status, stderr) = mirror.stop_with_stderr();
    assert!(status.success(), "{status}\n{stderr}");
    assert!(stderr.contains("stopped cleanly"), "{stderr}");
}

#[test]
fn sigkill_loses_nothing_acknowledged() {
    let mirror = Mirror::start(&[]);
    let dir = Mutex::new(None);
    let sent = send_until_stopped(mirror, 300, |mirror| {
        *dir.lock().unwrap() = Some(mirror.kill());
    });
    let dir = dir.into_inner().unwrap().unwrap();
    assert_acked_stored_and_nothing_partial(&dir.path().join("mirror.db"), &sent);
}

// ---------------------------------------------------------------------------------------
// Secrets
// ---------------------------------------------------------------------------------------

#[cfg(unix)]
#[test]
fn a_secret_is_generated_on_first_start_and_reused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mirror.db.secret");
    let mirror = Mirror::start_in(dir, &[], &[]);
    assert!(
        mirror.startup.contains(&path.display().to_string()),
        "stderr does not name {}:\n{}",
        path.display(),
        mirror.startup
    );
    assert_eq!(support::mode(&path), 0o600, "mode of {}", path.display());
    let secret = std::fs::read_to_string(&path).unwrap().trim().to_owned();
    assert!(
        secret.len() >= 32,
        "a short secret: {} characters",
        secret.len()
    );
    assert!(
        !mirror.startup.contains(&secret),
        "stderr prints the secret"
    );

    let body = event("e1", "contact.created", json!({"id": "c1"}));
    let response = mirror.post_signed_by(&secret, &body);
    assert_eq!(response.status, 200, "{}", response.text());
    let response = mirror.post_signed(&event("e2", "contact.created", json!({"id": "c2"})));
    assert_eq!(response.status, 401, "the test secret is not configured");
    let (status, dir) = mirror.terminate();
    assert!(status.success());

    // The second start reuses it.
    let mirror = Mirror::start_in(dir, &[], &[]);
    assert!(
        mirror.startup.contains(&path.display().to_string())
            && mirror.startup.to_lowercase().contains("using"),
        "stderr does not say it uses {}:\n{}",
        path.display(),
        mirror.startup
    );
    assert!(
        !mirror.startup.contains(&secret),
        "stderr prints the secret"
    );
    assert_eq!(std::fs::read_to_string(&path).unwrap().trim(), secret);
    assert_eq!(support::mode(&path), 0o600);
    let response = mirror.post_signed_by(&secret, &body);
    assert_eq!(
        response.json()["status"],
        "duplicate",
        "{}",
        response.text()
    );
    let response = mirror.post_signed_by(
        &secret,
        &event("e3", "contact.created", json!({"id": "c3"})),
    );
    assert_eq!(response.json()["status"], "applied", "{}", response.text());

    // `sign` and `send`, with no secret configured, use the generated one.
    let home = mirror.dir().to_owned();
    let db = mirror.db.to_str().unwrap().to_owned();
    let out = support::run(&home, &["--db", &db, "sign"], b"hello");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        protocol_verify::sign(&secret, b"hello")
    );
    let url = format!("http://{}/webhooks", mirror.addr);
    let body = event("e4", "contact.created", json!({"id": "c4"}));
    let out = support::run(&home, &["--db", &db, "send", "--url", &url, "-"], &body);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        support::outcome(&mirror.db, "e4").as_deref(),
        Some("applied")
    );
    // Signed with another secret: the 401 comes with where the right one is.
    let body = event("e5", "contact.created", json!({"id": "c5"}));
    let out = support::command(&home)
        .env("PROTOCOL_WEBHOOK_SECRET", "not-the-daemons")
        .args(["send", "--url", &url, "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(&body)?;
            child.wait_with_output()
        })
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("sign with one of its secrets"), "{stderr}");

    // Configured secrets replace the generated one, which Protocol may still sign
    // with: the start says so, unless the generated file is configured too.
    let (status, dir) = mirror.terminate();
    assert!(status.success());
    let mirror = Mirror::start_in(dir, &[("PROTOCOL_WEBHOOK_SECRET", "whsec_new")], &[]);
    assert!(
        mirror
            .startup
            .contains("not using the generated webhook secret")
            && mirror.startup.contains(&path.display().to_string()),
        "{}",
        mirror.startup
    );
    let body = event("e5", "contact.created", json!({"id": "c5"}));
    assert_eq!(mirror.post_signed_by(&secret, &body).status, 401);
    let (status, dir) = mirror.terminate();
    assert!(status.success());
    let file = path.display().to_string();
    let mirror = Mirror::start_in(
        dir,
        &[("PROTOCOL_WEBHOOK_SECRET", "whsec_new")],
        &["--secret-file", &file],
    );
    assert!(!mirror.startup.contains("not using"), "{}", mirror.startup);
    assert_eq!(mirror.post_signed_by(&secret, &body).status, 200);
    let body = event("e6", "contact.created", json!({"id": "c6"}));
    assert_eq!(mirror.post_signed_by("whsec_new", &body).status, 200);
    // The generated secret copied into the environment is not left out either.
    let (status, dir) = mirror.terminate();
    assert!(status.success());
    let both = format!("{secret},whsec_new");
    let mirror = Mirror::start_in(dir, &[("PROTOCOL_WEBHOOK_SECRET", &both)], &[]);
    assert!(!mirror.startup.contains("not using"), "{}", mirror.startup);
}

#[test]
fn rotation_accepts_every_configured_secret() {
    let dir = tempfile::tempdir().unwrap();
    let mirror = Mirror::start_in(
        dir,
        &[("PROTOCOL_WEBHOOK_SECRET", "whsec_old,whsec_new")],
        &[],
    );
    for (i, secret) in ["whsec_old", "whsec_new"].iter().enumerate() {
        let body = event(
            &format!("e{i}"),
            "contact.created",
            json!({"id": format!("c{i}")}),
        );
        let response = mirror.post_signed_by(secret, &body);
        assert_eq!(response.status, 200, "{secret}: {}", response.text());
    }
    for secret in [
        "whsec_third",
        "whsec_old,whsec_new",
        "whsec_oldwhsec_new",
        SECRET,
    ] {
        let body = event("e-third", "contact.created", json!({"id": "c-third"}));
        let response = mirror.post_signed_by(secret, &body);
        assert_eq!(response.status, 401, "{secret}: {}", response.text());
        assert!(!response.text().contains("whsec_"), "{}", response.text());
    }
    assert_eq!(event_count(&mirror.db), 2);
    assert!(
        !mirror.dir().join("mirror.db.secret").exists(),
        "a secret was generated although one is configured"
    );
}

#[cfg(unix)]
#[test]
fn secret_files_must_be_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("webhook-secret");
    std::fs::write(&file, "# rotated in March\nwhsec_from_file\n").unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut cmd = support::command(dir.path());
    cmd.arg("--db")
        .arg(dir.path().join("mirror.db"))
        .args(["serve", "--listen", "127.0.0.1:0", "--secret-file"])
        .arg(&file);
    let output = run_timeout(cmd, Duration::from_secs(20));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "started with a 0644 secret file");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "not one line:\n{stderr}");
    assert!(lines[0].contains(&file.display().to_string()), "{stderr}");
    assert!(!stderr.contains("whsec_from_file"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    for created in ["mirror.db", "mirror.db.lock"] {
        assert!(
            !dir.path().join(created).exists(),
            "a refused start made {created}"
        );
    }
    // The same for a generated secret kept beside the database.
    let beside = tempfile::tempdir().unwrap();
    let generated = beside.path().join("mirror.db.secret");
    std::fs::write(&generated, "whsec_generated\n").unwrap();
    std::fs::set_permissions(&generated, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut cmd = support::command(beside.path());
    cmd.arg("--db")
        .arg(beside.path().join("mirror.db"))
        .args(["serve", "--listen", "127.0.0.1:0"]);
    let output = run_timeout(cmd, Duration::from_secs(20));
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("the generated webhook secret file: ") && stderr.contains("chmod 600"),
        "{stderr}"
    );
    assert!(!stderr.contains("whsec_generated"), "{stderr}");
    for created in ["mirror.db", "mirror.db.lock"] {
        assert!(
            !beside.path().join(created).exists(),
            "a refused start made {created}"
        );
    }

    // Once private, it is used (and no secret is generated).
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let file_arg = file.display().to_string();
    let mirror = Mirror::start_in(dir, &[], &["--secret-file", &file_arg]);
    let body = event("e1", "contact.created", json!({"id": "c1"}));
    let response = mirror.post_signed_by("whsec_from_file", &body);
    assert_eq!(response.status, 200, "{}", response.text());
    let response = mirror.post_signed_by("# rotated in March", &body);
    assert_eq!(response.status, 401, "a comment line is a secret");
    assert!(!mirror.dir().join("mirror.db.secret").exists());
}

/// `serve --db db --listen listen` beside `mirror`: its exit status and stderr (it must
/// not start).
fn second_daemon_on(mirror: &Mirror, db: &Path, listen: &str) -> (bool, String) {
    let mut cmd = support::command(mirror.dir());
    cmd.arg("--db")
        .arg(db)
        .args(["serve", "--listen", listen])
        .env("PROTOCOL_WEBHOOK_SECRET", SECRET);
    let output = run_timeout(cmd, Duration::from_secs(20));
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    (output.status.success(), stderr)
}

/// [`second_daemon_on`] any free port.
fn second_daemon(mirror: &Mirror, db: &Path) -> (bool, String) {
    second_daemon_on(mirror, db, "127.0.0.1:0")
}

#[test]
fn a_second_daemon_on_the_same_database_is_refused() {
    let mirror = Mirror::start(&[]);
    let (started, stderr) = second_daemon(&mirror, &mirror.db);
    assert!(!started, "a second daemon started:\n{stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "not one line:\n{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    // Started again with the same command, its address taken by the first: said as
    // the lock says it (a review: it was "address already in use").
    let (started, stderr) = second_daemon_on(&mirror, &mirror.db, &mirror.addr.to_string());
    assert!(!started, "a second daemon started:\n{stderr}");
    assert!(
        stderr.contains("in use by a protocol-mirror daemon") && stderr.contains("stop it first"),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    // A daemon of another database on that address: what to do is said (it was the
    // OS's "Address already in use" alone: a new user's walk).
    let other = tempfile::tempdir().unwrap();
    let (started, stderr) = second_daemon_on(
        &mirror,
        &other.path().join("other.db"),
        &mirror.addr.to_string(),
    );
    assert!(
        !started,
        "a second daemon started:
{stderr}"
    );
    assert!(
        stderr.contains("Address already in use")
            && stderr.contains("give this one another address"),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    // The first one is unaffected.
    let body = event("e1", "contact.created", json!({"id": "c1"}));
    assert_eq!(mirror.post_signed(&body).json()["status"], "applied");

    // Nor through a hard link: the lock and the WAL are beside each name, and two
    // daemons through two names corrupted the file (found by a black-box probe).
    let other = tempfile::tempdir().unwrap();
    let linked = other.path().join("linked.db");
    std::fs::hard_link(&mirror.db, &linked).unwrap();
    let (started, stderr) = second_daemon(&mirror, &linked);
    assert!(!started, "a daemon through a link:\n{stderr}");
    assert!(stderr.contains("2 hard links"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    let body = event("e2", "contact.created", json!({"id": "c2"}));
    assert_eq!(mirror.post_signed(&body).json()["status"], "applied");
}

/// A lock file deleted while the daemon runs (a clean-up of "stale" files) is made and
/// taken again within a second or so: a second daemon, or a `rebuild`, started after
/// it is refused as before (both ran beside the daemon: a probe).
#[test]
fn a_lock_file_deleted_under_the_daemon_is_taken_again() {
    let mirror = Mirror::start(&[]);
    let lock_file = mirror.db.with_extension("db.lock");
    assert!(lock_file.exists());
    std::fs::remove_file(&lock_file).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(lock_file.exists() && mirror.stderr().contains("made it again")) {
        assert!(Instant::now() < deadline, "{}", mirror.stderr());
        std::thread::sleep(Duration::from_millis(100));
    }
    let (started, stderr) = second_daemon(&mirror, &mirror.db);
    assert!(!started, "a second daemon started:\n{stderr}");
    assert!(
        stderr.contains("in use by a protocol-mirror daemon"),
        "{stderr}"
    );
    let rebuild = support::run(
        mirror.db.parent().unwrap(),
        &["--db", mirror.db.to_str().unwrap(), "rebuild"],
        b"",
    );
    assert_eq!(
        rebuild.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&rebuild.stderr)
    );
    let body = event("e1", "contact.created", json!({"id": "c1"}));
    assert_eq!(mirror.post_signed(&body).json()["status"], "applied");

    // Taken by another process first: said as an error naming it, and taken back once
    // that one lets go.
    let wait_for = |text: &str, count: usize| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while mirror.stderr().matches(text).count() < count {
            assert!(
                Instant::now() < deadline,
                "no {text:?}:\n{}",
                mirror.stderr()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    std::fs::remove_file(&lock_file).unwrap();
    let other =
        protocol_mirror::lock::ServeLock::acquire(&mirror.db, protocol_mirror::lock::Role::Rebuild)
            .unwrap();
    wait_for("another process (rebuild, pid", 1);
    drop(other);
    wait_for("made it again", 2);
    // What keeps it from being taken is said with its cause (it said "cannot lock"
    // alone), and a new failure is said even after another one.
    std::fs::remove_file(&lock_file).unwrap();
    std::os::unix::fs::symlink("nowhere", &lock_file).unwrap();
    wait_for("symbolic link", 1);
    std::fs::remove_file(&lock_file).unwrap();
    wait_for("made it again", 3);
    mirror.assert_no_panic();
}

// ---------------------------------------------------------------------------------------
// Slow clients
// ---------------------------------------------------------------------------------------

/// Reads from `stream` until the server closes it; returns what was read and when,
/// or `None` if it was still open after `limit`.
fn wait_for_close(stream: &mut TcpStream, limit: Duration) -> Option<(Vec<u8>, Duration)> {
    let started = Instant::now();
    stream.set_read_timeout(Some(limit)).unwrap();
    let mut bytes = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return Some((bytes, started.elapsed())),
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return None;
            }
            Err(_) => return Some((bytes, started.elapsed())), // reset: closed too
        }
        if started.elapsed() > limit {
            return None;
        }
    }
}

/// Runs `slow` (which returns when its connection was closed, and how long that
/// took) while another thread keeps sending normal requests; returns how many of
/// those were answered while the slow connection was still open.
fn served_meanwhile(
    mirror: &Mirror,
    slow: impl FnOnce() -> Option<(Vec<u8>, Duration)>,
) -> (Option<(Vec<u8>, Duration)>, usize) {
    let done = AtomicBool::new(false);
    let opened = Instant::now();
    let (closed, answered) = std::thread::scope(|scope| {
        let fast = scope.spawn(|| {
            let mut answered = Vec::new();
            while !done.load(Ordering::SeqCst) {
                if answered.len() % 2 == 0 {
                    assert_eq!(mirror.get("/healthz").status, 200);
                } else {
                    let body = event(
                        &format!("e-fast-{}", answered.len()),
                        "contact.created",
                        json!({"id": "c"}),
                    );
                    let response = mirror.post_signed(&body);
                    assert_eq!(response.status, 200, "{}", response.text());
                }
                answered.push(opened.elapsed());
                std::thread::sleep(Duration::from_millis(20));
            }
            answered
        });
        let closed = slow();
        done.store(true, Ordering::SeqCst);
        (closed, fast.join().unwrap())
    });
    // Answered before the slow connection closed (with a margin for the race).
    let open_for = closed.as_ref().map_or(Duration::MAX, |(_, after)| *after);
    let meanwhile = answered
        .iter()
        .filter(|at| at.saturating_add(Duration::from_millis(200)) < open_for)
        .count();
    (closed, meanwhile)
}

#[test]
fn a_half_sent_request_line_is_closed_after_the_header_timeout() {
    let mirror = Mirror::start(&["--header-timeout", "1"]);
    let (closed, served) = served_meanwhile(&mirror, || {
        let mut slow = TcpStream::connect(mirror.addr).unwrap();
        slow.write_all(b"POST /webh").unwrap();
        wait_for_close(&mut slow, Duration::from_secs(6))
    });
    let Some((bytes, after)) = closed else {
        panic!("the connection was still open after 6 s");
    };
    assert!(
        bytes.is_empty() || bytes.starts_with(b"HTTP/1.1 408"),
        "{:?}",
        String::from_utf8_lossy(&bytes)
    );
    assert!(after < Duration::from_secs(4), "closed after {after:?}");
    assert!(served > 0, "nothing was served meanwhile");
}

#[test]
fn idle_connections_are_closed_after_the_header_timeout() {
    let mirror = Mirror::start(&["--header-timeout", "1"]);
    let (closed, served) = served_meanwhile(&mirror, || {
        // One connection sends nothing; another goes idle after a keep-alive request.
        let mut silent = TcpStream::connect(mirror.addr).unwrap();
        let mut kept = TcpStream::connect(mirror.addr).unwrap();
        kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut head = [0u8; 12];
        kept.read_exact(&mut head).unwrap();
        assert_eq!(&head, b"HTTP/1.1 200");
        let silent =
            std::thread::spawn(move || wait_for_close(&mut silent, Duration::from_secs(6)));
        let kept = wait_for_close(&mut kept, Duration::from_secs(6));
        let silent = silent.join().unwrap();
        assert!(
            silent.is_some(),
            "a silent connection was still open after 6 s"
        );
        assert!(
            kept.is_some(),
            "an idle keep-alive was still open after 6 s"
        );
        [silent, kept]
            .into_iter()
            .flatten()
            .max_by_key(|(_, after)| *after)
    });
    let (_, after) = closed.unwrap();
    assert!(after < Duration::from_secs(4), "closed after {after:?}");
    assert!(served > 0, "nothing was served meanwhile");
}

#[test]
fn headers_dripped_byte_by_byte_are_cut_off_after_the_header_timeout() {
    let mirror = Mirror::start(&["--header-timeout", "1"]);
    let (closed, served) = served_meanwhile(&mirror, || {
        let mut slow = TcpStream::connect(mirror.addr).unwrap();
        slow.write_all(b"POST /webhooks HTTP/1.1\r\nHost: x\r\n")
            .unwrap();
        let mut writer = slow.try_clone().unwrap();
        let dripping = std::thread::spawn(move || {
            let started = Instant::now();
            while started.elapsed() < Duration::from_secs(8) {
                if writer.write_all(b"X").is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        let closed = wait_for_close(&mut slow, Duration::from_secs(6));
        let _ = slow.shutdown(std::net::Shutdown::Both);
        dripping.join().unwrap();
        closed
    });
    let Some((_, after)) = closed else {
        panic!("a client dripping its headers kept the connection for 6 s");
    };
    assert!(after < Duration::from_secs(4), "closed after {after:?}");
    assert!(served > 0, "nothing was served meanwhile");
}

// ---------------------------------------------------------------------------------------
// /healthz and /metrics
// ---------------------------------------------------------------------------------------

#[test]
fn healthz_answers_ok() {
    let mirror = Mirror::start(&[]);
    let response = mirror.get("/healthz");
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.json(), json!({"status": "ok"}));
    // Every answer, an error too, says no browser should guess its type (a probe).
    for path in ["/healthz", "/v1/contacts", "/v1/nothing", "/metrics"] {
        assert_eq!(
            mirror.get(path).header("x-content-type-options"),
            Some("nosniff"),
            "{path}"
        );
    }
    // Probing stores nothing.
    assert_eq!(event_count(&mirror.db), 0);
}

/// Each `/healthz` was a commit of its own (with its fsync), open to anyone: a flood
/// of it halved the webhooks' throughput. A probe's answer now stands for a second,
/// a failure too (so that requests waiting behind a probe that waits for a lock do not
/// wait once each).
#[test]
fn healthz_probes_at_most_once_a_second() {
    let mirror = Mirror::start(&[]);
    let first = Instant::now();
    assert_eq!(mirror.get("/healthz").status, 200);
    let locker = rusqlite::Connection::open(&mirror.db).unwrap();
    locker.execute_batch("BEGIN IMMEDIATE").unwrap();
    let cached = mirror.get("/healthz");
    if first.elapsed() < Duration::from_millis(800) {
        assert_eq!(cached.status, 200, "a probe's answer stands for a second");
    }
    std::thread::sleep(protocol_mirror::serve::HEALTH_FRESH);
    // Locked: requests that arrive while a probe waits take its failure (they do not
    // wait the busy timeout each, in turn).
    let answers: Vec<(u16, Duration)> = std::thread::scope(|scope| {
        let checks: Vec<_> = (0..3)
            .map(|_| {
                scope.spawn(|| {
                    let at = Instant::now();
                    (mirror.get("/healthz").status, at.elapsed())
                })
            })
            .collect();
        checks.into_iter().map(|c| c.join().unwrap()).collect()
    });
    let busy = protocol_mirror::store::BUSY_TIMEOUT;
    for (status, took) in &answers {
        assert_eq!(*status, 503, "{answers:?}");
        assert!(*took < busy + Duration::from_secs(3), "{answers:?}");
    }
    locker.execute_batch("ROLLBACK").unwrap();
    // A failure does not stand: the next request probes again.
    assert_eq!(mirror.get("/healthz").status, 200);
    mirror.assert_no_panic();
}

/// While an import's transaction runs past the busy timeout (one event cascading over
/// many rows), the daemon is alive and waits for it: `/healthz` says ok, and an event
/// sent meanwhile is applied once the import commits (it got 503).
#[test]
fn healthz_and_events_wait_out_an_imports_long_transaction() {
    let mirror = Mirror::start(&[]);
    let mark = protocol_mirror::lock::ImportMark::take(&mirror.db).unwrap();
    let locker = rusqlite::Connection::open(&mirror.db).unwrap();
    locker.execute_batch("BEGIN IMMEDIATE").unwrap();
    let (health, posted) = std::thread::scope(|scope| {
        let health = scope.spawn(|| mirror.get("/healthz"));
        let posted = scope.spawn(|| {
            mirror.post_signed(&event("e-during", "contact.created", json!({"id": "c1"})))
        });
        std::thread::sleep(protocol_mirror::store::BUSY_TIMEOUT + Duration::from_secs(2));
        locker.execute_batch("COMMIT").unwrap();
        drop(mark);
        (health.join().unwrap(), posted.join().unwrap())
    });
    assert_eq!(health.status, 200, "{}", health.text());
    assert_eq!(posted.status, 200, "{}", posted.text());
    assert_eq!(posted.json()["status"], "applied");

    // `/healthz` alone, with no event waiting (its probe was a batch of its own, and
    // failed at the busy timeout: found by a regression probe).
    std::thread::sleep(protocol_mirror::serve::HEALTH_FRESH);
    let mark = protocol_mirror::lock::ImportMark::take(&mirror.db).unwrap();
    locker.execute_batch("BEGIN IMMEDIATE").unwrap();
    let (health, took) = std::thread::scope(|scope| {
        let health = scope.spawn(|| {
            let at = Instant::now();
            (mirror.get("/healthz"), at.elapsed())
        });
        std::thread::sleep(protocol_mirror::store::BUSY_TIMEOUT + Duration::from_secs(2));
        locker.execute_batch("COMMIT").unwrap();
        drop(mark);
        health.join().unwrap()
    });
    assert_eq!(health.status, 200, "{}", health.text());
    // At once, not after the busy timeout a supervisor may not wait for.
    assert!(took < Duration::from_secs(3), "{took:?}");
    mirror.assert_no_panic();
}

/// Connections that end before the router sees a request are counted by reason: a
/// request the HTTP library refuses itself (its own 400), and a head that never
/// comes (a probe's slowloris and floods of malformed requests were in no series).
#[test]
fn metrics_count_connections_closed_before_a_request() {
    let mirror = Mirror::start(&["--header-timeout", "1"]);
    let mut malformed = TcpStream::connect(mirror.addr).unwrap();
    malformed.write_all(b"NOT HTTP AT ALL\r\n\r\n").unwrap();
    let mut answer = String::new();
    let _ = malformed.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    let mut silent = TcpStream::connect(mirror.addr).unwrap();
    silent
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let _ = silent.read(&mut [0; 16]);
    let closed = |text: &str, reason: &str| {
        metric(
            text,
            "protocol_mirror_http_connections_closed_on_error_total",
            &format!("reason=\"{reason}\""),
        )
    };
    // The scrape once `reason` was counted (a closed connection's task may be a
    // moment behind), or after 5 s.
    let counted = |reason: &str| {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let text = mirror.metrics();
            if closed(&text, reason) >= 1.0 || Instant::now() > deadline {
                break text;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let text = counted("header_timeout");
    assert_eq!(closed(&text, "malformed"), 1.0, "{text}");
    assert!(closed(&text, "header_timeout") >= 1.0, "{text}");
    assert_eq!(closed(&text, "write_timeout"), 0.0, "{text}");
    // A keep-alive connection left idle after its request is told apart: no fault.
    let mut idle = TcpStream::connect(mirror.addr).unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut answer = Vec::new();
    let _ = idle.read_to_end(&mut answer);
    assert!(answer.starts_with(b"HTTP/1.1 200"));
    let text = counted("idle_timeout");
    assert!(closed(&text, "idle_timeout") >= 1.0, "{text}");
    mirror.assert_no_panic();
}

#[test]
fn metrics_count_events_requests_latency_batches_queue_and_size() {
    let mirror = Mirror::start(&[]);
    let applied = event("e1", "contact.created", json!({"id": "c1"}));
    assert_eq!(mirror.post_signed(&applied).status, 200);
    assert_eq!(mirror.post_signed(&applied).status, 200); // duplicate
    let stale = event("e2", "contact.created", json!({"id": "c1"}));
    assert_eq!(mirror.post_signed(&stale).status, 200);
    let rejected = event(
        "e3",
        "message.updated",
        json!({"id": "m1", "read_at": "noon"}),
    );
    assert_eq!(mirror.post_signed(&rejected).status, 422);
    let unsupported = event("e4", "reaction.created", json!({"id": "r1"}));
    assert_eq!(mirror.post_signed(&unsupported).status, 200);
    assert_eq!(mirror.post_with(&[], &applied).status, 401);
    assert_eq!(mirror.post_signed(b"{").status, 400);

    let text = mirror.metrics();
    let events = |labels: &str| metric(&text, "protocol_mirror_events_total", labels);
    assert_eq!(
        events(r#"type="contact.created",outcome="applied""#),
        1.0,
        "{text}"
    );
    assert_eq!(
        events(r#"type="contact.created",outcome="duplicate""#),
        1.0,
        "{text}"
    );
    assert_eq!(
        events(r#"type="contact.created",outcome="stale""#),
        1.0,
        "{text}"
    );
    assert_eq!(
        events(r#"type="message.updated",outcome="rejected""#),
        1.0,
        "{text}"
    );
    assert_eq!(events(r#"outcome="unsupported""#), 1.0, "{text}");

    let requests = |status: &str| {
        metric(
            &text,
            "protocol_mirror_http_requests_total",
            &format!("status=\"{status}\""),
        )
    };
    assert_eq!(requests("200"), 4.0, "{text}");
    assert_eq!(requests("422"), 1.0, "{text}");
    assert_eq!(requests("401"), 1.0, "{text}");
    assert_eq!(requests("400"), 1.0, "{text}");
    // By route too (the 401 above is the webhook's).
    assert_eq!(
        metric(
            &text,
            "protocol_mirror_http_requests_total",
            r#"route="webhooks",status="401""#
        ),
        1.0,
        "{text}"
    );

    let latency = "protocol_mirror_http_request_duration_seconds";
    assert_eq!(
        metric(&text, &format!("{latency}_count"), r#"route="webhooks""#),
        7.0,
        "{text}"
    );
    assert!(metric(&text, &format!("{latency}_sum"), "") > 0.0, "{text}");
    // The top bucket is past the request time limit (30 s by default).
    assert!(
        text.contains(&format!(
            r#"{latency}_bucket{{le="32.768",route="webhooks"}}"#
        )),
        "{text}"
    );
    // An operator hears of a refused signature (at a bounded rate), never its secret.
    // (The daemon's stderr is read by a thread of the test: the line may be a moment
    // behind the answer.)
    let refusals = || mirror.stderr().matches("refused a webhook (401)").count();
    support::wait_until(Duration::from_secs(5), || refusals() > 0);
    assert_eq!(refusals(), 1, "{}", mirror.stderr());

    let batches = "protocol_mirror_commit_batch_size";
    assert!(
        metric(&text, &format!("{batches}_count"), "") >= 1.0,
        "{text}"
    );
    assert_eq!(metric(&text, &format!("{batches}_sum"), ""), 5.0, "{text}");
    assert!(text.contains(&format!("{batches}_bucket{{le=")), "{text}");

    assert!(
        text.lines()
            .any(|l| l.starts_with("protocol_mirror_queue_depth ")),
        "{text}"
    );
    assert_eq!(
        metric(&text, "protocol_mirror_queue_depth", ""),
        0.0,
        "{text}"
    );
    assert!(
        metric(&text, "protocol_mirror_database_size_bytes", "") > 0.0,
        "{text}"
    );
    // The daemon's own memory and descriptors, for a long run's dashboards.
    let rss = metric(&text, "protocol_mirror_process_resident_memory_bytes", "");
    assert!(rss > 1e6 && rss < 1e10, "{text}");
    let fds = metric(&text, "protocol_mirror_process_open_fds", "");
    assert!((3.0..10_000.0).contains(&fds), "{text}");

    // Prometheus's text format by default; OpenMetrics for a client that asks for it.
    let plain = mirror.get("/metrics");
    assert_eq!(
        plain.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    assert!(
        plain
            .text()
            .contains("# TYPE protocol_mirror_events_total counter"),
        "{}",
        plain.text()
    );
    let open = mirror.request(
        "GET",
        "/metrics",
        &[("Accept", "application/openmetrics-text; version=1.0.0")],
        b"",
    );
    assert_eq!(
        open.header("content-type"),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
    );
    assert!(open.text().ends_with("# EOF\n"), "{}", open.text());
}

/// A webhook secret or a read token in the environment that is not UTF-8 stops
/// `serve` in one line naming the variable (exit 2). Taken for unset, the first left
/// the daemon with a generated secret (every webhook 401), the second the read API
/// with no token; `backfill`'s token and `sign`'s secret likewise.
#[cfg(unix)]
#[test]
fn variables_that_are_not_utf8_are_refused() {
    use std::os::unix::ffi::OsStrExt;
    let latin1 = std::ffi::OsStr::from_bytes(b"caf\xe9-secret");
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("mirror.db");
    for (var, args) in [
        ("PROTOCOL_WEBHOOK_SECRET", support::serve_args(&db, &[])),
        ("PROTOCOL_MIRROR_READ_TOKEN", support::serve_args(&db, &[])),
        (
            "PROTOCOL_API_TOKEN",
            [
                "--db",
                db.to_str().unwrap(),
                "backfill",
                "--api-url",
                "http://127.0.0.1:9",
            ]
            .map(Into::into)
            .to_vec(),
        ),
        (
            "PROTOCOL_WEBHOOK_SECRET",
            ["--db", db.to_str().unwrap(), "sign"]
                .map(Into::into)
                .to_vec(),
        ),
    ] {
        let mut cmd = support::command(dir.path());
        cmd.args(&args)
            .env("PROTOCOL_WEBHOOK_SECRET", "s")
            .env(var, latin1)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        let mut child = support::Reaped(cmd.spawn().unwrap());
        let status = support::wait_timeout(&mut child.0, Duration::from_secs(20))
            .unwrap_or_else(|| panic!("{var}: {args:?} went on"));
        let err = support::take_stderr(&mut child.0);
        assert_eq!(status.code(), Some(2), "{var}: {args:?}: {err}");
        assert_eq!(
            err.trim(),
            format!("protocol-mirror: {var} is not valid UTF-8: set it to text, or unset it"),
            "{args:?}"
        );
    }
    assert!(!dir.path().join("mirror.db.secret").exists());
    // RUST_LOG that is not UTF-8 is no filter: said, as one that is no filter is.
    let out = support::command(dir.path())
        .args(["--db", db.to_str().unwrap(), "stats"])
        .env("RUST_LOG", latin1)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("RUST_LOG is not UTF-8 text, so no log filter; logging at info"),
        "{err}"
    );
}

/// `n` unsigned webhook requests whose bodies stall after their first byte (until the
/// request time limit, or the streams' drop).
fn stalled_webhooks(mirror: &Mirror, n: usize) -> Vec<TcpStream> {
    let held = (0..n)
        .map(|_| {
            let mut stream = TcpStream::connect(mirror.addr).unwrap();
            stream
                .write_all(b"POST /webhooks HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{")
                .unwrap();
            stream
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    held
}

/// Webhooks whose bodies trickle in (anyone who reaches the endpoint can send them)
/// hold no place among the signed webhooks handled at once (`--concurrency-limit`),
/// nor the read API's: a signed event, a read and `/healthz` are answered at once.
/// The places were taken before the body was read: a review's 1,100 such requests kept
/// a signed event waiting 29 s; with one limit for webhooks and reads, a probe's read
/// waited 29.7 s behind two; and `/healthz` stands outside every limit (a probe's
/// 1,100 made every answer, `/healthz`'s too, wait 4-28 s).
#[test]
fn slow_unsigned_bodies_hold_up_no_signed_webhook_read_or_healthz() {
    let mirror = Mirror::start(&["--concurrency-limit", "2"]);
    let held = stalled_webhooks(&mirror, 4);
    let quickly = |what: &str, answer: &dyn Fn() -> u16, status: u16| {
        let started = Instant::now();
        assert_eq!(answer(), status, "{what}");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{what}: {:?}",
            started.elapsed()
        );
    };
    let event = support::event("e-slow", "contact.created", json!({"id": "k"}));
    quickly(
        "a signed webhook",
        &|| mirror.post_signed(&event).status,
        200,
    );
    for path in ["/healthz", "/v1/contacts", "/metrics"] {
        quickly(path, &|| mirror.get(path).status, 200);
    }
    drop(held);
}

/// A daemon whose log can no longer be written (the reader of its pipe went away:
/// `| tee` killed, a journal restarted; or a full disk) goes on serving and stops
/// cleanly. The logging library's complaint about the failed write panicked: the
/// request that logged lost its connection, and a stop exited 3 (a black-box probe).
#[test]
fn a_daemon_whose_log_cannot_be_written_goes_on_serving() {
    use std::io::BufRead;
    // Stderr a pipe whose reader closes once the daemon listens.
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("mirror.db");
    let mut cmd = support::command(dir.path());
    cmd.args(support::serve_args(&db, &[]))
        .env("PROTOCOL_WEBHOOK_SECRET", SECRET)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let mut child = support::Reaped(cmd.spawn().unwrap());
    let addr: std::net::SocketAddr = {
        let mut stderr = std::io::BufReader::new(child.0.stderr.take().unwrap());
        loop {
            let mut line = String::new();
            assert!(stderr.read_line(&mut line).unwrap() > 0, "exited early");
            if let Some(addr) = line.trim().strip_prefix("listening on ") {
                break addr.parse().unwrap();
            }
        }
    };
    let unsigned = support::event("e0", "contact.created", json!({"id": "c0"}));
    for n in 0..3 {
        // A refused signature logs a warning.
        let refused = support::try_request(
            addr,
            "POST",
            "/webhooks",
            &[("x-protocol-signature", "00")],
            &unsigned,
        )
        .unwrap_or_else(|e| panic!("request {n}: {e}"));
        assert_eq!(refused.status, 401);
        let body = support::event(&format!("e{n}"), "contact.created", json!({"id": "c1"}));
        assert_eq!(support::post_signed_to(addr, &body).unwrap().status, 200);
    }
    support::signal(&child.0, "TERM");
    let status = support::wait_timeout(&mut child.0, Duration::from_secs(30)).unwrap();
    assert!(status.success(), "{status:?}");
    assert_eq!(support::event_count(&db), 3);

    // Stderr a full disk from the start: the notes before listening are dropped too.
    let Ok(full) = std::fs::File::options().write(true).open("/dev/full") else {
        eprintln!("skipped the second half: no /dev/full");
        return;
    };
    let listen = support::free_address();
    let mut cmd = support::command(dir.path());
    cmd.args(["--db", db.to_str().unwrap(), "serve", "--listen", &listen])
        .env("PROTOCOL_WEBHOOK_SECRET", SECRET)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(full);
    let mut child = support::Reaped(cmd.spawn().unwrap());
    let addr = listen.parse().unwrap();
    let body = support::event("e9", "contact.created", json!({"id": "c9"}));
    assert!(
        support::wait_until(Duration::from_secs(20), || {
            support::post_signed_to(addr, &body).is_ok_and(|r| r.status == 200)
        }),
        "{:?}",
        child.0.try_wait()
    );
    support::signal(&child.0, "TERM");
    let status = support::wait_timeout(&mut child.0, Duration::from_secs(30)).unwrap();
    assert!(status.success(), "{status:?}");
}

/// An import beside the daemon that cannot mark its transactions (its
/// `<db>.import.lock` is a symbolic link, refused) says so, once: it was passed over
/// without a word, and the daemon then answers 503 where it would have waited out a
/// long transaction (a probe).
#[cfg(unix)]
#[test]
fn an_import_that_cannot_mark_its_transactions_says_so() {
    let mirror = Mirror::start(&[]);
    let victim = mirror.dir().join("victim.txt");
    std::fs::write(&victim, "keep me").unwrap();
    std::os::unix::fs::symlink(&victim, support::with_suffix(&mirror.db, ".import.lock")).unwrap();
    let events: Vec<u8> = (0..3)
        .flat_map(|n| {
            let mut line = support::event(
                &format!("i{n}"),
                "contact.created",
                json!({"id": n.to_string()}),
            );
            line.push(b'\n');
            line
        })
        .collect();
    let db = mirror.db.to_str().unwrap().to_owned();
    let output = support::run(mirror.dir(), &["--db", &db, "import", "-"], &events);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert_eq!(
        stderr.matches("cannot mark this import").count(),
        1,
        "{stderr}"
    );
    assert!(stderr.contains("symbolic link"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep me");
    assert_eq!(support::event_count(&mirror.db), 3);
}

/// A redelivery of an event stored before gets its first outcome also when the
/// writer cannot take it in time (another program holds the write lock past the
/// request's time limit): SPEC, a seen id gets the status of its first outcome. It got
/// 503 "the event was not stored", though it was (a review).
#[test]
fn a_stored_event_redelivered_while_the_writer_is_held_gets_its_first_outcome() {
    let mirror = Mirror::start(&["--request-timeout", "2"]);
    let stored = event("e1", "contact.created", json!({"id": "c1"}));
    assert_eq!(mirror.post_signed(&stored).status, 200);
    let locker = rusqlite::Connection::open(&mirror.db).unwrap();
    locker.execute_batch("BEGIN IMMEDIATE").unwrap();
    let again = mirror.post_signed(&stored);
    let new = mirror.post_signed(&event("e2", "contact.created", json!({"id": "c2"})));
    // Held until the writer gave up on them: the redelivery, answered by a reader, is
    // not counted again then (it was: a probe).
    let failed = support::wait_until(Duration::from_secs(20), || {
        let text = mirror.metrics();
        support::metric(&text, "protocol_mirror_commit_failures_total", "") >= 1.0
    });
    assert!(failed, "{}", mirror.metrics());
    locker.execute_batch("ROLLBACK").unwrap();
    drop(locker);
    assert_eq!(again.status, 200, "{}", again.text());
    assert!(again.text().contains("duplicate"), "{}", again.text());
    // An event never stored still gets 503: nothing says it was.
    assert_eq!(new.status, 503, "{}", new.text());
    assert_eq!(outcome(&mirror.db, "e2"), None);
    // Counted as the writer counts a redelivery it answers (it was not: a review).
    let text = mirror.metrics();
    let duplicates = support::metric(
        &text,
        "protocol_mirror_events_total",
        "type=\"contact.created\",outcome=\"duplicate\"",
    );
    assert_eq!(duplicates, 1.0, "{text}");
}

/// The same with `--no-read-api`: the readers that look up a redelivery run without
/// the read API too (it got 503: a review).
#[test]
fn a_redelivery_gets_its_first_outcome_without_the_read_api_too() {
    let mirror = Mirror::start(&["--request-timeout", "1", "--no-read-api"]);
    let stored = event("e1", "contact.created", json!({"id": "c1"}));
    assert_eq!(mirror.post_signed(&stored).status, 200);
    let locker = rusqlite::Connection::open(&mirror.db).unwrap();
    locker.execute_batch("BEGIN IMMEDIATE").unwrap();
    let again = mirror.post_signed(&stored);
    let new = mirror.post_signed(&event("e2", "contact.created", json!({"id": "c2"})));
    locker.execute_batch("ROLLBACK").unwrap();
    drop(locker);
    assert_eq!(again.status, 200, "{}", again.text());
    assert!(again.text().contains("duplicate"), "{}", again.text());
    assert_eq!(new.status, 503, "{}", new.text());
    // And the read API stays off.
    assert_eq!(mirror.get("/v1/contacts").status, 404);
}

/// A daemon started while an import holds the database in one long transaction (one
/// event's cascade can take seconds) waits for it, as its writer waits for the
/// import's transactions later: it stopped at the busy timeout, "database is
/// locked", naming no import (a review).
#[test]
fn a_daemon_started_during_an_imports_transaction_waits_for_it() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("mirror.db");
    drop(protocol_mirror::store::Store::open(&db).unwrap());
    let mark = protocol_mirror::lock::ImportMark::take(&db).unwrap();
    let locker = rusqlite::Connection::open(&db).unwrap();
    locker.execute_batch("BEGIN IMMEDIATE").unwrap();
    let held = protocol_mirror::store::BUSY_TIMEOUT + Duration::from_secs(2);
    let started = Instant::now();
    let mirror = std::thread::scope(|scope| {
        let daemon = scope.spawn(|| {
            Mirror::try_launch(support::serve_command(dir.path(), &db), None, db.clone())
        });
        std::thread::sleep(held);
        locker.execute_batch("COMMIT").unwrap();
        drop(mark);
        daemon.join().unwrap()
    });
    let mirror = mirror.unwrap_or_else(|(status, stderr)| panic!("{status}: {stderr}"));
    assert!(started.elapsed() >= held);
    assert!(
        mirror
            .startup
            .contains("an import of this database is in a transaction: waiting for it"),
        "{}",
        mirror.startup
    );
    let body = event("e1", "contact.created", json!({"id": "c1"}));
    assert_eq!(mirror.post_signed(&body).status, 200);
    assert!(mirror.stop().success());
}

/// But another program's lock is not waited for, though an import waits for it too:
/// the import's mark is taken once its transaction has begun, not while it waits
/// (taken before, the starting daemon waited out the other program's lock, said to be
/// an import's: a review).
#[test]
fn a_daemon_starting_waits_for_no_import_that_only_waits() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("mirror.db");
    drop(protocol_mirror::store::Store::open(&db).unwrap());
    let locker = rusqlite::Connection::open(&db).unwrap();
    locker.execute_batch("BEGIN IMMEDIATE").unwrap();
    let held = protocol_mirror::store::BUSY_TIMEOUT * 3;
    let started = Instant::now();
    let refused = std::thread::scope(|scope| {
        let daemon = scope.spawn(|| {
            Mirror::try_launch(support::serve_command(dir.path(), &db), None, db.clone())
        });
        std::thread::sleep(Duration::from_secs(1));
        let import = scope.spawn(|| {
            support::run(
                dir.path(),
                &["--db", db.to_str().unwrap(), "import", "-"],
                &event("e1", "contact.created", json!({"id": "c1"})),
            )
        });
        let refused = daemon.join().unwrap();
        let at = started.elapsed();
        std::thread::sleep(held.saturating_sub(started.elapsed()));
        locker.execute_batch("COMMIT").unwrap();
        assert!(import.join().unwrap().status.success());
        (refused, at)
    });
    let (refused, at) = refused;
    let (_, stderr) = refused.map(|_| ()).expect_err("the daemon started");
    assert!(stderr.contains("database is locked"), "{stderr}");
    assert!(!stderr.contains("an import of this database"), "{stderr}");
    assert!(at < held, "refused after {at:?}");
}
