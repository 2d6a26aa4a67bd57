//! `mirror-bench verify`: runs `protocol-verify`'s criterion benchmark (a signature
//! check against a bare `hmac` + `sha2` computation over the same bytes) and reports
//! criterion's medians.

use std::path::Path;

use anyhow::{Context, bail};

use crate::machine::table;

/// Runs the criterion benchmark in `workspace` and returns its Markdown report.
pub(crate) fn run(quick: bool, workspace: &Path, target: &Path) -> anyhow::Result<String> {
    let mut command = crate::cargo(workspace, target);
    command
        .args(["bench", "-p", "protocol-verify", "--bench", "verify", "--"])
        // Criterion's own report goes to stderr: stdout is the Markdown report.
        .stdout(std::process::Stdio::from(std::io::stderr()));
    if quick {
        command.args(["--warm-up-time", "0.5", "--measurement-time", "1"]);
    }
    eprintln!("verify: cargo bench -p protocol-verify --bench verify...");
    let status = command.status().context("running cargo bench")?;
    if !status.success() {
        bail!("cargo bench -p protocol-verify failed with {status}");
    }
    let median = |group: &str, id: &str| -> anyhow::Result<f64> {
        let path = target
            .join("criterion")
            .join(group)
            .join(id)
            .join("new/estimates.json");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let value: serde_json::Value = serde_json::from_str(&text)?;
        value["median"]["point_estimate"]
            .as_f64()
            .with_context(|| format!("no median in {}", path.display()))
    };
    let mut rows = Vec::new();
    for (id, bytes) in [("1KiB", 1024.0), ("64KiB", 65536.0)] {
        let ours = median("verify", id)?;
        let bare = median("baseline", id)?;
        let ratio = ours / bare;
        rows.push(vec![
            id.to_owned(),
            format!("{ours:.0}"),
            format!("{bare:.0}"),
            format!("{ratio:.3}"),
            format!("{:.0}", bytes / ours * 1e9 / 1024.0 / 1024.0),
            if ratio <= 1.5 {
                "≤ 1.5x: yes".to_owned()
            } else {
                "≤ 1.5x: **no**".to_owned()
            },
        ]);
    }
    let mut report = String::from(
        "### Signature check\n\n\
         `cargo bench -p protocol-verify --bench verify` (criterion medians): \
         `Verifier::verify` (hex header decoded, HMAC-SHA256 over the body, constant-time \
         compare) against a bare `hmac` + `sha2` loop over the same bytes.\n\n",
    );
    report.push_str(&table(
        &[
            "body",
            "verify ns/op",
            "bare hmac ns/op",
            "ratio",
            "verify MiB/s",
            "target",
        ],
        &rows,
    ));
    report.push('\n');
    Ok(report)
}
