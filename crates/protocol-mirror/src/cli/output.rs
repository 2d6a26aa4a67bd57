//! Printing records as a table (for people) or JSON, NDJSON and CSV (for scripts).

use std::io::{self, BufWriter, IsTerminal, StdoutLock, Write};

use comfy_table::{ColumnConstraint, ContentArrangement, Table, Width, presets};
use protocol_types::Resource;
use serde_json::Value;

/// How records are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Format {
    /// A table fitted to the terminal (long text wrapped, or cut where lists need room).
    Table,
    /// One JSON document (an array for lists).
    Json,
    /// One JSON object per line.
    Ndjson,
    /// CSV with a header row.
    Csv,
}

/// Standard output, buffered, knowing whether it is a terminal.
pub(crate) struct Out {
    w: BufWriter<StdoutLock<'static>>,
    terminal: bool,
}

impl Out {
    pub(crate) fn new() -> Out {
        let stdout = io::stdout();
        let terminal = stdout.is_terminal();
        Out {
            w: BufWriter::new(stdout.lock()),
            terminal,
        }
    }

    pub(crate) fn is_terminal(&self) -> bool {
        self.terminal
    }

    pub(crate) fn line(&mut self, text: &str) -> io::Result<()> {
        writeln!(self.w, "{text}")
    }

    pub(crate) fn flush(&mut self) -> io::Result<()> {
        self.w.flush()
    }

    /// Prints the `index`th object of a list (JSON or NDJSON) printed one at a time,
    /// exactly as [`Out::records`] prints a whole list; [`Out::end_objects`] ends it.
    pub(crate) fn next_object(
        &mut self,
        format: Format,
        index: usize,
        object: &Value,
    ) -> io::Result<()> {
        match format {
            Format::Json => {
                // `to_writer_pretty` of an array: each element two spaces in.
                self.w.write_all(if index == 0 { b"[\n" } else { b",\n" })?;
                let pretty = serde_json::to_string_pretty(object)?;
                for (i, line) in pretty.lines().enumerate() {
                    if i > 0 {
                        self.w.write_all(b"\n")?;
                    }
                    write!(self.w, "  {line}")?;
                }
                Ok(())
            }
            _ => {
                serde_json::to_writer(&mut self.w, object)?;
                writeln!(self.w)
            }
        }
    }

    /// Ends a list printed by [`Out::next_object`], after `count` objects.
    pub(crate) fn end_objects(&mut self, format: Format, count: usize) -> io::Result<()> {
        match (format, count) {
            (Format::Json, 0) => writeln!(self.w, "[]"),
            (Format::Json, _) => writeln!(self.w, "\n]"),
            _ => Ok(()),
        }
    }

    /// Prints rows: `columns` and `rows` for table and CSV, `objects` for JSON and
    /// NDJSON (`single` prints one object instead of an array).
    pub(crate) fn records(
        &mut self,
        format: Format,
        columns: &[String],
        rows: &[Vec<Value>],
        objects: &[Value],
        single: bool,
    ) -> io::Result<()> {
        match format {
            Format::Json => {
                if single && objects.len() == 1 {
                    serde_json::to_writer_pretty(&mut self.w, &objects[0])?;
                } else {
                    serde_json::to_writer_pretty(&mut self.w, objects)?;
                }
                writeln!(self.w)?;
            }
            Format::Ndjson => {
                for object in objects {
                    serde_json::to_writer(&mut self.w, object)?;
                    writeln!(self.w)?;
                }
            }
            Format::Csv => {
                let mut csv = csv::Writer::from_writer(&mut self.w);
                csv.write_record(columns).map_err(csv_error)?;
                for row in rows {
                    csv.write_record(row.iter().map(|v| cell(v, false)))
                        .map_err(csv_error)?;
                }
                csv.flush()?;
            }
            Format::Table => {
                // A list's cells are cut (one object, `get`, is shown whole by
                // `Out::fields`).
                let cells = table_cells(columns, rows, 60);
                let given = self.given_width();
                let width = given.unwrap_or(DEFAULT_WIDTH);
                // A row at a time is for a reader of that width: output to a file or a
                // pipe with no width given keeps a row a line, for `grep` and the like.
                let drawn = if given.is_none() || fits(columns, &cells, width) {
                    table(columns, cells, width).to_string()
                } else if cells.rows.is_empty() {
                    // A list of nothing still shows its header, as it can.
                    plain_table(columns, cells.rows, width).to_string()
                } else {
                    one_by_one(columns, cells, width)
                };
                writeln!(self.w, "{}", highlighted(&drawn))?;
            }
        }
        Ok(())
    }

