//! How wide each column of a fitted table is drawn: each column's narrowest, widest
//! and in-between widths, whether a table fits at all, and how the room is shared.

use super::{is_id_column, is_time_column, name_delimiter};
use crate::cli::output::text::{shown_in_one_line, shown_width};

/// A table's cells as text, a row each, and each column's narrowest and widest
/// ([`column_widths`]), worked out once for the fit and the layout.
pub(super) struct Cells {
    pub(super) rows: Vec<Vec<String>>,
    pub(super) narrowest: Vec<usize>,
    /// Each column as wide as its name or its widest cell.
    pub(super) widest: Vec<usize>,
    /// Whether a cell of each column was cut ([`super::table_cells`]).
    pub(super) cut: Vec<bool>,
    /// Each column's widest cell among those shown whole (not cut).
    pub(super) widest_whole: Vec<usize>,
    /// Whether each cell is shown whole, a row each.
    whole: Vec<Vec<bool>>,
}

impl Cells {
    /// Cells shown whole.
    pub(super) fn new(columns: &[String], rows: Vec<Vec<String>>) -> Cells {
        let whole = rows.iter().map(|row| vec![true; row.len()]).collect();
        Cells::cut_where(columns, rows, whole)
    }

    /// Cells each shown whole or cut, as `whole` says.
    pub(super) fn cut_where(
        columns: &[String],
        rows: Vec<Vec<String>>,
        whole: Vec<Vec<bool>>,
    ) -> Cells {
        let (narrowest, widest) = column_widths(columns, &rows);
        let mut cut = vec![false; columns.len()];
        let mut widest_whole = vec![0; columns.len()];
        for (row, whole) in rows.iter().zip(&whole) {
            for (index, (text, &whole)) in row.iter().zip(whole).enumerate() {
                if whole {
                    widest_whole[index] = widest_whole[index].max(shown_width(text));
                } else {
                    cut[index] = true;
                }
            }
        }
        Cells {
            rows,
            narrowest,
            widest,
            cut,
            widest_whole,
            whole,
        }
    }

    /// The cells of row `index` alone.
    pub(super) fn row(&self, columns: &[String], index: usize) -> Cells {
        Cells::cut_where(
            columns,
            vec![self.rows[index].clone()],
            vec![self.whole[index].clone()],
        )
    }

    /// The cells of the rows `keep` keeps (by index).
    pub(super) fn only(&self, columns: &[String], keep: impl Fn(usize) -> bool) -> Cells {
        let (rows, whole) = self
            .rows
            .iter()
            .zip(&self.whole)
            .enumerate()
            .filter(|&(index, _)| keep(index))
            .map(|(_, (row, whole))| (row.clone(), whole.clone()))
            .unzip();
        Cells::cut_where(columns, rows, whole)
    }
}

/// The narrowest each column of a table of `cells` is drawn, before a list is shown a
/// row at a time instead ([`super::one_by_one`]): ids whole (their header may wrap),
/// times as wide as their date (`2024-05-01`), others 6 characters (narrower, words
/// come out a few letters a line), or as wide as the longest part of a name of
/// several, so that it wraps only between its parts (at 70 columns,
/// `contact.username` came out as `contac` / `t.user` / `name`: a probe); none wider
/// than all it holds. And the widest: as its name or its widest cell.
fn column_widths(columns: &[String], cells: &[Vec<String>]) -> (Vec<usize>, Vec<usize>) {
    const OTHERS: usize = 6;
    const TIMES: usize = 10;
    columns
        .iter()
        .enumerate()
        .map(|(index, name)| {
            let column = || cells.iter().filter_map(move |row| row.get(index));
            let cell = column().map(|text| shown_width(text)).max().unwrap_or(0);
            let name = shown_in_one_line(name);
            let widest = cell.max(shown_width(&name));
            let narrowest = if is_id_column(&name) {
                cell.max(widest.min(OTHERS))
            } else if is_time_column(&name) || column().any(|text| is_shown_time(text)) {
                // Also a column of values some of which are times (`stats`' `value`):
                // a date broke in two there (`2026-11` / `-30 04:`).
                widest.min(TIMES)
            } else {
                // (A name of one part may still break: once, in the header, where
                // the alternative may cost a line in every row.)
                let parts: Vec<&str> = name.split_inclusive(['_', '.', '-', ' ']).collect();
                let longest_part = match parts[..] {
                    [_, _, ..] => parts.iter().map(|part| shown_width(part)).max(),
                    _ => None,
                };
                widest.min(OTHERS.max(longest_part.unwrap_or(0)))
            };
            (narrowest, widest)
        })
        .unzip()
}

