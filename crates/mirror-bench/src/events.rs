//! Deterministic, distinct Protocol events of all 15 types, of realistic sizes.
//!
//! A [`Generator`] keeps a small model of the account (recent contacts, conversations,
//! groups, messages, attachments) so that updates and deletes name objects it created,
//! and children name their parents. Ids are 16 alphanumerics: 10 random characters
//! followed by a base-62 counter, so they scatter like Protocol's random ids and are
//! never repeated. Message texts are 150-600 bytes of words (a `message.created` envelope,
//! with its embedded sender, is 0.6-1.1 KiB); about 1% of them contain [`SEARCH_WORD`],
//! which no other text does.

use serde_json::{Value, json};

/// The word about 1% of generated messages contain (and nothing else does).
pub(crate) const SEARCH_WORD: &str = "hotel";

/// The seed of the webhook stream ([`Mix::Stream`]) of `ingest`.
pub(crate) const STREAM_SEED: u64 = 0x1e57;
/// The seed of the replica ([`Mix::Replica`]) of `query`.
pub(crate) const REPLICA_SEED: u64 = 0x0e11_ca5e;
/// The seed of the file ([`Mix::Import`]) of `import`.
pub(crate) const IMPORT_SEED: u64 = 0x5eed_1234_abcd_9876;

/// The 15 documented event types, in a fixed order.
pub(crate) const TYPES: [&str; 15] = [
    "contact.created",
    "contact.updated",
    "contact.deleted",
    "conversation.created",
    "conversation.updated",
    "conversation.deleted",
    "message.created",
    "message.updated",
    "message.deleted",
    "group.created",
    "group.updated",
    "group.deleted",
    "attachment.created",
    "attachment.updated",
    "attachment.deleted",
];

const WORDS: &[&str] = &[
    "the",
    "a",
    "to",
    "and",
    "of",
    "in",
    "is",
    "it",
    "you",
    "that",
    "for",
    "on",
    "was",
    "with",
    "be",
    "at",
    "have",
    "this",
    "we",
    "are",
    "not",
    "but",
    "can",
    "tomorrow",
    "meeting",
    "lunch",
    "dinner",
    "flight",
    "airport",
    "train",
    "ticket",
    "please",
    "thanks",
    "call",
    "later",
    "tonight",
    "morning",
    "weekend",
    "office",
    "project",
    "deadline",
    "review",
    "draft",
    "report",
    "invoice",
    "payment",
    "budget",
    "client",
    "team",
    "schedule",
    "agenda",
    "update",
    "photo",
    "picture",
    "birthday",
    "party",
    "present",
    "gift",
    "holiday",
    "vacation",
    "beach",
    "mountain",
    "snow",
    "rain",
    "weather",
    "coffee",
    "tea",
    "breakfast",
    "restaurant",
    "table",
    "reservation",
    "room",
    "key",
    "car",
    "parking",
    "bus",
    "taxi",
    "station",
    "address",
    "street",
    "corner",
    "park",
    "museum",
    "movie",
    "concert",
    "music",
    "song",
    "game",
    "score",
    "team",
    "coach",
    "practice",
    "school",
    "homework",
    "teacher",
    "class",
    "exam",
    "doctor",
    "appointment",
    "pharmacy",
    "medicine",
    "sorry",
    "late",
    "early",
    "soon",
    "again",
    "maybe",
    "definitely",
    "probably",
    "absolutely",
    "great",
    "awesome",
    "perfect",
    "fine",
    "okay",
    "sure",
    "really",
    "very",
    "quite",
    "almost",
    "already",
    "still",
    "just",
    "never",
    "always",
    "sometimes",
    "everyone",
    "somebody",
    "family",
    "mom",
    "dad",
    "sister",
    "brother",
    "uncle",
    "aunt",
    "cousin",
    "grandma",
    "neighbor",
    "dog",
    "cat",
    "garden",
    "kitchen",
    "groceries",
    "milk",
    "bread",
    "cheese",
    "pizza",
    "pasta",
    "salad",
    "chocolate",
    "cake",
    "wine",
    "water",
    "phone",
    "charger",
    "laptop",
    "password",
    "email",
    "link",
    "document",
    "spreadsheet",
    "slides",
    "printer",
];

