//! Webhook secrets: from the environment, from a file, or generated on first start.
//! [`read_file`] also reads the API token file of `backfill`; its errors name the
//! file (unless the name given may be the secret itself: see `named`), and the caller
//! says which file it is.

use std::io::Write;
use std::path::{Path, PathBuf};

/// Why secrets could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SecretError {
    /// The file could not be read or written.
    #[error("{context} {}: {source}", named(path))]
    Io {
        /// What was being done.
        context: &'static str,
        /// The secret file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file may be read or written by other users (its group included).
    #[error("{} is open to other users (mode {mode:04o}): run {fix}", path.display())]
    Exposed {
        /// The secret file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
        /// The commands that make it private to the user reading it: `chmod 600` alone
        /// of a file of root's read by another user left it unreadable (a probe).
        fix: String,
    },
    /// The file belongs to another user, who could change the secrets in it.
    #[error(
        "{} belongs to another user (uid {owner}), who could change it: a secret file must \
         be this user's own (or root's)",
        path.display()
    )]
    NotOwned {
        /// The secret file.
        path: PathBuf,
        /// Its owner's user id.
        owner: u32,
    },
    /// The file holds no secret.
    #[error("{} holds no secret (one per line)", .0.display())]
    Empty(PathBuf),
    /// No random bytes could be had.
    #[error("cannot generate a secret: {0}")]
    Random(String),
}

/// How an error names a secret file. A value that names nothing, where a file's path
/// was meant to go, may be the secret itself (`--secret-file whsec_…`): it is not
/// repeated, for errors end up in logs. It is named when it is there, or when it is a
/// path into a folder that is (`./secret`, `/run/secrets/mirror`); a bare name, or
/// one under a folder that is not there (base64 holds `/`), is not.
fn named(path: &Path) -> String {
    // A name right under `/` is taken for a value too (base64 can begin with `/`).
    let in_a_folder = path
        .parent()
        .filter(|folder| !folder.as_os_str().is_empty() && *folder != Path::new("/"))
        .is_some_and(Path::is_dir);
    if in_a_folder || path.symlink_metadata().is_ok() {
        path.display().to_string()
    } else {
        format!(
            "the file given ({} bytes: a name that is not a file there is not repeated, in \
             case it is the secret itself; give ./name to see it named)",
            path.as_os_str().len()
        )
    }
}

/// Where secrets came from, for the startup message (never the secrets themselves).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Configured by the user (environment and/or file).
    Configured,
    /// Generated now and stored in this file.
    Generated(PathBuf),
    /// Generated now and stored in this file, which was there but empty: truncated, or
    /// left so by an earlier version's start killed while writing it. A secret it held
    /// before is gone (a truncated file was replaced with no word of it: a probe).
    ReplacedEmpty(PathBuf),
    /// Generated on an earlier start and read back from this file.
    Reused(PathBuf),
}

