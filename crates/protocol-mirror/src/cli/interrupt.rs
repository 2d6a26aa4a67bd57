//! Ctrl-C (SIGINT) and SIGTERM for commands that should stop cleanly: the first
//! signal asks the work to stop at its next safe point (an import commits what it has
//! applied, a backup removes its partial copy); a second one ends the process at once,
//! as the signal's default action would have.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Set by the first SIGINT or SIGTERM after [`Interrupt::install`].
#[derive(Clone)]
pub(crate) struct Interrupt(Arc<AtomicBool>);

impl Interrupt {
    /// Installs the handlers. Where they cannot be installed, signals keep their
    /// default action (the command is killed, as before).
    pub(crate) fn install() -> Interrupt {
        let flag = Arc::new(AtomicBool::new(false));
        #[cfg(unix)]
        for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
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
