//! Backfill and reconcile from Protocol's REST API.
//!
//! A pass pages through each resource's list (`limit=100`, `starting_after`), messages
//! per conversation (complete only once the run's conversations are; a 404 for a
//! conversation that still exists is a failed list, not an empty one), and applies
//! every object as a backfill event
//! ([`Origin::Backfill`]): logged with a synthetic id derived from (resource, id,
//! body) and the row it met, so an unchanged object is a duplicate on the next pass,
//! and `rebuild` replays it. The precedence rule with live webhooks: an object overwrites a row only
//! when no event changed the row after its page was requested; otherwise it only
//! fills missing keys. Tombstoned ids are never resurrected; messages still obey
//! `updated_at`.
//!
//! Each committed page saves its cursor in the same transaction, so an interrupted
//! backfill resumes where it stopped. A cursor Protocol refuses (a 4xx: its object was
//! deleted since its page was read) starts that list over, once per list. With `prune`, after a complete pass, rows that
//! Protocol no longer lists, that no event changed since the pass began, and that
//! `GET /v1/<resource>/<id>` answers 404 for, are deleted and tombstoned as missed
//! deletes (cascades as usual).
//!
//! The pass runs against a [`Db`]: the CLI's own write connection, or the daemon's
//! writer thread (`serve --reconcile-every`), so the single-writer rule holds.

pub mod client;

use std::collections::BTreeMap;

use protocol_types::{Object, Resource};
use rusqlite::Connection;

use self::client::{Client, ClientError};
use crate::apply::{Applied, Basis, Delivery, Origin, Outcome, apply_delivery};
use crate::store::backfill::{self as state, CursorState};
use crate::store::{Store, StoreError};

/// The API used when none is given.
pub const DEFAULT_API_URL: &str = "https://api.protocol.chat";

/// The order resources are backfilled in (parents first).
pub const ORDER: [Resource; 5] = [
    Resource::Contact,
    Resource::Group,
    Resource::Conversation,
    Resource::Message,
    Resource::Attachment,
];

/// How long a page waits for another writer's lock before the run stops.
pub const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// Database access for a pass: reads, and writes each in a transaction of its own.
pub trait Db {
    /// Runs `f` on a connection that sees committed data.
    fn read<T, F>(&mut self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static;

    /// Runs `f` in a write transaction and commits it.
    fn write<T, F>(&mut self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static;

    /// Fails, as [`Db::read`] does, once the run was asked to stop (a signal, the
    /// daemon stopping): a loop of requests that writes nothing asks between two.
    fn go_on(&mut self) -> Result<(), StoreError> {
        self.read(|_| Ok(()))
    }
}

/// Why a list or a prune was not tried: the API failed [`client::FAILING_AFTER`]
/// requests in a row.
const API_FAILING: &str = "not tried: Protocol's API failed the requests before it \
     (down, or answering errors); run again later to resume";

/// [`API_FAILING`], or, when the API never answered at all (nothing listens there,
/// or the name does not resolve), that, naming where it was asked: a wrong
/// `--api-url` was said to be an API that is down (a new user's walk).
fn api_failing(client: &Client) -> String {
    if client.has_answered() {
        return API_FAILING.to_owned();
    }
    format!(
        "not tried: nothing answered at {} (is --api-url, or PROTOCOL_API_URL, right? or \
         is Protocol's API down?); run again later to resume",
        client.base_url()
    )
}

impl Db for Store {
    fn read<T, F>(&mut self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        f(self.conn())
    }

    fn write<T, F>(&mut self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        write_waiting(self, || false, f)
    }
}

/// `f` in a transaction of `store`, committed. Another writer may hold the database
/// past the busy timeout (a daemon's cascade over a large conversation takes seconds):
/// the page waits for it, up to [`LOCK_WAIT`], rather than end the whole run at the
/// first 5 s; `stopped` is asked between two tries (each up to the busy timeout), and
/// when it says so the wait ends with [`StoreError::Stopped`].
pub fn write_waiting<T>(
    store: &mut Store,
    stopped: impl Fn() -> bool,
    f: impl FnOnce(&Connection) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let started = std::time::Instant::now();
    let tx = loop {
        match store.transaction() {
            Err(e) if e.is_busy() && started.elapsed() < LOCK_WAIT => {
                if stopped() {
                    return Err(StoreError::Stopped);
                }
                tracing::info!("the database is busy with another writer; waiting");
            }
            other => break other?,
        }
    };
    let result = f(&tx)?;
    tx.commit()?;
    Ok(result)
}

/// What to backfill.
#[derive(Debug, Clone)]
pub struct Options {
    /// The resources, in any order (they run in [`ORDER`]).
    pub resources: Vec<Resource>,
    /// Delete rows Protocol no longer has, after a complete pass.
    pub prune: bool,
    /// Forget saved cursors and begin new passes.
    pub restart: bool,
}

/// What a pass did to one resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceReport {
    /// The resource.
    pub resource: Resource,
    /// Pages fetched and committed.
    pub pages: u64,
    /// Objects listed.
    pub listed: u64,
    /// Of those, the objects a list gave before it started over (Protocol refused its
    /// cursor, as it does once the object the cursor names is gone): most are listed
    /// again after, and counted twice in `listed` and the outcomes.
    pub listed_before_start_over: u64,
    /// New backfill events, by outcome.
    pub outcomes: BTreeMap<Outcome, u64>,
    /// The first object of those rejected (a known key of the wrong JSON type): its id
    /// and why, as the log says it.
    pub first_rejected: Option<(String, String)>,
    /// Objects unchanged since an earlier pass (their event was already logged).
    pub unchanged: u64,
    /// Objects an earlier pass listed as they are now and that were `rejected` then:
    /// stored nowhere still (they were counted unchanged, and the report said nothing
    /// of them after the first: a probe).
    pub still_rejected: u64,
    /// The first of those, as [`ResourceReport::first_rejected`] names a new one (a
    /// report names a new rejection before an old one).
    pub first_still_rejected: Option<(String, String)>,
    /// Whether its list began where an earlier backfill of the run stopped (at a saved
    /// cursor): `listed` counts this backfill's share of it only (the count was taken
    /// for the account's: a probe).
    pub resumed: bool,
    /// Rows deleted as missed deletes.
    pub pruned: Vec<String>,
    /// Whether the pass reached the end of every list.
    pub complete: bool,
    /// Whether that was earlier in this run: a run that resumed (after an interruption
    /// or a failure) does not list again what it finished.
    pub completed_before: bool,
    /// Whether this is the resource's last report of the run: its pass (and prune)
    /// are over, and nothing will change it.
    pub done: bool,
    /// Why it did not, if it did not.
    pub error: Option<String>,
    /// Whether the last request refused was one after a cursor (see [`page_through`]).
    refused_cursor: bool,
    /// Conversations in a row whose messages answered 404 though the conversation
    /// exists (see [`fetch_page`]): at [`client::FAILING_AFTER`], the route is taken
    /// for wrong, and the pass asks for no more.
    missing_lists_in_a_row: u32,
    /// Whether the list of conversations, asked for proof that a conversation whose
    /// messages answered 404 is gone, failed: it is not asked again in this pass.
    proof_failed: bool,
}

impl ResourceReport {
    /// Whether this run did nothing for the resource: it was listed to the end earlier
    /// in the run (which resumed), and nothing was pruned now.
    pub fn listed_earlier(&self) -> bool {
        self.completed_before && self.pruned.is_empty()
    }

