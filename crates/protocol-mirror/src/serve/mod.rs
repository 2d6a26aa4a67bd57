//! The daemon: `protocol-mirror serve`.
//!
//! An axum router ([`router`]) over a single writer thread ([`writer`]), served by
//! hyper's HTTP/1 connection builder with a header-read timeout and at most
//! [`Connections::places`] connections open on a listener ([`serve`]), so that
//! tests can bind port 0 and pass their own shutdown future. The request time limit
//! is a middleware of ours, which waits past it for an event the writer has begun (a
//! 503 always means "not stored"); a shutdown drains open connections for [`DRAIN`]
//! so that no request written to one goes unanswered. A second thread copies the WAL
//! into the database file ([`checkpointer`]).

mod access;
pub mod checkpointer;
pub mod host;
mod log_limit;
pub mod metrics;
pub mod openapi;
pub mod read_api;
pub mod reconcile;
mod webhook;
pub mod writer;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tower::ServiceExt;

use self::metrics::Metrics;
use self::writer::Writer;

/// How many bytes of webhook bodies over 16 KiB may be held at once while they are
/// read, before their signature can be checked. A body larger than this (a
/// `--max-body-bytes` above it) is read alone, taking all of it.
pub const UNSIGNED_BODIES_BYTES: usize = webhook::READING_BUDGET_KIB * 1024;

/// The daemon's limits and timeouts.
#[derive(Debug, Clone)]
pub struct Config {
    /// Largest accepted body, in bytes (413 above).
    pub max_body_bytes: usize,
    /// Longest a request may take to arrive and be answered: 408 while its body is
    /// still arriving, 503 once read (an event the writer has taken is waited for).
    /// Also every connection's write timeout.
    pub request_timeout: Duration,
    /// Longest a client may take to send a request's headers (the connection is
    /// closed after: slowloris).
    pub header_timeout: Duration,
    /// Most signed webhooks handled at once (places are taken once the signature is
    /// checked), and as many read API requests apart; more wait for a place.
    pub concurrency_limit: usize,
    /// How long shutdown waits for in-flight requests.
    pub shutdown_grace: Duration,
    /// Host names, besides loopback's, that requests to a read API without a token
    /// may name (see [`host`]): those of `--listen` and `--read-listen`.
    pub loopback_names: Vec<String>,
    /// The database served, when it is a file: `/healthz` tells an import's long
    /// transaction (see [`crate::lock::ImportMark`]) from a database that takes no
    /// commit.
    pub database: Option<std::path::PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_body_bytes: 1024 * 1024,
            request_timeout: Duration::from_secs(30),
            header_timeout: Duration::from_secs(10),
            concurrency_limit: 1024,
            shutdown_grace: Duration::from_secs(30),
            loopback_names: Vec::new(),
            database: None,
        }
    }
}

/// When a `/healthz` probe ended, and what it found (the error's message, if any).
type Probed = (std::time::Instant, Result<(), String>);

/// What handlers share.
#[derive(Clone)]
pub struct AppState {
    config: Arc<Config>,
    verifier: Arc<protocol_verify::Verifier>,
    writer: Writer,
    metrics: Arc<Metrics>,
    reads: Option<Arc<read_api::ReadPool>>,
    read_token: Option<Arc<str>>,
    /// Webhooks refused for their signature, logged at a bounded rate.
    refused: Arc<log_limit::LogLimit>,
    /// Webhooks answered 503 because the mirror was busy, logged at a bounded rate.
    busy: Arc<log_limit::LogLimit>,
    /// `/healthz`'s last probe (see [`healthz`]).
    last_probe: Arc<tokio::sync::Mutex<Option<Probed>>>,
    /// The memory of webhook bodies: large ones being read, before their signature
    /// is checked ([`webhook::READING_BUDGET_KIB`]); signed events parsed and not yet
    /// answered ([`webhook::PARSED_BUDGET_KIB`]).
    budgets: Arc<webhook::Budgets>,
    /// The places of the signed webhooks handled at once (`concurrency_limit`).
    webhook_places: Arc<tokio::sync::Semaphore>,
    /// Turns true when the daemon begins to shut down (see [`AppState::stopping_on`]).
    stopping: Option<tokio::sync::watch::Receiver<bool>>,
}

impl AppState {
    /// Bundles the daemon's parts. `reads` serves the read API; `read_token`, when
    /// set, is required on it (and on `/metrics` and `/openapi.json`).
    pub fn new(
        config: Config,
        verifier: protocol_verify::Verifier,
        writer: Writer,
        metrics: Arc<Metrics>,
        reads: Option<read_api::ReadPool>,
        read_token: Option<String>,
    ) -> AppState {
        AppState {
            webhook_places: Arc::new(tokio::sync::Semaphore::new(config.concurrency_limit)),
            config: Arc::new(config),
            verifier: Arc::new(verifier),
            writer,
            metrics,
            reads: reads.map(Arc::new),
            read_token: read_token.map(Arc::from),
            refused: Arc::default(),
            busy: Arc::default(),
            last_probe: Arc::default(),
            budgets: Arc::default(),
            stopping: None,
        }
    }