    /// Prints rows of a result set: JSON and NDJSON objects keep the columns' order,
    /// and a name that comes again gets a suffix (`a`, `a_2`), so that no value is
    /// lost to a duplicate key; table and CSV print the columns as they are.
    pub(crate) fn result_set(
        &mut self,
        format: Format,
        columns: &[String],
        rows: &[Vec<Value>],
    ) -> io::Result<()> {
        let keys = unique_keys(columns);
        let objects: Vec<Ordered<'_>> = rows
            .iter()
            .map(|values| Ordered {
                keys: &keys,
                values,
            })
            .collect();
        match format {
            Format::Json => {
                serde_json::to_writer_pretty(&mut self.w, &objects)?;
                writeln!(self.w)
            }
            Format::Ndjson => {
                for object in &objects {
                    serde_json::to_writer(&mut self.w, object)?;
                    writeln!(self.w)?;
                }
                Ok(())
            }
            Format::Csv | Format::Table => self.records(format, columns, rows, &[], false),
        }
    }

    /// Prints one row of a result set printed as it is read (JSON, NDJSON, CSV: see
    /// [`ResultStream`]).
    pub(crate) fn stream_row(
        &mut self,
        stream: &mut ResultStream,
        columns: &[String],
        values: &[Value],
    ) -> io::Result<()> {
        if stream.keys.is_none() {
            stream.keys = Some(unique_keys(columns));
            match stream.format {
                Format::Json => writeln!(self.w, "[")?,
                Format::Csv => csv_line(&mut self.w, columns.iter().map(String::as_str))?,
                Format::Ndjson | Format::Table => {}
            }
        } else if stream.format == Format::Json {
            writeln!(self.w, ",")?;
        }
        let keys = stream.keys.as_deref().unwrap_or_default();
        let object = Ordered { keys, values };
        match stream.format {
            Format::Json => {
                // As an element of a pretty array: indented by two spaces.
                let text = serde_json::to_string_pretty(&object)?;
                for (i, line) in text.lines().enumerate() {
                    if i > 0 {
                        writeln!(self.w)?;
                    }
                    write!(self.w, "  {line}")?;
                }
            }
            Format::Ndjson => {
                serde_json::to_writer(&mut self.w, &object)?;
                writeln!(self.w)?;
            }
            Format::Csv => {
                let cells: Vec<String> = values.iter().map(|v| cell(v, false)).collect();
                csv_line(&mut self.w, cells.iter().map(String::as_str))?;
            }
            Format::Table => {}
        }
        Ok(())
    }

    /// Ends a streamed result set: what a result of no rows prints (`[]`, the CSV
    /// header), or the end of the JSON array.
    pub(crate) fn stream_end(
        &mut self,
        stream: &ResultStream,
        columns: &[String],
    ) -> io::Result<()> {
        match (stream.format, &stream.keys) {
            (Format::Json, None) => writeln!(self.w, "[]"),
            (Format::Json, Some(_)) => write!(self.w, "\n]\n"),
            (Format::Csv, None) => csv_line(&mut self.w, columns.iter().map(String::as_str)),
            _ => Ok(()),
        }
    }

    /// The width tables are fitted to: the terminal's; a terminal that says it is 0
    /// columns wide (`docker exec -t`, some CI and editor shells) drew every column one
    /// character wide. Not on a terminal: the width `COLUMNS` says, as `ls` and others
    /// take it, else 120.
    fn table_width(&self) -> u16 {
        self.given_width().unwrap_or(DEFAULT_WIDTH)
    }

