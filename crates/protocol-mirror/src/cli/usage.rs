//! Usage mistakes clap's own tips get wrong: an option the command does not take.
//!
//! For an unknown option clap suggests the nearest option of the same command, or
//! passing the word as a value after `--`. Both mislead for an option that exists on
//! other commands (`get message --conversation x` was told "a similar argument exists:
//! '--version'", `search hotel --since 1d` to write `-- --since`, which searches for
//! that text) and for the spellings other tools use for the output format (`--json`,
//! `-o json`). Those get a tip of their own, and so do a file given to `sign`, which
//! reads standard input, a value that starts with `-` (clap's tip cut it short), and
//! an option written after `--` (a value there); other unknown options keep clap's.

use std::ffi::OsString;

use clap::Command;
use clap::error::{ContextKind, ContextValue, ErrorKind};

/// `error` as the user should read it: for an option that `args`' command does not
/// take, a tip naming the option to use, or the commands that take it.
pub(super) fn explained(command: &Command, args: &[OsString], error: clap::Error) -> clap::Error {
    if error.kind() == ErrorKind::InvalidValue {
        return given_empty(command, args, error);
    }
    if error.kind() != ErrorKind::UnknownArgument {
        return error;
    }
    let Some(ContextValue::String(given)) = error.get(ContextKind::InvalidArg) else {
        return error;
    };
    let Some(subcommand) = subcommand_of(command, args) else {
        return error;
    };
    let option = given
        .split_once('=')
        .map_or(given.as_str(), |(name, _)| name);
    // A short option given as a word of its own (`import f -f json`) is that option;
    // in a longer word (`get message -f7`), the value that starts with it.
    let whole_word = args.iter().any(|a| a.to_str() == Some(given.as_str()));
    let tip = after_the_end_of_options(subcommand, args, given, option)
        .or_else(|| tip(command, subcommand, option, whole_word, suggestion(&error)))
        .or_else(|| hyphen_value_tip(subcommand, args, given));
    let Some(tip) = tip else {
        return error;
    };
    unknown_argument(command, given.clone(), Some(tip))
}

/// clap's error for an argument `given` that `command` does not take, with `tip`.
fn unknown_argument(command: &Command, given: String, tip: Option<String>) -> clap::Error {
    let mut error = clap::Error::new(ErrorKind::UnknownArgument).with_cmd(command);
    error.insert(ContextKind::InvalidArg, ContextValue::String(given));
    if let Some(tip) = tip {
        error.insert(
            ContextKind::Suggested,
            ContextValue::StyledStrs(vec![tip.into()]),
        );
    }
    error
}

/// A word before any `--` that starts with `-h` or `-V` and goes on (`search -hotel`,
/// `get message -hx`): clap reads it as `-h` (or `-V`) and more short options, and
/// prints the help (or version), exit 0, for text or an id that starts with `-`, a usage
/// mistake the docs say is exit 2 (a probe).
pub(super) fn help_in_a_word(args: &[OsString]) -> Option<String> {
    args.iter()
        .skip(1)
        .map_while(|arg| arg.to_str().filter(|arg| *arg != "--"))
        .find(|arg| {
            (arg.starts_with("-h") || arg.starts_with("-V")) && arg.len() > 2 && !arg.contains('=')
        })
        .map(str::to_owned)
}

/// The error for `word` of `args` ([`help_in_a_word`]), as clap's for a word that
/// starts with an unknown short option (`-xyz`): its tip gives it to the option before
/// it that takes a value, with `=`, or else after `--`. Before any command, there is
/// no value to pass: no tip.
pub(super) fn unexpected(command: &Command, args: &[OsString], word: String) -> clap::Error {
    let tip = subcommand_of(command, args).map(|subcommand| {
        hyphen_value_tip(subcommand, args, &word[..2])
            .unwrap_or_else(|| format!("to pass '{word}' as a value, write '-- {word}'"))
    });
    unknown_argument(command, word, tip)
}