    /// The read API's pool, to close at the stop ([`read_api::ReadPool::close`]).
    #[must_use]
    pub fn read_pool(&self) -> Option<Arc<read_api::ReadPool>> {
        self.reads.clone()
    }

    /// Webhooks still reading their body, or waiting for room to parse it, [`DRAIN`]
    /// after `stopping` turns true are answered 503: nothing of them is stored, and a
    /// sender stalled mid-body held the shutdown for the whole request time limit.
    /// (A body that was on its way when the signal came is read and applied.) Events
    /// the writer has are still waited for.
    pub fn stopping_on(mut self, stopping: tokio::sync::watch::Receiver<bool>) -> AppState {
        self.stopping = Some(stopping);
        self
    }

    /// Whether the daemon began to shut down.
    fn is_stopping(&self) -> bool {
        self.stopping
            .as_ref()
            .is_some_and(|stopping| *stopping.borrow())
    }

    /// What `work` gives, or `None` when the daemon began to shut down [`DRAIN`] ago
    /// first (never, without [`AppState::stopping_on`]). The work is polled first: the
    /// shutdown is looked at only while it waits.
    pub(crate) async fn unless_stopping<T>(&self, work: impl Future<Output = T>) -> Option<T> {
        let stopping = async {
            match self.stopping.clone() {
                // An error is a sender gone: the daemon is past serving.
                Some(mut stopping) => {
                    let _ = stopping.wait_for(|stop| *stop).await;
                    tokio::time::sleep(DRAIN).await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            done = work => Some(done),
            () = stopping => None,
        }
    }

    /// What the rate-limited logs hold back, for the shutdown (a handle that keeps
    /// nothing else of the state alive: not the writer).
    pub fn held_logs(&self) -> HeldLogs {
        HeldLogs {
            refused: self.refused.clone(),
            busy: self.busy.clone(),
        }
    }
}

/// Log lines held back by a rate limit (see [`AppState::held_logs`]).
pub struct HeldLogs {
    refused: Arc<log_limit::LogLimit>,
    busy: Arc<log_limit::LogLimit>,
}

impl HeldLogs {
    /// Logs them now: at shutdown, where the end of their period would never come
    /// (the count of 401s held back was lost).
    pub fn flush(&self) {
        self.refused
            .flush(|held| webhook::log_held_refusals(held.count));
        self.busy.flush(|held| webhook::log_held_busy(held.count));
    }
}

/// Which routes a listener serves (`/healthz` is always there).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Routes {
    /// `POST /webhooks`.
    pub webhooks: bool,
    /// The read API: `/v1/...`, `/metrics` and `/openapi.json` (behind the read token
    /// when one is set).
    pub read_api: bool,
}

/// A listener's routes and middleware.
pub fn router(state: AppState, routes: Routes) -> Router {
    // One limit for the read API's routes together (a plain `ConcurrencyLimitLayer`
    // would give each route a limit of its own). The webhooks have one of their own,
    // whose places are taken once a request's signature is checked
    // (`webhook::receive`): bodies that trickle in, which anyone who reaches the
    // endpoint can send, held them until the time limit (a review: 1,100 such requests
    // kept a signed event waiting 29 s), and held up the read API too when the limit
    // was one (a probe's two such requests under `--concurrency-limit 2` held a read for
    // 29.7 s). `/healthz` stands outside both, so a supervisor asking whether the
    // mirror is alive never waits (a probe held 1,100 such connections: every answer,
    // `/healthz`'s included, took 4-28 s).
    let mut limited = Router::new();
    if routes.webhooks {
        limited = limited.route("/webhooks", post(webhook::receive));
    }
    if routes.read_api {
        let read = Router::new()
            .route("/v1/{resource}", get(read_api::list))
            .route("/v1/{resource}/{id}", get(read_api::get))
            .route("/metrics", get(metrics_text))
            .route("/openapi.json", get(openapi_json))
            .route_layer(middleware::from_fn_with_state(state.clone(), require_token))
            .layer(tower::limit::GlobalConcurrencyLimitLayer::new(
                state.config.concurrency_limit,
            ))
            .layer(middleware::from_fn_with_state(state.clone(), body_unread));
        limited = limited.merge(read);
    }
    let health = Router::new()
        .route(
            "/healthz",
            get(move |state, peer, headers, uri| {
                healthz(state, peer, headers, uri, routes.read_api)
            }),
        )
        .layer(middleware::from_fn_with_state(state.clone(), body_unread));
    Router::new()
        .merge(health)
        .merge(limited)
        .method_not_allowed_fallback(wrong_method)
        .fallback(move |state, request| not_found(state, request, routes))
        .layer(middleware::from_fn_with_state(
            state.config.request_timeout,
            time_limit,
        ))
        .layer(middleware::from_fn_with_state(state.clone(), valid_host))
        .layer(middleware::from_fn_with_state(
            (state.clone(), routes),
            observe,
        ))
        .with_state(state)
}

/// A request to a route that reads no body (each `GET` route's): a body sent along is
/// thrown away as a 404's is (`webhook::answer_without_body`), so that the connection
/// serves the sender's next request, or closes saying so. Left unread, a body of
/// 64 KiB or more closed the connection after the answer without a
/// `Connection: close` (a black-box probe).
async fn body_unread(State(state): State<AppState>, request: Request, next: Next) -> Response {
    use axum::body::HttpBody as _;
    if request.body().is_end_stream() && !request.headers().contains_key(header::EXPECT) {
        return next.run(request).await;
    }
    let (parts, body) = request.into_parts();
    let headers = parts.headers.clone();
    let response = next
        .run(Request::from_parts(parts, axum::body::Body::empty()))
        .await;
    webhook::answer_without_body(&state, &headers, body, response)
}

/// The read token, when one is configured; without one, a request addressed to this
/// machine by a loopback name, and not through a proxy ([`host`]).
async fn require_token(State(state): State<AppState>, request: Request, next: Next) -> Response {
    match refused_read(&state, request.headers(), request.uri()) {
        Some(refused) => refused,
        None => next.run(request).await,
    }
}

/// Why a request may not read the read API's routes, as its answer (401 or 403), if
/// it may not.
fn refused_read(state: &AppState, headers: &HeaderMap, uri: &Uri) -> Option<Response> {
    match &state.read_token {
        Some(token) if !read_api::authorized(headers, token) => {
            Some(read_api::unauthorized(headers))
        }
        Some(_) => None,
        None => {
            let names = &state.config.loopback_names;
            if let Some(header) = host::forwarded_by(headers) {
                Some(host::refused_through_a_proxy(header))
            } else if !host::addressed_to_loopback(headers, uri, names) {
                Some(host::refused(names, headers))
            } else {
                None
            }
        }
    }
}

async fn openapi_json() -> Response {
    axum::Json(openapi::document()).into_response()
}

/// 404 for a path no route serves; a route's path with a trailing slash
/// (`/v1/contacts/`, which some clients add) names the path without it, and one another
/// listener serves says so (`/v1/...` on the webhook listener beside `--read-listen`:
/// the docs' `curl` lines, pasted as written, met "no such route"; a new user's probe).
/// A body sent along is thrown away (`webhook::answer_without_body`).
async fn not_found(State(state): State<AppState>, request: Request, routes: Routes) -> Response {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path();
    let trimmed = without_trailing_slash(path);
    let route = trimmed.unwrap_or(path);
    let read_api_route = route.starts_with("/v1/") || matches!(route, "/metrics" | "/openapi.json");
    let message = match trimmed {
        _ if read_api_route && !routes.read_api => {
            "no such route here: this listener does not serve the read API, `/metrics` or \
             `/openapi.json` (they are on the address of `serve --read-listen`, or off with \
             --no-read-api)"
                .to_owned()
        }
        _ if route == "/webhooks" && !routes.webhooks => {
            "no such route here: webhooks are received on the address of `serve --listen`"
                .to_owned()
        }
        Some(route) => format!(
            "no such route: paths take no trailing slash (try {})",
            crate::store::query::shown(route)
        ),
        None => "no such route".to_owned(),
    };
    let response = webhook::error(StatusCode::NOT_FOUND, "invalid_request", &message);
    webhook::answer_without_body(&state, &parts.headers, body, response)
}

/// `path` without its trailing slashes, if that is the path of a route.
fn without_trailing_slash(path: &str) -> Option<&str> {
    let trimmed = path.trim_end_matches('/');
    if trimmed.len() == path.len() || trimmed.is_empty() {
        return None;
    }
    // As the read API names them: plural only (`/v1/contact/` was told to try
    // `/v1/contact`, itself a 404: a review).
    let is_resource = |name: &str| read_api::resource(name).is_ok();
    let read_api = trimmed.strip_prefix("/v1/").is_some_and(|rest| {
        match rest.split('/').collect::<Vec<_>>().as_slice() {
            [resource] => is_resource(resource),
            [resource, id] => is_resource(resource) && !id.is_empty(),
            _ => false,
        }
    });
    let known = matches!(
        trimmed,
        "/healthz" | "/metrics" | "/openapi.json" | "/webhooks"
    );
    (read_api || known).then_some(trimmed)
}

/// 405 for a route's wrong method (every route's: see [`router`]), with the JSON error
/// body every other error has, naming the methods the route takes (axum adds its
/// `Allow` header after every layer has seen the answer: a layer that wrote the
/// message from it could never name them; a review); but a read API
/// path that names no resource is answered as `GET` answers it, the read token first,
/// then 404 (`POST /v1/nope` was a 405: a probe). A body sent along is thrown away, as
/// for a 404.
async fn wrong_method(State(state): State<AppState>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let response = match read_api::unknown_resource(parts.uri.path()) {
        Some(unknown) => refused_read(&state, &parts.headers, &parts.uri)
            .unwrap_or_else(|| unknown.into_response()),
        None => {
            let methods = if parts.uri.path() == "/webhooks" {
                "POST"
            } else {
                "GET, HEAD"
            };
            webhook::error(
                StatusCode::METHOD_NOT_ALLOWED,
                "invalid_request",
                format!("this route accepts {methods}"),
            )
        }
    };
    webhook::answer_without_body(&state, &parts.headers, body, response)
}

/// Where a request stands, for [`time_limit`] and the webhook handler: when it began
/// (the handler gives up in time), whether its whole body was read (a request that
/// runs out of time after that was kept waiting by the mirror, not by its sender), and
/// whether the writer is applying its event (then its answer is waited for).
#[derive(Clone)]
pub(crate) struct RequestProgress {
    read: Arc<AtomicBool>,
    committing: Arc<AtomicBool>,
    pub(crate) started: Instant,
}

impl RequestProgress {
    /// Called by the handler once it has the whole body.
    pub(crate) fn body_read(&self) {
        self.read.store(true, Ordering::Relaxed);
    }

