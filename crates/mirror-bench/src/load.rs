//! The load generator: a closed loop over `concurrency` keep-alive HTTP/1.1
//! connections, each sending one pre-rendered request, reading the whole response,
//! and sending the next. Requests are rendered (and signed) before the clock starts,
//! so the generator only copies bytes and parses status lines while it runs.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use anyhow::Context;
use hdrhistogram::Histogram;
use std::io::{Read, Write};
use std::task::Poll;

use tokio::io::unix::AsyncFd;
use tokio::net::TcpStream;

/// Signed `POST /webhooks` requests, rendered once, stored back to back.
pub(crate) struct Requests {
    bytes: Vec<u8>,
    spans: Vec<(usize, usize)>,
    bodies: usize,
}

impl Requests {
    /// Renders one request per body, signed with `secret`.
    pub(crate) fn render<'a>(bodies: impl IntoIterator<Item = &'a [u8]>, secret: &str) -> Requests {
        let mut requests = Requests {
            bytes: Vec::new(),
            spans: Vec::new(),
            bodies: 0,
        };
        for body in bodies {
            let signature = protocol_verify::sign(secret, body);
            let start = requests.bytes.len();
            requests.bytes.extend_from_slice(
                format!(
                    "POST /webhooks HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n\
                     {}: {signature}\r\ncontent-length: {}\r\n\r\n",
                    protocol_verify::HEADER_NAME,
                    body.len()
                )
                .as_bytes(),
            );
            requests.bytes.extend_from_slice(body);
            requests.bodies += body.len();
            requests.spans.push((start, requests.bytes.len()));
        }
        requests
    }

    pub(crate) fn len(&self) -> usize {
        self.spans.len()
    }

    /// Mean body size in bytes.
    pub(crate) fn mean_body(&self) -> f64 {
        self.bodies as f64 / self.len().max(1) as f64
    }

    fn get(&self, i: usize) -> &[u8] {
        let (start, end) = self.spans[i];
        &self.bytes[start..end]
    }
}

/// One run of the generator.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Load {
    pub(crate) addr: SocketAddr,
    pub(crate) concurrency: usize,
    pub(crate) duration: Duration,
    /// Threads of the generator (each runs its share of the connections).
    pub(crate) threads: usize,
    /// Start over at the first request when all were sent (for endpoints that do not
    /// care about duplicates); otherwise each request is sent at most once and the run
    /// ends early when none are left.
    pub(crate) cycle: bool,
}

/// What a run measured.
pub(crate) struct Outcome {
    /// Complete responses.
    pub(crate) responses: u64,
    pub(crate) elapsed: Duration,
    /// Latency of complete responses, microseconds.
    pub(crate) latency: Histogram<u64>,
    pub(crate) statuses: BTreeMap<u16, u64>,
    /// Responses whose body says `"duplicate"`.
    pub(crate) duplicates: u64,
    /// Connection errors (each followed by a reconnect).
    pub(crate) errors: u64,
    /// The run ended early: every request had been sent once.
    pub(crate) exhausted: bool,
}

impl Outcome {
    pub(crate) fn rate(&self) -> f64 {
        self.responses as f64 / self.elapsed.as_secs_f64()
    }

    /// A latency percentile, in milliseconds.
    pub(crate) fn ms(&self, quantile: f64) -> f64 {
        self.latency.value_at_quantile(quantile) as f64 / 1000.0
    }

    /// Responses with a 2xx status.
    pub(crate) fn ok(&self) -> u64 {
        self.statuses
            .iter()
            .filter(|(s, _)| (200..300).contains(*s))
            .map(|(_, n)| n)
            .sum()
    }

    /// `200: n, 503: m`.
    pub(crate) fn status_summary(&self) -> String {
        let mut parts: Vec<String> = self
            .statuses
            .iter()
            .map(|(s, n)| format!("{s}: {n}"))
            .collect();
        if self.errors > 0 {
            parts.push(format!("conn errors: {}", self.errors));
        }
        parts.join(", ")
    }
}

/// Requests a connection takes from the shared counter at once.
const BLOCK: usize = 16;

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000, 3).expect("valid histogram bounds")
}

struct Connection {
    latency: Histogram<u64>,
    statuses: BTreeMap<u16, u64>,
    duplicates: u64,
    errors: u64,
    exhausted: bool,
}

