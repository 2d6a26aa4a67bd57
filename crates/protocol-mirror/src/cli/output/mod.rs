//! Printing records as a table (for people) or JSON, NDJSON and CSV (for scripts).

use std::io::{self, BufWriter, IsTerminal, StdoutLock, Write};

use comfy_table::Table;
use protocol_types::Resource;
use serde_json::Value;

mod table;
mod text;

pub(crate) use table::HIGHLIGHT;
pub(crate) use text::{
    breaks_a_line, format_time, is_bidi_control, parse_utc, shown_in_one_line, shown_width,
    size_in_table, time_in_table, truncate,
};

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

/// How many rows a table is drawn of at once: a longer list or result set is printed as
/// tables of this many rows, one after another, each with its header and its own
/// column widths (as psql's `FETCH_COUNT` does), so that memory stays bounded. Drawn
/// whole, `sql` of a billion generated rows grew until the kernel killed it (24 GB),
/// and `events --limit 1000000` took 1.26 GB (a black-box probe).
pub(crate) const TABLE_BLOCK: usize = 1000;

/// Rows gathered for printing a block of [`TABLE_BLOCK`] at a time: [`Blocks::push`]
/// hands each full block to its printer, [`Blocks::finish`] the rest (or, when there
/// were no rows at all, an empty block, so that an empty table still has its header).
pub(crate) struct Blocks<T> {
    block: Vec<T>,
    printed: usize,
}

impl<T> Blocks<T> {
    pub(crate) fn new() -> Blocks<T> {
        Blocks {
            block: Vec::new(),
            printed: 0,
        }
    }

    /// Adds `row`; a full block is given to `print` with how many rows came before it.
    pub(crate) fn push(
        &mut self,
        row: T,
        print: impl FnOnce(&[T], usize) -> io::Result<()>,
    ) -> io::Result<()> {
        self.block.push(row);
        if self.block.len() == TABLE_BLOCK {
            print(&self.block, self.printed)?;
            self.printed += self.block.len();
            self.block.clear();
        }
        Ok(())
    }

    /// Gives `print` what is left (an empty block if there were no rows); returns how
    /// many rows there were.
    pub(crate) fn finish(
        mut self,
        print: impl FnOnce(&[T], usize) -> io::Result<()>,
    ) -> io::Result<usize> {
        if !self.block.is_empty() || self.printed == 0 {
            print(&self.block, self.printed)?;
            self.printed += self.block.len();
            self.block.clear();
        }
        Ok(self.printed)
    }
}

/// Standard output whose errors say they are its own: "No space left on device"
/// alone (`list > /dev/full`) sent a user to look at the database's disk. The error's
/// kind is kept (a closed pipe is still one).
pub(crate) struct Stdout(StdoutLock<'static>);

impl Stdout {
    pub(crate) fn lock() -> Stdout {
        Stdout(io::stdout().lock())
    }
}

impl Write for Stdout {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf).map_err(writing_the_output)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush().map_err(writing_the_output)
    }
}

/// `error`, said to be one of writing standard output.
fn writing_the_output(error: io::Error) -> io::Error {
    io::Error::new(error.kind(), format!("writing the output: {error}"))
}

/// Standard output, buffered, knowing whether it is a terminal.
pub(crate) struct Out {
    w: BufWriter<text::ControlsShown<Stdout>>,
    terminal: bool,
    /// Whether tables colour [`HIGHLIGHT`] marks (`search` on a terminal).
    highlights: bool,
}

impl Out {
    /// Standard output for records in `format`: on a terminal, the characters a
    /// terminal would act on rather than show are written as stand-ins in CSV, as
    /// tables show them, and as escapes in JSON ([`text::ControlsShown`]).
    pub(crate) fn new(format: Format) -> Out {
        let terminal = io::stdout().is_terminal();
        let controls = match format {
            _ if !terminal => text::Controls::Raw,
            Format::Csv => text::Controls::StandIns,
            Format::Json | Format::Ndjson => text::Controls::JsonEscapes,
            Format::Table => text::Controls::Raw,
        };
        Out {
            terminal,
            w: BufWriter::new(text::ControlsShown::new(Stdout::lock(), controls)),
            highlights: false,
        }
    }

