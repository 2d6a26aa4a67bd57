//! Which requests a read API without a token answers: those addressed to this machine
//! by a loopback name.
//!
//! Without a token the read API listens on loopback alone, but that does not keep web
//! pages out: a page the operator opens can have its own name resolve to 127.0.0.1
//! (DNS rebinding) and read `/v1/messages` as its own site. Its requests then carry
//! that name in `Host`, so a read API without a token answers only requests whose
//! `Host` is `localhost` (or a name under it), a loopback address, or a name the
//! daemon was told to listen on (a security review), and refuses those a proxy
//! forwarded (`forwarded_by`). A request without `Host` (HTTP/1.0;
//! never a browser's) is answered; HTTP/1.1 requires one, and two or one that is
//! not a host and port are refused as well (400, for every route: `serve::valid_host`).

use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::Response;

use super::webhook::error;

/// Whether a request with `headers` and `uri` is addressed to this machine by a
/// loopback name, or by one of `names` (those `--listen` and `--read-listen` gave).
pub(crate) fn addressed_to_loopback(headers: &HeaderMap, uri: &Uri, names: &[String]) -> bool {
    let local =
        |authority: &str| host_of(authority).is_some_and(|host| is_loopback_name(host, names));
    headers
        .get_all(header::HOST)
        .iter()
        .all(|value| value.to_str().is_ok_and(local))
        && uri
            .authority()
            .is_none_or(|authority| local(authority.as_str()))
}

/// The host of `authority` (`NAME[:PORT]`, `IPV4[:PORT]`, `[IPV6][:PORT]`), without its
/// port; `None` when it is not one of those: a name is labels of letters, digits, `-`
/// and `_` joined by dots (none empty, none starting or ending with `-`; one dot may
/// end it), and a port is a number under 65,536 (or empty). (Read loosely,
/// `[::1]evil.com:80` was `::1` and `evil.com#.localhost` under `localhost`: a probe;
/// `.localhost`, `a..localhost` and `-x.localhost` were names under `localhost`:
/// another.)
pub fn host_of(authority: &str) -> Option<&str> {
    let authority = authority.trim();
    let (host, port) = match authority.strip_prefix('[') {
        Some(rest) => {
            let (host, after) = rest.split_once(']')?;
            host.parse::<std::net::Ipv6Addr>().ok()?;
            let port = match after {
                "" => "",
                after => after.strip_prefix(':')?,
            };
            (host, port)
        }
        None => {
            let (host, port) = authority.rsplit_once(':').unwrap_or((authority, ""));
            if !host.is_empty() && !is_host_name(host) {
                return None;
            }
            (host, port)
        }
    };
    let port_ok = port.bytes().all(|b| b.is_ascii_digit()) && port.parse::<u16>().is_ok();
    (port.is_empty() || port_ok).then_some(host)
}

/// Whether `host` is a host name, or an IPv4 address, as [`host_of`] reads them.
fn is_host_name(host: &str) -> bool {
    let host = host.strip_suffix('.').unwrap_or(host);
    host.split('.').all(|label| {
        let byte = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_');
        !label.is_empty()
            && label.bytes().all(byte)
            && !label.starts_with('-')
            && !label.ends_with('-')
    })
}

/// Whether `host` names this machine on loopback: `localhost` and the names under it
/// (which browsers keep on loopback themselves), an address of loopback, or one of
/// `names`. (Without resolving it: a name of `/etc/hosts` is loopback's only if it is
/// among `names`.)
pub fn is_loopback_name(host: &str, names: &[String]) -> bool {
    let host = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
    if host == "localhost" || host.ends_with(".localhost") {
        return true;
    }
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return ip.to_canonical().is_loopback();
    }
    !host.is_empty() && names.iter().any(|name| name.eq_ignore_ascii_case(&host))
}

