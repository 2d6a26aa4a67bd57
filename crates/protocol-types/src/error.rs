//! Errors of parsing Protocol objects and event envelopes.

use std::fmt;

/// A known field of a Protocol object holds a value of the wrong JSON type.
///
/// `path` names the field from the object's root, e.g. `attachments[0].file_size`;
/// inside an [`EventError`] it starts at the envelope, e.g. `payload.read_at`. A key
/// that is not a word of letters, digits, `_` and `-` (a sender's reaction name) is a
/// JSON string in brackets: `reactions[0]["a.b"][1]`.
///
/// Its `Debug`, like its `Display`, shows at most the first 100 characters of the
/// path, which runs through a sender's map keys (megabytes, at worst); [`path`](Self::path)
/// gives it whole.
#[derive(Clone, PartialEq, Eq)]
pub struct FieldError {
    path: String,
    expected: &'static str,
    found: &'static str,
}

impl FieldError {
    pub(crate) fn new(key: &str, expected: &'static str, found: &'static str) -> Self {
        FieldError {
            path: key.to_owned(),
            expected,
            found,
        }
    }

    /// Puts `parent` (an object key) in front of the path: as it is when it is a word
    /// (letters, digits, `_` and `-`), else as a JSON string in brackets
    /// (`reactions[0][""][0]`, `reactions[0]["a.b"]`): a sender's key of any other
    /// text made paths that read as others (`""` vanished, leaving `reactions[0][0]`:
    /// a probe).
    pub(crate) fn within(self, parent: &str) -> Self {
        let is_word = !parent.is_empty()
            && parent
                .chars()
                .all(|c| c.is_alphanumeric() || c == '_' || c == '-');
        if is_word {
            self.prefixed(parent)
        } else {
            let quoted = serde_json::Value::from(parent).to_string();
            self.prefixed(&format!("[{quoted}]"))
        }
    }

    /// Puts an array index in front of the path.
    pub(crate) fn at_index(self, index: usize) -> Self {
        self.prefixed(&format!("[{index}]"))
    }

    fn prefixed(mut self, prefix: &str) -> Self {
        let sep = if self.path.is_empty() || self.path.starts_with('[') {
            ""
        } else {
            "."
        };
        self.path = format!("{prefix}{sep}{}", self.path);
        self
    }

    /// The field's path, e.g. `payload.attachments[0].file_size`.
    #[must_use]
    pub fn path(&self) -> &str {
        &self.path
    }

    /// What the field should hold, e.g. `integer timestamp`.
    #[must_use]
    pub fn expected(&self) -> &'static str {
        self.expected
    }

    /// What it held instead: a JSON type name such as `string`, `nothing` for a
    /// required field that was absent, `""` for an empty `id`, or `integer out of
    /// range` for an integer beyond what the field holds (64-bit signed). Integers
    /// above `u64::MAX` or below `i64::MIN` are said to be out of range only where
    /// serde_json keeps them as written (its `arbitrary_precision` feature, which
    /// protocol-mirror turns on); without it serde_json reads them as a float, and
    /// they are a `number`.
    #[must_use]
    pub fn found(&self) -> &'static str {
        self.found
    }
}

impl fmt::Debug for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FieldError")
            .field("path", &Shown(&self.path))
            .field("expected", &self.expected)
            .field("found", &self.found)
            .finish()
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "field `{}`: expected {}, found {}",
            Shown(&self.path),
            self.expected,
            self.found
        )
    }
}

/// The most characters of a sender's text (an object key) an error message shows.
const SHOWN_CHARS: usize = 100;

/// A sender's text in an error message: at most [`SHOWN_CHARS`] characters (then
/// `…`), control characters escaped (`\n`, `\u{1b}`), and so are the characters that
/// break a line or reorder text around them (U+2028, U+2029, the bidirectional
/// controls: a review), so that the message stays one short line, read in order,
/// whatever the document held (a path runs through map keys, such as
/// reaction names, which may be megabytes long or hold line ends).
pub(crate) struct Shown<'a>(pub(crate) &'a str);

/// Line and paragraph separators, and the marks and controls of bidirectional text.
fn breaks_or_reorders(c: char) -> bool {
    matches!(
        c,
        '\u{2028}' | '\u{2029}' | '\u{200E}' | '\u{200F}' | '\u{061C}'
    ) || ('\u{202A}'..='\u{202E}').contains(&c)
        || ('\u{2066}'..='\u{2069}').contains(&c)
}

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, c) in self.0.chars().enumerate() {
            if i == SHOWN_CHARS {
                return f.write_str("…");
            }
            if c.is_control() {
                write!(f, "{}", c.escape_debug())?;
            } else if breaks_or_reorders(c) {
                write!(f, "{}", c.escape_unicode())?;
            } else {
                fmt::Write::write_char(f, c)?;
            }
        }
        Ok(())
    }
}

/// Quoted and escaped as `{:?}` shows a string, cut after [`SHOWN_CHARS`]
/// characters (then `…` after the closing quote).
impl fmt::Debug for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.char_indices().nth(SHOWN_CHARS) {
            Some((end, _)) => write!(f, "{:?}…", &self.0[..end]),
            None => write!(f, "{:?}", self.0),
        }
    }
}