    /// Called by the handler when its deadline found the writer applying its event.
    pub(crate) fn writer_has_the_event(&self) {
        self.committing.store(true, Ordering::SeqCst);
    }
}

/// The request time limit (`--request-timeout`): a request not answered by then gets
/// 408 with a JSON body when its body had not all arrived, else 503 (retry: the wait
/// was the mirror's). The webhook handler gives up a little before the limit on an
/// event the writer has not begun (503, never stored); one the writer is applying is
/// waited for past the limit, so that its answer is true: a 503 always means the
/// event was not stored (a cascade over millions of rows can outlast the limit; it
/// was answered 503 and stored).
async fn time_limit(State(limit): State<Duration>, mut request: Request, next: Next) -> Response {
    let progress = RequestProgress {
        read: Arc::new(AtomicBool::new(false)),
        committing: Arc::new(AtomicBool::new(false)),
        started: Instant::now(),
    };
    request.extensions_mut().insert(progress.clone());
    // A request without a body to wait for (`/healthz`, the read API) that runs out of
    // time was kept waiting by the mirror.
    let bodiless = matches!(
        *request.method(),
        axum::http::Method::GET | axum::http::Method::HEAD
    );
    let mut response = std::pin::pin!(next.run(request));
    if let Ok(response) = tokio::time::timeout(limit, response.as_mut()).await {
        return response;
    }
    if progress.committing.load(Ordering::SeqCst) {
        return response.await;
    }
    if bodiless {
        webhook::unavailable("the request did not finish within the request time limit")
    } else if progress.read.load(Ordering::Relaxed) {
        // The handler gives up on events the writer has not taken before the limit:
        // this one never reached it.
        webhook::unavailable("the event was not stored within the request time limit; retry later")
    } else {
        // The rest of the body may still come: the connection cannot serve another
        // request, and says so (RFC 9110, 15.5.9; a probe found it closed unsaid).
        let mut response = webhook::error(
            StatusCode::REQUEST_TIMEOUT,
            "timeout",
            "the request did not arrive within the request time limit",
        );
        webhook::close_after(&mut response);
        response
    }
}

/// Counts requests by route and status and observes their latency; marks every answer
/// `X-Content-Type-Options: nosniff`.
async fn observe(
    State((state, routes)): State<(AppState, Routes)>,
    request: Request,
    next: Next,
) -> Response {
    let start = Instant::now();
    let route = metrics::route_of(request.uri().path(), routes);
    let asked = access::asked(&request);
    let mut response = next.run(request).await;
    // A browser sent to the read API never takes a message's text for a page of its
    // own to run (a black-box probe found the header missing).
    response.headers_mut().insert(
        header::X_CONTENT_TYPE_OPTIONS,
        axum::http::HeaderValue::from_static("nosniff"),
    );
    let taken = start.elapsed();
    state
        .metrics
        .record_request(route, response.status().as_u16(), taken.as_secs_f64());
    if let Some(asked) = asked {
        access::answered(asked, response.status(), taken);
    }
    response
}

/// 400 for a request whose `Host` header is wrong ([`host_refusal`]; RFC 9112, 3.2):
/// an HTTP/1.1 request without one was answered as HTTP/1.0's is, the read API's data
/// included; two, or one that names no host, were answered too (black-box probes).
/// Its body is thrown away as a 404's is.
async fn valid_host(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Some(wrong) = host_refusal(&request) else {
        return next.run(request).await;
    };
    let (parts, body) = request.into_parts();
    let refused = webhook::error(StatusCode::BAD_REQUEST, "invalid_request", wrong);
    webhook::answer_without_body(&state, &parts.headers, body, refused)
}

/// What is wrong with `request`'s `Host` header, if anything: missing from HTTP/1.1
/// (only HTTP/1.0 may leave it out), given twice, or not a host and port ([`host`]'s
/// reading; empty is allowed).
fn host_refusal(request: &Request) -> Option<&'static str> {
    let mut hosts = request.headers().get_all(header::HOST).iter();
    match (hosts.next(), hosts.next()) {
        (None, _) if request.version() >= axum::http::Version::HTTP_11 => {
            Some("an HTTP/1.1 request must carry a Host header")
        }
        (None, _) => None,
        (Some(_), Some(_)) => Some("a request carries one Host header, not more"),
        (Some(value), None) => value
            .to_str()
            .ok()
            .and_then(host::host_of)
            .is_none()
            .then_some("the Host header names no host (a name or address, and a port)"),
    }
}

