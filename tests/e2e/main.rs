//! End-to-end tests: they start the real `protocol-mirror` binary (on port 0, with a
//! temp database) and talk to it as users and Protocol would.
//!
//! - `webhook`: `POST /webhooks`, every row of SPEC section 3, the sample stream, and
//!   random histories against the reference model of section 4 (`tests/model`).
//! - `cli`: every query subcommand and format (insta snapshots), reads under load,
//!   migrations, closed pipes, and the developer tools.
//! - `read_api`: `/v1/...` paging, filters, 404s, the read token, the listener rules
//!   and `/openapi.json`.
//! - `daemon`: the process: concurrency and group commit, graceful shutdown, secrets,
//!   slow clients, `/healthz` and `/metrics`.
//! - `reliability`: crashes under load (SIGKILL cycles, `PROTOCOL_MIRROR_SOAK_CYCLES`),
//!   a full disk, a database held by another process, hundreds of slow clients, secrets
//!   kept out of logs, private file modes, WAL with fsynced commits (RELIABILITY.md).
//! - `hostile`: the hostile-request corpus of `tests/data/hostile/` against a daemon,
//!   and hostile CLI input (injection, writes, missing and corrupt databases).
//! - `backfill`: `backfill` and `serve --reconcile-every` against a fake Protocol REST
//!   API (`fake_api`): exact copies, resume, prune, 429/500/401, races with webhooks,
//!   rebuild, and an `#[ignore]`d 100,000-object throughput measurement.

// Test helpers are `pub` for the test modules, not for any API.
#![allow(unreachable_pub)]

mod backfill;
mod cli;
mod daemon;
mod fake_api;
mod hostile;
#[path = "../model/mod.rs"]
mod model;
mod read_api;
mod reliability;
mod support;
mod webhook;