impl std::error::Error for FieldError {}

/// Why bytes could not be read as an [`Event`](crate::Event).
///
/// [`Syntax`](EventError::Syntax) and [`Envelope`](EventError::Envelope) mean the
/// document is not an event at all (a webhook endpoint answers 400 and stores nothing);
/// [`Field`](EventError::Field) means a well-formed event of a known type whose payload
/// has a field of the wrong type (answered 422 and recorded as rejected).
///
/// Its `Debug` shows at most the first 100 characters of each piece of a sender's
/// text it holds (the event id, the field's path), so a `{:?}` in a log stays one
/// short line, as its `Display` is.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EventError {
    /// The bytes are not one JSON document: a syntax error, invalid UTF-8, nesting
    /// 128 levels deep or more (the envelope and its payload count), a key repeated
    /// within one object, or trailing data; or an id holds an escaped lone UTF-16
    /// surrogate (valid JSON, read as U+FFFD in text, but ids that differed only there
    /// would read as one). The ids are the event's, its payload's, and for the 15
    /// documented types the keys that place the object or its embedded copies among
    /// others: `conversation_id`, `contact_id`, `group_id`, `pinned_message_id` and
    /// `message_id` of the payload, a message's `contact.id` and its attachments' `id`
    /// and `message_id`, a group's members' `id`. Every other key holds text, an
    /// embedded contact's `conversation_id` among them (a snapshot that places
    /// nothing: a whole message was refused for its sender's).
    #[non_exhaustive]
    Syntax {
        /// What the JSON parser reported, with line and column.
        message: String,
    },
    /// The JSON is not an event envelope: it lacks a non-empty string `id`, a string
    /// `type`, or an object `payload` with a non-empty string `id`.
    #[non_exhaustive]
    Envelope {
        /// The offending envelope field: `id`, `type`, `payload` or `payload.id`, or
        /// `the document` when the JSON document is not an object at all.
        field: &'static str,
        /// What that field must be.
        expected: &'static str,
    },
    /// The envelope is fine and its type is known, but a payload field has the
    /// wrong JSON type.
    #[non_exhaustive]
    Field {
        /// The event's id, so that the rejection can be recorded against it.
        event_id: String,
        /// The event's type.
        event_type: crate::EventType,
        /// Which field, what it should be and what it was; its path starts at `payload`.
        source: FieldError,
    },
}

impl fmt::Debug for EventError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // Already short: a parser's message, with a sender's key cut where one is
            // quoted.
            EventError::Syntax { message } => {
                f.debug_struct("Syntax").field("message", message).finish()
            }
            EventError::Envelope { field, expected } => f
                .debug_struct("Envelope")
                .field("field", field)
                .field("expected", expected)
                .finish(),
            EventError::Field {
                event_id,
                event_type,
                source,
            } => f
                .debug_struct("Field")
                .field("event_id", &Shown(event_id))
                .field("event_type", event_type)
                .field("source", source)
                .finish(),
        }
    }
}

impl EventError {
    /// Whether the envelope is an event's and only a payload field has the wrong JSON
    /// type ([`EventError::Field`]): SPEC's 422, an event recorded as rejected. Every
    /// other error means the body is not an event envelope at all (400, nothing
    /// recorded); a variant added later says which it is here, so a receiver need not
    /// guess for it.
    ///
    /// ```
    /// use protocol_types::Event;
    ///
    /// let status = |body: &[u8]| match Event::from_slice(body) {
    ///     Ok(_) => 200,
    ///     Err(e) if e.is_field() => 422,
    ///     Err(_) => 400,
    /// };
    /// assert_eq!(status(br#"{"id":"e1","type":"contact.created","payload":{"id":"c1"}}"#), 200);
    /// assert_eq!(status(br#"{"id":"e1","type":"contact.created","payload":{"id":"c1","username":7}}"#), 422);
    /// assert_eq!(status(br#"{"id":"e1","type":"contact.created"}"#), 400);
    /// assert_eq!(status(b"not json"), 400);
    /// ```
    #[must_use]
    pub fn is_field(&self) -> bool {
        matches!(self, EventError::Field { .. })
    }
}

impl fmt::Display for EventError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EventError::Syntax { message } => write!(f, "invalid JSON: {message}"),
            // The whole document is no field: not quoted as one.
            EventError::Envelope {
                field: field @ "the document",
                expected,
            } => write!(f, "invalid event envelope: {field} must be {expected}"),
            EventError::Envelope { field, expected } => {
                write!(f, "invalid event envelope: `{field}` must be {expected}")
            }
            EventError::Field {
                event_type, source, ..
            } => write!(f, "invalid {event_type} payload: {source}"),
        }
    }
}