/// How long a successful `/healthz` probe answers for the next requests: each probe
/// is a commit (with its fsync), and `/healthz` is open to anyone, outside the
/// concurrency limit; a flood of it halved the webhooks' throughput. Now it costs at
/// most one commit a second. (A failed probe answers the requests that waited for it
/// only: while the database cannot commit, they do not wait 5 s each in turn.)
pub const HEALTH_FRESH: Duration = Duration::from_secs(1);

/// How long `/healthz` waits for its probe before it asks, and asks again, whether
/// the writer is at work on a long transaction or waits for an import's.
const HEALTH_BUSY_CHECK: Duration = Duration::from_millis(500);

/// 200 when the writer is alive and the database takes a commit, or the writer is at
/// work on a long transaction, or waits for an import's.
/// `/healthz` on a listener that serves the read API (`read_api`) or not, asked by
/// `peer` (unknown in tests that call the router alone).
async fn healthz(
    State(state): State<AppState>,
    peer: Option<axum::Extension<axum::extract::ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    uri: Uri,
    read_api: bool,
) -> Response {
    let arrived = std::time::Instant::now();
    // Why it fails is said to those who may read the read API: with its token, or,
    // without one, a request addressed to loopback and not through a proxy, on the read
    // API's listener (loopback's alone without a token) or from this machine. To
    // others (a public webhook listener's), that it fails: the reason names the
    // database's path, and other internals (a review). Not by `Host` alone on a
    // listener without the read API: anyone who reaches a public one may send
    // `Host: 127.0.0.1` (a review).
    let from_here = peer.is_some_and(|peer| peer.0.0.ip().to_canonical().is_loopback());
    let may_hear_why = state.read_token.is_some() || read_api || from_here;
    let unavailable = |why: String| {
        let why = if may_hear_why && refused_read(&state, &headers, &uri).is_none() {
            why
        } else {
            "the mirror cannot store events now (asked as the read API is, /healthz says \
             why; so does the daemon's log)"
                .to_owned()
        };
        webhook::error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", why)
    };
    // Events failing to commit: said at once, without a probe's commit, whose answer
    // would be this one (a cached success said ok for up to a second after they began
    // to fail, a database removed under the daemon too: a probe; and every check made
    // a commit while they failed: a review).
    if let Some(failing) = state.writer.events_failing() {
        return unavailable(failing.to_string());
    }
    // Draining to a stop: a balancer probing over a kept-alive connection heard "ok"
    // while new connections were refused (a black-box probe).
    if state.is_stopping() {
        return unavailable("the mirror is shutting down".to_owned());
    }
    // One probe at a time: the requests that waited for it take its answer. A success
    // stands for a while; a failure only for those that waited (a later request
    // probes again: the database may take commits by then).
    let mut last = state.last_probe.lock().await;
    let found = match &*last {
        Some((at, Ok(()))) if at.elapsed() < HEALTH_FRESH => Ok(()),
        Some((at, Err(message))) if *at >= arrived => Err(message.clone()),
        _ => {
            // The writer may be at work on one event's cascade, or wait for an
            // import's transaction (one event of it can cascade for seconds): alive,
            // and busy. Said after a moment, not after the 5 s a supervisor may not
            // wait (which restarted a daemon in the middle of a cascade that the
            // sender's retry then began again).
            let busy = || {
                state.writer.worked_within(HEALTH_BUSY_CHECK)
                    || state
                        .config
                        .database
                        .as_deref()
                        .is_some_and(crate::lock::ImportMark::is_held)
            };
            let probe = state.writer.probe();
            tokio::pin!(probe);
            let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
            let found = loop {
                let wait = HEALTH_BUSY_CHECK.min(deadline - tokio::time::Instant::now());
                match tokio::time::timeout(wait, &mut probe).await {
                    Ok(answer) => break answer.map_err(|e| e.to_string()),
                    Err(_) if busy() => break Ok(()),
                    Err(_) if tokio::time::Instant::now() >= deadline => {
                        break Err("the writer did not answer within 5 s".to_owned());
                    }
                    Err(_) => {}
                }
            };
            *last = Some((std::time::Instant::now(), found.clone()));
            found
        }
    };
    drop(last);
    match found {
        Ok(()) => axum::Json(serde_json::json!({"status": "ok"})).into_response(),
        Err(message) => unavailable(message),
    }
}

