//! A fake Protocol REST API for the backfill tests: an axum app on 127.0.0.1:0, on a
//! tokio runtime of its own in a background thread, serving a generated account.
//!
//! - `GET /v1/{contacts,conversations,messages,groups,attachments}`: `{"has_more",
//!   "data"}` pages in a stable order (by id), `limit` (default 10, 1..=100, else 400),
//!   `starting_after=<id>`, and `conversation_id` for messages and attachments.
//! - `GET /v1/<resource>/<id>`: the object, or 404 `{"type":"invalid_request",...}`.
//! - `Authorization: Bearer <token>` on every request, else 401.
//!
//! The test controls it through [`FakeApi`]: fail the next requests with 500 or 429
//! (`Retry-After`), slow pages down, break the list requests a rule matches (429 with
//! `Retry-After: 0`, forever: the client gives up at once), pause the first request a
//! rule matches until [`FakeApi::release`], change the token, hide objects from the
//! lists, mutate the account (with Protocol's cascades), and read the request log.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path, Query, State as Extract};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use protocol_types::Resource;
use serde_json::{Map, Value, json};

/// The token the fake accepts unless a test changes it: long and distinctive, so a
/// test can look for it in the mirror's output.
pub const TOKEN: &str = "tok_e2e_Zq7fXw3LbN9sVt4RkY2hPm6D";

/// Every resource, in the order the tests list them.
pub const RESOURCES: [Resource; 5] = Resource::ALL;

// ---------------------------------------------------------------------------------------
// The account
// ---------------------------------------------------------------------------------------

/// How big an account to generate.
#[derive(Debug, Clone, Copy)]
pub struct Size {
    /// Contacts, each with a 1:1 conversation.
    pub contacts: usize,
    /// Groups, each with a conversation and 2 to 6 members.
    pub groups: usize,
    /// Objects in all: messages (some with attachments) are added until it is reached.
    pub total: usize,
    /// Messages of the first 1:1 conversation (so that its list spans pages).
    pub heavy: usize,
}

impl Size {
    /// 800 objects: 110 contacts (two pages), a conversation with 120 messages (two
    /// pages), conversations without messages.
    pub const SMALL: Size = Size {
        contacts: 110,
        groups: 6,
        total: 800,
        heavy: 120,
    };

    /// A tiny account for tests that run many passes.
    pub const TINY: Size = Size {
        contacts: 12,
        groups: 2,
        total: 80,
        heavy: 0,
    };
}

/// A small deterministic random generator (xorshift64*).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// The next number.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// True `percent` times in 100.
    pub fn percent(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    /// A Protocol-looking id: 16 random alphanumerics.
    pub fn id(&mut self) -> String {
        const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
        (0..16)
            .map(|_| CHARS[self.below(CHARS.len())] as char)
            .collect()
    }
}

/// A Protocol account: every object as the API shows it, keyed by id.
///
/// Messages are kept without `attachments`: the API renders them from the attachment
/// objects (ordered by `created_at`, then id), so the two always agree.
#[derive(Debug, Clone, Default)]
pub struct Account {
    contacts: BTreeMap<String, Value>,
    conversations: BTreeMap<String, Value>,
    messages: BTreeMap<String, Value>,
    groups: BTreeMap<String, Value>,
    attachments: BTreeMap<String, Value>,
    /// Message ids by conversation id.
    messages_of: HashMap<String, BTreeSet<String>>,
    /// Attachment ids by message id.
    attachments_of: HashMap<String, BTreeSet<String>>,
}

const T0: i64 = 1_700_000_000;

fn embedded_contact(contact: &Value) -> Value {
    let mut out = Map::new();
    for key in [
        "id",
        "username",
        "phone_number",
        "avatar_url",
        "last_active_at",
        "created_at",
    ] {
        if let Some(value) = contact.get(key) {
            out.insert(key.into(), value.clone());
        }
    }
    Value::Object(out)
}

impl Account {
    /// An empty account.
    pub fn new() -> Account {
        Account::default()
    }

