//! Checks the shared signature vectors in `tests/data/signature-vectors.json`
//! (a copy of the project's fixture, so CI does not need the shared folder).

use protocol_verify::{Error, Verifier, sign};
use serde::Deserialize;

const VECTORS: &str = include_str!("data/signature-vectors.json");

/// One entry of the fixture. Unknown fields are an error, so a fixture that
/// grows a new field (several secrets, a header name, ...) fails loudly here
/// instead of being half-tested.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Vector {
    note: String,
    secret: String,
    body_b64: String,
    signature: String,
    valid: bool,
}

impl Vector {
    fn body(&self) -> Vec<u8> {
        base64_decode(&self.body_b64)
            .unwrap_or_else(|| panic!("{}: body_b64 is not base64", self.note))
    }
}

fn vectors() -> Vec<Vector> {
    serde_json::from_str(VECTORS).expect("fixture is a JSON array of vectors")
}

/// Decodes standard base64 (RFC 4648 alphabet, `=` padding required).
/// `None` on anything else.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    fn sextet(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }

    let text = text.as_bytes();
    if !text.len().is_multiple_of(4) {
        return None;
    }
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let chunks = text.len() / 4;
    for (i, chunk) in text.chunks_exact(4).enumerate() {
        let padding = chunk.iter().rev().take_while(|&&c| c == b'=').count();
        if padding > 2 || (padding > 0 && i + 1 != chunks) {
            return None;
        }
        let mut group = 0;
        for &c in &chunk[..4 - padding] {
            group = group << 6 | sextet(c)?;
        }
        group <<= 6 * padding;
        out.extend_from_slice(&group.to_be_bytes()[1..4 - padding]);
    }
    Some(out)
}

/// The error a rejected vector should produce, judged independently of the
/// crate's parser: 64 hex digits (after trimming and the prefix) can only
/// mismatch; anything else is malformed.
fn expected_error(signature: &str) -> Error {
    let digits = signature.trim();
    let digits = digits.strip_prefix("sha256=").unwrap_or(digits);
    if digits.len() == 64 && digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        Error::Mismatch
    } else {
        Error::Malformed
    }
}

#[test]
fn base64_decoder() {
    assert_eq!(base64_decode("").unwrap(), b"");
    assert_eq!(base64_decode("Zg==").unwrap(), b"f");
    assert_eq!(base64_decode("Zm8=").unwrap(), b"fo");
    assert_eq!(base64_decode("Zm9v").unwrap(), b"foo");
    assert_eq!(base64_decode("Zm9vYmFy").unwrap(), b"foobar");
    assert_eq!(base64_decode("/+8=").unwrap(), [0xff, 0xef]);
    assert!(base64_decode("Zm9").is_none());
    assert!(base64_decode("Zg==Zm9v").is_none());
    assert!(base64_decode("Z===").is_none());
    assert!(base64_decode("Zm9!").is_none());
}

#[test]
fn fixture_is_complete() {
    let vectors = vectors();
    assert_eq!(vectors.len(), 66, "fixture changed; review this test");
    assert!(vectors.iter().any(|v| v.valid));
    assert!(vectors.iter().any(|v| !v.valid));
}

#[test]
fn every_vector_has_the_expected_outcome() {
    for vector in vectors() {
        let verifier = Verifier::new([&vector.secret]).unwrap();
        let outcome = verifier.verify(Some(&vector.signature), &vector.body());
        if vector.valid {
            assert_eq!(outcome, Ok(0), "{}", vector.note);
        } else {
            let expected = expected_error(&vector.signature);
            assert_eq!(outcome, Err(expected), "{}", vector.note);
        }
    }
}

#[test]
fn header_bytes_give_the_same_outcome() {
    for vector in vectors() {
        let verifier = Verifier::new([&vector.secret]).unwrap();
        let body = vector.body();
        assert_eq!(
            verifier.verify_bytes(Some(vector.signature.as_bytes()), &body),
            verifier.verify(Some(&vector.signature), &body),
            "{}",
            vector.note,
        );
    }
}

#[test]
fn sign_reproduces_valid_lowercase_vectors() {
    let lowercase = vectors().into_iter().filter(|v| {
        v.valid
            && v.signature
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    });
    let mut seen = 0;
    for vector in lowercase {
        assert_eq!(
            sign(&vector.secret, vector.body()),
            vector.signature,
            "{}",
            vector.note
        );
        seen += 1;
    }
    assert!(seen > 0);
}

#[test]
fn rotation_over_all_fixture_secrets() {
    let vectors = vectors();
    let mut secrets: Vec<&str> = vectors.iter().map(|v| v.secret.as_str()).collect();
    secrets.sort_unstable();
    secrets.dedup();
    assert!(secrets.len() >= 2, "fixture should use several secrets");
    let verifier = Verifier::new(&secrets).unwrap();

    for vector in &vectors {
        let outcome = verifier.verify(Some(&vector.signature), &vector.body());
        if vector.valid {
            let index = secrets.iter().position(|s| *s == vector.secret);
            assert_eq!(outcome.ok(), index, "{}", vector.note);
        } else {
            // No invalid vector happens to be signed by another fixture secret.
            let expected = expected_error(&vector.signature);
            assert_eq!(outcome, Err(expected), "{}", vector.note);
        }
    }
}
