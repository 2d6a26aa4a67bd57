//! How wide each column of a fitted table is drawn: each column's narrowest, widest
//! and in-between widths, whether a table fits at all, and how the room is shared.

use super::{is_id_column, is_time_column, name_delimiter};
use crate::cli::output::text::{shown_in_one_line, shown_width};

/// A table's cells as text, a row each, and each column's narrowest, unbroken and
/// widest ([`column_widths`]), worked out once for the fit and the layout.
pub(super) struct Cells {
    pub(super) rows: Vec<Vec<String>>,
    pub(super) narrowest: Vec<usize>,
    /// Each column at least as wide as each part of its name (see [`column_widths`]).
    pub(super) named: Vec<usize>,
    /// Each column as wide as its longest word or name part (see [`column_widths`]).
    pub(super) unbroken: Vec<usize>,
    /// Each column as wide as its name or its widest cell.
    pub(super) widest: Vec<usize>,
    /// Whether a cell of each column was cut ([`super::table_cells`]).
    pub(super) cut: Vec<bool>,
}

impl Cells {
    pub(super) fn new(columns: &[String], rows: Vec<Vec<String>>) -> Cells {
        let Widths {
            narrowest,
            named,
            unbroken,
            widest,
        } = column_widths(columns, &rows);
        Cells {
            rows,
            narrowest,
            named,
            unbroken,
            widest,
            cut: vec![false; columns.len()],
        }
    }
}

/// Each column's widths, without padding ([`column_widths`]).
struct Widths {
    narrowest: Vec<usize>,
    named: Vec<usize>,
    unbroken: Vec<usize>,
    widest: Vec<usize>,
}

/// The narrowest each column of a table of `cells` is drawn, before a list is shown a
/// row at a time instead ([`super::one_by_one`]): ids whole (their header may wrap),
/// times as wide as their date (`2024-05-01`), others 6 characters (narrower, words
/// come out a few letters a line); none wider than all it holds. The named: as the
/// longest part of its name too (`username` of `contact_username`). The unbroken: as its
/// longest word (of at most [`LONGEST_WORD`] characters: a link is broken rather than
/// made a column of its own) or part of its name (`contact` of `contact_username`), so
/// that nothing else breaks inside. And the widest: as its name or its widest cell.
fn column_widths(columns: &[String], cells: &[Vec<String>]) -> Widths {
    const OTHERS: usize = 6;
    const TIMES: usize = 10;
    let mut widths = Widths {
        narrowest: Vec::new(),
        named: Vec::new(),
        unbroken: Vec::new(),
        widest: Vec::new(),
    };
    for (index, name) in columns.iter().enumerate() {
        let column = || cells.iter().filter_map(move |row| row.get(index));
        let cell = column().map(|text| shown_width(text)).max().unwrap_or(0);
        let name = shown_in_one_line(name);
        let widest = cell.max(shown_width(&name));
        let narrowest = if is_id_column(&name) {
            cell.max(widest.min(OTHERS))
        } else if is_time_column(&name) {
            widest.min(TIMES)
        } else {
            widest.min(OTHERS)
        };
        let longest_word = column()
            .flat_map(|text| text.split(' '))
            .map(shown_width)
            .max()
            .unwrap_or(0)
            .min(LONGEST_WORD);
        let name_part = name
            .split(name_delimiter(&name))
            .map(shown_width)
            .max()
            .unwrap_or(0);
        widths.narrowest.push(narrowest);
        widths.named.push(name_part.clamp(narrowest, widest));
        widths
            .unbroken
            .push(longest_word.max(name_part).clamp(narrowest, widest));
        widths.widest.push(widest);
    }
    widths
}

/// The longest word a column is widened for to keep it whole (see [`column_widths`]).
const LONGEST_WORD: usize = 20;

/// Whether a table of `cells` fits in `width` with every column at least as wide as
/// [`column_widths`] says.
pub(super) fn fits(columns: &[String], cells: &Cells, width: u16) -> bool {
    let needed: usize = cells.narrowest.iter().sum();
    // Each column's padding and border, and the last border.
    let drawn = needed + 3 * columns.len() + 1;
    drawn <= usize::from(width)
}