    fn new(resource: Resource) -> ResourceReport {
        ResourceReport {
            resource,
            pages: 0,
            listed: 0,
            listed_before_start_over: 0,
            outcomes: BTreeMap::new(),
            first_rejected: None,
            unchanged: 0,
            still_rejected: 0,
            first_still_rejected: None,
            resumed: false,
            pruned: Vec::new(),
            complete: false,
            completed_before: false,
            done: false,
            error: None,
            refused_cursor: false,
            missing_lists_in_a_row: 0,
            proof_failed: false,
        }
    }
}

/// Why a backfill stopped before trying every resource.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackfillError {
    /// The API refused the token.
    #[error(transparent)]
    Unauthorized(ClientError),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A request's error that ends the run (a refused token, a stop) as `Err`; one that
/// leaves a list incomplete as `Ok`.
fn fatal(error: ClientError) -> Result<ClientError, BackfillError> {
    match error {
        ClientError::Unauthorized { .. } => Err(BackfillError::Unauthorized(error)),
        ClientError::Stopped => Err(StoreError::Stopped.into()),
        other => Ok(other),
    }
}

/// Runs one pass over `options.resources`; `progress` is called after each page and
/// each pruned row, and last with the resource's final report
/// ([`ResourceReport::done`]).
pub fn run(
    db: &mut impl Db,
    client: &mut Client,
    options: &Options,
    mut progress: impl FnMut(&ResourceReport),
) -> Result<Vec<ResourceReport>, BackfillError> {
    if options.restart {
        db.write(state::reset)?;
    }
    // A run that stopped before finishing resumes: resources whose pass completed
    // during it are not listed again. Not once STALLED_RESUMES in a row committed
    // nothing: a list that fails every time (a 4xx for one conversation's messages)
    // left the run unfinished for good, and every backfill after it listed nothing
    // else, so no change to the other resources was healed (a probe). A new run lists
    // every resource again; a list left unfinished still resumes at its cursor. Resumes
    // that commit pages go on with the run, however many: a large account's run cut
    // short every time still ends (a new run after every third started its messages
    // over, and never ended: a review).
    let (run, run_seq, stalled) = db.write(|c| match state::run(c)? {
        Some(run) if !run.complete && run.stalled < STALLED_RESUMES => {
            Ok((run.run, run.pass_seq, run.stalled))
        }
        previous => {
            let run = previous.map_or(1, |previous| previous.run + 1);
            let seq = state::last_seq(c)?;
            state::save_run(
                c,
                &state::RunState {
                    run,
                    pass_seq: seq,
                    complete: false,
                    stalled: 0,
                },
            )?;
            Ok((run, seq, 0))
        }
    })?;
    let mut reports = Vec::new();
    let mut all_complete = true;
    // Messages are listed per conversation: until this run's conversations pass is
    // complete, the stored conversations may not be all there are.
    let mut conversations_complete = true;
    for resource in ORDER {
        if !options.resources.contains(&resource) {
            continue;
        }
        let mut report = ResourceReport::new(resource);
        let done = db.read(move |c| state::cursor(c, resource, ""))?;
        if client.is_failing() && !done.as_ref().is_some_and(|d| d.complete && d.run == run) {
            report.error = Some(api_failing(client));
            all_complete = false;
            if resource == Resource::Conversation {
                conversations_complete = false;
            }
            report.done = true;
            progress(&report);
            reports.push(report);
            continue;
        }
        let pass_seq = match done {
            Some(pass) if pass.complete && pass.run == run => {
                report.completed_before = true;
                Some(pass.pass_seq)
            }
            _ => match resource {
                Resource::Message => {
                    // Without a conversations pass in this run, the stored conversations
                    // may not be all there are (`--resource messages` on a new database).
                    let from_api = !options.resources.contains(&Resource::Conversation);
                    let listing = Listing {
                        from_api,
                        conversations_complete,
                    };
                    pass_messages(db, client, run, listing, &mut report, &mut progress)?
                }
                _ => pass_list(db, client, resource, run, &mut report, &mut progress)?,
            },
        };
        all_complete &= pass_seq.is_some();
        if resource == Resource::Conversation {
            conversations_complete = pass_seq.is_some();
        }
        if let Some(pass_seq) = pass_seq {
            report.complete = true;
            if options.prune {
                prune(db, client, resource, pass_seq, &mut report, &mut progress)?;
            }
        }
        report.done = true;
        progress(&report);
        reports.push(report);
    }
    // Whether this one got anywhere: a page committed (an unfinished run's resumes
    // that commit none count towards a new run).
    let progressed = reports.iter().any(|report| report.pages > 0);
    db.write(move |c| {
        state::save_run(
            c,
            &state::RunState {
                run,
                pass_seq: run_seq,
                complete: all_complete,
                stalled: if all_complete || progressed {
                    0
                } else {
                    stalled + 1
                },
            },
        )
    })?;
    Ok(reports)
}

/// How many backfills in a row may resume an unfinished run and commit no page before
/// the next one begins a new run.
pub const STALLED_RESUMES: u32 = 3;

/// The pass row of `resource`: resumes an unfinished pass (into run `run`), or starts
/// a new one.
fn begin(db: &mut impl Db, resource: Resource, run: i64) -> Result<CursorState, StoreError> {
    let current = db.read(move |c| state::cursor(c, resource, ""))?;
    match current {
        Some(current) if !current.complete => Ok(CursorState { run, ..current }),
        _ => db.write(move |c| {
            let pass_seq = state::last_seq(c)?;
            state::start_pass(c, resource, pass_seq, run)?;
            Ok(CursorState {
                cursor: None,
                complete: false,
                pass_seq,
                run,
            })
        }),
    }
}

/// Pages through `/v1/<resource>`; returns the pass's start when it completed.
fn pass_list(
    db: &mut impl Db,
    client: &mut Client,
    resource: Resource,
    run: i64,
    report: &mut ResourceReport,
    progress: &mut impl FnMut(&ResourceReport),
) -> Result<Option<i64>, BackfillError> {
    let mut pass = begin(db, resource, run)?;
    report.resumed = pass.cursor.is_some();
    let done = page_through(
        db,
        client,
        resource,
        "",
        &[],
        pass.cursor.clone(),
        &mut pass,
        report,
        progress,
    )?;
    Ok(done.then_some(pass.pass_seq))
}

/// Which conversations a messages pass lists (see [`pass_messages`]).
#[derive(Debug, Clone, Copy)]
struct Listing {
    /// The conversations Protocol lists too, besides the stored ones (no
    /// conversations pass in this run).
    from_api: bool,
    /// Whether this run's conversations pass (if any) is complete: until it is, the
    /// stored conversations may not be all there are.
    conversations_complete: bool,
}

/// Pages through the messages of every stored conversation, and with `from_api` of
/// every conversation Protocol lists too. The pass is complete only once the
/// conversations are: the messages of the conversations stored so far are listed
/// (each conversation's cursor saved), and the next run lists those of the rest (a
/// run after a failed conversations list took the messages pass for complete, and
/// left the messages of every conversation stored later out: found by a black-box
/// probe).
fn pass_messages(
    db: &mut impl Db,
    client: &mut Client,
    run: i64,
    listing: Listing,
    report: &mut ResourceReport,
    progress: &mut impl FnMut(&ResourceReport),
) -> Result<Option<i64>, BackfillError> {
    let mut pass = begin(db, Resource::Message, run)?;
    let mut conversations = db.read(state::conversation_ids)?;
    let mut complete = true;
    if listing.from_api {
        // A list that failed leaves the stored conversations, and those it listed
        // before it failed, to list (a probe found none listed while Protocol's
        // conversations list failed; another, none of its first page's): the pass
        // stays incomplete, and the next run lists the rest.
        let (listed, listed_whole) = listed_conversations(db, client, report)?;
        let stored: std::collections::HashSet<String> = conversations.iter().cloned().collect();
        conversations.extend(listed.into_iter().filter(|id| !stored.contains(id)));
        complete = listed_whole;
    }
    for conversation in conversations {
        if client.is_failing() || report.missing_lists_in_a_row >= client::FAILING_AFTER {
            complete = false;
            break;
        }
        let scope = conversation.clone();
        let saved = db.read(move |c| state::cursor(c, Resource::Message, &scope))?;
        // Listed to its end in this run: not again. One listed in an earlier run, of a
        // pass that run left unfinished, is listed again (a new run lists every list;
        // its messages were skipped for good while another conversation's always
        // failed: a review).
        if saved.as_ref().is_some_and(|s| s.complete && s.run == run) {
            continue;
        }
        // From its start when it ended before, else where it stopped.
        let cursor = saved.filter(|s| !s.complete).and_then(|s| s.cursor);
        let filters = [("conversation_id", conversation.as_str())];
        complete &= page_through(
            db,
            client,
            Resource::Message,
            &conversation,
            &filters,
            cursor,
            &mut pass,
            report,
            progress,
        )?;
    }
    if !complete {
        return Ok(None);
    }
    if !listing.conversations_complete {
        if report.error.is_none() {
            report.error = Some(
                "the conversations are not all listed yet: the messages of the rest come \
                 with the next run (or reconcile pass)"
                    .into(),
            );
        }
        return Ok(None);
    }
    let pass_seq = pass.pass_seq;
    db.write(move |c| {
        state::save_cursor(
            c,
            Resource::Message,
            "",
            &CursorState {
                cursor: None,
                complete: true,
                pass_seq,
                run,
            },
        )
    })?;
    Ok(Some(pass_seq))
}

/// The ids of the conversations Protocol lists, tombstoned ones left out (their
/// messages could only be ignored), and whether the list was read to its end (when
/// not, the error is in `report`, and the ids are those read before it). A cursor
/// Protocol refuses (its conversation deleted meanwhile) starts the list over, once,
/// as [`page_through`] does (the pass ended incomplete, and pruned nothing: a probe).
/// Nothing is applied: the rows are a conversations pass's to write.
fn listed_conversations(
    db: &mut impl Db,
    client: &mut Client,
    report: &mut ResourceReport,
) -> Result<(Vec<String>, bool), BackfillError> {
    let mut ids = Vec::new();
    let mut cursor: Option<String> = None;
    let mut seen = std::collections::HashSet::new();
    let mut may_start_over = true;
    loop {
        let Some(page) = fetch_page(
            client,
            Resource::Conversation,
            &[],
            cursor.as_deref(),
            None,
            report,
        )?
        else {
            if report.refused_cursor && std::mem::take(&mut may_start_over) {
                tracing::warn!(
                    error = report.error.take().unwrap_or_default(),
                    "the cursor of the conversations listed for their messages was refused \
                     (its object may be gone); listing them from the start again"
                );
                report.refused_cursor = false;
                cursor = None;
                seen.clear();
                ids.clear();
                continue;
            }
            if let Some(error) = &mut report.error {
                *error = format!("listing conversations for their messages: {error}");
            }
            return Ok((ids, false));
        };
        let last = last_id(&page).map(str::to_owned);
        let page_ids: Vec<String> = page
            .data
            .iter()
            .filter_map(|o| o.get("id").and_then(|id| id.as_str()).map(str::to_owned))
            .collect();
        let live = db.read(move |c| {
            let mut live = Vec::with_capacity(page_ids.len());
            for id in page_ids {
                if !crate::store::is_tombstoned(c, Resource::Conversation, &id)? {
                    live.push(id);
                }
            }
            Ok(live)
        })?;
        ids.extend(live);
        let Some(next) = last.filter(|_| page.has_more) else {
            return Ok((ids, true));
        };
        if !seen.insert(next.clone()) {
            report.error = Some(cycle(Resource::Conversation, "", &next));
            return Ok((ids, false));
        }
        cursor = Some(next);
    }
}

/// Whether the 404 of `conversation` (after its list of `resource` answered 404 too)
/// says it is gone: only from an API whose routes answer. With a wrong --api-url every
/// route is 404, the conversation's too, and the pass recorded every conversation done
/// with no messages, so the next run, with the URL mended, listed none and said it was
/// complete (a black-box probe). Until a request of the run for conversations is
/// answered 200, their list is asked once, for proof; when it is not given, why is in
/// `report`. Asked once per pass: after a proof that failed (a 5xx, say), later
/// conversations are not told gone either (each asked again, with its retries; a
/// review).
fn gone_is_proven(
    client: &mut Client,
    resource: Resource,
    conversation: &str,
    report: &mut ResourceReport,
) -> Result<bool, BackfillError> {
    if client.has_found_conversations() {
        return Ok(true);
    }
    if report.proof_failed {
        report.error = Some(format!(
            "{} answered 404, and whether the conversation is gone cannot be told: \
             /v1/conversations failed (nothing is pruned while a list fails)",
            list_path(resource, Some(conversation))
        ));
        return Ok(false);
    }
    match client.list(Resource::Conversation, &[], None) {
        Ok(Some(_)) => Ok(true),
        Ok(None) => {
            // The route is wrong for every conversation: the pass asks for no more
            // (as after a few lists that fail while their conversations exist).
            report.missing_lists_in_a_row = client::FAILING_AFTER;
            report.error = Some(format!(
                "{} and {}/v1/conversations answered 404: check --api-url (the API's base \
                 URL, without /v1)",
                list_path(resource, Some(conversation)),
                client.base_url().trim_end_matches('/'),
            ));
            Ok(false)
        }
        Err(e) => {
            report.proof_failed = true;
            report.error = Some(fatal(e)?.to_string());
            Ok(false)
        }
    }
}

/// One page of `/v1/<resource>` after `cursor`, or `None` when the list cannot go on
/// (why is in `report`). The list of a `conversation`'s messages that is not found
/// is empty if the conversation is gone too. A page that ends at `cursor` again would
/// loop forever: it stops the list.
fn fetch_page(
    client: &mut Client,
    resource: Resource,
    filters: &[(&str, &str)],
    cursor: Option<&str>,
    conversation: Option<&str>,
    report: &mut ResourceReport,
) -> Result<Option<client::Page>, BackfillError> {
    // Of this request only: one conversation's refused cursor made the next
    // conversation's list, stopped for another reason, start over.
    report.refused_cursor = false;
    let page = match client.list(resource, filters, cursor) {
        Ok(Some(page)) => page,
        // After a cursor, a 404 is the cursor's object gone (not the list, nor a
        // conversation: its first page answered): refused as a 4xx is.
        Ok(None) if cursor.is_some() => {
            report.refused_cursor = true;
            report.error = Some(format!(
                "/v1/{} answered 404 after the cursor {}",
                resource.plural(),
                crate::store::query::shown(cursor.unwrap_or_default())
            ));
            return Ok(None);
        }
        // A conversation Protocol no longer has: nothing to list. Asked, not assumed:
        // an API whose messages lists all answer 404 (a wrong route) took every
        // conversation for empty, and `--prune` then deleted every message (a
        // black-box probe).
        Ok(None) if let Some(conversation) = conversation => {
            match client.get(Resource::Conversation, conversation) {
                Ok(None) if gone_is_proven(client, resource, conversation, report)? => {
                    client::Page::default()
                }
                Ok(None) => return Ok(None),
                // A few in a row, and so would every other conversation's: the pass
                // asks for no more (it asked twice for each, and the 200 for the
                // conversation set the client's count of failures in a row to 0 each
                // time). One alone fails alone (it stopped every conversation after
                // it, at every pass: a review).
                Ok(Some(_)) => {
                    report.missing_lists_in_a_row += 1;
                    report.error = Some(format!(
                        "{} answered 404, but the conversation exists: check --api-url \
                         (nothing is pruned while a list fails)",
                        list_path(resource, Some(conversation))
                    ));
                    return Ok(None);
                }
                Err(e) => {
                    report.error = Some(fatal(e)?.to_string());
                    return Ok(None);
                }
            }
        }
        // The list itself: the URL is wrong (`--api-url https://host/v1` asked for
        // `/v1/v1/...`), which running again cannot mend: said in full.
        Ok(None) => {
            report.error = Some(format!(
                "{}/v1/{} answered 404: check --api-url (the API's base URL, without /v1)",
                client.base_url().trim_end_matches('/'),
                resource.plural()
            ));
            return Ok(None);
        }
        Err(e) => {
            let e = fatal(e)?;
            report.refused_cursor = cursor.is_some() && matches!(e, ClientError::Refused { .. });
            report.error = Some(e.to_string());
            return Ok(None);
        }
    };
    report.missing_lists_in_a_row = 0;
    // More to come, and nothing to page on from: ending the list there would take it
    // for complete (and `--prune` would delete every row it never reached).
    // Which list, for a conversation's messages too (it named none of the thousands).
    let list = list_path(resource, conversation);
    if page.has_more && last_id(&page).is_none() {
        report.error = Some(format!(
            "{list} answered `has_more` with no objects to page on from; stopping"
        ));
        return Ok(None);
    }
    if page.has_more && last_id(&page).is_some_and(|last| Some(last) == cursor) {
        report.error = Some(format!(
            "{list} returned the same page again (its cursor does not advance); stopping"
        ));
        return Ok(None);
    }
    Ok(Some(page))
}

/// Why a list stopped whose pages lead back to one it gave already (page 2 ends where
/// page 1 did, say): it would be paged forever.
fn cycle(resource: Resource, conversation: &str, cursor: &str) -> String {
    let shown: String = cursor.chars().take(64).collect();
    format!(
        "{} led back to a page it had already given (after {shown:?}); stopping",
        list_path(resource, Some(conversation).filter(|c| !c.is_empty()))
    )
}

/// A list as its path, as it was asked for: a conversation's messages with the id
/// percent-encoded in the query (it was quoted, `conversation_id="…"`), cut after 64
/// characters.
fn list_path(resource: Resource, conversation: Option<&str>) -> String {
    const MAX: usize = 64;
    let Some(conversation) = conversation else {
        return format!("/v1/{}", resource.plural());
    };
    let mut encoded = client::encode(conversation);
    if let Some((cut, _)) = encoded.char_indices().nth(MAX) {
        encoded.truncate(cut);
        encoded.push('…');
    }
    format!("/v1/{}?conversation_id={encoded}", resource.plural())
}

/// The id of a page's last object (the cursor of the next page).
fn last_id(page: &client::Page) -> Option<&str> {
    page.data
        .last()
        .and_then(|o| o.get("id"))
        .and_then(|id| id.as_str())
}

/// Pages through one list from `cursor`, committing each page with its cursor.
/// Returns whether the list was read to its end.
#[allow(clippy::too_many_arguments)]
fn page_through(
    db: &mut impl Db,
    client: &mut Client,
    resource: Resource,
    scope: &str,
    filters: &[(&str, &str)],
    mut cursor: Option<String>,
    pass: &mut CursorState,
    report: &mut ResourceReport,
    progress: &mut impl FnMut(&ResourceReport),
) -> Result<bool, BackfillError> {
    let mut seen: std::collections::HashSet<String> = cursor.iter().cloned().collect();
    // Once per list: a restarted list refused again stops (no loop).
    let mut may_start_over = true;
    let mut listed_in_this_list = 0;
    loop {
        let page_seq = db.read(state::last_seq)?;
        let Some(page) = fetch_page(
            client,
            resource,
            filters,
            cursor.as_deref(),
            Some(scope).filter(|scope| !scope.is_empty()),
            report,
        )?
        else {
            // The cursor names an object Protocol no longer has (deleted since its page
            // was read, in this run or an earlier one; the list answers 400 or 404):
            // the list starts over, or no later run would get past a saved one (and a
            // daemon's reconcile would stop healing every resource).
            if report.refused_cursor && std::mem::take(&mut may_start_over) {
                tracing::warn!(
                    resource = resource.plural(),
                    error = report.error.take().unwrap_or_default(),
                    "the cursor was refused (its object may be gone); listing from the start again"
                );
                report.refused_cursor = false;
                report.listed_before_start_over += std::mem::take(&mut listed_in_this_list);
                // Listed from its start now, not from where an earlier backfill stopped.
                if scope.is_empty() {
                    report.resumed = false;
                }
                cursor = None;
                seen.clear();
                // A top-level list is its resource's pass: listed from the start, it is
                // a new pass, so that `--prune` weighs what this listing leaves out (rows
                // the abandoned one wrote would count as changed during it). A
                // conversation's messages are one list of the messages pass.
                if scope.is_empty() {
                    let (pass_seq, run) = (db.read(state::last_seq)?, pass.run);
                    db.write(move |c| state::start_pass(c, resource, pass_seq, run))?;
                    pass.pass_seq = pass_seq;
                }
                continue;
            }
            return Ok(false);
        };
        let complete = !page.has_more;
        let last = last_id(&page).map(str::to_owned).or(cursor.clone());
        if let Some(next) = last.as_ref().filter(|_| !complete)
            && !seen.insert(next.clone())
        {
            report.error = Some(cycle(resource, scope, next));
            return Ok(false);
        }
        let state = CursorState {
            cursor: last.clone(),
            complete,
            pass_seq: pass.pass_seq,
            run: pass.run,
        };
        report.listed += page.data.len() as u64;
        listed_in_this_list += page.data.len() as u64;
        let scope = scope.to_owned();
        let counts =
            db.write(move |c| commit_page(c, resource, &scope, page.data, page_seq, &state))?;
        for (outcome, n) in counts.outcomes {
            *report.outcomes.entry(outcome).or_default() += n;
        }
        if report.first_rejected.is_none() {
            report.first_rejected = counts.first_rejected;
        }
        report.unchanged += counts.unchanged;
        report.still_rejected += counts.still_rejected;
        if report.first_still_rejected.is_none() {
            report.first_still_rejected = counts.first_still_rejected;
        }
        report.pages += 1;
        progress(report);
        if complete {
            return Ok(true);
        }
        cursor = last;
    }
}

#[derive(Default)]
struct PageCounts {
    outcomes: BTreeMap<Outcome, u64>,
    /// See [`ResourceReport::first_rejected`].
    first_rejected: Option<(String, String)>,
    unchanged: u64,
    /// See [`ResourceReport::still_rejected`].
    still_rejected: u64,
    /// See [`ResourceReport::first_still_rejected`].
    first_still_rejected: Option<(String, String)>,
}

/// Applies one page and saves its cursor, in the caller's transaction.
fn commit_page(
    conn: &Connection,
    resource: Resource,
    scope: &str,
    objects: Vec<Object>,
    page_seq: i64,
    cursor: &CursorState,
) -> Result<PageCounts, StoreError> {
    let mut counts = PageCounts::default();
    let now = crate::now();
    for object in objects {
        let id = object
            .get("id")
            .and_then(|id| id.as_str())
            .unwrap_or_default()
            .to_owned();
        // Unchanged: the stored object already says all this. Not logged again.
        if let Some(stored) = crate::store::get(conn, resource, &id)?
            && object
                .iter()
                .all(|(key, value)| stored.get(key) == Some(value))
        {
            counts.unchanged += 1;
            state::mark_seen(conn, resource, &id)?;
            continue;
        }
        // A deleted object's basis is its delete: still listed, it is logged once
        // (`ignored_deleted`), and unchanged on later passes. (Its basis was none, as
        // at its first listing, which had applied: every pass said the same
        // `ignored_deleted` anew, counting a redelivery of that first event; a probe.)
        let basis = match state::row_seq(conn, resource, &id)? {
            Some(seq) => Basis::Row(seq),
            None => state::tombstone_seq(conn, resource, &id)?.map_or(Basis::None, Basis::Deleted),
        };
        // Also unchanged: the row was last written by a backfill of this very object
        // that applied, or that was stale because the row is newer (a message's
        // `updated_at`): applying it again would only log it. Not when that backfill
        // was stale because a webhook raced its page and it only filled keys: it then
        // wrote the row last, and every later pass took the row for healed (found by a
        // black-box probe: a webhook's partial row kept its values for good).
        if let Some(seq) = basis.seq()
            && last_backfilled(conn, resource, seq)?.as_ref() == Some(&object)
            && (crate::store::Log::outcome_at(conn, seq)?.0 == Outcome::Applied.as_str()
                || crate::apply::older_than_stored(conn, resource, &object)?)
        {
            counts.unchanged += 1;
            state::mark_seen(conn, resource, &id)?;
            continue;
        }
        let delivery = Delivery::backfill(resource, object, basis, page_seq);
        // Listed as an earlier pass listed it, against the same row (or delete): its
        // event is logged already. Not applied again, which would count it a
        // redelivery in the log (`stats` counted one more each pass; a probe).
        if let Some((first, error, _)) = crate::store::Log::outcome_of(conn, delivery.event_id())? {
            if first == Outcome::Rejected.as_str() {
                counts.still_rejected += 1;
                if counts.first_still_rejected.is_none() {
                    counts.first_still_rejected = Some((id.clone(), error.unwrap_or_default()));
                }
            } else {
                counts.unchanged += 1;
            }
            state::mark_seen(conn, resource, &id)?;
            continue;
        }
        match apply_delivery(conn, &delivery, Origin::Backfill { page_seq }, now)? {
            Applied::Logged { outcome, seq, .. } => {
                *counts.outcomes.entry(outcome).or_default() += 1;
                // Which, and why: the count alone left the user to find it in the log
                // (a black-box probe).
                if outcome == Outcome::Rejected && counts.first_rejected.is_none() {
                    let (_, error, _) = crate::store::Log::outcome_at(conn, seq)?;
                    counts.first_rejected = Some((id.clone(), error.unwrap_or_default()));
                }
            }
            Applied::Duplicate { .. } => counts.unchanged += 1,
        }
        state::mark_seen(conn, resource, &id)?;
    }
    state::save_cursor(conn, resource, scope, cursor)?;
    Ok(counts)
}

/// The object a backfill event `seq` of `resource` applied, if `seq` is one.
fn last_backfilled(
    conn: &Connection,
    resource: Resource,
    seq: i64,
) -> Result<Option<Object>, StoreError> {
    Ok(state::backfill_body_at(conn, resource, seq)?
        .and_then(|body| protocol_types::parse_json(body.as_bytes()).ok())
        .and_then(|mut envelope| match envelope["payload"].take() {
            serde_json::Value::Object(object) => Some(object),
            _ => None,
        }))
}

/// Deletes the rows of `resource` that the complete pass begun at `pass_seq` did not
/// see, that no event changed since, and that Protocol answers 404 for; `progress` is
/// told of each, so that a run stopped midway can still say which rows it deleted.
fn prune(
    db: &mut impl Db,
    client: &mut Client,
    resource: Resource,
    pass_seq: i64,
    report: &mut ResourceReport,
    progress: &mut impl FnMut(&ResourceReport),
) -> Result<(), BackfillError> {
    let candidates = db.read(move |c| state::unseen_since(c, resource, pass_seq))?;
    // A 404 says an object is gone only where a GET finds one its list gave: an API
    // without this resource's GET route (a 404 for every id) had every row it did not
    // list pruned (a black-box probe).
    // With nothing listed to ask for, nothing tells an API without the route from one
    // whose objects are all gone: nothing is pruned (every stored row would be; a
    // review).
    if !candidates.is_empty() {
        let Some(listed) = db.read(move |c| state::one_seen(c, resource))? else {
            report.error = Some(format!(
                "not pruning: the pass listed no stored {} to check that \
                 `GET /v1/{}/<id>` finds one, and its 404s alone would delete all {}",
                resource.plural(),
                resource.plural(),
                candidates.len()
            ));
            return Ok(());
        };
        match client.get(resource, &listed) {
            Ok(Some(_)) => {}
            Ok(None) => {
                report.error = Some(format!(
                    "not pruning: `GET /v1/{}/<id>` answers 404 for {}, which its list gave, \
                     so its 404s cannot say that an object is gone (check --api-url)",
                    resource.plural(),
                    crate::store::query::shown(&listed)
                ));
                return Ok(());
            }
            Err(e) => {
                let e = fatal(e)?;
                report.error = Some(format!("not pruning: {e}"));
                return Ok(());
            }
        }
    }
    // The rows that could not be asked about, and why: all counted, the first named
    // (each one's error replaced the last, and the others went unsaid: a probe).
    let mut unasked: Vec<(String, String)> = Vec::new();
    for id in candidates {
        // Each row is asked about: a stop (Ctrl-C) is heeded between two (it waited
        // for every candidate, over a minute for 400), and so is an API gone bad.
        db.go_on()?;
        if client.is_failing() {
            report.error = Some(format!("not pruning the rest: {}", api_failing(client)));
            break;
        }
        match client.get(resource, &id) {
            Ok(None) => {}
            Ok(Some(_)) => continue,
            // A 403 for one object, with a token the lists took: that object is not
            // this token's to see, which says nothing of whether it exists (it
            // stopped the whole run as a refused token: a probe).
            Err(ClientError::Unauthorized {
                status: 403,
                message,
            }) => {
                // Named with its path, as any other failure is (a probe).
                let path = format!("/v1/{}/{}", resource.plural(), self::client::segment(&id));
                let reason = message.map_or_else(|| "403".to_owned(), |m| format!("403: {m}"));
                unasked.push((id, format!("{path}: {reason}")));
                continue;
            }
            Err(e) => {
                let e = fatal(e)?;
                unasked.push((id, e.to_string()));
                continue;
            }
        }
        let target = id.clone();
        let pruned = db.write(move |c| {
            // An event may have touched the row since it was found missing.
            match state::row_seq(c, resource, &target)? {
                Some(seq) if seq <= pass_seq => {}
                _ => return Ok(false),
            }
            let page_seq = state::last_seq(c)?;
            let delivery = Delivery::prune(resource, &target, pass_seq);
            apply_delivery(c, &delivery, Origin::Backfill { page_seq }, crate::now())?;
            Ok(true)
        })?;
        if pruned {
            report.pruned.push(id);
            progress(report);
        }
    }
    if let Some((first, reason)) = unasked.first() {
        let others = match unasked.len() - 1 {
            0 => String::new(),
            1 => " and 1 other".to_owned(),
            n => format!(" and {n} others"),
        };
        let unasked = format!(
            "not pruning {}{others}, which could not be asked about ({reason})",
            crate::store::query::shown(first)
        );
        report.error = Some(match report.error.take() {
            Some(error) => format!("{error}; {unasked}"),
            None => unasked,
        });
    }
    Ok(())
}

#[cfg(test)]
mod props;

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// Lists are named by the path asked for: a conversation id percent-encoded, as
    /// in the request (it was quoted), and cut after 64 characters.
    #[test]
    fn lists_are_named_by_their_path() {
        assert_eq!(list_path(Resource::Contact, None), "/v1/contacts");
        assert_eq!(
            list_path(Resource::Message, Some("xgQQXg3hrtjh7AvZ")),
            "/v1/messages?conversation_id=xgQQXg3hrtjh7AvZ"
        );
        assert_eq!(
            list_path(Resource::Message, Some("a b&c=\u{1b}[2J")),
            "/v1/messages?conversation_id=a%20b%26c%3D%1B%5B2J"
        );
        let long = list_path(Resource::Message, Some(&"x".repeat(1000)));
        assert!(long.ends_with(&format!("={}…", "x".repeat(64))), "{long}");
        assert_eq!(
            cycle(Resource::Message, "c1", "m9"),
            "/v1/messages?conversation_id=c1 led back to a page it had already given \
             (after \"m9\"); stopping"
        );
    }

