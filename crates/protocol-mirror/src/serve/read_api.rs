//! The read API: `GET /v1/<resource>` and `GET /v1/<resource>/<id>`, shaped like
//! Protocol's REST API, over the same query layer as the CLI (`store::query`), run on
//! [`ReadPool`]'s reader threads (four, started with the daemon).

use std::sync::{Arc, Mutex};

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use protocol_types::Resource;

use super::AppState;
use super::webhook::error;
use crate::store::query::{self, Cursor, ListError, ListQuery, shown};
use crate::store::{self, Store};

/// A read to run on one of the pool's threads, given its connection (or why it could
/// not be opened).
type Job = Box<dyn FnOnce(Result<&Store, &store::StoreError>) + Send>;

/// The read API's readers: 4 threads of their own, started with
/// the pool, each with a read-only connection opened on its first read and kept.
///
/// Threads of their own, not tokio's blocking pool: that pool starts threads when
/// reads come, and tokio panics when the system refuses one (a black-box probe, under
/// `ulimit -u`: every read API request dropped, with a panic each). Threads that
/// cannot be started now are a failed start, said in one line.
pub struct ReadPool {
    /// Taken by [`ReadPool::close`].
    jobs: Mutex<Option<std::sync::mpsc::Sender<Job>>>,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

impl ReadPool {
    /// How many reads run at once; the others wait their turn in a queue (within the
    /// request's time limit). Reads use the CPU and the page cache the writer needs,
    /// and a page of large objects takes tens of MB while it is made: 16 such pages at
    /// once took 2.1 GB (a performance probe).
    const RUNNING: usize = 4;

    /// A pool of read-only connections to `database`, with its threads started.
    ///
    /// # Errors
    ///
    /// When a thread cannot be started.
    pub fn new(database: std::path::PathBuf) -> std::io::Result<ReadPool> {
        let (jobs, queue) = std::sync::mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        let mut threads = Vec::with_capacity(Self::RUNNING);
        for i in 0..Self::RUNNING {
            let (queue, database) = (queue.clone(), database.clone());
            threads.push(
                std::thread::Builder::new()
                    .name(format!("reader-{i}"))
                    .spawn(move || read_jobs(&database, &queue))?,
            );
        }
        Ok(ReadPool {
            jobs: Mutex::new(Some(jobs)),
            threads: Mutex::new(threads),
        })
    }

    /// Ends the threads once the reads queued are done, and waits for them, so that
    /// their connections are closed: the daemon's stop calls it before the writer
    /// closes the database. The last connection to close removes the write-ahead log
    /// and its index, which a read-only one cannot do. Reads asked for later are
    /// refused.
    pub fn close(&self) {
        drop(self.jobs.lock().unwrap_or_else(|e| e.into_inner()).take());
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|e| e.into_inner()));
        for thread in threads {
            let _ = thread.join();
        }
    }

    /// Runs `f` on a read-only connection, on one of the pool's threads, once one is
    /// free. A read whose request was given up while it waited (its client gone, its
    /// time up) is not run.
    pub(crate) async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Store) -> T + Send + 'static,
    ) -> Result<T, ApiError> {
        let (answer, answered) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |store| {
            if answer.is_closed() {
                return;
            }
            let _ = answer.send(store.map(f).map_err(ToString::to_string));
        });
        self.jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .ok_or(())
            .and_then(|jobs| jobs.send(job).map_err(drop))
            .map_err(|()| internal("the readers are closed"))?;
        answered
            .await
            .map_err(|_| internal("a reader failed"))?
            .map_err(|e| internal(&e))
    }
}

/// A reader thread: runs the queue's jobs until the pool is dropped or closed. A job that
/// panics (a bug) fails its own request only.
fn read_jobs(database: &std::path::Path, queue: &Mutex<std::sync::mpsc::Receiver<Job>>) {
    let mut store: Option<Store> = None;
    loop {
        let job = match queue.lock().unwrap_or_else(|e| e.into_inner()).recv() {
            Ok(job) => job,
            Err(_) => return,
        };
        // Opened again after a failure (a database removed and made again).
        let opened = match store.take() {
            Some(open) => Ok(open),
            None => Store::open_read_only(database),
        };
        let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            job(opened.as_ref());
        }));
        // A connection a panic left in the middle of a read is not used again.
        if ran.is_ok() {
            store = opened.ok();
        }
    }
}