/// An empty value (`--conversation ""`, `--conversation=`, `-f ""`) said to be one: clap said that
/// "none was supplied", of a value given (a probe). Other invalid values keep clap's
/// words, and so does a value left out (`--conversation` last).
fn given_empty(command: &Command, args: &[OsString], error: clap::Error) -> clap::Error {
    let (Some(ContextValue::String(arg)), Some(ContextValue::String(value))) = (
        error.get(ContextKind::InvalidArg),
        error.get(ContextKind::InvalidValue),
    ) else {
        return error;
    };
    let long = arg.split_once(' ').map_or(arg.as_str(), |(long, _)| long);
    // Its short spelling (`-f` of `--format`), on any command.
    let short = long.strip_prefix("--").and_then(|name| {
        std::iter::once(command)
            .chain(command.get_subcommands())
            .flat_map(Command::get_arguments)
            .find(|a| a.get_long() == Some(name))
            .and_then(clap::Arg::get_short)
            .map(|short| format!("-{short}"))
    });
    let names_it = |word: &str| word == long || Some(word) == short.as_deref();
    let given_empty = args.iter().enumerate().any(|(at, word)| {
        word.to_string_lossy()
            .strip_suffix('=')
            .is_some_and(names_it)
            || (word.is_empty()
                && (!long.starts_with('-')
                    || at
                        .checked_sub(1)
                        .and_then(|before| args.get(before)?.to_str())
                        .is_some_and(names_it)))
    });
    if !value.is_empty() || !given_empty {
        return error;
    }
    clap::Error::raw(
        ErrorKind::InvalidValue,
        format!("the value given to '{arg}' is empty: an empty value names nothing\n"),
    )
    .with_cmd(command)
}

/// The similar option clap found, if it is one worth suggesting beside the commands
/// that take the option given: `--version` and `--help` are near many words
/// (`--conversation`), and then not what was meant.
fn suggestion(error: &clap::Error) -> Option<&str> {
    match error.get(ContextKind::SuggestedArg) {
        Some(ContextValue::String(similar))
            if !matches!(similar.as_str(), "--version" | "--help") =>
        {
            Some(similar)
        }
        _ => None,
    }
}

/// The tip for `option` given to `subcommand` of `command`, if there is a better one
/// than clap's.
fn tip(
    command: &Command,
    subcommand: &Command,
    option: &str,
    whole_word: bool,
    similar: Option<&str>,
) -> Option<String> {
    let name = subcommand.get_name();
    let takes = |long: &str| {
        subcommand
            .get_arguments()
            .any(|a| a.get_long() == Some(long))
    };
    if takes("format") {
        if let Some(format) = option
            .strip_prefix("--")
            .filter(|f| matches!(*f, "json" | "ndjson" | "csv" | "table"))
        {
            return Some(format!("write '--format {format}' (or '-f {format}')"));
        }
        if matches!(option, "-o" | "--output" | "--out") {
            return Some(
                "the output's format is '--format' ('-f'): table, json, ndjson or csv".to_owned(),
            );
        }
    }
    // `sign` reads its body from standard input: a file named was refused with no
    // word of that (an operator probe).
    if name == "sign" && !option.starts_with('-') {
        let file = if option.is_empty() { "FILE" } else { option };
        return Some(format!(
            "'sign' reads the body from standard input: protocol-mirror sign < {file}"
        ));
    }
    if name == "sql" && matches!(option, "--limit" | "-n") {
        return Some(format!(
            "'sql' takes no '{option}': end the statement with LIMIT N"
        ));
    }
    // The option, long or short: a short one of other commands (`import f -f json`)
    // was told to pass `-f` as a value after `--` (a probe).
    let is_option: Box<dyn Fn(&clap::Arg) -> bool> =
        match (option.strip_prefix("--"), short_option(option)) {
            (Some(long), _) if !long.is_empty() => Box::new(move |a| a.get_long() == Some(long)),
            (None, Some(short)) if whole_word => Box::new(move |a| a.get_short() == Some(short)),
            _ => return None,
        };
    let others: Vec<&str> = command
        .get_subcommands()
        .filter(|other| other.get_name() != name)
        .filter(|other| other.get_arguments().any(&is_option))
        .map(Command::get_name)
        .collect();
    if others.is_empty() {
        // Unknown everywhere: clap's tip (the nearest option, or `--` for a value)
        // stands.
        return None;
    }
    let also = similar
        .map(|similar| format!("; did you mean '{similar}'?"))
        .unwrap_or_default();
    Some(format!(
        "'{name}' takes no '{option}' ({} {} it){also}",
        list(&others),
        if others.len() == 1 { "takes" } else { "take" }
    ))
}