/// Each column's width (without padding) in a table `width` wide: every column as wide
/// as it gets ([`Cells::widest`]) where they all fit. Else each column starts at least
/// as wide as its longest word or name part ([`Cells::unbroken`]) where those all fit,
/// or else its name's parts ([`Cells::named`]: a name broken a letter from its end,
/// `usernam` / `e`, reads worst), or else [`Cells::narrowest`]; and the room left goes,
/// a few columns at a time, to the column where it saves the most lines
/// ([`Layout::cost`]: the table's height and its broken words first). So a time wraps
/// after its date only where the row is taller anyway, and a message's text takes what
/// the short columns do not need. (comfy-table shared the room equally: at 80 columns a
/// contact's username and phone number broke mid-word while its display name and time
/// had room to spare.)
pub(super) fn shared_widths(columns: &[String], cells: &Cells, width: u16) -> Vec<usize> {
    let room = usize::from(width).saturating_sub(3 * cells.widest.len() + 1);
    let total = |widths: &[usize]| widths.iter().sum::<usize>();
    if total(&cells.widest) <= room {
        return cells.widest.clone();
    }
    let low = [&cells.unbroken, &cells.named]
        .into_iter()
        .find(|low| total(low) <= room)
        .unwrap_or(&cells.narrowest);
    let layout = Layout::new(columns, cells, low);
    let mut widths = low.clone();
    let spare = room.saturating_sub(total(low));
    layout.widen(&mut widths, spare);
    layout.trade(&mut widths);
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

    /// What a table of `widths` costs, in lines: the table's height and the words
    /// broken across lines (each as two lines) first, then the lines of its cells.
    fn cost(&self, widths: &[usize]) -> usize {
        const HEIGHT: usize = 1 << 32;
        let mut cost = 0;
        for row in 0..self.rows {
            let (mut height, mut broken, mut lines) = (0, 0, 0);
            for (column, &width) in widths.iter().enumerate() {
                let cell = self.wrapped[column][width - self.low[column]][row];
                height = height.max(cell.lines);
                broken += cell.broken;
                lines += cell.lines;
            }
            cost += (height + 2 * broken) * HEIGHT + lines;
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

    /// Moves columns from one column to another while that saves anything: a step
    /// that was best alone can leave too little for two that are better together.
    fn trade(&self, widths: &mut [usize]) {
        let mut now = self.cost(widths);
        for _ in 0..MOVES {
            let mut moved = false;
            'search: for from in 0..widths.len() {
                for to in (0..widths.len()).filter(|&to| to != from) {
                    for step in 1..=LONGEST_STEP {
                        if widths[from] < self.low[from] + step || widths[to] + step > self.high[to]
                        {
                            break;
                        }
                        widths[from] -= step;
                        widths[to] += step;
                        let then = self.cost(widths);
                        if then < now {
                            now = then;
                            moved = true;
                            break 'search;
                        }
                        widths[from] += step;
                        widths[to] -= step;
                    }
                }
            }
            if !moved {
                return;
            }
        }
    }
}

/// The most columns [`shared_widths`] gives a column, or moves, in one step.
const LONGEST_STEP: usize = 24;

/// How many times [`shared_widths`] moves columns from one column to another.
const MOVES: usize = 32;

/// How many of a list's rows [`shared_widths`] lays its columns out for.
const LAYOUT_ROWS: usize = 100;

/// How `text` comes out in a column `width` wide, wrapped as comfy-table wraps it:
/// between words (split at `delimiter`), a word wider than the column cut over several
/// lines.
#[derive(Clone, Copy, Default)]
struct Wrapped {
    lines: usize,
    /// Words cut, each over several lines.
    broken: usize,
}

fn wrapped(text: &str, width: usize, delimiter: char) -> Wrapped {
    let width = width.max(1);
    let (mut lines, mut used, mut broken) = (1, 0, 0);
    for word in text.split(delimiter).map(shown_width) {
        if used > 0 && used + 1 + word <= width {
            used += 1 + word;
            continue;
        }
        if used > 0 {
            lines += 1;
        }
        lines += word.saturating_sub(1) / width;
        broken += usize::from(word > width);
        used = if word == 0 { 0 } else { (word - 1) % width + 1 };
    }
    Wrapped { lines, broken }
}