    /// The width of the terminal, or the one `COLUMNS` gives; `None` when neither
    /// says one (output to a file or a pipe, with no `COLUMNS`).
    fn given_width(&self) -> Option<u16> {
        let terminal = Table::new()
            .width()
            .filter(|&width| self.terminal && width > 0);
        terminal.or_else(|| {
            std::env::var("COLUMNS")
                .ok()
                .and_then(|c| c.trim().parse::<u16>().ok())
                .filter(|&c| c > 0)
        })
    }

    /// Prints one object (`get`) as a table of its fields, one per row, under a header,
    /// laid out as [`one_by_one`] lays out each row of a list.
    pub(crate) fn fields(&mut self, fields: Vec<(String, String)>) -> io::Result<()> {
        let width = self.table_width();
        let (names, values): (Vec<String>, Vec<String>) = fields.into_iter().unzip();
        let cells = Cells::new(&names, vec![values]);
        let layout = FieldLayout::new(&names, &cells, width);
        let values = cells.rows.into_iter().next().unwrap_or_default();
        let mut table = layout.table(&names, values, width);
        table.set_header(["field", "value"]);
        writeln!(self.w, "{}", highlighted(&table.to_string()))
    }
}

/// The width of tables when neither a terminal nor `COLUMNS` gives one.
const DEFAULT_WIDTH: u16 = 120;

/// A table of `cells` under `columns`, fitted to `width`, each column at least as wide
/// as [`narrowest_widths`] says: ids are what people copy from a table (into `get`,
/// `--conversation`), never broken across lines (at 80 columns a message's id and
/// conversation id came out in two pieces each), and times keep their date on one
/// line; the other columns wrap instead.
fn table(columns: &[String], cells: Cells, width: u16) -> Table {
    let mut table = plain_table(columns, cells.rows, width);
    for (index, narrowest) in cells.narrowest.into_iter().enumerate() {
        if let Some(column) = table.column_mut(index) {
            column.set_constraint(ColumnConstraint::LowerBoundary(padded(narrowest)));
        }
    }
    table
}

/// A table of `cells` under `columns`, fitted to `width` as the table can.
fn plain_table(columns: &[String], cells: Vec<Vec<String>>, width: u16) -> Table {
    let mut table = bare_table(width);
    table.set_header(columns.iter().map(|c| shown_in_one_line(c)));
    for row in cells {
        table.add_row(row);
    }
    table
}

/// A column of `content` characters, as a width that counts its padding.
fn padded(content: usize) -> Width {
    Width::Fixed(u16::try_from(content.saturating_add(2)).unwrap_or(u16::MAX))
}

/// Rows too many columns wide for the width, one after another, each as a table of its
/// fields (as `get` shows an object), all as wide: at 60 columns, a list of messages
/// drew its text four characters wide, and the event log one character wide.
fn one_by_one(columns: &[String], cells: Cells, width: u16) -> String {
    let names: Vec<String> = columns.iter().map(|c| shown_in_one_line(c)).collect();
    let layout = FieldLayout::new(columns, &cells, width);
    let drawn: Vec<String> = cells
        .rows
        .into_iter()
        .map(|row| layout.table(&names, row, width).to_string())
        .collect();
    drawn.join("\n")
}

/// The widths of a table of fields, a field a line (`get`, and each row of
/// [`one_by_one`]), in characters without padding: the values as wide as the widest
/// (within the width), and never narrower than an id or a date among them, even
/// where that is wider than the width (a terminal wraps a long line whole; a table
/// broke the id in two); then the names take what is left, wrapping if they must.
struct FieldLayout {
    names: usize,
    values: usize,
}