async fn metrics_text(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let accept = headers
        .get_all(axum::http::header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok());
    let format = metrics::Format::accepted(accept);
    (
        [(axum::http::header::CONTENT_TYPE, format.content_type())],
        state.metrics.render_as(format),
    )
        .into_response()
}

/// Logs accept failures the 10 s limit held back: at the end of their period, and at
/// the stop.
fn log_held_accept_failures(held: log_limit::Held) {
    let first = held.first.unwrap_or_default();
    tracing::warn!(
        error = %first,
        unlogged_failures = held.count,
        "accept failures since the last line: {} (the first of them: {first})",
        held.count
    );
}

/// The most a request's head (request line and headers) may take, in bytes; past it,
/// 431. A webhook's head is a few hundred bytes, the read API's about as small.
/// hyper's own limit is its read buffer, ~400 KiB per connection: 3,500 connections
/// each sending an unfinished 380 KB header held 1.8 GB (a black-box probe).
pub const MAX_HEAD_BYTES: usize = 32 * 1024;

/// The largest read buffer of a connection: a head up to [`MAX_HEAD_BYTES`] and room
/// to read a body in chunks.
const MAX_READ_BUFFER: usize = 64 * 1024;

/// How long, after the shutdown signal, open connections keep being served (each
/// answer closing its connection) before the idle ones are closed: see [`serve`].
pub const DRAIN: Duration = Duration::from_millis(250);

