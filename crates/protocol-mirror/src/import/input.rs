//! The input side of an import: a reading thread splits the input into lines (a
//! buffer at a time, never holding a line over the limit), a parsing thread parses
//! them, and the applying thread takes them in order through a [`Reader`], with the
//! bytes parsed ahead of it bounded ([`PARSED_AHEAD_BYTES`]).

use std::io::BufRead;
use std::sync::{Arc, Condvar, Mutex, mpsc};

use protocol_types::EventError;

use crate::apply::Delivery;

/// Starts the reading and parsing threads on `input`; the applying thread takes their
/// lines from the [`Reader`] returned. They end once the input ends, or once the
/// reader is dropped and they have something to hand on: they are not waited for, as
/// a read of a quiet pipe may block for ever (an import that failed beside a quiet
/// `tail -f` waited for its input to end before it said so, deaf to Ctrl-C; a
/// review).
pub(super) fn pipeline<R: BufRead + Send + 'static>(input: R, max_line_bytes: usize) -> Reader {
    let (lines, to_parse) = mpsc::sync_channel::<Vec<Line>>(BUFFERS_AHEAD);
    let (send_parsed, parsed) = mpsc::sync_channel::<Vec<Parsed>>(CHUNKS_AHEAD);
    let mut line_reader = LineReader::new(input, max_line_bytes);
    let ahead = Arc::new(ParsedAhead::default());
    let parsing = ahead.clone();
    std::thread::spawn(move || line_reader.send_lines(&lines));
    std::thread::spawn(move || parse_lines(&to_parse, &send_parsed, &parsing));
    Reader {
        parsed,
        chunk: Vec::new().into_iter(),
        ahead,
        applying: 0,
    }
}

/// The parsing thread: parses the lines the reading thread sends, in order, handing
/// them on as they came (the lines of one read of the input at a time), while the
/// lines parsed ahead of the applying thread stay within [`PARSED_AHEAD_BYTES`].
fn parse_lines(
    lines: &mpsc::Receiver<Vec<Line>>,
    parsed: &mpsc::SyncSender<Vec<Parsed>>,
    ahead: &ParsedAhead,
) {
    while let Ok(read) = lines.recv() {
        if !ahead.take(read.iter().map(Line::weight).sum()) {
            return;
        }
        let chunk = read.into_iter().map(Line::parse).collect();
        if parsed.send(chunk).is_err() {
            return;
        }
    }
}

/// How many bytes of lines may be parsed ahead of the one being applied. A parsed
/// event takes up to about 40 times its line in memory (a JSON array of small numbers
/// is a value each): four chunks of 4.4 MB lines (groups of 100,000 members) parsed
/// ahead took an import to 862 MB (found by a black-box probe). Lines of ordinary
/// events (thousands fit) never wait for it; a longer line is parsed alone.
pub const PARSED_AHEAD_BYTES: usize = 4 * 1024 * 1024;

/// The bytes of lines parsed (or being parsed) and not yet handed to the applying
/// thread; closed when the applying thread stops taking lines.
#[derive(Default)]
struct ParsedAhead {
    state: Mutex<(usize, bool)>,
    freed: Condvar,
}

impl ParsedAhead {
    /// Waits until `bytes` more fit (or nothing is ahead); `false` once closed.
    fn take(&self, bytes: usize) -> bool {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            let (used, closed) = *state;
            if closed {
                return false;
            }
            if used == 0 || used + bytes <= PARSED_AHEAD_BYTES {
                state.0 += bytes;
                return true;
            }
            state = self.freed.wait(state).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// A line of `bytes` was handed on.
    fn give(&self, bytes: usize) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.0 = state.0.saturating_sub(bytes);
        self.freed.notify_all();
    }

    /// No more lines will be taken: the parsing thread stops waiting.
    fn close(&self) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).1 = true;
        self.freed.notify_all();
    }
}

/// `line` without a leading UTF-8 byte order mark, which some editors and exports
/// write at the start of a file (it is not JSON).
pub fn without_bom(line: &[u8]) -> &[u8] {
    line.strip_prefix(b"\xef\xbb\xbf").unwrap_or(line)
}

/// Most buffers of lines read ahead of the parsing thread.
const BUFFERS_AHEAD: usize = 4;
/// Most chunks (the lines of one read) parsed ahead of the one being applied.
pub const CHUNKS_AHEAD: usize = 4;

/// One line of input, read.
struct Line {
    number: u64,
    bytes: u64,
    /// The line (empty when it was too long), or why reading the input failed after
    /// the line before.
    text: Result<Vec<u8>, std::io::Error>,
    /// The line was longer than the limit and skipped.
    too_long: bool,
}