    /// A coherent account of `size`, the same for the same `seed`: contacts with 1:1
    /// conversations, groups with conversations and members (some with only a
    /// `username`), messages with embedded senders, reactions and attachments,
    /// nullable fields set to `null` now and then, unknown keys here and there, and
    /// two ids shared by objects of different resources.
    pub fn generate(seed: u64, size: Size) -> Account {
        let mut rng = Rng::new(seed);
        let mut account = Account::new();
        let mut used = BTreeSet::new();
        let mut fresh = |rng: &mut Rng| loop {
            let id = rng.id();
            if used.insert(id.clone()) {
                return id;
            }
        };
        let owner = json!({
            "id": "me", "username": "me", "phone_number": "+15550000000",
            "avatar_url": "https://cdn.example/avatars/me.png", "last_active_at": T0,
            "created_at": T0 - 1_000_000,
        });
        // Contacts and their 1:1 conversations.
        let mut contact_ids = Vec::new();
        let mut conversation_ids = Vec::new();
        for k in 0..size.contacts {
            let id = fresh(&mut rng);
            let conversation = fresh(&mut rng);
            let created = T0 - 500_000 + k as i64 * 60;
            let mut contact = json!({
                "id": id,
                "username": format!("user{k}"),
                "phone_number": format!("+1555{k:07}"),
                "avatar_url": format!("https://cdn.example/avatars/{id}.png"),
                "display_name": if k.is_multiple_of(4) { Value::Null } else { json!(format!("User Nº{k}")) },
                "conversation_id": conversation,
                "last_active_at": if k.is_multiple_of(5) { Value::Null } else { json!(created + 9_000) },
                "created_at": created,
            });
            if k.is_multiple_of(7) {
                contact["x_labels"] = json!(["vip", {"since": created}]);
            }
            account.put(Resource::Contact, contact);
            account.put(
                Resource::Conversation,
                json!({
                    "id": conversation,
                    "contact_id": id,
                    "group_id": null,
                    "pinned_message_id": null,
                    "is_pinned": k.is_multiple_of(9),
                    "is_muted": k.is_multiple_of(6),
                    "last_active_at": created + 10_000,
                    "last_opened_at": if k.is_multiple_of(3) { Value::Null } else { json!(created + 11_000) },
                    "created_at": created,
                    "archived_at": null,
                }),
            );
            contact_ids.push(id);
            conversation_ids.push(conversation);
        }
        // Groups, their conversations and members.
        let mut group_members: HashMap<String, Vec<Value>> = HashMap::new();
        for g in 0..size.groups {
            // One group shares its id with a contact (rows are keyed by resource and id).
            let id = if g == 1 && !contact_ids.is_empty() {
                contact_ids[0].clone()
            } else {
                fresh(&mut rng)
            };
            let conversation = fresh(&mut rng);
            let created = T0 - 400_000 + g as i64 * 3600;
            let mut members = Vec::new();
            let mut member_ids = BTreeSet::new();
            for _ in 0..2 + rng.below(5) {
                if contact_ids.is_empty() {
                    break;
                }
                let k = rng.below(contact_ids.len());
                if member_ids.insert(k) {
                    members.push(json!({"id": contact_ids[k], "username": format!("user{k}")}));
                }
            }
            if g.is_multiple_of(2) {
                members.push(json!({"username": format!("guest{g}")}));
            }
            let first_member = members
                .first()
                .and_then(|m| m.get("id"))
                .cloned()
                .unwrap_or(Value::Null);
            account.put(
                Resource::Group,
                json!({
                    "id": id,
                    "name": format!("Group «{g}»"),
                    "description": if g.is_multiple_of(2) { Value::Null } else { json!(format!("about {g}")) },
                    "avatar_url": if g.is_multiple_of(3) { Value::Null } else { json!(format!("https://cdn.example/g/{g}.png")) },
                    "conversation_id": conversation,
                    "contacts": members.clone(),
                    "created_at": created,
                    "archived_at": if g == 3 { json!(created + 100) } else { Value::Null },
                }),
            );
            account.put(
                Resource::Conversation,
                json!({
                    "id": conversation,
                    "contact_id": first_member,
                    "group_id": id,
                    "pinned_message_id": null,
                    "is_pinned": false,
                    "is_muted": g % 2 == 1,
                    "last_active_at": created + 20_000,
                    "last_opened_at": null,
                    "created_at": created,
                    "archived_at": null,
                }),
            );
            group_members.insert(conversation.clone(), members);
            conversation_ids.push(conversation);
        }
        // Messages (and attachments) until the total is reached.
        let contacts_by_conversation: HashMap<String, usize> = (0..contact_ids.len())
            .map(|k| (conversation_ids[k].clone(), k))
            .collect();
        let mut n = 0usize;
        let mut shared_attachment_id = contact_ids.get(1).cloned();
        while account.len() < size.total && !conversation_ids.is_empty() {
            let conversation = if n < size.heavy {
                conversation_ids[0].clone()
            } else {
                // Skewed: low conversations get more, many get none.
                let a = rng.below(conversation_ids.len());
                let b = rng.below(conversation_ids.len());
                conversation_ids[a.min(b) / 2].clone()
            };
            let sender = if rng.percent(40) {
                owner.clone()
            } else if let Some(k) = contacts_by_conversation.get(&conversation) {
                embedded_contact(&account.contacts[&contact_ids[*k]])
            } else {
                let members = &group_members[&conversation];
                let member = &members[rng.below(members.len())];
                match member.get("id").and_then(Value::as_str) {
                    Some(id) => embedded_contact(&account.contacts[id]),
                    None => member.clone(),
                }
            };
            let id = fresh(&mut rng);
            let created = T0 - 300_000 + n as i64 * 17;
            let reactions = if n.is_multiple_of(5) {
                json!([{"thumbs_up": ["user1", "user2"]}, {"red_angry_face": ["KateMcCallister"]}])
            } else {
                json!([])
            };
            account.put(
                Resource::Message,
                json!({
                    "id": id,
                    "conversation_id": conversation,
                    "contact": sender,
                    "message": if n.is_multiple_of(3) { format!("héllo 👋 nº{n}, \"quoted\"") } else { format!("message {n}") },
                    "reactions": reactions,
                    "attachments": [],
                    "read_at": if n.is_multiple_of(2) { Value::Null } else { json!(created + 5) },
                    "created_at": created,
                    "updated_at": if n.is_multiple_of(11) { Value::Null } else { json!(created + (n % 4) as i64) },
                }),
            );
            if rng.percent(30) {
                for j in 0..1 + rng.below(2) {
                    if account.len() >= size.total {
                        break;
                    }
                    // One attachment shares its id with a contact.
                    let attachment_id = shared_attachment_id
                        .take()
                        .unwrap_or_else(|| fresh(&mut rng));
                    account.put(
                        Resource::Attachment,
                        json!({
                            "id": attachment_id,
                            "message_id": id,
                            "filename": format!("file {n}-{j}.pdf"),
                            "file_url": format!("https://cdn.example/files/{attachment_id}"),
                            "file_type": if j == 0 { "application/pdf" } else { "image/png" },
                            "file_size": 1000 + rng.below(1_000_000),
                            // Two attachments of a message may share a created_at.
                            "created_at": created + (j as i64 % 2) * (n as i64 % 2),
                        }),
                    );
                }
            }
            n += 1;
        }
        account
    }

