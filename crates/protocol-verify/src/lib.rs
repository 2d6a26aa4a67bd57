//! Sign and verify Protocol webhook signatures.
//!
//! Protocol signs every webhook it sends: the `x-protocol-signature` header
//! carries the lowercase hex encoding of HMAC-SHA256, keyed with the shared
//! webhook secret, over the **raw** request body. This crate computes and
//! checks that signature. It has no HTTP types and does no I/O: hand it the
//! header value and the body bytes exactly as received, *before* parsing
//! the body.
//!
//! # Accepted header values
//!
//! After trimming surrounding ASCII whitespace and an optional `sha256=`
//! prefix (matched case-insensitively, so `SHA256=` works too), the value must
//! be exactly 64 hex digits, in lowercase, uppercase or mixed case. Anything
//! else (empty, truncated, base64, a repeated prefix, whitespace inside the
//! digits) is [`Error::Malformed`], but for a value holding a comma, which is a
//! list of values (the header repeated, folded into one), [`Error::Repeated`].
//!
//! The decoded digest is compared in constant time (by the `hmac` crate's
//! `Mac::verify_slice`) against the HMAC of the body under each configured
//! secret, every one of them tried, so the time does not tell which matched.
//!
//! # Replay
//!
//! Protocol's signature covers the body alone: there is no timestamp header, so a
//! captured delivery verifies for as long as its secret is configured, and nothing
//! here limits a signature's age (there is no tolerance to set). `Ok` means "Protocol
//! sent this body", not "this is its first delivery": deduplicate on the event's `id`
//! (protocol-types' `Event::id`), as Protocol itself redelivers events.
//!
//! # Secrets and headers
//!
//! Secrets are used byte for byte: one read from a file keeps its trailing newline
//! unless you trim it, and then no signature matches. [`Verifier::verify`] takes one
//! header value; [`Verifier::verify_values`] takes every value a request carried
//! (with `http`'s `HeaderMap`, `get_all(HEADER_NAME)`) and refuses more than one
//! ([`Error::Repeated`]), since checking only the first would let a proxy's or
//! sender's second value pass unseen. Header names are case-insensitive: look the
//! header up so (`HeaderMap` does) when headers come as a plain map of strings.
//!
//! # Secret rotation
//!
//! A [`Verifier`] holds one or more secrets; a signature made with any of them
//! is accepted, and [`Verifier::verify`] reports which one matched so you can
//! tell when an old secret has stopped being used.
//!
//! # Example
//!
//! ```
//! use protocol_verify::{sign, Error, Verifier};
//!
//! let body = br#"{"id":"a056V7R7NmNRjl70","type":"message.updated"}"#;
//! let signature = sign("old-secret", body);
//! assert_eq!(signature.len(), 64);
//!
//! // During a rotation both the old and the new secret are configured.
//! let verifier = Verifier::new(["new-secret", "old-secret"])?;
//! assert_eq!(verifier.verify(Some(&signature), body), Ok(1));
//! assert_eq!(verifier.verify(Some(&sign("new-secret", body)), body), Ok(0));
//!
//! // The prefix, uppercase hex and surrounding whitespace are tolerated.
//! let header = format!(" sha256={}\t", signature.to_uppercase());
//! assert!(verifier.verify(Some(&header), body).is_ok());
//!
//! // Anything else fails, without revealing why beyond the error kind.
//! assert_eq!(verifier.verify(Some(&signature), b"tampered"), Err(Error::Mismatch));
//! assert_eq!(verifier.verify(Some("not a signature"), body), Err(Error::Malformed));
//! assert_eq!(verifier.verify(None, body), Err(Error::Missing));
//! # Ok::<(), Error>(())
//! ```

// What an embedder relies on: results that are easy to drop are marked, and every
// fallible function says when it fails.
#![warn(clippy::must_use_candidate, clippy::missing_errors_doc)]