/// Serves `router` on `listener` until `shutdown` resolves; then drains and returns.
///
/// Draining: the connections the kernel had already accepted are taken (their
/// requests may be written already), the listener is closed (a new connection is
/// refused: its sender knows nothing was delivered), and for [`DRAIN`] (or until every
/// connection has closed) open connections are served as before, each answer with
/// `Connection: close` (requests pipelined behind such an answer are left unread, as
/// HTTP allows). Then idle connections are closed and in-flight requests finish (up
/// to `grace`). Closing a keep-alive connection at once dropped the requests its
/// client had just written, unanswered: about two per shutdown of 32 busy senders,
/// which could not tell whether their event was stored.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    connections: Connections,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let Connections {
        header_timeout,
        write_timeout,
        grace,
        metrics,
        places,
    } = connections;
    let graceful = GracefulShutdown::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .max_header_size(MAX_HEAD_BYTES)
        .max_buf_size(MAX_READ_BUFFER)
        // A client may shut its sending side once its request is written (`nc -N`,
        // some health checkers): the end of input is then no reason to drop the
        // request unanswered, as hyper does by default.
        .half_close(true)
        .keep_alive(true);
    tokio::pin!(shutdown);
    // Out of file descriptors, accepting fails 20 times a second until one is closed.
    let accept_failures = Arc::new(log_limit::LogLimit::default());
    let counts = Counts::default();
    // `place`: the connection's place among those that may be open at once, given up
    // when it closes.
    let connect = |stream: tokio::net::TcpStream,
                   peer: SocketAddr,
                   place: Option<tokio::sync::OwnedSemaphorePermit>| {
        let answering = counts.answering.clone();
        let draining = counts.draining.clone();
        let served = Arc::new(AtomicBool::new(false));
        let serving = served.clone();
        // The connection counted as answering from its request's start until it
        // closes or its next request starts: an answer is written after its handler
        // returned, and shutdown waited for handlers only, cutting off a 27 MB read
        // API page in the middle (a black-box probe).
        let answer_slot = Arc::new(std::sync::Mutex::new(None::<InFlight>));
        let answer_held = answer_slot.clone();
        // Who is at the other end, for `/healthz` (`ConnectInfo`, as axum's own
        // `into_make_service_with_connect_info` gives it).
        let with_peer = ServiceExt::<axum::http::Request<hyper::body::Incoming>>::map_request(
            router.clone(),
            move |mut request: axum::http::Request<hyper::body::Incoming>| {
                request
                    .extensions_mut()
                    .insert(axum::extract::ConnectInfo(peer));
                request
            },
        );
        let counted = ServiceExt::<axum::http::Request<hyper::body::Incoming>>::map_future(
            with_peer,
            move |answer| {
                serving.store(true, Ordering::Relaxed);
                let counted = InFlight::enter(answering.clone());
                *answer_held.lock().unwrap_or_else(|e| e.into_inner()) = Some(counted);
                let draining = draining.clone();
                async move {
                    let mut answer = answer.await;
                    if draining.load(Ordering::SeqCst)
                        && let Ok(response) = &mut answer
                    {
                        response.headers_mut().insert(
                            axum::http::header::CONNECTION,
                            axum::http::HeaderValue::from_static("close"),
                        );
                    }
                    answer
                }
            },
        );
        let service = TowerToHyperService::new(counted);
        let mut stream = tokio_io_timeout::TimeoutStream::new(stream);
        stream.set_write_timeout(Some(write_timeout));
        let connection = builder.serve_connection(TokioIo::new(Box::pin(stream)), service);
        let connection = graceful.watch(connection);
        let open = InFlight::enter(counts.connections.clone());
        let metrics = metrics.clone();
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                metrics.record_closed(&e, served.load(Ordering::Relaxed));
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
            drop(answer_slot.lock().unwrap_or_else(|e| e.into_inner()).take());
            drop(open);
            drop(place);
        });
    };
    loop {
        // A place first: at the limit, new connections wait in the kernel's queue
        // rather than take the file descriptors the database needs (a review: 5,000
        // connections that never sent their head ran the daemon out of them).
        let place = tokio::select! {
            place = places.clone().acquire_owned() => place.ok(),
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => {
                    if let Some(unlogged) = accept_failures.succeeded() {
                        tracing::info!(unlogged_failures = unlogged, "accepting connections again");
                    }
                    accepted
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    metrics.accept_failures.inc();
                    let told = accept_failures
                        .failed(Some(&e.to_string()), log_held_accept_failures);
                    if let Some(unlogged) = told {
                        tracing::warn!(
                            error = %e,
                            unlogged_failures = unlogged,
                            "accept failed (further failures are logged at most every 10 s)"
                        );
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        connect(stream, peer, place);
    }
    accept_failures.flush(log_held_accept_failures);
    counts.draining.store(true, Ordering::SeqCst);
    // The connections the kernel accepted and we had not: closing the listener would
    // reset them, their requests perhaps written.
    while let Some(Ok((stream, peer))) = std::future::poll_fn(|cx| {
        std::task::Poll::Ready(match listener.poll_accept(cx) {
            std::task::Poll::Ready(accepted) => Some(accepted),
            std::task::Poll::Pending => None,
        })
    })
    .await
    {
        // Without a place when none is left: these are answered and closed, so they
        // pass the limit by at most the kernel's queue, for a moment.
        let place = places.clone().try_acquire_owned().ok();
        connect(stream, peer, place);
    }
    drop(listener);
    let connections_closed = async {
        while counts.connections.load(Ordering::SeqCst) > 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    let _ = tokio::time::timeout(DRAIN.min(grace), connections_closed).await;
    // Done when every connection is (idle ones close at once), or when none is
    // answering a request: a connection whose request head has not all come is no
    // request (one held the shutdown for the whole header time limit). Its task ends
    // with the runtime. One answering closes once its answer is written (keep-alive
    // is off from now).
    let answers_done = async {
        while counts.answering.load(Ordering::SeqCst) > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // An answer written a moment ago is still being flushed to its connection.
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let done = async {
        tokio::select! {
            () = graceful.shutdown() => {}
            () = answers_done => {}
        }
    };
    if tokio::time::timeout(grace, done).await.is_err() {
        tracing::warn!("in-flight requests did not finish within {grace:?}");
    }
    Ok(())
}

/// How [`serve`] holds each connection to time, and where it counts those that end
/// with an error (`protocol_mirror_http_connections_closed_on_error`).
pub struct Connections {
    /// Longest a client may take to send a request's head (`--header-timeout`).
    pub header_timeout: Duration,
    /// Longest an answer's socket may take no more of it before the answer is cut off
    /// and its connection closed: hyper waits for a stalled reader for good, and a
    /// read API page (up to 100 objects of up to a MiB) stayed in memory for as long
    /// (a black-box probe: 40 readers that never read held 2.3 GB). The kernel
    /// reports room only once about a third of the send buffer drained, so a reader
    /// of less than about that much per timeout is cut off too.
    pub write_timeout: Duration,
    /// How long shutdown waits for in-flight requests.
    pub grace: Duration,
    /// Where the connections that end with an error are counted.
    pub metrics: Arc<metrics::Metrics>,
    /// The places of the connections that may be open at once on this listener
    /// (`--max-connections`).
    pub places: Arc<tokio::sync::Semaphore>,
}

/// What [`serve`] counts: connections answering a request (from its start until the
/// connection closes or starts its next one), open connections, and whether it is
/// draining.
#[derive(Default)]
struct Counts {
    answering: Arc<AtomicUsize>,
    connections: Arc<AtomicUsize>,
    draining: Arc<AtomicBool>,
}

/// One connection answering a request, or one open connection, counted while it
/// lives (see [`serve`]).
struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    fn enter(count: Arc<AtomicUsize>) -> InFlight {
        count.fetch_add(1, Ordering::SeqCst);
        InFlight(count)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// How many connections the kernel holds for the daemon before it accepts them (the
/// kernel caps it at `net.core.somaxconn`). `TcpListener::bind` asks for 128, as the
/// standard library does: a burst of new connections overflowed that (about 3 in 1,000
/// of a flood; a black-box probe), and each client left out waited a second for its
/// connection's retry.
pub const BACKLOG: u32 = 1024;

/// Listens on the first of `addrs` that can be bound, trying them in turn as
/// `TcpListener::bind` tries a name's addresses (the error is the last one's), with
/// `SO_REUSEADDR` as it sets it and a [`BACKLOG`]-deep queue. Called within a tokio
/// runtime.
pub fn listen(addrs: &[SocketAddr]) -> std::io::Result<TcpListener> {
    let listen_on = |addr: &SocketAddr| {
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        socket.bind(*addr)?;
        socket.listen(BACKLOG)
    };
    let mut last = None;
    // Each step fails for that address alone: a host without IPv6 cannot make the
    // socket of `localhost`'s `::1`, and listens on its `127.0.0.1` (a review).
    for addr in addrs {
        match listen_on(addr) {
            Ok(listener) => return Ok(listener),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "could not resolve to any address",
        )
    }))
}

#[cfg(test)]
mod tests {
    use std::net::TcpStream;

    /// A listener on a free loopback port, made within `runtime`, and its address.
    fn on_loopback(
        runtime: &tokio::runtime::Runtime,
    ) -> (tokio::net::TcpListener, std::net::SocketAddr) {
        let listener = runtime
            .block_on(async { super::listen(&["127.0.0.1:0".parse().unwrap()]) })
            .unwrap();
        let addr = listener.local_addr().unwrap();
        (listener, addr)
    }

    /// Connections the daemon has not accepted yet wait in the kernel's queue: 300
    /// (more than the 128 `TcpListener::bind` asks for) all connect at once.
    #[test]
    fn a_burst_of_connections_waits_in_the_backlog() {
        // The kernel caps every backlog at `net.core.somaxconn` (4096 on current
        // Linux; 128 before 5.4, and on macOS): there this cannot be shown.
        let cap = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
            .ok()
            .and_then(|text| text.trim().parse::<u32>().ok());
        if cap.is_none_or(|cap| cap < 300) {
            eprintln!("skipped: net.core.somaxconn is {cap:?}, not the 300 this queues");
            return;
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        // Listening, never accepting.
        let (_listener, addr) = on_loopback(&runtime);
        let mut held = Vec::new();
        for n in 0..300 {
            // Not accepted: beyond the queue, the kernel drops the handshake and
            // connecting waits for its retry, a second later.
            match TcpStream::connect_timeout(&addr, std::time::Duration::from_millis(500)) {
                Ok(stream) => held.push(stream),
                Err(e) => panic!("connection {n} was not queued: {e}"),
            }
        }
        assert_eq!(held.len(), 300);
    }

    /// An answer its reader stops reading is cut off after the write timeout, its
    /// connection closed (the answer was held for good: a probe's 40 readers of a
    /// 50 MB page that never read held 2.3 GB).
    #[test]
    fn an_answer_nobody_reads_is_cut_off() {
        use std::io::{Read, Write};
        const ANSWER: usize = 64 * 1024 * 1024;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let (listener, addr) = on_loopback(&runtime);
        let router =
            axum::Router::new().route("/big", axum::routing::get(|| async { vec![b'x'; ANSWER] }));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let metrics = std::sync::Arc::new(super::metrics::Metrics::new(None));
        let connections = super::Connections {
            header_timeout: std::time::Duration::from_secs(10),
            write_timeout: std::time::Duration::from_millis(500),
            grace: std::time::Duration::from_secs(1),
            metrics: metrics.clone(),
            places: std::sync::Arc::new(tokio::sync::Semaphore::new(10)),
        };
        let served = runtime.spawn(super::serve(listener, router, connections, async {
            let _ = stopped.await;
        }));
        let mut client = TcpStream::connect(addr).unwrap();
        client
            .write_all(b"GET /big HTTP/1.1\r\nhost: x\r\n\r\n")
            .unwrap();
        std::thread::sleep(std::time::Duration::from_secs(2));
        client
            .set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let (mut read, mut buffer) = (0, vec![0; 1 << 20]);
        while let Ok(n @ 1..) = client.read(&mut buffer) {
            read += n;
        }
        assert!(read > 0 && read < ANSWER, "read {read} of {ANSWER} bytes");
        let _ = stop.send(());
        runtime.block_on(served).unwrap().unwrap();
        let text = metrics.render();
        assert!(
            text.contains(r#"http_connections_closed_on_error_total{reason="write_timeout"} 1"#),
            "{text}"
        );
    }

    #[test]
    fn the_last_address_that_cannot_be_bound_is_the_error() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let error = runtime
            .block_on(async { super::listen(&[addr]) })
            .unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::AddrInUse);
        let error = runtime.block_on(async { super::listen(&[]) }).unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::InvalidInput);
        // The first that can be bound is taken.
        let listener = runtime
            .block_on(async { super::listen(&[addr, "127.0.0.1:0".parse().unwrap()]) })
            .unwrap();
        assert_ne!(listener.local_addr().unwrap(), addr);
    }
}