    /// A webhook racing the first page creates a partial row; the page's copy is held
    /// back and only fills the keys the row lacks, which makes it the row's last
    /// writer. The next pass must still overwrite with the API's copy (it took the
    /// row for healed, for good).
    #[test]
    fn a_held_back_copy_that_filled_keys_is_applied_by_the_next_pass() {
        let mut store = Store::open_in_memory().unwrap();
        let webhook = json!({"id": "w1", "type": "contact.updated",
                             "payload": {"id": "c1", "display_name": "WEBHOOK"}});
        store.apply(webhook.to_string().as_bytes(), 0).unwrap();
        let api_copy = json!({"id": "c1", "display_name": "User 1", "username": "u1"});
        let serde_json::Value::Object(object) = api_copy else {
            unreachable!()
        };
        let cursor = CursorState {
            cursor: None,
            complete: true,
            pass_seq: 0,
            run: 1,
        };
        let pass = |store: &mut Store, page_seq: i64| {
            let tx = store.transaction().unwrap();
            let counts = commit_page(
                &tx,
                Resource::Contact,
                "",
                vec![object.clone()],
                page_seq,
                &cursor,
            )
            .unwrap();
            tx.commit().unwrap();
            counts
        };
        // The page was requested before the webhook (log position 0): held back.
        let first = pass(&mut store, 0);
        assert_eq!(first.outcomes.get(&Outcome::Stale), Some(&1));
        let row = crate::store::get(store.conn(), Resource::Contact, "c1")
            .unwrap()
            .unwrap();
        assert_eq!(
            (row["display_name"].as_str(), row["username"].as_str()),
            (Some("WEBHOOK"), Some("u1"))
        );
        // The next pass, after everything logged so far.
        let page_seq = state::last_seq(store.conn()).unwrap();
        let second = pass(&mut store, page_seq);
        assert_eq!(second.outcomes.get(&Outcome::Applied), Some(&1), "healed");
        let row = crate::store::get(store.conn(), Resource::Contact, "c1")
            .unwrap()
            .unwrap();
        assert_eq!(row["display_name"], "User 1");
        // And then it is unchanged.
        let page_seq = state::last_seq(store.conn()).unwrap();
        assert_eq!(pass(&mut store, page_seq).unchanged, 1);
    }

