//! Prometheus metrics (prometheus-client), served at `GET /metrics` in Prometheus's
//! text format, or in OpenMetrics to a client that asks for it ([`Format`]).

use std::path::PathBuf;
use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Metric, Registry};
use protocol_types::{Action, Event, EventError, EventType};

use crate::apply::Applied;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabels {
    /// One of the 15 documented types, or `unknown` (bounded cardinality).
    r#type: String,
    /// The outcome, or `duplicate`.
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    /// See [`route_of`].
    route: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PassLabels {
    /// See [`Pass`].
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReconciledLabels {
    /// `contact`, `conversation`, `message`, `group` or `attachment`.
    resource: &'static str,
    /// An event outcome, `unchanged` or `pruned`.
    outcome: &'static str,
}

/// The outcomes a reconcile pass counts objects by: what a backfilled object's event
/// can be (never `unsupported`: it is one of the five resources), `unchanged` and
/// `pruned`.
const RECONCILED_OUTCOMES: [&str; 6] = [
    "applied",
    "stale",
    "ignored_deleted",
    "rejected",
    "unchanged",
    "pruned",
];

/// What a reconcile pass has counted so far, by resource and outcome (see
/// [`Metrics::record_reconciled`]).
#[derive(Debug, Default)]
pub(crate) struct Reconciled(std::collections::HashMap<(&'static str, &'static str), u64>);

/// How a reconcile pass (`serve --reconcile-every`) ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Pass {
    /// It reached the end of every list.
    Complete,
    /// It left a resource unfinished (the next pass resumes it): also where the API
    /// could not be reached.
    Incomplete,
    /// It failed as a whole: the API refused its token, its settings or the lock
    /// could not be read, ...
    Failed,
    /// A `backfill` of the database was running: no pass.
    Skipped,
}

impl Pass {
    const ALL: [Pass; 4] = [
        Pass::Complete,
        Pass::Incomplete,
        Pass::Failed,
        Pass::Skipped,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Pass::Complete => "complete",
            Pass::Incomplete => "incomplete",
            Pass::Failed => "failed",
            Pass::Skipped => "skipped",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClosedLabels {
    /// See [`closed_because`].
    reason: &'static str,
}

/// Why a connection ended with an error, as a label of few values:
/// `header_timeout` (no request head came whole within `--header-timeout`: a silent
/// connection, a slowloris), `idle_timeout` (the same after the connection had
/// served a request: mostly an idle keep-alive connection, which is no fault),
/// `write_timeout` (its reader stopped reading an answer; also the kernel giving up
/// on a peer gone silent), `malformed` (a request hyper could not parse: it answered
/// 400, 414 or 431 itself, before the mirror saw it), `incomplete` (the client went
/// away in the middle of a request's head; one gone in the middle of a body is
/// answered 400 by the mirror, and counted with the requests), or `io` (any other
/// error).
pub(crate) fn closed_because(error: &hyper::Error, served: bool) -> &'static str {
    use std::error::Error as _;
    let timed_out = error
        .source()
        .and_then(|source| source.downcast_ref::<std::io::Error>())
        .is_some_and(|e| e.kind() == std::io::ErrorKind::TimedOut);
    if error.is_timeout() && served {
        "idle_timeout"
    } else if error.is_timeout() {
        "header_timeout"
    } else if timed_out {
        "write_timeout"
    } else if error.is_parse() || error.is_parse_too_large() {
        "malformed"
    } else if error.is_incomplete_message() {
        "incomplete"
    } else {
        "io"
    }
}

/// Every value of [`closed_because`], for the series at zero from the start.
const CLOSED_REASONS: [&str; 6] = [
    "header_timeout",
    "idle_timeout",
    "write_timeout",
    "malformed",
    "incomplete",
    "io",
];

/// A request's route as a label of few values: `webhooks`, `healthz`, `read_api`
/// (`/v1/...`), `metrics`, `openapi`, or `other` (anything else, and a route the
/// listener does not serve: a 404).
pub(crate) fn route_of(path: &str, routes: super::Routes) -> &'static str {
    match path {
        "/webhooks" if routes.webhooks => "webhooks",
        "/healthz" => "healthz",
        "/metrics" if routes.read_api => "metrics",
        "/openapi.json" if routes.read_api => "openapi",
        path if routes.read_api && path.starts_with("/v1/") => "read_api",
        _ => "other",
    }
}

/// Latency buckets: 0.25 ms doubling to 32.8 s, past the default request time limit
/// (30 s), so that the slowest answers land in a bucket of their own.
fn latency_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.000_25, 2.0, 18)
}

