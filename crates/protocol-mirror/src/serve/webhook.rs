//! `POST /webhooks`: size limit, then signature over the raw body, then parsing,
//! then the writer. Statuses as in SPEC section 3. Bodies over 16 KiB are read within
//! a budget ([`READING_BUDGET_KIB`]), signed events parsed within another
//! ([`PARSED_BUDGET_KIB`]); a shutdown answers 503 to the requests still reading or
//! waiting for room, and waits for those the writer has.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::AppState;
use super::writer::WriteError;
use crate::apply::{Applied, Delivery, Outcome};

/// An error answer: `{"type": ..., "message": ...}`. Messages never contain a secret,
/// a signature or the expected digest.
pub(crate) fn error(status: StatusCode, kind: &str, message: impl Into<String>) -> Response {
    let body = json!({"type": kind, "message": message.into()});
    (status, axum::Json(body)).into_response()
}

pub(crate) fn unavailable(message: impl Into<String>) -> Response {
    let message = message.into();
    tracing::debug!(reason = ?message, "answered 503");
    let mut response = error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message);
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
    response
}

/// 503 for a webhook the daemon stopped waiting for as it shuts down (its body had not
/// all come, or it waited for room to be parsed): nothing of it is stored.
fn shutting_down() -> Response {
    unavailable("the mirror is shutting down; retry later")
}

/// 413, closing the connection: the rest of an oversized body is not worth reading.
fn too_large(limit: usize) -> Response {
    tracing::debug!(limit, "refused a webhook (413): its body is over the limit");
    let mut response = error(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        format!("the body exceeds the limit of {limit} bytes"),
    );
    close_after(&mut response);
    response
}

/// Asks the connection to close after `response`: a body it was sent is not read.
pub(crate) fn close_after(response: &mut Response) {
    response.headers_mut().insert(
        header::CONNECTION,
        header::HeaderValue::from_static("close"),
    );
}

/// The transfer codings of a request whose `Transfer-Encoding` is other than `chunked`
/// alone. Such a body was read as chunked, the other codings unheeded (`gzip,
/// chunked`, `chunked, chunked`: a hostile probe), where a proxy in front may frame it
/// otherwise; it is refused, and the connection closed, its framing unsure.
fn unsupported_codings(headers: &HeaderMap) -> Option<String> {
    let mut codings = Vec::new();
    for value in headers.get_all(header::TRANSFER_ENCODING) {
        let value = String::from_utf8_lossy(value.as_bytes());
        codings.extend(
            value
                .split(',')
                .map(|coding| coding.trim().to_ascii_lowercase()),
        );
    }
    (!codings.is_empty() && codings != ["chunked"]).then(|| codings.join(", "))
}

/// The most of an oversized body read (and thrown away) after the 413 is sent.
const DRAIN_CAP: u64 = 64 * 1024 * 1024;

/// How long the rest of an oversized body may pause before the mirror stops reading it.
const DRAIN_IDLE: std::time::Duration = std::time::Duration::from_secs(1);

/// Reads and discards what is left of `body`: up to `cap` bytes, while data keeps
/// coming (a pause of [`DRAIN_IDLE`] ends it).
async fn drain(mut body: Body, cap: u64) {
    use http_body_util::BodyExt;
    let mut read = 0u64;
    while read <= cap {
        match tokio::time::timeout(DRAIN_IDLE, body.frame()).await {
            Ok(Some(Ok(frame))) => {
                read += frame.data_ref().map_or(0, |data| data.len() as u64);
            }
            _ => return,
        }
    }
}

/// The 413 for a body over the limit, answered at once (decided from `Content-Length`
/// before the body is read, or as soon as a chunked body passes the limit). A sender
/// that writes its whole body before reading the answer (most HTTP clients without
/// `Expect: 100-continue`) would see its connection reset, not the 413, if the mirror
/// closed the connection with the body unread: so the rest is read and thrown away in
/// the background, up to [`DRAIN_CAP`] bytes, while it keeps coming and for at most the
/// request time limit. Nothing of it is kept.
fn refuse_oversized(
    state: &AppState,
    body: Body,
    remaining: Option<u64>,
    limit: usize,
) -> Response {
    discard(state, body, remaining);
    too_large(limit)
}

/// `response`, to a request whose body no one wants (a 404, a 405). The body is read in
/// the background and thrown away, as after a 413, so that the connection can serve
/// the sender's next request; it was left unread, the connection closed with the rest
/// of the body in it, and the sender's next write met a broken pipe. The connection
/// closes instead when more than [`DRAIN_CAP`] bytes are declared to come, or when the
/// sender waits to be told to send its body (`Expect: 100-continue`): the answer tells
/// it not to, so what it sends next is a request, which a drain would swallow.
pub(crate) fn answer_without_body(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
    mut response: Response,
) -> Response {
    let waits_to_send = headers.contains_key(header::EXPECT);
    if waits_to_send || !discard(state, body, crate::declared_length(headers)) {
        close_after(&mut response);
    }
    response
}