/// An error answer of the read API, in Protocol's shape.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    kind: &'static str,
    message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        error(self.status, self.kind, self.message)
    }
}

/// A 500 whose detail is logged, never sent.
fn internal(detail: &str) -> ApiError {
    tracing::error!(detail, "read API failure");
    ApiError {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        kind: "api_error",
        message: "the replica could not be read".into(),
    }
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError {
        status: StatusCode::BAD_REQUEST,
        kind: "invalid_request",
        message: message.into(),
    }
}

fn not_found(message: String) -> ApiError {
    ApiError {
        status: StatusCode::NOT_FOUND,
        kind: "invalid_request",
        message,
    }
}

pub(super) fn resource(name: &str) -> Result<Resource, ApiError> {
    Resource::ALL
        .into_iter()
        .find(|r| r.plural() == name)
        .ok_or_else(|| {
            not_found(format!(
                "unknown resource {}: use contacts, conversations, messages, groups or attachments",
                shown(name)
            ))
        })
}

/// The error for a read API `path` (`/v1/{resource}` or `/v1/{resource}/{id}`) whose
/// resource is unknown, if it is one.
pub(super) fn unknown_resource(path: &str) -> Option<ApiError> {
    let name = path.strip_prefix("/v1/")?.split('/').next()?;
    let name = percent_encoding::percent_decode_str(name)
        .decode_utf8()
        .ok()?;
    resource(&name).err()
}

/// The query parameters each list accepts (besides paging).
pub(crate) fn filters(resource: Resource) -> &'static [&'static str] {
    match resource {
        Resource::Message | Resource::Attachment => &["conversation_id"],
        Resource::Conversation => &["muted", "archived", "pinned", "group_id"],
        Resource::Group => &["archived"],
        Resource::Contact => &[],
    }
}

fn boolean(name: &str, value: &str) -> Result<bool, ApiError> {
    match value {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(invalid(format!("`{name}` must be true or false"))),
    }
}

/// A path axum could not decode (percent-escapes that are not UTF-8), as the JSON
/// error every other bad request gets, in the words the query string's get (axum's
/// were "Invalid URL: Invalid UTF-8 in `id`": a probe).
fn bad_path(rejection: PathRejection) -> ApiError {
    match rejection {
        PathRejection::FailedToDeserializePathParams(failed)
            if matches!(
                failed.kind(),
                axum::extract::path::ErrorKind::InvalidUtf8InPathParam { .. }
            ) =>
        {
            invalid("the path holds percent-escapes that are not UTF-8")
        }
        other => invalid(other.body_text()),
    }
}