fn new_latency_histogram() -> Histogram {
    Histogram::new(latency_buckets())
}

/// The process's resident memory in bytes, from `/proc/self/status` (Linux).
fn resident_bytes() -> Option<i64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse::<i64>()
        .ok()?;
    Some(kib * 1024)
}

/// `metric`, registered in `registry` under `name` (with the registry's prefix); the
/// returned handle updates what the registry renders.
fn registered<M: Metric + Clone>(registry: &mut Registry, name: &str, help: &str, metric: M) -> M {
    registry.register(name, help, metric.clone());
    metric
}

/// The daemon's metrics.
pub struct Metrics {
    registry: Mutex<Registry>,
    events: Family<EventLabels, Counter>,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram>,
    closed: Family<ClosedLabels, Counter>,
    batch_size: Histogram,
    /// Jobs waiting for the writer.
    pub(crate) queue_depth: Gauge,
    /// Batches rolled back.
    pub(crate) commit_failures: Counter,
    /// Connections the listener could not accept (out of file descriptors).
    pub(crate) accept_failures: Counter,
    db_size: Gauge,
    reconcile_passes: Family<PassLabels, Counter>,
    reconciled: Family<ReconciledLabels, Counter>,
    reconcile_last_complete: Gauge,
    /// The daemon's resident memory and open descriptors, read from `/proc` at each
    /// scrape (0 where there is no `/proc`): what a long run watches for leaks.
    resident_memory: Gauge,
    open_fds: Gauge,
    database: Option<PathBuf>,
}

