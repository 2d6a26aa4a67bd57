//! A well-behaved client of Protocol's REST API: a timeout per request, retries with
//! backoff on 5xx and network errors, `Retry-After` honoured on `429` and `5xx`, a request
//! rate, and a token that is never logged.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use protocol_types::{Object, Resource};
use serde_json::Value;

/// Why a request failed for good.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// 401 or 403: the token is wrong or lacks access. Backfill stops.
    #[error(
        "Protocol's API refused the token ({status}{}): check PROTOCOL_API_TOKEN or --token-file",
        said(.message)
    )]
    Unauthorized {
        /// The HTTP status.
        status: u16,
        /// What the API said (its error's `message`), if anything.
        message: Option<String>,
    },
    /// The API refused the request itself (a 4xx other than 401, 403, 404 and 429):
    /// not retried. After a cursor, most likely the object it names is gone (Stripe's
    /// "No such object" is a 400).
    #[error("{path}: the API answered {status}{}", said(.message))]
    Refused {
        /// The path requested (no token, no host).
        path: String,
        /// The HTTP status.
        status: u16,
        /// What the API said (its error's `message`), if anything.
        message: Option<String>,
    },
    /// The request failed after every retry, or got an answer it cannot use.
    #[error("{path}: {reason}")]
    Failed {
        /// The path requested (no token, no host).
        path: String,
        /// What went wrong last.
        reason: String,
    },
    /// The answer was too large to read (over [`MAX_ANSWER_BYTES`], or over
    /// [`MAX_ANSWER_VALUES`] JSON values). A list asks for smaller pages first, down to
    /// one object a page.
    #[error("{path}: {reason}")]
    TooLarge {
        /// The path requested (no token, no host).
        path: String,
        /// How it was too large.
        reason: String,
    },
    /// The request could not be made (a URL the HTTP library refuses: an id of 100 KB
    /// in it): nothing was asked of the API, which is no less up for it.
    #[error("{path}: {reason}")]
    Unsendable {
        /// The path requested (no token, no host), cut short.
        path: String,
        /// Why it could not be made.
        reason: String,
    },
    /// The client was asked to stop (see [`Client::stop_when`]) before an answer came.
    #[error("stopped before Protocol's API answered")]
    Stopped,
}

/// `: "<message>"` for an error message the API gave, else nothing.
fn said(message: &Option<String>) -> String {
    message
        .as_deref()
        .map_or_else(String::new, |m| format!(": {m:?}"))
}

/// `text` with the API token blanked out (`[token]`), wherever `token_at` finds it: as
/// it is, and as a URL holds it, any of its bytes percent-encoded. A token put in the
/// API's URL by mistake was repeated in every error that showed the URL; one with `/`,
/// `+` or `=`, as base64 ones have, came through a redirect's `Location` and an error's
/// message whole (reviews); then encoded but for its `/`, as Python's `quote` leaves it
/// (a probe). A token shorter than 4 bytes is left (blanked, ordinary text was).
pub fn without_token(text: &str, token: &str) -> String {
    if token.len() < SHORTEST_BLANKED {
        return text.to_owned();
    }
    let mut blanked = String::with_capacity(text.len());
    let (mut at, mut copied) = (0, 0);
    while at < text.len() {
        match token_at(text, at, token.as_bytes()) {
            Some(end) => {
                blanked.push_str(&text[copied..at]);
                blanked.push_str("[token]");
                (at, copied) = (end, end);
            }
            None => at += 1,
        }
    }
    blanked.push_str(&text[copied..]);
    blanked
}

/// A token shorter than this is left as it is: blanking it would blank ordinary text
/// (`t` made "bad reques[token]": a probe).
const SHORTEST_BLANKED: usize = 4;

/// Where `token` ends in `text` if it starts at `at`, each of its bytes there as it is,
/// percent-encoded, encoded twice (`%252F`), or, for a `+`, a space (as a form decodes
/// it); `None` if it does not start there (or not at a character's edges, which a match
/// of a whole token always has). Every reading of each byte is followed: a `%` of the
/// token may stand as it is or as `%25` (taking the first that fit, a token holding `%`
/// went unblanked in its usual spelling: a review).
fn token_at(text: &str, at: usize, token: &[u8]) -> Option<usize> {
    if !text.is_char_boundary(at) {
        return None;
    }
    let bytes = text.as_bytes();
    let hex = |high: u8, low: u8| -> Option<u8> {
        let digit = |d: u8| (d as char).to_digit(16).map(|d| d as u8);
        Some(digit(high)? * 16 + digit(low)?)
    };
    let encoded = |at: usize| -> Option<u8> {
        match bytes.get(at..at + 3)? {
            [b'%', high, low] => hex(*high, *low),
            _ => None,
        }
    };
    let encoded_twice = |at: usize| -> Option<u8> {
        match bytes.get(at..at + 5)? {
            [b'%', b'2', b'5', high, low] => hex(*high, *low),
            _ => None,
        }
    };
    // Where the token may have reached in `text`, after each of its bytes: at most
    // three places a byte (as it is, or encoded), kept in order and without repeats.
    let mut reached = vec![at];
    for &byte in token {
        let mut next = Vec::with_capacity(reached.len() * 2);
        for &at in &reached {
            if bytes.get(at) == Some(&byte) {
                next.push(at + 1);
            }
            if encoded(at) == Some(byte) {
                next.push(at + 3);
            }
            if encoded_twice(at) == Some(byte) {
                next.push(at + 5);
            }
            if byte == b'+' && bytes.get(at) == Some(&b' ') {
                next.push(at + 1);
            }
        }
        next.sort_unstable();
        next.dedup();
        if next.is_empty() {
            return None;
        }
        reached = next;
    }
    reached
        .into_iter()
        .rev()
        .find(|&end| text.is_char_boundary(end))
}

