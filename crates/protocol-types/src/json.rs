//! Strict JSON reading and the typed conversions of object fields.
//!
//! Models are decoded from a `serde_json` object key by key, so that every error can
//! name the field it concerns, and the keys nobody knows are kept as they came.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use crate::{Field, FieldError, Timestamp};

/// A JSON object: the representation of every Protocol resource on the wire.
pub type Object = Map<String, Value>;

/// The JSON type name of a value, for error messages.
pub(crate) fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() => "integer",
        Value::Number(n) if n.is_u64() => "integer out of range",
        // Digits beyond 64 bits (kept as written: `arbitrary_precision`).
        Value::Number(n)
            if n.to_string()
                .trim_start_matches('-')
                .bytes()
                .all(|b| b.is_ascii_digit()) =>
        {
            "integer out of range"
        }
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Parses one JSON document as [`Event::from_slice`](crate::Event::from_slice) reads
/// bodies: a key repeated within an object (which two parsers could resolve
/// differently) and anything after the document are refused. Objects read the same
/// whether or not serde_json's `arbitrary_precision` feature is on somewhere in the
/// program: with it, `serde_json::from_slice::<Value>` reads an object whose first key
/// is `$serde_json::private::Number` as a number (or fails on it); this reads it as the
/// object it is. Numbers are the feature's to read: with it, `-0` is an integer,
/// `1e400` a number (without it, an error), and every number keeps its digits. An
/// escaped lone UTF-16 surrogate (`"\ud800"`, valid JSON but no character) reads as
/// U+FFFD, as serde_json reads it; [`Event::from_slice`](crate::Event::from_slice)
/// goes further and refuses one in an id.
///
/// ```
/// let value = protocol_types::parse_json(br#"{"$serde_json::private::Number": "7"}"#)?;
/// assert!(value.is_object());
/// assert!(protocol_types::parse_json(br#"{"a": 1, "a": 2}"#).is_err());
/// let lone = protocol_types::parse_json(br#"{"k": "a\ud800"}"#)?;
/// assert_eq!(lone["k"], "a\u{FFFD}");
/// # Ok::<(), serde_json::Error>(())
/// ```
///
/// # Errors
///
/// Bytes that are not one JSON document, a key repeated within an object, or
/// nesting 128 levels deep or more (serde_json's limit).
pub fn parse_json(bytes: &[u8]) -> Result<Value, serde_json::Error> {
    parse_strict(bytes)
}

/// Parses one JSON document, refusing a key repeated within an object (which two
/// parsers could resolve differently) and anything after the document. A string's
/// escaped UTF-16 surrogate without its other half (`"\ud83d"`, which JavaScript's
/// `JSON.stringify` writes for text cut inside an emoji) reads as U+FFFD: JSON's
/// grammar allows it, and a Rust string cannot hold it (serde_json refused the whole
/// document, so such an event was refused at every delivery).
pub(crate) fn parse_strict(bytes: &[u8]) -> Result<Value, serde_json::Error> {
    parse_noting_surrogates(bytes).map(|(value, _)| value)
}

/// [`parse_strict`], and where a lone surrogate was read as U+FFFD, the document
/// read again with each one as U+FFFF instead: a string that differs between the two
/// held one (two strings that differed only there read the same:
/// [`crate::Event::from_slice`] refuses such ids; an id that holds U+FFFD itself is
/// not one of them). The second reading fails where keys of an object differ only in
/// that one holds a lone surrogate and the other U+FFFF there (`"k\ud800"` and
/// `"k\uffff"`): it is returned as such, so that the caller can refuse what it cannot
/// check (taken for no reading, it let ids with lone surrogates through: a review).
pub(crate) fn parse_noting_surrogates(bytes: &[u8]) -> Result<(Value, Marked), serde_json::Error> {
    match parse_exactly(bytes) {
        // Only a document that failed is looked at again: the usual one costs nothing.
        Err(error) => match replace_lone_surrogates(bytes, b"\\ufffd") {
            Some(replaced) => {
                let value = parse_exactly(&replaced).map_err(keys_made_one)?;
                let marked =
                    match replace_lone_surrogates(bytes, b"\\uffff").map(|m| parse_exactly(&m)) {
                        Some(Ok(marked)) => Marked::Read(marked),
                        Some(Err(_)) | None => Marked::Unreadable,
                    };
                Ok((value, marked))
            }
            None => Err(error),
        },
        Ok(value) => Ok((value, Marked::NoLoneSurrogate)),
    }
}