    fn map(&self, resource: Resource) -> &BTreeMap<String, Value> {
        match resource {
            Resource::Contact => &self.contacts,
            Resource::Conversation => &self.conversations,
            Resource::Message => &self.messages,
            Resource::Group => &self.groups,
            Resource::Attachment => &self.attachments,
        }
    }

    fn map_mut(&mut self, resource: Resource) -> &mut BTreeMap<String, Value> {
        match resource {
            Resource::Contact => &mut self.contacts,
            Resource::Conversation => &mut self.conversations,
            Resource::Message => &mut self.messages,
            Resource::Group => &mut self.groups,
            Resource::Attachment => &mut self.attachments,
        }
    }

    /// How many objects the account has.
    pub fn len(&self) -> usize {
        RESOURCES.iter().map(|r| self.map(*r).len()).sum()
    }

    /// How many objects of `resource` it has.
    pub fn count(&self, resource: Resource) -> usize {
        self.map(resource).len()
    }

    /// The ids of `resource`, in list order.
    pub fn ids(&self, resource: Resource) -> Vec<String> {
        self.map(resource).keys().cloned().collect()
    }

    /// The message ids of `conversation`, in list order.
    pub fn messages_of(&self, conversation: &str) -> Vec<String> {
        self.messages_of
            .get(conversation)
            .map(|ids| ids.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// The attachment ids of `message`.
    pub fn attachments_of(&self, message: &str) -> Vec<String> {
        self.attachments_of
            .get(message)
            .map(|ids| ids.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Object `id` of `resource` as the API shows it.
    pub fn get(&self, resource: Resource, id: &str) -> Option<Value> {
        let object = self.map(resource).get(id)?;
        Some(self.render(resource, object))
    }

    fn render(&self, resource: Resource, object: &Value) -> Value {
        if resource != Resource::Message {
            return object.clone();
        }
        let mut object = object.clone();
        let id = object["id"].as_str().unwrap_or_default();
        let mut attachments: Vec<&Value> = self
            .attachments_of
            .get(id)
            .into_iter()
            .flatten()
            .map(|a| &self.attachments[a])
            .collect();
        attachments.sort_by_key(|a| {
            (
                a["created_at"].as_i64(),
                a["id"].as_str().map(str::to_owned),
            )
        });
        object["attachments"] = Value::Array(attachments.into_iter().cloned().collect());
        object
    }

    /// Every object as the mirror's `get` must show it, keyed like
    /// [`protocol_mirror::Snapshot::objects`].
    pub fn expected(&self) -> BTreeMap<(String, String), Value> {
        let mut out = BTreeMap::new();
        for resource in RESOURCES {
            for (id, object) in self.map(resource) {
                out.insert(
                    (resource.as_str().to_owned(), id.clone()),
                    self.render(resource, object),
                );
            }
        }
        out
    }

    /// Adds or replaces an object (a message's `attachments` are ignored: they come
    /// from the attachment objects).
    pub fn put(&mut self, resource: Resource, object: Value) {
        let id = object["id"]
            .as_str()
            .expect("an object has a string id")
            .to_owned();
        self.unindex(resource, &id);
        let mut object = object;
        match resource {
            Resource::Message => {
                if let Some(map) = object.as_object_mut() {
                    map.remove("attachments");
                }
                if let Some(conversation) = object["conversation_id"].as_str() {
                    self.messages_of
                        .entry(conversation.to_owned())
                        .or_default()
                        .insert(id.clone());
                }
            }
            Resource::Attachment => {
                if let Some(message) = object["message_id"].as_str() {
                    self.attachments_of
                        .entry(message.to_owned())
                        .or_default()
                        .insert(id.clone());
                }
            }
            _ => {}
        }
        self.map_mut(resource).insert(id, object);
    }

    fn unindex(&mut self, resource: Resource, id: &str) {
        let Some(old) = self.map(resource).get(id) else {
            return;
        };
        match resource {
            Resource::Message => {
                if let Some(conversation) = old["conversation_id"].as_str().map(str::to_owned)
                    && let Some(ids) = self.messages_of.get_mut(&conversation)
                {
                    ids.remove(id);
                }
            }
            Resource::Attachment => {
                if let Some(message) = old["message_id"].as_str().map(str::to_owned)
                    && let Some(ids) = self.attachments_of.get_mut(&message)
                {
                    ids.remove(id);
                }
            }
            _ => {}
        }
    }

    /// Merges `patch` into object `id` (keys present overwrite) and returns the object
    /// as the API now shows it.
    pub fn update(&mut self, resource: Resource, id: &str, patch: Value) -> Value {
        let mut object = self
            .map(resource)
            .get(id)
            .unwrap_or_else(|| panic!("no {resource} {id} to update"))
            .clone();
        for (key, value) in patch.as_object().expect("a patch is an object") {
            object[key.as_str()] = value.clone();
        }
        self.put(resource, object);
        self.get(resource, id).unwrap()
    }

    /// Deletes object `id` as Protocol documents it (SPEC 4.6): a contact takes its 1:1
    /// conversations and its group memberships, a conversation its messages, a group
    /// its conversations, a message its attachments. Returns every (resource, id)
    /// removed.
    pub fn delete(&mut self, resource: Resource, id: &str) -> Vec<(Resource, String)> {
        let mut removed = Vec::new();
        self.delete_into(resource, id, &mut removed);
        removed
    }

    fn delete_into(&mut self, resource: Resource, id: &str, removed: &mut Vec<(Resource, String)>) {
        self.unindex(resource, id);
        let Some(object) = self.map_mut(resource).remove(id) else {
            return;
        };
        removed.push((resource, id.to_owned()));
        match resource {
            Resource::Contact => {
                let mut conversations: Vec<String> = self
                    .conversations
                    .values()
                    .filter(|c| c["contact_id"] == id && c["group_id"].is_null())
                    .map(|c| c["id"].as_str().unwrap().to_owned())
                    .collect();
                if let Some(own) = object["conversation_id"].as_str()
                    && self
                        .conversations
                        .get(own)
                        .is_some_and(|c| c["group_id"].is_null())
                {
                    conversations.push(own.to_owned());
                }
                for conversation in conversations {
                    self.delete_into(Resource::Conversation, &conversation, removed);
                }
                for group in self.groups.values_mut() {
                    if let Some(members) = group["contacts"].as_array_mut() {
                        members.retain(|m| m["id"] != id);
                    }
                }
            }
            Resource::Conversation => {
                for message in self.messages_of(id) {
                    self.delete_into(Resource::Message, &message, removed);
                }
            }
            Resource::Group => {
                let mut conversations: Vec<String> = self
                    .conversations
                    .values()
                    .filter(|c| c["group_id"] == id)
                    .map(|c| c["id"].as_str().unwrap().to_owned())
                    .collect();
                if let Some(own) = object["conversation_id"].as_str() {
                    conversations.push(own.to_owned());
                }
                for conversation in conversations {
                    self.delete_into(Resource::Conversation, &conversation, removed);
                }
            }
            Resource::Message => {
                for attachment in self.attachments_of(id) {
                    self.delete_into(Resource::Attachment, &attachment, removed);
                }
            }
            Resource::Attachment => {}
        }
    }

    /// One list page: objects after `after` (by id), of `conversation` when given.
    fn page(
        &self,
        resource: Resource,
        conversation: Option<&str>,
        after: Option<&str>,
        limit: usize,
        hidden: &BTreeSet<(Resource, String)>,
    ) -> (Vec<Value>, bool) {
        let lower = match after {
            Some(after) => Bound::Excluded(after.to_owned()),
            None => Bound::Unbounded,
        };
        let range = (lower, Bound::Unbounded);
        let ids: Box<dyn Iterator<Item = &String>> = match (resource, conversation) {
            (Resource::Message, Some(conversation)) => match self.messages_of.get(conversation) {
                Some(ids) => Box::new(ids.range(range)),
                None => Box::new(std::iter::empty()),
            },
            (Resource::Attachment, Some(conversation)) => {
                let messages: BTreeSet<&String> = self
                    .messages_of
                    .get(conversation)
                    .into_iter()
                    .flatten()
                    .collect();
                Box::new(
                    self.attachments
                        .range(range)
                        .filter(move |(_, a)| {
                            a["message_id"]
                                .as_str()
                                .is_some_and(|m| messages.contains(&m.to_owned()))
                        })
                        .map(|(id, _)| id),
                )
            }
            _ => Box::new(self.map(resource).range(range).map(|(id, _)| id)),
        };
        let mut data = Vec::new();
        let mut has_more = false;
        for id in ids {
            if hidden.contains(&(resource, id.clone())) {
                continue;
            }
            if data.len() == limit {
                has_more = true;
                break;
            }
            data.push(self.render(resource, &self.map(resource)[id]));
        }
        (data, has_more)
    }
}

// ---------------------------------------------------------------------------------------
// The server
// ---------------------------------------------------------------------------------------

/// `request` with the dot segments of its path removed (not percent-decoded first).
fn without_dot_segments(mut request: axum::extract::Request) -> axum::extract::Request {
    let uri = request.uri();
    let mut kept: Vec<&str> = Vec::new();
    for segment in uri.path().split('/').skip(1) {
        match segment {
            "." => {}
            ".." => {
                kept.pop();
            }
            other => kept.push(other),
        }
    }
    let path = format!("/{}", kept.join("/"));
    if path != uri.path() {
        let query = uri.query().map(|q| format!("?{q}")).unwrap_or_default();
        *request.uri_mut() = format!("{path}{query}").parse().expect("a normalized path");
    }
    request
}

/// One request the fake received (its `Debug` leaves the token out).
#[derive(Clone)]
pub struct Request {
    /// The resource (`None` for an unknown one).
    pub resource: Option<Resource>,
    /// The id of a `GET /v1/<resource>/<id>`; `None` for a list.
    pub id: Option<String>,
    /// The list's `starting_after`.
    pub starting_after: Option<String>,
    /// The list's `conversation_id`.
    pub conversation_id: Option<String>,
    /// The list's `limit`, as sent.
    pub limit: Option<String>,
    /// The `Authorization` header, as sent.
    pub authorization: Option<String>,
    /// The status the fake answered (or is about to, for a paused request).
    pub status: u16,
    /// When it arrived.
    pub at: Instant,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let path = match (&self.resource, &self.id) {
            (Some(r), Some(id)) => format!("/v1/{}/{id}", r.plural()),
            (Some(r), None) => format!("/v1/{}", r.plural()),
            (None, _) => "/v1/?".to_owned(),
        };
        f.debug_struct("Request")
            .field("path", &path)
            .field("conversation_id", &self.conversation_id)
            .field("starting_after", &self.starting_after)
            .field("limit", &self.limit)
            .field(
                "authorized",
                &(self.authorization.as_deref() == Some(&*format!("Bearer {TOKEN}"))),
            )
            .field("status", &self.status)
            .finish()
    }
}

impl Request {
    /// Whether it is a list request of `resource`.
    pub fn lists(&self, resource: Resource) -> bool {
        self.id.is_none() && self.resource == Some(resource)
    }

    /// Which page it asks for: (resource, conversation, starting_after).
    pub fn page(&self) -> (Option<Resource>, Option<String>, Option<String>) {
        (
            self.resource,
            self.conversation_id.clone(),
            self.starting_after.clone(),
        )
    }
}

/// Matches requests, for [`FakeApi::break_when`] and [`FakeApi::pause_when`].
pub type Rule = Box<dyn Fn(&Request) -> bool + Send>;

/// The fake's state; tests may change any of it with [`FakeApi::with`].
pub struct State {
    /// The account served.
    pub account: Account,
    /// The accepted bearer token.
    pub token: String,
    /// The next this many requests answer 500.
    pub fail_500: usize,
    /// The next this many requests answer 429 with `Retry-After: retry_after`.
    pub fail_429: usize,
    /// The `Retry-After` of those 429s, in seconds.
    pub retry_after: u64,
    /// The next this many requests wait `slow_delay` before answering.
    pub slow_next: usize,
    /// See `slow_next`.
    pub slow_delay: Duration,
    /// Every list page waits this long.
    pub page_delay: Duration,
    /// Authorized list requests matching this answer 429 `Retry-After: 0`, forever.
    pub broken: Option<Rule>,
    /// Authorized requests matching this answer 404, as a route the API does not have.
    pub missing: Option<Rule>,
    /// Authorized requests matching this answer 403, as an object the token may not see.
    pub forbidden: Option<Rule>,
    /// The first authorized request matching this (a 200) waits for `release`, after
    /// its answer was computed.
    pub pause: Option<Rule>,
    /// How many requests paused so far.
    pub paused: usize,
    /// The next this many requests answer 503 with `Retry-After: retry_after`.
    pub fail_503: usize,
    /// The next this many requests answer 200 with a `Content-Length` of 1,000 and
    /// close the connection after 30 bytes of the body.
    pub cut_next: usize,
    /// The next this many requests answer 200 with the body `null`: JSON, but no
    /// list page or object.
    pub null_next: usize,
    /// Lists answer 301 to this location (304 without a `Location` when it is empty).
    pub redirect_lists: Option<String>,
    /// Lists answer this status (400 as Stripe's "No such object", or 404) for a
    /// `starting_after` naming no object of the list, rather than going on after
    /// where it would be.
    pub refuse_unknown_cursor: Option<StatusCode>,
    /// Lists ignore `starting_after` (a misbehaving API: every page is the first).
    pub ignore_cursor: bool,
    /// Lists answer `starting_after` = this id with their first page (a misbehaving
    /// API whose pages lead back to an earlier one).
    pub rewind_from: Option<String>,
    /// Lists always say `has_more` (a misbehaving API).
    pub always_has_more: bool,
    /// Lists leave out `has_more` (a misbehaving API).
    pub omit_has_more: bool,
    /// Objects left out of the lists (still served by `GET /v1/<resource>/<id>`).
    pub hidden: BTreeSet<(Resource, String)>,
    /// Every request, in arrival order.
    pub requests: Vec<Request>,
}

struct Shared {
    state: Mutex<State>,
    gate: tokio::sync::Semaphore,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The running fake; stops when dropped.
pub struct FakeApi {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeApi {
    /// Serves `account` on 127.0.0.1:0 with [`TOKEN`].
    pub fn start(account: Account) -> FakeApi {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the fake API");
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                account,
                token: TOKEN.to_owned(),
                fail_500: 0,
                fail_429: 0,
                retry_after: 0,
                slow_next: 0,
                slow_delay: Duration::ZERO,
                page_delay: Duration::ZERO,
                broken: None,
                null_next: 0,
                missing: None,
                forbidden: None,
                pause: None,
                paused: 0,
                fail_503: 0,
                cut_next: 0,
                redirect_lists: None,
                refuse_unknown_cursor: None,
                ignore_cursor: false,
                rewind_from: None,
                always_has_more: false,
                omit_has_more: false,
                hidden: BTreeSet::new(),
                requests: Vec::new(),
            }),
            gate: tokio::sync::Semaphore::new(0),
        });
        let app = Router::new()
            .route("/v1/{resource}", get(list))
            .route("/v1/{resource}/{id}", get(one))
            .fallback(|| async { error(StatusCode::NOT_FOUND, "invalid_request", "no such route") })
            .with_state(shared.clone());
        // Dot segments are removed before routing, as a normalizing proxy in front of
        // the API might (RFC 3986, 5.2.4, but for the trailing slash it leaves):
        // `/v1/contacts/..` asks for `/v1`.
        let app =
            axum::ServiceExt::<axum::extract::Request>::into_make_service(tower::ServiceExt::<
                axum::extract::Request,
            >::map_request(
                app,
                without_dot_segments,
            ));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("fake-protocol-api".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("the fake API's runtime");
                runtime.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                    tokio::select! {
                        _ = axum::serve(listener, app).into_future() => {}
                        _ = stopped => {}
                    }
                });
                runtime.shutdown_background();
            })
            .expect("spawn the fake API");
        FakeApi {
            addr,
            shared,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Its base URL (`http://127.0.0.1:PORT`, without `/v1`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Runs `f` on the state (under its lock).
    pub fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut self.shared.lock())
    }

    /// A copy of the account.
    pub fn account(&self) -> Account {
        self.with(|s| s.account.clone())
    }

    /// The account as the mirror must show it.
    pub fn expected(&self) -> BTreeMap<(String, String), Value> {
        self.with(|s| s.account.expected())
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Request> {
        self.with(|s| s.requests.clone())
    }

    /// How many requests so far.
    pub fn request_count(&self) -> usize {
        self.with(|s| s.requests.len())
    }

    /// The next `n` requests answer 500.
    pub fn fail_next(&self, n: usize) {
        self.with(|s| s.fail_500 = n);
    }

    /// The next `n` requests answer 200 with the body `null`.
    pub fn null_next(&self, n: usize) {
        self.with(|s| s.null_next = n);
    }

    /// The next `n` requests answer 429 with `Retry-After: retry_after`.
    pub fn throttle_next(&self, n: usize, retry_after: u64) {
        self.with(|s| {
            s.fail_429 = n;
            s.retry_after = retry_after;
        });
    }

    /// The next `n` requests answer 503 with `Retry-After: retry_after`.
    pub fn unavailable_next(&self, n: usize, retry_after: u64) {
        self.with(|s| {
            s.fail_503 = n;
            s.retry_after = retry_after;
        });
    }

    /// The next `n` requests answer 200 and close the connection partway through
    /// the body.
    pub fn cut_next(&self, n: usize) {
        self.with(|s| s.cut_next = n);
    }

    /// The next `n` requests wait `delay` before answering.
    pub fn slow_next(&self, n: usize, delay: Duration) {
        self.with(|s| {
            s.slow_next = n;
            s.slow_delay = delay;
        });
    }

    /// Authorized list requests matching `rule` answer 429 `Retry-After: 0` until
    /// [`heal`](Self::heal).
    pub fn break_when(&self, rule: impl Fn(&Request) -> bool + Send + 'static) {
        self.with(|s| s.broken = Some(Box::new(rule)));
    }

    /// Ends [`break_when`](Self::break_when) and [`missing_when`](Self::missing_when).
    pub fn heal(&self) {
        self.with(|s| {
            s.broken = None;
            s.missing = None;
        });
    }

    /// Authorized requests matching `rule` answer 404 until [`heal`](Self::heal).
    pub fn missing_when(&self, rule: impl Fn(&Request) -> bool + Send + 'static) {
        self.with(|s| s.missing = Some(Box::new(rule)));
    }

    /// The first authorized request matching `rule` (from now on) waits, once its
    /// answer is computed, until [`release`](Self::release).
    pub fn pause_when(&self, rule: impl Fn(&Request) -> bool + Send + 'static) {
        self.with(|s| s.pause = Some(Box::new(rule)));
    }

    /// Waits until `n` requests in all have paused (fails the test after 30 s).
    #[track_caller]
    pub fn wait_paused(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.with(|s| s.paused) < n {
            assert!(
                Instant::now() < deadline,
                "no request paused (rule still set: {})",
                self.with(|s| s.pause.is_some())
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Lets one paused request answer.
    pub fn release(&self) {
        self.shared.gate.add_permits(1);
    }

    /// Accepts only `token` from now on.
    pub fn set_token(&self, token: &str) {
        self.with(|s| s.token = token.to_owned());
    }

    /// Leaves object `id` out of the lists (it is still served by id).
    pub fn hide(&self, resource: Resource, id: &str) {
        self.with(|s| s.hidden.insert((resource, id.to_owned())));
    }
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        self.shared.gate.close();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn error(status: StatusCode, kind: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({"type": kind, "message": message})),
    )
        .into_response()
}

/// A body that sends 30 bytes, then fails 200 ms later (the server closes the
/// connection, the head and those bytes sent).
struct CutShort {
    sent: bool,
    pause: std::pin::Pin<Box<tokio::time::Sleep>>,
}

impl CutShort {
    fn new() -> CutShort {
        CutShort {
            sent: false,
            pause: Box::pin(tokio::time::sleep(Duration::from_millis(200))),
        }
    }
}

impl axum::body::HttpBody for CutShort {
    type Data = axum::body::Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        use std::task::Poll;
        if !std::mem::replace(&mut self.sent, true) {
            return Poll::Ready(Some(Ok(hyper::body::Frame::data(
                axum::body::Bytes::from_static(b"{\"has_more\": false, \"data\": [{"),
            ))));
        }
        match self.pause.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(std::io::Error::other("cut short")))),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// What the fake decided under its lock.
enum Answer {
    Now(Response),
    Later {
        body: Value,
        pause: bool,
        delay: Duration,
    },
}

/// Applies auth and faults, then `compute` (the page or the object), and logs.
fn decide(
    shared: &Shared,
    mut request: Request,
    compute: impl FnOnce(&State) -> Result<Value, (StatusCode, String)>,
) -> Answer {
    let mut state = shared.lock();
    let is_list = request.id.is_none();
    let expected = format!("Bearer {}", state.token);
    let answer = if request.authorization.as_deref() != Some(expected.as_str()) {
        Answer::Now(error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Invalid API token",
        ))
    } else if state.fail_500 > 0 {
        state.fail_500 -= 1;
        Answer::Now(error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "api_error",
            "injected failure",
        ))
    } else if let Some(location) = state.redirect_lists.clone().filter(|_| is_list) {
        if location.is_empty() {
            let mut response = error(StatusCode::NOT_MODIFIED, "moved", "moved");
            *response.body_mut() = axum::body::Body::empty();
            return Answer::Now(response);
        }
        let mut response = error(StatusCode::MOVED_PERMANENTLY, "moved", "moved");
        response
            .headers_mut()
            .insert(header::LOCATION, location.parse().unwrap());
        Answer::Now(response)
    } else if state.null_next > 0 {
        state.null_next -= 1;
        let mut response = Response::new(axum::body::Body::from("null"));
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
        Answer::Now(response)
    } else if state.fail_503 > 0 {
        state.fail_503 -= 1;
        let response = error(
            StatusCode::SERVICE_UNAVAILABLE,
            "api_error",
            "down for maintenance",
        );
        Answer::Now(with_retry_after(response, &state.retry_after.to_string()))
    } else if state.cut_next > 0 {
        state.cut_next -= 1;
        let mut response = Response::new(axum::body::Body::new(CutShort::new()));
        response
            .headers_mut()
            .insert(header::CONTENT_LENGTH, "1000".parse().unwrap());
        Answer::Now(response)
    } else if state.fail_429 > 0 {
        state.fail_429 -= 1;
        let retry_after = state.retry_after.to_string();
        Answer::Now(throttled(&retry_after))
    } else if is_list && state.broken.as_ref().is_some_and(|rule| rule(&request)) {
        Answer::Now(throttled("0"))
    } else if state.forbidden.as_ref().is_some_and(|rule| rule(&request)) {
        Answer::Now(error(
            StatusCode::FORBIDDEN,
            "invalid_request",
            "not yours to see",
        ))
    } else if state.missing.as_ref().is_some_and(|rule| rule(&request)) {
        Answer::Now(error(
            StatusCode::NOT_FOUND,
            "invalid_request",
            "no such route",
        ))
    } else {
        match compute(&state) {
            Err((status, message)) => Answer::Now(error(status, "invalid_request", &message)),
            Ok(body) => {
                let pause = state.pause.as_ref().is_some_and(|rule| rule(&request));
                if pause {
                    state.pause = None;
                    state.paused += 1;
                }
                let delay = if state.slow_next > 0 {
                    state.slow_next -= 1;
                    state.slow_delay
                } else if is_list {
                    state.page_delay
                } else {
                    Duration::ZERO
                };
                Answer::Later { body, pause, delay }
            }
        }
    };
    request.status = match &answer {
        Answer::Now(response) => response.status().as_u16(),
        Answer::Later { .. } => 200,
    };
    state.requests.push(request);
    answer
}