/// For an option of `subcommand` written after `--`, where every word is a value
/// (`list messages -- --format json`): to move it before. It was told the command
/// takes no such option, of one it takes (a probe).
fn after_the_end_of_options(
    subcommand: &Command,
    args: &[OsString],
    given: &str,
    option: &str,
) -> Option<String> {
    // The option's name (`--format` of `--format=json`).
    let takes_it = subcommand.get_arguments().any(|a| {
        option
            .strip_prefix("--")
            .is_some_and(|long| a.get_long() == Some(long))
            || short_option(option).is_some_and(|short| a.get_short() == Some(short))
    });
    if !takes_it {
        return None;
    }
    let end = args.iter().position(|a| a == "--")?;
    args[end + 1..]
        .iter()
        .any(|a| a.to_str() == Some(given))
        .then(|| {
            format!(
                "every word after '--' is a value; to give '{given}' as an option, write it before '--'"
            )
        })
}

/// The letter of a short option (`-f`).
fn short_option(option: &str) -> Option<char> {
    let mut chars = option.strip_prefix('-')?.chars();
    match (chars.next(), chars.next()) {
        (Some(short), None) if short != '-' => Some(short),
        _ => None,
    }
}

/// For a value that starts with `-` (an id: `get message -x7`), which clap took for
/// the short option `-x` and told to pass as `-- -x`, cutting the value short (an
/// operator probe): the whole value, after `--`, or joined to its option with `=`
/// when it follows one of `subcommand` that takes a value (`--conversation=-x7`; after
/// a switch, `search --fts -cafe`, that was a tip that could not work: a probe).
fn hyphen_value_tip(subcommand: &Command, args: &[OsString], given: &str) -> Option<String> {
    if given.len() != 2 || given.starts_with("--") {
        return None;
    }
    let words: Vec<&str> = args.iter().filter_map(|a| a.to_str()).collect();
    let at = words
        .iter()
        .position(|w| w.starts_with(given) && w.len() > given.len())?;
    let word = words[at];
    let takes_a_value = |option: &str| {
        subcommand.get_arguments().any(|a| {
            option
                .strip_prefix("--")
                .is_some_and(|long| a.get_long() == Some(long))
                && a.get_action().takes_values()
        })
    };
    match words[..at].last() {
        Some(option) if !option.contains('=') && takes_a_value(option) => Some(format!(
            "to give '{word}' to {option}, write '{option}={word}'"
        )),
        _ => Some(format!("to pass '{word}' as a value, write '-- {word}'")),
    }
}

/// `a`, `a and b`, `a, b and c`.
fn list(names: &[&str]) -> String {
    match names {
        [] => String::new(),
        [one] => (*one).to_owned(),
        [rest @ .., last] => format!("{} and {last}", rest.join(", ")),
    }
}

