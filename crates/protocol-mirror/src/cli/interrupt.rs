//! Ctrl-C (SIGINT), SIGTERM and SIGHUP (a closed terminal) for commands that should
//! stop cleanly: the first signal asks the work to stop at its next safe point (an
//! import commits what it has applied, a backup removes its partial copy); a second
//! one ends the process at once, as the signal's default action would have. A SIGHUP
//! the process was started ignoring (`nohup`) stays ignored, here and in `serve`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Set by the first of [`stop_signals`] after [`Interrupt::install`].
#[derive(Clone)]
pub(crate) struct Interrupt(Arc<AtomicBool>);

impl Interrupt {
    /// Installs the handlers. Where they cannot be installed, signals keep their
    /// default action (the command is killed, as before).
    pub(crate) fn install() -> Interrupt {
        let flag = Arc::new(AtomicBool::new(false));
        #[cfg(unix)]
        for signal in stop_signals() {
            // Registered first, so it runs before the flag is set: the default action
            // only when the flag was already set (a second signal).
            let _ = signal_hook::flag::register_conditional_default(signal, flag.clone());
            let _ = signal_hook::flag::register(signal, flag.clone());
        }
        Interrupt(flag)
    }

    /// Whether a signal came.
    pub(crate) fn is_set(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    /// The flag, for work that looks at it itself.
    pub(crate) fn flag(&self) -> Arc<AtomicBool> {
        self.0.clone()
    }
}

/// The signals that stop a command cleanly: SIGINT, SIGTERM, and SIGHUP unless the
/// process was started ignoring it, as `nohup` starts a program (a handler put in place
/// of the ignoring stopped a daemon, or an import, run under `nohup` when its terminal
/// closed: a review).
#[cfg(unix)]
pub(crate) fn stop_signals() -> Vec<std::ffi::c_int> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = vec![SIGINT, SIGTERM];
    if !is_ignored(SIGHUP) {
        signals.push(SIGHUP);
    }
    signals
}

/// Whether `signal` is ignored in this process, read from `/proc/self/status` (its
/// `SigIgn` mask), which needs no unsafe code; `false` where that cannot be read. A
/// signal this program handles is never ignored, so asking again after handling it
/// gives the same answer.
#[cfg(unix)]
fn is_ignored(signal: std::ffi::c_int) -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| ignored_in(&status, signal))
        .unwrap_or(false)
}

/// Whether the `SigIgn` line of a `/proc/<pid>/status` text has `signal`'s bit set.
#[cfg(unix)]
fn ignored_in(status: &str, signal: std::ffi::c_int) -> Option<bool> {
    let mask = status
        .lines()
        .find_map(|line| line.strip_prefix("SigIgn:"))?
        .trim();
    let mask = u64::from_str_radix(mask, 16).ok()?;
    let bit = u32::try_from(signal).ok()?.checked_sub(1)?;
    Some(mask.checked_shr(bit)? & 1 == 1)
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[test]
    fn the_ignored_mask_is_read_bit_by_signal() {
        let status =
            "Name:\tprotocol-mirror\nSigBlk:\t0000000000000001\nSigIgn:\t0000000000001001\n";
        assert_eq!(ignored_in(status, 1), Some(true), "SIGHUP, bit 0");
        assert_eq!(ignored_in(status, 13), Some(true), "SIGPIPE, bit 12");
        assert_eq!(ignored_in(status, 15), Some(false));
        assert_eq!(ignored_in(status, 0), None);
        assert_eq!(ignored_in("SigIgn:\tzz\n", 1), None);
        assert_eq!(ignored_in("Name:\tx\n", 1), None);
        // Rust's runtime ignores SIGPIPE in every program it starts.
        assert!(is_ignored(signal_hook::consts::SIGPIPE));
    }
}