fn throttled(retry_after: &str) -> Response {
    let response = error(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        "too many requests",
    );
    with_retry_after(response, retry_after)
}

fn with_retry_after(mut response: Response, retry_after: &str) -> Response {
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, retry_after.parse().unwrap());
    response
}

async fn answer(shared: &Shared, answer: Answer) -> Response {
    match answer {
        Answer::Now(response) => response,
        Answer::Later { body, pause, delay } => {
            if pause && let Ok(permit) = shared.gate.acquire().await {
                permit.forget();
            }
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            axum::Json(body).into_response()
        }
    }
}

fn request_of(
    resource: &str,
    id: Option<String>,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
) -> Request {
    Request {
        resource: resource
            .parse()
            .ok()
            .filter(|r: &Resource| r.plural() == resource),
        id,
        starting_after: query.get("starting_after").cloned(),
        conversation_id: query.get("conversation_id").cloned(),
        limit: query.get("limit").cloned(),
        authorization: headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        status: 0,
        at: Instant::now(),
    }
}

async fn list(
    Extract(shared): Extract<Arc<Shared>>,
    Path(resource): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let request = request_of(&resource, None, &query, &headers);
    let (kind, conversation, after, limit) = (
        request.resource,
        request.conversation_id.clone(),
        request.starting_after.clone(),
        request.limit.clone(),
    );
    let decided = decide(&shared, request, move |state| {
        let Some(kind) = kind else {
            return Err((StatusCode::NOT_FOUND, "no such resource".into()));
        };
        let limit = match limit.as_deref().map(str::parse::<usize>) {
            None => 10,
            Some(Ok(n)) if (1..=100).contains(&n) => n,
            Some(_) => {
                return Err((
                    StatusCode::BAD_REQUEST,
                    "limit must be between 1 and 100".into(),
                ));
            }
        };
        let conversation = conversation
            .as_deref()
            .filter(|_| matches!(kind, Resource::Message | Resource::Attachment));
        if let Some(after) = after.as_deref()
            && let Some(status) = state.refuse_unknown_cursor
            && state.account.get(kind, after).is_none()
        {
            return Err((status, format!("No such object: {after}")));
        }
        let after = after
            .as_deref()
            .filter(|after| !state.ignore_cursor && state.rewind_from.as_deref() != Some(after));
        let (data, has_more) = state
            .account
            .page(kind, conversation, after, limit, &state.hidden);
        let has_more = has_more || state.always_has_more;
        if state.omit_has_more {
            return Ok(json!({"data": data}));
        }
        Ok(json!({"has_more": has_more, "data": data}))
    });
    answer(&shared, decided).await
}

async fn one(
    Extract(shared): Extract<Arc<Shared>>,
    Path((resource, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let request = request_of(&resource, Some(id.clone()), &HashMap::new(), &headers);
    let kind = request.resource;
    let decided = decide(&shared, request, move |state| {
        kind.and_then(|kind| state.account.get(kind, &id))
            .ok_or_else(|| (StatusCode::NOT_FOUND, format!("No such {resource}: {id}")))
    });
    answer(&shared, decided).await
}