/// The subcommand `args` name: the first word that is one, past the program's name
/// and the global `--db`'s value.
fn subcommand_of<'a>(command: &'a Command, args: &[OsString]) -> Option<&'a Command> {
    let mut words = args.iter().skip(1).filter_map(|a| a.to_str());
    while let Some(word) = words.next() {
        if word == "--db" {
            words.next();
            continue;
        }
        if word == "--" {
            return None;
        }
        if let Some(found) = command.find_subcommand(word) {
            return Some(found);
        }
        if !word.starts_with('-') {
            return None;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    fn rendered(args: &[&str]) -> String {
        match super::super::Cli::try_parse_args(args) {
            Ok(_) => panic!("{args:?} parsed"),
            Err(e) => e.render().to_string(),
        }
    }

    #[test]
    fn the_output_formats_other_tools_spell_as_flags_point_at_format() {
        let out = rendered(&["protocol-mirror", "list", "messages", "--json"]);
        assert!(
            out.contains("tip: write '--format json' (or '-f json')"),
            "{out}"
        );
        let out = rendered(&["protocol-mirror", "--db", "x", "events", "-o", "csv"]);
        assert!(out.contains("'--format' ('-f')"), "{out}");
        assert!(!out.contains("use '-- -o'"), "{out}");
    }

    #[test]
    fn an_option_of_other_commands_names_them() {
        let out = rendered(&["protocol-mirror", "search", "hotel", "--since", "1d"]);
        assert!(
            out.contains("tip: 'search' takes no '--since' (list and events take it)"),
            "{out}"
        );
        let out = rendered(&[
            "protocol-mirror",
            "get",
            "message",
            "--conversation",
            "x",
            "y",
        ]);
        assert!(out.contains("'get' takes no '--conversation' ("), "{out}");
        assert!(!out.contains("--version"), "{out}");
        // `--limit=5` is read as `--limit`.
        let out = rendered(&["protocol-mirror", "stats", "--limit=5"]);
        assert!(out.contains("'stats' takes no '--limit' ("), "{out}");
        for limit in ["--limit", "-n"] {
            let out = rendered(&["protocol-mirror", "sql", limit, "5", "SELECT 1"]);
            assert!(out.contains("end the statement with LIMIT N"), "{out}");
        }
    }

    #[test]
    fn a_value_that_starts_with_a_hyphen_is_named_whole() {
        let out = rendered(&["protocol-mirror", "get", "message", "-x7"]);
        assert!(
            out.contains("tip: to pass '-x7' as a value, write '-- -x7'"),
            "{out}"
        );
        let out = rendered(&[
            "protocol-mirror",
            "list",
            "messages",
            "--conversation",
            "-x7",
        ]);
        assert!(
            out.contains("tip: to give '-x7' to --conversation, write '--conversation=-x7'"),
            "{out}"
        );
    }

    /// After a switch, the value is the command's, after `--`; a short option of other
    /// commands names them, as a long one does (both were told what could not work:
    /// a probe).
    #[test]
    fn a_hyphen_after_a_switch_and_short_options_of_other_commands() {
        let out = rendered(&["protocol-mirror", "--db", "x", "search", "--fts", "-cafe"]);
        assert!(
            out.contains("tip: to pass '-cafe' as a value, write '-- -cafe'"),
            "{out}"
        );
        let out = rendered(&["protocol-mirror", "import", "f", "-f", "json"]);
        assert!(out.contains("tip: 'import' takes no '-f' ("), "{out}");
        assert!(!out.contains("'-- -f'"), "{out}");
        let out = rendered(&["protocol-mirror", "import", "-n", "5", "f"]);
        assert!(out.contains("tip: 'import' takes no '-n' ("), "{out}");
        // In a longer word, the value it starts (`list` takes `-n`, `get` does not).
        let out = rendered(&["protocol-mirror", "get", "message", "-n7"]);
        assert!(
            out.contains("tip: to pass '-n7' as a value, write '-- -n7'"),
            "{out}"
        );
    }

    /// A word that starts with `-h` (or `-V`) is a usage mistake, not a request for
    /// the help (`search -hotel` printed it, exit 0: a probe); `-h` itself, and such a
    /// word after `--`, are what they were.
    #[test]
    fn a_word_that_starts_with_the_help_option_is_a_usage_mistake() {
        let out = rendered(&["protocol-mirror", "search", "-hotel"]);
        assert!(
            out.contains("unexpected argument '-hotel'")
                && out.contains("tip: to pass '-hotel' as a value, write '-- -hotel'"),
            "{out}"
        );
        let out = rendered(&[
            "protocol-mirror",
            "list",
            "messages",
            "--conversation",
            "-hi",
        ]);
        assert!(
            out.contains("tip: to give '-hi' to --conversation, write '--conversation=-hi'"),
            "{out}"
        );
        let out = rendered(&["protocol-mirror", "get", "message", "-Vx"]);
        assert!(out.contains("unexpected argument '-Vx'"), "{out}");
        // Before any command, no value is passed: no tip.
        let out = rendered(&["protocol-mirror", "-hx"]);
        assert!(out.contains("unexpected argument '-hx'"), "{out}");
        assert!(!out.contains("tip"), "{out}");
        for fine in [
            &["protocol-mirror", "search", "-h"][..],
            &["protocol-mirror", "search", "--", "-hotel"],
            &["protocol-mirror", "list", "messages", "--conversation=-hi"],
        ] {
            let parsed = super::super::Cli::try_parse_args(fine);
            assert!(
                parsed.as_ref().map_or_else(
                    |e| e.kind() == clap::error::ErrorKind::DisplayHelp,
                    |_| true
                ),
                "{fine:?}"
            );
        }
    }

    /// An option after `--` is a value there: the tip says to move it, not that the
    /// command does not take it.
    #[test]
    fn an_option_after_the_end_of_options_is_told_to_move() {
        let out = rendered(&[
            "protocol-mirror",
            "list",
            "messages",
            "--",
            "--format",
            "json",
        ]);
        assert!(
            out.contains("tip: every word after '--' is a value; to give '--format' as an option, write it before '--'"),
            "{out}"
        );
        assert!(!out.contains("takes no"), "{out}");
        // With its value joined to it, too.
        let out = rendered(&["protocol-mirror", "list", "messages", "--", "--format=json"]);
        assert!(out.contains("write it before '--'"), "{out}");
        // One it does not take either way is told who takes it.
        let out = rendered(&["protocol-mirror", "get", "message", "--", "x", "-n"]);
        assert!(out.contains("tip: 'get' takes no '-n' ("), "{out}");
    }

    /// An empty value is said to be empty; one left out, to be missing.
    #[test]
    fn an_empty_value_is_not_said_to_be_missing() {
        let empty = "the value given to '--conversation <ID>' is empty";
        for args in [
            &["protocol-mirror", "list", "messages", "--conversation", ""][..],
            &["protocol-mirror", "list", "messages", "--conversation="],
        ] {
            let out = rendered(args);
            assert!(out.contains(empty), "{args:?}: {out}");
        }
        let out = rendered(&["protocol-mirror", "list", "messages", "--conversation"]);
        assert!(out.contains("none was supplied"), "{out}");
        let out = rendered(&["protocol-mirror", "--db", "x", "import", ""]);
        assert!(
            out.contains("the value given to '<FILE>' is empty"),
            "{out}"
        );
        let out = rendered(&["protocol-mirror", "--db", "x", "list", "messages", "-f", ""]);
        assert!(
            out.contains("the value given to '--format <FORMAT>' is empty"),
            "{out}"
        );
        let out = rendered(&["protocol-mirror", "--db", "x", "list", "messages", "-f="]);
        assert!(
            out.contains("the value given to '--format <FORMAT>' is empty"),
            "{out}"
        );
        let out = rendered(&["protocol-mirror", "--db", "", "stats"]);
        assert!(
            out.contains("the value given to '--db <PATH>' is empty"),
            "{out}"
        );
    }

    #[test]
    fn a_file_given_to_sign_is_pointed_at_standard_input() {
        let out = rendered(&["protocol-mirror", "sign", "event.json"]);
        assert!(
            out.contains(
                "tip: 'sign' reads the body from standard input: protocol-mirror sign < event.json"
            ),
            "{out}"
        );
        // An empty one is not repeated as nothing after `<`.
        let out = rendered(&["protocol-mirror", "sign", ""]);
        assert!(out.contains("protocol-mirror sign < FILE"), "{out}");
    }

    #[test]
    fn a_misspelt_option_keeps_clap_s_suggestion() {
        let out = rendered(&["protocol-mirror", "list", "messages", "--converstion", "x"]);
        assert!(
            out.contains("a similar argument exists: '--conversation'"),
            "{out}"
        );
        let out = rendered(&["protocol-mirror", "events", "--follw"]);
        assert!(out.contains("'--follow'"), "{out}");
    }

    #[test]
    fn an_option_no_command_takes_keeps_clap_s_tip() {
        let out = rendered(&["protocol-mirror", "get", "message", "--versio", "x"]);
        assert!(
            out.contains("a similar argument exists: '--version'"),
            "{out}"
        );
        let out = rendered(&["protocol-mirror", "search", "--nothing-like-it"]);
        assert!(out.contains("use '-- --nothing-like-it'"), "{out}");
    }
}
