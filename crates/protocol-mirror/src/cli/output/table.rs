//! Tables for people: fitted to a width, ids and dates never broken, a row at a time
//! where a list is too wide, and search highlights coloured once drawn.

use comfy_table::{Cell, ColumnConstraint, ContentArrangement, Table, Width, presets};
use serde_json::Value;

use super::cell;
use super::text::{shown_in_one_line, shown_width, time_in_table, truncate_to_width};

mod widths;

use widths::{Cells, fits, shared_widths};

/// A list's `rows` under `columns` as a table (cells cut at [`CUT`] characters, or
/// longer where a given width has room: [`cells_in_width`]; one object, `get`, is
/// shown whole by [`fields`]), fitted to the `given` width, a row at a time
/// ([`one_by_one`]) where the rows are too wide for it; with no width given (output to
/// a file or a pipe, no `COLUMNS`), a row a line, never wrapped, for `grep` and the
/// like (wrapped at 120 columns, a message's text went on in a line of its own, which
/// `grep` found without the row's id: a new user's probe), its ids whole up to
/// [`ID_WHOLE`] columns (with no width to keep to, an id over [`CUT`] was cut all
/// the same, and `grep` for it found nothing: a black-box probe). With `highlights`
/// (`search`'s table on a terminal), its [`HIGHLIGHT`] marks are coloured.
pub(super) fn list(
    columns: &[String],
    rows: &[Vec<Value>],
    given: Option<u16>,
    highlights: bool,
) -> String {
    let coloured = |drawn: String| {
        if highlights {
            highlighted(&drawn)
        } else {
            drawn
        }
    };
    let Some(width) = given else {
        let cells = table_cells(columns, rows, |index| {
            if is_id_column(&columns[index]) {
                ID_WHOLE
            } else {
                CUT
            }
        });
        return coloured(plain_table(columns, cells.rows, None).to_string());
    };
    let cells = cells_in_width(columns, rows, width);
    let drawn = if fits(columns, &cells, width) {
        table(columns, cells, width).to_string()
    } else if cells.rows.is_empty() {
        // A list of nothing still shows its header, as it can.
        plain_table(columns, cells.rows, Some(width)).to_string()
    } else {
        one_by_one(columns, rows, width)
    };
    coloured(drawn)
}

/// One object's `fields` (name, value) as a table, a field a line under a header,
/// laid out as [`one_by_one`] lays out each row of a list, in `width` (always some
/// width: its values are not cut, as a list's are, so that unfitted one line could be
/// thousands of characters wide, and every line as wide).
pub(super) fn fields(fields: Vec<(String, String)>, width: u16) -> String {
    let (names, values): (Vec<String>, Vec<String>) = fields.into_iter().unzip();
    const HEADER: [&str; 2] = ["field", "value"];
    let cells = Cells::new(&names, vec![values]);
    // Its header whole: under short names and values (`id`, `G`), it was broken a
    // letter a line (`fiel` / `d`, `v` / `a` / `l`: a probe).
    let layout = FieldLayout::new(&names, &cells, width, HEADER.map(str::len));
    let values = cells.rows.into_iter().next().unwrap_or_default();
    let mut table = layout.table(&names, values, width);
    table.set_header(HEADER);
    table.to_string()
}

/// A table of `cells` under `columns`, fitted to `width`, each column as wide as
/// [`shared_widths`] makes it: ids are what people copy from a table (into `get`,
/// `--conversation`), never broken across lines (at 80 columns a message's id and
/// conversation id came out in two pieces each), and times keep their date on one
/// line; the other columns wrap instead, between words where the width allows.
fn table(columns: &[String], cells: Cells, width: u16) -> Table {
    let widths = shared_widths(columns, &cells, width);
    let mut table = plain_table(columns, cells.rows, Some(width));
    for (index, content) in widths.into_iter().enumerate() {
        if let Some(column) = table.column_mut(index) {
            column.set_constraint(ColumnConstraint::Absolute(padded(content)));
        }
    }
    table
}

/// A table of `cells` under `columns`, fitted to `width` as the table can, or with no
/// width, every row on one line.
fn plain_table(columns: &[String], cells: Vec<Vec<String>>, width: Option<u16>) -> Table {
    let mut table = bare_table(width);
    table.set_header(columns.iter().map(|c| name_cell(c)));
    for row in cells {
        table.add_row(row);
    }
    table
}

/// A column's name as a cell that, too wide for its column, wraps after its parts
/// (`received` / `at`, `contact` / `username`) rather than a letter short of its end
/// (`received_a` / `t`: a new user's probe). Where it fits, it shows whole.
fn name_cell(name: &str) -> Cell {
    let name = shown_in_one_line(name);
    let delimiter = name_delimiter(&name);
    Cell::new(name).set_delimiter(delimiter)
}

/// Where a column's name (shown on one line) wraps: between its parts.
fn name_delimiter(name: &str) -> char {
    ['_', '.', '-']
        .into_iter()
        .find(|&d| name.contains(d))
        .unwrap_or(' ')
}

/// A column of `content` characters, as a width that counts its padding.
fn padded(content: usize) -> Width {
    Width::Fixed(u16::try_from(content.saturating_add(2)).unwrap_or(u16::MAX))
}

/// Rows too many columns wide for the width, one after another, each as a table of its
/// fields (as `get` shows an object), all as wide: at 60 columns, a list of messages
/// drew its text four characters wide, and the event log one character wide. Values
/// are cut at [`CUT`] characters, or at the room the value column has, where that is
/// more (a 70-character id was cut at 100 columns, where it fits: a probe); an id cut
/// anyway, at that room, so that it stays on one line.
///
/// The rows whose ids fit beside the names whole share one layout; a row with an id
/// too wide for that is laid out alone, as wide as that id needs (one such id made
/// every row of the list wider than the width, its names squeezed to four letters: a
/// probe; and one a little narrower squeezed every row's names: a re-probe).
fn one_by_one(columns: &[String], rows: &[Vec<Value>], width: u16) -> String {
    let names: Vec<String> = columns.iter().map(|c| shown_in_one_line(c)).collect();
    let room = FieldLayout::room_for_values(&names, width);
    let cells = table_cells(columns, rows, |index| {
        if is_id_column(&columns[index]) {
            room.max(1)
        } else {
            CUT.max(room)
        }
    });
    let names_whole = FieldLayout::widest_name(&names);
    let alone: Vec<Option<FieldLayout>> = (0..cells.rows.len())
        .map(|index| {
            let layout = FieldLayout::new(columns, &cells.row(columns, index), width, [0, 0]);
            let squeezed = layout.names < names_whole;
            (layout.drawn() > usize::from(width) || squeezed).then_some(layout)
        })
        .collect();
    let shared = FieldLayout::new(
        columns,
        &cells.only(columns, |index| alone[index].is_none()),
        width,
        [0, 0],
    );
    let drawn: Vec<String> = cells
        .rows
        .into_iter()
        .zip(&alone)
        .map(|(row, alone)| {
            let layout = alone.as_ref().unwrap_or(&shared);
            layout.table(&names, row, width).to_string()
        })
        .collect();
    drawn.join("\n")
}

