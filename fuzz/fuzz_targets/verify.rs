//! `verify`: header bytes and a body into `protocol_verify::Verifier::verify_bytes`.
//!
//! The input is decoded (with `arbitrary`) into a body and a header that is either raw
//! fuzzed bytes, absent, or the correct signature put through the documented
//! tolerances (case changes, a `sha256=` prefix in any case, surrounding whitespace)
//! and, optionally, one byte-level edit (replace, insert, delete) that may or may not
//! keep it valid. Raw headers alone would almost never hit the digest.
//!
//! Invariants:
//! - `verify_bytes` never panics;
//! - `sign(SECRET, body)` always verifies (plain, uppercase, prefixed, padded);
//! - a fuzzed header is accepted (`Ok(0)`) if and only if, after trimming surrounding
//!   ASCII whitespace (space, `\t`, `\n`, form feed, `\r`) and one optional `sha256=`
//!   prefix (any case), it is the correct digest in hex, in any case. Otherwise the
//!   error is `Malformed` when that remainder is not exactly 64 hex digits, and
//!   `Mismatch` when it is; a missing header is `Missing`;
//! - with a second, different secret configured first (rotation), the same header gives
//!   the same answer with the index shifted to 1.

#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use protocol_verify::{Error, Verifier, sign};

const SECRET: &str = "fuzz-webhook-secret";
const OTHER_SECRET: &str = "another-secret-during-rotation";

/// Whitespace as the crate documents it ("surrounding ASCII whitespace"), written out
/// here rather than borrowed from the code under test.
const WHITESPACE: &[u8] = b" \t\n\x0c\r";

#[derive(Debug, Arbitrary)]
struct Input {
    header: Header,
    body: Vec<u8>,
}

#[derive(Debug, Arbitrary)]
enum Header {
    /// No header at all.
    Missing,
    /// Any bytes.
    Raw(Vec<u8>),
    /// The correct signature, dressed up.
    Derived {
        /// Bit `i` uppercases hex digit `i`.
        case_mask: u64,
        prefix: Prefix,
        /// Bytes before and after: indices into `PADDING` (mostly whitespace, a few not).
        leading: Vec<u8>,
        trailing: Vec<u8>,
        edit: Option<Edit>,
    },
}

#[derive(Debug, Arbitrary)]
enum Prefix {
    None,
    Lower,
    Upper,
    Mixed,
    /// The prefix twice (not tolerated).
    Twice,
    /// Any 7 bytes in the prefix's place.
    Other([u8; 7]),
}

#[derive(Debug, Arbitrary)]
enum Edit {
    Replace { at: u8, byte: u8 },
    Insert { at: u8, byte: u8 },
    Delete { at: u8 },
}

/// Candidate padding bytes: the documented whitespace, plus near misses.
const PADDING: &[u8] = b" \t\n\x0c\r\x0b\x00\x85=;,";

fn build(digest: &str, header: &Header) -> Option<Vec<u8>> {
    let Header::Derived {
        case_mask,
        prefix,
        leading,
        trailing,
        edit,
    } = header
    else {
        return match header {
            Header::Missing => None,
            Header::Raw(bytes) => Some(bytes.clone()),
            Header::Derived { .. } => unreachable!(),
        };
    };
    let pad = |indices: &[u8]| -> Vec<u8> {
        indices
            .iter()
            .take(8)
            .map(|&i| PADDING[usize::from(i) % PADDING.len()])
            .collect()
    };
    let mut out = pad(leading);
    match prefix {
        Prefix::None => {}
        Prefix::Lower => out.extend_from_slice(b"sha256="),
        Prefix::Upper => out.extend_from_slice(b"SHA256="),
        Prefix::Mixed => out.extend_from_slice(b"ShA256="),
        Prefix::Twice => out.extend_from_slice(b"sha256=sha256="),
        Prefix::Other(bytes) => out.extend_from_slice(bytes),
    }
    out.extend(digest.bytes().enumerate().map(|(i, b)| {
        if case_mask >> (i % 64) & 1 == 1 {
            b.to_ascii_uppercase()
        } else {
            b
        }
    }));
    out.extend(pad(trailing));
    if let Some(edit) = edit {
        let at = |at: u8, len: usize| usize::from(at) % (len + 1);
        match *edit {
            Edit::Replace { at: i, byte } if !out.is_empty() => {
                let i = at(i, out.len() - 1);
                out[i] = byte;
            }
            Edit::Insert { at: i, byte } => {
                let i = at(i, out.len());
                out.insert(i, byte);
            }
            Edit::Delete { at: i } if !out.is_empty() => {
                let i = at(i, out.len() - 1);
                out.remove(i);
            }
            _ => {}
        }
    }
    Some(out)
}

/// The documented contract, independently of the implementation.
fn expected(header: Option<&[u8]>, digest: &str) -> Result<usize, Error> {
    let Some(header) = header else {
        return Err(Error::Missing);
    };
    // A list (repeated headers folded into one value) anywhere in it.
    if header.contains(&b',') {
        return Err(Error::Repeated);
    }
    let mut value = header;
    while let [first, rest @ ..] = value
        && WHITESPACE.contains(first)
    {
        value = rest;
    }
    while let [rest @ .., last] = value
        && WHITESPACE.contains(last)
    {
        value = rest;
    }
    if value.len() >= 7 && value[..7].eq_ignore_ascii_case(b"sha256=") {
        value = &value[7..];
    }
    if value.len() != 64 || !value.iter().all(u8::is_ascii_hexdigit) {
        return Err(Error::Malformed);
    }
    if value.eq_ignore_ascii_case(digest.as_bytes()) {
        Ok(0)
    } else {
        Err(Error::Mismatch)
    }
}

fuzz_target!(|input: Input| {
    let verifier = Verifier::new([SECRET]).expect("a non-empty secret");
    let rotating = Verifier::new([OTHER_SECRET, SECRET]).expect("non-empty secrets");
    let body = input.body.as_slice();
    let digest = sign(SECRET, body);
    assert_eq!(digest.len(), 64);
    assert!(
        digest
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    );

    // The correct signature always verifies, in every tolerated form.
    for good in [
        digest.clone(),
        digest.to_uppercase(),
        format!("sha256={digest}"),
        format!("\t SHA256={}\r\n", digest.to_uppercase()),
    ] {
        assert_eq!(
            verifier.verify_bytes(Some(good.as_bytes()), body),
            Ok(0),
            "{good:?}"
        );
        assert_eq!(
            rotating.verify_bytes(Some(good.as_bytes()), body),
            Ok(1),
            "{good:?}"
        );
    }

    // The fuzzed header is accepted exactly when the contract says so.
    let header = build(&digest, &input.header);
    let want = expected(header.as_deref(), &digest);
    let got = verifier.verify_bytes(header.as_deref(), body);
    assert_eq!(
        got,
        want,
        "header {:?}",
        header.as_deref().map(String::from_utf8_lossy)
    );
    let want_rotating = want.map(|index| index + 1);
    assert_eq!(
        rotating.verify_bytes(header.as_deref(), body),
        want_rotating,
        "header {:?} with two secrets",
        header.as_deref().map(String::from_utf8_lossy)
    );
});
