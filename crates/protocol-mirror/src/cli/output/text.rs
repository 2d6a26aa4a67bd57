//! Values as text: one line safe for a terminal, cut to a length, times in UTC and
//! back, byte counts in binary units.

use serde_json::Value;

/// Text from the replica as it may be shown on a terminal in one line: line breaks and
/// tabs become spaces, and characters a terminal would act on rather than show
/// (escape sequences that recolour, move the cursor or retitle the window; bells,
/// backspaces; bidirectional controls that reorder what is shown) become visible
/// stand-ins: `␛` for ESC and the other C0 control pictures, `␡` for DEL, `�` for the
/// rest. The text comes from whoever sent a message.
pub(crate) fn shown_in_one_line(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            c if breaks_a_line(c) => ' ',
            c => shown_char(c),
        })
        .collect()
}

/// `c` as a terminal may show it: a character it would act on rather than show (a
/// control, a bidirectional control) as its visible stand-in (see
/// [`shown_in_one_line`]); any other as it is.
pub(crate) fn shown_char(c: char) -> char {
    match c {
        '\0'..='\u{1f}' => char::from_u32(0x2400 + c as u32).unwrap_or('\u{fffd}'),
        '\u{7f}' => '\u{2421}',
        c if c.is_control() || is_bidi_control(c) => '\u{fffd}',
        c => c,
    }
}

/// How [`ControlsShown`] writes the characters a terminal would act on rather than
/// show.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Controls {
    /// As they are: output to a file or a pipe.
    Raw,
    /// As [`shown_char`]'s stand-ins, but for line ends and tabs: CSV on a terminal,
    /// whose values are otherwise written as received.
    StandIns,
    /// As JSON escapes (`\u009b`), which mean the same character: JSON on a terminal
    /// (serde_json escapes C0 controls only).
    JsonEscapes,
}

/// Output that writes the characters a terminal would act on as `controls` says:
/// CSV printed a sender's escape sequences raw (recolouring, retitling the window),
/// and JSON its C1 and bidirectional controls (black-box probe, review). Text split
/// within a character between two writes is held until the rest comes.
pub(crate) struct ControlsShown<W: std::io::Write> {
    inner: W,
    controls: Controls,
    /// The start of a character whose rest has not come yet.
    held: Vec<u8>,
}

impl<W: std::io::Write> ControlsShown<W> {
    pub(crate) fn new(inner: W, controls: Controls) -> ControlsShown<W> {
        ControlsShown {
            inner,
            controls,
            held: Vec::new(),
        }
    }

    fn push_shown(&self, shown: &mut String, text: &str) {
        use std::fmt::Write as _;
        for c in text.chars() {
            let acted_on = c.is_control() || is_bidi_control(c);
            match (self.controls, c) {
                (_, '\n' | '\t') => shown.push(c),
                (Controls::JsonEscapes, c) if acted_on => {
                    // Every such character is in the Basic Multilingual Plane.
                    let _ = write!(shown, "\\u{:04x}", u32::from(c));
                }
                (Controls::JsonEscapes | Controls::Raw, c) => shown.push(c),
                (Controls::StandIns, c) => shown.push(shown_char(c)),
            }
        }
    }
}

impl<W: std::io::Write> std::io::Write for ControlsShown<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.controls == Controls::Raw {
            return self.inner.write(buf);
        }
        let before = self.held.len();
        self.held.extend_from_slice(buf);
        let mut shown = String::with_capacity(self.held.len());
        let mut rest: &[u8] = &self.held;
        while !rest.is_empty() {
            match std::str::from_utf8(rest) {
                Ok(text) => {
                    self.push_shown(&mut shown, text);
                    rest = &[];
                }
                Err(e) => {
                    let (valid, after) = rest.split_at(e.valid_up_to());
                    self.push_shown(&mut shown, std::str::from_utf8(valid).unwrap_or_default());
                    match e.error_len() {
                        // A character cut short: held for the next write.
                        None => {
                            rest = after;
                            break;
                        }
                        Some(invalid) => {
                            shown.push('\u{fffd}');
                            rest = &after[invalid..];
                        }
                    }
                }
            }
        }
        let held = rest.to_vec();
        match self.inner.write_all(shown.as_bytes()) {
            Ok(()) => {
                self.held = held;
                Ok(buf.len())
            }
            // Not taken: `buf` is given again (a `BufWriter` keeps what it could not
            // write), and must not be held twice.
            Err(e) => {
                self.held.truncate(before);
                Err(e)
            }
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if !self.held.is_empty() {
            self.inner.write_all("\u{fffd}".as_bytes())?;
            self.held.clear();
        }
        self.inner.flush()
    }
}