/// Reads what is left of a body nobody wants in the background and throws it away (see
/// [`refuse_oversized`]), for at most the request time limit, and no longer than
/// [`super::DRAIN`] into a shutdown: its connection, kept open meanwhile, held the
/// shutdown for as long as a sender dribbled it (a review). Returns `false`, reading
/// nothing, when more than [`DRAIN_CAP`] bytes are declared to come: then the
/// connection had better close.
fn discard(state: &AppState, body: Body, remaining: Option<u64>) -> bool {
    use axum::body::HttpBody as _;
    if remaining.is_some_and(|n| n > DRAIN_CAP) {
        return false;
    }
    if !body.is_end_stream() {
        let state = state.clone();
        let time_limit = state.config.request_timeout;
        tokio::spawn(async move {
            let drained = tokio::time::timeout(time_limit, drain(body, DRAIN_CAP));
            let _ = state.unless_stopping(drained).await;
        });
    }
    true
}

enum BodyError {
    TooLarge,
    Unreadable,
    /// No room in the budget of large bodies being read before the deadline.
    Busy,
}

/// The capacity a body buffer of `capacity` grows to when it must hold `needed` bytes:
/// double, but never past `most` (the declared length, or the limit) unless `needed`
/// is.
fn grown_capacity(capacity: usize, needed: usize, most: usize) -> usize {
    (capacity * 2).min(most).max(needed)
}

/// A body read whole, with its share of the budget of large bodies (none for a small
/// one): held until the body is parsed and dropped.
struct ReadBody {
    bytes: axum::body::Bytes,
    _share: Option<tokio::sync::OwnedSemaphorePermit>,
}

/// The whole body, unless it is over `limit` bytes (then the rest is left in `body`).
///
/// The buffer grows as bytes arrive (doubling), never past the declared length when
/// there is one: a body held open one byte short of 1 MiB holds 1 MiB, not the 2 MiB
/// that doubling past it gave (a black-box probe: 1,000 such unsigned bodies took
/// 2.9 GB). Nothing is reserved before bytes arrive. A body that grows past
/// [`SMALL_EVENT_BYTES`] holds a share of `reading` for what its buffer holds, taken
/// before the buffer grows while there is room at once. (It took a share for all it
/// might grow to, its declared length or the limit, at once: a black-box probe's 64
/// connections declaring 1 MiB that sent 17 KB each and stalled, 1.09 MB in all, held
/// the whole budget, and every signed event over 16 KiB got 503 for as long as they
/// stayed. Now filling the budget takes sending at least half as much.) When there
/// is no room at once, it never waits holding part of the budget: bodies each holding
/// part and waiting for more waited for each other until their deadline (a review:
/// 128 bodies of 1 MiB at once were answered after 9 s, 18 of them 503). It gives its
/// part back and waits, until `deadline` ([`BodyError::Busy`] after it), for what its
/// buffer needs now, whole (waiting for all it might grow to gave a body that waited
/// and then stalled a share of its declared length: a re-review kept every body over
/// 16 KiB at 503 with 64 such bodies every 1.5 s). While it waits, its buffer is not
/// counted in the budget but in another as large, [`Reading::waiting`], and a body
/// that finds no room there either is refused at once ([`BodyError::Busy`]): bodies
/// being read hold up to about twice the budget. (Waiting buffers were counted
/// nowhere: a black-box probe's 1,000 unsigned bodies of 1 MiB, sent 64 KiB to each
/// in turn, took the daemon to 1 GB.) A body that may grow past the whole budget (a
/// `--max-body-bytes` over 64 MiB) takes all of it at once and is read alone.
async fn read_limited(
    body: &mut Body,
    limit: usize,
    declared: Option<u64>,
    reading: &Reading,
    deadline: Option<tokio::time::Instant>,
) -> Result<ReadBody, BodyError> {
    use http_body_util::BodyExt;
    let most = declared.map_or(limit, |n| usize::try_from(n).unwrap_or(limit).min(limit));
    let alone = most.div_ceil(1024) >= READING_BUDGET_KIB;
    let mut bytes = Vec::new();
    let mut share: Option<tokio::sync::OwnedSemaphorePermit> = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| BodyError::Unreadable)?;
        if let Some(data) = frame.data_ref() {
            let needed = bytes.len() + data.len();
            if needed > limit {
                return Err(BodyError::TooLarge);
            }
            let capacity = if needed > bytes.capacity() {
                grown_capacity(bytes.capacity(), needed, most)
            } else {
                bytes.capacity()
            };
            if needed > SMALL_EVENT_BYTES {
                let kib = if alone {
                    READING_BUDGET_KIB
                } else {
                    capacity.div_ceil(1024).min(READING_BUDGET_KIB)
                };
                // What it holds while it waits: its buffer, and the data in hand.
                let buffered = bytes.capacity() + data.len();
                hold(&mut share, reading, kib, buffered, deadline).await?;
            }
            if capacity > bytes.capacity() {
                bytes.reserve_exact(capacity - bytes.len());
            }
            bytes.extend_from_slice(data);
        }
    }
    Ok(ReadBody {
        bytes: bytes.into(),
        _share: share,
    })
}