impl FieldLayout {
    /// The layout for rows of values (`cells`) under the field names `names`.
    fn new(names: &[String], cells: &Cells, width: u16) -> FieldLayout {
        let kept_whole = names
            .iter()
            .zip(&cells.narrowest)
            .filter(|(name, _)| is_id_column(name) || is_time_column(name))
            .map(|(_, &narrowest)| narrowest)
            .max()
            .unwrap_or(0);
        let name_width = names
            .iter()
            .map(|n| shown_width(&shown_in_one_line(n)))
            .max()
            .unwrap_or(0);
        let widest_value = cells
            .rows
            .iter()
            .flatten()
            .map(|text| shown_width(text))
            .max()
            .unwrap_or(0);
        // Borders and padding: `│ name ┆ value │`.
        let room = usize::from(width).saturating_sub(7);
        let values = widest_value
            .min(room.saturating_sub(name_width))
            .max(kept_whole)
            .max(1);
        let names = name_width.min(room.saturating_sub(values)).max(4);
        FieldLayout { names, values }
    }

    /// One table of `values` under the field names `names`.
    fn table(&self, names: &[String], values: Vec<String>, width: u16) -> Table {
        let mut table = bare_table(width);
        for (name, text) in names.iter().zip(values) {
            table.add_row([name.clone(), text]);
        }
        for (index, content) in [self.names, self.values].into_iter().enumerate() {
            if let Some(column) = table.column_mut(index) {
                column.set_constraint(ColumnConstraint::Absolute(padded(content)));
            }
        }
        table
    }
}

/// A table without a header yet, fitted to `width`.
fn bare_table(width: u16) -> Table {
    let mut table = Table::new();
    table
        .load_preset(presets::UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_width(width);
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

/// How many terminal columns `text` takes (a CJK character or an emoji two).
fn shown_width(text: &str) -> usize {
    unicode_width::UnicodeWidthStr::width(text)
}

/// A table's cells as text, a row each, and the narrowest each column may be drawn
/// ([`narrowest_widths`]), worked out once for the fit and the layout.
struct Cells {
    rows: Vec<Vec<String>>,
    narrowest: Vec<usize>,
}

impl Cells {
    fn new(columns: &[String], rows: Vec<Vec<String>>) -> Cells {
        let narrowest = narrowest_widths(columns, &rows);
        Cells { rows, narrowest }
    }
}

/// The narrowest each column of a table of `cells` is drawn, before a list is shown a
/// row at a time instead ([`one_by_one`]): ids whole (their header may wrap),
/// times as wide as their date (`2024-05-01`), others 6 characters (narrower, words
/// come out a few letters a line); none wider than all it holds.
fn narrowest_widths(columns: &[String], cells: &[Vec<String>]) -> Vec<usize> {
    const OTHERS: usize = 6;
    const TIMES: usize = 10;
    columns
        .iter()
        .enumerate()
        .map(|(index, name)| {
            let cell = cells
                .iter()
                .filter_map(|row| row.get(index))
                .map(|text| shown_width(text))
                .max()
                .unwrap_or(0);
            let widest = cell.max(shown_width(&shown_in_one_line(name)));
            if is_id_column(name) {
                cell.max(widest.min(OTHERS))
            } else if is_time_column(name) {
                widest.min(TIMES)
            } else {
                widest.min(OTHERS)
            }
        })
        .collect()
}

/// The text of each cell of a table: times in UTC, other values as [`cell`] shows them
/// on one line, cut at `most` characters.
fn table_cells(columns: &[String], rows: &[Vec<Value>], most: usize) -> Cells {
    let text = rows
        .iter()
        .map(|row| {
            row.iter()
                .zip(columns)
                .map(|(value, column)| {
                    let text = time_in_table(column, value).unwrap_or_else(|| cell(value, true));
                    truncate(&text, most)
                })
                .collect()
        })
        .collect();
    Cells::new(columns, text)
}

/// Whether a table of `cells` fits in `width` with every column at least as wide as
/// [`narrowest_widths`] says.
fn fits(columns: &[String], cells: &Cells, width: u16) -> bool {
    let needed: usize = cells.narrowest.iter().sum();
    // Each column's padding and border, and the last border.
    let drawn = needed + 3 * columns.len() + 1;
    drawn <= usize::from(width)
}

/// A CSV writer's error as the I/O error it wraps, if it is one (so that a closed pipe
/// is still recognised as one), else as an I/O error of its own.
fn csv_error(error: csv::Error) -> io::Error {
    if error.is_io_error()
        && let csv::ErrorKind::Io(io) = error.into_kind()
    {
        return io;
    }
    io::Error::other("writing CSV failed")
}

/// A value as a cell: strings as they are, null empty, the rest as compact JSON.
fn cell(value: &Value, one_line: bool) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(s) if one_line => shown_in_one_line(s),
        Value::String(s) => s.clone(),
        // Compact JSON escapes only C0 controls: DEL, C1 controls (an 8-bit CSI) and
        // bidirectional overrides in a nested string reached the terminal raw.
        other if one_line => shown_in_one_line(&other.to_string()),
        other => other.to_string(),
    }
}