impl Metrics {
    /// Registers every metric; `database` is measured at each scrape.
    pub fn new(database: Option<PathBuf>) -> Metrics {
        let mut registry = Registry::with_prefix("protocol_mirror");
        let events = Family::<EventLabels, Counter>::default();
        // At zero from the start, each type with the outcomes it can have: a rate or an
        // alert over a series that appears only with its first event has no data (not
        // 0) until then.
        // A delete is never stale (deletes ignore versions); a type the mirror does
        // not know is only ever unsupported (it has no fields to reject).
        let possible = EventType::all()
            .map(|t| {
                let outcomes: &[&str] = match t.action {
                    Action::Deleted => &["applied", "ignored_deleted", "rejected"],
                    Action::Created | Action::Updated => {
                        &["applied", "stale", "ignored_deleted", "rejected"]
                    }
                };
                (t.to_string(), outcomes)
            })
            .chain([("unknown".to_owned(), &["unsupported"][..])]);
        for (r#type, outcomes) in possible {
            for outcome in outcomes.iter().chain(&[crate::apply::DUPLICATE]) {
                let _zero = events.get_or_create(&EventLabels {
                    r#type: r#type.clone(),
                    outcome: (*outcome).to_owned(),
                });
            }
        }
        let events = registered(
            &mut registry,
            "events",
            "Events by type and outcome",
            events,
        );
        let requests = registered(
            &mut registry,
            "http_requests",
            "HTTP requests by route and status",
            Family::<RequestLabels, Counter>::default(),
        );
        let latency = registered(
            &mut registry,
            "http_request_duration_seconds",
            "HTTP request latency by route",
            Family::<RouteLabels, Histogram>::new_with_constructor(
                new_latency_histogram as fn() -> Histogram,
            ),
        );
        // The webhook endpoint's series at zero from the start too, for the same reason:
        // the HTTP families were missing from every scrape before the first request
        // was answered (found by a black-box probe).
        drop(requests.get_or_create(&RequestLabels {
            route: "webhooks",
            status: 200,
        }));
        drop(latency.get_or_create(&RouteLabels { route: "webhooks" }));
        // What never reaches the router (a slowloris, a flood of malformed requests)
        // was in no series and no log line (a black-box probe).
        let closed = registered(
            &mut registry,
            "http_connections_closed_on_error",
            "Connections that ended with an error, by reason: header_timeout, \
             idle_timeout (after a request: keep-alive), write_timeout, malformed \
             (answered by the HTTP library), incomplete, io",
            Family::<ClosedLabels, Counter>::default(),
        );
        for reason in CLOSED_REASONS {
            drop(closed.get_or_create(&ClosedLabels { reason }));
        }
        let batch_size = registered(
            &mut registry,
            "commit_batch_size",
            "Events per committed transaction",
            Histogram::new(exponential_buckets(1.0, 2.0, 12)),
        );
        let queue_depth = registered(
            &mut registry,
            "queue_depth",
            "Jobs waiting for the writer",
            Gauge::default(),
        );
        let commit_failures = registered(
            &mut registry,
            "commit_failures",
            "Batches that could not be committed",
            Counter::default(),
        );
        // Logged at most every 10 s: counted in full here (a probe).
        let accept_failures = registered(
            &mut registry,
            "accept_failures",
            "Connections that could not be accepted (out of file descriptors and the like)",
            Counter::default(),
        );
        let db_size = registered(
            &mut registry,
            "database_size_bytes",
            "Size of the database and its WAL",
            Gauge::default(),
        );
        // Reconcile passes write through the writer, but not as webhook events: a
        // daemon's metrics said nothing of them (two probes).
        let reconcile_passes = registered(
            &mut registry,
            "reconcile_passes",
            "Reconcile passes (serve --reconcile-every) by result: complete, incomplete \
             (a resource unfinished, as when the API cannot be reached; the next pass \
             resumes it), failed (the API refused the token; settings or lock \
             unreadable), skipped (a backfill was running)",
            Family::<PassLabels, Counter>::default(),
        );
        for pass in Pass::ALL {
            drop(reconcile_passes.get_or_create(&PassLabels {
                result: pass.as_str(),
            }));
        }
        let reconciled = registered(
            &mut registry,
            "reconciled_objects",
            "Objects reconcile passes listed, by resource and outcome: an event outcome \
             (applied, stale, ignored_deleted, rejected), unchanged (as an earlier pass \
             found it), or pruned (deleted: Protocol no longer has it)",
            Family::<ReconciledLabels, Counter>::default(),
        );
        // At zero before the first pass, as the passes' series are (a probe found no
        // series, and no HELP line, until a pass had counted something).
        for resource in protocol_types::Resource::ALL {
            for outcome in RECONCILED_OUTCOMES {
                drop(reconciled.get_or_create(&ReconciledLabels {
                    resource: resource.as_str(),
                    outcome,
                }));
            }
        }
        let reconcile_last_complete = registered(
            &mut registry,
            "reconcile_last_complete_timestamp_seconds",
            "When the last complete reconcile pass ended (Unix time; 0: none yet)",
            Gauge::default(),
        );
        let resident_memory = registered(
            &mut registry,
            "process_resident_memory_bytes",
            "Resident memory of the daemon (VmRSS)",
            Gauge::default(),
        );
        let open_fds = registered(
            &mut registry,
            "process_open_fds",
            "File descriptors the daemon holds open",
            Gauge::default(),
        );
        Metrics {
            registry: Mutex::new(registry),
            events,
            requests,
            latency,
            closed,
            batch_size,
            queue_depth,
            commit_failures,
            accept_failures,
            db_size,
            reconcile_passes,
            reconciled,
            reconcile_last_complete,
            resident_memory,
            open_fds,
            database,
        }
    }