/// The widths of a table of fields, a field a line (`get`, and each row of
/// [`one_by_one`]), in characters without padding: the values as wide as the widest
/// (within the width), and never narrower than an id or a date among them, even
/// where that is wider than the width (a terminal wraps a long line whole; a table
/// broke the id in two), unless it was cut anyway (a list's id over [`CUT`]
/// characters made every row wider than the terminal, and was still cut: a probe);
/// then the names take what is left, wrapping after their parts where they can.
struct FieldLayout {
    names: usize,
    values: usize,
}

impl FieldLayout {
    /// The layout for rows of values (`cells`) under the field names `names`, each
    /// column at least as wide as `least` says (a header's words).
    fn new(names: &[String], cells: &Cells, width: u16, least: [usize; 2]) -> FieldLayout {
        // Ids as wide as the widest shown whole, times as their date.
        let kept_whole = names
            .iter()
            .enumerate()
            .map(|(index, name)| {
                if is_id_column(name) {
                    cells.widest_whole[index]
                } else if is_time_column(name) {
                    cells.narrowest[index]
                } else {
                    0
                }
            })
            .chain(
                cells
                    .rows
                    .iter()
                    .flatten()
                    .map(|text| widest_nested_id(text)),
            )
            .max()
            .unwrap_or(0);
        let name_width = Self::widest_name(names).max(least[0]);
        let widest_value = cells
            .rows
            .iter()
            .flatten()
            .map(|text| shown_width(text))
            .max()
            .unwrap_or(0);
        let room = Self::room(width);
        let values = widest_value
            .max(least[1])
            .min(room.saturating_sub(name_width))
            .max(kept_whole)
            .max(least[1])
            .max(1);
        // The names give way to keep the line within the width; where it is wider
        // anyway, they stay whole (squeezed, they broke mid-word for nothing: a probe).
        let names = if values + 4 > room {
            name_width.max(1)
        } else {
            name_width.min(room - values).max(4)
        };
        FieldLayout { names, values }
    }

    /// How wide its tables are drawn, borders included.
    fn drawn(&self) -> usize {
        self.names + self.values + 7
    }

    /// The room for names and values together in `width`, less the borders and
    /// padding: `│ name ┆ value │`.
    fn room(width: u16) -> usize {
        usize::from(width).saturating_sub(7)
    }

    /// The widest of the field names `names`, as shown.
    fn widest_name(names: &[String]) -> usize {
        names
            .iter()
            .map(|n| shown_width(&shown_in_one_line(n)))
            .max()
            .unwrap_or(0)
    }

    /// The room values have in `width` beside the field names `names` shown whole.
    fn room_for_values(names: &[String], width: u16) -> usize {
        Self::room(width).saturating_sub(Self::widest_name(names))
    }

    /// One table of `values` under the field names `names`.
    fn table(&self, names: &[String], values: Vec<String>, width: u16) -> Table {
        let mut table = bare_table(Some(width));
        for (name, text) in names.iter().zip(values) {
            // Wrapped here, as comfy-table would, in time linear in its length (see
            // `widths::wrap`): a value is shown whole, however long.
            let mut lines: Vec<&str> = Vec::new();
            widths::wrap(&text, self.values, ' ', |line| lines.push(line));
            table.add_row([field_name(name, self.names), lines.join("\n")]);
        }
        for (index, content) in [self.names, self.values].into_iter().enumerate() {
            if let Some(column) = table.column_mut(index) {
                column.set_constraint(ColumnConstraint::Absolute(padded(content)));
            }
        }
        table
    }
}

/// A field's `name` in a column `width` wide: whole where it fits, else in lines that
/// end after one of its parts, each keeping its `_`, `.` or `-` so that no line looks
/// like a field of its own (`conversation_` / `id`, not `id` under the `id` field),
/// and a part too wide for the column cut where the column ends (a 60-column list
/// split `phone_number` as `phone_nu` / `mber`, with room for `phone_`: a probe).
fn field_name(name: &str, width: usize) -> String {
    use unicode_segmentation::UnicodeSegmentation;
    if shown_width(name) <= width {
        return name.to_owned();
    }
    let width = width.max(1);
    let mut shown = String::with_capacity(name.len() + name.len() / width.max(4));
    // The width of the line being filled.
    let mut used = 0;
    for part in name.split_inclusive(['_', '.', '-']) {
        if used > 0 && used + shown_width(part) > width {
            shown.push('\n');
            used = 0;
        }
        for grapheme in part.graphemes(true) {
            let wide = shown_width(grapheme);
            if used > 0 && used + wide > width {
                shown.push('\n');
                used = 0;
            }
            shown.push_str(grapheme);
            used += wide;
        }
    }
    shown
}

/// The widest id inside nested JSON shown in a cell (`"message_id": "…"},` as
/// [`super::cell`] spaces it), with the punctuation that comes with it, which must fit
/// on one line for the id to stay whole: `get`'s table broke the ids of a message's
/// attachments that were wider than its value column, or that had a hyphen where the
/// line ended (a regression probe).
fn widest_nested_id(text: &str) -> usize {
    if !text.starts_with(['{', '[']) {
        return 0;
    }
    let words: Vec<&str> = text.split(' ').collect();
    let last = words.len().saturating_sub(2);
    words
        .windows(2)
        .enumerate()
        // The id a cut cell ends in is cut: it wraps, as a cut id does (it made its
        // row wider than the width for an id broken anyway; a review).
        .filter(|&(at, pair)| !(at == last && pair[1].ends_with('…')))
        .map(|(_, pair)| pair)
        .filter(|pair| {
            pair[0]
                .trim_start_matches(['{', '['])
                .strip_prefix('"')
                .and_then(|key| key.strip_suffix("\":"))
                .is_some_and(is_id_column)
        })
        .map(|pair| shown_width(pair[1]))
        .max()
        .unwrap_or(0)
}

/// A table without a header yet, fitted to `width`, or with none, not fitted at all.
fn bare_table(width: Option<u16>) -> Table {
    let mut table = Table::new();
    table.load_preset(presets::UTF8_FULL_CONDENSED);
    match width {
        Some(width) => table
            .set_content_arrangement(ContentArrangement::Dynamic)
            .set_width(width),
        None => table.set_content_arrangement(ContentArrangement::Disabled),
    };
    table
}

/// Whether a column holds ids: `id`, or a name ending in `_id` (`conversation_id`,
/// `object_id`).
fn is_id_column(name: &str) -> bool {
    name == "id" || name.ends_with("_id")
}

/// Whether a column holds times (`created_at`), which tables show as UTC dates and
/// times.
fn is_time_column(name: &str) -> bool {
    name.ends_with("_at")
}

/// How many characters of a value a list's table shows, unless the width has room for
/// more ([`cells_in_width`]).
const CUT: usize = 60;

/// How many columns of an id a list's table shows with no width to keep to (a CJK
/// character counts two, as everywhere in tables): every
/// row is as wide as its widest, and one id of 200,000 characters made a list of
/// 2,000 rows 66 MB, and still broke that id in four (the table's widths end at 65,535;
/// a review). `get` and JSON show longer ones whole.
const ID_WHOLE: usize = 1_000;

