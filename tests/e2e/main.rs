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

// Test helpers are `pub` for the test modules, not for any API.
#![allow(unreachable_pub)]

mod cli;
mod daemon;
#[path = "../model/mod.rs"]
mod model;
mod read_api;
mod support;
mod webhook;