/// Runs the generator against `load.addr` with `requests`: `load.threads` threads,
/// each with its own single-threaded runtime and its share of the connections (like
/// wrk: no work stealing, no wake-ups across threads).
pub(crate) fn run(load: Load, requests: Arc<Requests>) -> anyhow::Result<Outcome> {
    anyhow::ensure!(requests.len() > 0, "no requests to send");
    let threads = load.threads.clamp(1, load.concurrency.max(1));
    let next = Arc::new(AtomicUsize::new(0));
    // Everyone connects first, so the clock measures requests, not handshakes.
    let ready = Arc::new(Barrier::new(threads + 1));
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let share = load.concurrency / threads + usize::from(t < load.concurrency % threads);
            let (requests, next, ready) = (requests.clone(), next.clone(), ready.clone());
            std::thread::Builder::new()
                .name(format!("mirror-bench-load-{t}"))
                .spawn(move || worker(load, share, requests, next, ready))
        })
        .collect::<Result<_, _>>()?;
    ready.wait();
    let start = Instant::now();
    let mut outcome = Outcome {
        responses: 0,
        elapsed: Duration::ZERO,
        latency: histogram(),
        statuses: BTreeMap::new(),
        duplicates: 0,
        errors: 0,
        exhausted: false,
    };
    let mut failure = None;
    for worker in workers {
        let connections = match worker.join() {
            Ok(Ok(connections)) => connections,
            Ok(Err(e)) => {
                failure = Some(e);
                continue;
            }
            Err(_) => {
                failure = Some(anyhow::anyhow!("a generator thread panicked"));
                continue;
            }
        };
        for connection in connections {
            outcome.latency.add(&connection.latency)?;
            for (status, n) in connection.statuses {
                *outcome.statuses.entry(status).or_default() += n;
            }
            outcome.duplicates += connection.duplicates;
            outcome.errors += connection.errors;
            outcome.exhausted |= connection.exhausted;
        }
    }
    if let Some(e) = failure {
        return Err(e);
    }
    outcome.elapsed = start.elapsed();
    outcome.responses = outcome.latency.len();
    Ok(outcome)
}

fn worker(
    load: Load,
    share: usize,
    requests: Arc<Requests>,
    next: Arc<AtomicUsize>,
    ready: Arc<Barrier>,
) -> anyhow::Result<Vec<Connection>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(e) => {
            ready.wait();
            return Err(e.into());
        }
    };
    let streams = runtime.block_on(async {
        let mut streams = Vec::with_capacity(share);
        for _ in 0..share {
            streams.push(connect(load.addr).await?);
        }
        anyhow::Ok(streams)
    });
    ready.wait();
    let streams = streams?;
    let end = Instant::now() + load.duration;
    runtime.block_on(async move {
        let tasks: Vec<_> = streams
            .into_iter()
            .map(|stream| {
                tokio::spawn(connection(
                    load,
                    stream,
                    requests.clone(),
                    next.clone(),
                    end,
                ))
            })
            .collect();
        let mut connections = Vec::with_capacity(tasks.len());
        for task in tasks {
            connections.push(task.await.context("a connection task failed")?);
        }
        Ok(connections)
    })
}

async fn connect(addr: SocketAddr) -> anyhow::Result<Socket> {
    let stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("cannot connect to {addr}"))?;
    stream.set_nodelay(true)?;
    // `AsyncFd::new` is deprecated for I/O safety (tokio#8587: a registered fd closed
    // behind the registration's back), and its replacement is `unsafe`, which this
    // workspace forbids. Here the `AsyncFd` owns the stream: the fd lives exactly as
    // long as its registration, so the concern does not arise.
    #[allow(deprecated)]
    let socket = AsyncFd::new(stream.into_std()?)?;
    Ok(Socket(socket))
}

/// A connection driven the way wrk drives one: once a response is complete, nothing
/// more can arrive before the next request, so its read readiness is cleared by hand
/// and waiting for the next response costs no read that would only block (tokio's
/// `TcpStream` tries one first: a system call per request).
struct Socket(AsyncFd<std::net::TcpStream>);