/// Makes `share` hold `kib` of the reading budget (it holds at least that already, or
/// the rest is taken at once while there is room); else its part goes back and all
/// `kib` are waited for, whole, until `deadline`: never waiting while holding part (see
/// [`read_limited`]). While it waits, the `buffered` bytes the body holds take their
/// room in the budget of waiting bodies, at once or never ([`BodyError::Busy`]).
async fn hold(
    share: &mut Option<tokio::sync::OwnedSemaphorePermit>,
    reading: &Reading,
    kib: usize,
    buffered: usize,
    deadline: Option<tokio::time::Instant>,
) -> Result<(), BodyError> {
    let held = share.as_ref().map_or(0, |share| share.num_permits());
    if kib <= held {
        return Ok(());
    }
    let more = u32::try_from(kib - held).unwrap_or(u32::MAX);
    match (
        reading.budget.clone().try_acquire_many_owned(more),
        share.as_mut(),
    ) {
        (Ok(more), Some(share)) => share.merge(more),
        (Ok(more), None) => *share = Some(more),
        (Err(_), _) => {
            drop(share.take());
            let buffered_kib = buffered.div_ceil(1024).clamp(1, READING_BUDGET_KIB);
            let _waiting = reading
                .waiting
                .clone()
                .try_acquire_many_owned(u32::try_from(buffered_kib).unwrap_or(u32::MAX))
                .map_err(|_| BodyError::Busy)?;
            *share = Some(
                budget_share(&reading.budget, kib * 1024, READING_BUDGET_KIB, deadline)
                    .await
                    .ok_or(BodyError::Busy)?,
            );
        }
    }
    Ok(())
}

/// 401 for a webhook whose signature does not verify, with the challenge a 401 must
/// carry (RFC 9110, 15.5.2; the read API's had it, the webhooks' not: a probe): the
/// HMAC-SHA256 of the body, in the header it names.
fn unsigned(reason: String) -> Response {
    /// The scheme and [`protocol_verify::HEADER_NAME`] (a test holds them alike).
    const CHALLENGE: &str = "HMAC-SHA256 header=\"x-protocol-signature\"";
    let mut response = error(StatusCode::UNAUTHORIZED, "unauthorized", reason);
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static(CHALLENGE),
    );
    response
}

/// Logs `count` webhooks refused for their signature that the rate limit held back:
/// at the end of their period, and at shutdown.
pub(crate) fn log_held_refusals(count: u64) {
    tracing::warn!(
        refused_since_last_line = count,
        "webhooks refused (401) for their signature since the last line: {count}"
    );
}

pub(crate) fn log_held_busy(count: u64) {
    tracing::warn!(
        busy_since_last_line = count,
        "webhooks answered 503 (busy) since the last line: {count}"
    );
}

/// 503 for a webhook the mirror is too busy to take now, logged at a bounded rate
/// (15,000 such answers logged nothing at the default level: an operator probe).
fn busy(state: &AppState, message: &str) -> Response {
    let told = state.busy.failed(None, |held| log_held_busy(held.count));
    if let Some(unlogged) = told {
        tracing::warn!(
            busy_since_last_line = unlogged,
            "answered a webhook 503: {message} (the sender retries; if this lasts, see \
             --queue and --concurrency-limit; protocol_mirror_http_requests_total counts \
             the 503s)"
        );
    }
    unavailable(message)
}