/// `error`, if it is of a key repeated that holds U+FFFD, saying why keys that were
/// not repeated as sent can be: read from lone surrogates, `"k\ud800"` and
/// `"k\ud801"` are both `"k\u{fffd}"` (refused as a bare "duplicate key", a body whose
/// keys were all distinct read as wrong: an embedder's review). Whether they were
/// repeated as sent is not told (reading lone surrogates any other way makes some one
/// too): the note says "if".
fn keys_made_one(error: serde_json::Error) -> serde_json::Error {
    let message = error.to_string();
    if message.starts_with("duplicate key") && message.contains('\u{fffd}') {
        de::Error::custom(format_args!(
            "{message} (if the keys differ as sent: a lone UTF-16 surrogate in a key reads \
             as U+FFFD, so keys that differ only there are one)"
        ))
    } else {
        error
    }
}

/// The second reading of [`parse_noting_surrogates`].
#[derive(Debug)]
pub(crate) enum Marked {
    /// The document holds no lone surrogate: there was nothing to read again.
    NoLoneSurrogate,
    /// The document with its lone surrogates read as U+FFFF.
    Read(Value),
    /// Read that way, two keys of an object are one: which strings held a lone
    /// surrogate cannot be told.
    Unreadable,
}

fn parse_exactly(bytes: &[u8]) -> Result<Value, serde_json::Error> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = StrictValue.deserialize(&mut deserializer)?;
    deserializer.end()?;
    Ok(value)
}

/// `bytes` with every `\uXXXX` escape of a lone UTF-16 surrogate inside a string
/// replaced by `by` (`\ufffd`: as long, so positions in errors stay true); `None` when
/// there is none.
fn replace_lone_surrogates(bytes: &[u8], by: &[u8; 6]) -> Option<Vec<u8>> {
    /// The code unit of a `\uXXXX` escape starting at `at`, if there is one.
    fn escape_at(bytes: &[u8], at: usize) -> Option<u16> {
        let escape = bytes.get(at..at + 6)?;
        if escape[0] != b'\\' || escape[1] != b'u' {
            return None;
        }
        u16::from_str_radix(std::str::from_utf8(&escape[2..]).ok()?, 16).ok()
    }
    let mut out: Option<Vec<u8>> = None;
    let (mut at, mut in_string) = (0, false);
    while at < bytes.len() {
        match bytes[at] {
            b'"' => {
                in_string = !in_string;
                at += 1;
            }
            b'\\' if in_string => match escape_at(bytes, at) {
                Some(0xD800..=0xDBFF)
                    if matches!(escape_at(bytes, at + 6), Some(0xDC00..=0xDFFF)) =>
                {
                    at += 12;
                }
                Some(0xD800..=0xDFFF) => {
                    out.get_or_insert_with(|| bytes.to_vec())[at..at + 6].copy_from_slice(by);
                    at += 6;
                }
                // Any other escape is two bytes at least; its tail holds no quote.
                _ => at += 2,
            },
            _ => at += 1,
        }
    }
    out
}

/// Builds a `serde_json::Value`, failing on duplicate object keys.
struct StrictValue;

