//! The access log: one line per request answered, at `debug`, under this module's own
//! target, so that it can be turned on alone
//! (`RUST_LOG=info,protocol_mirror::serve::access=debug`): who asked, the method, the
//! path and query as sent (quoted and shortened when long or not plain ASCII, so that
//! no character of theirs can forge a line), the status, and the time taken until the
//! answer's head. It names nothing secret: the read token travels in a header, and no
//! header is logged.
//!
//! Off, it costs one check of the log filter per request.

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::{ConnectInfo, Request};
use axum::http::StatusCode;

/// What the line needs of a request, taken before it is handled.
#[derive(Debug)]
pub(super) struct Asked {
    peer: Option<SocketAddr>,
    method: String,
    target: String,
}

/// The most of a request's path and query the line shows.
const TARGET_SHOWN: usize = 256;

/// `request` as its line will show it, when the access log is on.
pub(super) fn asked(request: &Request) -> Option<Asked> {
    if !tracing::enabled!(tracing::Level::DEBUG) {
        return None;
    }
    let uri = request.uri();
    let target = uri
        .path_and_query()
        .map_or_else(|| uri.path(), |target| target.as_str());
    Some(Asked {
        peer: request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(peer)| *peer),
        method: request.method().to_string(),
        target: if target.len() <= TARGET_SHOWN && target.bytes().all(|b| b.is_ascii_graphic()) {
            target.to_owned()
        } else {
            crate::store::query::shown_within(target, TARGET_SHOWN)
        },
    })
}

/// Logs the answer to `asked`, given after `taken`.
pub(super) fn answered(asked: Asked, status: StatusCode, taken: Duration) {
    let Asked {
        peer,
        method,
        target,
    } = asked;
    let ms = taken.as_secs_f64() * 1000.0;
    let peer = peer.map_or_else(|| "unknown".to_owned(), |peer| peer.to_string());
    tracing::debug!(
        peer,
        status = status.as_u16(),
        ms = format_args!("{ms:.2}"),
        "{method} {target}"
    );
}
