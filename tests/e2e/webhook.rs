//! `POST /webhooks` over HTTP: every row of SPEC section 3, the sample stream, and the
//! replica rules of section 4 against the reference model (`tests/model`).

use std::time::{Duration, Instant};

use protocol_types::Resource;
use serde_json::{Value, json};

use crate::model;
use crate::support::{
    Mirror, SAMPLE, SECRET, base64_encode, event, event_count, hex_decode, object, open_db,
    outcome, send_raw, snapshot,
};

/// A small valid event.
fn contact_created(event_id: &str, contact_id: &str) -> Vec<u8> {
    event(
        event_id,
        "contact.created",
        json!({"id": contact_id, "username": "kevin"}),
    )
}

/// Asserts an error answer: `status`, a JSON body `{"type": kind, "message": ...}`.
#[track_caller]
fn assert_error(response: &crate::support::Response, status: u16, kind: &str, what: &str) {
    assert_eq!(response.status, status, "{what}: {}", response.text());
    let body = response.json();
    assert_eq!(body["type"], kind, "{what}: {body}");
    assert!(body["message"].is_string(), "{what}: {body}");
}

// ---------------------------------------------------------------------------------------
// 413
// ---------------------------------------------------------------------------------------

#[test]
fn declared_oversize_bodies_get_413_before_the_signature_is_checked() {
    let mirror = Mirror::start(&[]);
    // The default limit is 1 MiB. No signature, a huge declared length and only a few
    // bytes of body: the daemon must answer 413 from the header alone (a daemon that
    // waited for the body would hang here; one that checked the signature first, 401).
    for length in [1024 * 1024 + 1, 50 * 1024 * 1024] {
        let raw = format!(
            "POST /webhooks HTTP/1.1\r\nHost: {0}\r\nContent-Length: {length}\r\n\
             Connection: close\r\n\r\n{{\"id\":",
            mirror.addr
        );
        let started = Instant::now();
        let response = send_raw(mirror.addr, raw.as_bytes());
        assert_error(&response, 413, "payload_too_large", "declared oversize");
        assert!(started.elapsed() < Duration::from_secs(5), "answered late");
    }
    // With a wrong signature too.
    let response = mirror.request(
        "POST",
        "/webhooks",
        &[
            ("Content-Length", "2000000"),
            ("x-protocol-signature", &"0".repeat(64)),
        ],
        b"{}",
    );
    assert_error(
        &response,
        413,
        "payload_too_large",
        "oversize, bad signature",
    );
    assert_eq!(event_count(&mirror.db), 0);
}