/// One line of input, parsed.
pub(super) struct Parsed {
    /// Its line number, from 1.
    pub(super) number: u64,
    /// The bytes it took, its line end included.
    pub(super) bytes: u64,
    /// What it counts in [`ParsedAhead`] ([`Line::weight`]).
    weight: usize,
    pub(super) item: Item,
}

/// What a line held.
pub(super) enum Item {
    Blank,
    Event(Box<Result<Delivery, EventError>>),
    TooLong,
    ReadFailed(std::io::Error),
}

impl Line {
    /// The bytes it counts in [`ParsedAhead`]: the text to be parsed.
    fn weight(&self) -> usize {
        self.text.as_ref().map_or(0, Vec::len)
    }

    fn parse(self) -> Parsed {
        let weight = self.weight();
        let item = match self.text {
            Err(error) => Item::ReadFailed(error),
            Ok(_) if self.too_long => Item::TooLong,
            Ok(text) => match text.trim_ascii() {
                [] => Item::Blank,
                body => Item::Event(Box::new(Delivery::parse(body))),
            },
        };
        Parsed {
            number: self.number,
            bytes: self.bytes,
            weight,
            item,
        }
    }
}

/// The applying thread's end of the pipeline: parsed lines, in order.
pub(super) struct Reader {
    parsed: mpsc::Receiver<Vec<Parsed>>,
    chunk: std::vec::IntoIter<Parsed>,
    ahead: Arc<ParsedAhead>,
    /// The weight of the line last handed on, given back when the next one is asked
    /// for: the applying thread is done with it then. (Given back as it was handed
    /// on, a long line was parsed while another was applied: six lines of 8 MiB took
    /// an import to 784 MB, 575 MB held one at a time; a review.)
    applying: usize,
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.ahead.close();
    }
}

/// What [`Reader::next_before`] found.
pub(super) enum Next {
    Line(Parsed),
    /// The input ended (or the reading stopped after a read error, sent as a line).
    End,
    /// No line came before the deadline.
    Wait,
}

impl Reader {
    /// The next parsed line, waiting for it until `deadline` (forever when `None`).
    /// Past the deadline, only a line already at hand is returned.
    pub(super) fn next_before(&mut self, deadline: Option<std::time::Instant>) -> Next {
        self.ahead.give(std::mem::take(&mut self.applying));
        loop {
            if let Some(parsed) = self.chunk.next() {
                self.applying = parsed.weight;
                return Next::Line(parsed);
            }
            let chunk = match deadline {
                None => self.parsed.recv().map_err(|_| Next::End),
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(std::time::Instant::now());
                    self.parsed.recv_timeout(left).map_err(|e| match e {
                        mpsc::RecvTimeoutError::Timeout => Next::Wait,
                        mpsc::RecvTimeoutError::Disconnected => Next::End,
                    })
                }
            };
            match chunk {
                Ok(chunk) => self.chunk = chunk.into_iter(),
                Err(next) => return next,
            }
        }
    }
}

/// The reading thread: the input, a buffer at a time.
struct LineReader<R> {
    input: R,
    /// The longest line held (see [`super::ImportOptions::max_line_bytes`]).
    max_line: usize,
    /// Lines read so far.
    read: u64,
    /// The line being read.
    partial: PartialLine,
}

/// A line read in part.
#[derive(Default)]
struct PartialLine {
    /// Its bytes so far (none once it is too long).
    text: Vec<u8>,
    /// How many bytes it took so far.
    bytes: u64,
    /// It is longer than the limit: its bytes are counted, not kept.
    too_long: bool,
}

impl PartialLine {
    /// Adds `piece`, or only counts it once the line is too long to hold.
    fn take(&mut self, piece: &[u8], max_line: usize) {
        self.bytes += piece.len() as u64;
        if self.too_long {
            return;
        }
        // Room for the line and its end, `\n` or `\r\n` (the end is not counted).
        // (Saturating: the largest limits took every line for too long.)
        if self.text.len().saturating_add(piece.len()) > max_line.saturating_add(2) {
            self.too_long = true;
            self.text = Vec::new();
        } else {
            self.text.extend_from_slice(piece);
        }
    }

    /// The line so far as line `number` of the input; the next one starts empty.
    fn complete(&mut self, number: u64, max_line: usize) -> Line {
        let PartialLine {
            mut text,
            bytes,
            mut too_long,
        } = std::mem::take(self);
        let content = text
            .strip_suffix(b"\n")
            .map_or(&text[..], |t| t.strip_suffix(b"\r").unwrap_or(t))
            .len();
        too_long |= content > max_line;
        if too_long {
            text = Vec::new();
        } else if number == 1 {
            text = without_bom(&text).to_vec();
        }
        Line {
            number,
            bytes,
            text: Ok(text),
            too_long,
        }
    }
}