const FIRST: &[&str] = &[
    "Kevin", "Kate", "Peter", "Buzz", "Megan", "Linnie", "Jeff", "Fuller", "Frank", "Leslie",
    "Marv", "Harry", "Gus", "Rob", "Tracy", "Sondra", "Brooke", "Heather", "Steffan", "Olga",
];
const LAST: &[&str] = &[
    "McCallister",
    "Polansky",
    "Sterns",
    "Merchants",
    "Hector",
    "Marley",
    "Duncan",
    "Stone",
    "Parker",
    "Rivera",
    "Nakamura",
    "Okafor",
];
const FILES: &[(&str, &str)] = &[
    ("pdf", "application/pdf"),
    ("jpg", "image/jpeg"),
    ("png", "image/png"),
    ("mp4", "video/mp4"),
    (
        "docx",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    ),
];
const REACTIONS: &[&str] = &[
    "thumbs_up",
    "red_heart",
    "face_with_tears_of_joy",
    "red_angry_face",
];

/// xorshift64*: fast, deterministic, good enough for test data.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        ((self.next_u64() >> 11) % n as u64) as usize
    }

    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// Which mix of event types to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Mix {
    /// A live account's webhook stream: mostly new messages, every type present,
    /// cascading deletes included.
    Stream,
    /// Building a large replica: like [`Mix::Stream`] but without the deletes of
    /// contacts, conversations and groups (which would cascade over messages), and
    /// with fewer, busier conversations.
    Replica,
    /// An export to import: ~84% new messages, every type, and what a real log holds
    /// besides: ~0.8% redeliveries (an earlier line again), message updates older than
    /// the stored row (`stale`) and updates of deleted messages (`ignored_deleted`).
    Import,
}

impl Mix {
    /// The seed the benchmark using this mix starts from (`generate` too).
    pub(crate) fn seed(self) -> u64 {
        match self {
            Mix::Stream => STREAM_SEED,
            Mix::Replica => REPLICA_SEED,
            Mix::Import => IMPORT_SEED,
        }
    }

    /// Weights per 10,000 events, in the order of [`TYPES`].
    fn weights(self) -> [u32; 15] {
        match self {
            //               contact      conversation   message          group      attachment
            Mix::Stream => [
                300, 150, 30, 300, 150, 20, 7800, 600, 150, 80, 80, 20, 200, 80, 40,
            ],
            Mix::Replica => [30, 30, 0, 30, 30, 0, 9350, 300, 20, 10, 20, 0, 80, 50, 50],
            Mix::Import => [
                200, 100, 20, 250, 100, 10, 8400, 400, 100, 50, 50, 10, 150, 50, 30,
            ],
        }
    }
}

#[derive(Clone)]
struct ContactRef {
    id: String,
    username: String,
    phone: String,
    created_at: i64,
}

#[derive(Clone)]
struct ConversationRef {
    id: String,
    /// The contact of a 1:1 conversation (a contact's delete cascades to it).
    contact_id: Option<String>,
    /// The group of a group conversation (a group's delete cascades to it).
    group_id: Option<String>,
}

#[derive(Clone)]
struct GroupRef {
    id: String,
    conversation_id: String,
}

#[derive(Clone)]
struct MessageRef {
    id: String,
    conversation_id: String,
    created_at: i64,
    updated_at: i64,
}

#[derive(Clone)]
struct AttachmentRef {
    id: String,
    message_id: String,
}

/// Recent messages and attachments kept for updates and deletes.
const WINDOW: usize = 50_000;
/// Recent events kept for redeliveries, and deleted messages for late updates
/// ([`Mix::Import`] only).
const RECENT: usize = 64;
/// The share of [`Mix::Import`] events that are redeliveries.
const REDELIVERIES: f64 = 0.008;