/// The `message` of an error answer (`{"type": ..., "message": ...}`, as Protocol
/// answers), in one line, at most 200 characters, with the token blanked out should
/// the API echo it; `None` when the body is not such an answer.
fn api_message(body: &[u8], token: &str) -> Option<String> {
    let value: Value = serde_json::from_slice(body).ok()?;
    let message = value.get("message")?.as_str()?;
    let mut message: String = message
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    message = without_token(&message, token);
    let message = message.trim();
    if message.is_empty() {
        return None;
    }
    Some(match message.char_indices().nth(200) {
        Some((end, _)) => format!("{}…", &message[..end]),
        None => message.to_owned(),
    })
}

/// The most of an error answer's body read for its message.
const MAX_ERROR_BYTES: u64 = 16 * 1024;

/// One page of a list (by default, an empty last one).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Page {
    /// The objects.
    pub data: Vec<Object>,
    /// Whether more pages follow.
    pub has_more: bool,
}

/// How the client behaves. Its `Debug` leaves the token out.
#[derive(Clone)]
pub struct ClientConfig {
    /// The API's base URL, without `/v1`.
    pub base_url: String,
    /// The bearer token.
    pub token: String,
    /// Most requests per second.
    pub rate: f64,
    /// Timeout of one request.
    pub timeout: Duration,
    /// Retries after a 5xx, a 429 or a network error.
    pub retries: u32,
    /// The first backoff; it doubles with each retry.
    pub backoff: Duration,
}

/// The REST client.
pub struct Client {
    config: ClientConfig,
    agent: ureq::Agent,
    last_request: Option<Instant>,
    /// Requests in a row that failed for good (see [`Client::is_failing`]).
    failed_in_a_row: u32,
    /// Whether any request got an answer (of any status) from the API.
    reached: bool,
    /// Whether a request for conversations (a list or one) was answered 200: until
    /// then, a conversation's 404 may be a wrong `--api-url`'s, or a route this API
    /// lacks (see [`Client::has_found_conversations`]).
    found_conversations: bool,
    /// Set when the caller wants to stop (see [`Client::stop_when`]).
    stop: Option<Arc<AtomicBool>>,
    /// When the API, answering with a `Retry-After` longer than a run waits, asked to
    /// be asked again (see [`Client::come_back_at`]).
    come_back_at: Option<Instant>,
    /// The objects the next page of a list (by its resource and filters) asks for,
    /// where a page was too large to read: see [`Client::list`].
    page_limits: std::collections::HashMap<String, usize>,
}

/// After this many requests in a row failed for good (every retry spent, or an answer
/// that is no list or object), the API is taken for down or broken: a pass stops
/// rather than try every other list, each for its retries (an API that was down kept
/// a backfill of 440 conversations trying for about two hours: a black-box probe).
/// One list that fails alone (a server bug for one conversation) does not stop it.
/// An API that never answered at all (refused connections, an unknown host) is taken
/// for unreachable after its first request fails for good: a backfill against a
/// wrong `--api-url` spent 42 s on three lists' retries before it said so.
pub const FAILING_AFTER: u32 = 3;

impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConfig")
            .field("base_url", &without_token(&self.base_url, &self.token))
            .field("token", &"[redacted]")
            .field("rate", &self.rate)
            .field("timeout", &self.timeout)
            .field("retries", &self.retries)
            .field("backoff", &self.backoff)
            .finish()
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base_url", &self.base_url())
            .field("token", &"[redacted]")
            .finish()
    }
}

/// Percent-encodes a query value (everything but unreserved characters).
pub(super) fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

/// `id` as one path segment: [`encode`]d, and `.` or `..` with their dots escaped too
/// (left bare, the URL's dot segments made `GET /v1/contacts/..` ask for `/v1/`: a
/// 404, and prune deleted a contact Protocol still had).
pub(crate) fn segment(id: &str) -> String {
    match id {
        "." | ".." => id.replace('.', "%2E"),
        _ => encode(id),
    }
}

impl Client {
    /// A client with `config`.
    pub fn new(config: ClientConfig) -> Client {
        let agent = ureq::Agent::new_with_config(
            ureq::Agent::config_builder()
                .http_status_as_error(false)
                // A redirect is reported, not followed: followed, it went without the
                // token (even to the same host) and ended in a 401 that blamed it.
                .max_redirects(0)
                .timeout_global(Some(config.timeout))
                .build(),
        );
        Client {
            config,
            agent,
            last_request: None,
            failed_in_a_row: 0,
            reached: false,
            found_conversations: false,
            stop: None,
            come_back_at: None,
            page_limits: std::collections::HashMap::new(),
        }
    }

    /// Makes a request give up, [`ClientError::Stopped`], once `stop` is set: before
    /// each try, and within the waits between tries and for the request rate. A try
    /// under way is awaited (up to the timeout). Without it, Ctrl-C during a list
    /// that kept failing waited out every retry of its page: 201 s, without a word,
    /// for an API that never answered (a black-box probe).
    #[must_use]
    pub fn stop_when(mut self, stop: Arc<AtomicBool>) -> Client {
        self.stop = Some(stop);
        self
    }

    /// Paces its first request after `last`, another client's last request (see
    /// [`Client::last_request`]): a daemon's reconcile passes, each with a client of
    /// its own, then keep the rate between them too (a pass's first request went at
    /// once: about 6.7 requests a second at `--rate 5` with passes back to back; a
    /// probe).
    #[must_use]
    pub fn paced_after(mut self, last: Option<Instant>) -> Client {
        self.last_request = last;
        self
    }

    /// When its last request was made, if it made one.
    #[must_use]
    pub fn last_request(&self) -> Option<Instant> {
        self.last_request
    }