impl<R: BufRead> LineReader<R> {
    fn new(input: R, max_line: usize) -> Self {
        LineReader {
            input,
            max_line: max_line.max(1),
            read: 0,
            partial: PartialLine::default(),
        }
    }

    /// Sends every line, in order, until the input ends, a read fails (sent as a line
    /// of its own) or the receiving end is gone. Each message holds the lines that one
    /// read of the input completed: as many as a file's buffer holds, and from a pipe
    /// that pauses, each line as soon as it has come (a message per line cost more
    /// in thread wake-ups than parsing the line).
    fn send_lines(&mut self, lines: &mpsc::SyncSender<Vec<Line>>) {
        loop {
            let mut chunk = Vec::new();
            let ended = match self.read_buffer(&mut chunk) {
                Ok(ended) => ended,
                Err(error) => {
                    chunk.push(Line {
                        number: self.read,
                        bytes: 0,
                        text: Err(error),
                        too_long: false,
                    });
                    true
                }
            };
            if (!chunk.is_empty() && lines.send(chunk).is_err()) || ended {
                return;
            }
        }
    }

    /// Reads the input's next buffer (waiting for it only when none is at hand),
    /// appending to `chunk` every line it completes; `true` at the end of the input
    /// (a last line without a line end is completed then). A line longer than the
    /// limit is read past, never held.
    fn read_buffer(&mut self, chunk: &mut Vec<Line>) -> std::io::Result<bool> {
        let buf = loop {
            match self.input.fill_buf() {
                Ok(buf) => break buf,
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
                Err(error) => return Err(error),
            }
        };
        if buf.is_empty() {
            if self.partial.bytes > 0 {
                self.read += 1;
                chunk.push(self.partial.complete(self.read, self.max_line));
            }
            return Ok(true);
        }
        let mut start = 0;
        for end in memchr::memchr_iter(b'\n', buf) {
            self.partial.take(&buf[start..=end], self.max_line);
            start = end + 1;
            self.read += 1;
            chunk.push(self.partial.complete(self.read, self.max_line));
        }
        self.partial.take(&buf[start..], self.max_line);
        let len = buf.len();
        self.input.consume(len);
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lines parsed ahead stay within their budget: a chunk waits until it fits, or
    /// until nothing is ahead (a longer line alone); closing frees the parsing thread.
    #[test]
    fn lines_parsed_ahead_stay_within_the_budget() {
        let ahead = Arc::new(ParsedAhead::default());
        assert!(ahead.take(PARSED_AHEAD_BYTES / 2));
        assert!(ahead.take(PARSED_AHEAD_BYTES / 2));
        let waiting = {
            let ahead = ahead.clone();
            std::thread::spawn(move || ahead.take(3 * PARSED_AHEAD_BYTES))
        };
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(!waiting.is_finished(), "waits while anything is ahead");
        ahead.give(PARSED_AHEAD_BYTES / 2);
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(!waiting.is_finished());
        ahead.give(PARSED_AHEAD_BYTES / 2);
        assert!(waiting.join().unwrap(), "alone, past the budget");
        let waiting = {
            let ahead = ahead.clone();
            std::thread::spawn(move || ahead.take(1))
        };
        ahead.close();
        assert!(!waiting.join().unwrap(), "closed: the parsing thread stops");
    }

    /// A line over the budget is not parsed while the one before it is still being
    /// applied: its weight counts until the next line is asked for.
    #[test]
    fn a_long_line_is_not_parsed_while_another_is_applied() {
        let first = PARSED_AHEAD_BYTES + 10;
        let second = PARSED_AHEAD_BYTES + 20;
        let mut input = vec![b'x'; first];
        input.push(b'\n');
        input.extend(std::iter::repeat_n(b'y', second));
        input.push(b'\n');
        // Small reads, so that the two lines come in chunks of their own.
        let input = std::io::BufReader::with_capacity(64 * 1024, std::io::Cursor::new(input));
        let mut reader = pipeline(input, 4 * PARSED_AHEAD_BYTES);
        let Next::Line(line) = reader.next_before(None) else {
            panic!("no first line")
        };
        assert_eq!(line.number, 1);
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert_eq!(
            reader_ahead(&reader),
            first + 1,
            "the second line waits while the first is applied"
        );
        let Next::Line(line) = reader.next_before(None) else {
            panic!("no second line")
        };
        assert_eq!(line.number, 2);
        assert_eq!(
            reader_ahead(&reader),
            second + 1,
            "a weight counts its line end"
        );
        assert!(matches!(reader.next_before(None), Next::End));
        assert_eq!(reader_ahead(&reader), 0);
    }

    fn reader_ahead(reader: &Reader) -> usize {
        reader.ahead.state.lock().unwrap().0
    }
}