/// Where a table cell's highlight starts and ends (`search`'s matches on a terminal):
/// private-use characters that [`shown_in_one_line`] lets through, turned into
/// terminal colours only once the table is drawn, so that the text's own control
/// characters never reach the terminal.
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
            '\0'..='\u{1f}' => char::from_u32(0x2400 + c as u32).unwrap_or('\u{fffd}'),
            '\u{7f}' => '\u{2421}',
            c if c.is_control() || is_bidi_control(c) => '\u{fffd}',
            c => c,
        })
        .collect()
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

/// Cuts `text` to `max` characters, ending with an ellipsis when cut.
pub(crate) fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_owned()
    } else {
        let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
        cut.push('…');
        cut
    }
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
/// before 1970 and past 9999 too).
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
            let (h, m, s) = (hms.next()?, hms.next()?, hms.next()?);
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

/// The columns a table shows for `resource` (the CSV has every documented field, and
/// [`objects`] adds the other keys the objects have).
pub(crate) fn columns(resource: Resource, format: Format) -> &'static [&'static str] {
    match (resource, format) {
        (Resource::Contact, Format::Table) => &[
            "id",
            "username",
            "display_name",
            "phone_number",
            "created_at",
        ],
        (Resource::Contact, _) => &[
            "id",
            "username",
            "phone_number",
            "avatar_url",
            "display_name",
            "conversation_id",
            "last_active_at",
            "created_at",
        ],
        (Resource::Conversation, Format::Table) => &[
            "id",
            "contact_id",
            "group_id",
            "is_muted",
            "is_pinned",
            "last_active_at",
        ],
        (Resource::Conversation, _) => &[
            "id",
            "contact_id",
            "group_id",
            "pinned_message_id",
            "is_pinned",
            "is_muted",
            "last_active_at",
            "last_opened_at",
            "created_at",
            "archived_at",
        ],
        (Resource::Message, Format::Table) => &[
            "id",
            "conversation_id",
            "contact.username",
            "message",
            "created_at",
        ],
        (Resource::Message, _) => &[
            "id",
            "conversation_id",
            "contact",
            "message",
            "reactions",
            "attachments",
            "read_at",
            "created_at",
            "updated_at",
        ],
        (Resource::Group, Format::Table) => {
            &["id", "name", "description", "conversation_id", "created_at"]
        }
        (Resource::Group, _) => &[
            "id",
            "name",
            "description",
            "avatar_url",
            "conversation_id",
            "contacts",
            "created_at",
            "archived_at",
        ],
        (Resource::Attachment, Format::Table) => &[
            "id",
            "message_id",
            "filename",
            "file_type",
            "file_size",
            "created_at",
        ],
        (Resource::Attachment, _) => &[
            "id",
            "message_id",
            "filename",
            "file_url",
            "file_type",
            "file_size",
            "created_at",
        ],
    }
}

/// The value at a dotted `path` of an object (`contact.username`), or null.
pub(crate) fn pick(object: &Value, path: &str) -> Value {
    path.split('.')
        .try_fold(object, |v, key| v.get(key))
        .cloned()
        .unwrap_or(Value::Null)
}