/// Splits `PROTOCOL_WEBHOOK_SECRET`'s value: comma-separated, blanks ignored.
pub fn from_env_value(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Reads a secret file: one secret per line; blank lines and `#` comments are
/// ignored. Refuses a file that other users (its group included) may read or write.
pub fn read_file(path: &Path) -> Result<Vec<String>, SecretError> {
    let io = |context| {
        move |source| SecretError::Io {
            context,
            path: path.to_owned(),
            source,
        }
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
        let metadata = std::fs::metadata(path).map_err(io("cannot read"))?;
        // A folder's mode is no secret file's problem: said as what it is.
        if metadata.is_dir() {
            return Err(io("cannot read")(std::io::Error::new(
                std::io::ErrorKind::IsADirectory,
                "it is a folder, not a file",
            )));
        }
        // A socket cannot be read as a file, and a device would never end (`/dev/zero`)
        // or hold nothing (`/dev/null`).
        if !metadata.is_file() && !metadata.file_type().is_fifo() {
            return Err(io("cannot read")(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "it is a socket or device, not a file",
            )));
        }
        let mode = metadata.permissions().mode();
        // No access for group or others (0600), as for an SSH key: group members are
        // other users too. The owner's own bits are the owner's business.
        let me = rustix::process::geteuid().as_raw();
        if mode & 0o077 != 0 {
            let chmod = format!("`chmod 600 {}`", path.display());
            let fix = if metadata.uid() == me {
                chmod
            } else {
                format!(
                    "`chown {me} {}` and {chmod} (as root: it must be readable by this \
                     user, uid {me}, alone)",
                    path.display()
                )
            };
            return Err(SecretError::Exposed {
                path: path.to_owned(),
                mode: mode & 0o7777,
                fix,
            });
        }
        // Nor one another user owns, as SSH refuses such a key: its owner can change
        // the secrets (a daemon run as root took another user's file, and that user
        // could then sign webhooks: a security review). Root's own is fine, and so is
        // a pipe: whoever made it hands the secret over (`pass show x | sudo -u mirror
        // protocol-mirror serve --secret-file /dev/stdin`; a review).
        if metadata.uid() != me && metadata.uid() != 0 && !metadata.file_type().is_fifo() {
            return Err(SecretError::NotOwned {
                path: path.to_owned(),
                owner: metadata.uid(),
            });
        }
        // A pipe is fine (`--secret-file <(pass show mirror)`: mode 0600), but one that
        // no one writes to would block the read for good: `serve` hung on a named pipe.
        if metadata.file_type().is_fifo() {
            return parse(&read_pipe(path).map_err(io("cannot read"))?, path);
        }
    }
    let text = std::fs::read_to_string(path).map_err(io("cannot read"))?;
    parse(&text, path)
}

/// The secrets of a secret file's `text`: one per line, blank lines and `#` comments
/// left out.
fn parse(text: &str, path: &Path) -> Result<Vec<String>, SecretError> {
    // A byte order mark (some Windows editors write one) is no part of the secret: it
    // was, and every webhook got 401.
    let secrets: Vec<String> = text
        .trim_start_matches('\u{feff}')
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect();
    if secrets.is_empty() {
        return Err(SecretError::Empty(path.to_owned()));
    }
    Ok(secrets)
}