pub(crate) async fn receive(State(state): State<AppState>, request: Request<Body>) -> Response {
    if let Some(codings) = unsupported_codings(request.headers()) {
        tracing::debug!(codings = ?codings, "refused a webhook (400): its transfer codings");
        let mut response = error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            format!(
                "Transfer-Encoding {} is not supported: send the body with Content-Length, \
                 or chunked alone",
                crate::store::query::shown(&codings)
            ),
        );
        close_after(&mut response);
        return response;
    }
    let limit = state.config.max_body_bytes;
    // 413 is decided from Content-Length before the body is read: it wins over 401.
    let declared = crate::declared_length(request.headers());
    if declared.is_some_and(|n| n > limit as u64) {
        return refuse_oversized(&state, request.into_body(), declared, limit);
    }
    let (parts, mut body) = request.into_parts();
    // Give up a little before the request's time limit, while the answer can still be
    // true: an event the writer has not begun to apply is then never stored (503); one
    // it has begun is waited for.
    let progress = parts.extensions.get::<super::RequestProgress>();
    let deadline = progress.map(|clock| {
        let limit = state.config.request_timeout;
        let margin = (limit / 4).min(std::time::Duration::from_secs(1));
        tokio::time::Instant::from_std(clock.started + limit.saturating_sub(margin))
    });
    let read = read_limited(&mut body, limit, declared, &state.budgets.reading, deadline);
    let Some(read) = state.unless_stopping(read).await else {
        return shutting_down();
    };
    let read = match read {
        Ok(read) => {
            if let Some(progress) = progress {
                progress.body_read();
            }
            read
        }
        Err(BodyError::Busy) => {
            return unavailable("the mirror is busy reading large bodies; retry later");
        }
        // A chunked body (or one longer than it said) over the limit.
        Err(BodyError::TooLarge) => {
            return refuse_oversized(&state, body, None, limit);
        }
        // A client that stopped sending, or broke the framing.
        Err(BodyError::Unreadable) => {
            tracing::debug!("refused a webhook (400): its body could not be read");
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "the body could not be read",
            );
        }
    };
    let signatures = parts.headers.get_all(protocol_verify::HEADER_NAME);
    let verified = state
        .verifier
        .verify_values(signatures, &read.bytes)
        .map_err(|e| e.to_string());
    if let Err(reason) = verified {
        // An operator needs to hear of a sender with a wrong secret, at a bounded
        // rate (anyone can send these). The reason never holds a secret or digest.
        // Held back: told of at the end of the period, even if none follows.
        let told = state
            .refused
            .failed(None, |held| log_held_refusals(held.count));
        if let Some(unlogged) = told {
            tracing::warn!(
                refused_since_last_line = unlogged,
                "refused a webhook (401): {reason}; does the sender sign with one of the configured secrets?"
            );
        }
        return unsigned(reason);
    }
    // A place among the signed webhooks handled at once (`--concurrency-limit`), held
    // until the answer: one permit, waited for until the deadline.
    let place = budget_share(&state.webhook_places, 1, 1, deadline);
    let Some(place) = state.unless_stopping(place).await else {
        return shutting_down();
    };
    let Some(_place) = place else {
        return busy(&state, "the mirror is busy; retry later");
    };
    // Held until the event is answered: parsed events in memory stay within budget.
    let parsed = state.budgets.parsed(read.bytes.len(), deadline);
    let Some(parsed) = state.unless_stopping(parsed).await else {
        return shutting_down();
    };
    let Some(parsed) = parsed else {
        return unavailable("the mirror is busy with large events; retry later");
    };
    let delivery = match Delivery::parse(&read.bytes) {
        Ok(delivery) => delivery,
        Err(e) => {
            // At debug: anyone may send these (the 401s come first).
            // Quoted: the reason may hold the sender's text.
            tracing::debug!(reason = ?e.to_string(), "refused a webhook (400)");
            return error(StatusCode::BAD_REQUEST, "invalid_request", e.to_string());
        }
    };
    drop(read);
    let event_id = delivery.event_id().to_owned();
    // Counted here if a reader answers it (the writer counts what it answers).
    let event_type = super::metrics::known_type(delivery.event());
    let rejection = match delivery.event() {
        Err(e) => Some(e.to_string()),
        Ok(_) => None,
    };
    match state
        .writer
        .apply_until(delivery, crate::now(), deadline, Some(parsed), || {
            if let Some(progress) = progress {
                progress.writer_has_the_event();
            }
        })
        .await
    {
        Ok(applied) => answer(&event_id, applied, rejection),
        Err(e @ (WriteError::TimedOut | WriteError::Overloaded)) => {
            // An event stored before is answered as it was the first time, also when
            // the writer is too busy to say so (SPEC: a seen id gets its first
            // outcome; a redelivery waiting out a long cascade got 503, a review).
            match first_delivery(&state, &event_id).await {
                Some(applied) => {
                    state.metrics.record_event_of(event_type, &applied);
                    answer(&event_id, applied, rejection)
                }
                None if matches!(e, WriteError::Overloaded) => {
                    busy(&state, "the mirror is busy; retry later")
                }
                None => busy(&state, &e.to_string()),
            }
        }
        Err(e @ WriteError::Stopped) => unavailable(e.to_string()),
        Err(e @ (WriteError::Commit(_) | WriteError::EventsFailing { .. })) => {
            // The sender is told only to retry; the log at debug says why (the cause
            // was only in the rate-limited error line: a probe).
            tracing::debug!(cause = ?e.to_string(), "the event could not be stored");
            unavailable("the event could not be stored; retry later")
        }
    }
}

