//! The access log: one line per request answered, at `debug`, under this module's own
//! target, so that it can be turned on alone
//! (`RUST_LOG=info,protocol_mirror::serve::access=debug`): who asked, the method, the
//! path and query (quoted and shortened when long or not plain ASCII, so that no
//! character of theirs can forge a line), the status, and the time taken until the
//! answer's head. No header is logged, so the read token never is; of the query, only
//! the read API's own parameters are shown as sent, any other as `[hidden]` (a client
//! may put a token there, or a sender's URL a key: a review).
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
    let target = match uri.query() {
        Some(query) => format!("{}?{}", uri.path(), shown_query(uri.path(), query)),
        None => uri.path().to_owned(),
    };
    let method = request.method().as_str();
    Some(Asked {
        peer: request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(peer)| *peer),
        method: shown(method, METHOD_SHOWN),
        target: shown(&target, TARGET_SHOWN),
    })
}

/// The most of a request's method the line shows (hyper takes methods of any length).
const METHOD_SHOWN: usize = 16;

/// `text` as it is when short and plain ASCII without a `"`, else quoted and cut at
/// `max` (a `"` unquoted let a path add a field of its own to the line: a probe's
/// `/v1/x"peer="9.9.9.9"`).
fn shown(text: &str, max: usize) -> String {
    if text.len() <= max && text.bytes().all(|b| b.is_ascii_graphic() && b != b'"') {
        text.to_owned()
    } else {
        crate::store::query::shown_within(text, max)
    }
}

/// `query` of a request for `path` with the read API's own parameters as sent, on its
/// routes (`/v1/...`), and any other as `[hidden]` (every one elsewhere: no other
/// route takes one).
fn shown_query(path: &str, query: &str) -> String {
    use protocol_types::Resource;
    let read_api = path.starts_with("/v1/");
    let known = |name: &str| {
        read_api
            && (super::read_api::PAGING.contains(&name)
                || Resource::ALL
                    .into_iter()
                    .any(|resource| super::read_api::filters(resource).contains(&name)))
    };
    query
        .split('&')
        .map(|pair| {
            let name = pair.split_once('=').map_or(pair, |(name, _)| name);
            if known(name) { pair } else { "[hidden]" }
        })
        .collect::<Vec<_>>()
        .join("&")
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

#[cfg(test)]
mod tests {
    use super::shown_query;

    #[test]
    fn only_the_read_api_s_parameters_are_shown() {
        assert_eq!(
            shown_query("/v1/messages", "limit=5&starting_after=m1&muted=true"),
            "limit=5&starting_after=m1&muted=true"
        );
        assert_eq!(
            shown_query(
                "/v1/messages",
                "conversation_id=v&access_token=s3cr3t&s3cr3t&=x"
            ),
            "conversation_id=v&[hidden]&[hidden]&[hidden]"
        );
        assert_eq!(
            shown_query("/webhooks", "limit=s3cr3t&x"),
            "[hidden]&[hidden]"
        );
        assert_eq!(super::shown("/v1/x\"peer=", 256), r#""/v1/x\"peer=""#);
        assert_eq!(super::shown("/v1/x?a=b", 256), "/v1/x?a=b");
    }
}