    /// When the API asked to be asked again, if a `Retry-After` longer than a run
    /// waits stopped a list: the latest such time. A daemon's next reconcile pass
    /// waits for it (each pass asked again at once: a black-box probe saw 13 passes in
    /// 5 s at `--reconcile-every 300ms` against `Retry-After: 100`).
    #[must_use]
    pub fn come_back_at(&self) -> Option<Instant> {
        self.come_back_at
    }

    fn stopped(&self) -> bool {
        self.stop
            .as_ref()
            .is_some_and(|stop| stop.load(Ordering::Relaxed))
    }

    /// Sleeps for `wait`, unless a stop comes first: then `Err(Stopped)`.
    fn wait(&self, wait: Duration) -> Result<(), ClientError> {
        let until = Instant::now() + wait;
        loop {
            if self.stopped() {
                return Err(ClientError::Stopped);
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(());
            }
            std::thread::sleep(left.min(STOP_POLL));
        }
    }

    /// Whether the last [`FAILING_AFTER`] requests all failed for good, or the API
    /// never answered and a request failed for good: the API is down, unreachable or
    /// broken, and a pass stops rather than try its other lists.
    pub fn is_failing(&self) -> bool {
        self.failed_in_a_row >= FAILING_AFTER || (!self.reached && self.failed_in_a_row > 0)
    }

    /// Whether the API answered any request of this client (with any status).
    pub fn has_answered(&self) -> bool {
        self.reached
    }

    /// Whether a request of this client for conversations (their list, or one) was
    /// answered 200: only then does a conversation's 404 say that it is gone rather
    /// than that no such route is there (a 200 for contacts proves the base URL, not
    /// that route; a review).
    pub fn has_found_conversations(&self) -> bool {
        self.found_conversations
    }

    /// The API's base URL (without `/v1`), as given, but for the token, were it put
    /// there by mistake (see [`without_token`]): for messages.
    pub fn base_url(&self) -> String {
        without_token(&self.config.base_url, &self.config.token)
    }