/// Whether `text` is a time as tables show it (`2024-05-01 12:30:00`).
fn is_shown_time(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.len() == 19
        && bytes.iter().enumerate().all(|(at, &b)| match at {
            4 | 7 => b == b'-',
            10 => b == b' ',
            13 | 16 => b == b':',
            _ => b.is_ascii_digit(),
        })
}

/// Whether a table of `cells` fits in `width` with every column at least as wide as
/// [`column_widths`] says.
pub(super) fn fits(columns: &[String], cells: &Cells, width: u16) -> bool {
    let needed: usize = cells.narrowest.iter().sum();
    // Each column's padding and border, and the last border.
    let drawn = needed + 3 * columns.len() + 1;
    drawn <= usize::from(width)
}

/// Each column's width (without padding) in a table `width` wide: every column as wide
/// as it gets ([`Cells::widest`]) where they all fit. Else each column starts at its
/// narrowest ([`Cells::narrowest`]: ids whole, dates whole), and the room goes, a few
/// columns at a time, to the column where it saves the most ([`Layout::cost`]: the
/// table's height and its broken words first, each word cut as two lines), then to
/// where a move from one column to another saves more, and what saves nothing is
/// given out all the same, so that the table uses its width. So short values
/// (usernames, phone numbers, sizes, event types) stay whole where the width allows, a
/// time wraps after its date only where the row is taller anyway, and a message's text
/// takes what the short columns do not need. (comfy-table shared the room equally: at
/// 80 columns a contact's username and phone number broke mid-word while its display
/// name and time had room to spare. A first version of this layout kept every word
/// whole where that fitted, and so wrapped every row's time to keep one event type
/// whole: a regression probe.)
pub(super) fn shared_widths(columns: &[String], cells: &Cells, width: u16) -> Vec<usize> {
    let room = usize::from(width).saturating_sub(3 * cells.widest.len() + 1);
    let total = |widths: &[usize]| widths.iter().sum::<usize>();
    if total(&cells.widest) <= room {
        return cells.widest.clone();
    }
    let low = &cells.narrowest;
    let layout = Layout::new(columns, cells, low);
    let mut widths = low.clone();
    let spare = room.saturating_sub(total(low));
    layout.widen(&mut widths, spare);
    // The room no step saved anything with is given out where it costs nothing, and
    // then moved where it saves more, a few times over.
    for _ in 0..SETTLINGS {
        layout.give_out(&mut widths, room);
        if !layout.trade(&mut widths, room) {
            break;
        }
    }
    widths
}

/// The lines each cell of a table takes at each width its column may have, for the
/// header and the first [`LAYOUT_ROWS`] rows, and what a choice of widths costs.
struct Layout<'a> {
    /// `wrapped[column][width - low[column]][row]`; row 0 is the header.
    wrapped: Vec<Vec<Vec<Wrapped>>>,
    low: &'a [usize],
    high: &'a [usize],
    rows: usize,
}