/// How many KiB of signed bodies may be parsed and waiting for their answer at once,
/// for events up to [`SMALL_EVENT_BYTES`] and, apart, for larger ones. A parsed event
/// takes up to about 40 times its body in memory (a JSON array of small numbers: a
/// value each), and without a bound, 200 signed 1 MiB events in flight took the
/// daemon to 4.85 GB (found by a black-box probe). Events queue for room in arrival
/// order, and one larger than the whole budget takes all of it, alone. Small events
/// have a budget of their own (thousands of ordinary events fit in it): in one
/// budget, they queued behind a burst of large ones for seconds.
pub(crate) const PARSED_BUDGET_KIB: usize = 4 * 1024;

/// The largest body of a small event (see [`PARSED_BUDGET_KIB`]).
pub(crate) const SMALL_EVENT_BYTES: usize = 16 * 1024;

/// How many KiB of webhook bodies larger than [`SMALL_EVENT_BYTES`] may be held at once
/// while they are read and before their signature is checked. The body must be read
/// whole before the signature over it can be checked, so without a bound anyone could
/// make the daemon hold `--max-body-bytes` per request in flight (1,024 requests of
/// 1 MiB: over 1 GB); now a large body waits for room (503 past the request deadline)
/// and small ones, the ordinary events, never do (1,024 of them hold at most 32 MiB:
/// a chunked one, of no declared length, may double its buffer to 32 KiB).
pub(crate) const READING_BUDGET_KIB: usize = 64 * 1024;

/// The budgets of large bodies being read (see [`read_limited`]).
#[derive(Clone)]
pub(crate) struct Reading {
    /// What their buffers may grow to ([`READING_BUDGET_KIB`]).
    budget: Arc<tokio::sync::Semaphore>,
    /// What the buffers of those waiting for room in `budget` hold, as large.
    waiting: Arc<tokio::sync::Semaphore>,
}

impl Default for Reading {
    fn default() -> Self {
        Reading {
            budget: Arc::new(tokio::sync::Semaphore::new(READING_BUDGET_KIB)),
            waiting: Arc::new(tokio::sync::Semaphore::new(READING_BUDGET_KIB)),
        }
    }
}

/// The memory budgets of webhook bodies (see [`READING_BUDGET_KIB`] and
/// [`PARSED_BUDGET_KIB`]).
pub(crate) struct Budgets {
    /// Large bodies being read.
    reading: Reading,
    /// Small signed events parsed and not yet answered.
    parsed_small: Arc<tokio::sync::Semaphore>,
    /// Larger signed events parsed and not yet answered.
    parsed_large: Arc<tokio::sync::Semaphore>,
}

impl Default for Budgets {
    fn default() -> Self {
        let budget = |kib| Arc::new(tokio::sync::Semaphore::new(kib));
        Budgets {
            reading: Reading::default(),
            parsed_small: budget(PARSED_BUDGET_KIB),
            parsed_large: budget(PARSED_BUDGET_KIB),
        }
    }
}

impl Budgets {
    /// A share of the parse budget of a body of `len` bytes (see [`budget_share`]).
    async fn parsed(
        &self,
        len: usize,
        deadline: Option<tokio::time::Instant>,
    ) -> Option<tokio::sync::OwnedSemaphorePermit> {
        let budget = if len <= SMALL_EVENT_BYTES {
            &self.parsed_small
        } else {
            &self.parsed_large
        };
        budget_share(budget, len, PARSED_BUDGET_KIB, deadline).await
    }
}

/// A share of `budget` (of `size_kib` KiB in all) for `len` bytes, waited for until
/// `deadline`; `None` when it passed first. More than the whole budget takes all of it.
async fn budget_share(
    budget: &Arc<tokio::sync::Semaphore>,
    len: usize,
    size_kib: usize,
    deadline: Option<tokio::time::Instant>,
) -> Option<tokio::sync::OwnedSemaphorePermit> {
    let kib = u32::try_from(len.div_ceil(1024).clamp(1, size_kib)).ok()?;
    // The semaphore is never closed.
    let share = budget.clone().acquire_many_owned(kib);
    match deadline {
        Some(deadline) => tokio::time::timeout_at(deadline, share).await.ok()?.ok(),
        None => share.await.ok(),
    }
}

