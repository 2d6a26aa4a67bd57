//! The `protocol-mirror` command (filled in by the daemon and CLI work).
fn main() {}