impl<'a> Layout<'a> {
    fn new(columns: &[String], cells: &'a Cells, low: &'a [usize]) -> Layout<'a> {
        let names: Vec<(String, char)> = columns
            .iter()
            .map(|name| {
                let name = shown_in_one_line(name);
                let delimiter = name_delimiter(&name);
                (name, delimiter)
            })
            .collect();
        let rows: Vec<&[String]> = cells
            .rows
            .iter()
            .take(LAYOUT_ROWS)
            .map(Vec::as_slice)
            .collect();
        let high = &cells.widest;
        let wrapped = (0..columns.len())
            .map(|column| {
                (low[column]..=high[column])
                    .map(|width| {
                        let (name, delimiter) = &names[column];
                        std::iter::once(wrapped(name, width, *delimiter))
                            .chain(rows.iter().map(|row| {
                                row.get(column)
                                    .map_or(Wrapped::default(), |text| wrapped(text, width, ' '))
                            }))
                            .collect()
                    })
                    .collect()
            })
            .collect();
        Layout {
            wrapped,
            low,
            high,
            rows: rows.len() + 1,
        }
    }

    /// What a table of `widths` costs, in lines: the table's height and the cuts
    /// inside words (each as two lines of height, at most two a cell: a long word that
    /// is cut anyway took the room from the text beside it; a cut in a column's name
    /// weighs as a line on each row, up to four) first; between equals, the lower
    /// table; then the fewer lines of its cells.
    fn cost(&self, widths: &[usize]) -> usize {
        const FIRST: usize = 1 << 40;
        const SECOND: usize = 1 << 20;
        // A column's name broken mid-part (`usernam` / `e`) is read with every row
        // under it: it weighs as a line on each of them, up to four.
        let name_broken = (self.rows - 1).clamp(2, 4);
        let mut cost = 0;
        for row in 0..self.rows {
            let (mut height, mut broken, mut lines) = (0, 0, 0);
            for (column, &width) in widths.iter().enumerate() {
                let cell = self.wrapped[column][width - self.low[column]][row];
                height = height.max(cell.lines);
                broken += cell.broken.min(2);
                lines += cell.lines;
            }
            let weight = if row == 0 { name_broken } else { 2 };
            cost += (height + weight * broken) * FIRST + height * SECOND + lines;
        }
        cost
    }

    /// Gives `spare` columns out, a step at a time, where a step saves most per
    /// column, while any step saves anything.
    fn widen(&self, widths: &mut [usize], mut spare: usize) {
        let mut now = self.cost(widths);
        while spare > 0 {
            let mut best: Option<(f64, usize, usize)> = None;
            for column in 0..widths.len() {
                let most = spare
                    .min(self.high[column] - widths[column])
                    .min(LONGEST_STEP);
                for more in 1..=most {
                    widths[column] += more;
                    let then = self.cost(widths);
                    widths[column] -= more;
                    if then < now {
                        let saved = (now - then) as f64 / more as f64;
                        if best.is_none_or(|(most_saved, _, _)| saved > most_saved) {
                            best = Some((saved, column, more));
                        }
                        break;
                    }
                }
            }
            let Some((_, column, more)) = best else {
                return;
            };
            widths[column] += more;
            spare -= more;
            now = self.cost(widths);
        }
    }

    /// Moves columns from one column, or from what is left of `room`, to another
    /// while that saves anything: a step that was best alone can leave too little for
    /// two that are better together.
    fn trade(&self, widths: &mut [usize], room: usize) -> bool {
        let mut now = self.cost(widths);
        let mut traded = false;
        // `from == widths.len()` stands for the room no column has.
        let spare = |widths: &[usize]| room.saturating_sub(widths.iter().sum());
        for _ in 0..MOVES {
            let mut moved = false;
            'search: for from in 0..=widths.len() {
                for to in (0..widths.len()).filter(|&to| to != from) {
                    for step in 1..=LONGEST_STEP {
                        let has = if from == widths.len() {
                            spare(widths)
                        } else {
                            widths[from] - self.low[from]
                        };
                        if has < step || widths[to] + step > self.high[to] {
                            break;
                        }
                        if from < widths.len() {
                            widths[from] -= step;
                        }
                        widths[to] += step;
                        let then = self.cost(widths);
                        if then < now {
                            now = then;
                            moved = true;
                            break 'search;
                        }
                        if from < widths.len() {
                            widths[from] += step;
                        }
                        widths[to] -= step;
                    }
                }
            }
            if !moved {
                break;
            }
            traded = true;
        }
        traded
    }

    /// Gives what is left of `room` to the columns that could still be wider, the one
    /// wanting most first, where it costs nothing: a table uses the width it is given
    /// (it was 103 wide at 110, 46 at 50, where no single step saved a line).
    fn give_out(&self, widths: &mut [usize], room: usize) {
        let mut now = self.cost(widths);
        let mut left = room.saturating_sub(widths.iter().sum());
        while left > 0 {
            let mut wanting: Vec<usize> = (0..widths.len())
                .filter(|&c| widths[c] < self.high[c])
                .collect();
            wanting.sort_by_key(|&c| std::cmp::Reverse(self.high[c] - widths[c]));
            let Some(&column) = wanting.iter().find(|&&c| {
                widths[c] += 1;
                let then = self.cost(widths);
                widths[c] -= 1;
                then <= now
            }) else {
                break;
            };
            widths[column] += 1;
            now = self.cost(widths);
            left -= 1;
        }
    }
}