/// Prints Protocol objects of `resource`.
pub(crate) fn objects(
    out: &mut Out,
    format: Format,
    resource: Resource,
    objects: &[Value],
    single: bool,
) -> io::Result<()> {
    if let ([object], true, Format::Table) = (objects, single, format) {
        return one_object_table(out, resource, object);
    }
    let documented = columns(resource, format);
    let mut names: Vec<String> = documented.iter().map(|c| (*c).to_owned()).collect();
    let others = match format {
        Format::Csv => other_keys(objects, &names),
        _ => Vec::new(),
    };
    let rows: Vec<Vec<Value>> = objects
        .iter()
        .map(|o| {
            let known = documented.iter().map(|c| pick(o, c));
            let other = others
                .iter()
                .map(|k| o.get(k).cloned().unwrap_or(Value::Null));
            known.chain(other).collect()
        })
        .collect();
    names.extend(others);
    out.records(format, &names, &rows, objects, single)
}

/// One object (`get`) as a table of its fields, one per row: every key it has, the
/// documented ones first, times in UTC (a list's few columns left most of a message
/// out: its attachments, reactions, read and update times).
fn one_object_table(out: &mut Out, resource: Resource, object: &Value) -> io::Result<()> {
    let documented: Vec<String> = columns(resource, Format::Csv)
        .iter()
        .map(|c| (*c).to_owned())
        .collect();
    let others = other_keys(std::slice::from_ref(object), &documented);
    let fields = documented
        .iter()
        .chain(&others)
        .filter_map(|key| {
            let value = object.get(key)?;
            let shown = time_in_table(key, value).unwrap_or_else(|| cell(value, true));
            Some((shown_in_one_line(key), shown))
        })
        .collect();
    out.fields(fields)
}

/// The top-level keys of `objects` that are not among `columns` (fields Protocol
/// added after this version, kept in the replica), sorted: CSV, like JSON, prints
/// every key received.
fn other_keys(objects: &[Value], columns: &[String]) -> Vec<String> {
    let keys: std::collections::BTreeSet<&String> = objects
        .iter()
        .filter_map(Value::as_object)
        .flat_map(|o| o.keys())
        .filter(|k| !columns.contains(k))
        .collect();
    keys.into_iter().cloned().collect()
}

/// One row as a JSON object whose keys keep their order.
struct Ordered<'a> {
    keys: &'a [String],
    values: &'a [Value],
}

impl serde::Serialize for Ordered<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(self.keys.len()))?;
        for (key, value) in self.keys.iter().zip(self.values) {
            map.serialize_entry(key, value)?;
        }
        map.end()
    }
}

/// A result set printed as it is read, in constant memory (a table needs every row
/// first, for its column widths: [`Out::result_set`]).
pub(crate) struct ResultStream {
    format: Format,
    /// The object keys, once the first row is printed.
    keys: Option<Vec<String>>,
}

impl ResultStream {
    /// A stream in `format` (JSON, NDJSON or CSV).
    pub(crate) fn new(format: Format) -> ResultStream {
        ResultStream { format, keys: None }
    }
}

/// One CSV record, into `w`'s buffer (a `csv::Writer` on `w` itself would flush `w`
/// at every record: a write call per row).
fn csv_line<'a>(w: &mut impl Write, fields: impl Iterator<Item = &'a str>) -> io::Result<()> {
    let mut csv = csv::Writer::from_writer(Vec::new());
    csv.write_record(fields).map_err(csv_error)?;
    let line = csv.into_inner().map_err(|e| e.into_error())?;
    w.write_all(&line)
}

