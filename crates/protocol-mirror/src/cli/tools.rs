//! Developer tools: sign a body, send signed events to a mirror.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use protocol_mirror::secrets;

#[derive(clap::Args)]
pub(crate) struct SignArgs {
    /// File holding the secret (its first one is used); else PROTOCOL_WEBHOOK_SECRET;
    /// else the secret `serve` generated beside the database.
    #[arg(long, value_name = "PATH")]
    secret_file: Option<PathBuf>,
}

#[derive(clap::Args)]
pub(crate) struct SendArgs {
    /// The mirror's webhook URL (`http://`; `https://` for a mirror behind TLS).
    #[arg(long, default_value = "http://127.0.0.1:8787/webhooks")]
    url: String,
    /// File holding the secret (its first one is used); else PROTOCOL_WEBHOOK_SECRET;
    /// else the secret `serve` generated beside the database.
    #[arg(long, value_name = "PATH")]
    secret_file: Option<PathBuf>,
    /// The NDJSON file of envelopes, or `-` for standard input.
    file: PathBuf,
}

/// The secret to sign with: from `file`, else PROTOCOL_WEBHOOK_SECRET, else the one
/// `serve` generated beside the database `db` (when it did).
fn secret(file: Option<&Path>, db: Option<&Path>) -> anyhow::Result<(String, String)> {
    let (mut secrets, mut source) = match file {
        Some(path) => (
            super::secret_file(path)?,
            format!("the secret of --secret-file {}", path.display()),
        ),
        None => (
            super::env_secrets(super::env_text("PROTOCOL_WEBHOOK_SECRET")?.as_deref())?,
            "PROTOCOL_WEBHOOK_SECRET".to_owned(),
        ),
    };
    let generated = db.map(secrets::generated_path);
    if let Some(generated) = &generated
        && secrets.is_empty()
        && file.is_none()
        && generated.exists()
    {
        secrets = super::secret_file(generated)?;
        source = format!("the secret generated into {}", generated.display());
    }
    // A setting missing: a usage mistake (exit 2), as backfill's missing token is.
    match (secrets.into_iter().next(), generated) {
        (Some(secret), _) => Ok((secret, source)),
        (None, Some(generated)) => Err(super::UsageError(format!(
            "no secret: give the daemon's secret with --secret-file or \
             PROTOCOL_WEBHOOK_SECRET (a daemon started without one generates {} on its first \
             start, and this reads it from there)",
            generated.display()
        ))
        .into()),
        (None, None) => Err(super::UsageError(
            "no secret: pass --secret-file or set PROTOCOL_WEBHOOK_SECRET".into(),
        )
        .into()),
    }
}