/// The most columns [`shared_widths`] gives a column, or moves, in one step.
const LONGEST_STEP: usize = 24;

/// How many times [`shared_widths`] moves columns from one column to another, at most,
/// each time it settles the layout, and how many times it settles it.
const MOVES: usize = 32;
const SETTLINGS: usize = 3;

/// How many of a list's rows [`shared_widths`] lays its columns out for.
const LAYOUT_ROWS: usize = 100;

/// How `text` comes out in a column `width` wide ([`wrap`]).
#[derive(Clone, Copy, Default)]
struct Wrapped {
    lines: usize,
    /// Cuts inside words (a word over three lines is cut twice).
    broken: usize,
}

fn wrapped(text: &str, width: usize, delimiter: char) -> Wrapped {
    let mut lines = 0;
    let broken = wrap(text, width, delimiter, |_| lines += 1);
    Wrapped {
        lines: lines.max(1),
        broken,
    }
}

/// Columns a line keeps free before comfy-table calls it full.
const MIN_FREE: usize = 2;

/// Gives `line` each line of `text` (one line) in a column `width` wide, wrapped as
/// comfy-table (7.2) wraps it, line for line: text that fits is one line, as it is;
/// else words (split at `delimiter`) fill a line while they
/// fit, a line with at most 2 columns left is full, and a word wider than the column
/// is cut by grapheme, its first part filling what is left of the line it starts on.
/// Returns how many cuts it made inside words. Each line is a slice of `text`, and the time is
/// linear in its length: comfy-table's own cutting copies the rest of a long word at
/// every line (`get` of a 200,000-character link took 17 s at 40 columns), so
/// [`super::fields`] hands it lines already wrapped. (A first model, which started
/// every long word on a line of its own, counted lines comfy-table does not draw, and
/// gave the room to the wrong column: a regression probe.)
pub(super) fn wrap<'t>(
    text: &'t str,
    width: usize,
    delimiter: char,
    mut line: impl FnMut(&'t str),
) -> usize {
    use unicode_segmentation::UnicodeSegmentation;
    let width = width.max(1);
    // A line that fits is left as it is, spaces and all.
    if shown_width(text) <= width {
        line(text);
        return 0;
    }
    let mut words = WordsAt {
        text,
        delimiter,
        at: Some(0),
    };
    let mut broken = 0;
    // The line being filled, as a range of `text`: `None` while it holds nothing (a
    // zero-width character counts as something), and its width.
    let (mut start, mut end, mut used): (Option<usize>, usize, usize) = (None, 0, 0);
    // The rest of a word cut at the end of the last line: where it starts, and its
    // width.
    let mut rest: Option<(usize, usize, usize)> = None;
    loop {
        let (from, to, length, cut) = match rest.take() {
            Some((from, to, length)) => (from, to, length, true),
            None => match words.next() {
                Some((from, to)) => (from, to, shown_width(&text[from..to]), false),
                None => break,
            },
        };
        let started = start.is_some();
        let added = length + used + usize::from(started);
        let left = width.saturating_sub(used + usize::from(started));
        if added <= width {
            used = added;
            if start.is_none() && from < to {
                start = Some(from);
            }
            end = to;
            if used > width.saturating_sub(MIN_FREE) {
                line(&text[start.unwrap_or(from)..end]);
                (start, used) = (None, 0);
            }
            continue;
        }
        if started && left <= MIN_FREE {
            rest = Some((from, to, length)).filter(|_| cut);
            if !cut {
                words.back(from);
            }
            line(&text[start.unwrap_or(from)..end]);
            (start, used) = (None, 0);
            continue;
        }
        if length > width {
            broken += 1;
            // As much of it as fits in what is left, by grapheme; on an empty line at
            // least one character, even one that does not fit.
            let (mut taken, mut split) = (0, from);
            for (at, grapheme) in text[from..to].grapheme_indices(true) {
                let grapheme_width = shown_width(grapheme);
                if taken + grapheme_width > left {
                    break;
                }
                taken += grapheme_width;
                split = from + at + grapheme.len();
            }
            // The rest's width, by subtraction where the cut is between graphemes
            // (measured again at every line, a long word took time that grew with
            // the square of its length).
            let mut rest_length = length.saturating_sub(taken);
            if !started && split == from {
                // Inside a grapheme wider than the column: measured.
                split = from + text[from..to].chars().next().map_or(0, char::len_utf8);
                rest_length = shown_width(&text[split..to]);
            }
            line(&text[start.unwrap_or(from)..split]);
            (start, used) = (None, 0);
            rest = Some((split, to, rest_length));
            continue;
        }
        line(&text[start.unwrap_or(from)..end]);
        (start, end, used) = (Some(from).filter(|_| from < to), to, length);
        if used > width.saturating_sub(MIN_FREE) {
            line(&text[from..to]);
            (start, used) = (None, 0);
        }
    }
    if let Some(start) = start {
        line(&text[start..end]);
    }
    broken
}