/// The names of `addresses` (`--listen`, `--read-listen`) that requests may name: the
/// host of each that is a name, not an address (an address is checked as one).
pub fn listen_names<'a>(addresses: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    addresses
        .into_iter()
        .filter_map(host_of)
        .map(|host| host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase())
        .filter(|host| !host.is_empty() && host.parse::<std::net::IpAddr>().is_err())
        .collect()
}

/// The headers a reverse proxy adds to what it forwards: RFC 7239's `Forwarded`,
/// `Via`, and the common ones that name the client (any `X-Forwarded-*` too).
const PROXY_HEADERS: [&str; 9] = [
    "forwarded",
    "via",
    "x-real-ip",
    "x-original-forwarded-for",
    "client-ip",
    "x-client-ip",
    "x-cluster-client-ip",
    "true-client-ip",
    "cf-connecting-ip",
];

/// The first header of `headers` that says a proxy forwarded the request, if any.
/// Without a token, such a request is refused even when it names a loopback host: a
/// proxy on this machine in front of the daemon (to make `/webhooks` public) rewrites
/// `Host` to the address it forwards to (nginx's and Apache's default), and the
/// replica was anyone's who could reach the proxy (a review). A proxy that adds none
/// of them is not seen: docs/API.md says to forward only `/webhooks`.
pub(crate) fn forwarded_by(headers: &HeaderMap) -> Option<&str> {
    headers
        .keys()
        .map(|name| name.as_str())
        .find(|name| name.starts_with("x-forwarded") || PROXY_HEADERS.contains(name))
}

/// 403 for a request to a read API without a token that came through a proxy (it
/// carries `header`: [`forwarded_by`]).
pub(crate) fn refused_through_a_proxy(header: &str) -> Response {
    error(
        StatusCode::FORBIDDEN,
        "forbidden",
        format!(
            "the read API has no read token, so it answers only requests made on this \
             machine, and this one came through a proxy (it carries {header}); set a read \
             token, or serve the read API on a loopback listener of its own \
             (--read-listen) that the proxy does not forward to"
        ),
    )
}