/// How long a pipe given as a secret file may take to be opened and read to its end.
#[cfg(unix)]
const PIPE_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Reads a pipe (at most 1 MiB) on a thread of its own, giving up after [`PIPE_WAIT`]:
/// opening a named pipe waits for a writer, and none may ever come (the thread is
/// then left blocked; the caller reports the error and exits).
#[cfg(unix)]
fn read_pipe(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let (done, result) = std::sync::mpsc::channel();
    let owned = path.to_owned();
    let came = std::sync::Arc::new(AtomicUsize::new(0));
    let counted = came.clone();
    std::thread::Builder::new()
        .name("secret-pipe".into())
        .spawn(move || {
            let read = std::fs::File::open(&owned).and_then(|file| {
                let mut file = file.take(1 << 20);
                let (mut bytes, mut chunk) = (Vec::new(), [0; 4096]);
                loop {
                    match file.read(&mut chunk) {
                        Ok(0) => break,
                        Ok(n) => {
                            bytes.extend_from_slice(&chunk[..n]);
                            counted.fetch_add(n, Ordering::Relaxed);
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
                String::from_utf8(bytes)
                    .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
            });
            let _ = done.send(read);
        })?;
    result.recv_timeout(PIPE_WAIT).unwrap_or_else(|_| {
        let wait = PIPE_WAIT.as_secs();
        // Bytes came, but the pipe never ended: said as such (it said nothing came,
        // of `(echo token; sleep 14) |`: a re-probe).
        let message = match came.load(Ordering::Relaxed) {
            0 => format!(
                "it is a pipe, and nothing came through it in {wait} s (does anything write to it?)"
            ),
            n => format!(
                "it is a pipe that sent {n} bytes but did not end within {wait} s: close it \
                 once the secret is written (what writes it must exit)"
            ),
        };
        Err(std::io::Error::new(std::io::ErrorKind::TimedOut, message))
    })
}

/// The file a generated secret is kept in: `<database>.secret`, beside the database
/// file itself wherever the path given leads through symbolic links, as its lock is,
/// so that every name of the database finds the same secret. (It went beside the name
/// given: a daemon started through a link, then by the file's own name, generated a
/// second secret, and webhooks signed with the first got 401.) A secret kept beside a
/// link by an earlier build's start through it stays that start's: it is the one
/// registered with Protocol.
pub fn generated_path(database: &Path) -> PathBuf {
    let given = crate::beside(database, ".secret");
    if given.exists() {
        return given;
    }
    crate::beside(&crate::lock::real_path(database), ".secret")
}

/// Reads the generated secret of `database`, or generates one (32 random bytes, as
/// hex) into a new file with mode 0600.
pub fn generated(database: &Path) -> Result<(Vec<String>, Source), SecretError> {
    generated_in(generated_path(database))
}

/// [`generated`], given the file's path ([`generated_path`]) already found.
///
/// The file appears whole: the secret is written and synced into a file of its own
/// beside it, then linked in under its name (a process killed between creating the
/// file and writing it left it empty, and every later start failed on "holds no
/// secret"). An empty file, left so by an earlier version, is one never written.
pub fn generated_in(path: PathBuf) -> Result<(Vec<String>, Source), SecretError> {
    let was_empty = std::fs::metadata(&path).is_ok_and(|m| m.is_file() && m.len() == 0);
    if was_empty {
        let _ = std::fs::remove_file(&path);
    }
    if path.exists() {
        return Ok((read_file(&path)?, Source::Reused(path)));
    }
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| SecretError::Random(e.to_string()))?;
    let secret: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let io = |source| SecretError::Io {
        context: "cannot write secret file",
        path: path.clone(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        crate::create_folder(dir).map_err(io)?;
    }
    let mut writing = path.clone().into_os_string();
    writing.push(format!(".{}.writing", std::process::id()));
    let writing = PathBuf::from(writing);
    let _ = std::fs::remove_file(&writing);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let written = options
        .open(&writing)
        .and_then(|mut file| {
            writeln!(file, "{secret}")?;
            file.sync_all()
        })
        .and_then(|()| match std::fs::hard_link(&writing, &path) {
            // A filesystem without hard links: moved in, where nothing is.
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists && !path.exists() => {
                std::fs::rename(&writing, &path)
            }
            linked => linked,
        });
    let _ = std::fs::remove_file(&writing);
    match written {
        Ok(()) if was_empty => Ok((vec![secret], Source::ReplacedEmpty(path))),
        Ok(()) => Ok((vec![secret], Source::Generated(path))),
        // Another process made it meanwhile: its secret is the one.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            Ok((read_file(&path)?, Source::Reused(path)))
        }
        Err(e) => Err(io(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A value that may be a secret, given where its file was meant to go, is not
    /// repeated; a path into a folder that exists is.
    #[test]
    fn a_missing_file_is_named_only_by_a_path_into_a_folder() {
        let dir = tempfile::tempdir().unwrap();
        let missing = |name: &str| read_file(Path::new(name)).unwrap_err().to_string();
        let long = "k".repeat(300);
        for secret in [
            "whsec_4f9a8b7c6d5e4f3a2b1c",
            "s3cr3t",
            "secret.txt",
            "whsec_Mf/Q9r8GK+qrTwjUPD8ILPZIo2La=",
            "/Mf/Q9r8GK+qrTwjUPD8ILPZIo2La=",
            "/abc+def=",
            "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl",
            long.as_str(),
        ] {
            let err = missing(secret);
            assert!(!err.contains(secret), "{err}");
            assert!(err.contains(&format!("{} bytes", secret.len())), "{err}");
        }
        assert!(missing("s3cr3t").contains("No such file"));
        let path = dir.path().join("secret");
        // Tests run in the package's folder, which holds `src`.
        for named in ["./secret", "src/no-such-secret", path.to_str().unwrap()] {
            let err = missing(named);
            assert!(err.contains(named), "{err}");
        }
    }

    #[test]
    fn env_values_split_on_commas() {
        assert_eq!(from_env_value(" a, b ,,c "), ["a", "b", "c"]);
        assert!(from_env_value("").is_empty());
    }

    #[cfg(unix)]
    #[test]
    fn files_must_be_private_and_non_empty() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        std::fs::write(&path, "# rotation\nnew\n\n old \n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = read_file(&path).unwrap_err();
        assert!(err.to_string().contains("chmod 600"), "{err}");
        assert!(!err.to_string().contains("chown"), "{err}");
        assert!(!err.to_string().contains("new"), "never echo the secret");
        // Another user's (root's, read by a service user): `chmod 600` alone would
        // leave it unreadable here, so the fix hands it over first. (Made so as root;
        // elsewhere a file cannot be given away.)
        if rustix::process::geteuid().is_root() {
            let other = tempfile::NamedTempFile::new_in(dir.path()).unwrap();
            std::os::unix::fs::chown(other.path(), Some(65534), None).unwrap();
            std::fs::set_permissions(other.path(), std::fs::Permissions::from_mode(0o640)).unwrap();
            let err = read_file(other.path()).unwrap_err().to_string();
            assert!(err.contains("`chown 0 "), "{err}");
        } else {
            eprintln!("skipped the other user's file: only root can give a file away");
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_file(&path).unwrap(), ["new", "old"]);
        std::fs::write(&path, "# nothing\n").unwrap();
        assert!(matches!(read_file(&path), Err(SecretError::Empty(_))));
        // A folder was first told to `chmod 600`.
        let err = read_file(dir.path()).unwrap_err();
        assert!(err.to_string().contains("is a folder"), "{err}");
        // A socket or a device is no secret file.
        let socket = dir.path().join("socket");
        let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        for path in [socket.as_path(), Path::new("/dev/null")] {
            let err = read_file(path).unwrap_err();
            assert!(err.to_string().contains("socket or device"), "{err}");
        }
    }

    /// A secret file another user owns is refused: that user could change it, and so
    /// sign webhooks (a security review). Root's and this user's own are read. Needs
    /// root, to give a file away (CI runs as root); skipped, and said, elsewhere.
    #[cfg(unix)]
    #[test]
    fn files_of_other_users_are_refused() {
        use std::os::unix::fs::PermissionsExt;
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipped: giving a file to another user needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        std::fs::write(&path, "s3cret\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_file(&path).unwrap(), ["s3cret"]);
        std::os::unix::fs::chown(&path, Some(65534), None).unwrap();
        let err = read_file(&path).unwrap_err();
        assert!(
            matches!(err, SecretError::NotOwned { owner: 65534, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("another user"), "{err}");
        assert!(!err.to_string().contains("s3cret"), "{err}");
        // A pipe another user made hands the secret over: read.
        let fifo = dir.path().join("fifo");
        if !crate::tests::mkfifo(&fifo) {
            return;
        }
        std::os::unix::fs::chown(&fifo, Some(65534), None).unwrap();
        let writer = {
            let fifo = fifo.clone();
            std::thread::spawn(move || std::fs::write(fifo, "s3cret\n").unwrap())
        };
        assert_eq!(read_file(&fifo).unwrap(), ["s3cret"]);
        writer.join().unwrap();
    }

    /// A pipe is read (`--secret-file <(pass show mirror)`), within a time limit: a
    /// named pipe no one wrote to hung `serve` for good.
    #[cfg(unix)]
    #[test]
    fn pipes_are_read_within_a_time_limit() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        if !crate::tests::mkfifo(&fifo) {
            return;
        }
        let writer = {
            let fifo = fifo.clone();
            std::thread::spawn(move || std::fs::write(fifo, "# from a pipe\ns3cret\n").unwrap())
        };
        assert_eq!(read_file(&fifo).unwrap(), ["s3cret"]);
        writer.join().unwrap();
        // No writer: an error after the time limit, not a hang.
        let started = std::time::Instant::now();
        let err = read_file(&fifo).unwrap_err();
        assert!(err.to_string().contains("nothing came through it"), "{err}");
        assert!(started.elapsed() >= PIPE_WAIT);
        // A writer that sends its secret and keeps the pipe open: said as such (it
        // was said that nothing came, a re-probe). A pipe of its own: the reader the
        // time limit left behind above still waits to open the first.
        let fifo = dir.path().join("fifo-kept-open");
        assert!(crate::tests::mkfifo(&fifo));
        let (release, held) = std::sync::mpsc::channel::<()>();
        let writer = {
            let fifo = fifo.clone();
            std::thread::spawn(move || {
                use std::io::Write;
                let mut pipe = std::fs::OpenOptions::new().write(true).open(fifo).unwrap();
                pipe.write_all(b"s3cret\n").unwrap();
                let _ = held.recv();
            })
        };
        let err = read_file(&fifo).unwrap_err();
        assert!(
            err.to_string().contains("sent 7 bytes but did not end"),
            "{err}"
        );
        drop(release);
        writer.join().unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn generated_secrets_are_private_and_reused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("m.db");
        let (first, source) = generated(&db).unwrap();
        assert_eq!(source, Source::Generated(generated_path(&db)));
        assert_eq!(first[0].len(), 64);
        let mode = std::fs::metadata(generated_path(&db))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let (second, source) = generated(&db).unwrap();
        assert_eq!(second, first);
        assert_eq!(source, Source::Reused(generated_path(&db)));
        // Nothing else is left beside it.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        // An empty file, as a process killed between creating it and writing it left
        // it before, is one never written: a secret is generated (every start failed
        // on "holds no secret").
        std::fs::write(generated_path(&db), "").unwrap();
        let (third, source) = generated(&db).unwrap();
        assert_eq!(source, Source::ReplacedEmpty(generated_path(&db)));
        assert_ne!(third, first);
        assert_eq!(read_file(&generated_path(&db)).unwrap(), third);
    }

    /// Every name of a database finds one generated secret: beside the file itself,
    /// as its lock; one kept beside a link by an earlier build is still found.
    #[cfg(unix)]
    #[test]
    fn a_database_reached_through_a_link_has_one_generated_secret() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        for folder in ["real", "links"] {
            std::fs::create_dir(root.join(folder)).unwrap();
        }
        let db = root.join("real/m.db");
        let link = root.join("links/l.db");
        std::os::unix::fs::symlink("../real/m.db", &link).unwrap();
        let (first, source) = generated(&link).unwrap();
        assert_eq!(source, Source::Generated(root.join("real/m.db.secret")));
        let (second, source) = generated(&db).unwrap();
        assert_eq!(
            (second, source),
            (first, Source::Reused(root.join("real/m.db.secret")))
        );

        // An earlier build's secret beside a link stays the link's, also once there
        // is one beside the file.
        let old = root.join("links/old.db");
        std::os::unix::fs::symlink("../real/other.db", &old).unwrap();
        std::fs::write(root.join("links/old.db.secret"), "kept\n").unwrap();
        assert_eq!(generated_path(&old), root.join("links/old.db.secret"));
        let other = root.join("real/other.db");
        assert_eq!(generated_path(&other), root.join("real/other.db.secret"));
        generated(&other).unwrap();
        assert_eq!(generated_path(&old), root.join("links/old.db.secret"));
    }

    #[test]
    fn a_byte_order_mark_is_no_part_of_a_secret() {
        let path = Path::new("s");
        assert_eq!(
            parse("\u{feff}abc\r\nde\u{feff}f\n", path).unwrap(),
            ["abc", "de\u{feff}f"]
        );
        assert!(parse("\u{feff}\n", path).is_err());
    }
}