use std::fmt;

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Name of the HTTP header that carries the signature (lowercase, as
/// HTTP/2 requires).
pub const HEADER_NAME: &str = "x-protocol-signature";

/// Length in bytes of an HMAC-SHA256 digest; its hex form has twice as many
/// digits.
pub const DIGEST_LEN: usize = 32;

/// The optional scheme prefix in front of the hex digits.
const PREFIX: &[u8] = b"sha256=";

type HmacSha256 = Hmac<Sha256>;

/// Why a signature could not be verified, or a [`Verifier`] not built.
///
/// Messages never contain a secret, the received header value or the
/// expected digest, so they are safe to log and to return to the caller. Not `Copy`: a
/// variant added later may carry text.
#[derive(Debug, Clone, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The request carried no signature header at all.
    #[error("missing signature header")]
    Missing,
    /// The header is not 64 hex digits, after trimming surrounding
    /// whitespace and an optional `sha256=` prefix.
    #[error("malformed signature: expected 64 hex digits")]
    Malformed,
    /// The signature is well formed but matches none of the configured
    /// secrets.
    #[error("signature does not match any configured secret")]
    Mismatch,
    /// The verifier was built without any secret, so nothing can pass.
    #[error("no webhook secret configured")]
    NoSecret,
    /// The request carried the signature header more than once
    /// ([`Verifier::verify_values`]), or one value that lists several, separated by
    /// commas, as HTTP folds a repeated header into one (RFC 9110, 5.3).
    #[error("more than one signature (the header repeated, or a value listing several)")]
    Repeated,
    /// A configured secret is empty (or NUL bytes alone: see [`Verifier::new`]); `index` is
    /// its position (from 0) in the sequence given to [`Verifier::new`].
    #[error("webhook secret at index {index} (from 0) is empty")]
    #[non_exhaustive]
    EmptySecret {
        /// Position of the empty secret among those given, from 0.
        index: usize,
    },
}

impl Error {
    /// Whether the error is the verifier's own setup ([`Error::NoSecret`],
    /// [`Error::EmptySecret`]) rather than the request's: a server misconfigured so
    /// refuses every request, which is its own failure to report (a 500, or a refusal
    /// to start), not a 401 that blames the sender. A variant added later says which
    /// it is here.
    ///
    /// ```
    /// use protocol_verify::Verifier;
    ///
    /// let none = Verifier::new(Vec::<String>::new()).unwrap();
    /// assert!(none.verify(Some("00"), b"{}").unwrap_err().is_configuration());
    /// let one = Verifier::new(["s3cret"]).unwrap();
    /// assert!(!one.verify(None, b"{}").unwrap_err().is_configuration());
    /// assert!(Verifier::new([""]).unwrap_err().is_configuration());
    /// ```
    #[must_use]
    pub fn is_configuration(&self) -> bool {
        matches!(self, Error::NoSecret | Error::EmptySecret { .. })
    }
}

/// Signs `body` with `secret`: the lowercase hex HMAC-SHA256, as Protocol
/// puts it in the [`HEADER_NAME`] header. An empty `secret` still signs (HMAC takes
/// any key), though a [`Verifier`] refuses one ([`Error::EmptySecret`]).
///
/// This is for sending (and for tests): to check a request, use a [`Verifier`], not
/// `sign(secret, body) == header`. That comparison takes time that depends on where
/// the strings differ, which helps an attacker guess a signature a digit at a time,
/// and it refuses the forms Protocol's header may take (uppercase hex, a `sha256=`
/// prefix, surrounding whitespace).
///
/// ```
/// // RFC 4231, test case 2.
/// assert_eq!(
///     protocol_verify::sign("Jefe", b"what do ya want for nothing?"),
///     "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
/// );
/// // The body may be given as text too.
/// assert_eq!(
///     protocol_verify::sign("Jefe", "what do ya want for nothing?"),
///     protocol_verify::sign("Jefe", b"what do ya want for nothing?"),
/// );
/// ```
#[must_use]
pub fn sign(secret: impl AsRef<[u8]>, body: impl AsRef<[u8]>) -> String {
    let mut mac = keyed(secret.as_ref());
    mac.update(body.as_ref());
    hex::encode(mac.finalize().into_bytes())
}

