//! `envelope`: arbitrary bytes into `protocol_types::Event::from_slice`.
//!
//! Invariants:
//! - parsing never panics, whatever the bytes;
//! - when it succeeds, `event.to_vec()` re-parses to an equal `Event` (round trip), and
//!   serializing that again gives the same bytes (serialization is a fixed point);
//! - the strict parser accepts nothing that plain `serde_json` refuses but an escaped
//!   lone UTF-16 surrogate (which it reads as U+FFFD), and an accepted body reads the
//!   same through `Event::from_value(serde_json::from_slice(..))`;
//! - the error classes are stable: a body refused as a syntax error by the strict
//!   parser is not an event for any other reader either;
//! - read as one object of a REST list page (`{"data":[..]}`) of each resource, a body
//!   that is a JSON object is refused by `protocol_types::parse_list_page` for a lone
//!   surrogate in an id exactly when, as the payload of an `updated` event of that
//!   resource, `Event::from_slice` refuses the event for one; a page it reads is what
//!   `parse_json` reads.
//!
//! With `FUZZ_ENVELOPE_FLOAT_ULPS=N` (N > 0) in the environment, the round trip
//! compares floating-point numbers up to N units in the last place, and skips the
//! byte-for-byte fixed-point check: this hides the known float drift recorded in
//! `fuzz/regressions/envelope/` (see `fuzz/README.md`) so that a run can look for
//! other bugs. Without it the comparison is exact.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use protocol_types::{Event, EventError, Resource};
use serde_json::Value;

/// The float tolerance, in units in the last place (0: exact).
fn float_ulps() -> u64 {
    static ULPS: OnceLock<u64> = OnceLock::new();
    *ULPS.get_or_init(|| {
        std::env::var("FUZZ_ENVELOPE_FLOAT_ULPS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    })
}

/// Whether two JSON values are equal, floats up to `ulps` apart.
fn same_value(a: &Value, b: &Value, ulps: u64) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x.is_f64() && y.is_f64() => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            x == y
                || (x.is_sign_negative() == y.is_sign_negative()
                    && x.to_bits().abs_diff(y.to_bits()) <= ulps)
        }
        (Value::Array(xs), Value::Array(ys)) => {
            xs.len() == ys.len() && xs.iter().zip(ys).all(|(x, y)| same_value(x, y, ulps))
        }
        (Value::Object(xs), Value::Object(ys)) => {
            xs.len() == ys.len()
                && xs
                    .iter()
                    .zip(ys)
                    .all(|((kx, x), (ky, y))| kx == ky && same_value(x, y, ulps))
        }
        _ => a == b,
    }
}

/// Whether two events are equal (floats up to `ulps` apart when `ulps > 0`).
fn same_event(a: &Event, b: &Event, ulps: u64) -> bool {
    if ulps == 0 {
        a == b
    } else {
        a.id == b.id && a.kind == b.kind && same_value(&a.to_value(), &b.to_value(), ulps)
    }
}

fn reparse(bytes: &[u8]) -> Event {
    match Event::from_slice(bytes) {
        Ok(event) => event,
        Err(error) => panic!(
            "re-serialized event does not parse: {error}\nbytes: {}",
            String::from_utf8_lossy(bytes)
        ),
    }
}

/// Whether `needle` occurs in `haystack`.
fn contains_bytes(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

/// Whether an error's message is a refusal for a lone surrogate.
fn for_a_lone_surrogate(message: &str) -> bool {
    message.contains("lone UTF-16 surrogate")
}

/// A page of `object` and an event with `object` as its payload are refused alike for
/// lone surrogates in ids.
fn page_and_payload_agree(object: &[u8]) {
    for resource in Resource::ALL {
        let page = [br#"{"has_more":false,"data":["#, object, b"]}"].concat();
        let envelope = [
            format!(r#"{{"id":"e","type":"{resource}.updated","payload":"#).as_bytes(),
            object,
            b"}",
        ]
        .concat();
        let read = protocol_types::parse_list_page(&page, resource);
        let page_refused = read
            .as_ref()
            .is_err_and(|error| for_a_lone_surrogate(&error.to_string()));
        let event_refused = matches!(
            Event::from_slice(&envelope),
            Err(EventError::Syntax { message, .. }) if for_a_lone_surrogate(&message)
        );
        assert_eq!(
            page_refused, event_refused,
            "{resource}: the page ({read:?}) and the event disagree on lone surrogates"
        );
        if let Ok(value) = read {
            assert_eq!(Some(value), protocol_types::parse_json(&page).ok());
        }
    }
}

fuzz_target!(|data: &[u8]| {
    if protocol_types::parse_json(data).is_ok_and(|value| value.is_object()) {
        page_and_payload_agree(data);
    }
    let parsed = Event::from_slice(data);

    // Whatever the outcome, reading it through serde_json's own `Value` agrees, except
    // that the strict parser also refuses duplicate keys.
    let loose = serde_json::from_slice::<serde_json::Value>(data);
    match (&parsed, &loose) {
        (Err(EventError::Syntax { .. }), _) => {}
        // serde_json refuses a lone surrogate's escape ("lone leading surrogate in hex
        // escape", or "unexpected end of hex escape" where its other half should be).
        (_, Err(error))
            if error.to_string().contains("surrogate")
                || error.to_string().contains("hex escape") => {}
        // With serde_json's `arbitrary_precision` on (the mirror turns it on, and the
        // fuzz crate builds with it), serde_json reads an object keyed
        // `$serde_json::private::Number` as a number, and refuses one that is not; the
        // strict parser keeps it an object, as documented.
        (_, Err(_)) if contains_bytes(data, b"$serde_json::private::Number") => {}
        (_, Err(error)) => panic!("the strict parser accepted what serde_json refuses: {error}"),
        (Ok(event), Ok(value)) => {
            let again = Event::from_value(value.clone()).expect("serde_json's value is an event");
            assert_eq!(&again, event, "strict and loose readings differ");
        }
        (Err(error), Ok(value)) => {
            let again = Event::from_value(value.clone());
            assert_eq!(
                again.as_ref().err(),
                Some(error),
                "strict and loose readings differ"
            );
        }
    }

    let Ok(event) = parsed else {
        return;
    };
    let ulps = float_ulps();
    let bytes = event.to_vec();
    let reparsed = reparse(&bytes);
    assert!(
        same_event(&reparsed, &event, ulps),
        "round trip changed the event\n  before: {event:?}\n   after: {reparsed:?}\nbytes: {}",
        String::from_utf8_lossy(&bytes)
    );
    let again = reparsed.to_vec();
    if ulps == 0 {
        assert_eq!(
            String::from_utf8_lossy(&again),
            String::from_utf8_lossy(&bytes),
            "serialization is not a fixed point"
        );
    } else {
        assert!(
            same_event(&reparse(&again), &reparsed, ulps),
            "second round trip changed the event"
        );
    }
});