/// How many terminal columns `text` takes (a CJK character or an emoji two).
pub(crate) fn shown_width(text: &str) -> usize {
    unicode_width::UnicodeWidthStr::width(text)
}

/// Characters that end a line or jump to the next column where one line is asked
/// for: shown as a space.
pub(crate) fn breaks_a_line(c: char) -> bool {
    matches!(c, '\n' | '\r' | '\t' | '\u{2028}' | '\u{2029}')
}

/// Unicode's `Bidi_Control` characters: the marks, embeddings, overrides and isolates
/// that change the order in which a terminal shows the text around them.
pub(crate) fn is_bidi_control(c: char) -> bool {
    matches!(
        c,
        '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
    )
}

/// Cuts `text` to at most `max` characters, ending with an ellipsis when cut, and
/// never inside a character as shown (a grapheme cluster: an emoji joined from several
/// with zero-width joiners, a letter and its accents), which a cut by characters left
/// as a stray joiner or half a family before the ellipsis.
pub(crate) fn truncate(text: &str, max: usize) -> String {
    use unicode_segmentation::UnicodeSegmentation;
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let keep = max.saturating_sub(1);
    let (mut end, mut kept) = (0, 0);
    for (start, grapheme) in text.grapheme_indices(true) {
        kept += grapheme.chars().count();
        if kept > keep {
            break;
        }
        end = start + grapheme.len();
    }
    format!("{}…", &text[..end])
}

/// `text` cut to at most `max` terminal columns ([`shown_width`]), with `…` as the
/// last, between graphemes.
pub(crate) fn truncate_to_width(text: &str, max: usize) -> String {
    use unicode_segmentation::UnicodeSegmentation;
    if shown_width(text) <= max {
        return text.to_owned();
    }
    let keep = max.saturating_sub(1);
    let (mut end, mut used) = (0, 0);
    for (start, grapheme) in text.grapheme_indices(true) {
        used += shown_width(grapheme);
        if used > keep {
            break;
        }
        end = start + grapheme.len();
    }
    format!("{}…", &text[..end])
}

/// How a table shows `value` under the name `name`, when it is a time: an integer
/// named `*_at`, as [`format_time`] writes it.
pub(crate) fn time_in_table(name: &str, value: &Value) -> Option<String> {
    name.ends_with("_at")
        .then(|| value.as_i64())
        .flatten()
        .map(format_time)
}

/// A byte count (a `*_bytes` name) as a table shows it: the exact number, and from
/// 1 KiB on, the size in binary units too (`49377280 (47.1 MiB)`).
pub(crate) fn size_in_table(name: &str, value: &Value) -> Option<String> {
    let bytes = value.as_u64().filter(|_| name.ends_with("_bytes"))?;
    let units = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut size = bytes as f64;
    let mut unit = None;
    for next in units {
        // Up a unit once it would print as 1024.0 (1023.97 MiB is 1.0 GiB).
        if size < 1023.95 {
            break;
        }
        size /= 1024.0;
        unit = Some(next);
    }
    Some(match unit {
        Some(unit) => format!("{bytes} ({size:.1} {unit})"),
        None => bytes.to_string(),
    })
}

