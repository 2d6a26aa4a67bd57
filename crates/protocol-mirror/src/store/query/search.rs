//! `search`: full-text search over message text, and the snippets of its hits.

use protocol_types::Resource;
use rusqlite::{Connection, OptionalExtension};
use serde_json::Value;

use super::super::{StoreError, rows};
use super::one_snapshot;

/// A message found by [`search`].
#[derive(Debug, Clone, PartialEq)]
pub struct SearchHit {
    /// The message, as `get` prints it.
    pub message: Value,
    /// The matching part of its text, matches between `open` and `close` markers.
    pub snippet: String,
}

/// Why a search failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SearchError {
    /// A raw FTS5 query that SQLite could not parse.
    #[error("invalid full-text query: {0}")]
    InvalidQuery(String),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Turns user text into an FTS5 query that matches every word, literally: each
/// whitespace-separated token that holds a word becomes a quoted string (quotes doubled), so FTS
/// operators and stray quotes are just text. A token repeated (in any ASCII case) is
/// asked for once: every word must appear anyway, and FTS5's ranking and snippets
/// take time that grows with the square of a query's repeats (a pasted text holding
/// `hotel` 40 times took 13 s, 250 times over 5 minutes). Other letters' cases are
/// left alone: the index's folding of them is older than Rust's (`Ꭰ` and `ꭰ` are two
/// words to it).
pub fn literal_fts_query(text: &str) -> String {
    let mut seen = std::collections::HashSet::new();
    text.split_whitespace()
        // A token of no word (a lone accent) would ask for an empty word, which only
        // a text holding one has (`hello ́` found nothing: a review).
        .filter(|token| has_words(token))
        .filter(|token| seen.insert(token.to_ascii_lowercase()))
        .map(|token| format!("\"{}\"", token.replace('"', "\"\"")))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Full-text search over message text, best matches first. With `raw`, `text` is
/// FTS5 query syntax (`AND`, `OR`, `NEAR`, `prefix*`, ...); otherwise every word must
/// appear, literally. With `markers`, each hit has a snippet of its text with the
/// matches between them; without, snippets are empty (not computed).
///
/// Snippets are made for the hits returned only (in the query that sorts the matches
/// they were made for every match: `search hotel` over 10,000 matches made 10,000).
/// FTS5's snippet takes time that grows with the square of a text's matches (one
/// 160 KB message of 20,000 matches: 3.5 s), so a text over [`SNIPPET_MAX_BYTES`]
/// (or one holding a NUL, where FTS5's snippet stops, or a word over 32 characters,
/// which FTS5's keeps whole), and any hit of a prefix query (which FTS5 expands again
/// for each snippet), gets a plain one instead: the words around the first place
/// holding most of the query's words (compared as the index folds them), or the
/// text's start, long words clipped. Unlike FTS5's, it marks each word of a phrase
/// apart (`[quick] [brown]`).
pub fn search(
    conn: &Connection,
    text: &str,
    raw: bool,
    conversation: Option<&str>,
    limit: usize,
    markers: Option<(&str, &str)>,
) -> std::result::Result<Vec<SearchHit>, SearchError> {
    one_snapshot(conn, |conn| {
        search_in(conn, text, raw, conversation, limit, markers)
    })
}

/// [`search`] on `conn` as it is (in the caller's snapshot).
fn search_in(
    conn: &Connection,
    text: &str,
    raw: bool,
    conversation: Option<&str>,
    limit: usize,
    markers: Option<(&str, &str)>,
) -> std::result::Result<Vec<SearchHit>, SearchError> {
    // In the form the index holds its words (a query of NFD text found NFC words no
    // more, once marks stayed in words).
    let text = indexed_form(text);
    let query = if raw {
        text.into_owned()
    } else {
        literal_fts_query(&text)
    };
    if query.trim().is_empty() {
        return Ok(Vec::new());
    }
    // Ranked in the index alone, ties by arrival: only the hits returned are read
    // from `messages` (joined for every match, a common word's 200,000 matches read
    // 200,000 messages, and took 0.4-0.6 s). A conversation's messages are a set
    // looked up for each match.
    let sql = "SELECT rowid FROM messages_fts
               WHERE messages_fts MATCH ?1
                 AND (?2 IS NULL
                      OR rowid IN (SELECT rowid FROM messages WHERE conversation_id = ?2))
               ORDER BY bm25(messages_fts), rowid
               LIMIT ?3";
    let rowids = conn
        .prepare_cached(sql)
        .and_then(|mut stmt| {
            stmt.query_map(
                rusqlite::params![query, conversation, limit as i64],
                |row| row.get::<_, i64>(0),
            )?
            .collect::<rusqlite::Result<Vec<i64>>>()
        })
        .map_err(|e| search_error(e, "searching"))?;
    // Both reads are on one snapshot (see [`search`]): every hit has its row.
    let found = rowids
        .into_iter()
        .map(|rowid| {
            conn.prepare_cached("SELECT id, data FROM messages WHERE rowid = ?1")
                .and_then(|mut stmt| {
                    stmt.query_row([rowid], |row| {
                        Ok((rowid, row.get::<_, String>(0)?, row.get::<_, String>(1)?))
                    })
                })
                .map_err(|e| search_error(e, "reading a search hit"))
        })
        .collect::<std::result::Result<Vec<(i64, String, String)>, SearchError>>()?;
    // The query's phrases, for the snippets FTS5 is not asked for: read once.
    let phrases = markers.map(|_| query_phrases(&query)).unwrap_or_default();
    found
        .into_iter()
        .map(|(rowid, id, data)| {
            let message = rows::output(conn, Resource::Message, &id, &data)?;
            let snippet = match markers {
                None => String::new(),
                Some(markers) => {
                    let text = message["message"].as_str().unwrap_or_default();
                    // FTS5's snippet also stops at a NUL in the text (words went
                    // missing around it), and it expands a prefix query again for
                    // every hit (`w1*`, 11,000 words: up to 1.7 s a snippet).
                    if text.len() > SNIPPET_MAX_BYTES
                        || text.contains('\0')
                        || (raw && query.contains('*'))
                        || has_long_word(text)
                        // FTS5 finds its words in the stored text, which NFC may
                        // split or join otherwise than the index (`<` and U+0338
                        // is `≮`): it marked the word beside the match (a review).
                        || !is_indexed_form(text)
                        || !fts_snippet_is_affordable(text, &phrases)
                    {
                        plain_snippet(text, &phrases, markers)
                    } else {
                        fts_snippet(conn, &query, rowid, markers)?
                    }
                }
            };
            Ok(SearchHit { message, snippet })
        })
        .collect()
}

/// The longest message text whose snippet FTS5 makes (see [`search`]).
pub const SNIPPET_MAX_BYTES: usize = 8 * 1024;

/// The most (places in a text where a phrase of the query may begin) × (phrases of
/// the query) for which FTS5 makes the snippet: its time grows with the square of
/// that product (measured on one text holding `hotel` 1,000 times: 16 ms for one
/// phrase, 0.2 s for 4, 0.7 s for 8; 40 phrases took 19 s).
const SNIPPET_MATCH_BUDGET: usize = 1_000;

/// Whether FTS5's snippet of `text` for a query of `phrases` stays within
/// [`SNIPPET_MATCH_BUDGET`]: counted over the words of `text` that begin one of them
/// (as folded).
fn fts_snippet_is_affordable(text: &str, phrases: &[Phrase]) -> bool {
    let limit = SNIPPET_MATCH_BUDGET / phrases.len().max(1);
    let begins_a_phrase = |word: &str| {
        phrases
            .iter()
            .any(|(words, prefix)| match words.as_slice() {
                [only] if *prefix => word.starts_with(only.as_str()),
                [first, ..] => word == first,
                [] => false,
            })
    };
    folded_words(text)
        .filter(|(_, word)| begins_a_phrase(word))
        .nth(limit)
        .is_none()
}

/// A query FTS5 could not parse is the caller's mistake; anything else the store's.
fn search_error(error: rusqlite::Error, context: &'static str) -> SearchError {
    match error {
        rusqlite::Error::SqliteFailure(e, Some(message))
            if e.code == rusqlite::ErrorCode::Unknown =>
        {
            SearchError::InvalidQuery(message)
        }
        source => StoreError::Sqlite { context, source }.into(),
    }
}

/// FTS5's snippet of message `rowid` for `query`: up to 12 tokens around the best
/// matches, each between `markers`.
fn fts_snippet(
    conn: &Connection,
    query: &str,
    rowid: i64,
    markers: (&str, &str),
) -> std::result::Result<String, SearchError> {
    conn.prepare_cached(
        "SELECT snippet(messages_fts, 0, ?3, ?4, '…', 12) FROM messages_fts
         WHERE messages_fts MATCH ?1 AND rowid = ?2",
    )
    .and_then(|mut stmt| {
        stmt.query_row(
            rusqlite::params![query, rowid, markers.0, markers.1],
            |row| row.get::<_, Option<String>>(0),
        )
        .optional()
    })
    .map(|snippet| snippet.flatten().unwrap_or_default())
    .map_err(|e| search_error(e, "making a snippet"))
}

/// `text` in the form the full-text index holds it, and queries ask for it: Unicode's
/// NFC (composed), so that a word typed in composed or decomposed characters is one
/// word (a Bengali vowel sign typed in two parts, `e` and an accent apart). FTS5 reads
/// the words of its snippets from the stored text: NFC takes no word apart nor joins
/// two (the tokenizer's words are letters, digits and marks alike), so the words of
/// both forms are at the same places.
pub(crate) fn indexed_form(text: &str) -> std::borrow::Cow<'_, str> {
    use unicode_normalization::UnicodeNormalization;
    if is_indexed_form(text) {
        std::borrow::Cow::Borrowed(text)
    } else {
        std::borrow::Cow::Owned(text.nfc().collect())
    }
}