/// How long a webhook the writer could not take waits for a reader to say whether its
/// event was stored before.
const FIRST_DELIVERY_WAIT: std::time::Duration = std::time::Duration::from_millis(500);

/// The first delivery of `event_id`, read by the read API's readers (they run with
/// `--no-read-api` too, for this alone), if it was stored before and they answer in
/// time.
async fn first_delivery(state: &AppState, event_id: &str) -> Option<Applied> {
    let reads = state.reads.clone()?;
    // Not from a file that is no longer the database: a `duplicate` read there is of
    // an event no later start has (a review).
    if !state.writer.file_holds() {
        return None;
    }
    let event_id = event_id.to_owned();
    let read = reads.with(move |store| crate::apply::first_delivery(store.conn(), &event_id));
    match tokio::time::timeout(FIRST_DELIVERY_WAIT, read).await {
        // And not if it was replaced while the reader read.
        Ok(Ok(Ok(first))) if state.writer.file_holds() => first,
        _ => None,
    }
}

/// 200 with the outcome, or 422 for a rejected event (also when redelivered, with
/// the first delivery's reason, whatever body came again); `rejection` is why this
/// delivery's body is refused.
fn answer(event_id: &str, applied: Applied, rejection: Option<String>) -> Response {
    let rejected = applied.outcome() == Outcome::Rejected;
    let (status, rejection) = match applied {
        Applied::Logged { outcome, .. } => (outcome.as_str(), rejection),
        Applied::Duplicate {
            rejection: first, ..
        } => (crate::apply::DUPLICATE, first.or(rejection)),
    };
    if rejected {
        let message = rejection.unwrap_or_else(|| "the event was rejected".into());
        let body = json!({
            "type": "invalid_request",
            "message": message,
            "status": status,
            "event_id": event_id,
        });
        return (StatusCode::UNPROCESSABLE_ENTITY, axum::Json(body)).into_response();
    }
    let body = json!({"status": status, "event_id": event_id});
    (StatusCode::OK, axum::Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Large signed events wait for a share of the parse budget (up to their
    /// deadline); a body larger than the budget takes all of it once free.
    #[test]
    fn parsed_events_stay_within_the_budget() {
        block_on(async {
            const MIB: usize = 1 << 20;
            let budget = Arc::new(tokio::sync::Semaphore::new(PARSED_BUDGET_KIB));
            let soon = || Some(tokio::time::Instant::now() + std::time::Duration::from_millis(50));
            let first = budget_share(&budget, 3 * MIB, PARSED_BUDGET_KIB, None)
                .await
                .unwrap();
            assert!(
                budget_share(&budget, 2 * MIB, PARSED_BUDGET_KIB, soon())
                    .await
                    .is_none(),
                "over budget"
            );
            let small = budget_share(&budget, 700, PARSED_BUDGET_KIB, soon())
                .await
                .unwrap();
            assert_eq!(small.num_permits(), 1);
            drop((first, small));
            let huge = budget_share(&budget, 100 * MIB, PARSED_BUDGET_KIB, soon())
                .await
                .unwrap();
            assert_eq!(huge.num_permits(), PARSED_BUDGET_KIB);
            assert!(
                budget_share(&budget, 0, PARSED_BUDGET_KIB, soon())
                    .await
                    .is_none(),
                "all taken"
            );
        });
    }

    /// A body past the small size holds a share of the reading budget for what its
    /// buffer holds, until it is dropped; with no room before the deadline it is
    /// refused (503); small bodies never wait.
    #[test]
    fn large_bodies_are_read_within_the_budget() {
        block_on(async {
            let soon = || Some(tokio::time::Instant::now() + std::time::Duration::from_millis(50));
            let none_left = Reading::of(0);
            let mut small = Body::from(vec![b'x'; SMALL_EVENT_BYTES]);
            let read = read_limited(&mut small, 1 << 20, None, &none_left, soon()).await;
            assert!(matches!(read, Ok(ReadBody { _share: None, .. })));
            let mut large = Body::from(vec![b'x'; 100_000]);
            let read = read_limited(&mut large, 1 << 20, Some(100_000), &none_left, soon()).await;
            assert!(matches!(read, Err(BodyError::Busy)));

            let reading = Reading::of(1024);
            let mut large = Body::from(vec![b'x'; 100_000]);
            let read = read_limited(&mut large, 1 << 20, Some(100_000), &reading, soon()).await;
            let Ok(read) = read else { panic!("refused") };
            assert_eq!(read.bytes.len(), 100_000);
            assert_eq!(
                reading.budget.available_permits(),
                1024 - 98,
                "what it holds"
            );
            // Without a length, what it holds too (it took the limit).
            let mut chunked = Body::from(vec![b'x'; 20_000]);
            let more = read_limited(&mut chunked, 512 * 1024, None, &reading, soon()).await;
            assert!(more.is_ok());
            assert_eq!(reading.budget.available_permits(), 1024 - 98 - 20);
            drop((read, more));
            assert_eq!(reading.budget.available_permits(), 1024);
        });
    }

    /// A body that stops past the small size holds what it sent, not what it declared
    /// (a black-box probe: 64 bodies declaring 1 MiB that sent 17 KB each and
    /// stalled held the whole budget, and every event over 16 KiB got 503); one that
    /// may outgrow the whole budget takes all of it at once, to be read alone.
    #[test]
    fn a_stalled_body_holds_the_budget_for_what_it_sent() {
        block_on(async {
            let reading = reading_budget();
            // 17,000 bytes, then nothing more while the sender is kept.
            let (stalls, task) = fed_body(&reading, 1 << 20, Some(1 << 20), None);
            stalls.send(vec![b'x'; 17_000].into()).unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            assert_eq!(reading.budget.available_permits(), READING_BUDGET_KIB - 17);
            task.abort();
            let _ = task.await;
            assert_eq!(reading.budget.available_permits(), READING_BUDGET_KIB);
            let huge = READING_BUDGET_KIB * 1024 + 1;
            let (stalls_too, task) = fed_body(&reading, huge, Some(huge as u64), None);
            stalls_too.send(vec![b'x'; 17_000].into()).unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            assert_eq!(reading.budget.available_permits(), 0, "read alone");
            task.abort();
            drop((stalls, stalls_too));
        });
    }

    /// `work` run to its end on a runtime of its own (one thread, timers on).
    fn block_on<F: std::future::Future>(work: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(work)
    }

    /// A reading budget of the daemon's size, all of it free.
    fn reading_budget() -> Reading {
        Reading::default()
    }

    /// A reading budget of the daemon's size, and all of it, taken (a waiting budget
    /// of the daemon's size, free).
    fn reading_budget_all_taken() -> (Reading, tokio::sync::OwnedSemaphorePermit) {
        let reading = reading_budget();
        let all = reading
            .budget
            .clone()
            .try_acquire_many_owned(READING_BUDGET_KIB as u32)
            .unwrap();
        (reading, all)
    }

    impl Reading {
        /// A reading budget of `kib`, all of it free, and a waiting one of the
        /// daemon's size.
        fn of(kib: usize) -> Reading {
            Reading {
                budget: Arc::new(tokio::sync::Semaphore::new(kib)),
                ..Reading::default()
            }
        }
    }

    /// A body of frames the test feeds it, one at a time.
    struct Fed(tokio::sync::mpsc::UnboundedReceiver<axum::body::Bytes>);

    impl axum::body::HttpBody for Fed {
        type Data = axum::body::Bytes;
        type Error = std::convert::Infallible;
        fn poll_frame(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
            self.0
                .poll_recv(cx)
                .map(|frame| frame.map(|data| Ok(hyper::body::Frame::data(data))))
        }
    }

    /// A body being read by `read_limited` from frames sent on the returned channel;
    /// the task tells whether it was read whole.
    fn fed_body(
        reading: &Reading,
        limit: usize,
        declared: Option<u64>,
        deadline: Option<tokio::time::Instant>,
    ) -> (
        tokio::sync::mpsc::UnboundedSender<axum::body::Bytes>,
        tokio::task::JoinHandle<bool>,
    ) {
        let (send, receive) = tokio::sync::mpsc::unbounded_channel();
        let reading = reading.clone();
        let task = tokio::spawn(async move {
            let mut body = Body::new(Fed(receive));
            read_limited(&mut body, limit, declared, &reading, deadline)
                .await
                .is_ok()
        });
        (send, task)
    }

    /// How many of `bodies` bodies of `len` bytes (declared), sent at once in
    /// `frame`-byte frames taking turns, are read whole before a deadline 5 s away.
    fn read_whole_at_once(bodies: usize, len: usize, limit: usize, frame: usize) -> usize {
        block_on(async {
            let reading = reading_budget();
            let deadline = Some(tokio::time::Instant::now() + std::time::Duration::from_secs(5));
            let (senders, tasks): (Vec<_>, Vec<_>) = (0..bodies)
                .map(|_| fed_body(&reading, limit, Some(len as u64), deadline))
                .unzip();
            let mut sent = 0;
            while sent < len {
                let n = frame.min(len - sent);
                for send in &senders {
                    let _ = send.send(vec![b'x'; n].into());
                }
                sent += n;
                tokio::task::yield_now().await;
            }
            drop(senders);
            let mut whole = 0;
            for task in tasks {
                whole += usize::from(task.await.unwrap());
            }
            whole
        })
    }

    /// Bodies each holding part of the budget never wait for more while holding it:
    /// they waited for each other until their deadline (a review: 128 bodies of 1 MiB
    /// at once were answered after 9 s, 18 of them 503; two of 40 MiB under a 48 MiB
    /// limit, one 503). 96 of 1 MiB fit in the two budgets, the reading one and the
    /// waiting one; of 128, whose buffers hold more than both, some are refused. Of
    /// the two of 40 MiB, which cannot both wait holding 32 MiB, one is read and the
    /// other refused at once, not at the deadline 5 s away.
    #[test]
    fn bodies_read_at_once_never_wait_for_each_other() {
        assert_eq!(read_whole_at_once(96, 1 << 20, 1 << 20, 64 << 10), 96);
        let started = std::time::Instant::now();
        assert!(read_whole_at_once(2, 40 << 20, 48 << 20, 1 << 20) >= 1);
        let took = started.elapsed();
        assert!(took < std::time::Duration::from_secs(4), "{took:?}");
    }

    /// Bodies that wait for room hold their buffers within the waiting budget, and one
    /// that finds no room there is refused at once: they were counted nowhere (a
    /// black-box probe: 1,000 unsigned bodies of 1 MiB, sent 64 KiB to each in turn,
    /// took the daemon to 1 GB).
    #[test]
    fn bodies_waiting_for_room_stay_within_their_budget() {
        block_on(async {
            let (reading, full) = reading_budget_all_taken();
            // Each waits holding a frame of 64 KiB: 1,024 fit in the waiting budget.
            let (senders, tasks): (Vec<_>, Vec<_>) = (0..1100)
                .map(|_| fed_body(&reading, 1 << 20, Some(1 << 20), None))
                .unzip();
            for send in &senders {
                send.send(vec![b'x'; 64 << 10].into()).unwrap();
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            assert_eq!(reading.waiting.available_permits(), 0);
            let refused = tasks.iter().filter(|task| task.is_finished()).count();
            assert_eq!(refused, 1100 - 1024);
            drop((full, senders));
        });
    }

    /// A body that found no room at once and waited holds, once room comes, what its
    /// buffer needs, not all it declared (a re-review: 64 such bodies that waited and
    /// then stalled after 17 KB held the whole budget for their time limit).
    #[test]
    fn a_body_that_waited_holds_what_it_sent() {
        block_on(async {
            let (reading, full) = reading_budget_all_taken();
            let (stalls, _read) = fed_body(&reading, 1 << 20, Some(1 << 20), None);
            stalls.send(vec![b'x'; 17_000].into()).unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            drop(full);
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            assert_eq!(READING_BUDGET_KIB - reading.budget.available_permits(), 17);
        });
    }

    /// A body half read, then one that may outgrow the whole budget (read alone),
    /// then the rest of the first: both are read (the first waited, holding half, for
    /// room the one read alone waited for in turn; a review).
    #[test]
    fn a_body_half_read_and_one_read_alone_are_both_read() {
        block_on(async {
            const LIMIT: usize = 80_000_000;
            let reading = reading_budget();
            let deadline = Some(tokio::time::Instant::now() + std::time::Duration::from_secs(5));
            let (half, half_read) = fed_body(&reading, LIMIT, Some(1 << 20), deadline);
            for _ in 0..8 {
                half.send(vec![b'x'; 64 << 10].into()).unwrap();
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            let (alone, alone_read) = fed_body(&reading, LIMIT, None, deadline);
            alone.send(vec![b'x'; 20_000].into()).unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            for _ in 8..16 {
                half.send(vec![b'x'; 64 << 10].into()).unwrap();
            }
            drop((half, alone));
            assert!(half_read.await.unwrap(), "the half read");
            assert!(alone_read.await.unwrap(), "the one read alone");
        });
    }

    #[test]
    fn a_body_buffer_never_grows_past_the_declared_length() {
        const MIB: usize = 1 << 20;
        // Doubling, as bytes arrive...
        assert_eq!(grown_capacity(0, 100, MIB), 100);
        assert_eq!(grown_capacity(4096, 5000, MIB), 8192);
        // ... up to the declared length (1 MiB - 1 held open took 2 MiB).
        assert_eq!(grown_capacity(MIB / 2 + 10, MIB / 2 + 20, MIB - 1), MIB - 1);
        // A body longer than it said still fits (it is refused past the limit).
        assert_eq!(grown_capacity(MIB - 1, MIB + 5, MIB - 1), MIB + 5);
    }
}