/// Checks webhook signatures against one or more secrets.
///
/// Each secret is turned into a keyed HMAC state once, at construction; a
/// check clones that state instead of re-deriving it from the key. The raw
/// secrets are not kept, but those states sign as the secrets do, so a
/// `Verifier` (and each clone) is as secret as they are: it is not zeroed on
/// drop. Its [`Debug`](fmt::Debug) output only shows how many there are:
///
/// ```
/// let verifier = protocol_verify::Verifier::new(["one", "two"]).unwrap();
/// assert_eq!(format!("{verifier:?}"), "Verifier { secrets: [redacted; 2] }");
/// ```
#[derive(Clone)]
pub struct Verifier {
    keys: Vec<HmacSha256>,
}

impl Verifier {
    /// Builds a verifier that accepts signatures made with any of `secrets`,
    /// which are tried in the given order.
    ///
    /// An empty sequence is allowed (say, webhooks not configured yet), but
    /// then every check fails with [`Error::NoSecret`].
    ///
    /// # Errors
    ///
    /// [`Error::EmptySecret`] if any secret is empty: an empty HMAC key is
    /// almost certainly a configuration mistake, not a real secret. So is one of
    /// NUL bytes alone: up to 64 of them, HMAC's padding makes it the same key as an
    /// empty one, and a longer one (which HMAC hashes first) is no real secret either.
    /// (That padding also makes a secret the same key as itself with NUL bytes
    /// after it, up to 64 bytes: `"a"` and `"a\0"` verify each other's signatures.
    /// A secret holds no NUL byte in practice; HMAC-SHA256 is specified so.)
    pub fn new<I>(secrets: I) -> Result<Self, Error>
    where
        I: IntoIterator,
        I::Item: AsRef<[u8]>,
    {
        let keys = secrets
            .into_iter()
            .enumerate()
            .map(|(index, secret)| match secret.as_ref() {
                secret if secret.iter().all(|&byte| byte == 0) => Err(Error::EmptySecret { index }),
                secret => Ok(keyed(secret)),
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { keys })
    }

    /// Number of configured secrets.
    #[must_use]
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether no secret is configured (every check then fails with
    /// [`Error::NoSecret`]).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Checks the signature header value `header` (`None` if the header is
    /// absent) against the raw request `body`.
    ///
    /// Returns the index of the secret that matched, in the order given to
    /// [`Verifier::new`] (the first, if several did). Every secret is tried, so the
    /// time taken depends on the body and the number of secrets, not on which one
    /// matched.
    ///
    /// # Errors
    ///
    /// In order of precedence: [`Error::NoSecret`], [`Error::Missing`],
    /// [`Error::Repeated`] for a value that lists several (`a, b`: a folded header),
    /// [`Error::Malformed`] (both checked before any HMAC is computed), then
    /// [`Error::Mismatch`].
    pub fn verify(&self, header: Option<&str>, body: &[u8]) -> Result<usize, Error> {
        self.verify_bytes(header.map(str::as_bytes), body)
    }

    /// Like [`Verifier::verify_bytes`], given every value of the signature header a
    /// request carried, in any order (as bytes or text: with `http`,
    /// `headers.get_all(HEADER_NAME)` as it is): none is [`Error::Missing`], and more
    /// than one [`Error::Repeated`], whatever they hold.
    ///
    /// ```
    /// use protocol_verify::{sign, Error, Verifier};
    ///
    /// let verifier = Verifier::new(["secret"])?;
    /// let body = b"{}";
    /// let good = sign("secret", body);
    /// assert_eq!(verifier.verify_values([good.as_bytes()], body), Ok(0));
    /// let twice = [good.as_bytes(), b"0000".as_slice()];
    /// assert_eq!(verifier.verify_values(twice, body), Err(Error::Repeated));
    /// assert_eq!(verifier.verify_values([good.as_str()], body), Ok(0));
    /// assert_eq!(verifier.verify_values(Vec::<&[u8]>::new(), body), Err(Error::Missing));
    /// # Ok::<(), Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As for [`Verifier::verify`], with [`Error::Repeated`] after
    /// [`Error::NoSecret`].
    pub fn verify_values<I>(&self, values: I, body: &[u8]) -> Result<usize, Error>
    where
        I: IntoIterator,
        I::Item: AsRef<[u8]>,
    {
        if self.keys.is_empty() {
            return Err(Error::NoSecret);
        }
        let mut values = values.into_iter();
        match (values.next(), values.next()) {
            (_, Some(_)) => Err(Error::Repeated),
            (header, None) => self.verify_bytes(header.as_ref().map(AsRef::as_ref), body),
        }
    }

    /// Like [`Verifier::verify`], for a header value given as bytes (HTTP
    /// header values need not be UTF-8; a non-ASCII value is simply
    /// [`Error::Malformed`]).
    ///
    /// # Errors
    ///
    /// As for [`Verifier::verify`].
    pub fn verify_bytes(&self, header: Option<&[u8]>, body: &[u8]) -> Result<usize, Error> {
        if self.keys.is_empty() {
            return Err(Error::NoSecret);
        }
        let digest = parse(header.ok_or(Error::Missing)?)?;
        // Every secret is tried, whichever matches: stopping at the first match told,
        // by the time taken, which secret matched (a review).
        let mut matched = None;
        for (index, key) in self.keys.iter().enumerate() {
            let mut mac = key.clone();
            mac.update(body);
            let ok = mac.verify_slice(&digest).is_ok();
            matched = matched.or(ok.then_some(index));
        }
        matched.ok_or(Error::Mismatch)
    }
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("secrets", &format_args!("[redacted; {}]", self.keys.len()))
            .finish()
    }
}

/// The HMAC-SHA256 state keyed with `secret`, ready to absorb a body.
fn keyed(secret: &[u8]) -> HmacSha256 {
    HmacSha256::new_from_slice(secret).expect("HMAC accepts keys of any length")
}

/// Decodes a header value to the digest it carries.
fn parse(header: &[u8]) -> Result<[u8; DIGEST_LEN], Error> {
    // A list, as a framework or proxy folds repeated headers into one value: said as
    // the repeated header it is (it was "malformed": an embedder's review).
    if header.contains(&b',') {
        return Err(Error::Repeated);
    }
    let value = header.trim_ascii();
    let hex_digits = match value.split_at_checked(PREFIX.len()) {
        Some((prefix, rest)) if prefix.eq_ignore_ascii_case(PREFIX) => rest,
        _ => value,
    };
    if hex_digits.len() != 2 * DIGEST_LEN {
        return Err(Error::Malformed);
    }
    let mut digest = [0; DIGEST_LEN];
    hex::decode_to_slice(hex_digits, &mut digest).map_err(|_| Error::Malformed)?;
    Ok(digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 4231, test case 2.
    const KEY: &str = "Jefe";
    const DATA: &[u8] = b"what do ya want for nothing?";
    const MAC: &str = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843";

    fn verifier() -> Verifier {
        Verifier::new([KEY]).unwrap()
    }

    #[test]
    fn sign_matches_rfc_4231() {
        assert_eq!(sign(KEY, DATA), MAC);
        assert_eq!(sign(KEY.as_bytes(), DATA), MAC);
        assert_eq!(sign(String::from(KEY), DATA), MAC);
    }

    #[test]
    fn error_messages() {
        let cases = [
            (Error::Missing, "missing signature header"),
            (
                Error::Malformed,
                "malformed signature: expected 64 hex digits",
            ),
            (
                Error::Mismatch,
                "signature does not match any configured secret",
            ),
            (Error::NoSecret, "no webhook secret configured"),
            (
                Error::Repeated,
                "more than one signature (the header repeated, or a value listing several)",
            ),
            (
                Error::EmptySecret { index: 1 },
                "webhook secret at index 1 (from 0) is empty",
            ),
        ];
        for (error, message) in cases {
            assert_eq!(error.to_string(), message);
        }
    }

    /// A value that lists several, as a repeated header folded into one, is refused as
    /// a repeated header, whatever they hold.
    #[test]
    fn a_folded_header_is_a_repeated_one() {
        let v = verifier();
        for folded in [format!("{MAC}, {MAC}"), format!("{MAC},"), ",".to_owned()] {
            assert_eq!(
                v.verify(Some(&folded), DATA),
                Err(Error::Repeated),
                "{folded}"
            );
        }
        assert_eq!(v.verify(Some(MAC), DATA), Ok(0));
    }

    /// Every value of the header is looked at: one that verifies beside another is
    /// refused, whichever comes first.
    #[test]
    fn verify_values_refuses_a_repeated_header() {
        let v = verifier();
        let (good, bad) = (MAC.as_bytes(), b"0".repeat(64));
        assert_eq!(v.verify_values([good], DATA), Ok(0));
        assert_eq!(
            v.verify_values([bad.as_slice()], DATA),
            Err(Error::Mismatch)
        );
        for twice in [[good, bad.as_slice()], [bad.as_slice(), good], [good, good]] {
            assert_eq!(v.verify_values(twice, DATA), Err(Error::Repeated));
        }
        assert_eq!(v.verify_values([""; 0], DATA), Err(Error::Missing));
        let none = Verifier::new::<[&str; 0]>([]).unwrap();
        assert_eq!(none.verify_values([good, good], DATA), Err(Error::NoSecret));
    }

    #[test]
    fn messages_do_not_leak() {
        let secret = "hunter2-secret";
        let verifier = Verifier::new([secret]).unwrap();
        let expected = sign(secret, DATA);
        for header in [Some(MAC), Some("sha256=zz"), None] {
            let message = verifier.verify(header, DATA).unwrap_err().to_string();
            assert!(!message.contains(secret), "{message}");
            assert!(!message.contains(&expected), "{message}");
            assert!(!message.contains(MAC), "{message}");
        }
    }

    #[test]
    fn debug_is_redacted() {
        let verifier = Verifier::new(["hunter2", "correct horse"]).unwrap();
        let debug = format!("{verifier:?}");
        assert_eq!(debug, "Verifier { secrets: [redacted; 2] }");
        assert_eq!(
            format!("{:?}", Verifier::new([KEY]).unwrap()),
            "Verifier { secrets: [redacted; 1] }",
        );
        assert!(!format!("{verifier:#?}").contains("hunter2"));
    }

    #[test]
    fn accepts_tolerated_forms() {
        let upper = MAC.to_uppercase();
        let mixed: String = MAC
            .chars()
            .enumerate()
            .map(|(i, c)| {
                if i % 2 == 0 {
                    c.to_ascii_uppercase()
                } else {
                    c
                }
            })
            .collect();
        let headers = [
            MAC.to_owned(),
            upper.clone(),
            mixed,
            format!("sha256={MAC}"),
            format!("SHA256={upper}"),
            format!("Sha256={MAC}"),
            format!(" \t{MAC}\r\n "),
            format!("  sha256={MAC}  "),
        ];
        for header in &headers {
            assert_eq!(verifier().verify(Some(header), DATA), Ok(0), "{header:?}");
        }
    }

    #[test]
    fn rejects_malformed_values() {
        let headers = [
            String::new(),
            "   ".to_owned(),
            "sha256=".to_owned(),
            MAC[..63].to_owned(),
            format!("{MAC}0"),
            MAC[..32].to_owned(),
            format!("sha256=sha256={MAC}"),
            format!("sha256= {MAC}"),
            format!("sha512={MAC}"),
            format!("{}-{}", &MAC[..32], &MAC[33..]),
            format!("{} {}", &MAC[..32], &MAC[32..]),
            "g".repeat(64),
            "W9zBRr9gdU5qBCQmCJV1x1oAPwidJzmDnexYuWTsOEM=".to_owned(),
        ];
        for header in &headers {
            assert_eq!(
                verifier().verify(Some(header), DATA),
                Err(Error::Malformed),
                "{header:?}"
            );
        }
    }

    #[test]
    fn header_bytes_need_not_be_utf8() {
        let verifier = verifier();
        assert_eq!(verifier.verify_bytes(Some(MAC.as_bytes()), DATA), Ok(0));
        let mut latin1 = MAC.as_bytes().to_vec();
        latin1[10] = 0xE9;
        assert_eq!(
            verifier.verify_bytes(Some(&latin1), DATA),
            Err(Error::Malformed)
        );
        assert_eq!(verifier.verify_bytes(None, DATA), Err(Error::Missing));
    }

    #[test]
    fn mismatch() {
        let verifier = verifier();
        assert_eq!(verifier.verify(Some(MAC), b""), Err(Error::Mismatch));
        assert_eq!(
            verifier.verify(Some(&"0".repeat(64)), DATA),
            Err(Error::Mismatch)
        );
        let other = Verifier::new(["jefe"]).unwrap();
        assert_eq!(other.verify(Some(MAC), DATA), Err(Error::Mismatch));
    }

    #[test]
    fn missing_header() {
        assert_eq!(verifier().verify(None, DATA), Err(Error::Missing));
    }

    #[test]
    fn no_secret() {
        let verifier = Verifier::new(Vec::<Vec<u8>>::new()).unwrap();
        assert!(verifier.is_empty());
        assert_eq!(verifier.len(), 0);
        // A configuration problem outranks anything about the request.
        for header in [Some(MAC), Some(""), None] {
            assert_eq!(verifier.verify(header, DATA), Err(Error::NoSecret));
        }
    }

    #[test]
    fn empty_secret_is_rejected() {
        assert_eq!(
            Verifier::new([""]).unwrap_err(),
            Error::EmptySecret { index: 0 }
        );
        assert_eq!(
            Verifier::new([&b"a"[..], b"b", b""]).unwrap_err(),
            Error::EmptySecret { index: 2 }
        );
        // NUL bytes alone are the empty key to HMAC (it pads keys with them): a body
        // signed with "" would pass.
        assert_eq!(
            Verifier::new([&b"a"[..], b"\0\0"]).unwrap_err(),
            Error::EmptySecret { index: 1 }
        );
        assert_eq!(sign(b"\0", b"x"), sign(b"", b"x"));
        assert!(Verifier::new([b"\0a"]).is_ok());
    }

    #[test]
    fn rotation_reports_the_matching_secret() {
        let verifier = Verifier::new(["new", "old"]).unwrap();
        assert_eq!(verifier.len(), 2);
        assert_eq!(verifier.verify(Some(&sign("new", DATA)), DATA), Ok(0));
        assert_eq!(verifier.verify(Some(&sign("old", DATA)), DATA), Ok(1));
        assert_eq!(
            verifier.verify(Some(&sign("other", DATA)), DATA),
            Err(Error::Mismatch)
        );
    }

    #[test]
    fn verifier_is_send_sync_and_clone() {
        fn assert_traits<T: Send + Sync + Clone + 'static>() {}
        assert_traits::<Verifier>();
        assert_traits::<Error>();
    }
}

/// The README's example, compiled and run as a test.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