/// The field error's text is part of [`EventError::Field`]'s own message (a 422 names
/// the field in one line), so it is not also given as the error's `source()`: a chain
/// of causes would print it twice. It stays reachable as the variant's `source` field.
impl std::error::Error for EventError {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Action, EventType, Resource};

    /// A key that is not a word is quoted, so that no path reads as another.
    #[test]
    fn keys_other_than_words_are_quoted() {
        let path = |key: &str| {
            FieldError::new("", "string", "number")
                .at_index(0)
                .within(key)
                .at_index(0)
                .within("reactions")
                .path()
                .to_owned()
        };
        assert_eq!(path("red_angry_face"), "reactions[0].red_angry_face[0]");
        assert_eq!(path("thumbs-up"), "reactions[0].thumbs-up[0]");
        assert_eq!(path(""), r#"reactions[0][""][0]"#);
        assert_eq!(path("a.b[0]"), r#"reactions[0]["a.b[0]"][0]"#);
        assert_eq!(path("a`b"), r#"reactions[0]["a`b"][0]"#);
        assert_eq!(path("say \"hi\""), r#"reactions[0]["say \"hi\""][0]"#);
        assert_eq!(path("👍"), r#"reactions[0]["👍"][0]"#);
        assert_eq!(
            FieldError::new("x", "integer", "string")
                .within("a b")
                .within("payload")
                .path(),
            r#"payload["a b"].x"#
        );
    }

    #[test]
    fn field_paths_compose() {
        let err = FieldError::new("file_size", "integer", "string")
            .at_index(0)
            .within("attachments")
            .within("payload");
        assert_eq!(err.path(), "payload.attachments[0].file_size");
        assert_eq!(
            err.to_string(),
            "field `payload.attachments[0].file_size`: expected integer, found string"
        );
    }

    /// A path through a sender's map keys (reaction names) is shown short and on one
    /// line: the message goes into a 422's small body and into logs.
    #[test]
    fn a_senders_key_is_shown_short_and_on_one_line() {
        let key = format!("x\nFORGED\u{1b}[31m{}", "k".repeat(1_000_000));
        let err = FieldError::new("0", "integer", "string")
            .within(&key)
            .within("reactions");
        assert!(err.path().len() > key.len(), "kept whole");
        let shown = err.to_string();
        assert!(shown.len() < 200, "{}", shown.len());
        assert!(!shown.chars().any(char::is_control), "{shown:?}");
        assert!(
            shown.starts_with(r#"field `reactions["x\nFORGED\u001b[31mkkk"#),
            "{shown}"
        );
        assert!(
            shown.ends_with("…`: expected integer, found string"),
            "{shown}"
        );
        // Nor can a line separator or a bidirectional control reorder or break it.
        assert_eq!(
            Shown("a\u{2028}b\u{202E}c\u{2066}d").to_string(),
            "a\\u{2028}b\\u{202e}c\\u{2066}d"
        );
        // Short keys are shown as they are.
        assert_eq!(Shown("café").to_string(), "café");
        assert_eq!(
            Shown(&"é".repeat(SHOWN_CHARS)).to_string(),
            "é".repeat(SHOWN_CHARS)
        );
    }

    /// `{:?}` of an error, as a log line or a test's failure shows it, stays short
    /// too: an event id and a path may be as long as the body.
    #[test]
    fn debug_shows_a_senders_text_short() {
        let long = format!("r\n{}", "k".repeat(1_000_000));
        let err = EventError::Field {
            event_id: long.clone(),
            event_type: EventType::new(Resource::Message, Action::Created),
            source: FieldError::new("0", "integer", "string")
                .within(&long)
                .within("payload"),
        };
        let shown = format!("{err:?}");
        assert!(shown.len() < 400, "{}", shown.len());
        assert!(!shown.contains('\n'), "{shown}");
        let id = format!("{:?}…", &long[..SHOWN_CHARS]);
        let quoted = serde_json::Value::from(long.as_str()).to_string();
        let path = format!("{:?}…", &format!("payload[{quoted}]")[..SHOWN_CHARS]);
        assert_eq!(
            shown,
            format!(
                "Field {{ event_id: {id}, event_type: EventType {{ resource: Message, \
                 action: Created }}, source: FieldError {{ path: {path}, \
                 expected: \"integer\", found: \"string\" }} }}"
            )
        );
        // Short text is shown as `{:?}` shows it.
        let err = FieldError::new("read_at", "integer timestamp", "string").within("payload");
        assert_eq!(
            format!("{err:?}"),
            r#"FieldError { path: "payload.read_at", expected: "integer timestamp", found: "string" }"#
        );
    }

    #[test]
    fn display_snapshots() {
        let syntax = EventError::Syntax {
            message: "EOF while parsing a value at line 1 column 0".into(),
        };
        assert_eq!(
            syntax.to_string(),
            "invalid JSON: EOF while parsing a value at line 1 column 0"
        );
        let envelope = EventError::Envelope {
            field: "payload.id",
            expected: "a non-empty string",
        };
        assert_eq!(
            envelope.to_string(),
            "invalid event envelope: `payload.id` must be a non-empty string"
        );
        let field = EventError::Field {
            event_id: "e1".into(),
            event_type: EventType::new(Resource::Message, Action::Updated),
            source: FieldError::new("read_at", "integer timestamp", "string").within("payload"),
        };
        assert_eq!(
            field.to_string(),
            "invalid message.updated payload: field `payload.read_at`: expected integer timestamp, found string"
        );
    }
}