/// Unix seconds as `YYYY-MM-DD HH:MM:SS` (UTC).
pub(crate) fn format_time(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The inverse of [`format_time`]: `YYYY-MM-DD`, `YYYY-MM-DD HH:MM:SS` or
/// `YYYY-MM-DDTHH:MM:SSZ` (UTC) as Unix seconds, for every time a table prints (years
/// before 1970 and past 9999 too); the seconds may be left out (`HH:MM`).
pub(crate) fn parse_utc(text: &str) -> Option<i64> {
    // RFC 3339 allows `t` and `z` in lower case.
    let (date, time) = match text.split_once([' ', 'T', 't']) {
        Some((date, time)) => (date, Some(time.strip_suffix(['Z', 'z']).unwrap_or(time))),
        None => (text, None),
    };
    let mut fields = date.rsplitn(3, '-');
    let (day, month, year) = (fields.next()?, fields.next()?, fields.next()?);
    let number = |text: &str, digits: std::ops::RangeInclusive<usize>| {
        (digits.contains(&text.len()) && text.bytes().all(|b| b.is_ascii_digit()))
            .then(|| text.parse::<i64>().ok())
            .flatten()
    };
    let (year, month, day) = (
        number(year, 4..=11)?,
        number(month, 2..=2)?,
        number(day, 2..=2)?,
    );
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let days_in_month = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month[month as usize - 1] {
        return None;
    }
    let seconds = match time {
        None => 0,
        Some(time) => {
            let mut hms = time.split(':');
            let (h, m, s) = (hms.next()?, hms.next()?, hms.next().unwrap_or("00"));
            if hms.next().is_some() {
                return None;
            }
            let (h, m, s) = (number(h, 2..=2)?, number(m, 2..=2)?, number(s, 2..=2)?);
            if h > 23 || m > 59 || s > 59 {
                return None;
            }
            h * 3600 + m * 60 + s
        }
    };
    // Days since 1970-01-01 from a civil date (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    days.checked_mul(86_400)?.checked_add(seconds)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// CSV on a terminal shows a sender's escape sequences as stand-ins, and JSON as
    /// escapes, also when a character is split between two writes; line ends and tabs
    /// stay; raw, the bytes pass as they are.
    #[test]
    fn controls_are_shown_as_stand_ins_or_escapes_when_asked() {
        use std::io::Write;
        let text = "a\u{1b}]0;t\u{7}\tb\n\u{9b}31m \u{202e}é\r\u{7f}";
        for (controls, expected) in [
            (Controls::StandIns, "a␛]0;t␇\tb\n�31m �é␍␡"),
            (
                Controls::JsonEscapes,
                "a\\u001b]0;t\\u0007\tb\n\\u009b31m \\u202eé\\u000d\\u007f",
            ),
        ] {
            for split in 0..=text.len() {
                let mut out = ControlsShown::new(Vec::new(), controls);
                out.write_all(&text.as_bytes()[..split]).unwrap();
                out.write_all(&text.as_bytes()[split..]).unwrap();
                out.flush().unwrap();
                assert_eq!(
                    String::from_utf8(out.inner).unwrap(),
                    expected,
                    "{controls:?} split at {split}"
                );
            }
        }
        let mut out = ControlsShown::new(Vec::new(), Controls::Raw);
        out.write_all(text.as_bytes()).unwrap();
        assert_eq!(out.inner, text.as_bytes());
        let mut out = ControlsShown::new(Vec::new(), Controls::StandIns);
        out.write_all(b"x\xff\xc3").unwrap();
        out.flush().unwrap();
        assert_eq!(String::from_utf8(out.inner).unwrap(), "x��");
    }
    use crate::cli::output::cell;
    use serde_json::json;

    #[test]
    fn sizes_in_tables_are_also_in_binary_units() {
        let size = |name: &str, value: Value| size_in_table(name, &value);
        assert_eq!(size("database_bytes", json!(0)), Some("0".into()));
        assert_eq!(size("database_bytes", json!(1023)), Some("1023".into()));
        assert_eq!(
            size("wal_bytes", json!(1024)),
            Some("1024 (1.0 KiB)".into())
        );
        assert_eq!(
            size("database_bytes", json!(49_377_280)),
            Some("49377280 (47.1 MiB)".into())
        );
        assert_eq!(
            size("database_bytes", json!(3_006_477_107_u64)),
            Some("3006477107 (2.8 GiB)".into())
        );
        assert_eq!(
            size("database_bytes", json!(u64::MAX)),
            Some("18446744073709551615 (16.0 EiB)".into())
        );
        assert_eq!(
            size("database_bytes", json!(1024 * 1024 * 1024 - 1)),
            Some("1073741823 (1.0 GiB)".into())
        );
        assert_eq!(size("rows.messages", json!(49_377_280)), None, "not a size");
        assert_eq!(size("database_bytes", json!(null)), None);
    }

    /// `--since` takes back every time a table prints (it refused those before 1970,
    /// and `0001-01-01`).
    #[test]
    fn printed_times_parse_back() {
        let mut x: i64 = 0x2545_f491_4f6c_dd1d;
        let mut samples = vec![0, -5, -62_135_596_800, 253_402_300_799, 253_402_300_800];
        for _ in 0..2000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            samples.push(x % 400_000_000_000);
        }
        for secs in samples {
            let text = format_time(secs);
            if secs >= -62_135_596_800 {
                assert_eq!(parse_utc(&text), Some(secs), "{text}");
                let date = &text[..text.len() - 9];
                assert_eq!(
                    parse_utc(date),
                    Some(secs - secs.rem_euclid(86_400)),
                    "{date}"
                );
            }
        }
        assert_eq!(parse_utc("1970-01-01T00:00:05Z"), Some(5));
        assert_eq!(parse_utc("1970-01-01t00:00:05z"), Some(5));
        assert_eq!(parse_utc("1969-12-31 23:59:55"), Some(-5));
        assert_eq!(parse_utc("1970-01-01 00:01"), Some(60));
        for bad in [
            "2024-02-30",
            "2023-02-29",
            "2024-13-01",
            "2024-1-01",
            "2024-05-01 24:00:00",
            "2024-05-01 12",
            "2024-05-01 12:00:",
            "x",
            "",
            "2024-05-01 12:00:00:00",
            "+2024-05-01",
        ] {
            assert_eq!(parse_utc(bad), None, "{bad}");
        }
    }

    /// Terminal control characters from a message were written to the terminal as they
    /// were: colours, a retitled window, a bell (found by a black-box probe).
    #[test]
    fn table_cells_show_control_characters_instead_of_acting_on_them() {
        let shown =
            shown_in_one_line("red \u{1b}[31mRED\u{1b}]0;t\u{7}\u{8}\u{7f}\u{9b}\u{202e}x\ny\tz é");
        assert_eq!(shown, "red ␛[31mRED␛]0;t␇␈␡��x y z é");
        assert!(!shown.chars().any(char::is_control));
        // Nested values are JSON, which escapes only C0 controls.
        let nasty = "\u{7f}\u{85}\u{9b}2J\u{202e}\u{200f}\u{2066}\u{2028}";
        let nested = cell(&serde_json::json!({"a": [nasty]}), true);
        assert_eq!(nested, "{\"a\": [\"␡��2J��� \"]}");
        assert!(
            nested
                .chars()
                .all(|c| !c.is_control() && !is_bidi_control(c))
        );
        // Emoji sequences keep their joiners and selectors.
        assert_eq!(
            shown_in_one_line("👩\u{200d}💻 ❤\u{fe0f}"),
            "👩\u{200d}💻 ❤\u{fe0f}"
        );
    }

    #[test]
    fn times_format_as_utc() {
        assert_eq!(format_time(0), "1970-01-01 00:00:00");
        assert_eq!(format_time(705_103_200), "1992-05-05 22:00:00");
        assert_eq!(format_time(951_782_400), "2000-02-29 00:00:00");
        assert_eq!(format_time(-1), "1969-12-31 23:59:59");
    }

    #[test]
    fn truncation_adds_an_ellipsis() {
        assert_eq!(truncate("abcdef", 4), "abc…");
        assert_eq!(truncate("abc", 4), "abc");
        assert_eq!(truncate("héllo wörld", 6), "héllo…");
        // Never inside a character as shown: a joined emoji, a letter and its accent.
        let family = "\u{1f468}\u{200d}\u{1f469}\u{200d}\u{1f467}";
        assert_eq!(truncate(&format!("ab{family}cd"), 4), "ab…");
        assert_eq!(
            truncate(&format!("ab{family}cd"), 8),
            format!("ab{family}…")
        );
        assert_eq!(truncate("abe\u{301}f", 4), "ab…");
    }
}