/// The narrowest a cut text column is made so that a cut id beside it can be shown
/// whole ([`cells_in_width`]): its 60 characters then take two or three lines.
const SQUEEZED_TEXT: usize = 30;

/// The text of each cell of a table: times in UTC, other values as [`cell`] shows them
/// on one line, cut at `most(column index)` characters. Ids too: shown whole, one
/// id of 120 characters made every row of its list a table of its own (its fields a
/// line), ten times as tall (a regression probe); `get` and JSON show it whole.
fn table_cells(columns: &[String], rows: &[Vec<Value>], most: impl Fn(usize) -> usize) -> Cells {
    let (text, whole) = rows
        .iter()
        .map(|row| {
            row.iter()
                .zip(columns)
                .enumerate()
                .map(|(index, (value, column))| {
                    let text = time_in_table(column, value).unwrap_or_else(|| cell(value, true));
                    // Past `CUT` characters the limit is room on the screen: cut by
                    // characters, CJK text came out twice as wide as its room, and the
                    // layout then tried every width of its columns (69 s at 4,000
                    // columns; a review).
                    // Never below `CUT` characters: an id of 48 CJK characters (96
                    // columns) was cut at 100 columns, where 60 characters stay whole
                    // (a re-probe). A text cut anyway is cut to that room (a row at a
                    // time, an id's is the value column's), so that an id stays on one
                    // line: cut at `CUT` characters, a long CJK id was both cut and
                    // wrapped, over three lines at 70 columns (two probes).
                    let most = most(index);
                    let shown = if text.chars().count() > CUT {
                        truncate_to_width(&text, most)
                    } else {
                        text.clone()
                    };
                    let whole = shown == text;
                    (shown, whole)
                })
                .unzip()
        })
        .unzip();
    Cells::cut_where(columns, text, whole)
}

/// A list's cells for a table `width` wide: cut at [`CUT`] characters, or, where the
/// table would leave room at that (a wide terminal), the columns that were cut longer
/// by a share of the room each (a message's text was cut at 60 characters even at 200
/// columns: a new user's probe).
///
/// Ids first: a cut id column is shown whole where the room allows it, counting what
/// the other cut columns have past [`SQUEEZED_TEXT`] (they wrap instead), and the
/// other cut columns share what is left (a message's text took the room an
/// 80-character id needed, cut at 250 columns: a probe).
fn cells_in_width(columns: &[String], rows: &[Vec<Value>], width: u16) -> Cells {
    let cells = table_cells(columns, rows, |_| CUT);
    let drawn = cells.widest.iter().sum::<usize>() + 3 * columns.len() + 1;
    let room = usize::from(width).saturating_sub(drawn);
    if !cells.cut.contains(&true) {
        return cells;
    }
    let cut_ids: Vec<usize> = (0..columns.len())
        .filter(|&index| cells.cut[index] && is_id_column(&columns[index]))
        .collect();
    // The other cut columns (text) wrap rather than keep all their room while an id
    // is cut: each gives up what it has past `SQUEEZED_TEXT` for ids (a probe: a
    // 70-character id was cut at 200 columns, beside a message cut at 60 characters
    // and wrapped anyway).
    let squeezable: usize = (0..columns.len())
        .filter(|&index| cells.cut[index] && !is_id_column(&columns[index]))
        .map(|index| cells.widest[index].saturating_sub(SQUEEZED_TEXT))
        .sum();
    let ids_may_take = (usize::from(width) + squeezable).saturating_sub(drawn);
    // Each cut id column whole while the room lasts, the one that needs least first
    // (all or nothing left a 100-character id cut beside a 200-character one; a
    // review).
    let mut whole_ids: Vec<usize> = Vec::new();
    let mut ids_room = 0;
    if !cut_ids.is_empty() {
        let whole = table_cells(columns, rows, |index| {
            if cut_ids.contains(&index) {
                usize::MAX
            } else {
                CUT
            }
        });
        let mut needs: Vec<(usize, usize)> = cut_ids
            .iter()
            .map(|&index| {
                let need = whole.widest[index].saturating_sub(cells.widest[index]);
                (need, index)
            })
            .collect();
        needs.sort_unstable();
        for (need, index) in needs {
            if ids_room + need <= ids_may_take {
                ids_room += need;
                whole_ids.push(index);
            }
        }
    }
    let ids_need = (!whole_ids.is_empty()).then_some(ids_room);
    let ids_whole = |index: usize| whole_ids.contains(&index);
    let shared: Vec<usize> = (0..columns.len())
        .filter(|&index| cells.cut[index] && !ids_whole(index))
        .collect();
    let left = room.saturating_sub(ids_need.unwrap_or(0));
    let longer = if shared.is_empty() || left < shared.len() {
        CUT
    } else {
        CUT + left / shared.len()
    };
    if ids_need.is_none() && longer == CUT {
        return cells;
    }
    table_cells(columns, rows, |index| {
        if ids_whole(index) {
            usize::MAX
        } else if shared.contains(&index) {
            longer
        } else {
            CUT
        }
    })
}

/// Where a table cell's highlight starts and ends (`search`'s matches on a terminal):
/// private-use characters that [`shown_in_one_line`] lets through, turned into
/// terminal colours only once the table is drawn, so that the text's own control
/// characters never reach the terminal. Only `search`'s tables are coloured, and
/// `search` keeps these characters of the text itself out of them: a message holding
/// them printed colour codes in `get`, `list` and `sql`, piped and under `NO_COLOR`
/// too (a review).
pub(crate) const HIGHLIGHT: (&str, &str) = ("\u{e000}", "\u{e001}");