    /// One page of `/v1/<resource>` (100 objects) after `cursor`, with `filters`. A
    /// page too large to read is asked for again with half the objects, down to one:
    /// a page of 100 large objects (a message's thousands of reactions) blocked its
    /// list for good (a review). The list's next page then asks for twice the objects
    /// of the last one read, up to 100: each page started again at 100, so every page
    /// before a large object had it in its first answers, and was halved down again
    /// (a list of 40 small contacts then one too large: 7 answers of 4 MB for each
    /// page before it; an e2e test took 46 s).
    pub fn list(
        &mut self,
        resource: Resource,
        filters: &[(&str, &str)],
        cursor: Option<&str>,
    ) -> Result<Option<Page>, ClientError> {
        let filters: String = filters
            .iter()
            .map(|(key, value)| format!("&{key}={}", encode(value)))
            .collect();
        // The list, whose next page's size is kept: its path without the limit.
        let list = format!("/v1/{}?{filters}", resource.plural());
        let mut limit = self.page_limits.get(&list).copied().unwrap_or(PAGE_SIZE);
        let failed_before = self.failed_in_a_row;
        let (path, body) = loop {
            let mut path = format!("/v1/{}?limit={limit}{filters}", resource.plural());
            if let Some(cursor) = cursor {
                path.push_str(&format!("&starting_after={}", encode(cursor)));
            }
            match self.get_json(&path, Some(resource)) {
                Err(ClientError::TooLarge { reason, .. }) if limit > 1 => {
                    limit /= 2;
                    tracing::info!(
                        path = named_short(&path),
                        reason,
                        "the page is too large to read; asking for {limit} object{} instead",
                        if limit == 1 { "" } else { "s" }
                    );
                }
                Ok(Some(body)) => break (path, body),
                Ok(None) => return Ok(None),
                Err(e) => return Err(e),
            }
        };
        if limit < PAGE_SIZE {
            self.page_limits.insert(list, (limit * 2).min(PAGE_SIZE));
        } else {
            self.page_limits.remove(&list);
        }
        // An answer that is no list page is a failure of the API's too, counted in a
        // row as one that never came (200 `null` or `{"error": ...}` from every list
        // was not: each was tried; a black-box probe).
        let mut failed = |reason: &str| {
            self.failed_in_a_row = failed_before + 1;
            ClientError::Failed {
                path: path.clone(),
                reason: reason.to_owned(),
            }
        };
        // The objects are taken out of the answer, not copied: a copy held the page
        // twice over (420-505 MB at the peak for 100 messages of 1 MB; a review).
        let (data, has_more) = match body {
            Value::Object(mut body) => (
                body.remove("data"),
                body.get("has_more").and_then(Value::as_bool),
            ),
            _ => (None, None),
        };
        let Some(Value::Array(data)) = data else {
            return Err(failed("the answer has no `data` array"));
        };
        // Not taken for `false`: a list taken for complete too soon is one `--prune`
        // would empty.
        let Some(has_more) = has_more else {
            return Err(failed("the answer has no boolean `has_more`"));
        };
        let data = data
            .into_iter()
            .map(|item| match item {
                Value::Object(object)
                    if object
                        .get("id")
                        .and_then(Value::as_str)
                        .is_some_and(|id| !id.is_empty()) =>
                {
                    Ok(object)
                }
                _ => Err(failed(
                    "an object without an `id` (a non-empty string) in `data`",
                )),
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.found_conversations |= resource == Resource::Conversation;
        Ok(Some(Page { data, has_more }))
    }

    /// `/v1/<resource>/<id>`: the object, or `None` on 404.
    pub fn get(&mut self, resource: Resource, id: &str) -> Result<Option<Value>, ClientError> {
        let path = format!("/v1/{}/{}", resource.plural(), segment(id));
        let found = self.get_json(&path, None)?;
        // The conversation asked for, not any JSON: the route is there.
        self.found_conversations |= resource == Resource::Conversation
            && found.as_ref().is_some_and(|object| object["id"] == id);
        Ok(found)
    }

    /// GETs `path`: `Some(json)` on 200, `None` on 404; counts the failures in a row.
    /// An answer too large to read is no failure of the API's (it answered): the
    /// halving of a page down to one object over the limits counted seven, and took
    /// the API for down, every other list left untried, on every run (a black-box
    /// probe). Nor is a request that could not be made (a review). A page of a list of
    /// `page_of` is read as one ([`protocol_types::parse_list_page`]).
    fn get_json(
        &mut self,
        path: &str,
        page_of: Option<Resource>,
    ) -> Result<Option<Value>, ClientError> {
        let result = self.request_json(path, page_of);
        match &result {
            Err(ClientError::Failed { .. }) => self.failed_in_a_row += 1,
            _ => self.failed_in_a_row = 0,
        }
        result
    }

    /// [`Client::get_json`]'s request, with its retries.
    fn request_json(
        &mut self,
        path: &str,
        page_of: Option<Resource>,
    ) -> Result<Option<Value>, ClientError> {
        let url = format!("{}{path}", self.config.base_url.trim_end_matches('/'));
        // Named short in what is said: a cursor of 200 KB (an object's id) made each
        // retry's log line and the error 200 KB (a black-box probe).
        let path = &named_short(path);
        let mut backoff = self.config.backoff;
        let mut attempt = 0;
        loop {
            self.pace()?;
            let result = self
                .agent
                .get(&url)
                .header("authorization", &format!("Bearer {}", self.config.token))
                .header("accept", "application/json")
                .call();
            let (retryable, wait) = match result {
                Ok(response) => {
                    self.reached = true;
                    let status = response.status().as_u16();
                    let declared = crate::declared_length(response.headers());
                    match status {
                        // Declared too large: refused unread (it was read up to the
                        // limit first, at each halving: 420 MiB of RSS; a probe).
                        200 if declared.is_some_and(|length| length > MAX_ANSWER_BYTES) => {
                            return Err(ClientError::TooLarge {
                                path: path.to_owned(),
                                reason: format!(
                                    "the answer declares {} bytes, over the {} MiB read",
                                    declared.unwrap_or_default(),
                                    MAX_ANSWER_BYTES / (1024 * 1024)
                                ),
                            });
                        }
                        200 => {
                            // Bytes, not text: a gzip answer no one asked for was said to
                            // be "io: stream did not contain valid UTF-8" (a probe).
                            let text = response
                                .into_body()
                                .with_config()
                                .limit(MAX_ANSWER_BYTES)
                                .read_to_vec();
                            match text {
                                Ok(text) if text.starts_with(&[0x1f, 0x8b]) => {
                                    return Err(ClientError::Failed {
                                        path: path.to_owned(),
                                        reason: "the answer is gzip-compressed, which was not \
                                                 asked for (no Accept-Encoding was sent)"
                                            .into(),
                                    });
                                }
                                Ok(text) if more_values_than(&text, MAX_ANSWER_VALUES) => {
                                    return Err(ClientError::TooLarge {
                                        path: path.to_owned(),
                                        reason: format!(
                                            "the answer holds more than {MAX_ANSWER_VALUES} JSON \
                                             values (a page of 100 objects holds a few thousand), \
                                             so it is not read"
                                        ),
                                    });
                                }
                                // A page's ids are checked as a webhook's are:
                                // two that differed only in a lone surrogate were
                                // stored as one object (a review).
                                Ok(text) => {
                                    let read = match page_of {
                                        Some(resource) => {
                                            protocol_types::parse_list_page(&text, resource)
                                        }
                                        None => protocol_types::parse_json(&text),
                                    };
                                    return read.map(Some).map_err(|e| ClientError::Failed {
                                        path: path.to_owned(),
                                        reason: not_read(&e.to_string()),
                                    });
                                }
                                // A connection cut, or a timeout, halfway through the
                                // body: a network error like one before the status
                                // (it left the resource incomplete at the first).
                                // Said as a timeout before the answer is (ureq says
                                // "timeout: global": a black-box probe).
                                Err(ureq::Error::Timeout(_)) => (
                                    format!(
                                        "reading the answer: not all of it came within {} s \
                                         (--api-timeout)",
                                        self.config.timeout.as_secs_f64()
                                    ),
                                    None,
                                ),
                                Err(e) if cut_short(&e) => {
                                    (format!("reading the answer: {e}"), None)
                                }
                                Err(e @ ureq::Error::BodyExceedsLimit(_)) => {
                                    return Err(ClientError::TooLarge {
                                        path: path.to_owned(),
                                        reason: format!("reading the answer: {e}"),
                                    });
                                }
                                Err(e) => {
                                    return Err(ClientError::Failed {
                                        path: path.to_owned(),
                                        reason: format!("reading the answer: {e}"),
                                    });
                                }
                            }
                        }
                        404 => return Ok(None),
                        401 | 403 => {
                            let message = error_message(response, &self.config.token);
                            return Err(ClientError::Unauthorized { status, message });
                        }
                        // Both may say when to come back (a 503 for maintenance).
                        429 | 500..=599 => {
                            let retry_after = response
                                .headers()
                                .get("retry-after")
                                .and_then(|v| v.to_str().ok())
                                .and_then(|v| retry_after(v, std::time::SystemTime::now()));
                            let reason = match status {
                                429 => "429 Too Many Requests".to_owned(),
                                _ => format!("{status} from the API"),
                            };
                            (reason, retry_after)
                        }
                        300..=399 => {
                            let to = response
                                .headers()
                                .get("location")
                                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
                            let reason = match to {
                                Some(to) => {
                                    // Blanked as in an error's message: a server may put
                                    // the token in the URL it sends the client to.
                                    let to = without_token(&to, &self.config.token);
                                    let to = crate::store::query::shown(&to);
                                    format!(
                                        "the API redirects ({status}) to {to}: give the URL it \
                                         means as --api-url (redirects are not followed, so that \
                                         the token goes nowhere else)"
                                    )
                                }
                                None => format!(
                                    "the API answered {status} without a Location (not a list \
                                     or an object): check --api-url"
                                ),
                            };
                            return Err(ClientError::Failed {
                                path: path.to_owned(),
                                reason,
                            });
                        }
                        400..=499 => {
                            let message = error_message(response, &self.config.token);
                            return Err(ClientError::Refused {
                                path: path.to_owned(),
                                status,
                                message,
                            });
                        }
                        other => {
                            return Err(ClientError::Failed {
                                path: path.to_owned(),
                                reason: format!("unexpected status {other}"),
                            });
                        }
                    }
                }
                // ureq says "timeout: global".
                Err(ureq::Error::Timeout(_)) => (
                    format!(
                        "no answer within {} s (--api-timeout)",
                        self.config.timeout.as_secs_f64()
                    ),
                    None,
                ),
                // A request that cannot be made (a URL too long for the HTTP library:
                // an id of 200 KB as the cursor) is not retried: it would fail alike
                // (a black-box probe).
                Err(e @ ureq::Error::Http(_)) => {
                    return Err(ClientError::Unsendable {
                        path: path.to_owned(),
                        reason: format!("the request cannot be made: {e}"),
                    });
                }
                // Not retried: it would fail alike, five times over 16 s (an operator
                // probe).
                Err(e) if not_tls(&e, &url) => {
                    return Err(ClientError::Failed {
                        path: path.to_owned(),
                        reason: format!(
                            "the TLS handshake failed ({e}): does the server at --api-url \
                             speak HTTPS? For plain HTTP, give an http:// URL"
                        ),
                    });
                }
                Err(e) => (format!("network error: {e}"), None),
            };
            // Asked to come back later than a run waits (maintenance): the run stops
            // here and says when to run again. It waited 60 s and asked again, up to
            // the retries, against the API's word (a review).
            if let Some(wait) = wait.filter(|wait| *wait > MAX_RETRY_AFTER) {
                let at = Instant::now() + wait;
                self.come_back_at = Some(self.come_back_at.map_or(at, |before| before.max(at)));
                let asked = come_back_in(wait);
                return Err(ClientError::Failed {
                    path: path.to_owned(),
                    reason: format!(
                        "{retryable}, and the API asks to come back in {asked} (Retry-After), \
                         longer than the {} s a run waits: run again after that",
                        MAX_RETRY_AFTER.as_secs()
                    ),
                });
            }
            attempt += 1;
            if attempt > self.config.retries {
                return Err(ClientError::Failed {
                    path: path.to_owned(),
                    reason: format!("{retryable} (after {} retries)", self.config.retries),
                });
            }
            let wait = wait.unwrap_or(backoff);
            // A long wait is announced, so that the command does not look hung.
            if wait >= Duration::from_secs(2) {
                tracing::info!(path, reason = %retryable, wait = ?wait, "waiting before retrying");
            } else {
                tracing::debug!(path, reason = %retryable, wait = ?wait, "retrying");
            }
            self.wait(wait)?;
            backoff = (backoff * 2).min(Duration::from_secs(30));
        }
    }

    /// Waits so that requests stay under the configured rate (and fails, as a stop
    /// asks, before a request that is not to be made).
    fn pace(&mut self) -> Result<(), ClientError> {
        let left = match self.last_request {
            Some(last) if self.config.rate > 0.0 => {
                Duration::from_secs_f64(1.0 / self.config.rate).saturating_sub(last.elapsed())
            }
            _ => Duration::ZERO,
        };
        // A wait of nothing still looks at the stop.
        self.wait(left)?;
        self.last_request = Some(Instant::now());
        Ok(())
    }
}

/// How many objects a page of a list asks for (Protocol's largest page).
pub const PAGE_SIZE: usize = 100;

/// How often a wait looks whether the client was asked to stop.
const STOP_POLL: Duration = Duration::from_millis(50);

/// The largest answer read: a page of 100 messages, each up to the 1 MiB a webhook may
/// carry, with room to spare. (ureq's default, 10 MiB, refused such a page on every
/// run, and the pass never got past it.)
pub const MAX_ANSWER_BYTES: u64 = 128 * 1024 * 1024;

/// The most JSON values an answer may hold: each takes about a hundred bytes once
/// parsed, whatever its size as text, so 120 MB of `{"a":0},` took a run to 10 GB (a
/// review). A page of 100 objects holds a few thousand; this bounds a parsed answer
/// to a few hundred MB.
pub const MAX_ANSWER_VALUES: usize = 2_000_000;

/// Whether the JSON `text` holds more than `max` values, counted without parsing it:
/// one after each `[`, `{`, `,` and `:` outside strings (an upper bound).
fn more_values_than(text: &[u8], max: usize) -> bool {
    let mut count = 0usize;
    let (mut in_string, mut escaped) = (false, false);
    for &byte in text {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
        } else if byte == b'"' {
            in_string = true;
        } else if matches!(byte, b'[' | b'{' | b',' | b':') {
            count += 1;
            if count > max {
                return true;
            }
        }
    }
    false
}

/// [`api_message`] of an error answer's body (read up to [`MAX_ERROR_BYTES`]).
fn error_message(response: ureq::http::Response<ureq::Body>, token: &str) -> Option<String> {
    let body = response
        .into_body()
        .with_config()
        .limit(MAX_ERROR_BYTES)
        .read_to_vec()
        .ok()?;
    api_message(&body, token)
}

/// Whether reading an answer's body failed as a connection can (cut, timed out, its
/// framing broken off), not for what the body holds (too large, not UTF-8).
fn cut_short(error: &ureq::Error) -> bool {
    match error {
        ureq::Error::Io(e) => e.kind() != std::io::ErrorKind::InvalidData,
        ureq::Error::Timeout(_) | ureq::Error::Protocol(_) | ureq::Error::ConnectionFailed => true,
        _ => false,
    }
}

/// Whether `error`, for a request to `url`, is a TLS handshake that met something
/// other than TLS: most likely an `https://` URL for a server that speaks plain HTTP
/// (rustls says "received corrupt message of type InvalidContentType", which named
/// neither). Tried again, it fails alike.
pub fn not_tls(error: &ureq::Error, url: &str) -> bool {
    let https = url
        .get(..8)
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case("https://"));
    https && matches!(error, ureq::Error::Io(e) if e.kind() == std::io::ErrorKind::InvalidData)
}

