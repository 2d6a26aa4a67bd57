//! Standard input as the commands that read it (`sign`, `send -`, `import -`) need
//! it: announced on a terminal, and read as if it blocked even when it does not.

use std::io::Read;

/// Standard input, saying on stderr that it is read when it is a terminal (`sign`,
/// `send -` and `import -` waited without a word for what was typed).
pub(crate) fn announced(what: &str) -> Stdin {
    let stdin = std::io::stdin();
    if std::io::IsTerminal::is_terminal(&stdin) {
        super::note!("protocol-mirror: reading {what} from the terminal (Ctrl-D to end)");
    }
    Stdin(stdin)
}

/// Standard input, waited on when it has nothing yet: one left non-blocking by the
/// program that shares it (as Node.js leaves a pipe) answered `EAGAIN`, and
/// `import -` failed on it at once (a review).
pub(crate) struct Stdin(std::io::Stdin);

impl Read for Stdin {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            match self.0.read(buf) {
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {
                    wait_readable(&self.0)?;
                }
                other => return other,
            }
        }
    }
}

/// Waits until `stdin` has something to read (or has ended).
#[cfg(unix)]
fn wait_readable(stdin: &std::io::Stdin) -> std::io::Result<()> {
    use rustix::event::{PollFd, PollFlags, poll};
    let mut fds = [PollFd::new(stdin, PollFlags::IN)];
    match poll(&mut fds, None) {
        Ok(_) | Err(rustix::io::Errno::INTR) => Ok(()),
        Err(error) => Err(error.into()),
    }
}

/// Waits a moment: without `poll`, the read is simply tried again.
#[cfg(not(unix))]
fn wait_readable(_: &std::io::Stdin) -> std::io::Result<()> {
    std::thread::sleep(std::time::Duration::from_millis(10));
    Ok(())
}
