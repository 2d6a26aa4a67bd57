//! protocol-mirror: a local, queryable SQLite replica of a Protocol account.
//!
//! Protocol POSTs signed webhooks when contacts, conversations, messages, groups or
//! attachments change. This crate applies them to a SQLite replica exactly once and in
//! the right order (the replica rules the README lists), and is shared by the daemon
//! and the CLI of the `protocol-mirror` binary.
//!
//! - [`store`]: the database (schema, pragmas, every SQL statement); write transactions
//!   are [`store::Batch`], whose commit also writes the full-text index changes.
//! - [`apply`]: the replica rules, one event at a time inside a caller's transaction.
//! - [`import`]: NDJSON streams of events through the same engine, in batches, read,
//!   parsed and applied on three threads; into a new database, built hidden and put in
//!   place whole.
//! - [`rebuild`]: recomputing the replica from the event log, in place or into a new
//!   database.
//! - [`backfill`]: loading the account from Protocol's REST API (and its client), and
//!   pruning what Protocol no longer has.
//! - [`lock`]: the lock a serving daemon (or an import building a new database) holds,
//!   which `rebuild` takes too (so it refuses while a daemon serves), the mark an import beside a daemon holds during each
//!   transaction, and the lock that lets one backfill run at a time.
//! - [`secrets`]: webhook secrets from the environment or a file, or generated.
//! - [`serve`]: the daemon (router, writer thread, background checkpoints, read API,
//!   metrics, OpenAPI document, periodic reconcile).
//!
//! ```
//! use protocol_mirror::apply::Outcome;
//! use protocol_mirror::store::Store;
//! use protocol_types::Resource;
//!
//! let mut store = Store::open_in_memory()?;
//! let body = br#"{"id":"e1","type":"contact.created","payload":{"id":"c1","username":"kevin"}}"#;
//! assert_eq!(store.apply(body, 0)?.outcome(), Outcome::Applied);
//! let contact = protocol_mirror::store::get(store.conn(), Resource::Contact, "c1")?.unwrap();
//! assert_eq!(contact["username"], "kevin");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod apply;
pub mod backfill;
pub mod import;
pub mod lock;
pub mod rebuild;
pub mod secrets;
pub mod serve;
pub mod store;

pub use store::Snapshot;

/// The file `<database><suffix>` beside a database (`-wal`, `.lock`, `.secret`, ...).
pub fn beside(database: &std::path::Path, suffix: &str) -> std::path::PathBuf {
    let mut name = database.as_os_str().to_owned();
    name.push(suffix);
    std::path::PathBuf::from(name)
}

/// Creates the folder `dir` and its parents, like `create_dir_all`, but when one of
/// them exists as a file, says which ("File exists" alone names none). The folders it
/// creates are private to this user (0700 on Unix, whatever the umask): they hold the
/// database, its secret and its lock, which another user must not remove or replace.
pub(crate) fn create_folder(dir: &std::path::Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(
        |error| match dir.ancestors().find(|a| a.exists() && !a.is_dir()) {
            Some(file) => std::io::Error::new(
                std::io::ErrorKind::NotADirectory,
                format!("{} is a file, not a folder", file.display()),
            ),
            None => error,
        },
    )
}

/// `error` and its causes, each after a colon, as the CLI shows an error: for the
/// daemon's log, where `{error}` alone said "cannot lock X" and not why.
pub fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(source) = cause {
        text.push_str(": ");
        text.push_str(&source.to_string());
        cause = source.source();
    }
    text
}

/// The length a request's or an answer's `Content-Length` declares, if it declares
/// one (the daemon's requests and the backfill client's answers alike).
pub(crate) fn declared_length(headers: &axum::http::HeaderMap) -> Option<u64> {
    headers
        .get(axum::http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The current time in Unix seconds.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

#[cfg(test)]
pub(crate) mod tests {
    /// Makes a named pipe (mode 0600) at `path` with `mkfifo`; false, said on stderr,
    /// where that cannot be done (the caller skips what needs it).
    #[cfg(unix)]
    pub(crate) fn mkfifo(path: &std::path::Path) -> bool {
        let made = std::process::Command::new("mkfifo")
            .args(["-m", "600"])
            .arg(path)
            .status();
        let ok = made.as_ref().is_ok_and(|status| status.success());
        if !ok {
            eprintln!("no named pipe tested: mkfifo gave {made:?}");
        }
        ok
    }

    #[test]
    fn a_file_in_the_way_of_a_folder_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("afile");
        std::fs::write(&file, b"").unwrap();
        let error = super::create_folder(&file.join("a/b")).unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::NotADirectory);
        assert!(error.to_string().contains("afile is a file"), "{error}");
        super::create_folder(&dir.path().join("x/y")).unwrap();
        assert!(dir.path().join("x/y").is_dir());
    }
}