/// `path` cut after 200 characters, for what is said of it.
fn named_short(path: &str) -> String {
    match path.char_indices().nth(200) {
        Some((at, _)) => format!("{}…", &path[..at]),
        None => path.to_owned(),
    }
}

/// How long a `Retry-After` value asks to wait at `now`: seconds (a fraction taken
/// too, though RFC 9110 has whole ones), or an HTTP date, at most
/// [`MAX_RETRY_AFTER_READ`]; `None` when it is neither.
fn retry_after(value: &str, now: std::time::SystemTime) -> Option<Duration> {
    let value = value.trim();
    let secs = match value.parse::<f64>() {
        // Seconds are never negative (RFC 9110): `-5` is no value, and the backoff
        // applies (it was taken for 0, and the retries came at once).
        Ok(secs) if secs.is_finite() && secs >= 0.0 => secs,
        Ok(_) => return None,
        Err(_) => {
            let at = httpdate::parse_http_date(value).ok()?;
            at.duration_since(now).unwrap_or_default().as_secs_f64()
        }
    };
    // Past a day is as good as never, and fits any `Duration`.
    Some(Duration::from_secs_f64(
        secs.clamp(0.0, MAX_RETRY_AFTER_READ.as_secs_f64()),
    ))
}

/// How long a `Retry-After` read as `wait` asked for, in words: past a day, the value
/// was cut to one, and is not named as asked for (it said 86400 s to
/// `Retry-After: 99999999999999999999`: a probe).
fn come_back_in(wait: Duration) -> String {
    if wait >= MAX_RETRY_AFTER_READ {
        "a day or more".to_owned()
    } else {
        format!("{} s", wait.as_secs())
    }
}