/// Most HTTP clients write the whole body before they read the answer. The 413 is sent
/// as soon as the length is known, and the rest of the body is read and thrown away, so
/// such a client gets the 413 rather than a reset connection (it got a broken pipe for
/// bodies over what the kernel's socket buffers hold, about 1-2 MiB here).
#[test]
fn a_client_that_sends_its_whole_oversized_body_first_still_reads_the_413() {
    let mirror = Mirror::start(&[]);
    let body = format!(
        r#"{{"id":"big","type":"contact.created","payload":{{"id":"c","pad":"{}"}}}}"#,
        "a".repeat(8 * 1024 * 1024)
    );
    for chunked in [false, true] {
        let mut raw = format!("POST /webhooks HTTP/1.1\r\nHost: {}\r\n", mirror.addr);
        if chunked {
            raw.push_str("Transfer-Encoding: chunked\r\n\r\n");
            for piece in body.as_bytes().chunks(64 * 1024) {
                raw.push_str(&format!("{:x}\r\n", piece.len()));
                raw.push_str(std::str::from_utf8(piece).unwrap());
                raw.push_str("\r\n");
            }
            raw.push_str("0\r\n\r\n");
        } else {
            raw.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
        }
        let mut stream = std::net::TcpStream::connect(mirror.addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        std::io::Write::write_all(&mut stream, raw.as_bytes())
            .unwrap_or_else(|e| panic!("chunked {chunked}: writing the body: {e}"));
        let mut head = [0u8; 256];
        let n = std::io::Read::read(&mut stream, &mut head)
            .unwrap_or_else(|e| panic!("chunked {chunked}: reading the answer: {e}"));
        let text = String::from_utf8_lossy(&head[..n]);
        assert!(
            text.starts_with("HTTP/1.1 413"),
            "chunked {chunked}: {text:?}"
        );
    }
    assert_eq!(event_count(&mirror.db), 0);
}

#[test]
fn the_body_limit_is_configurable_and_exact() {
    let mirror = Mirror::start(&["--max-body-bytes", "1000"]);
    // A valid, signed event padded with JSON whitespace to exactly `len` bytes.
    let padded = |id: &str, len: usize| {
        let mut body = contact_created(id, id);
        body.resize(len, b' ');
        body
    };
    let at_limit = padded("e-at-limit", 1000);
    let response = mirror.post_signed(&at_limit);
    assert_eq!(response.status, 200, "{}", response.text());

    let over = padded("e-over-limit", 1001);
    let response = mirror.post_signed(&over);
    assert_error(&response, 413, "payload_too_large", "1001 bytes");
    assert_eq!(event_count(&mirror.db), 1);
    assert_eq!(outcome(&mirror.db, "e-over-limit"), None);
    assert!(
        !mirror.startup.contains("one at a time"),
        "{}",
        mirror.startup
    );

    // A limit over the budget of unsigned bodies lets one body take all of it: said.
    let mirror = Mirror::start(&["--max-body-bytes", "100000000"]);
    assert!(
        mirror.startup.contains("read one at a time"),
        "{}",
        mirror.startup
    );
}

#[test]
fn chunked_bodies_over_the_limit_get_413() {
    let mirror = Mirror::start(&["--max-body-bytes", "1000"]);
    let send_chunked = |body: &[u8], chunk: usize| {
        let signature = protocol_verify::sign(SECRET, body);
        let mut raw = format!(
            "POST /webhooks HTTP/1.1\r\nHost: {}\r\nTransfer-Encoding: chunked\r\n\
             x-protocol-signature: {signature}\r\nConnection: close\r\n\r\n",
            mirror.addr
        )
        .into_bytes();
        for piece in body.chunks(chunk) {
            raw.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
            raw.extend_from_slice(piece);
            raw.extend_from_slice(b"\r\n");
        }
        raw.extend_from_slice(b"0\r\n\r\n");
        send_raw(mirror.addr, &raw)
    };
    // Under the limit, chunked is fine (so the 413 below is about the size).
    let small = contact_created("e-small", "c-small");
    let response = send_chunked(&small, 16);
    assert_eq!(response.status, 200, "{}", response.text());

    let mut big = contact_created("e-big", "c-big");
    big.resize(5000, b' ');
    let response = send_chunked(&big, 300);
    assert_error(&response, 413, "payload_too_large", "chunked 5000 bytes");
    assert_eq!(event_count(&mirror.db), 1);
    assert_eq!(outcome(&mirror.db, "e-big"), None);
}

/// Transfer codings other than `chunked` alone were read as chunked, the others
/// unheeded (a hostile probe): a proxy in front may frame such a body otherwise.
#[test]
fn transfer_codings_other_than_chunked_alone_get_400() {
    let mirror = Mirror::start(&[]);
    let send = |id: &str, codings: &[&str]| {
        let body = contact_created(id, "c");
        let signature = protocol_verify::sign(SECRET, &body);
        let mut raw = format!(
            "POST /webhooks HTTP/1.1\r\nHost: {}\r\nx-protocol-signature: {signature}\r\n",
            mirror.addr
        );
        for coding in codings {
            raw.push_str(&format!("Transfer-Encoding: {coding}\r\n"));
        }
        raw.push_str(&format!("Connection: close\r\n\r\n{:x}\r\n", body.len()));
        let mut raw = raw.into_bytes();
        raw.extend_from_slice(&body);
        raw.extend_from_slice(b"\r\n0\r\n\r\n");
        send_raw(mirror.addr, &raw)
    };
    for (id, codings) in [
        ("e-gzip", &["gzip, chunked"][..]),
        ("e-twice", &["chunked, chunked"]),
        ("e-two-headers", &["chunked", "chunked"]),
        ("e-deflate", &["deflate", "chunked"]),
    ] {
        let response = send(id, codings);
        assert_error(&response, 400, "invalid_request", id);
        assert!(response.text().contains("Transfer-Encoding"), "{id}");
        assert_eq!(outcome(&mirror.db, id), None, "{id} stored");
    }
    for (id, codings) in [("e-chunked", &["chunked"][..]), ("e-upper", &[" Chunked "])] {
        let response = send(id, codings);
        assert_eq!(response.status, 200, "{id}: {}", response.text());
    }
}

// ---------------------------------------------------------------------------------------
// 401
// ---------------------------------------------------------------------------------------

#[test]
fn bad_signatures_get_401_and_never_echo_secrets() {
    let mirror = Mirror::start(&[]);
    let body = contact_created("e-sig", "c-sig");
    let good = protocol_verify::sign(SECRET, &body);
    let digest = hex_decode(&good);
    let base64 = base64_encode(&digest);
    let wrong_secret = protocol_verify::sign("whsec_some_other_secret", &body);
    let not_hex = "zz".repeat(32);
    let cases: Vec<(&str, Vec<(&str, &str)>)> = vec![
        ("missing header", vec![]),
        ("empty", vec![("x-protocol-signature", "")]),
        ("not hex", vec![("x-protocol-signature", &not_hex)]),
        ("truncated", vec![("x-protocol-signature", &good[..63])]),
        (
            "truncated by a byte",
            vec![("x-protocol-signature", &good[..62])],
        ),
        ("base64", vec![("x-protocol-signature", &base64)]),
        (
            "wrong secret",
            vec![("x-protocol-signature", &wrong_secret)],
        ),
        (
            "two signature headers",
            vec![
                ("x-protocol-signature", &good),
                ("x-protocol-signature", &good),
            ],
        ),
    ];
    for (what, headers) in &cases {
        let response = mirror.post_with(headers, &body);
        assert_error(&response, 401, "unauthorized", what);
        // A 401 carries its challenge (RFC 9110, 15.5.2), naming the header.
        let challenge = response.header("www-authenticate").unwrap_or_default();
        assert_eq!(
            challenge,
            format!("HMAC-SHA256 header=\"{}\"", protocol_verify::HEADER_NAME),
            "{what}"
        );
        let text = response.text();
        for secret in [SECRET, good.as_str(), &good.to_uppercase(), base64.as_str()] {
            assert!(
                !text.contains(secret),
                "{what}: the answer echoes {secret}: {text}"
            );
        }
    }
    // The signature covers the raw bytes: the same JSON re-serialized does not pass.
    let pretty =
        serde_json::to_vec_pretty(&serde_json::from_slice::<Value>(&body).unwrap()).unwrap();
    let response = mirror.post_with(&[("x-protocol-signature", &good)], &pretty);
    assert_error(&response, 401, "unauthorized", "re-serialized body");
    // It is checked before any parsing: an unsigned non-JSON body is a 401, not a 400.
    let response = mirror.post_with(&[], b"not json");
    assert_error(&response, 401, "unauthorized", "unsigned non-JSON");
    assert_eq!(event_count(&mirror.db), 0, "a 401 stored something");

    // The tolerated forms of the right signature are accepted (so the 401s above are
    // about the signatures, not the body).
    let tolerated: [fn(&str) -> String; 4] = [
        |s| s.to_uppercase(),
        |s| format!("sha256={s}"),
        |s| format!("SHA256={}", s.to_uppercase()),
        |s| format!("  {s}\t"),
    ];
    for (i, form) in tolerated.iter().enumerate() {
        let body = contact_created(&format!("e-tolerated-{i}"), &format!("c-tolerated-{i}"));
        let header = form(&protocol_verify::sign(SECRET, &body));
        let response = mirror.post_with(&[("x-protocol-signature", &header)], &body);
        assert_eq!(response.status, 200, "{header:?}: {}", response.text());
    }
    assert_eq!(event_count(&mirror.db), tolerated.len() as i64);
}

// ---------------------------------------------------------------------------------------
// 400
// ---------------------------------------------------------------------------------------

#[test]
fn bodies_that_are_not_event_envelopes_get_400() {
    let mirror = Mirror::start(&[]);
    let mut deep =
        b"{\"id\":\"e-deep\",\"type\":\"contact.created\",\"payload\":{\"id\":\"c\",\"x\":"
            .to_vec();
    deep.extend(std::iter::repeat_n(b'[', 100_000));
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("not JSON", b"hello, mirror".to_vec()),
        ("empty body", Vec::new()),
        ("truncated JSON", br#"{"id":"e1","type":"contact.created","payload":{"id":"#.to_vec()),
        (
            "invalid UTF-8",
            b"{\"id\":\"e-\xff\",\"type\":\"contact.created\",\"payload\":{\"id\":\"c1\"}}".to_vec(),
        ),
        (
            "invalid UTF-8 in the payload",
            b"{\"id\":\"e1\",\"type\":\"contact.created\",\"payload\":{\"id\":\"c1\",\"username\":\"\xc3\x28\"}}"
                .to_vec(),
        ),
        ("a JSON array", b"[]".to_vec()),
        ("missing id", br#"{"type":"contact.created","payload":{"id":"c1"}}"#.to_vec()),
        ("empty id", event("", "contact.created", json!({"id": "c1"}))),
        (
            "numeric id",
            br#"{"id":42,"type":"contact.created","payload":{"id":"c1"}}"#.to_vec(),
        ),
        (
            "null id",
            br#"{"id":null,"type":"contact.created","payload":{"id":"c1"}}"#.to_vec(),
        ),
        ("missing type", br#"{"id":"e1","payload":{"id":"c1"}}"#.to_vec()),
        ("numeric type", br#"{"id":"e1","type":7,"payload":{"id":"c1"}}"#.to_vec()),
        ("missing payload", br#"{"id":"e1","type":"contact.created"}"#.to_vec()),
        ("array payload", br#"{"id":"e1","type":"contact.created","payload":[]}"#.to_vec()),
        ("string payload", br#"{"id":"e1","type":"contact.created","payload":"c1"}"#.to_vec()),
        ("null payload", br#"{"id":"e1","type":"contact.created","payload":null}"#.to_vec()),
        ("payload without id", event("e1", "contact.created", json!({"username": "k"}))),
        ("payload with an empty id", event("e1", "contact.created", json!({"id": ""}))),
        ("payload with a numeric id", event("e1", "contact.created", json!({"id": 5}))),
        ("payload with a null id", event("e1", "contact.created", json!({"id": null}))),
        (
            "unknown type without a payload id",
            event("e1", "reaction.created", json!({"emoji": "x"})),
        ),
        (
            "duplicate envelope keys",
            br#"{"id":"e1","id":"e2","type":"contact.created","payload":{"id":"c1"}}"#.to_vec(),
        ),
        (
            "duplicate payload keys",
            br#"{"id":"e1","type":"contact.created","payload":{"id":"c1","id":"c2"}}"#.to_vec(),
        ),
        (
            "duplicate nested keys",
            br#"{"id":"e1","type":"group.created","payload":{"id":"g1","contacts":[{"id":"a","id":"b"}]}}"#
                .to_vec(),
        ),
        ("100,000 nested arrays", vec![b'['; 100_000]),
        ("100,000 nested arrays in the payload", deep),
    ];
    for (what, body) in &cases {
        let response = mirror.post_signed(body);
        assert_error(&response, 400, "invalid_request", what);
    }
    assert_eq!(event_count(&mirror.db), 0, "a 400 stored something");
    // The daemon survived the deep nesting.
    assert_eq!(mirror.get("/healthz").status, 200);
    let response = mirror.post_signed(&contact_created("e1", "c1"));
    assert_eq!(response.status, 200, "{}", response.text());
}

// ---------------------------------------------------------------------------------------
// 422
// ---------------------------------------------------------------------------------------

#[test]
fn wrong_field_types_get_422_naming_the_field_and_are_logged_rejected() {
    let mirror = Mirror::start(&[]);
    let cases = [
        (
            "e-r1",
            "contact.created",
            json!({"id": "c1", "username": 5}),
            "username",
        ),
        (
            "e-r2",
            "message.updated",
            json!({"id": "m1", "updated_at": "yesterday"}),
            "updated_at",
        ),
        (
            "e-r3",
            "conversation.created",
            json!({"id": "v1", "is_muted": "yes"}),
            "is_muted",
        ),
        (
            "e-r4",
            "group.updated",
            json!({"id": "g1", "contacts": {}}),
            "contacts",
        ),
    ];
    for (event_id, kind, payload, field) in &cases {
        let body = event(event_id, kind, payload.clone());
        // A redelivery is answered with the first delivery's reason, also when it
        // brings another body (a valid one: it was "the event was rejected").
        let other = event(event_id, kind, json!({"id": "other"}));
        let mut first_message = None;
        for (delivery, body) in [
            ("first", &body),
            ("redelivery", &body),
            ("other body", &other),
        ] {
            let response = mirror.post_signed(body);
            assert_eq!(
                response.status,
                422,
                "{event_id} {delivery}: {}",
                response.text()
            );
            let answer = response.json();
            assert!(
                answer["message"].as_str().unwrap_or("").contains(field),
                "{event_id} {delivery}: the error does not name `{field}`: {answer}"
            );
            // Said the same each time.
            let message = answer["message"].clone();
            assert_eq!(
                first_message.get_or_insert(message.clone()),
                &message,
                "{event_id} {delivery}"
            );
        }
        assert_eq!(outcome(&mirror.db, event_id).as_deref(), Some("rejected"));
    }
    assert_eq!(
        event_count(&mirror.db),
        cases.len() as i64,
        "redeliveries were logged again"
    );
    let duplicates: i64 = open_db(&mirror.db)
        .query_row("SELECT SUM(duplicates) FROM events", [], |row| row.get(0))
        .unwrap();
    assert_eq!(duplicates, 2 * cases.len() as i64);
    // Rejected events change nothing.
    let state = snapshot(&mirror.db);
    assert!(state.objects.is_empty(), "{:?}", state.objects);

    // `null` is accepted for every field but `id`.
    let body = event(
        "e-nulls",
        "message.created",
        json!({"id": "m2", "conversation_id": null, "contact": null, "message": null,
               "reactions": null, "attachments": null, "read_at": null,
               "created_at": null, "updated_at": null}),
    );
    let response = mirror.post_signed(&body);
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.json()["status"], "applied");
}

// ---------------------------------------------------------------------------------------
// 200
// ---------------------------------------------------------------------------------------

#[track_caller]
fn assert_outcome(mirror: &Mirror, body: &[u8], want: &str) {
    let event_id = protocol_types::parse_json(body).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let response = mirror.post_signed(body);
    assert_eq!(response.status, 200, "{event_id}: {}", response.text());
    assert_eq!(
        response.json(),
        json!({"status": want, "event_id": event_id}),
        "{event_id}"
    );
}

/// Text cut inside an emoji, as JavaScript's `JSON.stringify` writes it: an escaped
/// UTF-16 surrogate without its other half. Valid JSON: the event applies, the
/// surrogate stored as U+FFFD; the log keeps the body as it came, and a rebuild reads
/// it the same way. It was answered 400 at every delivery, and never stored.
#[test]
fn a_lone_surrogate_escape_is_stored_as_the_replacement_character() {
    let mirror = Mirror::start(&[]);
    let body = br#"{"id":"e-s1","type":"message.created","payload":{"id":"m1","conversation_id":"c1","message":"cut \ud83d","created_at":5}}"#;
    assert_outcome(&mirror, body, "applied");
    assert_eq!(
        object(&mirror.db, Resource::Message, "m1").unwrap()["message"],
        json!("cut \u{fffd}")
    );
    // Not in an id: another event whose id differed only there was a "duplicate".
    for other in [
        &br#"{"id":"e-s2\ud800","type":"contact.created","payload":{"id":"k1"}}"#[..],
        br#"{"id":"e-s3","type":"contact.created","payload":{"id":"k\udbff"}}"#,
    ] {
        let response = mirror.post_signed(other);
        assert_error(
            &response,
            400,
            "invalid_request",
            "an id with a lone surrogate",
        );
        assert!(
            response.text().contains("lone UTF-16 surrogate"),
            "{}",
            response.text()
        );
    }
    // An unknown key named like an id names no stored object: it is text (a review:
    // the event was a 400).
    let unknown =
        br#"{"id":"e-s4","type":"contact.created","payload":{"id":"k4","external_id":"ab\ud83d"}}"#;
    assert_outcome(&mirror, unknown, "applied");
    assert_eq!(
        object(&mirror.db, Resource::Contact, "k4").unwrap()["external_id"],
        json!("ab\u{fffd}")
    );
    assert_eq!(event_count(&mirror.db), 2);
    let logged: String = open_db(&mirror.db)
        .query_row(
            "SELECT body FROM event_bodies JOIN events USING (seq) WHERE event_id = 'e-s1'",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(logged.as_bytes(), body);
    let (_, dir) = mirror.terminate();
    let db = dir.path().join("mirror.db");
    let before = crate::support::dump(&db, &[]);
    let out = crate::support::run(dir.path(), &["--db", db.to_str().unwrap(), "rebuild"], b"");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(crate::support::dump(&db, &[]), before);
}

#[test]
fn unknown_types_are_logged_unsupported() {
    let mirror = Mirror::start(&[]);
    let reaction = event(
        "e-u1",
        "reaction.created",
        json!({"id": "r1", "emoji": "tada"}),
    );
    assert_outcome(&mirror, &reaction, "unsupported");
    let action = event(
        "e-u2",
        "contact.archived",
        json!({"id": "c1", "username": "k"}),
    );
    assert_outcome(&mirror, &action, "unsupported");
    assert_outcome(&mirror, &reaction, "duplicate");
    assert_eq!(outcome(&mirror.db, "e-u1").as_deref(), Some("unsupported"));
    assert_eq!(outcome(&mirror.db, "e-u2").as_deref(), Some("unsupported"));
    assert_eq!(event_count(&mirror.db), 2);
    assert_eq!(object(&mirror.db, Resource::Contact, "c1"), None);
}

#[test]
fn redelivered_events_are_duplicates_and_not_applied_again() {
    let mirror = Mirror::start(&[]);
    let first = event(
        "e-d1",
        "contact.updated",
        json!({"id": "c1", "username": "first"}),
    );
    let second = event(
        "e-d2",
        "contact.updated",
        json!({"id": "c1", "username": "second"}),
    );
    assert_outcome(&mirror, &first, "applied");
    assert_outcome(&mirror, &second, "applied");
    // Re-applying e-d1 would set the username back to "first".
    assert_outcome(&mirror, &first, "duplicate");
    // The event id decides, not the body.
    let same_id = event(
        "e-d1",
        "contact.updated",
        json!({"id": "c1", "username": "third"}),
    );
    assert_outcome(&mirror, &same_id, "duplicate");
    let contact = object(&mirror.db, Resource::Contact, "c1").unwrap();
    assert_eq!(contact, json!({"id": "c1", "username": "second"}));
    assert_eq!(event_count(&mirror.db), 2);
    let duplicates: i64 = open_db(&mirror.db)
        .query_row(
            "SELECT duplicates FROM events WHERE event_id = 'e-d1'",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(duplicates, 2);
}

#[test]
fn applied_stale_and_ignored_deleted_are_answered_and_logged() {
    let mirror = Mirror::start(&[]);
    let steps = [
        (
            event(
                "e-a1",
                "contact.created",
                json!({"id": "c1", "username": "a"}),
            ),
            "applied",
        ),
        (
            // A second create only fills: stale, and the username stays "a".
            event(
                "e-a2",
                "contact.created",
                json!({"id": "c1", "username": "b", "display_name": "K"}),
            ),
            "stale",
        ),
        (
            event("e-a3", "contact.deleted", json!({"id": "c1"})),
            "applied",
        ),
        (
            event(
                "e-a4",
                "contact.updated",
                json!({"id": "c1", "username": "c"}),
            ),
            "ignored_deleted",
        ),
        (
            event(
                "e-a5",
                "contact.created",
                json!({"id": "c1", "username": "d"}),
            ),
            "ignored_deleted",
        ),
    ];
    for (i, (body, want)) in steps.iter().enumerate() {
        assert_outcome(&mirror, body, want);
        if i == 1 {
            let contact = object(&mirror.db, Resource::Contact, "c1").unwrap();
            assert_eq!(
                contact,
                json!({"id": "c1", "username": "a", "display_name": "K"})
            );
        }
    }
    let conn = open_db(&mirror.db);
    let mut stmt = conn
        .prepare("SELECT event_id, outcome FROM events ORDER BY seq")
        .unwrap();
    let log: Vec<(String, String)> = stmt
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let want: Vec<(String, String)> = (1..=5)
        .map(|i| format!("e-a{i}"))
        .zip(steps.iter().map(|(_, o)| (*o).to_owned()))
        .collect();
    assert_eq!(log, want);
    assert_eq!(object(&mirror.db, Resource::Contact, "c1"), None);
}

// ---------------------------------------------------------------------------------------
// 503
// ---------------------------------------------------------------------------------------

#[test]
fn a_locked_database_gets_503_with_retry_after_and_stores_nothing() {
    let mirror = Mirror::start(&[]);
    let body = contact_created("e-locked", "c-locked");
    let locker = rusqlite::Connection::open(&mirror.db).unwrap();
    locker.execute_batch("BEGIN IMMEDIATE").unwrap();
    // The daemon waits for its busy timeout (5 s), then gives up.
    let started = Instant::now();
    let response = mirror.post_signed(&body);
    let waited = started.elapsed();
    assert_error(&response, 503, "unavailable", "locked database");
    assert!(
        response.header("retry-after").is_some(),
        "{:?}",
        response.headers
    );
    let text = response.text();
    assert!(!text.contains(SECRET), "{text}");
    // It waits out its busy timeout first (a short lock, like an import's batch,
    // delays it without failing it).
    let busy = protocol_mirror::store::BUSY_TIMEOUT;
    assert!(
        waited >= busy - Duration::from_secs(1),
        "gave up after {waited:?}"
    );
    let stored: i64 = locker
        .query_row("SELECT COUNT(*) FROM events", [], |row| row.get(0))
        .unwrap();
    assert_eq!(stored, 0);
    locker.execute_batch("ROLLBACK").unwrap();
    drop(locker);

    assert_eq!(event_count(&mirror.db), 0, "a 503 stored something");
    assert_outcome(&mirror, &body, "applied");
    assert!(object(&mirror.db, Resource::Contact, "c-locked").is_some());
    // A stranger's lock is not blamed on an import.
    assert!(
        !mirror.stderr().contains("an import of"),
        "{}",
        mirror.stderr()
    );
}

/// An import that holds its transaction for longer than requests may wait (stopped
/// with Ctrl-Z, say) gets its webhooks 503, as any lock past the time limit does, and
/// the daemon's log names it: it said only "database is locked".
#[test]
fn a_failed_batch_behind_an_imports_lock_says_so_in_the_log() {
    let mirror = Mirror::start(&["--request-timeout", "2"]);
    let mark = protocol_mirror::lock::ImportMark::take(&mirror.db).unwrap();
    let locker = rusqlite::Connection::open(&mirror.db).unwrap();
    locker.execute_batch("BEGIN IMMEDIATE").unwrap();
    let response = mirror.post_signed(&contact_created("e-stopped", "c-stopped"));
    assert_error(&response, 503, "unavailable", "an import's lock");
    assert!(
        crate::support::wait_until(Duration::from_secs(20), || mirror
            .stderr()
            .contains("a batch failed")),
        "{}",
        mirror.stderr()
    );
    let log = mirror.stderr();
    assert!(log.contains("an import of this database"), "{log}");
    locker.execute_batch("ROLLBACK").unwrap();
    drop(mark);
    assert_eq!(event_count(&mirror.db), 0);
}

/// A request time limit shorter than the wait for a lock: the sender was not slow (its
/// body had arrived), so the answer is 503 with `Retry-After`, not 408, and the event
/// is not stored when the lock goes (the writer skips a request that gave up); the
/// redelivery applies it.
#[test]
fn a_commit_that_outlasts_the_request_time_limit_gets_503_and_stores_nothing() {
    let mirror = Mirror::start(&["--request-timeout", "1"]);
    let body = contact_created("e-late", "c-late");
    let locker = rusqlite::Connection::open(&mirror.db).unwrap();
    locker.execute_batch("BEGIN IMMEDIATE").unwrap();
    let response = mirror.post_signed(&body);
    assert_error(
        &response,
        503,
        "unavailable",
        "a commit past the time limit",
    );
    assert!(
        response.header("retry-after").is_some(),
        "{:?}",
        response.headers
    );
    // The writer still holds the event; it gets the lock once the locker is done.
    std::thread::sleep(Duration::from_millis(500));
    locker.execute_batch("ROLLBACK").unwrap();
    drop(locker);
    let probe = contact_created("e-after", "c-after");
    assert_eq!(mirror.post_signed(&probe).status, 200);
    assert_eq!(event_count(&mirror.db), 1, "the abandoned event was stored");
    assert_outcome(&mirror, &body, "applied");
}

/// An event the writer has begun to apply is answered with its outcome, however long
/// its commit takes: a 503 means "not stored", and a cascade over tens of thousands of
/// rows that outlasted the request time limit was answered 503 and stored (found by a
/// black-box probe: 60,000 messages, `--request-timeout 1`; the retry was then a
/// `duplicate`, so the sender never saw `applied`).
#[test]
fn a_cascade_that_outlasts_the_request_time_limit_is_answered_with_its_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("mirror.db");
    let mut lines =
        String::from(r#"{"id":"e-conv","type":"conversation.created","payload":{"id":"big"}}"#);
    // Enough that deleting them takes well over the 1 s limit in a debug build here
    // (about 2 s; 0.8 s for 20,000).
    let messages = 50_000;
    for i in 0..messages {
        lines.push_str(&format!(
            "\n{{\"id\":\"e-m{i}\",\"type\":\"message.created\",\"payload\":\
             {{\"id\":\"m{i}\",\"conversation_id\":\"big\",\"message\":\"hello {i}\"}}}}"
        ));
    }
    let imported = crate::support::run(
        dir.path(),
        &["--db", db.to_str().unwrap(), "import", "-"],
        lines.as_bytes(),
    );
    assert!(imported.status.success(), "{imported:?}");
    let mirror = Mirror::start_in(
        dir,
        &[("PROTOCOL_WEBHOOK_SECRET", SECRET)],
        &["--request-timeout", "1"],
    );
    let body = event("e-del", "conversation.deleted", json!({"id": "big"}));
    let started = Instant::now();
    let response = mirror.post_signed(&body);
    let took = started.elapsed();
    assert_eq!(response.status, 200, "after {took:?}: {}", response.text());
    assert_eq!(response.json()["status"], "applied");
    assert_outcome(&mirror, &body, "duplicate");
    assert!(
        took > Duration::from_secs(1),
        "the cascade took {took:?}, within the limit: the test no longer outlasts it \
         (give it more messages)"
    );
    mirror.assert_no_panic();
}

/// A health check that outlasts a short request time limit (the writer waits for a
/// lock) is unhealthy (503), not a client's 408: a GET has no body to wait for.
#[test]
fn a_health_check_past_the_time_limit_is_503() {
    let mirror = Mirror::start(&["--request-timeout", "1"]);
    let locker = rusqlite::Connection::open(&mirror.db).unwrap();
    locker.execute_batch("BEGIN IMMEDIATE").unwrap();
    let response = mirror.get("/healthz");
    locker.execute_batch("ROLLBACK").unwrap();
    assert_error(&response, 503, "unavailable", "a slow health check");
}

/// A body that stops arriving is the sender's delay: 408, with a JSON body like every
/// other error, `Connection: close`, and nothing stored.
#[test]
fn a_stalled_body_gets_408_with_a_json_body() {
    let mirror = Mirror::start(&["--request-timeout", "1"]);
    let body = contact_created("e-stall", "c-stall");
    let signature = protocol_verify::sign(SECRET, &body);
    let head = format!(
        "POST /webhooks HTTP/1.1\r\nHost: x\r\nx-protocol-signature: {signature}\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    );
    let mut raw = head.into_bytes();
    raw.extend_from_slice(&body[..10]);
    let response = crate::support::send_raw(mirror.addr, &raw);
    assert_error(&response, 408, "timeout", "a stalled body");
    // The rest of the body may still come: the connection closes, saying so.
    assert_eq!(response.header("connection"), Some("close"));
    assert_eq!(event_count(&mirror.db), 0);
}

// ---------------------------------------------------------------------------------------
// Other routes
// ---------------------------------------------------------------------------------------

#[test]
fn other_routes_and_methods_store_nothing() {
    let mirror = Mirror::start(&[]);
    let body = contact_created("e-route", "c-route");
    let signature = protocol_verify::sign(SECRET, &body);
    let headers = [("x-protocol-signature", signature.as_str())];
    let response = mirror.request("POST", "/webhook", &headers, &body);
    assert_eq!(response.status, 404, "{}", response.text());
    let response = mirror.request("PUT", "/webhooks", &headers, &body);
    assert_eq!(response.status, 405, "{}", response.text());
    let response = mirror.request("GET", "/webhooks", &[], b"");
    assert_eq!(response.status, 405, "{}", response.text());
    assert_eq!(event_count(&mirror.db), 0);
}

/// A body sent to a path no route serves, or with a method its route does not take, is
/// read and thrown away, so the connection lives on for the sender's next request. It
/// was left unread: the connection closed with the rest of the body in it, and the
/// sender's next write met a broken pipe.
#[test]
fn a_body_sent_to_no_route_leaves_the_connection_usable() {
    use std::io::{Read, Write};
    let mirror = Mirror::start(&[]);
    let body = "x".repeat(512 * 1024);
    for (method, path, status) in [("POST", "/webhook", 404), ("PUT", "/webhooks", 405)] {
        let mut stream = std::net::TcpStream::connect(mirror.addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\n\r\n",
            mirror.addr,
            body.len()
        );
        stream.write_all(head.as_bytes()).unwrap();
        // The answer is sent before the body has come.
        std::thread::sleep(Duration::from_millis(200));
        stream
            .write_all(body.as_bytes())
            .unwrap_or_else(|e| panic!("{method} {path}: writing the body: {e}"));
        let next = format!("GET /healthz HTTP/1.1\r\nHost: {}\r\n\r\n", mirror.addr);
        stream.write_all(next.as_bytes()).unwrap();
        let mut seen = Vec::new();
        let mut buffer = [0u8; 4096];
        while !String::from_utf8_lossy(&seen).contains("HTTP/1.1 200") {
            match stream.read(&mut buffer) {
                Ok(0) => break,
                Ok(n) => seen.extend_from_slice(&buffer[..n]),
                Err(e) => panic!(
                    "{method} {path}: after {:?}: {e}",
                    String::from_utf8_lossy(&seen)
                ),
            }
        }
        let seen = String::from_utf8_lossy(&seen);
        assert!(seen.starts_with(&format!("HTTP/1.1 {status}")), "{seen:?}");
        assert!(seen.contains("HTTP/1.1 200"), "{method} {path}: {seen:?}");

        // A sender that waits to be told to send its body (`Expect: 100-continue`) is
        // told not to, and sends its next request instead, which must not be taken
        // for the body: the connection closes after the answer.
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: 100\r\n\
             Expect: 100-continue\r\n\r\n",
            mirror.addr
        );
        let response = crate::support::send_raw(mirror.addr, head.as_bytes());
        assert_eq!(response.status, status, "{}", response.text());
        assert_eq!(
            response.header("connection"),
            Some("close"),
            "{method} {path} with Expect"
        );
    }
}

// ---------------------------------------------------------------------------------------
// The sample stream
// ---------------------------------------------------------------------------------------

#[test]
fn the_sample_stream_builds_the_documented_replica() {
    let mirror = Mirror::start(&[]);
    let lines: Vec<&str> = SAMPLE.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 19);
    for (i, line) in lines.iter().enumerate() {
        let want = if i == 5 { "stale" } else { "applied" };
        assert_outcome(&mirror, line.as_bytes(), want);
    }
    let sample: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();

    let mut contact = sample[0]["payload"].clone();
    contact["display_name"] = json!("Kev");
    let mut conversation = sample[2]["payload"].clone();
    conversation["is_muted"] = json!(true);
    conversation["pinned_message_id"] = json!("SIuAFUNKdSYHZF2w");
    let mut message = sample[11]["payload"].clone();
    message["attachments"] = json!([]);
    assert_eq!(
        message["reactions"],
        json!([{"red_angry_face": ["KateMcCallister"]}])
    );

    let state = snapshot(&mirror.db);
    let key = |resource: &str, id: &str| (resource.to_owned(), id.to_owned());
    let want_objects = [
        (key("contact", "WAz8eIbvDR60rouK"), contact),
        (key("conversation", "xgQQXg3hrtjh7AvZ"), conversation),
        (key("message", "SIuAFUNKdSYHZF2w"), message),
    ];
    assert_eq!(
        state.objects.keys().collect::<Vec<_>>(),
        want_objects.iter().map(|(k, _)| k).collect::<Vec<_>>()
    );
    for (key, want) in &want_objects {
        assert_eq!(&state.objects[key], want, "{key:?}");
    }
    let want_tombstones = [
        key("attachment", "Nc6yKKMpcxiiFxp6"),
        key("contact", "hSIhXBhNe8X1d8Et"),
        key("conversation", "Qp4rT7uVw2XyZa1B"),
        key("conversation", "ZYjVAbCE9g5XRlra"),
        key("group", "l7cGNIBKZiNJ6wqF"),
        key("message", "gWqY86BMFRiH5o11"),
    ];
    assert_eq!(
        state.tombstones.iter().collect::<Vec<_>>(),
        want_tombstones.iter().collect::<Vec<_>>()
    );
    // The log: the 6th event (the attachment its message already embedded) was
    // stale; only the group's delete cascaded (its conversation, its 2 memberships).
    let conn = open_db(&mirror.db);
    let mut stmt = conn
        .prepare("SELECT event_id, outcome, cascaded FROM events ORDER BY seq")
        .unwrap();
    let log: Vec<(String, String, i64)> = stmt
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let want: Vec<(String, String, i64)> = sample
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let outcome = if i == 5 { "stale" } else { "applied" };
            let cascaded = if i == 17 { 3 } else { 0 };
            (
                e["id"].as_str().unwrap().to_owned(),
                outcome.to_owned(),
                cascaded,
            )
        })
        .collect();
    assert_eq!(log, want);
}

// ---------------------------------------------------------------------------------------
// The reference model, over HTTP
// ---------------------------------------------------------------------------------------

/// How many random histories go through a daemon each.
const HISTORIES: usize = 24;

/// An HTTP answer, reduced to what SPEC section 3 fixes: the status code, and the
/// `status` field of a 200.
type Answer = (u16, Option<String>);

/// The answer the model predicts for a delivery.
fn model_answer(receipt: &model::Receipt) -> Answer {
    let ok = |status: &str| (200, Some(status.to_owned()));
    match receipt {
        model::Receipt::Logged {
            outcome: "rejected",
            ..
        }
        | model::Receipt::Duplicate { first: "rejected" } => (422, None),
        model::Receipt::Logged { outcome, .. } => ok(outcome),
        model::Receipt::Duplicate { .. } => ok("duplicate"),
        model::Receipt::Invalid => (400, None),
    }
}

/// The answer the daemon should give when the engine, in process, does this.
fn engine_answer(
    result: Result<protocol_mirror::apply::Applied, protocol_mirror::apply::ApplyError>,
) -> Answer {
    use protocol_mirror::apply::{Applied, ApplyError, Outcome};
    match result {
        Ok(applied) if applied.outcome() == Outcome::Rejected => (422, None),
        Ok(Applied::Logged { outcome, .. }) => (200, Some(outcome.as_str().to_owned())),
        Ok(Applied::Duplicate { .. }) => (200, Some("duplicate".to_owned())),
        Err(ApplyError::Invalid(_)) => (400, None),
        Err(error) => panic!("the in-process engine failed: {error}"),
    }
}

fn http_answer(response: &crate::support::Response) -> Answer {
    let status = (response.status == 200).then(|| {
        response.json()["status"]
            .as_str()
            .unwrap_or_else(|| panic!("no status in {}", response.text()))
            .to_owned()
    });
    (response.status, status)
}

/// The event log: event ids in sequence order, with their outcomes.
fn event_log(conn: &rusqlite::Connection) -> Vec<(String, String)> {
    let mut stmt = conn
        .prepare("SELECT event_id, outcome FROM events ORDER BY seq")
        .unwrap();
    stmt.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// Random histories (reordered, duplicated, late, with noise), each delivered over
/// HTTP to a fresh daemon. Every answer, the log and the final replica must equal
/// what the same library does in process (else the daemon layer is at fault), and
/// what the reference model predicts (else the engine and the model disagree: the
/// in-process property test `replica_props` fails too).
#[test]
fn random_histories_over_http_follow_the_model() {
    use proptest::strategy::{Strategy, ValueTree};
    use proptest::test_runner::TestRunner;

    // Deterministic: the same histories on every run.
    let mut runner = TestRunner::deterministic();
    let strategy = model::history();
    let mut delivered = 0;
    let mut duplicates = 0;
    for case in 0..HISTORIES {
        let history = strategy.new_tree(&mut runner).unwrap().current();
        let describe = || model::describe(&history);
        let mirror = Mirror::start(&[]);
        let mut engine = protocol_mirror::store::Store::open_in_memory().unwrap();
        let mut reference = model::Model::new();
        for (i, delivery) in history.iter().enumerate() {
            let receipt = reference.apply(&delivery.0);
            duplicates += usize::from(matches!(receipt, model::Receipt::Duplicate { .. }));
            let want = model_answer(&receipt);
            let in_process = engine_answer(engine.apply(&delivery.0, i as i64));
            let got = http_answer(&mirror.post_signed(&delivery.0));
            assert_eq!(
                got,
                in_process,
                "history {case}, delivery {i}: the daemon answers differently from the \
                 engine in process (left: daemon, right: engine)\nhistory:\n{}",
                describe()
            );
            assert_eq!(
                got,
                want,
                "history {case}, delivery {i}: the engine (over HTTP and in process) \
                 disagrees with the model (left: engine, right: model {receipt:?})\n\
                 history:\n{}",
                describe()
            );
        }
        delivered += history.len();

        let to_model = |state: protocol_mirror::Snapshot| model::Snapshot {
            objects: state.objects,
            tombstones: state.tombstones,
        };
        let got = to_model(snapshot(&mirror.db));
        let in_process = to_model(engine.snapshot().unwrap());
        if let Some(diff) = in_process.diff(&got) {
            panic!(
                "history {case}: the daemon's replica differs from the engine's in process \
                 (engine vs daemon):\n{diff}\nhistory:\n{}",
                describe()
            );
        }
        if let Some(diff) = reference.snapshot().diff(&got) {
            panic!(
                "history {case}: the replica differs from the model (model vs engine):\n\
                 {diff}\nhistory:\n{}",
                describe()
            );
        }
        let log = event_log(&open_db(&mirror.db));
        assert_eq!(
            log,
            event_log(engine.conn()),
            "history {case}: the event log"
        );
        let want: Vec<(String, String)> = reference
            .log()
            .into_iter()
            .map(|(id, outcome)| (id, outcome.to_owned()))
            .collect();
        assert_eq!(
            log, want,
            "history {case}: the event log differs from the model"
        );
    }
    // The histories exercised something.
    assert!(delivered >= HISTORIES * 10, "{delivered} deliveries");
    assert!(duplicates > 0, "no duplicate deliveries were generated");
}