/// A stream of distinct events.
pub(crate) struct Generator {
    rng: Rng,
    mix: Mix,
    counter: u64,
    now: i64,
    contacts: Vec<ContactRef>,
    /// 1:1 conversations announced by a contact, not yet created: (id, contact).
    pending_one_to_one: Vec<(String, ContactRef)>,
    /// Group conversations announced by a group, not yet created: (id, group id).
    pending_group: Vec<(String, String)>,
    conversations: Vec<ConversationRef>,
    groups: Vec<GroupRef>,
    messages: Vec<MessageRef>,
    attachments: Vec<AttachmentRef>,
    /// The last events, for redeliveries ([`Mix::Import`] only).
    recent: std::collections::VecDeque<(&'static str, Vec<u8>)>,
    /// The last deleted messages, for late updates ([`Mix::Import`] only).
    deleted_messages: std::collections::VecDeque<MessageRef>,
    /// Events generated, by type (the order of [`TYPES`]); redeliveries not included.
    pub(crate) by_type: [u64; 15],
    /// Events generated again, as a redelivery.
    pub(crate) redeliveries: u64,
    /// Messages created minus messages deleted directly.
    pub(crate) live_messages: i64,
    /// Messages created that contain [`SEARCH_WORD`].
    pub(crate) with_search_word: u64,
}

impl Generator {
    pub(crate) fn new(seed: u64, mix: Mix) -> Generator {
        Generator {
            rng: Rng::new(seed),
            mix,
            counter: 0,
            now: 1_700_000_000,
            contacts: Vec::new(),
            pending_one_to_one: Vec::new(),
            pending_group: Vec::new(),
            conversations: Vec::new(),
            groups: Vec::new(),
            messages: Vec::new(),
            attachments: Vec::new(),
            recent: std::collections::VecDeque::new(),
            deleted_messages: std::collections::VecDeque::new(),
            by_type: [0; 15],
            redeliveries: 0,
            live_messages: 0,
            with_search_word: 0,
        }
    }

    fn id(&mut self) -> String {
        const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
        let mut id = String::with_capacity(16);
        for _ in 0..10 {
            id.push(ALPHABET[self.rng.below(62)] as char);
        }
        let mut n = self.counter;
        self.counter += 1;
        let mut tail = [b'0'; 6];
        for slot in tail.iter_mut().rev() {
            *slot = ALPHABET[(n % 62) as usize];
            n /= 62;
        }
        id.extend(tail.iter().map(|&b| b as char));
        id
    }

    fn text(&mut self, min: usize, max: usize) -> (String, bool) {
        let target = min + self.rng.below(max - min + 1);
        let with_word = self.rng.chance(0.01);
        let at = if with_word {
            self.rng.below(target / 8 + 1)
        } else {
            usize::MAX
        };
        let mut text = String::with_capacity(target + 16);
        let mut words = 0;
        let mut capital = true;
        while text.len() < target {
            if !text.is_empty() {
                text.push(' ');
            }
            let word = if words == at {
                SEARCH_WORD
            } else {
                *self.rng.pick(WORDS)
            };
            if capital {
                let mut chars = word.chars();
                if let Some(first) = chars.next() {
                    text.extend(first.to_uppercase());
                    text.push_str(chars.as_str());
                }
                capital = false;
            } else {
                text.push_str(word);
            }
            words += 1;
            if self.rng.chance(0.08) {
                text.push(*self.rng.pick(&['.', '!', '?', '.']));
                capital = true;
            } else if self.rng.chance(0.04) {
                text.push(',');
            }
        }
        if !capital {
            text.push('.');
        }
        (text, with_word)
    }

    fn contact_object(&self, contact: &ContactRef) -> Value {
        json!({
            "id": contact.id,
            "username": contact.username,
            "phone_number": contact.phone,
            "avatar_url": format!("https://assets.protocol.chat/avatars/{}.jpg", contact.username.to_lowercase()),
            "last_active_at": self.now - 3_600,
            "created_at": contact.created_at,
        })
    }