/// The longest wait a `Retry-After` is read as: a day.
const MAX_RETRY_AFTER_READ: Duration = Duration::from_secs(86_400);

/// The longest `Retry-After` a run waits for before asking again.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// Why an answer's text was not read as JSON (`parse_json` or `parse_list_page` said
/// `error`): valid JSON nested too deep for the parser was said to be "not JSON" (a
/// probe), and so were ids refused for their lone surrogates.
fn not_read(error: &str) -> String {
    if error.starts_with("recursion limit exceeded") {
        return format!(
            "the answer nests JSON more than 128 levels deep, which is not read ({error})"
        );
    }
    if error.contains("lone UTF-16 surrogate") && !error.starts_with("duplicate key") {
        return format!("the answer is refused: {error}");
    }
    format!("the answer is not JSON: {error}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// JSON nested deeper than the parser reads is said so, not "not JSON".
    #[test]
    fn an_answer_nested_too_deep_is_said_so() {
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        let error = protocol_types::parse_json(deep.as_bytes()).unwrap_err();
        let said = not_read(&error.to_string());
        assert!(said.contains("more than 128 levels deep"), "{said}");
        assert!(not_read("EOF while parsing").starts_with("the answer is not JSON"));
    }

    #[test]
    fn a_token_in_the_base_url_is_never_shown() {
        let config = |base_url: &str, token: &str| ClientConfig {
            base_url: base_url.into(),
            token: token.into(),
            rate: 0.0,
            timeout: Duration::from_secs(5),
            retries: 0,
            backoff: Duration::from_millis(1),
        };
        let client = |base_url: &str, token: &str| Client::new(config(base_url, token));
        // Nor is the token itself, in the settings' `Debug` (a derived one printed it).
        let shown = format!("{:?}", config("https://api.example/tok-1234/x", "tok-1234"));
        assert!(
            !shown.contains("tok-1234") && shown.contains("[redacted]"),
            "{shown}"
        );
        let plain = client("https://api.example/tok-1234/x", "tok-1234");
        assert_eq!(plain.base_url(), "https://api.example/[token]/x");
        assert!(!format!("{plain:?}").contains("tok-1234"));
        let encoded = client("https://api.example/ab%2Bcd%2Fef%3D", "ab+cd/ef=");
        assert_eq!(encoded.base_url(), "https://api.example/[token]");
        // A token too short to tell from text is left, and the URL shown as given.
        assert_eq!(client("https://a.b/v", "v").base_url(), "https://a.b/v");
    }

    #[test]
    fn a_client_paced_after_another_keeps_the_rate_between_them() {
        let config = ClientConfig {
            base_url: "http://127.0.0.1:9".into(),
            token: "t".into(),
            rate: 5.0,
            timeout: Duration::from_secs(5),
            retries: 0,
            backoff: Duration::from_millis(1),
        };
        let mut first = Client::new(config.clone());
        first.pace().unwrap();
        let mut second = Client::new(config).paced_after(first.last_request());
        let started = Instant::now();
        second.pace().unwrap();
        // 200 ms apart at 5 a second (less what the first call's return took).
        assert!(
            started.elapsed() >= Duration::from_millis(150),
            "{:?}",
            started.elapsed()
        );
    }

    /// An answer of more JSON values than a page can hold is not parsed: counted in
    /// one pass, strings skipped (their commas and brackets are text).
    #[test]
    fn answers_of_too_many_values_are_counted_not_parsed() {
        let page = br#"{"has_more":false,"data":[{"id":"a,b:[{","n":[1,2,3]}]}"#;
        assert!(!more_values_than(page, 12));
        assert!(more_values_than(page, 11));
        assert!(
            !more_values_than(br#"{"x":"\",[,{,:"}"#, 2),
            "an escaped quote"
        );
        let hostile = format!("{{\"pad\":[{}0]}}", "{\"a\":0},".repeat(1000));
        assert!(more_values_than(hostile.as_bytes(), 2000));
    }

    /// The token is blanked as it is and percent-encoded, in either case of hex (a
    /// base64 token came through a redirect's URL whole).
    #[test]
    fn the_token_is_blanked_in_every_spelling_a_url_gives_it() {
        let token = "sk/live+abc=";
        for text in [
            "http://h/v1?access_token=sk/live+abc=",
            "http://h/v1?access_token=sk%2Flive%2Babc%3D",
            "http://h/v1?access_token=sk%2flive%2babc%3d",
            // Python's `quote` leaves `/`; any byte may be encoded, letters too.
            "http://h/v1?access_token=sk/live%2Babc%3D",
            "http://h/v1?access_token=%73k/l%69ve+abc%3d",
        ] {
            assert_eq!(
                without_token(text, token),
                "http://h/v1?access_token=[token]",
                "{text}"
            );
        }
        assert_eq!(without_token("no token here", token), "no token here");
        assert_eq!(without_token("x", ""), "x");
        assert_eq!(without_token("x", "xyz"), "x");
        // Twice, among other text, a multi-byte token, and text a match cannot split.
        assert_eq!(
            without_token("é sk/live+abc= and sk%2Flive+abc= é", token),
            "é [token] and [token] é"
        );
        assert_eq!(without_token("a%C3%A9éb aééb", "éé"), "a[token]b a[token]b");
        assert_eq!(without_token("%C3%A9%C3%A", "éé"), "%C3%A9%C3%A");
        // A `%` of the token, as it is and encoded; `%+9` is no escape.
        assert_eq!(
            without_token("x ab%25cd y ab%cd", "ab%cd"),
            "x [token] y [token]"
        );
        assert_eq!(without_token("tok%2Bpct%25end", "tok+pct%end"), "[token]");
        assert_eq!(without_token("a%+9b", "a\tbcd"), "a%+9b");
        // Encoded twice, and a `+` read as a space by a form (a probe).
        assert_eq!(
            without_token("t=sk%252Flive%252Babc%253D and sk/live abc=", token),
            "t=[token] and [token]"
        );
        // Too short to blank without blanking ordinary text.
        assert_eq!(without_token("bad request", "t"), "bad request");
        let message = api_message(br#"{"message":"bad token sk%2Flive%2Babc%3D"}"#, token);
        assert_eq!(message.as_deref(), Some("bad token [token]"));
    }

    /// An error answer's `message` is told in one short line, never with the token.
    #[test]
    fn the_api_message_is_told_short_and_without_the_token() {
        let said = |body: &str| api_message(body.as_bytes(), "tok_secret");
        assert_eq!(
            said(r#"{"type":"invalid_request","message":"No such object: m1"}"#).as_deref(),
            Some("No such object: m1")
        );
        assert_eq!(
            said(r#"{"message":"bad token tok_secret\nretry"}"#).as_deref(),
            Some("bad token [token] retry")
        );
        assert_eq!(
            said(&format!(r#"{{"message":"{}"}}"#, "x".repeat(500)))
                .unwrap()
                .chars()
                .count(),
            201
        );
        for unusable in [
            "<html>nope</html>",
            r#"{"message":7}"#,
            r#"{"message":"  "}"#,
            "{}",
        ] {
            assert_eq!(said(unusable), None, "{unusable}");
        }
        let refused = ClientError::Refused {
            path: "/v1/messages".into(),
            status: 400,
            message: Some("No such object".into()),
        };
        assert_eq!(
            refused.to_string(),
            r#"/v1/messages: the API answered 400: "No such object""#
        );
    }

    #[test]
    fn retry_after_is_seconds_or_an_http_date() {
        let now = std::time::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let secs = |v| retry_after(v, now).map(|d| d.as_secs_f64());
        assert_eq!(secs("3"), Some(3.0));
        assert_eq!(secs(" 1.5 "), Some(1.5));
        assert_eq!(secs("600"), Some(600.0));
        assert_eq!(secs("1e300"), Some(86_400.0));
        assert_eq!(secs("99999999999999999999"), Some(86_400.0));
        let told = |v| come_back_in(retry_after(v, now).unwrap());
        assert_eq!(told("3600"), "3600 s");
        assert_eq!(told("99999999999999999999"), "a day or more");
        assert_eq!(secs("-4"), None);
        let later = httpdate::fmt_http_date(now + Duration::from_secs(4));
        assert_eq!(secs(&later), Some(4.0));
        let earlier = httpdate::fmt_http_date(now - Duration::from_secs(4));
        assert_eq!(secs(&earlier), Some(0.0));
        assert_eq!(secs("soon"), None);
        assert_eq!(secs("NaN"), None);
    }

    #[test]
    fn query_values_are_encoded() {
        assert_eq!(encode("aZ09-._~"), "aZ09-._~");
        assert_eq!(encode("a b&c=d/é"), "a%20b%26c%3Dd%2F%C3%A9");
    }

    #[test]
    fn an_id_of_dots_is_one_path_segment() {
        assert_eq!(segment("."), "%2E");
        assert_eq!(segment(".."), "%2E%2E");
        assert_eq!(segment("..."), "...");
        assert_eq!(segment("a/.."), "a%2F..");
    }

    /// A client of a server on loopback that answers its requests, one connection
    /// each, with 200 and `bodies` in turn, as given (no retries).
    fn answering(bodies: &'static [&'static [u8]]) -> Client {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for (stream, body) in listener.incoming().zip(bodies) {
                let Ok(mut stream) = stream else { return };
                let mut head = [0u8; 4096];
                let _ = std::io::Read::read(&mut stream, &mut head);
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                     content-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = std::io::Write::write_all(&mut stream, &[head.as_bytes(), body].concat());
            }
        });
        Client::new(ClientConfig {
            base_url: format!("http://{addr}"),
            token: "t".into(),
            rate: 0.0,
            timeout: Duration::from_secs(5),
            retries: 0,
            backoff: Duration::from_millis(1),
        })
    }

    /// An answer compressed though no one asked for it is said to be (it was "io:
    /// stream did not contain valid UTF-8": a probe), and so is one not UTF-8.
    #[test]
    fn an_answer_compressed_unasked_is_named() {
        let mut client = answering(&[
            b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03",
            b"{\"data\": [\"\xff\"]}",
        ]);
        let gzip = client
            .list(Resource::Contact, &[], None)
            .unwrap_err()
            .to_string();
        assert!(gzip.contains("the answer is gzip-compressed"), "{gzip}");
        let not_utf8 = client
            .list(Resource::Contact, &[], None)
            .unwrap_err()
            .to_string();
        assert!(not_utf8.contains("the answer is not JSON"), "{not_utf8}");
    }

    /// A page's ids are refused for a lone surrogate as a webhook's are: two contacts
    /// whose ids differed only there were stored as one (a review). Text may hold one.
    #[test]
    fn a_page_whose_ids_hold_lone_surrogates_is_refused() {
        let mut client = answering(&[
            br#"{"data": [{"id": "x\ud800"}, {"id": "x\ud801"}], "has_more": false}"#,
            br#"{"data": [{"id": "x", "username": "cut \ud83d"}], "has_more": false}"#,
        ]);
        let refused = client
            .list(Resource::Contact, &[], None)
            .unwrap_err()
            .to_string();
        assert!(
            refused.contains("the answer is refused: data[0]: an id holds an escaped lone"),
            "{refused}"
        );
        let page = client.list(Resource::Contact, &[], None).unwrap().unwrap();
        assert_eq!(page.data[0]["username"], "cut \u{fffd}");
    }

    /// A stop is heeded within the wait before a retry, not after every retry.
    #[test]
    fn a_stop_ends_the_waits_between_retries() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let mut head = [0u8; 4096];
                let _ = std::io::Read::read(&mut stream, &mut head);
                let _ = std::io::Write::write_all(
                    &mut stream,
                    b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                );
            }
        });
        let stop = Arc::new(AtomicBool::new(false));
        let mut client = Client::new(ClientConfig {
            base_url: format!("http://{addr}"),
            token: "t".into(),
            rate: 0.0,
            timeout: Duration::from_secs(5),
            retries: 5,
            backoff: Duration::from_secs(60),
        })
        .stop_when(stop.clone());
        let setter = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            stop.store(true, Ordering::Relaxed);
        });
        let started = Instant::now();
        let result = client.list(Resource::Contact, &[], None);
        setter.join().unwrap();
        assert!(matches!(result, Err(ClientError::Stopped)), "{result:?}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        // And no request is made once stopped, however slow the rate.
        client.config.rate = 0.001;
        let started = Instant::now();
        assert!(matches!(
            client.list(Resource::Contact, &[], None),
            Err(ClientError::Stopped)
        ));
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    /// A request the HTTP library cannot make (an id of 100 KB: a URL too long) fails
    /// at once, not after its retries, and is named short (a 200 KB cursor made every
    /// line 200 KB: a black-box probe).
    #[test]
    fn a_request_that_cannot_be_made_fails_at_once_named_short() {
        let mut client = Client::new(ClientConfig {
            base_url: "http://127.0.0.1:9".into(),
            token: "t".into(),
            rate: 0.0,
            timeout: Duration::from_secs(5),
            retries: 5,
            backoff: Duration::from_secs(60),
        });
        let started = Instant::now();
        let result = client.get(Resource::Contact, &"x".repeat(100_000));
        assert!(started.elapsed() < Duration::from_secs(5), "{result:?}");
        let Err(error @ ClientError::Unsendable { .. }) = result else {
            panic!("{result:?}")
        };
        let said = error.to_string();
        assert!(said.contains("cannot be made"), "{said}");
        assert!(said.chars().count() < 400, "{}", said.chars().count());
        for _ in 0..FAILING_AFTER {
            let _ = client.get(Resource::Contact, &"x".repeat(100_000));
        }
        assert!(!client.is_failing(), "the API was asked nothing");
    }

    #[test]
    fn debug_hides_the_token() {
        let client = Client::new(ClientConfig {
            base_url: "http://x".into(),
            token: "s3cret-token".into(),
            rate: 1.0,
            timeout: Duration::from_secs(1),
            retries: 0,
            backoff: Duration::from_millis(1),
        });
        let debug = format!("{client:?}");
        assert!(!debug.contains("s3cret"), "{debug}");
    }
}