/// Column names made unique: the second `a` becomes `a_2` (or `a_3`, if a column is
/// named `a_2`), the first keeps its name.
fn unique_keys(columns: &[String]) -> Vec<String> {
    let mut used: std::collections::HashSet<String> = columns.iter().cloned().collect();
    let mut first = std::collections::HashSet::new();
    columns
        .iter()
        .map(|name| {
            if first.insert(name.as_str()) {
                return name.clone();
            }
            let key = (2..)
                .map(|n| format!("{name}_{n}"))
                .find(|key| !used.contains(key))
                .expect("some suffix is free");
            used.insert(key.clone());
            key
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
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

    /// Terminal control characters from a message were written to the terminal as they
    /// were: colours, a retitled window, a bell (found by a black-box probe).
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
        for bad in [
            "2024-02-30",
            "2023-02-29",
            "2024-13-01",
            "2024-1-01",
            "2024-05-01 24:00:00",
            "2024-05-01 12:00",
            "x",
            "",
            "2024-05-01 12:00:00:00",
            "+2024-05-01",
        ] {
            assert_eq!(parse_utc(bad), None, "{bad}");
        }
    }

    #[test]
    fn table_cells_show_control_characters_instead_of_acting_on_them() {
        let shown =
            shown_in_one_line("red \u{1b}[31mRED\u{1b}]0;t\u{7}\u{8}\u{7f}\u{9b}\u{202e}x\ny\tz é");
        assert_eq!(shown, "red ␛[31mRED␛]0;t␇␈␡��x y z é");
        assert!(!shown.chars().any(char::is_control));
        // Nested values are compact JSON, which escapes only C0 controls.
        let nasty = "\u{7f}\u{85}\u{9b}2J\u{202e}\u{200f}\u{2066}\u{2028}";
        let nested = cell(&serde_json::json!({"a": [nasty]}), true);
        assert_eq!(nested, "{\"a\":[\"␡��2J��� \"]}");
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

    /// `rows` drawn as a table that fits in `width` (checked).
    fn fitting_table(columns: &[String], rows: &[Vec<Value>], width: u16) -> String {
        let cells = table_cells(columns, rows, 60);
        assert!(fits(columns, &cells, width));
        let drawn = table(columns, cells, width).to_string();
        let width = usize::from(width);
        assert!(
            drawn.lines().all(|line| line.chars().count() <= width),
            "{drawn}"
        );
        drawn
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
        let cells = table_cells(&columns, &rows, 60);
        let drawn = table(&columns, cells, 60).to_string();
        assert!(
            drawn.contains("会話会話会話会話会話会話会話会話"),
            "{drawn}"
        );
    }

    /// Where even a row at a time cannot keep an id whole in the width, the id stays
    /// whole and the line is wider (a terminal wraps it whole); the field names wrap
    /// first. A list of nothing still fits its header to the width.
    #[test]
    fn narrow_widths_keep_ids_whole_and_empty_lists_fit() {
        let (columns, rows) = message_rows();
        let cells = table_cells(&columns, &rows, 60);
        let drawn = one_by_one(&columns, cells, 30);
        assert!(drawn.contains("8fPqIeM5cq000BP0"), "{drawn}");
        assert!(drawn.contains("2023-11-14"), "{drawn}");
        let id_line = drawn
            .lines()
            .find(|l| l.contains("8fPqIeM5cq000BP0"))
            .unwrap();
        assert_eq!(id_line.chars().count(), 30, "the names gave way: {drawn}");
        let cells = table_cells(&columns, &[], 60);
        assert!(!fits(&columns, &cells, 30));
        let empty = plain_table(&columns, cells.rows, 30).to_string();
        assert!(empty.lines().all(|l| l.chars().count() <= 30), "{empty}");
    }

    /// Rows too wide for the width come one at a time, a field a line, in tables all
    /// as wide as each other and never wider than the width.
    #[test]
    fn rows_too_wide_are_shown_one_by_one() {
        let (columns, rows) = message_rows();
        let cells = table_cells(&columns, &rows, 60);
        assert!(!fits(&columns, &cells, 60));
        let drawn = one_by_one(&columns, cells, 60);
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
        let cells = table_cells(&columns, &rows, 60);
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

    #[test]
    fn result_set_keys_are_unique_and_keep_their_order() {
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            unique_keys(&names(&["a", "a", "a_2", "b", "a"])),
            names(&["a", "a_3", "a_2", "b", "a_4"])
        );
        let keys = names(&["z", "a"]);
        let values = [Value::from(1), Value::from("x")];
        let row = Ordered {
            keys: &keys,
            values: &values,
        };
        assert_eq!(serde_json::to_string(&row).unwrap(), r#"{"z":1,"a":"x"}"#);
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
    }

    #[test]
    fn pick_follows_paths() {
        let v = serde_json::json!({"contact": {"username": "k"}});
        assert_eq!(pick(&v, "contact.username"), "k");
        assert_eq!(pick(&v, "contact.id"), Value::Null);
    }
}