    pub(crate) fn record_event(&self, event: &Result<Event, EventError>, applied: &Applied) {
        self.record_event_of(known_type(event), applied);
    }

    /// [`Metrics::record_event`] for an event whose [`known_type`] was taken before it
    /// went to the writer (`None`: counted as `unknown`, as any other type a sender
    /// makes up would be a series of its own).
    pub(crate) fn record_event_of(&self, event_type: Option<EventType>, applied: &Applied) {
        let r#type = event_type.map_or_else(|| "unknown".to_owned(), |t| t.to_string());
        let outcome = match applied {
            Applied::Logged { outcome, .. } => outcome.as_str(),
            Applied::Duplicate { .. } => crate::apply::DUPLICATE,
        };
        self.events
            .get_or_create(&EventLabels {
                r#type,
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    pub(crate) fn record_batch(&self, events: usize) {
        if events > 0 {
            self.batch_size.observe(events as f64);
        }
    }

    pub(crate) fn record_request(&self, route: &'static str, status: u16, seconds: f64) {
        self.requests
            .get_or_create(&RequestLabels { route, status })
            .inc();
        self.latency
            .get_or_create(&RouteLabels { route })
            .observe(seconds);
    }

    /// What a reconcile pass's `report` of a resource (told after each page it
    /// commits and each row it prunes) counts that it had not when last told, as
    /// `seen` (one per pass) remembers: counted as they commit, the pages of a pass
    /// that then fails count too (counted at its end, they were lost; a review).
    pub(crate) fn record_reconciled(
        &self,
        report: &crate::backfill::ResourceReport,
        seen: &mut Reconciled,
    ) {
        let resource = report.resource.as_str();
        let counts = report
            .outcomes
            .iter()
            .map(|(outcome, &count)| (outcome.as_str(), count))
            .chain([
                ("unchanged", report.unchanged),
                ("pruned", report.pruned.len() as u64),
            ]);
        for (outcome, count) in counts {
            let before = seen.0.entry((resource, outcome)).or_default();
            if count > *before {
                self.reconciled
                    .get_or_create(&ReconciledLabels { resource, outcome })
                    .inc_by(count - *before);
                *before = count;
            }
        }
    }

    /// A reconcile pass that ended as `pass`.
    pub(crate) fn record_pass(&self, pass: Pass) {
        self.reconcile_passes
            .get_or_create(&PassLabels {
                result: pass.as_str(),
            })
            .inc();
        if pass == Pass::Complete {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |since| since.as_secs());
            self.reconcile_last_complete
                .set(i64::try_from(now).unwrap_or(i64::MAX));
        }
    }

    /// A connection that ended with `error`, after it `served` a request or not (see
    /// [`closed_because`]).
    pub(crate) fn record_closed(&self, error: &hyper::Error, served: bool) {
        self.closed
            .get_or_create(&ClosedLabels {
                reason: closed_because(error, served),
            })
            .inc();
    }

    /// The metrics in the format the client asked for (see [`Format::accepted`]).
    pub fn render_as(&self, format: Format) -> String {
        let text = self.render();
        match format {
            Format::OpenMetrics => text,
            Format::Prometheus => prometheus_text(&text),
        }
    }

    /// The metrics in OpenMetrics text format.
    pub fn render(&self) -> String {
        if let Some(db) = &self.database {
            let (database, wal) = crate::store::file_sizes(db);
            self.db_size.set((database + wal) as i64);
        }
        self.resident_memory.set(resident_bytes().unwrap_or(0));
        self.open_fds
            .set(std::fs::read_dir("/proc/self/fd").map_or(0, |entries| entries.count() as i64));
        let mut text = String::new();
        let registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &registry);
        series_sorted(&text)
    }
}

/// `text` with the samples of each counter and gauge family sorted (the registry
/// writes a family's series in the order of a hash map: a different order at every
/// start, hard to read by eye). Histograms keep their order: a series' buckets go
/// by `le`, then its sum and count.
fn series_sorted(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut sortable = false;
    let mut run: Vec<&str> = Vec::new();
    let flush = |run: &mut Vec<&str>, sortable: bool, out: &mut String| {
        if sortable {
            run.sort_unstable();
        }
        for line in run.drain(..) {
            out.push_str(line);
            out.push('\n');
        }
    };
    for line in text.lines() {
        if line.starts_with('#') {
            flush(&mut run, sortable, &mut out);
            if let Some(kind) = line.strip_prefix("# TYPE ") {
                sortable = kind.ends_with(" counter") || kind.ends_with(" gauge");
            }
            out.push_str(line);
            out.push('\n');
        } else {
            run.push(line);
        }
    }
    flush(&mut run, sortable, &mut out);
    out
}

/// The two text formats of `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// OpenMetrics 1.0 (`application/openmetrics-text`), what Prometheus asks for.
    OpenMetrics,
    /// Prometheus's text format 0.0.4 (`text/plain`), for every other client.
    Prometheus,
}