/// 403 for a request to a read API without a token that names another host than
/// loopback's and `names` in `headers`, or none (`Host:` empty, or a port alone).
pub(crate) fn refused(names: &[String], headers: &HeaderMap) -> Response {
    // Those `localhost` covers already are not named again (a re-probe read
    // "localhost, ..., localhost").
    let names: String = names
        .iter()
        .filter(|name| !is_loopback_name(name, &[]))
        .map(|name| format!(", {name}"))
        .collect();
    // An empty one was said to name "another host" (a probe).
    let nameless = headers
        .get_all(header::HOST)
        .iter()
        .any(|value| value.to_str().ok().and_then(host_of) == Some(""));
    let named = if nameless {
        "names no host"
    } else {
        "names another host: a web page's, perhaps"
    };
    error(
        StatusCode::FORBIDDEN,
        "forbidden",
        format!(
            "the read API has no read token, so it answers only requests addressed to \
             localhost (or a name under it), a loopback address such as 127.0.0.1 or \
             [::1]{names} (this one's Host header {named}); set a read token to read it \
             under another name"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addressed(hosts: &[&str], uri: &str, names: &[&str]) -> bool {
        let mut headers = HeaderMap::new();
        for host in hosts {
            headers.append(header::HOST, host.parse().unwrap());
        }
        let names: Vec<String> = names.iter().map(|&n| n.to_owned()).collect();
        addressed_to_loopback(&headers, &uri.parse().unwrap(), &names)
    }

    #[test]
    fn loopback_names_are_answered() {
        for host in [
            "localhost",
            "localhost:8787",
            "LOCALHOST.:8787",
            "mirror.localhost:1",
            "127.0.0.1:8787",
            "127.8.9.10",
            "[::1]:8787",
            "[::1]",
            "[::ffff:127.0.0.1]:80",
        ] {
            assert!(addressed(&[host], "/v1/contacts", &[]), "{host}");
        }
        // No Host at all (HTTP/1.0): no browser sends that.
        assert!(addressed(&[], "/v1/contacts", &[]));
        // A name the daemon was told to listen on.
        assert!(addressed(&["box:8787"], "/v1/contacts", &["box"]));
        assert!(addressed(&["BOX:8787"], "/v1/contacts", &["box"]));
    }

    #[test]
    fn other_names_are_refused() {
        for host in [
            "evil.example.com:8787",
            "evil.example.com",
            "localhost.evil.example.com",
            "notlocalhost",
            "0.0.0.0:8787",
            "192.168.1.2",
            "[::]:8787",
            "[fe80::1]",
            "",
            ":8787",
            "127.0.0.1.evil.example.com",
            // Malformed ones, which a loose reading took for loopback's (a probe).
            "[::1]evil.com:80",
            "[::1]evil",
            "[::1]:80evil",
            "[::1]@evil.com",
            "[127.0.0.1]",
            "[localhost]",
            "evil.com#.localhost",
            "evil.com/.localhost",
            "evil.com?.localhost",
            "evil.com@x.localhost",
            "evil.com:1.localhost",
            "localhost:80:80",
            "localhost:8o",
            "localhost:99999",
            "localhost:+80",
        ] {
            assert!(!addressed(&[host], "/v1/contacts", &["box"]), "{host:?}");
        }
        // Every Host must be local, and an absolute target's host too.
        assert!(!addressed(&["localhost", "evil.example.com"], "/", &[]));
        assert!(!addressed(
            &["localhost"],
            "http://evil.example.com/v1/contacts",
            &[]
        ));
        assert!(addressed(
            &["localhost"],
            "http://127.0.0.1:1/v1/contacts",
            &[]
        ));
        assert!(!addressed(
            &["localhost"],
            "http://evil.com@localhost/v1/contacts",
            &[]
        ));
    }

    #[test]
    fn host_of_reads_only_well_formed_authorities() {
        assert_eq!(host_of("localhost:8787"), Some("localhost"));
        assert_eq!(host_of(" box "), Some("box"));
        assert_eq!(host_of("my_box.lan:"), Some("my_box.lan"));
        assert_eq!(host_of("[::1]:8787"), Some("::1"));
        assert_eq!(host_of("[::1]"), Some("::1"));
        assert_eq!(host_of("127.0.0.1"), Some("127.0.0.1"));
        assert_eq!(host_of("a-b.localhost.:1"), Some("a-b.localhost."));
        assert_eq!(host_of(":8787"), Some(""));
        for malformed in [
            "[::1",
            "[::1]x",
            "::1",
            "a b",
            "a:b",
            "x@localhost",
            "é.localhost",
            ".localhost",
            "a..localhost",
            "-x.localhost",
            "x-.localhost",
            "localhost..",
            ".",
        ] {
            assert_eq!(host_of(malformed), None, "{malformed:?}");
        }
    }

    #[test]
    fn listen_names_keep_names_not_addresses() {
        assert_eq!(
            listen_names(["127.0.0.1:8787", "[::1]:8788", "Box.:8787", "localhost:1"]),
            ["box", "localhost"]
        );
    }

    #[test]
    fn a_refusal_names_what_is_answered_once() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, "evil.example".parse().unwrap());
        let names = ["box".to_owned(), "localhost".to_owned()];
        let response = refused(&names, &headers);
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        let body = futures_body(response);
        assert!(body.contains("[::1], box ("), "{body}");
        assert!(body.contains("names another host"), "{body}");
        assert_eq!(body.matches("localhost").count(), 1, "{body}");
        // A Host naming only a port, or nothing, names no host.
        for nameless in ["", ":80"] {
            headers.insert(header::HOST, nameless.parse().unwrap());
            let body = futures_body(refused(&names, &headers));
            assert!(body.contains("Host header names no host)"), "{body}");
        }
    }

    /// The text of `response`'s body.
    fn futures_body(response: Response) -> String {
        let bytes = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(axum::body::to_bytes(response.into_body(), usize::MAX))
            .unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    }
}