/// The words of `text` between `delimiter`s, as byte ranges, in order; a word can be
/// put back to be read again.
struct WordsAt<'t> {
    text: &'t str,
    delimiter: char,
    /// Where the next word starts; `None` past the last.
    at: Option<usize>,
}

impl WordsAt<'_> {
    fn next(&mut self) -> Option<(usize, usize)> {
        let from = self.at?;
        match self.text[from..].find(self.delimiter) {
            Some(offset) => {
                self.at = Some(from + offset + self.delimiter.len_utf8());
                Some((from, from + offset))
            }
            None => {
                self.at = None;
                Some((from, self.text.len()))
            }
        }
    }

    /// Makes the word that started at `from` the next one again.
    fn back(&mut self, from: usize) {
        self.at = Some(from);
    }
}

#[cfg(test)]
mod tests {
    use comfy_table::{Cell, ColumnConstraint, ContentArrangement, Table, Width};

    use super::{wrap, wrapped};

    /// The lines comfy-table draws `text` in, in a column `width` wide.
    fn drawn_lines(text: &str, width: usize, delimiter: char) -> usize {
        drawn(text, width, delimiter).lines().count()
    }

    /// `text` as comfy-table draws it in a column `width` wide.
    fn drawn(text: &str, width: usize, delimiter: char) -> String {
        let mut table = Table::new();
        table
            .load_preset(comfy_table::presets::NOTHING)
            .set_content_arrangement(ContentArrangement::Dynamic)
            .set_width(1000)
            .add_row([Cell::new(text).set_delimiter(delimiter)]);
        if let Some(column) = table.column_mut(0) {
            let padded = u16::try_from(width + 2).unwrap();
            column.set_constraint(ColumnConstraint::Absolute(Width::Fixed(padded)));
        }
        table.to_string()
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

        /// The model counts exactly the lines comfy-table draws.
        #[test]
        fn wrapping_is_counted_as_comfy_table_draws_it(
            words in proptest::collection::vec(
                "[a-z]{0,12}|[0-9-]{1,20}|[\\p{Han}]{1,6}|\u{1f468}\u{200d}\u{1f469}|e\u{301}|https://[a-z./?=]{5,40}",
                0..10,
            ),
            width in 1usize..40,
            delimiter in proptest::sample::select(vec![' ', '_', '.']),
        ) {
            let text = words.join(&delimiter.to_string());
            proptest::prop_assert_eq!(
                wrapped(&text, width, delimiter).lines,
                drawn_lines(&text, width, delimiter),
                "{:?} in {}", text, width
            );
            // And its lines, handed to comfy-table, are drawn as it draws the text.
            let mut lines = Vec::new();
            wrap(&text, width, delimiter, |line| lines.push(line));
            proptest::prop_assert_eq!(
                drawn(&lines.join("\n"), width, delimiter),
                drawn(&text, width, delimiter),
                "{:?} in {}", text, width
            );
        }
    }
}
