//! How many connections `serve` keeps open at once on a listener
//! (`--max-connections`), and the open-file limit that bounds it.

/// How many connections may be open at once on a listener unless `--max-connections`
/// says.
const MAX_CONNECTIONS: usize = 1024;

/// File descriptors kept for what is not a connection (the database and its log, the
/// read API's and `/healthz`'s connections to it, listeners, lock and secret files), or
/// half the open-file limit where that is less, but never fewer than
/// [`LEAST_OTHER_FILES`].
const OTHER_FILES: u64 = 256;

/// The fewest file descriptors kept for what is not a connection: the daemon holds
/// 19-27 of its own (up to about 35 with every reader, the reconcile pass and
/// `/healthz`'s probe open at once), and half of a limit of 32 left too few (a
/// re-probe: reads failed for want of them); 64 left one connection under a limit of
/// 64 (the next re-probe).
const LEAST_OTHER_FILES: u64 = 48;

/// How many connections may be open at once on each of `listeners` listeners: `given`,
/// else [`MAX_CONNECTIONS`], or fewer where the open-file limit leaves less room beside
/// [`OTHER_FILES`]: with every descriptor taken by connections (a review's 5,000 that
/// never sent their head), accepting failed, and so would the database's files. The
/// soft limit is raised toward the hard one first, as far as the connections need.
/// Each listener has its own: with one for both, a flood of the public webhook
/// listener held up `/healthz` on the loopback `--read-listen` (a review).
pub(super) fn max_connections(given: Option<usize>, listeners: usize) -> usize {
    let wanted = given.unwrap_or(MAX_CONNECTIONS);
    let all = u64::try_from(wanted.saturating_mul(listeners)).unwrap_or(u64::MAX);
    let Some(files) = open_file_limit(all.saturating_add(OTHER_FILES)) else {
        return wanted;
    };
    let kept = OTHER_FILES.min(files / 2).max(LEAST_OTHER_FILES);
    let room = usize::try_from(files.saturating_sub(kept))
        .unwrap_or(usize::MAX)
        .checked_div(listeners)
        .unwrap_or(usize::MAX)
        .max(1);
    match given {
        Some(given) if given > room => {
            tracing::warn!(
                "--max-connections {given} is more than the open-file limit ({files}) leaves \
                 room for: past about {room} connection(s) a listener, new ones (and the \
                 database's files) may fail to open; raise the limit (ulimit -n, \
                 LimitNOFILE=) or lower --max-connections"
            );
            given
        }
        Some(given) => given,
        None => {
            if room < LEAST_CONNECTIONS {
                tracing::warn!(
                    "the open-file limit ({files}) leaves room for {room} connection(s) a \
                     listener at once; raise it (ulimit -n, LimitNOFILE=)"
                );
            }
            MAX_CONNECTIONS.min(room)
        }
    }
}

/// Below this many connections a listener, the default is said to be low.
const LEAST_CONNECTIONS: usize = 64;

/// The open-file limit, raised to `wanted` where the hard limit allows; `None` when
/// there is none.
#[cfg(unix)]
fn open_file_limit(wanted: u64) -> Option<u64> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let current = limit.current?;
    let raised = limit.maximum.map_or(wanted, |maximum| maximum.min(wanted));
    if raised > current {
        let new = Rlimit {
            current: Some(raised),
            maximum: limit.maximum,
        };
        if setrlimit(Resource::Nofile, new).is_ok() {
            return Some(raised);
        }
    }
    Some(current)
}

#[cfg(not(unix))]
fn open_file_limit(_wanted: u64) -> Option<u64> {
    None
}