/// Whether `text` is in the form the index holds ([`indexed_form`]) as it is.
fn is_indexed_form(text: &str) -> bool {
    use unicode_normalization::{IsNormalized, is_nfc_quick};
    matches!(is_nfc_quick(text.chars()), IsNormalized::Yes)
}

/// Whether the full-text index takes `c` for a character of a word: a letter, a digit
/// or a mark (Unicode's; `categories 'L* N* M*'` of FTS5's `unicode61` tokenizer, since
/// migration 17: a Hindi vowel sign split its word before), or a character of a private
/// use area (FTS5's tables count them as letters, all but U+E000, U+F8FF, U+F0000 and
/// U+FFFFD: `search` said a text of them had no words, and found them all the same).
/// Near enough: FTS5's tables take characters assigned since them for letters, but for
/// the symbols of Unicode 14 that migration 17 names separators (emoji such as 🤔).
fn is_word_char(c: char) -> bool {
    c.is_alphanumeric()
        || (unicode_normalization::char::is_combining_mark(c) && !is_emoji_mark(c))
        || matches!(c, '\u{e001}'..='\u{f8fe}' | '\u{f0001}'..='\u{ffffc}' | '\u{100000}'..='\u{10fffd}')
}

/// The marks that belong to an emoji rather than a word, which migration 17 makes
/// separators: the variation selectors (`❤️love` held the word `️love`, not `love`: a
/// probe) and the enclosing marks (a keycap, `1️⃣`).
fn is_emoji_mark(c: char) -> bool {
    matches!(c, '\u{fe00}'..='\u{fe0f}' | '\u{20dd}'..='\u{20e0}' | '\u{20e2}'..='\u{20e4}')
}

/// Whether `text` holds a word as the full-text index sees one (as `folded_words`
/// splits and folds them): `search 😀`, `search ""` or a lone accent does not.
pub fn has_words(text: &str) -> bool {
    folded_words(text).any(|(_, word)| !word.is_empty())
}