    fn new_contact(&mut self) -> (ContactRef, String) {
        let id = self.id();
        let username = format!(
            "{}{}{}",
            self.rng.pick(FIRST),
            self.rng.pick(LAST),
            self.counter % 10_000
        );
        let phone = format!(
            "1-{:03}-{:03}-{:04}",
            200 + self.rng.below(800),
            self.rng.below(1000),
            self.rng.below(10_000)
        );
        let contact = ContactRef {
            id,
            username,
            phone,
            created_at: self.now,
        };
        let conversation = self.id();
        (contact, conversation)
    }

    fn attachment_object(&mut self, id: &str, message_id: &str) -> Value {
        let (ext, mime) = *self.rng.pick(FILES);
        let stem = format!(
            "{}_{}_{}",
            self.rng.pick(WORDS),
            self.rng.pick(WORDS),
            self.rng.below(1000)
        );
        json!({
            "id": id,
            "message_id": message_id,
            "filename": format!("{stem}.{ext}"),
            "file_url": format!("https://assets.protocol.chat/attachments/{id}/{stem}.{ext}"),
            "file_type": mime,
            "file_size": 1_000 + self.rng.below(5_000_000),
            "created_at": self.now,
        })
    }

    fn keep<T>(rng: &mut Rng, items: &mut Vec<T>, item: T) {
        if items.len() < WINDOW {
            items.push(item);
        } else {
            let slot = rng.below(items.len());
            items[slot] = item;
        }
    }

    /// A conversation for a new message: skewed towards the oldest (busiest) ones.
    fn busy_conversation(&mut self) -> Option<String> {
        if self.conversations.is_empty() {
            return None;
        }
        let u = self.rng.unit();
        let skew = match self.mix {
            Mix::Replica => u * u * u,
            Mix::Stream | Mix::Import => u * u,
        };
        let i = ((self.conversations.len() as f64) * skew) as usize;
        Some(
            self.conversations[i.min(self.conversations.len() - 1)]
                .id
                .clone(),
        )
    }

    fn choose_type(&mut self) -> usize {
        // Start an account: some contacts and conversations before anything else.
        if self.contacts.len() < 8 {
            return 0;
        }
        if self.conversations.len() < 8 {
            return 3;
        }
        let weights = self.mix.weights();
        let total: u32 = weights.iter().sum();
        let mut r = self.rng.below(total as usize) as u32;
        for (i, w) in weights.iter().enumerate() {
            if r < *w {
                return i;
            }
            r -= w;
        }
        6
    }

    /// The next event: its type and its body.
    pub(crate) fn next_event(&mut self) -> (&'static str, Vec<u8>) {
        self.now += i64::from(self.rng.chance(0.2));
        if self.mix == Mix::Import && !self.recent.is_empty() && self.rng.chance(REDELIVERIES) {
            self.redeliveries += 1;
            let i = self.rng.below(self.recent.len());
            return self.recent[i].clone();
        }
        loop {
            let kind = self.choose_type();
            if let Some(payload) = self.payload(kind) {
                self.by_type[kind] += 1;
                let event = json!({"id": self.id(), "type": TYPES[kind], "payload": payload});
                let body = serde_json::to_vec(&event).expect("JSON values serialize");
                if self.mix == Mix::Import {
                    if self.recent.len() == RECENT {
                        self.recent.pop_front();
                    }
                    self.recent.push_back((TYPES[kind], body.clone()));
                }
                return (TYPES[kind], body);
            }
        }
    }