    /// A listed object under a deleted parent is logged once, `ignored_deleted`, then
    /// counted unchanged (docs/BACKFILL.md): a backfilled copy only fills, and does not
    /// tombstone it as an event would (it was logged twice: a review of schema 18).
    #[test]
    fn an_object_under_a_deleted_parent_is_logged_once() {
        let mut store = Store::open_in_memory().unwrap();
        let delete = json!({"id": "w1", "type": "conversation.deleted", "payload": {"id": "v1"}});
        store.apply(delete.to_string().as_bytes(), 0).unwrap();
        let serde_json::Value::Object(object) =
            json!({"id": "m1", "conversation_id": "v1", "message": "hi"})
        else {
            unreachable!()
        };
        let cursor = CursorState {
            cursor: None,
            complete: true,
            pass_seq: 0,
            run: 1,
        };
        let pass = |store: &mut Store| {
            let page_seq = state::last_seq(store.conn()).unwrap();
            let tx = store.transaction().unwrap();
            let counts = commit_page(
                &tx,
                Resource::Message,
                "v1",
                vec![object.clone()],
                page_seq,
                &cursor,
            )
            .unwrap();
            tx.commit().unwrap();
            (
                counts.outcomes.get(&Outcome::IgnoredDeleted).copied(),
                counts.unchanged,
            )
        };
        let passes = [pass(&mut store), pass(&mut store)];
        assert_eq!(passes, [(Some(1), 0), (None, 1)]);
    }
}