/// The combining accents FTS5's `unicode61` tokenizer drops with `remove_diacritics 2`
/// (`sqlite3Fts5UnicodeIsdiacritic`'s, U+0300 to U+0331): `cafe` + U+0301 is `cafe`.
fn is_dropped_accent(c: char) -> bool {
    const FIRST: u32 = 0x300;
    const MASKS: [u32; 2] = [0x0802_9FDF, 0x0003_61F8];
    let at = u32::from(c).wrapping_sub(FIRST);
    at < 50 && MASKS[(at / 32) as usize] & (1 << (at % 32)) != 0
}

/// `c` as the index folds it, pushed onto `word`: an accent it drops dropped, a Latin
/// letter's accents taken off (`É` is `e`; other scripts' letters keep theirs, as
/// FTS5's do: Greek `ά` stays, and so do the Latin letters of two accents its table
/// leaves, such as `ǡ`), then in lower case as FTS5 folds it ([`folded_case`]).
fn push_folded(word: &mut String, c: char) {
    use unicode_normalization::UnicodeNormalization;
    if is_dropped_accent(c) {
        return;
    }
    let latin = matches!(c, '\u{c0}'..='\u{24f}' | '\u{1e00}'..='\u{1eff}')
        && !matches!(c, '\u{1e0}'..='\u{1e3}' | '\u{1ee}' | '\u{1ef}' | '\u{1fc}'..='\u{1ff}');
    if latin {
        for base in std::iter::once(c).nfd().filter(|c| !is_dropped_accent(*c)) {
            word.extend(base.to_lowercase().map(folded_case));
        }
    } else {
        word.extend(c.to_lowercase().map(folded_case));
    }
}

/// A lower-case letter as FTS5 folds it where Unicode's case folding differs from
/// lower case: Greek's final sigma is `σ` (a long Greek text's plain snippet marked no
/// word ending in `ς`: the check of every character against the index).
fn folded_case(c: char) -> char {
    match c {
        'µ' => 'μ',
        'ſ' => 's',
        'ς' => 'σ',
        'ϐ' => 'β',
        'ϑ' => 'θ',
        'ϕ' => 'φ',
        'ϖ' => 'π',
        'ϰ' => 'κ',
        'ϱ' => 'ρ',
        'ϵ' => 'ε',
        '\u{345}' => 'ι',
        c => c,
    }
}

/// The words of `text` as FTS5's `unicode61 remove_diacritics 2 categories 'L* N* M*'`
/// tokenizer sees them, near enough: runs of letters, digits and marks
/// ([`is_word_char`]), each with its byte range in `text`, and folded
/// ([`indexed_form`], then [`push_folded`]: `Café` is `cafe`). A run that folds to
/// nothing (a lone accent after a space) is an empty word, as it is to FTS5: it takes
/// a place, so that `hello ́ world` holds no phrase `hello world`.
fn folded_words(text: &str) -> impl Iterator<Item = (std::ops::Range<usize>, String)> + '_ {
    let mut words = Vec::new();
    let mut start = None;
    for (at, c) in text.char_indices().chain([(text.len(), ' ')]) {
        match (is_word_char(c), start) {
            (true, None) => start = Some(at),
            (false, Some(from)) => {
                words.push(from..at);
                start = None;
            }
            _ => {}
        }
    }
    words.into_iter().map(move |range| {
        let mut folded = String::new();
        for c in indexed_form(&text[range.clone()]).chars() {
            push_folded(&mut folded, c);
        }
        (range, folded)
    })
}

/// A snippet made in one pass over a long `text`: about 12 words around the first
/// place where most of the query's `phrases` ([`query_phrases`]) appear, every word
/// of them between `markers`; the text's first words when none does. Words compare as FTS5's
/// tokenizer splits and folds them ([`folded_words`]: `don't` holds `don`, `e-mail`
/// holds `mail`, `café` is `cafe`), and only the word is marked (`e-[mail]`, as FTS5's
/// own snippets do); a query word ending in `*` (a prefix) marks the words it begins;
/// a column filter (`message:` or `{message}:`), the operators and `NEAR`'s distance
/// are not words of the query.
fn plain_snippet(text: &str, phrases: &[Phrase], markers: (&str, &str)) -> String {
    const AROUND: usize = 6;
    // Phrases are found in the text's words, so that one may span tokens (`e-mail`
    // searched for is found in `e mail`, as FTS5 finds it); the snippet is made of
    // whitespace-separated tokens.
    let marks = phrase_marks(text, phrases);
    let tokens: Vec<std::ops::Range<usize>> = token_ranges(text).collect();
    // The marks within each token, clipped to it.
    let mut in_token: Vec<Vec<(std::ops::Range<usize>, usize)>> = vec![Vec::new(); tokens.len()];
    let mut first = 0;
    for (mark, phrase) in &marks {
        while first < tokens.len() && tokens[first].end <= mark.start {
            first += 1;
        }
        for (i, token) in tokens.iter().enumerate().skip(first) {
            if token.start >= mark.end {
                break;
            }
            let clipped = mark.start.max(token.start)..mark.end.min(token.end);
            in_token[i].push((clipped, *phrase));
        }
    }
    // Which phrases each token holds (one bit each, the 64th for any after it); the
    // snippet is centred on the first token whose neighbourhood holds the most of them,
    // as FTS5 picks the window with the most phrases (a lone first word drew the
    // snippet away from a phrase of two words further on).
    let held: Vec<u64> = in_token
        .iter()
        .map(|marks| {
            marks
                .iter()
                .fold(0, |bits, (_, phrase)| bits | 1 << (*phrase).min(63))
        })
        .collect();
    let around = |i: usize| {
        held[i.saturating_sub(AROUND)..(i + AROUND).min(held.len())]
            .iter()
            .fold(0u64, |bits, b| bits | b)
            .count_ones()
    };
    // The most phrases; of those, the first.
    let best = (0..tokens.len())
        .filter(|&i| held[i] != 0)
        .max_by_key(|&i| (around(i), std::cmp::Reverse(i)));
    let start = best.map_or(0, |i| i.saturating_sub(AROUND));
    let end = (start + 2 * AROUND).min(tokens.len());
    let mut snippet = String::new();
    if start > 0 {
        snippet.push('…');
    }
    for (i, token) in tokens[start..end].iter().enumerate() {
        if i > 0 || start > 0 {
            snippet.push(' ');
        }
        let mut from = token.start;
        let marks = &in_token[start + i];
        for (n, (mark, _)) in marks.iter().enumerate() {
            // What touches a mark is kept on its side: the end of what comes
            // before the first, both ends of what lies between two.
            push_clipped(&mut snippet, &text[from..mark.start], n > 0, true);
            snippet.push_str(markers.0);
            // A prefix's match may be a long word itself (`xx*`): its start is kept.
            push_clipped(&mut snippet, &text[mark.clone()], true, false);
            snippet.push_str(markers.1);
            from = mark.end;
        }
        push_clipped(&mut snippet, &text[from..token.end], true, marks.is_empty());
    }
    if end < tokens.len() {
        snippet.push_str(" …");
    }
    snippet
}