pub(crate) fn sign(db: Option<&Path>, args: SignArgs) -> anyhow::Result<ExitCode> {
    let (secret, _) = secret(args.secret_file.as_deref(), db)?;
    let mut body = Vec::new();
    super::stdin::announced("the body to sign")
        .read_to_end(&mut body)
        .context("reading standard input")?;
    // Written, not `println!`: a closed pipe or a full disk is said in one line (it
    // panicked; a review).
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", protocol_verify::sign(secret, &body))
        .and_then(|()| out.flush())
        .context("writing the signature")?;
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn send(db: Option<&Path>, args: SendArgs) -> anyhow::Result<ExitCode> {
    super::UsageError::unless_http_url("--url", &args.url)?;
    // The file first: a folder given with no secret configured was told "no secret"
    // (a probe); the mistake in the command line comes first.
    let file = if args.file == Path::new("-") {
        None
    } else {
        Some(super::open_events_file(&args.file, "send")?.0)
    };
    let (secret, source) = secret(args.secret_file.as_deref(), db)?;
    let input: Box<dyn BufRead> = match file {
        Some(file) => Box::new(BufReader::new(file)),
        None => Box::new(BufReader::new(super::stdin::announced(
            "events, one per line,",
        ))),
    };
    let agent = ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(SEND_TIMEOUT))
            // A redirect is an answer that did not take the event: followed, a 302
            // turned the POST into a GET without the body, whose 200 was counted as
            // the event's (a review).
            .max_redirects(0)
            .build(),
    );
    let mut statuses: BTreeMap<String, u64> = BTreeMap::new();
    let mut failed = 0;
    let mut unauthorized = false;
    let mut not_found = false;
    let mut redirected = false;
    let mut unreachable = None;
    let mut not_text = 0;
    for (number, line) in input.split(b'\n').enumerate() {
        let line = match line {
            Ok(bytes) => match String::from_utf8(bytes) {
                Ok(line) => line,
                // A line of the input, not an answer: said by its number, and the rest
                // is sent (it stopped there, with no summary and no line number).
                Err(_) => {
                    super::note!("line {}: not UTF-8 text: not sent", number + 1);
                    not_text += 1;
                    continue;
                }
            },
            Err(error) => {
                unreachable = Some((number + 1, SendStop::Read(error)));
                break;
            }
        };
        let line = if number == 0 {
            std::str::from_utf8(protocol_mirror::import::without_bom(line.as_bytes()))
                .expect("a UTF-8 string less a whole leading character is UTF-8")
        } else {
            &line
        };
        let body = line.trim();
        if body.is_empty() {
            continue;
        }
        let signature = protocol_verify::sign(&secret, body.as_bytes());
        let post = || {
            agent
                .post(&args.url)
                .header("content-type", "application/json")
                .header(protocol_verify::HEADER_NAME, &signature)
                .send(body)
        };
        // Tried again once, on a new connection: the one kept from the last answer
        // may have been closed by the receiver meanwhile (one that answered without
        // reading a body closes it, with a reset), and the event is the same event
        // (the mirror applies an event id once). Without it, a line whose connection
        // was reset stopped the run as if nothing listened.
        // Not after a timeout, which a second try would only double (a probe waited
        // 60 s for a receiver that never answered).
        let response = match post().or_else(|e| match e {
            ureq::Error::Timeout(_) => Err(e),
            _ => post(),
        }) {
            Ok(response) => response,
            // The rest would fail alike: stopped, after the summary of what was sent.
            Err(error) => {
                unreachable = Some((number + 1, SendStop::Unreachable(error)));
                break;
            }
        };
        let code = response.status().as_u16();
        // Any bytes: an answer that is not UTF-8 was shown as nothing.
        let text = response
            .into_body()
            .read_to_vec()
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default();
        let status = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v["status"].as_str().map(str::to_owned))
            .map_or_else(|| code.to_string(), |s| format!("{code} {s}"));
        if !(200..300).contains(&code) {
            failed += 1;
            unauthorized |= code == 401;
            not_found |= code == 404;
            redirected |= (300..400).contains(&code);
            // The body is whatever the server at `--url` answered: on one line, with
            // nothing a terminal acts on, and cut short.
            super::note!(
                "line {}: {code} {}",
                number + 1,
                super::output::truncate(&super::escaped_in_one_line(text.trim()), 500)
            );
        }
        *statuses.entry(status).or_default() += 1;
    }
    let summary: Vec<String> = statuses.iter().map(|(s, n)| format!("{n} × {s}")).collect();
    super::note!(
        "sent: {}",
        if summary.is_empty() {
            "nothing".into()
        } else {
            summary.join(", ")
        }
    );
    if unauthorized {
        // Which one was used, never what it is: a daemon started with --secret-file
        // refused the generated one `send` took without a word (a probe).
        super::note!(
            "a 401 is a signature the daemon refused: these were signed with {source}; sign \
             with one of its secrets (--secret-file, PROTOCOL_WEBHOOK_SECRET, or, given the \
             daemon's --db, the secret it generated beside its database)"
        );
    }
    if redirected {
        super::note!(
            "a 3xx is a redirect, which send does not follow (it would not carry the \
             event): give --url the mirror's own address"
        );
    }
    if not_found {
        // Already /webhooks: the port is the one that serves the read API alone (a
        // walk through the README sent to `--read-listen`'s and was told of the path).
        let at_webhooks = args
            .url
            .parse::<ureq::http::Uri>()
            .is_ok_and(|url| url.path().trim_end_matches('/') == "/webhooks");
        if at_webhooks {
            super::note!(
                "a 404 at /webhooks is a listener that does not take webhooks: with \
                 `--read-listen`, the read API's port serves no /webhooks; send to \
                 `--listen`'s"
            );
        } else {
            super::note!(
                "a 404 is a path the receiver does not serve: a mirror's webhook endpoint \
                 is /webhooks (--url http://HOST:PORT/webhooks)"
            );
        }
    }
    match unreachable {
        // Said for a person: ureq says "timeout: global", and rustls an https:// URL
        // to a plain HTTP server "received corrupt message of type
        // InvalidContentType" (an operator probe).
        Some((line, SendStop::Unreachable(ureq::Error::Timeout(_)))) => bail!(
            "line {line}: {} did not answer within {} s; is `protocol-mirror serve` \
             listening there? (lines from {line} on were not sent)",
            without_userinfo(&args.url),
            SEND_TIMEOUT.as_secs()
        ),
        Some((line, SendStop::Unreachable(error)))
            if protocol_mirror::backfill::client::not_tls(&error, &args.url) =>
        {
            bail!(
                "line {line}: the TLS handshake with {} failed ({error}): does it speak \
                 HTTPS? For plain HTTP, give an http:// URL (lines from {line} on were not \
                 sent)",
                without_userinfo(&args.url)
            )
        }
        Some((line, SendStop::Unreachable(error))) => bail!(
            "line {line}: cannot reach {}: {error}; is `protocol-mirror serve` listening \
             there? (lines from {line} on were not sent)",
            without_userinfo(&args.url)
        ),
        Some((line, SendStop::Read(error))) => bail!(
            "line {line}: reading the input failed: {error} (lines from {line} on were not sent)"
        ),
        None => {}
    }
    if failed > 0 || not_text > 0 {
        // Exit code 3, like every other failure (1 is `get` finding nothing).
        let mut what = Vec::new();
        if failed > 0 {
            let verb = if failed == 1 { "was" } else { "were" };
            what.push(format!("{failed} of the events sent {verb} not accepted"));
        }
        if not_text > 0 {
            let lines = if not_text == 1 {
                "line was"
            } else {
                "lines were"
            };
            what.push(format!("{not_text} {lines} not UTF-8 text, and not sent"));
        }
        bail!("{} (see the lines above)", what.join("; "));
    }
    Ok(ExitCode::SUCCESS)
}

/// How long `send` waits for each answer.
const SEND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// `url` without a user name and password before its host (`http://user:pass@host/`
/// shows as `http://…@host/`): an error line repeated them (a review).
fn without_userinfo(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://…{}", &rest[at..]),
        None => url.to_owned(),
    }
}

/// Why `send` stopped before the end of its input.
enum SendStop {
    /// The receiver could not be reached: the rest would fail alike.
    Unreachable(ureq::Error),
    /// The input could not be read.
    Read(std::io::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A user name and password in `--url` are not repeated in what `send` says.
    #[test]
    fn urls_are_shown_without_their_userinfo() {
        assert_eq!(
            without_userinfo("http://user:pass@127.0.0.1:8787/webhooks"),
            "http://…@127.0.0.1:8787/webhooks"
        );
        assert_eq!(
            without_userinfo("https://a@b@host/x?y=@z"),
            "https://…@host/x?y=@z"
        );
        assert_eq!(
            without_userinfo("http://127.0.0.1:8787/webhooks?to=a@b"),
            "http://127.0.0.1:8787/webhooks?to=a@b"
        );
        assert_eq!(without_userinfo("not a url"), "not a url");
    }
}