impl Socket {
    async fn write_all(&self, mut data: &[u8]) -> std::io::Result<()> {
        while !data.is_empty() {
            let mut stream = self.0.get_ref();
            match stream.write(data) {
                Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                Ok(n) => data = &data[n..],
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    let mut guard = self.0.writable().await?;
                    guard.clear_ready();
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    async fn read(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            let mut guard = self.0.readable().await?;
            if let Ok(result) = guard.try_io(|fd| {
                let mut stream = fd.get_ref();
                stream.read(buf)
            }) {
                return result;
            }
        }
    }

    /// The response is complete: forget the readiness its last read left behind.
    async fn drained(&self) {
        std::future::poll_fn(|cx| {
            if let Poll::Ready(Ok(mut guard)) = self.0.poll_read_ready(cx) {
                guard.clear_ready();
            }
            Poll::Ready(())
        })
        .await;
    }
}

async fn connection(
    load: Load,
    mut stream: Socket,
    requests: Arc<Requests>,
    next: Arc<AtomicUsize>,
    end: Instant,
) -> Connection {
    let mut stats = Connection {
        latency: histogram(),
        statuses: BTreeMap::new(),
        duplicates: 0,
        errors: 0,
        exhausted: false,
    };
    let mut buf = vec![0u8; 64 * 1024];
    // Requests are taken from the shared counter a block at a time (one atomic add per
    // block, not per request: the counter's cache line would bounce between threads).
    let (mut taken, mut block_end) = (0, 0);
    loop {
        let sent = Instant::now();
        if sent >= end {
            break;
        }
        if taken == block_end {
            taken = next.fetch_add(BLOCK, Ordering::Relaxed);
            block_end = taken + BLOCK;
        }
        let mut i = taken;
        taken += 1;
        if i >= requests.len() {
            if !load.cycle {
                stats.exhausted = true;
                break;
            }
            i %= requests.len();
        }
        let result = async {
            stream.write_all(requests.get(i)).await?;
            read_response(&stream, &mut buf).await
        }
        .await;
        match result {
            Ok((status, duplicate)) => {
                let micros = sent.elapsed().as_micros().max(1) as u64;
                let _ = stats.latency.record(micros.min(120_000_000));
                *stats.statuses.entry(status).or_default() += 1;
                stats.duplicates += u64::from(duplicate);
            }
            Err(_) => {
                stats.errors += 1;
                if Instant::now() >= end {
                    break;
                }
                match connect(load.addr).await {
                    Ok(fresh) => stream = fresh,
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
        }
    }
    stats
}

/// Reads one response with a `content-length` body: its status, and whether its body
/// contains `"duplicate"`.
async fn read_response(stream: &Socket, buf: &mut [u8]) -> std::io::Result<(u16, bool)> {
    let invalid =
        |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
    let mut filled = 0;
    let head_end = loop {
        let n = stream.read(&mut buf[filled..]).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        // Only the new bytes (and the 3 before them) can complete the blank line.
        let from = filled.saturating_sub(3);
        filled += n;
        if let Some(at) = find(&buf[from..filled], b"\r\n\r\n") {
            break from + at + 4;
        }
        if filled == buf.len() {
            return Err(invalid("response head too large"));
        }
    };
    let head = &buf[..head_end];
    let status = head
        .get(9..12)
        .and_then(|s| std::str::from_utf8(s).ok())
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| invalid("no status line"))?;
    let length = content_length(head).ok_or_else(|| invalid("no content-length"))?;
    let total = head_end + length;
    if total > buf.len() {
        return Err(invalid("response body too large"));
    }
    while filled < total {
        let n = stream.read(&mut buf[filled..total]).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        filled += n;
    }
    stream.drained().await;
    let duplicate = find(&buf[head_end..total], b"\"duplicate\"").is_some();
    Ok((status, duplicate))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn content_length(head: &[u8]) -> Option<usize> {
    const NAME: &[u8] = b"content-length:";
    head.split(|&b| b == b'\n').find_map(|line| {
        if line.len() > NAME.len() && line[..NAME.len()].eq_ignore_ascii_case(NAME) {
            std::str::from_utf8(&line[NAME.len()..])
                .ok()?
                .trim()
                .parse()
                .ok()
        } else {
            None
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_length_is_found_in_any_case() {
        let head = b"HTTP/1.1 200 OK\r\nContent-Type: x\r\nContent-Length: 42\r\n\r\n";
        assert_eq!(content_length(head), Some(42));
        let head = b"HTTP/1.1 200 OK\r\ncontent-length:7\r\n\r\n";
        assert_eq!(content_length(head), Some(7));
        assert_eq!(content_length(b"HTTP/1.1 200 OK\r\n\r\n"), None);
    }
}