/// The query string's parameters. Percent-escapes that do not decode to UTF-8 are
/// refused, as they are in the path (axum's `Query` would replace them with U+FFFD, and
/// `conversation_id=%FF` would match an id that holds that character).
fn query_params(
    raw: Option<&str>,
    params: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Vec<(String, String)>, ApiError> {
    let raw = raw.unwrap_or_default();
    if percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .is_err()
    {
        return Err(invalid(
            "the query string holds percent-escapes that are not UTF-8",
        ));
    }
    params
        .map(|Query(params)| params)
        .map_err(|_| invalid("the query string could not be read"))
}

/// Names as an error lists them: the first few, each [`shown`], and how many more.
fn listed(names: &[&str]) -> String {
    const MOST: usize = 10;
    let mut list: Vec<String> = names.iter().take(MOST).map(|n| shown(n)).collect();
    if names.len() > MOST {
        list.push(format!("and {} more", names.len() - MOST));
    }
    list.join(", ")
}

/// Reads the query string into a [`ListQuery`]: unknown or repeated parameters, a
/// `limit` outside 1..=100 and both cursors at once are errors.
/// The query parameters of every list: its page.
pub(crate) const PAGING: [&str; 3] = ["limit", "starting_after", "ending_before"];

fn list_query(resource: Resource, params: &[(String, String)]) -> Result<ListQuery, ApiError> {
    let allowed = filters(resource);
    let mut unknown: Vec<&str> = Vec::new();
    for (key, _) in params {
        let known = PAGING.contains(&key.as_str()) || allowed.contains(&key.as_str());
        if !known && !unknown.contains(&key.as_str()) {
            unknown.push(key);
        }
    }
    if !unknown.is_empty() {
        return Err(invalid(format!(
            "unknown query parameter{} for {}: {}",
            if unknown.len() > 1 { "s" } else { "" },
            resource.plural(),
            listed(&unknown)
        )));
    }
    let mut query = ListQuery {
        limit: Some(10),
        ..ListQuery::default()
    };
    let mut seen: Vec<&str> = Vec::new();
    for (key, value) in params {
        if seen.contains(&key.as_str()) {
            return Err(invalid(format!(
                "query parameter {} is repeated",
                shown(key)
            )));
        }
        seen.push(key);
        match key.as_str() {
            "limit" => match value.parse::<usize>() {
                Ok(n @ 1..=100) => query.limit = Some(n),
                _ => return Err(invalid("`limit` must be an integer from 1 to 100")),
            },
            // No object has an empty id: `?conversation_id` alone (or `=` with
            // nothing after) listed nothing, where `?muted` alone was a 400.
            "starting_after" | "ending_before" | "conversation_id" | "group_id"
                if value.is_empty() =>
            {
                return Err(invalid(format!("`{key}` must be an object id")));
            }
            "starting_after" => query.cursor = Some(Cursor::After(value.clone())),
            "ending_before" => query.cursor = Some(Cursor::Before(value.clone())),
            "conversation_id" => query.conversation = Some(value.clone()),
            "group_id" => query.group = Some(value.clone()),
            "muted" => query.muted = Some(boolean(key, value)?),
            "pinned" => query.pinned = Some(boolean(key, value)?),
            "archived" => query.archived = Some(boolean(key, value)?),
            _ => unreachable!("checked above"),
        }
    }
    if seen.contains(&"starting_after") && seen.contains(&"ending_before") {
        return Err(invalid(
            "use either `starting_after` or `ending_before`, not both",
        ));
    }
    Ok(query)
}

/// `GET /v1/{resource}`: `{"has_more": bool, "data": [...]}`, newest first.
pub(crate) async fn list(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    RawQuery(raw): RawQuery,
    params: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Path(name) = path.map_err(bad_path)?;
    let params = query_params(raw.as_deref(), params)?;
    let resource = resource(&name)?;
    let query = list_query(resource, &params)?;
    let pool = state
        .reads
        .clone()
        .ok_or_else(|| internal("no read pool"))?;
    // The page is written out an object at a time (`list_page_each`): only its text
    // and one object are held, never every object of it as a value.
    let body = pool
        .with(move |store| {
            let mut body = br#"{"data":["#.to_vec();
            let mut first = true;
            let has_more = query::list_page_each(store.conn(), resource, &query, |object| {
                if !std::mem::take(&mut first) {
                    body.push(b',');
                }
                serde_json::to_writer(&mut body, &object).map_err(std::io::Error::other)
            })?;
            body.extend_from_slice(format!(r#"],"has_more":{has_more}}}"#).as_bytes());
            Ok::<_, ListError>(body)
        })
        .await?
        .map_err(|e| match e {
            ListError::UnknownCursor { .. } => invalid(e.to_string()),
            other => internal(&other.to_string()),
        })?;
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// `GET /v1/{resource}/{id}`: the object, or 404.
pub(crate) async fn get(
    State(state): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
    RawQuery(raw): RawQuery,
    params: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Path((name, id)) = path.map_err(bad_path)?;
    let resource = resource(&name)?;
    let params = query_params(raw.as_deref(), params)?;
    if !params.is_empty() {
        let names: Vec<&str> = params.iter().map(|(k, _)| k.as_str()).collect();
        return Err(invalid(format!(
            "unknown query parameter{} for one {resource}: {} (it takes none)",
            if names.len() > 1 { "s" } else { "" },
            listed(&names)
        )));
    }
    let pool = state
        .reads
        .clone()
        .ok_or_else(|| internal("no read pool"))?;
    let lookup = id.clone();
    let found = pool
        .with(move |store| {
            let object = store::get(store.conn(), resource, &lookup)?;
            let why = match object {
                Some(_) => "",
                None => store::absent_because(store.conn(), resource, &lookup)?,
            };
            Ok::<_, store::StoreError>((object, why))
        })
        .await?
        .map_err(|e| internal(&e.to_string()))?;
    match found {
        (Some(object), _) => Ok(axum::Json(object).into_response()),
        (None, why) => Err(not_found(format!(
            "no {resource} with id {}{why}",
            shown(&id)
        ))),
    }
}

/// Compares two secrets in constant time, without revealing their lengths: their
/// SHA-256 digests are compared with every byte examined.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use sha2::{Digest, Sha256};
    let (a, b) = (Sha256::digest(a), Sha256::digest(b));
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

/// Whether `headers` carry `Authorization: Bearer <token>`, once: with two
/// `Authorization` headers the first decided, whatever the second said (proxies and
/// servers differ on which one counts), so two are refused, as two signature headers
/// are on `/webhooks`.
pub(crate) fn authorized(headers: &HeaderMap, token: &str) -> bool {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return false;
    };
    let value = value.as_bytes();
    let Some(given) = value
        .get(..7)
        .filter(|scheme| scheme.eq_ignore_ascii_case(b"bearer "))
        .map(|_| value[7..].trim_ascii())
    else {
        return false;
    };
    constant_time_eq(given, token.as_bytes())
}

/// 401 for the read API.
pub(crate) fn unauthorized(headers: &HeaderMap) -> Response {
    let given = headers.get_all(header::AUTHORIZATION).iter().count();
    let message = if given > 1 {
        format!(
            "this endpoint needs one `Authorization: Bearer <read token>` header (this \
             request has {given})"
        )
    } else {
        "this endpoint needs `Authorization: Bearer <read token>`".to_owned()
    };
    let mut response = error(StatusCode::UNAUTHORIZED, "unauthorized", message);
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect()
    }

    /// However many reads are asked for at once, at most `RUNNING` run, and every
    /// one of them is answered.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn at_most_running_reads_run_at_once() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("r.db");
        drop(Store::open(&db).unwrap());
        let pool = Arc::new(ReadPool::new(db).unwrap());
        let now = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let reads = (0..4 * ReadPool::RUNNING).map(|_| {
            let (pool, now, most) = (pool.clone(), now.clone(), most.clone());
            tokio::spawn(async move {
                pool.with(move |_store| {
                    let running = now.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(running, Ordering::SeqCst);
                    std::thread::sleep(std::time::Duration::from_millis(30));
                    now.fetch_sub(1, Ordering::SeqCst);
                })
                .await
                .is_ok()
            })
        });
        for read in reads.collect::<Vec<_>>() {
            assert!(read.await.unwrap());
        }
        let most = most.load(Ordering::SeqCst);
        assert!((2..=ReadPool::RUNNING).contains(&most), "{most}");
    }

    /// A read that panics (a bug) fails its own request; the pool's threads go on
    /// serving the others.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_read_that_panics_fails_alone() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("r.db");
        drop(Store::open(&db).unwrap());
        let pool = Arc::new(ReadPool::new(db).unwrap());
        for _ in 0..2 * ReadPool::RUNNING {
            let failed = pool.with(|_store| -> u8 { panic!("a bug") }).await;
            assert_eq!(
                failed.unwrap_err().status,
                StatusCode::INTERNAL_SERVER_ERROR
            );
        }
        let read = pool
            .with(|store| {
                store
                    .conn()
                    .query_row("SELECT 7", [], |r| r.get::<_, i64>(0))
            })
            .await;
        assert_eq!(read.unwrap().unwrap(), 7);
    }

    #[test]
    fn query_strings() {
        let q = list_query(
            Resource::Conversation,
            &params(&[("muted", "true"), ("limit", "5")]),
        )
        .unwrap();
        assert_eq!((q.muted, q.limit), (Some(true), Some(5)));
        let q = list_query(Resource::Message, &params(&[])).unwrap();
        assert_eq!(q.limit, Some(10));
        for bad in [
            params(&[("limit", "101")]),
            params(&[("limit", "0")]),
            params(&[("limit", "x")]),
            params(&[("muted", "true")]),
            params(&[("colour", "red")]),
            params(&[("limit", "1"), ("limit", "2")]),
            params(&[("starting_after", "a"), ("ending_before", "b")]),
            params(&[("conversation_id", "")]),
        ] {
            assert!(list_query(Resource::Message, &bad).is_err(), "{bad:?}");
        }
        let no_group = params(&[("group_id", "")]);
        assert!(list_query(Resource::Conversation, &no_group).is_err());
    }

    #[test]
    fn query_strings_must_decode_to_utf8() {
        let ok = || Ok(Query(params(&[("conversation_id", "é")])));
        assert!(query_params(Some("conversation_id=%C3%A9"), ok()).is_ok());
        assert!(query_params(None, Ok(Query(Vec::new()))).is_ok());
        for raw in ["conversation_id=%FF", "a%C3=1", "x=%C3&y=%A9"] {
            let refused = query_params(Some(raw), ok()).unwrap_err();
            assert!(refused.message.contains("not UTF-8"), "{raw}: {refused:?}");
        }
    }

    /// An error never echoes an unbounded input back (a 65,000-byte id was answered
    /// in full in a 404; 5,000 unknown parameters in a 34 KB 400).
    #[test]
    fn errors_quote_long_inputs_shortened() {
        let many: Vec<(String, String)> =
            (0..5000).map(|i| (format!("p{i}"), "1".into())).collect();
        let refused = list_query(Resource::Contact, &many).unwrap_err();
        assert!(refused.message.ends_with("and 4990 more"), "{refused:?}");
        let same: Vec<(String, String)> = (0..25).map(|_| ("p".into(), "1".into())).collect();
        let refused = list_query(Resource::Contact, &same).unwrap_err();
        assert!(
            refused.message.ends_with(r#"contacts: "p""#),
            "named once: {refused:?}"
        );
        assert!(refused.message.len() < 200, "{refused:?}");
        let long = "k".repeat(65_000);
        let refused =
            list_query(Resource::Contact, &params(&[(&long, "1"), (&long, "2")])).unwrap_err();
        assert!(refused.message.len() < 300, "{refused:?}");
        assert!(resource(&long).unwrap_err().message.len() < 300);
    }

    #[test]
    fn bearer_tokens() {
        let mut headers = HeaderMap::new();
        assert!(!authorized(&headers, "t0k"));
        headers.insert(header::AUTHORIZATION, "Bearer t0k".parse().unwrap());
        assert!(authorized(&headers, "t0k"));
        headers.insert(header::AUTHORIZATION, "bearer  t0k ".parse().unwrap());
        assert!(authorized(&headers, "t0k"));
        for wrong in ["Bearer t0", "Bearer t0kk", "Basic t0k", "t0k", "Bearer"] {
            headers.insert(header::AUTHORIZATION, wrong.parse().unwrap());
            assert!(!authorized(&headers, "t0k"), "{wrong}");
        }
        headers.insert(header::AUTHORIZATION, "Bearer t0k".parse().unwrap());
        headers.append(header::AUTHORIZATION, "Bearer other".parse().unwrap());
        assert!(!authorized(&headers, "t0k"), "two headers");
        // The refusal says why.
        let refused = unauthorized(&headers);
        assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
        assert!(refused.headers().contains_key(header::WWW_AUTHENTICATE));
    }
}