impl<'de> DeserializeSeed<'de> for StrictValue {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

/// The key under which serde_json with `arbitrary_precision` passes a number's digits.
const NUMBER_TOKEN: &str = "$serde_json::private::Number";

/// Whether this build's serde_json has `arbitrary_precision` (only then does a map with
/// [`NUMBER_TOKEN`] stand for a number; otherwise it is a document's own key). With it,
/// a number too large for an `f64` parses; without it, it does not.
pub(crate) static ARBITRARY_PRECISION: std::sync::LazyLock<bool> =
    std::sync::LazyLock::new(|| "1e400".parse::<serde_json::Number>().is_ok());

impl<'de> Visitor<'de> for StrictValue {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        // serde_json never produces a non-finite float from JSON text.
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(StrictValue)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            // serde_json with `arbitrary_precision` (which any crate in a program can
            // turn on) hands over a float or a large integer as a one-key map holding
            // its digits: make it the number it is again.
            // A document's own key of that name is told apart by its value: serde_json
            // hands a number's digits over as an owned `String`, and never a string
            // of the document (those come borrowed, or as `&str`).
            if object.is_empty() && key == NUMBER_TOKEN && *ARBITRARY_PRECISION {
                match map.next_value_seed(TokenValue)? {
                    Token::Digits(digits) => {
                        let number = digits
                            .parse::<serde_json::Number>()
                            .map_err(de::Error::custom)?;
                        return Ok(Value::Number(number));
                    }
                    Token::Value(value) => {
                        object.insert(key, value);
                        continue;
                    }
                }
            }
            if object.contains_key(&key) {
                return Err(de::Error::custom(format_args!(
                    "duplicate key `{}`",
                    crate::error::Shown(&key)
                )));
            }
            let value = map.next_value_seed(StrictValue)?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

/// The value under [`NUMBER_TOKEN`]: a number's digits, or a document's own value.
enum Token {
    Digits(String),
    Value(Value),
}

/// Reads the value under [`NUMBER_TOKEN`] (see [`StrictValue::visit_map`]).
struct TokenValue;

impl<'de> DeserializeSeed<'de> for TokenValue {
    type Value = Token;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Token, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for TokenValue {
    type Value = Token;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_string<E>(self, v: String) -> Result<Token, E> {
        Ok(Token::Digits(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Token, E> {
        Ok(Token::Value(Value::String(v.to_owned())))
    }

    fn visit_bool<E>(self, v: bool) -> Result<Token, E> {
        Ok(Token::Value(Value::Bool(v)))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Token, E> {
        Ok(Token::Value(Value::from(v)))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Token, E> {
        Ok(Token::Value(Value::from(v)))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Token, E> {
        Ok(Token::Value(
            serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number),
        ))
    }

    fn visit_unit<E>(self) -> Result<Token, E> {
        Ok(Token::Value(Value::Null))
    }

    fn visit_none<E>(self) -> Result<Token, E> {
        Ok(Token::Value(Value::Null))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Token, A::Error> {
        StrictValue.visit_seq(seq).map(Token::Value)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Token, A::Error> {
        StrictValue.visit_map(map).map(Token::Value)
    }
}

/// A type that one JSON value (never `null`) converts to and from.
pub(crate) trait Json: Sized {
    /// What the value must be, for error messages.
    const EXPECTED: &'static str;

    /// Converts `value`; on failure the error's path is relative to the value itself
    /// (empty when the value as a whole has the wrong type).
    fn from_json(value: Value) -> Result<Self, FieldError>;

    fn to_json(&self) -> Value;
}

fn mismatch<T: Json>(value: &Value) -> FieldError {
    FieldError::new("", T::EXPECTED, type_name(value))
}

impl Json for String {
    const EXPECTED: &'static str = "string";

    fn from_json(value: Value) -> Result<Self, FieldError> {
        match value {
            Value::String(s) => Ok(s),
            other => Err(mismatch::<Self>(&other)),
        }
    }

    fn to_json(&self) -> Value {
        Value::String(self.clone())
    }
}

impl Json for bool {
    const EXPECTED: &'static str = "boolean";

    fn from_json(value: Value) -> Result<Self, FieldError> {
        match value {
            Value::Bool(b) => Ok(b),
            other => Err(mismatch::<Self>(&other)),
        }
    }

    fn to_json(&self) -> Value {
        Value::Bool(*self)
    }
}

impl Json for i64 {
    const EXPECTED: &'static str = "integer";

    fn from_json(value: Value) -> Result<Self, FieldError> {
        match &value {
            Value::Number(n) => n.as_i64().ok_or_else(|| mismatch::<Self>(&value)),
            _ => Err(mismatch::<Self>(&value)),
        }
    }

    fn to_json(&self) -> Value {
        Value::from(*self)
    }
}

impl Json for Timestamp {
    const EXPECTED: &'static str = "integer timestamp";

    fn from_json(value: Value) -> Result<Self, FieldError> {
        match &value {
            Value::Number(n) => n
                .as_i64()
                .map(Timestamp)
                .ok_or_else(|| mismatch::<Self>(&value)),
            _ => Err(mismatch::<Self>(&value)),
        }
    }

    fn to_json(&self) -> Value {
        Value::from(self.0)
    }
}

impl<T: Json> Json for Vec<T> {
    const EXPECTED: &'static str = "array";

    fn from_json(value: Value) -> Result<Self, FieldError> {
        match value {
            Value::Array(items) => items
                .into_iter()
                .enumerate()
                .map(|(i, item)| T::from_json(item).map_err(|e| e.at_index(i)))
                .collect(),
            other => Err(mismatch::<Self>(&other)),
        }
    }

    fn to_json(&self) -> Value {
        Value::Array(self.iter().map(Json::to_json).collect())
    }
}

impl<T: Json> Json for BTreeMap<String, T> {
    const EXPECTED: &'static str = "object";

    fn from_json(value: Value) -> Result<Self, FieldError> {
        match value {
            Value::Object(entries) => entries
                .into_iter()
                .map(|(key, item)| match T::from_json(item) {
                    Ok(item) => Ok((key, item)),
                    Err(e) => Err(e.within(&key)),
                })
                .collect(),
            other => Err(mismatch::<Self>(&other)),
        }
    }

    fn to_json(&self) -> Value {
        Value::Object(
            self.iter()
                .map(|(key, item)| (key.clone(), item.to_json()))
                .collect(),
        )
    }
}

/// Removes `keys` from `object`, keeping the order of the keys left (which
/// `Map::remove` does not under serde_json's `preserve_order`).
pub(crate) fn without_keys(object: &mut Object, keys: &[&str]) {
    object.retain(|key, _| !keys.contains(&key.as_str()));
}

/// How a model's key is taken out of, and put back into, a JSON object.
pub(crate) trait Slot: Sized {
    /// Reads the key's value, leaving `null` in its place: the model removes its
    /// documented keys in one pass once all are read ([`without_keys`]), so that the
    /// unknown keys left keep their order under serde_json's `preserve_order` (whose
    /// `Map::remove` moves the last key into the removed one's place).
    fn take(object: &mut Object, key: &str) -> Result<Self, FieldError>;

    fn put(&self, object: &mut Object, key: &str);

    /// The `updated` rule: see [`Field::merge`].
    fn merge(&mut self, patch: Self);

    /// The `created` rule: see [`Field::fill`].
    fn fill(&mut self, patch: Self) -> bool;
}

impl<T: Json> Slot for Field<T> {
    fn take(object: &mut Object, key: &str) -> Result<Self, FieldError> {
        match object.get_mut(key).map(Value::take) {
            None => Ok(Field::Absent),
            Some(Value::Null) => Ok(Field::Null),
            Some(value) => T::from_json(value)
                .map(Field::Value)
                .map_err(|e| e.within(key)),
        }
    }

    fn put(&self, object: &mut Object, key: &str) {
        match self {
            // Absent, whatever `extra` says: a documented key is the field's alone.
            Field::Absent => {
                if object.contains_key(key) {
                    without_keys(object, &[key]);
                }
            }
            Field::Null => {
                object.insert(key.to_owned(), Value::Null);
            }
            Field::Value(value) => {
                object.insert(key.to_owned(), value.to_json());
            }
        }
    }

    fn merge(&mut self, patch: Self) {
        Field::merge(self, patch);
    }

    fn fill(&mut self, patch: Self) -> bool {
        Field::fill(self, patch)
    }
}

/// A required, non-empty string `id`.
impl Slot for String {
    fn take(object: &mut Object, key: &str) -> Result<Self, FieldError> {
        match object.get_mut(key).map(Value::take) {
            Some(Value::String(s)) if !s.is_empty() => Ok(s),
            Some(Value::String(_)) => Err(FieldError::new(key, "a non-empty string", "\"\"")),
            Some(other) => Err(FieldError::new(
                key,
                "a non-empty string",
                type_name(&other),
            )),
            None => Err(FieldError::new(key, "a non-empty string", "nothing")),
        }
    }

    fn put(&self, object: &mut Object, key: &str) {
        object.insert(key.to_owned(), Value::String(self.clone()));
    }

    /// The id of an object never changes: merging keeps it.
    fn merge(&mut self, _patch: Self) {}

    fn fill(&mut self, _patch: Self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Keys that differ only in their lone surrogates read as one: refused, saying so.
    #[test]
    fn keys_made_one_by_lone_surrogates_are_refused_saying_why() {
        for doc in [
            r#"{"k\ud800":1,"k\ud801":2}"#,
            r#"{"k\ud800":1,"k\ufffd":2}"#,
        ] {
            let message = parse_strict(doc.as_bytes()).unwrap_err().to_string();
            assert!(
                message.starts_with("duplicate key `k\u{fffd}`"),
                "{message}"
            );
            assert!(
                message.contains("keys that differ only there are one"),
                "{message}"
            );
        }
        let message = parse_strict(br#"{"k":1,"k":2,"t":"\ud800"}"#)
            .unwrap_err()
            .to_string();
        assert!(message.starts_with("duplicate key"), "{message}");
        assert!(!message.contains("surrogate"), "{message}");
    }

    #[test]
    fn a_duplicate_key_is_named_short() {
        let key = format!("{}\n", "k".repeat(1_000_000));
        let doc = format!(r#"{{"{k}":1,"{k}":2}}"#, k = key.replace('\n', "\\n"));
        let message = parse_strict(doc.as_bytes()).unwrap_err().to_string();
        assert!(message.len() < 200, "{}", message.len());
        assert!(message.contains("duplicate key `kkk"), "{message}");
        assert!(!message.contains('\n'), "{message}");
    }

    #[test]
    fn strict_parse_refuses_duplicate_keys_at_any_depth() {
        assert!(parse_strict(br#"{"a":1,"a":2}"#).is_err());
        assert!(parse_strict(br#"{"a":{"b":1,"b":1}}"#).is_err());
        assert!(parse_strict(br#"[{"b":1},{"b":1}]"#).is_ok());
    }

    #[test]
    fn strict_parse_refuses_trailing_data_and_deep_nesting() {
        assert!(parse_strict(b"{} {}").is_err());
        let deep = "[".repeat(100_000);
        assert!(parse_strict(deep.as_bytes()).is_err());
        assert!(parse_strict(b"\xff").is_err());
    }

    /// Only serde_json's `arbitrary_precision` makes that key a number; without it, in
    /// a document of its own, it is an ordinary key. (The `protocol-mirror` crate turns
    /// the feature on, so a workspace build has it and `cargo test -p protocol-types`
    /// alone does not: each run checks its own case. With it, a sender's own key of
    /// that name is read as a number, as serde_json itself reads it.)
    #[test]
    fn the_arbitrary_precision_number_key_is_a_plain_key_with_or_without_the_feature() {
        let token = |value: Value| {
            let mut object = Map::new();
            object.insert(NUMBER_TOKEN.to_owned(), value);
            Value::Object(object)
        };
        for (doc, expected) in [
            (r#"{"$serde_json::private::Number":"7"}"#, token(json!("7"))),
            (
                r#"{"$serde_json::private::Number":"abc"}"#,
                token(json!("abc")),
            ),
            (
                r#"{"$serde_json::private::Numb\u0065r":"7"}"#,
                token(json!("7")),
            ),
            (
                r#"{"$serde_json::private::Number":"\u0037"}"#,
                token(json!("7")),
            ),
            (r#"{"$serde_json::private::Number":7}"#, token(json!(7))),
            (
                r#"{"$serde_json::private::Number":{"a":[1]}}"#,
                token(json!({"a":[1]})),
            ),
            (
                r#"{"$serde_json::private::Number":null}"#,
                token(Value::Null),
            ),
        ] {
            assert_eq!(parse_strict(doc.as_bytes()).unwrap(), expected, "{doc}");
        }
        let two = parse_strict(br#"{"$serde_json::private::Number":"5","z":1}"#).unwrap();
        assert_eq!(two.as_object().unwrap().len(), 2);
        assert!(
            parse_strict(
                br#"{"$serde_json::private::Number":"5","$serde_json::private::Number":"5"}"#
            )
            .is_err()
        );
        if *ARBITRARY_PRECISION {
            let big = parse_strict(b"[4.5, 123456789012345678901234567890, 1e400]").unwrap();
            assert_eq!(
                big.to_string(),
                "[4.5,123456789012345678901234567890,1e+400]"
            );
        }
    }

    #[test]
    fn a_lone_surrogate_escape_reads_as_the_replacement_character() {
        for (doc, expected) in [
            (r#"["x\ud800"]"#, json!(["x\u{fffd}"])),
            (r#"["\uDFFFy"]"#, json!(["\u{fffd}y"])),
            (
                r#"{"\ud83d": "\ud83d\ude00\ud83d"}"#,
                json!({"\u{fffd}": "😀\u{fffd}"}),
            ),
            (
                r#"["\ud83d\u0041", "\\ud800"]"#,
                json!(["\u{fffd}A", "\\ud800"]),
            ),
            (r#"["\udc00\ud800"]"#, json!(["\u{fffd}\u{fffd}"])),
        ] {
            assert_eq!(parse_strict(doc.as_bytes()).unwrap(), expected, "{doc}");
        }
        // Other mistakes still fail, as they did.
        let message = parse_strict(br#"["\ud800", tru]"#).unwrap_err().to_string();
        assert!(message.contains("column 15"), "{message}");
        assert!(parse_strict(br#"["\ud800"#).is_err());
        assert!(parse_strict(br#"["\u12"]"#).is_err());
        assert_eq!(
            replace_lone_surrogates(br#"{"a":"\u00e9\ud83d\ude00"}"#, b"\\ufffd"),
            None
        );
    }

    #[test]
    fn strict_parse_keeps_numbers() {
        let value = parse_strict(br#"[1, -2, 1.5, 18446744073709551615]"#).unwrap();
        assert_eq!(
            value,
            serde_json::json!([1, -2, 1.5, 18446744073709551615u64])
        );
    }

    #[test]
    fn integers_refuse_floats_and_overflow() {
        assert!(i64::from_json(serde_json::json!(1.5)).is_err());
        assert!(Timestamp::from_json(serde_json::json!(u64::MAX)).is_err());
        assert_eq!(
            Timestamp::from_json(serde_json::json!(-5)).unwrap(),
            Timestamp(-5)
        );
    }
}