/// The most characters of a snippet's word, or part of a word between its marks, kept
/// whole: a longer one (a link, a run of one letter) keeps [`CLIPPED_KEEPS`] of them
/// at the ends that matter. (A snippet held a 10,000-letter word whole, and the table's
/// cell, cut at 60 characters, never reached the match after it; a black-box probe.)
const LONGEST_WORD: usize = 32;

/// The characters kept at each kept end of a word clipped for being over
/// [`LONGEST_WORD`].
const CLIPPED_KEEPS: usize = 12;

/// Appends `piece` to `snippet`, or, if it is over [`LONGEST_WORD`] characters, its
/// first and/or last [`CLIPPED_KEEPS`] characters at most, whole as people see them
/// (as `keep_start` and `keep_end` say; with neither, the end) around a `…`.
fn push_clipped(snippet: &mut String, piece: &str, keep_start: bool, keep_end: bool) {
    use unicode_segmentation::UnicodeSegmentation;
    let chars = piece.chars().count();
    if chars <= LONGEST_WORD {
        snippet.push_str(piece);
        return;
    }
    // Cut where a character as people see it ends (a letter and its vowel sign), within
    // the characters kept: a kept end began with a Hindi vowel sign cut from its letter
    // (a probe). Where none ends there (a letter under hundreds of marks), at the code
    // point.
    let at_char = |n: usize| {
        piece
            .char_indices()
            .nth(n)
            .map_or(piece.len(), |(at, _)| at)
    };
    let starts: Vec<usize> = piece.grapheme_indices(true).map(|(at, _)| at).collect();
    if keep_start {
        let cut = at_char(CLIPPED_KEEPS);
        let cut = match starts.iter().rev().find(|&&at| at <= cut) {
            Some(&at) if at > 0 => at,
            _ => cut,
        };
        snippet.push_str(&piece[..cut]);
    }
    snippet.push('…');
    if keep_end || !keep_start {
        let cut = at_char(chars - CLIPPED_KEEPS);
        let cut = starts.iter().copied().find(|&at| at >= cut).unwrap_or(cut);
        snippet.push_str(&piece[cut..]);
    }
}

/// Whether `text` has a whitespace-separated word over [`LONGEST_WORD`] characters
/// (bytes counted first, as a cheap bound): its snippet is made by [`plain_snippet`],
/// which clips such words (FTS5's snippet keeps every word whole).
fn has_long_word(text: &str) -> bool {
    text.split_whitespace()
        .any(|word| word.len() > LONGEST_WORD && word.chars().count() > LONGEST_WORD)
}

/// The byte ranges of the whitespace-separated tokens of `text`.
fn token_ranges(text: &str) -> impl Iterator<Item = std::ops::Range<usize>> + '_ {
    text.split_whitespace().map(move |token| {
        let start = token.as_ptr() as usize - text.as_ptr() as usize;
        start..start + token.len()
    })
}

/// A phrase of a query, as [`plain_snippet`] looks for it: its folded words, and
/// whether its last word is a prefix.
type Phrase = (Vec<String>, bool);

/// The phrases of an FTS5 query: each whitespace-separated word of it is a phrase of
/// its words, as `literal_fts_query` makes them (`e-mail` is the phrase `e mail`),
/// without a column filter, the operators, the parentheses of a group or of `NEAR`,
/// or `NEAR`'s distance (`NEAR(a b, 5)` holds the phrases `a` and `b`).
fn query_phrases(query: &str) -> Vec<Phrase> {
    let mut phrases = Vec::new();
    let mut after_comma = false;
    for chunk in query.split_whitespace() {
        let chunk = chunk.rsplit_once(':').map_or(chunk, |(_, after)| after);
        let chunk = chunk.strip_prefix("NEAR(").unwrap_or(chunk);
        let chunk = chunk.trim_start_matches(['(', '^']);
        let bare = chunk.trim_end_matches([')', ',']);
        let distance = after_comma && !bare.is_empty() && bare.bytes().all(|b| b.is_ascii_digit());
        after_comma = chunk.ends_with(',');
        if distance || matches!(bare, "AND" | "OR" | "NOT") {
            continue;
        }
        // A `*` apart from its phrase (`meet *`, `"meet" *`) makes it a prefix, as FTS5
        // reads it (its hits went unmarked: a probe).
        if bare == "*" {
            if let Some((_, prefix)) = phrases.last_mut() {
                *prefix = true;
            }
            continue;
        }
        let words: Vec<String> = folded_words(bare).map(|(_, word)| word).collect();
        if !words.is_empty() {
            phrases.push((words, bare.ends_with('*')));
        }
    }
    phrases
}