/// A drawn table with [`HIGHLIGHT`] marks as terminal colours (bold yellow). A mark
/// left open at the end of a line is closed where the cell's text ends, before its
/// padding and border (which it coloured when closed at the end of the line), and
/// opened again where the cell goes on, on the next line of the same row (a long match
/// wrapped; a row's further lines have an empty first cell); a mark cut off with its
/// cell ends with it. Each mark took a column when the table was laid out and its
/// colour code takes none: as many spaces go before the line's last border
/// (highlights are in the last column, the snippet's), so that the border stays
/// aligned.
fn highlighted(table: &str) -> String {
    if !table.contains(HIGHLIGHT.0) {
        return table.to_owned();
    }
    let (on, off) = ("\x1b[1;33m", "\x1b[0m");
    let mut carried = false;
    let lines: Vec<String> = table
        .lines()
        .map(|line| {
            // The last cell's text starts after its separator and one space.
            let text_at = line
                .rfind('┆')
                .map(|at| at + '┆'.len_utf8())
                .or_else(|| line.find('│').map(|at| at + '│'.len_utf8()))
                .map_or(0, |at| at + usize::from(line[at..].starts_with(' ')));
            let first_cell_empty = line
                .split(['│', '┆'])
                .nth(1)
                .is_some_and(|cell| cell.trim().is_empty());
            let mut open = carried && first_cell_empty;
            let mut out = String::with_capacity(line.len() + 16);
            out.push_str(&line[..text_at]);
            if open {
                out.push_str(on);
            }
            let mut marks = 0;
            for c in line[text_at..].chars() {
                if HIGHLIGHT.0.starts_with(c) {
                    open = true;
                    marks += 1;
                    out.push_str(on);
                } else if HIGHLIGHT.1.starts_with(c) {
                    open = false;
                    marks += 1;
                    out.push_str(off);
                } else {
                    out.push(c);
                }
            }
            carried = open;
            if let Some(border) = out.pop() {
                let padding = out.len() - out.trim_end_matches(' ').len();
                out.truncate(out.len() - padding);
                if open {
                    out.push_str(off);
                }
                out.push_str(&" ".repeat(padding + marks));
                out.push(border);
            }
            out
        })
        .collect();
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::output::{Format, columns};
    use protocol_types::Resource;

    #[test]
    fn highlights_become_colours_only_when_the_table_is_drawn() {
        let cell = format!(
            "a {}b{} \u{1b}[2J {}c",
            HIGHLIGHT.0, HIGHLIGHT.1, HIGHLIGHT.0
        );
        let drawn = highlighted(&format!("| {} |\n| x |", shown_in_one_line(&cell)));
        assert_eq!(
            drawn,
            "| a \u{1b}[1;33mb\u{1b}[0m ␛[2J \u{1b}[1;33mc\u{1b}[0m    |\n| x |"
        );
    }

    fn message_rows() -> (Vec<String>, Vec<Vec<Value>>) {
        let columns = [
            "id",
            "conversation_id",
            "contact.username",
            "message",
            "created_at",
        ]
        .map(str::to_owned)
        .to_vec();
        let rows = (0..3)
            .map(|n| {
                vec![
                    Value::from(format!("8fPqIeM5cq000BP{n}")),
                    Value::from("vT8HmPCPml00000M"),
                    Value::from("SondraHector13"),
                    Value::from(
                        "Train gift pizza chocolate gift later rain coach bus ".repeat(n + 1),
                    ),
                    Value::from(1_700_000_000),
                ]
            })
            .collect();
        (columns, rows)
    }

    /// Ids come out whole, whatever else wraps: at 80 columns, a message's id and
    /// conversation id were drawn in two pieces each.
    #[test]
    fn ids_are_never_broken_across_lines() {
        let (columns, rows) = message_rows();
        let drawn = fitting_table(&columns, &rows, 80);
        for n in 0..3 {
            assert!(drawn.contains(&format!("8fPqIeM5cq000BP{n}")), "{drawn}");
        }
        assert!(drawn.contains("vT8HmPCPml00000M"), "{drawn}");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

        /// Whatever the cells and the width: a list that fits is drawn within the
        /// width, every id whole on one line, every word of at most the width's share
        /// intact somewhere, and the layout never panics.
        #[test]
        fn any_list_that_fits_is_drawn_within_its_width_with_ids_whole(
            rows in proptest::collection::vec(
                (
                    "[a-zA-Z0-9]{1,20}",
                    proptest::collection::vec("[a-z]{0,14}|[\\p{Han}]{1,4}|[0-9-]{5,16}", 0..8),
                    "[a-zA-Z0-9_.]{0,18}",
                    proptest::option::of(0i64..2_000_000_000),
                ),
                0..12,
            ),
            width in 20u16..220,
        ) {
            let columns: Vec<String> = ["id", "message", "contact_username", "created_at"]
                .map(str::to_owned)
                .to_vec();
            let ids: Vec<String> = rows.iter().map(|(id, ..)| id.clone()).collect();
            let rows: Vec<Vec<Value>> = rows
                .iter()
                .map(|(id, words, name, at)| {
                    vec![
                        Value::from(id.as_str()),
                        Value::from(words.join(" ")),
                        Value::from(name.as_str()),
                        at.map_or(Value::Null, Value::from),
                    ]
                })
                .collect();
            let drawn = list(&columns, &rows, Some(width), false);
            let cells = cells_in_width(&columns, &rows, width);
            if fits(&columns, &cells, width) {
                for line in drawn.lines() {
                    proptest::prop_assert!(
                        shown_width(line) <= usize::from(width),
                        "{} > {width}:\n{drawn}",
                        shown_width(line)
                    );
                }
            }
            for id in &ids {
                proptest::prop_assert!(drawn.contains(id.as_str()), "{id} broken:\n{drawn}");
            }
        }
    }

    /// A nested id cut with its cell wraps as a cut id does: its row keeps to the
    /// width (it was laid out alone, wider, for an id broken anyway). Cut ids take a
    /// wide terminal's room one at a time, the one that needs least first (all or
    /// nothing left a 100-character id cut beside a 200-character one). Past 60
    /// characters text is cut by its width on the screen (CJK text cut by characters
    /// came out twice as wide as its room). All from a review.
    #[test]
    fn cut_nested_ids_wrap_ids_take_the_room_in_turn_and_wide_text_is_cut_by_width() {
        let columns: Vec<String> = ["id", "username", "attachments"]
            .map(str::to_owned)
            .to_vec();
        let nested = serde_json::json!([{"attachment_id": "a".repeat(70)}]);
        let rows = vec![
            vec![Value::from("short1"), Value::from("u"), Value::Null],
            vec![Value::from("short2"), Value::from("u"), nested],
        ];
        let drawn = list(&columns, &rows, Some(40), false);
        assert!(drawn.lines().all(|l| l.chars().count() <= 40), "{drawn}");

        let columns: Vec<String> = ["id", "conversation_id", "message"]
            .map(str::to_owned)
            .to_vec();
        let rows = vec![vec![
            Value::from("i".repeat(100)),
            Value::from("c".repeat(200)),
            Value::from("word ".repeat(60).trim_end()),
        ]];
        let drawn = list(&columns, &rows, Some(250), false);
        assert!(drawn.contains(&"i".repeat(100)), "{drawn}");
        assert!(drawn.lines().all(|l| l.chars().count() <= 250), "{drawn}");

        // But never below 60 characters: an id of 48 CJK characters (96 columns) was
        // cut at 100 columns (a re-probe).
        let id = "漢".repeat(48);
        let rows = vec![vec![
            Value::from(id.as_str()),
            Value::from("u"),
            Value::Null,
            Value::from("555"),
            Value::from(1_700_000_000),
        ]];
        for width in [60, 80, 90, 100, 110, 120] {
            let drawn = list(&contact_columns(), &rows, Some(width), false);
            assert!(drawn.contains(&id), "{width}: {drawn}");
        }

        let columns: Vec<String> = ["id", "message"].map(str::to_owned).to_vec();
        let rows = vec![vec![Value::from("m1"), Value::from("表示".repeat(3000))]];
        let cells = cells_in_width(&columns, &rows, 1000);
        let text = shown_width(&cells.rows[0][1]);
        assert!(text > CUT && text <= 1000, "{text}");
        assert!(fits(&columns, &cells, 1000));
    }

    /// With no width (a file or a pipe, no `COLUMNS`), ids are whole and other cells
    /// cut at [`CUT`].
    #[test]
    fn a_list_with_no_width_keeps_its_ids_whole() {
        let columns: Vec<String> = ["id", "conversation_id", "message"]
            .map(str::to_owned)
            .to_vec();
        let (id, conversation) = ("i".repeat(300), "c".repeat(100));
        let rows = vec![vec![
            Value::from(id.as_str()),
            Value::from(conversation.as_str()),
            Value::from("t".repeat(100)),
        ]];
        let drawn = list(&columns, &rows, None, false);
        assert_eq!(drawn.lines().count(), 5, "a row a line: {drawn}");
        assert!(
            drawn.contains(&id) && drawn.contains(&conversation),
            "{drawn}"
        );
        assert!(!drawn.contains(&"t".repeat(61)), "{drawn}");
        // Up to a bound: every row is as wide as the widest.
        let huge = vec![Value::from("h".repeat(200_000)), Value::Null, Value::Null];
        let drawn = list(&columns, &[huge, rows[0].clone()], None, false);
        assert_eq!(drawn.lines().count(), 6, "a row a line: {drawn}");
        assert!(drawn.len() < 20_000, "{}", drawn.len());
        assert!(drawn.contains(&"h".repeat(ID_WHOLE - 1)), "{drawn}");
    }

    /// A cut id takes room from cut text beside it, which wraps instead, down to 30
    /// columns: a 70-character id was cut at 200 columns beside a message cut at 60
    /// characters and wrapped anyway (a probe); it shows whole at 180 now, and where
    /// the text would go under 30 columns the id stays cut.
    #[test]
    fn a_cut_id_takes_room_from_cut_text_beside_it() {
        let columns: Vec<String> = ["id", "conversation_id", "message", "created_at"]
            .map(str::to_owned)
            .to_vec();
        let id = "M".repeat(70);
        let rows = vec![vec![
            Value::from(id.as_str()),
            Value::from("C".repeat(30)),
            Value::from("word ".repeat(40).trim_end()),
            Value::from(1_700_000_000),
        ]];
        for width in [180, 200] {
            let drawn = list(&columns, &rows, Some(width), false);
            assert!(drawn.contains(&id), "{width}:\n{drawn}");
            assert!(
                drawn.lines().all(|l| shown_width(l) <= usize::from(width)),
                "{width}:\n{drawn}"
            );
        }
        // 70 + 30 + 30 + 19 and the borders: 162 at the least.
        let drawn = list(&columns, &rows, Some(160), false);
        assert!(!drawn.contains(&id), "{drawn}");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

        /// The width contract of docs/CLI.md ("Tables"): every line within the width,
        /// but for a row table whose id, shown whole, cannot fit beside names at
        /// least 4 wide; every id of at most 60 characters shown whole on a line.
        #[test]
        fn lists_keep_to_the_width_and_their_ids_whole(
            rows in proptest::collection::vec(
                ("[a-z0-9]{1,80}|[\\p{Han}]{1,30}", "[a-z ]{0,90}|[\\p{Han} ]{0,40}"),
                0..10,
            ),
            width in 20u16..200,
        ) {
            let columns: Vec<String> = ["id", "message", "created_at"].map(str::to_owned).to_vec();
            let values: Vec<Vec<Value>> = rows
                .iter()
                .map(|(id, text)| vec![Value::from(id.as_str()), Value::from(text.as_str()), Value::from(1_700_000_000)])
                .collect();
            let drawn = list(&columns, &values, Some(width), false);
            let one_by_one = !rows.is_empty()
                && !fits(&columns, &cells_in_width(&columns, &values, width), width);
            let width = usize::from(width);
            let tables: Vec<&str> = drawn.split_inclusive('┘').collect();
            for (index, table) in tables.iter().enumerate() {
                let widest = table.lines().map(shown_width).max().unwrap_or(0);
                let excused = one_by_one
                    && rows.get(index).is_some_and(|(id, _)| shown_width(id).max(10) + 4 + 7 > width);
                proptest::prop_assert!(widest <= width || excused, "{drawn}");
            }
            for (id, _) in &rows {
                if id.chars().count() <= CUT {
                    proptest::prop_assert!(drawn.lines().any(|l| l.contains(id.as_str())), "{id}: {drawn}");
                }
            }
        }
    }

    /// `rows` drawn as a table that fits in `width` (checked).
    fn fitting_table(columns: &[String], rows: &[Vec<Value>], width: u16) -> String {
        let cells = table_cells(columns, rows, |_| 60);
        assert!(fits(columns, &cells, width));
        let drawn = table(columns, cells, width).to_string();
        let width = usize::from(width);
        assert!(
            drawn.lines().all(|line| line.chars().count() <= width),
            "{drawn}"
        );
        drawn
    }

    /// A list of contacts' columns.
    fn contact_columns() -> Vec<String> {
        [
            "id",
            "username",
            "display_name",
            "phone_number",
            "created_at",
        ]
        .map(str::to_owned)
        .to_vec()
    }

    /// The room goes where it saves lines and keeps words whole: at 80 columns a
    /// contact's username and phone number broke mid-word (comfy-table shared the room
    /// equally) while its display name and time had room to spare; now the display
    /// name wraps between its words and the time after its date.
    #[test]
    fn short_columns_stay_whole_where_others_can_wrap_between_words() {
        let columns = contact_columns();
        let contact = |id: &str, username: &str, name: &str, phone: &str| {
            vec![
                Value::from(id),
                Value::from(username),
                Value::from(name),
                Value::from(phone),
                Value::from(1_700_000_000),
            ]
        };
        let rows = vec![
            contact("nmpsDKMEA20001Ve", "PeterMarley5807", "", "1-897-271-1135"),
            contact(
                "KiYNxMYrMx0001U4",
                "GusPolansky5569",
                "Linnie Okafor",
                "1-356-221-1143",
            ),
            contact(
                "0DsL1kyfKT0001QY",
                "RobRivera5491",
                "Rob Polansky",
                "1-782-941-2497",
            ),
        ];
        let drawn = fitting_table(&columns, &rows, 80);
        for whole in [
            "PeterMarley5807",
            "GusPolansky5569",
            "1-897-271-1135",
            "1-356-221-1143",
        ] {
            assert!(drawn.contains(whole), "{whole}: {drawn}");
        }
        assert!(
            drawn.contains(" Linnie ") && drawn.contains(" Okafor "),
            "{drawn}"
        );
        // Where everything fits on a line, it does.
        let wide = fitting_table(&columns, &rows, 120);
        assert_eq!(wide.lines().count(), 3 + 3 + 1, "{wide}");
    }

    /// Cases a regression probe found: an event log at 110 columns wrapped every
    /// row's time to keep one `conversation.deleted` whole; `stats` at 33 columns broke
    /// a date that stood in its `value` column (`2026-11` / `-30 04:`).
    #[test]
    fn the_room_goes_where_it_saves_lines() {
        let columns: Vec<String> = [
            "seq",
            "received_at",
            "type",
            "id",
            "object_id",
            "outcome",
            "cascaded",
        ]
        .map(str::to_owned)
        .to_vec();
        let types = ["contact.deleted", "group.deleted", "conversation.deleted"];
        let rows: Vec<Vec<Value>> = (0..19)
            .map(|n| {
                vec![
                    Value::from(n),
                    Value::from(1_700_000_000),
                    Value::from(types[n % 3]),
                    Value::from(format!("evt00000000000{n:02}")),
                    Value::from(format!("obj00000000000{n:02}")),
                    Value::from("applied"),
                    Value::from(0),
                ]
            })
            .collect();
        let drawn = fitting_table(&columns, &rows, 110);
        assert_eq!(drawn.lines().count(), 19 + 5, "a line a row:\n{drawn}");
        let columns: Vec<String> = ["stat", "value"].map(str::to_owned).to_vec();
        let rows = vec![
            vec![
                Value::from("events.first_received_at"),
                Value::from("2026-11-30 04:11:49"),
            ],
            vec![
                Value::from("events.by_outcome.ignored_deleted"),
                Value::from(0),
            ],
        ];
        for width in 27..=40 {
            let drawn = fitting_table(&columns, &rows, width);
            assert!(drawn.contains("2026-11-30"), "{width}:\n{drawn}");
        }
    }

    /// A time keeps its date on one line, and an id column whose ids are narrower
    /// than its name wraps the name rather than take the width (at 80 columns, a
    /// conversation with no group was shown a field a line for `group_id`).
    #[test]
    fn times_keep_their_date_and_short_ids_wrap_their_header() {
        let columns: Vec<String> = columns(Resource::Conversation, Format::Table)
            .iter()
            .map(|c| (*c).to_owned())
            .collect();
        let rows = vec![vec![
            Value::from("xgQQXg3hrtjh7AvZ"),
            Value::from("WAz8eIbvDR60rouK"),
            Value::Null,
            Value::from(true),
            Value::from(false),
            Value::from(705_103_200),
        ]];
        let drawn = fitting_table(&columns, &rows, 80);
        assert!(drawn.contains("1992-05-05"), "{drawn}");
    }

    /// Ids are measured as a terminal shows them: a CJK character or an emoji takes
    /// two columns (counted as one, such ids were broken at any width).
    #[test]
    fn wide_characters_in_ids_are_measured_as_shown() {
        let columns = ["id", "message"].map(str::to_owned).to_vec();
        let rows = vec![vec![
            Value::from("会話会話会話会話会話会話会話会話"),
            Value::from("hello there, a message of some length that wraps"),
        ]];
        let cells = table_cells(&columns, &rows, |_| 60);
        let drawn = table(&columns, cells, 60).to_string();
        assert!(
            drawn.contains("会話会話会話会話会話会話会話会話"),
            "{drawn}"
        );
    }

    /// A column's name of several parts breaks only between them: where the width
    /// leaves a column too narrow for its longest part, the list goes a row at a time
    /// (at 70 columns, `contact.username` came out as `contac` / `t.user` / `name`).
    #[test]
    fn names_of_several_parts_break_only_between_them() {
        let (columns, rows) = message_rows();
        for width in 60..=100 {
            let drawn = list(&columns, &rows, Some(width), false);
            for line in drawn.lines() {
                let cells: Vec<&str> = line.split(['│', '┆']).map(str::trim).collect();
                assert!(
                    !cells
                        .iter()
                        .any(|c| ["contac", "t.user", "name"].contains(c)),
                    "{width}:\n{drawn}"
                );
            }
        }
    }

    /// An id of wide characters cut anyway, a row at a time, is cut to the room it has
    /// and kept on one line (cut at 60 characters, 120 columns, it was also wrapped
    /// at 80: a probe).
    #[test]
    fn a_wide_id_cut_anyway_stays_on_one_line() {
        let columns = ["id", "username"].map(str::to_owned).to_vec();
        let id = "联系人".repeat(25);
        let rows = vec![vec![Value::from(id.as_str()), Value::from("bob")]];
        let drawn = one_by_one(&columns, &rows, 80);
        assert!(drawn.lines().all(|l| shown_width(l) <= 80), "{drawn}");
        let id_lines: Vec<&str> = drawn.lines().filter(|l| l.contains("联系人")).collect();
        assert_eq!(id_lines.len(), 1, "{drawn}");
        assert!(id_lines[0].contains('…'), "{drawn}");
    }

    /// A row at a time, an id cut anyway is cut to the room beside the names and stays
    /// on one line at any width, and the other rows keep their names whole (an id of
    /// 80 characters, cut at 60, took two or three lines, and squeezed every row's
    /// names to `conv` / `ersa` / `tion` / `_id`: a re-probe).
    #[test]
    fn an_id_cut_anyway_takes_the_room_beside_the_names() {
        let (columns, mut rows) = message_rows();
        rows[0][0] = Value::from("a数".repeat(40));
        for (width, wide) in (40..=100).flat_map(|w| (55..=64).map(move |k| (w, k))) {
            rows[1][0] = Value::from("x".repeat(wide) + "数");
            let drawn = one_by_one(&columns, &rows, width);
            let lines: Vec<&str> = drawn.lines().collect();
            let cut: Vec<&&str> = lines.iter().filter(|l| l.contains("a数a数")).collect();
            assert_eq!(cut.len(), 1, "{width}:\n{drawn}");
            assert!(cut[0].contains('…') && shown_width(cut[0]) <= usize::from(width));
            // The third row (an id of 16 characters) has its names whole.
            let third = drawn.split('┌').nth(3).unwrap();
            if width >= 45 {
                assert!(
                    third.contains("conversation_id"),
                    "{width} {wide}:\n{drawn}"
                );
            }
        }
    }

    /// Where even a row at a time cannot keep an id whole in the width, the id stays
    /// whole and the line is wider (a terminal wraps it whole); the field names wrap
    /// first. A list of nothing still fits its header to the width.
    #[test]
    fn narrow_widths_keep_ids_whole_and_empty_lists_fit() {
        let (columns, rows) = message_rows();
        let drawn = one_by_one(&columns, &rows, 30);
        assert!(drawn.contains("8fPqIeM5cq000BP0"), "{drawn}");
        assert!(drawn.contains("2023-11-14"), "{drawn}");
        let id_line = drawn
            .lines()
            .find(|l| l.contains("8fPqIeM5cq000BP0"))
            .unwrap();
        assert_eq!(id_line.chars().count(), 30, "the names gave way: {drawn}");
        let cells = table_cells(&columns, &[], |_| 60);
        assert!(!fits(&columns, &cells, 30));
        let empty = plain_table(&columns, cells.rows, Some(30)).to_string();
        assert!(empty.lines().all(|l| l.chars().count() <= 30), "{empty}");
    }

    /// Text is cut at 60 characters where the width has no room for more, and shown
    /// longer (each cut column by a share of the room) where it has: a message's text
    /// was cut at 60 characters even at 200 columns.
    #[test]
    fn text_is_cut_by_the_room_the_width_leaves() {
        let (columns, rows) = message_rows();
        let whole = "Train gift pizza chocolate gift later rain coach bus ".repeat(2);
        let whole = whole.trim_end();
        let at = |width: u16| list(&columns, &rows, Some(width), false);
        assert!(!at(140).contains(whole), "{}", at(140));
        assert!(at(140).contains('…'));
        let wide = at(220);
        assert!(wide.contains(whole), "{wide}");
        assert!(wide.lines().all(|l| l.chars().count() <= 220), "{wide}");
        // The third message (159 characters) is still cut, at the room there is.
        assert!(wide.contains('…'), "{wide}");
        assert!(
            !list(&columns, &rows, None, false).contains(whole),
            "no width: cut at 60"
        );
        // A cut that leaves the text as many bytes long is a cut too (a message of 62
        // characters with curly quotes stayed cut at 300 columns: a regression probe).
        let quoted = format!("{}{}", "\u{2019}".repeat(20), "a".repeat(42));
        let rows = vec![vec![Value::from("m1"), Value::from(quoted.as_str())]];
        let columns: Vec<String> = ["id", "message"].map(str::to_owned).to_vec();
        assert!(list(&columns, &rows, Some(150), false).contains(&quoted));
    }

    /// A column's name too wide for its column wraps after one of its parts, not a
    /// letter short of its end (`received_a` / `t`, `contact.user` / `name`).
    #[test]
    fn names_wrap_between_their_parts() {
        let columns: Vec<String> = ["seq", "received_at", "type", "id", "object_id", "outcome"]
            .map(str::to_owned)
            .to_vec();
        let rows = vec![vec![
            Value::from(19),
            Value::from(1_700_000_000),
            Value::from("contact.deleted"),
            Value::from("evt0000000000019"),
            Value::from("hSIhXBhNe8X1d8Et"),
            Value::from("applied"),
        ]];
        // Narrow enough that the time's name must wrap.
        let drawn = list(&columns, &rows, Some(77), false);
        let header: Vec<&str> = drawn.lines().skip(1).take(2).collect();
        assert!(header[0].contains(" received "), "{drawn}");
        assert!(header[1].contains(" at "), "{drawn}");
        assert!(!drawn.contains("received_a"), "{drawn}");
        // Where the name fits, it is whole.
        assert!(list(&columns, &rows, Some(140), false).contains(" received_at "));
        let (columns, rows) = message_rows();
        let drawn = list(&columns, &rows, Some(80), false);
        assert!(
            drawn.contains(" contact ") && drawn.contains(" username "),
            "{drawn}"
        );
    }

    /// Ids inside nested JSON (a message's attachments, a group's members) stay
    /// whole where `get`'s table wraps the value: compact JSON was broken mid-id.
    #[test]
    fn ids_in_nested_json_stay_whole() {
        let ids = ["at0000000000000008", "at0000000000000009"];
        let attachments = serde_json::json!([
            {"created_at": 1_700_000_000, "filename": "IMG_8.jpg", "id": ids[0],
             "message_id": "ms000000000008"},
            {"created_at": 1_700_000_001, "filename": "a b c.pdf", "id": ids[1],
             "message_id": "ms000000000008"},
        ]);
        let value = cell(&attachments, true);
        assert!(
            value.starts_with(r#"[{"created_at": 1700000000, "filename": "#),
            "{value}"
        );
        for width in [40, 60, 80, 100] {
            let drawn = fields(
                vec![
                    ("id".to_owned(), "ms000000000008".to_owned()),
                    ("attachments".to_owned(), value.clone()),
                ],
                width,
            );
            for id in ids {
                assert!(drawn.contains(id), "{id} at {width}:\n{drawn}");
            }
            assert!(
                drawn
                    .lines()
                    .all(|l| l.chars().count() <= usize::from(width))
            );
        }
        // An id with hyphens where a line would end, and one wider than the width:
        // whole too, the table wider where it must be, as for an id of its own.
        let ids = [
            "msg-0001-abcdefghij-klmnopqrst-uvwxyz",
            "AAAAAAAAAABBBBBBBBBBCCCCCCCCCCDDDDDDDDDDEEEEEEEEEEFFFFFFFFFF",
        ];
        let value = cell(
            &serde_json::json!([{"id": "att-1", "message_id": ids[0]}, {"id": ids[1]}]),
            true,
        );
        for width in [40, 60, 80] {
            let drawn = fields(vec![("attachments".to_owned(), value.clone())], width);
            for id in ids {
                assert!(drawn.contains(id), "{id} at {width}:\n{drawn}");
            }
        }
        assert_eq!(widest_nested_id("plain text"), 0);
        assert_eq!(
            widest_nested_id(r#"{"a": "xyz", "b_id": "12345"}"#),
            r#""12345"}"#.len()
        );
    }

    /// `get`'s header stays whole over short names and values (it was `fiel` / `d`
    /// and `v` / `a` / `l` / `u` / `e` over `id` and `G`: a probe).
    #[test]
    fn a_short_object_s_header_is_whole() {
        for width in [20, 80, 120] {
            let drawn = fields(vec![("id".to_owned(), "G".to_owned())], width);
            let header = drawn.lines().nth(1).unwrap();
            assert!(
                header.contains("field") && header.contains("value"),
                "{drawn}"
            );
            assert_eq!(drawn.lines().count(), 5, "{drawn}");
        }
        // And within the width, beside a value that wraps (it was 2 wider).
        let long = "word ".repeat(60);
        for width in [20, 40, 80] {
            let drawn = fields(vec![("bio".to_owned(), long.clone())], width);
            assert!(
                drawn
                    .lines()
                    .all(|l| l.chars().count() <= usize::from(width)),
                "{width}:\n{drawn}"
            );
            assert!(drawn.lines().nth(1).unwrap().contains("field"), "{drawn}");
        }
    }

    /// A list's id longer than [`CUT`] is cut, so it no longer holds every row wider
    /// than the width (at 60 columns every row was 71 wide, and the id cut anyway);
    /// where the width has room for it a row at a time, it is whole; an id shown whole
    /// still is, and names wrap after their parts (`phone_` / `number`, not
    /// `phon` / `e_nu` / `mber`: a probe).
    #[test]
    fn a_cut_id_does_not_widen_rows_and_names_wrap_after_their_parts() {
        let columns = contact_columns();
        let long = "c".repeat(70);
        let fitting = "d".repeat(45);
        let row = |id: &str| {
            vec![
                Value::from(id),
                Value::from("shorty"),
                Value::Null,
                Value::from("555"),
                Value::from(1_700_000_000),
            ]
        };
        let rows = vec![row("short1"), row(&long), row(&fitting)];
        let narrow = list(&columns, &rows, Some(60), false);
        assert!(narrow.lines().all(|l| l.chars().count() <= 60), "{narrow}");
        assert!(narrow.contains(&format!(" {fitting} ")), "{narrow}");
        assert!(!narrow.contains(&long), "{narrow}");
        let names: Vec<&str> = narrow
            .lines()
            .filter_map(|l| l.strip_prefix("│ "))
            .filter_map(|l| l.split(' ').next())
            .filter(|name| !name.is_empty())
            .collect();
        for part in ["phone_", "number", "display_", "created_"] {
            assert!(names.contains(&part), "{part}: {narrow}");
        }
        let wide = list(&columns, &rows, Some(100), false);
        assert!(wide.contains(&format!(" {long} ")), "{wide}");
        assert!(wide.lines().all(|l| l.chars().count() <= 100), "{wide}");
        assert_eq!(field_name("conversation_id", 4), "conv\nersa\ntion\n_id");
        assert_eq!(field_name("phone_number", 8), "phone_\nnumber");
        assert_eq!(field_name("id", 4), "id");
    }

    /// A row with an id too wide for the width is laid out alone, its names whole:
    /// the other rows keep to the width (one such id made every row wider than the
    /// width, each name squeezed to four letters: a probe). And where the width has
    /// room, a cut id is shown whole before the text takes the room (an 80-character
    /// id was cut at 250 columns, the text beside it longer).
    #[test]
    fn only_the_row_with_a_long_id_is_wider_and_ids_take_the_room_first() {
        let columns = contact_columns();
        let long = "k".repeat(45);
        let row = |id: &str, name: &str| {
            vec![
                Value::from(id),
                Value::from("user"),
                Value::from(name),
                Value::from("555"),
                Value::from(1_700_000_000),
            ]
        };
        let rows = vec![row("short1", "a"), row(&long, "b"), row("short2", "c")];
        let drawn = list(&columns, &rows, Some(40), false);
        let tables: Vec<&str> = drawn.split_inclusive('┘').collect();
        assert_eq!(tables.len(), 3, "{drawn}");
        for (table, wider) in tables.iter().zip([false, true, false]) {
            let widest = table.lines().map(|l| l.chars().count()).max().unwrap();
            assert_eq!(widest > 40, wider, "{drawn}");
        }
        assert!(tables[1].contains(&long), "{drawn}");
        assert!(
            tables[1].contains(" display_name ") && tables[1].contains(" phone_number "),
            "the names stay whole where the line is wider anyway: {drawn}"
        );
        // `get` too: its names whole beside an id wider than the width.
        let shown = fields(
            vec![
                ("id".to_owned(), long.clone()),
                ("display_name".to_owned(), "b".to_owned()),
            ],
            40,
        );
        assert!(shown.contains(" display_name "), "{shown}");
        assert!(shown.contains(" field "), "{shown}");

        let id = "i".repeat(80);
        let text = "word ".repeat(40);
        let rows = vec![vec![
            Value::from(id.as_str()),
            Value::from("user"),
            Value::from(text.trim_end()),
            Value::from("555"),
            Value::from(1_700_000_000),
        ]];
        let wide = list(&columns, &rows, Some(250), false);
        assert!(wide.contains(&id), "{wide}");
        assert!(wide.lines().all(|l| l.chars().count() <= 250), "{wide}");
    }

    /// Rows too wide for the width come one at a time, a field a line, in tables all
    /// as wide as each other and never wider than the width.
    #[test]
    fn rows_too_wide_are_shown_one_by_one() {
        let (columns, rows) = message_rows();
        let cells = table_cells(&columns, &rows, |_| 60);
        assert!(!fits(&columns, &cells, 60));
        let drawn = one_by_one(&columns, &rows, 60);
        assert_eq!(drawn.matches('┌').count(), 3, "{drawn}");
        for n in 0..3 {
            assert!(
                drawn.contains(&format!("│ id               ┆ 8fPqIeM5cq000BP{n}")),
                "{drawn}"
            );
        }
        assert!(
            drawn.contains("│ created_at       ┆ 2023-11-14 22:13:20"),
            "{drawn}"
        );
        let widths: std::collections::BTreeSet<usize> =
            drawn.lines().map(|line| line.chars().count()).collect();
        assert_eq!(widths.len(), 1, "{drawn}");
        assert!(widths.iter().all(|&w| w <= 60), "{widths:?}");
        // No header: the field names are the first column.
        assert!(!drawn.contains("field"), "{drawn}");
    }

    /// A highlighted snippet's row was two columns short per match once its marks
    /// became colour codes: its right border out of line (found by a newcomer's probe).
    #[test]
    fn highlighted_rows_keep_the_borders_aligned() {
        let (on, off) = HIGHLIGHT;
        let columns = ["id".to_owned(), "snippet".to_owned()];
        let rows = vec![
            vec![
                Value::from("m1"),
                Value::from(format!("a {on}meeting{off} and {on}more{off}")),
            ],
            vec![Value::from("m2"), Value::from("plain text")],
        ];
        let cells = table_cells(&columns, &rows, |_| 60);
        let drawn = highlighted(&table(&columns, cells, 120).to_string());
        let plain: Vec<String> = drawn
            .lines()
            .map(|line| line.replace("\x1b[1;33m", "").replace("\x1b[0m", ""))
            .collect();
        let widths: Vec<usize> = plain.iter().map(|line| line.chars().count()).collect();
        assert!(
            widths.windows(2).all(|w| w[0] == w[1]),
            "{widths:?}\n{}",
            plain.join("\n")
        );
        assert!(drawn.contains("\x1b[1;33mmeeting\x1b[0m"), "{drawn}");
    }

    /// A match wrapped onto the next line of its row is coloured there too, and the
    /// colour never runs into padding or borders (it was closed by a stray reset
    /// mid-cell, found by a regression probe).
    #[test]
    fn a_wrapped_highlight_goes_on_in_the_next_line() {
        let (on, off) = HIGHLIGHT;
        let mut table = Table::new();
        table
            .load_preset(presets::UTF8_FULL_CONDENSED)
            .set_content_arrangement(ContentArrangement::Dynamic)
            .set_width(30)
            .set_header(["id", "snippet"]);
        table.add_row(["m1", &format!("a {on}supercalifragilistic{off} word")]);
        table.add_row(["m2", &format!("{on}cut{off}")]);
        let drawn = highlighted(&table.to_string());
        let (colour, reset) = ("\x1b[1;33m", "\x1b[0m");
        let lines: Vec<&str> = drawn.lines().collect();
        let coloured: Vec<&&str> = lines.iter().filter(|l| l.contains(colour)).collect();
        assert!(
            coloured.len() >= 3,
            "the match and its continuations:\n{drawn}"
        );
        for line in &lines {
            // Each colour is reset on its own line, before the cell's padding.
            assert_eq!(
                line.matches(colour).count(),
                line.matches(reset).count(),
                "{line}"
            );
            if let Some(at) = line.rfind(reset) {
                assert!(!line[..at].ends_with(' '), "{line:?}");
                assert!(!line[at..].contains(colour), "{line:?}");
            }
        }
        // The row after it starts uncoloured.
        let m2 = lines.iter().find(|l| l.contains("m2")).unwrap();
        assert!(m2.contains(&format!("{colour}cut{reset}")), "{m2:?}");
        let plain: Vec<usize> = lines
            .iter()
            .map(|l| l.replace(colour, "").replace(reset, "").chars().count())
            .collect();
        assert!(plain.windows(2).all(|w| w[0] == w[1]), "{plain:?}\n{drawn}");
    }
}