impl Format {
    /// OpenMetrics when an `Accept` header (each value of each header, as RFC 9110
    /// joins them) names it (`application/openmetrics-text`, in any case) with a `q`
    /// above 0 and no lower than the classic format's (`text/plain`, else `text/*`,
    /// else `*/*`), as Prometheus's scrapes do; the classic text format otherwise
    /// (curl, scripts, older scrapers, and a client that prefers it: `text/plain` with
    /// a higher `q` got OpenMetrics; a probe), as the Prometheus client libraries
    /// negotiate.
    pub fn accepted<'a>(accept: impl IntoIterator<Item = &'a str>) -> Format {
        // Each media range with its weight (1 when not given, 0 when unreadable or
        // outside 0 to 1: Rust reads `nan`, `inf` and `1e3` as numbers).
        let ranges: Vec<(String, f64)> = accept
            .into_iter()
            .flat_map(|value| value.split(','))
            .map(|range| {
                let mut parts = range.split(';').map(str::trim);
                let media = parts.next().unwrap_or_default().to_ascii_lowercase();
                let weight = parts
                    .filter_map(|p| p.split_once('='))
                    .find(|(name, _)| name.trim().eq_ignore_ascii_case("q"))
                    .map_or(1.0, |(_, q)| {
                        q.trim()
                            .parse::<f64>()
                            .ok()
                            .filter(|q| (0.0..=1.0).contains(q))
                            .unwrap_or(0.0)
                    });
                (media, weight)
            })
            .collect();
        let weight_of = |media: &str| {
            ranges
                .iter()
                .filter(|(range, _)| range == media)
                .map(|&(_, q)| q)
                .reduce(f64::max)
        };
        let openmetrics = weight_of("application/openmetrics-text").unwrap_or(0.0);
        let text = weight_of("text/plain")
            .or_else(|| weight_of("text/*"))
            .or_else(|| weight_of("*/*"))
            .unwrap_or(0.0);
        if openmetrics > 0.0 && openmetrics >= text {
            Format::OpenMetrics
        } else {
            Format::Prometheus
        }
    }

    /// The `Content-Type` of a response in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Format::Prometheus => "text/plain; version=0.0.4; charset=utf-8",
        }
    }
}

/// OpenMetrics text as Prometheus's text format 0.0.4: a counter family is named by
/// its samples (`x_total`, where OpenMetrics names it `x`), `unknown` is `untyped`,
/// and there is no `# UNIT` or `# EOF` line. Samples are written alike in both.
fn prometheus_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.strip_suffix(" counter"))
        .collect();
    let mut text = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let described = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|prefix| Some((prefix, line.strip_prefix(prefix)?)));
        match described {
            Some((prefix, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                text.push_str(prefix);
                text.push_str(name);
                if counters.contains(name) && !name.ends_with("_total") {
                    text.push_str("_total");
                }
                text.push(' ');
                text.push_str(if prefix == "# TYPE " && tail == "unknown" {
                    "untyped"
                } else {
                    tail
                });
            }
            None => text.push_str(line),
        }
        text.push('\n');
    }
    text
}