/// Where the phrases are in `text`, as FTS5 marks them: `e-mail` searched for is
/// `[e-mail]` (and `[e mail]`), `e mail` is `[e]-[mail]`, `mail` alone `e-[mail]`, `ca*`
/// in `café-au-lait` is `[café]-au-lait`. Each with the index of the phrase it is.
fn phrase_marks(text: &str, phrases: &[Phrase]) -> Vec<(std::ops::Range<usize>, usize)> {
    let words: Vec<_> = folded_words(text).collect();
    let mut marks = Vec::new();
    let mut at = 0;
    while at < words.len() {
        let found = phrases.iter().enumerate().find(|(_, (phrase, prefix))| {
            words.len() - at >= phrase.len()
                && words[at..at + phrase.len()]
                    .iter()
                    .zip(phrase.iter())
                    .enumerate()
                    .all(|(k, ((_, word), wanted))| {
                        if *prefix && k + 1 == phrase.len() {
                            word.starts_with(wanted.as_str())
                        } else {
                            word == wanted
                        }
                    })
        });
        match found {
            Some((index, (phrase, _))) => {
                marks.push((words[at].0.start..words[at + phrase.len() - 1].0.end, index));
                at += phrase.len();
            }
            None => at += 1,
        }
    }
    marks
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The index holds text in NFC of this Unicode version, and removes a message's
    /// words by giving that form again: NFC of another version may differ for a
    /// character this one lacks (a mark assigned later reorders), and FTS5 would keep
    /// words it was not given. A new version of `unicode-normalization` (pinned
    /// exactly in the workspace's Cargo.toml) goes with a migration that reindexes every
    /// message (as migration 17's hook, `rows::index_every_message`), and then this.
    #[test]
    fn the_index_s_unicode_version_is_the_one_it_was_built_with() {
        assert_eq!(unicode_normalization::UNICODE_VERSION, (18, 0, 0));
    }
    use crate::store::Store;
    use crate::store::query::sample;

    proptest::proptest! {
        /// Whatever the text and query (long runs of one letter, letters of several
        /// bytes, marks inside long words), a plain snippet is made without a panic, and
        /// a word of it without marks is at most [`LONGEST_WORD`] characters.
        #[test]
        fn plain_snippets_clip_every_word(
            text in "([a-cé€😀\u{301}]{0,60}[ -]?){0,30}",
            query in "[a-cé€😀]{1,3}\\*?( [a-c]{1,2})?",
        ) {
            let snippet = plain_snippet(&text, &query_phrases(&query), ("[", "]"));
            for word in snippet.split_whitespace().filter(|w| !w.contains('[')) {
                proptest::prop_assert!(
                    word.trim_matches('…').chars().count() <= LONGEST_WORD,
                    "{word:?} in {snippet:?}"
                );
            }
        }
    }

    /// A snippet's long words are clipped, keeping the ends by a match: a word of
    /// 10,000 letters before the match held it out of the table's cell (a black-box
    /// probe); in a short text too, whose snippet FTS5 would make with the word whole.
    #[test]
    fn long_words_in_snippets_are_clipped() {
        let mut store = Store::open_in_memory().unwrap();
        let long = format!("alpha {} beta", "x".repeat(10_000));
        let link = "see https://example.com/a/very/long/path/to/the/needle-page/index.html ok";
        let between = format!(
            "{}-pin-{}-pin-{} done",
            "é".repeat(40),
            "y".repeat(40),
            "z".repeat(40)
        );
        for (id, text) in [
            ("long", long.as_str()),
            ("link", link),
            ("between", &between),
        ] {
            let body = serde_json::json!({"id": format!("e-{id}"), "type": "message.created",
                "payload": {"id": id, "message": text}});
            store.apply(body.to_string().as_bytes(), 1).unwrap();
        }
        let snippet = |query: &str| {
            let hits = search(store.conn(), query, false, None, 10, Some(("[", "]"))).unwrap();
            assert_eq!(hits.len(), 1, "{query}");
            hits[0].snippet.clone()
        };
        let x12 = "x".repeat(12);
        assert_eq!(snippet("beta"), format!("alpha {x12}…{x12} [beta]"));
        // Cut between letters with their marks, never between a letter and its mark.
        let mut hindi = String::new();
        push_clipped(&mut hindi, &"कि".repeat(30), true, true);
        assert_eq!(hindi, format!("{}…{}", "कि".repeat(6), "कि".repeat(6)));
        let mut odd = String::new();
        push_clipped(&mut odd, &format!("x{}", "कि".repeat(30)), true, true);
        assert_eq!(odd, format!("x{}…{}", "कि".repeat(5), "कि".repeat(6)));
        // A prefix's match inside a long word keeps its start.
        let hits = search(store.conn(), "xxx*", true, None, 10, Some(("[", "]"))).unwrap();
        assert_eq!(hits.len(), 1);
        assert_eq!(hits[0].snippet, format!("alpha [{x12}…] beta"));
        assert_eq!(snippet("alpha"), format!("[alpha] {x12}…{x12} beta"));
        assert_eq!(snippet("ok"), "see https://exam…e/index.html [ok]");
        assert_eq!(
            snippet("needle"),
            "see …path/to/the/[needle]-page/index.html ok"
        );
        assert_eq!(
            snippet("pin"),
            format!(
                "…{}-[pin]-{}…{}-[pin]-{}… done",
                "é".repeat(11),
                "y".repeat(11),
                "y".repeat(11),
                "z".repeat(11)
            )
        );
    }

    /// Snippets are made for the hits returned, by FTS5 for ordinary texts; a long
    /// text with many matches (FTS5's snippet grows with their square) gets a plain
    /// one at once; without markers, none is made.
    #[test]
    fn snippets_of_long_texts_are_made_in_one_pass() {
        let mut store = Store::open_in_memory().unwrap();
        let long = format!(
            "{}the needle is here {}",
            "q r ".repeat(20_000),
            "q r ".repeat(10)
        );
        for (id, text) in [("short", "a q in a haystack"), ("long", long.as_str())] {
            let body = serde_json::json!({"id": format!("e-{id}"), "type": "message.created",
                "payload": {"id": id, "message": text}});
            store.apply(body.to_string().as_bytes(), 1).unwrap();
        }
        let started = std::time::Instant::now();
        let hits = search(store.conn(), "needle", false, None, 10, Some(("[", "]"))).unwrap();
        assert_eq!(hits.len(), 1);
        assert_eq!(hits[0].snippet, "… r q r q r the [needle] is here q r q …");
        let hits = search(store.conn(), "q", false, None, 10, Some(("[", "]"))).unwrap();
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
        let snippets: Vec<(&str, &str)> = hits
            .iter()
            .map(|h| (h.message["id"].as_str().unwrap(), h.snippet.as_str()))
            .collect();
        assert!(
            snippets.contains(&("short", "a [q] in a haystack")),
            "{snippets:?}"
        );
        assert!(
            snippets.contains(&("long", "[q] r [q] r [q] r [q] r [q] r [q] r …")),
            "{snippets:?}"
        );
        let hits = search(store.conn(), "q", false, None, 10, None).unwrap();
        assert!(hits.iter().all(|h| h.snippet.is_empty()));
        // A prefix query: the first word it begins.
        let hits = search(store.conn(), "need*", true, None, 10, Some(("[", "]"))).unwrap();
        assert_eq!(hits[0].snippet, "… r q r q r the [needle] is here q r q …");
    }

    /// Best matches first, ties in arrival order; `--conversation` keeps its own
    /// messages only; a message deleted is not found.
    #[test]
    fn search_ranks_ties_by_arrival_and_filters_by_conversation() {
        let mut store = Store::open_in_memory().unwrap();
        for (id, conversation, text) in [
            ("m-b", "c1", "lunch at noon today"),
            ("m-a", "c2", "lunch at noon today"),
            ("m-c", "c1", "lunch lunch lunch today"),
            ("m-d", "c2", "nothing to see"),
        ] {
            let body = serde_json::json!({"id": format!("e-{id}"), "type": "message.created",
                "payload": {"id": id, "conversation_id": conversation, "message": text}});
            store.apply(body.to_string().as_bytes(), 1).unwrap();
        }
        let ids = |store: &Store, conversation: Option<&str>, limit: usize| -> Vec<String> {
            search(store.conn(), "lunch", false, conversation, limit, None)
                .unwrap()
                .into_iter()
                .map(|hit| hit.message["id"].as_str().unwrap().to_owned())
                .collect()
        };
        assert_eq!(ids(&store, None, 10), ["m-c", "m-b", "m-a"]);
        assert_eq!(ids(&store, None, 2), ["m-c", "m-b"]);
        assert_eq!(ids(&store, Some("c2"), 10), ["m-a"]);
        assert_eq!(ids(&store, Some("c1"), 10), ["m-c", "m-b"]);
        assert!(ids(&store, Some("c-none"), 10).is_empty());
        let body = serde_json::json!({"id": "e-del", "type": "message.deleted",
            "payload": {"id": "m-c"}});
        store.apply(body.to_string().as_bytes(), 1).unwrap();
        assert_eq!(ids(&store, None, 10), ["m-b", "m-a"]);
    }

    /// FTS5's snippet stops at a NUL in the text (`[alpha]` alone, or words run
    /// together): such a text gets the plain snippet, every word kept.
    #[test]
    fn a_text_holding_a_nul_keeps_its_words_in_the_snippet() {
        let mut store = Store::open_in_memory().unwrap();
        let body = serde_json::json!({"id": "e-nul", "type": "message.created",
            "payload": {"id": "m", "message": "alpha\u{0} beta gamma delta"}});
        store.apply(body.to_string().as_bytes(), 1).unwrap();
        for (word, want) in [
            ("alpha", "[alpha]\u{0} beta gamma delta"),
            ("gamma", "alpha\u{0} beta [gamma] delta"),
        ] {
            let hits = search(store.conn(), word, false, None, 10, Some(("[", "]"))).unwrap();
            assert_eq!(hits.len(), 1, "{word}");
            assert_eq!(hits[0].snippet, want, "{word}");
        }
    }

    /// The plain snippet finds the words FTS5 matched: any case, inside punctuation,
    /// never a column filter's name.
    #[test]
    fn a_plain_snippet_finds_the_words_fts5_matches() {
        let text = "message one two ÅNGSTRÖM e-mail don't end";
        for (text, query, snippet) in [
            (
                text,
                "\"ångström\"",
                "message one two [ÅNGSTRÖM] e-mail don't end",
            ),
            (
                text,
                "message:mail",
                "message one two ÅNGSTRÖM e-[mail] don't end",
            ),
            (
                text,
                "{message}:don AND end",
                "message one two ÅNGSTRÖM e-mail [don]'t [end]",
            ),
            (
                text,
                "NEAR(zzz end)",
                "message one two ÅNGSTRÖM e-mail don't [end]",
            ),
            // Accents and case are folded, as FTS5 folds them.
            (
                text,
                "angstrom",
                "message one two [ÅNGSTRÖM] e-mail don't end",
            ),
            ("un café-au-lait", "CAFE", "un [café]-au-lait"),
            // The words of a query's phrase are marked together; a decomposed accent
            // is part of its word.
            (
                text,
                "e-mail",
                "message one two ÅNGSTRÖM [e-mail] don't end",
            ),
            (
                text,
                "e mail",
                "message one two ÅNGSTRÖM [e]-[mail] don't end",
            ),
            ("un cafe\u{301} noir", "cafe", "un [cafe\u{301}] noir"),
            // A phrase spans tokens, as FTS5 matches it (a long text's snippet for a
            // hyphenated word marked nothing).
            ("send an e mail now", "\"e-mail\"", "send an [e] [mail] now"),
            (
                "hotel hotel hotel",
                "\"hotel-hotel\"",
                "[hotel] [hotel] hotel",
            ),
            // A NUL splits words (it is not marked).
            ("before\0after word", "before", "[before]\0after word"),
            // A prefix marks the words it begins, of a phrase its last.
            ("w2 w123 w1", "w1*", "w2 [w123] [w1]"),
            ("x Café-au lait", "\"caf\"*", "x [Café]-au lait"),
            ("xy ab", "(x* OR ab)", "[xy] [ab]"),
            // A `*` apart from its phrase is its prefix mark still.
            ("meeting at lunch", "meet *", "[meeting] at lunch"),
            ("meeting at lunch", "\"meet\" *", "[meeting] at lunch"),
            // Every word of the query in the snippet is marked.
            (
                "the hotel was nice, hot water and a house",
                "ho*",
                "the [hotel] was nice, [hot] water and a [house]",
            ),
            (
                "Café au lait at the café",
                "\"caf\"*",
                "[Café] au lait at the [café]",
            ),
            // `NEAR`'s words, not its distance.
            (
                "hot water 5 cups",
                "NEAR(ho* wat*, 5)",
                "[hot] [water] 5 cups",
            ),
            ("hot water 5 cups", "NEAR(hot 5)", "[hot] water [5] cups"),
            // The snippet goes where most of the query's phrases are, not to the
            // first word alone.
            (
                "hotel a b c d e f g h i j k l m n o p q r s t u v w x plaza hotel end",
                "NEAR(plaza hotel, 1)",
                "… s t u v w x [plaza] [hotel] end",
            ),
        ] {
            assert_eq!(
                plain_snippet(text, &query_phrases(query), ("[", "]")),
                snippet,
                "{query}"
            );
        }
    }

    /// Texts of many scripts, for the tokenizer's tests.
    const SCRIPTS: &[&str] = &[
        "Café CAFÉ cafe\u{301} naïve Ångström ÉCOLE œuvre straße Æsir ø",
        "Việt Nam tiếng Việt e\u{307}x a\u{308}b \u{301}abc ŉ ǅ ﬁne",
        "άλφα Ελλάδα ΣΊΣΥΦΟΣ λόγος µ ſ ẛ ϐϑϕϖϰϱϵ ǡǣǯǽǿ",
        "नमस्ते दोस्त क़ख ৰঙা தமிழ்",
        "ภาษาไทย สวัสดี",
        "كَتَبَ שָׁלוֹם",
        // Decomposed (NFD): Bengali's and Tamil's two-part vowel signs, Greek and
        // Cyrillic accents typed apart, Hangul jamo.
        "\u{09b8}\u{09c7}\u{09be}\u{09a8}\u{09be}\u{09b0} \u{0b95}\u{0bc6}\u{0bbe}\u{b9f}\u{bc1}",
        "\u{3b1}\u{301}\u{3bb}\u{3c6}\u{3b1} \u{418}\u{306}\u{43e}\u{448}\u{43a}\u{430}\u{440} \u{1112}\u{1161}\u{11ab}",
        "apple\u{f8ff}banana \u{e000}use\u{e123}d x\u{20dd}y",
        "東京タワー 😀 ok👍yes 12,5 ½ Ⅻ ①",
        // Characters newer than FTS5's tables, which migration 17 makes separators.
        "lol🤣 ok👍🏽yes thanks🥰 ₿100 hmm🤔 a\u{2066}b\u{2069}c",
        // Variation selectors and a keycap: the emoji's, not the next word's.
        "❤\u{fe0f}love wait⏳\u{fe0f}now step 1\u{fe0f}\u{20e3}done tick✔\u{fe0e}off",
        "a\u{0}b tab\tnew\nline",
        "hello \u{301} world",
    ];

    /// The words `folded_words` sees are the ones the index holds: a table of the
    /// search index's tokenizer, asked with `fts5vocab`, over texts of many scripts.
    /// (The plain snippet marks what it finds this way; it marked nothing, or part of
    /// a word, where the two differed.)
    #[test]
    fn folded_words_are_the_index_s_words() {
        let store = Store::open_in_memory().unwrap();
        let conn = store.conn();
        let tokenizer: String = conn
            .query_row(
                "SELECT sql FROM sqlite_schema WHERE name = 'messages_fts'",
                [],
                |row| row.get(0),
            )
            .unwrap();
        let tokenize = &tokenizer[tokenizer.find("tokenize").unwrap()..];
        let tokenize = tokenize.trim_end().trim_end_matches(')');
        conn.execute_batch(&format!(
            "CREATE VIRTUAL TABLE temp.words USING fts5 (x, {tokenize});
             CREATE VIRTUAL TABLE temp.vocab USING fts5vocab (temp, words, instance);"
        ))
        .unwrap();
        for text in SCRIPTS {
            conn.execute("DELETE FROM temp.words", []).unwrap();
            conn.execute(
                "INSERT INTO temp.words (rowid, x) VALUES (1, ?1)",
                [indexed_form(text)],
            )
            .unwrap();
            let indexed: Vec<String> = conn
                .prepare("SELECT term FROM temp.vocab ORDER BY offset")
                .unwrap()
                .query_map([], |row| row.get::<_, Option<String>>(0))
                .unwrap()
                // An empty word's term is NULL.
                .map(|term| term.unwrap().unwrap_or_default())
                .collect();
            let ours: Vec<String> = folded_words(text).map(|(_, word)| word).collect();
            assert_eq!(ours, indexed, "{text}");
        }
    }

    /// Words keep their marks: a Hindi word is found whole, not by a piece of it, and
    /// its snippet marks all of it; a private-use character splits words (it joined
    /// them; a probe).
    #[test]
    fn words_keep_their_marks_and_private_use_characters_split_them() {
        let mut store = Store::open_in_memory().unwrap();
        for (n, text) in [
            "नमस्ते दोस्त",
            "apple\u{f8ff}banana",
            "un cafe\u{301} noir",
            "❤\u{fe0f}love you",
            "alpha <\u{338} beta gamma",
            "\u{09b8}\u{09c7}\u{09be}\u{09a8}\u{09be}\u{09b0} \u{3b1}\u{301}\u{3bb}\u{3c6}\u{3b1}",
        ]
        .iter()
        .enumerate()
        {
            let body = serde_json::json!({"id": format!("e{n}"), "type": "message.created",
                "payload": {"id": format!("m{n}"), "message": text}});
            store.apply(body.to_string().as_bytes(), 1).unwrap();
        }
        let found = |query: &str| -> Vec<String> {
            search(store.conn(), query, false, None, 10, Some(("[", "]")))
                .unwrap()
                .into_iter()
                .map(|hit| hit.snippet)
                .collect()
        };
        assert_eq!(found("नमस्ते"), ["[नमस्ते] दोस्त"]);
        assert!(found("नमस").is_empty());
        assert_eq!(found("banana"), ["apple\u{f8ff}[banana]"]);
        assert_eq!(found("love"), ["❤\u{fe0f}[love] you"]);
        // A text that NFC composes otherwise: its snippet marks the word matched.
        assert_eq!(found("beta"), ["alpha <\u{338} [beta] gamma"]);
        assert_eq!(found("CAFÉ"), ["un [cafe\u{301}] noir"]);
        // A word typed composed finds it typed decomposed, and back (Bengali's সোনার
        // with its vowel sign in two parts; Greek's ά as α and an accent).
        let nfd = "[\u{09b8}\u{09c7}\u{09be}\u{09a8}\u{09be}\u{09b0}] \u{3b1}\u{301}\u{3bb}\u{3c6}\u{3b1}";
        assert_eq!(found("\u{09b8}\u{09cb}\u{09a8}\u{09be}\u{09b0}"), [nfd]);
        assert_eq!(
            found("\u{09b8}\u{09c7}\u{09be}\u{09a8}\u{09be}\u{09b0}"),
            [nfd]
        );
        let greek = "\u{09b8}\u{09c7}\u{09be}\u{09a8}\u{09be}\u{09b0} [\u{3b1}\u{301}\u{3bb}\u{3c6}\u{3b1}]";
        assert_eq!(found("\u{3ac}\u{3bb}\u{3c6}\u{3b1}"), [greek]);
        assert!(!has_words("\u{301} \u{f8ff} 😀"));
        // A lone accent in a query asks for nothing (it asked for an empty word).
        assert_eq!(found("नमस्ते \u{301}"), ["[नमस्ते] दोस्त"]);
        assert_eq!(literal_fts_query("a \u{301} 😀 b"), r#""a" "b""#);
        assert!(has_words("दोस्त"));
    }

    /// FTS5's snippet takes time with the square of (matches × phrases): a text
    /// holding one word 1,000 times, searched with 40 phrases that all match it, took
    /// 19 s a snippet. Past the budget the plain snippet is made.
    #[test]
    fn fts5_snippets_are_made_within_a_budget() {
        let text = "hotel ".repeat(1000);
        assert!(fts_snippet_is_affordable(
            &text,
            &query_phrases(r#""hotel""#)
        ));
        assert!(!fts_snippet_is_affordable(
            &text,
            &query_phrases(r#""hotel" "hotel-hotel""#)
        ));
        assert!(!fts_snippet_is_affordable(
            &text,
            &query_phrases("hot* lobby")
        ));
        assert!(fts_snippet_is_affordable(
            "a hotel lobby",
            &query_phrases(r#""hotel" "lobby" "a""#)
        ));
        assert!(fts_snippet_is_affordable(
            &text,
            &query_phrases(r#""lobby" "hotels""#)
        ));
        // What the plain snippet makes of such a query.
        let phrases: String = (1..=40)
            .map(|i| format!("\"{}\" ", vec!["hotel"; i].join("-")))
            .collect();
        let snippet = plain_snippet(&text, &query_phrases(&phrases), ("[", "]"));
        assert!(snippet.starts_with("[hotel] [hotel]"), "{snippet}");
    }

    #[test]
    fn fts_text_is_quoted_literally() {
        assert_eq!(literal_fts_query("a  b"), r#""a" "b""#);
        assert_eq!(literal_fts_query("Hotel b hotel HOTEL b"), r#""Hotel" "b""#);
        // Beyond ASCII, cases are the index's to fold (`Ꭰ` and `ꭰ` are two words to it).
        assert_eq!(literal_fts_query("Ꭰ ꭰ"), r#""Ꭰ" "ꭰ""#);
        // A token of no word (`--`) is left out.
        assert_eq!(literal_fts_query(r#"x" OR 1=1 --"#), r#""x""" "OR" "1=1""#);
        let store = sample();
        for hostile in [
            r#"""#,
            "NEAR(",
            "meet*",
            "'); DROP TABLE messages; --",
            "AND OR NOT",
        ] {
            search(store.conn(), hostile, false, None, 10, Some(("[", "]"))).unwrap();
        }
        let hits = search(store.conn(), "MEETINGS", false, None, 10, Some(("[", "]"))).unwrap();
        assert_eq!(hits.len(), 1);
        let repeated = "meetings ".repeat(300);
        let again = search(store.conn(), &repeated, false, None, 10, Some(("[", "]"))).unwrap();
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].snippet, hits[0].snippet);
        assert!(
            hits[0].snippet.contains("[meetings]"),
            "{}",
            hits[0].snippet
        );
        let err = search(store.conn(), "NEAR(", true, None, 10, Some(("[", "]"))).unwrap_err();
        assert!(matches!(err, SearchError::InvalidQuery(_)), "{err}");
        let hits = search(store.conn(), "meet*", true, None, 10, Some(("", ""))).unwrap();
        assert_eq!(hits.len(), 1);
    }
}