    /// The payload of an event of type `TYPES[kind]`, or None when the model has
    /// nothing to apply it to (then another type is drawn).
    fn payload(&mut self, kind: usize) -> Option<Value> {
        let now = self.now;
        Some(match TYPES[kind] {
            "contact.created" => {
                let (contact, conversation) = self.new_contact();
                let object = json!({
                    "id": contact.id,
                    "username": contact.username,
                    "phone_number": contact.phone,
                    "avatar_url": format!("https://assets.protocol.chat/avatars/{}.jpg", contact.username.to_lowercase()),
                    "display_name": if self.rng.chance(0.3) { Value::String(format!("{} {}", self.rng.pick(FIRST), self.rng.pick(LAST))) } else { Value::Null },
                    "conversation_id": conversation,
                    "last_active_at": now,
                    "created_at": now,
                });
                self.pending_one_to_one
                    .push((conversation, contact.clone()));
                self.contacts.push(contact);
                object
            }
            "contact.updated" => {
                let contact = self
                    .contacts
                    .get(self.rng.below(self.contacts.len().max(1)))?;
                json!({"id": contact.id, "last_active_at": now, "display_name": format!("{} {}", self.rng.pick(FIRST), self.rng.pick(LAST))})
            }
            "contact.deleted" => {
                if self.contacts.len() < 16 {
                    return None;
                }
                let contact = self
                    .contacts
                    .swap_remove(self.rng.below(self.contacts.len()));
                // The mirror deletes the 1:1 conversation too: stop writing to it.
                self.conversations
                    .retain(|c| c.contact_id.as_deref() != Some(contact.id.as_str()));
                self.pending_one_to_one.retain(|(_, c)| c.id != contact.id);
                json!({"id": contact.id})
            }
            "conversation.created" => {
                let (id, contact_id, group_id) = if let Some((id, group)) = self.pending_group.pop()
                {
                    let contact = self
                        .contacts
                        .get(self.rng.below(self.contacts.len().max(1)))?;
                    (id, contact.id.clone(), Some(group))
                } else if let Some((id, contact)) = self.pending_one_to_one.pop() {
                    (id, contact.id, None)
                } else {
                    return None;
                };
                self.conversations.push(ConversationRef {
                    id: id.clone(),
                    contact_id: group_id.is_none().then(|| contact_id.clone()),
                    group_id: group_id.clone(),
                });
                json!({
                    "id": id,
                    "contact_id": contact_id,
                    "group_id": group_id,
                    "pinned_message_id": null,
                    "is_pinned": false,
                    "is_muted": self.rng.chance(0.1),
                    "last_active_at": now,
                    "last_opened_at": null,
                    "created_at": now,
                    "archived_at": null,
                })
            }
            "conversation.updated" => {
                let c = self
                    .conversations
                    .get(self.rng.below(self.conversations.len().max(1)))?;
                json!({"id": c.id, "last_opened_at": now, "last_active_at": now, "is_pinned": self.rng.chance(0.2)})
            }
            "conversation.deleted" => {
                if self.conversations.len() < 16 {
                    return None;
                }
                let c = self
                    .conversations
                    .swap_remove(self.rng.below(self.conversations.len()));
                json!({"id": c.id})
            }
            "message.created" => {
                let conversation_id = self.busy_conversation()?;
                let sender = self.contacts[self.rng.below(self.contacts.len())].clone();
                let id = self.id();
                let (text, with_word) = self.text(150, 600);
                self.with_search_word += u64::from(with_word);
                let reactions = if self.rng.chance(0.2) {
                    json!([{ *self.rng.pick(REACTIONS): [sender.username] }])
                } else {
                    json!([])
                };
                let attachments = if self.rng.chance(0.1) {
                    let attachment = self.id();
                    let object = self.attachment_object(&attachment, &id);
                    Self::keep(
                        &mut self.rng,
                        &mut self.attachments,
                        AttachmentRef {
                            id: attachment,
                            message_id: id.clone(),
                        },
                    );
                    json!([object])
                } else {
                    json!([])
                };
                Self::keep(
                    &mut self.rng,
                    &mut self.messages,
                    MessageRef {
                        id: id.clone(),
                        conversation_id: conversation_id.clone(),
                        created_at: now,
                        updated_at: now,
                    },
                );
                self.live_messages += 1;
                json!({
                    "id": id,
                    "conversation_id": conversation_id,
                    "contact": self.contact_object(&sender),
                    "message": text,
                    "reactions": reactions,
                    "attachments": attachments,
                    "read_at": null,
                    "created_at": now,
                    "updated_at": now,
                })
            }
            "message.updated" if self.mix == Mix::Import && self.rng.chance(0.25) => {
                // A late update: of a deleted message (ignored), or older than the
                // stored row (stale: it only fills).
                if let Some(m) = self
                    .deleted_messages
                    .front()
                    .filter(|_| self.rng.chance(0.4))
                {
                    json!({"id": m.id, "conversation_id": m.conversation_id, "read_at": now,
                           "updated_at": m.updated_at + 1})
                } else {
                    let m = self
                        .messages
                        .get(self.rng.below(self.messages.len().max(1)))?;
                    json!({"id": m.id, "conversation_id": m.conversation_id, "read_at": now,
                           "updated_at": m.updated_at - 1})
                }
            }
            "message.updated" => {
                let i = self.rng.below(self.messages.len().max(1));
                let m = self.messages.get_mut(i)?;
                m.updated_at = (m.updated_at + 1).max(now);
                let (id, conversation_id, created_at, updated_at) = (
                    m.id.clone(),
                    m.conversation_id.clone(),
                    m.created_at,
                    m.updated_at,
                );
                if self.rng.chance(0.5) {
                    let (text, _) = self.text(150, 400);
                    json!({"id": id, "conversation_id": conversation_id, "message": text,
                           "created_at": created_at, "updated_at": updated_at})
                } else {
                    json!({"id": id, "conversation_id": conversation_id, "read_at": now,
                           "reactions": [{ *self.rng.pick(REACTIONS): ["KevinMcCallister"] }],
                           "updated_at": updated_at})
                }
            }
            "message.deleted" => {
                if self.messages.len() < 16 {
                    return None;
                }
                let m = self
                    .messages
                    .swap_remove(self.rng.below(self.messages.len()));
                self.live_messages -= 1;
                let object = json!({"id": m.id, "conversation_id": m.conversation_id});
                if self.mix == Mix::Import {
                    if self.deleted_messages.len() == RECENT {
                        self.deleted_messages.pop_back();
                    }
                    self.deleted_messages.push_front(m);
                }
                object
            }
            "group.created" => {
                let id = self.id();
                let conversation = self.id();
                let members: Vec<Value> = (0..2 + self.rng.below(6))
                    .map(|_| {
                        let c = &self.contacts[self.rng.below(self.contacts.len())];
                        json!({"id": c.id, "username": c.username})
                    })
                    .collect();
                self.pending_group.push((conversation.clone(), id.clone()));
                self.groups.push(GroupRef {
                    id: id.clone(),
                    conversation_id: conversation.clone(),
                });
                let (description, _) = self.text(20, 80);
                json!({
                    "id": id,
                    "name": format!("{} {}", self.rng.pick(WORDS), self.rng.pick(WORDS)),
                    "description": description,
                    "avatar_url": null,
                    "conversation_id": conversation,
                    "contacts": members,
                    "created_at": now,
                    "archived_at": null,
                })
            }
            "group.updated" => {
                let g = self
                    .groups
                    .get(self.rng.below(self.groups.len().max(1)))?
                    .clone();
                if self.rng.chance(0.5) {
                    let members: Vec<Value> = (0..2 + self.rng.below(6))
                        .map(|_| {
                            let c = &self.contacts[self.rng.below(self.contacts.len())];
                            json!({"id": c.id, "username": c.username})
                        })
                        .collect();
                    json!({"id": g.id, "conversation_id": g.conversation_id, "contacts": members})
                } else {
                    json!({"id": g.id, "name": format!("{} {}", self.rng.pick(WORDS), self.rng.pick(WORDS))})
                }
            }
            "group.deleted" => {
                if self.groups.len() < 8 {
                    return None;
                }
                let g = self.groups.swap_remove(self.rng.below(self.groups.len()));
                // The mirror deletes the group's conversations too.
                self.conversations
                    .retain(|c| c.group_id.as_deref() != Some(g.id.as_str()));
                self.pending_group.retain(|(_, group)| *group != g.id);
                json!({"id": g.id, "conversation_id": g.conversation_id})
            }
            "attachment.created" => {
                let m = self
                    .messages
                    .get(self.rng.below(self.messages.len().max(1)))?;
                let message_id = m.id.clone();
                let id = self.id();
                let object = self.attachment_object(&id, &message_id);
                Self::keep(
                    &mut self.rng,
                    &mut self.attachments,
                    AttachmentRef { id, message_id },
                );
                object
            }
            "attachment.updated" => {
                let a = self
                    .attachments
                    .get(self.rng.below(self.attachments.len().max(1)))?;
                json!({"id": a.id, "message_id": a.message_id, "filename": format!("{}_v2.pdf", a.id)})
            }
            "attachment.deleted" => {
                if self.attachments.len() < 16 {
                    return None;
                }
                let a = self
                    .attachments
                    .swap_remove(self.rng.below(self.attachments.len()));
                json!({"id": a.id, "message_id": a.message_id})
            }
            _ => unreachable!("TYPES has 15 entries"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_distinct_sized_and_of_every_type() {
        let mut generator = Generator::new(7, Mix::Stream);
        let mut ids = std::collections::HashSet::new();
        let mut message_sizes = Vec::new();
        for _ in 0..20_000 {
            let (kind, body) = generator.next_event();
            let event: Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(event["type"], kind);
            let id = event["id"].as_str().unwrap().to_owned();
            assert_eq!(id.len(), 16);
            assert!(ids.insert(id), "event ids are distinct");
            if kind == "message.created" {
                message_sizes.push(body.len());
            }
        }
        assert!(
            generator.by_type.iter().all(|&n| n > 0),
            "{:?}",
            generator.by_type
        );
        message_sizes.sort_unstable();
        let median = message_sizes[message_sizes.len() / 2];
        assert!(
            (500..=1300).contains(&median),
            "median message event {median} B"
        );
        let share = generator.with_search_word as f64 / message_sizes.len() as f64;
        assert!((0.005..0.02).contains(&share), "{share}");
    }

    /// The import mix repeats about 0.8% of events verbatim (redeliveries), and its
    /// message updates include late ones: older than the stored row, or of a deleted
    /// message.
    #[test]
    fn the_import_mix_has_redeliveries_and_late_updates() {
        let mut generator = Generator::new(Mix::Import.seed(), Mix::Import);
        let mut seen = std::collections::HashMap::new();
        let mut repeated = 0;
        let mut deleted = std::collections::HashSet::new();
        let mut updated_at = std::collections::HashMap::new();
        let (mut older, mut of_deleted) = (0, 0);
        for _ in 0..50_000 {
            let (kind, body) = generator.next_event();
            let event: Value = serde_json::from_slice(&body).unwrap();
            let id = event["id"].as_str().unwrap().to_owned();
            if let Some(first) = seen.insert(id, body.clone()) {
                assert_eq!(first, body, "a redelivery is the same body");
                repeated += 1;
                continue;
            }
            let message = event["payload"]["id"].as_str().unwrap().to_owned();
            let at = event["payload"]["updated_at"].as_i64();
            match kind {
                "message.created" => {
                    updated_at.insert(message, at.unwrap());
                }
                "message.updated" if deleted.contains(&message) => of_deleted += 1,
                "message.updated" => {
                    let stored = updated_at.get(&message).copied().unwrap_or(i64::MIN);
                    if at.unwrap() < stored {
                        older += 1;
                    } else {
                        updated_at.insert(message, at.unwrap());
                    }
                }
                "message.deleted" => {
                    deleted.insert(message);
                }
                _ => {}
            }
        }
        assert_eq!(repeated, generator.redeliveries);
        let share = repeated as f64 / 50_000.0;
        assert!((0.004..0.012).contains(&share), "{share}");
        assert!(
            generator.by_type.iter().all(|&n| n > 0),
            "{:?}",
            generator.by_type
        );
        assert!(older > 100 && of_deleted > 100, "{older} {of_deleted}");
    }
}