/// Which of the 15 documented types an event is, if any: its count's `type` label.
pub(crate) fn known_type(event: &Result<Event, EventError>) -> Option<EventType> {
    match event {
        Ok(event) => event.event_type(),
        Err(EventError::Field { event_type, .. }) => Some(*event_type),
        Err(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serve::Routes;

    #[test]
    fn a_route_the_listener_does_not_serve_is_other() {
        let both = Routes {
            webhooks: true,
            read_api: true,
        };
        let webhooks_only = Routes {
            webhooks: true,
            read_api: false,
        };
        let read_only = Routes {
            webhooks: false,
            read_api: true,
        };
        assert_eq!(route_of("/v1/contacts", both), "read_api");
        assert_eq!(route_of("/v1/contacts", webhooks_only), "other");
        assert_eq!(route_of("/metrics", webhooks_only), "other");
        assert_eq!(route_of("/webhooks", read_only), "other");
        assert_eq!(route_of("/healthz", read_only), "healthz");
        assert_eq!(route_of("/webhooks", both), "webhooks");
        assert_eq!(route_of("/nope", both), "other");
    }

    /// Prometheus asks for OpenMetrics; everyone else gets the classic text format,
    /// in which each family's `# HELP` and `# TYPE` name its samples.
    #[test]
    fn the_text_format_follows_the_accept_header() {
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(Format::accepted([prometheus]), Format::OpenMetrics);
        assert_eq!(
            Format::accepted(["Application/OpenMetrics-Text"]),
            Format::OpenMetrics
        );
        assert_eq!(
            Format::accepted(["text/plain", "application/openmetrics-text; version=1.0.0"]),
            Format::OpenMetrics,
            "a second Accept header counts"
        );
        assert_eq!(
            Format::accepted(["application/openmetrics-text;q=0.5, text/plain;q=0.4"]),
            Format::OpenMetrics
        );
        assert_eq!(
            Format::accepted(["application/openmetrics-text, */*;q=nan"]),
            Format::OpenMetrics
        );
        assert_eq!(
            Format::accepted(["text/plain;q=inf, application/openmetrics-text"]),
            Format::OpenMetrics
        );
        for other in [
            &[][..],
            &["*/*"],
            &["text/plain;version=0.0.4"],
            &["application/openmetrics-text;q=0, text/plain"],
            &["application/openmetrics-text; Q=0.0"],
            &["application/openmetrics-textile"],
            &["text/plain;q=1, application/openmetrics-text;q=0.5"],
            &["text/*, application/openmetrics-text;q=0.9"],
            &["application/openmetrics-text;q=0.2, */*;q=0.3"],
            &["application/openmetrics-text;q=x"],
            &["application/openmetrics-text;q=nan"],
            &["application/openmetrics-text;q=2"],
            &["text/plain;q=0.5, application/openmetrics-text;q=inf"],
        ] {
            assert_eq!(
                Format::accepted(other.iter().copied()),
                Format::Prometheus,
                "{other:?}"
            );
        }
        let metrics = Metrics::new(None);
        metrics.record_batch(3);
        let openmetrics = metrics.render_as(Format::OpenMetrics);
        assert!(openmetrics.ends_with("# EOF\n"), "{openmetrics}");
        let text = metrics.render_as(Format::Prometheus);
        assert!(!text.contains("# EOF"), "{text}");
        // Every sample line is the same; only the families' descriptions differ. (The
        // process's own memory and descriptors are read anew at each render.)
        let samples = |text: &str| -> Vec<String> {
            text.lines()
                .filter(|line| {
                    !line.starts_with('#') && !line.starts_with("protocol_mirror_process_")
                })
                .map(str::to_owned)
                .collect()
        };
        assert_eq!(samples(&text), samples(&openmetrics));
        for line in [
            "# HELP protocol_mirror_events_total Events by type and outcome.",
            "# TYPE protocol_mirror_events_total counter",
            "# TYPE protocol_mirror_commit_failures_total counter",
            "# TYPE protocol_mirror_commit_batch_size histogram",
            "# TYPE protocol_mirror_queue_depth gauge",
            "protocol_mirror_commit_batch_size_count 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
        // Each described family's samples carry its name.
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let name = rest.split(' ').next().unwrap();
                assert!(
                    text.lines()
                        .any(|l| !l.starts_with('#') && l.starts_with(name)),
                    "no sample of {name}"
                );
            }
        }
    }

    /// Every type's series is there, at zero, before its first event, and the webhook
    /// endpoint's before its first request.
    #[test]
    fn events_by_type_and_outcome_start_at_zero() {
        let text = Metrics::new(None).render();
        for series in [
            r#"protocol_mirror_events_total{type="message.created",outcome="applied"} 0"#,
            r#"protocol_mirror_events_total{type="group.deleted",outcome="duplicate"} 0"#,
            r#"protocol_mirror_events_total{type="unknown",outcome="unsupported"} 0"#,
        ] {
            assert!(text.contains(series), "{series} in\n{text}");
        }
        // Only the outcomes a type can have.
        for series in [
            r#"{type="message.deleted",outcome="stale"}"#,
            r#"{type="unknown",outcome="rejected"}"#,
            r#"{type="unknown",outcome="applied"}"#,
            r#"{type="message.created",outcome="unsupported"}"#,
        ] {
            assert!(!text.contains(series), "{series} in\n{text}");
        }
        assert!(text.contains(r#"{type="message.deleted",outcome="ignored_deleted"}"#));
        // Reconcile passes' series too, before the first pass.
        assert!(
            text.contains(r#"protocol_mirror_reconciled_objects_total{resource="attachment",outcome="pruned"} 0"#),
            "{text}"
        );
        assert_eq!(
            text.lines()
                .filter(|l| l.starts_with("protocol_mirror_reconciled_objects_total{"))
                .count(),
            5 * 6,
            "{text}"
        );
        // The webhook endpoint's requests and latency too, before its first request.
        for series in [
            r#"protocol_mirror_http_requests_total{route="webhooks",status="200"} 0"#,
            r#"protocol_mirror_http_request_duration_seconds_count{route="webhooks"} 0"#,
        ] {
            assert!(text.contains(series), "{series} in\n{text}");
        }
    }

    /// Counter series come sorted (the registry's hash map wrote them in a different
    /// order at every start); histogram buckets stay in `le` order.
    #[test]
    fn series_are_sorted_and_buckets_keep_their_order() {
        let metrics = Metrics::new(None);
        metrics.record_request("/webhooks", 200, 0.002);
        metrics.record_request("/healthz", 200, 0.001);
        let text = metrics.render();
        let events: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("protocol_mirror_events_total"))
            .collect();
        assert_eq!(events.len(), 15 * 5 - 5 + 2, "{text}");
        assert!(events.is_sorted(), "{events:#?}");
        let buckets: Vec<f64> = text
            .lines()
            .filter(|l| l.starts_with("protocol_mirror_http_request_duration_seconds_bucket"))
            .filter(|l| l.contains(r#"route="/webhooks""#))
            .filter_map(|l| l.split("le=\"").nth(1)?.split('"').next()?.parse().ok())
            .collect();
        assert!(buckets.len() > 3 && buckets.is_sorted(), "{buckets:?}");
        assert_eq!(Metrics::new(None).render().matches("# EOF").count(), 1);
    }
}