    /// Has tables colour [`HIGHLIGHT`] marks: for `search`, which puts them there and
    /// keeps the text's own out.
    pub(crate) fn colour_highlights(&mut self) {
        self.highlights = true;
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
                let drawn = table::list(columns, rows, self.given_width(), self.highlights);
                writeln!(self.w, "{drawn}")?;
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

    /// The width tables are fitted to: the terminal's (a terminal that says it is 0
    /// columns wide, as `docker exec -t` and some CI and editor shells do, drew every
    /// column one character wide), or the one `COLUMNS` gives, as `ls` and others take
    /// it, else for a terminal 120; `None` for output to a file or a pipe with no
    /// `COLUMNS`: tables are then not fitted to any width.
    fn given_width(&self) -> Option<u16> {
        let terminal = Table::new()
            .width()
            .filter(|&width| self.terminal && width > 0);
        let columns = || {
            std::env::var("COLUMNS")
                .ok()
                .and_then(|c| c.trim().parse::<u16>().ok())
                .filter(|&c| c > 0)
        };
        terminal
            .or_else(columns)
            .or_else(|| self.terminal.then_some(DEFAULT_WIDTH))
    }

    /// Prints one object (`get`) as a table of its fields, one per row, under a header,
    /// laid out as a list too wide for its width lays out each row ([`table::fields`]).
    pub(crate) fn fields(&mut self, fields: Vec<(String, String)>) -> io::Result<()> {
        let width = self.given_width().unwrap_or(DEFAULT_WIDTH);
        writeln!(self.w, "{}", table::fields(fields, width))
    }
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

/// The width tables are fitted to where none is given: on a terminal that says none (0
/// columns) and has no `COLUMNS` (unfitted, a regression probe's lines were up to 296
/// wide), and for `get` in a file or a pipe (its values are not cut).
const DEFAULT_WIDTH: u16 = 120;

/// A value as a cell: strings as they are, null empty, the rest as compact JSON; in
/// one line for a table, with a space after each `,` and `:` of nested JSON, where
/// a table may wrap it (wrapped anywhere, compact JSON broke the ids of a message's
/// attachments in two: a new user's probe).
fn cell(value: &Value, one_line: bool) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(s) if one_line => shown_in_one_line(s),
        Value::String(s) => s.clone(),
        // JSON escapes only C0 controls: DEL, C1 controls (an 8-bit CSI) and
        // bidirectional overrides in a nested string reached the terminal raw.
        other if one_line => shown_in_one_line(&spaced_json(other)),
        other => other.to_string(),
    }
}

/// `value` as JSON in one line, with a space after each `,` and `:` between values.
fn spaced_json(value: &Value) -> String {
    use serde::Serialize;
    let mut serializer = serde_json::Serializer::with_formatter(Vec::new(), Spaced);
    // Writing a `Value` to memory cannot fail, and JSON is UTF-8.
    match value.serialize(&mut serializer) {
        Ok(()) => String::from_utf8(serializer.into_inner()).unwrap_or_default(),
        Err(_) => value.to_string(),
    }
}

/// A JSON formatter that writes `[1, 2]` and `{"a": 1, "b": 2}`.
struct Spaced;

impl serde_json::ser::Formatter for Spaced {
    fn begin_array_value<W: ?Sized + Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        if first { Ok(()) } else { w.write_all(b", ") }
    }

    fn begin_object_key<W: ?Sized + Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        if first { Ok(()) } else { w.write_all(b", ") }
    }

    fn begin_object_value<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        w.write_all(b": ")
    }
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
        .map(|o| object_row(documented, others.iter().map(String::as_str), o))
        .collect();
    names.extend(others);
    out.records(format, &names, &rows, objects, single)
}

/// An object's row: its `documented` fields, then its values of `others`.
fn object_row<'a>(
    documented: &[&str],
    others: impl Iterator<Item = &'a str>,
    object: &Value,
) -> Vec<Value> {
    let known = documented.iter().map(|c| pick(object, c));
    let other = others.map(|k| object.get(k).cloned().unwrap_or(Value::Null));
    known.chain(other).collect()
}

/// Objects of a resource printed as CSV a row at a time, in constant memory: the
/// caller finds the keys beyond the documented fields first ([`CsvObjects::note_keys`]
/// over every object's stored text), then prints the header and each row.
pub(crate) struct CsvObjects {
    documented: &'static [&'static str],
    others: std::collections::BTreeSet<String>,
}

impl CsvObjects {
    pub(crate) fn new(resource: Resource) -> CsvObjects {
        CsvObjects {
            documented: columns(resource, Format::Csv),
            others: std::collections::BTreeSet::new(),
        }
    }

    /// Notes the keys of an object, given as its stored JSON text, that are not
    /// documented fields (the first pass). Text that is no object is left to the
    /// second pass to report.
    pub(crate) fn note_keys(&mut self, stored: &str) {
        type Keys = std::collections::BTreeMap<String, serde::de::IgnoredAny>;
        if let Ok(keys) = serde_json::from_str::<Keys>(stored) {
            for key in keys.into_keys() {
                if !self.documented.contains(&key.as_str()) {
                    self.others.insert(key);
                }
            }
        }
    }

    /// Notes the keys of `object` that are not documented fields.
    pub(crate) fn note_object_keys(&mut self, object: &Value) {
        if let Some(object) = object.as_object() {
            for key in object.keys() {
                if !self.documented.contains(&key.as_str()) {
                    self.others.insert(key.clone());
                }
            }
        }
    }

    /// Prints the header: the documented fields, then the other keys, sorted.
    pub(crate) fn header(&self, out: &mut Out) -> io::Result<()> {
        let names = self
            .documented
            .iter()
            .copied()
            .chain(self.others.iter().map(String::as_str));
        csv_line(&mut out.w, names)
    }

    /// Prints `object`'s row.
    pub(crate) fn row(&self, out: &mut Out, object: &Value) -> io::Result<()> {
        let others = self.others.iter().map(String::as_str);
        let cells: Vec<String> = object_row(self.documented, others, object)
            .iter()
            .map(|v| cell(v, false))
            .collect();
        csv_line(&mut out.w, cells.iter().map(String::as_str))
    }
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
    fn pick_follows_paths() {
        let v = serde_json::json!({"contact": {"username": "k"}});
        assert_eq!(pick(&v, "contact.username"), "k");
        assert_eq!(pick(&v, "contact.id"), Value::Null);
    }
}
